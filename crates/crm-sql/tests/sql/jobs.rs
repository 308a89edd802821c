//! The job queue and the shared rate budget on each backend.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use crm_sql::state::jobs::{JobQueue, JobStatus, NewJob};
use crm_sql::state::{CredentialKey, StateStore};
use serde_json::json;

use crate::harness::TestDb;

async fn open(db: &TestDb) -> JobQueue {
    let store = StateStore::open(
        &db.config().build().unwrap(),
        CredentialKey::from_bytes([5; 32]),
    )
    .await
    .expect("open state store");
    JobQueue::new(store)
}

const MINUTE: Duration = Duration::from_secs(60);

pub(crate) async fn job_has_one_holder_and_dedupes(db: TestDb) {
    // Two queues, two pools: as two worker processes.
    let a = open(&db).await;
    let b = open(&db).await;
    let job = NewJob::new("q", "load_range", json!({"from": 0, "to": 20})).dedupe_key("range:0");
    let id = a.enqueue(&job).await.unwrap().expect("enqueued");
    assert!(
        b.enqueue(&job).await.unwrap().is_none(),
        "an unfinished job with the same dedupe key exists"
    );
    // Another queue is separate; an unkeyed job is never deduped.
    a.enqueue(&NewJob::new("other", "x", json!(null)))
        .await
        .unwrap()
        .unwrap();

    let claimed = a.claim("q", "a", MINUTE).await.unwrap().expect("claimed");
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.payload, json!({"from": 0, "to": 20}));
    assert_eq!(claimed.lease_holder.as_deref(), Some("a"));
    assert!(b.claim("q", "b", MINUTE).await.unwrap().is_none());

    // Only the holder heartbeats, completes or fails.
    assert!(a.heartbeat(&id, "a", MINUTE).await.unwrap());
    assert!(!b.heartbeat(&id, "b", MINUTE).await.unwrap());
    assert!(!b.complete(&id, "b", &json!({"n": 1})).await.unwrap());
    assert!(b.fail(&id, "b", "nope", None).await.unwrap().is_none());
    assert!(a.complete(&id, "a", &json!({"written": 20})).await.unwrap());
    assert!(!a.complete(&id, "a", &json!({"again": true})).await.unwrap());
    assert!(!a.heartbeat(&id, "a", MINUTE).await.unwrap());

    let done = b.job(&id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.result, Some(json!({"written": 20})));
    let counts = b.counts("q").await.unwrap();
    assert_eq!((counts.done, counts.unfinished()), (1, 0));

    // Finished, the key is free again.
    let again = b.enqueue(&job).await.unwrap().expect("enqueued again");
    assert_ne!(again, id);
    assert_eq!(b.jobs("q", None, 10).await.unwrap().len(), 2);
    assert_eq!(
        b.jobs("q", Some(JobStatus::Queued), 10).await.unwrap()[0].id,
        again
    );
    a.store().close().await;
    b.store().close().await;
}

