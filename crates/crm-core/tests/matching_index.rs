//! The fuzzy index returns exactly what a brute-force scan returns.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use crm_core::matching::{FuzzyIndex, Metric, Score, Threshold, all_pairs, normalize};
use proptest::prelude::*;

/// Reference LCS by dynamic programming, independent of the bit-parallel one.
fn lcs_dp(a: &[char], b: &[char]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    for &x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Brute force written from the definition: 2 * LCS / (l1 + l2) >= n / d.
fn reference(names: &[String], query: &str, t: Threshold) -> Vec<(usize, Score)> {
    let q: Vec<char> = normalize(query).chars().collect();
    let (n, d) = (u128::from(t.numerator()), u128::from(t.denominator()));
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let c: Vec<char> = normalize(name).chars().collect();
            let lcs = lcs_dp(&q, &c) as u128;
            let sum = (q.len() + c.len()) as u128;
            (2 * lcs * d >= n * sum).then(|| (i, Score::new(2 * lcs, sum)))
        })
        .collect()
}

/// Names from a small alphabet (so many pairs are close), with spaces,
/// accents and non-Latin letters, from empty to well over 64 characters.
fn name() -> impl Strategy<Value = String> {
    let ch = prop::sample::select(vec![
        'a', 'b', 'c', 'a', 'b', ' ', 'd', 'é', 'E', '-', 'ß', '東', 'z', '1',
    ]);
    prop_oneof![
        3 => prop::collection::vec(ch.clone(), 0..12).prop_map(|v| v.into_iter().collect()),
        3 => prop::collection::vec(ch.clone(), 10..40).prop_map(|v| v.into_iter().collect()),
        1 => prop::collection::vec(ch, 60..150).prop_map(|v| v.into_iter().collect()),
    ]
}

/// A name with a few random edits, so queries have near neighbours.
fn mutate(base: &str, edits: &[(usize, u8)]) -> String {
    let mut v: Vec<char> = base.chars().collect();
    for &(pos, op) in edits {
        let p = if v.is_empty() { 0 } else { pos % (v.len() + 1) };
        match op % 3 {
            0 if p < v.len() => {
                v.remove(p);
            }
            1 => v.insert(p, 'x'),
            _ if p < v.len() => v[p] = 'q',
            _ => {}
        }
    }
    v.into_iter().collect()
}

