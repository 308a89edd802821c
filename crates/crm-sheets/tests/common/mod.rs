//! Shared setup for the simulator tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_core::mapping::ColumnMapping;
use crm_core::{Change, Cursor, Page, ReadRequest, Source};
use crm_http::RetryPolicy;
use crm_sheets::sim::{
    DemoOptions, SheetsData, SheetsSimConfig, SheetsSimulator, SimSheet, demo_bookings,
};
use crm_sheets::{
    ClientOptions, GoogleCredentials, RateLimit, SheetsConfig, SheetsConnector, WriteBackColumns,
};
use crm_sim::{FaultPlan, SimHandle, SimServer};
use futures_util::StreamExt;
use rand_chacha::rand_core::SeedableRng;

pub const SPREADSHEET: &str = "test-spreadsheet";

pub struct Env {
    pub handle: SimHandle,
    pub data: SheetsData,
}

/// A 10,000-style sheet of clean bookings (no bad rows) with `rows` rows.
pub fn bookings(rows: usize, bad_rows: bool) -> SimSheet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    demo_bookings(&mut rng, &DemoOptions::new(rows).bad_rows(bad_rows))
}

pub async fn start(config: SheetsSimConfig, sheet: SimSheet, plan: Option<FaultPlan>) -> Env {
    let sim = SheetsSimulator::new(config);
    let data = sim.data();
    data.add_spreadsheet(SPREADSHEET, "Test bookings", sheet);
    let mut server = SimServer::new(sim).seed(7);
    if let Some(p) = plan {
        server = server.fault_plan(p);
    }
    let handle = server.start().await.expect("simulator starts");
    Env { handle, data }
}

pub fn unlimited() -> SheetsSimConfig {
    SheetsSimConfig::default().quotas(None, None, Duration::from_secs(60))
}

pub fn seed_columns() -> ColumnMapping {
    crm_sheets::mapping::seed_000_columns()
}

pub fn config(env: &Env) -> SheetsConfig {
    SheetsConfig::builder(SPREADSHEET, "Bookings")
        .columns(seed_columns())
        .rate_limit(RateLimit::new(10_000, Duration::from_secs(1)))
        .base_url(env.handle.base_url())
}

pub fn write_back() -> WriteBackColumns {
    WriteBackColumns::new(
        ColumnMapping::new([
            ("J", "actual_spend"),
            ("K", "pacing_percent"),
            ("L", "campaign_id"),
            ("M", "campaign_status"),
        ])
        .unwrap(),
    )
}

pub fn credentials(env: &Env) -> GoogleCredentials {
    let c = SheetsSimConfig::default();
    GoogleCredentials::authorized_user(c.client_id, c.client_secret.into(), c.refresh_token.into())
        .with_token_uri(env.handle.url("/token"))
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(12)
        .max_elapsed(Duration::from_secs(120))
        .initial_backoff(Duration::from_millis(100))
}

pub fn connector(env: &Env, config: SheetsConfig) -> SheetsConnector {
    let mut opts = ClientOptions::default();
    opts.retry = Some(fast_retry());
    SheetsConnector::with_options(config, &credentials(env), opts).expect("connector")
}

/// Reads everything; returns the pages.
pub async fn read_all(
    conn: &SheetsConnector,
    since: Option<Cursor>,
) -> crm_core::Result<Vec<Page>> {
    let req = match since {
        Some(c) => ReadRequest::since("bookings", c),
        None => ReadRequest::full("bookings"),
    };
    let mut stream = conn.read(req);
    let mut pages = Vec::new();
    while let Some(p) = stream.next().await {
        pages.push(p?);
    }
    Ok(pages)
}

pub fn changes(pages: &[Page]) -> Vec<Change> {
    pages.iter().flat_map(|p| p.changes.clone()).collect()
}

pub fn count(env: &Env, method: &str, suffix: &str) -> usize {
    env.handle
        .request_log()
        .count(|r| r.method == method && r.path.ends_with(suffix))
}
