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

/// How long a label set stays exported after it was last seen, unless configured
/// otherwise (`series_retention`).
pub const DEFAULT_SERIES_RETENTION_DAYS: i64 = 7;

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
    fn len(&self) -> (usize, usize, usize) {
        (self.chats.len(), self.attendances.len(), self.teams.len())
    }

    fn retain_since(&mut self, horizon: DateTime<Utc>) {
        self.chats.retain(|_, t| *t >= horizon);
        self.attendances.retain(|_, t| *t >= horizon);
        self.teams.retain(|_, (t, _)| *t >= horizon);
    }
}

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
    /// (app, group) seen on the roster within the retention -> whether its statuses are
    /// presences: `chat_agents` stays at 0 for a team whose agents left.
    pub teams: BTreeMap<(String, String), bool>,
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
    pub(crate) seen: SeenSeries,
    /// The platform's clock at the last poll that told it.
    pub(crate) platform_now: Option<DateTime<Utc>>,
    pub(crate) series_retention: Option<chrono::Duration>,
    /// The platform's clock when the seen series were last given to the state file
    /// (`None`: never given).
    seen_saved_at: Option<Option<DateTime<Utc>>>,
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
    /// A label set became known or was forgotten.
    seen: bool,
}

/// How stale the seen series' times may be in the state file: they are saved when a
/// label set comes or goes, and otherwise at most this often, so that a poll that
/// changed nothing writes nothing. A restart may end a retention this much early.
const SEEN_SAVE_EVERY: chrono::Duration = chrono::Duration::hours(1);

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a label set stays exported after it was last seen.
    pub fn set_series_retention(&mut self, retention: std::time::Duration) {
        self.series_retention = chrono::Duration::from_std(retention).ok();
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
    /// first increment. Histograms at 0 only where the platform gives the values at all
    /// (some have risen).
    pub fn exported_counters(&self) -> ChatCounters {
        let mut c = self.counters.clone();
        let with_wait = !c.wait.is_empty();
        let with_duration = !c.duration.is_empty();
        for labels in self.known_chats() {
            c.abandoned.entry(labels.clone()).or_insert(0);
            if with_wait {
                c.wait.entry(labels.clone()).or_insert_with(|| Histogram::new(WAIT_BUCKETS));
            }
            if with_duration {
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

/// The (app, group) pairs a roster member is listed under; an empty list is the
/// empty label.
fn member_teams(member: &RosterAgent) -> impl Iterator<Item = (&str, &str)> {
    let apps: Vec<&str> =
        if member.apps.is_empty() { vec![""] } else { member.apps.iter().map(String::as_str).collect() };
    let groups: Vec<&str> =
        if member.groups.is_empty() { vec![""] } else { member.groups.iter().map(String::as_str).collect() };
    apps.into_iter().flat_map(move |app| groups.clone().into_iter().map(move |group| (app, group)))
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
    /// When each label set was last seen (see [`SeenSeries`]).
    #[serde(default)]
    pub seen_chats: Vec<(ChatLabels, DateTime<Utc>)>,
    #[serde(default)]
    pub seen_attendances: Vec<(ChatLabels, String, DateTime<Utc>)>,
    #[serde(default)]
    pub seen_teams: Vec<(String, String, bool, DateTime<Utc>)>,
    #[serde(default)]
    pub platform_now: Option<DateTime<Utc>>,
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
            seen_chats: self.seen.chats.iter().map(|(l, t)| (l.clone(), *t)).collect(),
            seen_attendances: self.seen.attendances.iter().map(|((l, a), t)| (l.clone(), a.clone(), *t)).collect(),
            seen_teams: self.seen.teams.iter().map(|((app, g), (t, p))| (app.clone(), g.clone(), *p, *t)).collect(),
            platform_now: self.platform_now,
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
            seen: SeenSeries {
                chats: state.seen_chats.into_iter().collect(),
                attendances: state.seen_attendances.into_iter().map(|(l, a, t)| ((l, a), t)).collect(),
                teams: state.seen_teams.into_iter().map(|(app, g, p, t)| ((app, g), (t, p))).collect(),
            },
            platform_now: state.platform_now,
            series_retention: None,
            seen_saved_at: Some(state.platform_now),
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
        let seen_due = match (self.platform_now, self.seen_saved_at) {
            (_, None) => self.seen != SeenSeries::default(),
            (Some(now), Some(Some(saved))) => now - saved >= SEEN_SAVE_EVERY,
            (now, Some(saved)) => now.is_some() && saved.is_none(),
        };
        if u.seen || seen_due {
            let seen = &self.seen;
            changes.seen = Some(SavedSeen {
                chats: seen.chats.iter().map(|(l, t)| (l.clone(), *t)).collect(),
                attendances: seen.attendances.iter().map(|((l, a), t)| (l.clone(), a.clone(), *t)).collect(),
                teams: seen.teams.iter().map(|((app, g), (t, p))| (app.clone(), g.clone(), *p, *t)).collect(),
                platform_now: self.platform_now,
            });
            self.seen_saved_at = Some(self.platform_now);
        }
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
        if let Some(seen) = changes.seen {
            self.seen = SeenSeries {
                chats: seen.chats.into_iter().collect(),
                attendances: seen.attendances.into_iter().map(|(l, a, t)| ((l, a), t)).collect(),
                teams: seen.teams.into_iter().map(|(app, g, p, t)| ((app, g), (t, p))).collect(),
            };
            self.platform_now = seen.platform_now;
            self.seen_saved_at = Some(seen.platform_now);
        }
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
    /// The label sets known and when each was last seen, whole (see [`SEEN_SAVE_EVERY`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<SavedSeen>,
}

/// [`SeenSeries`] as the state file keeps it, as in [`TrackerState`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedSeen {
    pub chats: Vec<(ChatLabels, DateTime<Utc>)>,
    pub attendances: Vec<(ChatLabels, String, DateTime<Utc>)>,
    pub teams: Vec<(String, String, bool, DateTime<Utc>)>,
    pub platform_now: Option<DateTime<Utc>>,
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

    fn poll_at(minute: i64, chats: Vec<ChatObservation>) -> Observations {
        let mut obs = Observations::from_chats(chats);
        obs.platform_time = Some(at(minute));
        obs
    }

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
        assert!(c.wait.is_empty(), "no histogram before the platform gives a value for it");
        assert_eq!(totals(&t), (0, 0, 0, 0, 0), "zeros are exported, not counted");
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

    #[test]
    fn the_seen_label_sets_survive_a_restart() {
        let mut t = Tracker::new();
        t.apply(&poll_at(1, vec![chat(Phase::Waiting, 1)]));
        t.apply(&poll_at(2, vec![chat(Phase::Attending, 2)]));
        let restored = Tracker::from_state(t.to_state()).unwrap();
        assert_eq!(restored.seen(), t.seen());
        assert_eq!(restored.gauges(), t.gauges());
        assert_eq!(restored.exported_counters(), t.exported_counters());
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
            // The seen series' times are saved when a label set comes or goes, and hourly.
            assert_eq!(without_seen_times(replayed.to_state()), without_seen_times(t.to_state()));
            t.apply(&obs);
            assert!(t.take_changes().is_empty(), "the same poll again changes nothing");
        }
        assert!(t.pruned_before.is_some() && t.records.len() == 1, "pruning is among the changes");
    }

    /// The state with every "last seen" time of the seen series set to one instant.
    fn without_seen_times(mut s: TrackerState) -> TrackerState {
        let zero = DateTime::<Utc>::UNIX_EPOCH;
        s.seen_chats.iter_mut().for_each(|(_, t)| *t = zero);
        s.seen_attendances.iter_mut().for_each(|(_, _, t)| *t = zero);
        s.seen_teams.iter_mut().for_each(|(_, _, _, t)| *t = zero);
        s.platform_now = None;
        s
    }

    #[test]
    fn the_seen_series_reach_the_state_file_when_a_label_set_comes_and_hourly_otherwise() {
        let mut t = Tracker::new();
        let poll = |minute: i64, chats: Vec<ChatObservation>| {
            let mut obs = Observations::from_chats(chats);
            obs.platform_time = Some(at(minute));
            obs
        };
        t.apply(&poll(1, vec![chat(Phase::Attending, 1)]));
        assert!(t.take_changes().seen.is_some(), "a new label set is saved");
        for minute in 2..60 {
            t.apply(&poll(minute, vec![chat(Phase::Attending, minute)]));
            assert!(t.take_changes().seen.is_none(), "minute {minute}: only its time moved");
        }
        t.apply(&poll(61, vec![chat(Phase::Attending, 61)]));
        let saved = t.take_changes().seen.expect("an hour later, the times are saved");
        assert_eq!(saved.platform_now, Some(at(61)));
        assert_eq!(saved.chats.len(), 1);
        let mut other = chat(Phase::Abandoned, 62);
        other.id = ChatId("other".into());
        other.labels.group = "H".into();
        t.apply(&poll(62, vec![other]));
        assert!(t.take_changes().seen.is_some(), "a label set whose counter rose first is saved at once");
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
