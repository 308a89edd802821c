//! A stateful simulator of HubSpot's CRM v3 API (feature `sim`), on
//! `crm-sim`, answering on HubSpot's own paths:
//!
//! | route | what |
//! | --- | --- |
//! | `GET`/`POST /crm/v3/objects/{type}` | list (`limit` ≤ 100, `after`, `properties`, `archived`) and create |
//! | `GET /crm/v3/objects/{type}/{id}` | one record |
//! | `POST /crm/v3/objects/{type}/batch/{read,create,update,upsert,archive}` | batches of ≤ 100, `207 Multi-Status` with per-input errors (`objectWriteTraceId` echoed) |
//! | `POST /crm/v3/objects/{type}/search` | filterGroups (EQ, NEQ, GT, GTE, LT, LTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN; others 400), one sort, `limit` ≤ 200, 400 past 10,000 hits, optional index lag |
//! | `GET /crm/v3/properties/{type}` | property definitions, custom ones included |
//! | `GET /crm/v4/objects/{type}/{id}/associations/{toType}` | one record's associations (`after`, `limit` ≤ 500) |
//! | `POST /crm/v4/associations/{from}/{to}/batch/{read,create,archive}` | associations of many records (per-record `paging`), links with a type id, unlinks |
//! | `POST /crm/v4/associations/{from}/{to}/batch/associate/default` | links pairs with the default type |
//! | `GET /crm/v4/associations/{from}/{to}/labels` | the default association type |
//! | `POST /oauth/v1/token` | refresh-token and authorization-code grants (30-minute tokens; a refresh returns the refresh token too) |
//!
//! Data routes take a private-app token or an issued OAuth token, are rate
//! limited per rolling window and per day, and answer 429 with HubSpot's
//! body (`policyName` `TEN_SECONDLY_ROLLING` or `DAILY`). Admitted answers
//! other than searches (HubSpot sends none there) carry the
//! `X-HubSpot-RateLimit-*` headers; the daily ones can be turned off with
//! [`HubSpotSimConfig::daily_headers`]. [`sign_delivery`]
//! signs webhook deliveries with v3; [`send_webhook`] delivers signed event
//! batches over HTTP to the subscribers of the context's webhook sender
//! (duplicated when the fault plan says so).
//!
//! Record ids are plain decimal numbers, as HubSpot's are (`"1"`, `"2"`,
//! ...; v4 association create answers give them as integers).
//!
//! Associations live in the object store (see [`associations`]), both
//! directions of a pair with their default type ids.

pub mod associations;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::RecordId;
use crm_sim::auth::{AuthGuard, AuthMethod, OAuthClient, token_endpoint};
use crm_sim::store::{ChangeQuery, Deleted, Fields, StoredRecord};
use crm_sim::{
    RateLimited, RecordFaults, ResponseForm, SimContext, Simulator, Window, WindowStatus,
};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::mapping::{created_property, time_property};
use crate::source::parse_time_ms;
use crate::webhook::{HEADER_SIGNATURE_V3, HEADER_TIMESTAMP, sign_v3};
use crate::wire::{
    BatchError, BatchInput, BatchReadInput, BatchResponse, BatchStatus, CreateInput, Filter,
    HsObject, IdInput, ObjectId, Operator, Properties, Property, SearchRequest, SearchResult,
    SortDirection, UpdateInput, UpsertInput,
};

/// Settings of the simulator.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubSpotSimConfig {
    /// The private-app token accepted.
    pub private_app_token: String,
    /// The OAuth app's client id.
    pub client_id: String,
    /// The OAuth app's client secret (also the webhook signing secret).
    pub client_secret: String,
    /// A refresh token of an installed account.
    pub refresh_token: String,
    /// Access-token lifetime (HubSpot: 30 minutes).
    pub token_ttl: Duration,
    /// Requests per rolling window (`per_window`, `window`) and per day.
    pub per_window: u32,
    /// The rolling window's length (HubSpot: 10 seconds).
    pub window: Duration,
    /// Requests per day, if limited.
    pub daily: Option<u32>,
    /// Whether admitted answers carry `X-HubSpot-RateLimit-Daily` and
    /// `-Daily-Remaining` (default on). Off, a client cannot see the daily
    /// allowance run out and meets HubSpot's `DAILY` 429 itself, as it does
    /// when other apps of the account spend the shared daily allowance
    /// between two of its requests.
    pub daily_headers: bool,
    /// How long after a change a record becomes searchable.
    pub index_lag: Duration,
    /// Extra (custom) properties per object type.
    pub custom_properties: HashMap<String, Vec<Property>>,
    /// Associations per from-record in one v4 batch-read answer (more
    /// continue with that record's `paging.next.after`).
    pub association_page_size: usize,
}

