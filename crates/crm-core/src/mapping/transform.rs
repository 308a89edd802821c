//! [`Transform`]: one step of a field map's transform chain, its forward and
//! reverse behaviour, and how it is written in YAML/JSON.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use indexmap::IndexMap;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ConfigError, TransformError};
use crate::value::{Value, parse_decimal};

/// The transform names accepted in configuration, listed in errors about an
/// unknown name.
pub const KNOWN_TRANSFORMS: &[&str] = &[
    "direct",
    "lower",
    "upper",
    "initcap",
    "trim",
    "phone",
    "round(n)",
    "scale",
    "date_format",
    "parse_json",
    "default",
    "constant",
    "enum_map",
];

/// One transform step. A field map holds a chain of them, applied in order.
///
/// Every transform has a forward behaviour ([`Transform::apply`], used when a
/// map runs `source -> target`) and a reverse behaviour
/// ([`Transform::apply_reverse`], used when a bidirectional map runs
/// `target -> source`):
///
/// | transform | forward | reverse |
/// |---|---|---|
/// | `direct` | unchanged | unchanged |
/// | `lower`, `upper`, `initcap`, `trim` | normalise text | the same normalisation |
/// | `phone` | E.164 text | the same normalisation |
/// | `round(n)` | round half away from zero, scale `n` | the same rounding |
/// | `scale` | map `from` range onto `to` range | map `to` back onto `from` |
/// | `date_format` | parse with `from`, output `to` | parse with `to`, output `from` |
/// | `parse_json` | text -> JSON | JSON -> compact JSON text |
/// | `default` | blank -> the default | unchanged |
/// | `constant` | always the constant | none: the map is skipped in reverse |
/// | `enum_map` | look the value up | look it up in the inverted table |
///
/// Null handling is the same everywhere: [`Value::Null`] passes through every
/// transform unchanged except `default` and `constant`. `phone`, `round`,
/// `scale`, `date_format`, `parse_json` and `enum_map` also treat blank text
/// (empty or whitespace) as Null, since a blank cell means "no value" there.
/// The text transforms (`lower`, `upper`, `initcap`, `trim`) change only
/// text and pass other values (numbers, dates, JSON) through unchanged; they
/// keep blank text as text (`trim` of `"  "` is `""`); chain `default` after
/// them to fill it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Transform {
    /// The value unchanged (the seeds' "Direct").
    Direct,
    /// Unicode lower case (the seeds' `LOWER()`).
    Lower,
    /// Unicode upper case.
    Upper,
    /// Capitalises the first letter of each word and lower-cases the rest (the
    /// seeds' `INITCAP()`). See [`initcap`] for the word rule.
    Initcap,
    /// Removes leading and trailing whitespace.
    Trim,
    /// Phone cleanup to E.164 (the seeds' "Clean regex"). See [`to_e164`].
    Phone {
        /// Calling code used for numbers written without an international
        /// prefix; without one such numbers are an error.
        default_country: Option<CallingCode>,
    },
    /// Rounds a decimal to `n` places, half away from zero (2.345 -> 2.35,
    /// -2.345 -> -2.35), and sets its scale to exactly `n` (1234.1 -> 1234.10).
    /// At most 28.
    Round(u32),
    /// Maps a number linearly from one range onto another, exactly in decimal
    /// (the seeds' "Scale 0-100": 0.734 on 0-1 -> 73.4 on 0-100).
    Scale(Scale),
    /// Parses dates and times and outputs a typed value or formatted text (the
    /// seeds' "Format date").
    DateFormat(DateFormat),
    /// Parses text as JSON into [`Value::Json`] (the seeds' "Parse JSON").
    ParseJson,
    /// Replaces a blank input with this value.
    Default(Value),
    /// Always outputs this value, whatever the input.
    Constant(Value),
    /// Maps text values through a lookup table.
    EnumMap(EnumMap),
}

/// A country calling code (1 to 3 digits, no leading zero), e.g. `1` for
/// the NANP or `44` for the UK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallingCode(u16);

impl CallingCode {
    /// A calling code from its number.
    ///
    /// # Errors
    /// [`ConfigError::InvalidTransform`] when `code` is not in `1..=999`.
    pub fn new(code: u16) -> Result<Self, ConfigError> {
        if (1..=999).contains(&code) {
            Ok(CallingCode(code))
        } else {
            Err(ConfigError::InvalidTransform {
                transform: "phone".into(),
                reason: format!("calling code {code} is not in 1..=999"),
            })
        }
    }

    /// The code as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for CallingCode {
    type Err = ConfigError;

    /// Parses `"1"`, `"+44"` or `"0044"`-free forms: optional `+`, then digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t.strip_prefix('+').unwrap_or(t);
        let bad = || ConfigError::InvalidTransform {
            transform: "phone".into(),
            reason: format!("calling code {s:?} is not 1 to 3 digits"),
        };
        if digits.is_empty()
            || digits.len() > 3
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        digits
            .parse::<u16>()
            .map_err(|_| bad())
            .and_then(CallingCode::new)
    }
}

