//! Conversions between crm-core [`Value`]s and what a column stores.
//!
//! [`coerce`] turns an incoming value into the canonical value a column of a
//! given kind holds (or says why it does not fit), so the sink can reject one
//! record instead of failing a batch, and can compare incoming and stored
//! values to report `unchanged`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use crm_core::Value;
use crm_core::value::parse_decimal;
use rust_decimal::Decimal;

use crate::config::DatabaseKind;
use crate::schema::{ColumnInfo, ColumnKind};

/// Converts `value` for `col`, or says why it does not fit.
pub(crate) fn coerce(
    value: &Value,
    col: &ColumnInfo,
    dialect: DatabaseKind,
) -> Result<Value, String> {
    if value.is_null() {
        return if col.nullable {
            Ok(Value::Null)
        } else {
            Err("null in a NOT NULL column".into())
        };
    }
    match &col.kind {
        ColumnKind::Bool => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::Int(0) => Ok(Value::Bool(false)),
            Value::Int(1) => Ok(Value::Bool(true)),
            Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
                "false" | "f" | "no" | "n" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("{} is not a boolean", describe(value))),
            },
            other => Err(format!("{} is not a boolean", describe(other))),
        },
        ColumnKind::Int { bits, unsigned } => {
            let i = match value {
                Value::Int(i) => Some(*i),
                Value::Bool(b) => Some(i64::from(*b)),
                Value::Decimal(_) => value.as_i64(),
                Value::Text(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("{} is not a whole number", describe(value)))?;
            let (min, max) = match (bits, unsigned) {
                (16, false) => (i64::from(i16::MIN), i64::from(i16::MAX)),
                (16, true) => (0, i64::from(u16::MAX)),
                (32, false) => (i64::from(i32::MIN), i64::from(i32::MAX)),
                (32, true) => (0, i64::from(u32::MAX)),
                (8, false) => (i64::from(i8::MIN), i64::from(i8::MAX)),
                (8, true) => (0, i64::from(u8::MAX)),
                (_, true) => (0, i64::MAX),
                _ => (i64::MIN, i64::MAX),
            };
            if i < min || i > max {
                return Err(format!("{i} is out of range [{min}, {max}]"));
            }
            Ok(Value::Int(i))
        }
        ColumnKind::Decimal { precision, scale } => {
            let d =
                to_decimal(value).ok_or_else(|| format!("{} is not a number", describe(value)))?;
            Ok(Value::Decimal(fit_decimal(d, *precision, *scale)?))
        }
        ColumnKind::Float => to_decimal(value)
            .map(Value::Decimal)
            .ok_or_else(|| format!("{} is not a number", describe(value))),
        ColumnKind::Text { max_len } => {
            let mut s = match value {
                Value::Text(s) => s.clone(),
                Value::Json(j) => j.to_string(),
                other => other.to_string(),
            };
            if dialect == DatabaseKind::Postgres && s.contains('\0') {
                s.retain(|c| c != '\0');
            }
            if let Some(max) = max_len {
                let n = s.chars().count();
                if n > *max as usize {
                    return Err(format!("{n} characters, the column holds at most {max}"));
                }
            }
            Ok(Value::Text(s))
        }
        ColumnKind::Date => match value {
            Value::Date(d) => Ok(Value::Date(*d)),
            Value::DateTime(t) if t.time() == chrono::NaiveTime::MIN => {
                Ok(Value::Date(t.date_naive()))
            }
            Value::Text(s) => parse_date_text(s)
                .map(Value::Date)
                .ok_or_else(|| format!("{} is not a date (YYYY-MM-DD)", describe(value))),
            other => Err(format!("{} is not a date", describe(other))),
        },
        ColumnKind::DateTime { precision, .. } => {
            let t = match value {
                Value::DateTime(t) => Some(*t),
                Value::Date(d) => Some(d.and_time(chrono::NaiveTime::MIN).and_utc()),
                Value::Text(s) => parse_datetime_text(s),
                _ => None,
            }
            .ok_or_else(|| format!("{} is not a date-time", describe(value)))?;
            if dialect == DatabaseKind::MySql
                && !(1000..=9999).contains(&chrono::Datelike::year(&t))
            {
                return Err(format!("{t} is outside the years 1000 to 9999"));
            }
            Ok(Value::DateTime(t.trunc_subsecs((*precision).min(6) as u16)))
        }
        ColumnKind::Json => {
            let mut j = match value {
                Value::Json(j) => j.clone(),
                other => other.to_json(),
            };
            if dialect == DatabaseKind::Postgres {
                strip_nul_json(&mut j);
            }
            Ok(Value::Json(j))
        }
        ColumnKind::Other => Ok(match value {
            Value::Text(s) if dialect == DatabaseKind::Postgres && s.contains('\0') => {
                Value::Text(s.replace('\0', ""))
            }
            Value::Text(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        }),
    }
}

