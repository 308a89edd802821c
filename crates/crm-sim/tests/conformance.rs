//! The behaviour suite run against the generic simulator with a small
//! generic connector built on crm-http, and shown to catch broken
//! connectors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_core::{
    Capabilities, Change, Connector, Cursor, Error, ErrorKind, ObjectSchema, Page, ReadRequest,
    Record, RecordId, Result, Sink, Source, Value, WriteBatch, WriteOp, WriteOutcome,
};
use crm_http::reqwest::Method;
use crm_http::secrecy::SecretString;
use crm_http::{Auth, HttpClient, RateLimitConfig, RefreshTokenFlow, RequestOptions, RetryPolicy};
use crm_sim::conformance::{self, Harness, Verdict};
use crm_sim::generic::{GenericConfig, GenericSimulator};
use crm_sim::store::Fields;
use crm_sim::{SimContext, SimHandle, SimServer, Window};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// Ways a connector can be wrong, each one a pitfall seen in real connectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Correct,
    /// Pages and resumes by timestamp with `>`: ties at a page cut are lost.
    TimestampCursor,
    /// Reports every upserted record as updated.
    AlwaysUpdated,
    /// Ignores `has_more` and reads until an empty page.
    ReadsUntilEmpty,
    /// Forgets deleted records in incremental reads.
    NoDeletes,
    /// Sends as fast as it can.
    Unthrottled,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CursorState {
    after: Option<String>,
    since: Option<DateTime<Utc>>,
}

struct GenericConnector {
    http: HttpClient,
    variant: Variant,
}

fn to_record(r: &Json) -> Result<Change> {
    let bad = || Error::new(ErrorKind::SchemaMismatch, "record without id");
    let id = RecordId::new(r["id"].as_str().ok_or_else(bad)?);
    let parse = |v: &Json| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if !r["deleted_at"].is_null() {
        return Ok(Change::Delete {
            id,
            at: parse(&r["deleted_at"]),
        });
    }
    let mut rec = Record::new().with_id(id);
    rec.updated_at = parse(&r["updated_at"]);
    if let Some(fields) = r["fields"].as_object() {
        for (k, v) in fields {
            rec.set(k.clone(), Value::from_json(v.clone()));
        }
    }
    Ok(Change::Upsert(rec))
}

impl GenericConnector {
    async fn page(
        &self,
        object: &str,
        state: &CursorState,
        limit: usize,
        deletes: bool,
    ) -> Result<(Vec<Change>, CursorState, bool)> {
        let mut q = vec![("limit".to_owned(), limit.to_string())];
        if let Some(a) = &state.after {
            q.push(("after".into(), a.clone()));
        }
        if let Some(s) = &state.since {
            q.push((
                "since".into(),
                s.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ));
        }
        if deletes {
            q.push(("include_deleted".into(), "true".into()));
        }
        let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body: Json = self
            .http
            .get_json(
                &format!("/objects/{object}?{}", query.join("&")),
                RequestOptions::new("objects.list"),
            )
            .await?;
        let records = body["records"].as_array().cloned().unwrap_or_default();
        let changes = records.iter().map(to_record).collect::<Result<Vec<_>>>()?;
        let has_more = body["has_more"].as_bool().unwrap_or(false);
        let next = match self.variant {
            Variant::TimestampCursor => {
                let last = records
                    .last()
                    .and_then(|r| r["deleted_at"].as_str().or(r["updated_at"].as_str()))
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc) + chrono::Duration::milliseconds(1));
                CursorState {
                    after: None,
                    since: last.or(state.since),
                }
            }
            _ => CursorState {
                after: body["next_after"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| state.after.clone()),
                since: None,
            },
        };
        let more = match self.variant {
            Variant::ReadsUntilEmpty => !changes.is_empty(),
            _ => has_more,
        };
        Ok((changes, next, more))
    }
}

