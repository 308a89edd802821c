//! The simulator's spreadsheets: named sheets with a 2-D grid of typed cells,
//! and the rendering and input rules of the values API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::Datelike;
use rust_decimal::Decimal;

use crate::a1::A1Range;
use crate::cell::Cell;
use crate::serial::{serial_to_date, serial_to_datetime};
use crate::wire::{DateTimeRenderOption, ValueInputOption, ValueRenderOption};

/// A cell as the simulator stores it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SimCell {
    /// Nothing.
    #[default]
    Empty,
    /// Text.
    Text(String),
    /// A number, as exact decimal text.
    Number(String),
    /// A boolean.
    Bool(bool),
    /// A number formatted as a date (a whole serial number).
    Date(i64),
    /// A number formatted as a date and time (a serial number).
    DateTime(String),
    /// A formula whose result is an error value (`#REF!`, `#N/A`, ...).
    Error(String),
}

impl SimCell {
    /// True for [`SimCell::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, SimCell::Empty)
    }

    /// The value as the API renders it.
    pub fn render(&self, value: ValueRenderOption, dates: DateTimeRenderOption) -> Cell {
        let formatted = value == ValueRenderOption::FormattedValue;
        match self {
            SimCell::Empty => Cell::Empty,
            SimCell::Text(s) | SimCell::Error(s) => Cell::Text(s.clone()),
            SimCell::Bool(b) if formatted => Cell::Text(if *b { "TRUE" } else { "FALSE" }.into()),
            SimCell::Bool(b) => Cell::Bool(*b),
            SimCell::Number(n) if formatted => Cell::Text(n.clone()),
            SimCell::Number(n) => Cell::Number(n.clone()),
            SimCell::Date(d) => {
                if formatted || dates == DateTimeRenderOption::FormattedString {
                    Cell::Text(format_date(Decimal::from(*d)))
                } else {
                    Cell::Number(d.to_string())
                }
            }
            SimCell::DateTime(s) => {
                if formatted || dates == DateTimeRenderOption::FormattedString {
                    Cell::Text(format_datetime(s))
                } else {
                    Cell::Number(s.clone())
                }
            }
        }
    }

    /// The cell an input value makes. `RAW` stores strings as text (so
    /// `"0003"` and `"=1+1"` stay text) and numbers as numbers;
    /// `USER_ENTERED` reads numeric and boolean strings as values. A number
    /// written over a date cell keeps the date format, as in Sheets.
    pub fn from_input(input: &Cell, option: ValueInputOption, current: &SimCell) -> SimCell {
        let number = |n: &str| match current {
            SimCell::Date(_) => match n.parse::<i64>() {
                Ok(d) => SimCell::Date(d),
                Err(_) => SimCell::DateTime(n.to_owned()),
            },
            SimCell::DateTime(_) => SimCell::DateTime(n.to_owned()),
            _ => SimCell::Number(n.to_owned()),
        };
        match input {
            Cell::Empty => SimCell::Empty,
            Cell::Bool(b) => SimCell::Bool(*b),
            Cell::Number(n) => number(n),
            Cell::Text(s) => {
                if option == ValueInputOption::UserEntered {
                    let t = s.trim();
                    if t.eq_ignore_ascii_case("true") {
                        return SimCell::Bool(true);
                    }
                    if t.eq_ignore_ascii_case("false") {
                        return SimCell::Bool(false);
                    }
                    if let Ok(d) = t.parse::<Decimal>() {
                        return number(&d.normalize().to_string());
                    }
                }
                SimCell::Text(s.clone())
            }
        }
    }
}

fn format_date(serial: Decimal) -> String {
    match serial_to_date(serial) {
        Ok(d) => format!("{}/{}/{}", d.month(), d.day(), d.year()),
        Err(_) => serial.to_string(),
    }
}

fn format_datetime(serial: &str) -> String {
    match serial
        .parse::<Decimal>()
        .ok()
        .and_then(|s| serial_to_datetime(s).ok())
    {
        Some(t) => format!(
            "{}/{}/{} {}",
            t.month(),
            t.day(),
            t.year(),
            t.format("%H:%M:%S")
        ),
        None => serial.to_owned(),
    }
}

