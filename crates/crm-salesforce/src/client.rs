//! [`SalesforceClient`]: typed calls of the REST API (query, describe,
//! limits), sObject Collections and Bulk API 2.0, on the shared HTTP client.
//!
//! Every call reads `Sforce-Limit-Info` and stops with
//! [`ErrorKind::QuotaExhausted`] while the org's daily allocation is within
//! [`SalesforceConfig::quota_reserve`] of running out: waiting cannot restore
//! a rolling 24-hour allocation, so the caller saves its cursor and resumes
//! later. A reading that says the allocation is used up is trusted for
//! [`SalesforceConfig::usage_ttl`] only: the allocation is a rolling 24-hour
//! window, so after that the client reads `limits` again instead of refusing
//! every call of a long-lived client forever. Bulk job polls and result downloads (long-running requests) share
//! a semaphore of [`SalesforceConfig::max_long_running`] permits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use crm_core::{Error, ErrorKind, Result};
use crm_http::reqwest::Method;
use crm_http::reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use crm_http::{HttpResponse, Metrics, RequestOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::auth::Session;
use crate::config::SalesforceConfig;
use crate::error::SalesforceError;
use crate::soql::check_name;
use crate::wire::{
    ApiUsage, CollectionRequest, CreateIngestJob, CreateQueryJob, DescribeSObject, JobId, JobInfo,
    JobState, JobStateChange, Limit, QueryResponse, SaveResult,
};

/// Which results of an ingest job to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestResults {
    /// `successfulResults`: `sf__Id`, `sf__Created`, then the uploaded columns.
    Successful,
    /// `failedResults`: `sf__Id`, `sf__Error`, then the uploaded columns.
    Failed,
    /// `unprocessedrecords`: the uploaded columns.
    Unprocessed,
}

impl IngestResults {
    fn path(self) -> &'static str {
        match self {
            IngestResults::Successful => "successfulResults",
            IngestResults::Failed => "failedResults",
            IngestResults::Unprocessed => "unprocessedrecords",
        }
    }
}

enum Body {
    None,
    Json(Bytes),
    Csv(Bytes),
}

/// A client for one org. Cheap to clone; clones share the session, rate
/// limits and metrics.
#[derive(Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: SalesforceConfig,
    session: Session,
    usage: Mutex<Option<UsageReading>>,
    long_running: Arc<Semaphore>,
}

/// The last known API usage and when it was read (tokio's clock, so tests can
/// move it).
#[derive(Clone, Copy, Debug)]
struct UsageReading {
    usage: ApiUsage,
    at: tokio::time::Instant,
}

