//! Turns observations into counters and gauges, once and only once.
//!
//! Polling sees states, not events, and sees the same conversation many times (overlap
//! windows, reconciliations, out-of-order pages). The tracker keeps, per conversation,
//! which transitions it has already counted, so a counter rises exactly once per
//! conversation and transition however often and in whatever order it is seen.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    AgentRef, ChatId, ChatLabels, ChatObservation, FirstContact, Observations, Phase, Presence, RosterAgent,
};

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
}

#[derive(Debug, Default)]
pub struct Tracker {
    pub(crate) records: HashMap<ChatId, ChatRecord>,
    pub(crate) open: HashMap<ChatId, OpenChat>,
    pub(crate) roster: Option<Vec<RosterAgent>>,
    pub(crate) history_until: Option<DateTime<Utc>>,
    /// Closed conversations last changed before this instant have been forgotten.
    pub(crate) pruned_before: Option<DateTime<Utc>>,
    pub(crate) counters: ChatCounters,
    /// What changed since the last [`Tracker::take_changes`]: the state file saves only that.
    unsaved: Unsaved,
}

/// Keys of what changed since the state file last took the changes.
#[derive(Debug, Default)]
struct Unsaved {
    records: HashSet<ChatId>,
    open: HashSet<ChatId>,
    roster: bool,
    /// `history_until` or `pruned_before`.
    marks: bool,
    answered: BTreeSet<(ChatLabels, String)>,
    finished: BTreeSet<(ChatLabels, String, FirstContact)>,
    abandoned: BTreeSet<ChatLabels>,
    wait: BTreeSet<ChatLabels>,
    duration: BTreeSet<ChatLabels>,
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
        // The poll that sets the start lists the conversations live then: the baseline.
        let baseline = obs.history_until.is_some();
        if let Some(until) = obs.history_until {
            self.unsaved.marks |= self.history_until != Some(until);
            self.history_until = Some(until);
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
        if let Some(now) = obs.platform_time {
            self.prune(now);
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
        let is_history = self.history_until.is_some_and(|until| chat.last_update <= until) || ended_before_start;
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
                *counters.answered.entry(key.clone()).or_default() += 1;
                unsaved.answered.insert(key);
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
                    let key = (chat.labels.clone(), agent_name(), first_contact);
                    *counters.finished.entry(key.clone()).or_default() += 1;
                    unsaved.finished.insert(key);
                }
                Phase::Abandoned if !record.answered && !is_history => {
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
    /// (id, counted transitions as bits, ends counted, last update in Unix milliseconds)
    pub records: Vec<(ChatId, u8, u32, Option<i64>)>,
    pub open: Vec<(ChatId, OpenChat)>,
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
const ENDED: u8 = 2;
const WAIT_OBSERVED: u8 = 8;
const DURATION_OBSERVED: u8 = 16;

impl Tracker {
    pub fn to_state(&self) -> TrackerState {
        let mut records: Vec<(ChatId, u8, u32, Option<i64>)> =
            self.records.iter().map(|(id, r)| saved_record(id, r)).collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut open: Vec<(ChatId, OpenChat)> = self.open.iter().map(|(id, c)| (id.clone(), c.clone())).collect();
        open.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
        check_histograms(&state.wait, &state.duration)?;
        let mut records = HashMap::with_capacity(state.records.len());
        for (id, bits, ends, last) in state.records {
            let record = restored_record(&id, bits, ends, last)?;
            records.insert(id, record);
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
            unsaved: Unsaved::default(),
        })
    }

    /// What changed since the last call, for the state file to append; the tracker then
    /// counts it as saved.
    pub fn take_changes(&mut self) -> TrackerChanges {
        let u = std::mem::take(&mut self.unsaved);
        let mut changes = TrackerChanges::default();
        for id in u.records {
            match self.records.get(&id) {
                Some(r) => changes.records.push(saved_record(&id, r)),
                None => changes.forgotten.push(id),
            }
        }
        for id in u.open {
            match self.open.get(&id) {
                Some(chat) => changes.open.push((id, chat.clone())),
                None => changes.closed.push(id),
            }
        }
        if u.roster {
            changes.roster = self.roster.clone();
        }
        if u.marks {
            (changes.history_until, changes.pruned_before) = (self.history_until, self.pruned_before);
        }
        let c = &self.counters;
        changes.answered = u.answered.into_iter().map(|k| (c.answered[&k], k)).map(|(v, (l, a))| (l, a, v)).collect();
        changes.finished =
            u.finished.into_iter().map(|k| (c.finished[&k], k)).map(|(v, (l, a, f))| (l, a, f, v)).collect();
        changes.abandoned = u.abandoned.into_iter().map(|l| (c.abandoned[&l], l)).map(|(v, l)| (l, v)).collect();
        changes.wait = u.wait.into_iter().map(|l| (c.wait[&l].clone(), l)).map(|(h, l)| (l, h)).collect();
        changes.duration = u.duration.into_iter().map(|l| (c.duration[&l].clone(), l)).map(|(h, l)| (l, h)).collect();
        changes
    }

    /// Applies changes read back from the state file, in the order they were taken.
    pub fn apply_changes(&mut self, changes: TrackerChanges) -> Result<(), String> {
        check_histograms(&changes.wait, &changes.duration)?;
        for (id, bits, ends, last) in changes.records {
            let record = restored_record(&id, bits, ends, last)?;
            self.records.insert(id, record);
        }
        for id in changes.forgotten {
            self.records.remove(&id);
        }
        self.open.extend(changes.open);
        for id in changes.closed {
            self.open.remove(&id);
        }
        if changes.roster.is_some() {
            self.roster = changes.roster;
        }
        self.history_until = changes.history_until.or(self.history_until);
        self.pruned_before = changes.pruned_before.or(self.pruned_before);
        let c = &mut self.counters;
        c.answered.extend(changes.answered.into_iter().map(|(l, a, v)| ((l, a), v)));
        c.finished.extend(changes.finished.into_iter().map(|(l, a, f, v)| ((l, a, f), v)));
        c.abandoned.extend(changes.abandoned);
        c.wait.extend(changes.wait);
        c.duration.extend(changes.duration);
        Ok(())
    }
}

/// What changed in the tracker between two saves: the records, open chats and counter
/// values to set (counters by their new values, so applying twice does no harm), and
/// what to remove.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrackerChanges {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<(ChatId, u8, u32, Option<i64>)>,
    /// Records pruned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<ChatId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<(ChatId, OpenChat)>,
    /// No longer open.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<ChatId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roster: Option<Vec<RosterAgent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_before: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<(ChatLabels, String, u64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<(ChatLabels, String, FirstContact, u64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<(ChatLabels, u64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wait: Vec<(ChatLabels, Histogram)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duration: Vec<(ChatLabels, Histogram)>,
}

impl TrackerChanges {
    pub fn is_empty(&self) -> bool {
        *self == TrackerChanges::default()
    }
}

/// A record as the state file keeps it: (id, counted transitions as bits, ends counted,
/// last update in Unix milliseconds).
fn saved_record(id: &ChatId, r: &ChatRecord) -> (ChatId, u8, u32, Option<i64>) {
    let bits = (u8::from(r.answered) * ANSWERED)
        | (u8::from(r.ended) * ENDED)
        | (u8::from(r.wait_observed) * WAIT_OBSERVED)
        | (u8::from(r.duration_observed) * DURATION_OBSERVED);
    (id.clone(), bits, r.ends, r.last_update.map(|t| t.timestamp_millis()))
}

fn restored_record(id: &ChatId, bits: u8, ends: u32, last: Option<i64>) -> Result<ChatRecord, String> {
    let last_update = match last {
        Some(ms) => Some(DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("record {id}: bad time"))?),
        None => None,
    };
    Ok(ChatRecord {
        answered: bits & ANSWERED != 0,
        ended: bits & ENDED != 0,
        ends,
        wait_observed: bits & WAIT_OBSERVED != 0,
        duration_observed: bits & DURATION_OBSERVED != 0,
        last_update,
    })
}

