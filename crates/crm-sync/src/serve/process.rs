//! Turns queued webhook events into [`Change`]s and writes them.
//!
//! Each change becomes one row of the webhook table, keyed by
//! `record_key` (`provider:object:record id`), written with an upsert: a
//! row already written with the same values is left alone. So an event
//! processed twice (the process stopped between the write and the mark)
//! writes nothing new, and processing is idempotent.
//!
//! An event is marked `processed` only after its rows are written. A
//! failed write leaves it `pending` for the next round (the error is
//! recorded); after [`MAX_ATTEMPTS`] it is marked `failed`. An event that
//! cannot be read (a body no change can be made from) is marked `failed` at
//! once.

use crm_core::{
    Change, Error, FieldSchema, FieldType, ObjectSchema, Record, Result, Sink, Value, WriteBatch,
    WriteOutcome,
};
use crm_pipedrive::FieldCatalog;
use crm_sql::state::{StateStore, WebhookEvent, WebhookStatus};

/// Attempts before an event is marked `failed`.
pub const MAX_ATTEMPTS: i64 = 3;

/// The key column of the webhook table.
pub const KEY_FIELD: &str = "record_key";

/// Provider names as stored with queued events.
pub mod provider {
    /// HubSpot.
    pub const HUBSPOT: &str = "hubspot";
    /// Pipedrive.
    pub const PIPEDRIVE: &str = "pipedrive";
    /// Seed 001's customer endpoint.
    pub const CUSTOMER: &str = "customer";
}

/// The schema of the webhook table: `record_key`, `provider`, `object`,
/// `record_id`, `deleted`, `fields` (JSON of the fields the latest event
/// carried: a HubSpot property change carries one property, a creation
/// none), `changed_at`, `event_id` and `synced_at`.
pub fn webhook_schema(table: &str) -> ObjectSchema {
    ObjectSchema::new(table)
        .field(
            FieldSchema::new(KEY_FIELD, FieldType::Id)
                .required()
                .external_id()
                .max_length(255),
        )
        .field(FieldSchema::new("provider", FieldType::Text).max_length(32))
        .field(FieldSchema::new("object", FieldType::Text).max_length(64))
        .field(FieldSchema::new("record_id", FieldType::Text).max_length(255))
        .field(FieldSchema::new("deleted", FieldType::Bool))
        .field(FieldSchema::new("fields", FieldType::Text))
        .field(FieldSchema::new("changed_at", FieldType::DateTime))
        .field(FieldSchema::new("event_id", FieldType::Text).max_length(64))
        .field(FieldSchema::new("synced_at", FieldType::DateTime))
}

/// One change read from a queued event, with the object it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct EventChange {
    /// The object (`contacts`, `person`, `customer`).
    pub object: String,
    /// The change.
    pub change: Change,
}

/// The changes a queued event stands for.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] when the stored body cannot be read.
pub fn event_changes(event: &WebhookEvent) -> Result<Vec<EventChange>> {
    match event.provider.as_str() {
        provider::HUBSPOT => {
            let e: crm_hubspot::wire::WebhookEvent = serde_json::from_value(event.payload.clone())
                .map_err(|e| Error::invalid_input(format!("a HubSpot event: {e}")))?;
            Ok(crm_hubspot::webhook::event_changes(&e)
                .into_iter()
                .map(|c| EventChange {
                    object: c.object,
                    change: c.change,
                })
                .collect())
        }
        provider::PIPEDRIVE => {
            let body = serde_json::to_vec(&event.payload)
                .map_err(|e| Error::invalid_input(format!("a Pipedrive event: {e}")))?;
            let parsed = crm_pipedrive::webhook::parse_event(&body, &FieldCatalog::default())?;
            Ok(parsed
                .map(|e| EventChange {
                    object: e.object.map_or("unknown", |o| o.as_str()).to_owned(),
                    change: e.change,
                })
                .into_iter()
                .collect())
        }
        provider::CUSTOMER => {
            let e = super::customer::parse(&event.payload).map_err(Error::invalid_input)?;
            Ok(vec![EventChange {
                object: "customer".to_owned(),
                change: e.change(),
            }])
        }
        other => Err(Error::invalid_input(format!(
            "no reader for webhook events of {other:?}"
        ))),
    }
}

