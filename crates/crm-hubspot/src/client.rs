//! Typed calls to HubSpot's CRM v3 (objects, search, properties) and v4
//! (associations) APIs, on the shared `crm-http` client.
//!
//! API areas are handlers: [`HubSpotClient::objects`] for one object type,
//! [`HubSpotClient::associations`] for one pair of types. Listing and
//! searching go through builders ending in `send()`.
//!
//! Every call keeps to the app's 10-second (and daily) limit and reads the
//! `X-HubSpot-RateLimit-*` headers; searches are also spaced to search's
//! own, lower per-second limit (search answers carry no rate-limit headers,
//! so the spacing cannot adapt and is kept strictly). A `DAILY` 429 is
//! noted in the limiter: later calls on the same client fail with
//! [`crm_core::ErrorKind::QuotaExhausted`] without sending anything.

use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, Result};
use crm_http::reqwest::Method;
use crm_http::{
    HttpClient, HubSpotRateLimitHeaders, LimitScope, Metrics, RateLimitConfig,
    RateLimitObservation, RequestOptions, RetryPolicy,
};
use indexmap::IndexMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::http_auth;
use crate::config::HubSpotConfig;
use crate::error::HubSpotClassifier;
use crate::wire::{
    AssociatedRecordPage, AssociationArchiveInput, AssociationBatchCreateResult,
    AssociationBatchReadResult, AssociationCreateInput, AssociationReadInput, BatchInput,
    BatchReadInput, BatchResponse, CreateInput, DefaultAssociationInput, DefaultAssociationResult,
    HsObject, IdInput, ListPage, Paging, Property, PropertyPage, SearchRequest, SearchResult,
    UpdateInput, UpsertInput,
};

/// Most inputs one batch call takes.
pub const MAX_BATCH_INPUTS: usize = 100;
/// Most records one list page returns.
pub const MAX_LIST_LIMIT: u32 = 100;
/// Most hits one search page returns.
pub const MAX_SEARCH_LIMIT: u32 = 200;
/// Most hits one search query can page through (later pages answer 400).
pub const SEARCH_RESULT_CAP: u64 = 10_000;

/// The HubSpot API client.
#[derive(Clone, Debug)]
pub struct HubSpotClient {
    http: HttpClient,
    search_gap: Duration,
    search_next: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
    max_query_len: usize,
}

impl HubSpotClient {
    /// A client for `config`: its auth, base URL, limits, retries and
    /// root certificate.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be
    /// built (an invalid certificate, limits of zero).
    pub fn new(config: &HubSpotConfig) -> Result<Self> {
        let auth = http_auth(config)?;
        let limits = config.rate_limits();
        let metrics = Arc::new(Metrics::new());
        let retry = RetryPolicy::default()
            .max_attempts(config.max_attempts())
            .max_elapsed(Duration::from_secs(300));
        let mut general =
            RateLimitConfig::new(limits.per_ten_seconds, limits.window).max_in_flight(10);
        if let Some(daily) = limits.daily {
            general = general.daily_quota(daily);
        }
        let mut b = HttpClient::builder("hubspot")
            .base_url(config.base_url().as_str())
            .auth(auth)
            .rate_limit(general)
            .rate_limit_headers(HubSpotRateLimitHeaders)
            .classifier(HubSpotClassifier)
            .retry(retry)
            .timeout(config.timeout())
            .metrics(metrics);
        if let Some(pem) = config.root_certificate_pem() {
            b = b.root_certificate_pem(pem);
        }
        Ok(HubSpotClient {
            http: b.build()?,
            // Like the general limit: 5 % extra absorbs network jitter, so
            // HubSpot never counts one search too many in a second.
            search_gap: Duration::from_millis(1_050) / limits.search_per_second.max(1),
            search_next: Arc::new(tokio::sync::Mutex::new(None)),
            max_query_len: config.max_query_properties_len(),
        })
    }

