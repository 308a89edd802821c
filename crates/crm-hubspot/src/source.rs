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
//! the window's digests of (record id, modification time), so ties are
//! neither lost nor repeated. When a whole page shares one time (a bulk
//! edit stamping more records than a page holds), the scan switches to
//! a *tie scan* of that exact time ordered by `hs_object_id`, then goes on
//! strictly after it.
//!
//! # Lookback
//!
//! The search index trails writes (HubSpot says by "a few seconds"; peers
//! saw much more), so a record modified just before the cursor may become
//! searchable only after the run passed it. Each run therefore starts
//! `lookback` before the highest time emitted; the cursor's [`Window`]
//! keeps every change emitted in that span as a 64-bit digest of (id,
//! modification time), 11 to 15 characters of cursor a change, so those
//! are skipped, and a record modified again (a new time) is emitted again.
//!
//! The window keeps at most `lookback_max_keys` changes (default
//! [`DEFAULT_LOOKBACK_MAX_KEYS`], see
//! [`HubSpotConfig::lookback_max_keys`](crate::HubSpotConfig::lookback_max_keys)).
//! Past that it forgets its oldest modification times whole and records
//! that it covers only the times after them; the next run starts there,
//! so it neither repeats nor loses what was emitted: only the late-index
//! protection is shorter for that run (records that become searchable
//! late with a time before the new start are not seen). A run keeps its
//! own memory near the limit the same way, forgetting times it has passed.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;

use chrono::{DateTime, Utc};
use crm_core::{
    Change, Connector, Cursor, Error, ObjectSchema, Page, ReadRequest, Record, RecordId, Result,
    Source, Value,
};
use futures_core::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::HubSpot;
use crate::client::{MAX_BATCH_INPUTS, MAX_LIST_LIMIT, MAX_SEARCH_LIMIT};
use crate::error::HubSpotError;
use crate::mapping::{
    ASSOCIATION_PREFIX, association_field, association_target, record_from_object, time_property,
};
use crate::wire::{Filter, FilterGroup, HsObject, Operator, Paging, SearchRequest, Sort};

/// Default of [`HubSpotConfig::lookback_max_keys`](crate::HubSpotConfig::lookback_max_keys):
/// the most emitted changes one [`Window`] remembers.
pub const DEFAULT_LOOKBACK_MAX_KEYS: usize = 50_000;

/// The least `lookback_max_keys` accepted: one search page, so the hits at
/// the boundary of the page just read are always remembered.
pub const MIN_LOOKBACK_MAX_KEYS: usize = MAX_SEARCH_LIMIT as usize;

