//! Campaign matching: configuration, strategies, statuses and actions.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use chrono::NaiveDate;
use crm_core::Record;
use crm_core::matching::{
    CompositeRule, MatchAction, MatchStatus, MatchSummary, Matcher, MatchingConfig, Metric,
    OnMultipleMatch, OnNoMatch, Score, StrategyKind, Threshold,
};
use crm_core::model::{Booking, Campaign};

/// Seed 000's "Campaign Matching" block, verbatim, and its `crm:` settings.
const SEED: &str = r#"
matching:
  strategies:
    - type: "exact_id"
      source: "booking.campaign_id"
      target: "campaign.id"
      priority: 1
    
    - type: "name_match"
      source: "booking.campaign_name"
      target: "campaign.name"
      algorithm: "fuzzy"
      threshold: 0.85
      priority: 2
    
    - type: "composite"
      rules:
        - field: "client_name"
          match: "advertiser_name"
        - field: "start_date"
          tolerance: "7d"
      priority: 3
  
  on_no_match: "create_unmatched_record"
  on_multiple_match: "flag_for_review"

crm:
  sync:
    schedule: "0 * * * *"  # Hourly
    batch_size: 1000
    timeout: 300
  matching:
    fuzzy_threshold: 0.85
    max_manual_review: 100
"#;

