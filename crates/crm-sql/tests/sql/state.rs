//! The state store on each backend.

use crm_core::{Cursor, ErrorKind};
use crm_core::{ReadRequest, Source};
use crm_sql::SqlConnector;
use crm_sql::state::{
    ConnectionStatus, CredentialKey, FieldMappingRow, NewAuditEntry, NewConnection,
    NewWebhookEvent, RecordSyncState, ReviewReason, ReviewStatus, RunStatus, StateStore,
    SyncDirection, SyncType, WebhookStatus,
};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};

use crate::harness::TestDb;

fn key(b: u8) -> CredentialKey {
    CredentialKey::from_bytes([b; 32])
}

async fn open(db: &TestDb, k: CredentialKey) -> StateStore {
    StateStore::open(&db.config().build().unwrap(), k)
        .await
        .expect("open state store")
}

pub(crate) async fn migrations_are_idempotent(db: TestDb) {
    let store = open(&db, key(1)).await;
    assert!(store.migrate().await.unwrap().is_empty());
    let again = open(&db, key(1)).await;
    assert!(again.migrate().await.unwrap().is_empty());
    // The ledger holds each version once: read it through the source.
    let ledger = SqlConnector::connect(
        &db.config()
            .cursor_column("applied_at")
            .primary_key(["version"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<_> = ledger
        .read(ReadRequest::full("crm_schema_migrations"))
        .try_collect()
        .await
        .unwrap();
    let versions: Vec<String> = pages
        .iter()
        .flat_map(|p| p.changes.iter())
        .filter_map(|c| c.id().map(|i| i.to_string()))
        .collect();
    assert_eq!(versions, ["1", "2", "3", "4", "5", "6"]);
    ledger.close().await;
    store.close().await;
    again.close().await;
}

pub(crate) async fn credentials_round_trip_and_wrong_key(db: TestDb) {
    let store = open(&db, key(7)).await;
    let id = store
        .create_connection(
            NewConnection::new("salesforce", "prod")
                .credentials(SecretString::from("refresh-token-abc123"))
                .settings(serde_json::json!({"instance": "na1"})),
        )
        .await
        .unwrap();
    let creds = store.credentials(&id).await.unwrap().unwrap();
    assert_eq!(creds.expose_secret(), "refresh-token-abc123");
    let c = store.connection(&id).await.unwrap().unwrap();
    assert!(c.has_credentials);
    assert_eq!(c.status, ConnectionStatus::Active);
    assert_eq!(c.settings["instance"], "na1");
    // The same name twice is a conflict.
    let dup = store
        .create_connection(NewConnection::new("salesforce", "prod"))
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), &ErrorKind::Conflict, "{dup}");
    // Another key cannot open them, and says so.
    let other = open(&db, key(8)).await;
    let err = other.credentials(&id).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
    assert!(err.to_string().contains("wrong credential key"), "{err}");
    // Rotating the secret.
    store
        .set_credentials(&id, &SecretString::from("new-token"))
        .await
        .unwrap();
    assert_eq!(
        store
            .credentials(&id)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "new-token"
    );
    store
        .set_connection_status(&id, ConnectionStatus::Error, Some("401 from provider"))
        .await
        .unwrap();
    let c = store.connection(&id).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Error);
    assert_eq!(c.last_error.as_deref(), Some("401 from provider"));
    assert_eq!(store.connections().await.unwrap().len(), 1);
    other.close().await;
    store.close().await;
}

