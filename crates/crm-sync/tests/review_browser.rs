//! The review pages in a real headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`; `cargo xtask test` installs
//! them when missing). A person signs in, resolves a probable match, a
//! multiple match, a match found by name search, a three-field conflict
//! (one side, the other side, a typed value) and a dead letter retry; the
//! database, the audit log and the HubSpot simulator hold the results. A
//! viewer sees no action buttons, and a POST without the CSRF token is
//! refused. Screenshots of each queue page land in
//! `target/tmp/review-screenshots/`.
//!
//! Needs the PostgreSQL server of `CRM_TEST_POSTGRES_URL` (default the
//! local one); without it the test skips, unless `CI` is set: then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/review_world.rs"]
mod review_world;
mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use crm_sql::state::ReviewReason;

use review_world::{OPERATOR_TOKEN, VIEWER_TOKEN, World};
use webdriver::{Browser, Driver};

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review-screenshots")
}

async fn sign_in(b: &Browser, w: &World, token: &str) {
    b.goto(&format!("{}/review/login", w.base)).await;
    let field = b.find("#token").await;
    b.type_into(&field, token).await;
    b.click_to_next_page(&b.find("#sign-in").await).await;
    assert!(
        b.url().await.ends_with("/review/matches"),
        "signed in: {}",
        b.url().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_resolves_every_queue_in_a_real_browser() {
    let Some(w) = World::start("browser").await else {
        return;
    };
    let driver = Driver::start().await;
    let b = driver.session().await;

    // A viewer reads every queue but has no buttons.
    sign_in(&b, &w, VIEWER_TOKEN).await;
    assert_eq!(b.all("article.match").await.len(), 3);
    assert!(b.all("[data-action]").await.is_empty());
    assert!(b.all("input[type=radio]").await.is_empty());
    b.goto(&format!("{}/review/conflicts", w.base)).await;
    b.click_to_next_page(&b.find("article.conflict h3 a").await)
        .await;
    assert!(b.page_text().await.contains("+14155550222"));
    assert!(b.all("[data-action]").await.is_empty());
    b.goto(&format!("{}/review/dead-letters", w.base)).await;
    b.click_to_next_page(&b.find("article.dead-letter h3 a").await)
        .await;
    assert!(b.all("[data-action]").await.is_empty());
    assert!(b.all("#record").await.is_empty());
    b.clear_cookies().await;

    sign_in(&b, &w, OPERATOR_TOKEN).await;
    let text = b.page_text().await;
    assert!(text.contains("3 waiting"), "{text}");
    b.screenshot(&shots().join("matches.png")).await;

    // The probable match: its best candidate is preselected.
    let open = w.open(ReviewReason::ProbableMatch).await;
    let bk1 = open["BK-1"].id.as_str().to_owned();
    let bk5 = open["BK-5"].id.as_str().to_owned();
    b.click_to_next_page(
        &b.find(&format!("#item-{bk1} button[data-action=accept]"))
            .await,
    )
    .await;
    assert!(b.page_text().await.contains("Match accepted"));
    let rows = w.booking_rows().await;
    assert_eq!(rows["BK-1"].0, "C-SUMMER");
    assert_eq!(rows["BK-1"].1, "matched");
    let audit = w.audited("bookings", "BK-1", "review.match_accepted").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "alice");

    // The multiple match: the second candidate.
    let bk2 = w.open(ReviewReason::MultipleMatch).await["BK-2"]
        .id
        .as_str()
        .to_owned();
    b.goto(&format!("{}/review/matches/{bk2}", w.base)).await;
    b.click(&b.find(&format!("#pick-{bk2}-1")).await).await;
    b.click_to_next_page(
        &b.find(&format!("#item-{bk2} button[data-action=accept]"))
            .await,
    )
    .await;
    let rows = w.booking_rows().await;
    assert_eq!(rows["BK-2"].0, "C-AUT-2");
    assert_eq!(rows["BK-2"].1, "matched");
    let audit = w.audited("bookings", "BK-2", "review.match_accepted").await;
    assert_eq!(
        audit[0].new_values.as_ref().unwrap()["campaign_id"],
        "C-AUT-2"
    );

    // A forged POST: the reject form of BK-5 sent with the session cookie
    // but without its CSRF token.
    b.goto(&format!("{}/review/matches", w.base)).await;
    b.run(&format!(
        "document.querySelector('#item-{bk5} form[action$=\"/reject\"] input[name=csrf]').remove();"
    ))
    .await;
    b.click_to_next_page(
        &b.find(&format!("#item-{bk5} button[data-action=reject]"))
            .await,
    )
    .await;
    let text = b.page_text().await;
    assert!(text.contains("403") && text.contains("CSRF"), "{text}");
    assert_eq!(w.booking_rows().await["BK-5"].1, "probable");

    // BK-5 gets a campaign found by name.
    b.goto(&format!("{}/review/matches/{bk5}", w.base)).await;
    let search = b.find("#campaign-search").await;
    b.type_into(&search, "winter").await;
    b.click_to_next_page(&b.find("#search").await).await;
    b.click_to_next_page(&b.find("button[data-action=accept-found]").await)
        .await;
    assert_eq!(w.booking_rows().await["BK-5"].0, "C-WINTER");

    // The conflict: first name from the platform, phone from HubSpot, a
    // typed lifecycle stage.
    b.goto(&format!("{}/review/conflicts", w.base)).await;
    b.screenshot(&shots().join("conflicts.png")).await;
    b.click_to_next_page(&b.find("article.conflict h3 a").await)
        .await;
    assert!(b.page_text().await.contains("+14155550222"));
    b.screenshot(&shots().join("conflict.png")).await;
    b.click(&b.find("#pick-first_name-platform").await).await;
    b.click(&b.find("#pick-phone-crm").await).await;
    b.click(&b.find("#pick-lifecycle-value").await).await;
    let typed = b.find("#value-lifecycle").await;
    b.type_into(&typed, "evangelist").await;
    b.click_to_next_page(&b.find("button[data-action=resolve]").await)
        .await;
    assert!(b.page_text().await.contains("Conflict resolved"));
    let (pl, hs) = w.contact().await;
    for side in [&pl, &hs] {
        assert_eq!(side["first_name"], "Annie");
        assert_eq!(side["phone"], "+14155550222");
        assert_eq!(side["lifecycle"], "evangelist");
    }
    let resolved = w.audited("contacts", "pg-1", "resolve_conflict").await;
    assert_eq!(resolved[0].actor, "alice");

    // The dead letter: fix the budget, retry.
    b.goto(&format!("{}/review/dead-letters", w.base)).await;
    b.screenshot(&shots().join("dead-letters.png")).await;
    b.click_to_next_page(&b.find("article.dead-letter h3 a").await)
        .await;
    let record = b.find("#record").await;
    b.type_into(
        &record,
        r#"{"booking_id": "BK-4", "campaign_name": "Winter Clearence", "advertiser_name": "Acme", "budget": "5.00"}"#,
    )
    .await;
    b.click_to_next_page(&b.find("button[data-action=retry]").await)
        .await;
    assert!(b.page_text().await.contains("the record was written"));
    assert_eq!(w.booking_rows().await["BK-4"].2, "5.00");
    assert_eq!(
        w.audited("bookings", "BK-4", "review.dead_letter_retried")
            .await
            .len(),
        1
    );
    assert!(
        w.store
            .dead_letter_page(&Default::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    b.quit().await;
    w.stop().await;
}
