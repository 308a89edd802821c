//! Seed 002's social enrichment against the Salesforce, HubSpot and
//! Pipedrive simulators: the fields land where the seed says, enriching
//! again with the same data sends no write at all (counted on the
//! simulators' request logs) and never adds a second note, a changed
//! value writes exactly that field, and a missing custom field is named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crm_core::{ErrorKind, Record, RecordId, Sink, WriteBatch, WriteOp, WriteOutcome};
use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator, custom_property};
use crm_hubspot::{HubSpot, HubSpotConfig};
use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator};
use crm_pipedrive::{ObjectKind, Pipedrive, PipedriveConfig};
use crm_salesforce::sim::{SalesforceSimConfig, SalesforceSimulator, SimControl};
use crm_salesforce::{Credentials, LoginHost, SalesforceConfig, SalesforceConnector};
use crm_sim::store::Deleted;
use crm_sim::{SimHandle, SimServer};
use crm_sync::enrich::{
    EnrichReport, EnrichTarget, Enrichment, NOTE_MARKER, NoteOutcome, PipedriveEnrichmentFields,
    SocialPlatform, SocialProfile, enrich, hubspot_fields, pipedrive_fields, pipedrive_note,
    salesforce_fields,
};
use secrecy::SecretString;
use serde_json::{Value as Json, json};

/// The seed's example profile plus an Instagram one, a score, touchpoints
/// and sentiment.
fn seed_enrichment() -> Enrichment {
    Enrichment::from_json(&json!({
        "email": "john@example.com",
        "firstName": "John",
        "socialProfiles": [
            {"platform": "twitter", "username": "johndoe",
             "url": "https://twitter.com/johndoe", "followers": 5000, "engagement": 250},
            {"platform": "instagram", "username": "john.doe",
             "url": "https://instagram.com/john.doe", "followers": 1200, "engagement": 80}
        ],
        "engagementScore": 85,
        "touchpoints": 12,
        "sentiment": "positive"
    }))
    .unwrap()
}

/// The same with Twitter's follower count changed.
fn with_twitter_followers(mut e: Enrichment, n: u64) -> Enrichment {
    for p in &mut e.profiles {
        if p.platform == SocialPlatform::Twitter {
            p.followers = Some(n);
        }
    }
    e
}

/// Requests after `from` that change data: every method but GET, OAuth
/// token calls left out.
fn writes(sim: &SimHandle, from: usize) -> Vec<String> {
    sim.request_log()
        .entries()
        .into_iter()
        .skip(from)
        .filter(|e| e.method != "GET" && !e.path.contains("oauth"))
        .map(|e| format!("{} {}", e.method, e.path))
        .collect()
}

fn number(v: Option<&Json>) -> Option<f64> {
    v.and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
}

async fn created(sink: &dyn Sink, object: &str, record: Record) -> RecordId {
    let out = sink
        .write(object, WriteBatch::new(WriteOp::Create, vec![record]))
        .await
        .unwrap();
    match out.into_iter().next() {
        Some(WriteOutcome::Created(id)) => id,
        other => panic!("create of {object}: {other:?}"),
    }
}

/// Enriches with `e` twice more: the same data writes nothing, then a
/// changed follower count writes exactly `changed`.
async fn assert_idempotent(
    sim: &SimHandle,
    target: &EnrichTarget<'_>,
    object: &str,
    id: &RecordId,
    changed: &str,
) -> EnrichReport {
    let seq = sim.request_log().len();
    let again = enrich(target, object, id, &seed_enrichment())
        .await
        .unwrap();
    assert!(again.is_unchanged(), "{again:?}");
    assert!(again.written_fields.is_empty());
    assert_eq!(writes(sim, seq), Vec::<String>::new(), "no write request");

    let seq = sim.request_log().len();
    let more = with_twitter_followers(seed_enrichment(), 5100);
    let report = enrich(target, object, id, &more).await.unwrap();
    assert_eq!(report.written_fields, [changed]);
    assert_eq!(writes(sim, seq).len(), 1, "{:?}", writes(sim, seq));
    report
}

// ---------------------------------------------------------------- pure

