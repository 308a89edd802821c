//! The pipeline on real storage: an SQLite destination through crm-sql's
//! Sink and the state in crm-sql's state store. A crash after each stage of
//! a page, then a restart, leaves the same table, dead letters and review
//! queue as an uninterrupted run: nothing lost, nothing duplicated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use crm_core::validate::ValidationRules;
use crm_core::{
    Capabilities, Change, Connector, Cursor, FieldSchema, FieldType, ObjectSchema, Page,
    ReadRequest, Record, Result, Source,
};
use crm_sql::state::{CredentialKey, StateStore};
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::pipeline::Observer;
use crm_sync::state::{SqlState, Stage};
use crm_sync::{Mode, Pipeline, RunReport};
use futures_util::stream::{self, BoxStream, StreamExt};

struct VecSource(Vec<Record>);

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
        let page = req.page_size.unwrap_or(5);
        let pages: Vec<Result<Page>> = (start..self.0.len())
            .step_by(page)
            .map(|from| {
                let to = (from + page).min(self.0.len());
                Ok(Page {
                    changes: self.0[from..to]
                        .iter()
                        .cloned()
                        .map(Change::Upsert)
                        .collect(),
                    cursor: Cursor::from_state(&to).unwrap(),
                })
            })
            .collect();
        stream::iter(pages).boxed()
    }
}

const RULES: &str = r#"
booking_id: { type: "string", required: true, unique: true }
budget: { type: "decimal", min: 0 }
start_date: { type: "date", format: "YYYY-MM-DD" }
end_date: { type: "date", after: "start_date" }
"#;

fn rows() -> Vec<Record> {
    (0..30)
        .map(|i| {
            let mut r = Record::new()
                .with("booking_id", format!("BK-{i:03}"))
                .with("campaign_name", format!("Campaign {i}"))
                .with("budget", format!("{}.25", 1000 + i))
                .with("start_date", "2024-05-01")
                .with("end_date", "2024-05-31")
                .with("_row", i as i64 + 2);
            match i % 7 {
                2 => drop(r.set("budget", "-3")),
                4 => drop(r.set("booking_id", "")),
                // A client_code-style overflow: 300 characters into VARCHAR(40).
                6 => drop(r.set("campaign_name", "x".repeat(300))),
                _ => {}
            }
            r
        })
        .collect()
}

fn table() -> ObjectSchema {
    ObjectSchema::new("booking_t")
        .field(
            FieldSchema::new("booking_id", FieldType::Text)
                .required()
                .max_length(40),
        )
        .field(FieldSchema::new("campaign_name", FieldType::Text).max_length(40))
        .field(FieldSchema::new("budget", FieldType::Decimal).scale(2))
        .field(FieldSchema::new("start_date", FieldType::Date))
        .field(FieldSchema::new("end_date", FieldType::Date))
        .field(FieldSchema::new("synced_at", FieldType::DateTime))
        .primary_key(["booking_id"])
}

struct Db {
    dir: PathBuf,
    url: String,
}

