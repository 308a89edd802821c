//! A stateful Salesforce simulator on [`crm_sim`] (feature `sim`).
//!
//! Wire paths are Salesforce's own, for any API version `vNN.N`:
//!
//! | route | what |
//! |---|---|
//! | `POST /services/oauth2/token` | refresh token, client credentials, authorization code (PKCE), JWT bearer, username-password; answers with `instance_url` |
//! | `GET /services/oauth2/authorize` | auto-consents and redirects with `code` and `state` |
//! | `GET .../query?q=`, `.../queryAll?q=`, `.../query/{locator}` | SOQL subset (see the module docs), pages of `batchSize` (`Sforce-Query-Options`, default and max 2,000) with `nextRecordsUrl` |
//! | `GET .../sobjects/{type}/describe` | describe |
//! | `POST .../sobjects/{type}`, `GET`/`PATCH`/`DELETE .../sobjects/{type}/{id}`, `PATCH .../sobjects/{type}/{field}/{value}` | sObject rows |
//! | `POST`/`PATCH`/`DELETE .../composite/sobjects`, `PATCH .../composite/sobjects/{type}/{field}` | sObject Collections (≤ 200) |
//! | `.../jobs/ingest[...]`, `.../jobs/query[...]` | Bulk API 2.0 ingest and query jobs |
//! | `GET .../limits` | `DailyApiRequests` |
//!
//! Errors come in Salesforce's form `[{"message","errorCode","fields"}]`;
//! every data response carries `Sforce-Limit-Info: api-usage=N/M`, and past
//! the daily allocation calls answer 403 `REQUEST_LIMIT_EXCEEDED`. Writes are
//! validated against the describe (required fields, types, lengths, restricted
//! picklists, unique external ids). Objects: Contact, Lead, Account,
//! Opportunity, Task, Note, Campaign with seed 001 and 002 custom fields.

// Handler helpers return the error response to send as their `Err`; they
// run once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod schema;
mod soql;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::Router;
use axum::extract::{Path, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::RecordId;
use crm_sim::auth::{AuthFailure, AuthGuard, AuthMethod, OAuthClient, TokenRequest};
use crm_sim::store::{Deleted, Fields, IdGenerator, StoredRecord};
use crm_sim::{RateLimited, ResponseForm, SimContext, Simulator};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use crate::csv::{CsvReader, NULL_VALUE, write_row};
use crate::wire::{DescribeSObject, RecordError, SaveResult};

/// A Salesforce date-time as the API writes it: `2024-03-01T12:00:00.000+0000`.
pub fn sf_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
        .replace('Z', "+0000")
}

/// The simulator's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SalesforceSimConfig {
    /// Connected app consumer key.
    pub client_id: String,
    /// Consumer secret.
    pub client_secret: String,
    /// A refresh token valid from the start.
    pub refresh_token: String,
    /// Username of the username-password flow.
    pub username: String,
    /// Password of the username-password flow.
    pub password: String,
    /// Security token appended to the password.
    pub security_token: String,
    /// Daily API request allocation.
    pub daily_limit: u64,
    /// Access-token lifetime.
    pub token_ttl: std::time::Duration,
}

impl Default for SalesforceSimConfig {
    fn default() -> Self {
        SalesforceSimConfig {
            client_id: "sim-consumer-key".into(),
            client_secret: "sim-consumer-secret".into(),
            refresh_token: "sim-refresh-token".into(),
            username: "integration@example.com".into(),
            password: "sim-password".into(),
            security_token: "SIMTOKEN".into(),
            daily_limit: 1_000_000,
            token_ttl: std::time::Duration::from_secs(7200),
        }
    }
}

struct QueryCursor {
    object: String,
    fields: Vec<String>,
    ids: Vec<RecordId>,
    batch: usize,
    opened: DateTime<Utc>,
}

/// How long a query cursor and its results stay available: two days since
/// API 56.0, with no limit on open cursors ("API Query Cursor Limits", Salesforce
/// App Limits Cheatsheet). A `nextRecordsUrl` can be fetched again within that time.
const CURSOR_LIFETIME_HOURS: i64 = 48;

struct Job {
    info: crate::wire::JobInfo,
    data: String,
    polls: u32,
    success: String,
    failed: String,
    query_ids: Vec<RecordId>,
    query_fields: Vec<String>,
}

/// State shared by the simulator's handlers and its [`SimControl`].
struct Shared {
    config: SalesforceSimConfig,
    schemas: RwLock<BTreeMap<String, DescribeSObject>>,
    used: AtomicU64,
    limit: AtomicU64,
    cursors: Mutex<HashMap<String, QueryCursor>>,
    jobs: Mutex<HashMap<String, Job>>,
    write_lock: Mutex<()>,
    seq: AtomicU64,
    /// Live records by (object, unique field) and value; built on first use.
    unique: Mutex<HashMap<(String, String), HashMap<String, RecordId>>>,
}

/// Test and demo control of a running simulator: quota, describes.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimControl").finish_non_exhaustive()
    }
}

impl SimControl {
    /// Sets the daily allocation and the requests used so far.
    pub fn set_api_usage(&self, used: u64, limit: u64) {
        self.shared.used.store(used, AtomicOrdering::SeqCst);
        self.shared.limit.store(limit, AtomicOrdering::SeqCst);
    }

    /// Requests counted against the allocation so far.
    pub fn api_used(&self) -> u64 {
        self.shared.used.load(AtomicOrdering::SeqCst)
    }

    /// Removes a field from an object's describe (a deleted custom field);
    /// stored values stay but are no longer visible.
    pub fn drop_field(&self, object: &str, field: &str) {
        let mut s = self
            .shared
            .schemas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = s.get_mut(object) {
            d.fields.retain(|f| !f.name.eq_ignore_ascii_case(field));
        }
    }

