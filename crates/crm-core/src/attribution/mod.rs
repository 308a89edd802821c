//! Multi-touch lead attribution (seed 002, "Lead Attribution"): which social
//! campaigns earn the credit for a conversion.
//!
//! A lead's journey is a list of [`Touchpoint`]s (a post view, a click, a
//! comment, a share, a DM, ...), each on a [`Platform`] and optionally tagged
//! with a [`CampaignId`]. An [`Attributor`] splits one [`Conversion`] among the
//! touchpoints that *count* for it, then sums the touchpoint credits per
//! campaign ([`Bucket`]).
//!
//! # Which touchpoints count
//!
//! A touchpoint counts for a conversion at time `c` when its time `t` is
//! `t <= c` (touchpoints after the conversion are ignored) and, if a lookback
//! window `L` is set, `t >= c - L` (both ends inclusive). Every
//! [`TouchpointKind`] counts the same; the kind matters for
//! [engagement](crate::engagement), not for attribution.
//!
//! Touchpoints without a campaign id follow [`Unattributed`]: by default
//! ([`Unattributed::Bucket`]) they take part like any other touchpoint and
//! their credit goes to [`Bucket::Unattributed`], so the campaigns only get
//! the share social activity outside any campaign did not earn. With
//! [`Unattributed::Skip`] they are dropped before the model runs (they can
//! then never be the first or last touch).
//!
//! The counted touchpoints are sorted by time; touchpoints with equal times
//! keep their input order (a stable sort). The result is therefore the same
//! for the same input.
//!
//! # Models
//!
//! For `n` counted touchpoints `1..=n` in that order, touchpoint `i` gets the
//! exact share `s_i`:
//!
//! | model ([`AttributionModel`]) | `s_i` |
//! |---|---|
//! | `first_touch` | `1` for `i = 1`, else `0` |
//! | `last_touch` | `1` for `i = n`, else `0` |
//! | `linear` | `1 / n` |
//! | `time_decay` | `w_i / Σ w_j` with `w_i = 2^(-age_i / half_life)`, `age_i = c - t_i` |
//! | `position_based` | `n = 1`: `1`; `n = 2`: `1/2` each; `n >= 3`: `0.4` first, `0.4` last, `0.2 / (n - 2)` each in the middle |
//!
//! With equal timestamps `first_touch` credits the earliest touchpoint that
//! comes first in the input and `last_touch` the latest one that comes last.
//! `position_based` with two touchpoints splits 50/50: the 20% for the middle
//! has nowhere to go, and giving it to first and last equally keeps the
//! model symmetric (it is also what `linear` gives).
//!
//! # Exact credits
//!
//! Credits are [`Decimal`]s with [`CREDIT_SCALE`] (6) decimal places and sum
//! to exactly `1` per conversion. Each share is cut down to a multiple of
//! `0.000001`; the units still missing go, one each, to the touchpoints with
//! the largest cut-off remainders (largest remainder method). Equal
//! remainders go to the touchpoint nearer the conversion first (later in the
//! sorted order), so under `time_decay` a later touchpoint never ends up with
//! less than an earlier one. A conversion with no counted touchpoint gets no
//! credit at all: [`ConversionCredit::is_empty`] is true and both lists are
//! empty.
//!
//! ```
//! use chrono::{DateTime, TimeDelta, Utc};
//! use crm_core::attribution::{
//!     AttributionConfig, AttributionModel, Bucket, Conversion, Touchpoint, TouchpointKind,
//! };
//! use crm_core::model::CampaignId;
//! use rust_decimal::Decimal;
//!
//! let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
//! let journey = vec![
//!     Touchpoint::new(at("2024-01-15T10:30:00Z"), "instagram", TouchpointKind::View)
//!         .with_campaign("summer-sale-2024"),
//!     Touchpoint::new(at("2024-01-15T11:00:00Z"), "instagram", TouchpointKind::Dm)
//!         .with_conversation("conv-789"),
//!     Touchpoint::new(at("2024-01-16T09:00:00Z"), "twitter", TouchpointKind::Click)
//!         .with_campaign("product-launch"),
//! ];
//! let sale = Conversion::new(at("2024-01-17T09:00:00Z"));
//!
//! let attributor = AttributionConfig::new(AttributionModel::PositionBased).build().unwrap();
//! let credit = attributor.attribute(&journey, &sale);
//! let summer = Bucket::Campaign(CampaignId::new("summer-sale-2024"));
//! assert_eq!(credit.campaign(&summer), Decimal::new(4, 1));
//! assert_eq!(credit.campaign(&Bucket::Unattributed), Decimal::new(2, 1));
//! assert_eq!(credit.total(), Decimal::ONE);
//!
//! // Time decay with a one-day half-life: the click, 24 h before the sale,
//! // weighs 2^-1 = 0.5; the view (46.5 h) 2^-1.9375 ≈ 0.261 and the DM (46 h)
//! // 2^-1.9167 ≈ 0.265. The click gets 0.5 / 1.026 ≈ 0.487.
//! let decay = AttributionConfig::new(AttributionModel::TimeDecay)
//!     .with_half_life(TimeDelta::days(1))
//!     .build()
//!     .unwrap();
//! let credit = decay.attribute(&journey, &sale);
//! let launch = credit.campaign(&Bucket::Campaign(CampaignId::new("product-launch")));
//! assert!(launch > Decimal::new(48, 2) && launch < Decimal::new(49, 2));
//! assert!(launch > credit.campaign(&summer));
//! assert_eq!(credit.total(), Decimal::ONE);
//!
//! // The model names are the seed's.
//! assert_eq!(serde_json::to_string(&AttributionModel::TimeDecay).unwrap(), r#""time_decay""#);
//! ```

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{CampaignId, LeadId};

