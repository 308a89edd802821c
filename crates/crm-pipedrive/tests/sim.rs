//! The connector against its simulator on 127.0.0.1.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeZone;
use crm_core::{
    Change, Cursor, ErrorKind, ReadRequest, Record, Sink, Source, Value, WriteBatch, WriteOutcome,
};
use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator, SimField};
use crm_pipedrive::webhook::{WebhookReceiver, WebhookVerifier};
use crm_pipedrive::{ObjectKind, Pipedrive, PipedriveConfig, RateLimits, SocialProfile};
use crm_sim::conformance::{self, Harness};
use crm_sim::store::{Deleted, Fields, StoredRecord};
use crm_sim::{SimContext, SimHandle, SimServer, Window};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start(sim: PipedriveSimulator) -> SimHandle {
    SimServer::new(sim).start().await.unwrap()
}

fn fast_sim() -> PipedriveSimConfig {
    let mut c = PipedriveSimConfig::default().custom_field(SimField::new(
        ObjectKind::Persons,
        "Customer Type",
        "enum",
        &["Gold", "Silver"],
    ));
    c.per_window = 100_000;
    c.daily = None;
    c
}

fn connector_with(sim: &SimHandle, limits: RateLimits) -> Pipedrive {
    let token = sim.credentials()["api_token"].as_str().unwrap().to_owned();
    let config = PipedriveConfig::api_token(SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(limits)
        .enrichment_fields([
            "Social Engagement Score",
            "Primary Social Platform",
            "Social Profile URL",
        ])
        .build()
        .unwrap();
    Pipedrive::new(config).unwrap()
}

fn fast(sim: &SimHandle) -> Pipedrive {
    connector_with(sim, RateLimits::new(10_000, Duration::from_secs(1), None))
}

async fn read_all(source: &dyn Source, req: ReadRequest) -> (Vec<Change>, Option<Cursor>) {
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

fn upsert_ids(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| matches!(c, Change::Upsert(_)))
        .filter_map(|c| c.id().map(|i| i.to_string()))
        .collect()
}

fn person(i: usize) -> Fields {
    let mut f = Fields::new();
    f.insert("name".into(), json!(format!("Seed {i}")));
    f.insert(
        "emails".into(),
        json!([{"value": format!("user{i}@example.com"), "primary": true, "label": "work"}]),
    );
    f
}

// ---------------------------------------------------------------- conformance

struct PdHarness {
    sim: SimHandle,
    kind: ObjectKind,
}

impl PdHarness {
    fn connector(&self) -> Pipedrive {
        connector_with(&self.sim, RateLimits::new(40, Duration::from_secs(1), None))
    }
}

#[async_trait]
impl Harness for PdHarness {
    fn sim(&self) -> &SimContext {
        self.sim.context()
    }
    fn object(&self) -> &str {
        self.kind.as_str()
    }
    fn source(&self) -> Arc<dyn Source> {
        Arc::new(self.connector())
    }
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        Some(Arc::new(self.connector()))
    }
    fn page_size(&self) -> usize {
        10
    }
    fn batch_size(&self) -> usize {
        10
    }
    fn key_field(&self) -> &str {
        match self.kind {
            ObjectKind::Persons => "email",
            ObjectKind::Deals => "title",
            _ => "name",
        }
    }
    fn sim_key_field(&self) -> &str {
        match self.kind {
            ObjectKind::Persons => "emails",
            ObjectKind::Deals => "title",
            _ => "name",
        }
    }
    fn seed_fields(&self, i: usize) -> Fields {
        match self.kind {
            ObjectKind::Persons => person(i),
            ObjectKind::Deals => {
                let mut f = Fields::new();
                f.insert("title".into(), json!(format!("Deal {i}")));
                f.insert("value".into(), json!(10 * i));
                f
            }
            _ => {
                let mut f = Fields::new();
                f.insert("name".into(), json!(format!("Org {i}")));
                f
            }
        }
    }
    fn update_fields(&self, i: usize) -> Fields {
        let mut f = Fields::new();
        match self.kind {
            ObjectKind::Deals => f.insert("value".into(), json!(99_000 + i)),
            _ => f.insert("address".into(), json!(format!("Changed {i}"))),
        };
        if self.kind == ObjectKind::Persons {
            f.clear();
            f.insert("name".into(), json!(format!("Changed {i}")));
        }
        f
    }
    fn record(&self, i: usize, version: u32) -> Record {
        match self.kind {
            ObjectKind::Persons => Record::new()
                .with("email", format!("user{i}@example.com"))
                .with("name", format!("Name {i} v{version}")),
            ObjectKind::Deals => Record::new()
                .with("title", format!("Deal {i}"))
                .with("value", i64::from(version) * 100),
            _ => Record::new()
                .with("name", format!("Org {i}"))
                .with("address", format!("Street {version}")),
        }
    }
    fn invalid_record(&self, i: usize) -> Option<Record> {
        Some(match self.kind {
            ObjectKind::Persons => Record::new()
                .with("email", format!("bad{i}@example.com"))
                .with("name", "Bad")
                .with("Social Engagement Score", "lots"),
            ObjectKind::Deals => Record::new()
                .with("title", format!("Bad {i}"))
                .with("value", "lots"),
            _ => Record::new()
                .with("name", format!("Bad {i}"))
                .with("visible_to", "9"),
        })
    }
    fn rate_limits(&self) -> Vec<Window> {
        vec![Window::sliding("window", 40, Duration::from_secs(1))]
    }
    fn matches(&self, stored: &StoredRecord, read: &Record) -> bool {
        match self.kind {
            ObjectKind::Persons => {
                let s = stored
                    .fields
                    .get("emails")
                    .and_then(|e| e[0].get("value"))
                    .cloned();
                let r = read.get_path("email.0.value").map(|v| v.to_json());
                s.is_some() && s == r
            }
            _ => {
                let k = self.key_field();
                stored.fields.get(k).cloned() == read.get(k).map(Value::to_json)
            }
        }
    }
    fn expected_read_calls(&self, n: usize) -> usize {
        // Field definitions (and pipelines and stages for deals), then one call a page.
        let extra = if self.kind == ObjectKind::Deals { 3 } else { 1 };
        n.div_ceil(self.page_size()).max(1) + extra
    }
    fn expected_write_calls(&self, n: usize) -> usize {
        // Field definitions once, then a search and a create per new record
        // (Pipedrive has no batch create).
        2 * n + 1
    }
}

