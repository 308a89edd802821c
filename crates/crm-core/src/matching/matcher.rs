//! [`Matcher`]: bookings to campaigns, strategy by strategy.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::config::{CompositeRule, MatchingConfig, OnMultipleMatch, OnNoMatch, StrategyKind};
use super::index::{FuzzyIndex, Searcher};
use super::metric::Metric;
use super::normalize::normalize;
use super::score::{Score, Threshold};
use crate::model::{Booking, Campaign};
use crate::record::{Record, RecordId};
use crate::value::Value;

/// Read access to the fields a strategy names, for [`Record`]s and the
/// typed [`Booking`] and [`Campaign`].
///
/// The field `id` is the record's `id` field when it has one, else
/// [`Record::id`]; for a [`Campaign`] it is `campaign_id`. Other names are
/// looked up with [`Record::get_path`] (dotted paths walk into JSON).
pub trait MatchFields {
    /// The value of `field`, if present.
    fn match_field(&self, field: &str) -> Option<Value>;
}

impl MatchFields for Record {
    fn match_field(&self, field: &str) -> Option<Value> {
        if field == "id" {
            return match self.get("id").filter(|v| !v.is_blank()) {
                Some(v) => Some(v.clone()),
                None => self.id.as_ref().map(|id| Value::Text(id.to_string())),
            };
        }
        self.get_path(field)
    }
}

impl MatchFields for Booking {
    fn match_field(&self, field: &str) -> Option<Value> {
        match field {
            "booking_id" | "id" => Some(Value::Text(self.booking_id.to_string())),
            "client_name" => Some(Value::Text(self.client_name.clone())),
            "campaign_name" => Some(Value::Text(self.campaign_name.clone())),
            "campaign_id" => self
                .campaign_id
                .as_ref()
                .map(|c| Value::Text(c.to_string())),
            "client_id" => self.client_id.as_ref().map(|c| Value::Text(c.to_string())),
            "start_date" => Some(Value::Date(self.start_date)),
            "end_date" => Some(Value::Date(self.end_date)),
            other => Record::from(self.clone()).match_field(other),
        }
    }
}

impl MatchFields for Campaign {
    fn match_field(&self, field: &str) -> Option<Value> {
        match field {
            "campaign_id" | "id" => Some(Value::Text(self.campaign_id.to_string())),
            "name" => Some(Value::Text(self.name.clone())),
            "advertiser_name" => self.advertiser_name.clone().map(Value::Text),
            "start_date" => self.start_date.map(Value::Date),
            "end_date" => self.end_date.map(Value::Date),
            other => Record::from(self.clone()).match_field(other),
        }
    }
}

/// The outcome of matching one booking, per seed 000's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// Exact or confident match.
    Matched,
    /// Fuzzy match, for review.
    Probable,
    /// No match found.
    Unmatched,
    /// Several campaigns match equally well, for review.
    Multiple,
}

impl MatchStatus {
    /// The seed's name: `matched`, `probable`, `unmatched`, `multiple`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::Matched => "matched",
            MatchStatus::Probable => "probable",
            MatchStatus::Unmatched => "unmatched",
            MatchStatus::Multiple => "multiple",
        }
    }
}

/// What the pipeline should do with a booking, from its status and the
/// configuration's `on_no_match` / `on_multiple_match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchAction {
    /// Link the booking to the best candidate (status matched).
    Link,
    /// Put the booking in the manual review queue (probable; multiple with
    /// `flag_for_review`).
    Review,
    /// Store the booking as an unmatched record (`create_unmatched_record`).
    CreateUnmatched,
    /// Leave the booking out (`skip`).
    Skip,
}

/// A campaign a strategy found for a booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Position of the campaign in the list given to [`Matcher::new`].
    pub campaign: usize,
    /// The campaign's id (its `id` field), when it has one.
    pub campaign_id: Option<RecordId>,
    /// The similarity: 1 for `exact_id`; the name score for `name_match`;
    /// the lowest `match` rule score for `composite` (1 if it has none).
    pub score: Score,
    /// Position of the deciding strategy in [`MatchingConfig::strategies`].
    pub strategy: usize,
}

