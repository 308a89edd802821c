//! Personal data: masking for logs, reports and errors, and the set of
//! fields a mapping marks `pii: true`.
//!
//! Masking hides a value but keeps enough of it for a person to recognise
//! which record a line talks about:
//!
//! | kind | formula | example |
//! |---|---|---|
//! | email | first character of the local part, `***`, `@`, the domain as written | `john@example.com` -> `j***@example.com` |
//! | phone | a leading `+` and the digit after it, one `*` per other digit, the last 2 digits; formatting dropped | `+1 (415) 555-0190` -> `+1********90` |
//! | text | first character, `***` | `Johnson` -> `J***` |
//!
//! The rules in full:
//!
//! - Surrounding whitespace is ignored; a blank value has nothing to hide and
//!   comes back unchanged.
//! - A part of one character (a one-letter name, the `j` of `j@x.com`) is not
//!   shown at all: `***`.
//! - A phone number with fewer than 7 digits (shorter than any real number)
//!   shows no digit: every digit becomes `*`. An input without digits is
//!   masked as text.
//! - Masking never gives back its input: a value that already is in masked
//!   form (`j***@example.com`, `J***`) is masked further (`***@example.com`,
//!   `***`), so a masked line can be masked again without harm.
//! - [`PiiKind::Auto`] picks by content: a value containing `@` is an email,
//!   one with at least 7 digits making up two thirds of its non-space
//!   characters is a phone number, anything else is text.
//!
//! [`PiiFields`] is the set of field names holding personal data, usually
//! built from a [`Mapping`]'s `pii: true` maps. It masks a [`Record`], a
//! JSON document (at any depth, including a record's serde form
//! `{"fields": {"email": {"text": ...}}}`), and values of a record quoted in
//! an error message.
//!
//! ```
//! use crm_core::pii::{PiiFields, mask_email, mask_phone, mask_text};
//! use crm_core::Record;
//!
//! assert_eq!(mask_email("john@example.com"), "j***@example.com");
//! assert_eq!(mask_phone("+1 (415) 555-0190"), "+1********90");
//! assert_eq!(mask_text("Johnson"), "J***");
//!
//! let pii: PiiFields = ["email", "phone"].into_iter().collect();
//! let r = Record::new()
//!     .with("email", "john@example.com")
//!     .with("phone", "+14155550190")
//!     .with("city", "Lyon");
//! let masked = pii.mask_record(&r);
//! assert_eq!(masked.text("email"), Some("j***@example.com"));
//! assert_eq!(masked.text("phone"), Some("+1********90"));
//! assert_eq!(masked.text("city"), Some("Lyon"));
//! ```

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mapping::Mapping;
use crate::record::Record;
use crate::value::Value;

/// What is hidden in place of a masked part.
const STARS: &str = "***";

/// Fewer digits than this are no phone number: none of them is shown.
const MIN_PHONE_DIGITS: usize = 7;

/// Which masking formula to use (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// Pick by content: `@` means email, mostly digits means phone, else text.
    #[default]
    Auto,
    /// [`mask_email`].
    Email,
    /// [`mask_phone`].
    Phone,
    /// [`mask_text`].
    Text,
}

impl PiiKind {
    /// The kind [`PiiKind::Auto`] picks for `text`: [`PiiKind::Email`] when it
    /// contains `@`, [`PiiKind::Phone`] when it has at least 7 ASCII digits
    /// and they make up at least two thirds of its non-space characters,
    /// else [`PiiKind::Text`].
    ///
    /// ```
    /// use crm_core::pii::PiiKind;
    /// assert_eq!(PiiKind::detect("ada@example.com"), PiiKind::Email);
    /// assert_eq!(PiiKind::detect("+1 (415) 555-0100"), PiiKind::Phone);
    /// assert_eq!(PiiKind::detect("Ada Lovelace"), PiiKind::Text);
    /// ```
    pub fn detect(text: &str) -> PiiKind {
        if text.contains('@') {
            return PiiKind::Email;
        }
        let (digits, visible) = text.chars().fold((0usize, 0usize), |(d, v), c| {
            (
                d + usize::from(c.is_ascii_digit()),
                v + usize::from(!c.is_whitespace()),
            )
        });
        if digits >= MIN_PHONE_DIGITS && digits * 3 >= visible * 2 {
            PiiKind::Phone
        } else {
            PiiKind::Text
        }
    }
}

