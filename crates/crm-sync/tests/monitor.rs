//! Monitoring end to end on SQLite state stores: seed 001's health
//! thresholds at their boundaries, the Prometheus text parsed back, alert
//! notifications delivered once to a local receiver (and a resolution once
//! the condition clears), and a failing receiver that does not stop
//! evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use crm_sql::state::{
    ConnectionId, CredentialKey, NewConnection, RunStatus, StateStore, SyncDirection, SyncType,
};
use crm_sync::config::SyncJob;
use crm_sync::monitor::{AlertNotification, AlertStatus, HealthStatus, Monitor, MonitorConfig};
use crm_sync::serve::{Receiver, Server, Verifiers};

async fn store() -> StateStore {
    StateStore::open_url("sqlite::memory:", CredentialKey::from_bytes([7; 32]))
        .await
        .unwrap()
}

/// A finished run; returns when it completed.
async fn run(
    store: &StateStore,
    conn: &ConnectionId,
    direction: SyncDirection,
    status: RunStatus,
    (processed, success, failed): (i64, i64, i64),
) -> DateTime<Utc> {
    let id = store
        .start_run(conn, "contacts", SyncType::Delta, direction)
        .await
        .unwrap();
    store
        .record_run_progress(&id, processed, success, failed)
        .await
        .unwrap();
    store
        .finish_run(&id, status, &serde_json::json!([]))
        .await
        .unwrap();
    store.run(&id).await.unwrap().unwrap().completed_at.unwrap()
}

