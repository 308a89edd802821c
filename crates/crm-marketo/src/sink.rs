//! Writing: leads through `POST /rest/v1/leads.json` (`action` and
//! `lookupField`), companies and opportunities through their sync calls
//! deduplicated on `externalCompanyId` / `externalOpportunityId`, deletes
//! through `delete.json`; at most 300 records a call.
//!
//! Marketo answers per record in `result[]`: `created`, `updated`,
//! `deleted`, or `skipped` with `reasons` (1003 invalid data, 1004 not
//! found, 1005 already exists, 1006 unknown field, ...), each mapped to a
//! [`WriteOutcome`] at the record's own index. With unchanged detection on
//! (the default), an upsert first reads the current values by the key (one
//! query per batch) and leaves out records that would not change, reporting
//! them `Unchanged`.

use std::collections::HashMap;

use async_trait::async_trait;
use crm_core::{
    Error, ErrorKind, Record, RecordId, Result, Sink, Value, WriteBatch, WriteOp, WriteOutcome,
};
use serde_json::Value as Json;

use crate::client::MAX_BATCH;
use crate::error::{answered_past_input, fill_unanswered, record_error};
use crate::mapping::{comparable, wire_from_record};
use crate::wire::{
    DeleteRequest, SyncAction, SyncLeadRequest, SyncObjectRequest, SyncResult, WireRecord,
};
use crate::{Marketo, ObjectKind};

fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(s) if s.trim().is_empty() => None,
        Value::Text(s) => Some(s.clone()),
        other => Some(comparable(&other.to_json())),
    }
}

#[async_trait]
impl Sink for Marketo {
    fn max_batch(&self, _object: &str) -> usize {
        MAX_BATCH
    }

    /// Writes up to 300 records a call (larger batches are split).
    ///
    /// # Cancel safety
    /// Upserts and deletes are safe to repeat; a cancelled `Create` of
    /// leads may have created some.
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let kind = self.object(object)?;
        if kind == ObjectKind::Activities {
            return Err(Error::invalid_input("activities are read-only").with_operation("write"));
        }
        let mut out = Vec::with_capacity(batch.records.len());
        for (n, chunk) in batch.records.chunks(MAX_BATCH).enumerate() {
            let base = n * MAX_BATCH;
            let outcomes = self.write_chunk(kind, &batch.op, chunk).await?;
            out.extend(outcomes.into_iter().map(|o| match o {
                WriteOutcome::Rejected { index, error } => WriteOutcome::Rejected {
                    index: base + index,
                    error,
                },
                other => other,
            }));
        }
        Ok(out)
    }
}

