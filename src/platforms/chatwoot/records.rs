//! Reading Chatwoot's records (conversations, inboxes, agents) into the neutral model, by
//! the contract: timestamps in Unix seconds and `0` when unset, `meta.assignee` and
//! `meta.team` absent when unset, ids as numbers.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{AgentRef, ChatId, ChatLabels, ChatObservation, Phase, Presence};

/// An inbox as the exporter needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbox {
    pub name: String,
    /// The `origin` label; `None` for e-mail, which never counts.
    pub origin: Option<String>,
}

/// The `origin` label of an inbox's channel type: a short word. E-mail is not a chat.
pub fn origin_of(channel_type: &str, medium: Option<&str>) -> Option<String> {
    let word = match channel_type {
        "Channel::Email" => return None,
        "Channel::WebWidget" => "web_widget",
        "Channel::Whatsapp" => "whatsapp",
        "Channel::TwilioSms" if medium == Some("whatsapp") => "whatsapp",
        "Channel::TwilioSms" | "Channel::Sms" => "sms",
        "Channel::Api" => "api",
        "Channel::FacebookPage" => "facebook",
        "Channel::Instagram" => "instagram",
        "Channel::Telegram" => "telegram",
        "Channel::Line" => "line",
        "Channel::TwitterProfile" => "twitter",
        // A class this exporter does not know yet (forks add many): its name, shortened,
        // so it is counted rather than lost.
        other => {
            let short = other.strip_prefix("Channel::").unwrap_or(other);
            let mut word = String::new();
            for (i, c) in short.chars().filter(|c| c.is_ascii_alphanumeric()).enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    word.push('_');
                }
                word.push(c.to_ascii_lowercase());
            }
            return Some(if word.is_empty() { "unknown".to_string() } else { word });
        }
    };
    Some(word.to_string())
}

pub fn parse_inbox(v: &Value) -> Result<(u64, Inbox), String> {
    let id = v.get("id").and_then(Value::as_u64).ok_or("inbox without a numeric id")?;
    let channel = v.get("channel_type").and_then(Value::as_str).ok_or_else(|| format!("inbox {id}: no channel_type"))?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or_default().trim().to_string();
    Ok((id, Inbox { name, origin: origin_of(channel, v.get("medium").and_then(Value::as_str)) }))
}

/// An agent: id, name and presence (`availability_status`).
pub fn parse_agent(v: &Value) -> Result<(AgentRef, Option<Presence>), String> {
    let id = v.get("id").and_then(Value::as_u64).ok_or("agent without a numeric id")?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let presence = match v.get("availability_status").and_then(Value::as_str) {
        // `online` as the server sends it, `available` as its API description (and older
        // versions) write it.
        Some("online" | "available") => Some(Presence::Available),
        Some("busy") => Some(Presence::Busy),
        Some("offline") => Some(Presence::Offline),
        _ => None,
    };
    Ok((AgentRef { id: id.to_string(), name }, presence))
}

/// Unix seconds, `None` for Chatwoot's `0` (unset) and for values no clock can hold.
fn seconds(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_f64()?;
    if !(s.is_finite() && s > 0.0 && s < 1e11) {
        return None;
    }
    DateTime::from_timestamp_millis((s * 1000.0).round() as i64)
}

/// One conversation to one observation: `Ok(None)` for an e-mail conversation. An inbox
/// not in `inbox` is an error the caller may resolve by reading the inboxes again.
pub fn parse_conversation(
    v: &Value,
    inbox: impl Fn(u64) -> Option<Inbox>,
) -> Result<Option<ChatObservation>, ConversationError> {
    let id = v.get("id").and_then(Value::as_u64).ok_or(ConversationError::Invalid("conversation without a numeric id".into()))?;
    let invalid = |why: &str| ConversationError::Invalid(format!("conversation {id}: {why}"));
    let inbox_id = v.get("inbox_id").and_then(Value::as_u64).ok_or_else(|| invalid("no inbox_id"))?;
    let inbox = inbox(inbox_id).ok_or(ConversationError::UnknownInbox(inbox_id))?;
    let Some(origin) = inbox.origin else { return Ok(None) };
    // Older versions' views have no `updated_at`: their last activity (`timestamp`) is the
    // time of change they give.
    let last_update = seconds(v.get("updated_at"))
        .or_else(|| v.get("updated_at").is_none().then(|| seconds(v.get("timestamp"))).flatten())
        .ok_or_else(|| invalid("updated_at (or, without it, timestamp) missing or not a time"))?;
    let created = seconds(v.get("created_at"));
    let meta = v.get("meta");
    let agent = meta
        .and_then(|m| m.get("assignee"))
        .filter(|a| a.is_object())
        .and_then(|a| parse_agent(a).ok())
        .map(|(agent, _)| agent);
    let group = meta
        .and_then(|m| m.get("team"))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    // Only a person's reply sets it, and nothing resets it.
    let replied = seconds(v.get("first_reply_created_at")).is_some();
    let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
    let phase = match status {
        "open" if !replied => Phase::Waiting,
        "open" if agent.is_some() => Phase::Attending,
        // Replied but unassigned, with a bot, or snoozed: in neither gauge.
        "open" | "pending" | "snoozed" => Phase::Parked,
        "resolved" if replied => Phase::Finished { first_contact: None },
        "resolved" => Phase::Abandoned,
        other => return Err(invalid(&format!("unknown status {other:?}"))),
    };
    let waiting_since = match phase {
        Phase::Waiting => seconds(v.get("waiting_since")).or(created),
        _ => created,
    };
    Ok(Some(ChatObservation {
        id: ChatId(id.to_string()),
        labels: ChatLabels { app: inbox.name, group, origin },
        agent,
        phase,
        answered: replied,
        answered_as: None,
        waiting_since,
        wait_seconds: None,
        talk_seconds: None,
        last_update,
    }))
}

#[derive(Debug, PartialEq)]
pub enum ConversationError {
    /// Cannot be read: skipped and counted.
    Invalid(String),
    /// Its inbox is not among those read: the inboxes are read again.
    UnknownInbox(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_types_map_to_short_words_and_email_to_nothing() {
        assert_eq!(origin_of("Channel::WebWidget", None).as_deref(), Some("web_widget"));
        assert_eq!(origin_of("Channel::TwilioSms", Some("whatsapp")).as_deref(), Some("whatsapp"));
        assert_eq!(origin_of("Channel::TwilioSms", Some("sms")).as_deref(), Some("sms"));
        assert_eq!(origin_of("Channel::Sms", None).as_deref(), Some("sms"));
        assert_eq!(origin_of("Channel::FacebookPage", None).as_deref(), Some("facebook"));
        assert_eq!(origin_of("Channel::Email", None), None);
        assert_eq!(origin_of("Channel::EvolutionApi", None).as_deref(), Some("evolution_api"));
    }

    #[test]
    fn unset_timestamps_are_zero_and_absent_meta_is_unset() {
        let inbox = |_| Some(Inbox { name: "Site".into(), origin: Some("web_widget".into()) });
        let v = serde_json::json!({"id": 9, "inbox_id": 1, "status": "open", "updated_at": 1790000000.25,
            "created_at": 1790000000, "first_reply_created_at": 0, "waiting_since": 0, "meta": {"channel": "Channel::WebWidget"}});
        let chat = parse_conversation(&v, inbox).unwrap().unwrap();
        assert_eq!(chat.phase, Phase::Waiting);
        assert!(!chat.answered && chat.agent.is_none() && chat.labels.group.is_empty());
        assert_eq!(chat.waiting_since, DateTime::from_timestamp(1_790_000_000, 0));
    }
}
