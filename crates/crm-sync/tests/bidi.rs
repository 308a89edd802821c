//! Bidirectional sync between a PostgreSQL table and the HubSpot simulator:
//! rounds of random edits on both sides converge, conflicts are decided by
//! policy and audited, our own writes are never read back as edits, and
//! manual conflicts wait in the review queue until a person settles them.
//!
//! Needs the PostgreSQL server of `CRM_TEST_POSTGRES_URL` (default the
//! local one); without it the tests skip, unless `CI` is set: then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use crm_core::conflict::{ConflictConfig, ConflictPolicy};
use crm_core::mapping::Mapping;
use crm_core::{Change, ReadRequest, Record, Sink, Source, Value, WriteBatch, WriteOp};
use crm_hubspot::HubSpot;
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_sim::{SimHandle, SimServer};
use crm_sql::state::{CredentialKey, ReviewReason, StateStore};
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::bidi::{BidiConfig, BidiSync, CreateWith, Pick, SideConfig};
use futures_util::TryStreamExt;
use indexmap::IndexMap;

use support::{Db, hubspot_client};

const MAPPING: &str = r#"
- {source: email, target: email, direction: bidirectional}
- {source: first_name, target: firstname, direction: bidirectional}
- {source: last_name, target: lastname, direction: bidirectional}
- {source: phone, target: phone, direction: bidirectional}
- {source: lifecycle, target: lifecyclestage, direction: bidirectional}
"#;

/// Platform field -> HubSpot property.
const FIELDS: [(&str, &str); 5] = [
    ("email", "email"),
    ("first_name", "firstname"),
    ("last_name", "lastname"),
    ("phone", "phone"),
    ("lifecycle", "lifecyclestage"),
];

struct World {
    db: Db,
    platform: SqlConnector,
    store: StateStore,
    sim: SimHandle,
    hubspot: HubSpot,
    /// A second client standing for people editing in HubSpot.
    editor: HubSpot,
}

async fn world(tag: &str) -> Option<World> {
    let db = Db::create("crm_bidi", tag).await?;
    let platform = SqlConnector::connect(
        &SqlConfig::builder()
            .url(db.url.clone())
            .cursor_column("updated_at")
            .primary_key(["id"])
            .page_size(7)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    platform
        .execute_unprepared(
            "CREATE TABLE contacts (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                first_name TEXT,
                last_name TEXT,
                phone TEXT,
                lifecycle TEXT,
                updated_at TIMESTAMPTZ NOT NULL
            )",
        )
        .await
        .unwrap();
    let store = StateStore::open_url(&db.url, CredentialKey::from_bytes([9; 32]))
        .await
        .unwrap();
    let mut sim_config = HubSpotSimConfig::default();
    sim_config.per_window = 1000;
    let sim = SimServer::new(HubSpotSimulator::new(sim_config))
        .start()
        .await
        .unwrap();
    let hubspot = hubspot_client(&sim);
    let editor = hubspot_client(&sim);
    Some(World {
        db,
        platform,
        store,
        sim,
        hubspot,
        editor,
    })
}

fn config(conflicts: ConflictConfig) -> BidiConfig {
    BidiConfig::new(
        "contacts",
        SideConfig::new("contacts", CreateWith::derived_id("id", "hs-")),
        SideConfig::new("contacts", CreateWith::upsert_key("email")).page_size(10),
        Mapping::from_yaml(MAPPING).unwrap(),
    )
    .conflicts(conflicts)
    .match_key("email")
}

/// A small deterministic generator (no dependency for a test's dice).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every record `source` reads for `req` (deletes left out).
async fn upserts(source: &impl Source, req: ReadRequest) -> Vec<Record> {
    let pages: Vec<_> = source.read(req).try_collect().await.unwrap();
    pages
        .into_iter()
        .flat_map(|p| p.changes)
        .filter_map(|c| match c {
            Change::Upsert(r) => Some(r),
            Change::Delete { .. } => None,
        })
        .collect()
}

/// Writes `batch` to `contacts` in `sink` and asserts its one record went in.
async fn write_one(sink: &impl Sink, batch: WriteBatch) {
    let out = sink.write("contacts", batch).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
}

async fn platform_rows(w: &World) -> BTreeMap<String, BTreeMap<String, String>> {
    upserts(&w.platform, ReadRequest::full("contacts"))
        .await
        .into_iter()
        .map(|r| {
            let values = FIELDS
                .iter()
                .map(|(p, _)| (p.to_string(), text(r.get(p))))
                .collect::<BTreeMap<_, _>>();
            (values["email"].clone(), values)
        })
        .collect()
}

