//! The connector against the Sheets simulator over 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use crm_core::mapping::ColumnMapping;
use crm_core::{
    Change, Connector, ErrorKind, ReadRequest, Record, Sink, Source, Value, WriteBatch,
    WriteOutcome,
};
use crm_sheets::cell::{Cell, ColumnType};
use crm_sheets::rows::ERRORS_FIELD;
use crm_sheets::sim::{DemoOptions, SheetsSimConfig, SimCell, SimSheet, demo_bookings, demo_row};
use crm_sheets::wire::{DateTimeRenderOption, Dimension, ValueRange, ValueRenderOption};
use crm_sheets::{GoogleCredentials, RateLimit, SheetsConfig, WriteBackColumns};
use crm_sim::FaultPlan;
use futures_util::StreamExt;
use rand_chacha::rand_core::SeedableRng;

fn upserts(changes: &[Change]) -> Vec<&Record> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(r) => Some(r),
            Change::Delete { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_in_the_minimum_number_of_calls() {
    let env = start(unlimited(), bookings(10_000, false), None).await;
    let conn = connector(&env, config(&env).page_size(1000));
    let pages = read_all(&conn, None).await.unwrap();
    let all = changes(&pages);
    assert_eq!(all.len(), 10_000);
    let ids: HashSet<_> = all.iter().filter_map(|c| c.id().cloned()).collect();
    assert_eq!(ids.len(), 10_000);
    // One spreadsheets.get, then ceil(10,000 / 1,000) batchGets (the first
    // also fetching the header row), one more spreadsheets.get at the end
    // (has the grid grown during the read?), and one token grant.
    assert_eq!(count(&env, "GET", "/values:batchGet"), 10);
    assert_eq!(
        count(&env, "GET", &format!("/v4/spreadsheets/{SPREADSHEET}")),
        2
    );
    assert_eq!(count(&env, "POST", "/token"), 1);
    assert_eq!(env.handle.request_log().len(), 13);
    // Exact money at scale 2 and serial dates.
    let first = upserts(&all)[0];
    assert_eq!(
        first.get("budget").unwrap().as_decimal().unwrap().scale(),
        2
    );
    assert!(matches!(first.get("start_date"), Some(Value::Date(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_incremental_run_yields_exactly_the_six_changes() {
    let env = start(unlimited(), bookings(3000, false), None).await;
    let conn = connector(&env, config(&env).page_size(500));
    let first = read_all(&conn, None).await.unwrap();
    assert_eq!(changes(&first).len(), 3000);
    let cursor = first.last().unwrap().cursor.clone();

    // Change 3 rows, delete 1, append 2.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        for row in [10, 1500, 2900] {
            s.set(row, 5, SimCell::Number("999.9".into()));
        }
        // Row 101 holds BK-000100.
        s.delete_row(101);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in [3001, 3002] {
            let row = s.row_count + 1;
            s.set_row(row, demo_row(&mut rng, n));
        }
    });
    let second = read_all(&conn, Some(cursor)).await.unwrap();
    let got = changes(&second);
    assert_eq!(got.len(), 6, "{got:?}");
    let mut ids: Vec<String> = got
        .iter()
        .map(|c| match c {
            Change::Upsert(r) => format!("u:{}", r.id.as_ref().unwrap()),
            Change::Delete { id, .. } => format!("d:{id}"),
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "d:BK-000100",
            "u:BK-000009",
            "u:BK-001499",
            "u:BK-002899",
            "u:BK-003001",
            "u:BK-003002"
        ]
    );
    // A third run sees nothing.
    let third = read_all(&conn, Some(second.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(changes(&third).is_empty());
}

fn move_column_c_to_n(s: &mut SimSheet) {
    for row in 1..=s.row_count {
        let v = s.cell(row, 2).clone();
        for c in 2..13 {
            let next = s.cell(row, c + 1).clone();
            s.set(row, c, next);
        }
        s.set(row, 13, v);
    }
    s.column_count = 14;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_column_fails_with_schema_mismatch() {
    let env = start(unlimited(), bookings(200, false), None).await;
    let conn = connector(&env, config(&env));
    let first = read_all(&conn, None).await.unwrap();
    let cursor = first.last().unwrap().cursor.clone();
    env.data
        .with_sheet(SPREADSHEET, "Bookings", move_column_c_to_n);
    // Against the headers remembered in the cursor.
    let err = read_all(&conn, Some(cursor)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch);
    let cols = err.context_value("columns").unwrap();
    assert!(cols.contains('C') && cols.contains('N'), "{err}");
    assert!(err.to_string().contains("now in column N"), "{err}");
    // And against configured expected headers, on a full read.
    let cfg = config(&env)
        .expected_header("A", "Booking ID")
        .expected_header("C", "Campaign");
    let err = read_all(&connector(&env, cfg), None).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_of_500_rows_is_one_call_and_lands_by_key_after_inserts() {
    let env = start(unlimited(), bookings(1000, false), None).await;
    let conn = connector(&env, config(&env).write_back(write_back()));
    assert!(conn.capabilities().upsert);
    // Someone inserts 3 rows near the top after the bookings were read.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        s.insert_rows(2, 3);
        s.set(2, 0, SimCell::Text("BK-NEW-1".into()));
    });
    let records: Vec<Record> = (1..=500)
        .map(|n| {
            Record::new()
                .with("booking_id", format!("BK-{n:06}"))
                .with(
                    "actual_spend",
                    Value::Decimal(format!("{n}.1").parse().unwrap()),
                )
                .with("pacing_percent", Value::Decimal("0.875".parse().unwrap()))
                .with("campaign_id", format!("C-{n}"))
                .with("campaign_status", "active")
        })
        .collect();
    assert_eq!(conn.max_batch("bookings"), 500);
    let out = conn
        .write(
            "bookings",
            WriteBatch::upsert("booking_id", records.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 500);
    assert!(
        out.iter().all(|o| matches!(o, WriteOutcome::Updated(_))),
        "{out:?}"
    );
    assert_eq!(count(&env, "POST", "/values:batchUpdate"), 1);
    // Booking n is on row n + 1 + 3 now; its figures are there.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        for n in [1u32, 250, 500] {
            let row = n + 4;
            assert_eq!(s.cell(row, 0), &SimCell::Text(format!("BK-{n:06}")));
            assert_eq!(s.cell(row, 9), &SimCell::Number(format!("{n}.1")));
            assert_eq!(s.cell(row, 11), &SimCell::Text(format!("C-{n}")));
        }
        assert_eq!(s.cell(505, 9), &SimCell::Empty);
    });
    // The same batch again changes nothing and sends no update.
    let again = conn
        .write("bookings", WriteBatch::upsert("booking_id", records))
        .await
        .unwrap();
    assert!(
        again
            .iter()
            .all(|o| matches!(o, WriteOutcome::Unchanged(_)))
    );
    assert_eq!(count(&env, "POST", "/values:batchUpdate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_burst_and_a_token_expiry_mid_read_read_every_row_once() {
    let plan = FaultPlan::from_yaml(
        r#"
seed: 3
rules:
  - fault: { kind: rate_limited, retry_after_s: 1, burst: 3 }
    when: { nth: [3] }
    match: { path_prefix: /v4/ }
  - fault: { kind: expire_token }
    when: { nth: [6] }
    match: { path_prefix: /v4/ }
"#,
    )
    .unwrap();
    let env = start(unlimited(), bookings(5000, false), Some(plan)).await;
    let conn = connector(&env, config(&env).page_size(500));
    let pages = read_all(&conn, None).await.unwrap();
    let all = changes(&pages);
    let ids: HashSet<_> = all.iter().filter_map(|c| c.id().cloned()).collect();
    assert_eq!(all.len(), 5000);
    assert_eq!(ids.len(), 5000);
    let log = env.handle.request_log();
    assert_eq!(log.count_status(429), 3);
    assert!(log.count_status(401) >= 1);
    assert!(count(&env, "POST", "/token") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_row_6_of_900_reads_898_rows() {
    let mut sheet = bookings(899, false);
    sheet.cells[5] = Vec::new(); // row 6
    let env = start(unlimited(), sheet, None).await;
    let conn = connector(&env, config(&env).page_size(100));
    let all = changes(&read_all(&conn, None).await.unwrap());
    assert_eq!(all.len(), 898);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_become_row_problems_not_panics() {
    let env = start(unlimited(), bookings(1000, true), None).await;
    let conn = connector(&env, config(&env));
    let all = changes(&read_all(&conn, None).await.unwrap());
    // 10 bad rows: 2 blank (skipped), and blank key, #REF!, "TBC" date,
    // repeated key, two of each, flagged.
    assert_eq!(all.len(), 998);
    let flagged: Vec<_> = upserts(&all)
        .into_iter()
        .filter(|r| r.get(ERRORS_FIELD).is_some())
        .collect();
    assert_eq!(flagged.len(), 8);
    let text = format!("{flagged:?}");
    for needle in ["#REF!", "TBC", "duplicate key", "key cell is blank"] {
        assert!(text.contains(needle), "{needle}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_blank_and_colliding_headers_give_five_stable_columns() {
    let mut sheet = SimSheet::new(0, "Tasks", 3, 5);
    let h = ["A", "A", "", "Task ID", "task_id"];
    sheet.set_row(
        1,
        h.iter()
            .map(|s| {
                if s.is_empty() {
                    SimCell::Empty
                } else {
                    SimCell::Text((*s).into())
                }
            })
            .collect(),
    );
    sheet.set_row(
        2,
        ["x", "y", "z", "T-1", "t1"]
            .iter()
            .map(|s| SimCell::Text((*s).into()))
            .collect(),
    );
    sheet.set_row(
        3,
        ["x2", "y2", "z2", "T-2", "t2"]
            .iter()
            .map(|s| SimCell::Text((*s).into()))
            .collect(),
    );
    let env = start(unlimited(), sheet, None).await;
    let cfg = SheetsConfig::builder(SPREADSHEET, "Tasks")
        .key_field("task_id")
        .rate_limit(RateLimit::new(1000, Duration::from_secs(1)))
        .base_url(env.handle.base_url());
    let conn = connector(&env, cfg);
    let all = changes(&read_all(&conn, None).await.unwrap());
    assert_eq!(all.len(), 2);
    let r = upserts(&all)[0];
    let names: Vec<_> = r
        .fields
        .keys()
        .filter(|k| !k.starts_with("_sheet"))
        .cloned()
        .collect();
    assert_eq!(names, ["a", "a_b", "column_c", "task_id", "task_id_e"]);
    // "Task ID" (column D) is the `task_id` key; column E became `task_id_e`.
    assert_eq!(r.id.as_ref().unwrap().as_str(), "T-1");
    assert_eq!(r.get("task_id_e"), Some(&Value::Text("t1".into())));
    let schema = conn.describe("Tasks").await.unwrap();
    assert_eq!(schema.fields.len(), 5);
    assert_eq!(schema.fields[3].label, "Task ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_exponents_and_serial_dates_round_trip_unchanged() {
    let mut sheet = SimSheet::new(0, "Codes", 2, 4);
    sheet.set_row(
        1,
        ["Key", "Code", "Sci", "Day"]
            .iter()
            .map(|s| SimCell::Text((*s).into()))
            .collect(),
    );
    sheet.set_row(
        2,
        vec![
            SimCell::Text("K1".into()),
            SimCell::Text("0003".into()),
            SimCell::Text("23E123123".into()),
            SimCell::Date(43831),
        ],
    );
    let env = start(unlimited(), sheet, None).await;
    let cols =
        ColumnMapping::new([("A", "key"), ("B", "code"), ("C", "sci"), ("D", "day")]).unwrap();
    let wb = WriteBackColumns::new(
        ColumnMapping::new([("B", "code"), ("C", "sci"), ("D", "day")]).unwrap(),
    );
    let cfg = SheetsConfig::builder(SPREADSHEET, "Codes")
        .columns(cols)
        .key_field("key")
        .with_column_type("day", ColumnType::Date)
        .write_back(wb)
        .rate_limit(RateLimit::new(1000, Duration::from_secs(1)))
        .base_url(env.handle.base_url());
    let conn = connector(&env, cfg);
    let all = changes(&read_all(&conn, None).await.unwrap());
    let r = upserts(&all)[0].clone();
    assert_eq!(r.get("code"), Some(&Value::Text("0003".into())));
    assert_eq!(r.get("sci"), Some(&Value::Text("23E123123".into())));
    assert_eq!(r.get("day").unwrap().to_string(), "2020-01-01");
    // Clear the cells, then write the record back: the same cells return.
    env.data.with_sheet(SPREADSHEET, "Codes", |s| {
        s.set(2, 1, SimCell::Text("x".into()));
        s.set(2, 2, SimCell::Text("y".into()));
    });
    let out = conn
        .write("Codes", WriteBatch::upsert("key", vec![r]))
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Updated(_)), "{out:?}");
    env.data.with_sheet(SPREADSHEET, "Codes", |s| {
        assert_eq!(s.cell(2, 1), &SimCell::Text("0003".into()));
        assert_eq!(s.cell(2, 2), &SimCell::Text("23E123123".into()));
        assert_eq!(s.cell(2, 3), &SimCell::Date(43831));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_tab_is_found_by_sheet_id() {
    let mut sheet = bookings(50, false);
    sheet.sheet_id = 777;
    let env = start(unlimited(), sheet, None).await;
    let conn = connector(&env, config(&env));
    let first = read_all(&conn, None).await.unwrap();
    let cursor = first.last().unwrap().cursor.clone();
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        s.title = "Bookings (old)".into()
    });
    let second = read_all(&conn, Some(cursor)).await.unwrap();
    assert!(changes(&second).is_empty());
    // Without the cursor's sheetId the tab is not found: a clear error.
    let err = read_all(&conn, None).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound);
    // With sheet_id configured it is.
    let by_id = connector(&env, config(&env).sheet_id(777));
    assert_eq!(changes(&read_all(&by_id, None).await.unwrap()).len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_minute_read_quota_is_waited_out_and_every_tab_is_read() {
    // 12 tabs, a read quota of 5 requests per 1-second window (Google: 60
    // per minute per user), clients that do not pace themselves.
    let cfg = SheetsSimConfig::default().quotas(Some(5), None, Duration::from_secs(1));
    let env = start(cfg, bookings(30, false), None).await;
    env.data.with_spreadsheet(SPREADSHEET, |ss| {
        for t in 1..12 {
            let mut s = ss.sheets[0].clone();
            s.sheet_id = t;
            s.title = format!("Tab {t}");
            ss.sheets.push(s);
        }
    });
    let mut total = 0;
    for t in 0..12 {
        let title = if t == 0 {
            "Bookings".to_owned()
        } else {
            format!("Tab {t}")
        };
        let cfg = SheetsConfig::builder(SPREADSHEET, title)
            .columns(seed_columns())
            .rate_limit(RateLimit::new(1000, Duration::from_secs(1)))
            .base_url(env.handle.base_url());
        total += changes(&read_all(&connector(&env, cfg), None).await.unwrap()).len();
    }
    assert_eq!(total, 12 * 30);
    assert!(env.handle.request_log().count_status(429) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_are_chunked_or_refused_clearly() {
    let env = start(unlimited().max_cells(20_000), bookings(600, false), None).await;
    // Chunked: 600 rows x 4 cells with at most 1,000 cells per request.
    let wb = write_back()
        .max_cells_per_request(1000)
        .append_new_rows(true);
    let conn = connector(&env, config(&env).write_back(wb));
    let records: Vec<Record> = (1..=600)
        .map(|n| {
            Record::new()
                .with("booking_id", format!("BK-{n:06}"))
                .with("actual_spend", Value::Int(n))
                .with("pacing_percent", Value::Int(1))
                .with("campaign_id", "C")
                .with("campaign_status", "live")
        })
        .collect();
    let out = conn
        .write("bookings", WriteBatch::upsert("booking_id", records))
        .await
        .unwrap();
    assert!(out.iter().all(WriteOutcome::is_ok));
    assert_eq!(count(&env, "POST", "/values:batchUpdate"), 3);
    // Appending past the spreadsheet's cell limit: the chunks that fit are
    // appended, every row after the limit is rejected with Google's message
    // about it, and none is lost silently.
    let new: Vec<Record> = (0..1000)
        .map(|n| {
            Record::new()
                .with("booking_id", format!("NEW-{n}"))
                .with("actual_spend", Value::Int(1))
        })
        .collect();
    let out = conn
        .write("bookings", WriteBatch::upsert("booking_id", new))
        .await
        .unwrap();
    assert_eq!(out.len(), 1000);
    let created = out
        .iter()
        .filter(|o| matches!(o, WriteOutcome::Created(_)))
        .count();
    let rejected: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            WriteOutcome::Rejected { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(created + rejected.len(), 1000);
    assert!(!rejected.is_empty() && created < 1000);
    let msg = rejected[0].to_string();
    assert!(msg.contains("limit of 20000 cells"), "{msg}");
    let cells = env
        .data
        .with_spreadsheet(SPREADSHEET, |ss| ss.cells())
        .unwrap();
    assert!(cells <= 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_keys_use_the_jwt_bearer_grant() {
    let env = start(unlimited(), bookings(20, false), None).await;
    let pem = include_str!("fixtures/test_service_account_key.pem");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "sim-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": SheetsSimConfig::default().service_account_email,
        "client_id": "1",
        "token_uri": env.handle.url("/token"),
    });
    let creds = GoogleCredentials::from_json(&key.to_string()).unwrap();
    assert!(!format!("{creds:?}").contains("PRIVATE KEY"));
    let conn = crm_sheets::SheetsConnector::new(config(&env), &creds).unwrap();
    conn.check().await.unwrap();
    assert_eq!(changes(&read_all(&conn, None).await.unwrap()).len(), 20);
    let grants = env.handle.request_log().count(|r| r.path == "/token");
    assert_eq!(grants, 1);
}

/// Clears whole rows (one-based), as a user deleting their contents.
fn blank_rows(s: &mut SimSheet, rows: impl IntoIterator<Item = u32>) {
    for row in rows {
        if let Some(cells) = s.cells.get_mut(row as usize - 1) {
            cells.clear();
        }
    }
}

fn ids_of(changes: &[Change]) -> Vec<String> {
    let mut ids: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Upsert(r) => format!("u:{}", r.id.as_ref().unwrap()),
            Change::Delete { id, .. } => format!("d:{id}"),
        })
        .collect();
    ids.sort();
    ids
}

// Pages of 1,000 from row 2: rows 2..=1001, 1002..=2001, 2002..=3001,
// 3002..=4001. Google (and the simulator) leave empty trailing rows out of
// a range, so a page whose last rows are blank comes back short.
const PAGE_END_BLANKS: [u32; 7] = [1001, 1999, 2000, 2001, 2002, 2003, 2004];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_rows_at_and_across_page_ends_do_not_end_the_read() {
    let env = start(unlimited(), bookings(3500, false), None).await;
    let conn = connector(&env, config(&env).page_size(1000));
    let before = read_all(&conn, None).await.unwrap();
    assert_eq!(changes(&before).len(), 3500);
    let cursor = before.last().unwrap().cursor.clone();

    // Row 1001 is the last row of the first page; rows 1999..=2004 span the
    // boundary between the second and the third page. Booking n is on row
    // n + 1.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        blank_rows(s, PAGE_END_BLANKS);
    });

    // An incremental run deletes exactly the cleared bookings: every row
    // after the blanks is still read.
    let second = read_all(&conn, Some(cursor)).await.unwrap();
    let got = changes(&second);
    assert_eq!(got.len(), PAGE_END_BLANKS.len(), "changes after the blanks");
    let expected: Vec<String> = PAGE_END_BLANKS
        .iter()
        .map(|r| format!("d:BK-{:06}", r - 1))
        .collect();
    assert_eq!(ids_of(&got), expected);

    // A full read of the sheet with the blanks reads every other row, down
    // to the last one, in one batchGet per page of the grid.
    let before_calls = count(&env, "GET", "/values:batchGet");
    let full = read_all(&conn, None).await.unwrap();
    assert_eq!(count(&env, "GET", "/values:batchGet") - before_calls, 4);
    let all = changes(&full);
    assert_eq!(all.len(), 3500 - PAGE_END_BLANKS.len());
    let ids: HashSet<_> = all.iter().filter_map(|c| c.id().cloned()).collect();
    assert_eq!(ids.len(), all.len());
    for n in [1000, 1001, 1997, 1998, 2004, 2005, 3500] {
        let present = ids.iter().any(|id| id.as_str() == format!("BK-{n:06}"));
        assert_eq!(present, !PAGE_END_BLANKS.contains(&(n + 1)), "BK-{n:06}");
    }

    // The following incremental runs emit nothing, no Delete in particular.
    let third = read_all(&conn, Some(full.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(changes(&third).is_empty(), "{:?}", ids_of(&changes(&third)));
    let fourth = read_all(&conn, Some(second.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(
        changes(&fourth).is_empty(),
        "{:?}",
        ids_of(&changes(&fourth))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_blank_page_does_not_end_the_read() {
    // Pages of 100 from row 2: rows 102..=201 are the whole second page, and
    // row 301 is the last row of the third.
    let env = start(unlimited(), bookings(500, false), None).await;
    let conn = connector(&env, config(&env).page_size(100));
    let before = read_all(&conn, None).await.unwrap();
    let cursor = before.last().unwrap().cursor.clone();
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        blank_rows(s, (102..=201).chain([301]));
    });
    let second = read_all(&conn, Some(cursor)).await.unwrap();
    let got = changes(&second);
    assert_eq!(got.len(), 101);
    assert!(got.iter().all(|c| matches!(c, Change::Delete { .. })));
    let full = read_all(&conn, None).await.unwrap();
    let all = changes(&full);
    assert_eq!(all.len(), 399);
    assert!(all.iter().any(|c| c.id().unwrap().as_str() == "BK-000500"));
    let third = read_all(&conn, Some(full.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(changes(&third).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_ending_exactly_at_a_page_boundary_is_read_whole() {
    // The grid ends with the data: rows 2..=2001 are exactly two pages, and
    // the grid's row count says there is nothing after them.
    let env = start(unlimited(), bookings(2000, false), None).await;
    let conn = connector(&env, config(&env).page_size(1000));
    let first = read_all(&conn, None).await.unwrap();
    assert_eq!(changes(&first).len(), 2000);
    assert_eq!(count(&env, "GET", "/values:batchGet"), 2);
    let again = read_all(&conn, Some(first.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(changes(&again).is_empty());

    // Spare empty rows below the data: the third page, entirely empty and
    // reaching the grid's last row, ends the read.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let sheet = demo_bookings(
        &mut rng,
        &DemoOptions::new(2000).bad_rows(false).spare_rows(1000),
    );
    assert_eq!(sheet.row_count, 3001);
    let env = start(unlimited(), sheet, None).await;
    let conn = connector(&env, config(&env).page_size(1000));
    let first = read_all(&conn, None).await.unwrap();
    let all = changes(&first);
    assert_eq!(all.len(), 2000);
    assert!(all.iter().any(|c| c.id().unwrap().as_str() == "BK-002000"));
    assert_eq!(count(&env, "GET", "/values:batchGet"), 3);
    let again = read_all(&conn, Some(first.last().unwrap().cursor.clone()))
        .await
        .unwrap();
    assert!(changes(&again).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_update_writes_a_range_raw_and_refuses_past_the_grid() {
    let env = start(unlimited(), bookings(10, false), None).await;
    let conn = connector(&env, config(&env));
    let range = "'Bookings'!J2:K3";
    let body = ValueRange {
        range: Some(range.into()),
        major_dimension: Some(Dimension::Rows),
        values: vec![
            vec![Cell::Number("12.50".into()), Cell::Text("0003".into())],
            vec![Cell::Text("=1+1".into())],
        ],
    };
    let resp = conn.client().update_values(range, &body).await.unwrap();
    assert_eq!(resp.spreadsheet_id, SPREADSHEET);
    assert_eq!(resp.updated_range.as_deref(), Some("Bookings!J2:K3"));
    assert_eq!(resp.updated_rows, Some(2));
    assert_eq!(resp.updated_columns, Some(2));
    assert_eq!(resp.updated_cells, Some(3));
    let puts = env
        .handle
        .request_log()
        .count(|r| r.method == "PUT" && r.path.contains("/values/"));
    assert_eq!(puts, 1);
    // RAW: text stays text, "=1+1" is no formula, the number is exact.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        assert_eq!(s.cell(2, 9), &SimCell::Number("12.50".into()));
        assert_eq!(s.cell(2, 10), &SimCell::Text("0003".into()));
        assert_eq!(s.cell(3, 9), &SimCell::Text("=1+1".into()));
        assert_eq!(s.cell(3, 10), &SimCell::Empty);
    });
    let read = conn
        .client()
        .get_values(
            range,
            ValueRenderOption::UnformattedValue,
            DateTimeRenderOption::SerialNumber,
        )
        .await
        .unwrap();
    assert_eq!(read.values, body.values);

    // The grid has 11 rows: writing row 12 is refused, nothing is written.
    let past = "'Bookings'!J12";
    let body = ValueRange {
        range: Some(past.into()),
        major_dimension: Some(Dimension::Rows),
        values: vec![vec![Cell::Number("1".into())]],
    };
    let err = conn.client().update_values(past, &body).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput);
    assert!(err.to_string().contains("exceeds grid limits"), "{err}");
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        assert_eq!(s.cell(12, 9), &SimCell::Empty);
        assert_eq!(s.row_count, 11);
    });
}

/// Rows inserted near the top while a read is under way push the last rows
/// past the grid size read at its start. They used to be reported deleted
/// (and came back the run after); the grid size is read again at the end
/// and the rows it gained are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_above_during_a_read_are_not_reported_deleted() {
    let env = start(unlimited(), bookings(1000, false), None).await;
    let conn = connector(&env, config(&env).page_size(200));
    let first = read_all(&conn, None).await.unwrap();
    assert_eq!(changes(&first).len(), 1000);
    let cursor = first.last().unwrap().cursor.clone();

    let mut stream = conn.read(ReadRequest::since("bookings", cursor));
    let mut got = Vec::new();
    let page = stream.next().await.unwrap().unwrap();
    got.extend(page.changes);
    // Someone inserts three booking rows right under the header.
    env.data.with_sheet(SPREADSHEET, "Bookings", |s| {
        s.insert_rows(2, 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (row, n) in [(2, 5001), (3, 5002), (4, 5003)] {
            s.set_row(row, demo_row(&mut rng, n));
        }
    });
    while let Some(page) = stream.next().await {
        got.extend(page.unwrap().changes);
    }
    let deletes: Vec<&Change> = got
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .collect();
    assert!(
        deletes.is_empty(),
        "rows that moved down are not deleted: {deletes:?}"
    );
    // The grid was read again at the end, and once more after it grew.
    assert_eq!(
        count(&env, "GET", &format!("/v4/spreadsheets/{SPREADSHEET}")),
        2 + 3
    );
}
