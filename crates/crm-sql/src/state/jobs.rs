//! A durable job queue and shared rate budgets in the state store, so any
//! number of worker processes on any number of machines share the work of
//! one database.
//!
//! # Jobs
//!
//! A job is a row of `crm_jobs`: a queue, a kind, a JSON payload, a status
//! (`queued`, `running`, `done`, `failed`), attempts, a lease (holder,
//! expiry, last heartbeat), the result or the last error.
//!
//! - [`JobQueue::enqueue`]: an optional dedupe key is unique among
//!   *unfinished* jobs (the `active_key` column holds it while the job is
//!   queued or running and is cleared when it finishes), so enqueueing the
//!   same job twice is a no-op, and the same job can be queued again once
//!   it is done.
//! - [`JobQueue::claim`]: takes the oldest runnable job (queued and due, or
//!   running under an expired lease) and leases it to the caller. On
//!   PostgreSQL this is `SELECT ... FOR UPDATE SKIP LOCKED` and an `UPDATE`
//!   in one transaction: concurrent claimers skip each other's rows instead
//!   of waiting. On MySQL/MariaDB and SQLite it is an atomic conditional
//!   `UPDATE` of a candidate row (`WHERE id = ? AND <still runnable>`): the
//!   loser's update matches no row and it tries the next candidate.
//! - [`JobQueue::heartbeat`] extends the lease, only while the caller still
//!   holds it; [`JobQueue::complete`] and [`JobQueue::fail`] work only for
//!   the holder, so a worker whose lease expired and was re-taken cannot
//!   overwrite the new holder's outcome. A failed attempt is queued again
//!   (after a delay) until `max_attempts`, then the job is `failed`. A job
//!   whose lease expired with no attempts left is marked `failed` by the
//!   next claim.
//! - [`StateTx::complete_job`] completes a job in the same transaction as
//!   the job's own writes to the state store, so its effect and its
//!   completion commit together.
//!
//! Lease times come from the caller's clock (the `_at` variants take it as
//! an argument), as for [`super::lease`]: machines sharing a queue must keep
//! their clocks in sync (NTP) to well within the lease time.
//!
//! # Rate budgets
//!
//! [`JobQueue::take_budget`] spaces the requests of one provider account
//! across every process: a row of `crm_rate_budgets` holds the time of the
//! account's next free request slot, and taking a slot moves it one spacing
//! (`window / per_window`, plus 5 % for network jitter) ahead in a single
//! atomic statement. The answer is how long the caller waits before its
//! slot. Because requests are spaced, at most `per_window` fall in **any**
//! window of `window`, not only in aligned ones. On PostgreSQL the slot is
//! one `UPDATE ... RETURNING` timed by the database server's clock; on
//! SQLite one `UPDATE ... RETURNING` and on MySQL/MariaDB a
//! `SELECT ... FOR UPDATE` and `UPDATE` in a transaction, both timed by the
//! caller's clock.

use std::fmt;
use std::time::Duration;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use chrono::{DateTime, Utc};
use crm_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use super::{Ops, StateStore, StateTx, decode, json_col};
use crate::config::DatabaseKind;
use crate::db::{Arg, Row, RowExt};
use crate::error::SqlError;

