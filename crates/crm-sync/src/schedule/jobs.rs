//! Seed 003's background jobs and their cadences.
//!
//! | job | cadence | what it does |
//! |---|---|---|
//! | delta sync | every 15 minutes | [`delta_sync`]: an incremental run of a job |
//! | health check | every 5 minutes | [`health_check`]: connects to the source and destination; [`evaluate_alerts`]: seed 001's alert rules |
//! | conflict detection | hourly | [`conflict_detection`]: one open `manual_conflict` review item per flagged record |
//! | retry failed | hourly | [`retry_failed`]: dead letters with fewer than 3 attempts written again through the job's sink |
//! | log cleanup | daily | [`log_cleanup`]: deletes finished sync runs older than 30 days; with `state.retention_days`, [`retention_cleanup`] also purges audit entries, dead letters and processed webhook events |
//!
//! A run failing with a schema mismatch pauses the job's connection
//! ([`pause_on_schema_mismatch`], seed 000); [`Seed003Jobs`] skips the delta
//! sync and the retry of a paused connection until [`resume`]
//! (`crm-sync resume CONFIG`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_core::env::{from_process, interpolate};
use crm_core::{Error, ErrorKind, Result};
use crm_sql::SqlConnector;
use crm_sql::state::{ConnectionId, StateStore};
use secrecy::ExposeSecret;

pub use super::conflicts::{
    CONFLICT_BATCH, ConflictReport, changed_on_both_sides, conflict_detection,
};
pub use super::pause::{
    CONNECTION_OBJECT, PAUSED_ACTION, PIPELINE_PROVIDER, RESUMED_ACTION, Resumed,
    find_job_connection, is_paused, open_job_store, pause_on_schema_mismatch, resume,
};
pub use super::retry::{
    EXHAUSTED_MARK, RETRY_BATCH, RETRY_MAX_ATTEMPTS, RetryReport, RetryTarget, is_exhausted,
    retry_failed, retry_letters,
};
use super::{Clock, JobFn, Schedule, Scheduler};
use crate::config::SyncJob;
use crate::runner::{Overrides, RunError, run_job};
use crate::{Mode, RunReport};

/// Seed 003: delta sync every 15 minutes.
pub const DELTA_SYNC_EVERY: Duration = Duration::from_secs(15 * 60);
/// Seed 003: health check every 5 minutes.
pub const HEALTH_CHECK_CRON: &str = "*/5 * * * *";
/// Seed 003: conflict detection every hour, on the hour.
pub const CONFLICT_DETECTION_CRON: &str = "0 * * * *";
/// Seed 003: retry of failed records every hour, on the hour.
pub const RETRY_FAILED_CRON: &str = "0 * * * *";
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

/// The conflict detection cadence.
pub fn conflict_detection_schedule() -> Schedule {
    cron(CONFLICT_DETECTION_CRON)
}

/// The cadence of the retry of failed records.
pub fn retry_failed_schedule() -> Schedule {
    cron(RETRY_FAILED_CRON)
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

/// Seed 001 data retention: purges sync runs, audit entries, dead letters
/// and processed webhook events older than `days` before `now` (see
/// [`StateStore::purge_before`]); review items are kept, as they hold the
/// decisions people made.
///
/// # Errors
/// [`crate::config::StateSection::retention_days`] of 0, a cutoff out of
/// range, database errors.
pub async fn retention_cleanup(
    store: &StateStore,
    now: DateTime<Utc>,
    days: u32,
) -> Result<crm_sql::state::PurgeReport> {
    if days == 0 {
        return Err(Error::invalid_input("`state.retention_days` is at least 1")
            .with_context("field", "state.retention_days"));
    }
    let cutoff = chrono::TimeDelta::try_days(i64::from(days))
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| Error::invalid_input("`state.retention_days` is out of range"))?;
    store.purge_before(cutoff).await
}

