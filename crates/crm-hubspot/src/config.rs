//! Configuration of the HubSpot connector.
//!
//! ```
//! use crm_hubspot::{AppType, HubSpotConfig};
//! use secrecy::SecretString;
//!
//! let config = HubSpotConfig::private_app(SecretString::from("pat-na1-...".to_owned()))
//!     .app_type(AppType::Professional)
//!     .build()
//!     .unwrap();
//! assert_eq!(config.rate_limits().per_ten_seconds, 190);
//! assert_eq!(config.rate_limits().daily, Some(625_000));
//! ```

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::error::HubSpotError;

/// HubSpot's public API host.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// HubSpot's OAuth token endpoint (v1; refresh and code exchange).
pub const DEFAULT_TOKEN_PATH: &str = "/oauth/v1/token";
/// HubSpot's authorization page for the OAuth install flow.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://app.hubspot.com/oauth/authorize";
/// The objects read and written by default.
pub const DEFAULT_OBJECTS: [&str; 5] = ["contacts", "companies", "deals", "notes", "tasks"];

/// How the connector authenticates.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthConfig {
    /// A private app's static access token (`Authorization: Bearer pat-...`).
    PrivateApp {
        /// The private app access token.
        access_token: SecretString,
    },
    /// An OAuth 2.0 app installed in the account: short-lived access tokens
    /// (30 minutes) refreshed ahead of expiry with the refresh token.
    OAuth {
        /// The app's client id.
        client_id: String,
        /// The app's client secret (also the webhook signing key).
        client_secret: SecretString,
        /// The refresh token from the install (authorization-code) flow.
        refresh_token: SecretString,
        /// The token endpoint; `<base_url>/oauth/v1/token` when absent.
        #[serde(default)]
        token_url: Option<String>,
    },
}

/// The kind of app and account, which sets HubSpot's documented limits.
///
/// Values from HubSpot's "API usage guidelines and limits" page (see the
/// `x-hubspot-rate-limits` block of the bundled OpenAPI description):
/// private apps are limited per app per 10 seconds and per account per day;
/// public OAuth apps per installing account per 10 seconds, with no daily
/// limit. Search has its own per-second limit of 4 per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AppType {
    /// Private app on a Free or Starter account: 100 / 10 s, 250,000 / day.
    #[default]
    FreeStarter,
    /// Private app on a Professional account: 190 / 10 s, 625,000 / day.
    Professional,
    /// Private app on an Enterprise account: 190 / 10 s, 1,000,000 / day.
    Enterprise,
    /// Private app with the API limit increase pack: 250 / 10 s,
    /// 1,000,000 / day on top of an Enterprise allowance (one pack).
    ApiLimitIncrease,
    /// Public app installed through OAuth: 110 / 10 s per account, no daily limit.
    PublicOAuth,
}

impl AppType {
    /// HubSpot's documented limits for this app type.
    pub fn default_limits(self) -> RateLimits {
        let (per_ten_seconds, daily) = match self {
            AppType::FreeStarter => (100, Some(250_000)),
            AppType::Professional => (190, Some(625_000)),
            AppType::Enterprise => (190, Some(1_000_000)),
            AppType::ApiLimitIncrease => (250, Some(2_000_000)),
            AppType::PublicOAuth => (110, None),
        };
        RateLimits::new(per_ten_seconds, daily, 4)
    }
}

/// Request limits the client keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RateLimits {
    /// Requests per rolling 10 seconds (all endpoints but search).
    pub per_ten_seconds: u32,
    /// Requests per day, when the app type has a daily limit.
    #[serde(default)]
    pub daily: Option<u64>,
    /// Search requests per second (search has its own, lower limit).
    pub search_per_second: u32,
    /// The rolling window `per_ten_seconds` counts over: HubSpot's 10
    /// seconds, set shorter only to test against a scaled-down simulator.
    #[serde(skip, default = "RateLimits::ten_seconds")]
    pub window: Duration,
}

