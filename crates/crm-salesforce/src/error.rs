//! Salesforce errors: the error codes of the REST API, their mapping to
//! [`crm_core::ErrorKind`], and the response classifier the HTTP client uses.
//!
//! Salesforce answers a failed REST call with a JSON array
//! `[{"message": "...", "errorCode": "...", "fields": [...]}]` and reports
//! per-record failures of sObject Collections as
//! `{"success": false, "errors": [{"statusCode", "message", "fields"}]}`
//! (see "Status Codes and Error Responses" in the REST API Developer Guide).
//! Both carry the same codes; [`ErrorCode::kind`] decides once what each
//! means for a sync.

use std::fmt;

use crm_core::{Error, ErrorKind};
use crm_http::classify::{CTX_PROVIDER_CODE, CTX_PROVIDER_MESSAGE};
use crm_http::{ResponseClassifier, ResponseParts, Verdict, default_classify};

use crate::wire::ApiErrorBody;

/// Context key naming the fields a Salesforce error is about (comma-separated).
pub const CTX_FIELDS: &str = "fields";
/// Context key set when a cursor can no longer be resumed and a full read is needed.
pub const CTX_FULL_RESYNC: &str = "full_resync_required";

/// A Salesforce error code (`errorCode` of REST errors, `statusCode` of
/// per-record results). Codes this crate does not know are kept as
/// [`ErrorCode::Unknown`] so a new code cannot break a sync.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The session (access token) expired or is invalid: refresh and retry.
    InvalidSessionId,
    /// The org's API request allocation (rolling 24 h) is used up, or a
    /// concurrency limit was hit (see [`ErrorCode::kind`]).
    RequestLimitExceeded,
    /// A row lock could not be taken in time: retry later.
    UnableToLockRow,
    /// The server is unavailable: retry later.
    ServerUnavailable,
    /// A field in the query or body does not exist.
    InvalidField,
    /// The sObject type does not exist or is not accessible.
    InvalidType,
    /// The SOQL is malformed.
    MalformedQuery,
    /// The query cursor or locator expired.
    InvalidQueryLocator,
    /// A required field has no value.
    RequiredFieldMissing,
    /// A text value is longer than the field allows.
    StringTooLong,
    /// An email field holds something that is not an email address.
    InvalidEmailAddress,
    /// A restricted picklist got a value outside its list.
    InvalidOrNullForRestrictedPicklist,
    /// A field cannot be set on create or update.
    InvalidFieldForInsertUpdate,
    /// A value has the wrong type for its field.
    InvalidTypeOnFieldInRecord,
    /// A number is outside the field's precision.
    NumberOutsideValidRange,
    /// An id is malformed.
    MalformedId,
    /// A reference points to no record.
    InvalidCrossReferenceKey,
    /// A unique field (an external id) already has this value.
    DuplicateValue,
    /// An external id matched more than one record.
    DuplicateExternalId,
    /// A validation rule rejected the record.
    FieldCustomValidationException,
    /// The record was deleted.
    EntityIsDeleted,
    /// No such resource or record.
    NotFound,
    /// The user lacks permission.
    InsufficientAccess,
    /// The body is not valid JSON or not the expected shape.
    JsonParserError,
    /// Any other code.
    Unknown(String),
}

