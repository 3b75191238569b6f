//! End-to-end check of the Grafana dashboards without Grafana: starts the
//! exporter in demo mode and a real Prometheus (Debian package) scraping it,
//! then runs every panel query of every dashboard through Prometheus' HTTP API
//! with the Grafana variables substituted, first with every template variable
//! at All (`.*`), then with each variable in turn set to one concrete value
//! taken from the values its own variable query returns. Each query must parse
//! and return data, except where the contract says a panel is empty by design;
//! those cases are asserted explicitly (see `empty_by_design`).
//!
//! Needs `prometheus` on PATH (`apt-get install prometheus`); it fails, never
//! skips, without it.

mod support;

mod dashboard_support;

use dashboard_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::process::ExporterProcess;

/// Simulated time runs this many times faster than real time, so that in a
/// couple of minutes chats have waited, been answered, finished (resolved and
/// not) and abandoned.
const DEMO_SPEED: u32 = 60;
const DEMO_SEED: u64 = 42;
/// Requests per minute for the simulator and the exporter: about one poll a second.
const DEMO_RATE_LIMIT: u32 = 600;
const DEMO_SCENARIO: &str = "peak";
/// How long to wait, at most, for every panel to have data.
const DATA_DEADLINE: Duration = Duration::from_secs(240);
const RECHECK_EVERY: Duration = Duration::from_secs(5);
const JOB: &str = "chat_exporter";

// ------------------------------------------------------------------ processes

/// Kills the child when dropped, so a failing test leaves nothing running.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- last lines of {} log ({}):\n{}", self.name, self.log.display(), lines[start..].join("\n"))
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Starts `chat_exporter --demo` on a port of its choosing.
fn start_exporter() -> ExporterProcess {
    ExporterProcess::start(
        &[
            "--demo",
            "--web.listen-address",
            "127.0.0.1:0",
            "--demo.speed",
            &DEMO_SPEED.to_string(),
            "--demo.seed",
            &DEMO_SEED.to_string(),
            "--demo.rate-limit",
            &DEMO_RATE_LIMIT.to_string(),
            "--demo.scenario",
            DEMO_SCENARIO,
        ],
        &[],
    )
}

