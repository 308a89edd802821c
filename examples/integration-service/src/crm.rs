//! One integration's CRM: its connector, built from the stored
//! credentials, and the few operations the service needs, written once
//! for the three providers.
//!
//! | operation | Salesforce | HubSpot | Pipedrive |
//! |---|---|---|---|
//! | contacts | `Contact` | `contacts` | `persons` |
//! | leads | `Lead` | `contacts` with `lifecyclestage=lead` | `leads` on the person |
//! | find by email | SOQL `Email IN (...)`, 100 a query | `batch/read` with `idProperty=email`, 100 a call | `persons/search` exact email |
//! | write contacts | `Id` found: update, else create (200 a call) | `batch/upsert` by `email` (100 a call) | search-then-write upsert by email |
//!
//! Every write leaves out records that already hold the values (the
//! sinks' unchanged detection), so a repeated sync writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crm_core::{
    Error, ErrorKind, ReadRequest, Record, RecordId, Result, Sink, Source, Value, WriteBatch,
    WriteOp, WriteOutcome,
};
use crm_hubspot::{HubSpot, HubSpotConfig};
use crm_pipedrive::{ObjectKind, Pipedrive, PipedriveConfig};
use crm_salesforce::soql::{Condition, Literal, Select};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sync::enrich::{EnrichTarget, PipedriveEnrichmentFields};
use futures_util::StreamExt;
use secrecy::SecretString;

use crate::model::{PipedriveFieldKeys, Provider};

/// Emails per lookup call.
const LOOKUP_CHUNK: usize = 100;

/// A connected CRM.
pub enum Crm {
    /// Salesforce.
    Salesforce(SalesforceConnector),
    /// HubSpot.
    Hubspot(HubSpot),
    /// Pipedrive, with the person custom field keys for enrichment.
    Pipedrive(Pipedrive, PipedriveEnrichmentFields),
}

impl std::fmt::Debug for Crm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Crm::Salesforce(_) => "Crm::Salesforce",
            Crm::Hubspot(_) => "Crm::Hubspot",
            Crm::Pipedrive(..) => "Crm::Pipedrive",
        })
    }
}

/// The credential names each provider takes, secret or not.
pub fn credential_names(provider: Provider) -> &'static [(&'static str, bool)] {
    match provider {
        Provider::Salesforce => &[
            ("clientId", false),
            ("clientSecret", true),
            ("accessToken", true),
            ("refreshToken", true),
            ("domain", false),
        ],
        Provider::Hubspot => &[
            ("accessToken", true),
            ("apiKey", true),
            ("clientId", false),
            ("clientSecret", true),
            ("refreshToken", true),
            ("baseUrl", false),
        ],
        Provider::Pipedrive => &[("apiToken", true), ("domain", false), ("baseUrl", false)],
    }
}

fn need<'c>(creds: &'c BTreeMap<String, String>, name: &str) -> Result<&'c str> {
    match creds.get(name).map(|s| s.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(
            Error::invalid_input(format!("the credential `{name}` is missing"))
                .with_context("field", format!("credentials.{name}")),
        ),
    }
}

fn secret(creds: &BTreeMap<String, String>, name: &str) -> Result<SecretString> {
    need(creds, name).map(|v| SecretString::from(v.to_owned()))
}

fn url_of(text: &str, field: &str) -> Result<String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    match with_scheme.parse::<url::Url>() {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {
            Ok(with_scheme)
        }
        _ => Err(
            Error::invalid_input(format!("`{field}` is not a URL or host name"))
                .with_context("field", format!("credentials.{field}")),
        ),
    }
}

