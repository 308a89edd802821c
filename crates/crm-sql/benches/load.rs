//! crm-sql load benchmark (run with `cargo bench -p crm-sql`).
//!
//! Goal: the Sink's bulk path loads seed-000 bookings into PostgreSQL at no
//! less than half the rate of a plain `COPY FROM STDIN` of the same rows,
//! and streaming the loaded table back out through the Source keeps memory
//! flat.
//!
//! Both load timings add up wall clock from generating each chunk of records
//! to its commit, so both pay for generating the same records. The two paths
//! alternate chunk by chunk (which goes first alternates too), so background
//! load on a shared machine hits both alike.
//!
//! 1. Loads `CRM_BENCH_ROWS` (default 1,000,000) bookings through
//!    `Sink::write` (batches of 50,000: the `COPY` staging path), into a
//!    fresh database on `CRM_TEST_POSTGRES_URL` (default: the local server).
//! 2. Loads the same rows into an identical table with plain `COPY ... FROM
//!    STDIN`, one statement per chunk of 50,000 (the sink commits per batch
//!    of 50,000 too).
//! 3. Loads the same rows through the Sink again: all stored, all unchanged.
//! 4. Streams the loaded table out through `Source::read` (pages of 1,000)
//!    and reports the peak resident set size of that phase (VmHWM, reset
//!    through /proc/self/clear_refs before it starts).
//!
//! Prints a Markdown summary for docs/benchmarks.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crm_core::{Change, ReadRequest, Record, Sink, Source, WriteBatch};
use crm_sql::{SqlConfig, SqlConnector, booking_schema};
use futures_util::TryStreamExt;
use rust_decimal::Decimal;

const BATCH: usize = 50_000;

/// Set (to the database URL) in the child process that only reads.
const READ_ONLY: &str = "CRM_BENCH_READ_ONLY";

/// Streams the `booking` table through the Source and prints what it saw
/// and the process's peak RSS.
async fn read_phase(url: &str) {
    let conn = SqlConnector::connect(&SqlConfig::from_url(url).unwrap())
        .await
        .unwrap();
    let idle = proc_status("VmRSS:").unwrap_or(0);
    let t0 = Instant::now();
    let mut pages = conn.read(ReadRequest::full("booking").page_size(1000));
    let mut read = 0usize;
    let mut checksum = Decimal::ZERO;
    while let Some(page) = pages.try_next().await.unwrap() {
        for c in &page.changes {
            if let Change::Upsert(r) = c {
                read += 1;
                checksum += r
                    .get("budget")
                    .and_then(|v| v.as_decimal())
                    .unwrap_or_default();
            }
        }
    }
    drop(pages);
    let ms = t0.elapsed().as_millis();
    conn.close().await;
    println!("read={read}");
    println!("ms={ms}");
    println!("hwm_kib={}", proc_status("VmHWM:").unwrap_or(0));
    println!("idle_kib={idle}");
    eprintln!("checksum {checksum}");
}

fn stamp(i: usize) -> DateTime<Utc> {
    // 100 bookings share each timestamp.
    Utc.timestamp_opt(1_704_067_200 + (i / 100) as i64, 0)
        .single()
        .unwrap()
}

fn booking(i: usize) -> Record {
    let media = ["display", "video", "native", "audio"][i % 4];
    let dsp = ["DV360", "TTD", "Meta", "GoogleAds"][i % 4];
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new((i % 300) as u64);
    let mut r = Record::new()
        .with("booking_id", format!("BK-{i:08}"))
        .with("client_id", format!("CL-{:05}", i % 5000))
        .with("client_name", format!("Client {} Holdings", i % 5000))
        .with("campaign_name", format!("Spring promo {i} - {media}"))
        .with("start_date", start)
        .with("end_date", start + chrono::Days::new(30))
        .with(
            "budget",
            Decimal::new(100_000 + (i as i64 * 7919) % 10_000_000, 2),
        )
        .with("currency", "USD")
        .with("impressions_booked", (i as i64 % 1000) * 1000)
        .with("media_type", media)
        .with("dsp_platform", dsp)
        .with("created_at", stamp(i))
        .with("updated_at", stamp(i));
    if i.is_multiple_of(3) {
        r.set("campaign_id", format!("DSP-{i}"));
        r.set("margin_target", Decimal::new(1500 + (i % 100) as i64, 4));
    }
    r
}