impl ErrorCode {
    /// Parses a wire code.
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "INVALID_SESSION_ID" => ErrorCode::InvalidSessionId,
            "REQUEST_LIMIT_EXCEEDED" => ErrorCode::RequestLimitExceeded,
            "UNABLE_TO_LOCK_ROW" => ErrorCode::UnableToLockRow,
            "SERVER_UNAVAILABLE" => ErrorCode::ServerUnavailable,
            "INVALID_FIELD" => ErrorCode::InvalidField,
            "INVALID_TYPE" => ErrorCode::InvalidType,
            "MALFORMED_QUERY" => ErrorCode::MalformedQuery,
            "INVALID_QUERY_LOCATOR" => ErrorCode::InvalidQueryLocator,
            "REQUIRED_FIELD_MISSING" => ErrorCode::RequiredFieldMissing,
            "STRING_TOO_LONG" => ErrorCode::StringTooLong,
            "INVALID_EMAIL_ADDRESS" => ErrorCode::InvalidEmailAddress,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" => {
                ErrorCode::InvalidOrNullForRestrictedPicklist
            }
            "INVALID_FIELD_FOR_INSERT_UPDATE" => ErrorCode::InvalidFieldForInsertUpdate,
            "INVALID_TYPE_ON_FIELD_IN_RECORD" => ErrorCode::InvalidTypeOnFieldInRecord,
            "NUMBER_OUTSIDE_VALID_RANGE" => ErrorCode::NumberOutsideValidRange,
            "MALFORMED_ID" => ErrorCode::MalformedId,
            "INVALID_CROSS_REFERENCE_KEY" => ErrorCode::InvalidCrossReferenceKey,
            "DUPLICATE_VALUE" => ErrorCode::DuplicateValue,
            "DUPLICATE_EXTERNAL_ID" => ErrorCode::DuplicateExternalId,
            "FIELD_CUSTOM_VALIDATION_EXCEPTION" => ErrorCode::FieldCustomValidationException,
            "ENTITY_IS_DELETED" => ErrorCode::EntityIsDeleted,
            "NOT_FOUND" => ErrorCode::NotFound,
            "INSUFFICIENT_ACCESS_OR_READONLY" | "INSUFFICIENT_ACCESS" => {
                ErrorCode::InsufficientAccess
            }
            "JSON_PARSER_ERROR" => ErrorCode::JsonParserError,
            other => ErrorCode::Unknown(other.to_owned()),
        }
    }

    /// The wire code.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidSessionId => "INVALID_SESSION_ID",
            ErrorCode::RequestLimitExceeded => "REQUEST_LIMIT_EXCEEDED",
            ErrorCode::UnableToLockRow => "UNABLE_TO_LOCK_ROW",
            ErrorCode::ServerUnavailable => "SERVER_UNAVAILABLE",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::InvalidType => "INVALID_TYPE",
            ErrorCode::MalformedQuery => "MALFORMED_QUERY",
            ErrorCode::InvalidQueryLocator => "INVALID_QUERY_LOCATOR",
            ErrorCode::RequiredFieldMissing => "REQUIRED_FIELD_MISSING",
            ErrorCode::StringTooLong => "STRING_TOO_LONG",
            ErrorCode::InvalidEmailAddress => "INVALID_EMAIL_ADDRESS",
            ErrorCode::InvalidOrNullForRestrictedPicklist => {
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
            }
            ErrorCode::InvalidFieldForInsertUpdate => "INVALID_FIELD_FOR_INSERT_UPDATE",
            ErrorCode::InvalidTypeOnFieldInRecord => "INVALID_TYPE_ON_FIELD_IN_RECORD",
            ErrorCode::NumberOutsideValidRange => "NUMBER_OUTSIDE_VALID_RANGE",
            ErrorCode::MalformedId => "MALFORMED_ID",
            ErrorCode::InvalidCrossReferenceKey => "INVALID_CROSS_REFERENCE_KEY",
            ErrorCode::DuplicateValue => "DUPLICATE_VALUE",
            ErrorCode::DuplicateExternalId => "DUPLICATE_EXTERNAL_ID",
            ErrorCode::FieldCustomValidationException => "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            ErrorCode::EntityIsDeleted => "ENTITY_IS_DELETED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InsufficientAccess => "INSUFFICIENT_ACCESS_OR_READONLY",
            ErrorCode::JsonParserError => "JSON_PARSER_ERROR",
            ErrorCode::Unknown(s) => s,
        }
    }

    /// What the code means for a sync. `message` tells apart the two
    /// meanings of `REQUEST_LIMIT_EXCEEDED`: the daily allocation
    /// ("TotalRequests Limit exceeded"), which waiting seconds cannot
    /// restore, and the concurrent long-running request limit
    /// ("ConcurrentPerOrgLongTxn Limit exceeded"), which clears as running
    /// requests finish. `status` decides for unknown codes.
    pub fn kind(&self, message: &str, status: Option<u16>) -> ErrorKind {
        match self {
            ErrorCode::InvalidSessionId | ErrorCode::InsufficientAccess => ErrorKind::Auth,
            ErrorCode::RequestLimitExceeded => {
                if message.to_ascii_lowercase().contains("concurrent") {
                    ErrorKind::RateLimited { retry_after: None }
                } else {
                    ErrorKind::QuotaExhausted
                }
            }
            ErrorCode::UnableToLockRow | ErrorCode::ServerUnavailable => ErrorKind::Transient,
            ErrorCode::InvalidField | ErrorCode::InvalidType => ErrorKind::SchemaMismatch,
            ErrorCode::DuplicateValue | ErrorCode::DuplicateExternalId => ErrorKind::Conflict,
            ErrorCode::EntityIsDeleted | ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::MalformedQuery
            | ErrorCode::InvalidQueryLocator
            | ErrorCode::RequiredFieldMissing
            | ErrorCode::StringTooLong
            | ErrorCode::InvalidEmailAddress
            | ErrorCode::InvalidOrNullForRestrictedPicklist
            | ErrorCode::InvalidFieldForInsertUpdate
            | ErrorCode::InvalidTypeOnFieldInRecord
            | ErrorCode::NumberOutsideValidRange
            | ErrorCode::MalformedId
            | ErrorCode::InvalidCrossReferenceKey
            | ErrorCode::FieldCustomValidationException
            | ErrorCode::JsonParserError => ErrorKind::InvalidInput,
            ErrorCode::Unknown(_) => match status {
                Some(401 | 403) => ErrorKind::Auth,
                Some(404) => ErrorKind::NotFound,
                Some(409) => ErrorKind::Conflict,
                Some(500 | 502 | 503 | 504) => ErrorKind::Transient,
                Some(400..=499) => ErrorKind::InvalidInput,
                _ => ErrorKind::Permanent,
            },
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`crm_core::Error`] for one Salesforce error (of a call or of one
/// record), with the code, message and fields as context.
pub fn api_error(code: &str, message: &str, fields: &[String], status: Option<u16>) -> Error {
    let parsed = ErrorCode::parse(code);
    let kind = parsed.kind(message, status);
    let mut err = Error::new(kind, format!("{code}: {message}"))
        .with_context(CTX_PROVIDER_CODE, code)
        .with_context(CTX_PROVIDER_MESSAGE, message);
    if !fields.is_empty() {
        err = err.with_context(CTX_FIELDS, fields.join(","));
    }
    if let Some(status) = status {
        err = err.with_context("status", status);
    }
    err
}

/// Errors of this crate that are not responses of Salesforce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SalesforceError {
    /// The configuration is not usable.
    #[error("invalid Salesforce configuration: {0}")]
    ConfigInvalid(String),
    /// A field or object name is not a valid Salesforce identifier.
    #[error("not a valid Salesforce name: {0:?}")]
    InvalidName(String),
    /// A response did not have the documented shape.
    #[error("unexpected Salesforce response: {0}")]
    Wire(String),
    /// A Bulk API CSV document could not be read.
    #[error("Bulk API CSV, line {line}: {message}")]
    Csv {
        /// The 1-based line where the problem starts.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The cursor is older than the recycle bin keeps deleted records.
    #[error(
        "the cursor ({cursor}) is older than the recycle bin window of {window_days} days: \
         deletes since then may have been purged, so a full resync is required"
    )]
    CursorTooOld {
        /// The cursor's timestamp.
        cursor: String,
        /// The window in days.
        window_days: i64,
    },
    /// A Bulk API job ended in state `Failed` or `Aborted`.
    #[error("Bulk API job {job_id} ended in state {state}: {message}")]
    JobFailed {
        /// The job id.
        job_id: String,
        /// The final state.
        state: String,
        /// Salesforce's error message.
        message: String,
    },
}

