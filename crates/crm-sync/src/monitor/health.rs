//! Sync health per connection and direction (seed 001's
//! `MONITORING.CRM_SYNC_HEALTH` view).

use std::fmt;

use chrono::{DateTime, Utc};
use crm_core::Result;
use crm_sql::state::{
    Connection, ConnectionId, ConnectionStatus, RunStatus, StateStore, SyncDirection, SyncRun,
};
use serde::{Deserialize, Serialize};

/// Seed 001's health classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    /// The lag is at most the warning threshold.
    Healthy,
    /// The lag is above the warning threshold, at most the critical one.
    Warning,
    /// The lag is above the critical threshold.
    Critical,
}

impl HealthStatus {
    /// `HEALTHY`, `WARNING` or `CRITICAL`, as seed 001 writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Warning => "WARNING",
            HealthStatus::Critical => "CRITICAL",
        }
    }

    /// 0, 1 or 2: the value of the `crm_sync_health_status` gauge.
    pub fn level(self) -> u8 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Warning => 1,
            HealthStatus::Critical => 2,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lag limits of one direction, in whole minutes; a lag strictly above
/// a limit reaches its class (seed 001: `lag_minutes > 60 THEN 'CRITICAL'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionThresholds {
    /// Above this: `WARNING`.
    pub warning_minutes: i64,
    /// Above this: `CRITICAL`.
    pub critical_minutes: i64,
}

impl DirectionThresholds {
    /// Classifies a lag.
    pub fn classify(&self, lag_minutes: i64) -> HealthStatus {
        if lag_minutes > self.critical_minutes {
            HealthStatus::Critical
        } else if lag_minutes > self.warning_minutes {
            HealthStatus::Warning
        } else {
            HealthStatus::Healthy
        }
    }
}

/// The lag limits per direction. Defaults are seed 001's view: out of the
/// CRM (`CRM_TO_DP`) warning above 30 minutes and critical above 60; into
/// the CRM (`DP_TO_CRM`) warning above 60 and critical above 120.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Runs out of the CRM (`from_crm`).
    #[serde(default = "from_crm_default")]
    pub from_crm: DirectionThresholds,
    /// Runs into the CRM (`to_crm`).
    #[serde(default = "to_crm_default")]
    pub to_crm: DirectionThresholds,
}

fn from_crm_default() -> DirectionThresholds {
    DirectionThresholds {
        warning_minutes: 30,
        critical_minutes: 60,
    }
}

fn to_crm_default() -> DirectionThresholds {
    DirectionThresholds {
        warning_minutes: 60,
        critical_minutes: 120,
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            from_crm: from_crm_default(),
            to_crm: to_crm_default(),
        }
    }
}

impl Thresholds {
    /// The limits of `direction` (`bidirectional` uses the stricter
    /// `from_crm` limits).
    pub fn for_direction(&self, direction: SyncDirection) -> DirectionThresholds {
        match direction {
            SyncDirection::ToCrm => self.to_crm,
            SyncDirection::FromCrm | SyncDirection::Bidirectional => self.from_crm,
        }
    }

    /// Classifies the lag of `direction`.
    pub fn classify(&self, direction: SyncDirection, lag_minutes: i64) -> HealthStatus {
        self.for_direction(direction).classify(lag_minutes)
    }
}

/// One row of the health view: a connection and a direction.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthRow {
    /// The connection's id.
    pub connection_id: ConnectionId,
    /// Its provider.
    pub provider: String,
    /// Its name.
    pub connection: String,
    /// `to_crm` or `from_crm` (a bidirectional run counts for both).
    pub direction: SyncDirection,
    /// When the latest completed run of this direction ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the latest run of this direction started, whatever its outcome.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Whole minutes from `last_success_at` to now; without a completed
    /// run, from the oldest run looked at (or the connection's creation),
    /// so the lag is a lower bound.
    pub lag_minutes: i64,
    /// The class of `lag_minutes`.
    pub status: HealthStatus,
}

/// How many of a connection's latest runs are read.
pub const DEFAULT_RUN_LIMIT: u32 = 500;

/// Whole minutes from `since` to `now`, 0 when `since` is in the future.
pub fn lag_minutes(since: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    now.signed_duration_since(since).num_minutes().max(0)
}

