//! Credentials a simulator accepts: OAuth 2.0 clients and the access tokens
//! it issues ([`AuthState`]), static bearer tokens and API keys, and the
//! [`AuthGuard`] middleware that checks them on each request.
//!
//! The token endpoint ([`AuthState::grant`], or the ready-made
//! [`token_endpoint`] handler speaking RFC 6749 JSON) supports the
//! `refresh_token`, `client_credentials`, `authorization_code` (with PKCE,
//! `plain` or `S256`) and JWT bearer (`urn:ietf:params:oauth:grant-type:jwt-bearer`)
//! grants. Access tokens expire after a configurable TTL; tests force
//! "token expiry mid-run" with [`AuthState::expire_all`].
//!
//! JWT bearer assertions are checked for shape and claims (`iss` is a
//! registered client, `exp` in the future, `aud` when one is configured, an
//! `alg` other than `none`); the signature is not verified, since the
//! simulator holds no client keys.
//!
//! ```
//! use crm_sim::auth::{AuthState, OAuthClient, TokenRequest};
//!
//! let auth = AuthState::new(7);
//! auth.register_client(OAuthClient::confidential("app", "s3cret"));
//! auth.add_refresh_token("app", "rt-1");
//! let token = auth.grant(&TokenRequest::refresh("app", "s3cret", "rt-1")).unwrap();
//! assert!(auth.validate_bearer(&token.access_token).is_ok());
//! auth.expire_all();
//! assert!(auth.validate_bearer(&token.access_token).is_err());
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::b64;
use crate::form::ResponseForm;

/// Why a request's credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credentials were sent.
    #[error("no credentials")]
    Missing,
    /// The credentials are unknown.
    #[error("invalid credentials")]
    Invalid,
    /// The access token expired.
    #[error("access token expired")]
    Expired,
    /// The access token was revoked.
    #[error("access token revoked")]
    Revoked,
}

impl AuthFailure {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_credentials",
            AuthFailure::Invalid => "invalid_token",
            AuthFailure::Expired => "token_expired",
            AuthFailure::Revoked => "token_revoked",
        }
    }
}

/// A registered OAuth client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    /// The client id (also the `iss` of its JWT bearer assertions).
    pub client_id: String,
    /// The secret; `None` for a public client (PKCE, JWT bearer).
    pub client_secret: Option<String>,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "REDACTED"),
            )
            .finish()
    }
}

impl OAuthClient {
    /// A client authenticating with a secret.
    pub fn confidential(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        OAuthClient {
            client_id: client_id.into(),
            client_secret: Some(client_secret.into()),
        }
    }

    /// A client without a secret.
    pub fn public(client_id: impl Into<String>) -> Self {
        OAuthClient {
            client_id: client_id.into(),
            client_secret: None,
        }
    }
}

