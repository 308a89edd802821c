//! Retry policy: exponential backoff with full jitter, `Retry-After`, and a
//! per-request budget.
//!
//! The backoff is written here rather than taken from a crate: `backoff` is
//! flagged unmaintained by RustSec (RUSTSEC-2025-0012), and the maintained
//! alternatives model "retry this closure" while this client needs the retry
//! decision to see the provider's `Retry-After`, the request's idempotency and
//! the error's [`is_retryable`](crm_core::Error::is_retryable) state. The
//! arithmetic is a few lines and is covered by property tests.
//!
//! The delay before retry `n` (1-based) is drawn uniformly from
//! `[0, min(max_backoff, initial_backoff * 2^(n-1))]` ("full jitter"). When the
//! provider sent `Retry-After`, the client waits that long plus up to 10 %
//! (at most one second) of jitter instead, so that many clients told the same
//! time do not return in the same instant.

use std::time::{Duration, SystemTime};

use crm_core::{Error, Result};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

/// How often and for how long a request is retried.
///
/// ```
/// use std::time::Duration;
/// use crm_http::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(4)
///     .max_elapsed(Duration::from_secs(60))
///     .initial_backoff(Duration::from_millis(200));
/// assert!(policy.backoff_ceiling(3) <= Duration::from_millis(800));
/// ```
///
/// It reads from configuration files with durations in milliseconds:
///
/// ```
/// let policy: crm_http::RetryPolicy =
///     serde_json::from_str(r#"{"max_attempts": 8, "max_elapsed_ms": 300000}"#).unwrap();
/// assert_eq!(policy.attempts_limit(), 8);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    max_attempts: u32,
    #[serde(rename = "max_elapsed_ms", with = "crate::serde_ms")]
    max_elapsed: Duration,
    #[serde(rename = "initial_backoff_ms", with = "crate::serde_ms")]
    initial_backoff: Duration,
    #[serde(rename = "max_backoff_ms", with = "crate::serde_ms")]
    max_backoff: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// Five attempts within two minutes, backoff from 500 ms up to 30 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (one attempt).
    pub fn never() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// The most attempts per request, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The most time a request may take, all attempts and waits included.
    /// A retry whose wait would end past this budget is not made.
    #[must_use]
    pub fn max_elapsed(mut self, budget: Duration) -> Self {
        self.max_elapsed = budget;
        self
    }

    /// The ceiling of the first backoff.
    #[must_use]
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// The largest backoff ceiling.
    #[must_use]
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// Turns jitter off (every backoff is its ceiling). Only for tests and
    /// single-client tools: without jitter, clients retry in lockstep.
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The configured attempt limit.
    pub fn attempts_limit(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// The configured time budget.
    pub fn elapsed_limit(&self) -> Duration {
        self.max_elapsed
    }

    /// The upper bound of the delay before retry number `retry` (1-based):
    /// `min(max_backoff, initial_backoff * 2^(retry-1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The delay before retry number `retry` (1-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        if !self.jitter {
            return ceiling;
        }
        random_up_to(ceiling)
    }

    /// The delay to use when the provider said `Retry-After: after`: that
    /// long plus up to 10 % (at most 1 s) of jitter.
    pub fn delay_for_retry_after(&self, after: Duration) -> Duration {
        if !self.jitter {
            return after;
        }
        after + random_up_to((after / 10).min(Duration::from_secs(1)))
    }
}

fn random_up_to(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), relative to `now`. A date in the
/// past gives zero; an unreadable value gives `None`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use crm_http::retry::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
/// assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
///            Some(Duration::from_secs(10)));
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Some providers send fractional seconds.
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// [`parse_retry_after`] for a header value, relative to the current time.
pub fn retry_after_header(value: &HeaderValue) -> Option<Duration> {
    parse_retry_after(value.to_str().ok()?, SystemTime::now())
}

/// Marks an error whose retries ran out so that nothing retries it again,
/// recording why.
pub(crate) fn exhausted(error: Error, attempts: u32, why: &'static str) -> Error {
    error
        .with_context("attempts", attempts)
        .with_context("retry_stopped", why)
        .set_persistent()
}

/// Checks a policy for use in a client.
pub(crate) fn validate(policy: &RetryPolicy) -> Result<()> {
    if policy.initial_backoff > policy.max_backoff {
        return Err(Error::invalid_input(
            "retry policy: initial_backoff is larger than max_backoff",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        // RFC 7231 IMF-fixdate, RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", now),
            Some(Duration::from_secs(10))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn ceilings_double_then_cap() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(
            p.clone().jitter(false).backoff(3),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn policy_reads_from_files() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 2000, "jitter": false}"#,
        )
        .unwrap();
        assert_eq!(p.attempts_limit(), 3);
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.elapsed_limit(), RetryPolicy::default().elapsed_limit());
        let back: RetryPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"retries": 3}"#).is_err());
        let zero: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 0}"#).unwrap();
        assert_eq!(zero.attempts_limit(), 1);
    }

    #[test]
    fn invalid_policy_is_rejected() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_secs(10))
            .max_backoff(Duration::from_secs(1));
        assert!(validate(&p).is_err());
        assert!(validate(&RetryPolicy::default()).is_ok());
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts_limit(), 1);
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_ceiling(
            initial_ms in 0u64..10_000,
            max_ms in 0u64..120_000,
            retry in 1u32..100,
        ) {
            let p = RetryPolicy::default()
                .initial_backoff(Duration::from_millis(initial_ms))
                .max_backoff(Duration::from_millis(max_ms));
            let ceiling = p.backoff_ceiling(retry);
            prop_assert!(ceiling <= Duration::from_millis(max_ms));
            prop_assert!(ceiling <= Duration::from_millis(initial_ms).saturating_mul(1 << (retry - 1).min(31)));
            prop_assert!(p.backoff(retry) <= ceiling);
            // Ceilings never shrink as retries go on.
            prop_assert!(p.backoff_ceiling(retry + 1) >= ceiling);
        }

        #[test]
        fn retry_after_jitter_is_bounded(secs in 0u64..100_000) {
            let p = RetryPolicy::default();
            let after = Duration::from_secs(secs);
            let d = p.delay_for_retry_after(after);
            prop_assert!(d >= after);
            prop_assert!(d <= after + Duration::from_secs(1));
        }
    }
}
