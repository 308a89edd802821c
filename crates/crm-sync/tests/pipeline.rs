//! Pipeline behaviour over in-memory connectors: counts, dead letters, and
//! crash safety at every stage of every page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crm_core::dedupe::Deduper;
use crm_core::matching::MatchingConfig;
use crm_core::model::Campaign;
use crm_core::validate::ValidationRules;
use crm_core::{
    Capabilities, Change, Connector, Cursor, Error, ObjectSchema, Page, ReadRequest, Record,
    RecordId, Result, Sink, Source, Value, WriteBatch, WriteOp, WriteOutcome,
};
use crm_sync::pipeline::{CampaignMatching, Observer};
use crm_sync::state::{ReviewKind, Stage};
use crm_sync::{MemoryState, Mode, Pipeline, RunReport};
use futures_util::stream::{self, BoxStream, StreamExt};

/// A source over a fixed list of rows; the cursor is the position read.
struct VecSource {
    rows: Vec<Record>,
    page: usize,
}

#[async_trait]
impl Connector for VecSource {
    fn kind(&self) -> &'static str {
        "vec"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().incremental()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(ObjectSchema::new(object))
    }
}

impl Source for VecSource {
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let start: usize = req.since.map(|c| c.to_state().unwrap()).unwrap_or(0);
        let page = req.page_size.unwrap_or(self.page);
        let chunks: Vec<Result<Page>> = (start..self.rows.len())
            .step_by(page)
            .map(|from| {
                let to = (from + page).min(self.rows.len());
                Ok(Page {
                    changes: self.rows[from..to]
                        .iter()
                        .cloned()
                        .map(Change::Upsert)
                        .collect(),
                    cursor: Cursor::from_state(&to).unwrap(),
                })
            })
            .collect();
        stream::iter(chunks).boxed()
    }
}

/// A keyed store; rejects rows whose `budget` is above 1,000,000.
#[derive(Default)]
struct MapSink {
    rows: Mutex<BTreeMap<String, Record>>,
    writes: Mutex<usize>,
}

#[async_trait]
impl Connector for MapSink {
    fn kind(&self) -> &'static str {
        "map"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().upsert()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(ObjectSchema::new(object))
    }
}

#[async_trait]
impl Sink for MapSink {
    fn max_batch(&self, _object: &str) -> usize {
        3
    }
    async fn write(&self, _object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let WriteOp::Upsert { key } = &batch.op else {
            panic!("the pipeline upserts by key");
        };
        let mut rows = self.rows.lock().unwrap();
        let mut out = Vec::new();
        for (index, r) in batch.records.into_iter().enumerate() {
            let k = r.get(key).unwrap().to_string();
            let too_big = r
                .get("budget")
                .and_then(Value::as_decimal)
                .is_some_and(|b| b > 1_000_000.into());
            if too_big {
                out.push(WriteOutcome::Rejected {
                    index,
                    error: Error::invalid_input("budget does not fit NUMERIC(9,2)")
                        .with_context("field", "budget"),
                });
                continue;
            }
            let id = RecordId::new(k.clone());
            out.push(match rows.insert(k, r.clone()) {
                None => WriteOutcome::Created(id),
                Some(old) if old == r => WriteOutcome::Unchanged(id),
                Some(_) => WriteOutcome::Updated(id),
            });
        }
        *self.writes.lock().unwrap() += 1;
        Ok(out)
    }
}

const RULES: &str = r#"
validation:
  booking_id: { type: "string", required: true, unique: true }
  budget: { type: "decimal", min: 0 }
  start_date: { type: "date", format: "YYYY-MM-DD" }
  end_date: { type: "date", after: "start_date" }
"#;

fn row(i: usize) -> Record {
    let mut r = Record::new()
        .with("booking_id", format!("BK-{i:04}"))
        .with("campaign_name", NAMES[i % 7])
        .with("budget", format!("{}.50", 100 + i))
        .with("start_date", "2024-03-01")
        .with("end_date", "2024-03-31");
    match i % 11 {
        3 => r.set("budget", "-1"),
        5 => r.set("end_date", "2024-02-01"),
        7 => r.set("booking_id", ""),
        9 => r.set("budget", "5000000"),
        _ => None,
    };
    r
}

fn rows() -> Vec<Record> {
    (0..40).map(row).collect()
}