    /// Adds or replaces a field of an object's describe.
    pub fn add_field(&self, object: &str, field: crate::wire::DescribeField) {
        let mut s = self
            .shared
            .schemas
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = s.get_mut(object) {
            d.fields.retain(|f| f.name != field.name);
            d.fields.push(field);
        }
    }

    /// The describe of an object.
    pub fn describe(&self, object: &str) -> Option<DescribeSObject> {
        self.shared.describe(object)
    }
}

impl Shared {
    fn describe(&self, object: &str) -> Option<DescribeSObject> {
        let s = self.schemas.read().unwrap_or_else(PoisonError::into_inner);
        s.get(object)
            .or_else(|| s.values().find(|d| d.name.eq_ignore_ascii_case(object)))
            .cloned()
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.seq.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        format!("{prefix}{n:012}AAA")
    }
}

/// The Salesforce simulator.
#[derive(Clone)]
pub struct SalesforceSimulator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SalesforceSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceSimulator")
            .finish_non_exhaustive()
    }
}

impl Default for SalesforceSimulator {
    fn default() -> Self {
        SalesforceSimulator::new(SalesforceSimConfig::default())
    }
}

impl SalesforceSimulator {
    /// A simulator with `config` and the standard objects.
    pub fn new(config: SalesforceSimConfig) -> Self {
        SalesforceSimulator {
            shared: Arc::new(Shared {
                limit: AtomicU64::new(config.daily_limit),
                config,
                schemas: RwLock::new(schema::standard_objects()),
                used: AtomicU64::new(0),
                cursors: Mutex::new(HashMap::new()),
                jobs: Mutex::new(HashMap::new()),
                write_lock: Mutex::new(()),
                seq: AtomicU64::new(0),
                unique: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A handle to change quota and describes while it runs.
    pub fn control(&self) -> SimControl {
        SimControl {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Salesforce's wording of auth, throttling and server errors.
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesforceForm;

/// A Salesforce error response.
pub fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{ "message": message, "errorCode": code }])),
    )
        .into_response()
}

impl ResponseForm for SalesforceForm {
    fn rate_limited(&self, limited: &RateLimited) -> Response {
        if limited.is_daily() {
            sf_error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )
        } else {
            sf_error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            )
        }
    }

    fn unauthorized(&self, _failure: &AuthFailure) -> Response {
        sf_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    fn server_error(&self, status: StatusCode) -> Response {
        sf_error(
            status,
            "SERVER_UNAVAILABLE",
            "The server is temporarily unavailable.",
        )
    }
}

#[derive(Clone)]
struct St {
    ctx: SimContext,
    shared: Arc<Shared>,
}

impl Simulator for SalesforceSimulator {
    fn provider(&self) -> &'static str {
        "salesforce"
    }

    fn id_generator(&self) -> Arc<dyn IdGenerator> {
        Arc::new(|object: &str, seq: u64| {
            RecordId::new(format!("{}{seq:012}AAA", schema::key_prefix(object)))
        })
    }

    fn form(&self) -> Arc<dyn ResponseForm> {
        Arc::new(SalesforceForm)
    }

    fn setup(&self, ctx: &SimContext) {
        let c = &self.shared.config;
        let auth = ctx.auth();
        auth.set_token_ttl(c.token_ttl);
        auth.register_client(OAuthClient::confidential(
            c.client_id.clone(),
            c.client_secret.clone(),
        ));
        auth.add_refresh_token(&c.client_id, &c.refresh_token);
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let st = St {
            ctx: ctx.clone(),
            shared: Arc::clone(&self.shared),
        };
        let guard = ctx.auth_guard(vec![AuthMethod::Bearer]);
        let data = Router::new()
            .route("/services/data/{v}/query", get(query))
            .route("/services/data/{v}/queryAll", get(query_all))
            .route("/services/data/{v}/query/{locator}", get(query_more))
            .route("/services/data/{v}/limits", get(limits))
            .route(
                "/services/data/{v}/sobjects/{object}/describe",
                get(describe),
            )
            .route("/services/data/{v}/sobjects/{object}", post(row_create))
            .route(
                "/services/data/{v}/sobjects/{object}/{id}",
                get(row_get).patch(row_update).delete(row_delete),
            )
            .route(
                "/services/data/{v}/sobjects/{object}/{field}/{value}",
                patch(row_upsert),
            )
            .route(
                "/services/data/{v}/composite/sobjects",
                post(coll_create).patch(coll_update).delete(coll_delete),
            )
            .route(
                "/services/data/{v}/composite/sobjects/{object}/{field}",
                patch(coll_upsert),
            )
            .route("/services/data/{v}/jobs/ingest", post(ingest_create))
            .route(
                "/services/data/{v}/jobs/ingest/{id}",
                get(ingest_info).patch(ingest_state),
            )
            .route(
                "/services/data/{v}/jobs/ingest/{id}/batches",
                axum::routing::put(ingest_upload),
            )
            .route(
                "/services/data/{v}/jobs/ingest/{id}/{results}",
                get(ingest_results),
            )
            .route("/services/data/{v}/jobs/query", post(query_job_create))
            .route("/services/data/{v}/jobs/query/{id}", get(query_job_info))
            .route(
                "/services/data/{v}/jobs/query/{id}/results",
                get(query_job_results),
            )
            .with_state(st.clone())
            .layer(axum::middleware::from_fn_with_state(
                guard,
                AuthGuard::middleware,
            ))
            .layer(axum::middleware::from_fn_with_state(st.clone(), allocation));
        Router::new()
            .route("/services/oauth2/token", post(token))
            .route("/services/oauth2/authorize", get(authorize))
            .with_state(st)
            .merge(data)
            // Bulk API 2.0 takes uploads of up to 150 MB.
            .layer(axum::extract::DefaultBodyLimit::max(160 * 1024 * 1024))
    }

