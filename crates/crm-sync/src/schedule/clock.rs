//! Where the scheduler reads the time and how it waits.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The time source of a [`super::Scheduler`].
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Returns once [`Clock::now`] is at or after `t`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// Wall-clock time that advances with `tokio::time`: the UTC time when the
/// clock was made plus the tokio time elapsed since. Under a paused tokio
/// runtime (`#[tokio::test(start_paused = true)]`) it moves only as tokio's
/// test clock does, so a simulated day passes at once.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the system time now.
    pub fn new() -> Self {
        TokioClock::starting_at(Utc::now())
    }

    /// A clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.started.elapsed();
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| self.base.checked_add_signed(d))
            .unwrap_or(self.base)
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            let left = t.signed_duration_since(self.now());
            match left.to_std() {
                Ok(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => return,
            }
        }
    }
}

/// A clock that moves only when [`ManualClock::set`] or
/// [`ManualClock::advance`] is called. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    tick: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            tick: watch::Sender::new(start),
        }
    }

    /// Moves the clock to `t` (it may move backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = t;
        self.tick.send_replace(t);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        let t = self.now() + d;
        self.set(t);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        let mut rx = self.tick.subscribe();
        // The sender lives as long as `self`, so `wait_for` only ends when
        // the time is reached.
        let _ = rx.wait_for(|now| *now >= t).await;
    }
}
