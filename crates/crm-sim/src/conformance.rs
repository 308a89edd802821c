//! The shared connector behaviour suite: behaviours written once against
//! crm-core's [`Source`] and [`Sink`] traits, run by every connector against
//! its own simulator.
//!
//! A provider implements [`Harness`] (how to reach its simulator's state,
//! how to make its records, its page and batch sizes and rate limits) and
//! runs [`run_all`] or single behaviours from a test:
//!
//! ```ignore
//! #[tokio::test]
//! async fn hubspot_conformance() {
//!     let harness = HubSpotHarness::start().await;
//!     crm_sim::conformance::run_all(&harness, 1..=50).await.assert_passed();
//! }
//! ```
//!
//! The behaviours:
//!
//! | name | what it checks |
//! | --- | --- |
//! | `check` | the connection test passes against the simulator |
//! | `full_read` | a full read returns exactly the simulator's live records |
//! | `incremental_read` | after N creates, updates and deletes, a read from the previous cursor returns exactly those N changes (deletes as tombstones), and an idle read returns none |
//! | `shared_timestamp_page_boundary` | records sharing one modification time across page boundaries are neither lost nor repeated, also when the read resumes from the first page's cursor |
//! | `upsert_twice_unchanged` | an upsert batch written twice reports every record unchanged the second time and creates nothing |
//! | `per_record_rejections` | invalid records come back rejected at their own index while the rest lands |
//! | `rate_limit_respected` | no window of the provider's rate limits is ever exceeded (request log), and no 429 is provoked |
//! | `minimal_calls` | reads and writes make exactly the minimum number of API calls for the page and batch sizes |
//! | `fault_plan_converges` | under seeded chaos fault plans the final state equals a clean run's |
//!
//! Behaviours that need a capability the connector lacks (incremental
//! reads, deletes, writes) are skipped, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crm_core::{
    Change, Cursor, ReadRequest, Record, RecordId, Sink, Source, WriteBatch, WriteOutcome,
};
use futures_util::StreamExt;

use crate::fault::FaultPlan;
use crate::log::LoggedRequest;
use crate::ratelimit::Window;
use crate::simulator::SimContext;
use crate::store::{Deleted, Fields, StoredRecord};

/// What the suite needs from a provider: its simulator's state, its clients,
/// and how its records look on both sides.
///
/// The connector's [`RecordId`]s must be the simulator store's ids.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The running simulator's shared state (store, clock, log, faults).
    fn sim(&self) -> &SimContext;

    /// The object as the connector names it (`Contact`, `contacts`).
    fn object(&self) -> &str;

    /// The object type in the simulator's store; defaults to [`Harness::object`].
    fn sim_object(&self) -> &str {
        self.object()
    }

    /// A fresh reading client.
    fn source(&self) -> Arc<dyn Source>;

    /// A fresh writing client, if the connector writes.
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        None
    }

    /// Records per page the suite asks the source for.
    fn page_size(&self) -> usize;

    /// Records per write call the suite sends (at most the sink's `max_batch`).
    fn batch_size(&self) -> usize;

    /// The upsert key as the connector names it (`email`, `External_Id__c`).
    fn key_field(&self) -> &str;

    /// The same key as the simulator stores it; defaults to [`Harness::key_field`].
    fn sim_key_field(&self) -> &str {
        self.key_field()
    }

    /// The store fields of the `i`-th record seeded directly into the
    /// simulator; the key field must be unique per `i`.
    fn seed_fields(&self, i: usize) -> Fields;

    /// A patch that changes the `i`-th seeded record (applied on the simulator side).
    fn update_fields(&self, i: usize) -> Fields;

    /// The `i`-th record the suite writes through the sink, keyed by
    /// [`Harness::key_field`] (unique per `i`); `version` changes a non-key
    /// field so a new version is an update.
    fn record(&self, i: usize, version: u32) -> Record;

    /// A record the provider rejects (e.g. a malformed email), or `None` to
    /// skip `per_record_rejections`.
    fn invalid_record(&self, i: usize) -> Option<Record>;

    /// The provider's rate limits, checked over the request log.
    fn rate_limits(&self) -> Vec<Window>;

    /// Whether a logged request is an API call that counts against limits and
    /// call minimums. Default: everything but token endpoints.
    fn is_api_call(&self, request: &LoggedRequest) -> bool {
        !request.path.contains("token")
    }

    /// The fewest API calls a full read of `n` records can make. Default:
    /// one per page, one for an empty result.
    fn expected_read_calls(&self, n: usize) -> usize {
        n.div_ceil(self.page_size().max(1)).max(1)
    }

    /// The fewest API calls writing `n` records can make. Default: one per batch.
    fn expected_write_calls(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size().max(1))
    }

    /// Whether a record read by the connector is the stored one. Default:
    /// same key value.
    fn matches(&self, stored: &StoredRecord, read: &Record) -> bool {
        let stored_key = stored.fields.get(self.sim_key_field()).map(json_key);
        let read_key = read.get(self.key_field()).map(|v| json_key(&v.to_json()));
        stored_key.is_some() && stored_key == read_key
    }

    /// The longest slow response chaos plans inject.
    fn chaos_delay(&self) -> Duration {
        Duration::from_millis(200)
    }

    /// Empties the simulator between behaviours: records, log, faults,
    /// rate-limit counts, and a running clock. Providers with more state extend it.
    async fn reset(&self) {
        let sim = self.sim();
        sim.faults().clear();
        sim.store().clear();
        sim.log().clear();
        sim.reset_rate_limits();
        sim.clock().resume();
    }
}