fn seed() -> MatchingConfig {
    MatchingConfig::from_yaml(SEED).unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn campaign(id: &str, name: &str, advertiser: &str, start: &str) -> Record {
    Record::new()
        .with_id(id)
        .with("name", name)
        .with("advertiser_name", advertiser)
        .with("start_date", date(start))
}

fn booking(campaign_id: Option<&str>, name: &str, client: &str, start: &str) -> Record {
    let mut r = Record::new()
        .with("booking_id", "BK-1")
        .with("campaign_name", name)
        .with("client_name", client)
        .with("start_date", date(start));
    if let Some(id) = campaign_id {
        r.set("campaign_id", id);
    }
    r
}

fn campaigns() -> Vec<Record> {
    vec![
        campaign("C1", "Acme Spring Sale 2024", "Acme Corp", "2024-03-01"),
        campaign("C2", "Globex Summer Video", "Globex", "2024-06-01"),
        campaign("C3", "Initech Back to School", "Initech", "2024-08-15"),
        campaign("C4", "Umbrella Holiday Push", "Umbrella Inc", "2024-11-20"),
    ]
}

#[test]
fn seed_yaml_loads() {
    let cfg = seed();
    assert_eq!(cfg.strategies.len(), 3);
    assert_eq!(
        cfg.strategies[0].kind,
        StrategyKind::ExactId {
            source: "campaign_id".into(),
            target: "id".into()
        }
    );
    match &cfg.strategies[1].kind {
        StrategyKind::NameMatch {
            source,
            target,
            metric,
            threshold,
        } => {
            assert_eq!(
                (source.as_str(), target.as_str()),
                ("campaign_name", "name")
            );
            assert_eq!(*metric, Metric::Indel);
            assert_eq!(*threshold, Some(Threshold::from_fraction(85, 100).unwrap()));
        }
        other => panic!("{other:?}"),
    }
    match &cfg.strategies[2].kind {
        StrategyKind::Composite { rules, .. } => {
            assert!(
                matches!(&rules[0], CompositeRule::Match { field, target, .. }
                if field == "client_name" && target == "advertiser_name")
            );
            assert!(
                matches!(&rules[1], CompositeRule::Within { field, target, tolerance }
                if field == "start_date" && target == "start_date" && tolerance.as_days() == 7)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.on_no_match, OnNoMatch::CreateUnmatchedRecord);
    assert_eq!(cfg.on_multiple_match, OnMultipleMatch::FlagForReview);
    assert_eq!(cfg.settings.max_manual_review, Some(100));
    assert_eq!(cfg.settings.fuzzy_threshold, "0.85".parse().unwrap());
    // The block on its own parses too.
    let block = SEED.split("\ncrm:").next().unwrap();
    let inner: String = block
        .lines()
        .skip_while(|l| !l.starts_with("matching:"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let plain = MatchingConfig::from_yaml(&inner).unwrap();
    assert_eq!(plain.strategies, cfg.strategies);
}

#[test]
fn config_errors_name_the_problem() {
    let cases = [
        (
            "strategies: [{type: exact_id, source: a, target: b, colour: red}]",
            "colour",
        ),
        (
            "strategies: [{type: exact_id, source: a}]",
            "`target` is required",
        ),
        (
            "strategies: [{type: exact_id, source: a, target: b, threshold: 0.9}]",
            "threshold",
        ),
        (
            "strategies: [{type: name_match, source: a, target: b, threshold: 1.5}]",
            "above 1",
        ),
        (
            "strategies: [{type: name_match, source: a, target: b, threshold: -0.1}]",
            "threshold",
        ),
        (
            "strategies: [{type: name_match, source: a, target: b, rules: []}]",
            "rules",
        ),
        (
            "strategies: [{type: fuzzy_magic, source: a, target: b}]",
            "fuzzy_magic",
        ),
        (
            "strategies: [{type: composite, rules: [{field: d, tolerance: 7x}]}]",
            "tolerance",
        ),
        (
            "strategies: [{type: composite, rules: [{field: d}]}]",
            "give `match`",
        ),
        (
            "strategies: [{type: composite, rules: []}]",
            "at least one rule",
        ),
        (
            "strategies: [{type: composite, rules: [{field: d, match: e, extra: 1}]}]",
            "extra",
        ),
        ("strategies: []\non_no_match: shrug", "shrug"),
        ("strategies: []\nsurprise: 1", "surprise"),
        (
            "strategies: [{type: name_match, source: a, target: b, algorithm: jaro_winkler, metric: indel}]",
            "contradicts",
        ),
        (
            "strategies: [{type: name_match, source: a, target: b, algorithm: exact, threshold: 0.5}]",
            "exact",
        ),
        (
            "matching: {strategies: []}\ncrm: {matching: {fuzzy_treshold: 0.9}}",
            "fuzzy_treshold",
        ),
    ];
    for (yaml, needle) in cases {
        let err = MatchingConfig::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains(needle), "{yaml}\n=> {err}");
    }
}

#[test]
fn metric_options_and_defaults() {
    let cfg = MatchingConfig::from_yaml(
        r#"
strategies:
  - { type: name_match, source: booking.campaign_name, target: campaign.name, algorithm: jaro_winkler, priority: 1 }
  - { type: name_match, source: campaign_name, target: name, algorithm: fuzzy, metric: token_set, priority: 2 }
  - { type: name_match, source: campaign_name, target: name, algorithm: exact, priority: 3 }
  - { type: name_match, source: campaign_name, target: name, priority: 4 }
"#,
    )
    .unwrap();
    let metrics: Vec<(Metric, Option<Threshold>)> = cfg
        .strategies
        .iter()
        .map(|s| match &s.kind {
            StrategyKind::NameMatch {
                metric, threshold, ..
            } => (*metric, *threshold),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        metrics,
        vec![
            (Metric::JaroWinkler, None),
            (Metric::TokenSet, None),
            (Metric::Indel, Some(Threshold::ONE)),
            (Metric::Indel, None),
        ]
    );
}

#[test]
fn exact_id_matches() {
    let m = Matcher::new(&seed(), campaigns());
    let r = m.match_one(&booking(
        Some("C3"),
        "something else entirely",
        "Nobody",
        "2020-01-01",
    ));
    assert_eq!(r.status, MatchStatus::Matched);
    assert_eq!(r.action, MatchAction::Link);
    let best = r.best.unwrap();
    assert_eq!(best.campaign, 2);
    assert_eq!(best.campaign_id.unwrap().as_str(), "C3");
    assert_eq!(best.score, Score::ONE);
    assert_eq!(best.strategy, 0);
    // Surrounding whitespace in the booking's id is ignored.
    let r = m.match_one(&booking(Some(" C2 "), "", "", "2020-01-01"));
    assert_eq!(r.best.unwrap().campaign, 1);
}

#[test]
fn exact_id_duplicates_are_multiple() {
    let mut cs = campaigns();
    cs.push(campaign(
        "C1",
        "Acme Spring Sale 2024 (copy)",
        "Acme Corp",
        "2024-03-01",
    ));
    let m = Matcher::new(&seed(), cs);
    let r = m.match_one(&booking(Some("C1"), "", "", "2024-03-01"));
    assert_eq!(r.status, MatchStatus::Multiple);
    assert_eq!(r.best, None);
    assert_eq!(
        r.candidates.iter().map(|c| c.campaign).collect::<Vec<_>>(),
        vec![0, 4]
    );
    assert_eq!(r.action, MatchAction::Review);
}

#[test]
fn unknown_id_falls_through_to_name_match() {
    let m = Matcher::new(&seed(), campaigns());
    let r = m.match_one(&booking(
        Some("C99"),
        "Acme Spring Sale 2024",
        "",
        "2020-01-01",
    ));
    assert_eq!(r.status, MatchStatus::Matched);
    assert_eq!(r.best.unwrap().strategy, 1);
}

#[test]
fn fuzzy_name_is_probable_and_normalised_equal_is_matched() {
    let m = Matcher::new(&seed(), campaigns());
    // A typo: probable, for review.
    let r = m.match_one(&booking(None, "Acme Sprng Sale 2024", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Probable);
    assert_eq!(r.action, MatchAction::Review);
    let best = r.best.unwrap();
    assert_eq!(best.campaign, 0);
    assert_eq!(best.score, Score::new(40, 41));
    // Equal after normalisation (case, accents, punctuation): matched.
    let r = m.match_one(&booking(
        None,
        "  ACMÉ spring-sale, 2024!",
        "",
        "2020-01-01",
    ));
    assert_eq!(r.status, MatchStatus::Matched);
    assert_eq!(r.best.unwrap().score, Score::ONE);
}

#[test]
fn equally_good_names_are_multiple() {
    let mut cs = campaigns();
    cs.push(campaign(
        "C5",
        "acme spring-sale 2024",
        "Acme Corp",
        "2025-03-01",
    ));
    let m = Matcher::new(&seed(), cs);
    // Exactly equal to two campaigns after normalisation.
    let r = m.match_one(&booking(None, "Acme Spring Sale 2024", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Multiple);
    assert_eq!(r.candidates.len(), 2);
    // A typo equally close to both.
    let r = m.match_one(&booking(None, "Acme Spring Sale 2042", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Multiple);
    assert_eq!(r.best, None);
    assert_eq!(r.candidates[0].score, r.candidates[1].score);
    assert_eq!(r.action, MatchAction::Review);

    // on_multiple_match: skip.
    let mut cfg = seed();
    cfg.on_multiple_match = OnMultipleMatch::Skip;
    let mut cs = campaigns();
    cs.push(campaign(
        "C5",
        "acme spring-sale 2024",
        "Acme Corp",
        "2025-03-01",
    ));
    let r =
        Matcher::new(&cfg, cs).match_one(&booking(None, "Acme Spring Sale 2024", "", "2020-01-01"));
    assert_eq!(
        (r.status, r.action),
        (MatchStatus::Multiple, MatchAction::Skip)
    );
}

#[test]
fn a_clear_best_among_several_is_not_multiple() {
    let mut cs = campaigns();
    cs.push(campaign(
        "C5",
        "Acme Spring Sale 2025",
        "Acme Corp",
        "2025-03-01",
    ));
    let m = Matcher::new(&seed(), cs);
    let r = m.match_one(&booking(None, "Acme Spring Sale 2024", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Matched);
    assert_eq!(r.best.unwrap().campaign, 0);
    assert_eq!(r.candidates.len(), 2);
    assert!(r.candidates[0].score > r.candidates[1].score);
}

#[test]
fn unmatched_and_on_no_match() {
    let m = Matcher::new(&seed(), campaigns());
    let b = booking(None, "Wayne Enterprises Gala", "Wayne", "2024-01-01");
    let r = m.match_one(&b);
    assert_eq!(r.status, MatchStatus::Unmatched);
    assert_eq!(r.best, None);
    assert!(r.candidates.is_empty());
    assert_eq!(r.action, MatchAction::CreateUnmatched);

    let mut cfg = seed();
    cfg.on_no_match = OnNoMatch::Skip;
    let r = Matcher::new(&cfg, campaigns()).match_one(&b);
    assert_eq!(
        (r.status, r.action),
        (MatchStatus::Unmatched, MatchAction::Skip)
    );

    // A blank name finds nothing, even against a blank campaign name.
    let mut cs = campaigns();
    cs.push(campaign("C9", " -- ", "", "2024-01-01"));
    let r = Matcher::new(&seed(), cs).match_one(&booking(None, "!!", "", "2000-01-01"));
    assert_eq!(r.status, MatchStatus::Unmatched);
}

#[test]
fn composite_date_tolerance_boundary() {
    let m = Matcher::new(&seed(), campaigns());
    // Name too different for name_match; advertiser and date decide.
    let within = booking(None, "Q3 student promo", "INITECH", "2024-08-22"); // 7 days after
    let r = m.match_one(&within);
    assert_eq!(r.status, MatchStatus::Matched, "{r:?}");
    assert_eq!(r.best.as_ref().unwrap().campaign, 2);
    assert_eq!(r.best.unwrap().strategy, 2);
    let before = booking(None, "Q3 student promo", "Initech", "2024-08-08"); // 7 days before
    assert_eq!(m.match_one(&before).status, MatchStatus::Matched);
    let late = booking(None, "Q3 student promo", "Initech", "2024-08-23"); // 8 days
    assert_eq!(m.match_one(&late).status, MatchStatus::Unmatched);
    let early = booking(None, "Q3 student promo", "Initech", "2024-08-07"); // 8 days
    assert_eq!(m.match_one(&early).status, MatchStatus::Unmatched);
    // A fuzzy advertiser is probable.
    let fuzzy = booking(None, "Q3 student promo", "Initech Inc", "2024-08-15");
    let r = m.match_one(&fuzzy);
    assert_eq!(
        r.status,
        MatchStatus::Unmatched,
        "Initech vs Initech Inc is below 0.85"
    );
    let fuzzy = booking(None, "Holiday", "Umbrella Inc.", "2024-11-18");
    let r = m.match_one(&fuzzy);
    assert_eq!(r.status, MatchStatus::Matched);
    let fuzzy = booking(None, "Holiday", "Umbrela Inc", "2024-11-18");
    let r = m.match_one(&fuzzy);
    assert_eq!(r.status, MatchStatus::Probable);
    assert_eq!(r.best.unwrap().score, Score::new(22, 23));
    // Two campaigns of one advertiser within the window: multiple.
    let mut cs = campaigns();
    cs.push(campaign("C6", "Initech Fall Push", "Initech", "2024-08-20"));
    let r = Matcher::new(&seed(), cs).match_one(&within);
    assert_eq!(r.status, MatchStatus::Multiple);
    // Dates given as text work too; a missing date finds nothing.
    let text_date = Record::new()
        .with("campaign_name", "x")
        .with("client_name", "Initech")
        .with("start_date", "2024-08-20");
    assert_eq!(m.match_one(&text_date).status, MatchStatus::Matched);
    let no_date = Record::new()
        .with("campaign_name", "x")
        .with("client_name", "Initech");
    assert_eq!(m.match_one(&no_date).status, MatchStatus::Unmatched);
}

#[test]
fn composite_with_only_a_date_rule() {
    let cfg = MatchingConfig::from_yaml(
        "strategies: [{type: composite, rules: [{field: start_date, match: campaign.start_date, tolerance: 1w}]}]",
    )
    .unwrap();
    let m = Matcher::new(&cfg, campaigns());
    let r = m.match_one(&booking(None, "", "", "2024-06-08"));
    assert_eq!(r.status, MatchStatus::Matched);
    assert_eq!(r.best.unwrap().campaign, 1);
    assert_eq!(
        m.match_one(&booking(None, "", "", "2024-06-09")).status,
        MatchStatus::Unmatched
    );
}

#[test]
fn priority_order_decides() {
    // name_match first: a booking whose id points at C2 but whose name is C1's.
    let cfg = MatchingConfig::from_yaml(
        r#"
strategies:
  - { type: exact_id, source: booking.campaign_id, target: campaign.id, priority: 2 }
  - { type: name_match, source: booking.campaign_name, target: campaign.name, threshold: 0.85, priority: 1 }
"#,
    )
    .unwrap();
    assert_eq!(cfg.strategies[0].kind.as_str(), "name_match");
    let b = booking(Some("C2"), "Acme Spring Sale 2024", "", "2020-01-01");
    let r = Matcher::new(&cfg, campaigns()).match_one(&b);
    assert_eq!(r.best.unwrap().campaign, 0);
    // Seed order (exact_id first) picks C2 for the same booking.
    let r = Matcher::new(&seed(), campaigns()).match_one(&b);
    assert_eq!(r.best.unwrap().campaign, 1);
}

#[test]
fn fuzzy_threshold_setting_is_the_default() {
    let loose = MatchingConfig::from_yaml(
        "matching: {strategies: [{type: name_match, source: campaign_name, target: name}]}\ncrm: {matching: {fuzzy_threshold: 0.5}}",
    )
    .unwrap();
    let strict = MatchingConfig::from_yaml(
        "matching: {strategies: [{type: name_match, source: campaign_name, target: name}]}",
    )
    .unwrap();
    let b = booking(None, "Acme Sale", "", "2020-01-01");
    assert_eq!(
        Matcher::new(&loose, campaigns()).match_one(&b).status,
        MatchStatus::Probable
    );
    assert_eq!(
        Matcher::new(&strict, campaigns()).match_one(&b).status,
        MatchStatus::Unmatched
    );
}

#[test]
fn score_exactly_at_the_threshold_passes() {
    // 20 + 20 characters, LCS 17: 34/40 = 0.85 exactly.
    let cfg = MatchingConfig::from_yaml(
        "strategies: [{type: name_match, source: campaign_name, target: name, threshold: 0.85}]",
    )
    .unwrap();
    let cs = vec![
        Record::new()
            .with_id("A")
            .with("name", "abcdefghijklmnopqrst"),
    ];
    let m = Matcher::new(&cfg, cs.clone());
    let r = m.match_one(&booking(None, "abcdefghijklmnopqxyz", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Probable);
    assert_eq!(r.best.unwrap().score, Score::new(85, 100));
    // 0.851 rejects it.
    let cfg = MatchingConfig::from_yaml(
        "strategies: [{type: name_match, source: campaign_name, target: name, threshold: 0.851}]",
    )
    .unwrap();
    let r =
        Matcher::new(&cfg, cs).match_one(&booking(None, "abcdefghijklmnopqxyz", "", "2020-01-01"));
    assert_eq!(r.status, MatchStatus::Unmatched);
}

#[test]
fn typed_models_and_review_queue() {
    let camps: Vec<Campaign> = campaigns()
        .iter()
        .map(|r| Campaign::try_from(r).unwrap())
        .collect();
    let m = Matcher::new(&seed(), camps);
    let row = Record::new()
        .with("booking_id", "BK-7")
        .with("client_name", "Globex")
        .with("campaign_name", "Globex Sumer Video")
        .with("start_date", "2024-06-01")
        .with("end_date", "2024-06-30")
        .with("budget", "100")
        .with("media_type", "video")
        .with("dsp_platform", "DV360");
    let b = Booking::try_from(&row).unwrap();
    let r = m.match_one(&b);
    assert_eq!(r.status, MatchStatus::Probable);
    assert_eq!(r.best.unwrap().campaign_id.unwrap().as_str(), "C2");

    let mut cfg = seed();
    cfg.settings.max_manual_review = Some(2);
    let m = Matcher::new(&cfg, campaigns());
    let bookings: Vec<Record> = (0..5)
        .map(|i| {
            booking(
                None,
                &format!("Acme Sprng Sale 2024{}", "!".repeat(i)),
                "",
                "2020-01-01",
            )
        })
        .collect();
    let results = m.match_all(&bookings);
    let mut q = m.review_queue();
    q.extend_from(&results);
    assert_eq!(q.queued(), &[0, 1]);
    assert_eq!(q.overflow(), 3);
    assert!(q.cap_hit());
}

#[test]
fn match_all_is_match_one_in_order() {
    let m = Matcher::new(&seed(), campaigns());
    let names = [
        "Acme Spring Sale 2024",
        "Acme Sprng Sale 2024",
        "Globex Summer Vid",
        "nothing like it",
        "INITECH back to school",
    ];
    let bookings: Vec<Record> = (0..2000)
        .map(|i| {
            booking(
                (i % 7 == 0).then_some("C4"),
                names[i % names.len()],
                "Umbrella Inc",
                "2024-01-01",
            )
        })
        .collect();
    let all = m.match_all(&bookings);
    let one: Vec<_> = bookings.iter().map(|b| m.match_one(b)).collect();
    assert_eq!(all, one);
    let s = MatchSummary::of(&all);
    assert_eq!(s.matched + s.probable + s.unmatched + s.multiple, 2000);
    assert!(s.matched > 0 && s.probable > 0 && s.unmatched > 0);
}