/// [`coerce`] for an owned value: text and JSON that need no change move
/// through without a copy.
pub(crate) fn coerce_owned(
    value: Value,
    col: &ColumnInfo,
    dialect: DatabaseKind,
) -> Result<Value, String> {
    match (&col.kind, value) {
        (ColumnKind::Text { max_len }, Value::Text(s))
            if dialect != DatabaseKind::Postgres || !s.contains('\0') =>
        {
            if let Some(max) = max_len {
                // Byte length bounds character count from above.
                if s.len() > *max as usize {
                    let n = s.chars().count();
                    if n > *max as usize {
                        return Err(format!("{n} characters, the column holds at most {max}"));
                    }
                }
            }
            Ok(Value::Text(s))
        }
        (ColumnKind::Json, Value::Json(j)) if dialect != DatabaseKind::Postgres => {
            Ok(Value::Json(j))
        }
        (_, v) => coerce(&v, col, dialect),
    }
}

fn describe(v: &Value) -> String {
    let mut s = v.to_string();
    if s.chars().count() > 40 {
        s = s.chars().take(40).collect::<String>() + "...";
    }
    format!("{} {s:?}", v.value_type())
}

fn to_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Decimal(d) => Some(*d),
        Value::Int(i) => Some(Decimal::from(*i)),
        Value::Text(s) => parse_decimal(s),
        Value::Json(serde_json::Value::Number(n)) => parse_decimal(&n.to_string()),
        _ => None,
    }
}

/// Checks that `d` fits NUMERIC(`precision`, `scale`) without rounding.
fn fit_decimal(d: Decimal, precision: Option<u32>, scale: Option<u32>) -> Result<Decimal, String> {
    let mut d = d;
    if let Some(s) = scale {
        if d.scale() > s {
            let r = d.round_dp(s);
            if r != d {
                return Err(format!("{d} has more than {s} decimal places"));
            }
            d = r;
        }
        if let Some(p) = precision {
            // |d| must stay below 10^(p - s); past 28 digits every decimal fits.
            let digits = p.saturating_sub(s);
            if digits <= 28 {
                let limit = Decimal::from_i128_with_scale(10i128.pow(digits), 0);
                if d.abs() >= limit {
                    return Err(format!("{d} is too large for NUMERIC({p}, {s})"));
                }
            }
        }
    }
    Ok(d)
}

fn strip_nul_json(j: &mut serde_json::Value) {
    match j {
        serde_json::Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nul_json),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(k.replace('\0', ""), v);
                }
            }
            map.values_mut().for_each(strip_nul_json);
        }
        _ => {}
    }
}