pub(crate) async fn checkpoint_commits_with_its_page(db: TestDb) {
    let store = open(&db, key(1)).await;
    let conn = store
        .create_connection(NewConnection::new("postgres", "src"))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(&conn, "booking").await.unwrap(), None);
    let cursor =
        Cursor::new(serde_json::json!({"v": 1, "ts": {"date_time": "2024-01-15T10:00:00Z"}}));
    // Rolled back: neither the record state nor the checkpoint lands.
    let mut tx = store.begin().await.unwrap();
    tx.upsert_record_state(
        &RecordSyncState::new(conn.clone(), "booking", "BK-1").remote("006A", None),
    )
    .await
    .unwrap();
    tx.save_checkpoint(&conn, "booking", &cursor).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(store.checkpoint(&conn, "booking").await.unwrap(), None);
    assert!(
        store
            .record_state(&conn, "booking", "BK-1")
            .await
            .unwrap()
            .is_none()
    );
    // Committed: both land.
    let mut tx = store.begin().await.unwrap();
    tx.upsert_record_state(
        &RecordSyncState::new(conn.clone(), "booking", "BK-1")
            .remote("006A", Some("Opportunity".into())),
    )
    .await
    .unwrap();
    tx.save_checkpoint(&conn, "booking", &cursor).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.checkpoint(&conn, "booking").await.unwrap(),
        Some(cursor)
    );
    let s = store
        .record_state_by_remote(&conn, "006A")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.local_id, "BK-1");
    assert_eq!(s.remote_type.as_deref(), Some("Opportunity"));
    // A later checkpoint replaces it.
    let next = Cursor::new(serde_json::json!({"v": 1, "n": 2}));
    store
        .save_checkpoint(&conn, "booking", &next)
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(&conn, "booking").await.unwrap(),
        Some(next)
    );
    store.close().await;
}

