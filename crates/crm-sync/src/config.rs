//! [`SyncJob`]: a sync loaded from YAML in the seeds' shapes.
//!
//! The top-level keys are seed 000's: a `sheet:` or `database:` source (with
//! seed 000's sibling `pool:`), `oauth:`, `validation:`, `matching:`,
//! `write_back:` and the `crm:` block (`sync`, `google_sheets`, `database`,
//! `matching`), plus what a runnable job also needs: `name`, `campaigns`
//! (what bookings are matched to), `dedupe` (how rows sharing a key are
//! folded; on by default), `destination` (the store; an embedded SQLite file
//! by default) and `state` (checkpoints, dead letters, review queue; the
//! destination's database by default).
//!
//! `crm.google_sheets.rate_limit` and `oauth.scopes` apply to the `sheet:`
//! source (see [`SyncJob::sheet_config`]).
//!
//! `mappings:` (seed 001's field maps) turns source fields into destination
//! columns, and its `pii: true` maps name the fields holding personal data
//! (see [`SyncJob::mappings`] and [`SyncJob::pii_fields`]).
//!
//! Unknown keys and wrong types are errors naming the YAML path and line.
//! `${NAME}` values are resolved when a connection is opened, never while
//! parsing, so an environment value cannot change the structure of the file.
//!
//! ```
//! use crm_sync::config::SyncJob;
//!
//! let job = SyncJob::from_yaml(r#"
//! name: bookings
//! sheet:
//!   spreadsheet_id: "1BxiM"
//!   sheet_name: "Bookings"
//!   column_mapping: { A: booking_id, B: client_name }
//! crm:
//!   sync: { schedule: "0 * * * *", batch_size: 1000, timeout: 300 }
//! "#, "inline").unwrap();
//! assert_eq!(job.crm.sync.batch_size, 1000);
//!
//! let err = SyncJob::from_yaml("name: x\ncrm:\n  sync:\n    batch_size: lots\n", "job.yaml").unwrap_err();
//! assert_eq!(err.path, "crm.sync.batch_size");
//! assert_eq!(err.line, Some(4));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crm_core::dedupe::{Deduper, MergePolicy};
use crm_core::mapping::{Flow, Mapping, WriteBackConfig};
use crm_core::matching::MatchingConfig;
use crm_core::pii::PiiFields;
use crm_core::validate::ValidationRules;
use crm_sheets::{RateLimit, SheetsConfig};
use crm_sql::config::{PoolConfig, SqlConfig};
use secrecy::SecretString;
use serde::Deserialize;

