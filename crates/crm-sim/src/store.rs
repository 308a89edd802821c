//! [`ObjectStore`]: the in-memory, thread-safe record store behind a simulator.
//!
//! Records are kept per object type (`contacts`, `Account`, `deals`) as JSON
//! field maps with an id from the provider's [`IdGenerator`], created and
//! modified times from the [`SimClock`], and a soft-delete time. Every type
//! keeps an ordered change index on `(changed_at, id)`, where `changed_at` is
//! the deletion time of a deleted record and its modification time otherwise,
//! so change feeds page with a stable order and never lose or repeat records
//! that share one timestamp.
//!
//! ```
//! use crm_sim::store::{ChangeQuery, ObjectStore, SequentialIds};
//! use serde_json::json;
//!
//! let store = ObjectStore::new(SequentialIds::new("c-", 4));
//! let a = store.create("contacts", json!({"email": "ada@example.com"}).as_object().cloned().unwrap_or_default());
//! assert_eq!(a.id.as_str(), "c-0001");
//! let page = store.changes("contacts", &ChangeQuery::new().limit(10));
//! assert_eq!(page.records.len(), 1);
//! assert!(!page.has_more);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use crm_core::RecordId;
use serde::{Deserialize, Serialize};

use crate::clock::SimClock;

/// The fields of a stored record: JSON, as the wire formats carry them.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// Makes ids for new records, in the provider's own format.
///
/// `seq` counts records created by the store, from 1, across all types.
/// Closures `Fn(&str, u64) -> RecordId` implement it.
pub trait IdGenerator: Send + Sync + 'static {
    /// The id of the `seq`-th record created, of type `object`.
    fn next_id(&self, object: &str, seq: u64) -> RecordId;
}

impl<F> IdGenerator for F
where
    F: Fn(&str, u64) -> RecordId + Send + Sync + 'static,
{
    fn next_id(&self, object: &str, seq: u64) -> RecordId {
        self(object, seq)
    }
}

/// Ids `prefix` + the sequence number zero-padded to `width` digits, so that
/// ids sort in creation order as text.
#[derive(Clone, Debug)]
pub struct SequentialIds {
    prefix: String,
    width: usize,
}

impl SequentialIds {
    /// Ids like `c-0001` for `SequentialIds::new("c-", 4)`.
    pub fn new(prefix: impl Into<String>, width: usize) -> Self {
        SequentialIds {
            prefix: prefix.into(),
            width,
        }
    }
}

impl Default for SequentialIds {
    fn default() -> Self {
        SequentialIds::new("", 10)
    }
}

impl IdGenerator for Arc<dyn IdGenerator> {
    fn next_id(&self, object: &str, seq: u64) -> RecordId {
        (**self).next_id(object, seq)
    }
}

impl IdGenerator for SequentialIds {
    fn next_id(&self, _object: &str, seq: u64) -> RecordId {
        RecordId::new(format!(
            "{}{:0width$}",
            self.prefix,
            seq,
            width = self.width
        ))
    }
}

/// One stored record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The object type.
    pub object: String,
    /// The id the store gave it.
    pub id: RecordId,
    /// The fields.
    pub fields: Fields,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its fields last changed.
    pub modified_at: DateTime<Utc>,
    /// When it was (soft) deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Starts at 1 and grows by one with every change (update, delete, restore).
    pub version: u64,
}

impl StoredRecord {
    /// True once soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The time of the last change: the deletion time of a deleted record,
    /// else its modification time.
    pub fn changed_at(&self) -> DateTime<Utc> {
        self.deleted_at.unwrap_or(self.modified_at)
    }

    /// The record's position in the change order.
    pub fn change_key(&self) -> ChangeKey {
        ChangeKey {
            at: self.changed_at(),
            id: self.id.clone(),
        }
    }

    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.fields.get(name)
    }

    /// A field's value if it is a string.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(serde_json::Value::as_str)
    }
}

/// A position in a change feed: `(changed_at, id)`, ordered by time then id.
///
/// Paging "after this key" is exact even when thousands of records share one
/// timestamp, which a bare timestamp cursor is not.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChangeKey {
    /// The change time.
    pub at: DateTime<Utc>,
    /// The record id, breaking ties.
    pub id: RecordId,
}