/// The health rows of one connection from its runs (newest first, as
/// [`StateStore::runs`] returns them).
///
/// The directions reported are those its runs moved data in; a connection
/// without runs gets both, measured from its creation.
pub fn connection_health(
    conn: &Connection,
    runs: &[SyncRun],
    thresholds: &Thresholds,
    now: DateTime<Utc>,
) -> Vec<HealthRow> {
    let covers = |run: &SyncRun, d: SyncDirection| {
        run.direction == d || run.direction == SyncDirection::Bidirectional
    };
    let mut out = Vec::new();
    for direction in [SyncDirection::FromCrm, SyncDirection::ToCrm] {
        let mine: Vec<&SyncRun> = runs.iter().filter(|r| covers(r, direction)).collect();
        if mine.is_empty() && !runs.is_empty() {
            continue;
        }
        let last_success_at = mine
            .iter()
            .filter(|r| r.status == RunStatus::Completed)
            .filter_map(|r| r.completed_at)
            .max();
        let last_run_at = mine.iter().map(|r| r.started_at).max();
        let since = last_success_at
            .or_else(|| mine.iter().map(|r| r.started_at).min())
            .unwrap_or(conn.created_at);
        let lag = lag_minutes(since, now);
        out.push(HealthRow {
            connection_id: conn.id.clone(),
            provider: conn.provider.clone(),
            connection: conn.name.clone(),
            direction,
            last_success_at,
            last_run_at,
            lag_minutes: lag,
            status: thresholds.classify(direction, lag),
        });
    }
    out
}

/// Whether a connection is expected to sync: paused and disconnected ones
/// are left out of the health view.
pub fn is_monitored(conn: &Connection) -> bool {
    !matches!(
        conn.status,
        ConnectionStatus::Paused | ConnectionStatus::Disconnected
    )
}

/// Seed 001's health view over every monitored connection of `store`, at
/// `now`, reading each connection's latest `run_limit` runs.
///
/// # Errors
/// Database errors.
pub async fn sync_health(
    store: &StateStore,
    thresholds: &Thresholds,
    now: DateTime<Utc>,
    run_limit: u32,
) -> Result<Vec<HealthRow>> {
    let mut out = Vec::new();
    for conn in store.connections().await? {
        if !is_monitored(&conn) {
            continue;
        }
        let runs = store.runs(&conn.id, run_limit).await?;
        out.extend(connection_health(&conn, &runs, thresholds, now));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_001_boundaries() {
        let t = Thresholds::default();
        let from = |m| t.classify(SyncDirection::FromCrm, m);
        let to = |m| t.classify(SyncDirection::ToCrm, m);
        assert_eq!(from(0), HealthStatus::Healthy);
        assert_eq!(from(30), HealthStatus::Healthy);
        assert_eq!(from(31), HealthStatus::Warning);
        assert_eq!(from(60), HealthStatus::Warning);
        assert_eq!(from(61), HealthStatus::Critical);
        assert_eq!(from(121), HealthStatus::Critical);
        assert_eq!(to(30), HealthStatus::Healthy);
        assert_eq!(to(31), HealthStatus::Healthy);
        assert_eq!(to(60), HealthStatus::Healthy);
        assert_eq!(to(61), HealthStatus::Warning);
        assert_eq!(to(120), HealthStatus::Warning);
        assert_eq!(to(121), HealthStatus::Critical);
        assert_eq!(
            t.classify(SyncDirection::Bidirectional, 61),
            HealthStatus::Critical
        );
    }

    #[test]
    fn lag_is_whole_minutes_and_never_negative() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(lag_minutes(t0, t0 + chrono::TimeDelta::seconds(119)), 1);
        assert_eq!(lag_minutes(t0, t0 + chrono::TimeDelta::minutes(61)), 61);
        assert_eq!(lag_minutes(t0 + chrono::TimeDelta::minutes(5), t0), 0);
    }

    #[test]
    fn thresholds_from_yaml() {
        let t: Thresholds =
            serde_yaml::from_str("to_crm: { warning_minutes: 10, critical_minutes: 20 }")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.to_crm.critical_minutes, 20);
        assert_eq!(t.from_crm, from_crm_default());
        assert_eq!(t.classify(SyncDirection::ToCrm, 21), HealthStatus::Critical);
    }
}
