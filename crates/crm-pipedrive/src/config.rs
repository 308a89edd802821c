//! Configuration of the Pipedrive connector.
//!
//! ```
//! use crm_pipedrive::PipedriveConfig;
//! use secrecy::SecretString;
//!
//! let config = PipedriveConfig::api_token(SecretString::from("0123456789abcdef".to_owned()))
//!     .company_domain("acme")
//!     .build()
//!     .unwrap();
//! assert_eq!(config.base_url().as_str(), "https://acme.pipedrive.com/");
//! assert_eq!(config.rate_limits().per_interval, 20);
//! assert_eq!(config.rate_limits().daily, Some(10_000));
//! ```

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::error::PipedriveError;

/// Pipedrive's OAuth token endpoint (refresh and code exchange).
pub const DEFAULT_TOKEN_URL: &str = "https://oauth.pipedrive.com/oauth/token";
/// Pipedrive's OAuth authorization page.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://oauth.pipedrive.com/oauth/authorize";
/// The host used when neither a company domain nor a base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.pipedrive.com";
/// The objects read and written by default.
pub const DEFAULT_OBJECTS: [&str; 6] = [
    "persons",
    "organizations",
    "deals",
    "activities",
    "notes",
    "leads",
];

/// Where an API token travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenLocation {
    /// The `x-api-token` header (default: never in URLs, so never in access logs).
    #[default]
    Header,
    /// The `api_token` query parameter, for proxies that strip custom headers.
    Query,
}

/// How the connector authenticates.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthConfig {
    /// A personal API token (Settings > Personal preferences > API).
    ApiToken {
        /// The token.
        api_token: SecretString,
        /// Header (default) or query parameter.
        #[serde(default)]
        location: TokenLocation,
    },
    /// An OAuth 2.0 app: access tokens refreshed with the refresh token.
    #[serde(rename = "oauth")]
    OAuth {
        /// The app's client id.
        client_id: String,
        /// The app's client secret.
        client_secret: SecretString,
        /// The refresh token from the authorization-code flow.
        refresh_token: SecretString,
        /// The token endpoint; [`DEFAULT_TOKEN_URL`] when absent.
        #[serde(default)]
        token_url: Option<String>,
    },
}

/// Request limits the client keeps to.
///
/// The defaults are seed 003's: 20 requests a second and 10,000 a day.
/// Pipedrive's own window is 2 seconds and its size depends on the plan and
/// the auth method (e.g. 20 per 2 s for an Essential `api_token`, 80 per
/// 2 s for OAuth; "Rate limiting" in Pipedrive's developer docs); the
/// `x-ratelimit-*` headers of every answer tighten the pace further when
/// the account's window runs low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RateLimits {
    /// Requests per `interval_ms`.
    pub per_interval: u32,
    /// The window length in milliseconds.
    pub interval_ms: u64,
    /// Requests per day, when limited.
    #[serde(default)]
    pub daily: Option<u64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_interval: 20,
            interval_ms: 1_000,
            daily: Some(10_000),
        }
    }
}

impl RateLimits {
    /// Limits with these values.
    pub fn new(per_interval: u32, interval: Duration, daily: Option<u64>) -> Self {
        RateLimits {
            per_interval,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            daily,
        }
    }

    /// The window length.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// A validated configuration; build one with [`PipedriveConfig::api_token`]
/// or [`PipedriveConfig::oauth`], or deserialize a [`PipedriveConfigBuilder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PipedriveConfig {
    pub(crate) auth: AuthConfig,
    pub(crate) base_url: Url,
    pub(crate) token_url: Url,
    pub(crate) objects: Vec<String>,
    pub(crate) rate_limits: RateLimits,
    pub(crate) page_size: u32,
    pub(crate) fields_ttl: Duration,
    pub(crate) enrichment_fields: Vec<String>,
    pub(crate) webhook_user: Option<String>,
    pub(crate) webhook_password: Option<SecretString>,
    pub(crate) root_certificate_pem: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
}

/// Builder (and serde form) of [`PipedriveConfig`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PipedriveConfigBuilder {
    /// Authentication.
    pub auth: AuthConfig,
    /// The company domain: `acme` for `https://acme.pipedrive.com`.
    #[serde(default)]
    pub company_domain: Option<String>,
    /// The API origin, overriding the company domain (e.g. the simulator's
    /// `http://127.0.0.1:PORT`); paths `/api/v1/...` and `/api/v2/...` go below it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Objects to sync; [`DEFAULT_OBJECTS`] when empty.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Request limits; [`RateLimits::default`] when absent.
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
    /// Records per page (1 to 500; default 500).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// How long a sink keeps custom-field definitions before reading them
    /// again (seconds; default 300). Reads always re-read them.
    #[serde(default)]
    pub fields_ttl_secs: Option<u64>,
    /// Person custom fields (by name) that also receive social enrichment
    /// values, besides the note (seed 002: "Social Engagement Score",
    /// "Primary Social Platform", "Social Profile URL").
    #[serde(default)]
    pub enrichment_fields: Vec<String>,
    /// The HTTP basic-auth user Pipedrive sends with webhooks.
    #[serde(default)]
    pub webhook_user: Option<String>,
    /// The HTTP basic-auth password Pipedrive sends with webhooks.
    #[serde(default)]
    pub webhook_password: Option<SecretString>,
    /// An extra root certificate (PEM), e.g. the simulator's with `--tls`.
    #[serde(default)]
    pub root_certificate_pem: Option<String>,
    /// Time limit of one request attempt (seconds; default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Attempts per request including the first (default 6).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

