//! Seed 003's hourly conflict detection.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use crm_core::Result;
use crm_sql::state::{ConnectionId, RecordSyncState, ReviewReason, StateStore};
use serde_json::json;

/// Flagged records looked at per connection and run.
pub const CONFLICT_BATCH: u32 = 10_000;

/// What one conflict detection run found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConflictReport {
    /// Record sync states flagged as conflicting.
    pub flagged: u64,
    /// Of those, the ones that already had an open review item.
    pub already_open: u64,
    /// Review items opened for flagged records that had none.
    pub reviews_opened: u64,
    /// Open review items of kind `manual_conflict`.
    pub open_manual_conflicts: u64,
    /// Records of open `manual_conflict` items that were not flagged but
    /// changed on both sides since their last sync: flagged now.
    pub newly_flagged: u64,
    /// Open `manual_conflict` items whose record is neither flagged nor
    /// changed on both sides: left for a person, counted here.
    pub stale_reviews: u64,
}

/// Seed 003's definition of a conflict: the record changed on both sides
/// since it last synced.
pub fn changed_on_both_sides(state: &RecordSyncState) -> bool {
    let after = |t: Option<DateTime<Utc>>| match (t, state.last_synced_at) {
        (Some(t), Some(last)) => t > last,
        _ => false,
    };
    after(state.local_updated_at) && after(state.remote_updated_at)
}

/// Conflict detection for `conn`: every record sync state flagged as
/// conflicting gets one open review item of kind `manual_conflict` (an
/// item already open for the record is kept as it is; `put_review` is
/// keyed by record, so a repeat never adds one), and the record of every
/// open `manual_conflict` item that changed on both sides since its last
/// sync is flagged. Up to `limit` flagged records per run.
///
/// An item opened here carries the state's conflict details
/// (`"kind": "sync_conflict"`); the next bidirectional round of the
/// record replaces them with the field values
/// [`crate::bidi::BidiSync::resolve_conflict`] needs.
///
/// # Errors
/// State-store errors.
pub async fn conflict_detection(
    store: &StateStore,
    conn: &ConnectionId,
    limit: u32,
) -> Result<ConflictReport> {
    let mut report = ConflictReport::default();
    let flagged = store.conflicts(conn, limit).await?;
    report.flagged = flagged.len() as u64;
    // Every open item, so an existing one is never replaced by ours.
    let open: Vec<_> = store
        .open_reviews(u32::MAX)
        .await?
        .into_iter()
        .filter(|r| r.connection_id.as_ref() == Some(conn))
        .collect();
    let mut open_keys: HashSet<(String, String)> = open
        .iter()
        .map(|r| (r.object.clone(), r.record_id.clone()))
        .collect();
    let flagged_keys: HashSet<(String, String)> = flagged
        .iter()
        .map(|s| (s.object.clone(), s.local_id.clone()))
        .collect();
    for state in &flagged {
        let key = (state.object.clone(), state.local_id.clone());
        if open_keys.contains(&key) {
            report.already_open += 1;
            continue;
        }
        let details = json!({
            "kind": "sync_conflict",
            "detected_by": "conflict_detection",
            "platform_id": state.local_id,
            "crm_id": state.remote_id,
            "last_synced_at": state.last_synced_at,
            "platform_updated_at": state.local_updated_at,
            "crm_updated_at": state.remote_updated_at,
            "conflict": state.conflict_details,
        });
        store
            .put_review(
                conn,
                &state.object,
                &state.local_id,
                ReviewReason::ManualConflict,
                &details,
            )
            .await?;
        open_keys.insert(key);
        report.reviews_opened += 1;
    }
    for item in open
        .iter()
        .filter(|r| r.reason == ReviewReason::ManualConflict)
    {
        report.open_manual_conflicts += 1;
        if flagged_keys.contains(&(item.object.clone(), item.record_id.clone())) {
            continue;
        }
        match store
            .record_state(conn, &item.object, &item.record_id)
            .await?
        {
            Some(mut state) if changed_on_both_sides(&state) => {
                state.conflict = true;
                state.conflict_details = Some(json!({
                    "detected_by": "conflict_detection",
                    "review_id": item.id.as_str(),
                    "fields": item.details.get("fields").cloned().unwrap_or(json!([])),
                }));
                store.upsert_record_state(&state).await?;
                report.newly_flagged += 1;
            }
            _ => report.stale_reviews += 1,
        }
    }
    Ok(report)
}
