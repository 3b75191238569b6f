//! Lints the Grafana dashboards in `grafana/dashboards/` and the provisioning
//! files in `grafana/provisioning/` (see docs/dashboards.md for the rules).
//!
//! Dashboard rules, each reported under its code:
//! - `dashboard-uid`: a fixed uid, lowercase letters, digits and `-`, at most
//!   40 characters, no template; `dashboard-uid-unique` across files;
//!   `dashboard-title`.
//! - `datasource-variable`: exactly one variable of type `datasource` for
//!   `prometheus`.
//! - `job-variable`, `instance-variable`: both exist as query variables, and take
//!   their values only from the exporter's own metrics (`chat_exporter_*`), the
//!   instances within `$job`.
//! - `variable-datasource`: query variables use the templated datasource.
//! - `variable-all`: query variables are multi-select with All; `job` and
//!   `instance` have no custom All value (All = the values found, so it never
//!   widens to other jobs), the others allValue `.*`. Link variables (single
//!   value, no All) are exempt.
//! - `undefined-variable`: a `$name` in a query that no variable defines.
//! - `variable-equality`: a template variable matched with `=`/`!=` instead
//!   of `=~`/`!~` (breaks multi-select and All).
//! - `job-scope`: a selector of a panel query (or of a variable query, below
//!   `job`) without `job=~"$job"` and `instance=~"$instance"`: every panel is
//!   scoped to the exporter's job.
//! - `panel-id`: unique numeric ids. Rows are exempt from the rest.
//! - `panel-title`, `panel-description`, `panel-unit`
//!   (`fieldConfig.defaults.unit`), `panel-datasource` and
//!   `target-datasource` (`{"type":"prometheus","uid":"${datasource}"}`),
//!   `panel-targets`, `target-expr`.
//! - `panel-colors`: a stat, gauge or bar gauge without a colour mode
//!   (`fieldConfig.defaults.color`) or without absolute thresholds (a base step,
//!   then ascending values): Grafana's default would show any value above 80 in red;
//!   red is never a fixed colour, it is kept for the thresholds of alerts.
//! - `alert-threshold`: a panel that links to the runbook section of an alert
//!   colours by thresholds whose red boundary is the alert's own threshold, read
//!   from alerts/alerting_rules.yml (for time series: drawn, `thresholdsStyle`).
//! - `age-clamp`: a query using `time()` (an age) not wrapped in
//!   `clamp_min(..., 0)`: a clock ahead of Prometheus' would show negative ages.
//! - `alert-annotations`: no enabled annotation of the firing alerts
//!   (`ALERTS{alertstate="firing"}`) on the templated datasource.
//! - `link-url`: a link (dashboard, panel or data link) to anything but the
//!   platform's screen variable `${chat_screen_url}`, a section of
//!   docs/runbook.md, or another dashboard; `placeholder`: a placeholder address
//!   (`YOURACCOUNT`, `example.com`...) anywhere in the file.
//! - `queue-link`: a panel showing the queue (`chat_conversations_waiting*`)
//!   without the one-click link to the platform's screen, where chats are
//!   redistributed.
//! - `platform-name`: a platform name (movidesk, chatwoot, rocketchat) written
//!   into a query: `source` and the rest come from the data.
//! - `range-interval`: every range is `$__rate_interval`, or `$__range` for
//!   period figures; `range-in-timeseries`: `$__range` in a time series.
//! - `counter-raw`: a counter (or histogram series) used other than directly
//!   in `rate(...)`/`increase(...)`; `rate-on-gauge`: the reverse.
//! - `unknown-metric`: a metric neither in docs/metrics.md nor a standard
//!   Prometheus/process one.
//!
//! Beside the rules, `panels_show_their_alerts` requires the panels that show what
//! an alert watches to link to its runbook section (and so to agree with it), and
//! `chats_dashboard_mirrors_the_screen` the Chats dashboard's layout, filters and
//! the colours of both sets of agent status.
//!
//! Import through Grafana's UI (`import-inputs`): each dashboard declares the data source
//! input `DS_PROMETHEUS` (`__inputs`), which only the datasource variable's default uses, so
//! an import asks for the data source and a provisioned dashboard (whose `${DS_PROMETHEUS}`
//! nothing replaces) falls back to the first Prometheus data source; every `${DS_*}` used is
//! declared and every input used; `__requires` lists Grafana, the Prometheus data source and
//! exactly the panel types used. `import_replaces_only_the_data_source_input` applies an
//! import as Grafana's importer does and checks the result.
//!
//! Provisioning files (read with serde_yaml): grafana/provisioning holds no data source (an
//! existing Grafana provisioning that folder keeps its own); the compose demo's data source
//! file (deploy/compose/grafana-datasources) has the fixed uid, type prometheus, access,
//! url http://prometheus:9090 and is the demo Grafana's default; the dashboard provider is
//! of type file with options.path /var/lib/grafana/dashboards; docs/dashboards.md says so.

mod dashboard_support;

use dashboard_support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const DATASOURCE_REF_UID: &str = "${datasource}";
/// The uid of the compose demo's data source (deploy/compose/grafana-datasources).
const PROVISIONED_DATASOURCE_UID: &str = "chat-exporter-prometheus";
/// Where the compose demo's data source is provisioned from: not grafana/provisioning.
const DEMO_DATASOURCES_DIR: &str = "deploy/compose/grafana-datasources";
/// The data source input an import through Grafana's UI asks for (`__inputs`).
const DATASOURCE_INPUT: &str = "DS_PROMETHEUS";
const DASHBOARDS_PATH_IN_CONTAINER: &str = "/var/lib/grafana/dashboards";
/// Under the repository Cargo.toml declares.
const RUNBOOK_URL: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbook.md");
/// The variable holding the platform's chat screen (docs/dashboards.md).
const SCREEN_VARIABLE: &str = "chat_screen_url";
const SCREEN_URL: &str = "${chat_screen_url}";
/// Variables holding one value for links, not filters: no multi-select, no All.
const LINK_VARIABLES: &[&str] = &[SCREEN_VARIABLE];
const PLATFORM_NAMES: &[&str] = &["movidesk", "chatwoot", "rocketchat", "rocket.chat"];
const PLACEHOLDERS: &[&str] =
    &["youraccount", "your_account", "your-account", "yourhost", "example.com", "example.org", "changeme"];
