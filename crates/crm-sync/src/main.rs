//! The `crm-sync` command-line tool.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use crm_sync::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("crm-sync: {e}");
            }
            e.exit_code()
        }
    }
}
