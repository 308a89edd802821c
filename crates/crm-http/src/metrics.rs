//! Request metrics, the same names for every connector.
//!
//! Every [`HttpClient`](crate::HttpClient) records into a [`Metrics`]
//! registry (its own, or one shared with [`HttpClientBuilder::metrics`](crate::HttpClientBuilder::metrics)).
//! Series are labelled by `provider` (the name given to
//! [`HttpClient::builder`](crate::HttpClient::builder)) and `endpoint` (the
//! label in [`RequestOptions`](crate::RequestOptions); token requests use
//! [`TOKEN_ENDPOINT`]). [`Metrics::snapshot`] reads them in-process and
//! [`MetricsSnapshot::to_prometheus`] renders the text exposition format.
//!
//! | name | type | meaning |
//! |------|------|---------|
//! | `crm_http_requests_total` | counter | requests put on the wire (every attempt) |
//! | `crm_http_retries_total` | counter | attempts after the first (backoff retries and the re-send after a token refresh) |
//! | `crm_http_rate_limited_total` | counter | responses the provider rate-limited (HTTP 429, or what its classifier calls rate limiting) |
//! | `crm_http_errors_total` | counter, extra label `kind` | calls that returned an error to the caller, by [`ErrorKind::as_str`](crm_core::ErrorKind::as_str) |
//! | `crm_http_request_bytes_total` | counter | request body bytes sent |
//! | `crm_http_response_bytes_total` | counter | response body bytes received |
//! | `crm_http_request_duration_seconds` | histogram | time of one attempt, from sending to the end of the body; waits in the rate limiter are not included |
//!
//! Histogram buckets are fixed ([`LATENCY_BUCKETS`]) so that series from
//! different connectors and processes can be added up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The endpoint label under which token requests are counted.
pub const TOKEN_ENDPOINT: &str = "oauth.token";

