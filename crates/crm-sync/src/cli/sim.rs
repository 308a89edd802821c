//! `crm-sync sim <provider>`: a provider's simulator as a standalone server,
//! for testing other apps against it (as people do with stripe-mock).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crm_sim::generic::{GenericConfig, GenericSimulator};
use crm_sim::{FaultPlan, SimServer, Simulator};

use super::CliError;

/// The simulated providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// Google Sheets API v4.
    Sheets,
    /// Salesforce REST, sObject Collections and Bulk API 2.0.
    Salesforce,
    /// HubSpot CRM v3.
    Hubspot,
    /// Pipedrive v1/v2.
    Pipedrive,
    /// Marketo REST.
    Marketo,
    /// The generic REST simulator of crm-sim.
    Generic,
}

/// Options of `crm-sync sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Which API to simulate.
    pub provider: Provider,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate (its PEM path is printed).
    #[arg(long)]
    pub tls: bool,
    /// Where to write the certificate PEM (default: a temporary file).
    #[arg(long)]
    pub cert_path: Option<PathBuf>,
    /// Seed of the demo data and of the fault plan's random choices.
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// Start without the seeded demo data.
    #[arg(long)]
    pub no_demo_data: bool,
    /// Initial records: JSON, YAML or CSV (`{"contacts": [{...}]}`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A fault plan (JSON or YAML) to inject 429s, 5xx, slow and dropped responses.
    #[arg(long)]
    pub fault_plan: Option<PathBuf>,
}

fn simulator(provider: Provider) -> Arc<dyn Simulator> {
    match provider {
        Provider::Sheets => Arc::new(crm_sheets::sim::SheetsSimulator::new(Default::default())),
        Provider::Salesforce => Arc::new(crm_salesforce::sim::SalesforceSimulator::new(
            Default::default(),
        )),
        Provider::Hubspot => Arc::new(crm_hubspot::sim::HubSpotSimulator::new(Default::default())),
        Provider::Pipedrive => Arc::new(crm_pipedrive::sim::PipedriveSimulator::new(
            Default::default(),
        )),
        Provider::Marketo => Arc::new(crm_marketo::sim::MarketoSimulator::new(Default::default())),
        Provider::Generic => Arc::new(GenericSimulator::new(GenericConfig::default())),
    }
}

/// Builds the server for `args` (not started).
///
/// # Errors
/// A usage error when the data or fault-plan file cannot be read.
pub fn server(args: &SimArgs) -> Result<SimServer, CliError> {
    let mut server = SimServer::from_arc(simulator(args.provider))
        .listen(args.listen)
        .tls(args.tls)
        .seed(args.seed)
        .demo_data(!args.no_demo_data);
    if let Some(p) = &args.cert_path {
        server = server.cert_path(p);
    }
    if let Some(p) = &args.data {
        server = server.data(crm_sim::store::load_data_file(p).map_err(CliError::usage)?);
    }
    if let Some(p) = &args.fault_plan {
        let plan = FaultPlan::from_file(p)
            .map_err(|e| CliError::usage(format!("fault plan {}: {e}", p.display())))?;
        server = server.fault_plan(plan);
    }
    Ok(server)
}

/// Runs `crm-sync sim`: prints one JSON line when ready
/// (`{"provider", "base_url", "ca_cert", "credentials"}`) and serves until
/// interrupted.
pub async fn run(args: &SimArgs) -> Result<(), CliError> {
    let handle = server(args)?.start().await.map_err(|e| {
        CliError::usage(format!(
            "the simulator could not listen on {}: {e}. Pick a free port with --listen 127.0.0.1:PORT",
            args.listen
        ))
    })?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", handle.ready_line());
    }
    let _ = tokio::signal::ctrl_c().await;
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .map_err(|_| CliError::failed("the simulator did not shut down within 5 s"))
}