impl Crm {
    /// Builds the connector of `provider` from `creds`; `endpoint`, when
    /// set, replaces the CRM's address (the simulators).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming a missing, unknown or malformed
    /// credential (context `field`).
    pub fn connect(
        provider: Provider,
        creds: &BTreeMap<String, String>,
        endpoint: Option<&str>,
        pipedrive_fields: Option<&PipedriveFieldKeys>,
    ) -> Result<Crm> {
        let known = credential_names(provider);
        if let Some(unknown) = creds.keys().find(|k| !known.iter().any(|(n, _)| n == k)) {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            return Err(Error::invalid_input(format!(
                "`{unknown}` is not a {} credential (known: {})",
                provider.as_str(),
                names.join(", ")
            ))
            .with_context("field", format!("credentials.{unknown}")));
        }
        match provider {
            Provider::Salesforce => {
                let host = match endpoint {
                    Some(e) => e.to_owned(),
                    None => url_of(need(creds, "domain")?, "domain")?,
                };
                let host = host
                    .parse()
                    .map_err(|_| Error::invalid_input("`domain` is not a URL"))?;
                let config = SalesforceConfig::builder(
                    LoginHost::MyDomain(host),
                    Credentials::RefreshToken {
                        client_id: need(creds, "clientId")?.to_owned(),
                        client_secret: Some(secret(creds, "clientSecret")?),
                        refresh_token: secret(creds, "refreshToken")?,
                    },
                )
                .build()?;
                Ok(Crm::Salesforce(SalesforceConnector::new(config)?))
            }
            Provider::Hubspot => {
                let token = creds
                    .get("accessToken")
                    .or_else(|| creds.get("apiKey"))
                    .filter(|t| !t.trim().is_empty());
                let mut builder = match token {
                    Some(t) => HubSpotConfig::private_app(SecretString::from(t.trim().to_owned())),
                    None if creds.contains_key("refreshToken") => HubSpotConfig::oauth(
                        need(creds, "clientId")?.to_owned(),
                        secret(creds, "clientSecret")?,
                        secret(creds, "refreshToken")?,
                    ),
                    None => {
                        return Err(Error::invalid_input(
                            "HubSpot needs `accessToken` (a private app token) or \
                             `clientId`, `clientSecret` and `refreshToken`",
                        )
                        .with_context("field", "credentials.accessToken"));
                    }
                };
                match (endpoint, creds.get("baseUrl")) {
                    (Some(e), _) => builder = builder.base_url(e),
                    (None, Some(b)) => builder = builder.base_url(url_of(b, "baseUrl")?),
                    (None, None) => {}
                }
                Ok(Crm::Hubspot(HubSpot::new(builder.build()?)?))
            }
            Provider::Pipedrive => {
                let mut builder =
                    PipedriveConfig::api_token(secret(creds, "apiToken")?).rate_limits(
                        crm_pipedrive::RateLimits::new(80, Duration::from_secs(2), None),
                    );
                match (endpoint, creds.get("baseUrl"), creds.get("domain")) {
                    (Some(e), _, _) => builder = builder.base_url(e),
                    (None, Some(b), _) => builder = builder.base_url(url_of(b, "baseUrl")?),
                    (None, None, Some(d)) => {
                        let d = d.trim().trim_end_matches(".pipedrive.com");
                        builder = builder.company_domain(d);
                    }
                    (None, None, None) => {
                        return Err(Error::invalid_input(
                            "the credential `domain` (the company domain) is missing",
                        )
                        .with_context("field", "credentials.domain"));
                    }
                }
                let mut fields = PipedriveEnrichmentFields::new();
                if let Some(k) = pipedrive_fields {
                    if let Some(key) = &k.engagement_score {
                        fields = fields.with_engagement_score(key.clone());
                    }
                    if let Some(key) = &k.primary_platform {
                        fields = fields.with_primary_platform(key.clone());
                    }
                    if let Some(key) = &k.profile_url {
                        fields = fields.with_profile_url(key.clone());
                    }
                    fields.validate()?;
                }
                Ok(Crm::Pipedrive(Pipedrive::new(builder.build()?)?, fields))
            }
        }
    }

    /// The provider.
    pub fn provider(&self) -> Provider {
        match self {
            Crm::Salesforce(_) => Provider::Salesforce,
            Crm::Hubspot(_) => Provider::Hubspot,
            Crm::Pipedrive(..) => Provider::Pipedrive,
        }
    }

