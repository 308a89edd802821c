//! The seed 000 write-back app (`bookings_writeback`) against the Google
//! Sheets simulator and SQLite: figures land in their bookings' rows after
//! rows were inserted above them, a second run sends no `values.batchUpdate`,
//! `platform_wins` overwrites a hand-edited cell while `crm_wins` keeps it
//! and reports it, and every write is in the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crm_core::conflict::{ConflictConfig, ConflictPolicy};
use crm_core::mapping::Frequency;
use crm_examples::writeback::{self, Figure, SheetSim};
use crm_sheets::sim::SimCell;
use crm_sql::SqlConnector;
use crm_sql::state::{CredentialKey, StateStore};

const SPEND: usize = 9; // J: Actual Spend
const PACING: usize = 10; // K: Pacing %

fn cell(sim: &SheetSim, row: u32, col: usize) -> SimCell {
    sim.data
        .with_sheet(&sim.config.spreadsheet_id, &sim.config.sheet_title, |s| {
            s.cell(row, col).clone()
        })
        .unwrap()
}

fn number(c: &SimCell) -> f64 {
    match c {
        SimCell::Number(n) => n.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

fn batch_updates(sim: &SheetSim) -> usize {
    sim.handle
        .request_log()
        .count(|r| r.method == "POST" && r.path.ends_with("/values:batchUpdate"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_land_by_key_once_and_policies_decide_hand_edits() {
    let sim = writeback::start_sheet(30, 7).await.unwrap();
    let dir = std::env::temp_dir().join(format!("crm-examples-wb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("figures.db").display());
    let db = SqlConnector::connect_url(&url).await.unwrap();
    writeback::create_table(&db).await.unwrap();
    writeback::insert_figures(
        &db,
        &[
            Figure::new("BK-000001", "1250.50", "0.9125", "2027-03-01 06:00:00"),
            Figure::new("BK-000002", "310.00", "0.4000", "2027-03-01 06:00:00"),
            Figure::new("BK-000010", "42.10", "0.2500", "2027-03-01 06:00:00"),
            Figure::new("BK-000001", "1300.75", "0.9500", "2027-03-01 07:00:00"),
        ],
    )
    .await
    .unwrap();

    // Someone inserts two rows above the bookings: BK-000001 moves from row
    // 2 to row 4, BK-000010 from row 11 to row 13.
    sim.data
        .with_sheet(&sim.config.spreadsheet_id, &sim.config.sheet_title, |s| {
            s.insert_rows(2, 2);
            s.set(2, 0, SimCell::Text("BK-HAND".into()));
        })
        .unwrap();

    let mut job = writeback::job().unwrap();
    let hourly = writeback::run(&job, Some(Frequency::Hourly), &sim, &url)
        .await
        .unwrap();
    let daily = writeback::run(&job, Some(Frequency::Daily), &sim, &url)
        .await
        .unwrap();
    assert_eq!(hourly.changed.len(), 3, "{hourly}");
    assert_eq!(daily.changed.len(), 3, "{daily}");
    assert_eq!(batch_updates(&sim), 2);
    assert_eq!(cell(&sim, 4, 0), SimCell::Text("BK-000001".into()));
    assert_eq!(number(&cell(&sim, 4, PACING)), 0.95);
    assert_eq!(number(&cell(&sim, 4, SPEND)), 1300.75);
    assert_eq!(number(&cell(&sim, 5, PACING)), 0.4);
    assert_eq!(number(&cell(&sim, 13, SPEND)), 42.1);
    assert_eq!(cell(&sim, 2, PACING), SimCell::Empty);
    assert_eq!(cell(&sim, 3, PACING), SimCell::Empty);

    // A second run writes nothing: no batchUpdate at all.
    for f in [Frequency::Hourly, Frequency::Daily] {
        let again = writeback::run(&job, Some(f), &sim, &url).await.unwrap();
        assert!(again.changed.is_empty(), "{again}");
    }
    assert_eq!(batch_updates(&sim), 2);

    // Hand edits of Pacing % and new platform figures for both bookings.
    sim.data
        .with_sheet(&sim.config.spreadsheet_id, &sim.config.sheet_title, |s| {
            s.set(4, PACING, SimCell::Number("0.5".into()));
            s.set(5, PACING, SimCell::Number("0.6".into()));
        })
        .unwrap();
    writeback::insert_figures(
        &db,
        &[
            Figure::new("BK-000001", "1300.75", "0.9700", "2027-03-01 08:00:00"),
            Figure::new("BK-000002", "310.00", "0.4500", "2027-03-01 08:00:00"),
        ],
    )
    .await
    .unwrap();
    // crm_wins: the sheet's values stay, and are reported.
    job.write_back.as_mut().unwrap().conflict_resolution =
        ConflictConfig::new(ConflictPolicy::TargetWins);
    let kept = writeback::run(&job, Some(Frequency::Hourly), &sim, &url)
        .await
        .unwrap();
    assert!(kept.changed.is_empty(), "{kept}");
    let keys: Vec<&str> = kept.kept.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["BK-000001", "BK-000002"]);
    assert!(kept.kept.iter().all(|k| k.policy == "crm_wins"));
    assert_eq!(number(&cell(&sim, 4, PACING)), 0.5);
    assert_eq!(number(&cell(&sim, 5, PACING)), 0.6);
    assert_eq!(batch_updates(&sim), 2);

    // platform_wins: the next platform figure overwrites the hand edit.
    writeback::insert_figures(
        &db,
        &[Figure::new(
            "BK-000001",
            "1300.75",
            "0.9800",
            "2027-03-01 09:00:00",
        )],
    )
    .await
    .unwrap();
    job.write_back.as_mut().unwrap().conflict_resolution =
        ConflictConfig::new(ConflictPolicy::SourceWins);
    let over = writeback::run(&job, Some(Frequency::Hourly), &sim, &url)
        .await
        .unwrap();
    assert_eq!(over.changed.len(), 1, "{over}");
    assert!(over.changed[0].overwrote_edit);
    assert_eq!(over.changed[0].old.as_deref(), Some("0.5"));
    assert_eq!(number(&cell(&sim, 4, PACING)), 0.98);
    assert_eq!(number(&cell(&sim, 5, PACING)), 0.6);
    assert_eq!(batch_updates(&sim), 3);

    // The audit trail: each write (old, new, policy, run id) and the kept edit.
    let store = StateStore::open_url(&url, CredentialKey::generate().0)
        .await
        .unwrap();
    let log = store.audit_log("bookings", "BK-000001", 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["write_back", "write_back", "write_back_kept", "write_back"]
    );
    let first = log[0].new_values.as_ref().unwrap();
    assert_eq!(first["values"]["pacing_percent"], "0.95");
    assert_eq!(first["policy"], "platform_wins");
    assert_eq!(first["run_id"], hourly.run_id.as_str());
    let last = log[3].new_values.as_ref().unwrap();
    assert_eq!(log[3].old_values.as_ref().unwrap()["pacing_percent"], "0.5");
    assert_eq!(last["values"]["pacing_percent"], "0.98");
    assert_eq!(last["run_id"], over.run_id.as_str());
    assert_eq!(
        store
            .audit_log("bookings", "BK-000010", 100)
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await;
    db.close().await;
    sim.handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