/// The result of matching one booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchResult {
    /// The status.
    pub status: MatchStatus,
    /// The chosen campaign for `matched` and `probable`; `None` for
    /// `unmatched` and `multiple`.
    pub best: Option<Candidate>,
    /// Every candidate of the deciding strategy, best first (score
    /// descending, then campaign position); empty when unmatched.
    pub candidates: Vec<Candidate>,
    /// What to do with the booking.
    pub action: MatchAction,
}

/// A strategy prepared against the campaigns.
#[derive(Debug)]
enum Prepared {
    ExactId {
        source: String,
        ids: HashMap<String, Vec<usize>>,
    },
    Name {
        source: String,
        index: Box<FuzzyIndex>,
        threshold: Threshold,
    },
    Composite {
        rules: Vec<PreparedRule>,
    },
}

#[derive(Debug)]
enum PreparedRule {
    Match {
        field: String,
        index: Box<FuzzyIndex>,
        values: Vec<Vec<char>>,
        metric: Metric,
        threshold: Threshold,
    },
    Within {
        field: String,
        /// Campaign dates sorted, with campaign positions.
        sorted: Vec<(NaiveDate, usize)>,
        dates: Vec<Option<NaiveDate>>,
        days: i64,
    },
}

/// Matches bookings to campaigns with a [`MatchingConfig`].
///
/// Strategies run in priority order; the first that finds any candidate
/// decides the status, later ones are not tried:
///
/// * **exact_id**: campaigns whose `target` equals the booking's `source`
///   text. One -> `matched` (score 1); several (duplicate ids) -> `multiple`.
///   A blank booking value finds nothing.
/// * **name_match**: campaigns whose normalised `target` scores at least the
///   threshold against the booking's normalised `source`. Several sharing the
///   top score -> `multiple`; otherwise the top one is `matched` if its score
///   is exactly 1 (names equal after normalisation), else `probable`.
///   A blank (after normalisation) booking name finds nothing.
/// * **composite**: campaigns passing every rule (`match`: normalised values
///   score at least the threshold; `tolerance`: dates at most that many days
///   apart). Candidate score is the lowest `match` score. Statuses as for
///   name_match. A booking missing a rule's field finds nothing.
///
/// No strategy found anything -> `unmatched`. Actions: matched -> link;
/// probable -> review; multiple -> review (`flag_for_review`) or skip;
/// unmatched -> create an unmatched record (`create_unmatched_record`) or skip.
#[derive(Debug)]
pub struct Matcher {
    config: MatchingConfig,
    strategies: Vec<Prepared>,
    campaign_ids: Vec<Option<RecordId>>,
}

fn text_of(v: Option<Value>) -> Option<String> {
    let v = v?;
    if v.is_blank() {
        return None;
    }
    Some(match v {
        Value::Text(s) => s,
        other => other.to_string(),
    })
}

fn date_of(v: Option<Value>) -> Option<NaiveDate> {
    let v = v?;
    if let Some(d) = v.as_date() {
        return Some(d);
    }
    let s = v.as_str()?.trim();
    s.parse::<NaiveDate>()
        .ok()
        .or_else(|| s.get(..10).and_then(|p| p.parse::<NaiveDate>().ok()))
}

