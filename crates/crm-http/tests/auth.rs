//! Token flows against a scripted local token endpoint: single-flight
//! refresh on 401, refresh ahead of expiry, rotation into a token store,
//! client credentials (POST and Marketo's GET), JWT bearer (Salesforce and
//! Google service accounts), authorization code with PKCE.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crm_core::{ErrorKind, Retry};
use crm_http::secrecy::{ExposeSecret, SecretString};
use crm_http::{
    Auth, AuthorizationCodeFlow, ClientAuthMethod, ClientCredentialsFlow, DefaultClassifier,
    HttpClient, JwtBearerFlow, MemoryTokenStore, PkceVerifier, RefreshTokenFlow, RequestOptions,
    ResponseClassifier, ResponseParts, ServiceAccountKey, Token, TokenOptions, TokenRequestStyle,
    Verdict,
};
use support::{Logged, Reply, TestServer};
use url::Url;

const PRIVATE_KEY: &str = include_str!("fixtures/test_rsa_private.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/test_rsa_public.pem");

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn bearer(r: &Logged) -> Option<String> {
    r.header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// A provider whose token endpoint (`/token`) issues `AT-n` / `RT-n` for the
/// n-th request and whose API (`/api`) accepts only the newest token.
fn oauth_provider(
    token_delay: Duration,
    expires_in: u64,
) -> impl Fn(&Logged) -> Reply + Send + Sync + 'static {
    let issued = Arc::new(AtomicU32::new(0));
    move |r| {
        if r.path() == "/token" {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::json(
                200,
                serde_json::json!({
                    "access_token": format!("AT-{n}"),
                    "refresh_token": format!("RT-{n}"),
                    "token_type": "bearer",
                    "expires_in": expires_in,
                    "instance_url": "https://example.my.salesforce.com",
                })
                .to_string(),
            )
            .after(token_delay);
        }
        let current = format!("AT-{}", issued.load(Ordering::SeqCst));
        if bearer(r).as_deref() == Some(current.as_str()) {
            Reply::json(200, r#"{"ok":true}"#)
        } else {
            // Slow 401s, so that all concurrent requests are rejected together.
            Reply::json(
                401,
                r#"[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]"#,
            )
            .after(Duration::from_millis(200))
        }
    }
}

fn refresh_flow(server: &TestServer) -> RefreshTokenFlow {
    RefreshTokenFlow::new(
        server.url("/token").parse().unwrap(),
        "client-1",
        secret("RT-0"),
    )
    .client_secret(secret("client-secret-1"))
}

#[tokio::test]
async fn a_401_triggers_one_refresh_shared_by_twenty_concurrent_requests() {
    let server = TestServer::start(oauth_provider(Duration::from_millis(300), 3600)).await;
    let store = Arc::new(MemoryTokenStore::new());
    // Start with a token the provider no longer accepts.
    let auth = Auth::oauth_with(
        refresh_flow(&server),
        TokenOptions::default()
            .initial_token(Token::new(secret("AT-stale")).with_refresh_token(secret("RT-0")))
            .store(store.clone()),
    );
    let client = HttpClient::builder("hubspot")
        .base_url(server.base())
        .auth(auth)
        .build()
        .unwrap();
    let calls = (0..20).map(|_| {
        client.get_json::<serde_json::Value>("/api", RequestOptions::new("contacts.list"))
    });
    let results = futures_util::future::join_all(calls).await;
    for r in results {
        assert_eq!(r.unwrap()["ok"], true);
    }
    assert_eq!(server.count("/token"), 1, "exactly one refresh");
    let log = server.log();
    let stale = log
        .iter()
        .filter(|r| bearer(r).as_deref() == Some("AT-stale"))
        .count();
    let fresh = log
        .iter()
        .filter(|r| bearer(r).as_deref() == Some("AT-1"))
        .count();
    assert_eq!((stale, fresh), (20, 20));
    // The refresh used the refresh token and client credentials.
    let token_req = log.iter().find(|r| r.path() == "/token").unwrap();
    assert_eq!(
        token_req.param("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(token_req.param("refresh_token").as_deref(), Some("RT-0"));
    assert_eq!(
        token_req.param("client_secret").as_deref(),
        Some("client-secret-1")
    );
    // Metrics count one token request; the store got the rotated token once.
    let m = client.metrics().snapshot();
    assert_eq!(m.endpoint("hubspot", "oauth.token").unwrap().requests, 1);
    assert_eq!(m.endpoint("hubspot", "contacts.list").unwrap().requests, 40);
    assert_eq!(m.endpoint("hubspot", "contacts.list").unwrap().retries, 20);
    assert_eq!(store.saves(), 1);
    assert_eq!(
        store
            .token()
            .unwrap()
            .refresh_token()
            .unwrap()
            .expose_secret(),
        "RT-1"
    );
    // Salesforce-style extras are kept.
    let token = client.token().await.unwrap().unwrap();
    assert_eq!(
        token.extra("instance_url").and_then(|v| v.as_str()),
        Some("https://example.my.salesforce.com")
    );
}

#[tokio::test]
async fn a_second_401_after_refresh_is_an_auth_error() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/token" {
            Reply::json(200, r#"{"access_token":"AT-x","expires_in":3600}"#)
        } else {
            Reply::json(401, r#"{"message":"nope"}"#)
        }
    })
    .await;
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth(refresh_flow(&server)))
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
    assert!(!err.is_retryable());
    // First token, one refresh; two API calls.
    assert_eq!(server.count("/token"), 2);
    assert_eq!(server.count("/api"), 2);
}

