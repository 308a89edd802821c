//! The review desk over HTTP: pages under `/review`, JSON under
//! `/review/api`.
//!
//! Pages (server-rendered HTML; every action is a plain form, so no
//! JavaScript is needed):
//!
//! | route | what |
//! |---|---|
//! | `GET /review/login`, `POST /review/login` | sign in with a token; sets the session cookie |
//! | `POST /review/logout` | ends the session |
//! | `GET /review/matches`, `/review/conflicts`, `/review/dead-letters` | a queue: filters (`connection`, `object`, `older_than`, `newer_than`), counts, pages (`after`) |
//! | `GET /review/matches/{id}?q=` | one booking, with a campaign search by name |
//! | `POST /review/matches/{id}/accept` (`campaign_id`), `/reject` | decide a match |
//! | `GET /review/conflicts/{id}`, `POST .../resolve` | per field `pick.<field>` = `platform`, `crm` or `value` (then `value.<field>`) |
//! | `GET /review/dead-letters/{id}`, `POST .../retry` (`record`, JSON), `.../discard` (`reason`) | a dead letter |
//!
//! JSON API (the same actions, for integrators' own screens):
//!
//! | route | body / answer |
//! |---|---|
//! | `GET /review/api/counts` | `{"matches": n, "conflicts": n, "dead_letters": n}` |
//! | `GET /review/api/matches` (`conflicts`, `dead-letters`) | `{"items": [...], "next": "<after token>"}` |
//! | `GET /review/api/{queue}/{id}` | one item |
//! | `GET /review/api/campaigns?q=` | campaigns whose name matches |
//! | `POST /review/api/matches/{id}/accept` | `{"campaign_id": "..."}` |
//! | `POST /review/api/matches/{id}/reject` | `{}` |
//! | `POST /review/api/conflicts/{id}/resolve` | `{"picks": {"field": "platform" \| "crm" \| {"value": ...}}}` |
//! | `POST /review/api/dead-letters/{id}/retry` | `{"record": {...}}` (optional edit) |
//! | `POST /review/api/dead-letters/{id}/discard` | `{"reason": "..."}` |
//!
//! Access: `Authorization: Bearer <token>` on any route, or the session
//! cookie of a sign-in. Viewers read; operators and admins act (others get
//! 403 and the pages show them no action buttons). A request authenticated
//! by the cookie must prove it comes from our page: forms carry the
//! session's CSRF token in a `csrf` field, API calls in an `X-CSRF-Token`
//! header; without it the request is refused with 403 and nothing changes.
//! Session cookies are `HttpOnly`, `SameSite=Strict`, `Path=/review`, and
//! `Secure` when [`super::ReviewDesk::secure_cookies`] is set. Tokens and
//! session ids are kept as SHA-256 digests only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use crm_core::{Error, ErrorKind, Value};
use crm_sql::state::{DeadLetterId, PageAfter, ReviewId};
use indexmap::IndexMap;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::html;
use super::{
    ConflictView, DEFAULT_PAGE_SIZE, FilterParams, MatchView, Queue, RetryOutcome, ReviewDesk,
    is_forbidden,
};
use crate::access::{Principal, Role, digest};
use crate::bidi::Pick;

/// The session cookie.
pub const SESSION_COOKIE: &str = "crm_review_session";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "crm_review_login";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The CSRF header of API calls made with the session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

