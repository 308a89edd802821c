//! OAuth 2.0 token flows and the token endpoint request.
//!
//! Token requests are sent by this crate over the client's own reqwest
//! client instead of through the `oauth2` crate's HTTP integration: that way
//! they share the client's root certificates, timeouts, metrics and error
//! scrubbing; the provider's extra response fields (Salesforce's
//! `instance_url`) are kept; and Marketo's `GET` token endpoint fits the same
//! code. The `oauth2` crate builds the authorization URL, the PKCE challenge
//! and the CSRF state.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, ErrorKind, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::token::Token;
use crate::classify::{ResponseParts, Verdict, default_classify};
use crate::metrics::{Metrics, TOKEN_ENDPOINT};

/// What the token request needs from the client: its transport, name and
/// metrics.
#[derive(Clone)]
pub(crate) struct TokenTransport {
    pub(crate) http: reqwest::Client,
    pub(crate) provider: Arc<str>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) timeout: Duration,
}

/// How the client authenticates itself at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_id` and `client_secret` in the request parameters (default).
    #[default]
    RequestBody,
    /// HTTP Basic authentication with the client id and secret.
    BasicAuth,
}

/// How the token request is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRequestStyle {
    /// `POST` with an `application/x-www-form-urlencoded` body (RFC 6749).
    #[default]
    PostForm,
    /// `GET` with the parameters in the query string (Marketo's identity
    /// endpoint). The URL is never put into errors or logs.
    GetQuery,
}

