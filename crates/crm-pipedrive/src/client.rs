//! Typed calls to Pipedrive's API v2 (persons, organizations, deals,
//! activities, search, pipelines, stages) and v1 (notes, leads, field
//! definitions, recents), on the shared `crm-http` client.
//!
//! Every call keeps to the configured per-window and daily limits and reads
//! Pipedrive's `x-ratelimit-limit` / `-remaining` / `-reset` and
//! `x-daily-requests-left` headers ([`StandardRateLimitHeaders`]): a window
//! running low spaces requests out, a daily budget at zero fails fast with
//! [`crm_core::ErrorKind::QuotaExhausted`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::{Error, Result};
use crm_http::reqwest::Method;
use crm_http::{
    HttpClient, Metrics, RateLimitConfig, RequestOptions, RetryPolicy, StandardRateLimitHeaders,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::ObjectKind;
use crate::auth::http_auth;
use crate::config::PipedriveConfig;
use crate::error::{PipedriveClassifier, PipedriveError};
use crate::wire::{
    AdditionalData, Envelope, Field, PdRecord, Pipeline, RecentItem, SearchData, SearchItem, Stage,
};

/// Most records one list page returns.
pub const MAX_LIMIT: u32 = 500;

/// The Pipedrive API client.
#[derive(Clone, Debug)]
pub struct PipedriveClient {
    http: HttpClient,
}

/// Where the next page starts: a v2 cursor or a v1 offset.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageToken {
    /// v2 `cursor`.
    Cursor(String),
    /// v1 `start`.
    Start(u64),
}

/// One page of records and where the next one starts.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// The records.
    pub records: Vec<PdRecord>,
    /// The next page, when Pipedrive says more follow.
    pub next: Option<PageToken>,
}

