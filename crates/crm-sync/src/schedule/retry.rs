//! Seed 003's hourly retry of failed records (dead letters).

use crm_core::mapping::{Flow, Mapping};
use crm_core::validate::ValidationRules;
use crm_core::{Error, Record, Result, Sink, WriteBatch, WriteOp, WriteOutcome};
use crm_sql::state::{ConnectionId, DeadLetter, StateStore};

use crate::config::SyncJob;
use crate::pii::{mask_error, mask_reason};

/// Seed 003: a failed record is tried at most this many times in all (the
/// first failure counts as attempt 1); then it stays a dead letter, marked
/// exhausted, for a person.
pub const RETRY_MAX_ATTEMPTS: i64 = 3;

/// Dead letters taken per retry run.
pub const RETRY_BATCH: u32 = 500;

/// What the suffix of an exhausted dead letter's error says.
pub const EXHAUSTED_MARK: &str = "[exhausted: no more automatic retries]";

/// Where and how a retry writes a dead letter's record: the job's
/// destination object, its upsert key, its validation rules and its field
/// mapping.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryTarget {
    /// The sink's object (a job's `destination.table`).
    pub object: String,
    /// The upsert key; records are created when there is none.
    pub key_field: Option<String>,
    /// The rules a `validate` dead letter must pass before it is written.
    pub validation: Option<ValidationRules>,
    /// The mapping a `validate` dead letter goes through once it passes
    /// (its record is kept as read; `store` dead letters are kept mapped).
    pub mapping: Option<Mapping>,
    /// Total attempts after which a record is no longer retried.
    pub max_attempts: i64,
    /// Dead letters taken per run.
    pub limit: u32,
}

impl RetryTarget {
    /// Writes to `object` with creates, no validation, seed 003's limits.
    pub fn new(object: impl Into<String>) -> Self {
        RetryTarget {
            object: object.into(),
            key_field: None,
            validation: None,
            mapping: None,
            max_attempts: RETRY_MAX_ATTEMPTS,
            limit: RETRY_BATCH,
        }
    }

    /// As a run of `job` writes: its destination table, upserts keyed by
    /// the sheet's `key_field` (default `booking_id`), its `validation:`
    /// and its `mappings:`.
    pub fn for_job(job: &SyncJob) -> Self {
        let key = job.key_field();
        RetryTarget::new(job.destination.table.clone())
            .key_field(key)
            .validation(job.validation.clone())
            .mapping(job.mappings.clone().map(|m| m.with_key_field(key)))
    }

    /// Upserts keyed by `field`.
    #[must_use]
    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = Some(field.into());
        self
    }

    /// The validation rules for `validate` dead letters.
    #[must_use]
    pub fn validation(mut self, rules: Option<ValidationRules>) -> Self {
        self.validation = rules;
        self
    }

    /// The mapping for `validate` dead letters (run source -> destination,
    /// as a run does).
    #[must_use]
    pub fn mapping(mut self, mapping: Option<Mapping>) -> Self {
        self.mapping = mapping;
        self
    }

    /// Total attempts after which a record is no longer retried.
    #[must_use]
    pub fn max_attempts(mut self, n: i64) -> Self {
        self.max_attempts = n.max(1);
        self
    }
}

/// What one retry run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryReport {
    /// Dead letters taken (fewer than `max_attempts` attempts).
    pub taken: u64,
    /// Records written; their dead letters are gone.
    pub written: u64,
    /// `validate` dead letters that still fail their rules.
    pub still_invalid: u64,
    /// Dead letters that failed again (one more attempt counted),
    /// including `still_invalid`.
    pub failed_again: u64,
    /// Of those, the ones that reached `max_attempts` and are no longer
    /// retried.
    pub exhausted: u64,
    /// Dead letters of stages a retry does not re-run (extract, transform,
    /// dedupe, match, checkpoint, failed deletes), left as they are.
    pub skipped: u64,
    /// The sink failed as a whole (transport, auth): the records of that
    /// call were counted as failed again, later ones were not tried.
    pub stopped: Option<String>,
}

/// Retries the dead letters of `conn` with fewer than
/// `target.max_attempts` attempts, re-running the stage they failed:
///
/// - `store` (the write stage): the stored record is written through
///   `sink` again, as an upsert keyed by `target.key_field`.
/// - `validate`: the stored record is validated again with
///   `target.validation`; it is written only if it passes now (it was
///   edited, or the rules changed), otherwise it keeps failing. A record
///   that passes goes through `target.mapping` before it is written.
///
/// A record written removes its dead letter; one that fails again counts
/// one more attempt, and at `max_attempts` its error ends with
/// [`EXHAUSTED_MARK`]. The new error masks the values of the store's
/// [personal fields](StateStore::pii_fields) as a run does (see
/// [`crate::pipeline`]). Campaign matching is not re-run for a record that
/// failed validation.
///
/// # Errors
/// State-store errors. A sink failing as a whole is reported in
/// [`RetryReport::stopped`], not as an error.
pub async fn retry_failed<S: Sink + ?Sized>(
    store: &StateStore,
    conn: &ConnectionId,
    sink: &S,
    target: &RetryTarget,
) -> Result<RetryReport> {
    let letters = store
        .dead_letters(conn, target.max_attempts, target.limit)
        .await?;
    retry_letters(store, letters, sink, target).await
}

