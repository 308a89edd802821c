//! The sink: batched upserts keyed by an external id, one transaction per
//! batch, one outcome per record.
//!
//! 1. Every record is checked against the table's columns before anything is
//!    written: an unknown field, a value that does not fit its column (text
//!    into a numeric column, 300 characters into `VARCHAR(3)`, a decimal with
//!    more places than the column keeps) or a missing key rejects that record
//!    only. Text bound for PostgreSQL loses its NUL characters, which
//!    PostgreSQL cannot store.
//! 2. The rest are written in one transaction:
//!    - PostgreSQL: `INSERT ... SELECT FROM UNNEST($1::text[], ...) ON
//!      CONFLICT (key) DO UPDATE ... WHERE ROW(t.*) IS DISTINCT FROM
//!      ROW(EXCLUDED.*) RETURNING key, (xmax = 0)`: returned rows were created
//!      or updated; rows not returned were unchanged and not rewritten. From
//!      `copy_threshold` records the bulk path takes over: one query finds
//!      which keys are stored, new rows go straight into the table with
//!      `COPY`, stored rows go through a temporary staging table (`COPY`) and
//!      the same `ON CONFLICT` statement. (Staging every row would write each
//!      new row twice; if another writer inserts one of the "new" keys in
//!      between, the `COPY` fails on the unique key and step 3 takes over.)
//!    - MySQL and SQLite: the stored rows are read first (`FOR UPDATE` on
//!      MySQL) and compared; only new and changed rows are written with
//!      `INSERT ... ON DUPLICATE KEY UPDATE` / `ON CONFLICT DO UPDATE`.
//! 3. If the database still refuses the batch (a check or foreign-key
//!    constraint), the batch is rolled back and written again row by row,
//!    each row in a savepoint, so only the refused rows are rejected.
//!
//! A `synced_at` column, when the table has one, is owned by the sink: set
//! to the time of the write on created and updated rows, left alone on
//! unchanged ones, and ignored in incoming records.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_core::{
    Error, ErrorKind, Record, RecordId, Result, Sink, Value, WriteBatch, WriteOp, WriteOutcome,
};

use crate::client::SqlConnector;
use crate::config::DatabaseKind;
use crate::convert::{coerce, coerce_owned};
use crate::db::{Arg, DbError, Hints, Tx};
use crate::error::classify;
use crate::params::{quote_ident, quote_table};
use crate::schema::{ColumnInfo, TableInfo};

/// How one group of records (same fields) is written.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) table: Arc<TableInfo>,
    /// The columns written, in table order.
    pub(crate) columns: Vec<ColumnInfo>,
    /// Positions in `columns` of the key.
    pub(crate) key: Vec<usize>,
    /// Positions in `columns` compared to detect unchanged rows (all but the key).
    pub(crate) compare: Vec<usize>,
    /// Whether `synced_at` is set on written rows.
    pub(crate) synced_at: bool,
}

/// One record, checked and converted for its columns.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Position in the batch.
    pub(crate) index: usize,
    pub(crate) id: RecordId,
    /// Canonical text of the key (see [`key_string`]).
    pub(crate) key: String,
    /// Values in `Plan::columns` order.
    pub(crate) values: Vec<Value>,
}

/// What a write did to one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    Updated,
    Unchanged,
}

/// One key value as canonical text (decimals without trailing zeros).
pub(crate) fn key_part(v: &Value) -> String {
    match v {
        Value::Decimal(d) => d.normalize().to_string(),
        other => other.to_string(),
    }
}

/// A composite key as canonical text.
pub(crate) fn key_string(values: &[Value]) -> String {
    values
        .iter()
        .map(key_part)
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn reject(index: usize, error: Error) -> WriteOutcome {
    WriteOutcome::Rejected { index, error }
}

fn is_row_level(e: &DbError) -> bool {
    match e {
        DbError::Decode(_) => false,
        DbError::Sql(sql) => matches!(
            classify(sql).0,
            ErrorKind::InvalidInput | ErrorKind::Conflict | ErrorKind::Permanent
        ),
    }
}

/// Column positions of a table by name, built once per batch.
pub(crate) struct ColumnIndex<'t> {
    table: &'t TableInfo,
    by_name: HashMap<&'t str, usize>,
}