/// A config file that could not be loaded: where, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or another name for the text).
    pub origin: String,
    /// The YAML path of the offending value (`crm.sync.batch_size`), or empty.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
            if let Some(col) = self.column {
                write!(f, " column {col}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ", at `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(origin: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            path: String::new(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// Parses YAML into `T`, reporting the path and line of any problem.
///
/// # Errors
/// A [`ConfigError`] with the YAML path, the line and column where serde_yaml
/// knows them, and the message.
pub fn from_yaml_at<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location();
        // serde_yaml appends "at line N column M" to its messages; the
        // location is reported separately.
        let mut message = inner.to_string();
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        // serde_yaml may start the message with the path it also gives.
        let prefix = format!("{path}: ");
        if let Some(rest) = message.strip_prefix(&prefix) {
            message = rest.to_owned();
        }
        ConfigError {
            origin: origin.to_owned(),
            path: if path == "." { String::new() } else { path },
            line: location.as_ref().map(serde_yaml::Location::line),
            column: location.as_ref().map(serde_yaml::Location::column),
            message,
        }
    })
}

/// One sync job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncJob {
    /// The job's name: it keys checkpoints, dead letters and review items.
    #[serde(default = "default_name")]
    pub name: String,
    /// The object name used for checkpoints and dead letters.
    #[serde(default = "default_object")]
    pub object: String,
    /// Seed 000 Google Sheets source.
    #[serde(default)]
    pub sheet: Option<SheetsConfig>,
    /// Seed 000 OAuth block (`scopes`).
    #[serde(default)]
    pub oauth: Option<OAuthSection>,
    /// Seed 000 database source.
    #[serde(default)]
    pub database: Option<SqlConfig>,
    /// Seed 000 connection pooling, for the database source.
    #[serde(default)]
    pub pool: Option<PoolConfig>,
    /// Seed 000 validation rules.
    #[serde(default)]
    pub validation: Option<ValidationRules>,
    /// Seed 001 field mappings (`{source, destination, transform, pii}`),
    /// applied after validation: each map reads a source field and writes
    /// a destination column, so the stored record holds the mapped columns
    /// only (maps run source -> destination: `to_crm` and `bidirectional`
    /// ones; `from_crm` maps are skipped). The job's key field
    /// ([`SyncJob::key_field`]) must be one of the columns written, with
    /// its value unchanged: records are named by it before and after the
    /// mapping. Without `mappings:` records are stored as read.
    ///
    /// Maps marked `pii: true` name personal data: their source and
    /// destination fields are sealed in the state store and masked in
    /// logs, reports and errors (see [`SyncJob::pii_fields`]).
    #[serde(default)]
    pub mappings: Option<Mapping>,
    /// Seed 000 campaign matching.
    #[serde(default)]
    pub matching: Option<MatchingConfig>,
    /// The campaigns bookings are matched to.
    #[serde(default)]
    pub campaigns: Option<CampaignsSource>,
    /// How records sharing a key are folded within each page (see
    /// [`SyncJob::deduper`]); on by default.
    #[serde(default)]
    pub dedupe: Option<DedupeSection>,
    /// Seed 000 write-back.
    #[serde(default)]
    pub write_back: Option<WriteBackConfig>,
    /// Where synced records are stored.
    #[serde(default)]
    pub destination: Destination,
    /// Where checkpoints, dead letters and the review queue are kept.
    #[serde(default)]
    pub state: StateSection,
    /// Seed 000 `crm:` block.
    #[serde(default)]
    pub crm: CrmSection,
    /// The webhook receiver of `crm-sync serve`.
    #[serde(default)]
    pub webhooks: Option<WebhooksSection>,
    /// The review desk of `crm-sync serve` (`/review`).
    #[serde(default)]
    pub review: Option<ReviewSection>,
    /// Seed 001 alert rules (`condition: lag_minutes > 60`); see
    /// [`crate::monitor`].
    #[serde(default)]
    pub alerts: Vec<crate::monitor::AlertRule>,
    /// Health thresholds, metrics window, quotas and the alert webhook.
    #[serde(default)]
    pub monitoring: Option<crate::monitor::MonitoringSection>,
    /// Hardening of the HTTP server of `crm-sync serve` (TLS, allow-list,
    /// body limit, timeout, rate limit); the defaults of [`HttpSection`]
    /// apply without it.
    #[serde(default)]
    pub http: Option<HttpSection>,
}

/// `http:`: how the HTTP server of `crm-sync serve` (webhooks and review
/// desk) is hardened; see [`crate::serve::harden`] for each layer.
///
/// ```yaml
/// http:
///   tls: {cert_file: certs/server.pem, key_file: certs/server.key}  # PEM, relative to the job file
///   allow_ips: ["10.0.0.0/8", "192.168.1.7", "::1/128"]           # others get 403
///   max_body_bytes: 1048576       # default 1 MiB; larger bodies get 413
///   request_timeout_secs: 30      # default 30; slower requests get 408
///   rate_limit_per_hour: 1000     # default 1000 per client; 0 disables
/// ```
///
/// ```
/// use crm_sync::config::SyncJob;
///
/// let job = SyncJob::from_yaml(r#"
/// sheet: {spreadsheet_id: s, sheet_name: S, column_mapping: {A: booking_id}}
/// http:
///   allow_ips: ["10.0.0.0/8", "::1"]
///   rate_limit_per_hour: 0
/// "#, "inline").unwrap();
/// let http = job.http.unwrap();
/// assert_eq!(http.max_body_bytes, 1024 * 1024);
/// assert_eq!(http.request_timeout_secs, 30);
/// assert_eq!(http.rate_limit_per_hour, 0);
/// assert_eq!(http.allow_ips.unwrap().len(), 2);
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpSection {
    /// Serve HTTPS (TLS 1.2 and 1.3) with this certificate; plain HTTP
    /// without it.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Only peers in these networks (`10.0.0.0/8`, `192.168.1.7`,
    /// `::1/128`) are served; others get 403. Everyone without it.
    #[serde(default)]
    pub allow_ips: Option<Vec<crate::serve::harden::IpCidr>>,
    /// The largest request body; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds to answer a request (and to read its headers); slower ones
    /// get 408.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Requests per client (bearer token, review session, else IP) and
    /// hour; more get 429. `0` disables the limit.
    #[serde(default = "default_rate_limit_per_hour")]
    pub rate_limit_per_hour: u32,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            tls: None,
            allow_ips: None,
            max_body_bytes: default_max_body_bytes(),
            request_timeout_secs: default_request_timeout_secs(),
            rate_limit_per_hour: default_rate_limit_per_hour(),
        }
    }
}

