//! Writes keyed by record, for pipelines that may process a page twice.
//!
//! A pipeline commits a page's checkpoint only after storing the page, so a
//! crash in between makes the next run process the page again. These writes
//! are keyed by (connection, object, record key[, stage]): doing them twice
//! leaves one row, so dead letters and review items are never duplicated.

use chrono::Utc;
use crm_core::{ErrorKind, Result};

use super::{
    ConnectionId, DeadLetterId, NewConnection, ReviewId, ReviewReason, ReviewStatus, StateStore,
    decode, pii,
};
use crate::db::{Arg, RowExt};

/// Keys bound in one `IN (...)` list: well under every engine's limit on
/// bound parameters (SQLite's is the lowest, 32,766 in current versions).
pub(super) const KEYS_PER_STATEMENT: usize = 500;

pub(super) fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl StateStore {
    /// The id of the connection `provider`/`name`, created (active, no
    /// credentials) when it does not exist yet.
    ///
    /// # Errors
    /// Database errors.
    pub async fn ensure_connection(&self, provider: &str, name: &str) -> Result<ConnectionId> {
        if let Some(id) = self.find_connection(provider, name).await? {
            return Ok(id);
        }
        match self
            .create_connection(NewConnection::new(provider, name))
            .await
        {
            Ok(id) => Ok(id),
            // Another process created it between the look-up and the insert.
            Err(e) if *e.kind() == ErrorKind::Conflict => {
                self.find_connection(provider, name).await?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn find_connection(&self, provider: &str, name: &str) -> Result<Option<ConnectionId>> {
        let rows = self
            .ops()
            .fetch(
                "state.find_connection",
                "SELECT id FROM crm_connections WHERE provider = ? AND name = ?",
                &[Arg::text(provider), Arg::text(name)],
            )
            .await?;
        match rows.first() {
            Some(r) => decode(r.text("id")).map(|id| Some(ConnectionId(id))),
            None => Ok(None),
        }
    }

    /// Forgets the checkpoint of `object` (the next read starts over).
    ///
    /// # Errors
    /// Database errors.
    pub async fn clear_checkpoint(&self, conn: &ConnectionId, object: &str) -> Result<()> {
        self.ops()
            .exec(
                "state.clear_checkpoint",
                "DELETE FROM crm_checkpoints WHERE connection_id = ? AND object = ?",
                &[Arg::text(conn.as_str()), Arg::text(object)],
            )
            .await
            .map(drop)
    }

    /// Keeps a record that failed `stage`, keyed by `record_key`: a second
    /// failure of the same record at the same stage replaces the record and
    /// error and counts one more attempt, it never adds a row.
    ///
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// in the stored record, and masked where `error` quotes them (see
    /// [`pii`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn put_dead_letter(
        &self,
        conn: &ConnectionId,
        object: &str,
        record_key: &str,
        stage: &str,
        record: &serde_json::Value,
        error: &str,
    ) -> Result<DeadLetterId> {
        let mut tx = self.begin().await?;
        let key_args = [
            Arg::text(conn.as_str()),
            Arg::text(object),
            Arg::text(record_key),
            Arg::text(stage),
        ];
        let existing = tx
            .ops()
            .fetch(
                "state.put_dead_letter",
                "SELECT id FROM crm_dead_letters WHERE connection_id = ? AND object = ? \
                 AND record_key = ? AND stage = ?",
                &key_args,
            )
            .await?;
        let now = Utc::now();
        let error = self.pii.mask_json_values_in(record, error);
        let seal = |id: &DeadLetterId| {
            pii::seal_json(&self.key, &self.pii, pii::DEAD_LETTERS, id.as_str(), record)
        };
        let id = match existing.first() {
            Some(row) => {
                let id = DeadLetterId(decode(row.text("id"))?);
                let record = seal(&id)?;
                tx.ops()
                    .exec(
                        "state.put_dead_letter",
                        "UPDATE crm_dead_letters SET record = ?, error = ?, attempts = attempts + 1, \
                         last_failed_at = ? WHERE id = ?",
                        &[
                            Arg::json_text(&record),
                            Arg::text(error.as_str()),
                            Arg::time(now),
                            Arg::text(id.as_str()),
                        ],
                    )
                    .await?;
                id
            }
            None => {
                let id = DeadLetterId::random();
                let record = seal(&id)?;
                tx.ops()
                    .exec(
                        "state.put_dead_letter",
                        "INSERT INTO crm_dead_letters (id, connection_id, object, record_key, record, \
                         stage, error, attempts, first_failed_at, last_failed_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                        &[
                            Arg::text(id.as_str()),
                            Arg::text(conn.as_str()),
                            Arg::text(object),
                            Arg::text(record_key),
                            Arg::json_text(&record),
                            Arg::text(stage),
                            Arg::text(error.as_str()),
                            Arg::time(now),
                            Arg::time(now),
                        ],
                    )
                    .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    /// Removes every dead letter of these records (they went through
    /// later). Returns how many were removed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn clear_dead_letters_for(
        &self,
        conn: &ConnectionId,
        object: &str,
        record_keys: &[String],
    ) -> Result<u64> {
        let mut removed = 0;
        for chunk in record_keys.chunks(KEYS_PER_STATEMENT) {
            let mut args = vec![Arg::text(conn.as_str()), Arg::text(object)];
            args.extend(chunk.iter().map(|k| Arg::text(k.as_str())));
            removed += self
                .ops()
                .exec(
                    "state.clear_dead_letters_for",
                    &format!(
                        "DELETE FROM crm_dead_letters WHERE connection_id = ? AND object = ? \
                         AND record_key IN ({})",
                        marks(chunk.len())
                    ),
                    &args,
                )
                .await?;
        }
        Ok(removed)
    }

    /// Dead letters of a connection, all attempts, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_dead_letters(&self, conn: &ConnectionId) -> Result<u64> {
        self.count(
            "state.count_dead_letters",
            "SELECT COUNT(*) AS n FROM crm_dead_letters WHERE connection_id = ?",
            &[Arg::text(conn.as_str())],
        )
        .await
    }

    /// Queues a record for review, keyed by record: while an item for the
    /// record is open, a second call replaces its reason and details.
    /// Values of the [PII fields](StateStore::with_pii_fields) are sealed
    /// in the stored details.
    ///
    /// # Errors
    /// Database errors.
    pub async fn put_review(
        &self,
        conn: &ConnectionId,
        object: &str,
        record_id: &str,
        reason: ReviewReason,
        details: &serde_json::Value,
    ) -> Result<ReviewId> {
        let mut tx = self.begin().await?;
        let existing = tx
            .ops()
            .fetch(
                "state.put_review",
                "SELECT id FROM crm_review_queue WHERE connection_id = ? AND object = ? \
                 AND record_id = ? AND status = ?",
                &[
                    Arg::text(conn.as_str()),
                    Arg::text(object),
                    Arg::text(record_id),
                    Arg::text(ReviewStatus::Open.as_str()),
                ],
            )
            .await?;
        let seal = |id: &ReviewId| {
            pii::seal_json(
                &self.key,
                &self.pii,
                pii::REVIEW_QUEUE,
                id.as_str(),
                details,
            )
        };
        let id = match existing.first() {
            Some(row) => {
                let id = ReviewId(decode(row.text("id"))?);
                let details = seal(&id)?;
                tx.ops()
                    .exec(
                        "state.put_review",
                        "UPDATE crm_review_queue SET reason = ?, details = ? WHERE id = ?",
                        &[
                            Arg::text(reason.as_str()),
                            Arg::json_text(&details),
                            Arg::text(id.as_str()),
                        ],
                    )
                    .await?;
                id
            }
            None => {
                let id = ReviewId::random();
                let details = seal(&id)?;
                tx.ops()
                    .exec(
                        "state.put_review",
                        "INSERT INTO crm_review_queue (id, connection_id, object, record_id, reason, \
                         details, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        &[
                            Arg::text(id.as_str()),
                            Arg::text(conn.as_str()),
                            Arg::text(object),
                            Arg::text(record_id),
                            Arg::text(reason.as_str()),
                            Arg::json_text(&details),
                            Arg::text(ReviewStatus::Open.as_str()),
                            Arg::time(Utc::now()),
                        ],
                    )
                    .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    /// Dismisses the open review items of these records (their match
    /// became certain, or they left the source). Returns how many were closed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn dismiss_reviews_for(
        &self,
        conn: &ConnectionId,
        object: &str,
        record_ids: &[String],
    ) -> Result<u64> {
        let mut closed = 0;
        for chunk in record_ids.chunks(KEYS_PER_STATEMENT) {
            let mut args = vec![
                Arg::text(ReviewStatus::Dismissed.as_str()),
                Arg::time(Utc::now()),
                Arg::text(conn.as_str()),
                Arg::text(object),
                Arg::text(ReviewStatus::Open.as_str()),
            ];
            args.extend(chunk.iter().map(|k| Arg::text(k.as_str())));
            closed += self
                .ops()
                .exec(
                    "state.dismiss_reviews_for",
                    &format!(
                        "UPDATE crm_review_queue SET status = ?, resolved_at = ? WHERE connection_id = ? \
                         AND object = ? AND status = ? AND record_id IN ({})",
                        marks(chunk.len())
                    ),
                    &args,
                )
                .await?;
        }
        Ok(closed)
    }

    /// How many review items of a connection are open.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_open_reviews(&self, conn: &ConnectionId) -> Result<u64> {
        self.count(
            "state.count_open_reviews",
            "SELECT COUNT(*) AS n FROM crm_review_queue WHERE connection_id = ? AND status = ?",
            &[
                Arg::text(conn.as_str()),
                Arg::text(ReviewStatus::Open.as_str()),
            ],
        )
        .await
    }

    async fn count(&self, op: &'static str, sql: &str, args: &[Arg]) -> Result<u64> {
        let rows = self.ops().fetch(op, sql, args).await?;
        let n = match rows.first() {
            Some(r) => decode(r.int("n"))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
