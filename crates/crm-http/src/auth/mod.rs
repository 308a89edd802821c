//! Authentication: static bearer tokens, API keys, and OAuth 2.0 token flows
//! with a shared, single-flight token cache.
//!
//! ```no_run
//! use std::sync::Arc;
//! use secrecy::SecretString;
//! use url::Url;
//! use crm_http::{Auth, ClientCredentialsFlow, HttpClient, JwtBearerFlow, MemoryTokenStore,
//!                RefreshTokenFlow, ServiceAccountKey, TokenOptions, TokenRequestStyle};
//!
//! # fn demo() -> crm_core::Result<()> {
//! // A HubSpot private-app token.
//! let hubspot = Auth::bearer(SecretString::from("pat-na1-...".to_owned()));
//!
//! // Pipedrive's API token travels as a query parameter.
//! let pipedrive = Auth::api_key_query("api_token", SecretString::from("...".to_owned()));
//!
//! // An OAuth app: refresh 5 minutes ahead, persist rotated refresh tokens.
//! let store = Arc::new(MemoryTokenStore::new());
//! let oauth = Auth::oauth_with(
//!     RefreshTokenFlow::new(
//!         Url::parse("https://api.hubapi.com/oauth/v1/token").unwrap(),
//!         "client-id",
//!         SecretString::from("refresh-token".to_owned()),
//!     )
//!     .client_secret(SecretString::from("client-secret".to_owned())),
//!     TokenOptions::default()
//!         .refresh_skew(std::time::Duration::from_secs(300))
//!         .store(store),
//! );
//!
//! // Marketo: client credentials at a GET identity endpoint.
//! let marketo = Auth::oauth(
//!     ClientCredentialsFlow::new(
//!         Url::parse("https://123-ABC-456.mktorest.com/identity/oauth/token").unwrap(),
//!         "client-id",
//!         SecretString::from("client-secret".to_owned()),
//!     )
//!     .style(TokenRequestStyle::GetQuery),
//! );
//!
//! // Google Sheets with a service-account key file.
//! let key = ServiceAccountKey::from_file("service-account.json")?;
//! let sheets = Auth::oauth(JwtBearerFlow::google_service_account(
//!     &key,
//!     ["https://www.googleapis.com/auth/spreadsheets"],
//! )?);
//!
//! let client = HttpClient::builder("hubspot").auth(oauth).build()?;
//! # let _ = (hubspot, pipedrive, marketo, sheets, client);
//! # Ok(()) }
//! ```

mod flows;
mod token;

use std::fmt;
use std::sync::Arc;

use crm_core::{Error, Result};
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

pub(crate) use flows::TokenTransport;
pub use flows::{
    AuthorizationCodeFlow, AuthorizationRequest, ClientAuthMethod, ClientCredentialsFlow,
    JwtBearerFlow, PkceVerifier, RefreshTokenFlow, ServiceAccountKey, TokenFlow, TokenRequestStyle,
};
use token::TokenCache;
pub use token::{MemoryTokenStore, Token, TokenOptions, TokenStore};

/// Where an API key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiKeyLocation {
    /// In this request header (e.g. `x-api-key`).
    Header(HeaderName),
    /// In this query parameter (e.g. Pipedrive's `api_token`).
    Query(String),
}

/// How requests are authenticated. Cheap to clone; clones share one token
/// cache, so several clients of the same account refresh only once.
///
/// `Debug` and `Display` name the method and its non-secret settings only.
///
/// ```
/// use secrecy::SecretString;
/// use url::Url;
/// use crm_http::{Auth, HttpClient, RefreshTokenFlow};
///
/// # fn main() -> crm_core::Result<()> {
/// // A static key: sent as is, a 401 is final.
/// let key = Auth::api_key_header("x-api-key", SecretString::from("k-123".to_owned()))?;
/// assert_eq!(key.method_name(), "api_key");
/// assert!(!key.is_refreshable());
/// assert!(!format!("{key:?}").contains("k-123")); // secrets never print
///
/// // OAuth: a token is fetched on the first request, cached and refreshed.
/// let oauth = Auth::oauth(RefreshTokenFlow::new(
///     Url::parse("https://login.salesforce.com/services/oauth2/token").unwrap(),
///     "client-id",
///     SecretString::from("refresh-token".to_owned()),
/// ));
/// assert!(oauth.is_refreshable());
/// // Clones share the token cache: both clients refresh once between them.
/// let reads = HttpClient::builder("salesforce").auth(oauth.clone()).build()?;
/// let writes = HttpClient::builder("salesforce").auth(oauth).build()?;
/// # let _ = (reads, writes);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Auth {
    kind: AuthKind,
}

#[derive(Clone)]
enum AuthKind {
    None,
    Bearer(Arc<SecretString>),
    ApiKey {
        location: ApiKeyLocation,
        key: Arc<SecretString>,
    },
    OAuth(Arc<TokenCache>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AuthKind::None => f.write_str("Auth::None"),
            AuthKind::Bearer(_) => f.write_str("Auth::Bearer([REDACTED])"),
            AuthKind::ApiKey { location, .. } => f
                .debug_struct("Auth::ApiKey")
                .field("location", location)
                .field("key", &"[REDACTED]")
                .finish(),
            AuthKind::OAuth(cache) => f
                .debug_struct("Auth::OAuth")
                .field("flow", cache.flow())
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method_name())
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::none()
    }
}

/// What an attempt used, so a 401 can refresh the right token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Applied {
    pub(crate) generation: Option<u64>,
}

impl Auth {
    /// No authentication.
    pub fn none() -> Self {
        Auth {
            kind: AuthKind::None,
        }
    }