#[cfg(test)]
mod tests;

/// Decimal places of every credit: credits are multiples of `0.000001`.
pub const CREDIT_SCALE: u32 = 6;

/// `10^CREDIT_SCALE`: the number of credit units in one conversion.
const UNITS: i64 = 1_000_000;

use crate::model::id_type;

id_type! {
    /// The id of a social post (seed 002 `postId`).
    PostId;
    /// The id of a social conversation (seed 002 `conversationId`).
    ConversationId;
}

/// A social platform. The set is the platforms' owners', so anything else is
/// kept as [`Platform::Other`] instead of failing.
///
/// Parsing ignores case and surrounding whitespace; `x` is Twitter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Platform {
    /// Twitter / X (`twitter`).
    Twitter,
    /// Instagram (`instagram`).
    Instagram,
    /// Facebook (`facebook`).
    Facebook,
    /// LinkedIn (`linkedin`).
    Linkedin,
    /// TikTok (`tiktok`).
    Tiktok,
    /// YouTube (`youtube`).
    Youtube,
    /// Any other platform, as given.
    Other(String),
}

impl Platform {
    /// The canonical lower-case name (`"twitter"`, ...), or the text of
    /// [`Platform::Other`].
    pub fn as_str(&self) -> &str {
        match self {
            Platform::Twitter => "twitter",
            Platform::Instagram => "instagram",
            Platform::Facebook => "facebook",
            Platform::Linkedin => "linkedin",
            Platform::Tiktok => "tiktok",
            Platform::Youtube => "youtube",
            Platform::Other(s) => s,
        }
    }
}

impl From<&str> for Platform {
    fn from(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "twitter" | "x" => Platform::Twitter,
            "instagram" => Platform::Instagram,
            "facebook" => Platform::Facebook,
            "linkedin" => Platform::Linkedin,
            "tiktok" => Platform::Tiktok,
            "youtube" => Platform::Youtube,
            _ => Platform::Other(s.to_owned()),
        }
    }
}

impl From<String> for Platform {
    fn from(s: String) -> Self {
        match Platform::from(s.as_str()) {
            Platform::Other(_) => Platform::Other(s),
            known => known,
        }
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        match p {
            Platform::Other(s) => s,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the lead did (seed 002: view, click, comment, share, plus DMs and
/// conversions). Serde uses the snake_case names; the seed's `post_view` is
/// read as [`TouchpointKind::View`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchpointKind {
    /// Saw a post (`view`, also read from `post_view`).
    #[serde(alias = "post_view")]
    View,
    /// Clicked a link (`click`).
    Click,
    /// Commented (`comment`).
    Comment,
    /// Shared a post (`share`).
    Share,
    /// Sent or received a direct message (`dm`).
    Dm,
    /// Converted on the platform (`conversion`), e.g. a lead form.
    Conversion,
}

impl TouchpointKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [TouchpointKind] = &[
        TouchpointKind::View,
        TouchpointKind::Click,
        TouchpointKind::Comment,
        TouchpointKind::Share,
        TouchpointKind::Dm,
        TouchpointKind::Conversion,
    ];

    /// The snake_case name (`"view"`, `"dm"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TouchpointKind::View => "view",
            TouchpointKind::Click => "click",
            TouchpointKind::Comment => "comment",
            TouchpointKind::Share => "share",
            TouchpointKind::Dm => "dm",
            TouchpointKind::Conversion => "conversion",
        }
    }
}

