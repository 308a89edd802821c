//! A SOQL builder that cannot be injected into.
//!
//! Names (objects, fields, relationship paths such as `Account.Name` or
//! `Owner__r.Email`) are checked against Salesforce's identifier rules and
//! refused otherwise; values only enter a query as [`Literal`]s: strings are
//! quoted and escaped per the SOQL reference ("Quoted String Escape
//! Sequences": `\'`, `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`), dates and
//! date-times are written in the unquoted formats of "Date Formats and Date
//! Literals" (`1999-01-01`, `1999-01-01T23:01:01Z`).
//!
//! ```
//! use crm_salesforce::soql::{Condition, Literal, Select};
//!
//! let q = Select::new("Contact")?
//!     .fields(["Id", "LastName", "Account.Name"])?
//!     .filter(Condition::eq("Email", Literal::text("o'brien@example.com"))?)
//!     .limit(10)
//!     .to_soql();
//! assert_eq!(q, "SELECT Id, LastName, Account.Name FROM Contact \
//!                WHERE Email = 'o\\'brien@example.com' LIMIT 10");
//! # Ok::<(), crm_core::Error>(())
//! ```

use std::fmt::{self, Write as _};

use chrono::{DateTime, NaiveDate, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;

use crate::error::SalesforceError;

/// The system field every incremental read is ordered and filtered on.
pub const SYSTEM_MODSTAMP: &str = "SystemModstamp";

/// True if `name` is a valid Salesforce API name or relationship path:
/// dot-separated segments, each a letter followed by letters, digits and
/// single underscores (`LastName`, `LTV__c`, `Owner__r.Email`,
/// `ns__Field__c`), at most 5 segments of at most 80 characters.
pub fn is_valid_name(name: &str) -> bool {
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() > 5 {
        return false;
    }
    segments.iter().all(|s| is_valid_segment(s))
}

fn is_valid_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 80 || !bytes[0].is_ascii_alphabetic() {
        return false;
    }
    if bytes[bytes.len() - 1] == b'_' {
        return false;
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    // `__` separates a namespace or a suffix (`__c`, `__r`); three in a row never occur.
    !s.contains("___")
}

/// Checks a name, returning it.
///
/// # Errors
/// [`SalesforceError::InvalidName`] when it is not a valid name.
pub fn check_name(name: &str) -> Result<&str, SalesforceError> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(SalesforceError::InvalidName(name.to_owned()))
    }
}

/// Quotes and escapes a string literal.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Reads back a quoted literal made by [`quote`] (or written by hand): the
/// text between the quotes with escapes resolved, and the rest of the input
/// after the closing quote. `None` if `input` does not start with a
/// complete literal.
pub fn unquote(input: &str) -> Option<(String, &str)> {
    let rest = input.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return Some((out, &rest[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                let resolved = match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    '\'' | '"' | '\\' => e,
                    // `\_` and `\%` are LIKE escapes; keep them as written.
                    '_' | '%' => {
                        out.push('\\');
                        e
                    }
                    _ => return None,
                };
                out.push(resolved);
            }
            c => out.push(c),
        }
    }
    None
}

/// A SOQL date-time literal: `YYYY-MM-DDThh:mm:ssZ`, with `.SSS`
/// milliseconds only when they are not zero (Salesforce stamps whole
/// seconds; a simulator may not).
pub fn datetime_literal(t: DateTime<Utc>) -> String {
    if t.nanosecond() / 1_000_000 == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// A value in a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal number.
    Decimal(Decimal),
    /// A quoted string (ids are strings too).
    Text(String),
    /// A date, `YYYY-MM-DD`.
    Date(NaiveDate),
    /// A date-time, `YYYY-MM-DDThh:mm:ssZ`.
    DateTime(DateTime<Utc>),
}

impl Literal {
    /// A string literal.
    pub fn text(s: impl Into<String>) -> Literal {
        Literal::Text(s.into())
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Decimal(d) => write!(f, "{d}"),
            Literal::Text(s) => f.write_str(&quote(s)),
            Literal::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Literal::DateTime(t) => f.write_str(&datetime_literal(*t)),
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A `WHERE` condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `field op literal`.
    Cmp(String, Op, Literal),
    /// All of them.
    And(Vec<Condition>),
    /// Any of them.
    Or(Vec<Condition>),
    /// `field IN (v1, v2, ...)`.
    In(String, Vec<Literal>),
}

impl Condition {
    /// `field op value`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for an invalid field name.
    pub fn cmp(field: &str, op: Op, value: Literal) -> crm_core::Result<Condition> {
        check_name(field)?;
        Ok(Condition::Cmp(field.to_owned(), op, value))
    }

