//! Lints the Grafana dashboards in `grafana/dashboards/` and the provisioning
//! files in `grafana/provisioning/` (see docs/dashboards.md for the rules).
//!
//! Dashboard rules, each reported under its code:
//! - `dashboard-uid`: a fixed uid, lowercase letters, digits and `-`, at most
//!   40 characters, no template; `dashboard-uid-unique` across files;
//!   `dashboard-title`.
//! - `datasource-variable`: exactly one variable of type `datasource` for
//!   `prometheus`.
//! - `job-variable`, `instance-variable`: both exist as query variables.
//! - `variable-datasource`: query variables use the templated datasource.
//! - `variable-all`: query variables are multi-select with All, allValue `.*`.
//! - `undefined-variable`: a `$name` in a query that no variable defines.
//! - `variable-equality`: a template variable matched with `=`/`!=` instead
//!   of `=~`/`!~` (breaks multi-select and All).
//! - `panel-id`: unique numeric ids. Rows are exempt from the rest.
//! - `panel-title`, `panel-description`, `panel-unit`
//!   (`fieldConfig.defaults.unit`), `panel-datasource` and
//!   `target-datasource` (`{"type":"prometheus","uid":"${datasource}"}`),
//!   `panel-targets`, `target-expr`.
//! - `range-interval`: every range is `$__rate_interval`, or `$__range` for
//!   period figures; `range-in-timeseries`: `$__range` in a time series.
//! - `counter-raw`: a counter (or histogram series) used other than directly
//!   in `rate(...)`/`increase(...)`; `rate-on-gauge`: the reverse.
//! - `unknown-metric`: a metric neither in docs/metrics.md nor a standard
//!   Prometheus/process one.
//!
//! Provisioning files (read with serde_yaml): the datasource file has the
//! fixed uid, type prometheus, access, url http://prometheus:9090 and is the
//! default; the dashboard provider is of type file with
//! options.path /var/lib/grafana/dashboards; docs/dashboards.md says so.

mod dashboard_support;

use dashboard_support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const DATASOURCE_REF_UID: &str = "${datasource}";
/// The uid of the provisioned datasource (grafana/provisioning/datasources).
const PROVISIONED_DATASOURCE_UID: &str = "chat-exporter-prometheus";
const DASHBOARDS_PATH_IN_CONTAINER: &str = "/var/lib/grafana/dashboards";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    rule: &'static str,
    at: String,
    message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.at, self.message)
    }
}

struct Checker {
    contract: BTreeMap<String, String>,
    out: Vec<Violation>,
}

/// Metrics that are not in the contract but may be used: Prometheus' own
/// per-target series and the standard process collector.
fn is_standard_metric(name: &str) -> bool {
    matches!(
        name,
        "up" | "scrape_samples_scraped"
            | "scrape_duration_seconds"
            | "scrape_series_added"
            | "scrape_samples_post_metric_relabeling"
    ) || name.starts_with("process_")
}

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

impl Checker {
    fn new(contract: BTreeMap<String, String>) -> Self {
        Checker { contract, out: Vec::new() }
    }

    fn report(&mut self, rule: &'static str, at: impl Into<String>, message: impl Into<String>) {
        self.out.push(Violation { rule, at: at.into(), message: message.into() });
    }

