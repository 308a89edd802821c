//! Scale-out acceptance: three `crm-sync worker` processes share a 50-job
//! backlog in PostgreSQL, upserting 1,000 contacts into the HubSpot
//! simulator; one is killed with SIGKILL mid-job. Every job completes once
//! in effect (the simulator ends as a one-worker run leaves it, no
//! duplicates), the job table shows 50 done, and the shared budget of 20
//! requests per second is never exceeded at the simulator.
//!
//! Needs the PostgreSQL server of `CRM_TEST_POSTGRES_URL` (default the
//! local one); without it the test skips, unless `CI` is set: then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_sim::store::Deleted;
use crm_sim::{SimHandle, SimServer};
use crm_sql::state::jobs::{JobQueue, JobStatus};
use crm_sync::worker::{LoadRange, Worker, WorkerConfig, WorkerOptions};

use support::Db;

const RECORDS: u64 = 1000;
const PER_JOB: u64 = 20;
const JOBS: u64 = RECORDS / PER_JOB;
/// The provider's limit: requests per second, measured where they arrive.
const LIMIT: usize = 20;
/// The workers' shared budget: the provider's limit less headroom. The
/// budget spaces requests evenly when they leave; a request held up on its
/// way (a busy machine, a slow connect) arrives later than its slot and can
/// land in one window with the following ones, so a budget of exactly the
/// limit can overrun it by one at the provider (docs/workers.md).
const BUDGET: usize = 18;

async fn simulator() -> SimHandle {
    // The simulator itself does not throttle: the test measures the
    // workers' shared budget on its request log.
    let mut config = HubSpotSimConfig::default();
    config.per_window = 100_000;
    config.daily = None;
    SimServer::new(HubSpotSimulator::new(config))
        .start()
        .await
        .unwrap()
}

