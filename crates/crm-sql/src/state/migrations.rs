//! Versioned migrations of the state store, written once with type tokens
//! that each engine fills in. Applied versions are recorded in
//! `crm_schema_migrations`; running them again changes nothing. Concurrent
//! migrators serialise on an advisory lock (PostgreSQL) or a named lock
//! (MySQL); every statement is idempotent besides.

use crate::config::DatabaseKind;
use crate::db::{Arg, DbError, Pool, RowExt};

/// Rewrites `?` placeholders to `$1, $2, ...` on PostgreSQL. Only for this
/// crate's own SQL, which has no `?` inside literals.
pub(crate) fn placeholders(sql: &str, dialect: DatabaseKind) -> String {
    if dialect != DatabaseKind::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// One migration: a version, a name, statements with type tokens.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// Every migration, oldest first. Never edit a released one: add another.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "state store tables",
        statements: &[
            "CREATE TABLE IF NOT EXISTS crm_connections (
            id {id} NOT NULL PRIMARY KEY,
            provider {key} NOT NULL,
            name {key} NOT NULL,
            status {key} NOT NULL,
            credentials {text},
            settings {text} NOT NULL,
            last_sync_at {ts},
            last_error {text},
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL,
            UNIQUE (provider, name)
        )",
            "CREATE TABLE IF NOT EXISTS crm_sync_runs (
            id {id} NOT NULL PRIMARY KEY,
            connection_id {id} NOT NULL REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            sync_type {key} NOT NULL,
            direction {key} NOT NULL,
            status {key} NOT NULL,
            records_processed {int} NOT NULL DEFAULT 0,
            records_success {int} NOT NULL DEFAULT 0,
            records_failed {int} NOT NULL DEFAULT 0,
            errors {text} NOT NULL,
            started_at {ts} NOT NULL,
            completed_at {ts}
        )",
            "CREATE INDEX {ine} crm_sync_runs_conn_idx ON crm_sync_runs (connection_id, started_at)",
            "CREATE TABLE IF NOT EXISTS crm_field_mappings (
            id {id} NOT NULL PRIMARY KEY,
            connection_id {id} NOT NULL REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            local_field {key} NOT NULL,
            remote_field {key} NOT NULL,
            direction {key} NOT NULL,
            transform {text},
            is_custom {bool} NOT NULL,
            position {int} NOT NULL
        )",
            "CREATE INDEX {ine} crm_field_mappings_conn_idx ON crm_field_mappings (connection_id, object)",
            "CREATE TABLE IF NOT EXISTS crm_record_sync_state (
            connection_id {id} NOT NULL REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            local_id {key} NOT NULL,
            remote_id {key},
            remote_type {key},
            last_synced_at {ts},
            local_updated_at {ts},
            remote_updated_at {ts},
            conflict {bool} NOT NULL,
            conflict_details {text},
            PRIMARY KEY (connection_id, object, local_id)
        )",
            "CREATE INDEX {ine} crm_record_sync_state_remote_idx ON crm_record_sync_state (connection_id, remote_id)",
            "CREATE TABLE IF NOT EXISTS crm_checkpoints (
            connection_id {id} NOT NULL REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            cursor_state {text} NOT NULL,
            updated_at {ts} NOT NULL,
            PRIMARY KEY (connection_id, object)
        )",
            "CREATE TABLE IF NOT EXISTS crm_webhook_events (
            id {id} NOT NULL PRIMARY KEY,
            connection_id {id} REFERENCES crm_connections (id) ON DELETE CASCADE,
            provider {key} NOT NULL,
            event_type {key} NOT NULL,
            payload {text} NOT NULL,
            signature_valid {bool} NOT NULL,
            status {key} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            last_error {text},
            received_at {ts} NOT NULL,
            processed_at {ts}
        )",
            "CREATE INDEX {ine} crm_webhook_events_status_idx ON crm_webhook_events (status, received_at)",
            "CREATE TABLE IF NOT EXISTS crm_audit_log (
            id {id} NOT NULL PRIMARY KEY,
            occurred_at {ts} NOT NULL,
            actor {key} NOT NULL,
            action {key} NOT NULL,
            connection_id {id},
            object {key},
            record_id {key},
            old_values {text},
            new_values {text}
        )",
            "CREATE INDEX {ine} crm_audit_log_record_idx ON crm_audit_log (object, record_id, occurred_at)",
            "CREATE TABLE IF NOT EXISTS crm_review_queue (
            id {id} NOT NULL PRIMARY KEY,
            connection_id {id} REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            record_id {key} NOT NULL,
            reason {key} NOT NULL,
            details {text} NOT NULL,
            status {key} NOT NULL,
            resolution {text},
            created_at {ts} NOT NULL,
            resolved_at {ts}
        )",
            "CREATE INDEX {ine} crm_review_queue_status_idx ON crm_review_queue (status, created_at)",
            "CREATE TABLE IF NOT EXISTS crm_dead_letters (
            id {id} NOT NULL PRIMARY KEY,
            connection_id {id} REFERENCES crm_connections (id) ON DELETE CASCADE,
            object {key} NOT NULL,
            record {text} NOT NULL,
            stage {key} NOT NULL,
            error {text} NOT NULL,
            attempts {int} NOT NULL,
            first_failed_at {ts} NOT NULL,
            last_failed_at {ts} NOT NULL
        )",
            "CREATE INDEX {ine} crm_dead_letters_conn_idx ON crm_dead_letters (connection_id, object)",
        ],
    },
    Migration {
        version: 2,
        name: "dead letters and review items keyed by record",
        statements: &[
            "ALTER TABLE crm_dead_letters ADD COLUMN record_key {key}",
            "CREATE INDEX {ine} crm_dead_letters_key_idx ON crm_dead_letters (connection_id, object, record_key)",
            "CREATE INDEX {ine} crm_review_queue_record_idx ON crm_review_queue (connection_id, record_id)",
        ],
    },
    Migration {
        version: 3,
        name: "leases",
        statements: &["CREATE TABLE IF NOT EXISTS crm_leases (
            name {key} NOT NULL PRIMARY KEY,
            holder {key} NOT NULL,
            expires_at {ts} NOT NULL,
            acquired_at {ts} NOT NULL
        )"],
    },
    Migration {
        version: 4,
        name: "record snapshots for bidirectional sync",
        statements: &[
            "ALTER TABLE crm_record_sync_state ADD COLUMN snapshot {text}",
            "CREATE INDEX {ine} crm_record_sync_state_remote_obj_idx ON crm_record_sync_state (connection_id, object, remote_id)",
        ],
    },
    Migration {
        version: 5,
        name: "job queue and shared rate budgets",
        statements: &[
            "CREATE TABLE IF NOT EXISTS crm_jobs (
            id {id} NOT NULL PRIMARY KEY,
            queue {key} NOT NULL,
            kind {key} NOT NULL,
            payload {text} NOT NULL,
            status {key} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            max_attempts {int} NOT NULL,
            dedupe_key {key},
            active_key {key},
            lease_holder {key},
            lease_expires_at {ts},
            heartbeat_at {ts},
            run_after {ts} NOT NULL,
            result {text},
            last_error {text},
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        )",
            "CREATE UNIQUE INDEX {ine} crm_jobs_active_key_idx ON crm_jobs (active_key)",
            "CREATE INDEX {ine} crm_jobs_claim_idx ON crm_jobs (queue, status, run_after)",
            "CREATE TABLE IF NOT EXISTS crm_rate_budgets (
            account {key} NOT NULL PRIMARY KEY,
            next_slot_us {int} NOT NULL,
            updated_at {ts} NOT NULL
        )",
        ],
    },
    // MySQL/InnoDB keys hold at most 3072 bytes: in utf8mb4 the review
    // index takes 2 x 1020 ({key}) + 8 (DATETIME(6)) + 256 ({id}) = 2304.
    Migration {
        version: 6,
        name: "queue page indexes",
        statements: &[
            "CREATE INDEX {ine} crm_review_queue_page_idx ON crm_review_queue (status, reason, created_at, id)",
            "CREATE INDEX {ine} crm_dead_letters_page_idx ON crm_dead_letters (first_failed_at, id)",
        ],
    },
];

