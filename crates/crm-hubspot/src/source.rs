//! Reading HubSpot: full reads by list pagination, incremental reads by
//! search, deletes from the archived listing.
//!
//! The incremental planner ([`UpsertScan`], [`Window`]) is pure logic: which
//! search to send next and which hits are new.
//!
//! # Why keyset slices, not `after` offsets
//!
//! HubSpot's search pages with a numeric offset (`after`) and refuses any
//! page past 10,000 hits (HTTP 400). Offsets also shift when a record
//! already read is modified during the run (it moves to the end of an
//! ascending `lastmodifieddate` order), which silently skips the record
//! that slides into its place. So every page here is a fresh query that
//! starts at the last modification time seen (`GTE t`), sorted ascending,
//! 200 hits: the 10,000 cap is never approached and nothing shifts.
//!
//! Hits at the boundary time that were already emitted are recognised by
//! the *recent* map (record id to the modification time emitted), so ties
//! are neither lost nor repeated. When a whole page shares one time (a bulk
//! edit stamping more records than a page holds), the scan switches to
//! a *tie scan* of that exact time ordered by `hs_object_id`, then goes on
//! strictly after it.
//!
//! # Lookback
//!
//! The search index trails writes (HubSpot says by "a few seconds"; peers
//! saw much more), so a record modified just before the cursor may become
//! searchable only after the run passed it. Each run therefore starts
//! `lookback` before the highest time emitted; the recent map keeps the
//! ids emitted in that span so they are not emitted again. The map is
//! capped ([`RECENT_CAP`]): past the cap the oldest entries are dropped,
//! which can repeat a record on the next run (an idempotent sink absorbs
//! it) but never loses one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_core::{
    Change, Connector, Cursor, Error, ObjectSchema, Page, ReadRequest, Record, RecordId, Result,
    Source, Value,
};
use futures_core::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::HubSpot;
use crate::client::{MAX_BATCH_INPUTS, MAX_LIST_LIMIT};
use crate::error::HubSpotError;
use crate::mapping::{
    ASSOCIATION_PREFIX, association_field, association_target, record_from_object, time_property,
};
use crate::wire::{Filter, FilterGroup, HsObject, Operator, Paging, SearchRequest, Sort};

/// Most ids the recent map of a cursor keeps.
pub const RECENT_CAP: usize = 2_000;

/// What has been emitted for one stream of changes (upserts by
/// modification time, or deletes by archive time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Highest change time emitted, epoch milliseconds.
    pub hwm: i64,
    /// Ids emitted with a change time within the lookback of `hwm`, with
    /// that time.
    #[serde(default)]
    pub recent: BTreeMap<String, i64>,
}

impl Window {
    /// A window whose next run starts at `hwm` (minus the lookback).
    pub fn at(hwm: i64) -> Self {
        Window {
            hwm,
            recent: BTreeMap::new(),
        }
    }

    /// Whether the change `(id, at)` was already emitted.
    pub fn seen(&self, id: &str, at: i64) -> bool {
        self.recent.get(id) == Some(&at)
    }

    /// Records an emitted change.
    pub fn record(&mut self, id: &str, at: i64) {
        self.recent.insert(id.to_owned(), at);
        if at > self.hwm {
            self.hwm = at;
        }
    }

    /// Drops entries older than `hwm - lookback_ms` and, past [`RECENT_CAP`],
    /// the oldest ones.
    pub fn prune(&mut self, lookback_ms: i64) {
        let floor = self.hwm.saturating_sub(lookback_ms);
        self.recent.retain(|_, at| *at >= floor);
        if self.recent.len() > RECENT_CAP {
            let mut times: Vec<i64> = self.recent.values().copied().collect();
            times.sort_unstable();
            let cut = times[self.recent.len() - RECENT_CAP];
            self.recent.retain(|_, at| *at >= cut);
            // Ties at `cut` may still leave a few more than the cap; drop by id.
            while self.recent.len() > RECENT_CAP {
                let Some(first) = self
                    .recent
                    .iter()
                    .find(|(_, at)| **at == cut)
                    .map(|(id, _)| id.clone())
                else {
                    break;
                };
                self.recent.remove(&first);
            }
        }
    }
}

