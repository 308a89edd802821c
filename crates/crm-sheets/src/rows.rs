//! Sheet rows to records, with per-row validation problems.
//!
//! [`RowLayout::read_row`] turns one row of cells into a [`SheetRow`]:
//!
//! - A row whose mapped cells are all blank is [`RowOutcome::Blank`] and is
//!   skipped; reading goes on past it (a blank row 6 does not end the sheet).
//! - A short ("ragged") row reads its missing cells as empty.
//! - A cell that cannot be read as its column's type (a formula error such as
//!   `#REF!` or `#N/A`, text in a date column) becomes a null field and a
//!   [`RowProblem`]; so does a blank key cell (including the blank cells of a
//!   merged key range, which the API returns empty).
//!
//! A row with problems is still emitted, never dropped: its record carries
//! the problems in the [`ERRORS_FIELD`] field (a JSON list of `{column,
//! field, problem}`) so the orchestrator's validation step rejects it into
//! the review queue with the reason.

use crm_core::mapping::column_letters;
use crm_core::{Record, RecordId, Value};

use crate::cell::{Cell, ColumnType, cell_to_value};

/// The record field holding the one-based sheet row a record was read from.
/// Informational only: rows shift when rows are inserted above them.
pub const ROW_FIELD: &str = "_sheet_row";

/// The record field holding a row's problems, when it has any: crm-core's
/// [`PROBLEMS_FIELD`](crm_core::PROBLEMS_FIELD), so pipelines reject the row
/// with the reason.
pub const ERRORS_FIELD: &str = crm_core::PROBLEMS_FIELD;

/// One problem of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    /// The column letters (`F`).
    pub column: String,
    /// The field of the column.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl RowProblem {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"column": self.column, "field": self.field, "problem": self.problem})
    }
}

/// A row read from the sheet.
#[derive(Clone, Debug, PartialEq)]
pub struct SheetRow {
    /// The one-based row number.
    pub row: u32,
    /// The key, unless its cell was blank or bad.
    pub key: Option<String>,
    /// The record: mapped fields in mapping order, [`ROW_FIELD`] and, with
    /// problems, [`ERRORS_FIELD`]; its id is the key.
    pub record: Record,
    /// What is wrong with the row.
    pub problems: Vec<RowProblem>,
}

impl SheetRow {
    /// Adds a problem (e.g. a duplicate key found later).
    pub fn add_problem(&mut self, problem: RowProblem) {
        self.problems.push(problem);
        self.record.set(
            ERRORS_FIELD,
            Value::Json(serde_json::Value::Array(
                self.problems.iter().map(RowProblem::to_json).collect(),
            )),
        );
    }

