//! [`SalesforceConfig`]: where to log in, how, which API version, and the
//! thresholds that pick between the REST and Bulk API paths.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::SalesforceError;
use crate::soql;

/// The API version used unless configured (seed 003).
pub const DEFAULT_API_VERSION: &str = "59.0";

/// Where the OAuth endpoints are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginHost {
    /// `https://login.salesforce.com` (production and developer orgs).
    Production,
    /// `https://test.salesforce.com` (sandboxes).
    Sandbox,
    /// A My Domain login URL (`https://mycompany.my.salesforce.com`) or a
    /// simulator's base URL.
    MyDomain(Url),
}

impl LoginHost {
    /// The login base URL.
    pub fn url(&self) -> Url {
        match self {
            LoginHost::Production => known_url("https://login.salesforce.com"),
            LoginHost::Sandbox => known_url("https://test.salesforce.com"),
            LoginHost::MyDomain(u) => u.clone(),
        }
    }

    /// `{login}/services/oauth2/token`.
    pub fn token_url(&self) -> Url {
        join(&self.url(), "services/oauth2/token")
    }

    /// `{login}/services/oauth2/authorize`.
    pub fn authorize_url(&self) -> Url {
        join(&self.url(), "services/oauth2/authorize")
    }
}

fn known_url(s: &'static str) -> Url {
    // Invariant: only called with the two constant login URLs above.
    #[allow(clippy::expect_used)]
    Url::parse(s).expect("constant login URL is a valid absolute URL")
}

fn join(base: &Url, path: &str) -> Url {
    let s = format!("{}/{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&s).unwrap_or_else(|_| base.clone())
}

/// A REST API version such as `59.0`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiVersion(String);

impl ApiVersion {
    /// Parses `59.0` (a leading `v` is accepted).
    ///
    /// # Errors
    /// [`SalesforceError::ConfigInvalid`] unless it is `digits.digits`.
    pub fn new(v: &str) -> Result<ApiVersion, SalesforceError> {
        let v = v.strip_prefix('v').unwrap_or(v);
        let ok = v.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        if ok {
            Ok(ApiVersion(v.to_owned()))
        } else {
            Err(SalesforceError::ConfigInvalid(format!(
                "API version {v:?} is not of the form 59.0"
            )))
        }
    }

    /// `59.0`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ApiVersion {
    fn default() -> Self {
        ApiVersion(DEFAULT_API_VERSION.to_owned())
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = SalesforceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ApiVersion::new(&s)
    }
}

impl From<ApiVersion> for String {
    fn from(v: ApiVersion) -> String {
        v.0
    }
}

/// How the connector authenticates. `Debug` never shows a secret.
#[derive(Clone, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Credentials {
    /// The refresh token of the OAuth 2.0 web-server flow (see
    /// [`crate::auth::web_server_flow`] to obtain one).
    RefreshToken {
        /// The connected app's consumer key.
        client_id: String,
        /// The consumer secret, for confidential apps.
        #[serde(default)]
        client_secret: Option<SecretString>,
        /// The refresh token.
        refresh_token: SecretString,
    },
    /// The OAuth 2.0 JWT bearer flow with the connected app's certificate.
    JwtBearer {
        /// The connected app's consumer key (the JWT issuer).
        consumer_key: String,
        /// The user the token is issued for.
        username: String,
        /// The RSA private key of the certificate, PEM.
        private_key_pem: SecretString,
    },
    /// The OAuth 2.0 client-credentials flow (a connected app with a run-as user).
    ClientCredentials {
        /// The consumer key.
        client_id: String,
        /// The consumer secret.
        client_secret: SecretString,
    },
    /// The OAuth 2.0 username-password flow (seed 004). **Legacy**: Salesforce
    /// blocks it by default in new orgs and recommends the flows above; the
    /// password is sent with the user's security token appended.
    UsernamePassword {
        /// The consumer key.
        client_id: String,
        /// The consumer secret.
        client_secret: SecretString,
        /// The username.
        username: String,
        /// The password.
        password: SecretString,
        /// The security token, appended to the password.
        #[serde(default)]
        security_token: Option<SecretString>,
    },
    /// A ready access token and its instance (no refresh possible).
    AccessToken {
        /// The access token.
        access_token: SecretString,
        /// The instance URL the token belongs to.
        instance_url: Url,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::RefreshToken { client_id, .. } => f
                .debug_struct("RefreshToken")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Credentials::JwtBearer {
                consumer_key,
                username,
                ..
            } => f
                .debug_struct("JwtBearer")
                .field("consumer_key", consumer_key)
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::ClientCredentials { client_id, .. } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Credentials::UsernamePassword {
                client_id,
                username,
                ..
            } => f
                .debug_struct("UsernamePassword")
                .field("client_id", client_id)
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::AccessToken { instance_url, .. } => f
                .debug_struct("AccessToken")
                .field("instance_url", &instance_url.as_str())
                .finish_non_exhaustive(),
        }
    }
}

