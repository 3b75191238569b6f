//! Turns observations into counters and gauges, once and only once.
//!
//! Polling sees states, not events, and sees the same conversation many times (overlap
//! windows, reconciliations, out-of-order pages). The tracker keeps, per conversation,
//! which transitions it has already counted, so a counter rises exactly once per
//! conversation and transition however often and in whatever order it is seen.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{AgentRef, ChatLabels, ChatObservation, Observations, Phase, RosterAgent};

pub const WAIT_BUCKETS: &[f64] = &[5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
pub const DURATION_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0];

/// How long a closed conversation is remembered after its last change. Older ones are
/// forgotten, and `pruned_before` remembers where: a conversation seen again after that
/// (a ticket `Stopped` today and resolved next month) began before the watermark and is
/// known to have been counted already.
pub const RECORD_RETENTION_DAYS: i64 = 7;

/// What has been counted for one conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRecord {
    pub answered: bool,
    pub finished: bool,
    pub abandoned: bool,
    pub wait_observed: bool,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last one is the +Inf bucket.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram { counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        let bucket = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Cumulative counts, one per bound, then +Inf, as the exposition format wants them.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FirstContact {
    Resolved,
    Unresolved,
}

impl FirstContact {
    pub fn label(self) -> &'static str {
        match self {
            FirstContact::Resolved => "resolved",
            FirstContact::Unresolved => "unresolved",
        }
    }
}

/// The counter and histogram values: everything that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatCounters {
    pub answered: BTreeMap<(ChatLabels, String), u64>,
    pub finished: BTreeMap<(ChatLabels, String, FirstContact), u64>,
    pub abandoned: BTreeMap<ChatLabels, u64>,
    pub wait: BTreeMap<ChatLabels, Histogram>,
    pub duration: BTreeMap<ChatLabels, Histogram>,
}

/// Agent status as far as the platform tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentStatus {
    /// Has at least one conversation in attendance.
    Attending,
    /// On the roster, with no conversation in attendance (presence unknown).
    NotAttending,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 2] = [AgentStatus::Attending, AgentStatus::NotAttending];
    pub fn label(self) -> &'static str {
        match self {
            AgentStatus::Attending => "attending",
            AgentStatus::NotAttending => "not_attending",
        }
    }
}

