//! Specification: the exporter, polling the simulated Movidesk API over real HTTP,
//! reports exactly what happened in the simulated contact centre.

mod support;

use std::time::Duration;

use chat_exporter::simulator::Fault;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_day_matches_ground_truth_every_hour() {
    let truth = spec::a_whole_day_matches_ground_truth_every_hour("movidesk", 7).await;
    // Movidesk gives the queue wait and the talk time: both histograms carry data.
    for family in ["chat_conversation_wait_seconds_count", "chat_conversation_duration_seconds_count"] {
        assert!(truth.samples.iter().any(|s| s.name == family && s.value > 0.0), "{family} is empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_match_after_every_poll() {
    spec::gauges_match_after_every_poll("movidesk", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_polls_count_once() {
    spec::changes_between_polls_count_once("movidesk", 17).await;
}

/// Each chat is seen many times (a one-hour overlap window, reconciliation every poll,
/// polls every 20 simulated seconds) and pages come in any order: still counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_polls_count_each_chat_once() {
    let sim = start_simulator(manual_sim(3)).await;
    let mut cfg = fast_setup(&sim);
    cfg.set("overlap", "1h");
    cfg.polling.reconcile_every = 1;
    cfg.set("page_size", 7);
    let mut exp = TestExporter::start(cfg).await;
    sim.state.advance(10 * 3600);
    sim.state.reset_counts();
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 180, 20).await;
    let requests = sim.state.requests();
    assert!(requests.len() > 500, "small pages and a wide overlap make many requests: {}", requests.len());
    assert_samples_eq(
        &chat_samples(&exp.scrape().await),
        &truth_samples(&sim.state.truth()),
        "after overlapping polls",
    );
}

/// A 429 is honoured: no request goes out before `Retry-After` has passed, the failure is
/// counted as rate_limited, and once the limit lifts every metric is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_and_retry_after_are_honoured() {
    let sim = start_simulator(manual_sim(5)).await;
    let mut cfg = fast_setup(&sim);
    cfg.polling.requests_per_minute = 6000; // far above the platform's limit, to provoke 429s
    let mut exp = TestExporter::start(cfg).await;
    sim.state.advance(9 * 3600);
    sim.state.reset_counts();
    exp.poller.poll_once().await.unwrap();
    sim.state.set_rate_limit(Some(4), Duration::from_secs(2));
    let mut successes = 0;
    let mut rate_limited = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while successes < 6 {
        assert!(std::time::Instant::now() < deadline, "no progress under rate limiting");
        sim.state.advance(60);
        match exp.poller.poll_once().await {
            Ok(()) => successes += 1,
            Err(e) => {
                assert_eq!(e.reason(), "rate_limited", "unexpected failure: {e}");
                rate_limited += 1;
            }
        }
    }
    let log = sim.state.requests();
    let refusals: Vec<_> = log.iter().enumerate().filter(|(_, r)| r.status == 429).collect();
    assert!(!refusals.is_empty() && rate_limited > 0, "the test must provoke 429s");
    for (i, refusal) in &refusals {
        if let Some(next) = log.get(i + 1) {
            let gap = next.at_ms - refusal.at_ms;
            assert!(gap >= 1990, "a request went out {gap} ms after a 429 with Retry-After: 2");
        }
    }
    let samples = exp.scrape().await;
    assert_eq!(
        value(
            &samples,
            "chat_exporter_api_request_failures_total",
            &[("source", "movidesk"), ("reason", "rate_limited")]
        ),
        Some(refusals.len() as f64)
    );
    assert_eq!(
        value(
            &samples,
            "chat_exporter_api_requests_total",
            &[("source", "movidesk"), ("endpoint", "tickets"), ("code", "429")]
        )
        .unwrap_or(0.0)
            + value(
                &samples,
                "chat_exporter_api_requests_total",
                &[("source", "movidesk"), ("endpoint", "persons"), ("code", "429")]
            )
            .unwrap_or(0.0),
        refusals.len() as f64
    );
    assert_samples_eq(&chat_samples(&samples), &truth_samples(&sim.state.truth()), "after the rate limit lifted");
}

/// Malformed or unexpected answers fail the poll with a counted reason, keep the last good
/// values on /metrics, flip source_up to 0 and readiness off; recovery is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_garbage_is_counted_and_last_good_values_are_kept() {
    let sim = start_simulator(manual_sim(9)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    sim.state.advance(10 * 3600);
    sim.state.reset_counts();
    exp.poller.poll_once().await.unwrap();
    let good = chat_samples(&exp.scrape().await);
    assert!(!good.is_empty());
    let cases = [
        (Fault::MalformedJson, "decode"),
        (Fault::NotAnArray, "decode"),
        (Fault::Html, "decode"),
        (Fault::Status { code: 500 }, "server_error"),
        (Fault::Status { code: 503 }, "server_error"),
        (Fault::Status { code: 401 }, "unauthorized"),
        (Fault::Status { code: 400 }, "client_error"),
    ];
    for (fault, reason) in cases {
        let before = exp.scrape().await;
        let failures = |s: &Samples| {
            value(s, "chat_exporter_api_request_failures_total", &[("source", "movidesk"), ("reason", reason)]).unwrap()
        };
        sim.state.advance(60);
        sim.state.push_faults([fault.clone()]);
        let err = exp.poller.poll_once().await.expect_err("an injected fault fails the poll");
        assert_eq!(err.reason(), reason, "{fault:?}");
        let after = exp.scrape().await;
        assert_eq!(failures(&after), failures(&before) + 1.0, "{fault:?} counted once");
        assert_eq!(value(&after, "chat_exporter_source_up", &[("source", "movidesk")]), Some(0.0));
        assert_samples_eq(
            &chat_samples(&after),
            &chat_samples(&before),
            &format!("last good values kept after {fault:?}"),
        );
        let ready = reqwest::get(format!("http://{}/-/ready", exp.addr)).await.unwrap();
        assert_eq!(ready.status(), 503);
    }
    // A page with one unreadable record: the record is counted and skipped, the poll succeeds.
    sim.state.advance(60);
    sim.state.push_faults([Fault::GarbageRecord]);
    exp.poller.poll_once().await.unwrap();
    let after = exp.scrape().await;
    assert_eq!(
        value(
            &after,
            "chat_exporter_api_request_failures_total",
            &[("source", "movidesk"), ("reason", "invalid_record")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&after, "chat_exporter_source_up", &[("source", "movidesk")]), Some(1.0));
    assert_samples_eq(&chat_samples(&after), &truth_samples(&sim.state.truth()), "after recovery");
    let ready = reqwest::get(format!("http://{}/-/ready", exp.addr)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// A slow platform is cut off by the request timeout and counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out() {
    let sim = start_simulator(manual_sim(2)).await;
    let mut cfg = fast_setup(&sim);
    cfg.polling.request_timeout = Duration::from_secs(1);
    let mut exp = TestExporter::start(cfg).await;
    sim.state.advance(3600);
    sim.state.reset_counts();
    sim.state.push_faults([Fault::Delay { millis: 4000 }]);
    let err = exp.poller.poll_once().await.unwrap_err();
    assert_eq!(err.reason(), "timeout");
    exp.poller.poll_once().await.unwrap();
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "after the timeout");
}

/// Chats that existed before the exporter started are history: gauges show them, but
/// counters only count what happens after the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_starts_when_the_exporter_starts() {
    spec::counting_starts_when_the_exporter_starts("movidesk", 4).await;
}
