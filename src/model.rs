//! The platform-neutral model: what every source reports, whatever its API looks like.
//! Sources map their platform's records onto these types; the tracker never sees a
//! platform-specific field.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A conversation's id on its platform, as text: numbers, display ids and document ids
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChatId(pub String);

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The labels that place a conversation on the screen: application, group, channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct ChatLabels {
    pub app: String,
    pub group: String,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentRef {
    /// Platform id, used to join chats with the roster.
    pub id: String,
    /// Display name, used as the `agent` label.
    pub name: String,
}

/// Whether a conversation was resolved at the first contact.
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

/// Where a conversation stands, as the platform reports it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In the queue, no agent attending yet.
    Waiting,
    /// An agent is attending it.
    Attending,
    /// Neither waiting nor attended, but not over: with a bot, snoozed, pending. It leaves
    /// the gauges and counts nothing; whatever it becomes next is counted then.
    Parked,
    /// Ended after being attended. `first_contact` is the platform's own verdict when it
    /// gives one; `None` applies the neutral rule: the first end of a conversation is
    /// resolved at the first contact, any end after a reopening is not.
    Finished { first_contact: Option<FirstContact> },
    /// Ended without ever having had an agent: the customer left the queue.
    Abandoned,
    /// Ended after being attended, without being finished (cancelled by the agent).
    Cancelled,
    /// Deleted on the platform: it must not count, and leaves the gauges.
    Deleted,
}

impl Phase {
    /// Waiting or attended: the conversation is in the gauges.
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Waiting | Phase::Attending)
    }
    /// Not over: open or parked. A conversation seen again in one of these phases after
    /// it ended has been reopened.
    pub fn is_live(self) -> bool {
        matches!(self, Phase::Waiting | Phase::Attending | Phase::Parked)
    }
}

/// One conversation as seen in one answer of the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatObservation {
    pub id: ChatId,
    pub labels: ChatLabels,
    pub agent: Option<AgentRef>,
    pub phase: Phase,
    /// An agent has taken the conversation (or replied to it, where the platform counts
    /// that): it was answered, whatever it has become since. `agent` is who answered
    /// when the platform cannot tell anything better.
    pub answered: bool,
    /// Who answered it, and its labels then, where the platform tells them and they may
    /// differ from now (a transfer since); `None`: `labels` and `agent`.
    pub answered_as: Option<(ChatLabels, Option<AgentRef>)>,
    /// When the customer started waiting (for the oldest-waiting gauge), or when the
    /// conversation began.
    pub waiting_since: Option<DateTime<Utc>>,
    /// Queue wait in seconds, when the platform gives it.
    pub wait_seconds: Option<f64>,
    /// Conversation duration in seconds, when the platform gives it.
    pub talk_seconds: Option<f64>,
    /// The platform's own time of the last change to this conversation.
    pub last_update: DateTime<Utc>,
}

/// The longest wait or conversation the exporter counts: 30 days. A longer one, a
/// negative one, or one that is not a finite number is not a duration but a broken record;
/// let in, two waits of `1e308` would make a histogram's `_sum` `+Inf` for good.
pub const MAX_COUNTED_SECONDS: f64 = 30.0 * 86_400.0;

impl ChatObservation {
    /// Why this record cannot be counted, when it cannot: a wait or duration outside
    /// `0..=MAX_COUNTED_SECONDS`.
    pub fn refusal(&self) -> Option<String> {
        [("wait", self.wait_seconds), ("duration", self.talk_seconds)].into_iter().find_map(|(what, seconds)| {
            let seconds = seconds?;
            let countable = (0.0..=MAX_COUNTED_SECONDS).contains(&seconds);
            (!countable).then(|| {
                format!("conversation {}: {what} of {seconds} s is not between 0 and {MAX_COUNTED_SECONDS} s", self.id)
            })
        })
    }
}

