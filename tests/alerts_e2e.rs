//! End to end, the README's "See a page" recipe: Alertmanager with the shipped routing
//! and Prometheus with the shipped `deploy/prometheus/prometheus.yml` and rules start
//! first, then `chat_exporter --demo --demo.scenario spike`; a webhook receiver run by
//! this test stands for `scripts/webhook.py`. It asserts that the queue-spike page
//! reaches the pager receiver with the right labels within 15 (simulated) minutes of the
//! demo's start, as the README promises, and that it resolves after the spike.
//!
//! Time scaling (see docs/alerts.md): the demo runs simulated time `SPEED` times faster
//! than real time with `SPEED` times the README's request budget, and the test runs copies
//! of the shipped files in which every duration is divided by the same factor: in the
//! rules every `for:` and range window (`[1h]`), in prometheus.yml the scrape and
//! evaluation intervals, in the Alertmanager file its timers (`group_wait`,
//! `group_interval`, `repeat_interval`). Addresses are the test's own. Expressions,
//! thresholds, labels, annotations, relabelling, routes, grouping and inhibitions are
//! the shipped ones, unchanged.
//!
//! Needs `prometheus` and `alertmanager` (Debian: `prometheus-alertmanager`) on PATH;
//! fails, never skips, when they are missing.

mod support;

use support::process::ToolProcess;
use support::{free_port, tools};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Simulated seconds per real second, and the factor every shipped duration is divided
/// by: Prometheus' 15 s scrape and evaluation intervals become 1 s.
const SPEED: u64 = 15;
/// The demo's request budget per simulated minute (`--demo.rate-limit`, which scales with
/// the speed): Movidesk's real 10, the slowest the README's page must hold for.
const RATE_LIMIT: u64 = 10;
/// The spike scenario, in simulated minutes: a burst of arrivals at minute 7, then ten
/// times the arrivals and half of each group's agents offline until minute 47.
const PEAK_START_MIN: u64 = 7;
const PEAK_END_MIN: u64 = 47;
/// The README's promise: a page within 15 minutes of starting the demo.
const FIRING_DEADLINE: Duration = Duration::from_secs(15 * 60 / SPEED);
/// The queue drains within minutes of the spike's end; the page resolves when the
/// 5-minute average falls below 1.
const RESOLVED_DEADLINE: Duration = Duration::from_secs(80 * 60 / SPEED);

const RUNBOOK_URL: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbook.md#chatqueuespike");

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn sim_minutes(real: Duration) -> u64 {
    real.as_secs() * SPEED / 60
}

// ------------------------------------------------------------------------ tools & processes

/// Panics with its log when a tool the test needs has exited.
fn assert_running(tool: &mut ToolProcess) {
    if let Some(status) = tool.exited() {
        panic!("{} exited early ({status})\n{}", tool.name, tool.log_tail());
    }
}

/// The last 40 lines of the exporter's stderr.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The exporter in demo mode, its stdout read line by line on a thread.
struct Exporter {
    child: Child,
    metrics_url: String,
    simulator_url: String,
    /// When the simulator's clock started (as seen from here, within milliseconds).
    sim_start: Instant,
    log: PathBuf,
}

