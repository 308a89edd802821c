//! Runs a [`SyncJob`]: opens its source, destination, state store and
//! campaigns, then drives the [`Pipeline`].
//!
//! Setting up (reading credentials, reaching the databases, loading the
//! campaigns) and running are told apart in [`RunError`], because a
//! person fixes the first (exit code 2) while the second is a run that could
//! not finish (exit code 1).
//!
//! # Personal data
//!
//! The fields a job's `mappings:` mark `pii: true`
//! ([`SyncJob::pii_fields`]) are sealed at rest: the state store is opened
//! [`with_pii_fields`](StateStore::with_pii_fields), so the dead letters,
//! review items and audit entries a run writes hold those values
//! encrypted (`{"$sealed": "v1:..."}`) and the store's reads open them. The
//! pipeline masks them in its reasons and log lines (see
//! [`crate::pipeline`]). Such a job needs its state key
//! (`state.key_env`, or [`Overrides::state_key`]): without it the run does
//! not start, as values sealed with a key that lives only as long as the
//! process could never be read again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crm_core::env::{from_process, interpolate};
use crm_core::mapping::{Flow, column_index, column_letters};
use crm_core::model::Campaign;
use crm_core::{
    Change, Connector, Error, FieldSchema, FieldType, ObjectSchema, ReadRequest, Sink, Source,
};
use crm_sheets::a1::quote_sheet;
use crm_sheets::auth::GoogleCredentials;
use crm_sheets::cell::Cell;
use crm_sheets::client::ClientOptions;
use crm_sheets::mapping::effective_columns;
use crm_sheets::schema::check_headers;
use crm_sheets::source::SheetsConnector;
use crm_sheets::wire::{DateTimeRenderOption, ValueRenderOption};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sql::{SqlConfig, SqlConnector, booking_schema};
use futures_util::StreamExt;
use secrecy::ExposeSecret;

use crate::config::SyncJob;
use crate::pipeline::{CampaignMatching, MATCH_STATUS_FIELD, Mode, Observer, Pipeline};
use crate::report::RunReport;
use crate::state::SqlState;

/// Why a job did not run to the end.
#[derive(Debug)]
pub enum RunError {
    /// The job could not start: credentials, an unreachable database, a
    /// missing campaigns file. The message says what to fix.
    Setup(Error),
    /// The run started and could not finish; what was stored stays stored
    /// and the next run resumes from the last checkpoint.
    Run(Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Setup(e) => write!(f, "the job could not start: {e}"),
            RunError::Run(e) => write!(
                f,
                "the run stopped before the end: {e}. Everything stored before the stop is \
                 kept; the next run resumes from the last checkpoint"
            ),
        }
    }
}

impl std::error::Error for RunError {}

/// Values that replace parts of a job: the demo points a job at the
/// simulator this way, and tests use it too.
#[derive(Default)]
#[non_exhaustive]
pub struct Overrides {
    /// The Google Sheets API base URL (a simulator's).
    pub sheet_base_url: Option<String>,
    /// Google credentials instead of `crm.google_sheets.credentials`.
    pub google_credentials: Option<GoogleCredentials>,
    /// The destination URL instead of `destination.url`.
    pub destination_url: Option<String>,
    /// Campaigns instead of the job's `campaigns:`.
    pub campaigns: Option<Vec<Campaign>>,
    /// The folder relative paths are taken from (default: the current one).
    pub base_dir: Option<PathBuf>,
    /// The state store's key instead of the one in `state.key_env`.
    pub state_key: Option<CredentialKey>,
}

/// The destination table of a bookings job: seed 000's `booking` schema,
/// named `table`, with the match status the pipeline records.
///
/// `client_id` may be empty here: a sheet names the client (`client_name`)
/// rather than its id, which is filled once the client is known.
pub fn destination_schema(table: &str) -> ObjectSchema {
    let mut schema = booking_schema();
    schema.name = table.to_owned();
    schema.label = table.to_owned();
    for field in &mut schema.fields {
        if field.name == "client_id" {
            field.required = false;
            field.nullable = true;
        }
    }
    schema.field(
        FieldSchema::new(MATCH_STATUS_FIELD, FieldType::Picklist)
            .max_length(16)
            .picklist(["matched", "probable", "unmatched", "multiple"]),
    )
}

fn setup(e: Error) -> RunError {
    RunError::Setup(e)
}

pub(crate) fn resolve_sqlite_path(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn with_create_mode(url: String) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url
    }
}