/// Both sets of agent status (docs/metrics.md): presence platforms, then Movidesk.
const PRESENCE_STATUSES: &[&str] = &["available", "busy", "away", "offline"];
const MOVIDESK_STATUSES: &[&str] = &["attending", "not_attending"];

/// The panels that show what an alert watches: (file, panel title, alert).
const ALERT_PANELS: &[(&str, &str, &str)] = &[
    ("chats.json", "First-contact resolution", "ChatFirstContactResolutionLow"),
    ("chats.json", "First-contact resolution over time", "ChatFirstContactResolutionLow"),
    ("chats.json", "Abandonment", "ChatAbandonmentHigh"),
    ("chats.json", "Chats waiting now", "ChatQueueSpike"),
    ("chats.json", "Waiting by group", "ChatQueueSpike"),
    ("chats.json", "Oldest wait", "ChatWaitTooLong"),
    ("chats.json", "Oldest wait over time", "ChatWaitTooLong"),
    ("chat-exporter.json", "Source up", "ChatExporterSourceDown"),
    ("chat-exporter.json", "Age of the last success", "ChatExporterDataStale"),
    ("chat-exporter.json", "Lag behind the platform", "ChatExporterFallingBehind"),
];

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

/// An alert's threshold: the first comparison with a number in its expression
/// (`... > 600`, `... < 0.7`, `... == 0`).
#[derive(Debug, Clone, PartialEq)]
struct Threshold {
    op: String,
    value: f64,
}

/// Alert name -> threshold, read from alerts/alerting_rules.yml (never a copy).
fn alert_thresholds() -> BTreeMap<String, Threshold> {
    let path = repo_root().join("alerts/alerting_rules.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerting rules are YAML");
    let comparison = regex::Regex::new(r"(>=|<=|==|!=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)").unwrap();
    let mut out = BTreeMap::new();
    for group in doc.get("groups").and_then(|g| g.as_sequence()).into_iter().flatten() {
        for rule in group.get("rules").and_then(|r| r.as_sequence()).into_iter().flatten() {
            let (Some(name), Some(expr)) =
                (rule.get("alert").and_then(|a| a.as_str()), rule.get("expr").and_then(|e| e.as_str()))
            else {
                continue;
            };
            let c = comparison.captures(expr).unwrap_or_else(|| panic!("alert {name}: no threshold in {expr}"));
            out.insert(name.to_string(), Threshold { op: c[1].to_string(), value: c[2].parse().unwrap() });
        }
    }
    assert!(out.len() >= 8, "expected the alerts of alerts/alerting_rules.yml, found {out:?}");
    out
}

/// GitHub's anchors of the runbook's headings.
fn runbook_anchors() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/runbook.md")).expect("docs/runbook.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(|h| {
            h.trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The alert a link points at, when it is a runbook section named after an alert.
fn linked_alert<'a>(url: &str, alerts: &'a BTreeMap<String, Threshold>) -> Option<&'a str> {
    let anchor = url.strip_prefix(RUNBOOK_URL)?.strip_prefix('#')?;
    alerts.keys().find(|a| a.to_lowercase() == anchor).map(String::as_str)
}

/// Every link of a panel: panel links and data links (defaults and overrides).
fn panel_links(p: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = p.get("links").and_then(Value::as_array).map(|l| l.iter().collect()).unwrap_or_default();
    if let Some(l) = p.pointer("/fieldConfig/defaults/links").and_then(Value::as_array) {
        out.extend(l.iter());
    }
    for o in p.pointer("/fieldConfig/overrides").and_then(Value::as_array).into_iter().flatten() {
        for prop in o.get("properties").and_then(Value::as_array).into_iter().flatten() {
            if prop.get("id").and_then(Value::as_str) == Some("links") {
                out.extend(prop.get("value").and_then(Value::as_array).into_iter().flatten());
            }
        }
    }
    out
}

fn link_url(link: &Value) -> &str {
    link.get("url").and_then(Value::as_str).unwrap_or("")
}

fn is_red(color: &str) -> bool {
    let c = color.to_ascii_lowercase();
    c.contains("red") || ["#f2495c", "#e02f44", "#c4162a", "#ff0000"].contains(&c.as_str())
}

