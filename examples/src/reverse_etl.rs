//! Seed 001 reverse ETL: platform scores from a PostgreSQL table onto
//! Salesforce Contacts.
//!
//! The table holds one row per Contact, keyed by the Contact's Salesforce Id:
//!
//! | column | Salesforce field | transform |
//! |---|---|---|
//! | `crm_id` (primary key) | `Id` | the record id |
//! | `customer_segment` | `Customer_Segment__c` | as is |
//! | `lifetime_value` | `LTV__c` | rounded to 2 decimals |
//! | `churn_risk_score` | `Churn_Risk__c` | 0-1 scaled to 0-100 |
//! | `last_activity_date` | `Last_Activity__c` | a date |
//! | `updated_at` | | the read cursor |
//!
//! [`run`] reads the rows changed since a cursor with crm-sql's
//! [`Source`], maps them with [`reverse_etl_map`] and writes them with the
//! Salesforce [`Sink`] page by page, returning the cursor to resume from.

use crm_core::mapping::Flow;
use crm_core::{Cursor, ReadRequest, Result, Sink, Source, WriteBatch, WriteOutcome};
use crm_salesforce::SalesforceConnector;
use crm_salesforce::mapping::reverse_etl_map;
use crm_sql::SqlConnector;
use futures_util::TryStreamExt;

/// The table's PostgreSQL definition (`table` must be a plain identifier).
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            crm_id             TEXT PRIMARY KEY,
            customer_segment   TEXT,
            lifetime_value     NUMERIC(14, 4),
            churn_risk_score   NUMERIC(5, 4),
            last_activity_date DATE,
            updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
        )"
    )
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows read from the table.
    pub rows: usize,
    /// Contacts whose fields were written.
    pub updated: usize,
    /// Contacts that already held these values.
    pub unchanged: usize,
    /// Rows Salesforce (or the mapping) rejected: `crm_id` and why.
    pub rejected: Vec<(String, String)>,
    /// Where the next run starts (`None` if nothing was read).
    pub cursor: Option<Cursor>,
}

/// Pushes the rows of `table` changed after `since` (all rows when `None`)
/// onto Salesforce Contacts.
///
/// # Errors
/// When reading the table or a whole write call fails (an expired login,
/// the daily API quota): the rows written so far stay written, and the
/// cursor of the last page fully written is lost only with the error, so a
/// caller that stores [`Summary::cursor`] after each run simply runs again.
pub async fn run(
    db: &SqlConnector,
    salesforce: &SalesforceConnector,
    table: &str,
    since: Option<Cursor>,
) -> Result<Summary> {
    let map = reverse_etl_map();
    let request = match since {
        Some(cursor) => ReadRequest::since(table, cursor),
        None => ReadRequest::full(table),
    };
    // Pages of at most 200 rows: one sObject Collections call each.
    let mut pages = db.read(request.page_size(200));
    let mut summary = Summary::default();
    while let Some(page) = pages.try_next().await? {
        let mut contacts = Vec::new();
        for change in page.changes {
            // Deleted rows leave the Contact as it is.
            let crm_core::Change::Upsert(row) = change else {
                continue;
            };
            summary.rows += 1;
            let id = row
                .id
                .as_ref()
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default();
            match map.apply(&row, Flow::ToCrm) {
                Ok(contact) => contacts.push((id, contact)),
                Err(e) => summary.rejected.push((id, e.to_string())),
            }
        }
        let (ids, records): (Vec<String>, Vec<_>) = contacts.into_iter().unzip();
        // `Id` as the key: an update of each Contact by its Salesforce Id.
        let outcomes = salesforce
            .write("Contact", WriteBatch::upsert("Id", records))
            .await?;
        for (id, outcome) in ids.into_iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Rejected { error, .. } => {
                    summary.rejected.push((id, error.to_string()))
                }
                WriteOutcome::Unchanged(_) => summary.unchanged += 1,
                _ => summary.updated += 1,
            }
        }
        summary.cursor = Some(page.cursor);
    }
    Ok(summary)
}
