//! Turning provider responses into [`crm_core::Error`]s.
//!
//! Each provider crate implements [`ResponseClassifier`] to map its error
//! responses (including the ones that arrive as HTTP 200 with an error body,
//! as Marketo's do) to an [`ErrorKind`] with the provider's code and message
//! kept as context. The client asks the classifier about every response; the
//! default, [`DefaultClassifier`], decides by status code and reads the common
//! JSON error shapes.

use std::time::SystemTime;

use crm_core::{Error, ErrorKind};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::redact;
use crate::retry::parse_retry_after;

/// Context key for the HTTP status of a failed response.
pub const CTX_STATUS: &str = "status";
/// Context key for the provider's error code (e.g. `INVALID_FIELD`, `601`).
pub const CTX_PROVIDER_CODE: &str = "provider_code";
/// Context key for the provider's error message.
pub const CTX_PROVIDER_MESSAGE: &str = "provider_message";
/// Context key for the scrubbed, truncated response body.
pub const CTX_BODY: &str = "body";
/// Context key for a server-requested delay in milliseconds, read from
/// `Retry-After` on any failure (a 503 may carry one too). The client waits
/// this long before a retry; [`Error::retry_after`] of a
/// [`ErrorKind::RateLimited`] error takes precedence.
pub const CTX_RETRY_AFTER_MS: &str = "retry_after_ms";
/// Context key for the provider name.
pub const CTX_PROVIDER: &str = "provider";

/// A response as the classifier sees it: the body is complete (up to the
/// client's size limit) and not yet scrubbed, so use [`ResponseParts::scrub`]
/// or [`ResponseParts::body_snippet`] for anything that goes into an error.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResponseParts<'a> {
    /// The provider name given to the client builder.
    pub provider: &'a str,
    /// The endpoint label of the request.
    pub endpoint: &'static str,
    /// The request method.
    pub method: &'a Method,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: &'a HeaderMap,
    /// The response body.
    pub body: &'a [u8],
    known_secrets: &'a [&'a str],
}

impl<'a> ResponseParts<'a> {
    /// Builds the view of a response (for classifier tests; the client builds
    /// it for you). `known_secrets` are values masked wherever they appear.
    pub fn new(
        provider: &'a str,
        endpoint: &'static str,
        method: &'a Method,
        status: StatusCode,
        headers: &'a HeaderMap,
        body: &'a [u8],
        known_secrets: &'a [&'a str],
    ) -> Self {
        ResponseParts {
            provider,
            endpoint,
            method,
            status,
            headers,
            body,
            known_secrets,
        }
    }

    /// The body, scrubbed of secrets and truncated, for error context.
    pub fn body_snippet(&self) -> String {
        redact::scrub(self.body, self.known_secrets)
    }

    /// Scrubs a piece of text taken from the response.
    pub fn scrub(&self, text: &str) -> String {
        redact::scrub_text(text, self.known_secrets)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(self.body).ok()
    }

    /// The `Retry-After` header as a delay (seconds or HTTP-date).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?;
        parse_retry_after(value, SystemTime::now())
    }

    /// An error of `kind` for this response, with status, provider code and
    /// message (read from common JSON error shapes), `Retry-After` and the
    /// scrubbed body as context. Provider classifiers start from this and adjust.
    pub fn error(&self, kind: ErrorKind) -> Error {
        let (code, message) = self
            .json()
            .as_ref()
            .map(provider_code_message)
            .unwrap_or_default();
        let summary = match &message {
            Some(m) => format!(
                "HTTP {} from {}: {}",
                self.status.as_u16(),
                self.provider,
                self.scrub(m)
            ),
            None => format!(
                "HTTP {} {} from {}",
                self.status.as_u16(),
                self.status.canonical_reason().unwrap_or(""),
                self.provider
            ),
        };
        let mut err = Error::new(kind, summary)
            .with_operation(self.endpoint)
            .with_context(CTX_STATUS, self.status.as_u16());
        if let Some(code) = code {
            err = err.with_context(CTX_PROVIDER_CODE, self.scrub(&code));
        }
        if let Some(message) = message {
            err = err.with_context(CTX_PROVIDER_MESSAGE, self.scrub(&message));
        }
        if let Some(after) = self.retry_after() {
            err = err.with_context(CTX_RETRY_AFTER_MS, after.as_millis());
        }
        if !self.body.is_empty() {
            err = err.with_context(CTX_BODY, self.body_snippet());
        }
        err
    }
}

