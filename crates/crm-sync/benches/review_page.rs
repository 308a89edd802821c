//! Review desk benchmark: the first page of each queue with 20,000 queued
//! items (run with `cargo bench -p crm-sync --bench review_page`).
//!
//! Goal: the first page of every queue renders in under 200 ms server-side,
//! and keyset pages deep in a queue are no slower than the first.
//!
//! 1. Fills a fresh SQLite state store (in a temporary directory) through
//!    the store's own calls, one item per call as the pipeline queues them:
//!    `CRM_BENCH_ITEMS` (default 20,000) items, interleaved in time: 60%
//!    probable/multiple matches (a booking of 9 fields, 2-3 candidates),
//!    20% manual conflicts (3 fields), 20% dead letters (`put_dead_letter`).
//!    The fill time is reported on its own.
//! 2. Serves `ReviewDesk::router` on 127.0.0.1 and requests the first page
//!    of each queue with a bearer token over one keep-alive connection:
//!    5 warm-up requests, then 50 timed ones (request sent to whole body
//!    received). Each answer must be 200 with 50 items. A request for the
//!    stylesheet gives the cost of the HTTP round trip alone.
//! 3. Follows the `next-page` links of each queue to a page deep in it
//!    (page 200 of the matches) and times that page the same way.
//! 4. Times the store calls a queue page makes, one by one.
//! 5. Does the same on PostgreSQL (`CRM_TEST_POSTGRES_URL`, default the
//!    local server; a fresh database is created and dropped) when it is
//!    reachable, else prints a note and skips it: once right after the fill
//!    and once more after `ANALYZE` of the state tables.
//!
//! `CRM_BENCH_KEEP=1` leaves the SQLite file and the PostgreSQL database in
//! place (their names are printed) for a look at query plans. Prints
//! Markdown tables for docs/benchmarks.md.

// A benchmark prints its figures, and a broken setup should stop it loudly.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use crm_core::value::parse_decimal;
use crm_core::{Record, Value};
use crm_sql::SqlConnector;
use crm_sql::state::{
    ConnectionId, CredentialKey, PageAfter, QueueFilter, ReviewReason, StateStore,
};
use crm_sync::access::{Role, Tokens};
use crm_sync::review::{Queue, ReviewDesk};
use crm_sync::serve::Server;
use secrecy::SecretString;
use serde_json::json;

const TOKEN: &str = "bench-review-desk-token-4f1c2a9e";
const WARMUP: usize = 5;
const TIMED: usize = 50;
const PAGE: usize = 50;
/// The page of the matches queue timed as "deep" (fewer in smaller queues).
const DEEP_PAGE: usize = 200;
/// Writers filling PostgreSQL at once (SQLite takes one writer at a time).
const PG_WRITERS: usize = 4;

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / median / p95 / max (nearest rank) of the samples, in ms.
struct Stats {
    min: f64,
    median: f64,
    p95: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            min: v[0],
            median: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
        }
    }

    fn row(&self) -> String {
        format!(
            "{:.2} | {:.2} | {:.2} | {:.2}",
            self.min, self.median, self.p95, self.max
        )
    }
}

// ----- data -----

const ADVERTISERS: [&str; 10] = [
    "Acme Outdoor",
    "Brightside Foods",
    "Café Lumière",
    "Northwind Traders",
    "Globex Media",
    "Initech Retail",
    "Umbrella Pharma",
    "Stark Mobility",
    "Wayne Financial",
    "Żabka Polska",
];
const SEASONS: [&str; 4] = ["Spring", "Summer", "Autumn", "Winter"];
const FORMATS: [&str; 4] = ["display", "video", "native", "audio"];
const STRATEGIES: [&str; 3] = ["name_match", "fuzzy_name", "advertiser_dates"];

fn booking(i: usize) -> Record {
    let adv = ADVERTISERS[i % ADVERTISERS.len()];
    let season = SEASONS[(i / 10) % 4];
    let format = FORMATS[(i / 40) % 4];
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Days::new((i % 300) as u64);
    let budget =
        parse_decimal(&format!("{}.{:02}", 1_000 + (i * 7_919) % 90_000, i % 100)).unwrap();
    Record::new()
        .with("booking_id", format!("BK-{i:06}"))
        .with("advertiser_name", adv)
        .with(
            "campaign_name",
            format!("{adv} {season} Promo {} - {format}", 2025 + i % 2),
        )
        .with("booking_date", start - Days::new(14))
        .with("start_date", start)
        .with("end_date", start + Days::new(30))
        .with("budget", budget)
        .with("currency", ["USD", "EUR", "GBP"][i % 3])
        .with("media_type", format)
}

