//! Program, static list and smart campaign membership against the
//! simulator: paging, 300-lead batches, per-lead outcomes and Marketo's
//! error codes.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use crm_core::{Error, ErrorKind, WriteOutcome};
use crm_marketo::sim::{
    MarketoSimConfig, MarketoSimulator, SimCampaign, SimList, SimProgram, SimState,
};
use crm_marketo::wire::CampaignToken;
use crm_marketo::{AssetFilter, Limits, Marketo, MarketoConfig, MemberFilter};
use crm_sim::{Fault, FaultPlan, FaultRule, SimHandle, SimServer, Trigger};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

const PROGRAM: u64 = 1001;

async fn start() -> (SimHandle, Arc<SimState>, Marketo) {
    let mut cfg = MarketoSimConfig::default();
    cfg.window = Duration::from_secs(2);
    let sim = MarketoSimulator::new(cfg);
    let state = Arc::clone(sim.state());
    state.add_program(SimProgram::new(PROGRAM, "Webinar 2024"));
    let sim = SimServer::new(sim).start().await.unwrap();
    let creds = sim.credentials();
    let config = MarketoConfig::builder(
        sim.base_url(),
        creds["client_id"].as_str().unwrap(),
        SecretString::from(creds["client_secret"].as_str().unwrap().to_owned()),
    )
    .limits(Limits::new(1000, Duration::from_secs(2), 10, None))
    .rate_limit_wait(Duration::from_millis(50))
    .timeout(Duration::from_secs(20))
    .build()
    .unwrap();
    (sim, state, Marketo::new(config).unwrap())
}

/// Creates `n` leads and returns their ids.
fn leads(sim: &SimHandle, n: usize, tag: &str) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let fields =
                json!({"email": format!("{tag}{i}@example.com"), "firstName": format!("F{i}")});
            let r = sim.context().store().create(
                "leads",
                fields.as_object().unwrap().clone().into_iter().collect(),
            );
            r.id.as_str().parse().unwrap()
        })
        .collect()
}

fn u(id: i64) -> u64 {
    u64::try_from(id).unwrap()
}