fn threshold() -> impl Strategy<Value = Threshold> {
    prop_oneof![
        (0u64..=100).prop_map(|p| Threshold::from_percent(p).unwrap()),
        (1u64..1000)
            .prop_flat_map(|d| (0..=d).prop_map(move |n| Threshold::from_fraction(n, d).unwrap())),
        Just("0.85".parse().unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn index_search_equals_brute_force(
        names in prop::collection::vec(name(), 0..40),
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((0usize..200, any::<u8>()), 0..6),
        free_query in name(),
        use_free in any::<bool>(),
        t in threshold(),
    ) {
        let query = if use_free || names.is_empty() {
            free_query
        } else {
            mutate(&names[pick.index(names.len())], &edits)
        };
        let index = FuzzyIndex::new(&names);
        let got: Vec<(usize, Score)> = index.search(&query, t).collect();
        let want = reference(&names, &query, t);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(index.brute_force(&query, t), want);
    }

    #[test]
    fn all_pairs_equals_nested_scan(
        bookings in prop::collection::vec(name(), 0..25),
        campaigns in prop::collection::vec(name(), 0..25),
        t in threshold(),
    ) {
        let got: Vec<(usize, usize, Score)> = all_pairs(&bookings, &campaigns, t).collect();
        let mut want = Vec::new();
        for (b, q) in bookings.iter().enumerate() {
            want.extend(reference(&campaigns, q, t).into_iter().map(|(c, s)| (b, c, s)));
        }
        prop_assert_eq!(&got, &want);
        let index = FuzzyIndex::new(&campaigns);
        let threaded: Vec<_> = index.all_pairs(&bookings, t).threads(3).collect();
        prop_assert_eq!(threaded, want);
    }

    #[test]
    fn other_metrics_search_equals_brute_force(
        names in prop::collection::vec(name(), 0..20),
        query in name(),
        t in threshold(),
        jw in any::<bool>(),
    ) {
        let metric = if jw { Metric::JaroWinkler } else { Metric::TokenSet };
        let index = FuzzyIndex::with_metric(&names, metric);
        let got: Vec<_> = index.search(&query, t).collect();
        let q: Vec<char> = normalize(&query).chars().collect();
        let want: Vec<(usize, Score)> = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let c: Vec<char> = normalize(n).chars().collect();
                let s = metric.score(&q, &c);
                t.accepts(s).then_some((i, s))
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn scores_stay_in_range_and_symmetric(a in name(), b in name()) {
        let (x, y): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        for m in [Metric::Indel, Metric::JaroWinkler, Metric::TokenSet] {
            let s = m.score(&x, &y);
            prop_assert!(s <= Score::ONE && s >= Score::ZERO);
            if m == Metric::Indel {
                prop_assert_eq!(s, m.score(&y, &x));
            }
        }
    }
}

#[test]
fn exact_threshold_boundaries() {
    // 34/40 = 0.85 exactly: kept at 0.85, dropped at 0.8500001.
    let names = ["abcdefghijklmnopqrst"];
    let index = FuzzyIndex::new(names);
    let t: Threshold = "0.85".parse().unwrap();
    let hits: Vec<_> = index.search("abcdefghijklmnopqxyz", t).collect();
    assert_eq!(hits, vec![(0, Score::new(17, 20))]);
    let t: Threshold = "0.8500001".parse().unwrap();
    assert_eq!(index.search("abcdefghijklmnopqxyz", t).count(), 0);

    // rapidfuzz#132's shape: 39/49 = 0.7959 must fail 0.80, 40/50 pass.
    let index = FuzzyIndex::new(["aaaaaaaaaaaaaaaaaaaaaaaaa"]); // 25
    let t = Threshold::from_percent(80).unwrap();
    let just_below = format!("{}{}", "a".repeat(19), "b".repeat(5)); // 24: LCS 19 -> 38/49
    assert_eq!(index.search(&just_below, t).count(), 0);
    let at = format!("{}{}", "a".repeat(20), "b".repeat(5)); // 25: LCS 20 -> 40/50
    assert_eq!(
        index.search(&at, t).map(|(_, s)| s).collect::<Vec<_>>(),
        vec![Score::new(4, 5)]
    );

    // Float thresholds from YAML keep their decimal value.
    let from_yaml: Threshold = serde_yaml::from_str("0.85").unwrap();
    assert_eq!(from_yaml, Threshold::default());
    let pct: Threshold = serde_yaml::from_str("1").unwrap();
    assert_eq!(pct, Threshold::ONE);
    assert!(serde_yaml::from_str::<Threshold>("85").is_err());
}

#[test]
fn long_names_use_multi_word_lcs() {
    let base = "acme international holdings spring summer mega sale campaign 2024 video display";
    assert!(base.len() > 64);
    let names = [
        base.to_owned(),
        base.replace("spring", "sprng"),
        "short".to_owned(),
    ];
    let index = FuzzyIndex::new(&names);
    let t = Threshold::from_percent(95).unwrap();
    let got: Vec<_> = index.search(&base.replace("video", "vdeo"), t).collect();
    assert_eq!(got, reference(&names, &base.replace("video", "vdeo"), t));
    assert_eq!(got.len(), 2);
}

#[test]
fn empty_and_tiny_names() {
    let names = ["", "a", "ab", "b", "!!"];
    let index = FuzzyIndex::new(names);
    for q in ["", "a", "b", "ab", "ba", "?"] {
        for p in [0, 1, 50, 66, 67, 100] {
            let t = Threshold::from_percent(p).unwrap();
            let got: Vec<_> = index.search(q, t).collect();
            assert_eq!(
                got,
                reference(&names.map(String::from), q, t),
                "{q:?} at {p}"
            );
        }
    }
    // Two empty names are identical.
    assert_eq!(
        index
            .search("", Threshold::ONE)
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        vec![0, 4]
    );
}

/// Names over more characters than the index has histogram slots (so rare
/// characters share one), with many exact and near duplicates.
fn wide_name() -> impl Strategy<Value = String> {
    let ch = prop::sample::select(
        "abcdefghijklmnopqrstuvwxyz0123456789 éøß東京-_"
            .chars()
            .collect::<Vec<_>>(),
    );
    prop::collection::vec(ch, 0..30).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn wide_alphabet_and_duplicates_equal_brute_force(
        base in prop::collection::vec(wide_name(), 1..20),
        picks in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4), 0..30),
        queries in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec((0usize..40, any::<u8>()), 0..4)), 1..12),
        t in threshold(),
    ) {
        // Duplicates: exact copies and copies differing only in case and
        // punctuation (equal after normalisation).
        let mut names = base.clone();
        for (i, style) in &picks {
            let n = &base[i.index(base.len())];
            names.push(match style {
                0 => n.clone(),
                1 => n.to_uppercase(),
                2 => format!("--{n}!"),
                _ => n.replace(' ', "_"),
            });
        }
        // Queries: edited names, some of them repeated.
        let mut qs: Vec<String> = queries
            .iter()
            .map(|(i, edits)| mutate(&names[i.index(names.len())], edits))
            .collect();
        qs.extend(qs.clone().into_iter().take(3).map(|q| q.to_uppercase()));
        let index = FuzzyIndex::new(&names);
        let mut want = Vec::new();
        for (b, q) in qs.iter().enumerate() {
            let r = reference(&names, q, t);
            prop_assert_eq!(index.search(q, t).collect::<Vec<_>>(), r.clone());
            prop_assert_eq!(index.brute_force(q, t), r.clone());
            want.extend(r.into_iter().map(|(c, s)| (b, c, s)));
        }
        let got: Vec<_> = index.all_pairs(&qs, t).collect();
        prop_assert_eq!(got, want);
    }
}

