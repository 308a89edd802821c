//! The incremental source: the configured query, read page by page in
//! (cursor column, primary key) order.
//!
//! Each page is one short statement:
//!
//! ```sql
//! SELECT q.*, q.updated_at AS crm_ts FROM (<configured query>) AS q
//! WHERE q.updated_at IS NOT NULL AND (q.updated_at, q.pk) > (?, ?)
//! ORDER BY crm_ts, q.pk LIMIT <page size + 1>
//! ```
//!
//! so memory holds one page whatever the table size, no statement runs long
//! (the statement timeout applies per page), and the position after a page
//! is exact: rows sharing the last timestamp are neither skipped nor read
//! twice. `:last_sync` in the configured query is bound (never spliced) to a
//! lower bound at or below where the read starts.
//!
//! # Cursor
//! The cursor is the last (timestamp, primary key) emitted, plus the rows
//! emitted within the lookback window (`lookback` seconds before it), kept
//! as 64-bit digests of (key, timestamp). The next read starts `lookback`
//! before the last timestamp: rows it already emitted are recognised and
//! skipped, rows committed late with an older stamp are emitted. The window
//! keeps at most `lookback_max_keys` rows; past that it shrinks, so the
//! cursor stays small even when a million rows share one timestamp.
//! Late-commit detection covers reads that run to the end; a read
//! interrupted part-way resumes exactly after its last page.
//!
//! Times compare in UTC: PostgreSQL and MySQL sessions run in UTC, and on
//! SQLite both sides of every comparison go through
//! `strftime('%Y-%m-%dT%H:%M:%fZ', ...)`. Rows whose cursor column is NULL
//! (or on SQLite not a date-time SQLite understands) are not read.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use crm_core::{
    Change, Cursor, Error, ErrorKind, Page, ReadRequest, Record, RecordId, Result, Source, Value,
};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::client::SqlConnector;
use crate::config::DatabaseKind;
use crate::convert::sqlite_datetime;
use crate::db::{Arg, Hints, Row};
use crate::params::{quote_ident, quote_table, rewrite};

/// The name of the extra column holding the normalised cursor value.
const TS_COL: &str = "crm_ts";
/// The name of the extra column saying a row sorts at or before the old
/// high-water mark.
const BEHIND_COL: &str = "crm_behind";

/// What the cursor of this source holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CursorState {
    /// Format version.
    v: u8,
    /// The cursor value of the last row emitted, as the database compares it.
    ts: Option<Value>,
    /// The same instant, for lookback arithmetic.
    at: Option<DateTime<Utc>>,
    /// The primary key of the last row emitted.
    key: Vec<Value>,
    /// Rows emitted with a timestamp at or after `from`: (timestamp in
    /// microseconds, digest of key and timestamp).
    #[serde(default)]
    seen: Vec<(i64, u64)>,
    /// Every row emitted with a timestamp at or after this (and at or before
    /// the last row) is in `seen`.
    #[serde(default)]
    from: Option<DateTime<Utc>>,
}

const VERSION: u8 = 1;

/// Where the next page query starts.
#[derive(Clone, Debug)]
enum Position {
    /// From the beginning.
    Start,
    /// Rows with a timestamp at or after this.
    From(DateTime<Utc>),
    /// Rows strictly after this (timestamp value, key).
    After(Value, Vec<Value>),
}

struct ReadState {
    conn: SqlConnector,
    object: String,
    fields: Vec<String>,
    page_size: usize,
    /// The configured query, rewritten, and its bind names.
    inner_sql: String,
    inner_binds: Vec<String>,
    last_sync: DateTime<Utc>,
    ts_col: String,
    pk: Vec<String>,
    /// PostgreSQL casts for key parameters whose column type text does not
    /// compare with (uuid, enums).
    pk_casts: Vec<Option<String>>,
    hints: Option<Hints>,
    pos: Position,
    /// The last row taken sorted after the old high-water mark.
    past_old: bool,
    /// The high-water mark before this read (rows at or before it were
    /// emitted by earlier reads, unless they are late commits).
    old_hw: Option<(Value, Vec<Value>)>,
    /// The state being built.
    hw: Option<(Value, DateTime<Utc>, Vec<Value>)>,
    seen: BTreeMap<i64, Vec<u64>>,
    seen_count: usize,
    seen_index: HashSet<u64>,
    from: Option<DateTime<Utc>>,
    lookback: ChronoDuration,
    max_keys: usize,
    /// Something changed since the last cursor handed out.
    dirty: bool,
    done: bool,
}