/// Signed-in sessions, by the digest of their cookie value.
#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(crate::serve::hex(&b))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // Each operation is one insert, get or remove: a poisoned map is
        // still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `principal`: (cookie value, CSRF token).
    fn open(&self, principal: Principal) -> Option<(String, String)> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        map.insert(
            digest(&id),
            Session {
                principal,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Some((id, csrf))
    }

    fn get(&self, id: &str) -> Option<(Principal, String)> {
        let map = self.lock();
        let s = map.get(&digest(id))?;
        (s.expires > Instant::now()).then(|| (s.principal.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.lock().remove(&digest(id));
    }
}

/// How a request proved who it is.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// A bearer token: no ambient credential, no CSRF check needed.
    Bearer(Principal),
    /// The session cookie, with the session's CSRF token.
    Session(Principal, String),
}

impl Auth {
    pub(crate) fn principal(&self) -> &Principal {
        match self {
            Auth::Bearer(p) | Auth::Session(p, _) => p,
        }
    }

    /// The CSRF token forms must carry (none for bearer requests).
    pub(crate) fn csrf(&self) -> Option<&str> {
        match self {
            Auth::Bearer(_) => None,
            Auth::Session(_, c) => Some(c),
        }
    }

    /// Whether a state-changing request carries what it must: nothing for
    /// a bearer token, the session's token for a cookie.
    fn csrf_ok(&self, sent: Option<&str>) -> bool {
        match self {
            Auth::Bearer(_) => true,
            Auth::Session(_, expected) => sent.is_some_and(|s| {
                s.len() == expected.len() && bool::from(s.as_bytes().ct_eq(expected.as_bytes()))
            }),
        }
    }

    pub(crate) fn can_act(&self) -> bool {
        self.principal().role.allows(Role::Operator)
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

type Desk = State<Arc<ReviewDesk>>;

impl ReviewDesk {
    fn auth(&self, headers: &HeaderMap) -> Option<Auth> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer.is_some() {
            return self.tokens.check_bearer(bearer).cloned().map(Auth::Bearer);
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        self.sessions
            .get(id)
            .map(|(principal, csrf)| Auth::Session(principal, csrf))
    }

    fn cookie_attrs(&self) -> &'static str {
        if self.secure_cookies {
            "Path=/review; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/review; HttpOnly; SameSite=Strict"
        }
    }

    /// The routes: pages under `/review`, JSON under `/review/api`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/review", get(|| async { see_other("/review/matches") }))
            .route("/review/", get(|| async { see_other("/review/matches") }))
            .route("/review/style.css", get(style))
            .route("/review/login", get(login_page).post(login))
            .route("/review/logout", post(logout))
            .route("/review/{queue}", get(list_page))
            .route("/review/{queue}/{id}", get(item_page))
            .route("/review/matches/{id}/accept", post(accept_form))
            .route("/review/matches/{id}/reject", post(reject_form))
            .route("/review/conflicts/{id}/resolve", post(resolve_form))
            .route("/review/dead-letters/{id}/retry", post(retry_form))
            .route("/review/dead-letters/{id}/discard", post(discard_form))
            .route("/review/api/counts", get(api_counts))
            .route("/review/api/campaigns", get(api_campaigns))
            .route("/review/api/{queue}", get(api_list))
            .route("/review/api/{queue}/{id}", get(api_item))
            .route("/review/api/matches/{id}/accept", post(api_accept))
            .route("/review/api/matches/{id}/reject", post(api_reject))
            .route("/review/api/conflicts/{id}/resolve", post(api_resolve))
            .route("/review/api/dead-letters/{id}/retry", post(api_retry))
            .route("/review/api/dead-letters/{id}/discard", post(api_discard))
            .with_state(Arc::new(self))
    }
}

// ----- responses -----

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Headers every page gets: no caching, no framing, nothing loaded from
/// elsewhere.
fn page(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn status_of(e: &Error) -> StatusCode {
    if is_forbidden(e) {
        return StatusCode::FORBIDDEN;
    }
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput | ErrorKind::SchemaMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Auth => StatusCode::BAD_GATEWAY,
        ErrorKind::RateLimited { .. } | ErrorKind::QuotaExhausted | ErrorKind::Transient => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn html_error(auth: Option<&Auth>, e: &Error) -> Response {
    let status = status_of(e);
    page(
        status,
        html::error_page(auth, status.as_u16(), &e.to_string()),
    )
}

fn forbidden_page(auth: &Auth, why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        html::error_page(Some(auth), 403, why),
    )
}

fn json_error(e: &Error) -> Response {
    let status = status_of(e);
    let body = json!({"error": {"kind": if status == StatusCode::FORBIDDEN { "forbidden" } else { e.kind().as_str() }, "message": e.to_string()}});
    (status, axum::Json(body)).into_response()
}

fn json_status(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

const NOT_SIGNED_IN: &str = "sign in with a token (Authorization: Bearer, or /review/login)";
const NO_CSRF: &str =
    "this request did not come from the review page: its CSRF token is missing or wrong";

// ----- sign-in -----

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    failed: Option<String>,
}

/// Only our own pages are followed after a sign-in.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/review/") && !n.starts_with("//") && !n.contains("://") => n,
        _ => "/review/matches",
    }
}

