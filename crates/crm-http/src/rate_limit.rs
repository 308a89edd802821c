//! Client-side rate limiting: a fixed per-provider limit (GCRA via
//! `governor`), an optional daily quota, a cap on requests in flight, and an
//! adaptive limit fed from the provider's rate-limit response headers.
//!
//! Callers wait; they do not fail. The one exception is the daily quota:
//! waiting hours helps nobody, so an exhausted quota returns
//! [`ErrorKind::QuotaExhausted`] at once and the sync can checkpoint and stop.
//!
//! An acquire goes through, in order: the quota check (fails fast), the
//! in-flight semaphore, then one FIFO queue in which the adaptive pacing and
//! the fixed limit are waited for. Taking the in-flight slot first means a
//! request that has passed the rate limit is sent at once, so requests never
//! bunch up behind the semaphore and burst past the provider's window.
//!
//! ```
//! use std::time::Duration;
//! use crm_http::{RateLimitConfig, RateLimiter};
//!
//! # async fn demo() -> crm_core::Result<()> {
//! // HubSpot: 100 requests per 10 s, 250,000 a day, at most 10 in flight.
//! let limiter = RateLimiter::new(
//!     RateLimitConfig::new(100, Duration::from_secs(10))
//!         .burst(10)
//!         .daily_quota(250_000)
//!         .max_in_flight(10),
//! )?;
//! let permit = limiter.acquire().await?; // waits for a slot; errors only on quota
//! // ... send the request while holding `permit` ...
//! drop(permit);
//! # Ok(()) }
//! ```

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_core::{Error, ErrorKind, Result};
use governor::Quota;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a quota reported exhausted by headers is assumed to stay so when
/// the provider does not say when it resets.
pub const DEFAULT_QUOTA_BACKOFF: Duration = Duration::from_secs(3600);

/// The rate limits of one provider account.
///
/// The fixed limit guarantees at most `requests` requests in **any** window
/// of `interval` at the client, bursts included: requests are spaced by
/// `(interval + jitter_allowance) / (requests - burst + 1)`, and up to `burst`
/// may go at once after an idle period. The jitter allowance (default 5 % of
/// the interval) keeps network delay variations from pushing one request
/// too many into the provider's window.
///
/// It reads from configuration files with durations in milliseconds
/// (`requests: 0` means no fixed limit):
///
/// ```
/// let config: crm_http::RateLimitConfig = serde_json::from_str(
///     r#"{"requests": 100, "interval_ms": 10000, "daily_quota": 250000}"#,
/// ).unwrap();
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    requests: u32,
    #[serde(rename = "interval_ms", with = "crate::serde_ms")]
    interval: Duration,
    burst: u32,
    #[serde(rename = "jitter_allowance_ms", with = "crate::serde_ms::option")]
    jitter_allowance: Option<Duration>,
    daily_quota: Option<u64>,
    #[serde(rename = "quota_period_ms", with = "crate::serde_ms")]
    quota_period: Duration,
    max_in_flight: Option<usize>,
    adaptive: bool,
}

impl Default for RateLimitConfig {
    /// No fixed limit, no quota, no in-flight cap; adaptive to headers.
    fn default() -> Self {
        RateLimitConfig::unlimited()
    }
}

impl RateLimitConfig {
    /// No fixed limit (headers can still slow the client down).
    pub fn unlimited() -> Self {
        RateLimitConfig {
            requests: 0,
            interval: Duration::from_secs(1),
            burst: 1,
            jitter_allowance: None,
            daily_quota: None,
            quota_period: Duration::from_secs(24 * 3600),
            max_in_flight: None,
            adaptive: true,
        }
    }

    /// At most `requests` per `interval`.
    pub fn new(requests: u32, interval: Duration) -> Self {
        RateLimitConfig {
            requests,
            interval,
            ..RateLimitConfig::unlimited()
        }
    }

    /// At most `requests` per second.
    pub fn per_second(requests: u32) -> Self {
        RateLimitConfig::new(requests, Duration::from_secs(1))
    }

