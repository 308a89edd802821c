//! SQLite: connect, bind, decode, describe, and the multi-row
//! `INSERT ... ON CONFLICT DO UPDATE` the sink runs after comparing with the
//! stored rows.
//!
//! SQLite stores values loosely, so this module writes them in forms that
//! keep their meaning: date-times as fixed-width UTC text
//! (`2024-01-15T10:00:00.000000Z`, ordered as text and readable by SQLite's
//! date functions), dates as `YYYY-MM-DD`, decimals as text (a column
//! declared `DECIMAL_TEXT(p, s)` has text affinity, so no digit is lost to
//! floating point), booleans as 0/1. Reads use the declared column types to
//! turn them back into typed values.

use std::str::FromStr;
use std::time::Duration;

use crm_core::{Value, ValueType};
use indexmap::IndexMap;
use secrecy::ExposeSecret;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Column, Executor, Row as _, Sqlite, TypeInfo, ValueRef};

use crate::config::{DatabaseKind, ResolvedConfig};
use crate::convert::{
    apply_hint, float_to_value, parse_date_text, parse_datetime_text, sqlite_datetime,
};
use crate::db::{Arg, DbError, Hints, Row, RowExt};
use crate::error::SqlError;
use crate::params::{quote_ident, quote_table};
use crate::schema::{ColumnInfo, ColumnKind, TableInfo, type_args};
use crate::sink::Plan;

const LITE: DatabaseKind = DatabaseKind::Sqlite;

/// Most placeholders one SQLite statement takes (SQLITE_MAX_VARIABLE_NUMBER).
pub(crate) const MAX_PARAMS: usize = 32_766;

pub(crate) async fn connect(cfg: &ResolvedConfig) -> Result<SqlitePool, sqlx::Error> {
    let (mut opts, memory) = match &cfg.url {
        Some(u) => {
            let u = u.expose_secret();
            (
                SqliteConnectOptions::from_str(u)?,
                u.contains(":memory:") || u.contains("mode=memory"),
            )
        }
        None => {
            let path = cfg.database.clone().unwrap_or_default();
            let memory = path == ":memory:";
            (SqliteConnectOptions::new().filename(path), memory)
        }
    };
    opts = opts
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(cfg.statement_timeout.unwrap_or(Duration::from_secs(30)));
    if !memory {
        opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
    }
    let mut pool = SqlitePoolOptions::new()
        .min_connections(cfg.pool.min_connections)
        .max_connections(cfg.pool.max_connections)
        .idle_timeout(cfg.pool.idle_timeout.map(Duration::from_secs))
        .max_lifetime(cfg.pool.max_lifetime.map(Duration::from_secs))
        .acquire_timeout(Duration::from_secs(cfg.pool.acquire_timeout.max(1)));
    if memory {
        // Each connection to :memory: is its own database: keep exactly one,
        // open for the life of the pool.
        pool = pool
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    pool.connect_with(opts).await
}

fn bind<'q>(
    q: Query<'q, Sqlite, SqliteArguments<'q>>,
    a: &Arg,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match a {
        Arg::Null(ValueType::Int) => q.bind(None::<i64>),
        Arg::Null(_) | Arg::Val(Value::Null) => q.bind(None::<String>),
        Arg::Val(Value::Bool(b)) => q.bind(*b),
        Arg::Val(Value::Int(i)) => q.bind(*i),
        Arg::Val(Value::Decimal(d)) => q.bind(d.to_string()),
        Arg::Val(Value::Text(s)) => q.bind(s.clone()),
        Arg::Val(Value::Date(d)) => q.bind(d.format("%Y-%m-%d").to_string()),
        Arg::Val(Value::DateTime(t)) => q.bind(sqlite_datetime(t)),
        Arg::Val(Value::Json(j)) => q.bind(j.to_string()),
    }
}

pub(crate) async fn execute<'c, E>(e: E, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error>
where
    E: Executor<'c, Database = Sqlite>,
{
    let mut q = sqlx::query(sql);
    for a in args {
        q = bind(q, a);
    }
    Ok(q.execute(e).await?.rows_affected())
}