/// Fills the type tokens for `dialect`.
pub(crate) fn render(sql: &str, dialect: DatabaseKind) -> String {
    let (ts, int, ine) = match dialect {
        DatabaseKind::Postgres => ("TIMESTAMPTZ", "BIGINT", "IF NOT EXISTS"),
        DatabaseKind::MySql => ("DATETIME(6)", "BIGINT", ""),
        DatabaseKind::Sqlite => ("TEXT", "INTEGER", "IF NOT EXISTS"),
    };
    sql.replace("{id}", "VARCHAR(64)")
        .replace("{key}", "VARCHAR(255)")
        .replace("{text}", "TEXT")
        .replace("{bool}", "BOOLEAN")
        .replace("{ts}", ts)
        .replace("{int}", int)
        .replace("{ine}", ine)
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS crm_schema_migrations (
    version {int} NOT NULL PRIMARY KEY,
    name {key} NOT NULL,
    applied_at {ts} NOT NULL
)";

fn duplicate_index(e: &DbError) -> bool {
    match e {
        DbError::Sql(sqlx::Error::Database(d)) => d
            .message()
            .to_ascii_lowercase()
            .contains("duplicate key name"),
        _ => false,
    }
}

/// Applies pending migrations; returns the versions applied now.
pub(crate) async fn migrate(pool: &Pool) -> Result<Vec<i64>, DbError> {
    let dialect = pool.kind();
    pool.execute(&render(LEDGER, dialect), &[]).await?;
    let mut applied_now = Vec::new();
    for m in MIGRATIONS {
        let mut tx = pool.begin().await?;
        match dialect {
            DatabaseKind::Postgres => {
                tx.execute("SELECT pg_advisory_xact_lock(7241053117)", &[])
                    .await?;
            }
            DatabaseKind::MySql => {
                tx.execute("SELECT GET_LOCK('crm_sql_migrations', 60)", &[])
                    .await?;
            }
            DatabaseKind::Sqlite => {}
        }
        let done = tx
            .fetch_all(
                &placeholders(
                    "SELECT version FROM crm_schema_migrations WHERE version = ?",
                    dialect,
                ),
                &[Arg::int(m.version)],
                None,
            )
            .await?;
        if done.iter().any(|r| r.opt_int("version") == Some(m.version)) {
            release(&mut tx, dialect).await?;
            tx.commit().await?;
            continue;
        }
        for stmt in m.statements {
            match tx.execute(&render(stmt, dialect), &[]).await {
                Ok(_) => {}
                Err(e) if dialect == DatabaseKind::MySql && duplicate_index(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let insert = placeholders(
            "INSERT INTO crm_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            dialect,
        );
        tx.execute(
            &insert,
            &[
                Arg::int(m.version),
                Arg::text(m.name),
                Arg::time(chrono::Utc::now()),
            ],
        )
        .await?;
        release(&mut tx, dialect).await?;
        tx.commit().await?;
        applied_now.push(m.version);
    }
    Ok(applied_now)
}

async fn release(tx: &mut crate::db::Tx, dialect: DatabaseKind) -> Result<(), DbError> {
    if dialect == DatabaseKind::MySql {
        tx.execute("SELECT RELEASE_LOCK('crm_sql_migrations')", &[])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_filled() {
        for d in [
            DatabaseKind::Postgres,
            DatabaseKind::MySql,
            DatabaseKind::Sqlite,
        ] {
            for m in MIGRATIONS {
                for s in m.statements {
                    let r = render(s, d);
                    assert!(!r.contains('{'), "{r}");
                }
            }
        }
        assert!(render("{ts}", DatabaseKind::Postgres).contains("TIMESTAMPTZ"));
    }
}
