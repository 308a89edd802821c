//! [`SimClock`]: the clock that stamps records, controllable from tests.
//!
//! Providers stamp modification times in milliseconds, so the clock hands out
//! instants truncated to the millisecond: a stamp survives a round trip
//! through any wire format unchanged, which keeps `(modified_at, id)` cursors
//! exact.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};

/// A shared clock for a simulator: the system time (optionally shifted), or a
/// fixed instant that only moves when told to.
///
/// Freezing the clock lets a test create many records that share one
/// modification time, the case that breaks `>`-timestamp cursors.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use crm_sim::SimClock;
///
/// let clock = SimClock::system();
/// let t = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
/// clock.freeze_at(t);
/// assert_eq!(clock.now(), t);
/// clock.advance(chrono::Duration::seconds(5));
/// assert_eq!(clock.now(), t + chrono::Duration::seconds(5));
/// clock.resume();
/// assert!(clock.now() > t);
/// ```
#[derive(Clone, Debug)]
pub struct SimClock {
    mode: Arc<Mutex<Mode>>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    System { offset: Duration },
    Fixed(DateTime<Utc>),
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::system()
    }
}

impl SimClock {
    /// A clock that follows the system time.
    pub fn system() -> Self {
        SimClock {
            mode: Arc::new(Mutex::new(Mode::System {
                offset: Duration::zero(),
            })),
        }
    }

    /// A clock frozen at `at` (truncated to the millisecond).
    pub fn fixed(at: DateTime<Utc>) -> Self {
        SimClock {
            mode: Arc::new(Mutex::new(Mode::Fixed(truncate(at)))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mode> {
        // A poisoned lock only means another thread panicked while holding a
        // plain `Copy` value, which cannot be left half-written.
        self.mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current time, truncated to the millisecond.
    pub fn now(&self) -> DateTime<Utc> {
        match *self.lock() {
            Mode::System { offset } => truncate(Utc::now() + offset),
            Mode::Fixed(at) => at,
        }
    }

    /// Stops the clock at its current reading.
    pub fn freeze(&self) {
        let now = self.now();
        *self.lock() = Mode::Fixed(now);
    }

    /// Stops the clock at `at`: every record written until the clock moves
    /// again shares that modification time.
    pub fn freeze_at(&self, at: DateTime<Utc>) {
        *self.lock() = Mode::Fixed(truncate(at));
    }

    /// True while the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        matches!(*self.lock(), Mode::Fixed(_))
    }

    /// Moves the clock forward (or back, with a negative duration). A running
    /// clock keeps running, shifted by `by`.
    pub fn advance(&self, by: Duration) {
        let mut mode = self.lock();
        *mode = match *mode {
            Mode::System { offset } => Mode::System {
                offset: offset + by,
            },
            Mode::Fixed(at) => Mode::Fixed(truncate(at + by)),
        };
    }

    /// Lets a frozen clock run again from the frozen instant onward (time
    /// never jumps back to the system time, so stamps stay monotonic).
    pub fn resume(&self) {
        let mut mode = self.lock();
        if let Mode::Fixed(at) = *mode {
            let offset = at - Utc::now();
            *mode = Mode::System {
                offset: offset.max(Duration::zero()),
            };
        }
    }
}

fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{SubsecRound, TimeZone};

    #[test]
    fn stamps_are_milliseconds() {
        let clock = SimClock::system();
        let t = clock.now();
        assert_eq!(t, t.trunc_subsecs(3));
    }

    #[test]
    fn resume_never_goes_back() {
        let t = Utc::now() + Duration::hours(1);
        let clock = SimClock::fixed(t);
        clock.resume();
        assert!(clock.now() >= t.trunc_subsecs(3));
        assert!(!clock.is_frozen());
    }

    #[test]
    fn advance_moves_a_fixed_clock() {
        let t = Utc
            .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let clock = SimClock::fixed(t);
        clock.advance(Duration::milliseconds(1500));
        assert_eq!(clock.now(), t + Duration::milliseconds(1500));
    }
}
