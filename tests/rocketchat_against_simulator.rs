//! Specification: the exporter, polling the simulated Rocket.Chat Omnichannel API over
//! real HTTP, reports exactly what happened in the simulated contact centre, by
//! Rocket.Chat's contract.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_day_matches_ground_truth_every_hour() {
    spec::a_whole_day_matches_ground_truth_every_hour("rocketchat", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_match_after_every_poll() {
    spec::gauges_match_after_every_poll("rocketchat", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_starts_when_the_exporter_starts() {
    spec::counting_starts_when_the_exporter_starts("rocketchat", 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_polls_count_once() {
    spec::changes_between_polls_count_once("rocketchat", 17).await;
}

/// The simulated day holds every case the contract names, and the exporter agrees with
/// the truth through all of them: rooms transferred between agents and departments
/// (some before the exporter started), rooms on hold, pre-queued (`ready`) inquiries and
/// e-mail rooms, which never count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_holds_prequeue_and_email_rooms_are_followed() {
    let sim = start_simulator(manual_sim_of("rocketchat", 19)).await;
    sim.state.advance(10 * 3600);
    // Start while a room transferred before the start is still open.
    while !sim.state.with_world(|w| w.open_conversations().any(|c| !c.transfers.is_empty())) {
        sim.state.advance(60);
    }
    sim.state.reset_counts();
    let start = sim.state.now();
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    let (ready, held) = spec::follow_checking_truth(&mut exp, &sim, 240).await;
    let (moved, reassigned, emails, closed_after_transfer_before_start) = sim.state.with_world(|w| {
        let c = &w.conversations;
        (
            c.iter().filter(|c| c.transfers.iter().any(|t| t.from_group != t.to_group)).count(),
            c.iter().filter(|c| c.transfers.iter().any(|t| t.from_group == t.to_group)).count(),
            c.iter().filter(|c| !c.is_chat()).count(),
            c.iter()
                .filter(|c| c.transfers.first().is_some_and(|t| t.at <= start) && c.ended_at.is_some_and(|e| e > start))
                .count(),
        )
    });
    assert!(ready > 0 && held > 0, "pre-queued and on-hold rooms were seen: {ready} {held}");
    assert!(moved > 0 && reassigned > 0 && emails > 0, "{moved} {reassigned} {emails}");
    assert!(closed_after_transfer_before_start > 0, "a room transferred before the start closed after it");
}

/// Two hours of outage at the peak: more rooms changed than one page holds, and the
/// exporter pages back through all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_longer_than_a_page_is_read_whole() {
    use chat_exporter::simulator::{Fault, Scenario, SimOptions};
    let options = SimOptions {
        scenario: Scenario::Peak,
        features: Some(without_blind_spots("rocketchat")),
        ..manual_sim_of("rocketchat", 29)
    };
    let sim = start_simulator(options).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 20, 60).await;
    sim.state.set_outage(Some(Fault::Status { code: 503 }));
    sim.state.advance(2 * 3600);
    assert!(exp.poller.poll_once().await.is_err());
    sim.state.set_outage(None);
    exp.follow(&sim.state, 2, 60).await;
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "after the outage");
    assert!(
        sim.state
            .requests()
            .iter()
            .any(|r| r.endpoint == "rooms" && r.query.contains("offset=100") && r.query.contains("_updatedAt")),
        "the changed rooms took more than a page"
    );
}

/// Each route has its own limit, and the exporter reads where it stands from the
/// `X-RateLimit-*` headers of every answer: a route with no call left waits for its reset
/// instead of earning a 429, and the other routes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_routes_limit_is_read_from_its_headers_and_never_exceeded() {
    use chat_exporter::simulator::SimOptions;
    use std::time::Duration;
    let options = SimOptions {
        rate_limit: Some(3),
        lockout: Duration::ZERO,
        rate_window: Duration::from_secs(2),
        ..manual_sim_of("rocketchat", 31)
    };
    let sim = start_simulator(options).await;
    let mut setup = fast_setup(&sim);
    // The exporter's own count would allow far more: only the headers hold it back.
    setup.set("requests_per_minute_per_route", 1_000_000);
    let mut exp = TestExporter::start(setup).await;
    let started = std::time::Instant::now();
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 8, 60).await;
    let log = sim.state.requests();
    assert!(log.iter().all(|r| r.status != 429), "a 429 was earned: {log:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "nine polls of one call per route need three windows");
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "within the limits");
}