/// The endpoint name of `GET limits`.
const LIMITS_ENDPOINT: &str = "limits";

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("login", &self.inner.config.login)
            .field("api_version", &self.inner.config.api_version)
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    /// A client for `config`. No request is sent until the first call.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an unusable key, certificate or URL.
    pub fn new(config: SalesforceConfig) -> Result<SalesforceClient> {
        let session = Session::new(&config)?;
        Ok(SalesforceClient {
            inner: Arc::new(Inner {
                long_running: Arc::new(Semaphore::new(config.max_long_running)),
                session,
                config,
                usage: Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SalesforceConfig {
        &self.inner.config
    }

    /// Request metrics (calls, errors, retries, latency) of this client.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.inner.session.metrics()
    }

    /// The last API usage seen (`Sforce-Limit-Info`, or `limits`).
    pub fn api_usage(&self) -> Option<ApiUsage> {
        self.reading().map(|r| r.usage)
    }

    fn reading(&self) -> Option<UsageReading> {
        *self
            .inner
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_usage(&self, usage: ApiUsage) {
        *self
            .inner
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(UsageReading {
            usage,
            at: tokio::time::Instant::now(),
        });
    }

    fn reserve(&self, usage: &ApiUsage) -> u64 {
        self.inner
            .config
            .quota_reserve
            .unwrap_or_else(|| (usage.max / 50).max(1))
    }

    fn data(&self, suffix: &str) -> String {
        format!("{}/{}", self.inner.config.data_path(), suffix)
    }

    /// Refuses a call while the allocation is within the reserve of running
    /// out. A reading older than [`SalesforceConfig::usage_ttl`] that says so
    /// is renewed first from `GET limits` (the rolling window may have freed
    /// requests since).
    async fn check_quota(&self, endpoint: &'static str) -> Result<()> {
        let Some(mut reading) = self.reading() else {
            return Ok(());
        };
        if reading.usage.remaining() <= self.reserve(&reading.usage)
            && reading.at.elapsed() >= self.inner.config.usage_ttl
        {
            self.refresh_usage().await?;
            if let Some(r) = self.reading() {
                reading = r;
            }
        }
        let usage = reading.usage;
        if usage.remaining() <= self.reserve(&usage) {
            return Err(Error::new(
                ErrorKind::QuotaExhausted,
                format!(
                    "the org's daily API allocation is nearly used up ({}): stopping with {} \
                     requests left as a reserve; resume later from the saved cursor",
                    usage.header_value(),
                    usage.remaining()
                ),
            )
            .with_operation(endpoint));
        }
        Ok(())
    }

    /// Reads `DailyApiRequests` from `GET limits` into the usage reading.
    ///
    /// # Errors
    /// As any call; [`ErrorKind::QuotaExhausted`] when the server itself
    /// answers `REQUEST_LIMIT_EXCEEDED`.
    pub async fn refresh_usage(&self) -> Result<Option<ApiUsage>> {
        let limits = self.limits().await?;
        let usage = limits.get("DailyApiRequests").map(|l| ApiUsage {
            used: l.max.saturating_sub(l.remaining),
            max: l.max,
        });
        if let Some(u) = usage {
            self.set_usage(u);
        }
        Ok(usage)
    }

    fn note_usage(&self, resp: &HttpResponse) {
        let usage = resp
            .headers()
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .and_then(ApiUsage::parse);
        if let Some(u) = usage {
            self.set_usage(u);
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&'static str, String)],
        options: RequestOptions,
    ) -> Result<HttpResponse> {
        self.check_quota(options.endpoint).await?;
        self.send_unchecked(method, path, body, headers, options)
            .await
    }

    /// [`send`](Self::send) without the quota check.
    async fn send_unchecked(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&'static str, String)],
        options: RequestOptions,
    ) -> Result<HttpResponse> {
        let mut renewed = false;
        loop {
            let (http, generation) = self.inner.session.data().await?;
            let url = http.url(path)?;
            let mut req = http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            req = match &body {
                Body::None => req.header(ACCEPT, HeaderValue::from_static("application/json")),
                Body::Json(b) => req
                    .header(ACCEPT, HeaderValue::from_static("application/json"))
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(b.clone()),
                Body::Csv(b) => req
                    .header(ACCEPT, HeaderValue::from_static("application/json"))
                    .header(CONTENT_TYPE, HeaderValue::from_static("text/csv"))
                    .body(b.clone()),
            };
            match http.send(req, options.clone()).await {
                Ok(resp) => {
                    self.note_usage(&resp);
                    return Ok(resp);
                }
                Err(e)
                    if !renewed
                        && e.kind() == &ErrorKind::Auth
                        && e.context_value("status") == Some("401")
                        && self.inner.session.renew(generation).await? =>
                {
                    renewed = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str, endpoint: &'static str) -> Result<T> {
        self.send(
            Method::GET,
            path,
            Body::None,
            &[],
            RequestOptions::new(endpoint),
        )
        .await?
        .json()
    }

    async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        options: RequestOptions,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            Error::invalid_input(format!("request body cannot be serialised: {e}"))
                .with_operation(options.endpoint)
        })?;
        self.send(method, path, Body::Json(Bytes::from(bytes)), &[], options)
            .await?
            .json()
    }

    /// Runs a SOQL query (`query`, or `queryAll` with deleted and archived
    /// records when `all`), asking for pages of
    /// [`SalesforceConfig::page_size`] records.
    ///
    /// # Errors
    /// Salesforce's error (`MALFORMED_QUERY`, `INVALID_FIELD`, ...) mapped by
    /// [`crate::ErrorCode::kind`].
    pub async fn query(&self, soql: &str, all: bool) -> Result<QueryResponse> {
        self.query_paged(soql, all, self.inner.config.page_size)
            .await
    }

    /// As [`query`](Self::query), asking for pages of `batch_size` records
    /// (clamped to 200..=2,000, the range `Sforce-Query-Options: batchSize`
    /// accepts; Salesforce may still send smaller pages).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn query_paged(
        &self,
        soql: &str,
        all: bool,
        batch_size: u32,
    ) -> Result<QueryResponse> {
        let q: String = url::form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        let (resource, endpoint) = if all {
            ("queryAll", "query_all")
        } else {
            ("query", "query")
        };
        let path = self.data(&format!("{resource}?q={q}"));
        let batch = [(
            "Sforce-Query-Options",
            format!("batchSize={}", batch_size.clamp(200, 2000)),
        )];
        self.send(
            Method::GET,
            &path,
            Body::None,
            &batch,
            RequestOptions::new(endpoint),
        )
        .await?
        .json()
    }

    /// The next page of a query, from its `nextRecordsUrl`.
    ///
    /// # Errors
    /// As [`query`](Self::query); [`ErrorKind::SchemaMismatch`] for a URL
    /// outside this API.
    pub async fn query_more(&self, next_records_url: &str) -> Result<QueryResponse> {
        if !next_records_url.starts_with("/services/data/") {
            return Err(SalesforceError::Wire(format!(
                "nextRecordsUrl {next_records_url:?} is not a data API path"
            ))
            .into());
        }
        self.get_json(next_records_url, "query_more").await
    }

    /// Describes an sObject type.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown type.
    pub async fn describe(&self, object: &str) -> Result<DescribeSObject> {
        check_name(object)?;
        self.get_json(
            &self.data(&format!("sobjects/{object}/describe")),
            "describe",
        )
        .await
    }

    /// The org's limits (`GET limits`), e.g. `DailyApiRequests`.
    ///
    /// # Errors
    /// As any call.
    pub async fn limits(&self) -> Result<BTreeMap<String, Limit>> {
        // Sent without the quota check: it is how a stale usage reading is renewed.
        let raw: Map<String, Value> = self
            .send_unchecked(
                Method::GET,
                &self.data("limits"),
                Body::None,
                &[],
                RequestOptions::new(LIMITS_ENDPOINT),
            )
            .await?
            .json()?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value::<Limit>(v).ok().map(|l| (k, l)))
            .collect())
    }

    fn collection(object: &str, records: Vec<Map<String, Value>>) -> CollectionRequest {
        CollectionRequest {
            all_or_none: false,
            records: records
                .into_iter()
                .map(|mut r| {
                    let mut out = Map::new();
                    out.insert("attributes".into(), serde_json::json!({ "type": object }));
                    r.remove("attributes");
                    out.append(&mut r);
                    out
                })
                .collect(),
        }
    }

    /// Upserts up to 200 records by `external_id_field`
    /// (`PATCH composite/sobjects/{object}/{field}`, `allOrNone: false`).
    ///
    /// # Errors
    /// For the whole call only; per-record failures are in the results.
    ///
    /// # Cancel safety
    /// An upsert by external id may be repeated safely.
    pub async fn collections_upsert(
        &self,
        object: &str,
        external_id_field: &str,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<SaveResult>> {
        check_name(object)?;
        check_name(external_id_field)?;
        let path = self.data(&format!("composite/sobjects/{object}/{external_id_field}"));
        self.send_json(
            Method::PATCH,
            &path,
            &Self::collection(object, records),
            RequestOptions::new("collections.upsert").idempotent(true),
        )
        .await
    }

    /// Creates up to 200 records (`POST composite/sobjects`).
    ///
    /// # Errors
    /// For the whole call only.
    ///
    /// # Cancel safety
    /// Not idempotent: a cancelled call may have created records.
    pub async fn collections_create(
        &self,
        object: &str,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<SaveResult>> {
        check_name(object)?;
        self.send_json(
            Method::POST,
            &self.data("composite/sobjects"),
            &Self::collection(object, records),
            RequestOptions::new("collections.create"),
        )
        .await
    }

    /// Updates up to 200 records by `Id` (`PATCH composite/sobjects`).
    ///
    /// # Errors
    /// For the whole call only.
    ///
    /// # Cancel safety
    /// Repeating an update with the same values is harmless.
    pub async fn collections_update(
        &self,
        object: &str,
        records: Vec<Map<String, Value>>,
    ) -> Result<Vec<SaveResult>> {
        check_name(object)?;
        self.send_json(
            Method::PATCH,
            &self.data("composite/sobjects"),
            &Self::collection(object, records),
            RequestOptions::new("collections.update").idempotent(true),
        )
        .await
    }

    /// Deletes up to 200 records (`DELETE composite/sobjects?ids=...&allOrNone=false`).
    ///
    /// # Errors
    /// For the whole call only.
    pub async fn collections_delete(&self, ids: &[String]) -> Result<Vec<SaveResult>> {
        for id in ids {
            if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(Error::invalid_input(format!("{id:?} is not a record id")));
            }
        }
        let path = self.data(&format!(
            "composite/sobjects?ids={}&allOrNone=false",
            ids.join(",")
        ));
        self.send(
            Method::DELETE,
            &path,
            Body::None,
            &[],
            RequestOptions::new("collections.delete"),
        )
        .await?
        .json()
    }

    /// Creates a Bulk API 2.0 query job (`queryAll` when `all`).
    ///
    /// # Errors
    /// As any call; `INVALID_FIELD` etc. for a bad query.
    pub async fn create_query_job(&self, soql: &str, all: bool) -> Result<JobInfo> {
        let body = CreateQueryJob {
            operation: if all { "queryAll" } else { "query" }.into(),
            query: soql.to_owned(),
            content_type: "CSV".into(),
            line_ending: "LF".into(),
            column_delimiter: "COMMA".into(),
        };
        self.send_json(
            Method::POST,
            &self.data("jobs/query"),
            &body,
            RequestOptions::new("bulk.query.create"),
        )
        .await
    }

    /// A query job's info.
    ///
    /// # Errors
    /// As any call.
    pub async fn query_job(&self, id: &JobId) -> Result<JobInfo> {
        self.get_json(
            &self.data(&format!("jobs/query/{}", job_path(id)?)),
            "bulk.query.info",
        )
        .await
    }

    /// One page of a finished query job's CSV results, and the locator of
    /// the next page (`Sforce-Locator`; `None` after the last page).
    ///
    /// # Errors
    /// As any call.
    pub async fn query_job_results(
        &self,
        id: &JobId,
        locator: Option<&str>,
        max_records: u64,
    ) -> Result<(String, Option<String>)> {
        let _permit = self.long_running().await?;
        let mut path = format!(
            "jobs/query/{}/results?maxRecords={max_records}",
            job_path(id)?
        );
        if let Some(l) = locator {
            let l: String = url::form_urlencoded::byte_serialize(l.as_bytes()).collect();
            path.push_str(&format!("&locator={l}"));
        }
        let resp = self
            .send(
                Method::GET,
                &self.data(&path),
                Body::None,
                &[],
                RequestOptions::new("bulk.query.results"),
            )
            .await?;
        let next = resp
            .headers()
            .get("sforce-locator")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_owned);
        Ok((resp.text()?.to_owned(), next))
    }

    /// Creates an ingest job.
    ///
    /// # Errors
    /// As any call.
    pub async fn create_ingest_job(&self, job: &CreateIngestJob) -> Result<JobInfo> {
        check_name(&job.object)?;
        self.send_json(
            Method::POST,
            &self.data("jobs/ingest"),
            job,
            RequestOptions::new("bulk.ingest.create"),
        )
        .await
    }

    /// Uploads an ingest job's CSV data (once per job).
    ///
    /// # Errors
    /// As any call.
    pub async fn upload_job_data(&self, id: &JobId, csv: String) -> Result<()> {
        let path = self.data(&format!("jobs/ingest/{}/batches", job_path(id)?));
        self.send(
            Method::PUT,
            &path,
            Body::Csv(Bytes::from(csv)),
            &[],
            RequestOptions::new("bulk.ingest.upload"),
        )
        .await
        .map(|_| ())
    }

    /// Sets an ingest job's state (`UploadComplete` to start it, `Aborted`).
    ///
    /// # Errors
    /// As any call.
    pub async fn set_ingest_state(&self, id: &JobId, state: JobState) -> Result<JobInfo> {
        let path = self.data(&format!("jobs/ingest/{}", job_path(id)?));
        self.send_json(
            Method::PATCH,
            &path,
            &JobStateChange { state },
            RequestOptions::new("bulk.ingest.state").idempotent(true),
        )
        .await
    }

    /// An ingest job's info.
    ///
    /// # Errors
    /// As any call.
    pub async fn ingest_job(&self, id: &JobId) -> Result<JobInfo> {
        self.get_json(
            &self.data(&format!("jobs/ingest/{}", job_path(id)?)),
            "bulk.ingest.info",
        )
        .await
    }

    /// The CSV results of a finished ingest job.
    ///
    /// # Errors
    /// As any call.
    pub async fn ingest_results(&self, id: &JobId, which: IngestResults) -> Result<String> {
        let _permit = self.long_running().await?;
        let path = self.data(&format!("jobs/ingest/{}/{}", job_path(id)?, which.path()));
        let resp = self
            .send(
                Method::GET,
                &path,
                Body::None,
                &[],
                RequestOptions::new("bulk.ingest.results"),
            )
            .await?;
        Ok(resp.text()?.to_owned())
    }

    /// Polls a job until it is `JobComplete`, `Failed` or `Aborted`, waiting
    /// [`SalesforceConfig::bulk_poll`] between polls (doubling).
    ///
    /// # Errors
    /// [`SalesforceError::JobFailed`] for `Failed` and `Aborted`.
    pub async fn wait_for_job(&self, id: &JobId, ingest: bool) -> Result<JobInfo> {
        let (mut delay, max) = self.inner.config.bulk_poll;
        loop {
            let info = {
                let _permit = self.long_running().await?;
                if ingest {
                    self.ingest_job(id).await?
                } else {
                    self.query_job(id).await?
                }
            };
            match info.state {
                JobState::JobComplete => return Ok(info),
                JobState::Failed | JobState::Aborted => {
                    return Err(SalesforceError::JobFailed {
                        job_id: id.to_string(),
                        state: info.state.to_string(),
                        message: info.error_message.unwrap_or_default(),
                    }
                    .into());
                }
                _ => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max).max(Duration::from_millis(1));
                }
            }
        }
    }

    async fn long_running(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.inner.long_running)
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Permanent, "client closed"))
    }
}

fn job_path(id: &JobId) -> Result<&str> {
    if !id.0.is_empty() && id.0.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(&id.0)
    } else {
        Err(SalesforceError::Wire(format!("{:?} is not a job id", id.0)).into())
    }
}
