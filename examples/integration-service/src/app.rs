//! Putting the service together from its configuration: the state store
//! (and its key), the simulators in the default mode, the tokens, the
//! HTTP server behind the protective layers, and the scheduled jobs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use chrono::Utc;
use crm_core::pii::PiiFields;
use crm_core::{Error, ErrorKind, Result};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::access::Role;
use crm_sync::schedule::{Schedule, Scheduler, TokioClock};
use crm_sync::serve::Server;
use crm_sync::serve::harden::Hardening;
use secrecy::{ExposeSecret, SecretString};

use crate::api::{self, Access, AppState};
use crate::config::{ProvidersMode, ServiceConfig};
use crate::service::{Endpoints, Service};
use crate::sims::Simulators;
use crate::store::Store;

/// The assembled service, ready to serve.
pub struct App {
    /// The operations.
    pub service: Arc<Service>,
    /// The tokens.
    pub access: Arc<Access>,
    /// The simulators, in the default mode.
    pub simulators: Option<Simulators>,
    hardening: Hardening,
    demo_tokens: Option<PathBuf>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .field("simulators", &self.simulators)
            .finish_non_exhaustive()
    }
}

/// The store's key: from the variable `key_env`, else (SQLite) from the
/// file `<database>.key`, created with mode 0600 on the first start.
fn state_key(config: &ServiceConfig, base: &Path) -> Result<CredentialKey> {
    if std::env::var_os(&config.state.key_env).is_some() {
        return CredentialKey::from_env(&config.state.key_env).map_err(Error::from);
    }
    let Some(db) = sqlite_path(&config.state.url, base) else {
        return Err(Error::invalid_input(format!(
            "set {} to the state store's base64 key (32 bytes)",
            config.state.key_env
        )));
    };
    let key_file = PathBuf::from(format!("{}.key", db.display()));
    match std::fs::read_to_string(&key_file) {
        Ok(text) => CredentialKey::from_base64(text.trim()).map_err(Error::from),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, text) = CredentialKey::generate();
            write_private(&key_file, text.expose_secret())?;
            tracing::info!(file = %key_file.display(), "created the state store's key");
            Ok(key)
        }
        Err(e) => Err(Error::invalid_input(format!(
            "cannot read {}: {e}",
            key_file.display()
        ))),
    }
}

/// The file of a SQLite URL, relative paths from `base`.
fn sqlite_path(url: &str, base: &Path) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let p = PathBuf::from(path);
    Some(if p.is_absolute() { p } else { base.join(p) })
}

fn absolute_sqlite_url(url: &str, base: &Path) -> String {
    match sqlite_path(url, base) {
        Some(p) => {
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("mode=rwc");
            format!("sqlite://{}?{query}", p.display())
        }
        None => url.to_owned(),
    }
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| Error::invalid_input(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::invalid_input(format!("cannot write {}: {e}", path.display())))
}

/// 32 random bytes as hex, for a demo token.
fn random_token() -> Result<SecretString> {
    let (_, text) = CredentialKey::generate();
    // The base64 of 32 random bytes, made URL- and header-safe.
    let token: String = text
        .expose_secret()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if token.len() < 32 {
        return Err(Error::new(
            ErrorKind::Permanent,
            "no randomness for a token",
        ));
    }
    Ok(SecretString::from(format!("demo-{token}")))
}