/// Reads a HubSpot date-time property value: ISO-8601 text or epoch
/// milliseconds as text.
pub fn parse_time_ms(value: &str) -> Option<i64> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_millis())
}

/// The modification time of a hit: the `time_property` value, else `updatedAt`.
pub fn change_time(o: &HsObject, time_property: &str) -> Option<i64> {
    o.property(time_property)
        .and_then(parse_time_ms)
        .or_else(|| o.updated_at.map(|t| t.timestamp_millis()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// `time GTE pos` (or `GT` when `exclusive`), ascending by time.
    Range {
        pos: i64,
        exclusive: bool,
    },
    /// `time EQ at AND hs_object_id GT after`, ascending by id.
    Tie {
        at: i64,
        after: Option<u64>,
    },
    Done,
}

/// The scan of one incremental run over the search endpoint.
#[derive(Clone, Debug)]
pub struct UpsertScan {
    window: Window,
    lookback_ms: i64,
    time_property: String,
    page_size: u32,
    mode: Mode,
}

impl UpsertScan {
    /// A run starting `lookback_ms` before `window.hwm`, sorting and
    /// filtering on `time_property` (`lastmodifieddate` for contacts,
    /// `hs_lastmodifieddate` for other objects).
    pub fn new(
        window: Window,
        lookback_ms: i64,
        time_property: impl Into<String>,
        page_size: u32,
    ) -> Self {
        let pos = window.hwm.saturating_sub(lookback_ms).max(0);
        UpsertScan {
            window,
            lookback_ms,
            time_property: time_property.into(),
            page_size: page_size.max(1),
            mode: Mode::Range {
                pos,
                exclusive: false,
            },
        }
    }

    /// The state to store after the hits absorbed so far.
    pub fn window(&self) -> Window {
        let mut w = self.window.clone();
        w.prune(self.lookback_ms);
        w
    }

    /// True when the run has read everything.
    pub fn is_done(&self) -> bool {
        self.mode == Mode::Done
    }

    /// The next search to send, asking for `properties` (the time property
    /// is added), or `None` when the run is over.
    pub fn next_request(&self, properties: &[String]) -> Option<SearchRequest> {
        let mut props: Vec<String> = properties.to_vec();
        for p in [self.time_property.as_str(), "hs_object_id"] {
            if !props.iter().any(|x| x == p) {
                props.push(p.to_owned());
            }
        }
        let (filters, sort) = match &self.mode {
            Mode::Done => return None,
            Mode::Range { pos, exclusive } => (
                vec![Filter::new(
                    self.time_property.clone(),
                    if *exclusive {
                        Operator::Gt
                    } else {
                        Operator::Gte
                    },
                    pos.to_string(),
                )],
                Sort::ascending(self.time_property.clone()),
            ),
            Mode::Tie { at, after } => {
                let mut f = vec![Filter::new(
                    self.time_property.clone(),
                    Operator::Eq,
                    at.to_string(),
                )];
                if let Some(after) = after {
                    f.push(Filter::new("hs_object_id", Operator::Gt, after.to_string()));
                }
                (f, Sort::ascending("hs_object_id"))
            }
        };
        Some(SearchRequest {
            filter_groups: vec![FilterGroup { filters }],
            sorts: vec![sort],
            query: None,
            properties: props,
            limit: Some(self.page_size),
            after: None,
        })
    }

    /// Takes one page of hits (the answer to [`next_request`](Self::next_request))
    /// and returns the ones to emit, in order.
    pub fn absorb(&mut self, hits: Vec<HsObject>) -> Vec<HsObject> {
        let full = hits.len() >= self.page_size as usize;
        let mut out = Vec::new();
        let mut last_time: Option<i64> = None;
        let mut last_id: Option<u64> = None;
        for hit in hits {
            let at = change_time(&hit, &self.time_property).unwrap_or(match &self.mode {
                Mode::Range { pos, .. } => *pos,
                Mode::Tie { at, .. } => *at,
                Mode::Done => 0,
            });
            last_time = Some(last_time.map_or(at, |t: i64| t.max(at)));
            if let Some(n) = hit.id.as_u64() {
                last_id = Some(last_id.map_or(n, |m: u64| m.max(n)));
            }
            if self.window.seen(hit.id.as_str(), at) {
                continue;
            }
            self.window.record(hit.id.as_str(), at);
            out.push(hit);
        }
        self.mode = match (&self.mode, full) {
            (Mode::Done, _) => Mode::Done,
            (Mode::Range { .. }, false) => Mode::Done,
            (Mode::Range { pos, exclusive }, true) => {
                let last = last_time.unwrap_or(*pos);
                if last > *pos {
                    Mode::Range {
                        pos: last,
                        exclusive: false,
                    }
                } else if *exclusive {
                    // Cannot happen with a correct server (GT pos returned
                    // only hits at pos); stop rather than loop.
                    Mode::Done
                } else {
                    Mode::Tie {
                        at: *pos,
                        after: None,
                    }
                }
            }
            (Mode::Tie { at, .. }, false) => Mode::Range {
                pos: *at,
                exclusive: true,
            },
            (Mode::Tie { at, after }, true) => match last_id {
                Some(id) if Some(id) > *after => Mode::Tie {
                    at: *at,
                    after: Some(id),
                },
                // No numeric progress: leave the tie rather than loop.
                _ => Mode::Range {
                    pos: *at,
                    exclusive: true,
                },
            },
        };
        out
    }
}

/// What a HubSpot cursor holds (serialised into [`crm_core::Cursor`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// Format version.
    pub v: u32,
    /// The object read.
    pub object: String,
    /// Where the read is.
    pub phase: Phase,
}

/// The phase of a read a cursor is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A full read in progress: continue the list after `after`; `upserts`
    /// collects what the next incremental run starts from.
    Full {
        /// The list token of the next page.
        after: Option<String>,
        /// Modification times read so far.
        upserts: Window,
        /// Where deletes start.
        deletes: Window,
    },
    /// Between (or within) incremental runs.
    Incremental {
        /// Upserts: by modification time.
        upserts: Window,
        /// Deletes: by archive time.
        deletes: Window,
    },
}

