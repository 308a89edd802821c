//! HubSpot webhooks: signature verification (v3, and the older v1 and v2
//! forms) and event batches turned into [`Change`]s, with redeliveries
//! recognised and dropped.
//!
//! Signature rules (HubSpot's "Validating requests" page and the v3
//! changelog; restated in `WebhookSignatureRules` of the bundled OpenAPI
//! description):
//!
//! - **v3** (`X-HubSpot-Signature-v3`, `X-HubSpot-Request-Timestamp`):
//!   Base64 of HMAC-SHA256, keyed with the app's client secret, over
//!   `method + uri + body + timestamp`. Requests whose timestamp is more
//!   than 5 minutes away are rejected. The timestamp is signed *as the
//!   header text was sent*: re-formatting it (one client library turned it
//!   into `"...792.0"`) breaks the HMAC. HubSpot decodes a fixed set of
//!   percent-encoded characters of the URI before signing; see
//!   [`decode_uri_for_v3`].
//! - **v2** (`X-HubSpot-Signature`, version `v2`): hex SHA-256 of
//!   `secret + method + uri + body`.
//! - **v1** (`X-HubSpot-Signature`, version `v1` or absent): hex SHA-256 of
//!   `secret + body`.
//!
//! Every comparison is constant-time.
//!
//! ```
//! use crm_hubspot::webhook::{sign_v3, WebhookVerifier, SignatureVersion};
//! use crm_http::reqwest::header::{HeaderMap, HeaderValue};
//! use secrecy::SecretString;
//!
//! let secret = "app-client-secret";
//! let body = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":1700000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":42}]"#;
//! let ts = "1700000000000";
//! let uri = "https://example.com/hubspot/webhook";
//! let mut headers = HeaderMap::new();
//! headers.insert("x-hubspot-signature-v3", HeaderValue::from_str(&sign_v3(secret, "POST", uri, body, ts)).unwrap());
//! headers.insert("x-hubspot-request-timestamp", HeaderValue::from_static("1700000000000"));
//!
//! let verifier = WebhookVerifier::new(SecretString::from(secret.to_owned()));
//! let version = verifier.verify_at("POST", uri, &headers, body, 1_700_000_060_000).unwrap();
//! assert_eq!(version, SignatureVersion::V3);
//! // Six minutes later the same request is stale.
//! assert!(verifier.verify_at("POST", uri, &headers, body, 1_700_000_360_001).is_err());
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use crm_core::{Change, Record, RecordId, Value};
use crm_http::reqwest::header::HeaderMap;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::HubSpotError;
use crate::wire::WebhookEvent;

/// Header of the v3 signature.
pub const HEADER_SIGNATURE_V3: &str = "x-hubspot-signature-v3";
/// Header of the v1/v2 signature.
pub const HEADER_SIGNATURE: &str = "x-hubspot-signature";
/// Header naming the v1/v2 signature version.
pub const HEADER_SIGNATURE_VERSION: &str = "x-hubspot-signature-version";
/// Header of the v3 request timestamp (epoch milliseconds).
pub const HEADER_TIMESTAMP: &str = "x-hubspot-request-timestamp";
/// How old (or how far ahead) a v3 timestamp may be.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// Which signature a request passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `X-HubSpot-Signature`, v1.
    V1,
    /// `X-HubSpot-Signature`, v2.
    V2,
    /// `X-HubSpot-Signature-v3`.
    V3,
}

/// Decodes the percent-encoded characters HubSpot decodes before computing
/// a v3 signature: `%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 ( %29 )
/// %2A * %2C , %3B ;` (the table on HubSpot's request-validation page).
/// Other escapes are left as they are.
pub fn decode_uri_for_v3(uri: &str) -> String {
    const TABLE: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code.and_then(|c| {
            TABLE
                .iter()
                .find(|(hex, _)| hex.eq_ignore_ascii_case(c))
                .map(|(_, ch)| *ch)
        }) {
            Some(ch) => {
                out.push(ch);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The v3 signature of a request: Base64 of HMAC-SHA256 over
/// `method + decoded uri + body + timestamp` (timestamp as sent).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(decode_uri_for_v3(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The v2 signature: lower-case hex SHA-256 of `secret + method + uri + body`.
pub fn sign_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.to_ascii_uppercase().as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

/// The v1 signature: lower-case hex SHA-256 of `secret + body`.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Reads a timestamp header as epoch milliseconds: integer text, or (as
/// some senders re-format it) decimal text.
fn timestamp_ms(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f as i64)
    })
}