    fn credentials(&self, ctx: &SimContext) -> Json {
        let c = &self.shared.config;
        json!({
            "login_url": ctx.base_url(),
            "token_url": format!("{}/services/oauth2/token", ctx.base_url()),
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "refresh_token": c.refresh_token,
            "username": c.username,
            "password": c.password,
            "security_token": c.security_token,
            "api_version": crate::config::DEFAULT_API_VERSION,
        })
    }

    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        let mut rng = ctx.rng(&format!("salesforce-demo-{seed}"));
        const FIRST: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"];
        const LAST: [&str; 6] = [
            "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth",
        ];
        let mut accounts = Vec::new();
        for i in 0..10 {
            let mut f = Fields::new();
            f.insert("Name".into(), json!(format!("Account {i}")));
            f.insert("Industry".into(), json!("Technology"));
            accounts.push(ctx.store().create("Account", f).id);
        }
        for i in 0..50 {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let mut f = Fields::new();
            f.insert("FirstName".into(), json!(first));
            f.insert("LastName".into(), json!(last));
            f.insert(
                "Email".into(),
                json!(format!(
                    "{}.{}{i}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                )),
            );
            f.insert(
                "AccountId".into(),
                json!(accounts[i % accounts.len()].as_str()),
            );
            ctx.store().create("Contact", f);
        }
    }
}

// ---- daily allocation and Sforce-Limit-Info ----

async fn allocation(State(st): State<St>, req: Request, next: Next) -> Response {
    let limit = st.shared.limit.load(AtomicOrdering::SeqCst);
    let used = st.shared.used.load(AtomicOrdering::SeqCst);
    if used >= limit {
        return sf_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        );
    }
    let used = st.shared.used.fetch_add(1, AtomicOrdering::SeqCst) + 1;
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}")) {
        resp.headers_mut().insert("sforce-limit-info", v);
    }
    resp
}

// ---- OAuth ----

