//! Reading: id scans, the activity feeds and Bulk Extract.
//!
//! | object | full read | incremental read |
//! | --- | --- | --- |
//! | leads | Bulk Extract over `createdAt` windows (default) or an id scan, see [`LeadFullRead`] | `activities/leadchanges.json` then `activities/deletedleads.json` from the paging token stored in the cursor; changed leads fetched by id, 300 a call |
//! | companies, opportunities | id scan (`filterType=id`, consecutive ids) | none in Marketo: each run reads everything again |
//! | activities | Bulk Extract over `createdAt` windows | the next windows, from where the last read ended |
//!
//! A full read of leads first takes a paging token for "now minus the
//! lookback", so the incremental read after it starts where the full read
//! began (changes during the full read come again; upserts absorb them).
//!
//! **Bulk Extract.** Each window is at most 31 days (Marketo refuses longer
//! ranges); a longer range is split. Per window: create the job (a failed
//! creation is retried by the client and otherwise fails the read: a window
//! is never skipped), enqueue, poll the status with a doubling wait, then
//! stream the CSV: cells are typed per column, rows are handed out a page at
//! a time, and only one partial CSV record is ever held besides the page
//! (see [`ExportStats`]). The cursor after each page names the window and
//! the rows of it already delivered, so a read resumes mid-window. Before
//! each job the day's export bytes are checked against the quota
//! ([`ExportUsage`], 500 MB by default); when it is used up the read stops
//! with [`ErrorKind::QuotaExhausted`] and the last cursor resumes at the
//! next window on the next run.
//!
//! Cursor format (JSON, version 1): `{"v":1,"mode":"scan"|"feed"|"bulk"|"done",...}`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use crm_core::{
    Change, Cursor, Error, ErrorKind, Page, ReadRequest, Record, RecordId, Result, Source,
};
use crm_http::StreamingResponse;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::client::{ExportKind, MAX_BATCH, MAX_FILTER_VALUES};
use crate::config::LeadFullRead;
use crate::error::MarketoError;
use crate::mapping::{finish_record, record_from_wire, typed_cell};
use crate::wire::{DateRange, ExportFilter, ExportRequest};
use crate::{FieldTypes, Marketo, ObjectKind};

/// Bulk export bytes used per Marketo day (midnight to midnight US Central
/// Standard Time, when Marketo resets the export allowance).
#[derive(Debug)]
pub struct ExportUsage {
    limit: u64,
    state: Mutex<(NaiveDate, u64)>,
}

fn marketo_day(now: DateTime<Utc>) -> NaiveDate {
    (now - TimeDelta::hours(6)).date_naive()
}

