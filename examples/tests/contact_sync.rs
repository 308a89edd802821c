//! The HubSpot <-> Salesforce contact sync (`hubspot_salesforce_sync`)
//! against both simulators, with the state in an SQLite file: rounds of
//! edits on both sides converge, conflicts are decided by `newest_wins` and
//! audited, a round without edits sends no write to either side, and the
//! manual job title waits until `BidiSync::resolve_conflict`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use crm_examples::contact_sync::{self, Contact, contact};
use crm_sql::state::{CredentialKey, ReviewReason};
use crm_sync::bidi::Pick;
use indexmap::IndexMap;

type Side = BTreeMap<String, (String, Contact)>;

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn values(side: &Side) -> BTreeMap<String, Contact> {
    side.iter()
        .map(|(e, (_, c))| (e.clone(), c.clone()))
        .collect()
}

/// The same contacts with the same mapped values on both sides.
fn assert_converged(hs: &Side, sf: &Side) {
    assert_eq!(values(hs), values(sf), "HubSpot and Salesforce differ");
}

fn person(email: &str, first: &str, last: &str, title: &str) -> Contact {
    contact(&[
        ("email", email),
        ("firstname", first),
        ("lastname", last),
        ("phone", "+14155550100"),
        ("jobtitle", title),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_converge_conflicts_are_audited_and_idle_rounds_write_nothing() {
    let sims = contact_sync::start_simulators().await.unwrap();
    let hubspot = contact_sync::hubspot_client(&sims.hubspot).unwrap();
    let salesforce = contact_sync::salesforce_client(&sims.salesforce).unwrap();
    // Other clients stand for the people editing each side.
    let hs_editor = contact_sync::hubspot_client(&sims.hubspot).unwrap();
    let sf_editor = contact_sync::salesforce_client(&sims.salesforce).unwrap();
    let dir = Dir(std::env::temp_dir().join(format!(
        "crm-examples-contact-sync-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let state = dir.0.join("state.db");
    let store = contact_sync::open_store(&state, CredentialKey::generate().0)
        .await
        .unwrap();
    let sync = contact_sync::open_sync(&hubspot, &salesforce, &store)
        .await
        .unwrap();

    // Before the first sync: three contacts in HubSpot, two in Salesforce,
    // and one person entered on both sides with the same email.
    for i in 0..3 {
        contact_sync::create_in_hubspot(
            &hs_editor,
            &person(
                &format!("hs{i}@example.com"),
                "Hana",
                &format!("Hub{i}"),
                "Buyer",
            ),
        )
        .await
        .unwrap();
    }
    for i in 0..2 {
        contact_sync::create_in_salesforce(
            &sf_editor,
            &person(
                &format!("sf{i}@example.com"),
                "Sam",
                &format!("Force{i}"),
                "CFO",
            ),
        )
        .await
        .unwrap();
    }
    contact_sync::create_in_hubspot(&hs_editor, &person("both@example.com", "Bo", "Both", "CTO"))
        .await
        .unwrap();
    contact_sync::create_in_salesforce(
        &sf_editor,
        &person("both@example.com", "Bo", "Both", "CTO"),
    )
    .await
    .unwrap();

    let first = sync.round().await.unwrap();
    assert_eq!(first.created_crm, 3, "{first:?}");
    assert_eq!(first.created_platform, 2, "{first:?}");
    assert_eq!(first.rejected, 0, "{first:?}");
    let hs = contact_sync::hubspot_contacts(&hs_editor).await.unwrap();
    let sf = contact_sync::salesforce_contacts(&sf_editor).await.unwrap();
    assert_eq!(hs.len(), 6, "the pair created on both sides is one contact");
    assert_converged(&hs, &sf);
    // New Salesforce Contacts were created with the email as external id.
    let sf_store = sims.salesforce.context().store();
    let hs0 = sf_store
        .get_live(
            "Contact",
            &crm_core::RecordId::new(sf["hs0@example.com"].0.clone()),
        )
        .unwrap();
    assert_eq!(hs0.fields["External_Id__c"], "hs0@example.com");

    // Round 2: edits on one side, on both sides, and a new contact on each.
    contact_sync::edit_in_hubspot(&hs_editor, &hs["hs1@example.com"].0, &[("lastname", "Lee")])
        .await
        .unwrap();
    contact_sync::edit_in_hubspot(&hs_editor, &hs["sf0@example.com"].0, &[("firstname", "Hs")])
        .await
        .unwrap();
    contact_sync::edit_in_hubspot(
        &hs_editor,
        &hs["both@example.com"].0,
        &[("jobtitle", "CEO")],
    )
    .await
    .unwrap();
    contact_sync::create_in_hubspot(&hs_editor, &person("new-hs@example.com", "N", "Ew", "Dev"))
        .await
        .unwrap();
    // Salesforce edits after HubSpot's: newer.
    tokio::time::sleep(Duration::from_millis(30)).await;
    contact_sync::edit_in_salesforce(
        &sf_editor,
        &sf["hs2@example.com"].0,
        &[("phone", "+14155550199")],
    )
    .await
    .unwrap();
    contact_sync::edit_in_salesforce(&sf_editor, &sf["sf0@example.com"].0, &[("firstname", "Sf")])
        .await
        .unwrap();
    contact_sync::edit_in_salesforce(
        &sf_editor,
        &sf["both@example.com"].0,
        &[("jobtitle", "Chair")],
    )
    .await
    .unwrap();
    contact_sync::create_in_salesforce(&sf_editor, &person("new-sf@example.com", "N", "Ew", "QA"))
        .await
        .unwrap();

    let second = sync.round().await.unwrap();
    assert_eq!(second.created_crm, 1, "{second:?}");
    assert_eq!(second.created_platform, 1, "{second:?}");
    assert_eq!(second.conflicts_resolved, 1, "{second:?}");
    assert_eq!(second.sent_to_review, 1, "{second:?}");
    assert_eq!(second.rejected, 0, "{second:?}");
    let hs = contact_sync::hubspot_contacts(&hs_editor).await.unwrap();
    let sf = contact_sync::salesforce_contacts(&sf_editor).await.unwrap();
    assert_eq!(hs.len(), 8);
    assert_eq!(hs["hs1@example.com"].1["lastname"], "Lee");
    assert_eq!(sf["hs1@example.com"].1["lastname"], "Lee");
    assert_eq!(hs["hs2@example.com"].1["phone"], "+14155550199");
    // Both sides changed the first name: Salesforce's edit is newer.
    assert_eq!(hs["sf0@example.com"].1["firstname"], "Sf");
    assert_eq!(sf["sf0@example.com"].1["firstname"], "Sf");
    // The manual job title is left alone on both sides.
    assert_eq!(hs["both@example.com"].1["jobtitle"], "CEO");
    assert_eq!(sf["both@example.com"].1["jobtitle"], "Chair");
    let without_title = |side: &Side| {
        let mut v = values(side);
        v.get_mut("both@example.com").unwrap().remove("jobtitle");
        v
    };
    assert_eq!(without_title(&hs), without_title(&sf));

    // The decision is in the audit log (kept under the HubSpot id).
    let audit = store
        .audit_log(contact_sync::SYNC_NAME, &hs["sf0@example.com"].0, 100)
        .await
        .unwrap();
    let decisions: Vec<&serde_json::Value> = audit
        .iter()
        .filter_map(|e| e.new_values.as_ref())
        .flat_map(|v| v["decisions"].as_array().into_iter().flatten())
        .filter(|d| d["field"] == "firstname")
        .collect();
    assert_eq!(decisions.len(), 1, "{audit:?}");
    assert_eq!(decisions[0]["policy"], "newest_wins", "{}", decisions[0]);
    assert_eq!(decisions[0]["reason"], "target_newer", "{}", decisions[0]);
    assert!(audit.iter().any(|e| e.actor == "sync:contacts"));

    // A round with no edits writes nothing anywhere.
    let (hs_seq, sf_seq) = (
        sims.hubspot.request_log().len(),
        sims.salesforce.request_log().len(),
    );
    let idle = sync.round().await.unwrap();
    assert_eq!(idle.writes(), 0, "{idle:?}");
    assert_eq!(contact_sync::write_calls(&sims.hubspot, hs_seq), 0);
    assert_eq!(contact_sync::write_calls(&sims.salesforce, sf_seq), 0);
    assert!(
        sims.salesforce.request_log().len() > sf_seq,
        "the idle round did read Salesforce"
    );

    // A person settles the job title: Salesforce's value.
    let reviews = store.open_reviews(10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reason, ReviewReason::ManualConflict);
    assert_eq!(reviews[0].record_id, hs["both@example.com"].0);
    let mut picks = IndexMap::new();
    picks.insert(contact_sync::MANUAL_FIELD.to_owned(), Pick::Crm);
    sync.resolve_conflict(&reviews[0].id, &picks, "reviewer@example.com")
        .await
        .unwrap();
    assert!(store.open_reviews(10).await.unwrap().is_empty());
    let hs = contact_sync::hubspot_contacts(&hs_editor).await.unwrap();
    let sf = contact_sync::salesforce_contacts(&sf_editor).await.unwrap();
    assert_eq!(hs["both@example.com"].1["jobtitle"], "Chair");
    assert_converged(&hs, &sf);
    let audit = store
        .audit_log(contact_sync::SYNC_NAME, &hs["both@example.com"].0, 100)
        .await
        .unwrap();
    let by_reviewer = audit
        .iter()
        .find(|e| e.actor == "reviewer@example.com")
        .expect("the resolution is audited with the reviewer");
    assert_eq!(by_reviewer.action, "resolve_conflict");

    // Settled: the next round finds nothing to write either.
    let (hs_seq, sf_seq) = (
        sims.hubspot.request_log().len(),
        sims.salesforce.request_log().len(),
    );
    let after = sync.round().await.unwrap();
    assert_eq!(after.writes(), 0, "{after:?}");
    assert_eq!(after.sent_to_review, 0, "{after:?}");
    assert_eq!(contact_sync::write_calls(&sims.hubspot, hs_seq), 0);
    assert_eq!(contact_sync::write_calls(&sims.salesforce, sf_seq), 0);
    store.close().await;
}