fn credentials(job: &SyncJob, base: &Path) -> Result<GoogleCredentials, Error> {
    let configured = job
        .crm
        .google_sheets
        .as_ref()
        .and_then(|g| g.credentials.as_ref())
        .ok_or_else(|| {
            Error::invalid_input(
                "the sheet source needs Google credentials: set `crm.google_sheets.credentials` \
                 to a service-account key file, an authorized-user file, or \"${GOOGLE_CREDENTIALS}\"",
            )
        })?;
    let text = interpolate(
        "crm.google_sheets.credentials",
        configured.expose_secret(),
        from_process,
    )?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        GoogleCredentials::from_json(trimmed)
    } else {
        GoogleCredentials::from_file(base.join(trimmed))
    }
}

/// What to check when a database cannot be reached, after the error itself.
const DATABASE_HINT: &str = "Check that the host and port are right, that the database server is \
     running and accepts connections from this machine, and that the username, password and \
     database name are correct";

/// The same for an SQLite file.
const SQLITE_HINT: &str = "Check the file's path (a relative one is taken from the job file's \
     folder), that its folder exists and that this user may read and write there";

/// Turns a failed connection to a database into a setup error that names
/// the database (never its password) and says what to check. Config errors
/// (`invalid_input`) already say what to fix and are kept as they are.
fn connect_error(e: Error, what: &str, target: Option<String>) -> Error {
    if e.kind() == &crm_core::ErrorKind::InvalidInput {
        return e;
    }
    let hint = if target.as_deref().is_some_and(|t| t.starts_with("sqlite")) {
        SQLITE_HINT
    } else {
        DATABASE_HINT
    };
    let target = target.map(|t| format!(" {t}")).unwrap_or_default();
    Error::new(
        e.kind().clone(),
        format!("cannot connect to the {what} database{target} ({e}). {hint}"),
    )
}

fn config_target(cfg: &SqlConfig) -> Option<String> {
    cfg.resolve().ok().map(|r| r.describe_target())
}

fn url_target(url: &str) -> Option<String> {
    SqlConfig::from_url(url.to_owned())
        .ok()
        .as_ref()
        .and_then(config_target)
}

/// The Google Sheets connector of a job with a `sheet:` source: the sheet
/// config with `crm.google_sheets.rate_limit` and `oauth.scopes` applied
/// ([`SyncJob::sheet_config`]) and the overrides (a simulator's URL and
/// credentials). `Ok(None)` for a job without a sheet source.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] for an invalid sheet config or
/// missing or unreadable credentials.
pub fn sheets_connector(
    job: &SyncJob,
    sheet_base_url: Option<&str>,
    google_credentials: Option<GoogleCredentials>,
    base: &Path,
) -> Result<Option<SheetsConnector>, Error> {
    let Some(mut cfg) = job.sheet_config().map_err(Error::invalid_input)? else {
        return Ok(None);
    };
    if let Some(url) = sheet_base_url {
        cfg.base_url = Some(url.to_owned());
    }
    let creds = match google_credentials {
        Some(c) => c,
        None => credentials(job, base)?,
    };
    SheetsConnector::with_options(cfg, &creds, ClientOptions::default()).map(Some)
}

/// An opened source: the connector, and the same connector as a
/// [`SheetsConnector`] for a sheet source (`crm-sync check` reads its header
/// row).
struct Opened {
    source: Box<dyn Source>,
    sheet: Option<SheetsConnector>,
}

/// Opens the job's source, with the overrides (a simulator's URL and
/// credentials) applied; the pool settings of seed 000's `pool:` and
/// `crm.database` apply to a database source.
async fn open_source(
    job: &SyncJob,
    sheet_base_url: Option<&str>,
    google_credentials: Option<GoogleCredentials>,
    base: &Path,
) -> Result<Opened, Error> {
    if let Some(sheet) = sheets_connector(job, sheet_base_url, google_credentials, base)? {
        return Ok(Opened {
            source: Box::new(sheet.clone()),
            sheet: Some(sheet),
        });
    }
    match &job.database {
        Some(db) => {
            let mut cfg: SqlConfig = db.clone();
            if let Some(pool) = &job.pool {
                cfg.pool = pool.clone();
            }
            if let Some(settings) = &job.crm.database {
                if let Some(n) = settings.pool_size {
                    cfg.pool.max_connections = n;
                }
                if settings.statement_timeout.is_some() {
                    cfg.statement_timeout = settings.statement_timeout;
                }
            }
            let connector = SqlConnector::connect(&cfg)
                .await
                .map_err(|e| connect_error(e, "source", config_target(&cfg)))?;
            Ok(Opened {
                source: Box::new(connector),
                sheet: None,
            })
        }
        None => Err(Error::invalid_input(
            "the job has no source: add a `sheet:` or a `database:` block",
        )),
    }
}

