//! Validation and cleaning of records, in the shape of seed 000's `validation:` block.
//!
//! Rules are declared per field. [`Validator::validate`] checks every rule of
//! every field, so a bad record reports *all* its failures at once, and returns
//! the cleaned record (text trimmed, decimals and dates parsed into their
//! types) when it passes. `unique` is checked across everything one validator
//! has seen, so duplicates are caught across pages of one run.
//!
//! ```
//! use crm_core::validate::{Rule, ValidationRules};
//! use crm_core::Record;
//!
//! let rules = ValidationRules::from_yaml(r#"
//! validation:
//!   booking_id: { type: "string", required: true, unique: true }
//!   budget: { type: "decimal", min: 0 }
//!   start_date: { type: "date", format: "YYYY-MM-DD" }
//!   end_date: { type: "date", after: "start_date" }
//! "#).unwrap();
//! let mut validator = rules.validator();
//!
//! let row = Record::new()
//!     .with("booking_id", "BK-1")
//!     .with("budget", "-5")
//!     .with("start_date", "2024-03-10")
//!     .with("end_date", "2024-03-01");
//! let report = validator.validate(&row, 0).unwrap_err();
//! let failed: Vec<_> = report.failures.iter().map(|f| (f.field.as_str(), f.rule)).collect();
//! assert_eq!(failed, [("budget", Rule::Min), ("end_date", Rule::After)]);
//! ```

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use indexmap::IndexMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::record::Record;
use crate::value::{Value, parse_decimal};

/// The type a field must have (seed spellings and a few synonyms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Text; numbers are accepted and turned into text (a sheet may hold `1001`).
    #[serde(alias = "text")]
    String,
    /// An exact decimal.
    #[serde(alias = "number", alias = "numeric")]
    Decimal,
    /// A whole number.
    #[serde(alias = "int", alias = "bigint")]
    Integer,
    /// A date (in `format`, ISO `YYYY-MM-DD` by default).
    Date,
    /// A timestamp (RFC 3339 unless `format` says otherwise; naive times are UTC).
    #[serde(alias = "timestamp", alias = "date_time")]
    Datetime,
    /// true/false.
    #[serde(alias = "bool")]
    Boolean,
}

/// A bound for `min`/`max`: a number, or a date for date fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// A number bound.
    Number(Decimal),
    /// A date bound, `YYYY-MM-DD`.
    Date(NaiveDate),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Number(n) => write!(f, "{n}"),
            Bound::Date(d) => write!(f, "{d}"),
        }
    }
}

/// The rules of one field, as written under `validation:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FieldRules {
    /// The type the value must have.
    #[serde(rename = "type", default)]
    pub kind: Option<FieldKind>,
    /// The value must be present and not blank.
    #[serde(default)]
    pub required: bool,
    /// No two records may share the value.
    #[serde(default)]
    pub unique: bool,
    /// Smallest allowed value (inclusive).
    #[serde(default)]
    pub min: Option<Bound>,
    /// Largest allowed value (inclusive).
    #[serde(default)]
    pub max: Option<Bound>,
    /// Date/time format: `YYYY-MM-DD`-style tokens or a chrono `%` format.
    /// Dates must match it exactly (`2024-3-1` fails `YYYY-MM-DD`).
    #[serde(default)]
    pub format: Option<String>,
    /// The date must not be before this other field's date. Flight dates are
    /// inclusive, so a one-day flight (`end_date` = `start_date`) passes.
    #[serde(default)]
    pub after: Option<String>,
    /// Like `after`, but the date must be strictly later.
    #[serde(default)]
    pub strictly_after: Option<String>,
    /// The value must be one of these (compared as text, exactly).
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
    /// The value must be an email address.
    #[serde(default)]
    pub email: bool,
    /// Maximum text length in characters.
    #[serde(default)]
    pub max_length: Option<usize>,
}

/// Which rule failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `type`.
    Type,
    /// `required`.
    Required,
    /// `unique`.
    Unique,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `format`.
    Format,
    /// `after` / `strictly_after`.
    After,
    /// `one_of`.
    OneOf,
    /// `email`.
    Email,
    /// `max_length`.
    MaxLength,
}

impl Rule {
    /// The rule's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Type => "type",
            Rule::Required => "required",
            Rule::Unique => "unique",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::Format => "format",
            Rule::After => "after",
            Rule::OneOf => "one_of",
            Rule::Email => "email",
            Rule::MaxLength => "max_length",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFailure {
    /// The field.
    pub field: String,
    /// The rule.
    pub rule: Rule,
    /// What was wrong, for people.
    pub message: String,
}

/// Every failed rule of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The record's label: its key value (the first `unique` field), id, or `#index`.
    pub record: String,
    /// Position in the input.
    pub index: usize,
    /// The failures, in field then rule order.
    pub failures: Vec<RuleFailure>,
}