    /// Some(true) for a counter-like series (counter or histogram part),
    /// Some(false) for a known gauge-like one, None if unknown.
    fn counter_like(&self, name: &str) -> Option<bool> {
        if let Some(ty) = self.contract.get(name) {
            return Some(ty == "counter");
        }
        for suffix in HISTOGRAM_SUFFIXES {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.contract.get(base).map(String::as_str) == Some("histogram") {
                    return Some(true);
                }
            }
        }
        if is_standard_metric(name) {
            return Some(name.ends_with("_total"));
        }
        None
    }

    fn check_dashboard(&mut self, file: &str, d: &Value) {
        // ---- dashboard
        let uid = d.get("uid").and_then(Value::as_str).unwrap_or("");
        let uid_ok = !uid.is_empty()
            && uid.len() <= 40
            && uid.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !uid_ok {
            self.report("dashboard-uid", file, format!("uid {uid:?} must be fixed: [a-z0-9-], 1 to 40 characters"));
        }
        if d.get("title").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
            self.report("dashboard-title", file, "dashboard has no title");
        }

        // ---- variables
        let vars = variables(d);
        let mut defined: BTreeSet<String> = BUILTINS.iter().map(|(k, _)| k.to_string()).collect();
        for extra in ["__interval_ms", "__range_s", "__range_ms", "__from", "__to", "__dashboard"] {
            defined.insert(extra.to_string());
        }
        let ds_vars: Vec<&&Value> = vars.iter().filter(|v| var_type(v) == "datasource").collect();
        if ds_vars.len() != 1 {
            self.report(
                "datasource-variable",
                file,
                format!("expected exactly one datasource variable, found {}", ds_vars.len()),
            );
        }
        for v in &ds_vars {
            if v.get("query").and_then(Value::as_str) != Some("prometheus") {
                self.report(
                    "datasource-variable",
                    format!("{file} variable {}", var_name(v)),
                    "the datasource variable must select type prometheus",
                );
            }
        }
        for required in ["job", "instance"] {
            let found = vars.iter().any(|v| var_name(v) == required && var_type(v) == "query");
            if !found {
                let rule = if required == "job" { "job-variable" } else { "instance-variable" };
                self.report(rule, file, format!("no query variable named {required}"));
            }
        }
        let mut var_queries = Vec::new();
        for v in &vars {
            let name = var_name(v).to_string();
            defined.insert(name.clone());
            if var_type(v) != "query" {
                continue;
            }
            let at = format!("{file} variable {name}");
            if !is_templated_datasource(v.get("datasource")) {
                self.report(
                    "variable-datasource",
                    at.clone(),
                    "query variables must use {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}",
                );
            }
            let multi = v.get("multi").and_then(Value::as_bool) == Some(true);
            let all = v.get("includeAll").and_then(Value::as_bool) == Some(true);
            let all_value = v.get("allValue").and_then(Value::as_str);
            if !(multi && all && all_value == Some(".*")) {
                self.report(
                    "variable-all",
                    at.clone(),
                    "query variables must be multi-select with All and allValue \".*\"",
                );
            }
            if let Some(q) = var_query(v) {
                var_queries.push((at, q));
            }
        }
        for (at, q) in &var_queries {
            self.check_variable_use(at, q, &defined);
        }

        // ---- panels
        let mut ids = BTreeSet::new();
        for p in all_panels(d) {
            let title = panel_title(p);
            let at = format!("{file} panel {title:?}");
            match p.get("id").and_then(Value::as_u64) {
                Some(id) => {
                    if !ids.insert(id) {
                        self.report("panel-id", at.clone(), format!("duplicate panel id {id}"));
                    }
                }
                None => self.report("panel-id", at.clone(), "panel has no numeric id"),
            }
            if is_row(p) {
                continue;
            }
            if p.get("title").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
                self.report("panel-title", at.clone(), "panel has no title");
            }
            if p.get("description").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
                self.report("panel-description", at.clone(), "panel has no description");
            }
            if p.pointer("/fieldConfig/defaults/unit").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
                self.report("panel-unit", at.clone(), "fieldConfig.defaults.unit is not set");
            }
            if !is_templated_datasource(p.get("datasource")) {
                self.report(
                    "panel-datasource",
                    at.clone(),
                    format!("datasource must be {{\"type\":\"prometheus\",\"uid\":\"{DATASOURCE_REF_UID}\"}}"),
                );
            }
            let ptype = p.get("type").and_then(Value::as_str).unwrap_or("");
            let targets = p.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
            if targets.is_empty() && ptype != "text" {
                self.report("panel-targets", at.clone(), "panel has no query");
            }
            for t in &targets {
                let ref_id = t.get("refId").and_then(Value::as_str).unwrap_or("?");
                let tat = format!("{at} target {ref_id}");
                if let Some(ds) = t.get("datasource") {
                    if !is_templated_datasource(Some(ds)) {
                        self.report("target-datasource", tat.clone(), "target datasource must be the templated one");
                    }
                }
                let expr = t.get("expr").and_then(Value::as_str).unwrap_or("");
                if expr.trim().is_empty() {
                    self.report("target-expr", tat.clone(), "target has no expr");
                    continue;
                }
                self.check_expr(&tat, ptype, expr, &defined);
            }
        }
    }

    fn check_variable_use(&mut self, at: &str, text: &str, defined: &BTreeSet<String>) {
        for name in referenced_variables(text) {
            if !defined.contains(&name) {
                self.report("undefined-variable", at, format!("${name} is not a dashboard variable"));
            }
        }
        // `label="$var"` or `label!="$var"`: multi-select and All need =~ / !~.
        let b = text.as_bytes();
        for (i, _) in text.match_indices("=\"$") {
            let prev = if i > 0 { b[i - 1] } else { b' ' };
            if prev != b'~' {
                let tail: String = text[i..].chars().take(30).collect();
                self.report(
                    "variable-equality",
                    at,
                    format!("template variable matched with = instead of =~ near {tail:?}"),
                );
            }
        }
    }

    fn check_expr(&mut self, at: &str, panel_type: &str, expr: &str, defined: &BTreeSet<String>) {
        self.check_variable_use(at, expr, defined);
        let scanned = scan_promql(expr);
        for r in &scanned.ranges {
            let r = r.trim();
            if r != "$__rate_interval" && r != "$__range" {
                self.report(
                    "range-interval",
                    at,
                    format!("range [{r}] must be [$__rate_interval] (or [$__range] for period figures)"),
                );
            }
            if r == "$__range" && panel_type == "timeseries" {
                self.report(
                    "range-in-timeseries",
                    at,
                    "[$__range] covers the whole time range: use [$__rate_interval] in a time series",
                );
            }
        }
        for m in &scanned.metrics {
            let through_rate = m.range.is_some() && matches!(m.function.as_deref(), Some("rate") | Some("increase"));
            match self.counter_like(&m.name) {
                None => self.report("unknown-metric", at, format!("{} is not in docs/metrics.md", m.name)),
                Some(true) if !through_rate => self.report(
                    "counter-raw",
                    at,
                    format!("counter {} must be used through rate() or increase()", m.name),
                ),
                Some(false)
                    if m.range.is_some() && matches!(m.function.as_deref(), Some("rate") | Some("increase")) =>
                {
                    self.report(
                        "rate-on-gauge",
                        at,
                        format!("{} is not a counter: rate()/increase() do not apply", m.name),
                    )
                }
                _ => {}
            }
        }
    }
}