/// A job with a placeholder source and `rest`.
fn job(rest: &str) -> SyncJob {
    let yaml = format!("database:\n  url: \"sqlite::memory:\"\n  query: \"SELECT 1\"\n{rest}");
    SyncJob::from_yaml(&yaml, "inline").unwrap()
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

#[tokio::test]
async fn thresholds_per_direction_at_the_boundaries() {
    let store = store().await;
    let from = store
        .create_connection(NewConnection::new("hubspot", "from"))
        .await
        .unwrap();
    let to = store
        .create_connection(NewConnection::new("salesforce", "to"))
        .await
        .unwrap();
    let t_from = run(
        &store,
        &from,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (1, 1, 0),
    )
    .await;
    let t_to = run(
        &store,
        &to,
        SyncDirection::ToCrm,
        RunStatus::Completed,
        (1, 1, 0),
    )
    .await;
    // A later failed run does not count as a sync.
    run(
        &store,
        &from,
        SyncDirection::FromCrm,
        RunStatus::Failed,
        (0, 0, 0),
    )
    .await;

    let monitor = Monitor::new(store.clone(), MonitorConfig::default());
    use HealthStatus::{Critical, Healthy, Warning};
    let expect = [
        (30, Healthy, Healthy),
        (31, Warning, Healthy),
        (60, Warning, Healthy),
        (61, Critical, Warning),
        (120, Critical, Warning),
        (121, Critical, Critical),
    ];
    for (m, from_status, to_status) in expect {
        let rows = monitor.health(t_from + minutes(m)).await.unwrap();
        let row = rows.iter().find(|r| r.connection == "from").unwrap();
        assert_eq!(row.direction, SyncDirection::FromCrm);
        assert_eq!(row.lag_minutes, m, "from_crm at {m}");
        assert_eq!(row.status, from_status, "from_crm at {m}");
        assert_eq!(row.last_success_at, Some(t_from));
        assert!(
            rows.iter()
                .all(|r| r.connection != "from" || r.direction == SyncDirection::FromCrm)
        );

        let rows = monitor.health(t_to + minutes(m)).await.unwrap();
        let row = rows.iter().find(|r| r.connection == "to").unwrap();
        assert_eq!(row.direction, SyncDirection::ToCrm);
        assert_eq!(row.lag_minutes, m, "to_crm at {m}");
        assert_eq!(row.status, to_status, "to_crm at {m}");
    }

    // Configured thresholds replace seed 001's.
    let job = job(
        "monitoring:\n  thresholds:\n    from_crm: { warning_minutes: 5, critical_minutes: 10 }\n",
    );
    let monitor = Monitor::new(store.clone(), MonitorConfig::from_job(&job).unwrap());
    let rows = monitor.health(t_from + minutes(11)).await.unwrap();
    let row = rows.iter().find(|r| r.connection == "from").unwrap();
    assert_eq!(row.status, Critical);
}

/// A parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format line by line, checking that every sample
/// belongs to a family announced with `# HELP` and `# TYPE` first.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut helped = HashSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(!help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helped.contains(name), "TYPE before HELP: {name}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        assert!(!line.is_empty(), "blank line");
        // name{labels} value
        let name_end = line.find(['{', ' ']).expect("a name");
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // label name
                let (start, c) = chars.next().expect("label or }");
                if c == '}' {
                    end = Some(start + 1);
                    break;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|x| x.1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline"),
                        c => value.push(c),
                    }
                }
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{key}"
                );
                labels.insert(key, value);
                match chars.next().map(|x| x.1) {
                    Some(',') => {}
                    Some('}') => {
                        end = chars.peek().map(|x| x.0);
                        break;
                    }
                    other => panic!("expected , or }} got {other:?} in {line}"),
                }
            }
            rest = &r[end.expect("closing brace")..];
        }
        let value = rest.trim_start_matches(' ');
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?} in {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample before its TYPE: {line}");
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn find<'s>(samples: &'s [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'s Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

async fn serve_router(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn prometheus_text_parses_back() {
    let store = store().await;
    let odd = "crm \"main\" \\ eu\nwest";
    let conn = store
        .create_connection(NewConnection::new("hubspot", odd))
        .await
        .unwrap();
    run(
        &store,
        &conn,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (100, 90, 10),
    )
    .await;
    run(
        &store,
        &conn,
        SyncDirection::ToCrm,
        RunStatus::Failed,
        (0, 0, 0),
    )
    .await;

    // Real API traffic: one call answered, one a 404.
    let api = serve_router(
        Router::new()
            .route(
                "/ok",
                get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
            )
            .route("/missing", get(|| async { StatusCode::NOT_FOUND })),
    )
    .await;
    let client = crm_http::HttpClient::builder("hubspot")
        .base_url(&api)
        .build()
        .unwrap();
    let _: serde_json::Value = client
        .get_json("/ok", crm_http::RequestOptions::new("contacts.list"))
        .await
        .unwrap();
    let missing: crm_core::Result<serde_json::Value> = client
        .get_json("/missing", crm_http::RequestOptions::new("contacts.get"))
        .await;
    assert!(missing.is_err());

    let job =
        job("monitoring:\n  window: 2h\n  quotas:\n    hubspot: { requests: 1000, per: 1h }\n");
    let monitor = Monitor::new(store.clone(), MonitorConfig::from_job(&job).unwrap())
        .http_metrics(Arc::clone(client.metrics()));
    let now = Utc::now() + minutes(1);
    let text = monitor.render(now).await.unwrap();
    let samples = parse_prometheus(&text);

    let c = [("connection", odd), ("provider", "hubspot")];
    let lag = find(
        &samples,
        "crm_sync_lag_minutes",
        &[c[0], c[1], ("direction", "from_crm")],
    )
    .unwrap();
    assert!((1.0..=2.0).contains(&lag.value), "{lag:?}");
    assert_eq!(lag.labels["connection_id"], conn.as_str());
    let status = find(
        &samples,
        "crm_sync_health_status",
        &[c[0], ("direction", "from_crm")],
    )
    .unwrap();
    assert_eq!(status.value, 0.0);
    assert!(find(&samples, "crm_sync_lag_minutes", &[("direction", "to_crm")]).is_some());
    assert_eq!(
        find(&samples, "crm_sync_window_seconds", &[])
            .unwrap()
            .value,
        7200.0
    );
    assert_eq!(
        find(&samples, "crm_sync_records_per_hour", &c)
            .unwrap()
            .value,
        45.0
    );
    assert_eq!(
        find(&samples, "crm_sync_success_rate", &c).unwrap().value,
        0.9
    );
    assert_eq!(
        find(&samples, "crm_sync_failure_rate", &c).unwrap().value,
        0.1
    );
    assert_eq!(
        find(&samples, "crm_sync_run_failure_rate", &c)
            .unwrap()
            .value,
        0.5
    );
    assert_eq!(
        find(&samples, "crm_sync_runs", &[c[0], ("status", "failed")])
            .unwrap()
            .value,
        1.0
    );
    assert_eq!(
        find(
            &samples,
            "crm_sync_records",
            &[c[0], ("outcome", "success")]
        )
        .unwrap()
        .value,
        90.0
    );
    let p = [("provider", "hubspot")];
    assert_eq!(
        find(&samples, "crm_sync_api_error_rate", &p).unwrap().value,
        0.5
    );
    assert!(
        find(&samples, "crm_sync_api_latency_seconds", &p)
            .unwrap()
            .value
            > 0.0
    );
    assert_eq!(
        find(&samples, "crm_sync_api_quota_used_ratio", &p)
            .unwrap()
            .value,
        0.002
    );
    assert_eq!(
        find(&samples, "crm_sync_api_quota_limit", &p)
            .unwrap()
            .value,
        1000.0
    );
    // crm-http's own families come along, once.
    assert_eq!(
        find(
            &samples,
            "crm_http_requests_total",
            &[("provider", "hubspot"), ("endpoint", "contacts.list")]
        )
        .unwrap()
        .value,
        1.0
    );
    assert!(
        find(
            &samples,
            "crm_http_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some()
    );
    assert_eq!(text.matches("# TYPE crm_http_requests_total ").count(), 1);
    assert_eq!(text.matches("# TYPE crm_sync_lag_minutes ").count(), 1);

    // GET /metrics on the serve port.
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = Receiver::new(store.clone(), Verifiers::new()).monitor(Arc::new(monitor));
    let task = tokio::spawn(server.serve(receiver, async move {
        let _ = stopped.await;
    }));
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let served = parse_prometheus(&resp.text().await.unwrap());
    assert!(find(&served, "crm_sync_failure_rate", &c).is_some());
    assert!(find(&served, "crm_http_requests_total", &p).is_some());
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // Without a monitor the route renders the store with defaults.
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        server.serve(Receiver::new(store, Verifiers::new()), async move {
            let _ = stopped.await;
        }),
    );
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = parse_prometheus(&text);
    assert!(find(&served, "crm_sync_lag_minutes", &c).is_some());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A receiver that records notifications and fails the first `fail` calls.
#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<AlertNotification>>,
    calls: AtomicU32,
    fail: AtomicU32,
}

async fn inbox(fail: u32) -> (Arc<Inbox>, String) {
    let inbox = Arc::new(Inbox::default());
    inbox.fail.store(fail, Ordering::SeqCst);
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(ib): State<Arc<Inbox>>, axum::Json(n): axum::Json<AlertNotification>| async move {
                    ib.calls.fetch_add(1, Ordering::SeqCst);
                    if ib
                        .fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                        .is_ok()
                    {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    ib.got.lock().unwrap().push(n);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(Arc::clone(&inbox));
    let base = serve_router(router).await;
    (inbox, format!("{base}/hook"))
}

const ALERTS: &str = r"
alerts:
  - name: crm_sync_delay
    condition: lag_minutes > 60
    severity: high
    notification:
      - email: data-team@company.com
      - slack: #data-alerts
  - name: sync_failure_rate
    condition: failure_rate > 0.05
    severity: critical
    notification:
      - pagerduty: data-oncall
monitoring:
  webhook_url: ${MONITOR_TEST_HOOK}
  delivery: { attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 50, timeout_secs: 2 }
";

fn config_with_hook(url: &str) -> MonitorConfig {
    let yaml = ALERTS.replace("${MONITOR_TEST_HOOK}", url);
    let job = job(&yaml);
    assert_eq!(job.alerts.len(), 2);
    MonitorConfig::from_job(&job).unwrap()
}

#[tokio::test]
async fn an_alert_is_delivered_once_and_resolved_once() {
    let store = store().await;
    let conn = store
        .create_connection(NewConnection::new("hubspot", "main"))
        .await
        .unwrap();
    let t0 = run(
        &store,
        &conn,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (10, 10, 0),
    )
    .await;
    let (inbox, url) = inbox(0).await;
    let monitor = Monitor::new(store.clone(), config_with_hook(&url));

    let r = monitor.evaluate(t0 + minutes(60)).await.unwrap();
    assert!(r.notifications.is_empty());
    for m in [61, 75, 90, 200] {
        let r = monitor.evaluate(t0 + minutes(m)).await.unwrap();
        assert!(r.delivery_errors.is_empty(), "{:?}", r.delivery_errors);
        assert_eq!(r.pending, 0);
    }
    {
        let got = inbox.got.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        let n = &got[0];
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.alert, "crm_sync_delay");
        assert_eq!(n.severity.as_deref(), Some("high"));
        assert_eq!(n.condition, "lag_minutes > 60");
        assert_eq!(n.value, Some(61.0));
        assert_eq!(n.labels["connection"], "main");
        assert_eq!(n.labels["direction"], "from_crm");
        assert_eq!(n.notification.len(), 2);
        assert_eq!(n.notification[0]["email"], "data-team@company.com");
    }
    let text = monitor.render(t0 + minutes(200)).await.unwrap();
    let samples = parse_prometheus(&text);
    assert_eq!(
        find(
            &samples,
            "crm_sync_alerts_firing",
            &[("alert", "crm_sync_delay")]
        )
        .unwrap()
        .value,
        1.0
    );

    // A new sync clears it: one resolution, then quiet.
    let t1 = run(
        &store,
        &conn,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (10, 10, 0),
    )
    .await;
    for m in [1, 2, 30] {
        monitor.evaluate(t1 + minutes(m)).await.unwrap();
    }
    {
        let got = inbox.got.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].status, AlertStatus::Resolved);
        assert_eq!(got[1].fingerprint, got[0].fingerprint);
        assert_eq!(got[1].resolved_at, Some(t1 + minutes(1)));
        assert_eq!(got[1].started_at, t0 + minutes(61));
    }

    // The failure-rate rule fires per connection over the window.
    run(
        &store,
        &conn,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (100, 80, 20),
    )
    .await;
    let r = monitor.evaluate(Utc::now() + minutes(1)).await.unwrap();
    assert_eq!(r.notifications.len(), 1, "{:?}", r.notifications);
    let got = inbox.got.lock().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].alert, "sync_failure_rate");
    assert_eq!(got[2].status, AlertStatus::Firing);
    assert_eq!(got[2].notification[0]["pagerduty"], "data-oncall");
    assert!(inbox.calls.load(Ordering::SeqCst) == 3);
}

