//! MySQL and MariaDB: connect, bind, decode, describe, and the multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE` the sink runs after comparing with
//! the stored rows.
//!
//! Sessions run with `time_zone = '+00:00'`, so `TIMESTAMP` columns read and
//! compare in UTC; `DATETIME` columns hold naive times and are read as UTC.
//! Zero dates (`0000-00-00`, `2024-00-10`) read as null.

use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use crm_core::{Value, ValueType};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode,
};
use sqlx::query::Query;
use sqlx::{Column, Executor, MySql, Row as _, TypeInfo, ValueRef};

use crate::config::{DatabaseKind, ResolvedConfig, SslMode};
use crate::convert::{apply_hint, float_to_value};
use crate::db::{Arg, DbError, Hints, Row, RowExt};
use crate::error::SqlError;
use crate::params::quote_ident;
use crate::schema::{ColumnInfo, ColumnKind, TableInfo};
use crate::sink::Plan;

const MY: DatabaseKind = DatabaseKind::MySql;

/// Most placeholders one MySQL statement takes.
pub(crate) const MAX_PARAMS: usize = 65_535;

pub(crate) async fn connect(cfg: &ResolvedConfig) -> Result<MySqlPool, sqlx::Error> {
    let mut opts = match &cfg.url {
        Some(u) => MySqlConnectOptions::from_str(u.expose_secret())?,
        None => MySqlConnectOptions::new(),
    };
    if let Some(h) = &cfg.host {
        opts = opts.host(h);
    }
    if let Some(p) = cfg.port {
        opts = opts.port(p);
    }
    if let Some(d) = &cfg.database {
        opts = opts.database(d);
    }
    if let Some(u) = &cfg.username {
        opts = opts.username(u);
    }
    if let Some(p) = &cfg.password {
        opts = opts.password(p.expose_secret());
    }
    if let Some(mode) = cfg.ssl_mode {
        opts = opts.ssl_mode(match mode {
            SslMode::Disable => MySqlSslMode::Disabled,
            SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
            SslMode::Require => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
    }
    if let Some(cert) = &cfg.ssl_root_cert {
        opts = opts.ssl_ca(cert);
    }
    opts = opts.timezone(Some("+00:00".to_owned())).charset("utf8mb4");
    let timeout = cfg.statement_timeout;
    MySqlPoolOptions::new()
        .min_connections(cfg.pool.min_connections)
        .max_connections(cfg.pool.max_connections)
        .idle_timeout(cfg.pool.idle_timeout.map(Duration::from_secs))
        .max_lifetime(cfg.pool.max_lifetime.map(Duration::from_secs))
        .acquire_timeout(Duration::from_secs(cfg.pool.acquire_timeout.max(1)))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if let Some(t) = timeout {
                    // MariaDB: max_statement_time (seconds, any statement);
                    // MySQL: max_execution_time (milliseconds, SELECT only).
                    let maria = format!("SET SESSION max_statement_time = {}", t.as_secs_f64());
                    if conn.execute(maria.as_str()).await.is_err() {
                        let mysql = format!("SET SESSION max_execution_time = {}", t.as_millis());
                        conn.execute(mysql.as_str()).await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(opts)
        .await
}

fn bind<'q>(q: Query<'q, MySql, MySqlArguments>, a: &Arg) -> Query<'q, MySql, MySqlArguments> {
    match a {
        Arg::Null(ValueType::Int) => q.bind(None::<i64>),
        Arg::Null(ValueType::Decimal) => q.bind(None::<Decimal>),
        Arg::Null(ValueType::DateTime) => q.bind(None::<NaiveDateTime>),
        Arg::Null(_) | Arg::Val(Value::Null) => q.bind(None::<String>),
        Arg::Val(Value::Bool(b)) => q.bind(*b),
        Arg::Val(Value::Int(i)) => q.bind(*i),
        Arg::Val(Value::Decimal(d)) => q.bind(*d),
        Arg::Val(Value::Text(s)) => q.bind(s.clone()),
        Arg::Val(Value::Date(d)) => q.bind(*d),
        Arg::Val(Value::DateTime(t)) => q.bind(t.naive_utc()),
        Arg::Val(Value::Json(j)) => q.bind(j.to_string()),
    }
}

pub(crate) async fn execute<'c, E>(e: E, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error>
where
    E: Executor<'c, Database = MySql>,
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
    E: Executor<'c, Database = MySql>,
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

/// Decodes a row by the server's column types.
pub(crate) fn decode_row(row: &MySqlRow, hints: Option<&Hints>) -> Result<Row, SqlError> {
    let mut out = IndexMap::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name();
        let raw = row.try_get_raw(i).map_err(|e| decode_err(name, e))?;
        if raw.is_null() {
            out.insert(name.to_owned(), Value::Null);
            continue;
        }
        let ty = col.type_info().name().to_owned();
        let d = |e: sqlx::Error| decode_err(name, e);
        let v = match ty.as_str() {
            "BOOLEAN" => Value::Bool(row.try_get(i).map_err(d)?),
            "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => {
                Value::Int(row.try_get(i).map_err(d)?)
            }
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED"
            | "BIGINT UNSIGNED" | "BIT" => {
                let u: u64 = row.try_get(i).map_err(d)?;
                i64::try_from(u).map_or(Value::Decimal(Decimal::from(u)), Value::Int)
            }
            "YEAR" => Value::Int(row.try_get_unchecked::<u16, _>(i).map_err(d)?.into()),
            "DECIMAL" => Value::Decimal(row.try_get(i).map_err(d)?),
            "FLOAT" => {
                let f: f32 = row.try_get(i).map_err(d)?;
                float_to_value(f.to_string().parse().unwrap_or(f64::from(f)))
            }
            "DOUBLE" => float_to_value(row.try_get(i).map_err(d)?),
            "DATE" | "DATETIME" | "TIMESTAMP" => {
                let b: &[u8] = row.try_get_unchecked(i).map_err(d)?;
                match decode_datetime(b) {
                    Some(t) if ty == "DATE" => Value::Date(t.date()),
                    Some(t) => Value::DateTime(t.and_utc()),
                    // Zero and partly-zero dates.
                    None => Value::Null,
                }
            }
            "TIME" => match row.try_get::<NaiveTime, _>(i) {
                Ok(t) => Value::Text(t.to_string()),
                Err(_) => Value::Text(row.try_get_unchecked::<String, _>(i).map_err(d)?),
            },
            "JSON" => Value::Json(row.try_get(i).map_err(d)?),
            _ => {
                let b: &[u8] = row.try_get_unchecked(i).map_err(d)?;
                match std::str::from_utf8(b) {
                    Ok(s) => Value::Text(s.to_owned()),
                    Err(_) => Value::Text(format!(
                        "\\x{}",
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                    )),
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

/// Reads a DATE/DATETIME/TIMESTAMP value in binary (length-prefixed) or
/// text form. `None` for zero or otherwise impossible dates.
fn decode_datetime(b: &[u8]) -> Option<NaiveDateTime> {
    let binary =
        !b.is_empty() && usize::from(b[0]) == b.len() - 1 && matches!(b[0], 0 | 4 | 7 | 11);
    if binary {
        let body = &b[1..];
        if body.len() < 4 {
            return None;
        }
        let year = i32::from(u16::from_le_bytes([body[0], body[1]]));
        let date = NaiveDate::from_ymd_opt(year, u32::from(body[2]), u32::from(body[3]))?;
        let (h, m, s) = if body.len() >= 7 {
            (u32::from(body[4]), u32::from(body[5]), u32::from(body[6]))
        } else {
            (0, 0, 0)
        };
        let micros = if body.len() >= 11 {
            u32::from_le_bytes([body[7], body[8], body[9], body[10]])
        } else {
            0
        };
        return date.and_hms_micro_opt(h, m, s, micros);
    }
    let s = std::str::from_utf8(b).ok()?;
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN))
        })
}

const DESCRIBE_COLUMNS: &str = "\
SELECT COLUMN_NAME AS name, COLUMN_TYPE AS sql_type, DATA_TYPE AS udt, \
       IS_NULLABLE = 'YES' AS nullable, \
       (COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%') AS has_default, \
       CHARACTER_MAXIMUM_LENGTH AS max_len, NUMERIC_PRECISION AS num_precision, \
       NUMERIC_SCALE AS num_scale, DATETIME_PRECISION AS dt_precision \
FROM information_schema.COLUMNS \
WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
ORDER BY ORDINAL_POSITION";

const DESCRIBE_KEYS: &str = "\
SELECT INDEX_NAME AS idx, COLUMN_NAME AS col \
FROM information_schema.STATISTICS \
WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
ORDER BY INDEX_NAME, SEQ_IN_INDEX";

pub(crate) async fn describe(pool: &MySqlPool, table: &str) -> Result<Option<TableInfo>, DbError> {
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (Arg::text(s), Arg::text(n)),
        None => (Arg::Null(ValueType::Text), Arg::text(table)),
    };
    let args = [schema, name];
    let cols = fetch_all(pool, DESCRIBE_COLUMNS, &args, None).await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(cols.len());
    for c in &cols {
        let sql_type = c.text("sql_type")?.to_ascii_lowercase();
        let udt = c.text("udt")?.to_ascii_lowercase();
        let unsigned = sql_type.contains("unsigned");
        let to_u32 = |col: &str| c.opt_int(col).and_then(|v| u32::try_from(v).ok());
        let kind = match udt.as_str() {
            "tinyint" if sql_type.starts_with("tinyint(1)") => ColumnKind::Bool,
            "bool" | "boolean" => ColumnKind::Bool,
            "tinyint" => ColumnKind::Int { bits: 8, unsigned },
            "smallint" => ColumnKind::Int { bits: 16, unsigned },
            "mediumint" | "int" | "integer" => ColumnKind::Int { bits: 32, unsigned },
            "bigint" => ColumnKind::Int { bits: 64, unsigned },
            "decimal" | "numeric" => ColumnKind::Decimal {
                precision: to_u32("num_precision"),
                scale: to_u32("num_scale"),
            },
            "float" | "double" | "real" => ColumnKind::Float,
            "char" | "varchar" => ColumnKind::Text {
                max_len: to_u32("max_len"),
            },
            "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
                ColumnKind::Text { max_len: None }
            }
            "date" => ColumnKind::Date,
            "datetime" => ColumnKind::DateTime {
                tz: false,
                precision: to_u32("dt_precision").unwrap_or(0),
            },
            "timestamp" => ColumnKind::DateTime {
                tz: true,
                precision: to_u32("dt_precision").unwrap_or(0),
            },
            "json" => ColumnKind::Json,
            _ => ColumnKind::Other,
        };
        columns.push(ColumnInfo {
            name: c.text("name")?,
            kind,
            sql_type,
            nullable: c.boolean("nullable"),
            has_default: c.boolean("has_default"),
        });
    }
    let keys = fetch_all(pool, DESCRIBE_KEYS, &args, None).await?;
    let mut primary_key = Vec::new();
    let mut unique: Vec<(String, Vec<String>)> = Vec::new();
    for k in &keys {
        let idx = k.text("idx")?;
        let col = k.text("col")?;
        if idx == "PRIMARY" {
            primary_key.push(col.clone());
        }
        match unique.iter_mut().find(|(i, _)| *i == idx) {
            Some((_, cols)) => cols.push(col),
            None => unique.push((idx, vec![col])),
        }
    }
    Ok(Some(TableInfo {
        name: table.to_owned(),
        columns,
        primary_key,
        unique: unique.into_iter().map(|(_, c)| c).collect(),
    }))
}

