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

pub use client::HubSpotClient;
pub use config::{AppType, AuthConfig, HubSpotConfig, HubSpotConfigBuilder, RateLimits};
pub use error::{HubSpotClassifier, HubSpotError};
pub use webhook::{WebhookReceiver, WebhookVerifier};

/// The HubSpot connector: a [`Connector`], [`crm_core::Source`] and
/// [`crm_core::Sink`] over HubSpot's CRM v3 API.
#[derive(Debug)]
pub struct HubSpot {
    client: HubSpotClient,
    config: HubSpotConfig,
    detect_unchanged: bool,
}

impl HubSpot {
    /// A connector for `config`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] when the HTTP client cannot be built.
    pub fn new(config: HubSpotConfig) -> Result<Self> {
        Ok(HubSpot {
            client: HubSpotClient::new(&config)?,
            config,
            detect_unchanged: true,
        })
    }

    /// Whether upserts first read current values to leave out (and report
    /// `Unchanged`) records that would not change (default on; off saves
    /// one call per batch of 100).
    #[must_use]
    pub fn with_unchanged_detection(mut self, on: bool) -> Self {
        self.detect_unchanged = on;
        self
    }

    /// The typed API client.
    pub fn client(&self) -> &HubSpotClient {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &HubSpotConfig {
        &self.config
    }

    /// The object type for a name: `contacts`, `Contact`, `contact` all
    /// name `contacts`.
    ///
    /// # Errors
    /// [`HubSpotError::UnknownObject`] (not found) when the object is not configured.
    pub fn object_type(&self, name: &str) -> Result<String> {
        let plural = mapping::plural_object_type(name);
        if self.config.objects().contains(&plural) {
            Ok(plural)
        } else {
            Err(HubSpotError::UnknownObject(name.to_owned()).into())
        }
    }
}

#[async_trait]
impl Connector for HubSpot {
    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .incremental()
            .deletes()
            .upsert()
            .webhooks()
            .describe()
    }

    /// Lists one record of the first configured object: proves the token
    /// and its scopes.
    async fn check(&self) -> Result<()> {
        let object = self
            .config
            .objects()
            .first()
            .cloned()
            .unwrap_or_else(|| "contacts".to_owned());
        self.client
            .objects(&object)
            .list()
            .limit(1)
            .send()
            .await
            .map(|_| ())
    }

    /// Reads the property definitions (custom ones included).
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        let object = self.object_type(object)?;
        let props = self.client.properties(&object).await?;
        Ok(mapping::schema_from_properties(&object, &props))
    }
}
