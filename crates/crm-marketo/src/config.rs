//! Configuration of the Marketo connector.
//!
//! ```
//! use crm_marketo::MarketoConfig;
//! use secrecy::SecretString;
//!
//! let config = MarketoConfig::builder(
//!     "https://123-ABC-456.mktorest.com",
//!     "client-id",
//!     SecretString::from("client-secret".to_owned()),
//! )
//! .build()
//! .unwrap();
//! assert_eq!(config.limits().calls_per_window, 100);
//! assert_eq!(config.limits().max_in_flight, 10);
//! assert_eq!(config.limits().daily_quota, Some(50_000));
//! assert_eq!(config.identity_url().path(), "/identity/oauth/token");
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::error::MarketoError;

/// The identity endpoint's path under the instance host.
pub const IDENTITY_PATH: &str = "/identity/oauth/token";
/// The objects read and written by default.
pub const DEFAULT_OBJECTS: [&str; 3] = ["leads", "companies", "opportunities"];
/// Most days one bulk export job may cover (Marketo: "The date range
/// cannot exceed 31 days", Bulk Extract docs).
pub const MAX_EXPORT_WINDOW_DAYS: u32 = 31;
/// Marketo's daily bulk export allowance: 500 MB a day (Bulk Extract docs,
/// "Limits").
pub const DEFAULT_EXPORT_DAILY_BYTES: u64 = 500 * 1024 * 1024;

/// Request limits kept on the client side.
///
/// Defaults are Marketo's documented limits ("Marketo REST API: Limits"):
/// 100 calls per 20 seconds, 10 concurrent calls, 50,000 calls a day (the
/// default subscription quota; many subscriptions buy more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Calls per window.
    pub calls_per_window: u32,
    /// The window's length in milliseconds.
    pub window_ms: u64,
    /// Calls in flight at once.
    pub max_in_flight: usize,
    /// Calls per day, if limited.
    pub daily_quota: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            calls_per_window: 100,
            window_ms: 20_000,
            max_in_flight: 10,
            daily_quota: Some(50_000),
        }
    }
}

impl Limits {
    /// Limits with these values.
    pub fn new(
        calls_per_window: u32,
        window: Duration,
        max_in_flight: usize,
        daily_quota: Option<u64>,
    ) -> Self {
        Limits {
            calls_per_window,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            max_in_flight,
            daily_quota,
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// How a full read of leads gets every lead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeadFullRead {
    /// Bulk Extract jobs over `createdAt` windows of at most 31 days from
    /// [`MarketoConfig::start_date`] to now (the way to export many leads).
    #[default]
    BulkExtract,
    /// `GET /rest/v1/leads.json?filterType=id` over consecutive id ranges,
    /// 300 ids a call (fine for small instances; no export quota used).
    IdScan,
}

/// A validated configuration; make one with [`MarketoConfig::builder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MarketoConfig {
    pub(crate) base_url: Url,
    pub(crate) identity_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) objects: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) lead_full_read: LeadFullRead,
    pub(crate) start_date: DateTime<Utc>,
    pub(crate) export_window_days: u32,
    pub(crate) export_daily_bytes: u64,
    pub(crate) export_poll_initial: Duration,
    pub(crate) export_poll_max: Duration,
    pub(crate) export_timeout: Duration,
    pub(crate) id_scan_empty_batches: u32,
    pub(crate) lookback: Duration,
    pub(crate) rate_limit_wait: Duration,
    pub(crate) detect_unchanged: bool,
    pub(crate) lead_fields: Vec<String>,
    pub(crate) root_certificate_pem: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
}

