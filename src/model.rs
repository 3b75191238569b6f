//! The platform-neutral model: what every source reports, whatever its API looks like.
//! Sources map their platform's records onto these types; the tracker never sees a
//! platform-specific field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// Where a conversation stands, as the platform reports it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In the queue, no agent attending yet.
    Waiting,
    /// An agent is attending it.
    Attending,
    /// Ended after being attended. `resolved_first_contact` is the platform's own verdict.
    Finished { resolved_first_contact: bool },
    /// Ended without ever having had an agent: the customer left the queue.
    Abandoned,
    /// Ended after being attended, without being finished (cancelled by the agent).
    Cancelled,
    /// Deleted on the platform: it must not count, and leaves the gauges.
    Deleted,
}

impl Phase {
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Waiting | Phase::Attending)
    }
}

/// One conversation as seen in one answer of the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatObservation {
    pub id: u64,
    pub labels: ChatLabels,
    pub agent: Option<AgentRef>,
    pub phase: Phase,
    /// When the customer started waiting (for the oldest-waiting gauge).
    pub waiting_since: Option<DateTime<Utc>>,
    /// Queue wait in seconds, when the platform gives it.
    pub wait_seconds: Option<f64>,
    /// Conversation duration in seconds, when the platform gives it.
    pub talk_seconds: Option<f64>,
    /// The platform's own time of the last change to this conversation.
    pub last_update: DateTime<Utc>,
}

/// An agent on the platform's roster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterAgent {
    pub agent: AgentRef,
    /// Applications the agent serves; empty when the platform does not tie agents to one.
    pub apps: Vec<String>,
    /// Groups (teams) the agent belongs to.
    pub groups: Vec<String>,
}

/// Everything one poll of a source learnt.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Conversations that changed (or, in a reconciliation, every open one).
    pub chats: Vec<ChatObservation>,
    /// When set, `chats` holds every open conversation: any other conversation the
    /// tracker still holds open, last changed at or before this instant, has closed
    /// without being seen (deleted, moved out of scope) and leaves the gauges.
    pub open_set_complete_at: Option<DateTime<Utc>>,
    /// When set, the full roster of agents replaces the previous one.
    pub roster: Option<Vec<RosterAgent>>,
    /// Set on the first poll: conversations last changed at or before this instant are
    /// history from before the exporter started, recorded but not counted.
    pub history_until: Option<DateTime<Utc>>,
}