impl RateLimits {
    /// Limits with these values.
    pub fn new(per_ten_seconds: u32, daily: Option<u64>, search_per_second: u32) -> Self {
        RateLimits {
            per_ten_seconds,
            daily,
            search_per_second,
            window: Self::ten_seconds(),
        }
    }

    fn ten_seconds() -> Duration {
        Duration::from_secs(10)
    }

    /// The same limits counted over a different rolling window (for tests
    /// against a simulator whose window is scaled down).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
}

/// A validated configuration; build one with [`HubSpotConfig::private_app`]
/// or [`HubSpotConfig::oauth`], or deserialize a [`HubSpotConfigBuilder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubSpotConfig {
    pub(crate) auth: AuthConfig,
    pub(crate) base_url: Url,
    pub(crate) token_url: Option<Url>,
    pub(crate) objects: Vec<String>,
    pub(crate) rate_limits: RateLimits,
    pub(crate) search_lookback: Duration,
    pub(crate) lookback_max_keys: usize,
    pub(crate) list_page_size: u32,
    pub(crate) search_page_size: u32,
    pub(crate) max_query_properties_len: usize,
    pub(crate) webhook_secret: Option<SecretString>,
    pub(crate) root_certificate_pem: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) token_refresh_ahead: Duration,
}

/// Builder (and serde form) of [`HubSpotConfig`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HubSpotConfigBuilder {
    /// Authentication.
    pub auth: AuthConfig,
    /// API host; [`DEFAULT_BASE_URL`] when absent (point it at the simulator in tests).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Objects to sync; [`DEFAULT_OBJECTS`] when empty.
    #[serde(default)]
    pub objects: Vec<String>,
    /// App type whose documented limits are the defaults.
    #[serde(default)]
    pub app_type: AppType,
    /// Limits overriding the app type's.
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
    /// How far incremental reads look back behind the cursor for records
    /// the search index had not yet caught up with (seconds; default 300).
    #[serde(default)]
    pub search_lookback_secs: Option<u64>,
    /// The most changes a cursor remembers from the lookback span (at
    /// least 200; default 50,000, at most about 750 KB of cursor). When more
    /// records changed within the lookback, the next run starts later
    /// instead of repeating them (see [`crate::source`]).
    #[serde(default)]
    pub lookback_max_keys: Option<usize>,
    /// Records per list page (1 to 100; default 100).
    #[serde(default)]
    pub list_page_size: Option<u32>,
    /// Records per search page (1 to 200; default 200).
    #[serde(default)]
    pub search_page_size: Option<u32>,
    /// Longest comma-separated property list put in a query string; longer
    /// lists go in request bodies (default 2,000 characters).
    #[serde(default)]
    pub max_query_properties_len: Option<usize>,
    /// Webhook signing secret (the app's client secret); the OAuth client
    /// secret when absent.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// An extra root certificate (PEM), e.g. the simulator's with `--tls`.
    #[serde(default)]
    pub root_certificate_pem: Option<String>,
    /// Time limit of one request attempt (seconds; default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Attempts per request including the first (default 6).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long before expiry an OAuth access token is refreshed (seconds;
    /// default 300, HubSpot's tokens live 1,800).
    #[serde(default)]
    pub token_refresh_ahead_secs: Option<u64>,
}

impl HubSpotConfig {
    /// A private-app configuration.
    pub fn private_app(access_token: SecretString) -> HubSpotConfigBuilder {
        HubSpotConfigBuilder::new(AuthConfig::PrivateApp { access_token })
    }

    /// An OAuth app configuration.
    pub fn oauth(
        client_id: impl Into<String>,
        client_secret: SecretString,
        refresh_token: SecretString,
    ) -> HubSpotConfigBuilder {
        HubSpotConfigBuilder::new(AuthConfig::OAuth {
            client_id: client_id.into(),
            client_secret,
            refresh_token,
            token_url: None,
        })
    }

