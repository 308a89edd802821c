//! Cells as the API sends them, and their conversion to and from [`Value`].
//!
//! With `valueRenderOption=UNFORMATTED_VALUE` a cell arrives as a JSON
//! string, number or boolean (an empty cell as nothing, or `""`). A
//! [`Cell`] keeps a number's JSON **text**, read through
//! [`serde_json::value::RawValue`], so `1234.1` becomes the decimal `1234.1`
//! exactly and never passes through `f64`. Text stays text: `"0003"` keeps its
//! zeros and `"23E123123"` is not a number.
//!
//! A formula that fails shows its error value (`#REF!`, `#N/A`, `#DIV/0!`,
//! ...) as the cell's text; [`cell_to_value`] reports those as
//! [`CellProblem::FormulaError`].

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use crm_core::Value;
use crm_core::value::parse_decimal;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::serial;

/// One cell value on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Cell {
    /// No value (`null`, a missing trailing cell, or `""`).
    #[default]
    Empty,
    /// Text, as written in the cell.
    Text(String),
    /// A number, as its JSON text (`1234.1`, `43831`, `1E-7`).
    Number(String),
    /// A boolean.
    Bool(bool),
}

impl Cell {
    /// True for [`Cell::Empty`] and for text that is empty or whitespace.
    pub fn is_blank(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// A number cell from a decimal.
    pub fn number(d: Decimal) -> Cell {
        Cell::Number(d.to_string())
    }

    /// The formula error value this cell holds, if any.
    pub fn formula_error(&self) -> Option<&str> {
        match self {
            Cell::Text(s) if is_formula_error(s) => Some(s),
            _ => None,
        }
    }

    /// The cell as plain JSON (numbers through their text, so exact).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Cell::Empty => serde_json::Value::String(String::new()),
            Cell::Text(s) => serde_json::Value::String(s.clone()),
            Cell::Bool(b) => serde_json::Value::Bool(*b),
            Cell::Number(n) => {
                serde_json::from_str(n).unwrap_or_else(|_| serde_json::Value::String(n.clone()))
            }
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Empty => Ok(()),
            Cell::Text(s) | Cell::Number(s) => f.write_str(s),
            Cell::Bool(true) => f.write_str("TRUE"),
            Cell::Bool(false) => f.write_str("FALSE"),
        }
    }
}

/// The error values Google Sheets shows for failed formulas.
pub const FORMULA_ERRORS: &[&str] = &[
    "#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#ERROR!", "#SPILL!",
    "#CALC!",
];

/// True if `text` is one of [`FORMULA_ERRORS`].
pub fn is_formula_error(text: &str) -> bool {
    FORMULA_ERRORS.contains(&text.trim())
}

fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty() && (b[0] == b'-' || b[0].is_ascii_digit())
}

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(deserializer)?;
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'"') => {
                let s: String = serde_json::from_str(text).map_err(D::Error::custom)?;
                Ok(if s.is_empty() {
                    Cell::Empty
                } else {
                    Cell::Text(s)
                })
            }
            Some(b't') if text == "true" => Ok(Cell::Bool(true)),
            Some(b'f') if text == "false" => Ok(Cell::Bool(false)),
            Some(b'n') if text == "null" => Ok(Cell::Empty),
            _ if is_json_number(text) => Ok(Cell::Number(text.to_owned())),
            // An object or array is not a cell value; keep its text rather
            // than failing the whole response.
            _ => Ok(Cell::Text(text.to_owned())),
        }
    }
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Empty => serializer.serialize_str(""),
            Cell::Text(s) => serializer.serialize_str(s),
            Cell::Bool(b) => serializer.serialize_bool(*b),
            Cell::Number(n) => match RawValue::from_string(n.clone()) {
                Ok(raw) if is_json_number(n) => raw.serialize(serializer),
                _ => serializer.serialize_str(n),
            },
        }
    }
}

/// The type a column's cells are read as.
///
/// Serde names: `auto`, `text`, `int`, `decimal`, `decimal(N)` (rounded to
/// N places and kept at that scale, so `1234.1` is `1234.10` at 2),
/// `money` (= `decimal(2)`), `date`, `datetime`, `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ColumnType {
    /// Text stays text, whole numbers are ints, other numbers decimals.
    #[default]
    Auto,
    /// Text; a number cell becomes its text (`1001` -> `"1001"`).
    Text,
    /// A whole number.
    Int,
    /// An exact decimal, at a fixed scale when given.
    Decimal {
        /// Decimal places to keep (rounded half away from zero).
        scale: Option<u32>,
    },
    /// A date (serial number, or ISO `YYYY-MM-DD` text).
    Date,
    /// A date and time (serial number, or ISO text), taken as UTC.
    DateTime,
    /// A boolean (`TRUE`/`FALSE`).
    Bool,
}