fn json_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A behaviour that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The behaviour's name.
    pub behaviour: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.behaviour, self.message)
    }
}

impl std::error::Error for Failure {}

/// How one behaviour ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It held.
    Passed,
    /// It did not.
    Failed(String),
    /// It does not apply to this connector.
    Skipped(String),
}

/// The results of a suite run, in behaviour order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `(behaviour, verdict)` pairs.
    pub results: Vec<(&'static str, Verdict)>,
}

impl Report {
    /// The behaviours that failed, with their messages.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|(n, v)| match v {
                Verdict::Failed(m) => Some((*n, m.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The verdict of one behaviour.
    pub fn verdict(&self, behaviour: &str) -> Option<&Verdict> {
        self.results
            .iter()
            .find(|(n, _)| *n == behaviour)
            .map(|(_, v)| v)
    }

    /// True if nothing failed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Panics listing every failure; for use in tests.
    ///
    /// # Panics
    /// When a behaviour failed.
    #[allow(clippy::panic)] // A test assertion.
    pub fn assert_passed(&self) {
        let failures = self.failures();
        if !failures.is_empty() {
            let lines: Vec<String> = failures
                .iter()
                .map(|(n, m)| format!("  {n}: {m}"))
                .collect();
            panic!("conformance failures:\n{}", lines.join("\n"));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, verdict) in &self.results {
            match verdict {
                Verdict::Passed => writeln!(f, "ok      {name}")?,
                Verdict::Failed(m) => writeln!(f, "FAILED  {name}: {m}")?,
                Verdict::Skipped(m) => writeln!(f, "skipped {name}: {m}")?,
            }
        }
        Ok(())
    }
}

/// A behaviour's result: `Ok(None)` passed, `Ok(Some(why))` skipped.
pub type Outcome = Result<Option<String>, Failure>;

macro_rules! ensure {
    ($name:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure { behaviour: $name, message: format!($($msg)+) });
        }
    };
}

fn fail(behaviour: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        behaviour,
        message: message.into(),
    }
}

/// Runs every behaviour, the chaos one over `seeds`, each after a
/// [`Harness::reset`].
pub async fn run_all<H: Harness + ?Sized>(h: &H, seeds: impl IntoIterator<Item = u64>) -> Report {
    let mut report = Report::default();
    let seeds: Vec<u64> = seeds.into_iter().collect();
    macro_rules! run {
        ($name:literal, $fut:expr) => {{
            h.reset().await;
            let verdict = match $fut.await {
                Ok(None) => Verdict::Passed,
                Ok(Some(why)) => Verdict::Skipped(why),
                Err(f) => Verdict::Failed(f.message),
            };
            report.results.push(($name, verdict));
        }};
    }
    run!("check", check(h));
    run!("full_read", full_read(h));
    run!("incremental_read", incremental_read(h));
    run!(
        "shared_timestamp_page_boundary",
        shared_timestamp_page_boundary(h)
    );
    run!("upsert_twice_unchanged", upsert_twice_unchanged(h));
    run!("per_record_rejections", per_record_rejections(h));
    run!("rate_limit_respected", rate_limit_respected(h));
    run!("minimal_calls", minimal_calls(h));
    run!(
        "fault_plan_converges",
        fault_plan_converges(h, seeds.iter().copied())
    );
    h.reset().await;
    report
}