/// Formats a time as Pipedrive's RFC 3339 `updated_since` (whole seconds, UTC).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl PipedriveClient {
    /// A client for `config`: its auth, origin, limits, retries and root certificate.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be
    /// built (an invalid certificate, limits of zero).
    pub fn new(config: &PipedriveConfig) -> Result<Self> {
        let limits = config.rate_limits();
        let mut rl = RateLimitConfig::new(limits.per_interval, limits.interval()).max_in_flight(8);
        if let Some(daily) = limits.daily {
            rl = rl.daily_quota(daily);
        }
        let retry = RetryPolicy::default()
            .max_attempts(config.max_attempts())
            .max_elapsed(Duration::from_secs(300));
        let mut b = HttpClient::builder("pipedrive")
            .base_url(config.base_url().as_str())
            .auth(http_auth(config)?)
            .rate_limit(rl)
            .rate_limit_headers(StandardRateLimitHeaders)
            .classifier(PipedriveClassifier)
            .retry(retry)
            .timeout(config.timeout())
            .metrics(Arc::new(Metrics::new()));
        if let Some(pem) = config.root_certificate_pem() {
            b = b.root_certificate_pem(pem);
        }
        Ok(PipedriveClient { http: b.build()? })
    }

    /// The HTTP transport (metrics, limiter, token).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.http.metrics()
    }

    fn path(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.http.url("/")?;
        url.path_segments_mut()
            .map_err(|()| Error::invalid_input("base URL cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn object_url(&self, kind: ObjectKind, tail: &[&str]) -> Result<Url> {
        let version = if kind.is_v2() { "v2" } else { "v1" };
        let mut segs = vec!["api", version, kind.as_str()];
        segs.extend_from_slice(tail);
        self.path(&segs)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        opts: RequestOptions,
    ) -> Result<Envelope<T>> {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b)
                .map_err(|e| Error::invalid_input(format!("request body: {e}")))?;
            req = req.header("content-type", "application/json").body(bytes);
        }
        let resp = self.http.send(req, opts).await?;
        resp.json()
    }

    fn data<T>(env: Envelope<T>, what: &str) -> Result<T> {
        env.data
            .ok_or_else(|| PipedriveError::UnexpectedAnswer(format!("{what}: no data")).into())
    }

    /// A list request for `kind`.
    pub fn list(&self, kind: ObjectKind) -> ListBuilder<'_> {
        ListBuilder {
            client: self,
            kind,
            limit: MAX_LIMIT,
            page: None,
            updated_since: None,
            by_update_time: false,
            status: None,
            ids: Vec::new(),
            filters: Vec::new(),
        }
    }

    /// Every field definition of `kind` (`/api/v1/personFields`, ...), all pages.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn fields(&self, kind: ObjectKind) -> Result<Vec<Field>> {
        let Some(endpoint) = kind.fields_endpoint() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let mut url = self.path(&["api", "v1", endpoint])?;
            url.query_pairs_mut()
                .append_pair("start", &start.to_string())
                .append_pair("limit", &MAX_LIMIT.to_string());
            let env: Envelope<Vec<Field>> = self
                .call(Method::GET, url, None, RequestOptions::new("fields.list"))
                .await?;
            let next = AdditionalData::next_start(env.additional_data.as_ref());
            out.extend(env.data.unwrap_or_default());
            match next {
                Some(n) if n > start => start = n,
                _ => return Ok(out),
            }
        }
    }

    /// One record by id, or `None` when it does not exist (or was deleted).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn get(&self, kind: ObjectKind, id: &str) -> Result<Option<PdRecord>> {
        let url = self.object_url(kind, &[id])?;
        match self
            .call::<PdRecord>(Method::GET, url, None, RequestOptions::new("records.get"))
            .await
        {
            Ok(env) => Ok(env.data),
            Err(e) if e.kind() == &crm_core::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a record. Not idempotent: not re-sent once Pipedrive may
    /// have processed it.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::InvalidInput`] for a 400.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the record created.
    pub async fn create(&self, kind: ObjectKind, body: &Value) -> Result<PdRecord> {
        let url = self.object_url(kind, &[])?;
        let env = self
            .call(
                Method::POST,
                url,
                Some(body),
                RequestOptions::new("records.create").idempotent(false),
            )
            .await?;
        Self::data(env, "create")
    }

    /// Updates a record (`PATCH`; `PUT` for v1 notes).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat: the same values are written again.
    pub async fn update(&self, kind: ObjectKind, id: &str, body: &Value) -> Result<PdRecord> {
        let url = self.object_url(kind, &[id])?;
        let method = if kind == ObjectKind::Notes {
            Method::PUT
        } else {
            Method::PATCH
        };
        let env = self
            .call(
                method,
                url,
                Some(body),
                RequestOptions::new("records.update").idempotent(true),
            )
            .await?;
        Self::data(env, "update")
    }

    /// Deletes a record (Pipedrive marks it deleted and purges it after 30
    /// days). The current API has no bulk delete for these objects.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::NotFound`] when already gone.
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn delete(&self, kind: ObjectKind, id: &str) -> Result<()> {
        let url = self.object_url(kind, &[id])?;
        self.call::<Value>(
            Method::DELETE,
            url,
            None,
            RequestOptions::new("records.delete").idempotent(true),
        )
        .await
        .map(|_| ())
    }

    /// Searches `kind` (`/api/v2/{object}/search`) for `term` in `fields`
    /// (`email`, `name`, `title`, `custom_fields`, ...), all pages.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn search(
        &self,
        kind: ObjectKind,
        term: &str,
        fields: &str,
        exact_match: bool,
    ) -> Result<Vec<SearchItem>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.path(&["api", "v2", kind.as_str(), "search"])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("term", term)
                    .append_pair("fields", fields)
                    .append_pair("exact_match", if exact_match { "true" } else { "false" })
                    .append_pair("limit", "100");
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
            }
            let env: Envelope<SearchData> = self
                .call(
                    Method::GET,
                    url,
                    None,
                    RequestOptions::new("records.search"),
                )
                .await?;
            let next = AdditionalData::cursor(env.additional_data.as_ref());
            out.extend(env.data.unwrap_or_default().items);
            match next {
                Some(c) if Some(&c) != cursor.as_ref() && out.len() < 2_000 => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// One page of `/api/v1/recents` for `item` since `since` (inclusive).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn recents(
        &self,
        item: &str,
        since: DateTime<Utc>,
        start: u64,
        limit: u32,
    ) -> Result<(Vec<RecentItem>, Option<u64>)> {
        let mut url = self.path(&["api", "v1", "recents"])?;
        url.query_pairs_mut()
            .append_pair(
                "since_timestamp",
                &since.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
            .append_pair("items", item)
            .append_pair("start", &start.to_string())
            .append_pair("limit", &limit.to_string());
        let env: Envelope<Vec<RecentItem>> = self
            .call(Method::GET, url, None, RequestOptions::new("recents.list"))
            .await?;
        let next = AdditionalData::next_start(env.additional_data.as_ref()).filter(|n| *n > start);
        Ok((env.data.unwrap_or_default(), next))
    }

    /// Every pipeline.
    ///
    /// # Errors
    /// As the HTTP client.
    pub async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        self.all_v2(&["api", "v2", "pipelines"], "pipelines.list")
            .await
    }

    /// Every stage of every pipeline.
    ///
    /// # Errors
    /// As the HTTP client.
    pub async fn stages(&self) -> Result<Vec<Stage>> {
        self.all_v2(&["api", "v2", "stages"], "stages.list").await
    }

    async fn all_v2<T: DeserializeOwned>(
        &self,
        segs: &[&str],
        endpoint: &'static str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.path(segs)?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("limit", &MAX_LIMIT.to_string());
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
            }
            let env: Envelope<Vec<T>> = self
                .call(Method::GET, url, None, RequestOptions::new(endpoint))
                .await?;
            let next = AdditionalData::cursor(env.additional_data.as_ref());
            out.extend(env.data.unwrap_or_default());
            match next {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }
}

