//! The search endpoint against the simulator: every filter operator, OR
//! across filter groups, and the spacing of searches to search's own
//! per-second limit.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use crm_core::{ErrorKind, ReadRequest, Source};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_hubspot::wire::{Filter, FilterGroup, Operator, SearchRequest, Sort};
use crm_hubspot::{HubSpot, HubSpotConfig, RateLimits};
use crm_sim::store::Fields;
use crm_sim::{SimHandle, SimServer};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;

async fn start() -> SimHandle {
    let mut cfg = HubSpotSimConfig::default();
    cfg.daily = None;
    cfg.per_window = 1_000;
    SimServer::new(HubSpotSimulator::new(cfg))
        .start()
        .await
        .unwrap()
}

fn connector(sim: &SimHandle, search_per_second: u32, search_page_size: u32) -> HubSpot {
    let token = sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = HubSpotConfig::private_app(SecretString::from(token))
        .base_url(sim.base_url())
        .rate_limits(RateLimits::new(1_000, None, search_per_second))
        .search_page_size(search_page_size)
        .build()
        .unwrap();
    HubSpot::new(config).unwrap()
}

/// Name, email, lead score, job title, lifecycle stage.
type Seed = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

/// One search: what it shows, the filter groups, the names expected.
type Case = (&'static str, Vec<Vec<Filter>>, Vec<&'static str>);

/// Five contacts; `None` leaves a property out, `""` sets it empty.
fn seed(sim: &SimHandle) -> HashMap<&'static str, String> {
    let rows: [Seed; 5] = [
        (
            "ada",
            "ada@example.com",
            Some("10"),
            Some("Chief Engineer"),
            "lead",
        ),
        ("bob", "bob@example.org", Some("20"), None, "customer"),
        (
            "cyd",
            "cyd@example.com",
            Some("30"),
            Some("Sales Engineer"),
            "customer",
        ),
        ("dee", "dee@sample.net", Some("40"), Some(""), "opportunity"),
        ("eve", "eve@example.com", None, Some("Engineer"), "lead"),
    ];
    rows.into_iter()
        .map(|(name, email, score, title, stage)| {
            let mut f = Fields::new();
            f.insert("email".into(), json!(email));
            f.insert("firstname".into(), json!(name));
            f.insert("lifecyclestage".into(), json!(stage));
            if let Some(s) = score {
                f.insert("hs_lead_score".into(), json!(s));
            }
            if let Some(t) = title {
                f.insert("jobtitle".into(), json!(t));
            }
            (
                name,
                sim.context().store().create("contacts", f).id.to_string(),
            )
        })
        .collect()
}

fn filter(property: &str, operator: Operator, value: Option<&str>) -> Filter {
    let mut f = Filter::new(property, operator, "");
    f.value = value.map(str::to_owned);
    f
}

fn values(property: &str, operator: Operator, values: &[&str]) -> Filter {
    let mut f = filter(property, operator, None);
    f.values = Some(values.iter().map(|v| (*v).to_owned()).collect());
    f
}

fn request(groups: Vec<Vec<Filter>>) -> SearchRequest {
    SearchRequest {
        filter_groups: groups
            .into_iter()
            .map(|filters| FilterGroup { filters })
            .collect(),
        sorts: vec![Sort::ascending("hs_object_id")],
        properties: vec!["email".into()],
        limit: Some(100),
        ..SearchRequest::default()
    }
}

