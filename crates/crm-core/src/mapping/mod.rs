//! Field mapping: which field goes where, in which direction, through which
//! transforms.
//!
//! A [`Mapping`] is an ordered list of [`FieldMap`]s. Each map reads a
//! `source` field (a dotted path such as `propensity_scores.upsell` reads a key
//! inside a JSON field), runs its chain of [`Transform`]s and writes the
//! `target` field. [`Mapping::apply`] turns a record on one side into the
//! record for the other side, collecting every failed field into one
//! [`MappingErrors`] that names the record and the fields.
//!
//! # Directions
//!
//! The platform (warehouse, booking database, sheet) is one side, the CRM the
//! other. A map's [`Direction`] says when it runs:
//!
//! - [`Direction::ToCrm`]: `source` is a platform field, `target` a CRM field;
//!   the map runs when data flows to the CRM ([`Flow::ToCrm`]).
//! - [`Direction::FromCrm`]: `source` is a CRM field, `target` a platform
//!   field; the map runs when data flows from the CRM ([`Flow::FromCrm`]).
//! - [`Direction::Bidirectional`]: written like a `to_crm` map (`source` on the
//!   platform, `target` in the CRM). It runs forward on [`Flow::ToCrm`] and
//!   reversed on [`Flow::FromCrm`]: `target` is read, `source` written, and the
//!   chain runs backwards through each transform's reverse (see the table on
//!   [`Transform`]). A chain containing `constant` has no reverse, so the map
//!   is skipped on [`Flow::FromCrm`].
//!
//! # Missing and null values
//!
//! A source field that is absent from the record is not the same as a null
//! one: an absent field writes nothing (so partial updates stay partial)
//! unless the chain produces a value from nothing (`default`, `constant`). A
//! present [`Value::Null`] goes through the chain and is written, so clearing a
//! value propagates. A dotted target is written as a field of that exact name,
//! which [`Record::get_path`] reads back.
//!
//! The target record holds only mapped fields, in map order (a later map
//! writing the same target overwrites an earlier one), plus the source
//! record's `id` and `updated_at`.
//!
//! # Example
//!
//! ```
//! use crm_core::mapping::{Flow, Mapping};
//! use crm_core::{Record, Value};
//!
//! let mapping = Mapping::from_yaml(r#"
//! mappings:
//!   - source: first_name
//!     destination: FirstName
//!     direction: bidirectional
//!     transform: INITCAP()
//!   - source: churn_risk_score
//!     destination: Churn_Risk__c
//!     transform: Scale 0-100
//!   - source: lifetime_value
//!     destination: LTV__c
//!     transform: [trim, Round to 2 decimals]
//! "#)?;
//!
//! let row = Record::new()
//!     .with_id("C-1")
//!     .with("first_name", "o'brien-smith")
//!     .with("churn_risk_score", "0.734")
//!     .with("lifetime_value", " 1234.1 ");
//! let crm = mapping.apply(&row, Flow::ToCrm).map_err(crm_core::Error::from)?;
//! assert_eq!(crm.text("FirstName"), Some("O'Brien-Smith"));
//! assert_eq!(crm.get("Churn_Risk__c").unwrap().to_string(), "73.4");
//! assert_eq!(crm.get("LTV__c").unwrap().to_string(), "1234.10");
//! assert_eq!(crm.id.as_ref().unwrap().as_str(), "C-1");
//!
//! // Coming back from the CRM only the bidirectional map runs.
//! let back = mapping.apply(&crm, Flow::FromCrm).map_err(crm_core::Error::from)?;
//! assert_eq!(back.text("first_name"), Some("O'Brien-Smith"));
//! assert_eq!(back.len(), 1);
//! # Ok::<(), crm_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::Record;
use crate::value::Value;

pub mod canonical;
mod config;
pub mod defaults;
mod error;
mod transform;

pub use config::{
    ColumnMapping, Frequency, WriteBackConfig, WriteBackField, column_index, column_letters,
};
pub use error::{ConfigError, MappingError, MappingErrors, TransformError};
pub use transform::{
    CallingCode, DateFormat, DateOutput, EnumMap, KNOWN_TRANSFORMS, PhoneError, Scale, Transform,
    TypedDate, initcap, round_to, to_e164,
};

