//! PostgreSQL, MySQL/MariaDB and SQLite as source, sink and sync-state store.
//!
//! - [`SqlConnector`] implements [`crm_core::Source`]: the configured query
//!   (seed 000's `query`, with `:last_sync` and other `:name` parameters
//!   bound, never spliced) read page by page in (`updated_at`, primary key)
//!   order, so memory stays flat and rows sharing a timestamp are neither
//!   lost nor repeated across runs; a lookback window catches rows committed
//!   late with an older stamp. See [`source`] for the cursor.
//! - It also implements [`crm_core::Sink`]: batched upserts keyed by an
//!   external id (`ON CONFLICT ... DO UPDATE` on PostgreSQL and SQLite,
//!   `ON DUPLICATE KEY UPDATE` on MySQL), one transaction per batch, with
//!   created / updated / unchanged / rejected per record; on PostgreSQL,
//!   large batches take a `COPY` path (new rows copied straight in, stored
//!   rows through a staging table and one upsert).
//! - [`StateStore`] keeps what a sync needs between runs (connections with
//!   encrypted credentials, sync runs, field mappings, per-record sync state,
//!   checkpoints, webhook events, audit log, review queue, dead letters), with
//!   migrations for all three engines. SQLite is the embedded default.
//!
//! Backends are features: `postgres`, `mysql`, `sqlite` (all on by default).
//! TLS uses rustls; queries are built at run time (no database needed to
//! compile).
//!
//! # Example
//!
//! ```no_run
//! use crm_core::{Record, ReadRequest, Sink, Source, Value, WriteBatch};
//! use crm_sql::{SqlConfig, SqlConnector, booking_schema};
//! use futures_util::TryStreamExt;
//!
//! # async fn run() -> crm_core::Result<()> {
//! let config: SqlConfig = serde_yaml::from_str(r#"
//! type: postgresql
//! host: "${DB_HOST}"
//! port: 5432
//! database: bookings
//! username: "${DB_USER}"
//! password: "${DB_PASSWORD}"
//! ssl_mode: require
//! query: |
//!   SELECT booking_id, client_name, budget, updated_at
//!   FROM booking
//!   WHERE updated_at >= :last_sync
//! pool: { min_connections: 2, max_connections: 10, idle_timeout: 300, max_lifetime: 3600 }
//! statement_timeout: 30
//! "#).expect("valid YAML");
//! let db = SqlConnector::connect(&config).await?;
//!
//! // Write: upsert keyed by booking_id.
//! db.create_table(&booking_schema()).await?;
//! let outcomes = db.write("booking", WriteBatch::upsert("booking_id", vec![
//!     Record::new().with("booking_id", "BK-1").with("budget", Value::Decimal("2500.00".parse().unwrap())),
//! ])).await?;
//! println!("{}", outcomes[0].as_str());
//!
//! // Read: pages of changes; store each page, then its cursor.
//! let mut pages = db.read(ReadRequest::full("booking"));
//! while let Some(page) = pages.try_next().await? {
//!     println!("{} changes, resume from {:?}", page.changes.len(), page.cursor);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
pub mod config;
mod convert;
mod db;
pub mod error;
mod params;
pub mod schema;
mod sink;
pub mod source;
pub mod state;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use client::SqlConnector;
pub use config::{DatabaseKind, PoolConfig, ResolvedConfig, SqlConfig, SqlConfigBuilder, SslMode};
pub use error::SqlError;
pub use schema::{booking_schema, client_schema, create_table_sql};
pub use state::StateStore;