fn is_templated_datasource(ds: Option<&Value>) -> bool {
    match ds {
        Some(Value::Object(o)) => {
            o.get("type").and_then(Value::as_str) == Some("prometheus")
                && o.get("uid").and_then(Value::as_str) == Some(DATASOURCE_REF_UID)
        }
        _ => false,
    }
}

fn lint_dashboard(file: &str, d: &Value) -> Vec<Violation> {
    let mut c = Checker::new(contract_metrics());
    c.check_dashboard(file, d);
    c.out
}

fn lint_all_dashboard_files() -> Vec<Violation> {
    let mut c = Checker::new(contract_metrics());
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for path in dashboard_files() {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        match load_json(&path) {
            Ok(d) => {
                c.check_dashboard(&file, &d);
                let uid = d.get("uid").and_then(Value::as_str).unwrap_or("").to_string();
                if let Some(other) = uids.insert(uid.clone(), file.clone()) {
                    c.report("dashboard-uid-unique", file.clone(), format!("uid {uid:?} is also used by {other}"));
                }
                // The datasource variable defaults to the provisioned datasource.
                for v in variables(&d) {
                    if var_type(v) == "datasource" {
                        let current = v.pointer("/current/value").and_then(Value::as_str);
                        if current != Some(PROVISIONED_DATASOURCE_UID) {
                            c.report(
                                "datasource-variable",
                                file.clone(),
                                format!(
                                    "the datasource variable should default to the provisioned uid {PROVISIONED_DATASOURCE_UID:?}, not {current:?}"
                                ),
                            );
                        }
                    }
                }
            }
            Err(e) => c.report("json", file, e),
        }
    }
    c.out
}

fn fail_on(violations: &[Violation]) {
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        panic!("{} dashboard lint violation(s):\n{}", list.len(), list.join("\n"));
    }
}

#[test]
fn every_dashboard_passes_the_lint() {
    fail_on(&lint_all_dashboard_files());
}

#[test]
fn dashboards_cover_the_expected_files() {
    let names: Vec<String> =
        dashboard_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    for expected in ["chats.json", "chat-exporter.json"] {
        assert!(names.iter().any(|n| n == expected), "missing grafana/dashboards/{expected}");
    }
}