impl ExportUsage {
    /// A counter allowing `limit` bytes a day.
    pub fn new(limit: u64) -> Self {
        ExportUsage {
            limit,
            state: Mutex::new((marketo_day(Utc::now()), 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (NaiveDate, u64)> {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let today = marketo_day(Utc::now());
        if g.0 != today {
            *g = (today, 0);
        }
        g
    }

    /// Bytes exported today.
    pub fn used(&self) -> u64 {
        self.lock().1
    }

    /// The daily allowance.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether today's allowance is used up.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }

    /// Counts `bytes` against today.
    pub fn add(&self, bytes: u64) {
        let mut g = self.lock();
        g.1 = g.1.saturating_add(bytes);
    }

    /// Starts a new day (what Marketo's reset at midnight CST does).
    pub fn reset(&self) {
        let mut g = self.lock();
        g.1 = 0;
    }
}

/// Counters of export downloads, for monitoring and memory checks.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Export jobs created.
    pub jobs: AtomicU64,
    /// CSV rows parsed.
    pub rows: AtomicU64,
    /// Bytes downloaded.
    pub bytes: AtomicU64,
    /// The largest unparsed piece of a file held at once (a partial CSV
    /// record plus one network chunk).
    pub peak_pending_bytes: AtomicU64,
    /// The most parsed rows held at once before a page was handed out.
    pub peak_buffered_rows: AtomicU64,
}

impl ExportStats {
    fn peak(cell: &AtomicU64, v: u64) {
        cell.fetch_max(v, Ordering::Relaxed);
    }
}

/// Which date a bulk export filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DateFilter {
    CreatedAt,
    UpdatedAt,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
enum State {
    Scan {
        object: String,
        next_id: u64,
        empty_run: u32,
        #[serde(default)]
        resume: Option<(String, String)>,
    },
    Feed {
        changes: String,
        deletes: String,
        #[serde(default)]
        deletes_phase: bool,
    },
    Bulk {
        object: String,
        filter: DateFilter,
        from: DateTime<Utc>,
        #[serde(default)]
        until: Option<DateTime<Utc>>,
        #[serde(default)]
        rows_done: u64,
        #[serde(default)]
        resume: Option<(String, String)>,
    },
    Done {
        object: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CursorV1 {
    v: u32,
    #[serde(flatten)]
    state: State,
}

fn cursor(state: &State) -> Result<Cursor> {
    Cursor::from_state(&CursorV1 {
        v: 1,
        state: state.clone(),
    })
}

/// A cursor that makes the next read of `object` (`leads` or `activities`)
/// a Bulk Extract of the records updated (leads) or created (activities)
/// since `since`, in windows of at most 31 days.
///
/// # Errors
/// [`MarketoError::UnknownObject`] for other objects.
pub fn bulk_since(object: &str, since: DateTime<Utc>) -> Result<Cursor> {
    let (kind, filter) = match ObjectKind::parse(object) {
        Some(ObjectKind::Leads) => (ObjectKind::Leads, DateFilter::UpdatedAt),
        Some(ObjectKind::Activities) => (ObjectKind::Activities, DateFilter::CreatedAt),
        _ => return Err(MarketoError::UnknownObject(object.to_owned()).into()),
    };
    cursor(&State::Bulk {
        object: kind.path().to_owned(),
        filter,
        from: since,
        until: None,
        rows_done: 0,
        resume: None,
    })
}

/// How far past the local clock the last bulk window reaches (see the
/// bulk read). Records made during that second are read now and again by
/// the next run's change feed, which is harmless for upserts; none is left
/// out.
const STAMP_MARGIN: TimeDelta = TimeDelta::seconds(1);

fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::seconds(1)
    }
}

/// Splits CSV bytes into complete records as they arrive.
#[derive(Debug, Default)]
struct CsvChunker {
    pending: Vec<u8>,
    scanned: usize,
    in_quotes: bool,
    header: Option<Vec<String>>,
}

impl CsvChunker {
    /// Appends a chunk and returns the complete rows now available.
    fn push(&mut self, chunk: &[u8], stats: &ExportStats) -> Result<Vec<Vec<String>>> {
        self.pending.extend_from_slice(chunk);
        ExportStats::peak(&stats.peak_pending_bytes, self.pending.len() as u64);
        let mut boundary = None;
        for (i, b) in self.pending.iter().enumerate().skip(self.scanned) {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => boundary = Some(i + 1),
                _ => {}
            }
        }
        self.scanned = self.pending.len();
        let Some(end) = boundary else {
            return Ok(Vec::new());
        };
        let rows = self.parse(&self.pending[..end])?;
        self.pending.drain(..end);
        // Quote state at the boundary was "outside"; re-scan the rest.
        self.in_quotes = false;
        self.scanned = 0;
        let rest: Vec<u8> = std::mem::take(&mut self.pending);
        for b in &rest {
            if *b == b'"' {
                self.in_quotes = !self.in_quotes;
            }
        }
        self.scanned = rest.len();
        self.pending = rest;
        self.split_header(rows)
    }

    /// The last record (a file without a final newline).
    fn finish(&mut self) -> Result<Vec<Vec<String>>> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            self.pending.clear();
            return Ok(Vec::new());
        }
        let bytes = std::mem::take(&mut self.pending);
        let rows = self.parse(&bytes)?;
        self.split_header(rows)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Vec<Vec<String>>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut rows = Vec::new();
        for rec in reader.records() {
            let rec = rec.map_err(|e| Error::from(MarketoError::ExportFile(e.to_string())))?;
            rows.push(rec.iter().map(str::to_owned).collect());
        }
        Ok(rows)
    }

