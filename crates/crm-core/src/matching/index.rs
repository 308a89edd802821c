//! [`FuzzyIndex`]: threshold search over names without an N x M scan.
//!
//! # How the search stays exact
//!
//! For the default [`Metric::Indel`] similarity `2 * LCS / (l1 + l2)` and a
//! threshold `t = n / d`, a name of length `l2` can only reach `t` against a
//! query of length `l1` if its LCS with the query is at least
//! `Lmin = ceil(n * (l1 + l2) / (2d))`, that is if the Indel distance
//! `l1 + l2 - 2 * LCS` is at most `kmax = l1 + l2 - 2 * Lmin`. Two filters
//! follow from this:
//!
//! * **length filter**: `2 * min(l1, l2) * d >= n * (l1 + l2)`, since the LCS
//!   is at most the shorter length. The lengths passing form one interval,
//!   and names are stored sorted by length, so it is an id range.
//! * **character-count filter** (the q-gram count lemma with q = 1): every
//!   insertion or deletion changes one character's count by one, so the
//!   Indel distance is at least the L1 distance between the two strings'
//!   character histograms. Each name keeps a 32-slot histogram: the 31 most
//!   frequent characters of the indexed names have a slot each, all others
//!   share the last one, and counts saturate at 255. Sharing a slot and
//!   saturating both only lower the L1 distance (`|(a1 + a2) - (b1 + b2)| <=
//!   |a1 - b1| + |a2 - b2|`, `|min(a, 255) - min(b, 255)| <= |a - b|`), so
//!   the histogram distance is still a lower bound, and a name whose
//!   distance exceeds `kmax` provably fails. The names of the length range
//!   are scanned in order (sequential memory, no hashing) with a 16-slot
//!   fold of the histograms first (slot `i` plus slot `31 - i`, so a
//!   frequent character shares with a rare one; one vector register per
//!   name, again a lower bound by the same argument), then the full 32
//!   slots for the few names left. Each comparison is a sum of byte
//!   differences, which compiles to a few vector instructions.
//!
//! Each name left is scored exactly (bit-parallel LCS against the query's
//! pattern masks) and compared with the threshold in integer arithmetic. The
//! filters only drop names that provably fail, so the result is exactly the
//! brute-force set; the property tests check this against an independent
//! dynamic-programming scan. No `queries x names` matrix is ever built.
//!
//! Identical normalised names are stored once with the list of their
//! positions, and [`FuzzyIndex::all_pairs`] searches each distinct
//! normalised query of a block once; results are still reported per
//! original position, in the same order.
//!
//! The other metrics ([`Metric::JaroWinkler`], [`Metric::TokenSet`]) have no
//! such bound here: their search scores every distinct name (still exact).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::metric::{Metric, Pattern, indel_score};
use super::normalize::normalize;
use super::score::{Score, Threshold};

/// Histogram slots per name (the last one is shared by the rarer characters).
const SLOTS: usize = 32;

/// Character counts of one name, by slot, saturating at 255.
type Hist = [u8; SLOTS];

/// Which histogram slot each character counts in.
#[derive(Debug, Clone)]
struct Alphabet {
    ascii: [u8; 128],
    /// Non-ASCII characters with their own slot, sorted by character.
    other: Vec<(char, u8)>,
}

impl Default for Alphabet {
    fn default() -> Self {
        Alphabet {
            ascii: [(SLOTS - 1) as u8; 128],
            other: Vec::new(),
        }
    }
}

impl Alphabet {
    /// Gives the `SLOTS - 1` most frequent characters of `names` a slot each.
    fn build<'a>(names: impl Iterator<Item = &'a [char]>) -> Alphabet {
        let mut ascii_counts = [0u64; 128];
        let mut other_counts: std::collections::HashMap<char, u64> =
            std::collections::HashMap::new();
        for name in names {
            for &c in name {
                if c.is_ascii() {
                    ascii_counts[c as usize] += 1;
                } else {
                    *other_counts.entry(c).or_insert(0) += 1;
                }
            }
        }
        let mut freq: Vec<(u64, char)> = other_counts.into_iter().map(|(c, n)| (n, c)).collect();
        freq.extend(
            ascii_counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (*n, char::from(c as u8))),
        );
        freq.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut alphabet = Alphabet::default();
        for (slot, &(_, c)) in freq.iter().take(SLOTS - 1).enumerate() {
            if c.is_ascii() {
                alphabet.ascii[c as usize] = slot as u8;
            } else {
                alphabet.other.push((c, slot as u8));
            }
        }
        alphabet.other.sort_unstable();
        alphabet
    }

    #[inline]
    fn slot(&self, c: char) -> usize {
        if c.is_ascii() {
            usize::from(self.ascii[c as usize])
        } else {
            match self.other.binary_search_by(|(o, _)| o.cmp(&c)) {
                Ok(k) => usize::from(self.other[k].1),
                Err(_) => SLOTS - 1,
            }
        }
    }

    fn hist(&self, s: &[char]) -> Hist {
        let mut h = [0u8; SLOTS];
        for &c in s {
            let slot = &mut h[self.slot(c)];
            *slot = slot.saturating_add(1);
        }
        h
    }
}

