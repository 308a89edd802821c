//! `crm-sync serve`: the real-time webhook receiver.
//!
//! Routes:
//!
//! - `POST /webhooks/hubspot`: HubSpot deliveries, checked with
//!   `X-HubSpot-Signature-v3` (timestamp at most 5 minutes away) or the
//!   older v1/v2 `X-HubSpot-Signature` (see [`crm_hubspot::webhook`]).
//! - `POST /webhooks/pipedrive`: Pipedrive deliveries, checked with HTTP
//!   basic auth in constant time (Pipedrive signs nothing).
//! - `POST /webhooks/crm/customer`: seed 001's signed endpoint, see
//!   [`customer`].
//! - `GET /metrics`: Prometheus text of [`crate::monitor`] (health, run
//!   and API metrics, alerts firing).
//!
//! A delivery that fails its check is answered 401 and nothing is kept.
//! An accepted one is queued in the state store (`crm_webhook_events`)
//! before the 202 answer, under an id derived from the provider's event
//! identity (HubSpot: portal, subscription and event id; Pipedrive: the
//! event id of the payload; customer: `X-Event-Id` or the body's SHA-256),
//! so a redelivery is answered 202 and queued nothing. A process that stops
//! after the 202 loses nothing: [`process::process_pending`] takes the
//! queued events later, in this process or the next.
//!
//! An endpoint whose secret is not configured answers 404.
//!
//! [`Server::serve_hardened`] serves the routes behind [`harden`]'s layers
//! (TLS, allow-list, body limit, timeout, rate limit), as `crm-sync serve`
//! does.

pub mod customer;
pub mod harden;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crm_core::{Error, Result};
use crm_sql::state::{NewWebhookEvent, StateStore, WebhookEventId};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use customer::CustomerVerifier;
pub use process::{ProcessReport, process_pending};

use process::provider;

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The queue id of an event: SHA-256 (hex, 64 characters) of its provider
/// and identity.
pub fn event_id(provider: &str, identity: &str) -> WebhookEventId {
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(identity.as_bytes());
    WebhookEventId::new(hex(&h.finalize()))
}

/// What the receiver checks deliveries with; endpoints without a verifier
/// answer 404.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Verifiers {
    /// `/webhooks/hubspot`.
    pub hubspot: Option<crm_hubspot::WebhookVerifier>,
    /// `/webhooks/pipedrive`.
    pub pipedrive: Option<crm_pipedrive::WebhookVerifier>,
    /// `/webhooks/crm/customer`.
    pub customer: Option<CustomerVerifier>,
}

impl Verifiers {
    /// No endpoint enabled.
    pub fn new() -> Self {
        Verifiers::default()
    }

    /// Enables `/webhooks/hubspot` with the app's client secret.
    #[must_use]
    pub fn hubspot(mut self, client_secret: SecretString) -> Self {
        self.hubspot = Some(crm_hubspot::WebhookVerifier::new(client_secret));
        self
    }

    /// Enables `/webhooks/pipedrive` with the basic-auth user and password.
    #[must_use]
    pub fn pipedrive(mut self, user: &str, password: &SecretString) -> Self {
        self.pipedrive = Some(crm_pipedrive::WebhookVerifier::new(user, password));
        self
    }

    /// Enables `/webhooks/crm/customer` with the shared secret.
    #[must_use]
    pub fn customer(mut self, secret: SecretString) -> Self {
        self.customer = Some(CustomerVerifier::new(secret));
        self
    }
}

/// The receiver's shared state.
#[derive(Debug)]
pub struct Receiver {
    store: StateStore,
    verifiers: Verifiers,
    public_url: Option<String>,
    queued: Arc<Notify>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
}

impl Receiver {
    /// A receiver queueing into `store`.
    pub fn new(store: StateStore, verifiers: Verifiers) -> Self {
        Receiver {
            store,
            verifiers,
            public_url: None,
            queued: Arc::new(Notify::new()),
            monitor: None,
        }
    }

