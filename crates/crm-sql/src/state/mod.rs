//! [`StateStore`]: what a sync keeps between runs, in PostgreSQL, MySQL or
//! SQLite (the embedded default).
//!
//! | table | holds |
//! |---|---|
//! | `crm_connections` | provider, name, status, AES-256-GCM-encrypted credentials, settings, last sync, last error |
//! | `crm_sync_runs` | one row per run: type, direction, status, counts, errors, start and end |
//! | `crm_field_mappings` | local field <-> remote field, direction, transform |
//! | `crm_record_sync_state` | per record: local id <-> remote id, timestamps on both sides, conflict flag and details, the values both sides had at the last sync (sealed) |
//! | `crm_checkpoints` | the source cursor per connection and object |
//! | `crm_webhook_events` | received webhook events, queued until processed |
//! | `crm_audit_log` | who did what when, with old and new values |
//! | `crm_review_queue` | probable and multiple matches, manual conflicts |
//! | `crm_dead_letters` | records that failed a stage, with the error and attempts |
//!
//! Opening a store runs the migrations (idempotent). Credentials are sealed
//! with a [`CredentialKey`] that the caller supplies from configuration; the
//! key is never written to the database. With
//! [`StateStore::with_pii_fields`], personal fields are sealed with the same
//! key in dead letters, audit entries and review items, and
//! [`StateStore::purge_older_than`] applies a retention period (see
//! [`pii`]). Where several writes must land
//! together (a page's record states and its checkpoint), use
//! [`StateStore::begin`] and commit the [`StateTx`].
//!
//! ```no_run
//! use crm_sql::state::{CredentialKey, NewConnection, StateStore, SyncDirection, SyncType};
//! # async fn run() -> crm_core::Result<()> {
//! let key = CredentialKey::from_env("CRM_CREDENTIAL_KEY")?;
//! let store = StateStore::open_url("sqlite://crm-state.db", key).await?;
//! let conn = store
//!     .create_connection(NewConnection::new("postgres", "bookings-db").credentials("s3cret".into()))
//!     .await?;
//! let run = store.start_run(&conn, "booking", SyncType::Delta, SyncDirection::FromCrm).await?;
//! # Ok(()) }
//! ```

mod crypto;
pub mod jobs;
mod keyed;
pub mod lease;
mod migrations;
pub mod pii;
mod queues;
mod webhook_keyed;

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use chrono::{DateTime, Utc};
use crm_core::pii::PiiFields;
use crm_core::{Cursor, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crypto::CredentialKey;
pub use pii::PurgeReport;
pub use queues::{PageAfter, QueueFilter};

use crate::config::{DatabaseKind, SqlConfig};
use crate::db::{Arg, DbError, Pool, Row, RowExt, Tx};
use crate::error::{Redactor, SqlError};
use migrations::placeholders;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id read from elsewhere.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            fn random() -> Self {
                let mut b = [0u8; 16];
                OsRng.fill_bytes(&mut b);
                $name(b.iter().map(|x| format!("{x:02x}")).collect())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of a stored connection.
    ConnectionId
);
id_type!(
    /// The id of a sync run.
    SyncRunId
);
id_type!(
    /// The id of a field mapping row.
    FieldMappingId
);
id_type!(
    /// The id of a queued webhook event.
    WebhookEventId
);
id_type!(
    /// The id of an audit log entry.
    AuditId
);
id_type!(
    /// The id of a review queue item.
    ReviewId
);
id_type!(
    /// The id of a dead letter.
    DeadLetterId
);

macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn parse(s: &str) -> std::result::Result<Self, SqlError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(SqlError::Decode {
                        column: stringify!($name).to_owned(),
                        message: format!("unknown value {other:?}"),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(
    /// The state of a connection.
    ConnectionStatus {
        /// Syncing normally.
        Active => "active",
        /// Paused by a person or by a schema mismatch.
        Paused => "paused",
        /// The last attempt failed; see `last_error`.
        Error => "error",
        /// Credentials were removed.
        Disconnected => "disconnected",
    }
);
str_enum!(
    /// What started a sync run.
    SyncType {
        /// Every record.
        Full => "full",
        /// Changes since the checkpoint.
        Delta => "delta",
        /// Webhook events.
        Webhook => "webhook",
        /// One record, on request.
        Manual => "manual",
    }
);
str_enum!(
    /// Which way a run or a mapping moves data.
    SyncDirection {
        /// Into the CRM.
        ToCrm => "to_crm",
        /// Out of the CRM.
        FromCrm => "from_crm",
        /// Both ways.
        Bidirectional => "bidirectional",
    }
);
str_enum!(
    /// The state of a sync run.
    RunStatus {
        /// Still going.
        Running => "running",
        /// Finished (records may still have failed individually).
        Completed => "completed",
        /// Stopped by an error.
        Failed => "failed",
    }
);
str_enum!(
    /// The state of a queued webhook event.
    WebhookStatus {
        /// Waiting to be processed.
        Pending => "pending",
        /// Done.
        Processed => "processed",
        /// Gave up.
        Failed => "failed",
    }
);
str_enum!(
    /// Why a record waits for a person.
    ReviewReason {
        /// A fuzzy match below the confident threshold.
        ProbableMatch => "probable_match",
        /// More than one candidate matched.
        MultipleMatch => "multiple_match",
        /// A field conflict under the `manual` policy.
        ManualConflict => "manual_conflict",
    }
);
str_enum!(
    /// The state of a review item.
    ReviewStatus {
        /// Waiting.
        Open => "open",
        /// Decided.
        Resolved => "resolved",
        /// Dropped without a decision.
        Dismissed => "dismissed",
    }
);

/// A connection to create.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewConnection {
    /// The provider kind (`salesforce`, `postgres`, ...).
    pub provider: String,
    /// A name unique per provider.
    pub name: String,
    /// Secret credentials (a token, a JSON key); sealed before storing.
    pub credentials: Option<SecretString>,
    /// Non-secret settings.
    pub settings: serde_json::Value,
}

impl NewConnection {
    /// A connection with no credentials and empty settings.
    pub fn new(provider: impl Into<String>, name: impl Into<String>) -> Self {
        NewConnection {
            provider: provider.into(),
            name: name.into(),
            credentials: None,
            settings: serde_json::json!({}),
        }
    }

    /// Sets the credentials.
    #[must_use]
    pub fn credentials(mut self, credentials: SecretString) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the settings.
    #[must_use]
    pub fn settings(mut self, settings: serde_json::Value) -> Self {
        self.settings = settings;
        self
    }
}

/// A stored connection (credentials stay sealed; see [`StateStore::credentials`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Connection {
    /// Its id.
    pub id: ConnectionId,
    /// The provider kind.
    pub provider: String,
    /// Its name.
    pub name: String,
    /// Its state.
    pub status: ConnectionStatus,
    /// Whether credentials are stored.
    pub has_credentials: bool,
    /// Non-secret settings.
    pub settings: serde_json::Value,
    /// When it last synced.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A sync run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SyncRun {
    /// Its id.
    pub id: SyncRunId,
    /// The connection synced.
    pub connection_id: ConnectionId,
    /// The object synced.
    pub object: String,
    /// What started it.
    pub sync_type: SyncType,
    /// Which way.
    pub direction: SyncDirection,
    /// Its state.
    pub status: RunStatus,
    /// Records seen.
    pub records_processed: i64,
    /// Records written.
    pub records_success: i64,
    /// Records that failed.
    pub records_failed: i64,
    /// Error details.
    pub errors: serde_json::Value,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once finished.
    pub completed_at: Option<DateTime<Utc>>,
}

/// One field mapping of a connection's object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FieldMappingRow {
    /// The field on our side.
    pub local_field: String,
    /// The field on the provider's side.
    pub remote_field: String,
    /// Which way it syncs.
    pub direction: SyncDirection,
    /// The transform, as the mapping module's JSON.
    pub transform: Option<serde_json::Value>,
    /// Added by a user rather than a default map.
    pub is_custom: bool,
}

