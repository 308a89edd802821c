//! No secret value appears in any `Debug` or `Display` output: every auth
//! type, flow, token, configuration and error is formatted with known
//! secrets, all starting with `SEKRIT`, and the output searched.

#![allow(clippy::unwrap_used)]

mod support;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, ErrorKind};
use crm_http::secrecy::SecretString;
use crm_http::{
    Auth, AuthorizationCodeFlow, ClientCredentialsFlow, HttpClient, JwtBearerFlow,
    MemoryTokenStore, PkceVerifier, RateLimitConfig, RefreshTokenFlow, RequestOptions,
    ResponseClassifier, ResponseParts, RetryPolicy, ServiceAccountKey, Token, TokenFlow,
    TokenOptions, Verdict,
};
use support::{Logged, Reply, TestServer};
use url::Url;

const PRIVATE_KEY: &str = include_str!("fixtures/test_rsa_private.pem");

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A distinctive piece of the private key's base64 body.
fn key_fragment() -> &'static str {
    PRIVATE_KEY.lines().nth(3).unwrap()
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains("SEKRIT"), "{what} leaks a secret: {text}");
    assert!(
        !text.contains(key_fragment()),
        "{what} leaks the private key: {text}"
    );
}

#[track_caller]
fn debug_clean(what: &str, value: &impl Debug) {
    assert_clean(what, &format!("{value:?}"));
    assert_clean(what, &format!("{value:#?}"));
}

#[track_caller]
fn error_clean(what: &str, err: &Error) {
    assert_clean(what, &err.to_string());
    assert_clean(what, &format!("{err:?}"));
    for (_, v) in err.context() {
        assert_clean(what, v);
    }
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn refresh_flow(token_url: Url) -> RefreshTokenFlow {
    RefreshTokenFlow::new(token_url, "client-id", secret("SEKRIT-refresh"))
        .client_secret(secret("SEKRIT-client-secret"))
}

fn all_auths(token_url: &Url) -> Vec<Auth> {
    let sa = service_account(token_url);
    vec![
        Auth::none(),
        Auth::bearer(secret("SEKRIT-bearer")),
        Auth::api_key_header("x-api-key", secret("SEKRIT-api-key-header")).unwrap(),
        Auth::api_key_query("api_token", secret("SEKRIT-api-key-query")),
        Auth::oauth_with(
            refresh_flow(token_url.clone()),
            TokenOptions::default()
                .initial_token(
                    Token::new(secret("SEKRIT-access"))
                        .with_refresh_token(secret("SEKRIT-refresh-2"))
                        .with_lifetime(Duration::from_secs(3600)),
                )
                .store(Arc::new(MemoryTokenStore::new())),
        ),
        Auth::oauth(ClientCredentialsFlow::new(
            token_url.clone(),
            "cc-id",
            secret("SEKRIT-cc-secret"),
        )),
        Auth::oauth(
            JwtBearerFlow::salesforce(
                &url("https://login.salesforce.com"),
                "ck",
                "user@example.com",
                &secret(PRIVATE_KEY),
            )
            .unwrap()
            .token_url(token_url.clone()),
        ),
        Auth::oauth(JwtBearerFlow::google_service_account(&sa, ["scope"]).unwrap()),
    ]
}

fn service_account(token_url: &Url) -> ServiceAccountKey {
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "kid",
        "private_key": PRIVATE_KEY,
        "client_email": "sa@p.iam.gserviceaccount.com",
        "token_uri": token_url.as_str(),
    });
    ServiceAccountKey::from_json(&json.to_string()).unwrap()
}

#[test]
fn auth_types_flows_tokens_and_configs_never_show_secrets() {
    let token_url = url("http://127.0.0.1:9/token");
    for auth in all_auths(&token_url) {
        debug_clean("Auth", &auth);
        assert_clean("Auth display", &auth.to_string());
    }
    debug_clean("RefreshTokenFlow", &refresh_flow(token_url.clone()));
    debug_clean(
        "TokenFlow",
        &TokenFlow::from(refresh_flow(token_url.clone())),
    );
    debug_clean(
        "ClientCredentialsFlow",
        &ClientCredentialsFlow::new(token_url.clone(), "id", secret("SEKRIT-cc")),
    );
    let jwt = JwtBearerFlow::new(token_url.clone(), "iss", "aud", &secret(PRIVATE_KEY)).unwrap();
    debug_clean("JwtBearerFlow", &jwt);
    debug_clean("JWT assertion", &jwt.assertion().unwrap());
    debug_clean("ServiceAccountKey", &service_account(&token_url));
    let code_flow = AuthorizationCodeFlow::new(
        "app",
        url("https://a.example/auth"),
        token_url.clone(),
        url("http://127.0.0.1:9/cb"),
    )
    .client_secret(secret("SEKRIT-app-secret"));
    debug_clean("AuthorizationCodeFlow", &code_flow);
    let request = code_flow.authorize_url();
    let verifier_text = {
        use crm_http::secrecy::ExposeSecret;
        request.pkce_verifier.secret().expose_secret().to_owned()
    };
    let shown = format!("{request:?}");
    assert!(
        !shown.contains(&verifier_text),
        "the PKCE verifier leaks: {shown}"
    );
    debug_clean(
        "PkceVerifier",
        &PkceVerifier::new(secret("SEKRIT-verifier")),
    );
    let token = Token::new(secret("SEKRIT-at"))
        .with_refresh_token(secret("SEKRIT-rt"))
        .with_extra("instance_url", serde_json::json!("https://x"))
        .with_extra("id_token", serde_json::json!("SEKRIT-id-token"));
    debug_clean("Token", &token);
    assert!(
        token.extra("id_token").is_none(),
        "secret-named extras are dropped"
    );
    debug_clean(
        "TokenOptions",
        &TokenOptions::default().initial_token(token.clone()),
    );
    let store = MemoryTokenStore::with_token(token);
    debug_clean("MemoryTokenStore", &store);
    let builder = HttpClient::builder("p")
        .auth(Auth::bearer(secret("SEKRIT-bearer")))
        .rate_limit(RateLimitConfig::per_second(5))
        .retry(RetryPolicy::default());
    debug_clean("HttpClientBuilder", &builder);
    debug_clean("HttpClient", &builder.build().unwrap());
    // Bad key material is reported without quoting it.
    let err =
        JwtBearerFlow::new(token_url.clone(), "i", "a", &secret("SEKRIT-not-a-pem")).unwrap_err();
    error_clean("bad key error", &err);
    let err = ServiceAccountKey::from_json(
        r#"{"type":"service_account","private_key":12,"client_email":"SEKRIT-x"}"#,
    )
    .unwrap_err();
    error_clean("bad key file error", &err);
}