impl<'t> ColumnIndex<'t> {
    fn new(table: &'t TableInfo) -> Self {
        ColumnIndex {
            table,
            by_name: table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

impl SqlConnector {
    /// Checks and converts `record` for the table; `Err` is the rejection.
    /// Returns the positions of the columns written (in table order) and
    /// the prepared row.
    fn prepare(
        &self,
        cols: &ColumnIndex<'_>,
        key_cols: &[String],
        index: usize,
        record: Record,
    ) -> std::result::Result<(Vec<usize>, Prepared), Error> {
        let dialect = self.pool.kind();
        let table = cols.table;
        let mut slots: Vec<Option<Value>> = vec![None; table.columns.len()];
        let mut put = |name: &str, value: Value| -> std::result::Result<(), Error> {
            let Some(i) = cols.get(name) else {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    format!("table `{}` has no column `{name}`", table.name),
                )
                .with_context("field", name));
            };
            let v = coerce_owned(value, &table.columns[i], dialect).map_err(|msg| {
                Error::invalid_input(format!("`{name}`: {msg}")).with_context("field", name)
            })?;
            slots[i] = Some(v);
            Ok(())
        };
        let cursor = &self.cfg.cursor_column;
        let fill_cursor = record
            .updated_at
            .filter(|_| cols.get(cursor).is_some() && !record.fields.contains_key(cursor));
        let fill_key = match (&record.id, key_cols) {
            (Some(id), [k]) if !record.fields.contains_key(k) => Some(id.to_string()),
            _ => None,
        };
        let skip_synced = cols.get("synced_at").is_some();
        let width = record.fields.len() + 1;
        for (name, value) in record.fields {
            if skip_synced && name == "synced_at" {
                continue;
            }
            put(&name, value)?;
        }
        if let Some(at) = fill_cursor {
            put(cursor, Value::DateTime(at))?;
        }
        if let (Some(id), [k]) = (fill_key, key_cols) {
            put(k, Value::Text(id))?;
        }
        let mut key = Vec::with_capacity(key_cols.len());
        for k in key_cols {
            match cols.get(k).and_then(|i| slots[i].as_ref()) {
                Some(v) if !v.is_null() => key.push(v.clone()),
                _ => {
                    return Err(Error::invalid_input(format!("the key `{k}` has no value"))
                        .with_context("field", k));
                }
            }
        }
        let mut present = Vec::with_capacity(width);
        let mut values = Vec::with_capacity(width);
        for (i, slot) in slots.into_iter().enumerate() {
            if let Some(v) = slot {
                present.push(i);
                values.push(v);
            }
        }
        let (id, key) = if key.len() == 1 {
            let k = key_part(&key[0]);
            (RecordId::new(k.clone()), k)
        } else {
            (
                RecordId::new(key.iter().map(key_part).collect::<Vec<_>>().join(",")),
                key_string(&key),
            )
        };
        Ok((
            present,
            Prepared {
                index,
                id,
                key,
                values,
            },
        ))
    }

    fn plan(table: &Arc<TableInfo>, present: &[usize], key_cols: &[String]) -> Plan {
        let columns: Vec<ColumnInfo> = present.iter().map(|&i| table.columns[i].clone()).collect();
        let key = key_cols
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect::<Vec<_>>();
        let compare = (0..columns.len()).filter(|i| !key.contains(i)).collect();
        Plan {
            table: table.clone(),
            columns,
            key,
            compare,
            synced_at: table.column("synced_at").is_some(),
        }
    }

    async fn upsert_batch(
        &self,
        object: &str,
        key: &str,
        records: Vec<Record>,
    ) -> Result<Vec<WriteOutcome>> {
        let key_cols: Vec<String> = key.split(',').map(|k| k.trim().to_owned()).collect();
        let mut table = self.table_info(object, false).await?;
        // A field the cached description lacks may be a new column: look again once.
        let unknown = {
            let known = ColumnIndex::new(&table);
            records
                .iter()
                .any(|r| r.fields.keys().any(|f| known.get(f).is_none()))
        };
        if unknown {
            table = self.table_info(object, true).await?;
        }
        for k in &key_cols {
            if table.column(k).is_none() {
                return Err(Error::invalid_input(format!(
                    "upsert key `{k}` is not a column of `{object}`"
                ))
                .with_operation("sql.write"));
            }
        }
        if !table.is_unique_key(&key_cols) {
            return Err(Error::invalid_input(format!(
                "upsert key `{key}` of `{object}` has no unique index or primary key, \
                 so an upsert could create duplicates"
            ))
            .with_operation("sql.write"));
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = (0..records.len()).map(|_| None).collect();
        // Group records by the fields they carry: each group is one statement shape.
        let cols = ColumnIndex::new(&table);
        let mut groups: Vec<(Vec<usize>, Vec<Prepared>)> = Vec::new();
        let mut group_of: HashMap<Vec<usize>, usize> = HashMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let label = r.label(Some(&key_cols[0]), i);
            match self.prepare(&cols, &key_cols, i, r) {
                Ok((present, p)) => match group_of.get(&present) {
                    Some(&g) => groups[g].1.push(p),
                    None => {
                        group_of.insert(present.clone(), groups.len());
                        groups.push((present, vec![p]));
                    }
                },
                Err(e) => {
                    outcomes[i] = Some(reject(
                        i,
                        e.with_operation("sql.write").with_context("record", label),
                    ));
                }
            }
        }
        let plans: Vec<(Plan, Vec<Prepared>)> = groups
            .into_iter()
            .map(|(present, rows)| (Self::plan(&table, &present, &key_cols), rows))
            .collect();
        let now = Utc::now();
        let total: usize = plans.iter().map(|(_, r)| r.len()).sum();
        let bulk = total >= self.cfg.copy_threshold.max(1);
        let op = "sql.write";

        // First try: the whole batch in one transaction.
        let mut tx = self.begin(op).await?;
        let mut first: Vec<(usize, RecordId, Written)> = Vec::with_capacity(total);
        let mut failed = None;
        'groups: for (plan, rows) in &plans {
            for round in rounds(rows) {
                match write_rows(&mut tx, plan, &round, now, bulk).await {
                    Ok(w) => {
                        for (p, w) in round.iter().zip(w) {
                            first.push((p.index, p.id.clone(), w));
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break 'groups;
                    }
                }
            }
        }
        match failed {
            None => {
                tx.commit()
                    .await
                    .map_err(|e| e.into_error(op, &self.redactor))?;
                for (i, id, w) in first {
                    outcomes[i] = Some(outcome(id, w));
                }
            }
            Some(e) if is_row_level(&e) => {
                let _ = tx.rollback().await;
                // Second try: row by row, each in a savepoint.
                let mut tx = self.begin(op).await?;
                for (plan, rows) in &plans {
                    for round in rounds(rows) {
                        for p in round {
                            tx.savepoint()
                                .await
                                .map_err(|e| e.into_error(op, &self.redactor))?;
                            match write_rows(&mut tx, plan, &[p], now, false).await {
                                Ok(w) => {
                                    tx.release()
                                        .await
                                        .map_err(|e| e.into_error(op, &self.redactor))?;
                                    let w = w.first().copied().unwrap_or(Written::Unchanged);
                                    outcomes[p.index] = Some(outcome(p.id.clone(), w));
                                }
                                Err(e) if is_row_level(&e) => {
                                    tx.undo()
                                        .await
                                        .map_err(|e| e.into_error(op, &self.redactor))?;
                                    outcomes[p.index] = Some(reject(
                                        p.index,
                                        e.into_error(op, &self.redactor)
                                            .with_context("record", &p.id),
                                    ));
                                }
                                Err(e) => {
                                    let _ = tx.rollback().await;
                                    return Err(e.into_error(op, &self.redactor));
                                }
                            }
                        }
                    }
                }
                tx.commit()
                    .await
                    .map_err(|e| e.into_error(op, &self.redactor))?;
            }
            Some(e) => {
                let _ = tx.rollback().await;
                return Err(e
                    .into_error(op, &self.redactor)
                    .with_context("object", object));
            }
        }
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| {
                    reject(
                        i,
                        Error::new(ErrorKind::Permanent, "record was not written"),
                    )
                })
            })
            .collect())
    }

    async fn begin(&self, op: &'static str) -> Result<Tx> {
        self.pool
            .begin()
            .await
            .map_err(|e| e.into_error(op, &self.redactor))
    }

    /// Create, update or delete, row by row in savepoints.
    async fn row_by_row(&self, object: &str, batch: &WriteBatch) -> Result<Vec<WriteOutcome>> {
        let op = "sql.write";
        let dialect = self.pool.kind();
        let table = self.table_info(object, false).await?;
        let pk = table.primary_key.clone();
        if pk.is_empty() && !matches!(batch.op, WriteOp::Create) {
            return Err(Error::invalid_input(format!(
                "`{object}` has no primary key, so records cannot be addressed by id"
            ))
            .with_operation(op));
        }
        let mut out = Vec::with_capacity(batch.records.len());
        let cols = ColumnIndex::new(&table);
        let mut tx = self.begin(op).await?;
        for (i, r) in batch.records.iter().enumerate() {
            let prepared = match self.prepare(&cols, &pk, i, r.clone()) {
                Ok(p) => p,
                Err(e)
                    if matches!(batch.op, WriteOp::Create)
                        && pk.iter().any(|k| !r.fields.contains_key(k)) =>
                {
                    // Keys the database generates: prepare without them.
                    match self.prepare(&cols, &[], i, r.clone()) {
                        Ok(p) => p,
                        Err(_) => {
                            out.push(reject(i, e.with_operation(op)));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    out.push(reject(i, e.with_operation(op)));
                    continue;
                }
            };
            let (present, p) = prepared;
            let plan = Self::plan(&table, &present, &pk);
            tx.savepoint()
                .await
                .map_err(|e| e.into_error(op, &self.redactor))?;
            let res = match batch.op {
                WriteOp::Delete => delete_row(&mut tx, dialect, &plan, &p).await,
                WriteOp::Update => update_row(&mut tx, dialect, &plan, &p, Utc::now()).await,
                _ => create_row(&mut tx, dialect, &plan, &p, Utc::now()).await,
            };
            match res {
                Ok(o) => {
                    tx.release()
                        .await
                        .map_err(|e| e.into_error(op, &self.redactor))?;
                    out.push(match o {
                        Some(o) => o,
                        None => reject(
                            i,
                            Error::new(ErrorKind::NotFound, format!("no row with id {}", p.id))
                                .with_operation(op),
                        ),
                    });
                }
                Err(e) if is_row_level(&e) => {
                    tx.undo()
                        .await
                        .map_err(|e| e.into_error(op, &self.redactor))?;
                    out.push(reject(
                        i,
                        e.into_error(op, &self.redactor)
                            .with_context("record", &p.id),
                    ));
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e.into_error(op, &self.redactor));
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| e.into_error(op, &self.redactor))?;
        Ok(out)
    }
}

fn outcome(id: RecordId, w: Written) -> WriteOutcome {
    match w {
        Written::Created => WriteOutcome::Created(id),
        Written::Updated => WriteOutcome::Updated(id),
        Written::Unchanged => WriteOutcome::Unchanged(id),
    }
}

/// Splits rows so no key appears twice in one statement: round n holds the
/// n-th occurrence of each key, so later records of the same key apply after
/// earlier ones, as they would one by one.
fn rounds(rows: &[Prepared]) -> Vec<Vec<&Prepared>> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Vec<&Prepared>> = Vec::new();
    for p in rows {
        let n = seen.entry(p.key.as_str()).or_insert(0);
        if out.len() <= *n {
            out.push(Vec::new());
        }
        out[*n].push(p);
        *n += 1;
    }
    out
}

/// Writes rows with unique keys and says what happened to each.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
async fn write_rows(
    tx: &mut Tx,
    plan: &Plan,
    rows: &[&Prepared],
    now: DateTime<Utc>,
    bulk: bool,
) -> std::result::Result<Vec<Written>, DbError> {
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(t) => crate::postgres::upsert(t, plan, rows, now, bulk).await,
        #[allow(unreachable_patterns)]
        _ => compare_first(tx, plan, rows, now).await,
    }
}

