//! Cross-crate end-to-end and conformance suites.
//!
//! The shared connector behaviour suite (one set of behaviours every connector
//! must pass against its own simulator or database) lives here once the
//! connectors it exercises exist; each suite is a file under `tests/`.
#![forbid(unsafe_code)]