/// `http.tls`: PEM files. Relative paths are kept as written and taken
/// relative to the job file's folder when the server starts (see
/// [`crate::serve::harden::Hardening::from_section`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

fn default_max_body_bytes() -> usize {
    crate::serve::harden::DEFAULT_MAX_BODY_BYTES
}

fn default_request_timeout_secs() -> u64 {
    crate::serve::harden::DEFAULT_REQUEST_TIMEOUT.as_secs()
}

fn default_rate_limit_per_hour() -> u32 {
    crate::serve::harden::DEFAULT_RATE_LIMIT_PER_HOUR
}

/// `webhooks:`: what `crm-sync serve` listens on, the secrets each
/// endpoint checks (an endpoint without its secret answers 404), and the
/// table received changes go to (in the destination's database).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// The address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL the providers call, scheme and host (`https://hooks.example.com`):
    /// HubSpot signs the full URL, which a proxy in front may change. The
    /// request's `Host` header over `http` when absent.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HubSpot app client secret, for `/webhooks/hubspot`.
    #[serde(default)]
    pub hubspot_client_secret: Option<SecretString>,
    /// Pipedrive webhook basic-auth user, for `/webhooks/pipedrive`.
    #[serde(default)]
    pub pipedrive_user: Option<SecretString>,
    /// Pipedrive webhook basic-auth password.
    #[serde(default)]
    pub pipedrive_password: Option<SecretString>,
    /// Shared HMAC-SHA256 secret of `/webhooks/crm/customer`.
    #[serde(default)]
    pub customer_secret: Option<SecretString>,
    /// Where received changes are written.
    #[serde(default)]
    pub destination: WebhookDestination,
}

/// `review:`: the review desk `crm-sync serve` shows at `/review` (see
/// [`crate::review`]): probable and multiple matches, manual conflicts and
/// dead letters of the job, for the holders of these tokens.
///
/// ```yaml
/// review:
///   tokens:
///     - {name: alice, role: operator, token: "${REVIEW_TOKEN_ALICE}"}
///     - {name: dashboards, role: viewer, token: "${REVIEW_TOKEN_VIEWER}"}
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReviewSection {
    /// Where to listen when the job has no `webhooks:` (with one, the desk
    /// shares its server).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Who may sign in, with which role.
    pub tokens: Vec<crate::access::TokenConfig>,
    /// Marks the session cookie `Secure`; on by default when
    /// `webhooks.public_url` is `https://`. Set it when a TLS proxy serves
    /// the page.
    #[serde(default)]
    pub secure_cookies: Option<bool>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// `webhooks.destination`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDestination {
    /// The table (created when missing), in the database of `destination.url`.
    #[serde(default = "default_webhook_table")]
    pub table: String,
}

