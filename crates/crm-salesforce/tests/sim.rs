//! The connector against the simulator on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use crm_core::{
    Change, Cursor, ErrorKind, Page, ReadRequest, Record, Sink, Source, WriteBatch, WriteOp,
    WriteOutcome,
};
use crm_http::classify::CTX_PROVIDER_CODE;
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator, SimControl};
use crm_salesforce::{
    Credentials, LoginHost, SalesforceConfig, SalesforceConfigBuilder, SalesforceConnector,
};
use crm_sim::auth::GrantType;
use crm_sim::store::Fields;
use crm_sim::{SimHandle, SimServer};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start() -> (SimHandle, SimControl) {
    let sim = SalesforceSimulator::new(SalesforceSimConfig::default());
    let control = sim.control();
    (SimServer::new(sim).start().await.unwrap(), control)
}

fn config(sim: &SimHandle) -> SalesforceConfigBuilder {
    let creds = sim.credentials();
    SalesforceConfig::builder(
        LoginHost::MyDomain(url::Url::parse(sim.base_url()).unwrap()),
        Credentials::RefreshToken {
            client_id: creds["client_id"].as_str().unwrap().into(),
            client_secret: Some(SecretString::from(
                creds["client_secret"].as_str().unwrap().to_owned(),
            )),
            refresh_token: SecretString::from(creds["refresh_token"].as_str().unwrap().to_owned()),
        },
    )
    .bulk_poll((Duration::from_millis(5), Duration::from_millis(20)))
}

fn connector(sim: &SimHandle) -> SalesforceConnector {
    SalesforceConnector::new(config(sim).build().unwrap()).unwrap()
}

fn contact(i: usize) -> Fields {
    json!({"FirstName": "Ada", "LastName": format!("Lovelace {i}"), "Email": format!("ada{i}@example.com")})
        .as_object()
        .cloned()
        .unwrap()
}

fn seed_contacts(sim: &SimHandle, n: usize) {
    for i in 0..n {
        sim.context().store().create("Contact", contact(i));
    }
}

async fn read_all(
    sf: &SalesforceConnector,
    req: ReadRequest,
) -> (Vec<Page>, Option<crm_core::Error>) {
    let mut pages = Vec::new();
    let mut stream = sf.read(req);
    while let Some(p) = stream.next().await {
        match p {
            Ok(p) => pages.push(p),
            Err(e) => return (pages, Some(e)),
        }
    }
    (pages, None)
}

fn upserted_ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|c| match c {
            Change::Upsert(r) => r.id.as_ref().map(|i| i.as_str().to_owned()),
            Change::Delete { .. } => None,
        })
        .collect()
}

fn query_calls(sim: &SimHandle) -> usize {
    sim.request_log()
        .count(|r| r.method == "GET" && r.path.contains("/query"))
}

#[tokio::test]
async fn ten_thousand_contacts_in_five_query_calls() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 10_000);
    let sf = connector(&sim);
    let (pages, err) = read_all(
        &sf,
        ReadRequest::full("Contact").fields(["FirstName", "LastName", "Email"]),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    let ids = upserted_ids(&pages);
    assert_eq!(ids.len(), 10_000);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 10_000);
    assert_eq!(query_calls(&sim), 10_000usize.div_ceil(2_000));
    let first = match &pages[0].changes[0] {
        Change::Upsert(r) => r.clone(),
        Change::Delete { .. } => panic!("no deletes in a full read"),
    };
    assert!(first.updated_at.is_some());
    assert_eq!(first.text("FirstName"), Some("Ada"));
}

fn upsert_records(n: usize, bad: &[usize]) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record::new()
                .with("External_Id__c", format!("EXT-{i}"))
                .with("LastName", format!("Hopper {i}"))
                .with("Email", format!("grace{i}@example.com"));
            if bad.contains(&i) {
                match i % 3 {
                    0 => r.set("Email", "not-an-email"),
                    1 => r.set("Customer_Segment__c", "Galactic"),
                    _ => r.set("LastName", "x".repeat(81)),
                };
            }
            r
        })
        .collect()
}

