//! The matching configuration: seed 000's `matching:` block and the
//! `crm.matching` settings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::metric::Metric;
use super::score::Threshold;
use crate::error::Error;

/// Seed 000's `matching:` block: strategies in priority order and what to do
/// with bookings that match nothing or several campaigns, plus the
/// `crm.matching` settings.
///
/// Unknown keys, keys that do not belong to a strategy's `type`, thresholds
/// outside `[0, 1]` and malformed tolerances are errors.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MatchingConfig {
    /// The strategies, sorted by `priority` (ties keep their order in the file).
    pub strategies: Vec<Strategy>,
    /// What to do with a booking no strategy matched.
    pub on_no_match: OnNoMatch,
    /// What to do with a booking several campaigns match equally well.
    pub on_multiple_match: OnMultipleMatch,
    /// The `crm.matching` settings (defaults when the file has none).
    pub settings: MatchingSettings,
}

/// The `crm.matching` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MatchingSettings {
    /// Threshold of `name_match` strategies and composite `match` rules that
    /// give none. Default 0.85.
    #[serde(default)]
    pub fuzzy_threshold: Threshold,
    /// Most bookings put in the manual review queue per run; `None` means no
    /// cap. See [`ReviewQueue`](super::ReviewQueue).
    #[serde(default)]
    pub max_manual_review: Option<usize>,
}

/// One matching strategy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Strategy {
    /// Lower runs first.
    pub priority: i64,
    /// What the strategy compares.
    pub kind: StrategyKind,
}

/// What a [`Strategy`] compares.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StrategyKind {
    /// `exact_id`: the booking's `source` field equals the campaign's
    /// `target` field (text, surrounding whitespace ignored).
    ExactId {
        /// Booking field, e.g. `campaign_id` (from `booking.campaign_id`).
        source: String,
        /// Campaign field, e.g. `id` (from `campaign.id`).
        target: String,
    },
    /// `name_match`: normalised names scored with `metric`.
    NameMatch {
        /// Booking field, e.g. `campaign_name`.
        source: String,
        /// Campaign field, e.g. `name`.
        target: String,
        /// The similarity metric.
        metric: Metric,
        /// The threshold; `None` means `crm.matching.fuzzy_threshold`.
        threshold: Option<Threshold>,
    },
    /// `composite`: every rule must hold.
    Composite {
        /// The rules.
        rules: Vec<CompositeRule>,
        /// Metric of the `match` rules.
        metric: Metric,
        /// Threshold of the `match` rules that give none; `None` means
        /// `crm.matching.fuzzy_threshold`.
        threshold: Option<Threshold>,
    },
}

impl StrategyKind {
    /// The configuration name: `exact_id`, `name_match` or `composite`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StrategyKind::ExactId { .. } => "exact_id",
            StrategyKind::NameMatch { .. } => "name_match",
            StrategyKind::Composite { .. } => "composite",
        }
    }
}

/// One rule of a `composite` strategy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompositeRule {
    /// `{field, match}`: the booking's `field` and the campaign's `target`
    /// (normalised) score at least the threshold.
    Match {
        /// Booking field, e.g. `client_name`.
        field: String,
        /// Campaign field, e.g. `advertiser_name`.
        target: String,
        /// This rule's threshold, else the strategy's.
        threshold: Option<Threshold>,
    },
    /// `{field, tolerance}`: the booking's date `field` is within
    /// `tolerance` of the campaign's date `target` (inclusive: 7 days apart
    /// passes a `7d` tolerance, 8 do not).
    Within {
        /// Booking date field, e.g. `start_date`.
        field: String,
        /// Campaign date field; the same name unless `match` gives one.
        target: String,
        /// The tolerance.
        tolerance: Tolerance,
    },
}

/// A date tolerance such as `7d` or `2w`, in whole days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tolerance {
    days: u32,
}

impl Tolerance {
    /// A tolerance of `days` days.
    pub fn days(days: u32) -> Tolerance {
        Tolerance { days }
    }

    /// The tolerance in days.
    pub fn as_days(self) -> u32 {
        self.days
    }
}

impl std::str::FromStr for Tolerance {
    type Err = String;

    /// `Nd` (days), `Nw` (weeks) or a bare number of days.
    fn from_str(text: &str) -> Result<Tolerance, String> {
        let t = text.trim();
        let bad =
            || format!("tolerance `{text}` is not a number of days or weeks, e.g. `7d` or `2w`");
        let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => (&t[..i], t[i..].trim()),
            None => (t, "d"),
        };
        let n: u32 = digits.parse().map_err(|_| bad())?;
        let days = match unit {
            "d" | "day" | "days" => Some(n),
            "w" | "week" | "weeks" => n.checked_mul(7),
            _ => None,
        }
        .ok_or_else(bad)?;
        Ok(Tolerance { days })
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}d", self.days)
    }
}

impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tolerance, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Tolerance { days: n }),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What happens to a booking no strategy matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNoMatch {
    /// Keep the booking, stored as unmatched (seed 000's choice).
    #[default]
    CreateUnmatchedRecord,
    /// Leave the booking out of the output.
    Skip,
}

/// What happens to a booking several campaigns match equally well.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMultipleMatch {
    /// Put it in the manual review queue (seed 000's choice).
    #[default]
    FlagForReview,
    /// Leave the booking out of the output.
    Skip,
}

/// `algorithm:` of a `name_match` strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    /// The strategy's `metric:` (default Indel).
    Fuzzy,
    /// Normalised names must be equal (score 1).
    Exact,
    #[serde(alias = "ratio")]
    Indel,
    JaroWinkler,
    #[serde(alias = "token_set_ratio")]
    TokenSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    strategies: Vec<RawStrategy>,
    #[serde(default)]
    on_no_match: OnNoMatch,
    #[serde(default)]
    on_multiple_match: OnMultipleMatch,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    ExactId,
    NameMatch,
    Composite,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrategy {
    #[serde(rename = "type")]
    kind: RawKind,
    source: Option<String>,
    target: Option<String>,
    algorithm: Option<Algorithm>,
    metric: Option<Metric>,
    threshold: Option<Threshold>,
    rules: Option<Vec<RawRule>>,
    priority: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    field: String,
    #[serde(rename = "match")]
    target: Option<String>,
    tolerance: Option<Tolerance>,
    threshold: Option<Threshold>,
}

/// Strips a leading `booking.` / `campaign.` from a configured path.
fn path(text: &str, prefix: &str) -> String {
    let t = text.trim();
    t.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(t)
        .to_owned()
}

impl RawStrategy {
    fn into_strategy(self, position: usize) -> Result<Strategy, String> {
        let n = position + 1;
        let what = format!("strategy {n} ({})", kind_name(self.kind));
        let forbid = |present: bool, key: &str| {
            if present {
                Err(format!("{what}: `{key}` does not apply to this type"))
            } else {
                Ok(())
            }
        };
        let required = |v: Option<String>, key: &str, prefix: &str| {
            v.filter(|s| !s.trim().is_empty())
                .map(|s| path(&s, prefix))
                .ok_or_else(|| format!("{what}: `{key}` is required"))
        };
        let kind = match self.kind {
            RawKind::ExactId => {
                forbid(self.algorithm.is_some(), "algorithm")?;
                forbid(self.metric.is_some(), "metric")?;
                forbid(self.threshold.is_some(), "threshold")?;
                forbid(self.rules.is_some(), "rules")?;
                StrategyKind::ExactId {
                    source: required(self.source, "source", "booking")?,
                    target: required(self.target, "target", "campaign")?,
                }
            }
            RawKind::NameMatch => {
                forbid(self.rules.is_some(), "rules")?;
                let (metric, threshold) =
                    resolve_algorithm(&what, self.algorithm, self.metric, self.threshold)?;
                StrategyKind::NameMatch {
                    source: required(self.source, "source", "booking")?,
                    target: required(self.target, "target", "campaign")?,
                    metric,
                    threshold,
                }
            }
            RawKind::Composite => {
                forbid(self.source.is_some(), "source")?;
                forbid(self.target.is_some(), "target")?;
                let (metric, threshold) =
                    resolve_algorithm(&what, self.algorithm, self.metric, self.threshold)?;
                let raw = self.rules.unwrap_or_default();
                if raw.is_empty() {
                    return Err(format!("{what}: `rules` must list at least one rule"));
                }
                let rules = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let field = path(&r.field, "booking");
                        if field.is_empty() {
                            return Err(format!("{what}, rule {}: `field` is empty", i + 1));
                        }
                        match (r.target, r.tolerance) {
                            (target, Some(tolerance)) => {
                                if r.threshold.is_some() {
                                    return Err(format!(
                                        "{what}, rule {}: `threshold` does not apply to a `tolerance` rule",
                                        i + 1
                                    ));
                                }
                                let target = target
                                    .map(|t| path(&t, "campaign"))
                                    .unwrap_or_else(|| field.clone());
                                Ok(CompositeRule::Within {
                                    field,
                                    target,
                                    tolerance,
                                })
                            }
                            (Some(target), None) => Ok(CompositeRule::Match {
                                field,
                                target: path(&target, "campaign"),
                                threshold: r.threshold,
                            }),
                            (None, None) => Err(format!(
                                "{what}, rule {}: give `match` (a campaign field) or `tolerance` (e.g. 7d)",
                                i + 1
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                StrategyKind::Composite {
                    rules,
                    metric,
                    threshold,
                }
            }
        };
        Ok(Strategy {
            priority: self.priority.unwrap_or(n as i64),
            kind,
        })
    }
}

fn kind_name(k: RawKind) -> &'static str {
    match k {
        RawKind::ExactId => "exact_id",
        RawKind::NameMatch => "name_match",
        RawKind::Composite => "composite",
    }
}

fn resolve_algorithm(
    what: &str,
    algorithm: Option<Algorithm>,
    metric: Option<Metric>,
    threshold: Option<Threshold>,
) -> Result<(Metric, Option<Threshold>), String> {
    match algorithm.unwrap_or(Algorithm::Fuzzy) {
        Algorithm::Fuzzy => Ok((metric.unwrap_or_default(), threshold)),
        Algorithm::Exact => {
            if metric.is_some() || threshold.is_some() {
                return Err(format!(
                    "{what}: `algorithm: exact` takes no `metric` or `threshold`"
                ));
            }
            Ok((Metric::Indel, Some(Threshold::ONE)))
        }
        named => {
            let m = match named {
                Algorithm::JaroWinkler => Metric::JaroWinkler,
                Algorithm::TokenSet => Metric::TokenSet,
                _ => Metric::Indel,
            };
            if metric.is_some_and(|x| x != m) {
                return Err(format!(
                    "{what}: `metric` contradicts `algorithm`; give one of them"
                ));
            }
            Ok((m, threshold))
        }
    }
}

impl<'de> Deserialize<'de> for MatchingConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MatchingConfig, D::Error> {
        let raw = RawConfig::deserialize(d)?;
        let mut strategies = raw
            .strategies
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.into_strategy(i))
            .collect::<Result<Vec<_>, String>>()
            .map_err(serde::de::Error::custom)?;
        strategies.sort_by_key(|s| s.priority);
        Ok(MatchingConfig {
            strategies,
            on_no_match: raw.on_no_match,
            on_multiple_match: raw.on_multiple_match,
            settings: MatchingSettings::default(),
        })
    }
}

