//! The header row: checking it against the expected headers, and naming
//! columns after it.
//!
//! A sheet has no schema but its header row. When a column is moved, renamed
//! or deleted, reading on by column letter would put values in the wrong
//! fields, so [`check_headers`] fails the read with
//! [`SheetsError::SchemaMismatch`] (a
//! [`crm_core::ErrorKind::SchemaMismatch`] for the orchestrator, which pauses
//! the sync), naming each column concerned.

use crm_core::mapping::column_letters;

use crate::cell::Cell;
use crate::error::SheetsError;

/// A header compared loosely: trimmed, lower case, runs of whitespace as one
/// space. `" Booking  ID"` matches `"booking id"`.
pub fn normalize_header(h: &str) -> String {
    h.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Checks the header row `actual` (cells from column A) against `expected`
/// `(zero-based column, header)` pairs.
///
/// # Errors
/// [`SheetsError::SchemaMismatch`] listing, per expected column whose header
/// differs, what was expected and found and where the expected header went
/// (moved to another column, or gone: renamed or deleted).
pub fn check_headers(
    sheet: &str,
    expected: &[(usize, String)],
    actual: &[Cell],
) -> Result<(), SheetsError> {
    let found: Vec<String> = actual
        .iter()
        .map(|c| normalize_header(&c.to_string()))
        .collect();
    let mut problems = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let note = |col: String, columns: &mut Vec<String>| {
        if !columns.contains(&col) {
            columns.push(col);
        }
    };
    for (col, want) in expected {
        let want_n = normalize_header(want);
        let have = found.get(*col).cloned().unwrap_or_default();
        if have == want_n {
            continue;
        }
        let letters = column_letters(*col);
        note(letters.clone(), &mut columns);
        let have_raw = actual.get(*col).map(Cell::to_string).unwrap_or_default();
        let where_now: Vec<String> = found
            .iter()
            .enumerate()
            .filter(|(i, h)| *i != *col && **h == want_n)
            .map(|(i, _)| column_letters(i))
            .collect();
        let fate = if where_now.is_empty() {
            "no longer in the header row (renamed or deleted)".to_owned()
        } else {
            for l in &where_now {
                note(l.clone(), &mut columns);
            }
            format!("now in column {}", where_now.join(", "))
        };
        let found_txt = if have_raw.trim().is_empty() {
            "an empty header".to_owned()
        } else {
            format!("{have_raw:?}")
        };
        problems.push(format!(
            "column {letters}: expected {want:?}, found {found_txt}; {want:?} is {fate}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SheetsError::SchemaMismatch {
            sheet: sheet.to_owned(),
            problems,
            columns,
        })
    }
}

fn snake(h: &str) -> String {
    let mut out = String::new();
    let mut pending = false;
    for c in h.chars() {
        if c.is_alphanumeric() {
            if pending && !out.is_empty() {
                out.push('_');
            }
            pending = false;
            out.extend(c.to_lowercase());
        } else {
            pending = true;
        }
    }
    out
}

/// Field names for a header row that are unique and stable: a header in
/// snake case (`"Task ID"` -> `task_id`); a blank header is named after its
/// column (`column_c`); a name already taken gets its column's letters
/// (`a_b`, `task_id_e`). A name depends only on the headers up to its
/// column, so adding columns on the right never renames existing ones.
///
/// ```
/// use crm_sheets::schema::stable_field_names;
/// let names = stable_field_names(&["A", "A", "", "Task ID", "task_id"]);
/// assert_eq!(names, ["a", "a_b", "column_c", "task_id", "task_id_e"]);
/// ```
pub fn stable_field_names<S: AsRef<str>>(headers: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let letters = column_letters(i).to_lowercase();
        let base = snake(h.as_ref());
        let mut name = if base.is_empty() {
            format!("column_{letters}")
        } else {
            base
        };
        while out.contains(&name) {
            name = format!("{name}_{letters}");
        }
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hs: &[&str]) -> Vec<Cell> {
        hs.iter()
            .map(|h| {
                if h.is_empty() {
                    Cell::Empty
                } else {
                    Cell::Text((*h).into())
                }
            })
            .collect()
    }

    fn exp(hs: &[&str]) -> Vec<(usize, String)> {
        hs.iter()
            .enumerate()
            .map(|(i, h)| (i, (*h).to_owned()))
            .collect()
    }

    #[test]
    fn duplicate_blank_and_colliding_headers_give_five_stable_columns() {
        let names = stable_field_names(&["A", "A", "", "Task ID", "task_id"]);
        assert_eq!(names.len(), 5);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        // Stable: the same headers give the same names, and a new column on
        // the right renames nothing.
        assert_eq!(
            stable_field_names(&["A", "A", "", "Task ID", "task_id"]),
            names
        );
        let wider = stable_field_names(&["A", "A", "", "Task ID", "task_id", "A"]);
        assert_eq!(&wider[..5], &names[..]);
        assert_eq!(wider[5], "a_f");
        // A header that happens to look like a generated name still gets a unique one.
        let tricky = stable_field_names(&["a_b", "a", "a"]);
        assert_eq!(tricky, ["a_b", "a", "a_c"]);
    }

    #[test]
    fn matching_headers_pass_loosely() {
        let want = exp(&["Booking ID", "Client"]);
        check_headers("B", &want, &row(&[" booking  id ", "CLIENT", "extra"])).unwrap();
    }

    #[test]
    fn moved_column_names_both_columns() {
        let want = exp(&["Booking ID", "Client", "Campaign", "Start", "End"]);
        // "Campaign" moved from C to E.
        let got = row(&["Booking ID", "Client", "Start", "End", "Campaign"]);
        let err = check_headers("Bookings", &want, &got).unwrap_err();
        let SheetsError::SchemaMismatch {
            columns, problems, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert!(columns.contains(&"C".to_owned()) && columns.contains(&"E".to_owned()));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("column C") && p.contains("now in column E"))
        );
        let core: crm_core::Error = err.into();
        assert_eq!(core.kind(), &crm_core::ErrorKind::SchemaMismatch);
    }

    #[test]
    fn renamed_and_deleted_columns() {
        let want = exp(&["Booking ID", "Client", "Budget"]);
        let err = check_headers("S", &want, &row(&["Booking ID", "Advertiser"])).unwrap_err();
        let SheetsError::SchemaMismatch {
            columns, problems, ..
        } = err
        else {
            panic!()
        };
        assert_eq!(columns, ["B", "C"]);
        assert!(
            problems[0].contains("\"Advertiser\"") && problems[0].contains("renamed or deleted")
        );
        assert!(problems[1].contains("an empty header"));
    }
}
