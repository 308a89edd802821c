//! Jobs with a Google Sheets source, against the Sheets simulator: the
//! `crm.google_sheets.rate_limit` and `oauth.scopes` of the job file reach
//! the connector, `crm-sync check` compares the header row with
//! `expected_headers`, and `crm-sync run` of a sheet with invalid rows
//! exits 0 and reports them. Plus the dedupe stage of a job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crm_core::dedupe::{Deduper, MergePolicy};
use crm_core::{
    Change, FieldSchema, FieldType, ObjectSchema, ReadRequest, Record, Sink, Source, WriteBatch,
};
use crm_sheets::sim::{DEMO_HEADERS, SheetsSimConfig, SimCell};
use crm_sheets::{GoogleCredentials, RateLimit};
use crm_sim::SimHandle;
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::Mode;
use crm_sync::config::SyncJob;
use crm_sync::runner::{Overrides, run_job, sheets_connector};
use futures_util::StreamExt;

use support::{crm_sync, start_sheets_sim};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crm-sync-sheets-job-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A simulator with `rows` demo bookings (about one row in 100 bad).
async fn sim(rows: usize) -> (SimHandle, SheetsSimConfig, crm_sheets::sim::SheetsData) {
    let config = SheetsSimConfig::default().demo_rows(rows);
    let (handle, data) = start_sheets_sim(config.clone()).await;
    (handle, config, data)
}

fn credentials(handle: &SimHandle, config: &SheetsSimConfig) -> GoogleCredentials {
    GoogleCredentials::authorized_user(
        config.client_id.clone(),
        config.client_secret.clone().into(),
        config.refresh_token.clone().into(),
    )
    .with_token_uri(handle.url("/token"))
}