    /// A digest of the row's content (every field but [`ROW_FIELD`]), to
    /// tell whether the row changed since the last read. 32 hex digits.
    pub fn digest(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (name, value) in &self.record.fields {
            if name == ROW_FIELD {
                continue;
            }
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            // The tagged serde form keeps type and decimal scale apart
            // ("1.5" text vs 1.5 decimal).
            let v = serde_json::to_vec(value).unwrap_or_default();
            ctx.update(&v);
            ctx.update(&[0]);
        }
        let d = ctx.finish();
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What one row of cells is.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOutcome {
    /// Every mapped cell is blank.
    Blank,
    /// A row (with or without problems).
    Row(SheetRow),
}

/// The mapped columns of a sheet and how to read them.
#[derive(Clone, Debug)]
pub struct RowLayout {
    columns: Vec<(usize, String, ColumnType)>,
    key_field: String,
}

impl RowLayout {
    /// A layout of `(zero-based column, field, type)` with rows keyed by
    /// `key_field`.
    pub fn new(columns: Vec<(usize, String, ColumnType)>, key_field: impl Into<String>) -> Self {
        RowLayout {
            columns,
            key_field: key_field.into(),
        }
    }

    /// The mapped columns.
    pub fn columns(&self) -> &[(usize, String, ColumnType)] {
        &self.columns
    }

    /// The key field.
    pub fn key_field(&self) -> &str {
        &self.key_field
    }

    /// Reads one row; `row` is its one-based row number.
    pub fn read_row(&self, row: u32, cells: &[Cell]) -> RowOutcome {
        let empty = Cell::Empty;
        let cell = |i: usize| cells.get(i).unwrap_or(&empty);
        if self.columns.iter().all(|(i, _, _)| cell(*i).is_blank()) {
            return RowOutcome::Blank;
        }
        let mut record = Record::new();
        let mut problems = Vec::new();
        let mut key = None;
        for (i, field, ty) in &self.columns {
            let c = cell(*i);
            let value = match cell_to_value(c, *ty) {
                Ok(v) => v,
                Err(p) => {
                    problems.push(RowProblem {
                        column: column_letters(*i),
                        field: field.clone(),
                        problem: p.to_string(),
                    });
                    Value::Null
                }
            };
            if *field == self.key_field {
                if value.is_blank() {
                    if c.formula_error().is_none() {
                        problems.push(RowProblem {
                            column: column_letters(*i),
                            field: field.clone(),
                            problem: "the key cell is blank".into(),
                        });
                    }
                } else {
                    key = Some(match &value {
                        Value::Text(s) => s.trim().to_owned(),
                        other => other.to_string(),
                    });
                }
            }
            record.set(field.clone(), value);
        }
        record.set(ROW_FIELD, Value::Int(i64::from(row)));
        record.id = key.clone().map(RecordId::new);
        let mut out = SheetRow {
            row,
            key,
            record,
            problems: Vec::new(),
        };
        for p in problems {
            out.add_problem(p);
        }
        RowOutcome::Row(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> RowLayout {
        RowLayout::new(
            vec![
                (0, "booking_id".into(), ColumnType::Text),
                (1, "client_name".into(), ColumnType::Text),
                (3, "start_date".into(), ColumnType::Date),
                (5, "budget".into(), ColumnType::Decimal { scale: Some(2) }),
                (26, "note".into(), ColumnType::Auto),
            ],
            "booking_id",
        )
    }

    fn cells(json: &str) -> Vec<Cell> {
        serde_json::from_str(json).unwrap()
    }

    fn row(o: RowOutcome) -> SheetRow {
        match o {
            RowOutcome::Row(r) => r,
            RowOutcome::Blank => panic!("blank"),
        }
    }

    #[test]
    fn a_good_row() {
        let r = row(layout().read_row(2, &cells(r#"["BK-1","Acme","x",43831,"y",1234.1]"#)));
        assert!(r.problems.is_empty());
        assert_eq!(r.key.as_deref(), Some("BK-1"));
        assert_eq!(r.record.id.as_ref().map(RecordId::as_str), Some("BK-1"));
        assert_eq!(r.record.get("budget").unwrap().to_string(), "1234.10");
        assert_eq!(
            r.record.get("start_date").unwrap().to_string(),
            "2020-01-01"
        );
        // Ragged: column AA is missing and reads as null.
        assert_eq!(r.record.get("note"), Some(&Value::Null));
        assert_eq!(r.record.get(ROW_FIELD), Some(&Value::Int(2)));
        assert!(r.record.get(ERRORS_FIELD).is_none());
    }

    #[test]
    fn blank_rows_and_blank_unmapped_cells() {
        assert_eq!(layout().read_row(6, &[]), RowOutcome::Blank);
        assert_eq!(
            layout().read_row(6, &cells(r#"["", "  ", "ignored"]"#)),
            RowOutcome::Blank
        );
    }

    #[test]
    fn bad_cells_and_blank_keys_are_row_problems() {
        let r = row(layout().read_row(9, &cells(r##"["", "Acme", "", "#REF!", "", "#DIV/0!"]"##)));
        assert_eq!(r.key, None);
        assert!(r.record.id.is_none());
        let cols: Vec<_> = r.problems.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, ["A", "D", "F"]);
        assert!(r.problems[1].problem.contains("#REF!"));
        let errs = r.record.get(ERRORS_FIELD).unwrap();
        assert!(errs.to_string().contains("#DIV/0!"));
        // A key cell with #N/A is one problem, not two.
        let r = row(layout().read_row(3, &cells(r##"["#N/A", "Acme"]"##)));
        assert_eq!(r.problems.len(), 1);
    }

    #[test]
    fn digest_ignores_row_number_but_not_content_or_type() {
        let a = row(layout().read_row(2, &cells(r#"["BK-1","Acme","",43831,"",10]"#)));
        let b = row(layout().read_row(7, &cells(r#"["BK-1","Acme","",43831,"",10]"#)));
        let c = row(layout().read_row(2, &cells(r#"["BK-1","Acme","",43831,"",11]"#)));
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest().len(), 32);
        // Numeric keys are text keys.
        let n = row(layout().read_row(2, &cells(r#"[1001,"Acme"]"#)));
        assert_eq!(n.key.as_deref(), Some("1001"));
    }
}
