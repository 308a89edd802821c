//! Field-level conflict resolution between two sides of a sync.
//!
//! The two sides are the **source** (the platform: our database, the data
//! warehouse, the bookings sheet) and the **target** (the CRM). The seeds'
//! words map onto them: `platform_wins` (seed 000) and "ADSapp wins"
//! (seed 003) are [`ConflictPolicy::SourceWins`]; `crm_wins` is
//! [`ConflictPolicy::TargetWins`]; "Newest Wins" is the default; `manual`
//! sends the field to a human.
//!
//! With the values both sides had at the last sync (the *base*), a field
//! changed on one side only is not a conflict: that side's value is taken.
//! Only a field changed on both sides to different values is decided by the
//! policy. Every decision is returned for the audit trail.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use crm_core::conflict::{ConflictConfig, ConflictPolicy, Outcome};
//! use crm_core::Record;
//!
//! let base = Record::new().with("email", "a@x.com").with("phone", "1");
//! let platform = Record::new().with("email", "a@y.com").with("phone", "1")
//!     .with_updated_at(Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
//! let crm = Record::new().with("email", "a@z.com").with("phone", "2")
//!     .with_updated_at(Utc.with_ymd_and_hms(2024, 1, 3, 0, 0, 0).unwrap());
//!
//! let res = ConflictConfig::new(ConflictPolicy::NewestWins).resolve(&platform, &crm, Some(&base));
//! assert_eq!(res.merged.text("email"), Some("a@z.com")); // both changed: the CRM is newer
//! assert_eq!(res.merged.text("phone"), Some("2"));       // only the CRM changed it
//! assert!(res.decisions.iter().all(|d| d.outcome == Outcome::Target));
//! ```

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::record::Record;
use crate::value::Value;

/// How a field changed on both sides is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The source (platform) value wins. Seed spellings: `platform_wins`, `adsapp_wins`.
    #[serde(alias = "platform_wins", alias = "adsapp_wins")]
    SourceWins,
    /// The target (CRM) value wins. Seed spelling: `crm_wins`.
    #[serde(alias = "crm_wins")]
    TargetWins,
    /// The side modified last wins (the default). On equal or unknown
    /// modification times the source wins, as seed 001's merge rule defaults
    /// to the data platform; the decision is recorded as a tie.
    #[default]
    #[serde(alias = "last_write_wins")]
    NewestWins,
    /// A person decides: nothing is written for the field until then.
    Manual,
}

impl ConflictPolicy {
    /// The canonical snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source_wins",
            ConflictPolicy::TargetWins => "target_wins",
            ConflictPolicy::NewestWins => "newest_wins",
            ConflictPolicy::Manual => "manual",
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which value a field ends up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The source's value; the target needs a write.
    Source,
    /// The target's value; the source needs a write.
    Target,
    /// Waiting for a person; neither side is written for this field.
    Manual,
}

/// Why the outcome was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Only the source changed the field since the last sync.
    OnlySourceChanged,
    /// Only the target changed the field since the last sync.
    OnlyTargetChanged,
    /// Both changed (or there is no base); the policy decided by side.
    Policy,
    /// Both changed; the source was modified later.
    SourceNewer,
    /// Both changed; the target was modified later.
    TargetNewer,
    /// Both changed at the same (or an unknown) time; the source won.
    Tie,
    /// Both changed; the policy is manual.
    Manual,
}

/// One field's decision, for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDecision {
    /// The field.
    pub field: String,
    /// The source's value.
    pub source_value: Value,
    /// The target's value.
    pub target_value: Value,
    /// The value at the last sync, if known.
    pub base_value: Option<Value>,
    /// Which value wins.
    pub outcome: Outcome,
    /// The policy in force for the field.
    pub policy: ConflictPolicy,
    /// Why.
    pub reason: Reason,
}

impl FieldDecision {
    /// The winning value, unless the field waits for a person.
    pub fn winner(&self) -> Option<&Value> {
        match self.outcome {
            Outcome::Source => Some(&self.source_value),
            Outcome::Target => Some(&self.target_value),
            Outcome::Manual => None,
        }
    }

    /// True if both sides changed the field (a real conflict).
    pub fn is_conflict(&self) -> bool {
        !matches!(
            self.reason,
            Reason::OnlySourceChanged | Reason::OnlyTargetChanged
        )
    }
}

/// The result of [`ConflictConfig::resolve`].
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The values both sides should converge to: every field on which they
    /// agree or that was decided. Fields waiting for a person are left out.
    pub merged: Record,
    /// One decision per field on which the sides differed.
    pub decisions: Vec<FieldDecision>,
}

impl Resolution {
    /// Fields waiting for a person.
    pub fn manual_fields(&self) -> impl Iterator<Item = &str> {
        self.decisions
            .iter()
            .filter(|d| d.outcome == Outcome::Manual)
            .map(|d| d.field.as_str())
    }

    /// The field values the target must be given (decided for the source).
    pub fn target_updates(&self) -> Record {
        self.updates_for(Outcome::Source)
    }

