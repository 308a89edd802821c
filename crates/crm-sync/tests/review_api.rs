//! The review desk's JSON API and forms over HTTP (the browser tests in
//! `review_browser.rs` click through the same pages): every queue is
//! resolved, audited with the reviewer, written through the pipeline's
//! sink and the bidirectional sync; viewers and forged requests change
//! nothing; a person's match decision survives the next pipeline run.
//!
//! Needs the PostgreSQL server of `CRM_TEST_POSTGRES_URL` (default the
//! local one); without it the tests skip, unless `CI` is set: then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/review_world.rs"]
mod review_world;
mod support;

use crm_sql::state::ReviewReason;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use review_world::{OPERATOR_TOKEN, VIEWER_TOKEN, World, run_bookings};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(w: &World, token: &str, path: &str) -> (StatusCode, Value) {
    let r = client()
        .get(format!("{}{path}", w.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(w: &World, token: Option<&str>, path: &str, body: Value) -> (StatusCode, Value) {
    let mut req = client().post(format!("{}{path}", w.base)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queue_is_resolved_through_the_api_and_audited() {
    let Some(w) = World::start("api").await else {
        return;
    };
    let (status, counts) = get(&w, VIEWER_TOKEN, "/review/api/counts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        counts,
        json!({"matches": 3, "conflicts": 1, "dead_letters": 1})
    );
    let (_, page) = get(&w, VIEWER_TOKEN, "/review/api/matches").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(page["next"].is_null());
    let multiple = items
        .iter()
        .find(|i| i["reason"] == "multiple_match")
        .unwrap();
    assert_eq!(multiple["record_id"], "BK-2");
    let ids: Vec<&str> = multiple["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["campaign_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["C-AUT-1", "C-AUT-2"]);
    assert_eq!(multiple["candidates"][0]["strategy"], "name_match");

    let matches = w.open(ReviewReason::ProbableMatch).await;
    let bk1 = matches["BK-1"].id.as_str().to_owned();
    let bk5 = matches["BK-5"].id.as_str().to_owned();
    let bk2 = multiple["id"].as_str().unwrap().to_owned();

    // No token, a viewer's token: refused, nothing written.
    let accept = json!({"campaign_id": "C-SUMMER"});
    let (status, _) = post(
        &w,
        None,
        &format!("/review/api/matches/{bk1}/accept"),
        accept.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(
        &w,
        Some(VIEWER_TOKEN),
        &format!("/review/api/matches/{bk1}/accept"),
        accept.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["kind"], "forbidden");
    assert_eq!(w.booking_rows().await["BK-1"].1, "probable");

    // An unknown campaign is refused and names the field.
    let (status, body) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/matches/{bk1}/accept"),
        json!({"campaign_id": "C-NOPE"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The probable match is accepted, the multiple one rejected, and one
    // booking gets a campaign found by name.
    let (status, body) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/matches/{bk1}/accept"),
        accept,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/matches/{bk2}/reject"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, found) = get(
        &w,
        VIEWER_TOKEN,
        "/review/api/campaigns?q=winter%20clearance",
    )
    .await;
    assert_eq!(found["campaigns"][0]["campaign_id"], "C-WINTER");
    let (status, _) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/matches/{bk5}/accept"),
        json!({"campaign_id": "C-WINTER"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Deciding twice: the item is closed.
    let (status, _) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/matches/{bk2}/reject"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let rows = w.booking_rows().await;
    assert_eq!(
        rows["BK-1"],
        ("C-SUMMER".into(), "matched".into(), "1200.50".into())
    );
    assert_eq!(rows["BK-2"].0, "");
    assert_eq!(rows["BK-2"].1, "unmatched");
    assert_eq!(rows["BK-5"].0, "C-WINTER");
    let audit = w.audited("bookings", "BK-1", "review.match_accepted").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(
        audit[0].new_values.as_ref().unwrap()["campaign_id"],
        "C-SUMMER"
    );
    assert_eq!(
        audit[0].old_values.as_ref().unwrap()["match_status"],
        "probable"
    );
    assert_eq!(
        w.audited("bookings", "BK-2", "review.match_rejected")
            .await
            .len(),
        1
    );
    // The after-match hook (a job's write-back) saw each booking as written.
    let hooked: Vec<(String, String)> = w
        .hooked
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            (
                review_world::text(r.get("booking_id")),
                review_world::text(r.get("campaign_id")),
            )
        })
        .collect();
    assert_eq!(
        hooked,
        [
            ("BK-1".to_owned(), "C-SUMMER".to_owned()),
            ("BK-2".to_owned(), String::new()),
            ("BK-5".to_owned(), "C-WINTER".to_owned()),
        ]
    );

    // The next pipeline run keeps every decision instead of queueing the
    // bookings again.
    let report = run_bookings(&w.store, &w.sink).await;
    assert_eq!(report.match_decided, 3, "{report:?}");
    assert!(w.open(ReviewReason::ProbableMatch).await.is_empty());
    assert!(w.open(ReviewReason::MultipleMatch).await.is_empty());
    let again = w.booking_rows().await;
    assert_eq!(again["BK-1"], rows["BK-1"]);
    assert_eq!(again["BK-2"], rows["BK-2"]);
    assert_eq!(again["BK-5"], rows["BK-5"]);

    // The conflict: one field from each side and a typed value.
    let (_, conflicts) = get(&w, VIEWER_TOKEN, "/review/api/conflicts").await;
    let conflict = &conflicts["items"][0];
    let fields: Vec<&str> = conflict["conflict"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["first_name", "phone", "lifecycle"]);
    let cid = conflict["id"].as_str().unwrap();
    let (status, body) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/conflicts/{cid}/resolve"),
        json!({"picks": {"first_name": "platform", "phone": "crm"}}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a missing pick: {body}"
    );
    let (status, body) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/conflicts/{cid}/resolve"),
        json!({"picks": {"first_name": "platform", "phone": "crm", "lifecycle": {"value": "evangelist"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (pl, hs) = w.contact().await;
    for side in [&pl, &hs] {
        assert_eq!(side["first_name"], "Annie");
        assert_eq!(side["phone"], "+14155550222");
        assert_eq!(side["lifecycle"], "evangelist");
    }
    let resolved = w.audited("contacts", "pg-1", "resolve_conflict").await;
    assert_eq!(resolved[0].actor, "alice");

    // The dead letter: a blank discard reason is refused, then it is
    // edited (budget fixed) and retried.
    let (_, letters) = get(&w, VIEWER_TOKEN, "/review/api/dead-letters").await;
    let letter = &letters["items"][0];
    assert_eq!(letter["record_key"], "BK-4");
    assert!(
        letter["errors"][0].as_str().unwrap().contains("budget"),
        "{letter}"
    );
    let lid = letter["id"].as_str().unwrap();
    let (status, _) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/dead-letters/{lid}/discard"),
        json!({"reason": "  "}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut record = letter["record"].clone();
    record["budget"] = json!("5.00");
    let (status, body) = post(
        &w,
        Some(OPERATOR_TOKEN),
        &format!("/review/api/dead-letters/{lid}/retry"),
        json!({"record": record}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "written", "{body}");
    assert_eq!(w.booking_rows().await["BK-4"].2, "5.00");
    assert_eq!(
        w.audited("bookings", "BK-4", "review.dead_letter_edited")
            .await
            .len(),
        1
    );
    assert_eq!(
        w.audited("bookings", "BK-4", "review.dead_letter_retried")
            .await
            .len(),
        1
    );

    let (_, counts) = get(&w, VIEWER_TOKEN, "/review/api/counts").await;
    assert_eq!(
        counts,
        json!({"matches": 0, "conflicts": 0, "dead_letters": 0})
    );
    w.stop().await;
}

/// The session cookie of a form sign-in, and the page's CSRF token.
async fn sign_in(w: &World, token: &str) -> (String, String) {
    let r = client()
        .get(format!("{}/review/login", w.base))
        .send()
        .await
        .unwrap();
    let nonce_cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let nonce = nonce_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let r = client()
        .post(format!("{}/review/login", w.base))
        .header(COOKIE, format!("crm_review_login={nonce}"))
        .form(&[
            ("token", token),
            ("csrf", &nonce),
            ("next", "/review/matches"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/review/matches");
    let session = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("crm_review_session=") && !c.starts_with("crm_review_session=;"))
        .unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(!session.contains("Secure"), "plain http: {session}");
    let cookie = session.split(';').next().unwrap().to_owned();
    let page = client()
        .get(format!("{}/review/matches", w.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .unwrap_or_default();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_session_csrf_token_and_an_acting_role() {
    let Some(w) = World::start("forms").await else {
        return;
    };
    // A wrong token does not sign in; a login POST without the form's
    // nonce is refused.
    let r = client()
        .post(format!("{}/review/login", w.base))
        .form(&[("token", OPERATOR_TOKEN), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .get(format!("{}/review/matches", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "pages need a sign-in");

    let (cookie, csrf) = sign_in(&w, OPERATOR_TOKEN).await;
    assert_eq!(csrf.len(), 64, "the page carries the session's CSRF token");
    let bk1 = w.open(ReviewReason::ProbableMatch).await["BK-1"]
        .id
        .as_str()
        .to_owned();
    // Forged: the cookie rides along, the token does not.
    for form in [
        vec![("campaign_id", "C-SUMMER")],
        vec![("campaign_id", "C-SUMMER"), ("csrf", "0000")],
    ] {
        let r = client()
            .post(format!("{}/review/matches/{bk1}/accept", w.base))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = client()
        .post(format!("{}/review/api/matches/{bk1}/accept", w.base))
        .header(COOKIE, &cookie)
        .json(&json!({"campaign_id": "C-SUMMER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "API calls by cookie need X-CSRF-Token"
    );
    assert!(
        w.open(ReviewReason::ProbableMatch)
            .await
            .contains_key("BK-1")
    );

    // With the token the form goes through.
    let r = client()
        .post(format!("{}/review/matches/{bk1}/accept", w.base))
        .header(COOKIE, &cookie)
        .form(&[("campaign_id", "C-SUMMER"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/review/matches?done=accepted");
    assert_eq!(w.booking_rows().await["BK-1"].1, "matched");

    // A viewer's session reads but gets no buttons and cannot act.
    let (viewer, viewer_csrf) = sign_in(&w, VIEWER_TOKEN).await;
    let page = client()
        .get(format!("{}/review/matches", w.base))
        .header(COOKIE, &viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("BK-5"), "viewers read the queue");
    assert!(
        !page.contains("data-action"),
        "no action buttons for viewers"
    );
    let bk5 = w.open(ReviewReason::ProbableMatch).await["BK-5"]
        .id
        .as_str()
        .to_owned();
    let r = client()
        .post(format!("{}/review/matches/{bk5}/reject", w.base))
        .header(COOKIE, &viewer)
        .form(&[("csrf", viewer_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.booking_rows().await["BK-5"].1, "probable");

    // Markup in a record is shown as text, never as markup.
    assert!(!page.contains("<script"), "no script on the page");
    w.stop().await;
}

/// The job's source; `serve` reads nothing from it.
const SHEET: &str = "sheet:\n  spreadsheet_id: sheet-1\n  sheet_name: Bookings\n  \
                     column_mapping: {A: booking_id, B: campaign_name}\n";

/// `crm-sync serve` with a `review:` section (and no `webhooks:`) serves
/// the desk of the job's store, with the tokens of its config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_sync_serve_shows_the_desk_of_a_job() {
    use std::process::{Command, Stdio};

    use crm_core::{FieldSchema, FieldType, ObjectSchema, Record};
    use crm_sql::SqlConnector;
    use crm_sql::state::{CredentialKey, StateStore};

    let dir = std::env::temp_dir().join(format!("crm-review-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("bookings.db").display());
    let sink = SqlConnector::connect_url(&url).await.unwrap();
    sink.create_table(
        &ObjectSchema::new("bookings")
            .field(FieldSchema::new("booking_id", FieldType::Text).required())
            .field(FieldSchema::new("campaign_name", FieldType::Text))
            .field(FieldSchema::new("campaign_id", FieldType::Text))
            .field(FieldSchema::new("match_status", FieldType::Text))
            .primary_key(["booking_id"]),
    )
    .await
    .unwrap();
    let store = StateStore::open_url(&url, CredentialKey::from_bytes([3; 32]))
        .await
        .unwrap();
    let conn = store
        .ensure_connection("pipeline", "bookings")
        .await
        .unwrap();
    let record = Record::new()
        .with("booking_id", "BK-9")
        .with("campaign_name", "Summer Promo")
        .with("campaign_id", "C-SUMMER")
        .with("match_status", "probable");
    let details = json!({
        "record": record,
        "candidates": [{"campaign_id": "C-SUMMER", "name": "Summer Promos", "score": 0.96, "strategy": "name_match"}],
    });
    let review = store
        .put_review(
            &conn,
            "bookings",
            "BK-9",
            ReviewReason::ProbableMatch,
            &details,
        )
        .await
        .unwrap();
    store.close().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "name: bookings\n{SHEET}destination:\n  url: \"{url}\"\n  table: bookings\nreview:\n  \
             listen: 127.0.0.1:{port}\n  tokens:\n    - {{name: olga, role: operator, token: \"${{REVIEW_TOKEN}}\"}}\n"
        ),
    )
    .unwrap();
    let token = "serve-operator-token-42";
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .arg("serve")
        .arg(&job)
        .env("REVIEW_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client()
            .get(format!("{base}/review/login"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "crm-sync serve did not listen on {base}");
    let r = client()
        .get(format!("{base}/review/api/counts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .get(format!("{base}/review/api/counts"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"matches": 1, "conflicts": 0, "dead_letters": 0})
    );
    let r = client()
        .post(format!(
            "{base}/review/api/matches/{}/accept",
            review.as_str()
        ))
        .bearer_auth(token)
        .json(&json!({"campaign_id": "C-SUMMER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = child.kill();
    let _ = child.wait();

    sink.close().await;
    let source = SqlConnector::connect(
        &crm_sql::SqlConfig::builder()
            .url(url.clone())
            .query(
                "SELECT booking_id, campaign_id, match_status, \
                 '2026-01-01T00:00:00Z' AS updated_at FROM bookings",
            )
            .primary_key(["booking_id"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let pages: Vec<crm_core::Page> = futures_util::TryStreamExt::try_collect(
        crm_core::Source::read(&source, crm_core::ReadRequest::full("bookings")),
    )
    .await
    .unwrap();
    let rows: Vec<(String, String)> = pages
        .into_iter()
        .flat_map(|p| p.changes)
        .filter_map(|c| match c {
            crm_core::Change::Upsert(r) => Some((
                review_world::text(r.get("campaign_id")),
                review_world::text(r.get("match_status")),
            )),
            crm_core::Change::Delete { .. } => None,
        })
        .collect();
    assert_eq!(rows, [("C-SUMMER".to_owned(), "matched".to_owned())]);
    source.close().await;

    // A token shorter than 16 characters is refused at start.
    std::fs::write(
        &job,
        format!(
            "name: bookings\n{SHEET}destination:\n  url: \"{url}\"\nreview:\n  tokens:\n    - {{name: olga, role: operator, token: short}}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .arg("serve")
        .arg(&job)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shorter than 16"), "{err}");
    assert!(!err.contains("short}"), "the token is not echoed: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// 1,234 queued matches are paged 100 at a time through the API and 50 at
/// a time through the pages' "Next page" links: each once, oldest first,
/// with the filters kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queues_are_paged_with_every_item_once() {
    use crm_sql::state::{CredentialKey, StateStore};
    use crm_sync::access::{Role, Tokens};
    use crm_sync::review::ReviewDesk;
    use crm_sync::serve::Server;
    use secrecy::SecretString;

    let dir = std::env::temp_dir().join(format!("crm-review-pages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("state.db").display());
    let store = StateStore::open_url(&url, CredentialKey::from_bytes([4; 32]))
        .await
        .unwrap();
    let bookings = store
        .ensure_connection("pipeline", "bookings")
        .await
        .unwrap();
    let other = store.ensure_connection("pipeline", "other").await.unwrap();
    for i in 0..1234 {
        let details = json!({"record": {"fields": {"booking_id": {"text": format!("BK-{i}")}}}, "candidates": []});
        store
            .put_review(
                &bookings,
                "bookings",
                &format!("BK-{i}"),
                ReviewReason::ProbableMatch,
                &details,
            )
            .await
            .unwrap();
    }
    store
        .put_review(
            &other,
            "bookings",
            "X-1",
            ReviewReason::ProbableMatch,
            &json!({}),
        )
        .await
        .unwrap();
    let mut tokens = Tokens::new();
    tokens.add("victor", Role::Viewer, &SecretString::from(VIEWER_TOKEN));
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let router = ReviewDesk::new(store.clone(), tokens).router();
    let task = tokio::spawn(async move {
        let _ = server.serve_router(router, std::future::pending()).await;
    });

    let conn = bookings.as_str();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/review/api/matches?limit=100&connection={conn}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let r = client()
            .get(format!("{base}{path}"))
            .bearer_auth(VIEWER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["record_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..1234).map(|i| format!("BK-{i}")).collect();
    assert_eq!(
        seen, expected,
        "every item once, in queue order, none of the other connection"
    );

    // The pages: 50 a time; the "Next page" link keeps the filter.
    let mut next = Some(format!("/review/matches?connection={conn}"));
    let mut pages = 0;
    let mut shown = 0;
    while let Some(path) = next.take() {
        let html = client()
            .get(format!("{base}{}", path.replace("&amp;", "&")))
            .bearer_auth(VIEWER_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        pages += 1;
        shown += html.matches("<article class=\"item match\"").count();
        assert!(html.contains("1234 waiting"), "counts follow the filter");
        next = html
            .split(r#"id="next-page" href=""#)
            .nth(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned());
        if let Some(n) = &next {
            assert!(n.contains(&format!("connection={conn}")), "{n}");
        }
    }
    assert_eq!((pages, shown), (25, 1234));

    // A page position that was not given out is refused, not guessed.
    let r = client()
        .get(format!("{base}/review/api/matches?after=garbage"))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    task.abort();
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