impl fmt::Display for TouchpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One social touchpoint of a lead's journey (seed 002 `touchpoints[]`).
///
/// Serde field names are snake_case; the seed's `timestamp`, `type`,
/// `postId`, `conversationId` and `campaignId` are accepted too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Touchpoint {
    /// When it happened.
    #[serde(alias = "timestamp")]
    pub time: DateTime<Utc>,
    /// Where it happened.
    pub platform: Platform,
    /// What the lead did.
    #[serde(alias = "type")]
    pub kind: TouchpointKind,
    /// The post, if any.
    #[serde(default, alias = "postId", skip_serializing_if = "Option::is_none")]
    pub post_id: Option<PostId>,
    /// The conversation, if any.
    #[serde(
        default,
        alias = "conversationId",
        skip_serializing_if = "Option::is_none"
    )]
    pub conversation_id: Option<ConversationId>,
    /// The campaign that gets the credit; `None` is [`Unattributed`].
    #[serde(default, alias = "campaignId", skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<CampaignId>,
}

impl Touchpoint {
    /// A touchpoint without post, conversation or campaign.
    pub fn new(time: DateTime<Utc>, platform: impl Into<Platform>, kind: TouchpointKind) -> Self {
        Touchpoint {
            time,
            platform: platform.into(),
            kind,
            post_id: None,
            conversation_id: None,
            campaign_id: None,
        }
    }

    /// Sets the campaign.
    #[must_use]
    pub fn with_campaign(mut self, campaign: impl Into<String>) -> Self {
        self.campaign_id = Some(CampaignId::new(campaign));
        self
    }

    /// Sets the post.
    #[must_use]
    pub fn with_post(mut self, post: impl Into<String>) -> Self {
        self.post_id = Some(PostId::new(post));
        self
    }

    /// Sets the conversation.
    #[must_use]
    pub fn with_conversation(mut self, conversation: impl Into<String>) -> Self {
        self.conversation_id = Some(ConversationId::new(conversation));
        self
    }

    /// The bucket this touchpoint's credit goes to.
    pub fn bucket(&self) -> Bucket {
        match &self.campaign_id {
            Some(c) => Bucket::Campaign(c.clone()),
            None => Bucket::Unattributed,
        }
    }
}

/// A conversion to attribute (a lead created, a deal won, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Conversion {
    /// When it happened; touchpoints after it do not count.
    pub time: DateTime<Utc>,
    /// The lead that converted, if known (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<LeadId>,
}

impl Conversion {
    /// A conversion at `time`.
    pub fn new(time: DateTime<Utc>) -> Self {
        Conversion {
            time,
            lead_id: None,
        }
    }

    /// Sets the lead.
    #[must_use]
    pub fn with_lead(mut self, lead: impl Into<String>) -> Self {
        self.lead_id = Some(LeadId::new(lead));
        self
    }
}

/// An attribution model; serde uses the seed's names (`first_touch`, ...).
/// The formulas are in the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionModel {
    /// All credit to the first counted touchpoint (`first_touch`).
    FirstTouch,
    /// All credit to the last counted touchpoint (`last_touch`).
    LastTouch,
    /// Equal credit to every counted touchpoint (`linear`).
    Linear,
    /// Credit halves every half-life of age before the conversion
    /// (`time_decay`).
    TimeDecay,
    /// 40% first, 40% last, 20% split over the middle (`position_based`).
    PositionBased,
}

impl AttributionModel {
    /// Every model, in declaration order.
    pub const ALL: &'static [AttributionModel] = &[
        AttributionModel::FirstTouch,
        AttributionModel::LastTouch,
        AttributionModel::Linear,
        AttributionModel::TimeDecay,
        AttributionModel::PositionBased,
    ];

    /// The snake_case name (`"first_touch"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AttributionModel::FirstTouch => "first_touch",
            AttributionModel::LastTouch => "last_touch",
            AttributionModel::Linear => "linear",
            AttributionModel::TimeDecay => "time_decay",
            AttributionModel::PositionBased => "position_based",
        }
    }
}

