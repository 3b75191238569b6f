//! The subset of OData query options Movidesk's API accepts: `$filter` with comparisons
//! joined by `and`/`or`/`not` and parentheses, `$orderby`, `$top`, `$skip`, `$select`.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;


#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
    Null,
    Date(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare(String, Op, Literal),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Text(String),
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Text(text));
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], ' ' | '\t' | '\n' | '(' | ')' | '\'') {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }
    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.tokens.get(self.pos).cloned() {
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Word(field)) => {
                self.pos += 1;
                let op = match self.tokens.get(self.pos) {
                    Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        other => return Err(format!("unknown operator '{other}'")),
                    },
                    _ => return Err(format!("expected an operator after '{field}'")),
                };
                self.pos += 1;
                let literal = match self.tokens.get(self.pos).cloned() {
                    Some(Token::Text(t)) => Literal::Text(t),
                    Some(Token::Word(w)) => parse_literal(&w)?,
                    _ => return Err(format!("expected a value after '{field}'")),
                };
                self.pos += 1;
                Ok(Filter::Compare(field, op, literal))
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn parse_literal(w: &str) -> Result<Literal, String> {
    match w {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        "null" => return Ok(Literal::Null),
        _ => {}
    }
    if w.contains('T') && w.contains(':') {
        return parse_datetime(w).map(Literal::Date).ok_or_else(|| format!("bad date '{w}'"));
    }
    w.parse::<f64>().map(Literal::Number).map_err(|_| format!("bad value '{w}'"))
}

pub fn parse_filter(input: &str) -> Result<Filter, String> {
    let mut parser = Parser { tokens: tokenize(input)?, pos: 0 };
    let filter = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(format!("unexpected trailing input at token {}", parser.pos));
    }
    Ok(filter)
}

fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match literal {
        Literal::Null => Some(if value.is_null() { Ordering::Equal } else { Ordering::Greater }),
        _ if value.is_null() => None,
        Literal::Number(n) => {
            let v = match value {
                Value::Number(x) => x.as_f64()?,
                Value::String(s) => s.parse().ok()?,
                _ => return None,
            };
            v.partial_cmp(n)
        }
        Literal::Text(t) => Some(value.as_str()?.cmp(t.as_str())),
        Literal::Bool(b) => Some(value.as_bool()?.cmp(b)),
        Literal::Date(d) => Some(parse_datetime(value.as_str()?)?.cmp(d)),
    }
}

impl Filter {
    pub fn matches(&self, item: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(item) && b.matches(item),
            Filter::Or(a, b) => a.matches(item) || b.matches(item),
            Filter::Not(a) => !a.matches(item),
            Filter::Compare(field, op, literal) => {
                let value = item.get(field).unwrap_or(&Value::Null);
                match (compare(value, literal), op) {
                    (None, Op::Ne) => true,
                    (None, _) => false,
                    (Some(o), Op::Eq) => o == Ordering::Equal,
                    (Some(o), Op::Ne) => o != Ordering::Equal,
                    (Some(o), Op::Gt) => o == Ordering::Greater,
                    (Some(o), Op::Ge) => o != Ordering::Less,
                    (Some(o), Op::Lt) => o == Ordering::Less,
                    (Some(o), Op::Le) => o != Ordering::Greater,
                }
            }
        }
    }
}

/// `$orderby`: `field [asc|desc]`, comma-separated.
pub fn parse_orderby(input: &str) -> Result<Vec<(String, bool)>, String> {
    input
        .split(',')
        .map(|part| {
            let mut words = part.split_whitespace();
            let field = words.next().ok_or("empty $orderby term")?.to_string();
            let descending = match words.next().map(|w| w.to_ascii_lowercase()) {
                None => false,
                Some(w) if w == "asc" => false,
                Some(w) if w == "desc" => true,
                Some(w) => return Err(format!("bad $orderby direction '{w}'")),
            };
            Ok((field, descending))
        })
        .collect()
}

pub fn order_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => {
            let num = |v: &Value| match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse::<f64>().ok(),
                _ => None,
            };
            if let (Some(x), Some(y)) = (num(a), num(b)) {
                return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
            }
            if let (Some(x), Some(y)) = (a.as_str().and_then(parse_datetime), b.as_str().and_then(parse_datetime)) {
                return x.cmp(&y);
            }
            a.to_string().cmp(&b.to_string())
        }
    }
}

/// Cheap bounds implied by a filter's top-level conjunction, so the simulator can skip
/// tickets without rendering them. Conservative: `None` means no bound.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bounds {
    pub last_update_from: Option<DateTime<Utc>>,
    pub id_after: Option<u64>,
    pub base_statuses: Option<Vec<String>>,
}

impl Filter {
    pub fn bounds(&self) -> Bounds {
        let mut b = Bounds::default();
        self.collect_bounds(&mut b);
        b
    }

    fn collect_bounds(&self, b: &mut Bounds) {
        match self {
            Filter::And(x, y) => {
                x.collect_bounds(b);
                y.collect_bounds(b);
            }
            Filter::Compare(field, op, Literal::Date(d)) if field == "lastUpdate" && matches!(op, Op::Ge | Op::Gt) => {
                b.last_update_from = Some(b.last_update_from.map_or(*d, |x| x.max(*d)));
            }
            Filter::Compare(field, Op::Gt, Literal::Number(n)) if field == "id" && *n >= 0.0 => {
                let n = n.floor() as u64;
                b.id_after = Some(b.id_after.map_or(n, |x| x.max(n)));
            }
            other => {
                if let Some(statuses) = other.status_alternatives() {
                    b.base_statuses = Some(statuses);
                }
            }
        }
    }

    /// `baseStatus eq 'A' or baseStatus eq 'B' ...` as the list of alternatives.
    fn status_alternatives(&self) -> Option<Vec<String>> {
        match self {
            Filter::Compare(field, Op::Eq, Literal::Text(t)) if field == "baseStatus" => Some(vec![t.clone()]),
            Filter::Or(x, y) => {
                let mut v = x.status_alternatives()?;
                v.extend(y.status_alternatives()?);
                Some(v)
            }
            _ => None,
        }
    }
}

/// Dates as the API reads and writes them: RFC 3339, or UTC without a zone designator.
/// The facade's own reading, not the exporter's.
fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}
