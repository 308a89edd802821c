//! Writing to HubSpot: batch create, update, upsert (`batch/upsert` with an
//! `idProperty`) and archive, at most 100 inputs a call, with one outcome
//! per record.
//!
//! Every input carries an `objectWriteTraceId` (its index), which HubSpot
//! echoes on results and errors, so outcomes are matched to inputs even
//! though batch answers do not keep input order; errors naming inputs by
//! `context.ids` are matched by key too. A `207 Multi-Status` answer gives
//! per-record rejections; a 400 for the whole call is split in halves until
//! the offending records are isolated, so one bad record never sinks 99
//! good ones.
//!
//! Upserts first read the current values of the batch's keys (one
//! `batch/read` with the properties in the body) and leave out records that
//! already hold the values written: they are reported
//! [`WriteOutcome::Unchanged`] and their `lastmodifieddate` is not bumped,
//! so a bidirectional sync does not echo its own writes. Turn this off with
//! [`HubSpot::with_unchanged_detection`] to spend one call per batch.
//!
//! # Associations
//!
//! Records may carry `associations.<object type>` fields listing the ids
//! they should be associated with. After the properties are written, the
//! current associations of the written records are read (v4 batch read,
//! 100 records a call), and the difference is applied: missing pairs
//! linked with the default association type of the two object types
//! (`batch/associate/default`, which needs no type id; 100 pairs a call),
//! extra ones unlinked (`batch/archive`, 100 records a call). A record
//! whose links fail is reported `Rejected` with the reason; repeating the
//! write is safe (the set of links is the goal, not a list of changes).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use crm_core::{
    Error, ErrorKind, Record, RecordId, Result, Sink, WriteBatch, WriteOp, WriteOutcome,
};

use crate::HubSpot;
use crate::client::{MAX_BATCH_INPUTS, Objects};
use crate::mapping::{
    ASSOCIATION_PREFIX, association_ids, association_target, properties_from_record, value_text,
};
use crate::wire::{
    AssociationArchiveInput, BatchError, BatchResponse, CreateInput, DefaultAssociationInput,
    HsObject, IdInput, UpdateInput, UpsertInput, WriteProperties,
};

/// One record ready to send: its index in the caller's batch and its values.
#[derive(Clone, Debug)]
struct Prepared {
    index: usize,
    key: String,
    properties: WriteProperties,
}

fn key_of(key_field: &str, value: &str) -> String {
    // HubSpot stores emails lower-cased and matches them that way.
    if key_field == "email" {
        value.trim().to_lowercase()
    } else {
        value.to_owned()
    }
}

fn batch_error_kind(category: &str) -> ErrorKind {
    match category {
        "OBJECT_NOT_FOUND" => ErrorKind::NotFound,
        "CONFLICT" | "OBJECT_ALREADY_EXISTS" => ErrorKind::Conflict,
        "RATE_LIMITS" => ErrorKind::RateLimited { retry_after: None },
        "INTERNAL_ERROR" | "SERVICE_UNAVAILABLE" | "LOCKED" | "TEMPORARILY_UNAVAILABLE" => {
            ErrorKind::Transient
        }
        _ => ErrorKind::InvalidInput,
    }
}

fn rejection(index: usize, e: &BatchError) -> WriteOutcome {
    let kind = batch_error_kind(&e.category);
    let mut err = Error::new(kind, format!("HubSpot rejected the record: {}", e.message))
        .with_operation("objects.batch_write")
        .with_context("category", &e.category);
    if let Some(field) = e.errors.iter().find_map(|d| d.field.as_deref()) {
        err = err.with_context("field", field);
    }
    WriteOutcome::Rejected { index, error: err }
}

fn missing_outcome(index: usize) -> WriteOutcome {
    WriteOutcome::Rejected {
        index,
        error: Error::new(
            ErrorKind::Transient,
            "HubSpot reported no outcome for this record; write it again",
        )
        .with_operation("objects.batch_write"),
    }
}