/// The columns of the raw COPY, in the order `copy_line` writes them.
const RAW_COLUMNS: &str = "booking_id, client_id, client_name, campaign_name, campaign_id, start_date, \
    end_date, budget, currency, margin_target, impressions_booked, clicks_booked, conversions_booked, \
    media_type, dsp_platform, created_at, updated_at, synced_at";

fn copy_line(buf: &mut Vec<u8>, r: &Record, synced: &str) {
    let cols = [
        "booking_id",
        "client_id",
        "client_name",
        "campaign_name",
        "campaign_id",
        "start_date",
        "end_date",
        "budget",
        "currency",
        "margin_target",
        "impressions_booked",
        "clicks_booked",
        "conversions_booked",
        "media_type",
        "dsp_platform",
    ];
    for c in cols {
        match r.get(c) {
            None | Some(crm_core::Value::Null) => buf.extend_from_slice(b"\\N"),
            Some(v) => {
                for &b in v.to_string().as_bytes() {
                    match b {
                        b'\\' => buf.extend_from_slice(b"\\\\"),
                        b'\t' => buf.extend_from_slice(b"\\t"),
                        b'\n' => buf.extend_from_slice(b"\\n"),
                        b'\r' => buf.extend_from_slice(b"\\r"),
                        _ => buf.push(b),
                    }
                }
            }
        }
        buf.push(b'\t');
    }
    let t = r
        .updated_at
        .or_else(|| r.get("updated_at").and_then(|v| v.as_datetime()))
        .unwrap();
    let t = t.format("%Y-%m-%d %H:%M:%S+00").to_string();
    writeln!(buf, "{t}\t{t}\t{synced}").unwrap();
}

