//! A stateful simulator of Pipedrive's API (feature `sim`), on `crm-sim`,
//! answering on Pipedrive's own paths with its envelope
//! (`success`, `data`, `additional_data`) and error shape
//! (`success: false`, `error`, `error_info`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET`/`POST /api/v2/{persons,organizations,deals,activities}` | list (`cursor`, `limit` ≤ 500, `updated_since`, `updated_until`, `sort_by`, `sort_direction`, `ids`, deal `status` incl. `deleted`) and create |
//! | `GET`/`PATCH`/`DELETE /api/v2/{object}/{id}` | one record |
//! | `GET /api/v2/{persons,organizations,deals}/search` | `term`, `fields`, `exact_match` |
//! | `GET`/`POST /api/v1/{notes,leads}`, `GET`/`PUT`(notes)/`PATCH`(leads)/`DELETE …/{id}` | v1 objects with `start`/`limit` |
//! | `GET /api/v1/{personFields,organizationFields,dealFields}` | field definitions; custom fields keyed by 40-character hashes |
//! | `GET /api/v1/recents` | changes since `since_timestamp`, deleted records with `active_flag: false` |
//! | `GET /api/v2/pipelines`, `/api/v2/stages` | one pipeline and its stages |
//! | `POST /oauth/token` | refresh-token and authorization-code grants |
//!
//! Data routes take the API token (`x-api-token` header or `api_token`
//! query) or an issued OAuth token, are limited per window and per day
//! (429 `Request over limit` with `Retry-After`; a spent day answers
//! `x-daily-requests-left: 0`), and admitted answers carry
//! `x-ratelimit-limit` / `-remaining` / `-reset` and `x-daily-requests-left`.
//! Records are stored with custom fields under their hash keys, so tests can
//! check where a write landed. [`PipedriveSimulator::send_webhook`] delivers
//! v1 events with HTTP basic auth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::RecordId;
use crm_sim::auth::{AuthFailure, AuthGuard, AuthMethod, OAuthClient, token_endpoint};
use crm_sim::store::{Deleted, Fields, StoredRecord};
use crm_sim::{RateLimited, ResponseForm, SimContext, Simulator, Window, WindowStatus};
use serde_json::{Map, Value as J, json};
use sha2::Digest;

use crate::ObjectKind;
use crate::mapping::{json_text, parse_time, standard_fields};
use crate::wire::{Field, FieldOption};

/// A custom field the simulator offers.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SimField {
    /// The object.
    pub object: ObjectKind,
    /// The name shown.
    pub name: String,
    /// `varchar`, `double`, `enum`, `set`, ...
    pub field_type: String,
    /// Option labels of `enum`/`set` fields (ids 1, 2, ... in order).
    pub options: Vec<String>,
}

