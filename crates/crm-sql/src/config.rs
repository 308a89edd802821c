//! [`SqlConfig`]: where the database is, how to pool connections, and what
//! the source reads.
//!
//! The shape is seed 000's `database` block, with the pool block beside it:
//!
//! ```yaml
//! type: "postgresql"
//! host: "${DB_HOST}"
//! port: 5432
//! database: "bookings"
//! username: "${DB_USER}"
//! password: "${DB_PASSWORD}"
//! ssl_mode: "require"
//! query: |
//!   SELECT booking_id, client_name, budget, updated_at
//!   FROM bookings
//!   WHERE updated_at >= :last_sync
//! pool:
//!   min_connections: 2
//!   max_connections: 10
//!   idle_timeout: 300
//!   max_lifetime: 3600
//! statement_timeout: 30
//! ```
//!
//! A connection `url` (`postgres://...`, `mysql://...`, `sqlite://path`) can
//! stand in for `host`/`port`/`database`/`username`/`password`. `${NAME}` and
//! `${NAME:-default}` in the connection fields are replaced from the
//! environment when the connector is built. Durations are whole seconds.
//!
//! The password (and the whole URL, which may carry one) is a
//! [`SecretString`]: `Debug` prints it as `[REDACTED]` and the URL with its
//! password masked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::error::{SqlError, mask_url_passwords};

/// The database engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum DatabaseKind {
    /// PostgreSQL (`postgresql`, `postgres`).
    #[serde(alias = "postgresql", alias = "postgres", alias = "pg")]
    Postgres,
    /// MySQL or MariaDB (`mysql`, `mariadb`).
    #[serde(alias = "mysql", alias = "mariadb")]
    MySql,
    /// SQLite (`sqlite`).
    #[serde(alias = "sqlite", alias = "sqlite3")]
    Sqlite,
}

impl DatabaseKind {
    /// The connector kind reported by [`crm_core::Connector::kind`].
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::MySql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
        }
    }

    fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(DatabaseKind::Postgres),
            "mysql" | "mariadb" => Some(DatabaseKind::MySql),
            "sqlite" => Some(DatabaseKind::Sqlite),
            _ => None,
        }
    }
}

impl fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS to the server, in libpq's terms (MySQL's modes map onto them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    #[serde(alias = "disabled")]
    Disable,
    /// Try without TLS first (PostgreSQL); MySQL treats it as `prefer`.
    Allow,
    /// Use TLS when the server offers it.
    #[default]
    #[serde(alias = "preferred")]
    Prefer,
    /// Require TLS, without checking the certificate.
    #[serde(alias = "required")]
    Require,
    /// Require TLS and a certificate signed by a trusted CA.
    #[serde(alias = "verify_ca")]
    VerifyCa,
    /// Require TLS, a trusted certificate, and a matching host name.
    #[serde(alias = "verify_full", alias = "verify-identity")]
    VerifyFull,
}

/// Connection-pool settings (seed 000's `pool` block). Durations are seconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Most connections open at once.
    pub max_connections: u32,
    /// Close a connection idle for this long (seconds); `None` keeps it.
    pub idle_timeout: Option<u64>,
    /// Close a connection this old (seconds); `None` keeps it.
    pub max_lifetime: Option<u64>,
    /// Give up waiting for a free connection after this long (seconds).
    pub acquire_timeout: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_connections: 0,
            max_connections: 10,
            idle_timeout: Some(300),
            max_lifetime: Some(3600),
            acquire_timeout: 30,
        }
    }
}

