//! A1 notation: `'Sheet Name'!A2:I`, `Bookings!A:C`, `A1`, `2:5`, `Sheet1`.
//!
//! Google's rules (Sheets API "A1 notation" concept guide):
//!
//! - A sheet name with spaces or special characters is quoted with single
//!   quotes, and a quote inside it is doubled: `'It''s'!A1`.
//! - Without a sheet name the range is on the first visible sheet.
//! - `A1:B2` is a rectangle; `A:C` whole columns; `2:5` whole rows;
//!   `A2:I` is open-ended: columns A to I from row 2 to the last row;
//!   `A5:A` column A from row 5 down; a lone sheet name is the whole sheet.
//! - A range written backwards (`B2:A1`) means the same rectangle.
//!
//! Columns are held zero-based (`A` = 0) and rows one-based, as written.

use std::fmt;
use std::str::FromStr;

use crm_core::mapping::{column_index, column_letters};

use crate::error::SheetsError;

/// The most columns a Google sheet can have (`ZZZ`).
pub const MAX_COLUMNS: usize = 18_278;

/// One end of a range: a column, a row, or both (`A`, `5`, `A5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CellRef {
    /// Zero-based column, if given.
    pub col: Option<usize>,
    /// One-based row, if given.
    pub row: Option<u32>,
}

impl CellRef {
    /// A cell at zero-based `col`, one-based `row`.
    pub fn new(col: usize, row: u32) -> Self {
        CellRef {
            col: Some(col),
            row: Some(row),
        }
    }

    fn parse(text: &str) -> Option<CellRef> {
        let letters_end = text
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (letters, digits) = text.split_at(letters_end);
        if letters.is_empty() && digits.is_empty() {
            return None;
        }
        let col = if letters.is_empty() {
            None
        } else {
            let i = column_index(letters).ok()?;
            if i >= MAX_COLUMNS {
                return None;
            }
            Some(i)
        };
        let row = if digits.is_empty() {
            None
        } else {
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let r: u32 = digits.parse().ok()?;
            if r == 0 {
                return None;
            }
            Some(r)
        };
        Some(CellRef { col, row })
    }
}

impl fmt::Display for CellRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.col {
            f.write_str(&column_letters(c))?;
        }
        if let Some(r) = self.row {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A parsed A1 range.
///
/// ```
/// use crm_sheets::a1::A1Range;
///
/// let r: A1Range = "'Q1 ''24 Bookings'!A2:I".parse().unwrap();
/// assert_eq!(r.sheet.as_deref(), Some("Q1 '24 Bookings"));
/// assert_eq!(r.to_string(), "'Q1 ''24 Bookings'!A2:I");
/// // Columns A..I (0..=8) from row 2 to the end of a 100-row grid.
/// assert_eq!(r.bounds(100, 26), Some((2, 100, 0, 8)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct A1Range {
    /// The sheet title, unquoted; `None` means the first visible sheet.
    pub sheet: Option<String>,
    /// The first corner; `None` (with `end` `None`) is the whole sheet.
    pub start: Option<CellRef>,
    /// The second corner; `None` with a `start` is a single cell.
    pub end: Option<CellRef>,
}

impl A1Range {
    /// The whole of sheet `title`.
    pub fn sheet(title: impl Into<String>) -> Self {
        A1Range {
            sheet: Some(title.into()),
            start: None,
            end: None,
        }
    }

    /// Zero-based columns `first_col..=last_col` of sheet `title`, from
    /// one-based row `first_row` to `last_row` (or the last row when `None`).
    pub fn rows(
        title: impl Into<String>,
        first_col: usize,
        last_col: usize,
        first_row: u32,
        last_row: Option<u32>,
    ) -> Self {
        A1Range {
            sheet: Some(title.into()),
            start: Some(CellRef::new(first_col, first_row)),
            end: Some(CellRef {
                col: Some(last_col),
                row: last_row,
            }),
        }
    }

    /// The rectangle in a grid of `row_count` rows and `col_count` columns:
    /// `(first_row, last_row, first_col, last_col)`, rows one-based, columns
    /// zero-based, all inclusive and clipped to the grid. `None` when the
    /// range lies wholly outside it (or the grid is empty).
    pub fn bounds(&self, row_count: u32, col_count: usize) -> Option<(u32, u32, usize, usize)> {
        if row_count == 0 || col_count == 0 {
            return None;
        }
        let (r0, r1, c0, c1) = self.unclipped(row_count, col_count);
        if r0 > row_count || c0 >= col_count {
            return None;
        }
        Some((r0, r1.min(row_count), c0, c1.min(col_count - 1)))
    }

