//! The HubSpot entries of PITFALLS.md, each against the simulator with its
//! times scaled down (short token lifetimes, a short rate window, the
//! simulator's clock).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_core::{Change, ReadRequest, Record, Sink, Source, WriteBatch, WriteOutcome};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, send_webhook};
use crm_hubspot::webhook::{WebhookReceiver, WebhookVerifier};
use crm_hubspot::wire::{Filter, FilterGroup, Operator, SearchRequest, WebhookEvent};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_sim::auth::GrantType;
use crm_sim::store::{Deleted, Fields};
use crm_sim::{Fault, FaultPlan, FaultRule, SimHandle, SimServer};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start(config: HubSpotSimConfig) -> SimHandle {
    SimServer::new(HubSpotSimulator::new(config))
        .start()
        .await
        .unwrap()
}

fn base_config() -> HubSpotSimConfig {
    let mut c = HubSpotSimConfig::default();
    c.daily = None;
    c
}

fn private_app(sim: &SimHandle, limits: RateLimits) -> HubSpot {
    let token = sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = HubSpotConfig::private_app(SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(limits)
        .search_lookback(Duration::from_secs(300))
        .build()
        .unwrap();
    HubSpot::new(config).unwrap()
}

fn seed_contacts(sim: &SimHandle, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut f = Fields::new();
            f.insert("email".into(), json!(format!("c{i}@example.com")));
            sim.context().store().create("contacts", f).id.to_string()
        })
        .collect()
}

fn ids(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| c.id().map(|i| i.to_string()))
        .collect()
}

/// airbyte#74726: a sync outliving the 30-minute token. Tokens here live
/// 3 seconds and are refreshed 1 second ahead; the read runs for about 8
/// seconds, so it spans several lifetimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_longer_than_the_token_lifetime_refreshes_ahead_with_no_failures() {
    let mut cfg = base_config();
    cfg.token_ttl = Duration::from_secs(3);
    let sim = start(cfg).await;
    seed_contacts(&sim, 60);
    let creds = sim.credentials();
    let config = HubSpotConfig::oauth(
        creds["client_id"].as_str().unwrap(),
        SecretString::from(creds["client_secret"].as_str().unwrap().to_owned()),
        SecretString::from(creds["refresh_token"].as_str().unwrap().to_owned()),
    )
    .base_url(sim.base_url())
    .token_url(creds["token_url"].as_str().unwrap())
    .token_refresh_ahead(Duration::from_secs(1))
    .rate_limits(RateLimits::new(1_000, None, 100))
    .build()
    .unwrap();
    let hs = HubSpot::new(config).unwrap();
    let mut s = hs.read(ReadRequest::full("contacts").page_size(5));
    let mut read = Vec::new();
    while let Some(page) = s.next().await {
        read.extend(ids(&page.unwrap().changes));
        // A slow consumer: the run outlives several tokens.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(read.len(), 60, "every record, no failed page");
    let refreshes = sim.context().auth().grants(GrantType::RefreshToken);
    assert!(refreshes >= 3, "only {refreshes} token refreshes");
    // Refreshed ahead: no request was ever sent with an expired token.
    assert_eq!(sim.request_log().count_status(401), 0);
}

/// HubSpot/hubspot-api-python#117: writes past the 10-second limit. The
/// window is scaled to 100 requests per 500 ms; 500 writes of one record
/// each, 10 at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_writes_against_a_rolling_limit_all_succeed_within_it() {
    let window = Duration::from_millis(500);
    let mut cfg = base_config();
    cfg.per_window = 100;
    cfg.window = window;
    let sim = start(cfg).await;
    let hs = Arc::new(
        private_app(&sim, RateLimits::new(100, None, 10).with_window(window))
            .with_unchanged_detection(false),
    );
    let outcomes: Vec<WriteOutcome> = futures_util::stream::iter(0..500)
        .map(|i| {
            let hs = Arc::clone(&hs);
            async move {
                let r = Record::new()
                    .with("email", format!("w{i}@example.com"))
                    .with("firstname", format!("W{i}"));
                hs.write("contacts", WriteBatch::upsert("email", vec![r]))
                    .await
                    .unwrap()
                    .remove(0)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, WriteOutcome::Created(_))),
        "every write succeeded"
    );
    assert_eq!(
        sim.context().store().count("contacts", Deleted::Exclude),
        500
    );
    let log = sim.request_log();
    assert_eq!(
        log.count_calls("POST", "/crm/v3/objects/contacts/batch/upsert"),
        500
    );
    // Every request the client sent (refused ones included) kept to the limit.
    let most = log.max_in_window(window, |e| e.path_starts_with("/crm/"));
    assert!(most <= 100, "{most} requests within one window");
    assert_eq!(log.count_status(429), 0);
}

