//! PostgreSQL, MySQL and SQLite as source, sink and sync-state store.
//!
//! This crate will hold the sqlx-based `Source` (a configured query with a bound
//! `:last_sync` parameter, streamed page by page), the `Sink` (batched upserts,
//! `COPY` bulk loads on PostgreSQL) and the `StateStore` (connections, sync runs,
//! checkpoints, per-record sync state, audit log, review queue, dead letters),
//! with SQLite as the embedded default.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