/// `text` unless it equals `input`, in which case `fallback` (so masking
/// never returns its input).
fn not_input(text: String, input: &str, fallback: impl FnOnce() -> String) -> String {
    if text == input { fallback() } else { text }
}

/// First character and `***` when `part` has at least two characters,
/// else `***`.
fn hide(part: &str) -> String {
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(_)) => format!("{first}{STARS}"),
        _ => STARS.to_owned(),
    }
}

/// Masks text: its first character and `***` (`***` alone for a single
/// character). Blank text comes back unchanged; see the
/// [module docs](self) for the rules.
///
/// ```
/// use crm_core::pii::mask_text;
/// assert_eq!(mask_text("Johnson"), "J***");
/// assert_eq!(mask_text(" Zoë "), "Z***");
/// assert_eq!(mask_text("J"), "***");
/// assert_eq!(mask_text("J***"), "***");
/// assert_eq!(mask_text(""), "");
/// ```
pub fn mask_text(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return text.to_owned();
    }
    not_input(hide(t), text, || STARS.to_owned())
}

/// Masks an email address: the first character of the local part, `***`,
/// `@` and the domain as written (split at the last `@`). Text without `@`
/// is masked as [`mask_text`]. See the [module docs](self) for the rules.
///
/// ```
/// use crm_core::pii::mask_email;
/// assert_eq!(mask_email("john@example.com"), "j***@example.com");
/// assert_eq!(mask_email("j@example.com"), "***@example.com");
/// assert_eq!(mask_email("j***@example.com"), "***@example.com");
/// assert_eq!(mask_email("not an email"), "n***");
/// ```
pub fn mask_email(text: &str) -> String {
    let t = text.trim();
    let Some((local, domain)) = t.rsplit_once('@') else {
        return mask_text(text);
    };
    not_input(format!("{}@{domain}", hide(local)), text, || {
        format!("{STARS}@{domain}")
    })
}

/// `text` with every email address in it masked with [`mask_email`], for
/// free text that quotes values no record lists (a provider's error
/// message). A word counts as an address when it holds `@` once stripped
/// of surrounding punctuation; words are split at whitespace, `,`, `;`
/// and quotes.
///
/// ```
/// use crm_core::pii::mask_emails_in;
///
/// assert_eq!(
///     mask_emails_in("duplicate: 'john@example.com' exists"),
///     "duplicate: 'j***@example.com' exists"
/// );
/// assert_eq!(mask_emails_in("<jane@corp.io>"), "<j***@corp.io>");
/// assert_eq!(mask_emails_in("no address here"), "no address here");
/// ```
pub fn mask_emails_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let address = word.trim_matches(|c: char| !c.is_alphanumeric());
        if address.contains('@') {
            out.push_str(&word.replace(address, &mask_email(address)));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, ',' | ';' | '"' | '\'') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Masks a phone number: a leading `+` and the digit after it, one `*` per
/// other digit, and the last 2 digits; spaces, dashes and brackets are
/// dropped. With fewer than 7 digits no digit is shown; text without digits
/// is masked as [`mask_text`]. See the [module docs](self).
///
/// ```
/// use crm_core::pii::mask_phone;
/// assert_eq!(mask_phone("+14155550190"), "+1********90");
/// assert_eq!(mask_phone("(415) 555-0190"), "********90");
/// assert_eq!(mask_phone("+1234"), "+****");
/// ```
pub fn mask_phone(text: &str) -> String {
    let t = text.trim();
    let digits: Vec<char> = t.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return mask_text(text);
    }
    let plus = t.starts_with('+');
    let n = digits.len();
    let (head, tail) = if n >= MIN_PHONE_DIGITS {
        (usize::from(plus), 2)
    } else {
        (0, 0)
    };
    let mut out = String::with_capacity(n + 1);
    if plus {
        out.push('+');
    }
    out.extend(&digits[..head]);
    out.extend(std::iter::repeat_n('*', n - head - tail));
    out.extend(&digits[n - tail..]);
    // At least one digit became `*`, so `out` has fewer digits than `text`.
    out
}

