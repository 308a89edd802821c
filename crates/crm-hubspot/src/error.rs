//! HubSpot's errors and how they map onto [`crm_core::ErrorKind`].
//!
//! [`HubSpotClassifier`] reads every HTTP response for the shared client of
//! `crm-http`: a 429 whose body names the `DAILY` policy is
//! [`ErrorKind::QuotaExhausted`] (waiting seconds cannot help, so the run
//! stops with its checkpoint), while `TEN_SECONDLY_ROLLING` and `SECONDLY`
//! are [`ErrorKind::RateLimited`] and retried. [`HubSpotError`] holds the
//! failures that happen on our side of the wire (configuration, cursors,
//! webhook signatures).

use std::time::Duration;

use crm_core::{Error, ErrorKind};
use crm_http::classify::{CTX_PROVIDER_CODE, CTX_PROVIDER_MESSAGE};
use crm_http::{ResponseClassifier, ResponseParts, Verdict};

use crate::wire::{ErrorBody, RateLimitBody, RateLimitPolicy};

/// Context key carrying the 429 body's `policyName`.
pub const CTX_POLICY: &str = "policy_name";
/// Context key carrying HubSpot's error `category`.
pub const CTX_CATEGORY: &str = "category";
/// Context key carrying HubSpot's `correlationId`.
pub const CTX_CORRELATION_ID: &str = "correlation_id";

/// Failures of the HubSpot connector that are not an HTTP response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubSpotError {
    /// The configuration is incomplete or contradicts itself.
    #[error("invalid HubSpot configuration: {0}")]
    ConfigInvalid(String),
    /// A cursor made by another connector or an incompatible version.
    #[error("the cursor is not a HubSpot cursor of this version: {0}")]
    CursorInvalid(String),
    /// The object type is not one this connector reads or writes.
    #[error("unknown HubSpot object type `{0}`")]
    UnknownObject(String),
    /// A webhook request failed verification.
    #[error("webhook rejected: {0}")]
    WebhookRejected(&'static str),
    /// A webhook body is not HubSpot's event array.
    #[error("webhook body is not a HubSpot event array: {0}")]
    WebhookBody(String),
    /// A record cannot be turned into HubSpot properties.
    #[error("record cannot be written: {0}")]
    RecordInvalid(String),
}

impl From<HubSpotError> for Error {
    fn from(e: HubSpotError) -> Self {
        let kind = match &e {
            HubSpotError::WebhookRejected(_) => ErrorKind::Auth,
            HubSpotError::UnknownObject(_) => ErrorKind::NotFound,
            HubSpotError::ConfigInvalid(_)
            | HubSpotError::CursorInvalid(_)
            | HubSpotError::WebhookBody(_)
            | HubSpotError::RecordInvalid(_) => ErrorKind::InvalidInput,
        };
        Error::new(kind, e.to_string())
    }
}

/// Reads HubSpot's responses for `crm-http`.
///
/// | response | kind |
/// |----------|------|
/// | 429, `policyName` `DAILY` | [`ErrorKind::QuotaExhausted`] (not retried) |
/// | 429, any other policy | [`ErrorKind::RateLimited`] (retried; `Retry-After` if sent, else 1 s for `SECONDLY` and the rolling 10-second window's share otherwise) |
/// | 401 | refresh the token once, then [`ErrorKind::Auth`] |
/// | 403 (e.g. `MISSING_SCOPES`) | [`ErrorKind::Auth`] |
/// | 404 | [`ErrorKind::NotFound`] |
/// | 409 | [`ErrorKind::Conflict`] |
/// | 423 (account locked, busy), 408, 5xx except 501 | [`ErrorKind::Transient`] |
/// | other 4xx | [`ErrorKind::InvalidInput`] |
///
/// The error keeps HubSpot's `category`, `message` and `correlationId` as
/// context. Sources: HubSpot's "Error handling" reference and the usage
/// guidelines page (429 bodies name `policyName`; see SOURCES.md of the
/// bundled OpenAPI description).
#[derive(Clone, Copy, Debug, Default)]
pub struct HubSpotClassifier;

impl ResponseClassifier for HubSpotClassifier {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        let status = r.status.as_u16();
        if r.status.is_success() || r.status.is_redirection() || r.status.is_informational() {
            return Verdict::Success;
        }
        let json = r.json();
        let body: ErrorBody = json
            .as_ref()
            .and_then(|j| serde_json::from_value(j.clone()).ok())
            .unwrap_or_default();
        let kind = match status {
            429 => {
                let rl: RateLimitBody = json
                    .as_ref()
                    .and_then(|j| serde_json::from_value(j.clone()).ok())
                    .unwrap_or_default();
                let policy = rl.policy();
                if policy == RateLimitPolicy::Daily {
                    let err = Error::new(
                        ErrorKind::QuotaExhausted,
                        "HubSpot's daily API limit is used up (429, policy DAILY): \
                         stop with the checkpoint and resume after the account's midnight reset",
                    )
                    .with_operation(r.endpoint)
                    .with_context(crm_http::classify::CTX_STATUS, status)
                    .with_context(CTX_POLICY, policy.as_str());
                    return Verdict::Failure(with_body_context(err, &body).set_permanent());
                }
                let retry_after = r.retry_after().or_else(|| policy.default_wait());
                let err = with_body_context(r.error(ErrorKind::RateLimited { retry_after }), &body)
                    .with_context(CTX_POLICY, policy.as_str());
                return Verdict::Failure(err);
            }
            401 => {
                return Verdict::RefreshAuth(with_body_context(r.error(ErrorKind::Auth), &body));
            }
            403 => ErrorKind::Auth,
            404 | 410 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            408 | 423 | 500 | 502 | 503 | 504 => ErrorKind::Transient,
            400..=499 => ErrorKind::InvalidInput,
            _ => ErrorKind::Permanent,
        };
        Verdict::Failure(with_body_context(r.error(kind), &body))
    }
}

