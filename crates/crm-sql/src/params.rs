//! Named parameters (`:last_sync`, `:region`) rewritten to each backend's
//! placeholders, so values are always bound, never spliced into SQL.
//!
//! The scanner knows enough SQL to leave alone everything that only looks
//! like a parameter: string literals (with `''` and, where the dialect has
//! them, backslash escapes), PostgreSQL `E'...'` and `$tag$...$tag$` strings,
//! quoted identifiers (`"..."`, `` `...` ``, SQLite `[...]`), line comments
//! (`--`, MySQL `#`), block comments (nested on PostgreSQL), `::` casts and
//! MySQL `:=` assignments.

use crate::config::DatabaseKind;
use crate::error::SqlError;

/// A query with its named parameters replaced by placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The SQL with `$n` (PostgreSQL) or `?` (MySQL, SQLite) placeholders.
    pub(crate) sql: String,
    /// The parameter to bind for each placeholder, in bind order. On
    /// PostgreSQL a name used twice binds once (`$n` is reused); elsewhere
    /// each occurrence binds again.
    pub(crate) binds: Vec<String>,
}

/// Rewrites `:name` parameters of `sql` for `dialect`.
///
/// # Errors
/// [`SqlError::ConfigInvalid`] for an unterminated string, identifier or
/// comment, or for positional placeholders (`?`, `$1`) in the input, which
/// would shift the bound values.
pub(crate) fn rewrite(sql: &str, dialect: DatabaseKind) -> Result<Rewritten, SqlError> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut binds: Vec<String> = Vec::new();
    let mut i = 0;
    // Start of the text not yet copied to `out`.
    let mut copied = 0;
    let pg = dialect == DatabaseKind::Postgres;
    let my = dialect == DatabaseKind::MySql;
    let lite = dialect == DatabaseKind::Sqlite;
    let invalid = |what: &str| SqlError::ConfigInvalid(format!("query has {what}"));

    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // PostgreSQL E'...' strings take backslash escapes; MySQL strings always do.
                let e_string =
                    pg && i > 0 && matches!(b[i - 1], b'e' | b'E') && !is_ident(b, i - 1);
                i = skip_quoted(b, i, b'\'', my || e_string)
                    .ok_or_else(|| invalid("an unterminated string literal"))?;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"', my)
                    .ok_or_else(|| invalid("an unterminated quoted identifier"))?;
            }
            b'`' if my || lite => {
                i = skip_quoted(b, i, b'`', false)
                    .ok_or_else(|| invalid("an unterminated quoted identifier"))?;
            }
            b'[' if lite => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b']')
                    .map(|p| i + p + 1)
                    .ok_or_else(|| invalid("an unterminated [identifier]"))?;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && (!my
                    || b.get(i + 2)
                        .is_none_or(|x| x.is_ascii_whitespace() || x.is_ascii_control())) =>
            {
                i = skip_line(b, i);
            }
            b'#' if my => {
                i = skip_line(b, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i, pg)
                    .ok_or_else(|| invalid("an unterminated /* comment"))?;
            }
            b'$' if pg => {
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) && !is_ident(b, i) {
                    return Err(invalid(
                        "a positional placeholder ($1); use named parameters like :last_sync",
                    ));
                }
                match dollar_tag(b, i) {
                    Some(tag_len) if !is_ident(b, i) => {
                        let tag = &b[i..i + tag_len];
                        let body = i + tag_len;
                        let end = find(b, body, tag)
                            .ok_or_else(|| invalid("an unterminated $$ string"))?;
                        i = end + tag_len;
                    }
                    _ => i += 1,
                }
            }
            b'?' if my || lite => {
                return Err(invalid(
                    "a positional placeholder (?); use named parameters like :last_sync",
                ));
            }
            b':' => {
                let next = b.get(i + 1).copied();
                if next == Some(b':') {
                    // A `::` cast (or more colons): copy them all.
                    while b.get(i) == Some(&b':') {
                        i += 1;
                    }
                } else if next.is_some_and(|n| n.is_ascii_alphabetic() || n == b'_')
                    && !(i > 0 && b[i - 1] == b':')
                {
                    let start = i + 1;
                    let mut end = start;
                    while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                        end += 1;
                    }
                    let name = &sql[start..end];
                    out.push_str(&sql[copied..i]);
                    if pg {
                        let n = match binds.iter().position(|x| x == name) {
                            Some(p) => p + 1,
                            None => {
                                binds.push(name.to_owned());
                                binds.len()
                            }
                        };
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        binds.push(name.to_owned());
                        out.push('?');
                    }
                    i = end;
                    copied = end;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(Rewritten { sql: out, binds })
}

/// True if `b[i]` continues an identifier (so `$` or `E` belongs to a word).
fn is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$')
}