/// Masks `text` with the formula of `kind` ([`PiiKind::Auto`] picks by
/// content, see [`PiiKind::detect`]).
///
/// ```
/// use crm_core::pii::{PiiKind, mask_str};
/// assert_eq!(mask_str("ada@example.com", PiiKind::Auto), "a***@example.com");
/// assert_eq!(mask_str("ada@example.com", PiiKind::Text), "a***");
/// ```
pub fn mask_str(text: &str, kind: PiiKind) -> String {
    let kind = match kind {
        PiiKind::Auto => PiiKind::detect(text),
        k => k,
    };
    match kind {
        PiiKind::Email => mask_email(text),
        PiiKind::Phone => mask_phone(text),
        PiiKind::Auto | PiiKind::Text => mask_text(text),
    }
}

/// Masks a value. The result is text, whatever the input type:
///
/// - [`Value::Null`] stays null, blank text stays as it is (nothing to hide);
/// - text, integers and decimals are masked by `kind` (so a phone number
///   kept as an integer is masked as a phone number);
/// - booleans, dates and date-times become `***` (any part of them would
///   say too much);
/// - JSON keeps its shape, with every leaf masked the same way (JSON null
///   stays null).
///
/// ```
/// use crm_core::pii::{PiiKind, mask_value};
/// use crm_core::Value;
/// assert_eq!(
///     mask_value(&Value::Int(4_155_550_190), PiiKind::Auto),
///     Value::Text("********90".into())
/// );
/// assert_eq!(mask_value(&Value::Null, PiiKind::Auto), Value::Null);
/// ```
pub fn mask_value(value: &Value, kind: PiiKind) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::Text(s) => Value::Text(mask_str(s, kind)),
        Value::Int(_) | Value::Decimal(_) => Value::Text(mask_str(&value.to_string(), kind)),
        Value::Bool(_) | Value::Date(_) | Value::DateTime(_) => Value::Text(STARS.to_owned()),
        Value::Json(j) => Value::Json(mask_json_leaves(j, kind)),
    }
}

/// The value tags of [`Value`]'s serde form, other than `null`.
const VALUE_TAGS: [&str; 7] = [
    "bool",
    "int",
    "decimal",
    "text",
    "date",
    "date_time",
    "json",
];

/// Masks every leaf of `json`, keeping its shape; a [`Value`] in its serde
/// form (`{"text": ...}`) stays in that form.
fn mask_json_leaves(json: &serde_json::Value, kind: PiiKind) -> serde_json::Value {
    use serde_json::Value as J;
    match json {
        J::Null => J::Null,
        // The serde form of `Value::Null`; the word itself is no personal data.
        J::String(s) if s == "null" => json.clone(),
        J::String(s) => J::String(mask_str(s, kind)),
        J::Number(n) => J::String(mask_str(&n.to_string(), kind)),
        J::Bool(_) => J::String(STARS.to_owned()),
        J::Array(items) => J::Array(items.iter().map(|v| mask_json_leaves(v, kind)).collect()),
        J::Object(map) => {
            if map.len() == 1
                && map.keys().all(|k| VALUE_TAGS.contains(&k.as_str()))
                && let Ok(v) = serde_json::from_value::<Value>(json.clone())
                && let Ok(masked) = serde_json::to_value(mask_value(&v, kind))
            {
                return masked;
            }
            J::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), mask_json_leaves(v, kind)))
                    .collect(),
            )
        }
    }
}

