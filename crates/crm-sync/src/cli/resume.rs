//! `crm-sync resume CONFIG`: makes a job's paused connection active again.

use std::path::PathBuf;

use super::{CliError, job_base_dir, load_job};
use crate::schedule::jobs::{Resumed, find_job_connection, open_job_store, resume};

/// Options of `crm-sync resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The job file whose connection to resume.
    pub config: PathBuf,
}

/// Runs `crm-sync resume`: exit 0 when the connection is active (again),
/// 2 for a bad job file or a job that has no connection in its state store.
pub async fn run(args: &ResumeArgs) -> Result<(), CliError> {
    let job = load_job(&args.config)?;
    let base = job_base_dir(&args.config);
    let store = open_job_store(&job, &base)
        .await
        .map_err(|e| CliError::usage(e.to_string()))?;
    let result = async {
        let conn = find_job_connection(&store, &job.name)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
            .ok_or_else(|| {
                CliError::usage(format!(
                    "job {:?} has no connection in its state store (it has never run): \
                     nothing to resume",
                    job.name
                ))
            })?;
        resume(&store, &conn, &job.name, "cli:resume")
            .await
            .map_err(|e| CliError::failed(e.to_string()))
    }
    .await;
    store.close().await;
    let line = match result? {
        Resumed::Resumed { was, last_error } => format!(
            "job {}: connection resumed ({was} -> active{}); scheduled runs start again",
            job.name,
            last_error
                .map(|e| format!(", last error was: {e}"))
                .unwrap_or_default()
        ),
        Resumed::AlreadyActive => format!("job {}: connection already active", job.name),
    };
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    Ok(())
}