impl SimField {
    /// A custom field.
    pub fn new(object: ObjectKind, name: &str, field_type: &str, options: &[&str]) -> Self {
        SimField {
            object,
            name: name.into(),
            field_type: field_type.into(),
            options: options.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The 40-character key the simulator gives a custom field.
pub fn field_key(object: ObjectKind, name: &str) -> String {
    let d = sha2::Sha256::digest(format!("{}:{name}", object.as_str()).as_bytes());
    d.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Settings of the simulator.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PipedriveSimConfig {
    /// The API token accepted.
    pub api_token: String,
    /// The OAuth app's client id.
    pub client_id: String,
    /// The OAuth app's client secret.
    pub client_secret: String,
    /// A refresh token of an installed app.
    pub refresh_token: String,
    /// Access-token lifetime (Pipedrive: an hour).
    pub token_ttl: Duration,
    /// Requests per window.
    pub per_window: u32,
    /// The window (Pipedrive: 2 seconds).
    pub window: Duration,
    /// Requests per day, if limited.
    pub daily: Option<u32>,
    /// Custom fields.
    pub custom_fields: Vec<SimField>,
    /// Basic-auth user sent with webhooks.
    pub webhook_user: String,
    /// Basic-auth password sent with webhooks.
    pub webhook_password: String,
}

impl Default for PipedriveSimConfig {
    fn default() -> Self {
        PipedriveSimConfig {
            api_token: "sim-api-token-0123456789".into(),
            client_id: "sim-client-id".into(),
            client_secret: "sim-client-secret".into(),
            refresh_token: "sim-refresh-token".into(),
            token_ttl: Duration::from_secs(3600),
            per_window: 80,
            window: Duration::from_secs(2),
            daily: Some(10_000),
            custom_fields: vec![
                SimField::new(
                    ObjectKind::Persons,
                    "Social Engagement Score",
                    "double",
                    &[],
                ),
                SimField::new(
                    ObjectKind::Persons,
                    "Primary Social Platform",
                    "varchar",
                    &[],
                ),
                SimField::new(ObjectKind::Persons, "Social Profile URL", "varchar", &[]),
            ],
            webhook_user: "sim-hook".into(),
            webhook_password: "sim-hook-password".into(),
        }
    }
}

impl PipedriveSimConfig {
    /// Adds a custom field.
    #[must_use]
    pub fn custom_field(mut self, f: SimField) -> Self {
        self.custom_fields.push(f);
        self
    }
}

/// The Pipedrive simulator; clones share their field definitions, so a test
/// keeping a clone can rename fields while the server runs.
#[derive(Clone, Debug)]
pub struct PipedriveSimulator {
    config: Arc<PipedriveSimConfig>,
    fields: Arc<Mutex<Vec<(ObjectKind, Field)>>>,
}

impl Default for PipedriveSimulator {
    fn default() -> Self {
        PipedriveSimulator::new(PipedriveSimConfig::default())
    }
}

fn standard_defs(kind: ObjectKind) -> Vec<Field> {
    let mut v = vec![("id", "int"), ("add_time", "date"), ("update_time", "date")];
    let own: &[(&str, &str)] = match kind {
        ObjectKind::Persons => &[
            ("name", "varchar"),
            ("first_name", "varchar"),
            ("last_name", "varchar"),
            ("email", "varchar"),
            ("phone", "phone"),
            ("org_id", "org"),
            ("owner_id", "user"),
            ("visible_to", "visible_to"),
        ],
        ObjectKind::Organizations => &[
            ("name", "varchar"),
            ("address", "address"),
            ("owner_id", "user"),
            ("visible_to", "visible_to"),
        ],
        ObjectKind::Deals => &[
            ("title", "varchar"),
            ("value", "monetary"),
            ("currency", "varchar"),
            ("status", "status"),
            ("stage_id", "stage"),
            ("pipeline_id", "int"),
            ("person_id", "people"),
            ("org_id", "org"),
            ("probability", "double"),
            ("expected_close_date", "date"),
            ("owner_id", "user"),
        ],
        _ => &[],
    };
    v.extend_from_slice(own);
    v.into_iter()
        .enumerate()
        .map(|(i, (k, t))| Field {
            id: i as i64 + 1,
            key: k.into(),
            name: k.replace('_', " "),
            field_type: t.into(),
            edit_flag: Some(false),
            active_flag: Some(true),
            mandatory_flag: Some(J::Bool(matches!(k, "name" | "title"))),
            ..Field::default()
        })
        .collect()
}

impl PipedriveSimulator {
    /// A simulator with `config`.
    pub fn new(config: PipedriveSimConfig) -> Self {
        let mut fields = Vec::new();
        for kind in [
            ObjectKind::Persons,
            ObjectKind::Organizations,
            ObjectKind::Deals,
        ] {
            for f in standard_defs(kind) {
                fields.push((kind, f));
            }
        }
        for (i, f) in config.custom_fields.iter().enumerate() {
            fields.push((
                f.object,
                Field {
                    id: 1_000 + i as i64,
                    key: field_key(f.object, &f.name),
                    name: f.name.clone(),
                    field_type: f.field_type.clone(),
                    options: (!f.options.is_empty()).then(|| {
                        f.options
                            .iter()
                            .enumerate()
                            .map(|(j, l)| FieldOption {
                                id: json!(j + 1),
                                label: l.clone(),
                            })
                            .collect()
                    }),
                    edit_flag: Some(true),
                    active_flag: Some(true),
                    mandatory_flag: Some(J::Bool(false)),
                    ..Field::default()
                },
            ));
        }
        PipedriveSimulator {
            config: Arc::new(config),
            fields: Arc::new(Mutex::new(fields)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PipedriveSimConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ObjectKind, Field)>> {
        self.fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The definitions of `kind`.
    pub fn fields(&self, kind: ObjectKind) -> Vec<Field> {
        self.lock()
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// The hash key of the custom field named `name` (current name).
    pub fn key_of(&self, kind: ObjectKind, name: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(k, f)| *k == kind && f.name == name && f.edit_flag == Some(true))
            .map(|(_, f)| f.key.clone())
    }

    /// Renames a field (its key stays), as a user relabelling it in the app.
    pub fn rename_field(&self, kind: ObjectKind, from: &str, to: &str) -> bool {
        let mut g = self.lock();
        match g.iter_mut().find(|(k, f)| *k == kind && f.name == from) {
            Some((_, f)) => {
                f.name = to.to_owned();
                true
            }
            None => false,
        }
    }

    /// Sends a v1 webhook event about `id` of `kind` to every subscriber of
    /// `ctx.webhooks()`, with HTTP basic auth; returns the delivery statuses.
    pub async fn send_webhook(
        &self,
        ctx: &SimContext,
        kind: ObjectKind,
        action: &str,
        id: &RecordId,
    ) -> Vec<Option<u16>> {
        let rec = ctx.store().get(kind.as_str(), id);
        let current = match (&rec, action) {
            (Some(r), a) if a != "deleted" => J::Object(render(kind, r)),
            _ => J::Null,
        };
        let previous = match (&rec, action) {
            (Some(r), "deleted") => J::Object(render(kind, r)),
            _ => J::Null,
        };
        let now = ctx.clock().now();
        let item = kind.recents_item().unwrap_or(match kind {
            ObjectKind::Deals => "deal",
            _ => "lead",
        });
        let body = json!({
            "v": 1, "matches_filters": {"current": []},
            "meta": {"v": 1, "action": action, "object": item, "id": num_or_text(id.as_str()),
                "company_id": 1, "user_id": 1, "host": "sim.pipedrive.com",
                "timestamp": now.timestamp(), "timestamp_micro": now.timestamp_micros(),
                "permitted_user_ids": [1], "webhook_id": "1", "is_bulk_update": false, "change_source": "api"},
            "current": current, "previous": previous, "event": format!("{action}.{item}"), "retry": 0,
        })
        .to_string();
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "authorization".to_owned(),
                crate::webhook::basic_auth_header(
                    &self.config.webhook_user,
                    &self.config.webhook_password,
                ),
            ),
        ];
        ctx.webhooks()
            .broadcast(&headers, body.as_bytes())
            .await
            .into_iter()
            .map(|d| d.status)
            .collect()
    }
}

/// Pipedrive's wording of 429s, 401s and its rate-limit headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipedriveForm;

fn envelope_error(status: StatusCode, error: &str, info: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "error": error, "error_info": info, "data": null, "additional_data": null})),
    )
        .into_response()
}

impl ResponseForm for PipedriveForm {
    fn rate_limited(&self, l: &RateLimited) -> Response {
        let daily = l.is_daily();
        let mut resp = envelope_error(
            StatusCode::TOO_MANY_REQUESTS,
            if daily {
                "Daily request limit reached"
            } else {
                "Request over limit"
            },
            "Please check developers.pipedrive.com/docs/api/v1/#/ for more information about Pipedrive API.",
        );
        let h = resp.headers_mut();
        if daily {
            h.insert("x-daily-requests-left", HeaderValue::from_static("0"));
        } else if let Ok(v) = HeaderValue::from_str(&l.retry_after_secs().max(1).to_string()) {
            h.insert("retry-after", v);
        }
        resp
    }

