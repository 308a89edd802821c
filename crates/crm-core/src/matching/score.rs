//! Exact similarity scores and thresholds.
//!
//! A [`Score`] is a fraction `num / den` in `[0, 1]`, compared exactly (no
//! float rounding), so a pair scoring exactly the threshold is always kept and
//! one scoring a hair below is always dropped, whichever API computed it.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A similarity in `[0, 1]`, held as an exact fraction.
///
/// Equality and ordering compare the fractions' values (`2/4 == 1/2`).
/// [`Score::as_f64`] gives a float for display and reports only.
///
/// ```
/// use crm_core::matching::{Score, Threshold};
///
/// let s = Score::new(17, 20); // 2 * LCS / (len1 + len2) = 34 / 40
/// let t: Threshold = "0.85".parse().unwrap();
/// assert!(t.accepts(s));
/// assert!(!t.accepts(Score::new(169, 200)));
/// assert_eq!(s.as_f64(), 0.85);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Score {
    num: u128,
    den: u128,
}

impl Score {
    /// The score of identical inputs.
    pub const ONE: Score = Score { num: 1, den: 1 };
    /// The score of inputs with nothing in common.
    pub const ZERO: Score = Score { num: 0, den: 1 };

    /// `num / den`, clamped into `[0, 1]`; a zero denominator means 1
    /// (two empty inputs are identical).
    pub fn new(num: u128, den: u128) -> Score {
        if den == 0 || num >= den {
            return Score::ONE;
        }
        if num == 0 {
            return Score::ZERO;
        }
        let g = gcd(num, den);
        Score {
            num: num / g,
            den: den / g,
        }
    }

    /// The numerator of the reduced fraction.
    pub fn numerator(self) -> u128 {
        self.num
    }

    /// The denominator of the reduced fraction (never zero).
    pub fn denominator(self) -> u128 {
        self.den
    }

    /// The score as a float (for display; comparisons use the exact fraction).
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// True if the score is exactly 1.
    pub fn is_one(self) -> bool {
        self.num == self.den
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_fractions(self.num, self.den, other.num, other.den)
    }
}

impl std::hash::Hash for Score {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Scores are always reduced, so equal values have equal parts.
        self.num.hash(state);
        self.den.hash(state);
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}", self.as_f64())
    }
}

impl Serialize for Score {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// Compares `a/b` with `c/d` exactly and without overflow (continued
/// fraction expansion). Denominators must be non-zero.
fn cmp_fractions(mut a: u128, mut b: u128, mut c: u128, mut d: u128) -> Ordering {
    // `flip` tracks whether the comparison direction is reversed, which
    // happens each time both fractions are inverted.
    let mut flip = false;
    loop {
        let (qa, qc) = (a / b, c / d);
        if qa != qc {
            let o = qa.cmp(&qc);
            return if flip { o.reverse() } else { o };
        }
        let (ra, rc) = (a % b, c % d);
        let o = match (ra == 0, rc == 0) {
            (true, true) => return Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => {
                // a/b = q + ra/b and c/d = q + rc/d: compare ra/b with rc/d,
                // i.e. b/ra with d/rc reversed.
                (a, b, c, d) = (b, ra, d, rc);
                flip = !flip;
                continue;
            }
        };
        return if flip { o.reverse() } else { o };
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A similarity threshold in `[0, 1]`, held as an exact decimal fraction.
///
/// Parsed from its decimal text (`0.85` is exactly 85/100, not the nearest
/// float), from YAML/JSON numbers (through their shortest decimal text) or
/// from strings. [`Threshold::accepts`] is `score >= threshold`, exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Threshold {
    num: u64,
    den: u64,
}

impl Threshold {
    /// Every score passes.
    pub const ZERO: Threshold = Threshold { num: 0, den: 1 };
    /// Only identical inputs pass.
    pub const ONE: Threshold = Threshold { num: 1, den: 1 };

    /// `num / den` (kept reduced, so equal thresholds compare equal).
    ///
    /// # Errors
    /// A message when `den` is zero or the fraction is above 1.
    pub fn from_fraction(num: u64, den: u64) -> Result<Threshold, String> {
        if den == 0 {
            return Err("threshold denominator is zero".to_owned());
        }
        if num > den {
            return Err(format!(
                "threshold {num}/{den} is above 1 (thresholds are in [0, 1], e.g. 0.85)"
            ));
        }
        let g = gcd(u128::from(num), u128::from(den)) as u64;
        let g = g.max(1);
        Ok(Threshold {
            num: num / g,
            den: den / g,
        })
    }

    /// The threshold for a percentage cut-off such as rapidfuzz's
    /// `score_cutoff=85`.
    ///
    /// # Errors
    /// A message when `percent` is above 100.
    pub fn from_percent(percent: u64) -> Result<Threshold, String> {
        Threshold::from_fraction(percent, 100)
    }

    /// The numerator.
    pub fn numerator(self) -> u64 {
        self.num
    }

    /// The denominator (never zero).
    pub fn denominator(self) -> u64 {
        self.den
    }

    /// The threshold as a float (for display).
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// True if `score >= self`, compared exactly.
    pub fn accepts(self, score: Score) -> bool {
        cmp_fractions(
            score.num,
            score.den,
            u128::from(self.num),
            u128::from(self.den),
        ) != Ordering::Less
    }
}

impl Default for Threshold {
    /// 0.85, seed 000's `crm.matching.fuzzy_threshold`.
    fn default() -> Self {
        Threshold { num: 17, den: 20 }
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    /// Parses a plain decimal such as `0.85`, `1`, `.9` or `0.875`.
    fn from_str(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let bad = || format!("threshold `{text}` is not a decimal number in [0, 1], e.g. 0.85");
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 18
        {
            return Err(bad());
        }
        let frac = frac.trim_end_matches('0');
        let den = 10u64.pow(frac.len() as u32);
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let f: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        let num = int
            .checked_mul(den)
            .and_then(|v| v.checked_add(f))
            .ok_or_else(bad)?;
        Threshold::from_fraction(num, den)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Threshold, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            // `{}` prints the shortest decimal that reads back as the same
            // float, i.e. what was written in the file (`0.85`).
            Raw::Float(f) => format!("{f}"),
            Raw::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}