async fn conformance_for(kind: ObjectKind) {
    let mut c = PipedriveSimConfig::default();
    c.per_window = 40;
    c.window = Duration::from_secs(1);
    c.daily = None;
    let h = PdHarness {
        sim: start(PipedriveSimulator::new(c)).await,
        kind,
    };
    conformance::run_all(&h, 1..=2).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_persons() {
    conformance_for(ObjectKind::Persons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_organizations() {
    conformance_for(ObjectKind::Organizations).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_deals() {
    conformance_for(ObjectKind::Deals).await;
}

// ---------------------------------------------------------------- custom fields

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_fields_written_by_name_land_under_hashes_and_survive_a_relabel() {
    let simulator = PipedriveSimulator::new(fast_sim());
    let sim = start(simulator.clone()).await;
    let pd = fast(&sim);
    let hash = simulator
        .key_of(ObjectKind::Persons, "Customer Type")
        .unwrap();
    let score = simulator
        .key_of(ObjectKind::Persons, "Social Engagement Score")
        .unwrap();
    assert_eq!(hash.len(), 40);
    let rec = Record::new()
        .with("email", "ada@example.com")
        .with("name", "Ada")
        .with("Customer Type", "Gold")
        .with("social engagement score", 85);
    let out = pd
        .write("persons", WriteBatch::upsert("email", vec![rec]))
        .await
        .unwrap();
    let id = match &out[0] {
        WriteOutcome::Created(id) => id.clone(),
        other => panic!("{other:?}"),
    };
    let stored = sim.context().store().get_live("persons", &id).unwrap();
    assert_eq!(
        stored.fields.get(&hash),
        Some(&json!(1)),
        "option id under the hash key"
    );
    assert_eq!(stored.fields.get(&score), Some(&json!(85)));
    assert!(!stored.fields.contains_key("Customer Type"));

    let (changes, cursor) = read_all(&pd, ReadRequest::full("persons")).await;
    let Change::Upsert(r) = &changes[0] else {
        panic!()
    };
    assert_eq!(r.text("Customer Type"), Some("Gold"));
    assert_eq!(r.get("Social Engagement Score"), Some(&Value::Int(85)));

    // Relabelled in the app between runs: read by the new label, write by the same hash.
    assert!(simulator.rename_field(ObjectKind::Persons, "Customer Type", "Client Tier"));
    sim.context().clock().advance(chrono::Duration::seconds(2));
    sim.context().store().touch("persons", &id).unwrap();
    let (changes, _) = read_all(&pd, ReadRequest::since("persons", cursor.unwrap())).await;
    let Change::Upsert(r) = &changes[0] else {
        panic!()
    };
    assert_eq!(r.text("Client Tier"), Some("Gold"));
    assert!(r.get("Customer Type").is_none());
    let out = pd
        .write(
            "persons",
            WriteBatch::upsert(
                "email",
                vec![
                    Record::new()
                        .with("email", "ada@example.com")
                        .with("Client Tier", "Silver"),
                ],
            ),
        )
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Updated(_)), "{:?}", out[0]);
    let stored = sim.context().store().get_live("persons", &id).unwrap();
    assert_eq!(stored.fields.get(&hash), Some(&json!(2)));
    // The old name is refused before anything is sent.
    let out = pd
        .write(
            "persons",
            WriteBatch::upsert(
                "email",
                vec![
                    Record::new()
                        .with("email", "ada@example.com")
                        .with("Customer Type", "Gold"),
                ],
            ),
        )
        .await
        .unwrap();
    match &out[0] {
        WriteOutcome::Rejected { error, .. } => {
            assert_eq!(error.kind(), &ErrorKind::SchemaMismatch)
        }
        other => panic!("{other:?}"),
    }
    let schema = crm_core::Connector::describe(&pd, "persons").await.unwrap();
    let tier = schema.get("Client Tier").unwrap();
    assert!(tier.custom);
    assert_eq!(tier.picklist.len(), 2);
}

// ---------------------------------------------------------------- upserts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_upserts_by_email_create_no_duplicates() {
    let sim = start(PipedriveSimulator::new(fast_sim())).await;
    let pd = fast(&sim);
    let mut distinct = BTreeSet::new();
    let mut created = 0;
    for b in 0..20usize {
        // 50 emails, each twice in the batch; half of them were in the previous batch.
        let records: Vec<Record> = (0..100)
            .map(|j| {
                let e = b * 25 + j / 2;
                distinct.insert(e);
                Record::new()
                    .with("email", format!("P{e}@Example.com"))
                    .with("name", format!("Person {e}"))
            })
            .collect();
        sim.context().log().clear();
        let out = pd
            .write("persons", WriteBatch::upsert("email", records))
            .await
            .unwrap();
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(WriteOutcome::is_ok), "{out:?}");
        created += out
            .iter()
            .filter(|o| matches!(o, WriteOutcome::Created(_)))
            .count();
        for pair in out.chunks(2) {
            assert_eq!(pair[0].id(), pair[1].id(), "the same email is one person");
        }
        let searches = sim.context().log().count(|e| e.path.ends_with("/search"));
        assert_eq!(searches, 50, "one search per distinct email in batch {b}");
    }
    let people = sim.context().store().all("persons", Deleted::Exclude);
    assert_eq!(people.len(), distinct.len());
    assert_eq!(created, distinct.len());
    let emails: BTreeSet<String> = people
        .iter()
        .map(|p| {
            p.fields["emails"][0]["value"]
                .as_str()
                .unwrap()
                .to_lowercase()
        })
        .collect();
    assert_eq!(emails.len(), people.len(), "no two persons share an email");
}

