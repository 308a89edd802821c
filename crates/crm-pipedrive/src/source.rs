//! Reading Pipedrive: one ordered scan per run, deletes from their own feed.
//!
//! # Upserts: `(update_time, id)` keyset, never `/recents`
//!
//! `/v1/recents` reaches back only about a month and its offset pagination
//! has lost records (airbyte#50416, #27502), so every run lists the object
//! itself sorted ascending by `update_time`, from `updated_since` = the
//! newest `update_time` emitted so far ([`Mark::hwm`]), with v2 cursor
//! pagination (v1 `start` for notes and leads). A full read is the same scan
//! without `updated_since`, so 3 years of deals are read whole.
//!
//! `updated_since` is inclusive and times have whole seconds, so a run sees
//! again the records stamped with the high-water second. The mark keeps, for
//! that second only, each record's id and a digest of its content: a record
//! already emitted with the same content is dropped (idle runs emit nothing,
//! unlike a `>=` cursor that re-emits the last record every run,
//! singer-io/tap-pipedrive#108); one changed again within the same second
//! is emitted again.
//!
//! # Deletes
//!
//! Deleted records leave the lists. Deals are listed with `status=deleted`
//! (kept 30 days); persons, organizations, activities and notes show in
//! `/v1/recents` with `active_flag: false`. Leads have no delete feed
//! (webhooks carry their deletes). A full read reports no deletes; it sets
//! the delete mark to where its upserts ended.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_core::{Change, Cursor, Error, Page, ReadRequest, Record, RecordId, Result, Source};
use futures_core::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::client::{MAX_LIMIT, PageToken};
use crate::error::PipedriveError;
use crate::mapping::{
    FieldCatalog, StageNames, parse_time, record_from_wire, record_id, update_time,
};
use crate::wire::PdRecord;
use crate::{ObjectKind, Pipedrive};

/// What a run has emitted: the newest change time and the ids (with a
/// content digest) emitted at exactly that time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Newest change time emitted.
    pub hwm: Option<DateTime<Utc>>,
    /// Ids emitted at `hwm`, with the digest of what was emitted.
    #[serde(default)]
    pub seen: BTreeMap<String, u64>,
}

impl Mark {
    /// Whether the change `(id, at, digest)` has not been emitted yet.
    pub fn is_new(&self, id: &str, at: Option<DateTime<Utc>>, digest: u64) -> bool {
        match (self.hwm, at) {
            (None, _) | (_, None) => true,
            (Some(h), Some(t)) if t > h => true,
            (Some(h), Some(t)) if t < h => false,
            _ => self.seen.get(id) != Some(&digest),
        }
    }

    /// Records an emitted change.
    pub fn record(&mut self, id: &str, at: Option<DateTime<Utc>>, digest: u64) {
        let Some(t) = at else { return };
        if self.hwm.is_none_or(|h| t > h) {
            self.hwm = Some(t);
            self.seen.clear();
        }
        if self.hwm == Some(t) {
            self.seen.insert(id.to_owned(), digest);
        }
    }
}

/// An upsert scan in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The `updated_since` of the scan (the mark when it started).
    pub since: Option<DateTime<Utc>>,
    /// The next page.
    pub page: Option<PageToken>,
}

/// A delete scan in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteScan {
    /// Where the scan started.
    pub since: DateTime<Utc>,
    /// The next page.
    pub page: Option<PageToken>,
}

/// What a Pipedrive cursor holds (serialised into [`Cursor`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// Format version.
    pub v: u32,
    /// The object read.
    pub object: String,
    /// Upserts emitted.
    pub upserts: Mark,
    /// Deletes emitted; `None` until a first scan finished.
    pub deletes: Option<Mark>,
    /// An upsert scan to continue.
    #[serde(default)]
    pub scan: Option<Scan>,
    /// A delete scan to continue.
    #[serde(default)]
    pub delete_scan: Option<DeleteScan>,
}

const CURSOR_VERSION: u32 = 1;

enum Step {
    Start,
    Upserts,
    Deletes,
    Finished,
}

struct ReadState<'a> {
    pd: &'a Pipedrive,
    kind: ObjectKind,
    incremental: bool,
    st: CursorState,
    catalog: Arc<FieldCatalog>,
    stages: Option<StageNames>,
    page_size: u32,
    fields: Vec<String>,
    step: Step,
}