impl FieldMappingRow {
    /// A direct mapping.
    pub fn new(
        local: impl Into<String>,
        remote: impl Into<String>,
        direction: SyncDirection,
    ) -> Self {
        FieldMappingRow {
            local_field: local.into(),
            remote_field: remote.into(),
            direction,
            transform: None,
            is_custom: false,
        }
    }

    /// Sets the transform.
    #[must_use]
    pub fn transform(mut self, transform: serde_json::Value) -> Self {
        self.transform = Some(transform);
        self
    }

    /// Marks it user-defined.
    #[must_use]
    pub fn custom(mut self) -> Self {
        self.is_custom = true;
        self
    }
}

/// The sync state of one record.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RecordSyncState {
    /// The connection.
    pub connection_id: ConnectionId,
    /// The object.
    pub object: String,
    /// Our id.
    pub local_id: String,
    /// The provider's id.
    pub remote_id: Option<String>,
    /// The provider's record type.
    pub remote_type: Option<String>,
    /// When it last synced.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// When it last changed on our side.
    pub local_updated_at: Option<DateTime<Utc>>,
    /// When it last changed on the provider's side.
    pub remote_updated_at: Option<DateTime<Utc>>,
    /// Both sides changed since the last sync.
    pub conflict: bool,
    /// What conflicts (fields, values, decision).
    pub conflict_details: Option<serde_json::Value>,
    /// The values both sides had at the last sync, for three-way merges and
    /// echo suppression. Customer data: sealed with the store's key at rest.
    pub snapshot: Option<Snapshot>,
}

/// Record values kept in the sync state (see [`RecordSyncState::snapshot`]).
///
/// Customer data: the store seals it with its [`CredentialKey`] before
/// writing, and `Debug` shows only its size.
#[derive(Clone, PartialEq)]
pub struct Snapshot(pub serde_json::Value);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.as_object().map_or(0, serde_json::Map::len);
        write!(f, "Snapshot({n} keys)")
    }
}

impl RecordSyncState {
    /// A state with only the ids set.
    pub fn new(
        connection_id: ConnectionId,
        object: impl Into<String>,
        local_id: impl Into<String>,
    ) -> Self {
        RecordSyncState {
            connection_id,
            object: object.into(),
            local_id: local_id.into(),
            remote_id: None,
            remote_type: None,
            last_synced_at: None,
            local_updated_at: None,
            remote_updated_at: None,
            conflict: false,
            conflict_details: None,
            snapshot: None,
        }
    }

    /// Sets the remote id.
    #[must_use]
    pub fn remote(mut self, id: impl Into<String>, record_type: Option<String>) -> Self {
        self.remote_id = Some(id.into());
        self.remote_type = record_type;
        self
    }

    /// Sets the timestamps.
    #[must_use]
    pub fn times(
        mut self,
        last_synced_at: Option<DateTime<Utc>>,
        local_updated_at: Option<DateTime<Utc>>,
        remote_updated_at: Option<DateTime<Utc>>,
    ) -> Self {
        self.last_synced_at = last_synced_at;
        self.local_updated_at = local_updated_at;
        self.remote_updated_at = remote_updated_at;
        self
    }

    /// Flags a conflict.
    #[must_use]
    pub fn conflict(mut self, details: serde_json::Value) -> Self {
        self.conflict = true;
        self.conflict_details = Some(details);
        self
    }

    /// Sets the snapshot of both sides' values.
    #[must_use]
    pub fn snapshot(mut self, values: serde_json::Value) -> Self {
        self.snapshot = Some(Snapshot(values));
        self
    }
}

/// A webhook event to queue.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewWebhookEvent {
    /// The connection it belongs to, when known.
    pub connection_id: Option<ConnectionId>,
    /// The provider that sent it.
    pub provider: String,
    /// Its type (`contact.propertyChange`, ...).
    pub event_type: String,
    /// The body.
    pub payload: serde_json::Value,
    /// Whether its signature checked out.
    pub signature_valid: bool,
}

impl NewWebhookEvent {
    /// An event with a valid signature and no connection.
    pub fn new(
        provider: impl Into<String>,
        event_type: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewWebhookEvent {
            connection_id: None,
            provider: provider.into(),
            event_type: event_type.into(),
            payload,
            signature_valid: true,
        }
    }

    /// Sets the connection.
    #[must_use]
    pub fn connection(mut self, id: ConnectionId) -> Self {
        self.connection_id = Some(id);
        self
    }
}

/// A queued webhook event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// Its id.
    pub id: WebhookEventId,
    /// The connection.
    pub connection_id: Option<ConnectionId>,
    /// The provider.
    pub provider: String,
    /// Its type.
    pub event_type: String,
    /// The body.
    pub payload: serde_json::Value,
    /// Whether its signature checked out.
    pub signature_valid: bool,
    /// Its state.
    pub status: WebhookStatus,
    /// Processing attempts so far.
    pub attempts: i64,
    /// The last processing error.
    pub last_error: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When it was processed.
    pub processed_at: Option<DateTime<Utc>>,
}

/// An audit entry to record.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewAuditEntry {
    /// Who (a user, `sync:<job>`).
    pub actor: String,
    /// What (`update`, `resolve_conflict`, ...).
    pub action: String,
    /// The connection, if any.
    pub connection_id: Option<ConnectionId>,
    /// The object, if any.
    pub object: Option<String>,
    /// The record, if any.
    pub record_id: Option<String>,
    /// Values before.
    pub old_values: Option<serde_json::Value>,
    /// Values after.
    pub new_values: Option<serde_json::Value>,
}

impl NewAuditEntry {
    /// An entry with no record or values.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        NewAuditEntry {
            actor: actor.into(),
            action: action.into(),
            connection_id: None,
            object: None,
            record_id: None,
            old_values: None,
            new_values: None,
        }
    }

    /// Names the record.
    #[must_use]
    pub fn record(mut self, object: impl Into<String>, record_id: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self.record_id = Some(record_id.into());
        self
    }

    /// Names the connection.
    #[must_use]
    pub fn connection(mut self, id: ConnectionId) -> Self {
        self.connection_id = Some(id);
        self
    }

    /// Sets the values before and after.
    #[must_use]
    pub fn values(
        mut self,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> Self {
        self.old_values = old;
        self.new_values = new;
        self
    }
}

