//! Seed 002's metrics: records synced per hour, success and failure rates
//! from the state store's runs over a window; API error rate, latency and
//! quota use from crm-http's request metrics; the Prometheus text format.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_core::Result;
use crm_http::MetricsSnapshot;
use crm_sql::state::{Connection, ConnectionId, RunStatus, StateStore, SyncRun};
use serde::Serialize;

use super::health::{HealthRow, is_monitored};

/// The numbers of one connection's runs that started within a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SyncMetrics {
    /// The connection's id.
    pub connection_id: ConnectionId,
    /// Its provider.
    pub provider: String,
    /// Its name.
    pub connection: String,
    /// Runs started in the window, by status.
    pub runs_running: u64,
    /// Completed runs.
    pub runs_completed: u64,
    /// Runs stopped by an error.
    pub runs_failed: u64,
    /// Records seen.
    pub records_processed: i64,
    /// Records written.
    pub records_success: i64,
    /// Records that failed.
    pub records_failed: i64,
    /// Written records per hour of the window (seed 002 "synced per hour").
    pub records_per_hour: f64,
    /// Records written over records attempted; `None` without records.
    pub success_rate: Option<f64>,
    /// Records failed over records attempted; `None` without records.
    pub failure_rate: Option<f64>,
    /// Failed runs over finished runs; `None` without finished runs.
    pub run_failure_rate: Option<f64>,
}

/// Folds `runs` started in `[now - window, now]` into a connection's metrics.
pub fn connection_metrics(
    conn: &Connection,
    runs: &[SyncRun],
    window: Duration,
    now: DateTime<Utc>,
) -> SyncMetrics {
    let start = chrono::TimeDelta::from_std(window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut m = SyncMetrics {
        connection_id: conn.id.clone(),
        provider: conn.provider.clone(),
        connection: conn.name.clone(),
        runs_running: 0,
        runs_completed: 0,
        runs_failed: 0,
        records_processed: 0,
        records_success: 0,
        records_failed: 0,
        records_per_hour: 0.0,
        success_rate: None,
        failure_rate: None,
        run_failure_rate: None,
    };
    for r in runs
        .iter()
        .filter(|r| r.started_at >= start && r.started_at <= now)
    {
        match r.status {
            RunStatus::Running => m.runs_running += 1,
            RunStatus::Completed => m.runs_completed += 1,
            RunStatus::Failed => m.runs_failed += 1,
        }
        m.records_processed = m
            .records_processed
            .saturating_add(r.records_processed.max(0));
        m.records_success = m.records_success.saturating_add(r.records_success.max(0));
        m.records_failed = m.records_failed.saturating_add(r.records_failed.max(0));
    }
    let hours = window.as_secs_f64() / 3600.0;
    if hours > 0.0 {
        m.records_per_hour = m.records_success as f64 / hours;
    }
    let attempted = m
        .records_processed
        .max(m.records_success.saturating_add(m.records_failed));
    if attempted > 0 {
        m.success_rate = Some(m.records_success as f64 / attempted as f64);
        m.failure_rate = Some(m.records_failed as f64 / attempted as f64);
    }
    let finished = m.runs_completed + m.runs_failed;
    if finished > 0 {
        m.run_failure_rate = Some(m.runs_failed as f64 / finished as f64);
    }
    m
}

/// [`connection_metrics`] for every monitored connection of `store`,
/// reading each connection's latest `run_limit` runs.
///
/// # Errors
/// Database errors.
pub async fn sync_metrics(
    store: &StateStore,
    window: Duration,
    now: DateTime<Utc>,
    run_limit: u32,
) -> Result<Vec<SyncMetrics>> {
    let mut out = Vec::new();
    for conn in store.connections().await? {
        if !is_monitored(&conn) {
            continue;
        }
        let runs = store.runs(&conn.id, run_limit).await?;
        out.push(connection_metrics(&conn, &runs, window, now));
    }
    Ok(out)
}

/// The API numbers of one provider, from crm-http's counters since the
/// process started.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProviderMetrics {
    /// The provider label of the HTTP client.
    pub provider: String,
    /// Requests put on the wire (every attempt).
    pub requests: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Errors over calls (attempts less retries); `None` without calls.
    pub api_error_rate: Option<f64>,
    /// Mean duration of one attempt in seconds; `None` without responses.
    pub latency_seconds: Option<f64>,
    /// Requests in the quota period over the configured quota; `None`
    /// without a quota for this provider.
    pub quota_used_ratio: Option<f64>,
    /// Requests counted against the quota in its period.
    pub quota_used: Option<u64>,
    /// The configured quota.
    pub quota_limit: Option<u64>,
}

