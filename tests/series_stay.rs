//! Series for every label set seen stay exported, at 0 when empty (issue 10): an empty
//! queue reads 0, not "no data", and a first increment is seen by `increase()`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_exporter::simulator::{Scenario, SimOptions};
use support::*;

/// The waiting series' (app, group, origin) label sets in `samples`.
fn waiting_label_sets(samples: &Samples) -> BTreeMap<BTreeMap<String, String>, f64> {
    samples
        .iter()
        .filter(|((name, _), _)| name == "chat_conversations_waiting")
        .map(|((_, labels), v)| (labels.clone(), *v))
        .collect()
}

/// The (app, group, origin) of every chat the simulated contact centre counted or has
/// open: every chat series above 0.
fn counted_label_sets(truth: &Samples) -> BTreeSet<BTreeMap<String, String>> {
    truth
        .iter()
        .filter(|((_, labels), v)| labels.contains_key("origin") && **v > 0.0)
        .map(|((_, labels), _)| labels.iter().filter(|(k, _)| ["app", "group", "origin"].contains(&k.as_str())))
        .map(|labels| labels.map(|(k, v)| (k.clone(), v.clone())).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_queue_drains_every_label_set_seen_reads_zero_waiting() {
    for platform in PLATFORMS.iter() {
        let sim = start_simulator(SimOptions { scenario: Scenario::Peak, ..manual_sim_of(platform, 5) }).await;
        let mut exp = TestExporter::start(fast_setup(&sim)).await;
        exp.poller.poll_once().await.unwrap();
        // Through the peak (minutes 30 to 90), then until nobody waits anywhere.
        exp.follow(&sim.state, 100, 60).await;
        let mut drained_at = None;
        for minute in 100..=600 {
            exp.follow(&sim.state, 1, 60).await;
            let truth = truth_samples(&sim.state.truth());
            if waiting_label_sets(&truth).values().all(|v| *v == 0.0) {
                drained_at = Some(minute);
                break;
            }
        }
        let minute = drained_at.unwrap_or_else(|| panic!("{platform}: the queue never drained"));
        let truth = truth_samples(&sim.state.truth());
        let exported = chat_samples(&exp.scrape().await);
        assert_samples_eq(&exported, &truth, &format!("{platform}, drained at minute {minute}"));
        let waiting = waiting_label_sets(&exported);
        assert!(waiting.values().all(|v| *v == 0.0), "{platform}: {waiting:?}");
        let waiting: BTreeSet<_> = waiting.into_keys().collect();
        assert_eq!(
            waiting,
            counted_label_sets(&truth),
            "{platform}: a waiting series, at 0, for each app, group and origin seen"
        );
        assert!(waiting.len() > 1, "{platform}: the peak brings chats of several label sets");
        let text = exp.scrape_text().await;
        assert!(text.contains("# TYPE chat_conversations_waiting gauge"), "{platform}: HELP and TYPE stay");
    }
}

/// Where the platform gives the wait and the talk time (Movidesk), every label set known
/// has both histograms from the first poll on, empty until their first value, as the
/// simulator's truth has them by the contract: the duration histogram does not wait for
/// the first chat to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_histograms_are_there_from_the_first_poll_where_the_platform_gives_them() {
    const HISTOGRAMS: [&str; 2] = ["chat_conversation_wait_seconds_count", "chat_conversation_duration_seconds_count"];
    let sim = start_simulator(manual_sim(5)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    sim.state.advance(10 * 3600);
    sim.state.reset_counts();
    exp.poller.poll_once().await.unwrap();
    let mut polls_before_the_first_end = 0;
    for minute in 0..30 {
        let truth = truth_samples(&sim.state.truth());
        let exported = chat_samples(&exp.scrape().await);
        assert_samples_eq(&exported, &truth, &format!("minute {minute}"));
        let label_sets = waiting_label_sets(&exported);
        assert!(!label_sets.is_empty(), "minute {minute}: chats are open at 10:00");
        for labels in label_sets.keys() {
            for family in HISTOGRAMS {
                let series = (family.to_string(), labels.clone());
                assert!(exported.contains_key(&series), "minute {minute}: no {family} for {labels:?}");
            }
        }
        let finished: f64 = truth.iter().filter(|((name, _), _)| name == HISTOGRAMS[1]).map(|(_, count)| count).sum();
        polls_before_the_first_end += usize::from(finished == 0.0);
        exp.follow(&sim.state, 1, 60).await;
    }
    assert!(polls_before_the_first_end > 0, "the first poll comes before any chat finishes");
}

// ------------------------------------------------------------- increase() on a real Prometheus

/// Prometheus on a TSDB backfilled (by promtool) with the scrapes taken in lockstep, so
/// that the scrape times are the simulated ones. Killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn backfilled(openmetrics: &str) -> Prometheus {
        let promtool = support::tools::require_tool(&["promtool"], "prometheus");
        let prometheus = support::tools::require_tool(&["prometheus"], "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("scrapes.om");
        std::fs::write(&input, openmetrics).unwrap();
        let data = dir.path().join("data");
        let out = Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&input)
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").unwrap();
        let port = free_port();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus { child, port, _dir: dir }
    }

    async fn query(&self, expr: &str, at: f64) -> Vec<(BTreeMap<String, String>, f64)> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = client
                .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
                .query(&[("query", expr.to_string()), ("time", at.to_string())])
                .send()
                .await;
            if let Ok(r) = answer {
                if r.status().is_success() {
                    let body: serde_json::Value = r.json().await.unwrap();
                    return body["data"]["result"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| {
                            let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                            (labels, s["value"][1].as_str().unwrap().parse().unwrap())
                        })
                        .collect();
                }
            }
            assert!(Instant::now() < deadline, "Prometheus did not answer {expr}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

const ANSWERED: &str = "chat_conversations_answered_total";

fn answered_by(samples: &Samples, agent: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| n == ANSWERED && l.get("agent").is_some_and(|a| a == agent))
        .map(|(_, v)| v)
        .sum()
}

/// An agent whose shift starts later in the day answers their first chats: over a window
/// that begins before them, `increase()` on a real Prometheus equals the simulator's truth,
/// because their series was exported at 0 before the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increase_sees_a_new_agents_first_answers_on_a_real_prometheus() {
    let sim = start_simulator(manual_sim_of("movidesk", 11)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    // Every scrape (Unix seconds) and the truth then; one a simulated minute.
    let mut scrapes: Vec<(i64, Samples, Samples)> = Vec::new();
    for _ in 0..(14 * 60) {
        exp.follow(&sim.state, 1, 60).await;
        let at = sim.state.now().timestamp();
        scrapes.push((at, chat_samples(&exp.scrape().await), truth_samples(&sim.state.truth())));
    }
    // The window starts once every label set of the day has been seen (a chat that
    // arrives in a new label set and is answered before the next poll rises from nothing).
    let (t1, _, truth1) = scrapes.last().unwrap();
    let day = counted_label_sets(truth1);
    let start = scrapes
        .iter()
        .position(|(_, exported, _)| day.iter().all(|l| waiting_label_sets(exported).contains_key(l)))
        .expect("every label set is seen during the day");
    let (t0, _, truth0) = &scrapes[start];
    let agents: BTreeSet<String> = truth1
        .keys()
        .filter(|(n, _)| n == ANSWERED)
        .filter_map(|(_, l)| l.get("agent").cloned())
        .filter(|a| answered_by(truth0, a) == 0.0 && answered_by(truth1, a) > 0.0)
        .collect();
    assert!(!agents.is_empty(), "some agent answers their first chats after the first hour");

    let mut openmetrics = String::from("# TYPE chat_conversations_answered counter\n");
    let series: BTreeSet<&BTreeMap<String, String>> =
        scrapes.iter().flat_map(|(_, s, _)| s.keys().filter(|(n, _)| n == ANSWERED).map(|(_, l)| l)).collect();
    for labels in series {
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        for (at, samples, _) in &scrapes {
            if let Some(v) = samples.get(&(ANSWERED.to_string(), labels.clone())) {
                openmetrics.push_str(&format!("{ANSWERED}{{{}}} {v} {at}\n", text.join(",")));
            }
        }
    }
    openmetrics.push_str("# EOF\n");
    let prometheus = Prometheus::backfilled(&openmetrics);
    // The range reaches back to just before the window's first scrape, whose values are
    // the base: evaluated at the last scrape, Prometheus extrapolates nothing.
    let range = t1 - t0 + 30;
    for agent in &agents {
        let expr = format!("sum(increase({ANSWERED}{{agent=\"{agent}\"}}[{range}s]))");
        let result = prometheus.query(&expr, *t1 as f64).await;
        let increase = result.first().map(|(_, v)| *v).unwrap_or(0.0);
        let truth = answered_by(truth1, agent) - answered_by(truth0, agent);
        assert_eq!(increase, truth, "{expr}: Prometheus {increase}, simulator {truth}");
    }
}