impl Source for SqlConnector {
    /// Reads pages of [`Change::Upsert`]s in (cursor column, primary key)
    /// order, starting after `req.since`.
    ///
    /// # Errors
    /// An `Err` item ends the stream: [`ErrorKind::SchemaMismatch`] when the
    /// query does not select the cursor or key columns, [`ErrorKind::InvalidInput`]
    /// for a cursor made by another source, database errors as classified
    /// by this crate. Pages before it are good.
    ///
    /// # Cancel safety
    /// Reading changes nothing; dropping the stream at any point is safe.
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let conn = self.clone();
        futures_util::stream::once(async move { ReadState::new(conn, req).await })
            .flat_map(|state| match state {
                Ok(state) => futures_util::stream::try_unfold(state, |mut s| async move {
                    let page = s.next_page().await?;
                    Ok(page.map(|p| (p, s)))
                })
                .boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

/// FNV-1a over the key and the timestamp: stable across processes and versions.
fn digest(key: &[Value], at: &DateTime<Utc>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for k in key {
        eat(crate::sink::key_part(k).as_bytes());
        eat(&[0x1f]);
    }
    eat(&micros(at).to_le_bytes());
    h
}

impl ReadState {
    async fn new(conn: SqlConnector, req: ReadRequest) -> Result<Self> {
        let cfg = conn.cfg.clone();
        let dialect = conn.pool.kind();
        let table = match conn.table_info(&req.object, false).await {
            Ok(t) => Some(t),
            Err(e) if e.kind() == &ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let pk = if !cfg.primary_key.is_empty() {
            cfg.primary_key.clone()
        } else {
            match &table {
                Some(t) if !t.primary_key.is_empty() => t.primary_key.clone(),
                _ => {
                    return Err(Error::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "no primary key for `{}`: set `primary_key` in the configuration",
                            req.object
                        ),
                    )
                    .with_operation("sql.read"));
                }
            }
        };
        let ts_col = cfg.cursor_column.clone();
        let query = match &cfg.query {
            Some(q) => q.clone(),
            None => {
                if table.is_none() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no query configured and no table `{}`", req.object),
                    )
                    .with_operation("sql.read"));
                }
                format!(
                    "SELECT * FROM {} WHERE {} >= :last_sync",
                    quote_table(&req.object, dialect),
                    quote_ident(&ts_col, dialect)
                )
            }
        };
        let rewritten = rewrite(&query, dialect)?;
        for name in &rewritten.binds {
            if name != "last_sync" && !cfg.params.contains_key(name) {
                return Err(Error::invalid_input(format!(
                    "the query uses :{name}, which has no value in `params`"
                ))
                .with_operation("sql.read"));
            }
        }
        let hints = table.as_ref().map(|t| {
            t.columns
                .iter()
                .map(|c| (c.name.clone(), c.kind.clone()))
                .collect::<Hints>()
        });
        let state: CursorState = match &req.since {
            Some(c) => {
                let s: CursorState = c.to_state()?;
                if s.v != VERSION {
                    return Err(Error::invalid_input(format!(
                        "cursor version {} is not understood (expected {VERSION})",
                        s.v
                    )));
                }
                s
            }
            None => CursorState::default(),
        };
        let lookback = ChronoDuration::from_std(cfg.lookback).unwrap_or(ChronoDuration::zero());
        let mut seen: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        for (t, h) in &state.seen {
            seen.entry(*t).or_default().push(*h);
        }
        let seen_index: HashSet<u64> = state.seen.iter().map(|(_, h)| *h).collect();
        let (pos, last_sync) = match (&state.ts, state.at) {
            (Some(ts), Some(at)) => {
                let window = at - lookback;
                match state.from {
                    Some(from) if from <= at => {
                        let start = from.max(window);
                        (Position::From(start), start)
                    }
                    _ => (Position::After(ts.clone(), state.key.clone()), at),
                }
            }
            _ => (Position::Start, cfg.start.unwrap_or_else(epoch)),
        };
        let old_hw = state.ts.clone().map(|ts| (ts, state.key.clone()));
        let pk_casts = pk
            .iter()
            .map(
                |k| match (dialect, table.as_ref().and_then(|t| t.column(k))) {
                    (DatabaseKind::Postgres, Some(c))
                        if c.kind == crate::schema::ColumnKind::Other =>
                    {
                        Some(c.sql_type.clone())
                    }
                    _ => None,
                },
            )
            .collect();
        let hw = match (state.ts, state.at) {
            (Some(ts), Some(at)) => Some((ts, at, state.key)),
            _ => None,
        };
        Ok(ReadState {
            object: req.object,
            fields: req.fields,
            page_size: req.page_size.unwrap_or(cfg.page_size).max(1),
            inner_sql: rewritten.sql,
            inner_binds: rewritten.binds,
            // One second lower, so `>` in the configured query and
            // second-precision columns cannot drop rows at the boundary; the
            // keyset filter does the exact work.
            last_sync: last_sync - ChronoDuration::seconds(1),
            ts_col,
            pk,
            pk_casts,
            hints,
            past_old: old_hw.is_none(),
            pos,
            old_hw,
            hw,
            seen_count: seen.values().map(Vec::len).sum(),
            seen,
            seen_index,
            from: state.from,
            lookback,
            max_keys: cfg.lookback_max_keys,
            dirty: false,
            done: false,
            conn,
        })
    }

    /// The value bound for `:last_sync` on this backend.
    fn last_sync_arg(&self) -> Arg {
        match self.conn.pool.kind() {
            // Space-separated, second precision: sorts at or before every
            // text form of the same instant ('T' and fractions sort after).
            DatabaseKind::Sqlite => {
                Arg::text(self.last_sync.format("%Y-%m-%d %H:%M:%S").to_string())
            }
            _ => Arg::time(self.last_sync),
        }
    }

    /// The page query and its arguments.
    fn page_query(&self) -> (String, Vec<Arg>) {
        let dialect = self.conn.pool.kind();
        let user: Vec<Arg> = self
            .inner_binds
            .iter()
            .map(|name| {
                if name == "last_sync" {
                    self.last_sync_arg()
                } else {
                    Arg::Val(
                        self.conn
                            .cfg
                            .params
                            .get(name)
                            .cloned()
                            .unwrap_or(Value::Null),
                    )
                }
            })
            .collect();
        // PostgreSQL numbers placeholders: user ones first, then WHERE, then
        // the CASE. Elsewhere `?` binds in text order: CASE (in the select
        // list), user (in the subquery), WHERE.
        let mut binder = Binder {
            dialect,
            next: user.len(),
        };
        let norm = |expr: &str| match dialect {
            DatabaseKind::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', {expr})"),
            _ => expr.to_owned(),
        };
        let ts = format!("q.{}", quote_ident(&self.ts_col, dialect));
        let pks: Vec<String> = self
            .pk
            .iter()
            .map(|k| format!("q.{}", quote_ident(k, dialect)))
            .collect();
        // `(ts, pk...) > (value, key...)`, the values being ones the database
        // itself produced for the cursor column (so no normalisation on them).
        let after = |b: &mut Binder, args: &mut Vec<Arg>, tv: &Value, key: &[Value]| -> String {
            let mut lhs = vec![norm(&ts)];
            let mut rhs = vec![b.push(args, Arg::Val(tv.clone()))];
            for ((col, v), cast) in pks.iter().zip(key).zip(&self.pk_casts) {
                lhs.push(col.clone());
                let p = b.push(args, Arg::Val(v.clone()));
                rhs.push(match cast {
                    Some(t) => format!("CAST({p} AS {t})"),
                    None => p,
                });
            }
            format!("({}) > ({})", lhs.join(", "), rhs.join(", "))
        };
        let mut where_args = Vec::new();
        let mut cond = format!("{} IS NOT NULL", norm(&ts));
        match &self.pos {
            Position::Start => {}
            Position::From(t) => {
                let p = binder.push(&mut where_args, ts_arg(dialect, t));
                cond.push_str(&format!(" AND {} >= {}", norm(&ts), norm(&p)));
            }
            Position::After(tv, key) => {
                let c = after(&mut binder, &mut where_args, tv, key);
                cond.push_str(&format!(" AND {c}"));
            }
        }
        // While the read may still be at or before the old high-water mark,
        // the database says which rows are (same collation as its ORDER BY).
        let mut case_args = Vec::new();
        let behind = match &self.old_hw {
            Some((hts, hkey)) if !self.past_old => {
                let c = after(&mut binder, &mut case_args, hts, hkey);
                format!(", CASE WHEN {c} THEN 0 ELSE 1 END AS {BEHIND_COL}")
            }
            _ => String::new(),
        };
        let args = match dialect {
            DatabaseKind::Postgres => user
                .into_iter()
                .chain(where_args)
                .chain(case_args)
                .collect(),
            _ => case_args
                .into_iter()
                .chain(user)
                .chain(where_args)
                .collect(),
        };
        let sql = format!(
            "SELECT q.*, {} AS {TS_COL}{behind} FROM ({}) AS q WHERE {cond} ORDER BY {TS_COL}, {} LIMIT {}",
            norm(&ts),
            self.inner_sql,
            pks.join(", "),
            self.page_size + 1
        );
        (sql, args)
    }

    async fn next_page(&mut self) -> Result<Option<Page>> {
        if self.done {
            return Ok(None);
        }
        let (sql, args) = self.page_query();
        let mut rows = self
            .conn
            .pool
            .fetch_all(&sql, &args, self.hints.as_ref())
            .await
            .map_err(|e| {
                e.into_error("sql.read", &self.conn.redactor)
                    .with_context("object", &self.object)
            })?;
        let more = rows.len() > self.page_size;
        rows.truncate(self.page_size);
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(change) = self.take_row(row)? {
                changes.push(change);
            }
        }
        if !more {
            self.done = true;
        }
        if changes.is_empty() && !(self.done && self.dirty) {
            // Nothing new on this page (all rows already seen): keep going,
            // or end without handing out an unchanged cursor.
            return if self.done {
                Ok(None)
            } else {
                Box::pin(self.next_page()).await
            };
        }
        let cursor = self.cursor(self.done)?;
        self.dirty = !self.done;
        Ok(Some(Page { changes, cursor }))
    }

    /// Turns a row into a change, or `None` if an earlier read emitted it.
    fn take_row(&mut self, mut row: Row) -> Result<Option<Change>> {
        let tv = row.shift_remove(TS_COL).unwrap_or(Value::Null);
        let behind = match row.shift_remove(BEHIND_COL) {
            Some(v) => v.as_i64() == Some(1) || v.as_bool() == Some(true),
            None => false,
        };
        let at = match row.get(&self.ts_col) {
            Some(Value::DateTime(t)) => *t,
            Some(Value::Date(d)) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
            Some(Value::Text(s)) => crate::convert::parse_datetime_text(s).ok_or_else(|| {
                Error::new(
                    ErrorKind::SchemaMismatch,
                    format!("`{}` holds {s:?}, which is not a date-time", self.ts_col),
                )
            })?,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "`{}` holds a {}, not a date-time",
                        self.ts_col,
                        other.value_type()
                    ),
                )
                .with_operation("sql.read"));
            }
            None => {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "the query does not select the cursor column `{}`; add it to the SELECT list",
                        self.ts_col
                    ),
                )
                .with_operation("sql.read"));
            }
        };
        let mut key = Vec::with_capacity(self.pk.len());
        for k in &self.pk {
            match row.get(k) {
                Some(v) if !v.is_null() => key.push(v.clone()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::SchemaMismatch,
                        format!("the query does not select key column `{k}` (or it is NULL)"),
                    )
                    .with_operation("sql.read"));
                }
            }
        }
        self.pos = Position::After(tv.clone(), key.clone());
        let h = digest(&key, &at);
        self.past_old = !behind;
        if behind && self.seen_index.contains(&h) {
            return Ok(None);
        }
        // Emit.
        self.seen.entry(micros(&at)).or_default().push(h);
        self.seen_index.insert(h);
        self.seen_count += 1;
        if !behind {
            self.hw = Some((tv, at, key.clone()));
        }
        self.prune();
        self.dirty = true;
        let id = RecordId::new(
            key.iter()
                .map(crate::sink::key_part)
                .collect::<Vec<_>>()
                .join(","),
        );
        let fields = if self.fields.is_empty() {
            row
        } else {
            self.fields
                .iter()
                .map(|f| (f.clone(), row.get(f).cloned().unwrap_or(Value::Null)))
                .collect()
        };
        Ok(Some(Change::Upsert(Record {
            id: Some(id),
            updated_at: Some(at),
            fields,
        })))
    }

    /// Keeps `seen` to the lookback window and the size limit.
    fn prune(&mut self) {
        let Some((_, at, _)) = &self.hw else { return };
        let window = *at - self.lookback;
        let window_us = micros(&window);
        while let Some((&t, _)) = self.seen.first_key_value() {
            if t >= window_us && self.seen_count <= self.max_keys {
                break;
            }
            if let Some((t, hs)) = self.seen.pop_first() {
                self.seen_count -= hs.len();
                for h in &hs {
                    self.seen_index.remove(h);
                }
                let after = Utc.timestamp_micros(t + 1).single().unwrap_or(window);
                self.from = Some(self.from.map_or(after, |f| f.max(after)));
            }
        }
        self.from = Some(self.from.map_or(window, |f| f.max(window)));
    }

    /// The cursor after what was emitted so far. Only the final cursor of
    /// a read carries the lookback window; intermediate ones past the old
    /// high-water mark resume strictly after the last row.
    fn cursor(&self, last: bool) -> Result<Cursor> {
        let Some((ts, at, key)) = &self.hw else {
            return Cursor::from_state(&CursorState {
                v: VERSION,
                ..CursorState::default()
            });
        };
        let (seen, from) = if last || !self.past_old {
            (
                self.seen
                    .iter()
                    .flat_map(|(t, hs)| hs.iter().map(move |h| (*t, *h)))
                    .collect(),
                self.from,
            )
        } else {
            (Vec::new(), Some(*at + ChronoDuration::microseconds(1)))
        };
        Cursor::from_state(&CursorState {
            v: VERSION,
            ts: Some(ts.clone()),
            at: Some(*at),
            key: key.clone(),
            seen,
            from,
        })
    }
}

