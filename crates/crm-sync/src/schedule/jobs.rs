//! Seed 003's background jobs and their cadences.
//!
//! | job | cadence | what it does |
//! |---|---|---|
//! | delta sync | every 15 minutes | [`delta_sync`]: an incremental run of a job |
//! | health check | every 5 minutes | [`health_check`]: connects to the source and destination; [`evaluate_alerts`]: seed 001's alert rules |
//! | log cleanup | daily | [`log_cleanup`]: deletes finished sync runs older than 30 days |
//!
//! Conflict detection and the hourly retry of failed records are not here
//! yet: the first needs the two-sided sync of seed 002, the second a way to
//! write a dead letter's record back through a job's sink.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_core::{Error, ErrorKind, Result};
use crm_sql::state::StateStore;

use super::Schedule;
use crate::config::SyncJob;
use crate::runner::{Overrides, RunError, run_job};
use crate::{Mode, RunReport};

/// Seed 003: delta sync every 15 minutes.
pub const DELTA_SYNC_EVERY: Duration = Duration::from_secs(15 * 60);
/// Seed 003: health check every 5 minutes.
pub const HEALTH_CHECK_CRON: &str = "*/5 * * * *";
/// Seed 003: log cleanup daily, at midnight UTC.
pub const LOG_CLEANUP_CRON: &str = "0 0 * * *";
/// Seed 003: sync logs are kept 30 days.
pub const LOG_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// The delta sync cadence.
pub fn delta_sync_schedule() -> Schedule {
    Schedule::every(DELTA_SYNC_EVERY)
}

/// The health check cadence.
pub fn health_check_schedule() -> Schedule {
    cron(HEALTH_CHECK_CRON)
}

/// The log cleanup cadence.
pub fn log_cleanup_schedule() -> Schedule {
    cron(LOG_CLEANUP_CRON)
}

fn cron(expr: &str) -> Schedule {
    match Schedule::parse(expr) {
        Ok(s) => s,
        // The expressions are this module's constants, covered by its tests.
        Err(e) => unreachable!("{e}"),
    }
}

/// A job's own schedule (`crm.sync.schedule`), or the delta sync cadence
/// when it has none.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when the job's expression does not parse.
pub fn job_schedule(job: &SyncJob) -> Result<Schedule> {
    match job.crm.sync.schedule.as_deref() {
        Some(expr) => Schedule::parse(expr).map_err(|e| Error::invalid_input(e.to_string())),
        None => Ok(delta_sync_schedule()),
    }
}

/// Delta sync: an incremental run of `job` from its committed checkpoint.
///
/// # Errors
/// The run's error: setup problems as [`ErrorKind::InvalidInput`]-like
/// errors from the runner, a run stopped part-way as its cause.
///
/// # Cancel safety
/// As [`run_job`]: stored pages and their checkpoints stay.
pub async fn delta_sync(job: &SyncJob, overrides: Overrides) -> Result<RunReport> {
    run_job(job, Mode::Incremental, overrides, None)
        .await
        .map_err(|e| match e {
            RunError::Setup(e) | RunError::Run(e) => e,
        })
}

/// Health check: connects to the job's source and destination and reads
/// the source's schema. Returns what each part reported.
///
/// # Errors
/// [`ErrorKind::Transient`] listing every part that failed.
pub async fn health_check(job: &SyncJob, overrides: Overrides) -> Result<Vec<String>> {
    let lines = crate::runner::check_job(job, overrides).await;
    let failed: Vec<String> = lines
        .iter()
        .filter_map(|l| l.outcome.as_ref().err().map(|e| format!("{}: {e}", l.part)))
        .collect();
    if failed.is_empty() {
        Ok(lines
            .into_iter()
            .filter_map(|l| l.outcome.ok().map(|o| format!("{}: {o}", l.part)))
            .collect())
    } else {
        Err(Error::new(ErrorKind::Transient, failed.join("; ")).with_operation("health_check"))
    }
}

/// Health check, monitoring part (same cadence): evaluates the alert
/// rules of `monitor` at `now` and delivers what changed. A webhook that
/// fails does not fail the job; see [`crate::monitor::Monitor::evaluate`].
///
/// # Errors
/// Database errors reading the runs.
pub async fn evaluate_alerts(
    monitor: &crate::monitor::Monitor,
    now: DateTime<Utc>,
) -> Result<crate::monitor::EvaluationReport> {
    monitor.evaluate(now).await
}

/// Log cleanup: deletes finished sync runs started more than `retention`
/// before `now`; returns how many were deleted. Runs still going are kept.
///
/// # Errors
/// Database errors.
pub async fn log_cleanup(
    store: &StateStore,
    now: DateTime<Utc>,
    retention: chrono::TimeDelta,
) -> Result<u64> {
    let before = now
        .checked_sub_signed(retention)
        .ok_or_else(|| Error::invalid_input("log retention out of range"))?;
    store.delete_runs_before(before).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_003_cadences() {
        assert_eq!(
            health_check_schedule(),
            Schedule::parse("*/5 * * * *").unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            log_cleanup_schedule(),
            Schedule::parse("0 0 * * *").unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            delta_sync_schedule(),
            Schedule::every(Duration::from_secs(900))
        );
    }
}
