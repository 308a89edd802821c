//! Pipedrive's errors and how they map onto [`crm_core::ErrorKind`].
//!
//! Pipedrive answers failures with `{"success": false, "error": "...",
//! "error_info": "..."}`. [`PipedriveClassifier`] reads every HTTP response
//! for `crm-http`: a 429 whose daily budget is spent (`x-daily-requests-left: 0`
//! or a body naming the daily limit) is [`ErrorKind::QuotaExhausted`] (the
//! run stops with its checkpoint and resumes after the reset at midnight
//! UTC), any other 429 is [`ErrorKind::RateLimited`] and retried after
//! `Retry-After` / `x-ratelimit-reset`.

use std::time::Duration;

use crm_core::{Error, ErrorKind};
use crm_http::classify::{CTX_PROVIDER_CODE, CTX_PROVIDER_MESSAGE, CTX_STATUS};
use crm_http::{ResponseClassifier, ResponseParts, Verdict};

use crate::wire::ErrorBody;

/// Context key carrying Pipedrive's `error_info`.
pub const CTX_ERROR_INFO: &str = "error_info";
/// Header with the requests left today (API-token requests).
pub const HEADER_DAILY_LEFT: &str = "x-daily-requests-left";

/// Failures of the Pipedrive connector that are not an HTTP response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipedriveError {
    /// The configuration is incomplete or contradicts itself.
    #[error("invalid Pipedrive configuration: {0}")]
    ConfigInvalid(String),
    /// A cursor made by another connector or an incompatible version.
    #[error("the cursor is not a Pipedrive cursor of this version: {0}")]
    CursorInvalid(String),
    /// The object is not one this connector reads or writes.
    #[error("unknown Pipedrive object `{0}`")]
    UnknownObject(String),
    /// A field name resolves to no standard or custom field.
    #[error(
        "`{object}` has no field named `{field}` (custom fields are matched by name or by their 40-character key)"
    )]
    UnknownField {
        /// The object.
        object: String,
        /// The name given.
        field: String,
    },
    /// An option label that the enum/set field does not offer.
    #[error("field `{field}` has no option `{label}`")]
    UnknownOption {
        /// The field's name.
        field: String,
        /// The label given.
        label: String,
    },
    /// A record cannot be turned into a Pipedrive body.
    #[error("record cannot be written: {0}")]
    RecordInvalid(String),
    /// A webhook request failed verification.
    #[error("webhook rejected: {0}")]
    WebhookRejected(&'static str),
    /// A webhook body is not a Pipedrive event.
    #[error("webhook body is not a Pipedrive event: {0}")]
    WebhookBody(String),
    /// An answer without the expected `data`.
    #[error("unexpected Pipedrive answer: {0}")]
    UnexpectedAnswer(String),
}

impl From<PipedriveError> for Error {
    fn from(e: PipedriveError) -> Self {
        let kind = match &e {
            PipedriveError::WebhookRejected(_) => ErrorKind::Auth,
            PipedriveError::UnknownObject(_) => ErrorKind::NotFound,
            PipedriveError::UnknownField { .. } | PipedriveError::UnknownOption { .. } => {
                ErrorKind::SchemaMismatch
            }
            PipedriveError::UnexpectedAnswer(_) => ErrorKind::Permanent,
            PipedriveError::ConfigInvalid(_)
            | PipedriveError::CursorInvalid(_)
            | PipedriveError::WebhookBody(_)
            | PipedriveError::RecordInvalid(_) => ErrorKind::InvalidInput,
        };
        Error::new(kind, e.to_string())
    }
}

/// Reads Pipedrive's responses for `crm-http`.
///
/// | response | kind |
/// |----------|------|
/// | 429 with `x-daily-requests-left: 0`, or naming the daily limit | [`ErrorKind::QuotaExhausted`] (not retried) |
/// | other 429 | [`ErrorKind::RateLimited`] (`Retry-After`, else `x-ratelimit-reset`, else 2 s: Pipedrive's window) |
/// | 401 | refresh the token once, then [`ErrorKind::Auth`] |
/// | 402 (account not open), 403 | [`ErrorKind::Auth`] |
/// | 404, 410 | [`ErrorKind::NotFound`] |
/// | 409 | [`ErrorKind::Conflict`] |
/// | 408, 5xx but 501 | [`ErrorKind::Transient`] |
/// | other 4xx (400, 422 validation) | [`ErrorKind::InvalidInput`] |
#[derive(Clone, Copy, Debug, Default)]
pub struct PipedriveClassifier;