impl ChangeKey {
    /// An opaque, URL-safe token for this key (lowercase hex), for use as a
    /// page token on the wire.
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.at.timestamp_millis(), self.id);
        let mut out = String::with_capacity(raw.len() * 2);
        for b in raw.bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Reads a token made by [`ChangeKey::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<ChangeKey> {
        let bytes = token.as_bytes();
        if !bytes.len().is_multiple_of(2) {
            return None;
        }
        let mut raw = Vec::with_capacity(bytes.len() / 2);
        for pair in bytes.chunks(2) {
            let hi = hex_value(pair[0])?;
            let lo = hex_value(pair[1])?;
            raw.push((hi << 4) | lo);
        }
        let raw = String::from_utf8(raw).ok()?;
        let (millis, id) = raw.split_once('|')?;
        let at = DateTime::<Utc>::from_timestamp_millis(millis.parse().ok()?)?;
        Some(ChangeKey {
            at,
            id: RecordId::new(id),
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Which records a query sees with respect to soft deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deleted {
    /// Live records only.
    #[default]
    Exclude,
    /// Live and deleted records.
    Include,
    /// Deleted records only.
    Only,
}

impl Deleted {
    fn admits(self, rec: &StoredRecord) -> bool {
        match self {
            Deleted::Exclude => !rec.is_deleted(),
            Deleted::Include => true,
            Deleted::Only => rec.is_deleted(),
        }
    }
}

/// A query over the change order of one object type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeQuery {
    /// Only records strictly after this key.
    pub after: Option<ChangeKey>,
    /// Only records changed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records changed strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Soft-delete filter.
    pub deleted: Deleted,
    /// The most records returned.
    pub limit: usize,
}

impl Default for ChangeQuery {
    fn default() -> Self {
        ChangeQuery::new()
    }
}

impl ChangeQuery {
    /// Every live record, unlimited.
    pub fn new() -> Self {
        ChangeQuery {
            after: None,
            since: None,
            until: None,
            deleted: Deleted::Exclude,
            limit: usize::MAX,
        }
    }

    /// Starts strictly after `key`.
    #[must_use]
    pub fn after(mut self, key: Option<ChangeKey>) -> Self {
        self.after = key;
        self
    }

    /// Only records changed at or after `at`.
    #[must_use]
    pub fn since(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.since = at;
        self
    }

    /// Only records changed strictly before `at`.
    #[must_use]
    pub fn until(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.until = at;
        self
    }

    /// Sets the soft-delete filter.
    #[must_use]
    pub fn deleted(mut self, deleted: Deleted) -> Self {
        self.deleted = deleted;
        self
    }

    /// Caps the number of records returned.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

/// One page of a change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePage {
    /// The records, in `(changed_at, id)` order.
    pub records: Vec<StoredRecord>,
    /// True if more records match after the last one returned.
    pub has_more: bool,
    /// The key of the last record returned (the resume point), or the query's
    /// `after` key when the page is empty.
    pub last: Option<ChangeKey>,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteResult {
    /// A new record.
    Created(StoredRecord),
    /// An existing record changed.
    Updated(StoredRecord),
    /// An existing record already had these values; nothing changed.
    Unchanged(StoredRecord),
}

impl WriteResult {
    /// The record after the write.
    pub fn record(&self) -> &StoredRecord {
        match self {
            WriteResult::Created(r) | WriteResult::Updated(r) | WriteResult::Unchanged(r) => r,
        }
    }

    /// The record after the write, owned.
    pub fn into_record(self) -> StoredRecord {
        match self {
            WriteResult::Created(r) | WriteResult::Updated(r) | WriteResult::Unchanged(r) => r,
        }
    }

    /// `created`, `updated` or `unchanged`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WriteResult::Created(_) => "created",
            WriteResult::Updated(_) => "updated",
            WriteResult::Unchanged(_) => "unchanged",
        }
    }
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No live record of that type has that id.
    #[error("{object} {id} not found")]
    NotFound {
        /// The object type.
        object: String,
        /// The id asked for.
        id: RecordId,
    },
    /// A record with that id already exists.
    #[error("{object} {id} already exists")]
    AlreadyExists {
        /// The object type.
        object: String,
        /// The id.
        id: RecordId,
    },
    /// An upsert's key field is missing, null, or not a string or number.
    #[error("upsert key field {field} is missing or not a string or number")]
    MissingKey {
        /// The key field.
        field: String,
    },
    /// Initial data was not in a form the store loads.
    #[error("data not loadable: {0}")]
    InvalidData(String),
}

#[derive(Default)]
struct Table {
    records: HashMap<RecordId, StoredRecord>,
    order: BTreeSet<ChangeKey>,
    /// Unique indexes of live records, per key field, built on first use.
    indexes: HashMap<String, HashMap<String, RecordId>>,
}

impl Table {
    fn index_add(&mut self, rec: &StoredRecord) {
        if rec.is_deleted() {
            return;
        }
        for (field, index) in &mut self.indexes {
            if let Some(k) = rec.fields.get(field).and_then(key_string) {
                index.insert(k, rec.id.clone());
            }
        }
    }

    fn index_remove(&mut self, rec: &StoredRecord) {
        for (field, index) in &mut self.indexes {
            if let Some(k) = rec.fields.get(field).and_then(key_string)
                && index.get(&k) == Some(&rec.id)
            {
                index.remove(&k);
            }
        }
    }

    fn ensure_index(&mut self, field: &str) {
        if self.indexes.contains_key(field) {
            return;
        }
        let mut index = HashMap::new();
        for rec in self.records.values().filter(|r| !r.is_deleted()) {
            if let Some(k) = rec.fields.get(field).and_then(key_string) {
                index.insert(k, rec.id.clone());
            }
        }
        self.indexes.insert(field.to_owned(), index);
    }

    /// Replaces a record, keeping the change order and indexes in step.
    fn put(&mut self, rec: StoredRecord) {
        if let Some(old) = self.records.remove(&rec.id) {
            self.order.remove(&old.change_key());
            self.index_remove(&old);
        }
        self.order.insert(rec.change_key());
        self.index_add(&rec);
        self.records.insert(rec.id.clone(), rec);
    }
}

fn key_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Default)]
struct Inner {
    tables: BTreeMap<String, Table>,
    seq: u64,
    last_stamp: Option<DateTime<Utc>>,
}

/// The in-memory store: cheap to clone (clones share the data), safe to use
/// from many handlers at once.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<RwLock<Inner>>,
    clock: SimClock,
    ids: Arc<dyn IdGenerator>,
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.read();
        let counts: BTreeMap<&str, usize> = inner
            .tables
            .iter()
            .map(|(k, t)| (k.as_str(), t.records.len()))
            .collect();
        f.debug_struct("ObjectStore")
            .field("records", &counts)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// An empty store with its own system clock.
    pub fn new(ids: impl IdGenerator) -> Self {
        ObjectStore::with_clock(ids, SimClock::system())
    }

    /// An empty store stamping records with `clock`.
    pub fn with_clock(ids: impl IdGenerator, clock: SimClock) -> Self {
        ObjectStore {
            inner: Arc::new(RwLock::new(Inner::default())),
            clock,
            ids: Arc::new(ids),
        }
    }

    /// The clock that stamps records.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// The time stamped on a change. A frozen clock gives exactly its time
    /// (so tests can make many records share one stamp); a running clock
    /// gives strictly increasing stamps (a millisecond past the previous one
    /// when writes come faster), so a change never lands at or before a
    /// position a reader already passed.
    fn stamp(&self, inner: &mut Inner) -> DateTime<Utc> {
        let now = self.clock.now();
        if self.clock.is_frozen() {
            return now;
        }
        let stamp = match inner.last_stamp {
            Some(last) if now <= last => last + chrono::TimeDelta::milliseconds(1),
            _ => now,
        };
        inner.last_stamp = Some(stamp);
        stamp
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every write below leaves the tables consistent before any call
        // that could panic, so a poisoned lock still guards valid data.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a record with a new id.
    pub fn create(&self, object: &str, fields: Fields) -> StoredRecord {
        let mut inner = self.write();
        let rec = self.new_record(&mut inner, object, fields);
        inner
            .tables
            .entry(object.to_owned())
            .or_default()
            .put(rec.clone());
        rec
    }

    fn new_record(&self, inner: &mut Inner, object: &str, fields: Fields) -> StoredRecord {
        let now = self.stamp(inner);
        let table = inner.tables.get(object);
        // Skip ids already taken (e.g. by records loaded with explicit ids).
        let id = loop {
            inner.seq += 1;
            let id = self.ids.next_id(object, inner.seq);
            if !table.is_some_and(|t| t.records.contains_key(&id)) {
                break id;
            }
        };
        StoredRecord {
            object: object.to_owned(),
            id,
            fields,
            created_at: now,
            modified_at: now,
            deleted_at: None,
            version: 1,
        }
    }

    /// Creates a record with a given id.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the id is taken (even by a deleted record).
    pub fn create_with_id(
        &self,
        object: &str,
        id: RecordId,
        fields: Fields,
    ) -> Result<StoredRecord, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let table = inner.tables.entry(object.to_owned()).or_default();
        if table.records.contains_key(&id) {
            return Err(StoreError::AlreadyExists {
                object: object.to_owned(),
                id,
            });
        }
        let rec = StoredRecord {
            object: object.to_owned(),
            id,
            fields,
            created_at: now,
            modified_at: now,
            deleted_at: None,
            version: 1,
        };
        table.put(rec.clone());
        Ok(rec)
    }

    /// A record by id, deleted or not.
    pub fn get(&self, object: &str, id: &RecordId) -> Option<StoredRecord> {
        self.read()
            .tables
            .get(object)
            .and_then(|t| t.records.get(id))
            .cloned()
    }

    /// A live record by id.
    pub fn get_live(&self, object: &str, id: &RecordId) -> Option<StoredRecord> {
        self.get(object, id).filter(|r| !r.is_deleted())
    }

    /// Merges `patch` into a live record's fields; a record whose fields
    /// already hold those values is [`WriteResult::Unchanged`] and keeps its
    /// modification time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no live record with that id.
    pub fn update(
        &self,
        object: &str,
        id: &RecordId,
        patch: Fields,
    ) -> Result<WriteResult, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let table = inner.tables.get_mut(object);
        let Some(table) = table else {
            return Err(not_found(object, id));
        };
        let Some(current) = table.records.get(id).filter(|r| !r.is_deleted()).cloned() else {
            return Err(not_found(object, id));
        };
        Ok(merge_into(table, current, patch, now))
    }

    /// Replaces a live record's fields entirely.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no live record with that id.
    pub fn replace(
        &self,
        object: &str,
        id: &RecordId,
        fields: Fields,
    ) -> Result<WriteResult, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let Some(table) = inner.tables.get_mut(object) else {
            return Err(not_found(object, id));
        };
        let Some(mut rec) = table.records.get(id).filter(|r| !r.is_deleted()).cloned() else {
            return Err(not_found(object, id));
        };
        if rec.fields == fields {
            return Ok(WriteResult::Unchanged(rec));
        }
        rec.fields = fields;
        rec.modified_at = now;
        rec.version += 1;
        table.put(rec.clone());
        Ok(WriteResult::Updated(rec))
    }

    /// Creates or updates the live record whose `key_field` equals the one in
    /// `fields` (an upsert by external id). Updating merges the fields; a
    /// record already holding them is [`WriteResult::Unchanged`].
    ///
    /// # Errors
    /// [`StoreError::MissingKey`] if `fields` has no usable value for `key_field`.
    pub fn upsert_by(
        &self,
        object: &str,
        key_field: &str,
        fields: Fields,
    ) -> Result<WriteResult, StoreError> {
        let Some(key) = fields.get(key_field).and_then(key_string) else {
            return Err(StoreError::MissingKey {
                field: key_field.to_owned(),
            });
        };
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let existing = {
            let table = inner.tables.entry(object.to_owned()).or_default();
            table.ensure_index(key_field);
            table
                .indexes
                .get(key_field)
                .and_then(|ix| ix.get(&key))
                .and_then(|id| table.records.get(id))
                .cloned()
        };
        match existing {
            Some(current) => {
                let table = inner.tables.entry(object.to_owned()).or_default();
                Ok(merge_into(table, current, fields, now))
            }
            None => {
                let rec = self.new_record(&mut inner, object, fields);
                inner
                    .tables
                    .entry(object.to_owned())
                    .or_default()
                    .put(rec.clone());
                Ok(WriteResult::Created(rec))
            }
        }
    }

    /// The live records whose `field` equals `value`, in change order.
    pub fn find_by(
        &self,
        object: &str,
        field: &str,
        value: &serde_json::Value,
    ) -> Vec<StoredRecord> {
        let inner = self.read();
        let Some(table) = inner.tables.get(object) else {
            return Vec::new();
        };
        table
            .order
            .iter()
            .filter_map(|k| table.records.get(&k.id))
            .filter(|r| !r.is_deleted() && r.fields.get(field) == Some(value))
            .cloned()
            .collect()
    }

    /// Soft-deletes a live record, stamping its deletion time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no live record with that id.
    pub fn delete(&self, object: &str, id: &RecordId) -> Result<StoredRecord, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let Some(table) = inner.tables.get_mut(object) else {
            return Err(not_found(object, id));
        };
        let Some(mut rec) = table.records.get(id).filter(|r| !r.is_deleted()).cloned() else {
            return Err(not_found(object, id));
        };
        rec.deleted_at = Some(now.max(rec.modified_at));
        rec.version += 1;
        table.put(rec.clone());
        Ok(rec)
    }

    /// Brings a soft-deleted record back (its modification time becomes now).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no deleted record with that id.
    pub fn restore(&self, object: &str, id: &RecordId) -> Result<StoredRecord, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let Some(table) = inner.tables.get_mut(object) else {
            return Err(not_found(object, id));
        };
        let Some(mut rec) = table.records.get(id).filter(|r| r.is_deleted()).cloned() else {
            return Err(not_found(object, id));
        };
        rec.deleted_at = None;
        rec.modified_at = now;
        rec.version += 1;
        table.put(rec.clone());
        Ok(rec)
    }

    /// Removes a record for good (deleted or not); it no longer shows in
    /// any feed. Returns it if it existed.
    pub fn purge(&self, object: &str, id: &RecordId) -> Option<StoredRecord> {
        let mut inner = self.write();
        let table = inner.tables.get_mut(object)?;
        let rec = table.records.remove(id)?;
        table.order.remove(&rec.change_key());
        table.index_remove(&rec);
        Some(rec)
    }

    /// Bumps a live record's modification time without changing its fields.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no live record with that id.
    pub fn touch(&self, object: &str, id: &RecordId) -> Result<StoredRecord, StoreError> {
        let mut inner = self.write();
        let now = self.stamp(&mut inner);
        let Some(table) = inner.tables.get_mut(object) else {
            return Err(not_found(object, id));
        };
        let Some(mut rec) = table.records.get(id).filter(|r| !r.is_deleted()).cloned() else {
            return Err(not_found(object, id));
        };
        rec.modified_at = now;
        rec.version += 1;
        table.put(rec.clone());
        Ok(rec)
    }

    /// One page of the change feed of `object`, in `(changed_at, id)` order.
    ///
    /// `has_more` is exact (the store looks one record ahead), so a client
    /// that stops when it is false makes the minimum number of calls.
    pub fn changes(&self, object: &str, query: &ChangeQuery) -> ChangePage {
        let inner = self.read();
        let Some(table) = inner.tables.get(object) else {
            return ChangePage {
                records: Vec::new(),
                has_more: false,
                last: query.after.clone(),
            };
        };
        let lower = match (&query.after, query.since) {
            (Some(after), Some(since)) if since > after.at => {
                std::ops::Bound::Included(ChangeKey {
                    at: since,
                    id: RecordId::new(""),
                })
            }
            (Some(after), _) => std::ops::Bound::Excluded(after.clone()),
            (None, Some(since)) => std::ops::Bound::Included(ChangeKey {
                at: since,
                id: RecordId::new(""),
            }),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut records = Vec::new();
        let mut has_more = false;
        for key in table.order.range((lower, std::ops::Bound::Unbounded)) {
            if query.until.is_some_and(|until| key.at >= until) {
                break;
            }
            let Some(rec) = table.records.get(&key.id) else {
                continue;
            };
            if !query.deleted.admits(rec) {
                continue;
            }
            if records.len() >= query.limit {
                has_more = true;
                break;
            }
            records.push(rec.clone());
        }
        let last = records
            .last()
            .map(StoredRecord::change_key)
            .or_else(|| query.after.clone());
        ChangePage {
            records,
            has_more,
            last,
        }
    }

    /// Every record of `object` passing `deleted`, in change order.
    pub fn all(&self, object: &str, deleted: Deleted) -> Vec<StoredRecord> {
        self.changes(object, &ChangeQuery::new().deleted(deleted))
            .records
    }

    /// Number of records of `object` passing `deleted`.
    pub fn count(&self, object: &str, deleted: Deleted) -> usize {
        let inner = self.read();
        inner.tables.get(object).map_or(0, |t| {
            t.records.values().filter(|r| deleted.admits(r)).count()
        })
    }

    /// The object types that hold records.
    pub fn objects(&self) -> Vec<String> {
        self.read().tables.keys().cloned().collect()
    }

    /// Removes every record of every type (ids keep counting up).
    pub fn clear(&self) {
        self.write().tables.clear();
    }

    /// Removes every record of one type.
    pub fn clear_object(&self, object: &str) {
        self.write().tables.remove(object);
    }

    /// Loads initial data: a JSON object mapping each object type to an array
    /// of field maps, e.g. `{"contacts": [{"email": "a@example.com"}]}`. A
    /// record with a string `"id"` field keeps that id (the field is removed
    /// from its fields); others get new ids. Returns the number loaded.
    ///
    /// # Errors
    /// [`StoreError::InvalidData`] if the shape is wrong,
    /// [`StoreError::AlreadyExists`] if an explicit id is taken. Records
    /// before the failing one stay loaded.
    pub fn load_json(&self, data: &serde_json::Value) -> Result<usize, StoreError> {
        let Some(objects) = data.as_object() else {
            return Err(StoreError::InvalidData(
                "expected an object mapping object types to arrays of records".into(),
            ));
        };
        let mut loaded = 0;
        for (object, records) in objects {
            let Some(records) = records.as_array() else {
                return Err(StoreError::InvalidData(format!(
                    "{object}: expected an array of records"
                )));
            };
            for (i, rec) in records.iter().enumerate() {
                let Some(fields) = rec.as_object() else {
                    return Err(StoreError::InvalidData(format!(
                        "{object}[{i}]: expected an object of fields"
                    )));
                };
                let mut fields = fields.clone();
                match fields.remove("id") {
                    Some(serde_json::Value::String(id)) => {
                        self.create_with_id(object, RecordId::new(id), fields)?;
                    }
                    Some(other) => {
                        return Err(StoreError::InvalidData(format!(
                            "{object}[{i}]: id must be a string, found {other}"
                        )));
                    }
                    None => {
                        self.create(object, fields);
                    }
                }
                loaded += 1;
            }
        }
        Ok(loaded)
    }
}

impl ObjectStore {
    /// Loads records of `object` from CSV (see [`csv_records`]); an `id`
    /// column gives a record its id. Returns the number loaded.
    ///
    /// # Errors
    /// As [`csv_records`] and [`ObjectStore::load_json`].
    pub fn load_csv(&self, object: &str, text: &str) -> Result<usize, StoreError> {
        let records: Vec<serde_json::Value> = csv_records(text)?
            .into_iter()
            .map(serde_json::Value::Object)
            .collect();
        let mut data = serde_json::Map::new();
        data.insert(object.to_owned(), serde_json::Value::Array(records));
        self.load_json(&serde_json::Value::Object(data))
    }
}

/// Reads CSV text (RFC 4180: a header row, comma-separated cells,
/// optionally in double quotes with `""` for a quote, CRLF or LF line
/// ends) into one field map per row. Every value is a string; empty cells
/// are left out and blank lines skipped.
///
/// # Errors
/// [`StoreError::InvalidData`] for an unterminated quote, text after a
/// closing quote, or a row with more cells than the header.
pub fn csv_records(text: &str) -> Result<Vec<Fields>, StoreError> {
    let mut rows = parse_csv(text)?.into_iter();
    let Some(header) = rows.next() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (line, row) in rows.enumerate() {
        if row.len() == 1 && row[0].is_empty() {
            continue;
        }
        if row.len() > header.len() {
            return Err(StoreError::InvalidData(format!(
                "CSV row {} has {} cells, the header {}",
                line + 2,
                row.len(),
                header.len()
            )));
        }
        let fields: Fields = header
            .iter()
            .zip(row)
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(name, cell)| (name.clone(), serde_json::Value::String(cell)))
            .collect();
        out.push(fields);
    }
    Ok(out)
}

/// Splits RFC 4180 CSV into rows of cells.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, StoreError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_cell_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',' | '\r' | '\n')) {
                        return Err(StoreError::InvalidData(format!(
                            "CSV row {}: text after a closing quote",
                            rows.len() + 1
                        )));
                    }
                }
                other => cell.push(other),
            }
            continue;
        }
        match c {
            '"' if at_cell_start => {
                quoted = true;
                at_cell_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut cell));
                at_cell_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                at_cell_start = true;
            }
            other => {
                cell.push(other);
                at_cell_start = false;
            }
        }
    }
    if quoted {
        return Err(StoreError::InvalidData(
            "CSV ends inside a quoted cell".into(),
        ));
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    Ok(rows)
}

fn not_found(object: &str, id: &RecordId) -> StoreError {
    StoreError::NotFound {
        object: object.to_owned(),
        id: id.clone(),
    }
}

fn merge_into(
    table: &mut Table,
    mut rec: StoredRecord,
    patch: Fields,
    now: DateTime<Utc>,
) -> WriteResult {
    let changed = patch.iter().any(|(k, v)| rec.fields.get(k) != Some(v));
    if !changed {
        return WriteResult::Unchanged(rec);
    }
    for (k, v) in patch {
        rec.fields.insert(k, v);
    }
    rec.modified_at = now.max(rec.modified_at);
    rec.version += 1;
    table.put(rec.clone());
    WriteResult::Updated(rec)
}

/// Reads initial simulator data from a file: JSON (`.json`), CSV (`.csv`:
/// one object named after the file, one record per row) or YAML (anything
/// else), as `{"object": [{field: value, ...}, ...]}`. What `--data FILE`
/// of the standalone simulators takes.
///
/// # Errors
/// A message naming the file when it cannot be read or parsed.
pub fn load_data_file(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => {
            let object = path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
                format!("{}: cannot name an object after this file", path.display())
            })?;
            let records =
                csv_records(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
            let records: Vec<serde_json::Value> =
                records.into_iter().map(serde_json::Value::Object).collect();
            let mut data = serde_json::Map::new();
            data.insert(object.to_owned(), serde_json::Value::Array(records));
            Ok(serde_json::Value::Object(data))
        }
        Some("json") => {
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
        }
        _ => serde_yaml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn fields(v: serde_json::Value) -> Fields {
        v.as_object().cloned().unwrap_or_default()
    }

    fn store() -> ObjectStore {
        ObjectStore::new(SequentialIds::new("r", 5))
    }

    #[test]
    fn change_keys_round_trip_and_reject_junk() {
        let k = ChangeKey {
            at: Utc
                .timestamp_millis_opt(1_700_000_000_123)
                .single()
                .unwrap_or_default(),
            id: RecordId::new("003|x y"),
        };
        assert_eq!(ChangeKey::decode(&k.encode()), Some(k));
        assert_eq!(ChangeKey::decode("zz"), None);
        assert_eq!(ChangeKey::decode("abc"), None);
        assert_eq!(ChangeKey::decode("6162"), None);
    }

    #[test]
    fn shared_timestamps_page_without_loss_or_repeat() {
        let s = store();
        s.clock().freeze();
        for i in 0..25 {
            s.create("c", fields(json!({ "n": i })));
        }
        let mut seen = Vec::new();
        let mut after = None;
        let mut calls = 0;
        loop {
            calls += 1;
            let page = s.changes("c", &ChangeQuery::new().after(after.clone()).limit(10));
            seen.extend(page.records.iter().map(|r| r.id.clone()));
            after = page.last.clone();
            if !page.has_more {
                break;
            }
        }
        assert_eq!(calls, 3);
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(seen.len(), 25);
        assert_eq!(dedup.len(), 25);
    }

    #[test]
    fn exact_multiple_needs_no_empty_page() {
        let s = store();
        for i in 0..20 {
            s.create("c", fields(json!({ "n": i })));
        }
        let p1 = s.changes("c", &ChangeQuery::new().limit(10));
        assert!(p1.has_more);
        let p2 = s.changes("c", &ChangeQuery::new().after(p1.last).limit(10));
        assert!(!p2.has_more);
        assert_eq!(p2.records.len(), 10);
    }

    #[test]
    fn upserts_create_update_and_report_unchanged() {
        let s = store();
        let a = s
            .upsert_by("c", "email", fields(json!({"email": "a@x", "n": 1})))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.as_str(), "created");
        let again = s
            .upsert_by("c", "email", fields(json!({"email": "a@x", "n": 1})))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.as_str(), "unchanged");
        assert_eq!(again.record().modified_at, a.record().modified_at);
        let upd = s
            .upsert_by("c", "email", fields(json!({"email": "a@x", "n": 2})))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(upd.as_str(), "updated");
        assert_eq!(upd.record().id, a.record().id);
        assert_eq!(upd.record().version, 2);
        assert_eq!(
            s.upsert_by("c", "email", fields(json!({"n": 2}))),
            Err(StoreError::MissingKey {
                field: "email".into()
            })
        );
        assert_eq!(s.count("c", Deleted::Exclude), 1);
    }

    #[test]
    fn deleted_records_leave_the_key_index_and_list_as_tombstones() {
        let s = store();
        let a = s
            .upsert_by("c", "email", fields(json!({"email": "a@x"})))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_record();
        let before = s.changes("c", &ChangeQuery::new()).last;
        let gone = s.delete("c", &a.id).unwrap_or_else(|e| panic!("{e}"));
        assert!(gone.is_deleted());
        assert!(s.delete("c", &a.id).is_err());
        let tomb = s.changes(
            "c",
            &ChangeQuery::new().after(before).deleted(Deleted::Include),
        );
        assert_eq!(tomb.records.len(), 1);
        assert!(tomb.records[0].deleted_at.is_some());
        assert_eq!(s.count("c", Deleted::Exclude), 0);
        assert_eq!(s.count("c", Deleted::Only), 1);
        // Upserting the same key again makes a new record.
        let b = s
            .upsert_by("c", "email", fields(json!({"email": "a@x"})))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.as_str(), "created");
        assert_ne!(b.record().id, a.id);
        let restored = s.restore("c", &a.id).unwrap_or_else(|e| panic!("{e}"));
        assert!(!restored.is_deleted());
    }

    #[test]
    fn since_and_until_bound_the_feed() {
        let s = store();
        let t0 = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        s.clock().freeze_at(t0);
        s.create("c", Fields::new());
        s.clock().advance(chrono::Duration::seconds(10));
        let b = s.create("c", Fields::new());
        s.clock().advance(chrono::Duration::seconds(10));
        s.create("c", Fields::new());
        let q = ChangeQuery::new()
            .since(Some(t0 + chrono::Duration::seconds(5)))
            .until(Some(t0 + chrono::Duration::seconds(15)));
        let page = s.changes("c", &q);
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].id, b.id);
    }

    #[test]
    fn csv_loads_with_quotes_ids_and_empty_cells() {
        let s = ObjectStore::new(SequentialIds::new("r", 1));
        let csv = "id,name,note\r\nd-1,\"Big, Inc\",\"said \"\"hi\"\"\nthere\"\n,Small,\n";
        assert_eq!(s.load_csv("deals", csv), Ok(2));
        let big = s
            .get("deals", &RecordId::new("d-1"))
            .unwrap_or_else(|| panic!("d-1 loaded"));
        assert_eq!(big.text("name"), Some("Big, Inc"));
        assert_eq!(big.text("note"), Some("said \"hi\"\nthere"));
        let small = s.find_by("deals", "name", &json!("Small"));
        assert_eq!(small.len(), 1);
        assert!(small[0].field("note").is_none());
        assert!(s.load_csv("x", "a\n\"open").is_err());
        assert!(s.load_csv("x", "a\n\"x\"y").is_err());
        assert!(s.load_csv("x", "a\n1,2").is_err());
        assert_eq!(s.load_csv("x", ""), Ok(0));
    }

    #[test]
    fn load_json_keeps_explicit_ids_and_skips_them_for_new_ones() {
        let s = ObjectStore::new(SequentialIds::new("r", 1));
        let n = s
            .load_json(&json!({"c": [{"id": "r1", "a": 1}, {"a": 2}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 2);
        let ids: Vec<_> = s
            .all("c", Deleted::Exclude)
            .into_iter()
            .map(|r| r.id.into_inner())
            .collect();
        assert!(ids.contains(&"r1".to_owned()));
        assert!(ids.contains(&"r2".to_owned()));
        assert!(s.load_json(&json!([1])).is_err());
        assert!(s.load_json(&json!({"c": [{"id": 5}]})).is_err());
    }
}
