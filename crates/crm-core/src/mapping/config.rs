//! Configuration shapes of the seeds: spreadsheet column mappings (seed 000
//! `column_mapping`) and write-back field lists (seed 000 `write_back`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ConfigError;
use super::transform::{Transform, deserialize_chain};
use super::{Direction, FieldMap, Mapping};
use crate::record::Record;
use crate::value::Value;

/// The zero-based index of a spreadsheet column: `A` = 0, `Z` = 25, `AA` =
/// 26, `AZ` = 51, `BA` = 52, `ZZ` = 701, `AAA` = 702. Letters may be lower
/// case; surrounding whitespace is ignored.
///
/// ```
/// use crm_core::mapping::column_index;
/// assert_eq!(column_index("AA").unwrap(), 26);
/// assert!(column_index("A1").is_err());
/// ```
///
/// # Errors
/// [`ConfigError::InvalidColumn`] for an empty string, a non-letter, or more
/// letters than an index can hold.
pub fn column_index(letters: &str) -> Result<usize, ConfigError> {
    let bad = || ConfigError::InvalidColumn {
        letters: letters.to_owned(),
    };
    let t = letters.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut n: usize = 0;
    for c in t.chars() {
        let c = c.to_ascii_uppercase();
        if !c.is_ascii_uppercase() {
            return Err(bad());
        }
        let digit = (c as usize) - ('A' as usize) + 1;
        n = n
            .checked_mul(26)
            .and_then(|n| n.checked_add(digit))
            .ok_or_else(bad)?;
    }
    Ok(n - 1)
}

/// The letters of a zero-based spreadsheet column index (the inverse of
/// [`column_index`]): 0 = `A`, 26 = `AA`, 702 = `AAA`.
pub fn column_letters(index: usize) -> String {
    let mut out = Vec::new();
    let mut n = index as u128 + 1;
    while n > 0 {
        let rem = ((n - 1) % 26) as u8;
        out.push(char::from(b'A' + rem));
        n = (n - 1) / 26;
    }
    out.iter().rev().collect()
}

/// A spreadsheet's columns mapped to field names (seed 000
/// `column_mapping: {A: booking_id, B: client_name, ...}`).
///
/// Columns keep the order they were written in; a column or a field may
/// appear only once. [`ColumnMapping::record_from_row`] and
/// [`ColumnMapping::row_from_record`] convert between sheet rows and records.
///
/// ```
/// use crm_core::mapping::ColumnMapping;
/// use crm_core::Value;
///
/// let cols = ColumnMapping::from_yaml("A: booking_id\nC: budget\n").unwrap();
/// let row = vec![Value::from("BK-1"), Value::from("ignored"), Value::from("2500.00")];
/// let rec = cols.record_from_row(&row);
/// assert_eq!(rec.text("booking_id"), Some("BK-1"));
/// assert_eq!(cols.row_from_record(&rec).len(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ColumnMapping {
    columns: Vec<(usize, String)>,
}

impl ColumnMapping {
    /// Builds a column mapping from `(letters, field)` pairs.
    ///
    /// # Errors
    /// [`ConfigError::InvalidColumn`] for bad letters,
    /// [`ConfigError::Duplicate`] for a column or field given twice.
    pub fn new<L, F>(pairs: impl IntoIterator<Item = (L, F)>) -> Result<Self, ConfigError>
    where
        L: AsRef<str>,
        F: Into<String>,
    {
        let mut out = ColumnMapping::default();
        for (letters, field) in pairs {
            out.insert(column_index(letters.as_ref())?, field.into())?;
        }
        Ok(out)
    }