/// The campaigns of a job's `campaigns:` (its CSV file or database table).
///
/// # Errors
/// A setup error naming what to fix when there are none or they cannot be
/// read.
pub async fn job_campaigns(job: &SyncJob) -> Result<Vec<Campaign>, RunError> {
    campaigns(job).await
}

async fn campaigns(job: &SyncJob) -> Result<Vec<Campaign>, RunError> {
    let source = job.campaigns.as_ref().ok_or_else(|| {
        setup(Error::invalid_input(
            "`matching:` is configured but there are no campaigns to match to: add \
             `campaigns: {file: campaigns.csv}` (or a `database:` block) to the job",
        ))
    })?;
    if let Some(path) = &source.file {
        return crate::campaigns::from_csv(path).map_err(setup);
    }
    let Some(cfg) = &source.database else {
        return Err(setup(Error::invalid_input(
            "`campaigns:` needs `file:` or `database:`",
        )));
    };
    let connector = SqlConnector::connect(cfg)
        .await
        .map_err(|e| setup(connect_error(e, "campaigns", config_target(cfg))))?;
    let mut out = Vec::new();
    let mut pages = connector.read(ReadRequest::full("campaigns"));
    while let Some(page) = pages.next().await {
        for change in page.map_err(setup)?.changes {
            if let Change::Upsert(r) = change {
                out.push(Campaign::try_from(&r).map_err(|e| setup(e.into()))?);
            }
        }
    }
    Ok(out)
}

/// The state store's key: base64 in the variable `state.key_env` names.
///
/// # Errors
/// [`RunError::Setup`] for a key that is not 32 bytes of base64, or when
/// the variable is unset and the job has personal fields to seal.
pub(crate) fn state_key(job: &SyncJob) -> Result<CredentialKey, RunError> {
    match std::env::var(&job.state.key_env) {
        Ok(text) => CredentialKey::from_base64(&text).map_err(|e| setup(e.into())),
        Err(_) if !job.pii_fields().is_empty() => Err(setup(
            Error::invalid_input(format!(
                "the job marks fields `pii: true`, which the state store encrypts with the key \
                 in ${}; set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 \
                 32`) and keep it: values sealed with another key cannot be read",
                job.state.key_env
            ))
            .with_context("field", "state.key_env"),
        )),
        // Nothing personal is sealed and the pipeline stores no
        // credentials: a key that lives as long as the process keeps the
        // store's sealing intact without asking for one.
        Err(_) => Ok(CredentialKey::generate().0),
    }
}