/// (value, colour) of each threshold step; the base step's value is -infinity.
fn threshold_steps(p: &Value) -> Option<Vec<(f64, String)>> {
    let steps = p.pointer("/fieldConfig/defaults/thresholds/steps")?.as_array()?;
    Some(
        steps
            .iter()
            .map(|s| {
                (
                    s.get("value").and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY),
                    s.get("color").and_then(Value::as_str).unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

fn color_at(steps: &[(f64, String)], v: f64) -> &str {
    steps.iter().rfind(|(at, _)| *at <= v).map(|(_, c)| c.as_str()).unwrap_or("")
}

/// Whether the steps turn red exactly where the alert fires.
fn agrees_with(steps: &[(f64, String)], t: &Threshold) -> Result<(), String> {
    let below: Vec<&(f64, String)> = steps.iter().filter(|(at, _)| *at < t.value).collect();
    let at_t = color_at(steps, t.value);
    match t.op.as_str() {
        ">" | ">=" => {
            if below.iter().any(|(_, c)| is_red(c)) || !is_red(at_t) {
                return Err(format!("red must start at {} (the alert fires at {} {})", t.value, t.op, t.value));
            }
        }
        "<" | "<=" => {
            if below.is_empty() || below.iter().any(|(_, c)| !is_red(c)) || is_red(at_t) {
                return Err(format!("red must end at {} (the alert fires at {} {})", t.value, t.op, t.value));
            }
        }
        _ => {
            let above_red = steps.iter().filter(|(at, _)| *at > t.value).all(|(_, c)| is_red(c));
            if !is_red(at_t) || above_red {
                return Err(format!(
                    "{} must be red and higher values not (the alert fires at {} {})",
                    t.value, t.op, t.value
                ));
            }
        }
    }
    Ok(())
}

struct Checker {
    contract: BTreeMap<String, String>,
    alerts: BTreeMap<String, Threshold>,
    anchors: BTreeSet<String>,
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

/// Whether a selector's matchers hold `label=~"$label"` (not `xlabel=~...`).
fn has_matcher(matchers: &str, label: &str) -> bool {
    let needle = format!("{label}=~\"${label}\"");
    matchers.match_indices(&needle).any(|(i, _)| {
        let prev = matchers[..i].chars().next_back().unwrap_or('{');
        prev == '{' || prev == ',' || prev.is_whitespace()
    })
}

impl Checker {
    fn new() -> Self {
        Checker {
            contract: contract_metrics(),
            alerts: alert_thresholds(),
            anchors: runbook_anchors(),
            out: Vec::new(),
        }
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
        let text = d.to_string().to_ascii_lowercase();
        for p in PLACEHOLDERS {
            if text.contains(p) {
                self.report("placeholder", file, format!("placeholder address {p:?} left in the dashboard"));
            }
        }

        // ---- annotations: the firing alerts
        let firing = d.pointer("/annotations/list").and_then(Value::as_array).into_iter().flatten().any(|a| {
            let expr = a.get("expr").or_else(|| a.pointer("/target/expr")).and_then(Value::as_str).unwrap_or("");
            a.get("enable").and_then(Value::as_bool) == Some(true)
                && is_templated_datasource(a.get("datasource"))
                && expr.contains("ALERTS{")
                && expr.contains("alertstate=\"firing\"")
        });
        if !firing {
            self.report(
                "alert-annotations",
                file,
                "no enabled annotation of ALERTS{alertstate=\"firing\"} on the templated datasource",
            );
        }

        // ---- dashboard links
        for l in d.get("links").and_then(Value::as_array).into_iter().flatten() {
            if l.get("type").and_then(Value::as_str) == Some("link") {
                self.check_link(&format!("{file} dashboard link"), link_url(l));
            }
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
            let rule = if required == "job" { "job-variable" } else { "instance-variable" };
            let Some(v) = vars.iter().find(|v| var_name(v) == required && var_type(v) == "query") else {
                self.report(rule, file, format!("no query variable named {required}"));
                continue;
            };
            // Values only from the exporter's own metrics (instances: within $job).
            let own = var_query(v).and_then(|q| parse_label_values(&q)).is_some_and(|(selector, label)| {
                let selector = selector.unwrap_or_default();
                let name_ok = selector.starts_with("chat_exporter_");
                let job_ok = required == "job" || has_matcher(&selector, "job");
                label == required && name_ok && job_ok
            });
            if !own {
                self.report(
                    rule,
                    format!("{file} variable {required}"),
                    format!(
                        "must be label_values(chat_exporter_...{}, {required}): values from the exporter's own metrics only",
                        if required == "job" { "" } else { "{job=~\"$job\"}" }
                    ),
                );
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
            let all_value = v.get("allValue").and_then(Value::as_str).unwrap_or("");
            if LINK_VARIABLES.contains(&name.as_str()) {
                if multi || all {
                    self.report("variable-all", at.clone(), "a link variable holds one value: no multi-select, no All");
                }
            } else if name == "job" || name == "instance" {
                if !(multi && all && all_value.is_empty()) {
                    self.report(
                        "variable-all",
                        at.clone(),
                        "job and instance must be multi-select with All and no custom all value: All must mean the exporter's jobs found, never `.*` (every job)",
                    );
                }
            } else if !(multi && all && all_value == ".*") {
                self.report(
                    "variable-all",
                    at.clone(),
                    "query variables must be multi-select with All and allValue \".*\"",
                );
            }
            if let Some(q) = var_query(v) {
                if name != "job" {
                    if let Some((Some(selector), _)) = parse_label_values(&q) {
                        let needs: &[&str] = if name == "instance" { &["job"] } else { &["job", "instance"] };
                        for label in needs {
                            if !has_matcher(&selector, label) {
                                self.report(
                                    "job-scope",
                                    at.clone(),
                                    format!("selector {selector} lacks {label}=~\"${label}\""),
                                );
                            }
                        }
                    }
                }
                self.check_platform_names(&at, &q);
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
            if matches!(ptype, "stat" | "gauge" | "bargauge") {
                self.check_colors(&at, p);
            }
            let links = panel_links(p);
            for l in &links {
                self.check_link(&at, link_url(l));
                if let Some(alert) = linked_alert(link_url(l), &self.alerts).map(str::to_string) {
                    let t = self.alerts[&alert].clone();
                    self.check_alert_threshold(&at, ptype, p, &alert, &t);
                }
            }
            let targets = p.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
            if targets.is_empty() && ptype != "text" {
                self.report("panel-targets", at.clone(), "panel has no query");
            }
            let mut shows_queue = false;
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
                shows_queue |=
                    scan_promql(expr).metrics.iter().any(|m| m.name.starts_with("chat_conversations_waiting"));
                self.check_expr(&tat, ptype, expr, &defined);
            }
            if shows_queue && !links.iter().any(|l| link_url(l) == SCREEN_URL) {
                self.report(
                    "queue-link",
                    at.clone(),
                    format!("a queue panel needs a link to {SCREEN_URL}, where chats are redistributed"),
                );
            }
        }
    }

    /// A link goes to the platform's screen, a runbook section or another dashboard.
    fn check_link(&mut self, at: &str, url: &str) {
        if url == SCREEN_URL {
            return;
        }
        if let Some(rest) = url.strip_prefix(RUNBOOK_URL) {
            match rest.strip_prefix('#') {
                None if rest.is_empty() => {}
                Some(anchor) if self.anchors.contains(anchor) => {}
                _ => self.report("link-url", at, format!("{url}: no such section in docs/runbook.md")),
            }
            return;
        }
        if url.starts_with("/d/") {
            return;
        }
        self.report(
            "link-url",
            at,
            format!("link to {url:?}: links go to {SCREEN_URL} (the platform's screen, provisioned), a runbook section or a dashboard"),
        );
    }

    fn check_colors(&mut self, at: &str, p: &Value) {
        let color = p.pointer("/fieldConfig/defaults/color");
        let mode = color.and_then(|c| c.get("mode")).and_then(Value::as_str).unwrap_or("");
        let fixed_ok = mode != "fixed"
            || !color.and_then(|c| c.get("fixedColor")).and_then(Value::as_str).unwrap_or("").is_empty();
        if mode.is_empty() || !fixed_ok {
            self.report("panel-colors", at, "fieldConfig.defaults.color must set a mode (and fixedColor for fixed)");
        }
        let fixed = color.and_then(|c| c.get("fixedColor")).and_then(Value::as_str).unwrap_or("");
        if mode == "fixed" && is_red(fixed) {
            self.report("panel-colors", at, "red is kept for alert thresholds: not a fixed colour");
        }
        let th = p.pointer("/fieldConfig/defaults/thresholds");
        let abs = th.and_then(|t| t.get("mode")).and_then(Value::as_str) == Some("absolute");
        let steps = th.and_then(|t| t.get("steps")).and_then(Value::as_array).cloned().unwrap_or_default();
        let base_ok = steps.first().is_some_and(|s| s.get("value").is_some_and(Value::is_null));
        let values: Vec<Option<f64>> = steps.iter().skip(1).map(|s| s.get("value").and_then(Value::as_f64)).collect();
        let ascending = values.iter().all(Option::is_some) && values.windows(2).all(|w| w[0].unwrap() < w[1].unwrap());
        let colored = steps.iter().all(|s| !s.get("color").and_then(Value::as_str).unwrap_or("").is_empty());
        if !(abs && base_ok && ascending && colored) {
            self.report(
                "panel-colors",
                at,
                "fieldConfig.defaults.thresholds must be absolute: a coloured base step (value null), then ascending values",
            );
        }
    }

    fn check_alert_threshold(&mut self, at: &str, ptype: &str, p: &Value, alert: &str, t: &Threshold) {
        let Some(steps) = threshold_steps(p) else {
            self.report("alert-threshold", at, format!("links to {alert} but has no thresholds"));
            return;
        };
        if p.pointer("/fieldConfig/defaults/thresholds/mode").and_then(Value::as_str) != Some("absolute") {
            self.report("alert-threshold", at, format!("thresholds of {alert} must be absolute"));
        }
        if let Err(e) = agrees_with(&steps, t) {
            self.report("alert-threshold", at, format!("disagrees with {alert}: {e}; steps {steps:?}"));
        }
        let shown = match ptype {
            "timeseries" => !matches!(
                p.pointer("/fieldConfig/defaults/custom/thresholdsStyle/mode").and_then(Value::as_str),
                None | Some("off")
            ),
            "stat" | "gauge" | "bargauge" => {
                p.pointer("/fieldConfig/defaults/color/mode").and_then(Value::as_str) == Some("thresholds")
            }
            _ => true,
        };
        if !shown {
            self.report(
                "alert-threshold",
                at,
                format!("the thresholds of {alert} must show: colour by thresholds, or draw them in a time series"),
            );
        }
    }

    fn check_platform_names(&mut self, at: &str, text: &str) {
        let lower = text.to_ascii_lowercase();
        for name in PLATFORM_NAMES {
            if lower.contains(name) {
                self.report("platform-name", at, format!("{name:?} written into a query: take it from the data"));
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
        self.check_platform_names(at, expr);
        let scanned = scan_promql(expr);
        // Every selector scoped to the exporter's job and instance.
        let selectors: Vec<(String, &str)> = scanned
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.matchers.as_str()))
            .chain(scanned.nameless.iter().map(|s| (String::new(), s.as_str())))
            .collect();
        for (name, matchers) in selectors {
            for label in ["job", "instance"] {
                if !has_matcher(matchers, label) {
                    self.report("job-scope", at, format!("{name}{matchers} lacks {label}=~\"${label}\""));
                }
            }
        }
        // An age is never negative.
        if scanned.functions.iter().any(|f| f == "time") {
            let e = expr.trim();
            let wrapped = e.starts_with("clamp_min(") && e.ends_with(", 0)") && {
                // the clamp_min call spans the whole expression
                let b = e.as_bytes();
                let open = e.find('(').unwrap();
                let mut depth = 0;
                let mut close = b.len();
                for (i, c) in b.iter().enumerate().skip(open) {
                    match c {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                close = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                close == b.len() - 1
            };
            if !wrapped {
                self.report("age-clamp", at, "an age computed from time() must be wrapped in clamp_min(..., 0)");
            }
        }
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
    let mut c = Checker::new();
    c.check_dashboard(file, d);
    c.out
}

fn lint_all_dashboard_files() -> Vec<Violation> {
    let mut c = Checker::new();
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
                for (rule, message) in check_import(&d) {
                    c.report(rule, file.clone(), message);
                }
            }
            Err(e) => c.report("json", file, e),
        }
    }
    c.out
}

/// What an import through Grafana's UI needs, and what keeps a provisioned copy working:
/// (rule, message) for each problem.
fn check_import(d: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let inputs = d.get("__inputs").and_then(Value::as_array).cloned().unwrap_or_default();
    let declared: BTreeSet<String> =
        inputs.iter().filter_map(|i| i.get("name").and_then(Value::as_str)).map(str::to_string).collect();
    let wanted = json!({"name": DATASOURCE_INPUT, "type": "datasource", "pluginId": "prometheus"});
    let matches = inputs.iter().any(|i| wanted.as_object().unwrap().iter().all(|(k, v)| i.get(k) == Some(v)));
    if !matches || inputs.len() != 1 {
        out.push((
            "import-inputs",
            format!("__inputs must be exactly one data source input {DATASOURCE_INPUT} of plugin prometheus, found {inputs:?}"),
        ));
    }
    // Every ${DS_...} the importer would replace is declared, and every input is used.
    let mut without_inputs = d.clone();
    without_inputs.as_object_mut().map(|o| o.remove("__inputs"));
    let text = without_inputs.to_string();
    let used: BTreeSet<String> =
        regex::Regex::new(r"\$\{(DS_[A-Z0-9_]+)\}").unwrap().captures_iter(&text).map(|c| c[1].to_string()).collect();
    if used != declared {
        out.push(("import-inputs", format!("inputs used {used:?} differ from those declared {declared:?}")));
    }
    // Only the datasource variable's default names the input: panels and queries go
    // through the variable, which provisioning (which never replaces ${DS_PROMETHEUS})
    // resolves to the first Prometheus data source.
    let placeholder = format!("${{{DATASOURCE_INPUT}}}");
    for v in variables(d) {
        if var_type(v) == "datasource" {
            for key in ["value", "text"] {
                let current = v.pointer(&format!("/current/{key}")).and_then(Value::as_str);
                if current != Some(placeholder.as_str()) {
                    out.push((
                        "import-inputs",
                        format!("the datasource variable's current.{key} must be {placeholder:?}, not {current:?}"),
                    ));
                }
            }
        }
    }
    let mut rest = without_inputs.clone();
    if let Some(list) = rest.pointer_mut("/templating/list").and_then(Value::as_array_mut) {
        for v in list.iter_mut().filter(|v| var_type(v) == "datasource") {
            v.as_object_mut().map(|o| o.remove("current"));
        }
    }
    if rest.to_string().contains(&placeholder) {
        out.push(("import-inputs", format!("{placeholder} is used outside the datasource variable's default")));
    }
    // __requires: Grafana, the Prometheus data source, and exactly the panel types used.
    let requires = d.get("__requires").and_then(Value::as_array).cloned().unwrap_or_default();
    let required = |kind: &str| -> BTreeSet<String> {
        requires
            .iter()
            .filter(|r| r.get("type").and_then(Value::as_str) == Some(kind))
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    };
    if required("grafana") != BTreeSet::from(["grafana".to_string()]) {
        out.push(("import-requires", "__requires must name grafana".to_string()));
    }
    if required("datasource") != BTreeSet::from(["prometheus".to_string()]) {
        out.push(("import-requires", "__requires must name the prometheus data source".to_string()));
    }
    let mut types = BTreeSet::new();
    fn walk(panels: &[Value], types: &mut BTreeSet<String>) {
        for p in panels {
            if let Some(t) = p.get("type").and_then(Value::as_str) {
                if t != "row" {
                    types.insert(t.to_string());
                }
            }
            walk(p.get("panels").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]), types);
        }
    }
    walk(d.get("panels").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]), &mut types);
    if required("panel") != types {
        out.push((
            "import-requires",
            format!("__requires panels {:?} differ from those used {types:?}", required("panel")),
        ));
    }
    out
}

/// A dashboard as Grafana's importer makes it (pkg/services/dashboardimport: every
/// `${NAME}` of a declared input replaced by the value chosen, anywhere in the JSON;
/// `__inputs` dropped).
fn imported(d: &Value, chosen: &BTreeMap<String, String>) -> Value {
    match d {
        Value::String(s) => {
            let re = regex::Regex::new(r"\$\{.+?\}").unwrap();
            Value::String(
                re.replace_all(s, |c: &regex::Captures| {
                    let name = c[0].trim_start_matches("${").trim_end_matches('}');
                    chosen.get(name).cloned().unwrap_or_else(|| c[0].to_string())
                })
                .to_string(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| imported(i, chosen)).collect()),
        Value::Object(o) => Value::Object(
            o.iter().filter(|(k, _)| *k != "__inputs").map(|(k, v)| (k.clone(), imported(v, chosen))).collect(),
        ),
        other => other.clone(),
    }
}

/// An import that picks a data source makes it the datasource variable's default and
/// changes nothing else: panels keep `${datasource}`, so the dashboard's picker still works.
#[test]
fn import_replaces_only_the_data_source_input() {
    for path in dashboard_files() {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let d = load_json(&path).unwrap();
        let chosen = BTreeMap::from([(DATASOURCE_INPUT.to_string(), "uid-picked-at-import".to_string())]);
        let after = imported(&d, &chosen);
        assert!(after.get("__inputs").is_none(), "{file}");
        let ds: Vec<&Value> = variables(&after).into_iter().filter(|v| var_type(v) == "datasource").collect();
        assert_eq!(ds.len(), 1, "{file}");
        assert_eq!(ds[0].pointer("/current/value"), Some(&json!("uid-picked-at-import")), "{file}");
        assert!(!after.to_string().contains("${DS_"), "{file}: an input left unreplaced");
        // Apart from that default, the imported dashboard is the file, lint and all.
        let mut back = after.clone();
        for v in back.pointer_mut("/templating/list").and_then(Value::as_array_mut).unwrap() {
            if var_type(v) == "datasource" {
                v["current"] = d_current(&d);
            }
        }
        let mut original = d.clone();
        original.as_object_mut().unwrap().remove("__inputs");
        assert_eq!(back, original, "{file}: the import changed more than the data source's default");
        assert_eq!(lint_dashboard(&file, &after), Vec::<Violation>::new(), "{file} after import");
    }
    // The check fails a dashboard whose input is missing or whose panels name it.
    let d = load_json(&dashboard_files()[0]).unwrap();
    let mut no_inputs = d.clone();
    no_inputs.as_object_mut().unwrap().remove("__inputs");
    assert!(check_import(&no_inputs).iter().any(|(r, _)| *r == "import-inputs"));
    let mut panel_names_input = d.clone();
    panel_names_input["panels"][0]["datasource"] = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    assert!(check_import(&panel_names_input).iter().any(|(_, m)| m.contains("outside the datasource variable")));
    let mut no_requires = d;
    no_requires.as_object_mut().unwrap().remove("__requires");
    assert!(check_import(&no_requires).iter().any(|(r, _)| *r == "import-requires"));
}

fn d_current(d: &Value) -> Value {
    variables(d).into_iter().find(|v| var_type(v) == "datasource").and_then(|v| v.get("current")).cloned().unwrap()
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

    // The link variable reads the platform's screen from the exporter's own series.
    let screen = variables(&d).into_iter().find(|v| var_name(v) == SCREEN_VARIABLE).unwrap();
    let (selector, label) = parse_label_values(&var_query(screen).unwrap_or_default()).expect("label_values(...)");
    assert_eq!(label, SCREEN_VARIABLE);
    assert!(selector.unwrap_or_default().starts_with("chat_exporter_build_info{"), "{screen}");

    // Both sets of agent status have a name and a colour, in the table and the stat.
    let panel = |title: &str| {
        all_panels(&d).into_iter().find(|p| panel_title(p) == title).unwrap_or_else(|| panic!("no panel {title}"))
    };
    let table = panel("Agents");
    let mappings: Vec<&Value> = table
        .pointer("/fieldConfig/overrides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|o| o.pointer("/matcher/options").and_then(Value::as_str) == Some("Status"))
        .flat_map(|o| o.get("properties").and_then(Value::as_array).into_iter().flatten())
        .filter(|p| p.get("id").and_then(Value::as_str) == Some("mappings"))
        .flat_map(|p| p.get("value").and_then(Value::as_array).into_iter().flatten())
        .collect();
    let stat = panel("Agents by status");
    let stat_colors: BTreeMap<&str, &str> = stat
        .pointer("/fieldConfig/overrides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let name = o.pointer("/matcher/options").and_then(Value::as_str)?;
            let color = o
                .get("properties")
                .and_then(Value::as_array)?
                .iter()
                .find(|p| p.get("id").and_then(Value::as_str) == Some("color"))?
                .pointer("/value/fixedColor")
                .and_then(Value::as_str)?;
            Some((name, color))
        })
        .collect();
    for set in [PRESENCE_STATUSES, MOVIDESK_STATUSES] {
        let mut colors = BTreeSet::new();
        for status in set {
            let m = mappings.iter().find_map(|m| m.pointer(&format!("/options/{status}")));
            let color = m.and_then(|m| m.get("color")).and_then(Value::as_str).unwrap_or("");
            let text = m.and_then(|m| m.get("text")).and_then(Value::as_str).unwrap_or("");
            assert!(!color.is_empty() && !text.is_empty(), "Agents table: status {status} needs a text and a colour");
            assert_eq!(stat_colors.get(status), Some(&color), "Agents by status: {status} coloured as in the table");
            colors.insert(color);
        }
        assert_eq!(colors.len(), set.len(), "each status of {set:?} has its own colour");
    }
    // Available (presence) and attending (Movidesk) are the agents who can take a chat,
    // as for ChatWaitingNoAgent: same colour, green.
    assert_eq!(stat_colors.get("available"), Some(&"green"));
    assert_eq!(stat_colors.get("attending"), Some(&"green"));
}

/// The panels that show what an alert watches link to its runbook section, and so
/// (rule `alert-threshold`) turn red exactly where it fires.
#[test]
fn panels_show_their_alerts() {
    let alerts = alert_thresholds();
    let mut missing = Vec::new();
    for (file, title, alert) in ALERT_PANELS {
        assert!(alerts.contains_key(*alert), "{alert} is not an alert of alerts/alerting_rules.yml");
        let d = load_json(&repo_root().join("grafana/dashboards").join(file)).unwrap();
        let p = all_panels(&d).into_iter().find(|p| panel_title(p) == *title);
        let linked =
            p.is_some_and(|p| panel_links(p).iter().any(|l| linked_alert(link_url(l), &alerts) == Some(alert)));
        if !linked {
            missing.push(format!("{file} panel {title:?} must link to the runbook of {alert}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn thresholds_agree_only_when_red_starts_at_the_alert() {
    let steps = |s: &[(f64, &str)]| -> Vec<(f64, String)> { s.iter().map(|(v, c)| (*v, c.to_string())).collect() };
    let above = Threshold { op: ">".into(), value: 600.0 };
    let below = Threshold { op: "<".into(), value: 0.7 };
    let down = Threshold { op: "==".into(), value: 0.0 };
    let inf = f64::NEG_INFINITY;
    assert!(agrees_with(&steps(&[(inf, "green"), (300.0, "orange"), (600.0, "red")]), &above).is_ok());
    assert!(agrees_with(&steps(&[(inf, "green"), (120.0, "orange"), (300.0, "red")]), &above).is_err());
    assert!(agrees_with(&steps(&[(inf, "green"), (900.0, "dark-red")]), &above).is_err());
    assert!(agrees_with(&steps(&[(inf, "red"), (0.7, "green")]), &below).is_ok());
    assert!(agrees_with(&steps(&[(inf, "red"), (0.6, "orange"), (0.8, "green")]), &below).is_err());
    assert!(agrees_with(&steps(&[(inf, "red"), (1.0, "green")]), &down).is_ok());
    assert!(agrees_with(&steps(&[(inf, "green"), (1.0, "red")]), &down).is_err());
    // The numbers come from the rule file.
    let alerts = alert_thresholds();
    assert_eq!(alerts["ChatFirstContactResolutionLow"].op, "<");
    assert_eq!(alerts["ChatExporterSourceDown"].op, "==");
}

// ------------------------------------------------------------ negative tests

/// A dashboard that breaks every rule once; the checker must report each.
#[test]
fn checker_reports_each_violation_of_a_broken_dashboard() {
    let good_ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let j = "job=~\"$job\", instance=~\"$instance\"";
    let runbook = |alert: &str| json!({"title": "Runbook", "url": format!("{RUNBOOK_URL}#{alert}")});
    let broken = json!({
        "uid": "Not A Stable ${uid}",
        "title": "",
        "links": [{"type": "link", "title": "screen", "url": "https://YOURACCOUNT.movidesk.com/Chat"}],
        "annotations": {"list": [{"builtIn": 1, "enable": true, "name": "Annotations & Alerts"}]},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            {"type": "datasource", "name": "datasource2", "query": "loki"},
            {"type": "query", "name": "app", "datasource": {"type": "prometheus", "uid": "abc123"},
             "query": "label_values(chat_agents, app)", "multi": false, "includeAll": true, "allValue": ""},
            {"type": "query", "name": "job", "datasource": good_ds, "query": "label_values(up, job)",
             "multi": true, "includeAll": true, "allValue": ".*"},
            {"type": "query", "name": "instance", "datasource": good_ds,
             "query": "label_values(chat_exporter_build_info, instance)", "multi": true, "includeAll": true}
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
             "datasource": good_ds, "fieldConfig": {"defaults": {"unit": "short"}}},
            // Grafana's default colours, an age that can go negative, a platform written
            // into the query, the queue without the platform's screen.
            {"type": "stat", "id": 4, "title": "Default colours", "description": "d", "datasource": good_ds,
             "fieldConfig": {"defaults": {"unit": "s"}},
             "targets": [{"refId": "A", "expr": format!("time() - max(chat_exporter_source_last_success_timestamp_seconds{{{j}, source=\"movidesk\"}})")},
                         {"refId": "B", "expr": format!("sum(chat_conversations_waiting{{{j}}})")}]},
            {"type": "stat", "id": 6, "title": "Fixed red", "description": "d", "datasource": good_ds,
             "fieldConfig": {"defaults": {"unit": "short", "color": {"mode": "fixed", "fixedColor": "red"},
                 "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": null}]}}},
             "targets": [{"refId": "A", "expr": format!("sum(chat_conversations_active{{{j}}})")}]},
            // Thresholds that disagree with the alert they link to (ChatWaitTooLong: > 600).
            {"type": "stat", "id": 5, "title": "Oldest wait", "description": "d", "datasource": good_ds,
             "fieldConfig": {"defaults": {"unit": "s", "color": {"mode": "thresholds"},
                 "thresholds": {"mode": "absolute", "steps": [
                     {"color": "green", "value": null}, {"color": "orange", "value": 120}, {"color": "red", "value": 300}]}}},
             "links": [runbook("chatwaittoolong"), runbook("nosuchsection"), {"title": "x", "url": "https://acme.example.net/x"}],
             "targets": [{"refId": "A", "expr": format!("max(chat_conversations_waiting{{{j}}})")}]}
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
        "job-scope",
        "panel-colors",
        "alert-threshold",
        "age-clamp",
        "alert-annotations",
        "link-url",
        "placeholder",
        "queue-link",
        "platform-name",
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
    assert!(has("job-variable", "label_values(chat_exporter_"), "{all:#?}");
    assert!(has("instance-variable", "{job=~"), "{all:#?}");
    assert!(has("variable-all", "never `.*`"), "{all:#?}");
    assert!(has("job-scope", "chat_conversations_answered_total{app="), "{all:#?}");
    assert!(has("job-scope", "variable app"), "{all:#?}");
    assert!(has("alert-threshold", "ChatWaitTooLong: red must start at 600"), "{all:#?}");
    assert!(has("link-url", "nosuchsection"), "{all:#?}");
    assert!(has("link-url", "acme.example.net"), "{all:#?}");
    assert!(has("link-url", "dashboard link"), "{all:#?}");
    assert!(has("queue-link", "Default colours"), "{all:#?}");
    assert!(has("platform-name", "movidesk"), "{all:#?}");
    assert!(has("panel-colors", "Default colours"), "{all:#?}");
    assert!(has("panel-colors", "red is kept"), "{all:#?}");
    // A row needs no datasource, unit or description.
    assert!(!violations.iter().any(|v| v.at.contains("panel \"row\"")), "rows are exempt: {all:#?}");
}

#[test]
fn checker_accepts_a_minimal_correct_dashboard() {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let var = |name: &str, q: &str| {
        let mut v = json!({"type": "query", "name": name, "datasource": ds, "query": q,
               "multi": true, "includeAll": true});
        if name != "job" && name != "instance" {
            v["allValue"] = json!(".*");
        }
        v
    };
    let j = "job=~\"$job\", instance=~\"$instance\"";
    let d = json!({
        "uid": "ok-dashboard", "title": "OK",
        "links": [{"type": "link", "title": "screen", "url": SCREEN_URL},
                  {"type": "link", "title": "runbook", "url": RUNBOOK_URL},
                  {"type": "dashboards", "title": "others", "tags": ["chat-exporter"]}],
        "annotations": {"list": [{"name": "Firing alerts", "datasource": ds, "enable": true,
                                  "expr": "ALERTS{alertstate=\"firing\", alertname=~\"Chat.+\"}"}]},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            var("job", "label_values(chat_exporter_build_info, job)"),
            var("instance", "label_values(chat_exporter_build_info{job=~\"$job\"}, instance)"),
            var("group", &format!("label_values({{__name__=~\"chat_agents|chat_agent_status\", {j}}}, group)")),
            {"type": "query", "name": "chat_screen_url", "datasource": ds, "multi": false, "includeAll": false,
             "query": format!("label_values(chat_exporter_build_info{{{j}}}, chat_screen_url)")}
        ]},
        "panels": [
            {"type": "row", "id": 1, "title": "r"},
            {"type": "timeseries", "id": 2, "title": "t", "description": "d", "datasource": ds,
             "fieldConfig": {"defaults": {"unit": "reqps"}},
             "targets": [{"refId": "A", "datasource": ds,
                          "expr": format!("sum by (code) (rate(chat_exporter_api_requests_total{{{j}}}[$__rate_interval]))")}]},
            {"type": "stat", "id": 3, "title": "s", "description": "d", "datasource": ds,
             "fieldConfig": {"defaults": {"unit": "s", "color": {"mode": "fixed", "fixedColor": "blue"},
                 "thresholds": {"mode": "absolute", "steps": [{"color": "blue", "value": null}]}}},
             "targets": [{"refId": "A",
                          "expr": format!("clamp_min(histogram_quantile(0.5, sum by (le) (increase(chat_conversation_wait_seconds_bucket{{{j}}}[$__range]))) + time() - max(process_start_time_seconds{{{j}}}), 0)")}]},
            {"type": "bargauge", "id": 4, "title": "Oldest wait", "description": "d", "datasource": ds,
             "fieldConfig": {"defaults": {"unit": "s", "color": {"mode": "thresholds"},
                 "thresholds": {"mode": "absolute", "steps": [
                     {"color": "green", "value": null}, {"color": "orange", "value": 300}, {"color": "red", "value": 600}]}}},
             "links": [{"title": "Runbook", "url": format!("{RUNBOOK_URL}#chatwaittoolong")},
                       {"title": "Redistribute", "url": SCREEN_URL}],
             "targets": [{"refId": "A", "expr": format!("clamp_min(time() - min by (group) (chat_conversations_waiting_oldest_timestamp_seconds{{{j}}}), 0)")}]}
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

fn yaml_files(relative: &str) -> Vec<std::path::PathBuf> {
    let dir = repo_root().join(relative);
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
    // Provisioning grafana/provisioning into an existing Grafana adds no data source to it.
    let shipped: Vec<String> = std::fs::read_dir(repo_root().join("grafana/provisioning"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(shipped, ["dashboards"], "grafana/provisioning holds the dashboards' provider only");
    for (dir, check) in [
        (DEMO_DATASOURCES_DIR, check_datasources_yaml as fn(&str, &Value) -> Vec<Violation>),
        ("grafana/provisioning/dashboards", check_dashboards_yaml),
    ] {
        for path in yaml_files(dir) {
            let file = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
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
        DEMO_DATASOURCES_DIR,
        DATASOURCE_INPUT,
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

/// A panel built on a histogram says, in its description ("Empty for ..., which ..."),
/// every platform it is empty for: those whose contract leaves the histogram out (the
/// simulator's, `Facade::histograms`), and only those.
#[test]
fn histogram_panels_name_the_platforms_they_are_empty_for() {
    const HISTOGRAMS: [&str; 2] = ["chat_conversation_wait_seconds", "chat_conversation_duration_seconds"];
    let mut wrong = Vec::new();
    let mut panels = 0;
    for file in dashboard_files() {
        let d = load_json(&file).unwrap();
        for p in all_panels(&d) {
            let exprs = panel_exprs(p);
            let read: Vec<&str> = HISTOGRAMS.into_iter().filter(|h| exprs.iter().any(|(_, e)| e.contains(h))).collect();
            if read.is_empty() {
                continue;
            }
            panels += 1;
            let description = p.get("description").and_then(Value::as_str).unwrap_or("");
            let empty_for =
                description.split_once("Empty for ").map_or("", |(_, rest)| rest.split(',').next().unwrap());
            for platform in chat_exporter::platforms::ALL {
                let given = platform.facade().histograms();
                let empty = read.iter().any(|h| !given.iter().any(|(family, _)| family == h));
                if empty != empty_for.contains(platform.title()) {
                    let should = if empty { "must" } else { "must not" };
                    wrong.push(format!(
                        "{} panel {:?}: \"Empty for {empty_for}\" {should} name {}",
                        file.file_name().unwrap().to_string_lossy(),
                        panel_title(p),
                        platform.title()
                    ));
                }
            }
        }
    }
    assert!(panels >= 4, "the wait and talk time panels read the histograms: {panels} found");
    assert!(wrong.is_empty(), "{wrong:#?}");
}
