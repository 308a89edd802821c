//! Write-back of platform figures into the bookings sheet (seed 000
//! `write_back:`).
//!
//! A job with a `write_back:` block and a `sheet:` source whose
//! `sheet.write_back.columns` name the target columns (`J: actual_spend`,
//! `K: pacing_percent`, ...) is written back by [`write_back`] (or
//! [`run_write_back_job`], which opens everything the way `crm-sync run`
//! does):
//!
//! 1. The fields due at the requested [`Frequency`] are chosen (all fields
//!    when none is given). A field's `source` names `[schema.]table.column`;
//!    the table is read from the job's destination database (on SQLite the
//!    schema part is dropped). It must have a column named like the sheet's
//!    `key_field` (`booking_id`) and an `updated_at` column; when a key has
//!    several rows, the latest `updated_at` wins. `on_match` fields are read
//!    from the destination table the pipeline fills (`destination.table`):
//!    rows whose `match_status` is `matched`, with `campaign_status` taken
//!    from the job's campaigns. Without configured `on_match` fields,
//!    `--frequency on_match` writes `campaign_id` and `campaign_status`.
//! 2. The sheet's key column and write-back columns are read once, so rows
//!    are located by key as the sheet is now.
//! 3. Per row key and field the state store keeps a digest of the value last
//!    written (a checkpoint per key under the `sheets-writeback` connection
//!    of the job). Only cells whose platform value differs from it are
//!    written, so a re-run writes nothing.
//! 4. A cell edited in the sheet since the last write-back (its value no
//!    longer has the digest) while the platform value changed too is a
//!    conflict, decided by `conflict_resolution`: `platform_wins` (and
//!    `newest_wins`, as the sheet has no modification time per cell)
//!    overwrites it; `crm_wins` leaves it and reports it (once; the next
//!    platform change is again a conflict); `manual` leaves it and reports
//!    it on every run. A cell edited in the sheet while the platform value
//!    stayed the same is only one side's change: it is left as it is.
//! 5. Rows go through the sheet's [`crm_core::Sink`] in batches of its
//!    `max_batch` (one `values.batchUpdate` each, `valueInputOption=RAW`).
//!    Keys not in the sheet are reported, and appended only with
//!    `sheet.write_back.append_new_rows: true`.
//! 6. With `audit_trail: true`, every row's written cells become one audit
//!    entry (`action: write_back`, old and new values, policy, run id), and
//!    every cell left alone under the policy one `write_back_kept` entry.
//!
//! Each run is recorded as a sync run of the `sheets-writeback` connection;
//! its id is the report's `run_id`.
//!
//! # Personal data
//!
//! The fields the job's `mappings:` mark `pii: true`
//! ([`SyncJob::pii_fields`]) are sealed in the audit entries' values (the
//! store is used [`with_pii_fields`](StateStore::with_pii_fields)), and
//! masked in the [`WriteBackReport`] and in the errors the sync run
//! records: the cell values of such a field, and every key when the
//! sheet's key field is one. The audit entries' record ids and the digest
//! checkpoints keep the key as it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use crm_core::conflict::ConflictPolicy;
use crm_core::env::{from_process, interpolate};
use crm_core::mapping::{Flow, Frequency, WriteBackField};
use crm_core::model::Campaign;
use crm_core::pii::{PiiFields, PiiKind, mask_str};
use crm_core::{
    Change, Connector, Cursor, Error, ErrorKind, ReadRequest, Record, Sink, Source, Value,
    WriteBatch, WriteOutcome,
};
use crm_sheets::a1::A1Range;
use crm_sheets::auth::GoogleCredentials;
use crm_sheets::cell::{Cell, ColumnType, cell_to_value, value_to_cell};
use crm_sheets::source::SheetsConnector;
use crm_sheets::wire::{DateTimeRenderOption, ValueRenderOption};
use crm_sheets::writeback::record_key;
use crm_sql::config::DatabaseKind;
use crm_sql::state::{ConnectionId, NewAuditEntry, RunStatus, StateStore, SyncDirection, SyncType};
use crm_sql::{SqlConfig, SqlConnector};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::SyncJob;
use crate::pipeline::{CAMPAIGN_ID_FIELD, MATCH_STATUS_FIELD};
use crate::runner::{RunError, resolve_sqlite_path, sheets_connector, state_key, with_create_mode};

/// The state-store provider name write-back keeps its digests, runs and
/// audit entries under (the connection's name is the job's).
pub const STATE_PROVIDER: &str = "sheets-writeback";

/// The field the campaign's status is written from on match.
pub const CAMPAIGN_STATUS_FIELD: &str = "campaign_status";

/// One field due in a run: where its value comes from and which sheet field
/// receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct DueField {
    /// The configured field.
    pub field: WriteBackField,
    /// The table read: `None` for `on_match` fields (the destination table).
    pub table: Option<String>,
}