impl Exporter {
    /// The README's demo command, at `SPEED`, listening on `address`.
    fn spawn(dir: &Path, address: &str) -> Exporter {
        let log = dir.join("chat_exporter.stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat_exporter"))
            .args(["--demo", "--demo.scenario", "spike", "--web.listen-address", address])
            .args(["--demo.speed", &SPEED.to_string(), "--demo.rate-limit", &RATE_LIMIT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(&log).expect("log file")))
            .spawn()
            .expect("cannot start the chat_exporter binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<(String, Instant)>();
        std::thread::spawn(move || {
            // Keeps draining stdout for the life of the process.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((line, Instant::now()));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut metrics_url, mut simulator) = (None, None);
        while metrics_url.is_none() || simulator.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((line, at)) => {
                    if line.contains("simulator listening on http://") {
                        simulator = Some((url_after(&line, "simulator listening on "), at));
                    } else if line.contains("listening on http://") {
                        metrics_url = Some(url_after(&line, "listening on "));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "chat_exporter printed no `listening on http://...` and `simulator listening on http://...` \
                         lines within 30 s; stderr:\n{}",
                        tail(&log)
                    );
                }
            }
        }
        let (simulator_url, sim_start) = simulator.expect("simulator line");
        Exporter { child, metrics_url: metrics_url.expect("metrics line"), simulator_url, sim_start, log }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("chat_exporter exited early ({status}); stderr:\n{}", tail(&self.log));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL that follows `marker` on the line, up to the next space.
fn url_after(line: &str, marker: &str) -> String {
    let start = line.find(marker).expect("marker") + marker.len();
    line[start..].split_whitespace().next().expect("a URL after the marker").to_string()
}

// -------------------------------------------------------------------------- minimal HTTP

/// GET over HTTP/1.0 (no chunked answers, the server closes): (status, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// `http://host:port/path` -> (`host:port`, `/path`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

fn wait_ready(name: &str, addr: &str, path: &str, process: &mut ToolProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_running(process);
        if let Ok((200, _)) = http_get(addr, path) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready at http://{addr}{path} after 60 s\n{}",
            process.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One webhook call received from Alertmanager.
#[derive(Debug, Clone)]
struct Notification {
    path: String,
    at: Instant,
    body: serde_json::Value,
}

/// A tiny webhook receiver: accepts POSTs, answers 200, hands each body over.
fn start_webhook() -> (SocketAddr, mpsc::Receiver<Notification>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            match read_request(&mut stream) {
                Ok((path, body)) => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
                        serde_json::Value::String(format!("unparsable body ({e}): {}", String::from_utf8_lossy(&body)))
                    });
                    if tx.send(Notification { path, at: Instant::now(), body }).is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ =
                        stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    (addr, rx)
}

/// Reads one HTTP/1.1 request: (path, body). Handles Content-Length and chunked bodies.
fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((path, body))
}

// ------------------------------------------------------------------- scaled configuration

/// Milliseconds in a Prometheus duration such as `1h30m`, `5m`, `90s`, `500ms`.
fn parse_duration_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let (mut total, mut rest) = (0u64, text);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn scaled(duration: &str) -> String {
    let ms = parse_duration_ms(duration).unwrap_or_else(|| panic!("not a duration: {duration:?}"));
    format!("{}ms", (ms / SPEED).max(1))
}

/// Divides every `for:` and every range window (`[1h]`, `[5m:1m]`) by SPEED; nothing else
/// changes. Returns the new text and how many durations were rewritten.
fn scale_rule_durations(text: &str) -> (String, usize) {
    assert!(!text.contains(" offset "), "the rule scaler does not rewrite `offset`; extend it in tests/alerts_e2e.rs");
    let mut count = 0;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(value) = trimmed.strip_prefix("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}for: {}\n", scaled(value.trim())));
            count += 1;
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            let Some(close) = rest.find(']') else { break };
            let inside = &rest[..close];
            if !inside.is_empty() && inside.split(':').all(|part| parse_duration_ms(part).is_some()) {
                out.push_str(&inside.split(':').map(scaled).collect::<Vec<_>>().join(":"));
                rest = &rest[close..];
                count += 1;
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    (out, count)
}

/// A YAML file with the duration of each of `timers` divided by SPEED, every other line
/// passed through `other`; and how many timers were rewritten.
fn scale_timers(text: &str, timers: &[&str], mut other: impl FnMut(&str) -> String) -> (String, usize) {
    let mut count = 0;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let key = trimmed.split(':').next().unwrap_or("");
        if timers.contains(&key) {
            out.push_str(&format!("{indent}{key}: {}", scaled(trimmed[key.len() + 1..].trim())));
            count += 1;
        } else {
            out.push_str(&other(line));
        }
        out.push('\n');
    }
    (out, count)
}

/// The shipped prometheus.yml with its global intervals divided by SPEED and its own
/// self-scrape target at `prometheus` (file_sd and relabelling unchanged).
fn scale_prometheus_config(text: &str, prometheus: &str) -> String {
    let intervals = ["scrape_interval", "scrape_timeout", "evaluation_interval"];
    let (out, timers) = scale_timers(text, &intervals, |line| line.replace("localhost:9090", prometheus));
    assert_eq!(timers, 3, "expected {intervals:?} in prometheus.yml");
    out
}