// ---------------------------------------------------------------- quota

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_quota_stops_the_run_with_a_resumable_checkpoint() {
    let mut c = fast_sim();
    c.daily = Some(6);
    let sim = start(PipedriveSimulator::new(c)).await;
    for i in 0..10 {
        let mut f = Fields::new();
        f.insert("title".into(), json!(format!("Deal {i}")));
        sim.context().store().create("deals", f);
    }
    let pd = fast(&sim);
    let mut stream = pd.read(ReadRequest::full("deals").page_size(2));
    let mut seen = Vec::new();
    let mut checkpoint = None;
    let err = loop {
        match stream.next().await {
            Some(Ok(p)) => {
                seen.extend(upsert_ids(&p.changes));
                checkpoint = Some(p.cursor);
            }
            Some(Err(e)) => break e,
            None => panic!("the quota never ran out"),
        }
    };
    drop(stream);
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted, "{err}");
    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(
        err.context_value("resume"),
        Some("from the cursor of the last page")
    );
    assert!(!err.is_retryable());
    assert_eq!(
        seen.len(),
        6,
        "fields, pipelines, stages, then 3 pages of 2"
    );
    // The next day (a new process): resume from the checkpoint.
    sim.context().reset_rate_limits();
    let pd = fast(&sim);
    let (rest, _) = read_all(
        &pd,
        ReadRequest::since("deals", checkpoint.unwrap()).page_size(2),
    )
    .await;
    seen.extend(upsert_ids(&rest));
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 10, "nothing read twice");
    assert_eq!(unique.len(), 10, "nothing lost");

    // A configured client-side quota stops before the provider refuses.
    let capped = connector_with(
        &sim,
        RateLimits::new(1_000, Duration::from_secs(1), Some(2)),
    );
    sim.context().log().clear();
    let mut s = capped.read(ReadRequest::full("deals"));
    let mut last = None;
    while let Some(p) = s.next().await {
        if let Err(e) = p {
            last = Some(e);
            break;
        }
    }
    assert_eq!(last.unwrap().kind(), &ErrorKind::QuotaExhausted);
    assert_eq!(sim.context().log().count(|e| e.status() == Some(429)), 0);
}