/// MySQL and SQLite: read the stored rows, compare, write what differs.
async fn compare_first(
    tx: &mut Tx,
    plan: &Plan,
    rows: &[&Prepared],
    now: DateTime<Utc>,
) -> std::result::Result<Vec<Written>, DbError> {
    let dialect = tx_kind(tx);
    let table = quote_table(&plan.table.name, dialect);
    let key_cols: Vec<String> = plan
        .key
        .iter()
        .map(|&k| quote_ident(&plan.columns[k].name, dialect))
        .collect();
    let read_cols: Vec<usize> = plan
        .key
        .iter()
        .chain(plan.compare.iter())
        .copied()
        .collect();
    let select_list = read_cols
        .iter()
        .map(|&i| quote_ident(&plan.columns[i].name, dialect))
        .collect::<Vec<_>>()
        .join(", ");
    let hints: Hints = plan
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind.clone()))
        .collect();
    let mut stored: HashMap<String, Vec<Value>> = HashMap::with_capacity(rows.len());
    let per_select = (max_params(dialect) / plan.key.len().max(1)).clamp(1, 1000);
    for chunk in rows.chunks(per_select) {
        let one = if key_cols.len() == 1 {
            "?".to_owned()
        } else {
            format!("({})", vec!["?"; key_cols.len()].join(", "))
        };
        let lhs = if key_cols.len() == 1 {
            key_cols[0].clone()
        } else {
            format!("({})", key_cols.join(", "))
        };
        let sql = format!(
            "SELECT {select_list} FROM {table} WHERE {lhs} IN ({}){}",
            vec![one; chunk.len()].join(", "),
            if dialect == DatabaseKind::MySql {
                " FOR UPDATE"
            } else {
                ""
            }
        );
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|p| plan.key.iter().map(|&k| Arg::Val(p.values[k].clone())))
            .collect();
        for r in tx.fetch_all(&sql, &args, Some(&hints)).await? {
            let vals: Vec<Value> = read_cols
                .iter()
                .map(|&i| {
                    let c = &plan.columns[i];
                    let v = r.get(&c.name).cloned().unwrap_or(Value::Null);
                    // Canonicalise what is stored the way incoming values are.
                    coerce(&v, c, dialect).unwrap_or(v)
                })
                .collect();
            let key = key_string(&vals[..plan.key.len()]);
            stored.insert(key, vals);
        }
    }
    let mut result = Vec::with_capacity(rows.len());
    let mut to_write: Vec<&Prepared> = Vec::new();
    for p in rows {
        let w = match stored.get(&p.key) {
            None => Written::Created,
            Some(vals) => {
                let same = plan
                    .compare
                    .iter()
                    .enumerate()
                    .all(|(j, &i)| vals[plan.key.len() + j] == p.values[i]);
                if same {
                    Written::Unchanged
                } else {
                    Written::Updated
                }
            }
        };
        if w != Written::Unchanged {
            to_write.push(p);
        }
        result.push(w);
    }
    let width = plan.columns.len() + usize::from(plan.synced_at);
    let per_insert = (max_params(dialect) / width.max(1)).clamp(1, 1000);
    for chunk in to_write.chunks(per_insert) {
        let sql = insert_sql(dialect, plan, chunk.len(), true);
        let mut args = Vec::with_capacity(chunk.len() * width);
        for p in chunk {
            args.extend(p.values.iter().cloned().map(Arg::Val));
            if plan.synced_at {
                args.push(Arg::time(now));
            }
        }
        tx.execute(&sql, &args).await?;
    }
    Ok(result)
}

