//! Bidirectional sync between two connectors through the per-record sync
//! state: a *platform* side (our database, a warehouse table, another CRM)
//! and a *CRM* side, joined by a [`Mapping`] written platform -> CRM.
//!
//! # One round
//! 1. Each side's changes since its own checkpoint are read.
//! 2. Each change is compared with the record's **snapshot**: the values
//!    both sides had at the last sync, kept (sealed) in the state store. A
//!    change whose mapped fields equal the snapshot is an echo of our own
//!    write, or touched only unmapped fields, and is skipped, so two
//!    systems never ping-pong.
//! 3. A record changed on one side is written to the other, field by field:
//!    only the mapped fields that differ from what the other side holds.
//! 4. A record changed on both sides is merged three ways against the
//!    snapshot with the [`ConflictConfig`]: a field changed on one side only
//!    takes that side's value; a field changed on both is decided by the
//!    policy (`newest_wins` by default, `platform_wins` / `crm_wins`, or
//!    `manual`, which sends it to the review queue and writes nothing for
//!    that field until [`BidiSync::resolve_conflict`] is called).
//! 5. Records new on one side are created on the other (an upsert, so a
//!    retried create never duplicates); records new on both sides with the
//!    same match key (e.g. email) are paired and merged.
//! 6. Deletes propagate when the other side did not change the record in
//!    the meantime; a delete against an edit goes to the review queue.
//! 7. Every write is recorded in the audit log (connection, object, record,
//!    fields with old and new values, the policy and reason of each
//!    decision, run id, time); then the record states and both checkpoints
//!    are committed in one transaction.
//!
//! # Crash safety
//! Checkpoints are committed after the writes and together with the record
//! states. A round cut short anywhere leaves the checkpoints where they
//! were: the next round reads the same changes again, finds our own writes
//! on the other side agreeing with them, and records the pairing without
//! writing twice. Creates are upserts (by a key field, or by an id derived
//! from the other side's id), so a repeated create lands on the same
//! record.
//!
//! # Memory
//! A round holds the changes of both sides since their checkpoints (not the
//! whole tables): run rounds often enough that a round's changes fit in
//! memory, which the scheduler's delta job does.
//!
//! ```no_run
//! # async fn run(
//! #     platform: &crm_sql::SqlConnector,
//! #     hubspot: &crm_hubspot::HubSpot,
//! #     store: &crm_sql::state::StateStore,
//! # ) -> crm_core::Result<()> {
//! use crm_core::conflict::{ConflictConfig, ConflictPolicy};
//! use crm_core::mapping::Mapping;
//! use crm_sync::bidi::{BidiConfig, BidiSync, CreateWith, SideConfig};
//!
//! let mapping = Mapping::from_yaml(r#"
//! - {source: email, target: email, direction: bidirectional}
//! - {source: first_name, target: firstname, direction: bidirectional}
//! "#)?;
//! let config = BidiConfig::new(
//!     "contacts",
//!     SideConfig::new("contacts", CreateWith::derived_id("id", "hs-")),
//!     SideConfig::new("contacts", CreateWith::upsert_key("email")),
//!     mapping,
//! )
//! .conflicts(ConflictConfig::new(ConflictPolicy::NewestWins))
//! .match_key("email");
//! let sync = BidiSync::open(platform, hubspot, store, "postgres<->hubspot", config).await?;
//! let report = sync.round().await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crm_core::conflict::{ConflictConfig, FieldDecision, Outcome, values_agree};
use crm_core::mapping::{Flow, Mapping};
use crm_core::{
    Change, Cursor, Error, ErrorKind, ReadRequest, Record, RecordId, Result, Sink, Source, Value,
    WriteBatch, WriteOp, WriteOutcome,
};
use crm_sql::state::{
    ConnectionId, NewAuditEntry, RecordSyncState, ReviewId, ReviewReason, ReviewStatus, RunStatus,
    StateStore, SyncDirection, SyncRunId, SyncType,
};
use futures_util::StreamExt;
use indexmap::IndexMap;
use serde_json::json;

/// A connector that reads and writes: what each side of a bidirectional
/// sync must be.
pub trait Endpoint: Source + Sink {}

impl<T: Source + Sink + ?Sized> Endpoint for T {}

/// How a record new on the other side is created on this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateWith {
    /// An upsert keyed by this field of the side's records (HubSpot's
    /// `idProperty` such as `email`, a Salesforce external id, a unique
    /// column); the sink answers with the record's id.
    UpsertKey(String),
    /// The new record's id is `prefix` + the other side's id, written into
    /// `field` (the table's primary key) with an upsert on it, so a
    /// repeated create lands on the same row.
    DerivedId {
        /// The id field (primary key column).
        field: String,
        /// Put before the other side's id.
        prefix: String,
    },
}

impl CreateWith {
    /// [`CreateWith::UpsertKey`].
    pub fn upsert_key(field: impl Into<String>) -> Self {
        CreateWith::UpsertKey(field.into())
    }

    /// [`CreateWith::DerivedId`].
    pub fn derived_id(field: impl Into<String>, prefix: impl Into<String>) -> Self {
        CreateWith::DerivedId {
            field: field.into(),
            prefix: prefix.into(),
        }
    }
}

/// One side of the sync: the object read and written there, and how new
/// records are created on it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SideConfig {
    /// The object (table, `contacts`, `Contact`).
    pub object: String,
    /// How records new on the other side are created here.
    pub create: CreateWith,
    /// Preferred page size for reads.
    pub page_size: Option<usize>,
}

impl SideConfig {
    /// A side reading and writing `object`.
    pub fn new(object: impl Into<String>, create: CreateWith) -> Self {
        SideConfig {
            object: object.into(),
            create,
            page_size: None,
        }
    }

    /// Sets the preferred page size.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n);
        self
    }
}

/// What a bidirectional sync does.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BidiConfig {
    /// The name the record states, checkpoints and review items are kept
    /// under (the state store's `object`).
    pub name: String,
    /// The platform side (the mapping's `source` fields).
    pub platform: SideConfig,
    /// The CRM side (the mapping's `target` fields).
    pub crm: SideConfig,
    /// Field maps, platform -> CRM; `bidirectional` maps run both ways,
    /// `to_crm` and `from_crm` maps one way only.
    pub mapping: Mapping,
    /// Per-field conflict policies; `newest_wins` by default.
    pub conflicts: ConflictConfig,
    /// A platform field that pairs records created on both sides before
    /// their first sync (compared trimmed and case-insensitively).
    pub match_key: Option<String>,
    /// Whether a delete on one side deletes the record on the other
    /// (default true). When false only the pairing is forgotten.
    pub propagate_deletes: bool,
}