async fn hubspot_rows(w: &World) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    upserts(
        &w.editor,
        ReadRequest::full("contacts").fields(FIELDS.iter().map(|(_, c)| *c)),
    )
    .await
    .into_iter()
    .map(|r| {
        let values = FIELDS
            .iter()
            .map(|(p, c)| (p.to_string(), text(r.get(c))))
            .collect::<BTreeMap<_, _>>();
        let id = r.id.as_ref().unwrap().to_string();
        (values["email"].clone(), (id, values))
    })
    .collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

async fn assert_converged(w: &World) -> usize {
    let pl = platform_rows(w).await;
    let hs = hubspot_rows(w).await;
    assert_eq!(
        pl.keys().collect::<Vec<_>>(),
        hs.keys().collect::<Vec<_>>(),
        "the same contacts on both sides"
    );
    for (email, values) in &pl {
        assert_eq!(values, &hs[email].1, "contact {email} differs");
    }
    pl.len()
}

async fn platform_edit(w: &World, id: &str, fields: &[(&str, &str)]) {
    let mut r = Record::new().with_id(id).with_updated_at(Utc::now());
    for (f, v) in fields {
        r.set(*f, *v);
    }
    write_one(&w.platform, WriteBatch::new(WriteOp::Update, vec![r])).await;
}

async fn platform_insert(w: &World, id: &str, email: &str, first: &str) {
    let r = Record::new()
        .with("id", id)
        .with("email", email)
        .with("first_name", first)
        .with("last_name", "Platform")
        .with("phone", "+14155550100")
        .with("lifecycle", "lead")
        .with_updated_at(Utc::now());
    write_one(&w.platform, WriteBatch::upsert("id", vec![r])).await;
}

async fn hubspot_edit(w: &World, id: &str, fields: &[(&str, &str)]) {
    let mut r = Record::new().with_id(id);
    for (f, v) in fields {
        r.set(*f, *v);
    }
    write_one(&w.editor, WriteBatch::new(WriteOp::Update, vec![r])).await;
}

async fn hubspot_insert(w: &World, email: &str, first: &str) {
    let r = Record::new()
        .with("email", email)
        .with("firstname", first)
        .with("lastname", "Hub")
        .with("phone", "+442079460958")
        .with("lifecyclestage", "subscriber");
    write_one(&w.editor, WriteBatch::new(WriteOp::Create, vec![r])).await;
}