impl ValidationReport {
    /// Whether `field` failed `rule`.
    pub fn has(&self, field: &str, rule: Rule) -> bool {
        self.failures
            .iter()
            .any(|f| f.field == field && f.rule == rule)
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} is invalid: ", self.record)?;
        for (i, fail) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} ({}): {}", fail.field, fail.rule, fail.message)?;
        }
        Ok(())
    }
}

impl From<ValidationReport> for Error {
    fn from(r: ValidationReport) -> Self {
        let fields = r
            .failures
            .iter()
            .map(|f| f.field.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Error::new(ErrorKind::InvalidInput, r.to_string())
            .with_context("record", &r.record)
            .with_context("fields", fields)
    }
}

/// The rules of every field, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValidationRules {
    /// Field name -> rules.
    pub fields: IndexMap<String, FieldRules>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    validation: ValidationRules,
}

impl ValidationRules {
    /// Parses rules from YAML: either the map of fields itself or a document
    /// with a top-level `validation:` key (seed 000's shape).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the line and problem (an unknown rule
    /// key, a wrong type, a `format` that cannot be understood, an `after`
    /// naming an undeclared field).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let rules = match serde_yaml::from_str::<Wrapped>(text) {
            Ok(w) => w.validation,
            Err(wrapped_err) => {
                let looks_wrapped = serde_yaml::from_str::<serde_yaml::Value>(text)
                    .ok()
                    .and_then(|v| v.get("validation").cloned())
                    .is_some();
                if looks_wrapped {
                    return Err(Error::invalid_input(format!(
                        "validation rules: {wrapped_err}"
                    )));
                }
                serde_yaml::from_str::<ValidationRules>(text)
                    .map_err(|e| Error::invalid_input(format!("validation rules: {e}")))?
            }
        };
        rules.check()?;
        Ok(rules)
    }

    /// Checks the rules make sense on their own.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the field.
    pub fn check(&self) -> Result<(), Error> {
        for (field, r) in &self.fields {
            if let Some(fmt) = &r.format {
                chrono_format(fmt).map_err(|m| {
                    Error::invalid_input(format!("validation rules: field `{field}`: {m}"))
                })?;
            }
            for other in [&r.after, &r.strictly_after].into_iter().flatten() {
                if !self.fields.contains_key(other.as_str()) {
                    return Err(Error::invalid_input(format!(
                        "validation rules: field `{field}` must be after `{other}`, \
                         which has no rules (declare it, e.g. `{other}: {{type: date}}`)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The field that labels records in reports: the first `unique` field.
    pub fn key_field(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(_, r)| r.unique)
            .map(|(k, _)| k.as_str())
    }

    /// A validator with empty `unique` memory.
    pub fn validator(&self) -> Validator {
        Validator {
            rules: self.clone(),
            seen: self
                .fields
                .iter()
                .filter(|(_, r)| r.unique)
                .map(|(k, _)| (k.clone(), HashSet::new()))
                .collect(),
        }
    }
}

/// Validates records against [`ValidationRules`], remembering `unique` values
/// across calls (and so across pages).
#[derive(Clone, Debug)]
pub struct Validator {
    rules: ValidationRules,
    seen: IndexMap<String, HashSet<String>>,
}

/// The outcome of validating a batch.
#[derive(Clone, Debug, Default)]
pub struct BatchValidation {
    /// Cleaned records that passed, in input order.
    pub valid: Vec<Record>,
    /// Records that failed, as they came in, with their reports.
    pub invalid: Vec<(Record, ValidationReport)>,
}

impl Validator {
    /// The rules.
    pub fn rules(&self) -> &ValidationRules {
        &self.rules
    }

    /// Validates and cleans one record (`index` is its position, for labels).
    ///
    /// On success the returned record has trimmed text, parsed decimals,
    /// integers, dates and timestamps for typed fields, and its `unique`
    /// values are remembered. On failure nothing is remembered, so a fixed
    /// record can be retried.
    ///
    /// # Errors
    /// A [`ValidationReport`] with every failed rule.
    pub fn validate(&mut self, record: &Record, index: usize) -> Result<Record, ValidationReport> {
        let mut cleaned = record.clone();
        let mut failures = Vec::new();
        let mut unique_keys = Vec::new();

        for (field, rules) in &self.rules.fields {
            let raw = record.get_or_null(field);
            if raw.is_blank() {
                if rules.required {
                    failures.push(fail(
                        field,
                        Rule::Required,
                        "is required but missing or blank",
                    ));
                }
                if record.get(field).is_some() {
                    cleaned.set(field.clone(), Value::Null);
                }
                continue;
            }
            let value = match clean_value(raw, rules) {
                Ok(v) => v,
                Err((rule, msg)) => {
                    failures.push(fail(field, rule, &msg));
                    continue;
                }
            };
            check_value(field, &value, rules, &mut failures);
            if rules.unique {
                let key = value.to_string();
                let dup = self.seen.get(field).is_some_and(|s| s.contains(&key))
                    || unique_keys.iter().any(|(f, k)| f == field && *k == key);
                if dup {
                    failures.push(fail(
                        field,
                        Rule::Unique,
                        &format!("duplicate value {key:?}: an earlier record already has it"),
                    ));
                } else {
                    unique_keys.push((field.clone(), key));
                }
            }
            cleaned.set(field.clone(), value);
        }

        // Cross-field rules, on cleaned values, only when both sides are valid dates.
        for (field, rules) in &self.rules.fields {
            for (other, strict) in [(&rules.after, false), (&rules.strictly_after, true)] {
                let Some(other) = other else { continue };
                let (Some(this), Some(that)) = (
                    cleaned.get(field).and_then(Value::as_date),
                    cleaned.get(other).and_then(Value::as_date),
                ) else {
                    continue;
                };
                let bad = if strict { this <= that } else { this < that };
                if bad {
                    let word = if strict { "after" } else { "on or after" };
                    failures.push(fail(
                        field,
                        Rule::After,
                        &format!("{this} must be {word} {other} ({that})"),
                    ));
                }
            }
        }

        if failures.is_empty() {
            for (field, key) in unique_keys {
                if let Some(set) = self.seen.get_mut(&field) {
                    set.insert(key);
                }
            }
            Ok(cleaned)
        } else {
            let order: Vec<&String> = self.rules.fields.keys().collect();
            failures.sort_by_key(|f| order.iter().position(|k| **k == f.field));
            Err(ValidationReport {
                record: record.label(self.rules.key_field(), index),
                index,
                failures,
            })
        }
    }

    /// Validates a batch; `first_index` is the position of its first record
    /// in the whole input (so labels stay right across pages).
    pub fn validate_batch(&mut self, records: Vec<Record>, first_index: usize) -> BatchValidation {
        let mut out = BatchValidation::default();
        for (i, record) in records.into_iter().enumerate() {
            match self.validate(&record, first_index + i) {
                Ok(clean) => out.valid.push(clean),
                Err(report) => out.invalid.push((record, report)),
            }
        }
        out
    }
}

fn fail(field: &str, rule: Rule, message: &str) -> RuleFailure {
    RuleFailure {
        field: field.to_owned(),
        rule,
        message: message.to_owned(),
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{:?}...", s.chars().take(40).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// Converts a non-blank value to the rule's type, or says which rule failed.
fn clean_value(raw: &Value, rules: &FieldRules) -> Result<Value, (Rule, String)> {
    let raw = match raw {
        Value::Text(s) => Value::Text(s.trim().to_owned()),
        other => other.clone(),
    };
    let Some(kind) = rules.kind else {
        return Ok(raw);
    };
    let type_err = |what: &str| {
        (
            Rule::Type,
            format!("expected {what}, found {}", shown(&raw)),
        )
    };
    match kind {
        FieldKind::String => match &raw {
            Value::Text(_) => Ok(raw.clone()),
            Value::Int(_) | Value::Decimal(_) => Ok(Value::Text(raw.to_string())),
            _ => Err(type_err("text")),
        },
        FieldKind::Decimal => match &raw {
            Value::Decimal(_) | Value::Int(_) => {
                Ok(Value::Decimal(raw.as_decimal().unwrap_or_default()))
            }
            Value::Text(s) => parse_decimal(s)
                .map(Value::Decimal)
                .ok_or_else(|| type_err("a decimal number")),
            _ => Err(type_err("a decimal number")),
        },
        FieldKind::Integer => match &raw {
            Value::Text(s) => s
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| type_err("a whole number")),
            other => other
                .as_i64()
                .map(Value::Int)
                .ok_or_else(|| type_err("a whole number")),
        },
        FieldKind::Boolean => match &raw {
            Value::Bool(_) => Ok(raw.clone()),
            Value::Text(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" => Ok(Value::Bool(true)),
                "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(type_err("true or false")),
            },
            _ => Err(type_err("true or false")),
        },
        FieldKind::Date => match &raw {
            Value::Date(_) => Ok(raw.clone()),
            Value::Text(s) => {
                let fmt = match &rules.format {
                    Some(f) => chrono_format(f).map_err(|m| (Rule::Format, m))?,
                    None => "%Y-%m-%d".to_owned(),
                };
                let date = NaiveDate::parse_from_str(s, &fmt)
                    .ok()
                    .filter(|d| d.format(&fmt).to_string() == *s);
                match (date, &rules.format) {
                    (Some(d), _) => Ok(Value::Date(d)),
                    (None, Some(f)) => Err((
                        Rule::Format,
                        format!("{} does not match the date format {f}", shown(&raw)),
                    )),
                    (None, None) => Err(type_err("a date YYYY-MM-DD")),
                }
            }
            _ => Err(type_err("a date")),
        },
        FieldKind::Datetime => match &raw {
            Value::DateTime(_) => Ok(raw.clone()),
            Value::Text(s) => {
                let parsed = match &rules.format {
                    Some(f) => {
                        let fmt = chrono_format(f).map_err(|m| (Rule::Format, m))?;
                        NaiveDateTime::parse_from_str(s, &fmt)
                            .map(|t| t.and_utc())
                            .ok()
                    }
                    None => DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .ok(),
                };
                parsed
                    .map(Value::DateTime)
                    .ok_or_else(|| match &rules.format {
                        Some(f) => (
                            Rule::Format,
                            format!("{} does not match the timestamp format {f}", shown(&raw)),
                        ),
                        None => type_err("an RFC 3339 timestamp"),
                    })
            }
            _ => Err(type_err("a timestamp")),
        },
    }
}

fn check_value(field: &str, value: &Value, rules: &FieldRules, failures: &mut Vec<RuleFailure>) {
    for (bound, rule) in [(&rules.min, Rule::Min), (&rules.max, Rule::Max)] {
        let Some(bound) = bound else { continue };
        let ordering = match (bound, value) {
            (Bound::Number(b), v) => v.as_decimal().map(|d| d.cmp(b)),
            (Bound::Date(b), v) => v.as_date().map(|d| d.cmp(b)),
        };
        let bad = match (ordering, rule) {
            (Some(o), Rule::Min) => o.is_lt(),
            (Some(o), _) => o.is_gt(),
            (None, _) => {
                failures.push(fail(
                    field,
                    rule,
                    &format!("{} cannot be compared with {rule} {bound}", shown(value)),
                ));
                continue;
            }
        };
        if bad {
            let word = if rule == Rule::Min { "less" } else { "greater" };
            failures.push(fail(
                field,
                rule,
                &format!("{} is {word} than the {rule} {bound}", shown(value)),
            ));
        }
    }
    if let Some(allowed) = &rules.one_of {
        let text = value.to_string();
        if !allowed.contains(&text) {
            failures.push(fail(
                field,
                Rule::OneOf,
                &format!("{} is not one of {}", shown(value), allowed.join(", ")),
            ));
        }
    }
    if let Some(max) = rules.max_length {
        let n = value.to_string().chars().count();
        if n > max {
            failures.push(fail(
                field,
                Rule::MaxLength,
                &format!("{n} characters, at most {max} allowed"),
            ));
        }
    }
    if rules.email && !is_email(&value.to_string()) {
        failures.push(fail(
            field,
            Rule::Email,
            &format!("{} is not an email address", shown(value)),
        ));
    }
}

/// A syntactic email check: `local@domain.tld`, no spaces, sane lengths,
/// domain labels of letters, digits and hyphens.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 || s.len() > 254 {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && domain_ok
}

/// Turns a `YYYY-MM-DD`-style format into a chrono format; a format that
/// already contains `%` is taken as chrono's own.
///
/// Tokens: `YYYY`, `YY`, `MM`, `DD`, `HH`, `mm`, `ss`; other characters are
/// literal.
///
/// # Errors
/// A message when a letter is not part of a known token.
pub fn chrono_format(format: &str) -> Result<String, String> {
    if format.contains('%') {
        return Ok(format.to_owned());
    }
    const TOKENS: [(&str, &str); 7] = [
        ("YYYY", "%Y"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%H"),
        ("mm", "%M"),
        ("ss", "%S"),
    ];
    let mut out = String::new();
    let mut rest = format;
    'outer: while let Some(c) = rest.chars().next() {
        for (token, chrono) in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(chrono);
                rest = after;
                continue 'outer;
            }
        }
        if c.is_alphabetic() {
            return Err(format!(
                "format {format:?}: {c:?} is not part of a known token (YYYY, YY, MM, DD, HH, mm, ss)"
            ));
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
