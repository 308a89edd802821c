//! Pages of the review queue and of the dead letters, for a web UI: filters,
//! counts, and keyset pagination that neither skips nor repeats an item
//! while items are added or closed between pages.
//!
//! A page is ordered by (queued time, id) and the next one starts strictly
//! after the last item shown, given as a [`PageAfter`]. Build it from the
//! item as read back from the store (its `created_at` / `first_failed_at`
//! and id): every engine stores times in microseconds, and so do the items
//! read back.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::Result;

use super::keyed::{KEYS_PER_STATEMENT, marks};
use super::{
    ConnectionId, DeadLetter, DeadLetterId, ReviewItem, ReviewReason, ReviewStatus, StateStore,
    decode, not_found_if_zero, pii,
};
use crate::db::{Arg, RowExt};

/// Every review reason, in declaration order.
fn every_reason() -> [ReviewReason; 3] {
    // A new variant fails this match, so the list below stays complete.
    let _complete = |r: ReviewReason| match r {
        ReviewReason::ProbableMatch
        | ReviewReason::MultipleMatch
        | ReviewReason::ManualConflict => {}
    };
    [
        ReviewReason::ProbableMatch,
        ReviewReason::MultipleMatch,
        ReviewReason::ManualConflict,
    ]
}

/// Which queued items a page shows; every field narrows the set.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct QueueFilter {
    /// Only items of this connection.
    pub connection: Option<ConnectionId>,
    /// Only items of this object.
    pub object: Option<String>,
    /// Only items queued (review: `created_at`; dead letter:
    /// `first_failed_at`) strictly before this time.
    pub before: Option<DateTime<Utc>>,
    /// Only items queued at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl QueueFilter {
    /// No filter: every item.
    pub fn new() -> Self {
        QueueFilter::default()
    }

    /// Only items of connection `id`.
    #[must_use]
    pub fn connection(mut self, id: ConnectionId) -> Self {
        self.connection = Some(id);
        self
    }

    /// Only items of `object`.
    #[must_use]
    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    /// Only items queued strictly before `t`.
    #[must_use]
    pub fn before(mut self, t: DateTime<Utc>) -> Self {
        self.before = Some(t);
        self
    }

    /// Only items queued at or after `t`.
    #[must_use]
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }

    /// Appends this filter's conditions on `time_col` and its arguments.
    fn push(&self, time_col: &str, conds: &mut Vec<String>, args: &mut Vec<Arg>) {
        if let Some(c) = &self.connection {
            conds.push("connection_id = ?".into());
            args.push(Arg::text(c.as_str()));
        }
        if let Some(o) = &self.object {
            conds.push("object = ?".into());
            args.push(Arg::text(o.as_str()));
        }
        if let Some(t) = self.before {
            conds.push(format!("{time_col} < ?"));
            args.push(Arg::time(t));
        }
        if let Some(t) = self.since {
            conds.push(format!("{time_col} >= ?"));
            args.push(Arg::time(t));
        }
    }
}

/// Where a page starts: the (time, id) of the last item of the previous
/// page (a review item's `created_at`, a dead letter's `first_failed_at`).
///
/// Take both from the item as read from the store, so the next page starts
/// exactly after it. [`PageAfter::encode`] makes an opaque URL-safe token
/// of it for a "next page" link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageAfter {
    /// The queued time of the last item shown.
    pub at: DateTime<Utc>,
    /// The id of the last item shown.
    pub id: String,
}

impl PageAfter {
    /// Starts after the item queued at `at` with id `id`.
    pub fn new(at: DateTime<Utc>, id: impl Into<String>) -> Self {
        PageAfter { at, id: id.into() }
    }