// ---------------------------------------------------------------- PITFALLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighteen_thousand_deals_over_three_years_all_synced() {
    let sim = start(PipedriveSimulator::new(fast_sim())).await;
    let clock = sim.context().clock();
    let store = sim.context().store();
    let t0 = chrono::Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap();
    let add = |range: std::ops::Range<i64>| {
        for i in range {
            // One deal every ~1.46 hours: 18,000 over 3 years.
            clock.freeze_at(t0 + chrono::Duration::seconds(i * 5_256));
            let mut f = Fields::new();
            f.insert("title".into(), json!(format!("Deal {i}")));
            store.create("deals", f);
        }
    };
    add(0..6_000);
    let pd = fast(&sim);
    let (first, cursor) = read_all(&pd, ReadRequest::full("deals")).await;
    assert_eq!(first.len(), 6_000);
    add(6_000..18_000);
    let (rest, _) = read_all(&pd, ReadRequest::since("deals", cursor.unwrap())).await;
    let mut ids = upsert_ids(&first);
    ids.extend(upsert_ids(&rest));
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 18_000);
    assert_eq!(unique.len(), 18_000);
    let (all, _) = read_all(&pd, ReadRequest::full("deals")).await;
    assert_eq!(
        all.len(),
        store.count("deals", Deleted::Exclude),
        "source count = destination count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_with_limit_500_all_emitted_and_idle_runs_emit_nothing() {
    let sim = start(PipedriveSimulator::new(fast_sim())).await;
    for i in 0..100 {
        sim.context().store().create("persons", person(i));
    }
    let pd = fast(&sim);
    let (_, cursor) = read_all(&pd, ReadRequest::full("persons")).await;
    sim.context().clock().advance(chrono::Duration::seconds(1));
    let mut expected = BTreeSet::new();
    for i in 100..1_234 {
        expected.insert(
            sim.context()
                .store()
                .create("persons", person(i))
                .id
                .to_string(),
        );
    }
    for r in sim
        .context()
        .store()
        .all("persons", Deleted::Exclude)
        .into_iter()
        .take(100)
    {
        let mut f = Fields::new();
        f.insert("name".into(), json!("changed"));
        sim.context().store().update("persons", &r.id, f).unwrap();
        expected.insert(r.id.to_string());
    }
    assert_eq!(expected.len(), 1_234);
    let mut stream = pd.read(ReadRequest::since("persons", cursor.unwrap()).page_size(500));
    let mut got = Vec::new();
    let mut pages = 0;
    let mut cursor = None;
    while let Some(p) = stream.next().await {
        let p = p.unwrap();
        pages += 1;
        got.extend(upsert_ids(&p.changes));
        cursor = Some(p.cursor);
    }
    drop(stream);
    assert!(pages >= 3);
    assert_eq!(got.len(), 1_234, "each change once");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let mut cursor = cursor.unwrap();
    for run in 0..3 {
        let (idle, next) = read_all(&pd, ReadRequest::since("persons", cursor)).await;
        assert!(idle.is_empty(), "idle run {run} emitted {}", idle.len());
        cursor = next.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_surface_and_stages_read_as_names() {
    let sim = start(PipedriveSimulator::new(fast_sim())).await;
    let store = sim.context().store();
    let mut f = Fields::new();
    f.insert("title".into(), json!("Big deal"));
    f.insert("stage_id".into(), json!(2));
    let deal = store.create("deals", f);
    let p = store.create("persons", person(1));
    let pd = fast(&sim);
    let (changes, dc) = read_all(&pd, ReadRequest::full("deals")).await;
    let Change::Upsert(r) = &changes[0] else {
        panic!()
    };
    assert_eq!(r.text("stage_name"), Some("Qualified"));
    assert_eq!(r.text("pipeline_name"), Some("Sales"));
    let (_, pc) = read_all(&pd, ReadRequest::full("persons")).await;
    sim.context().clock().advance(chrono::Duration::seconds(1));
    // Deleted through the sink and directly in the app.
    let out = pd
        .write(
            "deals",
            WriteBatch::new(
                crm_core::WriteOp::Delete,
                vec![Record::new().with_id(deal.id.clone())],
            ),
        )
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Deleted(_)));
    store.delete("persons", &p.id).unwrap();
    let (changes, _) = read_all(&pd, ReadRequest::since("deals", dc.unwrap())).await;
    assert!(
        matches!(&changes[..], [Change::Delete { id, .. }] if *id == deal.id),
        "{changes:?}"
    );
    let (changes, _) = read_all(&pd, ReadRequest::since("persons", pc.unwrap())).await;
    assert!(
        matches!(&changes[..], [Change::Delete { id, .. }] if *id == p.id),
        "{changes:?}"
    );
}