fn tx_kind(tx: &Tx) -> DatabaseKind {
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(_) => DatabaseKind::Postgres,
        #[cfg(feature = "mysql")]
        Tx::MySql(_) => DatabaseKind::MySql,
        #[cfg(feature = "sqlite")]
        Tx::Sqlite(_) => DatabaseKind::Sqlite,
    }
}

fn max_params(dialect: DatabaseKind) -> usize {
    match dialect {
        #[cfg(feature = "mysql")]
        DatabaseKind::MySql => crate::mysql::MAX_PARAMS,
        #[cfg(feature = "sqlite")]
        DatabaseKind::Sqlite => crate::sqlite::MAX_PARAMS,
        _ => 65_535,
    }
}

#[cfg_attr(
    not(any(feature = "mysql", feature = "sqlite")),
    allow(unused_variables)
)]
fn insert_sql(dialect: DatabaseKind, plan: &Plan, rows: usize, upsert: bool) -> String {
    match dialect {
        #[cfg(feature = "mysql")]
        DatabaseKind::MySql => crate::mysql::insert_sql(plan, rows, upsert),
        #[cfg(feature = "sqlite")]
        DatabaseKind::Sqlite => crate::sqlite::insert_sql(plan, rows, upsert),
        _ => generic_insert_sql(dialect, plan, rows),
    }
}