#[tokio::test]
async fn a_static_token_401_is_final() {
    let server =
        TestServer::start(|_: &Logged| Reply::json(401, r#"{"message":"bad token"}"#)).await;
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::bearer(secret("pat-123456")))
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
    assert_eq!(err.retry(), Retry::Permanent);
    assert_eq!(server.count("/api"), 1);
}

#[tokio::test]
async fn rejected_refresh_token_is_a_permanent_auth_error_shared_by_waiters() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/token" {
            Reply::json(
                400,
                r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
            )
            .after(Duration::from_millis(200))
        } else {
            Reply::json(200, "{}")
        }
    })
    .await;
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth(refresh_flow(&server)))
        .build()
        .unwrap();
    let calls =
        (0..5).map(|_| client.get_json::<serde_json::Value>("/api", RequestOptions::new("api")));
    for r in futures_util::future::join_all(calls).await {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Auth);
        assert_eq!(err.context_value("provider_code"), Some("invalid_grant"));
        assert!(!err.is_retryable());
    }
    assert_eq!(
        server.count("/token"),
        1,
        "waiters share the failed refresh"
    );
    assert_eq!(server.count("/api"), 0);
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry() {
    // Tokens live 60 s; with a 120 s skew each request needs a new one.
    let server = TestServer::start(oauth_provider(Duration::ZERO, 60)).await;
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth_with(
            refresh_flow(&server),
            TokenOptions::default().refresh_skew(Duration::from_secs(120)),
        ))
        .build()
        .unwrap();
    for _ in 0..3 {
        client
            .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
            .await
            .unwrap();
    }
    assert_eq!(server.count("/token"), 3);
    assert_eq!(server.count("/api"), 3, "never a 401: refreshed before use");

    // With a 10 s skew the first token serves every request.
    let server = TestServer::start(oauth_provider(Duration::ZERO, 60)).await;
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth_with(
            refresh_flow(&server),
            TokenOptions::default().refresh_skew(Duration::from_secs(10)),
        ))
        .build()
        .unwrap();
    for _ in 0..3 {
        client
            .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
            .await
            .unwrap();
    }
    assert_eq!(server.count("/token"), 1);
}

#[tokio::test]
async fn stored_refresh_token_is_used_and_rotation_is_saved() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/token" {
            if r.param("refresh_token").as_deref() == Some("RT-stored") {
                Reply::json(
                    200,
                    r#"{"access_token":"AT-new","refresh_token":"RT-rotated","expires_in":1800}"#,
                )
            } else {
                Reply::json(400, r#"{"error":"invalid_grant"}"#)
            }
        } else if bearer(r).as_deref() == Some("AT-new") {
            Reply::json(200, "{}")
        } else {
            Reply::status(401)
        }
    })
    .await;
    // An earlier run saved an expired access token and a newer refresh token
    // than the one in the configuration.
    let stored = Token::new(secret("AT-old"))
        .with_expires_at(chrono::Utc::now() - chrono::Duration::hours(1))
        .with_refresh_token(secret("RT-stored"));
    let store = Arc::new(MemoryTokenStore::with_token(stored));
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth_with(
            refresh_flow(&server),
            TokenOptions::default().store(store.clone()),
        ))
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
        .await
        .unwrap();
    assert_eq!(server.count("/token"), 1);
    assert_eq!(store.saves(), 1);
    let saved = store.token().unwrap();
    assert_eq!(saved.refresh_token().unwrap().expose_secret(), "RT-rotated");
    assert_eq!(saved.access_token().expose_secret(), "AT-new");
}