#[tokio::test]
async fn thousand_upserts_in_five_collection_calls_and_retry_is_idempotent() {
    let (sim, _) = start().await;
    let sf = connector(&sim);
    let out = sf
        .write(
            "Contact",
            WriteBatch::upsert("External_Id__c", upsert_records(1_000, &[])),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 1_000);
    assert!(out.iter().all(|o| matches!(o, WriteOutcome::Created(_))));
    assert_eq!(
        sim.request_log().count_calls(
            "PATCH",
            "/services/data/v59.0/composite/sobjects/Contact/External_Id__c"
        ),
        5
    );
    let again = sf
        .write(
            "Contact",
            WriteBatch::upsert("External_Id__c", upsert_records(1_000, &[])),
        )
        .await
        .unwrap();
    // The same values again: nothing to write.
    assert!(
        again
            .iter()
            .all(|o| matches!(o, WriteOutcome::Unchanged(_)))
    );
    assert_eq!(
        sim.request_log().count_calls(
            "PATCH",
            "/services/data/v59.0/composite/sobjects/Contact/External_Id__c"
        ),
        5
    );
    // Changed values are written again.
    let changed: Vec<Record> = upsert_records(1_000, &[])
        .into_iter()
        .map(|r| r.with("FirstName", "Grace"))
        .collect();
    let third = sf
        .write("Contact", WriteBatch::upsert("External_Id__c", changed))
        .await
        .unwrap();
    assert!(third.iter().all(|o| matches!(o, WriteOutcome::Updated(_))));
    assert_eq!(
        sim.request_log().count_calls(
            "PATCH",
            "/services/data/v59.0/composite/sobjects/Contact/External_Id__c"
        ),
        10
    );
    assert_eq!(
        sim.context()
            .store()
            .count("Contact", crm_sim::store::Deleted::Exclude),
        1_000
    );
}

#[tokio::test]
async fn five_thousand_upserts_with_seven_invalid_land_4993() {
    let (sim, _) = start().await;
    let sf = connector(&sim);
    let bad = [3, 100, 1_001, 2_502, 3_333, 4_000, 4_999];
    let out = sf
        .write(
            "Contact",
            WriteBatch::upsert("External_Id__c", upsert_records(5_000, &bad)),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 5_000);
    let rejected: Vec<(usize, String)> = out
        .iter()
        .filter_map(|o| match o {
            WriteOutcome::Rejected { index, error } => Some((
                *index,
                error.context_value(CTX_PROVIDER_CODE).unwrap().to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), bad);
    for (i, code) in &rejected {
        let expected = match i % 3 {
            0 => "INVALID_EMAIL_ADDRESS",
            1 => "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            _ => "STRING_TOO_LONG",
        };
        assert_eq!(code, expected, "record {i}");
    }
    assert_eq!(out.iter().filter(|o| o.is_ok()).count(), 4_993);
    assert_eq!(
        sim.context()
            .store()
            .count("Contact", crm_sim::store::Deleted::Exclude),
        4_993
    );
}

#[tokio::test]
async fn session_expiring_mid_run_costs_one_refresh() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 6_000);
    let sf = connector(&sim);
    let mut stream = sf.read(ReadRequest::full("Contact"));
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.changes.len(), 2_000);
    let grants_before = sim.context().auth().grants(GrantType::RefreshToken);
    sim.context().auth().expire_all();
    let mut n = first.changes.len();
    while let Some(p) = stream.next().await {
        n += p.unwrap().changes.len();
    }
    assert_eq!(n, 6_000);
    assert_eq!(
        sim.context().auth().grants(GrantType::RefreshToken) - grants_before,
        1
    );
    assert_eq!(sim.request_log().count_status(401), 1);
}

