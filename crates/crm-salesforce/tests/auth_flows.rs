//! The OAuth flows of `src/auth.rs` end to end against the simulator on
//! 127.0.0.1, and the long-running request cap.
//!
//! The connector logs in at `http://localhost:{port}` while the simulator's
//! token responses name `http://127.0.0.1:{port}` as the `instance_url`: the
//! `Host` header of each logged request shows which one a call went to, so
//! the tests see that data calls use the token's instance, not the login host.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use crm_core::{Connector, ErrorKind};
use crm_http::reqwest;
use crm_salesforce::auth::{credentials_from_token, web_server_flow};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::auth::GrantType;
use crm_sim::store::Fields;
use crm_sim::{SimHandle, SimServer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use url::Url;

/// The test-only RSA key pair of crm-http's JWT tests.
const TEST_RSA_PRIVATE_PEM: &str =
    include_str!("../../crm-http/tests/fixtures/test_rsa_private.pem");

async fn start() -> SimHandle {
    let sim = SimServer::new(SalesforceSimulator::new(SalesforceSimConfig::default()))
        .start()
        .await
        .unwrap();
    sim.request_log().capture_header("host");
    sim
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn cred(sim: &SimHandle, key: &str) -> String {
    sim.credentials()[key].as_str().unwrap().to_owned()
}

/// The login host under another name than the instance the simulator's
/// token responses point to.
fn login_url(sim: &SimHandle) -> Url {
    Url::parse(&format!("http://localhost:{}", sim.addr().port())).unwrap()
}

fn login_host(sim: &SimHandle) -> LoginHost {
    LoginHost::MyDomain(login_url(sim))
}

fn instance_host(sim: &SimHandle) -> String {
    format!("127.0.0.1:{}", sim.addr().port())
}

fn seed_contacts(sim: &SimHandle, n: usize) {
    for i in 0..n {
        let f: Fields =
            json!({"LastName": format!("Lovelace {i}"), "Email": format!("ada{i}@example.com")})
                .as_object()
                .cloned()
                .unwrap();
        sim.context().store().create("Contact", f);
    }
}

fn connector(sim: &SimHandle, credentials: Credentials) -> SalesforceConnector {
    SalesforceConnector::new(
        SalesforceConfig::builder(login_host(sim), credentials)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// A query through the connector: every record seeded.
async fn query_contacts(sf: &SalesforceConnector) -> usize {
    let page = sf
        .client()
        .query("SELECT Id, LastName FROM Contact", false)
        .await
        .unwrap();
    assert_eq!(page.total_size as usize, page.records.len());
    page.records.len()
}

/// Token requests went to the login host, data calls (at least one) to the
/// token response's `instance_url`.
fn assert_hosts(sim: &SimHandle) {
    let login = format!("localhost:{}", sim.addr().port());
    let instance = instance_host(sim);
    let entries = sim.request_log().entries();
    let token_calls: Vec<_> = entries
        .iter()
        .filter(|r| r.path == "/services/oauth2/token")
        .collect();
    assert!(!token_calls.is_empty(), "no token request");
    for r in &token_calls {
        assert_eq!(r.header("host"), Some(login.as_str()), "token call {r:?}");
    }
    let data: Vec<_> = entries
        .iter()
        .filter(|r| r.path.starts_with("/services/data/"))
        .collect();
    assert!(!data.is_empty(), "no data call");
    for r in &data {
        assert_eq!(
            r.header("host"),
            Some(instance.as_str()),
            "data call {} {} did not go to the instance_url",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn jwt_bearer_flow_queries_the_instance_and_signs_a_new_assertion_after_expiry() {
    let sim = start().await;
    seed_contacts(&sim, 7);
    // The assertion must name the login host as its audience.
    sim.context()
        .auth()
        .set_jwt_audience(Some(login_url(&sim).origin().ascii_serialization()));
    let sf = connector(
        &sim,
        Credentials::JwtBearer {
            consumer_key: cred(&sim, "client_id"),
            username: cred(&sim, "username"),
            private_key_pem: secret(TEST_RSA_PRIVATE_PEM),
        },
    );
    assert_eq!(query_contacts(&sf).await, 7);
    let auth = sim.context().auth();
    assert_eq!(auth.grants(GrantType::JwtBearer), 1);
    assert_eq!(auth.grants(GrantType::RefreshToken), 0);

    // The session expires: one 401, one new assertion, the call goes through.
    auth.expire_all();
    assert_eq!(query_contacts(&sf).await, 7);
    assert_eq!(auth.grants(GrantType::JwtBearer), 2);
    assert_eq!(sim.request_log().count_status(401), 1);
    assert_hosts(&sim);
}

#[tokio::test]
async fn jwt_bearer_flow_rejects_an_unknown_consumer_key() {
    let sim = start().await;
    let sf = connector(
        &sim,
        Credentials::JwtBearer {
            consumer_key: "not-the-consumer-key".into(),
            username: cred(&sim, "username"),
            private_key_pem: secret(TEST_RSA_PRIVATE_PEM),
        },
    );
    let err = sf.check().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth, "{err}");
    assert_eq!(sim.context().auth().grants(GrantType::JwtBearer), 0);
    assert_eq!(
        sim.request_log()
            .count(|r| r.path.starts_with("/services/data/")),
        0
    );
}

#[test]
fn jwt_bearer_flow_rejects_a_key_that_is_not_rsa_pem() {
    let config = SalesforceConfig::builder(
        LoginHost::Production,
        Credentials::JwtBearer {
            consumer_key: "ck".into(),
            username: "u@example.com".into(),
            private_key_pem: secret(
                "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
            ),
        },
    )
    .build()
    .unwrap();
    let err = SalesforceConnector::new(config).err().unwrap();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput, "{err}");
}

#[tokio::test]
async fn client_credentials_flow_queries_the_instance_and_asks_again_after_expiry() {
    let sim = start().await;
    seed_contacts(&sim, 4);
    let sf = connector(
        &sim,
        Credentials::ClientCredentials {
            client_id: cred(&sim, "client_id"),
            client_secret: secret(&cred(&sim, "client_secret")),
        },
    );
    assert_eq!(query_contacts(&sf).await, 4);
    let auth = sim.context().auth();
    assert_eq!(auth.grants(GrantType::ClientCredentials), 1);

    auth.expire_all();
    assert_eq!(query_contacts(&sf).await, 4);
    assert_eq!(auth.grants(GrantType::ClientCredentials), 2);
    assert_eq!(sim.request_log().count_status(401), 1);
    assert_hosts(&sim);
}

#[tokio::test]
async fn client_credentials_flow_with_a_wrong_secret_is_an_auth_error() {
    let sim = start().await;
    let sf = connector(
        &sim,
        Credentials::ClientCredentials {
            client_id: cred(&sim, "client_id"),
            client_secret: secret("wrong-secret"),
        },
    );
    let err = sf.check().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("wrong-secret"), "{err}");
    assert_eq!(sim.context().auth().grants(GrantType::ClientCredentials), 0);
}

/// Follows an authorization URL to the simulator's `/authorize` (which
/// consents at once) and returns the redirect's query parameters.
async fn authorize(url: &Url) -> Vec<(String, String)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::FOUND);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap();
    let location = Url::parse(location).unwrap();
    assert_eq!(
        location.as_str().split('?').next(),
        Some("http://127.0.0.1:9/oauth/callback"),
        "redirected to the registered redirect URL"
    );
    location.query_pairs().into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn web_server_flow_with_pkce_ends_in_a_working_refresh_token_connector() {
    let sim = start().await;
    seed_contacts(&sim, 3);
    let client_id = cred(&sim, "client_id");
    let client_secret = secret(&cred(&sim, "client_secret"));
    // Never contacted: the redirect is read, not followed.
    let redirect = Url::parse("http://127.0.0.1:9/oauth/callback").unwrap();
    let flow = web_server_flow(
        &login_host(&sim),
        client_id.clone(),
        Some(client_secret.clone()),
        redirect.clone(),
    );

    // The authorization URL: the login host's authorize endpoint, with the
    // client, the redirect, the scopes, a state and an S256 challenge.
    let req = flow.authorize_url();
    let expected_prefix = format!("{}services/oauth2/authorize?", login_url(&sim));
    assert!(
        req.url.as_str().starts_with(&expected_prefix),
        "{}",
        req.url
    );
    let q: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
    assert_eq!(param(&q, "response_type"), Some("code"));
    assert_eq!(param(&q, "client_id"), Some(client_id.as_str()));
    assert_eq!(param(&q, "redirect_uri"), Some(redirect.as_str()));
    assert_eq!(param(&q, "scope"), Some("api refresh_token"));
    assert_eq!(param(&q, "code_challenge_method"), Some("S256"));
    assert!(param(&q, "code_challenge").is_some_and(|c| c.len() >= 43));
    assert_eq!(param(&q, "state"), Some(req.state.as_str()));
    assert!(req.state.len() >= 16);
    // A fresh request has a fresh state and challenge.
    let other = flow.authorize_url();
    assert_ne!(other.state, req.state);
    let other_q: Vec<(String, String)> = other.url.query_pairs().into_owned().collect();
    assert_ne!(
        param(&other_q, "code_challenge"),
        param(&q, "code_challenge")
    );

    // The user consents; the redirect carries the code and our state.
    let back = authorize(&req.url).await;
    assert_eq!(param(&back, "state"), Some(req.state.as_str()));
    let code = param(&back, "code").unwrap().to_owned();

    // The code exchange with the verifier.
    let http = crm_http::HttpClient::builder("salesforce").build().unwrap();
    let token = flow
        .exchange_code(&http, &code, req.pkce_verifier)
        .await
        .unwrap();
    let (credentials, instance) =
        credentials_from_token(&token, client_id.clone(), Some(client_secret.clone())).unwrap();
    assert_eq!(
        instance.as_str().trim_end_matches('/'),
        sim.base_url(),
        "the instance_url of the token response"
    );
    let Credentials::RefreshToken {
        client_id: got_id,
        refresh_token,
        ..
    } = &credentials
    else {
        panic!("expected refresh-token credentials, got {credentials:?}");
    };
    assert_eq!(got_id, &client_id);
    assert_ne!(
        refresh_token.expose_secret(),
        cred(&sim, "refresh_token"),
        "the refresh token issued by the exchange, not the simulator's preset one"
    );
    let auth = sim.context().auth();
    assert_eq!(auth.grants(GrantType::AuthorizationCode), 1);

    // The code is single-use.
    let replay = flow
        .exchange_code(&http, &code, flow.authorize_url().pkce_verifier)
        .await
        .unwrap_err();
    assert_eq!(replay.kind(), &ErrorKind::Auth, "{replay}");

    // The connector runs on the exchanged refresh token, against the instance.
    let sf = connector(&sim, credentials);
    assert_eq!(query_contacts(&sf).await, 3);
    assert_eq!(auth.grants(GrantType::RefreshToken), 1);
    assert_eq!(auth.grants(GrantType::AuthorizationCode), 1);
    assert_hosts(&sim);
}

#[tokio::test]
async fn web_server_flow_rejects_a_code_exchanged_with_another_requests_verifier() {
    let sim = start().await;
    let redirect = Url::parse("http://127.0.0.1:9/oauth/callback").unwrap();
    let flow = web_server_flow(
        &login_host(&sim),
        cred(&sim, "client_id"),
        Some(secret(&cred(&sim, "client_secret"))),
        redirect,
    );
    let req = flow.authorize_url();
    let back = authorize(&req.url).await;
    let code = param(&back, "code").unwrap().to_owned();
    let http = crm_http::HttpClient::builder("salesforce").build().unwrap();
    let wrong = flow.authorize_url().pkce_verifier;
    let err = flow.exchange_code(&http, &code, wrong).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth, "{err}");
    assert_eq!(sim.context().auth().grants(GrantType::AuthorizationCode), 0);
}

#[tokio::test]
async fn credentials_from_token_needs_a_refresh_token_and_an_instance_url() {
    let sim = start().await;
    let http = crm_http::HttpClient::builder("salesforce").build().unwrap();
    let flow = web_server_flow(
        &login_host(&sim),
        cred(&sim, "client_id"),
        Some(secret(&cred(&sim, "client_secret"))),
        Url::parse("http://127.0.0.1:9/oauth/callback").unwrap(),
    );
    let req = flow.authorize_url();
    let code = param(&authorize(&req.url).await, "code")
        .unwrap()
        .to_owned();
    let token = flow
        .exchange_code(&http, &code, req.pkce_verifier)
        .await
        .unwrap();
    assert!(token.extra("instance_url").is_some());
    // Without the refresh token (no `refresh_token` scope granted).
    let mut bare = crm_http::Token::new(token.access_token().clone());
    for (k, v) in token.extras() {
        bare = bare.with_extra(k.clone(), v.clone());
    }
    let err = credentials_from_token(&bare, "cid", None).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
    // Without the instance URL.
    let no_instance = crm_http::Token::new(token.access_token().clone())
        .with_refresh_token(token.refresh_token().unwrap().clone());
    let err = credentials_from_token(&no_instance, "cid", None).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Auth);
}

/// `max_long_running` caps the Bulk result downloads in flight: eight
/// workers downloading at once, each download slowed to 150 ms, never have
/// more than two downloads open on the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_running_requests_stay_within_max_long_running() {
    let sim = start().await;
    seed_contacts(&sim, 300);
    let creds = sim.credentials();
    let sf = SalesforceConnector::new(
        SalesforceConfig::builder(
            LoginHost::MyDomain(Url::parse(sim.base_url()).unwrap()),
            Credentials::RefreshToken {
                client_id: creds["client_id"].as_str().unwrap().into(),
                client_secret: Some(secret(creds["client_secret"].as_str().unwrap())),
                refresh_token: secret(creds["refresh_token"].as_str().unwrap()),
            },
        )
        .bulk_poll((Duration::from_millis(5), Duration::from_millis(20)))
        .max_long_running(2)
        .max_in_flight(10)
        .build()
        .unwrap(),
    )
    .unwrap();
    let client = sf.client().clone();
    let job = client
        .create_query_job("SELECT Id, LastName FROM Contact", false)
        .await
        .unwrap();
    client.wait_for_job(&job.id, false).await.unwrap();
    sim.context().faults().set_plan(
        crm_sim::FaultPlan::new(1).rule(
            crm_sim::FaultRule::new(crm_sim::Fault::Slow { delay_ms: 150 })
                .path_prefix("/services/data/v59.0/jobs/query/"),
        ),
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let job = job.id.clone();
            tokio::spawn(async move {
                let (csv, _) = client.query_job_results(&job, None, 100).await.unwrap();
                csv.lines().count()
            })
        })
        .collect();
    for w in futures_util::future::join_all(workers).await {
        assert_eq!(w.unwrap(), 101, "a header and 100 rows");
    }

    // The most result downloads the simulator had open at one time.
    let mut events: Vec<(Duration, i32)> = sim
        .request_log()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/results"))
        .flat_map(|r| [(r.at, 1), (r.at + r.elapsed, -1)])
        .collect();
    assert_eq!(events.len(), 16);
    // At equal times a download ends before the next one starts.
    events.sort();
    let (mut open, mut most) = (0, 0);
    for (_, d) in events {
        open += d;
        most = most.max(open);
    }
    assert_eq!(most, 2, "max_long_running = 2");
}