fn check_histograms(wait: &[(ChatLabels, Histogram)], duration: &[(ChatLabels, Histogram)]) -> Result<(), String> {
    for (what, bounds, hs) in [("wait", WAIT_BUCKETS, wait), ("duration", DURATION_BUCKETS, duration)] {
        for (labels, h) in hs {
            // Checked: counts that add up past u64 are a broken file, not a panic.
            let total = h.counts.iter().try_fold(0u64, |acc, c| acc.checked_add(*c));
            let consistent = h.counts.len() == bounds.len() + 1 && total == Some(h.count) && h.sum.is_finite();
            if !consistent {
                return Err(format!("{what} histogram {labels:?} does not match the bucket layout"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRef, ChatLabels, ChatObservation, Observations, Phase, RosterAgent};

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + minute * 60, 0).unwrap()
    }

    fn labels() -> ChatLabels {
        ChatLabels { app: "A".into(), group: "G".into(), origin: "chat".into() }
    }

    fn chat(phase: Phase, minute: i64) -> ChatObservation {
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

    fn finished(first_contact: Option<FirstContact>, minute: i64) -> ChatObservation {
        chat(Phase::Finished { first_contact }, minute)
    }

    fn apply(t: &mut Tracker, chats: Vec<ChatObservation>) {
        for chat in chats {
            t.apply(&Observations::from_chats([chat]));
        }
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

    fn finished_with(t: &Tracker, first_contact: FirstContact) -> u64 {
        t.counters().finished.get(&(labels(), "Ana".to_string(), first_contact)).copied().unwrap_or(0)
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

    #[test]
    fn the_changes_taken_after_each_poll_rebuild_the_state_and_seeing_again_changes_nothing() {
        let mut t = Tracker::new();
        let mut baseline = Observations::from_chats([chat(Phase::Waiting, 1)]);
        baseline.history_until = Some(at(1));
        baseline.roster = Some(vec![RosterAgent {
            agent: AgentRef { id: "1".into(), name: "Ana".into() },
            apps: vec![],
            groups: vec!["G".into()],
            presence: None,
        }]);
        t.apply(&baseline);
        let saved = t.to_state();
        let _ = t.take_changes();
        let mut replayed = Tracker::from_state(saved).unwrap();
        let mut other = chat(Phase::Waiting, 2);
        other.id = ChatId("43".into());
        let mut reconciled = Observations::default();
        reconciled.open_set_complete_at = Some(at(20));
        let mut late = Observations::default();
        late.platform_time = Some(at(60 * 24 * 30));
        let polls = vec![
            Observations::from_chats([chat(Phase::Attending, 3), other.clone()]),
            Observations::from_chats([finished(None, 9)]),
            reconciled,
            Observations::from_chats([chat(Phase::Attending, 30)]),
            late,
        ];
        for obs in polls {
            t.apply(&obs);
            let changes = t.take_changes();
            assert!(!changes.is_empty());
            replayed.apply_changes(serde_json::from_str(&serde_json::to_string(&changes).unwrap()).unwrap()).unwrap();
            assert_eq!(replayed.to_state(), t.to_state());
            t.apply(&obs);
            assert!(t.take_changes().is_empty(), "the same poll again changes nothing");
        }
        assert!(t.pruned_before.is_some() && t.records.len() == 1, "pruning is among the changes");
    }

    #[test]
    fn the_state_round_trips() {
        let mut t = Tracker::new();
        apply(&mut t, vec![chat(Phase::Attending, 2), finished(None, 3), chat(Phase::Attending, 4)]);
        let restored = Tracker::from_state(t.to_state()).unwrap();
        assert_eq!(restored.to_state(), t.to_state());
        let mut broken = t.to_state();
        broken.wait[0].1.counts.pop();
        assert!(Tracker::from_state(broken).is_err());
    }
}