/// Builder (and serde form) of [`MarketoConfig`]; durations in seconds
/// unless named `_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MarketoConfigBuilder {
    /// The instance's REST host, `https://<Munchkin-ID>.mktorest.com`.
    pub base_url: String,
    /// The LaunchPoint custom service's client id.
    pub client_id: String,
    /// The LaunchPoint custom service's client secret.
    pub client_secret: SecretString,
    /// The identity endpoint; `<base_url>/identity/oauth/token` when absent.
    #[serde(default)]
    pub identity_url: Option<String>,
    /// Objects synced (`leads`, `companies`, `opportunities`, `activities`);
    /// [`DEFAULT_OBJECTS`] when empty.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Client-side limits.
    #[serde(default)]
    pub limits: Limits,
    /// How a full read of leads works.
    #[serde(default)]
    pub lead_full_read: LeadFullRead,
    /// Earliest `createdAt` a bulk full read exports (default 2006-01-01,
    /// before Marketo existed).
    #[serde(default)]
    pub start_date: Option<DateTime<Utc>>,
    /// Days per export job (1 to 31; default 31).
    #[serde(default)]
    pub export_window_days: Option<u32>,
    /// Bulk export bytes a day (default 500 MB).
    #[serde(default)]
    pub export_daily_bytes: Option<u64>,
    /// First wait between export status polls in ms (default 5,000; doubles).
    #[serde(default)]
    pub export_poll_initial_ms: Option<u64>,
    /// Longest wait between export status polls in ms (default 60,000).
    #[serde(default)]
    pub export_poll_max_ms: Option<u64>,
    /// Longest wait for one export job (default 3 hours).
    #[serde(default)]
    pub export_timeout_secs: Option<u64>,
    /// Consecutive empty 300-id batches that end an id scan (default 20).
    #[serde(default)]
    pub id_scan_empty_batches: Option<u32>,
    /// How far incremental reads start before the time a full read began
    /// (seconds; default 300), covering clock skew with Marketo.
    #[serde(default)]
    pub lookback_secs: Option<u64>,
    /// Wait after a 606/615 answer before the retry, in ms; the client-side
    /// limiter holds every caller for as long (default: `limits.window_ms`,
    /// Marketo's 20 s window).
    #[serde(default)]
    pub rate_limit_wait_ms: Option<u64>,
    /// Read current values before an upsert to report `Unchanged` (default true).
    #[serde(default)]
    pub detect_unchanged: Option<bool>,
    /// Lead fields read (default: the seed 004 fields plus `id`).
    #[serde(default)]
    pub lead_fields: Vec<String>,
    /// An extra root certificate (PEM), e.g. the simulator's with `--tls`.
    #[serde(default)]
    pub root_certificate_pem: Option<String>,
    /// Time limit of one attempt (default 30 s).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Attempts per request including the first (default 6).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// The lead fields read when none are configured: seed 004's contact
/// columns for Marketo.
pub const DEFAULT_LEAD_FIELDS: [&str; 11] = [
    "id",
    "email",
    "firstName",
    "lastName",
    "phone",
    "company",
    "title",
    "leadScore",
    "leadSource",
    "createdAt",
    "updatedAt",
];

