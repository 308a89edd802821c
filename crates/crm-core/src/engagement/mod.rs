//! Social engagement scoring (seed 002, "Engagement Scoring"): a 0-100
//! score from a contact's interactions, for fields such as Salesforce
//! `social_engagement_score__c` or HubSpot `social_engagement_score`.
//!
//! # Formula
//!
//! Each [`Interaction`] is `count` actions of one [`InteractionKind`] at one
//! time. With a weight `w_k >= 0` per kind, a half-life `h` and the scoring
//! instant `now`:
//!
//! ```text
//! age_i = max(0, now - time_i)                  (future interactions count as new)
//! decay_i = 2^(-age_i / h)                      (1 when decay is off)
//! raw = Σ w_kind(i) * count_i * decay_i         (raw points)
//! score = round_2(100 * (1 - e^(-raw / scale)))  (scale > 0)
//! ```
//!
//! `round_2` rounds to 2 decimal places, half away from zero; the result is
//! clamped to `[0, 100]`. The score is bounded (it tends to 100 and reaches
//! `100.00` once `raw` is about `9.9 * scale`), it is `0` with no
//! interactions, and it is monotone: more interactions, a larger count or a
//! larger weight never lower it, and older interactions never raise it. At
//! `raw = scale` the score is `63.21`.
//!
//! The sum runs in `f64` in input order, then converts to [`Decimal`]; the
//! same input gives the same score.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use crm_core::engagement::{EngagementConfig, Interaction, InteractionKind};
//! use rust_decimal::Decimal;
//!
//! let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
//! let now = at("2024-02-14T00:00:00Z");
//! let scorer = EngagementConfig::default().build().unwrap();
//!
//! // Default weights: dm 5, comment 3; 30-day half-life; scale 20.
//! let recent = [
//!     Interaction::new(InteractionKind::Dm, now, 2),
//!     Interaction::new(InteractionKind::Comment, now, 3),
//! ];
//! // raw = 2*5 + 3*3 = 19 -> 100 * (1 - e^(-19/20)) = 61.33
//! assert_eq!(scorer.score(&recent, now), Decimal::new(6133, 2));
//!
//! // The same activity 30 days earlier counts half: raw 9.5 -> 37.81.
//! let older = [
//!     Interaction::new(InteractionKind::Dm, at("2024-01-15T00:00:00Z"), 2),
//!     Interaction::new(InteractionKind::Comment, at("2024-01-15T00:00:00Z"), 3),
//! ];
//! assert_eq!(scorer.score(&older, now), Decimal::new(3781, 2));
//! assert_eq!(scorer.score(&[], now), Decimal::ZERO);
//! ```

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::attribution::{Touchpoint, TouchpointKind};
use crate::error::{Error, Result};

#[cfg(test)]
mod tests;

/// The kinds of interaction: the same closed set as attribution
/// touchpoints (`view`, `click`, `comment`, `share`, `dm`, `conversion`).
pub type InteractionKind = TouchpointKind;

/// `count` interactions of one kind at one time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Interaction {
    /// What the contact did.
    pub kind: InteractionKind,
    /// When.
    pub time: DateTime<Utc>,
    /// How many times (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Interaction {
    /// `count` interactions of `kind` at `time`.
    pub fn new(kind: InteractionKind, time: DateTime<Utc>, count: u32) -> Self {
        Interaction { kind, time, count }
    }
}

impl From<&Touchpoint> for Interaction {
    /// One interaction of the touchpoint's kind at its time.
    fn from(t: &Touchpoint) -> Self {
        Interaction::new(t.kind, t.time, 1)
    }
}

/// Points per interaction of each kind; all must be `>= 0`.
///
/// Defaults: view 0.5, click 1, comment 3, share 4, dm 5, conversion 10.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct InteractionWeights {
    /// Points per view.
    pub view: Decimal,
    /// Points per click.
    pub click: Decimal,
    /// Points per comment.
    pub comment: Decimal,
    /// Points per share.
    pub share: Decimal,
    /// Points per direct message.
    pub dm: Decimal,
    /// Points per conversion.
    pub conversion: Decimal,
}

impl Default for InteractionWeights {
    fn default() -> Self {
        InteractionWeights {
            view: Decimal::new(5, 1),
            click: Decimal::ONE,
            comment: Decimal::from(3),
            share: Decimal::from(4),
            dm: Decimal::from(5),
            conversion: Decimal::from(10),
        }
    }
}

impl InteractionWeights {
    /// The weight of `kind`.
    pub fn get(&self, kind: InteractionKind) -> Decimal {
        match kind {
            TouchpointKind::View => self.view,
            TouchpointKind::Click => self.click,
            TouchpointKind::Comment => self.comment,
            TouchpointKind::Share => self.share,
            TouchpointKind::Dm => self.dm,
            TouchpointKind::Conversion => self.conversion,
        }
    }

    /// Sets the weight of `kind`.
    #[must_use]
    pub fn with(mut self, kind: InteractionKind, weight: Decimal) -> Self {
        let slot = match kind {
            TouchpointKind::View => &mut self.view,
            TouchpointKind::Click => &mut self.click,
            TouchpointKind::Comment => &mut self.comment,
            TouchpointKind::Share => &mut self.share,
            TouchpointKind::Dm => &mut self.dm,
            TouchpointKind::Conversion => &mut self.conversion,
        };
        *slot = weight;
        self
    }
}