impl Matcher {
    /// Prepares the campaigns for every strategy (id maps, fuzzy indexes,
    /// sorted dates) once.
    pub fn new<C: MatchFields>(config: &MatchingConfig, campaigns: Vec<C>) -> Matcher {
        let fuzzy = config.settings.fuzzy_threshold;
        let campaign_ids = campaigns
            .iter()
            .map(|c| text_of(c.match_field("id")).map(RecordId::new))
            .collect();
        let strategies = config
            .strategies
            .iter()
            .map(|s| match &s.kind {
                StrategyKind::ExactId { source, target } => {
                    let mut ids: HashMap<String, Vec<usize>> = HashMap::new();
                    for (i, c) in campaigns.iter().enumerate() {
                        if let Some(id) = text_of(c.match_field(target)) {
                            ids.entry(id.trim().to_owned()).or_default().push(i);
                        }
                    }
                    Prepared::ExactId {
                        source: source.clone(),
                        ids,
                    }
                }
                StrategyKind::NameMatch {
                    source,
                    target,
                    metric,
                    threshold,
                } => {
                    let names: Vec<String> = campaigns
                        .iter()
                        .map(|c| text_of(c.match_field(target)).unwrap_or_default())
                        .collect();
                    Prepared::Name {
                        source: source.clone(),
                        index: Box::new(FuzzyIndex::with_metric(&names, *metric)),
                        threshold: threshold.unwrap_or(fuzzy),
                    }
                }
                StrategyKind::Composite {
                    rules,
                    metric,
                    threshold,
                } => Prepared::Composite {
                    rules: rules
                        .iter()
                        .map(|r| match r {
                            CompositeRule::Match {
                                field,
                                target,
                                threshold: own,
                            } => {
                                let names: Vec<String> = campaigns
                                    .iter()
                                    .map(|c| text_of(c.match_field(target)).unwrap_or_default())
                                    .collect();
                                let values = names
                                    .iter()
                                    .map(|n| normalize(n).chars().collect())
                                    .collect();
                                PreparedRule::Match {
                                    field: field.clone(),
                                    index: Box::new(FuzzyIndex::with_metric(&names, *metric)),
                                    values,
                                    metric: *metric,
                                    threshold: own.or(*threshold).unwrap_or(fuzzy),
                                }
                            }
                            CompositeRule::Within {
                                field,
                                target,
                                tolerance,
                            } => {
                                let dates: Vec<Option<NaiveDate>> = campaigns
                                    .iter()
                                    .map(|c| date_of(c.match_field(target)))
                                    .collect();
                                let mut sorted: Vec<(NaiveDate, usize)> = dates
                                    .iter()
                                    .enumerate()
                                    .filter_map(|(i, d)| d.map(|d| (d, i)))
                                    .collect();
                                sorted.sort_unstable();
                                PreparedRule::Within {
                                    field: field.clone(),
                                    sorted,
                                    dates,
                                    days: i64::from(tolerance.as_days()),
                                }
                            }
                        })
                        .collect(),
                },
            })
            .collect();
        Matcher {
            config: config.clone(),
            strategies,
            campaign_ids,
        }
    }

    /// The configuration the matcher was built with.
    pub fn config(&self) -> &MatchingConfig {
        &self.config
    }

    /// Number of campaigns.
    pub fn campaigns(&self) -> usize {
        self.campaign_ids.len()
    }

    /// Matches one booking.
    pub fn match_one<B: MatchFields + ?Sized>(&self, booking: &B) -> MatchResult {
        let mut searchers: Vec<Option<Searcher<'_>>> =
            (0..self.strategies.len()).map(|_| None).collect();
        self.match_with(booking, &mut searchers)
    }

