//! The [`Source`] side: full and incremental reads ordered by
//! `(SystemModstamp, Id)`, deletes through `queryAll`, and Bulk API 2.0
//! query jobs for large reads.
//!
//! # Reads
//! Every read describes the object first (so a field deleted since the last
//! run is never selected again), then runs one SOQL query:
//!
//! - full read (no cursor): `query` of every live record,
//!   `ORDER BY SystemModstamp, Id`;
//! - incremental read: `queryAll` (deleted records included, `IsDeleted`
//!   selected) `WHERE SystemModstamp >= cursor - lookback ORDER BY
//!   SystemModstamp, Id`; with no lookback the keyset condition
//!   `(SystemModstamp > t OR (SystemModstamp = t AND Id > id))`.
//!
//! Pages follow `nextRecordsUrl`. A deleted record becomes
//! [`Change::Delete`]. When the first page says the query matches more than
//! [`SalesforceConfig::bulk_read_threshold`](crate::SalesforceConfig::bulk_read_threshold)
//! records, the same query runs as a Bulk API 2.0 query job instead.
//!
//! # Cursor
//! `{"v": 1, "stamp", "id", "seen": [{"id", "at"}]}`: the last
//! `(SystemModstamp, Id)` read, and the records read within the lookback
//! window before it. Records sharing one stamp never split badly over a page
//! cut (the `Id` breaks ties), rows committed late with an earlier stamp are
//! caught by the lookback, and `seen` keeps the lookback from repeating rows.
//! An incremental read from a cursor older than the recycle bin window fails
//! with [`crate::error::CTX_FULL_RESYNC`] set: deletes may have been purged.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use crm_core::{Change, Cursor, Error, ErrorKind, Page, Record, RecordId, Result, Value};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::client::SalesforceClient;
use crate::csv::CsvReader;
use crate::error::{ErrorCode, SalesforceError};
use crate::soql::{Condition, SYSTEM_MODSTAMP, Select, check_name};
use crate::wire::{DescribeSObject, JobId};

/// The most `(Id, SystemModstamp)` pairs a cursor remembers for the lookback.
const MAX_SEEN: usize = 50_000;

/// One record read within the lookback window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seen {
    /// The record id.
    pub id: String,
    /// Its `SystemModstamp`.
    pub at: DateTime<Utc>,
}

/// The state inside a Salesforce [`Cursor`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// Format version (1).
    pub v: u8,
    /// The last `SystemModstamp` read.
    pub stamp: DateTime<Utc>,
    /// The last `Id` read at that stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Records read within the lookback window before `stamp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Seen>,
    /// When the last read that went to the end started: every change
    /// (deletes included) up to then has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
}

impl CursorState {
    /// A cursor that starts an incremental read at `stamp` (inclusive).
    pub fn at(stamp: DateTime<Utc>) -> CursorState {
        CursorState {
            v: 1,
            stamp,
            id: None,
            seen: Vec::new(),
            read_at: None,
        }
    }

    /// Up to when every change is known to have been read.
    pub fn complete_to(&self) -> DateTime<Utc> {
        self.read_at.map_or(self.stamp, |r| r.max(self.stamp))
    }

    /// As a [`Cursor`].
    ///
    /// # Errors
    /// Never in practice (the state is plain JSON).
    pub fn to_cursor(&self) -> Result<Cursor> {
        Cursor::from_state(self)
    }
}

/// Parses a Salesforce date-time (`2024-03-01T12:00:00.000+0000`, or RFC 3339).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Converts one field value of a query result (JSON) or a Bulk CSV cell to
/// a [`Value`] of the field's described type.
pub(crate) fn convert(describe: Option<&DescribeSObject>, field: &str, raw: Json) -> Value {
    let ftype = describe
        .and_then(|d| d.field(field))
        .map(|f| f.field_type.as_str())
        .unwrap_or("");
    match raw {
        Json::Null => Value::Null,
        Json::String(s) => text_value(ftype, s),
        Json::Number(n) => match ftype {
            "int" | "long" => n
                .as_i64()
                .map_or_else(|| decimal_of(&n.to_string()), Value::Int),
            _ => {
                if let Some(i) = n.as_i64().filter(|_| ftype.is_empty()) {
                    Value::Int(i)
                } else {
                    decimal_of(&n.to_string())
                }
            }
        },
        other => Value::from_json(other),
    }
}