const CURSOR_VERSION: u32 = 1;

impl CursorState {
    fn cursor(&self) -> Result<Cursor> {
        Cursor::from_state(self)
    }
}

enum Step {
    Start,
    Full {
        after: Option<String>,
        upserts: Window,
        deletes: Window,
    },
    Upserts {
        scan: Box<UpsertScan>,
        deletes: Window,
    },
    Deletes {
        upserts: Window,
        deletes: Window,
        start_floor: i64,
        after: Option<String>,
        max_seen: i64,
    },
    Finished,
}

struct ReadState<'a> {
    hs: &'a HubSpot,
    object: String,
    since: Option<CursorState>,
    requested: Vec<String>,
    properties: Vec<String>,
    /// Object types whose associated ids fill `associations.<type>` fields.
    links: Vec<String>,
    schema: Option<ObjectSchema>,
    page_size: u32,
    step: Step,
}

impl HubSpot {
    fn lookback_ms(&self) -> i64 {
        i64::try_from(self.config.search_lookback().as_millis()).unwrap_or(i64::MAX)
    }

    /// The highest modification time currently searchable: one search for
    /// the newest record (the full read's starting point for the next
    /// incremental run, in the server's own clock).
    async fn newest_change(&self, object: &str) -> Result<Option<i64>> {
        let tp = time_property(object);
        let req = SearchRequest {
            filter_groups: Vec::new(),
            sorts: vec![Sort::descending(tp)],
            query: None,
            properties: vec![tp.to_owned()],
            limit: Some(1),
            after: None,
        };
        let res = self.client.objects(object).search(req).send().await?;
        Ok(res.results.first().and_then(|o| change_time(o, tp)))
    }

