//! The `integration-service` binary as a user runs it: with no account
//! (simulators, demo tokens), over TLS with an allow-list, a body limit and
//! a rate limit per token; and the OpenAPI document in `docs/` is the one
//! the code serves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value as Json, json};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "integration-service-bin-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running binary; killed when dropped. Its stderr lines are collected.
struct Running {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(dir: &Path, config: Option<&str>) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_integration-service"));
        cmd.current_dir(dir)
            .env_remove("INTEGRATION_SERVICE_STATE_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            std::fs::write(dir.join("service.yaml"), c).unwrap();
            cmd.args(["--config", "service.yaml"]);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no `listening on` line; got {seen:?}"));
            seen.push(line.clone());
            if let Some((_, a)) = line.split_once("listening on ") {
                break a.trim().to_owned();
            }
        };
        Running {
            child,
            addr,
            lines: rx,
            seen,
        }
    }

    /// Every stderr line so far.
    fn log(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

fn demo_tokens(dir: &Path) -> (String, String, String) {
    let text = std::fs::read_to_string(dir.join("integration-service.tokens")).unwrap();
    let token = |role: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{role} ")))
            .unwrap()
            .to_owned()
    };
    (token("admin"), token("operator"), token("viewer"))
}

fn seed_salesforce() -> Json {
    json!({
        "provider": "salesforce",
        "name": "Main Salesforce Instance",
        "description": "Production Salesforce CRM",
        "credentials": {
            "clientId": "your_client_id",
            "clientSecret": "your_client_secret",
            "accessToken": "your_access_token",
            "refreshToken": "your_refresh_token",
            "domain": "https://mycompany.salesforce.com"
        },
        "scopes": ["read_contacts", "write_leads"],
        "syncConfig": {
            "direction": "bidirectional",
            "syncInterval": 60,
            "autoSync": true,
            "contactFields": ["email", "firstName", "lastName", "company"],
            "leadFields": ["email", "source", "status"]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_no_account_against_the_simulators() {
    let dir = temp_dir("default");
    // The default config, but on a free port.
    let mut run = Running::start(&dir, Some("listen: 127.0.0.1:0\n"));
    let (admin, operator, viewer) = demo_tokens(&dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["integration-service.tokens", "integration-service.db.key"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{f} is private");
        }
    }
    let http = reqwest::Client::new();
    let base = run.addr.clone();
    // Seed 002's example body, as it is.
    let r = http
        .post(format!("{base}/api/crm/integrations"))
        .bearer_auth(&admin)
        .json(&seed_salesforce())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Json = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let r = http
        .post(format!("{base}/api/crm/integrations/{id}/contacts/sync"))
        .bearer_auth(&operator)
        .json(&json!({"email": "john@example.com", "firstName": "John", "lastName": "Doe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/api/crm/integrations/{id}"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("your_client_secret"), "{text}");
    let doc = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    let doc: Json = doc.json().await.unwrap();
    assert!(doc["paths"]["/api/crm/integrations/{id}/contacts/batch-sync"].is_object());

    // The process's own log lines name no token, secret or address.
    let log = run.log();
    assert!(log.contains("contact synced"), "{log}");
    for secret in [
        admin.as_str(),
        operator.as_str(),
        viewer.as_str(),
        "your_client_secret",
        "your_refresh_token",
        "john@example.com",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    // A restart keeps the integration: same key file, same store.
    drop(run);
    let run = Running::start(&dir, Some("listen: 127.0.0.1:0\n"));
    let (admin, _, _) = demo_tokens(&dir);
    let r = http
        .post(format!(
            "{}/api/crm/integrations/{id}/sync-from-crm",
            run.addr
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn write_cert(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let pem = ck.cert.pem();
    std::fs::write(dir.join("server.pem"), &pem).unwrap();
    std::fs::write(dir.join("server.key"), ck.signing_key.serialize_pem()).unwrap();
    pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_limits_and_the_allow_list_protect_the_api() {
    let dir = temp_dir("hardened");
    let pem = write_cert(&dir);
    let config = "listen: 127.0.0.1:0\n\
                  tokens:\n  - {name: ops, workspace: acme, role: operator, token: ops-token-0123456789}\n  \
                  - {name: other, workspace: acme, role: viewer, token: viewer-token-0123456789}\n\
                  http:\n  tls: {cert_file: server.pem, key_file: server.key}\n  \
                  max_body_bytes: 2048\n  rate_limit_per_hour: 5\n";
    let run = Running::start(&dir, Some(config));
    assert!(run.addr.starts_with("https://"), "{}", run.addr);
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = run.addr.clone();
    let list = || {
        tls.get(format!("{base}/api/crm/integrations"))
            .bearer_auth("ops-token-0123456789")
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(base.replace("https://", "http://") + "/health")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // TLS 1.2 is served (rustls speaks nothing older).
    let tls12 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(tls12.status(), 200);
    // A body over the limit: 413 before it is read.
    let big = tls
        .post(format!("{base}/api/crm/integrations/x/contacts/batch-sync"))
        .bearer_auth("ops-token-0123456789")
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    // The hourly budget is per token: this token's 5 are spent (the 413
    // counted; /health is counted by address), another token still gets through.
    let mut last = None;
    for _ in 0..4 {
        last = Some(list().await.unwrap());
    }
    let limited = last.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());
    let other = tls
        .get(format!("{base}/api/crm/integrations"))
        .bearer_auth("viewer-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    drop(run);

    // An allow-list without the loopback network: 403 for us.
    let dir = temp_dir("allow");
    let config = "listen: 127.0.0.1:0\n\
                  tokens: [{name: ops, workspace: acme, role: operator, token: ops-token-0123456789}]\n\
                  http: {allow_ips: [10.0.0.0/8]}\n";
    let run = Running::start(&dir, Some(config));
    let r = reqwest::Client::new()
        .get(format!("{}/health", run.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn the_openapi_document_in_docs_is_the_one_served() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/integration-service.openapi.json");
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    let served = integration_service::api::openapi_json();
    assert!(
        kept.trim() == served.trim(),
        "docs/integration-service.openapi.json is stale: run \
         `cargo run -p integration-service -- --print-openapi > docs/integration-service.openapi.json`"
    );
    let doc: Json = serde_json::from_str(&served).unwrap();
    for path in [
        "/api/crm/integrations",
        "/api/crm/integrations/{id}",
        "/api/crm/integrations/{id}/contacts/sync",
        "/api/crm/integrations/{id}/leads/sync",
        "/api/crm/integrations/{id}/contacts",
        "/api/crm/integrations/{id}/contacts/enrich",
        "/api/crm/integrations/{id}/leads/attribution",
        "/api/crm/integrations/{id}/contacts/batch-sync",
        "/api/crm/integrations/{id}/sync-from-crm",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
}