/// The grant types the token endpoint understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// `refresh_token`.
    RefreshToken,
    /// `client_credentials`.
    ClientCredentials,
    /// `authorization_code`.
    AuthorizationCode,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer`.
    JwtBearer,
}

impl GrantType {
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<GrantType> {
        match s {
            "refresh_token" => Some(GrantType::RefreshToken),
            "client_credentials" => Some(GrantType::ClientCredentials),
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => Some(GrantType::JwtBearer),
            _ => None,
        }
    }
}

/// A token request, as the form fields of RFC 6749 name them.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TokenRequest {
    /// The grant type.
    #[serde(default)]
    pub grant_type: String,
    /// The client id (or from HTTP Basic auth).
    pub client_id: Option<String>,
    /// The client secret (or from HTTP Basic auth).
    pub client_secret: Option<String>,
    /// For `refresh_token`.
    pub refresh_token: Option<String>,
    /// For `authorization_code`.
    pub code: Option<String>,
    /// For `authorization_code`: must equal the one given to `authorize`.
    pub redirect_uri: Option<String>,
    /// For `authorization_code` with PKCE.
    pub code_verifier: Option<String>,
    /// For the JWT bearer grant.
    pub assertion: Option<String>,
    /// Requested scope, echoed back.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenRequest {
    /// A `refresh_token` grant.
    pub fn refresh(client_id: &str, client_secret: &str, refresh_token: &str) -> Self {
        TokenRequest {
            grant_type: "refresh_token".into(),
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret.into()),
            refresh_token: Some(refresh_token.into()),
            ..TokenRequest::default()
        }
    }

    /// A `client_credentials` grant.
    pub fn client_credentials(client_id: &str, client_secret: &str) -> Self {
        TokenRequest {
            grant_type: "client_credentials".into(),
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret.into()),
            ..TokenRequest::default()
        }
    }

    /// An `authorization_code` grant.
    pub fn authorization_code(client_id: &str, code: &str, redirect_uri: &str) -> Self {
        TokenRequest {
            grant_type: "authorization_code".into(),
            client_id: Some(client_id.into()),
            code: Some(code.into()),
            redirect_uri: Some(redirect_uri.into()),
            ..TokenRequest::default()
        }
    }

    /// A JWT bearer grant.
    pub fn jwt_bearer(assertion: &str) -> Self {
        TokenRequest {
            grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
            assertion: Some(assertion.into()),
            ..TokenRequest::default()
        }
    }

    /// Sets the client secret.
    #[must_use]
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Sets the PKCE code verifier.
    #[must_use]
    pub fn with_code_verifier(mut self, verifier: &str) -> Self {
        self.code_verifier = Some(verifier.into());
        self
    }
}

/// A token the endpoint issued (the RFC 6749 success response).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A refresh token, for grants that issue one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scope asked for, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// A token endpoint error (RFC 6749 section 5.2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// `invalid_request`: a parameter is missing or malformed.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// `invalid_client`: client authentication failed.
    #[error("invalid_client")]
    InvalidClient,
    /// `invalid_grant`: the code, refresh token or assertion is invalid or expired.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// `unsupported_grant_type`.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }

    /// The HTTP status RFC 6749 gives it.
    pub fn status(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let description = match &self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnsupportedGrantType(d) => d.clone(),
            OAuthError::InvalidClient => "client authentication failed".into(),
        };
        (
            self.status(),
            axum::Json(json!({"error": self.code(), "error_description": description})),
        )
            .into_response()
    }
}

/// Which credential a request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// An access token issued to this client.
    OAuth {
        /// The client it was issued to.
        client_id: String,
    },
    /// A static bearer token.
    StaticToken,
    /// An API key.
    ApiKey,
}

#[derive(Debug)]
struct AccessToken {
    client_id: String,
    expires_at: Instant,
    revoked: bool,
}

#[derive(Debug)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    expires_at: Instant,
}

struct Inner {
    clients: HashMap<String, OAuthClient>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, String>,
    codes: HashMap<String, PendingCode>,
    static_tokens: HashSet<String>,
    api_keys: HashSet<String>,
    ttl: Duration,
    rotate_refresh: bool,
    jwt_audience: Option<String>,
    rng: ChaCha8Rng,
    issued: u64,
    grants: HashMap<GrantType, u64>,
}

/// The credentials of one simulator; clones share them.
#[derive(Clone)]
pub struct AuthState {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("AuthState")
            .field("clients", &inner.clients.len())
            .field("live_tokens", &inner.access.len())
            .field("ttl", &inner.ttl)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// An empty credential set; `seed` makes the issued token strings
    /// reproducible. Access tokens live one hour unless changed.
    pub fn new(seed: u64) -> Self {
        AuthState {
            inner: Arc::new(Mutex::new(Inner {
                clients: HashMap::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                codes: HashMap::new(),
                static_tokens: HashSet::new(),
                api_keys: HashSet::new(),
                ttl: Duration::from_secs(3600),
                rotate_refresh: false,
                jwt_audience: None,
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_a0a0),
                issued: 0,
                grants: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each method leaves the maps consistent; a poisoned lock holds valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the lifetime of access tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    /// The lifetime of newly issued access tokens.
    pub fn token_ttl(&self) -> Duration {
        self.lock().ttl
    }

    /// Issues a new refresh token with every refresh (and revokes the old one).
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.lock().rotate_refresh = rotate;
    }

    /// Requires JWT bearer assertions to name this audience.
    pub fn set_jwt_audience(&self, audience: Option<String>) {
        self.lock().jwt_audience = audience;
    }

    /// Registers an OAuth client (replacing one with the same id).
    pub fn register_client(&self, client: OAuthClient) {
        self.lock().clients.insert(client.client_id.clone(), client);
    }

    /// Makes `token` a valid refresh token of `client_id`.
    pub fn add_refresh_token(&self, client_id: &str, token: &str) {
        self.lock()
            .refresh
            .insert(token.to_owned(), client_id.to_owned());
    }

    /// Accepts `token` as a bearer token that never expires (a private-app
    /// token, a personal access token).
    pub fn add_static_token(&self, token: &str) {
        self.lock().static_tokens.insert(token.to_owned());
    }

    /// Accepts `key` as an API key.
    pub fn add_api_key(&self, key: &str) {
        self.lock().api_keys.insert(key.to_owned());
    }

    /// Issues an access token to `client_id` directly (no grant), with a
    /// refresh token if asked.
    pub fn issue(&self, client_id: &str, with_refresh: bool) -> IssuedToken {
        let mut inner = self.lock();
        issue_locked(&mut inner, client_id, with_refresh, None)
    }

    /// Access tokens issued so far, by any grant.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().issued
    }

    /// Successful grants of one type so far.
    pub fn grants(&self, grant: GrantType) -> u64 {
        self.lock().grants.get(&grant).copied().unwrap_or(0)
    }

    /// Expires every access token issued so far (static tokens and API keys
    /// stay valid): the next request with one gets a 401 and the client must
    /// refresh. Returns how many were live.
    pub fn expire_all(&self) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut n = 0;
        for t in inner.access.values_mut() {
            if t.expires_at > now && !t.revoked {
                n += 1;
            }
            t.expires_at = t.expires_at.min(now);
        }
        n
    }

    /// Revokes one access or refresh token. Returns whether it was known.
    pub fn revoke(&self, token: &str) -> bool {
        let mut inner = self.lock();
        if let Some(t) = inner.access.get_mut(token) {
            t.revoked = true;
            return true;
        }
        inner.refresh.remove(token).is_some()
    }

    /// Starts an authorization-code flow as if the user consented: returns
    /// the code to hand to `redirect_uri`. `challenge` is the PKCE
    /// `(code_challenge, code_challenge_method)`, method `plain` or `S256`.
    /// Codes are single-use and live ten minutes.
    ///
    /// # Errors
    /// [`OAuthError::InvalidClient`] for an unknown client,
    /// [`OAuthError::InvalidRequest`] for an unknown challenge method.
    pub fn authorize(
        &self,
        client_id: &str,
        redirect_uri: &str,
        challenge: Option<(String, String)>,
    ) -> Result<String, OAuthError> {
        if let Some((_, method)) = &challenge
            && method != "plain"
            && method != "S256"
        {
            return Err(OAuthError::InvalidRequest(format!(
                "unsupported code_challenge_method {method}"
            )));
        }
        let mut inner = self.lock();
        if !inner.clients.contains_key(client_id) {
            return Err(OAuthError::InvalidClient);
        }
        let code = format!("code_{:032x}", inner.rng.random::<u128>());
        inner.codes.insert(
            code.clone(),
            PendingCode {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                expires_at: Instant::now() + Duration::from_secs(600),
            },
        );
        Ok(code)
    }

    /// Runs a token request.
    ///
    /// # Errors
    /// The RFC 6749 error the real endpoint would answer.
    pub fn grant(&self, req: &TokenRequest) -> Result<IssuedToken, OAuthError> {
        let Some(grant) = GrantType::parse(&req.grant_type) else {
            return Err(if req.grant_type.is_empty() {
                OAuthError::InvalidRequest("grant_type is required".into())
            } else {
                OAuthError::UnsupportedGrantType(req.grant_type.clone())
            });
        };
        let mut inner = self.lock();
        let token = match grant {
            GrantType::RefreshToken => {
                let client_id = authenticate_client(&inner, req)?;
                let Some(rt) = req.refresh_token.as_deref() else {
                    return Err(OAuthError::InvalidRequest(
                        "refresh_token is required".into(),
                    ));
                };
                match inner.refresh.get(rt) {
                    Some(owner) if *owner == client_id => {}
                    _ => return Err(OAuthError::InvalidGrant("unknown refresh token".into())),
                }
                if inner.rotate_refresh {
                    inner.refresh.remove(rt);
                    issue_locked(&mut inner, &client_id, true, req.scope.clone())
                } else {
                    issue_locked(&mut inner, &client_id, false, req.scope.clone())
                }
            }
            GrantType::ClientCredentials => {
                let client_id = authenticate_client(&inner, req)?;
                if inner
                    .clients
                    .get(&client_id)
                    .is_some_and(|c| c.client_secret.is_none())
                {
                    return Err(OAuthError::InvalidClient);
                }
                issue_locked(&mut inner, &client_id, false, req.scope.clone())
            }
            GrantType::AuthorizationCode => {
                let client_id = authenticate_client(&inner, req)?;
                let Some(code) = req.code.as_deref() else {
                    return Err(OAuthError::InvalidRequest("code is required".into()));
                };
                let Some(pending) = inner.codes.remove(code) else {
                    return Err(OAuthError::InvalidGrant("unknown or used code".into()));
                };
                if pending.client_id != client_id {
                    return Err(OAuthError::InvalidGrant(
                        "code issued to another client".into(),
                    ));
                }
                if pending.expires_at <= Instant::now() {
                    return Err(OAuthError::InvalidGrant("code expired".into()));
                }
                if req.redirect_uri.as_deref() != Some(pending.redirect_uri.as_str()) {
                    return Err(OAuthError::InvalidGrant("redirect_uri mismatch".into()));
                }
                if let Some((challenge, method)) = &pending.challenge {
                    let Some(verifier) = req.code_verifier.as_deref() else {
                        return Err(OAuthError::InvalidRequest(
                            "code_verifier is required".into(),
                        ));
                    };
                    let expected = if method == "S256" {
                        b64::encode_url_nopad(
                            ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes())
                                .as_ref(),
                        )
                    } else {
                        verifier.to_owned()
                    };
                    if expected != *challenge {
                        return Err(OAuthError::InvalidGrant("PKCE verification failed".into()));
                    }
                }
                issue_locked(&mut inner, &client_id, true, req.scope.clone())
            }
            GrantType::JwtBearer => {
                let Some(assertion) = req.assertion.as_deref() else {
                    return Err(OAuthError::InvalidRequest("assertion is required".into()));
                };
                let claims = check_assertion(assertion, &inner)?;
                issue_locked(&mut inner, &claims, false, req.scope.clone())
            }
        };
        *inner.grants.entry(grant).or_insert(0) += 1;
        Ok(token)
    }

    /// Checks a bearer token: an issued access token that is live, or a
    /// static token.
    ///
    /// # Errors
    /// [`AuthFailure::Expired`], [`AuthFailure::Revoked`] or [`AuthFailure::Invalid`].
    pub fn validate_bearer(&self, token: &str) -> Result<Principal, AuthFailure> {
        let inner = self.lock();
        if inner.static_tokens.contains(token) {
            return Ok(Principal::StaticToken);
        }
        match inner.access.get(token) {
            None => Err(AuthFailure::Invalid),
            Some(t) if t.revoked => Err(AuthFailure::Revoked),
            Some(t) if t.expires_at <= Instant::now() => Err(AuthFailure::Expired),
            Some(t) => Ok(Principal::OAuth {
                client_id: t.client_id.clone(),
            }),
        }
    }

    /// Checks an API key.
    ///
    /// # Errors
    /// [`AuthFailure::Invalid`] for an unknown key.
    pub fn validate_api_key(&self, key: &str) -> Result<Principal, AuthFailure> {
        if self.lock().api_keys.contains(key) {
            Ok(Principal::ApiKey)
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

fn issue_locked(
    inner: &mut Inner,
    client_id: &str,
    with_refresh: bool,
    scope: Option<String>,
) -> IssuedToken {
    let now = Instant::now();
    // Drop long-dead tokens so a long run does not grow the map without bound.
    inner
        .access
        .retain(|_, t| now.saturating_duration_since(t.expires_at) < Duration::from_secs(3600));
    let access = format!("sim_at_{:032x}", inner.rng.random::<u128>());
    let ttl = inner.ttl;
    inner.access.insert(
        access.clone(),
        AccessToken {
            client_id: client_id.to_owned(),
            expires_at: now + ttl,
            revoked: false,
        },
    );
    let refresh = with_refresh.then(|| {
        let rt = format!("sim_rt_{:032x}", inner.rng.random::<u128>());
        inner.refresh.insert(rt.clone(), client_id.to_owned());
        rt
    });
    inner.issued += 1;
    IssuedToken {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: ttl.as_secs(),
        refresh_token: refresh,
        scope,
    }
}

fn authenticate_client(inner: &Inner, req: &TokenRequest) -> Result<String, OAuthError> {
    let Some(client_id) = req.client_id.as_deref() else {
        return Err(OAuthError::InvalidClient);
    };
    let Some(client) = inner.clients.get(client_id) else {
        return Err(OAuthError::InvalidClient);
    };
    match (&client.client_secret, req.client_secret.as_deref()) {
        (None, _) => Ok(client_id.to_owned()),
        (Some(expected), Some(given)) if expected == given => Ok(client_id.to_owned()),
        _ => Err(OAuthError::InvalidClient),
    }
}

/// Checks a JWT bearer assertion's shape and claims; returns the client id (`iss`).
fn check_assertion(assertion: &str, inner: &Inner) -> Result<String, OAuthError> {
    let bad = |why: &str| OAuthError::InvalidGrant(format!("assertion: {why}"));
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWS compact token"));
    };
    let header: serde_json::Value = b64::decode_url(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("unreadable header"))?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
    if alg.eq_ignore_ascii_case("none") || sig.is_empty() {
        return Err(bad("unsigned"));
    }
    let claims: serde_json::Value = b64::decode_url(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("unreadable claims"))?;
    let iss = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("missing iss"))?;
    if !inner.clients.contains_key(iss) {
        return Err(bad("unknown issuer"));
    }
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| bad("missing exp"))?;
    if exp <= chrono::Utc::now().timestamp() {
        return Err(bad("expired"));
    }
    if let Some(aud) = &inner.jwt_audience {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == aud,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(bad("audience mismatch"));
        }
    }
    Ok(iss.to_owned())
}

/// An axum handler for a standard token endpoint: reads the form body (and
/// HTTP Basic client credentials), answers RFC 6749 JSON. Mount it with
/// `.route("/oauth/token", post(token_endpoint)).with_state(auth)` or via
/// [`AuthState::token_router`].
pub async fn token_endpoint(
    State(auth): State<AuthState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut req: TokenRequest = match serde_urlencoded_from_str(&body) {
        Ok(r) => r,
        Err(e) => return OAuthError::InvalidRequest(e).into_response(),
    };
    if let Some((id, secret)) = basic_credentials(&headers) {
        req.client_id.get_or_insert(id);
        req.client_secret.get_or_insert(secret);
    }
    match auth.grant(&req) {
        Ok(token) => {
            let mut resp = axum::Json(token).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => e.into_response(),
    }
}

fn serde_urlencoded_from_str(body: &str) -> Result<TokenRequest, String> {
    // axum's `Form` extractor would answer malformed bodies itself; parsing
    // here keeps the RFC 6749 error shape.
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{body}")
            .parse()
            .map_err(|_| "malformed form body".to_owned())?,
    )
    .map_err(|e| e.body_text())?;
    let mut req = TokenRequest::default();
    for (k, v) in pairs.0 {
        let slot = match k.as_str() {
            "grant_type" => {
                req.grant_type = v;
                continue;
            }
            "client_id" => &mut req.client_id,
            "client_secret" => &mut req.client_secret,
            "refresh_token" => &mut req.refresh_token,
            "code" => &mut req.code,
            "redirect_uri" => &mut req.redirect_uri,
            "code_verifier" => &mut req.code_verifier,
            "assertion" => &mut req.assertion,
            "scope" => &mut req.scope,
            _ => continue,
        };
        *slot = Some(v);
    }
    Ok(req)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(b64::decode_std(encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

impl AuthState {
    /// A router serving [`token_endpoint`] at `path` (POST).
    pub fn token_router(&self, path: &str) -> axum::Router {
        axum::Router::new()
            .route(path, axum::routing::post(token_endpoint))
            .with_state(self.clone())
    }
}

/// Where a request may carry its credential.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `Authorization: Bearer <token>`: an issued access token or a static token.
    Bearer,
    /// An API key in this header (e.g. `x-api-key`).
    ApiKeyHeader(String),
    /// An API key in this query parameter (e.g. `api_token`).
    ApiKeyQuery(String),
}

/// Checks each request's credentials against an [`AuthState`], answering
/// failures in the provider's form. Admitted requests carry the
/// [`Principal`] as a request extension.
#[derive(Clone)]
pub struct AuthGuard {
    auth: AuthState,
    methods: Arc<Vec<AuthMethod>>,
    form: Arc<dyn ResponseForm>,
}

impl fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthGuard")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl AuthGuard {
    /// A guard accepting any of `methods`.
    pub fn new(auth: AuthState, methods: Vec<AuthMethod>, form: Arc<dyn ResponseForm>) -> Self {
        AuthGuard {
            auth,
            methods: Arc::new(methods),
            form,
        }
    }

    /// Checks one request's headers and query.
    ///
    /// # Errors
    /// The first failure among the credentials present, or
    /// [`AuthFailure::Missing`] when none is.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, AuthFailure> {
        let mut failure = AuthFailure::Missing;
        for method in self.methods.iter() {
            let result = match method {
                AuthMethod::Bearer => {
                    let Some(value) = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                    else {
                        continue;
                    };
                    match value.split_once(' ') {
                        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                            self.auth.validate_bearer(token.trim())
                        }
                        _ => Err(AuthFailure::Invalid),
                    }
                }
                AuthMethod::ApiKeyHeader(name) => {
                    let Some(value) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
                    else {
                        continue;
                    };
                    self.auth.validate_api_key(value)
                }
                AuthMethod::ApiKeyQuery(name) => {
                    let Some(value) = query.and_then(|q| query_param(q, name)) else {
                        continue;
                    };
                    self.auth.validate_api_key(&value)
                }
            };
            match result {
                Ok(p) => return Ok(p),
                Err(e) => {
                    if failure == AuthFailure::Missing {
                        failure = e;
                    }
                }
            }
        }
        Err(failure)
    }

    /// The axum middleware: `from_fn_with_state(guard, AuthGuard::middleware)`.
    pub async fn middleware(
        State(guard): State<AuthGuard>,
        mut req: Request,
        next: Next,
    ) -> Response {
        match guard.check(req.headers(), req.uri().query()) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                next.run(req).await
            }
            Err(failure) => guard.form.unauthorized(&failure),
        }
    }
}

/// The first value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    let uri: axum::http::Uri = format!("/?{query}").parse().ok()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value, alg: &str) -> String {
        let h = b64::encode_url_nopad(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let p = b64::encode_url_nopad(claims.to_string().as_bytes());
        format!("{h}.{p}.c2ln")
    }

    #[tokio::test]
    async fn grants() {
        let auth = AuthState::new(1);
        auth.register_client(OAuthClient::confidential("app", "sec"));
        auth.register_client(OAuthClient::public("svc@example.iam"));
        auth.add_refresh_token("app", "rt");
        assert_eq!(
            auth.grant(&TokenRequest::refresh("app", "wrong", "rt")),
            Err(OAuthError::InvalidClient)
        );
        assert!(matches!(
            auth.grant(&TokenRequest::refresh("app", "sec", "nope")),
            Err(OAuthError::InvalidGrant(_))
        ));
        assert!(
            auth.grant(&TokenRequest::client_credentials("app", "sec"))
                .is_ok()
        );
        assert_eq!(
            auth.grant(&TokenRequest::client_credentials("svc@example.iam", "")),
            Err(OAuthError::InvalidClient)
        );
        let exp = chrono::Utc::now().timestamp() + 300;
        let good = jwt(
            json!({"iss": "svc@example.iam", "exp": exp, "aud": "https://t"}),
            "RS256",
        );
        auth.set_jwt_audience(Some("https://t".into()));
        assert!(auth.grant(&TokenRequest::jwt_bearer(&good)).is_ok());
        let unsigned = jwt(
            json!({"iss": "svc@example.iam", "exp": exp, "aud": "https://t"}),
            "none",
        );
        assert!(auth.grant(&TokenRequest::jwt_bearer(&unsigned)).is_err());
        let expired = jwt(
            json!({"iss": "svc@example.iam", "exp": 10, "aud": "https://t"}),
            "RS256",
        );
        assert!(auth.grant(&TokenRequest::jwt_bearer(&expired)).is_err());
        let other_aud = jwt(
            json!({"iss": "svc@example.iam", "exp": exp, "aud": "x"}),
            "RS256",
        );
        assert!(auth.grant(&TokenRequest::jwt_bearer(&other_aud)).is_err());
        assert_eq!(auth.grants(GrantType::JwtBearer), 1);
        assert_eq!(auth.tokens_issued(), 2);
    }

    #[tokio::test]
    async fn pkce_s256() {
        let auth = AuthState::new(1);
        auth.register_client(OAuthClient::public("spa"));
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        // The RFC 7636 appendix B example.
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let code = auth
            .authorize(
                "spa",
                "http://localhost/cb",
                Some((challenge.into(), "S256".into())),
            )
            .unwrap_or_default();
        let bad = TokenRequest::authorization_code("spa", &code, "http://localhost/cb")
            .with_code_verifier("nope");
        assert!(auth.grant(&bad).is_err());
        // The failed attempt consumed the code (single use).
        let code = auth
            .authorize(
                "spa",
                "http://localhost/cb",
                Some((challenge.into(), "S256".into())),
            )
            .unwrap_or_default();
        let good = TokenRequest::authorization_code("spa", &code, "http://localhost/cb")
            .with_code_verifier(verifier);
        let token = auth.grant(&good);
        assert!(
            token.as_ref().is_ok_and(|t| t.refresh_token.is_some()),
            "{token:?}"
        );
        assert!(auth.grant(&good).is_err(), "codes are single-use");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_and_revoke() {
        let auth = AuthState::new(1);
        auth.set_token_ttl(Duration::from_secs(60));
        let t = auth.issue("app", true);
        assert!(auth.validate_bearer(&t.access_token).is_ok());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            auth.validate_bearer(&t.access_token),
            Err(AuthFailure::Expired)
        );
        let t2 = auth.issue("app", false);
        assert!(auth.revoke(&t2.access_token));
        assert_eq!(
            auth.validate_bearer(&t2.access_token),
            Err(AuthFailure::Revoked)
        );
        auth.add_static_token("pat");
        assert_eq!(auth.expire_all(), 0);
        assert_eq!(auth.validate_bearer("pat"), Ok(Principal::StaticToken));
        assert_eq!(auth.validate_bearer("nope"), Err(AuthFailure::Invalid));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = OAuthClient::confidential("app", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
        let r = TokenRequest::refresh("app", "topsecret", "rt-secret");
        let s = format!("{r:?}");
        assert!(!s.contains("topsecret") && !s.contains("rt-secret"));
        let auth = AuthState::new(3);
        let t = auth.issue("app", true);
        let s = format!("{t:?}");
        assert!(!s.contains(&t.access_token));
    }

    #[test]
    fn guard_checks_each_method() {
        let auth = AuthState::new(1);
        auth.add_api_key("k1");
        let guard = AuthGuard::new(
            auth.clone(),
            vec![
                AuthMethod::Bearer,
                AuthMethod::ApiKeyQuery("api_token".into()),
            ],
            Arc::new(crate::form::DefaultForm),
        );
        let h = HeaderMap::new();
        assert_eq!(guard.check(&h, None), Err(AuthFailure::Missing));
        assert_eq!(
            guard.check(&h, Some("a=1&api_token=k1")),
            Ok(Principal::ApiKey)
        );
        assert_eq!(
            guard.check(&h, Some("api_token=k2")),
            Err(AuthFailure::Invalid)
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer nope".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(guard.check(&h, Some("api_token=k1")), Ok(Principal::ApiKey));
        assert_eq!(guard.check(&h, None), Err(AuthFailure::Invalid));
    }
}
