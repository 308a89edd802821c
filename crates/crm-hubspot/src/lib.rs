//! HubSpot connector: HubSpot CRM v3 objects, search, batch, properties and webhooks.
//!
//! - [`config`]: private-app token or OAuth app, limits per app type.
//! - [`wire`]: serde types of HubSpot's JSON.
//! - [`error`]: HubSpot's responses mapped to `crm_core::ErrorKind`.
//! - [`source`]: the incremental-read planner.
//! - [`webhook`]: signature verification and event parsing.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod source;
pub mod webhook;
pub mod wire;

pub use config::{AppType, AuthConfig, HubSpotConfig, HubSpotConfigBuilder, RateLimits};
pub use error::{HubSpotClassifier, HubSpotError};
