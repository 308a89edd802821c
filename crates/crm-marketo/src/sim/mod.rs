//! A stateful simulator of Marketo's REST and Bulk APIs (feature `sim`), on
//! `crm-sim`, answering on Marketo's own paths:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /identity/oauth/token` | client credentials in the query; `{access_token, token_type, expires_in, scope}` |
//! | `GET /rest/v1/{leads,companies,opportunities}.json` | `filterType`/`filterValues` (≤ 300), `fields`, `batchSize` (≤ 300), `nextPageToken` |
//! | `POST /rest/v1/leads.json` | `action`, `lookupField`, ≤ 300 leads; per-record `created`/`updated`/`skipped` with reasons 1003 (invalid email), 1004, 1005, 1006 (unknown field) |
//! | `POST /rest/v1/{companies,opportunities}.json` | `action`, `dedupeBy`, `seq` in results |
//! | `POST /rest/v1/{object}/delete.json` | deletes by id |
//! | `GET /rest/v1/{object}/describe.json` | field descriptions |
//! | `GET /rest/v1/activities/pagingtoken.json`, `leadchanges.json`, `deletedleads.json` | activity feeds derived from the store's change order |
//! | `/bulk/v1/{leads,activities}/export/...` | create, enqueue, status, file (streamed CSV); 31-day ranges; a daily export byte quota (1029) |
//! | `GET /rest/v1/leads/programs/{programId}.json` | a program's members with `membership`, paged |
//! | `GET /rest/v1/programs/{programId}/members.json` | `filterType` `leadId`, `statusName`, `reachedSuccess` or `updatedAt` (`startAt`/`endAt`, ≤ 7 days), `fields`, paged with `moreResult` |
//! | `POST /rest/v1/leads/programs/{programId}/status.json` | `{status, input: [{id}]}`, members only; per-lead `updated`/`skipped` (1004, 1013, 1037) |
//! | `POST /rest/v1/programs/{programId}/members/status.json` | `{statusName, input: [{leadId}]}`, adds members; `created`/`updated`/`skipped` with `seq` |
//! | `GET /rest/v1/lists.json`, `GET`/`POST`/`DELETE /rest/v1/lists/{listId}/leads.json`, `GET .../leads/ismember.json` | static lists and their members (`added`, `removed`, 1004, 1015) |
//! | `GET /rest/v1/campaigns.json`, `POST /rest/v1/campaigns/{campaignId}/trigger.json` | smart campaigns; Request Campaign on active, requestable trigger campaigns (≤ 100 leads) |
//!
//! Programs, lists and campaigns are defined through [`SimState`] (see the
//! [`membership`] module); an unknown one answers 1013, a status the
//! program's channel lacks 1025.
//!
//! Errors come as Marketo sends them: HTTP 200 with `success: false` and
//! `errors: [{code, message}]`. Calls are limited per window (606), per day
//! (607) and in flight (615, counted across all calls at once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::RecordId;
use crm_sim::auth::{AuthFailure, AuthGuard, AuthMethod, OAuthClient, TokenRequest};
use crm_sim::store::{ChangeKey, ChangeQuery, Deleted, Fields, IdGenerator, StoredRecord};
use crm_sim::{RateLimited, RecordFaults, ResponseForm, SimContext, Simulator, Window};
use serde_json::{Value as J, json};

pub mod membership;

pub use membership::{
    CampaignRun, SimCampaign, SimList, SimMembership, SimProgram, SimProgramStatus,
};

use crate::ObjectKind;
use crate::wire::{
    ApiError, DeleteRequest, ExportJob, ExportRequest, SyncAction, SyncLeadRequest,
    SyncObjectRequest, SyncResult,
};

/// Settings of the simulator.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MarketoSimConfig {
    /// The custom service's client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Access-token lifetime (Marketo: 3,600 s).
    pub token_ttl: Duration,
    /// Calls per window (Marketo: 100 per 20 s).
    pub calls_per_window: u32,
    /// The window.
    pub window: Duration,
    /// Calls in flight (Marketo: 10).
    pub max_in_flight: usize,
    /// Calls per day (Marketo default: 50,000).
    pub daily: u32,
    /// Delay inside each data call (to make calls overlap in tests).
    pub latency: Duration,
    /// Export bytes a day (Marketo: 500 MB).
    pub export_daily_bytes: u64,
    /// Status polls answered `Processing` before a job completes.
    pub export_processing_polls: u32,
    /// Extra lead fields (`name`, `dataType`) besides the standard ones.
    pub extra_lead_fields: Vec<(String, String)>,
}

impl Default for MarketoSimConfig {
    fn default() -> Self {
        MarketoSimConfig {
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            token_ttl: Duration::from_secs(3600),
            calls_per_window: 100,
            window: Duration::from_secs(20),
            max_in_flight: 10,
            daily: 50_000,
            latency: Duration::ZERO,
            export_daily_bytes: crate::config::DEFAULT_EXPORT_DAILY_BYTES,
            export_processing_polls: 1,
            extra_lead_fields: Vec::new(),
        }
    }
}