    /// Matches every booking, in parallel on all available cores; the
    /// results are in the bookings' order whatever the thread count.
    pub fn match_all<B: MatchFields + Sync>(&self, bookings: &[B]) -> Vec<MatchResult> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(bookings.len().div_ceil(64))
            .max(1);
        let run = |part: &[B]| {
            let mut searchers: Vec<Option<Searcher<'_>>> =
                (0..self.strategies.len()).map(|_| None).collect();
            part.iter()
                .map(|b| self.match_with(b, &mut searchers))
                .collect::<Vec<_>>()
        };
        if threads == 1 {
            return run(bookings);
        }
        let chunk = bookings.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = bookings
                .chunks(chunk)
                .map(|part| {
                    let run = &run;
                    scope.spawn(move || run(part))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    fn match_with<'a, B: MatchFields + ?Sized>(
        &'a self,
        booking: &B,
        searchers: &mut [Option<Searcher<'a>>],
    ) -> MatchResult {
        for (si, prepared) in self.strategies.iter().enumerate() {
            let mut found: Vec<(usize, Score)> = Vec::new();
            match prepared {
                Prepared::ExactId { source, ids } => {
                    if let Some(id) = text_of(booking.match_field(source))
                        && let Some(hits) = ids.get(id.trim())
                    {
                        found.extend(hits.iter().map(|&i| (i, Score::ONE)));
                    }
                }
                Prepared::Name {
                    source,
                    index,
                    threshold,
                } => {
                    let name: Vec<char> = text_of(booking.match_field(source))
                        .map(|n| normalize(&n).chars().collect())
                        .unwrap_or_default();
                    if !name.is_empty() {
                        let s = searchers[si].get_or_insert_with(|| index.searcher());
                        s.search_normalized(&name, *threshold, &mut found);
                    }
                }
                Prepared::Composite { rules } => {
                    found = Self::composite(booking, rules, &mut searchers[si]);
                }
            }
            if found.is_empty() {
                continue;
            }
            return self.decide(si, found);
        }
        MatchResult {
            status: MatchStatus::Unmatched,
            best: None,
            candidates: Vec::new(),
            action: match self.config.on_no_match {
                OnNoMatch::CreateUnmatchedRecord => MatchAction::CreateUnmatched,
                OnNoMatch::Skip => MatchAction::Skip,
            },
        }
    }

    fn composite<'a, B: MatchFields + ?Sized>(
        booking: &B,
        rules: &'a [PreparedRule],
        searcher: &mut Option<Searcher<'a>>,
    ) -> Vec<(usize, Score)> {
        // The booking's side of every rule; a missing value finds nothing.
        enum Side {
            Name(Vec<char>),
            Date(NaiveDate),
        }
        let mut sides = Vec::with_capacity(rules.len());
        for r in rules {
            let side = match r {
                PreparedRule::Match { field, .. } => text_of(booking.match_field(field))
                    .map(|t| normalize(&t).chars().collect::<Vec<char>>())
                    .filter(|n| !n.is_empty())
                    .map(Side::Name),
                PreparedRule::Within { field, .. } => {
                    date_of(booking.match_field(field)).map(Side::Date)
                }
            };
            match side {
                Some(s) => sides.push(s),
                None => return Vec::new(),
            }
        }
        // Candidates from the first `match` rule's index, else the first
        // date rule's window.
        let mut cands: Vec<(usize, Score)> = Vec::new();
        let first_match = rules
            .iter()
            .position(|r| matches!(r, PreparedRule::Match { .. }));
        match first_match {
            Some(k) => {
                if let (
                    PreparedRule::Match {
                        index, threshold, ..
                    },
                    Side::Name(n),
                ) = (&rules[k], &sides[k])
                {
                    searcher
                        .get_or_insert_with(|| index.searcher())
                        .search_normalized(n, *threshold, &mut cands);
                }
            }
            None => {
                if let (PreparedRule::Within { sorted, days, .. }, Side::Date(d)) =
                    (&rules[0], &sides[0])
                {
                    let lo = *d - chrono::Duration::days(*days);
                    let hi = *d + chrono::Duration::days(*days);
                    let a = sorted.partition_point(|(x, _)| *x < lo);
                    let b = sorted.partition_point(|(x, _)| *x <= hi);
                    cands.extend(sorted[a..b].iter().map(|&(_, i)| (i, Score::ONE)));
                    cands.sort_unstable_by_key(|(i, _)| *i);
                }
            }
        }
        cands.retain_mut(|(campaign, score)| {
            rules.iter().zip(&sides).all(|(r, side)| match (r, side) {
                (
                    PreparedRule::Match {
                        values,
                        metric,
                        threshold,
                        ..
                    },
                    Side::Name(n),
                ) => {
                    let s = metric.score(n, &values[*campaign]);
                    *score = (*score).min(s);
                    threshold.accepts(s) && !values[*campaign].is_empty()
                }
                (PreparedRule::Within { dates, days, .. }, Side::Date(d)) => {
                    dates[*campaign].is_some_and(|c| (c - *d).num_days().abs() <= *days)
                }
                _ => false,
            })
        });
        cands
    }

    fn decide(&self, strategy: usize, mut found: Vec<(usize, Score)>) -> MatchResult {
        found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top = found[0].1;
        let ties = found.iter().take_while(|(_, s)| *s == top).count();
        let candidates: Vec<Candidate> = found
            .into_iter()
            .map(|(campaign, score)| Candidate {
                campaign,
                campaign_id: self.campaign_ids[campaign].clone(),
                score,
                strategy,
            })
            .collect();
        let exact_id = matches!(self.strategies[strategy], Prepared::ExactId { .. });
        let status = if ties > 1 {
            MatchStatus::Multiple
        } else if exact_id || top.is_one() {
            MatchStatus::Matched
        } else {
            MatchStatus::Probable
        };
        let action = match status {
            MatchStatus::Matched => MatchAction::Link,
            MatchStatus::Probable => MatchAction::Review,
            MatchStatus::Multiple => match self.config.on_multiple_match {
                OnMultipleMatch::FlagForReview => MatchAction::Review,
                OnMultipleMatch::Skip => MatchAction::Skip,
            },
            MatchStatus::Unmatched => MatchAction::CreateUnmatched,
        };
        let best = match status {
            MatchStatus::Matched | MatchStatus::Probable => candidates.first().cloned(),
            _ => None,
        };
        MatchResult {
            status,
            best,
            candidates,
            action,
        }
    }

    /// A review queue capped by `crm.matching.max_manual_review`.
    pub fn review_queue(&self) -> ReviewQueue {
        ReviewQueue::new(self.config.settings.max_manual_review)
    }
}

/// Counts of each status over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MatchSummary {
    /// Bookings matched.
    pub matched: usize,
    /// Bookings with a probable match.
    pub probable: usize,
    /// Bookings unmatched.
    pub unmatched: usize,
    /// Bookings with several equally good matches.
    pub multiple: usize,
}