/// The shipped Alertmanager file with its timers divided by SPEED and every webhook URL
/// sent to `webhook` (keeping its path, so the receiver can be told from the path).
fn scale_alertmanager_config(text: &str, webhook: SocketAddr) -> String {
    let mut urls = 0;
    let (out, timers) = scale_timers(text, &["group_wait", "group_interval", "repeat_interval"], |line| {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("- url:").or_else(|| trimmed.strip_prefix("url:")) else {
            return line.to_string();
        };
        let url = value.trim().trim_matches(|c| c == '\'' || c == '"');
        let (_, path) = split_url(url);
        let indent = &line[..line.len() - trimmed.len()];
        let prefix = &trimmed[..trimmed.find("url:").expect("url key")];
        urls += 1;
        format!("{indent}{prefix}url: 'http://{webhook}{path}'")
    });
    assert!(timers >= 3, "expected group_wait, group_interval and repeat_interval in alerts/alertmanager.yml");
    assert!(urls >= 2, "expected the pager and ticket webhook URLs in alerts/alertmanager.yml");
    out
}

// --------------------------------------------------------------------------------- the test

#[derive(Debug, Clone)]
struct SpikeEvent {
    status: String,
    path: String,
    receiver: String,
    group_labels: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// Real time since the simulator started.
    after: Duration,
}

fn string_map(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The ChatQueueSpike alerts inside one Alertmanager notification.
fn spike_events(n: &Notification, sim_start: Instant) -> Vec<SpikeEvent> {
    let body = &n.body;
    let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "ChatQueueSpike")
        .map(|a| SpikeEvent {
            status: a["status"].as_str().unwrap_or_default().to_string(),
            path: n.path.clone(),
            receiver: body["receiver"].as_str().unwrap_or_default().to_string(),
            group_labels: string_map(&body["groupLabels"]),
            labels: string_map(&a["labels"]),
            annotations: string_map(&a["annotations"]),
            after: n.at.saturating_duration_since(sim_start),
        })
        .collect()
}

/// What the diagnostics need to query.
struct Stack {
    prometheus: String,
}

fn diagnostics(stack: &Stack, events: &[SpikeEvent], exporter: &Exporter) -> String {
    let mut out = String::new();
    for query in [
        "ALERTS",
        "app_group:chat_conversations_waiting:avg5m",
        "app_group:chat_conversations_waiting:median1h",
        "chat_exporter_source_up",
    ] {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let answer = http_get(&stack.prometheus, &path).map(|(_, b)| b).unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("\n{query} = {answer}"));
    }
    out.push_str(&format!("\nqueue-spike notifications so far: {events:#?}"));
    out.push_str(&format!("\nchat_exporter stderr:\n{}", tail(&exporter.log)));
    out
}

