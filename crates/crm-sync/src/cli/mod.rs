//! The `crm-sync` command line.

pub mod contacts;
pub mod matching;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod sim;
pub mod worker;
pub mod writeback;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::SyncJob;
use crate::runner::RunError;

/// Sync CRM and booking data between Salesforce, HubSpot, Pipedrive, Marketo,
/// Google Sheets and SQL databases.
#[derive(Debug, Parser)]
#[command(name = "crm-sync", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a sync job once and print its report.
    Run(run::RunArgs),
    /// Test a job's connections and source schema without syncing.
    Check(run::CheckArgs),
    /// Sync a simulated bookings sheet into a SQLite file: no credentials, no network.
    Demo(run::DemoArgs),
    /// Match a bookings CSV to a campaigns CSV (first column id, second name).
    Match(matching::MatchArgs),
    /// Serve a provider's simulator standalone (prints one JSON line when ready).
    Sim(sim::SimArgs),
    /// Receive webhooks (HubSpot, Pipedrive, seed 001's customer endpoint) and process them.
    Serve(serve::ServeArgs),
    /// Take jobs from the shared job table and run them (scale out by starting more).
    Worker(worker::WorkerArgs),
    /// Add jobs to the shared job table.
    Enqueue(worker::EnqueueArgs),
    /// Write platform figures back into the job's sheet (seed 000 `write_back:`).
    Writeback(writeback::WriteBackArgs),
    /// The unified contact view across CRMs, keyed by email (seed 004).
    Contacts(contacts::ContactsArgs),
    /// Run a job's seed 003 background jobs on their cadences until Ctrl-C.
    Schedule(schedule::ScheduleArgs),
    /// Resume a job's connection paused by a schema mismatch.
    Resume(resume::ResumeArgs),
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Something the user must fix (config, paths, arguments): exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// A run that could not finish: exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Match(args) => matching::run(&args),
        Command::Run(args) => block_on(run::run(&args)),
        Command::Demo(args) => block_on(run::demo(&args)),
        Command::Sim(args) => block_on(sim::run(&args)),
        Command::Check(args) => block_on(run::check(&args)),
        Command::Serve(args) => block_on(serve::run(&args)),
        Command::Worker(args) => block_on(worker::run(&args)),
        Command::Enqueue(args) => block_on(worker::enqueue(&args)),
        Command::Writeback(args) => block_on(writeback::run(&args)),
        Command::Resume(args) => block_on(resume::run(&args)),
        Command::Contacts(args) => block_on(contacts::run(&args)),
        Command::Schedule(args) => block_on(schedule::run(&args)),
    }
}

fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(f: F) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

/// Loads the job file at `path`; a bad one is a usage error that points at
/// the configuration docs.
pub(crate) fn load_job(path: &Path) -> Result<SyncJob, CliError> {
    SyncJob::load(path).map_err(|e| {
        CliError::usage(format!(
            "{e}. Fix the job file; docs/configuration.md lists every key."
        ))
    })
}

/// The folder a job file's relative paths are resolved against (`.` when
/// the path has no parent).
pub(crate) fn job_base_dir(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// A setup error is the user's to fix (exit 2), a run error is not (exit 1).
pub(crate) fn from_run_error(e: RunError) -> CliError {
    match e {
        RunError::Setup(_) => CliError::usage(e.to_string()),
        RunError::Run(_) => CliError::failed(e.to_string()),
    }
}

/// Prints a report on standard output: as pretty JSON with `json`, else as
/// its text.
pub(crate) fn print_report<T: serde::Serialize + fmt::Display>(
    report: &T,
    json: bool,
) -> Result<(), CliError> {
    let text = if json {
        serde_json::to_string_pretty(report)
            .map_err(|e| CliError::failed(format!("the report cannot be written: {e}")))?
    } else {
        report.to_string()
    };
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    Ok(())
}
