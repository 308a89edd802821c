//! [`SimServer`]: serves a [`Simulator`] on 127.0.0.1 over HTTP or HTTPS,
//! behind the request log and the fault plan, and hands back a
//! [`SimHandle`].
//!
//! The accept loop is our own (hyper's HTTP/1 connection per socket), so a
//! fault plan can close a socket without answering: the connection future
//! is dropped, which closes the TCP stream, exactly what a crashed load
//! balancer does to a client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fault::{DropStage, Fault, FaultPlan};
use crate::form::RateLimited;
use crate::log::{LoggedRequest, Outcome, RequestLog};
use crate::simulator::{SimContext, Simulator};
use crate::tls;

/// Largest request body the simulator reads (larger ones get 413).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Binding or reading the listener failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating or configuring TLS failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Writing the CA certificate failed.
    #[error("writing the CA certificate to {path}: {source}")]
    WriteCert {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The initial data did not load.
    #[error("loading data: {0}")]
    Data(#[from] crate::store::StoreError),
}

/// Builds and starts a simulator server.
///
/// ```no_run
/// # async fn demo() -> Result<(), crm_sim::SimError> {
/// use crm_sim::{SimServer, generic::GenericSimulator};
///
/// let sim = SimServer::new(GenericSimulator::default()).tls(true).start().await?;
/// println!("{} trusts {:?}", sim.base_url(), sim.ca_cert_path());
/// # Ok(()) }
/// ```
pub struct SimServer {
    sim: Arc<dyn Simulator>,
    listen: SocketAddr,
    tls: bool,
    cert_path: Option<PathBuf>,
    seed: u64,
    demo_data: bool,
    data: Option<serde_json::Value>,
    fault_plan: Option<FaultPlan>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("provider", &self.sim.provider())
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// A server for `sim` on `127.0.0.1` with an ephemeral port, plain HTTP,
    /// seed 0, no data, no faults.
    pub fn new(sim: impl Simulator) -> Self {
        SimServer::from_arc(Arc::new(sim))
    }

    /// Like [`SimServer::new`] for a shared simulator.
    pub fn from_arc(sim: Arc<dyn Simulator>) -> Self {
        SimServer {
            sim,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            cert_path: None,
            seed: 0,
            demo_data: false,
            data: None,
            fault_plan: None,
        }
    }

    /// Listens on `addr` (port 0 picks a free one).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves HTTPS with a certificate made at start.
    #[must_use]
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Writes the CA certificate's PEM here (default: a file in the system
    /// temporary directory, removed when the handle drops).
    #[must_use]
    pub fn cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.cert_path = Some(path.into());
        self
    }

    /// Seeds credentials, tokens, demo data and anything else random.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Loads the provider's demo data for the seed at start.
    #[must_use]
    pub fn demo_data(mut self, on: bool) -> Self {
        self.demo_data = on;
        self
    }

    /// Loads these records at start (see [`Simulator::load_data`]).
    #[must_use]
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Starts with this fault plan (it can be changed later through
    /// [`SimContext::faults`]).
    #[must_use]
    pub fn fault_plan(mut self, plan: FaultPlan) -> Self {
        self.fault_plan = Some(plan);
        self
    }

    /// Binds, sets up the simulator and starts serving in the background.
    ///
    /// # Errors
    /// [`SimError`] if the port cannot be bound, TLS cannot be set up, the
    /// certificate cannot be written or the data does not load.
    pub async fn start(self) -> Result<SimHandle, SimError> {
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| SimError::Listen {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: self.listen,
            source,
        })?;
        let (scheme, certs) = if self.tls {
            ("https", Some(tls::generate()?))
        } else {
            ("http", None)
        };
        let host = if addr.ip().is_loopback() && addr.is_ipv4() {
            "127.0.0.1".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("{scheme}://{host}:{}", addr.port());

        let (ca_pem, ca_path, remove_cert) = match &certs {
            None => (None, None, false),
            Some(c) => {
                let (path, generated) = match &self.cert_path {
                    Some(p) => (p.clone(), false),
                    None => (
                        std::env::temp_dir().join(format!(
                            "crm-sim-{}-{}-{}.pem",
                            self.sim.provider(),
                            std::process::id(),
                            addr.port()
                        )),
                        true,
                    ),
                };
                std::fs::write(&path, &c.ca_pem).map_err(|source| SimError::WriteCert {
                    path: path.clone(),
                    source,
                })?;
                (Some(c.ca_pem.clone()), Some(path), generated)
            }
        };

        let ctx = SimContext::new(
            self.sim.provider(),
            &base_url,
            self.seed,
            self.sim.id_generator(),
            self.sim.form(),
        );
        if let Some(plan) = self.fault_plan {
            ctx.faults().set_plan(plan);
        }
        self.sim.setup(&ctx);
        if self.demo_data {
            self.sim.seed_demo_data(&ctx, self.seed);
        }
        if let Some(data) = &self.data {
            self.sim.load_data(&ctx, data)?;
        }
        let app = self
            .sim
            .router(&ctx)
            .layer(axum::middleware::from_fn_with_state(
                ctx.clone(),
                fault_layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                ctx.log().clone(),
                log_layer,
            ));

        let (stop_tx, stop_rx) = oneshot::channel();
        let acceptor = certs.map(|c| c.acceptor);
        let task = tokio::spawn(accept_loop(listener, acceptor, app, stop_rx));
        Ok(SimHandle {
            ctx,
            addr,
            base_url,
            ca_pem,
            ca_path,
            remove_cert,
            credentials: self.sim.clone(),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A running simulator. Dropping it stops the server and closes every
/// connection (and removes a CA file it generated).
pub struct SimHandle {
    ctx: SimContext,
    addr: SocketAddr,
    base_url: String,
    ca_pem: Option<String>,
    ca_path: Option<PathBuf>,
    remove_cert: bool,
    credentials: Arc<dyn Simulator>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("provider", &self.ctx.provider())
            .field("base_url", &self.base_url)
            .field("ca_cert_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate clients must trust (HTTPS only), PEM.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the CA certificate was written (HTTPS only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The request log.
    pub fn request_log(&self) -> &RequestLog {
        self.ctx.log()
    }

    /// The simulator's shared state: store, clock, auth, faults.
    pub fn context(&self) -> &SimContext {
        &self.ctx
    }

    /// What a client needs to connect (see [`Simulator::credentials`]).
    pub fn credentials(&self) -> serde_json::Value {
        self.credentials.credentials(&self.ctx)
    }

    /// The line the standalone server prints when ready:
    /// `{"provider", "base_url", "ca_cert", "credentials"}`.
    pub fn ready_line(&self) -> serde_json::Value {
        serde_json::json!({
            "provider": self.ctx.provider(),
            "base_url": self.base_url,
            "ca_cert": self.ca_path.as_ref().map(|p| p.display().to_string()),
            "credentials": self.credentials(),
        })
    }

    /// Stops accepting, closes every connection and waits for the server
    /// task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.remove_cert
            && let Some(path) = &self.ca_path
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Lets a handler close its own connection without a response.
#[derive(Clone, Debug)]
pub(crate) struct ConnControl {
    kill: Arc<Notify>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or a reset during accept: back off briefly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => serve_conn(TokioIo::new(stream), app).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        serve_conn(TokioIo::new(stream), app).await;
                    }
                }
            }
        });
    }
    conns.shutdown().await;
}

async fn serve_conn<I>(io: I, app: axum::Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let ctrl = ConnControl { kill: kill.clone() };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctrl.clone());
        let mut app = app.clone();
        tower_service::Service::call(&mut app, req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection closes the socket with no response.
        () = kill.notified() => {}
    }
}

