//! Specification: under every fault the platform can throw, the exporter keeps serving the
//! last good values, says so (source_up 0, the age of the last success, failures by
//! reason, readiness), never crashes, and once the platform recovers every chat metric
//! equals the ground truth. Every fault is tried on every platform.

mod support;

use std::time::Duration;

use chat_exporter::simulator::{self, DateStyle, Fault, Rendering, SimOptions, Undecodable};
use support::*;

/// Starts a simulator and an exporter and runs two busy hours in lockstep.
async fn busy_morning(seed: u64, options: SimOptions) -> (simulator::RunningSimulator, TestExporter) {
    let sim = start_simulator(SimOptions { seed, ..options }).await;
    eprintln!("platform {}", sim.state.facade().name());
    sim.state.advance(9 * 3600);
    sim.state.reset_counts();
    let mut cfg = fast_setup(&sim);
    cfg.polling.request_timeout = Duration::from_secs(2);
    let mut exp = TestExporter::start(cfg).await;
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 120, 60).await;
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "before the fault");
    (sim, exp)
}

fn failures(s: &Samples, reason: &str) -> f64 {
    let source = source_of(s);
    value(s, "chat_exporter_api_request_failures_total", &[("source", &source), ("reason", reason)]).unwrap()
}

/// The `source` label of the exporter these samples come from.
fn source_of(s: &Samples) -> String {
    s.keys()
        .find(|(name, _)| name == "chat_exporter_source_up")
        .and_then(|(_, labels)| labels.get("source").cloned())
        .expect("source_up is exported")
}

/// While the fault lasts: `polls` failing polls, each counted under `reason`, the last good
/// chat values served unchanged, source down, last success frozen, not ready.
async fn fails_honestly(sim: &simulator::RunningSimulator, exp: &mut TestExporter, polls: usize, reason: &str) {
    let good = exp.scrape().await;
    let source = sim.state.facade().name();
    let last_success = value(&good, "chat_exporter_source_last_success_timestamp_seconds", &[("source", source)]);
    for i in 0..polls {
        sim.state.advance(60);
        let err = exp.poller.poll_once().await.expect_err("the poll fails during the fault");
        assert_eq!(err.reason(), reason, "poll {i}: {err}");
        let now = exp.scrape().await;
        assert_eq!(failures(&now, reason), failures(&good, reason) + (i + 1) as f64, "each failure counted once");
        assert_eq!(value(&now, "chat_exporter_source_up", &[("source", source)]), Some(0.0));
        assert_eq!(
            value(&now, "chat_exporter_source_last_success_timestamp_seconds", &[("source", source)]),
            last_success,
            "the last success does not move while failing"
        );
        assert_samples_eq(&chat_samples(&now), &chat_samples(&good), "last good values");
        let ready = reqwest::get(format!("http://{}/-/ready", exp.addr)).await.unwrap();
        assert_eq!(ready.status(), 503);
        let why = ready.text().await.unwrap();
        assert!(why.contains(source), "{why}");
    }
}

