//! [`GenericSimulator`]: a small REST-ish CRM built on the framework, used by
//! this crate's tests and the standalone server, and the reference for
//! provider simulators.
//!
//! Wire API (JSON; timestamps RFC 3339 with milliseconds):
//!
//! | route | what |
//! | --- | --- |
//! | `POST /oauth/token` | RFC 6749 token endpoint (refresh token, client credentials, authorization code, JWT bearer) |
//! | `GET /objects/{type}?limit&after&since&include_deleted` | change feed in `(updated_at, id)` order: `{"records": [...], "has_more": bool, "next_after": token}` |
//! | `POST /objects/{type}/batch` | upsert by external id: `{"key": "email", "records": [{...}]}` answers `{"results": [{"status": "created" \| "updated" \| "unchanged" \| "error", "id", "error": {"code", "message", "retryable"}}]}` |
//! | `POST /objects/{type}` | create one record (not idempotent) |
//! | `GET`, `PATCH`, `DELETE /objects/{type}/{id}` | read, merge-update, soft-delete one record |
//!
//! A record is `{"id", "created_at", "updated_at", "deleted_at", "fields": {...}}`.
//! `next_after` is the resume point: pass it back as `after` to read on,
//! now or in a later run (it is also the incremental cursor). `has_more` is
//! exact, so a reader makes `ceil(n / limit)` calls (one for an empty feed).
//!
//! Data routes take `Authorization: Bearer <token>` (an issued access
//! token) or `X-Api-Key: <key>`; they are rate limited by
//! [`GenericConfig::rate_limits`] (429 with `Retry-After`, and
//! `X-RateLimit-*` headers on admitted responses). Batch records are
//! rejected per record when the key field is missing, when an `email` field
//! is not a string containing `@`, or when the fault plan rejects them
//! (retryable).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::RecordId;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::auth::{AuthGuard, AuthMethod, OAuthClient, token_endpoint};
use crate::fault::RecordFaults;
use crate::ratelimit::{RateLimiter, Window};
use crate::simulator::{SimContext, Simulator};
use crate::store::{
    ChangeKey, ChangeQuery, Deleted, Fields, IdGenerator, SequentialIds, StoreError, StoredRecord,
};

/// The generic simulator's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenericConfig {
    /// Page size when a list call gives no `limit`.
    pub page_size_default: usize,
    /// The largest `limit` honoured (larger ones are capped).
    pub page_size_max: usize,
    /// The most records one batch call takes (more: 400).
    pub batch_max: usize,
    /// Rate limits over the data routes (empty: unlimited).
    pub rate_limits: Vec<Window>,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// A refresh token valid from the start.
    pub refresh_token: String,
    /// An API key valid from the start (`X-Api-Key`).
    pub api_key: String,
}

impl Default for GenericConfig {
    fn default() -> Self {
        GenericConfig {
            page_size_default: 100,
            page_size_max: 1000,
            batch_max: 100,
            rate_limits: vec![Window::per_second(50)],
            token_ttl: Duration::from_secs(3600),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            refresh_token: "sim-refresh-token".into(),
            api_key: "sim-api-key".into(),
        }
    }
}

impl GenericConfig {
    /// Sets the page sizes.
    #[must_use]
    pub fn page_size(mut self, default: usize, max: usize) -> Self {
        self.page_size_default = default.max(1);
        self.page_size_max = max.max(1);
        self
    }

    /// Sets the largest batch.
    #[must_use]
    pub fn batch_max(mut self, n: usize) -> Self {
        self.batch_max = n.max(1);
        self
    }

    /// Sets the rate limits.
    #[must_use]
    pub fn rate_limits(mut self, windows: Vec<Window>) -> Self {
        self.rate_limits = windows;
        self
    }

    /// Sets the access-token lifetime.
    #[must_use]
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }
}

/// The generic simulator.
#[derive(Clone, Debug, Default)]
pub struct GenericSimulator {
    config: GenericConfig,
}

impl GenericSimulator {
    /// A simulator with `config`.
    pub fn new(config: GenericConfig) -> Self {
        GenericSimulator { config }
    }

    /// The settings.
    pub fn config(&self) -> &GenericConfig {
        &self.config
    }
}

#[derive(Clone)]
struct AppState {
    ctx: SimContext,
    config: Arc<GenericConfig>,
}

impl Simulator for GenericSimulator {
    fn provider(&self) -> &'static str {
        "generic"
    }

    fn id_generator(&self) -> Arc<dyn IdGenerator> {
        Arc::new(SequentialIds::new("r", 8))
    }

    fn setup(&self, ctx: &SimContext) {
        let auth = ctx.auth();
        auth.set_token_ttl(self.config.token_ttl);
        auth.register_client(OAuthClient::confidential(
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        ));
        auth.add_refresh_token(&self.config.client_id, &self.config.refresh_token);
        auth.add_api_key(&self.config.api_key);
        ctx.log().capture_header("x-api-key");
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let state = AppState {
            ctx: ctx.clone(),
            config: Arc::new(self.config.clone()),
        };
        let guard = ctx.auth_guard(vec![
            AuthMethod::Bearer,
            AuthMethod::ApiKeyHeader("x-api-key".into()),
        ]);
        let mut data = Router::new()
            .route("/objects/{object}", get(list).post(create))
            .route("/objects/{object}/batch", post(batch_upsert))
            .route(
                "/objects/{object}/{id}",
                get(get_one).patch(update_one).delete(delete_one),
            )
            .with_state(state)
            .layer(axum::middleware::from_fn_with_state(
                guard,
                AuthGuard::middleware,
            ));
        if !self.config.rate_limits.is_empty() {
            let limiter: RateLimiter = ctx.rate_limiter(self.config.rate_limits.clone());
            data = data.layer(axum::middleware::from_fn_with_state(
                limiter,
                RateLimiter::middleware,
            ));
        }
        Router::new()
            .route("/oauth/token", post(token_endpoint))
            .with_state(ctx.auth().clone())
            .merge(data)
    }

    fn credentials(&self, ctx: &SimContext) -> serde_json::Value {
        json!({
            "token_url": format!("{}/oauth/token", ctx.base_url()),
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "refresh_token": self.config.refresh_token,
            "api_key": self.config.api_key,
        })
    }

    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        const FIRST: [&str; 8] = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
        ];
        const LAST: [&str; 8] = [
            "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
        ];
        let mut rng = ctx.rng(&format!("demo-{seed}"));
        for i in 0..50 {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let mut f = Fields::new();
            f.insert(
                "email".into(),
                json!(format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                )),
            );
            f.insert("first_name".into(), json!(first));
            f.insert("last_name".into(), json!(last));
            f.insert("score".into(), json!(rng.random_range(0..100)));
            ctx.store().create("contacts", f);
        }
    }
}

