//! HubSpot contacts <-> Salesforce Contacts, both ways, with the sync state
//! in an SQLite file: new contacts on either side are created on the
//! other, edits flow to the other side, a field edited on both sides goes
//! to the newest edit, and the job title waits for a person.
//!
//! ```text
//! cargo run -p crm-examples --example hubspot_salesforce_sync -- [--state PATH]
//! ```
//!
//! It runs against the HubSpot and Salesforce simulators, seeded with a few
//! contacts on each side, and prints each round's report. The state file
//! defaults to `hubspot-salesforce-state.db` in the system's temporary
//! directory and is started afresh on each run. For real accounts, build
//! the clients as `crm_examples::contact_sync::hubspot_client` and
//! `salesforce_client` do, with your private-app token and connected app.
#![allow(clippy::print_stdout)] // A command-line app: printing is its output.

use std::path::PathBuf;
use std::time::Duration;

use crm_core::Value;
use crm_examples::contact_sync::{self, Contact, contact};
use crm_sql::state::CredentialKey;
use crm_sync::bidi::Pick;
use indexmap::IndexMap;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// A contact with the fields the example seeds on both sides.
fn person(email: &str, first: &str, last: &str, title: &str) -> Contact {
    contact(&[
        ("email", email),
        ("firstname", first),
        ("lastname", last),
        ("jobtitle", title),
    ])
}

fn print_sides(
    hubspot: &std::collections::BTreeMap<String, (String, Contact)>,
    salesforce: &std::collections::BTreeMap<String, (String, Contact)>,
) {
    for (email, (id, c)) in hubspot {
        let sf = salesforce.get(email);
        let same = sf.is_some_and(|(_, s)| s == c);
        println!(
            "  {email:<24} HubSpot {id:<6} Salesforce {:<20} {} {} / {} / {}",
            sf.map_or("-", |(i, _)| i.as_str()),
            if same { "=" } else { "!=" },
            c["firstname"],
            c["lastname"],
            c["jobtitle"],
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let state = match args.iter().position(|a| a == "--state") {
        Some(i) => PathBuf::from(args.get(i + 1).ok_or("--state needs a path")?),
        None => std::env::temp_dir().join("hubspot-salesforce-state.db"),
    };
    // The simulators start empty: so must the state.
    let _ = std::fs::remove_file(&state);

    let sims = contact_sync::start_simulators().await?;
    let hubspot = contact_sync::hubspot_client(&sims.hubspot)?;
    let salesforce = contact_sync::salesforce_client(&sims.salesforce)?;
    // No credentials are stored by this sync; a real deployment reads the
    // key from its configuration (`CredentialKey::from_env`).
    let store = contact_sync::open_store(&state, CredentialKey::generate().0).await?;
    let sync = contact_sync::open_sync(&hubspot, &salesforce, &store).await?;
    println!("state in {}", state.display());

    for (email, first, last, title) in [
        ("ada@example.com", "Ada", "Lovelace", "Analyst"),
        ("grace@example.com", "Grace", "Hopper", "Admiral"),
    ] {
        contact_sync::create_in_hubspot(&hubspot, &person(email, first, last, title)).await?;
    }
    for (email, first, last, title) in [
        ("alan@example.com", "Alan", "Turing", "Researcher"),
        ("edsger@example.com", "Edsger", "Dijkstra", "Professor"),
    ] {
        contact_sync::create_in_salesforce(&salesforce, &person(email, first, last, title)).await?;
    }

    let report = sync.round().await?;
    println!("round 1: {}", contact_sync::describe(&report));

    // Between rounds: people edit both sides. Ada's last name only in
    // HubSpot, Alan's phone only in Salesforce, Grace's first name on both
    // (Salesforce's edit is newer and wins), Edsger's job title on both
    // (manual: it waits for a person).
    let hs = contact_sync::hubspot_contacts(&hubspot).await?;
    let sf = contact_sync::salesforce_contacts(&salesforce).await?;
    let id = |side: &std::collections::BTreeMap<String, (String, Contact)>, email: &str| {
        side.get(email)
            .map(|(id, _)| id.clone())
            .ok_or_else(|| format!("{email} is missing"))
    };
    contact_sync::edit_in_hubspot(
        &hubspot,
        &id(&hs, "ada@example.com")?,
        &[("lastname", "King")],
    )
    .await?;
    contact_sync::edit_in_hubspot(
        &hubspot,
        &id(&hs, "grace@example.com")?,
        &[("firstname", "Amazing Grace")],
    )
    .await?;
    contact_sync::edit_in_hubspot(
        &hubspot,
        &id(&hs, "edsger@example.com")?,
        &[("jobtitle", "Fellow")],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    contact_sync::edit_in_salesforce(
        &salesforce,
        &id(&sf, "alan@example.com")?,
        &[("phone", "+441234567890")],
    )
    .await?;
    contact_sync::edit_in_salesforce(
        &salesforce,
        &id(&sf, "grace@example.com")?,
        &[("firstname", "Rear Admiral Grace")],
    )
    .await?;
    contact_sync::edit_in_salesforce(
        &salesforce,
        &id(&sf, "edsger@example.com")?,
        &[("jobtitle", "Emeritus")],
    )
    .await?;
    let report = sync.round().await?;
    println!("round 2: {}", contact_sync::describe(&report));

    let report = sync.round().await?;
    println!("round 3 (no edits): {}", contact_sync::describe(&report));

    // A person settles the job title from the review queue.
    for review in store.open_reviews(10).await? {
        println!(
            "review {}: {} on {}",
            review.id.as_str(),
            review.details,
            review.record_id
        );
        let mut picks = IndexMap::new();
        picks.insert(
            contact_sync::MANUAL_FIELD.to_owned(),
            Pick::Value(Value::Text("Professor Emeritus".into())),
        );
        sync.resolve_conflict(&review.id, &picks, "reviewer@example.com")
            .await?;
    }
    let report = sync.round().await?;
    println!("round 4: {}", contact_sync::describe(&report));

    println!("contacts:");
    print_sides(
        &contact_sync::hubspot_contacts(&hubspot).await?,
        &contact_sync::salesforce_contacts(&salesforce).await?,
    );
    store.close().await;
    Ok(())
}