fn match_details(i: usize) -> serde_json::Value {
    let adv = ADVERTISERS[i % ADVERTISERS.len()];
    let season = SEASONS[(i / 10) % 4];
    let n = 2 + i % 2;
    let candidates: Vec<serde_json::Value> = (0..n)
        .map(|k| {
            json!({
                "campaign_id": format!("C-{:05}", (i * 3 + k) % 50_000),
                "name": format!("{adv} {season} Promo {}", 2025 + (i + k) % 2),
                "score": 0.91 - 0.03 * k as f64,
                "strategy": STRATEGIES[k % STRATEGIES.len()],
            })
        })
        .collect();
    json!({
        "record": serde_json::to_value(booking(i)).unwrap(),
        "candidates": candidates,
    })
}

fn text(s: String) -> serde_json::Value {
    serde_json::to_value(Value::from(s)).unwrap()
}

fn conflict_details(i: usize) -> serde_json::Value {
    json!({
        "kind": "field_conflict",
        "platform_id": format!("pg-{i}"),
        "crm_id": format!("hs-{i}"),
        "platform_updated_at": "2025-06-02T10:15:00Z",
        "crm_updated_at": "2025-06-02T10:17:30Z",
        "fields": [
            {"field": "phone",
             "platform_value": text(format!("+1 415 555 {:04}", i % 10_000)),
             "crm_value": text(format!("+1 415 555 {:04}", (i + 1) % 10_000)),
             "base_value": text(format!("+1 415 555 {:04}", (i + 2) % 10_000))},
            {"field": "email",
             "platform_value": text(format!("buyer{i}@example.com")),
             "crm_value": text(format!("buyer.{i}@example.com")),
             "base_value": text(format!("buyer{i}@example.org"))},
            {"field": "lifecycle_stage",
             "platform_value": text("customer".into()),
             "crm_value": text("opportunity".into()),
             "base_value": text("lead".into())},
        ],
    })
}

struct Conns {
    bookings: ConnectionId,
    contacts: ConnectionId,
}

/// Queues item `i`: 3 of 5 are matches, 1 a conflict, 1 a dead letter, so
/// the queues interleave in time as a running pipeline fills them.
async fn queue_one(store: &StateStore, conns: &Conns, i: usize) {
    match i % 5 {
        0..=2 => {
            let reason = if i.is_multiple_of(3) {
                ReviewReason::MultipleMatch
            } else {
                ReviewReason::ProbableMatch
            };
            store
                .put_review(
                    &conns.bookings,
                    "bookings",
                    &format!("BK-{i:06}"),
                    reason,
                    &match_details(i),
                )
                .await
                .unwrap();
        }
        3 => {
            store
                .put_review(
                    &conns.contacts,
                    "contacts",
                    &format!("pg-{i}"),
                    ReviewReason::ManualConflict,
                    &conflict_details(i),
                )
                .await
                .unwrap();
        }
        _ => {
            let mut r = booking(i);
            r.set("budget", parse_decimal("-250.00").unwrap());
            store
                .put_dead_letter(
                    &conns.bookings,
                    "bookings",
                    &format!("BK-{i:06}"),
                    "validate",
                    &serde_json::to_value(r).unwrap(),
                    "budget (min): must be at least 0",
                )
                .await
                .unwrap();
        }
    }
}