/// Skips a quoted run starting at `b[start] == quote`; a doubled quote is an
/// escaped quote; with `backslash`, `\x` escapes too. Returns the index after
/// the closing quote.
fn skip_quoted(b: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if backslash && c == b'\\' {
            i += 2;
            continue;
        }
        if c == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn skip_line(b: &[u8], start: usize) -> usize {
    b[start..]
        .iter()
        .position(|&x| x == b'\n')
        .map_or(b.len(), |p| start + p + 1)
}

fn skip_block_comment(b: &[u8], start: usize, nested: bool) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = start + 2;
    while i + 1 < b.len() {
        if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else if nested && b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    None
}

/// The length of a `$tag$` opener at `b[i]`, if there is one.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Quotes an identifier for `dialect` (`"name"` or `` `name` ``), doubling
/// any quote inside, so a column or table name is never read as SQL.
pub(crate) fn quote_ident(name: &str, dialect: DatabaseKind) -> String {
    match dialect {
        DatabaseKind::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Quotes a possibly schema-qualified table name (`schema.table`).
pub(crate) fn quote_table(name: &str, dialect: DatabaseKind) -> String {
    name.split('.')
        .map(|part| quote_ident(part, dialect))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: DatabaseKind = DatabaseKind::Postgres;
    const MY: DatabaseKind = DatabaseKind::MySql;
    const LITE: DatabaseKind = DatabaseKind::Sqlite;

    #[test]
    fn rewrites_per_dialect() {
        let sql =
            "SELECT * FROM b WHERE updated_at >= :last_sync AND region = :region OR x > :last_sync";
        let pg = rewrite(sql, PG).unwrap();
        assert_eq!(
            pg.sql,
            "SELECT * FROM b WHERE updated_at >= $1 AND region = $2 OR x > $1"
        );
        assert_eq!(pg.binds, ["last_sync", "region"]);
        let my = rewrite(sql, MY).unwrap();
        assert_eq!(
            my.sql,
            "SELECT * FROM b WHERE updated_at >= ? AND region = ? OR x > ?"
        );
        assert_eq!(my.binds, ["last_sync", "region", "last_sync"]);
    }

    #[test]
    fn ignores_strings_comments_casts() {
        let sql = "SELECT ':no', 'it''s :no', x::date, \"a:b\" -- :no\n\
                   /* :no /* nested :no */ :no */ FROM t WHERE t.u >= :yes";
        let pg = rewrite(sql, PG).unwrap();
        assert_eq!(pg.binds, ["yes"]);
        assert!(pg.sql.ends_with("t.u >= $1"));
        assert!(pg.sql.contains("x::date"));
        assert!(pg.sql.contains("'it''s :no'"));
    }

    #[test]
    fn dollar_and_escape_strings() {
        let sql = "SELECT $f$ :no $f$, $$ :no $$, E'\\' :no', :yes";
        let pg = rewrite(sql, PG).unwrap();
        assert_eq!(pg.binds, ["yes"]);
        assert!(pg.sql.ends_with("E'\\' :no', $1"));
    }

    #[test]
    fn mysql_specifics() {
        let sql = "SELECT 'a\\' :no', `c:d`, @v := 1, \"x :no\" # :no\nFROM t WHERE a = :yes";
        let my = rewrite(sql, MY).unwrap();
        assert_eq!(my.binds, ["yes"]);
        assert!(my.sql.contains("@v := 1"));
        // `--` needs a space to be a comment in MySQL: `1--:x` is arithmetic.
        let my = rewrite("SELECT 1--:x", MY).unwrap();
        assert_eq!(my.binds, ["x"]);
        let my = rewrite("SELECT 1 -- :x", MY).unwrap();
        assert!(my.binds.is_empty());
    }

    #[test]
    fn sqlite_brackets() {
        let lite = rewrite("SELECT [a:b] FROM t WHERE u > :s", LITE).unwrap();
        assert_eq!(lite.binds, ["s"]);
        assert_eq!(lite.sql, "SELECT [a:b] FROM t WHERE u > ?");
    }

    #[test]
    fn rejects_positional_and_unterminated() {
        assert!(rewrite("SELECT ? FROM t", MY).is_err());
        assert!(rewrite("SELECT $1 FROM t", PG).is_err());
        assert!(rewrite("SELECT 'open", PG).is_err());
        assert!(rewrite("SELECT /* open", LITE).is_err());
        // `?` is a JSON operator on PostgreSQL, not a placeholder.
        assert!(rewrite("SELECT j ? 'k' FROM t", PG).is_ok());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird", PG), "\"we\"\"ird\"");
        assert_eq!(quote_ident("we`ird", MY), "`we``ird`");
        assert_eq!(quote_table("crm.bookings", PG), "\"crm\".\"bookings\"");
    }
}