impl Default for HubSpotSimConfig {
    fn default() -> Self {
        HubSpotSimConfig {
            private_app_token: "pat-na1-sim-token".into(),
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            refresh_token: "sim-refresh-token".into(),
            token_ttl: Duration::from_secs(1800),
            per_window: 100,
            window: Duration::from_secs(10),
            daily: Some(250_000),
            daily_headers: true,
            index_lag: Duration::ZERO,
            custom_properties: HashMap::new(),
            association_page_size: 500,
        }
    }
}

impl HubSpotSimConfig {
    /// Adds a custom property to `object`.
    #[must_use]
    pub fn custom_property(mut self, object: &str, p: Property) -> Self {
        self.custom_properties
            .entry(object.to_owned())
            .or_default()
            .push(p);
        self
    }
}

/// A text (or number) custom property definition, optionally unique.
pub fn custom_property(name: &str, kind: &str, unique: bool) -> Property {
    Property {
        name: name.into(),
        label: name.into(),
        group_name: "custom".into(),
        kind: kind.into(),
        field_type: if kind == "number" { "number" } else { "text" }.into(),
        has_unique_value: Some(unique),
        hubspot_defined: Some(false),
        ..Property::default()
    }
}

/// The HubSpot simulator.
#[derive(Clone, Debug, Default)]
pub struct HubSpotSimulator {
    config: HubSpotSimConfig,
}

impl HubSpotSimulator {
    /// A simulator with `config`.
    pub fn new(config: HubSpotSimConfig) -> Self {
        HubSpotSimulator { config }
    }

    /// The settings.
    pub fn config(&self) -> &HubSpotSimConfig {
        &self.config
    }
}

/// HubSpot's wording of 429s and its rate-limit headers.
#[derive(Clone, Copy, Debug)]
pub struct HubSpotForm {
    daily_headers: bool,
}

impl Default for HubSpotForm {
    fn default() -> Self {
        HubSpotForm {
            daily_headers: true,
        }
    }
}

impl HubSpotForm {
    /// Whether answers carry the daily headers (see
    /// [`HubSpotSimConfig::daily_headers`]).
    #[must_use]
    pub fn daily_headers(mut self, on: bool) -> Self {
        self.daily_headers = on;
        self
    }
}

impl ResponseForm for HubSpotForm {
    fn rate_limited(&self, l: &RateLimited) -> Response {
        let (policy, what) = if l.is_daily() {
            ("DAILY", "daily")
        } else {
            ("TEN_SECONDLY_ROLLING", "ten_secondly_rolling")
        };
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "status": "error",
                "message": format!("You have reached your {what} limit."),
                "errorType": "RATE_LIMIT",
                "correlationId": "00000000-0000-4000-8000-000000000429",
                "policyName": policy,
            })),
        )
            .into_response();
        let retry = HeaderValue::from_str(&l.retry_after_secs().max(1).to_string());
        if let (false, Ok(v)) = (l.is_daily(), retry) {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }

    fn rate_limit_headers(&self, status: &[WindowStatus], headers: &mut HeaderMap) {
        for s in status {
            let daily = s.period >= Duration::from_secs(86_400);
            if daily && !self.daily_headers {
                continue;
            }
            let pairs: Vec<(&'static str, String)> = if daily {
                vec![
                    ("x-hubspot-ratelimit-daily", s.limit.to_string()),
                    (
                        "x-hubspot-ratelimit-daily-remaining",
                        s.remaining.to_string(),
                    ),
                ]
            } else {
                vec![
                    ("x-hubspot-ratelimit-max", s.limit.to_string()),
                    ("x-hubspot-ratelimit-remaining", s.remaining.to_string()),
                    (
                        "x-hubspot-ratelimit-interval-milliseconds",
                        s.period.as_millis().to_string(),
                    ),
                ]
            };
            for (k, v) in pairs {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(k, v);
                }
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    ctx: SimContext,
    config: Arc<HubSpotSimConfig>,
}

impl Simulator for HubSpotSimulator {
    fn provider(&self) -> &'static str {
        "hubspot"
    }

    /// HubSpot's record ids: plain decimal numbers.
    fn id_generator(&self) -> Arc<dyn crm_sim::store::IdGenerator> {
        Arc::new(|_: &str, seq: u64| RecordId::new(seq.to_string()))
    }

    fn form(&self) -> Arc<dyn ResponseForm> {
        Arc::new(HubSpotForm::default().daily_headers(self.config.daily_headers))
    }

    fn setup(&self, ctx: &SimContext) {
        let auth = ctx.auth();
        auth.set_token_ttl(self.config.token_ttl);
        auth.register_client(OAuthClient::confidential(
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        ));
        auth.add_refresh_token(&self.config.client_id, &self.config.refresh_token);
        auth.add_static_token(&self.config.private_app_token);
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let state = AppState {
            ctx: ctx.clone(),
            config: Arc::new(self.config.clone()),
        };
        let guard = ctx.auth_guard(vec![AuthMethod::Bearer]);
        let mut windows = vec![Window::sliding(
            "ten_secondly_rolling",
            self.config.per_window,
            self.config.window,
        )];
        if let Some(d) = self.config.daily {
            windows.push(Window::daily(d));
        }
        let limiter = ctx.rate_limiter(windows);
        let data = Router::new()
            .route("/crm/v3/objects/{object}", get(list).post(create_one))
            .route("/crm/v3/objects/{object}/{id}", get(get_one))
            .route("/crm/v3/objects/{object}/batch/{op}", post(batch))
            .route("/crm/v3/objects/{object}/search", post(search))
            .route("/crm/v3/properties/{object}", get(properties))
            .route(
                "/crm/v4/objects/{object}/{id}/associations/{to}",
                get(associations::list),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/associate/default",
                post(associations::associate_default),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/batch/{op}",
                post(associations::batch),
            )
            .route(
                "/crm/v4/associations/{from}/{to}/labels",
                get(associations::labels),
            )
            .with_state(state)
            .layer(axum::middleware::from_fn_with_state(
                guard,
                AuthGuard::middleware,
            ))
            .layer(axum::middleware::from_fn_with_state(
                limiter,
                crm_sim::RateLimiter::middleware,
            ))
            .layer(axum::middleware::from_fn(search_without_rate_headers));
        Router::new()
            .route("/oauth/v1/token", post(token))
            .with_state(ctx.auth().clone())
            .merge(data)
    }

    fn credentials(&self, ctx: &SimContext) -> serde_json::Value {
        json!({
            "base_url": ctx.base_url(),
            "token_url": format!("{}/oauth/v1/token", ctx.base_url()),
            "private_app_token": self.config.private_app_token,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "refresh_token": self.config.refresh_token,
        })
    }
}

