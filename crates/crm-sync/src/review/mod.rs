//! The review desk: what waits for a person, and the decisions they make.
//!
//! Three queues are kept in the state store:
//!
//! - **matches**: bookings whose campaign match was probable or multiple
//!   (seed 000 `flag_for_review`), with their candidate campaigns, scores
//!   and the strategy that proposed each. A person accepts one candidate
//!   (or any campaign found by name) or rejects them all.
//! - **conflicts**: records changed on both sides under the `manual`
//!   policy (seeds 002, 003). A person picks a side per field or types a
//!   value; a [`ConflictResolver`] (a bidirectional sync, see
//!   [`BidiResolver`]) writes the result to the side(s) that need it.
//! - **dead letters**: records a stage refused, with every error and the
//!   attempts so far. A person edits and retries them, or discards them
//!   with a reason.
//!
//! [`ReviewDesk`] lists the queues (filters, counts, keyset pages that stay
//! fast at any depth) and applies decisions; [`ReviewDesk::router`] serves
//! them as server-rendered pages under `/review` and as a JSON API under
//! `/review/api` (see [`web`]). Every decision is written through the same
//! sink the pipeline writes with, audited with the reviewer's name, and
//! remembered: the next pipeline run keeps a person's match decision for a
//! booking as long as the matcher proposes no candidate the person did not
//! see ([`crate::state::MatchDecision`]).
//!
//! ```no_run
//! # async fn demo(store: crm_sql::state::StateStore, sink: std::sync::Arc<dyn crm_core::Sink>) -> crm_core::Result<()> {
//! use crm_sync::access::{Role, Tokens};
//! use crm_sync::review::{MatchTarget, ReviewDesk};
//! use secrecy::SecretString;
//!
//! let mut tokens = Tokens::new();
//! tokens.add("alice", Role::Operator, &SecretString::from("a-long-random-token"));
//! let desk = ReviewDesk::new(store, tokens)
//!     .matches(MatchTarget::new(sink, "bookings", "booking_id"));
//! let app = desk.router(); // mount it: axum::Router::new().merge(app)
//! # let _ = app; Ok(()) }
//! ```

mod html;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use crm_core::matching::normalize;
use crm_core::model::Campaign;
use crm_core::{Error, ErrorKind, Record, Result, Sink, Value, WriteBatch, WriteOutcome};
use crm_sql::state::{
    ConnectionId, DeadLetter, DeadLetterId, NewAuditEntry, PageAfter, QueueFilter, ReviewId,
    ReviewItem, ReviewReason, ReviewStatus, StateStore,
};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::json;

use crate::access::{Principal, Role, Tokens};
use crate::bidi::{BidiConfig, BidiSync, Endpoint, Pick};
use crate::pipeline::{CAMPAIGN_ID_FIELD, MATCH_STATUS_FIELD};
use crate::schedule::jobs::{RetryReport, RetryTarget, retry_letters};
use crate::state::{MatchDecision, MatchVerdict, ReviewCandidate};

/// Items per page unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The most items one page shows.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Campaigns a name search returns at most.
pub const SEARCH_LIMIT: usize = 20;

/// The three queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    /// Probable and multiple campaign matches.
    Matches,
    /// Manual field conflicts.
    Conflicts,
    /// Records a stage refused.
    DeadLetters,
}

impl Queue {
    /// The name in URLs (`matches`, `conflicts`, `dead-letters`).
    pub fn slug(self) -> &'static str {
        match self {
            Queue::Matches => "matches",
            Queue::Conflicts => "conflicts",
            Queue::DeadLetters => "dead-letters",
        }
    }

    /// The review reasons of this queue (none for dead letters).
    pub fn reasons(self) -> &'static [ReviewReason] {
        match self {
            Queue::Matches => &[ReviewReason::ProbableMatch, ReviewReason::MultipleMatch],
            Queue::Conflicts => &[ReviewReason::ManualConflict],
            Queue::DeadLetters => &[],
        }
    }
}

/// Items waiting per queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Probable and multiple matches.
    pub matches: u64,
    /// Manual conflicts.
    pub conflicts: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

