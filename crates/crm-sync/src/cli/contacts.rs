//! `crm-sync contacts CONFIG`: seed 004's unified contact view across the
//! CRMs of a file, keyed by email.
//!
//! ```yaml
//! crms:
//!   - provider: hubspot
//!     token: ${HUBSPOT_TOKEN}
//!   - provider: salesforce
//!     login: production          # production, sandbox or a My Domain URL
//!     client_id: 3MVG9...
//!     client_secret: ${SF_CLIENT_SECRET}
//!     refresh_token: ${SF_REFRESH_TOKEN}
//!   - provider: marketo
//!     base_url: https://123-ABC-456.mktorest.com
//!     client_id: ${MARKETO_CLIENT_ID}
//!     client_secret: ${MARKETO_CLIENT_SECRET}
//!   - provider: pipedrive
//!     token: ${PIPEDRIVE_TOKEN}
//!     company_domain: acme
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use crm_core::env::{from_process, interpolate};
use crm_core::{Error, Value};
use crm_hubspot::{HubSpot, HubSpotConfig};
use crm_marketo::{LeadFullRead, Marketo, MarketoConfig};
use crm_pipedrive::{Pipedrive, PipedriveConfig};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use secrecy::SecretString;
use serde::Deserialize;

use super::CliError;
use crate::fanout::{FanOut, Target, UnifiedFilter, UnifiedView};

/// Options of `crm-sync contacts`.
#[derive(Debug, clap::Args)]
pub struct ContactsArgs {
    /// The file naming the CRMs (a `crms:` list).
    pub config: PathBuf,
    /// A condition in seed 004's form, `field=value` or `field__op=value`
    /// (`lead_score__gt=50`, `source_system=salesforce`); repeatable.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// One JSON object per contact instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsFile {
    crms: Vec<CrmEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrmEntry {
    provider: String,
    /// The name in the report (default: the provider).
    name: Option<String>,
    base_url: Option<String>,
    token: Option<String>,
    login: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    company_domain: Option<String>,
}

enum Built {
    HubSpot(HubSpot),
    Salesforce(SalesforceConnector),
    Marketo(Marketo),
    Pipedrive(Pipedrive),
}

fn env(field: &str, v: &Option<String>) -> Result<Option<String>, Error> {
    v.as_ref()
        .map(|t| interpolate(field, t, from_process))
        .transpose()
}

fn need(field: &str, provider: &str, v: Option<String>) -> Result<String, Error> {
    v.ok_or_else(|| {
        Error::invalid_input(format!("`{field}` is required for a {provider} entry"))
            .with_context("field", field)
    })
}

fn secret(v: String) -> SecretString {
    SecretString::from(v)
}

fn build(i: usize, e: &CrmEntry) -> Result<Built, Error> {
    let at = |k: &str| format!("crms[{i}].{k}");
    let base_url = env(&at("base_url"), &e.base_url)?;
    let token = env(&at("token"), &e.token)?;
    let client_id = env(&at("client_id"), &e.client_id)?;
    let client_secret = env(&at("client_secret"), &e.client_secret)?;
    let refresh_token = env(&at("refresh_token"), &e.refresh_token)?;
    Ok(match e.provider.as_str() {
        "hubspot" => {
            let mut b = HubSpotConfig::private_app(secret(need(&at("token"), "hubspot", token)?));
            if let Some(u) = base_url {
                b = b.base_url(u);
            }
            Built::HubSpot(HubSpot::new(b.build()?)?)
        }
        "pipedrive" => {
            let mut b = PipedriveConfig::api_token(secret(need(&at("token"), "pipedrive", token)?));
            if let Some(d) = env(&at("company_domain"), &e.company_domain)? {
                b = b.company_domain(d);
            }
            if let Some(u) = base_url {
                b = b.base_url(u);
            }
            Built::Pipedrive(Pipedrive::new(b.build()?)?)
        }
        "marketo" => {
            let b = MarketoConfig::builder(
                need(&at("base_url"), "marketo", base_url)?,
                need(&at("client_id"), "marketo", client_id)?,
                secret(need(&at("client_secret"), "marketo", client_secret)?),
            )
            .lead_full_read(LeadFullRead::IdScan);
            Built::Marketo(Marketo::new(b.build()?)?)
        }
        "salesforce" => {
            let login = match env(&at("login"), &e.login)?.as_deref() {
                None | Some("production") => LoginHost::Production,
                Some("sandbox") => LoginHost::Sandbox,
                Some(url) => LoginHost::MyDomain(url.parse().map_err(|_| {
                    Error::invalid_input(format!(
                        "`{}`: production, sandbox or a My Domain URL",
                        at("login")
                    ))
                    .with_context("field", at("login"))
                })?),
            };
            let creds = Credentials::RefreshToken {
                client_id: need(&at("client_id"), "salesforce", client_id)?,
                client_secret: client_secret.map(secret),
                refresh_token: secret(need(&at("refresh_token"), "salesforce", refresh_token)?),
            };
            Built::Salesforce(SalesforceConnector::new(
                SalesforceConfig::builder(login, creds).build()?,
            )?)
        }
        other => {
            return Err(Error::invalid_input(format!(
                "`{}`: unknown provider `{other}` (hubspot, salesforce, marketo, pipedrive)",
                at("provider")
            ))
            .with_context("field", at("provider")));
        }
    })
}

fn target<'a>(name: String, b: &'a Built) -> Target<'a> {
    match b {
        Built::HubSpot(c) => Target::new(
            name,
            c,
            "contacts",
            crm_hubspot::mapping::contact_mapping(),
            "email",
        ),
        Built::Marketo(c) => {
            Target::new(name, c, "leads", crm_marketo::mapping::lead_map(), "email")
        }
        Built::Pipedrive(c) => Target::new(
            name,
            c,
            "persons",
            crm_pipedrive::mapping::contact_map(),
            "email",
        ),
        Built::Salesforce(c) => Target::new(
            name,
            c,
            "Contact",
            crm_salesforce::mapping::contact_map(),
            "Email",
        ),
    }
}