/// The token endpoint: `crm-sim`'s grants, answered as HubSpot does. A
/// refresh also returns the refresh token (HubSpot keeps it valid and
/// always sends `refresh_token`), so the field is never missing.
async fn token(
    State(auth): State<crm_sim::auth::AuthState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let sent = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.into_owned());
    let resp = token_endpoint(State(auth), headers, body).await;
    let Some(sent) = sent.filter(|_| resp.status() == StatusCode::OK) else {
        return resp;
    };
    let (mut parts, answer) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(answer, 64 * 1024).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "token answer unreadable",
        );
    };
    let out = match serde_json::from_slice::<Json_>(&bytes) {
        Ok(Json_::Object(mut m)) => {
            m.entry("refresh_token").or_insert(Json_::String(sent));
            serde_json::to_vec(&m).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// Search answers carry no `X-HubSpot-RateLimit-*` headers (search has its
/// own per-second limit, reported nowhere; see the bundled OpenAPI
/// description's `x-hubspot-rate-limits.search`), though searches still
/// count towards the rolling and daily limits.
async fn search_without_rate_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let search = req.uri().path().ends_with("/search");
    let mut resp = next.run(req).await;
    if search {
        let names: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-hubspot-ratelimit-"))
            .cloned()
            .collect();
        for k in names {
            resp.headers_mut().remove(k);
        }
    }
    resp
}

/// Signs a webhook delivery the way HubSpot does (v3): the headers to send
/// with `body` to `uri`, stamped `timestamp_ms`.
pub fn sign_delivery(
    secret: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> Vec<(String, String)> {
    let ts = timestamp_ms.to_string();
    vec![
        ("content-type".into(), "application/json".into()),
        (
            HEADER_SIGNATURE_V3.into(),
            sign_v3(secret, "POST", uri, body, &ts),
        ),
        (HEADER_TIMESTAMP.into(), ts),
    ]
}

/// Delivers one batch of webhook events the way HubSpot does: a `POST` of
/// the JSON array to every subscriber of the context's webhook sender,
/// signed with v3 for that subscriber's URL and stamped with the current
/// wall-clock time (receivers check it against their own clock). The fault
/// plan's `duplicate_webhook` rules repeat a delivery.
///
/// # Cancel safety
/// Dropping the future may leave some subscribers without the events.
pub async fn send_webhook(
    ctx: &SimContext,
    secret: &str,
    events: &[crate::wire::WebhookEvent],
) -> Vec<crm_sim::webhook::Delivery> {
    let body = match serde_json::to_vec(events) {
        Ok(b) => b,
        // Serialising plain structs cannot fail; send nothing if it did.
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for url in ctx.webhooks().subscribers() {
        let headers = sign_delivery(secret, &url, &body, Utc::now().timestamp_millis());
        out.extend(ctx.webhooks().send(&url, &headers, &body).await);
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error(status: StatusCode, category: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "status": "error",
            "message": message.into(),
            "correlationId": "00000000-0000-4000-8000-000000000000",
            "category": category,
        })),
    )
        .into_response()
}

fn default_properties(object: &str) -> Vec<Property> {
    let p = |name: &str, kind: &str, field_type: &str, read_only: bool| Property {
        name: name.into(),
        label: name.into(),
        group_name: format!("{object}information"),
        kind: kind.into(),
        field_type: field_type.into(),
        hubspot_defined: Some(true),
        has_unique_value: Some(false),
        modification_metadata: Some(crate::wire::ModificationMetadata {
            archivable: !read_only,
            read_only_definition: true,
            read_only_value: read_only,
        }),
        ..Property::default()
    };
    let mut v = vec![
        p("hs_object_id", "number", "number", true),
        p(created_property(object), "datetime", "date", true),
        p(time_property(object), "datetime", "date", true),
    ];
    let own: &[(&str, &str, &str)] = match object {
        "contacts" => &[
            ("email", "string", "text"),
            ("firstname", "string", "text"),
            ("lastname", "string", "text"),
            ("phone", "string", "phonenumber"),
            ("company", "string", "text"),
            ("jobtitle", "string", "text"),
            ("lifecyclestage", "enumeration", "radio"),
            ("hs_lead_score", "number", "number"),
        ],
        "companies" => &[
            ("name", "string", "text"),
            ("domain", "string", "text"),
            ("numberofemployees", "number", "number"),
        ],
        "deals" => &[
            ("dealname", "string", "text"),
            ("dealstage", "enumeration", "radio"),
            ("amount", "number", "number"),
            ("closedate", "datetime", "date"),
        ],
        "notes" => &[
            ("hs_note_body", "string", "html"),
            ("hs_timestamp", "datetime", "date"),
        ],
        "tasks" => &[
            ("hs_task_subject", "string", "text"),
            ("hs_timestamp", "datetime", "date"),
        ],
        _ => &[],
    };
    for (n, k, f) in own {
        let mut prop = p(n, k, f, false);
        if object == "contacts" && *n == "email" {
            prop.has_unique_value = Some(true);
        }
        v.push(prop);
    }
    v
}

impl AppState {
    fn properties(&self, object: &str) -> Vec<Property> {
        let mut v = default_properties(object);
        if let Some(extra) = self.config.custom_properties.get(object) {
            v.extend(extra.iter().cloned());
        }
        v
    }

    fn known(object: &str) -> bool {
        matches!(
            object,
            "contacts" | "companies" | "deals" | "notes" | "tasks"
        )
    }

    /// A property's value as text, system properties included.
    fn value(object: &str, r: &StoredRecord, name: &str) -> Option<String> {
        if name == "hs_object_id" {
            return Some(r.id.to_string());
        }
        if name == created_property(object) {
            return Some(ts(r.created_at));
        }
        if name == time_property(object) {
            return Some(ts(r.modified_at));
        }
        match r.fields.get(name)? {
            Json_::Null => None,
            Json_::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn to_wire(object: &str, r: &StoredRecord, props: &[String]) -> HsObject {
        let mut properties = Properties::new();
        let defaults = [
            "hs_object_id",
            created_property(object),
            time_property(object),
        ];
        let names: Vec<&str> = if props.is_empty() {
            defaults
                .iter()
                .copied()
                .chain(
                    ["email", "firstname", "lastname"]
                        .into_iter()
                        .filter(|_| object == "contacts"),
                )
                .collect()
        } else {
            props.iter().map(String::as_str).collect()
        };
        for n in names {
            properties.insert(n.to_owned(), Self::value(object, r, n));
        }
        HsObject {
            id: ObjectId::new(r.id.as_str()),
            properties,
            created_at: Some(r.created_at),
            updated_at: Some(r.modified_at),
            archived: r.is_deleted(),
            archived_at: r.deleted_at,
            associations: None,
            object_write_trace_id: None,
            new: None,
        }
    }

    /// Checks written values against the property definitions.
    fn validate(
        &self,
        object: &str,
        props: &crate::wire::WriteProperties,
    ) -> Result<Fields, String> {
        let defs = self.properties(object);
        let mut fields = Fields::new();
        for (name, value) in props {
            let Some(def) = defs.iter().find(|d| &d.name == name) else {
                return Err(format!("Property \"{name}\" does not exist"));
            };
            if def
                .modification_metadata
                .as_ref()
                .is_some_and(|m| m.read_only_value)
            {
                return Err(format!("Property \"{name}\" is read-only"));
            }
            if name == "email" && !value.is_empty() {
                let ok = value
                    .split_once('@')
                    .is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.contains('@'));
                if !ok {
                    return Err(format!("Email address {value} is invalid"));
                }
            }
            if def.kind == "number" && !value.is_empty() && value.parse::<f64>().is_err() {
                return Err(format!("{value} was not a valid number for {name}"));
            }
            let v = if name == "email" {
                value.trim().to_lowercase()
            } else {
                value.clone()
            };
            fields.insert(name.clone(), Json_::String(v));
        }
        Ok(fields)
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
    properties: Option<String>,
    #[serde(default)]
    archived: bool,
}

fn split_props(p: Option<&str>) -> Vec<String> {
    p.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

async fn list(
    State(st): State<AppState>,
    Path(object): Path<String>,
    Query(p): Query<ListParams>,
) -> Response {
    if !AppState::known(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Unable to infer object type from: {object}"),
        );
    }
    let limit = p.limit.unwrap_or(10).clamp(1, 100);
    let after: u64 = match p.after.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after is not a valid cursor",
            );
        }
    };
    let props = split_props(p.properties.as_deref());
    let mut rows: Vec<StoredRecord> = st
        .ctx
        .store()
        .all(
            &object,
            if p.archived {
                Deleted::Only
            } else {
                Deleted::Exclude
            },
        )
        .into_iter()
        .filter(|r| r.id.as_str().parse::<u64>().is_ok_and(|n| n > after))
        .collect();
    rows.sort_by_key(|r| r.id.as_str().parse::<u64>().unwrap_or(0));
    let more = rows.len() > limit;
    rows.truncate(limit);
    let results: Vec<HsObject> = rows
        .iter()
        .map(|r| AppState::to_wire(&object, r, &props))
        .collect();
    let mut body = json!({"results": results});
    if let (true, Some(last)) = (more, rows.last()) {
        body["paging"] =
            json!({"next": {"after": last.id.as_str(), "link": format!("?after={}", last.id)}});
    }
    Json(body).into_response()
}

