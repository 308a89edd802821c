//! What the service keeps, all in the crm-sql state store:
//!
//! | data | where | sealed (AEAD) |
//! |---|---|---|
//! | integrations | `crm_connections`, named `<workspace>/<name>`; settings hold the workspace, description, scopes and `syncConfig` | credentials |
//! | social data of a contact (profiles, interactions, sentiment) | record state `social` keyed by the CRM contact id | the whole snapshot |
//! | touchpoints of a lead | record state `touchpoints` keyed by the CRM lead id | the whole snapshot |
//! | conversation -> contact links | record state `conversation` keyed by conversation id | - |
//! | the platform's copy of CRM contacts (`sync-from-crm`) | record state `platform_contact` keyed by a SHA-256 of the email | the whole snapshot |
//! | contacts that could not reach the CRM | dead letters, retried hourly | the fields of `pii_fields` |
//! | who did what | audit entries naming the token holder | the fields of `pii_fields` |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_core::{Error, ErrorKind, Result};
use crm_sql::state::{
    Connection, ConnectionId, ConnectionStatus, NewConnection, RecordSyncState, StateStore,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crm::credential_names;
use crate::model::{CreateIntegration, Integration, Provider, SyncConfig};

/// Record-state object of a contact's social data.
pub const SOCIAL: &str = "social";
/// Record-state object of a lead's touchpoints.
pub const TOUCHPOINTS: &str = "touchpoints";
/// Record-state object of conversation links.
pub const CONVERSATION: &str = "conversation";
/// Record-state object of the platform's contacts.
pub const PLATFORM_CONTACT: &str = "platform_contact";
/// Dead-letter object of contacts waiting for their CRM.
pub const PENDING_CONTACT: &str = "pending_contact";

/// What is shown in place of a secret.
pub const MASK: &str = "********";

/// A stored integration with its parsed settings.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The connection row.
    pub connection: Connection,
    /// The provider.
    pub provider: Provider,
    /// The settings.
    pub settings: Settings,
}

/// An integration's non-secret settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// The workspace.
    pub workspace: String,
    /// The name.
    pub name: String,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// The scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How it syncs.
    #[serde(default)]
    pub sync_config: SyncConfig,
    /// The credential names stored, with the shown value of non-secret
    /// ones (endpoints) and [`MASK`] for the others.
    #[serde(default)]
    pub shown_credentials: BTreeMap<String, String>,
}

/// Checks a workspace name: 1 to 64 of `A-Z a-z 0-9 _ -`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`].
pub fn check_workspace(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "workspace `{name}` must be 1 to 64 of A-Z, a-z, 0-9, `_` and `-`"
        )))
    }
}