/// The Chats dashboard mirrors the product screen: its four areas in order,
/// the filters each applies, period figures over the dashboard's range.
#[test]
fn chats_dashboard_mirrors_the_screen() {
    let d = load_json(&repo_root().join("grafana/dashboards/chats.json")).unwrap();
    let rows: Vec<String> = all_panels(&d).into_iter().filter(|p| is_row(p)).map(panel_title).collect();
    assert_eq!(rows.len(), 4, "one row per area: {rows:?}");
    for (i, r) in rows.iter().enumerate() {
        assert!(r.starts_with(&format!("0{}", i + 1)), "rows in the screen's order: {rows:?}");
    }
    let names: Vec<&str> = variables(&d).into_iter().map(var_name).collect();
    for v in ["datasource", "job", "instance", "app", "group", "origin", "agent", "chat_screen_url"] {
        assert!(names.contains(&v), "variable {v} missing: {names:?}");
    }
    let link_url = d
        .pointer("/links")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("link")))
        .and_then(|l| l.get("url"))
        .and_then(Value::as_str);
    assert_eq!(link_url, Some("${chat_screen_url}"), "dashboard link to the platform's screen");

    // Area of each panel = the last row above it.
    let mut area = String::new();
    for p in all_panels(&d) {
        if is_row(p) {
            area = panel_title(p)[..2].to_string();
            continue;
        }
        let vars: BTreeSet<String> = panel_exprs(p).iter().flat_map(|(_, e)| referenced_variables(e)).collect();
        let title = panel_title(p);
        if area == "02" {
            for forbidden in ["agent", "origin"] {
                assert!(
                    !vars.contains(forbidden),
                    "area 02 filters by application and group only; {title:?} uses ${forbidden}"
                );
            }
        }
        for needed in ["job", "instance", "app", "group"] {
            assert!(vars.contains(needed), "{title:?} (area {area}) does not filter by ${needed}");
        }
        if p.get("type").and_then(Value::as_str) == Some("stat") && area == "01" {
            assert!(vars.contains("__range"), "period figure {title:?} must use [$__range]");
        }
    }
}

// ------------------------------------------------------------ negative tests

/// A dashboard that breaks every rule once; the checker must report each.
#[test]
fn checker_reports_each_violation_of_a_broken_dashboard() {
    let good_ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let broken = json!({
        "uid": "Not A Stable ${uid}",
        "title": "",
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            {"type": "datasource", "name": "datasource2", "query": "loki"},
            {"type": "query", "name": "app", "datasource": {"type": "prometheus", "uid": "abc123"},
             "query": "label_values(chat_agents, app)", "multi": false, "includeAll": true, "allValue": ""}
        ]},
        "panels": [
            {"type": "row", "id": 1, "title": "row", "panels": []},
            {"type": "stat", "id": 2, "title": "", "description": "",
             "datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"},
             "fieldConfig": {"defaults": {}},
             "targets": [{"refId": "A", "datasource": {"uid": "prom"},
                          "expr": "sum(chat_conversations_answered_total{app=\"$app\", group=~\"$grp\"})"}]},
            {"type": "timeseries", "id": 2, "title": "Dup id", "description": "d",
             "datasource": good_ds, "fieldConfig": {"defaults": {"unit": "short"}},
             "targets": [
                 {"refId": "A", "expr": "sum(rate(chat_conversations_finished_total[5m]))"},
                 {"refId": "B", "expr": "sum(increase(chat_conversations_abandoned_total[$__range]))"},
                 {"refId": "C", "expr": "rate(chat_conversations_waiting[$__rate_interval])"},
                 {"refId": "D", "expr": "sum(chat_made_up_metric)"},
                 {"refId": "E", "expr": "histogram_quantile(0.9, sum by (le) (chat_conversation_wait_seconds_bucket))"},
                 {"refId": "F", "expr": ""}
             ]},
            {"type": "table", "title": "No id, no targets", "description": "d",
             "datasource": good_ds, "fieldConfig": {"defaults": {"unit": "short"}}}
        ]
    });
    let violations = lint_dashboard("broken.json", &broken);
    let reported: BTreeSet<&str> = violations.iter().map(|v| v.rule).collect();
    let expected = [
        "dashboard-uid",
        "dashboard-title",
        "datasource-variable",
        "job-variable",
        "instance-variable",
        "variable-datasource",
        "variable-all",
        "undefined-variable",
        "variable-equality",
        "panel-id",
        "panel-title",
        "panel-description",
        "panel-unit",
        "panel-datasource",
        "target-datasource",
        "panel-targets",
        "target-expr",
        "range-interval",
        "range-in-timeseries",
        "counter-raw",
        "rate-on-gauge",
        "unknown-metric",
    ];
    let missing: Vec<&str> = expected.iter().copied().filter(|r| !reported.contains(r)).collect();
    let all: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(missing.is_empty(), "rules not reported: {missing:?}\nreported:\n{}", all.join("\n"));
    // Specific findings, so a rule does not pass by reporting the wrong thing.
    let has = |rule: &str, needle: &str| {
        violations.iter().any(|v| v.rule == rule && (v.message.contains(needle) || v.at.contains(needle)))
    };
    assert!(has("range-interval", "[5m]"), "{all:#?}");
    assert!(has("undefined-variable", "$grp"), "{all:#?}");
    assert!(has("counter-raw", "chat_conversations_answered_total"), "{all:#?}");
    assert!(has("counter-raw", "chat_conversation_wait_seconds_bucket"), "{all:#?}");
    assert!(has("rate-on-gauge", "chat_conversations_waiting"), "{all:#?}");
    assert!(has("unknown-metric", "chat_made_up_metric"), "{all:#?}");
    assert!(has("panel-id", "duplicate panel id 2"), "{all:#?}");
    assert!(has("panel-id", "no numeric id"), "{all:#?}");
    // A row needs no datasource, unit or description.
    assert!(!violations.iter().any(|v| v.at.contains("panel \"row\"")), "rows are exempt: {all:#?}");
}