    /// How many requests may go at once after an idle period (default 1,
    /// at most `requests`). A larger burst lowers the sustained rate so that
    /// the window guarantee still holds.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// Extra time added to each window to absorb network jitter (default 5 %
    /// of the interval).
    #[must_use]
    pub fn jitter_allowance(mut self, allowance: Duration) -> Self {
        self.jitter_allowance = Some(allowance);
        self
    }

    /// At most `requests` per quota period (default one day, see
    /// [`quota_period`](Self::quota_period)); past it, calls fail at once with
    /// [`ErrorKind::QuotaExhausted`]. The period starts with the first request
    /// of this limiter.
    #[must_use]
    pub fn daily_quota(mut self, requests: u64) -> Self {
        self.daily_quota = Some(requests);
        self
    }

    /// The length of the quota period (default 24 hours).
    #[must_use]
    pub fn quota_period(mut self, period: Duration) -> Self {
        self.quota_period = period;
        self
    }

    /// At most `n` requests in flight at once (Marketo allows 10).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Whether rate-limit headers slow the client down (default on).
    #[must_use]
    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    /// The spacing between requests of the fixed limit, if there is one.
    pub fn emission_interval(&self) -> Option<Duration> {
        if self.requests == 0 {
            return None;
        }
        let allowance = self.jitter_allowance.unwrap_or(self.interval / 20);
        let slots = self.requests - self.burst.clamp(1, self.requests) + 1;
        Some((self.interval + allowance) / slots)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a zero interval, a burst above the
    /// limit, a zero quota period or a zero in-flight cap.
    pub fn validate(&self) -> Result<()> {
        if self.requests > 0 && self.interval.is_zero() {
            return Err(Error::invalid_input("rate limit: interval must be > 0"));
        }
        if self.requests > 0 && self.burst > self.requests {
            return Err(Error::invalid_input(
                "rate limit: burst must not exceed the requests per interval",
            ));
        }
        if self.quota_period.is_zero() {
            return Err(Error::invalid_input("rate limit: quota period must be > 0"));
        }
        if self.max_in_flight == Some(0) {
            return Err(Error::invalid_input(
                "rate limit: max_in_flight must be > 0",
            ));
        }
        Ok(())
    }
}

/// Which limit a header reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// A short rolling or fixed window (per second, per 10 s, per minute).
    Window,
    /// A daily (or longer) quota: when it reaches zero the client stops with
    /// [`ErrorKind::QuotaExhausted`] instead of waiting.
    Daily,
}

/// "`remaining` requests left in this window", as read from headers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitObservation {
    /// Which limit.
    pub scope: LimitScope,
    /// Requests left.
    pub remaining: u64,
    /// The window's limit, if reported.
    pub limit: Option<u64>,
    /// The window's length, if reported.
    pub window: Option<Duration>,
    /// Time until the window resets, if reported.
    pub reset_after: Option<Duration>,
}

impl RateLimitObservation {
    /// An observation with only `remaining` known.
    pub fn new(scope: LimitScope, remaining: u64) -> Self {
        RateLimitObservation {
            scope,
            remaining,
            limit: None,
            window: None,
            reset_after: None,
        }
    }

    /// Sets the limit.
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the window length.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// Sets the time until reset.
    #[must_use]
    pub fn reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = Some(reset_after);
        self
    }
}

