//! [`SqlError`]: what goes wrong in this crate, and how it maps onto
//! [`crm_core::ErrorKind`].
//!
//! Database errors are classified once, here, from their SQLSTATE (PostgreSQL,
//! MySQL) or result code (SQLite): connection and lock problems are
//! retryable, data errors are invalid input, missing tables or columns are a
//! schema mismatch. Messages never carry a password: every message built from
//! a driver error passes through a redactor holding the configured
//! secrets, and connection URLs are shown with their password replaced.

use std::borrow::Cow;

use crm_core::{Error, ErrorKind};

/// Errors of the SQL connector, before they become a [`crm_core::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The configuration is invalid or incomplete.
    #[error("invalid configuration: {0}")]
    ConfigInvalid(String),
    /// The database returned an error or could not be reached.
    #[error("{message}")]
    Database {
        /// The crm-core kind this error maps to.
        kind: ErrorKind,
        /// The message, with secrets removed.
        message: String,
        /// The SQLSTATE or SQLite result code, when the database gave one.
        code: Option<String>,
    },
    /// A column value could not be converted to a [`crm_core::Value`].
    #[error("cannot decode column `{column}`: {message}")]
    Decode {
        /// The column name.
        column: String,
        /// What went wrong.
        message: String,
    },
    /// A value does not fit the column it is written to.
    #[error("value for `{column}` does not fit: {message}")]
    DoesNotFit {
        /// The column name.
        column: String,
        /// What went wrong.
        message: String,
    },
    /// The table or query does not have the shape the operation needs.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// The state store could not encrypt or decrypt credentials.
    #[error("credentials encryption: {0}")]
    Crypto(String),
    /// The operation is not supported by this backend or build.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Self {
        let (kind, code) = match &e {
            SqlError::ConfigInvalid(_) => (ErrorKind::InvalidInput, None),
            SqlError::Database { kind, code, .. } => (kind.clone(), code.clone()),
            SqlError::Decode { .. } => (ErrorKind::SchemaMismatch, None),
            SqlError::DoesNotFit { .. } => (ErrorKind::InvalidInput, None),
            SqlError::Schema(_) => (ErrorKind::SchemaMismatch, None),
            SqlError::Crypto(_) => (ErrorKind::Auth, None),
            SqlError::Unsupported(_) => (ErrorKind::Permanent, None),
        };
        let mut err = Error::new(kind, e.to_string());
        match &e {
            SqlError::Decode { column, .. } | SqlError::DoesNotFit { column, .. } => {
                err = err.with_context("field", column);
            }
            _ => {}
        }
        if let Some(code) = code {
            err = err.with_context("code", code);
        }
        err
    }
}

/// Removes configured secrets from text that may echo them (driver errors,
/// connection URLs).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// Adds a secret; empty or very short strings are ignored so that
    /// redaction does not shred ordinary text.
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() >= 3 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            // Longest first, so a secret that contains another is removed whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every secret replaced and every URL password masked.
    pub(crate) fn clean<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        if out.contains("://") && out.contains('@') {
            out = Cow::Owned(mask_url_passwords(&out));
        }
        out
    }
}

/// Replaces the password of every `scheme://user:password@host` in `text`.
pub(crate) fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Classifies a driver error. `op` names the operation for the error context.
pub(crate) fn db_error(op: &'static str, e: sqlx::Error, redactor: &Redactor) -> Error {
    let message = redactor.clean(&e.to_string()).into_owned();
    let (kind, code) = classify(&e);
    let mut err = Error::from(SqlError::Database {
        kind: kind.clone(),
        message,
        code,
    })
    .with_operation(op);
    if kind == ErrorKind::Transient {
        err = err.set_temporary();
    }
    err
}