/// Checks HubSpot's signatures with the app's secret.
pub struct WebhookVerifier {
    secret: SecretString,
    max_skew: Duration,
    allow_legacy: bool,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secret", &"[REDACTED]")
            .field("max_skew", &self.max_skew)
            .field("allow_legacy", &self.allow_legacy)
            .finish()
    }
}

impl WebhookVerifier {
    /// A verifier with the app's client secret, a 5-minute skew limit and
    /// v1/v2 signatures accepted when no v3 signature is sent.
    pub fn new(secret: SecretString) -> Self {
        WebhookVerifier {
            secret,
            max_skew: MAX_SKEW,
            allow_legacy: true,
        }
    }

    /// Sets how far a v3 timestamp may be from now.
    #[must_use]
    pub fn max_skew(mut self, skew: Duration) -> Self {
        self.max_skew = skew;
        self
    }

    /// Accepts (or refuses) v1/v2 signatures, which carry no timestamp and
    /// so cannot stop a replay.
    #[must_use]
    pub fn allow_legacy(mut self, allow: bool) -> Self {
        self.allow_legacy = allow;
        self
    }

    /// Verifies a request against the current time.
    ///
    /// `uri` is the full URL HubSpot called (scheme, host, path, query);
    /// `body` the raw bytes as received.
    ///
    /// # Errors
    /// [`HubSpotError::WebhookRejected`] naming the reason (missing or bad
    /// signature, stale timestamp).
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<SignatureVersion, HubSpotError> {
        self.verify_at(method, uri, headers, body, Utc::now().timestamp_millis())
    }

    /// Verifies a request as of `now_ms` (epoch milliseconds).
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_at(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<SignatureVersion, HubSpotError> {
        let secret = self.secret.expose_secret();
        if let Some(sig) = header(headers, HEADER_SIGNATURE_V3) {
            let ts_text = header(headers, HEADER_TIMESTAMP).ok_or(
                HubSpotError::WebhookRejected("v3 signature without a timestamp"),
            )?;
            let ts = timestamp_ms(ts_text)
                .ok_or(HubSpotError::WebhookRejected("timestamp is not a number"))?;
            let skew = u128::from(now_ms.abs_diff(ts));
            if skew > self.max_skew.as_millis() {
                return Err(HubSpotError::WebhookRejected(
                    "timestamp is more than 5 minutes away (stale or replayed)",
                ));
            }
            let expected = sign_v3(secret, method, uri, body, ts_text);
            return if ct_eq(&expected, sig) {
                Ok(SignatureVersion::V3)
            } else {
                Err(HubSpotError::WebhookRejected("v3 signature does not match"))
            };
        }
        let Some(sig) = header(headers, HEADER_SIGNATURE) else {
            return Err(HubSpotError::WebhookRejected("no HubSpot signature header"));
        };
        if !self.allow_legacy {
            return Err(HubSpotError::WebhookRejected(
                "v1/v2 signatures are not accepted",
            ));
        }
        let sig = sig.to_ascii_lowercase();
        match header(headers, HEADER_SIGNATURE_VERSION).unwrap_or("v1") {
            "v2" | "V2" => {
                if ct_eq(&sign_v2(secret, method, uri, body), &sig) {
                    Ok(SignatureVersion::V2)
                } else {
                    Err(HubSpotError::WebhookRejected("v2 signature does not match"))
                }
            }
            "v1" | "V1" => {
                if ct_eq(&sign_v1(secret, body), &sig) {
                    Ok(SignatureVersion::V1)
                } else {
                    Err(HubSpotError::WebhookRejected("v1 signature does not match"))
                }
            }
            _ => Err(HubSpotError::WebhookRejected("unknown signature version")),
        }
    }
}

/// Parses a delivery body: a JSON array of events.
///
/// # Errors
/// [`HubSpotError::WebhookBody`] when the body is not an event array.
pub fn parse_events(body: &[u8]) -> Result<Vec<WebhookEvent>, HubSpotError> {
    serde_json::from_slice(body).map_err(|e| HubSpotError::WebhookBody(e.to_string()))
}

/// The object type (`contacts`, `companies`, `deals`...) an event's
/// `subscriptionType` is about, if it names one.
pub fn event_object(subscription_type: &str) -> Option<String> {
    let (object, _) = subscription_type.split_once('.')?;
    Some(match object {
        "contact" => "contacts".to_owned(),
        "company" => "companies".to_owned(),
        "deal" => "deals".to_owned(),
        "ticket" => "tickets".to_owned(),
        "product" => "products".to_owned(),
        "line_item" => "line_items".to_owned(),
        "conversation" | "object" | "" => return None,
        other => format!("{other}s"),
    })
}

/// A change read from a webhook event.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookChange {
    /// The object type (`contacts`, ...).
    pub object: String,
    /// The change. Upserts from `propertyChange` events carry only the
    /// changed property; creation and restore events carry none (read the
    /// record to get the rest, e.g. with `HubSpot::batch_read`).
    pub change: Change,
    /// The event's `subscriptionType`.
    pub subscription_type: String,
}