/// Everything one read produced.
struct ReadResult {
    changes: Vec<Change>,
    cursor: Option<Cursor>,
    pages: usize,
}

async fn read_all(source: &dyn Source, req: ReadRequest) -> Result<ReadResult, crm_core::Error> {
    let mut stream = source.read(req);
    let mut out = ReadResult {
        changes: Vec::new(),
        cursor: None,
        pages: 0,
    };
    while let Some(page) = stream.next().await {
        let page = page?;
        out.pages += 1;
        out.changes.extend(page.changes);
        out.cursor = Some(page.cursor);
    }
    Ok(out)
}

fn seed<H: Harness + ?Sized>(h: &H, range: std::ops::Range<usize>) -> Vec<StoredRecord> {
    range
        .map(|i| h.sim().store().create(h.sim_object(), h.seed_fields(i)))
        .collect()
}

fn api_calls<H: Harness + ?Sized>(h: &H) -> usize {
    h.sim().log().count(|e| h.is_api_call(e))
}

/// Compares a read's upserts with the store's live records: same ids, each
/// once, values matching.
fn same_as_store<H: Harness + ?Sized>(
    h: &H,
    name: &'static str,
    changes: &[Change],
) -> Result<(), Failure> {
    let live = h.sim().store().all(h.sim_object(), Deleted::Exclude);
    let mut seen = BTreeMap::new();
    for c in changes {
        match c {
            Change::Upsert(r) => {
                let Some(id) = &r.id else {
                    return Err(fail(name, "a record came back without an id"));
                };
                if seen.insert(id.clone(), r).is_some() {
                    return Err(fail(name, format!("record {id} came back twice")));
                }
            }
            Change::Delete { id, .. } => {
                return Err(fail(name, format!("a full read reported a delete of {id}")));
            }
        }
    }
    let expected: BTreeSet<&RecordId> = live.iter().map(|r| &r.id).collect();
    let got: BTreeSet<&RecordId> = seen.keys().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    ensure!(
        name,
        missing.is_empty() && extra.is_empty(),
        "read {} records, simulator has {}; missing {missing:?}, unexpected {extra:?}",
        got.len(),
        expected.len()
    );
    for stored in &live {
        if let Some(read) = seen.get(&stored.id) {
            ensure!(
                name,
                h.matches(stored, read),
                "record {} does not match the simulator's",
                stored.id
            );
        }
    }
    Ok(())
}

/// `check`: the connection test passes.
pub async fn check<H: Harness + ?Sized>(h: &H) -> Outcome {
    h.source()
        .check()
        .await
        .map_err(|e| fail("check", e.to_string()))?;
    Ok(None)
}

/// `full_read`: a full read returns exactly the simulator's live records.
pub async fn full_read<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "full_read";
    let n = 2 * h.page_size() + 3;
    let seeded = seed(h, 0..n);
    // One deleted record must not show up in a full read.
    if let Some(gone) = seeded.first() {
        let _ = h.sim().store().delete(h.sim_object(), &gone.id);
    }
    let source = h.source();
    let read = read_all(
        source.as_ref(),
        ReadRequest::full(h.object()).page_size(h.page_size()),
    )
    .await
    .map_err(|e| fail(NAME, e.to_string()))?;
    same_as_store(h, NAME, &read.changes)?;
    Ok(None)
}