    /// Waits for the next search slot (search's per-second limit): at
    /// least `1.05 s / search_per_second` after the previous search left, as
    /// measured when it left (a late wake-up delays the next slot instead
    /// of bunching two searches), callers served in arrival order.
    ///
    /// # Cancel safety
    /// Cancelling while waiting takes no slot.
    async fn search_slot(&self) {
        let mut next = self.search_next.lock().await;
        if let Some(at) = *next {
            tokio::time::sleep_until(at).await;
        }
        *next = Some(tokio::time::Instant::now() + self.search_gap);
    }

    /// Notes a `DAILY` 429 in the limiter, so later calls on this client
    /// fail at once with [`crm_core::ErrorKind::QuotaExhausted`] instead
    /// of sending requests HubSpot refuses (for an hour, as the reset time
    /// is not sent).
    fn note_daily<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && e.kind() == &crm_core::ErrorKind::QuotaExhausted
            && e.context_value(crate::error::CTX_POLICY) == Some("DAILY")
        {
            self.http
                .rate_limiter()
                .observe(&[RateLimitObservation::new(LimitScope::Daily, 0)]);
        }
        r
    }

    /// The HTTP transport (metrics, limiter, token).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.http.metrics()
    }

    /// Whether a property list fits in a query string.
    pub fn fits_in_query(&self, properties: &[String]) -> bool {
        properties.iter().map(|p| p.len() + 1).sum::<usize>() <= self.max_query_len
    }

    /// Calls on the records of `object` (`contacts`, `deals`, ...).
    pub fn objects(&self, object: &str) -> Objects<'_> {
        Objects {
            client: self,
            object: object.to_owned(),
        }
    }

    /// Calls on associations from `from` records to `to` records.
    pub fn associations(&self, from: &str, to: &str) -> Associations<'_> {
        Associations {
            client: self,
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    /// Every property definition of `object`, custom ones included.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::NotFound`] for an unknown object.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn properties(&self, object: &str) -> Result<Vec<Property>> {
        let url = self.path(&["crm", "v3", "properties", object])?;
        let page: PropertyPage = self
            .get(url, RequestOptions::new("properties.list"))
            .await?;
        Ok(page.results)
    }

    fn path(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.http.url("/")?;
        url.path_segments_mut()
            .map_err(|()| Error::invalid_input("base URL cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn get<T: DeserializeOwned>(&self, url: Url, opts: RequestOptions) -> Result<T> {
        let sent = self
            .http
            .send(self.http.request(Method::GET, url), opts)
            .await;
        self.note_daily(sent)?.json()
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
        opts: RequestOptions,
    ) -> Result<T> {
        let sent = self
            .http
            .send_json(Method::POST, url.as_str(), body, opts)
            .await;
        self.note_daily(sent)
    }

    async fn post_no_content<B: Serialize + ?Sized>(
        &self,
        url: Url,
        body: &B,
        opts: RequestOptions,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::invalid_input(format!("request body: {e}")))?;
        let req = self
            .http
            .request(Method::POST, url)
            .header("content-type", "application/json")
            .body(bytes);
        let sent = self.http.send(req, opts).await;
        self.note_daily(sent).map(|_| ())
    }
}

fn check_batch(n: usize, op: &'static str) -> Result<()> {
    if n > MAX_BATCH_INPUTS {
        return Err(Error::invalid_input(format!(
            "{n} inputs given; a batch call takes at most {MAX_BATCH_INPUTS}"
        ))
        .with_operation(op));
    }
    Ok(())
}

/// Calls on the records of one object type.
#[derive(Clone, Debug)]
pub struct Objects<'a> {
    client: &'a HubSpotClient,
    object: String,
}

impl<'a> Objects<'a> {
    fn url(&self, tail: &[&str]) -> Result<Url> {
        let mut segs = vec!["crm", "v3", "objects", self.object.as_str()];
        segs.extend_from_slice(tail);
        self.client.path(&segs)
    }

