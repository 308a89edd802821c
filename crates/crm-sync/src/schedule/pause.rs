//! Seed 000's "schema mismatch: alert, pause sync", and resuming.

use std::path::Path;

use crm_core::env::{from_process, interpolate};
use crm_core::{Error, ErrorKind, Result};
use crm_sql::state::{ConnectionId, ConnectionStatus, NewAuditEntry, StateStore};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::SyncJob;
use crate::runner::{resolve_sqlite_path, state_key, with_create_mode};

/// The provider name of a pipeline job's connection (`pipeline`/job name),
/// as [`crate::state::SqlState::open`] creates it.
pub const PIPELINE_PROVIDER: &str = "pipeline";

/// The audit action recorded when a connection is paused.
pub const PAUSED_ACTION: &str = "connection.paused";

/// The audit action recorded when a connection is resumed.
pub const RESUMED_ACTION: &str = "connection.resumed";

/// The audit object of connection entries; the record id is the job name.
pub const CONNECTION_OBJECT: &str = "connection";

/// Whether `conn` is paused (a missing connection is not).
///
/// # Errors
/// State-store errors.
pub async fn is_paused(store: &StateStore, conn: &ConnectionId) -> Result<bool> {
    Ok(store
        .connection(conn)
        .await?
        .is_some_and(|c| c.status == ConnectionStatus::Paused))
}

/// Pauses `conn` when `error` is a [`ErrorKind::SchemaMismatch`] (seed 000:
/// "schema mismatch: alert, pause sync"): sets its status to `paused` with
/// the error as `last_error`, and raises the alert. Returns whether it
/// paused the connection (`false` for other errors and for a connection
/// already paused, so calling it twice raises one alert).
///
/// The monitor has no hook for an ad-hoc alert (its alerts come from rules
/// evaluated over the runs), so the alert is an audit entry
/// ([`PAUSED_ACTION`], object [`CONNECTION_OBJECT`], record `job`) and one
/// line on standard error beginning `ALERT:`.
///
/// # Errors
/// State-store errors.
#[allow(clippy::print_stderr)]
pub async fn pause_on_schema_mismatch(
    store: &StateStore,
    conn: &ConnectionId,
    job: &str,
    error: &Error,
) -> Result<bool> {
    if *error.kind() != ErrorKind::SchemaMismatch {
        return Ok(false);
    }
    let before = store.connection(conn).await?;
    let previous = match &before {
        Some(c) if c.status == ConnectionStatus::Paused => return Ok(false),
        Some(c) => c.status,
        None => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no connection {} to pause", conn.as_str()),
            ));
        }
    };
    let message = error.to_string();
    store
        .set_connection_status(conn, ConnectionStatus::Paused, Some(&message))
        .await?;
    store
        .audit(
            &NewAuditEntry::new(format!("sync:{job}"), PAUSED_ACTION)
                .connection(conn.clone())
                .record(CONNECTION_OBJECT, job)
                .values(
                    Some(json!({"status": previous.as_str()})),
                    Some(json!({
                        "status": ConnectionStatus::Paused.as_str(),
                        "reason": ErrorKind::SchemaMismatch.as_str(),
                        "error": message,
                    })),
                ),
        )
        .await?;
    eprintln!(
        "ALERT: job {job}: schema mismatch, the sync is paused ({message}). Fix the source or \
         the job's expected columns, then run `crm-sync resume CONFIG` to resume scheduled runs"
    );
    Ok(true)
}

/// What [`resume`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumed {
    /// The connection was paused (or in error) and is active now; the
    /// status and last error it had.
    Resumed {
        /// The status before.
        was: ConnectionStatus,
        /// The last error before.
        last_error: Option<String>,
    },
    /// It was active already; nothing changed.
    AlreadyActive,
}

/// Makes `conn` active again and clears its last error, with an audit
/// entry ([`RESUMED_ACTION`]) by `actor`.
///
/// # Errors
/// [`ErrorKind::NotFound`] for an unknown connection; state-store errors.
pub async fn resume(
    store: &StateStore,
    conn: &ConnectionId,
    job: &str,
    actor: &str,
) -> Result<Resumed> {
    let Some(before) = store.connection(conn).await? else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no connection {}", conn.as_str()),
        ));
    };
    if before.status == ConnectionStatus::Active {
        return Ok(Resumed::AlreadyActive);
    }
    store
        .set_connection_status(conn, ConnectionStatus::Active, None)
        .await?;
    store
        .audit(
            &NewAuditEntry::new(actor, RESUMED_ACTION)
                .connection(conn.clone())
                .record(CONNECTION_OBJECT, job)
                .values(
                    Some(
                        json!({"status": before.status.as_str(), "last_error": before.last_error}),
                    ),
                    Some(json!({"status": ConnectionStatus::Active.as_str()})),
                ),
        )
        .await?;
    Ok(Resumed::Resumed {
        was: before.status,
        last_error: before.last_error,
    })
}

/// Opens the state store of `job` as a run does (`state.url`, else the
/// destination's URL; relative SQLite paths from `base`), sealing the
/// job's personal fields ([`SyncJob::pii_fields`]).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for unset variables or a bad key (or no key
/// for a job with personal fields); database errors.
pub async fn open_job_store(job: &SyncJob, base: &Path) -> Result<StateStore> {
    let dest = interpolate(
        "destination.url",
        job.destination.url.expose_secret(),
        from_process,
    )?;
    let dest = with_create_mode(resolve_sqlite_path(&dest, base));
    let url = match &job.state.url {
        Some(url) => with_create_mode(resolve_sqlite_path(
            &interpolate("state.url", url.expose_secret(), from_process)?,
            base,
        )),
        None => dest,
    };
    let key = state_key(job).map_err(|e| match e {
        crate::runner::RunError::Setup(e) | crate::runner::RunError::Run(e) => e,
    })?;
    Ok(StateStore::open_url(&url, key)
        .await?
        .with_pii_fields(job.pii_fields()))
}

/// The connection of pipeline job `job` in `store`, without creating it.
///
/// # Errors
/// State-store errors.
pub async fn find_job_connection(store: &StateStore, job: &str) -> Result<Option<ConnectionId>> {
    Ok(store
        .connections()
        .await?
        .into_iter()
        .find(|c| c.provider == PIPELINE_PROVIDER && c.name == job)
        .map(|c| c.id))
}