/// `incremental_read`: after creates, updates and deletes, a read from the
/// previous cursor returns exactly those changes; an idle read returns none.
pub async fn incremental_read<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "incremental_read";
    let source = h.source();
    let caps = source.capabilities();
    if !caps.incremental {
        return Ok(Some("the connector does not read incrementally".into()));
    }
    let n = h.page_size() + 5;
    let seeded = seed(h, 0..n);
    let first = read_all(
        source.as_ref(),
        ReadRequest::full(h.object()).page_size(h.page_size()),
    )
    .await
    .map_err(|e| fail(NAME, format!("first read: {e}")))?;
    let Some(cursor) = first.cursor else {
        return Err(fail(NAME, "the first read gave no cursor"));
    };
    // Changes happen strictly after everything read so far.
    h.sim().clock().advance(chrono::Duration::seconds(1));
    let store = h.sim().store();
    let created: BTreeSet<RecordId> = seed(h, n..n + 3).into_iter().map(|r| r.id).collect();
    let mut updated = BTreeSet::new();
    for (i, rec) in seeded.iter().enumerate().skip(1).take(3) {
        store
            .update(h.sim_object(), &rec.id, h.update_fields(i))
            .map_err(|e| fail(NAME, format!("updating in the simulator: {e}")))?;
        updated.insert(rec.id.clone());
    }
    let mut deleted = BTreeSet::new();
    if caps.deletes {
        for rec in seeded.iter().skip(5).take(2) {
            store
                .delete(h.sim_object(), &rec.id)
                .map_err(|e| fail(NAME, format!("deleting in the simulator: {e}")))?;
            deleted.insert(rec.id.clone());
        }
    }
    let second = read_all(
        source.as_ref(),
        ReadRequest::since(h.object(), cursor).page_size(h.page_size()),
    )
    .await
    .map_err(|e| fail(NAME, format!("incremental read: {e}")))?;
    let mut upserts = BTreeSet::new();
    let mut deletes = BTreeSet::new();
    for c in &second.changes {
        match c {
            Change::Upsert(r) => {
                let id =
                    r.id.clone()
                        .ok_or_else(|| fail(NAME, "a record came back without an id"))?;
                ensure!(NAME, upserts.insert(id.clone()), "{id} reported twice");
            }
            Change::Delete { id, .. } => {
                ensure!(
                    NAME,
                    deletes.insert(id.clone()),
                    "delete of {id} reported twice"
                );
            }
        }
    }
    let expected_upserts: BTreeSet<RecordId> = created.union(&updated).cloned().collect();
    ensure!(
        NAME,
        upserts == expected_upserts,
        "expected upserts {expected_upserts:?}, got {upserts:?}"
    );
    ensure!(
        NAME,
        deletes == deleted,
        "expected deletes {deleted:?}, got {deletes:?}"
    );
    // An idle run reads nothing.
    if let Some(cursor) = second.cursor {
        let idle = read_all(
            source.as_ref(),
            ReadRequest::since(h.object(), cursor).page_size(h.page_size()),
        )
        .await
        .map_err(|e| fail(NAME, format!("idle read: {e}")))?;
        ensure!(
            NAME,
            idle.changes.is_empty(),
            "an idle read returned {} changes",
            idle.changes.len()
        );
    } else {
        return Err(fail(NAME, "the incremental read gave no cursor"));
    }
    Ok(None)
}

/// `shared_timestamp_page_boundary`: records sharing one modification time
/// across page boundaries are neither lost nor repeated, in one read and
/// when resuming from the first page's cursor.
pub async fn shared_timestamp_page_boundary<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "shared_timestamp_page_boundary";
    let clock = h.sim().clock();
    clock.freeze();
    let n = 2 * h.page_size() + 1;
    seed(h, 0..n);
    clock.resume();
    let source = h.source();
    let read = read_all(
        source.as_ref(),
        ReadRequest::full(h.object()).page_size(h.page_size()),
    )
    .await
    .map_err(|e| fail(NAME, e.to_string()))?;
    same_as_store(h, NAME, &read.changes)?;
    ensure!(
        NAME,
        read.pages >= 2,
        "expected several pages of {}, got {}",
        h.page_size(),
        read.pages
    );
    if !source.capabilities().incremental {
        return Ok(None);
    }
    // Stop after the first page (a crash), then resume from its cursor.
    let (first_changes, cursor) = {
        let mut stream = source.read(ReadRequest::full(h.object()).page_size(h.page_size()));
        match stream.next().await {
            Some(Ok(page)) => (page.changes, page.cursor),
            Some(Err(e)) => return Err(fail(NAME, format!("first page: {e}"))),
            None => return Err(fail(NAME, "the read produced no page")),
        }
    };
    let rest = read_all(
        source.as_ref(),
        ReadRequest::since(h.object(), cursor).page_size(h.page_size()),
    )
    .await
    .map_err(|e| fail(NAME, format!("resumed read: {e}")))?;
    let mut all = first_changes;
    all.extend(rest.changes);
    same_as_store(h, NAME, &all).map_err(|f| {
        fail(
            NAME,
            format!("after resuming from the first page: {}", f.message),
        )
    })?;
    Ok(None)
}

