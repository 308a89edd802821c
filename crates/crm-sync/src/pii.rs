//! Personal data in what crm-sync writes for people: the fields a job marks
//! `pii: true` (see [`crate::config::SyncJob::pii_fields`]) masked in
//! reasons, log lines and reports with [`crm_core::pii`]'s formulas, and
//! the state store sealing them at rest.
//!
//! Record values are masked where they are quoted:
//!
//! - in a reason about a personal field (a failed validation rule, a
//!   source problem, a rejected write naming the field), every quoted
//!   value, even one shortened (`"john.smith@exam"...`) or escaped, so a
//!   value a message quotes differently from the record is masked too;
//! - in any reason, log line or report, every value of the record's
//!   personal fields ([`PiiFields::mask_values_in`]);
//! - a record key is masked when the key field is personal, or when it is
//!   the value of a personal field (an id that is an email).

use crm_core::pii::{PiiFields, PiiKind, mask_str};
use crm_core::{Error, PROBLEMS_FIELD, Record, Value};
use crm_sql::state::StateStore;

/// `store`, sealing `fields` as well as the fields it seals already.
pub(crate) fn seal_in(store: StateStore, fields: &PiiFields) -> StateStore {
    if fields.is_empty() {
        return store;
    }
    let mut all = store.pii_fields().clone();
    all.extend(fields.names());
    store.with_pii_fields(all)
}

/// `text` with every double-quoted string in it (Rust `{:?}` form, as
/// validation, the sources and the sinks quote values) masked with
/// [`PiiKind::Auto`]. An opening quote without its closing one masks the
/// rest of the text.
pub(crate) fn mask_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let body = &rest[start + 1..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let (inner, after) = match end {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, ""),
        };
        let masked = mask_str(&unescape(inner), PiiKind::Auto);
        out.push_str(&format!("{masked:?}"));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The text of a `{:?}`-quoted string without its escapes (the common
/// ones; others are kept as written).
fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A reason about `field` of `record` (a failed rule, a source problem, a
/// rejected write), with personal values masked: every quoted value when
/// `field` is personal, and every value of the record's personal fields.
pub(crate) fn mask_reason(
    pii: &PiiFields,
    record: &Record,
    field: Option<&str>,
    text: &str,
) -> String {
    if pii.is_empty() {
        return text.to_owned();
    }
    let text = match field {
        Some(f) if pii.contains(f) => mask_quoted(text),
        _ => text.to_owned(),
    };
    pii.mask_values_in(record, &text)
}

/// [`mask_reason`] of an error, about the field its `field` context names.
pub(crate) fn mask_error(pii: &PiiFields, record: &Record, error: &Error) -> String {
    mask_reason(
        pii,
        record,
        error.context_value("field"),
        &error.to_string(),
    )
}

/// The record key as log lines and reports show it: masked when
/// `key_field` is personal, else with the values of `record`'s personal
/// fields masked in it (an id that is an email).
pub(crate) fn mask_key(
    pii: &PiiFields,
    key_field: Option<&str>,
    record: &Record,
    key: &str,
) -> String {
    if pii.is_empty() {
        key.to_owned()
    } else if key_field.is_some_and(|k| pii.contains(k)) {
        mask_str(key, PiiKind::Auto)
    } else {
        pii.mask_values_in(record, key)
    }
}

/// Masks the problems a source recorded in `record`'s
/// [`PROBLEMS_FIELD`] (e.g. `expected integer, found "+1 415..."` for a
/// cell whose value is gone from the record): they are kept as text, which
/// the state store does not seal.
pub(crate) fn mask_problems(pii: &PiiFields, record: &mut Record) {
    if pii.is_empty() {
        return;
    }
    let snapshot = record.clone();
    let Some(Value::Json(problems)) = record.fields.get_mut(PROBLEMS_FIELD) else {
        return;
    };
    let items = match problems {
        serde_json::Value::Array(items) => items,
        serde_json::Value::String(s) => {
            *s = mask_reason(pii, &snapshot, None, s);
            return;
        }
        _ => return,
    };
    for item in items {
        match item {
            serde_json::Value::String(s) => *s = mask_reason(pii, &snapshot, None, s),
            serde_json::Value::Object(map) => {
                let field = map
                    .get("field")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                if let Some(serde_json::Value::String(p)) = map.get_mut("problem") {
                    *p = mask_reason(pii, &snapshot, field.as_deref(), p);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pii() -> PiiFields {
        PiiFields::new().with("email").with("phone")
    }

    #[test]
    fn quoted_values_are_masked_however_they_are_quoted() {
        assert_eq!(
            mask_quoted("\"john@example.com\" is not an email address"),
            "\"j***@example.com\" is not an email address"
        );
        // Shortened by the message (40 characters and `...`).
        let long = format!("{:?}...", "averyveryverylongname.with.dots@exampl");
        assert_eq!(
            mask_quoted(&format!("{long} is longer")),
            "\"a***@exampl\"... is longer"
        );
        // Escapes, several quotes, an unclosed one.
        assert_eq!(
            mask_quoted(r#"a "Jo\"hn" b "+14155550190" c"#),
            r#"a "J***" b "+1********90" c"#
        );
        assert_eq!(mask_quoted("found \"secret"), "found \"s***\"");
        assert_eq!(mask_quoted("no quotes here"), "no quotes here");
    }

    #[test]
    fn reasons_keys_and_problems() {
        let r = Record::new()
            .with("email", "john@example.com")
            .with("phone", Value::Null)
            .with("city", "Lyon")
            .with(
                PROBLEMS_FIELD,
                serde_json::json!([
                    {"column": "D", "field": "phone", "problem": "expected integer, found \"+1 415 555 0190\""},
                    {"column": "E", "field": "city", "problem": "see john@example.com"},
                ]),
            );
        let p = pii();
        // A reason about a personal field: quoted values masked.
        assert_eq!(
            mask_reason(
                &p,
                &r,
                Some("phone"),
                "expected integer, found \"+1 415 555 0190\""
            ),
            "expected integer, found \"+1********90\""
        );
        // About another field: only the record's personal values.
        assert_eq!(
            mask_reason(&p, &r, Some("city"), "\"Lyon\" vs john@example.com"),
            "\"Lyon\" vs j***@example.com"
        );
        assert_eq!(
            mask_reason(&PiiFields::new(), &r, Some("email"), "\"x@y.z\""),
            "\"x@y.z\""
        );
        let e = Error::invalid_input("`phone`: text \"4155550190\" is not a number")
            .with_context("field", "phone");
        assert!(mask_error(&p, &r, &e).contains("\"********90\""));

        assert_eq!(
            mask_key(&p, Some("email"), &Record::new(), "jane@example.com"),
            "j***@example.com"
        );
        assert_eq!(
            mask_key(&p, Some("booking_id"), &r, "john@example.com"),
            "j***@example.com"
        );
        assert_eq!(mask_key(&p, Some("booking_id"), &r, "BK-1"), "BK-1");

        let mut masked = r.clone();
        mask_problems(&p, &mut masked);
        let text = masked.get(PROBLEMS_FIELD).unwrap().to_string();
        assert!(
            !text.contains("415 555") && !text.contains("john@"),
            "{text}"
        );
        assert!(text.contains("+1********90") && text.contains("j***@example.com"));
        let mut untouched = r.clone();
        mask_problems(&PiiFields::new(), &mut untouched);
        assert_eq!(untouched, r);
    }
}