#[test]
fn seed_json_reads_and_bad_input_names_the_field() {
    let e = seed_enrichment();
    assert_eq!(e.profiles.len(), 2);
    assert_eq!(
        e.profiles[0],
        SocialProfile::new("twitter", "johndoe")
            .with_url("https://twitter.com/johndoe")
            .with_followers(5000)
            .with_engagement(250)
    );
    assert_eq!(e.engagement_score, Some(85));
    assert_eq!(e.primary(), Some(&SocialPlatform::Twitter));

    let bad = |body: Json, field: &str| {
        let err = Enrichment::from_json(&body).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidInput, "{err}");
        assert_eq!(err.context_value("field"), Some(field), "{err}");
    };
    bad(
        json!({"socialProfiles": [{"platform": "twitter", "username": "a", "followers": -5}]}),
        "socialProfiles[0].followers",
    );
    bad(
        json!({"socialProfiles": [], "engagementScore": 150}),
        "engagementScore",
    );
    bad(json!({"engagementScore": 300}), "engagementScore");
    bad(
        json!({"socialProfiles": [{"platform": "twitter", "username": "a"},
                                  {"platform": "instagram", "username": " @ "}]}),
        "socialProfiles[1].username",
    );
    bad(
        json!({"socialProfiles": [{"platform": "twitter", "username": "a", "url": "twitter.com/a"}]}),
        "socialProfiles[0].url",
    );
    bad(
        json!({"socialProfiles": [{"platform": "twitter", "username": "a"},
                                  {"platform": "X", "username": "b"}]}),
        "socialProfiles[1].platform",
    );
    // Typed construction is checked the same way.
    let err = Enrichment::new(vec![])
        .with_engagement_score(101)
        .validate()
        .unwrap_err();
    assert_eq!(err.context_value("field"), Some("engagementScore"));
}

#[test]
fn provider_fields_follow_the_seed() {
    let e = seed_enrichment();
    let sf = salesforce_fields(&e);
    let names: Vec<&str> = sf.fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "twitter_username__c",
            "twitter_url__c",
            "twitter_followers__c",
            "instagram_username__c",
            "instagram_url__c",
            "instagram_followers__c",
            "social_engagement_score__c",
            "social_touchpoints__c",
        ]
    );
    assert_eq!(sf.text("instagram_username__c"), Some("john.doe"));

    let hs = hubspot_fields(&e);
    let names: Vec<&str> = hs.fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "twitter_username",
            "twitter_url",
            "twitter_followers",
            "instagram_username",
            "instagram_url",
            "instagram_followers",
            "social_engagement_score",
            "social_platform",
            "social_sentiment",
        ]
    );
    assert_eq!(hs.text("social_platform"), Some("twitter"));

    let keys = PipedriveEnrichmentFields::new()
        .with_engagement_score("a".repeat(40))
        .with_primary_platform("b".repeat(40))
        .with_profile_url("c".repeat(40));
    let pd = pipedrive_fields(&e, &keys);
    assert_eq!(pd.fields.len(), 3);
    assert_eq!(
        pd.text(&"c".repeat(40)),
        Some("https://twitter.com/johndoe")
    );

    let mut reversed = e.clone();
    reversed.profiles.reverse();
    assert_eq!(pipedrive_note(&e), pipedrive_note(&reversed), "stable text");
    assert!(pipedrive_note(&e).starts_with(NOTE_MARKER));
}

// ---------------------------------------------------------------- Salesforce

async fn salesforce() -> (SimHandle, SimControl, SalesforceConnector) {
    let simulator = SalesforceSimulator::new(SalesforceSimConfig::default());
    let control = simulator.control();
    let sim = SimServer::new(simulator).start().await.unwrap();
    let creds = sim.credentials();
    let sf = SalesforceConnector::new(
        SalesforceConfig::builder(
            LoginHost::MyDomain(sim.base_url().parse().unwrap()),
            Credentials::RefreshToken {
                client_id: creds["client_id"].as_str().unwrap().into(),
                client_secret: Some(SecretString::from(
                    creds["client_secret"].as_str().unwrap().to_owned(),
                )),
                refresh_token: SecretString::from(
                    creds["refresh_token"].as_str().unwrap().to_owned(),
                ),
            },
        )
        .build()
        .unwrap(),
    )
    .unwrap();
    (sim, control, sf)
}

