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
//! * **count**: each query bigram occurrence the name also contains adds
//!   one, an upper bound of the shared multiset count, so a passing name
//!   reaches `need` (with q = 2).
//!
//! The counts of all names in the length interval are kept as bit-sliced
//! counters (one 64-bit word per plane covers 64 names): a bigram held by
//! many names is a dense bitset added to the counters word by word, a rare
//! one is a posting list. Names whose count reaches `need` are candidates.
//! Lengths whose `need` is below 1 (very short names, low thresholds) cannot
//! be pruned by bigrams, so every name of those lengths is a candidate. Each
//! candidate is then scored exactly (bit-parallel LCS) and compared with the
//! threshold in integer arithmetic. The filters only drop names that provably
//! fail, so the result is exactly the brute-force set; the property tests
//! check this against an independent dynamic-programming scan. No
//! `queries x names` matrix is ever built.
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

/// Names holding each bigram: a posting list (ascending internal ids) for
/// rare bigrams, a bitset over all names for common ones.
#[derive(Debug, Clone)]
struct GramIndex {
    /// gram key -> gram number.
    ids: GramMap,
    /// Per gram: number of names holding it, and where its ids are.
    grams: Vec<GramEntry>,
    postings: Vec<u32>,
    bitsets: Vec<u64>,
    /// Per gram: how many names hold it (kept for dense grams).
    dense_df: Vec<u32>,
    words: usize,
}

#[derive(Debug, Clone, Copy)]
enum GramEntry {
    /// `postings[start..end]`.
    Sparse { start: u32, end: u32 },
    /// `bitsets[slab * words..(slab + 1) * words]`.
    Dense { slab: u32 },
}

impl GramIndex {
    /// How many names hold gram `g`.
    fn df(&self, g: u32) -> u32 {
        match self.grams[g as usize] {
            GramEntry::Sparse { start, end } => end - start,
            GramEntry::Dense { .. } => self.dense_df[g as usize],
        }
    }

