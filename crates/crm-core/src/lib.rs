//! The heart of crm-connectors: canonical records and schemas, the connector
//! traits, field mapping, validation, dedupe and conflict resolution.
//!
//! This crate is pure logic: no network, no database, no async runtime. The
//! provider crates (`crm-salesforce`, `crm-hubspot`, ...) and `crm-sql`
//! implement its traits; `crm-sync` drives them.
//! [`attribution`] splits conversions among social touchpoints per campaign;
//! [`engagement`] scores social interactions from 0 to 100.
//! [`pii`] masks personal data for logs, reports and errors.
//!
//! ```
//! use crm_core::{Record, Value};
//!
//! let booking = Record::new()
//!     .with("booking_id", "BK-1001")
//!     .with("budget", Value::Decimal("2500.00".parse().unwrap()));
//! assert_eq!(booking.text("booking_id"), Some("BK-1001"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attribution;
pub mod conflict;
pub mod connector;
pub mod dedupe;
pub mod engagement;
pub mod env;
pub mod error;
pub mod mapping;
pub mod matching;
pub mod model;
pub mod pii;
pub mod record;
pub mod schema;
pub mod validate;
pub mod value;

pub use connector::{
    Capabilities, Change, Connector, Cursor, Page, ReadRequest, Sink, Source, WriteBatch, WriteOp,
    WriteOutcome,
};
pub use error::{Error, ErrorKind, Result, Retry};
pub use mapping::{Direction, FieldMap, Flow, Mapping, MappingErrors, Transform};
pub use record::{METADATA_PREFIX, PROBLEMS_FIELD, Record, RecordId};
pub use schema::{FieldSchema, FieldType, ObjectSchema, PicklistValue};
pub use value::{Value, ValueType};

/// The workspace README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
