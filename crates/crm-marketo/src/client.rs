//! Typed calls to Marketo's REST (`/rest/v1`) and Bulk (`/bulk/v1`) APIs on
//! the shared `crm-http` client.
//!
//! Every call goes through the client-side limits (calls per window, calls
//! in flight, daily quota), the [`MarketoClassifier`] (errors inside 200
//! bodies) and the retry policy. Lead-database objects share one shape:
//! [`MarketoClient::query`] (filter), [`MarketoClient::sync`] (create or
//! update, ≤ 300 records), [`MarketoClient::delete`]; leads have their own
//! describe and the activity feeds; bulk exports go through
//! [`MarketoClient::export_create`] and its siblings.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::{Error, Result};
use crm_http::reqwest::Method;
use crm_http::{
    HttpClient, Metrics, RateLimitConfig, RequestOptions, RetryPolicy, StreamingResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::ObjectKind;
use crate::auth::http_auth;
use crate::config::MarketoConfig;
use crate::error::MarketoClassifier;
use crate::wire::{
    Activity, DeleteRequest, Envelope, ExportJob, ExportRequest, LeadAttribute, ObjectDescription,
    SyncLeadRequest, SyncObjectRequest, SyncResult, WireRecord,
};

/// Most records one sync call takes and one query page returns.
pub const MAX_BATCH: usize = 300;
/// Most values in one `filterValues` list.
pub const MAX_FILTER_VALUES: usize = 300;

/// A page of a filter query.
#[derive(Clone, Debug, Default)]
pub struct QueryPage {
    /// The records.
    pub records: Vec<WireRecord>,
    /// The next page's token, when there is one.
    pub next_page_token: Option<String>,
}

/// A page of an activity feed.
#[derive(Clone, Debug, Default)]
pub struct ActivityPage {
    /// The activities.
    pub activities: Vec<Activity>,
    /// The position after this page (store it to continue later).
    pub next_page_token: Option<String>,
    /// Whether more activities follow now.
    pub more_result: bool,
}

/// The Marketo API client.
#[derive(Clone, Debug)]
pub struct MarketoClient {
    http: HttpClient,
}

impl MarketoClient {
    /// A client for `config`: its identity endpoint, limits, retries and
    /// root certificate.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be built.
    pub fn new(config: &MarketoConfig) -> Result<Self> {
        let limits = config.limits();
        let mut rate = RateLimitConfig::new(limits.calls_per_window, limits.window())
            .max_in_flight(limits.max_in_flight);
        if let Some(daily) = limits.daily_quota {
            rate = rate.daily_quota(daily);
        }
        let retry = RetryPolicy::default()
            .max_attempts(config.max_attempts)
            .max_elapsed(Duration::from_secs(600));
        let mut b = HttpClient::builder("marketo")
            .base_url(config.base_url().as_str())
            .auth(http_auth(config))
            .rate_limit(rate)
            .classifier(MarketoClassifier::new(config.rate_limit_wait))
            .retry(retry)
            .timeout(config.timeout)
            .metrics(Arc::new(Metrics::new()));
        if let Some(pem) = &config.root_certificate_pem {
            b = b.root_certificate_pem(pem);
        }
        Ok(MarketoClient { http: b.build()? })
    }

    /// The HTTP transport (metrics, limiter, token).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.http.metrics()
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.http.url(path)
    }

    async fn get<T: DeserializeOwned>(&self, url: Url, endpoint: &'static str) -> Result<T> {
        self.http
            .send(
                self.http.request(Method::GET, url),
                RequestOptions::new(endpoint),
            )
            .await?
            .json()
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        opts: RequestOptions,
    ) -> Result<T> {
        self.http.send_json(Method::POST, path, body, opts).await
    }

    /// Lead fields (`GET /rest/v1/leads/describe.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn describe_leads(&self) -> Result<Vec<LeadAttribute>> {
        let env: Envelope<LeadAttribute> = self
            .get(self.url("/rest/v1/leads/describe.json")?, "leads.describe")
            .await?;
        Ok(env.result)
    }

    /// A company or opportunity description (`GET /rest/v1/{object}/describe.json`).
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::SchemaMismatch`] for an empty answer.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn describe_object(&self, object: ObjectKind) -> Result<ObjectDescription> {
        let (path, endpoint) = match object {
            ObjectKind::Companies => ("/rest/v1/companies/describe.json", "companies.describe"),
            _ => (
                "/rest/v1/opportunities/describe.json",
                "opportunities.describe",
            ),
        };
        let env: Envelope<ObjectDescription> = self.get(self.url(path)?, endpoint).await?;
        env.result.into_iter().next().ok_or_else(|| {
            Error::new(
                crm_core::ErrorKind::SchemaMismatch,
                "describe answered no object",
            )
            .with_operation(endpoint)
        })
    }

    /// Records whose `filter_type` field is one of `values` (at most 300),
    /// one page (`GET /rest/v1/{object}.json`).
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::InvalidInput`] past 300 values.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn query(
        &self,
        object: ObjectKind,
        filter_type: &str,
        values: &[String],
        fields: &[String],
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<QueryPage> {
        let endpoint = object.endpoint("get");
        if values.len() > MAX_FILTER_VALUES {
            return Err(Error::invalid_input(format!(
                "{} filter values; a query takes at most {MAX_FILTER_VALUES}",
                values.len()
            ))
            .with_operation(endpoint));
        }
        let mut url = self.url(&format!("/rest/v1/{}.json", object.path()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("filterType", filter_type);
            q.append_pair("filterValues", &values.join(","));
            if !fields.is_empty() {
                q.append_pair("fields", &fields.join(","));
            }
            q.append_pair("batchSize", &batch_size.clamp(1, MAX_BATCH).to_string());
            if let Some(t) = next_page_token {
                q.append_pair("nextPageToken", t);
            }
        }
        let env: Envelope<WireRecord> = self.get(url, endpoint).await?;
        Ok(QueryPage {
            records: env.result,
            next_page_token: env.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    /// Creates or updates up to 300 leads (`POST /rest/v1/leads.json`).
    /// Marked safe to re-send: with `createOrUpdate`/`updateOnly` and a
    /// lookup field a repeat writes the same values.
    ///
    /// # Errors
    /// As the HTTP client; per-record problems are `skipped` results.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the leads written.
    pub async fn sync_leads(&self, request: &SyncLeadRequest) -> Result<Vec<SyncResult>> {
        check_batch(request.input.len(), "leads.sync")?;
        let env: Envelope<SyncResult> = self
            .post(
                "/rest/v1/leads.json",
                request,
                RequestOptions::new("leads.sync").idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// Creates or updates up to 300 companies or opportunities, deduplicated
    /// on their dedupe fields (`externalCompanyId`, `externalOpportunityId`).
    ///
    /// # Errors
    /// As the HTTP client; per-record problems are `skipped` results.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the records written; a repeat is an update.
    pub async fn sync(
        &self,
        object: ObjectKind,
        request: &SyncObjectRequest,
    ) -> Result<Vec<SyncResult>> {
        let endpoint = object.endpoint("sync");
        check_batch(request.input.len(), endpoint)?;
        let env: Envelope<SyncResult> = self
            .post(
                &format!("/rest/v1/{}.json", object.path()),
                request,
                RequestOptions::new(endpoint).idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// Deletes up to 300 records (`POST /rest/v1/{object}/delete.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat (a second delete reports the record skipped).
    pub async fn delete(
        &self,
        object: ObjectKind,
        request: &DeleteRequest,
    ) -> Result<Vec<SyncResult>> {
        let endpoint = object.endpoint("delete");
        check_batch(request.input.len(), endpoint)?;
        let env: Envelope<SyncResult> = self
            .post(
                &format!("/rest/v1/{}/delete.json", object.path()),
                request,
                RequestOptions::new(endpoint).idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// A paging token for activities after `since`
    /// (`GET /rest/v1/activities/pagingtoken.json`).
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::SchemaMismatch`] without a token.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn paging_token(&self, since: DateTime<Utc>) -> Result<String> {
        let mut url = self.url("/rest/v1/activities/pagingtoken.json")?;
        url.query_pairs_mut().append_pair(
            "sinceDatetime",
            &since.to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        let env: Envelope<serde_json::Value> = self.get(url, "activities.pagingtoken").await?;
        env.next_page_token.ok_or_else(|| {
            Error::new(
                crm_core::ErrorKind::SchemaMismatch,
                "pagingtoken answered no nextPageToken",
            )
            .with_operation("activities.pagingtoken")
        })
    }

    async fn activities(
        &self,
        path: &str,
        endpoint: &'static str,
        token: &str,
        fields: Option<&[String]>,
        batch_size: usize,
    ) -> Result<ActivityPage> {
        let mut url = self.url(path)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("nextPageToken", token);
            if let Some(fields) = fields {
                q.append_pair("fields", &fields.join(","));
            }
            q.append_pair("batchSize", &batch_size.clamp(1, MAX_BATCH).to_string());
        }
        let env: Envelope<Activity> = self.get(url, endpoint).await?;
        Ok(ActivityPage {
            activities: env.result,
            next_page_token: env.next_page_token.filter(|t| !t.is_empty()),
            more_result: env.more_result.unwrap_or(false),
        })
    }

    /// New Lead and Change Data Value activities after `token`
    /// (`GET /rest/v1/activities/leadchanges.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn lead_changes(
        &self,
        token: &str,
        fields: &[String],
        batch_size: usize,
    ) -> Result<ActivityPage> {
        self.activities(
            "/rest/v1/activities/leadchanges.json",
            "activities.leadchanges",
            token,
            Some(fields),
            batch_size,
        )
        .await
    }

    /// Delete Lead activities after `token`
    /// (`GET /rest/v1/activities/deletedleads.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn deleted_leads(&self, token: &str, batch_size: usize) -> Result<ActivityPage> {
        self.activities(
            "/rest/v1/activities/deletedleads.json",
            "activities.deletedleads",
            token,
            None,
            batch_size,
        )
        .await
    }

    fn export_path(kind: ExportKind, tail: &str) -> String {
        format!("/bulk/v1/{}/export{tail}", kind.path())
    }

    /// Creates an export job (`POST /bulk/v1/{leads,activities}/export/create.json`).
    /// Marked safe to re-send: a duplicate job that is never enqueued costs
    /// nothing.
    ///
    /// # Errors
    /// As the HTTP client (1029 with a full queue is transient).
    ///
    /// # Cancel safety
    /// Dropping the future may leave an unqueued job behind.
    pub async fn export_create(
        &self,
        kind: ExportKind,
        request: &ExportRequest,
    ) -> Result<ExportJob> {
        let endpoint = kind.endpoint("create");
        let env: Envelope<ExportJob> = self
            .post(
                &Self::export_path(kind, "/create.json"),
                request,
                RequestOptions::new(endpoint).idempotent(true),
            )
            .await?;
        first_job(env, endpoint)
    }

    /// Queues a created job (`POST .../export/{id}/enqueue.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn export_enqueue(&self, kind: ExportKind, id: &str) -> Result<ExportJob> {
        let endpoint = kind.endpoint("enqueue");
        let env: Envelope<ExportJob> = self
            .post(
                &Self::export_path(kind, &format!("/{id}/enqueue.json")),
                &serde_json::json!({}),
                RequestOptions::new(endpoint).idempotent(true),
            )
            .await?;
        first_job(env, endpoint)
    }

    /// A job's status (`GET .../export/{id}/status.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn export_status(&self, kind: ExportKind, id: &str) -> Result<ExportJob> {
        let endpoint = kind.endpoint("status");
        let url = self.url(&Self::export_path(kind, &format!("/{id}/status.json")))?;
        let env: Envelope<ExportJob> = self.get(url, endpoint).await?;
        first_job(env, endpoint)
    }

    /// The completed job's file, streamed (`GET .../export/{id}/file.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Dropping the response closes the download.
    pub async fn export_file(&self, kind: ExportKind, id: &str) -> Result<StreamingResponse> {
        let endpoint = kind.endpoint("file");
        let url = self.url(&Self::export_path(kind, &format!("/{id}/file.json")))?;
        self.http
            .send_streaming(
                self.http.request(Method::GET, url),
                RequestOptions::new(endpoint),
            )
            .await
    }
}

fn first_job(env: Envelope<ExportJob>, endpoint: &'static str) -> Result<ExportJob> {
    env.result.into_iter().next().ok_or_else(|| {
        Error::new(
            crm_core::ErrorKind::SchemaMismatch,
            "the export call answered no job",
        )
        .with_operation(endpoint)
    })
}

fn check_batch(n: usize, op: &'static str) -> Result<()> {
    if n > MAX_BATCH {
        return Err(Error::invalid_input(format!(
            "{n} records given; a call takes at most {MAX_BATCH}"
        ))
        .with_operation(op));
    }
    Ok(())
}

/// What a bulk export exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportKind {
    /// Leads (`/bulk/v1/leads/export`).
    Leads,
    /// Activities (`/bulk/v1/activities/export`).
    Activities,
}

impl ExportKind {
    /// The path segment.
    pub fn path(self) -> &'static str {
        match self {
            ExportKind::Leads => "leads",
            ExportKind::Activities => "activities",
        }
    }

    fn endpoint(self, op: &str) -> &'static str {
        match (self, op) {
            (ExportKind::Leads, "create") => "leads.export.create",
            (ExportKind::Leads, "enqueue") => "leads.export.enqueue",
            (ExportKind::Leads, "status") => "leads.export.status",
            (ExportKind::Leads, _) => "leads.export.file",
            (ExportKind::Activities, "create") => "activities.export.create",
            (ExportKind::Activities, "enqueue") => "activities.export.enqueue",
            (ExportKind::Activities, "status") => "activities.export.status",
            (ExportKind::Activities, _) => "activities.export.file",
        }
    }
}
