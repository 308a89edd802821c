//! Typed calls to Marketo's REST (`/rest/v1`) and Bulk (`/bulk/v1`) APIs on
//! the shared `crm-http` client.
//!
//! Every call goes through the client-side limits (calls per window, calls
//! in flight, daily quota), the [`MarketoClassifier`] (errors inside 200
//! bodies) and the retry policy. Lead-database objects share one shape:
//! [`MarketoClient::query`] (filter), [`MarketoClient::sync`] (create or
//! update, ≤ 300 records), [`MarketoClient::delete`]; leads have their own
//! describe and the activity feeds; bulk exports go through
//! [`MarketoClient::export_create`] and its siblings. Program, static list
//! and smart campaign membership have their own calls
//! ([`MarketoClient::program_members`], [`MarketoClient::leads_by_program`],
//! [`MarketoClient::change_lead_program_status`],
//! [`MarketoClient::sync_program_member_status`],
//! [`MarketoClient::add_to_list`], [`MarketoClient::remove_from_list`],
//! [`MarketoClient::campaigns`], [`MarketoClient::request_campaign`], ...).
//!
//! A 606 (rate limit) or 615 (concurrency) answer pauses the client's
//! limiter for [`MarketoConfig::rate_limit_wait`] (by default the rate-limit
//! window, 20 s) for every caller, and the refused call is retried after it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::{Error, Result};
use crm_http::reqwest::Method;
use crm_http::{
    HttpClient, Metrics, RateLimitConfig, RateLimiter, RequestOptions, RetryPolicy,
    StreamingResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::ObjectKind;
use crate::auth::http_auth;
use crate::config::MarketoConfig;
use crate::error::MarketoClassifier;
use crate::wire::{
    Activity, Campaign, ChangeLeadProgramStatusRequest, DeleteRequest, Envelope, ExportJob,
    ExportRequest, LeadAttribute, LeadIdInput, ListOperationRequest, MembershipResult,
    ObjectDescription, ProgramLead, ProgramMember, ProgramMemberLead, StaticList, SyncLeadRequest,
    SyncObjectRequest, SyncProgramMemberStatusRequest, SyncResult, TriggerCampaignData,
    TriggerCampaignRequest, WireRecord,
};

/// Most records one sync call takes and one query page returns.
pub const MAX_BATCH: usize = 300;
/// Most leads one Request Campaign call takes.
pub const MAX_CAMPAIGN_LEADS: usize = 100;
/// The longest `updatedAt` range of one program member query (7 days).
pub const MAX_MEMBER_RANGE_DAYS: i64 = 7;
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
        // One limiter, shared with the classifier: a 606/615 pauses it for
        // every caller until the window has passed.
        let limiter = Arc::new(RateLimiter::new(rate)?);
        let classifier =
            MarketoClassifier::new(config.rate_limit_wait).pausing(Arc::clone(&limiter));
        let mut b = HttpClient::builder("marketo")
            .base_url(config.base_url().as_str())
            .auth(http_auth(config))
            .rate_limiter(limiter)
            .classifier(classifier)
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

/// A page of a membership or asset read.
#[derive(Clone, Debug)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// The next page's token, when there is one.
    pub next_page_token: Option<String>,
}

impl<T> Paged<T> {
    fn from_envelope(env: Envelope<T>) -> Self {
        let more = env.more_result != Some(false);
        Paged {
            items: env.result,
            next_page_token: env.next_page_token.filter(|t| more && !t.is_empty()),
        }
    }
}

/// Which members a [`MarketoClient::program_members`] call selects
/// (`filterType` and `filterValues`, or `startAt`/`endAt`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberFilter {
    /// `filterType=leadId`: these leads (at most 300).
    LeadIds(Vec<i64>),
    /// `filterType=updatedAt` with `startAt` and `endAt` (at most 7 days apart).
    UpdatedBetween {
        /// Start of the range.
        start: DateTime<Utc>,
        /// End of the range.
        end: DateTime<Utc>,
    },
    /// Any other searchable member field (`statusName`, `reachedSuccess`,
    /// custom member fields) equal to one of `values` (at most 300).
    Field {
        /// The field.
        name: String,
        /// The values.
        values: Vec<String>,
    },
}

/// Selection of static lists or smart campaigns (`id`, `name`,
/// `programName`, `workspaceName`, and for campaigns `isTriggerable`); an
/// empty filter selects all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssetFilter {
    /// These ids.
    pub ids: Vec<i64>,
    /// These names.
    pub names: Vec<String>,
    /// Children of these programs.
    pub program_names: Vec<String>,
    /// In these workspaces.
    pub workspace_names: Vec<String>,
    /// Campaigns only: active trigger campaigns requestable through the API.
    pub triggerable: Option<bool>,
}

