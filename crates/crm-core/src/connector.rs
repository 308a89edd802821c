//! The traits every connector implements: [`Connector`], [`Source`], [`Sink`].
//!
//! A source yields a `Stream` of [`Page`]s; each page carries the changes it
//! read and the [`Cursor`] *after* that page. The orchestrator stores the
//! page and only then commits the cursor, so a crash between the two re-reads
//! the page (and the idempotent upsert of the sink absorbs the repeat) rather
//! than losing it.
//!
//! A sink writes [`WriteBatch`]es and answers one [`WriteOutcome`] per input
//! record, in input order. `Err` from [`Sink::write`] means the whole call
//! failed (auth, transport after retries); per-record problems are
//! [`WriteOutcome::Rejected`] entries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{Record, RecordId};
use crate::schema::ObjectSchema;

/// Where a source left off: opaque to callers, serialisable so the state
/// store can keep it.
///
/// Each connector decides what goes inside (a `(SystemModstamp, Id)` pair, a
/// paging token, row digests) and documents it; callers only store it and hand
/// it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(serde_json::Value);

impl Cursor {
    /// Wraps connector-defined JSON.
    pub fn new(inner: serde_json::Value) -> Self {
        Cursor(inner)
    }

    /// Serialises any connector-defined state into a cursor.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] if the state cannot be serialised.
    pub fn from_state<T: Serialize>(state: &T) -> Result<Self> {
        serde_json::to_value(state)
            .map(Cursor)
            .map_err(|e| Error::invalid_input(format!("cursor state cannot be serialised: {e}")))
    }

    /// Reads the connector-defined state back.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] if the cursor was made by another
    /// connector or another version of this one.
    pub fn to_state<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.0.clone())
            .map_err(|e| Error::invalid_input(format!("cursor is not understood: {e}")))
    }

    /// The raw JSON.
    pub fn as_json(&self) -> &serde_json::Value {
        &self.0
    }
}

/// One change read from a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The record was created or updated; here is its current state.
    Upsert(Record),
    /// The record was deleted (or archived) at the source.
    Delete {
        /// The id of the deleted record.
        id: RecordId,
        /// When it was deleted, if the source says.
        at: Option<DateTime<Utc>>,
    },
}

impl Change {
    /// The id of the record the change is about, if known.
    pub fn id(&self) -> Option<&RecordId> {
        match self {
            Change::Upsert(r) => r.id.as_ref(),
            Change::Delete { id, .. } => Some(id),
        }
    }
}

/// A page of changes and the cursor after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The changes, in source order.
    pub changes: Vec<Change>,
    /// Where the next read starts once this page is stored.
    pub cursor: Cursor,
}

/// What to read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReadRequest {
    /// The object (`Contact`, `contacts`, a sheet, a query name).
    pub object: String,
    /// The fields to read; empty means every field.
    pub fields: Vec<String>,
    /// Read changes after this cursor; `None` reads everything (a full read).
    pub since: Option<Cursor>,
    /// Preferred records per page; the connector caps it at the provider's limit.
    pub page_size: Option<usize>,
}

impl ReadRequest {
    /// A full read of every field of `object`.
    pub fn full(object: impl Into<String>) -> Self {
        ReadRequest {
            object: object.into(),
            fields: Vec::new(),
            since: None,
            page_size: None,
        }
    }

    /// An incremental read of `object` after `cursor`.
    pub fn since(object: impl Into<String>, cursor: Cursor) -> Self {
        ReadRequest {
            since: Some(cursor),
            ..ReadRequest::full(object)
        }
    }

    /// Restricts the fields read.
    #[must_use]
    pub fn fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the preferred page size.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n);
        self
    }
}

/// What a write does with each record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOp {
    /// Create or update, matched on `key` (an external id). Safe to retry.
    Upsert {
        /// The field that identifies a record on both sides (e.g. `email`, `crm_id`).
        key: String,
    },
    /// Create new records. Not safe to retry unless the provider deduplicates.
    Create,
    /// Update records by their [`Record::id`].
    Update,
    /// Delete records by their [`Record::id`].
    Delete,
}

/// A batch of records to write to one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteBatch {
    /// What to do with each record.
    pub op: WriteOp,
    /// The records, in order; outcomes come back in the same order.
    pub records: Vec<Record>,
}

impl WriteBatch {
    /// An upsert batch keyed by `key`.
    pub fn upsert(key: impl Into<String>, records: Vec<Record>) -> Self {
        WriteBatch {
            op: WriteOp::Upsert { key: key.into() },
            records,
        }
    }