/// Matches a batch answer to its inputs by trace id, then by key.
fn match_outcomes(
    inputs: &[Prepared],
    resp: &BatchResponse,
    key_field: Option<&str>,
    ok: impl Fn(&HsObject) -> WriteOutcome,
) -> Vec<(usize, WriteOutcome)> {
    let mut by_trace: HashMap<String, usize> = HashMap::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (pos, p) in inputs.iter().enumerate() {
        by_trace.insert(p.index.to_string(), pos);
        by_key.insert(p.key.clone(), pos);
    }
    let mut out: Vec<Option<WriteOutcome>> = vec![None; inputs.len()];
    for r in &resp.results {
        let pos = r
            .object_write_trace_id
            .as_ref()
            .and_then(|t| by_trace.get(t))
            .or_else(|| {
                key_field
                    .and_then(|k| r.property(k))
                    .and_then(|v| by_key.get(&key_of(key_field.unwrap_or(""), v)))
            })
            .or_else(|| by_key.get(r.id.as_str()));
        if let Some(pos) = pos {
            out[*pos] = Some(ok(r));
        }
    }
    for e in &resp.errors {
        let mut positions: Vec<usize> = Vec::new();
        if let Some(pos) = e
            .object_write_trace_id
            .as_ref()
            .and_then(|t| by_trace.get(t))
        {
            positions.push(*pos);
        } else {
            for ids in e.context.values() {
                for id in ids {
                    let k = key_of(key_field.unwrap_or(""), id);
                    if let Some(pos) = by_key.get(&k).or_else(|| by_key.get(id)) {
                        positions.push(*pos);
                    }
                }
            }
            if let Some(pos) = e.id.as_ref().and_then(|id| by_key.get(id)) {
                positions.push(*pos);
            }
        }
        for pos in positions {
            out[pos] = Some(rejection(inputs[pos].index, e));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(pos, o)| {
            let index = inputs[pos].index;
            (index, o.unwrap_or_else(|| missing_outcome(index)))
        })
        .collect()
}

/// Splits into calls of at most 100 inputs with no key twice in a call.
fn chunks(prepared: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut out: Vec<Vec<Prepared>> = Vec::new();
    let mut current: Vec<Prepared> = Vec::new();
    let mut keys: HashSet<String> = HashSet::new();
    for p in prepared {
        if current.len() == MAX_BATCH_INPUTS || keys.contains(&p.key) {
            out.push(std::mem::take(&mut current));
            keys.clear();
        }
        keys.insert(p.key.clone());
        current.push(p);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[derive(Clone, Copy)]
enum Call<'k> {
    Upsert(&'k str),
    Create,
    Update,
}

impl HubSpot {
    /// Sends one call; a 400 for the whole call is split in halves.
    async fn send_split(
        &self,
        objects: &Objects<'_>,
        call: Call<'_>,
        inputs: Vec<Prepared>,
    ) -> Result<Vec<(usize, WriteOutcome)>> {
        let mut pending = vec![inputs];
        let mut out = Vec::new();
        while let Some(part) = pending.pop() {
            if part.is_empty() {
                continue;
            }
            let resp = match call {
                Call::Upsert(key) => {
                    objects
                        .batch_upsert(
                            part.iter()
                                .map(|p| UpsertInput {
                                    id: p.key.clone(),
                                    id_property: key.to_owned(),
                                    properties: p.properties.clone(),
                                    object_write_trace_id: Some(p.index.to_string()),
                                })
                                .collect(),
                        )
                        .await
                }
                Call::Create => {
                    objects
                        .batch_create(
                            part.iter()
                                .map(|p| CreateInput {
                                    properties: p.properties.clone(),
                                    associations: Vec::new(),
                                    object_write_trace_id: Some(p.index.to_string()),
                                })
                                .collect(),
                        )
                        .await
                }
                Call::Update => {
                    objects
                        .batch_update(
                            part.iter()
                                .map(|p| UpdateInput {
                                    id: p.key.clone(),
                                    id_property: None,
                                    properties: p.properties.clone(),
                                    object_write_trace_id: Some(p.index.to_string()),
                                })
                                .collect(),
                        )
                        .await
                }
            };
            match resp {
                Ok(resp) => {
                    let key_field = match call {
                        Call::Upsert(k) => Some(k),
                        _ => None,
                    };
                    out.extend(match_outcomes(&part, &resp, key_field, |r| match call {
                        Call::Upsert(_) if r.new == Some(true) => {
                            WriteOutcome::Created(RecordId::new(r.id.as_str()))
                        }
                        Call::Create => WriteOutcome::Created(RecordId::new(r.id.as_str())),
                        _ => WriteOutcome::Updated(RecordId::new(r.id.as_str())),
                    }));
                }
                Err(e) if *e.kind() == ErrorKind::InvalidInput && part.len() > 1 => {
                    let mut left = part;
                    let right = left.split_off(left.len() / 2);
                    pending.push(right);
                    pending.push(left);
                }
                Err(e)
                    if *e.kind() == ErrorKind::InvalidInput || *e.kind() == ErrorKind::Conflict =>
                {
                    for p in part {
                        out.push((
                            p.index,
                            WriteOutcome::Rejected {
                                index: p.index,
                                error: e.clone(),
                            },
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads the current values of an upsert call's keys and returns the
    /// inputs that would change something, plus `Unchanged` outcomes.
    async fn drop_unchanged(
        &self,
        objects: &Objects<'_>,
        key_field: &str,
        part: Vec<Prepared>,
    ) -> Result<(Vec<Prepared>, Vec<(usize, WriteOutcome)>)> {
        let ids: Vec<String> = part.iter().map(|p| p.key.clone()).collect();
        let mut props: Vec<String> = part
            .iter()
            .flat_map(|p| p.properties.keys().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !props.iter().any(|p| p == key_field) {
            props.push(key_field.to_owned());
        }
        props.sort();
        let current = objects.batch_read(&ids, &props, Some(key_field)).await?;
        let existing: HashMap<String, &HsObject> = current
            .results
            .iter()
            .filter_map(|o| o.property(key_field).map(|k| (key_of(key_field, k), o)))
            .collect();
        let mut send = Vec::new();
        let mut unchanged = Vec::new();
        for p in part {
            match existing.get(&p.key) {
                Some(o)
                    if p.properties.iter().all(|(name, value)| {
                        let now = o.property(name).unwrap_or("");
                        if name == key_field {
                            key_of(key_field, now) == key_of(key_field, value)
                        } else {
                            now == value
                        }
                    }) =>
                {
                    unchanged.push((
                        p.index,
                        WriteOutcome::Unchanged(RecordId::new(o.id.as_str())),
                    ));
                }
                _ => send.push(p),
            }
        }
        Ok((send, unchanged))
    }
}

/// What a record asks of its associations with one object type: exactly
/// these ids.
struct WantedLinks {
    index: usize,
    from: String,
    to: String,
    ids: Vec<String>,
}

/// Whether a failed call concerns the records sent (rejected one by one)
/// rather than the run (auth, quota, transport: the whole write fails).
fn record_level(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Conflict
    )
}

/// The from-ids a batch error names (in `context` or `id`), or all of
/// `sent` when it names none of them.
fn named_ids(e: &BatchError, sent: &[String]) -> Vec<String> {
    let named: Vec<String> = e
        .context
        .values()
        .flatten()
        .chain(e.id.iter())
        .filter(|id| sent.contains(id))
        .cloned()
        .collect();
    if named.is_empty() {
        sent.to_vec()
    } else {
        named
    }
}

impl HubSpot {
    /// Makes each record's associations with one object type exactly the
    /// ids it carries: reads the current ones (v4 batch read, 100 records a
    /// call), links the missing pairs (`batch/associate/default`, 100 pairs
    /// a call) and unlinks the others (`batch/archive`, 100 records a
    /// call). Returns per record index whether anything changed, or why its
    /// links could not be written.
    async fn write_links(
        &self,
        object: &str,
        wanted: Vec<WantedLinks>,
    ) -> Result<Vec<(usize, std::result::Result<bool, Error>)>> {
        let mut out = Vec::new();
        let mut targets: Vec<String> = wanted.iter().map(|w| w.to.clone()).collect();
        targets.sort();
        targets.dedup();
        for to in targets {
            let assoc = self.client.associations(object, &to);
            // One entry per from-record: the last record naming it wins.
            let mut by_from: indexmap::IndexMap<String, (Vec<usize>, Vec<String>)> =
                indexmap::IndexMap::new();
            for w in wanted.iter().filter(|w| w.to == to) {
                let e = by_from.entry(w.from.clone()).or_default();
                e.0.push(w.index);
                e.1 = w.ids.clone();
            }
            let froms: Vec<String> = by_from.keys().cloned().collect();
            let mut failed: HashMap<String, Error> = HashMap::new();
            let mut changed: HashSet<String> = HashSet::new();
            for chunk in froms.chunks(MAX_BATCH_INPUTS) {
                let current = match assoc.read_all(chunk).await {
                    Ok(c) => c,
                    Err(e) if record_level(&e) => {
                        for f in chunk {
                            failed.insert(f.clone(), e.clone());
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut adds: Vec<DefaultAssociationInput> = Vec::new();
                let mut removes: Vec<AssociationArchiveInput> = Vec::new();
                for f in chunk {
                    let want = by_from.get(f).map(|(_, ids)| ids.as_slice()).unwrap_or(&[]);
                    let have = current.get(f).map(Vec::as_slice).unwrap_or(&[]);
                    for id in want.iter().filter(|id| !have.contains(id)) {
                        adds.push(DefaultAssociationInput {
                            from: IdInput { id: f.clone() },
                            to: IdInput { id: id.clone() },
                        });
                    }
                    let gone: Vec<IdInput> = have
                        .iter()
                        .filter(|id| !want.contains(id))
                        .map(|id| IdInput { id: id.clone() })
                        .collect();
                    if !gone.is_empty() {
                        removes.push(AssociationArchiveInput {
                            from: IdInput { id: f.clone() },
                            to: gone,
                        });
                    }
                }
                for part in adds.chunks(MAX_BATCH_INPUTS) {
                    let sent: Vec<String> = part.iter().map(|a| a.from.id.clone()).collect();
                    match assoc.batch_associate_default(part.to_vec()).await {
                        Ok(res) => {
                            let mut bad: HashSet<String> = HashSet::new();
                            for e in &res.errors {
                                let err = Error::new(
                                    batch_error_kind(&e.category),
                                    format!("HubSpot rejected the association: {}", e.message),
                                )
                                .with_operation("associations.batch_associate_default")
                                .with_context("category", &e.category);
                                for f in named_ids(e, &sent) {
                                    bad.insert(f.clone());
                                    failed.insert(f, err.clone());
                                }
                            }
                            changed.extend(sent.into_iter().filter(|f| !bad.contains(f)));
                        }
                        Err(e) if record_level(&e) => {
                            for f in sent {
                                failed.insert(f, e.clone());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                for part in removes.chunks(MAX_BATCH_INPUTS) {
                    let sent: Vec<String> = part.iter().map(|a| a.from.id.clone()).collect();
                    match assoc.batch_archive(part.to_vec()).await {
                        Ok(()) => changed.extend(sent),
                        Err(e) if record_level(&e) => {
                            for f in sent {
                                failed.insert(f, e.clone());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            for (from, (indices, _)) in by_from {
                let result = match failed.get(&from) {
                    // The record itself was written: name it, so a caller
                    // repeating only the links can.
                    Some(e) => Err(e.clone().with_context("record_id", &from)),
                    None => Ok(changed.contains(&from)),
                };
                out.extend(indices.into_iter().map(|i| (i, result.clone())));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Sink for HubSpot {
    fn max_batch(&self, _object: &str) -> usize {
        MAX_BATCH_INPUTS
    }

    /// Writes a batch of any size (split into calls of at most 100).
    ///
    /// - `Upsert { key }`: `batch/upsert` with `idProperty = key` (e.g.
    ///   `email`, or a custom property with unique values); the record's
    ///   `key` field is the `id`. A key of `hs_object_id` updates records
    ///   that have an id and creates the others.
    /// - `Create`, `Update` (by [`Record::id`]), `Delete` (archive by id).
    ///
    /// A field named `associations.<object type>` (e.g.
    /// `associations.companies` on a contact, `associations.contacts` on a
    /// deal) holding ids (a JSON array, one id, or comma-separated text)
    /// makes the record's associations with that type exactly those ids
    /// once its properties are written: missing links are created with the
    /// default association type, others removed, in batches (see the
    /// [module docs](self)). Null or an empty list removes them all; a
    /// record without the field keeps its associations. A record whose
    /// links changed while its properties did not is reported `Updated`.
    ///
    /// # Errors
    /// Only when a whole call failed for a reason other than the records
    /// (auth, quota, transport after retries).
    ///
    /// # Cancel safety
    /// Dropping the future may leave part of the batch written; upserts
    /// keyed by a unique property make a repeat safe.
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let object = self.object_type(object)?;
        let objects = self.client.objects(&object);
        let n = batch.records.len();
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; n];
        let reject = |index: usize, msg: String| WriteOutcome::Rejected {
            index,
            error: Error::invalid_input(msg).with_operation("objects.batch_write"),
        };
        let prepare = |index: usize, r: &Record, key: String| match properties_from_record(r, None)
        {
            Ok(properties) => Ok(Prepared {
                index,
                key,
                properties,
            }),
            Err(e) => Err(reject(index, e.to_string())),
        };
        let mut upserts = Vec::new();
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut archives: Vec<(usize, String)> = Vec::new();
        let mut links: Vec<(usize, Vec<(String, Vec<String>)>)> = Vec::new();
        for (i, r) in batch.records.iter().enumerate() {
            if !matches!(batch.op, WriteOp::Delete) {
                let mut mine = Vec::new();
                let mut bad = None;
                for (name, v) in r.fields.iter() {
                    if !name.starts_with(ASSOCIATION_PREFIX) {
                        continue;
                    }
                    let parsed = association_target(name)
                        .ok_or_else(|| format!("`{name}` does not name an object type"))
                        .and_then(|to| {
                            association_ids(name, v)
                                .map(|ids| (to, ids))
                                .map_err(|e| e.to_string())
                        });
                    match parsed {
                        Ok(p) => mine.push(p),
                        Err(m) => bad = Some(m),
                    }
                }
                if let Some(m) = bad {
                    outcomes[i] = Some(reject(i, m));
                    continue;
                }
                if !mine.is_empty() {
                    links.push((i, mine));
                }
            }
            let id = r.id.as_ref().map(|id| id.as_str().to_owned());
            let target = match &batch.op {
                WriteOp::Upsert { key } if key == "hs_object_id" || key == "id" => match id {
                    Some(id) => prepare(i, r, id).map(|p| updates.push(p)),
                    None => prepare(i, r, i.to_string()).map(|p| creates.push(p)),
                },
                WriteOp::Upsert { key } => match r.get(key).filter(|v| !v.is_null()) {
                    Some(v) => prepare(i, r, key_of(key, &value_text(v))).map(|p| upserts.push(p)),
                    None => Err(reject(i, format!("the upsert key `{key}` has no value"))),
                },
                WriteOp::Create => prepare(i, r, i.to_string()).map(|p| creates.push(p)),
                WriteOp::Update => match id {
                    Some(id) => prepare(i, r, id).map(|p| updates.push(p)),
                    None => Err(reject(i, "an update needs the record's id".into())),
                },
                WriteOp::Delete => match id {
                    Some(id) => {
                        archives.push((i, id));
                        Ok(())
                    }
                    None => Err(reject(i, "a delete needs the record's id".into())),
                },
            };
            if let Err(o) = target {
                outcomes[i] = Some(o);
            }
        }
        let mut done: Vec<(usize, WriteOutcome)> = Vec::new();
        if let WriteOp::Upsert { key } = &batch.op {
            for part in chunks(upserts) {
                let part = if self.detect_unchanged {
                    let (send, unchanged) = self.drop_unchanged(&objects, key, part).await?;
                    done.extend(unchanged);
                    send
                } else {
                    part
                };
                if !part.is_empty() {
                    done.extend(self.send_split(&objects, Call::Upsert(key), part).await?);
                }
            }
        }
        for part in chunks(creates) {
            done.extend(self.send_split(&objects, Call::Create, part).await?);
        }
        for part in chunks(updates) {
            done.extend(self.send_split(&objects, Call::Update, part).await?);
        }
        for part in archives.chunks(MAX_BATCH_INPUTS) {
            let ids: Vec<String> = part.iter().map(|(_, id)| id.clone()).collect();
            objects.batch_archive(&ids).await?;
            done.extend(
                part.iter()
                    .map(|(i, id)| (*i, WriteOutcome::Deleted(RecordId::new(id.as_str())))),
            );
        }
        for (i, o) in done {
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(o);
            }
        }
        let mut wanted = Vec::new();
        for (i, per_type) in links {
            let from = match outcomes.get(i) {
                Some(Some(
                    WriteOutcome::Created(id)
                    | WriteOutcome::Updated(id)
                    | WriteOutcome::Unchanged(id),
                )) => id.as_str().to_owned(),
                _ => continue,
            };
            for (to, ids) in per_type {
                wanted.push(WantedLinks {
                    index: i,
                    from: from.clone(),
                    to,
                    ids,
                });
            }
        }
        if !wanted.is_empty() {
            for (i, result) in self.write_links(&object, wanted).await? {
                let Some(slot) = outcomes.get_mut(i) else {
                    continue;
                };
                match (result, slot.take()) {
                    (Err(error), _) => {
                        *slot = Some(WriteOutcome::Rejected { index: i, error });
                    }
                    (Ok(true), Some(WriteOutcome::Unchanged(id))) => {
                        *slot = Some(WriteOutcome::Updated(id));
                    }
                    (Ok(_), prev) => *slot = prev,
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.unwrap_or_else(|| missing_outcome(i)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BatchStatus, ObjectId, Properties};

    fn prepared(index: usize, key: &str) -> Prepared {
        Prepared {
            index,
            key: key.into(),
            properties: WriteProperties::new(),
        }
    }

    fn obj(id: &str, trace: Option<&str>, email: &str, new: bool) -> HsObject {
        let mut p = Properties::new();
        p.insert("email".into(), Some(email.into()));
        HsObject {
            id: ObjectId::new(id),
            properties: p,
            created_at: None,
            updated_at: None,
            archived: false,
            archived_at: None,
            associations: None,
            object_write_trace_id: trace.map(str::to_owned),
            new: Some(new),
        }
    }

    #[test]
    fn chunks_hold_100_and_never_repeat_a_key() {
        let mut v: Vec<Prepared> = (0..250).map(|i| prepared(i, &format!("k{i}"))).collect();
        v.insert(10, prepared(999, "k3"));
        let c = chunks(v);
        assert!(c.iter().all(|c| c.len() <= 100));
        for part in &c {
            let keys: HashSet<&str> = part.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys.len(), part.len());
        }
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 251);
    }

    #[test]
    fn outcomes_match_by_trace_id_then_key_and_errors_by_context() {
        let inputs = vec![
            prepared(10, "a@x.com"),
            prepared(11, "bad"),
            prepared(12, "c@x.com"),
            prepared(13, "d@x.com"),
        ];
        let resp = BatchResponse {
            status: BatchStatus::Complete,
            // Out of order; one without a trace id.
            results: vec![
                obj("3", Some("12"), "c@x.com", false),
                obj("1", None, "A@x.com", true),
            ],
            requested_at: None,
            started_at: None,
            completed_at: None,
            num_errors: Some(1),
            errors: vec![BatchError {
                status: "error".into(),
                category: "VALIDATION_ERROR".into(),
                message: "Email address bad is invalid".into(),
                context: [("ids".to_owned(), vec!["bad".to_owned()])]
                    .into_iter()
                    .collect(),
                ..BatchError::default()
            }],
        };
        let out = match_outcomes(&inputs, &resp, Some("email"), |r| {
            if r.new == Some(true) {
                WriteOutcome::Created(RecordId::new(r.id.as_str()))
            } else {
                WriteOutcome::Updated(RecordId::new(r.id.as_str()))
            }
        });
        let by: HashMap<usize, &WriteOutcome> = out.iter().map(|(i, o)| (*i, o)).collect();
        assert!(matches!(by[&10], WriteOutcome::Created(id) if id.as_str() == "1"));
        assert!(
            matches!(by[&11], WriteOutcome::Rejected { index: 11, error } if !error.is_retryable())
        );
        assert!(matches!(by[&12], WriteOutcome::Updated(id) if id.as_str() == "3"));
        // No word from HubSpot about 13: retryable rejection, never silence.
        assert!(matches!(by[&13], WriteOutcome::Rejected { error, .. } if error.is_retryable()));
    }
}
