//! The [`Sink`] implementation: write-back of named columns by row key.
//!
//! One write:
//!
//! 1. finds the tab (cached after the first call; looked up again by
//!    `sheetId` when the cached title is gone),
//! 2. reads the key column and the write-back columns in one
//!    `values.batchGet`, so rows are located by key as the sheet is now,
//! 3. sends one `values.batchUpdate` (`valueInputOption=RAW`) per
//!    `max_rows_per_request` rows (and `max_cells_per_request` cells), only
//!    for rows whose values differ,
//! 4. appends rows for new keys with `values.append` when configured.
//!
//! Records whose row is not found, whose key is in several rows, or that have
//! no key are [`WriteOutcome::Rejected`]; records already holding the values
//! are [`WriteOutcome::Unchanged`].
//!
//! A row inserted above a booking between step 2 and step 3 (a few hundred
//! milliseconds) would still shift it; the Sheets API has no conditional
//! write on values to close that window.

use std::collections::HashMap;

use async_trait::async_trait;
use crm_core::mapping::column_letters;
use crm_core::{Error, ErrorKind, Result, Sink, WriteBatch, WriteOp, WriteOutcome};

use crate::a1::A1Range;
use crate::cell::Cell;
use crate::source::{ResolvedSheet, SheetsConnector};
use crate::wire::{DateTimeRenderOption, Dimension, ValueRange, ValueRenderOption};
use crate::writeback::{PlanContext, Planned, RowLocator, plan_write};

impl SheetsConnector {
    async fn sheet_for_write(&self) -> Result<ResolvedSheet> {
        match self.last_resolved() {
            Some(s) => Ok(s),
            None => self.resolve_sheet(self.config.sheet_id).await,
        }
    }

    async fn read_for_write(
        &self,
        sheet: &ResolvedSheet,
        key_col: usize,
        wb_first: usize,
        wb_last: usize,
    ) -> Result<(RowLocator, HashMap<u32, Vec<Cell>>)> {
        let start = self.config.data_start_row;
        let ranges = vec![
            A1Range::rows(sheet.title.clone(), key_col, key_col, start, None).to_string(),
            A1Range::rows(sheet.title.clone(), wb_first, wb_last, start, None).to_string(),
        ];
        let resp = self
            .client
            .batch_get(
                &ranges,
                ValueRenderOption::UnformattedValue,
                DateTimeRenderOption::SerialNumber,
            )
            .await?;
        let mut vrs = resp.value_ranges.into_iter();
        let keys = vrs.next().map(|v| v.values).unwrap_or_default();
        let current = vrs.next().map(|v| v.values).unwrap_or_default();
        let locator = RowLocator::from_key_cells(start, &keys);
        let current = current
            .into_iter()
            .enumerate()
            .map(|(i, row)| (start + i as u32, row))
            .collect();
        Ok((locator, current))
    }
}