    /// The scheme and host providers call (HubSpot signs the full URL).
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The monitor `GET /metrics` renders (default settings over the
    /// store without one).
    #[must_use]
    pub fn monitor(mut self, monitor: Arc<crate::monitor::Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Notified after each delivery that queued an event.
    pub fn queued(&self) -> Arc<Notify> {
        Arc::clone(&self.queued)
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/webhooks/hubspot", post(hubspot))
            .route("/webhooks/pipedrive", post(pipedrive))
            .route("/webhooks/crm/customer", post(customer_event))
            .route("/metrics", get(metrics))
            .with_state(Arc::new(self))
    }

    async fn enqueue(&self, id: &WebhookEventId, event: NewWebhookEvent) -> Result<bool> {
        let queued = self.store.enqueue_webhook_keyed(id, event).await?;
        if queued {
            self.queued.notify_one();
        }
        Ok(queued)
    }
}

/// A bound server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: &str) -> Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid_input(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::invalid_input(format!("cannot listen on {addr}: {e}")))?;
        Ok(Server { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `receiver` until `shutdown` completes.
    ///
    /// # Errors
    /// When the server stops on an I/O error.
    pub async fn serve(
        self,
        receiver: Receiver,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.serve_router(receiver.router(), shutdown).await
    }

    /// Serves `router` (the receiver's routes merged with others, such as
    /// the review desk's) as it is, over plain HTTP, until `shutdown`
    /// completes. Handlers can extract `ConnectInfo<SocketAddr>`.
    /// [`Server::serve_hardened`] adds TLS and the protective layers.
    ///
    /// # Errors
    /// When the server stops on an I/O error.
    pub async fn serve_router(
        self,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| {
            Error::new(
                crm_core::ErrorKind::Transient,
                format!("the server stopped: {e}"),
            )
        })
    }

    /// Serves `router` behind `hardening`'s layers (see
    /// [`harden::Hardening::apply`], which this calls), over TLS 1.2/1.3
    /// when [`harden::Hardening::tls`] is set, until `shutdown` completes.
    ///
    /// Each connection is served by hyper (HTTP/1.1, keep-alive), with
    /// request headers to be read within the request timeout and a TLS
    /// handshake within 10 s; a failed handshake closes that connection
    /// only. On shutdown the server stops accepting, lets open requests
    /// finish (at most the request timeout and a second) and closes the
    /// connections.
    ///
    /// # Errors
    /// None today: accept errors are retried; the `Result` is kept for
    /// errors of setup.
    pub async fn serve_hardened(
        self,
        router: Router,
        hardening: &harden::Hardening,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = hardening.apply(router);
        harden::serve_connections(
            self.listener,
            app,
            hardening.tls.as_ref(),
            hardening.request_timeout,
            shutdown,
        )
        .await
    }
}

type Shared = State<Arc<Receiver>>;

fn refuse(reason: &str) -> Response {
    (StatusCode::UNAUTHORIZED, format!("rejected: {reason}\n")).into_response()
}

fn bad_body(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad body: {reason}\n")).into_response()
}

fn not_configured() -> Response {
    (StatusCode::NOT_FOUND, "this endpoint is not configured\n").into_response()
}

fn store_failed(e: &Error) -> Response {
    // The provider retries on 5xx; the event was not kept.
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the event could not be stored: {}\n", e.kind()),
    )
        .into_response()
}

fn accepted(queued: usize, repeated: usize) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"queued": queued, "duplicates": repeated})),
    )
        .into_response()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn hubspot(
    State(rx): Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(verifier) = &rx.verifiers.hubspot else {
        return not_configured();
    };
    let path = uri
        .path_and_query()
        .map_or("/webhooks/hubspot", |p| p.as_str());
    let full = match (&rx.public_url, header(&headers, "host")) {
        (Some(base), _) => format!("{base}{path}"),
        (None, Some(host)) => format!("http://{host}{path}"),
        (None, None) => path.to_owned(),
    };
    if let Err(e) = verifier.verify(method.as_str(), &full, &headers, &body) {
        return refuse(&e.to_string());
    }
    let events = match crm_hubspot::webhook::parse_events(&body) {
        Ok(ev) => ev,
        Err(e) => return bad_body(&e.to_string()),
    };
    let (mut queued, mut repeated) = (0, 0);
    for ev in events {
        let identity = format!("{}:{}:{}", ev.portal_id, ev.subscription_id, ev.event_id);
        let payload = match serde_json::to_value(&ev) {
            Ok(p) => p,
            Err(e) => return bad_body(&e.to_string()),
        };
        let new = NewWebhookEvent::new(provider::HUBSPOT, ev.subscription_type.clone(), payload);
        match rx
            .enqueue(&event_id(provider::HUBSPOT, &identity), new)
            .await
        {
            Ok(true) => queued += 1,
            Ok(false) => repeated += 1,
            Err(e) => return store_failed(&e),
        }
    }
    accepted(queued, repeated)
}