/// singer-io/tap-hubspot#226: the bookmark set to the newest time seen
/// loses a record updated mid-read. Record 5 (on page 1) is updated at
/// t+6 s while page 2 is read, record 25 at t+8 s (so the newest time the
/// run sees is later than record 5's update); the next run returns record 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_updated_during_a_read_is_returned_by_the_next_run() {
    let sim = start(base_config()).await;
    let ids_seeded = seed_contacts(&sim, 30);
    let store = sim.context().store();
    let clock = sim.context().clock();
    clock.advance(chrono::Duration::seconds(100));
    let hs = private_app(&sim, RateLimits::new(1_000, None, 100));
    let mut s = hs.read(ReadRequest::full("contacts").page_size(10));
    let first = s.next().await.unwrap().unwrap();
    assert!(ids(&first.changes).contains(&ids_seeded[5]));
    let mut cursor = first.cursor;
    clock.advance(chrono::Duration::seconds(6));
    let mut f = Fields::new();
    f.insert("firstname".into(), json!("Changed mid-read"));
    store
        .update(
            "contacts",
            &crm_core::RecordId::new(ids_seeded[5].clone()),
            f.clone(),
        )
        .unwrap();
    clock.advance(chrono::Duration::seconds(2));
    store
        .update(
            "contacts",
            &crm_core::RecordId::new(ids_seeded[25].clone()),
            f,
        )
        .unwrap();
    while let Some(p) = s.next().await {
        cursor = p.unwrap().cursor;
    }
    drop(s);
    clock.advance(chrono::Duration::seconds(1));
    let mut next = Vec::new();
    let mut s = hs.read(ReadRequest::since("contacts", cursor));
    while let Some(p) = s.next().await {
        next.extend(p.unwrap().changes);
    }
    let got = ids(&next);
    assert!(got.contains(&ids_seeded[5]), "record 5 lost: {got:?}");
    let Some(Change::Upsert(r)) = next
        .iter()
        .find(|c| c.id().map(|i| i.to_string()) == Some(ids_seeded[5].clone()))
    else {
        panic!()
    };
    assert_eq!(
        r.get("firstname"),
        Some(&crm_core::Value::Text("Changed mid-read".into()))
    );
    assert!(
        !got.contains(&ids_seeded[25]),
        "record 25 was read with its change"
    );
}

/// HubSpot/hubspot-api-php#59: create, then search before the index caught
/// up, then create again. The same email upserted twice, 1 s apart, with a
/// 30 s search-index lag: one contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_email_upserted_twice_during_index_lag_is_one_contact() {
    let mut cfg = base_config();
    cfg.index_lag = Duration::from_secs(30);
    let sim = start(cfg).await;
    let hs = private_app(&sim, RateLimits::new(1_000, None, 100));
    let write = |name: &'static str| {
        let r = Record::new()
            .with("email", "Same@Example.com")
            .with("firstname", name);
        hs.write("contacts", WriteBatch::upsert("email", vec![r]))
    };
    let first = write("First").await.unwrap();
    assert!(matches!(first[0], WriteOutcome::Created(_)));
    sim.context().clock().advance(chrono::Duration::seconds(1));
    // The index has not caught up: a search-based lookup would miss it.
    let hits = hs
        .client()
        .objects("contacts")
        .search(SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new("email", Operator::Eq, "same@example.com")],
            }],
            sorts: Vec::new(),
            query: None,
            properties: vec!["email".into()],
            limit: Some(10),
            after: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(hits.total, 0, "the search index lags");
    let second = write("Second").await.unwrap();
    assert!(
        matches!(&second[0], WriteOutcome::Updated(id) if matches!(&first[0], WriteOutcome::Created(f) if f == id)),
        "{}",
        second[0].as_str()
    );
    let live = sim.context().store().all("contacts", Deleted::Exclude);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].text("firstname"), Some("Second"));
}

/// Deliveries over HTTP from the simulator's webhook sender, duplicated by
/// the fault plan: the receiver verifies each and passes every event on
/// once; a delivery signed with another secret is refused with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_over_http_are_verified_and_deduplicated() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};

    let secret = HubSpotSimConfig::default().client_secret;
    let sim = start(base_config()).await;
    let receiver = Arc::new(WebhookReceiver::new(WebhookVerifier::new(
        SecretString::from(secret.clone()),
    )));
    let got: Arc<Mutex<Vec<Change>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = {
        let receiver = Arc::clone(&receiver);
        let got = Arc::clone(&got);
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let receiver = Arc::clone(&receiver);
            let got = Arc::clone(&got);
            async move {
                // HubSpot signs the full URL it posted to.
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                let url = format!("http://{host}{uri}");
                match receiver.receive(method.as_str(), &url, &headers, &body) {
                    Ok(changes) => {
                        got.lock()
                            .unwrap()
                            .extend(changes.into_iter().map(|c| c.change));
                        StatusCode::OK
                    }
                    Err(_) => StatusCode::UNAUTHORIZED,
                }
            }
        }
    };
    let app = axum::Router::new().route("/hubspot/webhook", axum::routing::post(handler));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/hubspot/webhook?portal=62515");
    sim.context().webhooks().subscribe(&url);
    sim.context()
        .faults()
        .set_plan(FaultPlan::new(1).rule(FaultRule::new(Fault::DuplicateWebhook { copies: 2 })));
    let event = |id: u64, object: u64, value: &str| -> WebhookEvent {
        serde_json::from_value(json!({
            "eventId": id, "subscriptionId": 7, "portalId": 62515, "appId": 1,
            "occurredAt": 1_700_000_000_000i64 + id as i64,
            "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
            "objectId": object, "propertyName": "lifecyclestage", "propertyValue": value
        }))
        .unwrap()
    };
    let d1 = send_webhook(
        sim.context(),
        &secret,
        &[event(1, 42, "lead"), event(2, 43, "customer")],
    )
    .await;
    let d2 = send_webhook(sim.context(), &secret, &[event(3, 44, "customer")]).await;
    let all: Vec<_> = d1.iter().chain(d2.iter()).collect();
    assert_eq!(all.len(), 4, "each delivery sent twice");
    assert!(all.iter().all(|d| d.status == Some(200)), "{all:?}");
    assert_eq!(got.lock().unwrap().len(), 3, "each event passed on once");
    // Signed with another secret: refused, nothing passed on.
    sim.context().faults().clear();
    let forged = send_webhook(sim.context(), "not-the-secret", &[event(4, 45, "lead")]).await;
    assert_eq!(forged.len(), 1);
    assert_eq!(forged[0].status, Some(401));
    assert_eq!(got.lock().unwrap().len(), 3);
    server.abort();
}
