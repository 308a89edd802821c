//! One code path over three backends: a pool or transaction of whichever
//! engine is configured, running SQL with bound [`Arg`]s and decoding rows
//! into crm-core [`Value`]s. Each backend module (`postgres`, `mysql`,
//! `sqlite`) supplies connect, bind, decode and describe.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_core::{Error, Value, ValueType};
use indexmap::IndexMap;

use crate::config::{DatabaseKind, ResolvedConfig};
use crate::error::{Redactor, SqlError, db_error};
use crate::schema::{ColumnKind, TableInfo};

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
compile_error!("crm-sql needs at least one of the features `postgres`, `mysql`, `sqlite`");

/// A decoded row: column name -> value, in select order.
pub(crate) type Row = IndexMap<String, Value>;

/// Declared column kinds by column name, for backends whose values carry
/// less type than the column (SQLite).
pub(crate) type Hints = HashMap<String, ColumnKind>;

/// A bound parameter: a value, or a NULL of a known type (PostgreSQL types
/// its parameters, so a NULL must say what it is).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Val(Value),
    Null(ValueType),
}

impl Arg {
    pub(crate) fn text(s: impl Into<String>) -> Arg {
        Arg::Val(Value::Text(s.into()))
    }
    pub(crate) fn opt_text(s: Option<impl Into<String>>) -> Arg {
        s.map_or(Arg::Null(ValueType::Text), |s| Arg::text(s))
    }
    pub(crate) fn int(i: i64) -> Arg {
        Arg::Val(Value::Int(i))
    }
    pub(crate) fn bool(b: bool) -> Arg {
        Arg::Val(Value::Bool(b))
    }
    pub(crate) fn time(t: DateTime<Utc>) -> Arg {
        Arg::Val(Value::DateTime(t))
    }
    pub(crate) fn opt_time(t: Option<DateTime<Utc>>) -> Arg {
        t.map_or(Arg::Null(ValueType::DateTime), Arg::time)
    }
    /// JSON is stored as text in the state store, the same on every backend.
    pub(crate) fn json_text(j: &serde_json::Value) -> Arg {
        Arg::text(j.to_string())
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Val(v)
    }
}

/// A driver error or a row that could not be decoded.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(sqlx::Error),
    Decode(SqlError),
}

impl DbError {
    pub(crate) fn into_error(self, op: &'static str, redactor: &Redactor) -> Error {
        match self {
            DbError::Sql(e) => db_error(op, e, redactor),
            DbError::Decode(e) => Error::from(e).with_operation(op),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<SqlError> for DbError {
    fn from(e: SqlError) -> Self {
        DbError::Decode(e)
    }
}

/// A connection pool of the configured engine.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// An open transaction of the configured engine.
pub(crate) enum Tx {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Runs `$body` with `$x` bound to the backend's pool/transaction and
/// `backend` naming the backend module.
macro_rules! dispatch {
    ($enum:ident, $self:expr, $x:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "postgres")]
            $enum::Postgres($x) => {
                #[allow(unused_imports)]
                use crate::postgres as backend;
                $body
            }
            #[cfg(feature = "mysql")]
            $enum::MySql($x) => {
                #[allow(unused_imports)]
                use crate::mysql as backend;
                $body
            }
            #[cfg(feature = "sqlite")]
            $enum::Sqlite($x) => {
                #[allow(unused_imports)]
                use crate::sqlite as backend;
                $body
            }
        }
    };
}

impl Pool {
    /// Opens a pool for `cfg`.
    pub(crate) async fn connect(cfg: &ResolvedConfig) -> Result<Pool, Error> {
        let redactor = cfg.redactor();
        let res: Result<Pool, sqlx::Error> = match cfg.kind {
            #[cfg(feature = "postgres")]
            DatabaseKind::Postgres => crate::postgres::connect(cfg).await.map(Pool::Postgres),
            #[cfg(feature = "mysql")]
            DatabaseKind::MySql => crate::mysql::connect(cfg).await.map(Pool::MySql),
            #[cfg(feature = "sqlite")]
            DatabaseKind::Sqlite => crate::sqlite::connect(cfg).await.map(Pool::Sqlite),
            #[allow(unreachable_patterns)]
            other => {
                return Err(SqlError::Unsupported(format!(
                    "this build of crm-sql has no `{other}` feature"
                ))
                .into());
            }
        };
        res.map_err(|e| {
            db_error("sql.connect", e, &redactor).with_context("target", cfg.describe_target())
        })
    }

