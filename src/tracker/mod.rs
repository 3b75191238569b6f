//! The tracker: turns observations into counters and gauges, once and only once.
//! May import `model` only (and std, serde, chrono); `export` and `saved` are its own.
//!
//! Polling sees states, not events, and sees the same conversation many times (overlap
//! windows, reconciliations, out-of-order pages). The tracker keeps, per conversation,
//! which transitions it has already counted, so a counter rises exactly once per
//! conversation and transition however often and in whatever order it is seen.
//!
//! This file counts ([`Tracker::apply`]); [`export`] holds what is exported (the gauges,
//! the counters with their zero series), [`saved`] what the state file keeps.

pub mod export;
pub mod saved;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    AgentRef, ChatId, ChatLabels, ChatObservation, FirstContact, Observations, Phase, RosterAgent, Timings,
};
use export::{ChatCounters, Histogram, SeenSeries, DURATION_BUCKETS, WAIT_BUCKETS};
use saved::Unsaved;

/// How long a closed conversation is remembered after its last change. Older ones are
/// forgotten, and `pruned_before` remembers where: a conversation seen again after that
/// (a ticket `Stopped` today and resolved next month) began before the watermark and is
/// known to have been counted already.
pub const RECORD_RETENTION_DAYS: i64 = 7;

/// How long a label set stays exported after it was last seen, unless configured
/// otherwise (`series_retention`).
pub const DEFAULT_SERIES_RETENTION_DAYS: i64 = 7;

/// What has been counted for one conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRecord {
    pub answered: bool,
    pub wait_observed: bool,
    /// Ends counted (finished, abandoned or cancelled), over every reopening.
    pub ends: u32,
    /// The conversation is over and its end has been counted; seen live again, it has
    /// been reopened and its next end counts again.
    pub ended: bool,
    pub duration_observed: bool,
    pub last_update: Option<DateTime<Utc>>,
}

