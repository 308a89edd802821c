//! `crm-sync demo` end to end, in-process: the report's numbers are checked
//! against what the seeded sheet actually holds, and the SQLite store against
//! the report. Plus the exit codes of `crm-sync run`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use crm_core::{Change, ReadRequest, Source};
use crm_sheets::sim::{SheetsSimConfig, SheetsSimulator, SimCell};
use crm_sim::SimServer;
use crm_sql::state::{CredentialKey, StateStore};
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::cli::run::{DemoArgs, demo_report};
use futures_util::StreamExt;

const CLIENTS: [&str; 10] = [
    "Acme Foods",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Motors",
    "Wayne Retail",
    "Hooli",
    "Vandelay Imports",
    "Soylent",
    "Tyrell Travel",
];
const PRODUCTS: [&str; 8] = [
    "Spring Launch",
    "Summer Sale",
    "Brand Awareness",
    "Holiday Push",
    "Retargeting",
    "App Installs",
    "Back to School",
    "Q4 Always On",
];

fn text(cell: &SimCell) -> Option<&str> {
    match cell {
        SimCell::Text(s) => Some(s),
        _ => None,
    }
}

/// What the seeded sheet holds, worked out from its cells alone.
struct Expected {
    read: u64,
    invalid: u64,
    status: BTreeMap<&'static str, u64>,
}