/// A token request ready to send.
pub(crate) struct TokenRequest {
    url: Url,
    style: TokenRequestStyle,
    params: Vec<(&'static str, String)>,
    secret_params: Vec<(&'static str, SecretString)>,
    basic: Option<(String, SecretString)>,
}

impl TokenRequest {
    fn new(url: &Url, style: TokenRequestStyle, grant_type: &str) -> Self {
        TokenRequest {
            url: url.clone(),
            style,
            params: vec![("grant_type", grant_type.to_owned())],
            secret_params: Vec::new(),
            basic: None,
        }
    }

    fn client(mut self, method: ClientAuthMethod, id: &str, secret: Option<&SecretString>) -> Self {
        match (method, secret) {
            (ClientAuthMethod::BasicAuth, Some(secret)) => {
                self.basic = Some((id.to_owned(), secret.clone()));
            }
            (_, secret) => {
                self.params.push(("client_id", id.to_owned()));
                if let Some(secret) = secret {
                    self.secret_params.push(("client_secret", secret.clone()));
                }
            }
        }
        self
    }

    fn scopes(mut self, scopes: &[String]) -> Self {
        if !scopes.is_empty() {
            self.params.push(("scope", scopes.join(" ")));
        }
        self
    }

    fn known_secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .secret_params
            .iter()
            .map(|(_, s)| s.expose_secret().to_owned())
            .collect();
        if let Some((_, s)) = &self.basic {
            v.push(s.expose_secret().to_owned());
        }
        v
    }
}

/// Sends a token request and reads the token response.
pub(crate) async fn request_token(t: &TokenTransport, req: TokenRequest) -> Result<Token> {
    let secrets = req.known_secrets();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let encoded = {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.params {
            pairs.append_pair(k, v);
        }
        for (k, v) in &req.secret_params {
            pairs.append_pair(k, v.expose_secret());
        }
        pairs.finish()
    };
    let (method, builder) = match req.style {
        TokenRequestStyle::PostForm => (
            Method::POST,
            t.http
                .post(req.url.clone())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(encoded.clone()),
        ),
        TokenRequestStyle::GetQuery => {
            let mut url = req.url.clone();
            url.set_query(Some(&encoded));
            (Method::GET, t.http.get(url))
        }
    };
    let mut builder = builder
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .timeout(t.timeout);
    if let Some((id, secret)) = &req.basic {
        builder = builder.basic_auth(id, Some(secret.expose_secret()));
    }
    let sent = if method == Method::POST {
        encoded.len() as u64
    } else {
        0
    };
    t.metrics
        .record_attempt(&t.provider, TOKEN_ENDPOINT, sent, false);
    let started = tokio::time::Instant::now();
    let result = async {
        let response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;
    let (status, headers, body) = match result {
        Ok(parts) => parts,
        Err(err) => {
            let error = crate::client::transport_error(err, TOKEN_ENDPOINT)
                .with_context("provider", &t.provider);
            t.metrics
                .record_error(&t.provider, TOKEN_ENDPOINT, error.kind().as_str());
            return Err(error);
        }
    };
    t.metrics.record_response(
        &t.provider,
        TOKEN_ENDPOINT,
        started.elapsed(),
        body.len() as u64,
    );
    let parts = ResponseParts::new(
        &t.provider,
        TOKEN_ENDPOINT,
        &method,
        status,
        &headers,
        &body,
        &secret_refs,
    );
    let outcome = match default_classify(&parts) {
        Verdict::Success => parse_token_response(&body),
        Verdict::Failure(err) | Verdict::RefreshAuth(err) => Err(token_failure(status, err)),
    };
    if let Err(err) = &outcome {
        if status == StatusCode::TOO_MANY_REQUESTS {
            t.metrics.record_rate_limited(&t.provider, TOKEN_ENDPOINT);
        }
        t.metrics
            .record_error(&t.provider, TOKEN_ENDPOINT, err.kind().as_str());
    }
    outcome
}

/// 400 and 401 from a token endpoint (`invalid_grant`, `invalid_client`)
/// mean the credentials are wrong or revoked: an auth error that retrying
/// will not fix. Rate limits and 5xx keep their kinds.
fn token_failure(status: StatusCode, err: Error) -> Error {
    if matches!(status.as_u16(), 400 | 401 | 403) {
        let mut e = Error::new(
            ErrorKind::Auth,
            format!("token request rejected: {}", err.message()),
        )
        .with_operation(TOKEN_ENDPOINT);
        for (k, v) in err.context() {
            e = e.with_context(k, v);
        }
        e.set_permanent()
    } else {
        err
    }
}

fn parse_token_response(body: &[u8]) -> Result<Token> {
    let invalid = |what: &str| {
        Error::new(
            ErrorKind::Auth,
            format!("token response is not usable: {what}"),
        )
        .with_operation(TOKEN_ENDPOINT)
    };
    let json: Value = serde_json::from_slice(body).map_err(|_| invalid("not JSON"))?;
    let Value::Object(map) = json else {
        return Err(invalid("not a JSON object"));
    };
    let access = map
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no access_token"))?;
    let mut token = Token::new(SecretString::from(access.to_owned()));
    if let Some(tt) = map.get("token_type").and_then(Value::as_str) {
        token = token.with_token_type(tt);
    }
    // Numbers or numeric strings both occur in the wild.
    let expires_in = match map.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(secs) = expires_in {
        token = token.with_lifetime(Duration::from_secs(secs));
    }
    if let Some(rt) = map
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        token = token.with_refresh_token(SecretString::from(rt.to_owned()));
    }
    if let Some(scope) = map.get("scope").and_then(Value::as_str) {
        token = token.with_scope(scope);
    }
    for (k, v) in map {
        if !matches!(
            k.as_str(),
            "access_token" | "token_type" | "expires_in" | "refresh_token" | "scope"
        ) {
            token = token.with_extra(k, v);
        }
    }
    Ok(token)
}

/// A flow that obtains access tokens from a token endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TokenFlow {
    /// OAuth 2.0 refresh-token grant.
    RefreshToken(RefreshTokenFlow),
    /// OAuth 2.0 client-credentials grant.
    ClientCredentials(ClientCredentialsFlow),
    /// JWT bearer assertion (RFC 7523): Salesforce JWT flow, Google service accounts.
    JwtBearer(JwtBearerFlow),
}

impl TokenFlow {
    pub(crate) fn initial_refresh_token(&self) -> Option<SecretString> {
        match self {
            TokenFlow::RefreshToken(f) => Some(f.refresh_token.clone()),
            _ => None,
        }
    }

    pub(crate) fn uses_refresh_token(&self) -> bool {
        matches!(self, TokenFlow::RefreshToken(_))
    }