    /// A batch of `op`.
    pub fn new(op: WriteOp, records: Vec<Record>) -> Self {
        WriteBatch { op, records }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What happened to one record of a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum WriteOutcome {
    /// A new record was created with this id.
    Created(RecordId),
    /// An existing record was changed.
    Updated(RecordId),
    /// The record already had these values; nothing was written.
    Unchanged(RecordId),
    /// The record was deleted.
    Deleted(RecordId),
    /// The record was not written; `index` is its position in the batch.
    /// A retryable `error` (see [`Error::is_retryable`]) may succeed later.
    Rejected {
        /// Position in the batch.
        index: usize,
        /// Why, naming the field where the provider says.
        error: Error,
    },
}

impl WriteOutcome {
    /// The id of the written record, unless it was rejected.
    pub fn id(&self) -> Option<&RecordId> {
        match self {
            WriteOutcome::Created(id)
            | WriteOutcome::Updated(id)
            | WriteOutcome::Unchanged(id)
            | WriteOutcome::Deleted(id) => Some(id),
            WriteOutcome::Rejected { .. } => None,
        }
    }

    /// True unless the record was rejected.
    pub fn is_ok(&self) -> bool {
        !matches!(self, WriteOutcome::Rejected { .. })
    }

    /// A stable name: created, updated, unchanged, deleted, rejected.
    pub fn as_str(&self) -> &'static str {
        match self {
            WriteOutcome::Created(_) => "created",
            WriteOutcome::Updated(_) => "updated",
            WriteOutcome::Unchanged(_) => "unchanged",
            WriteOutcome::Deleted(_) => "deleted",
            WriteOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// What a connector can do, so callers (and the behaviour suite) pick what to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Reads changes after a cursor.
    pub incremental: bool,
    /// Reports deletes as [`Change::Delete`].
    pub deletes: bool,
    /// Writes records (implements [`Sink`]).
    pub write: bool,
    /// Upserts by an external id, so retries never duplicate.
    pub upsert: bool,
    /// Has a bulk path for large reads or writes.
    pub bulk: bool,
    /// Pushes changes by webhook.
    pub webhooks: bool,
    /// Describes objects with custom fields.
    pub describe: bool,
}

impl Capabilities {
    /// No capabilities; switch on what applies.
    pub fn none() -> Self {
        Capabilities::default()
    }

    /// Sets [`Capabilities::incremental`].
    #[must_use]
    pub fn incremental(mut self) -> Self {
        self.incremental = true;
        self
    }

    /// Sets [`Capabilities::deletes`].
    #[must_use]
    pub fn deletes(mut self) -> Self {
        self.deletes = true;
        self
    }

    /// Sets [`Capabilities::write`].
    #[must_use]
    pub fn write(mut self) -> Self {
        self.write = true;
        self
    }

    /// Sets [`Capabilities::upsert`] (and [`Capabilities::write`]).
    #[must_use]
    pub fn upsert(mut self) -> Self {
        self.upsert = true;
        self.write = true;
        self
    }

    /// Sets [`Capabilities::bulk`].
    #[must_use]
    pub fn bulk(mut self) -> Self {
        self.bulk = true;
        self
    }

    /// Sets [`Capabilities::webhooks`].
    #[must_use]
    pub fn webhooks(mut self) -> Self {
        self.webhooks = true;
        self
    }

    /// Sets [`Capabilities::describe`].
    #[must_use]
    pub fn describe(mut self) -> Self {
        self.describe = true;
        self
    }
}

/// What every connector is: a kind, capabilities, a connection test and describe.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector's kind: `"salesforce"`, `"hubspot"`, `"postgres"`, ...
    fn kind(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Tests the connection and credentials.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Auth`] for bad credentials, [`crate::ErrorKind::Transient`]
    /// when the service cannot be reached.
    async fn check(&self) -> Result<()>;

    /// Describes one object, custom fields included.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] for an unknown object.
    async fn describe(&self, object: &str) -> Result<ObjectSchema>;
}

/// A connector that records can be read from.
pub trait Source: Connector {
    /// Reads pages of changes. The stream ends after the last page; an `Err`
    /// item ends it early (the pages before it are good and their cursors valid).
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>>;
}

/// A connector that records can be written to.
#[async_trait]
pub trait Sink: Connector {
    /// The most records one [`Sink::write`] call takes for `object`.
    fn max_batch(&self, object: &str) -> usize;

    /// Writes a batch, answering one outcome per record in input order.
    ///
    /// # Errors
    /// Only when the whole call failed (auth, transport after retries).
    ///
    /// # Cancel safety
    /// Dropping the future may leave part of the batch written. Upserts keyed
    /// by an external id make a repeat of the same batch safe.
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>>;
}
