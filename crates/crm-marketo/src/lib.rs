#![doc = include_str!("docs.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod mapping;
pub mod membership;
pub mod sink;
pub mod source;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use crm_core::{Capabilities, Connector, ObjectSchema, Result};

pub use client::{AssetFilter, ExportKind, MarketoClient, MemberFilter, Paged};
pub use config::{LeadFullRead, Limits, MarketoConfig, MarketoConfigBuilder};
pub use error::{MarketoClassifier, MarketoError};
pub use source::{ExportStats, ExportUsage};

/// A Marketo lead-database object this connector reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// Leads (people).
    Leads,
    /// Companies.
    Companies,
    /// Opportunities.
    Opportunities,
    /// Activities (read through Bulk Extract).
    Activities,
}

impl ObjectKind {
    /// The object for a name: `leads`, `lead`, `Lead`, `contacts` name leads;
    /// `deals` names opportunities.
    pub fn parse(name: &str) -> Option<ObjectKind> {
        match name.trim().to_lowercase().as_str() {
            "lead" | "leads" | "contact" | "contacts" => Some(ObjectKind::Leads),
            "company" | "companies" => Some(ObjectKind::Companies),
            "opportunity" | "opportunities" | "deal" | "deals" => Some(ObjectKind::Opportunities),
            "activity" | "activities" => Some(ObjectKind::Activities),
            _ => None,
        }
    }

    /// The path segment (`leads`, `companies`, ...).
    pub fn path(self) -> &'static str {
        match self {
            ObjectKind::Leads => "leads",
            ObjectKind::Companies => "companies",
            ObjectKind::Opportunities => "opportunities",
            ObjectKind::Activities => "activities",
        }
    }

    /// The field holding the record id (`id`; opportunities: `marketoGUID`;
    /// activities: `marketoGUID`).
    pub fn id_field(self) -> &'static str {
        match self {
            ObjectKind::Leads | ObjectKind::Companies => "id",
            ObjectKind::Opportunities | ObjectKind::Activities => "marketoGUID",
        }
    }

    /// The default upsert key (`email`, `externalCompanyId`, `externalOpportunityId`).
    pub fn default_key(self) -> &'static str {
        match self {
            ObjectKind::Leads => "email",
            ObjectKind::Companies => "externalCompanyId",
            ObjectKind::Opportunities => "externalOpportunityId",
            ObjectKind::Activities => "marketoGUID",
        }
    }

    /// Whether Marketo has a change feed for it (leads: the activity feeds).
    pub fn has_change_feed(self) -> bool {
        matches!(self, ObjectKind::Leads)
    }

    pub(crate) fn endpoint(self, op: &str) -> &'static str {
        match (self, op) {
            (ObjectKind::Leads, "get") => "leads.get",
            (ObjectKind::Leads, "sync") => "leads.sync",
            (ObjectKind::Leads, _) => "leads.delete",
            (ObjectKind::Companies, "get") => "companies.get",
            (ObjectKind::Companies, "sync") => "companies.sync",
            (ObjectKind::Companies, _) => "companies.delete",
            (ObjectKind::Opportunities, "get") => "opportunities.get",
            (ObjectKind::Opportunities, "sync") => "opportunities.sync",
            (ObjectKind::Opportunities, _) => "opportunities.delete",
            (ObjectKind::Activities, _) => "activities.get",
        }
    }
}

/// Field types of one object, by REST name, as describe reported them.
pub(crate) type FieldTypes = Arc<HashMap<String, crm_core::FieldType>>;

/// The Marketo connector: a [`Connector`], [`crm_core::Source`] and
/// [`crm_core::Sink`] over Marketo's REST and Bulk APIs.
#[derive(Debug)]
pub struct Marketo {
    client: MarketoClient,
    config: MarketoConfig,
    types: Mutex<HashMap<ObjectKind, FieldTypes>>,
    usage: Arc<ExportUsage>,
    stats: Arc<ExportStats>,
}