#[test]
fn the_readme_spike_demo_pages_within_15_minutes_and_resolves_after_it() {
    let prometheus_bin = tools::require_tool(&["prometheus"], "prometheus");
    let alertmanager_bin = tools::require_tool(&["alertmanager", "prometheus-alertmanager"], "prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (webhook, notifications) = start_webhook();

    // Alertmanager with the shipped routing.
    let am_config = dir.path().join("alertmanager.yml");
    let shipped = std::fs::read_to_string(repo_path("alerts/alertmanager.yml")).expect("alerts/alertmanager.yml");
    std::fs::write(&am_config, scale_alertmanager_config(&shipped, webhook)).expect("write alertmanager.yml");
    let am_data = tempfile::tempdir().expect("Alertmanager's own temporary directory");
    let am_addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(&alertmanager_bin);
    command
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", am_data.path().display()))
        .arg(format!("--web.listen-address={am_addr}"))
        .arg("--cluster.listen-address=");
    let mut alertmanager = ToolProcess::spawn("alertmanager", command, dir.path());
    wait_ready("alertmanager", &am_addr, "/-/ready", &mut alertmanager);

    // Prometheus as the README runs it: the shipped prometheus.yml in a directory with
    // the rules under rules/ and the addresses under targets/, durations divided by SPEED.
    let exporter_addr = format!("127.0.0.1:{}", free_port());
    let prom_addr = format!("127.0.0.1:{}", free_port());
    for sub in ["rules", "targets"] {
        std::fs::create_dir(dir.path().join(sub)).expect("create a directory next to prometheus.yml");
    }
    for name in ["recording_rules.yml", "alerting_rules.yml"] {
        let text = std::fs::read_to_string(repo_path(&format!("alerts/{name}"))).expect("shipped rule file");
        let (fast, rewritten) = scale_rule_durations(&text);
        assert!(rewritten > 0, "no duration rewritten in alerts/{name}");
        std::fs::write(dir.path().join("rules").join(name), fast).expect("write scaled rules");
    }
    for (name, address) in [("chat_exporter.yml", &exporter_addr), ("alertmanager.yml", &am_addr)] {
        std::fs::write(dir.path().join("targets").join(name), format!("- targets: [\"{address}\"]\n"))
            .expect("write a targets file");
    }
    let prom_config = dir.path().join("prometheus.yml");
    let shipped = std::fs::read_to_string(repo_path("deploy/prometheus/prometheus.yml"))
        .expect("deploy/prometheus/prometheus.yml");
    std::fs::write(&prom_config, scale_prometheus_config(&shipped, &prom_addr)).expect("write prometheus.yml");
    let prom_data = tempfile::tempdir().expect("Prometheus' own temporary directory");
    let mut command = Command::new(&prometheus_bin);
    command
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", prom_data.path().display()))
        .arg(format!("--web.listen-address={prom_addr}"));
    let mut prometheus = ToolProcess::spawn("prometheus", command, dir.path());
    wait_ready("prometheus", &prom_addr, "/-/ready", &mut prometheus);

    // Then the demo: the simulated clock starts now, and Prometheus sees the quiet minutes
    // the rules compare the spike with.
    let mut exporter = Exporter::spawn(dir.path(), &exporter_addr);
    assert_eq!(
        exporter.metrics_url,
        format!("http://{exporter_addr}/metrics"),
        "the shipped prometheus.yml scrapes the default /metrics"
    );
    // The temporary directories stay in locals declared before the processes that use
    // them: locals drop in reverse order, so each process is killed before its directory
    // is removed.
    let stack = Stack { prometheus: prom_addr.clone() };

    // Collect queue-spike notifications until the first page, then until every paged
    // (app, group) is resolved.
    let sim_start = exporter.sim_start;
    let mut events: Vec<SpikeEvent> = Vec::new();
    let mut first_page: Option<SpikeEvent> = None;
    let mut state: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        let elapsed = sim_start.elapsed();
        let deadline = if first_page.is_none() { FIRING_DEADLINE } else { RESOLVED_DEADLINE };
        // Not before the peak is over: a spike must hold through it.
        let done =
            first_page.is_some() && sim_minutes(elapsed) >= PEAK_END_MIN && state.values().all(|s| s == "resolved");
        if done {
            break;
        }
        if elapsed > deadline {
            panic!(
                "{} {} s after the simulator started (simulated minute {}); peak is minutes {PEAK_START_MIN}-{PEAK_END_MIN}.{}",
                if first_page.is_none() { "no ChatQueueSpike page" } else { "ChatQueueSpike not resolved" },
                elapsed.as_secs(),
                sim_minutes(elapsed),
                diagnostics(&stack, &events, &exporter)
            );
        }
        exporter.assert_running();
        assert_running(&mut alertmanager);
        assert_running(&mut prometheus);
        let Ok(notification) = notifications.recv_timeout(Duration::from_secs(1)) else { continue };
        for event in spike_events(&notification, sim_start) {
            let key = (
                event.labels.get("app").cloned().unwrap_or_default(),
                event.labels.get("group").cloned().unwrap_or_default(),
            );
            state.insert(key, event.status.clone());
            if first_page.is_none() && event.status == "firing" {
                first_page = Some(event.clone());
            }
            events.push(event);
        }
    }

    // The page: critical, to the pager receiver, grouped by alertname, app and group, with
    // exactly the alert's labels and its annotations.
    let page = first_page.expect("a page");
    let context = diagnostics(&stack, &events, &exporter);
    let app = page.labels.get("app").cloned().unwrap_or_default();
    let group = page.labels.get("group").cloned().unwrap_or_default();
    assert!(!app.is_empty() && !group.is_empty(), "the page names no app or group: {page:#?}");
    let expected_labels: BTreeMap<String, String> =
        [("alertname", "ChatQueueSpike"), ("severity", "critical"), ("app", app.as_str()), ("group", group.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(page.labels, expected_labels, "labels of the page{context}");
    let expected_group_labels: BTreeMap<String, String> =
        expected_labels.iter().filter(|(k, _)| *k != "severity").map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(page.group_labels, expected_group_labels, "Alertmanager grouping (alertname, app, group){context}");
    assert_eq!(page.receiver, "pager", "critical alerts page{context}");
    assert_eq!(page.path, "/pager", "the pager receiver's webhook URL{context}");
    assert_eq!(
        page.annotations.get("summary").map(String::as_str),
        Some(format!("Chat queue spike in {app} / {group}").as_str())
    );
    assert_eq!(page.annotations.get("runbook_url").map(String::as_str), Some(RUNBOOK_URL));
    let description = page.annotations.get("description").cloned().unwrap_or_default();
    assert!(
        description.starts_with(&format!("The queue of group \"{group}\" of application \"{app}\" holds "))
            && description.contains("live chats (average over 5 minutes); its median over the last hour is "),
        "description of the page: {description:?}{context}"
    );
    let page_minute = sim_minutes(page.after);
    assert!(
        (PEAK_START_MIN..PEAK_END_MIN + 5).contains(&page_minute),
        "the page came at simulated minute {page_minute}, not during the peak{context}"
    );

    // The page names a real application and chat group of the simulator.
    let (sim_addr, _) = split_url(&exporter.simulator_url);
    let (status, truth) = http_get(&sim_addr, "/_sim/truth").expect("GET /_sim/truth");
    assert_eq!(status, 200, "GET /_sim/truth");
    let truth: serde_json::Value = serde_json::from_str(&truth).expect("truth is JSON");
    let pairs: BTreeSet<(String, String)> = truth["samples"]
        .as_array()
        .expect("truth samples")
        .iter()
        .map(|s| {
            (
                s["labels"]["app"].as_str().unwrap_or_default().to_string(),
                s["labels"]["group"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        pairs.contains(&(app.clone(), group.clone())),
        "({app}, {group}) is not in the simulator's ground truth: {pairs:?}"
    );

    // Every page resolved (the loop waited for it), and a spike lasted through the peak:
    // at least one resolution came after the peak ended.
    let last_resolution =
        events.iter().filter(|e| e.status == "resolved").map(|e| e.after).max().expect("a resolution");
    assert!(
        sim_minutes(last_resolution) >= PEAK_END_MIN,
        "every queue-spike page resolved before the peak ended (last at simulated minute {}){context}",
        sim_minutes(last_resolution)
    );
    for e in &events {
        eprintln!(
            "ChatQueueSpike {} {}/{} at simulated minute {} (to {})",
            e.status,
            e.labels.get("app").map(String::as_str).unwrap_or(""),
            e.labels.get("group").map(String::as_str).unwrap_or(""),
            sim_minutes(e.after),
            e.path
        );
    }
    // A resolved notification goes to the same receiver.
    assert!(
        events.iter().filter(|e| e.status == "resolved").all(|e| e.path == "/pager" && e.receiver == "pager"),
        "resolutions must reach the pager receiver{context}"
    );
}

#[test]
fn rule_scaler_rewrites_only_durations() {
    let input = "      - record: x:rate5m\n        expr: sum(rate(a_total[5m])) / quantile_over_time(0.5, b[1h:1m])\n      - alert: A\n        expr: c{l=\"[x]\"} > 3\n        for: 10m\n        annotations:\n          description: 'for 10 minutes'\n";
    let (out, count) = scale_rule_durations(input);
    assert_eq!(count, 3, "two windows and one `for`");
    let ms = |minutes: u64| format!("{}ms", minutes * 60_000 / SPEED);
    assert_eq!(
        out,
        format!(
            "      - record: x:rate5m\n        expr: sum(rate(a_total[{}])) / quantile_over_time(0.5, b[{}:{}])\n      - alert: A\n        expr: c{{l=\"[x]\"}} > 3\n        for: {}\n        annotations:\n          description: 'for 10 minutes'\n",
            ms(5),
            ms(60),
            ms(1),
            ms(10)
        )
    );
    assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration_ms("x"), None);
}

#[test]
fn prometheus_config_scaler_rewrites_only_intervals_and_the_self_scrape() {
    let input = "global:\n  scrape_interval: 15s\n  scrape_timeout: 10s\n  evaluation_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"localhost:9090\"]\n";
    assert_eq!(
        scale_prometheus_config(input, "127.0.0.1:1"),
        format!(
            "global:\n  scrape_interval: {}ms\n  scrape_timeout: {}ms\n  evaluation_interval: {}ms\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:1\"]\n",
            15_000 / SPEED,
            10_000 / SPEED,
            15_000 / SPEED
        )
    );
}