/// When a field map runs. Serde names: `to_crm`, `from_crm`, `bidirectional`
/// (also read: `both`, `bi-directional`, and any case or `-`/space spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Platform -> CRM only.
    #[default]
    ToCrm,
    /// CRM -> platform only.
    FromCrm,
    /// Both ways; written platform -> CRM, reversed for CRM -> platform.
    Bidirectional,
}

impl Direction {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToCrm => "to_crm",
            Direction::FromCrm => "from_crm",
            Direction::Bidirectional => "bidirectional",
        }
    }

    /// Whether a map with this direction runs in `flow`.
    pub fn runs_in(self, flow: Flow) -> bool {
        matches!(
            (self, flow),
            (Direction::Bidirectional, _)
                | (Direction::ToCrm, Flow::ToCrm)
                | (Direction::FromCrm, Flow::FromCrm)
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: String = s
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .collect();
        match n.as_str() {
            "tocrm" => Ok(Direction::ToCrm),
            "fromcrm" => Ok(Direction::FromCrm),
            "bidirectional" | "both" => Ok(Direction::Bidirectional),
            _ => Err(ConfigError::UnknownDirection(s.to_owned())),
        }
    }
}

impl Serialize for Direction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Direction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The way data flows in one run of [`Mapping::apply`]. Unlike [`Direction`]
/// it has no "both": a record is always going one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the platform to the CRM.
    ToCrm,
    /// From the CRM to the platform.
    FromCrm,
}

/// One field map: read `source`, run `transform`, write `target`, in the
/// flows its `direction` allows (see the [module docs](self)).
///
/// Serde shape (YAML or JSON), with seed spellings accepted:
///
/// - `{source, target}` or `{source, destination}` (seed 001), plus optional
///   `direction` (default `to_crm`), `transform` (one transform, a list, or
///   null; also spelled `transform_rule`) and `pii` (default false);
/// - `{adsapp_field, crm_field, direction, transform_rule}` (seed 003, also
///   camelCase): for `to_crm` and `bidirectional` the platform field is the
///   source; for `from_crm` the CRM field is.
///
/// `id`, `connection_id`, `is_custom` and `notes` are accepted and ignored
/// (the seed 003 table row); any other unknown key is an error, so a typo
/// such as `tranform` is caught.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawFieldMap")]
pub struct FieldMap {
    /// Where the value is read from (dotted path).
    pub source: String,
    /// Where the value is written.
    pub target: String,
    /// When the map runs.
    pub direction: Direction,
    /// The transforms, applied in order (forward) or reversed.
    pub transform: Vec<Transform>,
    /// Whether the field is personal data: errors then never show its value.
    pub pii: bool,
}

impl FieldMap {
    /// A direct `to_crm` map from `source` to `target`.
    pub fn new(source: impl Into<String>, target: impl Into<String>) -> Self {
        FieldMap {
            source: source.into(),
            target: target.into(),
            direction: Direction::ToCrm,
            transform: Vec::new(),
            pii: false,
        }
    }

    /// Sets the direction (builder style).
    #[must_use]
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Appends a transform to the chain (builder style).
    #[must_use]
    pub fn then(mut self, transform: Transform) -> Self {
        self.transform.push(transform);
        self
    }

    /// Marks the field as personal data (builder style).
    #[must_use]
    pub fn pii(mut self, pii: bool) -> Self {
        self.pii = pii;
        self
    }

    /// Whether this map runs in `flow`, and if so which fields it reads and
    /// writes: `(read, written, reversed)`.
    pub fn plan(&self, flow: Flow) -> Option<(&str, &str, bool)> {
        match (self.direction, flow) {
            (Direction::ToCrm, Flow::ToCrm)
            | (Direction::FromCrm, Flow::FromCrm)
            | (Direction::Bidirectional, Flow::ToCrm) => Some((&self.source, &self.target, false)),
            (Direction::Bidirectional, Flow::FromCrm)
                if self.transform.iter().all(Transform::is_reversible) =>
            {
                Some((&self.target, &self.source, true))
            }
            _ => None,
        }
    }

    /// Runs the chain on one value, forward or reversed.
    ///
    /// # Errors
    /// The first [`TransformError`] of the chain, with the failing
    /// transform's name.
    pub fn transform_value(
        &self,
        value: Value,
        reversed: bool,
    ) -> Result<Value, (&'static str, TransformError)> {
        let mut v = value;
        if reversed {
            for t in self.transform.iter().rev() {
                v = t.apply_reverse(v).map_err(|e| (t.name(), e))?;
            }
        } else {
            for t in &self.transform {
                v = t.apply(v).map_err(|e| (t.name(), e))?;
            }
        }
        Ok(v)
    }
}

