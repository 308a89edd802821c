//! The service's operations, independent of HTTP: each endpoint of seed
//! 002 and each automatic workflow is one method of [`Service`], callable
//! from Rust as well (an app embedding the service calls
//! [`Service::on_event`] where it creates conversations and messages).
//!
//! Every method takes the [`Caller`] (workspace, holder, role) and checks
//! the role first; an integration of another workspace is answered exactly
//! as an unknown one (404).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use crm_core::attribution::{AttributionConfig, Bucket, Conversion, Touchpoint, TouchpointKind};
use crm_core::engagement::{EngagementScorer, Interaction, InteractionKind};
use crm_core::pii::PiiFields;
use crm_core::{Change, Error, ErrorKind, Record, RecordId, Transform, Value, WriteOutcome};
use crm_sql::state::{ConnectionId, NewAuditEntry};
use crm_sync::access::Role;
use crm_sync::enrich::{Enrichment, NoteOutcome, SocialProfile, enrich};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crm::Crm;
use crate::error::ApiError;
use crate::model::*;
use crate::store::{self, Store, Stored};

/// Who calls: the token's workspace, holder and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The workspace the token acts in.
    pub workspace: String,
    /// The token's holder (audit entries name it).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    /// A caller.
    pub fn new(workspace: impl Into<String>, name: impl Into<String>, role: Role) -> Self {
        Caller {
            workspace: workspace.into(),
            name: name.into(),
            role,
        }
    }

    /// 403 unless the caller's role includes `role`.
    ///
    /// # Errors
    /// [`ApiError::forbidden`].
    pub fn needs(&self, role: Role) -> Result<(), ApiError> {
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(role.as_str()))
        }
    }
}

/// The CRM addresses used instead of the integrations' own (the
/// simulators).
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    /// Salesforce.
    pub salesforce: Option<String>,
    /// HubSpot.
    pub hubspot: Option<String>,
    /// Pipedrive.
    pub pipedrive: Option<String>,
}

impl Endpoints {
    fn of(&self, p: Provider) -> Option<&str> {
        match p {
            Provider::Salesforce => self.salesforce.as_deref(),
            Provider::Hubspot => self.hubspot.as_deref(),
            Provider::Pipedrive => self.pipedrive.as_deref(),
        }
    }
}

/// A contact's social data (kept sealed, see [`crate::store`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SocialDoc {
    /// The CRM object the id belongs to.
    object: String,
    profiles: Vec<SocialProfileInput>,
    interactions: Vec<Interaction>,
    sentiment: Option<String>,
}

/// A lead's touchpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TouchpointsDoc {
    touchpoints: Vec<Touchpoint>,
}

/// A conversation's contact.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConversationDoc {
    platform: String,
    object: String,
}

/// The platform's copy of a CRM contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformContact {
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    crm_id: String,
}

/// Pipedrive leads of a person, by email key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeadDoc {
    lead_id: String,
}

/// One async lock per integration.
type Locks = HashMap<ConnectionId, Arc<tokio::sync::Mutex<()>>>;

fn lock_of(locks: &Mutex<Locks>, id: &ConnectionId) -> Arc<tokio::sync::Mutex<()>> {
    Arc::clone(
        locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_default(),
    )
}

/// Field names of (integration, object), as the CRM described them.
type FieldCache = HashMap<(ConnectionId, String), Arc<Vec<String>>>;

/// The service.
pub struct Service {
    store: Store,
    endpoints: Endpoints,
    pii: PiiFields,
    crms: Mutex<HashMap<ConnectionId, Arc<Crm>>>,
    fields: Mutex<FieldCache>,
    pulls: Mutex<Locks>,
    /// One writer per integration at a time: a look-up by email and the
    /// create that follows must not interleave with another request's for
    /// the same email (two creates would duplicate the contact).
    writes: Mutex<Locks>,
    scorer: EngagementScorer,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// The hour an engagement score is computed at: the start of the current
/// hour, so repeated enrichments within an hour write the same score.
fn score_time(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now)
}

fn crm_error<'a>(pii: &'a PiiFields, input: &serde_json::Value) -> impl Fn(Error) -> ApiError + 'a {
    let input = input.clone();
    move |e| ApiError::from_crm(&e, pii, &input)
}

fn internal(e: Error) -> ApiError {
    ApiError::internal(&e)
}

fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(field, format!("`{field}` is not an RFC 3339 time")))
}

fn touchpoint_kind(text: &str, field: &str) -> Result<TouchpointKind, ApiError> {
    serde_json::from_value(json!(text.trim().to_lowercase())).map_err(|_| {
        ApiError::invalid(
            field,
            format!(
                "`{field}` must be one of view, post_view, click, comment, share, dm, conversion"
            ),
        )
    })
}