    /// Adds a column by index.
    ///
    /// # Errors
    /// [`ConfigError::Duplicate`] for a column or field already mapped,
    /// [`ConfigError::InvalidFieldMap`] for an empty field name.
    pub fn insert(&mut self, index: usize, field: String) -> Result<(), ConfigError> {
        if field.trim().is_empty() {
            return Err(ConfigError::InvalidFieldMap {
                reason: format!("column {} has an empty field name", column_letters(index)),
            });
        }
        if self.columns.iter().any(|(i, _)| *i == index) {
            return Err(ConfigError::Duplicate {
                what: "column",
                name: column_letters(index),
            });
        }
        if self.columns.iter().any(|(_, f)| *f == field) {
            return Err(ConfigError::Duplicate {
                what: "field",
                name: field,
            });
        }
        self.columns.push((index, field));
        Ok(())
    }

    /// Loads the `column_mapping` map itself from YAML (`A: booking_id`...).
    ///
    /// # Errors
    /// [`ConfigError`] for YAML that is not a map of letters to names, or bad
    /// or repeated columns.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The field of a column.
    pub fn field(&self, index: usize) -> Option<&str> {
        self.columns
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, f)| f.as_str())
    }

    /// The column of a field.
    pub fn column(&self, field: &str) -> Option<usize> {
        self.columns
            .iter()
            .find(|(_, f)| f == field)
            .map(|(i, _)| *i)
    }

    /// `(column index, field)` pairs in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        self.columns.iter().map(|(i, f)| (*i, f.as_str()))
    }

    /// Number of mapped columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when no column is mapped.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// One past the highest mapped column: the row width to write.
    pub fn width(&self) -> usize {
        self.columns.iter().map(|(i, _)| i + 1).max().unwrap_or(0)
    }

    /// The A1-notation range of the mapped columns from `first_row` on, e.g.
    /// `A2:I` for columns A to I and data starting at row 2.
    pub fn range(&self, first_row: u32) -> Option<String> {
        let lo = self.columns.iter().map(|(i, _)| *i).min()?;
        let hi = self.columns.iter().map(|(i, _)| *i).max()?;
        Some(format!(
            "{}{first_row}:{}",
            column_letters(lo),
            column_letters(hi)
        ))
    }

    /// A record from one sheet row: each mapped column's cell under its field
    /// name (a missing cell, as in a short row, is [`Value::Null`]);
    /// unmapped columns are ignored.
    pub fn record_from_row(&self, row: &[Value]) -> Record {
        self.columns
            .iter()
            .map(|(i, f)| (f.clone(), row.get(*i).cloned().unwrap_or(Value::Null)))
            .collect()
    }

    /// A sheet row from a record: [`ColumnMapping::width`] cells, each mapped
    /// field in its column, [`Value::Null`] elsewhere and for missing fields.
    pub fn row_from_record(&self, record: &Record) -> Vec<Value> {
        let mut row = vec![Value::Null; self.width()];
        for (i, f) in &self.columns {
            if let (Some(cell), Some(v)) = (row.get_mut(*i), record.get(f)) {
                *cell = v.clone();
            }
        }
        row
    }
}

impl Serialize for ColumnMapping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(Some(self.columns.len()))?;
        for (i, f) in &self.columns {
            m.serialize_entry(&column_letters(*i), f)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ColumnMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = indexmap::IndexMap::<String, String>::deserialize(deserializer)?;
        ColumnMapping::new(pairs).map_err(serde::de::Error::custom)
    }
}

/// How often a write-back field is pushed (seed 000 "Trigger" column).
/// Serde names `daily`, `hourly`, `on_change`, `on_match`; `on change`,
/// `On match`, `on-change` are read too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// Once a day.
    Daily,
    /// Once an hour.
    Hourly,
    /// Whenever the source value changes.
    OnChange,
    /// When a booking is matched to a campaign.
    OnMatch,
}

