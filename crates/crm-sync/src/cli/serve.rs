//! `crm-sync serve CONFIG`: the webhook receiver and its processor, and
//! the review desk of the job's `review:` section, behind the hardening of
//! the job's `http:` section (TLS, allow-list, body limit, timeout, rate
//! limit; see [`crate::serve::harden`]), whose defaults apply without one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crm_core::env::{from_process, interpolate};
use crm_sql::SqlConnector;
use crm_sql::state::StateStore;
use secrecy::ExposeSecret;

use super::{CliError, job_base_dir};
use crate::access::Tokens;
use crate::config::{HttpSection, SyncJob};
use crate::monitor::{Monitor, MonitorConfig};
use crate::review::{AfterMatch, MatchTarget, RetryWriter, ReviewDesk};
use crate::runner::{resolve_sqlite_path, with_create_mode};
use crate::schedule::jobs;
use crate::schedule::jobs::RetryTarget;
use crate::schedule::jobs::open_job_store;
use crate::serve::harden::Hardening;
use crate::serve::process::webhook_schema;
use crate::serve::{Receiver, Server, process_pending, verifiers};
use crate::writeback::{WriteBackOverrides, run_write_back_job};
use crm_core::mapping::Frequency;

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

/// Runs the receiver and the review desk until Ctrl-C; queued events are
/// processed in the background (and, after a restart, those left from
/// before).
///
/// # Errors
/// A usage error for a bad config or unreachable database, a failure when
/// the server stops.
pub async fn run(args: &ServeArgs) -> Result<(), CliError> {
    let job = SyncJob::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
    if job.webhooks.is_none() && job.review.is_none() {
        return Err(CliError::usage(format!(
            "{}: add a `webhooks:` or a `review:` section (see docs/configuration.md) to serve",
            args.config.display()
        )));
    }
    let usage = |e: crm_core::Error| CliError::usage(e.to_string());
    let base = job_base_dir(&args.config);
    let hardening =
        Hardening::from_section(job.http.as_ref().unwrap_or(&HttpSection::default()), &base)
            .map_err(usage)?;
    let tls = hardening.is_tls();
    let dest = interpolate(
        "destination.url",
        job.destination.url.expose_secret(),
        from_process,
    )
    .map_err(usage)?;
    let dest = with_create_mode(resolve_sqlite_path(&dest, &base));
    // Sealing the job's personal fields, for the webhooks and the desk.
    let store = open_job_store(&job, &base).await.map_err(usage)?;
    let sink = SqlConnector::connect_url(&dest).await.map_err(usage)?;

    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| match (&job.webhooks, &job.review) {
            (Some(w), _) => w.listen.clone(),
            (None, Some(r)) => r.listen.clone(),
            (None, None) => String::new(),
        });
    let server = Server::bind(&listen).await.map_err(usage)?;
    let monitor = Arc::new(Monitor::new(
        store.clone(),
        MonitorConfig::from_job(&job).map_err(usage)?,
    ));
    let mut app = axum::Router::new();
    let mut processor = None;
    if let Some(section) = &job.webhooks {
        let verifiers = verifiers(section).map_err(usage)?;
        let table = section.destination.table.clone();
        sink.create_table(&webhook_schema(&table))
            .await
            .map_err(usage)?;
        let mut receiver = Receiver::new(store.clone(), verifiers).monitor(Arc::clone(&monitor));
        if let Some(url) = &section.public_url {
            receiver = receiver.public_url(url.clone());
        }
        let wake = receiver.queued();
        let poll = Duration::from_secs(args.poll.max(1));
        processor = Some(tokio::spawn(process_loop(
            store.clone(),
            sink.clone(),
            table,
            wake,
            poll,
        )));
        app = app.merge(receiver.router());
    }
    let job = Arc::new(job);
    if job.review.is_some() {
        let desk = review_desk(&job, &base, store.clone(), sink.clone(), tls)
            .await
            .map_err(usage)?;
        app = app.merge(desk.router());
    }
    {
        use std::io::Write as _;
        // A closed stdout (`| head -1`) must not stop the server.
        let mut out = std::io::stdout();
        let scheme = if tls { "https" } else { "http" };
        let _ = writeln!(out, "listening on {scheme}://{}", server.local_addr());
        if job.review.is_some() {
            let _ = writeln!(
                out,
                "review desk on {scheme}://{}/review",
                server.local_addr()
            );
        }
    }

    let alerts = tokio::spawn(alert_loop(monitor));
    let outcome = server
        .serve_hardened(app, &hardening, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    if let Some(p) = processor {
        p.abort();
    }
    alerts.abort();
    store.close().await;
    outcome.map_err(|e| CliError::failed(e.to_string()))
}

