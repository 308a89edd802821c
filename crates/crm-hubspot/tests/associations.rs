//! Associations (v4), notes and tasks read and written against the
//! simulator.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crm_core::{
    Change, ReadRequest, Record, RecordId, Sink, Source, Value, WriteBatch, WriteOp, WriteOutcome,
};
use crm_hubspot::sim::associations::{associate, associated_ids};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, custom_property};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_sim::store::Fields;
use crm_sim::{SimHandle, SimServer};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start(config: HubSpotSimConfig) -> SimHandle {
    SimServer::new(HubSpotSimulator::new(config))
        .start()
        .await
        .unwrap()
}

fn sim_config() -> HubSpotSimConfig {
    let mut c = HubSpotSimConfig::default()
        .custom_property("companies", custom_property("external_id", "string", true))
        .custom_property("deals", custom_property("external_id", "string", true));
    c.daily = None;
    c
}

fn connector(sim: &SimHandle) -> HubSpot {
    let token = sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = HubSpotConfig::private_app(SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(RateLimits::new(1_000, None, 100))
        .search_lookback(Duration::from_secs(300))
        .build()
        .unwrap();
    HubSpot::new(config).unwrap()
}

fn seed(sim: &SimHandle, object: &str, fields: serde_json::Value) -> String {
    let f: Fields = serde_json::from_value(fields).unwrap();
    sim.context().store().create(object, f).id.to_string()
}

async fn read_all(source: &dyn Source, req: ReadRequest) -> Vec<Record> {
    let mut s = source.read(req);
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        for c in p.unwrap().changes {
            if let Change::Upsert(r) = c {
                out.push(r);
            }
        }
    }
    out
}

fn ids_of(r: &Record, field: &str) -> Vec<String> {
    match r.get(field) {
        Some(Value::Json(serde_json::Value::Array(a))) => {
            a.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        }
        other => panic!("{field} is {other:?}"),
    }
}