/// The changes an event stands for; none for events that do not change a
/// record (association changes, unknown types).
pub fn event_changes(e: &WebhookEvent) -> Vec<WebhookChange> {
    let Some(object) = event_object(&e.subscription_type) else {
        return Vec::new();
    };
    let at: Option<DateTime<Utc>> = DateTime::from_timestamp_millis(e.occurred_at);
    let kind = e
        .subscription_type
        .split_once('.')
        .map(|(_, k)| k)
        .unwrap_or_default();
    let id = RecordId::new(e.object_id.to_string());
    let mk = |change| WebhookChange {
        object: object.clone(),
        change,
        subscription_type: e.subscription_type.clone(),
    };
    let upsert = |fields: Option<(&str, Option<&str>)>| {
        let mut r = Record::new().with_id(id.clone());
        r.updated_at = at;
        if let Some((name, value)) = fields {
            r.set(
                name,
                value.map_or(Value::Null, |v| Value::Text(v.to_owned())),
            );
        }
        Change::Upsert(r)
    };
    match kind {
        "creation" | "restore" => vec![mk(upsert(None))],
        "propertyChange" => match &e.property_name {
            Some(name) => vec![mk(upsert(Some((name, e.property_value.as_deref()))))],
            None => vec![mk(upsert(None))],
        },
        "deletion" | "privacyDeletion" => vec![mk(Change::Delete { id, at })],
        "merge" => {
            let primary = e.primary_object_id.unwrap_or(e.object_id);
            let mut out: Vec<WebhookChange> = e
                .merged_object_ids
                .iter()
                .flatten()
                .filter(|m| **m != primary)
                .map(|m| {
                    mk(Change::Delete {
                        id: RecordId::new(m.to_string()),
                        at,
                    })
                })
                .collect();
            let mut r = Record::new().with_id(primary.to_string());
            r.updated_at = at;
            out.push(mk(Change::Upsert(r)));
            out
        }
        _ => Vec::new(),
    }
}

/// Remembers the events already handled, so redeliveries (HubSpot retries
/// failed deliveries, and a delivery may arrive twice) are dropped.
/// Keyed by `(portalId, subscriptionId, eventId)`, bounded to `capacity`
/// most recent keys.
#[derive(Debug)]
pub struct EventDeduper {
    seen: HashSet<(u64, u64, u64)>,
    order: VecDeque<(u64, u64, u64)>,
    capacity: usize,
}