async fn style() -> Response {
    let mut r = html::STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

async fn login_page(State(desk): Desk, Query(q): Query<LoginQuery>) -> Response {
    let Some(nonce) = random_token() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error_page(None, 503, "no randomness available"),
        );
    };
    let mut r = page(
        StatusCode::OK,
        html::login_page(&nonce, safe_next(q.next.as_deref()), q.failed.is_some()),
    );
    let c = format!(
        "{LOGIN_COOKIE}={nonce}; {}; Max-Age=600",
        desk.cookie_attrs()
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(desk): Desk, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !bool::from(nonce.as_bytes().ct_eq(f.csrf.as_bytes())) {
        return page(StatusCode::FORBIDDEN, html::error_page(None, 403, NO_CSRF));
    }
    let next = safe_next(f.next.as_deref()).to_owned();
    let Some(principal) = desk.tokens.check(f.token.trim()).cloned() else {
        return see_other(&format!(
            "/review/login?failed=1&next={}",
            html::url_encode(&next)
        ));
    };
    let Some((id, _csrf)) = desk.sessions.open(principal) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error_page(None, 503, "no randomness available"),
        );
    };
    let mut r = see_other(&next);
    let attrs = desk.cookie_attrs();
    let max_age = SESSION_TTL.as_secs();
    for c in [
        format!("{SESSION_COOKIE}={id}; {attrs}; Max-Age={max_age}"),
        format!("{LOGIN_COOKIE}=; {attrs}; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn logout(State(desk): Desk, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some(auth) = desk.auth(&headers) else {
        return see_other("/review/login");
    };
    if !auth.csrf_ok(f.csrf.as_deref()) {
        return forbidden_page(&auth, NO_CSRF);
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        desk.sessions.close(id);
    }
    let mut r = see_other("/review/login");
    let c = format!("{SESSION_COOKIE}=; {}; Max-Age=0", desk.cookie_attrs());
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

// ----- pages -----

/// Query of a queue page.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(flatten)]
    pub(crate) filter: FilterParams,
    #[serde(default)]
    pub(crate) after: Option<String>,
    #[serde(default)]
    pub(crate) limit: Option<u32>,
    #[serde(default)]
    pub(crate) done: Option<String>,
}

fn sign_in_first(uri_path: &str) -> Response {
    see_other(&format!(
        "/review/login?next={}",
        html::url_encode(uri_path)
    ))
}

/// `GET /review/{queue}`: one page of a queue.
async fn list_page(
    State(desk): Desk,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let Some(queue) = queue_of(&slug) else {
        let e = Error::new(ErrorKind::NotFound, format!("no queue named {slug:?}"));
        return html_error(desk.auth(&headers).as_ref(), &e);
    };
    let Some(auth) = desk.auth(&headers) else {
        return sign_in_first(&format!("/review/{}", queue.slug()));
    };
    match html::queue_page(&desk, &auth, queue, &q).await {
        Ok(body) => page(StatusCode::OK, body),
        Err(e) => html_error(Some(&auth), &e),
    }
}

#[derive(Deserialize)]
struct ItemQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