/// The id of a job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Wraps an id read from elsewhere.
    pub fn new(id: impl Into<String>) -> Self {
        JobId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn random() -> Self {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        JobId(b.iter().map(|x| format!("{x:02x}")).collect())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker (possibly until `run_after`).
    Queued,
    /// Leased to a worker.
    Running,
    /// Finished.
    Done,
    /// Gave up after `max_attempts`.
    Failed,
}

impl JobStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> std::result::Result<Self, SqlError> {
        match s {
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "done" => Ok(JobStatus::Done),
            "failed" => Ok(JobStatus::Failed),
            other => Err(SqlError::Decode {
                column: "status".to_owned(),
                message: format!("unknown job status {other:?}"),
            }),
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewJob {
    /// The queue (workers claim from one queue).
    pub queue: String,
    /// What to do (`sync`, `load_range`, ...): the worker's dispatch key.
    pub kind: String,
    /// The job's arguments.
    pub payload: serde_json::Value,
    /// Unique among unfinished jobs: a second enqueue while one with the
    /// same key is queued or running is a no-op.
    pub dedupe_key: Option<String>,
    /// Attempts before the job is marked failed (at least 1; default 5).
    pub max_attempts: i64,
    /// Not claimed before this time (default: now).
    pub run_after: Option<DateTime<Utc>>,
}

impl NewJob {
    /// A job of `kind` on `queue` with five attempts and no dedupe key.
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewJob {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            dedupe_key: None,
            max_attempts: 5,
            run_after: None,
        }
    }

    /// Sets the dedupe key.
    #[must_use]
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Sets the attempts allowed (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: i64) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delays the job until `at`.
    #[must_use]
    pub fn run_after(mut self, at: DateTime<Utc>) -> Self {
        self.run_after = Some(at);
        self
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its arguments.
    pub payload: serde_json::Value,
    /// Its state.
    pub status: JobStatus,
    /// Attempts started so far (a claim counts one).
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// Its dedupe key.
    pub dedupe_key: Option<String>,
    /// The worker holding (or that last held) the lease.
    pub lease_holder: Option<String>,
    /// When the lease lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The holder's last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Not claimed before this time.
    pub run_after: DateTime<Utc>,
    /// What the job reported when it completed.
    pub result: Option<serde_json::Value>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Jobs of a queue by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobCounts {
    /// Waiting.
    pub queued: u64,
    /// Leased (including expired leases not yet re-taken).
    pub running: u64,
    /// Finished.
    pub done: u64,
    /// Given up.
    pub failed: u64,
}

impl JobCounts {
    /// Jobs not finished yet.
    pub fn unfinished(&self) -> u64 {
        self.queued + self.running
    }
}

fn job_from(r: &Row) -> std::result::Result<Job, SqlError> {
    let payload_text = r.text("payload")?;
    let payload = serde_json::from_str(&payload_text).map_err(|e| SqlError::Decode {
        column: "payload".to_owned(),
        message: e.to_string(),
    })?;
    Ok(Job {
        id: JobId(r.text("id")?),
        queue: r.text("queue")?,
        kind: r.text("kind")?,
        payload,
        status: JobStatus::parse(&r.text("status")?)?,
        attempts: r.int("attempts")?,
        max_attempts: r.int("max_attempts")?,
        dedupe_key: r.opt_text("dedupe_key"),
        lease_holder: r.opt_text("lease_holder"),
        lease_expires_at: r.opt_time("lease_expires_at"),
        heartbeat_at: r.opt_time("heartbeat_at"),
        run_after: r.time("run_after")?,
        result: json_col(r, "result"),
        last_error: r.opt_text("last_error"),
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

fn later(now: DateTime<Utc>, by: Duration, what: &str) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, format!("{what} out of range"))
                .with_operation("state.jobs")
        })
}

/// Microseconds between budget slots: `window / per_window`, plus 5 % so
/// that network jitter cannot push one request too many into a window.
fn spacing_us(per_window: u32, window: Duration) -> Result<i64> {
    if per_window == 0 || window.is_zero() {
        return Err(Error::invalid_input(
            "a rate budget needs at least one request per non-empty window",
        )
        .with_operation("state.take_budget"));
    }
    let us = window.as_micros().saturating_mul(105) / 100 / u128::from(per_window);
    i64::try_from(us.max(1)).map_err(|_| {
        Error::invalid_input("rate budget window out of range").with_operation("state.take_budget")
    })
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn wait_from(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The runnable condition of a job row (after `queue = ?`): due and queued,
/// or running under an expired lease with attempts left. Takes `now` twice.
const RUNNABLE: &str = "((status = 'queued' AND run_after <= ?) OR \
     (status = 'running' AND lease_expires_at <= ? AND attempts < max_attempts))";

/// How many candidates a non-PostgreSQL claim tries before giving up for
/// now (others took them first).
const CLAIM_CANDIDATES: u32 = 8;

/// The job queue of a state store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct JobQueue {
    store: StateStore,
}

impl JobQueue {
    /// The queue of `store` (whose migrations created the tables).
    pub fn new(store: StateStore) -> Self {
        JobQueue { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Adds a job. `None` when an unfinished job with the same dedupe key
    /// exists (then nothing changed).
    ///
    /// # Errors
    /// Database errors.
    pub async fn enqueue(&self, job: &NewJob) -> Result<Option<JobId>> {
        let id = JobId::random();
        let now = Utc::now();
        let cols = "(id, queue, kind, payload, status, attempts, max_attempts, dedupe_key, \
                    active_key, run_after, created_at, updated_at) \
                    VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?)";
        let sql = match self.store.database_kind() {
            DatabaseKind::MySql => format!("INSERT IGNORE INTO crm_jobs {cols}"),
            _ => format!("INSERT INTO crm_jobs {cols} ON CONFLICT DO NOTHING"),
        };
        let n = self
            .store
            .ops()
            .exec(
                "state.enqueue_job",
                &sql,
                &[
                    Arg::text(id.as_str()),
                    Arg::text(&job.queue),
                    Arg::text(&job.kind),
                    Arg::json_text(&job.payload),
                    Arg::int(job.max_attempts.max(1)),
                    Arg::opt_text(job.dedupe_key.clone()),
                    Arg::opt_text(job.dedupe_key.clone()),
                    Arg::time(job.run_after.unwrap_or(now)),
                    Arg::time(now),
                    Arg::time(now),
                ],
            )
            .await?;
        Ok((n > 0).then_some(id))
    }

    /// Claims the oldest runnable job of `queue` for `holder` for `lease`
    /// from now; `None` when there is none.
    ///
    /// # Errors
    /// Database errors.
    ///
    /// # Cancel safety
    /// A dropped call either claimed a job (its lease lapses after `lease`
    /// and another worker re-takes it) or did not.
    pub async fn claim(&self, queue: &str, holder: &str, lease: Duration) -> Result<Option<Job>> {
        again_on_lock_conflict(|| self.claim_at(queue, holder, lease, Utc::now())).await
    }

    /// [`JobQueue::claim`] with the caller's clock reading `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_at(
        &self,
        queue: &str,
        holder: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        let expires = later(now, lease, "lease time")?;
        self.expire_exhausted(queue, now).await?;
        let take = format!(
            "UPDATE crm_jobs SET status = 'running', attempts = attempts + 1, lease_holder = ?, \
             lease_expires_at = ?, heartbeat_at = ?, updated_at = ? WHERE id = ? AND queue = ? AND {RUNNABLE}"
        );
        let take_args = |id: &str| {
            vec![
                Arg::text(holder),
                Arg::time(expires),
                Arg::time(now),
                Arg::time(now),
                Arg::text(id),
                Arg::text(queue),
                Arg::time(now),
                Arg::time(now),
            ]
        };
        let select = format!(
            "SELECT id FROM crm_jobs WHERE queue = ? AND {RUNNABLE} ORDER BY created_at, id LIMIT {}",
            if self.store.database_kind() == DatabaseKind::Postgres {
                1
            } else {
                CLAIM_CANDIDATES
            }
        );
        let select_args = [Arg::text(queue), Arg::time(now), Arg::time(now)];
        if self.store.database_kind() == DatabaseKind::Postgres {
            let tx = self
                .store
                .pool
                .begin()
                .await
                .map_err(|e| e.into_error("state.claim_job", &self.store.redactor))?;
            let mut tx = StateTx {
                tx,
                store: &self.store,
            };
            let rows = tx
                .ops()
                .fetch(
                    "state.claim_job",
                    &format!("{select} FOR UPDATE SKIP LOCKED"),
                    &select_args,
                )
                .await?;
            let Some(id) = rows.first().map(|r| decode(r.text("id"))).transpose()? else {
                tx.rollback().await?;
                return Ok(None);
            };
            tx.ops()
                .exec("state.claim_job", &take, &take_args(&id))
                .await?;
            let rows = tx
                .ops()
                .fetch(
                    "state.claim_job",
                    "SELECT * FROM crm_jobs WHERE id = ?",
                    &[Arg::text(&id)],
                )
                .await?;
            tx.commit().await?;
            return rows.first().map(|r| decode(job_from(r))).transpose();
        }
        let rows = self
            .store
            .ops()
            .fetch("state.claim_job", &select, &select_args)
            .await?;
        for r in &rows {
            let id = decode(r.text("id"))?;
            let n = self
                .store
                .ops()
                .exec("state.claim_job", &take, &take_args(&id))
                .await?;
            if n > 0 {
                return self.job(&JobId(id)).await;
            }
        }
        Ok(None)
    }

    /// Marks failed the running jobs of `queue` whose lease expired with no
    /// attempts left (their last worker died).
    async fn expire_exhausted(&self, queue: &str, now: DateTime<Utc>) -> Result<u64> {
        self.store
            .ops()
            .exec(
                "state.claim_job",
                "UPDATE crm_jobs SET status = 'failed', active_key = NULL, \
                 last_error = 'the lease expired on the last attempt (the worker stopped)', \
                 updated_at = ? WHERE queue = ? AND status = 'running' AND lease_expires_at <= ? \
                 AND attempts >= max_attempts",
                &[Arg::time(now), Arg::text(queue), Arg::time(now)],
            )
            .await
    }

    /// Extends `holder`'s lease on `id` to `lease` from now. `false` when
    /// `holder` no longer holds it (it finished, or expired and was
    /// re-taken): the caller should stop working on the job.
    ///
    /// # Errors
    /// Database errors.
    pub async fn heartbeat(&self, id: &JobId, holder: &str, lease: Duration) -> Result<bool> {
        again_on_lock_conflict(|| self.heartbeat_at(id, holder, lease, Utc::now())).await
    }

    /// [`JobQueue::heartbeat`] with the caller's clock reading `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn heartbeat_at(
        &self,
        id: &JobId,
        holder: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires = later(now, lease, "lease time")?;
        let n = self
            .store
            .ops()
            .exec(
                "state.heartbeat_job",
                "UPDATE crm_jobs SET lease_expires_at = ?, heartbeat_at = ?, updated_at = ? \
                 WHERE id = ? AND lease_holder = ? AND status = 'running'",
                &[
                    Arg::time(expires),
                    Arg::time(now),
                    Arg::time(now),
                    Arg::text(id.as_str()),
                    Arg::text(holder),
                ],
            )
            .await?;
        if n > 0 {
            return Ok(true);
        }
        // MySQL counts an update that changes nothing as zero rows.
        Ok(self.job(id).await?.is_some_and(|j| {
            j.status == JobStatus::Running && j.lease_holder.as_deref() == Some(holder)
        }))
    }

    /// Marks `id` done with `result`, if `holder` still holds it. `false`
    /// otherwise (nothing changed: another worker owns the job now).
    ///
    /// # Errors
    /// Database errors.
    pub async fn complete(
        &self,
        id: &JobId,
        holder: &str,
        result: &serde_json::Value,
    ) -> Result<bool> {
        again_on_lock_conflict(|| async { self.store.ops().complete_job(id, holder, result).await })
            .await
    }

    /// Records a failed attempt of `id` by `holder`: queued again
    /// `retry_in` from now while attempts are left, `failed` after the last
    /// one or at once when `retry_in` is `None`. Answers the new status;
    /// `None` when `holder` no longer holds the job (nothing changed).
    ///
    /// # Errors
    /// Database errors.
    pub async fn fail(
        &self,
        id: &JobId,
        holder: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Option<JobStatus>> {
        let now = Utc::now();
        let run_after = match retry_in {
            Some(d) => later(now, d, "retry delay")?,
            None => now,
        };
        let give_up = if retry_in.is_some() {
            "attempts >= max_attempts"
        } else {
            "1 = 1"
        };
        // No assignment reads a column assigned before it (MySQL evaluates
        // SET left to right with the new values).
        let sql = format!(
            "UPDATE crm_jobs SET \
             active_key = CASE WHEN {give_up} THEN NULL ELSE active_key END, \
             status = CASE WHEN {give_up} THEN 'failed' ELSE 'queued' END, \
             last_error = ?, run_after = ?, lease_expires_at = NULL, updated_at = ? \
             WHERE id = ? AND lease_holder = ? AND status = 'running'"
        );
        let n = self
            .store
            .ops()
            .exec(
                "state.fail_job",
                &sql,
                &[
                    Arg::text(error),
                    Arg::time(run_after),
                    Arg::time(now),
                    Arg::text(id.as_str()),
                    Arg::text(holder),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(self.job(id).await?.map(|j| j.status))
    }

    /// A job by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn job(&self, id: &JobId) -> Result<Option<Job>> {
        let rows = self
            .store
            .ops()
            .fetch(
                "state.job",
                "SELECT * FROM crm_jobs WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        rows.first().map(|r| decode(job_from(r))).transpose()
    }

    /// Jobs of `queue`, oldest first, of one status or all.
    ///
    /// # Errors
    /// Database errors.
    pub async fn jobs(
        &self,
        queue: &str,
        status: Option<JobStatus>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let (filter, mut args) = (
            status.map_or("", |_| " AND status = ?"),
            vec![Arg::text(queue)],
        );
        if let Some(s) = status {
            args.push(Arg::text(s.as_str()));
        }
        let rows = self
            .store
            .ops()
            .fetch(
                "state.jobs",
                &format!(
                    "SELECT * FROM crm_jobs WHERE queue = ?{filter} ORDER BY created_at, id LIMIT {limit}"
                ),
                &args,
            )
            .await?;
        decode(rows.iter().map(job_from).collect())
    }

    /// How many jobs of `queue` are in each status.
    ///
    /// # Errors
    /// Database errors.
    pub async fn counts(&self, queue: &str) -> Result<JobCounts> {
        let rows = self
            .store
            .ops()
            .fetch(
                "state.job_counts",
                "SELECT status, COUNT(*) AS n FROM crm_jobs WHERE queue = ? GROUP BY status",
                &[Arg::text(queue)],
            )
            .await?;
        let mut c = JobCounts::default();
        for r in &rows {
            let n = u64::try_from(decode(r.int("n"))?).unwrap_or(0);
            match JobStatus::parse(&decode(r.text("status"))?) {
                Ok(JobStatus::Queued) => c.queued = n,
                Ok(JobStatus::Running) => c.running = n,
                Ok(JobStatus::Done) => c.done = n,
                Ok(JobStatus::Failed) => c.failed = n,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(c)
    }

    /// Takes one request slot of `account`'s budget of `per_window`
    /// requests per `window`, shared by every process using this database,
    /// and answers how long to wait before sending the request (zero when
    /// the slot is now). The slot is the caller's whether or not it waits;
    /// a caller that gives up leaves a gap, never a burst.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for `per_window == 0` or an empty
    /// window; database errors.
    pub async fn take_budget(
        &self,
        account: &str,
        per_window: u32,
        window: Duration,
    ) -> Result<Duration> {
        let step = spacing_us(per_window, window)?;
        match self.store.database_kind() {
            DatabaseKind::Postgres => {
                let sql = "WITH c AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT AS us) \
                     UPDATE crm_rate_budgets b SET next_slot_us = GREATEST(b.next_slot_us, c.us) + ?, \
                     updated_at = clock_timestamp() FROM c WHERE b.account = ? \
                     RETURNING (b.next_slot_us - ? - c.us) AS wait_us";
                let args = [Arg::int(step), Arg::text(account), Arg::int(step)];
                for _ in 0..2 {
                    let rows = self
                        .store
                        .ops()
                        .fetch("state.take_budget", sql, &args)
                        .await?;
                    if let Some(r) = rows.first() {
                        return Ok(wait_from(decode(r.int("wait_us"))?));
                    }
                    self.create_budget(account).await?;
                }
                Err(
                    Error::new(ErrorKind::Transient, "the rate budget row vanished")
                        .with_operation("state.take_budget"),
                )
            }
            DatabaseKind::Sqlite => {
                let sql = "UPDATE crm_rate_budgets SET next_slot_us = MAX(next_slot_us, ?) + ?, \
                     updated_at = ? WHERE account = ? RETURNING next_slot_us";
                for _ in 0..2 {
                    let now = Utc::now();
                    let rows = self
                        .store
                        .ops()
                        .fetch(
                            "state.take_budget",
                            sql,
                            &[
                                Arg::int(micros(now)),
                                Arg::int(step),
                                Arg::time(now),
                                Arg::text(account),
                            ],
                        )
                        .await?;
                    if let Some(r) = rows.first() {
                        let next = decode(r.int("next_slot_us"))?;
                        return Ok(wait_from(next - step - micros(Utc::now())));
                    }
                    self.create_budget(account).await?;
                }
                Err(
                    Error::new(ErrorKind::Transient, "the rate budget row vanished")
                        .with_operation("state.take_budget"),
                )
            }
            DatabaseKind::MySql => {
                for _ in 0..2 {
                    let mut tx = self.store.begin().await?;
                    let rows = tx
                        .ops()
                        .fetch(
                            "state.take_budget",
                            "SELECT next_slot_us FROM crm_rate_budgets WHERE account = ? FOR UPDATE",
                            &[Arg::text(account)],
                        )
                        .await?;
                    let Some(r) = rows.first() else {
                        tx.rollback().await?;
                        self.create_budget(account).await?;
                        continue;
                    };
                    let now = Utc::now();
                    let slot = decode(r.int("next_slot_us"))?.max(micros(now));
                    tx.ops()
                        .exec(
                            "state.take_budget",
                            "UPDATE crm_rate_budgets SET next_slot_us = ?, updated_at = ? WHERE account = ?",
                            &[Arg::int(slot + step), Arg::time(now), Arg::text(account)],
                        )
                        .await?;
                    tx.commit().await?;
                    return Ok(wait_from(slot - micros(now)));
                }
                Err(
                    Error::new(ErrorKind::Transient, "the rate budget row vanished")
                        .with_operation("state.take_budget"),
                )
            }
        }
    }

    async fn create_budget(&self, account: &str) -> Result<()> {
        let sql = match self.store.database_kind() {
            DatabaseKind::MySql => {
                "INSERT IGNORE INTO crm_rate_budgets (account, next_slot_us, updated_at) VALUES (?, 0, ?)"
            }
            _ => {
                "INSERT INTO crm_rate_budgets (account, next_slot_us, updated_at) VALUES (?, 0, ?) \
                 ON CONFLICT (account) DO NOTHING"
            }
        };
        self.store
            .ops()
            .exec(
                "state.take_budget",
                sql,
                &[Arg::text(account), Arg::time(Utc::now())],
            )
            .await
            .map(drop)
    }
}

impl Ops<'_, '_> {
    async fn complete_job(
        &mut self,
        id: &JobId,
        holder: &str,
        result: &serde_json::Value,
    ) -> Result<bool> {
        let n = self
            .exec(
                "state.complete_job",
                "UPDATE crm_jobs SET status = 'done', active_key = NULL, result = ?, \
                 lease_expires_at = NULL, updated_at = ? \
                 WHERE id = ? AND lease_holder = ? AND status = 'running'",
                &[
                    Arg::json_text(result),
                    Arg::time(Utc::now()),
                    Arg::text(id.as_str()),
                    Arg::text(holder),
                ],
            )
            .await?;
        Ok(n > 0)
    }
}

impl StateTx<'_> {
    /// Stages the completion of job `id` by `holder`, so it commits with the
    /// job's other writes in this transaction. `false` when `holder` no
    /// longer holds the job: roll back then, the new holder redoes the work.
    ///
    /// # Errors
    /// Database errors.
    pub async fn complete_job(
        &mut self,
        id: &JobId,
        holder: &str,
        result: &serde_json::Value,
    ) -> Result<bool> {
        self.ops().complete_job(id, holder, result).await
    }
}

/// Runs `f` again when the database aborted it for losing a lock race
/// (InnoDB's deadlock 1213 and PostgreSQL's serialization failure or
/// deadlock, SQLSTATE 40001 / 40P01): the aborted statement or transaction
/// changed nothing, and every call wrapped here is conditional on the
/// holder, so running it again is safe. Gives up after five tries.
async fn again_on_lock_conflict<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0u32;
    loop {
        match f().await {
            Err(e)
                if tries < 5
                    && matches!(e.context_value("code"), Some("40001" | "40P01" | "1213")) =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5u64 << tries)).await;
            }
            other => return other,
        }
    }
}
