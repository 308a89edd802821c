//! [`FuzzyIndex`]: threshold search over names without an N x M scan.
//!
//! # How the search stays exact
//!
//! For the default [`Metric::Indel`] similarity `2 * LCS / (l1 + l2)` and a
//! threshold `t = n / d`, a name of length `l2` can only reach `t` against a
//! query of length `l1` if:
//!
//! * **length filter**: `2 * min(l1, l2) * d >= n * (l1 + l2)`, since the LCS
//!   is at most the shorter length. The lengths passing form one interval,
//!   and names are stored sorted by length, so it is an id range.
//! * **q-gram count filter**: let `L` be the LCS and `C` a common
//!   subsequence of that length. `C` has `L - q + 1` q-grams. Deleting the
//!   `l1 - L` characters of the query that are not in `C` opens at most
//!   `l1 - L` gaps between neighbouring characters of `C`, and each gap breaks
//!   at most `q - 1` of `C`'s q-grams; likewise on the name's side. The
//!   unbroken q-grams occur in both strings, so the two strings share at least
//!   `(L - q + 1) - (q - 1) * (l1 + l2 - 2L)` q-grams (multiset count). This is
//!   increasing in `L`, so with `Lmin = ceil(n * (l1 + l2) / (2d))` every
//!   passing name shares at least `need = (2q - 1) * Lmin - (q - 1) * (l1 + l2)
//!   - (q - 1)` q-grams with the query.
//! * **prefix filter**: if a name must share `need >= 1` of the query's `|Q|`
//!   q-grams, it shares at least one of any `|Q| - need + 1` of them. The
//!   query's q-grams are ordered rarest first (by how many names contain
//!   them), and only that prefix's posting lists are read.
//!
//! Lengths whose `need` is below 1 (very short names, low thresholds) cannot
//! be pruned by q-grams, so every name of those lengths is a candidate. Each
//! query picks q = 2 or q = 3 (both are indexed), whichever reads fewer
//! postings. Every candidate is then scored exactly (bit-parallel LCS) and
//! compared with the threshold in integer arithmetic. The filters only drop
//! names that provably fail, so the result is exactly the brute-force set;
//! the property tests check this against [`FuzzyIndex::brute_force`].
//!
//! The other metrics ([`Metric::JaroWinkler`], [`Metric::TokenSet`]) have no
//! q-gram bound here: their search scores every name (still exact).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::metric::{Metric, Pattern, indel_score};
use super::normalize::normalize;
use super::score::{Score, Threshold};

/// A multiplicative hasher for the packed q-gram keys (they are already
/// well-spread integers; SipHash would dominate the query time).
#[derive(Default, Clone, Copy)]
struct GramHasher(u64);

impl Hasher for GramHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

type GramMap = HashMap<u64, u32, BuildHasherDefault<GramHasher>>;

/// Packs the q-gram starting at `i` into one integer (21 bits per char).
#[inline]
fn gram_key(s: &[char], i: usize, q: usize) -> u64 {
    s[i..i + q]
        .iter()
        .fold(0u64, |k, &c| (k << 21) | u64::from(u32::from(c)))
}

/// An inverted index of one q-gram size: gram -> ids of the names holding
/// it, ascending (internal ids, i.e. sorted by length).
#[derive(Debug, Clone)]
struct GramIndex {
    q: usize,
    ids: GramMap,
    offsets: Vec<u32>,
    postings: Vec<u32>,
}

