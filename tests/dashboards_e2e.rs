//! End-to-end check of the Grafana dashboards without Grafana: for each platform kind
//! (Movidesk, without presence and with histograms; Chatwoot, with presence and without
//! histograms), starts the exporter in demo mode and a real Prometheus (Debian package)
//! scraping it, both platforms at the same time, then runs every panel query of every
//! dashboard through Prometheus' HTTP API with the Grafana variables substituted as
//! Grafana would: first with every template variable at All, then with each variable in
//! turn set to one concrete value taken from the values its own variable query returns.
//! Each query must parse and return data, except where the contract says a panel is
//! empty by design for that platform; those cases are asserted explicitly (see
//! `empty_by_design`).
//!
//! Prometheus also scrapes itself under another job, as the project's own
//! prometheus.yml does: the `job` variable must offer the exporter's job only, and no
//! panel may show a series of the other job (issue 10: "All pulls in every other job").
//! The scrape target carries the platform's chat screen the way
//! deploy/prometheus/prometheus.yml provisions it (its metric_relabel_configs, used as
//! shipped): the `chat_screen_url` variable must read it, and no chat metric carry it.
//!
//! Needs `prometheus` on PATH (`apt-get install prometheus`); it fails, never
//! skips, without it.

mod support;

mod dashboard_support;

use dashboard_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::free_port;
use support::process::{ExporterProcess, ToolProcess};

/// Simulated time runs this many times faster than real time, so that in a
/// couple of minutes chats have waited, been answered, finished (resolved and
/// not) and abandoned.
const DEMO_SPEED: u32 = 60;
/// Requests per simulated minute for the simulator and the exporter (600 a real minute at
/// speed 60): about one poll a second.
const DEMO_RATE_LIMIT: u32 = 10;
const DEMO_SCENARIO: &str = "peak";
/// How long to wait, at most, for every panel to have data.
const DATA_DEADLINE: Duration = Duration::from_secs(240);
const RECHECK_EVERY: Duration = Duration::from_secs(3);
const JOB: &str = "chat_exporter";
/// Another job in the same Prometheus (Prometheus scraping itself).
const OTHER_JOB: &str = "prometheus";

/// One platform kind the dashboards must serve.
struct Case {
    platform: &'static str,
    /// Demo seed: one whose peak brings every kind of chat (abandoned, unresolved...) early.
    seed: u64,
    /// The platform's chat screen, given to Prometheus as the target's label.
    screen_url: &'static str,
    /// The values of `status` the platform exports (docs/metrics.md).
    statuses: &'static [&'static str],
    /// Whether the platform exports the wait and duration histograms.
    histograms: bool,
}

const CASES: &[Case] = &[
    Case {
        platform: "movidesk",
        seed: 42,
        screen_url: "https://acme.movidesk.com/Chat",
        statuses: &["attending", "not_attending"],
        histograms: true,
    },
    Case {
        platform: "chatwoot",
        seed: 1,
        screen_url: "https://chat.acme.test/app/accounts/1/conversations",
        statuses: &["available", "busy", "away", "offline"],
        histograms: false,
    },
    Case {
        platform: "rocketchat",
        seed: 3,
        screen_url: "https://chat.acme.test/omnichannel/current",
        statuses: &["available", "busy", "away", "offline"],
        histograms: false,
    },
];

// ------------------------------------------------------------------ processes

/// Starts `chat_exporter --demo` for the case's platform on a port of its choosing.
fn start_exporter(case: &Case) -> ExporterProcess {
    ExporterProcess::start(
        &[
            "--demo",
            "--demo.platform",
            case.platform,
            "--web.listen-address",
            "127.0.0.1:0",
            "--demo.speed",
            &DEMO_SPEED.to_string(),
            "--demo.seed",
            &case.seed.to_string(),
            "--demo.rate-limit",
            &DEMO_RATE_LIMIT.to_string(),
            "--demo.scenario",
            DEMO_SCENARIO,
        ],
        &[],
    )
}

