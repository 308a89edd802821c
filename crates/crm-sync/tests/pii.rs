//! Personal data of a real job: a sheet job (against the Google Sheets
//! simulator, with an SQLite destination and state store) whose `mappings:`
//! mark `email` and `phone` `pii: true`, with invalid rows carrying known
//! emails and phone numbers. Every tracing event and span of the runs (at
//! TRACE, captured by the subscriber below) and the binary's stdout and
//! stderr hold none of those values, only their masks; the state store's
//! tables, read with plain SQL, hold them sealed (`$sealed`), and the
//! store's API opens them again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use base64::Engine as _;
use crm_core::{Change, FieldSchema, FieldType, ObjectSchema, ReadRequest, Source};
use crm_sheets::GoogleCredentials;
use crm_sheets::sim::{SheetsData, SheetsSimConfig, SheetsSimulator, SimCell, SimSheet};
use crm_sim::{SimHandle, SimServer};
use crm_sql::SqlConnector;
use crm_sql::state::{CredentialKey, StateStore};
use crm_sync::Mode;
use crm_sync::config::SyncJob;
use crm_sync::runner::{Overrides, run_job};
use crm_sync::schedule::jobs::{RetryTarget, retry_failed};
use futures_util::TryStreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

// ---------------------------------------------------------------------------
// Capture of every tracing event and span, at every level.

/// Everything the process logged through `tracing`, one line per event or
/// span (its fields, including `%value` and `?value` ones).
static LOGS: Mutex<String> = Mutex::new(String::new());

struct Capture {
    next_span: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

fn push(line: String) {
    let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    logs.push_str(&line);
    logs.push('\n');
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let m = attrs.metadata();
        let mut line = format!("span {} {} {}:", m.level(), m.target(), m.name());
        attrs.record(&mut Fields(&mut line));
        push(line);
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, span: &Id, values: &SpanRecord<'_>) {
        let mut line = format!("span {} record:", span.into_u64());
        values.record(&mut Fields(&mut line));
        push(line);
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let m = event.metadata();
        let mut line = format!("{} {}:", m.level(), m.target());
        event.record(&mut Fields(&mut line));
        push(line);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs the capture as the process's subscriber (once: every test of
/// this file shares it, and every thread of every runtime reports to it).
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Capture {
            next_span: AtomicU64::new(1),
        })
        .expect("no other subscriber in this test binary");
    });
}