    async fn list_page(
        &self,
        object: &str,
        after: Option<String>,
        properties: &[String],
        page_size: u32,
        archived: bool,
    ) -> Result<(Vec<HsObject>, Option<String>)> {
        let objects = self.client.objects(object);
        let wide = !archived && !self.client.fits_in_query(properties);
        let query_props = if archived || wide {
            // Long lists go in a batch-read body instead (no 414 URI Too Long).
            vec!["hs_object_id".to_owned()]
        } else {
            properties.to_vec()
        };
        let page = objects
            .list()
            .limit(page_size)
            .after(after)
            .properties(query_props)
            .archived(archived)
            .send()
            .await?;
        let next = Paging::next_after(&page.paging).map(str::to_owned);
        if !wide || page.results.is_empty() {
            return Ok((page.results, next));
        }
        let ids: Vec<String> = page.results.iter().map(|o| o.id.to_string()).collect();
        let read = objects.batch_read(&ids, properties, None).await?;
        // Keep list order; records archived in between drop out.
        let mut by_id: std::collections::HashMap<String, HsObject> = read
            .results
            .into_iter()
            .map(|o| (o.id.to_string(), o))
            .collect();
        let results = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        Ok((results, next))
    }
}

impl ReadState<'_> {
    /// The records of `hits`, with their associations when asked for: one
    /// v4 batch read per 100 records and associated object type.
    async fn to_changes(&self, hits: &[HsObject]) -> Result<Vec<Change>> {
        let mut records: Vec<Record> = hits
            .iter()
            .map(|o| record_from_object(o, self.schema.as_ref()))
            .collect();
        for to in &self.links {
            let assoc = self.hs.client.associations(&self.object, to);
            let field = association_field(to);
            for (chunk, recs) in hits
                .chunks(MAX_BATCH_INPUTS)
                .zip(records.chunks_mut(MAX_BATCH_INPUTS))
            {
                let ids: Vec<String> = chunk.iter().map(|o| o.id.to_string()).collect();
                let mut linked = assoc.read_all(&ids).await?;
                for (id, r) in ids.iter().zip(recs.iter_mut()) {
                    let list = linked.swap_remove(id).unwrap_or_default();
                    r.set(field.clone(), Value::Json(serde_json::json!(list)));
                }
            }
        }
        Ok(records.into_iter().map(Change::Upsert).collect())
    }

    fn state(&self, phase: Phase) -> CursorState {
        CursorState {
            v: CURSOR_VERSION,
            object: self.object.clone(),
            phase,
        }
    }

    /// Runs until a page is ready (or the read ends).
    async fn next_page(&mut self) -> Result<Option<Page>> {
        let lookback = self.hs.lookback_ms();
        loop {
            match std::mem::replace(&mut self.step, Step::Finished) {
                Step::Finished => return Ok(None),
                Step::Start => {
                    // Rediscover the properties each run (schema drift).
                    let schema = self.hs.describe(&self.object).await?;
                    let tp = time_property(&self.object).to_owned();
                    let (links, props): (Vec<&String>, Vec<&String>) = self
                        .requested
                        .iter()
                        .partition(|f| f.starts_with(ASSOCIATION_PREFIX));
                    for f in links {
                        let Some(to) = association_target(f) else {
                            return Err(Error::invalid_input(format!(
                                "`{f}` does not name an object type"
                            )));
                        };
                        if !self.links.contains(&to) {
                            self.links.push(to);
                        }
                    }
                    self.properties = if props.is_empty() {
                        schema.fields.iter().map(|f| f.name.clone()).collect()
                    } else {
                        props.into_iter().cloned().collect()
                    };
                    if !self.properties.contains(&tp) {
                        self.properties.push(tp);
                    }
                    self.schema = Some(schema);
                    self.step = match self.since.take().map(|s| s.phase) {
                        None => {
                            let start = self.hs.newest_change(&self.object).await?.unwrap_or(0);
                            Step::Full {
                                after: None,
                                upserts: Window::at(start),
                                deletes: Window::at(start),
                            }
                        }
                        Some(Phase::Full {
                            after,
                            upserts,
                            deletes,
                        }) => Step::Full {
                            after,
                            upserts,
                            deletes,
                        },
                        Some(Phase::Incremental { upserts, deletes }) => Step::Upserts {
                            scan: Box::new(UpsertScan::new(
                                upserts,
                                lookback,
                                time_property(&self.object),
                                self.hs.config.search_page_size(),
                            )),
                            deletes,
                        },
                    };
                }
                Step::Full {
                    after,
                    mut upserts,
                    deletes,
                } => {
                    let (hits, next) = self
                        .hs
                        .list_page(&self.object, after, &self.properties, self.page_size, false)
                        .await?;
                    let tp = time_property(&self.object);
                    let floor = upserts.hwm.saturating_sub(lookback);
                    for h in &hits {
                        if let Some(at) = change_time(h, tp).filter(|at| *at >= floor) {
                            // Remember without raising the start point: the
                            // next run starts from the newest change seen
                            // before this read began.
                            upserts.recent.insert(h.id.to_string(), at);
                        }
                    }
                    upserts.prune(lookback);
                    let changes = self.to_changes(&hits).await?;
                    let phase = match &next {
                        Some(_) => Phase::Full {
                            after: next.clone(),
                            upserts: upserts.clone(),
                            deletes: deletes.clone(),
                        },
                        None => Phase::Incremental {
                            upserts: upserts.clone(),
                            deletes: deletes.clone(),
                        },
                    };
                    let cursor = self.state(phase).cursor()?;
                    self.step = match next {
                        Some(_) => Step::Full {
                            after: next,
                            upserts,
                            deletes,
                        },
                        None => Step::Finished,
                    };
                    return Ok(Some(Page { changes, cursor }));
                }
                Step::Upserts { mut scan, deletes } => {
                    let Some(req) = scan.next_request(&self.properties) else {
                        let upserts = scan.window();
                        let start_floor = deletes.hwm.saturating_sub(lookback);
                        self.step = Step::Deletes {
                            upserts,
                            max_seen: deletes.hwm,
                            deletes,
                            start_floor,
                            after: None,
                        };
                        continue;
                    };
                    let res = self
                        .hs
                        .client
                        .objects(&self.object)
                        .search(req)
                        .send()
                        .await?;
                    let fresh = scan.absorb(res.results);
                    if fresh.is_empty() {
                        self.step = Step::Upserts { scan, deletes };
                        continue;
                    }
                    let changes = self.to_changes(&fresh).await?;
                    let cursor = self
                        .state(Phase::Incremental {
                            upserts: scan.window(),
                            deletes: deletes.clone(),
                        })
                        .cursor()?;
                    self.step = Step::Upserts { scan, deletes };
                    return Ok(Some(Page { changes, cursor }));
                }
                Step::Deletes {
                    upserts,
                    mut deletes,
                    start_floor,
                    after,
                    mut max_seen,
                } => {
                    let (hits, next) = self
                        .hs
                        .list_page(&self.object, after, &[], MAX_LIST_LIMIT, true)
                        .await?;
                    let mut changes = Vec::new();
                    for h in &hits {
                        let Some(at) = h.archived_at.or(h.updated_at).map(|t| t.timestamp_millis())
                        else {
                            continue;
                        };
                        if at < start_floor || deletes.seen(h.id.as_str(), at) {
                            continue;
                        }
                        // The start point only moves once the whole archived
                        // list was read: it is not in archive-time order.
                        deletes.recent.insert(h.id.to_string(), at);
                        max_seen = max_seen.max(at);
                        changes.push(Change::Delete {
                            id: RecordId::new(h.id.as_str()),
                            at: DateTime::from_timestamp_millis(at),
                        });
                    }
                    if next.is_some() {
                        let cursor = self
                            .state(Phase::Incremental {
                                upserts: upserts.clone(),
                                deletes: deletes.clone(),
                            })
                            .cursor()?;
                        self.step = Step::Deletes {
                            upserts,
                            deletes,
                            start_floor,
                            after: next,
                            max_seen,
                        };
                        if changes.is_empty() {
                            continue;
                        }
                        return Ok(Some(Page { changes, cursor }));
                    }
                    deletes.hwm = deletes.hwm.max(max_seen);
                    deletes.prune(lookback);
                    let cursor = self
                        .state(Phase::Incremental { upserts, deletes })
                        .cursor()?;
                    self.step = Step::Finished;
                    return Ok(Some(Page { changes, cursor }));
                }
            }
        }
    }
}