    fn split_header(&mut self, mut rows: Vec<Vec<String>>) -> Result<Vec<Vec<String>>> {
        if self.header.is_none() && !rows.is_empty() {
            self.header = Some(rows.remove(0));
        }
        Ok(rows)
    }
}

struct Download {
    response: StreamingResponse,
    chunker: CsvChunker,
    skip: u64,
}

/// One read in progress.
struct Reader<'a> {
    m: &'a Marketo,
    object: ObjectKind,
    fields: Vec<String>,
    page_size: usize,
    state: State,
    finished: bool,
    types: Option<FieldTypes>,
    download: Option<Download>,
    buffered: VecDeque<Record>,
    window_done: bool,
    /// How far Marketo's clock was at most ahead of this machine's when the
    /// last job was created, when it was provably ahead.
    server_skew: Option<TimeDelta>,
    /// Whether the end of the range was already moved to Marketo's clock.
    until_checked: bool,
}

impl Source for Marketo {
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let start = self.start_state(&req);
        let object = self.object(&req.object);
        let page_size = req.page_size.unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH);
        match (object, start) {
            (Ok(object), Ok(state)) => {
                let fields = if !req.fields.is_empty() {
                    req.fields.clone()
                } else if object == ObjectKind::Leads {
                    self.config.lead_fields().to_vec()
                } else {
                    Vec::new()
                };
                let reader = Reader {
                    m: self,
                    object,
                    fields,
                    page_size,
                    state,
                    finished: false,
                    types: None,
                    download: None,
                    buffered: VecDeque::new(),
                    window_done: false,
                    server_skew: None,
                    until_checked: false,
                };
                futures_util::stream::unfold(reader, |mut r| async move {
                    if r.finished {
                        return None;
                    }
                    match r.next_page().await {
                        Ok(page) => Some((Ok(page), r)),
                        Err(e) => {
                            r.finished = true;
                            Some((Err(e.with_context("object", r.object.path())), r))
                        }
                    }
                })
                .boxed()
            }
            (Err(e), _) | (_, Err(e)) => futures_util::stream::once(async move { Err(e) }).boxed(),
        }
    }
}

impl Marketo {
    fn start_state(&self, req: &ReadRequest) -> Result<State> {
        let object = self.object(&req.object)?;
        let fresh = || match object {
            ObjectKind::Leads if self.config.lead_full_read() == LeadFullRead::BulkExtract => {
                State::Bulk {
                    object: object.path().to_owned(),
                    filter: DateFilter::CreatedAt,
                    from: self.config.start_date(),
                    until: None,
                    rows_done: 0,
                    resume: None,
                }
            }
            ObjectKind::Activities => State::Bulk {
                object: object.path().to_owned(),
                filter: DateFilter::CreatedAt,
                from: self.config.start_date(),
                until: None,
                rows_done: 0,
                resume: None,
            },
            _ => State::Scan {
                object: object.path().to_owned(),
                next_id: 1,
                empty_run: 0,
                resume: None,
            },
        };
        let Some(c) = &req.since else {
            return Ok(fresh());
        };
        let parsed: CursorV1 = c
            .to_state()
            .map_err(|e| MarketoError::CursorInvalid(e.to_string()))?;
        if parsed.v != 1 {
            return Err(MarketoError::CursorInvalid(format!("version {}", parsed.v)).into());
        }
        let named = match &parsed.state {
            State::Scan { object, .. } | State::Bulk { object, .. } | State::Done { object } => {
                ObjectKind::parse(object)
            }
            State::Feed { .. } => Some(ObjectKind::Leads),
        };
        if named != Some(object) {
            return Err(MarketoError::CursorInvalid(format!(
                "the cursor belongs to another object than {}",
                object.path()
            ))
            .into());
        }
        Ok(match parsed.state {
            State::Done { .. } => fresh(),
            other => other,
        })
    }
}

