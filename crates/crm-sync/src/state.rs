//! [`PipelineState`]: what a pipeline keeps so a crash loses nothing.
//!
//! The pipeline stores a page, then commits the page's cursor here. Dead
//! letters and review items are keyed by (job, object, record key, stage), so
//! re-processing a page after a crash replaces them instead of adding copies.
//! `crm-sql`'s state store backs this in production; [`MemoryState`] keeps it
//! in memory for tests and dry runs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use crm_core::{Cursor, Record, Result};
use serde::{Deserialize, Serialize};

/// The pipeline stage a record failed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading from the source.
    Extract,
    /// Validation and cleaning.
    Validate,
    /// Field mapping and transforms.
    Transform,
    /// Dedupe.
    Dedupe,
    /// Campaign matching.
    Match,
    /// Writing to the destination.
    Store,
    /// Committing the checkpoint.
    Checkpoint,
}

impl Stage {
    /// Every stage of a page, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Extract,
        Stage::Validate,
        Stage::Transform,
        Stage::Dedupe,
        Stage::Match,
        Stage::Store,
        Stage::Checkpoint,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Validate => "validate",
            Stage::Transform => "transform",
            Stage::Dedupe => "dedupe",
            Stage::Match => "match",
            Stage::Store => "store",
            Stage::Checkpoint => "checkpoint",
        }
    }
}

/// A record that could not go through, kept with every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job.
    pub job: String,
    /// The object (e.g. `bookings`).
    pub object: String,
    /// The record's key (or `#position` when it has none).
    pub record_key: String,
    /// Where it failed.
    pub stage: Stage,
    /// The record as it came in.
    pub record: Record,
    /// Every reason, e.g. one line per failed validation rule.
    pub errors: Vec<String>,
}

/// Why a record waits for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    /// A fuzzy (probable) campaign match.
    ProbableMatch,
    /// Several equally good campaign matches.
    MultipleMatch,
}

/// One candidate shown to the reviewer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewCandidate {
    /// The campaign id.
    pub campaign_id: String,
    /// The campaign name.
    pub name: String,
    /// The score, 0 to 1.
    pub score: f64,
    /// The strategy that proposed it.
    pub strategy: String,
}

/// A record waiting for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// The job.
    pub job: String,
    /// The object.
    pub object: String,
    /// The record's key.
    pub record_key: String,
    /// Why it waits.
    pub kind: ReviewKind,
    /// The candidates.
    pub candidates: Vec<ReviewCandidate>,
    /// The record as stored.
    pub record: Record,
}

/// What a person decided for a booking's campaign match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MatchVerdict {
    /// This campaign.
    Accepted {
        /// The campaign chosen.
        campaign_id: String,
    },
    /// None of the candidates.
    Rejected,
}

/// A person's match decision, kept as the resolution of its review item.
///
/// It holds for later runs while the matcher proposes no candidate the
/// person did not see: a booking whose candidates are all in `seen` keeps
/// the decision (accepted campaign, or unmatched); a new candidate sends it
/// back to the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchDecision {
    /// Accepted or rejected.
    #[serde(flatten)]
    pub verdict: MatchVerdict,
    /// The candidate campaign ids shown when deciding.
    pub seen: Vec<String>,
    /// Who decided.
    pub reviewer: String,
}

impl MatchDecision {
    /// Whether the decision still holds for these candidate ids.
    pub fn holds_for<'c>(&self, candidates: impl IntoIterator<Item = &'c str>) -> bool {
        candidates
            .into_iter()
            .all(|c| self.seen.iter().any(|s| s == c))
    }
}

/// Durable pipeline state: checkpoints, dead letters, the review queue.
///
/// Every write is idempotent by its key, so a page processed twice (after a
/// crash between storing it and committing its cursor) leaves one copy.
#[async_trait]
pub trait PipelineState: Send + Sync {
    /// The committed cursor of `job`/`object`, if any.
    async fn load_checkpoint(&self, job: &str, object: &str) -> Result<Option<Cursor>>;

    /// Commits the cursor after a page is stored.
    ///
    /// # Cancel safety
    /// Either the new cursor is committed or the old one stays.
    async fn commit_checkpoint(&self, job: &str, object: &str, cursor: &Cursor) -> Result<()>;