/// The connector's settings. Build with [`SalesforceConfig::builder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SalesforceConfig {
    /// Where to log in.
    pub login: LoginHost,
    /// How to authenticate.
    pub credentials: Credentials,
    /// The REST API version (default 59.0).
    pub api_version: ApiVersion,
    /// The objects this connection syncs (informational; any object can be read).
    pub objects: Vec<String>,
    /// Records per `query` page, sent as `Sforce-Query-Options: batchSize`
    /// (200 to 2,000; default 2,000).
    pub page_size: u32,
    /// Reads whose `totalSize` exceeds this go through a Bulk API 2.0 query
    /// job (default 100,000).
    pub bulk_read_threshold: u64,
    /// Records per Bulk API 2.0 query results page (`maxRecords`, default 50,000).
    pub bulk_results_page: u64,
    /// Write batches larger than this go through a Bulk API 2.0 ingest job
    /// (default 10,000); smaller ones through sObject Collections.
    pub bulk_write_threshold: usize,
    /// Records per sObject Collections call (at most 200, the API's limit).
    pub collection_size: usize,
    /// sObject Collections calls in flight at once for one write (default 4).
    pub write_concurrency: usize,
    /// The most records one [`crm_core::Sink::write`] call takes (default 150,000).
    pub max_write_batch: usize,
    /// Largest CSV upload of one ingest job (default 100 MB, the API allows 150 MB base64).
    pub bulk_upload_max_bytes: usize,
    /// Long-running requests (Bulk job polls and result downloads) in flight
    /// at once, kept below the org's concurrent long-running request limit (default 5).
    pub max_long_running: usize,
    /// Requests in flight at once overall (default 10).
    pub max_in_flight: usize,
    /// First and largest delay between Bulk job polls (default 1 s and 30 s).
    pub bulk_poll: (Duration, Duration),
    /// Requests of the daily allocation (`Sforce-Limit-Info`) left to other
    /// integrations: when only this many remain, calls stop with
    /// [`crm_core::ErrorKind::QuotaExhausted`] (default: 2% of the allocation
    /// when `None`).
    pub quota_reserve: Option<u64>,
    /// How long a usage reading that says the allocation is used up is
    /// trusted; after it, `GET limits` is read again before refusing a call
    /// (default 5 minutes).
    pub usage_ttl: Duration,
    /// Before an upsert by external id or an update by `Id` through sObject
    /// Collections, read the records holding the batch's keys (one `query` per 200 keys) and leave
    /// out those whose values already match: they come back
    /// [`crm_core::WriteOutcome::Unchanged`], are not written, and keep their
    /// `SystemModstamp` (no flows or triggers fire, no sync loop). Default true.
    pub skip_unchanged: bool,
    /// The org's session timeout (Setup > Session Settings), if known.
    /// Salesforce's token response has no `expires_in`; with this set, an
    /// OAuth session is renewed (one token request, shared by every request
    /// in flight) a fifth of the timeout (at most 2 minutes) before it runs
    /// out, so long jobs never see `INVALID_SESSION_ID`. Without it a
    /// session is renewed after its first 401. Default `None`.
    pub session_timeout: Option<Duration>,
    /// How long deleted records stay queryable (the recycle bin, 15 days).
    /// An incremental read from an older cursor fails asking for a full resync.
    pub recycle_bin_window: Duration,
    /// How far before the cursor an incremental read looks again, for rows
    /// committed late with an earlier `SystemModstamp`; rows already read are
    /// recognised by `(Id, SystemModstamp)` and not repeated (default 5 minutes).
    pub lookback: Duration,
    /// Time limit of one request attempt (default 120 s).
    pub timeout: Duration,
    /// An extra root certificate (PEM) to trust, e.g. a simulator's.
    pub root_certificate_pem: Option<String>,
}