    /// An opaque, URL-safe token (base64url without padding) that
    /// [`PageAfter::decode`] reads back exactly.
    pub fn encode(&self) -> String {
        let text = format!(
            "{}~{}",
            self.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            self.id
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Reads a token made by [`PageAfter::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<PageAfter> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (at, id) = text.split_once('~')?;
        if id.is_empty() {
            return None;
        }
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some(PageAfter::new(at, id))
    }

    /// Appends the keyset condition on (`time_col`, `id`) and its arguments.
    ///
    /// The leading `time_col >= ?` is implied by the rest; it is there so
    /// every engine starts its index scan at the position instead of
    /// reading and discarding every earlier item (an `OR` of bound
    /// parameters is no index bound for SQLite, PostgreSQL or MySQL), which
    /// kept deep pages as fast as the first (docs/benchmarks.md).
    fn push(&self, time_col: &str, conds: &mut Vec<String>, args: &mut Vec<Arg>) {
        conds.push(format!(
            "{time_col} >= ? AND ({time_col} > ? OR ({time_col} = ? AND id > ?))"
        ));
        args.push(Arg::time(self.at));
        args.push(Arg::time(self.at));
        args.push(Arg::time(self.at));
        args.push(Arg::text(self.id.as_str()));
    }
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// Review conditions shared by pages and counts: open, one of `reasons`
/// (every reason when `None`), under `filter`.
fn open_review_conds(
    reasons: Option<&[ReviewReason]>,
    filter: &QueueFilter,
) -> (Vec<String>, Vec<Arg>) {
    let mut conds = vec!["status = ?".to_owned()];
    let mut args = vec![Arg::text(ReviewStatus::Open.as_str())];
    if let Some(reasons) = reasons {
        conds.push(format!("reason IN ({})", marks(reasons.len())));
        args.extend(reasons.iter().map(|r| Arg::text(r.as_str())));
    }
    filter.push("created_at", &mut conds, &mut args);
    (conds, args)
}

impl StateStore {
    /// Open review items whose reason is one of `reasons`, matching
    /// `filter`, oldest first (`created_at`, then id), starting after
    /// `after`, at most `limit`. No reasons, no items.
    ///
    /// The next page starts after the last item returned:
    /// `PageAfter::new(item.created_at, item.id.as_str())`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn review_page(
        &self,
        reasons: &[ReviewReason],
        filter: &QueueFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<ReviewItem>> {
        if reasons.is_empty() {
            return Ok(Vec::new());
        }
        let (mut conds, mut args) = open_review_conds(Some(reasons), filter);
        if let Some(after) = after {
            after.push("created_at", &mut conds, &mut args);
        }
        let rows = self
            .ops()
            .fetch(
                "state.review_page",
                &format!(
                    "SELECT * FROM crm_review_queue{} ORDER BY created_at, id LIMIT {limit}",
                    where_clause(&conds)
                ),
                &args,
            )
            .await?;
        decode(rows.iter().map(|r| self.review_from(r)).collect())
    }

    /// How many review items are open under `filter`, per reason: every
    /// reason, in declaration order, 0 when it has none.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_open_reviews_by_reason(
        &self,
        filter: &QueueFilter,
    ) -> Result<Vec<(ReviewReason, u64)>> {
        let (conds, args) = open_review_conds(None, filter);
        let rows = self
            .ops()
            .fetch(
                "state.count_open_reviews_by_reason",
                &format!(
                    "SELECT reason, COUNT(*) AS n FROM crm_review_queue{} GROUP BY reason",
                    where_clause(&conds)
                ),
                &args,
            )
            .await?;
        let mut counts: Vec<(ReviewReason, u64)> =
            every_reason().into_iter().map(|r| (r, 0)).collect();
        for row in &rows {
            let reason = decode(row.text("reason"))?;
            let n = u64::try_from(decode(row.int("n"))?).unwrap_or(0);
            // A reason this version does not know is not counted.
            if let Some(slot) = counts.iter_mut().find(|(r, _)| r.as_str() == reason) {
                slot.1 += n;
            }
        }
        Ok(counts)
    }

    /// Dead letters matching `filter`, whatever their attempts, oldest
    /// first (`first_failed_at`, then id), starting after `after`, at most
    /// `limit`.
    ///
    /// The next page starts after the last item returned:
    /// `PageAfter::new(dl.first_failed_at, dl.id.as_str())`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn dead_letter_page(
        &self,
        filter: &QueueFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>> {
        let mut conds = Vec::new();
        let mut args = Vec::new();
        filter.push("first_failed_at", &mut conds, &mut args);
        if let Some(after) = after {
            after.push("first_failed_at", &mut conds, &mut args);
        }
        let rows = self
            .ops()
            .fetch(
                "state.dead_letter_page",
                &format!(
                    "SELECT * FROM crm_dead_letters{} ORDER BY first_failed_at, id LIMIT {limit}",
                    where_clause(&conds)
                ),
                &args,
            )
            .await?;
        decode(rows.iter().map(|r| self.dead_letter_from(r)).collect())
    }

    /// How many dead letters match `filter`, whatever their attempts.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_dead_letters_where(&self, filter: &QueueFilter) -> Result<u64> {
        let mut conds = Vec::new();
        let mut args = Vec::new();
        filter.push("first_failed_at", &mut conds, &mut args);
        let rows = self
            .ops()
            .fetch(
                "state.count_dead_letters_where",
                &format!(
                    "SELECT COUNT(*) AS n FROM crm_dead_letters{}",
                    where_clause(&conds)
                ),
                &args,
            )
            .await?;
        let n = match rows.first() {
            Some(r) => decode(r.int("n"))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One dead letter by id, sealed values opened.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::Auth`] when a sealed value does not open with
    /// the store's key (see [`pii`]); database errors.
    pub async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>> {
        let rows = self
            .ops()
            .fetch(
                "state.dead_letter",
                "SELECT * FROM crm_dead_letters WHERE id = ?",
                &[Arg::text(id.as_str())],
            )
            .await?;
        rows.first()
            .map(|r| self.dead_letter_from(r))
            .transpose()
            .map_err(Into::into)
    }

    /// Replaces a dead letter's stored record (a person edited it before a
    /// retry). Its error, attempts and times stay as they are. Values of
    /// the [PII fields](StateStore::with_pii_fields) are sealed again.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::NotFound`] for an unknown id; database errors.
    pub async fn edit_dead_letter(
        &self,
        id: &DeadLetterId,
        record: &serde_json::Value,
    ) -> Result<()> {
        let record = pii::seal_json(&self.key, &self.pii, pii::DEAD_LETTERS, id.as_str(), record)?;
        // MySQL counts matched rows (sqlx sets CLIENT_FOUND_ROWS), so an
        // edit that changes nothing still counts 1.
        let n = self
            .ops()
            .exec(
                "state.edit_dead_letter",
                "UPDATE crm_dead_letters SET record = ? WHERE id = ?",
                &[Arg::json_text(&record), Arg::text(id.as_str())],
            )
            .await?;
        not_found_if_zero(n, "dead letter", id.as_str())
    }

    /// The latest resolved review item (status resolved, not dismissed)
    /// per record key of `object` under `conn`, among `record_keys`, whose
    /// reason is one of `reasons`: the decision a person made last
    /// (greatest `resolved_at`, then `created_at`, then id). Keys without
    /// one are absent from the map.
    ///
    /// # Errors
    /// Database errors.
    pub async fn resolved_reviews_for(
        &self,
        conn: &ConnectionId,
        object: &str,
        record_keys: &[String],
        reasons: &[ReviewReason],
    ) -> Result<HashMap<String, ReviewItem>> {
        let mut latest: HashMap<String, ReviewItem> = HashMap::new();
        if reasons.is_empty() {
            return Ok(latest);
        }
        for chunk in record_keys.chunks(KEYS_PER_STATEMENT) {
            let mut args = vec![
                Arg::text(conn.as_str()),
                Arg::text(object),
                Arg::text(ReviewStatus::Resolved.as_str()),
            ];
            args.extend(reasons.iter().map(|r| Arg::text(r.as_str())));
            args.extend(chunk.iter().map(|k| Arg::text(k.as_str())));
            let rows = self
                .ops()
                .fetch(
                    "state.resolved_reviews_for",
                    &format!(
                        "SELECT * FROM crm_review_queue WHERE connection_id = ? AND object = ? \
                         AND status = ? AND reason IN ({}) AND record_id IN ({})",
                        marks(reasons.len()),
                        marks(chunk.len())
                    ),
                    &args,
                )
                .await?;
            for row in &rows {
                let item = decode(self.review_from(row))?;
                let newer = latest.get(&item.record_id).is_none_or(|old| {
                    (item.resolved_at, item.created_at, &item.id)
                        > (old.resolved_at, old.created_at, &old.id)
                });
                if newer {
                    latest.insert(item.record_id.clone(), item);
                }
            }
        }
        Ok(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_after_round_trips_and_rejects_garbage() {
        let at = DateTime::parse_from_rfc3339("2024-03-01T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        for p in [
            PageAfter::new(at, "0af3c9"),
            PageAfter::new(at, "id~with~tildes and spaces/?&"),
            PageAfter::new(Utc::now(), "x"),
            PageAfter::new(DateTime::<Utc>::UNIX_EPOCH, "e"),
        ] {
            let token = p.encode();
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
            assert_eq!(PageAfter::decode(&token), Some(p));
        }
        for garbage in [
            "",
            "!!!",
            "not a token",
            &URL_SAFE_NO_PAD.encode("no separator"),
            &URL_SAFE_NO_PAD.encode("2024-03-01T10:00:00Z~"),
            &URL_SAFE_NO_PAD.encode("yesterday~abc"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'~', b'a']),
        ] {
            assert_eq!(PageAfter::decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn every_reason_is_listed_once() {
        let all = every_reason();
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
    }
}