/// `INSERT ... VALUES (...), ... ON DUPLICATE KEY UPDATE ...` for `rows` rows;
/// each row binds the plan's columns, then `synced_at` when the plan sets it.
pub(crate) fn insert_sql(plan: &Plan, rows: usize, upsert: bool) -> String {
    let mut cols: Vec<String> = plan
        .columns
        .iter()
        .map(|c| quote_ident(&c.name, MY))
        .collect();
    if plan.synced_at {
        cols.push(quote_ident("synced_at", MY));
    }
    let one = format!("({})", vec!["?"; cols.len()].join(", "));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        crate::params::quote_table(&plan.table.name, MY),
        cols.join(", "),
        vec![one; rows].join(", ")
    );
    if upsert {
        let mut sets: Vec<String> = plan
            .compare
            .iter()
            .map(|&i| {
                let c = quote_ident(&plan.columns[i].name, MY);
                format!("{c} = VALUES({c})")
            })
            .collect();
        if plan.synced_at {
            sets.push("`synced_at` = VALUES(`synced_at`)".into());
        }
        if sets.is_empty() {
            // Nothing but the key: a no-op update keeps the statement valid.
            let k = quote_ident(&plan.columns[plan.key[0]].name, MY);
            sets.push(format!("{k} = {k}"));
        }
        sql.push_str(" ON DUPLICATE KEY UPDATE ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_datetimes() {
        // Binary: len 7, 2024-01-15 10:20:30.
        let b = [7u8, 0xE8, 0x07, 1, 15, 10, 20, 30];
        assert_eq!(
            decode_datetime(&b).map(|t| t.to_string()),
            Some("2024-01-15 10:20:30".into())
        );
        // Zero date in binary form is just the length byte 0.
        assert_eq!(decode_datetime(&[0u8]), None);
        // Zero date as text, and a zero month.
        assert_eq!(decode_datetime(b"0000-00-00 00:00:00"), None);
        assert_eq!(decode_datetime(&[4u8, 0xE8, 0x07, 0, 10]), None);
        assert!(decode_datetime(b"2024-01-15").is_some());
    }
}
