//! Reading Rocket.Chat's records (livechat rooms, inquiries, agents, transfer history)
//! into the neutral model, by the contract: closed rooms have no `open` key, transfers
//! overwrite `servedBy` and `departmentId`, dates are ISO 8601 with milliseconds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{AgentRef, ChatId, ChatLabels, ChatObservation, FirstContact, Phase, Presence};

pub fn date(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v? {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim()).ok().map(|d| d.with_timezone(&Utc)),
        // EJSON, as `method.call` answers write dates.
        Value::Object(o) => o.get("$date")?.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The neutral presence of an agent, from `status` and `statusLivechat`.
pub fn presence(status: Option<&str>, livechat: Option<&str>) -> Option<Presence> {
    Some(match (status?, livechat) {
        ("online", Some("available")) => Presence::Available,
        ("online", _) => Presence::Busy,
        ("away", _) => Presence::Away,
        ("busy", _) => Presence::Busy,
        ("offline" | "disabled", _) => Presence::Offline,
        _ => return None,
    })
}

/// An agent: (id, username), presence, department ids.
pub fn parse_agent(v: &Value) -> Result<(AgentRef, Option<Presence>, Vec<String>), String> {
    let id = text(v.get("_id")).ok_or("agent without an _id")?;
    let username = text(v.get("username")).ok_or_else(|| format!("agent {id}: no username"))?;
    let presence = presence(v.get("status").and_then(Value::as_str), v.get("statusLivechat").and_then(Value::as_str));
    let departments = v
        .get("departments")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(|x| text(Some(x))).collect())
        .unwrap_or_default();
    Ok((AgentRef { id, name: username }, presence, departments))
}

/// A room as the exporter reads it, before its phase is known for certain.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    pub id: String,
    pub labels: ChatLabels,
    /// `servedBy`: the agent serving it now, or who served it last.
    pub served_by: Option<AgentRef>,
    pub open: bool,
    pub on_hold: bool,
    pub created: Option<DateTime<Utc>>,
    /// When it entered the queue (`queuedAt`), or its creation.
    pub queued_at: Option<DateTime<Utc>>,
    pub updated: DateTime<Utc>,
}

/// One room: `Ok(None)` for an e-mail room, which never counts. `departments` names the
/// department ids rooms carry without their name.
pub fn parse_room(v: &Value, departments: &HashMap<String, String>) -> Result<Option<Room>, String> {
    let id = text(v.get("_id")).ok_or("room without an _id")?;
    let source = v.get("source");
    let origin = text(source.and_then(|s| s.get("type"))).unwrap_or_else(|| "other".to_string());
    if origin == "email" {
        return Ok(None);
    }
    let updated = date(v.get("_updatedAt")).ok_or_else(|| format!("room {id}: _updatedAt missing or not a date"))?;
    let group = text(v.get("department").and_then(|d| d.get("name")))
        .or_else(|| text(v.get("departmentId")).and_then(|d| departments.get(&d).cloned()))
        .unwrap_or_default();
    let served_by = v.get("servedBy").filter(|s| s.is_object()).and_then(|s| {
        Some(AgentRef { id: text(s.get("_id"))?, name: text(s.get("username")).unwrap_or_default() })
    });
    let created = date(v.get("ts"));
    Ok(Some(Room {
        id,
        labels: ChatLabels { app: text(source.and_then(|s| s.get("alias"))).unwrap_or_default(), group, origin },
        served_by,
        // Closed rooms have no `open` key at all.
        open: v.get("open").and_then(Value::as_bool).unwrap_or(false) && v.get("closedAt").is_none_or(Value::is_null),
        on_hold: v.get("onHold").and_then(Value::as_bool).unwrap_or(false),
        created,
        queued_at: date(v.get("queuedAt")).or(created),
        updated,
    }))
}

/// What a room's transfer history says: whether it was transferred, and who served it
/// first with the department it had then (from the first transfer). Saved in the state
/// file, so that a restart does not read it again.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub transferred: bool,
    pub first: Option<(AgentRef, Option<String>)>,
}

pub fn parse_history(items: &[Value], departments: &HashMap<String, String>) -> History {
    let first = items.first().and_then(|t| {
        let by = t.get("transferredBy")?;
        // Only a transfer by the serving agent names who served before it. Records written
        // before a server upgrade say `type` where newer ones say `userType`.
        let user_type = by.get("userType").or_else(|| by.get("type"));
        if user_type.and_then(Value::as_str) != Some("agent") {
            return None;
        }
        let agent = AgentRef { id: text(by.get("_id"))?, name: text(by.get("username"))? };
        // An id, or (older records) an object with one.
        let previous = t.get("previousDepartment");
        let department = text(previous.and_then(|d| d.get("_id")).or(previous))
            .map(|d| departments.get(&d).cloned().unwrap_or_default());
        Some((agent, department))
    });
    History { transferred: !items.is_empty(), first }
}