    fn rate_limit_headers(&self, status: &[WindowStatus], headers: &mut HeaderMap) {
        for s in status {
            let pairs: Vec<(&'static str, String)> = if s.period >= Duration::from_secs(86_400) {
                vec![("x-daily-requests-left", s.remaining.to_string())]
            } else {
                vec![
                    ("x-ratelimit-limit", s.limit.to_string()),
                    ("x-ratelimit-remaining", s.remaining.to_string()),
                    (
                        "x-ratelimit-reset",
                        s.reset_after.as_secs().max(1).to_string(),
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

    fn unauthorized(&self, _failure: &AuthFailure) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"success": false, "error": "unauthorized access", "errorCode": 401,
                "error_info": "Please check developers.pipedrive.com/docs/api/v1/#/ for more information about Pipedrive API."})),
        )
            .into_response()
    }
}

#[derive(Clone)]
struct AppState {
    ctx: SimContext,
    sim: PipedriveSimulator,
}

impl Simulator for PipedriveSimulator {
    fn provider(&self) -> &'static str {
        "pipedrive"
    }

    fn id_generator(&self) -> Arc<dyn crm_sim::store::IdGenerator> {
        Arc::new(|object: &str, seq: u64| {
            if object == "leads" {
                RecordId::new(format!("00000000-0000-4000-8000-{seq:012}"))
            } else {
                RecordId::new(seq.to_string())
            }
        })
    }