/// A list request: `GET /api/v2/{object}` (cursor) or `/api/v1/{object}` (start).
#[derive(Clone, Debug)]
pub struct ListBuilder<'a> {
    client: &'a PipedriveClient,
    kind: ObjectKind,
    limit: u32,
    page: Option<PageToken>,
    updated_since: Option<DateTime<Utc>>,
    by_update_time: bool,
    status: Option<String>,
    ids: Vec<String>,
    filters: Vec<(&'static str, String)>,
}

impl ListBuilder<'_> {
    /// Adds a query filter (`person_id`, `org_id`, `deal_id`, ...).
    #[must_use]
    pub fn filter(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.filters.push((name, value.into()));
        self
    }

    /// Records per page (1 to 500).
    #[must_use]
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n.clamp(1, MAX_LIMIT);
        self
    }

    /// Continue at this page.
    #[must_use]
    pub fn page(mut self, page: Option<PageToken>) -> Self {
        self.page = page;
        self
    }

    /// Only records with `update_time >= t`.
    #[must_use]
    pub fn updated_since(mut self, t: Option<DateTime<Utc>>) -> Self {
        self.updated_since = t;
        self
    }

    /// Sort ascending by `update_time` (else by id).
    #[must_use]
    pub fn by_update_time(mut self, on: bool) -> Self {
        self.by_update_time = on;
        self
    }

    /// Deal `status` filter (`deleted` lists deals deleted in the last 30 days).
    #[must_use]
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Only these ids (v2, up to 100).
    #[must_use]
    pub fn ids(mut self, ids: Vec<String>) -> Self {
        self.ids = ids;
        self
    }

    /// Sends the request.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn send(self) -> Result<ListPage> {
        let mut url = self.client.object_url(self.kind, &[])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &self.limit.to_string());
            match &self.page {
                Some(PageToken::Cursor(c)) => {
                    q.append_pair("cursor", c);
                }
                Some(PageToken::Start(s)) => {
                    q.append_pair("start", &s.to_string());
                }
                None => {}
            }
            if let Some(t) = self.updated_since {
                q.append_pair("updated_since", &rfc3339(t));
            }
            if self.by_update_time {
                if self.kind.is_v2() {
                    q.append_pair("sort_by", "update_time")
                        .append_pair("sort_direction", "asc");
                } else if self.kind == ObjectKind::Notes {
                    q.append_pair("sort", "update_time ASC");
                } else {
                    q.append_pair("sort", "update_time");
                }
            }
            if let Some(s) = &self.status {
                q.append_pair("status", s);
            }
            if !self.ids.is_empty() {
                q.append_pair("ids", &self.ids.join(","));
            }
            for (k, v) in &self.filters {
                q.append_pair(k, v);
            }
        }
        let env: Envelope<Vec<PdRecord>> = self
            .client
            .call(Method::GET, url, None, RequestOptions::new("records.list"))
            .await?;
        let next = if self.kind.is_v2() {
            AdditionalData::cursor(env.additional_data.as_ref()).map(PageToken::Cursor)
        } else {
            AdditionalData::next_start(env.additional_data.as_ref()).map(PageToken::Start)
        };
        Ok(ListPage {
            records: env.data.unwrap_or_default(),
            next,
        })
    }
}