/// Parses `YYYY-MM-DD`.
pub(crate) fn parse_date_text(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Parses the date-time texts databases and spreadsheets produce: RFC 3339
/// (`2024-01-15T10:00:00Z`, `+07:00`), and the naive forms
/// `2024-01-15 10:00:00[.ffffff]` / `2024-01-15T10:00:00`, read as UTC.
pub(crate) fn parse_datetime_text(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// How SQLite stores a date-time written by this crate: fixed-width UTC
/// text, so text order is time order and SQLite's date functions read it.
pub(crate) fn sqlite_datetime(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A float read from the database as an exact decimal of its shortest
/// round-trip text (`0.1f64` becomes `0.1`).
pub(crate) fn float_to_value(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Text(f.to_string());
    }
    let text = f.to_string();
    parse_decimal(&text)
        .or_else(|| Decimal::from_f64_retain(f))
        .map(Value::Decimal)
        .unwrap_or(Value::Text(text))
}

/// Converts a value read with a loose storage class (SQLite, MariaDB JSON
/// in LONGTEXT) to the kind the declared column type says.
pub(crate) fn apply_hint(value: Value, kind: &ColumnKind) -> Value {
    match (kind, value) {
        (_, Value::Null) => Value::Null,
        (ColumnKind::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (ColumnKind::Decimal { .. }, Value::Text(s)) => match parse_decimal(&s) {
            Some(d) => Value::Decimal(d),
            None => Value::Text(s),
        },
        (ColumnKind::Decimal { .. }, Value::Int(i)) => Value::Decimal(Decimal::from(i)),
        (ColumnKind::Date, Value::Text(s)) => match parse_date_text(&s) {
            Some(d) => Value::Date(d),
            None => Value::Text(s),
        },
        (ColumnKind::DateTime { .. }, Value::Text(s)) => match parse_datetime_text(&s) {
            Some(t) => Value::DateTime(t),
            None => Value::Text(s),
        },
        (ColumnKind::Json, Value::Text(s)) => match serde_json::from_str(&s) {
            Ok(j) => Value::Json(j),
            Err(_) => Value::Text(s),
        },
        (ColumnKind::Json, Value::Int(i)) => Value::Json(i.into()),
        (ColumnKind::Json, Value::Decimal(d)) => Value::Json(
            serde_json::from_str(&d.to_string())
                .unwrap_or(serde_json::Value::String(d.to_string())),
        ),
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            kind,
            sql_type: String::new(),
            nullable: true,
            has_default: false,
        }
    }

    const PG: DatabaseKind = DatabaseKind::Postgres;

    #[test]
    fn decimals_fit_or_not() {
        let c = col(ColumnKind::Decimal {
            precision: Some(18),
            scale: Some(4),
        });
        let d: Decimal = "12345678901234.5678".parse().unwrap();
        assert_eq!(coerce(&Value::Decimal(d), &c, PG), Ok(Value::Decimal(d)));
        assert!(coerce(&Value::Text("abc".into()), &c, PG).is_err());
        assert!(coerce(&Value::Text("1.23456".into()), &c, PG).is_err());
        assert!(coerce(&Value::Text("123456789012345".into()), &c, PG).is_err());
        assert_eq!(
            coerce(&Value::Text(" 2500.10 ".into()), &c, PG),
            Ok(Value::Decimal("2500.1".parse().unwrap()))
        );
    }

    #[test]
    fn text_length_and_nul() {
        let c = col(ColumnKind::Text { max_len: Some(3) });
        assert!(coerce(&Value::Text("x".repeat(300)), &c, PG).is_err());
        assert_eq!(
            coerce(&Value::Text("a\0b".into()), &c, PG),
            Ok(Value::Text("ab".into()))
        );
        assert_eq!(
            coerce(&Value::Text("a\0b".into()), &c, DatabaseKind::MySql),
            Ok(Value::Text("a\0b".into()))
        );
        // Characters, not bytes.
        assert!(coerce(&Value::Text("äöü".into()), &c, PG).is_ok());
    }

    #[test]
    fn owned_text_moves_and_checks() {
        let c = col(ColumnKind::Text { max_len: Some(3) });
        assert_eq!(
            coerce_owned(Value::Text("abc".into()), &c, PG),
            Ok(Value::Text("abc".into()))
        );
        assert!(coerce_owned(Value::Text("abcd".into()), &c, PG).is_err());
        assert_eq!(
            coerce_owned(Value::Text("äöü".into()), &c, PG),
            Ok(Value::Text("äöü".into()))
        );
        assert_eq!(
            coerce_owned(Value::Text("a\0b".into()), &c, PG),
            Ok(Value::Text("ab".into()))
        );
        let d = col(ColumnKind::Decimal {
            precision: Some(4),
            scale: Some(2),
        });
        assert!(coerce_owned(Value::Int(99), &d, PG).is_ok());
        assert!(coerce_owned(Value::Int(100), &d, PG).is_err());
        assert!(coerce_owned(Value::Int(-100), &d, PG).is_err());
    }

    #[test]
    fn nulls_and_ints() {
        let mut c = col(ColumnKind::Int {
            bits: 32,
            unsigned: false,
        });
        assert!(coerce(&Value::Int(i64::from(i32::MAX) + 1), &c, PG).is_err());
        assert_eq!(
            coerce(&Value::Text("42".into()), &c, PG),
            Ok(Value::Int(42))
        );
        c.nullable = false;
        assert!(coerce(&Value::Null, &c, PG).is_err());
    }

    #[test]
    fn datetimes() {
        let c = col(ColumnKind::DateTime {
            tz: true,
            precision: 0,
        });
        let v = coerce(&Value::Text("2024-01-15 10:00:00.75+07".into()), &c, PG).unwrap();
        assert_eq!(v.to_string(), "2024-01-15T03:00:00Z");
        assert_eq!(
            parse_datetime_text("2024-01-15T10:00:00.123456Z").map(|t| sqlite_datetime(&t)),
            Some("2024-01-15T10:00:00.123456Z".into())
        );
    }

    #[test]
    fn nul_in_json_is_stripped_for_postgres() {
        let c = col(ColumnKind::Json);
        let v = coerce(
            &Value::Json(serde_json::json!({"a\u{0}": ["x\u{0}y"]})),
            &c,
            PG,
        )
        .unwrap();
        assert_eq!(v, Value::Json(serde_json::json!({"a": ["xy"]})));
    }
}
