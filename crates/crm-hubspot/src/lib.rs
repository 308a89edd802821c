//! HubSpot connector: HubSpot CRM v3 objects, search, batch, properties and webhooks.
//!
//! This crate will hold the HubSpot client (config, auth, typed wire calls),
//! default field maps to and from the canonical schema of `crm-core`, the
//! `Source` and `Sink` implementations, and a stateful simulator of the
//! HubSpot API behind the `sim` feature.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