#[test]
fn checker_accepts_a_minimal_correct_dashboard() {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let var = |name: &str, q: &str| {
        json!({"type": "query", "name": name, "datasource": ds, "query": q,
               "multi": true, "includeAll": true, "allValue": ".*"})
    };
    let d = json!({
        "uid": "ok-dashboard", "title": "OK",
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            var("job", "label_values(chat_exporter_build_info, job)"),
            var("instance", "label_values(chat_exporter_build_info{job=~\"$job\"}, instance)")
        ]},
        "panels": [
            {"type": "row", "id": 1, "title": "r"},
            {"type": "timeseries", "id": 2, "title": "t", "description": "d", "datasource": ds,
             "fieldConfig": {"defaults": {"unit": "reqps"}},
             "targets": [{"refId": "A", "datasource": ds,
                          "expr": "sum by (code) (rate(chat_exporter_api_requests_total{job=~\"$job\", instance=~\"$instance\"}[$__rate_interval]))"}]},
            {"type": "stat", "id": 3, "title": "s", "description": "d", "datasource": ds,
             "fieldConfig": {"defaults": {"unit": "s"}},
             "targets": [{"refId": "A",
                          "expr": "histogram_quantile(0.5, sum by (le) (increase(chat_conversation_wait_seconds_bucket{job=~\"$job\"}[$__range]))) + time() - max(process_start_time_seconds)"}]}
        ]
    });
    let v = lint_dashboard("ok.json", &d);
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn promql_scanner_finds_selectors_ranges_and_functions() {
    let s = scan_promql(
        "histogram_quantile(0.9, sum by (le, group) (rate(a_bucket{x=~\"$x\", y=\"[1m]\"}[$__rate_interval]))) / on (group) group_left count(b) > bool 0",
    );
    let names: Vec<(&str, Option<&str>, Option<&str>)> =
        s.metrics.iter().map(|m| (m.name.as_str(), m.range.as_deref(), m.function.as_deref())).collect();
    assert_eq!(names, vec![("a_bucket", Some("$__rate_interval"), Some("rate")), ("b", None, Some("count")),]);
    assert_eq!(s.ranges, vec!["$__rate_interval".to_string()]);
    // `(x)` inside rate(...) is not an argument of rate.
    let s = scan_promql("rate((c_total)[5m:])");
    assert_eq!(s.metrics[0].function, None);
    assert_eq!(s.ranges, vec!["5m:".to_string()]);
}

// ------------------------------------------------------ provisioning YAML

/// Provisioning files are YAML; read them into JSON values for the checks.
fn parse_yaml(text: &str) -> Result<Value, String> {
    serde_yaml::from_str::<Value>(text).map_err(|e| e.to_string())
}

