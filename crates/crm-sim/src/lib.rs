//! Framework for local, stateful simulators of the provider APIs.
//!
//! Each provider crate (`crm-salesforce`, `crm-hubspot`, ...) builds its
//! simulator on this crate behind its `sim` feature; users test their own
//! apps against the simulators in-process or through the standalone server.
//! The building blocks:
//!
//! - [`store::ObjectStore`]: in-memory, thread-safe records per object type,
//!   with ids in the provider's format, created/modified/deleted times from a
//!   controllable [`SimClock`], and change feeds in stable `(changed_at, id)`
//!   order with exact `has_more`.
//! - [`auth`]: OAuth clients and an RFC 6749 token endpoint issuing expiring
//!   tokens (refresh token, client credentials, authorization code with
//!   PKCE, JWT bearer), static tokens and API keys, checked by an
//!   [`auth::AuthGuard`] middleware.
//! - [`RateLimiter`]: fixed and sliding windows (per second, per day) that
//!   refuse in the provider's own words through its [`ResponseForm`].
//! - [`log::RequestLog`]: every request with method, path, query, selected
//!   headers (credentials redacted), body size, arrival time and outcome.
//! - [`FaultPlan`]: seeded, replayable 429 bursts, 5xx, slow responses,
//!   dropped connections, token expiry, per-record rejections and duplicate
//!   webhook deliveries, loadable from JSON or YAML.
//! - [`SimServer`] / [`SimHandle`]: serving on 127.0.0.1 over HTTP or HTTPS
//!   (a CA and server certificate made at start, PEM written to a file).
//! - [`Simulator`]: the trait a provider implements; [`generic`] is a small
//!   complete one and the reference for provider simulators.
//! - [`conformance`]: the behaviour suite every connector runs against its
//!   simulator, written once against crm-core's `Source` and `Sink`.
//!
//! ```
//! use crm_sim::{SimServer, generic::{GenericConfig, GenericSimulator}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = SimServer::new(GenericSimulator::new(GenericConfig::default()))
//!     .seed(7)
//!     .demo_data(true)
//!     .start()
//!     .await?;
//! assert!(sim.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(sim.context().store().count("contacts", crm_sim::store::Deleted::Exclude), 50);
//! assert!(sim.request_log().is_empty());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
mod b64;
pub mod clock;
pub mod conformance;
pub mod fault;
pub mod form;
pub mod generic;
pub mod log;
pub mod ratelimit;
pub mod server;
pub mod simulator;
pub mod store;
pub mod tls;
pub mod webhook;

pub use clock::SimClock;
pub use fault::{Fault, FaultInjector, FaultPlan, FaultRule, RecordFaults, Trigger};
pub use form::{DefaultForm, RateLimited, ResponseForm, WindowStatus};
pub use log::{LoggedRequest, Outcome, RequestLog};
pub use ratelimit::{RateLimiter, Window, WindowKind};
pub use server::{SimError, SimHandle, SimServer};
pub use simulator::{SimContext, Simulator};
pub use store::{ObjectStore, StoredRecord};