    fn sink(&self) -> &dyn Sink {
        match self {
            Crm::Salesforce(c) => c,
            Crm::Hubspot(c) => c,
            Crm::Pipedrive(c, _) => c,
        }
    }

    fn source(&self) -> &dyn Source {
        match self {
            Crm::Salesforce(c) => c,
            Crm::Hubspot(c) => c,
            Crm::Pipedrive(c, _) => c,
        }
    }

    /// Where enrichment writes.
    pub fn enrich_target(&self) -> EnrichTarget<'_> {
        match self {
            Crm::Salesforce(c) => EnrichTarget::Salesforce(c),
            Crm::Hubspot(c) => EnrichTarget::HubSpot(c),
            Crm::Pipedrive(c, f) => EnrichTarget::Pipedrive {
                connector: c,
                fields: Some(f),
            },
        }
    }

    /// A cheap authenticated call: the contact object's describe.
    ///
    /// # Errors
    /// The provider's error ([`ErrorKind::Auth`] for refused credentials).
    pub async fn check(&self) -> Result<()> {
        self.sink()
            .describe(self.contact_object())
            .await
            .map(|_| ())
    }

    /// The object contacts live in.
    pub fn contact_object(&self) -> &'static str {
        match self {
            Crm::Salesforce(_) => "Contact",
            Crm::Hubspot(_) => "contacts",
            Crm::Pipedrive(..) => "persons",
        }
    }

    /// The object leads live in.
    pub fn lead_object(&self) -> &'static str {
        match self {
            Crm::Salesforce(_) => "Lead",
            Crm::Hubspot(_) => "contacts",
            Crm::Pipedrive(..) => "leads",
        }
    }

    /// The email field of `object` as the provider names it.
    pub fn email_field(&self) -> &'static str {
        match self {
            Crm::Salesforce(_) => "Email",
            Crm::Hubspot(_) | Crm::Pipedrive(..) => "email",
        }
    }

    /// The fields `object` has, by API name.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn field_names(&self, object: &str) -> Result<Vec<String>> {
        let schema = self.sink().describe(object).await?;
        Ok(schema.fields.into_iter().map(|f| f.name).collect())
    }

    /// The records of `object` holding each of `emails` (lower-cased
    /// keys), with `fields`. An email held by several records maps to the
    /// oldest one (Salesforce) or the first the CRM lists.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn find_by_email(
        &self,
        object: &str,
        emails: &[String],
        fields: &[&str],
    ) -> Result<HashMap<String, Record>> {
        let mut found = HashMap::new();
        match self {
            Crm::Salesforce(sf) => {
                for chunk in emails.chunks(LOOKUP_CHUNK) {
                    let soql = Select::new(object)?
                        .fields(
                            ["Id", "Email"].into_iter().chain(
                                fields
                                    .iter()
                                    .copied()
                                    .filter(|f| *f != "Id" && *f != "Email"),
                            ),
                        )?
                        .filter(Condition::is_in(
                            "Email",
                            chunk.iter().map(|e| Literal::text(e.as_str())).collect(),
                        )?)
                        .order_by(["CreatedDate", "Id"])?
                        .to_soql();
                    let mut page = sf.client().query(&soql, false).await?;
                    loop {
                        for row in page.records.drain(..) {
                            let record = sf_record(row);
                            if let Some(email) = record.text("Email").map(str::to_lowercase) {
                                found.entry(email).or_insert(record);
                            }
                        }
                        match page.next_records_url.take() {
                            Some(next) if !page.done => {
                                page = sf.client().query_more(&next).await?;
                            }
                            _ => break,
                        }
                    }
                }
            }
            Crm::Hubspot(hs) => {
                let props: Vec<String> = std::iter::once("email")
                    .chain(fields.iter().copied())
                    .map(str::to_owned)
                    .collect();
                for chunk in emails.chunks(LOOKUP_CHUNK) {
                    let answer = hs
                        .client()
                        .objects(object)
                        .batch_read(chunk, &props, Some("email"))
                        .await?;
                    for o in answer.results {
                        let mut r = Record::new().with_id(o.id.as_str());
                        for (k, v) in &o.properties {
                            r.set(k.clone(), v.clone().map_or(Value::Null, Value::Text));
                        }
                        if let Some(email) = r.text("email").map(str::to_lowercase) {
                            found.entry(email).or_insert(r);
                        }
                    }
                }
            }
            Crm::Pipedrive(pd, _) => {
                for email in emails {
                    let hits = pd
                        .client()
                        .search(ObjectKind::Persons, email, "email", true)
                        .await?;
                    let Some(hit) = hits.into_iter().next() else {
                        continue;
                    };
                    let Some(id) = hit.item.get("id").map(json_id) else {
                        continue;
                    };
                    if let Some(person) = pd.client().get(ObjectKind::Persons, &id).await? {
                        found.insert(email.to_lowercase(), pd_record(&id, person));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Writes contacts (provider field names, email set) to `object`:
    /// matched by email, created when new, updated when a value differs.
    /// One answer per input, in order: `Ok` with `Created`, `Updated` or
    /// `Unchanged`, or `Err` with the CRM's refusal of that record or the
    /// failure of its call. After a call fails, the records after it are
    /// not sent and carry the same error; the ones before keep their
    /// outcomes.
    pub async fn upsert_by_email(
        &self,
        object: &str,
        records: Vec<Record>,
    ) -> Vec<Result<WriteOutcome>> {
        let n = records.len();
        let mut out: Vec<Option<Result<WriteOutcome>>> = (0..n).map(|_| None).collect();
        // (op, key, [(input index, record)]) groups, each written in chunks.
        let groups: Vec<(WriteOp, Vec<(usize, Record)>)> = match self {
            Crm::Salesforce(_) => {
                let emails: Vec<String> = records
                    .iter()
                    .filter_map(|r| r.text("Email").map(str::to_lowercase))
                    .collect();
                let existing = match self.find_by_email(object, &emails, &[]).await {
                    Ok(e) => e,
                    Err(e) => return (0..n).map(|_| Err(e.clone())).collect(),
                };
                let mut creates = Vec::new();
                let mut updates = Vec::new();
                for (i, mut r) in records.into_iter().enumerate() {
                    let found = r
                        .text("Email")
                        .map(str::to_lowercase)
                        .and_then(|e| existing.get(&e))
                        .and_then(|f| f.id.clone());
                    match found {
                        Some(id) => {
                            r.id = Some(id);
                            updates.push((i, r));
                        }
                        None => creates.push((i, r)),
                    }
                }
                vec![(WriteOp::Create, creates), (WriteOp::Update, updates)]
            }
            Crm::Hubspot(_) | Crm::Pipedrive(..) => vec![(
                WriteOp::Upsert {
                    key: self.email_field().to_owned(),
                },
                records.into_iter().enumerate().collect(),
            )],
        };
        let sink = self.sink();
        let max = sink.max_batch(object).max(1);
        let mut failed: Option<Error> = None;
        for (op, group) in groups {
            for chunk in group.chunks(max) {
                if let Some(e) = &failed {
                    for (i, _) in chunk {
                        out[*i] = Some(Err(e.clone()));
                    }
                    continue;
                }
                let batch: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
                match sink.write(object, WriteBatch::new(op.clone(), batch)).await {
                    Ok(results) => {
                        for ((i, _), o) in chunk.iter().zip(results) {
                            out[*i] = Some(match o {
                                WriteOutcome::Rejected { error, .. } => Err(error),
                                other => Ok(other),
                            });
                        }
                    }
                    Err(e) => {
                        for (i, _) in chunk {
                            out[*i] = Some(Err(e.clone()));
                        }
                        failed = Some(e);
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Permanent,
                        "the CRM answered no outcome",
                    ))
                })
            })
            .collect()
    }

    /// [`Crm::upsert_by_email`] of one record.
    ///
    /// # Errors
    /// The CRM's refusal of the record, or the failure of the call.
    pub async fn upsert_one(&self, object: &str, record: Record) -> Result<WriteOutcome> {
        self.upsert_by_email(object, vec![record])
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::Permanent,
                    "the CRM answered no outcome",
                ))
            })
    }

    /// Writes one record: create when `id` is `None`, else update.
    ///
    /// # Errors
    /// The provider's error, or its refusal of the record.
    pub async fn write_one(
        &self,
        object: &str,
        id: Option<&RecordId>,
        mut record: Record,
    ) -> Result<WriteOutcome> {
        let op = if id.is_some() {
            WriteOp::Update
        } else {
            WriteOp::Create
        };
        record.id = id.cloned();
        let outcome = self
            .sink()
            .write(object, WriteBatch::new(op, vec![record]))
            .await?
            .into_iter()
            .next();
        match outcome {
            Some(WriteOutcome::Rejected { error, .. }) => Err(error),
            Some(o) => Ok(o),
            None => Err(Error::new(
                ErrorKind::Permanent,
                "the CRM answered no outcome",
            )),
        }
    }

    /// The Account named `name`, created when there is none (Salesforce).
    ///
    /// # Errors
    /// The provider's error.
    pub async fn salesforce_account(&self, name: &str) -> Result<Option<RecordId>> {
        let Crm::Salesforce(sf) = self else {
            return Ok(None);
        };
        let soql = Select::new("Account")?
            .fields(["Id"])?
            .filter(Condition::eq("Name", Literal::text(name))?)
            .order_by(["CreatedDate", "Id"])?
            .limit(1)
            .to_soql();
        let answer = sf.client().query(&soql, false).await?;
        if let Some(id) = answer
            .records
            .first()
            .and_then(|r| r.get("Id"))
            .and_then(serde_json::Value::as_str)
        {
            return Ok(Some(RecordId::new(id)));
        }
        match self
            .write_one("Account", None, Record::new().with("Name", name))
            .await?
        {
            WriteOutcome::Created(id) | WriteOutcome::Updated(id) | WriteOutcome::Unchanged(id) => {
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    /// Reads the contacts changed since `cursor` (all, without one): the
    /// changes and the cursor to store once they are kept.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn contacts_since(
        &self,
        cursor: Option<crm_core::Cursor>,
    ) -> Result<(Vec<crm_core::Change>, Option<crm_core::Cursor>)> {
        let object = self.contact_object();
        let req = match cursor {
            Some(c) => ReadRequest::since(object, c),
            None => ReadRequest::full(object),
        };
        let mut pages = self.source().read(req);
        let mut changes = Vec::new();
        let mut last = None;
        while let Some(page) = pages.next().await {
            let page = page?;
            changes.extend(page.changes);
            last = Some(page.cursor);
        }
        Ok((changes, last))
    }

    /// The email of a contact record as its provider spells it.
    pub fn email_of(&self, record: &Record) -> Option<String> {
        let text = match self {
            Crm::Salesforce(_) => record.text("Email").map(str::to_owned),
            Crm::Hubspot(_) => record.text("email").map(str::to_owned),
            Crm::Pipedrive(..) => record
                .get_path("email.0.value")
                .or_else(|| record.get_path("emails.0.value"))
                .and_then(|v| v.as_str().map(str::to_owned))
                .or_else(|| record.text("email").map(str::to_owned)),
        };
        text.map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
    }
}

fn json_id(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sf_record(mut row: serde_json::Map<String, serde_json::Value>) -> Record {
    row.remove("attributes");
    let mut r = Record::new();
    if let Some(id) = row.get("Id").and_then(serde_json::Value::as_str) {
        r = r.with_id(id);
    }
    for (k, v) in row {
        r.set(k, Value::from_json(v));
    }
    r
}

fn pd_record(id: &str, person: serde_json::Map<String, serde_json::Value>) -> Record {
    let mut r = Record::new().with_id(id);
    for (k, v) in person {
        r.set(k, Value::from_json(v));
    }
    r
}