fn row(provider: &str, event_id: &str, c: &EventChange) -> Option<Record> {
    let (id, deleted, fields, at) = match &c.change {
        Change::Upsert(r) => {
            let fields: serde_json::Map<String, serde_json::Value> = r
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect();
            (
                r.id.clone()?,
                false,
                serde_json::Value::Object(fields),
                r.updated_at,
            )
        }
        Change::Delete { id, at } => (id.clone(), true, serde_json::Value::Null, *at),
    };
    let mut out = Record::new();
    out.set(
        KEY_FIELD,
        Value::Text(format!("{provider}:{}:{id}", c.object)),
    );
    out.set("provider", Value::Text(provider.to_owned()));
    out.set("object", Value::Text(c.object.clone()));
    out.set("record_id", Value::Text(id.to_string()));
    out.set("deleted", Value::Bool(deleted));
    out.set(
        "fields",
        if fields.is_null() {
            Value::Null
        } else {
            Value::Text(fields.to_string())
        },
    );
    out.set("changed_at", at.map_or(Value::Null, Value::DateTime));
    out.set("event_id", Value::Text(event_id.to_owned()));
    Some(out)
}

/// What one round of [`process_pending`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessReport {
    /// Events marked processed.
    pub processed: usize,
    /// Events whose attempt failed and that stay pending.
    pub retried: usize,
    /// Events marked failed.
    pub failed: usize,
    /// Rows written (created or updated).
    pub written: usize,
}

/// Processes up to `limit` pending events: writes their changes to
/// `table` through `sink` and marks them.
///
/// # Errors
/// Errors of the state store (reading the queue, marking events); a failed
/// write is recorded on its event instead.
pub async fn process_pending(
    store: &StateStore,
    sink: &dyn Sink,
    table: &str,
    limit: u32,
) -> Result<ProcessReport> {
    let mut report = ProcessReport::default();
    for event in store.pending_webhooks(limit).await? {
        let changes = match event_changes(&event) {
            Ok(c) => c,
            Err(e) => {
                store
                    .mark_webhook(&event.id, WebhookStatus::Failed, Some(&e.to_string()))
                    .await?;
                report.failed += 1;
                continue;
            }
        };
        let rows: Vec<Record> = changes
            .iter()
            .filter_map(|c| row(&event.provider, event.id.as_str(), c))
            .collect();
        let outcome = if rows.is_empty() {
            Ok(0)
        } else {
            write_rows(sink, table, rows).await
        };
        match outcome {
            Ok(n) => {
                store
                    .mark_webhook(&event.id, WebhookStatus::Processed, None)
                    .await?;
                report.processed += 1;
                report.written += n;
            }
            Err(e) => {
                let last = event.attempts + 1 >= MAX_ATTEMPTS || !e.is_retryable();
                let status = if last {
                    report.failed += 1;
                    WebhookStatus::Failed
                } else {
                    report.retried += 1;
                    WebhookStatus::Pending
                };
                store
                    .mark_webhook(&event.id, status, Some(&e.to_string()))
                    .await?;
            }
        }
    }
    Ok(report)
}

async fn write_rows(sink: &dyn Sink, table: &str, rows: Vec<Record>) -> Result<usize> {
    let outcomes = sink
        .write(table, WriteBatch::upsert(KEY_FIELD, rows))
        .await?;
    let mut written = 0;
    for o in outcomes {
        match o {
            WriteOutcome::Rejected { error, .. } => return Err(error),
            WriteOutcome::Created(_) | WriteOutcome::Updated(_) => written += 1,
            _ => {}
        }
    }
    Ok(written)
}
