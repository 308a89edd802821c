//! Marketo's error codes and how they map onto [`crm_core::ErrorKind`].
//!
//! Marketo answers most failures with HTTP 200 and a body
//! `{"success": false, "errors": [{"code": "606", "message": "..."}]}`;
//! [`MarketoClassifier`] reads every response body for `crm-http`, so the
//! shared client refreshes, retries or stops exactly as for HTTP statuses.
//! Per-record problems of sync calls arrive as `result[].status = "skipped"`
//! with `reasons`; [`record_error`] maps those. Codes and meanings are
//! from Marketo's "Error Codes" reference (REST API).
//!
//! 606 ("Max rate limit exceeded", more than 100 calls in 20 s) and 615
//! ("Concurrent access limit reached") are retried after the configured
//! wait, by default the rate-limit window itself (20 s), and the classifier
//! of a [`crate::MarketoClient`] also pauses the client's shared limiter for
//! that long ([`MarketoClassifier::pausing`]): every caller waits for the
//! window to pass, not just the one that was refused.

use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, ErrorKind, WriteOutcome};
use crm_http::classify::{CTX_PROVIDER_CODE, CTX_PROVIDER_MESSAGE};
use crm_http::{
    DefaultClassifier, LimitScope, RateLimitObservation, RateLimiter, ResponseClassifier,
    ResponseParts, Verdict,
};

use crate::wire::{ApiError, ErrorEnvelope};

/// Failures of the Marketo connector that are not an HTTP response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketoError {
    /// The configuration is incomplete or contradicts itself.
    #[error("invalid Marketo configuration: {0}")]
    ConfigInvalid(String),
    /// A cursor made by another connector or an incompatible version.
    #[error("the cursor is not a Marketo cursor of this version: {0}")]
    CursorInvalid(String),
    /// The object is not one this connector reads or writes.
    #[error("unknown Marketo object `{0}`")]
    UnknownObject(String),
    /// A record cannot be turned into Marketo fields.
    #[error("record cannot be written: {0}")]
    RecordInvalid(String),
    /// An export file is not the CSV Marketo writes.
    #[error("export file is not valid CSV: {0}")]
    ExportFile(String),
    /// An export job ended `Failed` or `Cancelled`.
    #[error("export job {job} ended {status}: {message}")]
    ExportFailed {
        /// The job id.
        job: String,
        /// Its final status.
        status: String,
        /// Marketo's `errorMsg`.
        message: String,
    },
}

impl From<MarketoError> for Error {
    fn from(e: MarketoError) -> Self {
        let kind = match &e {
            MarketoError::UnknownObject(_) => ErrorKind::NotFound,
            MarketoError::ExportFailed { .. } => ErrorKind::Transient,
            MarketoError::ExportFile(_) => ErrorKind::SchemaMismatch,
            MarketoError::ConfigInvalid(_)
            | MarketoError::CursorInvalid(_)
            | MarketoError::RecordInvalid(_) => ErrorKind::InvalidInput,
        };
        Error::new(kind, e.to_string())
    }
}

/// What a Marketo code means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeClass {
    /// 601 (token invalid), 602 (token expired): refresh once and re-send.
    TokenRejected,
    /// 606 (rate limit per 20 s), 615 (concurrent calls): wait and retry.
    RateLimited,
    /// 607 (daily quota), export quota (1029 "Export daily quota exceeded"):
    /// stop with the checkpoint.
    QuotaExhausted,
    /// 604, 608, 611, 613, 713, 1029 (job queue full), 1016 (too many imports):
    /// retry later.
    Transient,
    /// 603 (access denied), 600 (no token), 612, 703 (feature disabled): no retry.
    Denied,
    /// 610 (resource not found), 1004 (lead not found), 1013 (object not
    /// found), 1015 (lead not in list).
    NotFound,
    /// 1005 (lead already exists), 1007 (multiple leads match), 1008, 1037
    /// (lead already in or past the program status).
    Conflict,
    /// 1006 (field not found), 1009/1010 (field type): the schema changed.
    SchemaMismatch,
    /// 609, 1001, 1002, 1003, 1025 (program status not found) and other 1xxx
    /// codes: the request or record is invalid.
    Invalid,
}

