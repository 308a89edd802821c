//! The shared connector behaviour suite (`crm_sim::conformance`) for
//! Contact, Lead, Account and Opportunity against the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crm_core::{Record, Sink, Source};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator, SimControl};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::conformance::{self, Harness};
use crm_sim::store::Fields;
use crm_sim::{SimContext, SimHandle, SimServer, Window};
use secrecy::SecretString;
use serde_json::json;

/// The simulated org's daily API allocation in these runs.
const DAILY_LIMIT: u32 = 20_000;

struct SfHarness {
    sim: SimHandle,
    control: SimControl,
    object: &'static str,
}

impl SfHarness {
    async fn start(object: &'static str) -> SfHarness {
        let mut config = SalesforceSimConfig::default();
        config.daily_limit = u64::from(DAILY_LIMIT);
        let sim = SalesforceSimulator::new(config);
        let control = sim.control();
        SfHarness {
            sim: SimServer::new(sim).start().await.unwrap(),
            control,
            object,
        }
    }

    fn connector(&self) -> SalesforceConnector {
        let c = self.sim.credentials();
        let config = SalesforceConfig::builder(
            LoginHost::MyDomain(url::Url::parse(self.sim.base_url()).unwrap()),
            Credentials::RefreshToken {
                client_id: c["client_id"].as_str().unwrap().into(),
                client_secret: Some(SecretString::from(
                    c["client_secret"].as_str().unwrap().to_owned(),
                )),
                refresh_token: SecretString::from(c["refresh_token"].as_str().unwrap().to_owned()),
            },
        )
        .bulk_poll((Duration::from_millis(5), Duration::from_millis(20)))
        .build()
        .unwrap();
        SalesforceConnector::new(config).unwrap()
    }

    /// A non-key field the suite changes between versions.
    fn name_field(&self) -> &'static str {
        match self.object {
            "Contact" | "Lead" => "FirstName",
            _ => "Name",
        }
    }

    /// The required fields of the object besides the name field.
    fn required(&self, fields: &mut Fields, i: usize) {
        match self.object {
            "Contact" => {
                fields.insert("LastName".into(), json!(format!("Lovelace {i}")));
            }
            "Lead" => {
                fields.insert("LastName".into(), json!(format!("Hopper {i}")));
                fields.insert("Company".into(), json!("Analytical Engines"));
                fields.insert("Status".into(), json!("Open - Not Contacted"));
            }
            "Opportunity" => {
                fields.insert("StageName".into(), json!("Prospecting"));
                fields.insert("CloseDate".into(), json!("2025-06-30"));
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Harness for SfHarness {
    fn sim(&self) -> &SimContext {
        self.sim.context()
    }
    fn object(&self) -> &str {
        self.object
    }
    fn source(&self) -> Arc<dyn Source> {
        Arc::new(self.connector())
    }
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        Some(Arc::new(self.connector()))
    }
    fn page_size(&self) -> usize {
        // `Sforce-Query-Options: batchSize` takes 200 at least.
        200
    }
    fn batch_size(&self) -> usize {
        // One sObject Collections call.
        200
    }
    fn key_field(&self) -> &str {
        "External_Id__c"
    }
    fn seed_fields(&self, i: usize) -> Fields {
        let mut f = Fields::new();
        f.insert("External_Id__c".into(), json!(format!("SEED-{i}")));
        f.insert(self.name_field().into(), json!(format!("Seed {i}")));
        self.required(&mut f, i);
        f
    }
    fn update_fields(&self, i: usize) -> Fields {
        let mut f = Fields::new();
        f.insert(self.name_field().into(), json!(format!("Changed {i}")));
        f
    }
    fn record(&self, i: usize, version: u32) -> Record {
        let mut fields = Fields::new();
        self.required(&mut fields, i);
        let mut r = Record::new()
            .with("External_Id__c", format!("EXT-{i}"))
            .with(self.name_field(), format!("Name {i} v{version}"));
        for (k, v) in fields {
            r.set(k, crm_core::Value::from_json(v));
        }
        r
    }
    fn invalid_record(&self, i: usize) -> Option<Record> {
        // Each object's own realistic rejection.
        let r = self
            .record(1_000 + i, 1)
            .with("External_Id__c", format!("BAD-{i}"));
        Some(match self.object {
            "Contact" | "Lead" => r.with("Email", "not-an-email"),
            "Account" => r.with("NumberOfEmployees", "lots"),
            _ => r.with("StageName", "Galactic"),
        })
    }
    fn rate_limits(&self) -> Vec<Window> {
        // Salesforce's request limit is the daily allocation (a rolling 24 h).
        vec![Window::sliding(
            "daily_api_requests",
            DAILY_LIMIT,
            Duration::from_secs(24 * 3600),
        )]
    }
    fn expected_read_calls(&self, n: usize) -> usize {
        // The describe, then one query call a page.
        n.div_ceil(self.page_size()).max(1) + 1
    }
    fn expected_write_calls(&self, n: usize) -> usize {
        // Per batch: the lookup of stored records (unchanged detection) and
        // one sObject Collections upsert.
        2 * n.div_ceil(self.batch_size())
    }
    async fn reset(&self) {
        let sim = self.sim();
        sim.faults().clear();
        sim.store().clear();
        sim.log().clear();
        sim.reset_rate_limits();
        sim.clock().resume();
        self.control.set_api_usage(0, u64::from(DAILY_LIMIT));
    }
}

async fn conformance_for(object: &'static str) {
    let h = SfHarness::start(object).await;
    let report = conformance::run_all(&h, 1..=3).await;
    report.assert_passed();
    for (name, verdict) in &report.results {
        assert_eq!(
            verdict,
            &conformance::Verdict::Passed,
            "{object}: {name} did not run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_contact() {
    conformance_for("Contact").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_lead() {
    conformance_for("Lead").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_account() {
    conformance_for("Account").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_opportunity() {
    conformance_for("Opportunity").await;
}
