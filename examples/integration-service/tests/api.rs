//! Seed 002's API end to end against the Salesforce, HubSpot and Pipedrive
//! simulators: every endpoint with the seed's example bodies, email dedupe
//! in batches, enrichment that writes once, roles and workspaces, the
//! automatic workflows, the hourly retry of contacts a CRM could not take,
//! and no secret or unmasked personal field in any answer, log line or
//! stored byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use integration_service::model::Provider;
use serde_json::{Value as Json, json};
use support::*;

/// Seed 002's "Sync Contact to CRM" body.
fn seed_contact() -> Json {
    json!({
        "email": "john@example.com",
        "firstName": "John",
        "lastName": "Doe",
        "company": "Acme Inc",
        "phone": "+1234567890",
        "socialProfiles": [{
            "platform": "twitter",
            "username": "johndoe",
            "url": "https://twitter.com/johndoe",
            "followers": 5000,
            "engagement": 250
        }],
        "customFields": {"industry": "Technology", "employee_count": "50-100"}
    })
}

/// Seed 002's "Sync Lead to CRM" body.
fn seed_lead() -> Json {
    json!({
        "email": "jane@example.com",
        "firstName": "Jane",
        "lastName": "Smith",
        "company": "Tech Corp",
        "source": "twitter_dm",
        "status": "new",
        "socialContext": {
            "platform": "twitter",
            "conversationId": "conv-123",
            "sentiment": "positive",
            "engagementScore": 85
        }
    })
}

/// Seed 002's "Track Lead Attribution" body for `lead`.
fn seed_attribution(lead: &str) -> Json {
    json!({
        "leadId": lead,
        "source": "instagram",
        "campaign": "summer-sale-2024",
        "postId": "post-456",
        "conversationId": "conv-789",
        "touchpoints": [
            {"timestamp": "2024-01-15T10:30:00Z", "platform": "instagram", "type": "post_view", "postId": "post-456"},
            {"timestamp": "2024-01-15T11:00:00Z", "platform": "instagram", "type": "dm", "conversationId": "conv-789"}
        ]
    })
}