fn default_webhook_table() -> String {
    "crm_webhook_records".to_owned()
}

impl Default for WebhookDestination {
    fn default() -> Self {
        WebhookDestination {
            table: default_webhook_table(),
        }
    }
}

fn default_name() -> String {
    "bookings".to_owned()
}

fn default_object() -> String {
    "bookings".to_owned()
}

/// Seed 000 `oauth:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSection {
    /// OAuth scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `dedupe:`: records of one page that share a key become one.
///
/// ```yaml
/// dedupe:
///   key: booking_id        # or [client_name, campaign_name]; see SyncJob::deduper
///   policy: newest         # first | last | newest | fieldwise_non_null
///   case_insensitive: false
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeSection {
    /// `false` turns the stage off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The key field(s): a name or a list. Absent: the job's key (see
    /// [`SyncJob::deduper`]).
    #[serde(default)]
    pub key: Option<DedupeKey>,
    /// Which record of a group is kept (default `newest`: the latest
    /// `updated_at`, the later row on a tie or without one).
    #[serde(default = "default_merge_policy")]
    pub policy: MergePolicy,
    /// Compare keys trimmed and case-insensitively.
    #[serde(default)]
    pub case_insensitive: bool,
}

impl Default for DedupeSection {
    fn default() -> Self {
        DedupeSection {
            enabled: true,
            key: None,
            policy: default_merge_policy(),
            case_insensitive: false,
        }
    }
}

fn default_merge_policy() -> MergePolicy {
    MergePolicy::Newest
}

/// `dedupe.key`: one field or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DedupeKey {
    /// One field.
    One(String),
    /// Several fields, all of which must be non-blank for a record to have a key.
    Many(Vec<String>),
}

impl DedupeKey {
    /// The fields.
    pub fn fields(&self) -> Vec<String> {
        match self {
            DedupeKey::One(f) => vec![f.clone()],
            DedupeKey::Many(fs) => fs.clone(),
        }
    }
}

/// Where campaigns come from: exactly one of `file` and `database`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignsSource {
    /// A CSV file with a header row naming `campaign_id` (or `id`), `name`
    /// and optionally `advertiser_name`, `start_date`, `end_date`, `status`.
    /// A relative path is relative to the config file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A database query returning the same columns.
    #[serde(default)]
    pub database: Option<Box<SqlConfig>>,
}

/// The store synced records go to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// A connection URL: `sqlite://FILE`, `postgres://...`, `mysql://...`.
    /// `${NAME}` values are resolved on connect. A relative SQLite path is
    /// relative to the config file.
    #[serde(default = "default_destination_url")]
    pub url: SecretString,
    /// The table.
    #[serde(default = "default_table")]
    pub table: String,
    /// Create the table (seed 000's `booking` schema) when it is missing.
    #[serde(default = "yes")]
    pub create_table: bool,
    /// On a full run, remove stored rows whose key no longer appears at the
    /// source (after the whole source was read).
    #[serde(default = "yes")]
    pub remove_missing: bool,
}

fn default_destination_url() -> SecretString {
    SecretString::from("sqlite://crm-sync.db".to_owned())
}

fn default_table() -> String {
    "booking".to_owned()
}

fn yes() -> bool {
    true
}

impl Default for Destination {
    fn default() -> Self {
        Destination {
            url: default_destination_url(),
            table: default_table(),
            create_table: true,
            remove_missing: true,
        }
    }
}

