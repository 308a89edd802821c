//! Campaign-matching benchmark: all pairs of 100,000 generated booking names
//! x 100,000 campaign names at the 0.85 threshold.
//!
//! Goal: the same pairs as rapidfuzz's `process.cdist(scorer=fuzz.ratio,
//! score_cutoff=85)` on the same names, at least 10x faster. Run with
//!
//! ```text
//! cargo bench -p crm-core --bench matching -- [--bookings N] [--campaigns N]
//!     [--threshold 0.85] [--dir target/bench-matching] [--seed 42]
//! python3 scripts/bench_matching.py --dir target/bench-matching
//! ```
//!
//! `cargo bench` runs the bench in `crates/crm-core`, so a relative `--dir`
//! is taken from there; pass an absolute one (`--dir "$PWD/target/..."`)
//! to share the files with the script run from the repository root.
//!
//! It writes `bookings.csv` and `campaigns.csv` (raw names: `id,name`),
//! `bookings_normalized.csv` / `campaigns_normalized.csv` (the same ids with
//! the names after `crm_core::matching::normalize`, which is what both sides
//! compare), `pairs_rust.csv` (`booking_id,campaign_id,score`) and
//! `rust.json` (timings and counts).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use crm_core::matching::{FuzzyIndex, Threshold, normalize};

/// SplitMix64: a small deterministic generator (same seed, same data).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const SYLLABLES: &[&str] = &[
    "ac", "me", "glo", "bex", "ini", "tech", "um", "brel", "la", "so", "ny", "vo", "lux", "zen",
    "tra", "ko", "mar", "ve", "li", "sta", "nor", "di", "ca", "pel", "ro", "qui", "fal", "ter",
    "mo", "nex", "ar", "bo", "cre", "du", "el", "fi", "gen", "ha", "jo", "ki",
];
const ACCENTED: &[&str] = &[
    "Nestlé",
    "Société",
    "Müller",
    "Crème",
    "Señor",
    "Café",
    "Øster",
];
const SUFFIXES: &[&str] = &[
    "", "", "", " Corp", " Inc.", " GmbH", " S.A.", " Ltd", " & Co",
];
const PRODUCTS: &[&str] = &[
    "Cola",
    "Zero",
    "Max",
    "Fresh",
    "Ultra",
    "Phone",
    "Drive",
    "Plus",
    "Pro",
    "Lite",
    "Air",
    "Snack",
    "Bar",
    "Coffee",
    "Energy",
    "Care",
    "Home",
    "Kids",
    "Sport",
    "Bank",
    "Card",
    "Insurance",
    "Travel",
    "Beauty",
    "Skin",
    "Gaming",
    "Stream",
    "Music",
    "Auto",
    "EV",
];
const SEASONS: &[&str] = &[
    "Spring",
    "Summer",
    "Fall",
    "Winter",
    "Holiday",
    "Back to School",
    "Black Friday",
    "Q1",
    "Q2",
    "Q3",
    "Q4",
    "Launch",
    "Always-On",
    "Brand Awareness",
    "Retargeting",
];
const FORMATS: &[&str] = &[
    "Video",
    "Display",
    "CTV",
    "Audio",
    "Native",
    "Social",
    "OLV",
    "DOOH",
    "Search",
    "Rich Media",
];
const MARKETS: &[&str] = &["", "", "US", "UK", "DE", "FR", "CA", "AU", "EMEA", "LATAM"];
const SEPARATORS: &[&str] = &[" ", " - ", " | ", "_", " / "];

fn advertiser(rng: &mut Rng) -> String {
    if rng.chance(5) {
        return format!("{}{}", rng.pick(ACCENTED), rng.pick(SUFFIXES));
    }
    let parts = 2 + rng.below(2);
    let mut name: String = (0..parts).map(|_| rng.pick(SYLLABLES)).collect();
    if let Some(first) = name.get(..1) {
        name = first.to_uppercase() + &name[1..];
    }
    name + rng.pick(SUFFIXES)
}

fn campaign_name(rng: &mut Rng, advertisers: &[String]) -> String {
    let adv = &advertisers[rng.below(advertisers.len())];
    let mut product = rng.pick(PRODUCTS).to_owned();
    if rng.chance(40) {
        product = format!("{product} {}", rng.pick(PRODUCTS));
    }
    let sep = rng.pick(SEPARATORS);
    let year = 2019 + rng.below(8);
    let market = rng.pick(MARKETS);
    let mut name = format!(
        "{adv} {product} {}{sep}{year}{sep}{}",
        rng.pick(SEASONS),
        rng.pick(FORMATS)
    );
    if !market.is_empty() {
        name = format!("{name} ({market})");
    }
    name
}