/// One sheet (tab).
#[derive(Clone, Debug, PartialEq)]
pub struct SimSheet {
    /// The stable id.
    pub sheet_id: i64,
    /// The title.
    pub title: String,
    /// Rows in the grid.
    pub row_count: u32,
    /// Columns in the grid.
    pub column_count: u32,
    /// Row-major cells from A1; rows and cells past the end are empty.
    pub cells: Vec<Vec<SimCell>>,
}

impl SimSheet {
    /// An empty sheet of `rows` x `cols`.
    pub fn new(sheet_id: i64, title: impl Into<String>, rows: u32, cols: u32) -> Self {
        SimSheet {
            sheet_id,
            title: title.into(),
            row_count: rows,
            column_count: cols,
            cells: Vec::new(),
        }
    }

    /// The cell at one-based `row`, zero-based `col`.
    pub fn cell(&self, row: u32, col: usize) -> &SimCell {
        static EMPTY: SimCell = SimCell::Empty;
        self.cells
            .get(row.saturating_sub(1) as usize)
            .and_then(|r| r.get(col))
            .unwrap_or(&EMPTY)
    }

    /// Sets a cell, growing the stored rows (not the grid).
    pub fn set(&mut self, row: u32, col: usize, cell: SimCell) {
        let r = row.saturating_sub(1) as usize;
        if self.cells.len() <= r {
            if cell.is_empty() {
                return;
            }
            self.cells.resize_with(r + 1, Vec::new);
        }
        let line = &mut self.cells[r];
        if line.len() <= col {
            if cell.is_empty() {
                return;
            }
            line.resize(col + 1, SimCell::Empty);
        }
        line[col] = cell;
    }

    /// Sets a whole row from column A.
    pub fn set_row(&mut self, row: u32, cells: Vec<SimCell>) {
        let r = row.saturating_sub(1) as usize;
        if self.cells.len() <= r {
            self.cells.resize_with(r + 1, Vec::new);
        }
        self.cells[r] = cells;
        self.row_count = self.row_count.max(row);
    }

    /// Inserts `n` empty rows before one-based `row`, growing the grid.
    pub fn insert_rows(&mut self, row: u32, n: u32) {
        let r = (row.saturating_sub(1) as usize).min(self.cells.len());
        for _ in 0..n {
            self.cells.insert(r, Vec::new());
        }
        self.row_count += n;
    }

    /// Deletes one-based `row`, shrinking the grid.
    pub fn delete_row(&mut self, row: u32) {
        let r = row.saturating_sub(1) as usize;
        if r < self.cells.len() {
            self.cells.remove(r);
        }
        self.row_count = self.row_count.saturating_sub(1);
    }

    /// The cells of a rectangle as the API returns them: trailing empty
    /// cells of each row and trailing empty rows left out.
    pub fn read(
        &self,
        bounds: Option<(u32, u32, usize, usize)>,
        value: ValueRenderOption,
        dates: DateTimeRenderOption,
    ) -> Vec<Vec<Cell>> {
        let Some((r0, r1, c0, c1)) = bounds else {
            return Vec::new();
        };
        let mut out: Vec<Vec<Cell>> = Vec::new();
        let last_stored = u32::try_from(self.cells.len()).unwrap_or(u32::MAX);
        for r in r0..=r1.min(last_stored) {
            let mut row: Vec<Cell> = (c0..=c1)
                .map(|c| self.cell(r, c).render(value, dates))
                .collect();
            while row.last().is_some_and(|c| *c == Cell::Empty) {
                row.pop();
            }
            out.push(row);
        }
        while out.last().is_some_and(Vec::is_empty) {
            out.pop();
        }
        out
    }

    /// The last row with a non-empty cell in columns `c0..=c1`, from `from` on.
    pub fn last_data_row(&self, from: u32, c0: usize, c1: usize) -> Option<u32> {
        let last = u32::try_from(self.cells.len()).unwrap_or(u32::MAX);
        (from..=last)
            .rev()
            .find(|r| (c0..=c1).any(|c| !self.cell(*r, c).is_empty()))
    }
}

/// One spreadsheet.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSpreadsheet {
    /// The id.
    pub spreadsheet_id: String,
    /// The title.
    pub title: String,
    /// The sheets, in tab order.
    pub sheets: Vec<SimSheet>,
}

