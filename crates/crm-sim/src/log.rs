//! [`RequestLog`]: every request a simulator saw, for tests that count calls
//! and check rate-limit compliance.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A response with this status was sent.
    Responded(u16),
    /// The connection was closed without a response (a fault plan drop).
    Dropped,
    /// The client went away (or the server stopped) before the response was ready.
    Abandoned,
}

/// One request, as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoggedRequest {
    /// Position in the log, from 0.
    pub seq: u64,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, if any. Query parameters named like credentials
    /// (see [`RequestLog::redact_query_param`]) have their values replaced
    /// with `REDACTED`.
    pub query: Option<String>,
    /// The headers selected for logging (lower-case names), credential
    /// headers redacted.
    pub headers: Vec<(String, String)>,
    /// The size of the request body in bytes.
    pub body_size: usize,
    /// When the request arrived, measured from the start of the simulator.
    pub at: Duration,
    /// When the request arrived, wall-clock.
    pub received_at: DateTime<Utc>,
    /// How long the simulator took to answer (or to drop).
    pub elapsed: Duration,
    /// How the request ended.
    pub outcome: Outcome,
    /// The fault the fault plan injected, if any (e.g. `rate_limited`).
    pub fault: Option<String>,
}

impl LoggedRequest {
    /// The response status, if one was sent.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Responded(s) => Some(s),
            Outcome::Dropped | Outcome::Abandoned => None,
        }
    }

    /// A logged header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True if the path starts with `prefix`.
    pub fn path_starts_with(&self, prefix: &str) -> bool {
        self.path.starts_with(prefix)
    }
}

#[derive(Debug)]
struct Inner {
    entries: Vec<LoggedRequest>,
    next_seq: u64,
    capture_headers: Vec<String>,
    redact_headers: Vec<String>,
    redact_query: Vec<String>,
}

/// The shared request log of one simulator; clones share the entries.
///
/// Headers are captured only when named in [`RequestLog::capture_header`];
/// `authorization`, `cookie` and API-key headers are always redacted, so a
/// log can be printed without leaking credentials.
#[derive(Clone, Debug)]
pub struct RequestLog {
    inner: Arc<Mutex<Inner>>,
    start: tokio::time::Instant,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::new()
    }
}

impl RequestLog {
    /// An empty log capturing `content-type`, `user-agent`,
    /// `idempotency-key` and `authorization` (redacted to its scheme).
    pub fn new() -> Self {
        RequestLog {
            inner: Arc::new(Mutex::new(Inner {
                entries: Vec::new(),
                next_seq: 0,
                capture_headers: [
                    "content-type",
                    "user-agent",
                    "idempotency-key",
                    "authorization",
                ]
                .map(String::from)
                .to_vec(),
                redact_headers: [
                    "authorization",
                    "cookie",
                    "x-api-key",
                    "api-key",
                    "x-hubspot-api-key",
                ]
                .map(String::from)
                .to_vec(),
                redact_query: [
                    "api_key",
                    "apikey",
                    "access_token",
                    "key",
                    "token",
                    "client_secret",
                ]
                .map(String::from)
                .to_vec(),
            })),
            start: tokio::time::Instant::now(),
        }
    }

