//! Similarity metrics on normalised names (sequences of `char`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::score::Score;

/// How two normalised names are scored.
///
/// Every metric gives an exact [`Score`] in `[0, 1]`; two empty names score 1
/// (they are identical) and an empty name against a non-empty one scores 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Normalised Indel similarity, `2 * LCS / (len1 + len2)` where LCS is the
    /// length of the longest common subsequence (in characters). This is
    /// rapidfuzz's `fuzz.ratio` divided by 100. The default; the only metric
    /// with q-gram filtering in [`FuzzyIndex`](super::FuzzyIndex).
    #[default]
    #[serde(alias = "ratio", alias = "fuzzy")]
    Indel,
    /// Jaro-Winkler: Jaro similarity with the common-prefix bonus (prefix of
    /// up to 4 characters, scaling factor 0.1) applied when Jaro is above 0.7.
    /// Transpositions are half the count of out-of-order matched characters,
    /// rounded down.
    JaroWinkler,
    /// Token-set ratio (rapidfuzz's `fuzz.token_set_ratio` / 100): words are
    /// split on spaces, compared as sets; 1 when one name's words are a
    /// subset of the other's, else the best Indel similarity among
    /// "common words", "common + rest of a" and "common + rest of b".
    #[serde(alias = "token_set_ratio")]
    TokenSet,
}

impl Metric {
    /// The metric's configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Indel => "indel",
            Metric::JaroWinkler => "jaro_winkler",
            Metric::TokenSet => "token_set",
        }
    }

    /// Scores two normalised names.
    ///
    /// ```
    /// use crm_core::matching::{Metric, Score};
    ///
    /// let a: Vec<char> = "spring sale".chars().collect();
    /// let b: Vec<char> = "spring sales".chars().collect();
    /// assert_eq!(Metric::Indel.score(&a, &b), Score::new(22, 23));
    /// ```
    pub fn score(self, a: &[char], b: &[char]) -> Score {
        match self {
            Metric::Indel => indel(a, b),
            Metric::JaroWinkler => jaro_winkler(a, b),
            Metric::TokenSet => token_set(a, b),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalised Indel similarity of two sequences.
pub(crate) fn indel(a: &[char], b: &[char]) -> Score {
    let (p, t) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let lcs = Pattern::new(p).lcs(t);
    indel_score(lcs, a.len() + b.len())
}

/// The Indel score for an LCS length and a length sum.
pub(crate) fn indel_score(lcs: usize, len_sum: usize) -> Score {
    Score::new(2 * lcs as u128, len_sum as u128)
}

/// Bit masks of a pattern's character positions, for the bit-parallel LCS
/// of Allison-Dix / Hyyrö (one 64-bit word per 64 pattern characters).
#[derive(Clone, Debug, Default)]
pub(crate) struct Pattern {
    len: usize,
    words: usize,
    /// `ascii[c * words + w]`: positions of ASCII `c` in word `w`.
    ascii: Vec<u64>,
    /// Non-ASCII characters, sorted, with an offset into `other_bits`.
    other: Vec<(char, usize)>,
    other_bits: Vec<u64>,
    /// Per-word scratch for the multi-word LCS.
    v: Vec<u64>,
}

impl Pattern {
    /// Builds the masks of `p`.
    pub(crate) fn new(p: &[char]) -> Pattern {
        let mut pattern = Pattern::default();
        pattern.set(p);
        pattern
    }

    /// Rebuilds the masks for `p`, reusing the buffers.
    pub(crate) fn set(&mut self, p: &[char]) {
        self.len = p.len();
        self.words = p.len().div_ceil(64);
        self.ascii.clear();
        self.ascii.resize(128 * self.words, 0);
        self.other.clear();
        self.other_bits.clear();
        for &c in p {
            if !c.is_ascii() && self.other.iter().all(|(o, _)| *o != c) {
                self.other.push((c, 0));
            }
        }
        self.other.sort_unstable();
        for (i, (_, off)) in self.other.iter_mut().enumerate() {
            *off = i * self.words;
        }
        self.other_bits.resize(self.other.len() * self.words, 0);
        for (i, &c) in p.iter().enumerate() {
            let (w, bit) = (i / 64, 1u64 << (i % 64));
            if c.is_ascii() {
                self.ascii[c as usize * self.words + w] |= bit;
            } else if let Ok(k) = self.other.binary_search_by(|(o, _)| o.cmp(&c)) {
                let off = self.other[k].1;
                self.other_bits[off + w] |= bit;
            }
        }
    }

    #[inline]
    fn mask(&self, c: char, w: usize) -> u64 {
        if c.is_ascii() {
            self.ascii[c as usize * self.words + w]
        } else {
            match self.other.binary_search_by(|(o, _)| o.cmp(&c)) {
                Ok(k) => self.other_bits[self.other[k].1 + w],
                Err(_) => 0,
            }
        }
    }

    /// Length of the longest common subsequence of the pattern and `text`.
    pub(crate) fn lcs(&mut self, text: &[char]) -> usize {
        match self.words {
            0 => 0,
            1 => {
                let mut v = !0u64;
                for &c in text {
                    let m = self.mask(c, 0);
                    let u = v & m;
                    v = v.wrapping_add(u) | (v & !m);
                }
                (!v & low_bits(self.len)).count_ones() as usize
            }
            words => {
                let mut v = std::mem::take(&mut self.v);
                v.clear();
                v.resize(words, !0u64);
                for &c in text {
                    let mut carry = false;
                    for (w, vw) in v.iter_mut().enumerate() {
                        let m = self.mask(c, w);
                        let u = *vw & m;
                        let (s1, c1) = vw.overflowing_add(u);
                        let (s2, c2) = s1.overflowing_add(u64::from(carry));
                        carry = c1 || c2;
                        *vw = s2 | (*vw & !m);
                    }
                }
                let last = words - 1;
                let mut lcs = 0usize;
                for (w, vw) in v.iter().enumerate() {
                    let mask = if w == last {
                        low_bits(self.len - 64 * last)
                    } else {
                        !0
                    };
                    lcs += (!vw & mask).count_ones() as usize;
                }
                self.v = v;
                lcs
            }
        }
    }
}

/// A mask of the `n` lowest bits (`n` in `1..=64`).
fn low_bits(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1u64 << n) - 1 }
}

