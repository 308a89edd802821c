//! Pipedrive webhooks: HTTP basic auth checked in constant time, v1 and v2
//! payloads turned into [`Change`]s, redeliveries dropped.
//!
//! Pipedrive signs nothing; a webhook is created with `http_auth_user` and
//! `http_auth_password` and every delivery carries them as
//! `Authorization: Basic ...` (Pipedrive's "Guide for Webhooks").
//!
//! - v1: `{"v": 1, "current": {...}, "previous": {...}, "meta": {"action":
//!   "added" | "updated" | "merged" | "deleted", "object": "person", "id": 5,
//!   "timestamp": ..., "webhook_id": ...}, "retry": 0}`; custom fields are
//!   top-level hash keys of `current`.
//! - v2: `{"data": {...}, "previous": {...}, "meta": {"action": "create" |
//!   "change" | "delete", "entity": "person", "entity_id": "5", "id": uuid,
//!   "timestamp": ..., "version": "2.0", "attempt": 1}}`; custom fields are
//!   in `data.custom_fields`.
//!
//! Redeliveries (retries after a timeout, the same event twice) carry the
//! same event identity (v2 `meta.id`; v1 webhook id, object, id, action and
//! `timestamp_micro`/`timestamp`), which [`WebhookReceiver`] remembers.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use crm_core::{Change, Record, RecordId, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value as Json};
use subtle::ConstantTimeEq;

use crate::ObjectKind;
use crate::error::PipedriveError;
use crate::mapping::{FieldCatalog, json_text, parse_time, record_from_wire};

/// How many event identities a receiver remembers.
pub const SEEN_CAP: usize = 10_000;

/// Checks the basic-auth header of deliveries.
pub struct WebhookVerifier {
    expected: SecretString,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier").finish_non_exhaustive()
    }
}

/// The `Authorization` header value for `user` and `password`.
pub fn basic_auth_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl WebhookVerifier {
    /// A verifier expecting `user` and `password`.
    pub fn new(user: &str, password: &SecretString) -> Self {
        WebhookVerifier {
            expected: SecretString::from(basic_auth_header(user, password.expose_secret())),
        }
    }

    /// Checks an `Authorization` header value in constant time.
    ///
    /// # Errors
    /// [`PipedriveError::WebhookRejected`] (kind auth) when absent or wrong.
    pub fn verify(&self, authorization: Option<&str>) -> Result<()> {
        let got = authorization.unwrap_or("").trim().as_bytes();
        let want = self.expected.expose_secret().as_bytes();
        if bool::from(got.ct_eq(want)) {
            Ok(())
        } else {
            Err(PipedriveError::WebhookRejected("wrong or missing basic-auth credentials").into())
        }
    }
}

/// One parsed delivery.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The event's identity (for redelivery detection).
    pub key: String,
    /// The object.
    pub object: Option<ObjectKind>,
    /// The change.
    pub change: Change,
}

