//! Hardening of the HTTP servers we ship: TLS, an IP allow-list, a body
//! limit, a request timeout and a per-client rate limit, as one reusable
//! piece configured by a job's `http:` section
//! ([`crate::config::HttpSection`]).
//!
//! [`Hardening::apply`] wraps a [`Router`] in these layers, outermost
//! first:
//!
//! 1. **allow-list** (`allow_ips`): a peer outside every listed network
//!    gets `403`. The peer is the TCP peer (`ConnectInfo<SocketAddr>`);
//!    `X-Forwarded-For` is not trusted, so behind a proxy the list sees the
//!    proxy. A router served without connect info refuses everyone while a
//!    list is set (it fails closed).
//! 2. **rate limit** (`rate_limit_per_hour`, default 1000, `0` disables):
//!    per client, where a client is the SHA-256 digest of the
//!    `Authorization: Bearer` value, else of the `crm_review_session`
//!    cookie, else the peer IP. Only the digest is kept, never the token,
//!    and neither is logged. The window is **fixed**: it opens with the
//!    client's first request and lasts one hour; once it holds the limit,
//!    further requests get `429` with `Retry-After` (seconds until the
//!    window closes) and do not count. Across a window boundary a client
//!    can thus send up to twice the limit within a short time. State is in
//!    memory, per process, and forgotten on restart. Webhook endpoints
//!    authenticate by signature or basic auth, not bearer tokens, so all
//!    deliveries of one provider address share that IP's bucket. When more
//!    than 100 000 clients are tracked, requests with an unseen token are
//!    counted against their IP instead, which bounds memory.
//! 3. **timeout** (`request_timeout_secs`, default 30): a request whose
//!    answer (body upload included) takes longer gets `408` with
//!    `Connection: close`; the handler is dropped. The same duration bounds
//!    the reading of request headers.
//! 4. **body limit** (`max_body_bytes`, default 1 MiB): a `Content-Length`
//!    above it gets `413` before anything is read, and the body extractors
//!    (`Bytes`, `Json`, `Form`, ...) stop at it with `413`
//!    ([`DefaultBodyLimit::max`]).
//!
//! Refusals from these layers are JSON:
//! `{"error": {"kind": "forbidden" | "rate_limited" | "timeout" | "body_too_large", "message": "..."}}`.
//!
//! [`crate::serve::Server::serve_hardened`] applies the layers and serves
//! the router, over TLS 1.2 or 1.3 (rustls) when [`Hardening::tls`] is set.
//! A failed TLS handshake closes that connection only.
//!
//! ```
//! use std::time::Duration;
//! use crm_sync::serve::harden::{Hardening, IpCidr};
//!
//! let hardening = Hardening::new()
//!     .allow_ips(["10.0.0.0/8".parse::<IpCidr>()?, "::1".parse()?])
//!     .max_body_bytes(64 * 1024)
//!     .request_timeout(Duration::from_secs(10))
//!     .rate_limit_per_hour(600);
//! let router = hardening.apply(axum::Router::new());
//! # let _ = router;
//! # Ok::<(), crm_core::Error>(())
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crm_core::{Error, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::HttpSection;

/// Default of [`Hardening::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default of [`Hardening::request_timeout`]: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Hardening::rate_limit_per_hour`] (seed 001): 1000.
pub const DEFAULT_RATE_LIMIT_PER_HOUR: u32 = 1000;
/// The review desk's session cookie, a rate-limit key.
const SESSION_COOKIE: &str = "crm_review_session";
/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(3600);
/// Clients tracked before unseen tokens fall back to their IP's bucket.
const MAX_TRACKED: usize = 100_000;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An IP network, `10.0.0.0/8` or `::1/128`; a bare address is a single
/// host (`/32`, `/128`). Bits after the prefix are ignored, so
/// `192.168.1.7/24` is `192.168.1.0/24`.
///
/// ```
/// use crm_sync::serve::harden::IpCidr;
///
/// let net: IpCidr = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.20.30.40".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// # Ok::<(), crm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    network: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// The network of `addr` with `prefix` leading bits.
    ///
    /// # Errors
    /// `InvalidInput` when the prefix is longer than the address (32 for
    /// IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpCidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::invalid_input(format!(
                "`{addr}/{prefix}`: the prefix of an IPv{} network is at most {max}",
                if addr.is_ipv4() { 4 } else { 6 }
            )));
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(IpCidr { network, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, what a dual-stack socket reports for IPv4 peers)
    /// is compared as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpCidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<IpCidr> {
        let s = s.trim();
        let bad = || {
            Error::invalid_input(format!(
                "`{s}` is not an IP address or network (e.g. `10.0.0.0/8`, `192.168.1.7`, `::1/128`)"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                (a.parse::<IpAddr>().map_err(|_| bad())?, Some(prefix))
            }
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        IpCidr::new(addr, prefix)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message()))
    }
}