fn form_pairs(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn oauth_error(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(State(st): State<St>, body: String) -> Response {
    let p = form_pairs(&body);
    let get = |k: &str| p.get(k).cloned();
    let c = &st.shared.config;
    let issued = if get("grant_type").as_deref() == Some("password") {
        let expected = format!("{}{}", c.password, c.security_token);
        let ok = get("client_id").as_deref() == Some(c.client_id.as_str())
            && get("client_secret").as_deref() == Some(c.client_secret.as_str())
            && get("username").as_deref() == Some(c.username.as_str())
            && get("password").as_deref() == Some(expected.as_str());
        if !ok {
            return oauth_error("invalid_grant", "authentication failure");
        }
        st.ctx.auth().issue(&c.client_id, false)
    } else {
        let mut req = TokenRequest::default();
        req.grant_type = get("grant_type").unwrap_or_default();
        req.client_id = get("client_id");
        req.client_secret = get("client_secret");
        req.refresh_token = get("refresh_token");
        req.code = get("code");
        req.redirect_uri = get("redirect_uri");
        req.code_verifier = get("code_verifier");
        req.assertion = get("assertion");
        match st.ctx.auth().grant(&req) {
            Ok(t) => t,
            Err(e) => return oauth_error(e.code(), &e.to_string()),
        }
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "instance_url": st.ctx.base_url(),
        "id": format!("{}/id/00D000000000001AAA/005000000000001AAA", st.ctx.base_url()),
        "token_type": "Bearer",
        "issued_at": Utc::now().timestamp_millis().to_string(),
        "signature": "c2lt",
    });
    if let Some(rt) = issued.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(State(st): State<St>, QueryParams(p): QueryParams<AuthorizeParams>) -> Response {
    let challenge = p
        .code_challenge
        .map(|c| (c, p.code_challenge_method.unwrap_or_else(|| "plain".into())));
    match st
        .ctx
        .auth()
        .authorize(&p.client_id, &p.redirect_uri, challenge)
    {
        Ok(code) => {
            let Ok(mut url) = url::Url::parse(&p.redirect_uri) else {
                return oauth_error("invalid_request", "redirect_uri is not a URL");
            };
            url.query_pairs_mut().append_pair("code", &code);
            if let Some(s) = &p.state {
                url.query_pairs_mut().append_pair("state", s);
            }
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => oauth_error(e.code(), &e.to_string()),
    }
}

// ---- records ----

fn system_value(rec: &StoredRecord, field: &str) -> Option<Json> {
    Some(match field {
        "Id" => json!(rec.id.as_str()),
        "IsDeleted" => json!(rec.is_deleted()),
        "CreatedDate" => json!(sf_time(rec.created_at)),
        "LastModifiedDate" | "SystemModstamp" => json!(sf_time(rec.changed_at())),
        _ => return None,
    })
}

/// A field of a stored record, by its described name (relationship paths resolved).
fn field_value(st: &St, d: &DescribeSObject, rec: &StoredRecord, name: &str) -> Json {
    if let Some((head, rest)) = name.split_once('.') {
        let ref_field = if let Some(base) = head.strip_suffix("__r") {
            format!("{base}__c")
        } else {
            format!("{head}Id")
        };
        let Some(f) = d.field(&ref_field) else {
            return Json::Null;
        };
        let Some(target) = f.reference_to.first() else {
            return Json::Null;
        };
        let Some(id) = rec.fields.get(&f.name).and_then(Json::as_str) else {
            return Json::Null;
        };
        let Some(td) = st.shared.describe(target) else {
            return Json::Null;
        };
        let Some(trec) = st.ctx.store().get_live(&td.name, &RecordId::new(id)) else {
            return Json::Null;
        };
        let mut m = Map::new();
        m.insert("attributes".into(), json!({"type": td.name}));
        let leaf = rest.split('.').next().unwrap_or(rest);
        m.insert(leaf.to_owned(), field_value(st, &td, &trec, rest));
        return Json::Object(m);
    }
    let canonical = d.field(name).map_or(name, |f| f.name.as_str());
    system_value(rec, canonical)
        .unwrap_or_else(|| rec.fields.get(canonical).cloned().unwrap_or(Json::Null))
}

fn render(st: &St, d: &DescribeSObject, rec: &StoredRecord, fields: &[String], v: &str) -> Json {
    let mut m = Map::new();
    m.insert(
        "attributes".into(),
        json!({"type": d.name, "url": format!("/services/data/{v}/sobjects/{}/{}", d.name, rec.id)}),
    );
    for f in fields {
        let key = f.split('.').next().unwrap_or(f).to_owned();
        let key = d.field(&key).map_or(key, |x| x.name.clone());
        m.insert(key, field_value(st, d, rec, f));
    }
    Json::Object(m)
}

fn check_fields(d: &DescribeSObject, fields: &[String]) -> Result<(), Response> {
    for f in fields {
        let head = f.split('.').next().unwrap_or(f);
        let ok = if f.contains('.') {
            let r = head
                .strip_suffix("__r")
                .map_or(format!("{head}Id"), |b| format!("{b}__c"));
            d.field(&r).is_some()
        } else {
            d.field(head).is_some()
        };
        if !ok {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!(
                    "No such column '{f}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    d.name
                ),
            ));
        }
    }
    Ok(())
}

/// Runs a query: the matching record ids in order.
fn run_query(
    st: &St,
    q: &soql::Query,
    all: bool,
) -> Result<(DescribeSObject, Vec<RecordId>), Response> {
    let Some(d) = st.shared.describe(&q.object) else {
        return Err(sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!("sObject type '{}' is not supported.", q.object),
        ));
    };
    check_fields(&d, &q.fields)?;
    let mut used = Vec::new();
    if let Some(f) = &q.filter {
        soql::filter_fields(f, &mut used);
    }
    used.extend(q.order.iter().map(|(f, _)| f.clone()));
    check_fields(&d, &used)?;
    let typed = |rec: &StoredRecord, f: &str| {
        let ftype = d.field(f).map_or("", |x| x.field_type.as_str());
        soql::value_of(ftype, Some(&field_value(st, &d, rec, f)))
    };
    let mut records: Vec<StoredRecord> = st
        .ctx
        .store()
        .all(
            &d.name,
            if all {
                Deleted::Include
            } else {
                Deleted::Exclude
            },
        )
        .into_iter()
        .filter(|r| {
            q.filter
                .as_ref()
                .is_none_or(|e| soql::eval(e, &|f| typed(r, f)))
        })
        .collect();
    if !q.order.is_empty() {
        records.sort_by(|a, b| {
            for (f, asc) in &q.order {
                let o = soql::compare(&typed(a, f), &typed(b, f), f.eq_ignore_ascii_case("Id"))
                    .unwrap_or(std::cmp::Ordering::Equal);
                let o = if *asc { o } else { o.reverse() };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let mut ids: Vec<RecordId> = records.into_iter().map(|r| r.id).collect();
    if let Some(n) = q.limit {
        ids.truncate(n);
    }
    Ok((d, ids))
}

#[derive(Deserialize)]
struct Q {
    q: String,
}

fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("batchSize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(2000, |n| n.clamp(200, 2000))
}

fn query_page(st: &St, v: &str, cursor_id: &str, offset: usize) -> Response {
    let invalid = || {
        sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    // The page's ids and fields, copied out so records render without the lock.
    let (object, fields, page, total, batch) = {
        let cursors = st
            .shared
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(cur) = cursors.get(cursor_id) else {
            return invalid();
        };
        let end = (offset + cur.batch).min(cur.ids.len());
        let Some(page) = cur.ids.get(offset..end) else {
            return invalid();
        };
        (
            cur.object.clone(),
            cur.fields.clone(),
            page.to_vec(),
            cur.ids.len(),
            cur.batch,
        )
    };
    let Some(d) = st.shared.describe(&object) else {
        return invalid();
    };
    let end = (offset + batch).min(total);
    let records: Vec<Json> = page
        .iter()
        .filter_map(|id| st.ctx.store().get(&d.name, id))
        .map(|r| render(st, &d, &r, &fields, v))
        .collect();
    let done = end >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": records});
    if !done {
        body["nextRecordsUrl"] = json!(format!("/services/data/{v}/query/{cursor_id}-{end}"));
    }
    axum::Json(body).into_response()
}

async fn do_query(st: St, v: String, headers: HeaderMap, q: String, all: bool) -> Response {
    let parsed = match soql::parse(&q) {
        Ok(p) => p,
        Err(m) => return sf_error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &m),
    };
    let (_, ids) = match run_query(&st, &parsed, all) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let cursor_id = st.shared.next_id("0r8");
    let now = st.ctx.clock().now();
    let batch = batch_size(&headers);
    let single_page = ids.len() <= batch;
    let cur = QueryCursor {
        object: parsed.object.clone(),
        fields: parsed.fields.clone(),
        ids,
        batch,
        opened: now,
    };
    {
        let mut cursors = st
            .shared
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let lifetime = chrono::Duration::hours(CURSOR_LIFETIME_HOURS);
        cursors.retain(|_, c| now - c.opened < lifetime);
        cursors.insert(cursor_id.clone(), cur);
    }
    let resp = query_page(&st, &v, &cursor_id, 0);
    if single_page {
        st.shared
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&cursor_id);
    }
    resp
}

async fn query(
    State(st): State<St>,
    Path(v): Path<String>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<Q>,
) -> Response {
    do_query(st, v, headers, q.q, false).await
}

async fn query_all(
    State(st): State<St>,
    Path(v): Path<String>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<Q>,
) -> Response {
    do_query(st, v, headers, q.q, true).await
}

async fn query_more(State(st): State<St>, Path((v, locator)): Path<(String, String)>) -> Response {
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        );
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        );
    };
    query_page(&st, &v, id, offset)
}

async fn limits(State(st): State<St>) -> Response {
    let limit = st.shared.limit.load(AtomicOrdering::SeqCst);
    let used = st.shared.used.load(AtomicOrdering::SeqCst);
    axum::Json(json!({
        "DailyApiRequests": {"Max": limit, "Remaining": limit.saturating_sub(used)},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
    }))
    .into_response()
}

