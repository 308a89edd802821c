//! The SOQL subset the simulator answers: `SELECT fields FROM type [WHERE
//! cond] [ORDER BY f [ASC|DESC], ...] [LIMIT n]`, where conditions compare a
//! field with a literal (`=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`,
//! `IN (...)`) and combine with `AND`, `OR`, `NOT` and parentheses.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};

use crate::soql::unquote;
use crate::source::parse_datetime;

/// A literal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Num(f64),
    Text(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Cmp(String, CmpOp, Lit),
    In(String, Vec<Lit>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Query {
    pub(crate) fields: Vec<String>,
    pub(crate) object: String,
    pub(crate) filter: Option<Expr>,
    pub(crate) order: Vec<(String, bool)>,
    pub(crate) limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    Comma,
    Open,
    Close,
}

fn lex(q: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = q;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(out);
        };
        match c {
            '\'' => {
                let (s, r) = unquote(rest).ok_or("unterminated string literal")?;
                out.push(Tok::Str(s));
                rest = r;
            }
            ',' => {
                out.push(Tok::Comma);
                rest = &rest[1..];
            }
            '(' => {
                out.push(Tok::Open);
                rest = &rest[1..];
            }
            ')' => {
                out.push(Tok::Close);
                rest = &rest[1..];
            }
            '=' | '!' | '<' | '>' => {
                let (op, n) = match (c, rest.as_bytes().get(1)) {
                    ('!', Some(b'=')) => ("!=", 2),
                    ('<', Some(b'>')) => ("!=", 2),
                    ('<', Some(b'=')) => ("<=", 2),
                    ('>', Some(b'=')) => (">=", 2),
                    ('=', _) => ("=", 1),
                    ('<', _) => ("<", 1),
                    ('>', _) => (">", 1),
                    _ => return Err(format!("unexpected character {c:?}")),
                };
                out.push(Tok::Op(op));
                rest = &rest[n..];
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '+' => {
                let end = rest
                    .find(|ch: char| {
                        !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | ':' | '-' | '+'))
                    })
                    .unwrap_or(rest.len());
                out.push(Tok::Word(rest[..end].to_owned()));
                rest = &rest[end..];
            }
            c => return Err(format!("unexpected character {c:?}")),
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Word(w)) = self.peek()
            && w.eq_ignore_ascii_case(kw)
        {
            self.pos += 1;
            return true;
        }
        false
    }
    fn expect_keyword(&mut self, kw: &str) -> Result<(), String> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(format!("expecting {kw}"))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) if crate::soql::is_valid_name(&w) => Ok(w),
            other => Err(format!("unexpected token: {other:?}")),
        }
    }
    fn literal(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Text(s)),
            Some(Tok::Word(w)) => {
                if w.eq_ignore_ascii_case("null") {
                    Ok(Lit::Null)
                } else if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") {
                    Ok(Lit::Bool(w.eq_ignore_ascii_case("true")))
                } else if w.contains('T') && w.len() >= 20 {
                    parse_datetime(&w)
                        .map(Lit::DateTime)
                        .ok_or(format!("invalid date-time literal {w}"))
                } else if w.len() == 10 && w.as_bytes().get(4) == Some(&b'-') {
                    NaiveDate::parse_from_str(&w, "%Y-%m-%d")
                        .map(Lit::Date)
                        .map_err(|_| format!("invalid date literal {w}"))
                } else {
                    w.parse::<f64>()
                        .map(Lit::Num)
                        .map_err(|_| format!("unexpected token: {w}"))
                }
            }
            other => Err(format!("expecting a literal, got {other:?}")),
        }
    }
    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and_expr()?;
        while self.keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }
    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let e = self.or_expr()?;
            if self.next() != Some(Tok::Close) {
                return Err("expecting )".into());
            }
            return Ok(e);
        }
        let field = self.ident()?;
        let negated_in = self.keyword("NOT");
        if self.keyword("IN") {
            if self.next() != Some(Tok::Open) {
                return Err("expecting (".into());
            }
            let mut values = vec![self.literal()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                values.push(self.literal()?);
            }
            if self.next() != Some(Tok::Close) {
                return Err("expecting )".into());
            }
            return Ok(Expr::In(field, values, negated_in));
        }
        if negated_in {
            return Err("expecting IN".into());
        }
        let op = if self.keyword("LIKE") {
            CmpOp::Like
        } else {
            match self.next() {
                Some(Tok::Op("=")) => CmpOp::Eq,
                Some(Tok::Op("!=")) => CmpOp::Ne,
                Some(Tok::Op("<")) => CmpOp::Lt,
                Some(Tok::Op("<=")) => CmpOp::Le,
                Some(Tok::Op(">")) => CmpOp::Gt,
                Some(Tok::Op(">=")) => CmpOp::Ge,
                other => return Err(format!("expecting an operator, got {other:?}")),
            }
        };
        Ok(Expr::Cmp(field, op, self.literal()?))
    }
}

