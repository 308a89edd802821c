//! The connector against its simulator on 127.0.0.1.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crm_core::{
    Change, ErrorKind, ReadRequest, Record, Sink, Source, Value, WriteBatch, WriteOutcome,
};
use crm_hubspot::error::CTX_POLICY;
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, custom_property, sign_delivery};
use crm_hubspot::webhook::{WebhookReceiver, WebhookVerifier};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_sim::conformance::{self, Harness};
use crm_sim::store::Fields;
use crm_sim::{SimContext, SimHandle, SimServer, Window};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start(config: HubSpotSimConfig) -> SimHandle {
    SimServer::new(HubSpotSimulator::new(config))
        .start()
        .await
        .unwrap()
}

fn connector(sim: &SimHandle, limits: RateLimits) -> HubSpot {
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

fn fast_limits() -> RateLimits {
    RateLimits::new(100, None, 20)
}

async fn read_all(
    source: &dyn Source,
    req: ReadRequest,
) -> (Vec<Change>, Option<crm_core::Cursor>) {
    let mut s = source.read(req);
    let mut changes = Vec::new();
    let mut cursor = None;
    while let Some(p) = s.next().await {
        let p = p.unwrap();
        changes.extend(p.changes);
        cursor = Some(p.cursor);
    }
    (changes, cursor)
}

struct HsHarness {
    sim: SimHandle,
    object: &'static str,
    key: &'static str,
    invalid: (&'static str, &'static str),
}

#[async_trait]
impl Harness for HsHarness {
    fn sim(&self) -> &SimContext {
        self.sim.context()
    }
    fn object(&self) -> &str {
        self.object
    }
    fn source(&self) -> Arc<dyn Source> {
        Arc::new(connector(&self.sim, fast_limits()))
    }
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        Some(Arc::new(connector(&self.sim, fast_limits())))
    }
    fn page_size(&self) -> usize {
        10
    }
    fn batch_size(&self) -> usize {
        10
    }
    fn key_field(&self) -> &str {
        self.key
    }
    fn seed_fields(&self, i: usize) -> Fields {
        let mut f = Fields::new();
        f.insert(self.key.into(), json!(format!("user{i}@example.com")));
        f.insert("name".into(), json!(format!("Seed {i}")));
        f
    }
    fn update_fields(&self, i: usize) -> Fields {
        let mut f = Fields::new();
        f.insert("name".into(), json!(format!("Changed {i}")));
        f
    }
    fn record(&self, i: usize, version: u32) -> Record {
        Record::new()
            .with(self.key, format!("user{i}@example.com"))
            .with(
                if self.object == "contacts" {
                    "firstname"
                } else {
                    "name"
                },
                format!("Name {i} v{version}"),
            )
    }
    fn invalid_record(&self, i: usize) -> Option<Record> {
        Some(
            Record::new()
                .with(self.key, format!("bad{i}@example.com"))
                .with(self.invalid.0, self.invalid.1),
        )
    }
    fn rate_limits(&self) -> Vec<Window> {
        vec![Window::sliding(
            "ten_secondly_rolling",
            100,
            Duration::from_secs(10),
        )]
    }
    fn expected_read_calls(&self, n: usize) -> usize {
        // Property discovery and the newest-change probe, then one list call a page.
        n.div_ceil(self.page_size()).max(1) + 2
    }
    fn expected_write_calls(&self, n: usize) -> usize {
        // A batch read of the keys (unchanged detection) and one upsert a batch.
        2 * n.div_ceil(self.batch_size())
    }
}

fn sim_config() -> HubSpotSimConfig {
    let mut c = HubSpotSimConfig::default()
        .custom_property("companies", custom_property("external_id", "string", true))
        .custom_property("deals", custom_property("external_id", "string", true))
        .custom_property("contacts", custom_property("name", "string", false))
        .custom_property("deals", custom_property("name", "string", false));
    c.daily = None;
    c
}

