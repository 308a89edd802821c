//! `crm-sim-server`: serves the generic simulator until interrupted.
//!
//! ```text
//! crm-sim-server [--listen 127.0.0.1:PORT] [--tls] [--cert-path FILE]
//!                [--seed N] [--demo-data] [--data FILE] [--fault-plan FILE]
//!                [--page-size N] [--batch-max N] [--rate-limit N]
//! ```
//!
//! `--data` takes JSON or YAML (`{"contacts": [{...}]}`) or a CSV file whose
//! stem names the object (`contacts.csv`). When ready it prints one JSON
//! line on stdout:
//! `{"provider", "base_url", "ca_cert", "credentials": {...}}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crm_sim::generic::{GenericConfig, GenericSimulator};
use crm_sim::{FaultPlan, SimServer, Window};

const USAGE: &str = "usage: crm-sim-server [--listen 127.0.0.1:PORT] [--tls] [--cert-path FILE] \
[--seed N] [--demo-data] [--data FILE] [--fault-plan FILE] [--page-size N] [--batch-max N] \
[--rate-limit N_PER_SECOND]";

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    tls: bool,
    cert_path: Option<PathBuf>,
    seed: u64,
    demo_data: bool,
    data: Option<PathBuf>,
    fault_plan: Option<PathBuf>,
    page_size: Option<usize>,
    batch_max: Option<usize>,
    rate_limit: Option<u32>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
        cert_path: None,
        seed: 0,
        demo_data: false,
        data: None,
        fault_plan: None,
        page_size: None,
        batch_max: None,
        rate_limit: None,
    };
    fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("{flag}: not a number: {s}"))
    }
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let take = |it: &mut dyn Iterator<Item = String>| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = take(&mut it)?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {v}"))?;
            }
            "--tls" => args.tls = true,
            "--demo-data" => args.demo_data = true,
            "--cert-path" => args.cert_path = Some(PathBuf::from(take(&mut it)?)),
            "--seed" => args.seed = number(&take(&mut it)?, "--seed")?,
            "--data" => args.data = Some(PathBuf::from(take(&mut it)?)),
            "--fault-plan" => args.fault_plan = Some(PathBuf::from(take(&mut it)?)),
            "--page-size" => args.page_size = Some(number(&take(&mut it)?, "--page-size")?),
            "--batch-max" => args.batch_max = Some(number(&take(&mut it)?, "--batch-max")?),
            "--rate-limit" => args.rate_limit = Some(number(&take(&mut it)?, "--rate-limit")?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(args))
}

/// Reads `--data FILE`: JSON or YAML mapping object types to arrays of
/// records, or CSV records of the object named by the file stem
/// (`contacts.csv` loads `contacts`).
async fn run(args: Args) -> Result<(), String> {
    let mut config = GenericConfig::default();
    if let Some(n) = args.page_size {
        let max = config.page_size_max.max(n);
        config = config.page_size(n, max);
    }
    if let Some(n) = args.batch_max {
        config = config.batch_max(n);
    }
    if let Some(n) = args.rate_limit {
        config = config.rate_limits(if n == 0 {
            Vec::new()
        } else {
            vec![Window::per_second(n)]
        });
    }
    let mut server = SimServer::new(GenericSimulator::new(config))
        .listen(args.listen)
        .tls(args.tls)
        .seed(args.seed)
        .demo_data(args.demo_data);
    if let Some(p) = &args.cert_path {
        server = server.cert_path(p);
    }
    if let Some(p) = &args.data {
        server = server.data(crm_sim::store::load_data_file(p)?);
    }
    if let Some(p) = &args.fault_plan {
        server = server.fault_plan(FaultPlan::from_file(p).map_err(|e| e.to_string())?);
    }
    let handle = server.start().await.map_err(|e| e.to_string())?;
    #[allow(clippy::print_stdout)] // The ready line is the binary's output.
    {
        println!("{}", handle.ready_line());
    }
    let _ = tokio::signal::ctrl_c().await;
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .map_err(|_| "shutdown timed out".to_owned())
}

#[allow(clippy::print_stderr)] // Usage and startup errors go to stderr.
fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("crm-sim-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crm-sim-server: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm-sim-server: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "--listen",
            "127.0.0.1:8089",
            "--tls",
            "--seed=9",
            "--rate-limit",
            "10",
        ])
        .ok()
        .flatten();
        let a = a.map(|a| (a.listen.port(), a.tls, a.seed, a.rate_limit));
        assert_eq!(a, Some((8089, true, 9, Some(10))));
        assert!(parse(&["--seed", "x"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--listen"]).is_err());
        assert!(matches!(parse(&["--help"]), Ok(None)));
    }
}