pub(crate) async fn expired_job_is_retaken_and_failures_requeue(db: TestDb) {
    let a = open(&db).await;
    let b = open(&db).await;
    let t0 = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
    let id = a
        .enqueue(
            &NewJob::new("q", "k", json!(1))
                .max_attempts(3)
                .run_after(t0),
        )
        .await
        .unwrap()
        .unwrap();
    // Not due before run_after.
    let early = t0 - chrono::Duration::seconds(1);
    assert!(a.claim_at("q", "a", MINUTE, early).await.unwrap().is_none());
    assert!(a.claim_at("q", "a", MINUTE, t0).await.unwrap().is_some());
    // A heartbeat at t0 + 40 s keeps it until t0 + 100 s.
    let t40 = t0 + chrono::Duration::seconds(40);
    assert!(a.heartbeat_at(&id, "a", MINUTE, t40).await.unwrap());
    let t90 = t0 + chrono::Duration::seconds(90);
    assert!(b.claim_at("q", "b", MINUTE, t90).await.unwrap().is_none());
    // "a" dies; after the lease lapses "b" takes the job over.
    let t101 = t0 + chrono::Duration::seconds(101);
    let retaken = b.claim_at("q", "b", MINUTE, t101).await.unwrap().unwrap();
    assert_eq!((retaken.id.clone(), retaken.attempts), (id.clone(), 2));
    assert_eq!(retaken.lease_holder.as_deref(), Some("b"));
    // The old holder has lost it.
    assert!(!a.heartbeat_at(&id, "a", MINUTE, t101).await.unwrap());
    assert!(!a.complete(&id, "a", &json!("late")).await.unwrap());

    // A failed attempt is queued again (attempt 2 of 3) ...
    let status = b
        .fail(&id, "b", "HTTP 503", Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(status, Some(JobStatus::Queued));
    let j = a.job(&id).await.unwrap().unwrap();
    assert_eq!(j.last_error.as_deref(), Some("HTTP 503"));
    // ... and the third attempt's failure is final.
    let third = a.claim("q", "a", MINUTE).await.unwrap().unwrap();
    assert_eq!(third.attempts, 3);
    let status = a
        .fail(&id, "a", "HTTP 503 again", Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(status, Some(JobStatus::Failed));
    assert!(a.claim("q", "a", MINUTE).await.unwrap().is_none());

    // A permanent failure is final at once; a job whose worker died on its
    // last attempt is marked failed by the next claim.
    let p = a
        .enqueue(&NewJob::new("q", "k", json!(2)))
        .await
        .unwrap()
        .unwrap();
    a.claim("q", "a", MINUTE).await.unwrap().unwrap();
    assert_eq!(
        a.fail(&p, "a", "bad payload", None).await.unwrap(),
        Some(JobStatus::Failed)
    );
    let last = a
        .enqueue(&NewJob::new("q", "k", json!(3)).max_attempts(1))
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    a.claim_at("q", "a", MINUTE, now).await.unwrap().unwrap();
    let after = now + chrono::Duration::seconds(61);
    assert!(b.claim_at("q", "b", MINUTE, after).await.unwrap().is_none());
    let dead = b.job(&last).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Failed);
    assert_eq!(b.counts("q").await.unwrap().failed, 3);
    a.store().close().await;
    b.store().close().await;
}

pub(crate) async fn racing_claimers_take_each_job_once(db: TestDb) {
    let queues = [open(&db).await, open(&db).await, open(&db).await];
    for i in 0..30 {
        queues[0]
            .enqueue(&NewJob::new("race", "k", json!(i)).dedupe_key(format!("job:{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    let tasks: Vec<_> = (0..9)
        .map(|w| {
            let q = queues[w % queues.len()].clone();
            tokio::spawn(async move {
                let holder = format!("w{w}");
                let mut mine = Vec::new();
                while let Some(job) = q.claim("race", &holder, MINUTE).await.unwrap() {
                    assert!(q.complete(&job.id, &holder, &json!(w)).await.unwrap());
                    mine.push(job.id);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 30, "every job claimed once");
    assert_eq!(distinct.len(), 30);
    let counts = queues[1].counts("race").await.unwrap();
    assert_eq!((counts.done, counts.unfinished()), (30, 0));
    for q in queues {
        q.store().close().await;
    }
}

pub(crate) async fn budget_is_shared_across_processes(db: TestDb) {
    let queues = [open(&db).await, open(&db).await];
    // Slots 105 ms apart: wake-up jitter of a loaded test machine stays
    // well below the spacing.
    let per_window = 5u32;
    let window = Duration::from_millis(500);
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let q = queues[t % 2].clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for _ in 0..5 {
                    let wait = q
                        .take_budget("hubspot:acct", per_window, window)
                        .await
                        .unwrap();
                    tokio::time::sleep(wait).await;
                    sent.push(Instant::now());
                }
                sent
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    times.sort();
    assert_eq!(times.len(), 20);
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < window)
            .count();
        worst = worst.max(n);
    }
    assert!(
        worst <= per_window as usize,
        "{worst} requests in one window"
    );
    // 20 slots spaced by window / 5 take almost 4 windows.
    assert!(start.elapsed() >= window * 3, "{:?}", start.elapsed());
    // Another account has its own budget.
    assert_eq!(
        queues[0].take_budget("other", 1, MINUTE).await.unwrap(),
        Duration::ZERO
    );
    assert!(queues[0].take_budget("other", 0, MINUTE).await.is_err());
    for q in queues {
        q.store().close().await;
    }
}
