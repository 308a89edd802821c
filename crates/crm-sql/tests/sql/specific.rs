//! Backend-specific pitfalls: MySQL zero dates, session time zones.

use chrono::{TimeZone, Utc};
use crm_core::Value;
use crm_sql::{DatabaseKind, SqlConnector};

use crate::harness::run;
use crate::suite::read_all;

/// `0000-00-00` in MySQL reads as null instead of failing the sync.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_zero_dates_read_as_null() {
    run(DatabaseKind::MySql, |db| async move {
        let conn = SqlConnector::connect(&db.config().max_connections(1).build().unwrap())
            .await
            .unwrap();
        conn.execute_unprepared("SET SESSION sql_mode = ''").await.unwrap();
        conn.execute_unprepared(
            "CREATE TABLE z (id INT NOT NULL PRIMARY KEY, d DATE NOT NULL, dt DATETIME NOT NULL, \
             ts TIMESTAMP NULL, updated_at DATETIME(6) NOT NULL)",
        )
        .await
        .unwrap();
        conn.execute_unprepared(
            "INSERT INTO z VALUES \
             (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2024-01-15 10:00:00'), \
             (2, '2024-01-15', '2024-01-15 10:00:00', '2024-01-15 10:00:00', '2024-01-15 10:00:01'), \
             (3, '2024-00-10', '2024-02-00 00:00:00', NULL, '2024-01-15 10:00:02')",
        )
        .await
        .unwrap();
        let (rows, _, _) = read_all(&conn, "z", None, 10).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].get("d"), Some(&Value::Null));
        assert_eq!(rows[0].get("dt"), Some(&Value::Null));
        assert_eq!(rows[0].get("ts"), Some(&Value::Null));
        assert_eq!(rows[1].get("d").unwrap().to_string(), "2024-01-15");
        assert_eq!(
            rows[1].get("ts"),
            Some(&Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap()))
        );
        assert_eq!(rows[2].get("d"), Some(&Value::Null));
        assert_eq!(rows[2].get("dt"), Some(&Value::Null));
        conn.close().await;
    })
    .await;
}

/// Sessions run in UTC whatever the database default, so cursors compare
/// instants, not wall-clock text.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_time_zone_is_utc() {
    run(DatabaseKind::Postgres, |db| async move {
        let admin = SqlConnector::connect(&db.config().build().unwrap()).await.unwrap();
        admin
            .execute_unprepared(&format!("ALTER DATABASE {} SET timezone TO 'Asia/Bangkok'", db.name))
            .await
            .unwrap();
        admin.close().await;
        let conn = db.connect().await;
        conn.execute_unprepared(
            "CREATE TABLE ev (id INT PRIMARY KEY, naive TIMESTAMP NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .unwrap();
        conn.execute_unprepared(
            "INSERT INTO ev VALUES (1, '2024-01-15 10:00:00', '2024-01-15 10:00:00+07'), \
             (2, '2024-01-15 10:00:00', '2024-01-15 10:00:00+00')",
        )
        .await
        .unwrap();
        let (rows, cursor, _) = read_all(&conn, "ev", None, 1).await;
        let at = |h| Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, h, 0, 0).unwrap());
        assert_eq!(rows[0].get("updated_at"), Some(&at(3)));
        assert_eq!(rows[1].get("updated_at"), Some(&at(10)));
        // A naive timestamp is read as UTC.
        assert_eq!(rows[0].get("naive"), Some(&at(10)));
        conn.execute_unprepared("INSERT INTO ev VALUES (3, '2024-01-15 11:00:00', '2024-01-15 11:00:00+00')")
            .await
            .unwrap();
        let (rows, _, _) = read_all(&conn, "ev", cursor, 1).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get("id"), Some(&Value::Int(3)));
        // The session itself is in UTC.
        let q = SqlConnector::connect(
            &db.config()
                .query("SELECT current_setting('TimeZone') AS tz, 1 AS id, now() AS updated_at WHERE now() >= :last_sync")
                .primary_key(["id"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        let (rows, _, _) = read_all(&q, "session", None, 1).await;
        assert_eq!(rows[0].text("tz"), Some("UTC"));
        q.close().await;
        conn.close().await;
    })
    .await;
}

/// MySQL sessions run at +00:00, so TIMESTAMP columns read as UTC.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_session_time_zone_is_utc() {
    run(DatabaseKind::MySql, |db| async move {
        let q = SqlConnector::connect(
            &db.config()
                .query("SELECT @@session.time_zone AS tz, 1 AS id, NOW(6) AS updated_at FROM DUAL WHERE NOW(6) >= :last_sync")
                .primary_key(["id"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        let (rows, _, _) = read_all(&q, "session", None, 1).await;
        assert_eq!(rows[0].text("tz"), Some("+00:00"));
        let now = rows[0].updated_at.unwrap();
        assert!((Utc::now() - now).num_seconds().abs() < 60, "{now}");
        q.close().await;
    })
    .await;
}