async fn expected(rows: usize, seed: u64) -> Expected {
    let config = SheetsSimConfig::default().demo_rows(rows);
    let sim = SheetsSimulator::new(config.clone());
    let data = sim.data();
    let handle = SimServer::new(sim)
        .seed(seed)
        .demo_data(true)
        .start()
        .await
        .unwrap();
    let grid = data
        .with_sheet(&config.spreadsheet_id, &config.sheet_title, |s| {
            s.cells.clone()
        })
        .unwrap();
    handle.shutdown().await;

    let mut out = Expected {
        read: 0,
        invalid: 0,
        status: BTreeMap::new(),
    };
    let mut seen = HashSet::new();
    for row in grid.iter().skip(1) {
        if row.iter().all(|c| matches!(c, SimCell::Empty)) {
            continue; // blank rows are not bookings
        }
        out.read += 1;
        let key = row.first().and_then(text).unwrap_or_default();
        let bad_cell = row.iter().any(|c| matches!(c, SimCell::Error(_)))
            || !matches!(row.get(3), Some(SimCell::Date(_)));
        if key.is_empty() || bad_cell || !seen.insert(key.to_owned()) {
            out.invalid += 1;
            continue;
        }
        // The campaigns file gives name k = client * 8 + product a category
        // by k % 4: exact, misspelt, twice, none (examples/bookings/campaigns.csv).
        let name = row.get(2).and_then(text).unwrap();
        let k = CLIENTS
            .iter()
            .enumerate()
            .flat_map(|(c, client)| {
                PRODUCTS
                    .iter()
                    .enumerate()
                    .map(move |(p, product)| (c * 8 + p, format!("{client} {product}")))
            })
            .find(|(_, n)| *n == name)
            .map(|(k, _)| k)
            .unwrap();
        let status = ["matched", "probable", "multiple", "unmatched"][k % 4];
        *out.status.entry(status).or_default() += 1;
    }
    out
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crm-sync-demo-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_report_matches_the_seeded_sheet() {
    let (rows, seed) = (3000, 7);
    let want = expected(rows, seed).await;
    let out = dir("report");
    let args = DemoArgs {
        rows,
        seed,
        dir: out.clone(),
        json: false,
    };
    let report = demo_report(&args).await.unwrap();

    assert_eq!(report.rows_read, want.read);
    assert_eq!(report.invalid, want.invalid);
    assert_eq!(report.valid, want.read - want.invalid);
    assert!(report.invalid > 0 && report.skipped_by_rule.contains_key("booking_id.unique"));
    for (status, n) in &want.status {
        assert_eq!(report.matched(status), *n, "{status}");
    }
    assert_eq!(report.created, report.valid);
    assert_eq!(report.rejected, 0);
    // The review queue stops at max_manual_review (100) with a warning.
    assert_eq!(
        report.review_overflow,
        want.status["probable"] + want.status["multiple"] - 100
    );
    assert_eq!(report.warnings.len(), 1);

    // The store holds exactly the valid rows, and the state the rest.
    let url = format!("sqlite://{}", out.join("bookings.db").display());
    let cfg = SqlConfig::builder()
        .url(url.clone())
        .query("SELECT booking_id, match_status, campaign_id, budget, synced_at FROM booking")
        .cursor_column("synced_at")
        .primary_key(["booking_id"])
        .build()
        .unwrap();
    let table = SqlConnector::connect(&cfg).await.unwrap();
    let mut stored = 0u64;
    let mut linked = 0u64;
    let mut pages = table.read(ReadRequest::full("booking"));
    while let Some(page) = pages.next().await {
        for change in page.unwrap().changes {
            if let Change::Upsert(r) = change {
                stored += 1;
                if r.text("campaign_id").is_some() {
                    linked += 1;
                }
            }
        }
    }
    assert_eq!(stored, report.valid);
    assert_eq!(linked, want.status["matched"] + want.status["probable"]);
    let store = StateStore::open_url(&url, CredentialKey::from_bytes([1; 32]))
        .await
        .unwrap();
    let conn = store
        .ensure_connection("pipeline", "bookings")
        .await
        .unwrap();
    assert_eq!(
        store.count_dead_letters(&conn).await.unwrap(),
        report.invalid
    );
    assert_eq!(store.count_open_reviews(&conn).await.unwrap(), 100);
    let _ = std::fs::remove_dir_all(&out);
}

fn crm_sync(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_exit_codes_say_who_must_act() {
    let d = dir("exit");
    std::fs::create_dir_all(&d).unwrap();

    // A missing file: 2, naming the path.
    let (code, _, err) = crm_sync(&["run", d.join("nope.yaml").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nope.yaml") && err.contains("cannot read"),
        "{err}"
    );

    // A malformed config: 2, with the line and path.
    let bad = d.join("bad.yaml");
    std::fs::write(&bad, "name: x\nsheet:\n  spreadsheet_id: a\n  sheet_name: b\ncrm:\n  sync:\n    batch_size: lots\n").unwrap();
    let (code, _, err) = crm_sync(&["run", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 7") && err.contains("crm.sync.batch_size"),
        "{err}"
    );

    // An unreachable database: 2, saying so without the password.
    let unreachable = d.join("db.yaml");
    std::fs::write(
        &unreachable,
        "name: x\ndatabase:\n  type: postgresql\n  host: 127.0.0.1\n  port: 1\n  database: bookings\n  username: u\n  password: s3cret-pw\n  query: \"SELECT * FROM bookings WHERE updated_at >= :last_sync\"\n  primary_key: [booking_id]\n  pool:\n    acquire_timeout: 2\n",
    )
    .unwrap();
    let (code, _, err) = crm_sync(&["run", unreachable.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("could not start"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    // It names the database and says what to check, in one paragraph.
    assert!(
        err.contains("cannot connect to the source database postgres://u:***@127.0.0.1:1/bookings"),
        "{err}"
    );
    for hint in [
        "host and port",
        "server is running",
        "username, password and database name",
    ] {
        assert!(err.contains(hint), "{hint:?} missing from {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A run that starts and cannot finish (the source query fails): 1.
    let failing = d.join("failing.yaml");
    std::fs::write(
        &failing,
        format!(
            "name: x\ndatabase:\n  url: \"sqlite://{}?mode=rwc\"\n  query: \"SELECT * FROM no_such_table WHERE updated_at >= :last_sync\"\n  primary_key: [booking_id]\ndestination:\n  url: \"sqlite://store.db\"\n",
            d.join("source.db").display()
        ),
    )
    .unwrap();
    let (code, _, err) = crm_sync(&["run", failing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stopped before the end"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sim_serves_each_provider_and_prints_its_ready_line() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    for provider in [
        "sheets",
        "salesforce",
        "hubspot",
        "pipedrive",
        "marketo",
        "generic",
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["sim", provider, "--listen", "127.0.0.1:0", "--seed", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{provider}: {e}: {line:?}"));
        assert!(
            ready["base_url"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:"),
            "{ready}"
        );
        assert!(ready["credentials"].is_object(), "{provider}: {ready}");
        assert!(ready.get("ca_cert").is_some(), "{ready}");
    }
}

#[test]
fn check_lists_every_failing_part_and_exits_2() {
    let d = dir("check");
    std::fs::create_dir_all(&d).unwrap();
    let job = d.join("job.yaml");
    std::fs::write(
        &job,
        "name: x\nsheet:\n  spreadsheet_id: a\n  sheet_name: b\ncrm:\n  google_sheets:\n    credentials: /no/such/key.json\ndestination:\n  url: \"sqlite://store.db\"\n",
    )
    .unwrap();
    let (code, out, err) = crm_sync(&["check", job.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("FAILED  source") && out.contains("/no/such/key.json"),
        "{out}"
    );
    assert!(out.contains("ok      destination"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}