async fn fill(store: &StateStore, items: usize, writers: usize) -> Duration {
    let conns = Conns {
        bookings: store
            .ensure_connection("pipeline", "bookings")
            .await
            .unwrap(),
        contacts: store.ensure_connection("bidi", "contacts").await.unwrap(),
    };
    // Connections the filter dropdown lists besides the two above.
    for name in ["deals", "sheets-export", "marketo-leads"] {
        store.ensure_connection("pipeline", name).await.unwrap();
    }
    let t0 = Instant::now();
    let conns = std::sync::Arc::new(conns);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let conns = conns.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..items).step_by(writers) {
                queue_one(&store, &conns, i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

// ----- HTTP -----

async fn get(client: &reqwest::Client, url: &str) -> (Duration, String) {
    let t0 = Instant::now();
    let r = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(status, reqwest::StatusCode::OK, "{url}: {body}");
    (elapsed, body)
}

/// Warm-up, then timed requests of `url`; the last body.
async fn time_url(client: &reqwest::Client, url: &str) -> (Vec<Duration>, String) {
    let mut body = String::new();
    for _ in 0..WARMUP {
        body = get(client, url).await.1;
    }
    let mut samples = Vec::with_capacity(TIMED);
    for _ in 0..TIMED {
        let (d, b) = get(client, url).await;
        samples.push(d);
        body = b;
    }
    (samples, body)
}

fn items_on(body: &str) -> usize {
    body.matches(r#"<article class="item "#).count()
}

fn next_link(body: &str) -> Option<String> {
    let start = body.find(r#"id="next-page" href=""#)? + r#"id="next-page" href=""#.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].replace("&amp;", "&"))
}

async fn time_store_call<F, Fut>(name: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        call().await;
    }
    let mut samples = Vec::with_capacity(TIMED);
    for _ in 0..TIMED {
        let t0 = Instant::now();
        call().await;
        samples.push(t0.elapsed());
    }
    println!("| `{name}` | {} |", Stats::of(&samples).row());
}

// ----- one backend -----

/// Fills `store`, serves the desk and measures; on PostgreSQL (`analyze`:
/// the database URL) measures again after `ANALYZE`, the planner
/// statistics autovacuum gathers about a minute after such a fill.
async fn run(label: &str, store: StateStore, items: usize, writers: usize, analyze: Option<&str>) {
    println!("\n## {label}\n");
    println!("load average before fill: {}", load_avg());
    let filled = fill(&store, items, writers).await;
    println!(
        "fill: {items} items in {:.2} s ({:.0} items/s, {writers} writer(s), one store call per item); load average {}",
        filled.as_secs_f64(),
        items as f64 / filled.as_secs_f64(),
        load_avg()
    );

    let mut tokens = Tokens::new();
    tokens.add("bench", Role::Operator, &SecretString::from(TOKEN));
    let router = ReviewDesk::new(store.clone(), tokens).router();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let serving = tokio::spawn(server.serve_router(router, std::future::pending()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    measure("right after the fill", &client, &base, &store, items).await;
    if let Some(url) = analyze {
        let db = SqlConnector::connect_url(url).await.unwrap();
        let t0 = Instant::now();
        db.execute_unprepared("ANALYZE crm_review_queue")
            .await
            .unwrap();
        db.execute_unprepared("ANALYZE crm_dead_letters")
            .await
            .unwrap();
        db.execute_unprepared("ANALYZE crm_connections")
            .await
            .unwrap();
        println!("\nANALYZE of the three tables: {:.0} ms", ms(t0.elapsed()));
        db.close().await;
        measure("after ANALYZE", &client, &base, &store, items).await;
    }
    println!("\nload average after {label}: {}", load_avg());
    serving.abort();
}

async fn measure(
    phase: &str,
    client: &reqwest::Client,
    base: &str,
    store: &StateStore,
    items: usize,
) {
    println!("\n### {phase}\n");
    let client = client.clone();
    let counts: serde_json::Value = client
        .get(format!("{base}/review/api/counts"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("counts: {counts}");
    let queued = |q: Queue| {
        let key = match q {
            Queue::Matches => "matches",
            Queue::Conflicts => "conflicts",
            Queue::DeadLetters => "dead_letters",
        };
        counts[key].as_u64().unwrap() as usize
    };
    assert_eq!(
        queued(Queue::Matches) + queued(Queue::Conflicts) + queued(Queue::DeadLetters),
        items
    );

    let (css, _) = time_url(&client, &format!("{base}/review/style.css")).await;
    println!(
        "\nHTTP round trip alone (`GET /review/style.css`, static): {} ms (min | median | p95 | max)",
        Stats::of(&css).row()
    );

    println!(
        "\n| page | items queued | min ms | median ms | p95 ms | max ms | page bytes | items shown |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut deep_urls = Vec::new();
    for q in [Queue::Matches, Queue::Conflicts, Queue::DeadLetters] {
        let slug = q.slug();
        let url = format!("{base}/review/{slug}");
        let (samples, body) = time_url(&client, &url).await;
        let shown = items_on(&body);
        assert_eq!(
            shown,
            PAGE.min(queued(q)),
            "{slug}: items on the first page"
        );
        assert!(
            body.contains(&format!("{} waiting", queued(q))),
            "{slug}: count"
        );
        println!(
            "| `GET /review/{slug}` (first page) | {} | {} | {} | {shown} |",
            queued(q),
            Stats::of(&samples).row(),
            body.len()
        );

        // Follow the next-page links to a full page deep in the queue.
        let deep = DEEP_PAGE.min(queued(q) / PAGE).max(1);
        let mut page_url = url.clone();
        let mut page_body = body;
        let walk0 = Instant::now();
        for _ in 1..deep {
            let next = next_link(&page_body).expect("a next-page link");
            page_url = format!("{base}{next}");
            page_body = get(&client, &page_url).await.1;
        }
        let walked = walk0.elapsed();
        deep_urls.push((q, deep, page_url, walked));
    }
    for (q, deep, page_url, _) in &deep_urls {
        let slug = q.slug();
        let (samples, body) = time_url(&client, page_url).await;
        let shown = items_on(&body);
        assert_eq!(shown, PAGE.min(queued(*q)), "{slug}: items on page {deep}");
        println!(
            "| `GET /review/{slug}?after=...` (page {deep}, items {}-{}) | {} | {} | {} | {shown} |",
            (deep - 1) * PAGE + 1,
            deep * PAGE,
            queued(*q),
            Stats::of(&samples).row(),
            body.len()
        );
    }
    for q in [Queue::Matches, Queue::Conflicts, Queue::DeadLetters] {
        let slug = q.slug();
        let (samples, body) = time_url(&client, &format!("{base}/review/api/{slug}")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let shown = v["items"].as_array().map_or(0, Vec::len);
        assert_eq!(shown, PAGE.min(queued(q)), "{slug}: items in the API page");
        println!(
            "| `GET /review/api/{slug}` (JSON, first page) | {} | {} | {} | {shown} |",
            queued(q),
            Stats::of(&samples).row(),
            body.len()
        );
    }

    // The store calls behind a queue page, one at a time.
    println!("\n| store call (as `queue_page` makes it) | min ms | median ms | p95 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    let all = QueueFilter::new();
    time_store_call("count_open_reviews_by_reason(all)", || async {
        store.count_open_reviews_by_reason(&all).await.unwrap();
    })
    .await;
    time_store_call("count_dead_letters_where(all)", || async {
        store.count_dead_letters_where(&all).await.unwrap();
    })
    .await;
    time_store_call("connections()", || async {
        store.connections().await.unwrap();
    })
    .await;
    for q in [Queue::Matches, Queue::Conflicts] {
        time_store_call(
            &format!("review_page({}, first, limit 51)", q.slug()),
            || async {
                let p = store
                    .review_page(q.reasons(), &all, None, 51)
                    .await
                    .unwrap();
                assert_eq!(p.len(), (PAGE + 1).min(queued(q)));
            },
        )
        .await;
    }
    time_store_call("dead_letter_page(first, limit 51)", || async {
        store.dead_letter_page(&all, None, 51).await.unwrap();
    })
    .await;
    for (q, deep, page_url, _) in &deep_urls {
        let Some(after) = page_url
            .split_once("after=")
            .and_then(|(_, a)| PageAfter::decode(a))
        else {
            continue;
        };
        let name = format!(
            "{}_page(page {deep}, limit 51)",
            if *q == Queue::DeadLetters {
                "dead_letter"
            } else {
                "review"
            }
        );
        time_store_call(&format!("{name} [{}]", q.slug()), || async {
            if *q == Queue::DeadLetters {
                store
                    .dead_letter_page(&all, Some(&after), 51)
                    .await
                    .unwrap();
            } else {
                store
                    .review_page(q.reasons(), &all, Some(&after), 51)
                    .await
                    .unwrap();
            }
        })
        .await;
    }
    println!();
    for (q, deep, _, walked) in &deep_urls {
        println!(
            "walked the `next-page` links of {} to page {deep} in {:.2} s ({:.1} ms per page)",
            q.slug(),
            walked.as_secs_f64(),
            ms(*walked) / (*deep as f64 - 1.0).max(1.0)
        );
    }
    println!(
        "\nload average after the measurements {phase}: {}",
        load_avg()
    );
}

fn items() -> usize {
    std::env::var("CRM_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

async fn sqlite(items: usize) {
    let dir = std::env::temp_dir().join(format!("crm-review-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = StateStore::open_url(&url, CredentialKey::from_bytes([1; 32]))
        .await
        .unwrap();
    run(
        "SQLite (file in a temporary directory, WAL)",
        store,
        items,
        1,
        None,
    )
    .await;
    if std::env::var_os("CRM_BENCH_KEEP").is_some() {
        println!("kept {}", path.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

async fn postgres(items: usize) {
    let admin_url = std::env::var("CRM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = match SqlConnector::connect_url(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            // The URL is not printed: it may hold a password.
            println!(
                "\n## PostgreSQL\n\nskipped: the server of CRM_TEST_POSTGRES_URL (default 127.0.0.1:5432) is not reachable ({e})"
            );
            return;
        }
    };
    let name = format!("crm_bench_review_{}", std::process::id());
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').unwrap();
    let url = match query {
        Some(q) => format!("{}/{name}?{q}", &base[..host_end]),
        None => format!("{}/{name}", &base[..host_end]),
    };
    let store = StateStore::open_url(&url, CredentialKey::from_bytes([1; 32]))
        .await
        .unwrap();
    run(
        &format!("PostgreSQL (fresh database {name})"),
        store,
        items,
        PG_WRITERS,
        Some(&url),
    )
    .await;
    if std::env::var_os("CRM_BENCH_KEEP").is_some() {
        println!("kept database {name} (drop it with `DROP DATABASE {name} WITH (FORCE)`)");
    } else {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    admin.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let items = items();
    println!(
        "# Review desk: first page with {items} queued items\n\n{} cores; load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_avg()
    );
    sqlite(items).await;
    postgres(items).await;
}
