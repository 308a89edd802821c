//! [`WebhookSender`]: delivers a simulator's webhook events over plain HTTP
//! to local receivers, duplicating deliveries when the fault plan says so.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{Request, Uri, header};
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::fault::FaultInjector;

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// The target URL.
    pub url: String,
    /// Which copy of the event this was (1 for the first).
    pub copy: u32,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why the delivery failed, if it did.
    pub error: Option<String>,
    /// Body size in bytes.
    pub body_size: usize,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<String>,
    deliveries: Vec<Delivery>,
}

/// Sends webhook events; clones share subscribers and the delivery log.
#[derive(Clone)]
pub struct WebhookSender {
    faults: FaultInjector,
    inner: Arc<Mutex<Inner>>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("subscribers", &self.lock().subscribers)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender consulting `faults` for duplicate deliveries.
    pub fn new(faults: FaultInjector) -> Self {
        WebhookSender {
            faults,
            inner: Arc::new(Mutex::new(Inner::default())),
            timeout: Duration::from_secs(10),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Lists are appended whole; a poisoned lock still holds valid lists.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a receiver URL (`http://127.0.0.1:PORT/path`).
    pub fn subscribe(&self, url: &str) {
        let mut inner = self.lock();
        if !inner.subscribers.iter().any(|u| u == url) {
            inner.subscribers.push(url.to_owned());
        }
    }

    /// Removes a receiver URL.
    pub fn unsubscribe(&self, url: &str) {
        self.lock().subscribers.retain(|u| u != url);
    }

    /// The receiver URLs.
    pub fn subscribers(&self) -> Vec<String> {
        self.lock().subscribers.clone()
    }

    /// Every delivery attempt so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// POSTs one event to every subscriber (each as often as the fault plan
    /// says; once without duplicate rules).
    ///
    /// # Cancel safety
    /// Dropping the future may leave some subscribers without the event.
    pub async fn broadcast(&self, headers: &[(String, String)], body: &[u8]) -> Vec<Delivery> {
        let mut out = Vec::new();
        for url in self.subscribers() {
            out.extend(self.send(&url, headers, body).await);
        }
        out
    }

    /// POSTs one event to `url`, as often as the fault plan says. Failures
    /// are recorded in the returned deliveries, never retried here.
    ///
    /// # Cancel safety
    /// Dropping the future may stop between copies.
    pub async fn send(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Vec<Delivery> {
        let copies = self.faults.webhook_copies();
        let mut out = Vec::new();
        for copy in 1..=copies {
            let sent_at = Utc::now();
            let result = tokio::time::timeout(self.timeout, post(url, headers, body)).await;
            let (status, error) = match result {
                Ok(Ok(s)) => (Some(s), None),
                Ok(Err(e)) => (None, Some(e)),
                Err(_) => (None, Some("timed out".to_owned())),
            };
            let d = Delivery {
                url: url.to_owned(),
                copy,
                status,
                error,
                body_size: body.len(),
                sent_at,
            };
            self.lock().deliveries.push(d.clone());
            out.push(d);
        }
        out
    }
}

async fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> Result<u16, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// receivers are supported".into());
    }
    let host = uri.host().ok_or("url has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let mut req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    drop(resp);
    conn_task.abort();
    Ok(status)
}