/// A server certificate chain and its private key, for TLS 1.2 and 1.3
/// (rustls with the ring provider, ALPN `http/1.1`). `Debug` never prints
/// the key.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("versions", &"TLS 1.2, TLS 1.3")
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// From PEM text: the certificate chain (leaf first) and the private
    /// key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// `InvalidInput` when either holds no usable PEM item or rustls refuses
    /// the pair (e.g. a key that does not match the certificate).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Tls> {
        let chain = parse_chain(cert_pem).map_err(Error::invalid_input)?;
        let key = parse_key(key_pem).map_err(Error::invalid_input)?;
        Tls::from_der(chain, key)
    }

    /// From PEM files.
    ///
    /// # Errors
    /// `InvalidInput` naming the file that cannot be read or parsed.
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<Tls> {
        load_files(cert_file, key_file, "certificate file", "key file")
    }

    fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Tls> {
        let refused = |e: rustls::Error| {
            Error::invalid_input(format!("the TLS certificate and key were refused: {e}"))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(refused)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(refused)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

fn parse_chain(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no `BEGIN CERTIFICATE` block found".to_owned());
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> std::result::Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no PEM private key found: {e}"))
}

/// Loads a chain and key, naming `cert_name` / `key_name` (config keys or
/// plain words) in errors.
fn load_files(cert_file: &Path, key_file: &Path, cert_name: &str, key_name: &str) -> Result<Tls> {
    let read = |path: &Path, name: &str| {
        std::fs::read(path).map_err(|e| {
            Error::invalid_input(format!("{name} {}: cannot be read: {e}", path.display()))
        })
    };
    let cert_pem = read(cert_file, cert_name)?;
    let key_pem = read(key_file, key_name)?;
    let chain = parse_chain(&cert_pem)
        .map_err(|m| Error::invalid_input(format!("{cert_name} {}: {m}", cert_file.display())))?;
    let key = parse_key(&key_pem)
        .map_err(|m| Error::invalid_input(format!("{key_name} {}: {m}", key_file.display())))?;
    Tls::from_der(chain, key).map_err(|e| {
        Error::invalid_input(format!(
            "{cert_name} {} with {key_name} {}: {}",
            cert_file.display(),
            key_file.display(),
            e.message()
        ))
    })
}

/// What a server is hardened with; see the [module](self) for each layer.
///
/// `Default` (= [`Hardening::new`]): no TLS, no allow-list, 1 MiB bodies,
/// 30 s per request, 1000 requests per client and hour.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Hardening {
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<Tls>,
    /// Only these networks may connect (others get 403); everyone when
    /// `None`.
    pub allow_ips: Option<Vec<IpCidr>>,
    /// Largest request body (larger ones get 413).
    pub max_body_bytes: usize,
    /// Longest time to answer a request (longer ones get 408), and to
    /// read request headers.
    pub request_timeout: Duration,
    /// Requests per client and hour (more get 429); `0` disables.
    pub rate_limit_per_hour: u32,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            tls: None,
            allow_ips: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rate_limit_per_hour: DEFAULT_RATE_LIMIT_PER_HOUR,
        }
    }
}

impl Hardening {
    /// The defaults.
    pub fn new() -> Self {
        Hardening::default()
    }

