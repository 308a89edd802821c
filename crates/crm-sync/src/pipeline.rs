//! The page-by-page pipeline of seed 000:
//! extract -> validate & clean -> transform -> dedupe -> match -> store -> checkpoint.
//!
//! Memory is bounded by one page. A page's cursor is committed only after the
//! page is stored, so a crash at any point resumes from the last committed
//! page: rows of the page in flight are read again and the destination's
//! upsert (keyed by the record key) absorbs the repeat. Dead letters and
//! review items are keyed by record, so they are replaced, not repeated.
//!
//! # Personal data
//!
//! Fields named by [`Pipeline::pii_fields`], and the source and target of
//! every `pii: true` map of [`Pipeline::mapping`], hold personal data. The
//! pipeline masks their values (`john@example.com` -> `j***@example.com`,
//! see [`crm_core::pii`]) in what it writes for people:
//!
//! - the reasons of a dead letter: a failed rule or a source problem of a
//!   personal field has every quoted value masked (so a value the message
//!   shortens or escapes is masked too), a rejected write naming a
//!   personal field likewise, and any reason has the record's personal
//!   values masked wherever it quotes them;
//! - the problems a source recorded in the record (`_problems`), which the
//!   dead letter keeps as text;
//! - its log lines (a `debug` event per dead letter, with the record key
//!   and the masked reasons).
//!
//! A record key stays as it is in the state (dead letters and review items
//! are found and replaced by it), but when the key field is personal (an
//! email as key), or the key is the value of a personal field, log lines
//! and reports show it masked. The record of a dead letter or review item
//! is handed to the state unmasked: the SQL state store seals those fields
//! at rest when opened with
//! [`crm_sql::state::StateStore::with_pii_fields`], as
//! [`crate::runner::run_job`] does. The [`RunReport`] holds counts only.
//!
//! ```
//! # use crm_sync::pipeline::{Mode, Pipeline};
//! # use crm_sync::state::MemoryState;
//! # async fn demo(source: &dyn crm_core::Source, sink: &dyn crm_core::Sink) -> crm_core::Result<()> {
//! let state = MemoryState::new();
//! let report = Pipeline::new("bookings", "Bookings", source, sink, &state)
//!     .destination_object("booking")
//!     .key_field("booking_id")
//!     .run(Mode::Incremental)
//!     .await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use crm_core::dedupe::Deduper;
use crm_core::mapping::{Flow, Mapping};
use crm_core::matching::{Candidate, MatchAction, MatchStatus, Matcher, MatchingConfig};
use crm_core::model::Campaign;
use crm_core::pii::PiiFields;
use crm_core::validate::{ValidationRules, Validator};
use crm_core::{
    Change, ReadRequest, Record, RecordId, Result, Sink, Source, WriteBatch, WriteOp, WriteOutcome,
};
use futures_util::StreamExt;

use crate::pii::{mask_error, mask_key, mask_problems, mask_reason};
use crate::report::RunReport;
use crate::state::{
    DeadLetter, MatchVerdict, PipelineState, ReviewCandidate, ReviewItem, ReviewKind, Stage,
};

/// Full or incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read everything from the start; the checkpoint is rebuilt as pages are stored.
    Full,
    /// Read what changed after the committed checkpoint.
    Incremental,
}

impl Mode {
    /// `full` or `incremental`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// Campaign matching for the pipeline: a [`Matcher`] and the campaigns it was
/// built over (for the ids and names written on rows and shown to reviewers).
pub struct CampaignMatching {
    matcher: Matcher,
    campaigns: Vec<(String, String)>,
}

impl CampaignMatching {
    /// Builds the matcher's indexes once over `campaigns`.
    pub fn new(config: &MatchingConfig, campaigns: Vec<Campaign>) -> Self {
        let names = campaigns
            .iter()
            .map(|c| (c.campaign_id.to_string(), c.name.clone()))
            .collect();
        CampaignMatching {
            matcher: Matcher::new(config, campaigns),
            campaigns: names,
        }
    }