/// Where the pipeline keeps its state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// A connection URL; the destination's when absent.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// The environment variable holding the base64 key that encrypts stored
    /// credentials (32 bytes). The pipeline stores no credentials itself;
    /// it seals the job's personal fields ([`SyncJob::pii_fields`]) with
    /// this key, which is then required.
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// Seed 001 data retention: sync runs, audit entries, dead letters and
    /// processed webhook events older than this many days are purged by
    /// the daily cleanup of `crm-sync schedule` (off when absent; the
    /// cleanup then deletes sync runs older than 30 days only, as seed 003
    /// says).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

fn default_key_env() -> String {
    "CRM_SYNC_STATE_KEY".to_owned()
}

/// Seed 000 `crm:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmSection {
    /// `crm.sync`.
    #[serde(default)]
    pub sync: SyncSettings,
    /// `crm.google_sheets`.
    #[serde(default)]
    pub google_sheets: Option<GoogleSheetsSettings>,
    /// `crm.database`.
    #[serde(default)]
    pub database: Option<DatabaseSettings>,
    /// `crm.matching` (merged into `matching`).
    #[serde(default)]
    pub matching: Option<crm_core::matching::MatchingSettings>,
}

/// Seed 000 `crm.sync`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Cron expression of the scheduled run (`0 * * * *` is hourly).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Records per page.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seconds a run may take.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_batch() -> usize {
    1000
}

fn default_timeout() -> u64 {
    300
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            schedule: None,
            batch_size: default_batch(),
            timeout: default_timeout(),
        }
    }
}

/// Seed 000 `crm.google_sheets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSheetsSettings {
    /// The credentials: a service-account key file path or its JSON, usually `${GOOGLE_CREDENTIALS}`.
    #[serde(default)]
    pub credentials: Option<SecretString>,
    /// The request rate of the sheet source: a number is requests per 100
    /// seconds (seed 000's `rate_limit: 100`); `"60 per minute"` and
    /// `{requests: 60, per_seconds: 60}` work too. It replaces the default
    /// of `sheet.rate_limit` (see [`SyncJob::sheet_config`]).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// Seed 000 `crm.database`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Pool size (maximum connections).
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Statement timeout in seconds.
    #[serde(default)]
    pub statement_timeout: Option<u64>,
}

impl SyncJob {
    /// Parses a job from YAML text; `origin` names it in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] for malformed YAML, unknown keys, wrong types, or a
    /// job without exactly one source.
    pub fn from_yaml(text: &str, origin: &str) -> Result<SyncJob, ConfigError> {
        let mut job: SyncJob = from_yaml_at(text, origin)?;
        if job.sheet.is_some() == job.database.is_some() {
            return Err(ConfigError::new(
                origin,
                "a job reads from exactly one source: give either a `sheet:` block \
                 (Google Sheets) or a `database:` block (PostgreSQL, MySQL, SQLite)",
            ));
        }
        if let Some(c) = &job.campaigns
            && c.file.is_some() == c.database.is_some()
        {
            return Err(ConfigError::new(
                origin,
                "`campaigns:` takes exactly one of `file: campaigns.csv` and `database: {...}`",
            ));
        }
        if let Err(message) = job.sheet_config() {
            return Err(ConfigError::new(origin, message));
        }
        if let Some(mapping) = &job.mappings {
            if mapping.is_empty() {
                return Err(ConfigError::new(
                    origin,
                    "`mappings:` is empty, so every field would be dropped: list the field maps \
                     (`- {source: email, destination: email, pii: true}`) or remove the key",
                ));
            }
            let key = job.key_field();
            if !mapping.fields_written(Flow::ToCrm).contains(&key) {
                return Err(ConfigError {
                    path: "mappings".to_owned(),
                    ..ConfigError::new(
                        origin,
                        format!(
                            "no map writes the key field `{key}`: records are named and upserted \
                             by it, so add `- {{source: {key}, destination: {key}}}`"
                        ),
                    )
                });
            }
        }
        if let Some(d) = &job.dedupe
            && let Some(key) = &d.key
            && (key.fields().is_empty() || key.fields().iter().any(|f| f.trim().is_empty()))
        {
            return Err(ConfigError::new(
                origin,
                "`dedupe.key` needs at least one non-empty field name (e.g. `key: booking_id`)",
            ));
        }
        // `crm.matching` tunes `matching:` (and nothing without it).
        if let Some(settings) = job.crm.matching.clone()
            && let Some(matching) = job.matching.take()
        {
            job.matching = Some(matching.with_settings(settings));
        }
        Ok(job)
    }

