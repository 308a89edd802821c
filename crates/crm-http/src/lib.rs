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