/// The metric_relabel_configs of job chat_exporter in the shipped
/// deploy/prometheus/prometheus.yml, as JSON (valid YAML in flow style).
fn shipped_metric_relabel_configs() -> String {
    let path = repo_root().join("deploy/prometheus/prometheus.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let job = doc["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some(JOB))
        .expect("job chat_exporter in deploy/prometheus/prometheus.yml");
    let relabel = job.get("metric_relabel_configs").expect("metric_relabel_configs of job chat_exporter");
    serde_json::to_string(&serde_json::to_value(relabel).unwrap()).unwrap()
}

fn start_prometheus(dir: &Path, exporter_address: &str, screen_url: &str) -> (ToolProcess, u16) {
    let prometheus = support::tools::require_tool(&["prometheus"], "prometheus");
    let config = dir.join("prometheus.yml");
    // The port is picked by binding :0 and releasing it; another process can
    // take it in between, so try a few times.
    let mut last_err = String::new();
    for attempt in 0..3 {
        let port = free_port();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{exporter_address}']\n\
                 \x20       labels: {{chat_screen_url: '{screen_url}'}}\n    metric_relabel_configs: {}\n\
                 \x20 - job_name: {OTHER_JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
                shipped_metric_relabel_configs()
            ),
        )
        .unwrap();
        let data = dir.join(format!("tsdb-{attempt}"));
        let mut command = Command::new(&prometheus);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let mut proc = ToolProcess::spawn(&format!("prometheus-{attempt}"), command, dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = proc.exited() {
                last_err = format!("prometheus exited with {status}\n{}", proc.log_tail());
                break;
            }
            if let Ok((200, _)) = http_get(port, "/-/ready") {
                return (proc, port);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if last_err.is_empty() {
            last_err = format!("prometheus not ready within 30 s\n{}", proc.log_tail());
        }
    }
    panic!("could not start prometheus: {last_err}");
}

// ------------------------------------------------------------------ HTTP

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A plain HTTP/1.0 GET (no chunked encoding, the server closes the
/// connection): (status, body).
fn http_get(port: u16, path_and_query: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((status, body.to_string()))
}

struct Prom {
    port: u16,
}

impl Prom {
    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.port, path_and_query)?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v.get("status").and_then(Value::as_str) != Some("success") {
            return Err(format!(
                "HTTP {status}: {} {}",
                v.get("errorType").and_then(Value::as_str).unwrap_or(""),
                v.get("error").and_then(Value::as_str).unwrap_or(&body)
            ));
        }
        Ok(v)
    }

    /// Instant query; Ok(number of series or samples in the result).
    fn query(&self, expr: &str) -> Result<usize, String> {
        self.series(expr).map(|s| s.len())
    }

    /// Instant query; Ok(the labels of each series of the result; one empty set for
    /// a scalar or string result).
    fn series(&self, expr: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let data = v.get("data").ok_or("no data")?;
        Ok(match data.get("resultType").and_then(Value::as_str) {
            Some("vector") | Some("matrix") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    r["metric"]
                        .as_object()
                        .map(|o| {
                            o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                        })
                        .unwrap_or_default()
                })
                .collect(),
            // scalar and string results always hold one value
            _ => vec![BTreeMap::new()],
        })
    }

    /// What Grafana asks for `label_values(selector, label)`.
    fn label_values(&self, selector: Option<&str>, label: &str) -> Result<Vec<String>, String> {
        let mut q = format!("/api/v1/label/{}/values", url_encode(label));
        if let Some(sel) = selector {
            q.push_str(&format!("?match[]={}", url_encode(sel)));
        }
        let v = self.api(&q)?;
        Ok(v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default())
    }
}

// ------------------------------------------------------------------ checks

struct Dash {
    file: String,
    json: Value,
    /// Query variables, in dashboard order.
    vars: Vec<Var>,
    /// (panel title, refId, expr) for every target.
    targets: Vec<(String, String, String)>,
    /// Queries of the Prometheus annotations (the firing alerts).
    annotations: Vec<String>,
}

struct Var {
    name: String,
    query: String,
    /// Grafana's custom All value; None: All is every value the query returns.
    all_value: Option<String>,
    /// A variable used by links only (one value, no All): not a filter of the panels.
    link: bool,
}

