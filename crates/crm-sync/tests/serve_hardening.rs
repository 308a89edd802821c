//! The hardening of our HTTP servers (`crm_sync::serve::harden`) over
//! real sockets on 127.0.0.1: HTTPS with a PEM certificate, the IP
//! allow-list, the body limit, the request timeout, the per-token rate
//! limit, and `crm-sync serve` with an `http:` section.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use crm_sync::config::HttpSection;
use crm_sync::serve::Server;
use crm_sync::serve::harden::{Hardening, IpCidr, Tls};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

/// A throwaway folder for this test process.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crm-harden-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `server.pem` and `server.key` into `dir`; returns the certificate PEM.
fn write_cert(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let pem = ck.cert.pem();
    std::fs::write(dir.join("server.pem"), &pem).unwrap();
    std::fs::write(dir.join("server.key"), ck.signing_key.serialize_pem()).unwrap();
    pem
}

fn tiny_router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
}

/// A running server; dropping it stops the server.
struct Running {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn start(hardening: Hardening) -> Running {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let scheme = if hardening.is_tls() { "https" } else { "http" };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve_hardened(tiny_router(), &hardening, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        base: format!("{scheme}://{addr}"),
        _stop: stop,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn tls_client(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
}

async fn error_kind(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["error"]["kind"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn https_is_served_with_a_pem_certificate_and_plain_http_is_not() {
    let dir = temp_dir("tls");
    let ca = write_cert(&dir);
    let tls = Tls::from_pem_files(&dir.join("server.pem"), &dir.join("server.key")).unwrap();
    let server = start(Hardening::new().tls(tls)).await;
    assert!(server.base.starts_with("https://127.0.0.1:"));

    let https = tls_client(&ca).build().unwrap();
    let r = https
        .get(format!("{}/hello", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello");

    // TLS 1.2 is accepted too.
    let tls12 = tls_client(&ca)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let r = tls12
        .get(format!("{}/hello", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Plain HTTP to the TLS port fails, and a client not trusting the
    // certificate is refused: neither stops the server.
    let plain = server.base.replacen("https://", "http://", 1);
    assert!(client().get(format!("{plain}/hello")).send().await.is_err());
    assert!(
        client()
            .get(format!("{}/hello", server.base))
            .send()
            .await
            .is_err()
    );
    let r = https
        .get(format!("{}/hello", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_files_are_resolved_from_the_job_folder_and_errors_name_the_key() {
    let dir = temp_dir("tls-config");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    write_cert(&dir.join("certs"));
    let section: HttpSection = serde_yaml::from_str(
        "tls: {cert_file: certs/server.pem, key_file: certs/server.key}\n\
         allow_ips: [\"10.0.0.0/8\", \"192.168.1.7\", \"::1/128\"]\n",
    )
    .unwrap();
    let h = Hardening::from_section(&section, &dir).unwrap();
    assert!(h.is_tls());
    assert_eq!(h.max_body_bytes, 1024 * 1024);
    assert_eq!(h.request_timeout, Duration::from_secs(30));
    assert_eq!(h.rate_limit_per_hour, 1000);
    assert_eq!(h.allow_ips.as_ref().map(Vec::len), Some(3));

    let missing: HttpSection =
        serde_yaml::from_str("tls: {cert_file: nope.pem, key_file: certs/server.key}\n").unwrap();
    let e = Hardening::from_section(&missing, &dir).unwrap_err();
    assert!(e.message().contains("`http.tls.cert_file`"), "{e}");
    assert!(e.message().contains("nope.pem"), "{e}");

    // The key in place of the certificate: no certificate in the file.
    let swapped: HttpSection =
        serde_yaml::from_str("tls: {cert_file: certs/server.key, key_file: certs/server.key}\n")
            .unwrap();
    let e = Hardening::from_section(&swapped, &dir).unwrap_err();
    assert!(e.message().contains("`http.tls.cert_file`"), "{e}");

    let bad: Result<HttpSection, _> = serde_yaml::from_str("allow_ips: [\"10.0.0.0/33\"]\n");
    assert!(bad.is_err());
    let unknown: Result<HttpSection, _> = serde_yaml::from_str("max_body: 10\n");
    assert!(unknown.is_err());
    let empty: HttpSection = serde_yaml::from_str("allow_ips: []\n").unwrap();
    assert!(Hardening::from_section(&empty, &dir).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_allow_list_refuses_other_networks() {
    let outside =
        start(Hardening::new().allow_ips(["10.0.0.0/8".parse::<IpCidr>().unwrap()])).await;
    let r = client()
        .get(format!("{}/hello", outside.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_kind(r).await, "forbidden");
    // Unknown paths are refused the same way.
    let r = client()
        .get(format!("{}/nowhere", outside.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let inside = start(Hardening::new().allow_ips([
        "10.0.0.0/8".parse::<IpCidr>().unwrap(),
        "127.0.0.0/8".parse().unwrap(),
    ]))
    .await;
    let r = client()
        .get(format!("{}/hello", inside.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let server = start(Hardening::new().max_body_bytes(1024)).await;
    let r = client()
        .post(format!("{}/upload", server.base))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = client()
        .post(format!("{}/upload", server.base))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "1000");
}

/// A chunked body declares no length: the body extractor stops at the limit.
#[tokio::test]
async fn chunked_bodies_over_the_limit_get_413() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let server = start(Hardening::new().max_body_bytes(1024)).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let chunk = "x".repeat(512);
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for _ in 0..4 {
        req.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn slow_requests_get_408() {
    let server = start(Hardening::new().request_timeout(Duration::from_secs(1))).await;
    let r = client()
        .get(format!("{}/slow", server.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::REQUEST_TIMEOUT || r.status() == StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        r.status()
    );
    assert_eq!(error_kind(r).await, "timeout");
    // The server still answers.
    let r = client()
        .get(format!("{}/hello", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_counts_per_token() {
    let server = start(Hardening::new().rate_limit_per_hour(3)).await;
    let hello = format!("{}/hello", server.base);
    let token_a = "token-a-0123456789abcdef";
    for _ in 0..3 {
        let r = client()
            .get(&hello)
            .bearer_auth(token_a)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = client()
        .get(&hello)
        .bearer_auth(token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body = r.text().await.unwrap();
    assert!(!body.contains(token_a), "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["kind"], "rate_limited");
    assert!(body["error"]["message"].is_string());

    // Another token, a review session and the bare IP have their own counts.
    let r = client()
        .get(&hello)
        .bearer_auth("token-b-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..3 {
        let r = client()
            .get(&hello)
            .header(reqwest::header::COOKIE, "crm_review_session=abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = client()
        .get(&hello)
        .header(reqwest::header::COOKIE, "crm_review_session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..3 {
        let r = client().get(&hello).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = client().get(&hello).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

const SHEET: &str = "sheet:\n  spreadsheet_id: sheet-1\n  sheet_name: Bookings\n  \
                     column_mapping: {A: booking_id, B: campaign_name}\n";

/// `crm-sync serve` with `http.tls` serves the review desk over HTTPS,
/// says so, and marks its cookies `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_sync_serve_speaks_https_with_secure_cookies() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let dir = temp_dir("cli");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let ca = write_cert(&dir.join("certs"));
    let url = format!("sqlite://{}?mode=rwc", dir.join("bookings.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "name: bookings\n{SHEET}destination:\n  url: \"{url}\"\n  table: bookings\n\
             http:\n  tls: {{cert_file: certs/server.pem, key_file: certs/server.key}}\n  \
             allow_ips: [\"127.0.0.0/8\", \"::1/128\"]\n\
             review:\n  listen: 127.0.0.1:{port}\n  tokens:\n    \
             - {{name: olga, role: operator, token: \"${{REVIEW_TOKEN}}\"}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .arg("serve")
        .arg(&job)
        .env("REVIEW_TOKEN", "serve-operator-token-42")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // Keep reading, so the server's next lines find the pipe open.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        line
    });

    let https = tls_client(&ca).build().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let mut login = None;
    for _ in 0..200 {
        if let Ok(r) = https.get(format!("{base}/review/login")).send().await {
            login = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let login = login.unwrap_or_else(|| panic!("crm-sync serve did not listen on {base}"));
    assert_eq!(login.status(), StatusCode::OK);
    let cookies: Vec<&str> = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(!cookies.is_empty());
    assert!(cookies.iter().all(|c| c.contains("Secure")), "{cookies:?}");
    let line = first_line.await.unwrap();
    assert!(
        line.starts_with(&format!("listening on https://127.0.0.1:{port}")),
        "{line:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate that cannot be read is a usage error naming the key and
/// the file.
#[test]
fn crm_sync_serve_names_a_missing_certificate() {
    let dir = temp_dir("cli-missing");
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "name: bookings\n{SHEET}\
             http:\n  tls: {{cert_file: certs/absent.pem, key_file: certs/absent.key}}\n\
             review:\n  listen: 127.0.0.1:0\n  tokens:\n    \
             - {{name: olga, role: operator, token: \"serve-operator-token-42\"}}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .arg("serve")
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.tls.cert_file"), "{stderr}");
    assert!(stderr.contains("absent.pem"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
