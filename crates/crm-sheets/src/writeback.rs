//! Write-back planning: which cells of which rows a batch of records
//! changes, as `values.batchUpdate` bodies (and rows to `values.append`).
//!
//! Rows are located by key, from the key column read just before the write
//! ([`RowLocator`]), never from a row number cached by an earlier read: rows
//! inserted or sorted above a booking since then would otherwise receive
//! another booking's figures. A key found in two rows is rejected as a
//! conflict rather than written to either.
//!
//! Each record's write-back fields go to its row in runs of adjacent columns
//! (`'Bookings'!J7:M7`), with `valueInputOption=RAW` so `"0003"` stays text
//! and numbers keep their exact text. Fields absent from a record are left
//! alone; a null field clears its cell. A batch is cut into requests of at
//! most `max_rows_per_request` rows and `max_cells_per_request` cells.

use std::collections::HashMap;

use crm_core::mapping::ColumnMapping;
use crm_core::{Error, ErrorKind, Record, RecordId, Value};

use crate::a1::A1Range;
use crate::cell::{Cell, ColumnType, cell_to_value, value_to_cell};
use crate::config::WriteBackColumns;
use crate::error::SheetsError;
use crate::wire::{BatchUpdateValuesRequest, Dimension, ValueInputOption, ValueRange};

/// The most cells a Google spreadsheet may hold.
pub const MAX_SPREADSHEET_CELLS: u64 = 10_000_000;

/// Where each key is in the sheet.
#[derive(Clone, Debug, Default)]
pub struct RowLocator {
    rows: HashMap<String, Vec<u32>>,
    last_row: u32,
}

impl RowLocator {
    /// From the key column's cells read row-major from `first_row` (one cell
    /// per row; empty rows may be empty vectors).
    pub fn from_key_cells(first_row: u32, rows: &[Vec<Cell>]) -> Self {
        let mut out = RowLocator::default();
        for (i, r) in rows.iter().enumerate() {
            let row = first_row + i as u32;
            let Some(c) = r.first().filter(|c| !c.is_blank()) else {
                continue;
            };
            let key = c.to_string().trim().to_owned();
            out.rows.entry(key).or_default().push(row);
            out.last_row = out.last_row.max(row);
        }
        out
    }

    /// The rows holding `key`.
    pub fn rows(&self, key: &str) -> &[u32] {
        self.rows.get(key).map_or(&[], Vec::as_slice)
    }

    /// The last row with a key.
    pub fn last_row(&self) -> u32 {
        self.last_row
    }
}

/// The key of a record for write-back: its `key_field` value, else its id.
pub fn record_key(record: &Record, key_field: &str) -> Option<String> {
    match record.get(key_field) {
        Some(v) if !v.is_blank() => Some(match v {
            Value::Text(s) => s.trim().to_owned(),
            other => other.to_string(),
        }),
        _ => record.id.as_ref().map(|i| i.as_str().to_owned()),
    }
}

/// What the plan decided for one record.
#[derive(Clone, Debug)]
pub enum Planned {
    /// Cells of this row will be written.
    Update {
        /// The key.
        key: String,
        /// The one-based row.
        row: u32,
    },
    /// The row already holds these values.
    Unchanged {
        /// The key.
        key: String,
        /// The one-based row.
        row: u32,
    },
    /// A new row will be appended.
    Append {
        /// The key.
        key: String,
    },
    /// The record cannot be written.
    Rejected(Error),
}

/// Everything one write needs to send.
#[derive(Clone, Debug, Default)]
pub struct WritePlan {
    /// `values.batchUpdate` bodies, in order.
    pub updates: Vec<BatchUpdateValuesRequest>,
    /// Rows for `values.append` (full rows from column A), in chunks.
    pub appends: Vec<Vec<Vec<Cell>>>,
    /// One decision per record, in input order.
    pub planned: Vec<Planned>,
}