const LEAD_FIELDS: [(&str, &str); 13] = [
    ("id", "integer"),
    ("email", "email"),
    ("firstName", "string"),
    ("lastName", "string"),
    ("phone", "phone"),
    ("company", "string"),
    ("title", "string"),
    ("leadScore", "integer"),
    ("leadSource", "string"),
    ("unsubscribed", "boolean"),
    ("externalCompanyId", "string"),
    ("createdAt", "datetime"),
    ("updatedAt", "datetime"),
];

const COMPANY_FIELDS: [(&str, &str); 8] = [
    ("id", "integer"),
    ("externalCompanyId", "string"),
    ("company", "string"),
    ("industry", "string"),
    ("annualRevenue", "currency"),
    ("numberOfEmployees", "integer"),
    ("createdAt", "datetime"),
    ("updatedAt", "datetime"),
];

const OPPORTUNITY_FIELDS: [(&str, &str); 11] = [
    ("marketoGUID", "string"),
    ("externalOpportunityId", "string"),
    ("name", "string"),
    ("stage", "string"),
    ("amount", "currency"),
    ("probability", "integer"),
    ("closeDate", "date"),
    ("leadId", "integer"),
    ("isWon", "boolean"),
    ("createdAt", "datetime"),
    ("updatedAt", "datetime"),
];

/// Simulator state tests reach into: in-flight counts, export jobs, ids.
#[derive(Debug, Default)]
pub struct SimState {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
    refused_concurrency: AtomicU64,
    export_bytes: AtomicU64,
    id_base: AtomicU64,
    last_seq: AtomicU64,
    fail_activity_exports: AtomicBool,
    jobs: Mutex<HashMap<String, Job>>,
    next_job: AtomicU64,
    catalog: Mutex<membership::Catalog>,
}

#[derive(Clone, Debug)]
struct Job {
    kind: &'static str,
    status: String,
    request: ExportRequest,
    file: Option<Arc<Vec<u8>>>,
    rows: u64,
    polls_left: u32,
    created_at: String,
}