    /// The field values the source must be given (decided for the target).
    pub fn source_updates(&self) -> Record {
        self.updates_for(Outcome::Target)
    }

    fn updates_for(&self, winner: Outcome) -> Record {
        self.decisions
            .iter()
            .filter(|d| d.outcome == winner)
            .filter_map(|d| d.winner().map(|v| (d.field.clone(), v.clone())))
            .collect()
    }
}

/// The policy per field, with a default.
///
/// From YAML either a single policy (`conflict_resolution: "platform_wins"`)
/// or `{default: newest_wins, fields: {email: crm_wins, lead_score: manual}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ConfigForm")]
pub struct ConflictConfig {
    /// The policy for fields not listed.
    pub default: ConflictPolicy,
    /// Per-field overrides.
    pub fields: IndexMap<String, ConflictPolicy>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigForm {
    One(ConflictPolicy),
    Full {
        #[serde(default)]
        default: ConflictPolicy,
        #[serde(default)]
        fields: IndexMap<String, ConflictPolicy>,
    },
}

impl From<ConfigForm> for ConflictConfig {
    fn from(f: ConfigForm) -> Self {
        match f {
            ConfigForm::One(default) => ConflictConfig::new(default),
            ConfigForm::Full { default, fields } => ConflictConfig { default, fields },
        }
    }
}

impl ConflictConfig {
    /// One policy for every field.
    pub fn new(default: ConflictPolicy) -> Self {
        ConflictConfig {
            default,
            fields: IndexMap::new(),
        }
    }

    /// Overrides the policy of one field.
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, policy: ConflictPolicy) -> Self {
        self.fields.insert(name.into(), policy);
        self
    }

    /// The policy in force for `field`.
    pub fn policy_for(&self, field: &str) -> ConflictPolicy {
        self.fields.get(field).copied().unwrap_or(self.default)
    }

    /// Decides every field on which `source` and `target` differ.
    ///
    /// `base` is the state both had at the last sync; without it every
    /// difference is treated as a conflict. Modification times come from
    /// each record's `updated_at`. Fields are visited in source order, then
    /// the target's extra fields.
    pub fn resolve(&self, source: &Record, target: &Record, base: Option<&Record>) -> Resolution {
        let mut merged = Record::new();
        merged.id = source.id.clone().or_else(|| target.id.clone());
        merged.updated_at = source.updated_at.max(target.updated_at);
        let mut decisions = Vec::new();

        let names = source.fields.keys().chain(
            target
                .fields
                .keys()
                .filter(|k| !source.fields.contains_key(*k)),
        );
        for name in names {
            let s = source.get_or_null(name);
            let t = target.get_or_null(name);
            if same(s, t) {
                merged.set(name.clone(), s.clone());
                continue;
            }
            let b = base.map(|b| b.get_or_null(name));
            let policy = self.policy_for(name);
            let (outcome, reason) = match b {
                Some(b) if same(b, t) => (Outcome::Source, Reason::OnlySourceChanged),
                Some(b) if same(b, s) => (Outcome::Target, Reason::OnlyTargetChanged),
                _ => decide(policy, source, target),
            };
            let decision = FieldDecision {
                field: name.clone(),
                source_value: s.clone(),
                target_value: t.clone(),
                base_value: b.cloned(),
                outcome,
                policy,
                reason,
            };
            if let Some(v) = decision.winner() {
                merged.set(name.clone(), v.clone());
            }
            decisions.push(decision);
        }
        Resolution { merged, decisions }
    }
}

/// Whether two values count as the same for conflict detection: blank text
/// and null are alike, and numbers compare by value (`1.5` = `1.50` =
/// `"1.5"`, so a CRM answering numbers as strings agrees with a database
/// answering decimals).
///
/// ```
/// use crm_core::conflict::values_agree;
/// use crm_core::Value;
///
/// assert!(values_agree(&Value::Text(String::new()), &Value::Null));
/// assert!(values_agree(&Value::Text("1.5".into()), &Value::Decimal("1.50".parse().unwrap())));
/// assert!(!values_agree(&Value::Text("a".into()), &Value::Text("b".into())));
/// ```
pub fn values_agree(a: &Value, b: &Value) -> bool {
    same(a, b)
}

