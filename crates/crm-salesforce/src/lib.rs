//! Salesforce connector: Salesforce REST, Bulk API 2.0 and sObject Collections.
//!
//! This crate will hold the Salesforce client (config, auth, typed wire calls),
//! default field maps to and from the canonical schema of `crm-core`, the
//! `Source` and `Sink` implementations, and a stateful simulator of the
//! Salesforce API behind the `sim` feature.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
