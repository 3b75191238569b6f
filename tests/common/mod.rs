//! Shared test support: a simulator and an exporter wired over real HTTP on loopback,
//! an exposition parser, and the ground truth in the same shape.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub mod process;
pub mod tools;

use chat_exporter::config::{MovideskConfig, Secret};
use chat_exporter::exporter::Exporter;
use chat_exporter::http::{router, AppState};
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::simulator::{self, RunningSimulator, SimOptions, Truth};
use chat_exporter::sources::movidesk::MovideskSource;

pub const TOKEN: &str = "test-token-3f9a1c2e";

/// A sample's identity: metric name and labels (empty values dropped, as Prometheus does).
pub type SeriesKey = (String, BTreeMap<String, String>);
pub type Samples = BTreeMap<SeriesKey, f64>;

pub async fn start_simulator(options: SimOptions) -> RunningSimulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
    simulator::serve(listener, options).await.expect("simulator serves")
}

/// Simulator options for tests: manual clock, no rate limit, the test token.
pub fn manual_sim(seed: u64) -> SimOptions {
    SimOptions { seed, token: TOKEN.to_string(), rate_limit: None, speed: None, ..SimOptions::default() }
}

/// Exporter settings for lockstep tests: no budget waits, roster on every poll.
pub fn fast_config(sim: &RunningSimulator) -> MovideskConfig {
    let mut cfg = MovideskConfig::new(sim.movidesk_url(), Secret::new(TOKEN));
    cfg.requests_per_minute = 1_000_000;
    cfg.roster_interval = Duration::ZERO;
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

pub struct TestExporter {
    pub exporter: Exporter<MovideskSource>,
    pub addr: SocketAddr,
    pub metrics: SelfMetrics,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestExporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestExporter {
    pub async fn start(cfg: MovideskConfig) -> Self {
        Self::start_with_state(cfg, None).await
    }

    pub async fn start_with_state(cfg: MovideskConfig, store: Option<chat_exporter::state::StateStore>) -> Self {
        let metrics = SelfMetrics::new();
        let poll_interval = cfg.poll_interval;
        let source = MovideskSource::new(cfg, metrics.clone());
        let mut exporter = Exporter::new(source, metrics.clone(), poll_interval);
        if let Some(store) = store {
            let (resumed, warning) = exporter.with_state(store).expect("state file usable");
            assert!(warning.is_none(), "{warning:?}");
            exporter = resumed;
        }
        let state = AppState {
            exposition: exporter.exposition(),
            health: exporter.health(),
            telemetry_path: "/metrics".to_string(),
            source_description: "test".to_string(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind exporter");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router(state)).await.unwrap();
        });
        TestExporter { exporter, addr, metrics, server }
    }

    /// Lockstep: `polls` times, move simulated time `step_seconds` on, then poll; every
    /// poll must succeed.
    pub async fn follow(&mut self, sim: &chat_exporter::simulator::SimState, polls: usize, step_seconds: i64) {
        for i in 0..polls {
            sim.advance(step_seconds);
            self.exporter.poll_once().await.unwrap_or_else(|e| panic!("poll {i} of {polls}: {e}"));
        }
    }

    pub async fn scrape_text(&self) -> String {
        let r = reqwest::get(format!("http://{}/metrics", self.addr)).await.expect("scrape");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn scrape(&self) -> Samples {
        parse_exposition(&self.scrape_text().await)
    }
}

/// Parses the text exposition format (the subset encoders write: no timestamps).
pub fn parse_exposition(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.find('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some(i) => (series[..i].to_string(), parse_labels(&series[i + 1..series.len() - 1])),
        };
        let previous = out.insert((name, labels), value);
        assert!(previous.is_none(), "duplicate series: {line}");
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while chars[i] != '=' {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        i += 2; // ="
        let mut value = String::new();
        while chars[i] != '"' {
            if chars[i] == '\\' {
                i += 1;
                value.push(match chars[i] {
                    'n' => '\n',
                    c => c,
                });
            } else {
                value.push(chars[i]);
            }
            i += 1;
        }
        i += 1;
        if i < chars.len() && chars[i] == ',' {
            i += 1;
        }
        if !value.is_empty() {
            labels.insert(name.trim().to_string(), value);
        }
    }
    labels
}

/// The chat metrics only (not the exporter's own nor the process metrics).
pub fn chat_samples(samples: &Samples) -> Samples {
    samples
        .iter()
        .filter(|((name, _), _)| name.starts_with("chat_") && !name.starts_with("chat_exporter_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

pub fn truth_samples(truth: &Truth) -> Samples {
    truth
        .samples
        .iter()
        .map(|s| {
            let labels = s.labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
            ((s.name.clone(), labels), s.value)
        })
        .collect()
}

/// Asserts exact equality, listing every difference.
pub fn assert_samples_eq(actual: &Samples, expected: &Samples, context: &str) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            Some(a) if a == v => {}
            Some(a) => diffs.push(format!("  {k:?}: exporter {a}, truth {v}")),
            None => diffs.push(format!("  {k:?}: missing from exporter, truth {v}")),
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            diffs.push(format!("  {k:?}: exporter {v}, absent from truth"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{context}: {} differences:\n{}",
        diffs.len(),
        diffs.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_string(), key)).copied()
}