/// Collects the text of every leaf of `json` (strings, numbers).
fn leaves(json: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value as J;
    match json {
        J::String(s) => out.push(s.clone()),
        J::Number(n) => out.push(n.to_string()),
        J::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        J::Object(map) => map.values().for_each(|v| leaves(v, out)),
        J::Null | J::Bool(_) => {}
    }
}

/// Displays a value masked (see [`masked`] and [`masked_str`]).
#[derive(Clone, Copy, Debug)]
pub struct Masked<'a>(MaskedInner<'a>);

#[derive(Clone, Copy, Debug)]
enum MaskedInner<'a> {
    Value(&'a Value),
    Str(&'a str),
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            MaskedInner::Value(v) => write!(f, "{}", mask_value(v, PiiKind::Auto)),
            MaskedInner::Str(s) => f.write_str(&mask_str(s, PiiKind::Auto)),
        }
    }
}

/// Displays `value` masked ([`mask_value`] with [`PiiKind::Auto`]), for
/// error messages and log lines.
///
/// ```
/// use crm_core::pii::masked;
/// use crm_core::Value;
/// let v = Value::from("john@example.com");
/// assert_eq!(format!("duplicate email {}", masked(&v)), "duplicate email j***@example.com");
/// ```
pub fn masked(value: &Value) -> Masked<'_> {
    Masked(MaskedInner::Value(value))
}

/// Displays `text` masked ([`mask_str`] with [`PiiKind::Auto`]).
///
/// ```
/// use crm_core::pii::masked_str;
/// assert_eq!(masked_str("+14155550190").to_string(), "+1********90");
/// ```
pub fn masked_str(text: &str) -> Masked<'_> {
    Masked(MaskedInner::Str(text))
}

/// Displays a field's value, masked when the field holds personal data
/// (see [`PiiFields::show`]).
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a> {
    value: &'a Value,
    mask: bool,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask {
            masked(self.value).fmt(f)
        } else {
            self.value.fmt(f)
        }
    }
}

/// The names of the fields holding personal data.
///
/// Built from a [`Mapping`] ([`PiiFields::from_mapping`]: the source and the
/// target of every `pii: true` map) or from a list of names. A name matches
/// a record field of that name, and in JSON an object key of that name at
/// any depth; a dotted name (`contact.email`) also matches the key `email`
/// inside the object under `contact` (the `{"json": ...}` wrapper of a
/// [`Value::Json`] in a record's serde form is not a path segment). Serde
/// form: a list of names.
///
/// ```
/// use crm_core::mapping::Mapping;
/// use crm_core::pii::PiiFields;
///
/// let mapping = Mapping::from_yaml(r#"
/// mappings:
///   - {source: email, destination: Email, pii: true}
///   - {source: city, destination: City}
/// "#)?;
/// let pii = PiiFields::from_mapping(&mapping);
/// assert!(pii.contains("email") && pii.contains("Email"));
/// assert!(!pii.contains("city"));
///
/// let row = serde_json::json!({"id": "C-1", "fields": {"Email": {"text": "john@example.com"}}});
/// assert_eq!(
///     pii.mask_json(&row),
///     serde_json::json!({"id": "C-1", "fields": {"Email": {"text": "j***@example.com"}}})
/// );
/// # Ok::<(), crm_core::mapping::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PiiFields {
    names: BTreeSet<String>,
}

impl PiiFields {
    /// No field: nothing is masked.
    pub fn new() -> Self {
        PiiFields::default()
    }

    /// The source and target names of every `pii: true` map of `mapping`.
    pub fn from_mapping(mapping: &Mapping) -> Self {
        let mut out = PiiFields::new();
        out.add_mapping(mapping);
        out
    }

    /// Adds the source and target names of every `pii: true` map of
    /// `mapping`.
    pub fn add_mapping(&mut self, mapping: &Mapping) {
        for map in mapping.maps().iter().filter(|m| m.pii) {
            self.insert(map.source.as_str());
            self.insert(map.target.as_str());
        }
    }

