//! Shared HTTP plumbing for the SaaS connectors of this workspace.
//!
//! This crate will hold the reqwest (rustls) client wrapper every provider crate
//! is built on: authentication (static tokens, API keys, OAuth 2.0 refresh,
//! authorization code with PKCE, client credentials, JWT bearer), per-provider
//! rate limiting that adapts to rate-limit response headers, retries with
//! exponential backoff honouring `Retry-After`, a paginator that turns
//! "fetch the next page" into a `Stream`, and request metrics.
//!
//! It has no public items yet; see the workspace README for the roadmap.
#![forbid(unsafe_code)]