    /// Like [`A1Range::bounds`] but not clipped to the grid: a write to
    /// `A11:C11` of a 10-row grid reaches row 11. Open ends take the grid's
    /// last row or column.
    pub fn unclipped(&self, row_count: u32, col_count: usize) -> (u32, u32, usize, usize) {
        let last_col = col_count.saturating_sub(1);
        let (start, end) = match (self.start, self.end) {
            (None, _) => return (1, row_count, 0, last_col),
            (Some(s), None) => (s, s),
            (Some(s), Some(e)) => (s, e),
        };
        // A lone column reference (`A`) is the whole column; a lone row (`5`)
        // the whole row.
        let single = self.end.is_none();
        let a_row = start.row.unwrap_or(1);
        let b_row = end.row.unwrap_or(if single && start.row.is_some() {
            a_row
        } else {
            row_count
        });
        let a_col = start.col.unwrap_or(0);
        let b_col = end.col.unwrap_or(if single && start.col.is_some() {
            a_col
        } else {
            last_col
        });
        // Rows given only on one side (`A2:I`) run to the last row; columns
        // given only on one side (`2:B5` is not valid A1, but be lenient)
        // likewise.
        (
            a_row.min(b_row),
            a_row.max(b_row),
            a_col.min(b_col),
            a_col.max(b_col),
        )
    }
}

/// Quotes a sheet title for A1 notation: `Bookings` -> `'Bookings'`,
/// `It's` -> `'It''s'`. Quoting is always allowed, so titles are always
/// quoted.
pub fn quote_sheet(title: &str) -> String {
    format!("'{}'", title.replace('\'', "''"))
}

impl fmt::Display for A1Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.sheet {
            f.write_str(&quote_sheet(s))?;
            if self.start.is_some() {
                f.write_str("!")?;
            }
        }
        if let Some(s) = self.start {
            write!(f, "{s}")?;
        }
        if let Some(e) = self.end {
            write!(f, ":{e}")?;
        }
        Ok(())
    }
}

fn parse_cells(text: &str) -> Option<(CellRef, Option<CellRef>)> {
    match text.split_once(':') {
        Some((a, b)) => {
            let a = CellRef::parse(a)?;
            let b = CellRef::parse(b)?;
            Some((a, Some(b)))
        }
        None => {
            let a = CellRef::parse(text)?;
            // A lone number is not a range (`5` would be a sheet named "5");
            // a lone column letter is (`A` is a column on the first sheet) only
            // with a sheet prefix, handled by the caller.
            if a.col.is_none() || a.row.is_none() {
                return None;
            }
            Some((a, None))
        }
    }
}

fn parse_cells_after_sheet(text: &str) -> Option<(CellRef, Option<CellRef>)> {
    match text.split_once(':') {
        Some(_) => parse_cells(text),
        None => CellRef::parse(text).map(|a| (a, None)),
    }
}

