//! A configured limit of 10 requests per second is never exceeded over 200
//! requests, measured on the server's own timestamps.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use crm_http::{HttpClient, RateLimitConfig, RequestOptions};
use support::{Reply, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_per_second_is_never_exceeded_over_200_requests() {
    let server = TestServer::start(|_| Reply::json(200, "{}")).await;
    let client = HttpClient::builder("test")
        .base_url(server.base())
        .rate_limit(RateLimitConfig::per_second(10))
        .build()
        .unwrap();
    // 20 workers compete for the same budget.
    let workers = (0..20).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                client
                    .get_json::<serde_json::Value>("/x", RequestOptions::new("x.get"))
                    .await
                    .unwrap();
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.unwrap();
    }
    let mut times: Vec<_> = server.log().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 200);
    times.sort();
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(worst <= 10, "{worst} requests within one second");
    // The limit is used, not starved: some window holds close to 10.
    assert!(worst >= 5, "only {worst} requests in the busiest second");
    assert_eq!(
        client
            .metrics()
            .snapshot()
            .endpoint("test", "x.get")
            .unwrap()
            .requests,
        200
    );
}
