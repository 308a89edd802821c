//! `crm-sync schedule CONFIG`: runs a job's seed 003 background jobs on
//! their cadences until Ctrl-C: delta sync (every 15 minutes), health check
//! and alert rules (every 5 minutes), conflict detection and the retry of
//! failed records (hourly), log cleanup (daily). The delta sync is leased in
//! the state store, so two processes scheduling the same job never sync its
//! connection at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, job_base_dir, load_job};
use crate::monitor::{Monitor, MonitorConfig};
use crate::schedule::jobs::{self, Seed003Jobs, open_job_store};
use crate::schedule::{Scheduler, TokioClock};

/// Options of `crm-sync schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// The job file.
    pub config: PathBuf,
    /// This process's name in the leases (default `<host>-<pid>`).
    #[arg(long)]
    pub id: Option<String>,
    /// How long a lease is held before it must be renewed, in seconds.
    #[arg(long, default_value = "900")]
    pub lease_secs: u64,
}

/// Runs the scheduler until Ctrl-C.
///
/// # Errors
/// A usage error for a bad job file or an unreachable state store.
pub async fn run(args: &ScheduleArgs) -> Result<(), CliError> {
    let job = load_job(&args.config)?;
    let base = job_base_dir(&args.config);
    let usage = |e: crm_core::Error| CliError::usage(e.to_string());
    let store = open_job_store(&job, &base).await.map_err(usage)?;
    let monitor = Arc::new(Monitor::new(
        store.clone(),
        MonitorConfig::from_job(&job).map_err(usage)?,
    ));
    let holder = args.id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        format!("{host}-{}", std::process::id())
    });
    let mut scheduler = Scheduler::new(Arc::new(TokioClock::new())).with_leases(
        Arc::new(store.clone()),
        holder,
        Duration::from_secs(args.lease_secs.max(60)),
    );
    let jobs = Seed003Jobs::for_job(Arc::new(job), store.clone(), base)
        .await
        .map_err(usage)?;
    jobs.register(&mut scheduler);
    scheduler.add("alerts", jobs::health_check_schedule(), move || {
        let m = Arc::clone(&monitor);
        async move {
            jobs::evaluate_alerts(&m, chrono::Utc::now())
                .await
                .map(drop)
        }
    });
    #[allow(clippy::print_stdout)]
    {
        println!("scheduling; Ctrl-C stops");
    }
    tokio::select! {
        () = scheduler.run() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    store.close().await;
    Ok(())
}