fn hubspot_writes(sim: &SimHandle, from_seq: usize) -> usize {
    sim.request_log()
        .entries()
        .into_iter()
        .skip(from_seq)
        .filter(|e| {
            e.method != "GET"
                && [
                    "/batch/update",
                    "/batch/create",
                    "/batch/upsert",
                    "/batch/archive",
                ]
                .iter()
                .any(|p| e.path.ends_with(p))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rounds_of_random_edits_on_both_sides_converge() {
    let Some(w) = world("rounds").await else {
        return;
    };
    // Before the first sync: 12 contacts on the platform, 10 in HubSpot,
    // and 3 people created on both sides with the same email.
    for i in 0..12 {
        platform_insert(&w, &format!("pg-{i}"), &format!("p{i}@example.com"), "Pat").await;
    }
    for i in 0..10 {
        hubspot_insert(&w, &format!("h{i}@example.com"), "Hana").await;
    }
    for i in 0..3 {
        platform_insert(&w, &format!("both-{i}"), &format!("b{i}@example.com"), "Bo").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        hubspot_insert(&w, &format!("b{i}@example.com"), "Bea").await;
    }
    let sync = BidiSync::open(
        &w.platform,
        &w.hubspot,
        &w.store,
        "pg<->hubspot",
        config(ConflictConfig::new(ConflictPolicy::NewestWins)),
    )
    .await
    .unwrap();
    let first = sync.round().await.unwrap();
    assert_eq!(first.created_crm, 12, "{first:?}");
    assert_eq!(first.created_platform, 10, "{first:?}");
    assert_eq!(assert_converged(&w).await, 25);
    // The pairs created on both sides: HubSpot's first name is newer.
    let pl = platform_rows(&w).await;
    assert_eq!(pl["b0@example.com"]["first_name"], "Bea");

    let mut dice = Dice(42);
    let mut expected_conflicts = 0;
    for round in 1..=5 {
        let pl = platform_rows(&w).await;
        let hs = hubspot_rows(&w).await;
        let emails: Vec<String> = pl.keys().cloned().collect();
        let pl_ids: BTreeMap<String, String> = platform_ids(&w).await;
        let mut touched = Vec::new();
        // Platform edits first, HubSpot edits after: on a field edited on
        // both sides HubSpot is newer and must win.
        for _ in 0..4 {
            let email = &emails[dice.below(emails.len())];
            let v = format!("Pl{round}x{}", dice.below(1000));
            platform_edit(&w, &pl_ids[email], &[("last_name", &v)]).await;
            touched.push((email.clone(), "last_name", v, "platform"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..4 {
            let email = &emails[dice.below(emails.len())];
            let field = if dice.below(2) == 0 {
                "lastname"
            } else {
                "firstname"
            };
            let v = format!("Hs{round}x{}", dice.below(1000));
            hubspot_edit(&w, &hs[email].0, &[(field, &v)]).await;
            let pf = if field == "lastname" {
                "last_name"
            } else {
                "first_name"
            };
            if touched.iter().any(|(e, f, _, _)| e == email && *f == pf) {
                expected_conflicts += 1;
            }
            touched.push((email.clone(), pf, v, "crm"));
        }
        // Each side also gains a contact.
        platform_insert(
            &w,
            &format!("pg-new-{round}"),
            &format!("pn{round}@example.com"),
            "New",
        )
        .await;
        hubspot_insert(&w, &format!("hn{round}@example.com"), "Neu").await;

        let report = sync.round().await.unwrap();
        assert_eq!(report.created_crm, 1, "round {round}: {report:?}");
        assert_eq!(report.created_platform, 1, "round {round}: {report:?}");
        assert_eq!(report.rejected, 0, "round {round}: {report:?}");
        assert_converged(&w).await;
        // The last edit of each field wins (HubSpot's edits are newer).
        let pl = platform_rows(&w).await;
        let mut last: BTreeMap<(String, &str), String> = BTreeMap::new();
        for (email, field, v, _) in &touched {
            last.insert((email.clone(), field), v.clone());
        }
        for ((email, field), v) in last {
            assert_eq!(pl[&email][field], v, "round {round}: {email}.{field}");
        }
    }
    // Every conflict was decided and audited with its policy and reason.
    let audited = conflict_decisions(&w).await;
    assert!(
        audited >= expected_conflicts,
        "{audited} audited conflict decisions, {expected_conflicts} expected at least"
    );
    assert!(expected_conflicts > 0, "the dice made no conflict");

    // A round with no edits writes nothing anywhere.
    let seq = w.sim.request_log().len();
    let idle = sync.round().await.unwrap();
    assert_eq!(idle.writes(), 0, "{idle:?}");
    assert_eq!(
        hubspot_writes(&w.sim, seq),
        0,
        "no write call reached HubSpot"
    );
    assert_converged(&w).await;

    // Archiving in HubSpot deletes the platform row.
    let hs = hubspot_rows(&w).await;
    let gone = hs["h3@example.com"].0.clone();
    let out = w
        .editor
        .write(
            "contacts",
            WriteBatch::new(WriteOp::Delete, vec![Record::new().with_id(gone)]),
        )
        .await
        .unwrap();
    assert!(out[0].is_ok());
    let del = sync.round().await.unwrap();
    assert_eq!(del.deleted_platform, 1, "{del:?}");
    assert!(!platform_rows(&w).await.contains_key("h3@example.com"));
    assert_converged(&w).await;

    w.store.close().await;
    w.platform.close().await;
    w.db.drop().await;
}

async fn platform_ids(w: &World) -> BTreeMap<String, String> {
    let pages: Vec<_> = w
        .platform
        .read(ReadRequest::full("contacts"))
        .try_collect()
        .await
        .unwrap();
    pages
        .into_iter()
        .flat_map(|p| p.changes)
        .filter_map(|c| match c {
            Change::Upsert(r) => Some((text(r.get("email")), r.id.unwrap().to_string())),
            Change::Delete { .. } => None,
        })
        .collect()
}

/// Audit entries of the `contacts` sync carrying a policy decision on a
/// field changed on both sides.
async fn conflict_decisions(w: &World) -> usize {
    let ids = platform_ids(w).await;
    let mut n = 0;
    for id in ids.values() {
        for e in w.store.audit_log("contacts", id, 100).await.unwrap() {
            let Some(new) = &e.new_values else { continue };
            assert!(new["run_id"].is_string(), "{new}");
            for d in new["decisions"].as_array().into_iter().flatten() {
                let reason = d["reason"].as_str().unwrap_or_default();
                if matches!(reason, "target_newer" | "source_newer" | "tie" | "policy") {
                    assert_eq!(d["policy"], "newest_wins", "{d}");
                    n += 1;
                }
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_conflicts_wait_for_a_person_and_are_applied_after() {
    let Some(w) = world("manual").await else {
        return;
    };
    platform_insert(&w, "pg-1", "ann@example.com", "Ann").await;
    let sync = BidiSync::open(
        &w.platform,
        &w.hubspot,
        &w.store,
        "pg<->hubspot",
        config(
            ConflictConfig::new(ConflictPolicy::NewestWins)
                .field("phone", ConflictPolicy::Manual)
                .field("lifecycle", ConflictPolicy::Manual),
        ),
    )
    .await
    .unwrap();
    sync.round().await.unwrap();
    let hs_id = hubspot_rows(&w).await["ann@example.com"].0.clone();

    // Both sides change phone and lifecycle; only HubSpot changes the
    // first name, only the platform the last name.
    platform_edit(
        &w,
        "pg-1",
        &[
            ("phone", "+14155550111"),
            ("lifecycle", "customer"),
            ("last_name", "Lee"),
        ],
    )
    .await;
    hubspot_edit(
        &w,
        &hs_id,
        &[
            ("phone", "+14155550222"),
            ("lifecyclestage", "opportunity"),
            ("firstname", "Anna"),
        ],
    )
    .await;
    let report = sync.round().await.unwrap();
    assert_eq!(report.sent_to_review, 1, "{report:?}");
    let pl = platform_rows(&w).await;
    let hs = hubspot_rows(&w).await;
    // The uncontested fields flowed; the contested ones were left alone.
    assert_eq!(pl["ann@example.com"]["first_name"], "Anna");
    assert_eq!(hs["ann@example.com"].1["last_name"], "Lee");
    assert_eq!(pl["ann@example.com"]["phone"], "+14155550111");
    assert_eq!(hs["ann@example.com"].1["phone"], "+14155550222");
    let reviews = w.store.open_reviews(10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reason, ReviewReason::ManualConflict);
    let contested: Vec<&str> = reviews[0].details["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(contested, ["phone", "lifecycle"]);

    // A round while the conflict waits writes nothing for it.
    let seq = w.sim.request_log().len();
    let idle = sync.round().await.unwrap();
    assert_eq!(idle.writes(), 0, "{idle:?}");
    assert_eq!(hubspot_writes(&w.sim, seq), 0);

    // A person settles it: the CRM's phone, a typed lifecycle stage.
    let mut picks = IndexMap::new();
    picks.insert("phone".to_owned(), Pick::Crm);
    picks.insert(
        "lifecycle".to_owned(),
        Pick::Value(Value::Text("customer".into())),
    );
    sync.resolve_conflict(&reviews[0].id, &picks, "alice@example.com")
        .await
        .unwrap();
    let pl = platform_rows(&w).await;
    let hs = hubspot_rows(&w).await;
    assert_eq!(pl["ann@example.com"]["phone"], "+14155550222");
    assert_eq!(hs["ann@example.com"].1["lifecycle"], "customer");
    assert_eq!(pl["ann@example.com"]["lifecycle"], "customer");
    assert_converged(&w).await;
    assert!(w.store.open_reviews(10).await.unwrap().is_empty());
    let audit = w.store.audit_log("contacts", "pg-1", 100).await.unwrap();
    let by_alice = audit
        .iter()
        .find(|e| e.actor == "alice@example.com")
        .expect("the resolution is audited with the reviewer");
    assert_eq!(by_alice.action, "resolve_conflict");

    // Settled: the next round finds nothing to do.
    let seq = w.sim.request_log().len();
    let after = sync.round().await.unwrap();
    assert_eq!(after.writes(), 0, "{after:?}");
    assert_eq!(hubspot_writes(&w.sim, seq), 0);
    assert_eq!(after.sent_to_review, 0);

    w.store.close().await;
    w.platform.close().await;
    w.db.drop().await;
}
