//! crm-http against the generic simulator: the acceptance tests of the
//! shared HTTP plumbing, measured on the simulator's side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crm_core::{ErrorKind, Retry};
use crm_http::reqwest::Method;
use crm_http::secrecy::SecretString;
use crm_http::{Auth, HttpClient, RateLimitConfig, RefreshTokenFlow, RequestOptions, RetryPolicy};
use crm_sim::fault::DropStage;
use crm_sim::generic::{GenericConfig, GenericSimulator};
use crm_sim::store::Deleted;
use crm_sim::{Fault, FaultPlan, FaultRule, Outcome, SimHandle, SimServer, Trigger, Window};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn start(config: GenericConfig) -> SimHandle {
    SimServer::new(GenericSimulator::new(config))
        .start()
        .await
        .unwrap()
}

fn api_key_client(sim: &SimHandle) -> crm_http::HttpClientBuilder {
    HttpClient::builder("generic")
        .base_url(sim.base_url())
        .auth(
            Auth::api_key_header("x-api-key", SecretString::from("sim-api-key".to_owned()))
                .unwrap(),
        )
}

fn oauth_client(sim: &SimHandle) -> crm_http::HttpClientBuilder {
    let creds = sim.credentials();
    let flow = RefreshTokenFlow::new(
        creds["token_url"].as_str().unwrap().parse().unwrap(),
        creds["client_id"].as_str().unwrap(),
        SecretString::from(creds["refresh_token"].as_str().unwrap().to_owned()),
    )
    .client_secret(SecretString::from(
        creds["client_secret"].as_str().unwrap().to_owned(),
    ));
    HttpClient::builder("generic")
        .base_url(sim.base_url())
        .auth(Auth::oauth(flow))
}

fn only_data(e: &crm_sim::LoggedRequest) -> bool {
    e.path.starts_with("/objects")
}

#[tokio::test]
async fn a_429_with_retry_after_2_waits_about_2s_and_is_counted() {
    let sim = start(GenericConfig::default()).await;
    sim.context().faults().set_plan(
        FaultPlan::new(0).rule(
            FaultRule::new(Fault::RateLimited {
                retry_after_s: 2,
                burst: 1,
            })
            .path_prefix("/objects")
            .when(Trigger::Nth(vec![1])),
        ),
    );
    let client = api_key_client(&sim).build().unwrap();
    let started = Instant::now();
    let page: Value = client
        .get_json("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(page["records"].is_array());
    assert!(
        waited >= Duration::from_millis(1900),
        "waited only {waited:?}"
    );

    let log = sim.request_log().entries();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].status(), Some(429));
    assert_eq!(log[1].status(), Some(200));
    let gap = log[1].at - log[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");

    let m = client.metrics().snapshot();
    let ep = m.endpoint("generic", "contacts.list").unwrap();
    assert_eq!(ep.rate_limited, 1);
    assert_eq!(ep.retries, 1);
    assert_eq!(ep.requests, 2);
}