fn with_body_context(mut err: Error, body: &ErrorBody) -> Error {
    if let Some(category) = &body.category {
        if err.context_value(CTX_PROVIDER_CODE).is_none() {
            err = err.with_context(CTX_PROVIDER_CODE, category);
        }
        err = err.with_context(CTX_CATEGORY, category);
    }
    if let Some(id) = &body.correlation_id {
        err = err.with_context(CTX_CORRELATION_ID, id);
    }
    if let (None, Some(m)) = (err.context_value(CTX_PROVIDER_MESSAGE), &body.message) {
        err = err.with_context(CTX_PROVIDER_MESSAGE, m);
    }
    err
}

impl RateLimitPolicy {
    /// How long to wait when HubSpot sends no `Retry-After`: the per-second
    /// policy frees a slot within a second; the rolling 10-second window
    /// frees one as the oldest request in it ages out, so a short wait with
    /// the retry policy's backoff on top is enough.
    pub fn default_wait(&self) -> Option<Duration> {
        match self {
            RateLimitPolicy::Daily => None,
            RateLimitPolicy::Secondly => Some(Duration::from_secs(1)),
            RateLimitPolicy::TenSecondlyRolling | RateLimitPolicy::Unknown(_) => {
                Some(Duration::from_secs(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_http::reqwest::header::{HeaderMap, HeaderValue};
    use crm_http::reqwest::{Method, StatusCode};

    fn classify(status: u16, body: &str, headers: HeaderMap) -> Verdict {
        let method = Method::GET;
        let parts = ResponseParts::new(
            "hubspot",
            "contacts.list",
            &method,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
            &[],
        );
        HubSpotClassifier.classify(&parts)
    }

    fn failure(v: Verdict) -> Error {
        match v {
            Verdict::Failure(e) | Verdict::RefreshAuth(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn daily_policy_is_quota_exhausted_and_not_retryable() {
        let body = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c-1","policyName":"DAILY","groupName":"publicapi:private-app-daily:1"}"#;
        let e = failure(classify(429, body, HeaderMap::new()));
        assert_eq!(e.kind(), &ErrorKind::QuotaExhausted);
        assert!(!e.is_retryable());
        assert_eq!(e.context_value(CTX_POLICY), Some("DAILY"));
        assert!(e.to_string().contains("daily API limit"));
    }

    #[test]
    fn ten_secondly_policy_is_retryable_rate_limit() {
        let body = r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c-2","policyName":"TEN_SECONDLY_ROLLING"}"#;
        let e = failure(classify(429, body, HeaderMap::new()));
        assert!(matches!(e.kind(), ErrorKind::RateLimited { .. }));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(e.context_value(CTX_POLICY), Some("TEN_SECONDLY_ROLLING"));
    }

    #[test]
    fn retry_after_header_wins_over_policy_default() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        let e = failure(classify(429, r#"{"policyName":"SECONDLY"}"#, h));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn statuses_map_to_kinds() {
        let missing = r#"{"status":"error","message":"This app hasn't been granted all required scopes","category":"MISSING_SCOPES","correlationId":"c-3"}"#;
        let e = failure(classify(403, missing, HeaderMap::new()));
        assert_eq!(e.kind(), &ErrorKind::Auth);
        assert_eq!(e.context_value(CTX_CATEGORY), Some("MISSING_SCOPES"));
        assert_eq!(e.context_value(CTX_CORRELATION_ID), Some("c-3"));
        assert!(matches!(
            classify(401, "{}", HeaderMap::new()),
            Verdict::RefreshAuth(_)
        ));
        assert_eq!(
            failure(classify(404, "{}", HeaderMap::new())).kind(),
            &ErrorKind::NotFound
        );
        assert_eq!(
            failure(classify(409, "{}", HeaderMap::new())).kind(),
            &ErrorKind::Conflict
        );
        assert_eq!(
            failure(classify(423, "{}", HeaderMap::new())).kind(),
            &ErrorKind::Transient
        );
        assert_eq!(
            failure(classify(
                400,
                r#"{"category":"VALIDATION_ERROR"}"#,
                HeaderMap::new()
            ))
            .kind(),
            &ErrorKind::InvalidInput
        );
        assert!(matches!(
            classify(207, "{}", HeaderMap::new()),
            Verdict::Success
        ));
    }

    #[test]
    fn local_errors_convert() {
        let e: Error = HubSpotError::WebhookRejected("stale timestamp").into();
        assert_eq!(e.kind(), &ErrorKind::Auth);
        let e: Error = HubSpotError::UnknownObject("widgets".into()).into();
        assert_eq!(e.kind(), &ErrorKind::NotFound);
    }
}