impl DueField {
    /// The sheet field written (the target's column part).
    pub fn target(&self) -> &str {
        self.field.target_column()
    }
}

/// The fields of `job` due at `frequency` (every field when `None`), checked
/// against the sheet's write-back columns.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming what to fix: no `write_back:` block,
/// write-back disabled, no `sheet:` source or no `sheet.write_back.columns`,
/// a target that is not a write-back column, a source without a table.
pub fn due_fields(job: &SyncJob, frequency: Option<Frequency>) -> Result<Vec<DueField>, Error> {
    let wb = job.write_back.as_ref().ok_or_else(|| {
        Error::invalid_input(
            "the job has no `write_back:` block; add one (see docs/configuration.md)",
        )
    })?;
    if !wb.enabled {
        return Err(Error::invalid_input(
            "`write_back.enabled` is false: set it to true to write figures back",
        ));
    }
    let sheet = job.sheet.as_ref().ok_or_else(|| {
        Error::invalid_input("write-back writes into the job's `sheet:`; this job has none")
    })?;
    let columns = sheet.write_back.as_ref().ok_or_else(|| {
        Error::invalid_input(
            "write-back needs `sheet.write_back.columns` (e.g. `{J: actual_spend, K: pacing_percent}`) \
             to know which column receives which field",
        )
    })?;
    let mut fields: Vec<WriteBackField> = wb
        .fields
        .iter()
        .filter(|f| frequency.is_none_or(|q| f.frequency == q))
        .filter(|f| f.field_map().plan(Flow::ToCrm).is_some())
        .cloned()
        .collect();
    if frequency == Some(Frequency::OnMatch) && fields.is_empty() {
        for name in [CAMPAIGN_ID_FIELD, CAMPAIGN_STATUS_FIELD] {
            if columns.columns.column(name).is_some() {
                fields.push(WriteBackField {
                    source: format!("{}.{name}", job.destination.table),
                    target: format!("{}.{name}", job.object),
                    frequency: Frequency::OnMatch,
                    direction: Default::default(),
                    transform: Vec::new(),
                });
            }
        }
    }
    let mut out = Vec::with_capacity(fields.len());
    let mut targets = HashSet::new();
    for field in fields {
        let target = field.target_column().to_owned();
        if columns.columns.column(&target).is_none() {
            return Err(Error::invalid_input(format!(
                "write-back target {:?} is not in `sheet.write_back.columns`; add a column for it \
                 (e.g. `L: {target}`)",
                field.target
            )));
        }
        if !targets.insert(target.clone()) {
            return Err(Error::invalid_input(format!(
                "two write-back fields write {target:?} at the same run; keep one"
            )));
        }
        let table = if field.frequency == Frequency::OnMatch {
            None
        } else {
            Some(field.source_table().map(str::to_owned).ok_or_else(|| {
                Error::invalid_input(format!(
                    "write-back source {:?} names no table; write it as `table.column` \
                     (e.g. `pacing_snapshots.actual_spend`)",
                    field.source
                ))
            })?)
        };
        out.push(DueField { field, table });
    }
    Ok(out)
}

/// What a run needs besides the job and its connections.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct WriteBackOptions {
    /// The campaigns `campaign_status` is looked up in on match (by
    /// `campaign_id`); the job's `campaigns.file` when `None`.
    pub campaigns: Option<Vec<Campaign>>,
}

/// One cell written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellChange {
    /// The row key.
    pub key: String,
    /// The one-based sheet row, as located just before the write (`None` for
    /// an appended row).
    pub row: Option<u32>,
    /// The sheet field.
    pub field: String,
    /// The cell before (`None`: empty).
    pub old: Option<String>,
    /// The cell after (`None`: cleared).
    pub new: Option<String>,
    /// The cell had been edited in the sheet since the last write-back and
    /// the policy let the platform value overwrite it.
    pub overwrote_edit: bool,
}

/// A cell edited in the sheet and left alone under the policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeptEdit {
    /// The row key.
    pub key: String,
    /// The one-based sheet row.
    pub row: u32,
    /// The sheet field.
    pub field: String,
    /// The sheet's value (kept).
    pub sheet_value: Option<String>,
    /// The platform's value (not written).
    pub platform_value: Option<String>,
    /// The policy that kept it (`crm_wins`, `manual`).
    pub policy: String,
}

/// A row that could not be written, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RejectedRow {
    /// The row key (empty when the source row had none).
    pub key: String,
    /// Why.
    pub reason: String,
}

