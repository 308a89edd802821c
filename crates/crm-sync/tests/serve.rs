//! The webhook receiver over real HTTP, with the queue in a SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;

use crm_core::Sink;
use crm_hubspot::webhook::{sign_v2, sign_v3};
use crm_pipedrive::webhook::basic_auth_header;
use crm_sql::SqlConnector;
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::pipeline::DestinationKeys;
use crm_sync::runner::SqlKeys;
use crm_sync::serve::process::{KEY_FIELD, webhook_schema};
use crm_sync::serve::{Receiver, Server, Verifiers, customer, process_pending};
use secrecy::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HUBSPOT_SECRET: &str = "hubspot-client-secret";
const PD_USER: &str = "pd-hook";
const PD_PASSWORD: &str = "pd-password";
const CUSTOMER_SECRET: &str = "customer-shared-secret";
const TABLE: &str = "crm_webhook_records";

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "crm-sync-serve-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn url(&self) -> String {
        format!("sqlite://{}/state.db?mode=rwc", self.0.display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open_store(dir: &Dir) -> StateStore {
    StateStore::open_url(&dir.url(), CredentialKey::generate().0)
        .await
        .unwrap()
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<crm_core::Result<()>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn start(store: StateStore) -> Running {
    let verifiers = Verifiers::new()
        .hubspot(SecretString::from(HUBSPOT_SECRET.to_owned()))
        .pipedrive(PD_USER, &SecretString::from(PD_PASSWORD.to_owned()))
        .customer(SecretString::from(CUSTOMER_SECRET.to_owned()));
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(Receiver::new(store, verifiers), async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

async fn sink(dir: &Dir) -> SqlConnector {
    let sink = SqlConnector::connect_url(&dir.url()).await.unwrap();
    sink.create_table(&webhook_schema(TABLE)).await.unwrap();
    sink
}

async fn stored_keys(dir: &Dir) -> Vec<String> {
    let mut keys = SqlKeys::new(dir.url())
        .keys(TABLE, KEY_FIELD)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn answer(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hubspot_body(event_id: u64, object_id: u64) -> String {
    serde_json::json!([{
        "eventId": event_id, "subscriptionId": 11, "portalId": 62515, "appId": 1,
        "occurredAt": now_ms(), "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": object_id,
        "propertyName": "email", "propertyValue": "ann@example.com"
    }])
    .to_string()
}

async fn post_hubspot(
    c: &reqwest::Client,
    srv: &Running,
    body: &str,
    signed_body: &str,
    ts: i64,
) -> (u16, serde_json::Value) {
    let url = srv.url("/webhooks/hubspot");
    let ts = ts.to_string();
    let sig = sign_v3(HUBSPOT_SECRET, "POST", &url, signed_body.as_bytes(), &ts);
    answer(
        c.post(&url)
            .header("content-type", "application/json")
            .header("x-hubspot-signature-v3", sig)
            .header("x-hubspot-request-timestamp", ts)
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn hubspot_valid_tampered_stale_and_replayed_deliveries() {
    let dir = Dir::new("hubspot");
    let store = open_store(&dir).await;
    let srv = start(store.clone()).await;
    let c = reqwest::Client::new();
    let body = hubspot_body(1001, 42);

    let (status, json) = post_hubspot(&c, &srv, &body, &body, now_ms()).await;
    assert_eq!(status, 202);
    assert_eq!(json["queued"], 1);

    // Tampered: the signature is of another body.
    let tampered = body.replace("ann@example.com", "eve@example.com");
    let (status, _) = post_hubspot(&c, &srv, &tampered, &body, now_ms()).await;
    assert_eq!(status, 401);

    // Stale: correctly signed, six minutes old.
    let (status, _) = post_hubspot(
        &c,
        &srv,
        &hubspot_body(1002, 43),
        &hubspot_body(1002, 43),
        now_ms() - 6 * 60 * 1000,
    )
    .await;
    assert_eq!(status, 401);

    // Replayed inside the window: accepted, nothing queued again.
    let (status, json) = post_hubspot(&c, &srv, &body, &body, now_ms()).await;
    assert_eq!(status, 202);
    assert_eq!(json["queued"], 0);
    assert_eq!(json["duplicates"], 1);

    // No signature at all.
    let resp = c
        .post(srv.url("/webhooks/hubspot"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // A v2 signature (legacy) is accepted.
    let v2_body = hubspot_body(1003, 44);
    let url = srv.url("/webhooks/hubspot");
    let resp = c
        .post(&url)
        .header(
            "x-hubspot-signature",
            sign_v2(HUBSPOT_SECRET, "POST", &url, v2_body.as_bytes()),
        )
        .header("x-hubspot-signature-version", "v2")
        .body(v2_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);

    let pending = store.pending_webhooks(100).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|e| e.provider == "hubspot"));

    let sink = sink(&dir).await;
    let report = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!((report.processed, report.failed), (2, 0));
    assert_eq!(
        stored_keys(&dir).await,
        vec!["hubspot:contacts:42", "hubspot:contacts:44"]
    );
    srv.stop().await;
    sink.close().await;
    store.close().await;
}

fn pipedrive_body(event_uuid: &str, person: u64, name: &str) -> String {
    serde_json::json!({
        "data": {"id": person, "name": name},
        "previous": null,
        "meta": {"action": "create", "entity": "person", "entity_id": person.to_string(),
                 "id": event_uuid, "timestamp": "2026-01-01T00:00:00Z", "version": "2.0", "attempt": 1}
    })
    .to_string()
}

async fn post_pipedrive(
    c: &reqwest::Client,
    srv: &Running,
    body: &str,
    auth: Option<String>,
) -> (u16, serde_json::Value) {
    let mut req = c
        .post(srv.url("/webhooks/pipedrive"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test]
async fn pipedrive_valid_tampered_stale_and_replayed_deliveries() {
    let dir = Dir::new("pipedrive");
    let store = open_store(&dir).await;
    let srv = start(store.clone()).await;
    let c = reqwest::Client::new();
    let good = || Some(basic_auth_header(PD_USER, PD_PASSWORD));
    let body = pipedrive_body("9c1e7a40-0000-4000-8000-000000000001", 5, "Ann");

    let (status, json) = post_pipedrive(&c, &srv, &body, good()).await;
    assert_eq!(status, 202);
    assert_eq!(json["queued"], 1);

    // Tampered credentials, and none.
    let (status, _) =
        post_pipedrive(&c, &srv, &body, Some(basic_auth_header(PD_USER, "guess"))).await;
    assert_eq!(status, 401);
    let (status, _) = post_pipedrive(&c, &srv, &body, None).await;
    assert_eq!(status, 401);

    // Replayed: same event id.
    let (status, json) = post_pipedrive(&c, &srv, &body, good()).await;
    assert_eq!(status, 202);
    assert_eq!(json["duplicates"], 1);

    let sink = sink(&dir).await;
    let report = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!(report.processed, 1);

    // Stale: Pipedrive retries for hours, so a late redelivery of an event
    // already processed is recognised (the basic-auth header carries no time).
    let (status, json) = post_pipedrive(&c, &srv, &body, good()).await;
    assert_eq!(status, 202);
    assert_eq!(json["duplicates"], 1);
    assert!(store.pending_webhooks(10).await.unwrap().is_empty());
    let keys = stored_keys(&dir).await;
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].starts_with("pipedrive:") && keys[0].ends_with(":5"),
        "{keys:?}"
    );

    srv.stop().await;
    sink.close().await;
    store.close().await;
}

async fn post_customer(
    c: &reqwest::Client,
    srv: &Running,
    body: &str,
    signature: Option<String>,
    timestamp: Option<i64>,
) -> (u16, serde_json::Value) {
    let mut req = c
        .post(srv.url("/webhooks/crm/customer"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header(customer::HEADER_SIGNATURE, s);
    }
    if let Some(t) = timestamp {
        req = req.header(customer::HEADER_TIMESTAMP, t.to_string());
    }
    answer(req.send().await.unwrap()).await
}

fn customer_body(event_type: &str, id: &str, name: &str) -> String {
    serde_json::json!({"event_type": event_type, "data": {"id": id, "name": name}}).to_string()
}

#[tokio::test]
async fn customer_valid_tampered_stale_and_replayed_deliveries() {
    let dir = Dir::new("customer");
    let store = open_store(&dir).await;
    let srv = start(store.clone()).await;
    let c = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let body = customer_body("customer.created", "c-1", "Ann");
    let ts = now.to_string();
    let sig = customer::sign(CUSTOMER_SECRET, Some(&ts), body.as_bytes());

    let (status, json) = post_customer(&c, &srv, &body, Some(sig.clone()), Some(now)).await;
    assert_eq!(status, 202);
    assert_eq!(json["queued"], 1);

    // Tampered body.
    let tampered = customer_body("customer.created", "c-1", "Eve");
    let (status, _) = post_customer(&c, &srv, &tampered, Some(sig.clone()), Some(now)).await;
    assert_eq!(status, 401);
    // Missing signature; signature with a wrong secret.
    let (status, _) = post_customer(&c, &srv, &body, None, None).await;
    assert_eq!(status, 401);
    let wrong = customer::sign("not-the-secret", None, body.as_bytes());
    let (status, _) = post_customer(&c, &srv, &body, Some(wrong), None).await;
    assert_eq!(status, 401);

    // Stale: signed with a timestamp six minutes old.
    let old = now - 6 * 60;
    let stale_sig = customer::sign(CUSTOMER_SECRET, Some(&old.to_string()), body.as_bytes());
    let (status, _) = post_customer(&c, &srv, &body, Some(stale_sig), Some(old)).await;
    assert_eq!(status, 401);

    // Replayed inside the window.
    let (status, json) = post_customer(&c, &srv, &body, Some(sig), Some(now)).await;
    assert_eq!(status, 202);
    assert_eq!(json["duplicates"], 1);

    // Without a timestamp the body alone is signed; an unknown event type is refused.
    let update = customer_body("customer.updated", "c-1", "Ann B");
    let sig = customer::sign(CUSTOMER_SECRET, None, update.as_bytes());
    let (status, _) = post_customer(&c, &srv, &update, Some(sig), None).await;
    assert_eq!(status, 202);
    let odd = customer_body("customer.merged", "c-1", "Ann");
    let sig = customer::sign(CUSTOMER_SECRET, None, odd.as_bytes());
    let (status, _) = post_customer(&c, &srv, &odd, Some(sig), None).await;
    assert_eq!(status, 400);

    let sink = sink(&dir).await;
    let report = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!((report.processed, report.failed), (2, 0));
    assert_eq!(stored_keys(&dir).await, vec!["customer:customer:c-1"]);

    // A delete arrives: the row is marked deleted (kept, keyed the same).
    let del = customer_body("customer.deleted", "c-1", "Ann B");
    let sig = customer::sign(CUSTOMER_SECRET, None, del.as_bytes());
    let (status, _) = post_customer(&c, &srv, &del, Some(sig), None).await;
    assert_eq!(status, 202);
    let report = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!(report.processed, 1);
    assert_eq!(report.written, 1);

    srv.stop().await;
    sink.close().await;
    store.close().await;
}

#[tokio::test]
async fn an_event_accepted_before_a_crash_is_processed_once_after_restart() {
    let dir = Dir::new("crash");
    let c = reqwest::Client::new();
    let body = customer_body("customer.created", "c-9", "Zed");
    let sig = customer::sign(CUSTOMER_SECRET, None, body.as_bytes());
    let hs = hubspot_body(2001, 77);
    {
        let store = open_store(&dir).await;
        let srv = start(store.clone()).await;
        let (status, _) = post_customer(&c, &srv, &body, Some(sig.clone()), None).await;
        assert_eq!(status, 202);
        let (status, _) = post_hubspot(&c, &srv, &hs, &hs, now_ms()).await;
        assert_eq!(status, 202);
        // The server goes away without processing anything.
        srv.task.abort();
        store.close().await;
    }
    // A new process on the same file.
    let store = open_store(&dir).await;
    let sink = sink(&dir).await;
    assert!(stored_keys(&dir).await.is_empty());
    assert_eq!(store.pending_webhooks(10).await.unwrap().len(), 2);
    let first = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!((first.processed, first.failed), (2, 0));
    let again = process_pending(&store, &sink, TABLE, 100).await.unwrap();
    assert_eq!(again.processed, 0);
    assert_eq!(
        stored_keys(&dir).await,
        vec!["customer:customer:c-9", "hubspot:contacts:77"]
    );

    // The provider redelivers after the restart: recognised, not queued.
    let srv = start(store.clone()).await;
    let (status, json) = post_customer(&c, &srv, &body, Some(sig), None).await;
    assert_eq!(status, 202);
    assert_eq!(json["duplicates"], 1);
    assert!(store.pending_webhooks(10).await.unwrap().is_empty());
    srv.stop().await;
    sink.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_write_processed_twice_changes_nothing_the_second_time() {
    // The process may stop between the write and the mark: the event is
    // then processed again, which must write nothing new.
    let dir = Dir::new("twice");
    let store = open_store(&dir).await;
    let sink = sink(&dir).await;
    let srv = start(store.clone()).await;
    let c = reqwest::Client::new();
    let body = customer_body("customer.created", "c-2", "Bo");
    let sig = customer::sign(CUSTOMER_SECRET, None, body.as_bytes());
    assert_eq!(post_customer(&c, &srv, &body, Some(sig), None).await.0, 202);
    let pending = store.pending_webhooks(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let changes = crm_sync::serve::process::event_changes(&pending[0]).unwrap();
    assert_eq!(changes.len(), 1);
    let first = process_pending(&store, &sink, TABLE, 10).await.unwrap();
    assert_eq!(first.written, 1);
    // Write the same event's row again, as a repeat would.
    let again = sink
        .write(
            TABLE,
            crm_core::WriteBatch::upsert(
                KEY_FIELD,
                vec![{
                    let mut r = crm_core::Record::new();
                    r.set(KEY_FIELD, "customer:customer:c-2");
                    r.set("record_id", "c-2");
                    r
                }],
            ),
        )
        .await
        .unwrap();
    assert!(matches!(again[0], crm_core::WriteOutcome::Unchanged(_)));
    srv.stop().await;
    sink.close().await;
    store.close().await;
}

#[test]
fn the_webhooks_section_parses_and_refuses_unknown_keys() {
    let base = "name: hooks\ndatabase:\n  url: sqlite://src.db\n  query: SELECT 1\n";
    let job = crm_sync::config::SyncJob::from_yaml(
        &format!(
            "{base}webhooks:\n  listen: 127.0.0.1:9000\n  hubspot_client_secret: ${{HS_SECRET}}\n  \
             pipedrive_user: hook\n  pipedrive_password: ${{PD_PASSWORD}}\n  customer_secret: ${{CUSTOMER}}\n  \
             destination: {{ table: hooks }}\n"
        ),
        "job.yaml",
    )
    .unwrap();
    let hooks = job.webhooks.as_ref().unwrap();
    assert_eq!(hooks.listen, "127.0.0.1:9000");
    assert_eq!(hooks.destination.table, "hooks");
    // Secrets stay out of Debug output.
    assert!(!format!("{job:?}").contains("HS_SECRET"));

    let err = crm_sync::config::SyncJob::from_yaml(
        &format!("{base}webhooks:\n  hubspot_secret: x\n"),
        "job.yaml",
    )
    .unwrap_err();
    assert_eq!(err.path, "webhooks.hubspot_secret");
    assert!(err.message.contains("hubspot_secret"), "{err}");

    // A Pipedrive user without a password is refused when the receiver is built.
    let half = crm_sync::config::SyncJob::from_yaml(
        &format!("{base}webhooks:\n  pipedrive_user: hook\n"),
        "job.yaml",
    )
    .unwrap();
    assert!(crm_sync::serve::verifiers(half.webhooks.as_ref().unwrap()).is_err());
}

#[tokio::test]
async fn an_event_that_cannot_be_written_is_marked_failed_not_lost_silently() {
    let dir = Dir::new("failed");
    let store = open_store(&dir).await;
    let srv = start(store.clone()).await;
    let c = reqwest::Client::new();
    let body = customer_body("customer.created", "c-3", "Cy");
    let sig = customer::sign(CUSTOMER_SECRET, None, body.as_bytes());
    assert_eq!(post_customer(&c, &srv, &body, Some(sig), None).await.0, 202);
    // The destination table does not exist: the write is refused.
    let sink = SqlConnector::connect_url(&dir.url()).await.unwrap();
    let report = process_pending(&store, &sink, "no_such_table", 10)
        .await
        .unwrap();
    assert_eq!(report.processed, 0);
    // A missing table is not an error a retry fixes: the event is marked
    // failed, with its error, and leaves the queue.
    assert_eq!((report.failed, report.retried), (1, 0));
    assert!(store.pending_webhooks(10).await.unwrap().is_empty());
    // Processing again does nothing more.
    let again = process_pending(&store, &sink, "no_such_table", 10)
        .await
        .unwrap();
    assert_eq!((again.processed, again.failed, again.retried), (0, 0, 0));
    srv.stop().await;
    sink.close().await;
    store.close().await;
}

#[tokio::test]
async fn hubspot_behind_a_proxy_is_checked_against_the_public_url() {
    let dir = Dir::new("proxy");
    let store = open_store(&dir).await;
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let receiver = Receiver::new(
        store.clone(),
        Verifiers::new().hubspot(SecretString::from(HUBSPOT_SECRET.to_owned())),
    )
    .public_url("https://hooks.example.com/");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(receiver, async move {
        let _ = rx.await;
    }));
    let c = reqwest::Client::new();
    let body = hubspot_body(3001, 90);
    let ts = now_ms().to_string();
    let post = |signed_url: &str| {
        let sig = sign_v3(HUBSPOT_SECRET, "POST", signed_url, body.as_bytes(), &ts);
        c.post(format!("http://{addr}/webhooks/hubspot"))
            .header("x-hubspot-signature-v3", sig)
            .header("x-hubspot-request-timestamp", ts.clone())
            .body(body.clone())
            .send()
    };
    // Signed for the address the proxy received, not the one behind it.
    let local = format!("http://{addr}/webhooks/hubspot");
    assert_eq!(post(&local).await.unwrap().status().as_u16(), 401);
    let public = "https://hooks.example.com/webhooks/hubspot";
    assert_eq!(post(public).await.unwrap().status().as_u16(), 202);
    // The customer endpoint is not configured here.
    let resp = c
        .post(format!("http://{addr}/webhooks/crm/customer"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    store.close().await;
}