fn digest(rec: &PdRecord) -> u64 {
    // FNV-1a over the canonical JSON text: stable across runs and builds.
    let text = serde_json::to_string(rec).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn is_deleted(data: Option<&Json>) -> bool {
    match data {
        None | Some(Json::Null) => true,
        Some(d) => {
            d.get("active_flag").and_then(Json::as_bool) == Some(false)
                || d.get("is_deleted").and_then(Json::as_bool) == Some(true)
                || d.get("status").and_then(Json::as_str) == Some("deleted")
        }
    }
}

impl ReadState<'_> {
    fn cursor(&self) -> Result<Cursor> {
        Cursor::from_state(&self.st)
    }

    fn project(&self, mut r: Record) -> Record {
        if !self.fields.is_empty() {
            r.fields.retain(|k, _| self.fields.iter().any(|f| f == k));
        }
        r
    }

    async fn next_page(&mut self) -> Result<Option<Page>> {
        loop {
            match self.step {
                Step::Finished => return Ok(None),
                Step::Start => {
                    self.catalog = self.pd.fresh_catalog(self.kind).await?;
                    if self.kind == ObjectKind::Deals {
                        let pipelines = self.pd.client.pipelines().await?;
                        let stages = self.pd.client.stages().await?;
                        self.stages = Some(StageNames::new(&pipelines, &stages));
                    }
                    self.step = if self.st.delete_scan.is_some() {
                        Step::Deletes
                    } else {
                        if self.st.scan.is_none() {
                            self.st.scan = Some(Scan {
                                since: self.st.upserts.hwm,
                                page: None,
                            });
                        }
                        Step::Upserts
                    };
                }
                Step::Upserts => {
                    let Some(scan) = self.st.scan.clone() else {
                        self.step = Step::Deletes;
                        continue;
                    };
                    let page = self
                        .pd
                        .client
                        .list(self.kind)
                        .limit(self.page_size)
                        .page(scan.page.clone())
                        .updated_since(scan.since)
                        .by_update_time(true)
                        .send()
                        .await?;
                    let mut changes = Vec::new();
                    for rec in &page.records {
                        let Some(id) = record_id(rec) else { continue };
                        let at = update_time(rec);
                        let d = digest(rec);
                        if !self.st.upserts.is_new(&id, at, d) {
                            continue;
                        }
                        self.st.upserts.record(&id, at, d);
                        let r =
                            record_from_wire(self.kind, rec, &self.catalog, self.stages.as_ref());
                        changes.push(Change::Upsert(self.project(r)));
                    }
                    match page.next {
                        Some(next) => {
                            self.st.scan = Some(Scan {
                                since: scan.since,
                                page: Some(next),
                            });
                        }
                        None => {
                            self.st.scan = None;
                            self.step = Step::Deletes;
                        }
                    }
                    let last = matches!(self.step, Step::Deletes) && !self.incremental;
                    if last {
                        if self.st.deletes.is_none() {
                            self.st.deletes = Some(Mark {
                                hwm: self.st.upserts.hwm,
                                seen: BTreeMap::new(),
                            });
                        }
                        self.step = Step::Finished;
                    }
                    return Ok(Some(Page {
                        changes,
                        cursor: self.cursor()?,
                    }));
                }
                Step::Deletes => {
                    let Some(marks) = self.st.deletes.clone() else {
                        // The first scan ended: deletes start where its upserts did.
                        self.st.deletes = Some(Mark {
                            hwm: self.st.upserts.hwm,
                            seen: BTreeMap::new(),
                        });
                        self.step = Step::Finished;
                        return Ok(Some(Page {
                            changes: Vec::new(),
                            cursor: self.cursor()?,
                        }));
                    };
                    let scan = match (&self.st.delete_scan, marks.hwm) {
                        (Some(s), _) => s.clone(),
                        (None, Some(h)) => DeleteScan {
                            since: h,
                            page: None,
                        },
                        (None, None) => {
                            // Nothing was ever read: no delete can matter yet.
                            self.step = Step::Finished;
                            return Ok(Some(Page {
                                changes: Vec::new(),
                                cursor: self.cursor()?,
                            }));
                        }
                    };
                    let (changes, next) = self.delete_page(&scan).await?;
                    match next {
                        Some(n) => {
                            self.st.delete_scan = Some(DeleteScan {
                                since: scan.since,
                                page: Some(n),
                            });
                        }
                        None => {
                            self.st.delete_scan = None;
                            self.step = Step::Finished;
                        }
                    }
                    return Ok(Some(Page {
                        changes,
                        cursor: self.cursor()?,
                    }));
                }
            }
        }
    }

    async fn delete_page(&mut self, scan: &DeleteScan) -> Result<(Vec<Change>, Option<PageToken>)> {
        let mut changes = Vec::new();
        let mut marks = self.st.deletes.clone().unwrap_or_default();
        let next = if self.kind == ObjectKind::Deals {
            let page = self
                .pd
                .client
                .list(self.kind)
                .limit(self.page_size)
                .page(scan.page.clone())
                .updated_since(Some(scan.since))
                .by_update_time(true)
                .status("deleted")
                .send()
                .await?;
            for rec in &page.records {
                let Some(id) = record_id(rec) else { continue };
                let at = update_time(rec);
                if marks.is_new(&id, at, 1) {
                    marks.record(&id, at, 1);
                    changes.push(Change::Delete {
                        id: RecordId::new(id),
                        at,
                    });
                }
            }
            page.next
        } else if let Some(item) = self.kind.recents_item() {
            let start = match &scan.page {
                Some(PageToken::Start(s)) => *s,
                _ => 0,
            };
            let (items, next) = self
                .pd
                .client
                .recents(item, scan.since, start, self.page_size)
                .await?;
            for e in items {
                if e.item != item {
                    continue;
                }
                let Some(id) = e.id.map(|i| i.to_string()).or_else(|| {
                    e.data
                        .as_ref()
                        .and_then(|d| d.get("id"))
                        .map(crate::mapping::json_text)
                }) else {
                    continue;
                };
                let at = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get("update_time"))
                    .and_then(Json::as_str)
                    .and_then(parse_time);
                if !is_deleted(e.data.as_ref()) {
                    continue;
                }
                if marks.is_new(&id, at, 1) {
                    marks.record(&id, at, 1);
                    changes.push(Change::Delete {
                        id: RecordId::new(id),
                        at,
                    });
                }
            }
            next.map(PageToken::Start)
        } else {
            None
        };
        self.st.deletes = Some(marks);
        Ok((changes, next))
    }
}