impl MatchingConfig {
    /// A configuration with these strategies (sorted by priority), the
    /// seed's `on_no_match` / `on_multiple_match` defaults and default
    /// settings.
    pub fn new(strategies: Vec<Strategy>) -> MatchingConfig {
        let mut strategies = strategies;
        strategies.sort_by_key(|s| s.priority);
        MatchingConfig {
            strategies,
            on_no_match: OnNoMatch::default(),
            on_multiple_match: OnMultipleMatch::default(),
            settings: MatchingSettings::default(),
        }
    }

    /// Replaces the `crm.matching` settings (builder style).
    #[must_use]
    pub fn with_settings(mut self, settings: MatchingSettings) -> MatchingConfig {
        self.settings = settings;
        self
    }

    /// Parses YAML: either the `matching:` block's contents, or a document
    /// with a top-level `matching:` key (seed 000's shape; the document's
    /// other top-level keys are left to their owners) and optionally
    /// `crm: matching:` settings.
    ///
    /// ```
    /// use crm_core::matching::MatchingConfig;
    ///
    /// let cfg = MatchingConfig::from_yaml(r#"
    /// matching:
    ///   strategies:
    ///     - { type: exact_id, source: booking.campaign_id, target: campaign.id, priority: 1 }
    ///   on_no_match: create_unmatched_record
    /// crm:
    ///   matching: { fuzzy_threshold: 0.9, max_manual_review: 100 }
    /// "#).unwrap();
    /// assert_eq!(cfg.strategies.len(), 1);
    /// assert_eq!(cfg.settings.max_manual_review, Some(100));
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) with the
    /// YAML position and the problem: an unknown key, a key that does not
    /// apply to the strategy's type, a missing `source`/`target`, a threshold
    /// outside `[0, 1]`, a malformed tolerance.
    pub fn from_yaml(text: &str) -> Result<MatchingConfig, Error> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| Error::invalid_input(format!("matching config: {e}")))?;
        let wrapped = doc.get("matching").is_some();
        if !wrapped {
            return serde_yaml::from_str::<MatchingConfig>(text)
                .map_err(|e| Error::invalid_input(format!("matching config: {e}")));
        }
        #[derive(Deserialize)]
        struct Doc {
            matching: MatchingConfig,
            #[serde(default)]
            crm: Option<Crm>,
        }
        #[derive(Deserialize)]
        struct Crm {
            #[serde(default)]
            matching: Option<MatchingSettings>,
        }
        let parsed: Doc = serde_yaml::from_str(text)
            .map_err(|e| Error::invalid_input(format!("matching config: {e}")))?;
        let settings = parsed.crm.and_then(|c| c.matching).unwrap_or_default();
        Ok(parsed.matching.with_settings(settings))
    }
}
