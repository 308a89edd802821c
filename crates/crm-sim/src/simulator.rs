//! The [`Simulator`] trait each provider implements, and the [`SimContext`]
//! the framework hands it: store, clock, credentials, request log, fault plan.
//!
//! A provider crate's `sim/` module typically: implements [`ResponseForm`]
//! with the provider's own error bodies and rate-limit headers; registers
//! its OAuth client, refresh token or API key in [`Simulator::setup`];
//! builds its wire routes in [`Simulator::router`] over
//! [`SimContext::store`], behind [`SimContext::auth_guard`] and
//! [`SimContext::rate_limiter`]; and, in batch handlers, asks
//! [`crate::RecordFaults`] (a request extension) which records the fault plan
//! rejects. [`crate::generic`] is a complete example.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Json, Router, extract::State, middleware::from_fn_with_state, routing::get};
//! use crm_sim::auth::{AuthGuard, AuthMethod};
//! use crm_sim::store::{ChangeQuery, Deleted};
//! use crm_sim::{RateLimiter, SimContext, SimServer, Simulator, Window};
//!
//! struct Tiny;
//!
//! impl Simulator for Tiny {
//!     fn provider(&self) -> &'static str { "tiny" }
//!     fn setup(&self, ctx: &SimContext) {
//!         ctx.auth().add_static_token("pat-123");
//!     }
//!     fn router(&self, ctx: &SimContext) -> Router {
//!         let guard = ctx.auth_guard(vec![AuthMethod::Bearer]);
//!         let limiter = ctx.rate_limiter(vec![Window::sliding("ten_secondly", 100, Duration::from_secs(10))]);
//!         Router::new()
//!             .route("/v1/deals", get(|State(ctx): State<SimContext>| async move {
//!                 let page = ctx.store().changes("deals", &ChangeQuery::new().limit(100));
//!                 Json(page.records.iter().map(|r| r.id.to_string()).collect::<Vec<_>>())
//!             }))
//!             .with_state(ctx.clone())
//!             .layer(from_fn_with_state(guard, AuthGuard::middleware))
//!             .layer(from_fn_with_state(limiter, RateLimiter::middleware))
//!     }
//!     fn credentials(&self, _ctx: &SimContext) -> serde_json::Value {
//!         serde_json::json!({"api_token": "pat-123"})
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crm_sim::SimError> {
//! let sim = SimServer::new(Tiny).start().await?;
//! assert_eq!(sim.credentials()["api_token"], "pat-123");
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::auth::{AuthGuard, AuthMethod, AuthState};
use crate::clock::SimClock;
use crate::fault::FaultInjector;
use crate::form::{DefaultForm, ResponseForm};
use crate::log::RequestLog;
use crate::ratelimit::{RateLimiter, Window};
use crate::store::{IdGenerator, ObjectStore, SequentialIds, StoreError};
use crate::webhook::WebhookSender;

/// A provider's simulator: its wire routes, how it words errors, the
/// credentials a client needs, and its demo data.
///
/// The framework ([`crate::SimServer`]) builds a [`SimContext`], calls
/// [`Simulator::setup`], loads data, then serves [`Simulator::router`]
/// behind the request log and the fault plan. The same trait drives tests
/// (in-process, ephemeral port) and the standalone server, so
/// `crm-sync sim <provider>` calls every provider the same way.
///
/// ```
/// use axum::{Router, routing::get};
/// use crm_sim::{SimContext, Simulator};
///
/// struct Hello;
///
/// impl Simulator for Hello {
///     fn provider(&self) -> &'static str { "hello" }
///     fn router(&self, ctx: &SimContext) -> Router {
///         let store = ctx.store().clone();
///         Router::new().route("/count", get(move || async move {
///             store.count("things", crm_sim::store::Deleted::Exclude).to_string()
///         }))
///     }
///     fn credentials(&self, _ctx: &SimContext) -> serde_json::Value {
///         serde_json::json!({})
///     }
/// }
/// ```
pub trait Simulator: Send + Sync + 'static {
    /// The provider's name (`salesforce`, `hubspot`, `generic`).
    fn provider(&self) -> &'static str;

    /// Makes ids in the provider's format. Default: 10-digit sequence numbers.
    fn id_generator(&self) -> Arc<dyn IdGenerator> {
        Arc::new(SequentialIds::default())
    }

    /// How the provider words throttling, auth and server errors.
    fn form(&self) -> Arc<dyn ResponseForm> {
        Arc::new(DefaultForm)
    }

    /// Registers OAuth clients, API keys and token lifetimes in
    /// [`SimContext::auth`]; called once before anything else.
    fn setup(&self, ctx: &SimContext) {
        let _ = ctx;
    }

    /// The provider's routes, on its own wire paths.
    fn router(&self, ctx: &SimContext) -> axum::Router;

    /// What a client of this provider needs to connect (client id and
    /// secret and a refresh token, an API token, ...), as printed by the
    /// standalone server.
    fn credentials(&self, ctx: &SimContext) -> serde_json::Value;

    /// Fills the store with reproducible demo data for `seed`. Default: none.
    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        let _ = (ctx, seed);
    }

    /// Loads initial records (the `--data FILE` option). The default loads
    /// `{"<object>": [{fields}, ...]}` with [`ObjectStore::load_json`].
    ///
    /// # Errors
    /// [`StoreError`] when the data does not fit.
    fn load_data(&self, ctx: &SimContext, data: &serde_json::Value) -> Result<usize, StoreError> {
        ctx.store().load_json(data)
    }
}

