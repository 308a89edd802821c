//! Shared HTTP plumbing for the SaaS connectors of this workspace.
//!
//! Every provider crate (Salesforce, HubSpot, Pipedrive, Marketo, Google
//! Sheets) builds its requests and parses its responses; everything else is
//! here, written once:
//!
//! - [`Auth`]: static bearer tokens, API keys (header or query parameter),
//!   and OAuth 2.0 token flows ([`RefreshTokenFlow`],
//!   [`ClientCredentialsFlow`], [`JwtBearerFlow`] for Salesforce and Google
//!   service accounts, [`AuthorizationCodeFlow`] with PKCE). Tokens are
//!   `secrecy` secrets, cached with their expiry, refreshed ahead of it and
//!   once on a 401; concurrent requests share one refresh; a [`TokenStore`]
//!   persists rotated refresh tokens.
//! - [`RateLimiter`]: a per-provider fixed limit (`governor`), a daily quota
//!   that fails fast with [`ErrorKind::QuotaExhausted`](crm_core::ErrorKind::QuotaExhausted),
//!   a cap on requests in flight, and an adaptive limit fed by the
//!   provider's rate-limit headers ([`RateLimitHeaders`]).
//! - [`RetryPolicy`]: exponential backoff with full jitter, `Retry-After`
//!   (seconds or HTTP-date), a budget of attempts and time, and no re-send
//!   of a non-idempotent request the provider may have processed.
//! - [`ResponseClassifier`]: the provider's mapping of responses to
//!   [`crm_core::Error`], with error bodies scrubbed of credentials and cut
//!   to 2 KiB.
//! - [`paginate()`]: a provider's "fetch the page for this token" becomes a
//!   `Stream` of pages with bounded prefetch.
//! - [`Metrics`]: the same metric names for every connector, readable
//!   in-process (see the [`metrics`] module for the names).
//!
//! The layers and their order are described on [`HttpClient`]. TLS is rustls
//! (no OpenSSL); a simulator's self-signed certificate is trusted with
//! [`HttpClientBuilder::root_certificate_pem`]. Sleeps use `tokio::time`,
//! so tests can pause the clock.
//!
//! ```no_run
//! use std::time::Duration;
//! use secrecy::SecretString;
//! use crm_http::{Auth, HttpClient, RateLimitConfig, RequestOptions, RetryPolicy};
//!
//! # async fn demo() -> crm_core::Result<()> {
//! let client = HttpClient::builder("pipedrive")
//!     .base_url("https://api.pipedrive.com/v1")
//!     .auth(Auth::api_key_query("api_token", SecretString::from("...".to_owned())))
//!     .rate_limit(RateLimitConfig::new(80, Duration::from_secs(2)).max_in_flight(10))
//!     .retry(RetryPolicy::default())
//!     .build()?;
//! let deals: serde_json::Value = client
//!     .get_json("deals?limit=500", RequestOptions::new("deals.list"))
//!     .await?;
//! let snapshot = client.metrics().snapshot();
//! assert!(snapshot.endpoint("pipedrive", "deals.list").is_some());
//! # let _ = deals; Ok(()) }
//! ```
//!
//! # Design notes
//!
//! - **Token requests are sent by this crate**, over the client's own
//!   reqwest client, rather than through the `oauth2` crate's HTTP
//!   integration. One code path then gives token requests the client's root
//!   certificates (simulators with self-signed certificates), timeouts,
//!   metrics (endpoint `oauth.token`) and error scrubbing; it keeps the
//!   provider's extra response fields (Salesforce's `instance_url`), which
//!   `oauth2`'s typed responses drop unless declared per provider; and it
//!   serves Marketo's `GET` identity endpoint. `oauth2` builds the
//!   authorization URL, the PKCE challenge and the CSRF state
//!   ([`AuthorizationCodeFlow::authorize_url`]).
//! - **Backoff is written here** (see [`retry`]): the `backoff` crate is
//!   unmaintained (RUSTSEC-2025-0012), and the retry decision needs the
//!   provider's `Retry-After`, the request's idempotency and
//!   [`Error::is_retryable`](crm_core::Error::is_retryable), which the
//!   maintained closure-retrying crates do not see. The arithmetic is a few
//!   lines, covered by property tests.
//! - **The fixed rate limit runs on tokio's clock** (a `governor` clock over
//!   `tokio::time::Instant`), so tests with paused time see it too.
//! - **Large downloads** use [`HttpClient::send_streaming`]; everything
//!   else is read into memory up to
//!   [`HttpClientBuilder::max_response_bytes`] and handed to the provider's
//!   classifier whole.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod classify;
mod client;
pub mod metrics;
pub mod paginate;
pub mod rate_limit;
pub mod redact;
pub mod retry;
mod serde_ms;

pub use auth::{
    ApiKeyLocation, Auth, AuthorizationCodeFlow, AuthorizationRequest, ClientAuthMethod,
    ClientCredentialsFlow, JwtBearerFlow, MemoryTokenStore, PkceVerifier, RefreshTokenFlow,
    ServiceAccountKey, Token, TokenFlow, TokenOptions, TokenRequestStyle, TokenStore,
};
pub use classify::{
    DefaultClassifier, ResponseClassifier, ResponseParts, Verdict, default_classify,
};
pub use client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, HttpClient,
    HttpClientBuilder, HttpResponse, RequestOptions, StreamingResponse,
};
pub use metrics::{EndpointMetrics, Metrics, MetricsSnapshot};
pub use paginate::{FetchedPage, PageFetcher, PaginateOptions, paginate};
pub use rate_limit::{
    HubSpotRateLimitHeaders, LimitScope, RateLimitConfig, RateLimitHeaders, RateLimitObservation,
    RateLimiter, RatePermit, SalesforceLimitInfo, StandardRateLimitHeaders,
};
pub use retry::RetryPolicy;

/// The reqwest version this crate is built on, for building requests.
pub use reqwest;
/// The secrecy version this crate's secrets use.
pub use secrecy;
