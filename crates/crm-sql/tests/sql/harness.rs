//! Fresh, isolated databases for each test: a new PostgreSQL database, a new
//! MySQL/MariaDB database, or a new SQLite file. Server URLs come from
//! `CRM_TEST_POSTGRES_URL` / `CRM_TEST_MYSQL_URL` (defaulting to the local
//! servers). Without a server a test is skipped, unless `CI` is set: then it
//! fails.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use crm_sql::{DatabaseKind, SqlConfig, SqlConnector};

#[derive(Clone, Debug)]
pub(crate) struct TestDb {
    pub(crate) kind: DatabaseKind,
    pub(crate) url: String,
    pub(crate) name: String,
    admin_url: Option<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("crm_t_{}_{}_{:x}", std::process::id(), n, nanos)
}

fn admin_url(kind: DatabaseKind) -> Option<String> {
    match kind {
        DatabaseKind::Postgres => Some(
            std::env::var("CRM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        ),
        DatabaseKind::MySql => Some(
            std::env::var("CRM_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        ),
        _ => None,
    }
}

/// `url` with its path (database) replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    pub(crate) async fn create(kind: DatabaseKind) -> Option<TestDb> {
        let name = unique_name();
        match kind {
            DatabaseKind::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                Some(TestDb {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    name,
                    admin_url: None,
                })
            }
            _ => {
                let admin = admin_url(kind)?;
                let conn = match SqlConnector::connect_url(&admin).await {
                    Ok(c) => c,
                    Err(e) => {
                        if std::env::var_os("CI").is_some() {
                            panic!(
                                "{kind} test server unavailable (CI is set, so this fails): {e}"
                            );
                        }
                        eprintln!("skipping: {kind} test server unavailable: {e}");
                        return None;
                    }
                };
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                conn.close().await;
                Some(TestDb {
                    kind,
                    url: with_database(&admin, &name),
                    name,
                    admin_url: Some(admin),
                })
            }
        }
    }

    pub(crate) fn config(&self) -> crm_sql::SqlConfigBuilder {
        SqlConfig::builder()
            .url(self.url.clone())
            .max_connections(4)
    }

    pub(crate) async fn connect(&self) -> SqlConnector {
        SqlConnector::connect(&self.config().build().expect("config"))
            .await
            .expect("connect to test database")
    }

    pub(crate) async fn drop_database(&self) {
        match &self.admin_url {
            Some(admin) => {
                if let Ok(conn) = SqlConnector::connect_url(admin).await {
                    let sql = match self.kind {
                        DatabaseKind::Postgres => {
                            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
                        }
                        _ => format!("DROP DATABASE IF EXISTS {}", self.name),
                    };
                    let _ = conn.execute_unprepared(&sql).await;
                    conn.close().await;
                }
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }
}

/// Runs `test` against a fresh database of `kind` (or skips, see above).
pub(crate) async fn run<F, Fut>(kind: DatabaseKind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create(kind).await else {
        return;
    };
    test(db.clone()).await;
    db.drop_database().await;
}
