//! The service's YAML configuration. Every key is optional: with no file
//! the service runs against the built-in simulators with its state in
//! `integration-service.db`.
//!
//! ```yaml
//! listen: 127.0.0.1:8080
//! providers: simulators        # or `live`: the CRMs named by each integration
//! state:
//!   url: sqlite://integration-service.db?mode=rwc   # or postgres://, mysql://
//!   key_env: INTEGRATION_SERVICE_STATE_KEY          # base64 32-byte key
//! tokens:                      # bearer tokens; `${NAME}` reads the environment
//!   - {name: alice, workspace: acme, role: admin, token: "${ACME_ADMIN_TOKEN}"}
//!   - {name: sync-bot, workspace: acme, role: operator, token: "${ACME_BOT_TOKEN}"}
//! tokens_file: integration-service.tokens   # demo tokens go here when `tokens` is empty
//! pii_fields: [email, firstName, lastName, phone]
//! retention_days: 30
//! jobs:
//!   enabled: true
//!   contacts: "0 * * * *"       # hourly: contacts from conversations to the CRM
//!   bidirectional: "0 */6 * * *" # every 6 hours: pull CRM updates
//! http:                        # as `crm-sync serve`'s `http:` section
//!   rate_limit_per_hour: 1000
//! ```

use std::path::{Path, PathBuf};

use crm_core::env::{from_process, interpolate};
use crm_core::{Error, Result};
use crm_sync::access::Role;
use crm_sync::config::HttpSection;
use secrecy::SecretString;
use serde::Deserialize;

/// Where integrations point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvidersMode {
    /// The service starts a Salesforce, a HubSpot and a Pipedrive simulator
    /// on 127.0.0.1 and sends every integration's calls there, whatever
    /// its `domain` says (default).
    #[default]
    Simulators,
    /// Calls go to each integration's own CRM.
    Live,
}

/// The state store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The database URL.
    #[serde(default = "default_state_url")]
    pub url: String,
    /// The variable holding the store's base64 key (32 bytes). When unset,
    /// the key is read from (or written to) `<state file>.key`, mode 0600,
    /// for SQLite stores; other stores require the variable.
    #[serde(default = "default_key_env")]
    pub key_env: String,
}

fn default_state_url() -> String {
    "sqlite://integration-service.db?mode=rwc".to_owned()
}
fn default_key_env() -> String {
    "INTEGRATION_SERVICE_STATE_KEY".to_owned()
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            url: default_state_url(),
            key_env: default_key_env(),
        }
    }
}

/// One bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The holder, named in audit entries.
    pub name: String,
    /// The workspace the token acts in.
    pub workspace: String,
    /// What it may do.
    pub role: Role,
    /// The token (at least 16 characters).
    pub token: SecretString,
}

/// The scheduled jobs of seed 002.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Whether the scheduler runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Hourly: contacts waiting to reach their CRM are sent.
    #[serde(default = "hourly")]
    pub contacts: String,
    /// Every 6 hours: CRM updates are pulled.
    #[serde(default = "six_hourly")]
    pub bidirectional: String,
    /// Daily: logs, audit entries and dead letters past `retention_days`
    /// are purged.
    #[serde(default = "daily")]
    pub retention: String,
}

fn yes() -> bool {
    true
}
fn hourly() -> String {
    "0 * * * *".to_owned()
}
fn six_hourly() -> String {
    "0 */6 * * *".to_owned()
}
fn daily() -> String {
    "30 3 * * *".to_owned()
}

impl Default for JobsSection {
    fn default() -> Self {
        JobsSection {
            enabled: true,
            contacts: hourly(),
            bidirectional: six_hourly(),
            retention: daily(),
        }
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Simulators or live CRMs.
    #[serde(default)]
    pub providers: ProvidersMode,
    /// The state store.
    #[serde(default)]
    pub state: StateSection,
    /// The accepted tokens.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Where demo tokens are written when `tokens` is empty.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// The request fields holding personal data: sealed at rest, masked in
    /// answers, logs and errors.
    #[serde(default = "default_pii")]
    pub pii_fields: Vec<String>,
    /// Days to keep sync logs, audit entries and dead letters.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// The scheduled jobs.
    #[serde(default)]
    pub jobs: JobsSection,
    /// TLS, allow-list, body and time limits, rate limit.
    #[serde(default)]
    pub http: HttpSection,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_retention() -> u32 {
    30
}

/// The personal fields of seed 001: names, email, phone, in the API's and
/// in every CRM's spelling.
pub fn default_pii() -> Vec<String> {
    [
        "email",
        "firstName",
        "lastName",
        "phone",
        "name",
        "Email",
        "FirstName",
        "LastName",
        "Phone",
        "firstname",
        "lastname",
        "first_name",
        "last_name",
        "emails",
        "phones",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: default_listen(),
            providers: ProvidersMode::default(),
            state: StateSection::default(),
            tokens: Vec::new(),
            tokens_file: None,
            pii_fields: default_pii(),
            retention_days: default_retention(),
            jobs: JobsSection::default(),
            http: HttpSection::default(),
        }
    }
}

impl ServiceConfig {
    /// Parses YAML text, with `${NAME}` replaced from the environment.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] naming the key at fault, an
    /// unset variable, a short token or a repeated token name.
    pub fn from_yaml(text: &str) -> Result<ServiceConfig> {
        let text = interpolate("config", text, from_process)?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let config: ServiceConfig = serde_path_to_error_free(de)?;
        config.check()?;
        Ok(config)
    }

    /// Reads the file at `path`.
    ///
    /// # Errors
    /// As [`ServiceConfig::from_yaml`], and when the file cannot be read.
    pub fn load(path: &Path) -> Result<ServiceConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid_input(format!("cannot read {}: {e}", path.display())))?;
        ServiceConfig::from_yaml(&text)
    }

    fn check(&self) -> Result<()> {
        use secrecy::ExposeSecret;
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.expose_secret().chars().count() < 16 {
                return Err(Error::invalid_input(format!(
                    "token `{}` is shorter than 16 characters",
                    t.name
                ))
                .with_context("field", format!("tokens[{i}].token")));
            }
            if t.workspace.trim().is_empty() {
                return Err(Error::invalid_input("a token's workspace is empty")
                    .with_context("field", format!("tokens[{i}].workspace")));
            }
            if !names.insert(t.name.clone()) {
                return Err(
                    Error::invalid_input(format!("token name `{}` is used twice", t.name))
                        .with_context("field", format!("tokens[{i}].name")),
                );
            }
        }
        if self.retention_days == 0 {
            return Err(Error::invalid_input("`retention_days` is at least 1")
                .with_context("field", "retention_days"));
        }
        Ok(())
    }
}

fn serde_path_to_error_free(de: serde_yaml::Deserializer<'_>) -> Result<ServiceConfig> {
    ServiceConfig::deserialize(de).map_err(|e| {
        // serde_yaml's message names the key and its line.
        Error::invalid_input(format!("the configuration is invalid: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_simulator_default() {
        let c = ServiceConfig::from_yaml("{}").unwrap_or_default();
        assert_eq!(c.providers, ProvidersMode::Simulators);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert!(c.pii_fields.iter().any(|f| f == "email"));
        assert!(c.jobs.enabled);
    }

    #[test]
    fn short_tokens_and_unknown_keys_are_refused() {
        let short = ServiceConfig::from_yaml(
            "tokens: [{name: a, workspace: w, role: admin, token: short}]",
        );
        assert!(short.is_err_and(|e| e.context_value("field") == Some("tokens[0].token")));
        assert!(ServiceConfig::from_yaml("listn: x").is_err());
    }
}