impl Reader<'_> {
    async fn types(&mut self) -> Result<FieldTypes> {
        if let Some(t) = &self.types {
            return Ok(t.clone());
        }
        let t = self.m.field_types(self.object).await?;
        self.types = Some(t.clone());
        Ok(t)
    }

    /// The positions of both activity feeds now, in Marketo's own order: a
    /// paging token for "now minus the lookback", then each feed paged to
    /// its end (so changes stamped ahead of this machine's clock are not
    /// skipped).
    async fn resume_tokens(&self) -> Result<(String, String)> {
        let since =
            Utc::now() - TimeDelta::from_std(self.m.config.lookback()).unwrap_or(TimeDelta::zero());
        let start = self.m.client.paging_token(since).await?;
        let fields = vec!["id".to_owned()];
        let mut changes = start.clone();
        loop {
            let p = self
                .m
                .client
                .lead_changes(&changes, &fields, MAX_BATCH)
                .await?;
            let next = p.next_page_token.unwrap_or_else(|| changes.clone());
            let more = p.more_result && next != changes;
            changes = next;
            if !more {
                break;
            }
        }
        let mut deletes = start;
        loop {
            let p = self.m.client.deleted_leads(&deletes, MAX_BATCH).await?;
            let next = p.next_page_token.unwrap_or_else(|| deletes.clone());
            let more = p.more_result && next != deletes;
            deletes = next;
            if !more {
                break;
            }
        }
        Ok((changes, deletes))
    }

    async fn next_page(&mut self) -> Result<Page> {
        match self.state.clone() {
            State::Scan {
                object,
                next_id,
                empty_run,
                resume,
            } => self.scan(object, next_id, empty_run, resume).await,
            State::Feed {
                changes,
                deletes,
                deletes_phase,
            } => self.feed(changes, deletes, deletes_phase).await,
            State::Bulk { .. } => self.bulk().await,
            State::Done { .. } => {
                self.finished = true;
                Ok(Page {
                    changes: Vec::new(),
                    cursor: cursor(&self.state)?,
                })
            }
        }
    }

    async fn scan(
        &mut self,
        object: String,
        next_id: u64,
        empty_run: u32,
        resume: Option<(String, String)>,
    ) -> Result<Page> {
        let types = self.types().await?;
        let resume = match (self.object, resume) {
            (ObjectKind::Leads, None) => Some(self.resume_tokens().await?),
            (_, r) => r,
        };
        let batch = self.page_size.min(MAX_FILTER_VALUES) as u64;
        let ids: Vec<String> = (next_id..next_id + batch).map(|i| i.to_string()).collect();
        let page = self
            .m
            .client
            .query(self.object, "id", &ids, &self.fields, self.page_size, None)
            .await?;
        let empty_run = if page.records.is_empty() {
            empty_run + 1
        } else {
            0
        };
        let changes: Vec<Change> = page
            .records
            .into_iter()
            .map(|w| Change::Upsert(record_from_wire(self.object, w, &types)))
            .collect();
        let next = if empty_run >= self.m.config.id_scan_empty_batches() {
            self.finished = true;
            match resume {
                Some((changes, deletes)) if self.object == ObjectKind::Leads => State::Feed {
                    changes,
                    deletes,
                    deletes_phase: false,
                },
                _ => State::Done { object },
            }
        } else {
            State::Scan {
                object,
                next_id: next_id + batch,
                empty_run,
                resume,
            }
        };
        self.state = next;
        Ok(Page {
            changes,
            cursor: cursor(&self.state)?,
        })
    }

    async fn feed(
        &mut self,
        changes: String,
        deletes: String,
        deletes_phase: bool,
    ) -> Result<Page> {
        let batch = self.page_size;
        if !deletes_phase {
            let types = self.types().await?;
            let page = self
                .m
                .client
                .lead_changes(&changes, &self.fields, batch)
                .await?;
            let mut ids: Vec<String> = Vec::new();
            for a in &page.activities {
                let id = a.lead_id.to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            let mut out = Vec::new();
            for chunk in ids.chunks(MAX_FILTER_VALUES) {
                let mut token = None;
                loop {
                    let p = self
                        .m
                        .client
                        .query(
                            ObjectKind::Leads,
                            "id",
                            chunk,
                            &self.fields,
                            MAX_BATCH,
                            token.as_deref(),
                        )
                        .await?;
                    out.extend(
                        p.records.into_iter().map(|w| {
                            Change::Upsert(record_from_wire(ObjectKind::Leads, w, &types))
                        }),
                    );
                    match p.next_page_token {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
            }
            let next = page
                .next_page_token
                .clone()
                .unwrap_or_else(|| changes.clone());
            let more = page.more_result && page.next_page_token.is_some() && next != changes;
            self.state = State::Feed {
                changes: next,
                deletes,
                deletes_phase: !more,
            };
            return Ok(Page {
                changes: out,
                cursor: cursor(&self.state)?,
            });
        }
        let page = self.m.client.deleted_leads(&deletes, batch).await?;
        let out: Vec<Change> = page
            .activities
            .iter()
            .map(|a| Change::Delete {
                id: RecordId::new(a.lead_id.to_string()),
                at: DateTime::parse_from_rfc3339(&a.activity_date)
                    .ok()
                    .map(|d| d.with_timezone(&Utc)),
            })
            .collect();
        let next = page
            .next_page_token
            .clone()
            .unwrap_or_else(|| deletes.clone());
        let more = page.more_result && page.next_page_token.is_some() && next != deletes;
        if !more {
            // The next run reads both feeds from where they ended.
            self.finished = true;
        }
        self.state = State::Feed {
            changes: changes.clone(),
            deletes: next.clone(),
            deletes_phase: more,
        };
        if !more {
            self.state = State::Feed {
                changes,
                deletes: next,
                deletes_phase: false,
            };
        }
        Ok(Page {
            changes: out,
            cursor: cursor(&self.state)?,
        })
    }

    fn export_kind(&self) -> ExportKind {
        if self.object == ObjectKind::Activities {
            ExportKind::Activities
        } else {
            ExportKind::Leads
        }
    }

    /// The cursor after the rows handed out so far.
    fn bulk_cursor(&self, delivered: u64) -> Result<Cursor> {
        match &self.state {
            State::Bulk {
                object,
                filter,
                from,
                until,
                rows_done,
                resume,
            } => cursor(&State::Bulk {
                object: object.clone(),
                filter: *filter,
                from: *from,
                until: *until,
                rows_done: rows_done + delivered,
                resume: resume.clone(),
            }),
            other => cursor(other),
        }
    }

    async fn bulk(&mut self) -> Result<Page> {
        let State::Bulk {
            object,
            filter,
            from,
            until,
            rows_done,
            resume,
        } = self.state.clone()
        else {
            return Err(Error::new(
                ErrorKind::Permanent,
                "bulk read in another state",
            ));
        };
        // Fix the range and the resume token at the start of the read. Job
        // ranges are sent in whole seconds, so the end is rounded up: a
        // record made earlier in the current second is not left out. The
        // end also reaches STAMP_MARGIN past now: records stamped slightly
        // ahead of this machine's clock before the read started (a Marketo
        // clock a few hundred milliseconds ahead, too little for the job's
        // creation time to prove it) would otherwise fall past the last
        // window and the read would end short without an error.
        let until = until.unwrap_or_else(|| ceil_to_second(Utc::now() + STAMP_MARGIN));
        let resume = match (self.object, filter, resume) {
            (ObjectKind::Leads, DateFilter::CreatedAt, None) => Some(self.resume_tokens().await?),
            (_, _, r) => r,
        };
        self.state = State::Bulk {
            object: object.clone(),
            filter,
            from,
            until: Some(until),
            rows_done,
            resume: resume.clone(),
        };
        let window_end =
            (from + TimeDelta::days(i64::from(self.m.config.export_window_days()))).min(until);
        loop {
            if self.buffered.len() >= self.page_size {
                let changes: Vec<Change> = self
                    .buffered
                    .drain(..self.page_size)
                    .map(Change::Upsert)
                    .collect();
                let cursor = self.bulk_cursor(changes.len() as u64)?;
                if let State::Bulk { rows_done, .. } = &mut self.state {
                    *rows_done += changes.len() as u64;
                }
                return Ok(Page { changes, cursor });
            }
            if self.window_done || from >= until {
                self.window_done = false;
                let changes: Vec<Change> = self.buffered.drain(..).map(Change::Upsert).collect();
                // The end was fixed from this machine's clock. When Marketo's
                // clock is ahead, records it already holds can be stamped
                // after that end: the last window would silently leave them
                // out. Once per read, when a job's creation time proves
                // Marketo ahead, the range is extended by that skew.
                let skew = self.server_skew.take();
                let server_end = skew
                    .filter(|_| window_end >= until && !self.until_checked)
                    .map(|skew| ceil_to_second(until + skew));
                if window_end >= until {
                    self.until_checked = true;
                }
                let next = if let Some(end) = server_end {
                    State::Bulk {
                        object,
                        filter,
                        from: until,
                        until: Some(end),
                        rows_done: 0,
                        resume,
                    }
                } else if window_end >= until {
                    self.finished = true;
                    match (self.object, filter, resume) {
                        (ObjectKind::Leads, DateFilter::CreatedAt, Some((changes, deletes))) => {
                            State::Feed {
                                changes,
                                deletes,
                                deletes_phase: false,
                            }
                        }
                        (_, _, resume) => State::Bulk {
                            object,
                            filter,
                            from: until,
                            until: None,
                            rows_done: 0,
                            resume,
                        },
                    }
                } else {
                    State::Bulk {
                        object,
                        filter,
                        from: window_end,
                        until: Some(until),
                        rows_done: 0,
                        resume,
                    }
                };
                self.state = next;
                return Ok(Page {
                    changes,
                    cursor: cursor(&self.state)?,
                });
            }
            if self.download.is_none() {
                self.download = self.start_job(filter, from, window_end, rows_done).await?;
                if self.download.is_none() {
                    self.window_done = true;
                }
                continue;
            }
            self.pump().await?;
        }
    }

    /// Creates, enqueues and waits for the job of one window, then opens
    /// its file; `None` when the job found no rows.
    async fn start_job(
        &mut self,
        filter: DateFilter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        skip: u64,
    ) -> Result<Option<Download>> {
        let usage = &self.m.usage;
        if usage.exhausted() {
            return Err(Error::new(
                ErrorKind::QuotaExhausted,
                format!(
                    "the bulk export allowance of {} bytes a day is used up ({} used): \
                     resume from the last cursor after Marketo's daily reset",
                    usage.limit(),
                    usage.used()
                ),
            )
            .with_operation("export.quota")
            .with_context("window_start", from.to_rfc3339())
            .set_permanent());
        }
        let types = self.types().await?;
        let kind = self.export_kind();
        let range = DateRange {
            start_at: from.to_rfc3339_opts(SecondsFormat::Secs, true),
            end_at: to.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        let mut request_filter = ExportFilter::default();
        match filter {
            DateFilter::CreatedAt => request_filter.created_at = Some(range),
            DateFilter::UpdatedAt => request_filter.updated_at = Some(range),
        }
        let fields = if kind == ExportKind::Leads {
            self.fields.clone()
        } else {
            Vec::new()
        };
        let _ = types;
        let request = ExportRequest {
            fields,
            filter: request_filter,
            format: Some("CSV".into()),
        };
        let client = &self.m.client;
        let sent = Utc::now();
        let job = client.export_create(kind, &request).await?;
        let answered = Utc::now();
        self.m.stats.jobs.fetch_add(1, Ordering::Relaxed);
        client.export_enqueue(kind, &job.export_id).await?;
        let started = tokio::time::Instant::now();
        let mut wait = self.m.config.export_poll_initial;
        let status = loop {
            tokio::time::sleep(wait).await;
            let status = client.export_status(kind, &job.export_id).await?;
            match status.status.as_str() {
                "Completed" => break status,
                "Failed" | "Cancelled" => {
                    return Err(MarketoError::ExportFailed {
                        job: job.export_id.clone(),
                        status: status.status.clone(),
                        message: status.error_msg.clone().unwrap_or_default(),
                    }
                    .into());
                }
                _ => {}
            }
            if started.elapsed() > self.m.config.export_timeout {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!("export job {} did not complete in time", job.export_id),
                )
                .with_operation("export.status"));
            }
            wait = (wait * 2).min(self.m.config.export_poll_max.max(Duration::from_millis(1)));
        };
        // Marketo's time at creation was in [at, at + its resolution); it
        // is provably ahead when `at` is after the answer came back.
        self.server_skew = job
            .created_at
            .as_deref()
            .or(status.created_at.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|at| *at > answered)
            .map(|at| {
                let resolution = if at.timestamp_subsec_nanos() == 0 {
                    TimeDelta::seconds(1)
                } else {
                    TimeDelta::milliseconds(1)
                };
                at + resolution - sent
            });
        if status.number_of_records == Some(0) {
            return Ok(None);
        }
        let response = client.export_file(kind, &job.export_id).await?;
        Ok(Some(Download {
            response,
            chunker: CsvChunker::default(),
            skip,
        }))
    }

    /// Reads one chunk of the open download into typed records.
    async fn pump(&mut self) -> Result<()> {
        let types = self.types().await?;
        let Some(d) = self.download.as_mut() else {
            return Ok(());
        };
        let stats = &self.m.stats;
        let chunk = d.response.chunk().await?;
        let rows = match &chunk {
            Some(bytes) => {
                stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.m.usage.add(bytes.len() as u64);
                d.chunker.push(bytes, stats)?
            }
            None => d.chunker.finish()?,
        };
        let header = d.chunker.header.clone().unwrap_or_default();
        for row in rows {
            stats.rows.fetch_add(1, Ordering::Relaxed);
            if d.skip > 0 {
                d.skip -= 1;
                continue;
            }
            let mut record = Record::new();
            for (name, cell) in header.iter().zip(row.iter()) {
                record.set(name.clone(), typed_cell(cell, types.get(name)));
            }
            self.buffered.push_back(finish_record(self.object, record));
        }
        ExportStats::peak(&stats.peak_buffered_rows, self.buffered.len() as u64);
        if chunk.is_none() {
            self.download = None;
            self.window_done = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_splits_records_across_chunks_and_quotes() {
        let stats = ExportStats::default();
        let mut c = CsvChunker::default();
        let mut rows = Vec::new();
        let file = b"id,note\n1,\"multi\nline, with comma\"\n2,plain\n3,last";
        for piece in file.chunks(5) {
            rows.extend(c.push(piece, &stats).unwrap());
        }
        rows.extend(c.finish().unwrap());
        assert_eq!(
            c.header.as_deref(),
            Some(&["id".to_owned(), "note".to_owned()][..])
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][1], "multi\nline, with comma");
        assert_eq!(rows[2], vec!["3".to_owned(), "last".to_owned()]);
        assert!(stats.peak_pending_bytes.load(Ordering::Relaxed) < file.len() as u64);
    }

    #[test]
    fn cursors_round_trip_and_reject_other_versions() {
        let c = bulk_since("leads", Utc::now()).unwrap();
        let v: CursorV1 = c.to_state().unwrap();
        assert_eq!(v.v, 1);
        assert!(matches!(
            v.state,
            State::Bulk {
                filter: DateFilter::UpdatedAt,
                ..
            }
        ));
        assert!(bulk_since("companies", Utc::now()).is_err());
    }

    #[test]
    fn export_usage_counts_and_resets() {
        let u = ExportUsage::new(10);
        u.add(6);
        assert!(!u.exhausted());
        u.add(6);
        assert!(u.exhausted());
        u.reset();
        assert_eq!(u.used(), 0);
    }
}