/// Equality that treats blank text and null alike and compares numbers by
/// value (`1.5` = `1.50` = `"1.5"`).
fn same(a: &Value, b: &Value) -> bool {
    if a.is_blank() && b.is_blank() {
        return true;
    }
    // A number on one side and its text on the other (a CRM that answers
    // numbers as strings) are the same value.
    let numeric = |v: &Value, other: &Value| match v {
        Value::Text(t) if other.as_decimal().is_some() => crate::value::parse_decimal(t),
        _ => v.as_decimal(),
    };
    match (numeric(a, b), numeric(b, a)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn decide(policy: ConflictPolicy, source: &Record, target: &Record) -> (Outcome, Reason) {
    match policy {
        ConflictPolicy::SourceWins => (Outcome::Source, Reason::Policy),
        ConflictPolicy::TargetWins => (Outcome::Target, Reason::Policy),
        ConflictPolicy::Manual => (Outcome::Manual, Reason::Manual),
        ConflictPolicy::NewestWins => match (source.updated_at, target.updated_at) {
            (Some(s), Some(t)) if t > s => (Outcome::Target, Reason::TargetNewer),
            (Some(s), Some(t)) if s > t => (Outcome::Source, Reason::SourceNewer),
            (None, Some(_)) => (Outcome::Target, Reason::TargetNewer),
            (Some(_), None) => (Outcome::Source, Reason::SourceNewer),
            _ => (Outcome::Source, Reason::Tie),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap_or_default()
    }

    fn pair() -> (Record, Record, Record) {
        let base = Record::new()
            .with("email", "a@x.com")
            .with("name", "Ada")
            .with("score", "1.5");
        let source = Record::new()
            .with("email", "a@source.com")
            .with("name", "Ada")
            .with("score", Value::Decimal("1.50".parse().unwrap()))
            .with_updated_at(at(100));
        let target = Record::new()
            .with("email", "a@target.com")
            .with("name", "Ada L.")
            .with("score", "1.5")
            .with_updated_at(at(200));
        (base, source, target)
    }

    #[test]
    fn each_policy_decides_the_contested_field() {
        let (base, source, target) = pair();
        for (policy, email, outcome, reason) in [
            (
                ConflictPolicy::SourceWins,
                Some("a@source.com"),
                Outcome::Source,
                Reason::Policy,
            ),
            (
                ConflictPolicy::TargetWins,
                Some("a@target.com"),
                Outcome::Target,
                Reason::Policy,
            ),
            (
                ConflictPolicy::NewestWins,
                Some("a@target.com"),
                Outcome::Target,
                Reason::TargetNewer,
            ),
            (
                ConflictPolicy::Manual,
                None,
                Outcome::Manual,
                Reason::Manual,
            ),
        ] {
            let res = ConflictConfig::new(policy).resolve(&source, &target, Some(&base));
            assert_eq!(res.merged.text("email"), email, "{policy}");
            let d = res.decisions.iter().find(|d| d.field == "email").unwrap();
            assert_eq!((d.outcome, d.reason, d.policy), (outcome, reason, policy));
            assert!(d.is_conflict());
            // `name` changed only on the target: no conflict, whatever the policy.
            let n = res.decisions.iter().find(|d| d.field == "name").unwrap();
            assert_eq!(
                (n.outcome, n.reason),
                (Outcome::Target, Reason::OnlyTargetChanged)
            );
            // `score` is equal by value: no decision at all.
            assert!(res.decisions.iter().all(|d| d.field != "score"));
        }
    }

    #[test]
    fn manual_fields_are_not_written() {
        let (base, source, target) = pair();
        let res = ConflictConfig::new(ConflictPolicy::NewestWins)
            .field("email", ConflictPolicy::Manual)
            .resolve(&source, &target, Some(&base));
        assert_eq!(res.manual_fields().collect::<Vec<_>>(), ["email"]);
        assert!(res.merged.get("email").is_none());
        assert!(res.target_updates().get("email").is_none());
        assert!(res.source_updates().get("email").is_none());
        assert_eq!(res.source_updates().text("name"), Some("Ada L."));
    }

    #[test]
    fn newest_wins_ties_go_to_the_source() {
        let s = Record::new().with("x", "1").with_updated_at(at(5));
        let t = Record::new().with("x", "2").with_updated_at(at(5));
        let res = ConflictConfig::default().resolve(&s, &t, None);
        assert_eq!(res.decisions[0].reason, Reason::Tie);
        assert_eq!(res.merged.text("x"), Some("1"));
        // Without any base every difference is a conflict.
        let t2 = Record::new().with("x", "2").with_updated_at(at(9));
        let res = ConflictConfig::default().resolve(&s, &t2, None);
        assert_eq!(res.decisions[0].reason, Reason::TargetNewer);
    }

    #[test]
    fn yaml_spellings_of_the_seeds() {
        let c: ConflictConfig = serde_yaml::from_str("platform_wins").unwrap();
        assert_eq!(c.default, ConflictPolicy::SourceWins);
        let c: ConflictConfig = serde_yaml::from_str("crm_wins").unwrap();
        assert_eq!(c.default, ConflictPolicy::TargetWins);
        let c: ConflictConfig =
            serde_yaml::from_str("{default: newest_wins, fields: {email: manual}}").unwrap();
        assert_eq!(c.policy_for("email"), ConflictPolicy::Manual);
        assert_eq!(c.policy_for("phone"), ConflictPolicy::NewestWins);
        assert!(serde_yaml::from_str::<ConflictConfig>("loudest_wins").is_err());
    }

    #[test]
    fn fields_missing_on_one_side_are_null() {
        let s = Record::new().with("a", "1");
        let t = Record::new().with("b", "2");
        let res =
            ConflictConfig::new(ConflictPolicy::SourceWins).resolve(&s, &t, Some(&Record::new()));
        assert_eq!(res.target_updates().text("a"), Some("1"));
        assert_eq!(res.source_updates().text("b"), Some("2"));
    }
}