/// Gauge values computed from the open conversations and the roster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatGauges {
    pub waiting: BTreeMap<ChatLabels, u64>,
    pub waiting_oldest: BTreeMap<ChatLabels, DateTime<Utc>>,
    pub active: BTreeMap<(ChatLabels, String), u64>,
    /// (app, group, agent) -> status; present only once a roster is known.
    pub agent_status: BTreeMap<(String, String, String), AgentStatus>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    pub(crate) records: HashMap<u64, ChatRecord>,
    pub(crate) open: HashMap<u64, OpenChat>,
    pub(crate) roster: Option<Vec<RosterAgent>>,
    pub(crate) history_until: Option<DateTime<Utc>>,
    /// Closed conversations last changed before this instant have been forgotten.
    pub(crate) pruned_before: Option<DateTime<Utc>>,
    pub(crate) counters: ChatCounters,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counters(&self) -> &ChatCounters {
        &self.counters
    }

    pub fn open_chats(&self) -> usize {
        self.open.len()
    }

    pub fn apply(&mut self, obs: &Observations) {
        if let Some(until) = obs.history_until {
            self.history_until = Some(until);
        }
        for chat in &obs.chats {
            self.observe(chat);
        }
        if let Some(complete_at) = obs.open_set_complete_at {
            let seen: std::collections::HashSet<u64> =
                obs.chats.iter().filter(|c| c.phase.is_open()).map(|c| c.id).collect();
            self.open.retain(|id, chat| seen.contains(id) || chat.last_update > complete_at);
        }
        if let Some(roster) = &obs.roster {
            self.roster = Some(roster.clone());
        }
        self.prune();
    }

    fn observe(&mut self, chat: &ChatObservation) {
        let known = self.records.contains_key(&chat.id);
        let record = self.records.entry(chat.id).or_default();
        if record.last_update.is_some_and(|seen| chat.last_update < seen) {
            // An older state than one already applied (out-of-order pages or overlap):
            // everything it could teach has been learnt already.
            return;
        }
        record.last_update = Some(chat.last_update);
        // History is what happened before the exporter started. The first poll lists every
        // open conversation, so one first seen later that began before the start had
        // already ended by then: a later change to it (a pending ticket resolved, a
        // resolved one closed) is not a new transition.
        // Likewise, one first seen that began before the pruning watermark was counted
        // and forgotten.
        let began_before_known = |since: DateTime<Utc>| {
            self.history_until.is_some_and(|until| since <= until) || self.pruned_before.is_some_and(|p| since < p)
        };
        let is_history = self.history_until.is_some_and(|until| chat.last_update <= until)
            || (!known && chat.waiting_since.is_some_and(began_before_known));
        let counters = &mut self.counters;
        let agent_name = chat.agent.as_ref().map(|a| a.name.clone());

        let attended = matches!(chat.phase, Phase::Attending | Phase::Finished { .. } | Phase::Cancelled);
        if attended && chat.agent.is_some() && !record.answered {
            record.answered = true;
            if !is_history {
                *counters.answered.entry((chat.labels.clone(), agent_name.clone().unwrap_or_default())).or_default() +=
                    1;
            }
        }
        if record.answered && !record.wait_observed {
            if let Some(wait) = chat.wait_seconds {
                record.wait_observed = true;
                if !is_history {
                    counters
                        .wait
                        .entry(chat.labels.clone())
                        .or_insert_with(|| Histogram::new(WAIT_BUCKETS))
                        .observe(WAIT_BUCKETS, wait);
                }
            }
        }
        if let Phase::Finished { resolved_first_contact } = chat.phase {
            if record.answered && !record.finished {
                record.finished = true;
                if !is_history {
                    let first_contact =
                        if resolved_first_contact { FirstContact::Resolved } else { FirstContact::Unresolved };
                    *counters
                        .finished
                        .entry((chat.labels.clone(), agent_name.clone().unwrap_or_default(), first_contact))
                        .or_default() += 1;
                }
            }
            if record.finished && !record.duration_observed {
                if let Some(talk) = chat.talk_seconds {
                    record.duration_observed = true;
                    if !is_history {
                        counters
                            .duration
                            .entry(chat.labels.clone())
                            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
                            .observe(DURATION_BUCKETS, talk);
                    }
                }
            }
        }
        if chat.phase == Phase::Abandoned && !record.answered && !record.abandoned {
            record.abandoned = true;
            if !is_history {
                *counters.abandoned.entry(chat.labels.clone()).or_default() += 1;
            }
        }

        if chat.phase.is_open() {
            self.open.insert(
                chat.id,
                OpenChat {
                    labels: chat.labels.clone(),
                    agent: chat.agent.clone(),
                    attending: chat.phase == Phase::Attending,
                    waiting_since: chat.waiting_since,
                    last_update: chat.last_update,
                },
            );
        } else {
            self.open.remove(&chat.id);
        }
    }

    /// Forgets closed conversations too old to be seen again, so memory follows the
    /// platform's window rather than the whole history.
    fn prune(&mut self) {
        let Some(newest) = self.records.values().filter_map(|r| r.last_update).max() else { return };
        let horizon = newest - chrono::Duration::days(RECORD_RETENTION_DAYS);
        let open = &self.open;
        let before = self.records.len();
        self.records.retain(|id, r| open.contains_key(id) || r.last_update.is_none_or(|t| t >= horizon));
        if self.records.len() < before {
            self.pruned_before = Some(self.pruned_before.map_or(horizon, |p| p.max(horizon)));
        }
    }

    pub fn gauges(&self) -> ChatGauges {
        let mut g = ChatGauges::default();
        let mut attending_agents: std::collections::HashSet<&str> = Default::default();
        for chat in self.open.values() {
            if chat.attending {
                let agent = chat.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
                *g.active.entry((chat.labels.clone(), agent)).or_default() += 1;
                if let Some(a) = &chat.agent {
                    attending_agents.insert(a.id.as_str());
                }
            } else {
                *g.waiting.entry(chat.labels.clone()).or_default() += 1;
                if let Some(since) = chat.waiting_since {
                    g.waiting_oldest.entry(chat.labels.clone()).and_modify(|t| *t = (*t).min(since)).or_insert(since);
                }
            }
        }
        if let Some(roster) = &self.roster {
            for member in roster {
                let status = if attending_agents.contains(member.agent.id.as_str()) {
                    AgentStatus::Attending
                } else {
                    AgentStatus::NotAttending
                };
                let apps: Vec<&str> =
                    if member.apps.is_empty() { vec![""] } else { member.apps.iter().map(String::as_str).collect() };
                let groups: Vec<&str> = if member.groups.is_empty() {
                    vec![""]
                } else {
                    member.groups.iter().map(String::as_str).collect()
                };
                for app in &apps {
                    for group in &groups {
                        g.agent_status.insert((app.to_string(), group.to_string(), member.agent.name.clone()), status);
                    }
                }
            }
        }
        g
    }
}

