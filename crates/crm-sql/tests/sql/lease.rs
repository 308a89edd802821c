//! Leases in the state store on each backend.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use crm_sql::state::{CredentialKey, StateStore};

use crate::harness::TestDb;

async fn open(db: &TestDb) -> StateStore {
    StateStore::open(
        &db.config().build().unwrap(),
        CredentialKey::from_bytes([3; 32]),
    )
    .await
    .expect("open state store")
}

const MINUTE: Duration = Duration::from_secs(60);

pub(crate) async fn lease_has_one_holder(db: TestDb) {
    // Two stores, two pools: as two processes sharing the database.
    let a = open(&db).await;
    let b = open(&db).await;
    let t0 = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
    let name = "sync:hubspot-prod";
    assert!(a.try_acquire_lease_at(name, "a", MINUTE, t0).await.unwrap());
    assert!(!b.try_acquire_lease_at(name, "b", MINUTE, t0).await.unwrap());
    // The holder may take it again (at the same instant too) and renew.
    assert!(a.try_acquire_lease_at(name, "a", MINUTE, t0).await.unwrap());
    let t1 = t0 + chrono::Duration::seconds(40);
    assert!(a.renew_lease_at(name, "a", MINUTE, t1).await.unwrap());
    assert!(!b.renew_lease_at(name, "b", MINUTE, t1).await.unwrap());
    // Renewed to t1 + 60 s: still held at t0 + 90 s.
    let t2 = t0 + chrono::Duration::seconds(90);
    assert!(!b.try_acquire_lease_at(name, "b", MINUTE, t2).await.unwrap());
    let lease = b.lease(name).await.unwrap().unwrap();
    assert_eq!(lease.holder, "a");
    assert_eq!(lease.expires_at, t1 + chrono::Duration::seconds(60));
    // Only the holder releases it; then another takes it.
    assert!(!b.release_lease(name, "b").await.unwrap());
    assert!(a.release_lease(name, "a").await.unwrap());
    assert!(b.lease(name).await.unwrap().is_none());
    assert!(b.try_acquire_lease_at(name, "b", MINUTE, t2).await.unwrap());
    // Other names are independent.
    assert!(
        a.try_acquire_lease_at("sync:other", "a", MINUTE, t2)
            .await
            .unwrap()
    );
    // The wall-clock forms work too.
    assert!(a.try_acquire_lease("wall", "a", MINUTE).await.unwrap());
    assert!(!b.try_acquire_lease("wall", "b", MINUTE).await.unwrap());
    assert!(a.renew_lease("wall", "a", MINUTE).await.unwrap());
    a.close().await;
    b.close().await;
}

pub(crate) async fn expired_lease_is_retaken(db: TestDb) {
    let a = open(&db).await;
    let b = open(&db).await;
    let t0 = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
    assert!(a.try_acquire_lease_at("l", "a", MINUTE, t0).await.unwrap());
    let almost = t0 + chrono::Duration::seconds(59);
    assert!(
        !b.try_acquire_lease_at("l", "b", MINUTE, almost)
            .await
            .unwrap()
    );
    let after = t0 + chrono::Duration::seconds(61);
    assert!(
        b.try_acquire_lease_at("l", "b", MINUTE, after)
            .await
            .unwrap()
    );
    // The old holder has lost it: renewing and releasing say so.
    assert!(!a.renew_lease_at("l", "a", MINUTE, after).await.unwrap());
    assert!(!a.release_lease("l", "a").await.unwrap());
    let lease = a.lease("l").await.unwrap().unwrap();
    assert_eq!(lease.holder, "b");
    assert_eq!(lease.acquired_at, after);
    a.close().await;
    b.close().await;
}

pub(crate) async fn racing_acquirers_get_one_lease(db: TestDb) {
    let stores = [open(&db).await, open(&db).await, open(&db).await];
    let t0 = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
    for round in 0..5i64 {
        // Each round starts after the previous round's lease has expired,
        // so every round races both the INSERT and the expired UPDATE path.
        let now = t0 + chrono::Duration::minutes(2 * round);
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let s = stores[i % stores.len()].clone();
                tokio::spawn(async move {
                    s.try_acquire_lease_at("race", &format!("h{i}"), MINUTE, now)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            if t.await.unwrap() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
    for s in stores {
        s.close().await;
    }
}