/// Half-size histograms: slot `i` and slot `SLOTS - 1 - i` added
/// (saturating), so a frequent character shares with a rare one.
type Coarse = [u8; SLOTS / 2];

fn coarse(h: &Hist) -> Coarse {
    let mut c = [0u8; SLOTS / 2];
    for (i, v) in c.iter_mut().enumerate() {
        *v = h[i].saturating_add(h[SLOTS - 1 - i]);
    }
    c
}

/// L1 distance of two coarse histograms: a lower bound of
/// [`hist_distance`], checked first (one vector register per name).
#[inline]
fn coarse_distance(a: &Coarse, b: &Coarse) -> u32 {
    let mut diff = [0u8; SLOTS / 2];
    for ((d, &x), &y) in diff.iter_mut().zip(a).zip(b) {
        *d = x.max(y) - x.min(y);
    }
    diff.iter().map(|&v| u32::from(v)).sum()
}

/// L1 distance of two histograms (a lower bound of the Indel distance).
#[inline]
fn hist_distance(a: &Hist, b: &Hist) -> u32 {
    // Byte-wise differences first, then one widening sum: this shape
    // compiles to byte max/min/sub and a sum-of-absolute-differences.
    let mut diff = [0u8; SLOTS];
    for ((d, &x), &y) in diff.iter_mut().zip(a).zip(b) {
        *d = x.max(y) - x.min(y);
    }
    diff.iter().map(|&v| u32::from(v)).sum()
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
    /// The distinct normalised names, in internal (length-sorted) order,
    /// back to back.
    chars: Vec<char>,
    /// `chars[starts[i]..starts[i + 1]]` is distinct name `i`.
    starts: Vec<usize>,
    /// Positions in the caller's list, grouped by distinct name:
    /// `members[member_starts[i]..member_starts[i + 1]]`, ascending.
    members: Vec<u32>,
    member_starts: Vec<u32>,
    /// Distinct lengths, ascending, with the first internal id of each and
    /// a final sentinel `(usize::MAX, distinct names)`.
    lengths: Vec<(usize, u32)>,
    /// Per distinct name (Indel only): its character histogram, and the
    /// same folded to half the slots.
    hists: Vec<Hist>,
    coarse: Vec<Coarse>,
    alphabet: Alphabet,
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
        // By length (the length filter is an id range), then by text, so
        // identical names are neighbours, then by position.
        order.sort_by(|&a, &b| {
            let (x, y) = (&names[a as usize], &names[b as usize]);
            (x.len(), x, a).cmp(&(y.len(), y, b))
        });
        let mut chars = Vec::with_capacity(names.iter().map(Vec::len).sum());
        let mut starts = Vec::with_capacity(names.len() + 1);
        let mut member_starts = Vec::with_capacity(names.len() + 1);
        let mut lengths: Vec<(usize, u32)> = Vec::new();
        let mut previous: Option<&[char]> = None;
        for (k, &i) in order.iter().enumerate() {
            let name = names[i as usize].as_slice();
            if previous == Some(name) {
                continue;
            }
            previous = Some(name);
            let distinct = starts.len() as u32;
            if lengths.last().is_none_or(|(l, _)| *l != name.len()) {
                lengths.push((name.len(), distinct));
            }
            starts.push(chars.len());
            member_starts.push(k as u32);
            chars.extend_from_slice(name);
        }
        starts.push(chars.len());
        member_starts.push(order.len() as u32);
        let distinct = starts.len() - 1;
        lengths.push((usize::MAX, distinct as u32));
        let mut index = FuzzyIndex {
            metric,
            chars,
            starts,
            members: order,
            member_starts,
            lengths,
            hists: Vec::new(),
            coarse: Vec::new(),
            alphabet: Alphabet::default(),
        };
        if metric == Metric::Indel {
            index.alphabet = Alphabet::build((0..distinct).map(|i| index.internal(i)));
            index.hists = (0..distinct)
                .map(|i| index.alphabet.hist(index.internal(i)))
                .collect();
            index.coarse = index.hists.iter().map(coarse).collect();
        }
        index
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the index holds no names.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The metric scores are computed with.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Number of distinct normalised names.
    fn distinct(&self) -> usize {
        self.starts.len() - 1
    }

    fn internal(&self, id: usize) -> &[char] {
        &self.chars[self.starts[id]..self.starts[id + 1]]
    }

    /// The caller's positions of distinct name `id`.
    fn members_of(&self, id: usize) -> &[u32] {
        &self.members[self.member_starts[id] as usize..self.member_starts[id + 1] as usize]
    }

    /// A reusable search state; searching many queries through one
    /// [`Searcher`] avoids per-query allocation.
    pub fn searcher(&self) -> Searcher<'_> {
        Searcher {
            index: self,
            pattern: Pattern::default(),
            query: Vec::new(),
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
        let mut out = Vec::new();
        for id in 0..self.distinct() {
            let s = self.metric.score(&query, self.internal(id));
            if threshold.accepts(s) {
                out.extend(self.members_of(id).iter().map(|&i| (i as usize, s)));
            }
        }
        out.sort_unstable_by_key(|(i, _)| *i);
        out
    }

    /// Every `(query index, name index, score)` with score at or above
    /// `threshold`, ordered by query then name index, computed in parallel
    /// (all available cores) one block of queries at a time so memory stays
    /// bounded by the block's results, never by `queries x names`.
    /// Identical normalised queries of a block are searched once.
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
    pattern: Pattern,
    query: Vec<char>,
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
        let index = self.index;
        if index.metric == Metric::Indel {
            self.search_indel(query, threshold, out);
        } else {
            for id in 0..index.distinct() {
                let s = index.metric.score(query, index.internal(id));
                if threshold.accepts(s) {
                    out.extend(index.members_of(id).iter().map(|&i| (i as usize, s)));
                }
            }
        }
        out[start..].sort_unstable_by_key(|(i, _)| *i);
    }

    fn search_indel(&mut self, query: &[char], t: Threshold, out: &mut Vec<(usize, Score)>) {
        let index = self.index;
        let (n, d) = (u128::from(t.numerator()), u128::from(t.denominator()));
        let l1 = query.len();
        let qh = index.alphabet.hist(query);
        let qc = coarse(&qh);
        self.pattern.set(query);
        for w in index.lengths.windows(2) {
            let (l2, from, to) = (w[0].0, w[0].1 as usize, w[1].1 as usize);
            let sum = (l1 + l2) as u128;
            // Length filter.
            if 2 * (l1.min(l2) as u128) * d < n * sum {
                continue;
            }
            // Largest Indel distance that can still pass.
            let lmin = (n * sum).div_ceil(2 * d);
            let kmax = u32::try_from(sum.saturating_sub(2 * lmin)).unwrap_or(u32::MAX);
            for (k, c) in index.coarse[from..to].iter().enumerate() {
                if coarse_distance(c, &qc) > kmax {
                    continue;
                }
                let id = from + k;
                if hist_distance(&index.hists[id], &qh) > kmax {
                    continue;
                }
                let lcs = self.pattern.lcs(index.internal(id));
                if 2 * (lcs as u128) * d >= n * sum {
                    let s = indel_score(lcs, l1 + l2);
                    out.extend(index.members_of(id).iter().map(|&i| (i as usize, s)));
                }
            }
        }
    }
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
const BLOCK_PER_THREAD: usize = 4096;

