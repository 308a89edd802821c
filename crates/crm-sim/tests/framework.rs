//! The framework exercised over real sockets with a plain HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crm_sim::generic::{GenericConfig, GenericSimulator};
use crm_sim::store::Deleted;
use crm_sim::{Fault, FaultPlan, FaultRule, Outcome, SimHandle, SimServer, Trigger, Window};
use serde_json::{Value, json};

async fn start(config: GenericConfig) -> SimHandle {
    SimServer::new(GenericSimulator::new(config))
        .seed(1)
        .start()
        .await
        .expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn token(sim: &SimHandle, c: &reqwest::Client) -> String {
    let resp: Value = c
        .post(sim.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("refresh_token", "sim-refresh-token"),
        ])
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("token json");
    resp["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

fn contacts(n: usize, offset: usize) -> Vec<Value> {
    (offset..offset + n)
        .map(|i| json!({"email": format!("p{i}@example.com"), "n": i}))
        .collect()
}

#[tokio::test]
async fn batch_upsert_then_page_through_the_feed() {
    let sim = start(GenericConfig::default().page_size(10, 10).batch_max(25)).await;
    let c = client();
    let tok = token(&sim, &c).await;

    let resp: Value = c
        .post(sim.url("/objects/contacts/batch"))
        .bearer_auth(&tok)
        .json(&json!({"key": "email", "records": contacts(25, 0)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = resp["results"].as_array().unwrap();
    assert_eq!(results.len(), 25);
    assert!(results.iter().all(|r| r["status"] == "created"));

    // Same batch again: unchanged.
    let again: Value = c
        .post(sim.url("/objects/contacts/batch"))
        .bearer_auth(&tok)
        .json(&json!({"key": "email", "records": contacts(25, 0)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "unchanged")
    );

    // Too big a batch is refused whole.
    let big = c
        .post(sim.url("/objects/contacts/batch"))
        .bearer_auth(&tok)
        .json(&json!({"key": "email", "records": contacts(26, 100)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 400);

    let mut after: Option<String> = None;
    let mut ids = Vec::new();
    let mut calls = 0;
    loop {
        let mut req = c.get(sim.url("/objects/contacts")).bearer_auth(&tok);
        if let Some(a) = &after {
            req = req.query(&[("after", a)]);
        }
        let page: Value = req.send().await.unwrap().json().await.unwrap();
        calls += 1;
        for r in page["records"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().to_owned());
        }
        after = page["next_after"].as_str().map(str::to_owned);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(calls, 3);
    assert_eq!(ids.len(), 25);
    assert_eq!(sim.request_log().count_calls("GET", "/objects/contacts"), 3);
    assert_eq!(sim.request_log().count_calls("POST", "/oauth/token"), 1);
}

#[tokio::test]
async fn https_with_the_generated_ca() {
    let sim = SimServer::new(GenericSimulator::default())
        .tls(true)
        .start()
        .await
        .unwrap();
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    let pem = sim.ca_cert_pem().unwrap();
    let path = sim.ca_cert_path().unwrap().to_path_buf();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = trusting
        .get(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // "localhost" is in the certificate too.
    let local = sim.base_url().replace("127.0.0.1", "localhost");
    let resp = trusting
        .get(format!("{local}/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await;
    // localhost may resolve to ::1 first where the listener is IPv4 only;
    // what matters is that no certificate error occurs when it connects.
    if let Err(e) = &resp {
        assert!(e.is_connect(), "{e:?}");
    }

    let untrusting = reqwest::Client::new();
    let err = untrusting
        .get(sim.url("/objects/contacts"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    drop(sim);
    assert!(
        !path.exists(),
        "a generated CA file is removed with the handle"
    );
}

#[tokio::test]
async fn dropped_connection_gets_no_response_but_the_write_lands() {
    let sim = start(GenericConfig::default()).await;
    sim.context().faults().set_plan(
        FaultPlan::new(3).rule(
            FaultRule::new(Fault::Drop {
                stage: crm_sim::fault::DropStage::AfterHandler,
            })
            .method("POST")
            .path_prefix("/objects/")
            .when(Trigger::Nth(vec![1])),
        ),
    );
    let c = client();
    let err = c
        .post(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    // The record was created before the connection dropped.
    assert_eq!(sim.context().store().count("contacts", Deleted::Exclude), 1);
    // The next request on a fresh connection works.
    let ok = c
        .post(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .json(&json!({"email": "b@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let log = sim.request_log().entries();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, Outcome::Dropped);
    assert_eq!(log[0].fault.as_deref(), Some("drop"));
    assert_eq!(log[1].outcome, Outcome::Responded(201));
}

#[tokio::test]
async fn drop_before_handler_changes_nothing() {
    let sim = start(GenericConfig::default()).await;
    sim.context()
        .faults()
        .set_plan(FaultPlan::new(0).rule(FaultRule::new(Fault::Drop {
            stage: crm_sim::fault::DropStage::BeforeHandler,
        })));
    let err = client()
        .post(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(sim.context().store().count("contacts", Deleted::Exclude), 0);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_and_counts_headers() {
    let sim = start(GenericConfig::default().rate_limits(vec![Window::fixed(
        "minutely",
        3,
        Duration::from_secs(60),
    )]))
    .await;
    let c = client();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = c
            .get(sim.url("/objects/contacts"))
            .header("x-api-key", "sim-api-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        remaining.push(
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = c
        .get(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // The token endpoint is not rate limited.
    token(&sim, &c).await;
    assert_eq!(sim.request_log().count_status(429), 1);
}

#[tokio::test]
async fn injected_faults_follow_the_plan() {
    let sim = start(GenericConfig::default()).await;
    let plan = FaultPlan::from_yaml(
        r#"
seed: 5
rules:
  - fault: { kind: rate_limited, retry_after_s: 2, burst: 2 }
    when: { nth: [1] }
    match: { path_prefix: /objects }
  - fault: { kind: server_error, status: 503 }
    when: { nth: [4] }
    match: { path_prefix: /objects }
"#,
    )
    .unwrap();
    sim.context().faults().set_plan(plan);
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = c
            .get(sim.url("/objects/contacts"))
            .header("x-api-key", "sim-api-key")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "2");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [429, 429, 200, 503, 200]);
    let faults: Vec<Option<String>> = sim
        .request_log()
        .entries()
        .into_iter()
        .map(|e| e.fault)
        .collect();
    assert_eq!(faults[0].as_deref(), Some("rate_limited"));
    assert_eq!(faults[3].as_deref(), Some("server_error"));
    assert_eq!(faults[2], None);
}

#[tokio::test]
async fn token_expiry_mid_run_gives_401_until_refreshed() {
    let sim = start(GenericConfig::default()).await;
    let c = client();
    let tok = token(&sim, &c).await;
    sim.context().faults().set_plan(
        FaultPlan::new(0).rule(
            FaultRule::new(Fault::ExpireToken)
                .path_prefix("/objects")
                .when(Trigger::Nth(vec![2])),
        ),
    );
    let get = |t: String| {
        let c = c.clone();
        let url = sim.url("/objects/contacts");
        async move { c.get(url).bearer_auth(t).send().await.unwrap() }
    };
    assert_eq!(get(tok.clone()).await.status(), 200);
    let r = get(tok.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "token_expired");
    let fresh = token(&sim, &c).await;
    assert_ne!(fresh, tok);
    assert_eq!(get(fresh).await.status(), 200);
    assert_eq!(sim.context().auth().tokens_issued(), 2);
}

#[tokio::test]
async fn slow_responses_outlast_a_client_timeout() {
    let sim = start(GenericConfig::default()).await;
    sim.context().faults().set_plan(
        FaultPlan::new(0)
            .rule(FaultRule::new(Fault::Slow { delay_ms: 1500 }).when(Trigger::Nth(vec![1]))),
    );
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = c
        .get(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let ok = c
        .get(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn credentials_never_reach_the_log() {
    let sim = start(GenericConfig::default()).await;
    let c = client();
    let tok = token(&sim, &c).await;
    c.get(sim.url("/objects/contacts"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    c.get(sim.url("/objects/contacts"))
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap();
    let printed = format!("{:?}", sim.request_log().entries());
    assert!(!printed.contains(&tok));
    assert!(!printed.contains("sim-api-key"));
    assert!(printed.contains("Bearer REDACTED"));
    let entries = sim.request_log().entries();
    assert_eq!(entries[2].header("x-api-key"), Some("REDACTED"));
    assert!(entries[0].body_size > 0);
}

#[tokio::test]
async fn webhook_deliveries_are_duplicated_by_the_plan() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let h = h.clone();
            async move {
                assert!(body.contains("contact.created"));
                h.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let sim = start(GenericConfig::default()).await;
    sim.context().faults().set_plan(
        FaultPlan::new(0).rule(
            FaultRule::new(Fault::DuplicateWebhook { copies: 2 }).when(Trigger::Nth(vec![2])),
        ),
    );
    let hooks = sim.context().webhooks();
    hooks.subscribe(&format!("http://{addr}/hook"));
    let body = br#"{"event":"contact.created"}"#;
    let first = hooks
        .broadcast(&[("x-signature".into(), "abc".into())], body)
        .await;
    let second = hooks.broadcast(&[], body).await;
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|d| d.status == Some(200)));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(hooks.deliveries().len(), 3);
    server.abort();
}

#[tokio::test]
async fn the_standalone_server_prints_its_ready_line() {
    use tokio::io::AsyncBufReadExt;

    let dir = std::env::temp_dir().join(format!("crm-sim-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.yaml");
    std::fs::write(&plan, "seed: 1\nrules: []\n").unwrap();
    let data = dir.join("deals.csv");
    std::fs::write(&data, "id,name\nd-1,\"Big\"\nd-2,Small\n").unwrap();
    let cert = dir.join("ca.pem");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crm-sim-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "--seed",
            "4",
            "--demo-data",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--fault-plan")
        .arg(&plan)
        .arg("--cert-path")
        .arg(&cert)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["provider"], "generic");
    assert_eq!(ready["ca_cert"], cert.display().to_string());
    let base = ready["base_url"].as_str().unwrap();
    assert!(base.starts_with("https://127.0.0.1:"));
    let creds = &ready["credentials"];
    assert_eq!(creds["client_id"], "sim-client");

    let pem = std::fs::read(&cert).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let page: Value = c
        .get(format!("{base}/objects/contacts?limit=1000"))
        .header("x-api-key", creds["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 50);
    let deal: Value = c
        .get(format!("{base}/objects/deals/d-1"))
        .header("x-api-key", creds["api_key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deal["fields"]["name"], "Big");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_data_is_reproducible_per_seed() {
    let emails = |seed: u64| async move {
        let sim = SimServer::new(GenericSimulator::default())
            .seed(seed)
            .demo_data(true)
            .start()
            .await
            .unwrap();
        sim.context()
            .store()
            .all("contacts", Deleted::Exclude)
            .into_iter()
            .map(|r| r.text("email").unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(emails(11).await, emails(11).await);
    assert_ne!(emails(11).await, emails(12).await);
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_open_connections() {
    let sim = start(GenericConfig::default()).await;
    let url = sim.url("/objects/contacts");
    let c = client();
    // A pooled keep-alive connection exists before the shutdown.
    let ok = c
        .get(&url)
        .header("x-api-key", "sim-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let err = c.get(&url).header("x-api-key", "sim-api-key").send().await;
    assert!(err.is_err(), "{err:?}");
}