async fn conformance_for(
    object: &'static str,
    key: &'static str,
    invalid: (&'static str, &'static str),
) {
    let h = HsHarness {
        sim: start(sim_config()).await,
        object,
        key,
        invalid,
    };
    let report = conformance::run_all(&h, 1..=2).await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_contacts() {
    conformance_for("contacts", "email", ("email", "not-an-email")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_companies() {
    conformance_for("companies", "external_id", ("numberofemployees", "lots")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_deals() {
    conformance_for("deals", "external_id", ("amount", "lots")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_25000_changes_incrementally_past_the_search_cap() {
    // About 600 calls: a rolling limit to match the client's, so the test
    // measures reading, not waiting.
    let mut cfg = sim_config();
    cfg.per_window = 10_000;
    let sim = start(cfg).await;
    let hs = connector(&sim, RateLimits::new(10_000, None, 1_000));
    let (_, cursor) = read_all(&hs, ReadRequest::full("contacts")).await;
    let cursor = cursor.unwrap();
    let store = sim.context().store();
    sim.context().clock().advance(chrono::Duration::seconds(5));
    // 25,000 changes, in bulk: many share a modification time.
    for i in 0..25_000 {
        let mut f = Fields::new();
        f.insert("email".into(), json!(format!("c{i}@example.com")));
        store.create("contacts", f);
    }
    let (changes, cursor) = read_all(&hs, ReadRequest::since("contacts", cursor)).await;
    let mut ids: Vec<String> = changes
        .iter()
        .filter_map(|c| c.id().map(|i| i.to_string()))
        .collect();
    assert_eq!(ids.len(), 25_000, "every change once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25_000, "no repeats");
    // No search went past HubSpot's 10,000-hit cap.
    assert_eq!(sim.request_log().count_status(400), 0);
    assert_eq!(sim.request_log().count_status(429), 0);
    // All 25,000 changed within the 5-minute lookback: the cursor keeps
    // them all (as digests, at most 15 bytes each) ...
    let cursor = cursor.unwrap();
    let size = cursor.as_json().to_string().len();
    assert!(size < 25_000 * 15, "a {size}-byte cursor");
    // ... so a run with no edits re-reads the lookback and emits nothing,
    let (again, cursor) = read_all(&hs, ReadRequest::since("contacts", cursor)).await;
    assert!(again.is_empty(), "{} changes repeated", again.len());
    // and a run after 3 edits emits exactly those 3.
    sim.context().clock().advance(chrono::Duration::seconds(1));
    let edited = [&ids[0], &ids[12_345], &ids[24_999]];
    for id in edited {
        let mut f = Fields::new();
        f.insert("firstname".into(), json!("Edited"));
        store
            .update("contacts", &crm_core::RecordId::new(id.as_str()), f)
            .unwrap();
    }
    let (third, cursor) = read_all(&hs, ReadRequest::since("contacts", cursor.unwrap())).await;
    let mut got: Vec<String> = third
        .iter()
        .filter_map(|c| c.id().map(|i| i.to_string()))
        .collect();
    got.sort();
    let mut want: Vec<String> = edited.iter().map(|s| (*s).clone()).collect();
    want.sort();
    assert_eq!(got, want);
    let (fourth, _) = read_all(&hs, ReadRequest::since("contacts", cursor.unwrap())).await;
    assert!(fourth.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_custom_properties_never_make_a_long_url() {
    for n in [250usize, 1_200] {
        let mut cfg = sim_config();
        for i in 0..n {
            cfg = cfg.custom_property(
                "contacts",
                custom_property(&format!("custom_property_number_{i:04}"), "string", false),
            );
        }
        let sim = start(cfg).await;
        for i in 0..30 {
            let mut f = Fields::new();
            f.insert("email".into(), json!(format!("p{i}@example.com")));
            f.insert("custom_property_number_0007".into(), json!(format!("v{i}")));
            sim.context().store().create("contacts", f);
        }
        let hs = connector(&sim, fast_limits());
        let (changes, _) = read_all(&hs, ReadRequest::full("contacts")).await;
        assert_eq!(changes.len(), 30, "{n} properties");
        let Change::Upsert(r) = &changes[0] else {
            panic!()
        };
        assert!(r.fields.len() > n, "all {n} properties requested");
        assert!(r.get("custom_property_number_0007").is_some());
        let longest = sim
            .request_log()
            .entries()
            .iter()
            .map(|e| e.path.len() + e.query.as_deref().map_or(0, str::len))
            .max()
            .unwrap();
        assert!(longest < 2_500, "a {longest}-character URL was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_upserts_by_email_in_ten_calls_with_per_record_errors() {
    let sim = start(sim_config()).await;
    let hs = connector(&sim, RateLimits::new(1_000, None, 100)).with_unchanged_detection(false);
    let records: Vec<Record> = (0..1_000)
        .map(|i| {
            let email = if i % 97 == 0 {
                format!("broken-{i}")
            } else {
                format!("u{i}@example.com")
            };
            Record::new()
                .with("email", email)
                .with("firstname", format!("F{i}"))
        })
        .collect();
    let out = hs
        .write("contacts", WriteBatch::upsert("email", records))
        .await
        .unwrap();
    assert_eq!(out.len(), 1_000);
    let upsert_calls = sim
        .request_log()
        .count_calls("POST", "/crm/v3/objects/contacts/batch/upsert");
    assert_eq!(upsert_calls, 10);
    for (i, o) in out.iter().enumerate() {
        if i % 97 == 0 {
            match o {
                WriteOutcome::Rejected { index, error } => {
                    assert_eq!(*index, i);
                    assert_eq!(error.kind(), &ErrorKind::InvalidInput);
                    assert!(error.to_string().contains("invalid"), "{error}");
                }
                other => panic!("record {i} was {}", other.as_str()),
            }
        } else {
            assert!(
                matches!(o, WriteOutcome::Created(_)),
                "record {i}: {}",
                o.as_str()
            );
        }
    }
    let live = sim
        .context()
        .store()
        .count("contacts", crm_sim::store::Deleted::Exclude);
    assert_eq!(live, 1_000 - 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_signed_by_the_simulator_verify_and_tampered_or_stale_fail() {
    let secret = HubSpotSimConfig::default().client_secret;
    let uri = "https://app.example.com/hubspot/webhook?portal=1";
    let body = json!([{
        "eventId": 100, "subscriptionId": 7, "portalId": 62515, "appId": 1,
        "occurredAt": 1_700_000_000_000i64, "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": 42, "propertyName": "lifecyclestage",
        "propertyValue": "customer"
    }])
    .to_string();
    let to_map = |pairs: Vec<(String, String)>| {
        let mut h = crm_http::reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                crm_http::reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    let now = chrono::Utc::now().timestamp_millis();
    let receiver = WebhookReceiver::new(WebhookVerifier::new(SecretString::from(secret.clone())));
    let valid = to_map(sign_delivery(&secret, uri, body.as_bytes(), now));
    let changes = receiver
        .receive("POST", uri, &valid, body.as_bytes())
        .unwrap();
    assert_eq!(changes.len(), 1);
    let Change::Upsert(r) = &changes[0].change else {
        panic!()
    };
    assert_eq!(
        r.get("lifecyclestage"),
        Some(&Value::Text("customer".into()))
    );
    // Redelivered: accepted, nothing new.
    assert!(
        receiver
            .receive("POST", uri, &valid, body.as_bytes())
            .unwrap()
            .is_empty()
    );
    // Tampered body.
    let tampered = body.replace("customer", "lead");
    assert!(
        receiver
            .receive("POST", uri, &valid, tampered.as_bytes())
            .is_err()
    );
    // Stale: signed six minutes ago.
    let stale = to_map(sign_delivery(&secret, uri, body.as_bytes(), now - 360_000));
    assert!(
        receiver
            .receive("POST", uri, &stale, body.as_bytes())
            .is_err()
    );
}

async fn daily_sim(daily: u32, daily_headers: bool) -> SimHandle {
    let mut cfg = sim_config();
    cfg.daily = Some(daily);
    cfg.daily_headers = daily_headers;
    let sim = start(cfg).await;
    for i in 0..100 {
        let mut f = Fields::new();
        f.insert("email".into(), json!(format!("d{i}@example.com")));
        sim.context().store().create("contacts", f);
    }
    sim
}

/// Reads pages of 10 until the read fails: the pages read and the error.
async fn read_until_error(hs: &HubSpot) -> (usize, crm_core::Error) {
    let mut s = hs.read(ReadRequest::full("contacts").page_size(10));
    let mut pages = 0;
    loop {
        match s.next().await {
            Some(Ok(_)) => pages += 1,
            Some(Err(e)) => return (pages, e),
            None => panic!("the read finished despite the daily limit"),
        }
    }
}

/// HubSpot's answer once the daily allowance is spent is a 429 whose body
/// names `policyName: DAILY`. With the daily headers off, the client cannot
/// see it coming: the 6th request is refused, and that must stop the run
/// at once (no retry, no further request) with the policy in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_429_stops_the_run_after_one_refused_request() {
    let sim = daily_sim(5, false).await;
    let hs = connector(&sim, fast_limits());
    let (pages, err) = read_until_error(&hs).await;
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.context_value(CTX_POLICY), Some("DAILY"), "{err}");
    assert_eq!(err.context_value("status"), Some("429"), "{err}");
    assert!(err.to_string().contains("daily API limit"), "{err}");
    // Properties, the newest-change search, then three list pages.
    assert_eq!(pages, 3, "pages before the limit are kept");
    let log = sim.request_log();
    assert_eq!(log.count_status(429), 1, "exactly one refused request");
    assert_eq!(log.len(), 6, "nothing sent after the refusal");
    let refused = log.entries().into_iter().last().unwrap();
    assert_eq!(refused.status(), Some(429));
    assert_eq!(refused.path, "/crm/v3/objects/contacts");
    // The same client now fails at once, without asking HubSpot again.
    let (_, again) = read_until_error(&hs).await;
    assert_eq!(again.kind(), &ErrorKind::QuotaExhausted);
    assert_eq!(log.len(), 6, "no request after a DAILY 429");
}

/// The daily allowance belongs to the account: another app spending it
/// between two requests leaves this client's last `Daily-Remaining` header
/// above zero, and its next request meets the `DAILY` 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_app_spending_the_daily_allowance_stops_the_run_with_one_429() {
    let sim = daily_sim(8, true).await;
    let hs = connector(&sim, fast_limits());
    let mut s = hs.read(ReadRequest::full("contacts").page_size(10));
    s.next().await.unwrap().unwrap();
    // Properties, newest change and a page spent 3 of 8; the other app
    // spends the remaining 5.
    let other = crm_http::reqwest::Client::new();
    let token = HubSpotSimConfig::default().private_app_token;
    for _ in 0..5 {
        let r = other
            .get(sim.url("/crm/v3/objects/companies?limit=1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let err = s.next().await.unwrap().unwrap_err();
    assert!(s.next().await.is_none(), "the run stops");
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted, "{err}");
    assert_eq!(err.context_value(CTX_POLICY), Some("DAILY"), "{err}");
    let log = sim.request_log();
    assert_eq!(log.count_status(429), 1);
    assert_eq!(log.len(), 9, "3 + 5 admitted, 1 refused, none re-sent");
}

/// With the daily headers on, the answer that spends the allowance says
/// `X-HubSpot-RateLimit-Daily-Remaining: 0` and the client stops before
/// HubSpot has to refuse anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_remaining_of_zero_stops_the_run_before_a_429() {
    let sim = daily_sim(5, true).await;
    let hs = connector(&sim, fast_limits());
    let (pages, err) = read_until_error(&hs).await;
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(pages, 3, "pages before the limit are kept");
    assert_eq!(sim.request_log().count_status(429), 0);
    assert_eq!(sim.request_log().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_deals_come_back_as_deletes() {
    let sim = start(sim_config()).await;
    let store = sim.context().store();
    let ids: Vec<_> = (0..20)
        .map(|i| {
            let mut f = Fields::new();
            f.insert("dealname".into(), json!(format!("Deal {i}")));
            store.create("deals", f).id
        })
        .collect();
    let hs = connector(&sim, fast_limits());
    let (_, cursor) = read_all(&hs, ReadRequest::full("deals")).await;
    sim.context().clock().advance(chrono::Duration::seconds(1));
    for id in ids.iter().take(5) {
        store.delete("deals", id).unwrap();
    }
    let (changes, _) = read_all(&hs, ReadRequest::since("deals", cursor.unwrap())).await;
    let deletes = changes
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .count();
    assert_eq!(deletes, 5);
    assert_eq!(changes.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_index_lag_is_covered_by_the_lookback() {
    let mut cfg = sim_config();
    cfg.index_lag = Duration::from_secs(90);
    let sim = start(cfg).await;
    let clock = sim.context().clock();
    let store = sim.context().store();
    let hs = connector(&sim, fast_limits());
    let (_, c0) = read_all(&hs, ReadRequest::full("contacts")).await;
    let mut f = Fields::new();
    f.insert("email".into(), json!("late@example.com"));
    store.create("contacts", f);
    clock.advance(chrono::Duration::seconds(30));
    let mut g = Fields::new();
    g.insert("email".into(), json!("later@example.com"));
    store.create("contacts", g);
    clock.advance(chrono::Duration::seconds(60));
    // Only the first is searchable yet.
    let (first, c1) = read_all(&hs, ReadRequest::since("contacts", c0.unwrap())).await;
    assert_eq!(first.len(), 1);
    clock.advance(chrono::Duration::seconds(60));
    let (second, _) = read_all(&hs, ReadRequest::since("contacts", c1.unwrap())).await;
    assert_eq!(
        second.len(),
        1,
        "the late record is found, the first not repeated"
    );
}