/// Everything the SQL connector needs: connection, pool, source query.
///
/// Build it from YAML/JSON with serde, or with [`SqlConfig::builder`].
/// [`SqlConfig::resolve`] (called by the connector) interpolates `${ENV}`
/// values and validates the whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqlConfig {
    /// The engine; optional when `url` names it.
    #[serde(rename = "type", default)]
    pub kind: Option<DatabaseKind>,
    /// A connection URL, instead of the separate fields. Secret: it may hold a password.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// Server host name or address.
    #[serde(default)]
    pub host: Option<String>,
    /// Server port: a number or a `${ENV}` string.
    #[serde(default, deserialize_with = "port_from_number_or_text")]
    pub port: Option<String>,
    /// Database name (for SQLite, the file path).
    #[serde(default)]
    pub database: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; never printed.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// TLS mode; unset keeps the URL's or the driver's default (`prefer`).
    #[serde(default)]
    pub ssl_mode: Option<SslMode>,
    /// A PEM file with the CA certificate(s) to trust for `verify-ca`/`verify-full`.
    #[serde(default)]
    pub ssl_root_cert: Option<PathBuf>,
    /// Pool settings.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Cancel any statement that runs longer than this (seconds).
    #[serde(default)]
    pub statement_timeout: Option<u64>,
    /// The source query. `:last_sync` and the names in `params` are bound as
    /// parameters. When absent, the source reads the table named by the
    /// request's object.
    #[serde(default)]
    pub query: Option<String>,
    /// Values for named parameters of `query` other than `:last_sync`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// The column that holds each row's modification time.
    #[serde(default = "default_cursor_column")]
    pub cursor_column: String,
    /// The columns that identify a row (ties on the cursor column are broken
    /// by them). Empty: the primary key of the table named by the object.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// How far (seconds) behind the last change seen each incremental read
    /// looks again, for rows committed late with an older stamp. Rows
    /// already emitted are recognised and skipped.
    #[serde(default = "default_lookback")]
    pub lookback: u64,
    /// The most rows remembered for the lookback window; past it the window
    /// shrinks so the cursor stays small.
    #[serde(default = "default_lookback_max_keys")]
    pub lookback_max_keys: usize,
    /// Rows per page when the request does not say.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Records per write batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batches at least this large go through the PostgreSQL `COPY` path.
    #[serde(default = "default_copy_threshold")]
    pub copy_threshold: usize,
    /// The `:last_sync` value of a first (full) read.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
}

fn default_cursor_column() -> String {
    "updated_at".to_owned()
}
fn default_lookback() -> u64 {
    300
}
fn default_lookback_max_keys() -> usize {
    10_000
}
fn default_page_size() -> usize {
    1_000
}
fn default_batch_size() -> usize {
    1_000
}
fn default_copy_threshold() -> usize {
    5_000
}

fn port_from_number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u64),
        Text(String),
    }
    Ok(Option::<Port>::deserialize(d)?.map(|p| match p {
        Port::Number(n) => n.to_string(),
        Port::Text(t) => t,
    }))
}

impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("kind", &self.kind)
            .field(
                "url",
                &self
                    .url
                    .as_ref()
                    .map(|u| mask_url_passwords(u.expose_secret())),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("ssl_mode", &self.ssl_mode)
            .field("pool", &self.pool)
            .field("statement_timeout", &self.statement_timeout)
            .field("query", &self.query)
            .field("cursor_column", &self.cursor_column)
            .field("primary_key", &self.primary_key)
            .field("lookback", &self.lookback)
            .field("page_size", &self.page_size)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl SqlConfig {
    /// A builder with every setting at its default.
    pub fn builder() -> SqlConfigBuilder {
        SqlConfigBuilder {
            config: SqlConfig {
                kind: None,
                url: None,
                host: None,
                port: None,
                database: None,
                username: None,
                password: None,
                ssl_mode: None,
                ssl_root_cert: None,
                pool: PoolConfig::default(),
                statement_timeout: None,
                query: None,
                params: BTreeMap::new(),
                cursor_column: default_cursor_column(),
                primary_key: Vec::new(),
                lookback: default_lookback(),
                lookback_max_keys: default_lookback_max_keys(),
                page_size: default_page_size(),
                batch_size: default_batch_size(),
                copy_threshold: default_copy_threshold(),
                start: None,
            },
        }
    }

    /// A configuration for a connection URL, everything else at defaults.
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`] if the URL names no known engine.
    pub fn from_url(url: impl Into<String>) -> Result<Self, SqlError> {
        SqlConfig::builder().url(url).build()
    }

    /// The URL with its password masked, for logs.
    pub fn redacted_url(&self) -> Option<String> {
        self.url
            .as_ref()
            .map(|u| mask_url_passwords(u.expose_secret()))
    }

    /// Interpolates `${ENV}` values from the process environment and checks
    /// the configuration.
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`], naming the problem (never a secret value).
    pub fn resolve(&self) -> Result<ResolvedConfig, SqlError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`SqlConfig::resolve`] with a custom variable lookup (for tests and
    /// for callers with their own secret stores).
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`].
    pub fn resolve_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedConfig, SqlError> {
        let interp = |field: &str, v: &Option<String>| -> Result<Option<String>, SqlError> {
            v.as_deref()
                .map(|s| interpolate(field, s, &lookup))
                .transpose()
        };
        let url = match &self.url {
            Some(u) => Some(SecretString::from(interpolate(
                "url",
                u.expose_secret(),
                &lookup,
            )?)),
            None => None,
        };
        let password = match &self.password {
            Some(p) => Some(SecretString::from(interpolate(
                "password",
                p.expose_secret(),
                &lookup,
            )?)),
            None => None,
        };
        let url_kind = url
            .as_ref()
            .and_then(|u| DatabaseKind::from_url(u.expose_secret()));
        let kind = match (self.kind, url_kind) {
            (Some(k), Some(u)) if k != u => {
                return Err(SqlError::ConfigInvalid(format!(
                    "`type` is {k} but the url is for {u}"
                )));
            }
            (Some(k), _) => k,
            (None, Some(u)) => u,
            (None, None) if url.is_some() => {
                return Err(SqlError::ConfigInvalid(
                    "the url scheme must be postgres://, mysql:// or sqlite:".into(),
                ));
            }
            (None, None) => {
                return Err(SqlError::ConfigInvalid(
                    "`type` (postgresql, mysql or sqlite) or `url` is required".into(),
                ));
            }
        };
        let host = interp("host", &self.host)?;
        let port = match interp("port", &self.port)? {
            Some(p) if p.trim().is_empty() => None,
            Some(p) => Some(p.trim().parse::<u16>().map_err(|_| {
                SqlError::ConfigInvalid(format!(
                    "`port` must be a number from 1 to 65535, got {p:?}"
                ))
            })?),
            None => None,
        };
        let database = interp("database", &self.database)?;
        let username = interp("username", &self.username)?;
        if url.is_none() {
            match kind {
                DatabaseKind::Sqlite if database.is_none() => {
                    return Err(SqlError::ConfigInvalid(
                        "sqlite needs `database` (a file path) or `url`".into(),
                    ));
                }
                DatabaseKind::Postgres | DatabaseKind::MySql if host.is_none() => {
                    return Err(SqlError::ConfigInvalid(format!(
                        "{kind} needs `host` or `url`"
                    )));
                }
                _ => {}
            }
        }
        let pool = &self.pool;
        if pool.max_connections == 0 {
            return Err(SqlError::ConfigInvalid(
                "`pool.max_connections` must be at least 1".into(),
            ));
        }
        if pool.min_connections > pool.max_connections {
            return Err(SqlError::ConfigInvalid(format!(
                "`pool.min_connections` ({}) exceeds `pool.max_connections` ({})",
                pool.min_connections, pool.max_connections
            )));
        }
        if self.page_size == 0 || self.batch_size == 0 {
            return Err(SqlError::ConfigInvalid(
                "`page_size` and `batch_size` must be at least 1".into(),
            ));
        }
        if self.cursor_column.trim().is_empty() {
            return Err(SqlError::ConfigInvalid(
                "`cursor_column` must not be empty".into(),
            ));
        }
        if let Some(q) = &self.query {
            // Parse once now so a malformed query fails at start-up.
            crate::params::rewrite(q, kind)?;
        }
        let params = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), crm_core::Value::from_json(v.clone())))
            .collect();
        Ok(ResolvedConfig {
            kind,
            url,
            host,
            port,
            database,
            username,
            password,
            ssl_mode: self.ssl_mode,
            ssl_root_cert: self.ssl_root_cert.clone(),
            pool: self.pool.clone(),
            statement_timeout: self.statement_timeout.map(Duration::from_secs),
            query: self.query.clone(),
            params,
            cursor_column: self.cursor_column.clone(),
            primary_key: self.primary_key.clone(),
            lookback: Duration::from_secs(self.lookback),
            lookback_max_keys: self.lookback_max_keys,
            page_size: self.page_size,
            batch_size: self.batch_size,
            copy_threshold: self.copy_threshold,
            start: self.start,
        })
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values
/// (crm-core's interpolation, reported as this crate's config error).
fn interpolate(
    field: &str,
    text: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, SqlError> {
    crm_core::env::interpolate(field, text, lookup)
        .map_err(|e| SqlError::ConfigInvalid(e.message().to_owned()))
}

/// Builds a [`SqlConfig`] in code.
#[derive(Debug)]
pub struct SqlConfigBuilder {
    config: SqlConfig,
}

impl SqlConfigBuilder {
    /// Sets the engine.
    #[must_use]
    pub fn kind(mut self, kind: DatabaseKind) -> Self {
        self.config.kind = Some(kind);
        self
    }

    /// Sets a connection URL.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(SecretString::from(url.into()));
        self
    }

    /// Sets the host.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.host = Some(host.into());
        self
    }

    /// Sets the port.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = Some(port.to_string());
        self
    }

    /// Sets the database name (SQLite: the file path).
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.config.database = Some(database.into());
        self
    }

    /// Sets the user name.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.config.username = Some(username.into());
        self
    }

    /// Sets the password.
    #[must_use]
    pub fn password(mut self, password: SecretString) -> Self {
        self.config.password = Some(password);
        self
    }

    /// Sets the TLS mode.
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.config.ssl_mode = Some(mode);
        self
    }

    /// Sets the pool settings.
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.config.pool = pool;
        self
    }

    /// Sets the most connections of the pool.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.config.pool.max_connections = n;
        self
    }

    /// Sets the statement timeout.
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.config.statement_timeout = Some(timeout.as_secs().max(1));
        self
    }

    /// Sets the source query.
    #[must_use]
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.config.query = Some(query.into());
        self
    }

    /// Sets a named parameter of the query.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.config.params.insert(name.into(), value);
        self
    }

    /// Sets the cursor column.
    #[must_use]
    pub fn cursor_column(mut self, column: impl Into<String>) -> Self {
        self.config.cursor_column = column.into();
        self
    }

    /// Sets the columns that identify a row.
    #[must_use]
    pub fn primary_key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.primary_key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the lookback window.
    #[must_use]
    pub fn lookback(mut self, lookback: Duration) -> Self {
        self.config.lookback = lookback.as_secs();
        self
    }

    /// Sets the most rows remembered for the lookback window.
    #[must_use]
    pub fn lookback_max_keys(mut self, n: usize) -> Self {
        self.config.lookback_max_keys = n;
        self
    }

    /// Sets the default page size.
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.config.page_size = n;
        self
    }

    /// Sets the write batch size.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// Sets the batch size from which PostgreSQL writes use `COPY`.
    #[must_use]
    pub fn copy_threshold(mut self, n: usize) -> Self {
        self.config.copy_threshold = n;
        self
    }

    /// Sets the `:last_sync` of a first read.
    #[must_use]
    pub fn start(mut self, start: DateTime<Utc>) -> Self {
        self.config.start = Some(start);
        self
    }

    /// Checks the configuration (environment variables are looked up later,
    /// at connect time, so secrets are read as late as possible).
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`].
    pub fn build(self) -> Result<SqlConfig, SqlError> {
        // Validate everything that does not depend on the environment.
        self.config.resolve_with(|_| Some(String::new()))?;
        Ok(self.config)
    }
}

