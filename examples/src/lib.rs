//! Reference apps of the crm-connectors workspace.
//!
//! Each reference app lives in this package as a Cargo example (`cargo run -p
//! crm-examples --example NAME`) and uses only the public APIs of the workspace
//! crates, so integrators can copy it as it is. Its core is a function of this
//! library, which the package's tests run against the simulators:
//!
//! | example | module | what |
//! |---|---|---|
//! | `reverse_etl_salesforce` | [`reverse_etl`] | seed 001: scores from PostgreSQL onto Salesforce Contacts |
//! | `bookings_writeback` | [`writeback`] | seed 000: pacing figures from SQLite into the bookings Google Sheet |
//! | `hubspot_salesforce_sync` | [`contact_sync`] | HubSpot contacts <-> Salesforce Contacts, both ways, state in SQLite |
//! | `webhook_receiver` | [`webhook_receiver`] | HubSpot, Pipedrive and seed 001 customer webhooks into an SQLite table |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod contact_sync;
pub mod reverse_etl;
pub mod webhook_receiver;
pub mod writeback;