impl SalesforceConfig {
    /// A builder with the defaults above.
    pub fn builder(login: LoginHost, credentials: Credentials) -> SalesforceConfigBuilder {
        SalesforceConfigBuilder {
            config: SalesforceConfig {
                login,
                credentials,
                api_version: ApiVersion::default(),
                objects: vec![
                    "Contact".into(),
                    "Lead".into(),
                    "Account".into(),
                    "Opportunity".into(),
                ],
                page_size: 2000,
                bulk_read_threshold: 100_000,
                bulk_results_page: 50_000,
                bulk_write_threshold: 10_000,
                collection_size: 200,
                write_concurrency: 4,
                max_write_batch: 150_000,
                bulk_upload_max_bytes: 100_000_000,
                max_long_running: 5,
                max_in_flight: 10,
                bulk_poll: (Duration::from_secs(1), Duration::from_secs(30)),
                quota_reserve: None,
                usage_ttl: Duration::from_secs(300),
                skip_unchanged: true,
                session_timeout: None,
                recycle_bin_window: Duration::from_secs(15 * 24 * 3600),
                lookback: Duration::from_secs(300),
                timeout: Duration::from_secs(120),
                root_certificate_pem: None,
            },
        }
    }

    /// `/services/data/v59.0`.
    pub fn data_path(&self) -> String {
        format!("/services/data/{}", self.api_version)
    }
}

/// Builds and validates a [`SalesforceConfig`].
#[derive(Clone, Debug)]
pub struct SalesforceConfigBuilder {
    config: SalesforceConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $t:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: $t) -> Self {
            self.config.$name = v;
            self
        }
    };
}

impl SalesforceConfigBuilder {
    /// Sets the API version (`"59.0"`); validated by [`build`](Self::build).
    #[must_use]
    pub fn api_version(mut self, v: &str) -> Self {
        match ApiVersion::new(v) {
            Ok(v) => self.config.api_version = v,
            Err(_) => self.config.api_version = ApiVersion(format!("invalid:{v}")),
        }
        self
    }

    /// Sets the objects this connection syncs.
    #[must_use]
    pub fn objects<I: IntoIterator<Item = S>, S: Into<String>>(mut self, objects: I) -> Self {
        self.config.objects = objects.into_iter().map(Into::into).collect();
        self
    }

