//! Write-back (`crm_sync::writeback`, `crm-sync writeback`) against the
//! Google Sheets simulator and SQLite: which fields are due, cells located
//! by key, digests that make a re-run write nothing, conflict policies,
//! audit entries, missing and appended rows, batching, on-match campaign
//! ids, and the command's exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crm_core::ErrorKind;
use crm_core::conflict::{ConflictConfig, ConflictPolicy};
use crm_core::mapping::Frequency;
use crm_sheets::GoogleCredentials;
use crm_sheets::sim::{SheetsData, SheetsSimConfig, SimCell};
use crm_sim::SimHandle;
use crm_sql::SqlConnector;
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::config::SyncJob;
use crm_sync::writeback::{WriteBackOverrides, WriteBackReport, due_fields, run_write_back_job};

use support::{crm_sync, start_sheets_sim};

const SPEND: usize = 9; // J
const PACING: usize = 10; // K
const CAMPAIGN_ID: usize = 11; // L
const CAMPAIGN_STATUS: usize = 12; // M

struct Env {
    handle: SimHandle,
    config: SheetsSimConfig,
    data: SheetsData,
    dir: PathBuf,
    url: String,
}

impl Env {
    async fn new(name: &str, rows: usize) -> Env {
        let config =
            SheetsSimConfig::default()
                .demo_rows(rows)
                .quotas(None, None, Duration::from_secs(60));
        let (handle, data) = start_sheets_sim(config.clone()).await;
        let dir = std::env::temp_dir().join(format!("crm-sync-wb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("figures.db").display());
        let db = SqlConnector::connect_url(&url).await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE pacing_snapshots (booking_id TEXT NOT NULL, actual_spend NUMERIC, \
             pacing_rate NUMERIC, updated_at TEXT NOT NULL, PRIMARY KEY (booking_id, updated_at))",
        )
        .await
        .unwrap();
        db.close().await;
        Env {
            handle,
            config,
            data,
            dir,
            url,
        }
    }

    async fn figures(&self, rows: &[(&str, &str, &str, &str)]) {
        let db = SqlConnector::connect_url(&self.url).await.unwrap();
        for (id, spend, pacing, at) in rows {
            db.execute_unprepared(&format!(
                "INSERT INTO pacing_snapshots VALUES ('{id}', {spend}, {pacing}, '{at}')"
            ))
            .await
            .unwrap();
        }
        db.close().await;
    }

    fn credentials(&self) -> GoogleCredentials {
        GoogleCredentials::authorized_user(
            self.config.client_id.clone(),
            self.config.client_secret.clone().into(),
            self.config.refresh_token.clone().into(),
        )
        .with_token_uri(self.handle.url("/token"))
    }

    fn overrides(&self) -> WriteBackOverrides {
        let mut o = WriteBackOverrides::default();
        o.sheet_base_url = Some(self.handle.base_url().to_owned());
        o.google_credentials = Some(self.credentials());
        o.database_url = Some(self.url.clone());
        o.base_dir = Some(self.dir.clone());
        o
    }

    async fn run(&self, job: &SyncJob, f: Option<Frequency>) -> WriteBackReport {
        run_write_back_job(job, f, self.overrides()).await.unwrap()
    }

    fn cell(&self, row: u32, col: usize) -> SimCell {
        self.data
            .with_sheet(&self.config.spreadsheet_id, &self.config.sheet_title, |s| {
                s.cell(row, col).clone()
            })
            .unwrap()
    }

    fn set(&self, row: u32, col: usize, cell: SimCell) {
        self.data
            .with_sheet(&self.config.spreadsheet_id, &self.config.sheet_title, |s| {
                s.set(row, col, cell)
            })
            .unwrap();
    }

    fn insert_rows(&self, at: u32, n: u32) {
        self.data
            .with_sheet(&self.config.spreadsheet_id, &self.config.sheet_title, |s| {
                s.insert_rows(at, n)
            })
            .unwrap();
    }

    fn batch_updates(&self) -> usize {
        self.handle
            .request_log()
            .count(|r| r.method == "POST" && r.path.ends_with("/values:batchUpdate"))
    }

    async fn store(&self) -> StateStore {
        StateStore::open_url(&self.url, CredentialKey::generate().0)
            .await
            .unwrap()
    }
}

fn number(cell: &SimCell) -> f64 {
    match cell {
        SimCell::Number(n) | SimCell::Text(n) => n.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

const FIELDS: &str = r#"
write_back:
  fields:
    - { source: "gold.pacing_snapshots.actual_spend", target: "bookings.actual_spend", frequency: daily }
    - { source: "gold.pacing_snapshots.pacing_rate", target: "bookings.pacing_percent", frequency: hourly }
  conflict_resolution: POLICY
  audit_trail: true
"#;

fn job(policy: &str, sheet_extra: &str, extra: &str) -> SyncJob {
    let yaml = format!(
        r#"name: bookings
sheet:
  spreadsheet_id: "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
  sheet_name: "Bookings"
  column_mapping: {{A: booking_id, B: client_name, C: campaign_name}}
  write_back:
    columns: {{J: actual_spend, K: pacing_percent, L: campaign_id, M: campaign_status}}
{sheet_extra}
destination:
  url: "sqlite://figures.db"
{fields}
{extra}"#,
        fields = FIELDS.replace("POLICY", policy),
    );
    SyncJob::from_yaml(&yaml, "job.yaml").unwrap()
}

#[test]
fn due_fields_follow_the_frequency_and_the_sheet_columns() {
    let j = job("platform_wins", "", "");
    let hourly = due_fields(&j, Some(Frequency::Hourly)).unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(hourly[0].target(), "pacing_percent");
    assert_eq!(hourly[0].table.as_deref(), Some("gold.pacing_snapshots"));
    assert_eq!(due_fields(&j, None).unwrap().len(), 2);
    assert!(
        due_fields(&j, Some(Frequency::OnChange))
            .unwrap()
            .is_empty()
    );
    // on_match without configured fields: campaign_id and campaign_status.
    let m = due_fields(&j, Some(Frequency::OnMatch)).unwrap();
    let targets: Vec<&str> = m.iter().map(|d| d.target()).collect();
    assert_eq!(targets, ["campaign_id", "campaign_status"]);
    assert!(m.iter().all(|d| d.table.is_none()));

    // A target without a write-back column.
    let bad = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  column_mapping: {A: booking_id}\n  \
         write_back:\n    columns: {J: actual_spend}\n\
         write_back:\n  fields:\n    - {source: t.pacing_rate, target: bookings.pacing_percent, frequency: hourly}\n",
        "job.yaml",
    )
    .unwrap();
    let err = due_fields(&bad, None).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput);
    assert!(err.to_string().contains("pacing_percent"), "{err}");
    // No sheet write-back columns.
    let bad = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  column_mapping: {A: booking_id}\n\
         write_back:\n  fields:\n    - {source: t.x, target: bookings.x, frequency: daily}\n",
        "job.yaml",
    )
    .unwrap();
    assert!(
        due_fields(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("sheet.write_back.columns")
    );
    // No write_back block at all.
    let none = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  column_mapping: {A: booking_id}\n",
        "job.yaml",
    )
    .unwrap();
    assert!(due_fields(&none, None).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_land_by_key_and_a_rerun_writes_nothing() {
    let env = Env::new("bykey", 40).await;
    env.figures(&[
        ("BK-000001", "1250.50", "0.9125", "2027-03-01 06:00:00"),
        ("BK-000002", "310", "0.4", "2027-03-01 06:00:00"),
        ("BK-000001", "1300.75", "0.95", "2027-03-01 07:00:00"),
        ("BK-999999", "1", "0.1", "2027-03-01 06:00:00"),
    ])
    .await;
    // Rows inserted above the bookings: BK-000001 moves from row 2 to row 5.
    env.insert_rows(2, 3);
    let j = job("platform_wins", "", "");
    let hourly = env.run(&j, Some(Frequency::Hourly)).await;
    assert_eq!(hourly.fields, ["pacing_percent"]);
    assert_eq!(hourly.changed.len(), 2, "{hourly}");
    assert_eq!(hourly.missing, ["BK-999999"]);
    assert_eq!(env.batch_updates(), 1);
    assert_eq!(number(&env.cell(5, PACING)), 0.95);
    assert_eq!(number(&env.cell(6, PACING)), 0.4);
    assert_eq!(env.cell(5, SPEND), SimCell::Empty);
    assert_eq!(hourly.changed[0].row, Some(5));

    let daily = env.run(&j, Some(Frequency::Daily)).await;
    assert_eq!(daily.changed.len(), 2);
    assert_eq!(number(&env.cell(5, SPEND)), 1300.75);
    assert_eq!(number(&env.cell(6, SPEND)), 310.0);
    assert_eq!(env.batch_updates(), 2);

    // Again, both and all: nothing written, no batchUpdate.
    for f in [Some(Frequency::Hourly), Some(Frequency::Daily), None] {
        let again = env.run(&j, f).await;
        assert!(again.changed.is_empty(), "{again}");
        assert_eq!(again.write_calls, 0);
    }
    assert_eq!(env.batch_updates(), 2);

    // A new snapshot: only that cell is written.
    env.figures(&[("BK-000002", "310", "0.55", "2027-03-01 08:00:00")])
        .await;
    let next = env.run(&j, None).await;
    assert_eq!(next.changed.len(), 1, "{next}");
    assert_eq!(next.changed[0].field, "pacing_percent");
    assert_eq!(next.changed[0].old.as_deref(), Some("0.4"));
    assert_eq!(next.unchanged_cells, 3);
    assert_eq!(number(&env.cell(6, PACING)), 0.55);
    assert_eq!(env.batch_updates(), 3);

    // One audit entry per written row and run, with old, new, policy, run id.
    let store = env.store().await;
    let log = store.audit_log("bookings", "BK-000002", 100).await.unwrap();
    assert_eq!(log.len(), 3);
    let last = log.last().unwrap();
    assert_eq!(last.action, "write_back");
    assert_eq!(last.old_values.as_ref().unwrap()["pacing_percent"], "0.4");
    let new = last.new_values.as_ref().unwrap();
    assert_eq!(new["values"]["pacing_percent"], "0.55");
    assert_eq!(new["policy"], "platform_wins");
    assert_eq!(new["run_id"], next.run_id.as_str());
    store.close().await;
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_cells_edited_in_the_sheet() {
    let env = Env::new("policies", 10).await;
    env.figures(&[
        ("BK-000001", "100", "0.5", "2027-03-01 06:00:00"),
        ("BK-000002", "200", "0.6", "2027-03-01 06:00:00"),
    ])
    .await;
    let platform = job("platform_wins", "", "");
    let crm = job("crm_wins", "", "");
    env.run(&platform, Some(Frequency::Hourly)).await;
    // Hand edits in the sheet; a platform edit of BK-000002 only.
    env.set(2, PACING, SimCell::Number("0.77".into()));
    env.set(3, PACING, SimCell::Number("0.88".into()));
    let left = env.run(&platform, Some(Frequency::Hourly)).await;
    assert!(left.changed.is_empty());
    assert_eq!(
        left.sheet_edits_left, 2,
        "only the sheet changed: left alone"
    );

    // Both sides changed: crm_wins keeps the sheet's value and reports it.
    env.figures(&[
        ("BK-000001", "100", "0.51", "2027-03-01 07:00:00"),
        ("BK-000002", "200", "0.61", "2027-03-01 07:00:00"),
    ])
    .await;
    let before = env.batch_updates();
    let kept = env.run(&crm, Some(Frequency::Hourly)).await;
    assert!(kept.changed.is_empty(), "{kept}");
    assert_eq!(kept.kept.len(), 2);
    assert_eq!(kept.kept[0].key, "BK-000001");
    assert_eq!(kept.kept[0].sheet_value.as_deref(), Some("0.77"));
    assert_eq!(kept.kept[0].platform_value.as_deref(), Some("0.51"));
    assert_eq!(kept.kept[0].policy, "crm_wins");
    assert_eq!(env.batch_updates(), before);
    assert_eq!(number(&env.cell(2, PACING)), 0.77);
    // Reported once.
    let quiet = env.run(&crm, Some(Frequency::Hourly)).await;
    assert!(quiet.kept.is_empty() && quiet.changed.is_empty());

    // The next platform change under platform_wins overwrites the edit.
    env.figures(&[("BK-000002", "200", "0.65", "2027-03-01 08:00:00")])
        .await;
    let over = env.run(&platform, Some(Frequency::Hourly)).await;
    assert_eq!(over.changed.len(), 1, "{over}");
    assert!(over.changed[0].overwrote_edit);
    assert_eq!(over.changed[0].old.as_deref(), Some("0.88"));
    assert_eq!(number(&env.cell(3, PACING)), 0.65);
    assert_eq!(number(&env.cell(2, PACING)), 0.77);

    let store = env.store().await;
    let log = store.audit_log("bookings", "BK-000001", 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["write_back", "write_back_kept"]);
    assert_eq!(log[1].new_values.as_ref().unwrap()["policy"], "crm_wins");
    let log = store.audit_log("bookings", "BK-000002", 100).await.unwrap();
    let overwrite = log.last().unwrap().new_values.clone().unwrap();
    assert_eq!(overwrite["overwrote_sheet_edits"][0], "pacing_percent");

    // manual: left alone and reported on every run.
    let mut manual = job("manual", "", "");
    manual.write_back.as_mut().unwrap().conflict_resolution =
        ConflictConfig::new(ConflictPolicy::Manual);
    env.set(3, PACING, SimCell::Text("hand".into()));
    env.figures(&[("BK-000002", "200", "0.7", "2027-03-01 09:00:00")])
        .await;
    for _ in 0..2 {
        let r = env.run(&manual, Some(Frequency::Hourly)).await;
        assert_eq!(r.kept.len(), 1, "{r}");
        assert_eq!(r.kept[0].policy, "manual");
    }
    assert_eq!(env.cell(3, PACING), SimCell::Text("hand".into()));
    store.close().await;
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_follow_the_sink_and_new_keys_append_only_when_configured() {
    let env = Env::new("batches", 10).await;
    let rows: Vec<(String, String)> = (1..=5)
        .map(|n| (format!("BK-{n:06}"), format!("0.{n}")))
        .collect();
    let figures: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|(k, p)| (k.as_str(), "1", p.as_str(), "2027-03-01 06:00:00"))
        .collect();
    env.figures(&figures).await;
    env.figures(&[("BK-NEW", "5", "0.5", "2027-03-01 06:00:00")])
        .await;
    let j = job(
        "platform_wins",
        "    max_rows_per_request: 2\n    append_new_rows: true",
        "",
    );
    let r = env.run(&j, Some(Frequency::Hourly)).await;
    assert_eq!(r.write_calls, 3, "{r}"); // 6 rows, 2 per call
    assert_eq!(r.appended, ["BK-NEW"]);
    assert!(r.missing.is_empty());
    assert_eq!(env.batch_updates(), 3);
    assert_eq!(env.cell(12, 0), SimCell::Text("BK-NEW".into()));
    assert_eq!(number(&env.cell(12, PACING)), 0.5);
    assert_eq!(number(&env.cell(6, PACING)), 0.5);
    let again = env.run(&j, Some(Frequency::Hourly)).await;
    assert_eq!(again.write_calls, 0, "{again}");
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_match_writes_the_matched_campaign_of_newly_matched_rows() {
    let env = Env::new("onmatch", 10).await;
    let db = SqlConnector::connect_url(&env.url).await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE booking (booking_id TEXT PRIMARY KEY, campaign_id TEXT, match_status TEXT, \
         updated_at TEXT NOT NULL)",
    )
    .await
    .unwrap();
    db.execute_unprepared(
        "INSERT INTO booking VALUES ('BK-000001', 'CMP-0001', 'matched', '2027-03-01 06:00:00'), \
         ('BK-000002', 'CMP-0002', 'probable', '2027-03-01 06:00:00'), \
         ('BK-000003', NULL, 'unmatched', '2027-03-01 06:00:00')",
    )
    .await
    .unwrap();
    let j = job("platform_wins", "", "");
    let campaigns = crm_sync::campaigns::from_reader(
        "campaign_id,name,status\nCMP-0001,Acme Spring,active\nCMP-0002,Globex,paused\n".as_bytes(),
        "campaigns.csv",
    )
    .unwrap();
    let mut o = env.overrides();
    o.campaigns = Some(campaigns.clone());
    let r = run_write_back_job(&j, Some(Frequency::OnMatch), o)
        .await
        .unwrap();
    assert_eq!(r.changed.len(), 2, "{r}");
    assert_eq!(env.cell(2, CAMPAIGN_ID), SimCell::Text("CMP-0001".into()));
    assert_eq!(env.cell(2, CAMPAIGN_STATUS), SimCell::Text("active".into()));
    assert_eq!(env.cell(3, CAMPAIGN_ID), SimCell::Empty);
    // A newly matched row: only it is written.
    db.execute_unprepared(
        "UPDATE booking SET match_status = 'matched', updated_at = '2027-03-01 07:00:00' \
         WHERE booking_id = 'BK-000002'",
    )
    .await
    .unwrap();
    let mut o = env.overrides();
    o.campaigns = Some(campaigns);
    let r = run_write_back_job(&j, Some(Frequency::OnMatch), o)
        .await
        .unwrap();
    let keys: Vec<&str> = r.changed.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["BK-000002", "BK-000002"]);
    assert_eq!(env.cell(3, CAMPAIGN_STATUS), SimCell::Text("paused".into()));
    db.close().await;
    env.handle.shutdown().await;
}

fn write_job_file(env: &Env, body: &str) -> PathBuf {
    let creds = serde_json::json!({
        "type": "authorized_user",
        "client_id": env.config.client_id,
        "client_secret": env.config.client_secret,
        "refresh_token": env.config.refresh_token,
        "token_uri": env.handle.url("/token"),
    });
    std::fs::write(env.dir.join("creds.json"), creds.to_string()).unwrap();
    let path = env.dir.join("job.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_writes_back_and_exits_as_the_others() {
    let env = Env::new("cli", 10).await;
    env.figures(&[("BK-000001", "12.5", "0.25", "2027-03-01 06:00:00")])
        .await;
    let yaml = format!(
        r#"name: bookings
sheet:
  spreadsheet_id: "{id}"
  sheet_name: "Bookings"
  base_url: "{base}"
  column_mapping: {{A: booking_id}}
  write_back:
    columns: {{J: actual_spend, K: pacing_percent}}
destination:
  url: "sqlite://figures.db"
crm:
  google_sheets:
    credentials: "creds.json"
{fields}"#,
        id = env.config.spreadsheet_id,
        base = env.handle.base_url(),
        fields = FIELDS.replace("POLICY", "platform_wins"),
    );
    let path = write_job_file(&env, &yaml);
    let (code, out, err) = crm_sync(vec![
        "writeback".into(),
        path_arg(&path),
        "--frequency".into(),
        "hourly".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 cells written"), "{out}");
    assert_eq!(number(&env.cell(2, PACING)), 0.25);
    assert_eq!(env.cell(2, SPEND), SimCell::Empty);
    let (code, out, err) =
        crm_sync(vec!["writeback".into(), path_arg(&path), "--json".into()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["changed"].as_array().unwrap().len(), 1);
    assert_eq!(json["changed"][0]["field"], "actual_spend");

    // A bad frequency and a job without write-back: exit 2.
    let (code, _, _) = crm_sync(vec![
        "writeback".into(),
        path_arg(&path),
        "--frequency".into(),
        "weekly".into(),
    ])
    .await;
    assert_eq!(code, 2);
    let no_wb = write_job_file(
        &env,
        &yaml.replace(&FIELDS.replace("POLICY", "platform_wins"), ""),
    );
    let (code, _, err) = crm_sync(vec!["writeback".into(), path_arg(&no_wb)]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("write_back"), "{err}");
    // An unreachable sheet: exit 2 (connection problem).
    let bad = write_job_file(
        &env,
        &yaml.replace(env.handle.base_url(), "http://127.0.0.1:9"),
    );
    let (code, _, err) = crm_sync(vec!["writeback".into(), path_arg(&bad)]).await;
    assert_eq!(code, 2, "{err}");
    env.handle.shutdown().await;
}
