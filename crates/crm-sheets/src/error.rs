//! [`SheetsError`], the detailed errors of this crate, and their conversion
//! into [`crm_core::Error`].

use crm_core::{Error, ErrorKind};

/// What can go wrong in this crate before or after the HTTP call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SheetsError {
    /// The configuration is invalid.
    #[error("invalid Google Sheets config: {0}")]
    ConfigInvalid(String),
    /// An A1 range could not be parsed.
    #[error("invalid A1 range {range:?}: {reason}")]
    InvalidRange {
        /// The range as written.
        range: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A serial number is not a date.
    #[error("invalid date serial number {serial}: {reason}")]
    InvalidSerial {
        /// The serial (or date) as text.
        serial: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The header row no longer matches the expected headers.
    #[error("the header row of sheet {sheet:?} changed: {}", .problems.join("; "))]
    SchemaMismatch {
        /// The sheet title.
        sheet: String,
        /// One line per column, naming it (`column C: expected "Campaign"...`).
        problems: Vec<String>,
        /// The letters of the columns concerned.
        columns: Vec<String>,
    },
    /// The configured sheet was not found in the spreadsheet.
    #[error("sheet {title:?} (sheetId {sheet_id:?}) not found in the spreadsheet")]
    SheetNotFound {
        /// The configured title.
        title: String,
        /// The sheetId searched for, if known.
        sheet_id: Option<i64>,
    },
    /// A response did not have the expected shape.
    #[error("unexpected response: {0}")]
    Wire(String),
    /// A write would exceed a limit of Google Sheets.
    #[error("{0}")]
    LimitExceeded(String),
}

impl From<SheetsError> for Error {
    fn from(e: SheetsError) -> Self {
        let kind = match &e {
            SheetsError::ConfigInvalid(_)
            | SheetsError::InvalidRange { .. }
            | SheetsError::InvalidSerial { .. }
            | SheetsError::LimitExceeded(_) => ErrorKind::InvalidInput,
            SheetsError::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            SheetsError::SheetNotFound { .. } => ErrorKind::NotFound,
            SheetsError::Wire(_) => ErrorKind::SchemaMismatch,
        };
        let mut err = Error::new(kind, e.to_string()).with_context("provider", "sheets");
        if let SheetsError::SchemaMismatch { columns, sheet, .. } = &e {
            err = err
                .with_context("sheet", sheet)
                .with_context("columns", columns.join(","));
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_mismatch_names_columns() {
        let e: Error = SheetsError::SchemaMismatch {
            sheet: "Bookings".into(),
            problems: vec!["column C: expected \"Campaign\", found \"Start\"".into()],
            columns: vec!["C".into(), "E".into()],
        }
        .into();
        assert_eq!(e.kind(), &ErrorKind::SchemaMismatch);
        assert_eq!(e.context_value("columns"), Some("C,E"));
        assert!(e.to_string().contains("column C"));
        assert!(!e.is_retryable());
    }
}