    /// A list request (`GET /crm/v3/objects/{object}`).
    pub fn list(&self) -> ListBuilder<'a> {
        ListBuilder {
            objects: self.clone(),
            limit: MAX_LIST_LIMIT,
            after: None,
            properties: Vec::new(),
            archived: false,
            associations: Vec::new(),
        }
    }

    /// A search request (`POST /crm/v3/objects/{object}/search`).
    pub fn search(&self, request: SearchRequest) -> SearchBuilder<'a> {
        SearchBuilder {
            objects: self.clone(),
            request,
        }
    }

    /// One record by id, with `properties` (sent in the query string;
    /// use [`batch_read`](Self::batch_read) for long lists).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn get(&self, id: &str, properties: &[String]) -> Result<HsObject> {
        let mut url = self.url(&[id])?;
        if !properties.is_empty() {
            url.query_pairs_mut()
                .append_pair("properties", &properties.join(","));
        }
        self.client
            .get(url, RequestOptions::new("objects.get"))
            .await
    }

    /// Up to 100 records by id (or by the unique `id_property`), with
    /// `properties` in the request body, so any number of properties fits.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::InvalidInput`] past 100 ids.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn batch_read(
        &self,
        ids: &[String],
        properties: &[String],
        id_property: Option<&str>,
    ) -> Result<BatchResponse> {
        check_batch(ids.len(), "objects.batch_read")?;
        let body = BatchReadInput {
            inputs: ids.iter().map(|id| IdInput { id: id.clone() }).collect(),
            properties: properties.to_vec(),
            properties_with_history: Vec::new(),
            id_property: id_property.map(str::to_owned),
        };
        self.client
            .post(
                self.url(&["batch", "read"])?,
                &body,
                RequestOptions::new("objects.batch_read").idempotent(true),
            )
            .await
    }

    /// Creates up to 100 records. Not idempotent: a failed call is not
    /// re-sent once HubSpot may have processed it.
    ///
    /// # Errors
    /// As the HTTP client; a 207 answer is `Ok` with `errors` filled.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the records created.
    pub async fn batch_create(&self, inputs: Vec<CreateInput>) -> Result<BatchResponse> {
        check_batch(inputs.len(), "objects.batch_create")?;
        self.client
            .post(
                self.url(&["batch", "create"])?,
                &BatchInput { inputs },
                RequestOptions::new("objects.batch_create").idempotent(false),
            )
            .await
    }

    /// Updates up to 100 records by id.
    ///
    /// # Errors
    /// As the HTTP client; a 207 answer is `Ok` with `errors` filled.
    ///
    /// # Cancel safety
    /// Safe to repeat: the same values are written again.
    pub async fn batch_update(&self, inputs: Vec<UpdateInput>) -> Result<BatchResponse> {
        check_batch(inputs.len(), "objects.batch_update")?;
        self.client
            .post(
                self.url(&["batch", "update"])?,
                &BatchInput { inputs },
                RequestOptions::new("objects.batch_update").idempotent(true),
            )
            .await
    }

    /// Creates or updates up to 100 records keyed by a unique property
    /// (`idProperty`, e.g. `email`).
    ///
    /// # Errors
    /// As the HTTP client; a 207 answer is `Ok` with `errors` filled.
    ///
    /// # Cancel safety
    /// Safe to repeat: keyed by the unique property, a repeat never duplicates.
    pub async fn batch_upsert(&self, inputs: Vec<UpsertInput>) -> Result<BatchResponse> {
        check_batch(inputs.len(), "objects.batch_upsert")?;
        self.client
            .post(
                self.url(&["batch", "upsert"])?,
                &BatchInput { inputs },
                RequestOptions::new("objects.batch_upsert").idempotent(true),
            )
            .await
    }

    /// Archives up to 100 records by id (HubSpot answers 204).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn batch_archive(&self, ids: &[String]) -> Result<()> {
        check_batch(ids.len(), "objects.batch_archive")?;
        let body = BatchInput {
            inputs: ids
                .iter()
                .map(|id| IdInput { id: id.clone() })
                .collect::<Vec<_>>(),
        };
        self.client
            .post_no_content(
                self.url(&["batch", "archive"])?,
                &body,
                RequestOptions::new("objects.batch_archive").idempotent(true),
            )
            .await
    }
}