impl Source for Pipedrive {
    /// Reads `req.object` (see the [module docs](self)).
    ///
    /// - Without a cursor: every live record, ascending by `update_time`,
    ///   `limit` up to 500 a page. No deletes.
    /// - With a cursor: the records changed since it (or the rest of an
    ///   interrupted read), then the deletes since it.
    ///
    /// Field definitions (and, for deals, pipelines and stages) are read at
    /// the start of every run. Each page carries the cursor to resume from;
    /// when the daily quota runs out the stream ends with
    /// [`crm_core::ErrorKind::QuotaExhausted`] and the last page's cursor
    /// resumes the run.
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let setup = (|| -> Result<ReadState<'a>> {
            let kind = self.object_kind(&req.object)?;
            let (st, incremental) = match &req.since {
                None => (
                    CursorState {
                        v: CURSOR_VERSION,
                        object: kind.as_str().to_owned(),
                        upserts: Mark::default(),
                        deletes: None,
                        scan: None,
                        delete_scan: None,
                    },
                    false,
                ),
                Some(c) => {
                    let st: CursorState = c
                        .to_state()
                        .map_err(|e| Error::from(PipedriveError::CursorInvalid(e.to_string())))?;
                    if st.v != CURSOR_VERSION || st.object != kind.as_str() {
                        return Err(PipedriveError::CursorInvalid(format!(
                            "cursor of `{}` v{} given to a read of `{}`",
                            st.object,
                            st.v,
                            kind.as_str()
                        ))
                        .into());
                    }
                    (st, true)
                }
            };
            let page_size = req
                .page_size
                .map_or(self.config.page_size(), |n| {
                    u32::try_from(n).unwrap_or(MAX_LIMIT)
                })
                .clamp(1, MAX_LIMIT);
            Ok(ReadState {
                pd: self,
                kind,
                incremental,
                st,
                catalog: Arc::new(FieldCatalog::default()),
                stages: None,
                page_size,
                fields: req.fields.clone(),
                step: Step::Start,
            })
        })();
        match setup {
            Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
            Ok(state) => Box::pin(futures_util::stream::try_unfold(
                state,
                |mut st| async move {
                    let page = st.next_page().await.map_err(|e| {
                        if e.kind() == &crm_core::ErrorKind::QuotaExhausted {
                            e.with_context("resume", "from the cursor of the last page")
                        } else {
                            e
                        }
                    })?;
                    Ok(page.map(|p| (p, st)))
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_700_000_000 + s, 0)
    }

    #[test]
    fn mark_drops_what_was_emitted_at_the_boundary_only() {
        let mut m = Mark::default();
        assert!(m.is_new("1", t(0), 5));
        m.record("1", t(0), 5);
        m.record("2", t(0), 6);
        assert!(
            !m.is_new("1", t(0), 5),
            "same content at the boundary: dropped"
        );
        assert!(
            m.is_new("1", t(0), 9),
            "changed again within the second: emitted"
        );
        assert!(
            m.is_new("3", t(0), 1),
            "another record of the same second: emitted"
        );
        assert!(!m.is_new("4", t(-1), 1), "older than the mark");
        m.record("3", t(2), 1);
        assert_eq!(m.hwm, t(2));
        assert_eq!(m.seen.len(), 1, "only the newest second is kept");
    }

    #[test]
    fn deleted_recents_entries() {
        assert!(is_deleted(None));
        assert!(is_deleted(Some(
            &serde_json::json!({"id": 1, "active_flag": false})
        )));
        assert!(!is_deleted(Some(
            &serde_json::json!({"id": 1, "active_flag": true})
        )));
    }
}