impl Marketo {
    async fn write_chunk(
        &self,
        kind: ObjectKind,
        op: &WriteOp,
        records: &[Record],
    ) -> Result<Vec<WriteOutcome>> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; records.len()];
        let op_name = kind.endpoint("sync");
        let (action, key) = match op {
            WriteOp::Upsert { key } => (SyncAction::CreateOrUpdate, key.clone()),
            WriteOp::Create => (SyncAction::CreateOnly, kind.default_key().to_owned()),
            WriteOp::Update => (SyncAction::UpdateOnly, "id".to_owned()),
            WriteOp::Delete => return self.delete_chunk(kind, records).await,
        };
        // Prepare the wire records; records without a key are rejected here.
        let mut to_send: Vec<(usize, WireRecord, Option<String>)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let mut wire = wire_from_record(r);
            if *op == WriteOp::Update {
                match &r.id {
                    Some(id) => {
                        let v = id
                            .as_str()
                            .parse::<i64>()
                            .map(Json::from)
                            .unwrap_or_else(|_| Json::String(id.as_str().to_owned()));
                        wire.insert(kind.id_field().to_owned(), v);
                    }
                    None => {
                        outcomes[i] = Some(WriteOutcome::Rejected {
                            index: i,
                            error: Error::invalid_input("an update needs the record id")
                                .with_operation(op_name),
                        });
                        continue;
                    }
                }
            }
            let key_value = if *op == WriteOp::Update {
                None
            } else {
                match r.get(&key).and_then(key_text) {
                    Some(k) => Some(k),
                    None => {
                        outcomes[i] = Some(WriteOutcome::Rejected {
                            index: i,
                            error: Error::invalid_input(format!("the record has no `{key}`"))
                                .with_operation(op_name)
                                .with_context("field", &key),
                        });
                        continue;
                    }
                }
            };
            to_send.push((i, wire, key_value));
        }
        if matches!(op, WriteOp::Upsert { .. })
            && self.config.detect_unchanged()
            && !to_send.is_empty()
        {
            let existing = self.current_by_key(kind, &key, &to_send).await?;
            to_send.retain(|(i, wire, k)| {
                let Some(current) = k.as_ref().and_then(|k| existing.get(k)) else {
                    return true;
                };
                let same = wire.iter().all(|(f, v)| {
                    current.get(f).map(comparable).unwrap_or_default() == comparable(v)
                });
                let id = current.get(kind.id_field()).map(comparable);
                match (same, id) {
                    (true, Some(id)) if !id.is_empty() => {
                        outcomes[*i] = Some(WriteOutcome::Unchanged(RecordId::new(id)));
                        false
                    }
                    _ => true,
                }
            });
        }
        if !to_send.is_empty() {
            let input: Vec<WireRecord> = to_send.iter().map(|(_, w, _)| w.clone()).collect();
            let results = if kind == ObjectKind::Leads {
                let lookup = if *op == WriteOp::Update {
                    "id".to_owned()
                } else {
                    key.clone()
                };
                self.client
                    .sync_leads(&SyncLeadRequest {
                        action: Some(action),
                        lookup_field: Some(lookup),
                        input,
                    })
                    .await?
            } else {
                let dedupe_by = if key == kind.id_field() || *op == WriteOp::Update {
                    "idField"
                } else {
                    "dedupeFields"
                };
                self.client
                    .sync(
                        kind,
                        &SyncObjectRequest {
                            action: Some(action),
                            dedupe_by: Some(dedupe_by.to_owned()),
                            input,
                        },
                    )
                    .await?
            };
            let indexes: Vec<usize> = to_send.iter().map(|(i, _, _)| *i).collect();
            apply_results(kind, op_name, &indexes, results, &mut outcomes)?;
        }
        finish(outcomes, op_name)
    }

    /// Current records by key, one query per 300 keys.
    async fn current_by_key(
        &self,
        kind: ObjectKind,
        key: &str,
        to_send: &[(usize, WireRecord, Option<String>)],
    ) -> Result<HashMap<String, WireRecord>> {
        let mut keys: Vec<String> = to_send.iter().filter_map(|(_, _, k)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        let mut fields: Vec<String> = vec![kind.id_field().to_owned(), key.to_owned()];
        for (_, w, _) in to_send {
            for f in w.keys() {
                if !fields.contains(f) {
                    fields.push(f.clone());
                }
            }
        }
        let mut out = HashMap::new();
        for chunk in keys.chunks(MAX_BATCH) {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .query(kind, key, chunk, &fields, MAX_BATCH, token.as_deref())
                    .await?;
                for r in page.records {
                    if let Some(k) = r.get(key).map(comparable) {
                        out.insert(k, r);
                    }
                }
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    async fn delete_chunk(
        &self,
        kind: ObjectKind,
        records: &[Record],
    ) -> Result<Vec<WriteOutcome>> {
        let op_name = kind.endpoint("delete");
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; records.len()];
        let mut input = Vec::new();
        let mut indexes = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match &r.id {
                Some(id) => {
                    let v = id
                        .as_str()
                        .parse::<i64>()
                        .map(Json::from)
                        .unwrap_or_else(|_| Json::String(id.as_str().to_owned()));
                    let mut w = WireRecord::new();
                    w.insert(kind.id_field().to_owned(), v);
                    input.push(w);
                    indexes.push(i);
                }
                None => {
                    outcomes[i] = Some(WriteOutcome::Rejected {
                        index: i,
                        error: Error::invalid_input("a delete needs the record id")
                            .with_operation(op_name),
                    });
                }
            }
        }
        if !input.is_empty() {
            let delete_by = (kind != ObjectKind::Leads).then(|| "idField".to_owned());
            let results = self
                .client
                .delete(kind, &DeleteRequest { delete_by, input })
                .await?;
            apply_results(kind, op_name, &indexes, results, &mut outcomes)?;
        }
        finish(outcomes, op_name)
    }
}

/// Maps Marketo's results (by `seq` when given, else in order) onto the
/// records at `indexes`.
fn apply_results(
    kind: ObjectKind,
    op: &'static str,
    indexes: &[usize],
    results: Vec<SyncResult>,
    outcomes: &mut [Option<WriteOutcome>],
) -> Result<()> {
    for (n, r) in results.into_iter().enumerate() {
        let pos = r.seq.unwrap_or(n);
        let Some(&index) = indexes.get(pos) else {
            return Err(answered_past_input(op, pos, indexes.len()));
        };
        let id = match kind {
            ObjectKind::Opportunities => r.marketo_guid.clone(),
            _ => r.id.map(|i| i.to_string()),
        }
        .map(RecordId::new);
        let outcome = match (r.status.as_str(), id) {
            ("created", Some(id)) => WriteOutcome::Created(id),
            ("updated", Some(id)) => WriteOutcome::Updated(id),
            ("deleted", Some(id)) => WriteOutcome::Deleted(id),
            ("skipped", _) => WriteOutcome::Rejected {
                index,
                error: record_error(&r.reasons, op),
            },
            (status, _) => WriteOutcome::Rejected {
                index,
                error: Error::new(
                    ErrorKind::SchemaMismatch,
                    format!("unexpected result status `{status}` without an id"),
                )
                .with_operation(op),
            },
        };
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    Ok(())
}

fn finish(outcomes: Vec<Option<WriteOutcome>>, op: &'static str) -> Result<Vec<WriteOutcome>> {
    Ok(fill_unanswered(outcomes, op, "record"))
}