    fn form(&self) -> Arc<dyn ResponseForm> {
        Arc::new(PipedriveForm)
    }

    fn setup(&self, ctx: &SimContext) {
        let auth = ctx.auth();
        auth.set_token_ttl(self.config.token_ttl);
        auth.register_client(OAuthClient::confidential(
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        ));
        auth.add_refresh_token(&self.config.client_id, &self.config.refresh_token);
        auth.add_api_key(&self.config.api_token);
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let state = AppState {
            ctx: ctx.clone(),
            sim: self.clone(),
        };
        let guard = ctx.auth_guard(vec![
            AuthMethod::ApiKeyHeader("x-api-token".into()),
            AuthMethod::ApiKeyQuery("api_token".into()),
            AuthMethod::Bearer,
        ]);
        let mut windows = vec![Window::sliding(
            "window",
            self.config.per_window,
            self.config.window,
        )];
        if let Some(d) = self.config.daily {
            windows.push(Window::daily(d));
        }
        let limiter = ctx.rate_limiter(windows);
        let data = Router::new()
            .route(
                "/api/v1/personFields",
                get(|s: State<AppState>, q: Query<HashMap<String, String>>| {
                    fields(s, q, ObjectKind::Persons)
                }),
            )
            .route(
                "/api/v1/organizationFields",
                get(|s: State<AppState>, q: Query<HashMap<String, String>>| {
                    fields(s, q, ObjectKind::Organizations)
                }),
            )
            .route(
                "/api/v1/dealFields",
                get(|s: State<AppState>, q: Query<HashMap<String, String>>| {
                    fields(s, q, ObjectKind::Deals)
                }),
            )
            .route("/api/v1/recents", get(recents))
            .route("/api/v2/pipelines", get(pipelines))
            .route("/api/v2/stages", get(stages))
            .route("/api/v2/{object}", get(list).post(create))
            .route("/api/v2/{object}/search", get(search))
            .route(
                "/api/v2/{object}/{id}",
                get(get_one).patch(update).delete(delete_one),
            )
            .route("/api/v1/{object}", get(list).post(create))
            .route(
                "/api/v1/{object}/{id}",
                get(get_one).put(update).patch(update).delete(delete_one),
            )
            .with_state(state)
            .layer(axum::middleware::from_fn_with_state(
                guard,
                AuthGuard::middleware,
            ))
            .layer(axum::middleware::from_fn_with_state(
                limiter,
                crm_sim::RateLimiter::middleware,
            ));
        Router::new()
            .route("/oauth/token", post(token_endpoint))
            .with_state(ctx.auth().clone())
            .merge(data)
    }

    fn credentials(&self, ctx: &SimContext) -> serde_json::Value {
        json!({
            "base_url": ctx.base_url(),
            "token_url": format!("{}/oauth/token", ctx.base_url()),
            "api_token": self.config.api_token,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "refresh_token": self.config.refresh_token,
            "webhook_user": self.config.webhook_user,
            "webhook_password": self.config.webhook_password,
        })
    }

    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        let store = ctx.store();
        for i in 0..20u64 {
            let mut f = Fields::new();
            f.insert("name".into(), json!(format!("Person {i} ({seed})")));
            f.insert("emails".into(), json!([{"value": format!("person{i}@example.com"), "primary": true, "label": "work"}]));
            store.create("persons", f);
        }
        for i in 0..10u64 {
            let mut f = Fields::new();
            f.insert("title".into(), json!(format!("Deal {i}")));
            f.insert(
                "value".into(),
                json!(100 + (seed.wrapping_mul(7919).wrapping_add(i * 104_729)) % 9_900),
            );
            f.insert("currency".into(), json!("USD"));
            f.insert("stage_id".into(), json!(1 + (seed.wrapping_add(i)) % 4));
            f.insert("pipeline_id".into(), json!(1));
            f.insert("status".into(), json!("open"));
            store.create("deals", f);
        }
    }
}

