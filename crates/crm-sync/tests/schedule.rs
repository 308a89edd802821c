//! The scheduler over controllable clocks: seed 003's cadence over a day,
//! no overlapping runs, one catch-up after a pause, and leases shared by two
//! schedulers through one state store file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::schedule::{ManualClock, Schedule, Scheduler, TokioClock, jobs};
use tokio::sync::Semaphore;

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn counter() -> (
    Arc<AtomicU32>,
    impl Fn() -> std::future::Ready<crm_core::Result<()>> + Send + Sync + 'static,
) {
    let n = Arc::new(AtomicU32::new(0));
    let m = Arc::clone(&n);
    (n, move || {
        m.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    })
}

#[tokio::test(start_paused = true)]
async fn seed_003_cadence_over_a_simulated_day() {
    let clock = Arc::new(TokioClock::starting_at(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    let (delta, f) = counter();
    s.add("delta-sync", jobs::delta_sync_schedule(), f);
    let (health, f) = counter();
    s.add("health-check", jobs::health_check_schedule(), f);
    let (retry, f) = counter();
    s.add("retry-failed", Schedule::parse("0 * * * *").unwrap(), f);
    let (cleanup, f) = counter();
    s.add("log-cleanup", jobs::log_cleanup_schedule(), f);
    s.run_until(midnight() + chrono::Duration::days(1)).await;
    assert_eq!(delta.load(Ordering::SeqCst), 96);
    assert_eq!(health.load(Ordering::SeqCst), 288);
    assert_eq!(retry.load(Ordering::SeqCst), 24);
    assert_eq!(cleanup.load(Ordering::SeqCst), 1);
    assert_eq!(s.runs("delta-sync"), 96);
    assert_eq!(s.skipped("health-check"), 0);
    assert_eq!(
        crm_sync::schedule::Clock::now(&*clock),
        midnight() + chrono::Duration::days(1)
    );
}

#[tokio::test]
async fn a_running_job_is_not_started_again() {
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicU32::new(0));
    let (g, st) = (Arc::clone(&gate), Arc::clone(&started));
    s.add(
        "slow",
        Schedule::every(Duration::from_secs(300)),
        move || {
            let (g, st) = (Arc::clone(&g), Arc::clone(&st));
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        },
    );
    clock.advance(chrono::Duration::minutes(5));
    let first = s.tick();
    assert_eq!(first.len(), 1);
    // Due again twice while the first run is still going: not started.
    for _ in 0..2 {
        clock.advance(chrono::Duration::minutes(5));
        assert!(s.tick().is_empty());
    }
    assert_eq!(s.skipped("slow"), 2);
    gate.add_permits(1);
    for (_, h) in first {
        h.await.unwrap();
    }
    clock.advance(chrono::Duration::minutes(5));
    let next = s.tick();
    assert_eq!(next.len(), 1);
    gate.add_permits(1);
    for (_, h) in next {
        h.await.unwrap();
    }
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(s.runs("slow"), 2);
}

#[tokio::test]
async fn a_pause_catches_up_once() {
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    let (n, f) = counter();
    s.add("delta-sync", Schedule::every(Duration::from_secs(900)), f);
    // Nothing is due before the first fire time.
    clock.advance(chrono::Duration::minutes(14));
    assert!(s.tick().is_empty());
    // Asleep for five hours: twenty fire times missed, one run made.
    clock.advance(chrono::Duration::hours(5));
    for (_, h) in s.tick() {
        h.await.unwrap();
    }
    assert!(s.tick().is_empty());
    assert_eq!(n.load(Ordering::SeqCst), 1);
    // The next fire time counts from now, on the 15-minute grid.
    let now = crm_sync::schedule::Clock::now(&*clock);
    assert_eq!(
        s.next_run("delta-sync"),
        Schedule::every(Duration::from_secs(900)).next_after(now)
    );
    assert!(s.next_run("delta-sync").unwrap() > now);
}

#[tokio::test]
async fn a_failing_job_is_counted_and_runs_again() {
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock));
    s.add("broken", Schedule::parse("* * * * *").unwrap(), || async {
        Err(crm_core::Error::new(
            crm_core::ErrorKind::Transient,
            "source down",
        ))
    });
    for _ in 0..3 {
        clock.advance(chrono::Duration::minutes(1));
        for (_, h) in s.tick() {
            let outcome = h.await.unwrap();
            assert!(
                matches!(outcome, crm_sync::schedule::Outcome::Ran(Err(ref e)) if e.contains("source down")),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(s.runs("broken"), 3);
    assert_eq!(s.failures("broken"), 3);
}

fn sqlite_url(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("crm-sync-schedule-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("state.db").display());
    (dir, url)
}

async fn store(url: &str) -> StateStore {
    StateStore::open_url(url, CredentialKey::from_bytes([9; 32]))
        .await
        .unwrap()
}

/// Two schedulers (as two processes) with the same job on one connection.
async fn two_schedulers_share_a_lease(url: &str, lease: &str) {
    let clock = Arc::new(ManualClock::new(midnight()));
    let ttl = Duration::from_secs(600);
    let gate = Arc::new(Semaphore::new(0));
    let runs = Arc::new(AtomicU32::new(0));
    let mut schedulers = Vec::new();
    for holder in ["process-a", "process-b"] {
        let keeper = Arc::new(store(url).await);
        let mut s = Scheduler::new(Arc::clone(&clock)).with_leases(keeper, holder, ttl);
        let (g, r) = (Arc::clone(&gate), Arc::clone(&runs));
        s.add_leased(
            "delta-sync",
            Schedule::every(Duration::from_secs(900)),
            lease,
            move || {
                let (g, r) = (Arc::clone(&g), Arc::clone(&r));
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    g.acquire().await.unwrap().forget();
                    Ok(())
                }
            },
        );
        schedulers.push(s);
    }
    clock.advance(chrono::Duration::minutes(15));
    let a = schedulers[0].tick();
    // Let A take the lease and start its run before B tries.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let b = schedulers[1].tick();
    for (_, h) in b {
        assert_eq!(h.await.unwrap(), crm_sync::schedule::Outcome::LeaseHeld);
    }
    gate.add_permits(1);
    for (_, h) in a {
        assert_eq!(h.await.unwrap(), crm_sync::schedule::Outcome::Ran(Ok(())));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Released after the run: at the next fire time B may run it.
    clock.advance(chrono::Duration::minutes(15));
    gate.add_permits(1);
    for (_, h) in schedulers[1].tick() {
        assert_eq!(h.await.unwrap(), crm_sync::schedule::Outcome::Ran(Ok(())));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(schedulers[0].runs("delta-sync"), 1);
    assert_eq!(schedulers[1].runs("delta-sync"), 1);
    assert_eq!(schedulers[1].skipped("delta-sync"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_prevents_double_runs_on_one_sqlite_file() {
    let (dir, url) = sqlite_url("double");
    two_schedulers_share_a_lease(&url, "hubspot-prod").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_expired_lease_is_retaken() {
    let (dir, url) = sqlite_url("expired");
    let a = store(&url).await;
    let b = Arc::new(store(&url).await);
    let t0 = midnight() + chrono::Duration::minutes(15);
    // Process A took the lease and died without releasing it.
    assert!(
        a.try_acquire_lease_at(
            "conn",
            "process-a",
            Duration::from_secs(600),
            t0 - chrono::Duration::seconds(1)
        )
        .await
        .unwrap()
    );
    let clock = Arc::new(ManualClock::new(midnight()));
    let mut s = Scheduler::new(Arc::clone(&clock)).with_leases(
        b.clone(),
        "process-b",
        Duration::from_secs(600),
    );
    let (n, f) = counter();
    s.add_leased(
        "delta-sync",
        Schedule::every(Duration::from_secs(900)),
        "conn",
        f,
    );
    clock.set(t0);
    for (_, h) in s.tick() {
        assert_eq!(h.await.unwrap(), crm_sync::schedule::Outcome::LeaseHeld);
    }
    // Fifteen minutes on, A's ten-minute lease has lapsed: B takes it.
    clock.advance(chrono::Duration::minutes(15));
    for (_, h) in s.tick() {
        assert_eq!(h.await.unwrap(), crm_sync::schedule::Outcome::Ran(Ok(())));
    }
    assert_eq!(n.load(Ordering::SeqCst), 1);
    // B released it after the run.
    assert!(b.lease("conn").await.unwrap().is_none());
    a.close().await;
    b.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn log_cleanup_deletes_finished_runs_past_retention() {
    use crm_sql::state::{RunStatus, SyncDirection, SyncType};
    let (dir, url) = sqlite_url("cleanup");
    let store = store(&url).await;
    let conn = store.ensure_connection("hubspot", "prod").await.unwrap();
    let done = store
        .start_run(&conn, "contacts", SyncType::Delta, SyncDirection::FromCrm)
        .await
        .unwrap();
    store
        .finish_run(&done, RunStatus::Completed, &serde_json::json!([]))
        .await
        .unwrap();
    let going = store
        .start_run(&conn, "contacts", SyncType::Delta, SyncDirection::FromCrm)
        .await
        .unwrap();
    let now = Utc::now();
    // 29 days on, both are kept.
    let kept = jobs::log_cleanup(
        &store,
        now + chrono::Duration::days(29),
        jobs::LOG_RETENTION,
    )
    .await
    .unwrap();
    assert_eq!(kept, 0);
    assert!(store.run(&done).await.unwrap().is_some());
    // 31 days on, the finished run goes and the running one stays.
    let deleted = jobs::log_cleanup(
        &store,
        now + chrono::Duration::days(31),
        jobs::LOG_RETENTION,
    )
    .await
    .unwrap();
    assert_eq!(deleted, 1);
    assert!(store.run(&done).await.unwrap().is_none());
    assert!(store.run(&going).await.unwrap().is_some());
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn health_check_names_the_failing_part() {
    let (dir, url) = sqlite_url("health");
    let yaml = format!(
        "name: x\nsheet:\n  spreadsheet_id: a\n  sheet_name: b\ncrm:\n  google_sheets:\n    credentials: /no/such/key.json\n  sync: {{ schedule: \"0 * * * *\" }}\ndestination:\n  url: \"{url}\"\n"
    );
    let job = crm_sync::config::SyncJob::from_yaml(&yaml, "job.yaml").unwrap();
    assert_eq!(
        jobs::job_schedule(&job).unwrap(),
        Schedule::parse("0 * * * *").unwrap()
    );
    let err = jobs::health_check(&job, crm_sync::runner::Overrides::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source") && err.contains("/no/such/key.json"),
        "{err}"
    );
    assert!(!err.contains("destination"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Two schedulers sharing one PostgreSQL database (`CRM_TEST_POSTGRES_URL`,
/// default the local server). Without a server the test is skipped, unless
/// `CI` is set: then it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_prevents_double_runs_on_one_postgres_database() {
    let admin = std::env::var("CRM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let conn = match crm_sql::SqlConnector::connect_url(&admin).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL test server unavailable (CI is set, so this fails): {e}"
            );
            return;
        }
    };
    let name = format!("crm_sched_{}", std::process::id());
    let _ = conn
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
        .await;
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, query) = admin
        .split_once('?')
        .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').unwrap();
    let url = match query {
        Some(q) => format!("{}/{name}?{q}", &base[..host_end]),
        None => format!("{}/{name}", &base[..host_end]),
    };
    two_schedulers_share_a_lease(&url, "salesforce-prod").await;
    let _ = conn
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    conn.close().await;
}

/// `state.retention_days`: the cleanup purges audit entries and dead
/// letters older than the retention, keeps newer ones and every review item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_audit_entries_and_dead_letters() {
    use crm_sql::state::{NewAuditEntry, ReviewReason};

    let (dir, url) = sqlite_url("retention");
    let st = store(&url).await;
    let conn = st.ensure_connection("pipeline", "bookings").await.unwrap();
    st.audit(&NewAuditEntry::new("alice", "review.match_accepted").record("bookings", "BK-1"))
        .await
        .unwrap();
    st.put_dead_letter(
        &conn,
        "bookings",
        "BK-2",
        "validate",
        &serde_json::json!({}),
        "budget",
    )
    .await
    .unwrap();
    st.put_review(
        &conn,
        "bookings",
        "BK-3",
        ReviewReason::ProbableMatch,
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let now = Utc::now();
    let kept = jobs::retention_cleanup(&st, now, 30).await.unwrap();
    assert_eq!((kept.audit_entries, kept.dead_letters), (0, 0));
    let later = now + chrono::TimeDelta::days(31);
    let purged = jobs::retention_cleanup(&st, later, 30).await.unwrap();
    assert_eq!((purged.audit_entries, purged.dead_letters), (1, 1));
    assert_eq!(
        st.open_reviews(10).await.unwrap().len(),
        1,
        "review items are kept"
    );
    let e = jobs::retention_cleanup(&st, later, 0).await.unwrap_err();
    assert_eq!(e.context_value("field"), Some("state.retention_days"));
    st.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
