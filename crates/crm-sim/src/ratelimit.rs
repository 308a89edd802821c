//! [`RateLimiter`]: counts requests per window and refuses the ones over the
//! limit, in the provider's own words (see [`ResponseForm`]).
//!
//! A limiter has one or more [`Window`]s (a per-second and a daily window,
//! say); a request is admitted only if every window has room, and only
//! admitted requests count. Windows are fixed (counts reset at each multiple
//! of the period since the limiter started, as a daily quota resets) or
//! sliding (at most `limit` requests in any span of `period`, as
//! "100 per 10 seconds, rolling" limits work).
//!
//! ```
//! use std::time::Duration;
//! use crm_sim::{DefaultForm, RateLimiter, Window};
//!
//! let limiter = RateLimiter::new(vec![Window::sliding("secondly", 2, Duration::from_secs(1))], DefaultForm);
//! assert!(limiter.check().is_ok());
//! assert!(limiter.check().is_ok());
//! let refused = limiter.check().unwrap_err();
//! assert_eq!(refused.window, "secondly");
//! assert!(refused.retry_after <= Duration::from_secs(1));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::form::{RateLimited, ResponseForm, WindowStatus};

/// How a window counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Counts reset at each multiple of the period since the limiter started.
    Fixed,
    /// At most `limit` admitted requests within any span of the period.
    Sliding,
}

/// One limit: `limit` requests per `period`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// A name for responses and logs (`secondly`, `ten_secondly`, `daily`).
    pub name: String,
    /// Requests admitted per period.
    pub limit: u32,
    /// The period.
    #[serde(with = "duration_ms", rename = "period_ms")]
    pub period: Duration,
    /// Fixed or sliding.
    pub kind: WindowKind,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl Window {
    /// A sliding window.
    pub fn sliding(name: impl Into<String>, limit: u32, period: Duration) -> Self {
        Window {
            name: name.into(),
            limit,
            period,
            kind: WindowKind::Sliding,
        }
    }

    /// A fixed window.
    pub fn fixed(name: impl Into<String>, limit: u32, period: Duration) -> Self {
        Window {
            name: name.into(),
            limit,
            period,
            kind: WindowKind::Fixed,
        }
    }

    /// `limit` per second, sliding.
    pub fn per_second(limit: u32) -> Self {
        Window::sliding("secondly", limit, Duration::from_secs(1))
    }

    /// `limit` per day, fixed (resets every 24 hours from the start).
    pub fn daily(limit: u32) -> Self {
        Window::fixed("daily", limit, Duration::from_secs(86_400))
    }
}

#[derive(Debug)]
enum Counter {
    Fixed { index: u64, count: u32 },
    Sliding { admitted: VecDeque<Instant> },
}

#[derive(Debug)]
struct State_ {
    counters: Vec<Counter>,
    admitted: u64,
    refused: u64,
}

/// A shared rate limiter; clones share the counts.
#[derive(Clone)]
pub struct RateLimiter {
    windows: Arc<Vec<Window>>,
    state: Arc<Mutex<State_>>,
    start: Instant,
    form: Arc<dyn ResponseForm>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with `windows`, answering refusals with `form`.
    pub fn new(windows: Vec<Window>, form: impl ResponseForm) -> Self {
        RateLimiter::with_form(windows, Arc::new(form))
    }

    /// A limiter sharing an existing form.
    pub fn with_form(windows: Vec<Window>, form: Arc<dyn ResponseForm>) -> Self {
        let counters = windows
            .iter()
            .map(|w| match w.kind {
                WindowKind::Fixed => Counter::Fixed { index: 0, count: 0 },
                WindowKind::Sliding => Counter::Sliding {
                    admitted: VecDeque::new(),
                },
            })
            .collect();
        RateLimiter {
            windows: Arc::new(windows),
            state: Arc::new(Mutex::new(State_ {
                counters,
                admitted: 0,
                refused: 0,
            })),
            start: Instant::now(),
            form,
        }
    }

    /// The windows.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The form refusals are answered in.
    pub fn form(&self) -> &Arc<dyn ResponseForm> {
        &self.form
    }

