//! When jobs run: cron expressions and fixed intervals, and a [`Scheduler`]
//! that runs registered jobs when they are due.
//!
//! - [`Cron`]: the standard five-field syntax, evaluated in UTC.
//! - [`Schedule`]: a cron expression or an interval (`every: 15m`).
//! - [`Clock`]: where the scheduler reads the time and sleeps; [`TokioClock`]
//!   follows `tokio::time` (so tests may pause it), [`ManualClock`] moves
//!   only when told.
//! - [`Scheduler`]: never runs two runs of one job at once, and after a
//!   pause runs each late job once, not once per missed fire time.
//! - [`jobs`]: seed 003's background jobs and their cadences, and the
//!   pause of a connection on a schema mismatch.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use crm_sync::schedule::Schedule;
//!
//! let hourly = Schedule::parse("0 * * * *").unwrap();
//! let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
//! assert_eq!(hourly.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap()));
//! let quarter = Schedule::parse("every 15m").unwrap();
//! assert_eq!(quarter.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 45, 0).unwrap()));
//! ```

mod clock;
mod conflicts;
mod cron;
pub mod jobs;
mod pause;
mod retry;
mod scheduler;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use clock::{Clock, ManualClock, TokioClock};
pub use cron::{Cron, CronError};
pub use scheduler::{JobFn, LeaseKeeper, Outcome, Scheduler};

/// When a job fires.
#[derive(Clone, PartialEq, Eq)]
pub enum Schedule {
    /// At the times a cron expression names.
    Cron(Cron),
    /// Every period, at multiples of the period since the Unix epoch (so
    /// `15m` fires at :00, :15, :30 and :45 whenever the process started).
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(c) => write!(f, "Cron({c})"),
            Schedule::Every(d) => write!(f, "Every({d:?})"),
        }
    }
}

/// Parses an interval such as `15m`, `5 min`, `1h`, `1d` or `30s`.
///
/// # Errors
/// [`CronError`] when the text is not a positive number and a unit.
pub fn parse_interval(text: &str) -> Result<Duration, CronError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| CronError::interval(text))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(CronError::interval(text)),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| CronError::interval(text))
}

impl Schedule {
    /// Parses a cron expression, or an interval written `every 15m` or
    /// `every: 15m`.
    ///
    /// # Errors
    /// [`CronError`] when neither parses.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let t = text.trim();
        match t.strip_prefix("every") {
            Some(rest) => Ok(Schedule::Every(parse_interval(
                rest.trim_start_matches(':'),
            )?)),
            None => Ok(Schedule::Cron(Cron::parse(t)?)),
        }
    }

    /// An interval schedule.
    pub fn every(period: Duration) -> Self {
        Schedule::Every(period)
    }

    /// The first fire time strictly after `t`; `None` when there is none.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.next_after(t),
            Schedule::Every(period) => {
                let p = i64::try_from(period.as_millis()).ok().filter(|p| *p > 0)?;
                let ms = t.timestamp_millis();
                let next = ms.div_euclid(p).checked_add(1)?.checked_mul(p)?;
                DateTime::from_timestamp_millis(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::TimeZone;

    #[test]
    fn intervals_parse_and_align_to_their_period() {
        assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_interval("5 min").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_interval("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_interval("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "0m", "15", "m", "15 fortnights", "-5m"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        let every = Schedule::parse("every: 15m").unwrap();
        assert_eq!(every, Schedule::every(Duration::from_secs(900)));
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 15, 0).unwrap();
        let next = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        assert_eq!(every.next_after(t), Some(next));
        assert_eq!(
            every.next_after(t - chrono::Duration::milliseconds(1)),
            Some(t)
        );
        assert!(Schedule::parse("0 * * *").is_err());
    }
}
