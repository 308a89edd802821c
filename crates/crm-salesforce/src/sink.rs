//! The [`Sink`] side: sObject Collections for ordinary batches, Bulk API 2.0
//! ingest jobs for large ones.
//!
//! | [`WriteOp`] | collections call (≤ 200 records) | bulk operation |
//! |---|---|---|
//! | `Upsert { key }` | `PATCH composite/sobjects/{type}/{key}` | `upsert` by `key` |
//! | `Upsert { key: "Id" }` | `PATCH composite/sobjects` (update by id) | `update` |
//! | `Create` | `POST composite/sobjects` | `insert` |
//! | `Update` | `PATCH composite/sobjects` | `update` |
//! | `Delete` | `DELETE composite/sobjects?ids=` | `delete` |
//!
//! Before an upsert by external id or an update by `Id` through collections
//! (with [`skip_unchanged`](crate::SalesforceConfig::skip_unchanged), the
//! default), one `query` per chunk reads the records holding the chunk's keys; records
//! whose values all match are reported [`WriteOutcome::Unchanged`] and not
//! sent, so a repeated sync writes nothing and bumps no `SystemModstamp`.
//! If that lookup fails for any reason but an expired session or the daily
//! quota, the chunk is written whole.
//!
//! Every call sends `allOrNone: false`, so one bad record does not stop the
//! others; each record's outcome carries Salesforce's `statusCode`,
//! `message` and `fields`. An ingest job's `successfulResults` and
//! `failedResults` are matched back to the input rows by their values.

use std::collections::{HashMap, VecDeque};

use chrono::SecondsFormat;
use crm_core::{
    Error, ErrorKind, Record, RecordId, Result, Value, WriteBatch, WriteOp, WriteOutcome,
};
use futures_util::StreamExt;
use serde_json::{Map, Value as Json};

use crate::client::{IngestResults, SalesforceClient};
use crate::csv::{CsvReader, NULL_VALUE, write_row};
use crate::error::api_error;
use crate::soql::{Condition, Literal, Select, check_name, is_valid_name};
use crate::source::parse_datetime;
use crate::wire::{CreateIngestJob, JobState, SaveResult};

/// A field value as Salesforce JSON: numbers as numbers, dates as
/// `YYYY-MM-DD`, date-times as `...Z` with milliseconds.
pub fn to_wire(value: &Value) -> Json {
    match value {
        Value::Decimal(d) => serde_json::from_str::<Json>(&d.normalize().to_string())
            .unwrap_or_else(|_| Json::String(d.to_string())),
        Value::DateTime(t) => Json::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        other => other.to_json(),
    }
}

/// A field value as a Bulk CSV cell (`#N/A` for null).
fn to_cell(value: &Value) -> String {
    match value {
        Value::Null => NULL_VALUE.to_owned(),
        Value::DateTime(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        Value::Json(j) => j.to_string(),
        other => other.to_string(),
    }
}

/// How a batch is written.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Plan {
    Upsert(String),
    Create,
    Update,
    Delete,
}

impl Plan {
    fn of(op: &WriteOp) -> Result<Plan> {
        Ok(match op {
            WriteOp::Upsert { key } if key.eq_ignore_ascii_case("Id") => Plan::Update,
            WriteOp::Upsert { key } => Plan::Upsert(check_name(key)?.to_owned()),
            WriteOp::Create => Plan::Create,
            WriteOp::Update => Plan::Update,
            WriteOp::Delete => Plan::Delete,
        })
    }

    fn bulk_operation(&self) -> &'static str {
        match self {
            Plan::Upsert(_) => "upsert",
            Plan::Create => "insert",
            Plan::Update => "update",
            Plan::Delete => "delete",
        }
    }
}

fn record_id(r: &Record) -> Option<String> {
    r.id.as_ref()
        .map(|i| i.as_str().to_owned())
        .or_else(|| r.text("Id").map(str::to_owned))
        .filter(|s| !s.trim().is_empty())
}