/// Upper bounds of the latency histogram buckets, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A registry of request metrics, cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), EndpointMetrics>>,
}

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Counts per bucket (not cumulative); the last entry is `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Number of observations.
    pub count: u64,
    /// Sum of observations in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get_mut(idx) {
            *b += 1;
        }
        self.count += 1;
        self.sum_seconds += secs;
    }
}

/// The metrics of one provider and endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct EndpointMetrics {
    /// `crm_http_requests_total`.
    pub requests: u64,
    /// `crm_http_retries_total`.
    pub retries: u64,
    /// `crm_http_rate_limited_total`.
    pub rate_limited: u64,
    /// `crm_http_errors_total`, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// `crm_http_request_bytes_total`.
    pub bytes_sent: u64,
    /// `crm_http_response_bytes_total`.
    pub bytes_received: u64,
    /// `crm_http_request_duration_seconds`.
    pub latency: Histogram,
}

impl EndpointMetrics {
    /// All errors, whatever their kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A point-in-time copy of a [`Metrics`] registry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Metrics keyed by `(provider, endpoint)`.
    pub series: BTreeMap<(String, String), EndpointMetrics>,
}

impl MetricsSnapshot {
    /// The metrics of one provider and endpoint, if it saw any traffic.
    pub fn endpoint(&self, provider: &str, endpoint: &str) -> Option<&EndpointMetrics> {
        self.series.get(&(provider.to_owned(), endpoint.to_owned()))
    }

    /// The sum over every endpoint of `provider`.
    pub fn provider_total(&self, provider: &str) -> EndpointMetrics {
        let mut total = EndpointMetrics::default();
        for ((p, _), m) in &self.series {
            if p != provider {
                continue;
            }
            total.requests += m.requests;
            total.retries += m.retries;
            total.rate_limited += m.rate_limited;
            total.bytes_sent += m.bytes_sent;
            total.bytes_received += m.bytes_received;
            for (kind, n) in &m.errors {
                *total.errors.entry(kind.clone()).or_default() += n;
            }
            for (t, b) in total.latency.buckets.iter_mut().zip(m.latency.buckets) {
                *t += b;
            }
            total.latency.count += m.latency.count;
            total.latency.sum_seconds += m.latency.sum_seconds;
        }
        total
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        type Getter = fn(&EndpointMetrics) -> u64;
        let counters: [(&str, &str, Getter); 6] = [
            (
                "crm_http_requests_total",
                "Requests sent, every attempt.",
                |m| m.requests,
            ),
            ("crm_http_retries_total", "Attempts after the first.", |m| {
                m.retries
            }),
            (
                "crm_http_rate_limited_total",
                "Rate-limited responses.",
                |m| m.rate_limited,
            ),
            (
                "crm_http_request_bytes_total",
                "Request body bytes sent.",
                |m| m.bytes_sent,
            ),
            (
                "crm_http_response_bytes_total",
                "Response body bytes received.",
                |m| m.bytes_received,
            ),
            (
                "crm_http_errors_total",
                "Calls that returned an error.",
                EndpointMetrics::error_count,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((p, e), m) in &self.series {
                if name == "crm_http_errors_total" {
                    for (kind, n) in &m.errors {
                        let _ = writeln!(
                            out,
                            "{name}{{provider=\"{}\",endpoint=\"{}\",kind=\"{}\"}} {n}",
                            escape(p),
                            escape(e),
                            escape(kind)
                        );
                    }
                } else {
                    let _ = writeln!(
                        out,
                        "{name}{{provider=\"{}\",endpoint=\"{}\"}} {}",
                        escape(p),
                        escape(e),
                        get(m)
                    );
                }
            }
        }
        let name = "crm_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of one attempt.\n# TYPE {name} histogram"
        );
        for ((p, e), m) in &self.series {
            let labels = format!("provider=\"{}\",endpoint=\"{}\"", escape(p), escape(e));
            let mut cumulative = 0;
            for (i, n) in m.latency.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", m.latency.sum_seconds);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", m.latency.count);
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Copies the current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            series: self
                .series
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Clears every series (for tests that count calls per phase).
    pub fn reset(&self) {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn with(&self, provider: &str, endpoint: &str, f: impl FnOnce(&mut EndpointMetrics)) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (provider.to_owned(), endpoint.to_owned());
        f(series.entry(key).or_default());
    }

    pub(crate) fn record_attempt(
        &self,
        provider: &str,
        endpoint: &str,
        bytes_sent: u64,
        retry: bool,
    ) {
        self.with(provider, endpoint, |m| {
            m.requests += 1;
            m.bytes_sent += bytes_sent;
            if retry {
                m.retries += 1;
            }
        });
    }

    pub(crate) fn record_response(
        &self,
        provider: &str,
        endpoint: &str,
        latency: Duration,
        bytes_received: u64,
    ) {
        self.with(provider, endpoint, |m| {
            m.latency.observe(latency);
            m.bytes_received += bytes_received;
        });
    }

    pub(crate) fn record_bytes_received(&self, provider: &str, endpoint: &str, bytes: u64) {
        self.with(provider, endpoint, |m| m.bytes_received += bytes);
    }

    pub(crate) fn record_rate_limited(&self, provider: &str, endpoint: &str) {
        self.with(provider, endpoint, |m| m.rate_limited += 1);
    }

    pub(crate) fn record_error(&self, provider: &str, endpoint: &str, kind: &'static str) {
        self.with(provider, endpoint, |m| {
            *m.errors.entry(kind.to_owned()).or_default() += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders() {
        let m = Metrics::new();
        m.record_attempt("hubspot", "contacts.list", 10, false);
        m.record_attempt("hubspot", "contacts.list", 10, true);
        m.record_rate_limited("hubspot", "contacts.list");
        m.record_response("hubspot", "contacts.list", Duration::from_millis(30), 100);
        m.record_response("hubspot", "contacts.list", Duration::from_secs(500), 5);
        m.record_error("hubspot", "contacts.list", "transient");
        let snap = m.snapshot();
        let e = snap.endpoint("hubspot", "contacts.list").unwrap();
        assert_eq!(e.requests, 2);
        assert_eq!(e.retries, 1);
        assert_eq!(e.rate_limited, 1);
        assert_eq!(e.bytes_sent, 20);
        assert_eq!(e.bytes_received, 105);
        assert_eq!(e.latency.count, 2);
        assert_eq!(e.latency.buckets[3], 1); // <= 0.05 s
        assert_eq!(e.latency.buckets[LATENCY_BUCKETS.len()], 1); // +Inf
        assert_eq!(e.error_count(), 1);
        assert_eq!(snap.provider_total("hubspot").requests, 2);
        let text = snap.to_prometheus();
        assert!(text.contains(
            "crm_http_requests_total{provider=\"hubspot\",endpoint=\"contacts.list\"} 2"
        ));
        assert!(text.contains("kind=\"transient\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        m.reset();
        assert!(m.snapshot().series.is_empty());
    }
}