    /// From a job's `http:` section; relative certificate paths are taken
    /// relative to `base_dir` (the job file's folder).
    ///
    /// # Errors
    /// `InvalidInput` naming the key (`http.tls.cert_file`,
    /// `http.tls.key_file`, ...) for a certificate or key that cannot be
    /// read or used, an empty `allow_ips` or a zero timeout.
    pub fn from_section(section: &HttpSection, base_dir: &Path) -> Result<Hardening> {
        if section.request_timeout_secs == 0 {
            return Err(Error::invalid_input(
                "`http.request_timeout_secs` is 0: every request would time out",
            )
            .with_context("field", "http.request_timeout_secs"));
        }
        if section.allow_ips.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::invalid_input(
                "`http.allow_ips` is empty and would refuse everyone; remove it to allow all",
            )
            .with_context("field", "http.allow_ips"));
        }
        let tls = match &section.tls {
            None => None,
            Some(t) => {
                let resolve = |p: &PathBuf| -> PathBuf {
                    if p.is_relative() {
                        base_dir.join(p)
                    } else {
                        p.clone()
                    }
                };
                Some(load_files(
                    &resolve(&t.cert_file),
                    &resolve(&t.key_file),
                    "`http.tls.cert_file`",
                    "`http.tls.key_file`",
                )?)
            }
        };
        Ok(Hardening {
            tls,
            allow_ips: section.allow_ips.clone(),
            max_body_bytes: section.max_body_bytes,
            request_timeout: Duration::from_secs(section.request_timeout_secs),
            rate_limit_per_hour: section.rate_limit_per_hour,
        })
    }

    /// Serves HTTPS with `tls`.
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Allows only these networks.
    #[must_use]
    pub fn allow_ips(mut self, networks: impl IntoIterator<Item = IpCidr>) -> Self {
        self.allow_ips = Some(networks.into_iter().collect());
        self
    }

    /// Sets the largest request body.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the requests per client and hour (`0` disables the limit).
    #[must_use]
    pub fn rate_limit_per_hour(mut self, limit: u32) -> Self {
        self.rate_limit_per_hour = limit;
        self
    }

    /// Whether the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `router` behind the allow-list, rate limit, timeout and body limit
    /// (outermost first). Each call starts a fresh rate-limit state.
    ///
    /// The allow-list needs the peer address: serve the result with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, as
    /// [`crate::serve::Server::serve_hardened`] (which calls this itself)
    /// and [`crate::serve::Server::serve_router`] do.
    pub fn apply(&self, router: Router) -> Router {
        let mut router = router
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                self.max_body_bytes,
                body_limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.request_timeout,
                time_limit,
            ));
        if self.rate_limit_per_hour > 0 {
            let limiter = Arc::new(RateLimiter::new(self.rate_limit_per_hour, WINDOW));
            router = router.layer(axum::middleware::from_fn_with_state(limiter, rate_limit));
        }
        if let Some(list) = &self.allow_ips {
            let list: Arc<[IpCidr]> = list.clone().into();
            router = router.layer(axum::middleware::from_fn_with_state(list, allow_list));
        }
        router
    }
}

fn refusal(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response()
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

async fn allow_list(State(list): State<Arc<[IpCidr]>>, req: Request, next: Next) -> Response {
    match peer(&req) {
        Some(ip) if list.iter().any(|n| n.contains(ip)) => next.run(req).await,
        _ => refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your address is not in this server's allow-list",
        ),
    }
}