/// A request quota of one provider (seed 001: "1000 requests/hour").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per period.
    pub requests: u64,
    /// The period.
    pub per: Duration,
}

/// Adds up several registries' snapshots.
pub fn merge_snapshots<'a>(
    snaps: impl IntoIterator<Item = &'a MetricsSnapshot>,
) -> MetricsSnapshot {
    let mut out = MetricsSnapshot::default();
    for s in snaps {
        for (key, m) in &s.series {
            let t = out.series.entry(key.clone()).or_default();
            t.requests += m.requests;
            t.retries += m.retries;
            t.rate_limited += m.rate_limited;
            t.bytes_sent += m.bytes_sent;
            t.bytes_received += m.bytes_received;
            for (kind, n) in &m.errors {
                *t.errors.entry(kind.clone()).or_default() += n;
            }
            for (a, b) in t.latency.buckets.iter_mut().zip(m.latency.buckets) {
                *a += b;
            }
            t.latency.count += m.latency.count;
            t.latency.sum_seconds += m.latency.sum_seconds;
        }
    }
    out
}

/// Requests per provider over time, for quota use: how many requests of
/// the running totals fall in the last quota period.
#[derive(Debug)]
pub struct QuotaTracker {
    started: DateTime<Utc>,
    samples: BTreeMap<String, VecDeque<(DateTime<Utc>, u64)>>,
}

impl QuotaTracker {
    /// A tracker whose counters started at zero at `started` (normally when
    /// the HTTP clients and the monitor were created).
    pub fn new(started: DateTime<Utc>) -> Self {
        QuotaTracker {
            started,
            samples: BTreeMap::new(),
        }
    }

    /// Records `total` requests of `provider` at `now`; returns how many of
    /// them were made in the `per` before `now` (as far as the samples
    /// tell: the latest sample at or before the period's start is the
    /// baseline).
    pub fn observe(
        &mut self,
        provider: &str,
        total: u64,
        now: DateTime<Utc>,
        per: Duration,
    ) -> u64 {
        let started = self.started;
        let q = self
            .samples
            .entry(provider.to_owned())
            .or_insert_with(|| VecDeque::from([(started, 0)]));
        q.push_back((now, total));
        let start = chrono::TimeDelta::from_std(per)
            .ok()
            .and_then(|p| now.checked_sub_signed(p))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Keep one sample at or before the period's start as the baseline.
        while q.len() > 1 && q.get(1).is_some_and(|(t, _)| *t <= start) {
            q.pop_front();
        }
        let baseline = q.front().map_or(0, |(_, n)| *n);
        total.saturating_sub(baseline)
    }
}

/// The per-provider numbers of `snapshot`, with quota use where `quotas`
/// names the provider.
pub fn provider_metrics(
    snapshot: &MetricsSnapshot,
    quotas: &BTreeMap<String, Quota>,
    tracker: Option<&mut QuotaTracker>,
    now: DateTime<Utc>,
) -> Vec<ProviderMetrics> {
    let mut providers: Vec<String> = snapshot.series.keys().map(|(p, _)| p.clone()).collect();
    providers.extend(quotas.keys().cloned());
    providers.sort();
    providers.dedup();
    let mut tracker = tracker;
    providers
        .into_iter()
        .map(|p| {
            let t = snapshot.provider_total(&p);
            let calls = t.requests.saturating_sub(t.retries);
            let errors = t.error_count();
            let quota = quotas.get(&p);
            let used = match (quota, tracker.as_deref_mut()) {
                (Some(q), Some(tr)) => Some(tr.observe(&p, t.requests, now, q.per)),
                (Some(_), None) => Some(t.requests),
                _ => None,
            };
            ProviderMetrics {
                api_error_rate: (calls > 0).then(|| errors as f64 / calls as f64),
                latency_seconds: (t.latency.count > 0)
                    .then(|| t.latency.sum_seconds / t.latency.count as f64),
                quota_used_ratio: match (quota, used) {
                    (Some(q), Some(u)) if q.requests > 0 => Some(u as f64 / q.requests as f64),
                    _ => None,
                },
                quota_used: used,
                quota_limit: quota.map(|q| q.requests),
                requests: t.requests,
                errors,
                provider: p,
            }
        })
        .collect()
}