impl BidiConfig {
    /// A sync named `name` between `platform` and `crm` with `mapping`.
    pub fn new(
        name: impl Into<String>,
        platform: SideConfig,
        crm: SideConfig,
        mapping: Mapping,
    ) -> Self {
        BidiConfig {
            name: name.into(),
            platform,
            crm,
            mapping,
            conflicts: ConflictConfig::default(),
            match_key: None,
            propagate_deletes: true,
        }
    }

    /// Sets the conflict policies.
    #[must_use]
    pub fn conflicts(mut self, conflicts: ConflictConfig) -> Self {
        self.conflicts = conflicts;
        self
    }

    /// Sets the match key.
    #[must_use]
    pub fn match_key(mut self, field: impl Into<String>) -> Self {
        self.match_key = Some(field.into());
        self
    }

    /// Sets whether deletes propagate.
    #[must_use]
    pub fn propagate_deletes(mut self, yes: bool) -> Self {
        self.propagate_deletes = yes;
        self
    }
}

/// The numbers of one round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundReport {
    /// The sync run recorded in the state store.
    pub run_id: Option<SyncRunId>,
    /// Changes read from the platform.
    pub read_platform: u64,
    /// Changes read from the CRM.
    pub read_crm: u64,
    /// Changes that matched the snapshot (our own writes read back, or
    /// edits of unmapped fields).
    pub unchanged: u64,
    /// Records created in the CRM.
    pub created_crm: u64,
    /// Records created on the platform.
    pub created_platform: u64,
    /// Records updated in the CRM.
    pub updated_crm: u64,
    /// Records updated on the platform.
    pub updated_platform: u64,
    /// Records deleted in the CRM.
    pub deleted_crm: u64,
    /// Records deleted on the platform.
    pub deleted_platform: u64,
    /// Fields changed on both sides and decided by a policy.
    pub conflicts_resolved: u64,
    /// Records sent to the review queue (manual conflicts, delete against
    /// edit).
    pub sent_to_review: u64,
    /// Records a side refused; kept in the dead letters.
    pub rejected: u64,
}

impl RoundReport {
    /// Writes made in this round, on both sides.
    pub fn writes(&self) -> u64 {
        self.created_crm
            + self.created_platform
            + self.updated_crm
            + self.updated_platform
            + self.deleted_crm
            + self.deleted_platform
    }
}

/// How a reviewer settles one field of a manual conflict.
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    /// The platform's value.
    Platform,
    /// The CRM's value (in platform terms).
    Crm,
    /// A value typed by the reviewer (in platform terms).
    Value(Value),
}

/// The values both sides had at the last sync.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snap {
    platform: IndexMap<String, Value>,
    crm: IndexMap<String, Value>,
}

impl Snap {
    fn from_state(state: &RecordSyncState) -> Option<Snap> {
        let v = &state.snapshot.as_ref()?.0;
        let side = |k: &str| -> IndexMap<String, Value> {
            v.get(k)
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default()
        };
        Some(Snap {
            platform: side("platform"),
            crm: side("crm"),
        })
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"platform": self.platform, "crm": self.crm})
    }
}

/// The bidirectional sync of one object pair. See the [module docs](self).
pub struct BidiSync<'a> {
    platform: &'a dyn Endpoint,
    crm: &'a dyn Endpoint,
    store: &'a StateStore,
    conn: ConnectionId,
    cfg: BidiConfig,
    /// (platform field read, CRM field written) of the maps that run to the CRM.
    to_crm: Vec<(String, String)>,
    /// (CRM field read, platform field written) of the maps that run from it.
    from_crm: Vec<(String, String)>,
    platform_fields: Vec<String>,
    crm_fields: Vec<String>,
    actor: String,
}

impl std::fmt::Debug for BidiSync<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BidiSync")
            .field("name", &self.cfg.name)
            .field("platform", &self.platform.kind())
            .field("crm", &self.crm.kind())
            .finish_non_exhaustive()
    }
}

/// A change of one record pair found in this round.
#[derive(Default)]
struct Item {
    state: Option<RecordSyncState>,
    platform: Option<Change>,
    crm: Option<Change>,
}

/// What to write for one record pair.
#[derive(Default)]
struct Plan {
    /// Fields for the platform (platform names).
    platform: Record,
    /// Fields for the CRM (CRM names).
    crm: Record,
    decisions: Vec<FieldDecision>,
    manual: Vec<FieldDecision>,
    snap: Snap,
    platform_at: Option<DateTime<Utc>>,
    crm_at: Option<DateTime<Utc>>,
}

/// A write waiting for its outcome.
struct Pending {
    item: usize,
    record: Record,
}

#[derive(Default)]
struct Writes {
    update: Vec<Pending>,
    create: Vec<Pending>,
    delete: Vec<Pending>,
}

fn cursor_object(name: &str, side: &str) -> String {
    format!("bidi/{name}/{side}")
}

fn key_text(v: Option<&Value>) -> Option<String> {
    let v = v?;
    if v.is_blank() {
        return None;
    }
    Some(match v {
        Value::Text(t) => t.trim().to_lowercase(),
        other => other.to_string().trim().to_lowercase(),
    })
}

fn fields_json(r: &IndexMap<String, Value>) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
}

fn differs(values: &IndexMap<String, Value>, field: &str, v: &Value) -> bool {
    !values_agree(values.get(field).unwrap_or(&Value::Null), v)
}