/// The crm-core kind and the code of a driver error.
pub(crate) fn classify(e: &sqlx::Error) -> (ErrorKind, Option<String>) {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned());
            let kind = classify_database(db.as_ref(), code.as_deref());
            (kind, code)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => (ErrorKind::Transient, None),
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => {
            (ErrorKind::InvalidInput, None)
        }
        sqlx::Error::RowNotFound => (ErrorKind::NotFound, None),
        sqlx::Error::ColumnNotFound(_) | sqlx::Error::TypeNotFound { .. } => {
            (ErrorKind::SchemaMismatch, None)
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            (ErrorKind::SchemaMismatch, None)
        }
        _ => (ErrorKind::Permanent, None),
    }
}

fn classify_database(db: &dyn sqlx::error::DatabaseError, code: Option<&str>) -> ErrorKind {
    let code = code.unwrap_or("");
    let msg = db.message().to_ascii_lowercase();
    // SQLite reports numeric (extended) result codes.
    if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) && code.len() <= 4 {
        let n: u32 = code.parse().unwrap_or(0);
        return match n & 0xff {
            5 | 6 => ErrorKind::Transient, // BUSY, LOCKED
            19 => {
                if n == 2067 || n == 1555 {
                    ErrorKind::Conflict
                } else {
                    ErrorKind::InvalidInput
                }
            }
            18 | 20 | 25 => ErrorKind::InvalidInput, // TOOBIG, MISMATCH, RANGE
            1 if msg.contains("no such table") || msg.contains("no such column") => {
                ErrorKind::SchemaMismatch
            }
            1 => ErrorKind::InvalidInput,
            _ => ErrorKind::Permanent,
        };
    }
    // MySQL / MariaDB errors that carry the generic SQLSTATE HY000.
    if code == "HY000" || code == "70100" {
        if msg.contains("lock wait timeout")
            || msg.contains("maximum statement execution time")
            || msg.contains("max_statement_time")
            || msg.contains("query execution was interrupted")
        {
            return ErrorKind::Transient;
        }
        if msg.contains("incorrect") || msg.contains("out of range") || msg.contains("too long") {
            return ErrorKind::InvalidInput;
        }
        return ErrorKind::Permanent;
    }
    match code.get(..2).unwrap_or("") {
        "08" | "40" | "53" | "57" | "58" => ErrorKind::Transient,
        "28" => ErrorKind::Auth,
        "22" => ErrorKind::InvalidInput,
        "23" => {
            if code == "23505" || msg.contains("duplicate") {
                ErrorKind::Conflict
            } else {
                ErrorKind::InvalidInput
            }
        }
        "42" => match code {
            // undefined table / column (PostgreSQL), unknown table / column (MySQL)
            "42P01" | "42703" | "42S02" | "42S22" => ErrorKind::SchemaMismatch,
            "42501" => ErrorKind::Auth,
            _ => ErrorKind::InvalidInput,
        },
        "3D" => ErrorKind::NotFound,
        _ => ErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_passwords("failed: postgres://bob:s3cr%40t@db:5432/x?sslmode=require"),
            "failed: postgres://bob:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            mask_url_passwords("mysql://root@localhost/db"),
            "mysql://root@localhost/db"
        );
        assert_eq!(mask_url_passwords("no url here"), "no url here");
    }

    #[test]
    fn redactor_removes_secrets() {
        let mut r = Redactor::default();
        r.add("hunter22");
        r.add("x"); // too short to redact safely
        assert_eq!(
            r.clean("password hunter22 rejected"),
            "password *** rejected"
        );
        assert_eq!(r.clean("x marks"), "x marks");
    }

    #[test]
    fn sql_errors_map_to_kinds() {
        let e: Error = SqlError::DoesNotFit {
            column: "client_code".into(),
            message: "300 characters, at most 3".into(),
        }
        .into();
        assert_eq!(e.kind(), &ErrorKind::InvalidInput);
        assert_eq!(e.context_value("field"), Some("client_code"));
        let e: Error = SqlError::Schema("no updated_at".into()).into();
        assert_eq!(e.kind(), &ErrorKind::SchemaMismatch);
    }
}
