//! The client against a scripted local server: retries, Retry-After,
//! budgets, dropped connections, timeouts, quotas, in-flight cap, adaptive
//! limits, pagination, TLS and metrics.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crm_core::{ErrorKind, Retry};
use crm_http::paginate::{FetchedPage, PageFetcher, PaginateOptions, paginate};
use crm_http::reqwest::Method;
use crm_http::{
    HttpClient, RateLimitConfig, RequestOptions, RetryPolicy, SalesforceLimitInfo,
    StandardRateLimitHeaders,
};
use futures_util::StreamExt;
use support::{Reply, TestServer};

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(4)
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(100))
}

fn client(server: &TestServer) -> HttpClient {
    HttpClient::builder("test")
        .base_url(server.base())
        .retry(quick_retries())
        .build()
        .unwrap()
}

/// Answers from a script by call number; the last entry repeats.
fn script(replies: Vec<Reply>) -> impl Fn(&support::Logged) -> Reply + Send + Sync + 'static {
    let n = AtomicU32::new(0);
    move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst) as usize;
        replies[i.min(replies.len() - 1)].clone()
    }
}

#[tokio::test]
async fn retry_after_429_waits_then_succeeds_and_is_counted() {
    let server = TestServer::start(script(vec![
        Reply::json(429, r#"{"status":"error","category":"RATE_LIMITS","message":"Ten secondly rolling limit reached"}"#)
            .header("Retry-After", "2"),
        Reply::json(200, r#"{"ok":true}"#),
    ]))
    .await;
    let client = client(&server);
    let started = Instant::now();
    let body: serde_json::Value = client
        .get_json("/things", RequestOptions::new("things.list"))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(body["ok"], true);
    assert!(elapsed >= Duration::from_secs(2), "waited only {elapsed:?}");
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert!(log[1].at.duration_since(log[0].at) >= Duration::from_secs(2));

    let m = client.metrics().snapshot();
    let e = m.endpoint("test", "things.list").unwrap();
    assert_eq!(e.requests, 2);
    assert_eq!(e.retries, 1);
    assert_eq!(e.rate_limited, 1);
    assert_eq!(e.error_count(), 0);
    assert_eq!(e.latency.count, 2);
    assert!(e.bytes_received > 0);
    assert!(
        m.to_prometheus()
            .contains("crm_http_rate_limited_total{provider=\"test\",endpoint=\"things.list\"} 1")
    );
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    // HTTP-dates have whole seconds: ask for 2 s from now, expect at least 1 s.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let server = TestServer::start(script(vec![
        Reply::status(503).header("Retry-After", date),
        Reply::status(200),
    ]))
    .await;
    let client = client(&server);
    let started = Instant::now();
    let response = client
        .send(
            client.request(Method::GET, server.url("/x").parse().unwrap()),
            RequestOptions::new("x.get"),
        )
        .await
        .unwrap();
    assert_eq!(response.attempts(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let server = TestServer::start(script(vec![
        Reply::status(502),
        Reply::status(504),
        Reply::status(503),
        Reply::json(200, "{}"),
    ]))
    .await;
    let client = client(&server);
    let response = client
        .send(
            client.request(Method::GET, server.url("/x").parse().unwrap()),
            RequestOptions::new("x.get"),
        )
        .await
        .unwrap();
    assert_eq!(response.attempts(), 4);
    assert_eq!(server.count("/x"), 4);
    let e = client.metrics().snapshot().provider_total("test");
    assert_eq!((e.requests, e.retries, e.error_count()), (4, 3, 0));
}

#[tokio::test]
async fn retry_budget_attempts_are_respected() {
    let server = TestServer::start(script(vec![Reply::status(503)])).await;
    let client = client(&server);
    let err = client
        .get_json::<serde_json::Value>(
            "/x",
            RequestOptions::new("x.get").retry(quick_retries().max_attempts(3)),
        )
        .await
        .unwrap_err();
    assert_eq!(server.count("/x"), 3);
    assert_eq!(err.kind(), &ErrorKind::Transient);
    assert_eq!(
        err.retry(),
        Retry::Persistent,
        "retries ran out: nothing may retry it again"
    );
    assert_eq!(err.context_value("attempts"), Some("3"));
    assert_eq!(
        err.context_value("retry_stopped"),
        Some("attempt limit reached")
    );
    let e = client.metrics().snapshot();
    assert_eq!(
        e.endpoint("test", "x.get").unwrap().errors.get("transient"),
        Some(&1)
    );
}

#[tokio::test]
async fn retry_budget_time_is_respected() {
    let server = TestServer::start(script(vec![Reply::status(503)])).await;
    let client = client(&server);
    // No jitter: waits 300 ms, 600 ms, 1200 ms...; the 1 s budget stops it
    // before the third wait.
    let policy = RetryPolicy::default()
        .max_attempts(100)
        .max_elapsed(Duration::from_secs(1))
        .initial_backoff(Duration::from_millis(300))
        .jitter(false);
    let err = client
        .get_json::<serde_json::Value>("/x", RequestOptions::new("x.get").retry(policy))
        .await
        .unwrap_err();
    let calls = server.count("/x");
    assert!((1..=3).contains(&calls), "{calls} calls");
    assert_eq!(err.retry(), Retry::Persistent);
    assert_eq!(
        err.context_value("retry_stopped"),
        Some("time budget spent")
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_fails_at_once() {
    let server = TestServer::start(script(vec![
        Reply::status(429).header("Retry-After", "3600"),
    ]))
    .await;
    let client = client(&server);
    let err = client
        .get_json::<serde_json::Value>("/x", RequestOptions::new("x.get"))
        .await
        .unwrap_err();
    assert_eq!(server.count("/x"), 1);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(err.retry(), Retry::Persistent);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = TestServer::start(script(vec![Reply::json(
        400,
        r#"[{"errorCode":"INVALID_FIELD","message":"No such column 'Foo__c' on entity 'Account'"}]"#,
    )]))
    .await;
    let client = client(&server);
    let err = client
        .get_json::<serde_json::Value>("/query", RequestOptions::new("soql.query"))
        .await
        .unwrap_err();
    assert_eq!(server.count("/query"), 1);
    assert_eq!(err.kind(), &ErrorKind::InvalidInput);
    assert_eq!(err.retry(), Retry::Permanent);
    assert_eq!(err.operation(), Some("soql.query"));
    assert_eq!(err.context_value("provider_code"), Some("INVALID_FIELD"));
    assert_eq!(err.context_value("status"), Some("400"));
    assert_eq!(err.context_value("provider"), Some("test"));
    assert!(err.to_string().contains("No such column"));
}

#[tokio::test]
async fn dropped_connection_is_retried_only_for_idempotent_requests() {
    let server =
        TestServer::start(script(vec![Reply::Drop, Reply::json(200, r#"{"id":"1"}"#)])).await;
    let client = client(&server);
    let body = serde_json::json!({"email": "a@example.com"});
    // An upsert keyed by external id, marked idempotent: re-sent.
    let out: serde_json::Value = client
        .send_json(
            Method::PATCH,
            "/contacts/email/a@example.com",
            &body,
            RequestOptions::new("contacts.upsert").idempotent(true),
        )
        .await
        .unwrap();
    assert_eq!(out["id"], "1");
    assert_eq!(server.count("/contacts/email/a@example.com"), 2);

    // The same drop on a plain create: surfaced, sent once.
    let server =
        TestServer::start(script(vec![Reply::Drop, Reply::json(200, r#"{"id":"2"}"#)])).await;
    let client = self::client(&server);
    let err = client
        .send_json::<_, serde_json::Value>(
            Method::POST,
            "/contacts",
            &body,
            RequestOptions::new("contacts.create"),
        )
        .await
        .unwrap_err();
    assert_eq!(server.count("/contacts"), 1);
    assert_eq!(err.kind(), &ErrorKind::Transient);
    assert!(
        err.context_value("retried")
            .is_some_and(|v| v.starts_with("no"))
    );
    assert_eq!(
        client
            .metrics()
            .snapshot()
            .endpoint("test", "contacts.create")
            .unwrap()
            .requests,
        1
    );
}

#[tokio::test]
async fn rate_limited_posts_are_resent_even_when_not_idempotent() {
    // A 429 means the provider did not process the request.
    let server = TestServer::start(script(vec![
        Reply::status(429).header("Retry-After", "0"),
        Reply::json(201, r#"{"id":"9"}"#),
    ]))
    .await;
    let client = client(&server);
    let out: serde_json::Value = client
        .send_json(
            Method::POST,
            "/contacts",
            &serde_json::json!({}),
            RequestOptions::new("contacts.create"),
        )
        .await
        .unwrap();
    assert_eq!(out["id"], "9");
    assert_eq!(server.count("/contacts"), 2);
}

#[tokio::test]
async fn connect_failures_are_retried_then_persistent() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = HttpClient::builder("test")
        .base_url(format!("http://127.0.0.1:{port}"))
        .retry(quick_retries().max_attempts(3))
        .build()
        .unwrap();
    let err = client
        .send_json::<_, serde_json::Value>(Method::POST, "/x", &1, RequestOptions::new("x.create"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Transient);
    assert_eq!(err.retry(), Retry::Persistent);
    assert_eq!(
        client
            .metrics()
            .snapshot()
            .endpoint("test", "x.create")
            .unwrap()
            .requests,
        3
    );
}

#[tokio::test]
async fn per_attempt_timeout_inside_retry() {
    let server = TestServer::start(script(vec![
        Reply::status(200).after(Duration::from_secs(3)),
        Reply::json(200, "{}"),
    ]))
    .await;
    let client = HttpClient::builder("test")
        .base_url(server.base())
        .retry(quick_retries())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // The first attempt times out, the retry succeeds.
    let response = client
        .send(
            client.request(Method::GET, client.url("/slow").unwrap()),
            RequestOptions::new("slow.get"),
        )
        .await
        .unwrap();
    assert_eq!(response.attempts(), 2);

    // Always slow: every attempt times out; the error says so.
    let server = TestServer::start(script(vec![
        Reply::status(200).after(Duration::from_secs(3)),
    ]))
    .await;
    let client = client.with_base_url(server.base().parse().unwrap());
    let err = client
        .get_json::<serde_json::Value>(
            "/slow",
            RequestOptions::new("slow.get").retry(quick_retries().max_attempts(2)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Transient);
    assert_eq!(server.count("/slow"), 2);
    assert!(err.to_string().contains("300 ms"), "{err}");
}

#[tokio::test]
async fn daily_quota_returns_quota_exhausted_at_once() {
    let server = TestServer::start(script(vec![Reply::json(200, "{}")])).await;
    let client = HttpClient::builder("test")
        .base_url(server.base())
        .rate_limit(RateLimitConfig::unlimited().daily_quota(5))
        .build()
        .unwrap();
    for _ in 0..5 {
        client
            .get_json::<serde_json::Value>("/x", RequestOptions::new("x.get"))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let err = client
        .get_json::<serde_json::Value>("/x", RequestOptions::new("x.get"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "must not sleep until the quota resets"
    );
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted);
    assert!(!err.is_retryable());
    assert_eq!(server.count("/x"), 5);
    let m = client.metrics().snapshot();
    assert_eq!(
        m.endpoint("test", "x.get")
            .unwrap()
            .errors
            .get("quota_exhausted"),
        Some(&1)
    );
}

#[tokio::test]
async fn provider_reported_quota_stops_the_client() {
    let server = TestServer::start(script(vec![
        Reply::json(200, "{}").header("Sforce-Limit-Info", "api-usage=14999/15000"),
        Reply::json(200, "{}").header("Sforce-Limit-Info", "api-usage=15000/15000"),
    ]))
    .await;
    let client = HttpClient::builder("salesforce")
        .base_url(server.base())
        .rate_limit_headers(SalesforceLimitInfo)
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/q", RequestOptions::new("q"))
        .await
        .unwrap();
    client
        .get_json::<serde_json::Value>("/q", RequestOptions::new("q"))
        .await
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>("/q", RequestOptions::new("q"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted);
    assert_eq!(server.count("/q"), 2);
}

#[tokio::test]
async fn adaptive_limit_waits_for_the_window_reset() {
    let server = TestServer::start(script(vec![
        Reply::json(200, "{}")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-limit", "80")
            .header("x-ratelimit-reset", "1"),
        Reply::json(200, "{}")
            .header("x-ratelimit-remaining", "79")
            .header("x-ratelimit-limit", "80"),
    ]))
    .await;
    let client = HttpClient::builder("pipedrive")
        .base_url(server.base())
        .rate_limit_headers(StandardRateLimitHeaders)
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/deals", RequestOptions::new("deals.list"))
        .await
        .unwrap();
    client
        .get_json::<serde_json::Value>("/deals", RequestOptions::new("deals.list"))
        .await
        .unwrap();
    let log = server.log();
    assert!(log[1].at.duration_since(log[0].at) >= Duration::from_secs(1));
}

#[tokio::test]
async fn in_flight_cap_holds() {
    let server = TestServer::start(script(vec![
        Reply::json(200, "{}").after(Duration::from_millis(100)),
    ]))
    .await;
    let client = HttpClient::builder("marketo")
        .base_url(server.base())
        .rate_limit(RateLimitConfig::unlimited().max_in_flight(3))
        .build()
        .unwrap();
    let calls = (0..12)
        .map(|_| client.get_json::<serde_json::Value>("/leads", RequestOptions::new("leads.get")));
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(server.count("/leads"), 12);
    assert!(
        server.max_in_flight() <= 3,
        "{} in flight",
        server.max_in_flight()
    );
    assert!(
        server.max_in_flight() >= 2,
        "the cap should still allow concurrency"
    );
}

#[tokio::test]
async fn https_with_an_extra_root_certificate() {
    let (config, pem) = support::self_signed();
    let server =
        TestServer::start_tls(script(vec![Reply::json(200, r#"{"tls":true}"#)]), config).await;
    let trusted = HttpClient::builder("test")
        .base_url(server.base())
        .root_certificate_pem(&pem)
        .build()
        .unwrap();
    let v: serde_json::Value = trusted
        .get_json("/secure", RequestOptions::new("secure"))
        .await
        .unwrap();
    assert_eq!(v["tls"], true);

    // Without the certificate the handshake fails, and that is not retried.
    let untrusted = HttpClient::builder("test")
        .base_url(server.base())
        .retry(quick_retries())
        .build()
        .unwrap();
    let err = untrusted
        .get_json::<serde_json::Value>("/secure", RequestOptions::new("secure"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent, "{err}");
    assert_eq!(server.count("/secure"), 1);
    assert!(
        HttpClient::builder("t")
            .root_certificate_pem("not a certificate")
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn invalid_configuration_is_rejected_at_build() {
    assert!(
        HttpClient::builder("t")
            .base_url("not a url")
            .build()
            .is_err()
    );
    assert!(
        HttpClient::builder("t")
            .rate_limit(RateLimitConfig::per_second(2).burst(3))
            .build()
            .is_err()
    );
    assert!(
        HttpClient::builder("t")
            .default_header("bad header", "x")
            .build()
            .is_err()
    );
    let c = HttpClient::builder("t")
        .base_url("http://127.0.0.1:1/crm/v3")
        .build()
        .unwrap();
    assert_eq!(
        c.url("objects/contacts").unwrap().as_str(),
        "http://127.0.0.1:1/crm/v3/objects/contacts"
    );
    assert_eq!(
        c.url("/objects/contacts?limit=5").unwrap().as_str(),
        "http://127.0.0.1:1/crm/v3/objects/contacts?limit=5"
    );
    assert_eq!(
        c.url("https://other.example/x").unwrap().as_str(),
        "https://other.example/x"
    );
    let no_base = HttpClient::builder("t").build().unwrap();
    assert!(no_base.url("x").is_err());
}

#[tokio::test]
async fn unexpected_response_shapes_are_schema_mismatches() {
    let server = TestServer::start(script(vec![Reply::json(
        200,
        r#"{"results": "not a list"}"#,
    )]))
    .await;
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Page {
        results: Vec<u32>,
    }
    let err = client(&server)
        .get_json::<Page>("/x", RequestOptions::new("x.get"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch);
    assert!(
        !err.to_string().contains("not a list"),
        "values stay out of errors: {err}"
    );
}

/// A cursor API: `GET /items?after=N` returns 4 items and `paging.next.after`.
struct Items {
    client: HttpClient,
}

impl PageFetcher for Items {
    type Item = u64;
    type Token = String;

    async fn fetch(&self, token: Option<String>) -> crm_core::Result<FetchedPage<u64, String>> {
        let path = match &token {
            Some(after) => format!("/items?after={after}"),
            None => "/items".to_owned(),
        };
        let v: serde_json::Value = self
            .client
            .get_json(&path, RequestOptions::new("items.list"))
            .await?;
        let items = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_u64())
            .collect();
        let next = v["paging"]["next"]["after"].as_str().map(str::to_owned);
        Ok(FetchedPage::new(items, next))
    }
}

#[tokio::test]
async fn paginator_over_http_makes_the_minimum_calls() {
    let server = TestServer::start(|r| {
        let after: u64 = r.param("after").and_then(|a| a.parse().ok()).unwrap_or(0);
        let items: Vec<u64> = (after..(after + 4).min(10)).collect();
        let body = if after + 4 < 10 {
            serde_json::json!({"results": items, "paging": {"next": {"after": (after + 4).to_string()}}})
        } else {
            // The last page still claims there is more; no cursor ends it.
            serde_json::json!({"results": items, "has_more": true})
        };
        Reply::json(200, body.to_string())
    })
    .await;
    let client = client(&server);
    let pages: Vec<_> = paginate(
        Items {
            client: client.clone(),
        },
        None,
        PaginateOptions::default(),
    )
    .collect()
    .await;
    let items: Vec<u64> = pages.into_iter().flat_map(|p| p.unwrap().items).collect();
    assert_eq!(items, (0..10).collect::<Vec<_>>());
    assert_eq!(server.count("/items"), 3);
    assert_eq!(
        client
            .metrics()
            .snapshot()
            .endpoint("test", "items.list")
            .unwrap()
            .requests,
        3
    );
}

#[tokio::test]
async fn shared_metrics_registry_sees_every_client() {
    let server = TestServer::start(script(vec![Reply::json(200, "{}")])).await;
    let metrics = Arc::new(crm_http::Metrics::new());
    let a = HttpClient::builder("hubspot")
        .base_url(server.base())
        .metrics(Arc::clone(&metrics))
        .build()
        .unwrap();
    let b = HttpClient::builder("pipedrive")
        .base_url(server.base())
        .metrics(Arc::clone(&metrics))
        .build()
        .unwrap();
    a.get_json::<serde_json::Value>("/x", RequestOptions::new("x"))
        .await
        .unwrap();
    b.get_json::<serde_json::Value>("/x", RequestOptions::new("x"))
        .await
        .unwrap();
    let snap = metrics.snapshot();
    assert_eq!(snap.endpoint("hubspot", "x").unwrap().requests, 1);
    assert_eq!(snap.endpoint("pipedrive", "x").unwrap().requests, 1);
}

#[tokio::test]
async fn large_downloads_stream_past_the_memory_limit() {
    let big = vec![b'x'; 3 * 1024 * 1024];
    let server = TestServer::start(script(vec![
        Reply::status(503),
        Reply::status(200)
            .header("content-type", "text/csv")
            .body(big.clone()),
    ]))
    .await;
    let client = HttpClient::builder("marketo")
        .base_url(server.base())
        .retry(quick_retries())
        .max_response_bytes(1024 * 1024)
        .build()
        .unwrap();
    // Buffered: refused, not retried (the body would be just as large).
    let err = client
        .send(
            client.request(Method::GET, client.url("/export/file").unwrap()),
            RequestOptions::new("export.file"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(server.count("/export/file"), 2);

    // Streamed: the 503 is retried, then the body arrives chunk by chunk.
    let server = TestServer::start(script(vec![
        Reply::status(503),
        Reply::status(200)
            .header("content-type", "text/csv")
            .body(big.clone()),
    ]))
    .await;
    let client = client.with_base_url(server.base().parse().unwrap());
    client.metrics().reset();
    let mut response = client
        .send_streaming(
            client.request(Method::GET, client.url("/export/file").unwrap()),
            RequestOptions::new("export.file"),
        )
        .await
        .unwrap();
    assert_eq!(response.attempts(), 2);
    assert_eq!(response.headers()["content-type"], "text/csv");
    let mut total = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, big.len());
    let m = client.metrics().snapshot();
    assert_eq!(
        m.endpoint("marketo", "export.file").unwrap().bytes_received,
        big.len() as u64
    );

    // The same through the Stream adapter.
    let server = TestServer::start(script(vec![
        Reply::status(200).body(b"a,b\n1,2\n".to_vec()),
    ]))
    .await;
    let client = client.with_base_url(server.base().parse().unwrap());
    let stream = client
        .send_streaming(
            client.request(Method::GET, client.url("/f").unwrap()),
            RequestOptions::new("f"),
        )
        .await
        .unwrap()
        .into_stream();
    let chunks: Vec<_> = stream.collect().await;
    let body: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(body, b"a,b\n1,2\n");
}
