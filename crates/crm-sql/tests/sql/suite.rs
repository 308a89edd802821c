//! The behaviour every backend must show, written once against
//! `SqlConnector` and instantiated per backend in `sql.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crm_core::{
    Change, Connector, Cursor, ErrorKind, ReadRequest, Record, Sink, Source, Value, WriteBatch,
    WriteOutcome,
};
use crm_sql::{DatabaseKind, SqlConnector, booking_schema, client_schema};
use futures_util::TryStreamExt;
use rust_decimal::Decimal;

use crate::harness::TestDb;

pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_705_312_800 + secs, 0).single().unwrap()
}

pub(crate) fn booking(i: usize, at: DateTime<Utc>) -> Record {
    Record::new()
        .with("booking_id", format!("BK-{i:07}"))
        .with("client_id", format!("CL-{:03}", i % 50))
        .with("client_name", format!("Client {}", i % 50))
        .with("campaign_name", format!("Campaign {i}"))
        .with("start_date", NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())
        .with("end_date", NaiveDate::from_ymd_opt(2024, 3, 31).unwrap())
        .with("budget", Decimal::new(250_000 + i as i64, 2))
        .with("currency", "USD")
        .with("impressions_booked", (i as i64) * 1000)
        .with("media_type", "display")
        .with("dsp_platform", "DV360")
        .with("created_at", at)
        .with("updated_at", at)
}

pub(crate) fn client(i: usize) -> Record {
    Record::new()
        .with("client_id", format!("CL-{i:03}"))
        .with("client_name", format!("Client {i}"))
        .with("client_code", format!("C{:02}", i % 100))
        .with("tier", "growth")
        .with("primary_contact_email", format!("ops{i}@example.com"))
        .with("updated_at", t(i as i64))
}

async fn write_ok(
    conn: &SqlConnector,
    object: &str,
    key: &str,
    records: Vec<Record>,
) -> Vec<WriteOutcome> {
    let n = records.len();
    let mut out = Vec::new();
    for chunk in records.chunks(1000) {
        out.extend(
            conn.write(object, WriteBatch::upsert(key, chunk.to_vec()))
                .await
                .expect("write"),
        );
    }
    assert_eq!(out.len(), n);
    for o in &out {
        assert!(o.is_ok(), "unexpected rejection: {o:?}");
    }
    out
}

/// Reads every page after `since`; returns the records, the last cursor and
/// the number of pages.
pub(crate) async fn read_all(
    conn: &SqlConnector,
    object: &str,
    since: Option<Cursor>,
    page: usize,
) -> (Vec<Record>, Option<Cursor>, usize) {
    let mut req = ReadRequest::full(object).page_size(page);
    req.since = since.clone();
    let pages: Vec<_> = conn.read(req).try_collect().await.expect("read");
    let n = pages.len();
    let mut records = Vec::new();
    let mut cursor = since;
    for p in pages {
        assert!(p.changes.len() <= page, "page larger than asked");
        for c in p.changes {
            match c {
                Change::Upsert(r) => records.push(r),
                other => panic!("unexpected change {other:?}"),
            }
        }
        cursor = Some(p.cursor);
    }
    (records, cursor, n)
}

fn ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.text("booking_id").unwrap().to_owned())
        .collect()
}

fn assert_distinct(ids: &[String]) {
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "a row was read twice");
}

pub(crate) async fn setup(db: &TestDb) -> SqlConnector {
    let conn = db.connect().await;
    conn.create_table(&booking_schema())
        .await
        .expect("create booking");
    conn.create_table(&client_schema())
        .await
        .expect("create client");
    conn
}

