//! The webhook receiver of `crm-sync serve`, embedded in an app with
//! `crm_sync::serve`.
//!
//! [`start`] binds an address (`127.0.0.1:0` picks a free port) and serves:
//!
//! | route | checked with |
//! |---|---|
//! | `POST /webhooks/hubspot` | `X-HubSpot-Signature-v3` with the app's client secret, timestamp at most 5 minutes away |
//! | `POST /webhooks/pipedrive` | HTTP basic auth |
//! | `POST /webhooks/crm/customer` | seed 001's `X-Signature-256` HMAC-SHA256 (see [`customer_headers`]) |
//!
//! A delivery failing its check is answered 401 and kept nowhere. An
//! accepted one is queued in the state store before the 202 answer, under
//! an id derived from the provider's event identity, so a redelivery is
//! answered 202 and queued nothing. A background task takes the queue with
//! [`process_pending`] whenever a delivery was queued (and every
//! [`POLL`] otherwise) and writes one row per record into [`TABLE`] of the
//! same SQLite database, keyed by `provider:object:record id`; its
//! running totals are [`Running::totals`], the rows [`Running::rows`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crm_core::{Change, Error, ErrorKind, ReadRequest, Result, Source, Value};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::serve::process::{KEY_FIELD, webhook_schema};
use crm_sync::serve::{Receiver, Server, Verifiers, customer, process_pending};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, Notify, oneshot};
use tokio::task::JoinHandle;

/// The table processed events are written into.
pub const TABLE: &str = "crm_webhook_records";

/// How long the processor waits for a delivery before looking at the
/// queue anyway (events left by an earlier process, retries).
pub const POLL: Duration = Duration::from_secs(5);

/// Events taken from the queue per pass.
const BATCH: u32 = 100;

/// The secrets the endpoints check deliveries with.
#[derive(Clone, Debug)]
pub struct WebhookSecrets {
    /// The HubSpot app's client secret (v3 signatures).
    pub hubspot_client_secret: SecretString,
    /// The basic-auth user Pipedrive sends.
    pub pipedrive_user: String,
    /// The basic-auth password Pipedrive sends.
    pub pipedrive_password: SecretString,
    /// The shared secret of `/webhooks/crm/customer`.
    pub customer_secret: SecretString,
}

impl WebhookSecrets {
    fn verifiers(&self) -> Verifiers {
        Verifiers::new()
            .hubspot(self.hubspot_client_secret.clone())
            .pipedrive(&self.pipedrive_user, &self.pipedrive_password)
            .customer(self.customer_secret.clone())
    }
}

/// The SQLite URL of a database file (created when missing).
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The headers of a delivery to `/webhooks/crm/customer`: the
/// `X-Signature-256` HMAC of `body` (over `<timestamp>.<body>` when
/// `timestamp`, unix seconds, is given, which is then sent too), and
/// `X-Event-Id` when `event_id` is given.
pub fn customer_headers(
    secret: &SecretString,
    body: &[u8],
    timestamp: Option<i64>,
    event_id: Option<&str>,
) -> Vec<(String, String)> {
    let ts = timestamp.map(|t| t.to_string());
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            customer::HEADER_SIGNATURE.to_owned(),
            customer::sign(secret.expose_secret(), ts.as_deref(), body),
        ),
    ];
    if let Some(ts) = ts {
        headers.push((customer::HEADER_TIMESTAMP.to_owned(), ts));
    }
    if let Some(id) = event_id {
        headers.push((customer::HEADER_EVENT_ID.to_owned(), id.to_owned()));
    }
    headers
}

/// What the processor did since the receiver started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Events processed (their rows written).
    pub processed: usize,
    /// Event attempts that failed and were left for a retry.
    pub retried: usize,
    /// Events marked failed.
    pub failed: usize,
    /// Rows created or updated in [`TABLE`].
    pub written: usize,
    /// The last error reading the queue, if any.
    pub last_error: Option<String>,
}

/// One row of [`TABLE`]: the latest event about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookRow {
    /// `provider:object:record id`.
    pub record_key: String,
    /// `hubspot`, `pipedrive` or `customer`.
    pub provider: String,
    /// The object (`contacts`, `person`, `customer`).
    pub object: String,
    /// The record's id at the provider.
    pub record_id: String,
    /// Whether the latest event deleted the record.
    pub deleted: bool,
    /// JSON of the fields the latest event carried (empty for a delete).
    pub fields: String,
    /// The queue id of the latest event.
    pub event_id: String,
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(other) => matches!(text(Some(other)).as_str(), "1" | "true" | "t"),
        None => false,
    }
}

