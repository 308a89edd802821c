//! Seed 002's CRM integration service, the flagship reference app of the
//! crm-connectors crates: an HTTP API that other apps call to push
//! contacts and leads into Salesforce, HubSpot or Pipedrive (deduped by
//! email), enrich them with social data, track lead attribution, and pull
//! CRM updates back.
//!
//! It is built only on the crates' public APIs:
//!
//! | part | built on |
//! |---|---|
//! | CRM calls | `crm-salesforce`, `crm-hubspot`, `crm-pipedrive` ([`crm`]) |
//! | enrichment | `crm_sync::enrich` |
//! | attribution, engagement score | `crm_core::attribution`, `crm_core::engagement` |
//! | integrations, sealed credentials, audit, dead letters | `crm_sql::state` ([`store`]) |
//! | tokens and roles | `crm_sync::access` |
//! | TLS, allow-list, limits | `crm_sync::serve::harden` |
//! | hourly and 6-hourly jobs | `crm_sync::schedule` |
//!
//! `cargo run -p integration-service` starts it against the built-in
//! simulators ([`sims`]) with its state in `integration-service.db`; see
//! `docs/integration-service.md`.
//!
//! ```no_run
//! # async fn demo() -> crm_core::Result<()> {
//! use integration_service::app::App;
//! use integration_service::config::ServiceConfig;
//!
//! let config = ServiceConfig::default();
//! let app = App::build(&config, std::path::Path::new(".")).await?;
//! let server = crm_sync::serve::Server::bind("127.0.0.1:8080").await?;
//! app.serve(server, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod app;
pub mod config;
pub mod crm;
pub mod error;
pub mod model;
pub mod service;
pub mod sims;
pub mod store;