impl AssetFilter {
    /// Everything.
    pub fn all() -> Self {
        AssetFilter::default()
    }
    /// By ids.
    #[must_use]
    pub fn ids(mut self, ids: impl IntoIterator<Item = i64>) -> Self {
        self.ids = ids.into_iter().collect();
        self
    }
    /// By names.
    #[must_use]
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }
    /// Children of the programs named.
    #[must_use]
    pub fn program_names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.program_names = names.into_iter().map(Into::into).collect();
        self
    }
    /// In the workspaces named.
    #[must_use]
    pub fn workspace_names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.workspace_names = names.into_iter().map(Into::into).collect();
        self
    }
    /// Campaigns: only those requestable through the API (or only those not).
    #[must_use]
    pub fn triggerable(mut self, on: bool) -> Self {
        self.triggerable = Some(on);
        self
    }

    fn apply(&self, url: &mut Url, campaigns: bool) {
        let mut q = url.query_pairs_mut();
        let join = |v: &[String]| v.join(",");
        if !self.ids.is_empty() {
            let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
            q.append_pair("id", &join(&ids));
        }
        if !self.names.is_empty() {
            q.append_pair("name", &join(&self.names));
        }
        if !self.program_names.is_empty() {
            q.append_pair("programName", &join(&self.program_names));
        }
        if !self.workspace_names.is_empty() {
            q.append_pair("workspaceName", &join(&self.workspace_names));
        }
        if campaigns && let Some(t) = self.triggerable {
            q.append_pair("isTriggerable", if t { "true" } else { "false" });
        }
    }
}

fn paging(url: &mut Url, batch_size: usize, next_page_token: Option<&str>) {
    let mut q = url.query_pairs_mut();
    q.append_pair("batchSize", &batch_size.clamp(1, MAX_BATCH).to_string());
    if let Some(t) = next_page_token {
        q.append_pair("nextPageToken", t);
    }
}

fn lead_inputs(lead_ids: &[i64]) -> Vec<LeadIdInput> {
    lead_ids.iter().map(|&id| LeadIdInput { id }).collect()
}

/// Program, static list and smart campaign membership.
impl MarketoClient {
    /// Members of a program matching `filter`, one page
    /// (`GET /rest/v1/programs/{programId}/members.json`). Without `fields`
    /// Marketo returns `leadId`, `programId`, `acquiredBy`, `reachedSuccess`
    /// and `membershipDate`; ask for `statusName` and `updatedAt` to get the
    /// status.
    ///
    /// # Errors
    /// As the HTTP client ([`crm_core::ErrorKind::NotFound`] for an unknown
    /// program, code 1013); [`crm_core::ErrorKind::InvalidInput`] past 300
    /// values or for a range longer than 7 days.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn program_members(
        &self,
        program_id: i64,
        filter: &MemberFilter,
        fields: &[String],
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<Paged<ProgramMember>> {
        const ENDPOINT: &str = "programs.members.get";
        let mut url = self.url(&format!("/rest/v1/programs/{program_id}/members.json"))?;
        {
            let mut q = url.query_pairs_mut();
            match filter {
                MemberFilter::LeadIds(ids) => {
                    check_values(ids.len(), ENDPOINT)?;
                    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    q.append_pair("filterType", "leadId");
                    q.append_pair("filterValues", &ids.join(","));
                }
                MemberFilter::Field { name, values } => {
                    check_values(values.len(), ENDPOINT)?;
                    q.append_pair("filterType", name);
                    q.append_pair("filterValues", &values.join(","));
                }
                MemberFilter::UpdatedBetween { start, end } => {
                    if end < start || *end - *start > chrono::TimeDelta::days(MAX_MEMBER_RANGE_DAYS)
                    {
                        return Err(Error::invalid_input(format!(
                            "an updatedAt range must run forward and span at most \
                             {MAX_MEMBER_RANGE_DAYS} days"
                        ))
                        .with_operation(ENDPOINT));
                    }
                    q.append_pair("filterType", "updatedAt");
                    q.append_pair("startAt", &start.to_rfc3339_opts(SecondsFormat::Secs, true));
                    q.append_pair("endAt", &end.to_rfc3339_opts(SecondsFormat::Secs, true));
                }
            }
            if !fields.is_empty() {
                q.append_pair("fields", &fields.join(","));
            }
        }
        paging(&mut url, batch_size, next_page_token);
        let env: Envelope<ProgramMember> = self.get(url, ENDPOINT).await?;
        Ok(Paged::from_envelope(env))
    }