impl fmt::Display for CallingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A linear map between two ranges, for [`Transform::Scale`].
///
/// The result is `to_min + (x - from_min) * (to_max - to_min) / (from_max -
/// from_min)`, computed in [`Decimal`] (multiplication before division, so
/// 0.734 on 0-1 is exactly 73.4 on 0-100) and normalised (no trailing zeros;
/// chain `round(n)` for a fixed scale). An input outside the `from` range is
/// an error unless `clamp` is set, in which case it is clamped to the range
/// first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    from: (Decimal, Decimal),
    to: (Decimal, Decimal),
    clamp: bool,
}

impl Scale {
    /// A scale from the range `from` onto the range `to`. A range may be
    /// written high-to-low to invert the direction.
    ///
    /// # Errors
    /// [`ConfigError::InvalidTransform`] when either range is empty
    /// (`min == max`), which would divide by zero or be impossible to reverse.
    pub fn new(from: (Decimal, Decimal), to: (Decimal, Decimal)) -> Result<Self, ConfigError> {
        if from.0 == from.1 || to.0 == to.1 {
            return Err(ConfigError::InvalidTransform {
                transform: "scale".into(),
                reason: format!(
                    "ranges must not be empty (from {}..{}, to {}..{})",
                    from.0, from.1, to.0, to.1
                ),
            });
        }
        Ok(Scale {
            from,
            to,
            clamp: false,
        })
    }

    /// The seeds' "Scale 0-100": from 0-1 onto 0-100 (a fraction to a percentage).
    pub fn unit_to_percent() -> Self {
        Scale {
            from: (Decimal::ZERO, Decimal::ONE),
            to: (Decimal::ZERO, Decimal::ONE_HUNDRED),
            clamp: false,
        }
    }

    /// Clamps out-of-range inputs instead of failing (builder style).
    #[must_use]
    pub fn clamped(mut self, clamp: bool) -> Self {
        self.clamp = clamp;
        self
    }

    /// The input range.
    pub fn from_range(&self) -> (Decimal, Decimal) {
        self.from
    }

    /// The output range.
    pub fn to_range(&self) -> (Decimal, Decimal) {
        self.to
    }

    /// Whether out-of-range inputs are clamped.
    pub fn is_clamped(&self) -> bool {
        self.clamp
    }

    /// The same scale the other way round.
    pub fn inverse(&self) -> Scale {
        Scale {
            from: self.to,
            to: self.from,
            clamp: self.clamp,
        }
    }

    /// Maps one number.
    ///
    /// # Errors
    /// [`TransformError::OutOfRange`] for an input outside the `from` range
    /// (without `clamp`), [`TransformError::Overflow`] when the result does not
    /// fit a decimal.
    pub fn map(&self, x: Decimal) -> Result<Decimal, TransformError> {
        let (lo, hi) = if self.from.0 <= self.from.1 {
            self.from
        } else {
            (self.from.1, self.from.0)
        };
        let x = if x < lo || x > hi {
            if self.clamp {
                x.clamp(lo, hi)
            } else {
                return Err(TransformError::OutOfRange {
                    value: x,
                    min: lo,
                    max: hi,
                });
            }
        } else {
            x
        };
        let overflow = || TransformError::Overflow {
            operation: "scale".into(),
        };
        let num = x
            .checked_sub(self.from.0)
            .and_then(|d| d.checked_mul(self.to.1.checked_sub(self.to.0)?))
            .ok_or_else(overflow)?;
        let den = self.from.1.checked_sub(self.from.0).ok_or_else(overflow)?;
        let y = num
            .checked_div(den)
            .and_then(|q| q.checked_add(self.to.0))
            .ok_or_else(overflow)?;
        Ok(y.normalize())
    }
}

/// What [`DateFormat`] outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DateOutput {
    /// A [`Value::Date`] (a date-time input keeps its UTC date).
    Date,
    /// A [`Value::DateTime`] (a date input becomes midnight UTC).
    DateTime,
    /// [`Value::Text`] formatted with this chrono `strftime` format.
    Format(String),
}

/// A typed date output, for [`DateFormat::iso`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypedDate {
    /// [`DateOutput::Date`].
    Date,
    /// [`DateOutput::DateTime`].
    DateTime,
}

/// Date/time parsing and formatting, for [`Transform::DateFormat`].
///
/// Input: a [`Value::Date`] or [`Value::DateTime`] is used as is; text is
/// parsed with the `from` chrono format, or, without one, as ISO 8601 (a date
/// `2024-01-15`, RFC 3339 `2024-01-15T10:00:00Z`, an offset without colon
/// `2024-01-15T10:00:00.000+0000` as Salesforce writes it, or a date-time
/// without offset, taken as UTC, with `T` or a space). A format with an
/// offset (`%z`) gives an instant; one with a time but no offset gives a UTC
/// date-time; one with only date fields gives a date.
///
/// Output: see [`DateOutput`]. Formatting always works on a UTC date-time
/// (a date is midnight), so a format may use time fields whatever the input.
///
/// Reverse: text is parsed with the `to` format (when it is a format) and
/// output with the `from` format, or as a typed value when there is no
/// `from` format (a date if it has no time, else a date-time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateFormat {
    from: Option<String>,
    to: DateOutput,
}