/// `GET /review/{queue}/{id}`: one item of a queue.
async fn item_page(
    State(desk): Desk,
    headers: HeaderMap,
    Path((slug, id)): Path<(String, String)>,
    Query(q): Query<ItemQuery>,
) -> Response {
    let Some(queue) = queue_of(&slug) else {
        let e = Error::new(ErrorKind::NotFound, format!("no queue named {slug:?}"));
        return html_error(desk.auth(&headers).as_ref(), &e);
    };
    let Some(auth) = desk.auth(&headers) else {
        return sign_in_first(&format!("/review/{}/{id}", queue.slug()));
    };
    let done = q.done.as_deref();
    let counts = desk.counts(&Default::default()).await.unwrap_or_default();
    let html = match queue {
        Queue::DeadLetters => desk
            .dead_letter(&DeadLetterId::new(id))
            .await
            .map(|letter| html::dead_letter_page(&auth, &counts, &letter, done)),
        Queue::Matches => desk
            .open_item(queue, &ReviewId::new(id))
            .await
            .map(|item| html::match_page(&desk, &auth, &counts, &item, q.q.as_deref(), done)),
        Queue::Conflicts => desk
            .open_item(queue, &ReviewId::new(id))
            .await
            .map(|item| html::conflict_page(&desk, &auth, &counts, &item, done)),
    };
    match html {
        Ok(body) => page(StatusCode::OK, body),
        Err(e) => html_error(Some(&auth), &e),
    }
}

// ----- form actions -----

/// The checks every form action makes: signed in, CSRF token, role.
fn form_guard(
    desk: &ReviewDesk,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<Auth, Box<Response>> {
    let Some(auth) = desk.auth(headers) else {
        return Err(Box::new(page(
            StatusCode::UNAUTHORIZED,
            html::error_page(None, 401, NOT_SIGNED_IN),
        )));
    };
    if !auth.csrf_ok(csrf) {
        return Err(Box::new(forbidden_page(&auth, NO_CSRF)));
    }
    if !auth.can_act() {
        let p = auth.principal();
        let why = format!(
            "{} has the role {}; acting on the queues needs operator",
            p.name, p.role
        );
        return Err(Box::new(forbidden_page(&auth, &why)));
    }
    Ok(auth)
}

#[derive(Deserialize)]
struct AcceptForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
}

