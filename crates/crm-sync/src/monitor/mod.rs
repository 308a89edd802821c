//! Monitoring of syncs: seed 001's health view and alert rules, seed 002's
//! metrics.
//!
//! - [`health`]: lag per connection and direction from the state store's
//!   runs, classified `HEALTHY` / `WARNING` / `CRITICAL` with per-direction
//!   [`Thresholds`] (seed 001's by default).
//! - [`metrics`]: records synced per hour, success and failure rates over a
//!   window of runs; API error rate, latency and quota use from crm-http's
//!   per-provider metrics; the Prometheus text format, served at
//!   `GET /metrics` by `crm-sync serve`.
//! - [`alerts`]: `<metric> <op> <number>` rules (`lag_minutes > 60`,
//!   `failure_rate > 0.05`), firing once when a condition becomes true and
//!   resolving once when it clears.
//! - [`Monitor`]: ties them to a store and delivers alert notifications as
//!   JSON POSTs to a webhook, retried with backoff; a notification that
//!   cannot be delivered waits for the next evaluation, and never stops it.
//!
//! ```
//! use crm_sql::state::SyncDirection;
//! use crm_sync::monitor::{HealthStatus, Thresholds};
//!
//! let t = Thresholds::default();
//! assert_eq!(t.classify(SyncDirection::FromCrm, 31), HealthStatus::Warning);
//! assert_eq!(t.classify(SyncDirection::ToCrm, 121), HealthStatus::Critical);
//! ```

pub mod alerts;
pub mod health;
pub mod metrics;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crm_core::{Error, Result};
use crm_http::{Metrics, MetricsSnapshot};
use crm_sql::state::StateStore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use alerts::{AlertBook, AlertNotification, AlertRule, AlertStatus, Condition, Metric, Op};
pub use health::{DirectionThresholds, HealthRow, HealthStatus, Thresholds, sync_health};
pub use metrics::{Exposition, ProviderMetrics, Quota, QuotaTracker, SyncMetrics, sync_metrics};

/// The `monitoring:` block of a job.
///
/// ```yaml
/// monitoring:
///   window: 1h
///   webhook_url: ${ALERT_WEBHOOK_URL}
///   thresholds:
///     from_crm: { warning_minutes: 30, critical_minutes: 60 }
///     to_crm: { warning_minutes: 60, critical_minutes: 120 }
///   quotas:
///     hubspot: { requests: 1000, per: 1h }
///   delivery: { attempts: 4, initial_backoff_ms: 500, max_backoff_ms: 30000, timeout_secs: 10 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSection {
    /// The window of the run metrics (`1h`, `15m`, `1d`); default `1h`.
    #[serde(default = "default_window")]
    pub window: String,
    /// Where alert notifications are POSTed; a secret (chat webhook URLs
    /// carry tokens), `${NAME}` resolved when the monitor is built.
    #[serde(default)]
    pub webhook_url: Option<SecretString>,
    /// Lag limits per direction.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Request quotas per provider label.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaSection>,
    /// How notifications are retried.
    #[serde(default)]
    pub delivery: DeliverySection,
    /// How many of each connection's latest runs are read (default 500).
    #[serde(default = "default_run_limit")]
    pub run_limit: u32,
}

fn default_window() -> String {
    "1h".to_owned()
}

fn default_run_limit() -> u32 {
    health::DEFAULT_RUN_LIMIT
}

impl Default for MonitoringSection {
    fn default() -> Self {
        MonitoringSection {
            window: default_window(),
            webhook_url: None,
            thresholds: Thresholds::default(),
            quotas: BTreeMap::new(),
            delivery: DeliverySection::default(),
            run_limit: default_run_limit(),
        }
    }
}

/// `monitoring.quotas.<provider>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// Requests allowed per period.
    pub requests: u64,
    /// The period (`1h`, `1d`); default `1h`.
    #[serde(default = "default_window")]
    pub per: String,
}

/// `monitoring.delivery`: retries of an alert notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Attempts per evaluation (at least 1); default 4.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The wait before the second attempt, doubled each time; default 500.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// The longest wait; default 30000.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// The timeout of one attempt; default 10.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_attempts() -> u32 {
    4
}
fn default_initial_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    30_000
}
fn default_timeout() -> u64 {
    10
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_ms: default_max_backoff(),
            timeout_secs: default_timeout(),
        }
    }
}

impl DeliverySection {
    /// The wait after failed attempt `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u64.checked_shl(n.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.initial_backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }
}

/// What a [`Monitor`] runs with, resolved from a [`MonitoringSection`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Lag limits.
    pub thresholds: Thresholds,
    /// The window of the run metrics.
    pub window: Duration,
    /// Quotas per provider.
    pub quotas: BTreeMap<String, Quota>,
    /// Retries.
    pub delivery: DeliverySection,
    /// Runs read per connection.
    pub run_limit: u32,
    /// The alert webhook (never printed).
    pub webhook_url: Option<SecretString>,
    /// The rules.
    pub rules: Vec<AlertRule>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            thresholds: Thresholds::default(),
            window: Duration::from_secs(3600),
            quotas: BTreeMap::new(),
            delivery: DeliverySection::default(),
            run_limit: health::DEFAULT_RUN_LIMIT,
            webhook_url: None,
            rules: Vec::new(),
        }
    }
}