/// FNV-1a over the record id and the change time: stable across processes
/// and versions (it is stored in cursors).
pub fn change_digest(id: &str, at: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes().iter().chain(&[0x1f]).chain(&at.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What has been emitted for one stream of changes (upserts by
/// modification time, or deletes by archive time): the highest change time
/// emitted, and the changes emitted within the lookback before it as 64-bit
/// digests of (record id, change time), grouped by time.
///
/// The next run starts at [`start`](Self::start): `lookback` before the
/// highest time, or later when the window had to shrink to stay within its
/// size limit (every change emitted at or after the start is remembered,
/// so ties at the boundary are neither lost nor repeated).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WindowRepr")]
pub struct Window {
    /// Highest change time emitted, epoch milliseconds.
    hwm: i64,
    /// Every change emitted with a time at or after this is in `seen`
    /// (`i64::MIN`: as far back as the lookback reaches).
    from: i64,
    /// Digests by change time.
    seen: BTreeMap<i64, Vec<u64>>,
    /// Every digest of `seen`, for lookups.
    index: HashSet<u64>,
}

impl Default for Window {
    fn default() -> Self {
        Window::at(0)
    }
}

impl Window {
    /// A window whose next run starts at `hwm` (minus the lookback).
    pub fn at(hwm: i64) -> Self {
        Window {
            hwm,
            from: i64::MIN,
            seen: BTreeMap::new(),
            index: HashSet::new(),
        }
    }

    /// Highest change time emitted, epoch milliseconds.
    pub fn hwm(&self) -> i64 {
        self.hwm
    }

    /// The time from which every emitted change is remembered, when the
    /// window shrank past its size limit (else the lookback alone decides).
    pub fn covered_from(&self) -> Option<i64> {
        (self.from != i64::MIN).then_some(self.from)
    }

    /// Where the next run starts: `lookback_ms` before the highest time
    /// emitted, or [`covered_from`](Self::covered_from) when that is later.
    pub fn start(&self, lookback_ms: i64) -> i64 {
        self.hwm.saturating_sub(lookback_ms).max(self.from)
    }

    /// How many changes are remembered.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no change is remembered.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether the change `(id, at)` was already emitted.
    pub fn seen(&self, id: &str, at: i64) -> bool {
        self.index.contains(&change_digest(id, at))
    }

    /// Records an emitted change (raising the highest time).
    pub fn record(&mut self, id: &str, at: i64) {
        self.remember(id, at);
        if at > self.hwm {
            self.hwm = at;
        }
    }

    /// Raises the highest time emitted to `at` (when higher).
    pub fn raise_hwm(&mut self, at: i64) {
        self.hwm = self.hwm.max(at);
    }

    /// Remembers an emitted change without raising the highest time (a
    /// full read, whose start point is fixed before it begins).
    pub fn remember(&mut self, id: &str, at: i64) {
        let h = change_digest(id, at);
        if self.index.insert(h) {
            self.seen.entry(at).or_default().push(h);
        }
    }

    /// Forgets changes older than the lookback (`hwm - lookback_ms`) and,
    /// past `max_keys`, the oldest times whole, moving
    /// [`covered_from`](Self::covered_from) past them: the next run then
    /// starts later (a shorter lookback) instead of repeating them.
    pub fn prune(&mut self, lookback_ms: i64, max_keys: usize) {
        self.prune_before(lookback_ms, max_keys, i64::MAX);
    }

    /// As [`prune`](Self::prune), dropping for size only times before
    /// `limit` (those a running scan has passed).
    fn prune_before(&mut self, lookback_ms: i64, max_keys: usize, limit: i64) {
        let floor = self.hwm.saturating_sub(lookback_ms);
        while let Some(entry) = self.seen.first_entry() {
            let t = *entry.key();
            let over = self.index.len() > max_keys;
            if t >= floor && !(over && t < limit) {
                break;
            }
            for h in entry.remove() {
                self.index.remove(&h);
            }
            if t >= floor {
                // Dropped for size: coverage now starts after `t`. A full
                // read remembers changes newer than its start point; the
                // start never passes it, so those are repeated, not lost.
                let after = t.saturating_add(1).min(self.hwm.saturating_add(1));
                self.from = self.from.max(after);
            }
        }
    }
}

/// The stored form of a [`Window`].
#[derive(Serialize, Deserialize)]
struct WindowRepr {
    hwm: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<i64>,
    /// [`encode_seen`]'s text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    seen: String,
    /// Cursor version 1: record id to change time.
    #[serde(default, skip_serializing)]
    recent: BTreeMap<String, i64>,
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WindowRepr {
            hwm: self.hwm,
            from: self.covered_from(),
            seen: encode_seen(&self.seen),
            recent: BTreeMap::new(),
        }
        .serialize(s)
    }
}

impl TryFrom<WindowRepr> for Window {
    type Error = String;

    fn try_from(r: WindowRepr) -> std::result::Result<Self, String> {
        let mut w = Window::at(r.hwm);
        w.from = r.from.unwrap_or(i64::MIN);
        for (at, hs) in decode_seen(&r.seen)? {
            for h in hs {
                if w.index.insert(h) {
                    w.seen.entry(at).or_default().push(h);
                }
            }
        }
        for (id, at) in &r.recent {
            w.remember(id, *at);
        }
        Ok(w)
    }
}

/// The digests as unpadded base64 of, per time in ascending order: the time
/// (zigzag LEB128 for the first, LEB128 of the gap to the previous one
/// after), the number of digests (LEB128), then the digests (8 bytes each,
/// little-endian). 11 (many changes a time) to 15 (one a time) characters
/// a change.
fn encode_seen(seen: &BTreeMap<i64, Vec<u64>>) -> String {
    if seen.is_empty() {
        return String::new();
    }
    let n: usize = seen.values().map(Vec::len).sum();
    let mut out = Vec::with_capacity(n * 8 + seen.len() * 4);
    let mut prev: Option<i64> = None;
    for (&t, hs) in seen {
        let head = match prev {
            None => ((t << 1) ^ (t >> 63)).cast_unsigned(),
            Some(p) => t.wrapping_sub(p).cast_unsigned(),
        };
        put_varint(&mut out, head);
        put_varint(&mut out, hs.len() as u64);
        for h in hs {
            out.extend_from_slice(&h.to_le_bytes());
        }
        prev = Some(t);
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low seven bits.
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> std::result::Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = bytes.get(*pos) else {
            return Err("cut short".into());
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a number is too long".into())
}

/// Reads [`encode_seen`]'s text back.
fn decode_seen(text: &str) -> std::result::Result<Vec<(i64, Vec<u64>)>, String> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|e| format!("window digests: {e}"))?;
    let mut out: Vec<(i64, Vec<u64>)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let head = get_varint(&bytes, &mut pos).map_err(|e| format!("window digests: {e}"))?;
        let t = match out.last() {
            None => (head >> 1).cast_signed() ^ -((head & 1).cast_signed()),
            Some((p, _)) => match p.checked_add_unsigned(head) {
                Some(t) if head > 0 => t,
                _ => return Err("window digests: times out of order".into()),
            },
        };
        let n = get_varint(&bytes, &mut pos).map_err(|e| format!("window digests: {e}"))?;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .and_then(|len| pos.checked_add(len))
            .filter(|end| *end <= bytes.len())
            .ok_or("window digests: cut short")?;
        let hs = bytes[pos..end]
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        pos = end;
        out.push((t, hs));
    }
    Ok(out)
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
    max_keys: usize,
    time_property: String,
    page_size: u32,
    mode: Mode,
}

impl UpsertScan {
    /// A run starting at [`window.start(lookback_ms)`](Window::start), sorting and
    /// filtering on `time_property` (`lastmodifieddate` for contacts,
    /// `hs_lastmodifieddate` for other objects).
    pub fn new(
        window: Window,
        lookback_ms: i64,
        time_property: impl Into<String>,
        page_size: u32,
    ) -> Self {
        let pos = window.start(lookback_ms).max(0);
        UpsertScan {
            window,
            lookback_ms,
            max_keys: DEFAULT_LOOKBACK_MAX_KEYS,
            time_property: time_property.into(),
            page_size: page_size.max(1),
            mode: Mode::Range {
                pos,
                exclusive: false,
            },
        }
    }

    /// Remembers at most `n` changes (at least [`MIN_LOOKBACK_MAX_KEYS`]);
    /// default [`DEFAULT_LOOKBACK_MAX_KEYS`]. See [`Window::prune`].
    #[must_use]
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n.max(MIN_LOOKBACK_MAX_KEYS);
        self
    }

    /// The state to store after the hits absorbed so far.
    pub fn window(&self) -> Window {
        let mut w = self.window.clone();
        w.prune(self.lookback_ms, self.max_keys);
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
        // Forget what this run cannot read again (times before its
        // position), so a long run's memory stays near the limit too.
        let passed = match &self.mode {
            Mode::Range { pos, exclusive } => pos.saturating_add(i64::from(*exclusive)),
            Mode::Tie { at, .. } => *at,
            Mode::Done => i64::MAX,
        };
        self.window
            .prune_before(self.lookback_ms, self.max_keys, passed);
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

/// The cursor format written: 2 stores windows as digests (version 1
/// cursors, which stored ids, are still read).
const CURSOR_VERSION: u32 = 2;

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
        let max_keys = self.hs.config.lookback_max_keys();
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
                            scan: Box::new(
                                UpsertScan::new(
                                    upserts,
                                    lookback,
                                    time_property(&self.object),
                                    self.hs.config.search_page_size(),
                                )
                                .max_keys(max_keys),
                            ),
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
                    let floor = upserts.start(lookback);
                    for h in &hits {
                        if let Some(at) = change_time(h, tp).filter(|at| *at >= floor) {
                            // Remember without raising the start point: the
                            // next run starts from the newest change seen
                            // before this read began.
                            upserts.remember(h.id.as_str(), at);
                        }
                    }
                    upserts.prune(lookback, max_keys);
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
                        let start_floor = deletes.start(lookback);
                        self.step = Step::Deletes {
                            upserts,
                            max_seen: deletes.hwm(),
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
                        deletes.remember(h.id.as_str(), at);
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
                    deletes.raise_hwm(max_seen);
                    deletes.prune(lookback, max_keys);
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
                    if !(1..=CURSOR_VERSION).contains(&st.v) || st.object != object {
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
        run_capped(index, window, lookback, now, DEFAULT_LOOKBACK_MAX_KEYS)
    }

    fn run_capped(
        index: &Index,
        window: Window,
        lookback: i64,
        now: i64,
        max_keys: usize,
    ) -> (Vec<u64>, Window, usize) {
        let mut scan =
            UpsertScan::new(window, lookback, "lastmodifieddate", 200).max_keys(max_keys);
        let mut ids = Vec::new();
        let mut calls = 0;
        while let Some(req) = scan.next_request(&[]) {
            calls += 1;
            assert!(calls < 10_000, "scan does not end");
            let hits = index.search(&req, now);
            for h in scan.absorb(hits) {
                ids.push(h.id.as_u64().unwrap());
            }
            // The limit, the previous run's window, a page, and the tie
            // being scanned (`rows_25k` ties 5,000 records at one time).
            assert!(
                scan.window.len() <= 2 * max_keys + 200 + 5_000,
                "a run's memory stays near the limit"
            );
        }
        // The cursor survives storage.
        let stored = serde_json::to_value(scan.window()).unwrap();
        let w: Window = serde_json::from_value(stored).unwrap();
        assert_eq!(w, scan.window());
        (ids, w, calls)
    }

    /// 10,000 distinct times, then 15,000 records sharing 3 times.
    fn rows_25k() -> Vec<(u64, i64, i64)> {
        let mut rows = Vec::new();
        for i in 0..10_000u64 {
            rows.push((i + 1, 1_000 + i as i64, 0));
        }
        for i in 0..15_000u64 {
            rows.push((20_000 + i, 50_000 + (i % 3) as i64, 0));
        }
        rows
    }

    #[test]
    fn reads_25k_distinct_and_tied_changes_without_offsets() {
        let index = Index { rows: rows_25k() };
        let (ids, w, _) = run(&index, Window::at(0), 0, 100_000);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids.len(), 25_000, "no repeats");
        assert_eq!(sorted.len(), 25_000, "no losses");
        assert_eq!(w.hwm(), 50_002);
        // Lookback 0: only the ties at the newest time are kept.
        assert_eq!(w.len(), 5_000);
    }

    /// Every change of `rows_25k` falls within a 5-minute lookback: the
    /// next runs must skip all 25,000, whether the window holds them all
    /// (the default limit) or had to shrink (a limit of 1,000).
    #[test]
    fn more_changes_in_the_lookback_than_the_limit_are_neither_repeated_nor_lost() {
        for cap in [DEFAULT_LOOKBACK_MAX_KEYS, 20_000, 1_000] {
            let mut index = Index { rows: rows_25k() };
            let (first, w, _) = run_capped(&index, Window::at(0), 300_000, 100_000, cap);
            assert_eq!(first.len(), 25_000, "cap {cap}");
            assert!(w.len() <= cap, "cap {cap}: {} kept", w.len());
            if cap < 25_000 {
                let from = w.covered_from().unwrap();
                // 20,000: the oldest 5,000 distinct times go. 1,000: each tie
                // holds 5,000 (more than the limit), so everything goes and
                // the next run starts just after the newest time.
                let want = if cap == 20_000 { 6_000 } else { w.hwm() + 1 };
                assert_eq!(from, want, "cap {cap}");
                assert_eq!(w.start(300_000), from);
            } else {
                assert_eq!(w.covered_from(), None);
                assert_eq!(w.len(), 25_000);
            }
            let (second, w, _) = run_capped(&index, w, 300_000, 100_000, cap);
            assert!(second.is_empty(), "cap {cap}: {} repeated", second.len());
            // Three edits: one of the distinct times, two of the ties.
            for (n, row) in [(0usize, 0), (1, 10_000), (2, 24_999)] {
                index.rows[row].1 = 60_000 + n as i64;
            }
            let (third, w, _) = run_capped(&index, w, 300_000, 100_000, cap);
            let mut third_sorted = third.clone();
            third_sorted.sort_unstable();
            assert_eq!(third_sorted, vec![1, 20_000, 34_999], "cap {cap}");
            let (fourth, _, _) = run_capped(&index, w, 300_000, 100_000, cap);
            assert!(fourth.is_empty(), "cap {cap}");
        }
    }

    #[test]
    fn a_shrunk_window_still_catches_late_records_after_its_start() {
        // 3,000 records at distinct times, limit 1,000: the window covers
        // the newest 1,000 times. Record 9,999 (modified inside that span)
        // is searchable only later; the next run finds it.
        let mut rows: Vec<(u64, i64, i64)> =
            (1..=3_000).map(|i| (i, 10_000 + i as i64, 0)).collect();
        rows.push((9_999, 12_500, 50_000));
        let index = Index { rows };
        let (first, w, _) = run_capped(&index, Window::at(0), 300_000, 20_000, 1_000);
        assert_eq!(first.len(), 3_000);
        assert_eq!(w.covered_from(), Some(12_001));
        let (second, _, _) = run_capped(&index, w, 300_000, 60_000, 1_000);
        assert_eq!(second, vec![9_999]);
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
        assert_eq!(w.hwm(), 150_000);
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
    fn the_window_is_capped_by_whole_times() {
        let mut w = Window::at(0);
        for i in 0..5_000 {
            w.record(&i.to_string(), 1_000 + i);
        }
        // Three records share time 3,999: over the limit with them, under
        // without them, so they go together.
        w.record("a", 3_999);
        w.record("b", 3_999);
        w.prune(1_000_000, 2_000);
        assert_eq!(w.len(), 2_000, "times 4,000 to 5,999");
        assert_eq!(w.covered_from(), Some(4_000));
        assert_eq!(w.start(1_000_000), 4_000);
        assert!(w.seen("3000", 4_000) && w.seen("4999", 5_999));
        assert!(!w.seen("a", 3_999) && !w.seen("2999", 3_999));
        assert!(!w.seen("3000", 4_001), "another time is another change");
        // Older than the lookback: gone, without moving the start.
        let mut w = Window::at(0);
        w.record("x", 1_000);
        w.record("y", 400_000);
        w.prune(300_000, 2_000);
        assert_eq!(w.len(), 1);
        assert_eq!(w.covered_from(), None);
        assert_eq!(w.start(300_000), 100_000);
    }

    #[test]
    fn a_full_read_window_never_starts_after_its_start_point() {
        // A full read remembers changes newer than its start point (made
        // while it ran); shrinking must not skip past that point.
        let mut w = Window::at(1_000);
        for i in 0..300 {
            w.remember(&i.to_string(), 2_000 + i);
        }
        w.prune(300_000, 200);
        assert_eq!(w.start(300_000), 1_001);
        assert!(w.len() <= 200);
    }

    #[test]
    fn windows_are_stored_compactly_and_read_back() {
        let mut w = Window::at(0);
        for i in 0..50_000i64 {
            w.record(&format!("{}", 100_000_000 + i), 1_700_000_000_000 + i / 7);
        }
        w.record("neg", -5);
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.len() < 50_000 * 12, "{} bytes", json.len());
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w);
        assert!(back.seen("100000007", 1_700_000_000_001));
        assert!(back.seen("neg", -5));
        // One change a time: the most a change costs.
        let mut w = Window::at(0);
        for i in 0..10_000i64 {
            w.record(&format!("{}", 100_000_000 + i), 1_700_000_000_000 + 3 * i);
        }
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.len() < 10_000 * 15, "{} bytes", json.len());
        assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), w);
        let empty = serde_json::to_value(Window::at(7)).unwrap();
        assert_eq!(empty, serde_json::json!({"hwm": 7}));
    }

    #[test]
    fn version_1_windows_are_read() {
        let w: Window = serde_json::from_str(r#"{"hwm": 9, "recent": {"1": 9, "2": 8}}"#).unwrap();
        assert_eq!(w.hwm(), 9);
        assert!(w.seen("1", 9) && w.seen("2", 8) && !w.seen("2", 9));
        assert_eq!(w.covered_from(), None);
    }

    #[test]
    fn damaged_windows_are_errors_not_panics() {
        let mut w = Window::at(0);
        for i in 0..10 {
            w.record(&i.to_string(), 100 + i);
        }
        let good = serde_json::to_value(&w).unwrap();
        let text = good["seen"].as_str().unwrap().to_owned();
        for bad in [
            "!!!".to_owned(),
            text[..text.len() - 3].to_owned(),
            // One time with 2^60 digests.
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode([0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]),
            // A varint that never ends.
            base64::engine::general_purpose::STANDARD_NO_PAD.encode([0xff; 12]),
            // Two groups at the same time.
            base64::engine::general_purpose::STANDARD_NO_PAD.encode([0x02, 0x00, 0x00, 0x00]),
        ] {
            let v = serde_json::json!({"hwm": 1, "seen": bad});
            assert!(serde_json::from_value::<Window>(v).is_err(), "{bad}");
        }
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
