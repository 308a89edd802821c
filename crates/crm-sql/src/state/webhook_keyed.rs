//! Webhook events queued under an id the caller derives from the event's
//! identity, so a redelivered event is recognised by the store itself,
//! across restarts and across processes sharing one database.

use chrono::Utc;
use crm_core::{ErrorKind, Result};

use super::{NewWebhookEvent, StateStore, WebhookEventId, WebhookStatus};
use crate::db::Arg;

impl StateStore {
    /// Queues a webhook event (status `pending`) under `id`, unless an
    /// event with that id is already stored (pending, processed or
    /// failed). Returns whether it was queued now.
    ///
    /// Derive `id` from the provider's event identity (or a digest of the
    /// body) to make redeliveries idempotent; ids are at most 64 characters.
    ///
    /// # Errors
    /// Database errors; [`ErrorKind::InvalidInput`] for an id longer than
    /// 64 characters.
    pub async fn enqueue_webhook_keyed(
        &self,
        id: &WebhookEventId,
        event: NewWebhookEvent,
    ) -> Result<bool> {
        if id.as_str().is_empty() || id.as_str().len() > 64 {
            return Err(crm_core::Error::invalid_input(
                "a webhook event id has 1 to 64 characters",
            ));
        }
        let inserted = self
            .ops()
            .exec(
                "state.enqueue_webhook_keyed",
                "INSERT INTO crm_webhook_events (id, connection_id, provider, event_type, payload, \
                 signature_valid, status, attempts, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                &[
                    Arg::text(id.as_str()),
                    Arg::opt_text(event.connection_id.as_ref().map(|c| c.as_str().to_owned())),
                    Arg::text(&event.provider),
                    Arg::text(&event.event_type),
                    Arg::json_text(&event.payload),
                    Arg::bool(event.signature_valid),
                    Arg::text(WebhookStatus::Pending.as_str()),
                    Arg::time(Utc::now()),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(true),
            // The primary key holds: the event was queued before.
            Err(e) if *e.kind() == ErrorKind::Conflict => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::state::CredentialKey;

    #[tokio::test]
    async fn a_keyed_event_is_queued_once_even_after_processing() {
        let store = StateStore::open_url("sqlite::memory:", CredentialKey::generate().0)
            .await
            .unwrap();
        let id = WebhookEventId::new("hubspot-1-2-3");
        let ev =
            || NewWebhookEvent::new("hubspot", "contact.creation", serde_json::json!({"a": 1}));
        assert!(store.enqueue_webhook_keyed(&id, ev()).await.unwrap());
        assert!(!store.enqueue_webhook_keyed(&id, ev()).await.unwrap());
        assert_eq!(store.pending_webhooks(10).await.unwrap().len(), 1);
        store
            .mark_webhook(&id, WebhookStatus::Processed, None)
            .await
            .unwrap();
        assert!(!store.enqueue_webhook_keyed(&id, ev()).await.unwrap());
        assert!(store.pending_webhooks(10).await.unwrap().is_empty());
        let other = WebhookEventId::new("hubspot-1-2-4");
        assert!(store.enqueue_webhook_keyed(&other, ev()).await.unwrap());
        let long = WebhookEventId::new("x".repeat(65));
        assert!(store.enqueue_webhook_keyed(&long, ev()).await.is_err());
    }
}
