//! The HTTP client every SaaS connector is built on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crm_core::{Error, ErrorKind, Result};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use crate::auth::{Auth, Token, TokenTransport};
use crate::classify::{
    CTX_PROVIDER, CTX_RETRY_AFTER_MS, DefaultClassifier, ResponseClassifier, ResponseParts, Verdict,
};
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimitConfig, RateLimitHeaders, RateLimiter};
use crate::redact;
use crate::retry::{self, RetryPolicy};

/// Default time limit of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time limit for opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest response body read into memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Per-request settings.
///
/// ```
/// use std::time::Duration;
/// use crm_http::RequestOptions;
///
/// // An upsert keyed by external id may be re-sent safely.
/// let opts = RequestOptions::new("contacts.upsert")
///     .idempotent(true)
///     .timeout(Duration::from_secs(60));
/// assert_eq!(opts.endpoint, "contacts.upsert");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestOptions {
    /// The endpoint label for metrics and error operations, e.g.
    /// `"contacts.list"`. Keep the set small and fixed (no ids in it).
    pub endpoint: &'static str,
    /// Whether the request may be re-sent after it may have reached the
    /// provider (a dropped connection, a timeout, a 5xx). `None` decides by
    /// method: `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE` are idempotent;
    /// `POST` and `PATCH` are not. A rate-limited (429) or unauthenticated
    /// (401) request and a failed connect are always re-sent: the provider
    /// did not process them.
    pub idempotent: Option<bool>,
    /// Time limit of one attempt; the client's default when `None`.
    pub timeout: Option<Duration>,
    /// Retry policy for this request; the client's default when `None`.
    pub retry: Option<RetryPolicy>,
}

impl RequestOptions {
    /// Options with the endpoint label `endpoint` and defaults otherwise.
    pub fn new(endpoint: &'static str) -> Self {
        RequestOptions {
            endpoint,
            idempotent: None,
            timeout: None,
            retry: None,
        }
    }

    /// Marks the request safe (or not) to re-send, e.g. an upsert by
    /// external id.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Sets the time limit of one attempt.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry policy of this request.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

/// A successful response, body read.
#[derive(Clone)]
pub struct HttpResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    attempts: u32,
    endpoint: &'static str,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl HttpResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body, owned.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// How many attempts the request took (a re-send after a token refresh
    /// is not counted).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    /// [`ErrorKind::SchemaMismatch`] when the body is not UTF-8.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body).map_err(|e| {
            Error::new(ErrorKind::SchemaMismatch, "response body is not UTF-8")
                .with_operation(self.endpoint)
                .with_context("valid_up_to", e.valid_up_to())
        })
    }

    /// The body parsed as JSON into `T`.
    ///
    /// # Errors
    /// [`ErrorKind::SchemaMismatch`] when the body does not parse into `T`;
    /// the message gives the position, never the body's values.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "response does not have the expected shape ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
            .with_operation(self.endpoint)
        })
    }
}

/// Builds an [`HttpClient`]; see [`HttpClient::builder`].
#[must_use]
pub struct HttpClientBuilder {
    provider: String,
    auth: Auth,
    rate_limit: RateLimitConfig,
    limiter: Option<Arc<RateLimiter>>,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    root_certs: Vec<Vec<u8>>,
    base_url: Option<String>,
    classifier: Arc<dyn ResponseClassifier>,
    rate_headers: Option<Arc<dyn RateLimitHeaders>>,
    metrics: Option<Arc<Metrics>>,
    user_agent: String,
    max_response_bytes: usize,
    default_headers: HeaderMap,
    error: Option<Error>,
}

