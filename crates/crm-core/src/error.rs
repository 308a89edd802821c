//! The one error type every crate of the workspace converts into.
//!
//! An [`Error`] carries an [`ErrorKind`] (what went wrong, in terms a sync
//! orchestrator can act on), a [`Retry`] state (decided once, where the
//! response or row was parsed), the operation that failed and key-value
//! context. Each crate keeps its own `thiserror` enum for detail and converts
//! it into this type at its boundary.
//!
//! ```
//! use std::time::Duration;
//! use crm_core::{Error, ErrorKind};
//!
//! let err = Error::new(ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(2)) },
//!                      "429 from provider")
//!     .with_operation("contacts.read")
//!     .with_context("status", 429);
//! assert!(err.is_retryable());
//! assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
//! assert!(err.to_string().contains("contacts.read"));
//! ```

use std::fmt;
use std::time::Duration;

/// What went wrong, in terms the orchestrator acts on.
///
/// The seeds' error table maps onto these kinds: a connection failure is
/// [`ErrorKind::Transient`] (retry with backoff), a schema mismatch pauses the
/// sync, a validation failure skips the record, rate limiting queues requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Credentials are missing, invalid, expired beyond refresh, or lack a scope.
    Auth,
    /// The provider asked us to slow down; `retry_after` is its hint, if any.
    RateLimited {
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// A daily or monthly quota ran out: waiting seconds will not help.
    /// The run should checkpoint and stop cleanly.
    QuotaExhausted,
    /// A network failure, timeout or 5xx that may succeed on a retry.
    Transient,
    /// The input (a record, a field value, a config) is invalid.
    InvalidInput,
    /// The remote schema no longer matches what the sync expects
    /// (a column moved, a field was deleted).
    SchemaMismatch,
    /// The object or record does not exist.
    NotFound,
    /// The write conflicts with the current remote state (duplicate, version).
    Conflict,
    /// Any other failure that retrying will not fix.
    Permanent,
}

impl ErrorKind {
    /// A short, stable, snake_case name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::Transient => "transient",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Permanent => "permanent",
        }
    }

    /// Whether failures of this kind are retryable by default.
    pub fn default_retry(&self) -> Retry {
        match self {
            ErrorKind::RateLimited { .. } | ErrorKind::Transient => Retry::Temporary,
            _ => Retry::Permanent,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an operation may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retry {
    /// A retry may succeed.
    Temporary,
    /// A retry will fail the same way.
    Permanent,
    /// It was temporary, but retries already ran out: nothing should retry it again.
    Persistent,
}

/// The error type of the workspace.
///
/// `Display` prints the kind, the operation, the message and the context; it
/// never prints secrets because nothing secret is ever put into an `Error`
/// (crates strip credentials before building one).
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    retry: Retry,
    message: String,
    operation: Option<&'static str>,
    context: Vec<(&'static str, String)>,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message; the retry state
    /// is the kind's default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retry = kind.default_retry();
        Error {
            kind,
            retry,
            message: message.into(),
            operation: None,
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The retry state.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The message, without kind, operation or context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, e.g. `"contacts.read"`.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// Key-value context, in the order it was added.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The context value stored under `key`, if any.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Temporary
    }

    /// How long the provider asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ErrorKind::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Names the operation that failed.
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Adds a key-value pair of context (record id, field, status code...).
    /// Never pass a secret here.
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// Marks the error retryable.
    #[must_use]
    pub fn set_temporary(mut self) -> Self {
        self.retry = Retry::Temporary;
        self
    }

    /// Marks the error not retryable.
    #[must_use]
    pub fn set_permanent(mut self) -> Self {
        self.retry = Retry::Permanent;
        self
    }

    /// Marks a temporary error whose retries ran out, so nothing retries it again.
    #[must_use]
    pub fn set_persistent(mut self) -> Self {
        if self.retry == Retry::Temporary {
            self.retry = Retry::Persistent;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(op) = self.operation {
            write!(f, " in {op}")?;
        }
        write!(f, ": {}", self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with the workspace [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_retryability() {
        assert!(Error::new(ErrorKind::Transient, "x").is_retryable());
        assert!(Error::new(ErrorKind::RateLimited { retry_after: None }, "x").is_retryable());
        assert!(!Error::new(ErrorKind::QuotaExhausted, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Auth, "x").is_retryable());
        assert!(!Error::invalid_input("x").is_retryable());
    }

    #[test]
    fn persistent_stops_retries() {
        let e = Error::new(ErrorKind::Transient, "503").set_persistent();
        assert_eq!(e.retry(), Retry::Persistent);
        assert!(!e.is_retryable());
        // A permanent error stays permanent.
        let p = Error::new(ErrorKind::Permanent, "x").set_persistent();
        assert_eq!(p.retry(), Retry::Permanent);
    }

    #[test]
    fn display_carries_operation_and_context() {
        let e = Error::invalid_input("bad date")
            .with_operation("bookings.validate")
            .with_context("record", "B-1")
            .with_context("field", "end_date");
        assert_eq!(
            e.to_string(),
            "invalid_input in bookings.validate: bad date (record=B-1, field=end_date)"
        );
        assert_eq!(e.context_value("field"), Some("end_date"));
    }
}