fn decimal_of(s: &str) -> Value {
    crm_core::value::parse_decimal(s).map_or_else(|| Value::Text(s.to_owned()), Value::Decimal)
}

/// A CSV cell or JSON string as a value of type `ftype`.
fn text_value(ftype: &str, s: String) -> Value {
    match ftype {
        "datetime" => parse_datetime(&s).map_or(Value::Text(s), Value::DateTime),
        "date" => match NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            Ok(d) => Value::Date(d),
            Err(_) => Value::Text(s),
        },
        "boolean" => match s.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Text(s),
        },
        "int" | "long" => s.parse::<i64>().map_or(Value::Text(s), Value::Int),
        "double" | "currency" | "percent" => {
            s.parse::<Decimal>().map_or(Value::Text(s), Value::Decimal)
        }
        _ => Value::Text(s),
    }
}

/// Flattens a query result record into `Record` fields: nested relationship
/// objects become dotted names (`Account.Name`).
fn flatten(prefix: &str, map: Map<String, Json>, out: &mut Vec<(String, Json)>) {
    for (k, v) in map {
        if k == "attributes" {
            continue;
        }
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Json::Object(inner) if inner.contains_key("attributes") => flatten(&name, inner, out),
            other => out.push((name, other)),
        }
    }
}

/// What one query row means.
struct Row {
    change: Change,
    id: String,
    stamp: Option<DateTime<Utc>>,
}

struct Plan {
    object: String,
    describe: DescribeSObject,
    soql: String,
    all: bool,
    keep_is_deleted: bool,
}

enum Stage {
    Start,
    Rest {
        next: Option<String>,
        first: Option<crate::wire::QueryResponse>,
    },
    Bulk {
        job: JobId,
        locator: Option<String>,
        started: bool,
    },
    Done,
}

/// Reads one object; drives the page stream.
struct Reader {
    client: SalesforceClient,
    object: String,
    fields: Vec<String>,
    since: Option<CursorState>,
    /// Records asked for per page (`batchSize`).
    page_size: u32,
    stage: Stage,
    plan: Option<Plan>,
    cursor: Option<CursorState>,
    seen: HashSet<(String, DateTime<Utc>)>,
    bulk_best: Option<(DateTime<Utc>, String)>,
    started: DateTime<Utc>,
}

