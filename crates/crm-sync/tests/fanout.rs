//! Seed 004's multi-CRM contacts against the HubSpot, Marketo and
//! Salesforce simulators: one call creates or updates a contact in all of
//! them, duplicates within a call are written once, a refusal at one CRM
//! leaves the others alone, and the unified view joins them by email.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crm_core::Record;
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_marketo::sim::{MarketoSimConfig, MarketoSimulator};
use crm_marketo::{LeadFullRead, Limits, Marketo, MarketoConfig};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::store::Deleted;
use crm_sim::{SimHandle, SimServer};
use crm_sync::fanout::{FanOut, Target, UnifiedFilter};
use secrecy::SecretString;
use serde_json::json;

struct Crms {
    hs_sim: SimHandle,
    mk_sim: SimHandle,
    sf_sim: SimHandle,
    hubspot: HubSpot,
    marketo: Marketo,
    salesforce: SalesforceConnector,
}

async fn crms() -> Crms {
    let hs_sim = SimServer::new(HubSpotSimulator::new(HubSpotSimConfig::default()))
        .start()
        .await
        .unwrap();
    let mk_sim = SimServer::new(MarketoSimulator::new(MarketoSimConfig::default()))
        .start()
        .await
        .unwrap();
    let sf_sim = SimServer::new(SalesforceSimulator::new(SalesforceSimConfig::default()))
        .start()
        .await
        .unwrap();
    let token = hs_sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let hubspot = HubSpot::new(
        HubSpotConfig::private_app(SecretString::from(token))
            .base_url(hs_sim.base_url())
            .rate_limits(RateLimits::new(1000, None, 100))
            .build()
            .unwrap(),
    )
    .unwrap();
    let mk = mk_sim.credentials();
    let marketo = Marketo::new(
        MarketoConfig::builder(
            mk_sim.base_url(),
            mk["client_id"].as_str().unwrap(),
            SecretString::from(mk["client_secret"].as_str().unwrap().to_owned()),
        )
        .limits(Limits::new(100, Duration::from_secs(20), 10, None))
        .lead_fields(["id", "email", "firstName", "lastName", "phone", "updatedAt"])
        // A small instance: read every lead by id ranges, no export jobs.
        .lead_full_read(LeadFullRead::IdScan)
        .build()
        .unwrap(),
    )
    .unwrap();
    let sf = sf_sim.credentials();
    let salesforce = SalesforceConnector::new(
        SalesforceConfig::builder(
            LoginHost::MyDomain(sf_sim.base_url().parse().unwrap()),
            Credentials::RefreshToken {
                client_id: sf["client_id"].as_str().unwrap().into(),
                client_secret: Some(SecretString::from(
                    sf["client_secret"].as_str().unwrap().to_owned(),
                )),
                refresh_token: SecretString::from(sf["refresh_token"].as_str().unwrap().to_owned()),
            },
        )
        .build()
        .unwrap(),
    )
    .unwrap();
    Crms {
        hs_sim,
        mk_sim,
        sf_sim,
        hubspot,
        marketo,
        salesforce,
    }
}

fn fan_out(c: &Crms) -> FanOut<'_> {
    FanOut::new("email")
        .target(Target::new(
            "hubspot",
            &c.hubspot,
            "contacts",
            crm_hubspot::mapping::contact_mapping(),
            "email",
        ))
        .target(Target::new(
            "marketo",
            &c.marketo,
            "leads",
            crm_marketo::mapping::lead_map(),
            "email",
        ))
        .target(
            Target::new(
                "salesforce",
                &c.salesforce,
                "Contact",
                crm_salesforce::mapping::contact_map(),
                "External_Id__c",
            )
            .key_from("email"),
        )
}

fn contact(email: &str, first: &str, last: &str) -> Record {
    Record::new()
        .with("email", email)
        .with("first_name", first)
        .with("last_name", last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_lands_in_every_crm_once_and_the_view_joins_them_by_email() {
    let c = crms().await;
    let crms = fan_out(&c);
    let batch = vec![
        contact("john@example.com", "john", "doe"),
        contact("ada@example.com", "ada", "lovelace"),
        // The same person again in the same call, with a phone: one write.
        contact("John@Example.com ", "john", "doe").with("phone", "+1 (415) 555-0100"),
        // No email: refused everywhere, the rest goes on.
        Record::new().with("first_name", "nobody"),
    ];
    let report = crms.upsert(&batch).await.unwrap();
    for t in ["hubspot", "marketo", "salesforce"] {
        let o = report.outcomes(t).unwrap();
        assert_eq!(o.len(), 4, "{t}");
        assert!(o[0].is_ok() && o[1].is_ok() && o[2].is_ok(), "{t}: {o:?}");
        assert!(!o[3].is_ok(), "{t}");
        assert_eq!(report.created(t), 3, "{t}: the duplicate shares the create");
    }
    assert_eq!(report.failures().len(), 3);
    assert_eq!(
        c.hs_sim
            .context()
            .store()
            .count("contacts", Deleted::Exclude),
        2
    );
    assert_eq!(
        c.sf_sim
            .context()
            .store()
            .count("Contact", Deleted::Exclude),
        2
    );

    // An update reaches every CRM; nothing is created.
    let upd = crms
        .update("ada@example.com", &Record::new().with("last_name", "king"))
        .await
        .unwrap();
    assert!(upd.all_ok(), "{:?}", upd.failures());
    for t in ["hubspot", "marketo", "salesforce"] {
        assert_eq!(upd.created(t), 0, "{t}");
    }
    assert_eq!(
        c.hs_sim
            .context()
            .store()
            .count("contacts", Deleted::Exclude),
        2
    );

    // A contact that only HubSpot knows.
    let only = FanOut::new("email").target(Target::new(
        "hubspot",
        &c.hubspot,
        "contacts",
        crm_hubspot::mapping::contact_mapping(),
        "email",
    ));
    assert!(
        only.upsert(&[contact("grace@example.com", "grace", "hopper")])
            .await
            .unwrap()
            .all_ok()
    );

    let view = crms.unified(&UnifiedFilter::all()).await.unwrap();
    assert!(view.skipped.is_empty(), "{:?}", view.skipped);
    let emails: Vec<&str> = view.contacts.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        ["ada@example.com", "grace@example.com", "john@example.com"]
    );
    let ada = &view.contacts[0];
    let mut systems = ada.systems();
    systems.sort_unstable();
    assert_eq!(systems, ["hubspot", "marketo", "salesforce"]);
    assert_eq!(
        ada.merged.text("last_name"),
        Some("King"),
        "INITCAP on the way"
    );
    let john = &view.contacts[2];
    assert_eq!(john.merged.text("phone"), Some("+14155550100"));
    assert_eq!(view.contacts[1].systems(), ["hubspot"]);

    // Seed 004's filter shape.
    let sf_only = crms
        .unified(&UnifiedFilter::from_json(&json!({"source_system": "salesforce"})).unwrap())
        .await
        .unwrap();
    assert_eq!(sf_only.contacts.len(), 2);
    let named = crms
        .unified(&UnifiedFilter::from_json(&json!({"last_name__contains": "lov"})).unwrap())
        .await
        .unwrap();
    assert!(named.contacts.is_empty(), "Lovelace became King");
    let doe = crms
        .unified(&UnifiedFilter::from_json(&json!({"last_name": "DOE"})).unwrap())
        .await
        .unwrap();
    assert_eq!(doe.contacts.len(), 1);
    assert!(UnifiedFilter::from_json(&json!({"lead_score__between": 1})).is_err());
    drop(c.mk_sim);
}