/// The meaning of a Marketo error code (and its message, which separates
/// the two meanings of 1029).
pub fn classify_code(code: &str, message: &str) -> CodeClass {
    match code {
        "601" | "602" => CodeClass::TokenRejected,
        "606" | "615" => CodeClass::RateLimited,
        "607" => CodeClass::QuotaExhausted,
        // 1029 is both "Too many jobs in queue" and "Export daily quota
        // exceeded" (Bulk Extract docs, "Limits"); only the latter is a quota.
        "1029" if message.to_lowercase().contains("quota") => CodeClass::QuotaExhausted,
        "604" | "608" | "611" | "613" | "713" | "1016" | "1029" => CodeClass::Transient,
        "600" | "603" | "612" | "703" => CodeClass::Denied,
        "610" | "1004" | "1013" | "1015" => CodeClass::NotFound,
        "1005" | "1007" | "1008" | "1037" => CodeClass::Conflict,
        "1006" | "1009" | "1010" => CodeClass::SchemaMismatch,
        _ => CodeClass::Invalid,
    }
}

/// The [`ErrorKind`] of a code, with `rate_wait` as the retry hint of 606/615.
pub fn kind_of(class: CodeClass, rate_wait: Duration) -> ErrorKind {
    match class {
        CodeClass::TokenRejected | CodeClass::Denied => ErrorKind::Auth,
        CodeClass::RateLimited => ErrorKind::RateLimited {
            retry_after: Some(rate_wait),
        },
        CodeClass::QuotaExhausted => ErrorKind::QuotaExhausted,
        CodeClass::Transient => ErrorKind::Transient,
        CodeClass::NotFound => ErrorKind::NotFound,
        CodeClass::Conflict => ErrorKind::Conflict,
        CodeClass::SchemaMismatch => ErrorKind::SchemaMismatch,
        CodeClass::Invalid => ErrorKind::InvalidInput,
    }
}

/// The error for a result Marketo gave for input `pos` of a call that sent `len`.
pub(crate) fn answered_past_input(op: &'static str, pos: usize, len: usize) -> Error {
    Error::new(
        ErrorKind::SchemaMismatch,
        format!("Marketo answered for input {pos} of {len}"),
    )
    .with_operation(op)
}

/// One outcome a slot: those Marketo did not answer for are retryable
/// rejections ("Marketo answered nothing for this `item`").
pub(crate) fn fill_unanswered(
    slots: Vec<Option<WriteOutcome>>,
    op: &'static str,
    item: &str,
) -> Vec<WriteOutcome> {
    slots
        .into_iter()
        .enumerate()
        .map(|(index, o)| {
            o.unwrap_or_else(|| WriteOutcome::Rejected {
                index,
                error: Error::new(
                    ErrorKind::Transient,
                    format!("Marketo answered nothing for this {item}"),
                )
                .with_operation(op)
                .set_temporary(),
            })
        })
        .collect()
}

/// The error of one skipped record (`status: "skipped"` with `reasons`).
pub fn record_error(reasons: &[ApiError], operation: &'static str) -> Error {
    let first = reasons.first();
    let code = first.map_or("", |r| r.code.as_str());
    let message = first.map_or("skipped without a reason", |r| r.message.as_str());
    let class = classify_code(code, message);
    let mut err = Error::new(
        kind_of(class, Duration::from_secs(1)),
        format!("Marketo skipped the record: {code} {message}"),
    )
    .with_operation(operation)
    .with_context(CTX_PROVIDER_CODE, code)
    .with_context(CTX_PROVIDER_MESSAGE, message);
    if class == CodeClass::Transient {
        err = err.set_temporary();
    }
    err
}