async fn write_all(
    sink: &dyn Sink,
    object: &str,
    key: &str,
    records: Vec<Record>,
    batch: usize,
) -> Result<Vec<WriteOutcome>, crm_core::Error> {
    let mut out = Vec::with_capacity(records.len());
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<Record> = records.by_ref().take(batch.max(1)).collect();
        let base = out.len();
        let outcomes = sink.write(object, WriteBatch::upsert(key, chunk)).await?;
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

fn batch_size<H: Harness + ?Sized>(h: &H, sink: &dyn Sink) -> usize {
    h.batch_size().min(sink.max_batch(h.object())).max(1)
}

/// `upsert_twice_unchanged`: a batch written twice reports every record
/// unchanged the second time and creates nothing.
pub async fn upsert_twice_unchanged<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "upsert_twice_unchanged";
    let Some(sink) = h.sink() else {
        return Ok(Some("the connector does not write".into()));
    };
    if !sink.capabilities().upsert {
        return Ok(Some("the connector does not upsert".into()));
    }
    let batch = batch_size(h, sink.as_ref());
    let k = batch.min(5);
    let records: Vec<Record> = (0..k).map(|i| h.record(i, 1)).collect();
    let first = write_all(
        sink.as_ref(),
        h.object(),
        h.key_field(),
        records.clone(),
        batch,
    )
    .await
    .map_err(|e| fail(NAME, format!("first write: {e}")))?;
    ensure!(
        NAME,
        first.len() == k,
        "{} outcomes for {k} records",
        first.len()
    );
    for (i, o) in first.iter().enumerate() {
        ensure!(
            NAME,
            matches!(o, WriteOutcome::Created(_)),
            "record {i}: first write was {}",
            o.as_str()
        );
    }
    let second = write_all(sink.as_ref(), h.object(), h.key_field(), records, batch)
        .await
        .map_err(|e| fail(NAME, format!("second write: {e}")))?;
    ensure!(
        NAME,
        second.len() == k,
        "{} outcomes for {k} records",
        second.len()
    );
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        ensure!(
            NAME,
            matches!(b, WriteOutcome::Unchanged(_)),
            "record {i}: second write was {}",
            b.as_str()
        );
        ensure!(
            NAME,
            a.id() == b.id(),
            "record {i}: id changed from {:?} to {:?}",
            a.id(),
            b.id()
        );
    }
    let count = h.sim().store().count(h.sim_object(), Deleted::Exclude);
    ensure!(
        NAME,
        count == k,
        "the simulator holds {count} records after writing {k} twice"
    );
    Ok(None)
}

/// `per_record_rejections`: invalid records come back rejected at their own
/// index while the rest lands.
pub async fn per_record_rejections<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "per_record_rejections";
    let Some(sink) = h.sink() else {
        return Ok(Some("the connector does not write".into()));
    };
    let (Some(bad0), Some(bad1)) = (h.invalid_record(0), h.invalid_record(1)) else {
        return Ok(Some("the harness has no invalid record".into()));
    };
    let batch = batch_size(h, sink.as_ref());
    if batch < 5 {
        return Ok(Some(
            "batches are smaller than the 5 records this needs".into(),
        ));
    }
    let records = vec![h.record(0, 1), bad0, h.record(1, 1), bad1, h.record(2, 1)];
    let out = write_all(sink.as_ref(), h.object(), h.key_field(), records, batch)
        .await
        .map_err(|e| fail(NAME, format!("the whole call failed: {e}")))?;
    ensure!(NAME, out.len() == 5, "{} outcomes for 5 records", out.len());
    for (i, o) in out.iter().enumerate() {
        if i == 1 || i == 3 {
            match o {
                WriteOutcome::Rejected { index, .. } => {
                    ensure!(NAME, *index == i, "rejection at {i} names index {index}");
                }
                other => {
                    return Err(fail(
                        NAME,
                        format!("invalid record {i} was {}", other.as_str()),
                    ));
                }
            }
        } else {
            ensure!(
                NAME,
                matches!(o, WriteOutcome::Created(_)),
                "valid record {i} was {}",
                o.as_str()
            );
        }
    }
    let count = h.sim().store().count(h.sim_object(), Deleted::Exclude);
    ensure!(
        NAME,
        count == 3,
        "the simulator holds {count} records, expected the 3 valid ones"
    );
    Ok(None)
}