const MATCHING: &str = r#"
matching:
  strategies:
    - type: "exact_id"
      source: "booking.campaign_id"
      target: "campaign.id"
      priority: 1
    - type: "name_match"
      source: "booking.campaign_name"
      target: "campaign.name"
      algorithm: "fuzzy"
      threshold: 0.85
      priority: 2
  on_no_match: "create_unmatched_record"
  on_multiple_match: "flag_for_review"
"#;

const NAMES: [&str; 7] = [
    "Spring Sale",
    "Summer Promo",
    "Autumn Launch",
    "Winter Clearance",
    "Holiday Push",
    "Brand Awareness",
    "Retargeting",
];

fn campaign(id: &str, name: &str) -> Campaign {
    let r = Record::new().with("campaign_id", id).with("name", name);
    Campaign::try_from(&r).unwrap()
}

/// Spring Sale matches exactly, Summer Promo probably (one letter off),
/// Autumn Launch twice (multiple); the rest find nothing.
fn matching() -> Arc<CampaignMatching> {
    let config = MatchingConfig::from_yaml(MATCHING).unwrap();
    Arc::new(CampaignMatching::new(
        &config,
        vec![
            campaign("C-SPRING", "Spring Sale"),
            campaign("C-SUMMER", "Summer Promos"),
            campaign("C-AUT-1", "Autumn Launch"),
            campaign("C-AUT-2", "autumn launch!"),
        ],
    ))
}

fn pipeline<'a>(source: &'a VecSource, sink: &'a MapSink, state: &'a MemoryState) -> Pipeline<'a> {
    Pipeline::new("bookings", "Bookings", source, sink, state)
        .destination_object("booking")
        .key_field("booking_id")
        .validation(ValidationRules::from_yaml(RULES).unwrap())
        .dedupe(Deduper::new(["booking_id"]))
        .matcher(matching())
        .page_size(4)
}

#[tokio::test]
async fn a_run_reports_every_outcome_and_keeps_bad_rows() {
    let source = VecSource {
        rows: rows(),
        page: 4,
    };
    let sink = MapSink::default();
    let state = MemoryState::new();
    let report = pipeline(&source, &sink, &state)
        .run(Mode::Full)
        .await
        .unwrap();

    // 40 rows; i % 11 in {3, 5, 7} fail validation: i = 3,5,7,14,16,18,25,27,29,36,38.
    assert_eq!(report.rows_read, 40);
    assert_eq!(report.invalid, 11);
    assert_eq!(report.valid, 29);
    assert_eq!(report.skipped_by_rule.get("budget.min"), Some(&4));
    assert_eq!(report.skipped_by_rule.get("end_date.after"), Some(&4));
    assert_eq!(report.skipped_by_rule.get("booking_id.required"), Some(&3));
    // i % 11 == 9 is rejected by the destination: i = 9, 20, 31.
    assert_eq!(report.rejected, 3);
    assert_eq!(report.created, 26);
    assert_eq!(report.pages, 10);
    assert_eq!(sink.rows.lock().unwrap().len(), 26);
    // Dead letters: 11 invalid + 3 rejected, each with its reasons.
    let dead = state.dead_letters();
    assert_eq!(dead.len(), 14);
    let bk3 = dead.iter().find(|d| d.record_key == "BK-0003").unwrap();
    assert_eq!(bk3.stage, Stage::Validate);
    assert!(
        bk3.errors[0].starts_with("budget (min)"),
        "{:?}",
        bk3.errors
    );
    let bk9 = dead.iter().find(|d| d.record_key == "BK-0009").unwrap();
    assert_eq!(bk9.stage, Stage::Store);
    // Matching: probable and multiple wait for review.
    let total: u64 = report.match_status.values().sum();
    assert_eq!(total, 29);
    // Valid rows by name: i % 7 == 0 Spring, 1 Summer, 2 Autumn.
    let valid: Vec<usize> = (0..40).filter(|i| ![3, 5, 7].contains(&(i % 11))).collect();
    let count = |k: usize| valid.iter().filter(|i| *i % 7 == k).count() as u64;
    assert_eq!(report.matched("matched"), count(0));
    assert_eq!(report.matched("probable"), count(1));
    assert_eq!(report.matched("multiple"), count(2));
    assert_eq!(
        report.matched("unmatched"),
        29 - count(0) - count(1) - count(2)
    );
    let review = state.review_items();
    assert_eq!(review.len() as u64, count(1) + count(2));
    let multiple = review
        .iter()
        .find(|r| r.kind == ReviewKind::MultipleMatch)
        .unwrap();
    let ids: Vec<_> = multiple
        .candidates
        .iter()
        .map(|c| c.campaign_id.as_str())
        .collect();
    assert_eq!(ids, ["C-AUT-1", "C-AUT-2"]);
    assert_eq!(multiple.candidates[0].strategy, "name_match");
    {
        let stored = sink.rows.lock().unwrap();
        let spring = stored.get("BK-0000").unwrap();
        assert_eq!(spring.text("campaign_id"), Some("C-SPRING"));
        assert_eq!(spring.text("match_status"), Some("matched"));
        let summer = stored.get("BK-0001").unwrap();
        assert_eq!(summer.text("campaign_id"), Some("C-SUMMER"));
        assert_eq!(summer.text("match_status"), Some("probable"));
    }

    // A second incremental run reads nothing new.
    let again = pipeline(&source, &sink, &state)
        .run(Mode::Incremental)
        .await
        .unwrap();
    assert_eq!(again.rows_read, 0);
    // A full re-run changes nothing.
    let full = pipeline(&source, &sink, &state)
        .run(Mode::Full)
        .await
        .unwrap();
    assert_eq!((full.created, full.updated, full.unchanged), (0, 0, 26));
    assert_eq!(
        state.dead_letters().len(),
        14,
        "dead letters are replaced, not repeated"
    );
}

