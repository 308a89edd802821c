#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod csv;
pub mod error;
pub mod soql;
pub mod wire;

pub use config::{ApiVersion, Credentials, LoginHost, SalesforceConfig, SalesforceConfigBuilder};
pub use error::{ErrorCode, SalesforceClassifier, SalesforceError};