impl Room {
    /// The observation of this room: `queued` says whether its inquiry waits in the queue
    /// (an open room nobody serves is otherwise with a bot or pre-queued: `ready`).
    pub fn observe(&self, queued: bool, history: Option<&History>) -> ChatObservation {
        let answered = self.served_by.is_some();
        let phase = match (self.open, answered) {
            (true, true) => Phase::Attending,
            (true, false) if queued => Phase::Waiting,
            (true, false) => Phase::Parked,
            (false, true) => Phase::Finished {
                first_contact: history.map(|h| if h.transferred { FirstContact::Unresolved } else { FirstContact::Resolved }),
            },
            (false, false) => Phase::Abandoned,
        };
        let answered_as = history.and_then(|h| h.first.clone()).map(|(agent, department)| {
            let mut labels = self.labels.clone();
            if let Some(d) = department {
                labels.group = d;
            }
            (labels, Some(agent))
        });
        ChatObservation {
            id: ChatId(self.id.clone()),
            labels: self.labels.clone(),
            agent: self.served_by.clone(),
            phase,
            answered,
            answered_as,
            waiting_since: if phase == Phase::Waiting { self.queued_at } else { self.created },
            wait_seconds: None,
            talk_seconds: None,
            last_update: self.updated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transfer written by today's server and the same one written before an upgrade
    /// (`transferredBy.type`, `previousDepartment` as an object) name the same first agent
    /// and department.
    #[test]
    fn transfer_records_of_older_servers_name_the_first_agent_and_department() {
        let departments: HashMap<String, String> = [("dep1".to_string(), "Suporte".to_string())].into();
        let agent = AgentRef { id: "u1".into(), name: "ana".into() };
        let newer = serde_json::json!([{"transferredBy": {"_id": "u1", "username": "ana", "userType": "agent"},
            "previousDepartment": "dep1", "scope": "department"}]);
        let older = serde_json::json!([{"transferredBy": {"_id": "u1", "username": "ana", "type": "agent"},
            "previousDepartment": {"_id": "dep1", "name": "Suporte"}, "scope": "department"}]);
        for items in [newer, older] {
            let history = parse_history(items.as_array().unwrap(), &departments);
            assert!(history.transferred);
            assert_eq!(history.first, Some((agent.clone(), Some("Suporte".to_string()))), "{items}");
        }
        let by_a_visitor = serde_json::json!([{"transferredBy": {"_id": "v", "username": "v", "type": "visitor"}}]);
        assert_eq!(parse_history(by_a_visitor.as_array().unwrap(), &departments).first, None);
    }

    #[test]
    fn presence_follows_the_contracts_table() {
        assert_eq!(presence(Some("online"), Some("available")), Some(Presence::Available));
        assert_eq!(presence(Some("online"), Some("not-available")), Some(Presence::Busy));
        assert_eq!(presence(Some("away"), Some("available")), Some(Presence::Away));
        assert_eq!(presence(Some("busy"), Some("available")), Some(Presence::Busy));
        assert_eq!(presence(Some("offline"), None), Some(Presence::Offline));
        assert_eq!(presence(Some("elsewhere"), None), None);
    }

    #[test]
    fn closed_rooms_have_no_open_key_and_email_rooms_never_count() {
        let d = HashMap::from([("d1".to_string(), "Suporte".to_string())]);
        let closed = serde_json::json!({"_id": "r1", "t": "l", "_updatedAt": "2026-11-02T10:00:00.000Z",
            "ts": "2026-11-02T09:00:00.000Z", "closedAt": "2026-11-02T10:00:00.000Z", "departmentId": "d1",
            "servedBy": {"_id": "a1", "username": "ana"}, "source": {"type": "widget", "alias": "Site"}});
        let room = parse_room(&closed, &d).unwrap().unwrap();
        assert!(!room.open);
        assert_eq!(room.labels, ChatLabels { app: "Site".into(), group: "Suporte".into(), origin: "widget".into() });
        let email = serde_json::json!({"_id": "r2", "_updatedAt": "2026-11-02T10:00:00.000Z", "source": {"type": "email"}});
        assert_eq!(parse_room(&email, &d), Ok(None));
    }
}