/// A small deterministic generator for the larger tests below.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn threaded_all_pairs_with_repeated_queries_equals_per_query_search() {
    // Enough queries for several work chunks per thread and more than one
    // block, with many repeated and case-changed queries.
    let words = [
        "acme", "spring", "sale", "video", "2024", "2025", "globex", "q3", "display", "müller",
    ];
    let mut rng = 7u64;
    let word = |rng: &mut u64| words[(splitmix(rng) % words.len() as u64) as usize];
    let campaigns: Vec<String> = (0..150)
        .map(|_| {
            let k = 2 + splitmix(&mut rng) % 4;
            (0..k).map(|_| word(&mut rng)).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let bookings: Vec<String> = (0..9_000)
        .map(|_| {
            let c = &campaigns[(splitmix(&mut rng) % 150) as usize];
            match splitmix(&mut rng) % 4 {
                0 => c.to_uppercase(),
                1 => c.replacen('a', "", 1),
                2 => format!("{c} x"),
                _ => c.clone(),
            }
        })
        .collect();
    let t: Threshold = "0.85".parse().unwrap();
    let index = FuzzyIndex::new(&campaigns);
    let mut want = Vec::new();
    for (b, q) in bookings.iter().enumerate() {
        want.extend(index.search(q, t).map(|(c, s)| (b, c, s)));
    }
    assert!(want.len() > bookings.len());
    for threads in [1, 2, 3] {
        let got: Vec<_> = index.all_pairs(&bookings, t).threads(threads).collect();
        assert_eq!(got, want, "{threads} threads");
    }
    // Spot-check the per-query search against the reference.
    for q in bookings.iter().step_by(500) {
        assert_eq!(
            index.search(q, t).collect::<Vec<_>>(),
            reference(&campaigns, q, t)
        );
    }
}

#[test]
fn saturated_character_counts_stay_exact() {
    // Runs of more than 255 of one character saturate the histogram slot.
    let names = [
        "a".repeat(300),
        "a".repeat(260),
        format!("{}{}", "a".repeat(256), "b".repeat(40)),
        "b".repeat(300),
    ];
    let index = FuzzyIndex::new(&names);
    for q in [
        "a".repeat(280),
        "a".repeat(256),
        format!("{}{}", "b".repeat(30), "a".repeat(270)),
    ] {
        for p in [0, 50, 85, 90, 95, 100] {
            let t = Threshold::from_percent(p).unwrap();
            let got: Vec<_> = index.search(&q, t).collect();
            assert_eq!(got, reference(&names, &q, t), "{} at {p}", q.len());
        }
    }
}