#[async_trait]
impl Sink for SheetsConnector {
    fn max_batch(&self, _object: &str) -> usize {
        self.config
            .write_back
            .as_ref()
            .map_or(500, |w| w.max_rows_per_request)
    }

    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let Some(wb) = self.config.write_back.as_ref() else {
            return Err(Error::invalid_input(
                "write-back is not configured for this sheet (write_back.columns)",
            )
            .with_operation("sheets.write"));
        };
        let key_field = match &batch.op {
            WriteOp::Upsert { key } => key.clone(),
            WriteOp::Update => self.config.key_field.clone(),
            other => {
                return Err(Error::invalid_input(format!(
                    "the sheet takes upserts and updates by key, not {other:?}"
                ))
                .with_operation("sheets.write"));
            }
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let key_col = self
            .config
            .column_mapping
            .column(&key_field)
            .ok_or_else(|| {
                Error::invalid_input(format!("key {key_field:?} is not a mapped column"))
                    .with_operation("sheets.write")
            })?;
        let wb_first = wb.columns.iter().map(|(i, _)| i).min().unwrap_or(0);
        let wb_last = wb.columns.width().max(1) - 1;

        let mut sheet = self.sheet_for_write().await?;
        let read = match self
            .read_for_write(&sheet, key_col, wb_first, wb_last)
            .await
        {
            Err(e) if e.kind() == &ErrorKind::NotFound => {
                // The tab was renamed since it was cached: find it by id.
                sheet = self.resolve_sheet(Some(sheet.sheet_id)).await?;
                self.read_for_write(&sheet, key_col, wb_first, wb_last)
                    .await
            }
            other => other,
        };
        let (locator, current) = read.map_err(|e| e.with_operation("sheets.write"))?;

        let config = &self.config;
        let types = |f: &str| config.column_type(f);
        let ctx = PlanContext {
            sheet: &sheet.title,
            key_field: &key_field,
            columns: &config.column_mapping,
            write_back: wb,
            types: &types,
            grid: Some((u64::from(sheet.row_count), u64::from(sheet.column_count))),
            spreadsheet_cells: Some(sheet.spreadsheet_cells),
        };
        let plan = plan_write(&ctx, &batch.records, &locator, &current).map_err(Error::from)?;
        let _ = object;

        // Updates: one batchUpdate per chunk; a failed chunk rejects its rows.
        let mut failed_rows: HashMap<u32, Error> = HashMap::new();
        for (n, req) in plan.updates.iter().enumerate() {
            if let Err(e) = self.client.batch_update(req).await {
                if n == 0 && plan.updates.len() == 1 && plan.appends.is_empty() {
                    return Err(e.with_operation("sheets.write"));
                }
                for vr in &req.data {
                    if let Some(row) = vr
                        .range
                        .as_deref()
                        .and_then(|r| r.parse::<A1Range>().ok())
                        .and_then(|r| r.start)
                        .and_then(|s| s.row)
                    {
                        failed_rows.insert(row, e.clone());
                    }
                }
            }
        }
        // Appends.
        let mut append_error: Option<Error> = None;
        let mut appended = 0usize;
        let width = plan
            .appends
            .first()
            .and_then(|c| c.first())
            .map_or(1, Vec::len);
        let table = A1Range::rows(
            sheet.title.clone(),
            0,
            width.max(1) - 1,
            config
                .data_start_row
                .saturating_sub(u32::from(config.header_row > 0))
                .max(1),
            None,
        )
        .to_string();
        for chunk in &plan.appends {
            if append_error.is_some() {
                break;
            }
            let body = ValueRange {
                range: Some(table.clone()),
                major_dimension: Some(Dimension::Rows),
                values: chunk.clone(),
            };
            match self.client.append_values(&table, &body).await {
                Ok(_) => appended += chunk.len(),
                Err(e) => append_error = Some(e),
            }
        }
        if !plan.appends.is_empty() {
            // The grid grew: look it up again next time.
            if let Ok(mut slot) = self.resolved.lock() {
                *slot = None;
            }
        }

        let mut appends_seen = 0usize;
        let outcomes = plan
            .planned
            .into_iter()
            .enumerate()
            .map(|(index, p)| match p {
                Planned::Update { key, row } => match failed_rows.get(&row) {
                    Some(e) => WriteOutcome::Rejected {
                        index,
                        error: e.clone().with_context("key", &key),
                    },
                    None => WriteOutcome::Updated(key.into()),
                },
                Planned::Unchanged { key, .. } => WriteOutcome::Unchanged(key.into()),
                Planned::Append { key } => {
                    appends_seen += 1;
                    if appends_seen <= appended {
                        WriteOutcome::Created(key.into())
                    } else {
                        let error = append_error.clone().unwrap_or_else(|| {
                            Error::new(ErrorKind::Permanent, "append did not run")
                        });
                        WriteOutcome::Rejected {
                            index,
                            error: error.with_context("key", &key),
                        }
                    }
                }
                Planned::Rejected(error) => WriteOutcome::Rejected {
                    index,
                    error: error
                        .with_operation("sheets.write")
                        .with_context("key_column", column_letters(key_col)),
                },
            })
            .collect();
        Ok(outcomes)
    }
}