    pub(crate) fn token_request(
        &self,
        refresh_token: Option<&SecretString>,
    ) -> Result<TokenRequest> {
        match self {
            TokenFlow::RefreshToken(f) => {
                let rt = refresh_token.unwrap_or(&f.refresh_token);
                let mut req =
                    TokenRequest::new(&f.token_url, TokenRequestStyle::PostForm, "refresh_token")
                        .client(f.client_auth, &f.client_id, f.client_secret.as_ref())
                        .scopes(&f.scopes);
                req.secret_params.push(("refresh_token", rt.clone()));
                Ok(req)
            }
            TokenFlow::ClientCredentials(f) => {
                let mut req = TokenRequest::new(&f.token_url, f.style, "client_credentials")
                    .client(f.client_auth, &f.client_id, Some(&f.client_secret))
                    .scopes(&f.scopes);
                req.params
                    .extend(f.extra.iter().map(|(k, v)| (*k, v.clone())));
                Ok(req)
            }
            TokenFlow::JwtBearer(f) => {
                let assertion = f.assertion()?;
                let mut req = TokenRequest::new(
                    &f.token_url,
                    TokenRequestStyle::PostForm,
                    "urn:ietf:params:oauth:grant-type:jwt-bearer",
                );
                req.secret_params.push(("assertion", assertion));
                Ok(req)
            }
        }
    }

    /// Secrets of the flow itself, for scrubbing.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            TokenFlow::RefreshToken(f) => {
                let mut v = vec![f.refresh_token.expose_secret().to_owned()];
                if let Some(s) = &f.client_secret {
                    v.push(s.expose_secret().to_owned());
                }
                v
            }
            TokenFlow::ClientCredentials(f) => vec![f.client_secret.expose_secret().to_owned()],
            TokenFlow::JwtBearer(_) => Vec::new(),
        }
    }
}

impl From<RefreshTokenFlow> for TokenFlow {
    fn from(f: RefreshTokenFlow) -> Self {
        TokenFlow::RefreshToken(f)
    }
}

impl From<ClientCredentialsFlow> for TokenFlow {
    fn from(f: ClientCredentialsFlow) -> Self {
        TokenFlow::ClientCredentials(f)
    }
}

impl From<JwtBearerFlow> for TokenFlow {
    fn from(f: JwtBearerFlow) -> Self {
        TokenFlow::JwtBearer(f)
    }
}

/// The OAuth 2.0 refresh-token grant (HubSpot, Salesforce web-server flow,
/// Pipedrive OAuth apps). The refresh token may rotate; the newest one is
/// kept and handed to the [`TokenStore`](crate::TokenStore).
#[derive(Clone, Debug)]
pub struct RefreshTokenFlow {
    token_url: Url,
    client_id: String,
    client_secret: Option<SecretString>,
    refresh_token: SecretString,
    scopes: Vec<String>,
    client_auth: ClientAuthMethod,
}

impl RefreshTokenFlow {
    /// A flow against `token_url` for a public client (no secret).
    pub fn new(token_url: Url, client_id: impl Into<String>, refresh_token: SecretString) -> Self {
        RefreshTokenFlow {
            token_url,
            client_id: client_id.into(),
            client_secret: None,
            refresh_token,
            scopes: Vec::new(),
            client_auth: ClientAuthMethod::default(),
        }
    }

    /// Sets the client secret (confidential clients).
    #[must_use]
    pub fn client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// Requests these scopes on refresh (usually not needed).
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// How the client authenticates at the token endpoint.
    #[must_use]
    pub fn client_auth(mut self, method: ClientAuthMethod) -> Self {
        self.client_auth = method;
        self
    }
}

