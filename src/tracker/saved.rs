//! What the tracker saves in the state file, and how it is read back.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::export::{ChatCounters, Histogram, SeenSeries, DURATION_BUCKETS, WAIT_BUCKETS};
use super::{ChatRecord, OpenChat, Tracker};
use crate::model::{ChatId, ChatLabels, FirstContact, RosterAgent};

/// Keys of what changed since the state file last took the changes.
#[derive(Debug, Default)]
pub(super) struct Unsaved {
    pub(super) records: HashSet<ChatId>,
    pub(super) open: HashSet<ChatId>,
    pub(super) roster: bool,
    /// `history_until` or `pruned_before`.
    pub(super) marks: bool,
    pub(super) answered: BTreeSet<(ChatLabels, String)>,
    pub(super) finished: BTreeSet<(ChatLabels, String, FirstContact)>,
    pub(super) abandoned: BTreeSet<ChatLabels>,
    pub(super) wait: BTreeSet<ChatLabels>,
    pub(super) duration: BTreeSet<ChatLabels>,
    /// A label set became known or was forgotten.
    pub(super) seen: bool,
}

/// How stale the seen series' times may be in the state file: they are saved when a
/// label set comes or goes, and otherwise at most this often, so that a poll that
/// changed nothing writes nothing. A restart may end a retention this much early.
const SEEN_SAVE_EVERY: chrono::Duration = chrono::Duration::hours(1);

/// A saved state the tracker cannot resume from: the file is inconsistent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SavedStateError {
    /// A record's last update is not a time (Unix milliseconds out of range).
    #[error("record {id}: bad time")]
    BadTime { id: ChatId, millis: i64 },
    /// A histogram whose counts do not fit the bucket bounds, or do not add up.
    #[error("{what} histogram {labels:?} does not match the bucket layout")]
    Histogram { what: &'static str, labels: ChatLabels },
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

    pub fn from_state(state: TrackerState) -> Result<Self, SavedStateError> {
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
            // Which times the records carry is the source's to say, not the file's.
            timings: Default::default(),
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
    pub fn apply_changes(&mut self, changes: TrackerChanges) -> Result<(), SavedStateError> {
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

fn restored_record(id: &ChatId, bits: u8, ends: u32, last: Option<i64>) -> Result<ChatRecord, SavedStateError> {
    let last_update = match last {
        Some(millis) => Some(
            DateTime::from_timestamp_millis(millis)
                .ok_or_else(|| SavedStateError::BadTime { id: id.clone(), millis })?,
        ),
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

fn check_histograms(
    wait: &[(ChatLabels, Histogram)],
    duration: &[(ChatLabels, Histogram)],
) -> Result<(), SavedStateError> {
    for (what, bounds, hs) in [("wait", WAIT_BUCKETS, wait), ("duration", DURATION_BUCKETS, duration)] {
        for (labels, h) in hs {
            // Checked: counts that add up past u64 are a broken file, not a panic.
            let total = h.counts.iter().try_fold(0u64, |acc, c| acc.checked_add(*c));
            let consistent = h.counts.len() == bounds.len() + 1 && total == Some(h.count) && h.sum.is_finite();
            if !consistent {
                return Err(SavedStateError::Histogram { what, labels: labels.clone() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentRef, ChatObservation, Observations, Phase};
    use crate::tracker::tests::{apply, at, chat, finished, poll_at};

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
