//! The HTTP API: seed 002's endpoints under `/api/crm/integrations`, the
//! workflow events, `/health` and `/openapi.json` (generated from these
//! handlers' annotations).
//!
//! Every error answer is JSON ([`crate::error::ErrorBody`]), including a
//! malformed body (400), a wrong content type (415) and a value of the
//! wrong type (422 naming the field).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crm_sync::access::Tokens;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::{ApiError, ErrorBody};
use crate::model::*;
use crate::service::{Caller, Service};

/// The accepted tokens and each holder's workspace.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Tokens,
    workspaces: HashMap<String, String>,
}

impl Access {
    /// No token accepted.
    pub fn new() -> Self {
        Access::default()
    }

    /// Accepts `token` for `name` in `workspace` with `role`.
    pub fn add(
        &mut self,
        workspace: impl Into<String>,
        name: impl Into<String>,
        role: crm_sync::access::Role,
        token: &secrecy::SecretString,
    ) {
        let name = name.into();
        self.tokens.add(name.clone(), role, token);
        self.workspaces.insert(name, workspace.into());
    }

    /// The caller of a request, from its `Authorization: Bearer` header.
    ///
    /// # Errors
    /// 401 without a known token.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let who = self
            .tokens
            .check_bearer(auth)
            .ok_or_else(ApiError::unauthorized)?;
        let workspace = self
            .workspaces
            .get(&who.name)
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller::new(workspace.clone(), who.name.clone(), who.role))
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service.
    pub service: Arc<Service>,
    /// The tokens.
    pub access: Arc<Access>,
}

/// Reads a JSON body: 415 without `application/json`, 400 for broken
/// JSON, 422 naming the field for a wrong value.
fn body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &Bytes) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `Content-Type: application/json`",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    serde_path_to_error::deserialize(crate::model::strict::Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        // serde's message names the expected type or the unknown field,
        // never the value sent.
        let message = crm_core::pii::mask_emails_in(&e.into_inner().to_string());
        ApiError::invalid(field, message)
    })
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn ok<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn answer<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.into_response(),
    }
}

/// Creates an integration (admin).
#[utoipa::path(post, path = "/api/crm/integrations", tag = "integrations",
    request_body = CreateIntegration,
    responses(
        (status = 201, description = "Created; credentials masked", body = Integration),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid value or credentials refused", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "CRM unavailable", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn create_integration(
    State(st): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let run = async {
        let caller = st.access.caller(&headers)?;
        // The role is refused before the body is read: a viewer's write is
        // 403 whatever it sends.
        caller.needs(crm_sync::access::Role::Admin)?;
        let req: CreateIntegration = body(&headers, &bytes)?;
        st.service.create_integration(&caller, &req).await
    };
    match run.await {
        Ok(v) => created(v),
        Err(e) => e.into_response(),
    }
}

/// Lists the workspace's integrations (viewer).
#[utoipa::path(get, path = "/api/crm/integrations", tag = "integrations",
    responses(
        (status = 200, body = IntegrationList),
        (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list_integrations(State(st): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            let caller = st.access.caller(&headers)?;
            st.service.list_integrations(&caller).await
        }
        .await,
    )
}

/// One integration (viewer); another workspace's is 404.
#[utoipa::path(get, path = "/api/crm/integrations/{id}", tag = "integrations",
    params(("id" = String, Path, description = "The integration's id")),
    responses(
        (status = 200, body = Integration),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_integration(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let caller = st.access.caller(&headers)?;
            st.service.get_integration(&caller, &id).await
        }
        .await,
    )
}

macro_rules! write_endpoint {
    ($fn:ident, $path:literal, $req:ty, $resp:ty, $doc:literal, |$svc:ident, $caller:ident, $id:ident, $body:ident| $call:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "sync",
            params(("id" = String, Path, description = "The integration's id")),
            request_body = $req,
            responses(
                (status = 200, body = $resp),
                (status = 400, description = "Not JSON", body = ErrorBody),
                (status = 401, description = "No valid token", body = ErrorBody),
                (status = 403, description = "Not an operator", body = ErrorBody),
                (status = 404, description = "Unknown integration or record", body = ErrorBody),
                (status = 409, description = "Refused by the integration's direction or credentials", body = ErrorBody),
                (status = 413, description = "Body too large", body = ErrorBody),
                (status = 415, description = "Not JSON", body = ErrorBody),
                (status = 422, description = "Invalid value, or refused by the CRM", body = ErrorBody),
                (status = 429, description = "Rate limited", body = ErrorBody),
                (status = 502, description = "The CRM refused the stored credentials", body = ErrorBody),
                (status = 503, description = "CRM unavailable; contacts are kept for retry", body = ErrorBody),
            ),
            security(("bearer" = [])))]
        async fn $fn(
            State(st): State<AppState>,
            Path($id): Path<String>,
            headers: HeaderMap,
            bytes: Bytes,
        ) -> Response {
            answer(async {
                let $caller = st.access.caller(&headers)?;
                $caller.needs(crm_sync::access::Role::Operator)?;
                let $body: $req = body(&headers, &bytes)?;
                let $svc = &st.service;
                $call.await
            }
            .await)
        }
    };
}

write_endpoint!(
    sync_contact,
    "/api/crm/integrations/{id}/contacts/sync",
    ContactInput,
    SyncResult,
    "Creates or updates the CRM contact with this email, with its social profiles (operator).",
    |svc, caller, id, input| svc.sync_contact(&caller, &id, &input)
);