/// 1,200 rows share one `updated_at` and straddle several page boundaries;
/// consecutive runs (and a run resumed mid-way) lose and repeat nothing.
pub(crate) async fn incremental_read_ties_across_pages(db: TestDb) {
    let conn = setup(&db).await;
    let mut rows = Vec::new();
    for i in 0..300 {
        rows.push(booking(i, t(0)));
    }
    for i in 300..1500 {
        rows.push(booking(i, t(10)));
    }
    for i in 1500..1600 {
        rows.push(booking(i, t(20)));
    }
    write_ok(&conn, "booking", "booking_id", rows).await;

    // One full run, small pages.
    let (all, cursor, pages) = read_all(&conn, "booking", None, 250).await;
    assert_eq!(all.len(), 1600);
    assert!(pages >= 7);
    let all_ids = ids(&all);
    assert_distinct(&all_ids);
    // Pages come in (updated_at, key) order.
    let mut sorted = all_ids.clone();
    sorted.sort();
    assert_eq!(sorted, all_ids);

    // A run interrupted after 3 pages, resumed from the third page's cursor.
    let req = ReadRequest::full("booking").page_size(250);
    let mut stream = conn.read(req);
    let mut first = Vec::new();
    let mut mid_cursor = None;
    for _ in 0..3 {
        let p = stream.try_next().await.unwrap().unwrap();
        for c in p.changes {
            if let Change::Upsert(r) = c {
                first.push(r);
            }
        }
        mid_cursor = Some(p.cursor);
    }
    drop(stream);
    let (rest, _, _) = read_all(&conn, "booking", mid_cursor, 250).await;
    let mut union = ids(&first);
    union.extend(ids(&rest));
    assert_distinct(&union);
    assert_eq!(union.len(), 1600, "resume lost rows");

    // An idle run reads nothing.
    let (again, cursor2, _) = read_all(&conn, "booking", cursor.clone(), 250).await;
    assert!(again.is_empty(), "idle run re-read {} rows", again.len());
    let cursor = cursor2.or(cursor);

    // New rows at the last timestamp (keys before and after the last key)
    // and after it arrive exactly once.
    let late = vec![
        // Sorts before the last key read at that timestamp.
        booking(0, t(20)).with("booking_id", "BK-0000000a"),
        booking(5000, t(20)),
        booking(5001, t(30)),
    ];
    write_ok(&conn, "booking", "booking_id", late).await;
    let (new, cursor3, _) = read_all(&conn, "booking", cursor, 250).await;
    let mut got = ids(&new);
    got.sort();
    assert_eq!(got, ["BK-0000000a", "BK-0005000", "BK-0005001"]);
    let (none, _, _) = read_all(&conn, "booking", cursor3, 250).await;
    assert!(none.is_empty());
    conn.close().await;
}

/// A row committed late with a stamp before the checkpoint is still read
/// (lookback), and rows already read are not read again.
pub(crate) async fn lookback_catches_late_commits(db: TestDb) {
    let conn = setup(&db).await;
    write_ok(
        &conn,
        "booking",
        "booking_id",
        (0..20).map(|i| booking(i, t(100 + i as i64))).collect(),
    )
    .await;
    let (all, cursor, _) = read_all(&conn, "booking", None, 7).await;
    assert_eq!(all.len(), 20);
    // Transaction A stamped t(110) commits after B (t(119)) was read.
    write_ok(&conn, "booking", "booking_id", vec![booking(100, t(110))]).await;
    let (late, cursor, _) = read_all(&conn, "booking", cursor, 7).await;
    assert_eq!(ids(&late), ["BK-0000100"]);
    let (none, _, _) = read_all(&conn, "booking", cursor, 7).await;
    assert!(none.is_empty(), "re-read {:?}", ids(&none));
    conn.close().await;
}

