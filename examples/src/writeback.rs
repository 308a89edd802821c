//! Seed 000 write-back: delivery figures from an SQL `pacing_snapshots`
//! table into the bookings Google Sheet, rows located by `booking_id`.
//!
//! The job is `examples/bookings/bookings.yaml` (the file `crm-sync demo`
//! runs): its `write_back:` block sends `pacing_snapshots.pacing_rate` to
//! the sheet's `Pacing %` column (K) hourly and `actual_spend` to `Actual
//! Spend` (J) daily, `platform_wins`, with an audit trail. The table:
//!
//! | column | sheet column | frequency |
//! |---|---|---|
//! | `booking_id` | A (the key) | |
//! | `actual_spend` | J `actual_spend` | daily |
//! | `pacing_rate` | K `pacing_percent` | hourly |
//! | `updated_at` | | the latest snapshot of a booking wins |
//!
//! [`start_sheet`] starts the Google Sheets simulator with the demo bookings
//! sheet, [`create_table`] and [`insert_figures`] fill the table, and [`run`]
//! runs one write-back with `crm_sync::writeback`.

use std::time::Duration;

use crm_core::mapping::Frequency;
use crm_core::{Error, Result};
use crm_sheets::GoogleCredentials;
use crm_sheets::sim::{SheetsData, SheetsSimConfig, SheetsSimulator};
use crm_sim::{SimHandle, SimServer};
use crm_sql::SqlConnector;
use crm_sync::config::SyncJob;
use crm_sync::runner::RunError;
use crm_sync::writeback::{WriteBackOverrides, WriteBackReport, run_write_back_job};

/// The job: seed 000's bookings sync with its write-back block.
pub const JOB_YAML: &str = include_str!("../bookings/bookings.yaml");

/// The figures table (SQLite, PostgreSQL and MySQL alike): one row per
/// booking and snapshot time.
pub const CREATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS pacing_snapshots (
    booking_id   VARCHAR(64) NOT NULL,
    actual_spend NUMERIC(14, 2),
    pacing_rate  NUMERIC(7, 4),
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (booking_id, updated_at)
)";

/// One snapshot of a booking's delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    /// The booking (the sheet's key).
    pub booking_id: String,
    /// Spend so far, as decimal text (`1250.50`).
    pub actual_spend: String,
    /// Pacing, as decimal text (`0.9125`).
    pub pacing_rate: String,
    /// When the snapshot was taken, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub updated_at: String,
}

impl Figure {
    /// A snapshot.
    pub fn new(booking_id: &str, actual_spend: &str, pacing_rate: &str, updated_at: &str) -> Self {
        Figure {
            booking_id: booking_id.to_owned(),
            actual_spend: actual_spend.to_owned(),
            pacing_rate: pacing_rate.to_owned(),
            updated_at: updated_at.to_owned(),
        }
    }
}

/// The job of [`JOB_YAML`].
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] if the file does not parse.
pub fn job() -> Result<SyncJob> {
    SyncJob::from_yaml(JOB_YAML, "examples/bookings/bookings.yaml")
        .map_err(|e| Error::invalid_input(e.to_string()))
}

/// Creates the figures table.
///
/// # Errors
/// Database errors.
pub async fn create_table(db: &SqlConnector) -> Result<()> {
    db.execute_unprepared(CREATE_TABLE_SQL).await.map(|_| ())
}

fn decimal_text(s: &str) -> Result<&str> {
    let ok = !s.is_empty()
        && s.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && c == '-'));
    if ok {
        Ok(s)
    } else {
        Err(Error::invalid_input(format!("{s:?} is not a decimal")))
    }
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Adds snapshots to the table.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] for a figure that is not a
/// decimal; database errors.
pub async fn insert_figures(db: &SqlConnector, figures: &[Figure]) -> Result<()> {
    for f in figures {
        db.execute_unprepared(&format!(
            "INSERT INTO pacing_snapshots (booking_id, actual_spend, pacing_rate, updated_at) \
             VALUES ({}, {}, {}, {})",
            quoted(&f.booking_id),
            decimal_text(&f.actual_spend)?,
            decimal_text(&f.pacing_rate)?,
            quoted(&f.updated_at),
        ))
        .await?;
    }
    Ok(())
}

/// The running simulator with the demo bookings sheet.
pub struct SheetSim {
    /// The server.
    pub handle: SimHandle,
    /// The sheets it serves (to look at or edit cells directly).
    pub data: SheetsData,
    /// Its settings (spreadsheet id, sheet title, OAuth client).
    pub config: SheetsSimConfig,
}

impl SheetSim {
    /// Credentials the simulator accepts.
    pub fn credentials(&self) -> GoogleCredentials {
        GoogleCredentials::authorized_user(
            self.config.client_id.clone(),
            self.config.client_secret.clone().into(),
            self.config.refresh_token.clone().into(),
        )
        .with_token_uri(self.handle.url("/token"))
    }
}

/// Starts the Google Sheets simulator with `rows` demo bookings (the sheet
/// `crm-sync demo` reads: `BK-000001` on row 2, `BK-000002` on row 3, ...),
/// without request quotas.
///
/// # Errors
/// When the simulator cannot listen.
pub async fn start_sheet(rows: usize, seed: u64) -> Result<SheetSim> {
    let config =
        SheetsSimConfig::default()
            .demo_rows(rows)
            .quotas(None, None, Duration::from_secs(60));
    let sim = SheetsSimulator::new(config.clone());
    let data = sim.data();
    let handle = SimServer::new(sim)
        .seed(seed)
        .demo_data(true)
        .start()
        .await
        .map_err(|e| Error::invalid_input(format!("the simulator did not start: {e}")))?;
    Ok(SheetSim {
        handle,
        data,
        config,
    })
}

/// Runs one write-back of `job` at `frequency` against the simulator, with
/// the figures (and the state store) in the database at `database_url`.
///
/// # Errors
/// As [`run_write_back_job`].
pub async fn run(
    job: &SyncJob,
    frequency: Option<Frequency>,
    sim: &SheetSim,
    database_url: &str,
) -> std::result::Result<WriteBackReport, RunError> {
    let mut overrides = WriteBackOverrides::default();
    overrides.sheet_base_url = Some(sim.handle.base_url().to_owned());
    overrides.google_credentials = Some(sim.credentials());
    overrides.database_url = Some(database_url.to_owned());
    overrides.campaigns = Some(Vec::new());
    run_write_back_job(job, frequency, overrides).await
}