#[async_trait]
impl Connector for GenericConnector {
    fn kind(&self) -> &'static str {
        "generic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().incremental().deletes().upsert()
    }

    async fn check(&self) -> Result<()> {
        let _: Json = self
            .http
            .get_json("/objects/_check?limit=1", RequestOptions::new("check"))
            .await?;
        Ok(())
    }

    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(ObjectSchema::new(object))
    }
}

impl Source for GenericConnector {
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let limit = req.page_size.unwrap_or(100);
        let incremental = req.since.is_some();
        let deletes = incremental && self.variant != Variant::NoDeletes;
        let object = req.object.clone();
        let start = match &req.since {
            None => Ok(CursorState::default()),
            Some(c) => c.to_state::<CursorState>(),
        };
        futures_util::stream::try_unfold((start, false), move |(state, done)| {
            let object = object.clone();
            async move {
                let state = state?;
                if done {
                    return Ok(None);
                }
                let (changes, next, more) = self.page(&object, &state, limit, deletes).await?;
                let cursor = Cursor::from_state(&next)?;
                Ok(Some((Page { changes, cursor }, (Ok(next), !more))))
            }
        })
        .boxed()
    }
}

#[async_trait]
impl Sink for GenericConnector {
    fn max_batch(&self, _object: &str) -> usize {
        100
    }

    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let WriteOp::Upsert { key } = &batch.op else {
            return Err(Error::invalid_input("the generic connector only upserts"));
        };
        let records: Vec<Json> = batch
            .records
            .iter()
            .map(|r| {
                Json::Object(
                    r.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_json()))
                        .collect(),
                )
            })
            .collect();
        let body: Json = self
            .http
            .send_json(
                Method::POST,
                &format!("/objects/{object}/batch"),
                &json!({"key": key, "records": records}),
                RequestOptions::new("objects.upsert").idempotent(true),
            )
            .await?;
        let results = body["results"].as_array().cloned().unwrap_or_default();
        if results.len() != batch.len() {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                "one result per record expected",
            ));
        }
        Ok(results
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let id = RecordId::new(r["id"].as_str().unwrap_or_default());
                match (r["status"].as_str(), self.variant) {
                    (Some("created"), _) => WriteOutcome::Created(id),
                    (Some("updated"), _) | (Some("unchanged"), Variant::AlwaysUpdated) => {
                        WriteOutcome::Updated(id)
                    }
                    (Some("unchanged"), _) => WriteOutcome::Unchanged(id),
                    _ => {
                        let code = r["error"]["code"].as_str().unwrap_or("error");
                        let mut error = Error::invalid_input(format!("rejected: {code}"));
                        if r["error"]["retryable"].as_bool() == Some(true) {
                            error = Error::new(ErrorKind::Transient, format!("rejected: {code}"));
                        }
                        WriteOutcome::Rejected { index, error }
                    }
                }
            })
            .collect())
    }
}

struct GenericHarness {
    sim: SimHandle,
    variant: Variant,
    limit: Window,
}

const PAGE: usize = 5;
const BATCH: usize = 5;

impl GenericHarness {
    async fn start(variant: Variant) -> Self {
        let limit = Window::per_second(20);
        let config = GenericConfig::default()
            .page_size(PAGE, 50)
            .batch_max(BATCH)
            .rate_limits(vec![limit.clone()]);
        let sim = SimServer::new(GenericSimulator::new(config))
            .seed(9)
            .start()
            .await
            .unwrap();
        GenericHarness {
            sim,
            variant,
            limit,
        }
    }

    fn connector(&self) -> Arc<GenericConnector> {
        let creds = self.sim.credentials();
        let flow = RefreshTokenFlow::new(
            creds["token_url"].as_str().unwrap().parse().unwrap(),
            creds["client_id"].as_str().unwrap(),
            SecretString::from(creds["refresh_token"].as_str().unwrap().to_owned()),
        )
        .client_secret(SecretString::from(
            creds["client_secret"].as_str().unwrap().to_owned(),
        ));
        let mut builder = HttpClient::builder("generic")
            .base_url(self.sim.base_url())
            .auth(Auth::oauth(flow))
            .timeout(Duration::from_millis(1500))
            .retry(
                RetryPolicy::default()
                    .initial_backoff(Duration::from_millis(20))
                    .max_backoff(Duration::from_millis(300)),
            );
        if self.variant != Variant::Unthrottled {
            builder = builder.rate_limit(RateLimitConfig::new(self.limit.limit, self.limit.period));
        }
        Arc::new(GenericConnector {
            http: builder.build().unwrap(),
            variant: self.variant,
        })
    }
}