/// A recorded audit entry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Its id.
    pub id: AuditId,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The connection.
    pub connection_id: Option<ConnectionId>,
    /// The object.
    pub object: Option<String>,
    /// The record.
    pub record_id: Option<String>,
    /// Values before.
    pub old_values: Option<serde_json::Value>,
    /// Values after.
    pub new_values: Option<serde_json::Value>,
}

/// A record waiting for a person.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReviewItem {
    /// Its id.
    pub id: ReviewId,
    /// The connection.
    pub connection_id: Option<ConnectionId>,
    /// The object.
    pub object: String,
    /// The record.
    pub record_id: String,
    /// Why it waits.
    pub reason: ReviewReason,
    /// Candidates, scores, conflicting values.
    pub details: serde_json::Value,
    /// Its state.
    pub status: ReviewStatus,
    /// The decision.
    pub resolution: Option<serde_json::Value>,
    /// When queued.
    pub created_at: DateTime<Utc>,
    /// When decided.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A record that failed a pipeline stage.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id.
    pub id: DeadLetterId,
    /// The connection.
    pub connection_id: Option<ConnectionId>,
    /// The object.
    pub object: String,
    /// The record as it was.
    pub record: serde_json::Value,
    /// The stage that failed (`validate`, `write`, ...).
    pub stage: String,
    /// The last error.
    pub error: String,
    /// Attempts so far.
    pub attempts: i64,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// The record's key, when it was kept with one
    /// ([`StateStore::put_dead_letter`]); `None` for
    /// [`StateStore::add_dead_letter`].
    pub record_key: Option<String>,
}

/// The sync-state store. Cloning shares the pool.
#[derive(Clone)]
pub struct StateStore {
    pool: Pool,
    key: CredentialKey,
    redactor: Redactor,
    pii: Arc<PiiFields>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("kind", &self.pool.kind())
            .field("pii_fields", &self.pii.len())
            .finish_non_exhaustive()
    }
}

/// Runs state-store SQL on a pool or inside a transaction.
enum Exec<'e> {
    Pool(&'e Pool),
    Tx(&'e mut Tx),
}

impl Exec<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg]) -> std::result::Result<u64, DbError> {
        match self {
            Exec::Pool(p) => p.execute(sql, args).await,
            Exec::Tx(t) => t.execute(sql, args).await,
        }
    }

    async fn fetch(&mut self, sql: &str, args: &[Arg]) -> std::result::Result<Vec<Row>, DbError> {
        match self {
            Exec::Pool(p) => p.fetch_all(sql, args, None).await,
            Exec::Tx(t) => t.fetch_all(sql, args, None).await,
        }
    }
}

/// SQL builder/runner shared by [`StateStore`] and [`StateTx`].
struct Ops<'e, 'r> {
    e: Exec<'e>,
    dialect: DatabaseKind,
    redactor: &'r Redactor,
    key: &'r CredentialKey,
    pii: &'r PiiFields,
}

fn json_opt(v: &Option<serde_json::Value>) -> Arg {
    v.as_ref()
        .map_or(Arg::Null(crm_core::ValueType::Text), Arg::json_text)
}

impl StateStore {
    /// A review item from its row, sealed values opened.
    fn review_from(&self, r: &Row) -> std::result::Result<ReviewItem, SqlError> {
        let id = r.text("id")?;
        let open = |col: &str| pii::open_col(&self.key, pii::REVIEW_QUEUE, &id, r.opt_text(col));
        Ok(ReviewItem {
            details: open("details")?.unwrap_or(serde_json::Value::Null),
            resolution: open("resolution")?,
            id: ReviewId(id.clone()),
            connection_id: r.opt_text("connection_id").map(ConnectionId),
            object: r.text("object")?,
            record_id: r.text("record_id")?,
            reason: ReviewReason::parse(&r.text("reason")?)?,
            status: ReviewStatus::parse(&r.text("status")?)?,
            created_at: r.time("created_at")?,
            resolved_at: r.opt_time("resolved_at"),
        })
    }

    /// A dead letter from its row, sealed values opened.
    fn dead_letter_from(&self, r: &Row) -> std::result::Result<DeadLetter, SqlError> {
        let id = r.text("id")?;
        let record = pii::open_col(&self.key, pii::DEAD_LETTERS, &id, r.opt_text("record"))?;
        Ok(DeadLetter {
            id: DeadLetterId(id),
            connection_id: r.opt_text("connection_id").map(ConnectionId),
            object: r.text("object")?,
            record: record.unwrap_or(serde_json::Value::Null),
            stage: r.text("stage")?,
            error: r.text("error")?,
            attempts: r.int("attempts")?,
            first_failed_at: r.time("first_failed_at")?,
            last_failed_at: r.time("last_failed_at")?,
            record_key: r.opt_text("record_key"),
        })
    }

    /// An audit entry from its row, sealed values opened.
    fn audit_from(&self, r: &Row) -> std::result::Result<AuditEntry, SqlError> {
        let id = r.text("id")?;
        let open = |col: &str| pii::open_col(&self.key, pii::AUDIT_LOG, &id, r.opt_text(col));
        Ok(AuditEntry {
            old_values: open("old_values")?,
            new_values: open("new_values")?,
            id: AuditId(id.clone()),
            at: r.time("occurred_at")?,
            actor: r.text("actor")?,
            action: r.text("action")?,
            connection_id: r.opt_text("connection_id").map(ConnectionId),
            object: r.opt_text("object"),
            record_id: r.opt_text("record_id"),
        })
    }
}

fn json_col(r: &Row, col: &str) -> Option<serde_json::Value> {
    r.opt_text(col).and_then(|s| serde_json::from_str(&s).ok())
}

impl Ops<'_, '_> {
    async fn exec(&mut self, op: &'static str, sql: &str, args: &[Arg]) -> Result<u64> {
        let sql = placeholders(sql, self.dialect);
        self.e
            .execute(&sql, args)
            .await
            .map_err(|e| e.into_error(op, self.redactor))
    }

    async fn fetch(&mut self, op: &'static str, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let sql = placeholders(sql, self.dialect);
        self.e
            .fetch(&sql, args)
            .await
            .map_err(|e| e.into_error(op, self.redactor))
    }

    async fn save_checkpoint(
        &mut self,
        conn: &ConnectionId,
        object: &str,
        cursor: &Cursor,
    ) -> Result<()> {
        let sql = match self.dialect {
            DatabaseKind::MySql => {
                "INSERT INTO crm_checkpoints (connection_id, object, cursor_state, updated_at) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE cursor_state = VALUES(cursor_state), updated_at = VALUES(updated_at)"
            }
            _ => {
                "INSERT INTO crm_checkpoints (connection_id, object, cursor_state, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (connection_id, object) DO UPDATE SET cursor_state = excluded.cursor_state, updated_at = excluded.updated_at"
            }
        };
        self.exec(
            "state.save_checkpoint",
            sql,
            &[
                Arg::text(conn.as_str()),
                Arg::text(object),
                Arg::json_text(cursor.as_json()),
                Arg::time(Utc::now()),
            ],
        )
        .await
        .map(drop)
    }