pub(crate) async fn every_table_has_a_working_api(db: TestDb) {
    let store = open(&db, key(1)).await;
    let conn = store
        .create_connection(NewConnection::new("hubspot", "main"))
        .await
        .unwrap();
    // Runs.
    let run = store
        .start_run(&conn, "contacts", SyncType::Delta, SyncDirection::FromCrm)
        .await
        .unwrap();
    store.record_run_progress(&run, 10, 9, 1).await.unwrap();
    store.record_run_progress(&run, 5, 5, 0).await.unwrap();
    store
        .finish_run(
            &run,
            RunStatus::Completed,
            &serde_json::json!([{"record": "x", "error": "bad email"}]),
        )
        .await
        .unwrap();
    let r = store.run(&run).await.unwrap().unwrap();
    assert_eq!(
        (r.records_processed, r.records_success, r.records_failed),
        (15, 14, 1)
    );
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.completed_at.is_some());
    assert_eq!(store.runs(&conn, 10).await.unwrap().len(), 1);
    // Field mappings keep their order and replace atomically.
    let maps = vec![
        FieldMappingRow::new("email", "Email", SyncDirection::Bidirectional),
        FieldMappingRow::new("phone", "Phone", SyncDirection::ToCrm)
            .transform(serde_json::json!({"phone": "e164"}))
            .custom(),
    ];
    store
        .replace_field_mappings(&conn, "contacts", &maps)
        .await
        .unwrap();
    assert_eq!(store.field_mappings(&conn, "contacts").await.unwrap(), maps);
    store
        .replace_field_mappings(&conn, "contacts", &maps[..1])
        .await
        .unwrap();
    assert_eq!(
        store.field_mappings(&conn, "contacts").await.unwrap().len(),
        1
    );
    // Record state with a conflict.
    let t0 = chrono::Utc::now();
    store
        .upsert_record_state(
            &RecordSyncState::new(conn.clone(), "contacts", "c-1")
                .remote("101", None)
                .times(Some(t0), Some(t0), Some(t0))
                .conflict(serde_json::json!({"field": "phone"})),
        )
        .await
        .unwrap();
    let conflicts = store.conflicts(&conn, 10).await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].conflict_details,
        Some(serde_json::json!({"field": "phone"}))
    );
    let got = conflicts[0].last_synced_at.unwrap();
    assert!((got - t0).num_milliseconds().abs() < 1, "{got} vs {t0}");
    // A snapshot is sealed at rest, opens with the key and is found by the
    // remote id within its object only.
    let values = serde_json::json!({"platform": {"email": "jane@example.com"}, "crm": {}});
    store
        .upsert_record_state(
            &RecordSyncState::new(conn.clone(), "contacts", "c-2")
                .remote("202", None)
                .times(Some(t0), None, None)
                .snapshot(values.clone()),
        )
        .await
        .unwrap();
    let got = store
        .record_state_by_remote_in(&conn, "contacts", "202")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.snapshot.as_ref().map(|s| &s.0), Some(&values));
    assert!(!format!("{got:?}").contains("jane@"));
    assert!(
        store
            .record_state_by_remote_in(&conn, "companies", "202")
            .await
            .unwrap()
            .is_none()
    );
    let raw = SqlConnector::connect(
        &db.config()
            .cursor_column("last_synced_at")
            .primary_key(["connection_id", "object", "local_id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<_> = raw
        .read(ReadRequest::full("crm_record_sync_state"))
        .try_collect()
        .await
        .unwrap();
    let stored = pages
        .iter()
        .flat_map(|p| p.changes.iter())
        .find_map(|c| match c {
            crm_core::Change::Upsert(r) if r.text("local_id") == Some("c-2") => {
                r.text("snapshot").map(str::to_owned)
            }
            _ => None,
        })
        .expect("the c-2 row with its snapshot");
    assert!(
        !stored.contains("jane"),
        "snapshot stored in clear: {stored}"
    );
    raw.close().await;
    assert!(
        store
            .delete_record_state(&conn, "contacts", "c-2")
            .await
            .unwrap()
    );
    assert!(
        store
            .record_state(&conn, "contacts", "c-2")
            .await
            .unwrap()
            .is_none()
    );
    // Webhooks queue.
    let ev = store
        .enqueue_webhook(
            NewWebhookEvent::new(
                "hubspot",
                "contact.propertyChange",
                serde_json::json!({"objectId": 101}),
            )
            .connection(conn.clone()),
        )
        .await
        .unwrap();
    let pending = store.pending_webhooks(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload["objectId"], 101);
    store
        .mark_webhook(&ev, WebhookStatus::Processed, None)
        .await
        .unwrap();
    assert!(store.pending_webhooks(10).await.unwrap().is_empty());
    // Audit log.
    store
        .audit(
            &NewAuditEntry::new("sync:hourly", "update")
                .connection(conn.clone())
                .record("contacts", "c-1")
                .values(
                    Some(serde_json::json!({"phone": "1"})),
                    Some(serde_json::json!({"phone": "2"})),
                ),
        )
        .await
        .unwrap();
    let log = store.audit_log("contacts", "c-1", 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].new_values, Some(serde_json::json!({"phone": "2"})));
    // Review queue.
    let review = store
        .add_review(
            Some(&conn),
            "booking",
            "BK-9",
            ReviewReason::MultipleMatch,
            &serde_json::json!({"candidates": [1, 2]}),
        )
        .await
        .unwrap();
    assert_eq!(store.open_reviews(10).await.unwrap().len(), 1);
    assert!(
        store
            .resolve_review(
                &review,
                ReviewStatus::Resolved,
                &serde_json::json!({"chosen": 2})
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_review(&review, ReviewStatus::Resolved, &serde_json::json!({}))
            .await
            .unwrap()
    );
    assert!(store.open_reviews(10).await.unwrap().is_empty());
    // Dead letters.
    let dl = store
        .add_dead_letter(
            Some(&conn),
            "contacts",
            &serde_json::json!({"email": "bad"}),
            "validate",
            "invalid email",
        )
        .await
        .unwrap();
    store
        .dead_letter_failed_again(&dl, "still invalid")
        .await
        .unwrap();
    let dls = store.dead_letters(&conn, 3, 10).await.unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].attempts, 2);
    assert!(store.dead_letters(&conn, 2, 10).await.unwrap().is_empty());
    assert!(store.remove_dead_letter(&dl).await.unwrap());
    // Deleting the connection removes what belongs to it.
    assert!(store.delete_connection(&conn).await.unwrap());
    assert!(store.connection(&conn).await.unwrap().is_none());
    assert!(store.runs(&conn, 10).await.unwrap().is_empty());
    store.close().await;
}