fn fields(v: Json) -> Fields {
    v.as_object().cloned().unwrap()
}

#[async_trait]
impl Harness for GenericHarness {
    fn sim(&self) -> &SimContext {
        self.sim.context()
    }

    fn object(&self) -> &str {
        "contacts"
    }

    fn source(&self) -> Arc<dyn Source> {
        self.connector()
    }

    fn sink(&self) -> Option<Arc<dyn Sink>> {
        Some(self.connector())
    }

    fn page_size(&self) -> usize {
        PAGE
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    fn key_field(&self) -> &str {
        "email"
    }

    fn seed_fields(&self, i: usize) -> Fields {
        fields(json!({"email": format!("seed{i}@example.com"), "score": i}))
    }

    fn update_fields(&self, i: usize) -> Fields {
        fields(json!({"score": 1000 + i}))
    }

    fn record(&self, i: usize, version: u32) -> Record {
        Record::new()
            .with("email", format!("w{i}@example.com"))
            .with("version", i64::from(version))
    }

    fn invalid_record(&self, i: usize) -> Option<Record> {
        Some(Record::new().with("email", format!("not-an-email-{i}")))
    }

    fn rate_limits(&self) -> Vec<Window> {
        vec![self.limit.clone()]
    }

    fn chaos_delay(&self) -> Duration {
        // Longer than the client's timeout: slow responses time out and retry.
        Duration::from_millis(1800)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_connector_passes_the_whole_suite() {
    let harness = GenericHarness::start(Variant::Correct).await;
    let report = conformance::run_all(&harness, 1..=50).await;
    eprintln!("{report}");
    report.assert_passed();
    assert!(
        report.results.iter().all(|(_, v)| *v == Verdict::Passed),
        "{report}"
    );
}

async fn verdict_of(variant: Variant, behaviour: &str) -> Verdict {
    let h = GenericHarness::start(variant).await;
    h.reset().await;
    let outcome = match behaviour {
        "full_read" => conformance::full_read(&h).await,
        "incremental_read" => conformance::incremental_read(&h).await,
        "shared_timestamp_page_boundary" => conformance::shared_timestamp_page_boundary(&h).await,
        "upsert_twice_unchanged" => conformance::upsert_twice_unchanged(&h).await,
        "rate_limit_respected" => conformance::rate_limit_respected(&h).await,
        "minimal_calls" => conformance::minimal_calls(&h).await,
        other => panic!("no behaviour {other}"),
    };
    match outcome {
        Ok(None) => Verdict::Passed,
        Ok(Some(s)) => Verdict::Skipped(s),
        Err(f) => Verdict::Failed(f.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_broken_connectors() {
    let cases = [
        (Variant::TimestampCursor, "shared_timestamp_page_boundary"),
        (Variant::AlwaysUpdated, "upsert_twice_unchanged"),
        (Variant::ReadsUntilEmpty, "minimal_calls"),
        (Variant::NoDeletes, "incremental_read"),
        (Variant::Unthrottled, "rate_limit_respected"),
    ];
    for (variant, behaviour) in cases {
        let v = verdict_of(variant, behaviour).await;
        assert!(
            matches!(v, Verdict::Failed(_)),
            "{variant:?} passed {behaviour}: {v:?}"
        );
        // The same connector passes an unrelated behaviour: the failure is specific.
        let other = verdict_of(variant, "full_read").await;
        assert_eq!(other, Verdict::Passed, "{variant:?} full_read");
    }
}
