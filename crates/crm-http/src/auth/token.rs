//! Access tokens, their persistence hook, and the single-flight cache.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::OwnedMutexGuard;

use super::flows::{TokenFlow, TokenTransport, request_token};

/// An OAuth access token with what came with it.
///
/// `Debug` shows the expiry, scope and extra fields, never the access or
/// refresh token.
#[derive(Clone)]
pub struct Token {
    access_token: SecretString,
    token_type: String,
    expires_at: Option<DateTime<Utc>>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
    extra: Map<String, Value>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("scope", &self.scope)
            .field("extra", &self.extra)
            .finish()
    }
}

impl Token {
    /// A bearer token without expiry (it is used until the provider answers 401).
    pub fn new(access_token: SecretString) -> Self {
        Token {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_at: None,
            refresh_token: None,
            scope: None,
            extra: Map::new(),
        }
    }

    /// Sets the expiry.
    #[must_use]
    pub fn with_expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the expiry to `lifetime` from now.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.expires_at = chrono::Duration::from_std(lifetime)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d));
        self
    }

    /// Sets the refresh token.
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: SecretString) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Sets the token type (default `Bearer`).
    #[must_use]
    pub fn with_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = token_type.into();
        self
    }

    /// Sets the granted scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a non-secret field of the token response (e.g. Salesforce's
    /// `instance_url`). Fields with secret-looking names are dropped.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: Value) -> Self {
        let key = key.into();
        if !crate::redact::is_secret_name(&key) {
            self.extra.insert(key, value);
        }
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &SecretString {
        &self.access_token
    }

    /// The token type, as the provider named it.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// When the token expires, if the provider said.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The refresh token, if any (it may rotate on each refresh).
    pub fn refresh_token(&self) -> Option<&SecretString> {
        self.refresh_token.as_ref()
    }

    /// The granted scope, if reported.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// A non-secret field of the token response, e.g. `instance_url`.
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// Every non-secret extra field.
    pub fn extras(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// Whether the token expires within `skew` from now (false without an expiry).
    pub fn expires_within(&self, skew: Duration) -> bool {
        match (self.expires_at, chrono::Duration::from_std(skew)) {
            (Some(at), Ok(skew)) => Utc::now() + skew >= at,
            (Some(_), Err(_)) => true,
            (None, _) => false,
        }
    }

    pub(crate) fn set_refresh_token_if_missing(&mut self, rt: Option<&SecretString>) {
        if self.refresh_token.is_none() {
            self.refresh_token = rt.cloned();
        }
    }
}

/// Where refreshed tokens are kept between runs.
///
/// Refresh tokens may rotate on every refresh (Salesforce and others can be
/// configured so): a store that saves each new token lets the next process
/// start from the newest refresh token. `load` is called once, before the
/// first token request; when it returns a token that has not expired it is
/// used without a request.
///
/// ```
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use crm_http::{Token, TokenStore};
///
/// /// Keeps the newest token in memory (a real store writes to a database or
/// /// a secrets manager).
/// #[derive(Default)]
/// struct InMemory(Mutex<Option<Token>>);
///
/// #[async_trait]
/// impl TokenStore for InMemory {
///     async fn load(&self) -> crm_core::Result<Option<Token>> {
///         Ok(self.0.lock().unwrap().clone())
///     }
///     async fn save(&self, token: &Token) -> crm_core::Result<()> {
///         *self.0.lock().unwrap() = Some(token.clone());
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The last saved token, if any.
    ///
    /// # Errors
    /// Any error: it is logged and the flow starts from its configured
    /// credentials.
    async fn load(&self) -> Result<Option<Token>>;

    /// Saves a newly issued token (its refresh token may be new).
    ///
    /// # Errors
    /// Any error: it is logged and the new token is still used; the next run
    /// may then have to start from the configured credentials.
    async fn save(&self, token: &Token) -> Result<()>;
}

/// A [`TokenStore`] in memory, for tests and short-lived tools.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    token: Mutex<Option<Token>>,
    saves: AtomicU64,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryTokenStore::default()
    }

    /// A store holding `token`, as if saved by an earlier run.
    pub fn with_token(token: Token) -> Self {
        MemoryTokenStore {
            token: Mutex::new(Some(token)),
            saves: AtomicU64::new(0),
        }
    }

    /// The last saved token.
    pub fn token(&self) -> Option<Token> {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times `save` was called.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self) -> Result<Option<Token>> {
        Ok(self.token())
    }

    async fn save(&self, token: &Token) -> Result<()> {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Options shared by every token flow.
#[derive(Clone)]
pub struct TokenOptions {
    pub(crate) refresh_skew: Duration,
    pub(crate) store: Option<Arc<dyn TokenStore>>,
    pub(crate) initial: Option<Token>,
}

impl fmt::Debug for TokenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenOptions")
            .field("refresh_skew", &self.refresh_skew)
            .field("store", &self.store.as_ref().map(|_| "dyn TokenStore"))
            .field("initial", &self.initial)
            .finish()
    }
}

impl Default for TokenOptions {
    /// Refresh 2 minutes ahead of expiry, no store, no initial token.
    fn default() -> Self {
        TokenOptions {
            refresh_skew: Duration::from_secs(120),
            store: None,
            initial: None,
        }
    }
}

impl TokenOptions {
    /// Refresh this long before the token expires (default 2 minutes), so
    /// that a token never expires in the middle of a request.
    #[must_use]
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.refresh_skew = skew;
        self
    }

    /// Persist refreshed tokens here.
    #[must_use]
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Start with this token (e.g. from an authorization-code exchange).
    #[must_use]
    pub fn initial_token(mut self, token: Token) -> Self {
        self.initial = Some(token);
        self
    }
}