fn load_dashboards() -> Vec<Dash> {
    dashboard_files()
        .iter()
        .map(|path| {
            let json = load_json(path).unwrap();
            let vars = variables(&json)
                .into_iter()
                .filter(|v| var_type(v) == "query")
                .map(|v| Var {
                    name: var_name(v).to_string(),
                    query: var_query(v).unwrap_or_default(),
                    all_value: v.get("allValue").and_then(Value::as_str).filter(|a| !a.is_empty()).map(str::to_string),
                    link: v.get("includeAll").and_then(Value::as_bool) != Some(true),
                })
                .collect();
            let mut targets = Vec::new();
            for p in all_panels(&json) {
                if is_row(p) {
                    continue;
                }
                for (ref_id, expr) in panel_exprs(p) {
                    targets.push((panel_title(p), ref_id, expr));
                }
            }
            let annotations = json
                .pointer("/annotations/list")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("expr").or_else(|| a.pointer("/target/expr")).and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            Dash { file: path.file_name().unwrap().to_string_lossy().to_string(), json, vars, targets, annotations }
        })
        .collect()
}

/// A multi-value selection as Grafana writes it into a `=~` matcher: one value
/// regex-escaped, several as `(a|b)`.
fn grafana_regex(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| regex_escape_for_promql(v)).collect();
    match escaped.len() {
        1 => escaped[0].clone(),
        _ => format!("({})", escaped.join("|")),
    }
}

/// Every variable at All, as Grafana sends it: the custom all value, or the values
/// the variable's query returns (evaluated in dashboard order, so `instance` sees
/// `job`); link variables take their first value; other variables their default.
fn all_values(prom: &Prom, d: &Dash) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for v in variables(&d.json) {
        if var_type(v) != "query" {
            let cur = v.pointer("/current/value").and_then(Value::as_str).unwrap_or("");
            m.insert(var_name(v).to_string(), cur.to_string());
        }
    }
    for v in &d.vars {
        let value = match (&v.all_value, v.link) {
            (Some(all), false) => all.clone(),
            _ => {
                let values = eval_variable(prom, &v.query, &m)?;
                if values.is_empty() {
                    return Err(format!("{}: variable {} has no values: {}", d.file, v.name, v.query));
                }
                if v.link {
                    values[0].clone()
                } else {
                    grafana_regex(&values)
                }
            }
        };
        m.insert(v.name.clone(), value);
    }
    Ok(m)
}