impl Serialize for FieldMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("FieldMap", 5)?;
        s.serialize_field("source", &self.source)?;
        s.serialize_field("target", &self.target)?;
        s.serialize_field("direction", &self.direction)?;
        s.serialize_field("transform", &self.transform)?;
        s.serialize_field("pii", &self.pii)?;
        s.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFieldMap {
    #[serde(default)]
    source: Option<String>,
    #[serde(default, alias = "destination")]
    target: Option<String>,
    #[serde(default, alias = "adsappField")]
    adsapp_field: Option<String>,
    #[serde(default, alias = "crmField")]
    crm_field: Option<String>,
    #[serde(default)]
    direction: Option<Direction>,
    #[serde(
        default,
        alias = "transform_rule",
        alias = "transformRule",
        deserialize_with = "transform::deserialize_chain"
    )]
    transform: Vec<Transform>,
    #[serde(default)]
    pii: bool,
    #[serde(default)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default, alias = "connectionId")]
    connection_id: Option<serde::de::IgnoredAny>,
    #[serde(default, alias = "isCustom")]
    is_custom: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    notes: Option<serde::de::IgnoredAny>,
}

impl TryFrom<RawFieldMap> for FieldMap {
    type Error = ConfigError;

    fn try_from(raw: RawFieldMap) -> Result<Self, Self::Error> {
        let _ignored = (raw.id, raw.connection_id, raw.is_custom, raw.notes);
        let direction = raw.direction.unwrap_or_default();
        let (source, target) = match (raw.source, raw.target, raw.adsapp_field, raw.crm_field) {
            (Some(s), Some(t), None, None) => (s, t),
            (None, None, Some(platform), Some(crm)) => match direction {
                Direction::FromCrm => (crm, platform),
                Direction::ToCrm | Direction::Bidirectional => (platform, crm),
            },
            (None, Some(t), None, None)
                if raw
                    .transform
                    .iter()
                    .any(|x| matches!(x, Transform::Constant(_))) =>
            {
                (String::new(), t)
            }
            _ => {
                return Err(ConfigError::InvalidFieldMap {
                    reason: "expected `source` and `target` (or `destination`), or \
                             `adsapp_field` and `crm_field`"
                        .into(),
                });
            }
        };
        if target.trim().is_empty() {
            return Err(ConfigError::InvalidFieldMap {
                reason: format!("empty target for source {source:?}"),
            });
        }
        Ok(FieldMap {
            source,
            target,
            direction,
            transform: raw.transform,
            pii: raw.pii,
        })
    }
}

/// An ordered list of [`FieldMap`]s, applied to whole records.
///
/// Serde shape: a list of field maps. [`Mapping::from_yaml`] and
/// [`Mapping::from_json`] also accept a document with a `mappings:` key (seed
/// 001) or a `fields:` key.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Mapping {
    maps: Vec<FieldMap>,
    #[serde(skip)]
    key_field: Option<String>,
}

impl<'de> Deserialize<'de> for Mapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let maps = Vec::<FieldMap>::deserialize(deserializer)?;
        Ok(Mapping {
            maps,
            key_field: None,
        })
    }
}

impl FromIterator<FieldMap> for Mapping {
    fn from_iter<I: IntoIterator<Item = FieldMap>>(iter: I) -> Self {
        Mapping {
            maps: iter.into_iter().collect(),
            key_field: None,
        }
    }
}

impl Mapping {
    /// An empty mapping.
    pub fn new() -> Self {
        Mapping::default()
    }

    /// Appends a field map (builder style).
    #[must_use]
    pub fn with(mut self, map: FieldMap) -> Self {
        self.maps.push(map);
        self
    }

    /// Appends a field map.
    pub fn push(&mut self, map: FieldMap) {
        self.maps.push(map);
    }