impl EventDeduper {
    /// A deduper remembering the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventDeduper {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time an event is offered, false on every repeat.
    pub fn first_time(&mut self, e: &WebhookEvent) -> bool {
        let key = (e.portal_id, e.subscription_id, e.event_id);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Verifies, parses and deduplicates webhook deliveries.
#[derive(Debug)]
pub struct WebhookReceiver {
    verifier: WebhookVerifier,
    dedupe: Mutex<EventDeduper>,
}

impl WebhookReceiver {
    /// A receiver remembering the last 100,000 events.
    pub fn new(verifier: WebhookVerifier) -> Self {
        WebhookReceiver {
            verifier,
            dedupe: Mutex::new(EventDeduper::new(100_000)),
        }
    }

    /// Handles one delivery: verifies it, then returns the changes of the
    /// events not seen before.
    ///
    /// # Errors
    /// [`HubSpotError::WebhookRejected`] when verification fails (answer
    /// 401 and process nothing); [`HubSpotError::WebhookBody`] when the body
    /// is not an event array.
    pub fn receive(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<WebhookChange>, HubSpotError> {
        self.verifier.verify(method, uri, headers, body)?;
        let events = parse_events(body)?;
        let mut dedupe = match self.dedupe.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(events
            .iter()
            .filter(|e| dedupe.first_time(e))
            .flat_map(event_changes)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_http::reqwest::header::HeaderValue;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn v1_and_v2_match_hubspots_worked_examples() {
        let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            sign_v1(SECRET, body),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            sign_v2(SECRET, "GET", "https://www.example.com/webhook_uri", b""),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
        assert_eq!(
            sign_v2(
                SECRET,
                "POST",
                "https://www.example.com/webhook_uri",
                br#"{"example_field":"example_value"}"#
            ),
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
        );
        let v = WebhookVerifier::new(SecretString::from(SECRET.to_owned()));
        let h = headers(&[
            (HEADER_SIGNATURE, &sign_v1(SECRET, body)),
            (HEADER_SIGNATURE_VERSION, "v1"),
        ]);
        assert_eq!(
            v.verify("POST", "https://x/y", &h, body).unwrap(),
            SignatureVersion::V1
        );
        let tampered = &body[..body.len() - 2];
        assert!(v.verify("POST", "https://x/y", &h, tampered).is_err());
        assert!(
            v.allow_legacy(false)
                .verify("POST", "https://x/y", &h, body)
                .is_err()
        );
    }

    #[test]
    fn v3_accepts_valid_and_rejects_tampered_stale_and_future() {
        let body = br#"[{"eventId":9}]"#;
        let uri = "https://example.com/hook?a=1";
        let ts = "1700000000000";
        let sig = sign_v3(SECRET, "POST", uri, body, ts);
        let h = headers(&[(HEADER_SIGNATURE_V3, &sig), (HEADER_TIMESTAMP, ts)]);
        let v = WebhookVerifier::new(SecretString::from(SECRET.to_owned()));
        let now = 1_700_000_000_000 + 299_000;
        assert_eq!(
            v.verify_at("POST", uri, &h, body, now).unwrap(),
            SignatureVersion::V3
        );
        // Tampered body, URI, method, signature.
        assert!(
            v.verify_at("POST", uri, &h, br#"[{"eventId":8}]"#, now)
                .is_err()
        );
        assert!(
            v.verify_at("POST", "https://example.com/hook?a=2", &h, body, now)
                .is_err()
        );
        assert!(v.verify_at("PUT", uri, &h, body, now).is_err());
        let wrong = WebhookVerifier::new(SecretString::from("other".to_owned()));
        assert!(wrong.verify_at("POST", uri, &h, body, now).is_err());
        // Stale (over 5 minutes) and from the future.
        let e = v
            .verify_at("POST", uri, &h, body, 1_700_000_000_000 + 300_001)
            .unwrap_err();
        assert!(e.to_string().contains("5 minutes"));
        assert!(
            v.verify_at("POST", uri, &h, body, 1_700_000_000_000 - 300_001)
                .is_err()
        );
        // Missing timestamp.
        let no_ts = headers(&[(HEADER_SIGNATURE_V3, &sig)]);
        assert!(v.verify_at("POST", uri, &no_ts, body, now).is_err());
    }

    #[test]
    fn v3_signs_the_timestamp_text_as_sent() {
        // A sender that wrote "...000.0" signed that text; re-formatting it
        // to an integer would break the HMAC.
        let body = b"[]";
        let uri = "https://example.com/hook";
        let ts = "1700000000000.0";
        let sig = sign_v3(SECRET, "POST", uri, body, ts);
        let h = headers(&[(HEADER_SIGNATURE_V3, &sig), (HEADER_TIMESTAMP, ts)]);
        let v = WebhookVerifier::new(SecretString::from(SECRET.to_owned()));
        assert!(
            v.verify_at("POST", uri, &h, body, 1_700_000_001_000)
                .is_ok()
        );
        assert_ne!(sig, sign_v3(SECRET, "POST", uri, body, "1700000000000"));
    }

    #[test]
    fn v3_decodes_the_documented_escapes_only() {
        assert_eq!(
            decode_uri_for_v3("https://x/a%3Ab%2Fc%3fd%40e%20f%zz"),
            "https://x/a:b/c?d@e%20f%zz"
        );
        let body = b"[]";
        let ts = "1";
        assert_eq!(
            sign_v3(SECRET, "POST", "https://x/p?q=a%2Cb", body, ts),
            sign_v3(SECRET, "POST", "https://x/p?q=a,b", body, ts)
        );
    }

    fn event(id: u64, kind: &str) -> WebhookEvent {
        serde_json::from_value(serde_json::json!({
            "eventId": id, "subscriptionId": 5, "portalId": 62515, "appId": 1,
            "occurredAt": 1_700_000_000_000i64, "subscriptionType": kind,
            "attemptNumber": 0, "objectId": 77,
            "propertyName": "lifecyclestage", "propertyValue": "customer"
        }))
        .unwrap()
    }

    #[test]
    fn events_become_changes() {
        let c = event_changes(&event(1, "contact.propertyChange"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].object, "contacts");
        match &c[0].change {
            Change::Upsert(r) => {
                assert_eq!(r.id.as_ref().unwrap().as_str(), "77");
                assert_eq!(r.text("lifecyclestage"), Some("customer"));
            }
            other => panic!("{other:?}"),
        }
        let d = event_changes(&event(2, "deal.deletion"));
        assert_eq!(d[0].object, "deals");
        assert!(matches!(&d[0].change, Change::Delete { id, .. } if id.as_str() == "77"));
        let mut m = event(3, "contact.merge");
        m.primary_object_id = Some(77);
        m.merged_object_ids = Some(vec![77, 78, 79]);
        let merged = event_changes(&m);
        assert_eq!(merged.len(), 3);
        assert!(event_changes(&event(4, "contact.associationChange")).is_empty());
    }

    #[test]
    fn receiver_drops_redeliveries_and_rejects_bad_signatures() {
        let events = vec![event(1, "contact.creation"), event(2, "contact.deletion")];
        let body = serde_json::to_vec(&events).unwrap();
        let uri = "https://example.com/hook";
        let ts = Utc::now().timestamp_millis().to_string();
        let sig = sign_v3(SECRET, "POST", uri, &body, &ts);
        let h = headers(&[(HEADER_SIGNATURE_V3, &sig), (HEADER_TIMESTAMP, &ts)]);
        let r = WebhookReceiver::new(WebhookVerifier::new(SecretString::from(SECRET.to_owned())));
        assert_eq!(r.receive("POST", uri, &h, &body).unwrap().len(), 2);
        // The same delivery again (a retry): nothing new.
        assert!(r.receive("POST", uri, &h, &body).unwrap().is_empty());
        let bad = headers(&[(HEADER_SIGNATURE_V3, "AAAA"), (HEADER_TIMESTAMP, &ts)]);
        assert!(r.receive("POST", uri, &bad, &body).is_err());
    }

    #[test]
    fn deduper_is_bounded() {
        let mut d = EventDeduper::new(2);
        assert!(d.first_time(&event(1, "contact.creation")));
        assert!(d.first_time(&event(2, "contact.creation")));
        assert!(!d.first_time(&event(2, "contact.creation")));
        assert!(d.first_time(&event(3, "contact.creation")));
        // Event 1 fell out of the window.
        assert!(d.first_time(&event(1, "contact.creation")));
    }
}
