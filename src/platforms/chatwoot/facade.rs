//! Chatwoot's application API over the world model, as its Rails views write it: the
//! token in the `api_access_token` header, per-account paths, conversation lists wrapped
//! in `{"data":{"meta","payload"}}`, 25 per page by offset over a live ordering,
//! `updated_within` unpaginated, timestamps in Unix seconds and `0` when unset,
//! `meta.assignee`/`meta.team` absent when unset, and rack-attack's plain-text 429
//! without `Retry-After`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::simulator::world::{Presence, State as ConvState};
use crate::simulator::{
    logged_query, respond, Admission, Channel, Conversation, Facade, Fault, Features, HostileRecords, Refusal, Sample,
    SimState, World,
};

pub const ACCOUNT_ID: u64 = 7;
pub const API_PATH: &str = "/api/v1/accounts/7";
pub const PAGE_SIZE: usize = 25;

/// Chatwoot's API in the simulator.
pub struct ChatwootFacade;

impl Facade for ChatwootFacade {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn world_features(&self) -> Features {
        Features { bot: true, hold: true, reopen: true, transfer: true, soft_delete: false }
    }

    fn router(&self) -> Router<SimState> {
        router()
    }

    fn api_path(&self) -> &'static str {
        API_PATH
    }

    fn truth(&self, world: &World) -> Vec<Sample> {
        super::truth::truth(world)
    }

    fn histograms(&self) -> &'static [(&'static str, &'static [f64])] {
        // The contract leaves out the wait and duration histograms (docs/metrics.md).
        &[]
    }

    fn demo_section(&self, base: &str, token: &str, _per_minute: u32) -> Value {
        json!({ "base_url": base, "account_id": ACCOUNT_ID, "token": token })
    }
}

fn router() -> Router<SimState> {
    Router::new()
        .route("/api/v1/accounts/{account}/conversations", get(conversations))
        .route("/api/v1/accounts/{account}/conversations/meta", get(meta))
        .route("/api/v1/accounts/{account}/agents", get(agents))
        .route("/api/v1/accounts/{account}/inboxes", get(inboxes))
        .route("/api/v1/accounts/{account}/teams", get(teams))
        .route("/api/v1/accounts/{account}/teams/{team}/team_members", get(team_members))
}

/// The inbox class and medium of each channel.
fn channel_type(channel: Channel) -> (&'static str, Option<&'static str>) {
    match channel {
        Channel::Web | Channel::WebOffline => ("Channel::WebWidget", None),
        Channel::WhatsApp => ("Channel::Whatsapp", None),
        Channel::WhatsAppBusiness => ("Channel::TwilioSms", Some("whatsapp")),
        Channel::Messenger => ("Channel::FacebookPage", None),
        Channel::Email => ("Channel::Email", None),
    }
}

/// Inboxes: one per application and channel class, numbered in the order the world
/// lists its streams.
fn inbox_ids(world: &World) -> Vec<(String, &'static str, Option<&'static str>)> {
    let mut inboxes = Vec::new();
    for s in &world.streams {
        let (class, medium) = channel_type(s.channel);
        let key = (s.app.to_string(), class, medium);
        if !inboxes.contains(&key) {
            inboxes.push(key);
        }
    }
    inboxes
}

fn inbox_of(world: &World, c: &Conversation) -> u64 {
    let (class, medium) = channel_type(c.channel);
    inbox_ids(world).iter().position(|(app, cl, m)| *app == c.app && *cl == class && *m == medium).unwrap_or(0) as u64 + 1
}

/// Teams, numbered by name.
fn teams_list(world: &World) -> Vec<String> {
    let mut names: Vec<String> = world.agents.iter().flat_map(|a| a.groups.iter().cloned()).collect();
    names.extend(world.streams.iter().map(|s| s.group.to_string()));
    names.sort();
    names.dedup();
    names
}

fn availability(presence: Presence) -> &'static str {
    // Chatwoot has no "away": an agent who stepped away reads busy.
    match presence {
        Presence::Available => "online",
        Presence::Busy | Presence::Away => "busy",
        Presence::Offline => "offline",
    }
}

fn agent_json(world: &World, index: usize) -> Value {
    let a = &world.agents[index];
    json!({
        "id": index + 1,
        "account_id": ACCOUNT_ID,
        "availability_status": availability(world.presence(index)),
        "auto_offline": true,
        "confirmed": true,
        "email": a.email,
        "provider": "email",
        "available_name": a.name,
        "name": a.name,
        "role": "agent",
        "thumbnail": "",
    })
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn status_of(c: &Conversation) -> &'static str {
    match c.state {
        ConvState::Bot => "pending",
        ConvState::Waiting | ConvState::Attending => "open",
        ConvState::Held => "snoozed",
        ConvState::Closed => "resolved",
    }
}