impl WritePlan {
    /// Number of cells the updates write.
    pub fn update_cells(&self) -> usize {
        self.updates
            .iter()
            .flat_map(|r| &r.data)
            .map(|v| v.values.iter().map(Vec::len).sum::<usize>())
            .sum()
    }
}

/// What the planner knows about the sheet.
#[derive(Clone)]
pub struct PlanContext<'a> {
    /// The sheet title.
    pub sheet: &'a str,
    /// The key field.
    pub key_field: &'a str,
    /// The read mapping (for appended rows).
    pub columns: &'a ColumnMapping,
    /// The write-back settings.
    pub write_back: &'a WriteBackColumns,
    /// Column types, for comparing current values (field -> type).
    pub types: &'a (dyn Fn(&str) -> ColumnType + Sync),
    /// Current grid size `(rows, columns)`, to refuse appends past the
    /// spreadsheet's cell limit.
    pub grid: Option<(u64, u64)>,
    /// Cells in the whole spreadsheet now, when known.
    pub spreadsheet_cells: Option<u64>,
}

/// Plans a write of `records`. `current` holds, per row, the cells of the
/// write-back columns as read just before (starting at the leftmost
/// write-back column), to skip rows that already hold the values.
///
/// # Errors
/// [`SheetsError::LimitExceeded`] when one row's write alone exceeds the
/// per-request cell limit.
pub fn plan_write(
    ctx: &PlanContext<'_>,
    records: &[Record],
    locator: &RowLocator,
    current: &HashMap<u32, Vec<Cell>>,
) -> Result<WritePlan, SheetsError> {
    let wb = ctx.write_back;
    let first_wb = wb.columns.iter().map(|(i, _)| i).min().unwrap_or(0);
    let mut plan = WritePlan::default();
    let mut batch = RequestBuilder::new(wb.max_rows_per_request, wb.max_cells_per_request);
    let mut append_rows: Vec<Vec<Cell>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let Some(key) = record_key(record, ctx.key_field) else {
            plan.planned.push(Planned::Rejected(
                Error::invalid_input(format!(
                    "record has no {} and no id to find its row",
                    ctx.key_field
                ))
                .with_context("index", index),
            ));
            continue;
        };
        if let Some(first) = seen.insert(key.clone(), index) {
            plan.planned.push(Planned::Rejected(
                Error::invalid_input(format!(
                    "key {key:?} appears twice in the batch (first at {first})"
                ))
                .with_context("key", &key),
            ));
            continue;
        }
        let cells: Vec<(usize, Cell, &str)> = wb
            .columns
            .iter()
            .filter_map(|(i, f)| record.get(f).map(|v| (i, value_to_cell(v), f)))
            .collect();
        match locator.rows(&key) {
            [] => {
                if !wb.append_new_rows {
                    plan.planned.push(Planned::Rejected(
                        Error::new(ErrorKind::NotFound, format!("no row with key {key:?}"))
                            .with_context("key", &key),
                    ));
                    continue;
                }
                let width = ctx.columns.width().max(wb.columns.width());
                let mut row = vec![Cell::Empty; width];
                for (i, f) in ctx.columns.iter().chain(wb.columns.iter()) {
                    if let (Some(slot), Some(v)) = (row.get_mut(i), record.get(f)) {
                        *slot = value_to_cell(v);
                    }
                }
                if let Some(k) = ctx
                    .columns
                    .column(ctx.key_field)
                    .and_then(|i| row.get_mut(i))
                {
                    *k = Cell::Text(key.clone());
                }
                append_rows.push(row);
                plan.planned.push(Planned::Append { key });
            }
            [row] => {
                let row = *row;
                let now = current.get(&row);
                let unchanged = !cells.is_empty()
                    && cells.iter().all(|(i, cell, f)| {
                        let have = now
                            .and_then(|r| r.get(i - first_wb))
                            .cloned()
                            .unwrap_or_default();
                        let ty = (ctx.types)(f);
                        match (cell_to_value(&have, ty), cell_to_value(cell, ty)) {
                            (Ok(a), Ok(b)) => a == b,
                            _ => have == *cell,
                        }
                    });
                if unchanged || cells.is_empty() {
                    plan.planned.push(Planned::Unchanged { key, row });
                    continue;
                }
                let ranges = runs(ctx.sheet, row, &cells);
                let n: usize = cells.len();
                if n > wb.max_cells_per_request {
                    return Err(SheetsError::LimitExceeded(format!(
                        "one row writes {n} cells, more than max_cells_per_request ({})",
                        wb.max_cells_per_request
                    )));
                }
                if let Some(done) = batch.push(ranges, n) {
                    plan.updates.push(done);
                }
                plan.planned.push(Planned::Update { key, row });
            }
            many => {
                let rows: Vec<String> = many.iter().map(u32::to_string).collect();
                plan.planned.push(Planned::Rejected(
                    Error::new(
                        ErrorKind::Conflict,
                        format!("key {key:?} is in several rows ({})", rows.join(", ")),
                    )
                    .with_context("key", &key),
                ));
            }
        }
    }
    if let Some(done) = batch.finish() {
        plan.updates.push(done);
    }
    if !append_rows.is_empty() {
        let width = append_rows.first().map_or(1, Vec::len).max(1);
        if let (Some((_, cols)), Some(total)) = (ctx.grid, ctx.spreadsheet_cells) {
            let added = append_rows.len() as u64 * cols.max(width as u64);
            if total + added > MAX_SPREADSHEET_CELLS {
                let err = SheetsError::LimitExceeded(format!(
                    "appending {} rows would take the spreadsheet from {total} to {} cells, above Google Sheets' limit of {MAX_SPREADSHEET_CELLS}",
                    append_rows.len(),
                    total + added
                ));
                for p in &mut plan.planned {
                    if matches!(p, Planned::Append { .. }) {
                        *p = Planned::Rejected(Error::from(err.clone()));
                    }
                }
                return Ok(plan);
            }
        }
        let per_chunk = wb
            .max_rows_per_request
            .min((wb.max_cells_per_request / width).max(1))
            .max(1);
        plan.appends = append_rows.chunks(per_chunk).map(<[_]>::to_vec).collect();
    }
    Ok(plan)
}