impl fmt::Display for AttributionModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with touchpoints that have no campaign id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unattributed {
    /// Count them; their credit goes to [`Bucket::Unattributed`] (default).
    #[default]
    Bucket,
    /// Drop them before the model runs.
    Skip,
}

/// Where credit goes: a campaign, or the explicit unattributed bucket.
///
/// Buckets sort campaigns by id first, then `Unattributed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// A campaign.
    Campaign(CampaignId),
    /// Touchpoints without a campaign id ([`Unattributed::Bucket`]).
    Unattributed,
}

/// Attribution settings: the model, its half-life, the lookback window and
/// the [`Unattributed`] policy. Durations are whole seconds.
///
/// ```
/// use crm_core::attribution::{AttributionConfig, AttributionModel};
///
/// let config: AttributionConfig = serde_json::from_str(
///     r#"{"model": "time_decay", "half_life_secs": 86400, "lookback_secs": 2592000}"#,
/// ).unwrap();
/// assert_eq!(config.model, AttributionModel::TimeDecay);
/// assert!(config.build().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AttributionConfig {
    /// The model.
    pub model: AttributionModel,
    /// Half-life of `time_decay`, in seconds; must be positive. Default 7 days.
    #[serde(default = "default_half_life_secs")]
    pub half_life_secs: u64,
    /// Only touchpoints at most this many seconds before the conversion
    /// count; `None` (default) means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback_secs: Option<u64>,
    /// Touchpoints without a campaign id.
    #[serde(default)]
    pub unattributed: Unattributed,
}

fn default_half_life_secs() -> u64 {
    7 * 24 * 3600
}

impl AttributionConfig {
    /// Defaults for `model`: 7-day half-life, no lookback limit,
    /// [`Unattributed::Bucket`].
    pub fn new(model: AttributionModel) -> Self {
        AttributionConfig {
            model,
            half_life_secs: default_half_life_secs(),
            lookback_secs: None,
            unattributed: Unattributed::Bucket,
        }
    }

    /// Sets the `time_decay` half-life (whole seconds; a negative one fails
    /// in [`build`](Self::build)).
    #[must_use]
    pub fn with_half_life(mut self, half_life: TimeDelta) -> Self {
        self.half_life_secs = u64::try_from(half_life.num_seconds()).unwrap_or(0);
        self
    }

    /// Sets the lookback window (whole seconds; negative means zero).
    #[must_use]
    pub fn with_lookback(mut self, lookback: TimeDelta) -> Self {
        self.lookback_secs = Some(u64::try_from(lookback.num_seconds()).unwrap_or(0));
        self
    }

    /// Sets the policy for touchpoints without a campaign id.
    #[must_use]
    pub fn with_unattributed(mut self, unattributed: Unattributed) -> Self {
        self.unattributed = unattributed;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when the
    /// half-life is zero or a duration does not fit a [`TimeDelta`].
    pub fn build(self) -> Result<Attributor> {
        let secs = |field: &'static str, v: u64| {
            i64::try_from(v)
                .ok()
                .and_then(TimeDelta::try_seconds)
                .ok_or_else(|| {
                    Error::invalid_input(format!("attribution `{field}` is too large"))
                        .with_context("value", v)
                })
        };
        if self.half_life_secs == 0 {
            return Err(Error::invalid_input(
                "attribution `half_life_secs` must be positive",
            ));
        }
        let half_life = secs("half_life_secs", self.half_life_secs)?;
        let lookback = match self.lookback_secs {
            Some(v) => Some(secs("lookback_secs", v)?),
            None => None,
        };
        Ok(Attributor {
            model: self.model,
            half_life,
            lookback,
            unattributed: self.unattributed,
        })
    }
}

/// The credit of one counted touchpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TouchpointCredit {
    /// The touchpoint's position in the input slice.
    pub index: usize,
    /// Where its credit goes.
    pub bucket: Bucket,
    /// Its credit, with [`CREDIT_SCALE`] decimal places.
    pub credit: Decimal,
}

