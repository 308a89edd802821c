//! Named leases with an expiry, so one holder at a time runs the work a
//! name stands for (a connection's sync) across processes.
//!
//! A lease is a row of `crm_leases`. Taking one is a single conditional
//! `UPDATE` (the row exists and has expired, or is already the caller's)
//! or a single `INSERT` that a unique key lets only one caller win; no
//! read-then-write window, on any of the three engines.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_core::{Error, ErrorKind, Result};

use super::{StateStore, decode};
use crate::config::DatabaseKind;
use crate::db::{Arg, RowExt};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// What the lease stands for.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
    /// When the holder took it.
    pub acquired_at: DateTime<Utc>,
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, "lease time to live out of range")
                .with_operation("state.lease")
        })
}

impl StateStore {
    /// Takes the lease `name` for `holder` for `ttl` from now, if it is
    /// free, expired or already `holder`'s. `false` when another holder has
    /// an unexpired lease.
    ///
    /// # Errors
    /// Database errors.
    ///
    /// # Cancel safety
    /// Each statement is atomic; a dropped call either took the lease (it
    /// lapses after `ttl`) or did not.
    pub async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.try_acquire_lease_at(name, holder, ttl, Utc::now())
            .await
    }

    /// [`StateStore::try_acquire_lease`] with the caller's clock reading
    /// `now` (every process sharing a lease must use the same clock).
    ///
    /// # Errors
    /// Database errors.
    ///
    /// # Cancel safety
    /// As [`StateStore::try_acquire_lease`].
    pub async fn try_acquire_lease_at(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires = expiry(now, ttl)?;
        let taken = self
            .ops()
            .exec(
                "state.try_acquire_lease",
                "UPDATE crm_leases SET holder = ?, expires_at = ?, acquired_at = ? \
                 WHERE name = ? AND (expires_at <= ? OR holder = ?)",
                &[
                    Arg::text(holder),
                    Arg::time(expires),
                    Arg::time(now),
                    Arg::text(name),
                    Arg::time(now),
                    Arg::text(holder),
                ],
            )
            .await?;
        if taken > 0 {
            return Ok(true);
        }
        let insert = match self.database_kind() {
            DatabaseKind::MySql => {
                "INSERT IGNORE INTO crm_leases (name, holder, expires_at, acquired_at) \
                 VALUES (?, ?, ?, ?)"
            }
            _ => {
                "INSERT INTO crm_leases (name, holder, expires_at, acquired_at) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
            }
        };
        let inserted = self
            .ops()
            .exec(
                "state.try_acquire_lease",
                insert,
                &[
                    Arg::text(name),
                    Arg::text(holder),
                    Arg::time(expires),
                    Arg::time(now),
                ],
            )
            .await?;
        if inserted > 0 {
            return Ok(true);
        }
        // MySQL counts an UPDATE that changes nothing (the holder taking its
        // own lease again at the same instant) as zero rows: read it back.
        Ok(self
            .lease(name)
            .await?
            .is_some_and(|l| l.holder == holder && l.expires_at == expires))
    }

    /// Extends `holder`'s lease `name` to `ttl` from now. `false` when
    /// `holder` no longer has it (it expired and someone else took it).
    ///
    /// # Errors
    /// Database errors.
    pub async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.renew_lease_at(name, holder, ttl, Utc::now()).await
    }

    /// [`StateStore::renew_lease`] with the caller's clock reading `now`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn renew_lease_at(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires = expiry(now, ttl)?;
        let n = self
            .ops()
            .exec(
                "state.renew_lease",
                "UPDATE crm_leases SET expires_at = ? WHERE name = ? AND holder = ?",
                &[Arg::time(expires), Arg::text(name), Arg::text(holder)],
            )
            .await?;
        if n > 0 {
            return Ok(true);
        }
        Ok(self.lease(name).await?.is_some_and(|l| l.holder == holder))
    }

    /// Gives up `holder`'s lease `name`; `false` when `holder` did not have
    /// it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.ops()
            .exec(
                "state.release_lease",
                "DELETE FROM crm_leases WHERE name = ? AND holder = ?",
                &[Arg::text(name), Arg::text(holder)],
            )
            .await
            .map(|n| n > 0)
    }

    /// The lease `name`, expired or not, if a row exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let rows = self
            .ops()
            .fetch(
                "state.lease",
                "SELECT name, holder, expires_at, acquired_at FROM crm_leases WHERE name = ?",
                &[Arg::text(name)],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok(Some(Lease {
                name: decode(r.text("name"))?,
                holder: decode(r.text("holder"))?,
                expires_at: decode(r.time("expires_at"))?,
                acquired_at: decode(r.time("acquired_at"))?,
            })),
            None => Ok(None),
        }
    }
}