    async fn upsert_record_state(
        &mut self,
        s: &RecordSyncState,
        sealed_snapshot: Option<String>,
    ) -> Result<()> {
        let cols = "connection_id, object, local_id, remote_id, remote_type, last_synced_at, \
                    local_updated_at, remote_updated_at, conflict, conflict_details, snapshot";
        let updates = [
            "remote_id",
            "remote_type",
            "last_synced_at",
            "local_updated_at",
            "remote_updated_at",
            "conflict",
            "conflict_details",
            "snapshot",
        ];
        let sql = match self.dialect {
            DatabaseKind::MySql => format!(
                "INSERT INTO crm_record_sync_state ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE {}",
                updates
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!(
                "INSERT INTO crm_record_sync_state ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (connection_id, object, local_id) DO UPDATE SET {}",
                updates
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.exec(
            "state.upsert_record_state",
            &sql,
            &[
                Arg::text(s.connection_id.as_str()),
                Arg::text(&s.object),
                Arg::text(&s.local_id),
                Arg::opt_text(s.remote_id.clone()),
                Arg::opt_text(s.remote_type.clone()),
                Arg::opt_time(s.last_synced_at),
                Arg::opt_time(s.local_updated_at),
                Arg::opt_time(s.remote_updated_at),
                Arg::bool(s.conflict),
                json_opt(&s.conflict_details),
                sealed_snapshot.map_or(Arg::Null(crm_core::ValueType::Text), Arg::text),
            ],
        )
        .await
        .map(drop)
    }

    async fn add_dead_letter(
        &mut self,
        conn: Option<&ConnectionId>,
        object: &str,
        record: &serde_json::Value,
        stage: &str,
        error: &str,
    ) -> Result<DeadLetterId> {
        let id = DeadLetterId::random();
        let now = Utc::now();
        let error = self.pii.mask_json_values_in(record, error);
        let record = pii::seal_json(self.key, self.pii, pii::DEAD_LETTERS, id.as_str(), record)?;
        self.exec(
            "state.add_dead_letter",
            "INSERT INTO crm_dead_letters (id, connection_id, object, record, stage, error, attempts, \
             first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
            &[
                Arg::text(id.as_str()),
                Arg::opt_text(conn.map(|c| c.as_str().to_owned())),
                Arg::text(object),
                Arg::json_text(&record),
                Arg::text(stage),
                Arg::text(error),
                Arg::time(now),
                Arg::time(now),
            ],
        )
        .await?;
        Ok(id)
    }

    async fn audit(&mut self, e: &NewAuditEntry) -> Result<AuditId> {
        let id = AuditId::random();
        let seal = |v: &Option<serde_json::Value>| {
            pii::seal_opt(self.key, self.pii, pii::AUDIT_LOG, id.as_str(), v.as_ref())
        };
        let (old_values, new_values) = (seal(&e.old_values)?, seal(&e.new_values)?);
        self.exec(
            "state.audit",
            "INSERT INTO crm_audit_log (id, occurred_at, actor, action, connection_id, object, record_id, \
             old_values, new_values) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                Arg::text(id.as_str()),
                Arg::time(Utc::now()),
                Arg::text(&e.actor),
                Arg::text(&e.action),
                Arg::opt_text(e.connection_id.as_ref().map(|c| c.as_str().to_owned())),
                Arg::opt_text(e.object.clone()),
                Arg::opt_text(e.record_id.clone()),
                json_opt(&old_values),
                json_opt(&new_values),
            ],
        )
        .await?;
        Ok(id)
    }

    async fn run_progress(
        &mut self,
        run: &SyncRunId,
        processed: i64,
        success: i64,
        failed: i64,
    ) -> Result<()> {
        self.exec(
            "state.record_run_progress",
            "UPDATE crm_sync_runs SET records_processed = records_processed + ?, \
             records_success = records_success + ?, records_failed = records_failed + ? WHERE id = ?",
            &[
                Arg::int(processed),
                Arg::int(success),
                Arg::int(failed),
                Arg::text(run.as_str()),
            ],
        )
        .await
        .map(drop)
    }
}

fn decode<T>(r: std::result::Result<T, SqlError>) -> Result<T> {
    r.map_err(Error::from)
}

impl StateStore {
    /// Connects with `config` and applies pending migrations.
    ///
    /// # Errors
    /// Connection errors as [`crate::SqlConnector::connect`]; migration
    /// failures as database errors.
    pub async fn open(config: &SqlConfig, key: CredentialKey) -> Result<Self> {
        let cfg = config.resolve()?;
        let pool = Pool::connect(&cfg).await?;
        let store = StateStore {
            pool,
            key,
            redactor: cfg.redactor(),
            pii: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Connects with a URL (`sqlite://state.db`, `postgres://...`) and migrates.
    ///
    /// # Errors
    /// As [`StateStore::open`].
    pub async fn open_url(url: &str, key: CredentialKey) -> Result<Self> {
        StateStore::open(&SqlConfig::from_url(url)?, key).await
    }

    /// Applies pending migrations; returns the versions applied by this call
    /// (empty when the schema is current).
    ///
    /// # Errors
    /// Database errors.
    ///
    /// # Cancel safety
    /// Each migration commits with its version row; a dropped call leaves
    /// whole migrations applied or not (MySQL commits DDL statement by
    /// statement, and every statement is idempotent, so a rerun completes it).
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        migrations::migrate(&self.pool)
            .await
            .map_err(|e| e.into_error("state.migrate", &self.redactor))
    }

    /// The engine.
    pub fn database_kind(&self) -> DatabaseKind {
        self.pool.kind()
    }

    fn ops(&self) -> Ops<'_, '_> {
        Ops {
            e: Exec::Pool(&self.pool),
            dialect: self.pool.kind(),
            redactor: &self.redactor,
            key: &self.key,
            pii: &self.pii,
        }
    }

    /// Starts a transaction for writes that must land together.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin(&self) -> Result<StateTx<'_>> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(|e| e.into_error("state.begin", &self.redactor))?;
        Ok(StateTx { tx, store: self })
    }

    // ----- connections -----

    /// Stores a connection, sealing its credentials.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Conflict`] if the provider already has a
    /// connection of that name.
    pub async fn create_connection(&self, new: NewConnection) -> Result<ConnectionId> {
        let id = ConnectionId::random();
        let sealed = match &new.credentials {
            Some(c) => Some(self.key.seal(c.expose_secret(), id.as_str())?),
            None => None,
        };
        let now = Utc::now();
        self.ops()
            .exec(
                "state.create_connection",
                "INSERT INTO crm_connections (id, provider, name, status, credentials, settings, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    Arg::text(id.as_str()),
                    Arg::text(&new.provider),
                    Arg::text(&new.name),
                    Arg::text(ConnectionStatus::Active.as_str()),
                    Arg::opt_text(sealed),
                    Arg::json_text(&new.settings),
                    Arg::time(now),
                    Arg::time(now),
                ],
            )
            .await?;
        Ok(id)
    }

    fn connection_from(r: &Row) -> std::result::Result<Connection, SqlError> {
        Ok(Connection {
            id: ConnectionId(r.text("id")?),
            provider: r.text("provider")?,
            name: r.text("name")?,
            status: ConnectionStatus::parse(&r.text("status")?)?,
            has_credentials: r.opt_text("credentials").is_some(),
            settings: json_col(r, "settings").unwrap_or(serde_json::Value::Null),
            last_sync_at: r.opt_time("last_sync_at"),
            last_error: r.opt_text("last_error"),
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }

    /// A connection by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn connection(&self, id: &ConnectionId) -> Result<Option<Connection>> {
        let rows = self
            .ops()
            .fetch(
                "state.connection",
                "SELECT * FROM crm_connections WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        rows.first()
            .map(Self::connection_from)
            .transpose()
            .map_err(Error::from)
    }

    /// Every connection, by provider and name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn connections(&self) -> Result<Vec<Connection>> {
        let rows = self
            .ops()
            .fetch(
                "state.connections",
                "SELECT * FROM crm_connections ORDER BY provider, name",
                &[],
            )
            .await?;
        decode(rows.iter().map(Self::connection_from).collect())
    }

    /// Sets a connection's status and last error.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    pub async fn set_connection_status(
        &self,
        id: &ConnectionId,
        status: ConnectionStatus,
        last_error: Option<&str>,
    ) -> Result<()> {
        let n = self
            .ops()
            .exec(
                "state.set_connection_status",
                "UPDATE crm_connections SET status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                &[
                    Arg::text(status.as_str()),
                    Arg::opt_text(last_error),
                    Arg::time(Utc::now()),
                    Arg::text(id.as_str()),
                ],
            )
            .await?;
        not_found_if_zero(n, "connection", id.as_str())
    }