/// Work items a thread takes at a time (threads take the next chunk when
/// done, so uneven query costs still keep every thread busy).
const CHUNK: usize = 32;

/// `f(state, i, out)` for every `i` in `0..items` on up to `threads`
/// threads, each with its own `state` from `init`; outputs in item order.
fn parallel_map<T, W, I, F>(items: usize, threads: usize, init: I, f: F) -> Vec<T>
where
    T: Send,
    I: Fn() -> W + Sync,
    F: Fn(&mut W, usize, &mut Vec<T>) + Sync,
{
    let mut out = Vec::with_capacity(items);
    if threads <= 1 || items <= CHUNK {
        let mut state = init();
        for i in 0..items {
            f(&mut state, i, &mut out);
        }
        return out;
    }
    let next = AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<T>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(items.div_ceil(CHUNK)))
            .map(|_| {
                let (next, init, f) = (&next, &init, &f);
                scope.spawn(move || {
                    let mut state = init();
                    let mut parts = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= items {
                            return parts;
                        }
                        let mut part = Vec::new();
                        for i in start..(start + CHUNK).min(items) {
                            f(&mut state, i, &mut part);
                        }
                        parts.push((start, part));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    parts.sort_unstable_by_key(|(start, _)| *start);
    for (_, part) in parts {
        out.extend(part);
    }
    out
}

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
        let (index, t, threads) = (self.index, self.threshold, self.threads);
        // Normalise the block, then search each distinct query once.
        let normalised: Vec<Vec<char>> = parallel_map(
            block.len(),
            threads,
            || (),
            |_, i, out| {
                out.push(normalize(block[i].as_ref()).chars().collect());
            },
        );
        let mut order: Vec<u32> = (0..block.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| normalised[a as usize].cmp(&normalised[b as usize]));
        // distinct_of[query] = its distinct number; firsts[distinct] = a query.
        let mut distinct_of = vec![0u32; block.len()];
        let mut firsts: Vec<u32> = Vec::new();
        for (k, &q) in order.iter().enumerate() {
            let same = k > 0 && normalised[order[k - 1] as usize] == normalised[q as usize];
            if !same {
                firsts.push(q);
            }
            distinct_of[q as usize] = (firsts.len() - 1) as u32;
        }
        let results: Vec<Vec<(usize, Score)>> = parallel_map(
            firsts.len(),
            threads,
            || index.searcher(),
            |searcher, k, out| {
                let mut hits = Vec::new();
                searcher.search_normalized(&normalised[firsts[k] as usize], t, &mut hits);
                out.push(hits);
            },
        );
        for (q, &k) in distinct_of.iter().enumerate() {
            self.buffer
                .extend(results[k as usize].iter().map(|&(c, s)| (base + q, c, s)));
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
