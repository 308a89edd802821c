//! HubSpot <-> Salesforce contact sync with `crm_sync::bidi`.
//!
//! HubSpot contacts are the *platform* side, Salesforce Contacts the *CRM*
//! side; the sync state (record pairs, snapshots, checkpoints, the audit
//! log and the review queue) lives in an SQLite file.
//!
//! | HubSpot property | Salesforce field | direction |
//! |---|---|---|
//! | `email` | `Email` | both ways |
//! | `email` | `External_Id__c` | HubSpot -> Salesforce (the upsert key) |
//! | `firstname` | `FirstName` | both ways |
//! | `lastname` | `LastName` | both ways |
//! | `phone` | `Phone` | both ways |
//! | `jobtitle` | `Title` | both ways, conflicts decided by a person |
//!
//! A field changed on both sides between two rounds is decided by
//! `newest_wins`, except [`MANUAL_FIELD`], which waits in the review queue
//! until [`crm_sync::bidi::BidiSync::resolve_conflict`] is called. New
//! HubSpot contacts are created in Salesforce with an upsert on
//! `External_Id__c`, new Salesforce Contacts in HubSpot with an upsert on
//! `email`; contacts created on both sides with the same email are paired.
//!
//! [`start_simulators`] starts both simulators, [`hubspot_client`] and
//! [`salesforce_client`] connect to them, [`open_store`] opens the state
//! store and [`open_sync`] builds the sync; [`hubspot_contacts`] and
//! [`salesforce_contacts`] list both sides in HubSpot terms, and
//! [`write_calls`] counts the write requests a simulator received.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crm_core::conflict::{ConflictConfig, ConflictPolicy};
use crm_core::mapping::Mapping;
use crm_core::{
    Change, Error, ReadRequest, Record, Result, Sink, Source, Value, WriteBatch, WriteOp,
    WriteOutcome,
};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::{SimHandle, SimServer};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::bidi::{BidiConfig, BidiSync, CreateWith, RoundReport, SideConfig};
use futures_util::TryStreamExt;
use secrecy::SecretString;

/// The field maps, HubSpot (platform) -> Salesforce (CRM).
pub const MAPPING_YAML: &str = r#"
- {source: email, target: Email, direction: bidirectional}
- {source: email, target: External_Id__c, direction: to_crm}
- {source: firstname, target: FirstName, direction: bidirectional}
- {source: lastname, target: LastName, direction: bidirectional}
- {source: phone, target: Phone, direction: bidirectional}
- {source: jobtitle, target: Title, direction: bidirectional}
"#;

/// The HubSpot property whose conflicts a person decides.
pub const MANUAL_FIELD: &str = "jobtitle";

/// The name the sync's state is kept under (record states, review items,
/// audit entries: `object` in the state store).
pub const SYNC_NAME: &str = "contacts";

/// The state store's connection name of the sync.
pub const CONNECTION: &str = "hubspot<->salesforce";

/// HubSpot property -> Salesforce field of the maps that run both ways.
pub const FIELDS: [(&str, &str); 5] = [
    ("email", "Email"),
    ("firstname", "FirstName"),
    ("lastname", "LastName"),
    ("phone", "Phone"),
    ("jobtitle", "Title"),
];

/// A contact in HubSpot terms: property -> value (as text; empty when
/// unset), for every field of [`FIELDS`].
pub type Contact = BTreeMap<String, String>;

/// Builds a [`Contact`] from `(HubSpot property, value)` pairs.
pub fn contact(values: &[(&str, &str)]) -> Contact {
    let mut c: Contact = FIELDS
        .iter()
        .map(|(hs, _)| ((*hs).to_owned(), String::new()))
        .collect();
    for (k, v) in values {
        c.insert((*k).to_owned(), (*v).to_owned());
    }
    c
}

/// [`MAPPING_YAML`], parsed.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] if it does not parse.
pub fn mapping() -> Result<Mapping> {
    Ok(Mapping::from_yaml(MAPPING_YAML)?)
}

/// The sync: HubSpot `contacts` <-> Salesforce `Contact`, `newest_wins`
/// with [`MANUAL_FIELD`] manual, paired by email.
///
/// # Errors
/// As [`mapping`].
pub fn config() -> Result<BidiConfig> {
    Ok(BidiConfig::new(
        SYNC_NAME,
        SideConfig::new("contacts", CreateWith::upsert_key("email")),
        SideConfig::new("Contact", CreateWith::upsert_key("External_Id__c")),
        mapping()?,
    )
    .conflicts(
        ConflictConfig::new(ConflictPolicy::NewestWins).field(MANUAL_FIELD, ConflictPolicy::Manual),
    )
    .match_key("email"))
}