async fn get_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> Response {
    let props = split_props(p.properties.as_deref());
    match st.ctx.store().get_live(&object, &RecordId::new(id.clone())) {
        Some(r) => Json(AppState::to_wire(&object, &r, &props)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Object not found.  objectId are usually numeric. {id}"),
        ),
    }
}

async fn create_one(
    State(st): State<AppState>,
    Path(object): Path<String>,
    body: Result<Json<CreateInput>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(input)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON",
        );
    };
    match st.validate(&object, &input.properties) {
        Ok(fields) => {
            let r = st.ctx.store().create(&object, fields);
            let names: Vec<String> = input.properties.keys().cloned().collect();
            (
                StatusCode::CREATED,
                Json(AppState::to_wire(&object, &r, &names)),
            )
                .into_response()
        }
        Err(m) => error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m),
    }
}

fn batch_error(
    category: &str,
    message: String,
    trace: Option<String>,
    ids: Vec<String>,
) -> BatchError {
    BatchError {
        status: "error".into(),
        category: category.into(),
        message,
        context: [("ids".to_owned(), ids)].into_iter().collect(),
        object_write_trace_id: trace,
        ..BatchError::default()
    }
}

fn batch_answer(
    ok_status: StatusCode,
    results: Vec<HsObject>,
    errors: Vec<BatchError>,
) -> Response {
    let now = Utc::now();
    let status = if errors.is_empty() {
        ok_status
    } else {
        StatusCode::MULTI_STATUS
    };
    let body = BatchResponse {
        status: BatchStatus::Complete,
        results,
        requested_at: Some(now),
        started_at: Some(now),
        completed_at: Some(now),
        num_errors: if errors.is_empty() {
            None
        } else {
            u32::try_from(errors.len()).ok()
        },
        errors,
    };
    (status, Json(body)).into_response()
}