impl DateFormat {
    /// A date transform parsing with `from` (ISO 8601 when `None`) and
    /// producing `to`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidTransform`] when a format string is not a valid
    /// chrono format.
    pub fn new(from: Option<String>, to: DateOutput) -> Result<Self, ConfigError> {
        if let Some(f) = &from {
            check_format(f)?;
        }
        if let DateOutput::Format(f) = &to {
            check_format(f)?;
        }
        Ok(DateFormat { from, to })
    }

    /// ISO 8601 input and a typed output; cannot fail, as there is no format
    /// string to check.
    pub fn iso(to: TypedDate) -> Self {
        DateFormat {
            from: None,
            to: match to {
                TypedDate::Date => DateOutput::Date,
                TypedDate::DateTime => DateOutput::DateTime,
            },
        }
    }

    /// The input format (`None` = ISO 8601).
    pub fn from_format(&self) -> Option<&str> {
        self.from.as_deref()
    }

    /// The output.
    pub fn output(&self) -> &DateOutput {
        &self.to
    }

    fn forward(&self, v: Value) -> Result<Value, TransformError> {
        let parsed = parse_when(v, self.from.as_deref())?;
        let Some(when) = parsed else {
            return Ok(Value::Null);
        };
        output_when(when, &self.to)
    }

    fn reverse(&self, v: Value) -> Result<Value, TransformError> {
        let input_format = match &self.to {
            DateOutput::Format(f) => Some(f.as_str()),
            DateOutput::Date | DateOutput::DateTime => None,
        };
        let Some(when) = parse_when(v, input_format)? else {
            return Ok(Value::Null);
        };
        match &self.from {
            Some(f) => output_when(when, &DateOutput::Format(f.clone())),
            None => Ok(match when {
                When::Date(d) => Value::Date(d),
                When::DateTime(t) => Value::DateTime(t),
            }),
        }
    }
}

fn check_format(f: &str) -> Result<(), ConfigError> {
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(ConfigError::InvalidTransform {
            transform: "date_format".into(),
            reason: format!("{f:?} is not a valid chrono format"),
        });
    }
    Ok(())
}

enum When {
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

fn parse_when(v: Value, format: Option<&str>) -> Result<Option<When>, TransformError> {
    match v {
        Value::Date(d) => Ok(Some(When::Date(d))),
        Value::DateTime(t) => Ok(Some(When::DateTime(t))),
        Value::Text(s) if s.trim().is_empty() => Ok(None),
        Value::Null => Ok(None),
        Value::Text(s) => {
            let t = s.trim();
            let parsed = match format {
                Some(f) => parse_with(t, f),
                None => parse_iso(t),
            };
            parsed.map(Some).ok_or_else(|| TransformError::BadDate {
                text: s.clone(),
                format: format.unwrap_or("ISO 8601").to_owned(),
            })
        }
        other => Err(TransformError::WrongType {
            expected: "a date, date-time or text",
            found: other.value_type(),
        }),
    }
}

fn parse_with(t: &str, f: &str) -> Option<When> {
    if let Ok(dt) = DateTime::parse_from_str(t, f) {
        return Some(When::DateTime(dt.with_timezone(&Utc)));
    }
    if let Ok(ndt) = NaiveDateTime::parse_from_str(t, f) {
        return Some(When::DateTime(ndt.and_utc()));
    }
    NaiveDate::parse_from_str(t, f).ok().map(When::Date)
}

fn parse_iso(t: &str) -> Option<When> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(When::DateTime(dt.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return Some(When::DateTime(dt.with_timezone(&Utc)));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(When::DateTime(ndt.and_utc()));
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(When::Date)
}

fn output_when(when: When, to: &DateOutput) -> Result<Value, TransformError> {
    let instant = match when {
        When::Date(d) => d.and_time(NaiveTime::MIN).and_utc(),
        When::DateTime(t) => t,
    };
    match to {
        DateOutput::Date => Ok(Value::Date(match when {
            When::Date(d) => d,
            When::DateTime(t) => t.date_naive(),
        })),
        DateOutput::DateTime => Ok(Value::DateTime(instant)),
        DateOutput::Format(f) => {
            let mut out = String::new();
            write!(out, "{}", instant.format_with_items(StrftimeItems::new(f)))
                .map_err(|_| TransformError::BadDateFormat { format: f.clone() })?;
            Ok(Value::Text(out))
        }
    }
}

/// A lookup table of text values, for [`Transform::EnumMap`].
///
/// A value is looked up exactly (after trimming), then ignoring case. A value
/// not in the table gives the `fallback` when there is one, else an error.
/// Booleans and integers are looked up by their text (`true`, `42`).
///
/// Reverse: the table inverted (when two keys map to the same value, the
/// first listed wins); the reverse has no fallback.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EnumMap {
    /// Input text -> output text, in order.
    pub values: IndexMap<String, String>,
    /// The output for values not in the table.
    pub fallback: Option<String>,
}

impl EnumMap {
    /// A table without fallback.
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        EnumMap {
            values: values.into_iter().collect(),
            fallback: None,
        }
    }

    /// Sets the fallback (builder style).
    #[must_use]
    pub fn with_fallback(mut self, fallback: impl Into<String>) -> Self {
        self.fallback = Some(fallback.into());
        self
    }