/// Both simulators, running until dropped.
#[derive(Debug)]
pub struct Simulators {
    /// The HubSpot simulator.
    pub hubspot: SimHandle,
    /// The Salesforce simulator.
    pub salesforce: SimHandle,
}

fn sim_error(e: impl std::fmt::Display) -> Error {
    Error::new(
        crm_core::ErrorKind::Transient,
        format!("a simulator did not start: {e}"),
    )
}

/// Starts the HubSpot and Salesforce simulators on 127.0.0.1.
///
/// # Errors
/// When a simulator cannot bind a port.
pub async fn start_simulators() -> Result<Simulators> {
    let mut hs = HubSpotSimConfig::default();
    hs.per_window = 1000;
    let hubspot = SimServer::new(HubSpotSimulator::new(hs))
        .start()
        .await
        .map_err(sim_error)?;
    let salesforce = SimServer::new(SalesforceSimulator::new(SalesforceSimConfig::default()))
        .start()
        .await
        .map_err(sim_error)?;
    Ok(Simulators {
        hubspot,
        salesforce,
    })
}

fn credential(sim: &SimHandle, name: &str) -> Result<String> {
    sim.credentials()
        .get(name)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_input(format!("the simulator has no `{name}` credential")))
}

/// A HubSpot client of the simulator, with its private-app token.
///
/// # Errors
/// When the simulator's credentials or the configuration are unusable.
pub fn hubspot_client(sim: &SimHandle) -> Result<HubSpot> {
    let token = credential(sim, "private_app_token")?;
    let config = HubSpotConfig::private_app(SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(RateLimits::new(1000, None, 100))
        .search_lookback(Duration::from_secs(60))
        .build()?;
    HubSpot::new(config)
}

/// A Salesforce client of the simulator, logging in with its connected
/// app's refresh token.
///
/// # Errors
/// When the simulator's credentials or the configuration are unusable.
pub fn salesforce_client(sim: &SimHandle) -> Result<SalesforceConnector> {
    let host = sim
        .base_url()
        .parse()
        .map_err(|e| Error::invalid_input(format!("the simulator's URL: {e}")))?;
    let config = SalesforceConfig::builder(
        LoginHost::MyDomain(host),
        Credentials::RefreshToken {
            client_id: credential(sim, "client_id")?,
            client_secret: Some(SecretString::from(credential(sim, "client_secret")?)),
            refresh_token: SecretString::from(credential(sim, "refresh_token")?),
        },
    )
    .build()?;
    SalesforceConnector::new(config)
}

/// The SQLite URL of a state file (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Opens (and migrates) the state store in the SQLite file at `path`.
///
/// # Errors
/// When the file cannot be opened or migrated.
pub async fn open_store(path: &Path, key: CredentialKey) -> Result<StateStore> {
    StateStore::open_url(&sqlite_url(path), key).await
}

/// The sync of [`config`] between `hubspot` and `salesforce`, kept in
/// `store` under [`CONNECTION`].
///
/// # Errors
/// State-store errors.
pub async fn open_sync<'a>(
    hubspot: &'a HubSpot,
    salesforce: &'a SalesforceConnector,
    store: &'a StateStore,
) -> Result<BidiSync<'a>> {
    BidiSync::open(hubspot, salesforce, store, CONNECTION, config()?).await
}