impl Reader {
    async fn plan(&self) -> Result<Plan> {
        let c = &self.client;
        let describe = c.describe(&self.object).await?;
        let incremental = self.since.is_some();
        let mut fields: Vec<String> = if self.fields.is_empty() {
            describe
                .readable_fields()
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            let mut kept = Vec::new();
            for f in &self.fields {
                check_name(f)?;
                let head = f.split('.').next().unwrap_or(f);
                if f.contains('.') || describe.field(head).is_some() {
                    kept.push(f.clone());
                } else {
                    tracing::warn!(object = %self.object, field = %f, "field no longer exists; not read");
                }
            }
            kept
        };
        let mut keep_is_deleted = self.fields.is_empty()
            || self
                .fields
                .iter()
                .any(|f| f.eq_ignore_ascii_case("IsDeleted"));
        for required in ["Id", SYSTEM_MODSTAMP] {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(required)) {
                fields.insert(0, required.to_owned());
            }
        }
        if incremental && !fields.iter().any(|f| f.eq_ignore_ascii_case("IsDeleted")) {
            fields.push("IsDeleted".to_owned());
        } else if !incremental {
            keep_is_deleted = true;
        }
        let mut select = Select::new(&self.object)?.fields(&fields)?;
        if let Some(since) = &self.since {
            let cfg = c.config();
            let window = chrono::Duration::from_std(cfg.recycle_bin_window)
                .unwrap_or(chrono::Duration::days(15));
            if since.complete_to() < Utc::now() - window {
                return Err(SalesforceError::CursorTooOld {
                    cursor: crate::soql::datetime_literal(since.complete_to()),
                    window_days: window.num_days(),
                }
                .into());
            }
            let lookback = chrono::Duration::from_std(cfg.lookback).unwrap_or_default();
            select = if lookback.is_zero() {
                select.filter(Condition::after(since.stamp, since.id.as_deref()))
            } else {
                select.filter(Condition::after(since.stamp - lookback, None))
            };
        }
        let select = select.order_by([SYSTEM_MODSTAMP, "Id"])?;
        Ok(Plan {
            object: self.object.clone(),
            describe,
            soql: select.to_soql(),
            all: incremental,
            keep_is_deleted,
        })
    }

    fn row(&self, plan: &Plan, fields: Vec<(String, Json)>) -> Option<Row> {
        let mut record = Record::new();
        let mut id = None;
        let mut stamp = None;
        let mut deleted = false;
        for (name, raw) in fields {
            let value = convert(Some(&plan.describe), &name, raw);
            if name.eq_ignore_ascii_case("Id") {
                id = value.as_str().map(str::to_owned);
            } else if name.eq_ignore_ascii_case(SYSTEM_MODSTAMP) {
                stamp = value.as_datetime();
            } else if name.eq_ignore_ascii_case("IsDeleted") {
                deleted = value.as_bool().unwrap_or(false);
                if !plan.keep_is_deleted {
                    continue;
                }
            }
            record.set(name, value);
        }
        let id = id?;
        let change = if deleted {
            Change::Delete {
                id: RecordId::new(id.clone()),
                at: stamp,
            }
        } else {
            record.id = Some(RecordId::new(id.clone()));
            record.updated_at = stamp;
            Change::Upsert(record)
        };
        Some(Row { change, id, stamp })
    }

    /// Filters rows already read (lookback) and advances the cursor; on the
    /// `last` page of the read the cursor records that the read completed.
    fn page(&mut self, rows: Vec<Row>, advance: bool, last: bool) -> Result<Page> {
        let lookback =
            chrono::Duration::from_std(self.client.config().lookback).unwrap_or_default();
        let mut changes = Vec::with_capacity(rows.len());
        let mut cursor = self.cursor.clone().or_else(|| self.since.clone());
        for row in rows {
            let Some(stamp) = row.stamp else {
                changes.push(row.change);
                continue;
            };
            if !self.seen.insert((row.id.clone(), stamp)) {
                continue;
            }
            changes.push(row.change);
            if advance {
                let newer = cursor
                    .as_ref()
                    .is_none_or(|c| (stamp, Some(&row.id)) > (c.stamp, c.id.as_ref()));
                if newer {
                    let mut c = cursor.take().unwrap_or_else(|| CursorState::at(stamp));
                    c.stamp = stamp;
                    c.id = Some(row.id.clone());
                    cursor = Some(c);
                }
            } else {
                let key = (stamp, row.id.clone());
                if self.bulk_best.as_ref().is_none_or(|b| key > *b) {
                    self.bulk_best = Some(key);
                }
            }
        }
        let mut cursor = cursor.unwrap_or_else(|| CursorState::at(self.started));
        if last {
            cursor.read_at = Some(self.started);
        }
        if !lookback.is_zero() {
            let floor = cursor.stamp - lookback;
            let mut seen: Vec<Seen> = self
                .seen
                .iter()
                .filter(|(_, at)| *at >= floor)
                .map(|(id, at)| Seen {
                    id: id.clone(),
                    at: *at,
                })
                .collect();
            seen.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            if seen.len() > MAX_SEEN {
                seen.drain(..seen.len() - MAX_SEEN);
            }
            cursor.seen = seen;
        }
        self.cursor = Some(cursor.clone());
        Ok(Page {
            changes,
            cursor: cursor.to_cursor()?,
        })
    }

    async fn next_page(&mut self) -> Result<Option<Page>> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Done) {
                Stage::Done => return Ok(None),
                Stage::Start => {
                    let plan = self.plan().await?;
                    let first = match self
                        .client
                        .query_paged(&plan.soql, plan.all, self.page_size)
                        .await
                    {
                        Err(e)
                            if e.context_value(crm_http::classify::CTX_PROVIDER_CODE)
                                == Some(ErrorCode::InvalidField.as_str()) =>
                        {
                            // A field vanished between describe and query: describe again.
                            let plan2 = self.plan().await?;
                            let r = self
                                .client
                                .query_paged(&plan2.soql, plan2.all, self.page_size)
                                .await?;
                            self.plan = Some(plan2);
                            r
                        }
                        other => {
                            let r = other?;
                            self.plan = Some(plan);
                            r
                        }
                    };
                    let threshold = self.client.config().bulk_read_threshold;
                    if first.total_size > threshold && !first.done {
                        let plan = self.plan.as_ref().ok_or_else(no_plan)?;
                        let job = self.client.create_query_job(&plan.soql, plan.all).await?;
                        tracing::info!(object = %plan.object, total = first.total_size, job = %job.id, "large read: using a Bulk API 2.0 query job");
                        self.stage = Stage::Bulk {
                            job: job.id,
                            locator: None,
                            started: false,
                        };
                    } else {
                        self.stage = Stage::Rest {
                            next: None,
                            first: Some(first),
                        };
                    }
                }
                Stage::Rest { next, first } => {
                    let resp = match first {
                        Some(r) => r,
                        None => match next {
                            Some(url) => self.client.query_more(&url).await?,
                            None => return Ok(None),
                        },
                    };
                    let plan = self.plan.take().ok_or_else(no_plan)?;
                    let rows: Vec<Row> = resp
                        .records
                        .into_iter()
                        .filter_map(|r| {
                            let mut flat = Vec::new();
                            flatten("", r, &mut flat);
                            self.row(&plan, flat)
                        })
                        .collect();
                    self.plan = Some(plan);
                    // Stop when there is no next page, whatever `done` says.
                    let next = resp.next_records_url.filter(|_| !resp.done);
                    let last = next.is_none();
                    self.stage = match next {
                        Some(url) => Stage::Rest {
                            next: Some(url),
                            first: None,
                        },
                        None => Stage::Done,
                    };
                    return self.page(rows, true, last).map(Some);
                }
                Stage::Bulk {
                    job,
                    locator,
                    started,
                } => {
                    if !started {
                        self.client.wait_for_job(&job, false).await?;
                    } else if locator.is_none() {
                        return self.finish_bulk().map(Some);
                    }
                    let max = self.client.config().bulk_results_page;
                    let (csv, next) = self
                        .client
                        .query_job_results(&job, locator.as_deref(), max)
                        .await?;
                    let plan = self.plan.take().ok_or_else(no_plan)?;
                    let rows = bulk_rows(self, &plan, &csv);
                    self.plan = Some(plan);
                    let rows = rows?;
                    let last = next.is_none();
                    self.stage = Stage::Bulk {
                        job,
                        locator: next,
                        started: true,
                    };
                    let page = self.page(rows, false, false)?;
                    if last {
                        self.stage = Stage::Done;
                        let end = self.finish_bulk()?;
                        return Ok(Some(Page {
                            changes: page.changes,
                            cursor: end.cursor,
                        }));
                    }
                    return Ok(Some(page));
                }
            }
        }
    }

    /// After the last Bulk page: the cursor moves to the greatest
    /// `(SystemModstamp, Id)` read (results need not come in order, so
    /// earlier pages keep the starting cursor).
    fn finish_bulk(&mut self) -> Result<Page> {
        if let Some((stamp, id)) = self.bulk_best.take() {
            let mut c = self
                .cursor
                .clone()
                .unwrap_or_else(|| CursorState::at(stamp));
            c.stamp = stamp;
            c.id = Some(id);
            self.cursor = Some(c);
        }
        self.page(Vec::new(), true, true)
    }
}