    fn lookup<'a>(
        pairs: impl Iterator<Item = (&'a String, &'a String)> + Clone,
        key: &str,
    ) -> Option<&'a String> {
        let k = key.trim();
        pairs
            .clone()
            .find(|(a, _)| a.as_str() == k)
            .or_else(|| {
                let lower = k.to_lowercase();
                pairs.clone().find(|(a, _)| a.to_lowercase() == lower)
            })
            .map(|(_, b)| b)
    }

    fn forward(&self, v: Value) -> Result<Value, TransformError> {
        let Some(key) = enum_key(&v)? else {
            return Ok(Value::Null);
        };
        match Self::lookup(self.values.iter(), &key) {
            Some(out) => Ok(Value::Text(out.clone())),
            None => match &self.fallback {
                Some(f) => Ok(Value::Text(f.clone())),
                None => Err(TransformError::UnknownEnumValue {
                    value: key,
                    known: self.values.keys().cloned().collect(),
                }),
            },
        }
    }

    fn reverse(&self, v: Value) -> Result<Value, TransformError> {
        let Some(key) = enum_key(&v)? else {
            return Ok(Value::Null);
        };
        match Self::lookup(self.values.iter().map(|(a, b)| (b, a)), &key) {
            Some(out) => Ok(Value::Text(out.clone())),
            None => Err(TransformError::UnknownEnumValue {
                value: key,
                known: self.values.values().cloned().collect(),
            }),
        }
    }
}

fn enum_key(v: &Value) -> Result<Option<String>, TransformError> {
    match v {
        Value::Null => Ok(None),
        Value::Text(s) if s.trim().is_empty() => Ok(None),
        Value::Text(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Int(i) => Ok(Some(i.to_string())),
        other => Err(TransformError::WrongType {
            expected: "text",
            found: other.value_type(),
        }),
    }
}

/// Capitalises each word: its first letter upper case, the rest lower case.
///
/// A word is a run of alphanumeric characters; anything else (space,
/// apostrophe, hyphen, period) ends a word. This is the rule of SQL
/// `INITCAP` in PostgreSQL and Snowflake, so results match the seeds'
/// warehouse: `"o'brien-smith"` -> `"O'Brien-Smith"`, `"ÉLODIE du pont"` ->
/// `"Élodie Du Pont"`. It knows no name rules: `"mcdonald"` -> `"Mcdonald"`
/// and `"don't"` -> `"Don'T"`. Case mapping is Unicode's (a leading `ß`
/// becomes `SS`).
///
/// ```
/// use crm_core::mapping::initcap;
/// assert_eq!(initcap("o'brien-smith"), "O'Brien-Smith");
/// assert_eq!(initcap("ÉLODIE du pont"), "Élodie Du Pont");
/// ```
pub fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(&chars.as_str().to_lowercase());
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Why a phone number could not be cleaned to E.164.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The number has an extension (`x123`, `ext. 12`, `;ext=`, `#`); E.164 has none.
    #[error("has an extension, which E.164 cannot hold")]
    Extension,
    /// A letter or other character that is neither a digit nor formatting.
    #[error("contains {0:?}, which is not a digit or phone formatting")]
    InvalidCharacter(char),
    /// No international prefix and no default country configured.
    #[error("has no international prefix (+ or 00) and no default country is configured")]
    NoCountry,
    /// Fewer digits than any real number has.
    #[error("is too short ({digits} digits with country code)")]
    TooShort {
        /// Digits counted, including the country code.
        digits: usize,
    },
    /// More than the 15 digits E.164 allows.
    #[error("is too long ({digits} digits with country code, E.164 allows 15)")]
    TooLong {
        /// Digits counted, including the country code.
        digits: usize,
    },
    /// A North American (+1) number whose national part is not 10 digits.
    #[error("is not a North American number (+1 needs 10 more digits, found {national})")]
    BadNanp {
        /// Digits after the `1`.
        national: usize,
    },
    /// A country code cannot start with 0.
    #[error("has a country code starting with 0")]
    BadCountryCode,
}