    /// Reads and parses a job file. Relative paths in the job (the campaigns
    /// file, a SQLite destination) are taken relative to the file's folder.
    ///
    /// # Errors
    /// A [`ConfigError`] when the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<SyncJob, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                &origin,
                format!("cannot read the config file: {e}; check the path"),
            )
        })?;
        let mut job = SyncJob::from_yaml(&text, &origin)?;
        if let Some(dir) = path.parent() {
            job.rebase(dir);
        }
        Ok(job)
    }

    /// The `sheet:` block as the connector gets it: seed 000's
    /// `crm.google_sheets.rate_limit` as its rate limit and `oauth.scopes` as
    /// its OAuth scopes. `None` for a job without a sheet source.
    ///
    /// The same setting may also be given inside `sheet:` (`rate_limit`,
    /// `scopes`); given in both places, the values must agree.
    ///
    /// # Errors
    /// A message naming both keys when they disagree.
    pub fn sheet_config(&self) -> Result<Option<SheetsConfig>, String> {
        let Some(sheet) = &self.sheet else {
            return Ok(None);
        };
        let mut cfg = sheet.clone();
        if let Some(limit) = self.crm.google_sheets.as_ref().and_then(|g| g.rate_limit) {
            // `sheet.rate_limit` always has a value (its default when not
            // written), so only a non-default one can disagree.
            if cfg.rate_limit != RateLimit::default() && cfg.rate_limit != limit {
                return Err(format!(
                    "`sheet.rate_limit` ({}) and `crm.google_sheets.rate_limit` ({limit}) disagree; \
                     keep one of them",
                    cfg.rate_limit
                ));
            }
            cfg.rate_limit = limit;
        }
        if let Some(scopes) = self
            .oauth
            .as_ref()
            .map(|o| &o.scopes)
            .filter(|s| !s.is_empty())
        {
            if let Some(own) = &cfg.scopes
                && own != scopes
            {
                return Err(
                    "`sheet.scopes` and `oauth.scopes` list different scopes; keep one of them"
                        .to_owned(),
                );
            }
            cfg.scopes = Some(scopes.clone());
        }
        Ok(Some(cfg))
    }

    /// The field that names and keys the job's records: `sheet.key_field`
    /// for a sheet source (default `booking_id`), `booking_id` otherwise.
    /// Upserts into the destination, dead letters and review items are
    /// keyed by it.
    pub fn key_field(&self) -> &str {
        self.sheet
            .as_ref()
            .map_or("booking_id", |s| s.key_field.as_str())
    }

    /// The fields holding personal data: the source and destination names
    /// of every `mappings:` entry marked `pii: true` (empty without
    /// `mappings:`).
    ///
    /// Every place that opens the job's state store (`crm-sync run`,
    /// `serve`, `schedule`, `writeback`, `resume`, the review desk and the
    /// `sync` jobs of `crm-sync worker`) seals these fields' values in dead
    /// letters, audit entries and review items
    /// ([`crm_sql::state::StateStore::with_pii_fields`]), and the pipeline
    /// masks them (`john@example.com` -> `j***@example.com`) in its log
    /// lines, dead-letter reasons and reports (see
    /// [`crate::pipeline`]'s "Personal data"). A job with such fields needs
    /// the state key of `state.key_env`: values sealed with a key that
    /// lives only as long as the process could not be read again.
    ///
    /// ```
    /// use crm_sync::config::SyncJob;
    ///
    /// let job = SyncJob::from_yaml(r#"
    /// sheet: {spreadsheet_id: s, sheet_name: S, column_mapping: {A: booking_id, B: mail}}
    /// mappings:
    ///   - {source: booking_id, destination: booking_id}
    ///   - {source: mail, destination: email, transform: LOWER(), pii: true}
    /// "#, "inline").unwrap();
    /// let pii = job.pii_fields();
    /// assert!(pii.contains("mail") && pii.contains("email"));
    /// assert!(!pii.contains("booking_id"));
    /// ```
    pub fn pii_fields(&self) -> PiiFields {
        self.mappings
            .as_ref()
            .map(PiiFields::from_mapping)
            .unwrap_or_default()
    }

    /// The dedupe stage of the job, or `None` when it is off (`dedupe:
    /// {enabled: false}`) or no key is known.
    ///
    /// The key is `dedupe.key`; without it, the job's key: the first
    /// `unique` field of `validation:` (seed 000: `booking_id`), else the
    /// sheet's `key_field`, else the database source's `primary_key`. The
    /// policy is `dedupe.policy`, `newest` by default.
    ///
    /// Dedupe runs after validation, on each page: with seed 000's
    /// `unique: true` on `booking_id` a repeated key is already a dead
    /// letter (and a sheet marks a repeated key as a problem of the row), so
    /// the stage folds rows only when no such rule catches them.
    pub fn deduper(&self) -> Option<Deduper> {
        let section = self.dedupe.clone().unwrap_or_default();
        if !section.enabled {
            return None;
        }
        let key = match &section.key {
            Some(k) => k.fields(),
            None => {
                let from_rules = self
                    .validation
                    .as_ref()
                    .and_then(|v| v.key_field())
                    .map(str::to_owned);
                let from_sheet = || self.sheet.as_ref().map(|s| s.key_field.clone());
                match from_rules.or_else(from_sheet) {
                    Some(f) => vec![f],
                    None => self
                        .database
                        .as_ref()
                        .map(|d| d.primary_key.clone())
                        .unwrap_or_default(),
                }
            }
        };
        if key.is_empty() {
            return None;
        }
        let mut deduper = Deduper::new(key).policy(section.policy);
        if section.case_insensitive {
            deduper = deduper.case_insensitive();
        }
        Some(deduper)
    }

    fn rebase(&mut self, dir: &Path) {
        if let Some(p) = self.campaigns.as_mut().and_then(|c| c.file.as_mut())
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHEET: &str =
        "sheet: {spreadsheet_id: s, sheet_name: S, column_mapping: {A: booking_id}}\n";

    #[test]
    fn matching_is_kept_without_crm_matching() {
        let yaml = format!(
            "{SHEET}matching:\n  strategies:\n    - {{type: exact_id, source: booking.campaign_id, \
             target: campaign.id, priority: 1}}\n"
        );
        let job = SyncJob::from_yaml(&yaml, "inline").unwrap();
        assert!(job.matching.is_some());
    }

    #[test]
    fn mappings_must_write_the_key_and_name_the_personal_fields() {
        let job = SyncJob::from_yaml(
            &format!(
                "{SHEET}mappings:\n  - {{source: booking_id, destination: booking_id}}\n  \
                 - {{source: phone, destination: Phone, pii: true}}\n"
            ),
            "inline",
        )
        .unwrap();
        assert_eq!(
            job.pii_fields().names().collect::<Vec<_>>(),
            ["Phone", "phone"]
        );
        for bad in [
            "mappings: []\n",
            "mappings:\n  - {source: booking_id, destination: id}\n",
        ] {
            let err = SyncJob::from_yaml(&format!("{SHEET}{bad}"), "inline").unwrap_err();
            assert!(
                err.message.contains("mappings") || err.path == "mappings",
                "{err}"
            );
        }
        assert!(
            SyncJob::from_yaml(SHEET, "inline")
                .unwrap()
                .pii_fields()
                .is_empty()
        );
    }
}
