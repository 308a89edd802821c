//! `crm-sync worker`: processes that take jobs from the durable job table
//! of one database ([`crm_sql::state::jobs`]) and run them. Throughput grows
//! by starting more workers, on more machines, against the same PostgreSQL.
//!
//! A [`Worker`] runs `concurrency` loops; each claims a job under a lease,
//! heartbeats it in the background (every third of the lease) while the
//! job runs, and completes it, or records the failure (the job is queued
//! again until its `max_attempts`). A job whose heartbeat finds the lease
//! lost (it lapsed and another worker took the job) is dropped at once.
//!
//! A worker killed mid-job loses nothing: its lease lapses and another
//! worker re-runs the job. It duplicates nothing because jobs are
//! idempotent by construction: a job writes through a [`Sink`] with
//! upserts keyed by an external id ([`WriteOp::Upsert`]), so a re-run
//! rewrites the same records. A job that writes only to the state store can
//! commit its completion with its writes
//! ([`crm_sql::state::StateTx::complete_job`]).
//!
//! # Job kinds
//!
//! - [`KIND_LOAD_RANGE`] ([`LoadRange`]): records `[from, to)` of a
//!   source (a CSV file: data rows, header excluded) upserted into a sink
//!   (HubSpot or a SQL table) in batches, keyed by `key`.
//! - [`KIND_SYNC`] ([`SyncPayload`]): one run of a job file's
//!   [`crate::config::SyncJob`] pipeline ([`crate::runner::run_job`]);
//!   its checkpoints commit with its pages, so a re-run resumes.
//!
//! # Shared rate limit
//!
//! crm-http's limiter has no hook for an external budget, so the gate wraps
//! the connectors a job uses: [`GatedSink`] takes one slot of the
//! connection's shared budget ([`crm_sql::state::jobs::JobQueue::take_budget`],
//! keyed by the provider account) before each `write` call, [`GatedSource`]
//! before each page it reads. The HubSpot sink of a worker is built
//! without unchanged detection, so one `write` call is one HTTP request
//! (plus retries of failed requests). A `sync` job runs the job file's
//! pipeline with its own connectors and per-process limits; the shared
//! budget applies to `load_range` jobs.
//!
//! # Configuration
//!
//! ```yaml
//! queue:
//!   url: "${CRM_QUEUE_URL}"      # the shared PostgreSQL
//!   name: default                # the queue claimed from
//! connections:
//!   hubspot:
//!     kind: hubspot
//!     base_url: "${HUBSPOT_BASE_URL}"   # optional
//!     token: "${HUBSPOT_TOKEN}"
//!     account: "hubspot:portal-1234"    # the budget key; default hubspot:<name>
//!     rate_limit: { requests: 100, interval_ms: 10000 }
//!   contacts:
//!     kind: csv
//!     path: contacts.csv
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crm_core::env::{from_process, interpolate};
use crm_core::{
    Capabilities, Connector, Error, ErrorKind, ObjectSchema, Page, ReadRequest, Record, Sink,
    Source, Value, WriteBatch, WriteOp, WriteOutcome,
};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_sql::SqlConnector;
use crm_sql::state::jobs::{Job, JobQueue, JobStatus, NewJob};
use crm_sql::state::{CredentialKey, StateStore};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use indexmap::IndexMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::config::{ConfigError, SyncJob, from_yaml_at};
use crate::pipeline::Mode;
use crate::runner::{Overrides, resolve_sqlite_path, run_job, with_create_mode};

/// The kind of a [`SyncPayload`] job.
pub const KIND_SYNC: &str = "sync";
/// The kind of a [`LoadRange`] job.
pub const KIND_LOAD_RANGE: &str = "load_range";

/// A worker's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Where the jobs are.
    pub queue: QueueSection,
    /// The connections jobs name, by name.
    #[serde(default)]
    pub connections: IndexMap<String, ConnectionConfig>,
}

/// `queue:`: the job table's database and the queue name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueSection {
    /// The database URL (`${NAME}` resolved from the environment).
    pub url: SecretString,
    /// The queue claimed from (default `default`).
    #[serde(default = "default_queue")]
    pub name: String,
    /// The environment variable holding the state store's key (base64);
    /// the queue stores no secrets, so a process key is used without it.
    #[serde(default)]
    pub key_env: Option<String>,
}

fn default_queue() -> String {
    "default".to_owned()
}

/// A shared budget: at most `requests` per `interval_ms` for the account,
/// across every worker.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedRateLimit {
    /// Requests per interval.
    pub requests: u32,
    /// The interval in milliseconds.
    pub interval_ms: u64,
}

