//! Personal data at rest, and retention.
//!
//! # Sealed values
//!
//! With [`StateStore::with_pii_fields`] set, the value of every key naming
//! one of those fields (at any depth, as [`PiiFields::try_replace_json`]
//! finds them) is sealed before it is written to:
//!
//! - a dead letter's `record` ([`StateStore::add_dead_letter`],
//!   [`StateStore::put_dead_letter`], [`StateStore::edit_dead_letter`],
//!   [`StateTx::add_dead_letter`](super::StateTx::add_dead_letter));
//! - an audit entry's `old_values` and `new_values` ([`StateStore::audit`],
//!   [`StateTx::audit`](super::StateTx::audit));
//! - a review item's `details` (its `record` and `candidates`) and
//!   `resolution` ([`StateStore::add_review`], [`StateStore::put_review`],
//!   [`StateStore::resolve_review`]).
//!
//! A sealed value is replaced in the stored JSON by a marker object:
//!
//! ```json
//! {"email": {"$sealed": "v1:<base64 of nonce (12 bytes) || AES-256-GCM ciphertext and tag>"}}
//! ```
//!
//! The plaintext is the value's JSON text (so `{"text": "j@x"}` in a
//! record's serde form comes back as exactly that), encrypted with the
//! store's [`CredentialKey`] and bound (associated
//! data) to the table, the row id and the key, so a marker copied onto
//! another row or another field does not open. JSON nulls are not sealed.
//!
//! The store's read functions ([`StateStore::dead_letters`],
//! [`StateStore::dead_letter`], [`StateStore::dead_letter_page`],
//! [`StateStore::audit_log`], the review queue reads) open every marker
//! they find, whatever fields the reading store is configured with, so
//! rows written before or after a change of the PII fields read back the
//! same. A marker that does not open (another key, altered data) fails the
//! read with an [`crm_core::ErrorKind::Auth`] error saying "wrong
//! credential key": the store never returns a half-decrypted row, and never
//! panics.
//!
//! The text of a dead letter's `error` is for people: values of the
//! record's personal fields quoted in it are masked
//! ([`PiiFields::mask_json_values_in`]), not sealed.
//!
//! # Retention
//!
//! [`StateStore::purge_older_than`] deletes what is older than a number of
//! days: finished sync runs (by start), audit entries (by time), dead
//! letters (by latest failure) and finished webhook events (processed ones
//! by processing time, failed ones by arrival). Pending webhook events,
//! running sync runs and the review queue (a resolved item is the decision
//! a person made) are kept.

use chrono::{DateTime, Duration, Utc};
use crm_core::pii::PiiFields;
use crm_core::{Error, Result};
use secrecy::ExposeSecret;

use super::{CredentialKey, RunStatus, StateStore, WebhookStatus};
use crate::db::Arg;
use crate::error::SqlError;

/// The key of a sealed-value marker object.
pub(super) const SEALED: &str = "$sealed";

/// How a sealed value is named in errors.
const WHAT: &str = "a sealed personal value";

/// The tables holding sealed values.
pub(super) const DEAD_LETTERS: &str = "crm_dead_letters";
pub(super) const AUDIT_LOG: &str = "crm_audit_log";
pub(super) const REVIEW_QUEUE: &str = "crm_review_queue";

/// The associated data binding a sealed value to its table, row and key.
fn context(table: &str, row: &str, key: &str) -> String {
    format!("pii\u{1f}{table}\u{1f}{row}\u{1f}{key}")
}

fn is_marker(json: &serde_json::Value) -> Option<&str> {
    match json {
        serde_json::Value::Object(map) if map.len() == 1 => map.get(SEALED)?.as_str(),
        _ => None,
    }
}

/// `json` with the values of `fields` sealed (see the module docs).
pub(super) fn seal_json(
    key: &CredentialKey,
    fields: &PiiFields,
    table: &str,
    row: &str,
    json: &serde_json::Value,
) -> Result<serde_json::Value> {
    fields
        .try_replace_json(json, |k, v| {
            if v.is_null() || is_marker(v).is_some() {
                return Ok(v.clone());
            }
            let blob = key.seal(&v.to_string(), &context(table, row, k))?;
            Ok(serde_json::json!({ SEALED: blob }))
        })
        .map_err(|e: SqlError| Error::from(e).with_operation("state.seal"))
}