/// Escapes a label value for the text exposition format.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the text format writes it (`NaN`, `+Inf`, `-Inf`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// Builds the text exposition format one metric family at a time.
#[derive(Debug, Default)]
pub struct PromWriter {
    out: String,
}

impl PromWriter {
    /// An empty document.
    pub fn new() -> Self {
        PromWriter::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self
    }

    /// Appends text already in the format (crm-http's families).
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.out.push_str(text);
        self
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// What one `/metrics` answer shows.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Exposition<'a> {
    /// The health view.
    pub health: &'a [HealthRow],
    /// The run metrics.
    pub sync: &'a [SyncMetrics],
    /// The window of `sync`.
    pub window: Duration,
    /// The per-provider API numbers.
    pub providers: &'a [ProviderMetrics],
    /// crm-http's own counters and histograms, re-exported as they are.
    pub http: Option<&'a MetricsSnapshot>,
    /// Alerts firing, as `(alert name, count of subjects firing)`.
    pub alerts: &'a [(String, u64)],
    /// Alert notifications delivered and given up (after every retry).
    pub deliveries: Option<(u64, u64)>,
}

impl Exposition<'_> {
    /// Renders the text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut w = PromWriter::new();
        w.family(
            "crm_sync_lag_minutes",
            "gauge",
            "Minutes since the last completed sync of a connection and direction (seed 001).",
        );
        for h in self.health {
            w.sample(
                "crm_sync_lag_minutes",
                &health_labels(h),
                h.lag_minutes as f64,
            );
        }
        w.family(
            "crm_sync_health_status",
            "gauge",
            "Health of a connection and direction: 0 HEALTHY, 1 WARNING, 2 CRITICAL.",
        );
        for h in self.health {
            w.sample(
                "crm_sync_health_status",
                &health_labels(h),
                f64::from(h.status.level()),
            );
        }
        w.family(
            "crm_sync_window_seconds",
            "gauge",
            "The window the crm_sync run metrics cover.",
        );
        w.sample("crm_sync_window_seconds", &[], self.window.as_secs_f64());
        w.family(
            "crm_sync_runs",
            "gauge",
            "Sync runs started in the window, by status.",
        );
        for m in self.sync {
            for (status, n) in [
                ("running", m.runs_running),
                ("completed", m.runs_completed),
                ("failed", m.runs_failed),
            ] {
                let mut l = sync_labels(m);
                l.push(("status", status));
                w.sample("crm_sync_runs", &l, n as f64);
            }
        }
        w.family(
            "crm_sync_records",
            "gauge",
            "Records of the runs started in the window, by outcome.",
        );
        for m in self.sync {
            for (outcome, n) in [
                ("processed", m.records_processed),
                ("success", m.records_success),
                ("failed", m.records_failed),
            ] {
                let mut l = sync_labels(m);
                l.push(("outcome", outcome));
                w.sample("crm_sync_records", &l, n as f64);
            }
        }
        w.family(
            "crm_sync_records_per_hour",
            "gauge",
            "Records written per hour over the window (seed 002).",
        );
        for m in self.sync {
            w.sample(
                "crm_sync_records_per_hour",
                &sync_labels(m),
                m.records_per_hour,
            );
        }
        type Rate = fn(&SyncMetrics) -> Option<f64>;
        let rates: [(&str, &str, Rate); 3] = [
            (
                "crm_sync_success_rate",
                "Records written over records attempted in the window (seed 002).",
                |m| m.success_rate,
            ),
            (
                "crm_sync_failure_rate",
                "Records failed over records attempted in the window (seed 001).",
                |m| m.failure_rate,
            ),
            (
                "crm_sync_run_failure_rate",
                "Failed runs over finished runs in the window.",
                |m| m.run_failure_rate,
            ),
        ];
        for (name, help, get) in rates {
            w.family(name, "gauge", help);
            for m in self.sync {
                if let Some(v) = get(m) {
                    w.sample(name, &sync_labels(m), v);
                }
            }
        }
        type PRate = fn(&ProviderMetrics) -> Option<f64>;
        let api: [(&str, &str, PRate); 4] = [
            (
                "crm_sync_api_error_rate",
                "API calls that returned an error over calls, since start (seed 002).",
                |p| p.api_error_rate,
            ),
            (
                "crm_sync_api_latency_seconds",
                "Mean duration of one API attempt, since start (seed 002).",
                |p| p.latency_seconds,
            ),
            (
                "crm_sync_api_quota_used_ratio",
                "API requests in the quota period over the quota (seed 002).",
                |p| p.quota_used_ratio,
            ),
            (
                "crm_sync_api_quota_limit",
                "The configured API request quota per period.",
                |p| p.quota_limit.map(|n| n as f64),
            ),
        ];
        for (name, help, get) in api {
            w.family(name, "gauge", help);
            for p in self.providers {
                if let Some(v) = get(p) {
                    w.sample(name, &[("provider", &p.provider)], v);
                }
            }
        }
        w.family(
            "crm_sync_alerts_firing",
            "gauge",
            "Subjects for which an alert rule is firing.",
        );
        for (name, n) in self.alerts {
            w.sample("crm_sync_alerts_firing", &[("alert", name)], *n as f64);
        }
        if let Some((delivered, given_up)) = self.deliveries {
            w.family(
                "crm_sync_alert_notifications_total",
                "counter",
                "Alert notifications, by outcome (given_up: every retry failed).",
            );
            w.sample(
                "crm_sync_alert_notifications_total",
                &[("outcome", "delivered")],
                delivered as f64,
            );
            w.sample(
                "crm_sync_alert_notifications_total",
                &[("outcome", "given_up")],
                given_up as f64,
            );
        }
        if let Some(http) = self.http {
            w.raw(&http.to_prometheus());
        }
        w.finish()
    }
}