#[tokio::test]
async fn the_review_cap_is_honoured_with_a_warning() {
    let source = VecSource {
        rows: rows(),
        page: 4,
    };
    let sink = MapSink::default();
    let state = MemoryState::new();
    let report = pipeline(&source, &sink, &state)
        .max_manual_review(2)
        .run(Mode::Full)
        .await
        .unwrap();
    assert_eq!(state.review_items().len(), 2);
    let waiting = report.matched("probable") + report.matched("multiple");
    assert_eq!(report.review_overflow, waiting - 2);
    assert_eq!(report.warnings.len(), 1);
}

/// Stops the pipeline forever at one (page, stage), after telling the test.
struct CrashAt {
    page: u64,
    stage: Stage,
    reached: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[async_trait]
impl Observer for CrashAt {
    async fn after_stage(&self, page: u64, stage: Stage, _report: &RunReport) {
        if page == self.page && stage == self.stage {
            if let Some(tx) = self.reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test]
async fn a_crash_after_any_stage_of_any_page_loses_and_duplicates_nothing() {
    let source = VecSource {
        rows: rows(),
        page: 4,
    };
    let clean_sink = MapSink::default();
    let clean_state = MemoryState::new();
    pipeline(&source, &clean_sink, &clean_state)
        .run(Mode::Full)
        .await
        .unwrap();
    let expected = clean_sink.rows.lock().unwrap().clone();
    let expected_dead = clean_state.dead_letters();
    let expected_review = clean_state.review_items();

    for page in [1u64, 2, 5, 10] {
        for stage in Stage::ALL {
            let sink = MapSink::default();
            let state = MemoryState::new();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let crash = CrashAt {
                page,
                stage,
                reached: Mutex::new(Some(tx)),
            };
            {
                let crashing = pipeline(&source, &sink, &state).observer(&crash);
                let run = crashing.run(Mode::Incremental);
                tokio::select! {
                    _ = run => panic!("the run finished without reaching page {page} {stage:?}"),
                    _ = rx => {} // the crash point is reached: drop the run mid-flight
                }
            }
            let resumed = pipeline(&source, &sink, &state)
                .run(Mode::Incremental)
                .await
                .unwrap();
            assert!(resumed.rows_read <= 40, "{page} {stage:?}");
            assert_eq!(
                *sink.rows.lock().unwrap(),
                expected,
                "store after crash at page {page} {stage:?}"
            );
            assert_eq!(
                state.dead_letters(),
                expected_dead,
                "dead letters after crash at page {page} {stage:?}"
            );
            assert_eq!(
                state.review_items(),
                expected_review,
                "review after crash at page {page} {stage:?}"
            );
        }
    }
}
