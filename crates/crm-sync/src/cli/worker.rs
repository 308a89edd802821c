//! `crm-sync worker CONFIG` and `crm-sync enqueue CONFIG`: the scale-out
//! job loop and adding jobs to its queue (see [`crate::worker`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CliError;
use crate::worker::{LoadRange, Worker, WorkerConfig, WorkerOptions, default_worker_id};
use crm_sql::state::jobs::NewJob;

/// Options of `crm-sync worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The worker config file (`queue:` and `connections:`).
    pub config: PathBuf,
    /// The worker's name in leases (default `<host>-<pid>`); unique per process.
    #[arg(long)]
    pub id: Option<String>,
    /// Jobs run at once by this process.
    #[arg(long, default_value = "4")]
    pub concurrency: usize,
    /// Seconds a claimed job stays leased without a heartbeat (heartbeats
    /// go every third of it).
    #[arg(long, default_value = "30")]
    pub lease_secs: u64,
    /// Milliseconds between looks at an empty queue.
    #[arg(long, default_value = "500")]
    pub poll_ms: u64,
    /// Exit once the queue has no queued or running jobs.
    #[arg(long)]
    pub exit_when_idle: bool,
}

/// Options of `crm-sync enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// The worker config file (its `queue:` is used).
    pub config: PathBuf,
    /// The job kind (`sync`, `load_range`).
    #[arg(long, default_value = "load_range")]
    pub kind: String,
    /// The payload as JSON (for `sync`: `{"job": "bookings.yaml"}`).
    #[arg(long, conflicts_with = "split")]
    pub payload: Option<String>,
    /// Split a bulk load: `SOURCE:SINK:OBJECT:KEY:TOTAL:PER_JOB` enqueues
    /// `load_range` jobs covering records `[0, TOTAL)`.
    #[arg(long)]
    pub split: Option<String>,
    /// Records per write call of split `load_range` jobs.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The dedupe key of a `--payload` job.
    #[arg(long)]
    pub dedupe_key: Option<String>,
    /// Attempts before a job is marked failed.
    #[arg(long, default_value = "5")]
    pub max_attempts: i64,
}

fn base_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Runs the worker until Ctrl-C (jobs in progress finish) or, with
/// `--exit-when-idle`, until the queue is empty.
///
/// # Errors
/// A usage error for a bad config or an unreachable queue database, a
/// failure when the queue stays unreachable.
#[allow(clippy::print_stderr)]
pub async fn run(args: &WorkerArgs) -> Result<(), CliError> {
    let config = WorkerConfig::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
    let options = WorkerOptions::new(args.id.clone().unwrap_or_else(default_worker_id))
        .concurrency(args.concurrency)
        .lease(Duration::from_secs(args.lease_secs))
        .poll(Duration::from_millis(args.poll_ms))
        .exit_when_idle(args.exit_when_idle);
    let worker = Worker::open(config, base_of(&args.config), options)
        .await
        .map_err(|e| CliError::usage(format!("cannot open the job queue: {e}")))?;
    let report = worker
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::failed(format!("the job queue could not be read: {e}")))?;
    eprintln!(
        "worker stopped: {} jobs done, {} failed attempts, {} leases lost",
        report.done, report.failed, report.lost
    );
    Ok(())
}

fn split_jobs(args: &EnqueueArgs, spec: &str, queue: &str) -> Result<Vec<NewJob>, CliError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [source, sink, object, key, total, per_job] = parts.as_slice() else {
        return Err(CliError::usage(
            "--split takes SOURCE:SINK:OBJECT:KEY:TOTAL:PER_JOB",
        ));
    };
    let number = |s: &str, what: &str| {
        s.parse::<u64>()
            .map_err(|_| CliError::usage(format!("--split: {what} must be a number")))
    };
    let total = number(total, "TOTAL")?;
    let per_job = number(per_job, "PER_JOB")?;
    LoadRange::split(source, total, per_job, sink, object, key)
        .into_iter()
        .map(|mut r| {
            r.batch_size = args.batch_size;
            r.job(queue)
                .map(|j| j.max_attempts(args.max_attempts))
                .map_err(|e| CliError::usage(e.to_string()))
        })
        .collect()
}

/// Adds jobs to the queue and prints how many were new (one JSON line).
///
/// # Errors
/// A usage error for a bad config, payload or split, or an unreachable queue.
pub async fn enqueue(args: &EnqueueArgs) -> Result<(), CliError> {
    let config = WorkerConfig::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
    let queue_name = config.queue.name.clone();
    let jobs = match (&args.split, &args.payload) {
        (Some(spec), _) => split_jobs(args, spec, &queue_name)?,
        (None, Some(text)) => {
            let payload: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| CliError::usage(format!("--payload is not JSON: {e}")))?;
            let mut job =
                NewJob::new(&queue_name, &args.kind, payload).max_attempts(args.max_attempts);
            if let Some(k) = &args.dedupe_key {
                job = job.dedupe_key(k);
            }
            vec![job]
        }
        (None, None) => return Err(CliError::usage("give --payload JSON or --split")),
    };
    let queue = config
        .open_queue(&base_of(&args.config))
        .await
        .map_err(|e| CliError::usage(format!("cannot open the job queue: {e}")))?;
    let mut added = 0;
    for job in &jobs {
        if queue
            .enqueue(job)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
            .is_some()
        {
            added += 1;
        }
    }
    queue.store().close().await;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}",
            serde_json::json!({"queue": queue_name, "enqueued": added, "already_queued": jobs.len() - added})
        );
    }
    Ok(())
}