fn conversation_json(world: &World, c: &Conversation) -> Value {
    let status = status_of(c);
    let (class, _) = channel_type(c.channel);
    let mut meta = Map::new();
    meta.insert(
        "sender".into(),
        json!({"id": 1000 + c.id, "name": format!("Cliente {}", c.id), "availability_status": "offline",
               "email": null, "phone_number": null, "identifier": null, "thumbnail": "", "custom_attributes": {},
               "additional_attributes": {}, "blocked": false}),
    );
    meta.insert("channel".into(), json!(class));
    if let Some(agent) = c.agent.filter(|_| c.state != ConvState::Waiting && c.state != ConvState::Bot) {
        meta.insert("assignee".into(), agent_json(world, agent));
        meta.insert("assignee_type".into(), json!("User"));
    }
    let teams = teams_list(world);
    if let Some(team) = teams.iter().position(|t| *t == c.group) {
        meta.insert(
            "team".into(),
            json!({"id": team + 1, "name": c.group, "description": "", "allow_auto_assign": true,
                   "account_id": ACCOUNT_ID, "is_member": false}),
        );
    }
    meta.insert("hmac_verified".into(), json!(false));
    let waiting_since = match c.state {
        ConvState::Bot | ConvState::Waiting => secs(c.created),
        _ => 0,
    };
    json!({
        "meta": meta,
        "id": c.id,
        "messages": [],
        "account_id": ACCOUNT_ID,
        "uuid": format!("00000000-0000-4000-8000-{:012}", c.id),
        "additional_attributes": {},
        "agent_last_seen_at": 0,
        "assignee_last_seen_at": 0,
        "can_reply": true,
        "contact_last_seen_at": 0,
        "custom_attributes": {},
        "inbox_id": inbox_of(world, c),
        "labels": [],
        "muted": false,
        "snoozed_until": c.held_since.map(|_| c.last_update.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "status": status,
        "created_at": secs(c.created),
        "updated_at": c.last_update.timestamp_millis() as f64 / 1000.0,
        "timestamp": secs(c.last_update),
        "first_reply_created_at": c.answered_at.map_or(0, secs),
        "unread_count": 0,
        "last_activity_at": secs(c.last_update),
        "priority": null,
        "waiting_since": waiting_since,
        "sla_policy_id": null,
    })
}

/// `body` as the version simulated writes it. Older versions (their API description, and
/// conversation views before `updated_at` was added) write an agent's presence
/// `available` where the server now sends `online`, and a conversation without
/// `updated_at`, its `timestamp` (the last activity) its only time of change.
fn rendered(state: &SimState, mut body: Value) -> Value {
    fn older(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("updated_at");
                if m.get("availability_status").and_then(Value::as_str) == Some("online") {
                    m.insert("availability_status".into(), json!("available"));
                }
                m.values_mut().for_each(older);
            }
            Value::Array(items) => items.iter_mut().for_each(older),
            _ => {}
        }
    }
    if state.rendering().older_version {
        older(&mut body);
    }
    body
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Resource could not be found"}))).into_response()
}

/// Checks the account, the token and the rate limit, and takes the next injected fault;
/// a refusal comes back as Chatwoot writes it.
fn admit(
    state: &SimState,
    endpoint: &'static str,
    account: u64,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Option<Fault>, Refusal> {
    let token = headers.get("api_access_token").or_else(|| headers.get("api-access-token"));
    let authorized = token.is_some_and(|t| state.token_is(t.as_bytes()));
    match state.admit(endpoint, logged_query(params, &[]), authorized, "ip") {
        Admission::Unauthorized if token.is_none() => Err(Refusal::from((
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": ["You need to sign in or sign up before continuing."]})),
        ))),
        Admission::Unauthorized => {
            Err(Refusal::from((StatusCode::UNAUTHORIZED, Json(json!({"error": "Invalid Access Token"})))))
        }
        // rack-attack's default answer: plain text, no Retry-After.
        Admission::RateLimited(_) => Err(Refusal::from(
            (StatusCode::TOO_MANY_REQUESTS, [("content-type", "text/plain")], "Retry later\n").into_response(),
        )),
        Admission::Serve { .. } if account != ACCOUNT_ID => Err(Refusal::from(not_found())),
        Admission::Serve { fault, .. } => Ok(fault),
    }
}

/// The records a hostile Chatwoot answers with: one unreadable, and a conversation
/// updated in 2099.
fn hostile() -> HostileRecords {
    fn from_the_future(conversation: &Value) -> Option<Value> {
        let mut future = conversation.clone();
        future.get("updated_at")?;
        future["updated_at"] = json!(4_070_908_800u64);
        future["id"] = json!(10_000_000 + conversation.get("id").and_then(Value::as_u64).unwrap_or(0));
        Some(future)
    }
    HostileRecords { garbage: json!({"id": "x", "status": 3, "inbox_id": null, "updated_at": "yesterday"}), from_the_future }
}

async fn conversations(
    State(state): State<SimState>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "conversations", account, &headers, &params)?;
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let body = {
        let world = &state.world();
        let status = param("status").unwrap_or("open");
        let mut items: Vec<&Conversation> = world
            .conversations
            .iter()
            .filter(|c| !c.purged && !c.deleted())
            .filter(|c| status == "all" || status_of(c) == status)
            .filter(|c| match param("assignee_type") {
                Some("assigned") => c.agent.is_some() && !matches!(c.state, ConvState::Waiting | ConvState::Bot),
                Some("unassigned") => c.agent.is_none() || matches!(c.state, ConvState::Waiting | ConvState::Bot),
                _ => true,
            })
            .collect();
        let all_count = items.len();
        let unassigned = items.iter().filter(|c| matches!(c.state, ConvState::Waiting | ConvState::Bot)).count();
        match param("sort_by") {
            Some("created_at_asc") => items.sort_by_key(|c| c.created),
            Some("created_at_desc") => items.sort_by_key(|c| std::cmp::Reverse(c.created)),
            // The default, and what unknown values fall back to: the live ordering.
            _ => items.sort_by_key(|c| std::cmp::Reverse(c.last_update)),
        }
        let items: Vec<Value> = match param("updated_within") {
            Some(seconds) => {
                // `updated_at > now - N`, every match at once.
                let seconds: i64 = seconds.parse().unwrap_or(0);
                let since = world.now - chrono::Duration::seconds(seconds.min(100 * 365 * 86_400));
                items.into_iter().filter(|c| c.last_update > since).map(|c| conversation_json(world, c)).collect()
            }
            None => {
                let page: usize = param("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
                items.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).map(|c| conversation_json(world, c)).collect()
            }
        };
        json!({"data": {"meta": {"mine_count": 0, "assigned_count": all_count - unassigned,
            "unassigned_count": unassigned, "all_count": all_count}, "payload": items}})
    };
    Ok(respond(rendered(&state, body), fault, &["data", "payload"], hostile()).await)
}