impl Source for HubSpot {
    /// Reads `req.object`.
    ///
    /// - Without a cursor: a full read by list pagination (`after`, up to
    ///   100 per page). Property lists too long for a URL are fetched with
    ///   a batch read per page (the list then asks only for ids).
    /// - With a cursor: upserts by search on the modification time (see
    ///   the [module docs](self)), then deletes from the archived listing
    ///   (archiving does not change the modification time and archived
    ///   records are not searchable).
    ///
    /// The last page always carries the cursor for the next run.
    ///
    /// # Associations
    /// A field named `associations.<object type>` in `req.fields` (e.g.
    /// `associations.companies` on a contact read, `associations.contacts`
    /// on a deal read) fills that field of every record with a JSON array
    /// of the associated records' ids, read with the v4 batch read (one
    /// call per page of up to 100 records and associated type, never one
    /// per record). Associations are read only when asked for; the other
    /// requested names are properties (all of them when none is named).
    /// HubSpot does not document that linking or unlinking records changes
    /// their modification time, so an incremental read reports links as of
    /// the records it returns; a full read reports every record's links.
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let setup = (|| -> Result<ReadState<'a>> {
            let object = self.object_type(&req.object)?;
            let since = match &req.since {
                None => None,
                Some(c) => {
                    let st: CursorState = c
                        .to_state()
                        .map_err(|e| Error::from(HubSpotError::CursorInvalid(e.to_string())))?;
                    if st.v != CURSOR_VERSION || st.object != object {
                        return Err(HubSpotError::CursorInvalid(format!(
                            "cursor of `{}` v{} given to a read of `{object}`",
                            st.object, st.v
                        ))
                        .into());
                    }
                    Some(st)
                }
            };
            let page_size = req
                .page_size
                .map_or(self.config.list_page_size(), |n| {
                    u32::try_from(n).unwrap_or(MAX_LIST_LIMIT)
                })
                .clamp(1, MAX_LIST_LIMIT);
            Ok(ReadState {
                hs: self,
                object,
                since,
                requested: req.fields.clone(),
                properties: Vec::new(),
                links: Vec::new(),
                schema: None,
                page_size,
                step: Step::Start,
            })
        })();
        match setup {
            Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
            Ok(state) => Box::pin(futures_util::stream::try_unfold(
                state,
                |mut st| async move {
                    let page = st.next_page().await?;
                    Ok(page.map(|p| (p, st)))
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ObjectId, Properties};

    /// An in-memory search with HubSpot's semantics for the filters the
    /// planner sends, and an index that lags writes by `lag_ms`.
    struct Index {
        /// (id, modified ms, indexed-from ms)
        rows: Vec<(u64, i64, i64)>,
    }

    impl Index {
        fn search(&self, req: &SearchRequest, now: i64) -> Vec<HsObject> {
            let filters = &req.filter_groups[0].filters;
            let mut hits: Vec<&(u64, i64, i64)> = self
                .rows
                .iter()
                .filter(|(_, _, visible)| *visible <= now)
                .filter(|(id, lm, _)| {
                    filters.iter().all(|f| {
                        let v: i64 = f.value.as_deref().unwrap().parse().unwrap();
                        let x = if f.property_name == "hs_object_id" {
                            *id as i64
                        } else {
                            *lm
                        };
                        match f.operator {
                            Operator::Gte => x >= v,
                            Operator::Gt => x > v,
                            Operator::Eq => x == v,
                            _ => unreachable!(),
                        }
                    })
                })
                .collect();
            let (sort, _) = req.sorts[0].parts();
            if sort == "hs_object_id" {
                hits.sort_by_key(|(id, _, _)| *id);
            } else {
                // Ties in arbitrary (reverse id) order, as an index may do.
                hits.sort_by_key(|(id, lm, _)| (*lm, std::cmp::Reverse(*id)));
            }
            hits.into_iter()
                .take(req.limit.unwrap() as usize)
                .map(|(id, lm, _)| {
                    let mut p = Properties::new();
                    p.insert("lastmodifieddate".into(), Some(lm.to_string()));
                    HsObject {
                        id: ObjectId::new(id.to_string()),
                        properties: p,
                        created_at: None,
                        updated_at: None,
                        archived: false,
                        archived_at: None,
                        associations: None,
                        object_write_trace_id: None,
                        new: None,
                    }
                })
                .collect()
        }
    }

    fn run(index: &Index, window: Window, lookback: i64, now: i64) -> (Vec<u64>, Window, usize) {
        let mut scan = UpsertScan::new(window, lookback, "lastmodifieddate", 200);
        let mut ids = Vec::new();
        let mut calls = 0;
        while let Some(req) = scan.next_request(&[]) {
            calls += 1;
            assert!(calls < 10_000, "scan does not end");
            let hits = index.search(&req, now);
            for h in scan.absorb(hits) {
                ids.push(h.id.as_u64().unwrap());
            }
        }
        (ids, scan.window(), calls)
    }

    #[test]
    fn reads_25k_distinct_and_tied_changes_without_offsets() {
        // 10,000 distinct times, then 15,000 records sharing 3 times.
        let mut rows = Vec::new();
        for i in 0..10_000u64 {
            rows.push((i + 1, 1_000 + i as i64, 0));
        }
        for i in 0..15_000u64 {
            rows.push((20_000 + i, 50_000 + (i % 3) as i64, 0));
        }
        let index = Index { rows };
        let (ids, w, _) = run(&index, Window::at(0), 0, 100_000);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids.len(), 25_000, "no repeats");
        assert_eq!(sorted.len(), 25_000, "no losses");
        assert_eq!(w.hwm, 50_002);
        assert!(w.recent.len() <= RECENT_CAP);
    }

    #[test]
    fn idle_runs_emit_nothing() {
        let index = Index {
            rows: (1..=50).map(|i| (i, 10_000 + i as i64, 0)).collect(),
        };
        let (first, w, _) = run(&index, Window::at(0), 300_000, 1_000_000);
        assert_eq!(first.len(), 50);
        let (second, w2, _) = run(&index, w, 300_000, 1_000_000);
        assert!(second.is_empty());
        let (third, _, _) = run(&index, w2, 300_000, 1_000_000);
        assert!(third.is_empty());
    }

    #[test]
    fn lookback_catches_records_the_index_showed_late() {
        // Record 7 was modified at 100_000 but only searchable 90 s later.
        let mut rows: Vec<(u64, i64, i64)> = (1..=5).map(|i| (i, 99_000 + i as i64, 0)).collect();
        rows.push((7, 100_000, 190_000));
        rows.push((8, 150_000, 0));
        let index = Index { rows };
        let (first, w, _) = run(&index, Window::at(0), 300_000, 160_000);
        assert!(!first.contains(&7));
        assert_eq!(w.hwm, 150_000);
        let (second, _, _) = run(&index, w, 300_000, 200_000);
        assert_eq!(second, vec![7], "found by the lookback, nothing repeated");
    }

    #[test]
    fn a_record_modified_again_is_emitted_again() {
        let mut index = Index {
            rows: (1..=3).map(|i| (i, 1_000 + i as i64, 0)).collect(),
        };
        let (_, w, _) = run(&index, Window::at(0), 300_000, 10_000);
        index.rows[0].1 = 5_000;
        let (again, _, _) = run(&index, w, 300_000, 10_000);
        assert_eq!(again, vec![1]);
    }

    #[test]
    fn recent_map_is_capped() {
        let mut w = Window::at(0);
        for i in 0..5_000 {
            w.record(&i.to_string(), 1_000 + i);
        }
        w.prune(1_000_000);
        assert_eq!(w.recent.len(), RECENT_CAP);
        assert!(w.recent.values().all(|at| *at >= 1_000 + 3_000));
    }

    #[test]
    fn parses_both_time_forms() {
        assert_eq!(parse_time_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