async fn body_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let mut r = refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body is larger than {max} bytes"),
        );
        // The body is not read: the connection cannot be reused.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    // The path only: a query may hold secrets.
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!(%path, "request timed out");
            let mut r = refusal(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                &format!(
                    "the request was not answered within {} s",
                    limit.as_secs_f64()
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn rate_limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let ip = peer(&req);
    let key = client_key(req.headers(), ip);
    match limiter.check(key, ip, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let secs = secs.max(1);
            let mut r = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!(
                    "more than {} requests in an hour; retry in {secs} s",
                    limiter.limit
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

/// Who a request counts against. Tokens are kept as SHA-256 digests only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ClientKey {
    Bearer([u8; 32]),
    Session([u8; 32]),
    Ip(IpAddr),
    /// Served without connect info.
    Unknown,
}

fn client_key(headers: &HeaderMap, ip: Option<IpAddr>) -> ClientKey {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        return ClientKey::Bearer(Sha256::digest(token.as_bytes()).into());
    }
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == SESSION_COOKIE && !v.is_empty())
        .map(|(_, v)| v);
    if let Some(id) = session {
        return ClientKey::Session(Sha256::digest(id.as_bytes()).into());
    }
    ip.map_or(ClientKey::Unknown, ClientKey::Ip)
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

/// Fixed windows per client, in memory.
#[derive(Debug)]
struct RateLimiter {
    limit: u32,
    window: Duration,
    state: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    clients: HashMap<ClientKey, Window>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            state: Mutex::new(RateState {
                clients: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Counts a request of `key` at `now`, or says how long until its
    /// window closes.
    fn check(
        &self,
        key: ClientKey,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> std::result::Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.window;
        let sweep_due = state
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= window);
        if sweep_due {
            state
                .clients
                .retain(|_, w| now.saturating_duration_since(w.start) < window);
            state.last_sweep = Some(now);
        }
        let mut key = key;
        if state.clients.len() >= MAX_TRACKED
            && !state.clients.contains_key(&key)
            && matches!(key, ClientKey::Bearer(_) | ClientKey::Session(_))
        {
            state
                .clients
                .retain(|_, w| now.saturating_duration_since(w.start) < window);
            if state.clients.len() >= MAX_TRACKED {
                key = ip.map_or(ClientKey::Unknown, ClientKey::Ip);
            }
        }
        let w = state.clients.entry(key).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        if w.count >= self.limit {
            return Err((w.start + window).saturating_duration_since(now));
        }
        w.count += 1;
        Ok(())
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until
/// `shutdown` completes, then stops accepting, lets open connections
/// finish their request (for at most `request_timeout` and a second) and
/// closes them.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    tls: Option<&Tls>,
    request_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use tower_service::Service as _;

    let acceptor = tls.map(Tls::acceptor);
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // A reset during accept, or out of descriptors: back off briefly.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = match make.call(peer).await {
            Ok(svc) => svc,
            Err(never) => match never {},
        };
        let stop = stop_rx.clone();
        match acceptor.clone() {
            None => {
                conns.spawn(serve_connection(stream, svc, request_timeout, stop));
            }
            Some(acceptor) => {
                conns.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, svc, request_timeout, stop).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    Ok(())
}

async fn serve_connection<I, S>(
    io: I,
    svc: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_and_hosts() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.1")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        let host = cidr("192.168.1.7");
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("192.168.1.7")));
        assert!(!host.contains(ip("192.168.1.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert_eq!(cidr("192.168.1.7/24").to_string(), "192.168.1.0/24");
    }

    #[test]
    fn ipv6_networks_and_hosts() {
        let lo = cidr("::1/128");
        assert!(lo.contains(ip("::1")));
        assert!(!lo.contains(ip("::2")));
        let bare = cidr("::1");
        assert_eq!(bare.prefix(), 128);
        assert_eq!(bare, lo);
        let doc = cidr("2001:db8::/32");
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        let link = cidr("fe80::/10");
        assert!(link.contains(ip("febf::1")));
        assert!(!link.contains(ip("fec0::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert_eq!(cidr("2001:db8::1/64").to_string(), "2001:db8::/64");
        // IPv6 networks never hold IPv4 peers, and the reverse.
        assert!(!cidr("::/0").contains(ip("10.0.0.1")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn bad_networks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/x",
            "localhost",
            "::1/-1",
            "[::1]",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad:?} parsed");
        }
        let e = "10.0.0.0/33".parse::<IpCidr>().unwrap_err();
        assert!(e.message().contains("at most 32"), "{e}");
    }

    #[test]
    fn networks_deserialize_from_yaml() {
        let nets: Vec<IpCidr> =
            serde_yaml::from_str(r#"["10.0.0.0/8", "192.168.1.7", "::1/128"]"#).unwrap();
        assert_eq!(nets[2], cidr("::1/128"));
        assert!(serde_yaml::from_str::<Vec<IpCidr>>(r#"["10.0.0.0/40"]"#).is_err());
    }

    #[test]
    fn clients_are_keyed_by_bearer_then_session_then_ip() {
        let peer = Some(ip("127.0.0.1"));
        let mut h = HeaderMap::new();
        assert_eq!(client_key(&h, peer), ClientKey::Ip(ip("127.0.0.1")));
        assert_eq!(client_key(&h, None), ClientKey::Unknown);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; crm_review_session=s3ss; b=2"),
        );
        let session = client_key(&h, peer);
        assert_eq!(session, ClientKey::Session(Sha256::digest(b"s3ss").into()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok-1"),
        );
        assert_eq!(
            client_key(&h, peer),
            ClientKey::Bearer(Sha256::digest(b"tok-1").into())
        );
        // Basic auth (Pipedrive webhooks) is not a token.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        assert_eq!(client_key(&h, peer), session);
        // The key never holds the token itself.
        assert!(!format!("{:?}", client_key(&h, peer)).contains("s3ss"));
    }

    #[test]
    fn fixed_windows_refuse_over_the_limit_until_they_close() {
        let limiter = RateLimiter::new(2, WINDOW);
        let t0 = Instant::now();
        let a = ClientKey::Bearer([1; 32]);
        let b = ClientKey::Bearer([2; 32]);
        assert!(limiter.check(a, None, t0).is_ok());
        assert!(limiter.check(a, None, t0 + Duration::from_secs(10)).is_ok());
        let wait = limiter
            .check(a, None, t0 + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(60));
        assert!(limiter.check(b, None, t0 + Duration::from_secs(60)).is_ok());
        // Refusals do not count; the window closes an hour after it opened.
        assert!(limiter.check(a, None, t0 + WINDOW).is_ok());
        assert!(limiter.check(a, None, t0 + WINDOW).is_ok());
        assert!(limiter.check(a, None, t0 + WINDOW).is_err());
    }

    #[test]
    fn old_windows_are_forgotten() {
        let limiter = RateLimiter::new(1, WINDOW);
        let t0 = Instant::now();
        for i in 0..10u8 {
            assert!(limiter.check(ClientKey::Bearer([i; 32]), None, t0).is_ok());
        }
        assert!(
            limiter
                .check(ClientKey::Bearer([99; 32]), None, t0 + WINDOW)
                .is_ok()
        );
        let state = limiter.state.lock().unwrap();
        assert_eq!(state.clients.len(), 1);
    }
}