    /// `field = value`.
    ///
    /// # Errors
    /// As [`Condition::cmp`].
    pub fn eq(field: &str, value: Literal) -> crm_core::Result<Condition> {
        Condition::cmp(field, Op::Eq, value)
    }

    /// `field IN (values)`.
    ///
    /// # Errors
    /// As [`Condition::cmp`].
    pub fn is_in(field: &str, values: Vec<Literal>) -> crm_core::Result<Condition> {
        check_name(field)?;
        Ok(Condition::In(field.to_owned(), values))
    }

    /// The keyset condition of a cursor `(t, id)`:
    /// `(SystemModstamp > t OR (SystemModstamp = t AND Id > 'id'))`, or
    /// `SystemModstamp >= t` when there is no id (start at `t` inclusive).
    pub fn after(stamp: DateTime<Utc>, id: Option<&str>) -> Condition {
        match id {
            Some(id) => Condition::Or(vec![
                Condition::Cmp(SYSTEM_MODSTAMP.into(), Op::Gt, Literal::DateTime(stamp)),
                Condition::And(vec![
                    Condition::Cmp(SYSTEM_MODSTAMP.into(), Op::Eq, Literal::DateTime(stamp)),
                    Condition::Cmp("Id".into(), Op::Gt, Literal::text(id)),
                ]),
            ]),
            None => Condition::Cmp(SYSTEM_MODSTAMP.into(), Op::Ge, Literal::DateTime(stamp)),
        }
    }

    fn write(&self, out: &mut String, nested: bool) {
        match self {
            Condition::Cmp(f, op, v) => {
                let _ = write!(out, "{f} {} {v}", op.as_str());
            }
            Condition::In(f, values) => {
                let _ = write!(out, "{f} IN (");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{v}");
                }
                out.push(')');
            }
            Condition::And(parts) | Condition::Or(parts) => {
                let joiner = if matches!(self, Condition::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                if parts.len() == 1 {
                    parts[0].write(out, nested);
                    return;
                }
                // An OR is always parenthesised, so ANDing more onto it is safe.
                let parens = nested || matches!(self, Condition::Or(_));
                if parens {
                    out.push('(');
                }
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    p.write(out, true);
                }
                if parens {
                    out.push(')');
                }
            }
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write(&mut s, false);
        f.write_str(&s)
    }
}

/// A `SELECT` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    object: String,
    fields: Vec<String>,
    filter: Option<Condition>,
    order_by: Vec<String>,
    limit: Option<u64>,
}

impl Select {
    /// `SELECT ... FROM object`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for an invalid object name.
    pub fn new(object: &str) -> crm_core::Result<Select> {
        check_name(object)?;
        Ok(Select {
            object: object.to_owned(),
            fields: Vec::new(),
            filter: None,
            order_by: Vec::new(),
            limit: None,
        })
    }

