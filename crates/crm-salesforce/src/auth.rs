//! Authentication: the OAuth 2.0 flows of a Salesforce connected app, and
//! the session that turns them into an authenticated client for the org's
//! `instance_url`.
//!
//! | flow | [`Credentials`] | refresh |
//! |---|---|---|
//! | web server (authorization code + PKCE) | [`web_server_flow`], then `RefreshToken` | refresh token |
//! | refresh token | `RefreshToken` | refresh token |
//! | JWT bearer (connected app certificate) | `JwtBearer` | a new assertion |
//! | client credentials | `ClientCredentials` | a new grant |
//! | username-password (**legacy**, seed 004) | `UsernamePassword` | a new login |
//! | a ready access token | `AccessToken` | none |
//!
//! Salesforce sends no `expires_in`: a session lasts as the org's session
//! timeout says. With [`SalesforceConfig::session_timeout`] set, an OAuth
//! session is renewed shortly before it runs out (one token request for all
//! requests in flight), so long Bulk downloads never meet an expired
//! session. Otherwise, and whenever a call still answers 401
//! `INVALID_SESSION_ID`, it is renewed once, shared by every request that
//! saw the same expired session, and the request is sent again.

use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, ErrorKind, Result};
use crm_http::reqwest::Method;
use crm_http::reqwest::header::{CONTENT_TYPE, HeaderValue};
use crm_http::{
    Auth, AuthorizationCodeFlow, ClientCredentialsFlow, HttpClient, HttpClientBuilder,
    JwtBearerFlow, Metrics, RateLimitConfig, RateLimiter, RefreshTokenFlow, RequestOptions,
    RetryPolicy, Token, TokenFlow, TokenOptions, TokenStore,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{Credentials, LoginHost, SalesforceConfig};
use crate::error::SalesforceClassifier;
use crate::wire::TokenResponse;

/// The OAuth 2.0 web-server flow of a connected app, with PKCE and a CSRF
/// `state`, asking for the `api` and `refresh_token` scopes.
///
/// ```
/// use crm_salesforce::{LoginHost, auth::web_server_flow};
/// let flow = web_server_flow(
///     &LoginHost::Production,
///     "3MVG9...consumer-key",
///     None,
///     url::Url::parse("https://app.example.com/oauth/callback").unwrap(),
/// );
/// let req = flow.authorize_url();
/// assert!(req.url.as_str().starts_with("https://login.salesforce.com/services/oauth2/authorize?"));
/// assert!(req.url.as_str().contains("code_challenge_method=S256"));
/// // Send the user to req.url; on the callback check req.state, then
/// // `flow.exchange_code(&http, code, req.pkce_verifier)` and
/// // `credentials_from_token(&token, ...)`.
/// ```
pub fn web_server_flow(
    login: &LoginHost,
    client_id: impl Into<String>,
    client_secret: Option<SecretString>,
    redirect_url: Url,
) -> AuthorizationCodeFlow {
    let flow = AuthorizationCodeFlow::new(
        client_id,
        login.authorize_url(),
        login.token_url(),
        redirect_url,
    )
    .scopes(["api", "refresh_token"]);
    match client_secret {
        Some(s) => flow.client_secret(s),
        None => flow,
    }
}

/// The instance URL and [`Credentials::RefreshToken`] from the token of a
/// code exchange (see [`web_server_flow`]).
///
/// # Errors
/// [`ErrorKind::Auth`] when the token has no refresh token or `instance_url`.
pub fn credentials_from_token(
    token: &Token,
    client_id: impl Into<String>,
    client_secret: Option<SecretString>,
) -> Result<(Credentials, Url)> {
    let refresh_token = token.refresh_token().cloned().ok_or_else(|| {
        auth_error("the token response has no refresh_token (scope refresh_token missing?)")
    })?;
    let instance = instance_url(token)?;
    Ok((
        Credentials::RefreshToken {
            client_id: client_id.into(),
            client_secret,
            refresh_token,
        },
        instance,
    ))
}

fn auth_error(message: &str) -> Error {
    Error::new(ErrorKind::Auth, message.to_owned()).with_operation("salesforce.auth")
}

fn instance_url(token: &Token) -> Result<Url> {
    let raw = token
        .extra("instance_url")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| auth_error("the token response has no instance_url"))?;
    Url::parse(raw).map_err(|_| auth_error("the token response's instance_url is not a URL"))
}

/// The session of an OAuth flow: the data client and when to renew it.
struct OAuthSession {
    data: HttpClient,
    generation: u64,
    renew_at: Option<tokio::time::Instant>,
}

