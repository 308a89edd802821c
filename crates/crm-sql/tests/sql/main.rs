//! The crm-sql behaviour suite: one generic suite, instantiated for
//! PostgreSQL, MySQL/MariaDB and SQLite. See `sql/harness.rs` for where the
//! databases come from.

// Test code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod harness;
mod jobs;
mod lease;
mod pii;
mod queues;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod specific;
mod state;
mod suite;

macro_rules! backend {
    ($module:ident, $feature:literal, $kind:expr, [$($suite:ident::$test:ident),+ $(,)?]) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::harness::run($kind, crate::$suite::$test).await;
                }
            )+
        }
    };
}

macro_rules! all_backends {
    ($($suite:ident::$test:ident),+ $(,)?) => {
        backend!(postgres, "postgres", crm_sql::DatabaseKind::Postgres, [$($suite::$test),+]);
        backend!(mysql, "mysql", crm_sql::DatabaseKind::MySql, [$($suite::$test),+]);
        backend!(sqlite, "sqlite", crm_sql::DatabaseKind::Sqlite, [$($suite::$test),+]);
    };
}

all_backends!(
    suite::incremental_read_ties_across_pages,
    suite::lookback_catches_late_commits,
    suite::upsert_is_idempotent,
    suite::decimals_round_trip,
    suite::bad_values_rejected_individually,
    suite::sql_injection_is_inert,
    suite::nul_bytes_do_not_sink_a_batch,
    suite::configured_query_with_params,
    suite::describe_and_check,
    suite::password_never_in_errors,
    state::migrations_are_idempotent,
    state::credentials_round_trip_and_wrong_key,
    state::checkpoint_commits_with_its_page,
    state::every_table_has_a_working_api,
    suite::bulk_batches_behave_like_small_ones,
    suite::create_update_delete,
    suite::boundary_state_stays_small,
    suite::cancelled_write_is_safe_to_repeat,
    lease::lease_has_one_holder,
    lease::expired_lease_is_retaken,
    lease::racing_acquirers_get_one_lease,
    jobs::job_has_one_holder_and_dedupes,
    jobs::expired_job_is_retaken_and_failures_requeue,
    jobs::racing_claimers_take_each_job_once,
    jobs::budget_is_shared_across_processes,
    queues::review_pages_visit_every_item_once_in_order,
    queues::review_filters_and_counts,
    queues::dead_letter_pages_and_edits,
    queues::resolved_reviews_for_latest_decision,
    pii::pii_fields_are_sealed_at_rest,
    pii::purge_older_than_removes_old_rows,
);