async fn recovers_exactly(sim: &simulator::RunningSimulator, exp: &mut TestExporter, what: &str) {
    for _ in 0..3 {
        sim.state.advance(60);
        exp.poller.poll_once().await.unwrap_or_else(|e| panic!("{what}: no recovery: {e}"));
    }
    let now = exp.scrape().await;
    assert_eq!(value(&now, "chat_exporter_source_up", &[("source", sim.state.facade().name())]), Some(1.0));
    assert_samples_eq(&chat_samples(&now), &truth_samples(&sim.state.truth()), &format!("after {what}"));
    assert_eq!(reqwest::get(format!("http://{}/-/ready", exp.addr)).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_bursts() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(21, manual_sim_of(platform, 0)).await;
        for code in [500, 502, 503, 504] {
            sim.state.push_faults((0..3).map(|_| Fault::Status { code }));
            fails_honestly(&sim, &mut exp, 3, "server_error").await;
            recovers_exactly(&sim, &mut exp, &format!("HTTP {code} burst")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_slow_bodies() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(22, manual_sim_of(platform, 0)).await;
        sim.state.push_faults([Fault::Delay { millis: 5000 }, Fault::Delay { millis: 5000 }]);
        fails_honestly(&sim, &mut exp, 2, "timeout").await;
        recovers_exactly(&sim, &mut exp, "late answers").await;
        sim.state.push_faults([Fault::SlowBody { millis: 1000 }]);
        fails_honestly(&sim, &mut exp, 1, "timeout").await;
        recovers_exactly(&sim, &mut exp, "a trickling body").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(23, manual_sim_of(platform, 0)).await;
        let addr = sim.addr;
        let state = sim.stop().await;
        // Lockstep without the simulator's server: advance its world directly.
        let good = exp.scrape().await;
        for _ in 0..3 {
            state.advance(60);
            let err = exp.poller.poll_once().await.unwrap_err();
            assert_eq!(err.reason(), "connection", "{err}");
        }
        let now = exp.scrape().await;
        assert_eq!(failures(&now, "connection"), failures(&good, "connection") + 3.0);
        assert_samples_eq(&chat_samples(&now), &chat_samples(&good), "last good values while refused");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the simulator's port");
        let sim = simulator::serve_state(listener, state, None).await.unwrap();
        recovers_exactly(&sim, &mut exp, "refused connections").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_401_and_403() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(24, manual_sim_of(platform, 0)).await;
        sim.state.set_outage(Some(Fault::Status { code: 401 }));
        fails_honestly(&sim, &mut exp, 3, "unauthorized").await;
        // The hint names where the token is set, the environment's variables included.
        sim.state.advance(60);
        let err = exp.poller.poll_once().await.expect_err("401");
        let variable = format!("CHAT_EXPORTER_{}__TOKEN", platform.to_uppercase());
        assert!(err.to_string().contains(&variable), "{platform}: {err}");
        sim.state.set_outage(Some(Fault::Status { code: 403 }));
        fails_honestly(&sim, &mut exp, 2, "unauthorized").await;
        sim.state.set_outage(None);
        recovers_exactly(&sim, &mut exp, "401/403").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_lockout() {
    let (sim, mut exp) = busy_morning(25, manual_sim(0)).await;
    sim.state.set_rate_limit(Some(1), Duration::from_secs(1));
    // One request a minute passes, the next ones are locked out: a poll needs two (the
    // tickets, then the roster).
    for _ in 0..4 {
        sim.state.advance(60);
        if let Err(e) = exp.poller.poll_once().await {
            assert_eq!(e.reason(), "rate_limited");
        }
    }
    let refused = sim.state.requests().iter().filter(|r| r.status == 429).count();
    assert!(refused > 0, "the lock-out must bite");
    assert_eq!(failures(&exp.scrape().await, "rate_limited"), refused as f64, "every 429 counted once");
    sim.state.set_rate_limit(None, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1100)).await; // the Retry-After the exporter honours
    recovers_exactly(&sim, &mut exp, "a 429 lock-out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_unexpected_bodies() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(26, manual_sim_of(platform, 0)).await;
        for fault in [Fault::MalformedJson, Fault::NotAnArray, Fault::Html] {
            sim.state.push_faults([fault.clone(), fault.clone()]);
            fails_honestly(&sim, &mut exp, 2, "decode").await;
            recovers_exactly(&sim, &mut exp, &format!("{fault:?}")).await;
        }
        // One unreadable record in a good page: skipped and counted, the rest applied.
        let before = failures(&exp.scrape().await, "invalid_record");
        sim.state.push_faults([Fault::GarbageRecord]);
        recovers_exactly(&sim, &mut exp, "a garbage record").await;
        assert_eq!(failures(&exp.scrape().await, "invalid_record"), before + 1.0);
    }
}

/// Answers that look different but say the same thing change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_nulls_string_ids_and_date_formats() {
    let (sim, mut exp) = busy_morning(27, manual_sim(0)).await;
    for dates in [DateStyle::NoFractionNoZone, DateStyle::Zulu, DateStyle::Offset, DateStyle::Fraction7NoZone] {
        for omit_nulls in [true, false] {
            sim.state.set_rendering(Rendering {
                dates,
                omit_nulls,
                ids_as_strings: omit_nulls,
                ..Rendering::default()
            });
            exp.follow(&sim.state, 15, 60).await;
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("dates {dates:?}, nulls omitted {omit_nulls}"),
            );
        }
    }
}

/// A change stamped earlier than the one already seen for that chat (answered, but
/// stamped before its creation as seen) is counted all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stamped_earlier_than_the_one_seen_still_counts() {
    let (sim, mut exp) = busy_morning(31, manual_sim(0)).await;
    sim.state.set_rendering(Rendering { answers_stamped_before_creation: true, ..Rendering::default() });
    let answered = |sim: &simulator::RunningSimulator| {
        sim.state.with_world(|w| w.conversations.iter().filter(|c| c.is_chat() && c.answered_at.is_some()).count())
    };
    let quick_answers = |sim: &simulator::RunningSimulator| {
        sim.state.with_world(|w| {
            w.conversations
                .iter()
                .filter(|c| c.is_chat() && c.answered_at.is_some_and(|a| a - c.created <= chrono::Duration::minutes(1)))
                .count()
        })
    };
    let (before, quick_before) = (answered(&sim), quick_answers(&sim));
    exp.follow(&sim.state, 30, 60).await;
    assert!(answered(&sim) > before, "chats were answered in the half hour");
    assert!(quick_answers(&sim) > quick_before, "some within a minute of their creation");
    assert_samples_eq(
        &chat_samples(&exp.scrape().await),
        &truth_samples(&sim.state.truth()),
        "answers stamped before their chats' creation",
    );
}