/// One connection a job may name.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ConnectionConfig {
    /// A HubSpot account (a sink).
    Hubspot {
        /// The API base URL (a simulator's, a proxy's); HubSpot's by default.
        #[serde(default)]
        base_url: Option<String>,
        /// The private-app token (`${NAME}` resolved from the environment).
        token: SecretString,
        /// The key of the shared budget (default `hubspot:<connection name>`).
        #[serde(default)]
        account: Option<String>,
        /// The account's budget, shared by every worker.
        #[serde(default)]
        rate_limit: Option<SharedRateLimit>,
    },
    /// A SQL database (a sink: tables named by the job's object).
    Sql {
        /// The database URL (`${NAME}` resolved from the environment).
        url: SecretString,
        /// The key of the shared budget (default `sql:<connection name>`).
        #[serde(default)]
        account: Option<String>,
        /// The budget, shared by every worker.
        #[serde(default)]
        rate_limit: Option<SharedRateLimit>,
    },
    /// A CSV file with a header row (a source).
    Csv {
        /// The file, relative to the config file's folder.
        path: PathBuf,
    },
}

impl WorkerConfig {
    /// Parses a worker config.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the YAML path and line.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        from_yaml_at(text, origin)
    }

    /// Reads and parses a worker config file.
    ///
    /// # Errors
    /// A [`ConfigError`] for an unreadable or invalid file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            path: String::new(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        WorkerConfig::from_yaml(&text, &origin)
    }

    /// Opens the job queue of `queue.url` (migrating the state store).
    /// Relative SQLite paths are taken from `base`.
    ///
    /// # Errors
    /// An unset variable, a bad key, an unreachable database.
    pub async fn open_queue(&self, base: &Path) -> Result<JobQueue, Error> {
        let url = interpolate("queue.url", self.queue.url.expose_secret(), from_process)?;
        let url = with_create_mode(resolve_sqlite_path(&url, base));
        let key = match self
            .queue
            .key_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
        {
            Some(text) => CredentialKey::from_base64(&text).map_err(Error::from)?,
            None => CredentialKey::generate().0,
        };
        Ok(JobQueue::new(StateStore::open_url(&url, key).await?))
    }
}

/// The payload of a [`KIND_LOAD_RANGE`] job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoadRange {
    /// The source connection (a `csv` one).
    pub source: String,
    /// The first record (0-based, inclusive).
    pub from: u64,
    /// The end (exclusive).
    pub to: u64,
    /// The sink connection.
    pub sink: String,
    /// The object written (`contacts`, a table).
    pub object: String,
    /// The external id the upserts are keyed by (`email`).
    pub key: String,
    /// Records per write call (default: the sink's maximum).
    #[serde(default)]
    pub batch_size: Option<usize>,
}

impl LoadRange {
    /// Records `[from, to)` of `source` upserted into `sink`'s `object` by `key`.
    pub fn new(
        source: impl Into<String>,
        range: std::ops::Range<u64>,
        sink: impl Into<String>,
        object: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        LoadRange {
            source: source.into(),
            from: range.start,
            to: range.end,
            sink: sink.into(),
            object: object.into(),
            key: key.into(),
            batch_size: None,
        }
    }

    /// Sets the records per write call.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.max(1));
        self
    }

    /// The job for `queue`, deduplicated by its source, sink and range.
    ///
    /// # Errors
    /// Never in practice (the payload is plain data).
    pub fn job(&self, queue: &str) -> Result<NewJob, Error> {
        let payload = serde_json::to_value(self)
            .map_err(|e| Error::invalid_input(format!("load_range payload: {e}")))?;
        Ok(
            NewJob::new(queue, KIND_LOAD_RANGE, payload).dedupe_key(format!(
                "load_range:{}:{}:{}:{}-{}",
                self.source, self.sink, self.object, self.from, self.to
            )),
        )
    }

    /// A bulk load of records `[0, total)` split into jobs of `per_job`.
    pub fn split(
        source: &str,
        total: u64,
        per_job: u64,
        sink: &str,
        object: &str,
        key: &str,
    ) -> Vec<LoadRange> {
        let step = per_job.max(1);
        (0..total.div_ceil(step))
            .map(|i| {
                let from = i * step;
                LoadRange::new(source, from..(from + step).min(total), sink, object, key)
            })
            .collect()
    }
}