/// A job file for the simulator's sheet in `d`, with an authorized-user
/// credentials file beside it; `extra` is appended (top-level keys).
fn job_file(
    d: &Path,
    handle: &SimHandle,
    config: &SheetsSimConfig,
    sheet_extra: &str,
    extra: &str,
) -> PathBuf {
    let creds = serde_json::json!({
        "type": "authorized_user",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "refresh_token": config.refresh_token,
        "token_uri": handle.url("/token"),
    });
    std::fs::write(d.join("creds.json"), creds.to_string()).unwrap();
    let yaml = format!(
        r#"name: bookings
sheet:
  spreadsheet_id: "{id}"
  sheet_name: "{title}"
  base_url: "{base}"
  column_mapping:
    A: booking_id
    B: client_name
    C: campaign_name
    D: start_date
    E: end_date
    F: budget
    G: impressions_booked
    H: media_type
    I: dsp_platform
{sheet_extra}
validation:
  booking_id: {{ type: string, required: true, unique: true }}
  budget: {{ type: decimal, min: 0 }}
  start_date: {{ type: date, format: "YYYY-MM-DD" }}
  end_date: {{ type: date, after: start_date }}
destination:
  url: "sqlite://bookings.db"
crm:
  google_sheets:
    credentials: "creds.json"
{extra}"#,
        id = config.spreadsheet_id,
        title = config.sheet_title,
        base = handle.base_url(),
    );
    let path = d.join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The `expected_headers` block of the demo sheet's columns A..I.
fn expected_headers() -> String {
    let mut out = String::from("  expected_headers:\n");
    for (i, h) in DEMO_HEADERS.iter().take(9).enumerate() {
        let letter = char::from(b'A' + i as u8);
        out.push_str(&format!("    {letter}: \"{h}\"\n"));
    }
    out
}

fn overrides_for(credentials: Option<GoogleCredentials>, base: &Path) -> Overrides {
    let mut o = Overrides::default();
    o.google_credentials = credentials;
    o.base_dir = Some(base.to_path_buf());
    o
}

fn sheet_api_calls(handle: &SimHandle) -> usize {
    handle.request_log().count_calls("GET", "/v4/spreadsheets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_rate_limit_and_scopes_reach_the_sheets_connector() {
    let (handle, config, _) = sim(60).await;
    let d = dir("rate");
    let scopes = "oauth:\n  scopes: [\"https://www.googleapis.com/auth/spreadsheets\"]\n";
    let path = job_file(
        &d,
        &handle,
        &config,
        "",
        &format!("    rate_limit: 2  # per 100 seconds\n  sync:\n    batch_size: 10\n{scopes}"),
    );
    let job = SyncJob::load(&path).unwrap();

    // The connector's config carries both.
    let conn = sheets_connector(&job, None, Some(credentials(&handle, &config)), &d)
        .unwrap()
        .unwrap();
    assert_eq!(
        conn.config().rate_limit,
        RateLimit::new(2, Duration::from_secs(100))
    );
    assert_eq!(
        conn.config().oauth_scopes(),
        ["https://www.googleapis.com/auth/spreadsheets"]
    );

    // And its client obeys the rate: 60 rows in pages of 10 need a
    // spreadsheets.get and a batchGet per page; at 2 per 100 seconds only 2
    // are sent in the first seconds.
    let before = sheet_api_calls(&handle);
    let overrides = overrides_for(Some(credentials(&handle, &config)), &d);
    let run = tokio::time::timeout(
        Duration::from_secs(4),
        run_job(&job, Mode::Full, overrides, None),
    )
    .await;
    assert!(run.is_err(), "the run should wait for the rate limit");
    assert_eq!(sheet_api_calls(&handle) - before, 2);

    // The same job at seed 000's 100 per 100 seconds runs through.
    let path = job_file(
        &d,
        &handle,
        &config,
        "",
        &format!("    rate_limit: 100\n  sync:\n    batch_size: 10\n{scopes}"),
    );
    let job = SyncJob::load(&path).unwrap();
    let before = sheet_api_calls(&handle);
    let overrides = overrides_for(Some(credentials(&handle, &config)), &d);
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run_job(&job, Mode::Full, overrides, None),
    )
    .await
    .expect("an unthrottled run finishes")
    .unwrap();
    assert!(report.pages >= 6, "{report}");
    assert!(sheet_api_calls(&handle) - before > report.pages as usize);
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_rate_limit_given_twice_must_agree() {
    let yaml = |sheet_rate: &str| {
        format!(
            "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  rate_limit: {sheet_rate}\n\
             crm:\n  google_sheets:\n    rate_limit: 60 per minute\n"
        )
    };
    let err = SyncJob::from_yaml(&yaml("\"10 per second\""), "job.yaml").unwrap_err();
    assert!(
        err.message.contains("sheet.rate_limit") && err.message.contains("disagree"),
        "{err}"
    );
    let job = SyncJob::from_yaml(&yaml("\"60 per minute\""), "job.yaml").unwrap();
    let cfg = job.sheet_config().unwrap().unwrap();
    assert_eq!(cfg.rate_limit, RateLimit::new(60, Duration::from_secs(60)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_when_the_header_row_is_as_expected() {
    let (handle, config, _) = sim(20).await;
    let d = dir("check-ok");
    let path = job_file(&d, &handle, &config, &expected_headers(), "");
    let (code, out, err) = crm_sync(vec!["check".into(), path.display().to_string()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok      source headers 9 expected headers found"),
        "{out}"
    );
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_moved_renamed_and_deleted_columns_as_a_schema_mismatch() {
    let (handle, config, data) = sim(20).await;
    let d = dir("check-mismatch");
    let path = job_file(&d, &handle, &config, &expected_headers(), "");
    // Swap Client and Campaign (B, C), rename Media Type (H), delete DSP (I).
    data.with_sheet(&config.spreadsheet_id, &config.sheet_title, |s| {
        let b = s.cell(1, 1).clone();
        let c = s.cell(1, 2).clone();
        s.set(1, 1, c);
        s.set(1, 2, b);
        s.set(1, 7, SimCell::Text("Channel".into()));
        s.set(1, 8, SimCell::Empty);
    })
    .unwrap();
    let (code, out, err) = crm_sync(vec!["check".into(), path.display().to_string()]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("FAILED  source headers"), "{out}");
    assert!(err.contains("schema mismatch"), "{err}");
    for needle in [
        "column B: expected \"Client\", found \"Campaign\"",
        "\"Client\" is now in column C",
        "column C: expected \"Campaign\"",
        "column H: expected \"Media Type\", found \"Channel\"",
        "column I: expected \"DSP\", found an empty header",
        "no longer in the header row",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_invalid_rows_exits_0_and_reports_them() {
    let (handle, config, _) = sim(400).await;
    let d = dir("invalid-rows");
    let path = job_file(&d, &handle, &config, "", "");
    let (code, out, err) = crm_sync(vec![
        "run".into(),
        path.display().to_string(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let invalid = report["invalid"].as_u64().unwrap();
    let valid = report["valid"].as_u64().unwrap();
    assert!(invalid > 0, "{report}");
    assert_eq!(report["rows_read"].as_u64().unwrap(), valid + invalid);
    assert_eq!(report["created"].as_u64().unwrap(), valid);
    let rules = report["skipped_by_rule"].as_object().unwrap();
    assert!(!rules.is_empty(), "{report}");
    assert_eq!(report["deduped"].as_u64().unwrap(), 0, "{report}");

    // The plain report names them too.
    let (code, out, err) = crm_sync(vec![
        "run".into(),
        path.display().to_string(),
        "--full".into(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("skipped   {invalid} (dead letters)")),
        "{out}"
    );
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dedupe_defaults_to_the_job_key_and_the_newest_record() {
    let seed = SyncJob::from_yaml(crm_sync::cli::run::DEMO_JOB, "bookings.yaml").unwrap();
    assert_eq!(
        seed.deduper(),
        Some(Deduper::new(["booking_id"]).policy(MergePolicy::Newest))
    );
    let job = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  key_field: task_id\n  column_mapping: {A: task_id}\n\
         dedupe:\n  key: [client_name, campaign_name]\n  policy: first\n  case_insensitive: true\n",
        "job.yaml",
    )
    .unwrap();
    assert_eq!(
        job.deduper(),
        Some(
            Deduper::new(["client_name", "campaign_name"])
                .policy(MergePolicy::First)
                .case_insensitive()
        )
    );
    let job = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\n  key_field: task_id\n  column_mapping: {A: task_id}\n",
        "job.yaml",
    )
    .unwrap();
    assert_eq!(
        job.deduper(),
        Some(Deduper::new(["task_id"]).policy(MergePolicy::Newest))
    );
    let off = SyncJob::from_yaml(
        "sheet:\n  spreadsheet_id: a\n  sheet_name: b\ndedupe:\n  enabled: false\n",
        "job.yaml",
    )
    .unwrap();
    assert_eq!(off.deduper(), None);
    assert!(
        SyncJob::from_yaml(
            "sheet:\n  spreadsheet_id: a\n  sheet_name: b\ndedupe:\n  key: []\n",
            "job.yaml"
        )
        .is_err()
    );
}

fn raw_schema() -> ObjectSchema {
    ObjectSchema::new("raw")
        .field(FieldSchema::new("row_id", FieldType::Text).required())
        .field(FieldSchema::new("booking_id", FieldType::Text))
        .field(FieldSchema::new("campaign_name", FieldType::Text))
        .field(FieldSchema::new("updated_at", FieldType::DateTime))
        .primary_key(["row_id"])
}

fn store_schema() -> ObjectSchema {
    ObjectSchema::new("booking_t")
        .field(FieldSchema::new("booking_id", FieldType::Text).required())
        .field(FieldSchema::new("campaign_name", FieldType::Text))
        .field(FieldSchema::new("updated_at", FieldType::DateTime))
        .field(FieldSchema::new("synced_at", FieldType::DateTime))
        .primary_key(["booking_id"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dedupes_rows_sharing_its_key_keeping_the_newest() {
    let d = dir("dedupe");
    let src_url = format!("sqlite://{}?mode=rwc", d.join("source.db").display());
    let dest_url = format!("sqlite://{}?mode=rwc", d.join("store.db").display());
    let src = SqlConnector::connect_url(&src_url).await.unwrap();
    src.create_table(&raw_schema()).await.unwrap();
    // BK-2 appears three times (its latest row is the second); BK-1 once.
    let rows = [
        ("r1", "BK-1", "Spring", "2024-05-01T10:00:00Z"),
        ("r2", "BK-2", "Summer old", "2024-05-01T10:00:01Z"),
        ("r3", "BK-2", "Summer new", "2024-05-01T10:00:09Z"),
        ("r4", "BK-2", "Summer mid", "2024-05-01T10:00:05Z"),
    ];
    let records = rows
        .iter()
        .map(|(row, key, name, at)| {
            Record::new()
                .with("row_id", *row)
                .with("booking_id", *key)
                .with("campaign_name", *name)
                .with("updated_at", *at)
        })
        .collect();
    src.write("raw", WriteBatch::upsert("row_id", records))
        .await
        .unwrap();
    src.close().await;
    let dest = SqlConnector::connect_url(&dest_url).await.unwrap();
    dest.create_table(&store_schema()).await.unwrap();
    dest.close().await;

    let yaml = format!(
        "name: dd\ndatabase:\n  url: \"{src_url}\"\n  query: \"SELECT booking_id, campaign_name, updated_at FROM raw WHERE updated_at >= :last_sync\"\n  primary_key: [booking_id]\n\
         dedupe:\n  key: booking_id\n  policy: newest\n\
         destination:\n  url: \"{dest_url}\"\n  table: booking_t\n  create_table: false\n"
    );
    let job = SyncJob::from_yaml(&yaml, "dd.yaml").unwrap();
    let overrides = overrides_for(None, &d);
    let report = run_job(&job, Mode::Full, overrides, None).await.unwrap();
    assert_eq!(report.rows_read, 4, "{report}");
    assert_eq!(report.deduped, 2, "{report}");
    assert_eq!(report.created, 2, "{report}");

    let cfg = SqlConfig::builder()
        .url(dest_url.clone())
        .query("SELECT booking_id, campaign_name, synced_at FROM booking_t")
        .cursor_column("synced_at")
        .primary_key(["booking_id"])
        .build()
        .unwrap();
    let table = SqlConnector::connect(&cfg).await.unwrap();
    let mut stored = std::collections::BTreeMap::new();
    let mut pages = table.read(ReadRequest::full("booking_t"));
    while let Some(page) = pages.next().await {
        for change in page.unwrap().changes {
            if let Change::Upsert(r) = change {
                stored.insert(
                    r.text("booking_id").unwrap().to_owned(),
                    r.text("campaign_name").unwrap().to_owned(),
                );
            }
        }
    }
    assert_eq!(stored.len(), 2);
    assert_eq!(stored["BK-2"], "Summer new");
    let _ = std::fs::remove_dir_all(&d);
}