impl fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("provider", &self.provider)
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl HttpClientBuilder {
    /// Sets the authentication (default none).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the rate limits (default: none fixed, adaptive to headers).
    pub fn rate_limit(mut self, config: RateLimitConfig) -> Self {
        self.rate_limit = config;
        self
    }

    /// Uses a limiter shared with other clients of the same account
    /// (overrides [`rate_limit`](Self::rate_limit)).
    pub fn rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Reads the provider's rate-limit headers with `parser` to feed the
    /// adaptive limit (default: none).
    pub fn rate_limit_headers(mut self, parser: impl RateLimitHeaders) -> Self {
        self.rate_headers = Some(Arc::new(parser));
        self
    }

    /// Sets the default retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the time limit of one attempt (default 30 s), from sending the
    /// request to the end of the response body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the time limit for opening a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the PEM certificate(s) in `pem` in addition to the built-in
    /// roots, e.g. a simulator's self-signed certificate.
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certs.push(pem.as_ref().to_vec());
        self
    }

    /// Sets the base URL that [`HttpClient::url`] resolves paths against.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Sets the provider's response classifier (default [`DefaultClassifier`]).
    pub fn classifier(mut self, classifier: impl ResponseClassifier) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// Records into this registry (default: a registry of this client's own).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the `User-Agent` (default `crm-connectors/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Sets the largest response body read into memory (default 64 MiB).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Adds a header sent with every request (e.g. an API version).
    pub fn default_header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.default_headers.insert(n, v);
            }
            _ => {
                self.error.get_or_insert_with(|| {
                    Error::invalid_input(format!("invalid default header {name:?}"))
                });
            }
        }
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid base URL, certificate,
    /// header, rate limit or retry policy, or when the TLS backend cannot
    /// start.
    pub fn build(self) -> Result<HttpClient> {
        if let Some(err) = self.error {
            return Err(err);
        }
        retry::validate(&self.retry)?;
        let base_url = self
            .base_url
            .as_deref()
            .map(|u| {
                Url::parse(u).map_err(|e| Error::invalid_input(format!("invalid base URL: {e}")))
            })
            .transpose()?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .default_headers(self.default_headers);
        for pem in &self.root_certs {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::invalid_input("root certificate is not valid PEM").with_source(e)
            })?;
            if certs.is_empty() {
                return Err(Error::invalid_input(
                    "root certificate PEM holds no certificate",
                ));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::invalid_input("cannot start the HTTP client").with_source(e))?;
        let limiter = match self.limiter {
            Some(l) => l,
            None => Arc::new(RateLimiter::new(self.rate_limit)?),
        };
        Ok(HttpClient {
            inner: Arc::new(Inner {
                provider: Arc::from(self.provider),
                http,
                auth: self.auth,
                limiter,
                retry: self.retry,
                timeout: self.timeout,
                classifier: self.classifier,
                rate_headers: self.rate_headers,
                metrics: self.metrics.unwrap_or_default(),
                max_response_bytes: self.max_response_bytes,
            }),
            base_url,
        })
    }
}

struct Inner {
    provider: Arc<str>,
    http: reqwest::Client,
    auth: Auth,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    timeout: Duration,
    classifier: Arc<dyn ResponseClassifier>,
    rate_headers: Option<Arc<dyn RateLimitHeaders>>,
    metrics: Arc<Metrics>,
    max_response_bytes: usize,
}

/// The shared HTTP client: auth, rate limits, retries, timeouts and metrics
/// around reqwest (rustls). Cheap to clone; clones share everything.
///
/// # Layers
/// A call to [`send`](Self::send) goes through, outermost first:
///
/// 1. **metrics** of the call: `errors_total` when it finally fails;
/// 2. **retry** with its budget (attempts, total time), backoff with full
///    jitter or the provider's `Retry-After`; each attempt then passes:
/// 3. **rate limit**: daily quota (fails fast), in-flight cap, adaptive
///    pacing from headers, the fixed limit (waits);
/// 4. **auth**: sets the credential, fetching or refreshing the token
///    first when it is missing or about to expire; after a 401 the token is
///    refreshed once (one refresh shared by concurrent requests) and the
///    request re-sent;
/// 5. **timeout** of the attempt, from sending to the end of the body;
/// 6. **transport**: reqwest with rustls; then the rate-limit headers are
///    read and the provider's [`ResponseClassifier`] decides.
///
/// ```no_run
/// use std::time::Duration;
/// use secrecy::SecretString;
/// use crm_http::{Auth, HttpClient, RateLimitConfig, RequestOptions, RetryPolicy,
///                HubSpotRateLimitHeaders};
///
/// # async fn demo() -> crm_core::Result<()> {
/// let client = HttpClient::builder("hubspot")
///     .base_url("https://api.hubapi.com")
///     .auth(Auth::bearer(SecretString::from("pat-...".to_owned())))
///     .rate_limit(RateLimitConfig::new(100, Duration::from_secs(10)).daily_quota(250_000))
///     .rate_limit_headers(HubSpotRateLimitHeaders)
///     .retry(RetryPolicy::default().max_attempts(5))
///     .timeout(Duration::from_secs(30))
///     .build()?;
/// let page: serde_json::Value = client
///     .get_json("/crm/v3/objects/contacts?limit=100", RequestOptions::new("contacts.list"))
///     .await?;
/// # let _ = page; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
    base_url: Option<Url>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("provider", &self.inner.provider)
            .field("base_url", &self.base_url.as_ref().map(Url::as_str))
            .field("auth", &self.inner.auth)
            .field("limiter", &self.inner.limiter)
            .field("retry", &self.inner.retry)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Whether a successful body is read into memory or handed over open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyMode {
    Buffered,
    Streamed,
}

