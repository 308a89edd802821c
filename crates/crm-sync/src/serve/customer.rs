//! The generic signed endpoint of seed 001, `/webhooks/crm/customer`.
//!
//! - Body: JSON `{"event_type": "customer.created" | "customer.updated" |
//!   "customer.deleted", "data": {...}}`; the record id is `data.id`, else
//!   `data.customer_id`, else `data.email`.
//! - `X-Signature-256: sha256=<hex>`: lowercase hex of HMAC-SHA256, keyed
//!   with the shared secret, over the raw body; when the sender adds
//!   `X-Signature-Timestamp: <unix seconds>`, over `<timestamp>.<body>`
//!   instead, and a timestamp more than 5 minutes away is refused.
//! - `X-Event-Id` (optional) names the event for redelivery detection;
//!   without it the body's SHA-256 does.
//!
//! Comparisons are constant-time.

use std::time::Duration;

use crm_core::{Change, Record, RecordId, Value};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value as Json;
use subtle::ConstantTimeEq;

/// Header of the signature.
pub const HEADER_SIGNATURE: &str = "x-signature-256";
/// Header of the optional timestamp (unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-signature-timestamp";
/// Header of the optional event id.
pub const HEADER_EVENT_ID: &str = "x-event-id";
/// How far a timestamp may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The event types the endpoint accepts.
pub const EVENT_TYPES: [&str; 3] = ["customer.created", "customer.updated", "customer.deleted"];

/// The signature header value (`sha256=<hex>`) of `body`, with the
/// timestamp when one is sent.
pub fn sign(secret: &str, timestamp: Option<&str>, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    format!("sha256={}", super::hex(&mac.finalize().into_bytes()))
}

/// Checks the signature of seed 001's customer endpoint.
pub struct CustomerVerifier {
    secret: SecretString,
}

impl std::fmt::Debug for CustomerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerVerifier").finish_non_exhaustive()
    }
}

impl CustomerVerifier {
    /// A verifier with the shared secret.
    pub fn new(secret: SecretString) -> Self {
        CustomerVerifier { secret }
    }

    /// Checks a delivery as of `now` (unix seconds).
    ///
    /// # Errors
    /// Why it was refused (no secret or signature material in the text).
    pub fn verify_at(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), &'static str> {
        let sig = signature.ok_or("no X-Signature-256 header")?.trim();
        if let Some(ts) = timestamp {
            let at: i64 = ts
                .trim()
                .parse()
                .map_err(|_| "X-Signature-Timestamp is not unix seconds")?;
            if u128::from(now.abs_diff(at)) > u128::from(MAX_SKEW.as_secs()) {
                return Err("timestamp is more than 5 minutes away (stale or replayed)");
            }
        }
        let want = sign(self.secret.expose_secret(), timestamp, body);
        let got = sig.to_ascii_lowercase();
        if bool::from(got.as_bytes().ct_eq(want.as_bytes())) {
            Ok(())
        } else {
            Err("signature does not match")
        }
    }
}

/// A parsed customer event.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerEvent {
    /// One of [`EVENT_TYPES`].
    pub event_type: String,
    /// The record id.
    pub id: String,
    /// `data`.
    pub data: serde_json::Map<String, Json>,
}

/// Parses a body.
///
/// # Errors
/// What is wrong with it.
pub fn parse(body: &Json) -> Result<CustomerEvent, String> {
    let event_type = body
        .get("event_type")
        .and_then(Json::as_str)
        .ok_or("`event_type` is missing")?;
    if !EVENT_TYPES.contains(&event_type) {
        return Err(format!(
            "`event_type` {event_type:?} is not one of {}",
            EVENT_TYPES.join(", ")
        ));
    }
    let data = body
        .get("data")
        .and_then(Json::as_object)
        .ok_or("`data` is missing or not an object")?;
    let id = ["id", "customer_id", "email"]
        .iter()
        .find_map(|k| match data.get(*k) {
            Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Json::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .ok_or("`data` has no `id`, `customer_id` or `email`")?;
    Ok(CustomerEvent {
        event_type: event_type.to_owned(),
        id,
        data: data.clone(),
    })
}

impl CustomerEvent {
    /// The change it stands for.
    pub fn change(&self) -> Change {
        let id = RecordId::new(self.id.clone());
        if self.event_type == "customer.deleted" {
            return Change::Delete { id, at: None };
        }
        let mut r = Record::new().with_id(id);
        for (k, v) in &self.data {
            r.set(k.as_str(), Value::from_json(v.clone()));
        }
        Change::Upsert(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_with_and_without_timestamp() {
        let v = CustomerVerifier::new(SecretString::from("s3cret".to_owned()));
        let body = br#"{"event_type":"customer.created","data":{"id":"c1"}}"#;
        let plain = sign("s3cret", None, body);
        assert!(plain.starts_with("sha256=") && plain.len() == 7 + 64);
        assert_eq!(v.verify_at(Some(&plain), None, body, 0), Ok(()));
        assert!(v.verify_at(Some(&plain), None, b"{}", 0).is_err());
        assert!(v.verify_at(None, None, body, 0).is_err());
        let signed = sign("s3cret", Some("1000"), body);
        assert_eq!(v.verify_at(Some(&signed), Some("1000"), body, 1200), Ok(()));
        assert!(
            v.verify_at(Some(&signed), Some("1000"), body, 1301)
                .is_err()
        );
        // The timestamp is signed: changing it breaks the signature.
        assert!(
            v.verify_at(Some(&signed), Some("1001"), body, 1000)
                .is_err()
        );
        assert!(format!("{v:?}").find("s3cret").is_none());
    }

    #[test]
    fn parses_the_three_event_types() {
        let e = parse(&serde_json::json!({"event_type": "customer.updated", "data": {"customer_id": 7, "name": "A"}})).unwrap();
        assert_eq!(e.id, "7");
        assert!(matches!(e.change(), Change::Upsert(_)));
        let d = parse(
            &serde_json::json!({"event_type": "customer.deleted", "data": {"email": "a@b.c"}}),
        )
        .unwrap();
        assert!(matches!(d.change(), Change::Delete { .. }));
        assert!(
            parse(&serde_json::json!({"event_type": "customer.merged", "data": {"id": "1"}}))
                .is_err()
        );
        assert!(parse(&serde_json::json!({"event_type": "customer.created", "data": {}})).is_err());
    }
}