/// The credit of one bucket for one conversion (or summed over several,
/// see [`totals`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CampaignCredit {
    /// The campaign or the unattributed bucket.
    pub bucket: Bucket,
    /// Its credit.
    pub credit: Decimal,
}

/// How one conversion's credit was split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConversionCredit {
    /// The conversion.
    pub conversion: Conversion,
    /// The counted touchpoints in attribution order (time, then input
    /// order), with their credit; zero credits are listed too.
    pub touchpoints: Vec<TouchpointCredit>,
    /// The credit per bucket, sorted by [`Bucket`]; every bucket of a counted
    /// touchpoint is listed, even with zero credit. Sums to exactly `1`
    /// unless empty.
    pub campaigns: Vec<CampaignCredit>,
}

impl ConversionCredit {
    /// No touchpoint counted: nothing got credit.
    pub fn is_empty(&self) -> bool {
        self.touchpoints.is_empty()
    }

    /// The credit of `bucket` (zero when it is not listed).
    pub fn campaign(&self, bucket: &Bucket) -> Decimal {
        self.campaigns
            .iter()
            .find(|c| &c.bucket == bucket)
            .map_or(Decimal::ZERO, |c| c.credit)
    }

    /// The sum of all credits: exactly `1`, or `0` when empty.
    pub fn total(&self) -> Decimal {
        self.campaigns.iter().map(|c| c.credit).sum()
    }
}

/// A validated [`AttributionConfig`]: splits conversions among touchpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributor {
    model: AttributionModel,
    half_life: TimeDelta,
    lookback: Option<TimeDelta>,
    unattributed: Unattributed,
}

impl Attributor {
    /// The model.
    pub fn model(&self) -> AttributionModel {
        self.model
    }

    /// Whether `touchpoint` counts for `conversion` (time, lookback window
    /// and [`Unattributed`] policy).
    pub fn counts(&self, touchpoint: &Touchpoint, conversion: &Conversion) -> bool {
        if touchpoint.time > conversion.time {
            return false;
        }
        if self.unattributed == Unattributed::Skip && touchpoint.campaign_id.is_none() {
            return false;
        }
        match self.lookback {
            // A window reaching before the earliest representable instant
            // excludes nothing.
            Some(window) => conversion
                .time
                .checked_sub_signed(window)
                .is_none_or(|start| touchpoint.time >= start),
            None => true,
        }
    }

    /// Splits `conversion` among `touchpoints` (one lead's journey, in any
    /// order). See the [module docs](self) for the rules.
    pub fn attribute(
        &self,
        touchpoints: &[Touchpoint],
        conversion: &Conversion,
    ) -> ConversionCredit {
        let mut counted: Vec<(usize, &Touchpoint)> = touchpoints
            .iter()
            .enumerate()
            .filter(|(_, t)| self.counts(t, conversion))
            .collect();
        // Stable: equal times keep their input order.
        counted.sort_by_key(|(_, t)| t.time);

        let shares = self.shares(&counted, conversion);
        let units = apportion(&shares);

        let touchpoint_credits: Vec<TouchpointCredit> = counted
            .iter()
            .zip(&units)
            .map(|((index, t), u)| TouchpointCredit {
                index: *index,
                bucket: t.bucket(),
                credit: Decimal::new(*u, CREDIT_SCALE),
            })
            .collect();
        let campaigns = sum_by_bucket(
            touchpoint_credits
                .iter()
                .map(|t| (t.bucket.clone(), t.credit)),
        );
        ConversionCredit {
            conversion: conversion.clone(),
            touchpoints: touchpoint_credits,
            campaigns,
        }
    }

    /// [`attribute`](Self::attribute) for each conversion of the same
    /// journey, in the order given.
    pub fn attribute_all(
        &self,
        touchpoints: &[Touchpoint],
        conversions: &[Conversion],
    ) -> Vec<ConversionCredit> {
        conversions
            .iter()
            .map(|c| self.attribute(touchpoints, c))
            .collect()
    }