    /// Counts a request: admits it (returning each window's state after it)
    /// or refuses it (saying which window ran out and when to retry).
    ///
    /// # Errors
    /// [`RateLimited`] when a window is full; the request is not counted.
    pub fn check(&self) -> Result<Vec<WindowStatus>, RateLimited> {
        let now = Instant::now();
        let since_start = now.saturating_duration_since(self.start);
        // Counts are plain numbers updated in one step; a poisoned lock holds valid counts.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // First pass: is there room everywhere?
        for (w, c) in self.windows.iter().zip(state.counters.iter_mut()) {
            let retry_after = match c {
                Counter::Fixed { index, count } => {
                    let period_ns = w.period.as_nanos().max(1);
                    let current =
                        u64::try_from(since_start.as_nanos() / period_ns).unwrap_or(u64::MAX);
                    if current != *index {
                        *index = current;
                        *count = 0;
                    }
                    (*count >= w.limit).then(|| next_boundary(since_start, w.period, current))
                }
                Counter::Sliding { admitted } => {
                    while admitted
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) >= w.period)
                    {
                        admitted.pop_front();
                    }
                    let full = admitted.len() >= usize::try_from(w.limit).unwrap_or(usize::MAX);
                    full.then(|| {
                        // The slot frees when the request `limit` back leaves the window.
                        let idx = admitted.len()
                            - usize::try_from(w.limit).unwrap_or(0).min(admitted.len());
                        admitted
                            .get(idx)
                            .map_or(w.period, |t| (*t + w.period).saturating_duration_since(now))
                    })
                }
            };
            if let Some(retry_after) = retry_after {
                state.refused += 1;
                return Err(RateLimited::new(
                    w.name.clone(),
                    w.limit,
                    w.period,
                    retry_after,
                ));
            }
        }
        state.admitted += 1;
        let mut out = Vec::with_capacity(self.windows.len());
        for (w, c) in self.windows.iter().zip(state.counters.iter_mut()) {
            let (remaining, reset_after) = match c {
                Counter::Fixed { index, count } => {
                    *count += 1;
                    (
                        w.limit.saturating_sub(*count),
                        next_boundary(since_start, w.period, *index),
                    )
                }
                Counter::Sliding { admitted } => {
                    admitted.push_back(now);
                    let used = u32::try_from(admitted.len()).unwrap_or(u32::MAX);
                    let reset = admitted.front().map_or(Duration::ZERO, |t| {
                        (*t + w.period).saturating_duration_since(now)
                    });
                    (w.limit.saturating_sub(used), reset)
                }
            };
            out.push(WindowStatus {
                window: w.name.clone(),
                limit: w.limit,
                remaining,
                period: w.period,
                reset_after,
            });
        }
        Ok(out)
    }

    /// Requests admitted so far.
    pub fn admitted(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admitted
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refused
    }

    /// Forgets all counts (e.g. between test cases, or "the next day").
    pub fn reset(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for c in &mut state.counters {
            match c {
                Counter::Fixed { count, .. } => *count = 0,
                Counter::Sliding { admitted } => admitted.clear(),
            }
        }
        state.admitted = 0;
        state.refused = 0;
    }

    /// An axum middleware applying this limiter to a router or route:
    /// `router.layer(axum::middleware::from_fn_with_state(limiter, RateLimiter::middleware))`.
    /// Refused requests get the form's response; admitted ones get the form's
    /// rate-limit headers.
    pub async fn middleware(
        State(limiter): State<RateLimiter>,
        req: Request,
        next: Next,
    ) -> Response {
        match limiter.check() {
            Err(limited) => limiter.form.rate_limited(&limited),
            Ok(status) => {
                let mut resp = next.run(req).await;
                limiter.form.rate_limit_headers(&status, resp.headers_mut());
                resp
            }
        }
    }
}

fn next_boundary(since_start: Duration, period: Duration, index: u64) -> Duration {
    let next = period
        .checked_mul(u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX);
    next.saturating_sub(since_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::DefaultForm;

    #[tokio::test(start_paused = true)]
    async fn sliding_window_frees_slots_as_requests_age() {
        let l = RateLimiter::new(
            vec![Window::sliding("s", 3, Duration::from_secs(1))],
            DefaultForm,
        );
        for _ in 0..3 {
            assert!(l.check().is_ok());
        }
        let refused = l.check().err();
        assert_eq!(refused.map(|r| r.retry_after), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(l.check().is_ok());
        assert_eq!(l.admitted(), 4);
        assert_eq!(l.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_window_resets_at_the_boundary() {
        let l = RateLimiter::new(
            vec![Window::fixed("f", 2, Duration::from_secs(10))],
            DefaultForm,
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(l.check().is_ok());
        let st = l.check().unwrap_or_default();
        assert_eq!(st[0].remaining, 0);
        let refused = l.check().err();
        assert_eq!(refused.map(|r| r.retry_after), Some(Duration::from_secs(7)));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(l.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn refused_requests_do_not_count_and_all_windows_must_have_room() {
        let l = RateLimiter::new(vec![Window::per_second(5), Window::daily(3)], DefaultForm);
        for _ in 0..3 {
            assert!(l.check().is_ok());
        }
        let refused = l.check().err();
        assert_eq!(refused.as_ref().map(|r| r.window.as_str()), Some("daily"));
        assert!(refused.is_some_and(|r| r.is_daily()));
        // The per-second window did not count the refused request.
        l.reset();
        assert_eq!(l.check().map(|s| s[0].remaining).ok(), Some(4));
    }
}
