//! The world the review desk tests share: a bookings pipeline on
//! PostgreSQL that leaves a probable match, a multiple match and a dead
//! letter, a bidirectional contacts sync with the HubSpot simulator that
//! leaves a three-field manual conflict, and the desk serving them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use crm_core::conflict::{ConflictConfig, ConflictPolicy};
use crm_core::mapping::Mapping;
use crm_core::matching::MatchingConfig;
use crm_core::model::Campaign;
use crm_core::validate::ValidationRules;
use crm_core::{
    Capabilities, Change, Connector, Cursor, FieldSchema, FieldType, ObjectSchema, Page,
    ReadRequest, Record, Result, Source, Value, WriteBatch, WriteOp,
};
use crm_hubspot::HubSpot;
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
use crm_sim::{SimHandle, SimServer};
use crm_sql::state::{CredentialKey, ReviewItem, ReviewReason, StateStore};
use crm_sql::{SqlConfig, SqlConnector};
use crm_sync::access::{Role, Tokens};
use crm_sync::bidi::{BidiConfig, BidiSync, CreateWith, SideConfig};
use crm_sync::pipeline::CampaignMatching;
use crm_sync::review::{BidiResolver, MatchTarget, RetryWriter, ReviewDesk};
use crm_sync::schedule::jobs::RetryTarget;
use crm_sync::serve::Server;
use crm_sync::state::SqlState;
use crm_sync::{Mode, Pipeline, RunReport};
use futures_util::TryStreamExt;
use futures_util::stream::{self, BoxStream, StreamExt};
use secrecy::SecretString;

use crate::support::{Db, hubspot_client};

pub(crate) const OPERATOR_TOKEN: &str = "operator-token-0123456789";
pub(crate) const VIEWER_TOKEN: &str = "viewer-token-0123456789ab";

pub(crate) struct Bookings(pub(crate) Vec<Record>);

#[async_trait]
impl Connector for Bookings {
    fn kind(&self) -> &'static str {
        "bookings"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        Ok(ObjectSchema::new(object))
    }
}

impl Source for Bookings {
    fn read<'a>(&'a self, _req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let page = Page {
            changes: self.0.iter().cloned().map(Change::Upsert).collect(),
            cursor: Cursor::from_state(&self.0.len()).unwrap(),
        };
        stream::iter(vec![Ok(page)]).boxed()
    }
}

const RULES: &str = r#"
booking_id: { type: "string", required: true }
budget: { type: "decimal", min: 0 }
"#;

const MATCHING: &str = r#"
strategies:
  - {type: "exact_id", source: "booking.campaign_id", target: "campaign.id", priority: 1}
  - {type: "name_match", source: "booking.campaign_name", target: "campaign.name", algorithm: "fuzzy", threshold: 0.85, priority: 2}
on_no_match: "create_unmatched_record"
on_multiple_match: "flag_for_review"
"#;

fn campaign(id: &str, name: &str) -> Campaign {
    let r = Record::new()
        .with("campaign_id", id)
        .with("name", name)
        .with("advertiser_name", "Acme");
    Campaign::try_from(&r).unwrap()
}

pub(crate) fn campaigns() -> Vec<Campaign> {
    vec![
        campaign("C-SPRING", "Spring Sale"),
        campaign("C-SUMMER", "Summer Promos"),
        campaign("C-AUT-1", "Autumn Launch"),
        campaign("C-AUT-2", "autumn launch!"),
        campaign("C-WINTER", "Winter Clearance 2024"),
    ]
}

fn booking(id: &str, name: &str, budget: &str) -> Record {
    Record::new()
        .with("booking_id", id)
        .with("campaign_name", name)
        .with("advertiser_name", "Acme")
        .with("budget", budget)
}

