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
use serde::{Deserialize, Serialize};

use crate::wire::{Filter, FilterGroup, HsObject, Operator, SearchRequest, Sort};

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
