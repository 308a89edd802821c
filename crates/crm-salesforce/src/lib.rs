#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod csv;
pub mod error;
pub mod mapping;
pub mod sink;
pub mod soql;
pub mod source;
pub mod wire;

pub use client::SalesforceClient;
pub use config::{ApiVersion, Credentials, LoginHost, SalesforceConfig, SalesforceConfigBuilder};
pub use error::{ErrorCode, SalesforceClassifier, SalesforceError};
pub use source::{CursorState, SalesforceConnector};

#[cfg(feature = "sim")]
pub mod sim;