/// Jaro-Winkler similarity.
pub(crate) fn jaro_winkler(a: &[char], b: &[char]) -> Score {
    let (l1, l2) = (a.len(), b.len());
    if l1 == 0 && l2 == 0 {
        return Score::ONE;
    }
    if l1 == 0 || l2 == 0 {
        return Score::ZERO;
    }
    let window = (l1.max(l2) / 2).saturating_sub(1);
    let mut b_used = vec![false; l2];
    let mut a_matched = Vec::with_capacity(l1.min(l2));
    for (i, &c) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(l2);
        for j in lo..hi {
            if !b_used[j] && b[j] == c {
                b_used[j] = true;
                a_matched.push(c);
                break;
            }
        }
    }
    let m = a_matched.len();
    if m == 0 {
        return Score::ZERO;
    }
    let b_matched = b.iter().zip(&b_used).filter(|(_, u)| **u).map(|(c, _)| *c);
    let half = a_matched
        .iter()
        .zip(b_matched)
        .filter(|(x, y)| **x != *y)
        .count();
    let t = half / 2;
    let (m, l1, l2, t) = (m as u128, l1 as u128, l2 as u128, t as u128);
    // jaro = (m/l1 + m/l2 + (m - t)/m) / 3 = num / den
    let num = m * m * l2 + m * m * l1 + (m - t) * l1 * l2;
    let den = 3 * l1 * l2 * m;
    // The prefix bonus applies when jaro > 0.7.
    if 10 * num <= 7 * den {
        return Score::new(num, den);
    }
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count() as u128;
    // jw = jaro + prefix * 0.1 * (1 - jaro)
    Score::new(num * (10 - prefix) + prefix * den, 10 * den)
}

