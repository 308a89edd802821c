//! Removing secrets from text that ends up in errors, logs and metrics.
//!
//! Response bodies are kept in errors because a provider's error body is the
//! best clue to what went wrong, but they pass through [`scrub`] first:
//! JSON fields whose name looks like a credential are replaced, `key=value`
//! pairs and `Bearer` values in plain text are masked, every secret the client
//! knows (its token, API key, client secret) is replaced wherever it appears,
//! and the result is cut to [`MAX_BODY_IN_ERROR`] bytes.

use serde_json::Value;

/// How many bytes of a response body an error keeps.
pub const MAX_BODY_IN_ERROR: usize = 2048;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Field names (lower case, without `_` and `-`) that always hold secrets.
const SECRET_NAMES: &[&str] = &[
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "clientsecret",
    "password",
    "passwd",
    "assertion",
    "clientassertion",
    "privatekey",
    "apikey",
    "apitoken",
    "token",
    "secret",
    "authorization",
    "codeverifier",
    "sessionid",
    "cookie",
    "setcookie",
];

/// Whether a JSON field, form field, header or query parameter called `name`
/// holds a secret.
///
/// Matching ignores case, `_` and `-`; any name ending in `token` or
/// `secret`, or containing `password` or `apikey`, counts, and so does `key`
/// (Google's API key parameter).
pub fn is_secret_name(name: &str) -> bool {
    let normal: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_NAMES.contains(&normal.as_str())
        || normal.ends_with("token")
        || normal.ends_with("secret")
        || normal.contains("password")
        || normal.contains("apikey")
        || normal == "key"
}

/// Scrubs and truncates a response body for use in an error message.
///
/// `known_secrets` are literal values to mask wherever they occur (values
/// shorter than 4 characters are ignored: they would mask ordinary text).
pub fn scrub(body: &[u8], known_secrets: &[&str]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut json) => {
            redact_json(&mut json);
            json.to_string()
        }
        Err(_) => redact_text(&String::from_utf8_lossy(body)),
    };
    truncate(&mask_known(text, known_secrets), MAX_BODY_IN_ERROR)
}

/// Scrubs a short piece of text (a provider message, a header value).
pub fn scrub_text(text: &str, known_secrets: &[&str]) -> String {
    truncate(
        &mask_known(redact_text(text), known_secrets),
        MAX_BODY_IN_ERROR,
    )
}

/// Replaces every field whose name is a secret name, at any depth, and
/// masks `name=value` pairs and credentials inside string values.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        // Free text may quote a form body or a header.
        Value::String(text) => *text = redact_text(text),
        _ => {}
    }
}

fn mask_known(mut text: String, known_secrets: &[&str]) -> String {
    for secret in known_secrets {
        if secret.len() >= 4 && text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

/// Masks `name=value` and `name: value` pairs with a secret name, `Bearer`
/// and `Basic` credentials, and `<name>value</name>` XML elements.
fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Walk the text word by word, masking the value that follows a secret name.
    while let Some(pos) = rest.find(['=', ':', '>', ' ']) {
        let (head, tail) = rest.split_at(pos);
        let sep = tail.chars().next().unwrap_or(' ');
        let head_name = head.trim_end_matches(['"', '\'']);
        let name_start = head_name
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let name = &head_name[name_start..];
        out.push_str(head);
        out.push(sep);
        let after = &tail[sep.len_utf8()..];
        let is_scheme = sep == ' '
            && (name.eq_ignore_ascii_case("bearer") || name.eq_ignore_ascii_case("basic"));
        // `</name>` closes an element: nothing follows that belongs to it.
        let closing_tag = sep == '>' && head_name[..name_start].ends_with('/');
        let is_pair = sep != ' ' && !closing_tag && is_secret_name(name);
        if is_scheme || is_pair {
            // Keep optional spaces and an opening quote, then skip the value.
            let mut trimmed = after.trim_start_matches([' ', '"', '\'']);
            if is_pair {
                // `Authorization: Bearer xyz`: keep the scheme, mask what follows.
                for scheme in ["bearer ", "basic "] {
                    if trimmed.len() > scheme.len()
                        && trimmed.is_char_boundary(scheme.len())
                        && trimmed[..scheme.len()].eq_ignore_ascii_case(scheme)
                    {
                        trimmed = trimmed[scheme.len()..].trim_start();
                    }
                }
            }
            out.push_str(&after[..after.len() - trimmed.len()]);
            let end = trimmed
                .find(['&', '"', '\'', ',', ';', '<', '\n', '\r', ' '])
                .unwrap_or(trimmed.len());
            if end > 0 {
                out.push_str(REDACTED);
            }
            rest = &trimmed[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying how
/// much was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} bytes cut]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_secret_fields_are_masked_at_any_depth() {
        let body = br#"{"error":"invalid_grant","access_token":"AT-123456","nested":{"client_secret":"CS-999999","list":[{"password":"pw-123456"}]},"refreshToken":"RT-777777"}"#;
        let out = scrub(body, &[]);
        for secret in ["AT-123456", "CS-999999", "pw-123456", "RT-777777"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("invalid_grant"));
    }

    #[test]
    fn form_and_header_like_text_is_masked() {
        let body = b"grant_type=refresh_token&refresh_token=RT-abcdef&client_secret=CS-abcdef\nAuthorization: Bearer AT-abcdef\n<sessionId>SID-abcdef</sessionId> password: hunter22";
        let out = scrub(body, &[]);
        for secret in [
            "RT-abcdef",
            "CS-abcdef",
            "AT-abcdef",
            "SID-abcdef",
            "hunter22",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("grant_type=refresh_token"));
    }

    #[test]
    fn known_secrets_are_masked_anywhere() {
        let out = scrub(
            b"your key sk_live_ABCDEF was rejected",
            &["sk_live_ABCDEF", "ab"],
        );
        assert!(!out.contains("sk_live_ABCDEF"));
        assert!(out.contains("rejected"));
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let body = "é".repeat(3000);
        let out = scrub(body.as_bytes(), &[]);
        assert!(out.len() < MAX_BODY_IN_ERROR + 40);
        assert!(out.ends_with("bytes cut]"));
    }

    #[test]
    fn secret_names() {
        for name in [
            "access_token",
            "X-Api-Key",
            "client-secret",
            "nextPageToken",
            "db_password",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["message", "errorCode", "instance_url", "token_type"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