/// [`seal_json`] of an optional value.
pub(super) fn seal_opt(
    key: &CredentialKey,
    fields: &PiiFields,
    table: &str,
    row: &str,
    json: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>> {
    json.map(|j| seal_json(key, fields, table, row, j))
        .transpose()
}

/// `json` with every sealed-value marker opened.
///
/// # Errors
/// [`SqlError::Crypto`] for a marker this key does not open.
pub(super) fn open_json(
    key: &CredentialKey,
    table: &str,
    row: &str,
    json: serde_json::Value,
) -> std::result::Result<serde_json::Value, SqlError> {
    use serde_json::Value as J;
    match json {
        J::Object(map) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match is_marker(&v) {
                    Some(blob) => {
                        let plain = key.open_labelled(blob, &context(table, row, &k), WHAT)?;
                        serde_json::from_str(plain.expose_secret())
                            .map_err(|_| SqlError::Crypto(format!("{WHAT} is not JSON")))?
                    }
                    None => open_json(key, table, row, v)?,
                };
                Ok((k, v))
            })
            .collect::<std::result::Result<_, SqlError>>()
            .map(J::Object),
        J::Array(items) => items
            .into_iter()
            .map(|v| open_json(key, table, row, v))
            .collect::<std::result::Result<_, SqlError>>()
            .map(J::Array),
        other => Ok(other),
    }
}

/// A stored JSON column, parsed, with its markers opened; `None` for NULL
/// or text that is not JSON (as the plain readers treat it).
pub(super) fn open_col(
    key: &CredentialKey,
    table: &str,
    row: &str,
    text: Option<String>,
) -> std::result::Result<Option<serde_json::Value>, SqlError> {
    let Some(text) = text else { return Ok(None) };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(None);
    };
    if text.contains(SEALED) {
        open_json(key, table, row, json).map(Some)
    } else {
        Ok(Some(json))
    }
}

/// What [`StateStore::purge_older_than`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Finished sync runs started before the cutoff.
    pub runs: u64,
    /// Audit entries recorded before the cutoff.
    pub audit_entries: u64,
    /// Dead letters whose latest failure is before the cutoff.
    pub dead_letters: u64,
    /// Processed webhook events processed before the cutoff, and failed
    /// ones received before it.
    pub webhook_events: u64,
}

impl PurgeReport {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.runs + self.audit_entries + self.dead_letters + self.webhook_events
    }
}

impl StateStore {
    /// Seals the values of `fields` in dead letters, audit entries and
    /// review items before they are written (builder style); see the
    /// [module docs](self) for the stored form. Build `fields` from the
    /// job's mapping with [`PiiFields::from_mapping`]. Reads open sealed
    /// values whether or not this is set.
    #[must_use]
    pub fn with_pii_fields(mut self, fields: PiiFields) -> Self {
        self.pii = std::sync::Arc::new(fields);
        self
    }

    /// The fields sealed at rest (empty unless
    /// [`StateStore::with_pii_fields`] set them).
    pub fn pii_fields(&self) -> &PiiFields {
        &self.pii
    }

    /// Deletes what is older than `days` days (see [`StateStore::purge_before`]).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for 0 days (a retention of
    /// nothing is a configuration mistake; use [`StateStore::purge_before`]
    /// to empty the logs on purpose); database errors.
    ///
    /// # Cancel safety
    /// The deletes run in one transaction: a dropped call deletes nothing
    /// or everything, and can be repeated.
    pub async fn purge_older_than(&self, days: u32) -> Result<PurgeReport> {
        if days == 0 {
            return Err(Error::invalid_input("a retention period is at least 1 day"));
        }
        match Utc::now().checked_sub_signed(Duration::days(i64::from(days))) {
            Some(cutoff) => self.purge_before(cutoff).await,
            // Before the earliest representable time: nothing is that old.
            None => Ok(PurgeReport::default()),
        }
    }

