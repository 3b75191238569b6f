//! How stale the numbers get at each platform's default request budget, from the
//! simulator.
//!
//! The platform's real source polls the simulated API in lockstep (one poll every
//! `poll_interval` simulated seconds, the platform's default settings otherwise) and the
//! requests each poll needs are recorded. The budget's pacing (one request every
//! 60 s / budget, at most the budget in any 61 s) is then replayed over those request
//! counts: a poll starts when it is due or when the previous one has finished, and its
//! data are published after its last request. The staleness of a change is the time
//! from the change to the publication of a poll that saw it; the worst case is a change
//! just after a poll opened its window.
//!
//! For Movidesk, the same is measured at a contact centre of 100, 1,000 and 4,000 open
//! chats (a scripted world of that size, from `World::populate`), where listing every
//! open chat takes 1, 10 and 40 pages.
//!
//! Run: cargo run --release --example freshness [-- PLATFORM [REQUESTS_PER_MINUTE [PER_ROUTE]]]

use std::time::Duration;

use chat_exporter::config::Polling;
use chat_exporter::platforms;
use chat_exporter::poller::Poller;
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::simulator::{self, Scenario, SimOptions};

/// Requests read on the roster's schedule rather than every poll, by platform, where the
/// source times the roster by the local clock (which the lockstep recording cannot
/// advance). Movidesk times it by the platform's clock, so the recording has its roster
/// on its own schedule already, and what its polls leave out then is recorded too.
fn roster_endpoints(platform: &str) -> &'static [&'static str] {
    match platform {
        "chatwoot" => &["inboxes", "teams", "team_members"],
        "rocketchat" => &["department"],
        _ => &[],
    }
}

/// The routes each poll calls, in order, and the chats that arrived in the hours measured.
async fn requests_per_poll(
    platform: &str,
    polling: &Polling,
    per_route: Option<u32>,
    scenario: Scenario,
    skip_hours: i64,
    hours: i64,
    size: Option<Size>,
) -> (Vec<Vec<String>>, usize) {
    let p = platforms::find(platform).expect("a known platform");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = SimOptions { rate_limit: None, scenario, ..SimOptions::new(p.facade()) };
    let sim = simulator::serve(listener, options).await.unwrap();
    sim.state.advance(skip_hours * 3600);
    if let Some(Size { open, agents, waiting }) = size {
        sim.state.with_world(|w| w.populate(agents, open, waiting));
    }
    // Unlimited, and (where the source times its roster by the local clock) the roster on
    // every poll: what each poll costs is recorded, and the roster's cost is put back on
    // its own schedule below.
    let roster_interval = if roster_endpoints(platform).is_empty() { polling.roster_interval } else { Duration::ZERO };
    let recorded = Polling { requests_per_minute: 1_000_000, roster_interval, ..polling.clone() };
    let mut section = sim.section();
    if per_route.is_some() {
        // Unlimited per route too: the route budget is replayed below.
        section["requests_per_minute_per_route"] = 1_000_000.into();
    }
    let source = p.load(section).unwrap().build(&recorded, SelfMetrics::new());
    let mut poller = Poller::new(source, SelfMetrics::new(), recorded.poll_interval);
    poller.poll_once().await.unwrap();
    let chats_before = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.is_chat()).count());
    let step = polling.poll_interval.as_secs_f64();
    let roster_every = (polling.roster_interval.as_secs_f64() / step).round().max(1.0) as usize;
    let mut counts = Vec::new();
    for i in 0..((hours * 3600) as f64 / step) as usize {
        sim.state.advance(step as i64);
        let before = sim.state.requests().len();
        poller.poll_once().await.unwrap();
        let log = sim.state.requests();
        let roster_due = (i + 1) % roster_every == 0;
        counts.push(
            log[before..]
                .iter()
                .filter(|r| roster_due || !roster_endpoints(platform).contains(&r.endpoint.as_str()))
                .map(|r| r.endpoint.clone())
                .collect(),
        );
    }
    let chats_after = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.is_chat()).count());
    (counts, chats_after - chats_before)
}

/// A scripted contact centre: open chats, agents, of the open chats those waiting.
#[derive(Clone, Copy)]
struct Size {
    open: usize,
    agents: usize,
    waiting: usize,
}