/// The names of the contacts the search returns, in the order returned.
async fn names(
    hs: &HubSpot,
    ids: &HashMap<&'static str, String>,
    groups: Vec<Vec<Filter>>,
) -> Vec<&'static str> {
    let res = hs
        .client()
        .objects("contacts")
        .search(request(groups))
        .send()
        .await
        .unwrap();
    let got: Vec<&'static str> = res
        .results
        .iter()
        .map(|o| {
            *ids.iter()
                .find(|(_, id)| **id == o.id.to_string())
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(res.total, got.len() as u64, "total matches the hits");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_search_operator_returns_exactly_its_records() {
    let sim = start().await;
    let ids = seed(&sim);
    let hs = connector(&sim, 100, 200);
    let one = |f: Filter| vec![vec![f]];
    use Operator::*;
    let cases: Vec<Case> = vec![
        (
            "EQ, text case-insensitively",
            one(filter("email", Eq, Some("CYD@example.com"))),
            vec!["cyd"],
        ),
        (
            "NEQ keeps records without the property",
            one(filter("lifecyclestage", Neq, Some("customer"))),
            vec!["ada", "dee", "eve"],
        ),
        (
            "NEQ on a number",
            one(filter("hs_lead_score", Neq, Some("20"))),
            vec!["ada", "cyd", "dee", "eve"],
        ),
        (
            "LT compares numbers as numbers",
            one(filter("hs_lead_score", Lt, Some("30"))),
            vec!["ada", "bob"],
        ),
        (
            "LT: 9 sorts before 10 as a number, after it as text",
            one(filter("hs_lead_score", Lt, Some("9"))),
            vec![],
        ),
        (
            "LTE includes the bound",
            one(filter("hs_lead_score", Lte, Some("30"))),
            vec!["ada", "bob", "cyd"],
        ),
        (
            "GT",
            one(filter("hs_lead_score", Gt, Some("30"))),
            vec!["dee"],
        ),
        (
            "GTE",
            one(filter("hs_lead_score", Gte, Some("30"))),
            vec!["cyd", "dee"],
        ),
        (
            "BETWEEN is inclusive",
            one({
                let mut f = filter("hs_lead_score", Between, Some("20"));
                f.high_value = Some("30".into());
                f
            }),
            vec!["bob", "cyd"],
        ),
        (
            "IN on text",
            one(values("lifecyclestage", In, &["lead", "opportunity"])),
            vec!["ada", "dee", "eve"],
        ),
        (
            "IN on numbers",
            one(values("hs_lead_score", In, &["10", "40", "50"])),
            vec!["ada", "dee"],
        ),
        (
            "NOT_IN",
            one(values("lifecyclestage", NotIn, &["lead"])),
            vec!["bob", "cyd", "dee"],
        ),
        (
            "HAS_PROPERTY: an empty value is no value",
            one(filter("jobtitle", HasProperty, None)),
            vec!["ada", "cyd", "eve"],
        ),
        (
            "NOT_HAS_PROPERTY: absent or empty",
            one(filter("jobtitle", NotHasProperty, None)),
            vec!["bob", "dee"],
        ),
        (
            "NOT_HAS_PROPERTY on a number",
            one(filter("hs_lead_score", NotHasProperty, None)),
            vec!["eve"],
        ),
        (
            "CONTAINS_TOKEN matches a whole word, any case",
            one(filter("jobtitle", ContainsToken, Some("engineer"))),
            vec!["ada", "cyd", "eve"],
        ),
        (
            "CONTAINS_TOKEN does not match part of a word",
            one(filter("jobtitle", ContainsToken, Some("engine"))),
            vec![],
        ),
        (
            "CONTAINS_TOKEN with a trailing wildcard",
            one(filter("jobtitle", ContainsToken, Some("chief*"))),
            vec!["ada"],
        ),
        (
            "CONTAINS_TOKEN with a leading wildcard (an email domain)",
            one(filter("email", ContainsToken, Some("*@example.com"))),
            vec!["ada", "cyd", "eve"],
        ),
        (
            "NOT_CONTAINS_TOKEN",
            one(filter("jobtitle", NotContainsToken, Some("engineer"))),
            vec!["bob", "dee"],
        ),
        (
            "filters of one group are ANDed",
            vec![vec![
                filter("lifecyclestage", Eq, Some("lead")),
                filter("hs_lead_score", Lt, Some("15")),
            ]],
            vec!["ada"],
        ),
        (
            "groups are ORed",
            vec![
                vec![filter("lifecyclestage", Eq, Some("opportunity"))],
                vec![
                    filter("lifecyclestage", Eq, Some("lead")),
                    filter("hs_lead_score", Lt, Some("15")),
                ],
            ],
            vec!["ada", "dee"],
        ),
        (
            "a record matching two groups comes back once",
            vec![
                vec![filter("email", ContainsToken, Some("*@example.com"))],
                vec![filter("jobtitle", HasProperty, None)],
                vec![filter("firstname", Eq, Some("bob"))],
            ],
            vec!["ada", "bob", "cyd", "eve"],
        ),
        (
            "no filter group: everything",
            vec![],
            vec!["ada", "bob", "cyd", "dee", "eve"],
        ),
    ];
    for (what, groups, want) in cases {
        assert_eq!(names(&hs, &ids, groups).await, want, "{what}");
    }
    // A descending sort compares numbers as numbers.
    let mut req = request(vec![vec![filter("hs_lead_score", HasProperty, None)]]);
    req.sorts = vec![Sort::descending("hs_lead_score")];
    let res = hs
        .client()
        .objects("contacts")
        .search(req)
        .send()
        .await
        .unwrap();
    let order: Vec<String> = res.results.iter().map(|o| o.id.to_string()).collect();
    assert_eq!(order, ["dee", "cyd", "bob", "ada"].map(|n| ids[n].clone()));
    // An operator HubSpot does not have is a 400, not an empty answer.
    let err = hs
        .client()
        .objects("contacts")
        .search(request(one(filter(
            "email",
            Operator::from("SOUNDS_LIKE".to_owned()),
            Some("ada"),
        ))))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput, "{err}");
}

/// Searches have their own limit (4 or 5 a second per token) and answer
/// without rate-limit headers, so the client spaces them itself. Several
/// tasks searching at once through clones of one client, then an
/// incremental read of many pages: HubSpot never sees more than the
/// configured number of searches in any second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_never_exceed_the_configured_number_per_second() {
    const PER_SECOND: u32 = 5;
    let sim = start().await;
    for i in 0..300 {
        let mut f = Fields::new();
        f.insert("email".into(), json!(format!("s{i}@example.com")));
        sim.context().store().create("contacts", f);
    }
    let hs = connector(&sim, PER_SECOND, 50);
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|t| {
            let client = hs.client().clone();
            tokio::spawn(async move {
                for i in 0..4 {
                    let f =
                        Filter::new("email", Operator::Eq, format!("s{}@example.com", t * 4 + i));
                    let res = client
                        .objects("contacts")
                        .search(request(vec![vec![f]]))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.results.len(), 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Then a read whose searches come one after another: the newest-change
    // probe of the full read, then 300 changes in pages of 50.
    let mut s = hs.read(ReadRequest::full("contacts").fields(["email"]));
    let mut cursor = None;
    while let Some(p) = s.next().await {
        cursor = Some(p.unwrap().cursor);
    }
    drop(s);
    sim.context().clock().advance(chrono::Duration::seconds(1));
    for i in 0..300 {
        let mut f = Fields::new();
        f.insert("email".into(), json!(format!("n{i}@example.com")));
        sim.context().store().create("contacts", f);
    }
    let mut s = hs.read(ReadRequest::since("contacts", cursor.unwrap()).fields(["email"]));
    let mut changes = 0;
    while let Some(p) = s.next().await {
        changes += p.unwrap().changes.len();
    }
    assert_eq!(changes, 300);
    let elapsed = started.elapsed();

    let log = sim.request_log();
    let is_search = |e: &crm_sim::LoggedRequest| e.method == "POST" && e.path.ends_with("/search");
    let searches = log.count(is_search);
    // 12 lookups, the probe, and at least 7 pages (6 full, one short).
    assert!(searches >= 20, "{searches} searches");
    let busiest = log.max_in_window(Duration::from_secs(1), is_search);
    assert!(
        busiest <= PER_SECOND as usize,
        "{busiest} searches within one second (limit {PER_SECOND})"
    );
    // Spaced, not merely lucky: n searches take (n - 1) gaps of 1/5 s.
    assert!(
        elapsed >= Duration::from_millis(200) * (searches as u32 - 1),
        "{searches} searches in {elapsed:?}"
    );
}
