//! `crm-sync writeback CONFIG [--frequency daily|hourly|on_change|on_match]`.

use std::path::PathBuf;

use crm_core::mapping::Frequency;

use super::{CliError, from_run_error, load_job, print_report};
use crate::writeback::{WriteBackOverrides, run_write_back_job};

/// Options of `crm-sync writeback`.
#[derive(Debug, clap::Args)]
pub struct WriteBackArgs {
    /// The job file (with `write_back:` and `sheet.write_back.columns`).
    pub config: PathBuf,
    /// Write only the fields pushed at this frequency (default: every field).
    #[arg(long, value_parser = parse_frequency)]
    pub frequency: Option<Frequency>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_frequency(s: &str) -> Result<Frequency, String> {
    s.parse::<Frequency>()
        .map_err(|_| format!("{s:?} is not a frequency: use daily, hourly, on_change or on_match"))
}

/// Runs `crm-sync writeback`.
pub async fn run(args: &WriteBackArgs) -> Result<(), CliError> {
    let job = load_job(&args.config)?;
    let overrides = WriteBackOverrides {
        base_dir: args.config.parent().map(PathBuf::from),
        ..WriteBackOverrides::default()
    };
    let report = run_write_back_job(&job, args.frequency, overrides)
        .await
        .map_err(from_run_error)?;
    print_report(&report, args.json)
}