/// The payload of a [`KIND_SYNC`] job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncPayload {
    /// The job file, relative to the worker config's folder.
    pub job: PathBuf,
    /// A full run instead of an incremental one.
    #[serde(default)]
    pub full: bool,
}

impl SyncPayload {
    /// An incremental run of the job file `job`.
    pub fn new(job: impl Into<PathBuf>) -> Self {
        SyncPayload {
            job: job.into(),
            full: false,
        }
    }

    /// The job for `queue`, deduplicated by the job file (one queued run
    /// of a connection at a time).
    ///
    /// # Errors
    /// Never in practice (the payload is plain data).
    pub fn job(&self, queue: &str) -> Result<NewJob, Error> {
        let payload = serde_json::to_value(self)
            .map_err(|e| Error::invalid_input(format!("sync payload: {e}")))?;
        Ok(NewJob::new(queue, KIND_SYNC, payload)
            .dedupe_key(format!("sync:{}", self.job.display())))
    }
}

/// Takes a slot of a shared budget before each provider request.
#[derive(Clone, Debug)]
pub struct RateGate {
    queue: JobQueue,
    account: String,
    limit: SharedRateLimit,
}

impl RateGate {
    /// A gate on `account`'s budget `limit` kept in `queue`'s database.
    pub fn new(queue: JobQueue, account: impl Into<String>, limit: SharedRateLimit) -> Self {
        RateGate {
            queue,
            account: account.into(),
            limit,
        }
    }

    /// Waits for the next slot.
    ///
    /// # Errors
    /// Database errors; an invalid budget.
    pub async fn take(&self) -> crm_core::Result<()> {
        let wait = self
            .queue
            .take_budget(
                &self.account,
                self.limit.requests,
                Duration::from_millis(self.limit.interval_ms),
            )
            .await?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// Implements [`Connector`] for a gated wrapper (a struct with `inner` and
/// `gate: Option<RateGate>`): calls that reach the remote take a slot first.
macro_rules! gated_connector {
    ($gated:ty) => {
        #[async_trait]
        impl Connector for $gated {
            fn kind(&self) -> &'static str {
                self.inner.kind()
            }
            fn capabilities(&self) -> Capabilities {
                self.inner.capabilities()
            }
            async fn check(&self) -> crm_core::Result<()> {
                if let Some(g) = &self.gate {
                    g.take().await?;
                }
                self.inner.check().await
            }
            async fn describe(&self, object: &str) -> crm_core::Result<ObjectSchema> {
                if let Some(g) = &self.gate {
                    g.take().await?;
                }
                self.inner.describe(object).await
            }
        }
    };
}

/// A [`Sink`] that takes a [`RateGate`] slot before each write call.
pub struct GatedSink {
    inner: Arc<dyn Sink>,
    gate: Option<RateGate>,
}

impl GatedSink {
    /// Gates `inner` (no gate: passes through).
    pub fn new(inner: Arc<dyn Sink>, gate: Option<RateGate>) -> Self {
        GatedSink { inner, gate }
    }
}

gated_connector!(GatedSink);

#[async_trait]
impl Sink for GatedSink {
    fn max_batch(&self, object: &str) -> usize {
        self.inner.max_batch(object)
    }
    async fn write(&self, object: &str, batch: WriteBatch) -> crm_core::Result<Vec<WriteOutcome>> {
        if let Some(g) = &self.gate {
            g.take().await?;
        }
        self.inner.write(object, batch).await
    }
}

/// A [`Source`] that takes a [`RateGate`] slot before each page it reads.
pub struct GatedSource {
    inner: Arc<dyn Source>,
    gate: Option<RateGate>,
}

impl GatedSource {
    /// Gates `inner` (no gate: passes through).
    pub fn new(inner: Arc<dyn Source>, gate: Option<RateGate>) -> Self {
        GatedSource { inner, gate }
    }
}

gated_connector!(GatedSource);

impl Source for GatedSource {
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, crm_core::Result<Page>> {
        let pages = self.inner.read(req);
        let gate = self.gate.clone();
        futures_util::stream::unfold((pages, gate, false), |(mut pages, gate, done)| async move {
            if done {
                return None;
            }
            if let Some(g) = &gate
                && let Err(e) = g.take().await
            {
                return Some((Err(e), (pages, gate, true)));
            }
            let item = pages.next().await?;
            Some((item, (pages, gate, false)))
        })
        .boxed()
    }
}

/// How a worker runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The worker's name in leases (unique per process; default
    /// `<host>-<pid>`).
    pub id: String,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a claimed job stays leased without a heartbeat.
    pub lease: Duration,
    /// How long an idle loop waits before looking for work again.
    pub poll: Duration,
    /// Stop once the queue has no queued or running jobs.
    pub exit_when_idle: bool,
    /// The delay before a failed attempt is retried (times the attempt).
    pub retry_delay: Duration,
}

