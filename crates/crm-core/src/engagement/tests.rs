use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn now() -> DateTime<Utc> {
    "2024-03-01T00:00:00Z".parse().unwrap()
}

fn scorer() -> EngagementScorer {
    EngagementConfig::default().build().unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn empty_is_zero_with_scale_two() {
    let s = scorer().score(&[], now());
    assert_eq!(s, Decimal::ZERO);
    assert_eq!(s.to_string(), "0.00");
}

#[test]
fn raw_equal_to_scale_is_63_21() {
    // 4 DMs at 5 points = 20 = scale.
    let s = scorer().score(&[Interaction::new(InteractionKind::Dm, now(), 4)], now());
    assert_eq!(s, d("63.21"));
}

#[test]
fn saturates_at_100() {
    let s = scorer().score(
        &[Interaction::new(
            InteractionKind::Conversion,
            now(),
            u32::MAX,
        )],
        now(),
    );
    assert_eq!(s.to_string(), "100.00");
}

#[test]
fn zero_count_and_zero_weight_add_nothing() {
    let a = scorer();
    assert_eq!(
        a.score(&[Interaction::new(InteractionKind::Share, now(), 0)], now()),
        Decimal::ZERO
    );
    let b = EngagementConfig::default()
        .with_weights(InteractionWeights::default().with(InteractionKind::View, Decimal::ZERO))
        .build()
        .unwrap();
    assert_eq!(
        b.score(
            &[Interaction::new(InteractionKind::View, now(), 100)],
            now()
        ),
        Decimal::ZERO
    );
}

#[test]
fn decay_halves_points_per_half_life_and_future_counts_as_now() {
    let a = scorer();
    let fresh = a.raw_points(&[Interaction::new(InteractionKind::Click, now(), 8)], now());
    let month = a.raw_points(
        &[Interaction::new(
            InteractionKind::Click,
            now() - TimeDelta::days(30),
            8,
        )],
        now(),
    );
    assert_eq!(fresh, 8.0);
    assert_eq!(month, 4.0);
    let future = a.raw_points(
        &[Interaction::new(
            InteractionKind::Click,
            now() + TimeDelta::days(3),
            8,
        )],
        now(),
    );
    assert_eq!(future, 8.0);
}

#[test]
fn no_decay_when_half_life_is_off() {
    let a = EngagementConfig::default()
        .with_half_life(None)
        .build()
        .unwrap();
    let old = Interaction::new(InteractionKind::Dm, now() - TimeDelta::days(3650), 4);
    assert_eq!(a.score(&[old], now()), d("63.21"));
}

#[test]
fn invalid_configs_fail() {
    let neg = EngagementConfig::default()
        .with_weights(InteractionWeights::default().with(InteractionKind::Click, d("-1")));
    assert!(neg.build().is_err());
    assert!(
        EngagementConfig::default()
            .with_scale(Decimal::ZERO)
            .build()
            .is_err()
    );
    assert!(
        EngagementConfig::default()
            .with_half_life(Some(TimeDelta::zero()))
            .build()
            .is_err()
    );
    assert!(serde_json::from_str::<EngagementConfig>(r#"{"weights":{"like":"1"}}"#).is_err());
}

#[test]
fn interaction_from_touchpoint_and_serde() {
    let t = crate::attribution::Touchpoint::new(now(), "twitter", InteractionKind::Comment);
    let i = Interaction::from(&t);
    assert_eq!(i, Interaction::new(InteractionKind::Comment, now(), 1));
    let parsed: Interaction =
        serde_json::from_str(r#"{"kind":"share","time":"2024-03-01T00:00:00Z"}"#).unwrap();
    assert_eq!(parsed.count, 1);
}

// ---- properties ----

fn arb_interaction() -> impl Strategy<Value = Interaction> {
    (
        0..InteractionKind::ALL.len(),
        -1_000_000i64..100_000_000,
        0u32..1_000,
    )
        .prop_map(|(k, secs_ago, count)| {
            Interaction::new(
                InteractionKind::ALL[k],
                now() - TimeDelta::seconds(secs_ago),
                count,
            )
        })
}

fn arb_config() -> impl Strategy<Value = EngagementConfig> {
    (
        proptest::collection::vec(0i64..10_000, 6),
        proptest::option::of(1u64..100_000_000),
        1i64..100_000,
    )
        .prop_map(|(w, half, scale)| {
            let mut weights = InteractionWeights::default();
            for (kind, w) in InteractionKind::ALL.iter().zip(w) {
                weights = weights.with(*kind, Decimal::new(w, 2));
            }
            EngagementConfig {
                weights,
                half_life_secs: half,
                scale: Decimal::new(scale, 2),
            }
        })
}

proptest! {
    #[test]
    fn score_is_within_0_and_100(
        config in arb_config(),
        interactions in proptest::collection::vec(arb_interaction(), 0..30),
    ) {
        let s = config.build().unwrap().score(&interactions, now());
        prop_assert!(s >= Decimal::ZERO && s <= Decimal::ONE_HUNDRED);
        prop_assert_eq!(s.scale(), 2);
    }

    #[test]
    fn adding_an_interaction_never_lowers_the_score(
        config in arb_config(),
        interactions in proptest::collection::vec(arb_interaction(), 0..30),
        extra in arb_interaction(),
        at in any::<prop::sample::Index>(),
    ) {
        let scorer = config.build().unwrap();
        let before = scorer.score(&interactions, now());
        let mut more = interactions.clone();
        more.insert(at.index(interactions.len() + 1), extra);
        prop_assert!(scorer.score(&more, now()) >= before);
    }

    #[test]
    fn raising_a_count_never_lowers_the_score(
        config in arb_config(),
        interactions in proptest::collection::vec(arb_interaction(), 1..30),
        which in any::<prop::sample::Index>(),
        by in 1u32..1_000,
    ) {
        let scorer = config.build().unwrap();
        let before = scorer.score(&interactions, now());
        let mut more = interactions.clone();
        let i = which.index(more.len());
        more[i].count = more[i].count.saturating_add(by);
        prop_assert!(scorer.score(&more, now()) >= before);
    }

    #[test]
    fn older_interactions_never_raise_the_score(
        config in arb_config(),
        interactions in proptest::collection::vec(arb_interaction(), 1..30),
        which in any::<prop::sample::Index>(),
        older_by in 0i64..100_000_000,
    ) {
        let scorer = config.build().unwrap();
        let before = scorer.score(&interactions, now());
        let mut aged = interactions.clone();
        let i = which.index(aged.len());
        aged[i].time -= TimeDelta::seconds(older_by);
        prop_assert!(scorer.score(&aged, now()) <= before);
        // Moving the scoring instant later ages everything.
        prop_assert!(scorer.score(&interactions, now() + TimeDelta::seconds(older_by)) <= before);
    }

    #[test]
    fn score_is_deterministic(
        config in arb_config(),
        interactions in proptest::collection::vec(arb_interaction(), 0..30),
    ) {
        let scorer = config.build().unwrap();
        prop_assert_eq!(scorer.score(&interactions, now()), scorer.score(&interactions, now()));
    }
}