/// A chat deleted on the platform, or gone without a trace, leaves the gauges; what was
/// counted stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_that_disappear() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) =
            busy_morning(28, SimOptions { scenario: simulator::Scenario::Peak, ..manual_sim_of(platform, 0) }).await;
        let open: Vec<u64> =
            sim.state.with_world(|w| w.open_conversations().filter(|c| c.is_chat()).map(|c| c.id).collect());
        assert!(open.len() >= 2, "need open chats to purge");
        for id in open.iter().take(open.len() / 2) {
            sim.state.purge(*id);
        }
        // Reconciliation starts every tenth poll (Movidesk's the poll after, when the roster
        // is read on it): within twelve polls the gauges are exact again.
        exp.follow(&sim.state, 12, 60).await;
        assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "after purges");
        if sim.state.with_world(|w| w.features.soft_delete) {
            let deleted = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.deleted()).count());
            assert!(deleted > 0, "the simulated day deletes some waiting chats");
        }
    }
}

/// The platform's clock an hour ahead of or behind the exporter's changes nothing: the
/// exporter's cursor is the platform's own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_clock_ahead_or_behind() {
    for platform in support::PLATFORMS.iter().copied() {
        for skew_hours in [1i64, -1, 26] {
            let start = chrono::Utc::now() + chrono::Duration::hours(skew_hours);
            let start = chrono::DateTime::from_timestamp(start.timestamp(), 0).unwrap();
            let sim = start_simulator(SimOptions { start, ..manual_sim_of(platform, 29) }).await;
            let mut exp = TestExporter::start(fast_setup(&sim)).await;
            exp.poller.poll_once().await.unwrap();
            exp.follow(&sim.state, 90, 60).await;
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("skew {skew_hours} h"),
            );
        }
    }
}

/// An hour of outage, then recovery: everything that happened in that hour is counted,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_of_outage_then_recovery() {
    for platform in support::PLATFORMS.iter().copied() {
        let options = SimOptions { features: Some(without_blind_spots(platform)), ..manual_sim_of(platform, 0) };
        let (sim, mut exp) = busy_morning(30, options).await;
        sim.state.set_outage(Some(Fault::Status { code: 503 }));
        fails_honestly(&sim, &mut exp, 60, "server_error").await;
        sim.state.set_outage(None);
        recovers_exactly(&sim, &mut exp, "an hour of outage").await;
    }
}