async fn meta(
    State(state): State<SimState>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "conversations_meta", account, &headers, &params)?;
    let body = {
        let world = state.world();
        let open: Vec<&Conversation> =
            world.open_conversations().filter(|c| matches!(c.state, ConvState::Waiting | ConvState::Attending)).collect();
        let unassigned = open.iter().filter(|c| c.state == ConvState::Waiting).count();
        json!({"meta": {"mine_count": 0, "assigned_count": open.len() - unassigned, "unassigned_count": unassigned,
            "all_count": open.len()}})
    };
    Ok(respond(rendered(&state, body), fault, &[], hostile()).await)
}

async fn agents(
    State(state): State<SimState>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "agents", account, &headers, &params)?;
    let body = {
        let world = &state.world();
        // Agents who left were removed from the account.
        let mut list: Vec<(String, Value)> = (0..world.agents.len())
            .filter(|i| world.agents[*i].active)
            .map(|i| (world.agents[i].name.to_lowercase(), agent_json(world, i)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(list.into_iter().map(|(_, v)| v).collect())
    };
    Ok(respond(rendered(&state, body), fault, &[], hostile()).await)
}

async fn inboxes(
    State(state): State<SimState>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "inboxes", account, &headers, &params)?;
    let body = {
        let items: Vec<Value> = inbox_ids(&state.world())
            .into_iter()
            .enumerate()
            .map(|(i, (name, class, medium))| {
                let mut inbox = json!({"id": i + 1, "avatar_url": "", "channel_id": i + 1, "name": name,
                    "channel_type": class, "greeting_enabled": false, "working_hours_enabled": false,
                    "enable_auto_assignment": true, "phone_number": null, "widget_color": null, "website_token": null});
                if let Some(medium) = medium {
                    inbox["medium"] = json!(medium);
                }
                inbox
            })
            .collect();
        json!({ "payload": items })
    };
    Ok(respond(rendered(&state, body), fault, &["payload"], hostile()).await)
}

async fn teams(
    State(state): State<SimState>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "teams", account, &headers, &params)?;
    let body = {
        let items: Vec<Value> = teams_list(&state.world())
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"id": i + 1, "name": name, "description": "", "allow_auto_assign": true,
                       "account_id": ACCOUNT_ID, "is_member": false})
            })
            .collect();
        Value::Array(items)
    };
    Ok(respond(rendered(&state, body), fault, &[], hostile()).await)
}

async fn team_members(
    State(state): State<SimState>,
    Path((account, team)): Path<(u64, u64)>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "team_members", account, &headers, &params)?;
    let body = {
        let world = &state.world();
        let teams = teams_list(world);
        let Some(name) = team.checked_sub(1).and_then(|i| teams.get(i as usize)) else {
            return Err(Refusal::from(not_found()));
        };
        let members: BTreeMap<usize, Value> = (0..world.agents.len())
            .filter(|i| world.agents[*i].active && world.agents[*i].groups.contains(name))
            .map(|i| (i, agent_json(world, i)))
            .collect();
        Value::Array(members.into_values().collect())
    };
    Ok(respond(rendered(&state, body), fault, &[], hostile()).await)
}
