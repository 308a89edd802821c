//! Review-queue and dead-letter pages (keyset pagination, filters, counts)
//! on each backend.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use crm_core::ErrorKind;
use crm_sql::state::{
    CredentialKey, DeadLetter, DeadLetterId, PageAfter, QueueFilter, ReviewId, ReviewItem,
    ReviewReason, ReviewStatus, StateStore,
};
use crm_sql::{DatabaseKind, SqlConnector};
use serde_json::json;

use crate::harness::TestDb;

use ReviewReason::{ManualConflict, MultipleMatch, ProbableMatch};

async fn open(db: &TestDb) -> StateStore {
    StateStore::open(
        &db.config().build().unwrap(),
        CredentialKey::from_bytes([3; 32]),
    )
    .await
    .expect("open state store")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// `t` as an SQL literal of the column type the state store uses on `kind`.
pub(crate) fn literal(kind: DatabaseKind, t: DateTime<Utc>) -> String {
    match kind {
        DatabaseKind::Sqlite => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
        DatabaseKind::Postgres => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
        _ => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
    }
}

/// Sets `col` of the rows `ids` of `table` to `t`, all to the same value.
pub(crate) async fn set_time(
    raw: &SqlConnector,
    kind: DatabaseKind,
    table: &str,
    col: &str,
    ids: &[&str],
    t: DateTime<Utc>,
) {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = raw
        .execute_unprepared(&format!(
            "UPDATE {table} SET {col} = {} WHERE id IN ({list})",
            literal(kind, t)
        ))
        .await
        .unwrap();
    assert_eq!(n, ids.len() as u64, "{table}.{col}");
}

/// Every page of open reviews, following tokens; asserts page sizes.
async fn review_pages(
    store: &StateStore,
    reasons: &[ReviewReason],
    filter: &QueueFilter,
    limit: u32,
) -> Vec<ReviewItem> {
    let mut out = Vec::new();
    let mut after: Option<PageAfter> = None;
    loop {
        let page = store
            .review_page(reasons, filter, after.as_ref(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { break };
        let token = PageAfter::new(last.created_at, last.id.as_str()).encode();
        after = Some(PageAfter::decode(&token).expect("token reads back"));
        let short = page.len() < limit as usize;
        out.extend(page);
        assert!(out.len() < 10_000, "paging does not end");
        if short {
            // A short page is the last one.
            let rest = store
                .review_page(reasons, filter, after.as_ref(), limit)
                .await
                .unwrap();
            assert!(rest.is_empty());
            break;
        }
    }
    out
}

fn ids_of(items: &[ReviewItem]) -> Vec<ReviewId> {
    items.iter().map(|i| i.id.clone()).collect()
}

fn assert_once_in_order(items: &[ReviewItem]) {
    let unique: HashSet<_> = items.iter().map(|i| &i.id).collect();
    assert_eq!(unique.len(), items.len(), "an item repeats");
    for w in items.windows(2) {
        assert!(
            (w[0].created_at, w[0].id.as_str()) < (w[1].created_at, w[1].id.as_str()),
            "out of order: {:?} then {:?}",
            (w[0].created_at, &w[0].id),
            (w[1].created_at, &w[1].id)
        );
    }
}

pub(crate) async fn review_pages_visit_every_item_once_in_order(db: TestDb) {
    let store = open(&db).await;
    let raw = db.connect().await;
    let conn = store.ensure_connection("hubspot", "pages").await.unwrap();
    let reasons = [ProbableMatch, MultipleMatch, ManualConflict];
    let mut ids = Vec::new();
    for i in 0..250 {
        let id = store
            .add_review(
                Some(&conn),
                "contacts",
                &format!("r-{i}"),
                reasons[i % 3],
                &json!({"i": i}),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    // Deterministic ties: items 100..200 share one time, the others go by
    // fours; every 7th keeps the time it was inserted with (sub-microsecond
    // clock, as stored by the engine).
    let base = at("2024-03-01T10:00:00.123456Z");
    let mut groups: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 7 == 6 {
            continue;
        }
        let g = if (100..200).contains(&i) {
            1000
        } else {
            i as i64 / 4
        };
        groups.entry(g).or_default().push(id.as_str());
    }
    for (g, members) in &groups {
        let t = base + Duration::seconds(*g) + Duration::microseconds(*g);
        set_time(&raw, db.kind, "crm_review_queue", "created_at", members, t).await;
    }
    let chosen = [ProbableMatch, ManualConflict];
    let all = store.open_reviews(1000).await.unwrap();
    assert_eq!(all.len(), 250);
    let mut expected: Vec<ReviewItem> = all
        .into_iter()
        .filter(|r| chosen.contains(&r.reason))
        .collect();
    let db_order = ids_of(&expected);
    expected.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
    assert_eq!(db_order, ids_of(&expected), "engine order is (time, id)");
    assert_eq!(expected.len(), 167);
    // The big tie straddles the first page boundary.
    assert_eq!(expected[99].created_at, expected[100].created_at);
    assert_once_in_order(&expected);

    let filter = QueueFilter::new().connection(conn.clone());
    for limit in [100, 7, 1] {
        let got = review_pages(&store, &chosen, &filter, limit).await;
        assert_eq!(ids_of(&got), ids_of(&expected), "limit {limit}");
        assert_eq!(got, expected);
    }

    // Page by page at 100, with an item of page 2 closed and one added in
    // between: nothing skipped, nothing repeated.
    let page1 = store
        .review_page(&chosen, &filter, None, 100)
        .await
        .unwrap();
    assert_eq!(ids_of(&page1), ids_of(&expected[..100]));
    let last = page1.last().unwrap();
    let token = PageAfter::new(last.created_at, last.id.as_str()).encode();
    let closed = &expected[120].id;
    assert!(
        store
            .resolve_review(closed, ReviewStatus::Dismissed, &json!({}))
            .await
            .unwrap()
    );
    let added = store
        .add_review(Some(&conn), "contacts", "late", ProbableMatch, &json!({}))
        .await
        .unwrap();
    let after = PageAfter::decode(&token).unwrap();
    let page2 = store
        .review_page(&chosen, &filter, Some(&after), 100)
        .await
        .unwrap();
    let mut want: Vec<ReviewId> = expected[100..]
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| id != closed)
        .collect();
    want.push(added);
    assert_eq!(ids_of(&page2), want);
    assert_eq!(page2.len(), 67);
    let last = page2.last().unwrap();
    let after = PageAfter::new(last.created_at, last.id.as_str());
    assert!(
        store
            .review_page(&chosen, &filter, Some(&after), 100)
            .await
            .unwrap()
            .is_empty()
    );
    raw.close().await;
    store.close().await;
}

pub(crate) async fn review_filters_and_counts(db: TestDb) {
    let store = open(&db).await;
    let raw = db.connect().await;
    let a = store.ensure_connection("hubspot", "a").await.unwrap();
    let b = store.ensure_connection("hubspot", "b").await.unwrap();
    // One microsecond apart: the bounds are exact at the store's precision.
    let t0 = at("2024-05-01T08:00:00.000001Z");
    let t1 = t0 + Duration::microseconds(1);
    let t2 = t0 + Duration::seconds(1);
    let t3 = t0 + Duration::days(1);
    let add = async |conn: Option<&crm_sql::state::ConnectionId>,
                     object: &str,
                     record: &str,
                     reason: ReviewReason,
                     t: DateTime<Utc>| {
        let id = store
            .add_review(conn, object, record, reason, &json!({}))
            .await
            .unwrap();
        set_time(
            &raw,
            db.kind,
            "crm_review_queue",
            "created_at",
            &[id.as_str()],
            t,
        )
        .await;
        id
    };
    let a0 = add(Some(&a), "contacts", "c0", ProbableMatch, t0).await;
    let a1 = add(Some(&a), "contacts", "c1", MultipleMatch, t1).await;
    let a2 = add(Some(&a), "contacts", "c2", ManualConflict, t2).await;
    let a3 = add(Some(&a), "contacts", "c3", ProbableMatch, t3).await;
    let ac = add(Some(&a), "companies", "k1", ProbableMatch, t1).await;
    let b2 = add(Some(&b), "contacts", "c2", ProbableMatch, t2).await;
    let n0 = add(None, "contacts", "c9", ManualConflict, t0).await;
    let resolved = add(Some(&a), "contacts", "c4", ProbableMatch, t1).await;
    let dismissed = add(Some(&a), "contacts", "c5", MultipleMatch, t1).await;
    assert!(
        store
            .resolve_review(&resolved, ReviewStatus::Resolved, &json!({"ok": 1}))
            .await
            .unwrap()
    );
    assert!(
        store
            .resolve_review(&dismissed, ReviewStatus::Dismissed, &json!({}))
            .await
            .unwrap()
    );
    let every = [ProbableMatch, MultipleMatch, ManualConflict];
    let page = async |reasons: &[ReviewReason], f: QueueFilter| -> HashSet<ReviewId> {
        let items = store.review_page(reasons, &f, None, 100).await.unwrap();
        assert!(items.iter().all(|i| i.status == ReviewStatus::Open));
        assert_once_in_order(&items);
        items.into_iter().map(|i| i.id).collect()
    };
    let set = |ids: &[&ReviewId]| ids.iter().map(|i| (*i).clone()).collect::<HashSet<_>>();

    assert_eq!(
        page(&every, QueueFilter::new()).await,
        set(&[&a0, &a1, &a2, &a3, &ac, &b2, &n0])
    );
    assert_eq!(
        page(&every, QueueFilter::new().connection(a.clone())).await,
        set(&[&a0, &a1, &a2, &a3, &ac])
    );
    assert_eq!(
        page(
            &every,
            QueueFilter::new().connection(a.clone()).object("contacts")
        )
        .await,
        set(&[&a0, &a1, &a2, &a3])
    );
    assert_eq!(
        page(&every, QueueFilter::new().object("contacts")).await,
        set(&[&a0, &a1, &a2, &a3, &b2, &n0])
    );
    assert_eq!(
        page(&every, QueueFilter::new().before(t1)).await,
        set(&[&a0, &n0])
    );
    assert_eq!(
        page(&every, QueueFilter::new().since(t1)).await,
        set(&[&a1, &a2, &a3, &ac, &b2])
    );
    assert_eq!(
        page(&every, QueueFilter::new().since(t1).before(t3)).await,
        set(&[&a1, &a2, &ac, &b2])
    );
    assert_eq!(
        page(&[ProbableMatch], QueueFilter::new().connection(a.clone())).await,
        set(&[&a0, &a3, &ac])
    );
    assert_eq!(
        page(
            &[MultipleMatch, ManualConflict],
            QueueFilter::new().object("contacts").before(t2)
        )
        .await,
        set(&[&a1, &n0])
    );
    assert!(page(&[], QueueFilter::new()).await.is_empty());
    assert!(
        store
            .review_page(&every, &QueueFilter::new(), None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Filters and the keyset together.
    let after = PageAfter::new(t1, a1.as_str().to_owned());
    let rest = store
        .review_page(&every, &QueueFilter::new().before(t3), Some(&after), 100)
        .await
        .unwrap();
    let mut want: Vec<ReviewId> = Vec::new();
    if ac.as_str() > a1.as_str() {
        want.push(ac.clone());
    }
    let mut at_t2 = vec![a2.clone(), b2.clone()];
    at_t2.sort();
    want.extend(at_t2);
    assert_eq!(ids_of(&rest), want);

    let counts = async |f: QueueFilter| store.count_open_reviews_by_reason(&f).await.unwrap();
    assert_eq!(
        counts(QueueFilter::new()).await,
        [(ProbableMatch, 4), (MultipleMatch, 1), (ManualConflict, 2)]
    );
    assert_eq!(
        counts(QueueFilter::new().connection(a.clone())).await,
        [(ProbableMatch, 3), (MultipleMatch, 1), (ManualConflict, 1)]
    );
    assert_eq!(
        counts(QueueFilter::new().connection(b.clone())).await,
        [(ProbableMatch, 1), (MultipleMatch, 0), (ManualConflict, 0)]
    );
    assert_eq!(
        counts(QueueFilter::new().object("nothing")).await,
        [(ProbableMatch, 0), (MultipleMatch, 0), (ManualConflict, 0)]
    );
    assert_eq!(
        counts(QueueFilter::new().object("contacts").since(t1).before(t3)).await,
        [(ProbableMatch, 1), (MultipleMatch, 1), (ManualConflict, 1)]
    );
    raw.close().await;
    store.close().await;
}

pub(crate) async fn dead_letter_pages_and_edits(db: TestDb) {
    let store = open(&db).await;
    let raw = db.connect().await;
    let a = store.ensure_connection("hubspot", "a").await.unwrap();
    let b = store.ensure_connection("hubspot", "b").await.unwrap();
    let k1 = store
        .put_dead_letter(&a, "contacts", "k1", "validate", &json!({"v": 1}), "bad")
        .await
        .unwrap();
    let again = store
        .put_dead_letter(&a, "contacts", "k1", "validate", &json!({"v": 2}), "worse")
        .await
        .unwrap();
    assert_eq!(again, k1);
    let k2 = store
        .put_dead_letter(&a, "contacts", "k2", "write", &json!({"v": 3}), "503")
        .await
        .unwrap();
    let ac = store
        .add_dead_letter(Some(&a), "companies", &json!({"v": 4}), "write", "409")
        .await
        .unwrap();
    let bc = store
        .add_dead_letter(Some(&b), "contacts", &json!({"v": 5}), "write", "409")
        .await
        .unwrap();
    let nc = store
        .add_dead_letter(None, "contacts", &json!({"v": 6}), "map", "no field")
        .await
        .unwrap();
    let t0 = at("2024-06-01T00:00:00.999999Z");
    let t1 = t0 + Duration::microseconds(1);
    let t2 = t1 + Duration::hours(1);
    let table = "crm_dead_letters";
    set_time(
        &raw,
        db.kind,
        table,
        "first_failed_at",
        &[k1.as_str(), k2.as_str(), ac.as_str()],
        t0,
    )
    .await;
    set_time(&raw, db.kind, table, "first_failed_at", &[bc.as_str()], t1).await;
    set_time(&raw, db.kind, table, "first_failed_at", &[nc.as_str()], t2).await;

    let mut tied = vec![k1.clone(), k2.clone(), ac.clone()];
    tied.sort();
    let mut expected = tied;
    expected.extend([bc.clone(), nc.clone()]);
    let ids = |v: &[DeadLetter]| v.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    for limit in [2, 100] {
        let mut got = Vec::new();
        let mut after: Option<PageAfter> = None;
        loop {
            let page = store
                .dead_letter_page(&QueueFilter::new(), after.as_ref(), limit)
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            let token = PageAfter::new(last.first_failed_at, last.id.as_str()).encode();
            after = PageAfter::decode(&token);
            got.extend(page);
            assert!(got.len() < 100);
        }
        assert_eq!(ids(&got), expected, "limit {limit}");
    }
    let page = async |f: QueueFilter| {
        let v = store.dead_letter_page(&f, None, 100).await.unwrap();
        let n = store.count_dead_letters_where(&f).await.unwrap();
        assert_eq!(n, v.len() as u64);
        v.iter()
            .map(|d| d.id.clone())
            .collect::<HashSet<DeadLetterId>>()
    };
    let set = |v: &[&DeadLetterId]| v.iter().map(|i| (*i).clone()).collect::<HashSet<_>>();
    assert_eq!(page(QueueFilter::new()).await.len(), 5);
    assert_eq!(
        page(QueueFilter::new().connection(a.clone())).await,
        set(&[&k1, &k2, &ac])
    );
    assert_eq!(
        page(QueueFilter::new().object("contacts")).await,
        set(&[&k1, &k2, &bc, &nc])
    );
    assert_eq!(
        page(QueueFilter::new().connection(a.clone()).object("contacts")).await,
        set(&[&k1, &k2])
    );
    assert_eq!(
        page(QueueFilter::new().before(t1)).await,
        set(&[&k1, &k2, &ac])
    );
    assert_eq!(page(QueueFilter::new().since(t1)).await, set(&[&bc, &nc]));
    assert_eq!(
        page(QueueFilter::new().since(t1).before(t2)).await,
        set(&[&bc])
    );
    assert!(page(QueueFilter::new().object("nothing")).await.is_empty());

    // One by id, with its key; every attempt count is paged.
    let got = store.dead_letter(&k1).await.unwrap().unwrap();
    assert_eq!(got.record_key.as_deref(), Some("k1"));
    assert_eq!(got.attempts, 2);
    assert_eq!(got.record, json!({"v": 2}));
    assert_eq!(got.error, "worse");
    assert_eq!(got.first_failed_at, t0);
    let got = store.dead_letter(&ac).await.unwrap().unwrap();
    assert_eq!(got.record_key, None);
    assert_eq!(got.object, "companies");
    assert!(
        store
            .dead_letter(&DeadLetterId::new("nope"))
            .await
            .unwrap()
            .is_none()
    );
    let retryable = store.dead_letters(&a, 10, 10).await.unwrap();
    assert!(
        retryable
            .iter()
            .any(|d| d.id == k2 && d.record_key.as_deref() == Some("k2"))
    );

    // Edits replace only the record.
    let before = store.dead_letter(&k1).await.unwrap().unwrap();
    let edited = json!({"v": 2, "email": "fixed@example.com"});
    store.edit_dead_letter(&k1, &edited).await.unwrap();
    let after = store.dead_letter(&k1).await.unwrap().unwrap();
    assert_eq!(after.record, edited);
    assert_eq!(
        (
            &after.error,
            after.attempts,
            after.first_failed_at,
            after.last_failed_at
        ),
        (
            &before.error,
            before.attempts,
            before.first_failed_at,
            before.last_failed_at
        )
    );
    // The same edit again still finds the row.
    store.edit_dead_letter(&k1, &edited).await.unwrap();
    let err = store
        .edit_dead_letter(&DeadLetterId::new("nope"), &edited)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound, "{err}");
    raw.close().await;
    store.close().await;
}

pub(crate) async fn resolved_reviews_for_latest_decision(db: TestDb) {
    let store = open(&db).await;
    let raw = db.connect().await;
    let a = store.ensure_connection("hubspot", "a").await.unwrap();
    let b = store.ensure_connection("hubspot", "b").await.unwrap();
    let t = |h: i64| at("2024-07-01T00:00:00.000100Z") + Duration::hours(h);
    let close = async |conn: &crm_sql::state::ConnectionId,
                       object: &str,
                       record: &str,
                       reason: ReviewReason,
                       status: Option<ReviewStatus>,
                       created: i64,
                       resolved: i64| {
        let id = store
            .add_review(Some(conn), object, record, reason, &json!({}))
            .await
            .unwrap();
        let table = "crm_review_queue";
        set_time(
            &raw,
            db.kind,
            table,
            "created_at",
            &[id.as_str()],
            t(created),
        )
        .await;
        if let Some(status) = status {
            assert!(
                store
                    .resolve_review(&id, status, &json!({"by": id.as_str()}))
                    .await
                    .unwrap()
            );
            set_time(
                &raw,
                db.kind,
                table,
                "resolved_at",
                &[id.as_str()],
                t(resolved),
            )
            .await;
        }
        id
    };
    use ReviewStatus::{Dismissed, Resolved};
    // r1: decided twice (the later decision counts, though its item is
    // older), dismissed later still, and open again.
    let r1_latest = close(&a, "contacts", "r1", ProbableMatch, Some(Resolved), 0, 5).await;
    close(&a, "contacts", "r1", ProbableMatch, Some(Resolved), 1, 3).await;
    close(&a, "contacts", "r1", ProbableMatch, Some(Dismissed), 2, 9).await;
    close(&a, "contacts", "r1", ProbableMatch, None, 10, 0).await;
    // r2: only dismissed and open.
    close(&a, "contacts", "r2", ProbableMatch, Some(Dismissed), 0, 4).await;
    close(&a, "contacts", "r2", MultipleMatch, None, 5, 0).await;
    // r3: resolved for another reason.
    let r3 = close(&a, "contacts", "r3", ManualConflict, Some(Resolved), 0, 1).await;
    // r4: another object; r5: another connection.
    close(&a, "companies", "r4", ProbableMatch, Some(Resolved), 0, 1).await;
    close(&b, "contacts", "r5", MultipleMatch, Some(Resolved), 0, 1).await;
    // r6: resolved once.
    let r6 = close(&a, "contacts", "r6", MultipleMatch, Some(Resolved), 3, 4).await;

    // More keys than one statement binds: the hits sit in different chunks.
    let mut keys: Vec<String> = (0..1200).map(|i| format!("filler-{i}")).collect();
    keys[0] = "r1".into();
    keys[700] = "r6".into();
    keys[1100] = "r2".into();
    keys[1101] = "r3".into();
    keys[1102] = "r4".into();
    keys[1199] = "r5".into();
    let got = store
        .resolved_reviews_for(&a, "contacts", &keys, &[ProbableMatch, MultipleMatch])
        .await
        .unwrap();
    let mut found: Vec<(&str, &ReviewId)> = got.iter().map(|(k, v)| (k.as_str(), &v.id)).collect();
    found.sort();
    assert_eq!(found, [("r1", &r1_latest), ("r6", &r6)]);
    let r1 = &got["r1"];
    assert_eq!(r1.status, Resolved);
    assert_eq!(r1.record_id, "r1");
    assert_eq!(r1.resolved_at, Some(t(5)));
    assert_eq!(r1.resolution, Some(json!({"by": r1_latest.as_str()})));

    let manual = store
        .resolved_reviews_for(&a, "contacts", &keys, &[ManualConflict])
        .await
        .unwrap();
    assert_eq!(manual.len(), 1);
    assert_eq!(manual["r3"].id, r3);
    assert!(
        store
            .resolved_reviews_for(&a, "contacts", &keys, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .resolved_reviews_for(&a, "contacts", &[], &[ProbableMatch])
            .await
            .unwrap()
            .is_empty()
    );
    raw.close().await;
    store.close().await;
}
