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
//! timeout says, so it is renewed when a call answers 401
//! `INVALID_SESSION_ID`: one renewal, shared by every request that saw the
//! same expired session, then the request is sent again.

use std::sync::Arc;

use crm_core::{Error, ErrorKind, Result};
use crm_http::reqwest::Method;
use crm_http::reqwest::header::{CONTENT_TYPE, HeaderValue};
use crm_http::{
    Auth, AuthorizationCodeFlow, ClientCredentialsFlow, HttpClient, HttpClientBuilder,
    JwtBearerFlow, Metrics, RateLimitConfig, RateLimiter, RefreshTokenFlow, RequestOptions,
    RetryPolicy, Token,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, OnceCell};
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
    /// OAuth flows crm-http refreshes itself (on a 401, once, single-flight).
    OAuth {
        http: HttpClient,
        data: OnceCell<HttpClient>,
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
        let oauth = |auth: Auth| -> Result<Kind> {
            Ok(Kind::OAuth {
                http: builder(config, &limiter, &metrics).auth(auth).build()?,
                data: OnceCell::new(),
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
                oauth(Auth::oauth(flow))?
            }
            Credentials::JwtBearer {
                consumer_key,
                username,
                private_key_pem,
            } => oauth(Auth::oauth(JwtBearerFlow::salesforce(
                &login,
                consumer_key.clone(),
                username.clone(),
                private_key_pem,
            )?))?,
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => oauth(Auth::oauth(ClientCredentialsFlow::new(
                token_url,
                client_id.clone(),
                client_secret.clone(),
            )))?,
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
            Kind::OAuth { http, data } => {
                let client = data
                    .get_or_try_init(|| async {
                        let token = http
                            .token()
                            .await?
                            .ok_or_else(|| auth_error("no OAuth token"))?;
                        Ok::<_, Error>(http.with_base_url(instance_url(&token)?))
                    })
                    .await?;
                Ok((client.clone(), 0))
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