#[tokio::test]
async fn a_valid_stored_token_is_used_without_a_request() {
    let server = TestServer::start(|r: &Logged| {
        if bearer(r).as_deref() == Some("AT-saved") {
            Reply::json(200, "{}")
        } else {
            Reply::status(401)
        }
    })
    .await;
    let stored = Token::new(secret("AT-saved")).with_lifetime(Duration::from_secs(3600));
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth_with(
            refresh_flow(&server),
            TokenOptions::default().store(Arc::new(MemoryTokenStore::with_token(stored))),
        ))
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
        .await
        .unwrap();
    assert_eq!(server.count("/token"), 0);
}

#[tokio::test]
async fn client_credentials_post_with_basic_auth() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/token" {
            // "client-2:secret-2" in Basic form.
            let ok = r.header("authorization") == Some("Basic Y2xpZW50LTI6c2VjcmV0LTI=")
                && r.param("grant_type").as_deref() == Some("client_credentials")
                && r.param("scope").as_deref() == Some("a b")
                && r.param("client_secret").is_none();
            if ok {
                Reply::json(200, r#"{"access_token":"AT-cc","expires_in":"3600"}"#)
            } else {
                Reply::status(400)
            }
        } else if bearer(r).as_deref() == Some("AT-cc") {
            Reply::json(200, "{}")
        } else {
            Reply::status(401)
        }
    })
    .await;
    let flow = ClientCredentialsFlow::new(
        server.url("/token").parse().unwrap(),
        "client-2",
        secret("secret-2"),
    )
    .client_auth(ClientAuthMethod::BasicAuth)
    .scopes(["a", "b"]);
    let client = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::oauth(flow))
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/api", RequestOptions::new("api"))
        .await
        .unwrap();
    let token = client.token().await.unwrap().unwrap();
    assert!(token.expires_at().is_some(), "string expires_in is read");
}

/// Marketo: a GET identity endpoint, and token errors inside HTTP 200.
struct MarketoLike;

impl ResponseClassifier for MarketoLike {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        if let Some(json) = r.json()
            && json["success"] == false
        {
            return match json["errors"][0]["code"].as_str() {
                Some("601" | "602") => Verdict::RefreshAuth(r.error(ErrorKind::Auth)),
                Some("606") => Verdict::Failure(r.error(ErrorKind::RateLimited {
                    retry_after: Some(Duration::from_millis(50)),
                })),
                _ => Verdict::Failure(r.error(ErrorKind::Permanent)),
            };
        }
        DefaultClassifier.classify(r)
    }
}