/// Engagement settings; the formula is in the [module docs](self).
///
/// ```
/// use crm_core::engagement::EngagementConfig;
///
/// let config: EngagementConfig = serde_json::from_str(
///     r#"{"weights": {"dm": "8"}, "half_life_secs": 604800, "scale": "50"}"#,
/// ).unwrap();
/// assert_eq!(config.weights.dm, 8.into());
/// assert_eq!(config.weights.view, "0.5".parse().unwrap()); // default kept
/// assert!(config.build().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EngagementConfig {
    /// Points per interaction kind.
    #[serde(default)]
    pub weights: InteractionWeights,
    /// Half-life of the age decay in seconds; `None` turns decay off.
    /// Default 30 days. Must be positive.
    #[serde(default = "default_half_life_secs")]
    pub half_life_secs: Option<u64>,
    /// Raw points at which the score is `100 * (1 - 1/e)` = 63.21; must be
    /// positive. Default 20.
    #[serde(default = "default_scale")]
    pub scale: Decimal,
}

fn default_half_life_secs() -> Option<u64> {
    Some(30 * 24 * 3600)
}

fn default_scale() -> Decimal {
    Decimal::from(20)
}

impl Default for EngagementConfig {
    fn default() -> Self {
        EngagementConfig {
            weights: InteractionWeights::default(),
            half_life_secs: default_half_life_secs(),
            scale: default_scale(),
        }
    }
}

impl EngagementConfig {
    /// Sets the weights.
    #[must_use]
    pub fn with_weights(mut self, weights: InteractionWeights) -> Self {
        self.weights = weights;
        self
    }

    /// Sets the half-life (whole seconds; zero or negative fails in
    /// [`build`](Self::build)); `None` turns decay off.
    #[must_use]
    pub fn with_half_life(mut self, half_life: Option<TimeDelta>) -> Self {
        self.half_life_secs = half_life.map(|h| u64::try_from(h.num_seconds()).unwrap_or(0));
        self
    }

    /// Sets the scale.
    #[must_use]
    pub fn with_scale(mut self, scale: Decimal) -> Self {
        self.scale = scale;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a
    /// negative weight, a scale that is not positive or a zero half-life.
    pub fn build(self) -> Result<EngagementScorer> {
        let mut weights = [0.0; TouchpointKind::ALL.len()];
        for (slot, kind) in weights.iter_mut().zip(TouchpointKind::ALL) {
            let w = self.weights.get(*kind);
            if w.is_sign_negative() && !w.is_zero() {
                return Err(
                    Error::invalid_input("engagement weights must not be negative")
                        .with_context("kind", kind)
                        .with_context("weight", w),
                );
            }
            *slot = w.to_f64().unwrap_or(0.0);
        }
        if self.scale <= Decimal::ZERO {
            return Err(Error::invalid_input("engagement `scale` must be positive")
                .with_context("scale", self.scale));
        }
        let scale = self.scale.to_f64().unwrap_or(0.0);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid_input("engagement `scale` is out of range")
                .with_context("scale", self.scale));
        }
        let half_life_secs = match self.half_life_secs {
            Some(0) => {
                return Err(Error::invalid_input(
                    "engagement `half_life_secs` must be positive",
                ));
            }
            Some(s) => Some(s as f64),
            None => None,
        };
        Ok(EngagementScorer {
            weights,
            half_life_secs,
            scale,
        })
    }
}

/// A validated [`EngagementConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct EngagementScorer {
    /// Indexed like [`TouchpointKind::ALL`].
    weights: [f64; TouchpointKind::ALL.len()],
    half_life_secs: Option<f64>,
    scale: f64,
}

impl EngagementScorer {
    fn weight(&self, kind: InteractionKind) -> f64 {
        let i = TouchpointKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.weights.get(i).copied().unwrap_or(0.0)
    }

    /// The raw points `Σ w * count * 2^(-age / h)` at `now`.
    pub fn raw_points(&self, interactions: &[Interaction], now: DateTime<Utc>) -> f64 {
        interactions
            .iter()
            .map(|i| {
                let decay = match self.half_life_secs {
                    Some(h) => {
                        let age_ms = (now - i.time).num_milliseconds().max(0) as f64;
                        (-(age_ms / 1000.0) / h).exp2()
                    }
                    None => 1.0,
                };
                self.weight(i.kind) * f64::from(i.count) * decay
            })
            .sum()
    }

    /// The score in `[0, 100]` at `now`, always with scale 2 (`0.00`,
    /// `61.33`, `100.00`).
    pub fn score(&self, interactions: &[Interaction], now: DateTime<Utc>) -> Decimal {
        let raw = self.raw_points(interactions, now);
        let hundred = Decimal::ONE_HUNDRED;
        let mut score = if raw.is_nan() || raw <= 0.0 {
            Decimal::ZERO
        } else {
            let fraction = -(-raw / self.scale).exp_m1(); // 1 - e^(-raw/scale)
            Decimal::from_f64(100.0 * fraction)
                .unwrap_or(hundred)
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
                .clamp(Decimal::ZERO, hundred)
        };
        score.rescale(2);
        score
    }
}