    /// Every member of a program with its `membership` (progression status,
    /// success, membership date), one page
    /// (`GET /rest/v1/leads/programs/{programId}.json`).
    ///
    /// # Errors
    /// As the HTTP client ([`crm_core::ErrorKind::NotFound`] for an unknown program).
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn leads_by_program(
        &self,
        program_id: i64,
        fields: &[String],
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<Paged<ProgramLead>> {
        let mut url = self.url(&format!("/rest/v1/leads/programs/{program_id}.json"))?;
        if !fields.is_empty() {
            url.query_pairs_mut()
                .append_pair("fields", &fields.join(","));
        }
        paging(&mut url, batch_size, next_page_token);
        let env: Envelope<ProgramLead> = self.get(url, "leads.programs.get").await?;
        Ok(Paged::from_envelope(env))
    }

    /// Sets the program status of up to 300 leads that are members of the
    /// program (`POST /rest/v1/leads/programs/{programId}/status.json`,
    /// `{"status": ..., "input": [{"id": ...}]}`); results in input order.
    /// Safe to re-send: a lead already in the status is skipped (1037).
    ///
    /// # Errors
    /// As the HTTP client: [`crm_core::ErrorKind::NotFound`] for an unknown
    /// program (1013), [`crm_core::ErrorKind::InvalidInput`] for a status the
    /// program's channel lacks (1025) or past 300 leads; per-lead problems
    /// are `skipped` results.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the statuses changed.
    pub async fn change_lead_program_status(
        &self,
        program_id: i64,
        status: &str,
        lead_ids: &[i64],
    ) -> Result<Vec<MembershipResult>> {
        const ENDPOINT: &str = "leads.programs.status";
        check_batch(lead_ids.len(), ENDPOINT)?;
        let body = ChangeLeadProgramStatusRequest {
            status: status.to_owned(),
            input: lead_inputs(lead_ids),
        };
        let env: Envelope<MembershipResult> = self
            .post(
                &format!("/rest/v1/leads/programs/{program_id}/status.json"),
                &body,
                RequestOptions::new(ENDPOINT).idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// Sets the program status of up to 300 leads, adding those that are not
    /// members yet (`POST /rest/v1/programs/{programId}/members/status.json`,
    /// `{"statusName": ..., "input": [{"leadId": ...}]}`); results carry `seq`.
    ///
    /// # Errors
    /// As [`MarketoClient::change_lead_program_status`].
    ///
    /// # Cancel safety
    /// Dropping the future may leave the statuses changed; a repeat skips them (1037).
    pub async fn sync_program_member_status(
        &self,
        program_id: i64,
        status: &str,
        lead_ids: &[i64],
    ) -> Result<Vec<MembershipResult>> {
        const ENDPOINT: &str = "programs.members.status";
        check_batch(lead_ids.len(), ENDPOINT)?;
        let body = SyncProgramMemberStatusRequest {
            status_name: status.to_owned(),
            input: lead_ids
                .iter()
                .map(|&lead_id| ProgramMemberLead { lead_id })
                .collect(),
        };
        let env: Envelope<MembershipResult> = self
            .post(
                &format!("/rest/v1/programs/{program_id}/members/status.json"),
                &body,
                RequestOptions::new(ENDPOINT).idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// Static lists, one page (`GET /rest/v1/lists.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn lists(
        &self,
        filter: &AssetFilter,
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<Paged<StaticList>> {
        let mut url = self.url("/rest/v1/lists.json")?;
        filter.apply(&mut url, false);
        paging(&mut url, batch_size, next_page_token);
        let env: Envelope<StaticList> = self.get(url, "lists.get").await?;
        Ok(Paged::from_envelope(env))
    }

    /// Members of a static list, one page
    /// (`GET /rest/v1/lists/{listId}/leads.json`).
    ///
    /// # Errors
    /// As the HTTP client ([`crm_core::ErrorKind::NotFound`] for an unknown list).
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn list_leads(
        &self,
        list_id: i64,
        fields: &[String],
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<Paged<WireRecord>> {
        let mut url = self.url(&format!("/rest/v1/lists/{list_id}/leads.json"))?;
        if !fields.is_empty() {
            url.query_pairs_mut()
                .append_pair("fields", &fields.join(","));
        }
        paging(&mut url, batch_size, next_page_token);
        let env: Envelope<WireRecord> = self.get(url, "lists.leads.get").await?;
        Ok(Paged::from_envelope(env))
    }

    /// Adds up to 300 leads to a static list
    /// (`POST /rest/v1/lists/{listId}/leads.json`, ids in the body);
    /// results `added` or `skipped` in input order. Safe to repeat.
    ///
    /// # Errors
    /// As the HTTP client ([`crm_core::ErrorKind::NotFound`] for an unknown list).
    ///
    /// # Cancel safety
    /// Dropping the future may leave the leads added.
    pub async fn add_to_list(
        &self,
        list_id: i64,
        lead_ids: &[i64],
    ) -> Result<Vec<MembershipResult>> {
        self.list_operation(Method::POST, list_id, lead_ids, "lists.leads.add")
            .await
    }

    /// Removes up to 300 leads from a static list
    /// (`DELETE /rest/v1/lists/{listId}/leads.json`, ids in the body);
    /// results `removed` or `skipped` (1004 no such lead, 1015 not in the
    /// list). Safe to repeat.
    ///
    /// # Errors
    /// As the HTTP client ([`crm_core::ErrorKind::NotFound`] for an unknown list).
    ///
    /// # Cancel safety
    /// Dropping the future may leave the leads removed.
    pub async fn remove_from_list(
        &self,
        list_id: i64,
        lead_ids: &[i64],
    ) -> Result<Vec<MembershipResult>> {
        self.list_operation(Method::DELETE, list_id, lead_ids, "lists.leads.remove")
            .await
    }

    async fn list_operation(
        &self,
        method: Method,
        list_id: i64,
        lead_ids: &[i64],
        endpoint: &'static str,
    ) -> Result<Vec<MembershipResult>> {
        check_batch(lead_ids.len(), endpoint)?;
        let body = ListOperationRequest {
            input: lead_inputs(lead_ids),
        };
        let env: Envelope<MembershipResult> = self
            .http
            .send_json(
                method,
                &format!("/rest/v1/lists/{list_id}/leads.json"),
                &body,
                RequestOptions::new(endpoint).idempotent(true),
            )
            .await?;
        Ok(env.result)
    }

    /// Whether up to 300 leads are members of a static list
    /// (`GET /rest/v1/lists/{listId}/leads/ismember.json?id=...`); results
    /// `memberof`, `notmemberof` or `skipped` (1004) in input order.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn list_membership(
        &self,
        list_id: i64,
        lead_ids: &[i64],
    ) -> Result<Vec<MembershipResult>> {
        const ENDPOINT: &str = "lists.leads.ismember";
        check_batch(lead_ids.len(), ENDPOINT)?;
        let mut url = self.url(&format!("/rest/v1/lists/{list_id}/leads/ismember.json"))?;
        let ids: Vec<String> = lead_ids.iter().map(ToString::to_string).collect();
        url.query_pairs_mut().append_pair("id", &ids.join(","));
        let env: Envelope<MembershipResult> = self.get(url, ENDPOINT).await?;
        Ok(env.result)
    }

    /// Smart campaigns, one page (`GET /rest/v1/campaigns.json`).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn campaigns(
        &self,
        filter: &AssetFilter,
        batch_size: usize,
        next_page_token: Option<&str>,
    ) -> Result<Paged<Campaign>> {
        let mut url = self.url("/rest/v1/campaigns.json")?;
        filter.apply(&mut url, true);
        paging(&mut url, batch_size, next_page_token);
        let env: Envelope<Campaign> = self.get(url, "campaigns.get").await?;
        Ok(Paged::from_envelope(env))
    }

    /// Runs up to 100 leads through an active trigger campaign with a
    /// "Campaign is Requested: Web Service API" trigger
    /// (`POST /rest/v1/campaigns/{campaignId}/trigger.json`), with My Token
    /// overrides. Not marked safe to re-send: a repeat runs the flow again.
    ///
    /// # Errors
    /// As the HTTP client: [`crm_core::ErrorKind::NotFound`] for an unknown
    /// campaign (1013), [`crm_core::ErrorKind::InvalidInput`] for a batch or
    /// inactive campaign (1003) or past 100 leads.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the campaign requested.
    pub async fn request_campaign(
        &self,
        campaign_id: i64,
        lead_ids: &[i64],
        tokens: &[crate::wire::CampaignToken],
    ) -> Result<()> {
        const ENDPOINT: &str = "campaigns.trigger";
        if lead_ids.len() > MAX_CAMPAIGN_LEADS {
            return Err(Error::invalid_input(format!(
                "{} leads given; Request Campaign takes at most {MAX_CAMPAIGN_LEADS}",
                lead_ids.len()
            ))
            .with_operation(ENDPOINT));
        }
        let body = TriggerCampaignRequest {
            input: TriggerCampaignData {
                leads: lead_inputs(lead_ids),
                tokens: tokens.to_vec(),
            },
        };
        let _: Envelope<serde_json::Value> = self
            .post(
                &format!("/rest/v1/campaigns/{campaign_id}/trigger.json"),
                &body,
                RequestOptions::new(ENDPOINT).idempotent(false),
            )
            .await?;
        Ok(())
    }
}

fn check_values(n: usize, op: &'static str) -> Result<()> {
    if n > MAX_FILTER_VALUES {
        return Err(Error::invalid_input(format!(
            "{n} filter values; a query takes at most {MAX_FILTER_VALUES}"
        ))
        .with_operation(op));
    }
    Ok(())
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