/// A conversation waiting or in attendance now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenChat {
    pub labels: ChatLabels,
    pub agent: Option<AgentRef>,
    pub attending: bool,
    pub waiting_since: Option<DateTime<Utc>>,
    pub last_update: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    records: HashMap<ChatId, ChatRecord>,
    open: HashMap<ChatId, OpenChat>,
    roster: Option<Vec<RosterAgent>>,
    history_until: Option<DateTime<Utc>>,
    /// Closed conversations last changed before this instant have been forgotten.
    pruned_before: Option<DateTime<Utc>>,
    counters: ChatCounters,
    seen: SeenSeries,
    /// The platform's clock at the last poll that told it.
    platform_now: Option<DateTime<Utc>>,
    series_retention: Option<chrono::Duration>,
    /// The times the source's records carry: their histograms are exported from the start.
    timings: Timings,
    /// The platform's clock when the seen series were last given to the state file
    /// (`None`: never given).
    seen_saved_at: Option<Option<DateTime<Utc>>>,
    /// What changed since the last [`Tracker::take_changes`]: the state file saves only that.
    unsaved: Unsaved,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a label set stays exported after it was last seen.
    pub fn set_series_retention(&mut self, retention: std::time::Duration) {
        self.series_retention = chrono::Duration::from_std(retention).ok();
    }

    /// Which times the source's records carry (see [`Timings`]).
    pub fn set_timings(&mut self, timings: Timings) {
        self.timings = timings;
    }

    fn series_retention(&self) -> chrono::Duration {
        self.series_retention.unwrap_or(chrono::Duration::days(DEFAULT_SERIES_RETENTION_DAYS))
    }

    pub fn seen(&self) -> &SeenSeries {
        &self.seen
    }

    pub fn counters(&self) -> &ChatCounters {
        &self.counters
    }

    pub fn open_chats(&self) -> usize {
        self.open.len()
    }

    /// The platform's clock at the last poll that told it (as saved, after a restart).
    pub fn platform_now(&self) -> Option<DateTime<Utc>> {
        self.platform_now
    }

    /// Agents on the roster, once it has been read.
    pub fn roster_len(&self) -> usize {
        self.roster.as_ref().map_or(0, Vec::len)
    }

    pub fn apply(&mut self, obs: &Observations) {
        let seen_before = self.seen.len();
        // The poll that sets the start lists the conversations live then: the baseline.
        let baseline = obs.history_until.is_some();
        if let Some(until) = obs.history_until {
            self.unsaved.marks |= self.history_until != Some(until);
            self.history_until = Some(until);
        }
        if obs.platform_time.is_some() {
            self.platform_now = obs.platform_time;
        }
        for chat in &obs.chats {
            self.observe(chat, baseline);
        }
        if let Some(complete_at) = obs.open_set_complete_at {
            let live_now = obs.chats.iter().filter(|c| c.phase.is_live()).map(|c| &c.id);
            let seen: HashSet<&ChatId> = live_now.chain(&obs.listed_live).collect();
            let unsaved = &mut self.unsaved.open;
            self.open.retain(|id, chat| {
                let keep = seen.contains(id) || chat.last_update > complete_at;
                if !keep {
                    unsaved.insert(id.clone());
                }
                keep
            });
        }
        if let Some(roster) = &obs.roster {
            if self.roster.as_ref() != Some(roster) {
                self.roster = Some(roster.clone());
                self.unsaved.roster = true;
            }
        }
        self.mark_roster(obs.chats.last().map(|c| c.last_update));
        if let Some(now) = obs.platform_time {
            self.prune(now);
            self.seen.retain_since(now - self.series_retention());
        }
        self.unsaved.seen |= self.seen.len() != seen_before;
    }

    /// The instant a sighting is dated: the platform's clock, or (for a source that does
    /// not tell it) the conversation's own time.
    fn sighting_time(&self, fallback: DateTime<Utc>) -> DateTime<Utc> {
        self.platform_now.unwrap_or(fallback)
    }

    /// Marks the roster's teams as seen now.
    fn mark_roster(&mut self, fallback: Option<DateTime<Utc>>) {
        let Some(now) = self.platform_now.or(fallback) else { return };
        for member in self.roster.iter().flatten() {
            let with_presence = member.presence.is_some();
            for (app, group) in member_teams(member) {
                self.seen.teams.insert((app.to_string(), group.to_string()), (now, with_presence));
            }
        }
    }

    fn observe(&mut self, chat: &ChatObservation, baseline: bool) {
        let known = self.records.contains_key(&chat.id);
        // History is what happened before the exporter started. The first poll lists every
        // live conversation (the baseline), so one first seen later that began before the
        // start was over by then: what it did before is not new, and if it is live again it
        // was reopened. Likewise, one first seen that began before the pruning watermark
        // was counted and forgotten.
        let began_before_known = |since: DateTime<Utc>| {
            self.history_until.is_some_and(|until| since <= until) || self.pruned_before.is_some_and(|p| since < p)
        };
        let ended_before_start = !baseline && !known && chat.waiting_since.is_some_and(began_before_known);
        // A chat already known from a poll after the start changes after the start,
        // whatever its stamp says: a platform may stamp a change earlier than the one
        // already seen (another clock).
        let stamped_before_start =
            (baseline || !known) && self.history_until.is_some_and(|until| chat.last_update <= until);
        let is_history = stamped_before_start || ended_before_start;
        let seen_at = self.sighting_time(chat.last_update);
        let seen = &mut self.seen;
        let record = self.records.entry(chat.id.clone()).or_default();
        let record_before = record.clone();
        let unsaved = &mut self.unsaved;
        if ended_before_start {
            // Its end is not ours to count, and a reopening ends unresolved.
            record.ended = true;
            record.ends = 1;
        }
        // Observations arrive in the order the platform answered (see
        // `Observations::observe`), so the newest state is the last one applied, whatever
        // timestamp the platform wrote on it.
        record.last_update = Some(chat.last_update);
        let counters = &mut self.counters;
        let agent_name = || chat.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();

        if chat.phase.is_live() && record.ended {
            record.ended = false;
            record.duration_observed = false;
        }
        if chat.answered && !record.answered {
            record.answered = true;
            if !is_history {
                let key = match &chat.answered_as {
                    Some((labels, agent)) => {
                        (labels.clone(), agent.as_ref().map(|a| a.name.clone()).unwrap_or_default())
                    }
                    None => (chat.labels.clone(), agent_name()),
                };
                seen.chats.insert(key.0.clone(), seen_at);
                seen.attendances.insert(key.clone(), seen_at);
                *counters.answered.entry(key.clone()).or_default() += 1;
                unsaved.answered.insert(key);
            }
        }
        if record.answered && !record.wait_observed {
            if let Some(wait) = chat.wait_seconds {
                record.wait_observed = true;
                if !is_history {
                    seen.chats.insert(chat.labels.clone(), seen_at);
                    counters
                        .wait
                        .entry(chat.labels.clone())
                        .or_insert_with(|| Histogram::new(WAIT_BUCKETS))
                        .observe(WAIT_BUCKETS, wait);
                    unsaved.wait.insert(chat.labels.clone());
                }
            }
        }
        let ends = matches!(chat.phase, Phase::Finished { .. } | Phase::Abandoned | Phase::Cancelled | Phase::Deleted);
        if ends && !record.ended {
            let reopened = record.ends > 0;
            record.ended = true;
            record.ends = record.ends.saturating_add(1);
            match chat.phase {
                Phase::Finished { first_contact } if record.answered && !is_history => {
                    let first_contact = first_contact.unwrap_or(if reopened {
                        FirstContact::Unresolved
                    } else {
                        FirstContact::Resolved
                    });
                    seen.chats.insert(chat.labels.clone(), seen_at);
                    seen.attendances.insert((chat.labels.clone(), agent_name()), seen_at);
                    let key = (chat.labels.clone(), agent_name(), first_contact);
                    *counters.finished.entry(key.clone()).or_default() += 1;
                    unsaved.finished.insert(key);
                }
                Phase::Abandoned if !record.answered && !is_history => {
                    seen.chats.insert(chat.labels.clone(), seen_at);
                    *counters.abandoned.entry(chat.labels.clone()).or_default() += 1;
                    unsaved.abandoned.insert(chat.labels.clone());
                }
                _ => {}
            }
        }
        if matches!(chat.phase, Phase::Finished { .. }) && record.answered && !record.duration_observed {
            if let Some(talk) = chat.talk_seconds {
                record.duration_observed = true;
                if !is_history {
                    seen.chats.insert(chat.labels.clone(), seen_at);
                    counters
                        .duration
                        .entry(chat.labels.clone())
                        .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
                        .observe(DURATION_BUCKETS, talk);
                    unsaved.duration.insert(chat.labels.clone());
                }
            }
        }
        if *record != record_before {
            unsaved.records.insert(chat.id.clone());
        }

        if chat.phase.is_open() {
            let open = OpenChat {
                labels: chat.labels.clone(),
                agent: chat.agent.clone(),
                attending: chat.phase == Phase::Attending,
                waiting_since: chat.waiting_since,
                last_update: chat.last_update,
            };
            // Seen again as it was (an overlap window, a reconciliation): nothing to save.
            if self.open.get(&chat.id) != Some(&open) {
                self.open.insert(chat.id.clone(), open);
                unsaved.open.insert(chat.id.clone());
            }
        } else if self.open.remove(&chat.id).is_some() {
            unsaved.open.insert(chat.id.clone());
        }
    }

    /// Forgets closed conversations too old to be seen again, so memory follows the
    /// platform's window rather than the whole history. `now` is the platform's clock,
    /// never a time a record claims: one record from the future cannot make the tracker
    /// forget the others.
    fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - chrono::Duration::days(RECORD_RETENTION_DAYS);
        if self.pruned_before.is_some_and(|p| p >= horizon) {
            return;
        }
        let open = &self.open;
        let before = self.records.len();
        let unsaved = &mut self.unsaved;
        self.records.retain(|id, r| {
            let keep = open.contains_key(id) || r.last_update.is_none_or(|t| t >= horizon);
            if !keep {
                unsaved.records.insert(id.clone());
            }
            keep
        });
        if self.records.len() < before {
            self.pruned_before = Some(self.pruned_before.map_or(horizon, |p| p.max(horizon)));
            self.unsaved.marks = true;
        }
    }
}