impl SimState {
    /// The most calls seen in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }
    /// Calls refused with 615.
    pub fn refused_concurrency(&self) -> u64 {
        self.refused_concurrency.load(Ordering::SeqCst)
    }
    /// Export bytes counted today.
    pub fn export_bytes(&self) -> u64 {
        self.export_bytes.load(Ordering::SeqCst)
    }
    /// Starts a new export day.
    pub fn reset_export_quota(&self) {
        self.export_bytes.store(0, Ordering::SeqCst);
    }
    /// Makes activity export jobs end `Failed`.
    pub fn fail_activity_exports(&self, on: bool) {
        self.fail_activity_exports.store(on, Ordering::SeqCst);
    }
    /// The ranges of the export jobs created so far, by kind (`leads`, `activities`).
    pub fn export_ranges(&self, kind: &str) -> Vec<(String, String)> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(u64, (String, String))> = jobs
            .iter()
            .filter(|(_, j)| j.kind == kind)
            .filter_map(|(id, j)| {
                let r = j.request.filter.created_at.as_ref().or(j
                    .request
                    .filter
                    .updated_at
                    .as_ref())?;
                Some((
                    id.parse().unwrap_or(0),
                    (r.start_at.clone(), r.end_at.clone()),
                ))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, r)| r).collect()
    }
    /// Forgets jobs, counts, program and list memberships and campaign runs
    /// (programs, lists and campaigns stay defined) and makes new ids start
    /// at 1 again (a fresh instance).
    pub fn reset(&self) {
        self.reset_membership();
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.max_seen.store(0, Ordering::SeqCst);
        self.refused_concurrency.store(0, Ordering::SeqCst);
        self.export_bytes.store(0, Ordering::SeqCst);
        self.fail_activity_exports.store(false, Ordering::SeqCst);
        self.id_base
            .store(self.last_seq.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Marketo-style ids: integers for leads and companies, GUIDs for
/// opportunities and activities; numbering restarts after [`SimState::reset`].
#[derive(Clone, Debug)]
struct MarketoIds(Arc<SimState>);

impl IdGenerator for MarketoIds {
    fn next_id(&self, object: &str, seq: u64) -> RecordId {
        self.0.last_seq.fetch_max(seq, Ordering::SeqCst);
        let n = seq.saturating_sub(self.0.id_base.load(Ordering::SeqCst));
        match object {
            "opportunities" | "activities" => {
                RecordId::new(format!("{n:08x}-0000-4000-8000-{n:012x}"))
            }
            _ => RecordId::new(n.to_string()),
        }
    }
}

/// The integer id of a stored record (opportunities: the GUID's number).
fn int_id(object: &str, id: &RecordId) -> Option<u64> {
    match object {
        "opportunities" | "activities" => {
            u64::from_str_radix(id.as_str().rsplit('-').next()?, 16).ok()
        }
        _ => id.as_str().parse().ok(),
    }
}

/// The Marketo simulator.
#[derive(Clone, Debug, Default)]
pub struct MarketoSimulator {
    config: Arc<MarketoSimConfig>,
    state: Arc<SimState>,
}

impl MarketoSimulator {
    /// A simulator with `config`.
    pub fn new(config: MarketoSimConfig) -> Self {
        MarketoSimulator {
            config: Arc::new(config),
            state: Arc::new(SimState::default()),
        }
    }
    /// The settings.
    pub fn config(&self) -> &MarketoSimConfig {
        &self.config
    }
    /// The shared state (keep a clone before handing the simulator to the server).
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }
}

/// Marketo's wording: errors in HTTP 200 bodies.
#[derive(Clone, Copy, Debug, Default)]
pub struct MarketoForm;

/// A failed call's body.
pub fn error_body(code: &str, message: &str) -> Response {
    (
        StatusCode::OK,
        Json(json!({
            "requestId": "sim#0",
            "success": false,
            "errors": [{"code": code, "message": message}],
        })),
    )
        .into_response()
}

impl ResponseForm for MarketoForm {
    fn rate_limited(&self, l: &RateLimited) -> Response {
        if l.is_daily() {
            error_body("607", "Daily quota reached")
        } else {
            error_body(
                "606",
                &format!(
                    "Max rate limit '{}' exceeded with in '{}' secs",
                    l.limit,
                    l.period.as_secs()
                ),
            )
        }
    }

    fn unauthorized(&self, failure: &AuthFailure) -> Response {
        match failure {
            AuthFailure::Expired => error_body("602", "Access token expired"),
            AuthFailure::Missing => error_body("600", "Access token not specified"),
            _ => error_body("601", "Access token invalid"),
        }
    }
}

#[derive(Clone)]
struct App {
    ctx: SimContext,
    cfg: Arc<MarketoSimConfig>,
    st: Arc<SimState>,
}

impl Simulator for MarketoSimulator {
    fn provider(&self) -> &'static str {
        "marketo"
    }

    fn id_generator(&self) -> Arc<dyn IdGenerator> {
        Arc::new(MarketoIds(Arc::clone(&self.state)))
    }

    fn form(&self) -> Arc<dyn ResponseForm> {
        Arc::new(MarketoForm)
    }

    fn setup(&self, ctx: &SimContext) {
        ctx.auth().register_client(OAuthClient::confidential(
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        ));
        ctx.auth().set_token_ttl(self.config.token_ttl);
        ctx.log().redact_query_param("client_secret");
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let app = App {
            ctx: ctx.clone(),
            cfg: Arc::clone(&self.config),
            st: Arc::clone(&self.state),
        };
        let guard = ctx.auth_guard(vec![AuthMethod::Bearer]);
        let limiter = ctx.rate_limiter(vec![
            Window::sliding("rate", self.config.calls_per_window, self.config.window),
            Window::fixed("daily", self.config.daily, Duration::from_secs(86_400)),
        ]);
        let api = membership::routes(Router::new())
            .route("/rest/v1/leads/describe.json", get(describe_leads))
            .route("/rest/v1/{object}/describe.json", get(describe_object))
            .route("/rest/v1/activities/pagingtoken.json", get(paging_token))
            .route("/rest/v1/activities/leadchanges.json", get(lead_changes))
            .route("/rest/v1/activities/deletedleads.json", get(deleted_leads))
            .route("/rest/v1/{object}/delete.json", post(delete_records))
            .route("/rest/v1/{object}", get(query).post(sync))
            .route("/bulk/v1/{kind}/export/create.json", post(export_create))
            .route(
                "/bulk/v1/{kind}/export/{id}/enqueue.json",
                post(export_enqueue),
            )
            .route(
                "/bulk/v1/{kind}/export/{id}/status.json",
                get(export_status),
            )
            .route("/bulk/v1/{kind}/export/{id}/file.json", get(export_file))
            .with_state(app.clone())
            .layer(from_fn_with_state(guard, AuthGuard::middleware))
            .layer(from_fn_with_state(
                limiter,
                crm_sim::RateLimiter::middleware,
            ))
            .layer(from_fn_with_state(app.clone(), concurrency));
        Router::new()
            .route("/identity/oauth/token", get(identity).post(identity))
            .with_state(app)
            .merge(api)
    }

    fn credentials(&self, ctx: &SimContext) -> J {
        json!({
            "base_url": ctx.base_url(),
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
        })
    }

    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        self.state
            .add_program(SimProgram::new(1001, "Demo Webinar"));
        self.state
            .add_list(SimList::new(1, "Demo List").in_program("Demo Webinar"));
        self.state.add_campaign(
            SimCampaign::requestable(1, "Demo Follow-up").in_program(1001, "Demo Webinar"),
        );
        self.state.add_campaign(SimCampaign::batch(2, "Demo Batch"));
        for i in 0..50u64 {
            let n = seed.wrapping_mul(31).wrapping_add(i);
            let lead = ctx.store().create(
                "leads",
                fields(json!({
                    "email": format!("lead{n}@example.com"),
                    "firstName": format!("First{i}"),
                    "lastName": format!("Last{i}"),
                    "leadScore": (n % 100),
                    "leadSource": "Website",
                })),
            );
            if let Some(id) = int_id("leads", &lead.id)
                && i % 5 == 0
            {
                let status = if i % 10 == 0 {
                    "Attended"
                } else {
                    "Registered"
                };
                self.state
                    .set_program_member(1001, id, status, lead.created_at);
            }
        }
        for i in 0..10u64 {
            ctx.store().create(
                "companies",
                fields(json!({"externalCompanyId": format!("ext-co-{i}"), "company": format!("Company {i}")})),
            );
            ctx.store().create(
                "opportunities",
                fields(json!({"externalOpportunityId": format!("ext-opp-{i}"), "name": format!("Deal {i}"), "stage": "Prospecting", "amount": 1000 * (i + 1)})),
            );
        }
    }
}