    /// Records a successful sync time.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    pub async fn set_last_sync(&self, id: &ConnectionId, at: DateTime<Utc>) -> Result<()> {
        let n = self
            .ops()
            .exec(
                "state.set_last_sync",
                "UPDATE crm_connections SET last_sync_at = ?, last_error = NULL, updated_at = ? WHERE id = ?",
                &[Arg::time(at), Arg::time(Utc::now()), Arg::text(id.as_str())],
            )
            .await?;
        not_found_if_zero(n, "connection", id.as_str())
    }

    /// Replaces a connection's credentials (sealed).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    pub async fn set_credentials(
        &self,
        id: &ConnectionId,
        credentials: &SecretString,
    ) -> Result<()> {
        let sealed = self.key.seal(credentials.expose_secret(), id.as_str())?;
        let n = self
            .ops()
            .exec(
                "state.set_credentials",
                "UPDATE crm_connections SET credentials = ?, updated_at = ? WHERE id = ?",
                &[
                    Arg::text(sealed),
                    Arg::time(Utc::now()),
                    Arg::text(id.as_str()),
                ],
            )
            .await?;
        not_found_if_zero(n, "connection", id.as_str())
    }

    /// A connection's credentials, unsealed.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when the store's key does not open them
    /// (a different key, or altered data); database errors.
    pub async fn credentials(&self, id: &ConnectionId) -> Result<Option<SecretString>> {
        let rows = self
            .ops()
            .fetch(
                "state.credentials",
                "SELECT credentials FROM crm_connections WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        match rows.first().and_then(|r| r.opt_text("credentials")) {
            Some(blob) => {
                Ok(Some(self.key.open(&blob, id.as_str()).map_err(|e| {
                    Error::from(e).with_operation("state.credentials")
                })?))
            }
            None => Ok(None),
        }
    }

    /// Deletes a connection and everything that belongs to it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn delete_connection(&self, id: &ConnectionId) -> Result<bool> {
        let mut tx = self.begin().await?;
        for table in [
            "crm_checkpoints",
            "crm_record_sync_state",
            "crm_field_mappings",
            "crm_sync_runs",
            "crm_webhook_events",
            "crm_review_queue",
            "crm_dead_letters",
        ] {
            tx.ops()
                .exec(
                    "state.delete_connection",
                    &format!("DELETE FROM {table} WHERE connection_id = ?"),
                    &[Arg::text(id.as_str())],
                )
                .await?;
        }
        let n = tx
            .ops()
            .exec(
                "state.delete_connection",
                "DELETE FROM crm_connections WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    // ----- sync runs -----

    /// Starts a run (status `running`).
    ///
    /// # Errors
    /// Database errors (an unknown connection violates a foreign key).
    pub async fn start_run(
        &self,
        conn: &ConnectionId,
        object: &str,
        sync_type: SyncType,
        direction: SyncDirection,
    ) -> Result<SyncRunId> {
        let id = SyncRunId::random();
        self.ops()
            .exec(
                "state.start_run",
                "INSERT INTO crm_sync_runs (id, connection_id, object, sync_type, direction, status, \
                 errors, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    Arg::text(id.as_str()),
                    Arg::text(conn.as_str()),
                    Arg::text(object),
                    Arg::text(sync_type.as_str()),
                    Arg::text(direction.as_str()),
                    Arg::text(RunStatus::Running.as_str()),
                    Arg::text("[]"),
                    Arg::time(Utc::now()),
                ],
            )
            .await?;
        Ok(id)
    }

    /// Adds to a run's counters.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_run_progress(
        &self,
        run: &SyncRunId,
        processed: i64,
        success: i64,
        failed: i64,
    ) -> Result<()> {
        self.ops()
            .run_progress(run, processed, success, failed)
            .await
    }

    /// Finishes a run with its status and error details.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown run.
    pub async fn finish_run(
        &self,
        run: &SyncRunId,
        status: RunStatus,
        errors: &serde_json::Value,
    ) -> Result<()> {
        let n = self
            .ops()
            .exec(
                "state.finish_run",
                "UPDATE crm_sync_runs SET status = ?, errors = ?, completed_at = ? WHERE id = ?",
                &[
                    Arg::text(status.as_str()),
                    Arg::json_text(errors),
                    Arg::time(Utc::now()),
                    Arg::text(run.as_str()),
                ],
            )
            .await?;
        not_found_if_zero(n, "sync run", run.as_str())
    }

    fn run_from(r: &Row) -> std::result::Result<SyncRun, SqlError> {
        Ok(SyncRun {
            id: SyncRunId(r.text("id")?),
            connection_id: ConnectionId(r.text("connection_id")?),
            object: r.text("object")?,
            sync_type: SyncType::parse(&r.text("sync_type")?)?,
            direction: SyncDirection::parse(&r.text("direction")?)?,
            status: RunStatus::parse(&r.text("status")?)?,
            records_processed: r.int("records_processed")?,
            records_success: r.int("records_success")?,
            records_failed: r.int("records_failed")?,
            errors: json_col(r, "errors").unwrap_or(serde_json::Value::Null),
            started_at: r.time("started_at")?,
            completed_at: r.opt_time("completed_at"),
        })
    }

    /// A run by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn run(&self, id: &SyncRunId) -> Result<Option<SyncRun>> {
        let rows = self
            .ops()
            .fetch(
                "state.run",
                "SELECT * FROM crm_sync_runs WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        rows.first()
            .map(Self::run_from)
            .transpose()
            .map_err(Error::from)
    }

    /// A connection's latest runs, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn runs(&self, conn: &ConnectionId, limit: u32) -> Result<Vec<SyncRun>> {
        let rows = self
            .ops()
            .fetch(
                "state.runs",
                &format!(
                    "SELECT * FROM crm_sync_runs WHERE connection_id = ? ORDER BY started_at DESC LIMIT {limit}"
                ),
                &[Arg::text(conn.as_str())],
            )
            .await?;
        decode(rows.iter().map(Self::run_from).collect())
    }

    /// Deletes finished runs started before `before` (log cleanup).
    ///
    /// # Errors
    /// Database errors.
    pub async fn delete_runs_before(&self, before: DateTime<Utc>) -> Result<u64> {
        self.ops()
            .exec(
                "state.delete_runs_before",
                "DELETE FROM crm_sync_runs WHERE started_at < ? AND status <> ?",
                &[Arg::time(before), Arg::text(RunStatus::Running.as_str())],
            )
            .await
    }

    // ----- field mappings -----

    /// Replaces the field mappings of a connection's object, atomically.
    ///
    /// # Errors
    /// Database errors.
    pub async fn replace_field_mappings(
        &self,
        conn: &ConnectionId,
        object: &str,
        mappings: &[FieldMappingRow],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.ops()
            .exec(
                "state.replace_field_mappings",
                "DELETE FROM crm_field_mappings WHERE connection_id = ? AND object = ?",
                &[Arg::text(conn.as_str()), Arg::text(object)],
            )
            .await?;
        for (i, m) in mappings.iter().enumerate() {
            tx.ops()
                .exec(
                    "state.replace_field_mappings",
                    "INSERT INTO crm_field_mappings (id, connection_id, object, local_field, remote_field, \
                     direction, transform, is_custom, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    &[
                        Arg::text(FieldMappingId::random().as_str()),
                        Arg::text(conn.as_str()),
                        Arg::text(object),
                        Arg::text(&m.local_field),
                        Arg::text(&m.remote_field),
                        Arg::text(m.direction.as_str()),
                        json_opt(&m.transform),
                        Arg::bool(m.is_custom),
                        Arg::int(i64::try_from(i).unwrap_or(i64::MAX)),
                    ],
                )
                .await?;
        }
        tx.commit().await
    }

    /// The field mappings of a connection's object, in their order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn field_mappings(
        &self,
        conn: &ConnectionId,
        object: &str,
    ) -> Result<Vec<FieldMappingRow>> {
        let rows = self
            .ops()
            .fetch(
                "state.field_mappings",
                "SELECT * FROM crm_field_mappings WHERE connection_id = ? AND object = ? ORDER BY position",
                &[Arg::text(conn.as_str()), Arg::text(object)],
            )
            .await?;
        decode(
            rows.iter()
                .map(|r| {
                    Ok(FieldMappingRow {
                        local_field: r.text("local_field")?,
                        remote_field: r.text("remote_field")?,
                        direction: SyncDirection::parse(&r.text("direction")?)?,
                        transform: json_col(r, "transform"),
                        is_custom: r.boolean("is_custom"),
                    })
                })
                .collect(),
        )
    }

    // ----- per-record sync state -----

    /// Creates or replaces a record's sync state.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upsert_record_state(&self, state: &RecordSyncState) -> Result<()> {
        let sealed = self.seal_snapshot(state)?;
        self.ops().upsert_record_state(state, sealed).await
    }

    /// The AEAD context binding a snapshot to its row, so a sealed value
    /// copied onto another record does not open.
    fn snapshot_context(conn: &str, object: &str, local_id: &str) -> String {
        format!("snapshot\u{1f}{conn}\u{1f}{object}\u{1f}{local_id}")
    }

    fn seal_snapshot(&self, s: &RecordSyncState) -> Result<Option<String>> {
        let Some(snap) = &s.snapshot else {
            return Ok(None);
        };
        let ctx = Self::snapshot_context(s.connection_id.as_str(), &s.object, &s.local_id);
        Ok(Some(self.key.seal(&snap.0.to_string(), &ctx)?))
    }

    fn record_state_from(&self, r: &Row) -> std::result::Result<RecordSyncState, SqlError> {
        let connection_id = r.text("connection_id")?;
        let object = r.text("object")?;
        let local_id = r.text("local_id")?;
        let snapshot = match r.opt_text("snapshot") {
            None => None,
            Some(blob) => {
                let ctx = Self::snapshot_context(&connection_id, &object, &local_id);
                let plain = self.key.open(&blob, &ctx)?;
                let value = serde_json::from_str(plain.expose_secret())
                    .map_err(|_| SqlError::Crypto("a stored record snapshot is not JSON".into()))?;
                Some(Snapshot(value))
            }
        };
        Ok(RecordSyncState {
            snapshot,
            connection_id: ConnectionId(connection_id),
            object,
            local_id,
            remote_id: r.opt_text("remote_id"),
            remote_type: r.opt_text("remote_type"),
            last_synced_at: r.opt_time("last_synced_at"),
            local_updated_at: r.opt_time("local_updated_at"),
            remote_updated_at: r.opt_time("remote_updated_at"),
            conflict: r.boolean("conflict"),
            conflict_details: json_col(r, "conflict_details"),
        })
    }

    /// A record's sync state by our id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_state(
        &self,
        conn: &ConnectionId,
        object: &str,
        local_id: &str,
    ) -> Result<Option<RecordSyncState>> {
        let rows = self
            .ops()
            .fetch(
                "state.record_state",
                "SELECT * FROM crm_record_sync_state WHERE connection_id = ? AND object = ? AND local_id = ?",
                &[Arg::text(conn.as_str()), Arg::text(object), Arg::text(local_id)],
            )
            .await?;
        rows.first()
            .map(|r| self.record_state_from(r))
            .transpose()
            .map_err(Error::from)
    }

    /// A record's sync state by the provider's id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_state_by_remote(
        &self,
        conn: &ConnectionId,
        remote_id: &str,
    ) -> Result<Option<RecordSyncState>> {
        let rows = self
            .ops()
            .fetch(
                "state.record_state_by_remote",
                "SELECT * FROM crm_record_sync_state WHERE connection_id = ? AND remote_id = ?",
                &[Arg::text(conn.as_str()), Arg::text(remote_id)],
            )
            .await?;
        rows.first()
            .map(|r| self.record_state_from(r))
            .transpose()
            .map_err(Error::from)
    }

    /// A record's sync state by the provider's id, within one object (ids
    /// of different objects may collide).
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_state_by_remote_in(
        &self,
        conn: &ConnectionId,
        object: &str,
        remote_id: &str,
    ) -> Result<Option<RecordSyncState>> {
        let rows = self
            .ops()
            .fetch(
                "state.record_state_by_remote_in",
                "SELECT * FROM crm_record_sync_state WHERE connection_id = ? AND object = ? AND remote_id = ?",
                &[Arg::text(conn.as_str()), Arg::text(object), Arg::text(remote_id)],
            )
            .await?;
        rows.first()
            .map(|r| self.record_state_from(r))
            .transpose()
            .map_err(Error::from)
    }

    /// Removes a record's sync state (the record is gone on both sides).
    ///
    /// # Errors
    /// Database errors.
    pub async fn delete_record_state(
        &self,
        conn: &ConnectionId,
        object: &str,
        local_id: &str,
    ) -> Result<bool> {
        let n = self
            .ops()
            .exec(
                "state.delete_record_state",
                "DELETE FROM crm_record_sync_state WHERE connection_id = ? AND object = ? AND local_id = ?",
                &[Arg::text(conn.as_str()), Arg::text(object), Arg::text(local_id)],
            )
            .await?;
        Ok(n > 0)
    }

    /// Records of a connection flagged as conflicting.
    ///
    /// # Errors
    /// Database errors.
    pub async fn conflicts(&self, conn: &ConnectionId, limit: u32) -> Result<Vec<RecordSyncState>> {
        let rows = self
            .ops()
            .fetch(
                "state.conflicts",
                &format!(
                    "SELECT * FROM crm_record_sync_state WHERE connection_id = ? AND conflict = ? \
                     ORDER BY object, local_id LIMIT {limit}"
                ),
                &[Arg::text(conn.as_str()), Arg::bool(true)],
            )
            .await?;
        decode(rows.iter().map(|r| self.record_state_from(r)).collect())
    }

    // ----- checkpoints -----

    /// The committed cursor of a connection's object.
    ///
    /// # Errors
    /// Database errors; [`crm_core::ErrorKind::SchemaMismatch`] if the stored
    /// cursor is not JSON.
    pub async fn checkpoint(&self, conn: &ConnectionId, object: &str) -> Result<Option<Cursor>> {
        let rows = self
            .ops()
            .fetch(
                "state.checkpoint",
                "SELECT cursor_state FROM crm_checkpoints WHERE connection_id = ? AND object = ?",
                &[Arg::text(conn.as_str()), Arg::text(object)],
            )
            .await?;
        match rows.first().and_then(|r| r.opt_text("cursor_state")) {
            Some(text) => serde_json::from_str(&text)
                .map(|j| Some(Cursor::new(j)))
                .map_err(|e| {
                    Error::from(SqlError::Decode {
                        column: "cursor".into(),
                        message: e.to_string(),
                    })
                }),
            None => Ok(None),
        }
    }

    /// Commits a cursor (outside a transaction; see [`StateTx::save_checkpoint`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn save_checkpoint(
        &self,
        conn: &ConnectionId,
        object: &str,
        cursor: &Cursor,
    ) -> Result<()> {
        self.ops().save_checkpoint(conn, object, cursor).await
    }

    // ----- webhooks -----

    /// Queues a webhook event (status `pending`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn enqueue_webhook(&self, event: NewWebhookEvent) -> Result<WebhookEventId> {
        let id = WebhookEventId::random();
        self.ops()
            .exec(
                "state.enqueue_webhook",
                "INSERT INTO crm_webhook_events (id, connection_id, provider, event_type, payload, \
                 signature_valid, status, attempts, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                &[
                    Arg::text(id.as_str()),
                    Arg::opt_text(event.connection_id.as_ref().map(|c| c.as_str().to_owned())),
                    Arg::text(&event.provider),
                    Arg::text(&event.event_type),
                    Arg::json_text(&event.payload),
                    Arg::bool(event.signature_valid),
                    Arg::text(WebhookStatus::Pending.as_str()),
                    Arg::time(Utc::now()),
                ],
            )
            .await?;
        Ok(id)
    }

    /// The oldest pending events.
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_webhooks(&self, limit: u32) -> Result<Vec<WebhookEvent>> {
        let rows = self
            .ops()
            .fetch(
                "state.pending_webhooks",
                &format!(
                    "SELECT * FROM crm_webhook_events WHERE status = ? ORDER BY received_at, id LIMIT {limit}"
                ),
                &[Arg::text(WebhookStatus::Pending.as_str())],
            )
            .await?;
        decode(
            rows.iter()
                .map(|r| {
                    Ok(WebhookEvent {
                        id: WebhookEventId(r.text("id")?),
                        connection_id: r.opt_text("connection_id").map(ConnectionId),
                        provider: r.text("provider")?,
                        event_type: r.text("event_type")?,
                        payload: json_col(r, "payload").unwrap_or(serde_json::Value::Null),
                        signature_valid: r.boolean("signature_valid"),
                        status: WebhookStatus::parse(&r.text("status")?)?,
                        attempts: r.int("attempts")?,
                        last_error: r.opt_text("last_error"),
                        received_at: r.time("received_at")?,
                        processed_at: r.opt_time("processed_at"),
                    })
                })
                .collect(),
        )
    }

    /// Marks an event processed, or records a failed attempt (it stays
    /// pending unless `status` is [`WebhookStatus::Failed`]).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    pub async fn mark_webhook(
        &self,
        id: &WebhookEventId,
        status: WebhookStatus,
        error: Option<&str>,
    ) -> Result<()> {
        let processed = (status == WebhookStatus::Processed).then(Utc::now);
        let n = self
            .ops()
            .exec(
                "state.mark_webhook",
                "UPDATE crm_webhook_events SET status = ?, attempts = attempts + 1, last_error = ?, \
                 processed_at = ? WHERE id = ?",
                &[
                    Arg::text(status.as_str()),
                    Arg::opt_text(error),
                    Arg::opt_time(processed),
                    Arg::text(id.as_str()),
                ],
            )
            .await?;
        not_found_if_zero(n, "webhook event", id.as_str())
    }

    // ----- audit log -----

    /// Records an audit entry.
    ///
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// at rest (see [`pii`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit(&self, entry: &NewAuditEntry) -> Result<AuditId> {
        self.ops().audit(entry).await
    }

    /// The audit trail of one record, oldest first, sealed values opened.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn audit_log(
        &self,
        object: &str,
        record_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows = self
            .ops()
            .fetch(
                "state.audit_log",
                &format!(
                    "SELECT * FROM crm_audit_log WHERE object = ? AND record_id = ? ORDER BY occurred_at, id LIMIT {limit}"
                ),
                &[Arg::text(object), Arg::text(record_id)],
            )
            .await?;
        decode(rows.iter().map(|r| self.audit_from(r)).collect())
    }

    // ----- review queue -----

    /// Queues a record for review.
    ///
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// at rest (see [`pii`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_review(
        &self,
        conn: Option<&ConnectionId>,
        object: &str,
        record_id: &str,
        reason: ReviewReason,
        details: &serde_json::Value,
    ) -> Result<ReviewId> {
        let id = ReviewId::random();
        let details = pii::seal_json(
            &self.key,
            &self.pii,
            pii::REVIEW_QUEUE,
            id.as_str(),
            details,
        )?;
        self.ops()
            .exec(
                "state.add_review",
                "INSERT INTO crm_review_queue (id, connection_id, object, record_id, reason, details, \
                 status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    Arg::text(id.as_str()),
                    Arg::opt_text(conn.map(|c| c.as_str().to_owned())),
                    Arg::text(object),
                    Arg::text(record_id),
                    Arg::text(reason.as_str()),
                    Arg::json_text(&details),
                    Arg::text(ReviewStatus::Open.as_str()),
                    Arg::time(Utc::now()),
                ],
            )
            .await?;
        Ok(id)
    }

    /// Open review items, oldest first.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn open_reviews(&self, limit: u32) -> Result<Vec<ReviewItem>> {
        let rows = self
            .ops()
            .fetch(
                "state.open_reviews",
                &format!("SELECT * FROM crm_review_queue WHERE status = ? ORDER BY created_at, id LIMIT {limit}"),
                &[Arg::text(ReviewStatus::Open.as_str())],
            )
            .await?;
        decode(rows.iter().map(|r| self.review_from(r)).collect())
    }

    /// One review item by id, whatever its status.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn review(&self, id: &ReviewId) -> Result<Option<ReviewItem>> {
        let rows = self
            .ops()
            .fetch(
                "state.review",
                "SELECT * FROM crm_review_queue WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        rows.first()
            .map(|r| self.review_from(r))
            .transpose()
            .map_err(Error::from)
    }

    /// Closes a review item with a decision. Returns false if it was not open.
    ///
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// at rest (see [`pii`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn resolve_review(
        &self,
        id: &ReviewId,
        status: ReviewStatus,
        resolution: &serde_json::Value,
    ) -> Result<bool> {
        let resolution = pii::seal_json(
            &self.key,
            &self.pii,
            pii::REVIEW_QUEUE,
            id.as_str(),
            resolution,
        )?;
        let n = self
            .ops()
            .exec(
                "state.resolve_review",
                "UPDATE crm_review_queue SET status = ?, resolution = ?, resolved_at = ? WHERE id = ? AND status = ?",
                &[
                    Arg::text(status.as_str()),
                    Arg::json_text(&resolution),
                    Arg::time(Utc::now()),
                    Arg::text(id.as_str()),
                    Arg::text(ReviewStatus::Open.as_str()),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    // ----- dead letters -----

    /// Keeps a record that failed `stage` (attempts = 1).
    ///
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// at rest (see [`pii`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_dead_letter(
        &self,
        conn: Option<&ConnectionId>,
        object: &str,
        record: &serde_json::Value,
        stage: &str,
        error: &str,
    ) -> Result<DeadLetterId> {
        self.ops()
            .add_dead_letter(conn, object, record, stage, error)
            .await
    }

    /// Dead letters of a connection with fewer than `max_attempts` attempts
    /// (the ones a retry job should try again), oldest first.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn dead_letters(
        &self,
        conn: &ConnectionId,
        max_attempts: i64,
        limit: u32,
    ) -> Result<Vec<DeadLetter>> {
        let rows = self
            .ops()
            .fetch(
                "state.dead_letters",
                &format!(
                    "SELECT * FROM crm_dead_letters WHERE connection_id = ? AND attempts < ? \
                     ORDER BY first_failed_at, id LIMIT {limit}"
                ),
                &[Arg::text(conn.as_str()), Arg::int(max_attempts)],
            )
            .await?;
        decode(rows.iter().map(|r| self.dead_letter_from(r)).collect())
    }

    /// Records another failed attempt of a dead letter. With
    /// [PII fields](StateStore::with_pii_fields) set, values of the stored
    /// record quoted in `error` are masked.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    pub async fn dead_letter_failed_again(&self, id: &DeadLetterId, error: &str) -> Result<()> {
        let masked;
        let error = if self.pii.is_empty() {
            error
        } else {
            let record = self
                .dead_letter(id)
                .await?
                .map(|d| d.record)
                .unwrap_or_default();
            masked = self.pii.mask_json_values_in(&record, error);
            masked.as_str()
        };
        let n = self
            .ops()
            .exec(
                "state.dead_letter_failed_again",
                "UPDATE crm_dead_letters SET attempts = attempts + 1, error = ?, last_failed_at = ? WHERE id = ?",
                &[Arg::text(error), Arg::time(Utc::now()), Arg::text(id.as_str())],
            )
            .await?;
        not_found_if_zero(n, "dead letter", id.as_str())
    }

    /// Removes a dead letter (after a successful retry).
    ///
    /// # Errors
    /// Database errors.
    pub async fn remove_dead_letter(&self, id: &DeadLetterId) -> Result<bool> {
        let n = self
            .ops()
            .exec(
                "state.remove_dead_letter",
                "DELETE FROM crm_dead_letters WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        Ok(n > 0)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn not_found_if_zero(n: u64, what: &str, id: &str) -> Result<()> {
    if n == 0 {
        Err(Error::new(
            crm_core::ErrorKind::NotFound,
            format!("no {what} with id {id}"),
        ))
    } else {
        Ok(())
    }
}

/// Writes that land together or not at all: typically a page's record
/// states, its dead letters and its checkpoint.
///
/// Dropping it without [`StateTx::commit`] rolls everything back.
pub struct StateTx<'s> {
    tx: Tx,
    store: &'s StateStore,
}