/// Numbers placeholders (`$n` on PostgreSQL, `?` elsewhere).
struct Binder {
    dialect: DatabaseKind,
    next: usize,
}

impl Binder {
    fn push(&mut self, args: &mut Vec<Arg>, a: Arg) -> String {
        args.push(a);
        self.next += 1;
        match self.dialect {
            DatabaseKind::Postgres => format!("${}", self.next),
            _ => "?".to_owned(),
        }
    }
}

/// The cursor-value argument for a lower bound at `t`.
fn ts_arg(dialect: DatabaseKind, t: &DateTime<Utc>) -> Arg {
    match dialect {
        DatabaseKind::Sqlite => Arg::text(sqlite_datetime(t)),
        _ => Arg::time(*t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable() {
        let t = Utc.timestamp_opt(1_700_000_000, 0).single().unwrap();
        let a = digest(&[Value::Text("B-1".into())], &t);
        assert_eq!(a, digest(&[Value::Text("B-1".into())], &t));
        assert_ne!(a, digest(&[Value::Text("B-2".into())], &t));
        assert_ne!(
            a,
            digest(
                &[Value::Text("B-1".into())],
                &(t + ChronoDuration::seconds(1))
            )
        );
    }

    #[test]
    fn cursor_state_round_trips() {
        let s = CursorState {
            v: VERSION,
            ts: Some(Value::Text("2024-01-01T00:00:00.000Z".into())),
            at: Some(epoch()),
            key: vec![Value::Int(7)],
            seen: vec![(1, u64::MAX)],
            from: Some(epoch()),
        };
        let c = Cursor::from_state(&s).unwrap();
        assert_eq!(c.to_state::<CursorState>().unwrap(), s);
    }
}