async fn batch(
    State(st): State<AppState>,
    Path((object, op)): Path<(String, String)>,
    faults: Option<Extension<RecordFaults>>,
    body: String,
) -> Response {
    if !AppState::known(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Unable to infer object type from: {object}"),
        );
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m.to_owned());
    let store = st.ctx.store();
    let rejects = |i: usize| faults.as_ref().is_some_and(|f| f.rejects(i));
    match op.as_str() {
        "read" => {
            let Ok(input) = serde_json::from_str::<BatchReadInput>(&body) else {
                return bad("Invalid input JSON");
            };
            if input.inputs.len() > 100 {
                return bad("Batch input limit is 100");
            }
            let mut results = Vec::new();
            let mut missing = Vec::new();
            for IdInput { id } in input.inputs {
                let found = match &input.id_property {
                    Some(p) => {
                        let v = if p == "email" {
                            id.trim().to_lowercase()
                        } else {
                            id.clone()
                        };
                        store
                            .find_by(&object, p, &Json_::String(v))
                            .into_iter()
                            .find(|r| !r.is_deleted())
                    }
                    None => store.get_live(&object, &RecordId::new(id.clone())),
                };
                match found {
                    Some(r) => results.push(AppState::to_wire(&object, &r, &input.properties)),
                    None => missing.push(id),
                }
            }
            let errors = if missing.is_empty() {
                Vec::new()
            } else {
                vec![batch_error(
                    "OBJECT_NOT_FOUND",
                    "Could not get some objects, they may be deleted or not exist.".into(),
                    None,
                    missing,
                )]
            };
            batch_answer(StatusCode::OK, results, errors)
        }
        "create" | "update" | "upsert" => {
            let inputs: Vec<(
                String,
                Option<String>,
                crate::wire::WriteProperties,
                Option<String>,
            )> = match op.as_str() {
                "create" => match serde_json::from_str::<BatchInput<CreateInput>>(&body) {
                    Ok(b) => b
                        .inputs
                        .into_iter()
                        .map(|i| (String::new(), None, i.properties, i.object_write_trace_id))
                        .collect(),
                    Err(_) => return bad("Invalid input JSON"),
                },
                "update" => match serde_json::from_str::<BatchInput<UpdateInput>>(&body) {
                    Ok(b) => b
                        .inputs
                        .into_iter()
                        .map(|i| (i.id, i.id_property, i.properties, i.object_write_trace_id))
                        .collect(),
                    Err(_) => return bad("Invalid input JSON"),
                },
                _ => match serde_json::from_str::<BatchInput<UpsertInput>>(&body) {
                    Ok(b) => b
                        .inputs
                        .into_iter()
                        .map(|i| {
                            (
                                i.id,
                                Some(i.id_property),
                                i.properties,
                                i.object_write_trace_id,
                            )
                        })
                        .collect(),
                    Err(_) => return bad("Invalid input JSON"),
                },
            };
            if inputs.len() > 100 {
                return bad("Batch input limit is 100");
            }
            let defs = st.properties(&object);
            let mut results = Vec::new();
            let mut errors = Vec::new();
            for (i, (id, id_property, props, trace)) in inputs.into_iter().enumerate() {
                let names: Vec<String> = props.keys().cloned().collect();
                let mut fields = match st.validate(&object, &props) {
                    Ok(f) => f,
                    Err(m) => {
                        errors.push(batch_error("VALIDATION_ERROR", m, trace, vec![id]));
                        continue;
                    }
                };
                if rejects(i) {
                    errors.push(batch_error(
                        "INTERNAL_ERROR",
                        "Temporarily unavailable; try again".into(),
                        trace,
                        vec![id],
                    ));
                    continue;
                }
                let written = match op.as_str() {
                    "create" => Ok((store.create(&object, fields), true)),
                    "update" => store
                        .update(&object, &RecordId::new(id.clone()), fields)
                        .map(|w| (w.into_record(), false))
                        .map_err(|e| e.to_string()),
                    _ => {
                        let key = id_property.unwrap_or_default();
                        let unique = defs
                            .iter()
                            .any(|d| d.name == key && d.has_unique_value == Some(true));
                        if !unique {
                            errors.push(batch_error(
                                "VALIDATION_ERROR",
                                format!("{key} is not a unique property"),
                                trace,
                                vec![id],
                            ));
                            continue;
                        }
                        let v = if key == "email" {
                            id.trim().to_lowercase()
                        } else {
                            id.clone()
                        };
                        fields.insert(key.clone(), Json_::String(v));
                        store
                            .upsert_by(&object, &key, fields)
                            .map(|w| {
                                (
                                    w.record().clone(),
                                    matches!(w, crm_sim::store::WriteResult::Created(_)),
                                )
                            })
                            .map_err(|e| e.to_string())
                    }
                };
                match written {
                    Ok((r, new)) => {
                        let mut o = AppState::to_wire(&object, &r, &names);
                        o.object_write_trace_id = trace;
                        if op == "upsert" {
                            o.new = Some(new);
                        }
                        results.push(o);
                    }
                    Err(m) => errors.push(batch_error("OBJECT_NOT_FOUND", m, trace, vec![id])),
                }
            }
            let ok = if op == "create" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            batch_answer(ok, results, errors)
        }
        "archive" => {
            let Ok(input) = serde_json::from_str::<BatchInput<IdInput>>(&body) else {
                return bad("Invalid input JSON");
            };
            if input.inputs.len() > 100 {
                return bad("Batch input limit is 100");
            }
            for IdInput { id } in input.inputs {
                // Unknown ids are ignored, as HubSpot does.
                let _ = store.delete(&object, &RecordId::new(id));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("no batch operation {op}"),
        ),
    }
}