impl Frequency {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Hourly => "hourly",
            Frequency::OnChange => "on_change",
            Frequency::OnMatch => "on_match",
        }
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Frequency {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: String = s
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .collect();
        match n.as_str() {
            "daily" => Ok(Frequency::Daily),
            "hourly" => Ok(Frequency::Hourly),
            "onchange" => Ok(Frequency::OnChange),
            "onmatch" => Ok(Frequency::OnMatch),
            _ => Err(ConfigError::UnknownFrequency(s.to_owned())),
        }
    }
}

impl Serialize for Frequency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Frequency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One write-back field (seed 000 `write_back.fields[]`): `source` and
/// `target` are qualified names, `[schema.]table.column`, such as
/// `gold.pacing_snapshots.actual_spend` -> `bookings.actual_spend`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBackField {
    /// The qualified source column.
    pub source: String,
    /// The qualified target column.
    pub target: String,
    /// When the field is pushed.
    pub frequency: Frequency,
    /// The direction (default `to_crm`: platform -> CRM, as the seed's
    /// write-back table has for all but `campaign_status`).
    #[serde(default)]
    pub direction: Direction,
    /// Transforms applied on the way (optional; same forms as field maps).
    #[serde(default, deserialize_with = "deserialize_chain")]
    pub transform: Vec<Transform>,
}

fn split_qualified(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once('.') {
        Some((table, column)) => (Some(table), column),
        None => (None, name),
    }
}

impl WriteBackField {
    /// The table part of `source` (`gold.pacing_snapshots`), if qualified.
    pub fn source_table(&self) -> Option<&str> {
        split_qualified(&self.source).0
    }

    /// The column part of `source` (`actual_spend`).
    pub fn source_column(&self) -> &str {
        split_qualified(&self.source).1
    }

    /// The table part of `target` (`bookings`), if qualified.
    pub fn target_table(&self) -> Option<&str> {
        split_qualified(&self.target).0
    }

    /// The column part of `target` (`actual_spend`).
    pub fn target_column(&self) -> &str {
        split_qualified(&self.target).1
    }

    /// The field map between the two columns, with this field's direction
    /// and transforms.
    pub fn field_map(&self) -> FieldMap {
        FieldMap {
            source: self.source_column().to_owned(),
            target: self.target_column().to_owned(),
            direction: self.direction,
            transform: self.transform.clone(),
            pii: false,
        }
    }
}

/// The seed 000 `write_back:` block.
///
/// `conflict_resolution` takes the seeds' policy names (`platform_wins`,
/// `crm_wins`, `newest_wins`, `manual`) or a per-field
/// [`crate::conflict::ConflictConfig`]; it defaults to `newest_wins`. A
/// `write_back` block is on unless it says `enabled: false`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBackConfig {
    /// Whether write-back runs.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// The fields written back.
    pub fields: Vec<WriteBackField>,
    /// How a field changed on both sides is decided.
    #[serde(default)]
    pub conflict_resolution: crate::conflict::ConflictConfig,
    /// Whether every write-back is recorded in the audit trail.
    #[serde(default)]
    pub audit_trail: bool,
}

fn enabled_default() -> bool {
    true
}

impl WriteBackConfig {
    /// Loads the block from YAML: either the block itself or a document
    /// with a top-level `write_back:` key.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for YAML that is not in this shape (an unknown
    /// frequency or key included).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut json: serde_json::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(inner) = json.as_object_mut().and_then(|o| o.remove("write_back")) {
            json = inner;
        }
        serde_json::from_value(json).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The fields pushed at `frequency`.
    pub fn fields_at(&self, frequency: Frequency) -> impl Iterator<Item = &WriteBackField> {
        self.fields.iter().filter(move |f| f.frequency == frequency)
    }

    /// A mapping of the fields' columns (see [`WriteBackField::field_map`]),
    /// optionally only those pushed at `frequency`.
    pub fn mapping(&self, frequency: Option<Frequency>) -> Mapping {
        self.fields
            .iter()
            .filter(|f| frequency.is_none_or(|q| f.frequency == q))
            .map(WriteBackField::field_map)
            .collect()
    }
}