#[derive(Clone)]
struct Cached {
    token: Arc<Token>,
    generation: u64,
}

struct RefreshState {
    generation: u64,
    refresh_token: Option<SecretString>,
    store_loaded: bool,
    last_error: Option<Error>,
}

/// Caches one token and makes concurrent refreshes share one request.
///
/// Every issued token gets a generation number. A request that saw a 401
/// with generation `g` asks for a refresh "of `g`": the first such caller
/// takes the refresh lock and refreshes; callers queued behind it find the
/// generation moved on and reuse the new token. A failed refresh is reported
/// to the callers that were queued behind it instead of being repeated by each.
pub(crate) struct TokenCache {
    flow: TokenFlow,
    skew: Duration,
    store: Option<Arc<dyn TokenStore>>,
    current: Mutex<Option<Cached>>,
    refresh: Arc<tokio::sync::Mutex<RefreshState>>,
    refresh_attempts: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(flow: TokenFlow, options: TokenOptions) -> Self {
        let refresh_token = flow.initial_refresh_token().or_else(|| {
            options
                .initial
                .as_ref()
                .and_then(|t| t.refresh_token().cloned())
        });
        let current = options.initial.map(|token| Cached {
            token: Arc::new(token),
            generation: 1,
        });
        TokenCache {
            flow,
            skew: options.refresh_skew,
            store: options.store,
            refresh: Arc::new(tokio::sync::Mutex::new(RefreshState {
                generation: current.as_ref().map_or(0, |c| c.generation),
                refresh_token,
                store_loaded: false,
                last_error: None,
            })),
            current: Mutex::new(current),
            refresh_attempts: AtomicU64::new(0),
        }
    }

    pub(crate) fn flow(&self) -> &TokenFlow {
        &self.flow
    }

    fn cached(&self) -> Option<Cached> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current access token and its secrets, for scrubbing.
    pub(crate) fn current_secrets(&self) -> Vec<String> {
        self.cached()
            .map(|c| {
                let mut v = vec![c.token.access_token.expose_secret().to_owned()];
                if let Some(rt) = &c.token.refresh_token {
                    v.push(rt.expose_secret().to_owned());
                }
                v
            })
            .unwrap_or_default()
    }

    /// A valid token and its generation, refreshing when it is missing or
    /// expires within the skew.
    pub(crate) async fn get(self: &Arc<Self>, t: &TokenTransport) -> Result<(Arc<Token>, u64)> {
        let seen = match self.cached() {
            Some(c) if !c.token.expires_within(self.skew) => {
                return Ok((c.token, c.generation));
            }
            Some(c) => c.generation,
            None => 0,
        };
        self.refresh(t, seen).await
    }

    /// Replaces the token of generation `seen` (unless another caller
    /// already did) and returns the newest token.
    pub(crate) async fn refresh(
        self: &Arc<Self>,
        t: &TokenTransport,
        seen: u64,
    ) -> Result<(Arc<Token>, u64)> {
        let attempts_before = self.refresh_attempts.load(Ordering::SeqCst);
        let guard = Arc::clone(&self.refresh).lock_owned().await;
        if guard.generation != seen
            && let Some(c) = self.cached()
            && c.generation == guard.generation
        {
            return Ok((c.token, c.generation));
        }
        if self.refresh_attempts.load(Ordering::SeqCst) != attempts_before {
            // A refresh ran while we queued; if it failed, share its answer.
            if let Some(err) = &guard.last_error {
                return Err(err.clone());
            }
        }
        // The refresh runs in its own task so that a caller cancelled
        // mid-refresh cannot lose a rotated refresh token.
        let this = Arc::clone(self);
        let t = t.clone();
        tokio::spawn(async move { this.run_refresh(guard, &t).await })
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Transient, "token refresh task failed").with_source(e)
            })?
    }

    async fn run_refresh(
        &self,
        mut guard: OwnedMutexGuard<RefreshState>,
        t: &TokenTransport,
    ) -> Result<(Arc<Token>, u64)> {
        if !guard.store_loaded {
            guard.store_loaded = true;
            if let Some(stored) = self.load_store().await {
                if let Some(rt) = stored.refresh_token() {
                    guard.refresh_token = Some(rt.clone());
                }
                if guard.generation == 0 && !stored.expires_within(self.skew) {
                    return Ok(self.install(&mut guard, stored));
                }
            }
        }
        let result = async {
            let request = self.flow.token_request(guard.refresh_token.as_ref())?;
            request_token(t, request).await
        }
        .await;
        self.refresh_attempts.fetch_add(1, Ordering::SeqCst);
        let mut token = match result {
            Ok(token) => token,
            Err(err) => {
                guard.last_error = Some(err.clone());
                return Err(err);
            }
        };
        guard.last_error = None;
        if self.flow.uses_refresh_token() {
            token.set_refresh_token_if_missing(guard.refresh_token.as_ref());
        }
        if let Some(rt) = token.refresh_token() {
            guard.refresh_token = Some(rt.clone());
        }
        if let Some(store) = &self.store
            && let Err(err) = store.save(&token).await
        {
            tracing::warn!(provider = %t.provider, error = %err, "saving the refreshed token failed");
        }
        Ok(self.install(&mut guard, token))
    }

    fn install(&self, guard: &mut RefreshState, token: Token) -> (Arc<Token>, u64) {
        guard.generation += 1;
        let token = Arc::new(token);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            token: Arc::clone(&token),
            generation: guard.generation,
        });
        (token, guard.generation)
    }

    async fn load_store(&self) -> Option<Token> {
        let store = self.store.as_ref()?;
        match store.load().await {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(error = %err, "loading the stored token failed");
                None
            }
        }
    }
}