/// The tracker as written to the state file: everything needed to go on counting
/// exactly once after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrackerState {
    /// (id, counted transitions as bits, last update in Unix milliseconds)
    pub records: Vec<(u64, u8, Option<i64>)>,
    pub open: Vec<(u64, OpenChat)>,
    pub roster: Option<Vec<RosterAgent>>,
    pub history_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub pruned_before: Option<DateTime<Utc>>,
    pub answered: Vec<(ChatLabels, String, u64)>,
    pub finished: Vec<(ChatLabels, String, FirstContact, u64)>,
    pub abandoned: Vec<(ChatLabels, u64)>,
    pub wait: Vec<(ChatLabels, Histogram)>,
    pub duration: Vec<(ChatLabels, Histogram)>,
}

const ANSWERED: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 4;
const WAIT_OBSERVED: u8 = 8;
const DURATION_OBSERVED: u8 = 16;

impl Tracker {
    pub fn to_state(&self) -> TrackerState {
        let mut records: Vec<(u64, u8, Option<i64>)> = self
            .records
            .iter()
            .map(|(id, r)| {
                let bits = (u8::from(r.answered) * ANSWERED)
                    | (u8::from(r.finished) * FINISHED)
                    | (u8::from(r.abandoned) * ABANDONED)
                    | (u8::from(r.wait_observed) * WAIT_OBSERVED)
                    | (u8::from(r.duration_observed) * DURATION_OBSERVED);
                (*id, bits, r.last_update.map(|t| t.timestamp_millis()))
            })
            .collect();
        records.sort_unstable_by_key(|r| r.0);
        let mut open: Vec<(u64, OpenChat)> = self.open.iter().map(|(id, c)| (*id, c.clone())).collect();
        open.sort_unstable_by_key(|o| o.0);
        let c = &self.counters;
        TrackerState {
            records,
            open,
            roster: self.roster.clone(),
            history_until: self.history_until,
            pruned_before: self.pruned_before,
            answered: c.answered.iter().map(|((l, a), v)| (l.clone(), a.clone(), *v)).collect(),
            finished: c.finished.iter().map(|((l, a, f), v)| (l.clone(), a.clone(), *f, *v)).collect(),
            abandoned: c.abandoned.iter().map(|(l, v)| (l.clone(), *v)).collect(),
            wait: c.wait.iter().map(|(l, h)| (l.clone(), h.clone())).collect(),
            duration: c.duration.iter().map(|(l, h)| (l.clone(), h.clone())).collect(),
        }
    }