/// When a query may legitimately return nothing, the reason, and a query that
/// must itself return nothing for the reason to hold. The test asserts that
/// check instead of skipping the panel.
fn empty_by_design(case: &Case, expr: &str, vars: &BTreeMap<String, String>) -> Option<(String, String)> {
    let scanned = scan_promql(expr);
    let uses = |name: &str| scanned.metrics.iter().find(|m| m.name == name);
    let scope = format!("job=~\"{}\", instance=~\"{}\"", vars["job"], vars["instance"]);
    // The contract leaves the wait and duration histograms out for some platforms.
    if !case.histograms
        && scanned.metrics.iter().any(|m| {
            m.name.starts_with("chat_conversation_wait_seconds")
                || m.name.starts_with("chat_conversation_duration_seconds")
        })
    {
        return Some((
            format!("{} exports no wait or duration histograms (docs/metrics.md)", case.platform),
            format!(
                "count({{__name__=~\"chat_conversation_(wait|duration)_seconds_.+\", {scope}}}) or absent(chat_exporter_source_up{{source=\"{}\", {scope}}})",
                case.platform
            ),
        ));
    }
    // A status of the other kind (presence on Movidesk, attending on Chatwoot...).
    let status_re = regex::Regex::new(r#"status=~?"([^"]*)""#).unwrap();
    let agent_selectors: Vec<&MetricUse> =
        scanned.metrics.iter().filter(|m| m.name == "chat_agent_status" || m.name == "chat_agents").collect();
    let other_kind = !agent_selectors.is_empty()
        && agent_selectors.iter().all(|m| {
            status_re.captures(&m.matchers).is_some_and(|c| {
                let re = regex::Regex::new(&format!("^(?:{})$", &c[1])).unwrap();
                !case.statuses.iter().any(|s| re.is_match(s))
            })
        });
    if other_kind {
        return Some((
            format!("{} exports only the statuses {:?} (docs/metrics.md)", case.platform, case.statuses),
            format!("chat_agent_status{{{scope}, status!~\"{}\"}}", case.statuses.join("|")),
        ));
    }
    // Oldest wait: no chat waiting means no oldest timestamp (> 0).
    if let Some(m) = uses("chat_conversations_waiting_oldest_timestamp_seconds") {
        return Some((
            "no chat is waiting for these filters, so there is no oldest wait".into(),
            format!("chat_conversations_waiting{} > 0", m.matchers),
        ));
    }
    // Agent metrics carry app="" (an agent is not tied to an application): with one
    // application picked, area 02 shows no agent.
    let agent_only = !scanned.metrics.is_empty()
        && scanned.metrics.iter().all(|m| m.name == "chat_agent_status" || m.name == "chat_agents");
    if agent_only && vars.get("app").is_some_and(|v| v != ".*") {
        return Some((
            "agent metrics have an empty app label (docs/metrics.md), so one application hides them".into(),
            format!("{{__name__=~\"chat_agent_status|chat_agents\", {scope}, app!=\"\"}}"),
        ));
    }
    None
}

/// Runs every target of `d` with `vars`; returns the problems found.
fn run_targets(
    case: &Case,
    prom: &Prom,
    d: &Dash,
    vars: &BTreeMap<String, String>,
    label: &str,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let at = |title: &str, ref_id: &str| format!("{} {}: {title:?}/{ref_id} [{label}]", case.platform, d.file);
    for (title, ref_id, expr) in &d.targets {
        let q = substitute(expr, vars);
        let leftover = referenced_variables(&q);
        if !leftover.is_empty() {
            problems.push(format!("{}: unsubstituted ${leftover:?} in {q}", at(title, ref_id)));
            continue;
        }
        match prom.series(&q) {
            Err(e) => problems.push(format!("{}: query failed: {e}\n    {q}", at(title, ref_id))),
            Ok(series) if !series.is_empty() => {
                // Scoped to the exporter's job: no series of another job.
                if let Some(other) = series.iter().find_map(|s| s.get("job").filter(|j| *j != JOB)) {
                    problems.push(format!("{}: a series of job {other:?}, not {JOB}\n    {q}", at(title, ref_id)));
                }
            }
            Ok(_) => match empty_by_design(case, &q, vars) {
                Some((reason, check)) => match prom.query(&check) {
                    // Empty, and the reason holds.
                    Ok(0) => notes.push(format!(
                        "{} {}: {title:?}/{ref_id}: empty by design: {reason}",
                        case.platform, d.file
                    )),
                    Ok(k) => problems.push(format!(
                        "{}: empty, but the design reason ({reason}) does not hold: `{check}` returned {k} series\n    {q}",
                        at(title, ref_id)
                    )),
                    Err(e) => problems.push(format!("{}: check `{check}` failed: {e}", at(title, ref_id))),
                },
                None => problems.push(format!("{}: no data\n    {q}", at(title, ref_id))),
            },
        }
    }
    problems
}

fn eval_variable(prom: &Prom, query: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let (selector, label) =
        parse_label_values(query).ok_or_else(|| format!("variable query is not label_values(...): {query}"))?;
    let selector = selector.map(|s| substitute(&s, vars));
    prom.label_values(selector.as_deref(), &label)
}

/// One full round: All, then each filter variable with one concrete value.
fn check_round(case: &Case, prom: &Prom, dashboards: &[Dash]) -> (Vec<String>, Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut executed = 0;
    for d in dashboards {
        let all = match all_values(prom, d) {
            Ok(all) => all,
            Err(e) => {
                problems.push(format!("{}: {e}", case.platform));
                continue;
            }
        };
        // The firing-alert annotations parse (no rule runs here: they may be empty).
        for a in &d.annotations {
            if let Err(e) = prom.query(&substitute(a, &all)) {
                problems.push(format!("{} {}: annotation query failed: {e}\n    {a}", case.platform, d.file));
            }
        }
        let p = run_targets(case, prom, d, &all, "all variables = All", &mut notes);
        executed += d.targets.len();
        problems.extend(p);
        for var in d.vars.iter().filter(|v| !v.link) {
            let values = match eval_variable(prom, &var.query, &all) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{} {}: variable {}: {e}", case.platform, d.file, var.name));
                    continue;
                }
            };
            if values.is_empty() {
                problems
                    .push(format!("{} {}: variable {} has no values: {}", case.platform, d.file, var.name, var.query));
                continue;
            }
            // Try the values in the order Prometheus returns them; the first
            // one for which every panel has data (or is empty by design)
            // passes. A filter that never matches, e.g. a label a metric does
            // not have, fails with every value.
            let mut best: Option<(Vec<String>, Vec<String>)> = None;
            for value in &values {
                let mut vars = all.clone();
                vars.insert(var.name.clone(), regex_escape_for_promql(value));
                let mut n = Vec::new();
                let p = run_targets(case, prom, d, &vars, &format!("{} = {value:?}, others All", var.name), &mut n);
                executed += d.targets.len();
                let done = p.is_empty();
                if best.as_ref().is_none_or(|b| p.len() < b.0.len()) {
                    best = Some((p, n));
                }
                if done {
                    break;
                }
            }
            if let Some((p, n)) = best {
                problems.extend(p);
                notes.extend(n);
            }
        }
    }
    (problems, notes, executed)
}

