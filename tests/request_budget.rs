//! Specification of the request budget: never over the platform's limit, whatever the
//! load; and the cost of a poll follows what changed, not how much history exists.

mod support;

use std::time::Duration;

use chat_exporter::http::{router, AppState};
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::simulator::{Fault, SimOptions};
use support::*;

/// A whole simulated day squeezed into a minute, with the platform limiting to 120
/// requests a minute and the exporter's budget set to the same 120: the exporter is
/// always short of budget (small pages, frequent reconciliation and roster reads, 5xx
/// failures to retry), and yet the platform never sees one request too many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_never_exceeded_over_a_simulated_day() {
    const LIMIT: u32 = 120;
    let mut sim =
        start_simulator(SimOptions { rate_limit: Some(LIMIT), lockout: Duration::from_secs(60), ..manual_sim(41) })
            .await;
    let mut cfg = fast_setup(&sim);
    cfg.polling.requests_per_minute = LIMIT;
    cfg.polling.poll_interval = Duration::from_millis(200);
    cfg.set("page_size", 50);
    cfg.polling.reconcile_every = 5;
    cfg.polling.roster_interval = Duration::from_secs(5);
    let metrics = SelfMetrics::new();
    let exporter = cfg.poller(metrics);
    let exposition = exporter.exposition();
    let state = AppState {
        exposition: exposition.clone(),
        health: exporter.health(),
        telemetry_path: "/metrics".into(),
        source_description: "test".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    // Counting starts at the exporter's first poll: the day starts running after it.
    let mut exporter = exporter;
    exporter.poll_once().await.unwrap();
    sim.start_clock(1440.0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(exporter.run(async move {
        let _ = stopped.await;
    }));

    let mut max_used = 0.0f64;
    for second in 0..60 {
        if second % 15 == 7 {
            sim.state.push_faults([Fault::Status { code: 503 }, Fault::Status { code: 502 }]);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        let used = value(&parse_exposition(&text), "chat_exporter_api_budget_used", &[("source", "movidesk")]).unwrap();
        max_used = max_used.max(used);
    }
    sim.stop_clock();
    let simulated = sim.state.now() - manual_sim(41).start;
    assert!(simulated >= chrono::Duration::hours(23), "a whole day ran: {simulated}");

    // Once the platform stands still, the exporter catches up exactly.
    let truth = truth_samples(&sim.state.truth());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        let chats = chat_samples(&parse_exposition(&text));
        if chats == truth {
            break;
        }
        if std::time::Instant::now() > deadline {
            assert_samples_eq(&chats, &truth, "after the day");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    poller.await.unwrap();

    let log = sim.state.requests();
    assert!(log.iter().all(|r| r.status != 429), "the platform refused a request for exceeding its limit");
    assert!(log.iter().any(|r| r.status == 503), "the day included failures to retry");
    assert!(log.len() as u32 > LIMIT, "the exporter used its budget: {} requests", log.len());
    for (i, r) in log.iter().enumerate() {
        if let Some(later) = log.get(i + LIMIT as usize) {
            assert!(later.at_ms - r.at_ms >= 60_000, "{} requests within {} ms", LIMIT + 1, later.at_ms - r.at_ms);
        }
    }
    let gaps: Vec<u64> = log.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    let spacing = 60_000 / LIMIT as u64;
    // Measured where they arrive, so a loaded machine may bunch two; the window check
    // above is the hard limit.
    assert!(
        gaps.iter().all(|g| *g + 250 >= spacing),
        "calls are spread evenly: smallest gap {:?} ms",
        gaps.iter().min()
    );
    assert!(max_used <= LIMIT as f64, "budget_used peaked at {max_used}");
    eprintln!(
        "budget test: {} requests in {:.1} s ({:.1}/min), smallest gap {} ms, budget used peaked at {max_used}",
        log.len(),
        log.last().unwrap().at_ms as f64 / 1000.0,
        log.len() as f64 / (log.last().unwrap().at_ms as f64 / 60_000.0),
        gaps.iter().min().unwrap()
    );
}

/// Requests per poll over an hour of polling, after `days` of history.
async fn requests_per_poll_after(days: i64) -> Vec<usize> {
    let sim = start_simulator(manual_sim(42)).await;
    sim.state.advance(days * 24 * 3600);
    sim.state.reset_counts();
    let mut cfg = fast_setup(&sim);
    cfg.polling.roster_interval = Duration::from_secs(3600);
    let mut exp = TestExporter::start(cfg).await;
    exp.poller.poll_once().await.unwrap();
    let mut per_poll = Vec::new();
    for _ in 0..60 {
        sim.state.advance(60);
        let before = sim.state.requests().len();
        exp.poller.poll_once().await.unwrap();
        per_poll.push(sim.state.requests().len() - before);
    }
    assert_samples_eq(
        &chat_samples(&exp.scrape().await),
        &truth_samples(&sim.state.truth()),
        &format!("after {days} days"),
    );
    let tickets = sim.state.truth().conversations;
    assert!(tickets as i64 > days * 500, "{days} days of history hold many tickets: {tickets}");
    per_poll
}

/// Ten times the history costs not one request more per poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_poll_stay_flat_when_history_grows_tenfold() {
    let one_day = requests_per_poll_after(1).await;
    let ten_days = requests_per_poll_after(10).await;
    assert_eq!(one_day, ten_days, "requests per poll, 1 day vs 10 days of history");
    // One request per poll, two on reconciliation polls: nothing proportional to history.
    assert!(one_day.iter().all(|n| (1..=2).contains(n)), "{one_day:?}");
}