/// Cleans a phone number to E.164: `+` and 7 to 15 digits.
///
/// Rules, in order:
/// - Spaces, `-`, `.`, `(`, `)`, `/` and a leading `+` are formatting.
/// - An extension (`x`, `ext`, `#`, `;ext=`) is an error: E.164 has no
///   extensions, and dropping one silently would dial the wrong line.
/// - Any other non-digit (a letter, as in `1-800-FLOWERS`) is an error.
/// - A leading `+` or `00` means the digits start with the country code.
/// - Otherwise the number is national: one leading trunk `0` is dropped and
///   `default_country` is prepended; without a default country it is an
///   error. With default country `1`, an 11-digit number starting with `1`
///   already carries the country code (`1 415 555 0100`).
/// - The result must have 7 to 15 digits (E.164's maximum; 7 is the shortest
///   real numbers, such as +290 XXXX), and a `+1` number exactly 11.
///
/// ```
/// use crm_core::mapping::{CallingCode, to_e164};
/// let us = Some(CallingCode::new(1).unwrap());
/// assert_eq!(to_e164("+1 (415) 555-0100", None).unwrap(), "+14155550100");
/// assert_eq!(to_e164("00 44 20 7946 0958", None).unwrap(), "+442079460958");
/// assert_eq!(to_e164("(415) 555-0100", us).unwrap(), "+14155550100");
/// assert!(to_e164("415-555-0100 x12", us).is_err());
/// ```
///
/// # Errors
/// A [`PhoneError`] saying what is wrong with the number.
pub fn to_e164(text: &str, default_country: Option<CallingCode>) -> Result<String, PhoneError> {
    let t = text.trim();
    let lower = t.to_lowercase();
    if lower.contains("ext") || lower.contains('x') || lower.contains('#') || lower.contains(';') {
        return Err(PhoneError::Extension);
    }
    let mut digits = String::new();
    let mut international = false;
    for (i, c) in t.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => international = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            other => return Err(PhoneError::InvalidCharacter(other)),
        }
    }
    let full = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        let cc = default_country.ok_or(PhoneError::NoCountry)?;
        if cc.get() == 1 && digits.len() == 11 && digits.starts_with('1') {
            digits
        } else {
            let national = digits.strip_prefix('0').unwrap_or(&digits);
            format!("{cc}{national}")
        }
    };
    if full.starts_with('0') {
        return Err(PhoneError::BadCountryCode);
    }
    if full.len() < 7 {
        return Err(PhoneError::TooShort { digits: full.len() });
    }
    if full.len() > 15 {
        return Err(PhoneError::TooLong { digits: full.len() });
    }
    if full.starts_with('1') && full.len() != 11 {
        return Err(PhoneError::BadNanp {
            national: full.len() - 1,
        });
    }
    Ok(format!("+{full}"))
}

fn text_input<'a>(v: &'a Value, expected: &'static str) -> Result<Option<&'a str>, TransformError> {
    match v {
        Value::Null => Ok(None),
        Value::Text(s) => Ok(Some(s)),
        other => Err(TransformError::WrongType {
            expected,
            found: other.value_type(),
        }),
    }
}

fn number_input(v: &Value) -> Result<Option<Decimal>, TransformError> {
    match v {
        Value::Null => Ok(None),
        Value::Decimal(d) => Ok(Some(*d)),
        Value::Int(i) => Ok(Some(Decimal::from(*i))),
        Value::Text(s) if s.trim().is_empty() => Ok(None),
        Value::Text(s) => parse_decimal(s)
            .map(Some)
            .ok_or_else(|| TransformError::NotANumber { text: s.clone() }),
        other => Err(TransformError::WrongType {
            expected: "a number or numeric text",
            found: other.value_type(),
        }),
    }
}

