//! The webhook receiver: HubSpot (v3 signatures), Pipedrive (basic auth)
//! and seed 001's signed customer endpoint, writing each processed event
//! into the `crm_webhook_records` table of an SQLite file.
//!
//! ```text
//! cargo run -p crm-examples --example webhook_receiver -- [--db PATH] [--serve]
//! ```
//!
//! It listens on 127.0.0.1 (a free port) and sends itself a few
//! deliveries from the HubSpot and Pipedrive simulators and one customer
//! event, then prints the table. With `--serve` it goes on serving until
//! Ctrl-C, so you can `curl` it. The secrets come from
//! `HUBSPOT_CLIENT_SECRET`, `PIPEDRIVE_WEBHOOK_USER`,
//! `PIPEDRIVE_WEBHOOK_PASSWORD` and `CUSTOMER_WEBHOOK_SECRET`, defaulting
//! to the simulators' demo values. The database defaults to
//! `webhooks.db` in the system's temporary directory.
#![allow(clippy::print_stdout)] // A command-line app: printing is its output.

use std::path::PathBuf;
use std::time::Duration;

use crm_examples::webhook_receiver::{self, WebhookSecrets};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_hubspot::wire::WebhookEvent;
use crm_pipedrive::ObjectKind;
use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator};
use crm_sim::SimServer;
use crm_sql::state::CredentialKey;
use secrecy::SecretString;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.iter().any(|a| a == "--serve");
    let db = match args.iter().position(|a| a == "--db") {
        Some(i) => PathBuf::from(args.get(i + 1).ok_or("--db needs a path")?),
        None => std::env::temp_dir().join("webhooks.db"),
    };
    let hs_config = HubSpotSimConfig::default();
    let pd_config = PipedriveSimConfig::default();
    let secrets = WebhookSecrets {
        hubspot_client_secret: SecretString::from(env_or(
            "HUBSPOT_CLIENT_SECRET",
            &hs_config.client_secret,
        )),
        pipedrive_user: env_or("PIPEDRIVE_WEBHOOK_USER", &pd_config.webhook_user),
        pipedrive_password: SecretString::from(env_or(
            "PIPEDRIVE_WEBHOOK_PASSWORD",
            &pd_config.webhook_password,
        )),
        customer_secret: SecretString::from(env_or("CUSTOMER_WEBHOOK_SECRET", "customer-secret")),
    };

    let url = webhook_receiver::sqlite_url(&db);
    // The queue only holds event ids; no credentials are stored.
    let receiver =
        webhook_receiver::start("127.0.0.1:0", &url, CredentialKey::generate().0, &secrets).await?;
    println!("listening on http://{}", receiver.addr());
    println!(
        "writing into {} of {}",
        webhook_receiver::TABLE,
        db.display()
    );

    // HubSpot: a contact's email changed, delivered (signed with v3) by the
    // simulator to the receiver.
    let hs_secret = hs_config.client_secret.clone();
    let hubspot = SimServer::new(HubSpotSimulator::new(hs_config))
        .start()
        .await?;
    hubspot
        .context()
        .webhooks()
        .subscribe(&receiver.url("/webhooks/hubspot"));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let event = WebhookEvent {
        event_id: u64::try_from(now_ms).unwrap_or_default(),
        subscription_id: 11,
        portal_id: 62515,
        app_id: 1,
        occurred_at: now_ms,
        subscription_type: "contact.propertyChange".into(),
        attempt_number: 0,
        object_id: 501,
        property_name: Some("email".into()),
        property_value: Some("ada@example.com".into()),
        change_source: Some("CRM_UI".into()),
        change_flag: None,
        primary_object_id: None,
        merged_object_ids: None,
    };
    for d in crm_hubspot::sim::send_webhook(hubspot.context(), &hs_secret, &[event]).await {
        println!("HubSpot delivery: {:?}", d.status);
    }

    // Pipedrive: a person added, delivered with basic auth.
    let pd_sim = PipedriveSimulator::new(pd_config);
    let pipedrive = SimServer::new(pd_sim.clone()).start().await?;
    pipedrive
        .context()
        .webhooks()
        .subscribe(&receiver.url("/webhooks/pipedrive"));
    let mut person = crm_sim::store::Fields::new();
    person.insert("name".into(), "Grace Hopper".into());
    let person = pipedrive.context().store().create("persons", person);
    let statuses = pd_sim
        .send_webhook(
            pipedrive.context(),
            ObjectKind::Persons,
            "added",
            &person.id,
        )
        .await;
    println!("Pipedrive delivery: {statuses:?}");

    // The customer endpoint: the platform's own signed event, sent with
    // the same HTTP sender the simulators use.
    let body = serde_json::json!({
        "event_type": "customer.created",
        "data": {"id": "cust-1", "email": "alan@example.com", "plan": "pro"},
    })
    .to_string();
    let headers = webhook_receiver::customer_headers(
        &secrets.customer_secret,
        body.as_bytes(),
        Some(chrono::Utc::now().timestamp()),
        Some("evt-1"),
    );
    for d in hubspot
        .context()
        .webhooks()
        .send(
            &receiver.url("/webhooks/crm/customer"),
            &headers,
            body.as_bytes(),
        )
        .await
    {
        println!("customer delivery: {:?}", d.status);
    }

    let totals = receiver.wait_idle(Duration::from_secs(10)).await?;
    println!(
        "{} events processed, {} rows written, {} failed",
        totals.processed, totals.written, totals.failed
    );
    for row in receiver.rows().await? {
        println!(
            "  {:<32} deleted={} fields={}",
            row.record_key, row.deleted, row.fields
        );
    }

    if serve {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    receiver.stop().await?;
    Ok(())
}