    /// Forgets the cursor (a full run starts over).
    async fn clear_checkpoint(&self, job: &str, object: &str) -> Result<()>;

    /// Keeps a failed record; replaces an entry with the same key and stage.
    async fn dead_letter(&self, entry: DeadLetter) -> Result<()>;

    /// Removes the dead letters of records that now went through (passed
    /// validation on a later attempt).
    async fn clear_dead_letters(
        &self,
        job: &str,
        object: &str,
        record_keys: &[String],
    ) -> Result<()>;

    /// Queues a record for review; replaces an entry with the same key.
    async fn queue_review(&self, item: ReviewItem) -> Result<()>;

    /// Removes records from the review queue (their match is now certain).
    async fn clear_reviews(&self, job: &str, object: &str, record_keys: &[String]) -> Result<()>;

    /// How many items of `job` wait for review.
    async fn review_count(&self, job: &str) -> Result<usize>;
    /// The decisions people made on earlier review items of these records
    /// (see [`MatchDecision`]); none by default.
    async fn match_decisions(
        &self,
        job: &str,
        object: &str,
        record_keys: &[String],
    ) -> Result<std::collections::HashMap<String, MatchDecision>> {
        let _ = (job, object, record_keys);
        Ok(std::collections::HashMap::new())
    }
}

type Key = (String, String, String);

/// [`PipelineState`] in memory: for tests, examples and dry runs.
#[derive(Debug, Default)]
pub struct MemoryState {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    checkpoints: BTreeMap<(String, String), Cursor>,
    dead: BTreeMap<(Key, Stage), DeadLetter>,
    review: BTreeMap<Key, ReviewItem>,
}

impl MemoryState {
    /// Empty state.
    pub fn new() -> Self {
        MemoryState::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave the maps half-written
        // (each operation is a single insert or remove), so a poisoned lock
        // is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every dead letter, in key order.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.values().cloned().collect()
    }

    /// Every review item, in key order.
    pub fn review_items(&self) -> Vec<ReviewItem> {
        self.lock().review.values().cloned().collect()
    }
}

fn key(job: &str, object: &str, record: &str) -> Key {
    (job.to_owned(), object.to_owned(), record.to_owned())
}

#[async_trait]
impl PipelineState for MemoryState {
    async fn load_checkpoint(&self, job: &str, object: &str) -> Result<Option<Cursor>> {
        Ok(self
            .lock()
            .checkpoints
            .get(&(job.to_owned(), object.to_owned()))
            .cloned())
    }

    async fn commit_checkpoint(&self, job: &str, object: &str, cursor: &Cursor) -> Result<()> {
        self.lock()
            .checkpoints
            .insert((job.to_owned(), object.to_owned()), cursor.clone());
        Ok(())
    }

    async fn clear_checkpoint(&self, job: &str, object: &str) -> Result<()> {
        self.lock()
            .checkpoints
            .remove(&(job.to_owned(), object.to_owned()));
        Ok(())
    }

    async fn dead_letter(&self, entry: DeadLetter) -> Result<()> {
        let k = (
            key(&entry.job, &entry.object, &entry.record_key),
            entry.stage,
        );
        self.lock().dead.insert(k, entry);
        Ok(())
    }

    async fn clear_dead_letters(
        &self,
        job: &str,
        object: &str,
        record_keys: &[String],
    ) -> Result<()> {
        let mut inner = self.lock();
        for record_key in record_keys {
            let k = key(job, object, record_key);
            inner.dead.retain(|(dk, _), _| *dk != k);
        }
        Ok(())
    }

    async fn queue_review(&self, item: ReviewItem) -> Result<()> {
        let k = key(&item.job, &item.object, &item.record_key);
        self.lock().review.insert(k, item);
        Ok(())
    }

    async fn clear_reviews(&self, job: &str, object: &str, record_keys: &[String]) -> Result<()> {
        let mut inner = self.lock();
        for record_key in record_keys {
            inner.review.remove(&key(job, object, record_key));
        }
        Ok(())
    }

    async fn review_count(&self, job: &str) -> Result<usize> {
        Ok(self
            .lock()
            .review
            .keys()
            .filter(|(j, _, _)| j == job)
            .count())
    }
}

