//! Shared helpers for `dashboards_lint.rs` and `dashboards_e2e.rs`: loading the
//! Grafana dashboard JSON files, walking their panels and targets, reading their
//! template variables, a small PromQL scanner, and Grafana-style variable
//! substitution.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Root of the crate (where `grafana/` and `docs/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `grafana/dashboards/*.json`, sorted.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo_root().join("grafana").join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard JSON in {}", dir.display());
    files
}

pub fn load_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
}

pub fn is_row(panel: &Value) -> bool {
    panel.get("type").and_then(Value::as_str) == Some("row")
}

/// All panels, rows included, with the panels nested in collapsed rows.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(panels) = dashboard.get("panels").and_then(Value::as_array) {
        for p in panels {
            out.push(p);
            if let Some(nested) = p.get("panels").and_then(Value::as_array) {
                out.extend(nested.iter());
            }
        }
    }
    out
}

pub fn panel_title(panel: &Value) -> String {
    panel.get("title").and_then(Value::as_str).unwrap_or("<untitled>").to_string()
}

/// The targets of a panel that carry a PromQL expression: (refId, expr).
pub fn panel_exprs(panel: &Value) -> Vec<(String, String)> {
    panel
        .get("targets")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t.get("refId").and_then(Value::as_str).unwrap_or("?").to_string(),
                        t.get("expr").and_then(Value::as_str).unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard.pointer("/templating/list").and_then(Value::as_array).map(|l| l.iter().collect()).unwrap_or_default()
}

pub fn var_name(var: &Value) -> &str {
    var.get("name").and_then(Value::as_str).unwrap_or("")
}

