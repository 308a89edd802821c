//! [`Value`]: one field value of a record, typed.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One field value.
///
/// Money and every other non-integer number is a [`Decimal`], never a float,
/// so `1234.10` keeps its scale and sums are exact. The serde form is
/// externally tagged (`{"decimal": "1234.10"}`, `{"date": "2024-01-15"}`,
/// `"null"`), so a value survives a round trip through JSON or YAML with its
/// type and its decimal scale intact.
///
/// ```
/// use crm_core::Value;
/// use rust_decimal::Decimal;
///
/// let v = Value::Decimal(Decimal::new(123410, 2));
/// let json = serde_json::to_string(&v).unwrap();
/// assert_eq!(json, r#"{"decimal":"1234.10"}"#);
/// let back: Value = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.as_decimal().unwrap().scale(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (counts, impressions).
    Int(i64),
    /// An exact decimal (money, rates, scores).
    Decimal(#[serde(with = "rust_decimal::serde::str")] Decimal),
    /// Text.
    Text(String),
    /// A calendar date without time zone.
    Date(NaiveDate),
    /// An instant, in UTC.
    DateTime(DateTime<Utc>),
    /// Structured data (custom JSON fields, nested objects).
    Json(serde_json::Value),
}

/// The type of a [`Value`], also used by schemas and validation rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// [`Value::Null`].
    Null,
    /// [`Value::Bool`].
    Bool,
    /// [`Value::Int`].
    Int,
    /// [`Value::Decimal`].
    Decimal,
    /// [`Value::Text`].
    Text,
    /// [`Value::Date`].
    Date,
    /// [`Value::DateTime`].
    DateTime,
    /// [`Value::Json`].
    Json,
}

impl ValueType {
    /// The snake_case name (`"decimal"`, `"date_time"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Null => "null",
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Decimal => "decimal",
            ValueType::Text => "text",
            ValueType::Date => "date",
            ValueType::DateTime => "date_time",
            ValueType::Json => "json",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Null => ValueType::Null,
            Value::Bool(_) => ValueType::Bool,
            Value::Int(_) => ValueType::Int,
            Value::Decimal(_) => ValueType::Decimal,
            Value::Text(_) => ValueType::Text,
            Value::Date(_) => ValueType::Date,
            Value::DateTime(_) => ValueType::DateTime,
            Value::Json(_) => ValueType::Json,
        }
    }

    /// True for [`Value::Null`] and for text that is empty or only whitespace:
    /// what a spreadsheet or form means by "no value".
    pub fn is_blank(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Text(s) => s.trim().is_empty(),
            Value::Json(serde_json::Value::Null) => true,
            _ => false,
        }
    }

    /// True only for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text, if this is [`Value::Text`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number as a decimal, for [`Value::Decimal`] and [`Value::Int`].
    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::Decimal(d) => Some(*d),
            Value::Int(i) => Some(Decimal::from(*i)),
            _ => None,
        }
    }

    /// The integer, if this is [`Value::Int`] or a decimal with no fraction.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Decimal(d) if d.fract().is_zero() => i64::try_from(d.trunc()).ok(),
            _ => None,
        }
    }

    /// The boolean, if this is [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The date, if this is [`Value::Date`] (or the date part of a [`Value::DateTime`]).
    pub fn as_date(&self) -> Option<NaiveDate> {
        match self {
            Value::Date(d) => Some(*d),
            Value::DateTime(t) => Some(t.date_naive()),
            _ => None,
        }
    }

    /// The instant, if this is [`Value::DateTime`].
    pub fn as_datetime(&self) -> Option<DateTime<Utc>> {
        match self {
            Value::DateTime(t) => Some(*t),
            _ => None,
        }
    }

    /// Converts plain JSON into a value: strings to text, integers to
    /// [`Value::Int`], other numbers to exact decimals (parsed from their JSON
    /// text, so `0.1` is exactly `0.1`), objects and arrays to [`Value::Json`].
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else {
                    let text = n.to_string();
                    parse_decimal(&text)
                        .map(Value::Decimal)
                        .unwrap_or(Value::Json(serde_json::Value::Number(n)))
                }
            }
            serde_json::Value::String(s) => Value::Text(s),
            other => Value::Json(other),
        }
    }

    /// Converts the value into plain JSON (decimals as JSON strings so no
    /// precision is lost, dates as ISO 8601 strings).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Decimal(d) => serde_json::Value::String(d.to_string()),
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Date(d) => serde_json::Value::String(d.to_string()),
            Value::DateTime(t) => {
                serde_json::Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            Value::Json(j) => j.clone(),
        }
    }
}

/// Parses a decimal written in plain or scientific notation, keeping the scale
/// as written (`"1234.10"` has scale 2). Returns `None` if it is not a number
/// or does not fit.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.contains(['e', 'E']) {
        Decimal::from_scientific(t).ok()
    } else {
        t.parse::<Decimal>().ok()
    }
}

impl fmt::Display for Value {
    /// Renders the value as plain text, the way it would go into a CSV cell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(s) => f.write_str(s),
            Value::Date(d) => write!(f, "{d}"),
            Value::DateTime(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Json(j) => write!(f, "{j}"),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(v.into()) }
        })*
    };
}

value_from! {
    bool => Bool,
    i64 => Int,
    i32 => Int,
    u32 => Int,
    Decimal => Decimal,
    String => Text,
    &str => Text,
    NaiveDate => Date,
    DateTime<Utc> => DateTime,
    serde_json::Value => Json,
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_numbers_become_exact_decimals() {
        let v = Value::from_json(serde_json::json!(0.1));
        assert_eq!(v, Value::Decimal(Decimal::new(1, 1)));
        assert_eq!(Value::from_json(serde_json::json!(42)), Value::Int(42));
    }

    #[test]
    fn scientific_notation_parses() {
        assert_eq!(parse_decimal("1.5e3"), Some(Decimal::new(1500, 0)));
        assert_eq!(parse_decimal(" 12.30 ").map(|d| d.scale()), Some(2));
        assert_eq!(parse_decimal("abc"), None);
        assert_eq!(parse_decimal(""), None);
        // Out of range is None, not a panic or infinity.
        assert_eq!(parse_decimal("23E123123"), None);
    }

    #[test]
    fn blank_means_null_or_whitespace() {
        assert!(Value::Null.is_blank());
        assert!(Value::Text("  ".into()).is_blank());
        assert!(!Value::Int(0).is_blank());
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Value::Decimal(Decimal::new(m, s))),
            ".{0,20}".prop_map(Value::Text),
            (-100_000i32..100_000).prop_map(|d| Value::Date(
                NaiveDate::from_num_days_from_ce_opt(700_000 + d).unwrap_or_default()
            )),
            (0i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Value::DateTime(
                DateTime::from_timestamp(s, n).unwrap_or_default()
            )),
            "[a-z]{0,8}".prop_map(|k| Value::Json(serde_json::json!({ k: [1, "x", null] }))),
        ];
        leaf
    }

    proptest! {
        #[test]
        fn serde_round_trip_keeps_type_and_scale(v in arb_value()) {
            let json = serde_json::to_string(&v).unwrap();
            let back: Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &v);
            if let (Value::Decimal(a), Value::Decimal(b)) = (&v, &back) {
                prop_assert_eq!(a.scale(), b.scale());
                prop_assert_eq!(a.to_string(), b.to_string());
            }
            let yaml = serde_yaml::to_string(&v).unwrap();
            let back: Value = serde_yaml::from_str(&yaml).unwrap();
            prop_assert_eq!(&back, &v);
        }
    }
}