impl From<SalesforceError> for Error {
    fn from(e: SalesforceError) -> Self {
        let kind = match &e {
            SalesforceError::ConfigInvalid(_) | SalesforceError::InvalidName(_) => {
                ErrorKind::InvalidInput
            }
            SalesforceError::Wire(_) | SalesforceError::Csv { .. } => ErrorKind::SchemaMismatch,
            SalesforceError::CursorTooOld { .. } | SalesforceError::JobFailed { .. } => {
                ErrorKind::Permanent
            }
        };
        let mut err = Error::new(kind, e.to_string());
        if matches!(e, SalesforceError::CursorTooOld { .. }) {
            err = err.with_context(CTX_FULL_RESYNC, true);
        }
        err
    }
}

/// Reads Salesforce error responses: the `[{"message","errorCode","fields"}]`
/// body decides the kind through [`ErrorCode::kind`]; a 401 (or
/// `INVALID_SESSION_ID`) asks the client to refresh the session once.
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesforceClassifier;

impl ResponseClassifier for SalesforceClassifier {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        let status = r.status.as_u16();
        if status < 400 {
            return Verdict::Success;
        }
        let first = serde_json::from_slice::<Vec<ApiErrorBody>>(r.body)
            .ok()
            .and_then(|v| v.into_iter().next());
        let Some(body) = first else {
            return default_classify(r);
        };
        let code = ErrorCode::parse(&body.error_code);
        if status == 401 || code == ErrorCode::InvalidSessionId {
            return Verdict::RefreshAuth(r.error(ErrorKind::Auth));
        }
        let kind = match code.kind(&body.message, Some(status)) {
            ErrorKind::RateLimited { .. } => ErrorKind::RateLimited {
                retry_after: r.retry_after(),
            },
            other => other,
        };
        let mut err = r.error(kind);
        if !body.fields.is_empty() {
            err = err.with_context(CTX_FIELDS, r.scrub(&body.fields.join(",")));
        }
        Verdict::Failure(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let k = |c: &str, m: &str| ErrorCode::parse(c).kind(m, Some(400));
        assert_eq!(k("INVALID_SESSION_ID", ""), ErrorKind::Auth);
        assert_eq!(
            k("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            ErrorKind::QuotaExhausted
        );
        assert_eq!(
            k(
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded."
            ),
            ErrorKind::RateLimited { retry_after: None }
        );
        assert_eq!(k("UNABLE_TO_LOCK_ROW", ""), ErrorKind::Transient);
        assert_eq!(k("INVALID_FIELD", ""), ErrorKind::SchemaMismatch);
        assert_eq!(k("REQUIRED_FIELD_MISSING", ""), ErrorKind::InvalidInput);
        assert_eq!(k("DUPLICATE_VALUE", ""), ErrorKind::Conflict);
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW").kind("", Some(503)),
            ErrorKind::Transient
        );
        assert_eq!(ErrorCode::parse("SOMETHING_NEW").as_str(), "SOMETHING_NEW");
    }

    #[test]
    fn per_record_errors_carry_code_and_fields() {
        let e = api_error(
            "STRING_TOO_LONG",
            "Last Name: data value too large",
            &["LastName".to_owned()],
            None,
        );
        assert_eq!(e.kind(), &ErrorKind::InvalidInput);
        assert!(!e.is_retryable());
        assert_eq!(e.context_value(CTX_PROVIDER_CODE), Some("STRING_TOO_LONG"));
        assert_eq!(e.context_value(CTX_FIELDS), Some("LastName"));
        assert!(api_error("UNABLE_TO_LOCK_ROW", "x", &[], None).is_retryable());
    }

    #[test]
    fn stale_cursor_says_full_resync() {
        let e: Error = SalesforceError::CursorTooOld {
            cursor: "2020-01-01T00:00:00Z".into(),
            window_days: 15,
        }
        .into();
        assert_eq!(e.context_value(CTX_FULL_RESYNC), Some("true"));
        assert!(e.message().contains("full resync"));
    }
}
