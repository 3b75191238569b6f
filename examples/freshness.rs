//! How stale the numbers get at Movidesk's 10 requests a minute, from the simulator.
//!
//! The real Movidesk source polls the simulated API in lockstep (one poll every 15
//! simulated seconds, the default settings otherwise) and the requests each poll needs are
//! recorded. The budget's pacing (one request every 6 s, at most 10 in any 61 s) is then
//! replayed over those request counts: a poll starts when it is due or when the previous
//! one has finished, and its data are published after its last request. The staleness of
//! a change is the time from the change to the publication of a poll that saw it; the
//! worst case is a change just after a poll opened its window.
//!
//! Run: cargo run --release --example freshness

use chat_exporter::poller::Poller;
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::simulator::{self, Scenario, SimOptions};

const POLL: f64 = 15.0;
const SPACING: f64 = 6.0;

/// Requests per poll, and the chats that arrived in the hours measured.
async fn requests_per_poll(scenario: Scenario, skip_hours: i64, hours: i64) -> (Vec<usize>, usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim =
        simulator::serve(listener, SimOptions { rate_limit: None, scenario, ..SimOptions::default() }).await.unwrap();
    sim.state.advance(skip_hours * 3600);
    let platform = sim.state.platform;
    let polling = chat_exporter::config::Polling { requests_per_minute: 1_000_000, ..platform.polling_defaults() };
    let source = platform.load(sim.section()).unwrap().build(&polling, SelfMetrics::new());
    let mut exporter = Poller::new(source, SelfMetrics::new(), polling.poll_interval);
    exporter.poll_once().await.unwrap();
    let chats_before = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.is_chat()).count());
    let mut counts = Vec::new();
    let polls = (hours * 3600) as f64 / POLL;
    for i in 0..polls as usize {
        sim.state.advance(POLL as i64);
        let before = sim.state.requests().len();
        exporter.poll_once().await.unwrap();
        let mut n = sim.state.requests().len() - before;
        // The roster is read every 10 minutes of real time; in lockstep, every 40 polls.
        if i % 40 != 0 {
            n -= sim.state.requests()[before..].iter().filter(|r| r.endpoint == "persons").count();
        }
        counts.push(n);
    }
    let chats_after = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.is_chat()).count());
    (counts, chats_after - chats_before)
}

/// Replays the budget over the request counts: (worst staleness, mean staleness, requests/min).
fn replay(counts: &[usize]) -> (f64, f64, f64) {
    let mut sent: Vec<f64> = Vec::new();
    let mut starts = Vec::new();
    let mut published = Vec::new();
    let mut free_at = 0.0f64;
    for (k, n) in counts.iter().enumerate() {
        let start = (k as f64 * POLL).max(free_at);
        let mut t = start;
        for _ in 0..*n {
            if let Some(last) = sent.last() {
                t = t.max(last + SPACING);
            }
            if sent.len() >= 10 {
                t = t.max(sent[sent.len() - 10] + 61.0);
            }
            sent.push(t);
        }
        starts.push(start);
        published.push(t);
        free_at = t;
    }
    let stale: Vec<f64> = (0..counts.len() - 1).map(|k| published[k + 1] - starts[k]).collect();
    let worst = stale.iter().cloned().fold(0.0, f64::max);
    let mean = stale.iter().sum::<f64>() / stale.len() as f64;
    let minutes = (sent.last().unwrap() - sent[0]) / 60.0;
    (worst, mean, sent.len() as f64 / minutes)
}

#[tokio::main]
async fn main() {
    println!("| hour (simulated) | chats arriving | requests per poll (max) | worst staleness | mean staleness | requests/min used |");
    println!("|---|---|---|---|---|---|");
    // The normal scenario starts at local midnight (UTC-3).
    for (label, scenario, skip) in [
        ("quiet (03:00-04:00 local)", Scenario::Normal, 3),
        ("normal (12:00-13:00 local)", Scenario::Normal, 12),
        ("peak (15:00-16:00 local, two agents leave)", Scenario::Normal, 15),
        ("peak scenario, its first two hours (4x arrivals for an hour, half the agents away)", Scenario::Peak, 0),
    ] {
        let hours = if scenario == Scenario::Peak { 2 } else { 1 };
        let (counts, chats) = requests_per_poll(scenario, skip, hours).await;
        let arrivals = format!("{}/h", chats as i64 / hours);
        let (worst, mean, per_min) = replay(&counts);
        println!(
            "| {label} | {arrivals} | {} | {worst:.0} s | {mean:.0} s | {per_min:.1} |",
            counts.iter().max().unwrap()
        );
    }
}
