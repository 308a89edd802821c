//! Helpers shared by the integration tests (`mod support;` in each).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crm_sheets::sim::{SheetsData, SheetsSimConfig, SheetsSimulator};
use crm_sim::{SimHandle, SimServer};
use crm_sql::SqlConnector;

/// A fresh PostgreSQL database on the server of `CRM_TEST_POSTGRES_URL`
/// (default the local one), dropped again by [`Db::drop`].
#[allow(dead_code)]
pub(crate) struct Db {
    admin: SqlConnector,
    pub(crate) name: String,
    pub(crate) url: String,
}

#[allow(dead_code)]
impl Db {
    /// Creates the database `{prefix}_{tag}_{pid}`; `None` (the test skips)
    /// when the server is unavailable, unless `CI` is set: then it panics.
    pub(crate) async fn create(prefix: &str, tag: &str) -> Option<Db> {
        let admin_url = std::env::var("CRM_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = match SqlConnector::connect_url(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL test server unavailable (CI is set, so this fails): {e}"
                );
                return None;
            }
        };
        let name = format!("{prefix}_{tag}_{}", std::process::id());
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let host_end = base.rfind('/').unwrap();
        let url = match query {
            Some(q) => format!("{}/{name}?{q}", &base[..host_end]),
            None => format!("{}/{name}", &base[..host_end]),
        };
        Some(Db { admin, name, url })
    }

    pub(crate) async fn drop(self) {
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
        self.admin.close().await;
    }
}

/// Runs the binary off the async runtime, so the simulator keeps serving.
#[allow(dead_code)]
pub(crate) async fn crm_sync(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Starts the Google Sheets simulator on `config` with its demo data (seed
/// 7) and returns it with a handle on the data it serves.
#[allow(dead_code)]
pub(crate) async fn start_sheets_sim(config: SheetsSimConfig) -> (SimHandle, SheetsData) {
    let sim = SheetsSimulator::new(config);
    let data = sim.data();
    let handle = SimServer::new(sim)
        .seed(7)
        .demo_data(true)
        .start()
        .await
        .unwrap();
    (handle, data)
}

/// A HubSpot client of the simulator's private app, with limits high
/// enough for tests and a short search lookback.
#[allow(dead_code)]
pub(crate) fn hubspot_client(sim: &SimHandle) -> crm_hubspot::HubSpot {
    let token = sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = crm_hubspot::HubSpotConfig::private_app(secrecy::SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(crm_hubspot::RateLimits::new(1000, None, 100))
        .search_lookback(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    crm_hubspot::HubSpot::new(config).unwrap()
}