/// Retry of failed records for a pipeline job: opens the job's destination
/// (as a run does, relative SQLite paths from `base`) and runs
/// [`retry_failed`] for its connection `conn` with
/// [`RetryTarget::for_job`].
///
/// # Errors
/// Unset variables in `destination.url`, an unreachable destination,
/// state-store errors.
pub async fn retry_failed_job(
    job: &SyncJob,
    base: &std::path::Path,
    store: &StateStore,
    conn: &ConnectionId,
) -> Result<RetryReport> {
    let url = interpolate(
        "destination.url",
        job.destination.url.expose_secret(),
        from_process,
    )?;
    let url = crate::runner::with_create_mode(crate::runner::resolve_sqlite_path(&url, base));
    let sink = SqlConnector::connect_url(&url).await?;
    let report = retry_failed(store, conn, &sink, &RetryTarget::for_job(job)).await;
    sink.close().await;
    report
}

/// Scheduler name of the delta sync (seed 003's `?job=` names).
pub const DELTA_SYNC: &str = "delta-sync";
/// Scheduler name of the health check.
pub const HEALTH_CHECK: &str = "health-check";
/// Scheduler name of conflict detection.
pub const CONFLICT_DETECTION: &str = "detect-conflicts";
/// Scheduler name of the retry of failed records.
pub const RETRY_FAILED: &str = "retry-failed";
/// Scheduler name of the log cleanup.
pub const LOG_CLEANUP: &str = "cleanup";

/// Seed 003's five background jobs of one pipeline job, ready to register
/// on a [`Scheduler`]:
///
/// | name | cadence | runs |
/// |---|---|---|
/// | [`DELTA_SYNC`] | [`delta_sync_schedule`] | [`delta_sync`], leased on the job's name; skipped while the connection is paused; a schema mismatch pauses it |
/// | [`HEALTH_CHECK`] | [`health_check_schedule`] | [`health_check`] |
/// | [`CONFLICT_DETECTION`] | [`conflict_detection_schedule`] | [`conflict_detection`] for the connection |
/// | [`RETRY_FAILED`] | [`retry_failed_schedule`] | [`retry_failed_job`]; skipped while the connection is paused |
/// | [`LOG_CLEANUP`] | [`log_cleanup_schedule`] | [`log_cleanup`] with [`LOG_RETENTION`] |
///
/// The delta sync, health check and retry can be replaced (a simulator's
/// overrides, fakes in tests) with the `with_*` methods.
pub struct Seed003Jobs {
    store: StateStore,
    connection: ConnectionId,
    job: String,
    delta: JobFn,
    health: JobFn,
    retry: JobFn,
    retention_days: Option<u32>,
}

impl std::fmt::Debug for Seed003Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed003Jobs")
            .field("job", &self.job)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

fn job_fn<F, Fut>(f: F) -> JobFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

impl Seed003Jobs {
    /// The jobs of `job` on its connection in `store` (created when
    /// missing), relative paths taken from `base`. The store seals the
    /// job's personal fields ([`SyncJob::pii_fields`]) as well as its own.
    ///
    /// # Errors
    /// State-store errors.
    pub async fn for_job(job: Arc<SyncJob>, store: StateStore, base: PathBuf) -> Result<Self> {
        let store = crate::pii::seal_in(store, &job.pii_fields());
        let connection = store
            .ensure_connection(PIPELINE_PROVIDER, &job.name)
            .await?;
        let overrides = {
            let base = base.clone();
            move || Overrides {
                base_dir: Some(base.clone()),
                ..Overrides::default()
            }
        };
        let (j, o) = (Arc::clone(&job), overrides.clone());
        let delta = job_fn(move || {
            let (j, o) = (Arc::clone(&j), o());
            async move { delta_sync(&j, o).await.map(drop) }
        });
        let (j, o) = (Arc::clone(&job), overrides);
        let health = job_fn(move || {
            let (j, o) = (Arc::clone(&j), o());
            async move { health_check(&j, o).await.map(drop) }
        });
        let (j, st, c) = (Arc::clone(&job), store.clone(), connection.clone());
        let retry = job_fn(move || {
            let (j, st, c, b) = (Arc::clone(&j), st.clone(), c.clone(), base.clone());
            async move { retry_failed_job(&j, &b, &st, &c).await.map(drop) }
        });
        Ok(Seed003Jobs {
            store,
            connection,
            job: job.name.clone(),
            delta,
            health,
            retry,
            retention_days: job.state.retention_days,
        })
    }