/// The same batch twice: the second reports unchanged and rewrites nothing.
pub(crate) async fn upsert_is_idempotent(db: TestDb) {
    let conn = setup(&db).await;
    let batch: Vec<Record> = (0..40).map(client).collect();
    let first = write_ok(&conn, "client", "client_id", batch.clone()).await;
    assert!(
        first.iter().all(|o| matches!(o, WriteOutcome::Created(_))),
        "{first:?}"
    );
    assert_eq!(first[3].id().unwrap().as_str(), "CL-003");
    let snapshot = |conn: SqlConnector| async move {
        let (rows, _, _) = read_all(&conn, "client", None, 1000).await;
        rows.into_iter()
            .map(|r| {
                (
                    r.text("client_id").unwrap().to_owned(),
                    format!("{:?}", r.fields),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let before = snapshot(conn.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = write_ok(&conn, "client", "client_id", batch.clone()).await;
    assert!(
        second
            .iter()
            .all(|o| matches!(o, WriteOutcome::Unchanged(_))),
        "{second:?}"
    );
    let after = snapshot(conn.clone()).await;
    assert_eq!(
        before, after,
        "an unchanged upsert rewrote rows (synced_at moved?)"
    );
    // One changed record, one new one, duplicates in one batch.
    let mut third = batch.clone();
    third[5] = client(5).with("tier", "enterprise");
    third.push(client(99));
    third.push(client(99).with("tier", "starter"));
    let out = write_ok(&conn, "client", "client_id", third).await;
    assert!(matches!(out[5], WriteOutcome::Updated(_)), "{:?}", out[5]);
    assert!(matches!(out[40], WriteOutcome::Created(_)), "{:?}", out[40]);
    assert!(matches!(out[41], WriteOutcome::Updated(_)), "{:?}", out[41]);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, WriteOutcome::Unchanged(_)))
            .count(),
        39
    );
    let (rows, _, _) = read_all(&conn, "client", None, 1000).await;
    assert_eq!(rows.len(), 41);
    conn.close().await;
}

/// Decimals come back exactly, scale included.
pub(crate) async fn decimals_round_trip(db: TestDb) {
    let conn = setup(&db).await;
    let big: Decimal = "12345678901234.5678".parse().unwrap();
    let small: Decimal = "0.0001".parse().unwrap();
    let rec = booking(1, t(0))
        .with("budget", big)
        .with("margin_target", small);
    let rec2 = booking(2, t(1)).with("budget", Value::Text("-98765432109876.5432".into()));
    write_ok(&conn, "booking", "booking_id", vec![rec, rec2]).await;
    let (rows, _, _) = read_all(&conn, "booking", None, 10).await;
    let b = rows[0].get("budget").unwrap();
    assert_eq!(b, &Value::Decimal(big));
    assert_eq!(b.to_string(), "12345678901234.5678");
    assert_eq!(rows[0].get("margin_target").unwrap().to_string(), "0.0001");
    assert_eq!(
        rows[1].get("budget").unwrap().to_string(),
        "-98765432109876.5432"
    );
    // Integers and dates keep their types.
    assert_eq!(rows[0].get("impressions_booked"), Some(&Value::Int(1000)));
    assert_eq!(
        rows[0].get("start_date"),
        Some(&Value::Date(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()))
    );
    assert_eq!(rows[0].get("updated_at"), Some(&Value::DateTime(t(0))));
    assert_eq!(rows[0].updated_at, Some(t(0)));
    conn.close().await;
}

/// A value that does not fit rejects its record only; the rest lands.
pub(crate) async fn bad_values_rejected_individually(db: TestDb) {
    let conn = setup(&db).await;
    let batch = vec![
        client(1),
        client(2).with("client_code", "X".repeat(300)),
        client(3),
        client(4).with("client_name", Value::Null),
        client(5).with("no_such_column", "x"),
        client(6),
    ];
    let out = conn
        .write("client", WriteBatch::upsert("client_id", batch))
        .await
        .expect("write");
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(
        names,
        [
            "created", "rejected", "created", "rejected", "rejected", "created"
        ]
    );
    match &out[1] {
        WriteOutcome::Rejected { index, error } => {
            assert_eq!(*index, 1);
            assert_eq!(error.kind(), &ErrorKind::InvalidInput);
            assert_eq!(error.context_value("field"), Some("client_code"));
        }
        other => panic!("{other:?}"),
    }
    // Text into a numeric column.
    let out = conn
        .write(
            "booking",
            WriteBatch::upsert(
                "booking_id",
                vec![
                    booking(1, t(0)),
                    booking(2, t(0)).with("budget", "twelve hundred"),
                    booking(3, t(0)),
                ],
            ),
        )
        .await
        .unwrap();
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(names, ["created", "rejected", "created"]);
    // A constraint only the database knows (CHECK): the savepoint path.
    conn.execute_unprepared(
        "CREATE TABLE checked (id VARCHAR(20) NOT NULL PRIMARY KEY, amount DECIMAL(10, 2) NOT NULL, CHECK (amount >= 0))",
    )
    .await
    .unwrap();
    let recs = vec![
        Record::new()
            .with("id", "a")
            .with("amount", Decimal::new(100, 2)),
        Record::new()
            .with("id", "b")
            .with("amount", Decimal::new(-100, 2)),
        Record::new()
            .with("id", "c")
            .with("amount", Decimal::new(300, 2)),
    ];
    let out = conn
        .write("checked", WriteBatch::upsert("id", recs))
        .await
        .unwrap();
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(names, ["created", "rejected", "created"]);
    let (rows, _, _) = read_all(&conn, "client", None, 100).await;
    let got: Vec<&str> = rows.iter().map(|r| r.text("client_id").unwrap()).collect();
    assert_eq!(got, ["CL-001", "CL-003", "CL-006"]);
    conn.close().await;
}

/// Hostile text in data, in cursors and in parameters stays data.
pub(crate) async fn sql_injection_is_inert(db: TestDb) {
    let conn = setup(&db).await;
    let evil = [
        "Robert'); DROP TABLE client; --",
        "x\" OR 1=1 --",
        "'; DELETE FROM booking WHERE '1'='1",
        "back\\slash ` backtick $1 ? :last_sync",
    ];
    let recs: Vec<Record> = evil
        .iter()
        .enumerate()
        .map(|(i, e)| client(i).with("client_name", *e).with("industry", *e))
        .collect();
    write_ok(&conn, "client", "client_id", recs).await;
    write_ok(&conn, "booking", "booking_id", vec![booking(1, t(0))]).await;
    let (rows, cursor, _) = read_all(&conn, "client", None, 10).await;
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.text("client_name").unwrap())
        .collect();
    assert_eq!(names, evil);
    // A forged cursor carrying SQL: bound as values, never executed.
    let mut forged = cursor.unwrap().as_json().clone();
    forged["key"] = serde_json::json!([{"text": "' OR '1'='1"}]);
    forged["ts"] = serde_json::json!({"text": "2024-01-01'); DROP TABLE client; --"});
    let req = ReadRequest::since("client", Cursor::new(forged));
    let res: Result<Vec<_>, _> = conn.read(req).try_collect().await;
    if let Ok(pages) = res {
        let n: usize = pages.iter().map(|p| p.changes.len()).sum();
        assert!(n <= evil.len());
    }
    // A hostile named parameter.
    let cfg = db
        .config()
        .query("SELECT * FROM client WHERE client_name = :name AND updated_at >= :last_sync")
        .param("name", serde_json::json!("' OR '1'='1"))
        .build()
        .unwrap();
    let q = SqlConnector::connect(&cfg).await.unwrap();
    let (rows, _, _) = read_all(&q, "client", None, 10).await;
    assert!(rows.is_empty(), "the parameter was interpreted as SQL");
    let cfg = db
        .config()
        .query("SELECT * FROM client WHERE client_name = :name AND updated_at >= :last_sync")
        .param("name", serde_json::json!(evil[0]))
        .build()
        .unwrap();
    let q = SqlConnector::connect(&cfg).await.unwrap();
    let (rows, _, _) = read_all(&q, "client", None, 10).await;
    assert_eq!(rows.len(), 1);
    q.close().await;
    // Everything is still there.
    let (rows, _, _) = read_all(&conn, "client", None, 10).await;
    assert_eq!(rows.len(), evil.len());
    let (rows, _, _) = read_all(&conn, "booking", None, 10).await;
    assert_eq!(rows.len(), 1);
    conn.close().await;
}

/// NUL characters do not sink a batch (PostgreSQL cannot store them).
pub(crate) async fn nul_bytes_do_not_sink_a_batch(db: TestDb) {
    let conn = setup(&db).await;
    let out = write_ok(
        &conn,
        "client",
        "client_id",
        vec![client(1).with("industry", "a\u{0}b"), client(2)],
    )
    .await;
    assert!(out.iter().all(|o| matches!(o, WriteOutcome::Created(_))));
    let (rows, _, _) = read_all(&conn, "client", None, 10).await;
    let industry = rows[0].text("industry").unwrap();
    if db.kind == DatabaseKind::Postgres {
        assert_eq!(industry, "ab");
    } else {
        assert!(industry == "a\u{0}b" || industry == "ab");
    }
    // Writing it again is unchanged, not an endless update.
    let out = write_ok(
        &conn,
        "client",
        "client_id",
        vec![client(1).with("industry", "a\u{0}b")],
    )
    .await;
    assert!(matches!(out[0], WriteOutcome::Unchanged(_)), "{out:?}");
    conn.close().await;
}

/// The configured query of seed 000's shape, with the cursor column selected.
pub(crate) async fn configured_query_with_params(db: TestDb) {
    let conn = setup(&db).await;
    let mut rows: Vec<Record> = (0..30).map(|i| booking(i, t(i as i64))).collect();
    rows[3] = booking(3, t(3)).with("media_type", "video");
    rows[17] = booking(17, t(17)).with("media_type", "video");
    write_ok(&conn, "booking", "booking_id", rows).await;
    let cfg = db
        .config()
        .query(
            "SELECT booking_id, client_name, campaign_name, start_date, end_date, budget,
                    impressions_booked, media_type, dsp_platform, updated_at
             FROM booking
             -- media type filter: ':not_a_param'
             WHERE updated_at >= :last_sync AND media_type = :media",
        )
        .param("media", serde_json::json!("video"))
        .build()
        .unwrap();
    let q = SqlConnector::connect(&cfg).await.unwrap();
    let (got, cursor, _) = read_all(&q, "booking", None, 1).await;
    assert_eq!(ids(&got), ["BK-0000003", "BK-0000017"]);
    assert_eq!(got[0].len(), 10);
    let (none, _, _) = read_all(&q, "booking", cursor, 1).await;
    assert!(none.is_empty());
    // A query without the cursor column is a clear schema mismatch.
    let cfg = db
        .config()
        .query("SELECT booking_id FROM booking WHERE updated_at >= :last_sync")
        .build()
        .unwrap();
    let q2 = SqlConnector::connect(&cfg).await.unwrap();
    let err = q2
        .read(ReadRequest::full("booking"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        err.kind() == &ErrorKind::SchemaMismatch || err.kind() == &ErrorKind::InvalidInput,
        "{err}"
    );
    q.close().await;
    q2.close().await;
    conn.close().await;
}

/// Describe reports the reference schema; check works; a missing table is
/// not found.
pub(crate) async fn describe_and_check(db: TestDb) {
    let conn = setup(&db).await;
    conn.check().await.unwrap();
    let schema = conn.describe("booking").await.unwrap();
    assert_eq!(schema.primary_key, ["booking_id"]);
    let budget = schema.get("budget").unwrap();
    assert_eq!(budget.field_type, crm_core::FieldType::Decimal);
    assert_eq!(budget.scale, Some(4));
    let code = conn.describe("client").await.unwrap();
    assert_eq!(code.get("client_code").unwrap().max_length, Some(3));
    assert!(code.get("client_id").unwrap().external_id);
    let err = conn.describe("nope").await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound);
    // Creating again is a no-op.
    conn.create_table(&booking_schema()).await.unwrap();
    conn.close().await;
}

/// A wrong password never shows up in the error.
pub(crate) async fn password_never_in_errors(db: TestDb) {
    if db.kind == DatabaseKind::Sqlite {
        return;
    }
    let url = db.url.replacen("://", "://crm_nobody:Sup3rS3cretPw@", 1);
    let url = match url
        .find("@")
        .and_then(|a| url[a + 1..].find('@').map(|b| a + 1 + b))
    {
        // The URL already had credentials: drop the old ones.
        Some(second) => {
            let scheme_end = url.find("://").unwrap() + 3;
            format!(
                "{}crm_nobody:Sup3rS3cretPw@{}",
                &url[..scheme_end],
                &url[second + 1..]
            )
        }
        None => url,
    };
    let cfg = crm_sql::SqlConfig::builder()
        .url(url)
        .max_connections(1)
        .build()
        .unwrap();
    let err = SqlConnector::connect(&cfg).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("Sup3rS3cretPw"), "{shown}");
    assert!(
        err.kind() == &ErrorKind::Auth
            || err.kind() == &ErrorKind::Transient
            || err.kind() == &ErrorKind::Permanent,
        "{err}"
    );
}