/// The OAuth 2.0 client-credentials grant (Marketo, HubSpot server apps).
#[derive(Clone, Debug)]
pub struct ClientCredentialsFlow {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    scopes: Vec<String>,
    client_auth: ClientAuthMethod,
    style: TokenRequestStyle,
    extra: Vec<(&'static str, String)>,
}

impl ClientCredentialsFlow {
    /// A flow against `token_url`.
    pub fn new(token_url: Url, client_id: impl Into<String>, client_secret: SecretString) -> Self {
        ClientCredentialsFlow {
            token_url,
            client_id: client_id.into(),
            client_secret,
            scopes: Vec::new(),
            client_auth: ClientAuthMethod::default(),
            style: TokenRequestStyle::default(),
            extra: Vec::new(),
        }
    }

    /// Requests these scopes.
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// How the client authenticates at the token endpoint.
    #[must_use]
    pub fn client_auth(mut self, method: ClientAuthMethod) -> Self {
        self.client_auth = method;
        self
    }

    /// How the request is sent (Marketo uses [`TokenRequestStyle::GetQuery`]).
    #[must_use]
    pub fn style(mut self, style: TokenRequestStyle) -> Self {
        self.style = style;
        self
    }

    /// Adds a non-secret request parameter (e.g. `audience`).
    #[must_use]
    pub fn param(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
}

/// The JWT bearer assertion grant (RFC 7523) signed with RS256: the
/// Salesforce JWT flow and Google service accounts.
#[derive(Clone)]
pub struct JwtBearerFlow {
    token_url: Url,
    issuer: String,
    subject: Option<String>,
    audience: String,
    scopes: Vec<String>,
    key: EncodingKey,
    key_id: Option<String>,
    lifetime: Duration,
}

impl fmt::Debug for JwtBearerFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBearerFlow")
            .field("token_url", &self.token_url.as_str())
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .field("key", &"[REDACTED]")
            .field("key_id", &self.key_id)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

impl JwtBearerFlow {
    /// A flow that signs assertions `{iss: issuer, aud: audience}` with the
    /// RSA private key in `private_key_pem` (PKCS#1 or PKCS#8) and posts them
    /// to `token_url`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the key is not an RSA private key in PEM.
    pub fn new(
        token_url: Url,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        private_key_pem: &SecretString,
    ) -> Result<Self> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes()).map_err(
            |_| {
                Error::invalid_input(
                    "JWT bearer flow: the private key is not an RSA private key in PEM form",
                )
            },
        )?;
        Ok(JwtBearerFlow {
            token_url,
            issuer: issuer.into(),
            subject: None,
            audience: audience.into(),
            scopes: Vec::new(),
            key,
            key_id: None,
            lifetime: Duration::from_secs(180),
        })
    }

    /// The Salesforce JWT bearer flow: `login_url` is
    /// `https://login.salesforce.com`, `https://test.salesforce.com`, a My
    /// Domain URL or a simulator; `consumer_key` is the connected app's; the
    /// token is issued for `username`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid key or login URL.
    pub fn salesforce(
        login_url: &Url,
        consumer_key: impl Into<String>,
        username: impl Into<String>,
        private_key_pem: &SecretString,
    ) -> Result<Self> {
        let token_url = login_url
            .join("/services/oauth2/token")
            .map_err(|_| Error::invalid_input("Salesforce login URL cannot be a base"))?;
        let audience = login_url.origin().ascii_serialization();
        Ok(
            JwtBearerFlow::new(token_url, consumer_key, audience, private_key_pem)?
                .subject(username),
        )
    }

    /// A Google service account: the assertion is issued by the key's
    /// `client_email`, for `scopes`, to the key's `token_uri`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid key or token URI.
    pub fn google_service_account<I, S>(key: &ServiceAccountKey, scopes: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let token_url = Url::parse(&key.token_uri)
            .map_err(|_| Error::invalid_input("service account key: token_uri is not a URL"))?;
        let mut flow = JwtBearerFlow::new(
            token_url,
            key.client_email.clone(),
            key.token_uri.clone(),
            &key.private_key,
        )?
        .scopes(scopes);
        flow.key_id = key.private_key_id.clone();
        flow.lifetime = Duration::from_secs(3600);
        Ok(flow)
    }