impl PipedriveConfig {
    /// An API-token configuration (token in the `x-api-token` header).
    pub fn api_token(api_token: SecretString) -> PipedriveConfigBuilder {
        PipedriveConfigBuilder::new(AuthConfig::ApiToken {
            api_token,
            location: TokenLocation::Header,
        })
    }

    /// An OAuth app configuration.
    pub fn oauth(
        client_id: impl Into<String>,
        client_secret: SecretString,
        refresh_token: SecretString,
    ) -> PipedriveConfigBuilder {
        PipedriveConfigBuilder::new(AuthConfig::OAuth {
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

    /// The API origin.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The OAuth token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The objects synced.
    pub fn objects(&self) -> &[String] {
        &self.objects
    }

    /// The limits kept to.
    pub fn rate_limits(&self) -> RateLimits {
        self.rate_limits
    }

    /// Records per page.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// How long a sink trusts its custom-field definitions.
    pub fn fields_ttl(&self) -> Duration {
        self.fields_ttl
    }

    /// Person custom fields receiving enrichment values.
    pub fn enrichment_fields(&self) -> &[String] {
        &self.enrichment_fields
    }

    /// The webhook basic-auth user, if configured.
    pub fn webhook_user(&self) -> Option<&str> {
        self.webhook_user.as_deref()
    }

    /// The webhook basic-auth password, if configured.
    pub fn webhook_password(&self) -> Option<&SecretString> {
        self.webhook_password.as_ref()
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
}

impl PipedriveConfigBuilder {
    /// A builder with `auth` and defaults for everything else.
    pub fn new(auth: AuthConfig) -> Self {
        PipedriveConfigBuilder {
            auth,
            company_domain: None,
            base_url: None,
            objects: Vec::new(),
            rate_limits: None,
            page_size: None,
            fields_ttl_secs: None,
            enrichment_fields: Vec::new(),
            webhook_user: None,
            webhook_password: None,
            root_certificate_pem: None,
            timeout_secs: None,
            max_attempts: None,
        }
    }

    /// Sets the company domain (`acme` or `acme.pipedrive.com`).
    #[must_use]
    pub fn company_domain(mut self, domain: impl Into<String>) -> Self {
        self.company_domain = Some(domain.into());
        self
    }

    /// Sets the API origin (overrides the company domain).
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Sends the API token as the `api_token` query parameter instead of the header.
    #[must_use]
    pub fn token_in_query(mut self) -> Self {
        if let AuthConfig::ApiToken { location, .. } = &mut self.auth {
            *location = TokenLocation::Query;
        }
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

    /// Sets the limits.
    #[must_use]
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Sets the page size (1 to 500).
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// Sets how long a sink trusts its custom-field definitions.
    #[must_use]
    pub fn fields_ttl(mut self, ttl: Duration) -> Self {
        self.fields_ttl_secs = Some(ttl.as_secs());
        self
    }

    /// Sets the person custom fields receiving enrichment values.
    #[must_use]
    pub fn enrichment_fields<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.enrichment_fields = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the webhook basic-auth credentials.
    #[must_use]
    pub fn webhook_basic_auth(mut self, user: impl Into<String>, password: SecretString) -> Self {
        self.webhook_user = Some(user.into());
        self.webhook_password = Some(password);
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

    /// Sets the attempts per request, including the first.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Validates everything and builds the configuration.
    ///
    /// # Errors
    /// [`PipedriveError::ConfigInvalid`] naming every problem found.
    pub fn build(self) -> Result<PipedriveConfig, PipedriveError> {
        let mut problems: Vec<String> = Vec::new();
        let origin = match (&self.base_url, &self.company_domain) {
            (Some(b), _) => b.clone(),
            (None, Some(d)) => {
                let d = d.trim().trim_end_matches(".pipedrive.com");
                if d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    problems.push(format!("company_domain `{d}` is not a Pipedrive subdomain"));
                }
                format!("https://{d}.pipedrive.com")
            }
            (None, None) => DEFAULT_BASE_URL.to_owned(),
        };
        let base_url = match Url::parse(&origin) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) => {
                problems.push(format!("base_url `{origin}` is not http(s)"));
                None
            }
            Err(e) => {
                problems.push(format!("base_url `{origin}` is not a URL: {e}"));
                None
            }
        };
        let mut token_url = None;
        match &self.auth {
            AuthConfig::ApiToken { api_token, .. } => {
                if api_token.expose_secret().trim().is_empty() {
                    problems.push("auth.api_token is empty".into());
                }
                token_url = Url::parse(DEFAULT_TOKEN_URL).ok();
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
                if client_secret.expose_secret().trim().is_empty() {
                    problems.push("auth.client_secret is empty".into());
                }
                if refresh_token.expose_secret().trim().is_empty() {
                    problems.push("auth.refresh_token is empty".into());
                }
                let t = configured.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
                match Url::parse(t) {
                    Ok(u) => token_url = Some(u),
                    Err(e) => problems.push(format!("auth.token_url `{t}`: {e}")),
                }
            }
        }
        let objects: Vec<String> = if self.objects.is_empty() {
            DEFAULT_OBJECTS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.objects
                .iter()
                .map(|o| o.trim().to_lowercase())
                .collect()
        };
        for o in &objects {
            if crate::ObjectKind::parse(o).is_none() {
                problems.push(format!(
                    "object `{o}` is not a Pipedrive object this connector reads"
                ));
            }
        }
        let rate_limits = self.rate_limits.unwrap_or_default();
        if rate_limits.per_interval == 0 || rate_limits.interval_ms == 0 {
            problems.push("rate_limits need a positive per_interval and interval_ms".into());
        }
        let page_size = self.page_size.unwrap_or(500);
        if !(1..=500).contains(&page_size) {
            problems.push(format!("page_size {page_size} is not 1 to 500"));
        }
        let max_attempts = self.max_attempts.unwrap_or(6);
        if max_attempts == 0 {
            problems.push("max_attempts must be at least 1".into());
        }
        if self.webhook_user.is_some() != self.webhook_password.is_some() {
            problems.push("webhook_user and webhook_password go together".into());
        }
        match (base_url, token_url) {
            (Some(base_url), Some(token_url)) if problems.is_empty() => Ok(PipedriveConfig {
                auth: self.auth,
                base_url,
                token_url,
                objects,
                rate_limits,
                page_size,
                fields_ttl: Duration::from_secs(self.fields_ttl_secs.unwrap_or(300)),
                enrichment_fields: self.enrichment_fields,
                webhook_user: self.webhook_user,
                webhook_password: self.webhook_password,
                root_certificate_pem: self.root_certificate_pem,
                timeout: Duration::from_secs(self.timeout_secs.unwrap_or(30)),
                max_attempts,
            }),
            _ => Err(PipedriveError::ConfigInvalid(problems.join("; "))),
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
    fn company_domain_makes_the_origin_and_base_url_overrides_it() {
        let c = PipedriveConfig::api_token(secret("t"))
            .company_domain("acme.pipedrive.com")
            .build()
            .unwrap();
        assert_eq!(c.base_url().as_str(), "https://acme.pipedrive.com/");
        let c = PipedriveConfig::api_token(secret("t"))
            .company_domain("acme")
            .base_url("http://127.0.0.1:9")
            .build()
            .unwrap();
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:9/");
        assert_eq!(c.objects().len(), 6);
    }

    #[test]
    fn build_reports_every_problem() {
        let err = PipedriveConfig::api_token(secret(" "))
            .company_domain("a b")
            .page_size(501)
            .objects(["widgets"])
            .rate_limits(RateLimits::new(0, Duration::from_secs(1), None))
            .build()
            .unwrap_err()
            .to_string();
        for needle in [
            "api_token",
            "company_domain",
            "page_size",
            "widgets",
            "rate_limits",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = PipedriveConfig::oauth("id", secret("client-secret-xyz"), secret("refresh-xyz"))
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("client-secret-xyz"));
        assert!(!shown.contains("refresh-xyz"));
        assert_eq!(c.token_url().as_str(), DEFAULT_TOKEN_URL);
        let t = PipedriveConfig::api_token(secret("tok-abc-123"))
            .webhook_basic_auth("hook", secret("pw-secret-1"))
            .build()
            .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("tok-abc-123") && !shown.contains("pw-secret-1"));
    }

    #[test]
    fn deserializes_from_yaml() {
        let yaml = "auth:\n  type: api_token\n  api_token: abc\n  location: query\ncompany_domain: acme\nobjects: [persons, deals]\nrate_limits:\n  per_interval: 40\n  interval_ms: 2000\n  daily: 20000\n";
        let b: PipedriveConfigBuilder = serde_yaml::from_str(yaml).unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.objects(), ["persons", "deals"]);
        assert_eq!(c.rate_limits().per_interval, 40);
        assert_eq!(c.rate_limits().interval(), Duration::from_secs(2));
        assert!(matches!(
            c.auth(),
            AuthConfig::ApiToken {
                location: TokenLocation::Query,
                ..
            }
        ));
    }
}
