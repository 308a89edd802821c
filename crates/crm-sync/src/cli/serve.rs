//! `crm-sync serve CONFIG`: the webhook receiver and its processor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crm_core::env::{from_process, interpolate};
use crm_sql::SqlConnector;
use crm_sql::state::StateStore;
use secrecy::ExposeSecret;

use super::{CliError, job_base_dir};
use crate::config::SyncJob;
use crate::monitor::{Monitor, MonitorConfig};
use crate::runner::{resolve_sqlite_path, state_key, with_create_mode};
use crate::schedule::jobs;
use crate::serve::process::webhook_schema;
use crate::serve::{Receiver, Server, process_pending, verifiers};

/// Options of `crm-sync serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The job file; its `webhooks:` section configures the receiver.
    pub config: PathBuf,
    /// Listen here instead of `webhooks.listen`.
    #[arg(long)]
    pub listen: Option<String>,
    /// Seconds between looks at the queue when no delivery wakes the processor.
    #[arg(long, default_value = "5")]
    pub poll: u64,
}

/// Events taken from the queue per round.
const BATCH: u32 = 100;

/// Runs the receiver until Ctrl-C; queued events are processed in the
/// background (and, after a restart, those left from before).
///
/// # Errors
/// A usage error for a bad config or unreachable database, a failure when
/// the server stops.
pub async fn run(args: &ServeArgs) -> Result<(), CliError> {
    let job = SyncJob::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
    let Some(section) = &job.webhooks else {
        return Err(CliError::usage(format!(
            "{}: add a `webhooks:` section (see docs/configuration.md) to serve webhooks",
            args.config.display()
        )));
    };
    let usage = |e: crm_core::Error| CliError::usage(e.to_string());
    let verifiers = verifiers(section).map_err(usage)?;
    let base = job_base_dir(&args.config);
    let dest = interpolate(
        "destination.url",
        job.destination.url.expose_secret(),
        from_process,
    )
    .map_err(usage)?;
    let dest = with_create_mode(resolve_sqlite_path(&dest, &base));
    let state_url = match &job.state.url {
        Some(url) => with_create_mode(resolve_sqlite_path(
            &interpolate("state.url", url.expose_secret(), from_process).map_err(usage)?,
            &base,
        )),
        None => dest.clone(),
    };
    let key = state_key(&job).map_err(|e| CliError::usage(e.to_string()))?;
    let store = StateStore::open_url(&state_url, key).await.map_err(usage)?;
    let sink = SqlConnector::connect_url(&dest).await.map_err(usage)?;
    let table = section.destination.table.clone();
    sink.create_table(&webhook_schema(&table))
        .await
        .map_err(usage)?;

    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| section.listen.clone());
    let server = Server::bind(&listen).await.map_err(usage)?;
    let monitor = Arc::new(Monitor::new(
        store.clone(),
        MonitorConfig::from_job(&job).map_err(usage)?,
    ));
    let mut receiver = Receiver::new(store.clone(), verifiers).monitor(Arc::clone(&monitor));
    if let Some(url) = &section.public_url {
        receiver = receiver.public_url(url.clone());
    }
    let wake = receiver.queued();
    #[allow(clippy::print_stdout)]
    {
        println!("listening on http://{}", server.local_addr());
    }

    let poll = Duration::from_secs(args.poll.max(1));
    let processor = tokio::spawn(process_loop(store.clone(), sink, table, wake, poll));
    let alerts = tokio::spawn(alert_loop(monitor));
    let outcome = server
        .serve(receiver, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    processor.abort();
    alerts.abort();
    store.close().await;
    outcome.map_err(|e| CliError::failed(e.to_string()))
}

#[allow(clippy::print_stderr)]
async fn process_loop(
    store: StateStore,
    sink: SqlConnector,
    table: String,
    wake: Arc<tokio::sync::Notify>,
    poll: Duration,
) {
    loop {
        match process_pending(&store, &sink, &table, BATCH).await {
            Ok(r) if r.processed + r.failed + r.retried > 0 => {
                eprintln!(
                    "webhooks: {} processed, {} to retry, {} failed, {} rows written",
                    r.processed, r.retried, r.failed, r.written
                );
                // More may be waiting; a batch with only retries waits for the poll.
                if r.processed + r.failed > 0 {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("webhooks: the queue could not be read: {e}"),
        }
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// Evaluates the alert rules on the seed 003 health-check cadence (every
/// 5 minutes), delivering changes to the configured webhook.
#[allow(clippy::print_stderr)]
async fn alert_loop(monitor: Arc<Monitor>) {
    let schedule = jobs::health_check_schedule();
    loop {
        let now = chrono::Utc::now();
        match jobs::evaluate_alerts(&monitor, now).await {
            Ok(r) => {
                if !r.notifications.is_empty() || !r.delivery_errors.is_empty() {
                    eprintln!(
                        "alerts: {} changes, {} delivered, {} waiting, {} delivery errors",
                        r.notifications.len(),
                        r.delivered,
                        r.pending,
                        r.delivery_errors.len()
                    );
                }
            }
            Err(e) => eprintln!("alerts: evaluation failed: {e}"),
        }
        let next = schedule
            .next_after(chrono::Utc::now())
            .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(300));
        tokio::time::sleep(next).await;
    }
}