/// What one write-back run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WriteBackReport {
    /// The run's id (a sync run of the [`STATE_PROVIDER`] connection; the
    /// audit entries carry it).
    pub run_id: String,
    /// The frequency run (`None`: every field).
    pub frequency: Option<Frequency>,
    /// The sheet fields considered.
    pub fields: Vec<String>,
    /// Platform rows with a key (one per key).
    pub source_rows: usize,
    /// The cells written.
    pub changed: Vec<CellChange>,
    /// Cells whose platform value was already written (or already in the sheet).
    pub unchanged_cells: usize,
    /// Cells edited in the sheet while the platform value stayed the same:
    /// left as they are (only one side changed).
    pub sheet_edits_left: usize,
    /// Cells edited in the sheet, changed on the platform, and kept by the policy.
    pub kept: Vec<KeptEdit>,
    /// Keys with figures but no row in the sheet (not appended).
    pub missing: Vec<String>,
    /// Keys appended as new rows (`sheet.write_back.append_new_rows`).
    pub appended: Vec<String>,
    /// Rows not written.
    pub rejected: Vec<RejectedRow>,
    /// Sheet write calls made (one `values.batchUpdate` per batch).
    pub write_calls: usize,
    /// Audit entries recorded.
    pub audit_entries: usize,
    /// Rows that received at least one cell (counted before keys are
    /// masked, see the [module docs](self)).
    pub rows_written: usize,
}

impl WriteBackReport {
    /// Masks the keys when `key_field` holds personal data, and the sheet
    /// and platform values of the personal fields (see the
    /// [module docs](self)).
    fn mask_pii(&mut self, pii: &PiiFields, key_field: &str) {
        if pii.is_empty() {
            return;
        }
        let key_is_pii = pii.contains(key_field);
        let key = |k: &mut String| {
            if key_is_pii {
                *k = mask_str(k, PiiKind::Auto);
            }
        };
        let value = |field: &str, v: &mut Option<String>| {
            if pii.contains(field)
                && let Some(text) = v
            {
                *text = mask_str(text, PiiKind::Auto);
            }
        };
        for c in &mut self.changed {
            key(&mut c.key);
            value(&c.field, &mut c.old);
            value(&c.field, &mut c.new);
        }
        for k in &mut self.kept {
            key(&mut k.key);
            value(&k.field, &mut k.sheet_value);
            value(&k.field, &mut k.platform_value);
        }
        self.missing.iter_mut().for_each(key);
        self.appended.iter_mut().for_each(key);
        for r in &mut self.rejected {
            if key_is_pii && r.key.trim().chars().count() >= 3 {
                let shown = mask_str(&r.key, PiiKind::Auto);
                r.reason = r.reason.replace(&r.key, &shown);
                r.key = shown;
            }
        }
    }
}

impl fmt::Display for WriteBackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let freq = self.frequency.map_or("all", Frequency::as_str);
        writeln!(
            f,
            "write-back {} ({freq}: {}): {} platform rows, {} cells written in {} rows ({} write calls), {} unchanged",
            self.run_id,
            self.fields.join(", "),
            self.source_rows,
            self.changed.len(),
            self.rows_written,
            self.write_calls,
            self.unchanged_cells
        )?;
        for c in &self.changed {
            let row = c
                .row
                .map_or_else(|| "new row".to_owned(), |r| format!("row {r}"));
            writeln!(
                f,
                "  {} {row} {}: {} -> {}{}",
                c.key,
                c.field,
                c.old.as_deref().unwrap_or("(empty)"),
                c.new.as_deref().unwrap_or("(empty)"),
                if c.overwrote_edit {
                    " (overwrote a sheet edit)"
                } else {
                    ""
                }
            )?;
        }
        for k in &self.kept {
            writeln!(
                f,
                "  kept sheet edit {} row {} {}: {} (platform {}; {})",
                k.key,
                k.row,
                k.field,
                k.sheet_value.as_deref().unwrap_or("(empty)"),
                k.platform_value.as_deref().unwrap_or("(empty)"),
                k.policy
            )?;
        }
        if self.sheet_edits_left > 0 {
            writeln!(
                f,
                "  {} cells edited in the sheet left as they are (platform value unchanged)",
                self.sheet_edits_left
            )?;
        }
        if !self.missing.is_empty() {
            writeln!(
                f,
                "  {} keys not in the sheet (not appended): {}",
                self.missing.len(),
                self.missing.join(", ")
            )?;
        }
        if !self.appended.is_empty() {
            writeln!(f, "  appended: {}", self.appended.join(", "))?;
        }
        for r in &self.rejected {
            writeln!(f, "  rejected {}: {}", r.key, r.reason)?;
        }
        write!(f, "  {} audit entries", self.audit_entries)
    }
}

