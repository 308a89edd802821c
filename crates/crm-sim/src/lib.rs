//! Framework for local, stateful simulators of the provider APIs.
//!
//! This crate will hold the axum-based building blocks each provider crate uses
//! for its simulator: an in-memory object store with ids and modification
//! timestamps, auth checks, rate limiting that answers in the provider's own
//! form, page and batch limits, a seeded and replayable fault plan and a request
//! log, served in-process or standalone over HTTP or HTTPS.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