/// A running receiver and its processor.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    db_url: String,
    store: StateStore,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<()>>,
    processor: JoinHandle<()>,
    totals: Arc<Mutex<Totals>>,
}

/// Starts the receiver on `listen` with the queue and [`TABLE`] in the
/// SQLite database `db_url` (see [`sqlite_url`]), and its processor.
///
/// # Errors
/// When the database cannot be opened, the table created or the address
/// bound.
pub async fn start(
    listen: &str,
    db_url: &str,
    key: CredentialKey,
    secrets: &WebhookSecrets,
) -> Result<Running> {
    let store = StateStore::open_url(db_url, key).await?;
    let sink = SqlConnector::connect_url(db_url).await?;
    sink.create_table(&webhook_schema(TABLE)).await?;
    let server = Server::bind(listen).await?;
    let addr = server.local_addr();
    let receiver = Receiver::new(store.clone(), secrets.verifiers());
    let wake = receiver.queued();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.serve(receiver, async move {
        let _ = stopped.await;
    }));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let processor = tokio::spawn(process_loop(store.clone(), sink, wake, Arc::clone(&totals)));
    Ok(Running {
        addr,
        db_url: db_url.to_owned(),
        store,
        stop: Some(stop),
        server,
        processor,
        totals,
    })
}

async fn process_loop(
    store: StateStore,
    sink: SqlConnector,
    wake: Arc<Notify>,
    totals: Arc<Mutex<Totals>>,
) {
    loop {
        let more = {
            // Held for the whole pass: `Running::wait_idle` waits for it.
            let mut t = totals.lock().await;
            match process_pending(&store, &sink, TABLE, BATCH).await {
                Ok(r) => {
                    t.processed += r.processed;
                    t.retried += r.retried;
                    t.failed += r.failed;
                    t.written += r.written;
                    // More may be waiting; a pass with only retries waits.
                    r.processed + r.failed > 0
                }
                Err(e) => {
                    t.last_error = Some(e.to_string());
                    false
                }
            }
        };
        if !more {
            let _ = tokio::time::timeout(POLL, wake.notified()).await;
        }
    }
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` (`/webhooks/hubspot`) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The processor's totals so far.
    pub async fn totals(&self) -> Totals {
        self.totals.lock().await.clone()
    }

    /// Waits until every queued event has been taken by the processor (at
    /// most `timeout`) and returns the totals then.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] when events are still queued after
    /// `timeout`; state-store errors.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<Totals> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                // No pass runs while this is held.
                let t = self.totals.lock().await;
                if self.store.pending_webhooks(1).await?.is_empty() {
                    return Ok(t.clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!("webhook events still queued after {timeout:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The rows of [`TABLE`], ordered by when they were last written.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rows(&self) -> Result<Vec<WebhookRow>> {
        let cfg = SqlConfig::builder()
            .url(self.db_url.clone())
            .query(format!(
                "SELECT {KEY_FIELD}, provider, object, record_id, deleted, fields, event_id, \
                 synced_at FROM {TABLE}"
            ))
            .cursor_column("synced_at")
            .primary_key([KEY_FIELD])
            .build()?;
        let db = SqlConnector::connect(&cfg).await?;
        let mut rows = Vec::new();
        let mut pages = db.read(ReadRequest::full(TABLE));
        let read = async {
            while let Some(page) = pages.try_next().await? {
                for change in page.changes {
                    if let Change::Upsert(r) = change {
                        rows.push(WebhookRow {
                            record_key: text(r.get(KEY_FIELD)),
                            provider: text(r.get("provider")),
                            object: text(r.get("object")),
                            record_id: text(r.get("record_id")),
                            deleted: truthy(r.get("deleted")),
                            fields: text(r.get("fields")),
                            event_id: text(r.get("event_id")),
                        });
                    }
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        drop(pages);
        db.close().await;
        read.map(|()| rows)
    }

    /// Stops accepting deliveries, lets a pass in progress finish, stops
    /// the processor and closes the database.
    ///
    /// # Errors
    /// When the server stopped on an I/O error.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let served = match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(Error::new(
                ErrorKind::Transient,
                format!("the server task ended abnormally: {e}"),
            )),
        };
        {
            let _pass = self.totals.lock().await;
            self.processor.abort();
        }
        let _ = (&mut self.processor).await;
        self.store.close().await;
        served
    }
}