impl Marketo {
    /// A connector for `config`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be built.
    pub fn new(config: MarketoConfig) -> Result<Self> {
        Ok(Marketo {
            client: MarketoClient::new(&config)?,
            usage: Arc::new(ExportUsage::new(config.export_daily_bytes())),
            config,
            types: Mutex::new(HashMap::new()),
            stats: Arc::new(ExportStats::default()),
        })
    }

    /// The typed API client.
    pub fn client(&self) -> &MarketoClient {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &MarketoConfig {
        &self.config
    }

    /// Bulk export bytes used today, shared by every read of this connector
    /// (share one `Arc` between connectors of the same instance with
    /// [`Marketo::with_export_usage`]).
    pub fn export_usage(&self) -> &Arc<ExportUsage> {
        &self.usage
    }

    /// Uses `usage` as the export byte count (one per Marketo instance).
    #[must_use]
    pub fn with_export_usage(mut self, usage: Arc<ExportUsage>) -> Self {
        self.usage = usage;
        self
    }

    /// Counters of export downloads (rows, bytes, largest buffered piece).
    pub fn export_stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// The configured object for a name.
    ///
    /// # Errors
    /// [`MarketoError::UnknownObject`] (not found) when the name is not a
    /// configured object.
    pub fn object(&self, name: &str) -> Result<ObjectKind> {
        let kind =
            ObjectKind::parse(name).ok_or_else(|| MarketoError::UnknownObject(name.to_owned()))?;
        if self
            .config
            .objects()
            .iter()
            .any(|o| ObjectKind::parse(o) == Some(kind))
        {
            Ok(kind)
        } else {
            Err(MarketoError::UnknownObject(name.to_owned()).into())
        }
    }

    /// The field types of `object` (describe, cached for the connector's life).
    pub(crate) async fn field_types(&self, object: ObjectKind) -> Result<FieldTypes> {
        if let Some(t) = self
            .types
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&object)
        {
            return Ok(Arc::clone(t));
        }
        let schema = self.describe_kind(object).await?;
        let types: FieldTypes = Arc::new(
            schema
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.field_type.clone()))
                .collect(),
        );
        self.types
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(object, Arc::clone(&types));
        Ok(types)
    }

    async fn describe_kind(&self, object: ObjectKind) -> Result<ObjectSchema> {
        match object {
            ObjectKind::Leads => Ok(mapping::schema_from_lead_describe(
                &self.client.describe_leads().await?,
            )),
            ObjectKind::Companies | ObjectKind::Opportunities => {
                Ok(mapping::schema_from_description(
                    object,
                    &self.client.describe_object(object).await?,
                ))
            }
            ObjectKind::Activities => Ok(mapping::activity_schema()),
        }
    }
}

#[async_trait]
impl Connector for Marketo {
    fn kind(&self) -> &'static str {
        "marketo"
    }

    /// Incremental reads and deletes when every configured object has a
    /// change feed (leads do, through activities; companies and
    /// opportunities do not: they are read in full each run).
    fn capabilities(&self) -> Capabilities {
        let all_fed = self
            .config
            .objects()
            .iter()
            .filter_map(|o| ObjectKind::parse(o))
            .all(ObjectKind::has_change_feed);
        let mut caps = Capabilities::none().write().upsert().bulk().describe();
        if all_fed {
            caps = caps.incremental().deletes();
        }
        caps
    }

    /// Describes the first configured object: proves the credentials.
    async fn check(&self) -> Result<()> {
        let first = self
            .config
            .objects()
            .iter()
            .find_map(|o| ObjectKind::parse(o))
            .unwrap_or(ObjectKind::Leads);
        self.field_types(first).await.map(|_| ())
    }

    /// Reads the object's fields (custom ones included) as an [`ObjectSchema`].
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        let kind = self.object(object)?;
        self.describe_kind(kind).await
    }
}