impl ColumnType {
    /// The serde name.
    pub fn name(&self) -> String {
        match self {
            ColumnType::Auto => "auto".into(),
            ColumnType::Text => "text".into(),
            ColumnType::Int => "int".into(),
            ColumnType::Decimal { scale: None } => "decimal".into(),
            ColumnType::Decimal { scale: Some(n) } => format!("decimal({n})"),
            ColumnType::Date => "date".into(),
            ColumnType::DateTime => "datetime".into(),
            ColumnType::Bool => "bool".into(),
        }
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "auto" => ColumnType::Auto,
            "text" | "string" => ColumnType::Text,
            "int" | "integer" | "bigint" => ColumnType::Int,
            "decimal" | "number" => ColumnType::Decimal { scale: None },
            "money" => ColumnType::Decimal { scale: Some(2) },
            "date" => ColumnType::Date,
            "datetime" | "date_time" | "timestamp" => ColumnType::DateTime,
            "bool" | "boolean" => ColumnType::Bool,
            other => {
                let scale = other
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .filter(|n| *n <= 28)
                    .ok_or_else(|| format!("unknown column type {s:?}"))?;
                ColumnType::Decimal { scale: Some(scale) }
            }
        })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// Why a cell could not be read as its column's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellProblem {
    /// The cell shows a formula error (`#REF!`, `#N/A`, ...).
    FormulaError(String),
    /// The cell does not hold a value of the column's type.
    WrongType {
        /// The expected type's name.
        expected: String,
        /// The cell as text.
        found: String,
    },
}

impl fmt::Display for CellProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CellProblem::FormulaError(e) => write!(f, "formula error {e}"),
            CellProblem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found:?}")
            }
        }
    }
}

fn scaled(d: Decimal, scale: Option<u32>) -> Decimal {
    match scale {
        Some(s) => {
            let mut r = d.round_dp_with_strategy(s, RoundingStrategy::MidpointAwayFromZero);
            r.rescale(s);
            r
        }
        None => d,
    }
}

fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

fn parse_iso_datetime(s: &str) -> Option<NaiveDateTime> {
    let t = s.trim();
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.naive_utc())
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
        .or_else(|| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok())
}

/// Reads a cell as `ty`.
///
/// ```
/// use crm_sheets::cell::{cell_to_value, Cell, ColumnType};
/// use crm_core::Value;
///
/// let money = ColumnType::Decimal { scale: Some(2) };
/// let v = cell_to_value(&Cell::Number("1234.1".into()), money).unwrap();
/// assert_eq!(v.to_string(), "1234.10");
/// let v = cell_to_value(&Cell::Text("0003".into()), ColumnType::Auto).unwrap();
/// assert_eq!(v, Value::Text("0003".into()));
/// ```
///
/// # Errors
/// [`CellProblem`] for a formula error or a value that is not of the type.
pub fn cell_to_value(cell: &Cell, ty: ColumnType) -> Result<Value, CellProblem> {
    let wrong = || CellProblem::WrongType {
        expected: ty.name(),
        found: cell.to_string(),
    };
    if let Some(e) = cell.formula_error() {
        return Err(CellProblem::FormulaError(e.trim().to_owned()));
    }
    if cell.is_blank() {
        return Ok(Value::Null);
    }
    match (cell, ty) {
        (Cell::Empty, _) => Ok(Value::Null),
        // Text.
        (Cell::Text(s), ColumnType::Auto | ColumnType::Text) => Ok(Value::Text(s.clone())),
        (Cell::Number(n), ColumnType::Text) => Ok(Value::Text(n.clone())),
        (Cell::Bool(b), ColumnType::Text) => Ok(Value::Text(cell_bool_text(*b))),
        // Numbers.
        (Cell::Number(n), ColumnType::Auto) => {
            let d = parse_decimal(n).ok_or_else(wrong)?;
            Ok(decimal_or_int(d))
        }
        (Cell::Number(n), ColumnType::Int) => {
            let d = parse_decimal(n).ok_or_else(wrong)?;
            if !d.fract().is_zero() {
                return Err(wrong());
            }
            i64::try_from(d.trunc())
                .map(Value::Int)
                .map_err(|_| wrong())
        }
        (Cell::Text(s), ColumnType::Int) => {
            s.trim().parse::<i64>().map(Value::Int).map_err(|_| wrong())
        }
        (Cell::Number(n), ColumnType::Decimal { scale }) => parse_decimal(n)
            .map(|d| Value::Decimal(scaled(d, scale)))
            .ok_or_else(wrong),
        (Cell::Text(s), ColumnType::Decimal { scale }) => {
            // Plain decimal text only ("1234.10"); no exponents, so
            // "23E123123" is never read as a number.
            let t = s.trim();
            if t.contains(['e', 'E']) {
                return Err(wrong());
            }
            t.parse::<Decimal>()
                .map(|d| Value::Decimal(scaled(d, scale)))
                .map_err(|_| wrong())
        }
        // Dates.
        (Cell::Number(n), ColumnType::Date) => {
            let d = parse_decimal(n).ok_or_else(wrong)?;
            serial::serial_to_date(d)
                .map(Value::Date)
                .map_err(|_| wrong())
        }
        (Cell::Text(s), ColumnType::Date) => parse_iso_date(s).map(Value::Date).ok_or_else(wrong),
        (Cell::Number(n), ColumnType::DateTime) => {
            let d = parse_decimal(n).ok_or_else(wrong)?;
            serial::serial_to_datetime(d)
                .map(|t| Value::DateTime(t.and_utc()))
                .map_err(|_| wrong())
        }
        (Cell::Text(s), ColumnType::DateTime) => parse_iso_datetime(s)
            .map(|t| Value::DateTime(t.and_utc()))
            .ok_or_else(wrong),
        // Booleans.
        (Cell::Bool(b), ColumnType::Auto | ColumnType::Bool) => Ok(Value::Bool(*b)),
        (Cell::Text(s), ColumnType::Bool) => match s.trim().to_ascii_uppercase().as_str() {
            "TRUE" => Ok(Value::Bool(true)),
            "FALSE" => Ok(Value::Bool(false)),
            _ => Err(wrong()),
        },
        (Cell::Bool(_), _) | (Cell::Number(_), ColumnType::Bool) => Err(wrong()),
    }
}