impl FromStr for A1Range {
    type Err = SheetsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SheetsError::InvalidRange {
            range: text.to_owned(),
            reason: why.to_owned(),
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad("empty range"));
        }
        if let Some(rest) = t.strip_prefix('\'') {
            // Quoted title: read to the closing quote, `''` is a quote.
            let mut title = String::new();
            let mut chars = rest.char_indices().peekable();
            let mut after = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        title.push('\'');
                        chars.next();
                    } else {
                        after = Some(&rest[i + 1..]);
                        break;
                    }
                } else {
                    title.push(c);
                }
            }
            let after = after.ok_or_else(|| bad("unterminated quoted sheet name"))?;
            if title.is_empty() {
                return Err(bad("empty sheet name"));
            }
            if after.is_empty() {
                return Ok(A1Range::sheet(title));
            }
            let cells = after
                .strip_prefix('!')
                .ok_or_else(|| bad("expected '!' after the sheet name"))?;
            let (start, end) =
                parse_cells_after_sheet(cells).ok_or_else(|| bad("invalid cell reference"))?;
            return Ok(A1Range {
                sheet: Some(title),
                start: Some(start),
                end,
            });
        }
        if let Some((title, cells)) = t.rsplit_once('!') {
            if title.is_empty() {
                return Err(bad("empty sheet name"));
            }
            if title.contains('\'') {
                return Err(bad("a sheet name with quotes must be quoted"));
            }
            let (start, end) =
                parse_cells_after_sheet(cells).ok_or_else(|| bad("invalid cell reference"))?;
            return Ok(A1Range {
                sheet: Some(title.to_owned()),
                start: Some(start),
                end,
            });
        }
        if let Some((start, end)) = parse_cells(t) {
            return Ok(A1Range {
                sheet: None,
                start: Some(start),
                end,
            });
        }
        if t.contains(['\'', ':']) {
            return Err(bad("invalid range"));
        }
        Ok(A1Range::sheet(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> A1Range {
        s.parse().unwrap()
    }

    #[test]
    fn quoted_names_with_doubled_quotes() {
        let r = p("'Sheet Name'!A2:I");
        assert_eq!(r.sheet.as_deref(), Some("Sheet Name"));
        assert_eq!(r.start, Some(CellRef::new(0, 2)));
        assert_eq!(
            r.end,
            Some(CellRef {
                col: Some(8),
                row: None
            })
        );
        let q = p("'Bob''s ''Q1'''!B3");
        assert_eq!(q.sheet.as_deref(), Some("Bob's 'Q1'"));
        assert_eq!(q.to_string(), "'Bob''s ''Q1'''!B3");
        assert_eq!(p(&q.to_string()), q);
        // A quoted name may hold '!' and ':'.
        let odd = p("'a!b:c'!A1:B2");
        assert_eq!(odd.sheet.as_deref(), Some("a!b:c"));
        assert_eq!(p("'Only Sheet'"), A1Range::sheet("Only Sheet"));
    }

    #[test]
    fn whole_columns_rows_and_sheets() {
        let cols = p("Bookings!A:C");
        assert_eq!(cols.bounds(50, 10), Some((1, 50, 0, 2)));
        let rows = p("Bookings!2:5");
        assert_eq!(rows.bounds(50, 10), Some((2, 5, 0, 9)));
        let sheet = p("Bookings");
        assert_eq!(sheet, A1Range::sheet("Bookings"));
        assert_eq!(sheet.bounds(3, 4), Some((1, 3, 0, 3)));
        let col = p("Bookings!C");
        assert_eq!(col.bounds(7, 10), Some((1, 7, 2, 2)));
        let row = p("Bookings!4");
        assert_eq!(row.bounds(7, 10), Some((4, 4, 0, 9)));
    }

    #[test]
    fn open_ended_and_backwards_ranges() {
        assert_eq!(p("A5:A").bounds(100, 5), Some((5, 100, 0, 0)));
        assert_eq!(p("Sheet1!A2:I").bounds(10_001, 26), Some((2, 10_001, 0, 8)));
        assert_eq!(p("B2:A1").bounds(10, 10), Some((1, 2, 0, 1)));
        // Clipped to the grid, or outside it.
        assert_eq!(p("A1:Z999").bounds(10, 5), Some((1, 10, 0, 4)));
        assert_eq!(p("A20:B30").bounds(10, 5), None);
        assert_eq!(p("A20:B30").unclipped(10, 5), (20, 30, 0, 1));
    }

    #[test]
    fn aa_columns_and_no_sheet() {
        let r = p("AA10:AZ12");
        assert_eq!(r.sheet, None);
        assert_eq!(r.bounds(100, 100), Some((10, 12, 26, 51)));
        assert_eq!(r.to_string(), "AA10:AZ12");
        assert_eq!(
            p("A1"),
            A1Range {
                sheet: None,
                start: Some(CellRef::new(0, 1)),
                end: None
            }
        );
        assert_eq!(p("ZZZ1").start.and_then(|s| s.col), Some(MAX_COLUMNS - 1));
    }

    #[test]
    fn formatting_always_quotes() {
        let r = A1Range::rows("Bookings", 0, 8, 2, None);
        assert_eq!(r.to_string(), "'Bookings'!A2:I");
        let r = A1Range::rows("Q1 Plan", 26, 27, 2, Some(501));
        assert_eq!(r.to_string(), "'Q1 Plan'!AA2:AB501");
        assert_eq!(A1Range::sheet("x").to_string(), "'x'");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "'unterminated!A1",
            "''!A1",
            "Sheet1!",
            "Sheet1!A0",
            "Sheet1!1A",
            "'x'A1",
            "A1:",
            "Sheet1!AAAA1",
            "it's!A1",
        ] {
            assert!(bad.parse::<A1Range>().is_err(), "{bad:?} should not parse");
        }
    }

    proptest::proptest! {
        #[test]
        fn format_parse_round_trip(
            title in "[ -~]{1,20}",
            c0 in 0usize..2000, c1 in 0usize..2000,
            r0 in 1u32..100_000, r1 in proptest::option::of(1u32..100_000),
        ) {
            let r = A1Range::rows(title, c0, c1, r0, r1);
            let back: A1Range = r.to_string().parse().unwrap();
            proptest::prop_assert_eq!(back, r);
        }
    }
}