impl GramIndex {
    fn build(q: usize, names: &[&[char]]) -> GramIndex {
        let mut ids = GramMap::default();
        let mut counts: Vec<u32> = Vec::new();
        let mut keys: Vec<u64> = Vec::new();
        let mut per_name: Vec<Vec<u32>> = Vec::with_capacity(names.len());
        for name in names {
            keys.clear();
            if name.len() >= q {
                keys.extend((0..=name.len() - q).map(|i| gram_key(name, i, q)));
            }
            keys.sort_unstable();
            keys.dedup();
            let mut grams = Vec::with_capacity(keys.len());
            for k in &keys {
                let next = ids.len() as u32;
                let id = *ids.entry(*k).or_insert(next);
                if id as usize == counts.len() {
                    counts.push(0);
                }
                counts[id as usize] += 1;
                grams.push(id);
            }
            per_name.push(grams);
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u32;
        offsets.push(0);
        for c in &counts {
            total += c;
            offsets.push(total);
        }
        let mut fill: Vec<u32> = offsets[..counts.len()].to_vec();
        let mut postings = vec![0u32; total as usize];
        for (name_id, grams) in per_name.iter().enumerate() {
            for &g in grams {
                postings[fill[g as usize] as usize] = name_id as u32;
                fill[g as usize] += 1;
            }
        }
        GramIndex {
            q,
            ids,
            offsets,
            postings,
        }
    }

    fn postings(&self, gram: u32) -> &[u32] {
        let (a, b) = (
            self.offsets[gram as usize] as usize,
            self.offsets[gram as usize + 1] as usize,
        );
        &self.postings[a..b]
    }
}

/// An index over a list of names for threshold searches.
///
/// Names are normalised with [`normalize`] when the index is built, and
/// queries when searched. Results are indexes into the list given to
/// [`FuzzyIndex::new`], in ascending order, with their exact [`Score`].
///
/// ```
/// use crm_core::matching::{FuzzyIndex, Threshold};
///
/// let index = FuzzyIndex::new(["Acme Spring Sale 2024", "Globex Summer Video", "ACME spring-sale 2025"]);
/// let t: Threshold = "0.85".parse().unwrap();
/// let hits: Vec<usize> = index.search("acme spring sale 2024!", t).map(|(i, _)| i).collect();
/// assert_eq!(hits, vec![0, 2]);
/// assert_eq!(hits, index.brute_force("acme spring sale 2024!", t).into_iter().map(|(i, _)| i).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone)]
pub struct FuzzyIndex {
    metric: Metric,
    /// All normalised names, in internal (length-sorted) order, back to back.
    chars: Vec<char>,
    /// `chars[starts[i]..starts[i + 1]]` is internal name `i`.
    starts: Vec<usize>,
    /// Internal id -> position in the caller's list.
    original: Vec<u32>,
    /// Distinct lengths, ascending, with the first internal id of each and
    /// a final sentinel `(usize::MAX, n)`.
    lengths: Vec<(usize, u32)>,
    bigrams: GramIndex,
    trigrams: GramIndex,
}

impl FuzzyIndex {
    /// Builds an index over `names` with the default metric ([`Metric::Indel`]).
    pub fn new<I, S>(names: I) -> FuzzyIndex
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        FuzzyIndex::with_metric(names, Metric::Indel)
    }