/// Which times a platform's records carry for each chat (`wait_seconds`, `talk_seconds`).
/// Each one it carries is a histogram exported for every known label set from the start
/// (empty until its first value); one it never carries is no histogram at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// The queue wait: `chat_conversation_wait_seconds`.
    pub wait: bool,
    /// The talk time: `chat_conversation_duration_seconds`.
    pub talk: bool,
}

impl Timings {
    pub const BOTH: Timings = Timings { wait: true, talk: true };
    pub const NONE: Timings = Timings { wait: false, talk: false };
}

/// An agent's presence, in one platform-neutral set of words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Online and taking conversations.
    Available,
    /// Online, not taking new conversations.
    Busy,
    /// Away from the keyboard.
    Away,
    Offline,
}

impl Presence {
    pub const ALL: [Presence; 4] = [Presence::Available, Presence::Busy, Presence::Away, Presence::Offline];
    pub fn label(self) -> &'static str {
        match self {
            Presence::Available => "available",
            Presence::Busy => "busy",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }
}

/// An agent on the platform's roster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterAgent {
    pub agent: AgentRef,
    /// Applications the agent serves; empty when the platform does not tie agents to one.
    pub apps: Vec<String>,
    /// Groups (teams) the agent belongs to.
    pub groups: Vec<String>,
    /// What the platform says of the agent's presence; `None` where it cannot tell, and
    /// the agent's status is then whether it attends a conversation.
    #[serde(default)]
    pub presence: Option<Presence>,
}

/// Everything one poll of a source learnt.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Conversations that changed (or, in a reconciliation, every open one), at most one
    /// observation each: the one read last (see [`Observations::observe`]).
    pub chats: Vec<ChatObservation>,
    /// Where each id sits in `chats`.
    index: HashMap<ChatId, usize>,
    /// When set, `chats` holds every live conversation: any other conversation the
    /// tracker still holds open, last changed at or before this instant, has closed
    /// without being seen (deleted, moved out of scope) and leaves the gauges.
    pub open_set_complete_at: Option<DateTime<Utc>>,
    /// With `open_set_complete_at`, for a listing of the live conversations paged over
    /// several polls: those it listed live in earlier polls (their pages were observed
    /// then), which are live as much as the live ones in `chats`.
    pub listed_live: Vec<ChatId>,
    /// When set, the full roster of agents replaces the previous one.
    pub roster: Option<Vec<RosterAgent>>,
    /// Set on the first poll: conversations last changed at or before this instant are
    /// history from before the exporter started, recorded but not counted.
    pub history_until: Option<DateTime<Utc>>,
    /// The platform's clock at this poll (its `Date` header), when it gives one: records
    /// are forgotten by this clock, never by one a record claims.
    pub platform_time: Option<DateTime<Utc>>,
}

impl Observations {
    /// Adds what one answer said of a conversation. A platform answers with the state of
    /// a conversation at the moment it answers, so of two answers about one conversation
    /// the one read later is the newer, whatever timestamps it carries: it replaces the
    /// earlier one.
    pub fn observe(&mut self, chat: ChatObservation) {
        match self.index.get(&chat.id) {
            Some(&i) => self.chats[i] = chat,
            None => {
                self.index.insert(chat.id.clone(), self.chats.len());
                self.chats.push(chat);
            }
        }
    }

    /// Takes out the conversations whose values cannot be counted (see
    /// [`ChatObservation::refusal`]), and says why for each: the rest of the poll counts.
    pub fn refuse_uncountable(&mut self) -> Vec<String> {
        let refusals: Vec<String> = self.chats.iter().filter_map(ChatObservation::refusal).collect();
        if !refusals.is_empty() {
            let chats = std::mem::take(&mut self.chats);
            self.index.clear();
            for chat in chats.into_iter().filter(|c| c.refusal().is_none()) {
                self.observe(chat);
            }
        }
        refusals
    }

    pub fn from_chats(chats: impl IntoIterator<Item = ChatObservation>) -> Self {
        let mut obs = Observations::default();
        for chat in chats {
            obs.observe(chat);
        }
        obs
    }
}