/// Splits a row's cells into runs of adjacent columns, one range each.
fn runs(sheet: &str, row: u32, cells: &[(usize, Cell, &str)]) -> Vec<ValueRange> {
    let mut sorted: Vec<&(usize, Cell, &str)> = cells.iter().collect();
    sorted.sort_by_key(|(i, _, _)| *i);
    let mut out: Vec<ValueRange> = Vec::new();
    let mut start = usize::MAX;
    let mut run: Vec<Cell> = Vec::new();
    let flush = |start: usize, run: &mut Vec<Cell>, out: &mut Vec<ValueRange>| {
        if run.is_empty() {
            return;
        }
        let end = start + run.len() - 1;
        let mut range = A1Range::rows(sheet, start, end, row, Some(row));
        if start == end {
            range.end = None;
        }
        out.push(ValueRange {
            range: Some(range.to_string()),
            major_dimension: Some(Dimension::Rows),
            values: vec![std::mem::take(run)],
        });
    };
    for (i, cell, _) in sorted {
        if !run.is_empty() && *i == start + run.len() {
            run.push(cell.clone());
        } else {
            flush(start, &mut run, &mut out);
            start = *i;
            run.push(cell.clone());
        }
    }
    flush(start, &mut run, &mut out);
    out
}

struct RequestBuilder {
    max_rows: usize,
    max_cells: usize,
    data: Vec<ValueRange>,
    rows: usize,
    cells: usize,
}