/// The canonical text of a cell for comparing and digesting: numbers (and
/// text holding one) normalised (`1234.50` = `1234.5`), text trimmed, empty
/// as `None`.
fn canonical(cell: &Cell) -> Option<String> {
    if cell.is_blank() {
        return None;
    }
    if let Cell::Bool(b) = cell {
        return Some(b.to_string());
    }
    match cell_to_value(cell, ColumnType::Decimal { scale: None }) {
        Ok(Value::Decimal(d)) => Some(d.normalize().to_string()),
        _ => Some(cell.to_string().trim().to_owned()),
    }
}

/// A digest of a canonical value (hex, 128 bits).
fn digest(canonical: Option<&str>) -> String {
    let mut h = Sha256::new();
    match canonical {
        None => h.update(b"\x00"),
        Some(s) => {
            h.update(b"\x01");
            h.update(s.as_bytes());
        }
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy_name(p: ConflictPolicy) -> &'static str {
    match p {
        ConflictPolicy::SourceWins => "platform_wins",
        ConflictPolicy::TargetWins => "crm_wins",
        other => other.as_str(),
    }
}

fn checkpoint_object(key: &str) -> String {
    format!("writeback:{key}")
}

/// The digests last written for one key, by field.
fn stored_digests(cursor: Option<Cursor>) -> BTreeMap<String, String> {
    cursor
        .as_ref()
        .and_then(|c| c.as_json().get("fields"))
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn digests_cursor(d: &BTreeMap<String, String>) -> Cursor {
    Cursor::new(json!({ "v": 1, "fields": d }))
}

fn table_for(kind: DatabaseKind, table: &str) -> String {
    match (kind, table.rsplit_once('.')) {
        (DatabaseKind::Sqlite, Some((_, t))) => t.to_owned(),
        _ => table.to_owned(),
    }
}

/// Reads `table` whole, one record per key (the latest `updated_at` wins:
/// the source reads in that order).
async fn read_table(
    db: &SqlConnector,
    table: &str,
    key_field: &str,
) -> Result<BTreeMap<String, Record>, Error> {
    let mut out = BTreeMap::new();
    let mut pages = db.read(ReadRequest::full(table));
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            e.with_context("table", table)
                .with_operation("writeback.read_source")
        })?;
        for change in page.changes {
            if let Change::Upsert(r) = change
                && let Some(k) = record_key(&r, key_field)
                && !k.is_empty()
            {
                out.insert(k, r);
            }
        }
    }
    Ok(out)
}

/// The platform values per key and sheet field.
async fn platform_values(
    job: &SyncJob,
    due: &[DueField],
    figures: &SqlConnector,
    campaigns: &[Campaign],
    key_field: &str,
    report: &mut WriteBackReport,
) -> Result<BTreeMap<String, Vec<(String, Value)>>, Error> {
    let kind = figures.database_kind();
    let mut tables: BTreeMap<Option<String>, Vec<&DueField>> = BTreeMap::new();
    for d in due {
        tables.entry(d.table.clone()).or_default().push(d);
    }
    let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (table, fields) in tables {
        let rows = match &table {
            Some(t) => read_table(figures, &table_for(kind, t), key_field).await?,
            None => {
                let status: HashMap<String, String> = campaigns
                    .iter()
                    .filter_map(|c| Some((c.campaign_id.to_string(), c.status.clone()?)))
                    .collect();
                let mut rows = read_table(figures, &job.destination.table, key_field).await?;
                rows.retain(|_, r| {
                    r.text(MATCH_STATUS_FIELD) == Some("matched")
                        && r.get(CAMPAIGN_ID_FIELD).is_some_and(|v| !v.is_blank())
                });
                for r in rows.values_mut() {
                    let known = r.get(CAMPAIGN_STATUS_FIELD).is_some_and(|v| !v.is_blank());
                    if !known
                        && let Some(s) = r
                            .get(CAMPAIGN_ID_FIELD)
                            .map(ToString::to_string)
                            .and_then(|id| status.get(&id))
                    {
                        r.set(CAMPAIGN_STATUS_FIELD, s.clone());
                    }
                }
                rows
            }
        };
        for (key, record) in rows {
            for d in &fields {
                let map = d.field.field_map();
                let Some((read, write, reversed)) = map.plan(Flow::ToCrm) else {
                    continue;
                };
                let Some(input) = record.get_path(read) else {
                    continue;
                };
                match map.transform_value(input, reversed) {
                    Ok(v) => out
                        .entry(key.clone())
                        .or_default()
                        .push((write.to_owned(), v)),
                    Err((t, e)) => report.rejected.push(RejectedRow {
                        key: key.clone(),
                        reason: format!("{}: transform {t} failed: {e}", d.field.source),
                    }),
                }
            }
        }
    }
    report.source_rows = out.len();
    Ok(out)
}