fn fields(v: J) -> Fields {
    match v {
        J::Object(m) => m.into_iter().collect(),
        _ => Fields::new(),
    }
}

async fn concurrency(State(app): State<App>, req: Request, next: Next) -> Response {
    let now = app.st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    if now > app.cfg.max_in_flight {
        app.st.in_flight.fetch_sub(1, Ordering::SeqCst);
        app.st.refused_concurrency.fetch_add(1, Ordering::SeqCst);
        return error_body("615", "Concurrent access limit reached");
    }
    app.st.max_seen.fetch_max(now, Ordering::SeqCst);
    if !app.cfg.latency.is_zero() {
        tokio::time::sleep(app.cfg.latency).await;
    }
    let resp = next.run(req).await;
    app.st.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

async fn identity(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let id = q.get("client_id").cloned().unwrap_or_default();
    let secret = q.get("client_secret").cloned().unwrap_or_default();
    if q.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "grant_type must be client_credentials"})),
        )
            .into_response();
    }
    match app
        .ctx
        .auth()
        .grant(&TokenRequest::client_credentials(&id, &secret))
    {
        Ok(t) => Json(json!({
            "access_token": t.access_token,
            "token_type": "bearer",
            "expires_in": t.expires_in,
            "scope": "api-user@sim.example",
        }))
        .into_response(),
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized", "error_description": "Bad client credentials"})),
        )
            .into_response(),
    }
}

fn ok(result: J) -> Response {
    Json(json!({"requestId": "sim#1", "success": true, "result": result})).into_response()
}

fn object_of(path: &str) -> Option<ObjectKind> {
    match path.trim_end_matches(".json") {
        "leads" => Some(ObjectKind::Leads),
        "companies" => Some(ObjectKind::Companies),
        "opportunities" => Some(ObjectKind::Opportunities),
        _ => None,
    }
}

fn field_list(app: &App, object: ObjectKind) -> Vec<(String, String)> {
    let base: &[(&str, &str)] = match object {
        ObjectKind::Leads => &LEAD_FIELDS,
        ObjectKind::Companies => &COMPANY_FIELDS,
        _ => &OPPORTUNITY_FIELDS,
    };
    let mut out: Vec<(String, String)> = base
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    if object == ObjectKind::Leads {
        out.extend(app.cfg.extra_lead_fields.iter().cloned());
    }
    out
}

async fn describe_leads(State(app): State<App>) -> Response {
    let result: Vec<J> = field_list(&app, ObjectKind::Leads)
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            json!({
                "id": i + 1,
                "displayName": name,
                "dataType": ty,
                "length": if ty == "string" { Some(255) } else { None },
                "rest": {"name": name, "readOnly": matches!(name.as_str(), "id" | "createdAt" | "updatedAt")},
                "soap": {"name": name, "readOnly": matches!(name.as_str(), "id" | "createdAt" | "updatedAt")},
            })
        })
        .collect();
    ok(J::Array(result))
}

async fn describe_object(State(app): State<App>, Path(object): Path<String>) -> Response {
    let Some(kind) = object_of(&object).filter(|k| *k != ObjectKind::Leads) else {
        return error_body("610", "Requested resource not found");
    };
    let (name, dedupe) = match kind {
        ObjectKind::Companies => ("Company", "externalCompanyId"),
        _ => ("Opportunity", "externalOpportunityId"),
    };
    let id_field = kind.id_field();
    let fields: Vec<J> = field_list(&app, kind)
        .iter()
        .map(|(n, t)| {
            json!({
                "name": n, "displayName": n, "dataType": t,
                "updateable": !matches!(n.as_str(), "id" | "marketoGUID" | "createdAt" | "updatedAt") && n != dedupe,
            })
        })
        .collect();
    ok(json!([{
        "name": name,
        "description": format!("{name} object"),
        "createdAt": "2015-05-11T17:11:32Z",
        "updatedAt": "2015-05-11T17:11:32Z",
        "idField": id_field,
        "dedupeFields": [dedupe],
        "searchableFields": [[dedupe], ["id"], [id_field]],
        "fields": fields,
    }]))
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A stored record as Marketo returns it, limited to `wanted` (all when empty).
fn render(kind: ObjectKind, rec: &StoredRecord, wanted: &[String]) -> serde_json::Map<String, J> {
    let mut m = serde_json::Map::new();
    let id = match kind {
        ObjectKind::Opportunities => J::String(rec.id.to_string()),
        _ => int_id(kind.path(), &rec.id).map_or(J::Null, J::from),
    };
    m.insert(kind.id_field().to_owned(), id);
    let wants = |n: &str| wanted.is_empty() || wanted.iter().any(|w| w == n);
    for (k, v) in &rec.fields {
        if wants(k) && k != kind.id_field() {
            m.insert(k.clone(), v.clone());
        }
    }
    if wants("createdAt") {
        m.insert("createdAt".into(), J::String(iso(rec.created_at)));
    }
    if wants("updatedAt") {
        m.insert("updatedAt".into(), J::String(iso(rec.modified_at)));
    }
    m
}

fn text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => String::new(),
        other => other.to_string(),
    }
}