/// A placeholder for parameter `n` (1-based), cast to the column's type on
/// PostgreSQL so text binds into enums, uuids and the like.
fn placeholder(dialect: DatabaseKind, n: usize, col: Option<&ColumnInfo>) -> String {
    match dialect {
        DatabaseKind::Postgres => match col {
            Some(c) => format!("CAST(${n} AS {})", c.sql_type),
            None => format!("${n}"),
        },
        _ => "?".to_owned(),
    }
}

fn generic_insert_sql(dialect: DatabaseKind, plan: &Plan, rows: usize) -> String {
    let mut cols: Vec<String> = plan
        .columns
        .iter()
        .map(|c| quote_ident(&c.name, dialect))
        .collect();
    if plan.synced_at {
        cols.push(quote_ident("synced_at", dialect));
    }
    let mut n = 0;
    let mut tuples = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut t = Vec::with_capacity(cols.len());
        for c in &plan.columns {
            n += 1;
            t.push(placeholder(dialect, n, Some(c)));
        }
        if plan.synced_at {
            n += 1;
            t.push(placeholder(dialect, n, None));
        }
        tuples.push(format!("({})", t.join(", ")));
    }
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_table(&plan.table.name, dialect),
        cols.join(", "),
        tuples.join(", ")
    )
}