    /// Adds fields (duplicates, compared case-insensitively as SOQL does,
    /// are skipped).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for an invalid field name.
    pub fn fields<I, S>(mut self, fields: I) -> crm_core::Result<Select>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for f in fields {
            let f = check_name(f.as_ref())?;
            if !self.fields.iter().any(|g| g.eq_ignore_ascii_case(f)) {
                self.fields.push(f.to_owned());
            }
        }
        Ok(self)
    }

    /// Adds a condition (ANDed with any earlier one).
    #[must_use]
    pub fn filter(mut self, cond: Condition) -> Select {
        self.filter = Some(match self.filter.take() {
            None => cond,
            Some(Condition::And(mut parts)) => {
                parts.push(cond);
                Condition::And(parts)
            }
            Some(prev) => Condition::And(vec![prev, cond]),
        });
        self
    }

    /// `ORDER BY` these fields, ascending.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for an invalid field name.
    pub fn order_by<I, S>(mut self, fields: I) -> crm_core::Result<Select>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for f in fields {
            self.order_by.push(check_name(f.as_ref())?.to_owned());
        }
        Ok(self)
    }

    /// `LIMIT n`.
    #[must_use]
    pub fn limit(mut self, n: u64) -> Select {
        self.limit = Some(n);
        self
    }

    /// The selected fields.
    pub fn selected(&self) -> &[String] {
        &self.fields
    }

    /// The statement. With no fields it selects `Id`.
    pub fn to_soql(&self) -> String {
        let mut q = String::from("SELECT ");
        if self.fields.is_empty() {
            q.push_str("Id");
        } else {
            q.push_str(&self.fields.join(", "));
        }
        let _ = write!(q, " FROM {}", self.object);
        if let Some(c) = &self.filter {
            let _ = write!(q, " WHERE {c}");
        }
        if !self.order_by.is_empty() {
            let _ = write!(q, " ORDER BY {}", self.order_by.join(", "));
        }
        if let Some(n) = self.limit {
            let _ = write!(q, " LIMIT {n}");
        }
        q
    }
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_soql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "Id",
            "LastName",
            "LTV__c",
            "Owner__r.Email",
            "Account.Owner.Name",
            "ns__Field__c",
            "twitter_username__c",
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "_x",
            "x_",
            "a b",
            "Name, (SELECT Id FROM Contacts)",
            "Id FROM User --",
            "a..b",
            "a.",
            "x___c",
            "Name'",
            "é",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn keyset_clause() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
        let q = Select::new("Contact")
            .unwrap()
            .fields(["Id", "SystemModstamp"])
            .unwrap()
            .filter(Condition::after(t, Some("003000000000001AAA")))
            .order_by(["SystemModstamp", "Id"])
            .unwrap()
            .to_soql();
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp FROM Contact WHERE (SystemModstamp > 2024-03-01T12:00:00Z \
             OR (SystemModstamp = 2024-03-01T12:00:00Z AND Id > '003000000000001AAA')) \
             ORDER BY SystemModstamp, Id"
        );
        let with_ms = t + chrono::Duration::milliseconds(5);
        assert_eq!(datetime_literal(with_ms), "2024-03-01T12:00:00.005Z");
    }

    #[test]
    fn and_flattens_and_nests() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let q = Select::new("Lead")
            .unwrap()
            .filter(Condition::eq("IsDeleted", Literal::Bool(true)).unwrap())
            .filter(Condition::after(t, Some("00Q1")))
            .to_soql();
        assert_eq!(
            q,
            "SELECT Id FROM Lead WHERE IsDeleted = true AND (SystemModstamp > 2024-03-01T00:00:00Z \
             OR (SystemModstamp = 2024-03-01T00:00:00Z AND Id > '00Q1'))"
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote("x\ny\"z"), r#"'x\ny\"z'"#);
        assert_eq!(unquote(r"'it\'s' rest"), Some(("it's".into(), " rest")));
        assert_eq!(unquote("'open"), None);
    }

    proptest! {
        #[test]
        fn any_string_round_trips_as_one_literal(s in any::<String>(), tail in "[ A-Za-z=]{0,8}") {
            let lit = quote(&s);
            let input = format!("{lit}{tail}");
            let (back, rest) = unquote(&input).expect("a literal made by quote reads back");
            prop_assert_eq!(back, s);
            prop_assert_eq!(rest, tail.as_str());
        }

        #[test]
        fn injected_values_stay_inside_their_literal(s in ".*('|\\\\|OR|--|\\)).*") {
            let q = Select::new("Contact").unwrap()
                .filter(Condition::eq("Email", Literal::text(s.clone())).unwrap())
                .to_soql();
            let lit = q.strip_prefix("SELECT Id FROM Contact WHERE Email = ").expect("prefix");
            let (back, rest) = unquote(lit).expect("one literal");
            prop_assert_eq!(back, s);
            prop_assert_eq!(rest, "");
        }

        #[test]
        fn accepted_names_hold_only_identifier_characters(s in any::<String>()) {
            if is_valid_name(&s) {
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
                prop_assert!(!s.starts_with('.') && !s.ends_with('.'));
            } else {
                prop_assert!(Select::new("Contact").unwrap().fields([s.as_str()]).is_err());
            }
        }
    }
}