/// Transfer records written before a server upgrade (`transferredBy.type` where newer
/// ones write `userType`, and `previousDepartment` as an object): a room's first agent
/// and department are still read from them (`records::tests`), and a day of them is read
/// exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_transfer_records_are_read_exactly() {
    let sim = start_simulator(manual_sim_of("rocketchat", 23)).await;
    sim.state.set_rendering(chat_exporter::simulator::Rendering { older_version: true, ..Default::default() });
    spec::exact_from_the_morning(&sim, 6).await;
    let transferred = sim.state.with_world(|w| {
        w.conversations
            .iter()
            .filter(|c| !c.is_open() && c.transfers.iter().any(|t| t.from_group != t.to_group))
            .count()
    });
    assert!(transferred > 0, "rooms moved between departments and closed");
}

/// An older server, whose `livechat/rooms` knows no `queued` filter and refuses it with a
/// 400 (`must NOT have additional properties [invalid-params]`), and whose `open=true`
/// lists the unserved open rooms too: the exporter asks once, falls back to the open
/// list for the rest of the run, and a day is read exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_server_without_the_queued_filter_is_read_exactly() {
    let sim = start_simulator(manual_sim_of("rocketchat", 37)).await;
    sim.state.set_rendering(chat_exporter::simulator::Rendering { older_version: true, ..Default::default() });
    let exp = spec::exact_from_the_morning(&sim, 4).await;
    let queued: Vec<u16> = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.endpoint == "rooms" && r.query.contains("queued="))
        .map(|r| r.status)
        .collect();
    assert_eq!(queued, [400], "asked once, refused, then never asked again");
    let unserved_seen = sim.state.with_world(|w| w.conversations.iter().filter(|c| c.answered_at.is_none()).count());
    assert!(unserved_seen > 0, "rooms waited unserved");
    let failures = value(
        &exp.scrape().await,
        "chat_exporter_api_request_failures_total",
        &[("source", "rocketchat"), ("reason", "client_error")],
    );
    assert_eq!(failures, Some(1.0), "the one refusal is counted");
}

/// One answer saying that no call is left on its route until ten years from now
/// (`X-RateLimit-Remaining: 0`, `X-RateLimit-Reset` far ahead): the route waits at most
/// an hour (`MAX_RETRY_AFTER`), and never in silence. While the poll waits, `/-/ready`
/// answers 503 naming the wait and `chat_exporter_api_budget_waiting_seconds` rises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_reset_years_ahead_is_waited_for_in_the_open() {
    use chat_exporter::simulator::Fault;
    let sim = start_simulator(manual_sim_of("rocketchat", 29)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    let (ready_url, metrics_url, landing_url) = (exp.url("/-/ready"), exp.url("/metrics"), exp.url("/"));
    assert_eq!(reqwest::get(&ready_url).await.unwrap().status(), 200);
    let refresher = tokio::spawn(exp.poller.refresher(std::time::Duration::from_millis(100)));
    sim.state.push_faults([Fault::LimitExhausted { seconds: 10 * 365 * 86_400 }]);
    let polls = async {
        loop {
            sim.state.advance(60);
            exp.poller.poll_once().await.unwrap();
        }
    };
    let told = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = reqwest::get(&ready_url).await.unwrap();
            let (status, why) = (ready.status().as_u16(), ready.text().await.unwrap());
            let samples = parse_exposition(&reqwest::get(&metrics_url).await.unwrap().text().await.unwrap());
            let waiting =
                value(&samples, "chat_exporter_api_budget_waiting_seconds", &[("source", "rocketchat")]).unwrap();
            if status == 503 && waiting > 0.0 {
                assert!(why.contains("the platform's rate-limit reset of route"), "{why}");
                let to_go: u64 = why.split(" s to go").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
                assert!(to_go <= 3600, "capped at an hour: {why}");
                let landing = reqwest::get(&landing_url).await.unwrap().text().await.unwrap();
                assert!(
                    landing.contains("<th align=\"left\">waiting</th><td>waiting for the platform's rate-limit reset"),
                    "the landing page says why: {landing}"
                );
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the wait is not told: {status} {why}, waiting {waiting}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = polls => unreachable!("the polls go on until the held route is asked again"),
        _ = told => {}
    }
    refresher.abort();
}

