//! RFC 4180 CSV as the Bulk API 2.0 reads and writes it: comma-separated,
//! `"`-quoted fields that may hold commas, doubled quotes and line breaks,
//! `LF` or `CRLF` line endings.
//!
//! [`CsvReader`] yields one record at a time from a buffer, so a results
//! page is turned into records without first building every row.
//! [`write_row`] quotes only where needed. In ingest data `#N/A` sets a field
//! to null (Bulk API 2.0 Developer Guide, "Valid Date Format in Records" and
//! "Prepare CSV Files"); an empty value leaves it unchanged.

use crate::error::SalesforceError;

/// The ingest value that sets a field to null.
pub const NULL_VALUE: &str = "#N/A";

/// Reads records from CSV text, one at a time.
#[derive(Debug)]
pub struct CsvReader<'a> {
    input: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> CsvReader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a str) -> Self {
        CsvReader {
            input,
            pos: 0,
            line: 1,
        }
    }

    /// The next record, `None` at the end.
    ///
    /// # Errors
    /// [`SalesforceError::Csv`] for an unterminated quoted field or text
    /// after a closing quote.
    pub fn next_record(&mut self) -> Result<Option<Vec<String>>, SalesforceError> {
        let bytes = self.input.as_bytes();
        if self.pos >= bytes.len() {
            return Ok(None);
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        loop {
            // One field.
            let mut value = String::new();
            if bytes.get(self.pos) == Some(&b'"') {
                self.pos += 1;
                loop {
                    let rest = &self.input[self.pos..];
                    let Some(q) = rest.find('"') else {
                        return Err(SalesforceError::Csv {
                            line: start_line,
                            message: "unterminated quoted field".into(),
                        });
                    };
                    let chunk = &rest[..q];
                    self.line += chunk.matches('\n').count();
                    value.push_str(chunk);
                    self.pos += q + 1;
                    if bytes.get(self.pos) == Some(&b'"') {
                        value.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                match bytes.get(self.pos) {
                    None | Some(b',' | b'\n' | b'\r') => {}
                    Some(_) => {
                        return Err(SalesforceError::Csv {
                            line: self.line,
                            message: "text after a closing quote".into(),
                        });
                    }
                }
            } else {
                let rest = &self.input[self.pos..];
                let end = rest.find([',', '\n', '\r']).unwrap_or(rest.len());
                value.push_str(&rest[..end]);
                self.pos += end;
            }
            fields.push(value);
            match bytes.get(self.pos) {
                Some(b',') => {
                    self.pos += 1;
                }
                Some(b'\r') => {
                    self.pos += 1;
                    if bytes.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    self.line += 1;
                    return Ok(Some(fields));
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Ok(Some(fields));
                }
                _ => return Ok(Some(fields)),
            }
        }
    }
}

impl Iterator for CsvReader<'_> {
    type Item = Result<Vec<String>, SalesforceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Appends one CSV row (with `\n`) to `out`, quoting fields that hold a
/// comma, quote, line break or leading/trailing space.
pub fn write_row<I, S>(out: &mut String, fields: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = f.as_ref();
        let needs_quotes =
            f.contains([',', '"', '\n', '\r']) || f.starts_with(' ') || f.ends_with(' ');
        if needs_quotes {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_quotes_and_line_breaks() {
        let text = "Id,Name,Note\r\n001,\"Acme, Inc.\",\"line 1\nline \"\"2\"\"\"\n002,Plain,\n";
        let rows: Vec<Vec<String>> = CsvReader::new(text).map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], ["001", "Acme, Inc.", "line 1\nline \"2\""]);
        assert_eq!(rows[2], ["002", "Plain", ""]);
    }

    #[test]
    fn reports_broken_input() {
        assert!(CsvReader::new("a,\"b\n").next_record().is_err());
        assert!(CsvReader::new("\"a\"b,c\n").next_record().is_err());
        assert_eq!(CsvReader::new("").next_record().unwrap(), None);
        assert_eq!(
            CsvReader::new("a,b").next_record().unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
    }

    proptest! {
        #[test]
        fn rows_round_trip(rows in prop::collection::vec(prop::collection::vec(any::<String>(), 1..5), 1..5)) {
            let mut text = String::new();
            for r in &rows {
                write_row(&mut text, r);
            }
            let back: Vec<Vec<String>> = CsvReader::new(&text).map(|r| r.unwrap()).collect();
            // A row of one empty field is an empty line, which reads back as one empty field.
            prop_assert_eq!(back, rows);
        }
    }
}
