//! PostgreSQL: connect, bind, decode, describe, and the upsert paths
//! (`UNNEST` arrays for ordinary batches, `COPY` into a staging table for
//! bulk loads), both ending in one `INSERT ... ON CONFLICT DO UPDATE ...
//! WHERE ... IS DISTINCT FROM ...` that reports created / updated rows and
//! leaves unchanged rows untouched.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use crm_core::{Value, ValueType};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgSslMode,
    PgValueFormat,
};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Column, Executor, Postgres, Row as _, TypeInfo, ValueRef};

use crate::config::{DatabaseKind, ResolvedConfig, SslMode};
use crate::convert::{apply_hint, float_to_value};
use crate::db::{Arg, DbError, Hints, Row};
use crate::error::SqlError;
use crate::params::{quote_ident, quote_table};
use crate::schema::{ColumnInfo, ColumnKind, TableInfo, type_args};
use crate::sink::{Plan, Prepared, Written, key_string};

const PG: DatabaseKind = DatabaseKind::Postgres;

pub(crate) async fn connect(cfg: &ResolvedConfig) -> Result<PgPool, sqlx::Error> {
    let mut opts = match &cfg.url {
        Some(u) => PgConnectOptions::from_str(u.expose_secret())?,
        None => PgConnectOptions::new_without_pgpass(),
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
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(cert) = &cfg.ssl_root_cert {
        opts = opts.ssl_root_cert(cert);
    }
    opts = opts.application_name("crm-sql");
    // Sessions compare and print times in UTC whatever the server, role or
    // database default is (startup parameters take precedence over those).
    let mut settings = vec![("TimeZone", "UTC".to_owned())];
    if let Some(t) = cfg.statement_timeout {
        settings.push(("statement_timeout", format!("{}ms", t.as_millis())));
    }
    opts = opts.options(settings);
    pool_options(cfg).connect_with(opts).await
}

fn pool_options(cfg: &ResolvedConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .min_connections(cfg.pool.min_connections)
        .max_connections(cfg.pool.max_connections)
        .idle_timeout(cfg.pool.idle_timeout.map(Duration::from_secs))
        .max_lifetime(cfg.pool.max_lifetime.map(Duration::from_secs))
        .acquire_timeout(Duration::from_secs(cfg.pool.acquire_timeout.max(1)))
}

fn bind<'q>(q: Query<'q, Postgres, PgArguments>, a: &Arg) -> Query<'q, Postgres, PgArguments> {
    match a {
        Arg::Null(ValueType::Int) => q.bind(None::<i64>),
        Arg::Null(ValueType::Bool) => q.bind(None::<bool>),
        Arg::Null(ValueType::Decimal) => q.bind(None::<Decimal>),
        Arg::Null(ValueType::Date) => q.bind(None::<NaiveDate>),
        Arg::Null(ValueType::DateTime) => q.bind(None::<DateTime<Utc>>),
        Arg::Null(ValueType::Json) => q.bind(None::<Json<serde_json::Value>>),
        Arg::Null(_) | Arg::Val(Value::Null) => q.bind(None::<String>),
        Arg::Val(Value::Bool(b)) => q.bind(*b),
        Arg::Val(Value::Int(i)) => q.bind(*i),
        Arg::Val(Value::Decimal(d)) => q.bind(*d),
        Arg::Val(Value::Text(s)) => q.bind(s.clone()),
        Arg::Val(Value::Date(d)) => q.bind(*d),
        Arg::Val(Value::DateTime(t)) => q.bind(*t),
        Arg::Val(Value::Json(j)) => q.bind(Json(j.clone())),
    }
}