/// BK-1 and BK-5 match probably, BK-2 twice (multiple), BK-3 exactly;
/// BK-4 fails validation (a negative budget).
pub(crate) fn bookings() -> Vec<Record> {
    vec![
        booking("BK-1", "Summer Promo", "1200.50"),
        booking("BK-2", "Autumn Launch", "900.00"),
        booking("BK-3", "Spring Sale", "300.00"),
        booking("BK-4", "Winter Clearence", "-5"),
        booking("BK-5", "Sumer Promos", "75.00"),
    ]
}

fn bookings_table() -> ObjectSchema {
    ObjectSchema::new("bookings")
        .field(
            FieldSchema::new("booking_id", FieldType::Text)
                .required()
                .max_length(40),
        )
        .field(FieldSchema::new("campaign_name", FieldType::Text).max_length(80))
        .field(FieldSchema::new("advertiser_name", FieldType::Text).max_length(80))
        .field(FieldSchema::new("budget", FieldType::Decimal).scale(2))
        .field(FieldSchema::new("campaign_id", FieldType::Text).max_length(40))
        .field(FieldSchema::new("match_status", FieldType::Text).max_length(20))
        .primary_key(["booking_id"])
}

const CONTACT_MAPPING: &str = r#"
- {source: email, target: email, direction: bidirectional}
- {source: first_name, target: firstname, direction: bidirectional}
- {source: last_name, target: lastname, direction: bidirectional}
- {source: phone, target: phone, direction: bidirectional}
- {source: lifecycle, target: lifecyclestage, direction: bidirectional}
"#;

pub(crate) const BIDI_CONNECTION: &str = "pg<->hubspot";

pub(crate) fn contacts_config() -> BidiConfig {
    BidiConfig::new(
        "contacts",
        SideConfig::new("contacts", CreateWith::derived_id("id", "hs-")),
        SideConfig::new("contacts", CreateWith::upsert_key("email")).page_size(10),
        Mapping::from_yaml(CONTACT_MAPPING).unwrap(),
    )
    .conflicts(
        ConflictConfig::new(ConflictPolicy::NewestWins)
            .field("first_name", ConflictPolicy::Manual)
            .field("phone", ConflictPolicy::Manual)
            .field("lifecycle", ConflictPolicy::Manual),
    )
    .match_key("email")
}

/// Records the bookings the desk hands to its after-match hook (where a
/// job's write-back runs).
#[derive(Default)]
pub(crate) struct Hooked(pub(crate) std::sync::Mutex<Vec<Record>>);