/// How long before the session timeout a session is renewed: a fifth of the
/// timeout, at most two minutes.
fn renew_margin(timeout: Option<Duration>) -> Option<Duration> {
    timeout.map(|t| (t / 5).min(Duration::from_secs(120)))
}

/// Keeps a session's newest token (a rotated refresh token survives
/// renewals) and stamps it with the session timeout, since Salesforce's
/// token response has no `expires_in`.
struct SessionStore {
    token: std::sync::Mutex<Option<Token>>,
    timeout: Option<Duration>,
}

#[async_trait::async_trait]
impl TokenStore for SessionStore {
    async fn load(&self) -> Result<Option<Token>> {
        Ok(self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    async fn save(&self, token: &Token) -> Result<()> {
        let token = match self.timeout {
            Some(t) if token.expires_at().is_none() => token.clone().with_lifetime(t),
            _ => token.clone(),
        };
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        Ok(())
    }
}

/// An authenticated connection to one org: the HTTP client for its
/// `instance_url`, renewed when the session expires. Clones share it.
#[derive(Clone)]
pub(crate) struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    kind: Kind,
    metrics: Arc<Metrics>,
}

enum Kind {
    /// OAuth flows crm-http refreshes itself (on a 401, once, single-flight);
    /// with a known session timeout, renewed here before it runs out.
    OAuth {
        flow: TokenFlow,
        store: Arc<SessionStore>,
        config: Box<SalesforceConfig>,
        limiter: Arc<RateLimiter>,
        current: Mutex<Option<OAuthSession>>,
    },
    /// A fixed token.
    Static { data: HttpClient },
    /// The legacy username-password flow: renewed by logging in again.
    Password {
        login: HttpClient,
        token_url: Url,
        form: Vec<(&'static str, String)>,
        secrets: Vec<(&'static str, SecretString)>,
        current: Mutex<Option<(HttpClient, u64)>>,
        config: Box<SalesforceConfig>,
        limiter: Arc<RateLimiter>,
    },
}

fn builder(
    config: &SalesforceConfig,
    limiter: &Arc<RateLimiter>,
    metrics: &Arc<Metrics>,
) -> HttpClientBuilder {
    let mut b = HttpClient::builder("salesforce")
        .rate_limiter(Arc::clone(limiter))
        .metrics(Arc::clone(metrics))
        .classifier(SalesforceClassifier)
        .retry(RetryPolicy::default())
        .timeout(config.timeout);
    if let Some(pem) = &config.root_certificate_pem {
        b = b.root_certificate_pem(pem.as_bytes());
    }
    b
}

impl Session {
    pub(crate) fn new(config: &SalesforceConfig) -> Result<Session> {
        let metrics = Arc::new(Metrics::new());
        // The daily allocation (`Sforce-Limit-Info`) is watched by
        // `SalesforceClient` itself, with readings that expire: the shared
        // limiter would hold an exhausted reading for an hour without sending
        // anything that could show the rolling window freeing up.
        let limiter = Arc::new(RateLimiter::new(
            RateLimitConfig::unlimited()
                .max_in_flight(config.max_in_flight)
                .adaptive(false),
        )?);
        let login = config.login.url();
        let token_url = config.login.token_url();
        let oauth = |flow: TokenFlow| -> Result<Kind> {
            Ok(Kind::OAuth {
                flow,
                store: Arc::new(SessionStore {
                    token: std::sync::Mutex::new(None),
                    timeout: config.session_timeout,
                }),
                config: Box::new(config.clone()),
                limiter: Arc::clone(&limiter),
                current: Mutex::new(None),
            })
        };
        let kind = match &config.credentials {
            Credentials::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let mut flow =
                    RefreshTokenFlow::new(token_url, client_id.clone(), refresh_token.clone());
                if let Some(s) = client_secret {
                    flow = flow.client_secret(s.clone());
                }
                oauth(flow.into())?
            }
            Credentials::JwtBearer {
                consumer_key,
                username,
                private_key_pem,
            } => oauth(
                JwtBearerFlow::salesforce(
                    &login,
                    consumer_key.clone(),
                    username.clone(),
                    private_key_pem,
                )?
                .into(),
            )?,
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => oauth(
                ClientCredentialsFlow::new(token_url, client_id.clone(), client_secret.clone())
                    .into(),
            )?,
            Credentials::AccessToken {
                access_token,
                instance_url,
            } => Kind::Static {
                data: builder(config, &limiter, &metrics)
                    .auth(Auth::bearer(access_token.clone()))
                    .base_url(instance_url.as_str())
                    .build()?,
            },
            Credentials::UsernamePassword {
                client_id,
                client_secret,
                username,
                password,
                security_token,
            } => {
                let mut pw = password.expose_secret().to_owned();
                if let Some(t) = security_token {
                    pw.push_str(t.expose_secret());
                }
                Kind::Password {
                    login: builder(config, &limiter, &metrics).build()?,
                    token_url,
                    form: vec![
                        ("grant_type", "password".into()),
                        ("client_id", client_id.clone()),
                        ("username", username.clone()),
                    ],
                    secrets: vec![
                        ("client_secret", client_secret.clone()),
                        ("password", SecretString::from(pw)),
                    ],
                    current: Mutex::new(None),
                    config: Box::new(config.clone()),
                    limiter: Arc::clone(&limiter),
                }
            }
        };
        Ok(Session {
            inner: Arc::new(SessionInner { kind, metrics }),
        })
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The client for data calls and the generation of its session.
    pub(crate) async fn data(&self) -> Result<(HttpClient, u64)> {
        match &self.inner.kind {
            Kind::Static { data } => Ok((data.clone(), 0)),
            Kind::OAuth {
                flow,
                store,
                config,
                limiter,
                current,
            } => {
                let mut guard = current.lock().await;
                if let Some(s) = guard.as_ref()
                    && s.renew_at.is_none_or(|at| tokio::time::Instant::now() < at)
                {
                    return Ok((s.data.clone(), s.generation));
                }
                // A new client whose token manager starts from the stored
                // token, stamped with the session timeout, so it fetches a
                // new one (with the newest refresh token) at once.
                let margin = renew_margin(config.session_timeout);
                let options = TokenOptions::default()
                    .refresh_skew(margin.map_or(Duration::from_secs(120), |m| m * 2))
                    .store(Arc::clone(store) as Arc<dyn TokenStore>);
                let http = builder(config, limiter, &self.inner.metrics)
                    .auth(Auth::oauth_with(flow.clone(), options))
                    .build()?;
                let token = http
                    .token()
                    .await?
                    .ok_or_else(|| auth_error("no OAuth token"))?;
                let data = http.with_base_url(instance_url(&token)?);
                let generation = guard.as_ref().map_or(0, |s| s.generation + 1);
                let renew_at = config.session_timeout.map(|t| {
                    tokio::time::Instant::now() + t.saturating_sub(margin.unwrap_or_default())
                });
                *guard = Some(OAuthSession {
                    data: data.clone(),
                    generation,
                    renew_at,
                });
                Ok((data, generation))
            }
            Kind::Password { current, .. } => {
                let mut guard = current.lock().await;
                if let Some((c, g)) = guard.as_ref() {
                    return Ok((c.clone(), *g));
                }
                let client = self.password_login().await?;
                *guard = Some((client.clone(), 1));
                Ok((client, 1))
            }
        }
    }

    /// After a 401 with a session of `generation`: logs in again unless
    /// another request already did. Returns whether a retry may succeed.
    pub(crate) async fn renew(&self, generation: u64) -> Result<bool> {
        let Kind::Password { current, .. } = &self.inner.kind else {
            return Ok(false);
        };
        let mut guard = current.lock().await;
        if let Some((_, g)) = guard.as_ref()
            && *g != generation
        {
            return Ok(true);
        }
        let client = self.password_login().await?;
        *guard = Some((client, generation + 1));
        Ok(true)
    }

    async fn password_login(&self) -> Result<HttpClient> {
        let Kind::Password {
            login,
            token_url,
            form,
            secrets,
            config,
            limiter,
            ..
        } = &self.inner.kind
        else {
            return Err(auth_error("not a username-password session"));
        };
        let body = {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                s.append_pair(k, v);
            }
            for (k, v) in secrets {
                s.append_pair(k, v.expose_secret());
            }
            s.finish()
        };
        let req = login
            .request(Method::POST, token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body);
        let resp = login
            .send(req, RequestOptions::new("oauth.token").idempotent(true))
            .await
            .map_err(|e| {
                if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Auth) {
                    Error::new(ErrorKind::Auth, "username-password login rejected")
                        .with_operation("oauth.token")
                        .with_source(e)
                } else {
                    e
                }
            })?;
        let token: TokenResponse = resp.json()?;
        let instance = Url::parse(&token.instance_url)
            .map_err(|_| auth_error("the token response's instance_url is not a URL"))?;
        builder(config, limiter, &self.inner.metrics)
            .auth(Auth::bearer(SecretString::from(token.access_token)))
            .base_url(instance.as_str())
            .build()
    }
}
