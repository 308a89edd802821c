//! [`SqlConnector`]: one pool to one database, serving as [`crm_core::Source`],
//! [`crm_core::Sink`] and [`crm_core::Connector`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use crm_core::{Capabilities, Connector, Error, ErrorKind, ObjectSchema, Result};
use tokio::sync::RwLock;

use crate::config::{DatabaseKind, ResolvedConfig, SqlConfig};
use crate::db::Pool;
use crate::error::Redactor;
use crate::schema::{TableInfo, create_table_sql};

/// A connection pool to one PostgreSQL, MySQL/MariaDB or SQLite database,
/// used as a source (the configured query, read incrementally) and as a sink
/// (batched upserts).
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct SqlConnector {
    pub(crate) pool: Pool,
    pub(crate) cfg: Arc<ResolvedConfig>,
    pub(crate) redactor: Redactor,
    tables: Arc<RwLock<HashMap<String, Arc<TableInfo>>>>,
}

impl std::fmt::Debug for SqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConnector")
            .field("target", &self.cfg.describe_target())
            .finish_non_exhaustive()
    }
}

impl SqlConnector {
    /// Resolves `config` (environment values, checks) and opens the pool.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad configuration, [`ErrorKind::Auth`]
    /// for rejected credentials, [`ErrorKind::Transient`] when the server
    /// cannot be reached. Messages never include the password.
    pub async fn connect(config: &SqlConfig) -> Result<Self> {
        let cfg = config.resolve()?;
        let pool = Pool::connect(&cfg).await?;
        Ok(SqlConnector {
            pool,
            redactor: cfg.redactor(),
            cfg: Arc::new(cfg),
            tables: Arc::default(),
        })
    }

    /// Connects with a URL and default settings.
    ///
    /// # Errors
    /// As [`SqlConnector::connect`].
    pub async fn connect_url(url: &str) -> Result<Self> {
        SqlConnector::connect(&SqlConfig::from_url(url)?).await
    }

    /// The engine.
    pub fn database_kind(&self) -> DatabaseKind {
        self.pool.kind()
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ResolvedConfig {
        &self.cfg
    }

    /// Creates the table described by `schema` if it does not exist (see
    /// [`create_table_sql`] for the types used), with an index on
    /// (`updated_at`, primary key) when it has `updated_at`.
    ///
    /// # Errors
    /// [`ErrorKind::SchemaMismatch`] for a schema that cannot be a table;
    /// database errors as classified by this crate.
    ///
    /// # Cancel safety
    /// Each statement is idempotent; a dropped call can simply be repeated.
    pub async fn create_table(&self, schema: &ObjectSchema) -> Result<()> {
        let dialect = self.pool.kind();
        for stmt in create_table_sql(dialect, schema)? {
            match self.pool.execute(&stmt, &[]).await {
                Ok(_) => {}
                // MySQL has no CREATE INDEX IF NOT EXISTS: an existing index
                // (error 1061, "Duplicate key name") is fine.
                Err(crate::db::DbError::Sql(sqlx::Error::Database(e)))
                    if dialect == DatabaseKind::MySql
                        && e.message()
                            .to_ascii_lowercase()
                            .contains("duplicate key name") => {}
                Err(e) => return Err(e.into_error("sql.create_table", &self.redactor)),
            }
        }
        self.tables.write().await.remove(&schema.name);
        Ok(())
    }

    /// Runs a statement with no parameters and no result (DDL, maintenance).
    ///
    /// # Errors
    /// Database errors as classified by this crate.
    pub async fn execute_unprepared(&self, sql: &str) -> Result<u64> {
        self.pool
            .execute(sql, &[])
            .await
            .map_err(|e| e.into_error("sql.execute", &self.redactor))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The description of `table`, cached; `refresh` reads it again.
    pub(crate) async fn table_info(&self, table: &str, refresh: bool) -> Result<Arc<TableInfo>> {
        if !refresh && let Some(t) = self.tables.read().await.get(table) {
            return Ok(t.clone());
        }
        let info = self
            .pool
            .describe(table)
            .await
            .map_err(|e| e.into_error("sql.describe", &self.redactor))?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("table `{table}` does not exist"),
                )
                .with_operation("sql.describe")
            })?;
        let info = Arc::new(info);
        self.tables
            .write()
            .await
            .insert(table.to_owned(), info.clone());
        Ok(info)
    }
}

#[async_trait]
impl Connector for SqlConnector {
    fn kind(&self) -> &'static str {
        self.pool.kind().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::none().incremental().upsert().describe();
        if self.pool.kind() == DatabaseKind::Postgres {
            caps.bulk()
        } else {
            caps
        }
    }

    async fn check(&self) -> Result<()> {
        self.pool
            .execute("SELECT 1", &[])
            .await
            .map(drop)
            .map_err(|e| e.into_error("sql.check", &self.redactor))
    }

    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(self.table_info(object, true).await?.to_object_schema())
    }
}