impl<'a> BidiSync<'a> {
    /// A sync between `platform` and `crm`, keeping its state in `store`
    /// under the connection `connection` (created if new).
    ///
    /// # Errors
    /// State-store errors; [`ErrorKind::InvalidInput`] when the mapping
    /// maps nothing in either direction.
    pub async fn open(
        platform: &'a dyn Endpoint,
        crm: &'a dyn Endpoint,
        store: &'a StateStore,
        connection: &str,
        cfg: BidiConfig,
    ) -> Result<BidiSync<'a>> {
        let conn = store.ensure_connection("bidi", connection).await?;
        let mut to_crm = Vec::new();
        let mut from_crm = Vec::new();
        for m in cfg.mapping.maps() {
            if let Some((read, written, _)) = m.plan(Flow::ToCrm) {
                to_crm.push((read.to_owned(), written.to_owned()));
            }
            if let Some((read, written, _)) = m.plan(Flow::FromCrm) {
                from_crm.push((read.to_owned(), written.to_owned()));
            }
        }
        if to_crm.is_empty() && from_crm.is_empty() {
            return Err(Error::invalid_input(format!(
                "the mapping of `{}` maps no field in either direction",
                cfg.name
            )));
        }
        let mut platform_fields: Vec<String> = Vec::new();
        let mut crm_fields: Vec<String> = Vec::new();
        let push = |v: &mut Vec<String>, f: &str| {
            if !v.iter().any(|x| x == f) {
                v.push(f.to_owned());
            }
        };
        for (p, c) in &to_crm {
            push(&mut platform_fields, p);
            push(&mut crm_fields, c);
        }
        for (c, p) in &from_crm {
            push(&mut crm_fields, c);
            push(&mut platform_fields, p);
        }
        let actor = format!("sync:{}", cfg.name);
        Ok(BidiSync {
            platform,
            crm,
            store,
            conn,
            cfg,
            to_crm,
            from_crm,
            platform_fields,
            crm_fields,
            actor,
        })
    }

    /// The connection the state is kept under.
    pub fn connection(&self) -> &ConnectionId {
        &self.conn
    }

    /// The configuration.
    pub fn config(&self) -> &BidiConfig {
        &self.cfg
    }

    async fn read_side(
        &self,
        source: &dyn Endpoint,
        side: &SideConfig,
        fields: &[String],
        label: &str,
    ) -> Result<(Vec<Change>, Option<Cursor>)> {
        let at = cursor_object(&self.cfg.name, label);
        let since = self.store.checkpoint(&self.conn, &at).await?;
        let mut req = match since {
            Some(c) => ReadRequest::since(side.object.clone(), c),
            None => ReadRequest::full(side.object.clone()),
        };
        req = req.fields(fields.iter().cloned());
        if let Some(n) = side.page_size {
            req = req.page_size(n);
        }
        let mut stream = source.read(req);
        let mut changes = Vec::new();
        let mut cursor = None;
        while let Some(page) = stream.next().await {
            let page = page.map_err(|e| e.with_context("side", label))?;
            changes.extend(page.changes);
            cursor = Some(page.cursor);
        }
        Ok((changes, cursor))
    }

    fn project(record: &Record, fields: &[String]) -> IndexMap<String, Value> {
        fields
            .iter()
            .filter_map(|f| record.get(f).map(|v| (f.clone(), v.clone())))
            .collect()
    }

    /// Runs one round: reads both sides, writes what changed, resolves
    /// conflicts, commits states and checkpoints.
    ///
    /// # Errors
    /// A read or a whole write call that failed (nothing is checkpointed,
    /// so the next round repeats the work); state-store errors. Records a
    /// side refuses are not errors: they are counted, kept in the dead
    /// letters, and the round goes on.
    pub async fn round(&self) -> Result<RoundReport> {
        let run = self
            .store
            .start_run(
                &self.conn,
                &self.cfg.name,
                SyncType::Delta,
                SyncDirection::Bidirectional,
            )
            .await?;
        match self.round_inner(&run).await {
            Ok(mut report) => {
                self.store
                    .record_run_progress(
                        &run,
                        i64::try_from(report.read_platform + report.read_crm).unwrap_or(i64::MAX),
                        i64::try_from(report.writes() + report.unchanged).unwrap_or(i64::MAX),
                        i64::try_from(report.rejected).unwrap_or(i64::MAX),
                    )
                    .await?;
                self.store
                    .finish_run(&run, RunStatus::Completed, &json!([]))
                    .await?;
                report.run_id = Some(run);
                Ok(report)
            }
            Err(e) => {
                // Keep the original error; a failure to record it is secondary.
                let _ = self
                    .store
                    .finish_run(&run, RunStatus::Failed, &json!([e.to_string()]))
                    .await;
                Err(e)
            }
        }
    }

    async fn round_inner(&self, run: &SyncRunId) -> Result<RoundReport> {
        let mut report = RoundReport::default();
        let (pl_changes, pl_cursor) = self
            .read_side(
                self.platform,
                &self.cfg.platform,
                &self.platform_fields,
                "platform",
            )
            .await?;
        let (crm_changes, crm_cursor) = self
            .read_side(self.crm, &self.cfg.crm, &self.crm_fields, "crm")
            .await?;
        report.read_platform = pl_changes.len() as u64;
        report.read_crm = crm_changes.len() as u64;

        let mut items: Vec<Item> = Vec::new();
        let mut by_local: HashMap<String, usize> = HashMap::new();
        let mut by_remote: HashMap<String, usize> = HashMap::new();
        for change in pl_changes {
            let Some(id) = change.id().map(|i| i.as_str().to_owned()) else {
                continue;
            };
            if let Some(&i) = by_local.get(&id) {
                items[i].platform = Some(change);
                continue;
            }
            let state = self
                .store
                .record_state(&self.conn, &self.cfg.name, &id)
                .await?;
            if let Some(r) = state.as_ref().and_then(|s| s.remote_id.clone()) {
                by_remote.insert(r, items.len());
            }
            by_local.insert(id, items.len());
            items.push(Item {
                state,
                platform: Some(change),
                crm: None,
            });
        }
        for change in crm_changes {
            let Some(id) = change.id().map(|i| i.as_str().to_owned()) else {
                continue;
            };
            if let Some(&i) = by_remote.get(&id) {
                items[i].crm = Some(change);
                continue;
            }
            let state = self
                .store
                .record_state_by_remote_in(&self.conn, &self.cfg.name, &id)
                .await?;
            if let Some(local) = state.as_ref().map(|s| s.local_id.clone()) {
                if let Some(&i) = by_local.get(&local) {
                    items[i].crm = Some(change);
                    by_remote.insert(id, i);
                    continue;
                }
                by_local.insert(local, items.len());
            }
            by_remote.insert(id, items.len());
            items.push(Item {
                state,
                platform: None,
                crm: Some(change),
            });
        }
        self.pair_new_records(&mut items);

        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(items.len());
        let mut to_crm = Writes::default();
        let mut to_platform = Writes::default();
        let mut reviews: Vec<(String, serde_json::Value)> = Vec::new();
        let mut forget: Vec<String> = Vec::new();
        let mut dead: Vec<(String, &'static str, serde_json::Value, String)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.plan(item) {
                Ok(Step::Skip) => {
                    report.unchanged += 1;
                    plans.push(None);
                }
                Ok(Step::Write(plan)) => {
                    report.conflicts_resolved += plan
                        .decisions
                        .iter()
                        .filter(|d| d.is_conflict() && d.outcome != Outcome::Manual)
                        .count() as u64;
                    if !plan.manual.is_empty() {
                        reviews.push((self.review_key(item), self.conflict_details(item, &plan)));
                    }
                    self.queue_writes(i, item, &plan, &mut to_crm, &mut to_platform);
                    plans.push(Some(*plan));
                }
                Ok(Step::DeleteCrm(id)) => {
                    to_crm.delete.push(Pending {
                        item: i,
                        record: Record::new().with_id(id),
                    });
                    plans.push(None);
                }
                Ok(Step::DeletePlatform(id)) => {
                    to_platform.delete.push(Pending {
                        item: i,
                        record: Record::new().with_id(id),
                    });
                    plans.push(None);
                }
                Ok(Step::Forget) => {
                    if let Some(s) = &item.state {
                        forget.push(s.local_id.clone());
                    }
                    plans.push(None);
                }
                Ok(Step::Review(details)) => {
                    reviews.push((self.review_key(item), details));
                    plans.push(None);
                }
                Err(e) => {
                    dead.push((
                        self.review_key(item),
                        "bidi.map",
                        self.item_json(item),
                        e.to_string(),
                    ));
                    plans.push(None);
                }
            }
        }

        // Writes: the CRM first, then the platform. An error of a whole call
        // ends the round before any state or checkpoint is committed.
        let crm_out = self
            .write_all(self.crm, &self.cfg.crm, to_crm, "crm")
            .await?;
        let pl_out = self
            .write_all(self.platform, &self.cfg.platform, to_platform, "platform")
            .await?;

        // Outcomes per item.
        let mut crm_ok: HashMap<usize, (WriteKind, RecordId)> = HashMap::new();
        let mut pl_ok: HashMap<usize, (WriteKind, RecordId)> = HashMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        for (out, ok, label) in [
            (crm_out, &mut crm_ok, "crm"),
            (pl_out, &mut pl_ok, "platform"),
        ] {
            for (item, kind, outcome, record) in out {
                match outcome {
                    WriteOutcome::Rejected { error, .. } => {
                        failed.insert(item);
                        report.rejected += 1;
                        dead.push((
                            self.review_key(&items[item]),
                            if label == "crm" {
                                "bidi.write_crm"
                            } else {
                                "bidi.write_platform"
                            },
                            json!({"record": fields_json(&record.fields), "id": record.id.as_ref().map(RecordId::as_str)}),
                            error.to_string(),
                        ));
                    }
                    WriteOutcome::Deleted(id) => {
                        ok.insert(item, (kind, id));
                    }
                    other => {
                        if let Some(id) = other.id() {
                            ok.insert(item, (kind, id.clone()));
                        }
                    }
                }
            }
        }

        for (key, stage, record, error) in &dead {
            self.store
                .put_dead_letter(&self.conn, &self.cfg.name, key, stage, record, error)
                .await?;
        }
        for (key, details) in &reviews {
            self.store
                .put_review(
                    &self.conn,
                    &self.cfg.name,
                    key,
                    ReviewReason::ManualConflict,
                    details,
                )
                .await?;
        }
        report.sent_to_review = reviews.len() as u64;

        let now = Utc::now();
        let mut tx = self.store.begin().await?;
        for (i, item) in items.iter().enumerate() {
            if failed.contains(&i) {
                continue;
            }
            let crm_w = crm_ok.get(&i);
            let pl_w = pl_ok.get(&i);
            for (w, side) in [(crm_w, "crm"), (pl_w, "platform")] {
                if let Some((kind, _)) = w {
                    let n = match (kind, side) {
                        (WriteKind::Create, "crm") => &mut report.created_crm,
                        (WriteKind::Create, _) => &mut report.created_platform,
                        (WriteKind::Update, "crm") => &mut report.updated_crm,
                        (WriteKind::Update, _) => &mut report.updated_platform,
                        (WriteKind::Delete, "crm") => &mut report.deleted_crm,
                        (WriteKind::Delete, _) => &mut report.deleted_platform,
                    };
                    *n += 1;
                }
            }
            let deleted = matches!(crm_w, Some((WriteKind::Delete, _)))
                || matches!(pl_w, Some((WriteKind::Delete, _)));
            let Some(plan) = plans[i].as_ref() else {
                if deleted && let Some(s) = &item.state {
                    self.audit_delete(&mut tx, run, s, crm_w.is_some()).await?;
                    forget.push(s.local_id.clone());
                }
                continue;
            };
            let local_id = match (&item.state, pl_w, &item.platform) {
                (Some(s), _, _) => s.local_id.clone(),
                (None, Some((_, id)), _) => id.as_str().to_owned(),
                (None, None, Some(c)) => match c.id() {
                    Some(id) => id.as_str().to_owned(),
                    None => continue,
                },
                (None, None, None) => continue,
            };
            let remote_id = match (crm_w, &item.crm, &item.state) {
                (Some((_, id)), _, _) => Some(id.as_str().to_owned()),
                (None, Some(c), _) => c.id().map(|i| i.as_str().to_owned()),
                (None, None, Some(s)) => s.remote_id.clone(),
                _ => None,
            };
            let mut state = RecordSyncState::new(self.conn.clone(), &self.cfg.name, &local_id)
                .times(Some(now), plan.platform_at, plan.crm_at)
                .snapshot(plan.snap.to_json());
            if let Some(r) = remote_id {
                state = state.remote(r, Some(self.cfg.crm.object.clone()));
            }
            if !plan.manual.is_empty() {
                state = state.conflict(json!({
                    "fields": plan.manual.iter().map(|d| d.field.clone()).collect::<Vec<_>>(),
                }));
            }
            tx.upsert_record_state(&state).await?;
            if let Some((kind, id)) = crm_w {
                tx.audit(&self.audit_entry(run, &local_id, "crm", *kind, id, plan, item))
                    .await?;
            }
            if let Some((kind, id)) = pl_w {
                tx.audit(&self.audit_entry(run, &local_id, "platform", *kind, id, plan, item))
                    .await?;
            }
        }
        if let Some(c) = &pl_cursor {
            tx.save_checkpoint(&self.conn, &cursor_object(&self.cfg.name, "platform"), c)
                .await?;
        }
        if let Some(c) = &crm_cursor {
            tx.save_checkpoint(&self.conn, &cursor_object(&self.cfg.name, "crm"), c)
                .await?;
        }
        tx.commit().await?;
        for local in forget {
            self.store
                .delete_record_state(&self.conn, &self.cfg.name, &local)
                .await?;
        }
        Ok(report)
    }

    /// Pairs records created on both sides before any sync, by match key.
    fn pair_new_records(&self, items: &mut Vec<Item>) {
        let Some(key) = &self.cfg.match_key else {
            return;
        };
        let Some(crm_key) = self
            .to_crm
            .iter()
            .find(|(p, _)| p == key)
            .map(|(_, c)| c.clone())
            .or_else(|| {
                self.from_crm
                    .iter()
                    .find(|(_, p)| p == key)
                    .map(|(c, _)| c.clone())
            })
        else {
            return;
        };
        let mut new_crm: HashMap<String, usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if let (None, None, Some(Change::Upsert(r))) = (&it.state, &it.platform, &it.crm)
                && let Some(k) = key_text(r.get(&crm_key))
            {
                new_crm.entry(k).or_insert(i);
            }
        }
        let mut taken: Vec<usize> = Vec::new();
        for i in 0..items.len() {
            let k = match (&items[i].state, &items[i].platform, &items[i].crm) {
                (None, Some(Change::Upsert(r)), None) => key_text(r.get(key)),
                _ => None,
            };
            if let Some(j) = k.and_then(|k| new_crm.remove(&k)) {
                items[i].crm = items[j].crm.take();
                taken.push(j);
            }
        }
        taken.sort_unstable();
        for j in taken.into_iter().rev() {
            items.remove(j);
        }
    }

    fn review_key(&self, item: &Item) -> String {
        if let Some(s) = &item.state {
            return s.local_id.clone();
        }
        match (&item.platform, &item.crm) {
            (Some(c), _) => c.id().map(|i| i.to_string()).unwrap_or_default(),
            (None, Some(c)) => format!("crm:{}", c.id().map(|i| i.to_string()).unwrap_or_default()),
            (None, None) => String::new(),
        }
    }

    fn item_json(&self, item: &Item) -> serde_json::Value {
        let side = |c: &Option<Change>| match c {
            Some(Change::Upsert(r)) => {
                json!({"id": r.id.as_ref().map(RecordId::as_str), "fields": fields_json(&r.fields)})
            }
            Some(Change::Delete { id, .. }) => json!({"deleted": id.as_str()}),
            None => serde_json::Value::Null,
        };
        json!({"platform": side(&item.platform), "crm": side(&item.crm)})
    }

    /// Decides what one record pair needs.
    fn plan(&self, item: &Item) -> Result<Step> {
        let snap = item.state.as_ref().and_then(Snap::from_state);
        let pl_rec = match &item.platform {
            Some(Change::Upsert(r)) => Some(r),
            _ => None,
        };
        let crm_rec = match &item.crm {
            Some(Change::Upsert(r)) => Some(r),
            _ => None,
        };
        let pl_deleted = matches!(item.platform, Some(Change::Delete { .. }));
        let crm_deleted = matches!(item.crm, Some(Change::Delete { .. }));

        let current_pl = pl_rec.map(|r| Self::project(r, &self.platform_fields));
        let current_crm = crm_rec.map(|r| Self::project(r, &self.crm_fields));
        let pl_changed = match (&current_pl, &snap) {
            (Some(c), Some(s)) => self.platform_fields.iter().any(|f| {
                c.contains_key(f) && differs(&s.platform, f, c.get(f).unwrap_or(&Value::Null))
            }),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let crm_changed = match (&current_crm, &snap) {
            (Some(c), Some(s)) => self
                .crm_fields
                .iter()
                .any(|f| c.contains_key(f) && differs(&s.crm, f, c.get(f).unwrap_or(&Value::Null))),
            (Some(_), None) => true,
            (None, _) => false,
        };

        // Deletes.
        if pl_deleted || crm_deleted {
            let Some(state) = &item.state else {
                // Never synced: nothing on the other side to delete.
                return Ok(Step::Skip);
            };
            if pl_deleted && crm_deleted {
                return Ok(Step::Forget);
            }
            let other_changed = if pl_deleted { crm_changed } else { pl_changed };
            if other_changed {
                return Ok(Step::Review(json!({
                    "kind": "delete_against_edit",
                    "deleted_on": if pl_deleted { "platform" } else { "crm" },
                    "platform_id": state.local_id,
                    "crm_id": state.remote_id,
                })));
            }
            if !self.cfg.propagate_deletes {
                return Ok(Step::Forget);
            }
            return Ok(if pl_deleted {
                match &state.remote_id {
                    Some(r) => Step::DeleteCrm(RecordId::new(r.clone())),
                    None => Step::Forget,
                }
            } else {
                Step::DeletePlatform(RecordId::new(state.local_id.clone()))
            });
        }
        if !pl_changed && !crm_changed {
            return Ok(Step::Skip);
        }

        let snap = snap.unwrap_or_default();
        let has_base = item.state.as_ref().is_some_and(|s| s.snapshot.is_some());
        let base_pl: Record = snap.platform.clone().into_iter().collect();
        let now_pl: IndexMap<String, Value> =
            current_pl.clone().unwrap_or_else(|| snap.platform.clone());
        let now_crm: IndexMap<String, Value> =
            current_crm.clone().unwrap_or_else(|| snap.crm.clone());

        // The CRM's values in platform terms; a CRM field unchanged since the
        // snapshot keeps the platform's base value, so a transform that does
        // not round-trip exactly is not mistaken for an edit.
        let crm_as_record: Record = now_crm.clone().into_iter().collect();
        let from = self
            .cfg
            .mapping
            .apply(&crm_as_record, Flow::FromCrm)
            .map_err(Error::from)?;
        let mut target = Record::new();
        target.updated_at = crm_rec.and_then(|r| r.updated_at);
        let mut source = Record::new();
        source.updated_at = pl_rec.and_then(|r| r.updated_at);
        let pl_writable: HashSet<&str> = self.from_crm.iter().map(|(_, p)| p.as_str()).collect();
        let crm_flows: HashSet<&str> = self.to_crm.iter().map(|(p, _)| p.as_str()).collect();
        for f in &self.platform_fields {
            let pv = now_pl.get(f).cloned().unwrap_or(Value::Null);
            let base = snap.platform.get(f).cloned();
            // The CRM side of field f.
            let crm_reads: Vec<&str> = self
                .from_crm
                .iter()
                .filter(|(_, p)| p == f)
                .map(|(c, _)| c.as_str())
                .collect();
            let crm_untouched = crm_reads.is_empty()
                || current_crm.is_none()
                || (has_base
                    && crm_reads
                        .iter()
                        .all(|c| !differs(&snap.crm, c, now_crm.get(*c).unwrap_or(&Value::Null))));
            let tv = if crm_untouched {
                base.clone().unwrap_or_else(|| pv.clone())
            } else {
                from.get(f).cloned().unwrap_or(Value::Null)
            };
            let sv = if current_pl.is_none() && !has_base {
                // Nothing on the platform yet: the CRM's values stand.
                tv.clone()
            } else if crm_flows.contains(f.as_str()) || !has_base {
                pv
            } else {
                // A platform field that never flows to the CRM cannot win there.
                base.unwrap_or(pv)
            };
            source.set(f.clone(), sv);
            target.set(f.clone(), tv);
        }
        let res = self
            .cfg
            .conflicts
            .resolve(&source, &target, has_base.then_some(&base_pl));

        let manual: Vec<FieldDecision> = res
            .decisions
            .iter()
            .filter(|d| d.outcome == Outcome::Manual)
            .cloned()
            .collect();
        let manual_fields: HashSet<&str> = manual.iter().map(|d| d.field.as_str()).collect();

        // The platform values both sides should hold.
        let mut desired_pl = now_pl.clone();
        for (f, v) in &res.merged.fields {
            if !manual_fields.contains(f.as_str()) {
                desired_pl.insert(f.clone(), v.clone());
            }
        }
        let mut pl_updates = Record::new();
        for (f, v) in &desired_pl {
            if pl_writable.contains(f.as_str()) && differs(&now_pl, f, v) {
                pl_updates.set(f.clone(), v.clone());
            }
        }
        // Fields the platform record lacks but the CRM holds.
        if current_pl.is_none() {
            for (f, v) in &from.fields {
                if pl_writable.contains(f.as_str())
                    && !manual_fields.contains(f.as_str())
                    && !desired_pl.contains_key(f)
                {
                    desired_pl.insert(f.clone(), v.clone());
                    pl_updates.set(f.clone(), v.clone());
                }
            }
        }
        let desired_rec: Record = desired_pl.clone().into_iter().collect();
        let to = self
            .cfg
            .mapping
            .apply(&desired_rec, Flow::ToCrm)
            .map_err(Error::from)?;
        let manual_crm: HashSet<&str> = self
            .to_crm
            .iter()
            .filter(|(p, _)| manual_fields.contains(p.as_str()))
            .map(|(_, c)| c.as_str())
            .collect();
        let mut crm_updates = Record::new();
        let mut new_crm = now_crm.clone();
        for (c, v) in &to.fields {
            if manual_crm.contains(c.as_str()) {
                continue;
            }
            if differs(&now_crm, c, v) {
                crm_updates.set(c.clone(), v.clone());
                new_crm.insert(c.clone(), v.clone());
            }
        }

        // The new snapshot: what each side holds after the writes, except
        // the contested fields, which keep their base until resolved.
        let mut snap_pl = desired_pl;
        let mut snap_crm = new_crm;
        for f in &manual_fields {
            match snap.platform.get(*f) {
                Some(v) => snap_pl.insert((*f).to_owned(), v.clone()),
                None => snap_pl.shift_remove(*f),
            };
        }
        for c in &manual_crm {
            match snap.crm.get(*c) {
                Some(v) => snap_crm.insert((*c).to_owned(), v.clone()),
                None => snap_crm.shift_remove(*c),
            };
        }
        Ok(Step::Write(Box::new(Plan {
            platform: pl_updates,
            crm: crm_updates,
            decisions: res.decisions,
            manual,
            snap: Snap {
                platform: snap_pl,
                crm: snap_crm,
            },
            platform_at: pl_rec
                .and_then(|r| r.updated_at)
                .or(item.state.as_ref().and_then(|s| s.local_updated_at)),
            crm_at: crm_rec
                .and_then(|r| r.updated_at)
                .or(item.state.as_ref().and_then(|s| s.remote_updated_at)),
        })))
    }

    fn queue_writes(
        &self,
        i: usize,
        item: &Item,
        plan: &Plan,
        to_crm: &mut Writes,
        to_platform: &mut Writes,
    ) {
        let remote = item
            .state
            .as_ref()
            .and_then(|s| s.remote_id.clone())
            .or_else(|| {
                item.crm
                    .as_ref()
                    .and_then(|c| c.id())
                    .map(|i| i.to_string())
            });
        let local = item.state.as_ref().map(|s| s.local_id.clone()).or_else(|| {
            item.platform
                .as_ref()
                .and_then(|c| c.id())
                .map(|i| i.to_string())
        });
        if !plan.crm.is_empty() {
            match &remote {
                Some(r) => to_crm.update.push(Pending {
                    item: i,
                    record: plan.crm.clone().with_id(r.clone()),
                }),
                None => {
                    let mut rec: Record = plan.snap.crm.clone().into_iter().collect();
                    if let CreateWith::DerivedId { field, prefix } = &self.cfg.crm.create {
                        let id = format!("{prefix}{}", local.clone().unwrap_or_default());
                        rec.set(field.clone(), Value::Text(id.clone()));
                        rec.id = Some(RecordId::new(id));
                    }
                    to_crm.create.push(Pending {
                        item: i,
                        record: rec,
                    });
                }
            }
        }
        if !plan.platform.is_empty() {
            match local {
                Some(l) => {
                    let mut rec = plan.platform.clone().with_id(l);
                    rec.updated_at = Some(Utc::now());
                    to_platform.update.push(Pending {
                        item: i,
                        record: rec,
                    });
                }
                None => {
                    let mut rec: Record = plan.snap.platform.clone().into_iter().collect();
                    if let CreateWith::DerivedId { field, prefix } = &self.cfg.platform.create {
                        let id = format!("{prefix}{}", remote.clone().unwrap_or_default());
                        rec.set(field.clone(), Value::Text(id.clone()));
                        rec.id = Some(RecordId::new(id));
                    }
                    rec.updated_at = Some(Utc::now());
                    to_platform.create.push(Pending {
                        item: i,
                        record: rec,
                    });
                }
            }
        }
    }

    /// Writes queued records in batches of the sink's size; returns each
    /// record's outcome.
    async fn write_all(
        &self,
        sink: &dyn Endpoint,
        side: &SideConfig,
        writes: Writes,
        label: &str,
    ) -> Result<Vec<(usize, WriteKind, WriteOutcome, Record)>> {
        let max = sink.max_batch(&side.object).max(1);
        let create_op = match &side.create {
            CreateWith::UpsertKey(k) => WriteOp::Upsert { key: k.clone() },
            CreateWith::DerivedId { field, .. } => WriteOp::Upsert { key: field.clone() },
        };
        let mut out = Vec::new();
        for (kind, op, list) in [
            (WriteKind::Update, WriteOp::Update, writes.update),
            (WriteKind::Create, create_op, writes.create),
            (WriteKind::Delete, WriteOp::Delete, writes.delete),
        ] {
            let mut rest = list;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(max));
                let chunk = std::mem::replace(&mut rest, tail);
                let records: Vec<Record> = chunk.iter().map(|p| p.record.clone()).collect();
                let outcomes = sink
                    .write(&side.object, WriteBatch::new(op.clone(), records))
                    .await
                    .map_err(|e| e.with_context("side", label))?;
                if outcomes.len() != chunk.len() {
                    return Err(Error::new(
                        ErrorKind::Permanent,
                        format!(
                            "the {label} sink answered {} outcomes for {} records",
                            outcomes.len(),
                            chunk.len()
                        ),
                    ));
                }
                for (p, o) in chunk.into_iter().zip(outcomes) {
                    out.push((p.item, kind, o, p.record));
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_entry(
        &self,
        run: &SyncRunId,
        local_id: &str,
        side: &str,
        kind: WriteKind,
        id: &RecordId,
        plan: &Plan,
        item: &Item,
    ) -> NewAuditEntry {
        let (written, before) = if side == "crm" {
            let before = match &item.crm {
                Some(Change::Upsert(r)) => Self::project(r, &self.crm_fields),
                _ => Snap::from_state_opt(item.state.as_ref()).crm,
            };
            (&plan.crm, before)
        } else {
            let before = match &item.platform {
                Some(Change::Upsert(r)) => Self::project(r, &self.platform_fields),
                _ => Snap::from_state_opt(item.state.as_ref()).platform,
            };
            (&plan.platform, before)
        };
        let written: IndexMap<String, Value> = match kind {
            WriteKind::Create if side == "crm" => plan.snap.crm.clone(),
            WriteKind::Create => plan.snap.platform.clone(),
            _ => written.fields.clone(),
        };
        let old: IndexMap<String, Value> = written
            .keys()
            .map(|k| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        let decisions: Vec<serde_json::Value> = plan
            .decisions
            .iter()
            .map(|d| {
                json!({
                    "field": d.field,
                    "policy": d.policy.as_str(),
                    "outcome": d.outcome,
                    "reason": d.reason,
                })
            })
            .collect();
        NewAuditEntry::new(&self.actor, format!("bidi.{}.{side}", kind.as_str()))
            .connection(self.conn.clone())
            .record(&self.cfg.name, local_id)
            .values(
                Some(json!({"fields": fields_json(&old)})),
                Some(json!({
                    "fields": fields_json(&written),
                    "side": side,
                    "id": id.as_str(),
                    "run_id": run.as_str(),
                    "decisions": decisions,
                })),
            )
    }

    async fn audit_delete(
        &self,
        tx: &mut crm_sql::state::StateTx<'_>,
        run: &SyncRunId,
        state: &RecordSyncState,
        in_crm: bool,
    ) -> Result<()> {
        let snap = Snap::from_state_opt(Some(state));
        let (side, before, id) = if in_crm {
            ("crm", snap.crm, state.remote_id.clone().unwrap_or_default())
        } else {
            ("platform", snap.platform, state.local_id.clone())
        };
        tx.audit(
            &NewAuditEntry::new(&self.actor, format!("bidi.delete.{side}"))
                .connection(self.conn.clone())
                .record(&self.cfg.name, &state.local_id)
                .values(
                    Some(json!({"fields": fields_json(&before)})),
                    Some(json!({"side": side, "id": id, "run_id": run.as_str(), "deleted": true})),
                ),
        )
        .await
        .map(drop)
    }

    fn conflict_details(&self, item: &Item, plan: &Plan) -> serde_json::Value {
        let fields: Vec<serde_json::Value> = plan
            .manual
            .iter()
            .map(|d| {
                json!({
                    "field": d.field,
                    "platform_value": d.source_value,
                    "crm_value": d.target_value,
                    "base_value": d.base_value,
                })
            })
            .collect();
        let id_of = |c: &Option<Change>| c.as_ref().and_then(|c| c.id()).map(|i| i.to_string());
        json!({
            "kind": "field_conflict",
            "platform_id": item.state.as_ref().map(|s| s.local_id.clone()).or_else(|| id_of(&item.platform)),
            "crm_id": item.state.as_ref().and_then(|s| s.remote_id.clone()).or_else(|| id_of(&item.crm)),
            "platform_updated_at": plan.platform_at,
            "crm_updated_at": plan.crm_at,
            "fields": fields,
        })
    }

    /// Settles a manual conflict from the review queue: `picks` names, per
    /// contested field (platform names), which value both sides get. The
    /// value is written to whichever side lacks it, the snapshot and the
    /// audit log record the decision with `reviewer` as the actor, and the
    /// review item is closed.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown or closed review item;
    /// [`ErrorKind::InvalidInput`] when a contested field has no pick or a
    /// side refuses the value (the item stays open); write and state-store
    /// errors.
    pub async fn resolve_conflict(
        &self,
        review: &ReviewId,
        picks: &IndexMap<String, Pick>,
        reviewer: &str,
    ) -> Result<()> {
        let item = self
            .store
            .review(review)
            .await?
            .filter(|r| r.status == ReviewStatus::Open && r.object == self.cfg.name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no open review item {} for `{}`",
                        review.as_str(),
                        self.cfg.name
                    ),
                )
            })?;
        let d = &item.details;
        if d.get("kind").and_then(|k| k.as_str()) != Some("field_conflict") {
            return Err(Error::invalid_input(format!(
                "review item {} is not a field conflict",
                review.as_str()
            )));
        }
        let local_id = d
            .get("platform_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| item.record_id.clone());
        let state = self
            .store
            .record_state(&self.conn, &self.cfg.name, &local_id)
            .await?;
        let mut snap = state
            .as_ref()
            .and_then(Snap::from_state)
            .unwrap_or_default();
        let remote_id = state
            .as_ref()
            .and_then(|s| s.remote_id.clone())
            .or_else(|| d.get("crm_id").and_then(|v| v.as_str()).map(str::to_owned));
        let fields = d
            .get("fields")
            .and_then(|f| f.as_array())
            .cloned()
            .unwrap_or_default();
        let mut chosen = Record::new();
        let mut pl_write = Record::new();
        let mut crm_from: Vec<(String, Value)> = Vec::new();
        for f in &fields {
            let name = f.get("field").and_then(|v| v.as_str()).unwrap_or_default();
            let value_of = |k: &str| -> Value {
                f.get(k)
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or(Value::Null)
            };
            let pv = value_of("platform_value");
            let cv = value_of("crm_value");
            let pick = picks.get(name).ok_or_else(|| {
                Error::invalid_input(format!("no decision for the contested field `{name}`"))
                    .with_context("field", name)
            })?;
            let v = match pick {
                Pick::Platform => pv.clone(),
                Pick::Crm => cv.clone(),
                Pick::Value(v) => v.clone(),
            };
            if !values_agree(&v, &pv) {
                pl_write.set(name, v.clone());
            }
            crm_from.push((name.to_owned(), cv));
            chosen.set(name, v);
        }
        let to = self
            .cfg
            .mapping
            .apply(&chosen, Flow::ToCrm)
            .map_err(Error::from)?;
        // CRM values as they were when the conflict was found, in CRM terms.
        let crm_now: Record = {
            let r: Record = crm_from.into_iter().collect();
            self.cfg
                .mapping
                .apply(&r, Flow::ToCrm)
                .map_err(Error::from)?
        };
        let mut crm_write = Record::new();
        for (c, v) in &to.fields {
            if !values_agree(crm_now.get(c).unwrap_or(&Value::Null), v) {
                crm_write.set(c.clone(), v.clone());
            }
        }
        let check = |outcomes: Vec<WriteOutcome>, side: &str| -> Result<()> {
            for o in outcomes {
                if let WriteOutcome::Rejected { error, .. } = o {
                    return Err(Error::invalid_input(format!(
                        "the {side} refused the resolved values: {error}"
                    ))
                    .with_context("side", side));
                }
            }
            Ok(())
        };
        if !crm_write.is_empty() {
            let Some(r) = &remote_id else {
                return Err(Error::invalid_input(
                    "the conflict names no CRM record to write",
                ));
            };
            let out = self
                .crm
                .write(
                    &self.cfg.crm.object,
                    WriteBatch::new(WriteOp::Update, vec![crm_write.clone().with_id(r.clone())]),
                )
                .await?;
            check(out, "crm")?;
        }
        if !pl_write.is_empty() {
            let mut rec = pl_write.clone().with_id(local_id.clone());
            rec.updated_at = Some(Utc::now());
            let out = self
                .platform
                .write(
                    &self.cfg.platform.object,
                    WriteBatch::new(WriteOp::Update, vec![rec]),
                )
                .await?;
            check(out, "platform")?;
        }
        for (f, v) in &chosen.fields {
            snap.platform.insert(f.clone(), v.clone());
        }
        for (c, v) in &to.fields {
            snap.crm.insert(c.clone(), v.clone());
        }
        let mut new_state = RecordSyncState::new(self.conn.clone(), &self.cfg.name, &local_id)
            .times(
                Some(Utc::now()),
                state.as_ref().and_then(|s| s.local_updated_at),
                state.as_ref().and_then(|s| s.remote_updated_at),
            )
            .snapshot(snap.to_json());
        if let Some(r) = &remote_id {
            new_state = new_state.remote(r.clone(), Some(self.cfg.crm.object.clone()));
        }
        let mut tx = self.store.begin().await?;
        tx.upsert_record_state(&new_state).await?;
        tx.audit(
            &NewAuditEntry::new(reviewer, "resolve_conflict")
                .connection(self.conn.clone())
                .record(&self.cfg.name, &local_id)
                .values(
                    Some(json!({"fields": fields})),
                    Some(json!({
                        "fields": fields_json(&chosen.fields),
                        "written_platform": fields_json(&pl_write.fields),
                        "written_crm": fields_json(&crm_write.fields),
                        "review_id": review.as_str(),
                        "policy": "manual",
                    })),
                ),
        )
        .await?;
        tx.commit().await?;
        self.store
            .resolve_review(
                review,
                ReviewStatus::Resolved,
                &json!({"by": reviewer, "fields": fields_json(&chosen.fields)}),
            )
            .await?;
        Ok(())
    }
}

impl Snap {
    fn from_state_opt(state: Option<&RecordSyncState>) -> Snap {
        state.and_then(Snap::from_state).unwrap_or_default()
    }
}

/// What one record pair needs this round.
enum Step {
    Skip,
    Write(Box<Plan>),
    DeleteCrm(RecordId),
    DeletePlatform(RecordId),
    Forget,
    Review(serde_json::Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    Create,
    Update,
    Delete,
}

impl WriteKind {
    fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
        }
    }
}