/// The wire fields of one record for `plan`, or why it cannot be sent.
fn prepare(plan: &Plan, r: &Record) -> std::result::Result<Map<String, Json>, Error> {
    let mut out = Map::new();
    match plan {
        Plan::Upsert(key) => {
            let has_key = r.get(key).is_some_and(|v| !v.is_blank());
            if !has_key {
                return Err(local_reject(
                    format!("the upsert key field {key} has no value"),
                    key,
                ));
            }
        }
        Plan::Update | Plan::Delete => {
            let Some(id) = record_id(r) else {
                return Err(local_reject("the record has no Id".into(), "Id"));
            };
            out.insert("Id".into(), Json::String(id));
            if *plan == Plan::Delete {
                return Ok(out);
            }
        }
        Plan::Create => {}
    }
    for (name, value) in &r.fields {
        if name.eq_ignore_ascii_case("Id") || name == "attributes" {
            continue;
        }
        out.insert(name.clone(), to_wire(value));
    }
    Ok(out)
}

fn local_reject(message: String, field: &str) -> Error {
    Error::invalid_input(message).with_context(crate::error::CTX_FIELDS, field)
}

fn outcome(plan: &Plan, index: usize, r: SaveResult) -> WriteOutcome {
    if r.success {
        let id = RecordId::new(r.id.unwrap_or_default());
        return match plan {
            Plan::Delete => WriteOutcome::Deleted(id),
            Plan::Create => WriteOutcome::Created(id),
            _ if r.created == Some(true) => WriteOutcome::Created(id),
            _ => WriteOutcome::Updated(id),
        };
    }
    let error = match r.errors.first() {
        Some(first) => {
            let mut e = api_error(&first.status_code, &first.message, &first.fields, None);
            if r.errors.len() > 1 {
                let all: Vec<String> = r.errors.iter().map(|e| e.status_code.clone()).collect();
                e = e.with_context("all_codes", all.join(","));
            }
            e
        }
        None => Error::new(
            ErrorKind::Permanent,
            "Salesforce reported a failure without errors",
        ),
    };
    WriteOutcome::Rejected {
        index,
        error: error.with_operation("salesforce.write"),
    }
}

/// Writes `batch` to `object`.
pub(crate) async fn write(
    client: &SalesforceClient,
    object: &str,
    batch: WriteBatch,
) -> Result<Vec<WriteOutcome>> {
    check_name(object)?;
    let plan = Plan::of(&batch.op)?;
    let n = batch.records.len();
    let mut outcomes: Vec<Option<WriteOutcome>> = (0..n).map(|_| None).collect();
    let mut ready: Vec<(usize, Map<String, Json>)> = Vec::with_capacity(n);
    for (i, r) in batch.records.iter().enumerate() {
        match prepare(&plan, r) {
            Ok(m) => ready.push((i, m)),
            Err(error) => outcomes[i] = Some(WriteOutcome::Rejected { index: i, error }),
        }
    }
    let cfg = client.config();
    if ready.len() > cfg.bulk_write_threshold {
        bulk_write(client, object, &plan, ready, &mut outcomes).await?;
    } else {
        collections_write(client, object, &plan, ready, &mut outcomes).await?;
    }
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| WriteOutcome::Rejected {
                index: i,
                error: Error::new(
                    ErrorKind::Transient,
                    "Salesforce returned no result for the record",
                )
                .with_operation("salesforce.write"),
            })
        })
        .collect())
}