/// Replays the budget over the routes each poll calls: (worst staleness, mean staleness,
/// requests/min). Every call waits for one spacing after the previous one, for the
/// budget's window (61 s) to have room, and, where the platform limits each route, for
/// the route's own window.
fn replay(polls: &[Vec<String>], poll: f64, per_minute: u32, per_route: Option<u32>) -> (f64, f64, f64) {
    let spacing = 60.0 / per_minute as f64;
    let limit = per_minute as usize;
    let mut sent: Vec<f64> = Vec::new();
    let mut by_route: std::collections::HashMap<&str, Vec<f64>> = Default::default();
    let mut starts = Vec::new();
    let mut published = Vec::new();
    let mut free_at = 0.0f64;
    for (k, routes) in polls.iter().enumerate() {
        let start = (k as f64 * poll).max(free_at);
        let mut t = start;
        for route in routes {
            if let Some(last) = sent.last() {
                t = t.max(last + spacing);
            }
            if sent.len() >= limit {
                t = t.max(sent[sent.len() - limit] + 61.0);
            }
            let route_sent = by_route.entry(route.as_str()).or_default();
            if let Some(n) = per_route.map(|n| n as usize).filter(|n| route_sent.len() >= *n) {
                t = t.max(route_sent[route_sent.len() - n] + 61.0);
            }
            route_sent.push(t);
            sent.push(t);
        }
        starts.push(start);
        published.push(t);
        free_at = t;
    }
    let stale: Vec<f64> = (0..polls.len() - 1).map(|k| published[k + 1] - starts[k]).collect();
    let worst = stale.iter().cloned().fold(0.0, f64::max);
    let mean = stale.iter().sum::<f64>() / stale.len() as f64;
    let minutes = (sent.last().unwrap() - sent[0]) / 60.0;
    (worst, mean, sent.len() as f64 / minutes)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = match args.first() {
        Some(name) => vec![platforms::find(name).unwrap_or_else(|| panic!("unknown platform {name}")).name()],
        None => platforms::ALL.iter().map(|p| p.name()).collect(),
    };
    let budget: Option<u32> = args.get(1).map(|n| n.parse().expect("REQUESTS_PER_MINUTE is a number"));
    let route_budget: Option<u32> = args.get(2).map(|n| n.parse().expect("PER_ROUTE is a number"));
    for name in chosen {
        let platform = platforms::find(name).unwrap();
        let mut polling = platform.polling_defaults();
        if let Some(n) = budget {
            polling.requests_per_minute = n;
        }
        // Rocket.Chat limits each route on its own (10 a minute by default).
        let per_route = (name == "rocketchat").then(|| route_budget.unwrap_or(10));
        println!(
            "\n{} at {} requests/minute{}, a poll every {}, the roster every {}:\n",
            platform.title(),
            polling.requests_per_minute,
            per_route.map(|n| format!(" ({n} per route)")).unwrap_or_default(),
            humantime::format_duration(polling.poll_interval),
            humantime::format_duration(polling.roster_interval)
        );
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
            let (polls, chats) = requests_per_poll(name, &polling, per_route, scenario, skip, hours, None).await;
            let (worst, mean, per_min) =
                replay(&polls, polling.poll_interval.as_secs_f64(), polling.requests_per_minute, per_route);
            println!(
                "| {label} | {}/h | {} | {worst:.0} s | {mean:.0} s | {per_min:.1} |",
                chats as i64 / hours,
                polls.iter().map(Vec::len).max().unwrap()
            );
        }
        if name == "movidesk" {
            println!("\nAt size, for an hour (a scripted world: the window reads one page a poll):\n");
            println!("| open chats (agents, waiting) | pages to list them | requests per poll (max) | worst staleness | mean staleness | requests/min used |");
            println!("|---|---|---|---|---|---|");
            for size in [(100, 20, 25), (1000, 100, 250), (4000, 400, 1000)] {
                let size = Size { open: size.0, agents: size.1, waiting: size.2 };
                let (polls, _) = requests_per_poll(name, &polling, None, Scenario::Normal, 12, 1, Some(size)).await;
                let (worst, mean, per_min) =
                    replay(&polls, polling.poll_interval.as_secs_f64(), polling.requests_per_minute, None);
                println!(
                    "| {} ({}, {}) | {} | {} | {worst:.0} s | {mean:.0} s | {per_min:.1} |",
                    size.open,
                    size.agents,
                    size.waiting,
                    size.open.div_ceil(100),
                    polls.iter().map(Vec::len).max().unwrap()
                );
            }
        }
    }
}