/// Checks that hold from the first scrape on: the job variable offers the exporter's
/// job only, the platform's screen is provisioned on chat_exporter_build_info only.
fn check_scoping(case: &Case, prom: &Prom, dashboards: &[Dash]) -> Vec<String> {
    let mut problems = Vec::new();
    for d in dashboards {
        let all = match all_values(prom, d) {
            Ok(all) => all,
            Err(e) => return vec![format!("{}: {e}", case.platform)],
        };
        if all.get("job").map(String::as_str) != Some(JOB) {
            problems.push(format!(
                "{} {}: job at All is {:?}: it must be the exporter's job {JOB:?} only, never another job's",
                case.platform,
                d.file,
                all.get("job")
            ));
        }
        if d.vars.iter().any(|v| v.name == "chat_screen_url")
            && all.get("chat_screen_url").map(String::as_str) != Some(case.screen_url)
        {
            problems.push(format!(
                "{} {}: chat_screen_url is {:?}, not the target's {:?}",
                case.platform,
                d.file,
                all.get("chat_screen_url"),
                case.screen_url
            ));
        }
    }
    let leaked = format!(
        "count by (__name__) ({{chat_screen_url!=\"\", job=\"{JOB}\", __name__!~\"chat_exporter_build_info|up|scrape_.+\"}})"
    );
    match prom.series(&leaked) {
        Ok(s) if s.is_empty() => {}
        Ok(s) => problems.push(format!(
            "{}: the shipped metric_relabel_configs leave chat_screen_url on {:?}",
            case.platform,
            s.iter().filter_map(|l| l.get("__name__")).collect::<Vec<_>>()
        )),
        Err(e) => problems.push(format!("{}: {leaked}: {e}", case.platform)),
    }
    problems
}