impl SimSpreadsheet {
    /// The sheet a range names (the first when it names none).
    pub fn sheet_for(&self, range: &A1Range) -> Option<usize> {
        match &range.sheet {
            None => (!self.sheets.is_empty()).then_some(0),
            Some(t) => self.sheets.iter().position(|s| s.title == *t),
        }
    }

    /// Cells in every sheet's grid.
    pub fn cells(&self) -> u64 {
        self.sheets
            .iter()
            .map(|s| u64::from(s.row_count) * u64::from(s.column_count))
            .sum()
    }
}

/// The simulator's data, shared by its handlers and by tests that set up or
/// inspect sheets; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SheetsData {
    inner: Arc<Mutex<BTreeMap<String, SimSpreadsheet>>>,
}

impl SheetsData {
    /// Locks the spreadsheets.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, SimSpreadsheet>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) a spreadsheet with one empty sheet.
    pub fn add_spreadsheet(&self, id: &str, title: &str, sheet: SimSheet) {
        self.lock().insert(
            id.to_owned(),
            SimSpreadsheet {
                spreadsheet_id: id.to_owned(),
                title: title.to_owned(),
                sheets: vec![sheet],
            },
        );
    }

    /// Runs `f` on a sheet by title; `None` if there is no such sheet.
    pub fn with_sheet<T>(
        &self,
        id: &str,
        title: &str,
        f: impl FnOnce(&mut SimSheet) -> T,
    ) -> Option<T> {
        let mut g = self.lock();
        let sheet = g
            .get_mut(id)?
            .sheets
            .iter_mut()
            .find(|s| s.title == title)?;
        Some(f(sheet))
    }

    /// Runs `f` on a spreadsheet; `None` if there is none.
    pub fn with_spreadsheet<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut SimSpreadsheet) -> T,
    ) -> Option<T> {
        self.lock().get_mut(id).map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_options() {
        let d = SimCell::Date(43831);
        let u = ValueRenderOption::UnformattedValue;
        let f = ValueRenderOption::FormattedValue;
        let serial = DateTimeRenderOption::SerialNumber;
        let string = DateTimeRenderOption::FormattedString;
        assert_eq!(d.render(u, serial), Cell::Number("43831".into()));
        assert_eq!(d.render(u, string), Cell::Text("1/1/2020".into()));
        assert_eq!(d.render(f, serial), Cell::Text("1/1/2020".into()));
        let n = SimCell::Number("1234.1".into());
        assert_eq!(n.render(u, serial), Cell::Number("1234.1".into()));
        assert_eq!(n.render(f, serial), Cell::Text("1234.1".into()));
        assert_eq!(
            SimCell::Bool(true).render(f, serial),
            Cell::Text("TRUE".into())
        );
        let t = SimCell::DateTime("43831.5".into());
        assert_eq!(t.render(u, string), Cell::Text("1/1/2020 12:00:00".into()));
    }

    #[test]
    fn input_options() {
        let raw = ValueInputOption::Raw;
        let user = ValueInputOption::UserEntered;
        let e = SimCell::Empty;
        assert_eq!(
            SimCell::from_input(&Cell::Text("0003".into()), raw, &e),
            SimCell::Text("0003".into())
        );
        assert_eq!(
            SimCell::from_input(&Cell::Text("0003".into()), user, &e),
            SimCell::Number("3".into())
        );
        assert_eq!(
            SimCell::from_input(&Cell::Number("43832".into()), raw, &SimCell::Date(43831)),
            SimCell::Date(43832)
        );
    }

    #[test]
    fn reads_leave_out_trailing_empties() {
        let mut s = SimSheet::new(0, "S", 10, 5);
        s.set(1, 0, SimCell::Text("a".into()));
        s.set(3, 1, SimCell::Text("b".into()));
        let u = ValueRenderOption::UnformattedValue;
        let v = s.read(Some((1, 10, 0, 4)), u, DateTimeRenderOption::SerialNumber);
        assert_eq!(v.len(), 3);
        assert!(v[1].is_empty());
        assert_eq!(v[2], vec![Cell::Empty, Cell::Text("b".into())]);
        s.insert_rows(2, 2);
        assert_eq!(s.cell(5, 1), &SimCell::Text("b".into()));
        assert_eq!(s.row_count, 12);
        assert_eq!(s.last_data_row(1, 0, 4), Some(5));
    }
}