/// Parses `--filter` arguments into seed 004's filter object.
fn filter(args: &[String]) -> Result<UnifiedFilter, Error> {
    let mut obj = serde_json::Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Error::invalid_input(format!(
                "--filter {a}: write field=value or field__op=value"
            )));
        };
        let v = v.trim();
        let value = match v.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => match v {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => serde_json::Value::String(v.to_owned()),
            },
        };
        obj.insert(k.trim().to_owned(), value);
    }
    UnifiedFilter::from_json(&serde_json::Value::Object(obj))
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

/// Prints the view: a table, or one JSON object per line.
#[allow(clippy::print_stdout)]
fn print(view: &UnifiedView, json: bool) {
    if json {
        for c in &view.contacts {
            let fields: BTreeMap<&str, String> = c
                .merged
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), text(Some(v))))
                .collect();
            let sources: Vec<serde_json::Value> = c
                .sources
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "system": s.system,
                        "id": s.id.as_ref().map(|i| i.as_str()),
                        "updated_at": s.updated_at,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"email": c.email, "fields": fields, "sources": sources})
            );
        }
        return;
    }
    println!(
        "{:<32} {:<24} {:<28} {:>5}",
        "email", "name", "systems", "score"
    );
    for c in &view.contacts {
        let name = format!(
            "{} {}",
            text(c.merged.get("first_name")),
            text(c.merged.get("last_name"))
        );
        println!(
            "{:<32} {:<24} {:<28} {:>5}",
            c.email,
            name.trim(),
            c.systems().join(","),
            text(c.merged.get("lead_score"))
        );
    }
    println!("{} contacts", view.contacts.len());
    for (system, id, error) in &view.skipped {
        println!(
            "skipped in {system}: {} ({error})",
            id.as_ref().map_or("?", |i| i.as_str())
        );
    }
}

/// Reads every CRM of the file and prints the unified view.
///
/// # Errors
/// A usage error for a bad file or filter; a failure when a CRM cannot be
/// read (the view would be incomplete).
pub async fn run(args: &ContactsArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", args.config.display())))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let file: ContactsFile = serde_path_to_error::deserialize(de).map_err(|e| {
        CliError::usage(format!(
            "{}: {} at `{}`",
            args.config.display(),
            e.inner(),
            e.path()
        ))
    })?;
    let usage = |e: Error| CliError::usage(format!("{}: {e}", args.config.display()));
    let built: Vec<(String, Built)> = file
        .crms
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok((
                e.name.clone().unwrap_or_else(|| e.provider.clone()),
                build(i, e)?,
            ))
        })
        .collect::<Result<_, Error>>()
        .map_err(usage)?;
    let filter = filter(&args.filters).map_err(|e| CliError::usage(e.to_string()))?;
    let mut crms = FanOut::new("email");
    for (name, b) in &built {
        crms = crms.target(target(name.clone(), b));
    }
    let view = crms
        .unified(&filter)
        .await
        .map_err(|e| CliError::failed(format!("the contact view is incomplete: {e}")))?;
    print(&view, args.json);
    Ok(())
}