    /// A static bearer token (`Authorization: Bearer ...`), e.g. a HubSpot
    /// private-app token. A 401 is final: there is nothing to refresh.
    pub fn bearer(token: SecretString) -> Self {
        Auth {
            kind: AuthKind::Bearer(Arc::new(token)),
        }
    }

    /// An API key in a header or query parameter.
    pub fn api_key(location: ApiKeyLocation, key: SecretString) -> Self {
        Auth {
            kind: AuthKind::ApiKey {
                location,
                key: Arc::new(key),
            },
        }
    }

    /// An API key in the header `name`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when `name` is not a valid header name.
    pub fn api_key_header(name: &str, key: SecretString) -> Result<Self> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::invalid_input(format!("invalid API key header name {name:?}")))?;
        Ok(Auth::api_key(ApiKeyLocation::Header(name), key))
    }

    /// An API key in the query parameter `name`.
    pub fn api_key_query(name: impl Into<String>, key: SecretString) -> Self {
        Auth::api_key(ApiKeyLocation::Query(name.into()), key)
    }

    /// Tokens from an OAuth 2.0 flow, with default [`TokenOptions`].
    pub fn oauth(flow: impl Into<TokenFlow>) -> Self {
        Auth::oauth_with(flow, TokenOptions::default())
    }

    /// Tokens from an OAuth 2.0 flow: cached until `refresh_skew` before
    /// expiry, refreshed once when the provider answers 401, one refresh
    /// shared by all concurrent requests, new tokens handed to the store.
    pub fn oauth_with(flow: impl Into<TokenFlow>, options: TokenOptions) -> Self {
        Auth {
            kind: AuthKind::OAuth(Arc::new(TokenCache::new(flow.into(), options))),
        }
    }

    /// A short name of the method: `none`, `bearer`, `api_key`,
    /// `oauth_refresh_token`, `oauth_client_credentials`, `oauth_jwt_bearer`.
    pub fn method_name(&self) -> &'static str {
        match &self.kind {
            AuthKind::None => "none",
            AuthKind::Bearer(_) => "bearer",
            AuthKind::ApiKey { .. } => "api_key",
            AuthKind::OAuth(cache) => match cache.flow() {
                TokenFlow::RefreshToken(_) => "oauth_refresh_token",
                TokenFlow::ClientCredentials(_) => "oauth_client_credentials",
                TokenFlow::JwtBearer(_) => "oauth_jwt_bearer",
            },
        }
    }

    /// Whether a rejected token can be replaced (OAuth flows only).
    pub fn is_refreshable(&self) -> bool {
        matches!(self.kind, AuthKind::OAuth(_))
    }

    /// Every secret value this auth holds, for scrubbing error text.
    pub(crate) fn known_secrets(&self) -> Vec<String> {
        match &self.kind {
            AuthKind::None => Vec::new(),
            AuthKind::Bearer(t) => vec![t.expose_secret().to_owned()],
            AuthKind::ApiKey { key, .. } => vec![key.expose_secret().to_owned()],
            AuthKind::OAuth(cache) => {
                let mut v = cache.flow().secrets();
                v.extend(cache.current_secrets());
                v
            }
        }
    }

    /// The current token of an OAuth flow, fetching one when needed.
    pub(crate) async fn token(&self, t: &TokenTransport) -> Result<Option<Arc<Token>>> {
        match &self.kind {
            AuthKind::OAuth(cache) => Ok(Some(cache.get(t).await?.0)),
            _ => Ok(None),
        }
    }

    /// Authenticates one attempt.
    pub(crate) async fn apply(
        &self,
        request: &mut reqwest::Request,
        t: &TokenTransport,
    ) -> Result<Applied> {
        match &self.kind {
            AuthKind::None => Ok(Applied { generation: None }),
            AuthKind::Bearer(token) => {
                set_header(
                    request,
                    AUTHORIZATION,
                    &format!("Bearer {}", token.expose_secret()),
                )?;
                Ok(Applied { generation: None })
            }
            AuthKind::ApiKey { location, key } => {
                match location {
                    ApiKeyLocation::Header(name) => {
                        set_header(request, name.clone(), key.expose_secret())?;
                    }
                    ApiKeyLocation::Query(name) => {
                        request
                            .url_mut()
                            .query_pairs_mut()
                            .append_pair(name, key.expose_secret());
                    }
                }
                Ok(Applied { generation: None })
            }
            AuthKind::OAuth(cache) => {
                let (token, generation) = cache.get(t).await?;
                // Providers say "bearer" in any case; send the canonical form.
                let scheme = if token.token_type().eq_ignore_ascii_case("bearer") {
                    "Bearer"
                } else {
                    token.token_type()
                };
                set_header(
                    request,
                    AUTHORIZATION,
                    &format!("{scheme} {}", token.access_token().expose_secret()),
                )?;
                Ok(Applied {
                    generation: Some(generation),
                })
            }
        }
    }

    /// Replaces the token of `generation` after the provider rejected it;
    /// concurrent callers share one refresh.
    pub(crate) async fn refresh_after_rejection(
        &self,
        t: &TokenTransport,
        generation: u64,
    ) -> Result<()> {
        match &self.kind {
            AuthKind::OAuth(cache) => cache.refresh(t, generation).await.map(|_| ()),
            _ => Ok(()),
        }
    }
}

fn set_header(request: &mut reqwest::Request, name: HeaderName, value: &str) -> Result<()> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        Error::invalid_input("credential contains characters not allowed in a header")
    })?;
    value.set_sensitive(true);
    request.headers_mut().insert(name, value);
    Ok(())
}