/// The sheet as it is now: key -> rows, and each row's write-back cells by field.
struct SheetNow {
    rows: HashMap<String, Vec<u32>>,
    cells: HashMap<u32, HashMap<String, Cell>>,
}

async fn read_sheet(sheet: &SheetsConnector) -> Result<SheetNow, Error> {
    let cfg = sheet.config();
    let wb = cfg
        .write_back
        .as_ref()
        .ok_or_else(|| Error::invalid_input("`sheet.write_back.columns` is not configured"))?;
    let key_col = cfg.column_mapping.column(&cfg.key_field).ok_or_else(|| {
        Error::invalid_input(format!(
            "the key {:?} is not a mapped column of `sheet.column_mapping`",
            cfg.key_field
        ))
    })?;
    let first = wb.columns.iter().map(|(i, _)| i).min().unwrap_or(0);
    let last = wb.columns.width().max(1) - 1;
    let resolved = sheet.resolve_sheet(cfg.sheet_id).await?;
    let start = cfg.data_start_row;
    let ranges = vec![
        A1Range::rows(resolved.title.clone(), key_col, key_col, start, None).to_string(),
        A1Range::rows(resolved.title.clone(), first, last, start, None).to_string(),
    ];
    let resp = sheet
        .client()
        .batch_get(
            &ranges,
            ValueRenderOption::UnformattedValue,
            DateTimeRenderOption::SerialNumber,
        )
        .await
        .map_err(|e| e.with_operation("writeback.read_sheet"))?;
    let mut vrs = resp.value_ranges.into_iter();
    let keys = vrs.next().map(|v| v.values).unwrap_or_default();
    let current = vrs.next().map(|v| v.values).unwrap_or_default();
    let mut rows: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, r) in keys.iter().enumerate() {
        if let Some(c) = r.first().filter(|c| !c.is_blank()) {
            rows.entry(c.to_string().trim().to_owned())
                .or_default()
                .push(start + i as u32);
        }
    }
    let mut cells = HashMap::new();
    for (i, r) in current.into_iter().enumerate() {
        let by_field: HashMap<String, Cell> = wb
            .columns
            .iter()
            .filter_map(|(col, f)| r.get(col - first).map(|c| (f.to_owned(), c.clone())))
            .collect();
        cells.insert(start + i as u32, by_field);
    }
    Ok(SheetNow { rows, cells })
}

/// One row's planned write.
struct RowPlan {
    key: String,
    row: Option<u32>,
    /// `(field, value, old canonical, overwrote an edit)`.
    cells: Vec<(String, Value, Option<String>, bool)>,
    /// The digests to store once the row is written.
    digests: BTreeMap<String, String>,
}