/// A value parsed once for comparing: numbers compare as numbers, else
/// times as times, else text case-insensitively.
struct SortKey {
    number: Option<f64>,
    time: Option<i64>,
    /// Lower-cased text; `None` for a system time, whose text is derived
    /// from `time` when needed (formatting every stamp is slow).
    text: Option<String>,
}

impl SortKey {
    fn new(v: &str) -> Self {
        SortKey {
            number: v.parse::<f64>().ok(),
            time: parse_time_ms(v),
            text: Some(v.to_lowercase()),
        }
    }

    fn of_time(t: DateTime<Utc>) -> Self {
        SortKey {
            number: None,
            time: Some(t.timestamp_millis()),
            text: None,
        }
    }

    /// A record's value of `name`, system properties included.
    fn of(object: &str, r: &StoredRecord, name: &str) -> Option<Self> {
        if name == created_property(object) {
            return Some(Self::of_time(r.created_at));
        }
        if name == time_property(object) {
            return Some(Self::of_time(r.modified_at));
        }
        AppState::value(object, r, name).map(|v| Self::new(&v))
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match &self.text {
            Some(t) => std::borrow::Cow::Borrowed(t),
            None => std::borrow::Cow::Owned(
                self.time
                    .and_then(DateTime::from_timestamp_millis)
                    .map(|d| ts(d).to_lowercase())
                    .unwrap_or_default(),
            ),
        }
    }