    /// The underlying matcher.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    fn candidate(&self, c: &Candidate) -> ReviewCandidate {
        let (id, name) = self.campaigns.get(c.campaign).cloned().unwrap_or_default();
        let strategy = self
            .matcher
            .config()
            .strategies
            .get(c.strategy)
            .map(|s| s.kind.as_str())
            .unwrap_or("unknown");
        ReviewCandidate {
            campaign_id: c.campaign_id.as_ref().map_or(id, ToString::to_string),
            name,
            score: c.score.as_f64(),
            strategy: strategy.to_owned(),
        }
    }
}

/// Hooks called after each stage of each page: progress display, and tests
/// that stop the pipeline at a chosen point.
#[async_trait]
pub trait Observer: Send + Sync {
    /// Called after `stage` of page `page` (1-based), with the numbers so far.
    async fn after_stage(&self, page: u64, stage: Stage, report: &RunReport);
}

/// Lists the keys a destination holds, so a full run can remove the rows
/// that left the source.
#[async_trait]
pub trait DestinationKeys: Send + Sync {
    /// Every value of `key_field` in `object`.
    ///
    /// # Errors
    /// When the destination cannot be read.
    async fn keys(&self, object: &str, key_field: &str) -> Result<Vec<String>>;
}

/// The field the pipeline writes each row's match status into.
pub const MATCH_STATUS_FIELD: &str = "match_status";
/// The campaign id field (seed 000 `campaign_id`).
pub const CAMPAIGN_ID_FIELD: &str = "campaign_id";

