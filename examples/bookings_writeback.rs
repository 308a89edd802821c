//! Seed 000 write-back: delivery figures from an SQLite `pacing_snapshots`
//! table into the bookings Google Sheet (the simulator's demo sheet), by
//! `booking_id`.
//!
//! ```text
//! cargo run -p crm-examples --example bookings_writeback
//! ```
//!
//! It starts the Google Sheets simulator, creates the table in a fresh
//! SQLite file under the temporary folder, runs the hourly write-back
//! (`Pacing %`), then the daily one (`Actual Spend`), then both again (which
//! write nothing), and prints what changed. With a real sheet the same job
//! runs as `crm-sync writeback examples/bookings/bookings.yaml --frequency hourly`.
#![allow(clippy::print_stdout)] // A command-line app: printing is its output.

use crm_core::mapping::Frequency;
use crm_examples::writeback::{self, Figure};
use crm_sql::SqlConnector;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let sim = writeback::start_sheet(50, 7).await?;
    let dir = std::env::temp_dir().join(format!("crm-writeback-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("figures.db").display());
    let db = SqlConnector::connect_url(&url).await?;
    writeback::create_table(&db).await?;
    writeback::insert_figures(
        &db,
        &[
            Figure::new("BK-000001", "1250.50", "0.9125", "2027-03-01 06:00:00"),
            Figure::new("BK-000002", "310.00", "0.4000", "2027-03-01 06:00:00"),
            Figure::new("BK-000003", "88.25", "1.0500", "2027-03-01 06:00:00"),
            // A newer snapshot of BK-000001: this one is written.
            Figure::new("BK-000001", "1300.75", "0.9500", "2027-03-01 07:00:00"),
            // Not in the sheet: reported, not appended.
            Figure::new("BK-999999", "1.00", "0.1000", "2027-03-01 06:00:00"),
        ],
    )
    .await?;
    db.close().await;

    let job = writeback::job()?;
    for frequency in [
        Frequency::Hourly,
        Frequency::Daily,
        Frequency::Hourly,
        Frequency::Daily,
    ] {
        let report = writeback::run(&job, Some(frequency), &sim, &url).await?;
        println!("{report}\n");
    }
    let updates = sim
        .handle
        .request_log()
        .count(|r| r.method == "POST" && r.path.ends_with("/values:batchUpdate"));
    println!("values.batchUpdate calls: {updates}");
    sim.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