/// What the client does with a response.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// The call succeeded; the response goes to the caller.
    Success,
    /// The call failed with this error. Whether it is retried depends on
    /// [`Error::is_retryable`] and the request's idempotency.
    Failure(Error),
    /// The access token was rejected (HTTP 401, Marketo's 601/602): the client
    /// refreshes the token once and re-sends; if that fails too, this error is
    /// returned.
    RefreshAuth(Error),
}

/// A provider's reading of its responses.
///
/// ```
/// use crm_core::ErrorKind;
/// use crm_http::{ResponseClassifier, ResponseParts, Verdict, DefaultClassifier};
///
/// /// Marketo answers HTTP 200 with `{"success": false, "errors": [...]}`.
/// struct Marketo;
///
/// impl ResponseClassifier for Marketo {
///     fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
///         let Some(json) = r.json() else { return DefaultClassifier.classify(r) };
///         if json["success"] == false {
///             let code = json["errors"][0]["code"].as_str().unwrap_or_default();
///             return match code {
///                 "601" | "602" => Verdict::RefreshAuth(r.error(ErrorKind::Auth)),
///                 "606" | "615" => Verdict::Failure(
///                     r.error(ErrorKind::RateLimited { retry_after: None })),
///                 "607" => Verdict::Failure(r.error(ErrorKind::QuotaExhausted)),
///                 _ => Verdict::Failure(r.error(ErrorKind::Permanent)),
///             };
///         }
///         DefaultClassifier.classify(r)
///     }
/// }
/// ```
pub trait ResponseClassifier: Send + Sync + 'static {
    /// Decides what a response means. The default is [`default_classify`].
    fn classify(&self, response: &ResponseParts<'_>) -> Verdict {
        default_classify(response)
    }
}

/// Classification by status code alone; see [`default_classify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl ResponseClassifier for DefaultClassifier {}

/// Classifies by status:
///
/// | status | verdict |
/// |--------|---------|
/// | 2xx, 3xx | success |
/// | 401 | refresh the token once, then [`ErrorKind::Auth`] |
/// | 403 | [`ErrorKind::Auth`] |
/// | 404, 410 | [`ErrorKind::NotFound`] |
/// | 409, 412 | [`ErrorKind::Conflict`] |
/// | 408, 500, 502, 503, 504 | [`ErrorKind::Transient`] (retryable) |
/// | 429 | [`ErrorKind::RateLimited`] with `Retry-After` (retryable) |
/// | other 4xx | [`ErrorKind::InvalidInput`] |
/// | other 5xx | [`ErrorKind::Permanent`] |
pub fn default_classify(r: &ResponseParts<'_>) -> Verdict {
    let status = r.status;
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return Verdict::Success;
    }
    let kind = match status.as_u16() {
        401 => return Verdict::RefreshAuth(r.error(ErrorKind::Auth)),
        403 => ErrorKind::Auth,
        404 | 410 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::Conflict,
        408 | 500 | 502 | 503 | 504 => ErrorKind::Transient,
        429 => ErrorKind::RateLimited {
            retry_after: r.retry_after(),
        },
        400..=499 => ErrorKind::InvalidInput,
        _ => ErrorKind::Permanent,
    };
    Verdict::Failure(r.error(kind))
}