/// A provider's reading of its rate-limit response headers.
pub trait RateLimitHeaders: Send + Sync + 'static {
    /// The limits the headers report on; empty when they say nothing.
    fn parse(&self, headers: &HeaderMap) -> Vec<RateLimitObservation>;
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `X-RateLimit-Remaining` / `-Limit` / `-Reset` (and the unprefixed
/// `RateLimit-*` forms), as Pipedrive and many others send them; the reset is
/// seconds until reset, or a Unix time when it is that large. Pipedrive's
/// `X-Daily-Requests-Left` is read as a daily quota.
#[derive(Clone, Copy, Debug, Default)]
pub struct StandardRateLimitHeaders;

impl RateLimitHeaders for StandardRateLimitHeaders {
    fn parse(&self, headers: &HeaderMap) -> Vec<RateLimitObservation> {
        let mut out = Vec::new();
        let remaining = header_u64(headers, "x-ratelimit-remaining")
            .or_else(|| header_u64(headers, "ratelimit-remaining"));
        if let Some(remaining) = remaining {
            let mut o = RateLimitObservation::new(LimitScope::Window, remaining);
            o.limit = header_u64(headers, "x-ratelimit-limit")
                .or_else(|| header_u64(headers, "ratelimit-limit"));
            o.reset_after = header_u64(headers, "x-ratelimit-reset")
                .or_else(|| header_u64(headers, "ratelimit-reset"))
                .map(reset_value);
            out.push(o);
        }
        if let Some(left) = header_u64(headers, "x-daily-requests-left") {
            out.push(RateLimitObservation::new(LimitScope::Daily, left));
        }
        out
    }
}

/// Seconds until reset, or a Unix timestamp (values past the year 2001).
fn reset_value(v: u64) -> Duration {
    if v > 1_000_000_000 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Duration::from_secs(v.saturating_sub(now))
    } else {
        Duration::from_secs(v)
    }
}

/// HubSpot's `X-HubSpot-RateLimit-Remaining` / `-Max` /
/// `-Interval-Milliseconds` (the rolling window), `-Secondly-Remaining` /
/// `-Secondly`, and `-Daily-Remaining` / `-Daily`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HubSpotRateLimitHeaders;

impl RateLimitHeaders for HubSpotRateLimitHeaders {
    fn parse(&self, headers: &HeaderMap) -> Vec<RateLimitObservation> {
        let mut out = Vec::new();
        if let Some(remaining) = header_u64(headers, "x-hubspot-ratelimit-remaining") {
            let mut o = RateLimitObservation::new(LimitScope::Window, remaining);
            o.limit = header_u64(headers, "x-hubspot-ratelimit-max");
            o.window = header_u64(headers, "x-hubspot-ratelimit-interval-milliseconds")
                .map(Duration::from_millis);
            out.push(o);
        }
        if let Some(remaining) = header_u64(headers, "x-hubspot-ratelimit-secondly-remaining") {
            let mut o = RateLimitObservation::new(LimitScope::Window, remaining)
                .window(Duration::from_secs(1));
            o.limit = header_u64(headers, "x-hubspot-ratelimit-secondly");
            out.push(o);
        }
        if let Some(remaining) = header_u64(headers, "x-hubspot-ratelimit-daily-remaining") {
            let mut o = RateLimitObservation::new(LimitScope::Daily, remaining);
            o.limit = header_u64(headers, "x-hubspot-ratelimit-daily");
            out.push(o);
        }
        out
    }
}

/// Salesforce's `Sforce-Limit-Info: api-usage=N/M` (N requests used of a
/// daily allowance of M, over a rolling 24 hours).
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesforceLimitInfo;

impl RateLimitHeaders for SalesforceLimitInfo {
    fn parse(&self, headers: &HeaderMap) -> Vec<RateLimitObservation> {
        let Some(value) = headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
        else {
            return Vec::new();
        };
        value
            .split(',')
            .filter_map(|part| {
                let usage = part.trim().strip_prefix("api-usage=")?;
                let (used, max) = usage.split_once('/')?;
                let used: u64 = used.trim().parse().ok()?;
                let max: u64 = max.trim().parse().ok()?;
                Some(
                    RateLimitObservation::new(LimitScope::Daily, max.saturating_sub(used))
                        .limit(max)
                        .window(Duration::from_secs(24 * 3600)),
                )
            })
            .collect()
    }
}

/// The clock the fixed limit runs on: tokio's, so paused-time tests work.
#[derive(Clone, Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Gcra = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