/// A value as a bound argument, NULLs typed by the column (PostgreSQL).
fn arg_for(v: &Value, col: &ColumnInfo) -> Arg {
    if v.is_null() {
        Arg::Null(col.kind.field_type().value_type())
    } else {
        Arg::Val(v.clone())
    }
}

async fn create_row(
    tx: &mut Tx,
    dialect: DatabaseKind,
    plan: &Plan,
    p: &Prepared,
    now: DateTime<Utc>,
) -> std::result::Result<Option<WriteOutcome>, DbError> {
    let mut sql = generic_insert_sql(dialect, plan, 1);
    let mut args: Vec<Arg> = plan
        .columns
        .iter()
        .zip(&p.values)
        .map(|(c, v)| arg_for(v, c))
        .collect();
    if plan.synced_at {
        args.push(Arg::time(now));
    }
    let pk = &plan.table.primary_key;
    let has_pk = !pk.is_empty() && pk.iter().all(|k| plan.columns.iter().any(|c| &c.name == k));
    if has_pk || pk.is_empty() {
        tx.execute(&sql, &args).await?;
        return Ok(Some(WriteOutcome::Created(p.id.clone())));
    }
    // The database assigns the key: ask for it back.
    let id = if dialect == DatabaseKind::MySql {
        tx.execute(&sql, &args).await?;
        let r = tx
            .fetch_all("SELECT LAST_INSERT_ID() AS id", &[], None)
            .await?;
        r.first()
            .and_then(|r| r.get("id"))
            .map(|v| v.to_string())
            .unwrap_or_default()
    } else {
        sql.push_str(&format!(
            " RETURNING {}",
            pk.iter()
                .map(|k| quote_ident(k, dialect))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let r = tx.fetch_all(&sql, &args, None).await?;
        r.first()
            .map(|r| r.values().map(key_part).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    Ok(Some(WriteOutcome::Created(RecordId::new(id))))
}

fn where_key(dialect: DatabaseKind, plan: &Plan, first: usize) -> String {
    plan.key
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let c = &plan.columns[k];
            format!(
                "{} = {}",
                quote_ident(&c.name, dialect),
                placeholder(dialect, first + j, Some(c))
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn update_row(
    tx: &mut Tx,
    dialect: DatabaseKind,
    plan: &Plan,
    p: &Prepared,
    now: DateTime<Utc>,
) -> std::result::Result<Option<WriteOutcome>, DbError> {
    let mut sets = Vec::new();
    let mut args = Vec::new();
    for &i in &plan.compare {
        let c = &plan.columns[i];
        args.push(arg_for(&p.values[i], c));
        sets.push(format!(
            "{} = {}",
            quote_ident(&c.name, dialect),
            placeholder(dialect, args.len(), Some(c))
        ));
    }
    if plan.synced_at {
        args.push(Arg::time(now));
        sets.push(format!(
            "{} = {}",
            quote_ident("synced_at", dialect),
            placeholder(dialect, args.len(), None)
        ));
    }
    if sets.is_empty() {
        return Ok(Some(WriteOutcome::Unchanged(p.id.clone())));
    }
    let cond = where_key(dialect, plan, args.len() + 1);
    args.extend(plan.key.iter().map(|&k| Arg::Val(p.values[k].clone())));
    let sql = format!(
        "UPDATE {} SET {} WHERE {cond}",
        quote_table(&plan.table.name, dialect),
        sets.join(", ")
    );
    let n = tx.execute(&sql, &args).await?;
    Ok((n > 0).then(|| WriteOutcome::Updated(p.id.clone())))
}

async fn delete_row(
    tx: &mut Tx,
    dialect: DatabaseKind,
    plan: &Plan,
    p: &Prepared,
) -> std::result::Result<Option<WriteOutcome>, DbError> {
    let cond = where_key(dialect, plan, 1);
    let args: Vec<Arg> = plan
        .key
        .iter()
        .map(|&k| Arg::Val(p.values[k].clone()))
        .collect();
    let sql = format!(
        "DELETE FROM {} WHERE {cond}",
        quote_table(&plan.table.name, dialect)
    );
    let n = tx.execute(&sql, &args).await?;
    Ok((n > 0).then(|| WriteOutcome::Deleted(p.id.clone())))
}

#[async_trait]
impl Sink for SqlConnector {
    /// The configured `batch_size`.
    fn max_batch(&self, _object: &str) -> usize {
        self.cfg.batch_size
    }

    /// Writes a batch to the table named `object`, in one transaction.
    ///
    /// `WriteOp::Upsert { key }` takes a column (or `a,b` for a composite
    /// key) with a unique index. `Create`, `Update` and `Delete` address rows
    /// by the table's primary key, from the record's fields or its id.
    ///
    /// # Errors
    /// Only when the whole call failed: the table does not exist
    /// ([`ErrorKind::NotFound`]), the key is not unique, the connection
    /// failed ([`ErrorKind::Transient`]). Per-record problems are
    /// [`WriteOutcome::Rejected`].
    ///
    /// # Cancel safety
    /// The batch is one transaction, committed or rolled back as a whole.
    /// Dropping the future rolls it back, except on PostgreSQL's `COPY` path
    /// (upsert batches of at least `copy_threshold` records), which runs to
    /// its end in a task of its own because a `COPY` cannot be abandoned
    /// part-way without breaking its connection. Repeating an upsert batch
    /// is safe either way.
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let copy_path = self.pool.kind() == DatabaseKind::Postgres
            && matches!(batch.op, WriteOp::Upsert { .. })
            && batch.len() >= self.cfg.copy_threshold.max(1);
        if copy_path {
            // A COPY abandoned part-way leaves its connection out of step
            // with the server, and the pool would hand it out again. So the
            // COPY path runs to its end (commit or rollback) in its own task,
            // even if this future is dropped.
            let conn = self.clone();
            let object = object.to_owned();
            return tokio::spawn(async move { conn.write_now(&object, batch).await })
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Permanent, format!("the write task failed: {e}"))
                        .with_operation("sql.write")
                })?;
        }
        self.write_now(object, batch).await
    }
}

impl SqlConnector {
    async fn write_now(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        match &batch.op {
            WriteOp::Upsert { key } => self.upsert_batch(object, key, batch.records).await,
            _ => self.row_by_row(object, &batch).await,
        }
    }
}
