//! Seed 003's background jobs on a controllable clock, with SQLite state
//! stores: the cadence of all five over a day, conflict detection, the
//! retry of failed records up to exhaustion, and a schema mismatch pausing
//! a connection until it is resumed (also through `crm-sync resume`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use crm_core::validate::ValidationRules;
use crm_core::{
    Capabilities, Connector, Error, ErrorKind, ObjectSchema, Record, RecordId, Result, Sink,
    WriteBatch, WriteOp, WriteOutcome,
};
use crm_sql::state::{
    ConnectionId, ConnectionStatus, CredentialKey, RecordSyncState, ReviewReason, StateStore,
};
use crm_sync::schedule::jobs::{self, RetryTarget, Seed003Jobs};
use crm_sync::schedule::{ManualClock, Scheduler};

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crm-sync-jobs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn store_in(dir: &std::path::Path) -> StateStore {
    let url = format!("sqlite://{}?mode=rwc", dir.join("state.db").display());
    StateStore::open_url(&url, CredentialKey::from_bytes([7; 32]))
        .await
        .unwrap()
}

async fn pipeline_conn(store: &StateStore, job: &str) -> ConnectionId {
    store
        .ensure_connection(jobs::PIPELINE_PROVIDER, job)
        .await
        .unwrap()
}

fn counter() -> (
    Arc<AtomicU32>,
    impl Fn() -> std::future::Ready<Result<()>> + Send + Sync + 'static,
) {
    let n = Arc::new(AtomicU32::new(0));
    let m = Arc::clone(&n);
    (n, move || {
        m.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    })
}

/// Moves `clock` minute by minute for `minutes`, running what is due.
async fn run_minutes(s: &Scheduler<ManualClock>, clock: &ManualClock, minutes: u32) {
    for _ in 0..minutes {
        clock.advance(chrono::Duration::minutes(1));
        for (_, h) in s.tick() {
            h.await.unwrap();
        }
    }
}

