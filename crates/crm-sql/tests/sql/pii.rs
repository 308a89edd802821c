//! Personal data sealed at rest in dead letters, audit entries and review
//! items, and the retention purge, on each backend.

use chrono::{Duration, Utc};
use crm_core::pii::PiiFields;
use crm_core::{Change, ErrorKind, ReadRequest, Record, Source};
use crm_sql::SqlConnector;
use crm_sql::state::{
    CredentialKey, NewAuditEntry, NewWebhookEvent, PurgeReport, QueueFilter, ReviewReason,
    ReviewStatus, RunStatus, StateStore, SyncDirection, SyncType, WebhookStatus,
};
use futures_util::TryStreamExt;
use serde_json::json;

use crate::harness::TestDb;
use crate::queues::set_time;

const EMAIL: &str = "john@example.com";
const PHONE: &str = "+14155550190";

async fn open(db: &TestDb, key: u8) -> StateStore {
    StateStore::open(
        &db.config().build().unwrap(),
        CredentialKey::from_bytes([key; 32]),
    )
    .await
    .expect("open state store")
}

/// Every row of `table` as stored, read through the SQL source (no store
/// code involved), one text per row with every column.
async fn raw_rows(db: &TestDb, table: &str, time_col: &str) -> Vec<String> {
    let raw = SqlConnector::connect(
        &db.config()
            .cursor_column(time_col)
            .primary_key(["id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<_> = raw
        .read(ReadRequest::full(table))
        .try_collect()
        .await
        .unwrap();
    raw.close().await;
    pages
        .iter()
        .flat_map(|p| p.changes.iter())
        .map(|c| match c {
            Change::Upsert(r) => r
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" | "),
            other => panic!("unexpected change {other:?}"),
        })
        .collect()
}

/// Asserts no stored row of `table` holds a personal value in clear, and
/// that `n` rows hold sealed markers.
async fn assert_sealed(db: &TestDb, table: &str, time_col: &str, n: usize) {
    let rows = raw_rows(db, table, time_col).await;
    assert_eq!(rows.len(), n, "{table}: {rows:#?}");
    for row in &rows {
        for clear in [EMAIL, "4155550190", "old@example.com", "new@example.com"] {
            assert!(
                !row.contains(clear),
                "{table} stores {clear} in clear: {row}"
            );
        }
        assert!(row.contains("$sealed"), "{table}: {row}");
    }
}

pub(crate) async fn pii_fields_are_sealed_at_rest(db: TestDb) {
    let pii: PiiFields = ["email", "phone"].into_iter().collect();
    let store = open(&db, 5).await.with_pii_fields(pii.clone());
    assert_eq!(store.pii_fields(), &pii);
    let conn = store.ensure_connection("hubspot", "pii").await.unwrap();
    let record = serde_json::to_value(
        Record::new()
            .with_id("C-1")
            .with("email", EMAIL)
            .with("phone", PHONE)
            .with("name", "Johnson"),
    )
    .unwrap();

    // Dead letters: keyed, plain, in a transaction.
    let keyed = store
        .put_dead_letter(
            &conn,
            "contacts",
            "C-1",
            "write",
            &record,
            &format!("409: {EMAIL} already exists"),
        )
        .await
        .unwrap();
    let plain = store
        .add_dead_letter(
            Some(&conn),
            "contacts",
            &json!({"email": EMAIL, "nested": [{"phone": 4_155_550_190_i64}]}),
            "validate",
            "bad",
        )
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let staged = tx
        .add_dead_letter(Some(&conn), "leads", &record, "map", "no field")
        .await
        .unwrap();
    let entry = NewAuditEntry::new("sync:job", "update")
        .record("contacts", "C-1")
        .connection(conn.clone())
        .values(
            Some(json!({"email": "old@example.com", "tier": "silver"})),
            Some(json!({"email": EMAIL, "phone": PHONE, "tier": "gold"})),
        );
    tx.audit(&entry).await.unwrap();
    tx.commit().await.unwrap();
    store
        .audit(
            &NewAuditEntry::new("ada", "edit")
                .record("contacts", "C-1")
                .values(
                    Some(json!({"fields": {"email": {"text": "new@example.com"}}})),
                    None,
                ),
        )
        .await
        .unwrap();
    let details = json!({
        "record": record,
        "candidates": [{"id": "x", "fields": {"email": {"text": EMAIL}}, "score": 0.8}],
    });
    let review = store
        .put_review(
            &conn,
            "contacts",
            "C-1",
            ReviewReason::ProbableMatch,
            &details,
        )
        .await
        .unwrap();

    assert_sealed(&db, "crm_dead_letters", "last_failed_at", 3).await;
    assert_sealed(&db, "crm_audit_log", "occurred_at", 2).await;
    assert_sealed(&db, "crm_review_queue", "created_at", 1).await;
    // Other fields stay readable, and the error quotes the value masked.
    let rows = raw_rows(&db, "crm_dead_letters", "last_failed_at").await;
    assert!(rows.iter().any(|r| r.contains("Johnson")));
    assert!(
        rows.iter()
            .any(|r| r.contains("409: j***@example.com already exists")),
        "{rows:#?}"
    );

    // The store's reads give everything back intact.
    let got = store.dead_letter(&keyed).await.unwrap().unwrap();
    assert_eq!(got.record, record);
    assert_eq!(got.error, "409: j***@example.com already exists");
    assert_eq!(
        store.dead_letter(&plain).await.unwrap().unwrap().record,
        json!({"email": EMAIL, "nested": [{"phone": 4_155_550_190_i64}]})
    );
    let listed = store.dead_letters(&conn, 10, 100).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .filter(|d| d.id == keyed || d.id == staged)
            .all(|d| d.record == record)
    );
    let page = store
        .dead_letter_page(&QueueFilter::new().object("leads"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].record, record);
    let trail = store.audit_log("contacts", "C-1", 10).await.unwrap();
    assert_eq!(trail.len(), 2);
    let tx_entry = trail.iter().find(|e| e.actor == "sync:job").unwrap();
    assert_eq!(tx_entry.old_values, entry.old_values);
    assert_eq!(tx_entry.new_values, entry.new_values);
    let edit = trail.iter().find(|e| e.actor == "ada").unwrap();
    assert_eq!(
        edit.old_values,
        Some(json!({"fields": {"email": {"text": "new@example.com"}}}))
    );
    assert_eq!(edit.new_values, None);
    let item = store.review(&review).await.unwrap().unwrap();
    assert_eq!(item.details, details);
    assert_eq!(store.open_reviews(10).await.unwrap()[0].details, details);

    // Edits, retries and decisions are sealed and masked too.
    let edited = json!({"id": "C-1", "fields": {"email": {"text": "new@example.com"}}});
    store.edit_dead_letter(&keyed, &edited).await.unwrap();
    store
        .dead_letter_failed_again(&keyed, "still new@example.com")
        .await
        .unwrap();
    let got = store.dead_letter(&keyed).await.unwrap().unwrap();
    assert_eq!(got.record, edited);
    assert_eq!(got.error, "still n***@example.com");
    let resolution = json!({"chose": "x", "email": "new@example.com"});
    assert!(
        store
            .resolve_review(&review, ReviewStatus::Resolved, &resolution)
            .await
            .unwrap()
    );
    assert_eq!(
        store.review(&review).await.unwrap().unwrap().resolution,
        Some(resolution)
    );
    assert_sealed(&db, "crm_dead_letters", "last_failed_at", 3).await;
    assert_sealed(&db, "crm_review_queue", "created_at", 1).await;

    // The same key opens sealed values whatever fields a store is set up
    // with; another key fails clearly, never with a panic or a half row.
    let same_key = open(&db, 5).await;
    assert_eq!(
        same_key.dead_letter(&staged).await.unwrap().unwrap().record,
        record
    );
    let other = open(&db, 6).await.with_pii_fields(pii);
    for err in [
        other.dead_letter(&staged).await.unwrap_err(),
        other.dead_letters(&conn, 10, 100).await.unwrap_err(),
        other.audit_log("contacts", "C-1", 10).await.unwrap_err(),
        other.review(&review).await.unwrap_err(),
        other
            .dead_letter_page(&QueueFilter::new(), None, 10)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), &ErrorKind::Auth, "{err}");
        assert!(err.to_string().contains("wrong credential key"), "{err}");
    }
    // Without PII fields nothing is sealed.
    let d = same_key
        .add_dead_letter(Some(&conn), "plain", &json!({"email": EMAIL}), "x", EMAIL)
        .await
        .unwrap();
    let rows = raw_rows(&db, "crm_dead_letters", "last_failed_at").await;
    assert!(
        rows.iter()
            .any(|r| r.contains(EMAIL) && r.contains(d.as_str()))
    );
    other.close().await;
    same_key.close().await;
    store.close().await;
}