impl fmt::Debug for StateTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateTx").finish_non_exhaustive()
    }
}

impl StateTx<'_> {
    fn ops(&mut self) -> Ops<'_, '_> {
        Ops {
            dialect: self.store.pool.kind(),
            redactor: &self.store.redactor,
            key: &self.store.key,
            pii: &self.store.pii,
            e: Exec::Tx(&mut self.tx),
        }
    }

    /// Stages a checkpoint.
    ///
    /// # Errors
    /// Database errors.
    pub async fn save_checkpoint(
        &mut self,
        conn: &ConnectionId,
        object: &str,
        cursor: &Cursor,
    ) -> Result<()> {
        self.ops().save_checkpoint(conn, object, cursor).await
    }

    /// Stages a record's sync state.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upsert_record_state(&mut self, state: &RecordSyncState) -> Result<()> {
        let sealed = self.store.seal_snapshot(state)?;
        self.ops().upsert_record_state(state, sealed).await
    }

    /// Stages a dead letter (sealed as [`StateStore::add_dead_letter`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn add_dead_letter(
        &mut self,
        conn: Option<&ConnectionId>,
        object: &str,
        record: &serde_json::Value,
        stage: &str,
        error: &str,
    ) -> Result<DeadLetterId> {
        self.ops()
            .add_dead_letter(conn, object, record, stage, error)
            .await
    }

    /// Stages an audit entry (sealed as [`StateStore::audit`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit(&mut self, entry: &NewAuditEntry) -> Result<AuditId> {
        self.ops().audit(entry).await
    }

    /// Stages run counters.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_run_progress(
        &mut self,
        run: &SyncRunId,
        processed: i64,
        success: i64,
        failed: i64,
    ) -> Result<()> {
        self.ops()
            .run_progress(run, processed, success, failed)
            .await
    }

    /// Makes every staged write visible at once.
    ///
    /// # Errors
    /// Database errors (then nothing was written).
    ///
    /// # Cancel safety
    /// If the future is dropped before the database confirms, the outcome
    /// is whatever the database decided; the checkpoint and the writes are
    /// still all-or-nothing.
    pub async fn commit(self) -> Result<()> {
        let redactor = &self.store.redactor;
        self.tx
            .commit()
            .await
            .map_err(|e| e.into_error("state.commit", redactor))
    }

    /// Discards every staged write.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rollback(self) -> Result<()> {
        let redactor = &self.store.redactor;
        self.tx
            .rollback()
            .await
            .map_err(|e| e.into_error("state.rollback", redactor))
    }
}