fn bulk_rows(reader: &Reader, plan: &Plan, csv: &str) -> Result<Vec<Row>> {
    let mut rows = CsvReader::new(csv);
    let Some(header) = rows.next_record()? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in rows {
        let row = row?;
        let fields = header
            .iter()
            .zip(row)
            .map(|(h, v)| {
                let v = if v.is_empty() {
                    Json::Null
                } else {
                    Json::String(v)
                };
                (h.clone(), v)
            })
            .collect();
        if let Some(r) = reader.row(plan, fields) {
            out.push(r);
        }
    }
    Ok(out)
}

fn no_plan() -> Error {
    Error::new(ErrorKind::Permanent, "read state lost its query plan")
}

/// The page stream of a read of `object`.
pub(crate) fn read_stream<'a>(
    client: &SalesforceClient,
    req: crm_core::ReadRequest,
) -> BoxStream<'a, Result<Page>> {
    let since = match req.since.as_ref().map(Cursor::to_state::<CursorState>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return futures_util::stream::iter([Err(e)]).boxed(),
    };
    let seen = since
        .as_ref()
        .map(|s| s.seen.iter().map(|x| (x.id.clone(), x.at)).collect())
        .unwrap_or_default();
    // The request's page size wins over the configured one; Salesforce takes 200..=2,000.
    let page_size = req
        .page_size
        .map_or(client.config().page_size, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        })
        .clamp(200, 2000);
    let reader = Reader {
        client: client.clone(),
        object: req.object,
        fields: req.fields,
        page_size,
        cursor: since.clone(),
        since,
        stage: Stage::Start,
        plan: None,
        seen,
        bulk_best: None,
        started: Utc::now(),
    };
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next_page().await {
            Ok(Some(page)) => Some((Ok(page), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(e.with_operation("salesforce.read")), None)),
        }
    })
    .boxed()
}