impl App {
    /// Builds the service from `config`; relative paths are taken from
    /// `base`.
    ///
    /// # Errors
    /// An unusable state store or key, a simulator that does not start, a
    /// bad `http` section, or a demo token file that cannot be written.
    pub async fn build(config: &ServiceConfig, base: &Path) -> Result<App> {
        let key = state_key(config, base)?;
        let pii: PiiFields = config.pii_fields.iter().map(String::as_str).collect();
        let state = StateStore::open_url(&absolute_sqlite_url(&config.state.url, base), key)
            .await?
            .with_pii_fields(pii.clone());
        let (simulators, endpoints) = match config.providers {
            ProvidersMode::Simulators => {
                let sims = Simulators::start().await?;
                let endpoints = sims.endpoints();
                (Some(sims), endpoints)
            }
            ProvidersMode::Live => (None, Endpoints::default()),
        };
        let service = Service::new(Store::new(state), endpoints, pii)?;
        let mut access = Access::new();
        let mut demo_tokens = None;
        if config.tokens.is_empty() {
            let file = config
                .tokens_file
                .clone()
                .unwrap_or_else(|| PathBuf::from("integration-service.tokens"));
            let file = if file.is_absolute() {
                file
            } else {
                base.join(file)
            };
            let mut text = String::from(
                "# Demo tokens of workspace `demo` (made at start; set `tokens:` in the config for real ones)\n",
            );
            for (name, role) in [
                ("demo-admin", Role::Admin),
                ("demo-operator", Role::Operator),
                ("demo-viewer", Role::Viewer),
            ] {
                let token = random_token()?;
                text.push_str(&format!("{} {}\n", role.as_str(), token.expose_secret()));
                access.add("demo", name, role, &token);
            }
            write_private(&file, &text)?;
            demo_tokens = Some(file);
        } else {
            for t in &config.tokens {
                crate::store::check_workspace(&t.workspace)?;
                access.add(t.workspace.clone(), t.name.clone(), t.role, &t.token);
            }
        }
        let hardening = Hardening::from_section(&config.http, base)?;
        Ok(App {
            service: Arc::new(service),
            access: Arc::new(access),
            simulators,
            hardening,
            demo_tokens,
        })
    }

    /// The file the demo tokens were written to, when `tokens` was empty.
    pub fn demo_tokens(&self) -> Option<&Path> {
        self.demo_tokens.as_deref()
    }

    /// The routes (the protective layers are added by [`App::serve`]).
    pub fn router(&self) -> Router {
        api::router(AppState {
            service: Arc::clone(&self.service),
            access: Arc::clone(&self.access),
        })
    }

    /// The scheduler of seed 002's jobs: contacts to the CRM (hourly by
    /// default), pulls from the CRM (every 6 hours), and the retention
    /// purge (daily).
    ///
    /// # Errors
    /// A cron expression that does not parse.
    pub fn scheduler(&self, config: &ServiceConfig) -> Result<Scheduler<TokioClock>> {
        let parse = |field: &str, expr: &str| {
            Schedule::parse(expr).map_err(|e| {
                Error::invalid_input(format!("jobs.{field}: {e}"))
                    .with_context("field", format!("jobs.{field}"))
            })
        };
        let mut scheduler = Scheduler::new(Arc::new(TokioClock::new()));
        let svc = Arc::clone(&self.service);
        scheduler.add(
            "contacts-to-crm",
            parse("contacts", &config.jobs.contacts)?,
            move || {
                let svc = Arc::clone(&svc);
                async move { svc.retry_pending().await.map(|_| ()) }
            },
        );
        let svc = Arc::clone(&self.service);
        scheduler.add(
            "pull-from-crm",
            parse("bidirectional", &config.jobs.bidirectional)?,
            move || {
                let svc = Arc::clone(&svc);
                async move { svc.pull_all().await.map(|_| ()) }
            },
        );
        let svc = Arc::clone(&self.service);
        let days = config.retention_days;
        scheduler.add(
            "retention",
            parse("retention", &config.jobs.retention)?,
            move || {
                let svc = Arc::clone(&svc);
                async move {
                    let report = crm_sync::schedule::jobs::retention_cleanup(
                        svc.store().state(),
                        Utc::now(),
                        days,
                    )
                    .await?;
                    tracing::info!(purged = report.total(), "retention purge");
                    Ok(())
                }
            },
        );
        Ok(scheduler)
    }

    /// Serves on `server` until `shutdown`, behind TLS (when configured),
    /// the allow-list, the rate limit per token, the request timeout and
    /// the body limit.
    ///
    /// # Errors
    /// When the server stops on an error.
    pub async fn serve(
        &self,
        server: Server,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        server
            .serve_hardened(self.router(), &self.hardening, shutdown)
            .await
    }

    /// Whether the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.hardening.is_tls()
    }
}