/// Parses a delivery body (v1 or v2) into an event; `catalog` names custom fields.
///
/// # Errors
/// [`PipedriveError::WebhookBody`] when it is neither shape.
pub fn parse_event(body: &[u8], catalog: &FieldCatalog) -> Result<Option<WebhookEvent>> {
    let v: Json =
        serde_json::from_slice(body).map_err(|e| PipedriveError::WebhookBody(e.to_string()))?;
    let meta = v
        .get("meta")
        .and_then(Json::as_object)
        .ok_or_else(|| PipedriveError::WebhookBody("no meta".into()))?;
    let text = |k: &str| meta.get(k).map(json_text).unwrap_or_default();
    let v2 = meta.get("entity").is_some() || text("version").starts_with('2');
    let (action, object, id) = if v2 {
        (text("action"), text("entity"), text("entity_id"))
    } else {
        (text("action"), text("object"), text("id"))
    };
    let kind = ObjectKind::parse(&object);
    let data = if v2 { v.get("data") } else { v.get("current") };
    let id = if id.is_empty() {
        data.and_then(|d| d.get("id"))
            .map(json_text)
            .unwrap_or_default()
    } else {
        id
    };
    if id.is_empty() {
        return Err(PipedriveError::WebhookBody("no record id".into()).into());
    }
    let key = if v2 && !text("id").is_empty() {
        format!("v2:{}", text("id"))
    } else {
        let stamp = [text("timestamp_micro"), text("timestamp")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        format!("v1:{}:{object}:{id}:{action}:{stamp}", text("webhook_id"))
    };
    let at = meta.get("timestamp").and_then(|t| match t {
        Json::Number(n) => n.as_i64().and_then(|s| {
            if s > 10_000_000_000 {
                chrono::DateTime::from_timestamp_millis(s)
            } else {
                chrono::DateTime::from_timestamp(s, 0)
            }
        }),
        Json::String(s) => parse_time(s),
        _ => None,
    });
    let change = match action.as_str() {
        "deleted" | "delete" => Change::Delete {
            id: RecordId::new(id),
            at,
        },
        "added" | "updated" | "merged" | "create" | "change" => {
            let rec: Map<String, Json> =
                data.and_then(Json::as_object).cloned().unwrap_or_default();
            let mut r = match kind {
                Some(k) => record_from_wire(k, &rec, catalog, None),
                None => Record::new(),
            };
            r.id = Some(RecordId::new(id));
            Change::Upsert(r)
        }
        _ => return Ok(None),
    };
    Ok(Some(WebhookEvent {
        key,
        object: kind,
        change,
    }))
}

/// Verifies deliveries and turns them into changes, once per event.
#[derive(Debug)]
pub struct WebhookReceiver {
    verifier: WebhookVerifier,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl WebhookReceiver {
    /// A receiver checking `verifier`.
    pub fn new(verifier: WebhookVerifier) -> Self {
        WebhookReceiver {
            verifier,
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Handles one delivery: checks the `Authorization` header, parses the
    /// body and returns its change, or `None` for a redelivery or an
    /// event that is not a record change.
    ///
    /// # Errors
    /// Auth errors for bad credentials; invalid input for a bad body.
    pub fn receive(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        catalog: &FieldCatalog,
    ) -> Result<Option<WebhookEvent>> {
        self.verifier.verify(authorization)?;
        let Some(ev) = parse_event(body, catalog)? else {
            return Ok(None);
        };
        let mut g = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *g;
        if !set.insert(ev.key.clone()) {
            return Ok(None);
        }
        order.push_back(ev.key.clone());
        while order.len() > SEEN_CAP {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receiver() -> WebhookReceiver {
        WebhookReceiver::new(WebhookVerifier::new(
            "hook",
            &SecretString::from("pw".to_owned()),
        ))
    }

    #[test]
    fn basic_auth_is_checked() {
        let r = receiver();
        let body = json!({"v": 1, "current": {"id": 5, "name": "Ada"}, "previous": null,
            "meta": {"action": "added", "object": "person", "id": 5, "timestamp": 1700000000, "webhook_id": "7"}}).to_string();
        assert!(
            r.receive(None, body.as_bytes(), &FieldCatalog::default())
                .is_err()
        );
        assert!(
            r.receive(
                Some(&basic_auth_header("hook", "nope")),
                body.as_bytes(),
                &FieldCatalog::default()
            )
            .is_err()
        );
        let ok = r
            .receive(
                Some(&basic_auth_header("hook", "pw")),
                body.as_bytes(),
                &FieldCatalog::default(),
            )
            .unwrap()
            .unwrap();
        assert!(matches!(ok.change, Change::Upsert(ref rec) if rec.text("name") == Some("Ada")));
        assert!(
            r.receive(
                Some(&basic_auth_header("hook", "pw")),
                body.as_bytes(),
                &FieldCatalog::default()
            )
            .unwrap()
            .is_none(),
            "redelivery dropped"
        );
    }

    #[test]
    fn v2_payloads_parse_with_deletes() {
        let r = receiver();
        let auth = basic_auth_header("hook", "pw");
        let del = json!({"data": null, "previous": {"id": 9}, "meta": {"action": "delete", "entity": "deal",
            "entity_id": "9", "id": "0b7c-1", "timestamp": "2025-01-01T10:20:00Z", "version": "2.0"}}).to_string();
        let ev = r
            .receive(Some(&auth), del.as_bytes(), &FieldCatalog::default())
            .unwrap()
            .unwrap();
        assert_eq!(ev.object, Some(ObjectKind::Deals));
        assert!(matches!(ev.change, Change::Delete { ref id, at: Some(_) } if id.as_str() == "9"));
        assert!(
            r.receive(Some(&auth), del.as_bytes(), &FieldCatalog::default())
                .unwrap()
                .is_none()
        );
    }
}