// ---------------------------------------------------------------- enrichment, notes, leads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_enrichment_is_one_note_and_custom_fields() {
    let simulator = PipedriveSimulator::new(fast_sim());
    let sim = start(simulator.clone()).await;
    let pd = fast(&sim);
    let p = sim.context().store().create("persons", person(1));
    let profiles = vec![SocialProfile::new("twitter", "johndoe").with_stats(
        "https://twitter.com/johndoe",
        5000,
        250,
    )];
    let first = pd.enrich_person(p.id.as_str(), &profiles).await.unwrap();
    assert!(matches!(first, WriteOutcome::Created(_)));
    let again = pd.enrich_person(p.id.as_str(), &profiles).await.unwrap();
    assert!(matches!(again, WriteOutcome::Unchanged(_)));
    assert_eq!(first.id(), again.id());
    let notes = sim.context().store().all("notes", Deleted::Exclude);
    assert_eq!(notes.len(), 1, "no second identical note");
    assert!(
        notes[0]
            .text("content")
            .unwrap()
            .contains("twitter: @johndoe")
    );
    let stored = sim.context().store().get_live("persons", &p.id).unwrap();
    let score = simulator
        .key_of(ObjectKind::Persons, "Social Engagement Score")
        .unwrap();
    let platform = simulator
        .key_of(ObjectKind::Persons, "Primary Social Platform")
        .unwrap();
    assert_eq!(stored.fields.get(&score), Some(&json!(250)));
    assert_eq!(stored.fields.get(&platform), Some(&json!("twitter")));
    // Leads and activities through the sink, read back.
    let lead = Record::new()
        .with("title", "From Twitter DM")
        .with("person_id", p.id.as_str());
    let out = pd
        .write(
            "leads",
            WriteBatch::new(crm_core::WriteOp::Create, vec![lead]),
        )
        .await
        .unwrap();
    assert!(
        matches!(&out[0], WriteOutcome::Created(id) if id.as_str().contains('-')),
        "{out:?}"
    );
    let act = Record::new()
        .with("subject", "Call")
        .with("person_id", p.id.as_str());
    let out = pd
        .write(
            "activities",
            WriteBatch::new(crm_core::WriteOp::Create, vec![act]),
        )
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Created(_)));
    let (leads, _) = read_all(&pd, ReadRequest::full("leads")).await;
    assert_eq!(leads.len(), 1);
    let (notes, _) = read_all(&pd, ReadRequest::full("notes")).await;
    assert_eq!(notes.len(), 1);
}