/// What the inner layers tell the log layer about a request.
#[derive(Debug, Default)]
pub(crate) struct LogNote {
    dropped: bool,
    faults: Vec<&'static str>,
}

type SharedNote = Arc<Mutex<LogNote>>;

struct LogGuard {
    log: RequestLog,
    entry: Option<LoggedRequest>,
    note: SharedNote,
    started: Instant,
}

impl LogGuard {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(e) = self.entry.as_mut() {
            e.outcome = outcome;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            let note = self.note.lock().unwrap_or_else(PoisonError::into_inner);
            if note.dropped {
                e.outcome = Outcome::Dropped;
            }
            if !note.faults.is_empty() {
                e.fault = Some(note.faults.join(","));
            }
            e.elapsed = self.started.elapsed();
            self.log.push(e);
        }
    }
}

async fn log_layer(State(log): State<RequestLog>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let at = log.since_start(started);
    let received_at = Utc::now();
    let (parts, body) = req.into_parts();
    let headers = log.select_headers(&parts.headers);
    let query = parts.uri.query().map(|q| log.redact_query(q));
    let mut entry = LoggedRequest {
        seq: 0,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        headers,
        body_size: 0,
        at,
        received_at,
        elapsed: Duration::ZERO,
        outcome: Outcome::Abandoned,
        fault: None,
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            entry.outcome = Outcome::Responded(413);
            log.push(entry);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            )
                .into_response();
        }
    };
    entry.body_size = bytes.len();
    let note = SharedNote::default();
    let mut guard = LogGuard {
        log,
        entry: Some(entry),
        note: note.clone(),
        started,
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(note);
    let resp = next.run(req).await;
    guard.finish(Outcome::Responded(resp.status().as_u16()));
    resp
}

async fn fault_layer(State(ctx): State<SimContext>, mut req: Request, next: Next) -> Response {
    let decision = ctx.faults().decide(req.method().as_str(), req.uri().path());
    if decision.applied.is_empty() {
        return next.run(req).await;
    }
    if let Some(note) = req.extensions().get::<SharedNote>() {
        note.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .faults
            .clone_from(&decision.applied);
    }
    if decision.expire_tokens {
        ctx.auth().expire_all();
    }
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if let Some(records) = decision.records {
        req.extensions_mut().insert(records);
    }
    match decision.terminal {
        Some(Fault::RateLimited { retry_after_s, .. }) => {
            let mut limited = RateLimited::new(
                "fault",
                0,
                Duration::ZERO,
                Duration::from_secs(retry_after_s),
            );
            limited.injected = true;
            ctx.form().rate_limited(&limited)
        }
        Some(Fault::ServerError { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ctx.form().server_error(status)
        }
        Some(Fault::Drop { stage }) => {
            let ctrl = req.extensions().get::<ConnControl>().cloned();
            let note = req.extensions().get::<SharedNote>().cloned();
            if stage == DropStage::AfterHandler {
                drop(next.run(req).await);
            }
            let Some(ctrl) = ctrl else {
                // Not served through our accept loop (e.g. a router driven
                // directly): the closest answer is a gateway error.
                return ctx.form().server_error(StatusCode::BAD_GATEWAY);
            };
            if let Some(note) = note {
                note.lock().unwrap_or_else(PoisonError::into_inner).dropped = true;
            }
            ctrl.kill.notify_one();
            std::future::pending::<Response>().await
        }
        _ => next.run(req).await,
    }
}