/// A transfer history that never ends (after its real entries, new ones on every page, a
/// total of a billion): the exporter reads what the counts need, the first page, so each
/// history costs one request and the day is read exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_transfer_history_costs_one_request() {
    use chat_exporter::simulator::Fault;
    let sim = start_simulator(manual_sim_of("rocketchat", 31)).await;
    sim.state.set_outage(Some(Fault::EndlessList));
    spec::exact_from_the_morning(&sim, 4).await;
    let histories = sim.state.requests().iter().filter(|r| r.endpoint == "transfer_history").count();
    let (transferred, closed_served) = sim.state.with_world(|w| {
        let closed: Vec<_> = w.conversations.iter().filter(|c| !c.is_open() && c.agent.is_some()).collect();
        (closed.iter().filter(|c| !c.transfers.is_empty()).count(), closed.len())
    });
    assert!(transferred > 0, "some closed rooms were transferred: their histories never end");
    assert!(histories <= closed_served, "{histories} history requests for {closed_served} closed served rooms");
}

/// How many times each room's transfer history was read (`rid=` in the log).
fn history_reads(sim: &RunningSimulator) -> std::collections::BTreeMap<String, usize> {
    let mut reads = std::collections::BTreeMap::new();
    for r in sim.state.requests().iter().filter(|r| r.endpoint == "transfer_history") {
        let rid = r.query.split('&').find_map(|p| p.strip_prefix("rid=")).unwrap_or_default().to_string();
        *reads.entry(rid).or_insert(0) += 1;
    }
    reads
}

/// Four hours from 08:00, polled every simulated minute, the exporter restarted from its
/// state file every `restart_every` polls (never, with `None`); exact at every restart.
/// Returns the history reads of each room.
async fn a_morning_with_restarts(restart_every: Option<usize>) -> std::collections::BTreeMap<String, usize> {
    use chat_exporter::state::StateStore;
    let sim = start_simulator(manual_sim_of("rocketchat", 41)).await;
    sim.state.advance(8 * 3600);
    sim.state.reset_counts();
    let dir = tempfile::tempdir().unwrap();
    let store = || Some(StateStore::new(dir.path().join("state.json")));
    let mut exp = TestExporter::start_with_state(fast_setup(&sim), store()).await;
    exp.poller.poll_once().await.unwrap();
    let polls = 240;
    let step = restart_every.unwrap_or(polls);
    for done in (step..=polls).step_by(step) {
        exp.follow(&sim.state, step, 60).await;
        assert_samples_eq(
            &chat_samples(&exp.scrape().await),
            &truth_samples(&sim.state.truth()),
            &format!("poll {done}"),
        );
        if restart_every.is_some() {
            drop(exp);
            exp = TestExporter::start_with_state(fast_setup(&sim), store()).await;
        }
    }
    history_reads(&sim)
}

/// What the source learnt from each room's transfer history is in its saved state: a
/// morning with a restart every quarter of an hour reads exactly the histories a morning
/// without restarts reads (a room changed again after its close, archived say, is read
/// again either way), and both are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_read_no_transfer_history_again() {
    let without = a_morning_with_restarts(None).await;
    let with = a_morning_with_restarts(Some(15)).await;
    assert!(without.len() > 10, "histories were read: {without:?}");
    let again: Vec<_> = with.iter().filter(|(room, n)| without.get(*room).is_none_or(|m| *n > m)).collect();
    assert!(again.is_empty(), "restarts read these histories again: {again:?}");
    assert_eq!(with, without, "restarts changed the histories read");
}