/// Echoes every credential it receives back in error bodies.
fn echo_server() -> impl Fn(&Logged) -> Reply + Send + Sync + 'static {
    |r: &Logged| {
        let mut seen: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        seen.push(r.target.clone());
        seen.push(String::from_utf8_lossy(&r.body).into_owned());
        let text = seen.join("\n");
        if r.path() == "/token" {
            let body = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("rejected: {text}"),
                "client_secret": r.param("client_secret"),
                "refresh_token": r.param("refresh_token"),
            });
            return Reply::json(400, body.to_string());
        }
        match r.path() {
            "/json" => Reply::json(
                400,
                serde_json::json!({"message": format!("bad request: {text}"), "access_token": "SEKRIT-echo", "password": "SEKRIT-pw"})
                    .to_string(),
            ),
            "/unauthorized" => Reply::json(401, serde_json::json!({"message": text}).to_string()),
            _ => Reply::status(403).body(format!("forbidden\n{text}\npassword=SEKRIT-pw2&client_secret=SEKRIT-cs2").into_bytes()),
        }
    }
}

#[tokio::test]
async fn errors_never_show_secrets() {
    let server = TestServer::start(echo_server()).await;
    let token_url: Url = server.url("/token").parse().unwrap();
    let quick = RetryPolicy::default()
        .max_attempts(2)
        .initial_backoff(Duration::from_millis(10));
    for auth in all_auths(&token_url) {
        let client = HttpClient::builder("p")
            .base_url(server.base())
            .auth(auth.clone())
            .retry(quick.clone())
            .build()
            .unwrap();
        for path in ["/json", "/text?start=0", "/unauthorized"] {
            let err = client
                .get_json::<serde_json::Value>(path, RequestOptions::new("probe"))
                .await
                .unwrap_err();
            error_clean(&format!("{auth:?} {path}"), &err);
            if path != "/unauthorized" {
                // The echo did reach the error, scrubbed.
                assert!(err.to_string().contains("[REDACTED]"), "{err}");
            }
        }
        if let Err(err) = client.token().await {
            error_clean(&format!("{auth:?} token"), &err);
        }
    }
    // The authorization-code exchange echoes the code, verifier and secret.
    let flow = AuthorizationCodeFlow::new(
        "app",
        url("https://a.example/auth"),
        token_url.clone(),
        url("http://127.0.0.1:9/cb"),
    )
    .client_secret(secret("SEKRIT-app-secret"));
    let client = HttpClient::builder("p").build().unwrap();
    let err = flow
        .exchange_code(
            &client,
            "SEKRIT-code",
            PkceVerifier::new(secret("SEKRIT-verifier")),
        )
        .await
        .unwrap_err();
    error_clean("code exchange", &err);
}

#[tokio::test]
async fn transport_errors_never_show_a_query_api_key() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = HttpClient::builder("pipedrive")
        .base_url(format!("http://127.0.0.1:{port}"))
        .auth(Auth::api_key_query(
            "api_token",
            secret("SEKRIT-api-key-query"),
        ))
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>("/v1/deals", RequestOptions::new("deals.list"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Transient);
    error_clean("connect error", &err);
}

/// A careless provider classifier that copies the raw body into its error.
struct Careless;

impl ResponseClassifier for Careless {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        if r.status.is_success() {
            return Verdict::Success;
        }
        Verdict::Failure(
            Error::new(
                ErrorKind::Permanent,
                String::from_utf8_lossy(r.body).into_owned(),
            )
            .with_context("raw", String::from_utf8_lossy(r.body)),
        )
    }
}

#[tokio::test]
async fn known_secrets_are_removed_even_from_careless_classifiers() {
    let server = TestServer::start(echo_server()).await;
    let client = HttpClient::builder("p")
        .base_url(server.base())
        .auth(Auth::bearer(secret("SEKRIT-bearer")))
        .classifier(Careless)
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>("/plain", RequestOptions::new("probe"))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SEKRIT-bearer"), "{shown}");
    assert!(
        shown.contains("forbidden"),
        "the rest of the message stays: {shown}"
    );
}