    /// Sets the subject (`sub`): the Salesforce username, or the user a
    /// Google service account acts for (domain-wide delegation).
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the `scope` claim (space-separated).
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the `kid` header.
    #[must_use]
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }

    /// How long each assertion is valid (default 3 minutes; 1 hour for
    /// Google service accounts).
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Replaces the token endpoint (a simulator on 127.0.0.1). The audience
    /// stays as it was.
    #[must_use]
    pub fn token_url(mut self, url: Url) -> Self {
        self.token_url = url;
        self
    }

    /// A signed assertion for now.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if signing fails.
    pub fn assertion(&self) -> Result<SecretString> {
        let now = chrono::Utc::now().timestamp();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(3600);
        let claims = Claims {
            iss: &self.issuer,
            sub: self.subject.as_deref(),
            aud: &self.audience,
            iat: now,
            exp: now + lifetime,
            scope: (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(SecretString::from)
            .map_err(|_| Error::invalid_input("JWT bearer flow: signing the assertion failed"))
    }
}

/// A Google service-account JSON key, as downloaded from the Cloud console.
///
/// `Debug` never shows the private key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServiceAccountKey {
    /// `project_id`.
    pub project_id: Option<String>,
    /// `private_key_id`, sent as the JWT `kid`.
    pub private_key_id: Option<String>,
    /// `client_email`, the issuer of assertions.
    pub client_email: String,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `token_uri` (default `https://oauth2.googleapis.com/token`).
    pub token_uri: String,
    private_key: SecretString,
}

#[derive(Deserialize)]
struct RawServiceAccountKey {
    #[serde(rename = "type")]
    key_type: String,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    client_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Google's token endpoint.
    pub const GOOGLE_TOKEN_URI: &'static str = "https://oauth2.googleapis.com/token";

    /// Parses the JSON key file's contents.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the JSON is malformed, a required field
    /// is missing, or `type` is not `service_account`. The message never
    /// quotes the file.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            Error::invalid_input(format!(
                "service account key is not valid ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if raw.key_type != "service_account" {
            return Err(Error::invalid_input(
                "service account key: `type` is not \"service_account\"",
            ));
        }
        Ok(ServiceAccountKey {
            project_id: raw.project_id,
            private_key_id: raw.private_key_id,
            client_email: raw.client_email,
            client_id: raw.client_id,
            token_uri: raw
                .token_uri
                .unwrap_or_else(|| Self::GOOGLE_TOKEN_URI.to_owned()),
            private_key: SecretString::from(raw.private_key),
        })
    }

    /// Reads and parses a JSON key file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the file cannot be read or parsed.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let text = std::fs::read_to_string(path.as_ref()).map_err(|e| {
            Error::invalid_input(format!(
                "cannot read service account key {}",
                path.as_ref().display()
            ))
            .with_source(e)
        })?;
        Self::from_json(&text)
    }

    /// Replaces `token_uri` (a simulator on 127.0.0.1).
    #[must_use]
    pub fn with_token_uri(mut self, uri: impl Into<String>) -> Self {
        self.token_uri = uri.into();
        self
    }

    /// The private key (PEM).
    pub fn private_key(&self) -> &SecretString {
        &self.private_key
    }
}

/// The PKCE code verifier of one authorization request; keep it (e.g. in the
/// user's session) until the redirect comes back with the code.
#[derive(Clone)]
pub struct PkceVerifier(SecretString);

impl fmt::Debug for PkceVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PkceVerifier([REDACTED])")
    }
}

impl PkceVerifier {
    /// Restores a verifier saved earlier.
    pub fn new(secret: SecretString) -> Self {
        PkceVerifier(secret)
    }

    /// The verifier, to save until the redirect comes back.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// Where to send the user, and what to keep until they come back.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The provider's authorization page with every parameter set.
    pub url: Url,
    /// The CSRF `state`; reject a redirect whose `state` differs.
    pub state: String,
    /// The PKCE verifier for [`AuthorizationCodeFlow::exchange_code`].
    pub pkce_verifier: PkceVerifier,
}