async fn metrics(State(rx): Shared) -> Response {
    crate::monitor::metrics_response(&rx.store, rx.monitor.as_deref()).await
}

async fn pipedrive(State(rx): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(verifier) = &rx.verifiers.pipedrive else {
        return not_configured();
    };
    if verifier.verify(header(&headers, "authorization")).is_err() {
        return refuse("wrong or missing basic-auth credentials");
    }
    let event =
        match crm_pipedrive::webhook::parse_event(&body, &crm_pipedrive::FieldCatalog::default()) {
            Ok(Some(e)) => e,
            // Not a record change: nothing to keep.
            Ok(None) => return accepted(0, 0),
            Err(e) => return bad_body(&e.to_string()),
        };
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_body(&e.to_string()),
    };
    let kind = match event.change {
        crm_core::Change::Upsert(_) => "upsert",
        crm_core::Change::Delete { .. } => "delete",
    };
    let object = event.object.map_or("unknown", |o| o.as_str());
    let new = NewWebhookEvent::new(provider::PIPEDRIVE, format!("{object}.{kind}"), payload);
    match rx
        .enqueue(&event_id(provider::PIPEDRIVE, &event.key), new)
        .await
    {
        Ok(true) => accepted(1, 0),
        Ok(false) => accepted(0, 1),
        Err(e) => store_failed(&e),
    }
}

async fn customer_event(State(rx): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(verifier) = &rx.verifiers.customer else {
        return not_configured();
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(reason) = verifier.verify_at(
        header(&headers, customer::HEADER_SIGNATURE),
        header(&headers, customer::HEADER_TIMESTAMP),
        &body,
        now,
    ) {
        return refuse(reason);
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_body(&e.to_string()),
    };
    let event = match customer::parse(&payload) {
        Ok(e) => e,
        Err(e) => return bad_body(&e),
    };
    let identity = match header(&headers, customer::HEADER_EVENT_ID) {
        Some(id) if !id.trim().is_empty() => format!("id:{}", id.trim()),
        _ => format!("sha256:{}", hex(&Sha256::digest(&body))),
    };
    let new = NewWebhookEvent::new(provider::CUSTOMER, event.event_type, payload);
    match rx
        .enqueue(&event_id(provider::CUSTOMER, &identity), new)
        .await
    {
        Ok(true) => accepted(1, 0),
        Ok(false) => accepted(0, 1),
        Err(e) => store_failed(&e),
    }
}

/// Builds the verifiers of a job's `webhooks:` section, resolving its
/// `${NAME}` values from the process environment.
///
/// # Errors
/// An unset variable, or a Pipedrive user without a password (or the
/// reverse).
pub fn verifiers(section: &crate::config::WebhooksSection) -> Result<Verifiers> {
    use crm_core::env::{from_process, interpolate};
    let resolve = |name: &str, v: &SecretString| -> Result<SecretString> {
        interpolate(name, v.expose_secret(), from_process).map(SecretString::from)
    };
    let mut out = Verifiers::new();
    if let Some(s) = &section.hubspot_client_secret {
        out = out.hubspot(resolve("webhooks.hubspot_client_secret", s)?);
    }
    match (&section.pipedrive_user, &section.pipedrive_password) {
        (Some(u), Some(p)) => {
            let user = resolve("webhooks.pipedrive_user", u)?;
            let password = resolve("webhooks.pipedrive_password", p)?;
            out = out.pipedrive(user.expose_secret(), &password);
        }
        (None, None) => {}
        _ => {
            return Err(Error::invalid_input(
                "`webhooks:` needs both `pipedrive_user` and `pipedrive_password`, or neither",
            ));
        }
    }
    if let Some(s) = &section.customer_secret {
        out = out.customer(resolve("webhooks.customer_secret", s)?);
    }
    Ok(out)
}