fn kind_of(object: &str) -> Option<ObjectKind> {
    ObjectKind::parse(object).filter(|k| k.as_str() == object)
}

fn num_or_text(id: &str) -> J {
    id.parse::<i64>()
        .map(J::from)
        .unwrap_or_else(|_| J::String(id.to_owned()))
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn time_text(kind: ObjectKind, t: DateTime<Utc>) -> J {
    if kind.is_v2() {
        J::String(t.to_rfc3339_opts(SecondsFormat::Secs, true))
    } else {
        J::String(t.format("%Y-%m-%d %H:%M:%S").to_string())
    }
}

fn update_at(r: &StoredRecord) -> DateTime<Utc> {
    r.changed_at()
}

/// A stored record as Pipedrive answers it (v2 for v2 objects, else v1).
fn render(kind: ObjectKind, r: &StoredRecord) -> Map<String, J> {
    let mut m = Map::new();
    m.insert("id".into(), num_or_text(r.id.as_str()));
    let mut custom = Map::new();
    for (k, v) in &r.fields {
        if crate::mapping::is_hash_key(k) {
            custom.insert(k.clone(), v.clone());
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    if kind.is_v2() {
        m.insert("custom_fields".into(), J::Object(custom));
        m.insert("is_deleted".into(), J::Bool(r.is_deleted()));
    } else {
        m.extend(custom);
        m.insert("active_flag".into(), J::Bool(!r.is_deleted()));
    }
    if kind == ObjectKind::Deals && r.is_deleted() {
        m.insert("status".into(), json!("deleted"));
    }
    m.insert("add_time".into(), time_text(kind, r.created_at));
    m.insert("update_time".into(), time_text(kind, update_at(r)));
    m
}

fn ok(data: J, additional: Option<J>) -> Response {
    let mut body = json!({"success": true, "data": data});
    if let Some(a) = additional {
        body["additional_data"] = a;
    }
    Json(body).into_response()
}

fn bad(info: impl Into<String>) -> Response {
    envelope_error(StatusCode::BAD_REQUEST, "Bad request", &info.into())
}

fn not_found(kind: ObjectKind) -> Response {
    envelope_error(
        StatusCode::NOT_FOUND,
        &format!("{} not found", kind.as_str()),
        "",
    )
}

async fn fields(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    kind: ObjectKind,
) -> Response {
    let all = st.sim.fields(kind);
    let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(1, 500);
    let page: Vec<&Field> = all.iter().skip(start).take(limit).collect();
    let more = start + page.len() < all.len();
    let mut pag = json!({"start": start, "limit": limit, "more_items_in_collection": more});
    if more {
        pag["next_start"] = json!(start + page.len());
    }
    ok(json!(page), Some(json!({"pagination": pag})))
}

fn encode_cursor(key: i64, id: &str) -> String {
    format!("{key}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let bytes: Option<Vec<u8>> = (0..c.len())
        .step_by(2)
        .map(|i| c.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (k, id) = text.split_once(':')?;
    Some((k.parse().ok()?, id.to_owned()))
}

fn id_order(id: &str) -> (i64, String) {
    (id.parse::<i64>().unwrap_or(i64::MAX), id.to_owned())
}

async fn list(
    State(st): State<AppState>,
    Path(object): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(kind) = kind_of(&object) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    let limit: usize = match q.get("limit").map(|s| s.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        _ => return bad("limit must be between 1 and 500"),
    };
    let statuses: Vec<String> = q
        .get("status")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let want_deleted = statuses.iter().any(|s| s == "deleted");
    let since = match q.get("updated_since").map(|s| parse_time(s)) {
        None => None,
        Some(Some(t)) => Some(secs(t)),
        Some(None) => return bad("updated_since must be RFC 3339"),
    };
    let until = q.get("updated_until").and_then(|s| parse_time(s)).map(secs);
    let ids: Option<Vec<String>> = q
        .get("ids")
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let (sort_by, desc) = if kind.is_v2() {
        (
            q.get("sort_by")
                .map(String::as_str)
                .unwrap_or("id")
                .to_owned(),
            q.get("sort_direction").is_some_and(|d| d == "desc"),
        )
    } else {
        let s = q.get("sort").cloned().unwrap_or_default();
        let field = s.split_whitespace().next().unwrap_or("id").to_owned();
        (field, s.to_uppercase().ends_with("DESC"))
    };
    let key = |r: &StoredRecord| -> i64 {
        match sort_by.as_str() {
            "update_time" => secs(update_at(r)),
            "add_time" => secs(r.created_at),
            _ => 0,
        }
    };
    let mut rows: Vec<StoredRecord> = st
        .ctx
        .store()
        .all(
            kind.as_str(),
            if want_deleted {
                Deleted::Only
            } else {
                Deleted::Exclude
            },
        )
        .into_iter()
        .filter(|r| since.is_none_or(|s| secs(update_at(r)) >= s))
        .filter(|r| until.is_none_or(|u| secs(update_at(r)) < u))
        .filter(|r| {
            ids.as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == r.id.as_str()))
        })
        .filter(|r| {
            statuses.is_empty()
                || want_deleted
                || r.text("status")
                    .is_some_and(|s| statuses.iter().any(|x| x == s))
        })
        .filter(|r| {
            ["person_id", "org_id", "deal_id", "lead_id"]
                .iter()
                .all(|f| {
                    q.get(*f).is_none_or(|want| {
                        r.fields.get(*f).map(json_text).as_deref() == Some(want.as_str())
                    })
                })
        })
        .collect();
    rows.sort_by(|a, b| {
        let o = (key(a), id_order(a.id.as_str())).cmp(&(key(b), id_order(b.id.as_str())));
        if desc { o.reverse() } else { o }
    });
    let (page, more): (Vec<StoredRecord>, bool) = if kind.is_v2() {
        let after = match q.get("cursor") {
            None => None,
            Some(c) => match decode_cursor(c) {
                Some(x) => Some(x),
                None => return bad("invalid cursor"),
            },
        };
        let start = after.map_or(0, |(k, id)| {
            let pos = (k, id_order(&id));
            rows.iter()
                .position(|r| {
                    let p = (key(r), id_order(r.id.as_str()));
                    if desc { p < pos } else { p > pos }
                })
                .unwrap_or(rows.len())
        });
        let rest: Vec<StoredRecord> = rows.into_iter().skip(start).collect();
        let more = rest.len() > limit;
        (rest.into_iter().take(limit).collect(), more)
    } else {
        let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
        let more = rows.len() > start + limit;
        (rows.into_iter().skip(start).take(limit).collect(), more)
    };
    let data: Vec<J> = page.iter().map(|r| J::Object(render(kind, r))).collect();
    let additional = if kind.is_v2() {
        let next = match (more, page.last()) {
            (true, Some(last)) => J::String(encode_cursor(key(last), last.id.as_str())),
            _ => J::Null,
        };
        json!({"next_cursor": next})
    } else {
        let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut p = json!({"start": start, "limit": limit, "more_items_in_collection": more});
        if more {
            p["next_start"] = json!(start + limit);
        }
        json!({"pagination": p})
    };
    ok(J::Array(data), Some(additional))
}

async fn get_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = kind_of(&object) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    match st.ctx.store().get_live(kind.as_str(), &RecordId::new(id)) {
        Some(r) => ok(J::Object(render(kind, &r)), None),
        None => not_found(kind),
    }
}

/// Checks a body against the object's fields; returns the store fields.
fn validate(
    st: &AppState,
    kind: ObjectKind,
    body: &Map<String, J>,
    create: bool,
) -> Result<Fields, String> {
    let defs = st.sim.fields(kind);
    let mut out = Fields::new();
    let mut custom_in: Vec<(String, J)> = Vec::new();
    for (k, v) in body {
        if k == "custom_fields" {
            let J::Object(cf) = v else {
                return Err("custom_fields must be an object".into());
            };
            custom_in.extend(cf.iter().map(|(a, b)| (a.clone(), b.clone())));
        } else if crate::mapping::is_hash_key(k) && !kind.is_v2() {
            custom_in.push((k.clone(), v.clone()));
        } else if standard_fields(kind).contains(&k.as_str()) {
            match k.as_str() {
                "value" | "probability"
                    if kind != ObjectKind::Leads && !(v.is_number() || v.is_null()) =>
                {
                    return Err(format!("{k} must be a number"));
                }
                "visible_to" if !matches!(json_text(v).as_str(), "1" | "3" | "5" | "7") => {
                    return Err("visible_to must be 1, 3, 5 or 7".into());
                }
                "emails" | "phones" if !v.is_array() => {
                    return Err(format!("{k} must be an array"));
                }
                _ => {}
            }
            out.insert(k.clone(), v.clone());
        } else {
            return Err(format!("Unknown field `{k}`"));
        }
    }
    for (k, v) in custom_in {
        let Some(def) = defs.iter().find(|d| d.key == k) else {
            return Err(format!("Custom field `{k}` does not exist"));
        };
        match def.field_type.as_str() {
            "double" | "monetary" if !(v.is_number() || v.is_null()) => {
                return Err(format!("{} must be a number", def.name));
            }
            "enum" if !v.is_null() => {
                let known = def
                    .options
                    .iter()
                    .flatten()
                    .any(|o| json_text(&o.id) == json_text(&v));
                if !known {
                    return Err(format!("{} has no option {v}", def.name));
                }
            }
            _ => {}
        }
        out.insert(k, v);
    }
    if create {
        let required = match kind {
            ObjectKind::Persons | ObjectKind::Organizations => Some("name"),
            ObjectKind::Deals | ObjectKind::Leads => Some("title"),
            ObjectKind::Notes => Some("content"),
            ObjectKind::Activities => None,
        };
        if let Some(r) = required
            && out.get(r).is_none_or(|v| json_text(v).is_empty())
        {
            return Err(format!("{r} is required"));
        }
        if kind == ObjectKind::Notes
            && !["person_id", "org_id", "deal_id", "lead_id", "project_id"]
                .iter()
                .any(|f| out.contains_key(*f))
        {
            return Err("a note needs a person_id, org_id, deal_id or lead_id".into());
        }
    }
    Ok(out)
}

async fn create(
    State(st): State<AppState>,
    Path(object): Path<String>,
    body: Result<Json<J>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(kind) = kind_of(&object) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    let Ok(Json(J::Object(body))) = body else {
        return bad("the body is not a JSON object");
    };
    match validate(&st, kind, &body, true) {
        Ok(f) => {
            let r = st.ctx.store().create(kind.as_str(), f);
            let status = if kind.is_v2() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(json!({"success": true, "data": render(kind, &r)})),
            )
                .into_response()
        }
        Err(m) => bad(m),
    }
}

async fn update(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
    body: Result<Json<J>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(kind) = kind_of(&object) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    let Ok(Json(J::Object(body))) = body else {
        return bad("the body is not a JSON object");
    };
    match validate(&st, kind, &body, false) {
        Ok(f) => match st.ctx.store().update(kind.as_str(), &RecordId::new(id), f) {
            Ok(w) => ok(J::Object(render(kind, w.record())), None),
            Err(_) => not_found(kind),
        },
        Err(m) => bad(m),
    }
}

async fn delete_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    let Some(kind) = kind_of(&object) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    match st
        .ctx
        .store()
        .delete(kind.as_str(), &RecordId::new(id.clone()))
    {
        Ok(_) => ok(json!({"id": num_or_text(&id)}), None),
        Err(_) => not_found(kind),
    }
}

