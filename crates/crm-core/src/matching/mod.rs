//! Campaign matching: which campaign does a booking belong to?
//!
//! Seed 000's `matching:` block configures strategies tried in priority
//! order (`exact_id`, fuzzy `name_match` with a threshold, `composite` with
//! a date tolerance). Each booking gets a [`MatchStatus`] as the seed's table
//! defines it (matched, probable, unmatched, multiple; see [`Matcher`] for
//! the exact rules) and a [`MatchAction`] from `on_no_match` and
//! `on_multiple_match`.
//!
//! Names are compared after [`normalize`] (case, accents, punctuation,
//! whitespace). The default metric is the normalised Indel similarity,
//! `2 * LCS / (len1 + len2)`, which is rapidfuzz's `fuzz.ratio` / 100;
//! Jaro-Winkler and token-set ratio are options ([`Metric`]), chosen in a
//! strategy with `algorithm: jaro_winkler` / `algorithm: token_set`, or with
//! `algorithm: fuzzy` plus `metric: indel | jaro_winkler | token_set`.
//! `algorithm: exact` requires equal normalised names.
//!
//! Scores are exact fractions ([`Score`]) and thresholds exact decimals
//! ([`Threshold`]), so a score equal to the threshold always passes, in
//! every API. [`FuzzyIndex`] finds the names at or above a threshold with
//! length and character-count (q-gram count, q = 1) filters and returns
//! exactly the set a brute-force scan returns; [`all_pairs`] streams every
//! pair of two lists.
//!
//! ```
//! use crm_core::matching::{MatchAction, MatchStatus, Matcher, MatchingConfig};
//! use crm_core::Record;
//!
//! let config = MatchingConfig::from_yaml(r#"
//! matching:
//!   strategies:
//!     - type: "exact_id"
//!       source: "booking.campaign_id"
//!       target: "campaign.id"
//!       priority: 1
//!     - type: "name_match"
//!       source: "booking.campaign_name"
//!       target: "campaign.name"
//!       algorithm: "fuzzy"
//!       threshold: 0.85
//!       priority: 2
//!   on_no_match: "create_unmatched_record"
//!   on_multiple_match: "flag_for_review"
//! "#).unwrap();
//!
//! let campaigns = vec![
//!     Record::new().with_id("C1").with("name", "Acme Spring Sale 2024"),
//!     Record::new().with_id("C2").with("name", "Globex Summer Video"),
//! ];
//! let matcher = Matcher::new(&config, campaigns);
//!
//! let by_id = Record::new().with("campaign_id", "C2").with("campaign_name", "whatever");
//! assert_eq!(matcher.match_one(&by_id).status, MatchStatus::Matched);
//!
//! let typo = Record::new().with("campaign_name", "ACME Sprng Sale 2024");
//! let result = matcher.match_one(&typo);
//! assert_eq!(result.status, MatchStatus::Probable);
//! assert_eq!(result.best.unwrap().campaign_id.unwrap().as_str(), "C1");
//! assert_eq!(result.action, MatchAction::Review);
//!
//! let none = Record::new().with("campaign_name", "Initech Q3");
//! assert_eq!(matcher.match_one(&none).action, MatchAction::CreateUnmatched);
//! ```

mod config;
mod index;
mod matcher;
mod metric;
mod normalize;
mod score;

pub use config::{
    CompositeRule, MatchingConfig, MatchingSettings, OnMultipleMatch, OnNoMatch, Strategy,
    StrategyKind, Tolerance,
};
pub use index::{AllPairs, FuzzyIndex, Searcher, all_pairs};
pub use matcher::{
    Candidate, MatchAction, MatchFields, MatchResult, MatchStatus, MatchSummary, Matcher,
    ReviewQueue,
};
pub use metric::Metric;
pub use normalize::normalize;
pub use score::{Score, Threshold};