fn by_id<'a>(records: &'a [Record], id: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.id.as_ref().map(RecordId::as_str) == Some(id))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_company_and_deal_contact_links_are_read_in_batches() {
    let mut cfg = sim_config();
    // Small per-record answers, so long association lists page.
    cfg.association_page_size = 2;
    let sim = start(cfg).await;
    let ctx = sim.context();
    let companies: Vec<String> = (0..3)
        .map(|i| seed(&sim, "companies", json!({"name": format!("Co {i}")})))
        .collect();
    let contacts: Vec<String> = (0..150)
        .map(|i| {
            seed(
                &sim,
                "contacts",
                json!({"email": format!("p{i}@example.com")}),
            )
        })
        .collect();
    let deal = seed(&sim, "deals", json!({"dealname": "Big"}));
    // Contact 0 works at all three companies (pages of 2), contact 1 at one.
    for c in &companies {
        associate(ctx, "contacts", &contacts[0], "companies", c).unwrap();
    }
    associate(ctx, "contacts", &contacts[1], "companies", &companies[2]).unwrap();
    associate(ctx, "deals", &deal, "contacts", &contacts[0]).unwrap();
    associate(ctx, "deals", &deal, "contacts", &contacts[149]).unwrap();

    let hs = connector(&sim);
    sim.request_log().clear();
    let records = read_all(
        &hs,
        ReadRequest::full("contacts")
            .fields(["email", "associations.company"])
            .page_size(100),
    )
    .await;
    assert_eq!(records.len(), 150);
    assert_eq!(
        ids_of(by_id(&records, &contacts[0]), "associations.companies"),
        companies
    );
    assert_eq!(
        ids_of(by_id(&records, &contacts[1]), "associations.companies"),
        vec![companies[2].clone()]
    );
    assert!(ids_of(by_id(&records, &contacts[7]), "associations.companies").is_empty());
    // Batched: one call per page of 100 records, plus one to page on contact 0.
    let reads = sim
        .request_log()
        .count_calls("POST", "/crm/v4/associations/contacts/companies/batch/read");
    assert_eq!(
        reads, 3,
        "2 pages of records, 1 follow-up for the long list"
    );
    assert_eq!(sim.request_log().count_calls("GET", "/crm/v4/objects"), 0);

    let deals = read_all(
        &hs,
        ReadRequest::full("deals").fields(["dealname", "associations.contacts"]),
    )
    .await;
    assert_eq!(deals.len(), 1);
    assert_eq!(
        ids_of(&deals[0], "associations.contacts"),
        vec![contacts[0].clone(), contacts[149].clone()]
    );
    assert_eq!(deals[0].get("dealname"), Some(&Value::Text("Big".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_company_and_deal_contact_links_are_written_and_removed() {
    let sim = start(sim_config()).await;
    let ctx = sim.context();
    let companies: Vec<String> = (0..3)
        .map(|i| seed(&sim, "companies", json!({"name": format!("Co {i}")})))
        .collect();
    let hs = connector(&sim);

    // Contacts created by upsert, each linked to companies in the same write.
    let records: Vec<Record> = (0..120)
        .map(|i| {
            Record::new()
                .with("email", format!("w{i}@example.com"))
                .with("firstname", format!("W{i}"))
                .with(
                    "associations.companies",
                    Value::Json(json!([companies[i % 2], companies[2]])),
                )
        })
        .collect();
    let out = hs
        .write("contacts", WriteBatch::upsert("email", records))
        .await
        .unwrap();
    let ids: Vec<String> = out
        .iter()
        .map(|o| match o {
            WriteOutcome::Created(id) => id.to_string(),
            other => panic!("{}", other.as_str()),
        })
        .collect();
    assert_eq!(
        associated_ids(ctx, "contacts", &ids[0], "companies"),
        vec![companies[0].clone(), companies[2].clone()]
    );
    assert_eq!(
        associated_ids(ctx, "contacts", &ids[1], "companies"),
        vec![companies[1].clone(), companies[2].clone()]
    );
    // Both directions exist, as in HubSpot.
    assert_eq!(
        associated_ids(ctx, "companies", &companies[2], "contacts").len(),
        120
    );
    // Batched: 120 records and 240 pairs in 2 reads and 3 link calls.
    let log = sim.request_log();
    assert_eq!(
        log.count_calls("POST", "/crm/v4/associations/contacts/companies/batch/read"),
        2
    );
    assert_eq!(
        log.count_calls(
            "POST",
            "/crm/v4/associations/contacts/companies/batch/associate/default"
        ),
        3
    );

    // Same properties, fewer links: the link to company 2 is removed and
    // the record is reported updated.
    let again = vec![
        Record::new()
            .with("email", "w0@example.com")
            .with("firstname", "W0")
            .with("associations.companies", Value::Text(companies[0].clone())),
    ];
    let out = hs
        .write("contacts", WriteBatch::upsert("email", again))
        .await
        .unwrap();
    assert!(matches!(&out[0], WriteOutcome::Updated(id) if id.as_str() == ids[0]));
    assert_eq!(
        associated_ids(ctx, "contacts", &ids[0], "companies"),
        vec![companies[0].clone()]
    );
    assert!(!associated_ids(ctx, "companies", &companies[2], "contacts").contains(&ids[0]));
    // Nothing to change: unchanged, and no link call sent.
    log.clear();
    let same = vec![
        Record::new()
            .with("email", "w0@example.com")
            .with("firstname", "W0")
            .with("associations.companies", Value::Json(json!([companies[0]]))),
    ];
    let out = hs
        .write("contacts", WriteBatch::upsert("email", same))
        .await
        .unwrap();
    assert!(matches!(&out[0], WriteOutcome::Unchanged(_)));
    assert_eq!(
        log.count_calls(
            "POST",
            "/crm/v4/associations/contacts/companies/batch/associate"
        ),
        0
    );
    assert_eq!(
        log.count_calls(
            "POST",
            "/crm/v4/associations/contacts/companies/batch/archive"
        ),
        0
    );

    // Deal -> contacts on create; an unknown contact id rejects that deal only.
    let deals = vec![
        Record::new().with("dealname", "D1").with(
            "associations.contacts",
            Value::Json(json!([ids[3], ids[4]])),
        ),
        Record::new()
            .with("dealname", "D2")
            .with("associations.contacts", Value::Json(json!(["999999999"]))),
        Record::new()
            .with("dealname", "D3")
            .with("associations.contacts", Value::Text("not an id".into())),
    ];
    let out = hs
        .write("deals", WriteBatch::new(WriteOp::Create, deals))
        .await
        .unwrap();
    let WriteOutcome::Created(d1) = &out[0] else {
        panic!("{}", out[0].as_str())
    };
    assert_eq!(
        associated_ids(ctx, "deals", d1.as_str(), "contacts"),
        vec![ids[3].clone(), ids[4].clone()]
    );
    assert_eq!(
        associated_ids(ctx, "contacts", &ids[3], "deals"),
        vec![d1.to_string()]
    );
    assert!(
        matches!(&out[1], WriteOutcome::Rejected { index: 1, .. }),
        "{}",
        out[1].as_str()
    );
    assert!(
        matches!(&out[2], WriteOutcome::Rejected { index: 2, .. }),
        "{}",
        out[2].as_str()
    );
    // The deal with bad links was never created.
    assert_eq!(
        ctx.store().count("deals", crm_sim::store::Deleted::Exclude),
        2
    );

    // Empty list removes every link.
    let clear = vec![
        Record::new()
            .with_id(d1.clone())
            .with("associations.contacts", Value::Json(json!([]))),
    ];
    let out = hs
        .write("deals", WriteBatch::new(WriteOp::Update, clear))
        .await
        .unwrap();
    assert!(
        matches!(&out[0], WriteOutcome::Updated(_)),
        "{}",
        out[0].as_str()
    );
    assert!(associated_ids(ctx, "deals", d1.as_str(), "contacts").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_tasks_are_read_and_written() {
    let sim = start(sim_config()).await;
    let hs = connector(&sim);
    let notes = vec![
        Record::new()
            .with("hs_note_body", "Called, left a message")
            .with("hs_timestamp", "2024-05-01T10:00:00.000Z"),
        Record::new()
            .with("hs_note_body", "Sent the quote")
            .with("hs_timestamp", "2024-05-02T10:00:00.000Z"),
    ];
    let out = hs
        .write("note", WriteBatch::new(WriteOp::Create, notes))
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, WriteOutcome::Created(_))));
    let tasks = vec![
        Record::new()
            .with("hs_task_subject", "Follow up")
            .with("hs_timestamp", "2024-05-03T10:00:00.000Z"),
    ];
    let out = hs
        .write("tasks", WriteBatch::new(WriteOp::Create, tasks))
        .await
        .unwrap();
    let WriteOutcome::Created(task) = &out[0] else {
        panic!("{}", out[0].as_str())
    };
    let update = vec![
        Record::new()
            .with_id(task.clone())
            .with("hs_task_subject", "Follow up again"),
    ];
    let out = hs
        .write("tasks", WriteBatch::new(WriteOp::Update, update))
        .await
        .unwrap();
    assert!(matches!(&out[0], WriteOutcome::Updated(_)));

    let read_notes = read_all(&hs, ReadRequest::full("notes")).await;
    let mut bodies: Vec<&Value> = read_notes
        .iter()
        .map(|r| r.get("hs_note_body").unwrap())
        .collect();
    bodies.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        bodies,
        vec![
            &Value::Text("Called, left a message".into()),
            &Value::Text("Sent the quote".into())
        ]
    );
    let read_tasks = read_all(&hs, ReadRequest::full("tasks")).await;
    assert_eq!(read_tasks.len(), 1);
    assert_eq!(
        read_tasks[0].get("hs_task_subject"),
        Some(&Value::Text("Follow up again".into()))
    );
    assert!(read_tasks[0].get("hs_timestamp").is_some());
}
