//! The service's error answer: a status and
//! `{"error": {"kind", "message", "field", "record"}}`.
//!
//! Messages never carry a credential, and personal data in them is masked
//! (`j***@example.com`) before the error is built: see
//! [`ApiError::from_crm`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_core::pii::{PiiFields, mask_emails_in};
use crm_core::{Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable kind (`invalid_input`, `not_found`, ...).
    pub kind: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// The request field at fault, as a JSON path (`socialProfiles[0].url`).
    pub field: Option<String>,
    /// The record at fault: its position in a batch (`[12]`) or its id.
    pub record: Option<String>,
}

/// The JSON body of an error.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable kind: `invalid_input`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `no_social_data`, `crm_rejected`,
    /// `crm_unavailable`, `rate_limited`, `internal`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// The request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The record at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl ApiError {
    /// An error with `status` and `kind`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            record: None,
        }
    }

    /// 422: the request is well-formed JSON but a value is wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message).with_field(field)
    }

    /// 404 with a message naming what was not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid token as `Authorization: Bearer <token>`",
        )
    }

    /// 403 naming the role needed.
    pub fn forbidden(needed: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {needed} role"),
        )
    }

    /// 500 for a failure of the service itself (its state store).
    pub fn internal(e: &Error) -> Self {
        tracing::error!(kind = %e.kind(), "state store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the service's state store failed ({})", e.kind()),
        )
    }

    /// Sets the field.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the record.
    #[must_use]
    pub fn with_record(mut self, record: impl Into<String>) -> Self {
        self.record = Some(record.into());
        self
    }

    /// The answer for an error of a CRM call about `input` (the request's
    /// JSON), with personal data of `pii` masked in the message.
    ///
    /// | error kind | status |
    /// |---|---|
    /// | invalid input (the CRM refused a value) | 422 `crm_rejected` |
    /// | schema mismatch (the CRM lacks a field) | 422 `invalid_input` |
    /// | not found | 404 |
    /// | auth | 502 (the stored credentials were refused) |
    /// | rate limited | 429, or 503 when the CRM's daily quota is spent |
    /// | rejected by the CRM (permanent, conflict) | 422 |
    /// | transient, anything else | 503 |
    pub fn from_crm(e: &Error, pii: &PiiFields, input: &serde_json::Value) -> Self {
        let message = pii.mask_json_values_in(input, &mask_emails_in(e.message()));
        // The CRM's name of the field at fault (Salesforce lists them in
        // `fields`), said in the request's terms.
        let field = e
            .context_value("field")
            .or_else(|| e.context_value("fields"))
            .and_then(|f| f.split(',').map(str::trim).find(|f| !f.is_empty()))
            .map(request_field);
        let (status, kind) = match e.kind() {
            // The CRM refused a value (a required field, a length, a
            // picklist): the record is kept for a person.
            ErrorKind::InvalidInput => (StatusCode::UNPROCESSABLE_ENTITY, "crm_rejected"),
            // The CRM lacks a field the service writes (a custom field).
            ErrorKind::SchemaMismatch => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Auth => (StatusCode::BAD_GATEWAY, "crm_auth"),
            ErrorKind::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorKind::QuotaExhausted => (StatusCode::SERVICE_UNAVAILABLE, "crm_quota_exhausted"),
            ErrorKind::Conflict | ErrorKind::Permanent => {
                (StatusCode::UNPROCESSABLE_ENTITY, "crm_rejected")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "crm_unavailable"),
        };
        let message = match e.kind() {
            ErrorKind::Auth => format!(
                "the CRM refused the integration's credentials; an admin must replace them ({message})"
            ),
            _ => message,
        };
        ApiError {
            status,
            kind,
            message,
            field,
            record: None,
        }
    }
}

/// The request's name (camelCase, seed 002) of a CRM field: `LastName`
/// and `lastname` are `lastName`; a name without one (a custom field) is
/// kept as the CRM spells it.
pub fn request_field(crm: &str) -> String {
    let known = [
        ("email", "email"),
        ("emails", "email"),
        ("firstname", "firstName"),
        ("first_name", "firstName"),
        ("lastname", "lastName"),
        ("last_name", "lastName"),
        ("name", "lastName"),
        ("phone", "phone"),
        ("phones", "phone"),
        ("company", "company"),
        ("accountid", "company"),
        ("leadsource", "source"),
        ("status", "status"),
        ("hs_lead_status", "status"),
    ];
    let lower = crm.to_ascii_lowercase();
    known
        .iter()
        .find(|(c, _)| *c == lower)
        .map_or_else(|| crm.to_owned(), |(_, r)| (*r).to_owned())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: ErrorDetail {
                    kind: self.kind.to_owned(),
                    message: self.message,
                    field: self.field,
                    record: self.record,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crm_field_names_are_said_in_the_request_terms() {
        let e = Error::new(
            ErrorKind::InvalidInput,
            "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName, Company]",
        )
        .with_context("fields", "LastName,Company");
        let a = ApiError::from_crm(&e, &PiiFields::new(), &serde_json::json!({}));
        assert_eq!(a.field.as_deref(), Some("lastName"));
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(request_field("Custom__c"), "Custom__c");
    }
}