/// Runs `job` once in `mode` and returns its report.
///
/// # Errors
/// [`RunError::Setup`] when something must be fixed before the job can
/// start, [`RunError::Run`] when the run stopped part-way (then the stored
/// pages and their checkpoints stay, and the next run resumes).
///
/// # Cancel safety
/// Dropping the future loses nothing: see [`Pipeline::run`].
pub async fn run_job(
    job: &SyncJob,
    mode: Mode,
    mut overrides: Overrides,
    observer: Option<&dyn Observer>,
) -> Result<RunReport, RunError> {
    let base = overrides
        .base_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));

    // Source.
    let source = open_source(
        job,
        overrides.sheet_base_url.as_deref(),
        overrides.google_credentials.take(),
        &base,
    )
    .await
    .map_err(setup)?;
    let source: &dyn Source = source.source.as_ref();

    // Destination and state.
    let dest_url = match &overrides.destination_url {
        Some(url) => url.clone(),
        None => interpolate(
            "destination.url",
            job.destination.url.expose_secret(),
            from_process,
        )
        .map_err(setup)?,
    };
    let dest_url = with_create_mode(resolve_sqlite_path(&dest_url, &base));
    let sink = SqlConnector::connect_url(&dest_url)
        .await
        .map_err(|e| setup(connect_error(e, "destination", url_target(&dest_url))))?;
    if job.destination.create_table {
        sink.create_table(&destination_schema(&job.destination.table))
            .await
            .map_err(setup)?;
    }
    let state_url = match &job.state.url {
        Some(url) => with_create_mode(resolve_sqlite_path(
            &interpolate("state.url", url.expose_secret(), from_process).map_err(setup)?,
            &base,
        )),
        None => dest_url.clone(),
    };
    let key = match overrides.state_key.take() {
        Some(key) => key,
        None => state_key(job)?,
    };
    let store = StateStore::open_url(&state_url, key)
        .await
        .map_err(|e| setup(connect_error(e, "state", url_target(&state_url))))?
        .with_pii_fields(job.pii_fields());
    let state = SqlState::open(store, &job.name).await.map_err(setup)?;

    // Matching.
    let matching = match &job.matching {
        Some(cfg) => {
            let list = match overrides.campaigns {
                Some(list) => list,
                None => campaigns(job).await?,
            };
            Some(Arc::new(CampaignMatching::new(cfg, list)))
        }
        None => None,
    };

    let sink_ref: &dyn Sink = &sink;
    let mut pipeline = Pipeline::new(&job.name, &job.object, source, sink_ref, &state)
        .destination_object(&job.destination.table)
        .key_field(job.key_field())
        .page_size(job.crm.sync.batch_size);
    // The mapping's `pii: true` maps are the job's personal fields: the
    // pipeline masks them as the store seals them.
    if let Some(mapping) = &job.mappings {
        pipeline = pipeline.mapping(mapping.clone().with_key_field(job.key_field()), Flow::ToCrm);
    }
    if let Some(deduper) = job.deduper() {
        pipeline = pipeline.dedupe(deduper);
    }
    if let Some(rules) = &job.validation {
        pipeline = pipeline.validation(rules.clone());
    }
    if let Some(m) = matching {
        pipeline = pipeline.matcher(m);
        if let Some(cap) = job
            .matching
            .as_ref()
            .and_then(|m| m.settings.max_manual_review)
        {
            pipeline = pipeline.max_manual_review(cap);
        }
    }
    if let Some(o) = observer {
        pipeline = pipeline.observer(o);
    }
    let keys = SqlKeys {
        url: dest_url.clone(),
    };
    if job.destination.remove_missing {
        pipeline = pipeline.remove_missing(&keys);
    }
    let timeout = Duration::from_secs(job.crm.sync.timeout.max(1));
    let outcome = tokio::time::timeout(timeout, pipeline.run(mode)).await;
    if let Ok(Err(e)) = &outcome {
        // Seed 000: a schema mismatch alerts and pauses the sync. A failure
        // to pause must not hide the run's own error, so it is only logged.
        if let Err(p) = crate::schedule::jobs::pause_on_schema_mismatch(
            state.store(),
            state.connection(),
            &job.name,
            e,
        )
        .await
        {
            tracing::warn!(job = %job.name, error = %p, "could not pause the connection");
        }
    }
    sink.close().await;
    state.store().close().await;
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(RunError::Run(e)),
        Err(_) => Err(RunError::Run(Error::new(
            crm_core::ErrorKind::Transient,
            format!(
                "the run took longer than crm.sync.timeout ({} s); raise it or lower \
                 crm.sync.batch_size",
                timeout.as_secs()
            ),
        ))),
    }
}

/// One line of `crm-sync check`: a part of the job and how it went.
#[derive(Debug)]
pub struct CheckLine {
    /// The part (`source`, `source schema`, `destination`, `state`, `campaigns`).
    pub part: &'static str,
    /// What was found, or what is wrong.
    pub outcome: std::result::Result<String, Error>,
}

/// Tests a job's connections and the source's schema without syncing.
///
/// Every part is tried, so one report lists every problem.
pub async fn check_job(job: &SyncJob, mut overrides: Overrides) -> Vec<CheckLine> {
    let base = overrides
        .base_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let mut lines = Vec::new();
    let source = match (&job.sheet, &job.database) {
        (None, None) => None,
        _ => match open_source(
            job,
            overrides.sheet_base_url.as_deref(),
            overrides.google_credentials.take(),
            &base,
        )
        .await
        {
            Ok(source) => Some(source),
            Err(e) => {
                lines.push(CheckLine {
                    part: "source",
                    outcome: Err(e),
                });
                None
            }
        },
    };
    if let Some(Opened { source, sheet }) = &source {
        let ok = source
            .check()
            .await
            .map(|()| format!("{} reachable", source.kind()));
        let reachable = ok.is_ok();
        lines.push(CheckLine {
            part: "source",
            outcome: ok,
        });
        if reachable {
            let schema = source
                .describe(&job.object)
                .await
                .map(|s| format!("{} with {} fields", s.name, s.fields.len()));
            lines.push(CheckLine {
                part: "source schema",
                outcome: schema,
            });
            if let Some(sheet) = sheet {
                lines.push(CheckLine {
                    part: "source headers",
                    outcome: check_sheet_headers(sheet).await,
                });
            }
        }
    }
    let dest_url = match &overrides.destination_url {
        Some(url) => Ok(url.clone()),
        None => interpolate(
            "destination.url",
            job.destination.url.expose_secret(),
            from_process,
        ),
    };
    let dest = match dest_url {
        Ok(url) => {
            let url = with_create_mode(resolve_sqlite_path(&url, &base));
            match SqlConnector::connect_url(&url).await {
                Ok(sink) => {
                    let ok = sink
                        .check()
                        .await
                        .map(|()| format!("{} reachable", sink.kind()));
                    sink.close().await;
                    ok
                }
                Err(e) => Err(connect_error(e, "destination", url_target(&url))),
            }
        }
        Err(e) => Err(e),
    };
    lines.push(CheckLine {
        part: "destination",
        outcome: dest,
    });
    if job.matching.is_some() {
        let found = match overrides.campaigns {
            Some(list) => Ok(list.len()),
            None => campaigns(job).await.map(|c| c.len()).map_err(|e| match e {
                RunError::Setup(e) | RunError::Run(e) => e,
            }),
        };
        lines.push(CheckLine {
            part: "campaigns",
            outcome: found.map(|n| format!("{n} campaigns")),
        });
    }
    lines
}