async fn search(
    State(st): State<AppState>,
    Path(object): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(kind) = kind_of(&object).filter(|k| k.searchable()) else {
        return envelope_error(StatusCode::NOT_FOUND, "Unknown method .", "");
    };
    let Some(term) = q.get("term").map(|t| t.trim().to_lowercase()) else {
        return bad("term is required");
    };
    let exact = q.get("exact_match").is_some_and(|v| v == "true");
    if term.chars().count() < if exact { 1 } else { 2 } {
        return bad("term is too short");
    }
    let fields: Vec<String> = q
        .get("fields")
        .map(|f| f.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let wants = |f: &str| fields.is_empty() || fields.iter().any(|x| x == f);
    let hit = |v: &J| {
        let t = json_text(v).to_lowercase();
        if exact { t == term } else { t.contains(&term) }
    };
    let limit: usize = q
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(1, 500);
    let offset: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut hits = Vec::new();
    for r in st.ctx.store().all(kind.as_str(), Deleted::Exclude) {
        let f = &r.fields;
        let list = |k: &str| f.get(k).and_then(J::as_array).cloned().unwrap_or_default();
        let matched = (wants("email")
            && list("emails")
                .iter()
                .any(|e| e.get("value").is_some_and(hit)))
            || (wants("phone")
                && list("phones")
                    .iter()
                    .any(|e| e.get("value").is_some_and(hit)))
            || (wants("name") && f.get("name").is_some_and(hit))
            || (wants("title") && f.get("title").is_some_and(hit))
            || (wants("custom_fields")
                && f.iter()
                    .any(|(k, v)| crate::mapping::is_hash_key(k) && hit(v)));
        if matched {
            hits.push(r);
        }
    }
    let total = hits.len();
    let items: Vec<J> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let f = &r.fields;
            let values = |k: &str| -> Vec<J> {
                f.get(k).and_then(J::as_array).map(|a| a.iter().filter_map(|e| e.get("value").cloned()).collect()).unwrap_or_default()
            };
            let mut item = json!({"id": num_or_text(r.id.as_str()), "type": kind.recents_item().unwrap_or("deal"),
                "custom_fields": f.iter().filter(|(k, _)| crate::mapping::is_hash_key(k)).map(|(_, v)| J::String(json_text(v))).collect::<Vec<_>>()});
            match kind {
                ObjectKind::Persons => {
                    item["name"] = f.get("name").cloned().unwrap_or(J::Null);
                    item["emails"] = J::Array(values("emails"));
                    item["phones"] = J::Array(values("phones"));
                }
                ObjectKind::Organizations => item["name"] = f.get("name").cloned().unwrap_or(J::Null),
                _ => item["title"] = f.get("title").cloned().unwrap_or(J::Null),
            }
            json!({"result_score": 1.0, "item": item})
        })
        .collect();
    let next = offset + items.len();
    let cursor = if next < total {
        J::String(next.to_string())
    } else {
        J::Null
    };
    ok(
        json!({"items": items}),
        Some(json!({"next_cursor": cursor})),
    )
}