/// `GET /crm/v3/objects/{object}` with its parameters.
#[derive(Clone, Debug)]
pub struct ListBuilder<'a> {
    objects: Objects<'a>,
    limit: u32,
    after: Option<String>,
    properties: Vec<String>,
    archived: bool,
    associations: Vec<String>,
}

impl ListBuilder<'_> {
    /// Records per page (1 to 100).
    #[must_use]
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n.clamp(1, MAX_LIST_LIMIT);
        self
    }

    /// Continue after this token (`paging.next.after`).
    #[must_use]
    pub fn after(mut self, after: Option<String>) -> Self {
        self.after = after;
        self
    }

    /// Properties to return (query string: keep the list short).
    #[must_use]
    pub fn properties(mut self, properties: Vec<String>) -> Self {
        self.properties = properties;
        self
    }

    /// List archived records instead of live ones.
    #[must_use]
    pub fn archived(mut self, archived: bool) -> Self {
        self.archived = archived;
        self
    }

    /// Object types whose associated ids to return.
    #[must_use]
    pub fn associations(mut self, types: Vec<String>) -> Self {
        self.associations = types;
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
        let mut url = self.objects.url(&[])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &self.limit.to_string());
            if let Some(after) = &self.after {
                q.append_pair("after", after);
            }
            if !self.properties.is_empty() {
                q.append_pair("properties", &self.properties.join(","));
            }
            if !self.associations.is_empty() {
                q.append_pair("associations", &self.associations.join(","));
            }
            q.append_pair("archived", if self.archived { "true" } else { "false" });
        }
        let endpoint = if self.archived {
            "objects.list_archived"
        } else {
            "objects.list"
        };
        self.objects
            .client
            .get(url, RequestOptions::new(endpoint))
            .await
    }
}

/// `POST /crm/v3/objects/{object}/search`.
#[derive(Clone, Debug)]
pub struct SearchBuilder<'a> {
    objects: Objects<'a>,
    request: SearchRequest,
}

impl SearchBuilder<'_> {
    /// Sends the search, spaced to the search per-second limit.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::InvalidInput`] (HTTP 400)
    /// for an invalid filter or a page past 10,000 hits.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn send(self) -> Result<SearchResult> {
        let url = self.objects.url(&["search"])?;
        self.objects.client.search_slot().await;
        self.objects
            .client
            .post(
                url,
                &self.request,
                RequestOptions::new("objects.search").idempotent(true),
            )
            .await
    }
}

/// Calls on v4 associations between two object types.
#[derive(Clone, Debug)]
pub struct Associations<'a> {
    client: &'a HubSpotClient,
    from: String,
    to: String,
}