/// What an exchange produced before classification.
enum Body {
    Read(Bytes),
    Open(reqwest::Response),
}

/// A successful attempt.
enum Received {
    Buffered(HttpResponse),
    Streamed(StreamingResponse),
}

impl Received {
    fn set_attempts(&mut self, attempts: u32) {
        match self {
            Received::Buffered(r) => r.attempts = attempts,
            Received::Streamed(r) => r.attempts = attempts,
        }
    }
}

enum StreamBody {
    Open(reqwest::Response),
    Read(Option<Bytes>),
}

/// A successful response whose body is read chunk by chunk; see
/// [`HttpClient::send_streaming`].
pub struct StreamingResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: StreamBody,
    attempts: u32,
    endpoint: &'static str,
    idle_timeout: Duration,
    provider: Arc<str>,
    metrics: Arc<Metrics>,
    _permit: crate::rate_limit::RatePermit,
}

impl fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    fn from_buffered(
        response: HttpResponse,
        idle_timeout: Duration,
        provider: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Self {
        StreamingResponse {
            status: response.status,
            headers: response.headers,
            // Already counted in the metrics when it was read.
            body: StreamBody::Read(Some(response.body)),
            attempts: response.attempts,
            endpoint: response.endpoint,
            idle_timeout,
            provider,
            metrics,
            _permit: crate::rate_limit::RatePermit::none(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// How many attempts the request took.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next chunk of the body; `None` at the end.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] when the connection fails or no data arrives
    /// within the idle timeout. The download is not resumed: start it again
    /// (with a range or a page locator, where the provider has them).
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled read loses no data already returned; the
    /// next call continues where the stream is.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let endpoint = self.endpoint;
        let response = match &mut self.body {
            StreamBody::Read(bytes) => return Ok(bytes.take().filter(|b| !b.is_empty())),
            StreamBody::Open(response) => response,
        };
        let chunk = tokio::time::timeout(self.idle_timeout, response.chunk())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Transient,
                    format!("no data within {} ms", self.idle_timeout.as_millis()),
                )
                .with_operation(endpoint)
            })?
            .map_err(|e| transport_error(e, endpoint))?;
        if let Some(bytes) = &chunk {
            self.metrics
                .record_bytes_received(&self.provider, endpoint, bytes.len() as u64);
        }
        Ok(chunk)
    }

    /// The body as a `Stream` of chunks (see [`chunk`](Self::chunk)).
    pub fn into_stream(self) -> futures_util::stream::BoxStream<'static, Result<Bytes>> {
        use futures_util::StreamExt;
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut response = state?;
            match response.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// How one attempt failed.
enum AttemptError {
    /// A failure; `may_have_been_processed` is false when the provider
    /// certainly did not act on the request (connect failed, 429).
    Failed {
        error: Error,
        may_have_been_processed: bool,
    },
    /// The token of this generation was rejected.
    Rejected { error: Error, generation: u64 },
}