fn cell_bool_text(b: bool) -> String {
    if b { "TRUE".into() } else { "FALSE".into() }
}

fn decimal_or_int(d: Decimal) -> Value {
    if d.fract().is_zero()
        && d.scale() == 0
        && let Ok(i) = i64::try_from(d)
    {
        return Value::Int(i);
    }
    Value::Decimal(d)
}

/// The cell to write for a value (with `valueInputOption=RAW`): numbers as
/// JSON numbers with their exact text, dates and date-times as serial
/// numbers (so the sheet holds real dates), text as text, null as an empty
/// cell. JSON values are written as their JSON text.
pub fn value_to_cell(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Empty,
        Value::Bool(b) => Cell::Bool(*b),
        Value::Int(i) => Cell::Number(i.to_string()),
        Value::Decimal(d) => Cell::number(*d),
        Value::Text(s) => Cell::Text(s.clone()),
        Value::Date(d) => match serial::date_to_serial(*d) {
            Ok(n) => Cell::Number(n.to_string()),
            Err(_) => Cell::Text(d.to_string()),
        },
        Value::DateTime(t) => match serial::datetime_to_serial(t.naive_utc()) {
            Ok(n) => Cell::number(n),
            Err(_) => Cell::Text(value.to_string()),
        },
        Value::Json(j) => Cell::Text(j.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(json: &str) -> Vec<Cell> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn wire_cells_keep_number_text() {
        let row =
            cells(r#"["0003", 1234.1, 43831, true, "", null, "23E123123", 0.1, -2.50, 1E+300]"#);
        assert_eq!(row[0], Cell::Text("0003".into()));
        assert_eq!(row[1], Cell::Number("1234.1".into()));
        assert_eq!(row[2], Cell::Number("43831".into()));
        assert_eq!(row[3], Cell::Bool(true));
        assert_eq!(row[4], Cell::Empty);
        assert_eq!(row[5], Cell::Empty);
        assert_eq!(row[6], Cell::Text("23E123123".into()));
        assert_eq!(row[7], Cell::Number("0.1".into()));
        assert_eq!(row[8], Cell::Number("-2.50".into()));
        assert_eq!(row[9], Cell::Number("1E+300".into()));
        // Serialising writes the numbers back with the same text.
        assert_eq!(
            serde_json::to_string(&row[..3]).unwrap(),
            r#"["0003",1234.1,43831]"#
        );
    }

    #[test]
    fn zeros_exponents_and_serials_round_trip_unchanged() {
        // "0003" stays text with its zeros.
        let v = cell_to_value(&Cell::Text("0003".into()), ColumnType::Auto).unwrap();
        assert_eq!(v, Value::Text("0003".into()));
        assert_eq!(value_to_cell(&v), Cell::Text("0003".into()));
        // "23E123123" stays text, never infinity.
        let v = cell_to_value(&Cell::Text("23E123123".into()), ColumnType::Auto).unwrap();
        assert_eq!(v, Value::Text("23E123123".into()));
        assert!(
            cell_to_value(
                &Cell::Text("23E123123".into()),
                ColumnType::Decimal { scale: None }
            )
            .is_err()
        );
        // Serial 43831 in a date column is 2020-01-01, written back as 43831.
        let v = cell_to_value(&Cell::Number("43831".into()), ColumnType::Date).unwrap();
        assert_eq!(v, Value::Date(NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()));
        assert_eq!(value_to_cell(&v), Cell::Number("43831".into()));
        // And in an untyped column it stays the number 43831.
        let v = cell_to_value(&Cell::Number("43831".into()), ColumnType::Auto).unwrap();
        assert_eq!(v, Value::Int(43831));
        assert_eq!(value_to_cell(&v), Cell::Number("43831".into()));
    }

    #[test]
    fn money_is_exact_at_scale() {
        let money = ColumnType::Decimal { scale: Some(2) };
        let v = cell_to_value(&Cell::Number("1234.1".into()), money).unwrap();
        assert_eq!(v.as_decimal().unwrap().to_string(), "1234.10");
        let v = cell_to_value(&Cell::Number("0.3000000000000000444".into()), money).unwrap();
        assert_eq!(v.to_string(), "0.30");
        let v = cell_to_value(&Cell::Number("2.005".into()), money).unwrap();
        assert_eq!(v.to_string(), "2.01");
        let v = cell_to_value(&Cell::Text(" 99.5 ".into()), money).unwrap();
        assert_eq!(v.to_string(), "99.50");
        let v = cell_to_value(
            &Cell::Number("1.5E3".into()),
            ColumnType::Decimal { scale: None },
        )
        .unwrap();
        assert_eq!(v.as_decimal(), Some(Decimal::from(1500)));
        assert_eq!(
            value_to_cell(&Value::Decimal("1234.10".parse().unwrap())),
            Cell::Number("1234.10".into())
        );
    }

    #[test]
    fn formula_errors_and_wrong_types_are_problems() {
        for e in ["#REF!", "#N/A", "#DIV/0!", "#VALUE!", "#NAME?"] {
            let p = cell_to_value(&Cell::Text(e.into()), ColumnType::Auto).unwrap_err();
            assert_eq!(p, CellProblem::FormulaError(e.into()));
        }
        assert!(matches!(
            cell_to_value(&Cell::Text("soon".into()), ColumnType::Date),
            Err(CellProblem::WrongType { .. })
        ));
        assert!(cell_to_value(&Cell::Number("2.5".into()), ColumnType::Int).is_err());
        assert!(cell_to_value(&Cell::Number("-3".into()), ColumnType::Date).is_err());
        assert!(cell_to_value(&Cell::Bool(true), ColumnType::Int).is_err());
        assert_eq!(
            cell_to_value(&Cell::Empty, ColumnType::Int).unwrap(),
            Value::Null
        );
        assert_eq!(
            cell_to_value(&Cell::Text("  ".into()), ColumnType::Date).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn first_row_types_do_not_decide_the_column() {
        // [1, 2.5, "n/a"] in an untyped column: an int, an exact decimal, text.
        let col = cells(r#"[1, 2.5, "n/a"]"#);
        let vals: Vec<_> = col
            .iter()
            .map(|c| cell_to_value(c, ColumnType::Auto).unwrap())
            .collect();
        assert_eq!(
            vals,
            vec![
                Value::Int(1),
                Value::Decimal("2.5".parse().unwrap()),
                Value::Text("n/a".into())
            ]
        );
        // ["", 2027-04-12] in a date column: null (not 1970-01-01), then the date.
        let col = cells(r#"["", 46489]"#);
        let vals: Vec<_> = col
            .iter()
            .map(|c| cell_to_value(c, ColumnType::Date).unwrap())
            .collect();
        assert_eq!(
            vals,
            vec![
                Value::Null,
                Value::Date(NaiveDate::from_ymd_opt(2027, 4, 12).unwrap())
            ]
        );
    }

    #[test]
    fn column_type_names() {
        for s in [
            "auto",
            "text",
            "int",
            "decimal",
            "decimal(4)",
            "date",
            "datetime",
            "bool",
        ] {
            let t: ColumnType = s.parse().unwrap();
            assert_eq!(t.name(), s);
        }
        assert_eq!(
            "money".parse::<ColumnType>().unwrap(),
            ColumnType::Decimal { scale: Some(2) }
        );
        assert!("decimal(x)".parse::<ColumnType>().is_err());
        assert!("float".parse::<ColumnType>().is_err());
    }
}