/// A `transfer.history` route that fails, and no other: half an hour of 500s, then three
/// polls of answers later than the timeout. Every poll succeeds; the other rooms are
/// counted meanwhile (answered and abandoned equal the truth throughout), each failure
/// is counted under its reason, the rooms whose history could not be read are counted by
/// a later poll, and the morning ends exact. While rooms wait, the values are behind the
/// platform by as long as the oldest has waited: the lag gauge and `/-/ready` say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transfer_history_holds_back_no_other_room() {
    use chat_exporter::simulator::Fault;
    use std::time::Duration;
    let sim = start_simulator(manual_sim_of("rocketchat", 43)).await;
    sim.state.advance(8 * 3600);
    sim.state.reset_counts();
    let mut setup = fast_setup(&sim);
    // A poll spends at most the longer of these on histories.
    setup.polling.poll_interval = Duration::from_secs(2);
    setup.polling.request_timeout = Duration::from_millis(500);
    let mut exp = TestExporter::start(setup).await;
    exp.poller.poll_once().await.unwrap();
    exp.follow(&sim.state, 60, 60).await;
    let not_finished = |samples: &Samples| -> Samples {
        let counted = ["chat_conversations_answered_total", "chat_conversations_abandoned_total"];
        samples.iter().filter(|((n, _), _)| counted.contains(&n.as_str())).map(|(k, v)| (k.clone(), *v)).collect()
    };
    sim.state.set_outage_of("transfer_history", Some(Fault::Status { code: 500 }));
    for minute in 1..=30 {
        exp.follow(&sim.state, 1, 60).await;
        let (exported, truth) = (chat_samples(&exp.scrape().await), truth_samples(&sim.state.truth()));
        assert_samples_eq(&not_finished(&exported), &not_finished(&truth), &format!("minute {minute} of 500s"));
    }
    let lag =
        |samples: &Samples| value(samples, "chat_exporter_source_lag_seconds", &[("source", "rocketchat")]).unwrap();
    let behind = lag(&exp.scrape().await);
    assert!(behind >= 20.0 * 60.0, "rooms have waited most of the half hour: {behind} s");
    let ready = reqwest::get(exp.url("/-/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains(&format!("behind the platform by {} s", behind as u64)), "{why}");
    sim.state.set_outage_of("transfer_history", Some(Fault::Delay { millis: 1500 }));
    exp.follow(&sim.state, 3, 60).await;
    sim.state.set_outage_of("transfer_history", None);
    exp.follow(&sim.state, 30, 60).await;
    let samples = exp.scrape().await;
    assert_samples_eq(&chat_samples(&samples), &truth_samples(&sim.state.truth()), "after the history route is back");
    assert!(lag(&samples) < 60.0, "caught up: {}", lag(&samples));
    assert_eq!(reqwest::get(exp.url("/-/ready")).await.unwrap().status(), 200);
    for reason in ["server_error", "timeout"] {
        let failures = value(
            &samples,
            "chat_exporter_api_request_failures_total",
            &[("source", "rocketchat"), ("reason", reason)],
        );
        assert!(failures.is_some_and(|n| n > 0.0), "{reason}: {failures:?}");
    }
    let failed = sim.state.requests().iter().filter(|r| r.endpoint == "transfer_history" && r.status == 500).count();
    assert!(failed > 5, "histories failed: {failed}");
}

/// A server whose administrator raised the route limit to 300 a minute says so in
/// `X-RateLimit-Limit`: with `requests_per_minute_per_route` unset, the exporter follows
/// it (its gauge tells 300 on each route it called), makes twenty polls within a minute
/// although Rocket.Chat's default would allow ten, and earns no 429; an explicit key set
/// lower still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_advertised_route_limit_is_the_budget() {
    use chat_exporter::simulator::SimOptions;
    use std::time::Duration;
    let options = SimOptions { rate_limit: Some(300), lockout: Duration::ZERO, ..manual_sim_of("rocketchat", 43) };
    let sim = start_simulator(options).await;
    sim.state.advance(9 * 3600);
    sim.state.reset_counts();
    let route_budget = |samples: &Samples, endpoint: &str| {
        value(
            samples,
            "chat_exporter_api_route_budget_requests_per_minute",
            &[("source", "rocketchat"), ("endpoint", endpoint)],
        )
    };
    let mut setup = fast_setup(&sim);
    setup.section.as_object_mut().unwrap().remove("requests_per_minute_per_route");
    let mut exp = TestExporter::start(setup).await;
    exp.poller.poll_once().await.unwrap();
    // Ten a minute on the rooms route would hold the eleventh poll for a minute.
    tokio::time::timeout(Duration::from_secs(30), exp.follow(&sim.state, 20, 5))
        .await
        .expect("twenty polls within a minute: the server's 300 is followed, not the default 10");
    let samples = exp.scrape().await;
    for endpoint in ["rooms", "inquiries", "users_agent"] {
        assert_eq!(route_budget(&samples, endpoint), Some(300.0), "{endpoint}");
    }
    assert!(sim.state.requests().iter().all(|r| r.status != 429), "no 429 was earned");
    assert_samples_eq(&chat_samples(&samples), &truth_samples(&sim.state.truth()), "polled at the server's limit");

    let mut lower = fast_setup(&sim);
    lower.set("requests_per_minute_per_route", 5);
    let mut exp = TestExporter::start(lower).await;
    exp.poller.poll_once().await.unwrap();
    assert_eq!(route_budget(&exp.scrape().await, "rooms"), Some(5.0), "the lower explicit key wins");
}