#[derive(Debug)]
struct LimiterState {
    /// Adaptive pacing: the earliest start of the next request.
    pace_next: Instant,
    /// Adaptive pacing: spacing while the provider reports little headroom.
    pace_spacing: Duration,
    /// The provider reported zero left in its window until then.
    blocked_until: Option<Instant>,
    /// A quota reported exhausted by headers, until then.
    quota_exhausted_until: Option<Instant>,
    quota_window_start: Option<Instant>,
    quota_used: u64,
}

/// A rate limiter for one provider account; share it (inside an
/// [`HttpClient`](crate::HttpClient), or behind an `Arc`) between every
/// client that spends the same account's budget.
///
/// ```
/// use std::sync::Arc;
/// use crm_http::{HttpClient, RateLimitConfig, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> crm_core::Result<()> {
/// // Pipedrive: 80 requests per 2 s per account, at most 2 in flight.
/// let limiter = Arc::new(RateLimiter::new(
///     RateLimitConfig::new(80, std::time::Duration::from_secs(2)).max_in_flight(2),
/// )?);
/// // Two clients of the same account spend one budget.
/// let deals = HttpClient::builder("pipedrive").rate_limiter(Arc::clone(&limiter)).build()?;
/// let persons = HttpClient::builder("pipedrive").rate_limiter(Arc::clone(&limiter)).build()?;
///
/// // Or acquire directly: hold the permit while the request is in flight.
/// let permit = limiter.acquire().await?;
/// // ... send the request ...
/// drop(permit); // frees the in-flight slot
/// # let _ = (deals, persons);
/// # Ok(()) }
/// ```
pub struct RateLimiter {
    config: RateLimitConfig,
    gcra: Option<Gcra>,
    clock: TokioClock,
    turn: tokio::sync::Mutex<()>,
    state: Mutex<LimiterState>,
    in_flight: Option<Arc<Semaphore>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Held while a request is in flight; dropping it frees the in-flight slot.
#[derive(Debug)]
#[must_use = "the in-flight slot is released when the permit is dropped"]
pub struct RatePermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl RatePermit {
    /// A permit that holds no slot.
    pub(crate) fn none() -> Self {
        RatePermit { _slot: None }
    }
}

impl RateLimiter {
    /// A limiter for `config`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the configuration is invalid (see
    /// [`RateLimitConfig::validate`]).
    pub fn new(config: RateLimitConfig) -> Result<Self> {
        config.validate()?;
        let clock = TokioClock {
            start: Instant::now(),
        };
        let gcra = match config.emission_interval() {
            Some(period) => {
                let burst =
                    NonZeroU32::new(config.burst.min(config.requests)).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period)
                    .ok_or_else(|| Error::invalid_input("rate limit: period is zero"))?
                    .allow_burst(burst);
                Some(governor::RateLimiter::direct_with_clock(
                    quota,
                    clock.clone(),
                ))
            }
            None => None,
        };
        Ok(RateLimiter {
            in_flight: config.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
            config,
            gcra,
            clock,
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(LimiterState {
                pace_next: Instant::now(),
                pace_spacing: Duration::ZERO,
                blocked_until: None,
                quota_exhausted_until: None,
                quota_window_start: None,
                quota_used: 0,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a request may be sent and returns the permit to hold while
    /// it is in flight. Every attempt (retries too) takes a permit: the
    /// provider counts them all.
    ///
    /// # Errors
    /// [`ErrorKind::QuotaExhausted`] when the daily quota is used up (or the
    /// provider's headers said so), without waiting.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled acquire has consumed no quota and holds no
    /// slot (it may have used one cell of the fixed limit if cancelled right
    /// after passing it, which only delays later requests slightly).
    pub async fn acquire(&self) -> Result<RatePermit> {
        self.check_quota(Instant::now(), false)?;
        let slot = match &self.in_flight {
            Some(sem) => Some(
                Arc::clone(sem)
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::new(ErrorKind::Permanent, "rate limiter closed"))?,
            ),
            None => None,
        };
        // One queue, first come first served.
        let _turn = self.turn.lock().await;
        loop {
            let until = {
                let s = self.lock_state();
                s.blocked_until.map_or(s.pace_next, |b| b.max(s.pace_next))
            };
            if until <= Instant::now() {
                break;
            }
            self.check_quota(Instant::now(), false)?;
            tokio::time::sleep_until(until).await;
        }
        if let Some(gcra) = &self.gcra {
            while let Err(not_until) = gcra.check() {
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
        let now = Instant::now();
        self.check_quota(now, true)?;
        let mut s = self.lock_state();
        if !s.pace_spacing.is_zero() {
            s.pace_next = now + s.pace_spacing;
        }
        Ok(RatePermit { _slot: slot })
    }

    /// Fails when a quota is exhausted; with `take`, counts one request.
    fn check_quota(&self, now: Instant, take: bool) -> Result<()> {
        let mut s = self.lock_state();
        if let Some(until) = s.quota_exhausted_until {
            if now < until {
                return Err(quota_error(
                    "the provider reported its request quota used up",
                    until - now,
                ));
            }
            s.quota_exhausted_until = None;
        }
        if let Some(limit) = self.config.daily_quota {
            let period = self.config.quota_period;
            let start = *s.quota_window_start.get_or_insert(now);
            if now >= start + period {
                s.quota_window_start = Some(now);
                s.quota_used = 0;
            }
            let start = s.quota_window_start.unwrap_or(now);
            if s.quota_used >= limit {
                return Err(quota_error(
                    "the configured request quota is used up",
                    (start + period).saturating_duration_since(now),
                )
                .with_context("quota", limit));
            }
            if take {
                s.quota_used += 1;
            }
        }
        Ok(())
    }

    /// Requests left in the configured quota period, if a quota is set.
    pub fn quota_remaining(&self) -> Option<u64> {
        let limit = self.config.daily_quota?;
        Some(limit.saturating_sub(self.lock_state().quota_used))
    }

    /// Feeds what a response's headers said about the provider's limits.
    ///
    /// A window with nothing left blocks new requests until it resets; a
    /// window with little left (at most a fifth of its limit, or 10 when
    /// the limit is unknown) spaces requests evenly over the rest of the
    /// window; a daily quota at zero makes [`acquire`](Self::acquire) fail
    /// with [`ErrorKind::QuotaExhausted`] until it resets (or for
    /// [`DEFAULT_QUOTA_BACKOFF`] when the provider does not say).
    /// Ignored when the configuration turned `adaptive` off.
    pub fn observe(&self, observations: &[RateLimitObservation]) {
        if !self.config.adaptive || observations.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut s = self.lock_state();
        let mut spacing: Option<Duration> = None;
        for o in observations {
            match o.scope {
                LimitScope::Daily => {
                    if o.remaining == 0 {
                        let until = now + o.reset_after.unwrap_or(DEFAULT_QUOTA_BACKOFF);
                        s.quota_exhausted_until = Some(until);
                    }
                }
                LimitScope::Window => {
                    let left_for = o.reset_after.or(o.window).unwrap_or(self.config.interval);
                    if o.remaining == 0 {
                        let until = now + left_for;
                        s.blocked_until = Some(s.blocked_until.map_or(until, |b| b.max(until)));
                        continue;
                    }
                    let low_water = o.limit.map_or(10, |l| (l / 5).max(1));
                    let this = if o.remaining <= low_water {
                        left_for / u32::try_from(o.remaining).unwrap_or(u32::MAX)
                    } else {
                        Duration::ZERO
                    };
                    spacing = Some(spacing.map_or(this, |sp| sp.max(this)));
                }
            }
        }
        if let Some(spacing) = spacing {
            s.pace_spacing = spacing;
        }
    }
}

fn quota_error(message: &str, resets_in: Duration) -> Error {
    Error::new(ErrorKind::QuotaExhausted, message).with_context("resets_in_s", resets_in.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn emission_interval_keeps_the_window_guarantee() {
        let c = RateLimitConfig::per_second(10);
        assert_eq!(c.emission_interval(), Some(Duration::from_millis(105)));
        let c = RateLimitConfig::new(100, Duration::from_secs(10)).burst(10);
        // (10 s + 0.5 s) / 91
        assert_eq!(
            c.emission_interval(),
            Some(Duration::from_nanos(10_500_000_000 / 91))
        );
        assert_eq!(RateLimitConfig::unlimited().emission_interval(), None);
    }

    #[test]
    fn config_reads_from_files() {
        let c: RateLimitConfig = serde_json::from_str(
            r#"{"requests": 100, "interval_ms": 10000, "burst": 10, "daily_quota": 250000, "max_in_flight": 10}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            RateLimitConfig::new(100, Duration::from_secs(10))
                .burst(10)
                .daily_quota(250_000)
                .max_in_flight(10)
        );
        let back: RateLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            serde_json::from_str::<RateLimitConfig>("{}").unwrap(),
            RateLimitConfig::unlimited()
        );
        assert!(serde_json::from_str::<RateLimitConfig>(r#"{"interval": 5}"#).is_err());
        // A zero burst from a file behaves as 1.
        let c: RateLimitConfig =
            serde_json::from_str(r#"{"requests": 10, "interval_ms": 1000, "burst": 0}"#).unwrap();
        assert_eq!(c.emission_interval(), Some(Duration::from_millis(105)));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(RateLimitConfig::per_second(5).burst(6).validate().is_err());
        assert!(RateLimitConfig::new(5, Duration::ZERO).validate().is_err());
        assert!(
            RateLimitConfig::per_second(5)
                .max_in_flight(0)
                .validate()
                .is_err()
        );
        assert!(
            RateLimitConfig::per_second(5)
                .quota_period(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(RateLimitConfig::per_second(5).burst(5).validate().is_ok());
    }

    /// Under paused time, with bursts, no window of `interval` ever holds more
    /// than `requests` grants.
    #[tokio::test(start_paused = true)]
    async fn fixed_limit_holds_in_every_window() {
        for (requests, burst) in [(10u32, 1u32), (10, 5), (10, 10), (3, 2)] {
            let limiter =
                RateLimiter::new(RateLimitConfig::per_second(requests).burst(burst)).unwrap();
            let start = Instant::now();
            let mut grants = Vec::new();
            for _ in 0..60 {
                let _p = limiter.acquire().await.unwrap();
                grants.push(start.elapsed());
            }
            for (i, t) in grants.iter().enumerate() {
                let in_window = grants[i..]
                    .iter()
                    .take_while(|u| **u < *t + Duration::from_secs(1))
                    .count();
                assert!(
                    in_window <= requests as usize,
                    "{requests}/{burst}: {in_window} grants in 1 s from {t:?}"
                );
            }
            // And it is not needlessly slow: 60 grants within the theoretical time + 10 %.
            let period = RateLimitConfig::per_second(requests)
                .burst(burst)
                .emission_interval()
                .unwrap();
            assert!(*grants.last().unwrap() <= period * 60 + Duration::from_millis(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn daily_quota_fails_fast_and_resets() {
        let limiter = RateLimiter::new(
            RateLimitConfig::unlimited()
                .daily_quota(3)
                .quota_period(Duration::from_secs(3600)),
        )
        .unwrap();
        for _ in 0..3 {
            let _p = limiter.acquire().await.unwrap();
        }
        assert_eq!(limiter.quota_remaining(), Some(0));
        let before = Instant::now();
        let err = limiter.acquire().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::QuotaExhausted);
        assert!(!err.is_retryable());
        assert_eq!(before, Instant::now(), "no waiting");
        tokio::time::advance(Duration::from_secs(3601)).await;
        let _p = limiter.acquire().await.unwrap();
        assert_eq!(limiter.quota_remaining(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn headers_slow_down_and_block() {
        let limiter = RateLimiter::new(RateLimitConfig::unlimited()).unwrap();
        // Plenty left: no waiting.
        limiter.observe(&[RateLimitObservation::new(LimitScope::Window, 90)
            .limit(100)
            .window(Duration::from_secs(10))]);
        let t0 = Instant::now();
        for _ in 0..5 {
            let _p = limiter.acquire().await.unwrap();
        }
        assert_eq!(t0, Instant::now());
        // 4 left of 100 in 2 s: space by 500 ms.
        limiter.observe(&[RateLimitObservation::new(LimitScope::Window, 4)
            .limit(100)
            .reset_after(Duration::from_secs(2))]);
        let t1 = Instant::now();
        for _ in 0..3 {
            let _p = limiter.acquire().await.unwrap();
        }
        assert!(t1.elapsed() >= Duration::from_millis(1000));
        // None left: wait for the reset.
        limiter
            .observe(&[RateLimitObservation::new(LimitScope::Window, 0)
                .reset_after(Duration::from_secs(5))]);
        let t2 = Instant::now();
        let _p = limiter.acquire().await.unwrap();
        assert!(t2.elapsed() >= Duration::from_secs(5));
        // Daily quota at zero: fail fast.
        limiter.observe(&[RateLimitObservation::new(LimitScope::Daily, 0)]);
        assert_eq!(
            limiter.acquire().await.unwrap_err().kind(),
            &ErrorKind::QuotaExhausted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_cap_is_enforced() {
        let limiter =
            Arc::new(RateLimiter::new(RateLimitConfig::unlimited().max_in_flight(2)).unwrap());
        let a = limiter.acquire().await.unwrap();
        let _b = limiter.acquire().await.unwrap();
        let l2 = Arc::clone(&limiter);
        let third = tokio::spawn(async move { l2.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished());
        drop(a);
        third.await.unwrap().unwrap();
    }

    #[test]
    fn header_parsers() {
        let mut h = HeaderMap::new();
        h.insert(
            "X-HubSpot-RateLimit-Remaining",
            HeaderValue::from_static("42"),
        );
        h.insert("X-HubSpot-RateLimit-Max", HeaderValue::from_static("100"));
        h.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            HeaderValue::from_static("10000"),
        );
        h.insert(
            "X-HubSpot-RateLimit-Daily-Remaining",
            HeaderValue::from_static("0"),
        );
        h.insert(
            "X-HubSpot-RateLimit-Daily",
            HeaderValue::from_static("250000"),
        );
        let obs = HubSpotRateLimitHeaders.parse(&h);
        assert_eq!(
            obs[0],
            RateLimitObservation::new(LimitScope::Window, 42)
                .limit(100)
                .window(Duration::from_secs(10))
        );
        assert_eq!(
            obs[1],
            RateLimitObservation::new(LimitScope::Daily, 0).limit(250_000)
        );

        let mut h = HeaderMap::new();
        h.insert(
            "Sforce-Limit-Info",
            HeaderValue::from_static("api-usage=14990/15000"),
        );
        let obs = SalesforceLimitInfo.parse(&h);
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].scope, LimitScope::Daily);
        assert_eq!(obs[0].remaining, 10);
        assert_eq!(obs[0].limit, Some(15000));

        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("7"));
        h.insert("x-ratelimit-limit", HeaderValue::from_static("80"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("2"));
        h.insert("x-daily-requests-left", HeaderValue::from_static("1000"));
        let obs = StandardRateLimitHeaders.parse(&h);
        assert_eq!(
            obs[0],
            RateLimitObservation::new(LimitScope::Window, 7)
                .limit(80)
                .reset_after(Duration::from_secs(2))
        );
        assert_eq!(obs[1], RateLimitObservation::new(LimitScope::Daily, 1000));
        assert!(StandardRateLimitHeaders.parse(&HeaderMap::new()).is_empty());
        let mut h = HeaderMap::new();
        h.insert("Sforce-Limit-Info", HeaderValue::from_static("garbage"));
        assert!(SalesforceLimitInfo.parse(&h).is_empty());
    }
}
