//! The webhook receiver app (`webhook_receiver`) over real HTTP, with the
//! queue and the records table in an SQLite file: valid HubSpot, Pipedrive
//! and customer deliveries are accepted and land in the table once, tampered
//! and stale ones are refused with 401, and a replayed one is accepted but
//! not processed again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use crm_examples::webhook_receiver::{self, Running, WebhookSecrets};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, sign_delivery};
use crm_hubspot::wire::WebhookEvent;
use crm_pipedrive::ObjectKind;
use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator};
use crm_pipedrive::webhook::basic_auth_header;
use crm_sim::SimServer;
use crm_sql::state::CredentialKey;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value as Json, json};

const CUSTOMER_SECRET: &str = "customer-shared-secret";

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn answer(resp: reqwest::Response) -> (u16, Json) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, Json) {
    let mut req = c.post(url).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    answer(req.send().await.unwrap()).await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hubspot_event(event_id: u64, object_id: u64, email: &str) -> WebhookEvent {
    serde_json::from_value(json!({
        "eventId": event_id, "subscriptionId": 11, "portalId": 62515, "appId": 1,
        "occurredAt": now_ms(), "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": object_id,
        "propertyName": "email", "propertyValue": email
    }))
    .unwrap()
}

fn pipedrive_body(event_uuid: &str, person: u64, name: &str) -> String {
    json!({
        "data": {"id": person, "name": name},
        "previous": null,
        "meta": {"action": "create", "entity": "person", "entity_id": person.to_string(),
                 "id": event_uuid, "timestamp": "2026-01-01T00:00:00Z", "version": "2.0", "attempt": 1}
    })
    .to_string()
}

fn customer_body(id: &str, name: &str) -> String {
    json!({"event_type": "customer.created", "data": {"id": id, "name": name}}).to_string()
}

async fn keys(rx: &Running) -> Vec<String> {
    let mut k: Vec<String> = rx
        .rows()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record_key)
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_deliveries_land_once_tampered_and_stale_get_401_replays_are_not_reprocessed() {
    let hs_config = HubSpotSimConfig::default();
    let pd_config = PipedriveSimConfig::default();
    let hs_secret = hs_config.client_secret.clone();
    let secrets = WebhookSecrets {
        hubspot_client_secret: SecretString::from(hs_secret.clone()),
        pipedrive_user: pd_config.webhook_user.clone(),
        pipedrive_password: SecretString::from(pd_config.webhook_password.clone()),
        customer_secret: SecretString::from(CUSTOMER_SECRET.to_owned()),
    };
    let dir = Dir(std::env::temp_dir().join(format!(
        "crm-examples-webhooks-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = webhook_receiver::sqlite_url(&dir.0.join("webhooks.db"));
    let rx = webhook_receiver::start("127.0.0.1:0", &db, CredentialKey::generate().0, &secrets)
        .await
        .unwrap();
    assert!(rx.addr().ip().is_loopback());
    let c = reqwest::Client::new();

    // HubSpot, signed by hand with the v3 scheme.
    let hs_url = rx.url("/webhooks/hubspot");
    let body = serde_json::to_string(&[hubspot_event(1001, 42, "ann@example.com")]).unwrap();
    let signed = sign_delivery(&hs_secret, &hs_url, body.as_bytes(), now_ms());
    let (status, json) = post(&c, &hs_url, &signed, &body).await;
    assert_eq!((status, json["queued"].clone()), (202, json!(1)), "{json}");
    // Tampered: the signature is of another body.
    let tampered = body.replace("ann@example.com", "eve@example.com");
    assert_eq!(post(&c, &hs_url, &signed, &tampered).await.0, 401);
    // Stale: correctly signed, six minutes old.
    let stale_body = serde_json::to_string(&[hubspot_event(1002, 43, "bo@example.com")]).unwrap();
    let stale = sign_delivery(
        &hs_secret,
        &hs_url,
        stale_body.as_bytes(),
        now_ms() - 6 * 60 * 1000,
    );
    assert_eq!(post(&c, &hs_url, &stale, &stale_body).await.0, 401);
    // Replayed inside the window: accepted, nothing queued.
    let (status, json) = post(&c, &hs_url, &signed, &body).await;
    assert_eq!(
        (status, json["duplicates"].clone()),
        (202, json!(1)),
        "{json}"
    );

    // HubSpot, sent by the simulator's webhook sender.
    let hubspot = SimServer::new(HubSpotSimulator::new(hs_config))
        .start()
        .await
        .unwrap();
    hubspot.context().webhooks().subscribe(&hs_url);
    let sent = crm_hubspot::sim::send_webhook(
        hubspot.context(),
        &hs_secret,
        &[hubspot_event(1003, 44, "cy@example.com")],
    )
    .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, Some(202));

    // Pipedrive, sent by the simulator with its basic auth.
    let pd_sim = PipedriveSimulator::new(pd_config.clone());
    let pipedrive = SimServer::new(pd_sim.clone()).start().await.unwrap();
    let pd_url = rx.url("/webhooks/pipedrive");
    pipedrive.context().webhooks().subscribe(&pd_url);
    let mut fields = crm_sim::store::Fields::new();
    fields.insert("name".into(), json!("Grace Hopper"));
    let person = pipedrive.context().store().create("persons", fields);
    let statuses = pd_sim
        .send_webhook(
            pipedrive.context(),
            ObjectKind::Persons,
            "added",
            &person.id,
        )
        .await;
    assert_eq!(statuses, vec![Some(202)]);
    // Pipedrive, by hand: good credentials, then wrong ones, then a replay.
    let pd_body = pipedrive_body("9c1e7a40-0000-4000-8000-000000000001", 5, "Ann");
    let auth = |password: &str| {
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "authorization".to_owned(),
                basic_auth_header(&pd_config.webhook_user, password),
            ),
        ]
    };
    let good = auth(&pd_config.webhook_password);
    let (status, json) = post(&c, &pd_url, &good, &pd_body).await;
    assert_eq!((status, json["queued"].clone()), (202, json!(1)), "{json}");
    assert_eq!(post(&c, &pd_url, &auth("guess"), &pd_body).await.0, 401);
    assert_eq!(post(&c, &pd_url, &good[..1], &pd_body).await.0, 401);
    let (status, json) = post(&c, &pd_url, &good, &pd_body).await;
    assert_eq!(
        (status, json["duplicates"].clone()),
        (202, json!(1)),
        "{json}"
    );

    // The customer endpoint, HMAC-signed with a timestamp.
    let cu_url = rx.url("/webhooks/crm/customer");
    let secret = SecretString::from(CUSTOMER_SECRET.to_owned());
    let cu_body = customer_body("c-1", "Ann");
    let now = chrono::Utc::now().timestamp();
    let cu_signed =
        webhook_receiver::customer_headers(&secret, cu_body.as_bytes(), Some(now), None);
    let (status, json) = post(&c, &cu_url, &cu_signed, &cu_body).await;
    assert_eq!((status, json["queued"].clone()), (202, json!(1)), "{json}");
    let cu_tampered = customer_body("c-1", "Eve");
    assert_eq!(post(&c, &cu_url, &cu_signed, &cu_tampered).await.0, 401);
    let wrong = webhook_receiver::customer_headers(
        &SecretString::from("not-the-secret".to_owned()),
        cu_body.as_bytes(),
        Some(now),
        None,
    );
    assert_eq!(post(&c, &cu_url, &wrong, &cu_body).await.0, 401);
    let cu_stale =
        webhook_receiver::customer_headers(&secret, cu_body.as_bytes(), Some(now - 6 * 60), None);
    assert_eq!(post(&c, &cu_url, &cu_stale, &cu_body).await.0, 401);
    let (status, json) = post(&c, &cu_url, &cu_signed, &cu_body).await;
    assert_eq!(
        (status, json["duplicates"].clone()),
        (202, json!(1)),
        "{json}"
    );
    assert!(!format!("{secrets:?}").contains(secret.expose_secret()));

    // Five events, five rows, each once.
    let totals = rx.wait_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!((totals.processed, totals.failed), (5, 0), "{totals:?}");
    assert_eq!(totals.written, 5, "{totals:?}");
    let rows = rx.rows().await.unwrap();
    let k = keys(&rx).await;
    assert_eq!(k.len(), 5, "{k:?}");
    for want in [
        "customer:customer:c-1",
        "hubspot:contacts:42",
        "hubspot:contacts:44",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} in {k:?}");
    }
    let pd_rows: Vec<_> = rows.iter().filter(|r| r.provider == "pipedrive").collect();
    assert_eq!(pd_rows.len(), 2, "{rows:?}");
    let mut pd_ids: Vec<&str> = pd_rows.iter().map(|r| r.record_id.as_str()).collect();
    pd_ids.sort_unstable();
    let mut want = vec!["5", person.id.as_str()];
    want.sort_unstable();
    assert_eq!(pd_ids, want);
    let ann = rows
        .iter()
        .find(|r| r.record_key == "hubspot:contacts:42")
        .unwrap();
    assert!(ann.fields.contains("ann@example.com"), "{ann:?}");
    assert!(!rows.iter().any(|r| r.fields.contains("eve@example.com")));

    // Replayed after processing (within HubSpot's window, and a late
    // customer redelivery): accepted, not processed again.
    let (status, json) = post(&c, &hs_url, &signed, &body).await;
    assert_eq!(
        (status, json["duplicates"].clone()),
        (202, json!(1)),
        "{json}"
    );
    let (status, json) = post(&c, &cu_url, &cu_signed, &cu_body).await;
    assert_eq!(
        (status, json["duplicates"].clone()),
        (202, json!(1)),
        "{json}"
    );
    let after = rx.wait_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(after, totals);
    assert_eq!(rx.rows().await.unwrap(), rows);

    rx.stop().await.unwrap();
}