/// The Salesforce connector: [`Connector`](crm_core::Connector),
/// [`Source`](crm_core::Source) and [`Sink`](crm_core::Sink) of one org.
///
/// ```no_run
/// use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
/// use crm_core::{ReadRequest, Source};
/// use futures_util::StreamExt;
///
/// # async fn demo() -> crm_core::Result<()> {
/// let config = SalesforceConfig::builder(
///     LoginHost::Production,
///     Credentials::RefreshToken {
///         client_id: "3MVG9...".into(),
///         client_secret: None,
///         refresh_token: secrecy::SecretString::from("5Aep...".to_owned()),
///     },
/// )
/// .build()?;
/// let sf = SalesforceConnector::new(config)?;
/// let mut pages = sf.read(ReadRequest::full("Contact").fields(["FirstName", "LastName", "Email"]));
/// while let Some(page) = pages.next().await {
///     let page = page?;
///     println!("{} changes; cursor {:?}", page.changes.len(), page.cursor);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SalesforceConnector {
    client: SalesforceClient,
}

impl SalesforceConnector {
    /// A connector for `config`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for unusable credentials or certificates.
    pub fn new(config: crate::SalesforceConfig) -> Result<SalesforceConnector> {
        Ok(SalesforceConnector {
            client: SalesforceClient::new(config)?,
        })
    }

    /// The typed client underneath.
    pub fn client(&self) -> &SalesforceClient {
        &self.client
    }
}

#[async_trait::async_trait]
impl crm_core::Connector for SalesforceConnector {
    fn kind(&self) -> &'static str {
        "salesforce"
    }

    fn capabilities(&self) -> crm_core::Capabilities {
        crm_core::Capabilities::none()
            .incremental()
            .deletes()
            .upsert()
            .bulk()
            .describe()
    }

    async fn check(&self) -> Result<()> {
        self.client.limits().await.map(|_| ())
    }

    async fn describe(&self, object: &str) -> Result<crm_core::ObjectSchema> {
        Ok(self.client.describe(object).await?.to_schema())
    }
}

impl crm_core::Source for SalesforceConnector {
    fn read<'a>(&'a self, req: crm_core::ReadRequest) -> BoxStream<'a, Result<Page>> {
        read_stream(&self.client, req)
    }
}

#[async_trait::async_trait]
impl crm_core::Sink for SalesforceConnector {
    fn max_batch(&self, _object: &str) -> usize {
        self.client.config().max_write_batch
    }

    async fn write(
        &self,
        object: &str,
        batch: crm_core::WriteBatch,
    ) -> Result<Vec<crm_core::WriteOutcome>> {
        if batch.len() > self.max_batch(object) {
            return Err(Error::invalid_input(format!(
                "batch of {} records exceeds max_batch {}",
                batch.len(),
                self.max_batch(object)
            )));
        }
        crate::sink::write(&self.client, object, batch).await
    }
}