/// Everything a simulator's handlers share; cheap to clone.
#[derive(Clone)]
pub struct SimContext {
    provider: &'static str,
    base_url: Arc<str>,
    seed: u64,
    store: ObjectStore,
    log: RequestLog,
    faults: FaultInjector,
    auth: AuthState,
    form: Arc<dyn ResponseForm>,
    webhooks: WebhookSender,
    limiters: Arc<Mutex<Vec<RateLimiter>>>,
}

impl fmt::Debug for SimContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimContext")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("seed", &self.seed)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SimContext {
    /// A fresh context: empty store with `ids` and a system clock, empty log,
    /// no faults, credentials seeded from `seed`. [`crate::SimServer`] makes
    /// one; build one directly to drive a router without a socket.
    pub fn new(
        provider: &'static str,
        base_url: &str,
        seed: u64,
        ids: Arc<dyn IdGenerator>,
        form: Arc<dyn ResponseForm>,
    ) -> Self {
        let faults = FaultInjector::default();
        SimContext {
            provider,
            base_url: Arc::from(base_url.trim_end_matches('/')),
            seed,
            store: ObjectStore::with_clock(ids, SimClock::system()),
            log: RequestLog::new(),
            webhooks: WebhookSender::new(faults.clone()),
            faults,
            auth: AuthState::new(seed),
            form,
            limiters: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The provider's name.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// `http://127.0.0.1:PORT` or `https://...`, without a trailing slash
    /// (e.g. for Salesforce's `instance_url`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A deterministic random stream for `label`, derived from the seed.
    pub fn rng(&self, label: &str) -> ChaCha8Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        ChaCha8Rng::seed_from_u64(self.seed ^ h)
    }

    /// The record store.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The clock stamping records.
    pub fn clock(&self) -> &SimClock {
        self.store.clock()
    }

    /// The request log.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// The live fault plan.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Credentials: OAuth clients, issued tokens, static tokens, API keys.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// The provider's response form.
    pub fn form(&self) -> &Arc<dyn ResponseForm> {
        &self.form
    }

    /// Sends webhook events to subscribers (duplicated when the fault plan says).
    pub fn webhooks(&self) -> &WebhookSender {
        &self.webhooks
    }

    /// An auth guard over this context's credentials, answering in its form.
    /// Use as `router.layer(axum::middleware::from_fn_with_state(guard, AuthGuard::middleware))`.
    pub fn auth_guard(&self, methods: Vec<AuthMethod>) -> AuthGuard {
        AuthGuard::new(self.auth.clone(), methods, self.form.clone())
    }

    /// A rate limiter with `windows`, answering in this context's form, and
    /// registered so [`SimContext::rate_limiters`] and
    /// [`SimContext::reset_rate_limits`] reach it. Use as
    /// `router.layer(axum::middleware::from_fn_with_state(limiter, RateLimiter::middleware))`.
    pub fn rate_limiter(&self, windows: Vec<Window>) -> RateLimiter {
        let limiter = RateLimiter::with_form(windows, self.form.clone());
        self.lock_limiters().push(limiter.clone());
        limiter
    }

    fn lock_limiters(&self) -> std::sync::MutexGuard<'_, Vec<RateLimiter>> {
        // The list is only pushed to; a poisoned lock still holds it whole.
        self.limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rate limiters made through [`SimContext::rate_limiter`].
    pub fn rate_limiters(&self) -> Vec<RateLimiter> {
        self.lock_limiters().clone()
    }

    /// Forgets every registered limiter's counts (between test cases, or to
    /// simulate a new day).
    pub fn reset_rate_limits(&self) {
        for limiter in self.lock_limiters().iter() {
            limiter.reset();
        }
    }
}