fn interval(field: &str, text: &str) -> Result<Duration> {
    crate::schedule::parse_interval(text)
        .map_err(|e| Error::invalid_input(format!("`{field}`: {e}")))
}

impl MonitorConfig {
    /// Resolves a job's `monitoring:` block and `alerts:` list; `${NAME}`
    /// in `webhook_url` is read from the process environment.
    ///
    /// # Errors
    /// A window or quota period that does not parse, an unset variable.
    pub fn from_section(section: &MonitoringSection, rules: &[AlertRule]) -> Result<Self> {
        use crm_core::env::{from_process, interpolate};
        let mut quotas = BTreeMap::new();
        for (provider, q) in &section.quotas {
            let per = interval(&format!("monitoring.quotas.{provider}.per"), &q.per)?;
            quotas.insert(
                provider.clone(),
                Quota {
                    requests: q.requests,
                    per,
                },
            );
        }
        let webhook_url = match &section.webhook_url {
            Some(u) => Some(SecretString::from(interpolate(
                "monitoring.webhook_url",
                u.expose_secret(),
                from_process,
            )?)),
            None => None,
        };
        Ok(MonitorConfig {
            thresholds: section.thresholds,
            window: interval("monitoring.window", &section.window)?,
            quotas,
            delivery: section.delivery,
            run_limit: section.run_limit.max(1),
            webhook_url,
            rules: rules.to_vec(),
        })
    }

    /// A job's monitoring: its `monitoring:` block (defaults without one)
    /// and its `alerts:` list (seed 001's two rules without one).
    ///
    /// # Errors
    /// As [`MonitorConfig::from_section`].
    pub fn from_job(job: &crate::config::SyncJob) -> Result<Self> {
        let rules = if job.alerts.is_empty() {
            alerts::seed_001_rules()
        } else {
            job.alerts.clone()
        };
        match &job.monitoring {
            Some(s) => MonitorConfig::from_section(s, &rules),
            None => MonitorConfig::from_section(&MonitoringSection::default(), &rules),
        }
    }
}

/// What one evaluation found and did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct EvaluationReport {
    /// The health view.
    pub health: Vec<HealthRow>,
    /// Notifications this evaluation produced (firing and resolved).
    pub notifications: Vec<AlertNotification>,
    /// Notifications delivered by this evaluation (older ones included).
    pub delivered: usize,
    /// Notifications still waiting for the webhook.
    pub pending: usize,
    /// Why deliveries failed (the URL left out).
    pub delivery_errors: Vec<String>,
}

/// How many undelivered notifications are kept; older ones are dropped.
pub const MAX_PENDING: usize = 1000;

#[derive(Debug, Default)]
struct AlertState {
    book: AlertBook,
    outbox: VecDeque<AlertNotification>,
}

/// Health, metrics and alerts over one state store.
#[derive(Debug)]
pub struct Monitor {
    store: StateStore,
    config: MonitorConfig,
    http: Vec<Arc<Metrics>>,
    client: reqwest::Client,
    state: tokio::sync::Mutex<AlertState>,
    firing: Mutex<BTreeMap<String, u64>>,
    quota: Mutex<QuotaTracker>,
    delivered: AtomicU64,
    given_up: AtomicU64,
}

impl Monitor {
    /// A monitor of `store`.
    pub fn new(store: StateStore, config: MonitorConfig) -> Self {
        let timeout = Duration::from_secs(config.delivery.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Monitor {
            store,
            config,
            http: Vec::new(),
            client,
            state: tokio::sync::Mutex::new(AlertState::default()),
            firing: Mutex::new(BTreeMap::new()),
            quota: Mutex::new(QuotaTracker::new(Utc::now())),
            delivered: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
        }
    }

    /// Adds an HTTP clients' metrics registry to export and evaluate.
    #[must_use]
    pub fn http_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.http.push(metrics);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    fn http_snapshot(&self) -> MetricsSnapshot {
        let snaps: Vec<MetricsSnapshot> = self.http.iter().map(|m| m.snapshot()).collect();
        metrics::merge_snapshots(&snaps)
    }

    fn providers(&self, snapshot: &MetricsSnapshot, now: DateTime<Utc>) -> Vec<ProviderMetrics> {
        let mut tracker = self.quota.lock().unwrap_or_else(PoisonError::into_inner);
        metrics::provider_metrics(snapshot, &self.config.quotas, Some(&mut tracker), now)
    }

    /// The health view at `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn health(&self, now: DateTime<Utc>) -> Result<Vec<HealthRow>> {
        sync_health(
            &self.store,
            &self.config.thresholds,
            now,
            self.config.run_limit,
        )
        .await
    }