    /// Adds a field name (an empty name is ignored).
    pub fn insert(&mut self, name: impl Into<String>) {
        let name = name.into();
        if !name.is_empty() {
            self.names.insert(name);
        }
    }

    /// Adds a field name (builder style).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>) -> Self {
        self.insert(name);
        self
    }

    /// Whether `name` is one of the fields.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there is no name (nothing is masked).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether the key `key`, reached through the object keys (and array
    /// indexes) `path`, names one of the fields.
    fn matches(&self, dotted: bool, path: &[String], key: &str) -> bool {
        if self.names.contains(key) {
            return true;
        }
        if !dotted {
            return false;
        }
        let mut candidate = key.to_owned();
        for segment in path.iter().rev() {
            candidate = format!("{segment}.{candidate}");
            if self.names.contains(&candidate) {
                return true;
            }
        }
        false
    }

    fn has_dotted(&self) -> bool {
        self.names.iter().any(|n| n.contains('.'))
    }

    /// `json` with the value of every key naming one of the fields (at any
    /// depth, see [`PiiFields`]) replaced by `replace(key, value)`. The
    /// walk does not descend into a replaced value.
    ///
    /// This is the building block of [`PiiFields::mask_json`]; the state
    /// store uses it to seal values instead of masking them.
    ///
    /// # Errors
    /// The first error `replace` returns.
    pub fn try_replace_json<E>(
        &self,
        json: &serde_json::Value,
        mut replace: impl FnMut(&str, &serde_json::Value) -> Result<serde_json::Value, E>,
    ) -> Result<serde_json::Value, E> {
        if self.is_empty() {
            return Ok(json.clone());
        }
        let dotted = self.has_dotted();
        self.walk(json, dotted, &mut Vec::new(), &mut replace)
    }

    fn walk<E>(
        &self,
        json: &serde_json::Value,
        dotted: bool,
        path: &mut Vec<String>,
        replace: &mut impl FnMut(&str, &serde_json::Value) -> Result<serde_json::Value, E>,
    ) -> Result<serde_json::Value, E> {
        use serde_json::Value as J;
        match json {
            J::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    let new = if self.matches(dotted, path, k) {
                        replace(k, v)?
                    } else if map.len() == 1 && k == "json" {
                        // The serde form of `Value::Json` (`{"json": ...}`)
                        // is no path segment: `contact.email` names the key
                        // `email` of the JSON field `contact` in a record's
                        // serde form too.
                        self.walk(v, dotted, path, replace)?
                    } else {
                        path.push(k.clone());
                        let r = self.walk(v, dotted, path, replace);
                        path.pop();
                        r?
                    };
                    out.insert(k.clone(), new);
                }
                Ok(J::Object(out))
            }
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    let r = self.walk(v, dotted, path, replace);
                    path.pop();
                    out.push(r?);
                }
                Ok(J::Array(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// `json` with the value of every key naming one of the fields masked,
    /// at any depth (a record in its serde form, an audit entry's values, a
    /// review item's details). Every leaf of a matched value is masked with
    /// [`PiiKind::Auto`]; a [`Value`] in its serde form (`{"text": ...}`)
    /// keeps that form, so a masked record still deserializes.
    pub fn mask_json(&self, json: &serde_json::Value) -> serde_json::Value {
        let masked: Result<_, std::convert::Infallible> =
            self.try_replace_json(json, |_, v| Ok(mask_json_leaves(v, PiiKind::Auto)));
        let Ok(v) = masked;
        v
    }

    /// `record` with the values of the fields masked ([`mask_value`] with
    /// [`PiiKind::Auto`]); inside JSON fields, keys naming one of the fields
    /// are masked as [`PiiFields::mask_json`] does (`contact.email` names the
    /// key `email` of the JSON field `contact`). The id and `updated_at`
    /// are kept.
    pub fn mask_record(&self, record: &Record) -> Record {
        if self.is_empty() {
            return record.clone();
        }
        let dotted = self.has_dotted();
        let mut out = record.clone();
        for (name, value) in &mut out.fields {
            if self.contains(name) {
                *value = mask_value(value, PiiKind::Auto);
            } else if let Value::Json(j) = value {
                let mut path = vec![name.clone()];
                let masked: Result<_, std::convert::Infallible> =
                    self.walk(j, dotted, &mut path, &mut |_, v| {
                        Ok(mask_json_leaves(v, PiiKind::Auto))
                    });
                let Ok(m) = masked;
                *j = m;
            }
        }
        out
    }

    /// `text` (an error message, a log line) with every value of `record`'s
    /// personal fields that it quotes replaced by its mask, e.g. a
    /// provider's `duplicate value john@example.com` becomes
    /// `duplicate value j***@example.com`. Values shorter than 3 characters
    /// are left alone so that ordinary text is not shredded.
    ///
    /// ```
    /// use crm_core::pii::PiiFields;
    /// use crm_core::Record;
    /// let pii = PiiFields::new().with("email");
    /// let r = Record::new().with("email", "john@example.com");
    /// assert_eq!(
    ///     pii.mask_values_in(&r, "409: john@example.com exists"),
    ///     "409: j***@example.com exists"
    /// );
    /// ```
    pub fn mask_values_in(&self, record: &Record, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        match serde_json::to_value(record) {
            Ok(json) => self.mask_json_values_in(&json, text),
            Err(_) => text.to_owned(),
        }
    }

    /// As [`PiiFields::mask_values_in`], for the values found in `json`
    /// under keys naming one of the fields (see [`PiiFields::mask_json`]).
    pub fn mask_json_values_in(&self, json: &serde_json::Value, text: &str) -> String {
        let mut found = Vec::new();
        let _: Result<_, std::convert::Infallible> = self.try_replace_json(json, |_, v| {
            leaves(v, &mut found);
            Ok(serde_json::Value::Null)
        });
        found.retain(|s| s.trim().chars().count() >= 3 && s != "null");
        // Longest first, so a value containing another is replaced whole.
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found.dedup();
        let mut out = text.to_owned();
        for value in &found {
            let needle = value.trim();
            if out.contains(needle) {
                out = out.replace(needle, &mask_str(needle, PiiKind::Auto));
            }
        }
        out
    }

    /// Displays `value`, masked when `field` is one of the fields.
    ///
    /// ```
    /// use crm_core::pii::PiiFields;
    /// use crm_core::Value;
    /// let pii = PiiFields::new().with("email");
    /// let v = Value::from("john@example.com");
    /// assert_eq!(pii.show("email", &v).to_string(), "j***@example.com");
    /// assert_eq!(pii.show("login", &v).to_string(), "john@example.com");
    /// ```
    pub fn show<'a>(&self, field: &str, value: &'a Value) -> Shown<'a> {
        Shown {
            value,
            mask: self.contains(field),
        }
    }
}