impl RequestBuilder {
    fn new(max_rows: usize, max_cells: usize) -> Self {
        RequestBuilder {
            max_rows: max_rows.max(1),
            max_cells: max_cells.max(1),
            data: Vec::new(),
            rows: 0,
            cells: 0,
        }
    }

    fn push(&mut self, ranges: Vec<ValueRange>, cells: usize) -> Option<BatchUpdateValuesRequest> {
        let full = self.rows + 1 > self.max_rows || self.cells + cells > self.max_cells;
        let done = if full && !self.data.is_empty() {
            self.finish()
        } else {
            None
        };
        self.data.extend(ranges);
        self.rows += 1;
        self.cells += cells;
        done
    }

    fn finish(&mut self) -> Option<BatchUpdateValuesRequest> {
        if self.data.is_empty() {
            return None;
        }
        self.rows = 0;
        self.cells = 0;
        Some(BatchUpdateValuesRequest {
            value_input_option: ValueInputOption::Raw,
            data: std::mem::take(&mut self.data),
            include_values_in_response: None,
        })
    }
}

/// The outcome id of a planned record.
pub fn planned_id(p: &Planned) -> Option<RecordId> {
    match p {
        Planned::Update { key, .. } | Planned::Unchanged { key, .. } | Planned::Append { key } => {
            Some(RecordId::new(key.clone()))
        }
        Planned::Rejected(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_column_type;

    fn wb(append: bool) -> WriteBackColumns {
        WriteBackColumns::new(
            ColumnMapping::new([
                ("J", "actual_spend"),
                ("K", "pacing_percent"),
                ("L", "campaign_id"),
                ("N", "campaign_status"),
            ])
            .unwrap(),
        )
        .append_new_rows(append)
    }

    fn read_cols() -> ColumnMapping {
        ColumnMapping::new([("A", "booking_id"), ("B", "client_name")]).unwrap()
    }

    fn keys(first: u32, ks: &[&str]) -> RowLocator {
        let rows: Vec<Vec<Cell>> = ks
            .iter()
            .map(|k| {
                if k.is_empty() {
                    vec![]
                } else {
                    vec![Cell::Text((*k).into())]
                }
            })
            .collect();
        RowLocator::from_key_cells(first, &rows)
    }

    fn rec(key: &str, spend: &str) -> Record {
        Record::new()
            .with("booking_id", key)
            .with("actual_spend", Value::Decimal(spend.parse().unwrap()))
            .with("pacing_percent", Value::Decimal("0.5".parse().unwrap()))
            .with("campaign_id", "C-9")
            .with("campaign_status", "active")
    }

    fn plan(
        w: &WriteBackColumns,
        records: &[Record],
        loc: &RowLocator,
        current: &HashMap<u32, Vec<Cell>>,
    ) -> WritePlan {
        let cols = read_cols();
        let ctx = PlanContext {
            sheet: "Bookings",
            key_field: "booking_id",
            columns: &cols,
            write_back: w,
            types: &default_column_type,
            grid: None,
            spreadsheet_cells: None,
        };
        plan_write(&ctx, records, loc, current).unwrap()
    }

    #[test]
    fn rows_are_found_by_key_after_rows_moved() {
        // BK-2 was row 3 at the last read; two rows were inserted above it.
        let loc = keys(2, &["NEW-1", "NEW-2", "BK-1", "", "BK-2"]);
        let p = plan(
            &wb(false),
            &[rec("BK-2", "10.5"), rec("BK-1", "7")],
            &loc,
            &HashMap::new(),
        );
        assert_eq!(p.updates.len(), 1);
        let ranges: Vec<_> = p.updates[0]
            .data
            .iter()
            .map(|v| v.range.clone().unwrap())
            .collect();
        // J:L adjacent, N apart: two ranges per row.
        assert_eq!(
            ranges,
            [
                "'Bookings'!J6:L6",
                "'Bookings'!N6",
                "'Bookings'!J4:L4",
                "'Bookings'!N4"
            ]
            .map(String::from)
        );
        assert_eq!(p.updates[0].value_input_option, ValueInputOption::Raw);
        assert_eq!(
            serde_json::to_string(&p.updates[0].data[0].values).unwrap(),
            r#"[[10.5,0.5,"C-9"]]"#
        );
        assert!(matches!(p.planned[0], Planned::Update { row: 6, .. }));
    }

    #[test]
    fn missing_duplicate_and_keyless_records_are_rejected() {
        let loc = keys(2, &["BK-1", "BK-1", "BK-3"]);
        let p = plan(
            &wb(false),
            &[
                rec("BK-1", "1"),
                rec("BK-9", "1"),
                Record::new().with("actual_spend", 1i64),
                rec("BK-3", "1"),
                rec("BK-3", "2"),
            ],
            &loc,
            &HashMap::new(),
        );
        let kinds: Vec<_> = p
            .planned
            .iter()
            .map(|p| match p {
                Planned::Rejected(e) => e.kind().as_str().to_owned(),
                Planned::Update { .. } => "update".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "conflict",
                "not_found",
                "invalid_input",
                "update",
                "invalid_input"
            ]
        );
    }

    #[test]
    fn unchanged_rows_are_not_written() {
        let loc = keys(2, &["BK-1"]);
        let mut current = HashMap::new();
        // J..N as read: 10.50 written earlier as 10.5, pacing 0.5, C-9, (M), active.
        current.insert(
            2,
            vec![
                Cell::Number("10.5".into()),
                Cell::Number("0.5".into()),
                Cell::Text("C-9".into()),
                Cell::Empty,
                Cell::Text("active".into()),
            ],
        );
        let p = plan(&wb(false), &[rec("BK-1", "10.50")], &loc, &current);
        assert!(p.updates.is_empty());
        assert!(matches!(p.planned[0], Planned::Unchanged { row: 2, .. }));
    }

    #[test]
    fn batches_are_cut_by_rows_and_cells_and_new_rows_appended() {
        let ks: Vec<String> = (0..1200).map(|i| format!("BK-{i}")).collect();
        let kr: Vec<&str> = ks.iter().map(String::as_str).collect();
        let loc = keys(2, &kr);
        let records: Vec<Record> = ks.iter().map(|k| rec(k, "1")).collect();
        let p = plan(&wb(false), &records, &loc, &HashMap::new());
        // 500 rows per request by default.
        assert_eq!(p.updates.len(), 3);
        assert_eq!(p.update_cells(), 1200 * 4);
        let small = wb(false).max_cells_per_request(1000);
        let p = plan(&small, &records, &loc, &HashMap::new());
        assert_eq!(p.updates.len(), 5); // 250 rows x 4 cells each
        // New keys are appended as full rows when configured.
        let p = plan(&wb(true), &[rec("BK-NEW", "3")], &loc, &HashMap::new());
        assert_eq!(p.appends.len(), 1);
        let row = &p.appends[0][0];
        assert_eq!(row.len(), 14);
        assert_eq!(row[0], Cell::Text("BK-NEW".into()));
        assert_eq!(row[9], Cell::Number("3".into()));
    }

    #[test]
    fn appends_past_the_cell_limit_are_a_clear_error() {
        let loc = keys(2, &[]);
        let cols = read_cols();
        let w = wb(true);
        let ctx = PlanContext {
            sheet: "Bookings",
            key_field: "booking_id",
            columns: &cols,
            write_back: &w,
            types: &default_column_type,
            grid: Some((250_000, 40)),
            spreadsheet_cells: Some(250_000 * 40),
        };
        let p = plan_write(&ctx, &[rec("X", "1")], &loc, &HashMap::new()).unwrap();
        let Planned::Rejected(e) = &p.planned[0] else {
            panic!()
        };
        assert!(e.to_string().contains("10000000"), "{e}");
        assert!(p.appends.is_empty());
    }
}