/// Large batches (the PostgreSQL `COPY` path) behave like small ones:
/// created, then unchanged, duplicates and bad records handled per record.
pub(crate) async fn bulk_batches_behave_like_small_ones(db: TestDb) {
    let conn = SqlConnector::connect(&db.config().copy_threshold(10).build().unwrap())
        .await
        .unwrap();
    conn.create_table(&booking_schema()).await.unwrap();
    let mut batch: Vec<Record> = (0..200).map(|i| booking(i, t(i as i64))).collect();
    batch.push(booking(7, t(500)).with("campaign_name", "renamed"));
    batch.push(booking(300, t(0)).with("budget", "n/a"));
    let out = conn
        .write("booking", WriteBatch::upsert("booking_id", batch.clone()))
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, WriteOutcome::Created(_)))
            .count(),
        200
    );
    assert!(
        matches!(out[200], WriteOutcome::Updated(_)),
        "{:?}",
        out[200]
    );
    assert!(matches!(
        out[201],
        WriteOutcome::Rejected { index: 201, .. }
    ));
    let again = conn
        .write(
            "booking",
            WriteBatch::upsert("booking_id", batch[..200].to_vec()),
        )
        .await
        .unwrap();
    // Row 7 goes back to its first version: updated; the rest unchanged.
    assert!(matches!(again[7], WriteOutcome::Updated(_)));
    assert_eq!(
        again
            .iter()
            .filter(|o| matches!(o, WriteOutcome::Unchanged(_)))
            .count(),
        199
    );
    let (rows, _, _) = read_all(&conn, "booking", None, 1000).await;
    assert_eq!(rows.len(), 200);
    conn.close().await;
}