impl QueueCounts {
    /// The count of `queue`.
    pub fn of(&self, queue: Queue) -> u64 {
        match queue {
            Queue::Matches => self.matches,
            Queue::Conflicts => self.conflicts,
            Queue::DeadLetters => self.dead_letters,
        }
    }
}

/// One page of a queue and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items, oldest first.
    pub items: Vec<T>,
    /// The position to ask for the next page with; `None` on the last.
    pub next: Option<PageAfter>,
}

/// Where accepted and rejected matches are written: the pipeline's sink
/// and destination table, upserted by the booking key.
#[derive(Clone)]
pub struct MatchTarget {
    sink: Arc<dyn Sink>,
    object: String,
    key_field: String,
    after: Option<Arc<dyn AfterMatch>>,
}

impl std::fmt::Debug for MatchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchTarget")
            .field("sink", &self.sink.kind())
            .field("object", &self.object)
            .field("key_field", &self.key_field)
            .finish_non_exhaustive()
    }
}

impl MatchTarget {
    /// Writes to `object` of `sink`, upserting by `key_field`.
    pub fn new(
        sink: Arc<dyn Sink>,
        object: impl Into<String>,
        key_field: impl Into<String>,
    ) -> Self {
        MatchTarget {
            sink,
            object: object.into(),
            key_field: key_field.into(),
            after: None,
        }
    }

    /// Runs `hook` after each decision is stored (the write-back of a job
    /// with `write_back:`).
    #[must_use]
    pub fn after(mut self, hook: Arc<dyn AfterMatch>) -> Self {
        self.after = Some(hook);
        self
    }
}

/// What runs after a match decision is written, e.g. a write-back of the
/// campaign id into the bookings sheet.
#[async_trait]
pub trait AfterMatch: Send + Sync {
    /// Called with the booking as written. An error is reported to the
    /// reviewer; the decision itself stays (it is already stored).
    async fn after_match(&self, record: &Record) -> Result<()>;
}

/// Applies a person's decision on a manual conflict to both sides.
#[async_trait]
pub trait ConflictResolver: Send + Sync {
    /// Settles the open review item `review` with `picks` (one per
    /// contested field), audited with `reviewer` as the actor; the item is
    /// closed when both sides hold the result.
    async fn resolve(
        &self,
        review: &ReviewId,
        picks: &IndexMap<String, Pick>,
        reviewer: &str,
    ) -> Result<()>;
}

/// A [`ConflictResolver`] that opens the bidirectional sync of the
/// conflict's object and calls [`BidiSync::resolve_conflict`].
pub struct BidiResolver {
    platform: Arc<dyn Endpoint>,
    crm: Arc<dyn Endpoint>,
    store: StateStore,
    connection: String,
    config: BidiConfig,
}

impl std::fmt::Debug for BidiResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BidiResolver")
            .field("connection", &self.connection)
            .field("object", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl BidiResolver {
    /// The sync `connection` between `platform` and `crm` with `config`,
    /// as [`BidiSync::open`] takes them.
    pub fn new(
        platform: Arc<dyn Endpoint>,
        crm: Arc<dyn Endpoint>,
        store: StateStore,
        connection: impl Into<String>,
        config: BidiConfig,
    ) -> Self {
        BidiResolver {
            platform,
            crm,
            store,
            connection: connection.into(),
            config,
        }
    }

    /// The object its conflicts are queued under.
    pub fn object(&self) -> &str {
        &self.config.name
    }
}

#[async_trait]
impl ConflictResolver for BidiResolver {
    async fn resolve(
        &self,
        review: &ReviewId,
        picks: &IndexMap<String, Pick>,
        reviewer: &str,
    ) -> Result<()> {
        let sync = BidiSync::open(
            &*self.platform,
            &*self.crm,
            &self.store,
            &self.connection,
            self.config.clone(),
        )
        .await?;
        sync.resolve_conflict(review, picks, reviewer).await
    }
}

/// Where dead letters are retried: a sink and the job's retry target.
#[derive(Clone)]
pub struct RetryWriter {
    sink: Arc<dyn Sink>,
    target: RetryTarget,
}

impl std::fmt::Debug for RetryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryWriter")
            .field("sink", &self.sink.kind())
            .field("object", &self.target.object)
            .finish_non_exhaustive()
    }
}