    /// Builds an index over `names` scored with `metric`.
    pub fn with_metric<I, S>(names: I, metric: Metric) -> FuzzyIndex
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let normalised: Vec<Vec<char>> = names
            .into_iter()
            .map(|n| normalize(n.as_ref()).chars().collect())
            .collect();
        FuzzyIndex::from_normalized(normalised, metric)
    }

    fn from_normalized(names: Vec<Vec<char>>, metric: Metric) -> FuzzyIndex {
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_by_key(|&i| (names[i as usize].len(), i));
        let mut chars = Vec::with_capacity(names.iter().map(Vec::len).sum());
        let mut starts = Vec::with_capacity(names.len() + 1);
        let mut lengths: Vec<(usize, u32)> = Vec::new();
        for (internal, &i) in order.iter().enumerate() {
            let name = &names[i as usize];
            if lengths.last().is_none_or(|(l, _)| *l != name.len()) {
                lengths.push((name.len(), internal as u32));
            }
            starts.push(chars.len());
            chars.extend_from_slice(name);
        }
        starts.push(chars.len());
        lengths.push((usize::MAX, order.len() as u32));
        let slices: Vec<&[char]> = (0..order.len())
            .map(|i| &chars[starts[i]..starts[i + 1]])
            .collect();
        let (bigrams, trigrams) = if metric == Metric::Indel {
            (GramIndex::build(2, &slices), GramIndex::build(3, &slices))
        } else {
            (GramIndex::build(2, &[]), GramIndex::build(3, &[]))
        };
        FuzzyIndex {
            metric,
            chars,
            starts,
            original: order,
            lengths,
            bigrams,
            trigrams,
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.original.len()
    }

    /// True if the index holds no names.
    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }

    /// The metric scores are computed with.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    fn internal(&self, id: usize) -> &[char] {
        &self.chars[self.starts[id]..self.starts[id + 1]]
    }

    /// A reusable search state; searching many queries through one
    /// [`Searcher`] avoids per-query allocation.
    pub fn searcher(&self) -> Searcher<'_> {
        Searcher {
            index: self,
            stamps: vec![0; self.len()],
            stamp: 0,
            pattern: Pattern::default(),
            query: Vec::new(),
            grams: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The names scoring at least `threshold` against `name` (normalised
    /// first), as `(index, score)` in ascending index order. Exactly the set
    /// [`FuzzyIndex::brute_force`] returns.
    pub fn search(
        &self,
        name: &str,
        threshold: Threshold,
    ) -> impl Iterator<Item = (usize, Score)> + use<> {
        let mut out = Vec::new();
        self.searcher().search_into(name, threshold, &mut out);
        out.into_iter()
    }

    /// The reference: scores `name` (normalised first) against every name and
    /// keeps those at or above `threshold`, in ascending index order.
    pub fn brute_force(&self, name: &str, threshold: Threshold) -> Vec<(usize, Score)> {
        let query: Vec<char> = normalize(name).chars().collect();
        let mut out: Vec<(usize, Score)> = (0..self.len())
            .filter_map(|id| {
                let s = self.metric.score(&query, self.internal(id));
                threshold
                    .accepts(s)
                    .then_some((self.original[id] as usize, s))
            })
            .collect();
        out.sort_unstable_by_key(|(i, _)| *i);
        out
    }

    /// Every `(query index, name index, score)` with score at or above
    /// `threshold`, ordered by query then name index, computed in parallel
    /// (all available cores) one block of queries at a time so memory stays
    /// bounded by the block's results, never by `queries x names`.
    pub fn all_pairs<'a, S: AsRef<str> + Sync>(
        &'a self,
        queries: &'a [S],
        threshold: Threshold,
    ) -> AllPairs<'a, S> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        AllPairs {
            index: self,
            queries,
            threshold,
            threads,
            next: 0,
            buffer: Vec::new(),
            pos: 0,
        }
    }
}

/// Scratch state for repeated searches of one [`FuzzyIndex`].
#[derive(Debug)]
pub struct Searcher<'a> {
    index: &'a FuzzyIndex,
    stamps: Vec<u32>,
    stamp: u32,
    pattern: Pattern,
    query: Vec<char>,
    /// The query's q-grams: (document frequency, gram id or none).
    grams: Vec<(u32, Option<u32>)>,
    candidates: Vec<u32>,
}