    /// Names the field whose value labels a record without id in errors
    /// (e.g. `booking_id`), builder style.
    #[must_use]
    pub fn with_key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = Some(field.into());
        self
    }

    /// Sets the default calling code of every `phone` transform that has none
    /// (builder style), e.g. for the provider defaults in [`defaults`].
    #[must_use]
    pub fn with_phone_default_country(mut self, code: CallingCode) -> Self {
        for map in &mut self.maps {
            for t in &mut map.transform {
                if let Transform::Phone { default_country } = t {
                    default_country.get_or_insert(code);
                }
            }
        }
        self
    }

    /// The field maps, in order.
    pub fn maps(&self) -> &[FieldMap] {
        &self.maps
    }

    /// Number of field maps.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// True when there are no field maps.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The map writing `target` in `flow`, if any (the last one, as it wins).
    pub fn map_for_target(&self, target: &str, flow: Flow) -> Option<&FieldMap> {
        self.maps
            .iter()
            .rev()
            .find(|m| m.plan(flow).is_some_and(|(_, w, _)| w == target))
    }

    /// The fields read in `flow`, in map order (what to ask a source for).
    pub fn fields_read(&self, flow: Flow) -> Vec<&str> {
        self.maps
            .iter()
            .filter_map(|m| m.plan(flow).map(|(r, _, _)| r))
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// The fields written in `flow`, in map order, without repeats.
    pub fn fields_written(&self, flow: Flow) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, w, _) in self.maps.iter().filter_map(|m| m.plan(flow)) {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }

    /// Maps one record. Labels it in errors by its id, else its key field,
    /// else `#0`; use [`Mapping::apply_at`] inside a batch.
    ///
    /// # Errors
    /// [`MappingErrors`] with every field that failed.
    pub fn apply(&self, record: &Record, flow: Flow) -> Result<Record, MappingErrors> {
        self.apply_at(record, flow, 0)
    }

    /// Maps one record that sits at `index` in its batch (the index labels a
    /// record with neither id nor key field in errors).
    ///
    /// # Errors
    /// [`MappingErrors`] with every field that failed.
    pub fn apply_at(
        &self,
        record: &Record,
        flow: Flow,
        index: usize,
    ) -> Result<Record, MappingErrors> {
        let mut out = Record {
            id: record.id.clone(),
            updated_at: record.updated_at,
            fields: Default::default(),
        };
        let mut errors = Vec::new();
        for map in &self.maps {
            let Some((read, write, reversed)) = map.plan(flow) else {
                continue;
            };
            let input = record.get_path(read);
            let absent = input.is_none();
            match map.transform_value(input.unwrap_or(Value::Null), reversed) {
                Ok(Value::Null) if absent => {}
                Ok(v) => {
                    out.set(write, v);
                }
                Err((transform, error)) => errors.push(MappingError {
                    record: String::new(),
                    source: read.to_owned(),
                    target: write.to_owned(),
                    transform,
                    pii: map.pii,
                    error,
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            let label = record.label(self.key_field.as_deref(), index);
            for e in &mut errors {
                e.record.clone_from(&label);
            }
            Err(MappingErrors {
                record: label,
                errors,
            })
        }
    }

    /// Maps a batch, one result per record, in order; records are labelled
    /// by their index when they have neither id nor key field.
    pub fn apply_all(&self, records: &[Record], flow: Flow) -> Vec<Result<Record, MappingErrors>> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| self.apply_at(r, flow, i))
            .collect()
    }

    /// Loads a mapping from YAML: a list of field maps, or a document with a
    /// `mappings:` (seed 001) or `fields:` list.
    ///
    /// # Errors
    /// [`ConfigError`] for YAML that does not parse or a bad field map.
    pub fn from_yaml(text: &str) -> Result<Mapping, ConfigError> {
        let json: serde_json::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Mapping::from_json_value(json)
    }

    /// Loads a mapping from JSON, in the shapes of [`Mapping::from_yaml`] (the
    /// seed 003 API body `{"mappings": [{"adsappField", "crmField", ...}]}`
    /// included).
    ///
    /// # Errors
    /// [`ConfigError`] for JSON that does not parse or a bad field map.
    pub fn from_json(text: &str) -> Result<Mapping, ConfigError> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Mapping::from_json_value(json)
    }

    fn from_json_value(json: serde_json::Value) -> Result<Mapping, ConfigError> {
        let list = match json {
            serde_json::Value::Array(_) => json,
            serde_json::Value::Object(mut o) => {
                match o.remove("mappings").or_else(|| o.remove("fields")) {
                    Some(list) => list,
                    None => {
                        return Err(ConfigError::Parse(
                            "expected a list of field maps or a `mappings:` list".into(),
                        ));
                    }
                }
            }
            _ => {
                return Err(ConfigError::Parse(
                    "expected a list of field maps or a `mappings:` list".into(),
                ));
            }
        };
        serde_json::from_value::<Mapping>(list).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}