/// Reads a provider error code and message from the common JSON shapes:
/// `{"error": "...", "error_description": "..."}` (OAuth),
/// `[{"errorCode": "...", "message": "..."}]` (Salesforce),
/// `{"errors": [{"code": "...", "message": "..."}]}` (Marketo),
/// `{"category": "...", "message": "..."}` (HubSpot),
/// `{"error": {"code": 429, "status": "...", "message": "..."}}` (Google).
pub fn provider_code_message(json: &Value) -> (Option<String>, Option<String>) {
    let mut node = json;
    // Descend into the first error of a list, or a nested error object.
    for _ in 0..3 {
        match node {
            Value::Array(items) => match items.first() {
                Some(first) => node = first,
                None => return (None, None),
            },
            Value::Object(map) => {
                if let Some(inner @ Value::Object(_)) = map.get("error") {
                    node = inner;
                } else if let Some(Value::Array(items)) = map.get("errors") {
                    match items.first() {
                        Some(first) => node = first,
                        None => break,
                    }
                } else {
                    break;
                }
            }
            _ => return (None, None),
        }
    }
    let Value::Object(map) = node else {
        return (None, None);
    };
    let text = |keys: &[&str]| {
        keys.iter().find_map(|k| match map.get(*k) {
            // HubSpot's `"status": "error"` says nothing; skip it.
            Some(Value::String(s)) if !s.is_empty() && !s.eq_ignore_ascii_case("error") => {
                Some(s.clone())
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let code = text(&[
        "errorCode",
        "error_code",
        "category",
        "status",
        "code",
        "error",
    ]);
    let message = text(&[
        "message",
        "error_description",
        "errorMessage",
        "error_message",
        "detail",
        "title",
    ])
    .or_else(|| text(&["error"]).filter(|e| Some(e) != code.as_ref()));
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify(status: u16, headers: HeaderMap, body: &[u8]) -> Verdict {
        let method = Method::GET;
        let r = ResponseParts::new(
            "test",
            "things.get",
            &method,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body,
            &["KNOWN-SECRET-1"],
        );
        default_classify(&r)
    }

    fn failure(v: Verdict) -> Error {
        match v {
            Verdict::Failure(e) | Verdict::RefreshAuth(e) => e,
            Verdict::Success => panic!("expected a failure"),
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert!(matches!(
            classify(200, HeaderMap::new(), b""),
            Verdict::Success
        ));
        assert!(matches!(
            classify(401, HeaderMap::new(), b""),
            Verdict::RefreshAuth(_)
        ));
        let cases = [
            (403, ErrorKind::Auth, false),
            (404, ErrorKind::NotFound, false),
            (409, ErrorKind::Conflict, false),
            (400, ErrorKind::InvalidInput, false),
            (414, ErrorKind::InvalidInput, false),
            (500, ErrorKind::Transient, true),
            (502, ErrorKind::Transient, true),
            (503, ErrorKind::Transient, true),
            (504, ErrorKind::Transient, true),
            (501, ErrorKind::Permanent, false),
        ];
        for (status, kind, retryable) in cases {
            let e = failure(classify(status, HeaderMap::new(), b""));
            assert_eq!(e.kind(), &kind, "{status}");
            assert_eq!(e.is_retryable(), retryable, "{status}");
            assert_eq!(
                e.context_value(CTX_STATUS),
                Some(status.to_string().as_str())
            );
        }
    }

    #[test]
    fn rate_limit_reads_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        let e = failure(classify(429, h, b""));
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(2)));
        assert!(e.is_retryable());
    }

    #[test]
    fn provider_codes_are_kept_and_secrets_scrubbed() {
        let body = br#"[{"errorCode":"INVALID_SESSION_ID","message":"Session expired for KNOWN-SECRET-1","access_token":"AT-zzzzzz"}]"#;
        let e = failure(classify(400, HeaderMap::new(), body));
        assert_eq!(
            e.context_value(CTX_PROVIDER_CODE),
            Some("INVALID_SESSION_ID")
        );
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("Session expired"));
        assert!(!shown.contains("KNOWN-SECRET-1"), "{shown}");
        assert!(!shown.contains("AT-zzzzzz"), "{shown}");
    }

    #[test]
    fn common_error_shapes() {
        let cases = [
            (
                json!({"error": "invalid_grant", "error_description": "expired"}),
                "invalid_grant",
                "expired",
            ),
            (
                json!([{"errorCode": "INVALID_FIELD", "message": "No such column"}]),
                "INVALID_FIELD",
                "No such column",
            ),
            (
                json!({"success": false, "errors": [{"code": "601", "message": "Access token invalid"}]}),
                "601",
                "Access token invalid",
            ),
            (
                json!({"status": "error", "category": "RATE_LIMITS", "message": "Too many"}),
                "RATE_LIMITS",
                "Too many",
            ),
            (
                json!({"success": false, "error": "Unauthorized", "errorCode": 401}),
                "401",
                "Unauthorized",
            ),
            (
                json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota"}}),
                "RESOURCE_EXHAUSTED",
                "Quota",
            ),
        ];
        for (json, code, message) in cases {
            let (c, m) = provider_code_message(&json);
            assert_eq!(c.as_deref(), Some(code), "{json}");
            assert_eq!(m.as_deref(), Some(message), "{json}");
        }
        assert_eq!(
            provider_code_message(&json!({"success": false, "error": "Unauthorized"}))
                .1
                .as_deref(),
            None
        );
        assert_eq!(provider_code_message(&json!([])), (None, None));
    }
}