impl HttpClient {
    /// A builder for a client of `provider` (the `provider` metrics label,
    /// e.g. `"hubspot"`).
    pub fn builder(provider: impl Into<String>) -> HttpClientBuilder {
        HttpClientBuilder {
            provider: provider.into(),
            auth: Auth::none(),
            rate_limit: RateLimitConfig::default(),
            limiter: None,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            root_certs: Vec::new(),
            base_url: None,
            classifier: Arc::new(DefaultClassifier),
            rate_headers: None,
            metrics: None,
            user_agent: concat!("crm-connectors/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            default_headers: HeaderMap::new(),
            error: None,
        }
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// The base URL, if set.
    pub fn base_url(&self) -> Option<&Url> {
        self.base_url.as_ref()
    }

    /// A client sharing everything with this one but the base URL (e.g.
    /// Salesforce's `instance_url`, known after the first token).
    #[must_use]
    pub fn with_base_url(&self, base_url: Url) -> Self {
        HttpClient {
            inner: Arc::clone(&self.inner),
            base_url: Some(base_url),
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    /// The authentication.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Resolves `path` against the base URL: an absolute URL is taken as
    /// it is; otherwise the path (and query) is appended to the base URL's
    /// path, so `https://x/crm/v3` + `objects/contacts` and
    /// `https://x/crm/v3/` + `/objects/contacts` both give
    /// `https://x/crm/v3/objects/contacts`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the result is not a valid URL or a
    /// relative path is given without a base URL.
    pub fn url(&self, path: &str) -> Result<Url> {
        if let Ok(url) = Url::parse(path) {
            return Ok(url);
        }
        let base = self.base_url.as_ref().ok_or_else(|| {
            Error::invalid_input("relative path given but the client has no base URL")
        })?;
        let joined = format!(
            "{}/{}",
            base.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        Url::parse(&joined).map_err(|e| Error::invalid_input(format!("invalid URL: {e}")))
    }

    /// A request builder for `method` and `url`; send it with
    /// [`send`](Self::send). Authentication is added by `send`.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner.http.request(method, url)
    }

    /// The current access token of an OAuth flow (fetched when needed),
    /// e.g. to read Salesforce's `instance_url`; `None` for other methods.
    ///
    /// # Errors
    /// As for the token request: [`ErrorKind::Auth`] for rejected
    /// credentials, [`ErrorKind::Transient`] for transport failures.
    pub async fn token(&self) -> Result<Option<Arc<Token>>> {
        self.inner.auth.token(&self.token_transport()).await
    }

    pub(crate) fn token_transport(&self) -> TokenTransport {
        TokenTransport {
            http: self.inner.http.clone(),
            provider: Arc::clone(&self.inner.provider),
            metrics: Arc::clone(&self.inner.metrics),
            timeout: self.inner.timeout,
        }
    }

    /// `GET path` (resolved with [`url`](Self::url)) and parse the JSON body.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`ErrorKind::SchemaMismatch`] when the
    /// body does not parse into `T`.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        options: RequestOptions,
    ) -> Result<T> {
        let url = self
            .url(path)
            .map_err(|e| e.with_operation(options.endpoint))?;
        let req = self
            .request(Method::GET, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        self.send(req, options).await?.json()
    }

    /// Sends `body` as JSON with `method` to `path` and parses the JSON
    /// response.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`ErrorKind::InvalidInput`] when `body`
    /// cannot be serialised and [`ErrorKind::SchemaMismatch`] when the
    /// response does not parse into `T`.
    ///
    /// # Cancel safety
    /// As [`send`](Self::send).
    pub async fn send_json<B, T>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        options: RequestOptions,
    ) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let url = self
            .url(path)
            .map_err(|e| e.with_operation(options.endpoint))?;
        let bytes = serde_json::to_vec(body).map_err(|e| {
            Error::invalid_input(format!("request body cannot be serialised: {e}"))
                .with_operation(options.endpoint)
        })?;
        let req = self
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(bytes);
        self.send(req, options).await?.json()
    }

    /// Sends a request through every layer (see [Layers](Self#layers)) and
    /// returns the response when the provider's classifier calls it a
    /// success.
    ///
    /// # Errors
    /// The classifier's error for the last response, or a transport error
    /// ([`ErrorKind::Transient`] for connect failures, timeouts and dropped
    /// connections). [`ErrorKind::QuotaExhausted`] at once when the daily
    /// quota is used up. An error whose retries ran out is marked persistent
    /// ([`crm_core::Retry::Persistent`]); a retryable error of a request that
    /// is not idempotent and may have been processed is returned at once,
    /// still temporary, with the context `retried=no`. Error text never
    /// holds credentials: bodies are scrubbed and cut to 2 KiB.
    ///
    /// # Cancel safety
    /// Dropping the future cancels the request; for a write the provider
    /// may or may not have processed it, so writes should be upserts keyed
    /// by an external id. A token refresh that was under way finishes in the
    /// background, so a rotated refresh token is never lost.
    pub async fn send(
        &self,
        request: RequestBuilder,
        options: RequestOptions,
    ) -> Result<HttpResponse> {
        match self.send_inner(request, &options, BodyMode::Buffered).await {
            Ok(Received::Buffered(response)) => Ok(response),
            Ok(Received::Streamed(_)) => Err(self.failed(
                &options,
                Error::new(
                    ErrorKind::Permanent,
                    "a streamed response reached the buffered path",
                )
                .with_operation(options.endpoint),
            )),
            Err(error) => Err(self.failed(&options, error)),
        }
    }

    /// Like [`send`](Self::send), but a successful response is handed over
    /// as soon as its headers arrive, for downloads too large to hold in
    /// memory (bulk exports, CSV results). Failed responses are read and
    /// classified as usual, and retried by the same rules; the classifier
    /// sees an empty body for a successful streamed response, so errors a
    /// provider reports inside a 2xx body are not detected here.
    ///
    /// The attempt timeout covers the wait for the headers; each chunk read
    /// then has the same limit as an idle timeout. The in-flight slot of the
    /// rate limiter is held until the [`StreamingResponse`] is dropped.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    /// As [`send`](Self::send); dropping the returned response closes the
    /// connection.
    pub async fn send_streaming(
        &self,
        request: RequestBuilder,
        options: RequestOptions,
    ) -> Result<StreamingResponse> {
        match self.send_inner(request, &options, BodyMode::Streamed).await {
            Ok(Received::Streamed(response)) => Ok(response),
            // A 2xx the client did not open as a stream cannot happen; a
            // classifier may still call a non-2xx a success: hand it over
            // read.
            Ok(Received::Buffered(response)) => Ok(StreamingResponse::from_buffered(
                response,
                self.inner.timeout,
                Arc::clone(&self.inner.provider),
                Arc::clone(&self.inner.metrics),
            )),
            Err(error) => Err(self.failed(&options, error)),
        }
    }

    fn failed(&self, options: &RequestOptions, error: Error) -> Error {
        self.inner.metrics.record_error(
            &self.inner.provider,
            options.endpoint,
            error.kind().as_str(),
        );
        error.with_context(CTX_PROVIDER, &self.inner.provider)
    }

    async fn send_inner(
        &self,
        request: RequestBuilder,
        options: &RequestOptions,
        mode: BodyMode,
    ) -> Result<Received> {
        let endpoint = options.endpoint;
        let request = request.build().map_err(|e| {
            Error::invalid_input("the request cannot be built")
                .with_operation(endpoint)
                .with_source(e.without_url())
        })?;
        let idempotent = options
            .idempotent
            .unwrap_or_else(|| is_idempotent_method(request.method()));
        let policy = options.retry.as_ref().unwrap_or(&self.inner.retry);
        let timeout = options.timeout.unwrap_or(self.inner.timeout);
        let replayable = request.try_clone().is_some();
        let mut original = Some(request);
        let started = Instant::now();
        let mut attempts: u32 = 0;
        let mut sends: u32 = 0;
        let mut reauthenticated = false;
        loop {
            // A streaming body cannot be cloned: such a request gets one attempt.
            let this = match original.as_ref().and_then(reqwest::Request::try_clone) {
                Some(r) => r,
                None => original.take().ok_or_else(|| {
                    Error::new(ErrorKind::Permanent, "the request body cannot be replayed")
                        .with_operation(endpoint)
                })?,
            };
            attempts += 1;
            sends += 1;
            match self.attempt(this, endpoint, timeout, sends > 1, mode).await {
                Ok(mut received) => {
                    received.set_attempts(attempts);
                    return Ok(received);
                }
                Err(AttemptError::Rejected { error, generation }) => {
                    if reauthenticated || !replayable {
                        return Err(error.set_permanent().with_context("attempts", attempts));
                    }
                    reauthenticated = true;
                    tracing::debug!(provider = %self.inner.provider, endpoint, "token rejected; refreshing once");
                    self.inner
                        .auth
                        .refresh_after_rejection(&self.token_transport(), generation)
                        .await
                        .map_err(|e| e.with_operation(endpoint))?;
                    // The re-send after a refresh does not spend the retry budget.
                    attempts -= 1;
                }
                Err(AttemptError::Failed {
                    error,
                    may_have_been_processed,
                }) => {
                    if !error.is_retryable() {
                        return Err(error.with_context("attempts", attempts));
                    }
                    if may_have_been_processed && !idempotent {
                        return Err(error.with_context("attempts", attempts).with_context(
                            "retried",
                            "no (not idempotent; the provider may have processed it)",
                        ));
                    }
                    if !replayable {
                        return Err(retry::exhausted(
                            error,
                            attempts,
                            "the request body cannot be replayed",
                        ));
                    }
                    if attempts >= policy.attempts_limit() {
                        return Err(retry::exhausted(error, attempts, "attempt limit reached"));
                    }
                    let delay = match server_delay(&error) {
                        Some(after) => policy.delay_for_retry_after(after),
                        None => policy.backoff(attempts),
                    };
                    if started.elapsed() + delay > policy.elapsed_limit() {
                        return Err(retry::exhausted(error, attempts, "time budget spent"));
                    }
                    tracing::debug!(
                        provider = %self.inner.provider,
                        endpoint,
                        attempt = attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %error,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt: rate limit, auth, timeout, transport, classification.
    async fn attempt(
        &self,
        mut request: reqwest::Request,
        endpoint: &'static str,
        timeout: Duration,
        is_retry: bool,
        mode: BodyMode,
    ) -> std::result::Result<Received, AttemptError> {
        let inner = &self.inner;
        let not_sent = |error: Error| AttemptError::Failed {
            error: error.with_operation(endpoint),
            may_have_been_processed: false,
        };
        let permit = inner.limiter.acquire().await.map_err(not_sent)?;
        let applied = inner
            .auth
            .apply(&mut request, &self.token_transport())
            .await
            .map_err(not_sent)?;
        let method = request.method().clone();
        let bytes_sent = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map_or(0, |b| b.len() as u64);
        inner
            .metrics
            .record_attempt(&inner.provider, endpoint, bytes_sent, is_retry);
        let started = Instant::now();
        let exchange = async {
            let response = inner
                .http
                .execute(request)
                .await
                .map_err(|e| transport_failure(e, endpoint))?;
            let status = response.status();
            let headers = response.headers().clone();
            if mode == BodyMode::Streamed && status.is_success() {
                return Ok::<_, AttemptError>((status, headers, Body::Open(response)));
            }
            let body = read_body(response, inner.max_response_bytes, endpoint).await?;
            Ok((status, headers, Body::Read(body)))
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        let (status, headers, body) = match outcome {
            Err(_) => {
                inner
                    .metrics
                    .record_response(&inner.provider, endpoint, started.elapsed(), 0);
                return Err(AttemptError::Failed {
                    error: Error::new(
                        ErrorKind::Transient,
                        format!("no complete response within {} ms", timeout.as_millis()),
                    )
                    .with_operation(endpoint),
                    may_have_been_processed: true,
                });
            }
            Ok(Err(e)) => {
                inner
                    .metrics
                    .record_response(&inner.provider, endpoint, started.elapsed(), 0);
                return Err(e);
            }
            Ok(Ok(parts)) => parts,
        };
        let (body, open) = match body {
            Body::Read(bytes) => (bytes, None),
            Body::Open(response) => (Bytes::new(), Some(response)),
        };
        inner.metrics.record_response(
            &inner.provider,
            endpoint,
            started.elapsed(),
            body.len() as u64,
        );
        if let Some(parser) = &inner.rate_headers {
            inner.limiter.observe(&parser.parse(&headers));
        }
        let secrets = inner.auth.known_secrets();
        let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let parts = ResponseParts::new(
            &inner.provider,
            endpoint,
            &method,
            status,
            &headers,
            &body,
            &secret_refs,
        );
        match inner.classifier.classify(&parts) {
            Verdict::Success => Ok(match open {
                Some(response) => Received::Streamed(StreamingResponse {
                    status,
                    headers,
                    body: StreamBody::Open(response),
                    attempts: 0,
                    endpoint,
                    idle_timeout: timeout,
                    provider: Arc::clone(&inner.provider),
                    metrics: Arc::clone(&inner.metrics),
                    _permit: permit,
                }),
                None => Received::Buffered(HttpResponse {
                    status,
                    headers,
                    body,
                    attempts: 0,
                    endpoint,
                }),
            }),
            Verdict::Failure(error) => {
                let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(error.kind(), ErrorKind::RateLimited { .. });
                if rate_limited {
                    inner.metrics.record_rate_limited(&inner.provider, endpoint);
                }
                Err(AttemptError::Failed {
                    error: sanitize(error, &secret_refs),
                    may_have_been_processed: !rate_limited,
                })
            }
            Verdict::RefreshAuth(error) => {
                let error = sanitize(error, &secret_refs);
                match applied.generation {
                    Some(generation) if inner.auth.is_refreshable() => {
                        Err(AttemptError::Rejected { error, generation })
                    }
                    _ => Err(AttemptError::Failed {
                        error: error.set_permanent(),
                        may_have_been_processed: false,
                    }),
                }
            }
        }
    }
}

/// The wait the provider asked for: the rate-limit hint, or a
/// `Retry-After` recorded in the context (e.g. on a 503).
fn server_delay(error: &Error) -> Option<Duration> {
    error.retry_after().or_else(|| {
        error
            .context_value(CTX_RETRY_AFTER_MS)
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    })
}

fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn read_body(
    mut response: reqwest::Response,
    max: usize,
    endpoint: &'static str,
) -> std::result::Result<Bytes, AttemptError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(e, endpoint))?
    {
        if buf.len() + chunk.len() > max {
            return Err(AttemptError::Failed {
                error: Error::new(
                    ErrorKind::Permanent,
                    format!("response body larger than {max} bytes"),
                )
                .with_operation(endpoint),
                may_have_been_processed: true,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn transport_failure(e: reqwest::Error, endpoint: &'static str) -> AttemptError {
    let may_have_been_processed = !e.is_connect();
    AttemptError::Failed {
        error: transport_error(e, endpoint),
        may_have_been_processed,
    }
}

/// Maps a reqwest error to an [`Error`], dropping the URL (its query may
/// hold an API key).
pub(crate) fn transport_error(e: reqwest::Error, endpoint: &'static str) -> Error {
    let e = e.without_url();
    let (kind, message) = if e.is_builder() {
        (ErrorKind::InvalidInput, "the request is invalid")
    } else if e.is_redirect() {
        (ErrorKind::Permanent, "too many redirects")
    } else if chain_mentions(&e, "certificate") {
        (ErrorKind::Permanent, "TLS certificate rejected")
    } else if e.is_timeout() {
        (ErrorKind::Transient, "timed out")
    } else if e.is_connect() {
        (ErrorKind::Transient, "connection failed")
    } else if e.is_body() || e.is_decode() {
        (ErrorKind::Transient, "reading the response failed")
    } else {
        (
            ErrorKind::Transient,
            "the connection failed before a response arrived",
        )
    };
    Error::new(kind, message)
        .with_operation(endpoint)
        .with_source(e)
}

fn chain_mentions(e: &(dyn std::error::Error + 'static), needle: &str) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.to_string().to_ascii_lowercase().contains(needle) {
            return true;
        }
        current = err.source();
    }
    false
}

/// A last check that no known secret made it into an error: if one did (a
/// classifier copied raw text), the error is rebuilt from scrubbed parts.
fn sanitize(error: Error, secrets: &[&str]) -> Error {
    let shown = format!("{error} {error:?}");
    if !secrets.iter().any(|s| s.len() >= 4 && shown.contains(s)) {
        return error;
    }
    let mut clean = Error::new(
        error.kind().clone(),
        redact::scrub_text(error.message(), secrets),
    );
    if let Some(op) = error.operation() {
        clean = clean.with_operation(op);
    }
    for (k, v) in error.context() {
        clean = clean.with_context(k, redact::scrub_text(v, secrets));
    }
    match error.retry() {
        crm_core::Retry::Temporary => clean.set_temporary(),
        crm_core::Retry::Permanent => clean.set_permanent(),
        crm_core::Retry::Persistent => clean.set_temporary().set_persistent(),
    }
}
