use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn t0() -> DateTime<Utc> {
    at("2024-01-01T00:00:00Z")
}

fn tp(hours: i64, campaign: Option<&str>) -> Touchpoint {
    let t = Touchpoint::new(
        t0() + TimeDelta::hours(hours),
        Platform::Instagram,
        TouchpointKind::Click,
    );
    match campaign {
        Some(c) => t.with_campaign(c),
        None => t,
    }
}

fn conv(hours: i64) -> Conversion {
    Conversion::new(t0() + TimeDelta::hours(hours))
}

fn attributor(model: AttributionModel) -> Attributor {
    AttributionConfig::new(model).build().unwrap()
}

fn camp(c: &str) -> Bucket {
    Bucket::Campaign(CampaignId::new(c))
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn credits(c: &ConversionCredit) -> Vec<Decimal> {
    c.touchpoints.iter().map(|t| t.credit).collect()
}

#[test]
fn no_touchpoints_gives_empty_credit_for_every_model() {
    for model in AttributionModel::ALL {
        let c = attributor(*model).attribute(&[], &conv(10));
        assert!(c.is_empty());
        assert!(c.campaigns.is_empty());
        assert_eq!(c.total(), Decimal::ZERO);
    }
}

#[test]
fn touchpoints_after_the_conversion_are_ignored() {
    let journey = [tp(1, Some("a")), tp(5, Some("b")), tp(20, Some("late"))];
    for model in AttributionModel::ALL {
        let c = attributor(*model).attribute(&journey, &conv(10));
        assert_eq!(c.touchpoints.len(), 2, "{model}");
        assert_eq!(c.campaign(&camp("late")), Decimal::ZERO);
        assert!(c.campaigns.iter().all(|x| x.bucket != camp("late")));
        assert_eq!(c.total(), Decimal::ONE);
    }
    // Only later touchpoints: nothing counts.
    let c = attributor(AttributionModel::Linear).attribute(&[tp(20, Some("a"))], &conv(10));
    assert!(c.is_empty());
}

#[test]
fn touchpoint_at_the_conversion_time_counts() {
    let c = attributor(AttributionModel::LastTouch).attribute(&[tp(10, Some("a"))], &conv(10));
    assert_eq!(c.campaign(&camp("a")), Decimal::ONE);
}

#[test]
fn first_and_last_touch() {
    // Given out of order: sorting is by time.
    let journey = [
        tp(5, Some("mid")),
        tp(9, Some("last")),
        tp(1, Some("first")),
    ];
    let first = attributor(AttributionModel::FirstTouch).attribute(&journey, &conv(10));
    assert_eq!(first.campaign(&camp("first")), Decimal::ONE);
    assert_eq!(first.campaign(&camp("mid")), Decimal::ZERO);
    assert_eq!(first.campaigns.len(), 3); // zero credits are listed
    assert_eq!(
        first
            .touchpoints
            .iter()
            .map(|t| t.index)
            .collect::<Vec<_>>(),
        vec![2, 0, 1]
    );
    let last = attributor(AttributionModel::LastTouch).attribute(&journey, &conv(10));
    assert_eq!(last.campaign(&camp("last")), Decimal::ONE);
    assert_eq!(last.total(), Decimal::ONE);
}

#[test]
fn equal_timestamps_keep_input_order() {
    let journey = [tp(3, Some("x")), tp(3, Some("y")), tp(3, Some("z"))];
    let first = attributor(AttributionModel::FirstTouch).attribute(&journey, &conv(10));
    assert_eq!(first.campaign(&camp("x")), Decimal::ONE);
    let last = attributor(AttributionModel::LastTouch).attribute(&journey, &conv(10));
    assert_eq!(last.campaign(&camp("z")), Decimal::ONE);
    // 1/3 each: 0.333333 x 3 = 0.999999, the missing unit goes to the later one.
    let linear = attributor(AttributionModel::Linear).attribute(&journey, &conv(10));
    assert_eq!(
        credits(&linear),
        vec![d("0.333333"), d("0.333333"), d("0.333334")]
    );
    // Time decay with equal ages is linear.
    let decay = attributor(AttributionModel::TimeDecay).attribute(&journey, &conv(10));
    assert_eq!(credits(&decay), credits(&linear));
}

#[test]
fn linear_sums_per_campaign() {
    let journey = [
        tp(1, Some("a")),
        tp(2, Some("b")),
        tp(3, Some("a")),
        tp(4, Some("a")),
    ];
    let c = attributor(AttributionModel::Linear).attribute(&journey, &conv(10));
    assert_eq!(c.campaign(&camp("a")), d("0.75"));
    assert_eq!(c.campaign(&camp("b")), d("0.25"));
    assert_eq!(c.total(), Decimal::ONE);
}

#[test]
fn linear_seven_distributes_the_remainder_deterministically() {
    let journey: Vec<_> = (0..7).map(|h| tp(h, Some("a"))).collect();
    let c = attributor(AttributionModel::Linear).attribute(&journey, &conv(10));
    // 1/7 = 0.142857142..., floor 0.142857 x 7 = 0.999999, last gets +1 unit.
    let mut want = vec![d("0.142857"); 7];
    want[6] = d("0.142858");
    assert_eq!(credits(&c), want);
    assert_eq!(c.total(), Decimal::ONE);
}

#[test]
fn position_based_one_two_three_and_many() {
    let a = attributor(AttributionModel::PositionBased);
    let one = a.attribute(&[tp(1, Some("a"))], &conv(10));
    assert_eq!(credits(&one), vec![Decimal::ONE]);

    let two = a.attribute(&[tp(1, Some("a")), tp(2, Some("b"))], &conv(10));
    assert_eq!(credits(&two), vec![d("0.5"), d("0.5")]);

    let three = a.attribute(
        &[tp(1, Some("a")), tp(2, Some("b")), tp(3, Some("c"))],
        &conv(10),
    );
    assert_eq!(credits(&three), vec![d("0.4"), d("0.2"), d("0.4")]);

    // 0.2 / 3 = 0.0666...: 0.066666 x 3 + 0.8 = 0.999998; two missing units go
    // to the later middle touchpoints (equal remainders, later first).
    let five: Vec<_> = (1..=5).map(|h| tp(h, Some("m"))).collect();
    let c = a.attribute(&five, &conv(10));
    assert_eq!(
        credits(&c),
        vec![
            d("0.4"),
            d("0.066666"),
            d("0.066667"),
            d("0.066667"),
            d("0.4")
        ]
    );
    assert_eq!(c.total(), Decimal::ONE);
}

#[test]
fn time_decay_halves_per_half_life() {
    let a = AttributionConfig::new(AttributionModel::TimeDecay)
        .with_half_life(TimeDelta::hours(1))
        .build()
        .unwrap();
    // Ages 2h, 1h, 0h: weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7.
    let journey = [tp(8, Some("a")), tp(9, Some("b")), tp(10, Some("c"))];
    let c = a.attribute(&journey, &conv(10));
    assert_eq!(
        credits(&c),
        vec![d("0.142857"), d("0.285714"), d("0.571429")]
    );
    assert_eq!(c.total(), Decimal::ONE);
}

#[test]
fn time_decay_survives_huge_ages() {
    let a = AttributionConfig::new(AttributionModel::TimeDecay)
        .with_half_life(TimeDelta::seconds(1))
        .build()
        .unwrap();
    let journey = [tp(-100_000, Some("ancient")), tp(-99_000, Some("old"))];
    let c = a.attribute(&journey, &conv(10));
    assert_eq!(c.campaign(&camp("old")), Decimal::ONE);
    assert_eq!(c.campaign(&camp("ancient")), Decimal::ZERO);
}

#[test]
fn lookback_window_is_inclusive() {
    let a = AttributionConfig::new(AttributionModel::Linear)
        .with_lookback(TimeDelta::hours(5))
        .build()
        .unwrap();
    let journey = [
        tp(4, Some("too_old")),
        tp(5, Some("edge")),
        tp(9, Some("in")),
    ];
    let c = a.attribute(&journey, &conv(10));
    assert_eq!(c.campaign(&camp("too_old")), Decimal::ZERO);
    assert_eq!(c.campaign(&camp("edge")), d("0.5"));
    assert_eq!(c.campaign(&camp("in")), d("0.5"));
}

#[test]
fn unattributed_bucket_or_skip() {
    let journey = [tp(1, None), tp(2, Some("a")), tp(3, None)];
    let bucket = attributor(AttributionModel::PositionBased).attribute(&journey, &conv(10));
    assert_eq!(bucket.campaign(&Bucket::Unattributed), d("0.8"));
    assert_eq!(bucket.campaign(&camp("a")), d("0.2"));
    // Unattributed sorts after every campaign.
    assert_eq!(
        bucket.campaigns.last().map(|c| &c.bucket),
        Some(&Bucket::Unattributed)
    );

    let skip = AttributionConfig::new(AttributionModel::PositionBased)
        .with_unattributed(Unattributed::Skip)
        .build()
        .unwrap()
        .attribute(&journey, &conv(10));
    assert_eq!(skip.campaign(&camp("a")), Decimal::ONE);
    assert_eq!(skip.touchpoints.len(), 1);

    let none = AttributionConfig::new(AttributionModel::Linear)
        .with_unattributed(Unattributed::Skip)
        .build()
        .unwrap()
        .attribute(&[tp(1, None)], &conv(10));
    assert!(none.is_empty());
}

#[test]
fn totals_sum_over_conversions() {
    let journey = [tp(1, Some("a")), tp(5, Some("b"))];
    let a = attributor(AttributionModel::LastTouch);
    let all = a.attribute_all(&journey, &[conv(3), conv(10), conv(0)]);
    assert!(all[2].is_empty());
    let t = totals(&all);
    assert_eq!(
        t,
        vec![
            CampaignCredit {
                bucket: camp("a"),
                credit: Decimal::ONE
            },
            CampaignCredit {
                bucket: camp("b"),
                credit: Decimal::ONE
            },
        ]
    );
}

#[test]
fn config_validation_and_serde() {
    assert!(
        AttributionConfig::new(AttributionModel::TimeDecay)
            .with_half_life(TimeDelta::zero())
            .build()
            .is_err()
    );
    assert!(
        AttributionConfig::new(AttributionModel::TimeDecay)
            .with_half_life(TimeDelta::seconds(-5))
            .build()
            .is_err()
    );
    let err = serde_json::from_str::<AttributionConfig>(r#"{"model":"u_shaped"}"#);
    assert!(err.is_err());
    let err = serde_json::from_str::<AttributionConfig>(r#"{"model":"linear","extra":1}"#);
    assert!(err.is_err());
    let huge = AttributionConfig {
        half_life_secs: u64::MAX,
        ..AttributionConfig::new(AttributionModel::TimeDecay)
    };
    assert!(huge.build().is_err());
    for m in AttributionModel::ALL {
        let json = serde_json::to_string(m).unwrap();
        assert_eq!(json, format!("\"{}\"", m.as_str()));
        assert_eq!(serde_json::from_str::<AttributionModel>(&json).unwrap(), *m);
    }
}

#[test]
fn huge_lookback_excludes_nothing() {
    let a = AttributionConfig::new(AttributionModel::Linear)
        .with_lookback(TimeDelta::MAX)
        .build()
        .unwrap();
    let c = a.attribute(&[tp(1, Some("a"))], &conv(10));
    assert_eq!(c.total(), Decimal::ONE);
}

#[test]
fn seed_touchpoint_json() {
    let json = r#"[
      {"timestamp": "2024-01-15T10:30:00Z", "platform": "instagram", "type": "post_view", "postId": "post-456"},
      {"timestamp": "2024-01-15T11:00:00Z", "platform": "Mastodon", "type": "dm", "conversationId": "conv-789", "campaignId": "summer"}
    ]"#;
    let tps: Vec<Touchpoint> = serde_json::from_str(json).unwrap();
    assert_eq!(tps[0].kind, TouchpointKind::View);
    assert_eq!(tps[0].platform, Platform::Instagram);
    assert_eq!(tps[0].post_id, Some(PostId::new("post-456")));
    assert_eq!(tps[1].platform, Platform::Other("Mastodon".into()));
    assert_eq!(tps[1].campaign_id, Some(CampaignId::new("summer")));
    let back: Vec<Touchpoint> =
        serde_json::from_str(&serde_json::to_string(&tps).unwrap()).unwrap();
    assert_eq!(back, tps);
    assert_eq!(Platform::from("X"), Platform::Twitter);
    assert_eq!(String::from(Platform::Twitter), "twitter");
}

#[test]
fn deterministic_for_the_same_input() {
    let journey = [
        tp(3, Some("b")),
        tp(1, None),
        tp(3, Some("a")),
        tp(2, Some("c")),
    ];
    for m in AttributionModel::ALL {
        let a = attributor(*m);
        assert_eq!(
            a.attribute(&journey, &conv(9)),
            a.attribute(&journey, &conv(9))
        );
    }
}

// ---- properties ----

fn arb_model() -> impl Strategy<Value = AttributionModel> {
    (0..AttributionModel::ALL.len()).prop_map(|i| AttributionModel::ALL[i])
}

fn arb_touchpoint() -> impl Strategy<Value = Touchpoint> {
    (
        0i64..100_000,
        proptest::option::weighted(0.8, 0u8..5),
        0..TouchpointKind::ALL.len(),
    )
        .prop_map(|(mins, c, k)| {
            let t = Touchpoint::new(
                t0() + TimeDelta::minutes(mins),
                "twitter",
                TouchpointKind::ALL[k],
            );
            match c {
                Some(c) => t.with_campaign(format!("c{c}")),
                None => t,
            }
        })
}

fn arb_config() -> impl Strategy<Value = AttributionConfig> {
    (
        arb_model(),
        1u64..10_000_000,
        proptest::option::of(0u64..10_000_000),
        any::<bool>(),
    )
        .prop_map(|(model, half, lookback, skip)| AttributionConfig {
            half_life_secs: half,
            lookback_secs: lookback,
            unattributed: if skip {
                Unattributed::Skip
            } else {
                Unattributed::Bucket
            },
            ..AttributionConfig::new(model)
        })
}

proptest! {
    #[test]
    fn credits_sum_to_exactly_one(
        config in arb_config(),
        journey in proptest::collection::vec(arb_touchpoint(), 0..40),
        conv_mins in 0i64..110_000,
    ) {
        let a = config.build().unwrap();
        let conversion = Conversion::new(t0() + TimeDelta::minutes(conv_mins));
        let c = a.attribute(&journey, &conversion);
        let counted = journey.iter().filter(|t| a.counts(t, &conversion)).count();
        prop_assert_eq!(c.touchpoints.len(), counted);
        if counted == 0 {
            prop_assert!(c.is_empty());
            prop_assert_eq!(c.total(), Decimal::ZERO);
        } else {
            prop_assert_eq!(c.total(), Decimal::ONE);
            let per_tp: Decimal = c.touchpoints.iter().map(|t| t.credit).sum();
            prop_assert_eq!(per_tp, Decimal::ONE);
        }
        for t in &c.touchpoints {
            prop_assert!(t.credit >= Decimal::ZERO && t.credit <= Decimal::ONE);
            prop_assert!(t.credit.scale() <= CREDIT_SCALE);
            prop_assert!(journey[t.index].time <= conversion.time);
        }
        // Same input, same output.
        prop_assert_eq!(&a.attribute(&journey, &conversion), &c);
    }

    #[test]
    fn time_decay_later_touchpoints_get_at_least_as_much(
        half in 1u64..1_000_000,
        journey in proptest::collection::vec(arb_touchpoint(), 1..30),
    ) {
        let a = AttributionConfig {
            half_life_secs: half,
            ..AttributionConfig::new(AttributionModel::TimeDecay)
        }
        .build()
        .unwrap();
        let conversion = Conversion::new(t0() + TimeDelta::minutes(100_000));
        let c = a.attribute(&journey, &conversion);
        prop_assert_eq!(c.total(), Decimal::ONE);
        for x in &c.touchpoints {
            for y in &c.touchpoints {
                if journey[y.index].time > journey[x.index].time {
                    prop_assert!(y.credit >= x.credit, "{:?} vs {:?}", y, x);
                }
            }
        }
    }

    #[test]
    fn time_decay_later_campaign_with_same_count_gets_at_least_as_much(
        half in 1u64..1_000_000,
        n in 1usize..6,
        early in proptest::collection::vec(0i64..50_000, 6),
        gaps in proptest::collection::vec(1i64..50_000, 6),
    ) {
        // Campaign "late" has the same number of touchpoints as "early",
        // each strictly later than its counterpart.
        let mut journey = Vec::new();
        for i in 0..n {
            journey.push(tp(0, Some("early")));
            journey.last_mut().unwrap().time = t0() + TimeDelta::minutes(early[i]);
            journey.push(tp(0, Some("late")));
            journey.last_mut().unwrap().time = t0() + TimeDelta::minutes(early[i] + gaps[i]);
        }
        let a = AttributionConfig {
            half_life_secs: half,
            ..AttributionConfig::new(AttributionModel::TimeDecay)
        }
        .build()
        .unwrap();
        let c = a.attribute(&journey, &Conversion::new(t0() + TimeDelta::minutes(100_000)));
        prop_assert!(c.campaign(&camp("late")) >= c.campaign(&camp("early")));
        prop_assert_eq!(c.total(), Decimal::ONE);
    }
}