/// Renders a stored record on the wire.
pub fn record_json(rec: &StoredRecord) -> serde_json::Value {
    json!({
        "id": rec.id,
        "created_at": ts(rec.created_at),
        "updated_at": ts(rec.modified_at),
        "deleted_at": rec.deleted_at.map(ts),
        "fields": rec.fields,
    })
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound { .. } => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        StoreError::AlreadyExists { .. } => error(StatusCode::CONFLICT, "conflict", e.to_string()),
        _ => error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    }
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
    since: Option<String>,
    #[serde(default)]
    include_deleted: bool,
}

async fn list(
    State(st): State<AppState>,
    Path(object): Path<String>,
    Query(p): Query<ListParams>,
) -> Response {
    let limit = p
        .limit
        .unwrap_or(st.config.page_size_default)
        .clamp(1, st.config.page_size_max);
    let after = match p.after.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(tok) => match ChangeKey::decode(tok) {
            Some(k) => Some(k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    "after is not a cursor",
                );
            }
        },
    };
    let since = match p.since.as_deref() {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_since",
                    "since is not RFC 3339",
                );
            }
        },
    };
    let query = ChangeQuery::new()
        .after(after)
        .since(since)
        .deleted(if p.include_deleted {
            Deleted::Include
        } else {
            Deleted::Exclude
        })
        .limit(limit);
    let page = st.ctx.store().changes(&object, &query);
    Json(json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "has_more": page.has_more,
        "next_after": page.last.as_ref().map(ChangeKey::encode),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct BatchBody {
    key: String,
    records: Vec<Json_>,
}

fn validate(fields: &Fields, key: &str) -> Result<(), (&'static str, String)> {
    match fields.get(key) {
        Some(Json_::String(s)) if !s.is_empty() => {}
        Some(Json_::Number(_)) => {}
        _ => return Err(("missing_key", format!("field {key} is required"))),
    }
    if let Some(email) = fields.get("email") {
        let ok = email.as_str().is_some_and(|e| e.contains('@'));
        if !ok {
            return Err((
                "invalid_email",
                "field email is not an email address".into(),
            ));
        }
    }
    Ok(())
}

async fn batch_upsert(
    State(st): State<AppState>,
    Path(object): Path<String>,
    faults: Option<Extension<RecordFaults>>,
    body: Result<Json<BatchBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected {\"key\", \"records\"}",
        );
    };
    if body.records.len() > st.config.batch_max {
        return error(
            StatusCode::BAD_REQUEST,
            "batch_too_large",
            format!("at most {} records per batch", st.config.batch_max),
        );
    }
    let mut results = Vec::with_capacity(body.records.len());
    for (i, rec) in body.records.into_iter().enumerate() {
        let Json_::Object(fields) = rec else {
            results.push(json!({"status": "error", "error": {"code": "invalid_record", "message": "a record is an object of fields", "retryable": false}}));
            continue;
        };
        if let Err((code, message)) = validate(&fields, &body.key) {
            results.push(json!({"status": "error", "error": {"code": code, "message": message, "retryable": false}}));
            continue;
        }
        if faults.as_ref().is_some_and(|f| f.rejects(i)) {
            results.push(json!({"status": "error", "error": {"code": "temporarily_unavailable", "message": "try again", "retryable": true}}));
            continue;
        }
        match st.ctx.store().upsert_by(&object, &body.key, fields) {
            Ok(w) => results.push(json!({"status": w.as_str(), "id": w.record().id})),
            Err(e) => results.push(json!({"status": "error", "error": {"code": "invalid_record", "message": e.to_string(), "retryable": false}})),
        }
    }
    Json(json!({ "results": results })).into_response()
}

async fn create(
    State(st): State<AppState>,
    Path(object): Path<String>,
    body: Result<Json<Json_>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(Json_::Object(fields))) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected an object of fields",
        );
    };
    let rec = st.ctx.store().create(&object, fields);
    (StatusCode::CREATED, Json(record_json(&rec))).into_response()
}

async fn get_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    match st.ctx.store().get_live(&object, &RecordId::new(id)) {
        Some(rec) => Json(record_json(&rec)).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such record"),
    }
}

async fn update_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
    body: Result<Json<Json_>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(Json_::Object(fields))) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected an object of fields",
        );
    };
    match st.ctx.store().update(&object, &RecordId::new(id), fields) {
        Ok(w) => {
            let status = w.as_str();
            let mut body = record_json(w.record());
            body["status"] = json!(status);
            Json(body).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn delete_one(
    State(st): State<AppState>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    match st.ctx.store().delete(&object, &RecordId::new(id)) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(&e),
    }
}