/// Reads Marketo's responses for `crm-http`: errors inside HTTP 200 bodies
/// first, HTTP statuses second.
///
/// | code | verdict |
/// |------|---------|
/// | 601, 602 | refresh the token once and re-send |
/// | 606, 615 | [`ErrorKind::RateLimited`], retried after the configured wait; with [`pausing`](Self::pausing) the shared limiter holds every caller for that wait |
/// | 607, 1029 quota | [`ErrorKind::QuotaExhausted`], not retried |
/// | 604, 608, 611, 613, 713, 1016, 1029 queue | [`ErrorKind::Transient`] |
/// | others | see [`classify_code`] |
#[derive(Clone, Debug)]
pub struct MarketoClassifier {
    rate_wait: Duration,
    pause: Option<Arc<RateLimiter>>,
}

impl MarketoClassifier {
    /// A classifier that asks for `rate_wait` after 606/615.
    pub fn new(rate_wait: Duration) -> Self {
        MarketoClassifier {
            rate_wait,
            pause: None,
        }
    }

    /// Also pauses `limiter` for the wait after a 606/615, so that every
    /// request sharing it (other callers, other clients of the instance)
    /// holds off until the window has passed, not only the refused one.
    /// The limiter must be adaptive (the default of
    /// [`crm_http::RateLimitConfig`]).
    #[must_use]
    pub fn pausing(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.pause = Some(limiter);
        self
    }

    /// The wait after a 606/615.
    pub fn rate_wait(&self) -> Duration {
        self.rate_wait
    }
}

impl Default for MarketoClassifier {
    /// Waits Marketo's rate-limit window, 20 s, after a 606/615.
    fn default() -> Self {
        MarketoClassifier::new(Duration::from_secs(20))
    }
}