    /// Deletes, in one transaction, finished sync runs started before
    /// `cutoff`, audit entries recorded before it, dead letters whose latest
    /// failure is before it, processed webhook events processed before it
    /// and failed ones received before it. Running sync runs, pending
    /// webhook events and review items are kept.
    ///
    /// # Errors
    /// Database errors (then nothing was deleted).
    ///
    /// # Cancel safety
    /// As [`StateStore::purge_older_than`].
    pub async fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<PurgeReport> {
        let mut tx = self.begin().await?;
        let mut ops = tx.ops();
        let runs = ops
            .exec(
                "state.purge",
                "DELETE FROM crm_sync_runs WHERE started_at < ? AND status <> ?",
                &[Arg::time(cutoff), Arg::text(RunStatus::Running.as_str())],
            )
            .await?;
        let audit_entries = ops
            .exec(
                "state.purge",
                "DELETE FROM crm_audit_log WHERE occurred_at < ?",
                &[Arg::time(cutoff)],
            )
            .await?;
        let dead_letters = ops
            .exec(
                "state.purge",
                "DELETE FROM crm_dead_letters WHERE last_failed_at < ?",
                &[Arg::time(cutoff)],
            )
            .await?;
        let webhook_events = ops
            .exec(
                "state.purge",
                "DELETE FROM crm_webhook_events WHERE (status = ? AND processed_at < ?) \
                 OR (status = ? AND received_at < ?)",
                &[
                    Arg::text(WebhookStatus::Processed.as_str()),
                    Arg::time(cutoff),
                    Arg::text(WebhookStatus::Failed.as_str()),
                    Arg::time(cutoff),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(PurgeReport {
            runs,
            audit_entries,
            dead_letters,
            webhook_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> PiiFields {
        PiiFields::new().with("email").with("phone")
    }

    #[test]
    fn sealed_values_round_trip_and_are_bound_to_their_place() {
        let key = CredentialKey::from_bytes([9; 32]);
        let record = json!({"id": "C-1", "fields": {
            "email": {"text": "john@example.com"},
            "phone": "null",
            "name": {"text": "John"},
            "contact": {"json": {"phone": 4_155_550_190_i64, "none": null}},
        }});
        let sealed = seal_json(&key, &fields(), DEAD_LETTERS, "r1", &record).unwrap();
        let text = sealed.to_string();
        assert!(!text.contains("john@example.com") && !text.contains("4155550190"));
        assert!(text.contains("John"), "other fields stay readable");
        assert!(
            sealed["fields"]["email"][SEALED]
                .as_str()
                .unwrap()
                .starts_with("v1:")
        );
        // Sealing again changes nothing more.
        let twice = seal_json(&key, &fields(), DEAD_LETTERS, "r1", &sealed).unwrap();
        assert_eq!(twice, sealed);
        assert_eq!(
            open_json(&key, DEAD_LETTERS, "r1", sealed.clone()).unwrap(),
            record
        );
        // Another row, table or key: a clear error.
        for (table, row, k) in [
            (DEAD_LETTERS, "r2", key.clone()),
            (AUDIT_LOG, "r1", key.clone()),
            (DEAD_LETTERS, "r1", CredentialKey::from_bytes([8; 32])),
        ] {
            let err = open_json(&k, table, row, sealed.clone()).unwrap_err();
            assert!(err.to_string().contains("wrong credential key"), "{err}");
        }
        // A marker moved to another field does not open either.
        let mut moved = sealed.clone();
        moved["fields"]["phone"] = moved["fields"]["email"].clone();
        assert!(open_json(&key, DEAD_LETTERS, "r1", moved).is_err());
        // Garbage in a marker is an error, not a panic.
        for bad in [
            json!({"x": {SEALED: "v1:!!"}}),
            json!({"x": {SEALED: "zz"}}),
        ] {
            assert!(open_json(&key, DEAD_LETTERS, "r1", bad).is_err());
        }
        // No fields: nothing sealed.
        assert_eq!(
            seal_json(&key, &PiiFields::new(), DEAD_LETTERS, "r1", &record).unwrap(),
            record
        );
        assert_eq!(
            open_col(&key, DEAD_LETTERS, "r1", Some("nope".into())).unwrap(),
            None
        );
    }
}