/// Create, update and delete by primary key.
pub(crate) async fn create_update_delete(db: TestDb) {
    use crm_core::WriteOp;
    let conn = setup(&db).await;
    let out = conn
        .write(
            "client",
            WriteBatch::new(WriteOp::Create, vec![client(1), client(2), client(1)]),
        )
        .await
        .unwrap();
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(names, ["created", "created", "rejected"]);
    let out = conn
        .write(
            "client",
            WriteBatch::new(
                WriteOp::Update,
                vec![client(1).with("tier", "enterprise"), client(9)],
            ),
        )
        .await
        .unwrap();
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(names, ["updated", "rejected"]);
    let out = conn
        .write(
            "client",
            WriteBatch::new(
                WriteOp::Delete,
                vec![
                    Record::new().with_id("CL-002"),
                    Record::new().with_id("CL-404"),
                ],
            ),
        )
        .await
        .unwrap();
    let names: Vec<&str> = out.iter().map(WriteOutcome::as_str).collect();
    assert_eq!(names, ["deleted", "rejected"]);
    let (rows, _, _) = read_all(&conn, "client", None, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text("tier"), Some("enterprise"));
    conn.close().await;
}

/// Thousands of rows on one timestamp: correct reads with a cursor that
/// stays small (the lookback window gives way).
pub(crate) async fn boundary_state_stays_small(db: TestDb) {
    let conn = SqlConnector::connect(&db.config().lookback_max_keys(100).build().unwrap())
        .await
        .unwrap();
    conn.create_table(&booking_schema()).await.unwrap();
    write_ok(
        &conn,
        "booking",
        "booking_id",
        (0..3000).map(|i| booking(i, t(5))).collect(),
    )
    .await;
    let (rows, cursor, _) = read_all(&conn, "booking", None, 700).await;
    assert_eq!(rows.len(), 3000);
    assert_distinct(&ids(&rows));
    let size = cursor.as_ref().unwrap().as_json().to_string().len();
    assert!(size < 10_000, "cursor is {size} bytes");
    write_ok(
        &conn,
        "booking",
        "booking_id",
        vec![booking(3000, t(5)), booking(3001, t(6))],
    )
    .await;
    let (rows, _, _) = read_all(&conn, "booking", cursor, 700).await;
    assert_eq!(ids(&rows), ["BK-0003000", "BK-0003001"]);
    conn.close().await;
}