/// The key a platform contact is kept under: a SHA-256 of the workspace,
/// the integration and the normalized email, so the table holds no
/// address in clear.
pub fn email_key(integration: &ConnectionId, email: &str) -> String {
    let mut h = Sha256::new();
    h.update(integration.as_str().as_bytes());
    h.update([0x1f]);
    h.update(email.trim().to_lowercase().as_bytes());
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shown form of credentials: endpoints as given, the rest masked.
pub fn shown(provider: Provider, creds: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    creds
        .keys()
        .map(|k| {
            let secret = credential_names(provider)
                .iter()
                .find(|(n, _)| n == k)
                .is_none_or(|(_, s)| *s);
            let endpoint = matches!(k.as_str(), "domain" | "baseUrl");
            let value = if endpoint && !secret {
                creds[k].clone()
            } else {
                MASK.to_owned()
            };
            (k.clone(), value)
        })
        .collect()
}

/// Integrations and the service's own records, over a [`StateStore`].
#[derive(Clone, Debug)]
pub struct Store {
    state: StateStore,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// The service's store over `state`.
    pub fn new(state: StateStore) -> Self {
        Store { state }
    }

    /// The state store.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Creates an integration in `workspace`; credentials are sealed.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the workspace has an integration of
    /// that provider and name; storage errors.
    pub async fn create(&self, workspace: &str, req: &CreateIntegration) -> Result<Stored> {
        let settings = Settings {
            workspace: workspace.to_owned(),
            name: req.name.clone(),
            description: req.description.clone(),
            scopes: req.scopes.clone(),
            sync_config: req.sync_config.clone(),
            shown_credentials: shown(req.provider, &req.credentials),
        };
        let sealed = serde_json::to_string(&req.credentials)
            .map_err(|e| Error::invalid_input(format!("credentials: {e}")))?;
        let name = format!("{workspace}/{}", req.name);
        // The store's (provider, name) uniqueness answers a name taken.
        let id = self
            .state
            .create_connection(
                NewConnection::new(req.provider.as_str(), name)
                    .credentials(SecretString::from(sealed))
                    .settings(
                        serde_json::to_value(&settings)
                            .map_err(|e| Error::invalid_input(format!("settings: {e}")))?,
                    ),
            )
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "the workspace already has a {} integration named `{}`",
                        req.provider.as_str(),
                        req.name
                    ),
                )
                .with_context("field", "name"),
                _ => e,
            })?;
        self.get(workspace, &id)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the integration vanished"))
    }

    fn parse(c: Connection) -> Option<Stored> {
        let provider = Provider::parse(&c.provider)?;
        let settings: Settings = serde_json::from_value(c.settings.clone()).ok()?;
        Some(Stored {
            connection: c,
            provider,
            settings,
        })
    }

    /// The integration `id` if it belongs to `workspace`: another
    /// workspace's is `None`, exactly as an unknown id.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn get(&self, workspace: &str, id: &ConnectionId) -> Result<Option<Stored>> {
        Ok(self
            .state
            .connection(id)
            .await?
            .and_then(Store::parse)
            .filter(|s| s.settings.workspace == workspace))
    }

    /// The workspace's integrations, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, workspace: &str) -> Result<Vec<Stored>> {
        let mut all: Vec<Stored> = self
            .state
            .connections()
            .await?
            .into_iter()
            .filter_map(Store::parse)
            .filter(|s| s.settings.workspace == workspace)
            .collect();
        all.sort_by(|a, b| {
            (a.connection.created_at, a.connection.id.as_str())
                .cmp(&(b.connection.created_at, b.connection.id.as_str()))
        });
        Ok(all)
    }

    /// Every integration of every workspace (for the scheduled jobs).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn all(&self) -> Result<Vec<Stored>> {
        Ok(self
            .state
            .connections()
            .await?
            .into_iter()
            .filter_map(Store::parse)
            .collect())
    }

    /// The integration's credentials, opened.
    ///
    /// # Errors
    /// Storage errors; [`ErrorKind::Auth`] when they do not open (another
    /// key).
    pub async fn credentials(&self, id: &ConnectionId) -> Result<BTreeMap<String, String>> {
        let Some(secret) = self.state.credentials(id).await? else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_str(secret.expose_secret())
            .map_err(|_| Error::new(ErrorKind::Auth, "the stored credentials do not parse"))
    }

    /// Marks the integration's state after a CRM call.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn set_status(&self, id: &ConnectionId, ok: bool, error: Option<&str>) -> Result<()> {
        let status = if ok {
            ConnectionStatus::Active
        } else {
            ConnectionStatus::Error
        };
        self.state.set_connection_status(id, status, error).await
    }

    /// Reads a sealed document kept under (`object`, `key`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn doc<T: for<'de> Deserialize<'de>>(
        &self,
        id: &ConnectionId,
        object: &str,
        key: &str,
    ) -> Result<Option<(T, Option<String>)>> {
        let Some(state) = self.state.record_state(id, object, key).await? else {
            return Ok(None);
        };
        let Some(snapshot) = state.snapshot else {
            return Ok(None);
        };
        let doc = serde_json::from_value(snapshot.0).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!("a stored {object} document does not parse: {e}"),
            )
        })?;
        Ok(Some((doc, state.remote_id)))
    }

    /// Keeps `doc` under (`object`, `key`), sealed, with `remote` as its
    /// CRM id.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put_doc<T: Serialize>(
        &self,
        id: &ConnectionId,
        object: &str,
        key: &str,
        remote: Option<&str>,
        doc: &T,
    ) -> Result<()> {
        let now = Utc::now();
        let mut state = RecordSyncState::new(id.clone(), object, key)
            .times(Some(now), Some(now), None)
            .snapshot(
                serde_json::to_value(doc)
                    .map_err(|e| Error::invalid_input(format!("a {object} document: {e}")))?,
            );
        if let Some(r) = remote {
            state = state.remote(r, None);
        }
        self.state.upsert_record_state(&state).await
    }

    /// Drops what is kept under (`object`, `key`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn drop_doc(&self, id: &ConnectionId, object: &str, key: &str) -> Result<bool> {
        self.state.delete_record_state(id, object, key).await
    }
}

impl Stored {
    /// The API view: credentials masked.
    pub fn view(&self) -> Integration {
        let c = &self.connection;
        Integration {
            id: c.id.as_str().to_owned(),
            workspace: self.settings.workspace.clone(),
            provider: self.provider,
            name: self.settings.name.clone(),
            description: self.settings.description.clone(),
            scopes: self.settings.scopes.clone(),
            sync_config: self.settings.sync_config.clone(),
            credentials: self.settings.shown_credentials.clone(),
            status: c.status.as_str().to_owned(),
            created_at: stamp(c.created_at),
            updated_at: stamp(c.updated_at),
            last_sync_at: c.last_sync_at.map(stamp),
        }
    }

    /// The id.
    pub fn id(&self) -> &ConnectionId {
        &self.connection.id
    }
}