/// A `Date` header from a clock far ahead of (or behind) the one writing `lastUpdate`
/// does not move the cursor past changes not yet seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_header_from_another_clock() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(31, manual_sim_of(platform, 0)).await;
        for skew in [3600, -3600, 600] {
            sim.state.set_rendering(Rendering { date_header_skew_seconds: skew, ..Rendering::default() });
            exp.follow(&sim.state, 30, 60).await;
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("Date skewed {skew} s"),
            );
        }
    }
}

/// The platform's `Date` far ahead (400 or 10 days) or far behind for one poll, and again
/// for the first poll after a restart: not believed, so no mark moves (where closed
/// conversations were forgotten, when each series was last seen). Once the clock is back,
/// every chat is counted, no series has gone, and each jump was counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_that_jumps_far_for_a_poll_moves_no_mark() {
    use chat_exporter::state::StateStore;
    for platform in support::PLATFORMS.iter().copied() {
        for jump_days in [400i64, 10, -400] {
            let context = format!("{platform}: Date {jump_days} days off");
            let dir = tempfile::tempdir().unwrap();
            let store = || Some(StateStore::new(dir.path().join("state.json")));
            let sim = start_simulator(manual_sim_of(platform, 38)).await;
            sim.state.advance(9 * 3600);
            sim.state.reset_counts();
            let mut exp = TestExporter::start_with_state(fast_setup(&sim), store()).await;
            exp.poller.poll_once().await.unwrap();
            exp.follow(&sim.state, 60, 60).await;
            let jumped = Rendering { date_header_skew_seconds: jump_days * 86_400, ..Rendering::default() };
            sim.state.set_rendering(jumped);
            exp.follow(&sim.state, 1, 60).await;
            let jumps = |s: &Samples| value(s, "chat_exporter_platform_clock_jumps_total", &[("source", platform)]);
            assert_eq!(jumps(&exp.scrape().await), Some(1.0), "{context}: the jump is counted");
            drop(exp);
            let mut exp = TestExporter::start_with_state(fast_setup(&sim), store()).await;
            exp.follow(&sim.state, 1, 60).await;
            assert_eq!(jumps(&exp.scrape().await), Some(1.0), "{context}: after the restart too");
            sim.state.set_rendering(Rendering::default());
            exp.follow(&sim.state, 60, 60).await;
            let now = exp.scrape().await;
            assert_samples_eq(&chat_samples(&now), &truth_samples(&sim.state.truth()), &context);
            assert_eq!(jumps(&now), Some(1.0), "{context}: counted once");
        }
    }
}

/// A gzip answer of 1 MiB that expands to 1 GiB: read up to `max_response_size` and
/// refused as `too_large`, the last good values kept; memory under the bomb is measured
/// by `examples/http_bounds.rs`, not here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_too_large() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(32, manual_sim_of(platform, 0)).await;
        sim.state.push_faults([Fault::GzipBomb]);
        fails_honestly(&sim, &mut exp, 1, "too_large").await;
        recovers_exactly(&sim, &mut exp, "a gzip bomb").await;
    }
}

/// A record no strict JSON reader decodes (a lone surrogate, a Latin-1 byte, `1e400`)
/// is skipped and counted; the rest of its page is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_never_fail_their_page() {
    for platform in support::PLATFORMS.iter().copied() {
        let (sim, mut exp) = busy_morning(33, manual_sim_of(platform, 0)).await;
        for how in Undecodable::ALL {
            let before = failures(&exp.scrape().await, "invalid_record");
            // Every list of one poll starts with an undecodable copy of its first record.
            sim.state.set_outage(Some(Fault::UndecodableRecord { how }));
            sim.state.advance(60);
            exp.poller.poll_once().await.unwrap_or_else(|e| panic!("{how:?}: the poll fails: {e}"));
            sim.state.set_outage(None);
            recovers_exactly(&sim, &mut exp, &format!("{how:?}")).await;
            assert!(failures(&exp.scrape().await, "invalid_record") > before, "{how:?}: counted under invalid_record");
        }
    }
}

