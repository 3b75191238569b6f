//! Specification: the exporter, polling the simulated Chatwoot API over real HTTP,
//! reports exactly what happened in the simulated contact centre, by Chatwoot's contract.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_day_matches_ground_truth_every_hour() {
    spec::a_whole_day_matches_ground_truth_every_hour("chatwoot", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_match_after_every_poll() {
    spec::gauges_match_after_every_poll("chatwoot", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_starts_when_the_exporter_starts() {
    spec::counting_starts_when_the_exporter_starts("chatwoot", 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_polls_count_once() {
    spec::changes_between_polls_count_once("chatwoot", 17).await;
}

/// The simulated day holds every case the contract names: pending conversations handed
/// from the bot to a person, snoozed ones, reassigned ones, ones moved between teams, and
/// reopened ones; and the exporter agrees with the truth through all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_snoozes_transfers_and_reopenings_are_followed() {
    let sim = start_simulator(manual_sim_of("chatwoot", 19)).await;
    sim.state.advance(8 * 3600);
    sim.state.reset_counts();
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    let (bots, held) = spec::follow_checking_truth(&mut exp, &sim, 240).await;
    let (handed, reopened, moved, reassigned) = sim.state.with_world(|w| {
        let c = &w.conversations;
        (
            c.iter().filter(|c| w.streams[c.stream].bot && c.answered_at.is_some()).count(),
            c.iter().filter(|c| c.ends >= 2).count(),
            c.iter().filter(|c| c.transfers.iter().any(|t| t.from_group != t.to_group)).count(),
            c.iter().filter(|c| c.transfers.iter().any(|t| t.from_group == t.to_group)).count(),
        )
    });
    assert!(bots > 0 && held > 0, "pending and snoozed conversations were seen: {bots} {held}");
    assert!(handed > 0 && reopened > 0 && moved > 0 && reassigned > 0, "{handed} {reopened} {moved} {reassigned}");
}

/// A missing token and a wrong one get different answers from Chatwoot, and the exporter
/// says which; a 429 (plain text, no Retry-After) is counted and waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_to_fix() {
    let sim = start_simulator(manual_sim_of("chatwoot", 23)).await;
    let mut setup = fast_setup(&sim);
    setup.set("token", "not-the-token");
    let mut exp = TestExporter::start(setup).await;
    let err = exp.poller.poll_once().await.unwrap_err();
    assert_eq!(err.reason(), "unauthorized");
    assert!(err.to_string().contains("Invalid Access Token") && err.to_string().contains("chatwoot.token"), "{err}");
    let ready = reqwest::get(exp.url("/-/ready")).await.unwrap().text().await.unwrap();
    assert!(ready.contains("Invalid Access Token"), "{ready}");
    assert!(!ready.contains("not-the-token"), "{ready}");

    let mut setup = fast_setup(&sim);
    setup.set("account_id", 8);
    let mut exp = TestExporter::start(setup).await;
    let err = exp.poller.poll_once().await.unwrap_err();
    assert!(
        err.to_string().contains("/api/v1/accounts/8/") && err.to_string().contains("chatwoot.account_id"),
        "{err}"
    );

    let mut setup = fast_setup(&sim);
    setup.polling.roster_interval = std::time::Duration::from_secs(3600);
    let mut exp = TestExporter::start(setup).await;
    exp.poller.poll_once().await.unwrap();
    // The next poll's first request (the agents) passes, its second (the window) does not.
    sim.state.set_rate_limit(Some(1), std::time::Duration::ZERO);
    sim.state.advance(60);
    let err = exp.poller.poll_once().await.unwrap_err();
    assert_eq!(err.reason(), "rate_limited", "{err}");
    let samples = exp.scrape().await;
    assert_eq!(
        value(
            &samples,
            "chat_exporter_api_request_failures_total",
            &[("source", "chatwoot"), ("reason", "rate_limited")]
        ),
        Some(1.0)
    );
    // No Retry-After: the exporter waits for Chatwoot's window to pass before asking again.
    let sent = sim.state.requests().len();
    let next = tokio::time::timeout(std::time::Duration::from_secs(2), exp.poller.poll_once()).await;
    assert!(next.is_err(), "asked again within 2 s of a 429");
    assert_eq!(sim.state.requests().len(), sent);
}

/// An older Chatwoot (conversation views before `updated_at`, presence written
/// `available` as its API description gives it): the same half day, read exactly, and
/// the agents' presence is still told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_chatwoot_is_read_exactly() {
    let sim = start_simulator(manual_sim_of("chatwoot", 19)).await;
    sim.state.set_rendering(chat_exporter::simulator::Rendering { older_version: true, ..Default::default() });
    let exp = spec::exact_from_the_morning(&sim, 6).await;
    assert_eq!(
        value(
            &exp.scrape().await,
            "chat_exporter_api_request_failures_total",
            &[("source", "chatwoot"), ("reason", "invalid_record")]
        ),
        Some(0.0),
        "no conversation refused"
    );
    let available = sim.state.truth().samples.iter().any(|s| {
        s.name == "chat_agent_status"
            && s.labels.get("status").map(String::as_str) == Some("available")
            && s.value > 0.0
    });
    assert!(available, "agents were available, and told so");
}