fn email_of(p: Provider, r: &crm_core::Record) -> Option<String> {
    let v = match p {
        Provider::Salesforce => r.text("Email").map(str::to_owned),
        Provider::Hubspot => r.text("email").map(str::to_owned),
        Provider::Pipedrive => r
            .get_path("email.0.value")
            .or_else(|| r.get_path("emails.0.value"))
            .and_then(|v| v.as_str().map(str::to_owned)),
    };
    v.map(|e| e.to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_endpoint_works_with_the_seed_bodies_on_each_crm() {
    let w = World::start("seed").await;
    for p in PROVIDERS {
        let id = w.integration(p, ACME_ADMIN, "Main Instance").await;
        let base = format!("/api/crm/integrations/{id}");

        // GET one and list: credentials masked.
        let one = w.get(&base, ACME_VIEWER).await;
        assert_eq!(one.status, 200, "{}", one.text);
        assert_eq!(one.body["provider"], p.as_str());
        for (k, v) in one.body["credentials"].as_object().unwrap() {
            if k != "domain" {
                assert_eq!(v, "********", "{p:?} {k}");
            }
        }
        let list = w.get("/api/crm/integrations", ACME_VIEWER).await;
        assert!(
            list.body["integrations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == id.as_str())
        );

        // Sync a contact, then again: the second is unchanged.
        let c = w
            .post(
                &format!("{base}/contacts/sync"),
                ACME_OPERATOR,
                &seed_contact(),
            )
            .await;
        assert_eq!(c.status, 200, "{p:?} {}", c.text);
        assert_eq!(c.body["action"], "created", "{p:?} {}", c.text);
        let contact_id = c.body["recordId"].as_str().unwrap().to_owned();
        let fields: Vec<&str> = c.body["writtenFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        match p {
            Provider::Salesforce => {
                assert!(fields.contains(&"twitter_username__c"), "{fields:?}");
                assert!(fields.contains(&"AccountId"), "{fields:?}");
            }
            Provider::Hubspot => assert!(fields.contains(&"twitter_followers"), "{fields:?}"),
            Provider::Pipedrive => assert!(fields.contains(&"email"), "{fields:?}"),
        }
        let again = w
            .post(
                &format!("{base}/contacts/sync"),
                ACME_OPERATOR,
                &seed_contact(),
            )
            .await;
        assert_eq!(again.body["action"], "unchanged", "{p:?} {}", again.text);
        assert_eq!(again.body["recordId"], contact_id.as_str());

        // Get it by email: masked for a viewer, clear when an operator reveals.
        let got = w
            .get(
                &format!("{base}/contacts?email=john@example.com"),
                ACME_VIEWER,
            )
            .await;
        assert_eq!(got.status, 200, "{p:?} {}", got.text);
        assert_eq!(got.body["contact"]["id"], contact_id.as_str());
        assert_eq!(got.body["contact"]["email"], "j***@example.com");
        assert_eq!(got.body["contact"]["masked"], true);
        let viewer_reveal = w
            .get(
                &format!("{base}/contacts?email=john@example.com&reveal=true"),
                ACME_VIEWER,
            )
            .await;
        assert_eq!(viewer_reveal.status, 403);
        let missing = w
            .get(
                &format!("{base}/contacts?email=nobody@example.com"),
                ACME_VIEWER,
            )
            .await;
        assert_eq!(missing.status, 404, "{}", missing.text);

        // Enrich twice: the second call writes nothing (request log).
        let sim = w.sim(p);
        let enrich_body = json!({
            "contactId": contact_id, "provider": p.as_str(),
            "includeSocialData": true, "includeEngagementHistory": true
        });
        let e1 = w
            .post(
                &format!("{base}/contacts/enrich"),
                ACME_OPERATOR,
                &enrich_body,
            )
            .await;
        assert_eq!(e1.status, 200, "{p:?} {}", e1.text);
        let seq = sim.request_log().len();
        let e2 = w
            .post(
                &format!("{base}/contacts/enrich"),
                ACME_OPERATOR,
                &enrich_body,
            )
            .await;
        assert_eq!(e2.status, 200, "{}", e2.text);
        assert_eq!(e2.body["unchanged"], true, "{p:?} {}", e2.text);
        assert_eq!(writes(sim, seq), Vec::<String>::new(), "{p:?}");

        // A lead, then its attribution.
        let l = w
            .post(&format!("{base}/leads/sync"), ACME_OPERATOR, &seed_lead())
            .await;
        assert_eq!(l.status, 200, "{p:?} {}", l.text);
        assert_eq!(l.body["action"], "created");
        let lead_id = l.body["recordId"].as_str().unwrap().to_owned();
        let a = w
            .post(
                &format!("{base}/leads/attribution"),
                ACME_OPERATOR,
                &seed_attribution(&lead_id),
            )
            .await;
        assert_eq!(a.status, 200, "{p:?} {}", a.text);
        assert_eq!(a.body["touchpoints"], 2);
        assert_eq!(
            a.body["credits"],
            json!([{"campaign": "summer-sale-2024", "credit": "1.000000"}])
        );
        // The same touchpoints again are not counted twice.
        let a2 = w
            .post(
                &format!("{base}/leads/attribution"),
                ACME_OPERATOR,
                &seed_attribution(&lead_id),
            )
            .await;
        assert_eq!(a2.body["touchpoints"], 2, "{}", a2.text);
        assert_eq!(a2.body["repeated"], 2);

        // Seed 002's batch body.
        let b = w
            .post(
                &format!("{base}/contacts/batch-sync"),
                ACME_OPERATOR,
                &json!([
                    {"email": "contact1@example.com", "firstName": "Contact", "lastName": "One"},
                    {"email": "contact2@example.com", "firstName": "Contact", "lastName": "Two"}
                ]),
            )
            .await;
        assert_eq!(b.status, 200, "{p:?} {}", b.text);
        assert_eq!(b.body["created"], 2, "{}", b.text);

        // Pull from the CRM: the contacts come back, then nothing new.
        let pull = w
            .post(&format!("{base}/sync-from-crm"), ACME_OPERATOR, &json!({}))
            .await;
        assert_eq!(pull.status, 200, "{p:?} {}", pull.text);
        assert!(pull.body["created"].as_u64().unwrap() >= 3, "{}", pull.text);
        let pull2 = w
            .post(&format!("{base}/sync-from-crm"), ACME_OPERATOR, &json!({}))
            .await;
        assert_eq!(pull2.status, 200, "{}", pull2.text);
        assert_eq!(pull2.body["created"], 0, "{p:?} {}", pull2.text);
    }
}

/// 1,000 contacts where 50 repeat an earlier email make exactly 950 CRM
/// records; the same batch again writes nothing.
async fn batch_dedupes(p: Provider) {
    let w = World::start(&format!("batch-{}", p.as_str())).await;
    let id = w.integration(p, ACME_ADMIN, "batch").await;
    let mut items = Vec::new();
    for i in 0..950 {
        items.push(json!({"email": format!("person{i}@example.com"),
                          "firstName": "Person", "lastName": format!("N{i}")}));
    }
    for i in 0..50 {
        // Same address, other case and spacing: the same contact.
        items.push(json!({"email": format!(" PERSON{}@Example.com ", i * 19),
                          "lastName": format!("N{}", i * 19), "phone": "+14155550190"}));
    }
    let body = Json::Array(items);
    let path = format!("/api/crm/integrations/{id}/contacts/batch-sync");
    let r = w.post(&path, ACME_OPERATOR, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["received"], 1000);
    assert_eq!(r.body["unique"], 950);
    assert_eq!(r.body["duplicates"], 50);
    assert_eq!(r.body["created"], 950, "{}", r.body["failed"]);
    assert_eq!(r.body["failed"], 0);
    assert_eq!(r.body["results"][950]["duplicateOf"], 0);

    let contacts = w.crm_contacts(p).await;
    assert_eq!(contacts.len(), 950);
    let mut emails: Vec<String> = contacts.iter().filter_map(|c| email_of(p, c)).collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 950, "one record per email");
    // The merged duplicate's phone reached the first record.
    let merged = contacts
        .iter()
        .find(|c| email_of(p, c).as_deref() == Some("person19@example.com"))
        .unwrap();
    let phone = match p {
        Provider::Salesforce => merged.text("Phone").map(str::to_owned),
        _ => merged.text("phone").map(str::to_owned),
    };
    assert_eq!(phone.as_deref(), Some("+14155550190"));

    let sim = w.sim(p);
    let seq = sim.request_log().len();
    let again = w.post(&path, ACME_OPERATOR, &body).await;
    assert_eq!(again.body["created"], 0, "{}", again.text);
    assert_eq!(again.body["unchanged"], 950);
    assert_eq!(writes(sim, seq), Vec::<String>::new());
    assert_eq!(w.crm_contacts(p).await.len(), 950);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_1000_with_50_duplicate_emails_creates_950_in_salesforce() {
    batch_dedupes(Provider::Salesforce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_1000_with_50_duplicate_emails_creates_950_in_hubspot() {
    batch_dedupes(Provider::Hubspot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_item_with_a_bad_value_fails_alone() {
    let w = World::start("batch-bad").await;
    let id = w.integration(Provider::Hubspot, ACME_ADMIN, "bad").await;
    let r = w
        .post(
            &format!("/api/crm/integrations/{id}/contacts/batch-sync"),
            ACME_OPERATOR,
            &json!([
                {"email": "good@example.com", "lastName": "Good"},
                {"email": "not-an-email", "lastName": "Bad"},
                {"email": "phone@example.com", "phone": "call me"},
                {"email": "url@example.com", "socialProfiles": [{"platform": "twitter", "username": "u", "url": "twitter.com/u"}]}
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], 1);
    assert_eq!(r.body["failed"], 3);
    assert_eq!(r.body["results"][1]["error"]["field"], "[1].email");
    assert_eq!(r.body["results"][2]["error"]["field"], "[2].phone");
    assert_eq!(
        r.body["results"][3]["error"]["field"],
        "[3].socialProfiles[0].url"
    );
    assert_eq!(r.body["results"][1]["error"]["record"], "[1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_workspaces_are_enforced() {
    let w = World::start("access").await;
    let id = w
        .integration(Provider::Hubspot, ACME_ADMIN, "acme-crm")
        .await;
    let base = format!("/api/crm/integrations/{id}");
    let writes = [
        (format!("{base}/contacts/sync"), seed_contact()),
        (format!("{base}/leads/sync"), seed_lead()),
        (
            format!("{base}/contacts/enrich"),
            json!({"contactId": "1", "includeSocialData": true}),
        ),
        (format!("{base}/leads/attribution"), seed_attribution("1")),
        (
            format!("{base}/contacts/batch-sync"),
            json!([{"email": "a@example.com"}]),
        ),
        (format!("{base}/sync-from-crm"), json!({})),
        (
            format!("{base}/events"),
            json!({"type": "message_sent", "conversationId": "c", "timestamp": "2024-01-01T00:00:00Z"}),
        ),
    ];
    // A viewer reads but every write is 403.
    assert_eq!(w.get(&base, ACME_VIEWER).await.status, 200);
    for (path, body) in &writes {
        let r = w.post(path, ACME_VIEWER, body).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert_eq!(r.body["error"]["kind"], "forbidden");
    }
    let r = w
        .post(
            "/api/crm/integrations",
            ACME_VIEWER,
            &integration_body(Provider::Hubspot, "x"),
        )
        .await;
    assert_eq!(r.status, 403);
    // An operator syncs but does not manage integrations.
    let r = w
        .post(
            "/api/crm/integrations",
            ACME_OPERATOR,
            &integration_body(Provider::Hubspot, "x"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Workspace globex sees nothing of acme's: 404 everywhere, as an unknown id.
    assert_eq!(w.get(&base, GLOBEX_ADMIN).await.status, 404);
    assert_eq!(
        w.get(
            &format!("{base}/contacts?email=john@example.com"),
            GLOBEX_ADMIN
        )
        .await
        .status,
        404
    );
    for (path, body) in &writes {
        let r = w.post(path, GLOBEX_ADMIN, body).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
    let theirs = w.get("/api/crm/integrations", GLOBEX_ADMIN).await;
    assert_eq!(theirs.body["integrations"], json!([]));
    let unknown = w.get("/api/crm/integrations/0000", ACME_ADMIN).await;
    assert_eq!(unknown.status, 404);

    // No token, or an unknown one: 401.
    assert_eq!(w.get(&base, "").await.status, 401);
    assert_eq!(
        w.get(&base, "not-a-token-of-this-service").await.status,
        401
    );
    // A name taken in one workspace is free in another.
    let dup = w
        .post(
            "/api/crm/integrations",
            ACME_ADMIN,
            &integration_body(Provider::Hubspot, "acme-crm"),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    w.integration(Provider::Hubspot, GLOBEX_ADMIN, "acme-crm")
        .await;
    // Refused credentials are named.
    let mut bad = integration_body(Provider::Hubspot, "bad-creds");
    bad["credentials"]["accessToken"] = json!("pat-na1-wrong-token");
    let r = w.post("/api/crm/integrations", ACME_ADMIN, &bad).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "credentials");
    let mut unknown_key = integration_body(Provider::Pipedrive, "bad-key");
    unknown_key["credentials"]["password"] = json!("x");
    let r = w
        .post("/api/crm/integrations", ACME_ADMIN, &unknown_key)
        .await;
    assert_eq!(
        r.body["error"]["field"], "credentials.password",
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_workflows_link_score_and_attribute() {
    let w = World::start("workflows").await;
    let id = w.integration(Provider::Salesforce, ACME_ADMIN, "wf").await;
    let events = format!("/api/crm/integrations/{id}/events");
    // 1. New conversation -> CRM contact with the social profile.
    let r = w
        .post(
            &events,
            ACME_OPERATOR,
            &json!({"type": "conversation_created", "conversationId": "conv-1",
                    "platform": "instagram", "email": "mia@example.com",
                    "name": "Mia Lopez", "username": "@mia.l"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["workflow"], "contact_linked");
    let contact = r.body["recordId"].as_str().unwrap().to_owned();
    assert!(
        r.body["writtenFields"]
            .as_array()
            .unwrap()
            .contains(&json!("instagram_username__c")),
        "{}",
        r.text
    );
    // 2. Messages -> engagement score, touchpoints, sentiment on the contact.
    let now = chrono::Utc::now().to_rfc3339();
    let r = w
        .post(
            &events,
            ACME_OPERATOR,
            &json!({"type": "message_sent", "conversationId": "conv-1",
                    "timestamp": now, "sentiment": "positive"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["workflow"], "engagement_updated");
    assert_eq!(r.body["recordId"], contact.as_str());
    let written: Vec<&str> = r.body["writtenFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        written.contains(&"social_engagement_score__c"),
        "{written:?}"
    );
    assert!(written.contains(&"social_touchpoints__c"), "{written:?}");
    let unknown = w
        .post(
            &events,
            ACME_OPERATOR,
            &json!({"type": "message_sent", "conversationId": "conv-unknown", "timestamp": now}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    // 3. Post engagement -> touchpoint and attribution of a lead.
    let lead = w
        .post(
            &format!("/api/crm/integrations/{id}/leads/sync"),
            ACME_OPERATOR,
            &seed_lead(),
        )
        .await;
    let lead_id = lead.body["recordId"].as_str().unwrap().to_owned();
    for (t, kind, campaign) in [
        ("2024-03-01T10:00:00Z", "view", "spring"),
        ("2024-03-02T10:00:00Z", "click", "spring"),
        ("2024-03-03T10:00:00Z", "share", "launch"),
    ] {
        let r = w
            .post(
                &events,
                ACME_OPERATOR,
                &json!({"type": "post_engagement", "leadId": lead_id, "campaign": campaign,
                        "touchpoint": {"timestamp": t, "platform": "twitter", "type": kind, "postId": "p-1"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["workflow"], "attribution_updated");
    }
    // Linear over 3 touchpoints: spring 2/3, launch 1/3, summing to 1.
    let a = w
        .post(
            &format!("/api/crm/integrations/{id}/leads/attribution"),
            ACME_OPERATOR,
            &json!({"leadId": lead_id, "model": "position_based"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["touchpoints"], 3);
    let credits = a.body["credits"].as_array().unwrap();
    let total: rust_decimal::Decimal = credits
        .iter()
        .map(|c| {
            c["credit"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, rust_decimal::Decimal::ONE);
    // position_based: first 40 + middle 20 = 60% spring, last 40% launch.
    assert_eq!(
        credits[0],
        json!({"campaign": "spring", "credit": "0.600000"})
    );
    assert_eq!(
        credits[1],
        json!({"campaign": "launch", "credit": "0.400000"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_the_crm_could_not_take_is_sent_by_the_hourly_job() {
    let w = World::start("retry").await;
    let id = w.integration(Provider::Hubspot, ACME_ADMIN, "retry").await;
    let sim = w.sim(Provider::Hubspot);
    sim.context().faults().set_plan(
        crm_sim::FaultPlan::new(7).rule(
            crm_sim::FaultRule::new(crm_sim::Fault::ServerError { status: 503 })
                .path_prefix("/crm/v3/objects/contacts/batch"),
        ),
    );
    let body = json!({"email": "late@example.com", "firstName": "Lee", "lastName": "Late"});
    let r = w
        .post(
            &format!("/api/crm/integrations/{id}/contacts/sync"),
            ACME_OPERATOR,
            &body,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["kind"], "crm_unavailable");
    assert!(!r.text.contains("late@example.com"), "{}", r.text);
    assert_eq!(w.crm_contacts(Provider::Hubspot).await.len(), 0);

    // Still down at the next hour: one more attempt counted, nothing lost.
    assert_eq!(w.app.service.retry_pending().await.unwrap(), (0, 1));
    sim.context().faults().clear();
    assert_eq!(w.app.service.retry_pending().await.unwrap(), (1, 0));
    let contacts = w.crm_contacts(Provider::Hubspot).await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].text("email"), Some("late@example.com"));
    // Sent once: a third run has nothing to do.
    assert_eq!(w.app.service.retry_pending().await.unwrap(), (0, 0));
}

/// Every known secret and personal value, and where each may appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_unmasked_personal_field_in_answers_logs_or_storage() {
    let w = World::start("secrets").await;
    let mut ids = Vec::new();
    for p in PROVIDERS {
        ids.push((p, w.integration(p, ACME_ADMIN, "scan").await));
    }
    let pii = [
        "zoe.secret-person@example.org",
        "Zoe",
        "Quartermaine",
        "+14155550123",
        "4155550123",
    ];
    for (p, id) in &ids {
        let base = format!("/api/crm/integrations/{id}");
        let contact = json!({"email": pii[0], "firstName": pii[1], "lastName": pii[2],
                             "phone": pii[3], "company": "Scan Corp",
                             "socialProfiles": [{"platform": "twitter", "username": "zq"}]});
        let c = w
            .post(&format!("{base}/contacts/sync"), ACME_OPERATOR, &contact)
            .await;
        assert_eq!(c.status, 200, "{p:?} {}", c.text);
        let cid = c.body["recordId"].as_str().unwrap().to_owned();
        w.post(
            &format!("{base}/contacts/enrich"),
            ACME_OPERATOR,
            &json!({"contactId": cid}),
        )
        .await;
        w.get(&format!("{base}/contacts?email={}", pii[0]), ACME_VIEWER)
            .await;
        let lead = json!({"email": pii[0], "firstName": pii[1], "lastName": pii[2],
                          "company": "Scan Corp", "source": "web"});
        w.post(&format!("{base}/leads/sync"), ACME_OPERATOR, &lead)
            .await;
        // Error paths quoting the input: a bad phone, a bad email, a wrong type.
        let bad = w
            .post(
                &format!("{base}/contacts/sync"),
                ACME_OPERATOR,
                &json!({"email": pii[0], "lastName": pii[2], "phone": "not a phone"}),
            )
            .await;
        assert_eq!(bad.status, 422);
        w.post(
            &format!("{base}/contacts/sync"),
            ACME_OPERATOR,
            &json!({"email": format!("{}@", pii[0]), "lastName": pii[2]}),
        )
        .await;
        w.post(
            &format!("{base}/contacts/sync"),
            ACME_OPERATOR,
            &json!({"email": pii[0], "lastName": 42}),
        )
        .await;
        // A lead Salesforce refuses (no company: REQUIRED_FIELD_MISSING).
        w.post(
            &format!("{base}/leads/sync"),
            ACME_OPERATOR,
            &json!({"email": pii[0], "lastName": pii[2]}),
        )
        .await;
        w.post(
            &format!("{base}/contacts/batch-sync"),
            ACME_OPERATOR,
            &json!([contact, {"email": pii[0], "phone": "nope"}]),
        )
        .await;
        w.post(&format!("{base}/sync-from-crm"), ACME_OPERATOR, &json!({}))
            .await;
        w.get(&base, ACME_ADMIN).await;
    }
    // A contact the CRM cannot take goes to the dead letters, sealed.
    let (_, hs) = &ids[1];
    w.sim(Provider::Hubspot).context().faults().set_plan(
        crm_sim::FaultPlan::new(1).rule(
            crm_sim::FaultRule::new(crm_sim::Fault::ServerError { status: 503 })
                .path_prefix("/crm/v3/objects/contacts/batch"),
        ),
    );
    let r = w
        .post(
            &format!("/api/crm/integrations/{hs}/contacts/sync"),
            ACME_OPERATOR,
            &json!({"email": "dead.letter.zoe@example.org", "firstName": pii[1], "lastName": pii[2], "phone": pii[3]}),
        )
        .await;
    assert_eq!(r.status, 503);
    w.app.service.retry_pending().await.unwrap();
    w.sim(Provider::Hubspot).context().faults().clear();
    w.get("/api/crm/integrations", ACME_ADMIN).await;

    let secrets = [
        integration_service::sims::SF_CLIENT_SECRET,
        integration_service::sims::SF_REFRESH_TOKEN,
        "00Dxx0000001gPL!seed-access-token",
        integration_service::sims::HUBSPOT_TOKEN,
        integration_service::sims::PIPEDRIVE_TOKEN,
        ACME_ADMIN,
        ACME_OPERATOR,
        ACME_VIEWER,
        GLOBEX_ADMIN,
    ];
    let answers = w.seen.lock().unwrap().join("\n");
    let logs = log_text();
    assert!(logs.contains("contact synced"), "the logs were captured");
    let stored = String::from_utf8_lossy(&w.state_bytes()).into_owned();
    assert!(stored.len() > 10_000, "the store was read");
    for (what, text) in [
        ("answers", &answers),
        ("logs", &logs),
        ("state store", &stored),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "a secret in the {what}: {s}");
        }
        for v in pii.iter().chain(["dead.letter.zoe@example.org"].iter()) {
            assert!(
                !text.contains(v),
                "unmasked personal data in the {what}: {v}"
            );
        }
    }
    // The masked forms are what shows.
    assert!(
        answers.contains("z***@example.org"),
        "masked email in answers"
    );
    // The dead letter opens with the store's key.
    let conn = crm_sql::state::ConnectionId::new(hs.clone());
    let letters = w
        .app
        .service
        .store()
        .state()
        .dead_letters(&conn, 10, 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record["email"], "dead.letter.zoe@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_new_email_make_one_record() {
    let w = World::start("race").await;
    for p in [Provider::Salesforce, Provider::Pipedrive] {
        let id = w.integration(p, ACME_ADMIN, "race").await;
        let path = format!("/api/crm/integrations/{id}/contacts/sync");
        let body = json!({"email": "racer@example.com", "firstName": "Ray", "lastName": "Cer"});
        let calls = (0..8).map(|_| w.post(&path, ACME_OPERATOR, &body));
        let answers = futures_util::future::join_all(calls).await;
        let created = answers
            .iter()
            .filter(|a| a.body["action"] == "created")
            .count();
        assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
        assert_eq!(created, 1, "{p:?}");
        let ids: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|a| a.body["recordId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1, "{p:?} {ids:?}");
        assert_eq!(w.crm_contacts(p).await.len(), 1, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_a_failing_call_keeps_what_was_written_and_the_rest() {
    let w = World::start("cut").await;
    let id = w.integration(Provider::Hubspot, ACME_ADMIN, "cut").await;
    let sim = w.sim(Provider::Hubspot);
    // The second batch upsert and every retry of it fail.
    sim.context().faults().set_plan(
        crm_sim::FaultPlan::new(3).rule(
            crm_sim::FaultRule::new(crm_sim::Fault::ServerError { status: 503 })
                .path_prefix("/crm/v3/objects/contacts/batch/upsert")
                .when(crm_sim::Trigger::Nth((2..=30).collect())),
        ),
    );
    let items: Vec<Json> = (0..120)
        .map(|i| json!({"email": format!("cut{i}@example.com"), "lastName": format!("C{i}")}))
        .collect();
    let r = w
        .post(
            &format!("/api/crm/integrations/{id}/contacts/batch-sync"),
            ACME_OPERATOR,
            &Json::Array(items),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], 100, "{}", r.body["failed"]);
    assert_eq!(r.body["failed"], 20);
    assert_eq!(r.body["results"][119]["error"]["kind"], "crm_unavailable");
    assert_eq!(w.crm_contacts(Provider::Hubspot).await.len(), 100);
    sim.context().faults().clear();
    assert_eq!(w.app.service.retry_pending().await.unwrap(), (20, 0));
    assert_eq!(w.crm_contacts(Provider::Hubspot).await.len(), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_jobs_run_hourly_every_6_hours_and_daily() {
    use chrono::Timelike;
    let w = World::start("jobs").await;
    let config = integration_service::config::ServiceConfig::default();
    let scheduler = w.app.scheduler(&config).unwrap();
    let hourly = scheduler.next_run("contacts-to-crm").unwrap();
    assert_eq!((hourly.minute(), hourly.second()), (0, 0));
    assert!(hourly - chrono::Utc::now() <= chrono::TimeDelta::hours(1));
    let pull = scheduler.next_run("pull-from-crm").unwrap();
    assert_eq!((pull.hour() % 6, pull.minute()), (0, 0));
    let purge = scheduler.next_run("retention").unwrap();
    assert_eq!((purge.hour(), purge.minute()), (3, 30));
    // A bad expression is named.
    let bad =
        integration_service::config::ServiceConfig::from_yaml("jobs: {contacts: \"61 * * * *\"}")
            .unwrap();
    let err = w.app.scheduler(&bad).err().unwrap();
    assert_eq!(err.context_value("field"), Some("jobs.contacts"));

    // The 6-hourly job pulls every integration that syncs from its CRM.
    let id = w.integration(Provider::Hubspot, ACME_ADMIN, "pull").await;
    w.post(
        &format!("/api/crm/integrations/{id}/contacts/sync"),
        ACME_OPERATOR,
        &json!({"email": "pulled@example.com", "lastName": "Pulled"}),
    )
    .await;
    assert_eq!(w.app.service.pull_all().await.unwrap(), 1);
    assert_eq!(
        w.app.service.pull_all().await.unwrap(),
        0,
        "from the checkpoint"
    );
    let one = w
        .get(&format!("/api/crm/integrations/{id}"), ACME_VIEWER)
        .await;
    assert!(one.body["lastSyncAt"].is_string(), "{}", one.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_crm_refuses_is_named_by_its_request_field() {
    let w = World::start("refused").await;
    let id = w.integration(Provider::Salesforce, ACME_ADMIN, "sf").await;
    let base = format!("/api/crm/integrations/{id}");
    // Salesforce requires LastName to create a contact, Company a lead.
    let r = w
        .post(
            &format!("{base}/contacts/sync"),
            ACME_OPERATOR,
            &json!({"email": "nolast@example.com", "firstName": "No"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "lastName", "{}", r.text);
    let r = w
        .post(
            &format!("{base}/leads/sync"),
            ACME_OPERATOR,
            &json!({"email": "nocompany@example.com", "lastName": "Lead"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "company", "{}", r.text);
    // In a batch, the item and its field.
    let r = w
        .post(
            &format!("{base}/contacts/batch-sync"),
            ACME_OPERATOR,
            &json!([{"email": "ok@example.com", "lastName": "Ok"}, {"email": "nolast2@example.com"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], 1);
    assert_eq!(
        r.body["results"][1]["error"]["field"], "[1].lastName",
        "{}",
        r.text
    );
    assert_eq!(r.body["results"][1]["error"]["record"], "[1]");
    // A refused contact is kept for a person (and the hourly retry).
    let conn = crm_sql::state::ConnectionId::new(id.clone());
    let kept = w
        .app
        .service
        .store()
        .state()
        .dead_letters(&conn, 10, 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|d| d.stage == "crm_rejected"));
}