#[tokio::test]
async fn bulk_ingest_of_100k_goes_through_the_job_lifecycle() {
    let (sim, _) = start().await;
    let sf = connector(&sim);
    let out = sf
        .write(
            "Contact",
            WriteBatch::upsert("External_Id__c", upsert_records(100_000, &[7])),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 100_000);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, WriteOutcome::Created(_)))
            .count(),
        99_999
    );
    match &out[7] {
        WriteOutcome::Rejected { error, .. } => assert_eq!(
            error.context_value(CTX_PROVIDER_CODE),
            Some("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
        ),
        other => panic!("record 7: {other:?}"),
    }
    let log = sim.request_log();
    assert_eq!(
        log.count_calls("POST", "/services/data/v59.0/jobs/ingest"),
        1
    );
    assert_eq!(
        log.count(|r| r.method == "PUT" && r.path.ends_with("/batches")),
        1
    );
    assert_eq!(
        log.count(|r| r.method == "PATCH" && r.path.contains("/jobs/ingest/")),
        1
    );
    assert!(
        log.count(|r| r.method == "GET"
            && r.path.contains("/jobs/ingest/")
            && !r.path.ends_with("Results"))
            >= 2
    );
    assert_eq!(log.count(|r| r.path.ends_with("successfulResults")), 1);
    assert_eq!(log.count(|r| r.path.ends_with("failedResults")), 1);
    assert_eq!(
        sim.context()
            .store()
            .count("Contact", crm_sim::store::Deleted::Exclude),
        99_999
    );
}

async fn last_cursor(sf: &SalesforceConnector, req: ReadRequest) -> (Vec<Page>, Cursor) {
    let (pages, err) = read_all(sf, req).await;
    assert!(err.is_none(), "{err:?}");
    let c = pages.last().unwrap().cursor.clone();
    (pages, c)
}

#[tokio::test]
async fn deleted_records_appear_as_deletes() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 100);
    let sf = connector(&sim);
    let (_, cursor) = last_cursor(&sf, ReadRequest::full("Contact")).await;
    let all = sim
        .context()
        .store()
        .all("Contact", crm_sim::store::Deleted::Exclude);
    let out = sf
        .write(
            "Contact",
            WriteBatch::new(
                WriteOp::Delete,
                all.iter()
                    .take(10)
                    .map(|r| Record::new().with_id(r.id.as_str()))
                    .collect(),
            ),
        )
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, WriteOutcome::Deleted(_))));
    let (pages, cursor2) = last_cursor(&sf, ReadRequest::since("Contact", cursor)).await;
    let deletes: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter(|c| matches!(c, Change::Delete { .. }))
        .collect();
    assert_eq!(deletes.len(), 10);
    assert_eq!(
        upserted_ids(&pages).len(),
        0,
        "unchanged records are not read again"
    );
    assert!(sim.request_log().count(|r| r.path.contains("/queryAll")) >= 1);
    // Idle runs read nothing new.
    for _ in 0..3 {
        let (pages, _) = last_cursor(&sf, ReadRequest::since("Contact", cursor2.clone())).await;
        assert_eq!(pages.iter().map(|p| p.changes.len()).sum::<usize>(), 0);
    }
}

#[tokio::test]
async fn late_committed_rows_below_the_cursor_are_read() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 20);
    let sf = connector(&sim);
    let (_, cursor) = last_cursor(&sf, ReadRequest::full("Contact")).await;
    let clock = sim.context().clock();
    clock.freeze_at(Utc::now() - chrono::Duration::seconds(5));
    for i in 0..3 {
        sim.context().store().create("Contact", contact(1_000 + i));
    }
    clock.resume();
    let (pages, _) = last_cursor(&sf, ReadRequest::since("Contact", cursor)).await;
    assert_eq!(upserted_ids(&pages).len(), 3);
}