/// Rounds half away from zero to exactly `n` decimal places.
///
/// # Errors
/// [`TransformError::Overflow`] when the value cannot carry `n` places.
pub fn round_to(d: Decimal, n: u32) -> Result<Decimal, TransformError> {
    let mut r = d.round_dp_with_strategy(n, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(n);
    if r.scale() != n {
        return Err(TransformError::Overflow {
            operation: format!("round({n})"),
        });
    }
    Ok(r)
}

impl Transform {
    /// Phone cleanup with a default calling code.
    pub fn phone(default_country: Option<CallingCode>) -> Self {
        Transform::Phone { default_country }
    }

    /// Rounding to `n` places.
    ///
    /// # Errors
    /// [`ConfigError::InvalidTransform`] when `n > 28`, the most a decimal holds.
    pub fn round(n: u32) -> Result<Self, ConfigError> {
        if n > 28 {
            return Err(ConfigError::InvalidTransform {
                transform: "round".into(),
                reason: format!("{n} places is more than the 28 a decimal holds"),
            });
        }
        Ok(Transform::Round(n))
    }

    /// Whether the transform has a reverse; only [`Transform::Constant`]
    /// does not (a map containing one is skipped in reverse).
    pub fn is_reversible(&self) -> bool {
        !matches!(self, Transform::Constant(_))
    }

    /// The transform's name as written in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Direct => "direct",
            Transform::Lower => "lower",
            Transform::Upper => "upper",
            Transform::Initcap => "initcap",
            Transform::Trim => "trim",
            Transform::Phone { .. } => "phone",
            Transform::Round(_) => "round",
            Transform::Scale(_) => "scale",
            Transform::DateFormat(_) => "date_format",
            Transform::ParseJson => "parse_json",
            Transform::Default(_) => "default",
            Transform::Constant(_) => "constant",
            Transform::EnumMap(_) => "enum_map",
        }
    }

    /// Applies the transform forward (`source -> target`).
    ///
    /// # Errors
    /// A [`TransformError`] when the input cannot be transformed (wrong type,
    /// unparsable text, out of range, unknown enum value, bad phone number).
    pub fn apply(&self, v: Value) -> Result<Value, TransformError> {
        match self {
            Transform::Direct => Ok(v),
            Transform::Lower => map_text(v, str::to_lowercase),
            Transform::Upper => map_text(v, str::to_uppercase),
            Transform::Initcap => map_text(v, initcap),
            Transform::Trim => map_text(v, |s| s.trim().to_owned()),
            Transform::Phone { default_country } => {
                let text = match &v {
                    Value::Int(i) => i.to_string(),
                    other => match text_input(other, "text or an integer")? {
                        None => return Ok(Value::Null),
                        Some(s) => s.to_owned(),
                    },
                };
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                to_e164(&text, *default_country)
                    .map(Value::Text)
                    .map_err(TransformError::Phone)
            }
            Transform::Round(n) => match number_input(&v)? {
                None => Ok(Value::Null),
                Some(d) => round_to(d, *n).map(Value::Decimal),
            },
            Transform::Scale(s) => match number_input(&v)? {
                None => Ok(Value::Null),
                Some(d) => s.map(d).map(Value::Decimal),
            },
            Transform::DateFormat(f) => f.forward(v),
            Transform::ParseJson => {
                match v {
                    Value::Json(_) => Ok(v),
                    Value::Text(s) if s.trim().is_empty() => Ok(Value::Null),
                    Value::Text(s) => serde_json::from_str(&s).map(Value::Json).map_err(|e| {
                        TransformError::BadJson {
                            reason: e.to_string(),
                        }
                    }),
                    Value::Null => Ok(Value::Null),
                    other => Err(TransformError::WrongType {
                        expected: "JSON text",
                        found: other.value_type(),
                    }),
                }
            }
            Transform::Default(d) => Ok(if v.is_blank() { d.clone() } else { v }),
            Transform::Constant(c) => Ok(c.clone()),
            Transform::EnumMap(m) => m.forward(v),
        }
    }

    /// Applies the transform in reverse (`target -> source`), per the table on
    /// [`Transform`].
    ///
    /// # Errors
    /// As [`Transform::apply`]; [`TransformError::NotReversible`] for
    /// [`Transform::Constant`].
    pub fn apply_reverse(&self, v: Value) -> Result<Value, TransformError> {
        match self {
            Transform::Scale(s) => match number_input(&v)? {
                None => Ok(Value::Null),
                Some(d) => s.inverse().map(d).map(Value::Decimal),
            },
            Transform::DateFormat(f) => f.reverse(v),
            Transform::ParseJson => match v {
                Value::Json(j) => Ok(Value::Text(j.to_string())),
                other => Ok(other),
            },
            Transform::Default(_) => Ok(v),
            Transform::Constant(_) => Err(TransformError::NotReversible {
                transform: self.name(),
            }),
            Transform::EnumMap(m) => m.reverse(v),
            Transform::Direct
            | Transform::Lower
            | Transform::Upper
            | Transform::Initcap
            | Transform::Trim
            | Transform::Phone { .. }
            | Transform::Round(_) => self.apply(v),
        }
    }

    /// Parses one transform or a chain from configuration JSON (a YAML value
    /// converts to this): a name (`"lower"`, `"INITCAP()"`, `"Round to 2
    /// decimals"`, `"round(2)"`, `"Scale 0-100"`), a single-key map
    /// (`{"round": 2}`, `{"scale": {"from": [0, 1], "to": [0, 100]}}`), a list
    /// of those, or null (no transform).
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown name (listing the known ones) or bad
    /// parameters.
    pub fn chain_from_json(json: &serde_json::Value) -> Result<Vec<Transform>, ConfigError> {
        match json {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::Array(items) => items
                .iter()
                .map(Transform::from_json)
                .collect::<Result<Vec<_>, _>>(),
            other => Ok(vec![Transform::from_json(other)?]),
        }
    }

    /// Parses one transform from configuration JSON: a name or a single-key
    /// map (see [`Transform::chain_from_json`]).
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown name or bad parameters.
    pub fn from_json(json: &serde_json::Value) -> Result<Transform, ConfigError> {
        match json {
            serde_json::Value::String(s) => s.parse(),
            serde_json::Value::Object(map) => {
                let mut entries = map.iter();
                let (Some((key, params)), None) = (entries.next(), entries.next()) else {
                    return Err(ConfigError::InvalidTransform {
                        transform: json.to_string(),
                        reason: "a transform map must have exactly one key, the transform name"
                            .into(),
                    });
                };
                from_map_entry(key, params)
            }
            other => Err(ConfigError::InvalidTransform {
                transform: other.to_string(),
                reason: "expected a transform name or a single-key map".into(),
            }),
        }
    }

    /// The configuration form of this transform: a name, or a single-key map
    /// for transforms with parameters. [`Transform::from_json`] reads it back
    /// to an equal transform, except that a decimal `default` or `constant`
    /// comes back as text (JSON numbers would lose its scale).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Transform::Direct
            | Transform::Lower
            | Transform::Upper
            | Transform::Initcap
            | Transform::Trim
            | Transform::ParseJson => json!(self.name()),
            Transform::Phone {
                default_country: None,
            } => json!("phone"),
            Transform::Phone {
                default_country: Some(c),
            } => json!({"phone": {"default_country": c.to_string()}}),
            Transform::Round(n) => json!({ "round": n }),
            Transform::Scale(s) => json!({"scale": {
                "from": [s.from.0.to_string(), s.from.1.to_string()],
                "to": [s.to.0.to_string(), s.to.1.to_string()],
                "clamp": s.clamp,
            }}),
            Transform::DateFormat(f) => {
                let to = match &f.to {
                    DateOutput::Date => "date".to_owned(),
                    DateOutput::DateTime => "datetime".to_owned(),
                    DateOutput::Format(s) => s.clone(),
                };
                json!({"date_format": {"from": f.from, "to": to}})
            }
            Transform::Default(v) => json!({ "default": v.to_json() }),
            Transform::Constant(v) => json!({ "constant": v.to_json() }),
            Transform::EnumMap(m) => json!({"enum_map": {
                "values": m.values,
                "fallback": m.fallback,
            }}),
        }
    }
}