fn nonblank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A validated, normalized email.
fn email_of(text: &str, field: &str) -> Result<String, ApiError> {
    let e = text.trim().to_lowercase();
    if crm_core::validate::is_email(&e) {
        Ok(e)
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{field}` is not an email address"),
        ))
    }
}

/// A phone in E.164: the number plan's rules where the country is known
/// (`crm_core`'s phone transform); otherwise any international number of
/// 8 to 15 digits (ITU-T E.164's length), kept as `+` and its digits.
fn phone_of(text: &str, field: &str) -> Result<Option<String>, ApiError> {
    match Transform::phone(None).apply(Value::Text(text.to_owned())) {
        Ok(Value::Text(t)) => Ok(Some(t)),
        Ok(_) => Ok(None),
        Err(e) => {
            let t = text.trim();
            let digits: String = t.chars().filter(char::is_ascii_digit).collect();
            let shape_ok = t.strip_prefix('+').is_some_and(|rest| {
                rest.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
            });
            if shape_ok && (8..=15).contains(&digits.len()) {
                Ok(Some(format!("+{digits}")))
            } else {
                Err(ApiError::invalid(
                    field,
                    format!(
                        "`{field}` is not a phone number in international form \
                         (+<country><number>): {e}"
                    ),
                ))
            }
        }
    }
}

fn allowed(list: &[String], field: &str) -> bool {
    list.is_empty() || field == "email" || list.iter().any(|f| f == field)
}

fn profile_of(p: &SocialProfileInput) -> SocialProfile {
    let mut out = SocialProfile::new(p.platform.as_str(), p.username.as_str());
    if let Some(u) = &p.url {
        out = out.with_url(u.clone());
    }
    if let Some(f) = p.followers {
        out = out.with_followers(f);
    }
    if let Some(e) = p.engagement {
        out = out.with_engagement(e);
    }
    out
}

/// Merges `later` into `first` (same email): later non-empty values win,
/// profiles are merged by platform, custom fields by name.
fn merge(first: &mut ContactInput, later: ContactInput) {
    let pick = |a: &mut Option<String>, b: Option<String>| {
        if b.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            *a = b;
        }
    };
    pick(&mut first.first_name, later.first_name);
    pick(&mut first.last_name, later.last_name);
    pick(&mut first.company, later.company);
    pick(&mut first.phone, later.phone);
    for p in later.social_profiles {
        let platform = crm_core::attribution::Platform::from(p.platform.as_str());
        match first
            .social_profiles
            .iter_mut()
            .find(|q| crm_core::attribution::Platform::from(q.platform.as_str()) == platform)
        {
            Some(q) => *q = p,
            None => first.social_profiles.push(p),
        }
    }
    first.custom_fields.extend(later.custom_fields);
}

/// What a contact write produced.
struct Written {
    record_id: RecordId,
    action: Action,
    written: Vec<String>,
}

fn outcome_action(o: &WriteOutcome) -> Option<(RecordId, Action)> {
    match o {
        WriteOutcome::Created(id) => Some((id.clone(), Action::Created)),
        WriteOutcome::Updated(id) => Some((id.clone(), Action::Updated)),
        WriteOutcome::Unchanged(id) => Some((id.clone(), Action::Unchanged)),
        _ => None,
    }
}

impl Service {
    /// A service over `store`; `endpoints` replaces the CRMs' addresses
    /// (set it to the simulators' in
    /// [`crate::config::ProvidersMode::Simulators`]).
    ///
    /// # Errors
    /// An invalid engagement configuration.
    pub fn new(store: Store, endpoints: Endpoints, pii: PiiFields) -> crm_core::Result<Service> {
        Ok(Service {
            store,
            endpoints,
            pii,
            crms: Mutex::new(HashMap::new()),
            fields: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            scorer: crm_core::engagement::EngagementConfig::default().build()?,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The personal fields masked and sealed.
    pub fn pii(&self) -> &PiiFields {
        &self.pii
    }

    async fn audit(
        &self,
        caller: &str,
        action: &str,
        id: &ConnectionId,
        object: &str,
        record: &str,
        new: serde_json::Value,
    ) -> Result<(), ApiError> {
        let entry = NewAuditEntry::new(caller, action)
            .connection(id.clone())
            .record(object, record)
            .values(None, Some(new));
        self.store
            .state()
            .audit(&entry)
            .await
            .map(|_| ())
            .map_err(internal)
    }

    async fn integration(&self, caller: &Caller, id: &str) -> Result<Stored, ApiError> {
        let id = ConnectionId::new(id);
        self.store
            .get(&caller.workspace, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found("no integration with this id in your workspace"))
    }

    async fn crm(&self, s: &Stored) -> Result<Arc<Crm>, ApiError> {
        if let Some(c) = self
            .crms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(s.id())
        {
            return Ok(Arc::clone(c));
        }
        let creds = self.store.credentials(s.id()).await.map_err(internal)?;
        let crm = Crm::connect(
            s.provider,
            &creds,
            self.endpoints.of(s.provider),
            s.settings.sync_config.pipedrive_fields.as_ref(),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "bad_credentials",
                format!("the stored credentials cannot be used: {}", e.message()),
            )
        })?;
        let crm = Arc::new(crm);
        self.crms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(s.id().clone(), Arc::clone(&crm));
        Ok(crm)
    }

    async fn field_names(
        &self,
        s: &Stored,
        crm: &Crm,
        object: &str,
    ) -> Result<Arc<Vec<String>>, Error> {
        let key = (s.id().clone(), object.to_owned());
        if let Some(f) = self
            .fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(Arc::clone(f));
        }
        let names = Arc::new(crm.field_names(object).await?);
        self.fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::clone(&names));
        Ok(names)
    }

    // ------------------------------------------------------------ integrations

    /// `POST /api/crm/integrations` (admin): checks the credentials with
    /// one call to the CRM, then stores them sealed.
    ///
    /// # Errors
    /// 403, 422 naming the field (credentials refused: `credentials`), 409
    /// for a name taken.
    pub async fn create_integration(
        &self,
        caller: &Caller,
        req: &CreateIntegration,
    ) -> Result<Integration, ApiError> {
        caller.needs(Role::Admin)?;
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.contains('/') {
            return Err(ApiError::invalid(
                "name",
                "`name` must be 1 to 200 characters, without `/`",
            ));
        }
        let sc = &req.sync_config;
        if !(1..=1440).contains(&sc.sync_interval) {
            return Err(ApiError::invalid(
                "syncConfig.syncInterval",
                "`syncInterval` is in minutes, from 1 to 1440",
            ));
        }
        if sc.half_life_hours == 0 {
            return Err(ApiError::invalid(
                "syncConfig.halfLifeHours",
                "`halfLifeHours` is at least 1",
            ));
        }
        // The keys' form holds for every provider (the document says so);
        // the Pipedrive client checks them only for Pipedrive.
        if let Some((name, _)) = sc
            .pipedrive_fields
            .as_ref()
            .and_then(PipedriveFieldKeys::first_malformed)
        {
            return Err(ApiError::invalid(
                format!("syncConfig.pipedriveFields.{name}"),
                format!(
                    "`{name}` is a Pipedrive field key: 40 hexadecimal digits \
                     (GET /v1/personFields lists them)"
                ),
            ));
        }
        let crm = Crm::connect(
            req.provider,
            &req.credentials,
            self.endpoints.of(req.provider),
            sc.pipedrive_fields.as_ref(),
        )
        .map_err(|e| {
            let field = e.context_value("field").map_or_else(
                || "credentials".to_owned(),
                |f| {
                    if f.starts_with("credentials") {
                        f.to_owned()
                    } else {
                        format!("syncConfig.pipedriveFields ({f})")
                    }
                },
            );
            ApiError::invalid(field, e.message().to_owned())
        })?;
        match crm.check().await {
            Ok(()) => {}
            Err(e) if e.kind() == &ErrorKind::Auth => {
                return Err(ApiError::invalid(
                    "credentials",
                    format!("{} refused the credentials", req.provider.as_str()),
                ));
            }
            Err(e) => return Err(ApiError::from_crm(&e, &self.pii, &json!({}))),
        }
        let mut req = req.clone();
        req.name = name.to_owned();
        let stored = self
            .store
            .create(&caller.workspace, &req)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", e.message()).with_field("name")
                }
                _ => internal(e),
            })?;
        self.crms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stored.id().clone(), Arc::new(crm));
        self.audit(
            &caller.name,
            "integration.create",
            stored.id(),
            "integration",
            stored.id().as_str(),
            json!({"provider": req.provider.as_str(), "name": req.name,
                   "credentials": stored.settings.shown_credentials}),
        )
        .await?;
        tracing::info!(integration = %stored.id(), provider = req.provider.as_str(), "integration created");
        Ok(stored.view())
    }

    /// `GET /api/crm/integrations` (viewer).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_integrations(&self, caller: &Caller) -> Result<IntegrationList, ApiError> {
        caller.needs(Role::Viewer)?;
        let all = self.store.list(&caller.workspace).await.map_err(internal)?;
        Ok(IntegrationList {
            integrations: all.iter().map(Stored::view).collect(),
        })
    }

    /// `GET /api/crm/integrations/{id}` (viewer).
    ///
    /// # Errors
    /// 404 for an unknown id or another workspace's.
    pub async fn get_integration(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Integration, ApiError> {
        caller.needs(Role::Viewer)?;
        Ok(self.integration(caller, id).await?.view())
    }

    // ------------------------------------------------------------ contacts

    /// The provider record of a contact, and the fields left out.
    /// `accounts` keeps the Salesforce Accounts found or created by name,
    /// so a batch looks each company up once.
    async fn contact_record(
        &self,
        s: &Stored,
        crm: &Crm,
        c: &ContactInput,
        prefix: &str,
        accounts: &mut HashMap<String, Option<RecordId>>,
    ) -> Result<(Record, Vec<SkippedField>), ApiError> {
        let list = &s.settings.sync_config.contact_fields;
        let email = email_of(&c.email, &format!("{prefix}email"))?;
        let phone = match nonblank(&c.phone) {
            Some(p) if allowed(list, "phone") => phone_of(p, &format!("{prefix}phone"))?,
            _ => None,
        };
        let first = nonblank(&c.first_name).filter(|_| allowed(list, "firstName"));
        // Salesforce requires it to create a contact: always written.
        let last = nonblank(&c.last_name);
        let company = nonblank(&c.company).filter(|_| allowed(list, "company"));
        let mut skipped = Vec::new();
        let mut r = Record::new();
        match crm {
            Crm::Salesforce(_) => {
                r.set("Email", email.as_str());
                if let Some(v) = first {
                    r.set("FirstName", v);
                }
                if let Some(v) = last {
                    r.set("LastName", v);
                }
                if let Some(p) = &phone {
                    r.set("Phone", p.as_str());
                }
                if let Some(name) = company {
                    let account = match accounts.get(name) {
                        Some(a) => a.clone(),
                        None => {
                            let a = crm
                                .salesforce_account(name)
                                .await
                                .map_err(crm_error(&self.pii, &json!({})))?;
                            accounts.insert(name.to_owned(), a.clone());
                            a
                        }
                    };
                    if let Some(a) = account {
                        r.set("AccountId", a.as_str());
                    }
                }
            }
            Crm::Hubspot(_) => {
                r.set("email", email.as_str());
                if let Some(v) = first {
                    r.set("firstname", v);
                }
                if let Some(v) = last {
                    r.set("lastname", v);
                }
                if let Some(p) = &phone {
                    r.set("phone", p.as_str());
                }
                if let Some(v) = company {
                    r.set("company", v);
                }
            }
            Crm::Pipedrive(..) => {
                r.set("email", email.as_str());
                let name = match (first, last) {
                    (Some(f), Some(l)) => Some(format!("{f} {l}")),
                    (Some(n), None) | (None, Some(n)) => Some(n.to_owned()),
                    (None, None) => None,
                };
                r.set("name", name.unwrap_or_else(|| email.clone()));
                if let Some(p) = &phone {
                    r.set("phone", p.as_str());
                }
                if company.is_some() {
                    skipped.push(SkippedField {
                        field: "company".into(),
                        reason: "Pipedrive links a person to an organization by id; the \
                                 company name is not written"
                            .into(),
                    });
                }
            }
        }
        if !c.custom_fields.is_empty() {
            let object = crm.contact_object();
            let names = self
                .field_names(s, crm, object)
                .await
                .map_err(crm_error(&self.pii, &json!({})))?;
            for (name, value) in &c.custom_fields {
                let candidates = [name.clone(), format!("{name}__c"), name.to_lowercase()];
                let found = candidates
                    .iter()
                    .find_map(|cand| names.iter().find(|n| n.eq_ignore_ascii_case(cand)).cloned());
                match found {
                    Some(api) if !matches!(api.as_str(), "Id" | "id") => {
                        r.set(api, value.as_str());
                    }
                    _ => skipped.push(SkippedField {
                        field: format!("customFields.{name}"),
                        reason: format!("the {} {object} has no such field", s.provider.as_str()),
                    }),
                }
            }
        }
        Ok((r, skipped))
    }

    async fn write_contacts(&self, crm: &Crm, records: Vec<Record>) -> Vec<Result<Written, Error>> {
        let sent: Vec<Vec<String>> = records
            .iter()
            .map(|r| r.fields.keys().cloned().collect())
            .collect();
        crm.upsert_by_email(crm.contact_object(), records)
            .await
            .into_iter()
            .zip(sent)
            .map(|(o, fields)| {
                let o = o?;
                match outcome_action(&o) {
                    Some((record_id, action)) => Ok(Written {
                        record_id,
                        written: if action == Action::Unchanged {
                            Vec::new()
                        } else {
                            fields
                        },
                        action,
                    }),
                    None => Err(Error::new(
                        ErrorKind::Permanent,
                        "the CRM answered no outcome",
                    )),
                }
            })
            .collect()
    }

    /// Writes the social profiles of a contact to its CRM record and keeps
    /// them; answers the fields written.
    async fn apply_profiles(
        &self,
        s: &Stored,
        crm: &Crm,
        object: &str,
        id: &RecordId,
        profiles: &[SocialProfileInput],
    ) -> Result<Vec<String>, ApiError> {
        if profiles.is_empty() {
            return Ok(Vec::new());
        }
        let mut doc: SocialDoc = self
            .store
            .doc(s.id(), store::SOCIAL, id.as_str())
            .await
            .map_err(internal)?
            .map(|(d, _)| d)
            .unwrap_or_default();
        doc.object = object.to_owned();
        for p in profiles {
            let platform = crm_core::attribution::Platform::from(p.platform.as_str());
            doc.profiles
                .retain(|q| crm_core::attribution::Platform::from(q.platform.as_str()) != platform);
            doc.profiles.push(p.clone());
        }
        let enrichment = Enrichment::new(doc.profiles.iter().map(profile_of).collect());
        enrichment
            .validate()
            .map_err(|e| ApiError::from_crm(&e, &self.pii, &json!({})))?;
        let report = enrich(&crm.enrich_target(), object, id, &enrichment)
            .await
            .map_err(crm_error(&self.pii, &json!({})))?;
        self.store
            .put_doc(s.id(), store::SOCIAL, id.as_str(), Some(id.as_str()), &doc)
            .await
            .map_err(internal)?;
        Ok(report.written_fields)
    }

    fn check_profiles(profiles: &[SocialProfileInput], prefix: &str) -> Result<(), ApiError> {
        Enrichment::new(profiles.iter().map(profile_of).collect())
            .validate()
            .map_err(|e| {
                let field = e.context_value("field").unwrap_or("socialProfiles");
                ApiError::invalid(format!("{prefix}{field}"), e.message().to_owned())
            })
    }

    /// `POST .../contacts/sync` (operator): creates or updates the CRM
    /// contact with this email, then writes its social profiles.
    ///
    /// # Errors
    /// 422 naming the field; the CRM's refusal; 503 when the CRM is
    /// unavailable (the contact is kept and sent again by the hourly job).
    pub async fn sync_contact(
        &self,
        caller: &Caller,
        id: &str,
        input: &ContactInput,
    ) -> Result<SyncResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        self.sync_contact_in(caller, &s, input).await
    }

    /// [`Service::sync_contact`] on an integration already looked up.
    async fn sync_contact_in(
        &self,
        caller: &Caller,
        s: &Stored,
        input: &ContactInput,
    ) -> Result<SyncResult, ApiError> {
        if s.settings.sync_config.direction == Direction::FromCrm {
            return Err(direction_refused("contacts"));
        }
        let result = self.push_contact(s, input, "").await;
        if let Err(e) = &result {
            self.keep(s, input, e).await?;
        }
        let result = result?;
        self.audit(
            &caller.name,
            "contact.sync",
            s.id(),
            &result.object,
            &result.record_id,
            json!({"action": result.action, "fields": result.written_fields}),
        )
        .await?;
        Ok(result)
    }

    async fn push_contact(
        &self,
        s: &Stored,
        input: &ContactInput,
        prefix: &str,
    ) -> Result<SyncResult, ApiError> {
        Service::check_profiles(&input.social_profiles, prefix)?;
        let crm = self.crm(s).await?;
        let body = serde_json::to_value(input).unwrap_or_default();
        let (record, skipped) = self
            .contact_record(s, &crm, input, prefix, &mut HashMap::new())
            .await?;
        let lock = lock_of(&self.writes, s.id());
        let guard = lock.lock().await;
        let written = self
            .write_contacts(&crm, vec![record])
            .await
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, "crm_rejected", "no outcome"))?
            .map_err(crm_error(&self.pii, &body))?;
        drop(guard);
        let object = crm.contact_object();
        let social = self
            .apply_profiles(s, &crm, object, &written.record_id, &input.social_profiles)
            .await?;
        let mut fields = written.written;
        fields.extend(social);
        let action = match written.action {
            Action::Unchanged if !fields.is_empty() => Action::Updated,
            a => a,
        };
        tracing::info!(integration = %s.id(), object, action = ?action, fields = fields.len(), "contact synced");
        Ok(SyncResult {
            record_id: written.record_id.into_inner(),
            object: object.to_owned(),
            action,
            written_fields: fields,
            skipped_fields: skipped,
        })
    }

    /// Keeps a contact the CRM did not take as a dead letter (its
    /// personal fields sealed): stage `crm` when the CRM was unavailable
    /// (the hourly job sends it again), `crm_rejected` when it refused the
    /// record (it waits for a person; the hourly job tries it too, at most
    /// 5 times in all). Bad input the service refused itself is not kept:
    /// the caller got the error naming the field.
    async fn keep(&self, s: &Stored, input: &ContactInput, e: &ApiError) -> Result<(), ApiError> {
        let stage = match e.kind {
            "crm_unavailable" | "rate_limited" | "crm_quota_exhausted" | "crm_auth" => "crm",
            "crm_rejected" => "crm_rejected",
            _ => return Ok(()),
        };
        let body = serde_json::to_value(input).unwrap_or_default();
        self.store
            .state()
            .add_dead_letter(
                Some(s.id()),
                store::PENDING_CONTACT,
                &body,
                stage,
                &e.message,
            )
            .await
            .map_err(internal)?;
        tracing::warn!(integration = %s.id(), kind = e.kind, stage, "contact kept as a dead letter");
        Ok(())
    }

    /// `POST .../contacts/batch-sync` (operator): dedupes by email (later
    /// items merge into the first with the same email), writes the rest
    /// in the CRM's batch size, one answer per item.
    ///
    /// # Errors
    /// 403, 404, 422 for an empty or oversized batch; items fail on their
    /// own.
    pub async fn batch_sync(
        &self,
        caller: &Caller,
        id: &str,
        items: Vec<ContactInput>,
    ) -> Result<BatchResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        if s.settings.sync_config.direction == Direction::FromCrm {
            return Err(direction_refused("contacts"));
        }
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(ApiError::invalid(
                "",
                format!("a batch holds 1 to {MAX_BATCH} contacts"),
            ));
        }
        let crm = self.crm(&s).await?;
        let received = items.len();
        let mut results: Vec<BatchItem> = (0..received)
            .map(|index| BatchItem {
                index,
                record_id: None,
                action: None,
                duplicate_of: None,
                error: None,
            })
            .collect();
        // Dedupe by normalized email; invalid emails fail alone.
        let mut first_of: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<(usize, ContactInput)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let email = match email_of(&item.email, &format!("[{i}].email")) {
                Ok(e) => e,
                Err(e) => {
                    results[i].error = Some(item_error(e, i));
                    continue;
                }
            };
            match first_of.get(&email) {
                Some(&j) => {
                    results[i].duplicate_of = Some(j);
                    if let Some((_, first)) = merged.iter_mut().find(|(k, _)| *k == j) {
                        merge(first, item);
                    }
                }
                None => {
                    first_of.insert(email, i);
                    merged.push((i, item));
                }
            }
        }
        let unique = merged.len();
        let mut ready: Vec<(usize, ContactInput, Record)> = Vec::new();
        let mut accounts = HashMap::new();
        for (i, item) in merged {
            let prefix = format!("[{i}].");
            let built = match Service::check_profiles(&item.social_profiles, &prefix) {
                Ok(()) => {
                    self.contact_record(&s, &crm, &item, &prefix, &mut accounts)
                        .await
                }
                Err(e) => Err(e),
            };
            match built {
                Ok((record, _skipped)) => ready.push((i, item, record)),
                Err(e) => results[i].error = Some(item_error(e, i)),
            }
        }
        let records: Vec<Record> = ready.iter().map(|(_, _, r)| r.clone()).collect();
        let lock = lock_of(&self.writes, s.id());
        let guard = lock.lock().await;
        let written = self.write_contacts(&crm, records).await;
        drop(guard);
        let object = crm.contact_object();
        for ((i, item, _), w) in ready.iter().zip(written) {
            match w {
                Ok(w) => {
                    let mut action = w.action;
                    match self
                        .apply_profiles(&s, &crm, object, &w.record_id, &item.social_profiles)
                        .await
                    {
                        Ok(f) if !f.is_empty() && action == Action::Unchanged => {
                            action = Action::Updated;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            results[*i].error = Some(item_error(e, *i));
                        }
                    }
                    results[*i].record_id = Some(w.record_id.into_inner());
                    results[*i].action = Some(action);
                }
                Err(e) => {
                    // Refused or not sent: kept, personal fields sealed,
                    // for the hourly job (unavailable) or a person (refused).
                    let body = serde_json::to_value(item).unwrap_or_default();
                    let err = ApiError::from_crm(&e, &self.pii, &body);
                    self.keep(&s, item, &err).await?;
                    results[*i].error = Some(item_error(err, *i));
                }
            }
        }
        let count = |a: Action| results.iter().filter(|r| r.action == Some(a)).count();
        let result = BatchResult {
            received,
            unique,
            duplicates: results.iter().filter(|r| r.duplicate_of.is_some()).count(),
            created: count(Action::Created),
            updated: count(Action::Updated),
            unchanged: count(Action::Unchanged),
            failed: results
                .iter()
                .filter(|r| r.error.is_some() && r.action.is_none())
                .count(),
            results,
        };
        self.audit(
            &caller.name,
            "contact.batch_sync",
            s.id(),
            object,
            "batch",
            json!({"received": result.received, "created": result.created,
                   "updated": result.updated, "unchanged": result.unchanged,
                   "failed": result.failed}),
        )
        .await?;
        tracing::info!(integration = %s.id(), received, unique, created = result.created,
            updated = result.updated, failed = result.failed, "batch synced");
        Ok(result)
    }

    /// `GET .../contacts?email=` (viewer): the CRM contact with this
    /// email. Personal fields are masked unless `reveal` is asked by an
    /// operator or admin; a reveal is audited.
    ///
    /// # Errors
    /// 404 when the CRM has no such contact; 403 for a viewer's reveal.
    pub async fn get_contact(
        &self,
        caller: &Caller,
        id: &str,
        email: &str,
        reveal: bool,
    ) -> Result<ContactAnswer, ApiError> {
        caller.needs(Role::Viewer)?;
        if reveal {
            caller.needs(Role::Operator)?;
        }
        let s = self.integration(caller, id).await?;
        let email = email_of(email, "email")?;
        let crm = self.crm(&s).await?;
        let object = crm.contact_object();
        let fields: &[&str] = match &*crm {
            Crm::Salesforce(_) => &["FirstName", "LastName", "Phone", "Account.Name"],
            Crm::Hubspot(_) => &["firstname", "lastname", "phone", "company"],
            Crm::Pipedrive(..) => &[],
        };
        let found = crm
            .find_by_email(object, std::slice::from_ref(&email), fields)
            .await
            .map_err(crm_error(&self.pii, &json!({"email": email})))?;
        let Some(r) = found.get(&email) else {
            return Err(ApiError::not_found(format!(
                "{} has no contact with this email",
                s.provider.as_str()
            )));
        };
        let text = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| {
                r.get_path(n)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|t| !t.is_empty())
            })
        };
        let (first, last) = match &*crm {
            Crm::Pipedrive(..) => (text(&["first_name"]), text(&["last_name"])),
            _ => (
                text(&["FirstName", "firstname"]),
                text(&["LastName", "lastname"]),
            ),
        };
        let mut out = ContactOut {
            id: r
                .id
                .as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default(),
            email: crm.email_of(r),
            first_name: first,
            last_name: last,
            phone: text(&["Phone", "phone", "phone.0.value", "phones.0.value"]),
            company: text(&["Account.Name", "company", "org_name"]),
            masked: !reveal,
        };
        if reveal {
            self.audit(
                &caller.name,
                "contact.reveal",
                s.id(),
                object,
                &out.id,
                json!({"fields": ["email", "firstName", "lastName", "phone"]}),
            )
            .await?;
        } else {
            let m = |v: &mut Option<String>| {
                if let Some(t) = v {
                    *t = crm_core::pii::mask_str(t, crm_core::pii::PiiKind::Auto);
                }
            };
            m(&mut out.email);
            m(&mut out.first_name);
            m(&mut out.last_name);
            m(&mut out.phone);
        }
        Ok(ContactAnswer { contact: out })
    }

    // ------------------------------------------------------------ leads

    /// `POST .../leads/sync` (operator).
    ///
    /// # Errors
    /// As [`Service::sync_contact`].
    pub async fn sync_lead(
        &self,
        caller: &Caller,
        id: &str,
        input: &LeadInput,
    ) -> Result<SyncResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        if s.settings.sync_config.direction == Direction::FromCrm {
            return Err(direction_refused("leads"));
        }
        let body = serde_json::to_value(input).unwrap_or_default();
        let map_err = crm_error(&self.pii, &body);
        let list = &s.settings.sync_config.lead_fields;
        let email = email_of(&input.email, "email")?;
        let first = nonblank(&input.first_name).filter(|_| allowed(list, "firstName"));
        // Salesforce requires both to create a lead: always written.
        let last = nonblank(&input.last_name);
        let company = nonblank(&input.company);
        let source = nonblank(&input.source).filter(|_| allowed(list, "source"));
        let status = nonblank(&input.status).filter(|_| allowed(list, "status"));
        let ctx = input.social_context.as_ref();
        if ctx
            .and_then(|c| c.engagement_score)
            .is_some_and(|s| s > 100)
        {
            return Err(ApiError::invalid(
                "socialContext.engagementScore",
                "`engagementScore` is 0 to 100",
            ));
        }
        let crm = self.crm(&s).await?;
        let lock = lock_of(&self.writes, s.id());
        let _guard = lock.lock().await;
        let mut skipped = Vec::new();
        let skip = |skipped: &mut Vec<SkippedField>, field: &str, reason: &str| {
            skipped.push(SkippedField {
                field: field.to_owned(),
                reason: reason.to_owned(),
            });
        };
        let (object, written, person) = match &*crm {
            Crm::Salesforce(_) => {
                let mut r = Record::new().with("Email", email.as_str());
                if let Some(v) = first {
                    r.set("FirstName", v);
                }
                if let Some(v) = last {
                    r.set("LastName", v);
                }
                if let Some(v) = company {
                    r.set("Company", v);
                }
                if let Some(v) = source {
                    r.set("LeadSource", v);
                }
                if let Some(v) = status {
                    r.set("Status", salesforce_status(v));
                }
                let w = crm.upsert_one("Lead", r).await.map_err(&map_err)?;
                ("Lead", w, None)
            }
            Crm::Hubspot(_) => {
                let mut r = Record::new()
                    .with("email", email.as_str())
                    .with("lifecyclestage", "lead");
                if let Some(v) = first {
                    r.set("firstname", v);
                }
                if let Some(v) = last {
                    r.set("lastname", v);
                }
                if let Some(v) = company {
                    r.set("company", v);
                }
                if let Some(v) = status {
                    r.set("hs_lead_status", hubspot_status(v));
                }
                if source.is_some() {
                    skip(
                        &mut skipped,
                        "source",
                        "HubSpot sets a contact's original source from its own tracking",
                    );
                }
                let w = crm.upsert_one("contacts", r).await.map_err(&map_err)?;
                ("contacts", w, None)
            }
            Crm::Pipedrive(..) => {
                let name = match (first, last) {
                    (Some(f), Some(l)) => format!("{f} {l}"),
                    (Some(n), None) | (None, Some(n)) => n.to_owned(),
                    (None, None) => email.clone(),
                };
                let person = crm
                    .upsert_one(
                        "persons",
                        Record::new()
                            .with("email", email.as_str())
                            .with("name", name.as_str()),
                    )
                    .await
                    .map_err(&map_err)?;
                let person_id = outcome_action(&person).map(|(pid, _)| pid).ok_or_else(|| {
                    ApiError::new(StatusCode::BAD_GATEWAY, "crm_rejected", "no outcome")
                })?;
                if status.is_some() {
                    skip(
                        &mut skipped,
                        "status",
                        "Pipedrive leads have labels, not a status",
                    );
                }
                let key = store::email_key(s.id(), &email);
                let known: Option<LeadDoc> = self
                    .store
                    .doc(s.id(), "pipedrive_lead", &key)
                    .await
                    .map_err(internal)?
                    .map(|(d, _)| d);
                let title = match (company, source) {
                    (Some(c), _) => format!("{name} ({c})"),
                    (None, Some(src)) => format!("{name} ({src})"),
                    (None, None) => name.clone(),
                };
                let lead = Record::new()
                    .with("title", title.as_str())
                    .with("person_id", person_id.as_str());
                let outcome = match &known {
                    Some(k) => {
                        match crm
                            .write_one(
                                "leads",
                                Some(&RecordId::new(k.lead_id.clone())),
                                lead.clone(),
                            )
                            .await
                        {
                            Err(e) if e.kind() == &ErrorKind::NotFound => {
                                crm.write_one("leads", None, lead).await
                            }
                            other => other,
                        }
                    }
                    None => crm.write_one("leads", None, lead).await,
                }
                .map_err(&map_err)?;
                if let Some((lid, _)) = outcome_action(&outcome) {
                    self.store
                        .put_doc(
                            s.id(),
                            "pipedrive_lead",
                            &key,
                            Some(lid.as_str()),
                            &LeadDoc {
                                lead_id: lid.as_str().to_owned(),
                            },
                        )
                        .await
                        .map_err(internal)?;
                }
                ("leads", outcome, Some(person_id))
            }
        };
        let (record_id, mut action) = outcome_action(&written)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, "crm_rejected", "no outcome"))?;
        let mut fields: Vec<String> = Vec::new();
        if action != Action::Unchanged {
            fields.push("lead".to_owned());
        }
        // The social context goes to the lead's social fields (Pipedrive:
        // its person).
        if let Some(ctx) = ctx {
            let mut e = Enrichment::new(Vec::new());
            if let Some(score) = ctx.engagement_score {
                e = e.with_engagement_score(score);
            }
            if let Some(sent) = nonblank(&ctx.sentiment) {
                e = e.with_sentiment(sent);
            }
            if let Some(p) = nonblank(&ctx.platform) {
                e = e.with_primary_platform(p);
            }
            let (target_object, target_id) = match &person {
                Some(pid) => ("persons", pid.clone()),
                None => (object, record_id.clone()),
            };
            let report = enrich(&crm.enrich_target(), target_object, &target_id, &e)
                .await
                .map_err(&map_err)?;
            if !report.is_unchanged() && action == Action::Unchanged {
                action = Action::Updated;
            }
            fields.extend(report.written_fields);
            if let Some(conv) = nonblank(&ctx.conversation_id) {
                let doc = ConversationDoc {
                    platform: nonblank(&ctx.platform).unwrap_or("unknown").to_owned(),
                    object: target_object.to_owned(),
                };
                self.store
                    .put_doc(
                        s.id(),
                        store::CONVERSATION,
                        conv,
                        Some(target_id.as_str()),
                        &doc,
                    )
                    .await
                    .map_err(internal)?;
            }
        }
        self.audit(
            &caller.name,
            "lead.sync",
            s.id(),
            object,
            record_id.as_str(),
            json!({"action": action, "fields": fields}),
        )
        .await?;
        tracing::info!(integration = %s.id(), object, action = ?action, "lead synced");
        Ok(SyncResult {
            record_id: record_id.into_inner(),
            object: object.to_owned(),
            action,
            written_fields: fields,
            skipped_fields: skipped,
        })
    }

    // ------------------------------------------------------------ enrichment

    /// `POST .../contacts/enrich` (operator): writes the social data the
    /// service holds for the contact (profiles from contact syncs and
    /// conversations; the engagement score, touchpoints and sentiment from
    /// messages) to its CRM fields. Writes only what differs: a second
    /// identical call writes nothing.
    ///
    /// # Errors
    /// 404 when no social data is recorded for the contact; the CRM's
    /// errors (a missing custom field: 422 naming it).
    pub async fn enrich_contact(
        &self,
        caller: &Caller,
        id: &str,
        req: &EnrichRequest,
    ) -> Result<EnrichResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        if req.provider.is_some_and(|p| p != s.provider) {
            return Err(ApiError::invalid(
                "provider",
                format!("this integration is {}", s.provider.as_str()),
            ));
        }
        if !req.include_social_data && !req.include_engagement_history {
            return Err(ApiError::invalid(
                "includeSocialData",
                "ask for social data, engagement history or both",
            ));
        }
        let contact = req.contact_id.trim();
        let doc: SocialDoc = self
            .store
            .doc(s.id(), store::SOCIAL, contact)
            .await
            .map_err(internal)?
            .map(|(d, _)| d)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_social_data",
                    "no social data is recorded for this contact: sync it with \
                     `socialProfiles` or send its conversations first",
                )
            })?;
        self.enrich_with(
            caller,
            &s,
            contact,
            &doc,
            req.include_social_data,
            req.include_engagement_history,
        )
        .await
    }

    /// Writes `doc`, the social data of `contact`, to the CRM record (the
    /// social profiles when `social`, the engagement when `history`).
    async fn enrich_with(
        &self,
        caller: &Caller,
        s: &Stored,
        contact: &str,
        doc: &SocialDoc,
        social: bool,
        history: bool,
    ) -> Result<EnrichResult, ApiError> {
        let (e, score) = self.enrichment(doc, social, history);
        let crm = self.crm(s).await?;
        let report = enrich(
            &crm.enrich_target(),
            &doc.object,
            &RecordId::new(contact),
            &e,
        )
        .await
        .map_err(crm_error(&self.pii, &json!({})))?;
        let note = match &report.note {
            NoteOutcome::None => "none",
            NoteOutcome::Created(_) => "created",
            NoteOutcome::Updated(_) => "updated",
            NoteOutcome::Unchanged(_) => "unchanged",
        };
        if !report.is_unchanged() {
            self.audit(
                &caller.name,
                "contact.enrich",
                s.id(),
                &doc.object,
                contact,
                json!({"fields": report.written_fields, "note": note}),
            )
            .await?;
        }
        tracing::info!(integration = %s.id(), written = report.written_fields.len(), note, "contact enriched");
        Ok(EnrichResult {
            contact_id: contact.to_owned(),
            unchanged: report.is_unchanged(),
            written_fields: report.written_fields,
            note: note.to_owned(),
            engagement_score: score.map(|d| d.to_string()),
        })
    }

    fn enrichment(
        &self,
        doc: &SocialDoc,
        social: bool,
        history: bool,
    ) -> (Enrichment, Option<Decimal>) {
        let mut e = Enrichment::new(if social {
            doc.profiles.iter().map(profile_of).collect()
        } else {
            Vec::new()
        });
        let mut score = None;
        if history && !doc.interactions.is_empty() {
            let d = self.scorer.score(&doc.interactions, score_time(Utc::now()));
            let whole = d.round().to_u8().unwrap_or(100).min(100);
            e = e
                .with_engagement_score(whole)
                .with_touchpoints(doc.interactions.iter().map(|i| u64::from(i.count)).sum());
            if let Some(sent) = &doc.sentiment {
                e = e.with_sentiment(sent.clone());
            }
            score = Some(d);
        }
        (e, score)
    }

    // ------------------------------------------------------------ attribution

    /// `POST .../leads/attribution` (operator): records the touchpoints
    /// (each once), attributes the lead's conversion with the model, and
    /// writes the touchpoint count and engagement score to the lead.
    ///
    /// # Errors
    /// 422 naming a bad touchpoint; 404 when the CRM has no such lead.
    pub async fn attribution(
        &self,
        caller: &Caller,
        id: &str,
        req: &AttributionRequest,
    ) -> Result<AttributionResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        let lead = req.lead_id.trim();
        if lead.is_empty() {
            return Err(ApiError::invalid("leadId", "`leadId` is empty"));
        }
        let mut new = Vec::with_capacity(req.touchpoints.len());
        for (i, t) in req.touchpoints.iter().enumerate() {
            let f = |name: &str| format!("touchpoints[{i}].{name}");
            let mut tp = Touchpoint::new(
                parse_time(&t.timestamp, &f("timestamp"))?,
                t.platform.as_str(),
                touchpoint_kind(&t.kind, &f("type"))?,
            );
            if t.platform.trim().is_empty() {
                return Err(ApiError::invalid(f("platform"), "`platform` is empty"));
            }
            if let Some(p) = nonblank(&t.post_id) {
                tp = tp.with_post(p);
            }
            if let Some(c) = nonblank(&t.conversation_id) {
                tp = tp.with_conversation(c);
            }
            if let Some(c) = nonblank(&t.campaign_id).or(nonblank(&req.campaign)) {
                tp = tp.with_campaign(c);
            }
            new.push(tp);
        }
        let converted = match &req.converted_at {
            Some(t) => Some(parse_time(t, "convertedAt")?),
            None => None,
        };
        let model = req
            .model
            .unwrap_or(s.settings.sync_config.attribution_model);
        let mut config = AttributionConfig::new(model.into());
        config.half_life_secs = u64::from(s.settings.sync_config.half_life_hours) * 3600;
        let attributor = config
            .build()
            .map_err(|e| ApiError::invalid("syncConfig.halfLifeHours", e.message().to_owned()))?;

        let previous: Option<TouchpointsDoc> = self
            .store
            .doc(s.id(), store::TOUCHPOINTS, lead)
            .await
            .map_err(internal)?
            .map(|(d, _)| d);
        let had_doc = previous.is_some();
        let mut doc = previous.unwrap_or_default();
        let mut repeated = 0;
        for tp in new {
            if doc.touchpoints.contains(&tp) {
                repeated += 1;
            } else {
                doc.touchpoints.push(tp);
            }
        }
        self.store
            .put_doc(s.id(), store::TOUCHPOINTS, lead, Some(lead), &doc)
            .await
            .map_err(internal)?;

        let at = converted
            .or_else(|| doc.touchpoints.iter().map(|t| t.time).max())
            .unwrap_or_else(Utc::now);
        let credit = attributor.attribute(&doc.touchpoints, &Conversion::new(at).with_lead(lead));
        let mut credits: Vec<CampaignCreditOut> = credit
            .campaigns
            .iter()
            .map(|c| CampaignCreditOut {
                campaign: match &c.bucket {
                    Bucket::Campaign(id) => Some(id.as_str().to_owned()),
                    Bucket::Unattributed => None,
                },
                credit: c.credit.to_string(),
            })
            .collect();
        credits.sort_by(|a, b| {
            let d = |c: &CampaignCreditOut| c.credit.parse::<Decimal>().unwrap_or_default();
            d(b).cmp(&d(a)).then_with(|| a.campaign.cmp(&b.campaign))
        });
        let interactions: Vec<Interaction> =
            doc.touchpoints.iter().map(Interaction::from).collect();
        let score = self.scorer.score(&interactions, score_time(Utc::now()));

        let crm = self.crm(&s).await?;
        // The touchpoint count and platform only: the engagement score
        // field belongs to enrichment, which weighs every interaction.
        let mut e = Enrichment::new(Vec::new()).with_touchpoints(doc.touchpoints.len() as u64);
        if let Some(src) = nonblank(&req.source) {
            e = e.with_primary_platform(src);
        }
        let (object, target) = match &*crm {
            Crm::Salesforce(_) => ("Lead".to_owned(), RecordId::new(lead)),
            Crm::Hubspot(_) => ("contacts".to_owned(), RecordId::new(lead)),
            Crm::Pipedrive(pd, _) => {
                let found = pd
                    .client()
                    .get(crm_pipedrive::ObjectKind::Leads, lead)
                    .await
                    .map_err(crm_error(&self.pii, &json!({})))?;
                let person = found
                    .as_ref()
                    .and_then(|l| l.get("person_id"))
                    .and_then(|p| {
                        p.as_u64()
                            .map(|n| n.to_string())
                            .or_else(|| p.as_str().map(str::to_owned))
                    });
                match person {
                    Some(p) => ("persons".to_owned(), RecordId::new(p)),
                    None => {
                        if !had_doc {
                            let _ = self.store.drop_doc(s.id(), store::TOUCHPOINTS, lead).await;
                        }
                        return Err(ApiError::not_found(
                            "Pipedrive has no lead with this id linked to a person",
                        ));
                    }
                }
            }
        };
        let report = match enrich(&crm.enrich_target(), &object, &target, &e).await {
            Ok(r) => r,
            Err(err) => {
                if err.kind() == &ErrorKind::NotFound && !had_doc {
                    let _ = self.store.drop_doc(s.id(), store::TOUCHPOINTS, lead).await;
                }
                return Err(ApiError::from_crm(&err, &self.pii, &json!({})));
            }
        };
        self.audit(
            &caller.name,
            "lead.attribution",
            s.id(),
            &object,
            lead,
            json!({"model": model, "touchpoints": doc.touchpoints.len(),
                   "credits": credits.iter().map(|c| json!({"campaign": c.campaign, "credit": c.credit})).collect::<Vec<_>>()}),
        )
        .await?;
        Ok(AttributionResult {
            lead_id: lead.to_owned(),
            model,
            touchpoints: doc.touchpoints.len(),
            repeated,
            credits,
            engagement_score: score.to_string(),
            written_fields: report.written_fields,
        })
    }

    // ------------------------------------------------------------ from the CRM

    /// `POST .../sync-from-crm` (operator): pulls the contacts changed in
    /// the CRM since the last pull into the platform's copy, then stores
    /// the checkpoint. One pull per integration at a time; a failed pull
    /// stores no checkpoint, so the next one reads the same changes again.
    ///
    /// # Errors
    /// 409 for a `to_crm` integration; the CRM's errors.
    pub async fn sync_from_crm(&self, caller: &Caller, id: &str) -> Result<PullResult, ApiError> {
        caller.needs(Role::Operator)?;
        let s = self.integration(caller, id).await?;
        let result = self.pull(&s).await?;
        self.audit(
            &caller.name,
            "contacts.pull",
            s.id(),
            "contacts",
            "all",
            json!({"pulled": result.pulled, "created": result.created,
                   "updated": result.updated, "deleted": result.deleted}),
        )
        .await?;
        Ok(result)
    }

    async fn pull(&self, s: &Stored) -> Result<PullResult, ApiError> {
        if s.settings.sync_config.direction == Direction::ToCrm {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this integration only syncs to the CRM (`direction: to_crm`)",
            ));
        }
        let lock = lock_of(&self.pulls, s.id());
        let _guard = lock.lock().await;
        let crm = self.crm(s).await?;
        let state = self.store.state();
        let cursor = state
            .checkpoint(s.id(), "contacts")
            .await
            .map_err(internal)?;
        let result = crm.contacts_since(cursor).await;
        let (changes, next) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = self
                    .store
                    .set_status(s.id(), false, Some(e.kind().as_str()))
                    .await;
                return Err(ApiError::from_crm(&e, &self.pii, &json!({})));
            }
        };
        let mut out = PullResult {
            pulled: changes.len(),
            created: 0,
            updated: 0,
            unchanged: 0,
            deleted: 0,
            skipped: 0,
        };
        for change in changes {
            match change {
                Change::Upsert(r) => {
                    let (Some(email), Some(crm_id)) = (crm.email_of(&r), r.id.clone()) else {
                        out.skipped += 1;
                        continue;
                    };
                    let text = |names: &[&str]| {
                        names.iter().find_map(|n| {
                            r.get_path(n)
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .filter(|t| !t.is_empty())
                        })
                    };
                    let contact = PlatformContact {
                        first_name: text(&["FirstName", "firstname", "first_name"]),
                        last_name: text(&["LastName", "lastname", "last_name"]),
                        phone: text(&["Phone", "phone", "phone.0.value"]),
                        company: text(&["company", "org_name"]),
                        crm_id: crm_id.into_inner(),
                        email,
                    };
                    let key = store::email_key(s.id(), &contact.email);
                    let before: Option<PlatformContact> = self
                        .store
                        .doc(s.id(), store::PLATFORM_CONTACT, &key)
                        .await
                        .map_err(internal)?
                        .map(|(d, _)| d);
                    match before {
                        Some(b) if b == contact => out.unchanged += 1,
                        Some(_) => out.updated += 1,
                        None => out.created += 1,
                    }
                    self.store
                        .put_doc(
                            s.id(),
                            store::PLATFORM_CONTACT,
                            &key,
                            Some(&contact.crm_id.clone()),
                            &contact,
                        )
                        .await
                        .map_err(internal)?;
                }
                Change::Delete { id, .. } => {
                    let found = state
                        .record_state_by_remote_in(s.id(), store::PLATFORM_CONTACT, id.as_str())
                        .await
                        .map_err(internal)?;
                    if let Some(f) = found {
                        self.store
                            .drop_doc(s.id(), store::PLATFORM_CONTACT, &f.local_id)
                            .await
                            .map_err(internal)?;
                        out.deleted += 1;
                    }
                }
            }
        }
        if let Some(c) = next {
            state
                .save_checkpoint(s.id(), "contacts", &c)
                .await
                .map_err(internal)?;
        }
        state
            .set_last_sync(s.id(), Utc::now())
            .await
            .map_err(internal)?;
        self.store
            .set_status(s.id(), true, None)
            .await
            .map_err(internal)?;
        tracing::info!(integration = %s.id(), pulled = out.pulled, created = out.created,
            updated = out.updated, deleted = out.deleted, "pulled contacts from the CRM");
        Ok(out)
    }

    // ------------------------------------------------------------ workflows

    /// `POST .../events` (operator): seed 002's automatic workflows.
    ///
    /// - `conversation_created`: the participant becomes (or updates) a CRM
    ///   contact with the social profile, and the conversation is linked
    ///   to it.
    /// - `message_sent`: a DM interaction of the linked contact; its
    ///   engagement score, touchpoint count and sentiment are written.
    /// - `post_engagement`: a touchpoint of a lead, then attribution again.
    ///
    /// # Errors
    /// 404 for a message of an unknown conversation; as the operations run.
    pub async fn on_event(
        &self,
        caller: &Caller,
        id: &str,
        event: &PlatformEvent,
    ) -> Result<EventResult, ApiError> {
        caller.needs(Role::Operator)?;
        match event {
            PlatformEvent::ConversationCreated {
                conversation_id,
                platform,
                email,
                name,
                username,
            } => {
                let conv = conversation_id.trim();
                if conv.is_empty() {
                    return Err(ApiError::invalid(
                        "conversationId",
                        "`conversationId` is empty",
                    ));
                }
                let (first, last) = match name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                    Some(n) => match n.rsplit_once(' ') {
                        Some((f, l)) => (Some(f.to_owned()), Some(l.to_owned())),
                        None => (None, Some(n.to_owned())),
                    },
                    None => (None, None),
                };
                let profiles = match username.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
                    Some(u) => vec![SocialProfileInput {
                        platform: platform.clone(),
                        username: u.trim_start_matches('@').to_owned(),
                        url: None,
                        followers: None,
                        engagement: None,
                    }],
                    None => Vec::new(),
                };
                let input = ContactInput {
                    email: email.clone(),
                    first_name: first,
                    last_name: last,
                    company: None,
                    phone: None,
                    social_profiles: profiles,
                    custom_fields: BTreeMap::new(),
                };
                let s = self.integration(caller, id).await?;
                let synced = self.sync_contact_in(caller, &s, &input).await?;
                self.store
                    .put_doc(
                        s.id(),
                        store::CONVERSATION,
                        conv,
                        Some(&synced.record_id),
                        &ConversationDoc {
                            platform: platform.clone(),
                            object: synced.object.clone(),
                        },
                    )
                    .await
                    .map_err(internal)?;
                Ok(EventResult {
                    workflow: "contact_linked".into(),
                    record_id: synced.record_id,
                    written_fields: synced.written_fields,
                })
            }
            PlatformEvent::MessageSent {
                conversation_id,
                timestamp,
                sentiment,
            } => {
                let s = self.integration(caller, id).await?;
                let at = parse_time(timestamp, "timestamp")?;
                let (link, contact): (ConversationDoc, Option<String>) = self
                    .store
                    .doc(s.id(), store::CONVERSATION, conversation_id.trim())
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| {
                        ApiError::not_found("no contact is linked to this conversation yet")
                    })?;
                let contact = contact
                    .ok_or_else(|| ApiError::not_found("the conversation has no contact"))?;
                let mut doc: SocialDoc = self
                    .store
                    .doc(s.id(), store::SOCIAL, &contact)
                    .await
                    .map_err(internal)?
                    .map(|(d, _)| d)
                    .unwrap_or_default();
                doc.object = link.object.clone();
                doc.interactions
                    .push(Interaction::new(InteractionKind::Dm, at, 1));
                if let Some(sent) = nonblank(sentiment) {
                    doc.sentiment = Some(sent.to_owned());
                }
                self.store
                    .put_doc(s.id(), store::SOCIAL, &contact, Some(&contact), &doc)
                    .await
                    .map_err(internal)?;
                let enriched = self
                    .enrich_with(caller, &s, &contact, &doc, false, true)
                    .await?;
                Ok(EventResult {
                    workflow: "engagement_updated".into(),
                    record_id: contact,
                    written_fields: enriched.written_fields,
                })
            }
            PlatformEvent::PostEngagement {
                lead_id,
                touchpoint,
                campaign,
            } => {
                let result = self
                    .attribution(
                        caller,
                        id,
                        &AttributionRequest {
                            lead_id: lead_id.clone(),
                            source: Some(touchpoint.platform.clone()),
                            campaign: campaign.clone(),
                            post_id: touchpoint.post_id.clone(),
                            conversation_id: touchpoint.conversation_id.clone(),
                            touchpoints: vec![touchpoint.clone()],
                            model: None,
                            converted_at: None,
                        },
                    )
                    .await?;
                Ok(EventResult {
                    workflow: "attribution_updated".into(),
                    record_id: result.lead_id,
                    written_fields: result.written_fields,
                })
            }
        }
    }

    // ------------------------------------------------------------ scheduled jobs

    /// The hourly job: contacts that could not reach their CRM (kept as
    /// dead letters) are sent again; one that goes through is removed,
    /// one that fails again counts an attempt (at most 5).
    ///
    /// # Errors
    /// Storage errors; CRM failures only count attempts.
    pub async fn retry_pending(&self) -> crm_core::Result<(usize, usize)> {
        let (mut sent, mut failed) = (0, 0);
        for s in self.store.all().await? {
            let sc = &s.settings.sync_config;
            if !sc.auto_sync || sc.direction == Direction::FromCrm {
                continue;
            }
            let letters = self.store.state().dead_letters(s.id(), 5, 1000).await?;
            for letter in letters
                .into_iter()
                .filter(|l| l.object == store::PENDING_CONTACT)
            {
                let Ok(input) = serde_json::from_value::<ContactInput>(letter.record.clone())
                else {
                    continue;
                };
                match self.push_contact(&s, &input, "").await {
                    Ok(r) => {
                        self.store.state().remove_dead_letter(&letter.id).await?;
                        let entry = NewAuditEntry::new("scheduler", "contact.sync")
                            .connection(s.id().clone())
                            .record(r.object.as_str(), r.record_id.as_str())
                            .values(
                                None,
                                Some(json!({"action": r.action, "fields": r.written_fields})),
                            );
                        self.store.state().audit(&entry).await?;
                        sent += 1;
                    }
                    Err(e) => {
                        self.store
                            .state()
                            .dead_letter_failed_again(
                                &letter.id,
                                &crm_core::pii::mask_emails_in(&e.message),
                            )
                            .await?;
                        failed += 1;
                    }
                }
            }
        }
        if sent + failed > 0 {
            tracing::info!(sent, failed, "hourly contact retry");
        }
        Ok((sent, failed))
    }

    /// The 6-hourly job: every `autoSync` integration that syncs from the
    /// CRM pulls its changes.
    ///
    /// # Errors
    /// Storage errors; a failing integration is logged and skipped.
    pub async fn pull_all(&self) -> crm_core::Result<usize> {
        let mut pulled = 0;
        for s in self.store.all().await? {
            let sc = &s.settings.sync_config;
            if !sc.auto_sync || sc.direction == Direction::ToCrm {
                continue;
            }
            match self.pull(&s).await {
                Ok(r) => pulled += r.pulled,
                Err(e) => {
                    tracing::warn!(integration = %s.id(), kind = e.kind, "scheduled pull failed")
                }
            }
        }
        Ok(pulled)
    }
}

/// The largest batch `contacts/batch-sync` takes.
pub const MAX_BATCH: usize = 5000;

/// The error of batch item `i`: its record and, for a field the CRM named,
/// the field's path in the batch.
fn item_error(e: ApiError, i: usize) -> crate::error::ErrorDetail {
    let prefix = format!("[{i}].");
    let field = e.field.clone().map(|f| {
        if f.starts_with('[') {
            f
        } else {
            format!("{prefix}{f}")
        }
    });
    let mut e = e.with_record(format!("[{i}]"));
    e.field = field;
    detail(e)
}

fn detail(e: ApiError) -> crate::error::ErrorDetail {
    crate::error::ErrorDetail {
        kind: e.kind.to_owned(),
        message: e.message,
        field: e.field,
        record: e.record,
    }
}

fn direction_refused(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!(
            "this integration only syncs from the CRM (`direction: from_crm`); {what} are not written"
        ),
    )
}

/// Seed 002's statuses in Salesforce's default Lead picklist.
fn salesforce_status(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "new" | "open" => "Open - Not Contacted",
        "working" | "contacted" | "in_progress" => "Working - Contacted",
        "qualified" | "converted" => "Closed - Converted",
        "unqualified" | "lost" | "closed" => "Closed - Not Converted",
        _ => return s.to_owned(),
    }
    .to_owned()
}

/// Seed 002's statuses as HubSpot `hs_lead_status` values.
fn hubspot_status(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "new" => "NEW",
        "open" => "OPEN",
        "working" | "contacted" | "in_progress" => "IN_PROGRESS",
        "qualified" | "converted" => "OPEN_DEAL",
        "unqualified" | "lost" | "closed" => "UNQUALIFIED",
        _ => return s.to_uppercase(),
    }
    .to_owned()
}