async fn query(
    State(app): State<App>,
    Path(object): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(kind) = object_of(&object) else {
        return error_body("610", "Requested resource not found");
    };
    let (Some(filter_type), Some(values)) = (q.get("filterType"), q.get("filterValues")) else {
        return error_body("1003", "filterType and filterValues are required");
    };
    let values: Vec<&str> = values.split(',').filter(|v| !v.is_empty()).collect();
    if values.len() > 300 {
        return error_body("1003", "Too many filter values (max 300)");
    }
    let batch: usize = q
        .get("batchSize")
        .and_then(|b| b.parse().ok())
        .unwrap_or(300);
    if batch == 0 || batch > 300 {
        return error_body("1003", "Invalid batchSize (1 to 300)");
    }
    let offset: usize = q
        .get("nextPageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let wanted: Vec<String> = q
        .get("fields")
        .map(|f| f.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let store = app.ctx.store();
    let matches: Vec<StoredRecord> = if filter_type == "id" || filter_type == kind.id_field() {
        let mut ids: Vec<u64> = Vec::new();
        let mut guids = Vec::new();
        for v in &values {
            match v.parse::<u64>() {
                Ok(n) if filter_type == "id" => ids.push(n),
                _ => guids.push((*v).to_owned()),
            }
        }
        let mut out: Vec<StoredRecord> = store
            .all(kind.path(), Deleted::Exclude)
            .into_iter()
            .filter(|r| {
                int_id(kind.path(), &r.id).is_some_and(|n| ids.contains(&n))
                    || guids.iter().any(|g| g == r.id.as_str())
            })
            .collect();
        out.sort_by_key(|r| int_id(kind.path(), &r.id));
        out
    } else {
        store
            .all(kind.path(), Deleted::Exclude)
            .into_iter()
            .filter(|r| {
                r.fields
                    .get(filter_type.as_str())
                    .is_some_and(|v| values.contains(&text(v).as_str()))
            })
            .collect()
    };
    let page: Vec<J> = matches
        .iter()
        .skip(offset)
        .take(batch)
        .map(|r| J::Object(render(kind, r, &wanted)))
        .collect();
    let mut body = json!({"requestId": "sim#2", "success": true, "result": page});
    if matches.len() > offset + batch {
        body["nextPageToken"] = J::String((offset + batch).to_string());
    }
    Json(body).into_response()
}

fn known_field(app: &App, kind: ObjectKind, name: &str) -> bool {
    field_list(app, kind).iter().any(|(n, _)| n == name)
}

fn skipped(seq: usize, code: &str, message: &str) -> SyncResult {
    SyncResult {
        seq: Some(seq),
        status: "skipped".into(),
        reasons: vec![ApiError {
            code: code.into(),
            message: message.into(),
        }],
        ..SyncResult::default()
    }
}

fn id_result(kind: ObjectKind, seq: usize, rec: &StoredRecord, status: &str) -> SyncResult {
    let mut r = SyncResult {
        seq: Some(seq),
        status: status.into(),
        ..SyncResult::default()
    };
    match kind {
        ObjectKind::Opportunities => r.marketo_guid = Some(rec.id.to_string()),
        _ => r.id = int_id(kind.path(), &rec.id).and_then(|n| i64::try_from(n).ok()),
    }
    r
}

async fn sync(
    State(app): State<App>,
    Path(object): Path<String>,
    faults: Option<Extension<RecordFaults>>,
    body: Bytes,
) -> Response {
    let Some(kind) = object_of(&object) else {
        return error_body("610", "Requested resource not found");
    };
    let (action, key, input) = if kind == ObjectKind::Leads {
        match serde_json::from_slice::<SyncLeadRequest>(&body) {
            Ok(r) => (
                r.action.unwrap_or(SyncAction::CreateOrUpdate),
                r.lookup_field.unwrap_or_else(|| "email".into()),
                r.input,
            ),
            Err(e) => return error_body("609", &format!("Invalid JSON: {e}")),
        }
    } else {
        match serde_json::from_slice::<SyncObjectRequest>(&body) {
            Ok(r) => {
                let key = if r.dedupe_by.as_deref() == Some("idField") {
                    kind.id_field().to_owned()
                } else {
                    kind.default_key().to_owned()
                };
                (r.action.unwrap_or(SyncAction::CreateOrUpdate), key, r.input)
            }
            Err(e) => return error_body("609", &format!("Invalid JSON: {e}")),
        }
    };
    if input.len() > 300 {
        return error_body("1003", "Too many records (max 300)");
    }
    let store = app.ctx.store();
    let mut results = Vec::with_capacity(input.len());
    for (seq, rec) in input.into_iter().enumerate() {
        if faults.as_ref().is_some_and(|Extension(f)| f.rejects(seq)) {
            results.push(skipped(seq, "611", "System error"));
            continue;
        }
        if let Some(bad) = rec
            .keys()
            .find(|k| !known_field(&app, kind, k) && *k != &key)
        {
            results.push(skipped(seq, "1006", &format!("Field '{bad}' not found")));
            continue;
        }
        if let Some(email) = rec.get("email").and_then(J::as_str)
            && !email.is_empty()
            && !email.contains('@')
        {
            results.push(skipped(seq, "1003", "Invalid email address"));
            continue;
        }
        let Some(key_value) = rec.get(&key).filter(|v| !v.is_null()).cloned() else {
            results.push(skipped(seq, "1003", &format!("Field '{key}' is required")));
            continue;
        };
        let existing = if key == "id" || key == kind.id_field() {
            store
                .all(kind.path(), Deleted::Exclude)
                .into_iter()
                .find(|r| {
                    int_id(kind.path(), &r.id).map(J::from) == Some(key_value.clone())
                        || r.id.as_str() == text(&key_value)
                })
        } else {
            store
                .all(kind.path(), Deleted::Exclude)
                .into_iter()
                .find(|r| r.fields.get(&key).map(text) == Some(text(&key_value)))
        };
        let mut fields: Fields = rec.into_iter().collect();
        fields.remove("id");
        if kind == ObjectKind::Opportunities {
            fields.remove("marketoGUID");
        }
        let label = match kind {
            ObjectKind::Leads => "Lead",
            ObjectKind::Companies => "Company",
            _ => "Opportunity",
        };
        match (existing, action) {
            (Some(_), SyncAction::CreateOnly) => {
                results.push(skipped(seq, "1005", &format!("{label} already exists")));
            }
            (None, SyncAction::UpdateOnly) => {
                results.push(skipped(seq, "1004", &format!("{label} not found")));
            }
            (Some(cur), _) => match store.update(kind.path(), &cur.id, fields) {
                Ok(r) => results.push(id_result(kind, seq, r.record(), "updated")),
                Err(e) => results.push(skipped(seq, "1003", &e.to_string())),
            },
            (None, _) => {
                let r = store.create(kind.path(), fields);
                results.push(id_result(kind, seq, &r, "created"));
            }
        }
    }
    if kind == ObjectKind::Leads {
        for r in &mut results {
            r.seq = None;
        }
    }
    ok(serde_json::to_value(results).unwrap_or(J::Null))
}

async fn delete_records(
    State(app): State<App>,
    Path(object): Path<String>,
    body: Bytes,
) -> Response {
    let Some(kind) = object_of(&object) else {
        return error_body("610", "Requested resource not found");
    };
    let req: DeleteRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_body("609", &format!("Invalid JSON: {e}")),
    };
    let store = app.ctx.store();
    let results: Vec<SyncResult> = req
        .input
        .iter()
        .enumerate()
        .map(|(seq, w)| {
            let wanted = w.get(kind.id_field()).map(text).unwrap_or_default();
            let found = store
                .all(kind.path(), Deleted::Exclude)
                .into_iter()
                .find(|r| {
                    r.id.as_str() == wanted
                        || int_id(kind.path(), &r.id).map(|n| n.to_string()) == Some(wanted.clone())
                });
            match found.and_then(|r| store.delete(kind.path(), &r.id).ok()) {
                Some(r) => id_result(kind, seq, &r, "deleted"),
                None => skipped(seq, "1013", "Record not found"),
            }
        })
        .collect();
    ok(serde_json::to_value(results).unwrap_or(J::Null))
}

/// Feed tokens: `(time in ns, id)` as hex, exact to the nanosecond.
fn encode_token(at: DateTime<Utc>, id: &str) -> String {
    let raw = format!("{}|{id}", at.timestamp_nanos_opt().unwrap_or(0));
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<ChangeKey> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let (ns, id) = raw.split_once('|')?;
    Some(ChangeKey {
        at: DateTime::from_timestamp_nanos(ns.parse().ok()?),
        id: RecordId::new(id),
    })
}

async fn paging_token(Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(since) = q
        .get("sinceDatetime")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return error_body("1001", "Invalid value for sinceDatetime");
    };
    Json(json!({
        "requestId": "sim#3",
        "success": true,
        "nextPageToken": encode_token(since.with_timezone(&Utc), ""),
    }))
    .into_response()
}