    /// The authentication.
    pub fn auth(&self) -> &AuthConfig {
        &self.auth
    }

    /// The API host.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The OAuth token endpoint (OAuth apps only).
    pub fn token_url(&self) -> Option<&Url> {
        self.token_url.as_ref()
    }

    /// The objects synced.
    pub fn objects(&self) -> &[String] {
        &self.objects
    }

    /// The limits kept to.
    pub fn rate_limits(&self) -> RateLimits {
        self.rate_limits
    }

    /// The incremental lookback.
    pub fn search_lookback(&self) -> Duration {
        self.search_lookback
    }

    /// The most changes a cursor remembers from the lookback span.
    pub fn lookback_max_keys(&self) -> usize {
        self.lookback_max_keys
    }

    /// Records per list page.
    pub fn list_page_size(&self) -> u32 {
        self.list_page_size
    }

    /// Records per search page.
    pub fn search_page_size(&self) -> u32 {
        self.search_page_size
    }

    /// The webhook signing secret, if known.
    pub fn webhook_secret(&self) -> Option<&SecretString> {
        self.webhook_secret.as_ref()
    }

    /// The longest property list put in a query string.
    pub fn max_query_properties_len(&self) -> usize {
        self.max_query_properties_len
    }

    /// The extra root certificate, if any.
    pub fn root_certificate_pem(&self) -> Option<&str> {
        self.root_certificate_pem.as_deref()
    }

    /// The time limit of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Attempts per request, including the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long before expiry an OAuth access token is refreshed.
    pub fn token_refresh_ahead(&self) -> Duration {
        self.token_refresh_ahead
    }
}

impl HubSpotConfigBuilder {
    /// A builder with `auth` and defaults for everything else.
    pub fn new(auth: AuthConfig) -> Self {
        HubSpotConfigBuilder {
            auth,
            base_url: None,
            objects: Vec::new(),
            app_type: AppType::default(),
            rate_limits: None,
            search_lookback_secs: None,
            lookback_max_keys: None,
            list_page_size: None,
            search_page_size: None,
            max_query_properties_len: None,
            webhook_secret: None,
            root_certificate_pem: None,
            timeout_secs: None,
            max_attempts: None,
            token_refresh_ahead_secs: None,
        }
    }