/// A booking typed by hand from a campaign name: typos and style changes.
fn typo(rng: &mut Rng, name: &str) -> String {
    let mut v: Vec<char> = name.chars().collect();
    let edits = rng.below(4);
    for _ in 0..edits {
        if v.len() < 2 {
            break;
        }
        let p = rng.below(v.len() - 1);
        match rng.below(5) {
            0 => {
                v.remove(p);
            }
            1 => v.swap(p, p + 1),
            2 => v[p] = (b'a' + rng.below(26) as u8) as char,
            3 => v.insert(p, (b'a' + rng.below(26) as u8) as char),
            _ => v[p] = ' ',
        }
    }
    let s: String = v.into_iter().collect();
    match rng.below(4) {
        0 => s.to_lowercase(),
        1 => s.to_uppercase(),
        _ => s,
    }
}

fn write_csv(path: &PathBuf, prefix: &str, names: &[String]) {
    let mut w = BufWriter::new(File::create(path).expect("create csv"));
    writeln!(w, "id,name").unwrap();
    for (i, n) in names.iter().enumerate() {
        writeln!(w, "{prefix}{i},\"{}\"", n.replace('"', "\"\"")).unwrap();
    }
    w.flush().unwrap();
}

fn main() {
    let mut bookings_n = 100_000usize;
    let mut campaigns_n = 100_000usize;
    let mut threshold: Threshold = "0.85".parse().unwrap();
    let mut dir = PathBuf::from("target/bench-matching");
    let mut seed = 42u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--bookings" => bookings_n = val().parse().unwrap(),
            "--campaigns" => campaigns_n = val().parse().unwrap(),
            "--threshold" => threshold = val().parse().unwrap(),
            "--dir" => dir = PathBuf::from(val()),
            "--seed" => seed = val().parse().unwrap(),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&dir).unwrap();

    let mut rng = Rng(seed);
    let advertisers: Vec<String> = (0..2_000).map(|_| advertiser(&mut rng)).collect();
    let mut seen = HashSet::new();
    let mut campaigns = Vec::with_capacity(campaigns_n);
    while campaigns.len() < campaigns_n {
        let n = campaign_name(&mut rng, &advertisers);
        if seen.insert(n.clone()) {
            campaigns.push(n);
        }
    }
    let bookings: Vec<String> = (0..bookings_n)
        .map(|_| {
            if rng.chance(70) {
                let base = campaigns[rng.below(campaigns.len())].clone();
                typo(&mut rng, &base)
            } else {
                campaign_name(&mut rng, &advertisers)
            }
        })
        .collect();
    write_csv(&dir.join("bookings.csv"), "B", &bookings);
    write_csv(&dir.join("campaigns.csv"), "C", &campaigns);
    let nb: Vec<String> = bookings.iter().map(|n| normalize(n)).collect();
    let nc: Vec<String> = campaigns.iter().map(|n| normalize(n)).collect();
    write_csv(&dir.join("bookings_normalized.csv"), "B", &nb);
    write_csv(&dir.join("campaigns_normalized.csv"), "C", &nc);

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    // The 1-minute load average (Linux), so shared-machine runs say so.
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "null".to_owned())
    };
    let load_start = load();
    let t0 = Instant::now();
    let index = FuzzyIndex::new(&campaigns);
    let build = t0.elapsed();
    let t1 = Instant::now();
    let mut pairs = Vec::new();
    for (b, c, s) in index.all_pairs(&bookings, threshold) {
        pairs.push((b as u32, c as u32, s));
    }
    let search = t1.elapsed();
    let total = t0.elapsed();
    let load_end = load();

    let mut w = BufWriter::new(File::create(dir.join("pairs_rust.csv")).unwrap());
    writeln!(w, "booking_id,campaign_id,score").unwrap();
    for (b, c, s) in &pairs {
        writeln!(w, "B{b},C{c},{}/{}", s.numerator(), s.denominator()).unwrap();
    }
    w.flush().unwrap();
    let matched_bookings = {
        let mut v: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        v.dedup();
        v.len()
    };
    let report = format!(
        "{{\"bookings\": {bookings_n}, \"campaigns\": {campaigns_n}, \"threshold\": \"{}/{}\", \
         \"threads\": {threads}, \"index_build_s\": {:.3}, \"search_s\": {:.3}, \"total_s\": {:.3}, \
         \"pairs\": {}, \"bookings_with_a_pair\": {matched_bookings}, \
         \"load_average_start\": {load_start}, \"load_average_end\": {load_end}}}",
        threshold.numerator(),
        threshold.denominator(),
        build.as_secs_f64(),
        search.as_secs_f64(),
        total.as_secs_f64(),
        pairs.len()
    );
    std::fs::write(dir.join("rust.json"), &report).unwrap();
    println!("{report}");
}