impl Searcher<'_> {
    /// Like [`FuzzyIndex::search`], appending to `out` (which is not cleared).
    pub fn search_into(&mut self, name: &str, threshold: Threshold, out: &mut Vec<(usize, Score)>) {
        let mut query = std::mem::take(&mut self.query);
        query.clear();
        query.extend(normalize(name).chars());
        self.search_normalized(&query, threshold, out);
        self.query = query;
    }

    /// Searches an already normalised query (see [`normalize`]).
    pub fn search_normalized(
        &mut self,
        query: &[char],
        threshold: Threshold,
        out: &mut Vec<(usize, Score)>,
    ) {
        let start = out.len();
        if self.index.metric == Metric::Indel {
            self.search_indel(query, threshold, out);
        } else {
            let index = self.index;
            for id in 0..index.len() {
                let s = index.metric.score(query, index.internal(id));
                if threshold.accepts(s) {
                    out.push((index.original[id] as usize, s));
                }
            }
        }
        out[start..].sort_unstable_by_key(|(i, _)| *i);
    }

    fn next_stamp(&mut self) -> u32 {
        if self.stamp == u32::MAX {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.stamp = 0;
        }
        self.stamp += 1;
        self.stamp
    }

    fn search_indel(&mut self, query: &[char], t: Threshold, out: &mut Vec<(usize, Score)>) {
        let index = self.index;
        let (n, d) = (u128::from(t.numerator()), u128::from(t.denominator()));
        let l1 = query.len();
        // Buckets of lengths passing the length filter, with their minimum LCS.
        let passes = |l2: usize| {
            let sum = (l1 + l2) as u128;
            2 * (l1.min(l2) as u128) * d >= n * sum
        };
        let lmin = |l2: usize| {
            let sum = (l1 + l2) as u128;
            (n * sum).div_ceil(2 * d)
        };
        let need = |q: usize, l2: usize| -> i128 {
            let (q, sum) = (q as i128, (l1 + l2) as i128);
            (2 * q - 1) * lmin(l2) as i128 - (q - 1) * sum - (q - 1)
        };
        let buckets: Vec<(usize, usize, usize)> = index
            .lengths
            .windows(2)
            .filter(|w| passes(w[0].0))
            .map(|w| (w[0].0, w[0].1 as usize, w[1].1 as usize))
            .collect();
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return;
        };
        let (lo, hi) = (first.1 as u32, last.2 as u32);

        // Pick the q-gram size reading the fewest postings.
        let mut best: Option<(u64, usize, i128)> = None; // (cost, q, tau)
        for gi in [&index.bigrams, &index.trigrams] {
            let q = gi.q;
            let tau = buckets
                .iter()
                .map(|b| need(q, b.0))
                .filter(|&x| x >= 1)
                .min();
            let scanned: u64 = buckets
                .iter()
                .filter(|b| need(q, b.0) < 1)
                .map(|b| (b.2 - b.1) as u64)
                .sum();
            let probe = match tau {
                Some(tau) => {
                    self.load_grams(gi, query);
                    let prefix = prefix_len(self.grams.len(), tau);
                    self.grams[..prefix].iter().map(|g| u64::from(g.0)).sum()
                }
                None => 0,
            };
            let cost = scanned + probe;
            if best.is_none_or(|b| cost < b.0) {
                best = Some((cost, q, tau.unwrap_or(0)));
            }
        }
        let Some((_, q, tau)) = best else { return };
        let gi = if q == 2 {
            &index.bigrams
        } else {
            &index.trigrams
        };

        let stamp = self.next_stamp();
        self.candidates.clear();
        if tau >= 1 {
            self.load_grams(gi, query);
            let prefix = prefix_len(self.grams.len(), tau);
            for &(_, gram) in &self.grams[..prefix] {
                let Some(gram) = gram else { continue };
                let list = gi.postings(gram);
                let a = list.partition_point(|&id| id < lo);
                let b = list.partition_point(|&id| id < hi);
                for &id in &list[a..b] {
                    let s = &mut self.stamps[id as usize];
                    if *s != stamp {
                        *s = stamp;
                        self.candidates.push(id);
                    }
                }
            }
        }
        for b in buckets.iter().filter(|b| need(q, b.0) < 1) {
            for id in b.1 as u32..b.2 as u32 {
                let s = &mut self.stamps[id as usize];
                if *s != stamp {
                    *s = stamp;
                    self.candidates.push(id);
                }
            }
        }

        // Verify every candidate exactly.
        self.pattern.set(query);
        for &id in &self.candidates {
            let name = index.internal(id as usize);
            let lcs = self.pattern.lcs(name);
            let sum = (l1 + name.len()) as u128;
            if 2 * (lcs as u128) * d >= n * sum {
                out.push((
                    index.original[id as usize] as usize,
                    indel_score(lcs, l1 + name.len()),
                ));
            }
        }
        debug_assert_eq!(self.pattern.len(), l1);
    }

    /// Fills `self.grams` with the query's q-grams (with repeats), rarest first.
    fn load_grams(&mut self, gi: &GramIndex, query: &[char]) {
        self.grams.clear();
        if query.len() >= gi.q {
            for i in 0..=query.len() - gi.q {
                let key = gram_key(query, i, gi.q);
                let entry = match gi.ids.get(&key) {
                    Some(&g) => (gi.offsets[g as usize + 1] - gi.offsets[g as usize], Some(g)),
                    None => (0, None),
                };
                self.grams.push(entry);
            }
        }
        self.grams.sort_unstable();
    }
}

/// How many of `total` q-grams (rarest first) must be probed so that a name
/// sharing `tau` of them shares at least one probed.
fn prefix_len(total: usize, tau: i128) -> usize {
    let p = total as i128 - tau + 1;
    p.clamp(0, total as i128) as usize
}

/// The streamed output of [`FuzzyIndex::all_pairs`] and [`all_pairs`].
#[derive(Debug)]
pub struct AllPairs<'a, S> {
    index: &'a FuzzyIndex,
    queries: &'a [S],
    threshold: Threshold,
    threads: usize,
    next: usize,
    buffer: Vec<(usize, usize, Score)>,
    pos: usize,
}