    /// The run metrics of the window ending at `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sync_metrics(&self, now: DateTime<Utc>) -> Result<Vec<SyncMetrics>> {
        sync_metrics(&self.store, self.config.window, now, self.config.run_limit).await
    }

    /// The Prometheus text of everything at `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn render(&self, now: DateTime<Utc>) -> Result<String> {
        let health = self.health(now).await?;
        let sync = self.sync_metrics(now).await?;
        let snapshot = self.http_snapshot();
        let providers = self.providers(&snapshot, now);
        let firing: Vec<(String, u64)> = self
            .firing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Ok(Exposition {
            health: &health,
            sync: &sync,
            window: self.config.window,
            providers: &providers,
            http: (!self.http.is_empty()).then_some(&snapshot),
            alerts: &firing,
            deliveries: Some((
                self.delivered.load(Ordering::Relaxed),
                self.given_up.load(Ordering::Relaxed),
            )),
        }
        .render())
    }

    /// Evaluates every rule at `now` and delivers what changed (and what
    /// earlier evaluations could not deliver). Evaluations run one at a
    /// time. A webhook that fails is retried with backoff, logged, and
    /// tried again at the next evaluation; it never fails the evaluation.
    ///
    /// # Errors
    /// Database errors reading the health view or the runs.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> Result<EvaluationReport> {
        let health = self.health(now).await?;
        let sync = self.sync_metrics(now).await?;
        let snapshot = self.http_snapshot();
        let providers = self.providers(&snapshot, now);
        let mut state = self.state.lock().await;
        let mut report = EvaluationReport::default();
        let mut firing = BTreeMap::new();
        for rule in &self.config.rules {
            let obs = alerts::observations(rule.condition.metric, &health, &sync, &providers);
            let notes = state.book.evaluate(rule, &obs, now);
            report.notifications.extend(notes);
            firing.insert(rule.name.clone(), 0u64);
        }
        state.outbox.extend(report.notifications.iter().cloned());
        while state.outbox.len() > MAX_PENDING {
            state.outbox.pop_front();
            self.given_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("alert webhook: the oldest undelivered notification was dropped");
        }
        self.deliver_outbox(&mut state, &mut report).await;
        report.pending = state.outbox.len();
        for (name, n) in state.book.firing_by_rule() {
            firing.insert(name, n);
        }
        *self.firing.lock().unwrap_or_else(PoisonError::into_inner) = firing;
        report.health = health;
        Ok(report)
    }

    async fn deliver_outbox(&self, state: &mut AlertState, report: &mut EvaluationReport) {
        let Some(url) = &self.config.webhook_url else {
            // Nowhere to send: the notifications are in the report only.
            state.outbox.clear();
            return;
        };
        while let Some(note) = state.outbox.front() {
            match self.deliver(url, note).await {
                Ok(()) => {
                    state.outbox.pop_front();
                    report.delivered += 1;
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(
                        alert = %note.alert,
                        status = ?note.status,
                        pending = state.outbox.len(),
                        "alert webhook: delivery failed, retried at the next evaluation: {e}"
                    );
                    report.delivery_errors.push(e);
                    // Keep the order: later notifications wait behind it.
                    break;
                }
            }
        }
    }

    async fn deliver(
        &self,
        url: &SecretString,
        note: &AlertNotification,
    ) -> std::result::Result<(), String> {
        let body = serde_json::to_vec(note).map_err(|e| format!("cannot encode: {e}"))?;
        let attempts = self.config.delivery.attempts.max(1);
        let mut last = String::new();
        for n in 0..attempts {
            if n > 0 {
                tokio::time::sleep(self.config.delivery.backoff(n - 1)).await;
            }
            let sent = self
                .client
                .post(url.expose_secret())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("the webhook answered {}", r.status()),
                // Without the URL: it may carry credentials.
                Err(e) => last = format!("{}", e.without_url()),
            }
            tracing::debug!(
                attempt = n + 1,
                attempts,
                "alert webhook: attempt failed: {last}"
            );
        }
        Err(format!("{attempts} attempts failed, the last: {last}"))
    }
}

/// The store's health and run metrics under `config`, without API
/// metrics or alerts.
///
/// # Errors
/// Database errors.
pub async fn render_store(
    store: &StateStore,
    config: &MonitorConfig,
    now: DateTime<Utc>,
) -> Result<String> {
    let health = sync_health(store, &config.thresholds, now, config.run_limit).await?;
    let sync = sync_metrics(store, config.window, now, config.run_limit).await?;
    Ok(Exposition {
        health: &health,
        sync: &sync,
        window: config.window,
        ..Exposition::default()
    }
    .render())
}

/// The answer of `GET /metrics`: `monitor`'s exposition, or with default
/// settings over `store` when the server has no monitor.
pub async fn metrics_response(store: &StateStore, monitor: Option<&Monitor>) -> Response {
    let now = Utc::now();
    let text = match monitor {
        Some(m) => m.render(now).await,
        None => render_store(store, &MonitorConfig::default(), now).await,
    };
    match text {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metrics unavailable: {}\n", e.kind()),
        )
            .into_response(),
    }
}