async fn recents(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(since) = q.get("since_timestamp").and_then(|s| parse_time(s)) else {
        return bad("since_timestamp is required (YYYY-MM-DD HH:MM:SS)");
    };
    let items: Vec<String> = q
        .get("items")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(1, 500);
    let mut rows: Vec<(i64, (i64, String), &'static str, J)> = Vec::new();
    for kind in ObjectKind::ALL {
        let Some(item) = kind.recents_item() else {
            continue;
        };
        if !items.is_empty() && !items.iter().any(|i| i == item) {
            continue;
        }
        for r in st.ctx.store().all(kind.as_str(), Deleted::Include) {
            let at = secs(update_at(&r));
            if at >= secs(since) {
                let mut data = render(kind, &r);
                data.insert("active_flag".into(), J::Bool(!r.is_deleted()));
                data.insert(
                    "update_time".into(),
                    J::String(update_at(&r).format("%Y-%m-%d %H:%M:%S").to_string()),
                );
                rows.push((at, id_order(r.id.as_str()), item, J::Object(data)));
            }
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let more = rows.len() > start + limit;
    let data: Vec<J> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(_, (n, id), item, d)| json!({"item": item, "id": if n == i64::MAX { J::String(id) } else { J::from(n) }, "data": d}))
        .collect();
    let mut p = json!({"start": start, "limit": limit, "more_items_in_collection": more});
    if more {
        p["next_start"] = json!(start + limit);
    }
    ok(J::Array(data), Some(json!({"pagination": p})))
}

async fn pipelines() -> Response {
    ok(
        json!([{"id": 1, "name": "Sales", "order_nr": 1}]),
        Some(json!({"next_cursor": null})),
    )
}

async fn stages() -> Response {
    let names = ["Lead In", "Qualified", "Proposal Made", "Negotiation"];
    let data: Vec<J> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i + 1, "name": n, "pipeline_id": 1, "order_nr": i + 1, "deal_probability": 100}))
        .collect();
    ok(J::Array(data), Some(json!({"next_cursor": null})))
}