pub(crate) async fn purge_older_than_removes_old_rows(db: TestDb) {
    let store = open(&db, 5).await;
    let raw = db.connect().await;
    let kind = db.kind;
    let conn = store
        .ensure_connection("hubspot", "retention")
        .await
        .unwrap();
    let old = Utc::now() - Duration::days(40);
    let recent = Utc::now() - Duration::days(20);

    // Sync runs: an old finished one goes, a recent one and an old running
    // one stay.
    let mut runs = Vec::new();
    for finished in [true, true, false] {
        let run = store
            .start_run(&conn, "contacts", SyncType::Delta, SyncDirection::ToCrm)
            .await
            .unwrap();
        if finished {
            store
                .finish_run(&run, RunStatus::Completed, &json!([]))
                .await
                .unwrap();
        }
        runs.push(run);
    }
    let table = "crm_sync_runs";
    set_time(
        &raw,
        kind,
        table,
        "started_at",
        &[runs[0].as_str(), runs[2].as_str()],
        old,
    )
    .await;
    set_time(&raw, kind, table, "started_at", &[runs[1].as_str()], recent).await;

    // Audit entries by time.
    let entry = NewAuditEntry::new("sync:job", "update").record("contacts", "C-1");
    let a_old = store.audit(&entry).await.unwrap();
    let a_new = store.audit(&entry).await.unwrap();
    set_time(
        &raw,
        kind,
        "crm_audit_log",
        "occurred_at",
        &[a_old.as_str()],
        old,
    )
    .await;

    // Dead letters by their latest failure: first failed long ago but
    // failed again recently is kept.
    let d_old = store
        .add_dead_letter(Some(&conn), "contacts", &json!({}), "write", "503")
        .await
        .unwrap();
    let d_retried = store
        .add_dead_letter(Some(&conn), "contacts", &json!({}), "write", "503")
        .await
        .unwrap();
    let table = "crm_dead_letters";
    let both = [d_old.as_str(), d_retried.as_str()];
    set_time(&raw, kind, table, "first_failed_at", &both, old).await;
    set_time(&raw, kind, table, "last_failed_at", &[d_old.as_str()], old).await;
    set_time(
        &raw,
        kind,
        table,
        "last_failed_at",
        &[d_retried.as_str()],
        recent,
    )
    .await;

    // Webhook events: processed and failed ones go when old, pending ones
    // stay.
    let mut events = Vec::new();
    for status in [
        Some(WebhookStatus::Processed),
        Some(WebhookStatus::Processed),
        None,
        Some(WebhookStatus::Failed),
    ] {
        let id = store
            .enqueue_webhook(NewWebhookEvent::new(
                "hubspot",
                "contact.creation",
                json!({}),
            ))
            .await
            .unwrap();
        if let Some(s) = status {
            store.mark_webhook(&id, s, None).await.unwrap();
        }
        events.push(id);
    }
    let table = "crm_webhook_events";
    let ids: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    set_time(&raw, kind, table, "received_at", &ids, old).await;
    set_time(&raw, kind, table, "processed_at", &[ids[0]], old).await;
    set_time(&raw, kind, table, "processed_at", &[ids[1]], recent).await;

    // Review items are decisions, not logs: kept.
    let review = store
        .add_review(
            Some(&conn),
            "contacts",
            "C-1",
            ReviewReason::ProbableMatch,
            &json!({}),
        )
        .await
        .unwrap();
    set_time(
        &raw,
        kind,
        "crm_review_queue",
        "created_at",
        &[review.as_str()],
        old,
    )
    .await;

    let err = store.purge_older_than(0).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput, "{err}");
    assert_eq!(
        store.purge_older_than(u32::MAX).await.unwrap(),
        PurgeReport::default()
    );
    assert_eq!(store.purge_older_than(60).await.unwrap().total(), 0);

    let report = store.purge_older_than(30).await.unwrap();
    assert_eq!(
        (
            report.runs,
            report.audit_entries,
            report.dead_letters,
            report.webhook_events
        ),
        (1, 1, 1, 2),
        "{report:?}"
    );
    assert_eq!(report.total(), 5);
    assert!(store.run(&runs[0]).await.unwrap().is_none());
    assert!(store.run(&runs[1]).await.unwrap().is_some());
    assert!(store.run(&runs[2]).await.unwrap().is_some());
    let trail = store.audit_log("contacts", "C-1", 10).await.unwrap();
    assert_eq!(trail.iter().map(|e| &e.id).collect::<Vec<_>>(), [&a_new]);
    assert!(store.dead_letter(&d_old).await.unwrap().is_none());
    assert!(store.dead_letter(&d_retried).await.unwrap().is_some());
    let pending = store.pending_webhooks(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| &e.id).collect::<Vec<_>>(),
        [&events[2]]
    );
    let survivors = raw_rows(&db, "crm_webhook_events", "received_at").await;
    assert_eq!(survivors.len(), 2, "{survivors:#?}");
    assert!(survivors.iter().any(|r| r.contains(events[1].as_str())));
    assert!(store.review(&review).await.unwrap().is_some());

    // A second purge finds nothing more.
    assert_eq!(store.purge_older_than(30).await.unwrap().total(), 0);
    raw.close().await;
    store.close().await;
}