/// Token-set ratio.
pub(crate) fn token_set(a: &[char], b: &[char]) -> Score {
    if a.is_empty() && b.is_empty() {
        return Score::ONE;
    }
    let mut ta: Vec<&[char]> = a.split(|c| *c == ' ').filter(|t| !t.is_empty()).collect();
    let mut tb: Vec<&[char]> = b.split(|c| *c == ' ').filter(|t| !t.is_empty()).collect();
    ta.sort_unstable();
    ta.dedup();
    tb.sort_unstable();
    tb.dedup();
    if ta.is_empty() || tb.is_empty() {
        return Score::ZERO;
    }
    let common: Vec<&[char]> = ta.iter().filter(|t| tb.contains(t)).copied().collect();
    let only_a: Vec<&[char]> = ta.iter().filter(|t| !tb.contains(t)).copied().collect();
    let only_b: Vec<&[char]> = tb.iter().filter(|t| !ta.contains(t)).copied().collect();
    if !common.is_empty() && (only_a.is_empty() || only_b.is_empty()) {
        return Score::ONE;
    }
    let join = |parts: &[&[char]]| -> Vec<char> { parts.join(&' ') };
    let sect = join(&common);
    let with = |rest: &[&[char]]| -> Vec<char> {
        let mut s = sect.clone();
        if !s.is_empty() {
            s.push(' ');
        }
        s.extend(join(rest));
        s
    };
    let ab = with(&only_a);
    let ba = with(&only_b);
    let mut best = indel(&ab, &ba);
    if !sect.is_empty() {
        best = best.max(indel(&sect, &ab)).max(indel(&sect, &ba));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    /// Textbook O(n*m) LCS, the reference for the bit-parallel one.
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

    #[test]
    fn bit_parallel_lcs_matches_dynamic_programming() {
        let cases = [
            ("", ""),
            ("a", ""),
            ("abc", "abc"),
            ("kitten", "sitting"),
            ("spring sale 2024", "sprng sale 2042"),
            ("éèê ü", "eéü"),
        ];
        for (a, b) in cases {
            let (a, b) = (chars(a), chars(b));
            assert_eq!(Pattern::new(&a).lcs(&b), lcs_dp(&a, &b));
        }
        // Multi-word patterns (> 64 and > 128 characters).
        let long_a: Vec<char> = "acme spring sale video 2024 ".repeat(6).chars().collect();
        let long_b: Vec<char> = "acme sprin sale vdeo 2023 x".repeat(5).chars().collect();
        assert!(long_a.len() > 128);
        assert_eq!(Pattern::new(&long_a).lcs(&long_b), lcs_dp(&long_a, &long_b));
        assert_eq!(Pattern::new(&long_b).lcs(&long_a), lcs_dp(&long_a, &long_b));
        let exactly_64: Vec<char> = "x".repeat(63).chars().chain(['é']).collect();
        assert_eq!(Pattern::new(&exactly_64).lcs(&exactly_64), 64);
    }

    #[test]
    fn indel_is_rapidfuzz_ratio() {
        // fuzz.ratio("this is a test", "this is a test!") == 96.55...
        assert_eq!(
            indel(&chars("this is a test"), &chars("this is a test!")),
            Score::new(28, 29)
        );
        assert_eq!(indel(&chars(""), &chars("")), Score::ONE);
        assert_eq!(indel(&chars("a"), &chars("")), Score::ZERO);
    }

    #[test]
    fn jaro_winkler_known_values() {
        // Classic examples: MARTHA/MARHTA jaro 0.9444, jw 0.9611.
        let s = jaro_winkler(&chars("martha"), &chars("marhta"));
        assert_eq!(s, Score::new(173, 180));
        // DIXON/DICKSONX: jaro 0.7667, jw 0.8133.
        let s = jaro_winkler(&chars("dixon"), &chars("dicksonx"));
        assert_eq!(s, Score::new(61, 75));
        assert_eq!(jaro_winkler(&chars("abc"), &chars("xyz")), Score::ZERO);
        assert_eq!(jaro_winkler(&chars("same"), &chars("same")), Score::ONE);
    }

    #[test]
    fn token_set_ratio_cases() {
        let s = token_set(&chars("acme spring sale"), &chars("spring sale acme 2024"));
        assert_eq!(s, Score::ONE);
        let s = token_set(
            &chars("fuzzy wuzzy was a bear"),
            &chars("fuzzy fuzzy was a bear"),
        );
        assert_eq!(s, Score::ONE);
        // common "b", rest "a" vs "c": ratio("b a", "b c") = 4/6.
        let s = token_set(&chars("a b"), &chars("b c"));
        assert_eq!(s, Score::new(2, 3));
        assert_eq!(token_set(&chars("x"), &chars("")), Score::ZERO);
    }
}