    /// Sets the API host.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Sets the OAuth token endpoint.
    #[must_use]
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        if let AuthConfig::OAuth { token_url, .. } = &mut self.auth {
            *token_url = Some(url.into());
        }
        self
    }

    /// Sets the objects synced.
    #[must_use]
    pub fn objects<I, S>(mut self, objects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.objects = objects.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the app type (and so the default limits).
    #[must_use]
    pub fn app_type(mut self, app_type: AppType) -> Self {
        self.app_type = app_type;
        self
    }

    /// Overrides the limits.
    #[must_use]
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Sets the incremental lookback.
    #[must_use]
    pub fn search_lookback(mut self, lookback: Duration) -> Self {
        self.search_lookback_secs = Some(lookback.as_secs());
        self
    }

    /// Sets the most changes a cursor remembers from the lookback span
    /// (at least 200).
    #[must_use]
    pub fn lookback_max_keys(mut self, n: usize) -> Self {
        self.lookback_max_keys = Some(n);
        self
    }

    /// Sets the list page size (1 to 100).
    #[must_use]
    pub fn list_page_size(mut self, n: u32) -> Self {
        self.list_page_size = Some(n);
        self
    }

    /// Sets the search page size (1 to 200).
    #[must_use]
    pub fn search_page_size(mut self, n: u32) -> Self {
        self.search_page_size = Some(n);
        self
    }

    /// Sets the longest property list sent in a query string.
    #[must_use]
    pub fn max_query_properties_len(mut self, n: usize) -> Self {
        self.max_query_properties_len = Some(n);
        self
    }

    /// Sets the webhook signing secret.
    #[must_use]
    pub fn webhook_secret(mut self, secret: SecretString) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// Trusts an extra root certificate (PEM).
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.root_certificate_pem = Some(pem.into());
        self
    }

    /// Sets the time limit of one attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_secs = Some(timeout.as_secs().max(1));
        self
    }

    /// Sets how long before expiry OAuth access tokens are refreshed.
    #[must_use]
    pub fn token_refresh_ahead(mut self, ahead: Duration) -> Self {
        self.token_refresh_ahead_secs = Some(ahead.as_secs());
        self
    }

    /// Sets the attempts per request, including the first.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Validates everything and builds the configuration.
    ///
    /// # Errors
    /// [`HubSpotError::ConfigInvalid`] naming every problem found.
    pub fn build(self) -> Result<HubSpotConfig, HubSpotError> {
        let mut problems: Vec<String> = Vec::new();
        let base = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base_url = match Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                problems.push(format!("base_url `{base}` is not http(s)"));
                None
            }
            Err(e) => {
                problems.push(format!("base_url `{base}` is not a URL: {e}"));
                None
            }
        };
        let mut token_url = None;
        match &self.auth {
            AuthConfig::PrivateApp { access_token } => {
                if secrecy::ExposeSecret::expose_secret(access_token)
                    .trim()
                    .is_empty()
                {
                    problems.push("auth.access_token is empty".into());
                }
            }
            AuthConfig::OAuth {
                client_id,
                client_secret,
                refresh_token,
                token_url: configured,
            } => {
                if client_id.trim().is_empty() {
                    problems.push("auth.client_id is empty".into());
                }
                if secrecy::ExposeSecret::expose_secret(client_secret)
                    .trim()
                    .is_empty()
                {
                    problems.push("auth.client_secret is empty".into());
                }
                if secrecy::ExposeSecret::expose_secret(refresh_token)
                    .trim()
                    .is_empty()
                {
                    problems.push("auth.refresh_token is empty".into());
                }
                let parsed = match configured {
                    Some(t) => Url::parse(t).map_err(|e| format!("auth.token_url `{t}`: {e}")),
                    None => base_url
                        .as_ref()
                        .ok_or_else(|| "auth.token_url cannot be derived".to_owned())
                        .and_then(|b| {
                            b.join(DEFAULT_TOKEN_PATH)
                                .map_err(|e| format!("auth.token_url: {e}"))
                        }),
                };
                match parsed {
                    Ok(u) => token_url = Some(u),
                    Err(p) => problems.push(p),
                }
            }
        }
        let objects: Vec<String> = if self.objects.is_empty() {
            DEFAULT_OBJECTS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.objects
        };
        for o in &objects {
            if o.is_empty() || o.contains(['/', '?', '#', ' ']) {
                problems.push(format!("object `{o}` is not an object type name"));
            }
        }
        let rate_limits = self
            .rate_limits
            .unwrap_or_else(|| self.app_type.default_limits());
        if rate_limits.per_ten_seconds == 0 || rate_limits.search_per_second == 0 {
            problems.push("rate limits must be above zero".into());
        }
        if rate_limits.window.is_zero() {
            problems.push("rate_limits.window must be above zero".into());
        }
        if rate_limits.daily == Some(0) {
            problems.push("rate_limits.daily must be above zero (or absent)".into());
        }
        let list_page_size = self.list_page_size.unwrap_or(100);
        if !(1..=100).contains(&list_page_size) {
            problems.push(format!("list_page_size {list_page_size} is not 1 to 100"));
        }
        let search_page_size = self.search_page_size.unwrap_or(200);
        if !(1..=200).contains(&search_page_size) {
            problems.push(format!(
                "search_page_size {search_page_size} is not 1 to 200"
            ));
        }
        let lookback_max_keys = self
            .lookback_max_keys
            .unwrap_or(crate::source::DEFAULT_LOOKBACK_MAX_KEYS);
        if lookback_max_keys < crate::source::MIN_LOOKBACK_MAX_KEYS {
            problems.push(format!(
                "lookback_max_keys {lookback_max_keys} is below {}",
                crate::source::MIN_LOOKBACK_MAX_KEYS
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(6);
        if max_attempts == 0 {
            problems.push("max_attempts must be at least 1".into());
        }
        let webhook_secret = self.webhook_secret.or_else(|| match &self.auth {
            AuthConfig::OAuth { client_secret, .. } => Some(client_secret.clone()),
            AuthConfig::PrivateApp { .. } => None,
        });
        match base_url {
            Some(base_url) if problems.is_empty() => Ok(HubSpotConfig {
                auth: self.auth,
                base_url,
                token_url,
                objects,
                rate_limits,
                search_lookback: Duration::from_secs(self.search_lookback_secs.unwrap_or(300)),
                lookback_max_keys,
                list_page_size,
                search_page_size,
                max_query_properties_len: self.max_query_properties_len.unwrap_or(2_000),
                webhook_secret,
                root_certificate_pem: self.root_certificate_pem,
                timeout: Duration::from_secs(self.timeout_secs.unwrap_or(30)),
                max_attempts,
                token_refresh_ahead: self
                    .token_refresh_ahead_secs
                    .map_or(crate::auth::REFRESH_AHEAD, Duration::from_secs),
            }),
            _ => Err(HubSpotError::ConfigInvalid(problems.join("; "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn app_types_carry_documented_limits() {
        assert_eq!(AppType::FreeStarter.default_limits().per_ten_seconds, 100);
        assert_eq!(AppType::FreeStarter.default_limits().daily, Some(250_000));
        assert_eq!(AppType::Enterprise.default_limits().daily, Some(1_000_000));
        assert_eq!(AppType::PublicOAuth.default_limits().per_ten_seconds, 110);
        assert_eq!(AppType::PublicOAuth.default_limits().daily, None);
        assert_eq!(AppType::Professional.default_limits().search_per_second, 4);
    }

    #[test]
    fn oauth_derives_token_url_and_webhook_secret() {
        let c = HubSpotConfig::oauth("id", secret("cs"), secret("rt"))
            .base_url("http://127.0.0.1:9/")
            .build()
            .unwrap();
        assert_eq!(
            c.token_url().unwrap().as_str(),
            "http://127.0.0.1:9/oauth/v1/token"
        );
        assert!(c.webhook_secret().is_some());
        assert_eq!(c.objects().len(), 5);
    }

    #[test]
    fn build_reports_every_problem() {
        let err = HubSpotConfig::private_app(secret(" "))
            .base_url("ftp://x")
            .list_page_size(500)
            .search_page_size(0)
            .lookback_max_keys(10)
            .objects(["contacts/x"])
            .build()
            .unwrap_err()
            .to_string();
        for needle in [
            "access_token",
            "not http(s)",
            "list_page_size",
            "search_page_size",
            "lookback_max_keys 10 is below 200",
            "contacts/x",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let b = HubSpotConfig::oauth("id", secret("client-secret-xyz"), secret("refresh-xyz"));
        let c = b.build().unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("client-secret-xyz"));
        assert!(!shown.contains("refresh-xyz"));
    }

    #[test]
    fn deserializes_from_yaml() {
        let yaml = "auth:\n  type: private_app\n  access_token: pat-1\napp_type: enterprise\nobjects: [contacts, deals]\nsearch_lookback_secs: 120\nlookback_max_keys: 100000\n";
        let b: HubSpotConfigBuilder = serde_yaml::from_str(yaml).unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.rate_limits().per_ten_seconds, 190);
        assert_eq!(c.objects(), ["contacts", "deals"]);
        assert_eq!(c.search_lookback(), Duration::from_secs(120));
        assert_eq!(c.lookback_max_keys(), 100_000);
        let d = HubSpotConfig::private_app(secret("t")).build().unwrap();
        assert_eq!(d.lookback_max_keys(), 50_000);
    }
}