/// Records stamped in 2099 (beyond the platform's `Date` plus the tolerance) are
/// skipped and counted, at the first start (where one would set the start) and later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_the_future_are_ignored() {
    for platform in support::PLATFORMS.iter().copied() {
        let sim = start_simulator(manual_sim_of(platform, 34)).await;
        sim.state.advance(9 * 3600);
        sim.state.reset_counts();
        let mut exp = TestExporter::start(fast_setup(&sim)).await;
        sim.state.set_outage(Some(Fault::FutureRecord));
        exp.poller.poll_once().await.expect("a first poll with records from the future");
        sim.state.set_outage(None);
        assert!(failures(&exp.scrape().await, "invalid_record") > 0.0, "counted under invalid_record");
        exp.follow(&sim.state, 60, 60).await;
        assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "2099 at the start");
        sim.state.set_outage(Some(Fault::FutureRecord));
        exp.follow(&sim.state, 1, 60).await;
        sim.state.set_outage(None);
        exp.follow(&sim.state, 60, 60).await;
        assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "2099 later on");
    }
}

/// A server that ignores the offset (and pages by 5) cannot keep a poll paging: a page
/// with nothing new ends it as `no_progress`, the source goes down and says so, and
/// once the server pages again every value is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_paging() {
    for platform in support::PLATFORMS.iter().copied() {
        // What a blind spell hides (see `without_blind_spots`) is not the paging's doing.
        let options = SimOptions { features: Some(without_blind_spots(platform)), ..manual_sim_of(platform, 35) };
        let sim = start_simulator(options).await;
        sim.state.advance(9 * 3600);
        sim.state.reset_counts();
        let mut cfg = fast_setup(&sim);
        if platform == "movidesk" {
            // Pages of five, as the server caps them: a full page asks for the next.
            cfg.set("page_size", 5);
        }
        let mut exp = TestExporter::start(cfg).await;
        exp.poller.poll_once().await.unwrap();
        exp.follow(&sim.state, 30, 60).await;
        let good = exp.scrape().await;
        sim.state.set_ignore_paging(Some(5));
        let mut failed = 0;
        for i in 0..12 {
            sim.state.advance(60);
            let requests = sim.state.requests().len();
            let result = exp.poller.poll_once().await;
            let asked = sim.state.requests().len() - requests;
            assert!(asked <= 40, "poll {i}: {asked} requests: paging must stop");
            if let Err(e) = result {
                failed += 1;
                assert_eq!(e.reason(), "no_progress", "poll {i}: {e}");
                let now = exp.scrape().await;
                assert_eq!(value(&now, "chat_exporter_source_up", &[("source", platform)]), Some(0.0));
                let ready = reqwest::get(exp.url("/-/ready")).await.unwrap();
                assert_eq!(ready.status(), 503);
            }
        }
        let now = exp.scrape().await;
        if platform != "chatwoot" {
            // Chatwoot's source reads no list by pages.
            assert!(failed > 0, "{platform}: the hostile paging must bite");
            assert!(failures(&now, "no_progress") > failures(&good, "no_progress"));
        }
        sim.state.set_ignore_paging(None);
        recovers_exactly(&sim, &mut exp, "a server that ignores paging").await;
    }
}

/// The platform's `Date` lagging the clock that stamps records by an hour or a day, on a
/// first start: no history is counted, and what follows is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_date_on_a_first_start_counts_no_history() {
    for platform in support::PLATFORMS.iter().copied() {
        for lag in [3600, 86_400] {
            let sim = start_simulator(manual_sim_of(platform, 36)).await;
            sim.state.advance(10 * 3600);
            sim.state.reset_counts();
            sim.state.set_rendering(Rendering { date_header_skew_seconds: -lag, ..Rendering::default() });
            let mut exp = TestExporter::start(fast_setup(&sim)).await;
            exp.poller.poll_once().await.unwrap();
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("{platform}: Date {lag} s behind, at the start"),
            );
            exp.follow(&sim.state, 60, 60).await;
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("{platform}: Date {lag} s behind, an hour on"),
            );
        }
    }
}
