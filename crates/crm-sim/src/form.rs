//! [`ResponseForm`]: how a provider words its error responses.
//!
//! The framework decides *when* a request is rate limited, unauthorised or
//! hit by an injected server error; the provider's form decides *what the
//! response looks like* (status, headers, body), so a client sees exactly the
//! shapes the real service sends.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthFailure;

/// A request refused by a rate limit (the simulator's own, or one injected by
/// a fault plan).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// The name of the window that ran out (e.g. `secondly`, `daily`), or
    /// `fault` for an injected 429.
    pub window: String,
    /// The window's limit.
    pub limit: u32,
    /// The window's length.
    pub period: Duration,
    /// How long until a request would be admitted again.
    pub retry_after: Duration,
    /// True when a fault plan injected the refusal.
    pub injected: bool,
}

impl RateLimited {
    /// A refusal of `window` (`limit` per `period`), admitting again after `retry_after`.
    pub fn new(
        window: impl Into<String>,
        limit: u32,
        period: Duration,
        retry_after: Duration,
    ) -> Self {
        RateLimited {
            window: window.into(),
            limit,
            period,
            retry_after,
            injected: false,
        }
    }

    /// `retry_after` in whole seconds, rounded up (what `Retry-After` carries).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }

    /// True for a window of a day or longer: a quota that waiting seconds won't restore.
    pub fn is_daily(&self) -> bool {
        self.period >= Duration::from_secs(86_400)
    }
}

/// The state of one rate-limit window after a request was admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowStatus {
    /// The window's name.
    pub window: String,
    /// The window's limit.
    pub limit: u32,
    /// Requests left in the window.
    pub remaining: u32,
    /// The window's length.
    pub period: Duration,
    /// Time until the window frees a slot (fixed windows: until it resets).
    pub reset_after: Duration,
}

/// How a provider words its responses to throttling, auth failures and
/// server errors. Every method but [`ResponseForm::rate_limited`] has a
/// generic default.
pub trait ResponseForm: Send + Sync + 'static {
    /// The response to a rate-limited request: status, headers
    /// (`Retry-After` where the provider sends it) and body.
    fn rate_limited(&self, limited: &RateLimited) -> Response;

    /// Headers added to every admitted response (e.g. remaining counts).
    /// The default adds none.
    fn rate_limit_headers(&self, status: &[WindowStatus], headers: &mut HeaderMap) {
        let _ = (status, headers);
    }

    /// The response to a request without valid credentials. The default is
    /// a 401 with `WWW-Authenticate: Bearer` and a JSON body.
    fn unauthorized(&self, failure: &AuthFailure) -> Response {
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": failure.code(), "message": failure.to_string()})),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }

    /// The response to an injected server error (500, 502, 503, 504).
    /// The default is a JSON body naming the status.
    fn server_error(&self, status: StatusCode) -> Response {
        (
            status,
            axum::Json(json!({
                "error": "server_error",
                "message": status.canonical_reason().unwrap_or("server error"),
            })),
        )
            .into_response()
    }
}

/// A plain, generic form: 429 with `Retry-After` and a JSON body; admitted
/// responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
/// `X-RateLimit-Reset` (seconds) of the tightest window.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultForm;

impl ResponseForm for DefaultForm {
    fn rate_limited(&self, limited: &RateLimited) -> Response {
        let secs = limited.retry_after_secs();
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "error": "rate_limited",
                "message": format!("rate limit of {} per {}s exceeded ({})",
                    limited.limit, limited.period.as_secs_f64(), limited.window),
                "retry_after": secs,
            })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }

    fn rate_limit_headers(&self, status: &[WindowStatus], headers: &mut HeaderMap) {
        let Some(tightest) = status.iter().min_by_key(|s| s.remaining) else {
            return;
        };
        let reset =
            tightest.reset_after.as_secs() + u64::from(tightest.reset_after.subsec_nanos() > 0);
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(tightest.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(tightest.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset),
        );
    }
}