impl ResponseClassifier for MarketoClassifier {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        if !r.status.is_success() {
            return DefaultClassifier.classify(r);
        }
        // CSV downloads and other non-JSON bodies are successes.
        if r.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Verdict::Success;
        }
        let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(r.body) else {
            return Verdict::Success;
        };
        if envelope.success {
            return Verdict::Success;
        }
        let first = envelope.errors.first();
        let code = first.map_or("", |e| e.code.as_str());
        let message = first.map_or("", |e| e.message.as_str());
        let class = classify_code(code, message);
        if class == CodeClass::RateLimited
            && let Some(limiter) = &self.pause
        {
            limiter.observe(&[
                RateLimitObservation::new(LimitScope::Window, 0).reset_after(self.rate_wait)
            ]);
        }
        let kind = kind_of(class, self.rate_wait);
        let mut err = r
            .error(kind)
            .with_context(CTX_PROVIDER_CODE, r.scrub(code))
            .with_context(CTX_PROVIDER_MESSAGE, r.scrub(message));
        match class {
            CodeClass::TokenRejected => Verdict::RefreshAuth(err),
            CodeClass::QuotaExhausted => Verdict::Failure(err.set_permanent()),
            CodeClass::Transient => Verdict::Failure(err.set_temporary()),
            _ => {
                if class != CodeClass::RateLimited {
                    err = err.set_permanent();
                }
                Verdict::Failure(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_http::reqwest::header::HeaderMap;
    use crm_http::reqwest::{Method, StatusCode};

    fn classify(body: &str) -> Verdict {
        classify_with(&MarketoClassifier::new(Duration::from_millis(250)), body)
    }

    /// `c`'s verdict on a 200 answer to `leads.get` with `body`.
    fn classify_with(c: &MarketoClassifier, body: &str) -> Verdict {
        let method = Method::GET;
        let headers = HeaderMap::new();
        let parts = ResponseParts::new(
            "marketo",
            "leads.get",
            &method,
            StatusCode::OK,
            &headers,
            body.as_bytes(),
            &[],
        );
        c.classify(&parts)
    }

    fn body(code: &str, message: &str) -> String {
        format!(
            r#"{{"requestId":"a#1","success":false,"errors":[{{"code":"{code}","message":"{message}"}}]}}"#
        )
    }

    fn failure(v: Verdict) -> Error {
        match v {
            Verdict::Failure(e) | Verdict::RefreshAuth(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn token_codes_refresh() {
        for code in ["601", "602"] {
            assert!(matches!(
                classify(&body(code, "Access token expired")),
                Verdict::RefreshAuth(_)
            ));
        }
    }

    #[test]
    fn rate_and_concurrency_retry_after_the_wait() {
        for code in ["606", "615"] {
            let e = failure(classify(&body(code, "Max rate limit exceeded")));
            assert!(e.is_retryable(), "{code}");
            assert_eq!(e.retry_after(), Some(Duration::from_millis(250)));
            assert_eq!(e.context_value(CTX_PROVIDER_CODE), Some(code));
        }
    }

    /// A 606 seen by a pausing classifier holds the shared limiter for the
    /// wait: the next acquire, by any caller, waits it out.
    #[tokio::test]
    async fn rate_limit_codes_pause_the_shared_limiter() {
        let wait = Duration::from_millis(300);
        let limiter = Arc::new(RateLimiter::new(crm_http::RateLimitConfig::unlimited()).unwrap());
        let c = MarketoClassifier::new(wait).pausing(Arc::clone(&limiter));
        let quick = tokio::time::Instant::now();
        drop(limiter.acquire().await.unwrap());
        assert!(quick.elapsed() < Duration::from_millis(100));
        let e = failure(classify_with(
            &c,
            &body("606", "Max rate limit '100' exceeded with in '20' secs"),
        ));
        assert_eq!(e.retry_after(), Some(wait));
        let held = tokio::time::Instant::now();
        drop(limiter.acquire().await.unwrap());
        assert!(
            held.elapsed() >= wait - Duration::from_millis(20),
            "{:?}",
            held.elapsed()
        );
        assert_eq!(
            MarketoClassifier::default().rate_wait(),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn quotas_stop() {
        let e = failure(classify(&body("607", "Daily quota reached")));
        assert_eq!(e.kind(), &ErrorKind::QuotaExhausted);
        assert!(!e.is_retryable());
        let e = failure(classify(&body("1029", "Export daily quota exceeded")));
        assert_eq!(e.kind(), &ErrorKind::QuotaExhausted);
        let e = failure(classify(&body("1029", "Too many jobs in queue")));
        assert_eq!(e.kind(), &ErrorKind::Transient);
        assert!(e.is_retryable());
    }

    #[test]
    fn other_codes_and_successes() {
        assert_eq!(
            failure(classify(&body("1003", "Invalid data"))).kind(),
            &ErrorKind::InvalidInput
        );
        assert_eq!(
            failure(classify(&body("610", "Requested resource not found"))).kind(),
            &ErrorKind::NotFound
        );
        assert!(matches!(
            classify(r#"{"requestId":"a#1","success":true,"result":[]}"#),
            Verdict::Success
        ));
        assert!(matches!(classify("id,email\n1,a@b.c\n"), Verdict::Success));
    }

    #[test]
    fn record_reasons_map_per_record() {
        let r = |code: &str| ApiError {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(
            record_error(&[r("1003")], "leads.sync").kind(),
            &ErrorKind::InvalidInput
        );
        assert_eq!(
            record_error(&[r("1004")], "leads.sync").kind(),
            &ErrorKind::NotFound
        );
        assert_eq!(
            record_error(&[r("1006")], "leads.sync").kind(),
            &ErrorKind::SchemaMismatch
        );
        assert!(record_error(&[r("611")], "leads.sync").is_retryable());
        let e: Error = MarketoError::UnknownObject("widgets".into()).into();
        assert_eq!(e.kind(), &ErrorKind::NotFound);
    }
}