/// A [`SqlConfig`] with environment values filled in and every setting checked.
#[derive(Clone)]
#[non_exhaustive]
pub struct ResolvedConfig {
    /// The engine.
    pub kind: DatabaseKind,
    pub(crate) url: Option<SecretString>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) database: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<SecretString>,
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    pub(crate) ssl_mode: Option<SslMode>,
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) pool: PoolConfig,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) query: Option<String>,
    pub(crate) params: BTreeMap<String, crm_core::Value>,
    pub(crate) cursor_column: String,
    pub(crate) primary_key: Vec<String>,
    pub(crate) lookback: Duration,
    pub(crate) lookback_max_keys: usize,
    pub(crate) page_size: usize,
    pub(crate) batch_size: usize,
    pub(crate) copy_threshold: usize,
    pub(crate) start: Option<DateTime<Utc>>,
}

impl fmt::Debug for ResolvedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedConfig")
            .field("kind", &self.kind)
            .field("target", &self.describe_target())
            .finish_non_exhaustive()
    }
}

impl ResolvedConfig {
    /// Where the connection goes, without the password (`postgres://bob:***@db/x`).
    pub fn describe_target(&self) -> String {
        if let Some(u) = &self.url {
            return mask_url_passwords(u.expose_secret());
        }
        match self.kind {
            DatabaseKind::Sqlite => format!("sqlite:{}", self.database.as_deref().unwrap_or("")),
            k => format!(
                "{k}://{}{}@{}{}/{}",
                self.username.as_deref().unwrap_or(""),
                if self.password.is_some() { ":***" } else { "" },
                self.host.as_deref().unwrap_or(""),
                self.port.map(|p| format!(":{p}")).unwrap_or_default(),
                self.database.as_deref().unwrap_or("")
            ),
        }
    }