/// Writes the fields of `job` due at `frequency` (every field when `None`)
/// from `figures` (the database holding the source tables and the
/// destination table) into `sheet`, keeping digests, runs and audit
/// entries in `store`. See the [module docs](self).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a job that cannot write back (see
/// [`due_fields`]); the source's, the sheet's or the store's error when one
/// of them fails. Rows written before the failure keep their digests, so
/// the next run carries on.
pub async fn write_back(
    job: &SyncJob,
    frequency: Option<Frequency>,
    sheet: &SheetsConnector,
    figures: &SqlConnector,
    store: &StateStore,
    options: &WriteBackOptions,
) -> Result<WriteBackReport, Error> {
    let due = due_fields(job, frequency)?;
    let pii = job.pii_fields();
    let sealing = crate::pii::seal_in(store.clone(), &pii);
    let store = &sealing;
    let conn = store.ensure_connection(STATE_PROVIDER, &job.name).await?;
    let run = store
        .start_run(&conn, &job.object, SyncType::Delta, SyncDirection::ToCrm)
        .await?;
    let mut report = WriteBackReport {
        run_id: run.as_str().to_owned(),
        frequency,
        fields: due.iter().map(|d| d.target().to_owned()).collect(),
        ..WriteBackReport::default()
    };
    let outcome = run_inner(
        job,
        &due,
        sheet,
        figures,
        store,
        &conn,
        options,
        &mut report,
    )
    .await;
    report.rows_written = report
        .changed
        .iter()
        .map(|c| c.key.as_str())
        .collect::<HashSet<_>>()
        .len();
    report.mask_pii(&pii, &sheet.config().key_field);
    let processed = (report.changed.len() + report.unchanged_cells + report.kept.len()) as i64;
    let failed = report.rejected.len() as i64;
    let _ = store
        .record_run_progress(&run, processed, report.changed.len() as i64, failed)
        .await;
    match outcome {
        Ok(()) => {
            let errors = serde_json::to_value(&report.rejected).unwrap_or_default();
            store
                .finish_run(&run, RunStatus::Completed, &errors)
                .await?;
            Ok(report)
        }
        Err(e) => {
            let _ = store
                .finish_run(&run, RunStatus::Failed, &json!([e.to_string()]))
                .await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    job: &SyncJob,
    due: &[DueField],
    sheet: &SheetsConnector,
    figures: &SqlConnector,
    store: &StateStore,
    conn: &ConnectionId,
    options: &WriteBackOptions,
    report: &mut WriteBackReport,
) -> Result<(), Error> {
    let Some(wb) = job.write_back.as_ref() else {
        return Err(Error::invalid_input("the job has no `write_back:` block"));
    };
    let cfg = sheet.config();
    let key_field = cfg.key_field.clone();
    let append = cfg.write_back.as_ref().is_some_and(|w| w.append_new_rows);
    let campaigns = match (&options.campaigns, due.iter().any(|d| d.table.is_none())) {
        (Some(list), _) => list.clone(),
        (None, true) => match job.campaigns.as_ref().and_then(|c| c.file.as_ref()) {
            Some(path) => crate::campaigns::from_csv(path)?,
            None => Vec::new(),
        },
        (None, false) => Vec::new(),
    };
    let values = platform_values(job, due, figures, &campaigns, &key_field, report).await?;
    if values.is_empty() {
        return Ok(());
    }
    let now = read_sheet(sheet).await?;

    // Decide per key and field.
    let mut plans: Vec<RowPlan> = Vec::new();
    let mut digests_only: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut kept_audit: Vec<KeptEdit> = Vec::new();
    for (key, fields) in values {
        let rows = now.rows.get(&key).map_or(&[][..], Vec::as_slice);
        let stored = stored_digests(store.checkpoint(conn, &checkpoint_object(&key)).await?);
        let mut digests = stored.clone();
        match rows {
            [] if append => {
                let cells = fields
                    .iter()
                    .map(|(f, v)| (f.clone(), v.clone(), None, false))
                    .collect();
                for (f, v) in &fields {
                    digests.insert(f.clone(), digest(canonical(&value_to_cell(v)).as_deref()));
                }
                plans.push(RowPlan {
                    key,
                    row: None,
                    cells,
                    digests,
                });
            }
            [] => report.missing.push(key),
            [row] => {
                let row = *row;
                let mut cells = Vec::new();
                for (field, value) in fields {
                    let new_c = canonical(&value_to_cell(&value));
                    let d_new = digest(new_c.as_deref());
                    let sheet_cell = now
                        .cells
                        .get(&row)
                        .and_then(|c| c.get(&field))
                        .cloned()
                        .unwrap_or_default();
                    let sheet_c = canonical(&sheet_cell);
                    let d_sheet = digest(sheet_c.as_deref());
                    let last = stored.get(&field);
                    if last == Some(&d_new) {
                        if d_sheet != d_new {
                            report.sheet_edits_left += 1;
                        } else {
                            report.unchanged_cells += 1;
                        }
                        continue;
                    }
                    if sheet_c == new_c {
                        // Already there (written by hand, or by a run that
                        // stopped before keeping its digests).
                        report.unchanged_cells += 1;
                        digests.insert(field, d_new);
                        continue;
                    }
                    let edited = match last {
                        Some(d) => *d != d_sheet,
                        None => sheet_c.is_some(),
                    };
                    let policy = wb.conflict_resolution.policy_for(&field);
                    if edited
                        && matches!(policy, ConflictPolicy::TargetWins | ConflictPolicy::Manual)
                    {
                        let kept = KeptEdit {
                            key: key.clone(),
                            row,
                            field: field.clone(),
                            sheet_value: sheet_c,
                            platform_value: new_c,
                            policy: policy_name(policy).to_owned(),
                        };
                        if policy == ConflictPolicy::TargetWins {
                            // Reported once: the platform value is taken as seen.
                            digests.insert(field, d_new);
                        }
                        kept_audit.push(kept.clone());
                        report.kept.push(kept);
                        continue;
                    }
                    digests.insert(field.clone(), d_new);
                    cells.push((field, value, sheet_c, edited));
                }
                if cells.is_empty() {
                    if digests != stored {
                        digests_only.push((key, digests));
                    }
                } else {
                    plans.push(RowPlan {
                        key,
                        row: Some(row),
                        cells,
                        digests,
                    });
                }
            }
            many => {
                let rows: Vec<String> = many.iter().map(u32::to_string).collect();
                report.rejected.push(RejectedRow {
                    key,
                    reason: format!(
                        "the key is in several rows ({}); fix the sheet",
                        rows.join(", ")
                    ),
                });
            }
        }
    }

    let actor = format!("sync:{}", job.name);
    let object = job.object.clone();
    let policy_of = |field: &str| policy_name(wb.conflict_resolution.policy_for(field));
    let freq = report.frequency.map_or("all", Frequency::as_str).to_owned();

    // Digests of cells already right, and audit entries of kept edits.
    if !digests_only.is_empty() || (wb.audit_trail && !kept_audit.is_empty()) {
        let mut tx = store.begin().await?;
        for (key, d) in &digests_only {
            tx.save_checkpoint(conn, &checkpoint_object(key), &digests_cursor(d))
                .await?;
        }
        if wb.audit_trail {
            for k in &kept_audit {
                let entry = NewAuditEntry::new(actor.clone(), "write_back_kept")
                    .record(object.clone(), k.key.clone())
                    .connection(conn.clone())
                    .values(
                        Some(json!({ k.field.clone(): k.sheet_value })),
                        Some(json!({
                            "values": { k.field.clone(): k.platform_value },
                            "policy": k.policy,
                            "run_id": report.run_id,
                            "frequency": freq,
                            "kept": [k.field],
                        })),
                    );
                tx.audit(&entry).await?;
                report.audit_entries += 1;
            }
        }
        tx.commit().await?;
    }

    // Writes, a sink batch at a time.
    let batch = sheet.max_batch(&object).max(1);
    for chunk in plans.chunks(batch) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|p| {
                let mut r = Record::new().with(key_field.as_str(), p.key.as_str());
                for (f, v, _, _) in &p.cells {
                    r.set(f.as_str(), v.clone());
                }
                r
            })
            .collect();
        report.write_calls += 1;
        let outcomes = sheet
            .write(&object, WriteBatch::upsert(key_field.clone(), records))
            .await
            .map_err(|e| e.with_operation("writeback.write"))?;
        let mut rejected: HashMap<usize, String> = HashMap::new();
        let mut created: HashSet<usize> = HashSet::new();
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                WriteOutcome::Rejected { index, error } => {
                    rejected.insert(*index, error.to_string());
                }
                WriteOutcome::Created(_) => {
                    created.insert(i);
                }
                _ => {}
            }
        }
        let mut tx = store.begin().await?;
        for (i, p) in chunk.iter().enumerate() {
            if let Some(reason) = rejected.get(&i) {
                report.rejected.push(RejectedRow {
                    key: p.key.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
            if p.row.is_none() && created.contains(&i) {
                report.appended.push(p.key.clone());
            }
            tx.save_checkpoint(
                conn,
                &checkpoint_object(&p.key),
                &digests_cursor(&p.digests),
            )
            .await?;
            let mut old = serde_json::Map::new();
            let mut new = serde_json::Map::new();
            let mut policies = serde_json::Map::new();
            let mut overwrote = Vec::new();
            for (f, v, was, edited) in &p.cells {
                let now_c = canonical(&value_to_cell(v));
                old.insert(f.clone(), json!(was));
                new.insert(f.clone(), json!(now_c));
                policies.insert(f.clone(), json!(policy_of(f)));
                if *edited {
                    overwrote.push(f.clone());
                }
                report.changed.push(CellChange {
                    key: p.key.clone(),
                    row: p.row,
                    field: f.clone(),
                    old: was.clone(),
                    new: now_c,
                    overwrote_edit: *edited,
                });
            }
            if wb.audit_trail {
                let default_policy = policy_name(wb.conflict_resolution.default);
                let entry = NewAuditEntry::new(actor.clone(), "write_back")
                    .record(object.clone(), p.key.clone())
                    .connection(conn.clone())
                    .values(
                        Some(serde_json::Value::Object(old)),
                        Some(json!({
                            "values": new,
                            "policy": default_policy,
                            "field_policies": policies,
                            "run_id": report.run_id,
                            "frequency": freq,
                            "row": p.row,
                            "overwrote_sheet_edits": overwrote,
                        })),
                    );
                tx.audit(&entry).await?;
                report.audit_entries += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Values that replace parts of a job for [`run_write_back_job`] (the
/// example and tests point a job at the simulator this way).
#[derive(Default)]
#[non_exhaustive]
pub struct WriteBackOverrides {
    /// The Google Sheets API base URL (a simulator's).
    pub sheet_base_url: Option<String>,
    /// Google credentials instead of `crm.google_sheets.credentials`.
    pub google_credentials: Option<GoogleCredentials>,
    /// The database of the figures (and of the destination table) instead
    /// of `destination.url`.
    pub database_url: Option<String>,
    /// The state store instead of `state.url` (else the database's).
    pub state_url: Option<String>,
    /// Campaigns instead of the job's `campaigns.file`.
    pub campaigns: Option<Vec<Campaign>>,
    /// The folder relative paths are taken from (default: the current one).
    pub base_dir: Option<PathBuf>,
}

fn connect_error(e: Error, what: &str) -> Error {
    if e.kind() == &ErrorKind::InvalidInput {
        return e;
    }
    Error::new(
        e.kind().clone(),
        format!(
            "cannot connect to the {what} database ({e}); check the URL, that the server runs \
             and accepts this user (a relative SQLite path is taken from the job file's folder)"
        ),
    )
}

/// Opens the job's sheet (with `sheet.write_back`), its database and state
/// store as `crm-sync run` does, and runs [`write_back`].
///
/// # Errors
/// [`RunError::Setup`] for a job that cannot write back, credentials or
/// connections that fail; [`RunError::Run`] when the run stopped part-way
/// (rows written so far keep their digests).
pub async fn run_write_back_job(
    job: &SyncJob,
    frequency: Option<Frequency>,
    overrides: WriteBackOverrides,
) -> Result<WriteBackReport, RunError> {
    let base = overrides
        .base_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    due_fields(job, frequency).map_err(RunError::Setup)?;
    let sheet = sheets_connector(
        job,
        overrides.sheet_base_url.as_deref(),
        overrides.google_credentials,
        &base,
    )
    .map_err(RunError::Setup)?
    .ok_or_else(|| RunError::Setup(Error::invalid_input("the job has no `sheet:` source")))?;
    sheet.check().await.map_err(|e| {
        RunError::Setup(Error::new(
            e.kind().clone(),
            format!(
                "cannot open the sheet: {e}; check the spreadsheet id, sheet name and credentials"
            ),
        ))
    })?;
    let db_url = match overrides.database_url {
        Some(u) => u,
        None => interpolate(
            "destination.url",
            job.destination.url.expose_secret(),
            from_process,
        )
        .map_err(RunError::Setup)?,
    };
    let db_url = with_create_mode(resolve_sqlite_path(&db_url, &base));
    let key_field = job
        .sheet
        .as_ref()
        .map_or("booking_id", |s| s.key_field.as_str());
    let db_config = SqlConfig::builder()
        .url(db_url.clone())
        .primary_key([key_field])
        .build()
        .map_err(|e| RunError::Setup(e.into()))?;
    let db = SqlConnector::connect(&db_config)
        .await
        .map_err(|e| RunError::Setup(connect_error(e, "write-back source")))?;
    let state_url = match (overrides.state_url, &job.state.url) {
        (Some(u), _) => u,
        (None, Some(u)) => with_create_mode(resolve_sqlite_path(
            &interpolate("state.url", u.expose_secret(), from_process).map_err(RunError::Setup)?,
            &base,
        )),
        (None, None) => db_url,
    };
    // `write_back` seals the job's personal fields in this store.
    let store = StateStore::open_url(&state_url, state_key(job)?)
        .await
        .map_err(|e| RunError::Setup(connect_error(e, "state")))?;
    let options = WriteBackOptions {
        campaigns: overrides.campaigns,
    };
    let out = write_back(job, frequency, &sheet, &db, &store, &options).await;
    db.close().await;
    store.close().await;
    out.map_err(|e| {
        if e.kind() == &ErrorKind::InvalidInput {
            RunError::Setup(e)
        } else {
            RunError::Run(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_mask_personal_keys_and_values() {
        let cell = |key: &str, field: &str, old: &str, new: &str| CellChange {
            key: key.to_owned(),
            row: None,
            field: field.to_owned(),
            old: Some(old.to_owned()),
            new: Some(new.to_owned()),
            overwrote_edit: false,
        };
        let mut report = WriteBackReport {
            changed: vec![
                cell(
                    "ann@example.com",
                    "email",
                    "old@example.com",
                    "new@example.com",
                ),
                cell("amy@example.com", "actual_spend", "10", "12.5"),
            ],
            missing: vec!["bob@example.com".into()],
            rejected: vec![RejectedRow {
                key: "cyd@example.com".into(),
                reason: "cyd@example.com is in several rows".into(),
            }],
            rows_written: 2,
            ..WriteBackReport::default()
        };
        let pii = PiiFields::new().with("email");
        report.mask_pii(&pii, "email");
        let text = format!("{report}\n{}", serde_json::to_string(&report).unwrap());
        for clear in ["ann@", "amy@", "bob@", "cyd@", "new@", "old@"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        assert!(
            text.contains("a***@example.com new row email: o***@example.com -> n***@example.com")
        );
        // Two rows, though both keys mask alike; a figure stays readable.
        assert!(text.contains("in 2 rows"), "{text}");
        assert!(text.contains("actual_spend: 10 -> 12.5"), "{text}");
        assert!(text.contains("rejected c***@example.com: c***@example.com is in several rows"));
        // Without personal fields nothing changes.
        let mut plain = report.clone();
        plain.missing = vec!["bob@example.com".into()];
        plain.mask_pii(&PiiFields::new(), "email");
        assert_eq!(plain.missing, ["bob@example.com"]);
    }
}