    fn is_empty(&self) -> bool {
        self.text.as_deref() == Some("")
    }

    fn cmp_to(&self, other: &SortKey) -> std::cmp::Ordering {
        if let (Some(x), Some(y)) = (self.number, other.number) {
            return x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
        }
        match (self.time, other.time) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => self.text().cmp(&other.text()),
        }
    }
}

/// A filter with its comparison values parsed once per search.
struct Prepared<'a> {
    filter: &'a Filter,
    want: SortKey,
    high: SortKey,
    values: Vec<SortKey>,
}

impl<'a> Prepared<'a> {
    /// The filter ready to apply, or the 400 message for an operator the
    /// simulator does not know.
    fn new(filter: &'a Filter) -> Result<Self, String> {
        if let Operator::Unknown(op) = &filter.operator {
            return Err(format!("operator {op} is not supported"));
        }
        Ok(Prepared {
            filter,
            want: SortKey::new(filter.value.as_deref().unwrap_or("")),
            high: SortKey::new(filter.high_value.as_deref().unwrap_or("")),
            values: filter
                .values
                .iter()
                .flatten()
                .map(|v| SortKey::new(v))
                .collect(),
        })
    }

    fn matches(&self, object: &str, r: &StoredRecord) -> bool {
        use std::cmp::Ordering::*;
        let v = SortKey::of(object, r, &self.filter.property_name);
        let cmp = |w: &SortKey| v.as_ref().map(|x| x.cmp_to(w));
        match &self.filter.operator {
            Operator::HasProperty => v.as_ref().is_some_and(|x| !x.is_empty()),
            Operator::NotHasProperty => v.as_ref().is_none_or(SortKey::is_empty),
            Operator::Eq => cmp(&self.want) == Some(Equal),
            Operator::Neq => cmp(&self.want) != Some(Equal),
            Operator::Gt => cmp(&self.want) == Some(Greater),
            Operator::Gte => matches!(cmp(&self.want), Some(Greater | Equal)),
            Operator::Lt => cmp(&self.want) == Some(Less),
            Operator::Lte => matches!(cmp(&self.want), Some(Less | Equal)),
            Operator::Between => {
                matches!(cmp(&self.want), Some(Greater | Equal))
                    && matches!(cmp(&self.high), Some(Less | Equal))
            }
            Operator::In => self.values.iter().any(|w| cmp(w) == Some(Equal)),
            Operator::NotIn => !self.values.iter().any(|w| cmp(w) == Some(Equal)),
            Operator::ContainsToken | Operator::NotContainsToken => {
                let pat = self.want.text();
                let hit = v.as_ref().is_some_and(|x| {
                    let x = x.text();
                    match (pat.strip_prefix('*'), pat.strip_suffix('*')) {
                        (Some(suffix), _) => x.ends_with(suffix),
                        (_, Some(prefix)) => x.starts_with(prefix),
                        _ => {
                            x.split(|c: char| !c.is_alphanumeric()).any(|t| t == pat) || *x == *pat
                        }
                    }
                });
                hit == (self.filter.operator == Operator::ContainsToken)
            }
            // Refused by `new`.
            Operator::Unknown(_) => false,
        }
    }
}