#[tokio::test]
async fn all_seed_003_jobs_over_a_simulated_day() {
    let dir = temp_dir("cadence");
    let store = store_in(&dir).await;
    let conn = pipeline_conn(&store, "bookings").await;
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    let (delta, d) = counter();
    let (health, h) = counter();
    let (retry, r) = counter();
    Seed003Jobs::new(store.clone(), conn, "bookings")
        .with_delta(d)
        .with_health(h)
        .with_retry(r)
        .register(&mut s);
    run_minutes(&s, &clock, 24 * 60).await;
    assert_eq!(delta.load(Ordering::SeqCst), 96);
    assert_eq!(health.load(Ordering::SeqCst), 288);
    assert_eq!(retry.load(Ordering::SeqCst), 24);
    let counts = s.run_counts();
    assert_eq!(counts[jobs::DELTA_SYNC], 96);
    assert_eq!(counts[jobs::HEALTH_CHECK], 288);
    assert_eq!(counts[jobs::CONFLICT_DETECTION], 24);
    assert_eq!(counts[jobs::RETRY_FAILED], 24);
    assert_eq!(counts[jobs::LOG_CLEANUP], 1);
    for name in counts.keys() {
        assert_eq!(s.failures(name), 0, "{name}");
        assert_eq!(s.skipped(name), 0, "{name}");
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn conflict_detection_opens_one_review_per_flagged_record() {
    let dir = temp_dir("conflicts");
    let store = store_in(&dir).await;
    let conn = pipeline_conn(&store, "contacts").await;
    let t0 = midnight();
    let later = t0 + chrono::Duration::minutes(5);
    // a: flagged, no review. b: flagged with its round's review open.
    // c: open manual review, changed on both sides, not flagged.
    // d: open manual review, nothing changed since the sync.
    for id in ["a", "b"] {
        let s = RecordSyncState::new(conn.clone(), "contacts", id)
            .times(Some(t0), Some(later), Some(later))
            .conflict(serde_json::json!({"fields": ["email"]}));
        store.upsert_record_state(&s).await.unwrap();
    }
    store
        .upsert_record_state(&RecordSyncState::new(conn.clone(), "contacts", "c").times(
            Some(t0),
            Some(later),
            Some(later),
        ))
        .await
        .unwrap();
    store
        .upsert_record_state(&RecordSyncState::new(conn.clone(), "contacts", "d").times(
            Some(later),
            Some(t0),
            None,
        ))
        .await
        .unwrap();
    let bidi_details =
        serde_json::json!({"kind": "field_conflict", "fields": [{"field": "email"}]});
    for id in ["b", "c", "d"] {
        store
            .put_review(
                &conn,
                "contacts",
                id,
                ReviewReason::ManualConflict,
                &bidi_details,
            )
            .await
            .unwrap();
    }
    let r = jobs::conflict_detection(&store, &conn, 100).await.unwrap();
    assert_eq!(r.flagged, 2, "{r:?}");
    assert_eq!(r.already_open, 1, "{r:?}");
    assert_eq!(r.reviews_opened, 1, "{r:?}");
    assert_eq!(r.open_manual_conflicts, 3, "{r:?}");
    assert_eq!(r.newly_flagged, 1, "{r:?}");
    assert_eq!(r.stale_reviews, 1, "{r:?}");
    // b's review kept the round's details; a got one from the state.
    let open = store.open_reviews(100).await.unwrap();
    assert_eq!(open.len(), 4);
    let b = open.iter().find(|i| i.record_id == "b").unwrap();
    assert_eq!(b.details, bidi_details);
    let a = open.iter().find(|i| i.record_id == "a").unwrap();
    assert_eq!(a.reason, ReviewReason::ManualConflict);
    assert_eq!(a.details["kind"], "sync_conflict");
    // Again: nothing new (c is flagged now and has its item).
    let r = jobs::conflict_detection(&store, &conn, 100).await.unwrap();
    assert_eq!((r.flagged, r.already_open, r.reviews_opened), (3, 3, 0));
    assert_eq!(store.count_open_reviews(&conn).await.unwrap(), 4);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A keyed sink that rejects every record while `failing` is set.
#[derive(Default)]
struct FakeSink {
    failing: AtomicBool,
    written: Mutex<Vec<(String, Record)>>,
}

#[async_trait]
impl Connector for FakeSink {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().upsert()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(ObjectSchema::new(object))
    }
}

#[async_trait]
impl Sink for FakeSink {
    fn max_batch(&self, _object: &str) -> usize {
        2
    }
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let WriteOp::Upsert { key } = &batch.op else {
            panic!("retries upsert by key");
        };
        assert_eq!(key, "booking_id");
        let mut out = Vec::new();
        for (index, r) in batch.records.into_iter().enumerate() {
            if self.failing.load(Ordering::SeqCst) {
                out.push(WriteOutcome::Rejected {
                    index,
                    error: Error::new(ErrorKind::Transient, "destination busy"),
                });
            } else {
                let id = RecordId::new(r.get(key).unwrap().to_string());
                self.written.lock().unwrap().push((object.to_owned(), r));
                out.push(WriteOutcome::Created(id));
            }
        }
        Ok(out)
    }
}

fn booking(id: &str, budget: &str) -> serde_json::Value {
    serde_json::to_value(Record::new().with("booking_id", id).with("budget", budget)).unwrap()
}

#[tokio::test]
async fn retry_gives_up_after_three_attempts_and_writes_what_passes() {
    let dir = temp_dir("retry");
    let store = store_in(&dir).await;
    let conn = pipeline_conn(&store, "bookings").await;
    let sink = FakeSink::default();
    sink.failing.store(true, Ordering::SeqCst);
    let rules =
        ValidationRules::from_yaml("validation:\n  budget: { type: decimal, min: 0 }\n").unwrap();
    let target = RetryTarget::new("bookings_table")
        .key_field("booking_id")
        .validation(Some(rules));
    store
        .put_dead_letter(
            &conn,
            "bookings",
            "b1",
            "store",
            &booking("b1", "10"),
            "busy",
        )
        .await
        .unwrap();
    store
        .put_dead_letter(
            &conn,
            "bookings",
            "b2",
            "validate",
            &booking("b2", "-5"),
            "budget (min)",
        )
        .await
        .unwrap();
    store
        .put_dead_letter(
            &conn,
            "bookings",
            "b3",
            "match",
            &booking("b3", "1"),
            "no campaign",
        )
        .await
        .unwrap();

    // Attempt 2: both fail again.
    let r = jobs::retry_failed(&store, &conn, &sink, &target)
        .await
        .unwrap();
    assert_eq!(
        (r.taken, r.written, r.failed_again, r.exhausted),
        (3, 0, 2, 0),
        "{r:?}"
    );
    assert_eq!((r.still_invalid, r.skipped), (1, 1), "{r:?}");
    // Attempt 3: both fail, and that was the last.
    let r = jobs::retry_failed(&store, &conn, &sink, &target)
        .await
        .unwrap();
    assert_eq!((r.failed_again, r.exhausted), (2, 2), "{r:?}");
    // Nothing is taken any more, even with the sink back.
    sink.failing.store(false, Ordering::SeqCst);
    let r = jobs::retry_failed(&store, &conn, &sink, &target)
        .await
        .unwrap();
    assert_eq!((r.taken, r.written), (1, 0), "{r:?}");
    assert!(sink.written.lock().unwrap().is_empty());
    let all = store.dead_letters(&conn, i64::MAX, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    for l in all.iter().filter(|l| l.stage != "match") {
        assert_eq!(l.attempts, 3, "{l:?}");
        assert!(jobs::is_exhausted(l, jobs::RETRY_MAX_ATTEMPTS));
        assert!(l.error.contains(jobs::EXHAUSTED_MARK), "{}", l.error);
    }
    let invalid = all.iter().find(|l| l.stage == "validate").unwrap();
    assert!(invalid.error.contains("budget"), "{}", invalid.error);

    // A write failure that then succeeds: written keyed, dead letter gone.
    store
        .put_dead_letter(
            &conn,
            "bookings",
            "b4",
            "store",
            &booking("b4", "7"),
            "busy",
        )
        .await
        .unwrap();
    store
        .put_dead_letter(
            &conn,
            "bookings",
            "b5",
            "validate",
            &booking("b5", "3"),
            "was bad",
        )
        .await
        .unwrap();
    let r = jobs::retry_failed(&store, &conn, &sink, &target)
        .await
        .unwrap();
    assert_eq!((r.taken, r.written, r.failed_again), (3, 2, 0), "{r:?}");
    let written = sink.written.lock().unwrap().clone();
    let ids: Vec<String> = written
        .iter()
        .map(|(o, r)| {
            assert_eq!(o, "bookings_table");
            r.get("booking_id").unwrap().to_string()
        })
        .collect();
    assert_eq!(ids, ["b4", "b5"]);
    assert_eq!(store.count_dead_letters(&conn).await.unwrap(), 3);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_schema_mismatch_pauses_runs_until_resumed() {
    let dir = temp_dir("pause");
    let store = store_in(&dir).await;
    let conn = pipeline_conn(&store, "bookings").await;
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    let delta_runs = Arc::new(AtomicU32::new(0));
    let mismatch = Arc::new(AtomicBool::new(true));
    let (n, m) = (Arc::clone(&delta_runs), Arc::clone(&mismatch));
    let (retries, r) = counter();
    Seed003Jobs::new(store.clone(), conn.clone(), "bookings")
        .with_delta(move || {
            n.fetch_add(1, Ordering::SeqCst);
            let fail = m.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(Error::new(
                        ErrorKind::SchemaMismatch,
                        "column B: expected \"Client\", found \"Campaign\"",
                    ))
                } else {
                    Ok(())
                }
            }
        })
        .with_retry(r)
        .register(&mut s);

    run_minutes(&s, &clock, 15).await;
    assert_eq!(delta_runs.load(Ordering::SeqCst), 1);
    assert_eq!(s.failures(jobs::DELTA_SYNC), 1);
    let c = store.connection(&conn).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Paused);
    assert!(
        c.last_error
            .as_deref()
            .unwrap()
            .contains("expected \"Client\""),
        "{c:?}"
    );
    let audit = store
        .audit_log(jobs::CONNECTION_OBJECT, "bookings", 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, jobs::PAUSED_ACTION);

    // Three hours paused: no delta sync, no retry.
    mismatch.store(false, Ordering::SeqCst);
    run_minutes(&s, &clock, 180).await;
    assert_eq!(delta_runs.load(Ordering::SeqCst), 1);
    assert_eq!(retries.load(Ordering::SeqCst), 0);
    assert_eq!(s.runs(jobs::DELTA_SYNC), 13);

    let resumed = jobs::resume(&store, &conn, "bookings", "test")
        .await
        .unwrap();
    assert!(matches!(
        resumed,
        jobs::Resumed::Resumed {
            was: ConnectionStatus::Paused,
            ..
        }
    ));
    assert_eq!(
        jobs::resume(&store, &conn, "bookings", "test")
            .await
            .unwrap(),
        jobs::Resumed::AlreadyActive
    );
    run_minutes(&s, &clock, 60).await;
    assert_eq!(delta_runs.load(Ordering::SeqCst), 5);
    assert_eq!(retries.load(Ordering::SeqCst), 1);
    let c = store.connection(&conn).await.unwrap().unwrap();
    assert_eq!((c.status, c.last_error), (ConnectionStatus::Active, None));
    // Other errors never pause.
    let transient = Error::new(ErrorKind::Transient, "down");
    assert!(
        !jobs::pause_on_schema_mismatch(&store, &conn, "bookings", &transient)
            .await
            .unwrap()
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn crm_sync(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(args)
        .env_remove("CRM_SYNC_STATE_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_sync_resume_reactivates_the_jobs_connection() {
    let dir = temp_dir("cli-resume");
    let yaml = "name: bookings\nsheet:\n  spreadsheet_id: a\n  sheet_name: b\ncrm:\n  google_sheets:\n    credentials: /no/such/key.json\ndestination:\n  url: \"sqlite://state.db\"\n";
    let path = dir.join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = path.display().to_string();

    // The job never ran: no connection to resume.
    let (code, out, err) = tokio::task::spawn_blocking({
        let c = config.clone();
        move || crm_sync(&["resume", &c])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("nothing to resume"), "{err}");

    let store = store_in(&dir).await;
    let conn = pipeline_conn(&store, "bookings").await;
    let e = Error::new(ErrorKind::SchemaMismatch, "column C renamed");
    assert!(
        jobs::pause_on_schema_mismatch(&store, &conn, "bookings", &e)
            .await
            .unwrap()
    );
    // Pausing twice alerts once.
    assert!(
        !jobs::pause_on_schema_mismatch(&store, &conn, "bookings", &e)
            .await
            .unwrap()
    );
    let (code, out, err) = tokio::task::spawn_blocking({
        let c = config.clone();
        move || crm_sync(&["resume", &c])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("connection resumed (paused -> active"),
        "{out}"
    );
    assert!(out.contains("column C renamed"), "{out}");
    let c = store.connection(&conn).await.unwrap().unwrap();
    assert_eq!(c.status, ConnectionStatus::Active);

    let (code, out, err) = tokio::task::spawn_blocking(move || crm_sync(&["resume", &config]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already active"), "{out}");

    let missing = dir.join("nope.yaml").display().to_string();
    let (code, _, _) = tokio::task::spawn_blocking(move || crm_sync(&["resume", &missing]))
        .await
        .unwrap();
    assert_eq!(code, 2);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