/// [`PipelineState`] in crm-sql's state store (SQLite, PostgreSQL, MySQL).
///
/// The job is a connection of provider `pipeline` named after the job, so its
/// checkpoints, dead letters and review items sit beside every other
/// connection's in the same tables.
#[derive(Clone, Debug)]
pub struct SqlState {
    store: crm_sql::state::StateStore,
    connection: crm_sql::state::ConnectionId,
    job: String,
}

impl SqlState {
    /// The state of `job` in `store` (its connection is created when missing).
    ///
    /// # Errors
    /// Database errors.
    pub async fn open(store: crm_sql::state::StateStore, job: &str) -> Result<Self> {
        let connection = store.ensure_connection("pipeline", job).await?;
        Ok(SqlState {
            store,
            connection,
            job: job.to_owned(),
        })
    }

    /// The store.
    pub fn store(&self) -> &crm_sql::state::StateStore {
        &self.store
    }

    /// The job's connection id.
    pub fn connection(&self) -> &crm_sql::state::ConnectionId {
        &self.connection
    }

    fn check_job(&self, job: &str) -> Result<()> {
        if job == self.job {
            Ok(())
        } else {
            Err(crm_core::Error::invalid_input(format!(
                "this state belongs to job {:?}, not {job:?}",
                self.job
            )))
        }
    }
}

#[async_trait]
impl PipelineState for SqlState {
    async fn load_checkpoint(&self, job: &str, object: &str) -> Result<Option<Cursor>> {
        self.check_job(job)?;
        self.store.checkpoint(&self.connection, object).await
    }

    async fn commit_checkpoint(&self, job: &str, object: &str, cursor: &Cursor) -> Result<()> {
        self.check_job(job)?;
        self.store
            .save_checkpoint(&self.connection, object, cursor)
            .await
    }

    async fn clear_checkpoint(&self, job: &str, object: &str) -> Result<()> {
        self.check_job(job)?;
        self.store.clear_checkpoint(&self.connection, object).await
    }

    async fn dead_letter(&self, entry: DeadLetter) -> Result<()> {
        self.check_job(&entry.job)?;
        let record = serde_json::to_value(&entry.record).map_err(|e| {
            crm_core::Error::invalid_input(format!("dead letter record cannot be stored: {e}"))
        })?;
        self.store
            .put_dead_letter(
                &self.connection,
                &entry.object,
                &entry.record_key,
                entry.stage.as_str(),
                &record,
                &entry.errors.join("\n"),
            )
            .await
            .map(drop)
    }

    async fn clear_dead_letters(
        &self,
        job: &str,
        object: &str,
        record_keys: &[String],
    ) -> Result<()> {
        self.check_job(job)?;
        self.store
            .clear_dead_letters_for(&self.connection, object, record_keys)
            .await
            .map(drop)
    }

    async fn queue_review(&self, item: ReviewItem) -> Result<()> {
        self.check_job(&item.job)?;
        let reason = match item.kind {
            ReviewKind::ProbableMatch => crm_sql::state::ReviewReason::ProbableMatch,
            ReviewKind::MultipleMatch => crm_sql::state::ReviewReason::MultipleMatch,
        };
        let details = serde_json::json!({
            "candidates": item.candidates,
            "record": item.record,
        });
        self.store
            .put_review(
                &self.connection,
                &item.object,
                &item.record_key,
                reason,
                &details,
            )
            .await
            .map(drop)
    }

    async fn clear_reviews(&self, job: &str, object: &str, record_keys: &[String]) -> Result<()> {
        self.check_job(job)?;
        self.store
            .dismiss_reviews_for(&self.connection, object, record_keys)
            .await
            .map(drop)
    }

    async fn review_count(&self, job: &str) -> Result<usize> {
        self.check_job(job)?;
        let n = self.store.count_open_reviews(&self.connection).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn match_decisions(
        &self,
        job: &str,
        object: &str,
        record_keys: &[String],
    ) -> Result<std::collections::HashMap<String, MatchDecision>> {
        self.check_job(job)?;
        let items = self
            .store
            .resolved_reviews_for(
                &self.connection,
                object,
                record_keys,
                &[
                    crm_sql::state::ReviewReason::ProbableMatch,
                    crm_sql::state::ReviewReason::MultipleMatch,
                ],
            )
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(key, item)| {
                let decision = serde_json::from_value(item.resolution?).ok()?;
                Some((key, decision))
            })
            .collect())
    }
}