/// The earliest modification time any hit can have, when every filter
/// group bounds it from below (so the store is read from there on).
fn modified_floor(object: &str, groups: &[crate::wire::FilterGroup]) -> Option<DateTime<Utc>> {
    let tp = time_property(object);
    let mut floor: Option<i64> = None;
    for g in groups {
        let bound = g
            .filters
            .iter()
            .filter(|f| f.property_name == tp)
            .filter(|f| {
                matches!(
                    f.operator,
                    Operator::Gte | Operator::Gt | Operator::Eq | Operator::Between
                )
            })
            .filter_map(|f| f.value.as_deref().and_then(parse_time_ms))
            .max()?;
        floor = Some(floor.map_or(bound, |x| x.min(bound)));
    }
    floor.and_then(DateTime::from_timestamp_millis)
}

async fn search(
    State(st): State<AppState>,
    Path(object): Path<String>,
    body: Result<Json<SearchRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON",
        );
    };
    if !AppState::known(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Unable to infer object type from: {object}"),
        );
    }
    let limit = req.limit.unwrap_or(10) as usize;
    if !(1..=200).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 200",
        );
    }
    let total_filters: usize = req.filter_groups.iter().map(|g| g.filters.len()).sum();
    if req.filter_groups.len() > 5
        || total_filters > 25
        || req.filter_groups.iter().any(|g| g.filters.len() > 10)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "too many filters",
        );
    }
    let offset: usize = match req.after.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "after must be a number",
            );
        }
    };
    // HubSpot caps paging through one query at 10,000 hits.
    if offset + limit > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "There was a problem with the request. (paging past 10,000 results is not allowed)",
        );
    }
    let mut groups: Vec<Vec<Prepared<'_>>> = Vec::new();
    for g in &req.filter_groups {
        match g.filters.iter().map(Prepared::new).collect() {
            Ok(p) => groups.push(p),
            Err(m) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m),
        }
    }
    let now = st.ctx.clock().now();
    let lag = chrono::Duration::from_std(st.config.index_lag).unwrap_or_default();
    let candidates = st
        .ctx
        .store()
        .changes(
            &object,
            &ChangeQuery::new()
                .deleted(Deleted::Exclude)
                .since(modified_floor(&object, &req.filter_groups)),
        )
        .records;
    let hits: Vec<StoredRecord> = candidates
        .into_iter()
        // Not indexed yet.
        .filter(|r| lag <= chrono::Duration::zero() || r.modified_at + lag <= now)
        .filter(|r| {
            groups.is_empty()
                || groups
                    .iter()
                    .any(|g| g.iter().all(|p| p.matches(&object, r)))
        })
        .collect();
    let (sort_prop, dir) = req
        .sorts
        .first()
        .map(|s| {
            let (p, d) = s.parts();
            (p.to_owned(), d)
        })
        .unwrap_or_else(|| {
            (
                created_property(&object).to_owned(),
                SortDirection::Ascending,
            )
        });
    // Each hit's sort value parsed once, not once per comparison.
    let mut keyed: Vec<(SortKey, StoredRecord)> = hits
        .into_iter()
        .map(|r| {
            let k = SortKey::of(&object, &r, &sort_prop).unwrap_or_else(|| SortKey::new(""));
            (k, r)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        let o = a.cmp_to(b);
        if dir == SortDirection::Descending {
            o.reverse()
        } else {
            o
        }
    });
    let hits: Vec<StoredRecord> = keyed.into_iter().map(|(_, r)| r).collect();
    let total = hits.len();
    let page: Vec<HsObject> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| AppState::to_wire(&object, r, &req.properties))
        .collect();
    let next = offset + page.len();
    let mut body = serde_json::to_value(SearchResult {
        total: total as u64,
        results: page,
        paging: None,
    })
    .unwrap_or_default();
    if next < total {
        body["paging"] = json!({"next": {"after": next.to_string()}});
    }
    Json(body).into_response()
}

async fn properties(State(st): State<AppState>, Path(object): Path<String>) -> Response {
    if !AppState::known(&object) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Unable to infer object type from: {object}"),
        );
    }
    Json(json!({"results": st.properties(&object)})).into_response()
}