fn db(name: &str) -> Db {
    let dir = std::env::temp_dir().join(format!("crm-sync-sql-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
    Db { dir, url }
}

async fn open(db: &Db) -> (SqlConnector, SqlState) {
    let sink = SqlConnector::connect_url(&db.url).await.unwrap();
    sink.create_table(&table()).await.unwrap();
    let store = StateStore::open_url(&db.url, CredentialKey::from_bytes([7; 32]))
        .await
        .unwrap();
    let state = SqlState::open(store, "bookings").await.unwrap();
    (sink, state)
}

async fn table_rows(db: &Db) -> BTreeMap<String, Record> {
    let cfg = SqlConfig::builder()
        .url(db.url.clone())
        .query("SELECT booking_id, campaign_name, budget, start_date, end_date, synced_at FROM booking_t")
        .cursor_column("synced_at")
        .primary_key(["booking_id"])
        .build()
        .unwrap();
    let source = SqlConnector::connect(&cfg).await.unwrap();
    let mut out = BTreeMap::new();
    let mut pages = source.read(ReadRequest::full("booking_t"));
    while let Some(page) = pages.next().await {
        for change in page.unwrap().changes {
            if let Change::Upsert(mut r) = change {
                r.remove("synced_at");
                r.updated_at = None;
                out.insert(r.text("booking_id").unwrap().to_owned(), r);
            }
        }
    }
    out
}

async fn run(
    source: &VecSource,
    sink: &SqlConnector,
    state: &SqlState,
    observer: Option<&dyn Observer>,
) -> Result<RunReport> {
    let mut p = Pipeline::new("bookings", "bookings", source, sink, state)
        .destination_object("booking_t")
        .key_field("booking_id")
        .validation(ValidationRules::from_yaml(RULES).unwrap())
        .page_size(5);
    if let Some(o) = observer {
        p = p.observer(o);
    }
    p.run(Mode::Incremental).await
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_and_state_survive_a_crash_at_every_stage() {
    let source = VecSource(rows());
    let clean = db("clean");
    let (sink, state) = open(&clean).await;
    let report = run(&source, &sink, &state, None).await.unwrap();
    // 30 rows: i % 7 == 2 (budget) and 4 (key) fail validation: 4 + 4 = 8;
    // i % 7 == 6 (too long for VARCHAR(40)) is rejected by the table: 4.
    assert_eq!(
        (
            report.rows_read,
            report.invalid,
            report.rejected,
            report.created
        ),
        (30, 8, 4, 18)
    );
    let expected = table_rows(&clean).await;
    assert_eq!(expected.len(), 18);
    assert!(
        expected.values().all(|r| r.get("_row").is_none()),
        "metadata is never stored"
    );
    let expected_dead = state
        .store()
        .count_dead_letters(state.connection())
        .await
        .unwrap();
    assert_eq!(expected_dead, 12);
    // A second run changes nothing and adds no dead letters.
    let again = run(&source, &sink, &state, None).await.unwrap();
    assert_eq!(again.rows_read, 0);

    for page in [1u64, 3, 6] {
        for stage in [
            Stage::Validate,
            Stage::Match,
            Stage::Store,
            Stage::Checkpoint,
        ] {
            let d = db(&format!("crash-{page}-{}", stage.as_str()));
            let (sink, state) = open(&d).await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let crash = CrashAt {
                page,
                stage,
                reached: Mutex::new(Some(tx)),
            };
            {
                let running = run(&source, &sink, &state, Some(&crash));
                tokio::select! {
                    r = running => panic!("finished without crashing: {r:?}"),
                    _ = rx => {}
                }
            }
            run(&source, &sink, &state, None).await.unwrap();
            assert_eq!(
                table_rows(&d).await,
                expected,
                "table after a crash at page {page} {stage:?}"
            );
            assert_eq!(
                state
                    .store()
                    .count_dead_letters(state.connection())
                    .await
                    .unwrap(),
                expected_dead,
                "dead letters after a crash at page {page} {stage:?}"
            );
            let _ = std::fs::remove_dir_all(&d.dir);
        }
    }
    // A full run after 10 rows left the source removes their stored rows.
    let shorter = VecSource(rows().into_iter().take(20).collect());
    let keys = crm_sync::runner::SqlKeys::new(clean.url.clone());
    let full = Pipeline::new("bookings", "bookings", &shorter, &sink, &state)
        .destination_object("booking_t")
        .key_field("booking_id")
        .validation(ValidationRules::from_yaml(RULES).unwrap())
        .page_size(5)
        .remove_missing(&keys)
        .run(Mode::Full)
        .await
        .unwrap();
    let kept: BTreeMap<String, Record> = expected
        .iter()
        .filter(|(k, _)| k.as_str() < "BK-020")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(full.removed_at_source, (expected.len() - kept.len()) as u64);
    assert_eq!(full.deleted, full.removed_at_source);
    assert_eq!(table_rows(&clean).await, kept);
    let _ = std::fs::remove_dir_all(&clean.dir);
}