/// The OAuth 2.0 authorization-code grant with PKCE (S256), for apps whose
/// users connect their own CRM account.
///
/// ```
/// use crm_http::AuthorizationCodeFlow;
/// use url::Url;
///
/// let flow = AuthorizationCodeFlow::new(
///     "my-client-id",
///     Url::parse("https://app.hubspot.com/oauth/authorize").unwrap(),
///     Url::parse("https://api.hubapi.com/oauth/v1/token").unwrap(),
///     Url::parse("http://127.0.0.1:8080/callback").unwrap(),
/// )
/// .scopes(["crm.objects.contacts.read"]);
/// let req = flow.authorize_url();
/// assert!(req.url.as_str().contains("code_challenge_method=S256"));
/// // Send the user to req.url; keep req.state and req.pkce_verifier; then
/// // `flow.exchange_code(&client, code, req.pkce_verifier).await`.
/// ```
#[derive(Clone, Debug)]
pub struct AuthorizationCodeFlow {
    client_id: String,
    client_secret: Option<SecretString>,
    auth_url: Url,
    token_url: Url,
    redirect_url: Url,
    scopes: Vec<String>,
    client_auth: ClientAuthMethod,
    extra_auth_params: Vec<(String, String)>,
}

impl AuthorizationCodeFlow {
    /// A flow for a public client; add a secret with
    /// [`client_secret`](Self::client_secret) for confidential ones.
    pub fn new(
        client_id: impl Into<String>,
        auth_url: Url,
        token_url: Url,
        redirect_url: Url,
    ) -> Self {
        AuthorizationCodeFlow {
            client_id: client_id.into(),
            client_secret: None,
            auth_url,
            token_url,
            redirect_url,
            scopes: Vec::new(),
            client_auth: ClientAuthMethod::default(),
            extra_auth_params: Vec::new(),
        }
    }

    /// Sets the client secret.
    #[must_use]
    pub fn client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// Requests these scopes.
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// How the client authenticates at the token endpoint.
    #[must_use]
    pub fn client_auth(mut self, method: ClientAuthMethod) -> Self {
        self.client_auth = method;
        self
    }

    /// Adds a parameter to the authorization URL (e.g. `prompt=consent`).
    #[must_use]
    pub fn auth_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_auth_params.push((name.into(), value.into()));
        self
    }

    /// A fresh authorization URL with a random `state` and PKCE challenge.
    pub fn authorize_url(&self) -> AuthorizationRequest {
        let client = oauth2::basic::BasicClient::new(oauth2::ClientId::new(self.client_id.clone()))
            .set_auth_uri(oauth2::AuthUrl::from_url(self.auth_url.clone()))
            .set_redirect_uri(oauth2::RedirectUrl::from_url(self.redirect_url.clone()));
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(oauth2::CsrfToken::new_random)
            .add_scopes(self.scopes.iter().cloned().map(oauth2::Scope::new))
            .set_pkce_challenge(challenge);
        for (k, v) in &self.extra_auth_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, state) = request.url();
        AuthorizationRequest {
            url,
            state: state.secret().clone(),
            pkce_verifier: PkceVerifier(SecretString::from(verifier.secret().clone())),
        }
    }

    /// Exchanges the authorization `code` for tokens.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] when the provider rejects the code or verifier;
    /// transport errors as [`ErrorKind::Transient`].
    pub async fn exchange_code(
        &self,
        client: &crate::HttpClient,
        code: &str,
        verifier: PkceVerifier,
    ) -> Result<Token> {
        let mut req = TokenRequest::new(
            &self.token_url,
            TokenRequestStyle::PostForm,
            "authorization_code",
        )
        .client(
            self.client_auth,
            &self.client_id,
            self.client_secret.as_ref(),
        );
        req.params
            .push(("redirect_uri", self.redirect_url.to_string()));
        req.secret_params
            .push(("code", SecretString::from(code.to_owned())));
        req.secret_params.push(("code_verifier", verifier.0));
        request_token(&client.token_transport(), req).await
    }

    /// The refresh-token flow that keeps the exchanged tokens fresh.
    pub fn refresh_flow(&self, refresh_token: SecretString) -> RefreshTokenFlow {
        RefreshTokenFlow {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            refresh_token,
            scopes: Vec::new(),
            client_auth: self.client_auth,
        }
    }
}