write_endpoint!(
    sync_lead,
    "/api/crm/integrations/{id}/leads/sync",
    LeadInput,
    SyncResult,
    "Creates or updates the CRM lead with this email (operator).",
    |svc, caller, id, input| svc.sync_lead(&caller, &id, &input)
);

write_endpoint!(
    enrich_contact,
    "/api/crm/integrations/{id}/contacts/enrich",
    EnrichRequest,
    EnrichResult,
    "Writes the social data recorded for a contact to its CRM fields, only what differs (operator).",
    |svc, caller, id, req| svc.enrich_contact(&caller, &id, &req)
);

write_endpoint!(
    lead_attribution,
    "/api/crm/integrations/{id}/leads/attribution",
    AttributionRequest,
    AttributionResult,
    "Records touchpoints and attributes the lead's conversion (operator).",
    |svc, caller, id, req| svc.attribution(&caller, &id, &req)
);

write_endpoint!(
    batch_sync,
    "/api/crm/integrations/{id}/contacts/batch-sync",
    ContactBatch,
    BatchResult,
    "Syncs many contacts, deduped by email (operator).",
    |svc, caller, id, items| svc.batch_sync(&caller, &id, items.0)
);

write_endpoint!(
    platform_event,
    "/api/crm/integrations/{id}/events",
    PlatformEvent,
    EventResult,
    "Runs an automatic workflow for a platform event (operator).",
    |svc, caller, id, event| svc.on_event(&caller, &id, &event)
);

/// Pulls the CRM's contact changes since the last pull (operator).
#[utoipa::path(post, path = "/api/crm/integrations/{id}/sync-from-crm", tag = "sync",
    params(("id" = String, Path, description = "The integration's id")),
    responses(
        (status = 200, body = PullResult),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A `to_crm` integration", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn sync_from_crm(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let caller = st.access.caller(&headers)?;
            st.service.sync_from_crm(&caller, &id).await
        }
        .await,
    )
}

/// The query of `GET .../contacts`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ContactQuery {
    /// The contact's email.
    #[param(format = Email, max_length = 254)]
    email: String,
    /// Show personal fields in clear (operator or admin; audited).
    reveal: Option<bool>,
}

/// The CRM contact with this email; personal fields masked unless
/// `reveal=true` (viewer; reveal needs operator).
#[utoipa::path(get, path = "/api/crm/integrations/{id}/contacts", tag = "sync",
    params(("id" = String, Path, description = "The integration's id"), ContactQuery),
    responses(
        (status = 200, body = ContactAnswer),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_contact(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let caller = st.access.caller(&headers)?;
            let mut email = None;
            let mut reveal = false;
            for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
                match k.as_ref() {
                    "email" => email = Some(v.into_owned()),
                    "reveal" => {
                        reveal = match v.as_ref() {
                            "true" | "1" => true,
                            "false" | "0" => false,
                            _ => {
                                return Err(ApiError::new(
                                    StatusCode::BAD_REQUEST,
                                    "invalid_input",
                                    "`reveal` is true or false",
                                )
                                .with_field("reveal"));
                            }
                        };
                    }
                    _ => {}
                }
            }
            let email = email.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    "the query needs `email`",
                )
                .with_field("email")
            })?;
            st.service.get_contact(&caller, &id, &email, reveal).await
        }
        .await,
    )
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health), (status = 429, body = ErrorBody)))]
async fn health() -> Response {
    ok(Health {
        status: "ok".into(),
    })
}

/// utoipa leaves out `additionalProperties: false` on the variants of the
/// internally tagged [`PlatformEvent`], whose fields serde does check
/// (`deny_unknown_fields`): an unknown field is a 422.
struct ClosedEventVariants;

impl utoipa::Modify for ClosedEventVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut("PlatformEvent")
        else {
            return;
        };
        for variant in &mut one_of.items {
            if let RefOr::T(Schema::Object(object)) = variant {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "CRM integration service", description = "Seed 002's CRM integration API: integrations, contact and lead sync, enrichment, attribution, batch sync and pulls from the CRM. Built on the crm-connectors crates."),
    paths(create_integration, list_integrations, get_integration, sync_contact, sync_lead,
          get_contact, enrich_contact, lead_attribution, batch_sync, sync_from_crm,
          platform_event, health),
    modifiers(&BearerScheme, &ClosedEventVariants),
    tags((name = "integrations"), (name = "sync"), (name = "service")),
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON (what `/openapi.json` serves and
/// `docs/integration-service.openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not served here",
    )
    .into_response()
}

/// The routes, without the protective layers (see
/// [`crate::app::App::router`]).
pub fn router(state: AppState) -> Router {
    let id_routes = Router::new()
        .route(
            "/api/crm/integrations",
            post(create_integration).get(list_integrations),
        )
        .route("/api/crm/integrations/{id}", get(get_integration))
        .route(
            "/api/crm/integrations/{id}/contacts/sync",
            post(sync_contact),
        )
        .route("/api/crm/integrations/{id}/leads/sync", post(sync_lead))
        .route("/api/crm/integrations/{id}/contacts", get(get_contact))
        .route(
            "/api/crm/integrations/{id}/contacts/enrich",
            post(enrich_contact),
        )
        .route(
            "/api/crm/integrations/{id}/leads/attribution",
            post(lead_attribution),
        )
        .route(
            "/api/crm/integrations/{id}/contacts/batch-sync",
            post(batch_sync),
        )
        .route(
            "/api/crm/integrations/{id}/sync-from-crm",
            post(sync_from_crm),
        )
        .route("/api/crm/integrations/{id}/events", post(platform_event))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found);
    id_routes.with_state(state)
}