pub fn var_type(var: &Value) -> &str {
    var.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The query of a `query` variable: Grafana stores either a string or an
/// object `{ "query": "...", ... }`.
pub fn var_query(var: &Value) -> Option<String> {
    match var.get("query") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("query").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `label_values(selector, label)` or `label_values(label)` -> (selector, label).
pub fn parse_label_values(query: &str) -> Option<(Option<String>, String)> {
    let q = query.trim();
    let inner = q.strip_prefix("label_values(")?.strip_suffix(')')?;
    // The label is after the last comma that is outside braces and quotes.
    let mut depth = 0i32;
    let mut in_str = false;
    let mut split = None;
    for (i, c) in inner.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '{' | '(' if !in_str => depth += 1,
            '}' | ')' if !in_str => depth -= 1,
            ',' if !in_str && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    match split {
        Some(i) => Some((Some(inner[..i].trim().to_string()), inner[i + 1..].trim().to_string())),
        None => Some((None, inner.trim().to_string())),
    }
}

/// Grafana built-in interval variables and the values the end-to-end test uses.
pub const BUILTINS: &[(&str, &str)] = &[("__rate_interval", "1m"), ("__range", "5m"), ("__interval", "15s")];

/// Replace `$name` / `${name}` (Grafana syntax) with the given values. Built-ins
/// are replaced from [`BUILTINS`]; longer names first so `$agent` never eats
/// the start of `$agents`.
pub fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut all: Vec<(String, String)> = BUILTINS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
    let mut out = expr.to_string();
    for (k, v) in &all {
        out = out.replace(&format!("${{{k}}}"), v);
        out = out.replace(&format!("${k}"), v);
    }
    out
}

/// Escape a label value the way Grafana does for a multi-value variable used
/// in a `=~` matcher: regex metacharacters get a backslash, written `\\`
/// inside the PromQL double-quoted string.
pub fn regex_escape_for_promql(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out
}

/// Names of the variables referenced in a text (`$name` or `${name}`).
pub fn referenced_variables(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let braced = i + 1 < b.len() && b[i + 1] == b'{';
            let start = if braced { i + 2 } else { i + 1 };
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start {
                out.push(text[start..j].to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// One metric selector found in a PromQL expression.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricUse {
    pub name: String,
    /// The label matchers, braces included ("" when none).
    pub matchers: String,
    /// Contents of the range selector right after it, if any (`$__range`).
    pub range: Option<String>,
    /// Innermost function or aggregation call enclosing the selector.
    pub function: Option<String>,
}

/// Everything the lint needs out of one expression.
#[derive(Debug, Default)]
pub struct ScannedExpr {
    pub metrics: Vec<MetricUse>,
    /// Selectors without a metric name (`{__name__=~"..."}`), braces included.
    pub nameless: Vec<String>,
    /// Every `[...]` range or subquery, contents only.
    pub ranges: Vec<String>,
    pub functions: Vec<String>,
}

const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn starts_with_label_list_keyword(b: &[u8], at: usize) -> bool {
    let mut j = at;
    while j < b.len() && b[j].is_ascii_alphabetic() {
        j += 1;
    }
    let word = std::str::from_utf8(&b[at..j]).unwrap_or("").to_ascii_lowercase();
    word == "by" || word == "without"
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index just past the bracket that closes the one at `open`, skipping strings.
fn matching(b: &[u8], open: usize, close: u8) -> usize {
    let opener = b[open];
    let mut depth = 0;
    let mut i = open;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
            continue;
        }
        if c == opener {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    b.len()
}

fn skip_string(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// A small PromQL scanner: finds metric selectors (with their matchers, range
/// and enclosing function), range selectors and function calls. Good enough
/// for dashboard queries; not a full parser (Prometheus itself parses every
/// query in the end-to-end test).
pub fn scan_promql(expr: &str) -> ScannedExpr {
    let b = expr.as_bytes();
    let mut out = ScannedExpr::default();
    // Stack of open parentheses, each with the call name before it, if any.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'(' {
            stack.push(None);
            i += 1;
        } else if c == b')' {
            stack.pop();
            i += 1;
        } else if c == b'[' {
            let end = matching(b, i, b']');
            out.ranges.push(expr[i + 1..end.saturating_sub(1)].to_string());
            i = end;
        } else if c == b'{' {
            // A selector without a metric name: {__name__=~"..."}.
            let end = matching(b, i, b'}');
            out.nameless.push(expr[i..end].to_string());
            i = end;
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            // Number or duration literal.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let ident = &expr[start..i];
            let lower = ident.to_ascii_lowercase();
            let next = skip_ws(b, i);
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if next < b.len() && b[next] == b'(' {
                    i = matching(b, next, b')');
                }
            } else if AGGREGATIONS.contains(&lower.as_str())
                && next < b.len()
                && b[next] != b'('
                && starts_with_label_list_keyword(b, next)
            {
                // `sum by (x) (...)`: skip the keyword and its label list; the
                // parenthesis that follows belongs to the aggregation.
                let mut j = next;
                while j < b.len() && b[j].is_ascii_alphabetic() {
                    j += 1;
                }
                j = skip_ws(b, j);
                if j < b.len() && b[j] == b'(' {
                    j = skip_ws(b, matching(b, j, b')'));
                }
                out.functions.push(ident.to_string());
                if j < b.len() && b[j] == b'(' {
                    stack.push(Some(ident.to_string()));
                    j += 1;
                }
                i = j;
            } else if KEYWORDS.contains(&lower.as_str()) {
                // operator keyword or literal; `atan2` is a binary operator
            } else if next < b.len() && b[next] == b'(' {
                out.functions.push(ident.to_string());
                stack.push(Some(ident.to_string()));
                i = next + 1;
                // Aggregations may put `by (...)` after the parentheses; that is
                // handled when the keyword is met.
            } else {
                // A metric name.
                let mut j = next;
                let mut matchers = String::new();
                if j < b.len() && b[j] == b'{' {
                    let end = matching(b, j, b'}');
                    matchers = expr[j..end].to_string();
                    j = skip_ws(b, end);
                }
                let mut range = None;
                if j < b.len() && b[j] == b'[' {
                    let end = matching(b, j, b']');
                    let r = expr[j + 1..end.saturating_sub(1)].to_string();
                    out.ranges.push(r.clone());
                    range = Some(r);
                    j = end;
                }
                // Only the innermost parenthesis counts: a selector in plain
                // parentheses inside rate(...) is not an argument of rate.
                let function = stack.last().cloned().flatten();
                out.metrics.push(MetricUse { name: ident.to_string(), matchers, range, function });
                i = j;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The metric contract read from docs/metrics.md: name -> type
/// (`counter`, `gauge`, `histogram`, ...).
pub fn contract_metrics() -> BTreeMap<String, String> {
    let path = repo_root().join("docs").join("metrics.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | ..." -> ["", "`name`", "type", ...]
        if cells.len() < 4 {
            continue;
        }
        let name = cells[1];
        if let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
            if name.contains('*') {
                continue;
            }
            let ty = cells[2].split_whitespace().next().unwrap_or("").to_string();
            out.insert(name.to_string(), ty);
        }
    }
    assert!(
        out.contains_key("chat_conversations_answered_total"),
        "could not read the metric table of {}",
        path.display()
    );
    out
}