fn feed(app: &App, q: &HashMap<String, String>, deleted: Deleted) -> Response {
    let Some(token) = q.get("nextPageToken") else {
        return error_body("1003", "nextPageToken is required");
    };
    let Some(key) = decode_token(token) else {
        return error_body("1001", "Invalid value for nextPageToken");
    };
    let batch: usize = q
        .get("batchSize")
        .and_then(|b| b.parse().ok())
        .unwrap_or(300);
    if batch == 0 || batch > 300 {
        return error_body("1003", "Invalid batchSize (1 to 300)");
    }
    let wanted: Vec<String> = q
        .get("fields")
        .map(|f| f.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if deleted == Deleted::Exclude && wanted.is_empty() {
        return error_body("1003", "fields is required");
    }
    let page = app.ctx.store().changes(
        "leads",
        &ChangeQuery::new()
            .after(Some(key.clone()))
            .deleted(deleted)
            .limit(batch),
    );
    let result: Vec<J> = page
        .records
        .iter()
        .map(|r| {
            let n = int_id("leads", &r.id).unwrap_or(0);
            let (type_id, fields) = if deleted == Deleted::Only {
                (crate::wire::activity_type::DELETE_LEAD, Vec::new())
            } else {
                let fields: Vec<J> = wanted
                    .iter()
                    .filter_map(|f| {
                        r.fields
                            .get(f)
                            .map(|v| json!({"id": 1, "name": f, "newValue": text(v), "oldValue": J::Null}))
                    })
                    .collect();
                let t = if r.version == 1 {
                    crate::wire::activity_type::NEW_LEAD
                } else {
                    crate::wire::activity_type::CHANGE_DATA_VALUE
                };
                (t, fields)
            };
            let mut a = json!({
                "id": n * 1000 + r.version,
                "marketoGUID": format!("act-{n}-{}", r.version),
                "leadId": n,
                "activityDate": iso(r.changed_at()),
                "activityTypeId": type_id,
                "attributes": [],
            });
            // `LeadChange` carries the changed fields; a deletion (`Activity`) does not.
            if deleted != Deleted::Only {
                a["fields"] = J::Array(fields);
            }
            a
        })
        .collect();
    let next = page
        .last
        .as_ref()
        .map_or_else(|| token.clone(), |k| encode_token(k.at, k.id.as_str()));
    let mut body = json!({
        "requestId": "sim#4",
        "success": true,
        "nextPageToken": next,
        "moreResult": page.has_more,
    });
    if !result.is_empty() {
        body["result"] = J::Array(result);
    }
    Json(body).into_response()
}

async fn lead_changes(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    feed(&app, &q, Deleted::Exclude)
}

async fn deleted_leads(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    feed(&app, &q, Deleted::Only)
}

fn kind_of(kind: &str) -> Option<&'static str> {
    match kind {
        "leads" => Some("leads"),
        "activities" => Some("activities"),
        _ => None,
    }
}