fn rejected(o: &WriteOutcome) -> &Error {
    match o {
        WriteOutcome::Rejected { error, .. } => error,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn is(o: &WriteOutcome, name: &str, lead: i64) -> bool {
    o.as_str() == name && o.id().map(|i| i.as_str().to_owned()) == Some(lead.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_program_status_reports_each_lead() {
    let (sim, state, m) = start().await;
    let ids = leads(&sim, 4, "p");
    let now = Utc::now();
    assert!(state.set_program_member(PROGRAM, u(ids[0]), "Registered", now));
    assert!(state.set_program_member(PROGRAM, u(ids[1]), "Attended", now));
    // ids[2] exists but is not a member; 999_999 is no lead at all.
    let input = [ids[0], ids[1], ids[2], 999_999];
    let out = m
        .change_program_status(PROGRAM as i64, "Attended", &input)
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert!(is(&out[0], "updated", ids[0]), "{:?}", out[0]);
    assert!(
        is(&out[1], "unchanged", ids[1]),
        "already Attended (1037): {:?}",
        out[1]
    );
    let not_member = rejected(&out[2]);
    assert_eq!(not_member.kind(), &ErrorKind::NotFound);
    assert_eq!(not_member.context_value("provider_code"), Some("1013"));
    let unknown = rejected(&out[3]);
    assert_eq!(unknown.kind(), &ErrorKind::NotFound);
    assert_eq!(unknown.context_value("provider_code"), Some("1004"));
    assert_eq!(unknown.context_value("lead_id"), Some("999999"));
    let member = state.program_member(PROGRAM, u(ids[0])).unwrap();
    assert_eq!(member.status, "Attended");
    assert!(member.reached_success);
    assert_eq!(
        sim.request_log()
            .count_calls("POST", "/rest/v1/leads/programs/1001/status.json"),
        1
    );

    // Backwards (Attended is step 30, Registered 20): skipped, nothing written.
    let out = m
        .change_program_status(PROGRAM as i64, "Registered", &ids[..1])
        .await
        .unwrap();
    assert!(is(&out[0], "unchanged", ids[0]));
    assert_eq!(
        state.program_member(PROGRAM, u(ids[0])).unwrap().status,
        "Attended"
    );

    // Whole-call errors: Marketo codes in a 200 body.
    let e = m
        .change_program_status(4242, "Attended", &ids)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    assert_eq!(e.context_value("provider_code"), Some("1013"));
    let e = m
        .change_program_status(PROGRAM as i64, "Bogus", &ids)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::InvalidInput);
    assert_eq!(e.context_value("provider_code"), Some("1025"));
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_program_status_adds_members_300_a_call() {
    let (sim, state, m) = start().await;
    let ids = leads(&sim, 650, "s");
    let out = m
        .sync_program_status(PROGRAM as i64, "Registered", &ids)
        .await
        .unwrap();
    assert_eq!(out.len(), 650);
    for (o, id) in out.iter().zip(&ids) {
        assert!(is(o, "created", *id), "{o:?}");
    }
    assert_eq!(
        sim.request_log()
            .count_calls("POST", "/rest/v1/programs/1001/members/status.json"),
        3
    );
    assert_eq!(state.program_members(PROGRAM).len(), 650);
    // Moving forward updates; repeating is a no-op.
    let out = m
        .sync_program_status(PROGRAM as i64, "Attended", &ids[..10])
        .await
        .unwrap();
    assert!(out.iter().zip(&ids).all(|(o, id)| is(o, "updated", *id)));
    let out = m
        .sync_program_status(PROGRAM as i64, "attended", &ids[..10])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.as_str() == "unchanged"));
    // A rejected lead keeps its index, and a system error is retryable.
    sim.context().faults().set_plan(
        FaultPlan::new(9).rule(
            FaultRule::new(Fault::RejectRecords { probability: 1.0 })
                .when(Trigger::Nth(vec![1]))
                .path_prefix("/rest/v1/programs/1001/members/status.json"),
        ),
    );
    let out = m
        .sync_program_status(PROGRAM as i64, "No Show", &ids[20..23])
        .await
        .unwrap();
    for (i, o) in out.iter().enumerate() {
        match o {
            WriteOutcome::Rejected { index, error } => {
                assert_eq!(*index, i);
                assert!(error.is_retryable(), "{error}");
                assert_eq!(error.context_value("provider_code"), Some("611"));
            }
            other => panic!("{other:?}"),
        }
    }
    // More than 300 leads in one client call is refused before sending.
    let before = sim.request_log().len();
    let e = m
        .client()
        .change_lead_program_status(PROGRAM as i64, "Invited", &ids[..301])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::InvalidInput);
    assert_eq!(sim.request_log().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_members_are_read_in_pages() {
    let (sim, state, m) = start().await;
    let ids = leads(&sim, 650, "r");
    let now = Utc::now();
    for (n, id) in ids.iter().enumerate() {
        let status = if n % 2 == 0 { "Attended" } else { "Registered" };
        state.set_program_member(PROGRAM, u(*id), status, now);
    }
    let mut pages = m.program_members(PROGRAM as i64, &["email".to_owned()]);
    let mut got = Vec::new();
    while let Some(page) = pages.next().await {
        got.extend(page.unwrap());
    }
    drop(pages);
    assert_eq!(got.len(), 650);
    assert_eq!(
        sim.request_log()
            .count_calls("GET", "/rest/v1/leads/programs/1001.json"),
        3,
        "300 a page, paged by nextPageToken"
    );
    let first = got.iter().find(|l| l.id == ids[0]).unwrap();
    assert_eq!(first.fields["email"], json!("r0@example.com"));
    let membership = first.membership.as_ref().unwrap();
    assert_eq!(membership.progression_status, "Attended");
    assert!(membership.reached_success);
    let attended = got
        .iter()
        .filter(|l| l.membership.as_ref().is_some_and(|m| m.reached_success))
        .count();
    assert_eq!(attended, 325);

    // The filtered member query: by lead id, with the status field.
    let page = m
        .client()
        .program_members(
            PROGRAM as i64,
            &MemberFilter::LeadIds(ids[..3].to_vec()),
            &["statusName".to_owned(), "updatedAt".to_owned()],
            300,
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.items[1].status_name(), Some("Registered"));
    assert!(page.next_page_token.is_none());

    // Unknown program: an error (1013), not an empty stream.
    let mut pages = m.program_members(77, &[]);
    let e = pages.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    assert!(pages.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_members_are_read_in_seven_day_ranges() {
    let (sim, state, m) = start().await;
    let ids = leads(&sim, 5, "u");
    let now = Utc::now();
    let days = [19i64, 12, 8, 2, 30];
    for (id, d) in ids.iter().zip(days) {
        state.set_program_member(PROGRAM, u(*id), "Invited", now - TimeDelta::days(d));
    }
    let start = now - TimeDelta::days(20);
    let mut pages = m.program_members_updated(PROGRAM as i64, start, now, &[]);
    let mut got = Vec::new();
    while let Some(page) = pages.next().await {
        got.extend(page.unwrap());
    }
    drop(pages);
    let mut leads: Vec<i64> = got.iter().map(|p| p.lead_id).collect();
    leads.sort_unstable();
    assert_eq!(
        leads,
        ids[..4].to_vec(),
        "the one changed 30 days ago is out"
    );
    assert!(got.iter().all(|p| p.status_name() == Some("Invited")));
    assert!(got.iter().all(|p| p.fields.contains_key("updatedAt")));
    let queries: Vec<String> = sim
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.path == "/rest/v1/programs/1001/members.json")
        .filter_map(|e| e.query)
        .collect();
    assert_eq!(
        queries.len(),
        3,
        "20 days in ranges of at most 7: {queries:?}"
    );
    assert!(queries.iter().all(|q| q.contains("filterType=updatedAt")));

    // Longer ranges: the client refuses them, and so does the simulator (1003).
    let week_and_a_day = MemberFilter::UpdatedBetween {
        start,
        end: start + TimeDelta::days(8),
    };
    let e = m
        .client()
        .program_members(PROGRAM as i64, &week_and_a_day, &[], 300, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::InvalidInput);
    let e = m
        .client()
        .http()
        .get_json::<serde_json::Value>(
            "/rest/v1/programs/1001/members.json?filterType=updatedAt\
             &startAt=2024-01-01T00:00:00Z&endAt=2024-01-09T00:00:00Z",
            crm_http::RequestOptions::new("programs.members.get"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.context_value("provider_code"), Some("1003"));
    let e = m
        .client()
        .http()
        .get_json::<serde_json::Value>(
            "/rest/v1/programs/1001/members.json?filterType=firstName&filterValues=x",
            crm_http::RequestOptions::new("programs.members.get"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.context_value("provider_code"), Some("1011"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_list_membership() {
    let (sim, state, m) = start().await;
    state.add_list(SimList::new(7, "Attendees").in_program("Webinar 2024"));
    state.add_list(SimList::new(8, "Newsletter"));
    let ids = leads(&sim, 3, "l");
    let lists = m
        .lists(&AssetFilter::all().program_names(["Webinar 2024"]))
        .await
        .unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].name, "Attendees");

    let out = m.add_to_list(7, &[ids[0], ids[1], 424_242]).await.unwrap();
    assert!(is(&out[0], "created", ids[0]));
    assert!(is(&out[1], "created", ids[1]));
    assert_eq!(
        rejected(&out[2]).context_value("provider_code"),
        Some("1004")
    );
    assert_eq!(state.list_members(7), vec![u(ids[0]), u(ids[1])]);

    let mut pages = m.list_members(7, &[]);
    let mut members = Vec::new();
    while let Some(page) = pages.next().await {
        members.extend(page.unwrap());
    }
    drop(pages);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["email"], json!("l0@example.com"));

    let check = m
        .client()
        .list_membership(7, &[ids[0], ids[2]])
        .await
        .unwrap();
    let statuses: Vec<&str> = check.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["memberof", "notmemberof"]);

    let out = m.remove_from_list(7, &[ids[0], ids[2]]).await.unwrap();
    assert!(is(&out[0], "deleted", ids[0]));
    assert!(is(&out[1], "unchanged", ids[2]), "not in the list (1015)");
    assert_eq!(state.list_members(7), vec![u(ids[1])]);

    let e = m.add_to_list(99, &ids).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    assert_eq!(e.context_value("provider_code"), Some("1013"));
    assert_eq!(
        sim.request_log()
            .count_calls("DELETE", "/rest/v1/lists/7/leads.json"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_listed_and_requested() {
    let (sim, state, m) = start().await;
    state.add_campaign(
        SimCampaign::requestable(31, "Send follow-up").in_program(PROGRAM, "Webinar 2024"),
    );
    state.add_campaign(SimCampaign::batch(32, "Monthly newsletter"));
    state.add_campaign(SimCampaign::requestable(33, "Paused").active(false));
    let all = m.campaigns(&AssetFilter::all()).await.unwrap();
    assert_eq!(all.len(), 3);
    let requestable = m
        .campaigns(&AssetFilter::all().triggerable(true))
        .await
        .unwrap();
    assert_eq!(requestable.len(), 1);
    assert_eq!(requestable[0].id, 31);
    assert_eq!(requestable[0].program_id, Some(PROGRAM as i64));
    assert_eq!(requestable[0].kind, "trigger");

    let ids = leads(&sim, 150, "c");
    let tokens = [CampaignToken {
        name: "{{my.Subject}}".into(),
        value: "Thanks for coming".into(),
    }];
    m.request_campaign(31, &ids, &tokens).await.unwrap();
    let runs = state.campaign_runs();
    assert_eq!(runs.len(), 2, "100 leads a call");
    assert_eq!(runs[0].lead_ids.len() + runs[1].lead_ids.len(), 150);
    assert_eq!(
        runs[0].tokens,
        vec![("{{my.Subject}}".to_owned(), "Thanks for coming".to_owned())]
    );

    let e = m.request_campaign(32, &ids[..1], &[]).await.unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::InvalidInput,
        "a batch campaign (1003)"
    );
    let e = m.request_campaign(33, &ids[..1], &[]).await.unwrap_err();
    assert_eq!(e.context_value("provider_code"), Some("1003"));
    let e = m.request_campaign(34, &ids[..1], &[]).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    assert_eq!(
        sim.request_log()
            .count_calls("POST", "/rest/v1/campaigns/31/trigger.json"),
        2
    );
    assert_eq!(state.campaign_runs().len(), 2);
}