fn proc_status(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = proc_meminfo_kib()
        .map(|k| k as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB RAM")
}

fn proc_meminfo_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // this is far too slow for a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("crm-sql load benchmark: run it with `cargo bench -p crm-sql`");
        return;
    }
    if let Ok(url) = std::env::var(READ_ONLY) {
        read_phase(&url).await;
        return;
    }
    let rows: usize = std::env::var("CRM_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let admin_url = std::env::var("CRM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("crm_bench_{}", std::process::id());
    let admin = SqlConnector::connect_url(&admin_url)
        .await
        .expect("PostgreSQL for the benchmark");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => {
            eprintln!("CRM_TEST_POSTGRES_URL needs a database path");
            return;
        }
    };
    let cfg = SqlConfig::builder()
        .url(url.clone())
        .batch_size(BATCH)
        .copy_threshold(5_000)
        .max_connections(2)
        .build()
        .unwrap();
    let conn = SqlConnector::connect(&cfg).await.unwrap();
    let version = pg_version(&url).await;

    // 1 and 2, interleaved chunk by chunk so both see the same background
    // load on a shared machine: the Sink into `booking`, plain COPY into an
    // identical `booking_raw`.
    conn.create_table(&booking_schema()).await.unwrap();
    let mut raw_schema = booking_schema();
    raw_schema.name = "booking_raw".into();
    conn.create_table(&raw_schema).await.unwrap();
    let synced = Utc::now().format("%Y-%m-%d %H:%M:%S+00").to_string();
    let mut raw = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&url).await.unwrap()
    };
    let mut sink_time = Duration::ZERO;
    let mut raw_time = Duration::ZERO;
    let mut created = 0usize;
    let mut start = 0;
    let mut chunk = 0;
    while start < rows {
        let end = (start + BATCH).min(rows);
        for path in 0..2 {
            let sink_turn = (path + chunk) % 2 == 0;
            let t0 = Instant::now();
            let batch: Vec<Record> = (start..end).map(booking).collect();
            if sink_turn {
                let out = conn
                    .write("booking", WriteBatch::upsert("booking_id", batch))
                    .await
                    .unwrap();
                created += out.iter().filter(|o| o.as_str() == "created").count();
                sink_time += t0.elapsed();
            } else {
                raw_copy(&mut raw, &batch, &synced).await;
                raw_time += t0.elapsed();
            }
        }
        start = end;
        chunk += 1;
    }
    assert_eq!(created, rows, "every row must be created");
    eprintln!("sink: {rows} rows in {sink_time:?}; raw COPY: {raw_time:?}");
    {
        use sqlx::Connection as _;
        raw.close().await.unwrap();
    }

    // The same rows again: every key is stored, so the staging table and
    // the ON CONFLICT upsert do the work, and every row is unchanged.
    let mut unchanged = 0usize;
    let mut start = 0;
    let t0 = Instant::now();
    while start < rows {
        let end = (start + BATCH).min(rows);
        let batch: Vec<Record> = (start..end).map(booking).collect();
        let out = conn
            .write("booking", WriteBatch::upsert("booking_id", batch))
            .await
            .unwrap();
        unchanged += out.iter().filter(|o| o.as_str() == "unchanged").count();
        start = end;
    }
    let again_time = t0.elapsed();
    assert_eq!(unchanged, rows, "a repeated load must change nothing");
    eprintln!("sink again: {rows} rows in {again_time:?}");

    // 4. Stream it back out through the Source, in a fresh process of this
    // binary so its peak RSS is the read's alone.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(READ_ONLY, &url)
        .output()
        .expect("run the read phase");
    let report = String::from_utf8_lossy(&child.stdout).to_string();
    let field = |name: &str| -> u64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (read, read_ms, hwm, rss_idle) = (
        field("read="),
        field("ms="),
        field("hwm_kib="),
        field("idle_kib="),
    );
    assert_eq!(read as usize, rows, "the source must return every row once");
    let read_time = Duration::from_millis(read_ms);
    eprintln!("source: {read} rows in {read_time:?}");

    let sink_rate = rate(rows, sink_time);
    let raw_rate = rate(rows, raw_time);
    println!("## crm-sql benchmark run\n");
    println!("- date: {}", Utc::now().format("%Y-%m-%d"));
    println!("- machine: {}", machine());
    println!("- database: {version} on 127.0.0.1");
    println!("- rows: {rows} seed-000 bookings (100 per timestamp), sink batches of {BATCH}\n");
    println!("| path | time | rows/s |");
    println!("|---|---|---|");
    println!(
        "| Sink::write, new rows (bulk path: key check + COPY) | {:.2} s | {:.0} |",
        sink_time.as_secs_f64(),
        sink_rate
    );
    println!(
        "| plain COPY FROM STDIN (one statement per 50,000 rows) | {:.2} s | {:.0} |",
        raw_time.as_secs_f64(),
        raw_rate
    );
    println!(
        "| Sink::write, same rows again (staging COPY + ON CONFLICT upsert, all unchanged) | {:.2} s | {:.0} |",
        again_time.as_secs_f64(),
        rate(rows, again_time)
    );
    println!(
        "\nratio Sink (new rows) / COPY: {:.2} (target >= 0.50)\n",
        sink_rate / raw_rate
    );
    println!(
        "Source::read of {rows} rows, pages of 1,000, in a fresh process: {:.2} s ({:.0} rows/s); \
         RSS after connecting {:.1} MiB, peak RSS (VmHWM) of the whole process {:.1} MiB",
        read_time.as_secs_f64(),
        rate(rows, read_time),
        rss_idle as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );

    conn.close().await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    admin.close().await;
}

async fn pg_version(url: &str) -> String {
    let q = SqlConnector::connect(
        &SqlConfig::builder()
            .url(url)
            .query("SELECT 1 AS id, split_part(version(), ' ', 2) AS v, now() AS updated_at WHERE now() >= :last_sync")
            .primary_key(["id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<_> = q.read(ReadRequest::full("v")).try_collect().await.unwrap();
    q.close().await;
    match pages.first().and_then(|p| p.changes.first()) {
        Some(Change::Upsert(r)) => format!("PostgreSQL {}", r.text("v").unwrap_or("?")),
        _ => "PostgreSQL".into(),
    }
}

/// One plain `COPY booking_raw FROM STDIN` of `batch` (autocommitted).
async fn raw_copy(c: &mut sqlx::PgConnection, batch: &[Record], synced: &str) {
    let mut copy = c
        .copy_in_raw(&format!("COPY booking_raw ({RAW_COLUMNS}) FROM STDIN"))
        .await
        .unwrap();
    let mut buf = Vec::with_capacity(batch.len() * 200);
    for r in batch {
        copy_line(&mut buf, r, synced);
    }
    copy.send(buf).await.unwrap();
    copy.finish().await.unwrap();
}
