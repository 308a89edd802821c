//! `crm-sync run CONFIG` and `crm-sync demo`.

use std::io::IsTerminal;
use std::path::PathBuf;

use async_trait::async_trait;
use crm_sheets::GoogleCredentials;
use crm_sheets::sim::{SheetsSimConfig, SheetsSimulator};
use crm_sim::SimServer;

use super::{CliError, from_run_error, load_job, print_report};
use crate::config::SyncJob;
use crate::pipeline::{Mode, Observer};
use crate::report::RunReport;
use crate::runner::{Overrides, run_job};
use crate::state::Stage;

/// Options of `crm-sync run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file (YAML in the shape of the design documents).
    pub config: PathBuf,
    /// Read everything, not only what changed since the last run.
    #[arg(long)]
    pub full: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `crm-sync demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Booking rows in the simulated sheet.
    #[arg(long, default_value = "3000")]
    pub rows: usize,
    /// Seed of the simulated data (the same seed gives the same sheet).
    #[arg(long, default_value = "7")]
    pub seed: u64,
    /// Folder for the SQLite store (replaced on every demo).
    #[arg(long, default_value = "crm-sync-demo")]
    pub dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The demo's job: the file a user copies for a real sheet.
pub const DEMO_JOB: &str = include_str!("../../../../examples/bookings/bookings.yaml");
/// The demo's campaigns.
pub const DEMO_CAMPAIGNS: &str = include_str!("../../../../examples/bookings/campaigns.csv");

/// Shows progress on standard error: a bar redrawn in place on a terminal,
/// one plain line per page otherwise (logs, CI). Off with `--json`.
struct Progress {
    on: bool,
    terminal: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        Progress {
            on: !json,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn finish(&self) {
        if self.on && self.terminal {
            #[allow(clippy::print_stderr)]
            {
                eprintln!();
            }
        }
    }
}

#[async_trait]
impl Observer for Progress {
    async fn after_stage(&self, page: u64, stage: Stage, report: &RunReport) {
        if !self.on || stage != Stage::Checkpoint {
            return;
        }
        let line = format!(
            "page {page}: {} rows read, {} valid, {} skipped, {} stored",
            report.rows_read,
            report.valid,
            report.invalid,
            report.stored()
        );
        #[allow(clippy::print_stderr)]
        if self.terminal {
            // A spinner-style bar: the source's total is not known up front.
            let filled = (page as usize % 20) + 1;
            eprint!("\r[{:<20}] {line}", "#".repeat(filled));
        } else {
            eprintln!("{line}");
        }
    }
}

/// Runs `crm-sync run`.
pub async fn run(args: &RunArgs) -> Result<(), CliError> {
    let job = load_job(&args.config)?;
    let overrides = Overrides {
        base_dir: args.config.parent().map(PathBuf::from),
        ..Overrides::default()
    };
    let mode = if args.full {
        Mode::Full
    } else {
        Mode::Incremental
    };
    let progress = Progress::new(args.json);
    let report = run_job(&job, mode, overrides, Some(&progress)).await;
    progress.finish();
    print_report(&report.map_err(from_run_error)?, args.json)
}

/// Runs the demo and returns its report (the CLI prints it).
///
/// # Errors
/// As [`run_job`], plus a simulator that cannot start.
pub async fn demo_report(args: &DemoArgs) -> Result<RunReport, CliError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError::usage(format!("cannot create {}: {e}", args.dir.display())))?;
    for name in ["bookings.db", "bookings.db-wal", "bookings.db-shm"] {
        let path = args.dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| CliError::usage(format!("cannot replace {}: {e}", path.display())))?;
        }
    }
    let sim_config = SheetsSimConfig::default().demo_rows(args.rows);
    let sim = SheetsSimulator::new(sim_config.clone());
    let handle = SimServer::new(sim)
        .seed(args.seed)
        .demo_data(true)
        .start()
        .await
        .map_err(|e| CliError::failed(format!("the Google Sheets simulator did not start: {e}")))?;
    let job = SyncJob::from_yaml(DEMO_JOB, "examples/bookings/bookings.yaml")
        .map_err(|e| CliError::failed(e.to_string()))?;
    let campaigns =
        crate::campaigns::from_reader(DEMO_CAMPAIGNS.as_bytes(), "examples/bookings/campaigns.csv")
            .map_err(|e| CliError::failed(e.to_string()))?;
    let credentials = GoogleCredentials::authorized_user(
        sim_config.client_id,
        sim_config.client_secret.into(),
        sim_config.refresh_token.into(),
    )
    .with_token_uri(handle.url("/token"));
    let db = args.dir.join("bookings.db");
    let overrides = Overrides {
        sheet_base_url: Some(handle.base_url().to_owned()),
        google_credentials: Some(credentials),
        destination_url: Some(format!("sqlite://{}", db.display())),
        campaigns: Some(campaigns),
        base_dir: Some(args.dir.clone()),
        state_key: None,
    };
    let progress = Progress::new(args.json);
    let report = run_job(&job, Mode::Full, overrides, Some(&progress)).await;
    progress.finish();
    handle.shutdown().await;
    report.map_err(from_run_error)
}

/// Runs `crm-sync demo`.
pub async fn demo(args: &DemoArgs) -> Result<(), CliError> {
    let report = demo_report(args).await?;
    print_report(&report, args.json)?;
    if !args.json {
        #[allow(clippy::print_stdout)]
        {
            println!(
                "stored in {} (table `booking`; dead letters and the review queue in the crm_* tables)",
                args.dir.join("bookings.db").display()
            );
        }
    }
    Ok(())
}

/// Options of `crm-sync check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The job file.
    pub config: PathBuf,
}

/// Runs `crm-sync check`: tests the connections and the source schema.
pub async fn check(args: &CheckArgs) -> Result<(), CliError> {
    let job = load_job(&args.config)?;
    let overrides = Overrides {
        base_dir: args.config.parent().map(PathBuf::from),
        ..Overrides::default()
    };
    let lines = crate::runner::check_job(&job, overrides).await;
    let mut failed = Vec::new();
    let mut mismatches = Vec::new();
    for line in &lines {
        let text = match &line.outcome {
            Ok(found) => format!("ok      {:<14} {found}", line.part),
            Err(e) => {
                failed.push(line.part);
                if e.kind() == &crm_core::ErrorKind::SchemaMismatch {
                    mismatches.push(e.message().to_owned());
                }
                format!("FAILED  {:<14} {e}", line.part)
            }
        };
        #[allow(clippy::print_stdout)]
        {
            println!("{text}");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else if !mismatches.is_empty() {
        Err(CliError::usage(format!(
            "schema mismatch: {}. Move the columns back, or change `sheet.column_mapping` and \
             `sheet.expected_headers` to the sheet's new layout; then run the check again \
             ({} part(s) failed: {})",
            mismatches.join("; "),
            failed.len(),
            failed.join(", ")
        )))
    } else {
        Err(CliError::usage(format!(
            "{} failed: {}; fix what the lines above say, then run the check again",
            failed.len(),
            failed.join(", ")
        )))
    }
}