#[tokio::test]
async fn rows_sharing_one_stamp_survive_a_crash_after_page_one() {
    let (sim, _) = start().await;
    sim.context()
        .clock()
        .freeze_at(Utc::now() - chrono::Duration::minutes(1));
    seed_contacts(&sim, 2_500);
    sim.context().clock().resume();
    let sf = connector(&sim);
    let mut stream = sf.read(ReadRequest::full("Contact"));
    let page1 = stream.next().await.unwrap().unwrap();
    drop(stream); // crash
    let (rest, _) = last_cursor(&sf, ReadRequest::since("Contact", page1.cursor.clone())).await;
    let mut ids = upserted_ids(std::slice::from_ref(&page1));
    ids.extend(upserted_ids(&rest));
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 2_500);
    assert_eq!(ids.len(), 2_500, "no duplicates");
}

#[tokio::test]
async fn daily_quota_stops_run_one_and_run_two_finishes() {
    let (sim, control) = start().await;
    seed_contacts(&sim, 120 * 200);
    let sf = SalesforceConnector::new(
        config(&sim)
            .page_size(200)
            .quota_reserve(Some(0))
            .build()
            .unwrap(),
    )
    .unwrap();
    control.set_api_usage(0, 50);
    let (pages, err) = read_all(&sf, ReadRequest::full("Contact")).await;
    let err = err.expect("run 1 stops at the quota");
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted);
    assert!(!pages.is_empty() && pages.len() < 120);
    let saved = pages.last().unwrap().cursor.clone();
    let mut ids = upserted_ids(&pages);
    // The next day's run: a new connector, the allocation replenished.
    control.set_api_usage(0, 1_000);
    let sf = SalesforceConnector::new(
        config(&sim)
            .page_size(200)
            .quota_reserve(Some(0))
            .build()
            .unwrap(),
    )
    .unwrap();
    let (rest, err) = read_all(&sf, ReadRequest::since("Contact", saved)).await;
    assert!(err.is_none(), "{err:?}");
    ids.extend(upserted_ids(&rest));
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 24_000, "no gaps");
    assert_eq!(ids.len(), 24_000, "no duplicates");
}

#[tokio::test]
async fn bulk_read_skips_compound_and_base64_fields() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 3_000);
    let sf = SalesforceConnector::new(
        config(&sim)
            .bulk_read_threshold(1_000)
            .bulk_results_page(1_000)
            .build()
            .unwrap(),
    )
    .unwrap();
    let (pages, err) = read_all(&sf, ReadRequest::full("Contact")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(upserted_ids(&pages).len(), 3_000);
    assert_eq!(
        sim.request_log()
            .count_calls("POST", "/services/data/v59.0/jobs/query"),
        1
    );
    assert_eq!(sim.request_log().count_status(400), 0);
    let schema = crm_core::Connector::describe(&sf, "Contact").await.unwrap();
    assert!(schema.get("MailingAddress").is_some() && schema.get("Photo__c").is_some());
    let r = match &pages[0].changes[0] {
        Change::Upsert(r) => r,
        Change::Delete { .. } => panic!(),
    };
    assert!(r.get("MailingAddress").is_none() && r.get("Photo__c").is_none());
    assert!(r.get("LastName").is_some());
}

#[tokio::test]
async fn dropped_custom_field_is_rediscovered() {
    let (sim, control) = start().await;
    seed_contacts(&sim, 10);
    let sf = connector(&sim);
    let (_, cursor) = last_cursor(&sf, ReadRequest::full("Contact")).await;
    control.drop_field("Contact", "Upsell_Score__c");
    sim.context().store().create("Contact", contact(99));
    let (pages, _) = last_cursor(&sf, ReadRequest::since("Contact", cursor)).await;
    assert_eq!(upserted_ids(&pages).len(), 1);
    assert_eq!(sim.request_log().count(|r| r.status() == Some(400)), 0);
}