pub(crate) async fn execute<'c, E>(e: E, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
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
    E: Executor<'c, Database = Postgres>,
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
pub(crate) fn decode_row(row: &PgRow, hints: Option<&Hints>) -> Result<Row, SqlError> {
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
            "BOOL" => Value::Bool(row.try_get(i).map_err(d)?),
            "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i).map_err(d)?)),
            "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i).map_err(d)?)),
            "INT8" => Value::Int(row.try_get(i).map_err(d)?),
            "NUMERIC" => Value::Decimal(row.try_get(i).map_err(d)?),
            "FLOAT4" => {
                let f: f32 = row.try_get(i).map_err(d)?;
                float_to_value(f.to_string().parse().unwrap_or(f64::from(f)))
            }
            "FLOAT8" => float_to_value(row.try_get(i).map_err(d)?),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i).map_err(d)?),
            "DATE" => Value::Date(row.try_get(i).map_err(d)?),
            "TIMESTAMPTZ" => Value::DateTime(row.try_get(i).map_err(d)?),
            "TIMESTAMP" => {
                Value::DateTime(row.try_get::<NaiveDateTime, _>(i).map_err(d)?.and_utc())
            }
            "JSON" | "JSONB" => Value::Json(row.try_get(i).map_err(d)?),
            "UUID" => {
                let raw = row.try_get_raw(i).map_err(d)?;
                match raw.format() {
                    PgValueFormat::Binary => {
                        let b = raw.as_bytes().map_err(|e| decode_err(name, e))?;
                        Value::Text(format_uuid(b))
                    }
                    PgValueFormat::Text => {
                        Value::Text(raw.as_str().map_err(|e| decode_err(name, e))?.to_owned())
                    }
                }
            }
            _ => {
                // Enums and other types whose binary form is their text
                // (or text-format values) come through as text.
                let raw = row.try_get_raw(i).map_err(d)?;
                match raw.as_str() {
                    Ok(s)
                        if raw.format() == PgValueFormat::Text
                            || !s.chars().any(|c| c.is_control()) =>
                    {
                        Value::Text(s.to_owned())
                    }
                    _ => {
                        return Err(decode_err(
                            name,
                            format!(
                                "type {ty} is not supported; cast it in the query (e.g. `{name}::text`)"
                            ),
                        ));
                    }
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

fn format_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if hex.len() == 32 {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    } else {
        hex
    }
}

const DESCRIBE_COLUMNS: &str = "\
SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS sql_type, \
       t.typname::text AS udt, NOT a.attnotnull AS nullable, a.atthasdef AS has_default \
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attnum";

const DESCRIBE_KEYS: &str = "\
SELECT i.indisprimary AS is_primary, \
       (SELECT string_agg(a.attname::text, chr(31) ORDER BY k.ord) \
          FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) AS cols \
FROM pg_index i \
WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL";

pub(crate) async fn describe(pool: &PgPool, table: &str) -> Result<Option<TableInfo>, DbError> {
    let name = Arg::text(quote_table(table, PG));
    let cols = fetch_all(pool, DESCRIBE_COLUMNS, std::slice::from_ref(&name), None).await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(cols.len());
    for c in &cols {
        use crate::db::RowExt;
        let sql_type = c.text("sql_type")?;
        let udt = c.text("udt")?;
        columns.push(ColumnInfo {
            name: c.text("name")?,
            kind: kind_of(&udt, &sql_type),
            sql_type,
            nullable: c.boolean("nullable"),
            has_default: c.boolean("has_default"),
        });
    }
    let keys = fetch_all(pool, DESCRIBE_KEYS, &[name], None).await?;
    let mut primary_key = Vec::new();
    let mut unique = Vec::new();
    for k in &keys {
        use crate::db::RowExt;
        let cols: Vec<String> = k.text("cols")?.split('\u{1f}').map(str::to_owned).collect();
        if k.boolean("is_primary") {
            primary_key = cols.clone();
        }
        unique.push(cols);
    }
    Ok(Some(TableInfo {
        name: table.to_owned(),
        columns,
        primary_key,
        unique,
    }))
}

fn kind_of(udt: &str, sql_type: &str) -> ColumnKind {
    let args = type_args(sql_type);
    match udt {
        "bool" => ColumnKind::Bool,
        "int2" => ColumnKind::Int {
            bits: 16,
            unsigned: false,
        },
        "int4" => ColumnKind::Int {
            bits: 32,
            unsigned: false,
        },
        "int8" => ColumnKind::Int {
            bits: 64,
            unsigned: false,
        },
        "numeric" => ColumnKind::Decimal {
            precision: args.first().copied(),
            scale: args.get(1).copied().or(args.first().map(|_| 0)),
        },
        "float4" | "float8" => ColumnKind::Float,
        "varchar" | "bpchar" => ColumnKind::Text {
            max_len: args.first().copied(),
        },
        "text" | "name" | "citext" => ColumnKind::Text { max_len: None },
        "date" => ColumnKind::Date,
        "timestamptz" => ColumnKind::DateTime {
            tz: true,
            precision: args.first().copied().unwrap_or(6),
        },
        "timestamp" => ColumnKind::DateTime {
            tz: false,
            precision: args.first().copied().unwrap_or(6),
        },
        "json" | "jsonb" => ColumnKind::Json,
        _ => ColumnKind::Other,
    }
}

/// The array type a column's values are bound as, and the cast (if any)
/// from the array element to the column.
fn array_type(col: &ColumnInfo) -> (&'static str, Option<&str>) {
    match col.kind {
        ColumnKind::Bool => ("bool[]", None),
        ColumnKind::Int { .. } => ("int8[]", None),
        ColumnKind::Decimal { .. } => ("numeric[]", None),
        ColumnKind::Float => ("float8[]", None),
        ColumnKind::Text { .. } => ("text[]", None),
        ColumnKind::Date => ("date[]", None),
        ColumnKind::DateTime { .. } => ("timestamptz[]", None),
        ColumnKind::Json => ("jsonb[]", None),
        ColumnKind::Other => ("text[]", Some(col.sql_type.as_str())),
    }
}

/// Binds one column of `rows` as a typed array.
fn bind_column<'q>(
    q: Query<'q, Postgres, PgArguments>,
    col: &ColumnInfo,
    values: impl Iterator<Item = &'q Value>,
) -> Query<'q, Postgres, PgArguments> {
    match col.kind {
        ColumnKind::Bool => q.bind(values.map(Value::as_bool).collect::<Vec<_>>()),
        ColumnKind::Int { .. } => q.bind(values.map(Value::as_i64).collect::<Vec<_>>()),
        ColumnKind::Decimal { .. } => q.bind(values.map(Value::as_decimal).collect::<Vec<_>>()),
        ColumnKind::Float => q.bind(
            values
                .map(|v| {
                    v.as_decimal()
                        .and_then(|d| d.to_string().parse::<f64>().ok())
                })
                .collect::<Vec<_>>(),
        ),
        ColumnKind::Date => q.bind(values.map(Value::as_date).collect::<Vec<_>>()),
        ColumnKind::DateTime { .. } => q.bind(values.map(Value::as_datetime).collect::<Vec<_>>()),
        ColumnKind::Json => q.bind(
            values
                .map(|v| match v {
                    Value::Null => None,
                    Value::Json(j) => Some(Json(j.clone())),
                    other => Some(Json(other.to_json())),
                })
                .collect::<Vec<_>>(),
        ),
        ColumnKind::Text { .. } | ColumnKind::Other => q.bind(
            values
                .map(|v| match v {
                    Value::Null => None,
                    Value::Text(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// The `INSERT ... SELECT ... ON CONFLICT` shared by both paths. `source` is
/// the FROM clause yielding columns named `c0, c1, ...`; `synced_param` is
/// the placeholder of the `synced_at` value.
fn upsert_sql(plan: &Plan, source: &str, synced_param: &str) -> String {
    let t = quote_table(&plan.table.name, PG);
    let mut target_cols: Vec<String> = plan
        .columns
        .iter()
        .map(|c| quote_ident(&c.name, PG))
        .collect();
    let mut select: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| match array_type(c).1 {
            Some(cast) => format!("s.c{i}::{cast}"),
            None => format!("s.c{i}"),
        })
        .collect();
    if plan.synced_at {
        target_cols.push(quote_ident("synced_at", PG));
        select.push(format!("{synced_param}::timestamptz"));
    }
    let conflict = plan
        .key
        .iter()
        .map(|&k| quote_ident(&plan.columns[k].name, PG))
        .collect::<Vec<_>>()
        .join(", ");
    let returning = plan
        .key
        .iter()
        .map(|&k| format!("t.{}", quote_ident(&plan.columns[k].name, PG)))
        .collect::<Vec<_>>()
        .join(", ");
    let action = if plan.compare.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        let mut sets: Vec<String> = plan
            .compare
            .iter()
            .map(|&i| {
                let c = quote_ident(&plan.columns[i].name, PG);
                format!("{c} = EXCLUDED.{c}")
            })
            .collect();
        if plan.synced_at {
            sets.push("\"synced_at\" = EXCLUDED.\"synced_at\"".into());
        }
        let cmp = |prefix: &str| {
            plan.compare
                .iter()
                .map(|&i| {
                    let col = &plan.columns[i];
                    let c = format!("{prefix}.{}", quote_ident(&col.name, PG));
                    match col.kind {
                        // json has no equality operator; compare as jsonb.
                        ColumnKind::Json => format!("{c}::jsonb"),
                        ColumnKind::Other => format!("{c}::text"),
                        _ => c,
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
            sets.join(", "),
            cmp("t"),
            cmp("EXCLUDED")
        )
    };
    format!(
        "INSERT INTO {t} AS t ({}) SELECT {} FROM {source} ON CONFLICT ({conflict}) {action} \
         RETURNING {returning}, (t.xmax = 0) AS crm_inserted",
        target_cols.join(", "),
        select.join(", "),
    )
}

/// Upserts `rows` (unique keys) and says what happened to each, in order.
///
/// The bulk path first asks which keys are stored: new rows go straight
/// into the table with `COPY` (created), stored ones through the staging
/// table and the `ON CONFLICT` upsert (updated or unchanged). A row inserted
/// by someone else in between makes the `COPY` fail with a unique
/// violation; the sink then redoes the batch row by row with upserts.
pub(crate) async fn upsert(
    conn: &mut PgConnection,
    plan: &Plan,
    rows: &[&Prepared],
    synced_at: DateTime<Utc>,
    bulk: bool,
) -> Result<Vec<Written>, DbError> {
    let (existing, returned) = if bulk {
        let existing = existing_keys(conn, plan, rows).await?;
        let (fresh, stored): (Vec<&Prepared>, Vec<&Prepared>) =
            rows.iter().partition(|p| !existing.contains(&p.key));
        if !fresh.is_empty() {
            let mut cols: Vec<String> = plan
                .columns
                .iter()
                .map(|c| quote_ident(&c.name, PG))
                .collect();
            if plan.synced_at {
                cols.push(quote_ident("synced_at", PG));
            }
            let stmt = format!(
                "COPY {} ({}) FROM STDIN",
                quote_table(&plan.table.name, PG),
                cols.join(", ")
            );
            copy_rows(conn, &stmt, &fresh, plan.synced_at.then_some(&synced_at)).await?;
        }
        let returned = if stored.is_empty() {
            Vec::new()
        } else {
            copy_upsert(conn, plan, &stored, synced_at).await?
        };
        (Some(existing), returned)
    } else {
        (None, unnest_upsert(conn, plan, rows, synced_at).await?)
    };
    let mut by_key: HashMap<String, bool> = HashMap::with_capacity(returned.len());
    for r in returned {
        let inserted = matches!(r.get("crm_inserted"), Some(Value::Bool(true)));
        let key: Vec<Value> = plan
            .key
            .iter()
            .map(|&k| r.get(&plan.columns[k].name).cloned().unwrap_or(Value::Null))
            .collect();
        by_key.insert(key_string(&key), inserted);
    }
    Ok(rows
        .iter()
        .map(|p| {
            if existing.as_ref().is_some_and(|e| !e.contains(&p.key)) {
                return Written::Created;
            }
            match by_key.get(&p.key) {
                Some(true) => Written::Created,
                Some(false) => Written::Updated,
                None => Written::Unchanged,
            }
        })
        .collect())
}

/// The keys of `rows` already in the table, as [`key_string`]s.
async fn existing_keys(
    conn: &mut PgConnection,
    plan: &Plan,
    rows: &[&Prepared],
) -> Result<HashSet<String>, DbError> {
    let arrays = plan
        .key
        .iter()
        .enumerate()
        .map(|(j, &k)| format!("${}::{}", j + 1, array_type(&plan.columns[k]).0))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..plan.key.len())
        .map(|j| format!("c{j}"))
        .collect::<Vec<_>>()
        .join(", ");
    let on = plan
        .key
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let col = &plan.columns[k];
            let rhs = match array_type(col).1 {
                Some(cast) => format!("u.c{j}::{cast}"),
                None => format!("u.c{j}"),
            };
            format!("t.{} = {rhs}", quote_ident(&col.name, PG))
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let select = plan
        .key
        .iter()
        .map(|&k| format!("t.{}", quote_ident(&plan.columns[k].name, PG)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {select} FROM {} AS t JOIN UNNEST({arrays}) AS u({names}) ON {on}",
        quote_table(&plan.table.name, PG)
    );
    let mut q = sqlx::query(&sql);
    for &k in &plan.key {
        q = bind_column(q, &plan.columns[k], rows.iter().map(move |r| &r.values[k]));
    }
    let found = q.fetch_all(&mut *conn).await?;
    let mut out = HashSet::with_capacity(found.len());
    for r in &found {
        let r = decode_row(r, None)?;
        let key: Vec<Value> = r.into_values().collect();
        out.insert(key_string(&key));
    }
    Ok(out)
}

/// Streams `rows` (plus `synced_at` when given) into a `COPY ... FROM STDIN`.
async fn copy_rows(
    conn: &mut PgConnection,
    statement: &str,
    rows: &[&Prepared],
    synced_at: Option<&DateTime<Utc>>,
) -> Result<u64, DbError> {
    const CHUNK: usize = 1 << 20;
    let synced = synced_at.map(|t| {
        let mut b = Vec::new();
        copy_text(&mut b, &Value::DateTime(*t));
        b
    });
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    for r in rows {
        for (i, v) in r.values.iter().enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            copy_text(&mut buf, v);
        }
        if let Some(s) = &synced {
            buf.push(b'\t');
            buf.extend_from_slice(s);
        }
        buf.push(b'\n');
        if buf.len() >= CHUNK {
            copy.send(std::mem::replace(
                &mut buf,
                Vec::with_capacity(CHUNK + 4096),
            ))
            .await?;
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    Ok(copy.finish().await?)
}

async fn unnest_upsert(
    conn: &mut PgConnection,
    plan: &Plan,
    rows: &[&Prepared],
    synced_at: DateTime<Utc>,
) -> Result<Vec<Row>, DbError> {
    let n = plan.columns.len();
    let arrays = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, array_type(c).0))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..n)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let source = format!("UNNEST({arrays}) AS s({names})");
    let sql = upsert_sql(plan, &source, &format!("${}", n + 1));
    let mut q = sqlx::query(&sql);
    for (i, c) in plan.columns.iter().enumerate() {
        q = bind_column(q, c, rows.iter().map(move |r| &r.values[i]));
    }
    if plan.synced_at {
        q = q.bind(synced_at);
    }
    let out = q.fetch_all(&mut *conn).await?;
    out.iter()
        .map(|r| decode_row(r, None).map_err(DbError::from))
        .collect()
}

async fn copy_upsert(
    conn: &mut PgConnection,
    plan: &Plan,
    rows: &[&Prepared],
    synced_at: DateTime<Utc>,
) -> Result<Vec<Row>, DbError> {
    let stage_cols = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c.kind {
                ColumnKind::Other | ColumnKind::Text { .. } => "text".to_owned(),
                ColumnKind::DateTime { .. } => "timestamptz".to_owned(),
                ColumnKind::Json => "jsonb".to_owned(),
                _ => c.sql_type.clone(),
            };
            format!("c{i} {ty}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    conn.execute(format!("CREATE TEMP TABLE crm_stage ({stage_cols}) ON COMMIT DROP").as_str())
        .await?;
    let names = (0..plan.columns.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    copy_rows(
        conn,
        &format!("COPY crm_stage ({names}) FROM STDIN"),
        rows,
        None,
    )
    .await?;
    let sql = upsert_sql(plan, "crm_stage s", "$1");
    let mut q = sqlx::query(&sql);
    if plan.synced_at {
        q = q.bind(synced_at);
    }
    let out = q.fetch_all(&mut *conn).await?;
    // Another group or round of the same batch may stage other columns.
    conn.execute("DROP TABLE crm_stage").await?;
    out.iter()
        .map(|r| decode_row(r, None).map_err(DbError::from))
        .collect()
}

/// Appends `v` in COPY text format.
fn copy_text(buf: &mut Vec<u8>, v: &Value) {
    use std::io::Write;
    let escaped = |buf: &mut Vec<u8>, s: &str| {
        for &b in s.as_bytes() {
            match b {
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                0 => {}
                _ => buf.push(b),
            }
        }
    };
    // Writing to a Vec cannot fail.
    let _ = match v {
        Value::Null => {
            buf.extend_from_slice(b"\\N");
            Ok(())
        }
        Value::Bool(b) => {
            buf.push(if *b { b't' } else { b'f' });
            Ok(())
        }
        Value::Int(i) => write!(buf, "{i}"),
        Value::Decimal(d) => write!(buf, "{d}"),
        Value::Date(d) => write!(buf, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        Value::DateTime(t) => write!(
            buf,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.timestamp_subsec_micros()
        ),
        Value::Text(s) => {
            escaped(buf, s);
            Ok(())
        }
        Value::Json(j) => {
            escaped(buf, &j.to_string());
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut buf = Vec::new();
        copy_text(&mut buf, &Value::Text("a\tb\\c\nd\0e".into()));
        assert_eq!(buf, b"a\\tb\\\\c\\nde");
        buf.clear();
        copy_text(&mut buf, &Value::Null);
        assert_eq!(buf, b"\\N");
    }

    #[test]
    fn uuid_format() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(format_uuid(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