    /// The exact (before rounding) share of each counted touchpoint, in
    /// attribution order. Sums to 1 up to `Decimal` precision.
    fn shares(&self, counted: &[(usize, &Touchpoint)], conversion: &Conversion) -> Vec<Decimal> {
        let n = counted.len();
        if n == 0 {
            return Vec::new();
        }
        let one_at = |i: usize| -> Vec<Decimal> {
            (0..n)
                .map(|j| if j == i { Decimal::ONE } else { Decimal::ZERO })
                .collect()
        };
        match self.model {
            AttributionModel::FirstTouch => one_at(0),
            AttributionModel::LastTouch => one_at(n - 1),
            AttributionModel::Linear => vec![Decimal::ONE / Decimal::from(n); n],
            AttributionModel::PositionBased => match n {
                1 => vec![Decimal::ONE],
                2 => vec![Decimal::new(5, 1); 2],
                _ => {
                    let middle = Decimal::new(2, 1) / Decimal::from(n - 2);
                    (0..n)
                        .map(|i| {
                            if i == 0 || i == n - 1 {
                                Decimal::new(4, 1)
                            } else {
                                middle
                            }
                        })
                        .collect()
                }
            },
            AttributionModel::TimeDecay => {
                // Ages in milliseconds; weights relative to the youngest
                // touchpoint (the last one), so the largest weight is exactly
                // 1 and the sum never underflows. Normalising cancels the
                // common factor 2^(-age_min / half_life).
                let half_life_ms = self.half_life.num_milliseconds() as f64;
                let age_ms = |t: &Touchpoint| (conversion.time - t.time).num_milliseconds();
                let youngest = counted.last().map_or(0, |(_, t)| age_ms(t));
                let weights: Vec<Decimal> = counted
                    .iter()
                    .map(|(_, t)| {
                        let extra = age_ms(t).saturating_sub(youngest) as f64;
                        let w = (-extra / half_life_ms).exp2();
                        Decimal::from_f64(w).unwrap_or(Decimal::ZERO)
                    })
                    .collect();
                let sum: Decimal = weights.iter().copied().sum();
                if sum <= Decimal::ZERO {
                    // Unreachable (the youngest weighs 1); fall back to linear.
                    return vec![Decimal::ONE / Decimal::from(n); n];
                }
                weights.into_iter().map(|w| w / sum).collect()
            }
        }
    }
}

/// Sums credits per bucket across conversions, sorted by [`Bucket`]. The
/// total is the number of non-empty conversions.
pub fn totals<'a>(credits: impl IntoIterator<Item = &'a ConversionCredit>) -> Vec<CampaignCredit> {
    sum_by_bucket(
        credits
            .into_iter()
            .flat_map(|c| c.campaigns.iter().map(|b| (b.bucket.clone(), b.credit))),
    )
}

fn sum_by_bucket(items: impl Iterator<Item = (Bucket, Decimal)>) -> Vec<CampaignCredit> {
    let mut map = std::collections::BTreeMap::<Bucket, Decimal>::new();
    for (bucket, credit) in items {
        *map.entry(bucket).or_insert(Decimal::ZERO) += credit;
    }
    map.into_iter()
        .map(|(bucket, credit)| CampaignCredit { bucket, credit })
        .collect()
}

/// Largest remainder at [`CREDIT_SCALE`]: whole units per share, summing to
/// exactly [`UNITS`] when there is at least one share.
///
/// Missing units go to the largest remainders; equal remainders to the later
/// share first. Surplus units (only possible if the shares summed to more
/// than 1 by a rounding error) come off the smallest remainders, earlier
/// shares first.
fn apportion(shares: &[Decimal]) -> Vec<i64> {
    if shares.is_empty() {
        return Vec::new();
    }
    let scale = Decimal::from(UNITS);
    let mut units = Vec::with_capacity(shares.len());
    let mut remainders = Vec::with_capacity(shares.len());
    for share in shares {
        let scaled = share.max(&Decimal::ZERO).min(&Decimal::ONE) * scale;
        let whole = scaled.floor();
        units.push(whole.to_i64().unwrap_or(0));
        remainders.push(scaled - whole);
    }
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Largest remainder first; ties: later index first.
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(b.cmp(&a)));

    let mut missing = UNITS - units.iter().sum::<i64>();
    while missing > 0 {
        for &i in &order {
            if missing == 0 {
                break;
            }
            units[i] += 1;
            missing -= 1;
        }
    }
    while missing < 0 {
        let before = missing;
        for &i in order.iter().rev() {
            if missing == 0 {
                break;
            }
            if units[i] > 0 {
                units[i] -= 1;
                missing += 1;
            }
        }
        if missing == before {
            break;
        }
    }
    units
}