/// `rate_limit_respected`: a read-and-write workload never exceeds any of
/// the provider's windows (measured on the request log) nor provokes a 429.
pub async fn rate_limit_respected<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "rate_limit_respected";
    let windows = h.rate_limits();
    if windows.is_empty() {
        return Ok(Some("the provider has no rate limit".into()));
    }
    let page = h.page_size();
    // Enough calls to overrun the tightest short window one and a half times
    // over if the client did not pace itself.
    let tightest = windows
        .iter()
        .filter(|w| w.period <= Duration::from_secs(600))
        .map(|w| w.limit as usize)
        .min()
        .unwrap_or(10);
    let pages_per_reader = (tightest + tightest / 2 + 2).min(300).div_ceil(2);
    seed(h, 0..page * pages_per_reader);
    let source = h.source();
    // Two reads at once through one client, as parallel jobs sharing a
    // connection would run.
    let req = || ReadRequest::full(h.object()).page_size(page);
    let (a, b) = futures_util::future::join(
        read_all(source.as_ref(), req()),
        read_all(source.as_ref(), req()),
    )
    .await;
    a.map_err(|e| fail(NAME, format!("read: {e}")))?;
    b.map_err(|e| fail(NAME, format!("read: {e}")))?;
    if let Some(sink) = h.sink() {
        let batch = batch_size(h, sink.as_ref());
        let records: Vec<Record> = (0..batch * 3).map(|i| h.record(i, 1)).collect();
        write_all(sink.as_ref(), h.object(), h.key_field(), records, batch)
            .await
            .map_err(|e| fail(NAME, format!("write: {e}")))?;
    }
    let log = h.sim().log();
    let throttled = log.count(|e| h.is_api_call(e) && e.status() == Some(429));
    ensure!(
        NAME,
        throttled == 0,
        "{throttled} requests were answered 429"
    );
    for w in &windows {
        let peak = log.max_in_window(w.period, |e| h.is_api_call(e));
        ensure!(
            NAME,
            peak <= w.limit as usize,
            "{peak} calls within {:?}, limit {} ({})",
            w.period,
            w.limit,
            w.name
        );
    }
    Ok(None)
}

/// `minimal_calls`: reads make one call per page (one for nothing) and
/// writes one call per batch.
pub async fn minimal_calls<H: Harness + ?Sized>(h: &H) -> Outcome {
    const NAME: &str = "minimal_calls";
    let page = h.page_size();
    let source = h.source();
    // Warm up (tokens, discovery) so only data calls are counted.
    source
        .check()
        .await
        .map_err(|e| fail(NAME, format!("check: {e}")))?;
    for n in [0, 3 * page, 3 * page + 1] {
        h.sim().store().clear();
        seed(h, 0..n);
        h.sim().log().clear();
        read_all(
            source.as_ref(),
            ReadRequest::full(h.object()).page_size(page),
        )
        .await
        .map_err(|e| fail(NAME, format!("read: {e}")))?;
        let calls = api_calls(h);
        let expected = h.expected_read_calls(n);
        ensure!(
            NAME,
            calls == expected,
            "reading {n} records by {page} took {calls} calls, expected {expected}"
        );
    }
    if let Some(sink) = h.sink() {
        let batch = batch_size(h, sink.as_ref());
        let n = 2 * batch + 1;
        h.sim().store().clear();
        let records: Vec<Record> = (0..n).map(|i| h.record(i, 1)).collect();
        h.sim().log().clear();
        write_all(sink.as_ref(), h.object(), h.key_field(), records, batch)
            .await
            .map_err(|e| fail(NAME, format!("write: {e}")))?;
        let calls = api_calls(h);
        let expected = h.expected_write_calls(n);
        ensure!(
            NAME,
            calls == expected,
            "writing {n} records by {batch} took {calls} calls, expected {expected}"
        );
    }
    Ok(None)
}

