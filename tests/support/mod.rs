//! Shared test support: a simulator and an exporter wired over real HTTP on loopback,
//! the exposition parsed by a real parser (openmetrics-parser), and the ground truth in
//! the same shape.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub mod process;
pub mod spec;
pub mod tools;

use chat_exporter::config::Polling;
use chat_exporter::http::{router, AppState};
use chat_exporter::platforms::{self, Platform};
use chat_exporter::poller::Poller;
use chat_exporter::self_metrics::SelfMetrics;
pub use chat_exporter::simulator::{self, RunningSimulator, SimOptions, Truth};
use chat_exporter::state::StateStore;

pub const TOKEN: &str = "test-token-3f9a1c2e";

/// Every platform the exporter knows, for specifications every platform meets.
pub static PLATFORMS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| platforms::ALL.iter().map(|p| p.name()).collect());

/// A sample's identity: metric name and labels (empty values dropped, as Prometheus does).
pub type SeriesKey = (String, BTreeMap<String, String>);
pub type Samples = BTreeMap<SeriesKey, f64>;

/// A port free on loopback now (bound and released), for programs that take a port
/// rather than a listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub async fn start_simulator(options: SimOptions) -> RunningSimulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
    simulator::serve(listener, options).await.expect("simulator serves")
}

/// Simulator options for tests: manual clock, no rate limit, the test token, Movidesk.
pub fn manual_sim(seed: u64) -> SimOptions {
    manual_sim_of("movidesk", seed)
}

/// Simulator options for tests of `platform`.
pub fn manual_sim_of(platform: &str, seed: u64) -> SimOptions {
    SimOptions {
        seed,
        token: TOKEN.to_string(),
        rate_limit: None,
        speed: None,
        ..SimOptions::new(self::platform(platform).facade())
    }
}

/// The platform whose API a simulator serves.
pub fn platform_of(sim: &RunningSimulator) -> &'static dyn Platform {
    self::platform(sim.state.facade().name())
}

/// What an exporter is started with: a platform section (as a config file would give
/// it, through the platform's own loading) and the shared polling settings.
#[derive(Clone)]
pub struct Setup {
    pub platform: &'static dyn Platform,
    pub section: serde_json::Value,
    pub polling: Polling,
}

/// Settings for lockstep tests: no budget waits, roster on every poll.
pub fn fast_setup(sim: &RunningSimulator) -> Setup {
    let platform = platform_of(sim);
    let polling = Polling {
        requests_per_minute: 1_000_000,
        roster_interval: Duration::ZERO,
        request_timeout: Duration::from_secs(10),
        ..platform.polling_defaults()
    };
    Setup { platform, section: sim.section(), polling }
}

impl Setup {
    /// Sets a key of the platform section, as a config file would.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.section[key] = value.into();
        self
    }

    pub fn poller(&self, metrics: SelfMetrics) -> Poller {
        let source = self.platform.load(self.section.clone()).unwrap_or_else(|e| panic!("{e}"));
        Poller::new(source.build(&self.polling, metrics.clone()), metrics, self.polling.poll_interval)
            .with_series_retention(self.polling.series_retention)
    }
}

/// The platform's world without what an exporter can only see by watching it happen: a
/// reopening and its next end, or an answer and a transfer, inside one blind spell (an
/// outage, a restart) leave no trace in the conversation's fields. The README says so,
/// under what each platform's API cannot give.
pub fn without_blind_spots(platform: &str) -> chat_exporter::simulator::Features {
    chat_exporter::simulator::Features {
        reopen: false,
        transfer: false,
        ..self::platform(platform).facade().world_features()
    }
}

/// A configuration file for the simulator's platform: its section, then `extra` lines
/// (more keys of the section, then other sections).
pub fn config_file(sim: &RunningSimulator, extra: &str) -> String {
    let mut text = format!("[{}]\n", sim.state.facade().name());
    for (key, value) in sim.section().as_object().expect("a section is a table") {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push_str(extra);
    text
}

pub fn platform(name: &str) -> &'static dyn Platform {
    platforms::find(name).unwrap()
}

pub struct TestExporter {
    pub poller: Poller,
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
    pub async fn start(setup: Setup) -> Self {
        Self::start_with_state(setup, None).await
    }

    pub async fn start_with_state(setup: Setup, store: Option<StateStore>) -> Self {
        let metrics = SelfMetrics::new();
        let mut poller = setup.poller(metrics.clone());
        if let Some(store) = store {
            let (resumed, warning) = poller.with_state(store).expect("state file usable");
            assert!(warning.is_none(), "{warning:?}");
            poller = resumed;
        }
        let state = AppState {
            exposition: poller.exposition(),
            health: poller.health(),
            telemetry_path: "/metrics".to_string(),
            source_description: "test".to_string(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind exporter");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router(state)).await.unwrap();
        });
        TestExporter { poller, addr, metrics, server }
    }

    /// Lockstep: `polls` times, move simulated time `step_seconds` on, then poll; every
    /// poll must succeed.
    pub async fn follow(&mut self, sim: &chat_exporter::simulator::SimState, polls: usize, step_seconds: i64) {
        for i in 0..polls {
            sim.advance(step_seconds);
            self.poller.poll_once().await.unwrap_or_else(|e| panic!("poll {i} of {polls}: {e}"));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn scrape_text(&self) -> String {
        let r = reqwest::get(self.url("/metrics")).await.expect("scrape");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn scrape(&self) -> Samples {
        parse_exposition(&self.scrape_text().await)
    }
}

/// Parses the text exposition format with a real parser, which refuses what Prometheus
/// would refuse (bad escapes, duplicate series), into one value per series: histograms
/// as their `_bucket`, `_sum` and `_count` series.
pub fn parse_exposition(text: &str) -> Samples {
    use openmetrics_parser::{MetricNumber, PrometheusValue};
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e:?}\n{text}"));
    let mut out = Samples::new();
    let mut insert = |name: String, labels: BTreeMap<String, String>, value: f64| {
        let labels = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let previous = out.insert((name.clone(), labels), value);
        assert!(previous.is_none(), "duplicate series of {name}");
    };
    let number = |n: &MetricNumber| n.as_f64();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labels: BTreeMap<String, String> = sample
                .get_labelset()
                .expect("samples of a parsed family have label names")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match &sample.value {
                PrometheusValue::Unknown(n) | PrometheusValue::Gauge(n) => insert(name.clone(), labels, number(n)),
                PrometheusValue::Counter(c) => insert(name.clone(), labels, number(&c.value)),
                PrometheusValue::Histogram(h) => {
                    for bucket in &h.buckets {
                        let mut with_le = labels.clone();
                        let le = if bucket.upper_bound.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            bucket.upper_bound.to_string()
                        };
                        with_le.insert("le".to_string(), le);
                        insert(format!("{name}_bucket"), with_le, number(&bucket.count));
                    }
                    if let Some(sum) = &h.sum {
                        insert(format!("{name}_sum"), labels.clone(), number(sum));
                    }
                    if let Some(count) = h.count {
                        insert(format!("{name}_count"), labels, count as f64);
                    }
                }
                PrometheusValue::Summary(_) => panic!("{name}: the exporter writes no summaries"),
            }
        }
    }
    out
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