#[tokio::test]
async fn first_backfill_reads_records_from_2015() {
    let (sim, _) = start().await;
    sim.context()
        .clock()
        .freeze_at(Utc.with_ymd_and_hms(2015, 6, 1, 0, 0, 0).unwrap());
    seed_contacts(&sim, 5);
    sim.context().clock().resume();
    let sf = connector(&sim);
    let (pages, cursor) = last_cursor(&sf, ReadRequest::full("Contact")).await;
    assert_eq!(upserted_ids(&pages).len(), 5);
    // The cursor says the read completed now, so the next incremental read is allowed.
    let (pages, _) = last_cursor(&sf, ReadRequest::since("Contact", cursor)).await;
    assert_eq!(upserted_ids(&pages).len(), 0);
}

#[tokio::test]
async fn cursor_older_than_the_recycle_bin_asks_for_a_resync() {
    let (sim, _) = start().await;
    let sf = connector(&sim);
    let old = crm_salesforce::CursorState::at(Utc::now() - chrono::Duration::days(20))
        .to_cursor()
        .unwrap();
    let (_, err) = read_all(&sf, ReadRequest::since("Contact", old)).await;
    let err = err.unwrap();
    assert_eq!(
        err.context_value(crm_salesforce::error::CTX_FULL_RESYNC),
        Some("true")
    );
}

#[tokio::test]
async fn username_password_flow_relogs_once_after_expiry() {
    let (sim, _) = start().await;
    seed_contacts(&sim, 10);
    let c = sim.credentials();
    let cfg = SalesforceConfig::builder(
        LoginHost::MyDomain(url::Url::parse(sim.base_url()).unwrap()),
        Credentials::UsernamePassword {
            client_id: c["client_id"].as_str().unwrap().into(),
            client_secret: SecretString::from(c["client_secret"].as_str().unwrap().to_owned()),
            username: c["username"].as_str().unwrap().into(),
            password: SecretString::from(c["password"].as_str().unwrap().to_owned()),
            security_token: Some(SecretString::from(
                c["security_token"].as_str().unwrap().to_owned(),
            )),
        },
    )
    .build()
    .unwrap();
    let sf = SalesforceConnector::new(cfg).unwrap();
    crm_core::Connector::check(&sf).await.unwrap();
    sim.context().auth().expire_all();
    let (pages, err) = read_all(&sf, ReadRequest::full("Contact")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(upserted_ids(&pages).len(), 10);
    assert_eq!(
        sim.request_log()
            .count_calls("POST", "/services/oauth2/token"),
        2
    );
}

#[tokio::test]
async fn server_side_daily_limit_stops_the_run_with_a_resumable_cursor() {
    let (sim, control) = start().await;
    seed_contacts(&sim, 20 * 200);
    // The client keeps no reserve of its own, so the server's answer decides.
    let connector = || {
        SalesforceConnector::new(
            config(&sim)
                .page_size(200)
                .quota_reserve(Some(0))
                .build()
                .unwrap(),
        )
        .unwrap()
    };
    control.set_api_usage(0, 10_000);
    let sf = connector();
    let mut stream = sf.read(ReadRequest::full("Contact"));
    let mut pages = Vec::new();
    for _ in 0..5 {
        pages.push(stream.next().await.unwrap().unwrap());
    }
    // Other integrations use up the org's allocation mid-run: the client's
    // last reading still shows plenty left.
    control.set_api_usage(10_000, 10_000);
    let err = loop {
        match stream.next().await {
            Some(Ok(p)) => pages.push(p),
            Some(Err(e)) => break e,
            None => panic!("the run went to the end past the daily limit"),
        }
    };
    drop(stream);
    assert_eq!(err.kind(), &ErrorKind::QuotaExhausted, "{err}");
    assert_eq!(
        err.context_value(CTX_PROVIDER_CODE),
        Some("REQUEST_LIMIT_EXCEEDED")
    );
    // Sleeping cannot restore a daily allocation: no retries.
    assert_eq!(sim.request_log().count_status(403), 1);
    assert_eq!(pages.len(), 5);
    let saved = pages.last().unwrap().cursor.clone();
    let mut ids = upserted_ids(&pages);

    // The next day: the run resumes from the saved cursor.
    control.set_api_usage(0, 10_000);
    let (rest, err) = read_all(&connector(), ReadRequest::since("Contact", saved)).await;
    assert!(err.is_none(), "{err:?}");
    ids.extend(upserted_ids(&rest));
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 4_000, "no gaps");
    assert_eq!(ids.len(), 4_000, "no duplicates");
}