pub(crate) async fn fetch_all<'c, E>(
    e: E,
    sql: &str,
    args: &[Arg],
    hints: Option<&Hints>,
) -> Result<Vec<Row>, DbError>
where
    E: Executor<'c, Database = Sqlite>,
{
    let mut q = sqlx::query(sql);
    for a in args {
        q = bind(q, a);
    }
    let rows = q.fetch_all(e).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(decode_row(r, hints)?);
    }
    Ok(out)
}

fn decode_err(column: &str, e: impl std::fmt::Display) -> SqlError {
    SqlError::Decode {
        column: column.to_owned(),
        message: e.to_string(),
    }
}

/// Decodes a row by each value's storage class, then by the declared type.
pub(crate) fn decode_row(row: &SqliteRow, hints: Option<&Hints>) -> Result<Row, SqlError> {
    let mut out = IndexMap::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name();
        let raw = row.try_get_raw(i).map_err(|e| decode_err(name, e))?;
        if raw.is_null() {
            out.insert(name.to_owned(), Value::Null);
            continue;
        }
        let storage = raw.type_info().name().to_owned();
        let declared = col.type_info().name().to_owned();
        let d = |e: sqlx::Error| decode_err(name, e);
        let v = match storage.as_str() {
            "INTEGER" => {
                let i: i64 = row.try_get_unchecked(i).map_err(d)?;
                if declared == "BOOLEAN" {
                    Value::Bool(i != 0)
                } else {
                    Value::Int(i)
                }
            }
            "REAL" => float_to_value(row.try_get_unchecked(i).map_err(d)?),
            "BLOB" => {
                let b: Vec<u8> = row.try_get_unchecked(i).map_err(d)?;
                match String::from_utf8(b) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Text(format!(
                        "\\x{}",
                        e.as_bytes()
                            .iter()
                            .map(|x| format!("{x:02x}"))
                            .collect::<String>()
                    )),
                }
            }
            _ => {
                let s: String = row.try_get_unchecked(i).map_err(d)?;
                match declared.as_str() {
                    "DATETIME" => parse_datetime_text(&s).map_or(Value::Text(s), Value::DateTime),
                    "DATE" => parse_date_text(&s).map_or(Value::Text(s), Value::Date),
                    _ => Value::Text(s),
                }
            }
        };
        let v = match hints.and_then(|h| h.get(name)) {
            Some(kind) => apply_hint(v, kind),
            None => v,
        };
        out.insert(name.to_owned(), v);
    }
    Ok(out)
}

/// The column kind a declared SQLite type stands for.
pub(crate) fn kind_of(declared: &str) -> ColumnKind {
    let t = declared.to_ascii_uppercase();
    let args = type_args(&t);
    if t.contains("BOOL") {
        ColumnKind::Bool
    } else if t.starts_with("DECIMAL") || t.starts_with("NUMERIC") || t.contains("MONEY") {
        ColumnKind::Decimal {
            precision: args.first().copied(),
            scale: args.get(1).copied().or(args.first().map(|_| 0)),
        }
    } else if t.contains("INT") {
        ColumnKind::Int {
            bits: 64,
            unsigned: false,
        }
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnKind::Float
    } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
        ColumnKind::DateTime {
            tz: true,
            precision: 6,
        }
    } else if t.contains("DATE") {
        ColumnKind::Date
    } else if t.contains("JSON") {
        ColumnKind::Json
    } else if t.contains("CHAR") || t.contains("TEXT") || t.contains("CLOB") {
        ColumnKind::Text {
            max_len: args.first().copied(),
        }
    } else {
        ColumnKind::Other
    }
}

