//! [`RunReport`]: what one run did, in numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The numbers of one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// `full` or `incremental`.
    pub mode: String,
    /// Pages read.
    pub pages: u64,
    /// Upserts read from the source.
    pub rows_read: u64,
    /// Deletes read from the source.
    pub deletes_read: u64,
    /// Rows a full run found missing at the source (removed at the destination).
    pub removed_at_source: u64,
    /// Rows that passed validation.
    pub valid: u64,
    /// Rows skipped by validation (each goes to the dead letters).
    pub invalid: u64,
    /// Failed rules by `field.rule` (a row failing two rules counts in both).
    pub skipped_by_rule: BTreeMap<String, u64>,
    /// Rows that failed field mapping.
    pub transform_failed: u64,
    /// Rows folded into others by dedupe.
    pub deduped: u64,
    /// Match outcomes by status (`matched`, `probable`, `unmatched`, `multiple`).
    pub match_status: BTreeMap<String, u64>,
    /// Rows left out by `on_no_match` / `on_multiple_match: skip`.
    pub match_skipped: u64,
    /// Rows whose match a person decided on an earlier review item, kept
    /// instead of queueing them again (see [`crate::state::MatchDecision`]).
    pub match_decided: u64,
    /// Review items not queued because `max_manual_review` was reached.
    pub review_overflow: u64,
    /// Rows written as new.
    pub created: u64,
    /// Rows written as changed.
    pub updated: u64,
    /// Rows already up to date.
    pub unchanged: u64,
    /// Rows removed at the destination.
    pub deleted: u64,
    /// Rows the destination rejected (each goes to the dead letters).
    pub rejected: u64,
    /// Wall time.
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
    /// Warnings for the operator (e.g. the review cap was hit).
    pub warnings: Vec<String>,
}

impl RunReport {
    /// Rows written or confirmed at the destination.
    pub fn stored(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }

    /// The count for one match status.
    pub fn matched(&self, status: &str) -> u64 {
        self.match_status.get(status).copied().unwrap_or(0)
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job {} ({} run)", self.job, self.mode)?;
        writeln!(
            f,
            "  read      {} rows, {} deletes, {} pages",
            self.rows_read, self.deletes_read, self.pages
        )?;
        writeln!(f, "  valid     {}", self.valid)?;
        writeln!(f, "  skipped   {} (dead letters)", self.invalid)?;
        for (rule, n) in &self.skipped_by_rule {
            writeln!(f, "    {rule:<28} {n}")?;
        }
        if self.transform_failed > 0 {
            writeln!(f, "  transform failed {}", self.transform_failed)?;
        }
        writeln!(f, "  deduped   {}", self.deduped)?;
        if !self.match_status.is_empty() {
            writeln!(
                f,
                "  matched   {} / probable {} / unmatched {} / multiple {}",
                self.matched("matched"),
                self.matched("probable"),
                self.matched("unmatched"),
                self.matched("multiple")
            )?;
        }
        writeln!(
            f,
            "  stored    {} (created {}, updated {}, unchanged {}), deleted {}, rejected {}",
            self.stored(),
            self.created,
            self.updated,
            self.unchanged,
            self.deleted,
            self.rejected
        )?;
        if self.removed_at_source > 0 {
            writeln!(
                f,
                "  removed   {} (gone from the source)",
                self.removed_at_source
            )?;
        }
        writeln!(f, "  time      {:.2} s", self.elapsed.as_secs_f64())?;
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}
