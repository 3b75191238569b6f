//! What the tracker exports: the gauges, the counters with every series of a label set
//! seen within the retention, and the types the exposition encodes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{member_teams, Tracker};
use crate::model::{ChatLabels, FirstContact, Presence};

pub const WAIT_BUCKETS: &[f64] = &[5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
pub const DURATION_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0];

/// When each label set last had a counter (or histogram) rise, by the platform's clock.
/// Its series stay exported (gauges at 0 when empty, counters from 0) until that is
/// longer ago than the series retention, so an empty queue reads 0 rather than "no
/// data", and `increase()` sees a first increment. A label set waiting or in attendance
/// now is known anyway.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenSeries {
    pub chats: BTreeMap<ChatLabels, DateTime<Utc>>,
    /// (labels, agent) in attendance or counted.
    pub attendances: BTreeMap<(ChatLabels, String), DateTime<Utc>>,
    /// (app, group) of the roster, and whether its statuses are presences.
    pub teams: BTreeMap<(String, String), (DateTime<Utc>, bool)>,
}

impl SeenSeries {
    pub(super) fn len(&self) -> (usize, usize, usize) {
        (self.chats.len(), self.attendances.len(), self.teams.len())
    }

    pub(super) fn retain_since(&mut self, horizon: DateTime<Utc>) {
        self.chats.retain(|_, t| *t >= horizon);
        self.attendances.retain(|_, t| *t >= horizon);
        self.teams.retain(|_, (t, _)| *t >= horizon);
    }
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

/// The counter and histogram values: everything that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatCounters {
    pub answered: BTreeMap<(ChatLabels, String), u64>,
    pub finished: BTreeMap<(ChatLabels, String, FirstContact), u64>,
    pub abandoned: BTreeMap<ChatLabels, u64>,
    pub wait: BTreeMap<ChatLabels, Histogram>,
    pub duration: BTreeMap<ChatLabels, Histogram>,
}

/// An agent's status: its presence where the platform tells it, otherwise whether it
/// attends a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentStatus {
    Presence(Presence),
    /// Has at least one conversation in attendance (platforms without presence).
    Attending,
    /// On the roster, with no conversation in attendance (presence unknown).
    NotAttending,
}

impl AgentStatus {
    pub const WITHOUT_PRESENCE: [AgentStatus; 2] = [AgentStatus::Attending, AgentStatus::NotAttending];
    pub const WITH_PRESENCE: [AgentStatus; 4] = [
        AgentStatus::Presence(Presence::Available),
        AgentStatus::Presence(Presence::Busy),
        AgentStatus::Presence(Presence::Away),
        AgentStatus::Presence(Presence::Offline),
    ];
    pub fn label(self) -> &'static str {
        match self {
            AgentStatus::Presence(p) => p.label(),
            AgentStatus::Attending => "attending",
            AgentStatus::NotAttending => "not_attending",
        }
    }
    /// Every status of the same kind, in the order the exposition lists them.
    pub fn kind(self) -> &'static [AgentStatus] {
        match self {
            AgentStatus::Presence(_) => &Self::WITH_PRESENCE,
            _ => &Self::WITHOUT_PRESENCE,
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
    /// (app, group) seen on the roster within the retention -> whether its statuses are
    /// presences: `chat_agents` stays at 0 for a team whose agents left.
    pub teams: BTreeMap<(String, String), bool>,
}