impl From<&Mapping> for PiiFields {
    fn from(mapping: &Mapping) -> Self {
        PiiFields::from_mapping(mapping)
    }
}

impl<S: Into<String>> FromIterator<S> for PiiFields {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut out = PiiFields::new();
        out.extend(iter);
        out
    }
}

impl<S: Into<String>> Extend<S> for PiiFields {
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        for name in iter {
            self.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::FieldMap;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn formulas() {
        assert_eq!(mask_email("john@example.com"), "j***@example.com");
        assert_eq!(mask_email("  John.Smith@Example.COM "), "J***@Example.COM");
        assert_eq!(mask_email("a\"b@c\"@x.org"), "a***@x.org");
        assert_eq!(mask_email("@x.org"), "***@x.org");
        assert_eq!(mask_email("john@"), "j***@");
        assert_eq!(mask_email("***@x.org"), "****@x.org");
        assert_eq!(mask_phone("+1 415 555 0190"), "+1********90");
        assert_eq!(mask_phone("+44 20 7946 0958"), "+4*********58");
        assert_eq!(mask_phone("0612345678"), "********78");
        assert_eq!(mask_phone("12"), "**");
        assert_eq!(mask_phone("no digits"), "n***");
        assert_eq!(mask_text("ab"), "a***");
        assert_eq!(mask_text("***"), "****");
        assert_eq!(mask_text("   "), "   ");
        assert_eq!(mask_text("éclair"), "é***");
    }

    #[test]
    fn auto_picks_by_content() {
        assert_eq!(
            mask_str("ada@example.com", PiiKind::Auto),
            "a***@example.com"
        );
        assert_eq!(mask_str("+1-415-555-0190", PiiKind::Auto), "+1********90");
        assert_eq!(mask_str("Ada", PiiKind::Auto), "A***");
        // Digits, but too few or too diluted for a phone number.
        assert_eq!(PiiKind::detect("Flat 12"), PiiKind::Text);
        assert_eq!(PiiKind::detect("order 1234567 of the year"), PiiKind::Text);
        assert_eq!(mask_str("+1-415-555-0190", PiiKind::Text), "+***");
    }

    #[test]
    fn values_of_every_type() {
        use chrono::NaiveDate;
        let k = PiiKind::Auto;
        assert_eq!(mask_value(&Value::Null, k), Value::Null);
        assert_eq!(mask_value(&Value::Bool(true), k), Value::Text("***".into()));
        assert_eq!(
            mask_value(
                &Value::Date(NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()),
                k
            ),
            Value::Text("***".into())
        );
        assert_eq!(mask_value(&Value::Int(42), k), Value::Text("4***".into()));
        assert_eq!(
            mask_value(&Value::Decimal("12.50".parse().unwrap()), k),
            Value::Text("1***".into())
        );
        assert_eq!(
            mask_value(
                &Value::Json(json!({"home": "+14155550190", "n": [1, null]})),
                k
            ),
            Value::Json(json!({"home": "+1********90", "n": ["***", null]}))
        );
    }

    #[test]
    fn fields_from_a_mapping_and_a_list() {
        let m = Mapping::new()
            .with(FieldMap::new("email", "Email").pii(true))
            .with(FieldMap::new("city", "City"))
            .with(FieldMap::new("contact.phone", "Phone").pii(true));
        let pii = PiiFields::from(&m);
        assert_eq!(
            pii.names().collect::<Vec<_>>(),
            ["Email", "Phone", "contact.phone", "email"]
        );
        let listed: PiiFields = ["email", "", "phone"].into_iter().collect();
        assert_eq!(listed.len(), 2);
        let yaml: PiiFields = serde_yaml::from_str("[email, phone]").unwrap();
        assert_eq!(yaml, listed);
        assert_eq!(
            serde_json::to_value(&listed).unwrap(),
            json!(["email", "phone"])
        );
    }

    #[test]
    fn json_at_any_depth_and_record_form() {
        let pii = PiiFields::new()
            .with("email")
            .with("phone")
            .with("contact.name");
        let r = Record::new()
            .with_id("C-1")
            .with("email", "john@example.com")
            .with("phone", Value::Null)
            .with("note", "hi")
            .with(
                "contact",
                json!({"name": "Johnson", "email": "x@y.org", "other": {"name": "kept"}}),
            );
        let as_json = serde_json::to_value(&r).unwrap();
        let masked = pii.mask_json(&as_json);
        let back: Record = serde_json::from_value(masked.clone()).unwrap();
        let direct = pii.mask_record(&r);
        assert_eq!(back.len(), direct.len());
        for (name, value) in &direct.fields {
            assert_eq!(back.get(name), Some(value), "{name}");
        }
        assert_eq!(back.text("email"), Some("j***@example.com"));
        assert_eq!(back.get("phone"), Some(&Value::Null));
        assert_eq!(back.text("note"), Some("hi"));
        assert_eq!(
            back.get("contact"),
            Some(&Value::Json(
                json!({"name": "J***", "email": "***@y.org", "other": {"name": "kept"}})
            ))
        );
        assert_eq!(back.id, r.id);
        // Arrays, plain JSON, audit-style values.
        assert_eq!(
            pii.mask_json(&json!({"rows": [{"email": "ab@c.d"}, {"email": 5}], "x": 1})),
            json!({"rows": [{"email": "a***@c.d"}, {"email": "***"}], "x": 1})
        );
        assert_eq!(PiiFields::new().mask_json(&as_json), as_json);
    }

    #[test]
    fn values_quoted_in_messages() {
        let pii = PiiFields::new().with("email").with("phone").with("name");
        let r = Record::new()
            .with("email", "john@example.com")
            .with("phone", 4_155_550_190i64)
            .with("name", "Al");
        let msg = "dup john@example.com / 4155550190 for Al";
        assert_eq!(
            pii.mask_values_in(&r, msg),
            "dup j***@example.com / ********90 for Al"
        );
        assert_eq!(PiiFields::new().mask_values_in(&r, msg), msg);
    }

    #[test]
    fn display_helpers() {
        let pii = PiiFields::new().with("phone");
        let v = Value::from("+14155550190");
        assert_eq!(format!("{}", pii.show("phone", &v)), "+1********90");
        assert_eq!(format!("{}", pii.show("other", &v)), "+14155550190");
        assert_eq!(format!("{}", masked(&v)), "+1********90");
        assert_eq!(format!("{}", masked_str("Ada")), "A***");
    }

    fn all_masks(s: &str) -> [String; 5] {
        [
            mask_email(s),
            mask_phone(s),
            mask_text(s),
            mask_str(s, PiiKind::Auto),
            mask_str(s, PiiKind::Phone),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_never_returns_a_non_blank_input(s in any::<String>()) {
            for m in all_masks(&s) {
                if s.trim().is_empty() {
                    prop_assert_eq!(&m, &s);
                } else {
                    prop_assert_ne!(&m, &s);
                }
            }
            let pii = PiiFields::new().with(s.clone()).with("a.b");
            let j = json!({ s.clone(): s.clone(), "a": {"b": [s.clone()]}, "n": [{ s.clone(): 1 }] });
            let _ = pii.mask_json(&j);
            let _ = pii.mask_values_in(&Record::new().with(s.clone(), s.clone()), &s);
        }

        #[test]
        fn emails_keep_their_domain_and_hide_the_local_part(
            local in "[A-Za-z0-9._%+-]{1,30}",
            domain in "[a-z0-9-]{1,20}(\\.[a-z]{2,6}){1,2}",
        ) {
            let email = format!("{local}@{domain}");
            let m = mask_email(&email);
            prop_assert!(m.ends_with(&format!("@{domain}")), "{}", m);
            let (masked_local, _) = m.rsplit_once('@').unwrap();
            prop_assert!(masked_local.ends_with("***"));
            prop_assert!(masked_local.chars().count() <= 4);
            if local.chars().count() >= 2 {
                prop_assert!(!masked_local.contains(&local));
            }
            prop_assert_eq!(mask_str(&email, PiiKind::Auto), m);
        }

        #[test]
        fn phones_show_at_most_the_country_digit_and_last_two(
            digits in "[0-9]{7,15}",
            plus in any::<bool>(),
        ) {
            let input = if plus { format!("+{digits}") } else { digits.clone() };
            let m = mask_phone(&input);
            let shown: String = m.chars().filter(char::is_ascii_digit).collect();
            let tail = &digits[digits.len() - 2..];
            let want = if plus { format!("{}{tail}", &digits[..1]) } else { tail.to_owned() };
            prop_assert_eq!(shown, want);
            prop_assert_eq!(m.chars().count(), digits.len() + usize::from(plus));
        }
    }
}