/// Retries these dead letters (whatever their attempts so far), as
/// [`retry_failed`] does: the review desk's retry of one edited record.
///
/// # Errors
/// State-store errors. A sink failing as a whole is reported in
/// [`RetryReport::stopped`], not as an error.
pub async fn retry_letters<S: Sink + ?Sized>(
    store: &StateStore,
    letters: Vec<DeadLetter>,
    sink: &S,
    target: &RetryTarget,
) -> Result<RetryReport> {
    let mut report = RetryReport {
        taken: letters.len() as u64,
        ..RetryReport::default()
    };
    let pii = store.pii_fields();
    let mut validator = target.validation.as_ref().map(ValidationRules::validator);
    let mut to_write: Vec<(DeadLetter, Record)> = Vec::new();
    for (i, letter) in letters.into_iter().enumerate() {
        let stage = letter.stage.as_str();
        if stage != "store" && stage != "write" && stage != "validate" {
            report.skipped += 1;
            continue;
        }
        let mut record = match serde_json::from_value::<Record>(letter.record.clone()) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("the stored record cannot be read: {e}");
                failed_again(store, &letter, &msg, target, &mut report).await?;
                continue;
            }
        };
        if record.is_empty() {
            // A rejected delete keeps no record; the next full run with
            // `remove_missing` deletes it again.
            report.skipped += 1;
            continue;
        }
        if stage == "validate" {
            let mut errors: Vec<String> = record
                .source_problems()
                .into_iter()
                .map(|(field, problem)| {
                    let problem = mask_reason(pii, &record, Some(&field), &problem);
                    format!("{field} (source): {problem}")
                })
                .collect();
            let cleaned = match validator.as_mut() {
                Some(v) => match v.validate(&record, i) {
                    Ok(clean) => Some(clean),
                    Err(r) => {
                        errors.extend(r.failures.into_iter().map(|f| {
                            let message = mask_reason(pii, &record, Some(&f.field), &f.message);
                            format!("{} ({}): {message}", f.field, f.rule)
                        }));
                        None
                    }
                },
                None => Some(record.clone()),
            };
            let mapped = match (cleaned, &target.mapping) {
                (Some(clean), Some(mapping)) if errors.is_empty() => {
                    match mapping.apply_at(&clean, Flow::ToCrm, i) {
                        Ok(mapped) => Some(mapped),
                        Err(e) => {
                            errors.push(mask_reason(pii, &clean, None, &e.to_string()));
                            None
                        }
                    }
                }
                (cleaned, _) => cleaned,
            };
            match mapped {
                Some(clean) if errors.is_empty() => record = clean,
                _ => {
                    report.still_invalid += 1;
                    failed_again(store, &letter, &errors.join("\n"), target, &mut report).await?;
                    continue;
                }
            }
        }
        record.strip_metadata();
        to_write.push((letter, record));
    }

    let max = sink.max_batch(&target.object).max(1);
    let mut pending = to_write.into_iter().peekable();
    while pending.peek().is_some() {
        let chunk: Vec<(DeadLetter, Record)> = pending.by_ref().take(max).collect();
        let records: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let batch = match &target.key_field {
            Some(key) => WriteBatch::upsert(key.clone(), records),
            None => WriteBatch::new(WriteOp::Create, records),
        };
        let outcomes = match sink.write(&target.object, batch).await {
            Ok(o) => o,
            Err(e) => {
                let msg = e.to_string();
                for (letter, record) in &chunk {
                    let msg = mask_error(pii, record, &e);
                    failed_again(store, letter, &msg, target, &mut report).await?;
                }
                report.stopped = Some(msg);
                break;
            }
        };
        let mut rejected: Vec<Option<Error>> = vec![None; chunk.len()];
        let mut answered = vec![false; chunk.len()];
        for (pos, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                WriteOutcome::Rejected { index, error } => {
                    if let Some(slot) = rejected.get_mut(index) {
                        *slot = Some(error);
                    }
                    if let Some(a) = answered.get_mut(index) {
                        *a = true;
                    }
                }
                _ => {
                    if let Some(a) = answered.get_mut(pos) {
                        *a = true;
                    }
                }
            }
        }
        for (i, (letter, record)) in chunk.iter().enumerate() {
            match (rejected.get(i).and_then(Option::as_ref), answered.get(i)) {
                (Some(e), _) => {
                    let msg = mask_error(pii, record, e);
                    failed_again(store, letter, &msg, target, &mut report).await?;
                }
                (None, Some(true)) => {
                    store.remove_dead_letter(&letter.id).await?;
                    report.written += 1;
                }
                _ => {
                    let msg = "the destination answered no outcome for the record";
                    failed_again(store, letter, msg, target, &mut report).await?;
                }
            }
        }
    }
    Ok(report)
}

async fn failed_again(
    store: &StateStore,
    letter: &DeadLetter,
    error: &str,
    target: &RetryTarget,
    report: &mut RetryReport,
) -> Result<()> {
    report.failed_again += 1;
    let attempts = letter.attempts.saturating_add(1);
    let error = if attempts >= target.max_attempts {
        report.exhausted += 1;
        format!("{error} {EXHAUSTED_MARK} after {attempts} attempts")
    } else {
        error.to_owned()
    };
    store.dead_letter_failed_again(&letter.id, &error).await
}

/// Whether a dead letter is no longer retried (see [`RETRY_MAX_ATTEMPTS`]).
pub fn is_exhausted(letter: &DeadLetter, max_attempts: i64) -> bool {
    letter.attempts >= max_attempts
}