impl RetryWriter {
    /// Retries through `sink` as `target` says.
    pub fn new(sink: Arc<dyn Sink>, target: RetryTarget) -> Self {
        RetryWriter { sink, target }
    }
}

/// What a retry from the desk did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RetryOutcome {
    /// Written; the dead letter is gone.
    Written,
    /// Failed again; the dead letter stays with the new error.
    FailedAgain {
        /// The error of this attempt.
        error: String,
    },
}

/// A manual conflict as the desk shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConflictView {
    /// The platform's record id.
    pub platform_id: Option<String>,
    /// The CRM's record id.
    pub crm_id: Option<String>,
    /// When the platform side last changed.
    pub platform_updated_at: Option<String>,
    /// When the CRM side last changed.
    pub crm_updated_at: Option<String>,
    /// The contested fields, in platform names.
    pub fields: Vec<ConflictField>,
}

/// One contested field.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConflictField {
    /// The field (platform name).
    pub field: String,
    /// The platform's value.
    pub platform_value: serde_json::Value,
    /// The CRM's value, in platform terms.
    pub crm_value: serde_json::Value,
    /// The value both had at the last sync.
    pub base_value: serde_json::Value,
}

impl ConflictView {
    /// Reads the details of a `manual_conflict` review item. Items opened
    /// by conflict detection carry no field values until the next
    /// bidirectional round fills them in: their `fields` are empty.
    pub fn from_item(item: &ReviewItem) -> Self {
        let d = &item.details;
        let text = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let fields = d
            .get("fields")
            .and_then(|f| f.as_array())
            .map(|fs| {
                fs.iter()
                    .filter_map(|f| {
                        let name = f.get("field")?.as_str()?.to_owned();
                        let get = |k: &str| f.get(k).cloned().unwrap_or(serde_json::Value::Null);
                        Some(ConflictField {
                            field: name,
                            platform_value: plain_json(get("platform_value")),
                            crm_value: plain_json(get("crm_value")),
                            base_value: plain_json(get("base_value")),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        ConflictView {
            platform_id: text("platform_id"),
            crm_id: text("crm_id"),
            platform_updated_at: text("platform_updated_at"),
            crm_updated_at: text("crm_updated_at"),
            fields,
        }
    }

    /// Whether the item carries field values a person can decide on.
    pub fn decidable(&self) -> bool {
        !self.fields.is_empty()
    }
}

/// Field values are stored as [`crm_core::Value`]'s serde form; shown as
/// plain JSON.
fn plain_json(v: serde_json::Value) -> serde_json::Value {
    match serde_json::from_value::<Value>(v.clone()) {
        Ok(value) => value.to_json(),
        Err(_) => v,
    }
}

/// A booking waiting for its match, as the desk shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MatchView {
    /// The booking's fields as plain JSON.
    pub record: serde_json::Map<String, serde_json::Value>,
    /// The candidate campaigns, best first.
    pub candidates: Vec<ReviewCandidate>,
}

impl MatchView {
    /// Reads the details of a probable or multiple match item.
    pub fn from_item(item: &ReviewItem) -> Self {
        let record = item
            .details
            .get("record")
            .and_then(|r| serde_json::from_value::<Record>(r.clone()).ok())
            .map(|r| {
                r.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect()
            })
            .unwrap_or_default();
        let candidates = item
            .details
            .get("candidates")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        MatchView { record, candidates }
    }
}

/// The review desk over a state store.
pub struct ReviewDesk {
    store: StateStore,
    tokens: Tokens,
    matches: Option<MatchTarget>,
    campaigns: Vec<Campaign>,
    resolvers: HashMap<String, Arc<dyn ConflictResolver>>,
    retry: Option<RetryWriter>,
    secure_cookies: bool,
    sessions: web::Sessions,
}

impl std::fmt::Debug for ReviewDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut objects: Vec<&String> = self.resolvers.keys().collect();
        objects.sort();
        f.debug_struct("ReviewDesk")
            .field("store", &self.store)
            .field("tokens", &self.tokens)
            .field("matches", &self.matches)
            .field("campaigns", &self.campaigns.len())
            .field("conflict_objects", &objects)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn forbidden(who: &Principal, needed: Role) -> Error {
    Error::new(
        ErrorKind::Auth,
        format!(
            "{} has the role {}; this needs {needed}",
            who.name, who.role
        ),
    )
    .with_context("reason", "forbidden")
}

/// Whether an error is a refusal for lack of a role (HTTP 403).
pub fn is_forbidden(e: &Error) -> bool {
    *e.kind() == ErrorKind::Auth
        && e.context()
            .iter()
            .any(|(k, v)| *k == "reason" && v == "forbidden")
}

fn not_open(what: &str, id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no open {what} {id}")).with_context("id", id)
}

impl ReviewDesk {
    /// A desk over `store` for the holders of `tokens`. Without
    /// [`ReviewDesk::matches`], [`ReviewDesk::conflicts`] and
    /// [`ReviewDesk::retries`] it only shows the queues.
    pub fn new(store: StateStore, tokens: Tokens) -> Self {
        ReviewDesk {
            store,
            tokens,
            matches: None,
            campaigns: Vec::new(),
            resolvers: HashMap::new(),
            retry: None,
            secure_cookies: false,
            sessions: web::Sessions::default(),
        }
    }

    /// Where match decisions are written.
    #[must_use]
    pub fn matches(mut self, target: MatchTarget) -> Self {
        self.matches = Some(target);
        self
    }

    /// The campaigns a reviewer can search by name.
    #[must_use]
    pub fn campaigns(mut self, campaigns: Vec<Campaign>) -> Self {
        self.campaigns = campaigns;
        self
    }

    /// Resolves the manual conflicts of `object` with `resolver`.
    #[must_use]
    pub fn conflicts(
        mut self,
        object: impl Into<String>,
        resolver: Arc<dyn ConflictResolver>,
    ) -> Self {
        self.resolvers.insert(object.into(), resolver);
        self
    }

    /// Retries dead letters through `writer`.
    #[must_use]
    pub fn retries(mut self, writer: RetryWriter) -> Self {
        self.retry = Some(writer);
        self
    }

    /// Marks session cookies `Secure` (set it when the page is served over
    /// TLS, directly or behind a proxy).
    #[must_use]
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// The state store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Whether conflicts of `object` can be applied from the desk.
    pub fn resolves(&self, object: &str) -> bool {
        self.resolvers.contains_key(object)
    }

    /// Items waiting per queue under `filter`.
    ///
    /// # Errors
    /// State-store errors.
    pub async fn counts(&self, filter: &QueueFilter) -> Result<QueueCounts> {
        let by_reason = self.store.count_open_reviews_by_reason(filter).await?;
        let mut counts = QueueCounts::default();
        for (reason, n) in by_reason {
            match reason {
                ReviewReason::ProbableMatch | ReviewReason::MultipleMatch => counts.matches += n,
                ReviewReason::ManualConflict => counts.conflicts += n,
            }
        }
        counts.dead_letters = self.store.count_dead_letters_where(filter).await?;
        Ok(counts)
    }

    /// One page of the matches or conflicts queue.
    ///
    /// # Errors
    /// State-store errors; [`ErrorKind::InvalidInput`] for the dead-letter
    /// queue (see [`ReviewDesk::dead_letter_page`]).
    pub async fn review_page(
        &self,
        queue: Queue,
        filter: &QueueFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Page<ReviewItem>> {
        if queue == Queue::DeadLetters {
            return Err(Error::invalid_input("dead letters are not review items"));
        }
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let mut items = self
            .store
            .review_page(queue.reasons(), filter, after, limit + 1)
            .await?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|i| PageAfter::new(i.created_at, i.id.as_str()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// One page of dead letters.
    ///
    /// # Errors
    /// State-store errors.
    pub async fn dead_letter_page(
        &self,
        filter: &QueueFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Page<DeadLetter>> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let mut items = self
            .store
            .dead_letter_page(filter, after, limit + 1)
            .await?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|d| PageAfter::new(d.first_failed_at, d.id.as_str()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// An open review item of `queue`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it is unknown, closed or of another
    /// queue; state-store errors.
    pub async fn open_item(&self, queue: Queue, id: &ReviewId) -> Result<ReviewItem> {
        self.store
            .review(id)
            .await?
            .filter(|i| i.status == ReviewStatus::Open && queue.reasons().contains(&i.reason))
            .ok_or_else(|| not_open("review item", id.as_str()))
    }

    /// A dead letter.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown id; state-store errors.
    pub async fn dead_letter(&self, id: &DeadLetterId) -> Result<DeadLetter> {
        self.store
            .dead_letter(id)
            .await?
            .ok_or_else(|| not_open("dead letter", id.as_str()))
    }

    /// Campaigns whose name contains every word of `query` (after the
    /// matcher's normalisation: case, accents, punctuation), best first:
    /// names starting with the query, then shorter names.
    pub fn search_campaigns(&self, query: &str) -> Vec<&Campaign> {
        let q = normalize(query);
        let words: Vec<&str> = q.split_whitespace().collect();
        if words.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<(bool, usize, &Campaign)> = self
            .campaigns
            .iter()
            .filter_map(|c| {
                let name = normalize(&c.name);
                words
                    .iter()
                    .all(|w| name.contains(w))
                    .then(|| (!name.starts_with(q.as_str()), name.len(), c))
            })
            .collect();
        found.sort_by(|a, b| (a.0, a.1, a.2.name.as_str()).cmp(&(b.0, b.1, b.2.name.as_str())));
        found
            .into_iter()
            .take(SEARCH_LIMIT)
            .map(|(_, _, c)| c)
            .collect()
    }

    fn campaign(&self, id: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.campaign_id.as_str() == id)
    }

    /// Accepts `campaign_id` for the booking of match item `id`: the
    /// booking is written with that campaign and `match_status: matched`,
    /// audited (`review.match_accepted`, actor `who`), and the item closed.
    /// The campaign must be one of the candidates or one of the desk's
    /// campaigns.
    ///
    /// # Errors
    /// A [forbidden](is_forbidden) error below operator;
    /// [`ErrorKind::NotFound`] for an unknown or closed item;
    /// [`ErrorKind::InvalidInput`] for an unknown campaign, a desk without a
    /// [`MatchTarget`] or a booking the destination refuses (the item stays
    /// open); sink and state-store errors.
    ///
    /// # Cancel safety
    /// The write is an upsert by the booking key and the item is closed
    /// after it, so a cancelled or repeated call writes the same row again.
    pub async fn accept_match(
        &self,
        id: &ReviewId,
        campaign_id: &str,
        who: &Principal,
    ) -> Result<Option<String>> {
        let item = self.match_item(id, who).await?;
        let view = MatchView::from_item(&item);
        let known = view.candidates.iter().any(|c| c.campaign_id == campaign_id)
            || self.campaign(campaign_id).is_some();
        if !known {
            return Err(Error::invalid_input(format!(
                "campaign {campaign_id:?} is neither a candidate of this booking nor a known campaign"
            ))
            .with_context("field", CAMPAIGN_ID_FIELD));
        }
        let verdict = MatchVerdict::Accepted {
            campaign_id: campaign_id.to_owned(),
        };
        self.decide_match(item, view, verdict, who).await
    }

    /// Rejects every candidate of match item `id`: the booking is written
    /// with no campaign and `match_status: unmatched`, audited
    /// (`review.match_rejected`) and the item closed.
    ///
    /// # Errors
    /// As [`ReviewDesk::accept_match`].
    pub async fn reject_match(&self, id: &ReviewId, who: &Principal) -> Result<Option<String>> {
        let item = self.match_item(id, who).await?;
        let view = MatchView::from_item(&item);
        self.decide_match(item, view, MatchVerdict::Rejected, who)
            .await
    }

    async fn match_item(&self, id: &ReviewId, who: &Principal) -> Result<ReviewItem> {
        if !who.role.allows(Role::Operator) {
            return Err(forbidden(who, Role::Operator));
        }
        self.open_item(Queue::Matches, id).await
    }

    /// Writes a match decision; returns the after-hook's error, if any.
    async fn decide_match(
        &self,
        item: ReviewItem,
        view: MatchView,
        verdict: MatchVerdict,
        who: &Principal,
    ) -> Result<Option<String>> {
        let target = self.matches.as_ref().ok_or_else(|| {
            Error::invalid_input(
                "this desk has no destination for match decisions (ReviewDesk::matches)",
            )
        })?;
        let mut record = item
            .details
            .get("record")
            .and_then(|r| serde_json::from_value::<Record>(r.clone()).ok())
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "review item {} holds no booking to write",
                    item.id.as_str()
                ))
                .with_context("record", item.record_id.as_str())
            })?;
        let before = json!({
            CAMPAIGN_ID_FIELD: record.get(CAMPAIGN_ID_FIELD).map(Value::to_json),
            MATCH_STATUS_FIELD: record.get(MATCH_STATUS_FIELD).map(Value::to_json),
        });
        let (action, status) = match &verdict {
            MatchVerdict::Accepted { campaign_id } => {
                record.set(CAMPAIGN_ID_FIELD, campaign_id.as_str());
                ("review.match_accepted", "matched")
            }
            MatchVerdict::Rejected => {
                record.set(CAMPAIGN_ID_FIELD, Value::Null);
                ("review.match_rejected", "unmatched")
            }
        };
        record.set(MATCH_STATUS_FIELD, status);
        record.strip_metadata();
        if record.get(&target.key_field).is_none() {
            record.set(target.key_field.clone(), item.record_id.as_str());
        }
        let outcomes = target
            .sink
            .write(
                &target.object,
                WriteBatch::upsert(target.key_field.clone(), vec![record.clone()]),
            )
            .await?;
        if let Some(WriteOutcome::Rejected { error, .. }) = outcomes.into_iter().next() {
            return Err(Error::invalid_input(format!(
                "the destination refused booking {}: {error}",
                item.record_id
            ))
            .with_context("record", item.record_id.as_str()));
        }
        let decision = MatchDecision {
            verdict,
            seen: view
                .candidates
                .iter()
                .map(|c| c.campaign_id.clone())
                .collect(),
            reviewer: who.name.clone(),
        };
        let mut entry = NewAuditEntry::new(&who.name, action)
            .record(&item.object, &item.record_id)
            .values(
                Some(before),
                Some(json!({
                    CAMPAIGN_ID_FIELD: record.get(CAMPAIGN_ID_FIELD).map(Value::to_json),
                    MATCH_STATUS_FIELD: status,
                    "review_id": item.id.as_str(),
                    "candidates": decision.seen,
                })),
            );
        if let Some(conn) = &item.connection_id {
            entry = entry.connection(conn.clone());
        }
        self.store.audit(&entry).await?;
        let resolution = serde_json::to_value(&decision)
            .map_err(|e| Error::invalid_input(format!("decision cannot be stored: {e}")))?;
        if !self
            .store
            .resolve_review(&item.id, ReviewStatus::Resolved, &resolution)
            .await?
        {
            return Err(not_open("review item", item.id.as_str()));
        }
        match &target.after {
            Some(hook) => Ok(hook.after_match(&record).await.err().map(|e| e.to_string())),
            None => Ok(None),
        }
    }

    /// Settles manual conflict `id` with `picks` through the resolver of its
    /// object.
    ///
    /// # Errors
    /// A [forbidden](is_forbidden) error below operator;
    /// [`ErrorKind::NotFound`] for an unknown or closed item;
    /// [`ErrorKind::InvalidInput`] when no resolver serves its object, a
    /// field has no pick or a side refuses the value (the item stays open).
    pub async fn resolve_conflict(
        &self,
        id: &ReviewId,
        picks: &IndexMap<String, Pick>,
        who: &Principal,
    ) -> Result<()> {
        if !who.role.allows(Role::Operator) {
            return Err(forbidden(who, Role::Operator));
        }
        let item = self.open_item(Queue::Conflicts, id).await?;
        let resolver = self.resolvers.get(&item.object).ok_or_else(|| {
            Error::invalid_input(format!(
                "conflicts of `{}` cannot be applied here: no bidirectional sync of that object \
                 is attached to this desk (ReviewDesk::conflicts)",
                item.object
            ))
        })?;
        if !ConflictView::from_item(&item).decidable() {
            return Err(Error::invalid_input(format!(
                "conflict {} has no field values yet; the next bidirectional round of `{}` \
                 fills them in",
                id.as_str(),
                item.object
            )));
        }
        resolver.resolve(id, picks, &who.name).await
    }

    /// Retries dead letter `id`, first replacing its record with `edited`
    /// when given (audited `review.dead_letter_edited`). The retry writes
    /// the record as the hourly retry does ([`retry_letters`]) and is
    /// audited `review.dead_letter_retried` with its outcome.
    ///
    /// # Errors
    /// A [forbidden](is_forbidden) error below operator;
    /// [`ErrorKind::NotFound`] for an unknown id; [`ErrorKind::InvalidInput`]
    /// for an edited record that is not a JSON object of fields, or a desk
    /// without a [`RetryWriter`]; state-store errors. A record that fails
    /// again is an `Ok(RetryOutcome::FailedAgain)`.
    pub async fn retry_dead_letter(
        &self,
        id: &DeadLetterId,
        edited: Option<serde_json::Value>,
        who: &Principal,
    ) -> Result<RetryOutcome> {
        if !who.role.allows(Role::Operator) {
            return Err(forbidden(who, Role::Operator));
        }
        let writer = self.retry.as_ref().ok_or_else(|| {
            Error::invalid_input("this desk has no destination for retries (ReviewDesk::retries)")
        })?;
        let mut letter = self.dead_letter(id).await?;
        if let Some(fields) = edited {
            let record = record_from_fields(&letter, fields)?;
            let stored = serde_json::to_value(&record)
                .map_err(|e| Error::invalid_input(format!("record cannot be stored: {e}")))?;
            self.store.edit_dead_letter(id, &stored).await?;
            self.audit_letter(
                &letter,
                who,
                "review.dead_letter_edited",
                Some(letter.record.clone()),
                Some(stored.clone()),
            )
            .await?;
            letter.record = stored;
        }
        let report: RetryReport = retry_letters(
            &self.store,
            vec![letter.clone()],
            &*writer.sink,
            &writer.target,
        )
        .await?;
        let outcome = if report.written == 1 {
            RetryOutcome::Written
        } else {
            let error = match report.stopped {
                Some(e) => e,
                None => self
                    .store
                    .dead_letter(id)
                    .await?
                    .map(|d| d.error)
                    .unwrap_or_else(|| "the record was not written".to_owned()),
            };
            RetryOutcome::FailedAgain { error }
        };
        let result = serde_json::to_value(&outcome).unwrap_or(serde_json::Value::Null);
        self.audit_letter(
            &letter,
            who,
            "review.dead_letter_retried",
            None,
            Some(result),
        )
        .await?;
        Ok(outcome)
    }

    /// Discards dead letter `id` for `reason` (required): audited
    /// `review.dead_letter_discarded` with the record and its last error,
    /// then removed.
    ///
    /// # Errors
    /// A [forbidden](is_forbidden) error below operator;
    /// [`ErrorKind::InvalidInput`] for a blank reason;
    /// [`ErrorKind::NotFound`] for an unknown id; state-store errors.
    pub async fn discard_dead_letter(
        &self,
        id: &DeadLetterId,
        reason: &str,
        who: &Principal,
    ) -> Result<()> {
        if !who.role.allows(Role::Operator) {
            return Err(forbidden(who, Role::Operator));
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(
                Error::invalid_input("a discarded dead letter needs a reason")
                    .with_context("field", "reason"),
            );
        }
        let letter = self.dead_letter(id).await?;
        self.audit_letter(
            &letter,
            who,
            "review.dead_letter_discarded",
            Some(json!({"record": letter.record, "error": letter.error, "attempts": letter.attempts})),
            Some(json!({"reason": reason})),
        )
        .await?;
        if !self.store.remove_dead_letter(id).await? {
            return Err(not_open("dead letter", id.as_str()));
        }
        Ok(())
    }

    async fn audit_letter(
        &self,
        letter: &DeadLetter,
        who: &Principal,
        action: &str,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> Result<()> {
        let key = letter
            .record_key
            .clone()
            .unwrap_or_else(|| letter.id.as_str().to_owned());
        let mut entry = NewAuditEntry::new(&who.name, action)
            .record(&letter.object, key)
            .values(old, new);
        if let Some(conn) = &letter.connection_id {
            entry = entry.connection(conn.clone());
        }
        self.store.audit(&entry).await.map(drop)
    }
}

/// The record of a dead letter with its fields replaced by `fields` (a
/// JSON object of plain values); id and modification time are kept.
fn record_from_fields(letter: &DeadLetter, fields: serde_json::Value) -> Result<Record> {
    let serde_json::Value::Object(map) = fields else {
        return Err(Error::invalid_input(format!(
            "the edited record of dead letter {} must be a JSON object of fields",
            letter.id.as_str()
        ))
        .with_context("field", "record"));
    };
    let mut record = serde_json::from_value::<Record>(letter.record.clone()).unwrap_or_default();
    let before = std::mem::take(&mut record.fields);
    for (k, v) in map {
        let value = coerce_like(before.get(&k), v);
        record.set(k, value);
    }
    Ok(record)
}

/// A plain JSON value typed like the field held before the edit: the edit
/// page shows decimals, dates and times as text, and they come back as
/// such when they still parse.
fn coerce_like(before: Option<&Value>, new: serde_json::Value) -> Value {
    let text = match &new {
        serde_json::Value::String(s) => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let coerced = match (before, text) {
        (Some(Value::Decimal(_)), Some(t)) => {
            crm_core::value::parse_decimal(&t).map(Value::Decimal)
        }
        (Some(Value::Date(_)), Some(t)) => t.parse().ok().map(Value::Date),
        (Some(Value::DateTime(_)), Some(t)) => DateTime::parse_from_rfc3339(&t)
            .ok()
            .map(|d| Value::DateTime(d.with_timezone(&Utc))),
        _ => None,
    };
    coerced.unwrap_or_else(|| Value::from_json(new))
}

/// Parses an age like `30m`, `12h`, `7d` or `2w`.
pub fn parse_age(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.len().checked_sub(1)?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().ok().filter(|n| *n >= 0)?;
    match unit {
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
}

/// A filter from the query parameters of a page or API call.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct FilterParams {
    /// A connection id.
    #[serde(default)]
    pub connection: Option<String>,
    /// An object name.
    #[serde(default)]
    pub object: Option<String>,
    /// Only items queued longer ago than this age (`2h`, `7d`).
    #[serde(default)]
    pub older_than: Option<String>,
    /// Only items queued within this age.
    #[serde(default)]
    pub newer_than: Option<String>,
}

impl FilterParams {
    /// The store filter at `now`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an age that does not parse.
    pub fn to_filter(&self, now: DateTime<Utc>) -> Result<QueueFilter> {
        let mut f = QueueFilter::new();
        let blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let Some(c) = blank(&self.connection) {
            f = f.connection(ConnectionId::new(c));
        }
        if let Some(o) = blank(&self.object) {
            f = f.object(o);
        }
        let age = |name: &str, v: &str| {
            parse_age(v).ok_or_else(|| {
                Error::invalid_input(format!(
                    "`{name}` takes an age like 30m, 12h, 7d or 2w, not {v:?}"
                ))
                .with_context("field", name)
            })
        };
        if let Some(v) = blank(&self.older_than) {
            f = f.before(now - age("older_than", &v)?);
        }
        if let Some(v) = blank(&self.newer_than) {
            f = f.since(now - age("newer_than", &v)?);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30m"), Duration::try_minutes(30));
        assert_eq!(parse_age("7d"), Duration::try_days(7));
        assert_eq!(parse_age("2w"), Duration::try_weeks(2));
        assert_eq!(parse_age("7"), None);
        assert_eq!(parse_age("-1d"), None);
        assert_eq!(parse_age(""), None);
        assert_eq!(parse_age("d"), None);
    }

    #[test]
    fn filter_params_reject_bad_ages_naming_the_field() {
        let p = FilterParams {
            older_than: Some("soon".into()),
            ..FilterParams::default()
        };
        let e = p
            .to_filter(Utc::now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("older_than"), "{e}");
    }
}
