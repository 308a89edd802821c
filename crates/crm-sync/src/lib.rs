//! The sync orchestrator of crm-connectors.
//!
//! This crate will hold `SyncJob` (loaded from YAML in the shapes of the design
//! documents), the page-by-page pipeline (extract, validate and clean,
//! transform, dedupe, match to campaigns, store, checkpoint), bidirectional
//! sync with conflict resolution, scheduling, webhooks, and the `crm-sync`
//! command-line tool.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
