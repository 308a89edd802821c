#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod mapping;
pub mod sink;
pub mod source;
pub mod webhook;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

use async_trait::async_trait;
use crm_core::{Capabilities, Connector, ObjectSchema, Result};

pub use client::PipedriveClient;
pub use config::{AuthConfig, PipedriveConfig, PipedriveConfigBuilder, RateLimits, TokenLocation};
pub use error::{PipedriveClassifier, PipedriveError};
pub use mapping::{FieldCatalog, StageNames};
pub use sink::SocialProfile;
pub use webhook::{WebhookReceiver, WebhookVerifier};

/// The Pipedrive objects this connector reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ObjectKind {
    /// People (contacts): `/api/v2/persons`.
    Persons,
    /// Organizations (companies): `/api/v2/organizations`.
    Organizations,
    /// Deals: `/api/v2/deals`.
    Deals,
    /// Activities (calls, meetings, tasks): `/api/v2/activities`.
    Activities,
    /// Notes: `/api/v1/notes`.
    Notes,
    /// Leads: `/api/v1/leads` (ids are UUIDs).
    Leads,
}

impl ObjectKind {
    /// Every object, in the default order.
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Persons,
        ObjectKind::Organizations,
        ObjectKind::Deals,
        ObjectKind::Activities,
        ObjectKind::Notes,
        ObjectKind::Leads,
    ];

    /// The object for a name: `persons`, `person`, `contacts`, `Deal`, ...
    pub fn parse(name: &str) -> Option<ObjectKind> {
        Some(match name.trim().to_lowercase().as_str() {
            "persons" | "person" | "people" | "contact" | "contacts" => ObjectKind::Persons,
            "organizations" | "organization" | "orgs" | "org" | "company" | "companies" => {
                ObjectKind::Organizations
            }
            "deals" | "deal" | "opportunity" | "opportunities" => ObjectKind::Deals,
            "activities" | "activity" | "task" | "tasks" => ObjectKind::Activities,
            "notes" | "note" => ObjectKind::Notes,
            "leads" | "lead" => ObjectKind::Leads,
            _ => return None,
        })
    }

    /// The path segment (`persons`, `organizations`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Persons => "persons",
            ObjectKind::Organizations => "organizations",
            ObjectKind::Deals => "deals",
            ObjectKind::Activities => "activities",
            ObjectKind::Notes => "notes",
            ObjectKind::Leads => "leads",
        }
    }

    /// Whether the object lives on API v2 (cursor pagination,
    /// `updated_since`, `custom_fields` object); else v1.
    pub fn is_v2(self) -> bool {
        !matches!(self, ObjectKind::Notes | ObjectKind::Leads)
    }

    /// The v1 endpoint of its custom-field definitions, if it has custom fields.
    pub fn fields_endpoint(self) -> Option<&'static str> {
        match self {
            ObjectKind::Persons => Some("personFields"),
            ObjectKind::Organizations => Some("organizationFields"),
            ObjectKind::Deals => Some("dealFields"),
            _ => None,
        }
    }

    /// The `items` name in `/v1/recents`, where deletes of the object show.
    pub fn recents_item(self) -> Option<&'static str> {
        match self {
            ObjectKind::Persons => Some("person"),
            ObjectKind::Organizations => Some("organization"),
            ObjectKind::Activities => Some("activity"),
            ObjectKind::Notes => Some("note"),
            ObjectKind::Deals | ObjectKind::Leads => None,
        }
    }

    /// Whether `/api/v2/{object}/search` exists (upserts by a searchable key).
    pub fn searchable(self) -> bool {
        matches!(
            self,
            ObjectKind::Persons | ObjectKind::Organizations | ObjectKind::Deals
        )
    }
}

/// The Pipedrive connector: a [`Connector`], [`crm_core::Source`] and
/// [`crm_core::Sink`] over Pipedrive's API v2 (persons, organizations,
/// deals, activities) and v1 (notes, leads, field definitions, recents).
#[derive(Debug)]
pub struct Pipedrive {
    client: PipedriveClient,
    config: PipedriveConfig,
    catalogs: tokio::sync::Mutex<
        std::collections::HashMap<ObjectKind, (tokio::time::Instant, std::sync::Arc<FieldCatalog>)>,
    >,
}

impl Pipedrive {
    /// A connector for `config`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be built.
    pub fn new(config: PipedriveConfig) -> Result<Self> {
        Ok(Pipedrive {
            client: PipedriveClient::new(&config)?,
            config,
            catalogs: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The typed API client.
    pub fn client(&self) -> &PipedriveClient {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &PipedriveConfig {
        &self.config
    }

    /// The configured object for a name.
    ///
    /// # Errors
    /// [`PipedriveError::UnknownObject`] (not found) when the object is not configured.
    pub fn object_kind(&self, name: &str) -> Result<ObjectKind> {
        match ObjectKind::parse(name) {
            Some(k) if self.config.objects().iter().any(|o| o == k.as_str()) => Ok(k),
            _ => Err(PipedriveError::UnknownObject(name.to_owned()).into()),
        }
    }

    /// The field catalog of `kind`, read now (reads resolve fields every run).
    ///
    /// # Errors
    /// As the HTTP client.
    pub async fn fresh_catalog(&self, kind: ObjectKind) -> Result<std::sync::Arc<FieldCatalog>> {
        let fields = match kind.fields_endpoint() {
            Some(_) => self.client.fields(kind).await?,
            None => Vec::new(),
        };
        let cat = std::sync::Arc::new(FieldCatalog::new(kind, fields));
        self.catalogs
            .lock()
            .await
            .insert(kind, (tokio::time::Instant::now(), cat.clone()));
        Ok(cat)
    }

    /// The field catalog of `kind`, reused for up to the configured
    /// `fields_ttl` (writes), unless `refresh`.
    ///
    /// # Errors
    /// As the HTTP client.
    pub async fn catalog(
        &self,
        kind: ObjectKind,
        refresh: bool,
    ) -> Result<std::sync::Arc<FieldCatalog>> {
        if !refresh {
            let cached = self.catalogs.lock().await.get(&kind).cloned();
            if let Some((at, cat)) = cached
                && at.elapsed() < self.config.fields_ttl()
            {
                return Ok(cat);
            }
        }
        self.fresh_catalog(kind).await
    }
}

#[async_trait]
impl Connector for Pipedrive {
    fn kind(&self) -> &'static str {
        "pipedrive"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .incremental()
            .deletes()
            .upsert()
            .webhooks()
            .describe()
    }

    /// Lists one record of the first configured object: proves the token.
    async fn check(&self) -> Result<()> {
        let kind = self
            .config
            .objects()
            .first()
            .and_then(|o| ObjectKind::parse(o))
            .unwrap_or(ObjectKind::Persons);
        self.client.list(kind).limit(1).send().await.map(|_| ())
    }

    /// Reads the field definitions (custom ones included, by name).
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        let kind = self.object_kind(object)?;
        let cat = self.fresh_catalog(kind).await?;
        Ok(cat.schema())
    }
}