impl Tracker {
    pub fn gauges(&self) -> ChatGauges {
        let mut g = ChatGauges::default();
        let mut attending_agents: HashSet<&str> = Default::default();
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
                let status = match member.presence {
                    Some(presence) => AgentStatus::Presence(presence),
                    None if attending_agents.contains(member.agent.id.as_str()) => AgentStatus::Attending,
                    None => AgentStatus::NotAttending,
                };
                for (app, group) in member_teams(member) {
                    g.agent_status.insert((app.to_string(), group.to_string(), member.agent.name.clone()), status);
                }
            }
        }
        // Every label set seen within the retention stays, at 0 when empty.
        for labels in self.known_chats() {
            g.waiting.entry(labels).or_insert(0);
        }
        for pair in self.known_attendances() {
            g.active.entry(pair).or_insert(0);
        }
        for ((app, group), (_, with_presence)) in &self.seen.teams {
            g.teams.insert((app.clone(), group.clone()), *with_presence);
        }
        g
    }

    /// Label sets whose series stay exported: counted within the retention, or waiting
    /// or in attendance now. (A chat seen waiting that leaves uncounted, to a bot or
    /// snoozed, does not keep its label set: nothing of it was counted.)
    fn known_chats(&self) -> BTreeSet<ChatLabels> {
        let mut chats: BTreeSet<ChatLabels> = self.seen.chats.keys().cloned().collect();
        chats.extend(self.open.values().map(|c| c.labels.clone()));
        chats
    }

    /// (labels, agent) pairs whose series stay exported: counted within the retention or
    /// in attendance now, and each roster agent with each known label set of the agent's
    /// app and group, so that an agent's first answer rises from 0.
    fn known_attendances(&self) -> BTreeSet<(ChatLabels, String)> {
        let mut pairs: BTreeSet<(ChatLabels, String)> = self.seen.attendances.keys().cloned().collect();
        for chat in self.open.values().filter(|c| c.attending) {
            pairs.insert((chat.labels.clone(), chat.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default()));
        }
        let chats = self.known_chats();
        for member in self.roster.iter().flatten() {
            for (app, group) in member_teams(member) {
                for labels in &chats {
                    if labels.group == group && (app.is_empty() || labels.app == app) {
                        pairs.insert((labels.clone(), member.agent.name.clone()));
                    }
                }
            }
        }
        pairs
    }

    /// The counters as exported: every series that has risen, and at 0 every series of
    /// a label set seen within the retention, so that `increase()` and `rate()` see its
    /// first increment. Each histogram whose time the source's records carry (its
    /// [`crate::model::Timings`]) is there, empty, for every such label set from the first
    /// poll on: a duration histogram that came only with the first finished chat would
    /// give `rate()` nothing to start from.
    pub fn exported_counters(&self) -> ChatCounters {
        let mut c = self.counters.clone();
        for labels in self.known_chats() {
            c.abandoned.entry(labels.clone()).or_insert(0);
            if self.timings.wait {
                c.wait.entry(labels.clone()).or_insert_with(|| Histogram::new(WAIT_BUCKETS));
            }
            if self.timings.talk {
                c.duration.entry(labels.clone()).or_insert_with(|| Histogram::new(DURATION_BUCKETS));
            }
        }
        for (labels, agent) in self.known_attendances() {
            for first_contact in [FirstContact::Resolved, FirstContact::Unresolved] {
                c.finished.entry((labels.clone(), agent.clone(), first_contact)).or_insert(0);
            }
            c.answered.entry((labels, agent)).or_insert(0);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRef, Phase, RosterAgent};
    use crate::tracker::tests::{at, chat, finished, labels, poll_at, totals};

    fn waiting(t: &Tracker) -> Option<u64> {
        t.gauges().waiting.get(&labels()).copied()
    }

    #[test]
    fn an_emptied_queue_reads_zero_until_the_label_set_has_not_been_seen_for_the_retention() {
        let mut t = Tracker::new();
        t.set_series_retention(std::time::Duration::from_secs(3600));
        t.apply(&poll_at(1, vec![chat(Phase::Waiting, 1)]));
        assert_eq!(waiting(&t), Some(1));
        t.apply(&poll_at(2, vec![chat(Phase::Attending, 2)]));
        assert_eq!(waiting(&t), Some(0), "the queue is empty: 0, not absent");
        t.apply(&poll_at(9, vec![finished(None, 9)]));
        t.apply(&poll_at(9 + 59, vec![]));
        assert_eq!(waiting(&t), Some(0), "seen (counted) 59 minutes ago");
        assert_eq!(t.gauges().active.get(&(labels(), "Ana".to_string())), Some(&0));
        t.apply(&poll_at(9 + 61, vec![]));
        assert_eq!(waiting(&t), None, "not seen for longer than the retention");
        assert!(t.gauges().active.is_empty());
        assert_eq!(totals(&t), (1, 1, 0, 1, 1), "counters stay whatever the retention");
    }

    #[test]
    fn the_oldest_wait_of_an_empty_queue_is_absent() {
        let mut t = Tracker::new();
        t.apply(&poll_at(1, vec![chat(Phase::Waiting, 1)]));
        assert_eq!(t.gauges().waiting_oldest.get(&labels()), Some(&at(0)));
        t.apply(&poll_at(2, vec![chat(Phase::Attending, 2)]));
        assert_eq!(t.gauges().waiting_oldest.get(&labels()), None, "no one waits: no start of a wait");
    }

    #[test]
    fn counters_of_a_seen_label_set_start_at_zero_before_their_first_increment() {
        let mut t = Tracker::new();
        let mut obs = poll_at(1, vec![chat(Phase::Waiting, 1)]);
        obs.roster = Some(vec![RosterAgent {
            agent: AgentRef { id: "2".into(), name: "Bia".into() },
            apps: vec![],
            groups: vec!["G".into()],
            presence: None,
        }]);
        t.apply(&obs);
        let c = t.exported_counters();
        assert_eq!(c.abandoned.get(&labels()), Some(&0), "the group's first abandonment rises from 0");
        assert_eq!(
            c.answered.get(&(labels(), "Bia".to_string())),
            Some(&0),
            "a roster agent's first answer rises from 0"
        );
        for fc in [FirstContact::Resolved, FirstContact::Unresolved] {
            assert_eq!(c.finished.get(&(labels(), "Bia".to_string(), fc)), Some(&0));
        }
        assert!(c.wait.is_empty() && c.duration.is_empty(), "no histogram where the records carry no time");
        assert_eq!(totals(&t), (0, 0, 0, 0, 0), "zeros are exported, not counted");
    }

    /// Where the records carry both times, a known label set has both histograms, empty,
    /// from its first sighting: not the duration only once a chat of it has finished.
    #[test]
    fn both_histograms_are_exported_from_the_start_where_the_records_carry_the_times() {
        let mut t = Tracker::new();
        t.set_timings(crate::model::Timings::BOTH);
        t.apply(&poll_at(1, vec![chat(Phase::Waiting, 1)]));
        let c = t.exported_counters();
        for (what, histograms) in [("wait", &c.wait), ("duration", &c.duration)] {
            assert_eq!(histograms.get(&labels()).map(|h| h.count), Some(0), "{what}: empty, not absent");
        }
        t.apply(&poll_at(2, vec![chat(Phase::Attending, 2)]));
        let c = t.exported_counters();
        assert_eq!(c.wait.get(&labels()).map(|h| h.count), Some(1));
        assert_eq!(c.duration.get(&labels()).map(|h| h.count), Some(0), "answered, not finished: still there");
        assert_eq!(totals(&t), (1, 0, 0, 1, 0), "zeros are exported, not counted");
    }

    #[test]
    fn a_team_whose_agents_left_stays_at_zero() {
        let mut t = Tracker::new();
        let member = RosterAgent {
            agent: AgentRef { id: "2".into(), name: "Bia".into() },
            apps: vec![],
            groups: vec!["G".into()],
            presence: None,
        };
        let mut obs = poll_at(1, vec![]);
        obs.roster = Some(vec![member]);
        t.apply(&obs);
        let mut obs = poll_at(2, vec![]);
        obs.roster = Some(vec![]);
        t.apply(&obs);
        assert!(t.gauges().agent_status.is_empty());
        assert_eq!(t.gauges().teams.get(&(String::new(), "G".to_string())), Some(&false));
    }
}