fn token(sim: &SimHandle) -> String {
    sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The worker config: the queue, the simulator and the CSV. `token` is the
/// token or a `${NAME}` reference to the environment.
fn write_config(
    dir: &Path,
    file: &str,
    queue: &str,
    db: &str,
    sim: &SimHandle,
    token: &str,
    per_sec: usize,
) {
    let yaml = format!(
        "queue:\n  url: \"{db}\"\n  name: {queue}\nconnections:\n  hubspot:\n    kind: hubspot\n    \
         base_url: \"{}\"\n    token: \"{token}\"\n    account: \"hubspot:{queue}\"\n    \
         rate_limit: {{ requests: {per_sec}, interval_ms: 1000 }}\n  contacts:\n    kind: csv\n    path: contacts.csv\n",
        sim.base_url()
    );
    std::fs::write(dir.join(file), yaml).unwrap();
}

fn write_csv(dir: &Path) {
    let mut text = String::from("email,firstname,lastname\n");
    for i in 0..RECORDS {
        text.push_str(&format!("c{i:04}@example.com,First{i},Last{}\n", i % 37));
    }
    std::fs::write(dir.join("contacts.csv"), text).unwrap();
}

async fn enqueue(queue: &JobQueue, name: &str) {
    for range in LoadRange::split("contacts", RECORDS, PER_JOB, "hubspot", "contacts", "email") {
        let job = range.batch_size(5).job(name).unwrap().max_attempts(5);
        assert!(queue.enqueue(&job).await.unwrap().is_some());
        // Enqueueing the same range again is a no-op.
        assert!(queue.enqueue(&job).await.unwrap().is_none());
    }
}

/// email -> (firstname, lastname), and how many live records there are.
fn contacts(sim: &SimHandle) -> (BTreeMap<String, (String, String)>, usize) {
    let all = sim.context().store().all("contacts", Deleted::Exclude);
    let map = all
        .iter()
        .map(|r| {
            let f = |n: &str| r.text(n).unwrap_or_default().to_owned();
            (f("email"), (f("firstname"), f("lastname")))
        })
        .collect();
    (map, all.len())
}

fn spawn_worker(config: &Path, id: &str, token: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .env("WORKERS_TEST_HUBSPOT_TOKEN", token)
        .arg("worker")
        .arg(config)
        .args(["--id", id, "--concurrency", "2", "--lease-secs", "2"])
        .args(["--poll-ms", "100", "--exit-when-idle"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_one_killed_complete_every_job_once_within_the_shared_limit() {
    let Some(db) = Db::create("crm_workers", "kill").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("crm-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_csv(&dir);

    // The reference: one in-process worker, its own simulator and queue.
    let reference_sim = simulator().await;
    write_config(
        &dir,
        "reference.yaml",
        "reference",
        &db.url,
        &reference_sim,
        &token(&reference_sim),
        1000,
    );
    let reference = Worker::open(
        WorkerConfig::load(&dir.join("reference.yaml")).unwrap(),
        &dir,
        WorkerOptions::new("reference").exit_when_idle(true),
    )
    .await
    .unwrap();
    enqueue(reference.queue(), "reference").await;
    let report = reference
        .run_until(std::future::pending::<()>())
        .await
        .unwrap();
    assert_eq!(report.done, JOBS);
    let (expected, n) = contacts(&reference_sim);
    assert_eq!((expected.len(), n), (RECORDS as usize, RECORDS as usize));

    // The scale-out run: three processes, 20 requests per second shared.
    let sim = simulator().await;
    // The workers read the token from their environment, not the file.
    write_config(
        &dir,
        "workers.yaml",
        "bulk",
        &db.url,
        &sim,
        "${WORKERS_TEST_HUBSPOT_TOKEN}",
        BUDGET,
    );
    let config = dir.join("workers.yaml");
    let queue = WorkerConfig::load(&config)
        .unwrap()
        .open_queue(&dir)
        .await
        .unwrap();
    enqueue(&queue, "bulk").await;
    let mut workers: Vec<Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn_worker(&config, id, &token(&sim)))
        .collect();

    // Kill w1 once one of its running jobs has written part of its range.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_job = loop {
        assert!(Instant::now() < deadline, "w1 never got a job going");
        let running = queue
            .jobs("bulk", Some(JobStatus::Running), 100)
            .await
            .unwrap();
        let (live, _) = contacts(&sim);
        let mid = running.iter().find(|j| {
            j.lease_holder
                .as_deref()
                .is_some_and(|h| h.starts_with("w1:"))
                && {
                    let r: LoadRange = serde_json::from_value(j.payload.clone()).unwrap();
                    let written = (r.from..r.to)
                        .filter(|i| live.contains_key(&format!("c{i:04}@example.com")))
                        .count() as u64;
                    written > 0 && written < r.to - r.from
                }
        });
        if let Some(j) = mid {
            workers[0].kill().unwrap(); // SIGKILL
            workers[0].wait().unwrap();
            break j.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let deadline = Instant::now() + Duration::from_secs(180);
    for w in &mut workers[1..] {
        let status = wait_exit(w, deadline);
        assert!(status.success(), "worker exited with {status}");
    }

    // The job table: 50 done, the killed one taken over.
    let counts = queue.counts("bulk").await.unwrap();
    assert_eq!(
        (counts.done, counts.failed, counts.unfinished()),
        (JOBS, 0, 0),
        "{counts:?}"
    );
    let killed = queue.job(&killed_job).await.unwrap().unwrap();
    assert_eq!(killed.status, JobStatus::Done);
    assert!(killed.attempts >= 2, "{killed:?}");
    assert!(
        !killed
            .lease_holder
            .as_deref()
            .unwrap_or_default()
            .starts_with("w1:"),
        "{killed:?}"
    );

    // The simulator: exactly the one-worker run's records, no duplicates.
    let (got, n) = contacts(&sim);
    assert_eq!(n, RECORDS as usize, "no duplicate records");
    assert_eq!(got, expected);

    // The shared limit held across all three processes.
    let log = sim.request_log();
    let worst = log.max_in_window(Duration::from_secs(1), |_| true);
    assert!(
        worst <= LIMIT,
        "{worst} requests within one second (limit {LIMIT})"
    );
    // 50 jobs of 4 batches, plus the killed job's partial first attempt.
    assert!(log.len() >= (JOBS * 4) as usize, "{}", log.len());

    queue.store().close().await;
    reference.queue().store().close().await;
    sim.shutdown().await;
    reference_sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    db.drop().await;
}