#[tokio::test]
async fn marketo_get_token_and_error_codes_in_200_bodies() {
    let issued = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let server = TestServer::start(move |r: &Logged| {
        if r.path() == "/identity/oauth/token" {
            assert_eq!(r.method, "GET");
            assert_eq!(r.param("client_secret").as_deref(), Some("mkto-secret"));
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::json(200, format!(r#"{{"access_token":"AT-{n}","token_type":"bearer","expires_in":3599,"scope":"x"}}"#));
        }
        let n = calls.fetch_add(1, Ordering::SeqCst);
        match n {
            // Token expired mid-run (602), then a rate limit (606), then data.
            0 => Reply::json(200, r#"{"success":false,"errors":[{"code":"602","message":"Access token expired"}]}"#),
            1 => Reply::json(200, r#"{"success":false,"errors":[{"code":"606","message":"Max rate limit exceeded"}]}"#),
            _ if bearer(r).as_deref() == Some("AT-2") => Reply::json(200, r#"{"success":true,"result":[{"id":1}]}"#),
            _ => Reply::json(200, r#"{"success":false,"errors":[{"code":"601","message":"Access token invalid"}]}"#),
        }
    })
    .await;
    let flow = ClientCredentialsFlow::new(
        server.url("/identity/oauth/token").parse().unwrap(),
        "mkto-id",
        secret("mkto-secret"),
    )
    .style(TokenRequestStyle::GetQuery);
    let client = HttpClient::builder("marketo")
        .base_url(server.base())
        .auth(Auth::oauth(flow))
        .classifier(MarketoLike)
        .build()
        .unwrap();
    let v: serde_json::Value = client
        .get_json("/rest/v1/leads.json", RequestOptions::new("leads.get"))
        .await
        .unwrap();
    assert_eq!(v["result"][0]["id"], 1);
    assert_eq!(server.count("/identity/oauth/token"), 2);
    let m = client.metrics().snapshot();
    assert_eq!(m.endpoint("marketo", "leads.get").unwrap().rate_limited, 1);
}

#[tokio::test]
async fn salesforce_jwt_bearer_assertion_is_signed_and_accepted() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/services/oauth2/token" {
            assert_eq!(r.param("grant_type").as_deref(), Some("urn:ietf:params:oauth:grant-type:jwt-bearer"));
            let assertion = r.param("assertion").unwrap();
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            let aud = format!("http://{}", r.header("host").unwrap());
            validation.set_audience(&[aud]);
            validation.set_issuer(&["consumer-key-1"]);
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
            match jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation) {
                Ok(data) if data.claims["sub"] == "user@example.com" => Reply::json(
                    200,
                    r#"{"access_token":"AT-jwt","instance_url":"https://na1.example.com","token_type":"Bearer","issued_at":"1700000000000"}"#,
                ),
                _ => Reply::json(400, r#"{"error":"invalid_grant","error_description":"invalid assertion"}"#),
            }
        } else if bearer(r).as_deref() == Some("AT-jwt") {
            Reply::json(200, "{}")
        } else {
            Reply::status(401)
        }
    })
    .await;
    let login: Url = server.base().parse().unwrap();
    let flow = JwtBearerFlow::salesforce(
        &login,
        "consumer-key-1",
        "user@example.com",
        &secret(PRIVATE_KEY),
    )
    .unwrap();
    let client = HttpClient::builder("salesforce")
        .base_url(server.base())
        .auth(Auth::oauth(flow))
        .build()
        .unwrap();
    client
        .get_json::<serde_json::Value>("/services/data/v59.0/limits", RequestOptions::new("limits"))
        .await
        .unwrap();
    let token = client.token().await.unwrap().unwrap();
    assert_eq!(
        token.extra("instance_url").and_then(|v| v.as_str()),
        Some("https://na1.example.com")
    );
    assert!(
        token.expires_at().is_none(),
        "Salesforce sends no expires_in: used until a 401"
    );
}

#[tokio::test]
async fn google_service_account_key_file_flow() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/token" {
            let assertion = r.param("assertion").unwrap();
            let header = jsonwebtoken::decode_header(&assertion).unwrap();
            assert_eq!(header.kid.as_deref(), Some("key-id-1"));
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            let token_uri = format!("http://{}/token", r.header("host").unwrap());
            validation.set_audience(&[token_uri]);
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation).unwrap();
            assert_eq!(data.claims["iss"], "sync@project.iam.gserviceaccount.com");
            assert_eq!(
                data.claims["scope"],
                "https://www.googleapis.com/auth/spreadsheets"
            );
            Reply::json(
                200,
                r#"{"access_token":"ya29.test","expires_in":3599,"token_type":"Bearer"}"#,
            )
        } else if bearer(r).as_deref() == Some("ya29.test") {
            Reply::json(200, r#"{"values":[["a"]]}"#)
        } else {
            Reply::status(401)
        }
    })
    .await;
    let key_json = serde_json::json!({
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "key-id-1",
        "private_key": PRIVATE_KEY,
        "client_email": "sync@project.iam.gserviceaccount.com",
        "client_id": "1234",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": server.url("/token"),
    })
    .to_string();
    let dir = std::env::temp_dir().join(format!("crm-http-sa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key.json");
    std::fs::write(&path, &key_json).unwrap();
    let key = ServiceAccountKey::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(key.client_email, "sync@project.iam.gserviceaccount.com");
    let flow = JwtBearerFlow::google_service_account(
        &key,
        ["https://www.googleapis.com/auth/spreadsheets"],
    )
    .unwrap();
    let client = HttpClient::builder("sheets")
        .base_url(server.base())
        .auth(Auth::oauth(flow))
        .build()
        .unwrap();
    let v: serde_json::Value = client
        .get_json(
            "/v4/spreadsheets/s/values/A1",
            RequestOptions::new("values.get"),
        )
        .await
        .unwrap();
    assert_eq!(v["values"][0][0], "a");

    // Malformed keys are rejected with a message that does not quote them.
    let err = ServiceAccountKey::from_json(
        r#"{"type":"authorized_user","private_key":"x","client_email":"e"}"#,
    )
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput);
    assert!(ServiceAccountKey::from_json("{not json").is_err());
    let bad_pem = serde_json::json!({"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","client_email":"e"});
    let key = ServiceAccountKey::from_json(&bad_pem.to_string()).unwrap();
    assert!(JwtBearerFlow::google_service_account(&key, ["s"]).is_err());
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let server = TestServer::start(|r: &Logged| {
        if r.path() == "/oauth/token" {
            let ok = r.param("grant_type").as_deref() == Some("authorization_code")
                && r.param("code").as_deref() == Some("code-123")
                && r.param("code_verifier").is_some_and(|v| v.len() >= 43)
                && r.param("redirect_uri").as_deref() == Some("http://127.0.0.1:9/callback");
            if ok {
                Reply::json(
                    200,
                    r#"{"access_token":"AT-code","refresh_token":"RT-code","expires_in":1800}"#,
                )
            } else {
                Reply::json(400, r#"{"error":"invalid_grant"}"#)
            }
        } else {
            Reply::status(404)
        }
    })
    .await;
    let flow = AuthorizationCodeFlow::new(
        "app-1",
        Url::parse("https://app.example.com/oauth/authorize").unwrap(),
        server.url("/oauth/token").parse().unwrap(),
        Url::parse("http://127.0.0.1:9/callback").unwrap(),
    )
    .client_secret(secret("app-secret"))
    .scopes(["crm.objects.contacts.read", "oauth"]);
    let req = flow.authorize_url();
    let query: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
    assert_eq!(get("response_type").as_deref(), Some("code"));
    assert_eq!(get("client_id").as_deref(), Some("app-1"));
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(get("state"), Some(req.state.clone()));
    assert_eq!(
        get("scope").as_deref(),
        Some("crm.objects.contacts.read oauth")
    );
    assert!(get("code_challenge").is_some_and(|c| c != req.pkce_verifier.secret().expose_secret()));
    // A second request gets a fresh state and verifier.
    assert_ne!(flow.authorize_url().state, req.state);

    let client = HttpClient::builder("hubspot").build().unwrap();
    let saved = req.pkce_verifier.secret().clone();
    let token = flow
        .exchange_code(&client, "code-123", PkceVerifier::new(saved))
        .await
        .unwrap();
    assert_eq!(token.access_token().expose_secret(), "AT-code");
    assert_eq!(token.refresh_token().unwrap().expose_secret(), "RT-code");
    let sent = server.log();
    assert_eq!(
        sent[0].param("code_verifier").as_deref(),
        Some(req.pkce_verifier.secret().expose_secret())
    );
    // The refresh flow that follows keeps the same endpoint and client.
    let _auth = Auth::oauth_with(
        flow.refresh_flow(token.refresh_token().unwrap().clone()),
        TokenOptions::default().initial_token(token),
    );

    let err = flow
        .exchange_code(&client, "wrong", PkceVerifier::new(secret("v")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
}

#[tokio::test]
async fn api_keys_in_header_and_query() {
    let server = TestServer::start(|r: &Logged| {
        let header_ok = r.header("x-api-key") == Some("key-in-header");
        let query_ok = r.param("api_token").as_deref() == Some("key-in-query")
            && r.param("start").as_deref() == Some("0");
        if header_ok || query_ok {
            Reply::json(200, "{}")
        } else {
            Reply::status(401)
        }
    })
    .await;
    let by_header = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::api_key_header("x-api-key", secret("key-in-header")).unwrap())
        .build()
        .unwrap();
    by_header
        .get_json::<serde_json::Value>("/v1/deals", RequestOptions::new("deals"))
        .await
        .unwrap();
    let by_query = HttpClient::builder("t")
        .base_url(server.base())
        .auth(Auth::api_key_query("api_token", secret("key-in-query")))
        .build()
        .unwrap();
    by_query
        .get_json::<serde_json::Value>("/v1/deals?start=0", RequestOptions::new("deals"))
        .await
        .unwrap();
    assert!(Auth::api_key_header("bad header", secret("k")).is_err());
}