/// Text transforms change text and leave every other value as it is: a
/// number or a date has no case and no surrounding spaces, and passing it
/// through keeps chains such as `[trim, round(2)]` reversible.
fn map_text(v: Value, f: impl Fn(&str) -> String) -> Result<Value, TransformError> {
    match v {
        Value::Text(s) => Ok(Value::Text(f(&s))),
        other => Ok(other),
    }
}

fn unknown(name: &str) -> ConfigError {
    ConfigError::UnknownTransform {
        name: name.to_owned(),
        known: KNOWN_TRANSFORMS.join(", "),
    }
}

fn invalid(transform: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidTransform {
        transform: transform.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a range written `0-100`, `0..100` or `0 to 100`.
fn parse_range(s: &str) -> Option<(Decimal, Decimal)> {
    let s = s.trim();
    let (a, b) = if let Some(split) = s.split_once("..") {
        split
    } else if let Some(split) = s.split_once(" to ") {
        split
    } else {
        // Skip a leading minus so `-1-1` splits after the first number.
        let start = usize::from(s.starts_with('-'));
        let idx = s.get(start..)?.find('-')? + start;
        (s.get(..idx)?, s.get(idx + 1..)?)
    };
    Some((parse_decimal(a)?, parse_decimal(b)?))
}

fn dec_param(v: &serde_json::Value) -> Option<Decimal> {
    match v {
        serde_json::Value::Number(n) => parse_decimal(&n.to_string()),
        serde_json::Value::String(s) => parse_decimal(s),
        _ => None,
    }
}

fn range_param(
    v: Option<&serde_json::Value>,
    what: &str,
) -> Result<(Decimal, Decimal), ConfigError> {
    let bad = || invalid("scale", format!("`{what}` must be a list of two numbers"));
    match v {
        Some(serde_json::Value::Array(items)) if items.len() == 2 => Ok((
            dec_param(&items[0]).ok_or_else(bad)?,
            dec_param(&items[1]).ok_or_else(bad)?,
        )),
        Some(serde_json::Value::String(s)) => parse_range(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn round_param(v: &serde_json::Value) -> Result<Transform, ConfigError> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .ok_or_else(|| invalid("round", format!("places must be a whole number, got {v}")))?;
    Transform::round(n)
}

fn from_map_entry(key: &str, params: &serde_json::Value) -> Result<Transform, ConfigError> {
    let name = normalise_name(key);
    let obj = params.as_object();
    let field = |k: &str| obj.and_then(|o| o.get(k));
    match name.as_str() {
        "round" => round_param(params),
        "scale" => {
            let scale = Scale::new(
                range_param(field("from"), "from")?,
                range_param(field("to"), "to")?,
            )?;
            let clamp = match field("clamp") {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(invalid(
                        "scale",
                        format!("`clamp` must be a boolean, got {other}"),
                    ));
                }
            };
            Ok(Transform::Scale(scale.clamped(clamp)))
        }
        "date_format" | "format_date" | "date" => {
            let text = |k: &str| -> Result<Option<String>, ConfigError> {
                match field(k) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Err(invalid(
                        "date_format",
                        format!("`{k}` must be text, got {other}"),
                    )),
                }
            };
            if !params.is_null() && obj.is_none() {
                return Err(invalid(
                    "date_format",
                    "expected a map with `from` and/or `to`",
                ));
            }
            let to = match text("to")? {
                None => DateOutput::Date,
                Some(t) => match t.to_lowercase().as_str() {
                    "date" => DateOutput::Date,
                    "datetime" | "date_time" | "timestamp" => DateOutput::DateTime,
                    _ => DateOutput::Format(t),
                },
            };
            Ok(Transform::DateFormat(DateFormat::new(text("from")?, to)?))
        }
        "phone" | "e164" | "clean_regex" | "clean_phone" => {
            let code = match field("default_country") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.parse::<CallingCode>()?),
                Some(serde_json::Value::Number(n)) => Some(n.to_string().parse::<CallingCode>()?),
                Some(other) => {
                    return Err(invalid(
                        "phone",
                        format!("`default_country` must be a calling code, got {other}"),
                    ));
                }
            };
            if !params.is_null() && obj.is_none() {
                return Err(invalid("phone", "expected a map with `default_country`"));
            }
            Ok(Transform::phone(code))
        }
        "default" => Ok(Transform::Default(Value::from_json(params.clone()))),
        "constant" => Ok(Transform::Constant(Value::from_json(params.clone()))),
        "enum_map" | "enum" | "map" => {
            let Some(o) = obj else {
                return Err(invalid(
                    "enum_map",
                    "expected a map with `values` and optional `fallback`",
                ));
            };
            let values = match o.get("values") {
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                            Ok((k.clone(), v.to_string()))
                        }
                        other => Err(invalid(
                            "enum_map",
                            format!("value for {k:?} must be text, got {other}"),
                        )),
                    })
                    .collect::<Result<IndexMap<_, _>, _>>()?,
                _ => {
                    return Err(invalid(
                        "enum_map",
                        "`values` must be a map of text to text",
                    ));
                }
            };
            let fallback = match o.get("fallback") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(invalid(
                        "enum_map",
                        format!("`fallback` must be text, got {other}"),
                    ));
                }
            };
            Ok(Transform::EnumMap(EnumMap { values, fallback }))
        }
        _ => {
            // `{lower: null}` and the like: a parameterless transform as a map.
            if params.is_null() {
                key.parse()
            } else {
                Err(unknown(key))
            }
        }
    }
}