async fn accept_form(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AcceptForm>,
) -> Response {
    let auth = match form_guard(&desk, &headers, f.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(campaign) = f.campaign_id.filter(|c| !c.trim().is_empty()) else {
        let e = Error::invalid_input("choose a campaign to accept")
            .with_context("field", "campaign_id");
        return html_error(Some(&auth), &e);
    };
    match desk
        .accept_match(&ReviewId::new(id), campaign.trim(), auth.principal())
        .await
    {
        Ok(None) => see_other("/review/matches?done=accepted"),
        Ok(Some(_)) => see_other("/review/matches?done=accepted_hook_failed"),
        Err(e) => html_error(Some(&auth), &e),
    }
}

async fn reject_form(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let auth = match form_guard(&desk, &headers, f.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match desk
        .reject_match(&ReviewId::new(id), auth.principal())
        .await
    {
        Ok(None) => see_other("/review/matches?done=rejected"),
        Ok(Some(_)) => see_other("/review/matches?done=rejected_hook_failed"),
        Err(e) => html_error(Some(&auth), &e),
    }
}

/// A typed value in the terms of the field's current values: a number when
/// a side holds a number and the text is one, a boolean likewise, null for
/// an empty text, the text otherwise.
pub(crate) fn typed_value(text: &str, like: &[&serde_json::Value]) -> Value {
    let t = text.trim();
    if t.is_empty() {
        return Value::Null;
    }
    if like.iter().any(|v| v.is_number())
        && let Ok(n) = serde_json::from_str::<serde_json::Number>(t)
    {
        return Value::from_json(serde_json::Value::Number(n));
    }
    if like.iter().any(|v| v.is_boolean()) {
        match t.to_ascii_lowercase().as_str() {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::from(text.to_owned())
}

async fn resolve_form(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    let auth = match form_guard(&desk, &headers, csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let review = ReviewId::new(id.clone());
    let item = match desk.open_item(Queue::Conflicts, &review).await {
        Ok(i) => i,
        Err(e) => return html_error(Some(&auth), &e),
    };
    let view = ConflictView::from_item(&item);
    let form: HashMap<&str, &str> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut picks = IndexMap::new();
    for f in &view.fields {
        let pick = match form.get(format!("pick.{}", f.field).as_str()).copied() {
            Some("platform") => Pick::Platform,
            Some("crm") => Pick::Crm,
            Some("value") => {
                let text = form
                    .get(format!("value.{}", f.field).as_str())
                    .copied()
                    .unwrap_or_default();
                Pick::Value(typed_value(text, &[&f.platform_value, &f.crm_value]))
            }
            _ => {
                let e = Error::invalid_input(format!("choose a value for `{}`", f.field))
                    .with_context("field", f.field.as_str());
                return html_error(Some(&auth), &e);
            }
        };
        picks.insert(f.field.clone(), pick);
    }
    match desk
        .resolve_conflict(&review, &picks, auth.principal())
        .await
    {
        Ok(()) => see_other("/review/conflicts?done=resolved"),
        Err(e) => html_error(Some(&auth), &e),
    }
}

#[derive(Deserialize)]
struct RetryForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    record: Option<String>,
}

async fn retry_form(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<RetryForm>,
) -> Response {
    let auth = match form_guard(&desk, &headers, f.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let letter_id = DeadLetterId::new(id.clone());
    let edited = match f.record.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => {
                // Unchanged text is not an edit.
                let current = desk
                    .dead_letter(&letter_id)
                    .await
                    .ok()
                    .map(|l| html::plain_fields(&l.record));
                if current.as_ref() == Some(&v) {
                    None
                } else {
                    Some(v)
                }
            }
            Err(e) => {
                let e = Error::invalid_input(format!("the edited record is not JSON: {e}"))
                    .with_context("field", "record");
                return html_error(Some(&auth), &e);
            }
        },
    };
    match desk
        .retry_dead_letter(&letter_id, edited, auth.principal())
        .await
    {
        Ok(RetryOutcome::Written) => see_other("/review/dead-letters?done=retried"),
        Ok(RetryOutcome::FailedAgain { .. }) => see_other(&format!(
            "/review/dead-letters/{}?done=failed",
            html::url_encode(&id)
        )),
        Err(e) => html_error(Some(&auth), &e),
    }
}

#[derive(Deserialize)]
struct DiscardForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
}

async fn discard_form(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DiscardForm>,
) -> Response {
    let auth = match form_guard(&desk, &headers, f.csrf.as_deref()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match desk
        .discard_dead_letter(&DeadLetterId::new(id), &f.reason, auth.principal())
        .await
    {
        Ok(()) => see_other("/review/dead-letters?done=discarded"),
        Err(e) => html_error(Some(&auth), &e),
    }
}

// ----- JSON API -----

fn api_read(desk: &ReviewDesk, headers: &HeaderMap) -> Result<Auth, Box<Response>> {
    desk.auth(headers)
        .ok_or_else(|| Box::new(json_status(StatusCode::UNAUTHORIZED, "auth", NOT_SIGNED_IN)))
}

fn api_write(desk: &ReviewDesk, headers: &HeaderMap) -> Result<Auth, Box<Response>> {
    let auth = api_read(desk, headers)?;
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !auth.csrf_ok(sent) {
        return Err(Box::new(json_status(
            StatusCode::FORBIDDEN,
            "forbidden",
            NO_CSRF,
        )));
    }
    Ok(auth)
}

fn queue_of(slug: &str) -> Option<Queue> {
    [Queue::Matches, Queue::Conflicts, Queue::DeadLetters]
        .into_iter()
        .find(|q| q.slug() == slug)
}

async fn api_counts(
    State(desk): Desk,
    headers: HeaderMap,
    Query(f): Query<FilterParams>,
) -> Response {
    if let Err(r) = api_read(&desk, &headers) {
        return *r;
    }
    let filter = match f.to_filter(Utc::now()) {
        Ok(f) => f,
        Err(e) => return json_error(&e),
    };
    match desk.counts(&filter).await {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => json_error(&e),
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn api_campaigns(
    State(desk): Desk,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    if let Err(r) = api_read(&desk, &headers) {
        return *r;
    }
    let found: Vec<serde_json::Value> = desk
        .search_campaigns(&q.q)
        .into_iter()
        .map(|c| json!({"campaign_id": c.campaign_id.as_str(), "name": c.name, "advertiser_name": c.advertiser_name, "status": c.status}))
        .collect();
    axum::Json(json!({"campaigns": found})).into_response()
}

pub(crate) fn review_json(item: &crm_sql::state::ReviewItem) -> serde_json::Value {
    let mut v = json!({
        "id": item.id.as_str(),
        "connection_id": item.connection_id.as_ref().map(|c| c.as_str()),
        "object": item.object,
        "record_id": item.record_id,
        "reason": item.reason.as_str(),
        "created_at": item.created_at,
    });
    match item.reason {
        crm_sql::state::ReviewReason::ManualConflict => {
            v["conflict"] = serde_json::to_value(ConflictView::from_item(item)).unwrap_or_default();
        }
        _ => {
            let m = MatchView::from_item(item);
            v["record"] = serde_json::Value::Object(m.record);
            v["candidates"] = serde_json::to_value(m.candidates).unwrap_or_default();
        }
    }
    v
}

pub(crate) fn dead_letter_json(d: &crm_sql::state::DeadLetter) -> serde_json::Value {
    json!({
        "id": d.id.as_str(),
        "connection_id": d.connection_id.as_ref().map(|c| c.as_str()),
        "object": d.object,
        "record_key": d.record_key,
        "record": html::plain_fields(&d.record),
        "stage": d.stage,
        "errors": d.error.lines().collect::<Vec<_>>(),
        "attempts": d.attempts,
        "first_failed_at": d.first_failed_at,
        "last_failed_at": d.last_failed_at,
    })
}

async fn api_list(
    State(desk): Desk,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = api_read(&desk, &headers) {
        return *r;
    }
    let Some(queue) = queue_of(&slug) else {
        return json_status(StatusCode::NOT_FOUND, "not_found", "no such queue");
    };
    let filter = match q.filter.to_filter(Utc::now()) {
        Ok(f) => f,
        Err(e) => return json_error(&e),
    };
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match PageAfter::decode(a) {
            Some(p) => Some(p),
            None => {
                return json_error(
                    &Error::invalid_input("`after` is not a page position this API gave out")
                        .with_context("field", "after"),
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let (items, next) = if queue == Queue::DeadLetters {
        match desk.dead_letter_page(&filter, after.as_ref(), limit).await {
            Ok(p) => (
                p.items.iter().map(dead_letter_json).collect::<Vec<_>>(),
                p.next,
            ),
            Err(e) => return json_error(&e),
        }
    } else {
        match desk
            .review_page(queue, &filter, after.as_ref(), limit)
            .await
        {
            Ok(p) => (p.items.iter().map(review_json).collect::<Vec<_>>(), p.next),
            Err(e) => return json_error(&e),
        }
    };
    axum::Json(json!({"items": items, "next": next.map(|n| n.encode())})).into_response()
}

async fn api_item(
    State(desk): Desk,
    headers: HeaderMap,
    Path((slug, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = api_read(&desk, &headers) {
        return *r;
    }
    let result = match queue_of(&slug) {
        Some(Queue::DeadLetters) => desk
            .dead_letter(&DeadLetterId::new(id))
            .await
            .map(|d| dead_letter_json(&d)),
        Some(queue) => desk
            .open_item(queue, &ReviewId::new(id))
            .await
            .map(|i| review_json(&i)),
        None => return json_status(StatusCode::NOT_FOUND, "not_found", "no such queue"),
    };
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => json_error(&e),
    }
}

#[derive(Deserialize)]
struct AcceptBody {
    campaign_id: String,
}

fn decided(hook_error: Option<String>, status: &str) -> Response {
    axum::Json(json!({"status": status, "after_hook_error": hook_error})).into_response()
}

async fn api_accept(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<AcceptBody>,
) -> Response {
    let auth = match api_write(&desk, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match desk
        .accept_match(&ReviewId::new(id), &b.campaign_id, auth.principal())
        .await
    {
        Ok(hook) => decided(hook, "accepted"),
        Err(e) => json_error(&e),
    }
}

async fn api_reject(State(desk): Desk, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let auth = match api_write(&desk, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match desk
        .reject_match(&ReviewId::new(id), auth.principal())
        .await
    {
        Ok(hook) => decided(hook, "rejected"),
        Err(e) => json_error(&e),
    }
}

/// One pick of the API: `"platform"`, `"crm"` or `{"value": ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ApiPick {
    Side(String),
    Value { value: serde_json::Value },
}

#[derive(Deserialize)]
struct ResolveBody {
    picks: IndexMap<String, ApiPick>,
}

async fn api_resolve(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<ResolveBody>,
) -> Response {
    let auth = match api_write(&desk, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let mut picks = IndexMap::new();
    for (field, p) in b.picks {
        let pick = match p {
            ApiPick::Side(s) if s == "platform" => Pick::Platform,
            ApiPick::Side(s) if s == "crm" => Pick::Crm,
            ApiPick::Side(s) => {
                return json_error(
                    &Error::invalid_input(format!(
                        "pick for `{field}` is {s:?}; use \"platform\", \"crm\" or {{\"value\": ...}}"
                    ))
                    .with_context("field", field.as_str()),
                );
            }
            ApiPick::Value { value } => Pick::Value(Value::from_json(value)),
        };
        picks.insert(field, pick);
    }
    match desk
        .resolve_conflict(&ReviewId::new(id), &picks, auth.principal())
        .await
    {
        Ok(()) => axum::Json(json!({"status": "resolved"})).into_response(),
        Err(e) => json_error(&e),
    }
}

#[derive(Deserialize, Default)]
struct RetryBody {
    #[serde(default)]
    record: Option<serde_json::Value>,
}

async fn api_retry(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<axum::Json<RetryBody>>,
) -> Response {
    let auth = match api_write(&desk, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let record = body.and_then(|b| b.0.record);
    match desk
        .retry_dead_letter(&DeadLetterId::new(id), record, auth.principal())
        .await
    {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => json_error(&e),
    }
}

#[derive(Deserialize)]
struct DiscardBody {
    #[serde(default)]
    reason: String,
}

async fn api_discard(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(b): axum::Json<DiscardBody>,
) -> Response {
    let auth = match api_write(&desk, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match desk
        .discard_dead_letter(&DeadLetterId::new(id), &b.reason, auth.principal())
        .await
    {
        Ok(()) => axum::Json(json!({"status": "discarded"})).into_response(),
        Err(e) => json_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_follow_the_sides() {
        let n = json!(5);
        let s = json!("x");
        let b = json!(true);
        assert_eq!(typed_value("42", &[&n, &s]), Value::from_json(json!(42)));
        assert_eq!(typed_value("42", &[&s]), Value::from("42".to_owned()));
        assert_eq!(typed_value("FALSE", &[&b]), Value::Bool(false));
        assert_eq!(typed_value("  ", &[&s]), Value::Null);
    }

    #[test]
    fn only_our_pages_follow_a_sign_in() {
        assert_eq!(safe_next(Some("/review/conflicts")), "/review/conflicts");
        assert_eq!(safe_next(Some("//evil.example/review/")), "/review/matches");
        assert_eq!(safe_next(Some("https://evil.example")), "/review/matches");
        assert_eq!(safe_next(None), "/review/matches");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; crm_review_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