impl MatchSummary {
    /// Counts the statuses of `results`.
    pub fn of(results: &[MatchResult]) -> MatchSummary {
        let mut s = MatchSummary::default();
        for r in results {
            match r.status {
                MatchStatus::Matched => s.matched += 1,
                MatchStatus::Probable => s.probable += 1,
                MatchStatus::Unmatched => s.unmatched += 1,
                MatchStatus::Multiple => s.multiple += 1,
            }
        }
        s
    }
}

/// The manual review queue of a run, capped by `max_manual_review`.
///
/// Bookings past the cap are counted, not queued, so the caller can warn
/// that the cap was hit (and they stay unlinked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewQueue {
    cap: Option<usize>,
    queued: Vec<usize>,
    overflow: usize,
}

impl ReviewQueue {
    /// An empty queue holding at most `cap` bookings (`None`: no cap).
    pub fn new(cap: Option<usize>) -> ReviewQueue {
        ReviewQueue {
            cap,
            queued: Vec::new(),
            overflow: 0,
        }
    }

    /// Queues `booking` (an index or position); false if the cap is reached.
    pub fn push(&mut self, booking: usize) -> bool {
        if self.cap.is_some_and(|c| self.queued.len() >= c) {
            self.overflow += 1;
            return false;
        }
        self.queued.push(booking);
        true
    }

    /// Queues every result whose action is [`MatchAction::Review`], by position.
    pub fn extend_from(&mut self, results: &[MatchResult]) {
        for (i, r) in results.iter().enumerate() {
            if r.action == MatchAction::Review {
                self.push(i);
            }
        }
    }

    /// The queued bookings, in order.
    pub fn queued(&self) -> &[usize] {
        &self.queued
    }

    /// How many bookings did not fit.
    pub fn overflow(&self) -> usize {
        self.overflow
    }

    /// True if the cap was hit (a warning is due).
    pub fn cap_hit(&self) -> bool {
        self.overflow > 0
    }
}