/// The (app, group) pairs a roster member is listed under; an empty list is the
/// empty label.
fn member_teams(member: &RosterAgent) -> impl Iterator<Item = (&str, &str)> {
    let apps: Vec<&str> =
        if member.apps.is_empty() { vec![""] } else { member.apps.iter().map(String::as_str).collect() };
    let groups: Vec<&str> =
        if member.groups.is_empty() { vec![""] } else { member.groups.iter().map(String::as_str).collect() };
    apps.into_iter().flat_map(move |app| groups.clone().into_iter().map(move |group| (app, group)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRef, ChatLabels, ChatObservation, Observations, Phase};

    pub(super) fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + minute * 60, 0).unwrap()
    }

    pub(super) fn labels() -> ChatLabels {
        ChatLabels { app: "A".into(), group: "G".into(), origin: "chat".into() }
    }

    pub(super) fn chat(phase: Phase, minute: i64) -> ChatObservation {
        let attended = !matches!(phase, Phase::Waiting | Phase::Abandoned);
        ChatObservation {
            id: ChatId("42".into()),
            labels: labels(),
            agent: attended.then(|| AgentRef { id: "1".into(), name: "Ana".into() }),
            phase,
            answered: attended,
            answered_as: None,
            waiting_since: Some(at(0)),
            wait_seconds: attended.then_some(30.0),
            talk_seconds: matches!(phase, Phase::Finished { .. }).then_some(300.0),
            last_update: at(minute),
        }
    }

    pub(super) fn finished(first_contact: Option<FirstContact>, minute: i64) -> ChatObservation {
        chat(Phase::Finished { first_contact }, minute)
    }

    pub(super) fn apply(t: &mut Tracker, chats: Vec<ChatObservation>) {
        for chat in chats {
            t.apply(&Observations::from_chats([chat]));
        }
    }

    pub(super) fn totals(t: &Tracker) -> (u64, u64, u64, u64, u64) {
        let c = t.counters();
        (
            c.answered.values().sum(),
            c.finished.values().sum(),
            c.abandoned.values().sum(),
            c.wait.values().map(|h| h.count).sum(),
            c.duration.values().map(|h| h.count).sum(),
        )
    }

    fn finished_with(t: &Tracker, first_contact: FirstContact) -> u64 {
        t.counters().finished.get(&(labels(), "Ana".to_string(), first_contact)).copied().unwrap_or(0)
    }

    pub(super) fn poll_at(minute: i64, chats: Vec<ChatObservation>) -> Observations {
        let mut obs = Observations::from_chats(chats);
        obs.platform_time = Some(at(minute));
        obs
    }

    #[test]
    fn each_transition_counts_once_however_often_it_is_seen() {
        let mut t = Tracker::new();
        let states = [chat(Phase::Waiting, 1), chat(Phase::Attending, 2), finished(None, 9)];
        apply(&mut t, states.to_vec());
        apply(&mut t, vec![states[2].clone(), states[2].clone()]);
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
        assert_eq!(t.open_chats(), 0);
    }

    #[test]
    fn of_two_answers_in_one_poll_the_one_read_last_wins() {
        let mut t = Tracker::new();
        // Read attending first, then finished: the later answer is the newer state.
        let obs = Observations::from_chats([chat(Phase::Attending, 2), finished(None, 9)]);
        assert_eq!(obs.chats.len(), 1);
        t.apply(&obs);
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
        assert_eq!(t.open_chats(), 0);
    }

    #[test]
    fn a_change_stamped_earlier_than_one_already_seen_still_counts() {
        let mut t = Tracker::new();
        // The platform's clocks disagree: the answer is stamped before the arrival.
        apply(&mut t, vec![chat(Phase::Waiting, 5), chat(Phase::Attending, 3)]);
        assert_eq!(totals(&t), (1, 0, 0, 1, 0));
        assert_eq!(t.gauges().active.values().sum::<u64>(), 1);
    }

    #[test]
    fn a_change_to_a_chat_seen_live_at_the_start_counts_even_stamped_before_the_start() {
        let mut t = Tracker::new();
        let mut baseline = Observations::from_chats([chat(Phase::Waiting, 1)]);
        baseline.history_until = Some(at(5));
        t.apply(&baseline);
        assert_eq!(totals(&t), (0, 0, 0, 0, 0), "the baseline is not counted");
        // Answered after the start (it was waiting then), stamped before it.
        t.apply(&Observations::from_chats([chat(Phase::Attending, 4)]));
        assert_eq!(totals(&t), (1, 0, 0, 1, 0));
        // A chat first seen now, stamped before the start, is still history.
        let mut old = chat(Phase::Attending, 2);
        old.id = ChatId("old".into());
        t.apply(&Observations::from_chats([old]));
        assert_eq!(totals(&t), (1, 0, 0, 1, 0));
    }

    #[test]
    fn a_chat_seen_only_at_its_end_was_still_answered_and_finished() {
        let mut t = Tracker::new();
        apply(&mut t, vec![finished(Some(FirstContact::Unresolved), 5)]);
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
        assert_eq!(finished_with(&t, FirstContact::Unresolved), 1);
    }

    #[test]
    fn the_platforms_verdict_decides_first_contact_and_the_neutral_rule_applies_without_one() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 1), finished(None, 2)]);
        assert_eq!(finished_with(&t, FirstContact::Resolved), 1, "a first end is resolved at the first contact");
        apply(&mut t, vec![chat(Phase::Attending, 3), finished(None, 4)]);
        assert_eq!(finished_with(&t, FirstContact::Unresolved), 1, "an end after a reopening is not");
        apply(&mut t, vec![chat(Phase::Attending, 5), finished(Some(FirstContact::Resolved), 6)]);
        assert_eq!(finished_with(&t, FirstContact::Resolved), 2, "the platform's verdict wins");
        assert_eq!(totals(&t), (1, 3, 0, 1, 3), "answered once, finished at each end");
    }

    #[test]
    fn abandonment_is_counted_only_for_chats_never_attended() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Waiting, 1), chat(Phase::Abandoned, 4), chat(Phase::Abandoned, 4)]);
        assert_eq!(totals(&t), (0, 0, 1, 0, 0));
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 2), chat(Phase::Cancelled, 5)]);
        assert_eq!(totals(&t), (1, 0, 0, 1, 0), "cancelled after attendance: answered, neither finished nor abandoned");
    }

    #[test]
    fn parked_conversations_leave_the_gauges_and_their_next_end_counts() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 1), chat(Phase::Parked, 2)]);
        assert_eq!(t.open_chats(), 0);
        apply(&mut t, vec![finished(None, 3)]);
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
    }

    #[test]
    fn history_is_recorded_but_not_counted() {
        let mut t = Tracker::new();
        let mut obs = Observations::from_chats([chat(Phase::Attending, 2)]);
        obs.history_until = Some(at(3));
        t.apply(&obs);
        apply(&mut t, vec![finished(None, 6)]);
        assert_eq!(totals(&t), (0, 1, 0, 0, 1), "answered before the start, finished after it");
    }

    #[test]
    fn a_conversation_over_before_the_start_and_reopened_after_it_ends_unresolved() {
        let mut t = Tracker::new();
        let mut obs = Observations::default();
        obs.history_until = Some(at(3));
        t.apply(&obs);
        apply(&mut t, vec![chat(Phase::Attending, 10), finished(None, 12)]);
        assert_eq!(totals(&t), (0, 1, 0, 0, 1));
        assert_eq!(finished_with(&t, FirstContact::Unresolved), 1);
    }

    #[test]
    fn a_record_from_the_future_does_not_make_the_tracker_forget() {
        let mut t = Tracker::new();
        let mut future = chat(Phase::Waiting, 0);
        future.id = ChatId("future".into());
        future.last_update = DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z").unwrap().to_utc();
        let mut obs = Observations::from_chats([future, finished(None, 9)]);
        obs.platform_time = Some(at(10));
        t.apply(&obs);
        let mut obs = Observations::default();
        obs.platform_time = Some(at(11));
        t.apply(&obs);
        assert!(t.pruned_before.is_none(), "nothing is old enough to forget");
        apply(&mut t, vec![finished(None, 9)]);
        assert_eq!(totals(&t).1, 1);
    }
}