    pub fn from_state(state: TrackerState) -> Result<Self, String> {
        for (what, bounds, hs) in [("wait", WAIT_BUCKETS, &state.wait), ("duration", DURATION_BUCKETS, &state.duration)]
        {
            for (labels, h) in hs {
                let consistent = h.counts.len() == bounds.len() + 1 && h.counts.iter().sum::<u64>() == h.count;
                if !consistent {
                    return Err(format!("{what} histogram {labels:?} does not match the bucket layout"));
                }
            }
        }
        let mut records = HashMap::with_capacity(state.records.len());
        for (id, bits, last) in state.records {
            let last_update = match last {
                Some(ms) => Some(DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("record {id}: bad time"))?),
                None => None,
            };
            records.insert(
                id,
                ChatRecord {
                    answered: bits & ANSWERED != 0,
                    finished: bits & FINISHED != 0,
                    abandoned: bits & ABANDONED != 0,
                    wait_observed: bits & WAIT_OBSERVED != 0,
                    duration_observed: bits & DURATION_OBSERVED != 0,
                    last_update,
                },
            );
        }
        Ok(Tracker {
            records,
            open: state.open.into_iter().collect(),
            roster: state.roster,
            history_until: state.history_until,
            pruned_before: state.pruned_before,
            counters: ChatCounters {
                answered: state.answered.into_iter().map(|(l, a, v)| ((l, a), v)).collect(),
                finished: state.finished.into_iter().map(|(l, a, f, v)| ((l, a, f), v)).collect(),
                abandoned: state.abandoned.into_iter().collect(),
                wait: state.wait.into_iter().collect(),
                duration: state.duration.into_iter().collect(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRef, ChatLabels, ChatObservation, Observations, Phase};

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + minute * 60, 0).unwrap()
    }

    fn chat(phase: Phase, minute: i64) -> ChatObservation {
        let attended = !matches!(phase, Phase::Waiting | Phase::Abandoned);
        ChatObservation {
            id: 42,
            labels: ChatLabels { app: "A".into(), group: "G".into(), origin: "chat".into() },
            agent: attended.then(|| AgentRef { id: "1".into(), name: "Ana".into() }),
            phase,
            waiting_since: Some(at(0)),
            wait_seconds: attended.then_some(30.0),
            talk_seconds: matches!(phase, Phase::Finished { .. }).then_some(300.0),
            last_update: at(minute),
        }
    }

    fn apply(t: &mut Tracker, chats: Vec<ChatObservation>) {
        t.apply(&Observations { chats, ..Default::default() });
    }

    fn totals(t: &Tracker) -> (u64, u64, u64, u64, u64) {
        let c = t.counters();
        (
            c.answered.values().sum(),
            c.finished.values().sum(),
            c.abandoned.values().sum(),
            c.wait.values().map(|h| h.count).sum(),
            c.duration.values().map(|h| h.count).sum(),
        )
    }

    #[test]
    fn each_transition_counts_once_however_often_and_in_whatever_order_it_is_seen() {
        let mut t = Tracker::new();
        let states = [
            chat(Phase::Waiting, 1),
            chat(Phase::Attending, 2),
            chat(Phase::Finished { resolved_first_contact: true }, 9),
        ];
        // Newest first, then every state again, twice.
        apply(&mut t, vec![states[2].clone(), states[0].clone(), states[1].clone()]);
        apply(&mut t, states.to_vec());
        apply(&mut t, states.to_vec());
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
        assert_eq!(t.open_chats(), 0, "an older state never reopens a finished chat");
    }

    #[test]
    fn a_chat_seen_only_at_its_end_was_still_answered_and_finished() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Finished { resolved_first_contact: false }, 5)]);
        assert_eq!(totals(&t), (1, 1, 0, 1, 1));
        let key = (
            ChatLabels { app: "A".into(), group: "G".into(), origin: "chat".into() },
            "Ana".to_string(),
            FirstContact::Unresolved,
        );
        assert_eq!(t.counters().finished.get(&key), Some(&1));
    }

    #[test]
    fn abandonment_is_counted_only_for_chats_never_attended() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Waiting, 1), chat(Phase::Abandoned, 4)]);
        apply(&mut t, vec![chat(Phase::Abandoned, 4)]);
        assert_eq!(totals(&t), (0, 0, 1, 0, 0));
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 2), chat(Phase::Cancelled, 5)]);
        assert_eq!(totals(&t), (1, 0, 0, 1, 0), "cancelled after attendance: answered, neither finished nor abandoned");
    }

    #[test]
    fn history_is_recorded_but_not_counted() {
        let mut t = Tracker::new();
        t.apply(&Observations {
            chats: vec![chat(Phase::Attending, 2)],
            history_until: Some(at(3)),
            ..Default::default()
        });
        apply(&mut t, vec![chat(Phase::Finished { resolved_first_contact: true }, 6)]);
        assert_eq!(totals(&t), (0, 1, 0, 0, 1), "answered before the start, finished after it");
    }

    #[test]
    fn the_state_round_trips() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 2)]);
        let restored = Tracker::from_state(t.to_state()).unwrap();
        assert_eq!(restored.to_state(), t.to_state());
        let mut broken = t.to_state();
        broken.wait[0].1.counts.pop();
        assert!(Tracker::from_state(broken).is_err());
    }
}