impl MarketoConfig {
    /// A builder with the instance host and the custom service's credentials.
    pub fn builder(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> MarketoConfigBuilder {
        MarketoConfigBuilder {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret,
            identity_url: None,
            objects: Vec::new(),
            limits: Limits::default(),
            lead_full_read: LeadFullRead::default(),
            start_date: None,
            export_window_days: None,
            export_daily_bytes: None,
            export_poll_initial_ms: None,
            export_poll_max_ms: None,
            export_timeout_secs: None,
            id_scan_empty_batches: None,
            lookback_secs: None,
            rate_limit_wait_ms: None,
            detect_unchanged: None,
            lead_fields: Vec::new(),
            root_certificate_pem: None,
            timeout_secs: None,
            max_attempts: None,
        }
    }

    /// The instance host.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }
    /// The identity endpoint.
    pub fn identity_url(&self) -> &Url {
        &self.identity_url
    }
    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// The objects synced.
    pub fn objects(&self) -> &[String] {
        &self.objects
    }
    /// The client-side limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
    /// How full reads of leads work.
    pub fn lead_full_read(&self) -> LeadFullRead {
        self.lead_full_read
    }
    /// The earliest `createdAt` a bulk full read exports.
    pub fn start_date(&self) -> DateTime<Utc> {
        self.start_date
    }
    /// Days per export job.
    pub fn export_window_days(&self) -> u32 {
        self.export_window_days
    }
    /// Export bytes a day.
    pub fn export_daily_bytes(&self) -> u64 {
        self.export_daily_bytes
    }
    /// Consecutive empty batches ending an id scan.
    pub fn id_scan_empty_batches(&self) -> u32 {
        self.id_scan_empty_batches
    }
    /// The incremental lookback.
    pub fn lookback(&self) -> Duration {
        self.lookback
    }
    /// Lead fields read.
    pub fn lead_fields(&self) -> &[String] {
        &self.lead_fields
    }
    /// Whether upserts report `Unchanged` after reading current values.
    pub fn detect_unchanged(&self) -> bool {
        self.detect_unchanged
    }
    /// The wait after a 606/615 answer, during which the client-side limiter
    /// holds every request (the rate-limit window unless set).
    pub fn rate_limit_wait(&self) -> Duration {
        self.rate_limit_wait
    }
}

fn ms(v: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(v.unwrap_or(default))
}

impl MarketoConfigBuilder {
    /// Sets the identity endpoint.
    #[must_use]
    pub fn identity_url(mut self, url: impl Into<String>) -> Self {
        self.identity_url = Some(url.into());
        self
    }
    /// Sets the objects synced.
    #[must_use]
    pub fn objects<I: IntoIterator<Item = S>, S: Into<String>>(mut self, objects: I) -> Self {
        self.objects = objects.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the client-side limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets how full reads of leads work.
    #[must_use]
    pub fn lead_full_read(mut self, mode: LeadFullRead) -> Self {
        self.lead_full_read = mode;
        self
    }
    /// Sets the earliest `createdAt` a bulk full read exports.
    #[must_use]
    pub fn start_date(mut self, at: DateTime<Utc>) -> Self {
        self.start_date = Some(at);
        self
    }
    /// Sets the days per export job (1 to 31).
    #[must_use]
    pub fn export_window_days(mut self, days: u32) -> Self {
        self.export_window_days = Some(days);
        self
    }
    /// Sets the export bytes a day.
    #[must_use]
    pub fn export_daily_bytes(mut self, bytes: u64) -> Self {
        self.export_daily_bytes = Some(bytes);
        self
    }
    /// Sets the first and longest waits between export status polls.
    #[must_use]
    pub fn export_poll(mut self, initial: Duration, max: Duration) -> Self {
        self.export_poll_initial_ms = Some(u64::try_from(initial.as_millis()).unwrap_or(u64::MAX));
        self.export_poll_max_ms = Some(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
        self
    }
    /// Sets the consecutive empty batches that end an id scan.
    #[must_use]
    pub fn id_scan_empty_batches(mut self, n: u32) -> Self {
        self.id_scan_empty_batches = Some(n);
        self
    }
    /// Sets the incremental lookback.
    #[must_use]
    pub fn lookback(mut self, lookback: Duration) -> Self {
        self.lookback_secs = Some(lookback.as_secs());
        self
    }
    /// Sets the wait after a 606/615 answer (default: the limits' window).
    #[must_use]
    pub fn rate_limit_wait(mut self, wait: Duration) -> Self {
        self.rate_limit_wait_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self
    }
    /// Turns unchanged detection on or off.
    #[must_use]
    pub fn detect_unchanged(mut self, on: bool) -> Self {
        self.detect_unchanged = Some(on);
        self
    }
    /// Sets the lead fields read.
    #[must_use]
    pub fn lead_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.lead_fields = fields.into_iter().map(Into::into).collect();
        self
    }
    /// Trusts an extra root certificate (PEM).
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.root_certificate_pem = Some(pem.into());
        self
    }
    /// Sets the time limit of one attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_secs = Some(timeout.as_secs().max(1));
        self
    }
    /// Sets the attempts per request.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Validates everything and builds the configuration.
    ///
    /// # Errors
    /// [`MarketoError::ConfigInvalid`] naming every problem found.
    pub fn build(self) -> Result<MarketoConfig, MarketoError> {
        let mut problems = Vec::new();
        let base_url = match Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                problems.push(format!("base_url `{}` is not http(s)", self.base_url));
                None
            }
            Err(e) => {
                problems.push(format!("base_url `{}` is not a URL: {e}", self.base_url));
                None
            }
        };
        let identity_url = match (&self.identity_url, &base_url) {
            (Some(u), _) => Url::parse(u)
                .map_err(|e| problems.push(format!("identity_url `{u}`: {e}")))
                .ok(),
            (None, Some(b)) => b
                .join(IDENTITY_PATH)
                .map_err(|e| problems.push(format!("identity_url: {e}")))
                .ok(),
            (None, None) => None,
        };
        if self.client_id.trim().is_empty() {
            problems.push("client_id is empty".into());
        }
        if secrecy::ExposeSecret::expose_secret(&self.client_secret)
            .trim()
            .is_empty()
        {
            problems.push("client_secret is empty".into());
        }
        let window_days = self.export_window_days.unwrap_or(MAX_EXPORT_WINDOW_DAYS);
        if !(1..=MAX_EXPORT_WINDOW_DAYS).contains(&window_days) {
            problems.push(format!(
                "export_window_days {window_days} is not within 1 to {MAX_EXPORT_WINDOW_DAYS}"
            ));
        }
        if self.limits.calls_per_window == 0 || self.limits.window_ms == 0 {
            problems.push("limits: calls_per_window and window_ms must be positive".into());
        }
        if self.limits.max_in_flight == 0 {
            problems.push("limits.max_in_flight must be positive".into());
        }
        let objects: Vec<String> = if self.objects.is_empty() {
            DEFAULT_OBJECTS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.objects
        };
        for o in &objects {
            if crate::ObjectKind::parse(o).is_none() {
                problems.push(format!("unknown object `{o}`"));
            }
        }
        let lead_fields = if self.lead_fields.is_empty() {
            DEFAULT_LEAD_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        } else {
            self.lead_fields
        };
        let start_date = self.start_date.unwrap_or_else(|| {
            DateTime::parse_from_rfc3339("2006-01-01T00:00:00Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default()
        });
        match (base_url, identity_url, problems.is_empty()) {
            (Some(base_url), Some(identity_url), true) => Ok(MarketoConfig {
                base_url,
                identity_url,
                client_id: self.client_id,
                client_secret: self.client_secret,
                objects,
                limits: self.limits,
                lead_full_read: self.lead_full_read,
                start_date,
                export_window_days: window_days,
                export_daily_bytes: self
                    .export_daily_bytes
                    .unwrap_or(DEFAULT_EXPORT_DAILY_BYTES),
                export_poll_initial: ms(self.export_poll_initial_ms, 5_000),
                export_poll_max: ms(self.export_poll_max_ms, 60_000),
                export_timeout: Duration::from_secs(self.export_timeout_secs.unwrap_or(3 * 3600)),
                id_scan_empty_batches: self.id_scan_empty_batches.unwrap_or(20).max(1),
                lookback: Duration::from_secs(self.lookback_secs.unwrap_or(300)),
                rate_limit_wait: self
                    .rate_limit_wait_ms
                    .map_or(self.limits.window(), Duration::from_millis),
                detect_unchanged: self.detect_unchanged.unwrap_or(true),
                lead_fields,
                root_certificate_pem: self.root_certificate_pem,
                timeout: Duration::from_secs(self.timeout_secs.unwrap_or(30)),
                max_attempts: self.max_attempts.unwrap_or(6).max(1),
            }),
            _ => Err(MarketoError::ConfigInvalid(problems.join("; "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_and_secrets_stay_hidden() {
        let err = MarketoConfig::builder("ftp://x", " ", SecretString::from(String::new()))
            .export_window_days(45)
            .objects(["widgets"])
            .build()
            .unwrap_err()
            .to_string();
        for part in ["not http(s)", "client_id", "client_secret", "45", "widgets"] {
            assert!(err.contains(part), "{err}");
        }
        let ok = MarketoConfig::builder(
            "https://1-2-3.mktorest.com",
            "id",
            SecretString::from("very-secret".to_owned()),
        )
        .build()
        .unwrap();
        assert!(!format!("{ok:?}").contains("very-secret"));
    }

    #[test]
    fn deserializes_from_yaml_shape() {
        let b: MarketoConfigBuilder = serde_json::from_value(serde_json::json!({
            "base_url": "https://1-2-3.mktorest.com",
            "client_id": "id",
            "client_secret": "s",
            "limits": {"calls_per_window": 50},
            "lead_full_read": "id_scan"
        }))
        .unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.limits().calls_per_window, 50);
        assert_eq!(c.limits().max_in_flight, 10);
        assert_eq!(c.lead_full_read(), LeadFullRead::IdScan);
    }

    #[test]
    fn rate_limit_wait_defaults_to_the_window() {
        let b = || {
            MarketoConfig::builder(
                "https://1-2-3.mktorest.com",
                "id",
                SecretString::from("s".to_owned()),
            )
        };
        assert_eq!(
            b().build().unwrap().rate_limit_wait(),
            Duration::from_secs(20),
            "Marketo's window: 100 calls per 20 s"
        );
        let short = b()
            .limits(Limits::new(100, Duration::from_millis(1500), 10, None))
            .build()
            .unwrap();
        assert_eq!(short.rate_limit_wait(), Duration::from_millis(1500));
        let set = b()
            .rate_limit_wait(Duration::from_millis(40))
            .build()
            .unwrap();
        assert_eq!(set.rate_limit_wait(), Duration::from_millis(40));
    }
}