impl Associations<'_> {
    fn batch_url(&self, op: &str) -> Result<Url> {
        self.client.path(&[
            "crm",
            "v4",
            "associations",
            self.from.as_str(),
            self.to.as_str(),
            "batch",
            op,
        ])
    }

    /// The associated records of one record (one page).
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn list(&self, id: &str, after: Option<&str>) -> Result<AssociatedRecordPage> {
        let mut url = self.client.path(&[
            "crm",
            "v4",
            "objects",
            self.from.as_str(),
            id,
            "associations",
            self.to.as_str(),
        ])?;
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        self.client
            .get(url, RequestOptions::new("associations.list"))
            .await
    }

    /// The associated records of up to 100 records.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn batch_read(&self, ids: &[String]) -> Result<AssociationBatchReadResult> {
        check_batch(ids.len(), "associations.batch_read")?;
        let body = BatchInput {
            inputs: ids
                .iter()
                .map(|id| AssociationReadInput {
                    id: id.clone(),
                    after: None,
                })
                .collect::<Vec<_>>(),
        };
        self.client
            .post(
                self.batch_url("read")?,
                &body,
                RequestOptions::new("associations.batch_read").idempotent(true),
            )
            .await
    }

    /// Every record associated with each of up to 100 from-records, in as
    /// few batch reads as the answers allow: a from-record whose list does
    /// not fit in one answer (`paging.next.after` on its result) is read
    /// on with its `after` in the next call, together with the others
    /// that have more. From-records HubSpot returns nothing for (no
    /// associations, or an error such as an unknown id) map to an empty list.
    ///
    /// # Errors
    /// As the HTTP client; [`crm_core::ErrorKind::InvalidInput`] past 100 ids.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn read_all(&self, ids: &[String]) -> Result<IndexMap<String, Vec<String>>> {
        check_batch(ids.len(), "associations.batch_read")?;
        let mut out: IndexMap<String, Vec<String>> =
            ids.iter().map(|id| (id.clone(), Vec::new())).collect();
        let mut pending: Vec<AssociationReadInput> = ids
            .iter()
            .map(|id| AssociationReadInput {
                id: id.clone(),
                after: None,
            })
            .collect();
        while !pending.is_empty() {
            let body = BatchInput {
                inputs: std::mem::take(&mut pending),
            };
            let sent: Vec<(String, Option<String>)> = body
                .inputs
                .iter()
                .map(|i| (i.id.clone(), i.after.clone()))
                .collect();
            let res: AssociationBatchReadResult = self
                .client
                .post(
                    self.batch_url("read")?,
                    &body,
                    RequestOptions::new("associations.batch_read").idempotent(true),
                )
                .await?;
            for r in res.results {
                let Some(list) = out.get_mut(&r.from.id) else {
                    continue;
                };
                for to in r.to {
                    let id = to.to_object_id.to_string();
                    if !list.contains(&id) {
                        list.push(id);
                    }
                }
                if let Some(after) = Paging::next_after(&r.paging) {
                    // Stop paging a record whose cursor does not move.
                    let repeat = sent
                        .iter()
                        .any(|(id, a)| *id == r.from.id && a.as_deref() == Some(after));
                    if !repeat {
                        pending.push(AssociationReadInput {
                            id: r.from.id.clone(),
                            after: Some(after.to_owned()),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Links record pairs with the default (most generic, unlabelled)
    /// association type of the two object types
    /// (`batch/associate/default`), so no type id has to be known.
    ///
    /// # Errors
    /// As the HTTP client; a 207 answer is `Ok` with `errors` filled.
    ///
    /// # Cancel safety
    /// Safe to repeat: associating twice leaves one association.
    pub async fn batch_associate_default(
        &self,
        inputs: Vec<DefaultAssociationInput>,
    ) -> Result<DefaultAssociationResult> {
        check_batch(inputs.len(), "associations.batch_associate_default")?;
        let url = self.client.path(&[
            "crm",
            "v4",
            "associations",
            self.from.as_str(),
            self.to.as_str(),
            "batch",
            "associate",
            "default",
        ])?;
        self.client
            .post(
                url,
                &BatchInput { inputs },
                RequestOptions::new("associations.batch_associate_default").idempotent(true),
            )
            .await
    }

    /// Associates record pairs with the given types.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat: associating twice leaves one association.
    pub async fn batch_create(
        &self,
        inputs: Vec<AssociationCreateInput>,
    ) -> Result<AssociationBatchCreateResult> {
        check_batch(inputs.len(), "associations.batch_create")?;
        self.client
            .post(
                self.batch_url("create")?,
                &BatchInput { inputs },
                RequestOptions::new("associations.batch_create").idempotent(true),
            )
            .await
    }

    /// Removes the associations between each from-record and its to-records.
    ///
    /// # Errors
    /// As the HTTP client.
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn batch_archive(&self, inputs: Vec<AssociationArchiveInput>) -> Result<()> {
        check_batch(inputs.len(), "associations.batch_archive")?;
        self.client
            .post_no_content(
                self.batch_url("archive")?,
                &BatchInput { inputs },
                RequestOptions::new("associations.batch_archive").idempotent(true),
            )
            .await
    }
}
