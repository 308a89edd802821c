//! Runs registered jobs when they are due.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_core::Result;
use tokio::task::JoinHandle;

use super::{Clock, Schedule};

/// A job: called once per run, returns the run's future.
pub type JobFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync + 'static>;

/// Leases shared between processes, so one named lease (a connection) has
/// at most one holder at a time. [`crm_sql::state::StateStore`] implements
/// it with the `crm_leases` table.
#[async_trait]
pub trait LeaseKeeper: Send + Sync + 'static {
    /// Takes `name` for `holder` until `now + ttl` if it is free, expired
    /// or already `holder`'s; `false` when someone else holds it.
    ///
    /// # Errors
    /// Storage errors.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Extends `holder`'s lease to `now + ttl`; `false` when it was lost.
    ///
    /// # Errors
    /// Storage errors.
    async fn renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives the lease up if `holder` has it.
    ///
    /// # Errors
    /// Storage errors.
    async fn release(&self, name: &str, holder: &str) -> Result<()>;
}

#[async_trait]
impl LeaseKeeper for crm_sql::state::StateStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.try_acquire_lease_at(name, holder, ttl, now).await
    }

    async fn renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.renew_lease_at(name, holder, ttl, now).await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        self.release_lease(name, holder).await.map(drop)
    }
}

/// What one due job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job ran; `Err` holds its error's text.
    Ran(std::result::Result<(), String>),
    /// Another process held the job's lease.
    LeaseHeld,
    /// The lease could not be read or written; the job did not run.
    LeaseError(String),
}

struct Entry {
    name: String,
    schedule: Schedule,
    lease: Option<String>,
    run: JobFn,
    next: Mutex<Option<DateTime<Utc>>>,
    running: AtomicBool,
    runs: AtomicU64,
    failures: AtomicU64,
    skipped: AtomicU64,
}

struct Leasing {
    keeper: Arc<dyn LeaseKeeper>,
    holder: String,
    ttl: Duration,
}

/// Runs jobs on their [`Schedule`]s against a [`Clock`].
///
/// - A job whose previous run is still going when it is due again is not
///   started twice; that fire time is skipped.
/// - After a pause (a suspended machine, a long stop of the clock) a late
///   job runs once and its next fire time is counted from now: missed fire
///   times are not replayed.
/// - A job registered with a lease name runs only while this scheduler
///   holds that lease (see [`Scheduler::with_leases`]); the lease is renewed
///   every third of its time to live while the job runs, and released after.
pub struct Scheduler<C: Clock> {
    clock: Arc<C>,
    jobs: Vec<Arc<Entry>>,
    leasing: Option<Arc<Leasing>>,
}

