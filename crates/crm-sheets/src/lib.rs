//! Google Sheets connector: bookings read from a sheet (Sheets API v4) and
//! delivery figures written back to it.
//!
//! The pieces, each usable on its own:
//!
//! - [`config`]: seed 000's `sheet:` block ([`SheetsConfig`]).
//! - [`a1`]: A1 notation (`'Sheet Name'!A2:I`) parsing and formatting.
//! - [`serial`]: serial numbers (days since 1899-12-30) to dates and back.
//! - [`cell`]: wire cells with exact numbers, and their conversion to
//!   [`crm_core::Value`].
//! - [`schema`]: header-row checks and stable column names.
//! - [`rows`]: rows to records with per-row problems.
//! - [`incremental`]: change detection by content digest per row key.
//! - [`writeback`]: write-back planning by row key.
//! - [`wire`]: serde types of the API's JSON.
//! - [`SheetsConnector`]: the `Source` and `Sink` (kind `sheets`), on
//!   [`SheetsClient`].
//! - `sim` (feature `sim`): a simulator of the API.
//!
#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod a1;
pub mod auth;
pub mod cell;
pub mod client;
pub mod config;
pub mod error;
pub mod incremental;
pub mod mapping;
pub mod rows;
pub mod schema;
pub mod serial;
#[cfg(feature = "sim")]
pub mod sim;
mod sink;
pub mod source;
pub mod wire;
pub mod writeback;

pub use auth::GoogleCredentials;
pub use client::{ClientOptions, SheetsClient};
pub use config::{RateLimit, SheetId, SheetsConfig, SpreadsheetId, WriteBackColumns};
pub use error::SheetsError;
pub use source::{ResolvedSheet, SheetsConnector};