/// Queries per thread in one block of [`AllPairs`].
const BLOCK_PER_THREAD: usize = 1024;

impl<S: AsRef<str> + Sync> AllPairs<'_, S> {
    /// Uses at most `threads` threads (at least one).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    fn fill(&mut self) {
        self.buffer.clear();
        self.pos = 0;
        let end = (self.next + self.threads * BLOCK_PER_THREAD).min(self.queries.len());
        let block = &self.queries[self.next..end];
        let base = self.next;
        self.next = end;
        let (index, t) = (self.index, self.threshold);
        let chunk = block.len().div_ceil(self.threads).max(1);
        let run = |offset: usize, part: &[S]| {
            let mut searcher = index.searcher();
            let mut hits = Vec::new();
            let mut out = Vec::new();
            for (k, q) in part.iter().enumerate() {
                hits.clear();
                searcher.search_into(q.as_ref(), t, &mut hits);
                out.extend(hits.iter().map(|&(c, s)| (offset + k, c, s)));
            }
            out
        };
        if self.threads == 1 || block.len() <= 1 {
            self.buffer = run(base, block);
            return;
        }
        let results: Vec<Vec<(usize, usize, Score)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = block
                .chunks(chunk)
                .enumerate()
                .map(|(i, part)| {
                    let run = &run;
                    scope.spawn(move || run(base + i * chunk, part))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for r in results {
            self.buffer.extend(r);
        }
    }
}

impl<S: AsRef<str> + Sync> Iterator for AllPairs<'_, S> {
    type Item = (usize, usize, Score);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos >= self.buffer.len() {
            if self.next >= self.queries.len() {
                return None;
            }
            self.fill();
        }
        let item = self.buffer[self.pos];
        self.pos += 1;
        Some(item)
    }
}

/// Every `(booking index, campaign index, score)` whose normalised names
/// score at least `threshold` with the default metric, ordered by booking
/// then campaign index. Builds a [`FuzzyIndex`] over `campaigns` and streams
/// [`FuzzyIndex::all_pairs`]; what `crm-sync match --all-pairs` writes.
///
/// ```
/// use crm_core::matching::{all_pairs, Threshold};
///
/// let bookings = ["Acme Spring Sale", "Initech Q3"];
/// let campaigns = ["ACME spring sale", "Initech Q4 Video", "acme sprng sale"];
/// let pairs: Vec<(usize, usize)> = all_pairs(&bookings, &campaigns, Threshold::default())
///     .map(|(b, c, _)| (b, c))
///     .collect();
/// assert_eq!(pairs, vec![(0, 0), (0, 2)]);
/// ```
pub fn all_pairs<S, T>(
    bookings: &[S],
    campaigns: &[T],
    threshold: Threshold,
) -> impl Iterator<Item = (usize, usize, Score)>
where
    S: AsRef<str> + Sync,
    T: AsRef<str>,
{
    let index = FuzzyIndex::new(campaigns);
    OwnedAllPairs {
        index,
        bookings,
        threshold,
        next: 0,
        buffer: Vec::new(),
        pos: 0,
    }
}

/// [`all_pairs`]'s iterator: owns its index and borrows the queries.
struct OwnedAllPairs<'q, S> {
    index: FuzzyIndex,
    bookings: &'q [S],
    threshold: Threshold,
    next: usize,
    buffer: Vec<(usize, usize, Score)>,
    pos: usize,
}

impl<S: AsRef<str> + Sync> Iterator for OwnedAllPairs<'_, S> {
    type Item = (usize, usize, Score);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos >= self.buffer.len() {
            if self.next >= self.bookings.len() {
                return None;
            }
            // One block through the borrowed iterator, then keep its output.
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            let end = (self.next + threads * BLOCK_PER_THREAD).min(self.bookings.len());
            let base = self.next;
            self.buffer = self
                .index
                .all_pairs(&self.bookings[base..end], self.threshold)
                .map(|(b, c, s)| (base + b, c, s))
                .collect();
            self.pos = 0;
            self.next = end;
        }
        let item = self.buffer[self.pos];
        self.pos += 1;
        Some(item)
    }
}