pub(crate) async fn describe(pool: &SqlitePool, table: &str) -> Result<Option<TableInfo>, DbError> {
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (s.to_owned(), n.to_owned()),
        None => ("main".to_owned(), table.to_owned()),
    };
    let schema_arg = Arg::text(schema.clone());
    let cols = fetch_all(
        pool,
        "SELECT name, type, \"notnull\" AS not_null, dflt_value, pk FROM pragma_table_info(?, ?)",
        &[Arg::text(name.clone()), schema_arg.clone()],
        None,
    )
    .await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(cols.len());
    let mut pk: Vec<(i64, String)> = Vec::new();
    for c in &cols {
        let col_name = c.text("name")?;
        let declared = c.opt_text("type").unwrap_or_default();
        let order = c.opt_int("pk").unwrap_or(0);
        if order > 0 {
            pk.push((order, col_name.clone()));
        }
        columns.push(ColumnInfo {
            name: col_name,
            kind: kind_of(&declared),
            sql_type: declared,
            nullable: !c.boolean("not_null") && order == 0,
            has_default: c.opt_text("dflt_value").is_some(),
        });
    }
    pk.sort();
    let primary_key: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
    let mut unique = Vec::new();
    if !primary_key.is_empty() {
        unique.push(primary_key.clone());
    }
    let indexes = fetch_all(
        pool,
        "SELECT name FROM pragma_index_list(?, ?) WHERE \"unique\" = 1 AND partial = 0",
        &[Arg::text(name.clone()), schema_arg.clone()],
        None,
    )
    .await?;
    for idx in &indexes {
        let idx_name = idx.text("name")?;
        let cols = fetch_all(
            pool,
            "SELECT name FROM pragma_index_info(?, ?) ORDER BY seqno",
            &[Arg::text(idx_name), schema_arg.clone()],
            None,
        )
        .await?;
        let cols: Vec<String> = cols.iter().filter_map(|r| r.opt_text("name")).collect();
        if !cols.is_empty() && !unique.contains(&cols) {
            unique.push(cols);
        }
    }
    Ok(Some(TableInfo {
        name: table.to_owned(),
        columns,
        primary_key,
        unique,
    }))
}

/// `INSERT ... VALUES (...), ... ON CONFLICT (key) DO UPDATE ...` for `rows`
/// rows; each row binds the plan's columns, then `synced_at` when the plan
/// sets it.
pub(crate) fn insert_sql(plan: &Plan, rows: usize, upsert: bool) -> String {
    let mut cols: Vec<String> = plan
        .columns
        .iter()
        .map(|c| quote_ident(&c.name, LITE))
        .collect();
    if plan.synced_at {
        cols.push(quote_ident("synced_at", LITE));
    }
    let one = format!("({})", vec!["?"; cols.len()].join(", "));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_table(&plan.table.name, LITE),
        cols.join(", "),
        vec![one; rows].join(", ")
    );
    if upsert {
        let key = plan
            .key
            .iter()
            .map(|&k| quote_ident(&plan.columns[k].name, LITE))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sets: Vec<String> = plan
            .compare
            .iter()
            .map(|&i| {
                let c = quote_ident(&plan.columns[i].name, LITE);
                format!("{c} = excluded.{c}")
            })
            .collect();
        if plan.synced_at {
            sets.push("\"synced_at\" = excluded.\"synced_at\"".into());
        }
        if sets.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({key}) DO NOTHING"));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({key}) DO UPDATE SET {}",
                sets.join(", ")
            ));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types() {
        assert_eq!(
            kind_of("DECIMAL_TEXT(28, 4)"),
            ColumnKind::Decimal {
                precision: Some(28),
                scale: Some(4)
            }
        );
        assert_eq!(kind_of("VARCHAR(3)"), ColumnKind::Text { max_len: Some(3) });
        assert_eq!(
            kind_of("DATETIME"),
            ColumnKind::DateTime {
                tz: true,
                precision: 6
            }
        );
        assert_eq!(kind_of("date"), ColumnKind::Date);
        assert_eq!(
            kind_of("BIGINT"),
            ColumnKind::Int {
                bits: 64,
                unsigned: false
            }
        );
        assert_eq!(kind_of("BOOLEAN"), ColumnKind::Bool);
        assert_eq!(kind_of(""), ColumnKind::Other);
    }
}