async fn describe(State(st): State<St>, Path((_v, object)): Path<(String, String)>) -> Response {
    match st.shared.describe(&object) {
        Some(d) => axum::Json(d).into_response(),
        None => sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

// ---- writes ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Upsert,
    Delete,
}

fn failure(id: Option<String>, e: RecordError) -> SaveResult {
    SaveResult {
        id,
        success: false,
        errors: vec![e],
        created: None,
    }
}

fn rec_err(code: &str, message: String, fields: &[&str]) -> RecordError {
    RecordError {
        status_code: code.to_owned(),
        message,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn key_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The live record holding `value` in unique field `field` (index built on first use).
fn find_unique(st: &St, d: &DescribeSObject, field: &str, value: &Json) -> Option<RecordId> {
    let key = key_text(value)?;
    let mut idx = st
        .shared
        .unique
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let map = idx
        .entry((d.name.clone(), field.to_owned()))
        .or_insert_with(|| {
            st.ctx
                .store()
                .all(&d.name, Deleted::Exclude)
                .into_iter()
                .filter_map(|r| r.fields.get(field).and_then(key_text).map(|k| (k, r.id)))
                .collect()
        });
    let id = map.get(&key)?.clone();
    // Records written around the index (e.g. loaded data) are checked against the store.
    match st.ctx.store().get_live(&d.name, &id) {
        Some(r) if r.fields.get(field).and_then(key_text).as_deref() == Some(key.as_str()) => {
            Some(id)
        }
        _ => {
            map.remove(&key);
            None
        }
    }
}

/// Keeps the unique index in step with a write (`before` and `after` fields of `id`).
fn reindex(
    st: &St,
    d: &DescribeSObject,
    id: &RecordId,
    before: Option<&Fields>,
    after: Option<&Fields>,
) {
    let mut idx = st
        .shared
        .unique
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for f in d.fields.iter().filter(|f| f.unique) {
        let Some(map) = idx.get_mut(&(d.name.clone(), f.name.clone())) else {
            continue;
        };
        if let Some(k) = before.and_then(|b| b.get(&f.name)).and_then(key_text)
            && map.get(&k) == Some(id)
        {
            map.remove(&k);
        }
        if let Some(k) = after.and_then(|a| a.get(&f.name)).and_then(key_text) {
            map.insert(k, id.clone());
        }
    }
}

/// Checks unique fields against other live records.
fn check_unique(
    st: &St,
    d: &DescribeSObject,
    fields: &Map<String, Json>,
    own: Option<&RecordId>,
) -> Result<(), RecordError> {
    for f in d.fields.iter().filter(|f| f.unique) {
        let Some(v) = fields.get(&f.name).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(other) = find_unique(st, d, &f.name, v).filter(|id| Some(id) != own) {
            return Err(rec_err(
                "DUPLICATE_VALUE",
                format!(
                    "duplicate value found: {} duplicates value on record with id: {other}",
                    f.name
                ),
                &[&f.name],
            ));
        }
    }
    Ok(())
}

/// Saves one record: the heart of rows, collections and bulk ingest.
fn save_one(
    st: &St,
    d: &DescribeSObject,
    op: Op,
    ext: Option<&str>,
    input: &Map<String, Json>,
) -> SaveResult {
    let _guard = st
        .shared
        .write_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let store = st.ctx.store();
    let given_id = input.get("Id").and_then(Json::as_str).map(RecordId::new);
    let existing = match op {
        Op::Create => None,
        Op::Update | Op::Delete => {
            let Some(id) = given_id.clone() else {
                return failure(
                    None,
                    rec_err(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call".into(),
                        &[],
                    ),
                );
            };
            match store.get(&d.name, &id) {
                Some(r) if !r.is_deleted() => Some(r),
                Some(_) => {
                    return failure(
                        Some(id.into_inner()),
                        rec_err("ENTITY_IS_DELETED", "entity is deleted".into(), &[]),
                    );
                }
                None => {
                    return failure(
                        Some(id.into_inner()),
                        rec_err(
                            "INVALID_CROSS_REFERENCE_KEY",
                            "invalid cross reference id".into(),
                            &[],
                        ),
                    );
                }
            }
        }
        Op::Upsert => {
            let Some(key) = ext else {
                return failure(
                    None,
                    rec_err("INVALID_FIELD", "no external id field".into(), &[]),
                );
            };
            let Some(value) = input.get(key).filter(|v| !v.is_null()) else {
                return failure(
                    None,
                    rec_err(
                        "REQUIRED_FIELD_MISSING",
                        format!("Required fields are missing: [{key}]"),
                        &[key],
                    ),
                );
            };
            let unique = d.field(key).is_some_and(|f| f.unique);
            if unique {
                find_unique(st, d, key, value).and_then(|id| store.get_live(&d.name, &id))
            } else {
                let found = store.find_by(&d.name, key, value);
                if found.len() > 1 {
                    return failure(
                        None,
                        rec_err(
                            "DUPLICATE_EXTERNAL_ID",
                            format!("{key}: more than one record found for external id field"),
                            &[key],
                        ),
                    );
                }
                found.into_iter().next()
            }
        }
    };
    if op == Op::Delete {
        let Some(rec) = existing else {
            return failure(
                None,
                rec_err(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id".into(),
                    &[],
                ),
            );
        };
        return match store.delete(&d.name, &rec.id) {
            Ok(_) => {
                reindex(st, d, &rec.id, Some(&rec.fields), None);
                SaveResult {
                    id: Some(rec.id.into_inner()),
                    success: true,
                    errors: vec![],
                    created: None,
                }
            }
            Err(_) => failure(
                Some(rec.id.into_inner()),
                rec_err("ENTITY_IS_DELETED", "entity is deleted".into(), &[]),
            ),
        };
    }
    let creating = existing.is_none();
    let fields = match schema::validate(d, input, creating) {
        Ok(f) => f,
        Err(e) => return failure(existing.map(|r| r.id.into_inner()), e),
    };
    if let Err(e) = check_unique(st, d, &fields, existing.as_ref().map(|r| &r.id)) {
        return failure(existing.map(|r| r.id.into_inner()), e);
    }
    match existing {
        Some(rec) => match store.update(&d.name, &rec.id, fields) {
            Ok(w) => {
                reindex(st, d, &rec.id, Some(&rec.fields), Some(&w.record().fields));
                SaveResult {
                    id: Some(rec.id.into_inner()),
                    success: true,
                    errors: vec![],
                    created: (op == Op::Upsert).then_some(false),
                }
            }
            Err(e) => failure(
                Some(rec.id.into_inner()),
                rec_err("ENTITY_IS_DELETED", e.to_string(), &[]),
            ),
        },
        None => {
            let rec = store.create(&d.name, fields);
            reindex(st, d, &rec.id, None, Some(&rec.fields));
            SaveResult {
                id: Some(rec.id.into_inner()),
                success: true,
                errors: vec![],
                created: (op == Op::Upsert).then_some(true),
            }
        }
    }
}

fn describe_or_404(st: &St, object: &str) -> Result<DescribeSObject, Response> {
    st.shared.describe(object).ok_or_else(|| {
        sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    })
}

fn single_result(r: SaveResult, ok: StatusCode) -> Response {
    if r.success {
        (ok, axum::Json(json!({"id": r.id, "success": true, "errors": [], "created": r.created.unwrap_or(ok == StatusCode::CREATED)}))).into_response()
    } else {
        let e = r
            .errors
            .into_iter()
            .next()
            .unwrap_or_else(|| rec_err("UNKNOWN_EXCEPTION", String::new(), &[]));
        (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!([{"message": e.message, "errorCode": e.status_code, "fields": e.fields}]),
            ),
        )
            .into_response()
    }
}

fn parse_json_object(body: &str) -> Result<Map<String, Json>, Response> {
    match serde_json::from_str::<Json>(body) {
        Ok(Json::Object(m)) => Ok(m),
        _ => Err(sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body is not a JSON object",
        )),
    }
}

async fn row_create(
    State(st): State<St>,
    Path((_v, object)): Path<(String, String)>,
    body: String,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let m = match parse_json_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    single_result(save_one(&st, &d, Op::Create, None, &m), StatusCode::CREATED)
}

async fn row_get(
    State(st): State<St>,
    Path((v, object, id)): Path<(String, String, String)>,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match st.ctx.store().get_live(&d.name, &RecordId::new(id)) {
        Some(rec) => {
            let fields: Vec<String> = d
                .fields
                .iter()
                .filter(|f| f.field_type != "address")
                .map(|f| f.name.clone())
                .collect();
            axum::Json(render(&st, &d, &rec, &fields, &v)).into_response()
        }
        None => sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

async fn row_update(
    State(st): State<St>,
    Path((_v, object, id)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut m = match parse_json_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    m.insert("Id".into(), json!(id));
    let r = save_one(&st, &d, Op::Update, None, &m);
    if r.success {
        StatusCode::NO_CONTENT.into_response()
    } else {
        single_result(r, StatusCode::OK)
    }
}

async fn row_delete(
    State(st): State<St>,
    Path((_v, object, id)): Path<(String, String, String)>,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut m = Map::new();
    m.insert("Id".into(), json!(id));
    let r = save_one(&st, &d, Op::Delete, None, &m);
    if r.success {
        StatusCode::NO_CONTENT.into_response()
    } else {
        sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }
}

async fn row_upsert(
    State(st): State<St>,
    Path((_v, object, field, value)): Path<(String, String, String, String)>,
    body: String,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(r) = check_external(&d, &field) {
        return r;
    }
    let mut m = match parse_json_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    m.insert(field.clone(), json!(value));
    let r = save_one(&st, &d, Op::Upsert, Some(&field), &m);
    let status = if r.created == Some(true) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    single_result(r, status)
}

fn check_external(d: &DescribeSObject, field: &str) -> Result<(), Response> {
    match d.field(field) {
        Some(f) if f.external_id || f.name == "Id" => Ok(()),
        _ => Err(sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!(
                "Field name provided, {field} is not an External ID or indexed field for {}",
                d.name
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Collection {
    #[serde(default)]
    all_or_none: bool,
    records: Vec<Map<String, Json>>,
}

fn parse_collection(body: &str) -> Result<Collection, Response> {
    let c: Collection = serde_json::from_str(body).map_err(|e| {
        sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &format!("Cannot deserialize the request: {e}"),
        )
    })?;
    if c.records.len() > 200 {
        return Err(sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    Ok(c)
}

fn record_type(st: &St, m: &Map<String, Json>) -> Option<DescribeSObject> {
    m.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Json::as_str)
        .and_then(|t| st.shared.describe(t))
}

fn collection_save(
    st: &St,
    c: &Collection,
    op: Op,
    fixed: Option<(&DescribeSObject, &str)>,
) -> Response {
    let results: Vec<SaveResult> = c
        .records
        .iter()
        .map(|m| {
            let d = match fixed {
                Some((d, _)) => Some(d.clone()),
                None => record_type(st, m),
            };
            match d {
                Some(d) => save_one(st, &d, op, fixed.map(|(_, f)| f), m),
                None => failure(
                    None,
                    rec_err(
                        "INVALID_TYPE",
                        "attributes.type is missing or unknown".into(),
                        &[],
                    ),
                ),
            }
        })
        .collect();
    let _ = c.all_or_none;
    axum::Json(results).into_response()
}

async fn coll_create(State(st): State<St>, body: String) -> Response {
    match parse_collection(&body) {
        Ok(c) => collection_save(&st, &c, Op::Create, None),
        Err(r) => r,
    }
}

async fn coll_update(State(st): State<St>, body: String) -> Response {
    match parse_collection(&body) {
        Ok(c) => collection_save(&st, &c, Op::Update, None),
        Err(r) => r,
    }
}

async fn coll_upsert(
    State(st): State<St>,
    Path((_v, object, field)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let d = match describe_or_404(&st, &object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(r) = check_external(&d, &field) {
        return r;
    }
    match parse_collection(&body) {
        Ok(c) => collection_save(&st, &c, Op::Upsert, Some((&d, &field))),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct Ids {
    ids: String,
}

async fn coll_delete(State(st): State<St>, QueryParams(p): QueryParams<Ids>) -> Response {
    let ids: Vec<&str> = p.ids.split(',').filter(|s| !s.is_empty()).collect();
    if ids.len() > 200 {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "cannot delete more than 200 records in one call",
        );
    }
    let objects: Vec<String> = st
        .shared
        .schemas
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .cloned()
        .collect();
    let results: Vec<SaveResult> = ids
        .iter()
        .map(|id| {
            let prefix = id.get(..3).unwrap_or("");
            let d = objects
                .iter()
                .find(|o| schema::key_prefix(o) == prefix)
                .and_then(|o| st.shared.describe(o));
            let mut m = Map::new();
            m.insert("Id".into(), json!(id));
            match d {
                Some(d) => save_one(&st, &d, Op::Delete, None, &m),
                None => failure(
                    Some((*id).to_owned()),
                    rec_err("MALFORMED_ID", format!("malformed id {id}"), &[]),
                ),
            }
        })
        .collect();
    axum::Json(results).into_response()
}

// ---- Bulk API 2.0 ----

fn job_info_json(job: &Job) -> Response {
    axum::Json(&job.info).into_response()
}

async fn ingest_create(State(st): State<St>, body: String) -> Response {
    let req: crate::wire::CreateIngestJob = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return sf_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let d = match describe_or_404(&st, &req.object) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if !matches!(
        req.operation.as_str(),
        "insert" | "update" | "upsert" | "delete"
    ) {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "API_ERROR",
            &format!("Unsupported operation {}", req.operation),
        );
    }
    if req.operation == "upsert" {
        match req.external_id_field_name.as_deref() {
            Some(f) => {
                if let Err(r) = check_external(&d, f) {
                    return r;
                }
            }
            None => {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "externalIdFieldName is required for upsert",
                );
            }
        }
    }
    let id = st.shared.next_id("750");
    let job = Job {
        info: crate::wire::JobInfo {
            id: crate::wire::JobId(id.clone()),
            operation: req.operation,
            object: d.name.clone(),
            state: crate::wire::JobState::Open,
            external_id_field_name: req.external_id_field_name,
            number_records_processed: 0,
            number_records_failed: 0,
            error_message: None,
            content_type: Some("CSV".into()),
            line_ending: Some("LF".into()),
            column_delimiter: Some("COMMA".into()),
        },
        data: String::new(),
        polls: 0,
        success: String::new(),
        failed: String::new(),
        query_ids: Vec::new(),
        query_fields: Vec::new(),
    };
    let resp = job_info_json(&job);
    st.shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, job);
    resp
}

async fn ingest_upload(
    State(st): State<St>,
    Path((_v, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let mut jobs = st
        .shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(job) = jobs.get_mut(&id) else {
        return sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if job.info.state != crate::wire::JobState::Open || !job.data.is_empty() {
        return sf_error(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            "Job's state does not allow uploading data",
        );
    }
    job.data = body;
    StatusCode::CREATED.into_response()
}

fn process_ingest(st: &St, job: &mut Job) {
    let Some(d) = st.shared.describe(&job.info.object) else {
        job.info.state = crate::wire::JobState::Failed;
        job.info.error_message = Some("InvalidEntity".into());
        return;
    };
    let op = match job.info.operation.as_str() {
        "insert" => Op::Create,
        "update" => Op::Update,
        "upsert" => Op::Upsert,
        _ => Op::Delete,
    };
    let mut rows = CsvReader::new(&job.data);
    let header = match rows.next_record() {
        Ok(Some(h)) => h,
        _ => {
            job.info.state = crate::wire::JobState::Failed;
            job.info.error_message = Some("ClientInputError : no header row".into());
            return;
        }
    };
    let mut success = String::new();
    let mut failed = String::new();
    let mut h = vec!["sf__Id".to_owned(), "sf__Created".to_owned()];
    h.extend(header.iter().cloned());
    write_row(&mut success, &h);
    h[1] = "sf__Error".into();
    write_row(&mut failed, &h);
    let (mut processed, mut failures) = (0u64, 0u64);
    for row in rows {
        let Ok(row) = row else {
            job.info.state = crate::wire::JobState::Failed;
            job.info.error_message = Some("ClientInputError : malformed CSV".into());
            return;
        };
        processed += 1;
        let mut m = Map::new();
        for (k, v) in header.iter().zip(&row) {
            if v.is_empty() {
                continue;
            }
            m.insert(
                k.clone(),
                if v == NULL_VALUE {
                    Json::Null
                } else {
                    Json::String(v.clone())
                },
            );
        }
        let r = save_one(st, &d, op, job.info.external_id_field_name.as_deref(), &m);
        let mut out = vec![r.id.clone().unwrap_or_default()];
        if r.success {
            out.push(
                if r.created == Some(true) || op == Op::Create {
                    "true"
                } else {
                    "false"
                }
                .into(),
            );
            out.extend(row);
            write_row(&mut success, &out);
        } else {
            failures += 1;
            let e = r
                .errors
                .into_iter()
                .next()
                .unwrap_or_else(|| rec_err("UNKNOWN_EXCEPTION", String::new(), &[]));
            out.push(format!(
                "{}:{}:{} --",
                e.status_code,
                e.message,
                e.fields.join(",")
            ));
            out.extend(row);
            write_row(&mut failed, &out);
        }
    }
    job.success = success;
    job.failed = failed;
    job.info.number_records_processed = processed;
    job.info.number_records_failed = failures;
    job.data.clear();
}

async fn ingest_state(
    State(st): State<St>,
    Path((_v, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let change: crate::wire::JobStateChange = match serde_json::from_str(&body) {
        Ok(c) => c,
        Err(e) => return sf_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let mut job = {
        let mut jobs = st
            .shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match jobs.remove(&id) {
            Some(j) => j,
            None => {
                return sf_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "The requested resource does not exist",
                );
            }
        }
    };
    match change.state {
        crate::wire::JobState::UploadComplete if job.info.state == crate::wire::JobState::Open => {
            process_ingest(&st, &mut job);
            if job.info.state != crate::wire::JobState::Failed {
                job.info.state = crate::wire::JobState::UploadComplete;
            }
        }
        crate::wire::JobState::Aborted if !job.info.state.is_final() => {
            job.info.state = crate::wire::JobState::Aborted;
        }
        _ => {
            st.shared
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, job);
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOBSTATE",
                "Invalid state change",
            );
        }
    }
    let resp = job_info_json(&job);
    st.shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, job);
    resp
}

/// A poll moves a submitted job along: `UploadComplete` -> `InProgress` -> `JobComplete`.
fn poll(job: &mut Job) {
    use crate::wire::JobState;
    job.polls += 1;
    job.info.state = match &job.info.state {
        JobState::UploadComplete => JobState::InProgress,
        JobState::InProgress => JobState::JobComplete,
        other => other.clone(),
    };
}

async fn ingest_info(State(st): State<St>, Path((_v, id)): Path<(String, String)>) -> Response {
    let mut jobs = st
        .shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match jobs.get_mut(&id) {
        Some(job) => {
            poll(job);
            job_info_json(job)
        }
        None => sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

fn csv_response(body: String, headers: &[(&'static str, String)]) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

async fn ingest_results(
    State(st): State<St>,
    Path((_v, id, which)): Path<(String, String, String)>,
) -> Response {
    let jobs = st
        .shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(job) = jobs.get(&id) else {
        return sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if job.info.state != crate::wire::JobState::JobComplete {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job is not complete",
        );
    }
    match which.as_str() {
        "successfulResults" => csv_response(job.success.clone(), &[]),
        "failedResults" => csv_response(job.failed.clone(), &[]),
        "unprocessedrecords" => csv_response(String::new(), &[]),
        _ => sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

async fn query_job_create(State(st): State<St>, body: String) -> Response {
    let req: crate::wire::CreateQueryJob = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return sf_error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let parsed = match soql::parse(&req.query) {
        Ok(p) => p,
        Err(m) => return sf_error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &m),
    };
    let all = req.operation == "queryAll";
    let (d, ids) = match run_query(&st, &parsed, all) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    for f in &parsed.fields {
        if let Some(field) = d.field(f) {
            if matches!(field.field_type.as_str(), "address" | "location") {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "API_ERROR",
                    "Selecting compound data not supported in Bulk Query",
                );
            }
            if field.field_type == "base64" {
                return sf_error(
                    StatusCode::BAD_REQUEST,
                    "API_ERROR",
                    &format!("Bulk API doesn't support base64 field {}", field.name),
                );
            }
        }
    }
    let id = st.shared.next_id("750");
    let job = Job {
        info: crate::wire::JobInfo {
            id: crate::wire::JobId(id.clone()),
            operation: req.operation,
            object: d.name.clone(),
            state: crate::wire::JobState::UploadComplete,
            external_id_field_name: None,
            number_records_processed: ids.len() as u64,
            number_records_failed: 0,
            error_message: None,
            content_type: Some("CSV".into()),
            line_ending: Some("LF".into()),
            column_delimiter: Some("COMMA".into()),
        },
        data: String::new(),
        polls: 0,
        success: String::new(),
        failed: String::new(),
        query_ids: ids,
        query_fields: parsed.fields,
    };
    let resp = job_info_json(&job);
    st.shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, job);
    resp
}

async fn query_job_info(State(st): State<St>, Path((_v, id)): Path<(String, String)>) -> Response {
    ingest_info(State(st), Path((_v, id))).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultsParams {
    locator: Option<String>,
    max_records: Option<usize>,
}

fn csv_cell(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        Json::Object(m) => m
            .iter()
            .find(|(k, _)| *k != "attributes")
            .map(|(_, v)| csv_cell(v))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

async fn query_job_results(
    State(st): State<St>,
    Path((_v, id)): Path<(String, String)>,
    QueryParams(p): QueryParams<ResultsParams>,
) -> Response {
    let (object, fields, ids) = {
        let jobs = st
            .shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(job) = jobs.get(&id) else {
            return sf_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            );
        };
        if job.info.state != crate::wire::JobState::JobComplete {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOBSTATE",
                "Job is not complete",
            );
        }
        let start = p
            .locator
            .as_deref()
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        let max = p.max_records.unwrap_or(50_000).max(1);
        let end = (start + max).min(job.query_ids.len());
        let page: Vec<RecordId> = job
            .query_ids
            .get(start..end)
            .map(<[RecordId]>::to_vec)
            .unwrap_or_default();
        let next = (end < job.query_ids.len()).then(|| end.to_string());
        (
            (job.info.object.clone(), next),
            job.query_fields.clone(),
            page,
        )
    };
    let (object, next) = object;
    let Some(d) = st.shared.describe(&object) else {
        return sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    let mut out = String::new();
    write_row(&mut out, &fields);
    let mut n = 0;
    for id in &ids {
        if let Some(rec) = st.ctx.store().get(&d.name, id) {
            let cells: Vec<String> = fields
                .iter()
                .map(|f| csv_cell(&field_value(&st, &d, &rec, f)))
                .collect();
            write_row(&mut out, &cells);
            n += 1;
        }
    }
    csv_response(
        out,
        &[
            ("sforce-locator", next.unwrap_or_else(|| "null".into())),
            ("sforce-numberofrecords", n.to_string()),
        ],
    )
}
