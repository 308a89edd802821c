//! The simulators the service runs against by default: Salesforce,
//! HubSpot and Pipedrive, on 127.0.0.1, accepting the credentials of seed
//! 002's examples (so its example bodies work as they are).
//!
//! | provider | credentials accepted |
//! |---|---|
//! | Salesforce | `clientId` [`SF_CLIENT_ID`], `clientSecret` [`SF_CLIENT_SECRET`], `refreshToken` [`SF_REFRESH_TOKEN`] (any `domain`) |
//! | HubSpot | `accessToken` [`HUBSPOT_TOKEN`] |
//! | Pipedrive | `apiToken` [`PIPEDRIVE_TOKEN`] (any `domain`) |
//!
//! The HubSpot simulator has seed 002's custom contact properties and
//! `hs_lead_status`; the Salesforce simulator's Contact and Lead carry the
//! seed's `__c` fields; Pipedrive enrichment writes notes.

use crm_core::{Error, ErrorKind, Result};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, custom_property};
use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator};
use crm_sim::{SimHandle, SimServer};

use crate::service::Endpoints;

/// Seed 002's example Salesforce client id.
pub const SF_CLIENT_ID: &str = "your_client_id";
/// Seed 002's example Salesforce client secret.
pub const SF_CLIENT_SECRET: &str = "your_client_secret";
/// Seed 002's example Salesforce refresh token.
pub const SF_REFRESH_TOKEN: &str = "your_refresh_token";
/// The HubSpot simulator's private-app token.
pub const HUBSPOT_TOKEN: &str = "your_access_token";
/// The Pipedrive simulator's API token.
pub const PIPEDRIVE_TOKEN: &str = "your_api_token";

/// Seed 002's HubSpot custom properties, and `hs_lead_status`.
pub const HUBSPOT_PROPERTIES: [(&str, &str); 10] = [
    ("twitter_username", "string"),
    ("twitter_url", "string"),
    ("twitter_followers", "number"),
    ("instagram_username", "string"),
    ("instagram_url", "string"),
    ("instagram_followers", "number"),
    ("social_engagement_score", "number"),
    ("social_platform", "string"),
    ("social_sentiment", "string"),
    ("hs_lead_status", "string"),
];

/// The three running simulators (stopped when dropped).
#[derive(Debug)]
pub struct Simulators {
    /// Salesforce.
    pub salesforce: SimHandle,
    /// HubSpot.
    pub hubspot: SimHandle,
    /// Pipedrive.
    pub pipedrive: SimHandle,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!("a simulator did not start: {e}"),
    )
}

impl Simulators {
    /// Starts the three simulators.
    ///
    /// # Errors
    /// When one cannot bind a port.
    pub async fn start() -> Result<Simulators> {
        let mut sf = SalesforceSimConfig::default();
        sf.client_id = SF_CLIENT_ID.into();
        sf.client_secret = SF_CLIENT_SECRET.into();
        sf.refresh_token = SF_REFRESH_TOKEN.into();
        let salesforce = SimServer::new(SalesforceSimulator::new(sf))
            .start()
            .await
            .map_err(failed)?;

        let mut hs = HubSpotSimConfig::default();
        hs.private_app_token = HUBSPOT_TOKEN.into();
        for (name, kind) in HUBSPOT_PROPERTIES {
            hs = hs.custom_property("contacts", custom_property(name, kind, false));
        }
        let hubspot = SimServer::new(HubSpotSimulator::new(hs))
            .start()
            .await
            .map_err(failed)?;

        let mut pd = PipedriveSimConfig::default();
        pd.api_token = PIPEDRIVE_TOKEN.into();
        let pipedrive = SimServer::new(PipedriveSimulator::new(pd))
            .start()
            .await
            .map_err(failed)?;
        Ok(Simulators {
            salesforce,
            hubspot,
            pipedrive,
        })
    }

    /// Their addresses, for [`crate::service::Service::new`].
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            salesforce: Some(self.salesforce.base_url().to_owned()),
            hubspot: Some(self.hubspot.base_url().to_owned()),
            pipedrive: Some(self.pipedrive.base_url().to_owned()),
        }
    }
}