/// Compares the sheet's header row with `sheet.expected_headers`, as a run
/// does before it uses any row.
///
/// Without `expected_headers` a run compares the header row with the one
/// its previous run saw (kept in the checkpoint); the check does not open
/// the state store, so it lists the headers found for pinning instead.
///
/// # Errors
/// [`crm_core::ErrorKind::SchemaMismatch`] naming each moved, renamed or
/// deleted column; the client's errors when the header row cannot be read.
pub async fn check_sheet_headers(sheet: &SheetsConnector) -> Result<String, Error> {
    let cfg = sheet.config();
    if cfg.header_row == 0 {
        return Ok("no header row (header_row: 0): columns are read by column_mapping".to_owned());
    }
    let tab = sheet.resolve_sheet(None).await?;
    let range = format!(
        "{}!{}:{}",
        quote_sheet(&tab.title),
        cfg.header_row,
        cfg.header_row
    );
    let header: Vec<Cell> = sheet
        .client()
        .get_values(
            &range,
            ValueRenderOption::UnformattedValue,
            DateTimeRenderOption::SerialNumber,
        )
        .await?
        .values
        .into_iter()
        .next()
        .unwrap_or_default();
    let Some(expected) = &cfg.expected_headers else {
        let columns = effective_columns(cfg, &header);
        let found: Vec<String> = columns
            .iter()
            .map(|(i, _)| {
                let h = header.get(i).map(Cell::to_string).unwrap_or_default();
                format!("{}: {h:?}", column_letters(i))
            })
            .collect();
        return Ok(format!(
            "headers not compared (no `sheet.expected_headers`; a run compares them with the \
             previous run's); found {{{}}}",
            found.join(", ")
        ));
    };
    let mut pairs = Vec::with_capacity(expected.len());
    for (letters, name) in expected {
        let i = column_index(letters).map_err(|e| Error::invalid_input(e.to_string()))?;
        pairs.push((i, name.clone()));
    }
    check_headers(&tab.title, &pairs, &header)?;
    Ok(format!(
        "{} expected headers found in sheet {:?}",
        pairs.len(),
        tab.title
    ))
}

/// Lists the keys of a SQL destination table, for a full run's removal of
/// rows that left the source ([`Pipeline::remove_missing`]). Rows are read
/// in pages through crm-sql's source, ordered by `synced_at`.
#[derive(Clone, Debug)]
pub struct SqlKeys {
    url: String,
}

impl SqlKeys {
    /// Keys of tables in the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SqlKeys { url: url.into() }
    }
}

fn plain_identifier(name: &str) -> Result<&str, Error> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid_input(format!(
            "{name:?} is not a plain table or column name (letters, digits, `_`)"
        )))
    }
}

#[async_trait::async_trait]
impl crate::pipeline::DestinationKeys for SqlKeys {
    async fn keys(&self, object: &str, key_field: &str) -> crm_core::Result<Vec<String>> {
        let table = plain_identifier(object)?;
        let key = plain_identifier(key_field)?;
        let cfg = SqlConfig::builder()
            .url(self.url.clone())
            .query(format!("SELECT {key}, synced_at FROM {table}"))
            .cursor_column("synced_at")
            .primary_key([key])
            .build()
            .map_err(Error::from)?;
        let source = SqlConnector::connect(&cfg).await?;
        let mut keys = Vec::new();
        let mut pages = source.read(ReadRequest::full(table));
        while let Some(page) = pages.next().await {
            for change in page?.changes {
                if let Change::Upsert(r) = change
                    && let Some(v) = r.get(key).filter(|v| !v.is_blank())
                {
                    keys.push(v.to_string());
                }
            }
        }
        source.close().await;
        Ok(keys)
    }
}
