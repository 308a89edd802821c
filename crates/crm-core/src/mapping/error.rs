//! Errors of the mapping module: per-value [`TransformError`], per-field
//! [`MappingError`], per-record [`MappingErrors`] and [`ConfigError`] for
//! configuration that cannot be loaded.

use std::fmt;

use rust_decimal::Decimal;

use super::transform::PhoneError;
use crate::error::{Error, ErrorKind};
use crate::value::ValueType;

/// Why one transform could not transform one value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The value has a type the transform does not take.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the transform takes.
        expected: &'static str,
        /// What it got.
        found: ValueType,
    },
    /// Text that should be a number is not one.
    #[error("{text:?} is not a number")]
    NotANumber {
        /// The text.
        text: String,
    },
    /// A number outside the range a `scale` maps from.
    #[error("{value} is outside the range {min}..={max}")]
    OutOfRange {
        /// The number.
        value: Decimal,
        /// The lowest allowed.
        min: Decimal,
        /// The highest allowed.
        max: Decimal,
    },
    /// A result too large for a decimal.
    #[error("{operation} overflows a decimal")]
    Overflow {
        /// The operation that overflowed.
        operation: String,
    },
    /// A phone number that cannot be cleaned to E.164.
    #[error("phone number {0}")]
    Phone(PhoneError),
    /// Text that is not valid JSON.
    #[error("invalid JSON: {reason}")]
    BadJson {
        /// The parser's message.
        reason: String,
    },
    /// Text that is not a date in the expected format.
    #[error("{text:?} is not a date in format {format}")]
    BadDate {
        /// The text.
        text: String,
        /// The format tried (`ISO 8601` or a chrono format).
        format: String,
    },
    /// A date that cannot be written with the output format.
    #[error("cannot format a date with {format:?}")]
    BadDateFormat {
        /// The output format.
        format: String,
    },
    /// A value missing from an enum map that has no fallback.
    #[error("{value:?} is not one of the mapped values ({})", known.join(", "))]
    UnknownEnumValue {
        /// The value.
        value: String,
        /// The values the table knows.
        known: Vec<String>,
    },
    /// The transform has no reverse.
    #[error("{transform} has no reverse")]
    NotReversible {
        /// The transform's name.
        transform: &'static str,
    },
}

impl TransformError {
    /// The message with values that may be personal data replaced by
    /// `<redacted>`, for fields marked `pii`.
    pub fn redacted_message(&self) -> String {
        match self {
            TransformError::NotANumber { .. } => "value is not a number".into(),
            TransformError::OutOfRange { min, max, .. } => {
                format!("value is outside the range {min}..={max}")
            }
            TransformError::BadJson { .. } => "invalid JSON".into(),
            TransformError::BadDate { format, .. } => {
                format!("value is not a date in format {format}")
            }
            TransformError::UnknownEnumValue { .. } => {
                "value is not one of the mapped values".into()
            }
            other => other.to_string(),
        }
    }
}

/// One field that failed to map.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingError {
    /// The record's label: its id, its key field's value, or `#index`.
    pub record: String,
    /// The field the value was read from.
    pub source: String,
    /// The field the value was to be written to.
    pub target: String,
    /// The transform that failed (its configuration name).
    pub transform: &'static str,
    /// Whether the field is personal data; the message then hides the value.
    pub pii: bool,
    /// What went wrong.
    pub error: TransformError,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = if self.pii {
            self.error.redacted_message()
        } else {
            self.error.to_string()
        };
        write!(
            f,
            "record {}: field {} -> {} ({}): {}",
            self.record, self.source, self.target, self.transform, msg
        )
    }
}

impl std::error::Error for MappingError {}

/// Every field of one record that failed to map. `Mapping::apply` collects
/// all of them rather than stopping at the first.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingErrors {
    /// The record's label: its id, its key field's value, or `#index`.
    pub record: String,
    /// The failures, in map order; never empty.
    pub errors: Vec<MappingError>,
}

impl MappingErrors {
    /// The failure for a field, looked up by source or target name.
    pub fn field(&self, name: &str) -> Option<&MappingError> {
        self.errors
            .iter()
            .find(|e| e.source == name || e.target == name)
    }

    /// Number of failed fields.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when no field failed (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for MappingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {}: {} field(s) failed to map",
            self.record,
            self.errors.len()
        )?;
        for e in &self.errors {
            let msg = if e.pii {
                e.error.redacted_message()
            } else {
                e.error.to_string()
            };
            write!(
                f,
                "; {} -> {} ({}): {}",
                e.source, e.target, e.transform, msg
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingErrors {}

impl From<MappingErrors> for Error {
    /// An [`ErrorKind::InvalidInput`] error (the record is skipped and kept,
    /// not retried) with the record and the failed fields as context.
    fn from(e: MappingErrors) -> Self {
        let fields = e
            .errors
            .iter()
            .map(|f| f.target.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Error::new(ErrorKind::InvalidInput, e.to_string())
            .with_operation("mapping.apply")
            .with_context("record", &e.record)
            .with_context("fields", fields)
    }
}

/// Mapping configuration that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A transform name this crate does not know.
    #[error("unknown transform {name:?}; known transforms: {known}")]
    UnknownTransform {
        /// The name as written.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
    /// A known transform with bad parameters.
    #[error("invalid transform {transform}: {reason}")]
    InvalidTransform {
        /// The transform as written.
        transform: String,
        /// What is wrong.
        reason: String,
    },
    /// A spreadsheet column that is not letters `A`..`Z`, `AA`...
    #[error("invalid column {letters:?}: expected letters A-Z such as A, Z, AA")]
    InvalidColumn {
        /// The column as written.
        letters: String,
    },
    /// The same column or field mapped twice.
    #[error("{what} {name:?} is mapped twice")]
    Duplicate {
        /// `column` or `field`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A field map without the fields it needs.
    #[error("invalid field map: {reason}")]
    InvalidFieldMap {
        /// What is wrong.
        reason: String,
    },
    /// Text that is not a recognised direction.
    #[error("unknown direction {0:?}; expected to_crm, from_crm, bidirectional or both")]
    UnknownDirection(String),
    /// Text that is not a recognised write-back frequency.
    #[error("unknown frequency {0:?}; expected daily, hourly, on_change or on_match")]
    UnknownFrequency(String),
    /// YAML or JSON that does not parse into the expected shape.
    #[error("cannot parse mapping configuration: {0}")]
    Parse(String),
}

impl From<ConfigError> for Error {
    /// An [`ErrorKind::InvalidInput`] error.
    fn from(e: ConfigError) -> Self {
        Error::new(ErrorKind::InvalidInput, e.to_string()).with_operation("mapping.load")
    }
}
