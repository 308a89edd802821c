//! The seed 001 reverse-ETL app against the Salesforce simulator and the
//! machine's PostgreSQL (`CRM_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without a server the test
//! is skipped, except under CI (`CI` set), where that is a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr, // the notice of a skipped test
    missing_docs
)]

use std::str::FromStr;

use chrono::NaiveDate;
use crm_examples::reverse_etl;
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::store::Fields;
use crm_sim::{SimHandle, SimServer};
use crm_sql::SqlConnector;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value as Json, json};

async fn postgres() -> Option<SqlConnector> {
    let url = std::env::var("CRM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    match SqlConnector::connect_url(&url).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var_os("CI").is_some() => panic!("PostgreSQL at {url}: {e}"),
        Err(e) => {
            eprintln!("skipped: no PostgreSQL at {url}: {e}");
            None
        }
    }
}

fn salesforce(sim: &SimHandle) -> SalesforceConnector {
    let c = sim.credentials();
    let config = SalesforceConfig::builder(
        LoginHost::MyDomain(sim.base_url().parse().unwrap()),
        Credentials::RefreshToken {
            client_id: c["client_id"].as_str().unwrap().into(),
            client_secret: Some(SecretString::from(
                c["client_secret"].as_str().unwrap().to_owned(),
            )),
            refresh_token: SecretString::from(c["refresh_token"].as_str().unwrap().to_owned()),
        },
    )
    .build()
    .unwrap();
    SalesforceConnector::new(config).unwrap()
}

fn decimal(v: Option<&Json>) -> Decimal {
    let v = v.unwrap_or_else(|| panic!("missing value"));
    Decimal::from_str(v.to_string().trim_matches('"')).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_land_on_contacts_with_the_seed_001_mappings() {
    let Some(db) = postgres().await else {
        return;
    };
    let sim = SimServer::new(SalesforceSimulator::new(SalesforceSimConfig::default()))
        .start()
        .await
        .unwrap();
    let store = sim.context().store();
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut f = Fields::new();
        f.insert("LastName".into(), json!(format!("Lovelace {i}")));
        ids.push(store.create("Contact", f).id);
    }

    let table = format!(
        "reverse_etl_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    db.execute_unprepared(&reverse_etl::create_table_sql(&table))
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO {table} (crm_id, customer_segment, lifetime_value, churn_risk_score, last_activity_date) VALUES
         ('{}', 'Enterprise', 1234.5678, 0.4200, DATE '2025-03-14'),
         ('{}', 'SMB', 99.995, 0.0750, DATE '2024-12-31'),
         ('{}', 'Galactic', 10, 0.5, DATE '2025-01-01')",
        ids[0], ids[1], ids[2]
    ))
    .await
    .unwrap();

    let sf = salesforce(&sim);
    let first = reverse_etl::run(&db, &sf, &table, None).await;
    let again = match &first {
        Ok(_) => Some(reverse_etl::run(&db, &sf, &table, None).await),
        Err(_) => None,
    };
    // Drop the table before any assertion can fail.
    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    let first = first.unwrap();
    let again = again.unwrap().unwrap();

    assert_eq!(first.rows, 3);
    assert_eq!(first.updated, 2);
    // The restricted picklist rejects an unknown segment, with Salesforce's code.
    assert_eq!(first.rejected.len(), 1, "{:?}", first.rejected);
    assert_eq!(first.rejected[0].0, ids[2].as_str());
    assert!(
        first.rejected[0]
            .1
            .contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{:?}",
        first.rejected
    );
    assert!(first.cursor.is_some());

    let c0 = store.get_live("Contact", &ids[0]).unwrap().fields;
    assert_eq!(c0["Customer_Segment__c"], json!("Enterprise"));
    assert_eq!(
        decimal(c0.get("LTV__c")),
        Decimal::from_str("1234.57").unwrap()
    );
    assert_eq!(decimal(c0.get("Churn_Risk__c")), Decimal::from(42));
    assert_eq!(c0["Last_Activity__c"], json!("2025-03-14"));
    assert_eq!(
        c0["LastName"],
        json!("Lovelace 0"),
        "other fields untouched"
    );

    let c1 = store.get_live("Contact", &ids[1]).unwrap().fields;
    assert_eq!(c1["Customer_Segment__c"], json!("SMB"));
    // 99.995 rounds half away from zero.
    assert_eq!(
        decimal(c1.get("LTV__c")),
        Decimal::from_str("100.00").unwrap()
    );
    assert_eq!(
        decimal(c1.get("Churn_Risk__c")),
        Decimal::from_str("7.5").unwrap()
    );
    assert_eq!(
        NaiveDate::parse_from_str(c1["Last_Activity__c"].as_str().unwrap(), "%Y-%m-%d").unwrap(),
        NaiveDate::from_ymd_opt(2024, 12, 31).unwrap()
    );

    let c2 = store.get_live("Contact", &ids[2]).unwrap().fields;
    assert!(c2.get("Customer_Segment__c").is_none_or(Json::is_null));
    // A full rerun finds the two written Contacts as they are and writes nothing.
    assert_eq!(again.rows, 3);
    assert_eq!((again.updated, again.unchanged), (0, 2));
    assert_eq!(again.rejected.len(), 1);
}