#[tokio::test]
async fn a_401_triggers_one_refresh_shared_by_20_concurrent_requests() {
    let sim = start(GenericConfig::default().rate_limits(Vec::new())).await;
    let client = oauth_client(&sim).build().unwrap();
    // Warm up: the first token.
    let _: Value = client
        .get_json("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap();
    let auth = sim.context().auth();
    assert_eq!(auth.grants(crm_sim::auth::GrantType::RefreshToken), 1);
    // The server forgets the token while the client still thinks it valid.
    assert_eq!(auth.expire_all(), 1);

    let results = futures_util::future::join_all((0..20).map(|_| {
        let c = client.clone();
        async move {
            c.get_json::<Value>("/objects/contacts", RequestOptions::new("contacts.list"))
                .await
        }
    }))
    .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(
        auth.grants(crm_sim::auth::GrantType::RefreshToken),
        2,
        "exactly one refresh"
    );
    assert_eq!(sim.request_log().count_calls("POST", "/oauth/token"), 2);
    let unauthorized = sim.request_log().count_status(401);
    assert!(
        (1..=20).contains(&unauthorized),
        "{unauthorized} requests got 401"
    );
    assert_eq!(
        sim.request_log()
            .count(|e| only_data(e) && e.status() == Some(200)),
        21
    );
}

#[tokio::test]
async fn a_limit_of_10_per_second_is_never_exceeded_over_200_requests() {
    // The simulator enforces the same limit, so an excess would also show as 429s.
    let sim = start(GenericConfig::default().rate_limits(vec![Window::per_second(10)])).await;
    let client = api_key_client(&sim)
        .rate_limit(RateLimitConfig::per_second(10))
        .build()
        .unwrap();
    let ok = futures_util::stream::iter(0..200)
        .map(|_| {
            let c = client.clone();
            async move {
                c.get_json::<Value>(
                    "/objects/contacts?limit=1",
                    RequestOptions::new("contacts.list"),
                )
                .await
                .is_ok()
            }
        })
        .buffer_unordered(25)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(ok, 200);
    let log = sim.request_log();
    assert_eq!(log.len(), 200);
    assert_eq!(log.count_status(429), 0);
    let peak = log.max_in_window(Duration::from_secs(1), |_| true);
    assert!(peak <= 10, "{peak} requests within one second");
}

#[tokio::test]
async fn a_dropped_connection_is_retried_for_idempotent_upserts_only() {
    let sim = start(GenericConfig::default()).await;
    let drop_first_post = || {
        FaultPlan::new(0).rule(
            FaultRule::new(Fault::Drop {
                stage: DropStage::AfterHandler,
            })
            .method("POST")
            .when(Trigger::Nth(vec![1])),
        )
    };
    let client = api_key_client(&sim)
        .retry(RetryPolicy::default().initial_backoff(Duration::from_millis(20)))
        .build()
        .unwrap();

    // An upsert by external id, marked idempotent: retried, lands once.
    sim.context().faults().set_plan(drop_first_post());
    let body = json!({"key": "email", "records": [{"email": "a@example.com", "n": 1}]});
    let resp: Value = client
        .send_json(
            Method::POST,
            "/objects/contacts/batch",
            &body,
            RequestOptions::new("contacts.upsert").idempotent(true),
        )
        .await
        .unwrap();
    // The dropped attempt had already written it, so the retry finds it unchanged.
    assert_eq!(resp["results"][0]["status"], "unchanged");
    let log = sim.request_log().entries();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, Outcome::Dropped);
    assert_eq!(log[1].status(), Some(200));
    assert_eq!(sim.context().store().count("contacts", Deleted::Exclude), 1);

    // A plain create is not idempotent: the drop surfaces as an error.
    sim.request_log().clear();
    sim.context().faults().set_plan(drop_first_post());
    let err = client
        .send_json::<_, Value>(
            Method::POST,
            "/objects/contacts",
            &json!({"email": "b@example.com"}),
            RequestOptions::new("contacts.create"),
        )
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(sim.request_log().len(), 1, "not re-sent");
    // It did land, once: exactly why it must not be re-sent blindly.
    assert_eq!(sim.context().store().count("contacts", Deleted::Exclude), 2);
}

#[tokio::test]
async fn the_retry_budget_is_respected() {
    let sim = start(GenericConfig::default()).await;
    sim.context().faults().set_plan(
        FaultPlan::new(0)
            .rule(FaultRule::new(Fault::ServerError { status: 503 }).path_prefix("/objects")),
    );
    let client = api_key_client(&sim)
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(20)),
        )
        .build()
        .unwrap();
    let err = client
        .get_json::<Value>("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Transient);
    assert_eq!(err.retry(), Retry::Persistent, "{err}");
    assert_eq!(sim.request_log().len(), 3);

    // A time budget shorter than the provider's Retry-After: no waiting past it.
    sim.request_log().clear();
    sim.context().faults().set_plan(
        FaultPlan::new(0).rule(
            FaultRule::new(Fault::RateLimited {
                retry_after_s: 30,
                burst: 1,
            })
            .path_prefix("/objects"),
        ),
    );
    let client = api_key_client(&sim)
        .retry(RetryPolicy::default().max_elapsed(Duration::from_secs(2)))
        .build()
        .unwrap();
    let err = client
        .get_json::<Value>("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(sim.request_log().len(), 1);
}

#[tokio::test]
async fn https_works_through_the_extra_root_certificate() {
    let sim = SimServer::new(GenericSimulator::default())
        .tls(true)
        .start()
        .await
        .unwrap();
    let pem = sim.ca_cert_pem().unwrap().to_owned();
    let client = oauth_client(&sim)
        .root_certificate_pem(pem)
        .build()
        .unwrap();
    let page: Value = client
        .get_json("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap();
    assert!(page["records"].is_array());
    assert_eq!(sim.request_log().count_calls("POST", "/oauth/token"), 1);

    let untrusting = api_key_client(&sim)
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = untrusting
        .get_json::<Value>("/objects/contacts", RequestOptions::new("contacts.list"))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(
        sim.request_log().len(),
        2,
        "the handshake fails before any request"
    );
}
