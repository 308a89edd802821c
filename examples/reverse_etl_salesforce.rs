//! Seed 001 reverse ETL: customer scores from a PostgreSQL table onto
//! Salesforce Contacts (`Customer_Segment__c`, `LTV__c`, `Churn_Risk__c`,
//! `Last_Activity__c`), keyed by the Contact Id in `crm_id`.
//!
//! ```text
//! cargo run -p crm-examples --example reverse_etl_salesforce -- [--table customer_scores] [--live]
//! ```
//!
//! - `DATABASE_URL`: the PostgreSQL database (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`).
//! - Without `--live` it runs against the Salesforce simulator: it creates a
//!   few Contacts there and a demo row for each in the table.
//! - With `--live` it writes to a real org through a connected app:
//!   `SF_LOGIN_URL` (e.g. `https://login.salesforce.com` or your My Domain),
//!   `SF_CLIENT_ID`, `SF_CLIENT_SECRET`, `SF_REFRESH_TOKEN`.
#![allow(clippy::print_stdout)] // A command-line app: printing is its output.

use crm_examples::reverse_etl;
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::SimServer;
use crm_sql::SqlConnector;
use secrecy::SecretString;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, AnyError> {
    std::env::var(name).map_err(|_| format!("set {name} (see the example's docs)").into())
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let live = args.iter().any(|a| a == "--live");
    let table = match args.iter().position(|a| a == "--table") {
        Some(i) => args.get(i + 1).cloned().ok_or("--table needs a name")?,
        None => "customer_scores".to_owned(),
    };
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{table:?} is not a plain table name").into());
    }
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = SqlConnector::connect_url(&url).await?;
    db.execute_unprepared(&reverse_etl::create_table_sql(&table))
        .await?;

    // Keep the simulator running until the end of main.
    let mut _sim = None;
    let config = if live {
        SalesforceConfig::builder(
            LoginHost::MyDomain(env("SF_LOGIN_URL")?.parse()?),
            Credentials::RefreshToken {
                client_id: env("SF_CLIENT_ID")?,
                client_secret: Some(SecretString::from(env("SF_CLIENT_SECRET")?)),
                refresh_token: SecretString::from(env("SF_REFRESH_TOKEN")?),
            },
        )
        .build()?
    } else {
        let sim = SimServer::new(SalesforceSimulator::new(SalesforceSimConfig::default()))
            .start()
            .await?;
        // Demo data: three Contacts in the simulated org, a score row for each.
        for (i, (segment, ltv, churn)) in [
            ("Enterprise", "125000.4567", "0.0800"),
            ("Mid-Market", "18250.005", "0.3550"),
            ("SMB", "990.1", "0.9100"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut contact = crm_sim::store::Fields::new();
            contact.insert("LastName".into(), format!("Demo {i}").into());
            let id = sim.context().store().create("Contact", contact).id;
            db.execute_unprepared(&format!(
                "INSERT INTO {table} (crm_id, customer_segment, lifetime_value, churn_risk_score, \
                 last_activity_date) VALUES ('{id}', '{segment}', {ltv}, {churn}, DATE '2025-03-0{}') \
                 ON CONFLICT (crm_id) DO NOTHING",
                i + 1
            ))
            .await?;
        }
        let c = sim.credentials();
        let config = SalesforceConfig::builder(
            LoginHost::MyDomain(sim.base_url().parse()?),
            Credentials::RefreshToken {
                client_id: c["client_id"].as_str().unwrap_or_default().to_owned(),
                client_secret: c["client_secret"]
                    .as_str()
                    .map(|s| SecretString::from(s.to_owned())),
                refresh_token: SecretString::from(
                    c["refresh_token"].as_str().unwrap_or_default().to_owned(),
                ),
            },
        )
        .build()?;
        _sim = Some(sim);
        config
    };
    let salesforce = SalesforceConnector::new(config)?;

    // A scheduler would store `summary.cursor` and pass it to the next run.
    let summary = reverse_etl::run(&db, &salesforce, &table, None).await?;
    println!(
        "{} rows read: {} Contacts updated, {} unchanged, {} rejected",
        summary.rows,
        summary.updated,
        summary.unchanged,
        summary.rejected.len()
    );
    for (crm_id, why) in &summary.rejected {
        println!("  {crm_id}: {why}");
    }
    Ok(())
}