impl ResponseClassifier for PipedriveClassifier {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        let status = r.status.as_u16();
        if r.status.is_success() || r.status.is_redirection() || r.status.is_informational() {
            return Verdict::Success;
        }
        let body: ErrorBody = r
            .json()
            .and_then(|j| serde_json::from_value(j).ok())
            .unwrap_or_default();
        let kind = match status {
            429 => {
                let daily_left = r
                    .headers
                    .get(HEADER_DAILY_LEFT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let says_daily = body
                    .error
                    .as_deref()
                    .is_some_and(|m| m.to_lowercase().contains("daily"));
                if daily_left == Some(0) || says_daily {
                    let err = Error::new(
                        ErrorKind::QuotaExhausted,
                        "Pipedrive's daily request budget is used up (429): \
                         stop with the checkpoint and resume after the reset at midnight UTC",
                    )
                    .with_operation(r.endpoint)
                    .with_context(CTX_STATUS, status);
                    return Verdict::Failure(with_body(err, &body).set_permanent());
                }
                let retry_after = r.retry_after().or_else(|| {
                    r.headers
                        .get("x-ratelimit-reset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .filter(|s| *s < 3_600)
                        .map(|s| Duration::from_secs(s.max(1)))
                        .or(Some(Duration::from_secs(2)))
                });
                return Verdict::Failure(with_body(
                    r.error(ErrorKind::RateLimited { retry_after }),
                    &body,
                ));
            }
            401 => return Verdict::RefreshAuth(with_body(r.error(ErrorKind::Auth), &body)),
            402 | 403 => ErrorKind::Auth,
            404 | 410 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            408 | 500 | 502 | 503 | 504 => ErrorKind::Transient,
            400..=499 => ErrorKind::InvalidInput,
            _ => ErrorKind::Permanent,
        };
        Verdict::Failure(with_body(r.error(kind), &body))
    }
}

fn with_body(mut err: Error, body: &ErrorBody) -> Error {
    if let (None, Some(m)) = (err.context_value(CTX_PROVIDER_MESSAGE), &body.error) {
        err = err.with_context(CTX_PROVIDER_MESSAGE, m);
    }
    if let (Some(code), None) = (&body.error_code, err.context_value(CTX_PROVIDER_CODE)) {
        err = err.with_context(CTX_PROVIDER_CODE, code);
    }
    if let Some(info) = &body.error_info {
        err = err.with_context(CTX_ERROR_INFO, info);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_http::reqwest::header::{HeaderMap, HeaderValue};
    use crm_http::reqwest::{Method, StatusCode};

    fn classify(status: u16, body: &str, headers: HeaderMap) -> Verdict {
        let method = Method::GET;
        let parts = ResponseParts::new(
            "pipedrive",
            "persons.list",
            &method,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
            &[],
        );
        PipedriveClassifier.classify(&parts)
    }

    fn failure(v: Verdict) -> Error {
        match v {
            Verdict::Failure(e) | Verdict::RefreshAuth(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn daily_budget_is_quota_exhausted() {
        let mut h = HeaderMap::new();
        h.insert(HEADER_DAILY_LEFT, HeaderValue::from_static("0"));
        let e = failure(classify(
            429,
            r#"{"success":false,"error":"Request over limit","error_info":"Please check developers.pipedrive.com"}"#,
            h,
        ));
        assert_eq!(e.kind(), &ErrorKind::QuotaExhausted);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("daily request budget"));
        let e = failure(classify(
            429,
            r#"{"success":false,"error":"Daily request limit reached"}"#,
            HeaderMap::new(),
        ));
        assert_eq!(e.kind(), &ErrorKind::QuotaExhausted);
    }

    #[test]
    fn window_429_is_retryable_with_the_reset_hint() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("3"));
        h.insert(HEADER_DAILY_LEFT, HeaderValue::from_static("120"));
        let e = failure(classify(
            429,
            r#"{"success":false,"error":"Request over limit"}"#,
            h,
        ));
        assert!(matches!(e.kind(), ErrorKind::RateLimited { .. }));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        let e = failure(classify(429, "{}", h));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn statuses_map_to_kinds_with_error_info() {
        let e = failure(classify(
            400,
            r#"{"success":false,"error":"Invalid field value","error_info":"value must be a number","data":null,"additional_data":null}"#,
            HeaderMap::new(),
        ));
        assert_eq!(e.kind(), &ErrorKind::InvalidInput);
        assert_eq!(
            e.context_value(CTX_ERROR_INFO),
            Some("value must be a number")
        );
        assert!(matches!(
            classify(
                401,
                r#"{"success":false,"error":"unauthorized access"}"#,
                HeaderMap::new()
            ),
            Verdict::RefreshAuth(_)
        ));
        for (s, k) in [
            (402, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (404, ErrorKind::NotFound),
            (410, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (503, ErrorKind::Transient),
            (422, ErrorKind::InvalidInput),
        ] {
            assert_eq!(
                failure(classify(s, "{}", HeaderMap::new())).kind(),
                &k,
                "{s}"
            );
        }
        assert!(matches!(
            classify(201, "{}", HeaderMap::new()),
            Verdict::Success
        ));
    }

    #[test]
    fn local_errors_convert() {
        let e: Error = PipedriveError::WebhookRejected("bad credentials").into();
        assert_eq!(e.kind(), &ErrorKind::Auth);
        let e: Error = PipedriveError::UnknownField {
            object: "persons".into(),
            field: "Shoe size".into(),
        }
        .into();
        assert_eq!(e.kind(), &ErrorKind::SchemaMismatch);
    }
}