impl<C: Clock> std::fmt::Debug for Scheduler<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field(
                "jobs",
                &self.jobs.iter().map(|j| &j.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<C: Clock> Scheduler<C> {
    /// A scheduler with no jobs.
    pub fn new(clock: Arc<C>) -> Self {
        Scheduler {
            clock,
            jobs: Vec::new(),
            leasing: None,
        }
    }

    /// Uses `keeper` for the leases of jobs registered with
    /// [`Scheduler::add_leased`], as `holder` (unique per process), each
    /// lease taken for `ttl` at a time.
    pub fn with_leases(
        mut self,
        keeper: Arc<dyn LeaseKeeper>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        self.leasing = Some(Arc::new(Leasing {
            keeper,
            holder: holder.into(),
            ttl,
        }));
        self
    }

    /// Registers a job; its first fire time is the first after now.
    pub fn add<F, Fut>(&mut self, name: impl Into<String>, schedule: Schedule, job: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.push(
            name.into(),
            schedule,
            None,
            Arc::new(move || Box::pin(job())),
        );
        self
    }

    /// Registers a job that runs only while holding the lease `lease`
    /// (such as the connection's name).
    pub fn add_leased<F, Fut>(
        &mut self,
        name: impl Into<String>,
        schedule: Schedule,
        lease: impl Into<String>,
        job: F,
    ) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.push(
            name.into(),
            schedule,
            Some(lease.into()),
            Arc::new(move || Box::pin(job())),
        );
        self
    }

    fn push(&mut self, name: String, schedule: Schedule, lease: Option<String>, run: JobFn) {
        let next = schedule.next_after(self.clock.now());
        self.jobs.push(Arc::new(Entry {
            name,
            schedule,
            lease,
            run,
            next: Mutex::new(next),
            running: AtomicBool::new(false),
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }));
    }

    /// The clock the scheduler reads.
    pub fn clock(&self) -> &Arc<C> {
        &self.clock
    }

    /// Completed runs of job `name` (successful or not).
    pub fn runs(&self, name: &str) -> u64 {
        self.entry(name)
            .map_or(0, |e| e.runs.load(Ordering::SeqCst))
    }

    /// Runs of job `name` that ended with an error.
    pub fn failures(&self, name: &str) -> u64 {
        self.entry(name)
            .map_or(0, |e| e.failures.load(Ordering::SeqCst))
    }

    /// Fire times of job `name` that did not run: the previous run was
    /// still going, or another process held the lease.
    pub fn skipped(&self, name: &str) -> u64 {
        self.entry(name)
            .map_or(0, |e| e.skipped.load(Ordering::SeqCst))
    }

    /// Completed runs of every job, by name.
    pub fn run_counts(&self) -> HashMap<String, u64> {
        self.jobs
            .iter()
            .map(|e| (e.name.clone(), e.runs.load(Ordering::SeqCst)))
            .collect()
    }

    /// The next fire time of job `name`.
    pub fn next_run(&self, name: &str) -> Option<DateTime<Utc>> {
        self.entry(name).and_then(|e| *lock(&e.next))
    }

    fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.jobs.iter().find(|e| e.name == name)
    }

    /// Starts every job due at the clock's current time and returns the
    /// handles of the runs started (each ends with the run's [`Outcome`]).
    pub fn tick(&self) -> Vec<(String, JoinHandle<Outcome>)> {
        let now = self.clock.now();
        let mut started = Vec::new();
        for entry in &self.jobs {
            {
                let mut next = lock(&entry.next);
                match *next {
                    Some(due) if due <= now => *next = entry.schedule.next_after(now),
                    _ => continue,
                }
            }
            if entry.running.swap(true, Ordering::SeqCst) {
                entry.skipped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let entry = Arc::clone(entry);
            let clock = Arc::clone(&self.clock);
            let leasing = self.leasing.clone();
            let name = entry.name.clone();
            let handle = tokio::spawn(async move {
                let outcome = run_once(&entry, clock, leasing).await;
                match &outcome {
                    Outcome::Ran(r) => {
                        entry.runs.fetch_add(1, Ordering::SeqCst);
                        if r.is_err() {
                            entry.failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Outcome::LeaseHeld | Outcome::LeaseError(_) => {
                        entry.skipped.fetch_add(1, Ordering::SeqCst);
                    }
                }
                entry.running.store(false, Ordering::SeqCst);
                outcome
            });
            started.push((name, handle));
        }
        started
    }

    /// Runs jobs as they come due until the clock reaches `end`, then waits
    /// for the runs in progress to finish.
    ///
    /// # Cancel safety
    /// Dropping the future stops scheduling; runs already started go on in
    /// their own tasks.
    pub async fn run_until(&self, end: DateTime<Utc>) {
        let mut in_flight: Vec<JoinHandle<Outcome>> = Vec::new();
        loop {
            in_flight.retain(|h| !h.is_finished());
            in_flight.extend(self.tick().into_iter().map(|(_, h)| h));
            let next = self.jobs.iter().filter_map(|e| *lock(&e.next)).min();
            match next {
                Some(t) if t <= end => self.clock.sleep_until(t).await,
                _ => break,
            }
        }
        self.clock.sleep_until(end).await;
        for h in in_flight {
            // A panicking job has already been counted as not finished;
            // there is nothing to add here.
            let _ = h.await;
        }
    }

    /// Runs jobs as they come due, for as long as any job has a next fire
    /// time.
    ///
    /// # Cancel safety
    /// As [`Scheduler::run_until`].
    pub async fn run(&self) {
        loop {
            self.tick();
            let next = self.jobs.iter().filter_map(|e| *lock(&e.next)).min();
            match next {
                Some(t) => self.clock.sleep_until(t).await,
                None => return,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run_once<C: Clock>(
    entry: &Entry,
    clock: Arc<C>,
    leasing: Option<Arc<Leasing>>,
) -> Outcome {
    let lease = match (&entry.lease, leasing) {
        (Some(name), Some(l)) => Some((name.clone(), l)),
        _ => None,
    };
    let Some((name, l)) = lease else {
        return Outcome::Ran((entry.run)().await.map_err(|e| e.to_string()));
    };
    match l.keeper.acquire(&name, &l.holder, l.ttl, clock.now()).await {
        Ok(true) => {}
        Ok(false) => return Outcome::LeaseHeld,
        Err(e) => return Outcome::LeaseError(e.to_string()),
    }
    let job = (entry.run)();
    let heartbeat = async {
        let every = chrono::Duration::from_std(l.ttl / 3)
            .ok()
            .filter(|d| *d > chrono::Duration::zero())
            .unwrap_or_else(|| chrono::Duration::seconds(1));
        loop {
            clock.sleep_until(clock.now() + every).await;
            // A failed renewal is retried at the next beat; the job's own
            // writes are idempotent, so an overlap after a lost lease
            // repeats work and loses none.
            let _ = l.keeper.renew(&name, &l.holder, l.ttl, clock.now()).await;
        }
    };
    let result = tokio::select! {
        r = job => r,
        () = heartbeat => Ok(()),
    };
    let _ = l.keeper.release(&name, &l.holder).await;
    Outcome::Ran(result.map_err(|e| e.to_string()))
}