fn job_json(id: &str, j: &Job) -> J {
    let mut v = serde_json::to_value(ExportJob {
        export_id: id.to_owned(),
        status: j.status.clone(),
        created_at: Some(j.created_at.clone()),
        format: Some("CSV".into()),
        ..ExportJob::default()
    })
    .unwrap_or(J::Null);
    if j.status == "Completed" {
        v["numberOfRecords"] = J::from(j.rows);
        v["fileSize"] = J::from(j.file.as_ref().map_or(0, |f| f.len()));
        v["finishedAt"] = J::String(iso(Utc::now()));
    }
    if j.status == "Failed" {
        v["errorMsg"] = J::String("Export failed in the simulator".into());
    }
    v
}

async fn export_create(State(app): State<App>, Path(kind): Path<String>, body: Bytes) -> Response {
    let Some(kind) = kind_of(&kind) else {
        return error_body("610", "Requested resource not found");
    };
    let req: ExportRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_body("609", &format!("Invalid JSON: {e}")),
    };
    let Some(range) = req
        .filter
        .created_at
        .as_ref()
        .or(req.filter.updated_at.as_ref())
    else {
        return error_body("1003", "A date range filter is required");
    };
    let (Ok(start), Ok(end)) = (
        DateTime::parse_from_rfc3339(&range.start_at),
        DateTime::parse_from_rfc3339(&range.end_at),
    ) else {
        return error_body("1003", "Invalid date in filter");
    };
    if end < start || end - start > chrono::TimeDelta::days(31) {
        return error_body("1003", "Date range must not exceed 31 days");
    }
    if app.st.export_bytes() >= app.cfg.export_daily_bytes {
        return error_body("1029", "Export daily quota exceeded");
    }
    let id = app.st.next_job.fetch_add(1, Ordering::SeqCst) + 1;
    let mut job = Job {
        kind,
        status: "Created".into(),
        request: req,
        file: None,
        rows: 0,
        polls_left: app.cfg.export_processing_polls,
        created_at: String::new(),
    };
    // The simulator's own time, in milliseconds (which may run ahead of the
    // caller's). The store stamps bursts of writes a millisecond apart, so
    // stamps can run ahead of its clock; Marketo's clock is never behind a
    // record it holds, so the job's time is at least the newest stamp.
    let newest = render_file(&app, &job).2;
    let now = app
        .ctx
        .store()
        .clock()
        .now()
        .max(newest.unwrap_or_default());
    job.created_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let v = job_json(&id.to_string(), &job);
    app.st
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.to_string(), job);
    ok(json!([v]))
}

