//! `crm-sync contacts CONFIG`: the unified view of the CRMs a file names,
//! read by the real binary from the HubSpot and Marketo simulators.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crm_core::Record;
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_hubspot::{HubSpot, HubSpotConfig};
use crm_marketo::sim::{MarketoSimConfig, MarketoSimulator};
use crm_marketo::{LeadFullRead, Marketo, MarketoConfig};
use crm_sim::SimServer;
use crm_sync::fanout::{FanOut, Target};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contacts_command_joins_the_crms_of_a_file_by_email() {
    let hs = SimServer::new(HubSpotSimulator::new(HubSpotSimConfig::default()))
        .start()
        .await
        .unwrap();
    let mk = SimServer::new(MarketoSimulator::new(MarketoSimConfig::default()))
        .start()
        .await
        .unwrap();
    let token = hs.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mk_creds = mk.credentials();
    let (mk_id, mk_secret) = (
        mk_creds["client_id"].as_str().unwrap().to_owned(),
        mk_creds["client_secret"].as_str().unwrap().to_owned(),
    );
    let hubspot = HubSpot::new(
        HubSpotConfig::private_app(SecretString::from(token.clone()))
            .base_url(hs.base_url())
            .build()
            .unwrap(),
    )
    .unwrap();
    let marketo = Marketo::new(
        MarketoConfig::builder(mk.base_url(), &mk_id, SecretString::from(mk_secret.clone()))
            .lead_full_read(LeadFullRead::IdScan)
            .build()
            .unwrap(),
    )
    .unwrap();
    let both = FanOut::new("email")
        .target(Target::new(
            "hubspot",
            &hubspot,
            "contacts",
            crm_hubspot::mapping::contact_mapping(),
            "email",
        ))
        .target(Target::new(
            "marketo",
            &marketo,
            "leads",
            crm_marketo::mapping::lead_map(),
            "email",
        ));
    let person = |e: &str, f: &str| Record::new().with("email", e).with("first_name", f);
    assert!(
        both.upsert(&[
            person("ann@example.com", "ann"),
            person("bob@example.com", "bob")
        ])
        .await
        .unwrap()
        .all_ok()
    );
    let only_hs = FanOut::new("email").target(Target::new(
        "hubspot",
        &hubspot,
        "contacts",
        crm_hubspot::mapping::contact_mapping(),
        "email",
    ));
    assert!(
        only_hs
            .upsert(&[person("cy@example.com", "cy")])
            .await
            .unwrap()
            .all_ok()
    );

    let dir = std::env::temp_dir().join(format!("crm-contacts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("crms.yaml");
    std::fs::write(
        &file,
        format!(
            "crms:\n  - provider: hubspot\n    base_url: {}\n    token: ${{CONTACTS_TEST_HS_TOKEN}}\n  - provider: marketo\n    base_url: {}\n    client_id: {mk_id}\n    client_secret: ${{CONTACTS_TEST_MK_SECRET}}\n",
            hs.base_url(),
            mk.base_url()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_crm-sync");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("contacts")
            .arg(&file)
            .args(args)
            .env("CONTACTS_TEST_HS_TOKEN", &token)
            .env("CONTACTS_TEST_MK_SECRET", &mk_secret)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The sims run on this runtime's other thread while the binary works.
    let (all, mk_only, table, bad) = tokio::task::block_in_place(|| {
        (
            run(&["--json"]),
            run(&["--json", "--filter", "source_system=marketo"]),
            run(&[]),
            run(&["--filter", "first_name__between=a"]),
        )
    });
    assert_eq!(mk_only.0, Some(0), "{}", mk_only.2);
    assert_eq!(mk_only.1.lines().count(), 2, "{}", mk_only.1);
    assert_eq!(table.0, Some(0), "{}", table.2);
    assert!(table.1.contains("3 contacts"), "{}", table.1);
    assert!(table.1.contains("hubspot,marketo") || table.1.contains("marketo,hubspot"));
    assert_eq!(bad.0, Some(2), "{}", bad.2);
    assert!(bad.2.contains("between"), "{}", bad.2);
    let (code, out, err) = all;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let emails: Vec<&str> = lines.iter().map(|l| l["email"].as_str().unwrap()).collect();
    assert_eq!(
        emails,
        ["ann@example.com", "bob@example.com", "cy@example.com"]
    );
    assert_eq!(lines[0]["sources"].as_array().unwrap().len(), 2);
    assert_eq!(lines[2]["sources"].as_array().unwrap().len(), 1);
    assert_eq!(lines[0]["fields"]["first_name"], "Ann");
    // Secrets come from the environment and never reach the output.
    assert!(!out.contains(&token) && !err.contains(&token));
    assert!(!out.contains(&mk_secret) && !err.contains(&mk_secret));
    let _ = std::fs::remove_dir_all(dir);
}