/// Parses a query of the subset (a `MALFORMED_QUERY` message on failure).
pub(crate) fn parse(q: &str) -> Result<Query, String> {
    let mut p = Parser {
        toks: lex(q)?,
        pos: 0,
    };
    p.expect_keyword("SELECT")?;
    let mut fields = vec![p.ident()?];
    while p.peek() == Some(&Tok::Comma) {
        p.pos += 1;
        fields.push(p.ident()?);
    }
    p.expect_keyword("FROM")?;
    let object = p.ident()?;
    let filter = if p.keyword("WHERE") {
        Some(p.or_expr()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let f = p.ident()?;
            let asc = if p.keyword("DESC") {
                false
            } else {
                p.keyword("ASC");
                true
            };
            order.push((f, asc));
            if p.peek() == Some(&Tok::Comma) {
                p.pos += 1;
            } else {
                break;
            }
        }
    }
    let limit = if p.keyword("LIMIT") {
        match p.literal()? {
            Lit::Num(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as usize),
            _ => return Err("LIMIT must be a whole number".into()),
        }
    } else {
        None
    };
    if let Some(t) = p.peek() {
        return Err(format!("unexpected token: {t:?}"));
    }
    Ok(Query {
        fields,
        object,
        filter,
        order,
        limit,
    })
}

/// Every field a query mentions outside the SELECT list.
pub(crate) fn filter_fields(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Cmp(f, _, _) | Expr::In(f, _, _) => out.push(f.clone()),
        Expr::And(a, b) | Expr::Or(a, b) => {
            filter_fields(a, out);
            filter_fields(b, out);
        }
        Expr::Not(a) => filter_fields(a, out),
    }
}

/// A field value of a record, typed for comparison.
pub(crate) fn value_of(ftype: &str, v: Option<&serde_json::Value>) -> Lit {
    match v {
        None | Some(serde_json::Value::Null) => Lit::Null,
        Some(serde_json::Value::Bool(b)) => Lit::Bool(*b),
        Some(serde_json::Value::Number(n)) => Lit::Num(n.as_f64().unwrap_or(0.0)),
        Some(serde_json::Value::String(s)) => match ftype {
            "datetime" => parse_datetime(s).map_or(Lit::Text(s.clone()), Lit::DateTime),
            "date" => {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_or(Lit::Text(s.clone()), Lit::Date)
            }
            _ => Lit::Text(s.clone()),
        },
        Some(other) => Lit::Text(other.to_string()),
    }
}

/// Compares two values; `case_sensitive` for ids.
pub(crate) fn compare(a: &Lit, b: &Lit, case_sensitive: bool) -> Option<Ordering> {
    match (a, b) {
        (Lit::Null, Lit::Null) => Some(Ordering::Equal),
        (Lit::Null, _) => Some(Ordering::Less),
        (_, Lit::Null) => Some(Ordering::Greater),
        (Lit::Bool(x), Lit::Bool(y)) => Some(x.cmp(y)),
        (Lit::Num(x), Lit::Num(y)) => x.partial_cmp(y),
        (Lit::Date(x), Lit::Date(y)) => Some(x.cmp(y)),
        (Lit::DateTime(x), Lit::DateTime(y)) => Some(x.cmp(y)),
        (Lit::DateTime(x), Lit::Date(y)) => Some(x.date_naive().cmp(y)),
        (Lit::Text(x), Lit::Text(y)) => Some(if case_sensitive {
            x.cmp(y)
        } else {
            x.to_lowercase().cmp(&y.to_lowercase())
        }),
        (Lit::Text(x), Lit::Num(y)) => x.parse::<f64>().ok().and_then(|x| x.partial_cmp(y)),
        _ => None,
    }
}