impl WorkerOptions {
    /// Defaults: one job at a time, 30 s leases, 500 ms polling.
    pub fn new(id: impl Into<String>) -> Self {
        WorkerOptions {
            id: id.into(),
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            exit_when_idle: false,
            retry_delay: Duration::from_secs(1),
        }
    }

    /// Sets the concurrency (at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the lease time (at least one second).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// Sets the idle polling interval.
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Stops once nothing is left to do.
    #[must_use]
    pub fn exit_when_idle(mut self, on: bool) -> Self {
        self.exit_when_idle = on;
        self
    }

    /// Sets the retry delay.
    #[must_use]
    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }
}

/// A default worker name: the host name (`HOSTNAME`) and the process id.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What became of one claimed job.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// Completed, with its result.
    Done(serde_json::Value),
    /// Failed; the job is now in `status` (queued again or failed).
    Failed {
        /// The error.
        error: String,
        /// The job's status after the failure.
        status: JobStatus,
    },
    /// The lease was lost (another worker took the job): nothing recorded.
    LeaseLost,
}

/// What a worker did until it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs completed.
    pub done: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Jobs dropped because the lease was lost.
    pub lost: u64,
}

/// A worker process's job loop.
pub struct Worker {
    queue: JobQueue,
    config: WorkerConfig,
    base: PathBuf,
    options: WorkerOptions,
    sinks: Mutex<HashMap<String, Arc<dyn Sink>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.options.id)
            .field("queue", &self.config.queue.name)
            .finish_non_exhaustive()
    }
}

fn job_error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message.into()).with_operation("worker")
}

impl Worker {
    /// A worker for `config` (relative paths from `base`), opening its queue.
    ///
    /// # Errors
    /// As [`WorkerConfig::open_queue`].
    pub async fn open(
        config: WorkerConfig,
        base: impl Into<PathBuf>,
        options: WorkerOptions,
    ) -> Result<Worker, Error> {
        let base = base.into();
        let queue = config.open_queue(&base).await?;
        Ok(Worker {
            queue,
            config,
            base,
            options,
            sinks: Mutex::new(HashMap::new()),
        })
    }