fn check_datasources_yaml(file: &str, v: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut bad = |rule: &'static str, message: String| out.push(Violation { rule, at: file.to_string(), message });
    if v.get("apiVersion") != Some(&json!(1)) {
        bad("provisioning-keys", "apiVersion: 1 is required".into());
    }
    let list = v.get("datasources").and_then(Value::as_array).cloned().unwrap_or_default();
    if list.len() != 1 {
        bad("provisioning-keys", format!("expected one datasource, found {}", list.len()));
    }
    for ds in &list {
        for key in ["name", "uid", "type", "access", "url"] {
            if ds.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
                bad("provisioning-keys", format!("datasource key {key} is missing"));
            }
        }
        if ds.get("type").and_then(Value::as_str) != Some("prometheus") {
            bad("provisioning-keys", "type must be prometheus".into());
        }
        if ds.get("uid").and_then(Value::as_str) != Some(PROVISIONED_DATASOURCE_UID) {
            bad("provisioning-keys", format!("uid must be the fixed {PROVISIONED_DATASOURCE_UID:?}"));
        }
        if ds.get("url").and_then(Value::as_str) != Some("http://prometheus:9090") {
            bad("provisioning-keys", "url must be http://prometheus:9090 (the compose stack)".into());
        }
        if ds.get("isDefault") != Some(&json!(true)) {
            bad("provisioning-keys", "isDefault: true is required".into());
        }
    }
    out
}

fn check_dashboards_yaml(file: &str, v: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut bad = |message: String| out.push(Violation { rule: "provisioning-keys", at: file.to_string(), message });
    if v.get("apiVersion") != Some(&json!(1)) {
        bad("apiVersion: 1 is required".into());
    }
    let list = v.get("providers").and_then(Value::as_array).cloned().unwrap_or_default();
    if list.is_empty() {
        bad("providers is missing or empty".into());
    }
    for p in &list {
        for key in ["name", "folder", "type"] {
            if p.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
                bad(format!("provider key {key} is missing"));
            }
        }
        if p.get("type").and_then(Value::as_str) != Some("file") {
            bad("type must be file".into());
        }
        if p.pointer("/options/path").and_then(Value::as_str) != Some(DASHBOARDS_PATH_IN_CONTAINER) {
            bad(format!("options.path must be {DASHBOARDS_PATH_IN_CONTAINER}"));
        }
    }
    out
}

fn yaml_files(sub: &str) -> Vec<std::path::PathBuf> {
    let dir = repo_root().join("grafana/provisioning").join(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML file in {}", dir.display());
    files
}

#[test]
fn provisioning_files_have_the_documented_keys() {
    let mut violations = Vec::new();
    for (sub, check) in [
        ("datasources", check_datasources_yaml as fn(&str, &Value) -> Vec<Violation>),
        ("dashboards", check_dashboards_yaml),
    ] {
        for path in yaml_files(sub) {
            let file = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&path).unwrap();
            match parse_yaml(&text) {
                Ok(v) => violations.extend(check(&file, &v)),
                Err(e) => violations.push(Violation { rule: "provisioning-yaml", at: file, message: e }),
            }
        }
    }
    fail_on(&violations);
    // What the files promise is documented.
    let doc = std::fs::read_to_string(repo_root().join("docs/dashboards.md")).expect("docs/dashboards.md");
    for needle in [
        DASHBOARDS_PATH_IN_CONTAINER,
        PROVISIONED_DATASOURCE_UID,
        "http://prometheus:9090",
        "chat_screen_url",
        "/etc/grafana/provisioning",
    ] {
        assert!(doc.contains(needle), "docs/dashboards.md does not mention {needle}");
    }
}

#[test]
fn yaml_checks_report_missing_keys() {
    let ds = parse_yaml(
        "apiVersion: 1\ndatasources:\n  - name: Prometheus # comment\n    type: loki\n    url: http://localhost:9090\n",
    )
    .unwrap();
    let v = check_datasources_yaml("ds.yaml", &ds);
    let msgs: Vec<&str> = v.iter().map(|v| v.message.as_str()).collect();
    for needle in ["uid is missing", "access is missing", "type must be prometheus", "url must be", "isDefault"] {
        assert!(msgs.iter().any(|m| m.contains(needle)), "{needle}: {msgs:#?}");
    }
    let dash =
        parse_yaml("apiVersion: 2\nproviders:\n- name: x\n  type: sqlite\n  options:\n    path: /tmp\n").unwrap();
    let v = check_dashboards_yaml("d.yaml", &dash);
    let msgs: Vec<&str> = v.iter().map(|v| v.message.as_str()).collect();
    for needle in ["apiVersion", "folder is missing", "type must be file", "options.path"] {
        assert!(msgs.iter().any(|m| m.contains(needle)), "{needle}: {msgs:#?}");
    }
    // A YAML syntax error is reported, not ignored.
    assert!(parse_yaml("a: 1\n   b: 2\n").is_err());
}