/// A write dropped part-way (a crash between COPY and commit) leaves
/// nothing half-done, and repeating it lands every row exactly once.
pub(crate) async fn cancelled_write_is_safe_to_repeat(db: TestDb) {
    // Both the PostgreSQL COPY path and the ordinary path.
    for (n, threshold) in [(0, 100), (1, 1_000_000)] {
        let conn = SqlConnector::connect(&db.config().copy_threshold(threshold).build().unwrap())
            .await
            .unwrap();
        let mut schema = booking_schema();
        schema.name = format!("booking{n}");
        conn.create_table(&schema).await.unwrap();
        let batch: Vec<Record> = (0..5000).map(|i| booking(i, t(i as i64))).collect();
        for ms in [1, 5, 20] {
            let _ = tokio::time::timeout(
                Duration::from_millis(ms),
                conn.write(
                    &schema.name,
                    WriteBatch::upsert("booking_id", batch.clone()),
                ),
            )
            .await;
        }
        let out = conn
            .write(&schema.name, WriteBatch::upsert("booking_id", batch))
            .await
            .unwrap();
        assert!(out.iter().all(WriteOutcome::is_ok));
        let (rows, _, _) = read_all(&conn, &schema.name, None, 10_000).await;
        assert_eq!(rows.len(), 5000);
        assert_distinct(&ids(&rows));
        conn.close().await;
    }
}
