//! The sync orchestrator of crm-connectors.
//!
//! - [`bidi`]: bidirectional sync between two connectors through the
//!   per-record sync state: echo suppression, three-way merges with
//!   field-level conflict policies, the review queue for manual conflicts
//!   and an audit entry for every write.
//! - [`enrich`]: seed 002's social enrichment of CRM contacts, writing only what differs.
//! - [`fanout`]: seed 004's contacts in every configured CRM at once, and
//!   the unified contact view across CRMs keyed by email.
//! - [`pipeline`]: the page-by-page pipeline of seed 000 (extract, validate
//!   and clean, transform, dedupe, match to campaigns, store, checkpoint),
//!   crash-safe by construction: a page's cursor is committed only after the
//!   page is stored.
//! - [`state`]: what the pipeline keeps durable (checkpoints, dead letters,
//!   the review queue), with an in-memory implementation.
//! - [`report`]: the numbers of a run.
//! - [`review`]: the review desk (probable and multiple matches, manual
//!   conflicts, dead letters) as a library, web pages and a JSON API;
//!   [`access`]: the bearer tokens and roles it checks.
//! - [`runner`]: runs a [`config::SyncJob`] end to end.
//! - [`schedule`]: cron expressions, intervals and the job scheduler.
//! - [`serve`]: the webhook receiver of `crm-sync serve` and the processor
//!   of its durable queue.
//! - [`worker`]: `crm-sync worker` processes taking leased jobs from a
//!   durable job table, with a rate budget shared per provider account.
//! - [`config`]: [`config::SyncJob`] loaded from YAML in the seeds' shapes.
//! - [`writeback`]: seed 000 write-back of platform figures into the bookings sheet.
//! - [`cli`]: the `crm-sync` command line.
//! - [`monitor`]: sync health, Prometheus metrics and alert rules (seeds 001, 002).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod bidi;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod enrich;
pub mod fanout;
pub mod monitor;
mod pii;
pub mod pipeline;
pub mod report;
pub mod review;
pub mod runner;
pub mod schedule;
pub mod serve;
pub mod state;
pub mod worker;
pub mod writeback;

pub use pipeline::{Mode, Pipeline};
pub use report::RunReport;
pub use state::{MemoryState, PipelineState};
