//! `${NAME}` interpolation for config values (seed 000 writes
//! `host: "${DB_HOST}"`, `credentials: "${GOOGLE_CREDENTIALS}"`).
//!
//! Interpolation runs on one value at a time, after the YAML is parsed, so an
//! environment value can never change the structure of a config file.
//!
//! ```
//! use crm_core::env::interpolate;
//!
//! let lookup = |name: &str| (name == "DB_HOST").then(|| "db.internal".to_owned());
//! assert_eq!(interpolate("database.host", "${DB_HOST}", lookup).unwrap(), "db.internal");
//! assert_eq!(interpolate("database.port", "${DB_PORT:-5432}", lookup).unwrap(), "5432");
//! let err = interpolate("database.password", "${DB_PASSWORD}", lookup).unwrap_err();
//! assert!(err.to_string().contains("DB_PASSWORD"));
//! ```

use crate::error::Error;

/// Replaces every `${NAME}` and `${NAME:-default}` in `text` using `lookup`
/// (use [`from_process`] for the process environment). `field` names the
/// config value in errors. Values are never echoed in errors, since they may
/// be secrets.
///
/// # Errors
/// [`crate::ErrorKind::InvalidInput`] for an unset variable without a
/// default, an unterminated `${`, or a name that is not `[A-Za-z0-9_]+`.
pub fn interpolate(
    field: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            Error::invalid_input(format!("`{field}` has an unterminated `${{`"))
                .with_context("field", field)
        })?;
        let spec = &after[..end];
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::invalid_input(format!(
                "`{field}` has an invalid variable reference `${{{name}}}`"
            ))
            .with_context("field", field));
        }
        match lookup(name).or_else(|| default.map(str::to_owned)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(Error::invalid_input(format!(
                    "`{field}` refers to the environment variable {name}, which is not set \
                     (set it, or write `${{{name}:-default}}`)"
                ))
                .with_context("field", field));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Looks a name up in the process environment.
pub fn from_process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".into()),
            "SECRET" => Some("hunter2".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_several_and_keeps_text() {
        assert_eq!(interpolate("f", "x${A}y${A}z", env).unwrap(), "x1y1z");
        assert_eq!(interpolate("f", "no vars", env).unwrap(), "no vars");
        assert_eq!(interpolate("f", "${B:-}", env).unwrap(), "");
        assert_eq!(interpolate("f", "${A:-9}", env).unwrap(), "1");
    }

    #[test]
    fn errors_name_the_field_and_variable_never_values() {
        for (text, needle) in [
            ("${B}", "B"),
            ("${A", "unterminated"),
            ("${a-b}", "invalid"),
        ] {
            let e = interpolate("database.host", text, env).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(e.context_value("field"), Some("database.host"));
        }
        let e = interpolate("p", "${SECRET}${MISSING}", env).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }
}