    fn build(names: &[&[char]]) -> GramIndex {
        let q = 2;
        let words = names.len().div_ceil(64);
        let mut ids = GramMap::default();
        let mut lists: Vec<Vec<u32>> = Vec::new();
        let mut keys: Vec<u64> = Vec::new();
        for (name_id, name) in names.iter().enumerate() {
            keys.clear();
            if name.len() >= q {
                keys.extend((0..=name.len() - q).map(|i| gram_key(name, i, q)));
            }
            keys.sort_unstable();
            keys.dedup();
            for k in &keys {
                let next = ids.len() as u32;
                let id = *ids.entry(*k).or_insert(next);
                if id as usize == lists.len() {
                    lists.push(Vec::new());
                }
                lists[id as usize].push(name_id as u32);
            }
        }
        // A bitset costs `words` words; a posting list half a word per name.
        let dense_from = (words * 2).max(64);
        let mut grams = Vec::with_capacity(lists.len());
        let mut postings = Vec::new();
        let mut bitsets = Vec::new();
        let dense_df: Vec<u32> = lists.iter().map(|l| l.len() as u32).collect();
        for list in lists {
            if list.len() >= dense_from {
                let slab = (bitsets.len() / words.max(1)) as u32;
                let base = bitsets.len();
                bitsets.resize(base + words, 0u64);
                for id in list {
                    bitsets[base + id as usize / 64] |= 1u64 << (id % 64);
                }
                grams.push(GramEntry::Dense { slab });
            } else {
                let start = postings.len() as u32;
                postings.extend_from_slice(&list);
                grams.push(GramEntry::Sparse {
                    start,
                    end: postings.len() as u32,
                });
            }
        }
        GramIndex {
            ids,
            grams,
            postings,
            bitsets,
            dense_df,
            words,
        }
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
        // By length (the length filter is an id range), then by text, so names
        // sharing a beginning share counter words (whole words drop early).
        order.sort_by(|&a, &b| {
            let (x, y) = (&names[a as usize], &names[b as usize]);
            (x.len(), x, a).cmp(&(y.len(), y, b))
        });
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
        let bigrams = if metric == Metric::Indel {
            GramIndex::build(&slices)
        } else {
            GramIndex::build(&[])
        };
        FuzzyIndex {
            metric,
            chars,
            starts,
            original: order,
            lengths,
            bigrams,
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
            counters: Vec::new(),
            pattern: Pattern::default(),
            query: Vec::new(),
            grams: Vec::new(),
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
    /// Bit-sliced counters: `planes` words per 64 names.
    counters: Vec<u64>,
    pattern: Pattern,
    query: Vec<char>,
    /// The query's bigrams found in the index (with repeats).
    grams: Vec<u32>,
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

    fn search_indel(&mut self, query: &[char], t: Threshold, out: &mut Vec<(usize, Score)>) {
        let index = self.index;
        let gi = &index.bigrams;
        let (n, d) = (u128::from(t.numerator()), u128::from(t.denominator()));
        let l1 = query.len();
        let passes = |l2: usize| 2 * (l1.min(l2) as u128) * d >= n * (l1 + l2) as u128;
        // Shared bigrams (multiset) every passing name of length l2 has.
        let need = |l2: usize| -> i128 {
            let sum = (l1 + l2) as u128;
            let lmin = (n * sum).div_ceil(2 * d) as i128;
            3 * lmin - sum as i128 - 1
        };
        // Length buckets passing the length filter: (length, first id, end id).
        let buckets: Vec<(usize, usize, usize)> = index
            .lengths
            .windows(2)
            .filter(|w| passes(w[0].0))
            .map(|w| (w[0].0, w[0].1 as usize, w[1].1 as usize))
            .collect();
        let mut verify = |id: usize, pattern: &mut Pattern| {
            let name = index.internal(id);
            let lcs = pattern.lcs(name);
            let sum = l1 + name.len();
            if 2 * (lcs as u128) * d >= n * sum as u128 {
                out.push((index.original[id] as usize, indel_score(lcs, sum)));
            }
        };
        self.pattern.set(query);
        // Buckets bigrams cannot prune: every name is a candidate.
        for b in buckets.iter().filter(|b| need(b.0) < 1) {
            for id in b.1..b.2 {
                verify(id, &mut self.pattern);
            }
        }
        let counted: Vec<&(usize, usize, usize)> =
            buckets.iter().filter(|b| need(b.0) >= 1).collect();
        let (Some(first), Some(last)) = (counted.first(), counted.last()) else {
            return;
        };
        // Counted buckets may interleave with scanned ones (need is not
        // monotone in l2); ids of scanned buckets are skipped below.
        let (lo, hi) = (first.1, last.2);
        let need_min = counted.iter().map(|b| need(b.0)).min().unwrap_or(1);

        self.grams.clear();
        if l1 >= 2 {
            for i in 0..=l1 - 2 {
                if let Some(&g) = gi.ids.get(&gram_key(query, i, 2)) {
                    self.grams.push(g);
                }
            }
        }
        // A name can count at most every occurrence: no counter overflows.
        let planes = (usize::BITS - self.grams.len().leading_zeros()).max(1) as usize;
        if (self.grams.len() as i128) < need_min {
            return;
        }
        let (wlo, whi) = (lo / 64, hi.div_ceil(64));
        let span = whi - wlo;
        self.counters.clear();
        self.counters.resize(span * planes, 0);
        let counters = &mut self.counters;
        // Rare bigrams first (posting lists into the counters) ...
        let mut dense: Vec<(u32, usize)> = Vec::new();
        for &g in &self.grams {
            match gi.grams[g as usize] {
                GramEntry::Dense { slab } => dense.push((gi.df(g), slab as usize * gi.words)),
                GramEntry::Sparse { start, end } => {
                    let list = &gi.postings[start as usize..end as usize];
                    let a = list.partition_point(|&id| (id as usize) < lo);
                    let b = list.partition_point(|&id| (id as usize) < hi);
                    for &id in &list[a..b] {
                        let id = id as usize;
                        let (w, bit) = (id / 64 - wlo, 1u64 << (id % 64));
                        for p in &mut counters[w * planes..(w + 1) * planes] {
                            let had = *p & bit;
                            *p ^= bit;
                            if had == 0 {
                                break;
                            }
                        }
                    }
                }
            }
        }
        // ... then the common ones as bitsets, 64 names per word.
        for &(_, base) in &dense {
            let bits = &gi.bitsets[base + wlo..base + whi];
            for (cell, &b) in counters.chunks_exact_mut(planes).zip(bits) {
                let mut x = b;
                for p in cell {
                    if x == 0 {
                        break;
                    }
                    let carry = *p & x;
                    *p ^= x;
                    x = carry;
                }
            }
        }
        // Names whose count reaches need_min, then their own length's need.
        let mut bucket = 0usize;
        for w in 0..span {
            let cell = &counters[w * planes..(w + 1) * planes];
            let mut hits = at_least(cell, need_min);
            while hits != 0 {
                let bit = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let id = (wlo + w) * 64 + bit;
                if id < lo || id >= hi {
                    continue;
                }
                while counted[bucket].2 <= id {
                    bucket += 1;
                    if bucket == counted.len() {
                        return;
                    }
                }
                if id < counted[bucket].1 {
                    continue; // a scanned bucket, already verified
                }
                let count: i128 = cell
                    .iter()
                    .enumerate()
                    .map(|(p, &plane)| i128::from(((plane >> bit) & 1) as u8) << p)
                    .sum();
                if count >= need(counted[bucket].0) {
                    verify(id, &mut self.pattern);
                }
            }
        }
    }
}

/// The mask of the 64 bit-sliced counters in `cell` that are `>= k`
/// (`k >= 0`, below `2^planes`).
fn at_least(cell: &[u64], k: i128) -> u64 {
    let (mut gt, mut eq) = (0u64, !0u64);
    for (p, &plane) in cell.iter().enumerate().rev() {
        if (k >> p) & 1 == 1 {
            eq &= plane;
        } else {
            gt |= eq & plane;
            eq &= !plane;
        }
    }
    gt | eq
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