/// The desk of a job's `review:` section: its tokens, the pipeline's
/// destination for match decisions (with the job's write-back after each,
/// when it has `write_back:`), its campaigns for the name search, and its
/// retry target for dead letters. The desk's store seals the job's
/// personal fields ([`SyncJob::pii_fields`]) in the audit entries of its
/// decisions and in edited dead letters. Session cookies are `Secure` when
/// `review.secure_cookies` says so, else when the server speaks HTTPS
/// itself (`tls`) or `webhooks.public_url` is `https://`.
///
/// # Errors
/// An unset `${NAME}` in a token, no tokens, or campaigns that cannot be
/// read.
pub async fn review_desk(
    job: &Arc<SyncJob>,
    base: &std::path::Path,
    store: StateStore,
    sink: SqlConnector,
    tls: bool,
) -> crm_core::Result<ReviewDesk> {
    let Some(section) = &job.review else {
        return Err(crm_core::Error::invalid_input(
            "the job has no `review:` section",
        ));
    };
    if section.tokens.is_empty() {
        return Err(crm_core::Error::invalid_input(
            "`review.tokens` is empty: nobody could sign in",
        )
        .with_context("field", "review.tokens"));
    }
    let mut tokens = Tokens::new();
    for (i, t) in section.tokens.iter().enumerate() {
        let field = format!("review.tokens[{i}].token");
        let token = interpolate(&field, t.token.expose_secret(), from_process)?;
        if token.trim().len() < 16 {
            return Err(crm_core::Error::invalid_input(format!(
                "the token of {} is shorter than 16 characters; use a long random one",
                t.name
            ))
            .with_context("field", field));
        }
        tokens.add(t.name.clone(), t.role, &token.into());
    }
    let secure = section.secure_cookies.unwrap_or_else(|| {
        tls || job
            .webhooks
            .as_ref()
            .and_then(|w| w.public_url.as_deref())
            .is_some_and(|u| u.starts_with("https://"))
    });
    let sink: Arc<dyn crm_core::Sink> = Arc::new(sink);
    let target = RetryTarget::for_job(job);
    let key_field = target
        .key_field
        .clone()
        .unwrap_or_else(|| "booking_id".to_owned());
    let mut matches = MatchTarget::new(Arc::clone(&sink), job.destination.table.clone(), key_field);
    if job.write_back.is_some() {
        matches = matches.after(Arc::new(JobWriteBack {
            job: Arc::clone(job),
            base: base.to_path_buf(),
        }));
    }
    let campaigns = if job.matching.is_some() && job.campaigns.is_some() {
        crate::runner::job_campaigns(job)
            .await
            .map_err(|e| crm_core::Error::invalid_input(e.to_string()))?
    } else {
        Vec::new()
    };
    let store = crate::pii::seal_in(store, &job.pii_fields());
    Ok(ReviewDesk::new(store, tokens)
        .matches(matches)
        .campaigns(campaigns)
        .retries(RetryWriter::new(sink, target))
        .secure_cookies(secure))
}

/// The job's write-back of `on_match` fields, after a match decision.
struct JobWriteBack {
    job: Arc<SyncJob>,
    base: PathBuf,
}

#[async_trait::async_trait]
impl AfterMatch for JobWriteBack {
    async fn after_match(&self, _record: &crm_core::Record) -> crm_core::Result<()> {
        let overrides = WriteBackOverrides {
            base_dir: Some(self.base.clone()),
            ..WriteBackOverrides::default()
        };
        run_write_back_job(&self.job, Some(Frequency::OnMatch), overrides)
            .await
            .map(drop)
            .map_err(|e| crm_core::Error::invalid_input(e.to_string()))
    }
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