fn like(value: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some((c, rest)) => {
                v.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(&v[1..], rest)
            }
        }
    }
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    go(&v, &p)
}

/// Evaluates a condition; `get(field)` gives a field's typed value.
pub(crate) fn eval(e: &Expr, get: &dyn Fn(&str) -> Lit) -> bool {
    match e {
        Expr::And(a, b) => eval(a, get) && eval(b, get),
        Expr::Or(a, b) => eval(a, get) || eval(b, get),
        Expr::Not(a) => !eval(a, get),
        Expr::In(f, values, negated) => {
            let v = get(f);
            let hit = values
                .iter()
                .any(|x| compare(&v, x, f.eq_ignore_ascii_case("Id")) == Some(Ordering::Equal));
            hit != *negated
        }
        Expr::Cmp(f, op, lit) => {
            let v = get(f);
            if *op == CmpOp::Like {
                return match (&v, lit) {
                    (Lit::Text(s), Lit::Text(p)) => like(s, p),
                    _ => false,
                };
            }
            // Comparisons with null other than = / != are false, as in SOQL.
            if (v == Lit::Null || *lit == Lit::Null) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return false;
            }
            let Some(ord) = compare(&v, lit, f.eq_ignore_ascii_case("Id")) else {
                return *op == CmpOp::Ne;
            };
            match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
                CmpOp::Like => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_connector_sends() {
        let q = parse(
            "SELECT Id, SystemModstamp, Account.Name FROM Contact WHERE (SystemModstamp > 2024-03-01T12:00:00Z \
             OR (SystemModstamp = 2024-03-01T12:00:00.005Z AND Id > '003\\'x')) AND IsDeleted = true \
             AND Email LIKE '%@x.com' AND LeadSource NOT IN ('Web', 'Other') ORDER BY SystemModstamp, Id DESC LIMIT 5",
        )
        .unwrap();
        assert_eq!(q.fields, ["Id", "SystemModstamp", "Account.Name"]);
        assert_eq!(
            q.order,
            vec![("SystemModstamp".into(), true), ("Id".into(), false)]
        );
        assert_eq!(q.limit, Some(5));
        let mut f = Vec::new();
        filter_fields(q.filter.as_ref().unwrap(), &mut f);
        assert!(f.contains(&"IsDeleted".to_owned()) && f.contains(&"LeadSource".to_owned()));
        assert!(parse("SELECT Id FROM Contact WHERE Name = 'x' OR").is_err());
        assert!(parse("SELECT Id, (SELECT Id FROM Contacts) FROM Account").is_err());
    }

    #[test]
    fn evaluates() {
        let q = parse("SELECT Id FROM Contact WHERE (Name = 'ADA' OR Score >= 5) AND NOT Email LIKE '%@spam.com'").unwrap();
        let rec = |name: &str, score: f64, email: &str| {
            let (name, email) = (name.to_owned(), email.to_owned());
            move |f: &str| match f {
                "Name" => Lit::Text(name.clone()),
                "Score" => Lit::Num(score),
                "Email" => Lit::Text(email.clone()),
                _ => Lit::Null,
            }
        };
        let e = q.filter.unwrap();
        assert!(eval(&e, &rec("ada", 1.0, "a@b.com")));
        assert!(eval(&e, &rec("bob", 7.0, "a@b.com")));
        assert!(!eval(&e, &rec("bob", 7.0, "x@spam.com")));
        assert!(!eval(&e, &rec("bob", 1.0, "a@b.com")));
    }
}