/// One configured run of the pipeline.
pub struct Pipeline<'a> {
    job: String,
    object: String,
    destination_object: String,
    source: &'a dyn Source,
    sink: &'a dyn Sink,
    state: &'a dyn PipelineState,
    key_field: Option<String>,
    rules: Option<ValidationRules>,
    mapping: Option<(Mapping, Flow)>,
    pii: PiiFields,
    deduper: Option<Deduper>,
    matcher: Option<Arc<CampaignMatching>>,
    max_manual_review: Option<usize>,
    page_size: Option<usize>,
    observer: Option<&'a dyn Observer>,
    destination_keys: Option<&'a dyn DestinationKeys>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline reading `object` from `source` into `sink`, keeping its
    /// checkpoints, dead letters and review items in `state` under `job`.
    pub fn new(
        job: impl Into<String>,
        object: impl Into<String>,
        source: &'a dyn Source,
        sink: &'a dyn Sink,
        state: &'a dyn PipelineState,
    ) -> Self {
        let object = object.into();
        Pipeline {
            job: job.into(),
            destination_object: object.clone(),
            object,
            source,
            sink,
            state,
            key_field: None,
            rules: None,
            mapping: None,
            pii: PiiFields::new(),
            deduper: None,
            matcher: None,
            max_manual_review: None,
            page_size: None,
            observer: None,
            destination_keys: None,
        }
    }

    /// Lets a full run remove destination rows whose key no longer appears
    /// at the source (only after the whole source was read: a run that stops
    /// part-way removes nothing). Needs [`Pipeline::key_field`].
    #[must_use]
    pub fn remove_missing(mut self, keys: &'a dyn DestinationKeys) -> Self {
        self.destination_keys = Some(keys);
        self
    }

    /// The destination object (table) when it differs from the source's.
    #[must_use]
    pub fn destination_object(mut self, object: impl Into<String>) -> Self {
        self.destination_object = object.into();
        self
    }

    /// The field that keys records: upserts are keyed by it and reports,
    /// dead letters and review items name records by it. Without it records
    /// are written with [`WriteOp::Create`] and named by their id or position.
    #[must_use]
    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = Some(field.into());
        self
    }

    /// Validation rules (seed 000 `validation:`).
    #[must_use]
    pub fn validation(mut self, rules: ValidationRules) -> Self {
        self.rules = Some(rules);
        self
    }

    /// A field mapping applied after validation, in `flow` direction. Its
    /// `pii: true` maps name personal data (see the module docs).
    #[must_use]
    pub fn mapping(mut self, mapping: Mapping, flow: Flow) -> Self {
        self.pii.add_mapping(&mapping);
        self.mapping = Some((mapping, flow));
        self
    }

    /// Fields holding personal data, masked in dead-letter reasons and log
    /// lines (see the module docs); added to those of the mapping.
    #[must_use]
    pub fn pii_fields(mut self, fields: PiiFields) -> Self {
        self.pii.extend(fields.names());
        self
    }

    /// Dedupe within each page.
    #[must_use]
    pub fn dedupe(mut self, deduper: Deduper) -> Self {
        self.deduper = Some(deduper);
        self
    }

    /// Campaign matching.
    #[must_use]
    pub fn matcher(mut self, matcher: Arc<CampaignMatching>) -> Self {
        self.matcher = Some(matcher);
        self
    }

    /// Caps the review queue (seed 000 `crm.matching.max_manual_review`).
    #[must_use]
    pub fn max_manual_review(mut self, n: usize) -> Self {
        self.max_manual_review = Some(n);
        self
    }

    /// Preferred page size (seed 000 `crm.sync.batch_size`).
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n);
        self
    }

    /// Receives a call after every stage of every page.
    #[must_use]
    pub fn observer(mut self, observer: &'a dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn observe(&self, page: u64, stage: Stage, report: &RunReport) {
        if let Some(o) = self.observer {
            o.after_stage(page, stage, report).await;
        }
    }

    /// A key that names the record the same way on every run: the key
    /// field, else the source's id, else a digest of the content (never the
    /// position, which changes when a run resumes mid-source).
    fn label(&self, record: &Record) -> String {
        let keyed = self
            .key_field
            .as_deref()
            .and_then(|k| record.get(k))
            .filter(|v| !v.is_blank());
        match (keyed, &record.id) {
            (Some(v), _) => v.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => format!("row:{:016x}", record.content_digest()),
        }
    }

    /// Keeps a dead letter. `errors` have their personal values masked by
    /// the caller, which knows the fields they are about; here the record's
    /// source problems are masked, and so is the key wherever the reasons
    /// quote it when it is personal.
    async fn dead(
        &self,
        stage: Stage,
        key: String,
        mut record: Record,
        mut errors: Vec<String>,
    ) -> Result<()> {
        mask_problems(&self.pii, &mut record);
        let shown = mask_key(&self.pii, self.key_field.as_deref(), &record, &key);
        if shown != key && key.trim().chars().count() >= 3 {
            for e in &mut errors {
                *e = e.replace(&key, &shown);
            }
        }
        tracing::debug!(
            job = %self.job,
            object = %self.object,
            stage = stage.as_str(),
            record = %shown,
            reasons = %errors.join("; "),
            "record kept as a dead letter"
        );
        self.state
            .dead_letter(DeadLetter {
                job: self.job.clone(),
                object: self.object.clone(),
                record_key: key,
                stage,
                record,
                errors,
            })
            .await
    }

    /// Runs the pipeline to the end of the source.
    ///
    /// # Errors
    /// When the source, the destination or the state store fails as a whole
    /// (auth, transport after retries, a schema mismatch). Bad records never
    /// fail the run: they go to the dead letters and the report.
    ///
    /// # Cancel safety
    /// Dropping the future at any point loses nothing: the next run resumes
    /// from the last committed checkpoint.
    pub async fn run(&self, mode: Mode) -> Result<RunReport> {
        let started = Instant::now();
        let mut report = RunReport {
            job: self.job.clone(),
            mode: mode.as_str().to_owned(),
            ..RunReport::default()
        };
        let since = match mode {
            Mode::Full => None,
            Mode::Incremental => self.state.load_checkpoint(&self.job, &self.object).await?,
        };
        let mut request = ReadRequest::full(self.object.clone());
        request.since = since;
        request.page_size = self.page_size;
        let mut validator = self.rules.as_ref().map(ValidationRules::validator);
        let mut index = 0usize;
        let mut review_full_warned = false;
        let track_keys = mode == Mode::Full && self.destination_keys.is_some();
        let mut seen = std::collections::HashSet::new();

        let mut pages = self.source.read(request);
        while let Some(page) = pages.next().await {
            let page = page?;
            report.pages += 1;
            let n = report.pages;
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for change in page.changes {
                match change {
                    Change::Upsert(r) => {
                        if track_keys {
                            seen.insert(self.label(&r));
                        }
                        upserts.push((index, r));
                    }
                    Change::Delete { id, .. } => deletes.push(id),
                }
                index += 1;
            }
            report.rows_read += upserts.len() as u64;
            report.deletes_read += deletes.len() as u64;
            self.observe(n, Stage::Extract, &report).await;

            let valid = self.validate(&mut validator, upserts, &mut report).await?;
            self.observe(n, Stage::Validate, &report).await;

            let mapped = self.transform(valid, &mut report).await?;
            self.observe(n, Stage::Transform, &report).await;

            let deduped = match &self.deduper {
                Some(d) => {
                    let records = mapped.into_iter().map(|(_, r)| r).collect();
                    let out = d.dedupe(records);
                    report.deduped += out.removed() as u64;
                    out.records.into_iter().enumerate().collect()
                }
                None => mapped,
            };
            self.observe(n, Stage::Dedupe, &report).await;

            let matched = self
                .match_records(deduped, &mut report, &mut review_full_warned)
                .await?;
            self.observe(n, Stage::Match, &report).await;

            self.store(matched, deletes, &mut report).await?;
            self.observe(n, Stage::Store, &report).await;

            self.state
                .commit_checkpoint(&self.job, &self.object, &page.cursor)
                .await?;
            self.observe(n, Stage::Checkpoint, &report).await;
        }
        if let (true, Some(lister), Some(key)) =
            (track_keys, self.destination_keys, &self.key_field)
        {
            let gone: Vec<RecordId> = lister
                .keys(&self.destination_object, key)
                .await?
                .into_iter()
                .filter(|k| !seen.contains(k))
                .map(RecordId::new)
                .collect();
            report.removed_at_source = gone.len() as u64;
            self.store(Vec::new(), gone, &mut report).await?;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn validate(
        &self,
        validator: &mut Option<Validator>,
        rows: Vec<(usize, Record)>,
        report: &mut RunReport,
    ) -> Result<Vec<(usize, Record)>> {
        let mut valid = Vec::with_capacity(rows.len());
        let mut dead = Vec::new();
        for (i, row) in rows {
            // Problems the source found (unreadable cells, formula errors)
            // and every failed rule, together: a report per record.
            let mut failed: Vec<(String, String, String)> = row
                .source_problems()
                .into_iter()
                .map(|(field, problem)| (field, "source".to_owned(), problem))
                .collect();
            let outcome = match validator.as_mut() {
                Some(v) => v.validate(&row, i).map_err(|report| {
                    failed.extend(
                        report
                            .failures
                            .into_iter()
                            .map(|f| (f.field, f.rule.to_string(), f.message)),
                    );
                }),
                None => Ok(row.clone()),
            };
            match outcome {
                Ok(clean) if failed.is_empty() => {
                    report.valid += 1;
                    valid.push((i, clean));
                }
                _ => {
                    report.invalid += 1;
                    for (field, rule, _) in &failed {
                        *report
                            .skipped_by_rule
                            .entry(format!("{field}.{rule}"))
                            .or_default() += 1;
                    }
                    let errors = failed
                        .iter()
                        .map(|(field, rule, message)| {
                            let message = mask_reason(&self.pii, &row, Some(field), message);
                            format!("{field} ({rule}): {message}")
                        })
                        .collect();
                    let key = self.label(&row);
                    dead.push((key, row, errors));
                }
            }
        }
        // Rows that pass now went through: their old dead letters go. This
        // runs before the page's own dead letters are written, because a
        // duplicate row shares its key with the valid row it duplicates.
        let passed: Vec<String> = valid.iter().map(|(_, r)| self.label(r)).collect();
        if !passed.is_empty() {
            self.state
                .clear_dead_letters(&self.job, &self.object, &passed)
                .await?;
        }
        for (key, row, errors) in dead {
            self.dead(Stage::Validate, key, row, errors).await?;
        }
        Ok(valid)
    }

    async fn transform(
        &self,
        rows: Vec<(usize, Record)>,
        report: &mut RunReport,
    ) -> Result<Vec<(usize, Record)>> {
        let Some((mapping, flow)) = &self.mapping else {
            return Ok(rows);
        };
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows {
            match mapping.apply_at(&row, *flow, i) {
                Ok(mapped) => out.push((i, mapped)),
                Err(errors) => {
                    report.transform_failed += 1;
                    let key = self.label(&row);
                    // Mapping errors never show the value of a `pii` map;
                    // the record label they start with may be one.
                    let lines = errors
                        .to_string()
                        .lines()
                        .map(|l| mask_reason(&self.pii, &row, None, l))
                        .collect();
                    self.dead(Stage::Transform, key, row, lines).await?;
                }
            }
        }
        Ok(out)
    }

    async fn match_records(
        &self,
        rows: Vec<(usize, Record)>,
        report: &mut RunReport,
        warned: &mut bool,
    ) -> Result<Vec<(usize, Record)>> {
        let Some(matching) = &self.matcher else {
            return Ok(rows);
        };
        let records: Vec<Record> = rows.iter().map(|(_, r)| r.clone()).collect();
        let results = matching.matcher.match_all(&records);
        // Decisions people made on earlier review items of this page's
        // bookings, fetched once for the page.
        let review_keys: Vec<String> = rows
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.action == MatchAction::Review)
            .map(|((_, row), _)| self.label(row))
            .collect();
        let decisions = if review_keys.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.state
                .match_decisions(&self.job, &self.object, &review_keys)
                .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut settled = Vec::new();
        let mut to_review = Vec::new();
        for ((i, mut row), result) in rows.into_iter().zip(results) {
            let key = self.label(&row);
            let decided = (result.action == MatchAction::Review)
                .then(|| decisions.get(&key))
                .flatten()
                .filter(|d| {
                    d.holds_for(
                        result
                            .candidates
                            .iter()
                            .map(|c| matching.candidate(c).campaign_id)
                            .collect::<Vec<_>>()
                            .iter()
                            .map(String::as_str),
                    )
                });
            if let Some(decision) = decided {
                let status = match &decision.verdict {
                    MatchVerdict::Accepted { campaign_id } => {
                        row.set(CAMPAIGN_ID_FIELD, campaign_id.as_str());
                        MatchStatus::Matched
                    }
                    MatchVerdict::Rejected => {
                        row.set(CAMPAIGN_ID_FIELD, crm_core::Value::Null);
                        MatchStatus::Unmatched
                    }
                };
                *report
                    .match_status
                    .entry(status.as_str().to_owned())
                    .or_default() += 1;
                report.match_decided += 1;
                row.set(MATCH_STATUS_FIELD, status.as_str());
                settled.push(key);
                out.push((i, row));
                continue;
            }
            *report
                .match_status
                .entry(result.status.as_str().to_owned())
                .or_default() += 1;
            row.set(MATCH_STATUS_FIELD, result.status.as_str());
            if let Some(best) = &result.best {
                row.set(CAMPAIGN_ID_FIELD, matching.candidate(best).campaign_id);
            }
            match result.action {
                MatchAction::Review => {
                    let kind = match result.status {
                        MatchStatus::Multiple => ReviewKind::MultipleMatch,
                        _ => ReviewKind::ProbableMatch,
                    };
                    to_review.push(ReviewItem {
                        job: self.job.clone(),
                        object: self.object.clone(),
                        record_key: key,
                        kind,
                        candidates: result
                            .candidates
                            .iter()
                            .map(|c| matching.candidate(c))
                            .collect(),
                        record: row.clone(),
                    });
                }
                MatchAction::Skip => {
                    report.match_skipped += 1;
                    settled.push(key);
                    continue;
                }
                MatchAction::Link | MatchAction::CreateUnmatched => settled.push(key),
            }
            out.push((i, row));
        }
        // Records whose match is now certain leave the queue; then the
        // page's review items go in, up to the cap.
        if !settled.is_empty() {
            self.state
                .clear_reviews(&self.job, &self.object, &settled)
                .await?;
        }
        if !to_review.is_empty() {
            let mut queued = match self.max_manual_review {
                Some(_) => self.state.review_count(&self.job).await?,
                None => 0,
            };
            for item in to_review {
                if self.max_manual_review.is_some_and(|cap| queued >= cap) {
                    report.review_overflow += 1;
                    if !*warned {
                        *warned = true;
                        report.warnings.push(format!(
                            "the review queue is full (max_manual_review = {}); further \
                             probable and multiple matches are stored with their status \
                             but not queued",
                            self.max_manual_review.unwrap_or_default()
                        ));
                    }
                    continue;
                }
                self.state.queue_review(item).await?;
                queued += 1;
            }
        }
        Ok(out)
    }

    async fn store(
        &self,
        rows: Vec<(usize, Record)>,
        deletes: Vec<RecordId>,
        report: &mut RunReport,
    ) -> Result<()> {
        let max = self.sink.max_batch(&self.destination_object).max(1);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<(usize, Record)> = rows.by_ref().take(max).collect();
            let labels: Vec<String> = chunk.iter().map(|(_, r)| self.label(r)).collect();
            let records: Vec<Record> = chunk
                .into_iter()
                .map(|(_, mut r)| {
                    r.strip_metadata();
                    r
                })
                .collect();
            let batch = match &self.key_field {
                Some(key) => WriteBatch::upsert(key.clone(), records.clone()),
                None => WriteBatch::new(WriteOp::Create, records.clone()),
            };
            let outcomes = self.sink.write(&self.destination_object, batch).await?;
            for (pos, outcome) in outcomes.into_iter().enumerate() {
                let label = labels
                    .get(pos)
                    .cloned()
                    .unwrap_or_else(|| format!("#{pos}"));
                match outcome {
                    WriteOutcome::Created(_) => report.created += 1,
                    WriteOutcome::Updated(_) => report.updated += 1,
                    WriteOutcome::Unchanged(_) => report.unchanged += 1,
                    WriteOutcome::Deleted(_) => report.deleted += 1,
                    WriteOutcome::Rejected { index, error } => {
                        report.rejected += 1;
                        let record = records.get(index).cloned().unwrap_or_default();
                        let key = labels.get(index).cloned().unwrap_or(label);
                        let reason = mask_error(&self.pii, &record, &error);
                        self.dead(Stage::Store, key, record, vec![reason]).await?;
                    }
                }
            }
        }
        for chunk in deletes.chunks(max) {
            let records = chunk
                .iter()
                .map(|id| {
                    let mut r = Record::new().with_id(id.clone());
                    if let Some(key) = &self.key_field {
                        r.set(key.clone(), id.as_str());
                    }
                    r
                })
                .collect();
            let outcomes = self
                .sink
                .write(
                    &self.destination_object,
                    WriteBatch::new(WriteOp::Delete, records),
                )
                .await?;
            for outcome in outcomes {
                match outcome {
                    WriteOutcome::Rejected { index, error } => {
                        report.rejected += 1;
                        let id = chunk
                            .get(index)
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        let reason = mask_error(&self.pii, &Record::new(), &error);
                        self.dead(Stage::Store, id, Record::new(), vec![reason])
                            .await?;
                    }
                    WriteOutcome::Unchanged(_) => report.unchanged += 1,
                    _ => report.deleted += 1,
                }
            }
        }
        Ok(())
    }
}
