//! Reading Movidesk's records: tickets and people, as its API writes them (ids as numbers
//! or strings, dates without a zone, fields missing or null), into the neutral model.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use crate::model::{AgentRef, ChatId, ChatLabels, ChatObservation, FirstContact, Phase, RosterAgent};

/// The `origin` label for a Movidesk origin code.
pub fn origin_label(code: u16) -> String {
    match code {
        5 => "chat".into(),
        6 => "chat_offline".into(),
        18 => "whatsapp".into(),
        20 => "zenvia_chat".into(),
        22 => "messenger".into(),
        23 => "whatsapp_business".into(),
        25 => "whatsapp_active".into(),
        other => format!("origin_{other}"),
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Ids are numbers in filters but may come back as strings.
pub fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Movidesk dates are UTC, usually without a zone designator and with up to 7
/// fractional digits; a zone, when present, is honoured.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .map(|n| n.and_utc())
}

/// A number of seconds as written; whether it can be counted is decided at the door
/// (`ChatObservation::refusal`), where a negative or absurd one is refused and counted.
fn opt_seconds(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn opt_str(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().trim().to_string()
}

/// One ticket to one observation: `Ok(None)` for a ticket that is not a chat.
pub fn parse_ticket(t: &Value, chat_origins: &[u16]) -> Result<Option<ChatObservation>, String> {
    if !t.is_object() {
        return Err(format!("ticket is {}, not an object", json_kind(t)));
    }
    let id = t.get("id").and_then(parse_id).ok_or("ticket without a numeric id")?;
    let origin = match t.get("origin") {
        Some(Value::Number(n)) => n.as_u64().and_then(|o| u16::try_from(o).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("ticket {id}: origin missing or not an integer"))?;
    if !chat_origins.contains(&origin) {
        return Ok(None);
    }
    let last_update = t
        .get("lastUpdate")
        .and_then(Value::as_str)
        .and_then(parse_datetime)
        .ok_or_else(|| format!("ticket {id}: lastUpdate missing or not a date"))?;
    let deleted = t.get("isDeleted").and_then(Value::as_bool).unwrap_or(false);
    let agent = match t.get("owner") {
        Some(owner @ Value::Object(_)) => owner.get("id").and_then(id_string).map(|id| AgentRef {
            id,
            name: owner.get("businessName").and_then(Value::as_str).unwrap_or_default().to_string(),
        }),
        _ => None,
    };
    let base_status = t.get("baseStatus").and_then(Value::as_str).unwrap_or_default();
    let phase = if deleted {
        Phase::Deleted
    } else {
        match (base_status, agent.is_some()) {
            ("New", _) => Phase::Waiting,
            ("InAttendance", _) => Phase::Attending,
            ("Resolved" | "Closed" | "Stopped", true) => Phase::Finished {
                first_contact: Some(
                    if t.get("resolvedInFirstCall").and_then(Value::as_bool).unwrap_or(false) {
                        FirstContact::Resolved
                    } else {
                        FirstContact::Unresolved
                    },
                ),
            },
            ("Canceled", true) => Phase::Cancelled,
            ("Resolved" | "Closed" | "Stopped" | "Canceled", false) => Phase::Abandoned,
            (other, _) => return Err(format!("ticket {id}: unknown baseStatus {other:?}")),
        }
    };
    // A ticket that left `New` with an owner was answered.
    let answered = agent.is_some() && !matches!(phase, Phase::Waiting | Phase::Abandoned | Phase::Deleted);
    let waiting_since = t.get("createdDate").and_then(Value::as_str).and_then(parse_datetime);
    Ok(Some(ChatObservation {
        id: ChatId(id.to_string()),
        labels: ChatLabels {
            app: opt_str(t.get("chatWidget")),
            group: opt_str(t.get("chatGroup")),
            origin: origin_label(origin),
        },
        agent,
        phase,
        answered,
        answered_as: None,
        waiting_since,
        wait_seconds: opt_seconds(t.get("chatWaitingTime")),
        talk_seconds: opt_seconds(t.get("chatTalkTime")),
        last_update,
    }))
}

/// One person to a roster agent: `Ok(None)` for a person who is not an active agent.
pub fn parse_person(p: &Value) -> Result<Option<RosterAgent>, String> {
    let (Some(id), Some(profile)) = (p.get("id").and_then(id_string), p.get("profileType").and_then(Value::as_u64))
    else {
        return Err(format!(
            "person without an id or a numeric profileType: {}",
            crate::source::client::truncate(&p.to_string(), 120)
        ));
    };
    let active = p.get("isActive").and_then(Value::as_bool).unwrap_or(false);
    if !active || !(profile == 1 || profile == 3) {
        return Ok(None);
    }
    let name = p.get("businessName").and_then(Value::as_str).unwrap_or_default().to_string();
    let groups = p
        .get("teams")
        .and_then(Value::as_array)
        .map(|teams| {
            teams
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string).or_else(|| t.get("name")?.as_str().map(str::to_string)))
                .collect()
        })
        .unwrap_or_default();
    // Movidesk's API has no presence: the status is whether the agent attends a chat.
    Ok(Some(RosterAgent { agent: AgentRef { id, name }, apps: Vec::new(), groups, presence: None }))
}