/// The whole check for one platform: exporter, Prometheus, rounds until every panel
/// has data. Ok(summary) or Err(what failed).
fn check_platform(case: &'static Case, dashboards: &[Dash]) -> Result<String, String> {
    let total: usize = dashboards.iter().map(|d| d.targets.len()).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut exporter = start_exporter(case);
    let exporter_address = exporter.address();
    let (mut prometheus, prom_port) = start_prometheus(dir.path(), &exporter_address, case.screen_url);
    let prom = Prom { port: prom_port };
    let started = Instant::now();

    // Prometheus scrapes the exporter and itself.
    loop {
        let ours = prom.query(&format!("up{{job=\"{JOB}\"}} == 1")).unwrap_or(0);
        let other = prom.query(&format!("up{{job=\"{OTHER_JOB}\"}} == 1")).unwrap_or(0);
        if ours > 0 && other > 0 && prom.query("chat_exporter_build_info").unwrap_or(0) > 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "{}: prometheus never scraped the exporter at {exporter_address} and itself\n{}\n{}",
                case.platform,
                exporter.all_output(),
                prometheus.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let scoping = check_scoping(case, &prom, dashboards);
    if !scoping.is_empty() {
        return Err(join(&scoping.iter().collect::<Vec<_>>()));
    }

    // Panels fill as the simulated day goes on: re-check until all have data.
    let mut rounds = 0;
    loop {
        rounds += 1;
        if let Some(status) = exporter.exited() {
            return Err(format!(
                "{}: chat_exporter exited early with {status}\n{}",
                case.platform,
                exporter.all_output()
            ));
        }
        if let Some(status) = prometheus.exited() {
            return Err(format!("{}: prometheus exited early with {status}\n{}", case.platform, prometheus.log_tail()));
        }
        let (problems, notes, executed) = check_round(case, &prom, dashboards);
        // A query Prometheus rejects will not get better with time.
        let syntax: Vec<&String> = problems.iter().filter(|p| p.contains("query failed")).collect();
        if !syntax.is_empty() {
            return Err(format!("{} panel quer(ies) rejected by Prometheus:\n{}", syntax.len(), join(&syntax)));
        }
        // Nor does a series of another job.
        let foreign: Vec<&String> = problems.iter().filter(|p| p.contains("a series of job")).collect();
        if !foreign.is_empty() {
            return Err(format!("panels not scoped to the exporter's job:\n{}", join(&foreign)));
        }
        if problems.is_empty() {
            let mut summary = format!(
                "{}: all {total} panel queries of {} dashboard(s) answered: {executed} queries in round {rounds}, {:?} after the exporter started",
                case.platform,
                dashboards.len(),
                started.elapsed()
            );
            // Each reason once per panel, with how many variable settings met it.
            let mut counted: BTreeMap<String, usize> = BTreeMap::new();
            for n in notes {
                *counted.entry(n).or_default() += 1;
            }
            for (n, k) in &counted {
                summary.push_str(&format!("\n  {n} ({k} setting(s))"));
            }
            return Ok(summary);
        }
        if started.elapsed() > DATA_DEADLINE {
            return Err(format!(
                "{}: after {:?} ({rounds} rounds) {} problem(s) remain:\n{}\n{}",
                case.platform,
                started.elapsed(),
                problems.len(),
                join(&problems.iter().collect::<Vec<_>>()),
                exporter.all_output()
            ));
        }
        std::thread::sleep(RECHECK_EVERY);
    }
}

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    let dashboards = std::sync::Arc::new(load_dashboards());
    assert!(dashboards.iter().map(|d| d.targets.len()).sum::<usize>() > 0, "no panel query found");
    // Both platforms at once: the test's time is that of the slower one.
    let started = Instant::now();
    let handles: Vec<_> = CASES
        .iter()
        .map(|case| {
            let dashboards = dashboards.clone();
            std::thread::spawn(move || check_platform(case, &dashboards))
        })
        .collect();
    let mut failures = Vec::new();
    for (case, h) in CASES.iter().zip(handles) {
        match h.join() {
            Ok(Ok(summary)) => eprintln!("{summary}"),
            Ok(Err(e)) => failures.push(e),
            Err(panic) => failures.push(format!(
                "{}: {}",
                case.platform,
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    eprintln!("both platforms checked in {:?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| format!("  - {s}")).collect::<Vec<_>>().join("\n")
}

#[test]
fn grafana_variables_are_substituted() {
    let mut vars = BTreeMap::new();
    vars.insert("app".to_string(), ".*".to_string());
    vars.insert("agent".to_string(), regex_escape_for_promql("Ana (N1).x"));
    let q = substitute(
        "sum(increase(x{app=~\"$app\", agent=~\"${agent}\"}[$__range])) / rate(y[$__rate_interval]) + $__interval",
        &vars,
    );
    assert_eq!(q, "sum(increase(x{app=~\".*\", agent=~\"Ana \\\\(N1\\\\)\\\\.x\"}[5m])) / rate(y[1m]) + 15s");
    assert_eq!(
        parse_label_values("label_values({__name__=~\"a|b\", job=~\"$job\"}, agent)"),
        Some((Some("{__name__=~\"a|b\", job=~\"$job\"}".to_string()), "agent".to_string()))
    );
    assert_eq!(parse_label_values("label_values(job)"), Some((None, "job".to_string())));
    // All without a custom all value: the values found, as Grafana writes them.
    assert_eq!(grafana_regex(&["chat_exporter".to_string()]), "chat_exporter");
    assert_eq!(grafana_regex(&["a.b".to_string(), "c".to_string()]), "(a\\\\.b|c)");
}
