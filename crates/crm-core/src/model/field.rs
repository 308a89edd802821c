//! [`FieldValue`]: how a typed field converts to and from a [`Value`].

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::value::{Value, parse_decimal};

/// A Rust type a canonical model field can have.
///
/// `from_value` is lenient where the data source is known to be loose (a
/// spreadsheet cell holding `1001` for a text id, a CSV holding `"2500.00"` for
/// a decimal) and strict about meaning: text that is not a number is an error,
/// never zero.
pub trait FieldValue: Sized {
    /// Converts to a record value.
    fn to_value(&self) -> Value;

    /// Converts from a record value that is not blank; the message says what
    /// was wrong (the caller adds the record and field).
    ///
    /// # Errors
    /// A message naming the expected type and what was found.
    fn from_value(value: &Value) -> Result<Self, String>;

    /// The value a missing or blank field takes, if the type allows one
    /// (`None` for `Option<T>`, a documented default for some types).
    fn when_missing() -> Option<Self> {
        None
    }
}

fn found(value: &Value) -> String {
    let mut shown = value.to_string();
    if shown.chars().count() > 40 {
        shown = shown.chars().take(40).collect::<String>() + "...";
    }
    format!("{} {shown:?}", value.value_type())
}

impl<T: FieldValue> FieldValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, FieldValue::to_value)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        T::from_value(value).map(Some)
    }
    fn when_missing() -> Option<Self> {
        Some(None)
    }
}

impl FieldValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            Value::Int(_) | Value::Decimal(_) => Ok(value.to_string()),
            other => Err(format!("expected text, found {}", found(other))),
        }
    }
}

impl FieldValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => s
                .trim()
                .parse::<i64>()
                .ok()
                .or_else(|| parse_decimal(s).and_then(|d| Value::Decimal(d).as_i64()))
                .ok_or_else(|| format!("expected a whole number, found {}", found(value))),
            other => other
                .as_i64()
                .ok_or_else(|| format!("expected a whole number, found {}", found(other))),
        }
    }
}

impl FieldValue for Decimal {
    fn to_value(&self) -> Value {
        Value::Decimal(*self)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => parse_decimal(s),
            other => other.as_decimal(),
        }
        .ok_or_else(|| format!("expected a decimal number, found {}", found(value)))
    }
}

impl FieldValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(format!("expected true or false, found {}", found(value))),
            },
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(format!("expected true or false, found {}", found(other))),
        }
    }
}

impl FieldValue for NaiveDate {
    fn to_value(&self) -> Value {
        Value::Date(*self)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Date(d) => Ok(*d),
            Value::Text(s) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| format!("expected a date YYYY-MM-DD, found {}", found(value))),
            other => Err(format!("expected a date, found {}", found(other))),
        }
    }
}

impl FieldValue for DateTime<Utc> {
    fn to_value(&self) -> Value {
        Value::DateTime(*self)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::DateTime(t) => Ok(*t),
            Value::Text(s) => DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("expected an RFC 3339 timestamp, found {}", found(value))),
            other => Err(format!("expected a timestamp, found {}", found(other))),
        }
    }
}

impl FieldValue for serde_json::Value {
    fn to_value(&self) -> Value {
        Value::Json(self.clone())
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Json(j) => Ok(j.clone()),
            Value::Text(s) => serde_json::from_str(s)
                .map_err(|e| format!("expected JSON, found {}: {e}", found(value))),
            other => Ok(other.to_json()),
        }
    }
}