fn health_labels(h: &HealthRow) -> Vec<(&str, &str)> {
    vec![
        ("connection_id", h.connection_id.as_str()),
        ("provider", &h.provider),
        ("connection", &h.connection),
        ("direction", h.direction.as_str()),
    ]
}

fn sync_labels(m: &SyncMetrics) -> Vec<(&str, &str)> {
    vec![
        ("connection_id", m.connection_id.as_str()),
        ("provider", &m.provider),
        ("connection", &m.connection),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_values() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.05), "0.05");
        assert_eq!(format_value(3.0), "3");
        let mut w = PromWriter::new();
        w.family("x", "gauge", "Help.")
            .sample("x", &[("a", "q\"")], 1.5);
        assert_eq!(
            w.finish(),
            "# HELP x Help.\n# TYPE x gauge\nx{a=\"q\\\"\"} 1.5\n"
        );
    }

    #[test]
    fn quota_counts_the_last_period() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let hour = Duration::from_secs(3600);
        let mut q = QuotaTracker::new(t0);
        let at = |m: i64| t0 + chrono::TimeDelta::minutes(m);
        assert_eq!(q.observe("hubspot", 100, at(10), hour), 100);
        assert_eq!(q.observe("hubspot", 300, at(50), hour), 300);
        // 70 minutes in: the sample at 10 minutes is the baseline.
        assert_eq!(q.observe("hubspot", 350, at(70), hour), 250);
        assert_eq!(q.observe("hubspot", 350, at(200), hour), 0);
    }
}
