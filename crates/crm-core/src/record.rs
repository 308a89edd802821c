//! [`Record`]: a dynamic record (ordered fields, id, modification time).

use std::fmt;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Fields whose name starts with this prefix are source metadata (the sheet
/// row a record came from, problems the source found): they travel with the
/// record through a pipeline but are never stored at the destination.
pub const METADATA_PREFIX: &str = "_";

/// The field a source fills with the problems it found in a record (cells
/// it could not read, formula errors), as a JSON array of objects with at
/// least `field` and `problem`. A pipeline treats such a record as invalid.
pub const PROBLEMS_FIELD: &str = "_problems";

/// The id of a record in the system that holds it (a Salesforce `Id`, a
/// HubSpot object id, a sheet row key, a SQL primary key rendered as text).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(String);

impl RecordId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        RecordId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as owned text.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RecordId {
    fn from(s: &str) -> Self {
        RecordId(s.to_owned())
    }
}

impl From<String> for RecordId {
    fn from(s: String) -> Self {
        RecordId(s)
    }
}

/// A record: ordered field name -> [`Value`], plus the id and modification
/// time the holding system gave it.
///
/// Records are dynamic so custom fields (`Churn_Risk__c`, a HubSpot custom
/// property) travel without code changes; the typed models in
/// [`crate::model`] convert to and from records for users who want types.
///
/// ```
/// use crm_core::{Record, Value};
///
/// let r = Record::new()
///     .with_id("003XX")
///     .with("email", "ada@example.com")
///     .with("propensity_scores", serde_json::json!({"upsell": 0.72}));
/// assert_eq!(r.text("email"), Some("ada@example.com"));
/// // Dotted paths walk into JSON fields.
/// assert_eq!(r.get_path("propensity_scores.upsell").unwrap().to_string(), "0.72");
/// ```
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Record {
    /// The id in the holding system, if it has one yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RecordId>,
    /// When the holding system last modified the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The fields, in order.
    #[serde(default)]
    pub fields: IndexMap<String, Value>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// Sets the id (builder style).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<RecordId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the modification time (builder style).
    #[must_use]
    pub fn with_updated_at(mut self, at: DateTime<Utc>) -> Self {
        self.updated_at = Some(at);
        self
    }

    /// Sets a field (builder style).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// Sets a field, returning the previous value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.fields.insert(name.into(), value.into())
    }

    /// Removes a field, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.fields.shift_remove(name)
    }

    /// The value of a field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// The value of a field, treating a missing field as [`Value::Null`].
    pub fn get_or_null(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.fields.get(name).unwrap_or(&NULL)
    }

    /// The text of a field, if it is text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Looks a value up by a dotted path: a field named exactly `path` first,
    /// else the first segment as a field and the rest as keys into its JSON
    /// (an object key or an array index). Returns an owned value because a
    /// JSON leaf is converted with [`Value::from_json`].
    pub fn get_path(&self, path: &str) -> Option<Value> {
        if let Some(v) = self.fields.get(path) {
            return Some(v.clone());
        }
        let mut parts = path.split('.');
        let head = parts.next()?;
        let mut json = match self.fields.get(head)? {
            Value::Json(j) => j,
            _ => return None,
        };
        for key in parts {
            json = match json {
                serde_json::Value::Object(map) => map.get(key)?,
                serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(Value::from_json(json.clone()))
    }

    /// The problems a source recorded in [`PROBLEMS_FIELD`], as
    /// `(field, problem)` pairs; empty when there are none.
    pub fn source_problems(&self) -> Vec<(String, String)> {
        let Some(Value::Json(serde_json::Value::Array(items))) = self.get(PROBLEMS_FIELD) else {
            return match self.get(PROBLEMS_FIELD) {
                Some(v) if !v.is_blank() => vec![(String::new(), v.to_string())],
                _ => Vec::new(),
            };
        };
        items
            .iter()
            .map(|item| {
                let text = |k: &str| {
                    item.get(k)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let problem = match item {
                    serde_json::Value::String(s) => s.clone(),
                    _ => text("problem"),
                };
                (text("field"), problem)
            })
            .collect()
    }

    /// Removes the source metadata fields (see [`METADATA_PREFIX`]).
    pub fn strip_metadata(&mut self) {
        self.fields
            .retain(|name, _| !name.starts_with(METADATA_PREFIX));
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True if the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// A digest of the record's fields (names, types and values, in order),
    /// stable across runs, processes and versions of this crate: 64-bit
    /// FNV-1a over the fields' canonical JSON. Id and `updated_at` are not
    /// part of it, so it says whether the *content* changed.
    pub fn content_digest(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        for (name, value) in &self.fields {
            feed(name.as_bytes());
            feed(&[0x1f]);
            // Serialising a Value cannot fail: every variant has a JSON form.
            feed(serde_json::to_string(value).unwrap_or_default().as_bytes());
            feed(&[0x1e]);
        }
        hash
    }

    /// A label for the record in error messages: its id, or the value of
    /// `key_field`, or `"#<index>"`.
    pub fn label(&self, key_field: Option<&str>, index: usize) -> String {
        if let Some(id) = &self.id {
            return id.to_string();
        }
        if let Some(v) = key_field
            .and_then(|k| self.get(k))
            .filter(|v| !v.is_blank())
        {
            return v.to_string();
        }
        format!("#{index}")
    }
}

impl FromIterator<(String, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Record {
            id: None,
            updated_at: None,
            fields: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_walk_json() {
        let r = Record::new()
            .with("a.b", 1i64)
            .with("j", serde_json::json!({"x": {"y": [10, 20]}}));
        assert_eq!(r.get_path("a.b"), Some(Value::Int(1)));
        assert_eq!(r.get_path("j.x.y.1"), Some(Value::Int(20)));
        assert_eq!(r.get_path("j.x.z"), None);
        assert_eq!(r.get_path("missing.x"), None);
    }

    #[test]
    fn source_problems_and_metadata() {
        let mut r = Record::new()
            .with("budget", Value::Null)
            .with("_row", 7i64)
            .with(
                PROBLEMS_FIELD,
                serde_json::json!([{"column": "F", "field": "budget", "problem": "#REF!"}]),
            );
        assert_eq!(
            r.source_problems(),
            [("budget".to_owned(), "#REF!".to_owned())]
        );
        r.strip_metadata();
        assert_eq!(r.fields.keys().collect::<Vec<_>>(), ["budget"]);
        assert!(r.source_problems().is_empty());
    }

    #[test]
    fn remove_keeps_order() {
        let mut r = Record::new()
            .with("a", 1i64)
            .with("b", 2i64)
            .with("c", 3i64);
        r.remove("b");
        let names: Vec<_> = r.fields.keys().cloned().collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn content_digest_is_stable_and_content_only() {
        let a = Record::new().with("a", 1i64).with("b", "x");
        // The id is not content.
        assert_eq!(a.content_digest(), a.clone().with_id("id").content_digest());
        // Pinned: the digest must not change between versions.
        assert_eq!(format!("{:016x}", a.content_digest()), "d115f16fcf2234f9");
        assert_ne!(
            a.content_digest(),
            Record::new()
                .with("a", 1i64)
                .with("b", "y")
                .content_digest()
        );
        assert_ne!(
            a.content_digest(),
            Record::new()
                .with("b", "x")
                .with("a", 1i64)
                .content_digest()
        );
        assert_ne!(
            Record::new().with("a", "1").content_digest(),
            Record::new().with("a", 1i64).content_digest(),
            "types count"
        );
    }

    #[test]
    fn labels() {
        let r = Record::new().with("booking_id", "B-7");
        assert_eq!(r.label(Some("booking_id"), 3), "B-7");
        assert_eq!(Record::new().label(Some("booking_id"), 3), "#3");
        assert_eq!(r.clone().with_id("x").label(None, 0), "x");
    }
}