async fn collections_write(
    client: &SalesforceClient,
    object: &str,
    plan: &Plan,
    ready: Vec<(usize, Map<String, Json>)>,
    outcomes: &mut [Option<WriteOutcome>],
) -> Result<()> {
    let cfg = client.config();
    let chunks: Vec<Vec<(usize, Map<String, Json>)>> = {
        let mut out = Vec::new();
        let mut it = ready.into_iter().peekable();
        while it.peek().is_some() {
            out.push(it.by_ref().take(cfg.collection_size).collect());
        }
        out
    };
    let mut calls = futures_util::stream::iter(chunks.into_iter().map(|chunk| {
        let client = client.clone();
        let plan = plan.clone();
        let object = object.to_owned();
        let skip_unchanged = cfg.skip_unchanged;
        async move {
            let mut unchanged = Vec::new();
            let chunk = match &plan {
                Plan::Upsert(_) | Plan::Update if skip_unchanged => {
                    let key = match &plan {
                        Plan::Upsert(key) => key.as_str(),
                        _ => "Id",
                    };
                    match leave_out_unchanged(&client, &object, key, chunk).await {
                        Ok((rest, same)) => {
                            unchanged = same;
                            rest
                        }
                        Err(e) => return (Vec::new(), unchanged, Err(e)),
                    }
                }
                _ => chunk,
            };
            let indices: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            if indices.is_empty() {
                return (indices, unchanged, Ok(Vec::new()));
            }
            let records: Vec<Map<String, Json>> = chunk.into_iter().map(|(_, m)| m).collect();
            let result = match &plan {
                Plan::Upsert(key) => client.collections_upsert(&object, key, records).await,
                Plan::Create => client.collections_create(&object, records).await,
                Plan::Update => client.collections_update(&object, records).await,
                Plan::Delete => {
                    let ids: Vec<String> = records
                        .iter()
                        .filter_map(|m| m.get("Id").and_then(Json::as_str).map(str::to_owned))
                        .collect();
                    client.collections_delete(&ids).await
                }
            };
            (indices, unchanged, result)
        }
    }))
    .buffered(cfg.write_concurrency);
    while let Some((indices, unchanged, result)) = calls.next().await {
        for (i, id) in unchanged {
            outcomes[i] = Some(WriteOutcome::Unchanged(RecordId::new(id)));
        }
        match result {
            Ok(results) => {
                for (pos, r) in results.into_iter().enumerate() {
                    if let Some(&i) = indices.get(pos) {
                        outcomes[i] = Some(outcome(plan, i, r));
                    }
                }
            }
            // The whole connection is unusable: stop the write.
            Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::QuotaExhausted) => {
                return Err(e);
            }
            Err(e) => {
                for i in indices {
                    outcomes[i] = Some(WriteOutcome::Rejected {
                        index: i,
                        error: e.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The most bytes of URL-encoded SOQL one key lookup sends: Salesforce
/// rejects request URIs over 16,384 bytes (REST API Developer Guide, "Request
/// URI length"), and the path and other parameters need room too.
const MAX_LOOKUP_SOQL_BYTES: usize = 12_000;

fn encoded_len(s: &str) -> usize {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .map(str::len)
        .sum()
}

/// A key value as text, the form external ids compare in.
fn key_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a value about to be sent equals the stored one: numbers by value
/// (`1234.5` = `1234.50`), date-times by instant (`...Z` = `...+0000`),
/// everything else exactly.
fn same_value(sent: &Json, stored: &Json) -> bool {
    let decimal = |v: &Json| match v {
        Json::Number(n) => crm_core::value::parse_decimal(&n.to_string()),
        Json::String(s) => crm_core::value::parse_decimal(s),
        _ => None,
    };
    match (sent, stored) {
        (Json::Null, Json::Null) => true,
        (Json::Bool(a), Json::Bool(b)) => a == b,
        (Json::String(a), Json::String(b)) => {
            a == b || matches!((parse_datetime(a), parse_datetime(b)), (Some(x), Some(y)) if x == y)
        }
        (Json::Number(_), Json::Number(_) | Json::String(_))
        | (Json::String(_), Json::Number(_)) => {
            matches!((decimal(sent), decimal(stored)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// Ids of the records unchanged by a write: `(batch position, Id)`.
type Unchanged = Vec<(usize, String)>;

/// Splits a chunk of upserts by `key` into the records to send and those
/// whose stored values already match (see the module docs).
///
/// # Errors
/// Only [`ErrorKind::Auth`] and [`ErrorKind::QuotaExhausted`]; any other
/// failure of the lookup sends the whole chunk.
async fn leave_out_unchanged(
    client: &SalesforceClient,
    object: &str,
    key: &str,
    chunk: Vec<(usize, Map<String, Json>)>,
) -> Result<(Vec<(usize, Map<String, Json>)>, Unchanged)> {
    // Scalar top-level fields only: a nested relationship reference is
    // never compared, its record is sent.
    let mut fields: Vec<String> = vec!["Id".to_owned(), key.to_owned()];
    let mut keys: Vec<String> = Vec::new();
    for (_, m) in &chunk {
        if let Some(k) = m.get(key).and_then(key_text)
            && !keys.contains(&k)
        {
            keys.push(k);
        }
        for (name, v) in m {
            if !v.is_object()
                && !v.is_array()
                && is_valid_name(name)
                && !name.contains('.')
                && !fields.iter().any(|f| f.eq_ignore_ascii_case(name))
            {
                fields.push(name.clone());
            }
        }
    }
    if keys.is_empty() {
        return Ok((chunk, Vec::new()));
    }
    let stored = match lookup(client, object, key, &fields, keys).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::QuotaExhausted) => {
            return Err(e);
        }
        Err(e) => {
            tracing::warn!(object, error = %e, "unchanged-record lookup failed; writing the whole chunk");
            return Ok((chunk, Vec::new()));
        }
    };
    let mut send = Vec::with_capacity(chunk.len());
    let mut same = Vec::new();
    for (i, m) in chunk {
        let found = m
            .get(key)
            .and_then(key_text)
            .and_then(|k| stored.get(&k))
            .and_then(Option::as_ref);
        let unchanged = found.and_then(|rec| {
            let all_same = m.iter().all(|(name, v)| {
                name == "attributes"
                    || rec
                        .iter()
                        .find(|(f, _)| f.eq_ignore_ascii_case(name))
                        .is_some_and(|(_, old)| same_value(v, old))
            });
            let id = rec.get("Id").and_then(Json::as_str)?;
            all_same.then(|| id.to_owned())
        });
        match unchanged {
            Some(id) => same.push((i, id)),
            None => send.push((i, m)),
        }
    }
    Ok((send, same))
}

/// The stored records holding `keys` in `key`, by key text; `None` for a key
/// more than one record holds (never treated as unchanged).
async fn lookup(
    client: &SalesforceClient,
    object: &str,
    key: &str,
    fields: &[String],
    keys: Vec<String>,
) -> Result<HashMap<String, Option<Map<String, Json>>>> {
    let base = encoded_len(&Select::new(object)?.fields(fields)?.to_soql()) + key.len() + 16;
    let mut groups: Vec<Vec<Literal>> = Vec::new();
    let mut size = base;
    for k in keys {
        let lit = Literal::text(k);
        let add = encoded_len(&lit.to_string()) + 6;
        match groups.last_mut() {
            Some(g) if size + add <= MAX_LOOKUP_SOQL_BYTES => {
                size += add;
                g.push(lit);
            }
            _ => {
                size = base + add;
                groups.push(vec![lit]);
            }
        }
    }
    let mut out: HashMap<String, Option<Map<String, Json>>> = HashMap::new();
    for group in groups {
        let soql = Select::new(object)?
            .fields(fields)?
            .filter(Condition::is_in(key, group)?)
            .to_soql();
        let mut page = client.query_paged(&soql, false, 2000).await?;
        loop {
            for rec in page.records {
                let Some(k) = rec.get(key).and_then(key_text) else {
                    continue;
                };
                out.entry(k)
                    .and_modify(|slot| *slot = None)
                    .or_insert(Some(rec));
            }
            match page.next_records_url.filter(|_| !page.done) {
                Some(next) => page = client.query_more(&next).await?,
                None => break,
            }
        }
    }
    Ok(out)
}

async fn bulk_write(
    client: &SalesforceClient,
    object: &str,
    plan: &Plan,
    ready: Vec<(usize, Map<String, Json>)>,
    outcomes: &mut [Option<WriteOutcome>],
) -> Result<()> {
    // Columns in first-seen order.
    let mut columns: Vec<String> = Vec::new();
    for (_, m) in &ready {
        for k in m.keys() {
            if !columns.iter().any(|c| c == k) {
                columns.push(k.clone());
            }
        }
    }
    let header = {
        let mut h = String::new();
        write_row(&mut h, &columns);
        h
    };
    let max_bytes = client.config().bulk_upload_max_bytes;
    let mut jobs: Vec<IngestChunk> = Vec::new();
    let mut csv = header.clone();
    let mut members = Vec::new();
    let mut by_row: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (i, m) in &ready {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match m.get(c) {
                None => String::new(),
                Some(j) => to_cell(&Value::from_json(j.clone())),
            })
            .collect();
        let mut line = String::new();
        write_row(&mut line, &cells);
        if csv.len() + line.len() > max_bytes && !members.is_empty() {
            jobs.push((
                std::mem::replace(&mut csv, header.clone()),
                std::mem::take(&mut members),
                std::mem::take(&mut by_row),
            ));
        }
        csv.push_str(&line);
        members.push(*i);
        by_row
            .entry(cells.join("\u{1f}"))
            .or_default()
            .push_back(*i);
    }
    if !members.is_empty() {
        jobs.push((csv, members, by_row));
    }
    for (csv, members, mut by_row) in jobs {
        let job = client
            .create_ingest_job(&CreateIngestJob {
                object: object.to_owned(),
                operation: plan.bulk_operation().to_owned(),
                external_id_field_name: match plan {
                    Plan::Upsert(k) => Some(k.clone()),
                    _ => None,
                },
                content_type: "CSV".into(),
                line_ending: "LF".into(),
                column_delimiter: "COMMA".into(),
            })
            .await?;
        if let Err(e) = client.upload_job_data(&job.id, csv).await {
            // Best effort: do not leave an open job behind.
            let _ = client.set_ingest_state(&job.id, JobState::Aborted).await;
            return Err(e);
        }
        client
            .set_ingest_state(&job.id, JobState::UploadComplete)
            .await?;
        tracing::info!(object, job = %job.id, records = members.len(), "Bulk API 2.0 ingest job started");
        client.wait_for_job(&job.id, true).await?;
        for which in [IngestResults::Successful, IngestResults::Failed] {
            let text = client.ingest_results(&job.id, which).await?;
            let mut rows = CsvReader::new(&text);
            let Some(head) = rows.next_record()? else {
                continue;
            };
            for row in rows {
                let row = row?;
                let (meta, data) = row.split_at(row.len().min(2));
                let key = data.join("\u{1f}");
                let Some(i) = by_row.get_mut(&key).and_then(VecDeque::pop_front) else {
                    continue;
                };
                let sf_id = meta.first().cloned().unwrap_or_default();
                outcomes[i] = Some(match which {
                    IngestResults::Successful => {
                        let created = meta.get(1).is_some_and(|c| c == "true");
                        let id = RecordId::new(sf_id);
                        match plan {
                            Plan::Delete => WriteOutcome::Deleted(id),
                            Plan::Create => WriteOutcome::Created(id),
                            _ if created => WriteOutcome::Created(id),
                            _ => WriteOutcome::Updated(id),
                        }
                    }
                    _ => WriteOutcome::Rejected {
                        index: i,
                        error: bulk_error(meta.get(1).map(String::as_str).unwrap_or("")),
                    },
                });
            }
            let _ = head;
        }
        for i in members {
            if outcomes[i].is_none() {
                outcomes[i] = Some(WriteOutcome::Rejected {
                    index: i,
                    error: Error::new(
                        ErrorKind::Transient,
                        format!("Bulk job {} did not process the record", job.id),
                    ),
                });
            }
        }
    }
    Ok(())
}

/// One ingest job's CSV, the batch positions in it, and those positions by row text.
type IngestChunk = (String, Vec<usize>, HashMap<String, VecDeque<usize>>);

/// `sf__Error` of a failed row: `STATUS_CODE:message:fields --`.
fn bulk_error(text: &str) -> Error {
    let trimmed = text.trim().trim_end_matches("--").trim();
    let (code, rest) = trimmed.split_once(':').unwrap_or((trimmed, ""));
    let (message, fields) = match rest.rsplit_once(':') {
        Some((m, f)) if !f.contains(' ') => (m, f),
        _ => (rest, ""),
    };
    let fields: Vec<String> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    api_error(code, message, &fields, None).with_operation("salesforce.write")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_http::classify::CTX_PROVIDER_CODE;

    #[test]
    fn bulk_errors_parse() {
        let e = bulk_error(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
        );
        assert_eq!(
            e.context_value(CTX_PROVIDER_CODE),
            Some("REQUIRED_FIELD_MISSING")
        );
        assert_eq!(e.context_value(crate::error::CTX_FIELDS), Some("LastName"));
        assert_eq!(e.kind(), &ErrorKind::InvalidInput);
    }

    #[test]
    fn wire_values() {
        assert_eq!(
            to_wire(&Value::Decimal("1234.50".parse().unwrap())),
            serde_json::json!(1234.5)
        );
        assert_eq!(to_cell(&Value::Null), "#N/A");
        let r = Record::new().with("LastName", "X");
        assert!(prepare(&Plan::Upsert("Ext__c".into()), &r).is_err());
        assert!(prepare(&Plan::Update, &r).is_err());
        let ok = prepare(&Plan::Update, &r.clone().with_id("003A")).unwrap();
        assert_eq!(ok["Id"], "003A");
    }
}