    setter!(
        /// Sets [`SalesforceConfig::page_size`].
        page_size: u32
    );
    setter!(
        /// Sets [`SalesforceConfig::bulk_read_threshold`].
        bulk_read_threshold: u64
    );
    setter!(
        /// Sets [`SalesforceConfig::bulk_results_page`].
        bulk_results_page: u64
    );
    setter!(
        /// Sets [`SalesforceConfig::bulk_write_threshold`].
        bulk_write_threshold: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::collection_size`].
        collection_size: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::write_concurrency`].
        write_concurrency: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::max_write_batch`].
        max_write_batch: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::bulk_upload_max_bytes`].
        bulk_upload_max_bytes: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::max_long_running`].
        max_long_running: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::max_in_flight`].
        max_in_flight: usize
    );
    setter!(
        /// Sets [`SalesforceConfig::bulk_poll`].
        bulk_poll: (Duration, Duration)
    );
    setter!(
        /// Sets [`SalesforceConfig::quota_reserve`].
        quota_reserve: Option<u64>
    );
    setter!(
        /// Sets [`SalesforceConfig::usage_ttl`].
        usage_ttl: Duration
    );
    setter!(
        /// Sets [`SalesforceConfig::session_timeout`].
        session_timeout: Option<Duration>
    );
    setter!(
        /// Sets [`SalesforceConfig::skip_unchanged`].
        skip_unchanged: bool
    );
    setter!(
        /// Sets [`SalesforceConfig::recycle_bin_window`].
        recycle_bin_window: Duration
    );
    setter!(
        /// Sets [`SalesforceConfig::lookback`].
        lookback: Duration
    );
    setter!(
        /// Sets [`SalesforceConfig::timeout`].
        timeout: Duration
    );

    /// Trusts an extra root certificate (PEM).
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.root_certificate_pem = Some(pem.into());
        self
    }

    /// Validates every setting.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] naming each invalid setting.
    pub fn build(self) -> crm_core::Result<SalesforceConfig> {
        let c = self.config;
        let mut problems = Vec::new();
        if c.api_version.0.starts_with("invalid:") {
            problems.push(format!(
                "api_version {:?} is not of the form 59.0",
                c.api_version.0.trim_start_matches("invalid:")
            ));
        }
        if !(200..=2000).contains(&c.page_size) {
            problems.push(format!(
                "page_size {} is not within 200..=2000",
                c.page_size
            ));
        }
        if !(1..=200).contains(&c.collection_size) {
            problems.push(format!(
                "collection_size {} is not within 1..=200",
                c.collection_size
            ));
        }
        for (name, v) in [
            ("write_concurrency", c.write_concurrency),
            ("max_write_batch", c.max_write_batch),
            ("max_long_running", c.max_long_running),
            ("max_in_flight", c.max_in_flight),
            ("bulk_upload_max_bytes", c.bulk_upload_max_bytes),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be > 0"));
            }
        }
        if c.bulk_results_page == 0 {
            problems.push("bulk_results_page must be > 0".into());
        }
        if c.bulk_poll.0.is_zero() || c.bulk_poll.1 < c.bulk_poll.0 {
            problems.push("bulk_poll must be (initial > 0, max >= initial)".into());
        }
        for o in &c.objects {
            if !soql::is_valid_name(o) || o.contains('.') {
                problems.push(format!("object {o:?} is not a valid sObject name"));
            }
        }
        if let LoginHost::MyDomain(u) = &c.login
            && !matches!(u.scheme(), "https" | "http")
        {
            problems.push(format!("login URL {u} is not http(s)"));
        }
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(SalesforceError::ConfigInvalid(problems.join("; ")).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::RefreshToken {
            client_id: "cid".into(),
            client_secret: Some(SecretString::from("shh-secret".to_owned())),
            refresh_token: SecretString::from("rt-secret".to_owned()),
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            LoginHost::Production.token_url().as_str(),
            "https://login.salesforce.com/services/oauth2/token"
        );
        assert_eq!(
            LoginHost::Sandbox.authorize_url().as_str(),
            "https://test.salesforce.com/services/oauth2/authorize"
        );
        let my = LoginHost::MyDomain(Url::parse("https://acme.my.salesforce.com/").unwrap());
        assert_eq!(
            my.token_url().as_str(),
            "https://acme.my.salesforce.com/services/oauth2/token"
        );
    }

    #[test]
    fn defaults_and_validation() {
        let c = SalesforceConfig::builder(LoginHost::Production, creds())
            .build()
            .unwrap();
        assert_eq!(c.data_path(), "/services/data/v59.0");
        assert_eq!(c.page_size, 2000);
        let c = SalesforceConfig::builder(LoginHost::Production, creds())
            .api_version("v60.0")
            .build()
            .unwrap();
        assert_eq!(c.api_version.as_str(), "60.0");
        let err = SalesforceConfig::builder(LoginHost::Production, creds())
            .api_version("sixty")
            .page_size(5000)
            .collection_size(500)
            .objects(["Contact; DROP"])
            .build()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("api_version") && msg.contains("page_size"));
        assert!(msg.contains("collection_size") && msg.contains("object"));
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", creds());
        assert!(!shown.contains("shh-secret") && !shown.contains("rt-secret"));
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "flow": "username_password", "client_id": "c", "client_secret": "s3cr3t",
            "username": "u@example.com", "password": "pw-secret", "security_token": "tok"
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw-secret") && !shown.contains("s3cr3t"));
    }
}