    pub(crate) fn kind(&self) -> DatabaseKind {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => DatabaseKind::Postgres,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => DatabaseKind::MySql,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => DatabaseKind::Sqlite,
        }
    }

    pub(crate) async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, DbError> {
        dispatch!(Pool, self, p => Ok(backend::execute(p, sql, args).await?))
    }

    pub(crate) async fn fetch_all(
        &self,
        sql: &str,
        args: &[Arg],
        hints: Option<&Hints>,
    ) -> Result<Vec<Row>, DbError> {
        dispatch!(Pool, self, p => backend::fetch_all(p, sql, args, hints).await)
    }

    pub(crate) async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => Tx::MySql(p.begin().await?),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }

    /// Describes `table`, or `None` if it does not exist.
    pub(crate) async fn describe(&self, table: &str) -> Result<Option<TableInfo>, DbError> {
        dispatch!(Pool, self, p => backend::describe(p, table).await)
    }

    pub(crate) async fn close(&self) {
        dispatch!(Pool, self, p => p.close().await)
    }
}

impl Tx {
    pub(crate) async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, DbError> {
        dispatch!(Tx, self, t => Ok(backend::execute(&mut **t, sql, args).await?))
    }

    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg],
        hints: Option<&Hints>,
    ) -> Result<Vec<Row>, DbError> {
        dispatch!(Tx, self, t => backend::fetch_all(&mut **t, sql, args, hints).await)
    }

    pub(crate) async fn commit(self) -> Result<(), DbError> {
        dispatch!(Tx, self, t => Ok(t.commit().await?))
    }

    pub(crate) async fn rollback(self) -> Result<(), DbError> {
        dispatch!(Tx, self, t => Ok(t.rollback().await?))
    }

    /// Opens the savepoint that [`Tx::release`] or [`Tx::undo`] closes, so one
    /// failing statement undoes only its own effects.
    pub(crate) async fn savepoint(&mut self) -> Result<(), DbError> {
        self.execute("SAVEPOINT crm_row", &[]).await.map(drop)
    }

    /// Keeps the work since [`Tx::savepoint`].
    pub(crate) async fn release(&mut self) -> Result<(), DbError> {
        self.execute("RELEASE SAVEPOINT crm_row", &[])
            .await
            .map(drop)
    }

    /// Undoes the work since [`Tx::savepoint`]; the transaction stays usable.
    pub(crate) async fn undo(&mut self) -> Result<(), DbError> {
        self.execute("ROLLBACK TO SAVEPOINT crm_row", &[]).await?;
        self.release().await
    }
}

/// Reads a text/int/time column of a state-store row, whatever the backend
/// stored it as.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String, SqlError>;
    fn opt_text(&self, col: &str) -> Option<String>;
    fn int(&self, col: &str) -> Result<i64, SqlError>;
    fn opt_int(&self, col: &str) -> Option<i64>;
    fn boolean(&self, col: &str) -> bool;
    fn time(&self, col: &str) -> Result<DateTime<Utc>, SqlError>;
    fn opt_time(&self, col: &str) -> Option<DateTime<Utc>>;
}

fn missing(col: &str, what: &str) -> SqlError {
    SqlError::Decode {
        column: col.to_owned(),
        message: format!("expected {what}"),
    }
}

impl RowExt for Row {
    fn text(&self, col: &str) -> Result<String, SqlError> {
        self.opt_text(col).ok_or_else(|| missing(col, "text"))
    }
    fn opt_text(&self, col: &str) -> Option<String> {
        match self.get(col)? {
            Value::Null => None,
            Value::Text(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
    fn int(&self, col: &str) -> Result<i64, SqlError> {
        self.opt_int(col).ok_or_else(|| missing(col, "an integer"))
    }
    fn opt_int(&self, col: &str) -> Option<i64> {
        match self.get(col)? {
            Value::Text(s) => s.parse().ok(),
            Value::Bool(b) => Some(i64::from(*b)),
            other => other.as_i64(),
        }
    }
    fn boolean(&self, col: &str) -> bool {
        match self.get(col) {
            Some(Value::Bool(b)) => *b,
            Some(v) => v.as_i64().is_some_and(|i| i != 0),
            None => false,
        }
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>, SqlError> {
        self.opt_time(col)
            .ok_or_else(|| missing(col, "a date-time"))
    }
    fn opt_time(&self, col: &str) -> Option<DateTime<Utc>> {
        match self.get(col)? {
            Value::DateTime(t) => Some(*t),
            Value::Text(s) => crate::convert::parse_datetime_text(s),
            _ => None,
        }
    }
}