/// One line of a round's numbers.
pub fn describe(report: &RoundReport) -> String {
    format!(
        "read {} from HubSpot, {} from Salesforce ({} unchanged); created {} in Salesforce, \
         {} in HubSpot; updated {} in Salesforce, {} in HubSpot; deleted {} in Salesforce, \
         {} in HubSpot; {} conflicts decided, {} sent to review, {} rejected",
        report.read_platform,
        report.read_crm,
        report.unchanged,
        report.created_crm,
        report.created_platform,
        report.updated_crm,
        report.updated_platform,
        report.deleted_crm,
        report.deleted_platform,
        report.conflicts_resolved,
        report.sent_to_review,
        report.rejected,
    )
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

async fn list(
    source: &dyn Source,
    object: &str,
    fields: &[(&str, &str)],
) -> Result<BTreeMap<String, (String, Contact)>> {
    let request = ReadRequest::full(object).fields(fields.iter().map(|(_, f)| *f));
    let mut pages = source.read(request);
    let mut out = BTreeMap::new();
    while let Some(page) = pages.try_next().await? {
        for change in page.changes {
            let Change::Upsert(r) = change else { continue };
            let values: Contact = fields
                .iter()
                .map(|(hs, f)| ((*hs).to_owned(), text(r.get(f))))
                .collect();
            let id = r.id.as_ref().map(ToString::to_string).unwrap_or_default();
            let email = values.get("email").cloned().unwrap_or_default();
            out.insert(email.trim().to_lowercase(), (id, values));
        }
    }
    Ok(out)
}

/// Every HubSpot contact: lowercased email -> (HubSpot id, contact).
///
/// # Errors
/// Read errors.
pub async fn hubspot_contacts(hubspot: &HubSpot) -> Result<BTreeMap<String, (String, Contact)>> {
    let same: Vec<(&str, &str)> = FIELDS.iter().map(|(hs, _)| (*hs, *hs)).collect();
    list(hubspot, "contacts", &same).await
}

/// Every Salesforce Contact, in HubSpot terms: lowercased email ->
/// (Salesforce Id, contact).
///
/// # Errors
/// Read errors.
pub async fn salesforce_contacts(
    salesforce: &SalesforceConnector,
) -> Result<BTreeMap<String, (String, Contact)>> {
    list(salesforce, "Contact", &FIELDS).await
}

async fn write_one(sink: &dyn Sink, object: &str, batch: WriteBatch) -> Result<String> {
    let outcomes = sink.write(object, batch).await?;
    match outcomes.into_iter().next() {
        Some(WriteOutcome::Rejected { error, .. }) => Err(error),
        Some(o) => Ok(o.id().map(ToString::to_string).unwrap_or_default()),
        None => Err(Error::invalid_input(format!(
            "no outcome for the write to {object}"
        ))),
    }
}

/// Creates a contact in HubSpot (a person typing it in); returns its id.
///
/// # Errors
/// Write errors, or HubSpot refusing the contact.
pub async fn create_in_hubspot(hubspot: &HubSpot, c: &Contact) -> Result<String> {
    let mut r = Record::new();
    for (k, v) in c.iter().filter(|(_, v)| !v.is_empty()) {
        r.set(k.as_str(), v.as_str());
    }
    write_one(
        hubspot,
        "contacts",
        WriteBatch::new(WriteOp::Create, vec![r]),
    )
    .await
}

/// Creates a Contact in Salesforce from a contact in HubSpot terms (a
/// person typing it in: no `External_Id__c`); returns its Id.
///
/// # Errors
/// Write errors, or Salesforce refusing the Contact.
pub async fn create_in_salesforce(salesforce: &SalesforceConnector, c: &Contact) -> Result<String> {
    let mut r = Record::new();
    for (hs, sf) in FIELDS {
        if let Some(v) = c.get(hs).filter(|v| !v.is_empty()) {
            r.set(sf, v.as_str());
        }
    }
    write_one(
        salesforce,
        "Contact",
        WriteBatch::new(WriteOp::Create, vec![r]),
    )
    .await
}

/// Edits HubSpot properties of the contact `id`.
///
/// # Errors
/// Write errors, or HubSpot refusing the values.
pub async fn edit_in_hubspot(hubspot: &HubSpot, id: &str, values: &[(&str, &str)]) -> Result<()> {
    let mut r = Record::new().with_id(id);
    for (k, v) in values {
        r.set(*k, *v);
    }
    write_one(
        hubspot,
        "contacts",
        WriteBatch::new(WriteOp::Update, vec![r]),
    )
    .await
    .map(drop)
}

/// Edits fields of the Salesforce Contact `id`; `values` are named in
/// HubSpot terms (`firstname`, not `FirstName`).
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] for a property not in [`FIELDS`];
/// write errors, or Salesforce refusing the values.
pub async fn edit_in_salesforce(
    salesforce: &SalesforceConnector,
    id: &str,
    values: &[(&str, &str)],
) -> Result<()> {
    let mut r = Record::new().with_id(id);
    for (k, v) in values {
        let (_, sf) = FIELDS
            .iter()
            .find(|(hs, _)| hs == k)
            .ok_or_else(|| Error::invalid_input(format!("{k:?} is not a synced property")))?;
        r.set(*sf, *v);
    }
    write_one(
        salesforce,
        "Contact",
        WriteBatch::new(WriteOp::Update, vec![r]),
    )
    .await
    .map(drop)
}

/// Write requests a simulator received after the first `from` requests of
/// its log: every `POST`, `PATCH`, `PUT` and `DELETE` except logins,
/// searches and batch reads.
pub fn write_calls(sim: &SimHandle, from: usize) -> usize {
    sim.request_log()
        .entries()
        .into_iter()
        .skip(from)
        .filter(|e| {
            matches!(e.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE")
                && !e.path.contains("/oauth")
                && !e.path.ends_with("/search")
                && !e.path.ends_with("/batch/read")
        })
        .count()
}