    /// The job queue.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Runs `concurrency` job loops until `shutdown` resolves (jobs in
    /// progress then finish) or, with `exit_when_idle`, until no job is
    /// left.
    ///
    /// # Errors
    /// Only when the queue cannot be read at all for longer than a lease;
    /// job failures are recorded on the jobs.
    pub async fn run_until(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<WorkerReport, Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let loops = futures_util::future::join_all(
            (0..self.options.concurrency).map(|slot| self.job_loop(slot, stop_rx.clone())),
        );
        tokio::pin!(loops);
        tokio::pin!(shutdown);
        let results = tokio::select! {
            r = &mut loops => r,
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                loops.await
            }
        };
        let mut report = WorkerReport::default();
        for r in results {
            let r = r?;
            report.done += r.done;
            report.failed += r.failed;
            report.lost += r.lost;
        }
        Ok(report)
    }

    async fn job_loop(
        &self,
        slot: usize,
        mut stop: watch::Receiver<bool>,
    ) -> Result<WorkerReport, Error> {
        let mut report = WorkerReport::default();
        let mut failing_since: Option<tokio::time::Instant> = None;
        while !*stop.borrow() {
            match self.run_next(slot).await {
                Ok(Some(outcome)) => {
                    failing_since = None;
                    match outcome {
                        JobOutcome::Done(_) => report.done += 1,
                        JobOutcome::Failed { .. } => report.failed += 1,
                        JobOutcome::LeaseLost => report.lost += 1,
                    }
                    continue;
                }
                Ok(None) => {
                    failing_since = None;
                    if self.options.exit_when_idle
                        && self
                            .queue
                            .counts(&self.config.queue.name)
                            .await?
                            .unfinished()
                            == 0
                    {
                        break;
                    }
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > self.options.lease {
                        return Err(e);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.options.poll) => {}
                _ = stop.changed() => {}
            }
        }
        Ok(report)
    }

    fn holder(&self, slot: usize) -> String {
        format!("{}:{slot}", self.options.id)
    }

    /// Claims one job as loop `slot` and runs it; `None` when no job is
    /// runnable now.
    ///
    /// # Errors
    /// Database errors of the queue (claim, complete, fail).
    pub async fn run_next(&self, slot: usize) -> Result<Option<JobOutcome>, Error> {
        let holder = self.holder(slot);
        let Some(job) = self
            .queue
            .claim(&self.config.queue.name, &holder, self.options.lease)
            .await?
        else {
            return Ok(None);
        };
        let run = self.dispatch(&job);
        let beat = self.heartbeat(&job, &holder);
        let outcome = tokio::select! {
            r = run => r,
            () = beat => return Ok(Some(JobOutcome::LeaseLost)),
        };
        match outcome {
            Ok(result) => {
                if self.queue.complete(&job.id, &holder, &result).await? {
                    Ok(Some(JobOutcome::Done(result)))
                } else {
                    Ok(Some(JobOutcome::LeaseLost))
                }
            }
            Err(e) => {
                let retry = e.is_retryable().then(|| {
                    self.options
                        .retry_delay
                        .saturating_mul(u32::try_from(job.attempts.max(1)).unwrap_or(u32::MAX))
                });
                let error = e.to_string();
                match self.queue.fail(&job.id, &holder, &error, retry).await? {
                    Some(status) => Ok(Some(JobOutcome::Failed { error, status })),
                    None => Ok(Some(JobOutcome::LeaseLost)),
                }
            }
        }
    }

    /// Heartbeats `job` every third of the lease; returns when the lease is
    /// lost (or cannot be renewed for a whole lease time).
    async fn heartbeat(&self, job: &Job, holder: &str) {
        let every = self.options.lease / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self
                .queue
                .heartbeat(&job.id, holder, self.options.lease)
                .await
            {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(_) if last_ok.elapsed() >= self.options.lease => return,
                Err(_) => {}
            }
        }
    }

    async fn dispatch(&self, job: &Job) -> Result<serde_json::Value, Error> {
        match job.kind.as_str() {
            KIND_LOAD_RANGE => {
                let p: LoadRange = serde_json::from_value(job.payload.clone()).map_err(|e| {
                    job_error(
                        ErrorKind::InvalidInput,
                        format!("bad load_range payload: {e}"),
                    )
                })?;
                self.load_range(&p).await
            }
            KIND_SYNC => {
                let p: SyncPayload = serde_json::from_value(job.payload.clone()).map_err(|e| {
                    job_error(ErrorKind::InvalidInput, format!("bad sync payload: {e}"))
                })?;
                self.sync(&p).await
            }
            other => Err(job_error(
                ErrorKind::InvalidInput,
                format!("unknown job kind {other:?} (known: sync, load_range)"),
            )),
        }
    }

    fn connection(&self, name: &str) -> Result<&ConnectionConfig, Error> {
        self.config.connections.get(name).ok_or_else(|| {
            job_error(
                ErrorKind::InvalidInput,
                format!("the worker config has no connection {name:?}"),
            )
        })
    }

    fn gate(&self, name: &str) -> Option<RateGate> {
        let (account, limit, prefix) = match self.config.connections.get(name)? {
            ConnectionConfig::Hubspot {
                account,
                rate_limit,
                ..
            } => (account.clone(), (*rate_limit)?, "hubspot"),
            ConnectionConfig::Sql {
                account,
                rate_limit,
                ..
            } => (account.clone(), (*rate_limit)?, "sql"),
            ConnectionConfig::Csv { .. } => return None,
        };
        let account = account.unwrap_or_else(|| format!("{prefix}:{name}"));
        Some(RateGate::new(self.queue.clone(), account, limit))
    }

    /// The sink `name`, opened once per worker.
    async fn sink(&self, name: &str) -> Result<GatedSink, Error> {
        let mut sinks = self.sinks.lock().await;
        if let Some(s) = sinks.get(name) {
            return Ok(GatedSink::new(s.clone(), self.gate(name)));
        }
        let sink: Arc<dyn Sink> = match self.connection(name)? {
            ConnectionConfig::Hubspot {
                base_url,
                token,
                rate_limit,
                ..
            } => {
                let token = interpolate(
                    &format!("connections.{name}.token"),
                    token.expose_secret(),
                    from_process,
                )?;
                let mut builder = HubSpotConfig::private_app(SecretString::from(token));
                if let Some(url) = base_url {
                    builder = builder.base_url(interpolate(
                        &format!("connections.{name}.base_url"),
                        url,
                        from_process,
                    )?);
                }
                if let Some(l) = rate_limit {
                    // The shared budget binds; the process's own limiter
                    // is set no lower than it.
                    let per_ten =
                        u64::from(l.requests).saturating_mul(10_000) / l.interval_ms.max(1);
                    let per_ten = u32::try_from(per_ten.max(1)).unwrap_or(u32::MAX);
                    builder = builder.rate_limits(RateLimits::new(per_ten, None, 4));
                }
                let config = builder
                    .build()
                    .map_err(|e| job_error(ErrorKind::InvalidInput, e.to_string()))?;
                let hubspot = HubSpot::new(config)?.with_unchanged_detection(false);
                Arc::new(hubspot)
            }
            ConnectionConfig::Sql { url, .. } => {
                let url = interpolate(
                    &format!("connections.{name}.url"),
                    url.expose_secret(),
                    from_process,
                )?;
                let url = with_create_mode(resolve_sqlite_path(&url, &self.base));
                Arc::new(SqlConnector::connect_url(&url).await?)
            }
            ConnectionConfig::Csv { .. } => {
                return Err(job_error(
                    ErrorKind::InvalidInput,
                    format!("connection {name:?} is a CSV file, not a sink"),
                ));
            }
        };
        sinks.insert(name.to_owned(), sink.clone());
        Ok(GatedSink::new(sink, self.gate(name)))
    }

    fn read_range(&self, name: &str, from: u64, to: u64) -> Result<Vec<Record>, Error> {
        let ConnectionConfig::Csv { path } = self.connection(name)? else {
            return Err(job_error(
                ErrorKind::InvalidInput,
                format!("connection {name:?} cannot be read by range (use a csv connection)"),
            ));
        };
        let path = self.base.join(path);
        let mut reader = csv::Reader::from_path(&path).map_err(|e| {
            job_error(
                ErrorKind::InvalidInput,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let headers = reader
            .headers()
            .map_err(|e| job_error(ErrorKind::InvalidInput, format!("{}: {e}", path.display())))?
            .clone();
        let skip = usize::try_from(from).unwrap_or(usize::MAX);
        let take = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(take.min(10_000));
        for row in reader.records().skip(skip).take(take) {
            let row = row.map_err(|e| {
                job_error(ErrorKind::InvalidInput, format!("{}: {e}", path.display()))
            })?;
            let mut record = Record::new();
            for (h, v) in headers.iter().zip(row.iter()) {
                record.set(h, Value::Text(v.to_owned()));
            }
            out.push(record);
        }
        Ok(out)
    }

    async fn load_range(&self, p: &LoadRange) -> Result<serde_json::Value, Error> {
        let records = self.read_range(&p.source, p.from, p.to)?;
        let sink = self.sink(&p.sink).await?;
        let batch = p
            .batch_size
            .unwrap_or_else(|| sink.max_batch(&p.object))
            .clamp(1, sink.max_batch(&p.object).max(1));
        let (mut written, mut rejected) = (0u64, Vec::new());
        for chunk in records.chunks(batch) {
            let outcomes = sink
                .write(
                    &p.object,
                    WriteBatch::new(WriteOp::Upsert { key: p.key.clone() }, chunk.to_vec()),
                )
                .await?;
            for o in outcomes {
                match o {
                    WriteOutcome::Rejected { error, .. } if error.is_retryable() => {
                        // Upserts are safe to repeat: retry the whole job.
                        return Err(error);
                    }
                    WriteOutcome::Rejected { index, error } => {
                        rejected
                            .push(serde_json::json!({"index": index, "error": error.to_string()}));
                    }
                    _ => written += 1,
                }
            }
        }
        Ok(serde_json::json!({
            "read": records.len(),
            "written": written,
            "rejected": rejected,
        }))
    }

    async fn sync(&self, p: &SyncPayload) -> Result<serde_json::Value, Error> {
        let path = self.base.join(&p.job);
        let job =
            SyncJob::load(&path).map_err(|e| job_error(ErrorKind::InvalidInput, e.to_string()))?;
        let overrides = Overrides {
            base_dir: path.parent().map(PathBuf::from),
            ..Overrides::default()
        };
        let mode = if p.full {
            Mode::Full
        } else {
            Mode::Incremental
        };
        match run_job(&job, mode, overrides, None).await {
            Ok(report) => serde_json::to_value(&report)
                .map_err(|e| job_error(ErrorKind::Permanent, e.to_string())),
            Err(crate::runner::RunError::Setup(e) | crate::runner::RunError::Run(e)) => Err(e),
        }
    }
}