#[tokio::test]
async fn a_failing_receiver_does_not_break_evaluation() {
    let store = store().await;
    let conn = store
        .create_connection(NewConnection::new("pipedrive", "eu"))
        .await
        .unwrap();
    let t0 = run(
        &store,
        &conn,
        SyncDirection::FromCrm,
        RunStatus::Completed,
        (1, 1, 0),
    )
    .await;

    // Nobody listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://user:secret@{a}/hook")
    };
    let monitor = Monitor::new(store.clone(), config_with_hook(&closed));
    let r = monitor.evaluate(t0 + minutes(61)).await.unwrap();
    assert_eq!(r.notifications.len(), 1);
    assert_eq!(r.delivered, 0);
    assert_eq!(r.pending, 1);
    assert_eq!(r.delivery_errors.len(), 1);
    assert!(
        !r.delivery_errors[0].contains("secret"),
        "{:?}",
        r.delivery_errors
    );
    assert_eq!(r.health[0].status, HealthStatus::Critical);
    // Still evaluating: no repeat, the notification waits.
    let r = monitor.evaluate(t0 + minutes(62)).await.unwrap();
    assert!(r.notifications.is_empty());
    assert_eq!(r.pending, 1);

    // A receiver failing 4 calls: the first evaluation exhausts its 3
    // attempts, the next delivers after one more failure, exactly once.
    let (inbox, url) = inbox(4).await;
    let monitor = Monitor::new(store.clone(), config_with_hook(&url));
    let r = monitor.evaluate(t0 + minutes(61)).await.unwrap();
    assert_eq!((r.delivered, r.pending), (0, 1));
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 3);
    let r = monitor.evaluate(t0 + minutes(62)).await.unwrap();
    assert!(r.notifications.is_empty());
    assert_eq!((r.delivered, r.pending), (1, 0));
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 5);
    let r = monitor.evaluate(t0 + minutes(63)).await.unwrap();
    assert_eq!((r.delivered, r.pending), (0, 0));
    {
        let got = inbox.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, AlertStatus::Firing);
    }
    let samples = parse_prometheus(&monitor.render(t0 + minutes(63)).await.unwrap());
    assert_eq!(
        find(
            &samples,
            "crm_sync_alert_notifications_total",
            &[("outcome", "delivered")]
        )
        .unwrap()
        .value,
        1.0
    );

    // The scheduler's hook runs the same evaluation.
    let r = crm_sync::schedule::jobs::evaluate_alerts(&monitor, t0 + minutes(64))
        .await
        .unwrap();
    assert!(r.notifications.is_empty());
}