fn normalise_name(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

impl FromStr for Transform {
    type Err = ConfigError;

    /// Parses a transform name, case-insensitively: the names of
    /// [`KNOWN_TRANSFORMS`], SQL-style calls (`LOWER()`, `INITCAP()`,
    /// `round(2)`, `scale(0, 1, 0, 100)`) and the seeds' table spellings
    /// (`Direct`, `Clean regex` = phone cleanup, `Round to 2 decimals`,
    /// `Scale 0-100` = from 0-1 onto 0-100, `Parse JSON`, `Format date` =
    /// ISO text to a date).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = s.trim();
        let lower = raw.to_lowercase();
        // Function-call form: name(args).
        if let Some(open) = lower.find('(') {
            let Some(inner) = lower.get(open + 1..).and_then(|r| r.strip_suffix(')')) else {
                return Err(invalid(raw, "unbalanced parentheses"));
            };
            let name = normalise_name(lower.get(..open).unwrap_or_default());
            let inner = inner.trim();
            if inner.is_empty() {
                return simple(&name).ok_or_else(|| unknown(raw));
            }
            return match name.as_str() {
                "round" => round_param(&serde_json::Value::String(inner.to_owned())),
                "scale" => {
                    let nums = inner
                        .split(',')
                        .map(parse_decimal)
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| invalid("scale", format!("bad numbers in {raw:?}")))?;
                    match nums.as_slice() {
                        [a, b, c, d] => Ok(Transform::Scale(Scale::new((*a, *b), (*c, *d))?)),
                        [c, d] => Ok(Transform::Scale(Scale::new(
                            (Decimal::ZERO, Decimal::ONE),
                            (*c, *d),
                        )?)),
                        _ => Err(invalid(
                            "scale",
                            "expected scale(to_min, to_max) or scale(from_min, from_max, to_min, to_max)",
                        )),
                    }
                }
                "phone" | "e164" => Ok(Transform::phone(Some(inner.parse()?))),
                _ => Err(unknown(raw)),
            };
        }
        if let Some(rest) = lower.strip_prefix("round to ") {
            let n = rest
                .trim_end_matches(" places")
                .trim_end_matches(" decimal places")
                .trim_end_matches(" decimals")
                .trim_end_matches(" decimal")
                .trim();
            return round_param(&serde_json::Value::String(n.to_owned()));
        }
        if let Some(rest) = lower.strip_prefix("scale ") {
            let to = parse_range(rest).ok_or_else(|| {
                invalid("scale", format!("expected `Scale MIN-MAX`, got {raw:?}"))
            })?;
            return Ok(Transform::Scale(Scale::new(
                Scale::unit_to_percent().from,
                to,
            )?));
        }
        simple(&normalise_name(&lower)).ok_or_else(|| unknown(raw))
    }
}

fn simple(name: &str) -> Option<Transform> {
    Some(match name {
        "direct" | "none" | "identity" | "copy" => Transform::Direct,
        "lower" | "lowercase" | "lower_case" => Transform::Lower,
        "upper" | "uppercase" | "upper_case" => Transform::Upper,
        "initcap" | "title_case" | "titlecase" => Transform::Initcap,
        "trim" => Transform::Trim,
        "phone" | "e164" | "clean_regex" | "clean_phone" => Transform::phone(None),
        "parse_json" | "json" => Transform::ParseJson,
        "format_date" | "date_format" | "date" => {
            Transform::DateFormat(DateFormat::iso(TypedDate::Date))
        }
        "format_datetime" | "datetime_format" | "datetime" => {
            Transform::DateFormat(DateFormat::iso(TypedDate::DateTime))
        }
        _ => return None,
    })
}

impl Serialize for Transform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Transform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        Transform::from_json(&json).map_err(serde::de::Error::custom)
    }
}

/// Deserializes a transform chain: one transform, a list, or null.
pub(crate) fn deserialize_chain<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Transform>, D::Error> {
    let json = Option::<serde_json::Value>::deserialize(deserializer)?;
    match json {
        None => Ok(Vec::new()),
        Some(j) => Transform::chain_from_json(&j).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing() {
        assert_eq!(
            parse_range("0-100"),
            Some((Decimal::ZERO, Decimal::from(100)))
        );
        assert_eq!(
            parse_range("-1-1"),
            Some((Decimal::NEGATIVE_ONE, Decimal::ONE))
        );
        assert_eq!(parse_range("0..1"), Some((Decimal::ZERO, Decimal::ONE)));
        assert_eq!(
            parse_range("0 to 5"),
            Some((Decimal::ZERO, Decimal::from(5)))
        );
        assert_eq!(parse_range("abc"), None);
    }
}