    /// Jobs for connection `connection` of job `job` that do nothing for
    /// the delta sync, health check and retry until replaced with the
    /// `with_*` methods; conflict detection and log cleanup use `store`.
    pub fn new(store: StateStore, connection: ConnectionId, job: impl Into<String>) -> Self {
        let noop = || job_fn(|| std::future::ready(Ok(())));
        Seed003Jobs {
            store,
            connection,
            job: job.into(),
            delta: noop(),
            health: noop(),
            retry: noop(),
            retention_days: None,
        }
    }

    /// Purges runs, audit entries, dead letters and processed webhook
    /// events older than `days` in the daily cleanup (seed 001 data
    /// retention); `None` keeps seed 003's cleanup of runs only.
    #[must_use]
    pub fn with_retention_days(mut self, days: Option<u32>) -> Self {
        self.retention_days = days;
        self
    }

    /// Replaces the delta sync run.
    #[must_use]
    pub fn with_delta<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.delta = job_fn(f);
        self
    }

    /// Replaces the health check run.
    #[must_use]
    pub fn with_health<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.health = job_fn(f);
        self
    }

    /// Replaces the retry of failed records.
    #[must_use]
    pub fn with_retry<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.retry = job_fn(f);
        self
    }

    /// The connection the jobs run for.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// Registers the five jobs on `scheduler` under the names in the table
    /// above.
    pub fn register<C: Clock>(self, scheduler: &mut Scheduler<C>) {
        let Seed003Jobs {
            store,
            connection,
            job,
            delta,
            health,
            retry,
            retention_days,
        } = self;
        let (st, c, name) = (store.clone(), connection.clone(), job.clone());
        scheduler.add_leased(DELTA_SYNC, delta_sync_schedule(), job.clone(), move || {
            let (st, c, name, run) = (st.clone(), c.clone(), name.clone(), Arc::clone(&delta));
            async move {
                if is_paused(&st, &c).await? {
                    return Ok(());
                }
                let result = run().await;
                if let Err(e) = &result {
                    // The runner pauses a job's own runs already; this
                    // covers replaced runs, and is a no-op when paused.
                    pause_on_schema_mismatch(&st, &c, &name, e).await?;
                }
                result
            }
        });
        scheduler.add(HEALTH_CHECK, health_check_schedule(), move || health());
        let (st, c) = (store.clone(), connection.clone());
        scheduler.add(
            CONFLICT_DETECTION,
            conflict_detection_schedule(),
            move || {
                let (st, c) = (st.clone(), c.clone());
                async move { conflict_detection(&st, &c, CONFLICT_BATCH).await.map(drop) }
            },
        );
        let (st, c) = (store.clone(), connection);
        scheduler.add_leased(
            RETRY_FAILED,
            retry_failed_schedule(),
            format!("{job}/{RETRY_FAILED}"),
            move || {
                let (st, c, run) = (st.clone(), c.clone(), Arc::clone(&retry));
                async move {
                    if is_paused(&st, &c).await? {
                        return Ok(());
                    }
                    run().await
                }
            },
        );
        let clock = Arc::clone(scheduler.clock());
        scheduler.add(LOG_CLEANUP, log_cleanup_schedule(), move || {
            let (st, now) = (store.clone(), clock.now());
            async move {
                log_cleanup(&st, now, LOG_RETENTION).await?;
                if let Some(days) = retention_days {
                    retention_cleanup(&st, now, days).await?;
                }
                Ok(())
            }
        });
    }
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
        let hourly = Schedule::parse("0 * * * *").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conflict_detection_schedule(), hourly);
        assert_eq!(retry_failed_schedule(), hourly);
    }
}