#[tokio::test]
async fn an_exhausted_usage_reading_is_renewed_from_limits_after_its_ttl() {
    let (sim, control) = start().await;
    seed_contacts(&sim, 10);
    let sf = SalesforceConnector::new(
        config(&sim)
            .quota_reserve(Some(0))
            .usage_ttl(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    // The call that uses the last request of the allocation.
    control.set_api_usage(49, 50);
    crm_core::Connector::describe(&sf, "Contact").await.unwrap();
    assert_eq!(sf.client().api_usage().unwrap().remaining(), 0);
    let sent = sim.request_log().count(|_| true);
    let (_, err) = read_all(&sf, ReadRequest::full("Contact")).await;
    assert_eq!(err.unwrap().kind(), &ErrorKind::QuotaExhausted);
    assert_eq!(
        sim.request_log().count(|_| true),
        sent,
        "refused without a request while the reading is fresh"
    );
    // The rolling 24-hour window frees requests; once the reading is older
    // than its TTL the client reads `limits` and goes on.
    control.set_api_usage(20, 50);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (pages, err) = read_all(&sf, ReadRequest::full("Contact")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(upserted_ids(&pages).len(), 10);
    assert_eq!(
        sim.request_log()
            .count_calls("GET", "/services/data/v59.0/limits"),
        1
    );
    assert!(sf.client().api_usage().unwrap().used > 20);
}

/// PITFALLS "token rotates mid bulk download" (15-minute sessions, 40
/// result files of 30 s, 5 workers), scaled down: 2-second sessions, 40
/// downloads of 300 ms, 5 workers. The session is renewed once, before it
/// runs out, and no request sees a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_renewed_once_during_a_parallel_bulk_download() {
    let mut sim_config = SalesforceSimConfig::default();
    sim_config.token_ttl = Duration::from_secs(2);
    let sim = SimServer::new(SalesforceSimulator::new(sim_config))
        .start()
        .await
        .unwrap();
    seed_contacts(&sim, 800);
    let sf = SalesforceConnector::new(
        config(&sim)
            .session_timeout(Some(Duration::from_secs(2)))
            .max_long_running(5)
            .build()
            .unwrap(),
    )
    .unwrap();
    let client = sf.client().clone();
    // Five finished query jobs, one per worker.
    let mut jobs = Vec::new();
    for _ in 0..5 {
        let job = client
            .create_query_job("SELECT Id, LastName FROM Contact", false)
            .await
            .unwrap();
        client.wait_for_job(&job.id, false).await.unwrap();
        jobs.push(job.id);
    }
    // Every results file takes 300 ms.
    sim.context().faults().set_plan(
        crm_sim::FaultPlan::new(1).rule(
            crm_sim::FaultRule::new(crm_sim::Fault::Slow { delay_ms: 300 })
                .path_prefix("/services/data/v59.0/jobs/query/"),
        ),
    );
    let workers = jobs.into_iter().map(|job| {
        let client = client.clone();
        tokio::spawn(async move {
            // Eight files of 100 records each, following Sforce-Locator.
            let mut locator: Option<String> = None;
            let mut files = 0;
            loop {
                let (csv, next) = client
                    .query_job_results(&job, locator.as_deref(), 100)
                    .await
                    .unwrap();
                assert!(csv.lines().count() > 1);
                files += 1;
                match next {
                    Some(l) => locator = Some(l),
                    None => return files,
                }
            }
        })
    });
    let files: Vec<usize> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(files.iter().sum::<usize>(), 40);
    assert_eq!(
        sim.request_log().count_status(401),
        0,
        "no request saw an expired session"
    );
    // The first token and one renewal.
    assert_eq!(sim.context().auth().grants(GrantType::RefreshToken), 2);
}