fn logs() -> String {
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

// ---------------------------------------------------------------------------
// The job.

/// The variable holding the state key, for the binary.
const KEY_ENV: &str = "CRM_SYNC_PII_TEST_KEY";
const KEY: [u8; 32] = [7; 32];

/// Columns A..G of both sheets.
const HEADERS: [&str; 7] = [
    "Booking ID",
    "Client",
    "Campaign",
    "Email",
    "Phone",
    "Budget",
    "Score",
];

/// One sheet row: booking id, client, campaign, email, phone, budget, score.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Sheet `Contacts` (keyed by booking id). Only BK-1 (matched) and BK-6 (a
/// probable match, queued for review) go through.
const CONTACTS: [Row; 7] = [
    (
        "BK-1",
        "Acme",
        "Spring Launch 2024",
        "ada.lovelace@example.com",
        "+1 415 555 0101",
        "1000",
        "0.5",
    ),
    // Not an email: the rule's message quotes the value.
    (
        "BK-2",
        "Globex",
        "Spring Launch 2024",
        "maria.gonzalez@example",
        "+1 415 555 0102",
        "500",
        "0.2",
    ),
    // A negative budget: the record itself holds the email and phone.
    (
        "BK-3",
        "Initech",
        "Spring Launch 2024",
        "peter.novak@example.org",
        "+1 415 555 0103",
        "-5",
        "0.3",
    ),
    // Not an email, and longer than the 40 characters a message quotes.
    (
        "BK-4",
        "Hooli",
        "Spring Launch 2024",
        "alexandra.konstantinopoulou.longname@@example.com",
        "+1 415 555 0104",
        "100",
        "0.1",
    ),
    // A score outside 0..1: the mapping's `Scale 0-100` fails.
    (
        "BK-5",
        "Soylent",
        "Spring Launch 2024",
        "wei.zhang@example.net",
        "+1 415 555 0105",
        "100",
        "1.7",
    ),
    // A misspelt campaign: a probable match, queued for review.
    (
        "BK-6",
        "Stark",
        "Spring Lanch 2024",
        "olga.petrova@example.com",
        "+1 415 555 0106",
        "100",
        "0.4",
    ),
    // A phone number longer than its column: the destination rejects it.
    (
        "BK-7",
        "Umbrella",
        "Spring Launch 2024",
        "james.okafor@example.com",
        "+1 415 555 0107 ext 12",
        "100",
        "0.6",
    ),
];

/// Sheet `Leads`, keyed by email. Only BK-24 goes through.
const LEADS: [Row; 5] = [
    // A negative budget.
    (
        "BK-21",
        "Acme",
        "Summer Sale",
        "nina.berg@example.com",
        "+1 415 555 0121",
        "-1",
        "0.1",
    ),
    // The same email again: the sheet reports a duplicate key, quoting it.
    (
        "BK-22",
        "Globex",
        "Summer Sale",
        "nina.berg@example.com",
        "+1 415 555 0122",
        "10",
        "0.1",
    ),
    // The mapping fails; its error names the record by its key.
    (
        "BK-23",
        "Initech",
        "Summer Sale",
        "tomas.silva@example.com",
        "+1 415 555 0123",
        "10",
        "2.5",
    ),
    (
        "BK-24",
        "Hooli",
        "Summer Sale",
        "li.wei.valid@example.com",
        "+1 415 555 0124",
        "10",
        "0.9",
    ),
    // Rejected by the destination (phone too long); the error names the key.
    (
        "BK-25",
        "Soylent",
        "Summer Sale",
        "sara.khan@example.com",
        "+1 415 555 0125 ext 9",
        "10",
        "0.2",
    ),
];

/// Parts of the personal values of `rows` that no log line, output or
/// stored state row may show: each email's local part (a mask keeps its
/// first character and the domain) and each phone's last 7 digits with
/// and without formatting (a mask keeps the last 2).
fn clear_values(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for (_, _, _, email, phone, _, _) in rows {
        out.push((*email).to_owned());
        let local = email.split('@').next().unwrap();
        out.push(local.to_owned());
        out.push(phone.to_string());
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        out.push(digits[..digits.len().min(11)].to_owned());
        out.push(digits[4..11].to_owned());
        out.push(phone[7..15].to_owned()); // "555 0102"
    }
    out
}

fn assert_no_clear(what: &str, text: &str, clear: &[String]) {
    for c in clear {
        assert!(
            !text.contains(c.as_str()),
            "{what} shows {c:?} in clear:\n{text}"
        );
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crm-sync-pii-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The simulator, serving the sheet `title` with `rows` under `HEADERS`.
async fn sheet_sim(title: &str, rows: &[Row]) -> (SimHandle, SheetsSimConfig, SheetsData) {
    let config = SheetsSimConfig::default();
    let sim = SheetsSimulator::new(config.clone());
    let data = sim.data();
    let handle = SimServer::new(sim)
        .seed(7)
        .demo_data(false)
        .start()
        .await
        .unwrap();
    let mut sheet = SimSheet::new(1, title, 50, 10);
    let text = |s: &str| SimCell::Text(s.to_owned());
    sheet.set_row(1, HEADERS.iter().map(|h| text(h)).collect());
    for (i, (id, client, campaign, email, phone, budget, score)) in rows.iter().enumerate() {
        sheet.set_row(
            i as u32 + 2,
            vec![
                text(id),
                text(client),
                text(campaign),
                text(email),
                text(phone),
                SimCell::Number((*budget).to_owned()),
                SimCell::Number((*score).to_owned()),
            ],
        );
    }
    data.add_spreadsheet(&config.spreadsheet_id, "CRM", sheet);
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

/// The destination table: the mapped columns, the match columns, and a
/// phone column too short for an extension.
fn destination(table: &str, key: &str) -> ObjectSchema {
    ObjectSchema::new(table)
        .field(FieldSchema::new("booking_id", FieldType::Text).max_length(40))
        .field(FieldSchema::new("client_name", FieldType::Text))
        .field(FieldSchema::new("campaign_name", FieldType::Text))
        .field(FieldSchema::new("email", FieldType::Text).max_length(80))
        .field(FieldSchema::new("phone", FieldType::Text).max_length(15))
        .field(FieldSchema::new("budget", FieldType::Decimal).scale(2))
        .field(FieldSchema::new("score", FieldType::Decimal))
        .field(FieldSchema::new("match_status", FieldType::Text))
        .field(FieldSchema::new("campaign_id", FieldType::Text))
        .field(FieldSchema::new("synced_at", FieldType::DateTime))
        .primary_key([key])
}

/// Writes the job file (and its credentials and campaigns files) into `d`.
async fn job_file(
    d: &Path,
    handle: &SimHandle,
    config: &SheetsSimConfig,
    sheet: &str,
    key: &str,
    matching: bool,
) -> PathBuf {
    let creds = serde_json::json!({
        "type": "authorized_user",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "refresh_token": config.refresh_token,
        "token_uri": handle.url("/token"),
    });
    std::fs::write(d.join("creds.json"), creds.to_string()).unwrap();
    std::fs::write(
        d.join("campaigns.csv"),
        "campaign_id,name\nC-1,Spring Launch 2024\nC-2,Autumn Push 2024\n",
    )
    .unwrap();
    let store_url = format!("sqlite://{}?mode=rwc", d.join("store.db").display());
    let dest = SqlConnector::connect_url(&store_url).await.unwrap();
    dest.create_table(&destination("contact_t", key))
        .await
        .unwrap();
    dest.close().await;
    let matching = if matching {
        "matching:\n  strategies:\n    - {type: name_match, source: booking.campaign_name, \
         target: campaign.name, algorithm: fuzzy, threshold: 0.85, priority: 1}\n  \
         on_no_match: create_unmatched_record\n  on_multiple_match: flag_for_review\n\
         campaigns: {file: campaigns.csv}\n"
    } else {
        ""
    };
    let yaml = format!(
        r#"name: contacts
sheet:
  spreadsheet_id: "{id}"
  sheet_name: "{sheet}"
  base_url: "{base}"
  key_field: {key}
  column_mapping: {{A: booking_id, B: client_name, C: campaign_name, D: email, E: phone, F: budget, G: score}}
mappings:
  - {{source: booking_id, destination: booking_id}}
  - {{source: client_name, destination: client_name}}
  - {{source: campaign_name, destination: campaign_name}}
  - {{source: email, destination: email, transform: LOWER(), pii: true}}
  - {{source: phone, destination: phone, pii: true}}
  - {{source: budget, destination: budget}}
  - {{source: score, destination: score, transform: Scale 0-100}}
validation:
  booking_id: {{type: string, required: true, unique: true}}
  email: {{type: string, required: true, email: true}}
  budget: {{type: decimal, min: 0}}
{matching}destination:
  url: "sqlite://store.db"
  table: contact_t
  create_table: false
state:
  key_env: {KEY_ENV}
crm:
  google_sheets:
    credentials: "creds.json"
"#,
        id = config.spreadsheet_id,
        base = handle.base_url(),
    );
    let path = d.join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn overrides(d: &Path, creds: GoogleCredentials) -> Overrides {
    let mut o = Overrides::default();
    o.base_dir = Some(d.to_path_buf());
    o.google_credentials = Some(creds);
    o.state_key = Some(CredentialKey::from_bytes(KEY));
    o
}

/// Every row of a state table as stored, read through the SQL source (no
/// state-store code), one text per row with every column.
async fn raw_rows(d: &Path, table: &str, time_col: &str) -> Vec<String> {
    let url = format!("sqlite://{}", d.join("store.db").display());
    let raw = SqlConnector::connect(
        &crm_sql::SqlConfig::builder()
            .url(url)
            .cursor_column(time_col)
            .primary_key(["id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<_> = raw
        .read(ReadRequest::full(table))
        .try_collect()
        .await
        .unwrap();
    raw.close().await;
    pages
        .iter()
        .flat_map(|p| p.changes.iter())
        .map(|c| match c {
            Change::Upsert(r) => r
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" | "),
            other => panic!("unexpected change {other:?}"),
        })
        .collect()
}

/// Runs the binary with `args` (and the state key in its environment
/// unless `with_key` is false), off the async runtime.
async fn crm_sync(args: Vec<String>, with_key: bool) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-sync"));
        cmd.args(&args).env_remove(KEY_ENV);
        if with_key {
            cmd.env(
                KEY_ENV,
                base64::engine::general_purpose::STANDARD.encode(KEY),
            );
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The fields of a stored record (`{"id", "fields": {...}}`) as JSON.
fn fields(record: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    record["fields"].as_object().unwrap()
}

fn is_sealed(v: &serde_json::Value) -> bool {
    v.get("$sealed")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| s.starts_with("v1:"))
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_sealed_at_rest_and_masked_in_logs() {
    capture_logs();
    let (handle, config, _data) = sheet_sim("Contacts", &CONTACTS).await;
    let d = dir("contacts");
    let path = job_file(&d, &handle, &config, "Contacts", "booking_id", true).await;
    let job = SyncJob::load(&path).unwrap();
    assert!(job.pii_fields().contains("email") && job.pii_fields().contains("phone"));

    let report = run_job(
        &job,
        Mode::Full,
        overrides(&d, credentials(&handle, &config)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.rows_read, 7, "{report}");
    assert_eq!(report.invalid, 3, "{report}");
    assert_eq!(report.transform_failed, 1, "{report}");
    assert_eq!(report.rejected, 1, "{report}");
    assert_eq!(report.stored(), 2, "{report}");
    assert_eq!(report.matched("probable"), 1, "{report}");

    let clear = clear_values(&CONTACTS);
    let report_json = serde_json::to_string(&report).unwrap();
    assert_no_clear("the report", &format!("{report}\n{report_json}"), &clear);

    // The logs: one masked line per dead letter, nothing in clear.
    let logs = logs();
    assert_no_clear("the logs", &logs, &clear);
    for needle in [
        "record kept as a dead letter",
        "record=BK-2",
        r#""m***@example" is not an email address"#,
        r#""a***@ex"... is not an email address"#,
        "record=BK-5",
        "record BK-5: 1 field(s) failed to map",
        "record=BK-7",
        "`phone`: 22 characters",
    ] {
        assert!(
            logs.contains(needle),
            "{needle:?} missing from the logs:\n{logs}"
        );
    }

    // The binary's own output: a full run again, as text and as JSON.
    for extra in [None, Some("--json")] {
        let mut args = vec![
            "run".to_owned(),
            path.display().to_string(),
            "--full".into(),
        ];
        args.extend(extra.map(str::to_owned));
        let (code, out, err) = crm_sync(args, true).await;
        assert_eq!(code, 0, "{out}{err}");
        assert_no_clear("crm-sync run", &format!("{out}\n{err}"), &clear);
        assert!(
            out.contains("rejected") || out.contains("\"rejected\""),
            "{out}"
        );
    }

    // The state tables, read with plain SQL: the personal fields sealed.
    let dead = raw_rows(&d, "crm_dead_letters", "last_failed_at").await;
    assert_eq!(dead.len(), 5, "{dead:#?}");
    let review = raw_rows(&d, "crm_review_queue", "created_at").await;
    assert_eq!(review.len(), 1, "{review:#?}");
    for row in dead.iter().chain(&review) {
        assert_no_clear("a state row", row, &clear);
        assert!(row.contains("$sealed"), "{row}");
    }
    assert!(
        dead.iter()
            .any(|r| r.contains(r#""m***@example" is not an email address"#)),
        "{dead:#?}"
    );

    // The store opens them again, whatever fields it is opened with.
    let store = StateStore::open_url(
        &format!("sqlite://{}", d.join("store.db").display()),
        CredentialKey::from_bytes(KEY),
    )
    .await
    .unwrap();
    let conn = store
        .ensure_connection("pipeline", "contacts")
        .await
        .unwrap();
    let letters = store.dead_letters(&conn, 100, 100).await.unwrap();
    assert_eq!(letters.len(), 5);
    let bk3 = letters
        .iter()
        .find(|l| l.record_key.as_deref() == Some("BK-3"))
        .unwrap();
    assert_eq!(bk3.stage, "validate");
    assert_eq!(
        fields(&bk3.record)["email"],
        serde_json::json!({"text": "peter.novak@example.org"})
    );
    assert_eq!(
        fields(&bk3.record)["phone"],
        serde_json::json!({"text": "+1 415 555 0103"})
    );
    let bk7 = letters
        .iter()
        .find(|l| l.record_key.as_deref() == Some("BK-7"))
        .unwrap();
    assert_eq!(bk7.stage, "store");
    assert_eq!(
        fields(&bk7.record)["phone"],
        serde_json::json!({"text": "+1 415 555 0107 ext 12"})
    );
    let items = store.open_reviews(10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].record_id, "BK-6");
    assert_eq!(
        fields(&items[0].details["record"])["email"],
        serde_json::json!({"text": "olga.petrova@example.com"})
    );
    // Sealed at rest, as the raw row shows.
    let raw_bk6: serde_json::Value = serde_json::from_str(
        review[0]
            .split(" | ")
            .find_map(|c| c.strip_prefix("details="))
            .unwrap(),
    )
    .unwrap();
    assert!(is_sealed(&fields(&raw_bk6["record"])["email"]), "{raw_bk6}");
    assert!(is_sealed(&fields(&raw_bk6["record"])["phone"]), "{raw_bk6}");

    // The retry of failed records, with the store as the scheduler opens
    // it: BK-2, edited, now passes and is written mapped (its score
    // scaled); the others fail again with masked reasons, BK-4's shortened
    // quote included.
    let store = store.with_pii_fields(job.pii_fields());
    let bk2 = letters
        .iter()
        .find(|l| l.record_key.as_deref() == Some("BK-2"))
        .unwrap();
    let mut edited = bk2.record.clone();
    edited["fields"]["email"] = serde_json::json!({"text": "maria.gonzalez@example.com"});
    store.edit_dead_letter(&bk2.id, &edited).await.unwrap();
    let dest = SqlConnector::connect_url(&format!("sqlite://{}", d.join("store.db").display()))
        .await
        .unwrap();
    let target = RetryTarget::for_job(&job).max_attempts(10);
    let retried = retry_failed(&store, &conn, &dest, &target).await.unwrap();
    dest.close().await;
    assert_eq!(
        (
            retried.written,
            retried.still_invalid,
            retried.failed_again,
            retried.skipped
        ),
        (1, 2, 3, 1),
        "{retried:?}"
    );
    let dead = raw_rows(&d, "crm_dead_letters", "last_failed_at").await;
    assert_eq!(dead.len(), 4, "{dead:#?}");
    for row in &dead {
        assert_no_clear("a retried dead letter", row, &clear);
    }
    assert!(
        dead.iter()
            .any(|r| r.contains(r#""a***@ex"... is not an email address"#)),
        "{dead:#?}"
    );
    store.close().await;

    // The valid rows are in the destination as they are: it is the data.
    let table = SqlConnector::connect(
        &crm_sql::SqlConfig::builder()
            .url(format!("sqlite://{}", d.join("store.db").display()))
            .cursor_column("synced_at")
            .primary_key(["booking_id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let stored: Vec<_> = table
        .read(ReadRequest::full("contact_t"))
        .try_collect()
        .await
        .unwrap();
    table.close().await;
    let mut emails: Vec<String> = stored
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|c| match c {
            Change::Upsert(r) => r.text("email").map(str::to_owned),
            Change::Delete { .. } => None,
        })
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "ada.lovelace@example.com",
            "maria.gonzalez@example.com",
            "olga.petrova@example.com"
        ]
    );
    let bk2 = stored
        .iter()
        .flat_map(|p| &p.changes)
        .find_map(|c| match c {
            Change::Upsert(r) if r.text("booking_id") == Some("BK-2") => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(bk2.get("score").unwrap().to_string(), "20", "{bk2:?}");
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_key_is_masked_in_logs_and_kept_in_the_state() {
    capture_logs();
    let (handle, config, _data) = sheet_sim("Leads", &LEADS).await;
    let d = dir("leads");
    let path = job_file(&d, &handle, &config, "Leads", "email", false).await;
    let job = SyncJob::load(&path).unwrap();

    // Without the state key the job does not start: what it seals could
    // never be read again.
    let (code, out, err) = crm_sync(vec!["run".into(), path.display().to_string()], false).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(KEY_ENV) && err.contains("pii: true"), "{err}");

    let report = run_job(
        &job,
        Mode::Full,
        overrides(&d, credentials(&handle, &config)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.rows_read, 5, "{report}");
    assert_eq!(report.invalid, 2, "{report}");
    assert_eq!(report.transform_failed, 1, "{report}");
    assert_eq!(report.rejected, 1, "{report}");
    assert_eq!(report.stored(), 1, "{report}");

    let clear = clear_values(&LEADS);
    let logs = logs();
    assert_no_clear("the logs", &logs, &clear);
    for needle in [
        // The key, masked wherever a line shows it.
        "record=n***@example.com",
        r#"duplicate key "n***@example.com""#,
        "record=t***@example.com",
        "record t***@example.com: 1 field(s) failed to map",
        "record=s***@example.com",
    ] {
        assert!(
            logs.contains(needle),
            "{needle:?} missing from the logs:\n{logs}"
        );
    }
    let (code, out, err) = crm_sync(
        vec![
            "run".into(),
            path.display().to_string(),
            "--full".into(),
            "--json".into(),
        ],
        true,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_no_clear("crm-sync run", &format!("{out}\n{err}"), &clear);

    // At rest: the values sealed, the reasons masked, the key kept (dead
    // letters are found and replaced by it: BK-22's replaced BK-21's).
    let dead = raw_rows(&d, "crm_dead_letters", "last_failed_at").await;
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let keys: Vec<&str> = dead
        .iter()
        .filter_map(|r| r.split(" | ").find_map(|c| c.strip_prefix("record_key=")))
        .collect();
    assert!(keys.contains(&"tomas.silva@example.com"), "{keys:?}");
    for row in &dead {
        let fields_col = row
            .split(" | ")
            .find_map(|c| c.strip_prefix("record="))
            .unwrap();
        let mut record: serde_json::Value = serde_json::from_str(fields_col).unwrap();
        assert!(is_sealed(&fields(&record)["email"]), "{row}");
        assert!(is_sealed(&fields(&record)["phone"]), "{row}");
        // Only the id (the key) is in clear, not the problems the sheet
        // recorded (`_problems`: the duplicate key, quoted).
        record.as_object_mut().unwrap().remove("id");
        assert_no_clear("a dead letter's record", &record.to_string(), &clear);
        let error = row
            .split(" | ")
            .find_map(|c| c.strip_prefix("error="))
            .unwrap();
        assert_no_clear("a dead letter's error", error, &clear);
    }
    assert!(
        dead.iter()
            .any(|r| r.contains(r#"duplicate key "n***@example.com""#)),
        "{dead:#?}"
    );
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&d);
}