fn start_prometheus(dir: &Path, exporter_address: &str) -> (Proc, u16) {
    let prometheus = support::tools::require_tool(&["prometheus"], "prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{exporter_address}']\n"
        ),
    )
    .unwrap();
    // The port is picked by binding :0 and releasing it; another process can
    // take it in between, so try a few times.
    let mut last_err = String::new();
    for attempt in 0..3 {
        let port = free_port();
        let data = dir.join(format!("tsdb-{attempt}"));
        let log = dir.join(format!("prometheus-{attempt}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prometheus.display()));
        let mut proc = Proc { name: "prometheus", child, log };
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
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let data = v.get("data").ok_or("no data")?;
        Ok(match data.get("resultType").and_then(Value::as_str) {
            Some("vector") | Some("matrix") => data["result"].as_array().map_or(0, Vec::len),
            // scalar and string results always hold one value
            _ => 1,
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
    /// Query variables, in dashboard order: (name, query).
    vars: Vec<(String, String)>,
    /// (panel title, refId, expr) for every target.
    targets: Vec<(String, String, String)>,
}

fn load_dashboards() -> Vec<Dash> {
    dashboard_files()
        .iter()
        .map(|path| {
            let json = load_json(path).unwrap();
            let vars = variables(&json)
                .into_iter()
                .filter(|v| var_type(v) == "query")
                .map(|v| (var_name(v).to_string(), var_query(v).unwrap_or_default()))
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
            Dash { file: path.file_name().unwrap().to_string_lossy().to_string(), json, vars, targets }
        })
        .collect()
}

/// Template variables all at All (`.*`), as Grafana sends them with allValue.
fn all_values(d: &Dash) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (name, _) in &d.vars {
        m.insert(name.clone(), ".*".to_string());
    }
    // Non-query variables keep their default (datasource, link URL).
    for v in variables(&d.json) {
        if var_type(v) != "query" {
            let cur = v.pointer("/current/value").and_then(Value::as_str).unwrap_or("");
            m.insert(var_name(v).to_string(), cur.to_string());
        }
    }
    m
}

/// When a query may legitimately return nothing, the reason, and a query that
/// must itself return nothing for the reason to hold. The test asserts that
/// check instead of skipping the panel.
fn empty_by_design(expr: &str, vars: &BTreeMap<String, String>) -> Option<(String, String)> {
    let scanned = scan_promql(expr);
    let uses = |name: &str| scanned.metrics.iter().find(|m| m.name == name);
    // Oldest wait: no chat waiting means no oldest timestamp (> 0).
    if let Some(m) = uses("chat_conversations_waiting_oldest_timestamp_seconds") {
        return Some((
            "no chat is waiting for these filters, so there is no oldest wait".into(),
            format!("chat_conversations_waiting{} > 0", m.matchers),
        ));
    }
    // Failures by reason: the counter exists only once a failure happened.
    if let Some(m) = uses("chat_exporter_api_request_failures_total") {
        return Some((
            "no request to the platform has failed yet".into(),
            format!("chat_exporter_api_request_failures_total{}", m.matchers),
        ));
    }
    // Agent metrics of Movidesk carry app="" (an agent is not tied to an
    // application): with one application picked, area 02 shows no agent.
    let agent_only = !scanned.metrics.is_empty()
        && scanned.metrics.iter().all(|m| m.name == "chat_agent_status" || m.name == "chat_agents");
    if agent_only && vars.get("app").is_some_and(|v| v != ".*") {
        return Some((
            "agent metrics have an empty app label (docs/metrics.md), so one application hides them".into(),
            format!(
                "{{__name__=~\"chat_agent_status|chat_agents\", job=~\"{}\", instance=~\"{}\", app!=\"\"}}",
                vars["job"], vars["instance"]
            ),
        ));
    }
    None
}

/// Runs every target of `d` with `vars`; returns the problems found.
fn run_targets(
    prom: &Prom,
    d: &Dash,
    vars: &BTreeMap<String, String>,
    label: &str,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (title, ref_id, expr) in &d.targets {
        let q = substitute(expr, vars);
        let leftover = referenced_variables(&q);
        if !leftover.is_empty() {
            problems.push(format!("{}: {title:?}/{ref_id} [{label}]: unsubstituted ${leftover:?} in {q}", d.file));
            continue;
        }
        match prom.query(&q) {
            Err(e) => problems.push(format!("{}: {title:?}/{ref_id} [{label}]: query failed: {e}\n    {q}", d.file)),
            Ok(n) if n > 0 => {}
            Ok(_) => match empty_by_design(&q, vars) {
                Some((reason, check)) => match prom.query(&check) {
                    // Empty, and the reason holds.
                    Ok(0) => notes.push(format!("{}: {title:?}/{ref_id} [{label}]: empty by design: {reason}", d.file)),
                    Ok(k) => problems.push(format!(
                        "{}: {title:?}/{ref_id} [{label}]: empty, but the design reason ({reason}) does not hold: `{check}` returned {k} series\n    {q}",
                        d.file
                    )),
                    Err(e) => problems.push(format!("{}: check `{check}` failed: {e}", d.file)),
                },
                None => problems.push(format!("{}: {title:?}/{ref_id} [{label}]: no data\n    {q}", d.file)),
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

/// One full round: All, then each variable with one concrete value.
fn check_round(prom: &Prom, dashboards: &[Dash]) -> (Vec<String>, Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut executed = 0;
    for d in dashboards {
        let all = all_values(d);
        let p = run_targets(prom, d, &all, "all variables = All", &mut notes);
        executed += d.targets.len();
        problems.extend(p);
        for (name, query) in &d.vars {
            let values = match eval_variable(prom, query, &all) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{}: variable {name}: {e}", d.file));
                    continue;
                }
            };
            if values.is_empty() {
                problems.push(format!("{}: variable {name} has no values: {query}", d.file));
                continue;
            }
            // Try the values in the order Prometheus returns them; the first
            // one for which every panel has data (or is empty by design)
            // passes. A filter that never matches, e.g. a label a metric does
            // not have, fails with every value.
            let mut best: Option<(Vec<String>, Vec<String>)> = None;
            for value in &values {
                let mut vars = all.clone();
                vars.insert(name.clone(), regex_escape_for_promql(value));
                let mut n = Vec::new();
                let p = run_targets(prom, d, &vars, &format!("{name} = {value:?}, others All"), &mut n);
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

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    let dashboards = load_dashboards();
    let total: usize = dashboards.iter().map(|d| d.targets.len()).sum();
    assert!(total > 0, "no panel query found");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut exporter = start_exporter();
    let exporter_address = exporter.address();
    let (mut prometheus, prom_port) = start_prometheus(dir.path(), &exporter_address);
    let prom = Prom { port: prom_port };

    // Prometheus scrapes the exporter.
    let start = Instant::now();
    loop {
        if let Ok(n) = prom.query(&format!("up{{job=\"{JOB}\"}} == 1")) {
            if n > 0 {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "prometheus never scraped the exporter at {exporter_address}\n{}\n{}",
                exporter.all_output(),
                prometheus.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Panels fill as the simulated day goes on: re-check until all have data.
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        if let Some(status) = exporter.exited() {
            panic!("chat_exporter exited early with {status}\n{}", exporter.all_output());
        }
        if let Some(status) = prometheus.exited() {
            panic!("prometheus exited early with {status}\n{}", prometheus.log_tail());
        }
        let (problems, notes, executed) = check_round(&prom, &dashboards);
        // A query Prometheus rejects will not get better with time.
        let syntax: Vec<&String> = problems.iter().filter(|p| p.contains("query failed")).collect();
        if !syntax.is_empty() {
            panic!("{} panel quer(ies) rejected by Prometheus:\n{}", syntax.len(), join(&syntax));
        }
        if problems.is_empty() {
            eprintln!(
                "all {total} panel queries of {} dashboard(s) returned data: {executed} queries in round {rounds}, after {:?}",
                dashboards.len(),
                start.elapsed()
            );
            for n in &notes {
                eprintln!("  {n}");
            }
            break;
        }
        if start.elapsed() > DATA_DEADLINE {
            panic!(
                "after {:?} ({rounds} rounds) {} problem(s) remain:\n{}\n{}",
                start.elapsed(),
                problems.len(),
                join(&problems.iter().collect::<Vec<_>>()),
                exporter.all_output()
            );
        }
        std::thread::sleep(RECHECK_EVERY);
    }
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
}
