//! Batch sync benchmark: `POST .../contacts/batch-sync` of 1,000 contacts
//! (50 of them repeating an earlier email) through the whole service (HTTP,
//! dedupe, the CRM client, the simulator), run with
//! `cargo bench -p integration-service --bench batch_sync`.
//!
//! For each CRM, in a fresh service and simulator each round: the first
//! batch (950 creates), then the same batch again (950 unchanged, no
//! write). Prints the median of `CRM_BENCH_ROUNDS` rounds (default 3) of
//! wall time, contacts per second and the CRM calls made (from the
//! simulator's request log), as a Markdown table for docs/benchmarks.md.
//! Pipedrive has no batch write, so it gets 200 contacts (10 repeated).
//! The simulators enforce each provider's rate limits, which bound the
//! figures as they would against the real CRM.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_service::app::App;
use integration_service::config::ServiceConfig;
use integration_service::model::Provider;
use integration_service::sims;
use serde_json::{Value as Json, json};

const TOKEN: &str = "bench-operator-token-7c1e93";

fn credentials(p: Provider) -> Json {
    match p {
        Provider::Salesforce => json!({"clientId": sims::SF_CLIENT_ID,
            "clientSecret": sims::SF_CLIENT_SECRET, "refreshToken": sims::SF_REFRESH_TOKEN,
            "domain": "https://bench.my.salesforce.com"}),
        Provider::Hubspot => json!({"accessToken": sims::HUBSPOT_TOKEN}),
        Provider::Pipedrive => json!({"apiToken": sims::PIPEDRIVE_TOKEN, "domain": "bench"}),
    }
}

fn batch(n: usize, repeated: usize) -> Json {
    let unique = n - repeated;
    let mut items: Vec<Json> = (0..unique)
        .map(|i| {
            json!({"email": format!("bench{i}@example.com"), "firstName": "Bench",
                        "lastName": format!("N{i}"), "phone": "+14155550100"})
        })
        .collect();
    for i in 0..repeated {
        items.push(json!({"email": format!("BENCH{}@example.com", i * 7), "lastName": format!("N{}", i * 7)}));
    }
    Json::Array(items)
}

struct Round {
    first: Duration,
    first_calls: usize,
    again: Duration,
    again_calls: usize,
}

async fn round(p: Provider, n: usize, repeated: usize) -> Round {
    let dir = std::env::temp_dir().join(format!(
        "integration-service-bench-{}-{}",
        p.as_str(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "state: {{url: \"sqlite://{}?mode=rwc\"}}\njobs: {{enabled: false}}\nhttp: {{rate_limit_per_hour: 0}}\n\
         tokens: [{{name: bench, workspace: bench, role: admin, token: {TOKEN}}}]\n",
        dir.join("state.db").display()
    );
    let config = ServiceConfig::from_yaml(&yaml).unwrap();
    let app = Arc::new(App::build(&config, &dir).await.unwrap());
    let server = crm_sync::serve::Server::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let serving = Arc::clone(&app);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serving
            .serve(server, async {
                let _ = stopped.await;
            })
            .await;
    });
    let http = reqwest::Client::new();
    let created: Json = http
        .post(format!("{base}/api/crm/integrations"))
        .bearer_auth(TOKEN)
        .json(&json!({"provider": p.as_str(), "name": "bench", "credentials": credentials(p)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let sims = app.simulators.as_ref().unwrap();
    let sim = match p {
        Provider::Salesforce => &sims.salesforce,
        Provider::Hubspot => &sims.hubspot,
        Provider::Pipedrive => &sims.pipedrive,
    };
    let body = batch(n, repeated);
    let url = format!("{base}/api/crm/integrations/{id}/contacts/batch-sync");
    let send = || async {
        let before = sim.request_log().len();
        let t = Instant::now();
        let r: Json = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (t.elapsed(), sim.request_log().len() - before, r)
    };
    let (first, first_calls, r) = send().await;
    assert_eq!(r["created"], n - repeated, "{r}");
    let (again, again_calls, r) = send().await;
    assert_eq!(r["unchanged"], n - repeated, "{r}");
    let _ = stop.send(());
    let _ = std::fs::remove_dir_all(&dir);
    Round {
        first,
        first_calls,
        again,
        again_calls,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("CRM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "| CRM | contacts (repeated) | first batch | contacts/s | CRM calls | same batch again | CRM calls |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (p, n, repeated) in [
        (Provider::Salesforce, 1000, 50),
        (Provider::Hubspot, 1000, 50),
        (Provider::Pipedrive, 200, 10),
    ] {
        let mut runs = Vec::new();
        for _ in 0..rounds {
            runs.push(round(p, n, repeated).await);
        }
        let first = median(runs.iter().map(|r| r.first).collect());
        let again = median(runs.iter().map(|r| r.again).collect());
        let unique = (n - repeated) as f64;
        println!(
            "| {} | {n} ({repeated}) | {:.0} ms | {:.0} | {} | {:.0} ms | {} |",
            p.as_str(),
            first.as_secs_f64() * 1000.0,
            unique / first.as_secs_f64(),
            runs[0].first_calls,
            again.as_secs_f64() * 1000.0,
            runs[0].again_calls,
        );
    }
}