fn csv_cell(v: Option<&J>) -> String {
    match v {
        None | Some(J::Null) => "null".into(),
        Some(J::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The file of `job`, its row count and the newest stamp the job filters on
/// among all records of the job's kind (in or out of its range).
fn render_file(app: &App, job: &Job) -> (Vec<u8>, u64, Option<DateTime<Utc>>) {
    let range = job
        .request
        .filter
        .created_at
        .as_ref()
        .map(|r| (r, true))
        .or(job.request.filter.updated_at.as_ref().map(|r| (r, false)));
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    };
    let (start, end, by_created) = match range {
        Some((r, c)) => (parse(&r.start_at), parse(&r.end_at), c),
        None => (None, None, true),
    };
    let in_range = |t: DateTime<Utc>| start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e);
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let mut rows = 0u64;
    let mut newest: Option<DateTime<Utc>> = None;
    if job.kind == "leads" {
        let columns = if job.request.fields.is_empty() {
            vec!["id".to_owned(), "email".to_owned()]
        } else {
            job.request.fields.clone()
        };
        let _ = w.write_record(&columns);
        let mut records = app.ctx.store().all("leads", Deleted::Exclude);
        records.sort_by_key(|r| int_id("leads", &r.id));
        for r in records {
            let t = if by_created {
                r.created_at
            } else {
                r.modified_at
            };
            newest = newest.max(Some(t));
            if !in_range(t) {
                continue;
            }
            let m = render(ObjectKind::Leads, &r, &columns);
            let _ = w.write_record(columns.iter().map(|c| csv_cell(m.get(c))));
            rows += 1;
        }
    } else {
        let columns = [
            "marketoGUID",
            "leadId",
            "activityDate",
            "activityTypeId",
            "campaignId",
            "primaryAttributeValueId",
            "primaryAttributeValue",
            "attributes",
        ];
        let _ = w.write_record(columns);
        for r in app.ctx.store().all("activities", Deleted::Exclude) {
            newest = newest.max(Some(r.created_at));
            if !in_range(r.created_at) {
                continue;
            }
            let row: Vec<String> = columns
                .iter()
                .map(|c| match *c {
                    "marketoGUID" => r.id.to_string(),
                    "activityDate" => r
                        .fields
                        .get("activityDate")
                        .map_or_else(|| iso(r.created_at), text),
                    "attributes" => r
                        .fields
                        .get("attributes")
                        .map_or("{}".into(), |v| v.to_string()),
                    other => csv_cell(r.fields.get(other)),
                })
                .collect();
            let _ = w.write_record(row);
            rows += 1;
        }
    }
    (w.into_inner().unwrap_or_default(), rows, newest)
}

fn with_job<T>(app: &App, id: &str, kind: &str, f: impl FnOnce(&mut Job) -> T) -> Option<T> {
    let mut jobs = app.st.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    jobs.get_mut(id).filter(|j| j.kind == kind).map(f)
}

async fn export_enqueue(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = kind_of(&kind) else {
        return error_body("610", "Requested resource not found");
    };
    let Some(job) = with_job(&app, &id, kind, |j| j.clone()) else {
        return error_body("1003", "Export job not found");
    };
    if job.status != "Created" {
        return error_body("1029", "Job already queued");
    }
    let (file, rows, _) = render_file(&app, &job);
    let failed = kind == "activities" && app.st.fail_activity_exports.load(Ordering::SeqCst);
    let v = with_job(&app, &id, kind, |j| {
        j.status = if failed {
            "Failed".into()
        } else {
            "Queued".into()
        };
        j.file = Some(Arc::new(file));
        j.rows = rows;
        job_json(&id, j)
    });
    ok(json!([v]))
}

async fn export_status(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = kind_of(&kind) else {
        return error_body("610", "Requested resource not found");
    };
    let quota = app.st.clone();
    let v = with_job(&app, &id, kind, |j| {
        if matches!(j.status.as_str(), "Queued" | "Processing") {
            if j.polls_left > 0 {
                j.polls_left -= 1;
                j.status = "Processing".into();
            } else {
                j.status = "Completed".into();
                let size = j.file.as_ref().map_or(0, |f| f.len() as u64);
                quota.export_bytes.fetch_add(size, Ordering::SeqCst);
            }
        }
        job_json(&id, j)
    });
    match v {
        Some(v) => ok(json!([v])),
        None => error_body("1003", "Export job not found"),
    }
}

async fn export_file(State(app): State<App>, Path((kind, id)): Path<(String, String)>) -> Response {
    let Some(kind) = kind_of(&kind) else {
        return error_body("610", "Requested resource not found");
    };
    let Some((status, file)) = with_job(&app, &id, kind, |j| (j.status.clone(), j.file.clone()))
    else {
        return error_body("1003", "Export job not found");
    };
    let (true, Some(file)) = (status == "Completed", file) else {
        return error_body("1003", "Export job is not completed");
    };
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..file.len().div_ceil(CHUNK)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(file.len());
        Ok::<_, std::io::Error>(Bytes::copy_from_slice(&file[i * CHUNK..end]))
    });
    let mut resp = Body::from_stream(futures_util::stream::iter(chunks)).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/csv"));
    resp
}