    /// The secrets to scrub from driver messages.
    pub(crate) fn redactor(&self) -> crate::error::Redactor {
        let mut r = crate::error::Redactor::default();
        if let Some(p) = &self.password {
            r.add(p.expose_secret());
        }
        if let Some(u) = &self.url
            && let Ok(parsed) = url::Url::parse(u.expose_secret())
            && let Some(p) = parsed.password()
        {
            r.add(p);
            if let Ok(decoded) = url_decode(p) {
                r.add(&decoded);
            }
        }
        r
    }
}

fn url_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
type: "postgresql"
host: "${DB_HOST}"
port: 5432
database: "bookings"
username: "${DB_USER}"
password: "${DB_PASSWORD}"
ssl_mode: "require"
query: |
  SELECT booking_id, client_name, updated_at
  FROM bookings
  WHERE updated_at >= :last_sync
pool:
  min_connections: 2
  max_connections: 10
  idle_timeout: 300
  max_lifetime: 3600
statement_timeout: 30
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB_HOST" => Some("db.internal".into()),
            "DB_USER" => Some("sync".into()),
            "DB_PASSWORD" => Some("pa55word!".into()),
            _ => None,
        }
    }

    #[test]
    fn seed_shape_parses_and_resolves() {
        let cfg: SqlConfig = serde_yaml::from_str(SEED).unwrap();
        assert_eq!(cfg.kind, Some(DatabaseKind::Postgres));
        assert_eq!(cfg.ssl_mode, Some(SslMode::Require));
        assert_eq!(cfg.pool.min_connections, 2);
        let r = cfg.resolve_with(env).unwrap();
        assert_eq!(r.host.as_deref(), Some("db.internal"));
        assert_eq!(r.port, Some(5432));
        assert_eq!(r.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.password.as_ref().unwrap().expose_secret(), "pa55word!");
        let shown = format!("{cfg:?} {r:?} {}", r.describe_target());
        assert!(!shown.contains("pa55word"), "{shown}");
    }

    #[test]
    fn missing_env_is_named_not_leaked() {
        let cfg: SqlConfig = serde_yaml::from_str(SEED).unwrap();
        let err = cfg.resolve_with(|_| None).unwrap_err().to_string();
        assert!(
            err.contains("DB_HOST") || err.contains("DB_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn url_password_never_printed() {
        let cfg = SqlConfig::from_url("postgres://bob:t0p-secret@localhost:5432/app").unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("t0p-secret"), "{shown}");
        assert!(shown.contains("bob:***@localhost"), "{shown}");
        let r = cfg.resolve_with(|_| None).unwrap();
        assert_eq!(r.kind, DatabaseKind::Postgres);
        assert!(!r.describe_target().contains("t0p-secret"));
        let red = r.redactor();
        assert_eq!(
            red.clean("auth failed for t0p-secret"),
            "auth failed for ***"
        );
    }

    #[test]
    fn defaults_and_env_defaults() {
        let cfg: SqlConfig =
            serde_yaml::from_str("type: mysql\nhost: \"${H:-127.0.0.1}\"\nport: \"${P:-3306}\"")
                .unwrap();
        let r = cfg.resolve_with(|_| None).unwrap();
        assert_eq!(r.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.port, Some(3306));
        assert_eq!(r.page_size, 1000);
        assert_eq!(r.cursor_column, "updated_at");
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(SqlConfig::builder().build().is_err());
        assert!(SqlConfig::from_url("oracle://x").is_err());
        assert!(
            SqlConfig::builder()
                .url("sqlite::memory:")
                .max_connections(0)
                .build()
                .is_err()
        );
        let cfg: SqlConfig = serde_yaml::from_str("type: postgres\nhost: h\nport: lots").unwrap();
        assert!(cfg.resolve_with(|_| None).is_err());
        assert!(serde_yaml::from_str::<SqlConfig>("type: postgres\nhots: h").is_err());
    }
}