#[async_trait]
impl crm_sync::review::AfterMatch for Hooked {
    async fn after_match(&self, record: &Record) -> Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

pub(crate) struct World {
    pub(crate) db: Db,
    pub(crate) hooked: Arc<Hooked>,
    pub(crate) store: StateStore,
    pub(crate) sink: SqlConnector,
    pub(crate) platform: SqlConnector,
    pub(crate) sim: SimHandle,
    pub(crate) hubspot: Arc<HubSpot>,
    pub(crate) base: String,
    server: tokio::task::JoinHandle<()>,
}

impl World {
    /// Builds everything and serves the desk on a free port.
    pub(crate) async fn start(tag: &str) -> Option<World> {
        let db = Db::create("crm_review", tag).await?;
        let sink = SqlConnector::connect_url(&db.url).await.unwrap();
        sink.create_table(&bookings_table()).await.unwrap();
        let store = StateStore::open_url(&db.url, CredentialKey::from_bytes([5; 32]))
            .await
            .unwrap();
        let report = run_bookings(&store, &sink).await;
        assert_eq!(report.matched("probable"), 2, "{report:?}");
        assert_eq!(report.matched("multiple"), 1, "{report:?}");
        assert_eq!(report.invalid, 1, "{report:?}");

        let platform = SqlConnector::connect(
            &SqlConfig::builder()
                .url(db.url.clone())
                .cursor_column("updated_at")
                .primary_key(["id"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        platform
            .execute_unprepared(
                "CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
                 first_name TEXT, last_name TEXT, phone TEXT, lifecycle TEXT, \
                 updated_at TIMESTAMPTZ NOT NULL)",
            )
            .await
            .unwrap();
        let mut sim_config = HubSpotSimConfig::default();
        sim_config.per_window = 1000;
        let sim = SimServer::new(HubSpotSimulator::new(sim_config))
            .start()
            .await
            .unwrap();
        let hubspot = Arc::new(hubspot_client(&sim));
        make_conflict(&platform, &hubspot, &store).await;

        let mut tokens = Tokens::new();
        tokens.add("alice", Role::Operator, &SecretString::from(OPERATOR_TOKEN));
        tokens.add("victor", Role::Viewer, &SecretString::from(VIEWER_TOKEN));
        let sink_dyn: Arc<dyn crm_core::Sink> = Arc::new(sink.clone());
        let hooked = Arc::new(Hooked::default());
        let desk = ReviewDesk::new(store.clone(), tokens)
            .matches(
                MatchTarget::new(Arc::clone(&sink_dyn), "bookings", "booking_id")
                    .after(Arc::clone(&hooked) as Arc<dyn crm_sync::review::AfterMatch>),
            )
            .campaigns(campaigns())
            .conflicts(
                "contacts",
                Arc::new(BidiResolver::new(
                    Arc::new(platform.clone()),
                    Arc::clone(&hubspot) as Arc<dyn crm_sync::bidi::Endpoint>,
                    store.clone(),
                    BIDI_CONNECTION,
                    contacts_config(),
                )),
            )
            .retries(RetryWriter::new(
                sink_dyn,
                RetryTarget::new("bookings")
                    .key_field("booking_id")
                    .validation(Some(ValidationRules::from_yaml(RULES).unwrap())),
            ));
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let server = tokio::spawn(async move {
            let _ = server
                .serve_router(desk.router(), std::future::pending())
                .await;
        });
        Some(World {
            db,
            hooked,
            store,
            sink,
            platform,
            sim,
            hubspot,
            base,
            server,
        })
    }

    pub(crate) async fn stop(self) {
        self.server.abort();
        self.store.close().await;
        self.sink.close().await;
        self.platform.close().await;
        self.db.drop().await;
    }

    /// The open review items of a reason, by record key.
    pub(crate) async fn open(&self, reason: ReviewReason) -> BTreeMap<String, ReviewItem> {
        self.store
            .open_reviews(1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.reason == reason)
            .map(|i| (i.record_id.clone(), i))
            .collect()
    }

    /// `bookings` rows: key -> (campaign_id, match_status, budget).
    pub(crate) async fn booking_rows(&self) -> BTreeMap<String, (String, String, String)> {
        let cfg = SqlConfig::builder()
            .url(self.db.url.clone())
            .query(
                "SELECT booking_id, campaign_id, match_status, budget, now() AS updated_at \
                 FROM bookings",
            )
            .primary_key(["booking_id"])
            .build()
            .unwrap();
        let source = SqlConnector::connect(&cfg).await.unwrap();
        let pages: Vec<Page> = source
            .read(ReadRequest::full("bookings"))
            .try_collect()
            .await
            .unwrap();
        source.close().await;
        pages
            .into_iter()
            .flat_map(|p| p.changes)
            .filter_map(|c| match c {
                Change::Upsert(r) => Some((
                    text(r.get("booking_id")),
                    (
                        text(r.get("campaign_id")),
                        text(r.get("match_status")),
                        text(r.get("budget")),
                    ),
                )),
                Change::Delete { .. } => None,
            })
            .collect()
    }

    /// The contact on the platform and in HubSpot: field -> value each.
    pub(crate) async fn contact(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let pages: Vec<Page> = self
            .platform
            .read(ReadRequest::full("contacts"))
            .try_collect()
            .await
            .unwrap();
        let pl = first_upsert(pages);
        let editor = hubspot_client(&self.sim);
        let pages: Vec<Page> = editor
            .read(ReadRequest::full("contacts").fields([
                "email",
                "firstname",
                "lastname",
                "phone",
                "lifecyclestage",
            ]))
            .try_collect()
            .await
            .unwrap();
        let hs = first_upsert(pages);
        let names = [
            ("first_name", "firstname"),
            ("last_name", "lastname"),
            ("phone", "phone"),
            ("lifecycle", "lifecyclestage"),
        ];
        (
            names
                .iter()
                .map(|(p, _)| (p.to_string(), text(pl.get(p))))
                .collect(),
            names
                .iter()
                .map(|(p, h)| (p.to_string(), text(hs.get(h))))
                .collect(),
        )
    }

    /// Audit entries of a record with this action.
    pub(crate) async fn audited(
        &self,
        object: &str,
        record: &str,
        action: &str,
    ) -> Vec<crm_sql::state::AuditEntry> {
        self.store
            .audit_log(object, record, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }
}

/// The first record upserted in `pages`.
fn first_upsert(pages: Vec<Page>) -> Record {
    pages
        .into_iter()
        .flat_map(|p| p.changes)
        .find_map(|c| match c {
            Change::Upsert(r) => Some(r),
            Change::Delete { .. } => None,
        })
        .unwrap()
}

pub(crate) fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => t.clone(),
        Some(other) => other.to_json().to_string().trim_matches('"').to_owned(),
    }
}

/// One run of the bookings pipeline into `bookings`.
pub(crate) async fn run_bookings(store: &StateStore, sink: &SqlConnector) -> RunReport {
    let state = SqlState::open(store.clone(), "bookings").await.unwrap();
    let source = Bookings(bookings());
    let matching = Arc::new(CampaignMatching::new(
        &MatchingConfig::from_yaml(MATCHING).unwrap(),
        campaigns(),
    ));
    Pipeline::new("bookings", "bookings", &source, sink, &state)
        .destination_object("bookings")
        .key_field("booking_id")
        .validation(ValidationRules::from_yaml(RULES).unwrap())
        .matcher(matching)
        .run(Mode::Full)
        .await
        .unwrap()
}

async fn write_one(sink: &dyn crm_core::Sink, batch: WriteBatch) {
    let out = sink.write("contacts", batch).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
}

/// Ann is synced, then both sides change her first name, phone and
/// lifecycle (all three under the manual policy): one review item.
async fn make_conflict(platform: &SqlConnector, hubspot: &HubSpot, store: &StateStore) {
    let ann = Record::new()
        .with("id", "pg-1")
        .with("email", "ann@example.com")
        .with("first_name", "Ann")
        .with("last_name", "Lee")
        .with("phone", "+14155550100")
        .with("lifecycle", "lead")
        .with_updated_at(Utc::now());
    write_one(platform, WriteBatch::upsert("id", vec![ann])).await;
    let sync = BidiSync::open(platform, hubspot, store, BIDI_CONNECTION, contacts_config())
        .await
        .unwrap();
    sync.round().await.unwrap();
    let pages: Vec<Page> = hubspot
        .read(ReadRequest::full("contacts").fields(["email"]))
        .try_collect()
        .await
        .unwrap();
    let hs_id = first_upsert(pages).id.unwrap();
    let edit = Record::new()
        .with_id("pg-1")
        .with("first_name", "Annie")
        .with("phone", "+14155550111")
        .with("lifecycle", "customer")
        .with_updated_at(Utc::now());
    write_one(platform, WriteBatch::new(WriteOp::Update, vec![edit])).await;
    let edit = Record::new()
        .with_id(hs_id)
        .with("firstname", "Anna")
        .with("phone", "+14155550222")
        .with("lifecyclestage", "opportunity");
    write_one(hubspot, WriteBatch::new(WriteOp::Update, vec![edit])).await;
    let report = sync.round().await.unwrap();
    assert_eq!(report.sent_to_review, 1, "{report:?}");
}