fn john_sf() -> Record {
    Record::new()
        .with("FirstName", "John")
        .with("LastName", "Doe")
        .with("Email", "john@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_contact_is_enriched_once() {
    let (sim, _control, sf) = salesforce().await;
    let id = created(&sf, "Contact", john_sf()).await;
    let target = EnrichTarget::Salesforce(&sf);

    let seq = sim.request_log().len();
    let first = enrich(&target, "Contact", &id, &seed_enrichment())
        .await
        .unwrap();
    assert_eq!(first.written_fields.len(), 8, "{first:?}");
    assert_eq!(first.note, NoteOutcome::None);
    assert_eq!(writes(&sim, seq).len(), 1, "one update");
    let stored = sim.context().store().get_live("Contact", &id).unwrap();
    assert_eq!(stored.text("twitter_username__c"), Some("johndoe"));
    assert_eq!(
        stored.text("twitter_url__c"),
        Some("https://twitter.com/johndoe")
    );
    assert_eq!(number(stored.field("twitter_followers__c")), Some(5000.0));
    assert_eq!(stored.text("instagram_username__c"), Some("john.doe"));
    assert_eq!(number(stored.field("instagram_followers__c")), Some(1200.0));
    assert_eq!(
        number(stored.field("social_engagement_score__c")),
        Some(85.0)
    );
    assert_eq!(number(stored.field("social_touchpoints__c")), Some(12.0));
    assert_eq!(stored.text("LastName"), Some("Doe"), "other fields kept");

    assert_idempotent(&sim, &target, "Contact", &id, "twitter_followers__c").await;
    let stored = sim.context().store().get_live("Contact", &id).unwrap();
    assert_eq!(number(stored.field("twitter_followers__c")), Some(5100.0));
    assert_eq!(number(stored.field("instagram_followers__c")), Some(1200.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_lead_gets_the_same_fields() {
    let (sim, _control, sf) = salesforce().await;
    let lead = john_sf().with("Company", "Acme Inc");
    let id = created(&sf, "Lead", lead).await;
    let target = EnrichTarget::Salesforce(&sf);
    let mut e = seed_enrichment().with_primary_platform("linkedin");
    e.profiles.push(
        SocialProfile::new("linkedin", "john-doe").with_url("https://linkedin.com/in/john-doe"),
    );
    let first = enrich(&target, "Lead", &id, &e).await.unwrap();
    assert_eq!(first.written_fields.len(), 10, "{first:?}");
    let stored = sim.context().store().get_live("Lead", &id).unwrap();
    assert_eq!(stored.text("linkedin_username__c"), Some("john-doe"));
    let seq = sim.request_log().len();
    assert!(
        enrich(&target, "Lead", &id, &e)
            .await
            .unwrap()
            .is_unchanged()
    );
    assert!(writes(&sim, seq).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_missing_custom_field_is_named() {
    let (_sim, control, sf) = salesforce().await;
    let id = created(&sf, "Contact", john_sf()).await;
    control.drop_field("Contact", "twitter_followers__c");
    let err = enrich(
        &EnrichTarget::Salesforce(&sf),
        "Contact",
        &id,
        &seed_enrichment(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch, "{err}");
    assert_eq!(err.context_value("field"), Some("twitter_followers__c"));
    assert!(err.message().contains("create it"), "{err}");

    let err = enrich(
        &EnrichTarget::Salesforce(&sf),
        "Contact",
        &RecordId::new("003000000000999AAA"),
        &Enrichment::new(vec![SocialProfile::new("twitter", "x")]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------- HubSpot

const HUBSPOT_PROPERTIES: [(&str, &str); 9] = [
    ("twitter_username", "string"),
    ("twitter_url", "string"),
    ("twitter_followers", "number"),
    ("instagram_username", "string"),
    ("instagram_url", "string"),
    ("instagram_followers", "number"),
    ("social_engagement_score", "number"),
    ("social_platform", "string"),
    ("social_sentiment", "string"),
];

async fn hubspot(with_properties: bool) -> (SimHandle, HubSpot) {
    let mut config = HubSpotSimConfig::default();
    if with_properties {
        for (name, kind) in HUBSPOT_PROPERTIES {
            config = config.custom_property("contacts", custom_property(name, kind, false));
        }
    }
    let sim = SimServer::new(HubSpotSimulator::new(config))
        .start()
        .await
        .unwrap();
    let token = sim.credentials()["private_app_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let hs = HubSpot::new(
        HubSpotConfig::private_app(SecretString::from(token))
            .base_url(sim.base_url())
            .rate_limits(crm_hubspot::RateLimits::new(1000, None, 100))
            .build()
            .unwrap(),
    )
    .unwrap();
    (sim, hs)
}

fn john_hs() -> Record {
    Record::new()
        .with("email", "john@example.com")
        .with("firstname", "John")
        .with("lastname", "Doe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_contact_is_enriched_once() {
    let (sim, hs) = hubspot(true).await;
    let id = created(&hs, "contacts", john_hs()).await;
    let target = EnrichTarget::HubSpot(&hs);

    let seq = sim.request_log().len();
    let first = enrich(&target, "contacts", &id, &seed_enrichment())
        .await
        .unwrap();
    assert_eq!(first.written_fields.len(), 9, "{first:?}");
    assert_eq!(writes(&sim, seq).len(), 1, "one batch update");
    let stored = sim.context().store().get_live("contacts", &id).unwrap();
    assert_eq!(stored.text("twitter_username"), Some("johndoe"));
    assert_eq!(
        stored.text("twitter_url"),
        Some("https://twitter.com/johndoe")
    );
    assert_eq!(number(stored.field("twitter_followers")), Some(5000.0));
    assert_eq!(stored.text("instagram_username"), Some("john.doe"));
    assert_eq!(number(stored.field("instagram_followers")), Some(1200.0));
    assert_eq!(number(stored.field("social_engagement_score")), Some(85.0));
    assert_eq!(stored.text("social_platform"), Some("twitter"));
    assert_eq!(stored.text("social_sentiment"), Some("positive"));
    assert_eq!(stored.text("firstname"), Some("John"), "other fields kept");

    assert_idempotent(&sim, &target, "contacts", &id, "twitter_followers").await;
    let stored = sim.context().store().get_live("contacts", &id).unwrap();
    assert_eq!(number(stored.field("twitter_followers")), Some(5100.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_missing_properties_are_named() {
    let (_sim, hs) = hubspot(false).await;
    let id = created(&hs, "contacts", john_hs()).await;
    let err = enrich(
        &EnrichTarget::HubSpot(&hs),
        "contacts",
        &id,
        &seed_enrichment(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch, "{err}");
    let field = err.context_value("field").unwrap();
    for (name, _) in HUBSPOT_PROPERTIES {
        assert!(field.split(',').any(|f| f == name), "{name} in {field}");
    }
    assert!(err.message().contains("create them in HubSpot"), "{err}");
}

// ---------------------------------------------------------------- Pipedrive

async fn pipedrive() -> (SimHandle, PipedriveSimulator, Pipedrive) {
    let mut config = PipedriveSimConfig::default();
    config.per_window = 100_000;
    config.daily = None;
    let simulator = PipedriveSimulator::new(config);
    let sim = SimServer::new(simulator.clone()).start().await.unwrap();
    let token = sim.credentials()["api_token"].as_str().unwrap().to_owned();
    let pd = Pipedrive::new(
        PipedriveConfig::api_token(SecretString::from(token))
            .base_url(sim.base_url())
            .rate_limits(crm_pipedrive::RateLimits::new(
                10_000,
                Duration::from_secs(1),
                None,
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    (sim, simulator, pd)
}

fn john_pd() -> Record {
    Record::new()
        .with("name", "John Doe")
        .with("email", "john@example.com")
}

fn notes_of(sim: &SimHandle, person: &RecordId) -> Vec<String> {
    sim.context()
        .store()
        .all("notes", Deleted::Exclude)
        .into_iter()
        .filter(|n| {
            let p = n.field("person_id");
            p.and_then(Json::as_i64).map(|i| i.to_string()).as_deref() == Some(person.as_str())
                || p.and_then(Json::as_str) == Some(person.as_str())
        })
        .map(|n| n.text("content").unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipedrive_custom_fields_are_written_once() {
    let (sim, simulator, pd) = pipedrive().await;
    let id = created(&pd, "persons", john_pd()).await;
    let catalog = pd.catalog(ObjectKind::Persons, false).await.unwrap();
    let fields = PipedriveEnrichmentFields::from_catalog(&catalog);
    let key = |name: &str| simulator.key_of(ObjectKind::Persons, name).unwrap();
    assert_eq!(
        fields,
        PipedriveEnrichmentFields::new()
            .with_engagement_score(key("Social Engagement Score"))
            .with_primary_platform(key("Primary Social Platform"))
            .with_profile_url(key("Social Profile URL"))
    );
    let target = EnrichTarget::Pipedrive {
        connector: &pd,
        fields: Some(&fields),
    };

    let seq = sim.request_log().len();
    let first = enrich(&target, "persons", &id, &seed_enrichment())
        .await
        .unwrap();
    assert_eq!(first.written_fields.len(), 3, "{first:?}");
    assert_eq!(first.note, NoteOutcome::None);
    assert_eq!(writes(&sim, seq).len(), 1, "one PATCH");
    let stored = sim.context().store().get_live("persons", &id).unwrap();
    assert_eq!(
        number(stored.field(&key("Social Engagement Score"))),
        Some(85.0)
    );
    assert_eq!(
        stored.text(&key("Primary Social Platform")),
        Some("twitter")
    );
    assert_eq!(
        stored.text(&key("Social Profile URL")),
        Some("https://twitter.com/johndoe")
    );
    assert!(notes_of(&sim, &id).is_empty(), "no note with custom fields");

    // Again: nothing written.
    let seq = sim.request_log().len();
    let again = enrich(&target, "persons", &id, &seed_enrichment())
        .await
        .unwrap();
    assert!(again.is_unchanged(), "{again:?}");
    assert!(writes(&sim, seq).is_empty(), "{:?}", writes(&sim, seq));

    // A follower count is not one of the three fields: nothing to write.
    let seq = sim.request_log().len();
    let more = with_twitter_followers(seed_enrichment(), 5100);
    assert!(
        enrich(&target, "persons", &id, &more)
            .await
            .unwrap()
            .is_unchanged()
    );
    assert!(writes(&sim, seq).is_empty());

    // A changed score writes exactly the score.
    let seq = sim.request_log().len();
    let report = enrich(&target, "persons", &id, &more.with_engagement_score(90))
        .await
        .unwrap();
    assert_eq!(report.written_fields, [key("Social Engagement Score")]);
    assert_eq!(writes(&sim, seq).len(), 1);
    let stored = sim.context().store().get_live("persons", &id).unwrap();
    assert_eq!(
        number(stored.field(&key("Social Engagement Score"))),
        Some(90.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipedrive_note_is_written_once_and_updated_in_place() {
    let (sim, _simulator, pd) = pipedrive().await;
    let id = created(&pd, "persons", john_pd()).await;
    let other = created(&pd, "persons", Record::new().with("name", "Jane Smith")).await;
    let target = EnrichTarget::Pipedrive {
        connector: &pd,
        fields: None,
    };

    let seq = sim.request_log().len();
    let first = enrich(&target, "persons", &id, &seed_enrichment())
        .await
        .unwrap();
    let NoteOutcome::Created(note_id) = first.note.clone() else {
        panic!("{first:?}");
    };
    assert!(first.written_fields.is_empty());
    assert_eq!(writes(&sim, seq).len(), 1, "one POST");
    let notes = notes_of(&sim, &id);
    assert_eq!(notes, [pipedrive_note(&seed_enrichment())]);
    assert!(notes[0].contains(
        "- twitter: @johndoe, https://twitter.com/johndoe, 5000 followers, engagement 250"
    ));
    assert!(notes[0].contains("- instagram: @john.doe"));

    // Again: no write, no second note.
    let seq = sim.request_log().len();
    let again = enrich(&target, "persons", &id, &seed_enrichment())
        .await
        .unwrap();
    assert_eq!(again.note, NoteOutcome::Unchanged(note_id.clone()));
    assert!(writes(&sim, seq).is_empty(), "{:?}", writes(&sim, seq));
    assert_eq!(notes_of(&sim, &id).len(), 1);

    // Changed followers: the same note is updated in place.
    let seq = sim.request_log().len();
    let more = with_twitter_followers(seed_enrichment(), 5100);
    let changed = enrich(&target, "persons", &id, &more).await.unwrap();
    assert_eq!(changed.note, NoteOutcome::Updated(note_id));
    assert_eq!(writes(&sim, seq).len(), 1, "one PUT");
    let notes = notes_of(&sim, &id);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("5100 followers"), "{}", notes[0]);

    // Another person gets their own note.
    let theirs = enrich(&target, "persons", &other, &seed_enrichment())
        .await
        .unwrap();
    assert!(matches!(theirs.note, NoteOutcome::Created(_)), "{theirs:?}");
    assert_eq!(notes_of(&sim, &id).len(), 1);
    assert_eq!(notes_of(&sim, &other).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipedrive_unknown_field_key_is_named() {
    let (sim, _simulator, pd) = pipedrive().await;
    let id = created(&pd, "persons", john_pd()).await;
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let fields = PipedriveEnrichmentFields::new().with_engagement_score(missing);
    let seq = sim.request_log().len();
    let err = enrich(
        &EnrichTarget::Pipedrive {
            connector: &pd,
            fields: Some(&fields),
        },
        "persons",
        &id,
        &seed_enrichment(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::SchemaMismatch, "{err}");
    assert!(
        err.context_value("field")
            .unwrap()
            .contains("Social Engagement Score")
    );
    assert_eq!(err.context_value("keys"), Some(missing));
    assert!(writes(&sim, seq).is_empty());

    let err = enrich(
        &EnrichTarget::Pipedrive {
            connector: &pd,
            fields: Some(&PipedriveEnrichmentFields::new().with_engagement_score("Score")),
        },
        "persons",
        &id,
        &seed_enrichment(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidInput, "{err}");
    assert_eq!(err.context_value("field"), Some("Social Engagement Score"));
}
