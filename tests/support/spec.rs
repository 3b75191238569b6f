//! The exact-truth specification every platform meets: the exporter, polling the
//! platform's simulated API over real HTTP, reports exactly what happened in the
//! simulated contact centre, by that platform's contract.

use chat_exporter::simulator::{Scenario, SimOptions};

use super::*;

/// A whole simulated day, polled every simulated minute: every chat metric equals the
/// simulator's ground truth, exactly, every simulated hour. Returns the final truth.
pub async fn a_whole_day_matches_ground_truth_every_hour(platform: &str, seed: u64) -> Truth {
    let sim = start_simulator(manual_sim_of(platform, seed)).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.expect("first poll, at the start of the day");
    for hour in 1..=24 {
        exp.follow(&sim.state, 60, 60).await;
        let truth = truth_samples(&sim.state.truth());
        assert_samples_eq(
            &chat_samples(&exp.scrape().await),
            &truth,
            &format!("{platform}, after {hour} simulated hours"),
        );
    }
    let truth = sim.state.truth();
    // The day was not trivially empty: every counter and gauge family carries data.
    for family in [
        "chat_conversations_answered_total",
        "chat_conversations_finished_total",
        "chat_conversations_abandoned_total",
        "chat_agent_status",
        "chat_agents",
    ] {
        assert!(
            truth.samples.iter().any(|s| s.name == family && s.value > 0.0),
            "{family} is empty in the simulated day"
        );
    }
    let answered: f64 =
        truth.samples.iter().filter(|s| s.name == "chat_conversations_answered_total").map(|s| s.value).sum();
    assert!(answered > 300.0, "a day should see hundreds of chats, saw {answered}");
    truth
}

/// Gauges (queue, in attendance, oldest wait, agents) are right at any moment, not only
/// at the end of a day: checked after every poll through the peak scenario.
pub async fn gauges_match_after_every_poll(platform: &str, seed: u64) {
    let sim = start_simulator(SimOptions { scenario: Scenario::Peak, ..manual_sim_of(platform, seed) }).await;
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    let mut saw_queue = false;
    for minute in 1..=120 {
        exp.follow(&sim.state, 1, 60).await;
        let truth = truth_samples(&sim.state.truth());
        assert_samples_eq(&chat_samples(&exp.scrape().await), &truth, &format!("{platform}, minute {minute}"));
        saw_queue |= truth.keys().any(|(n, _)| n == "chat_conversations_waiting");
    }
    assert!(saw_queue, "the peak scenario builds a queue");
}

/// Counting starts when the exporter starts: a day of history before it counts nothing,
/// and what happens after it counts exactly.
pub async fn counting_starts_when_the_exporter_starts(platform: &str, seed: u64) {
    let sim = start_simulator(manual_sim_of(platform, seed)).await;
    sim.state.advance(11 * 3600);
    sim.state.reset_counts();
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "at the start");
    exp.follow(&sim.state, 120, 60).await;
    assert_samples_eq(&chat_samples(&exp.scrape().await), &truth_samples(&sim.state.truth()), "two hours later");
}

/// Polls far apart (every five simulated minutes): conversations that arrive, change
/// and end between two polls still count once each, by what the API shows.
pub async fn changes_between_polls_count_once(platform: &str, seed: u64) {
    let sim = start_simulator(manual_sim_of(platform, seed)).await;
    sim.state.advance(8 * 3600);
    sim.state.reset_counts();
    let mut exp = TestExporter::start(fast_setup(&sim)).await;
    exp.poller.poll_once().await.unwrap();
    for hour in 1..=8 {
        exp.follow(&sim.state, 12, 300).await;
        assert_samples_eq(
            &chat_samples(&exp.scrape().await),
            &truth_samples(&sim.state.truth()),
            &format!("{platform}, {hour} h of polls every 5 minutes"),
        );
    }
}

/// Follows the simulator for `minutes` simulated minutes, one poll a minute, checking every
/// chat metric against the truth every half hour. Returns the open conversations in the
/// bot (or pre-queue) state and on hold, summed over the minutes, so that a test can show
/// the states it is about did happen.
pub async fn follow_checking_truth(exp: &mut TestExporter, sim: &RunningSimulator, minutes: u32) -> (usize, usize) {
    use chat_exporter::simulator::world::State;
    let (mut bot, mut held) = (0, 0);
    for minute in 1..=minutes {
        exp.follow(&sim.state, 1, 60).await;
        sim.state.with_world(|w| {
            for c in w.open_conversations() {
                bot += usize::from(c.state == State::Bot);
                held += usize::from(c.state == State::Held);
            }
        });
        if minute % 30 == 0 {
            assert_samples_eq(
                &chat_samples(&exp.scrape().await),
                &truth_samples(&sim.state.truth()),
                &format!("minute {minute}"),
            );
        }
    }
    (bot, held)
}

/// From 08:00 of the simulated day, as the simulator renders it (a rendering or an
/// outage set first): an exporter started then, polling every simulated minute for
/// `hours` hours, equals the truth every hour. Returns the exporter, for more checks.
pub async fn exact_from_the_morning(sim: &RunningSimulator, hours: u32) -> TestExporter {
    sim.state.advance(8 * 3600);
    sim.state.reset_counts();
    let mut exp = TestExporter::start(fast_setup(sim)).await;
    exp.poller.poll_once().await.unwrap();
    for hour in 1..=hours {
        exp.follow(&sim.state, 60, 60).await;
        assert_samples_eq(
            &chat_samples(&exp.scrape().await),
            &truth_samples(&sim.state.truth()),
            &format!("hour {hour}"),
        );
    }
    exp
}