    /// Time from the log's creation (the simulator's start) to `at`.
    pub fn since_start(&self, at: tokio::time::Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Entries are pushed whole; a poisoned lock still holds a valid log.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Also captures the header `name` (case-insensitive).
    pub fn capture_header(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        let mut inner = self.lock();
        if !inner.capture_headers.contains(&name) {
            inner.capture_headers.push(name);
        }
    }

    /// Treats the header `name` as a credential: logged as `REDACTED` (or as
    /// its scheme for `authorization`, e.g. `Bearer REDACTED`).
    pub fn redact_header(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        let mut inner = self.lock();
        if !inner.redact_headers.contains(&name) {
            inner.redact_headers.push(name);
        }
    }

    /// Treats the query parameter `name` as a credential.
    pub fn redact_query_param(&self, name: &str) {
        let mut inner = self.lock();
        if !inner.redact_query.iter().any(|q| q == name) {
            inner.redact_query.push(name.to_owned());
        }
    }

    /// Selects, and redacts, the headers to log.
    pub(crate) fn select_headers(&self, headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (name, value) in headers {
            let name = name.as_str();
            if !inner.capture_headers.iter().any(|h| h == name) {
                continue;
            }
            let value = value.to_str().unwrap_or("<binary>");
            let value = if inner.redact_headers.iter().any(|h| h == name) {
                match value.split_once(' ') {
                    Some((scheme, _)) if name == "authorization" => format!("{scheme} REDACTED"),
                    _ => "REDACTED".to_owned(),
                }
            } else {
                value.to_owned()
            };
            out.push((name.to_owned(), value));
        }
        out
    }

    /// Redacts credential parameters of a raw query string.
    pub(crate) fn redact_query(&self, query: &str) -> String {
        let inner = self.lock();
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if inner.redact_query.iter().any(|q| q == k) => {
                    format!("{k}=REDACTED")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Appends an entry, giving it the next sequence number.
    pub fn push(&self, mut entry: LoggedRequest) {
        let mut inner = self.lock();
        entry.seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.push(entry);
    }

    /// A copy of every entry, in the order requests finished.
    pub fn entries(&self) -> Vec<LoggedRequest> {
        let mut entries = self.lock().entries.clone();
        entries.sort_by_key(|e| e.at);
        entries
    }

    /// Number of requests logged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True if no request was logged.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Number of requests for which `pred` holds.
    pub fn count(&self, pred: impl Fn(&LoggedRequest) -> bool) -> usize {
        self.lock().entries.iter().filter(|e| pred(e)).count()
    }

    /// Number of requests with method `method` whose path starts with `prefix`.
    pub fn count_calls(&self, method: &str, prefix: &str) -> usize {
        self.count(|e| e.method.eq_ignore_ascii_case(method) && e.path.starts_with(prefix))
    }

    /// Number of responses with status `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.count(|e| e.status() == Some(status))
    }

    /// Forgets every entry (sequence numbers keep counting).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// The largest number of requests matching `pred` that arrived within any
    /// time span shorter than `window` (a sliding window over arrival times).
    /// A limit of N per `window` is respected exactly when this is at most N.
    pub fn max_in_window(&self, window: Duration, pred: impl Fn(&LoggedRequest) -> bool) -> usize {
        let times: Vec<Duration> = {
            let inner = self.lock();
            let mut t: Vec<Duration> = inner
                .entries
                .iter()
                .filter(|e| pred(e))
                .map(|e| e.at)
                .collect();
            t.sort();
            t
        };
        max_in_window(&times, window)
    }
}

/// The largest count of sorted instants within any span shorter than `window`.
pub(crate) fn max_in_window(sorted: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].saturating_sub(sorted[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn sliding_window_counts() {
        let t = [ms(0), ms(100), ms(999), ms(1000), ms(1001), ms(1999)];
        assert_eq!(max_in_window(&t, ms(1000)), 4);
        assert_eq!(max_in_window(&[], ms(1000)), 0);
        assert_eq!(max_in_window(&[ms(5)], ms(1000)), 1);
    }

    #[test]
    fn credentials_are_redacted() {
        let log = RequestLog::new();
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer s3cret".parse().unwrap_or_else(|_| unreachable!()),
        );
        h.insert(
            "content-type",
            "application/json"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        h.insert("x-other", "x".parse().unwrap_or_else(|_| unreachable!()));
        let got = log.select_headers(&h);
        assert!(got.contains(&("authorization".into(), "Bearer REDACTED".into())));
        assert!(got.contains(&("content-type".into(), "application/json".into())));
        assert_eq!(got.len(), 2);
        assert_eq!(
            log.redact_query("a=1&api_key=s3cret&b"),
            "a=1&api_key=REDACTED&b"
        );
    }
}