// ---------------------------------------------------------------- auth and webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_travels_in_the_header_unless_the_query_form_is_asked_for_and_oauth_refreshes() {
    let sim = start(PipedriveSimulator::new(fast_sim())).await;
    let pd = fast(&sim);
    crm_core::Connector::check(&pd).await.unwrap();
    assert!(
        sim.request_log()
            .entries()
            .iter()
            .all(|e| e.query.as_deref().is_none_or(|q| !q.contains("api_token")))
    );
    let creds = sim.credentials();
    let q = PipedriveConfig::api_token(SecretString::from(
        creds["api_token"].as_str().unwrap().to_owned(),
    ))
    .base_url(sim.base_url())
    .token_in_query()
    .build()
    .unwrap();
    sim.context().log().clear();
    crm_core::Connector::check(&Pipedrive::new(q).unwrap())
        .await
        .unwrap();
    assert!(
        sim.request_log()
            .entries()
            .iter()
            .any(|e| e.query.as_deref().is_some_and(|q| q.contains("api_token")))
    );
    let o = PipedriveConfig::oauth(
        creds["client_id"].as_str().unwrap(),
        SecretString::from(creds["client_secret"].as_str().unwrap().to_owned()),
        SecretString::from(creds["refresh_token"].as_str().unwrap().to_owned()),
    )
    .base_url(sim.base_url())
    .token_url(creds["token_url"].as_str().unwrap())
    .build()
    .unwrap();
    crm_core::Connector::check(&Pipedrive::new(o).unwrap())
        .await
        .unwrap();
    assert!(
        sim.context()
            .auth()
            .grants(crm_sim::auth::GrantType::RefreshToken)
            >= 1
    );
    let bad = PipedriveConfig::api_token(SecretString::from("wrong".to_owned()))
        .base_url(sim.base_url())
        .build()
        .unwrap();
    let err = crm_core::Connector::check(&Pipedrive::new(bad).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
    assert!(!err.to_string().contains("wrong"));
}

type Deliveries = Arc<std::sync::Mutex<Vec<(Option<String>, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_basic_auth_become_changes_once() {
    let simulator = PipedriveSimulator::new(fast_sim());
    let sim = start(simulator.clone()).await;
    let received: Deliveries = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    sink.lock().unwrap().push((auth, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    sim.context()
        .webhooks()
        .subscribe(&format!("http://{addr}/hook"));
    let p = sim.context().store().create("persons", person(3));
    let st = simulator
        .send_webhook(sim.context(), ObjectKind::Persons, "added", &p.id)
        .await;
    assert_eq!(st, vec![Some(200)]);
    // A redelivery of the same event.
    let body = received.lock().unwrap()[0].clone();
    received.lock().unwrap().push(body);
    sim.context().store().delete("persons", &p.id).unwrap();
    simulator
        .send_webhook(sim.context(), ObjectKind::Persons, "deleted", &p.id)
        .await;
    let creds = sim.credentials();
    let receiver = WebhookReceiver::new(WebhookVerifier::new(
        creds["webhook_user"].as_str().unwrap(),
        &SecretString::from(creds["webhook_password"].as_str().unwrap().to_owned()),
    ));
    let catalog = crm_pipedrive::FieldCatalog::default();
    let mut changes = Vec::new();
    for (auth, body) in received.lock().unwrap().iter() {
        if let Some(ev) = receiver.receive(auth.as_deref(), body, &catalog).unwrap() {
            changes.push(ev.change);
        }
    }
    assert_eq!(changes.len(), 2, "the redelivery is dropped");
    assert!(
        matches!(&changes[0], Change::Upsert(r) if r.get_path("email.0.value") == Some(Value::Text("user3@example.com".into())))
    );
    assert!(matches!(&changes[1], Change::Delete { id, .. } if *id == p.id));
    assert!(
        receiver
            .receive(Some("Basic AAAA"), &received.lock().unwrap()[0].1, &catalog)
            .is_err()
    );
}