/// Retries a whole operation the way an orchestrator would: on a retryable
/// error, or on one whose retries ran out inside the client.
async fn persist<T, F, Fut>(mut op: F) -> Result<T, crm_core::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crm_core::Error>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e)
                if tries < 20 && (e.is_retryable() || e.retry() == crm_core::Retry::Persistent) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes every record, re-sending the ones rejected with retryable errors.
async fn write_converging(
    sink: &dyn Sink,
    object: &str,
    key: &str,
    records: Vec<Record>,
    batch: usize,
) -> Result<(), String> {
    let mut pending = records;
    for _ in 0..20 {
        if pending.is_empty() {
            return Ok(());
        }
        let current = pending.clone();
        let outcomes = persist(|| write_all(sink, object, key, current.clone(), batch))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut retry = Vec::new();
        for o in outcomes {
            if let WriteOutcome::Rejected { index, error } = o {
                if !error.is_retryable() {
                    return Err(format!("record {index} rejected for good: {error}"));
                }
                if let Some(r) = current.get(index) {
                    retry.push(r.clone());
                }
            }
        }
        pending = retry;
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} records still rejected after 20 rounds",
            pending.len()
        ))
    }
}

type Snapshot = BTreeMap<String, Fields>;

/// The workload of `fault_plan_converges`; returns the final store state by key.
async fn converging_workload<H: Harness + ?Sized>(h: &H) -> Result<Snapshot, String> {
    seed(h, 0..h.page_size() * 2);
    let source = h.source();
    if let Some(sink) = h.sink() {
        let batch = batch_size(h, sink.as_ref());
        let n = batch * 2 + 1;
        let v1: Vec<Record> = (0..n).map(|i| h.record(i, 1)).collect();
        write_converging(sink.as_ref(), h.object(), h.key_field(), v1, batch).await?;
        let v2: Vec<Record> = (0..n / 2).map(|i| h.record(i, 2)).collect();
        write_converging(sink.as_ref(), h.object(), h.key_field(), v2, batch).await?;
    }
    let read = persist(|| {
        read_all(
            source.as_ref(),
            ReadRequest::full(h.object()).page_size(h.page_size()),
        )
    })
    .await
    .map_err(|e| format!("read: {e}"))?;
    same_as_store(h, "fault_plan_converges", &read.changes).map_err(|f| f.message)?;
    let mut snap = Snapshot::new();
    for rec in h.sim().store().all(h.sim_object(), Deleted::Exclude) {
        let key = rec
            .fields
            .get(h.sim_key_field())
            .map(json_key)
            .ok_or_else(|| format!("stored record {} has no key", rec.id))?;
        if snap.insert(key.clone(), rec.fields).is_some() {
            return Err(format!("two live records share the key {key}"));
        }
    }
    Ok(snap)
}

/// `fault_plan_converges`: for each seed, the workload under
/// [`FaultPlan::chaos`] ends in the same state as a clean run.
pub async fn fault_plan_converges<H: Harness + ?Sized>(
    h: &H,
    seeds: impl IntoIterator<Item = u64>,
) -> Outcome {
    const NAME: &str = "fault_plan_converges";
    h.reset().await;
    let clean = converging_workload(h)
        .await
        .map_err(|e| fail(NAME, format!("clean run: {e}")))?;
    let mut ran = 0;
    let mut injected = 0;
    for seed in seeds {
        h.reset().await;
        h.sim()
            .faults()
            .set_plan(FaultPlan::chaos(seed, h.chaos_delay()));
        let result = converging_workload(h).await;
        let fired: u64 = h.sim().faults().fired().iter().sum();
        injected += fired;
        h.sim().faults().clear();
        let state = result.map_err(|e| fail(NAME, format!("seed {seed}: {e}")))?;
        if state != clean {
            let differing: Vec<&String> = clean
                .keys()
                .chain(state.keys())
                .filter(|k| clean.get(*k) != state.get(*k))
                .take(5)
                .collect();
            return Err(fail(
                NAME,
                format!(
                    "seed {seed} ({fired} faults) ended in another state; differing keys {differing:?}"
                ),
            ));
        }
        ran += 1;
    }
    if ran == 0 {
        return Ok(Some("no seeds given".into()));
    }
    ensure!(
        NAME,
        injected > 0,
        "the fault plans of {ran} seeds injected no fault: the workload is too small to test anything"
    );
    Ok(None)
}
