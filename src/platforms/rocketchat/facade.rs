//! Rocket.Chat's Omnichannel REST API over the world model, as its sources serve it:
//! `X-User-Id` and `X-Auth-Token`, strict query parameters (an unknown one is a 400),
//! `count` capped at 100, a rate limit per route with `X-RateLimit-*` headers and no
//! `Retry-After`, closed rooms without an `open` key, transfers that overwrite
//! `servedBy` and `departmentId` and show only in `transfer.history`, inquiries without a
//! source, and agents' departments as ids.

use std::cmp::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::simulator::world::{Outcome, Presence, State as ConvState};
use crate::simulator::{
    logged_query, respond, Admission, Channel, Conversation, Facade, Fault, Features, HostileRecords, LimitStatus, Refusal,
    Sample, SimState, World,
};

pub const API_PATH: &str = "/api/v1";
/// The id of the user the exporter's token belongs to.
pub const EXPORTER_USER_ID: &str = "exporterUserId01";

/// Rocket.Chat's API in the simulator.
pub struct RocketChatFacade;

impl Facade for RocketChatFacade {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn world_features(&self) -> Features {
        // Rooms are not reopened (a returning visitor gets a new room) and deleted rooms
        // vanish.
        Features { bot: true, hold: true, reopen: false, transfer: true, soft_delete: false }
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

    fn demo_section(&self, base: &str, token: &str, per_minute: u32) -> Value {
        json!({
            "base_url": base,
            "user_id": EXPORTER_USER_ID,
            "token": token,
            "requests_per_minute_per_route": per_minute,
        })
    }
}

fn router() -> Router<SimState> {
    Router::new()
        .route("/api/v1/livechat/inquiries.list", get(inquiries))
        .route("/api/v1/livechat/rooms", get(rooms))
        .route("/api/v1/livechat/transfer.history/{rid}", get(transfer_history))
        .route("/api/v1/livechat/users/{kind}", get(users))
        .route("/api/v1/livechat/department", get(departments))
}

/// `source.type` of each channel, and whether it names an app (`source.alias`).
fn source(channel: Channel) -> (&'static str, bool) {
    match channel {
        Channel::Web | Channel::WebOffline => ("widget", true),
        Channel::WhatsApp | Channel::Messenger => ("app", true),
        Channel::WhatsAppBusiness => ("sms", true),
        Channel::Email => ("email", false),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn room_id(id: u64) -> String {
    format!("R{id:016}")
}

fn departments_list(world: &World) -> Vec<String> {
    let mut names: Vec<String> = world.agents.iter().flat_map(|a| a.groups.iter().cloned()).collect();
    names.extend(world.streams.iter().map(|s| s.group.to_string()));
    names.sort();
    names.dedup();
    names
}

fn department_id(world: &World, name: &str) -> Option<String> {
    departments_list(world).iter().position(|d| d == name).map(|i| format!("dep{:05}", i + 1))
}

/// A room's field that `sort` may name.
fn sort_key(c: &Conversation, field: &str) -> DateTime<Utc> {
    match field {
        "_updatedAt" | "lm" => c.last_update,
        "closedAt" => c.ended_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
        _ => c.created,
    }
}

/// Sorts conversations by `sort` (ties by id, oldest first), then takes the page.
fn sorted_conversations<'a>(
    mut items: Vec<&'a Conversation>,
    sort: &[(String, i64)],
    params: &[(String, String)],
) -> (Vec<&'a Conversation>, usize) {
    items.sort_by(|a, b| {
        for (field, dir) in sort {
            let o = sort_key(a, field).cmp(&sort_key(b, field));
            let o = if *dir < 0 { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    });
    let total = items.len();
    let (offset, count) = paging(params);
    (items.into_iter().skip(offset).take(count).collect(), total)
}

/// When the agent serving it now took it: its first answer, or its last transfer.
fn served_since(c: &Conversation) -> Option<DateTime<Utc>> {
    c.transfers.last().map(|t| t.at).or(c.answered_at)
}

fn room_json(world: &World, c: &Conversation) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), json!(room_id(c.id)));
    m.insert("t".into(), json!("l"));
    m.insert("fname".into(), json!(format!("Visitante {}", c.id)));
    m.insert("ts".into(), json!(iso(c.created)));
    m.insert("lm".into(), json!(iso(c.last_update)));
    m.insert("_updatedAt".into(), json!(iso(c.last_update)));
    m.insert("v".into(), json!({"_id": format!("V{:016}", c.id), "username": format!("guest-{}", c.id),
        "token": format!("tok{}", c.id), "status": if c.is_open() { "online" } else { "offline" }}));
    m.insert("cl".into(), json!(false));
    let (kind, named) = source(c.channel);
    let mut src = json!({ "type": kind });
    if named {
        src["alias"] = json!(c.app);
        src["label"] = json!(c.app);
    }
    m.insert("source".into(), src);
    m.insert("queuedAt".into(), json!(iso(c.queued_at.unwrap_or(c.created))));
    if let Some(d) = department_id(world, &c.group) {
        m.insert("departmentId".into(), json!(d));
        m.insert("department".into(), json!({"_id": d, "name": c.group}));
    }
    if let (Some(agent), Some(since)) = (c.agent.filter(|_| c.answered_at.is_some()), served_since(c)) {
        let a = &world.agents[agent];
        m.insert("servedBy".into(), json!({"_id": a.id, "username": a.username, "ts": iso(since)}));
        m.insert("responseBy".into(), json!({"_id": a.id, "username": a.username, "firstResponseTs": iso(since)}));
    } else {
        m.insert("waitingResponse".into(), json!(true));
    }
    if c.state == ConvState::Held {
        m.insert("onHold".into(), json!(true));
    }
    match (c.state, c.ended_at) {
        (ConvState::Closed, Some(ended)) => {
            // Closing unsets `open`: closed rooms have no such key.
            m.insert("closedAt".into(), json!(iso(ended)));
            let by_visitor = c.outcome == Some(Outcome::Abandoned);
            m.insert("closer".into(), json!(if by_visitor { "visitor" } else { "user" }));
            let mut metrics = json!({"chatDuration": (ended - c.created).num_milliseconds() as f64 / 1000.0});
            if let Some(since) = served_since(c).filter(|_| c.answered_at.is_some()) {
                metrics["serviceTimeDuration"] = json!((ended - since).num_milliseconds() as f64 / 1000.0);
            }
            m.insert("metrics".into(), metrics);
        }
        _ => {
            m.insert("open".into(), json!(true));
        }
    }
    m.insert("livechatData".into(), json!({}));
    m.insert("tags".into(), json!([]));
    Value::Object(m)
}

/// `status` and `statusLivechat` for a presence; busy shows both ways Rocket.Chat has.
fn status(world: &World, index: usize) -> (&'static str, &'static str) {
    match world.presence(index) {
        Presence::Available => ("online", "available"),
        Presence::Busy if index % 2 == 0 => ("busy", "available"),
        Presence::Busy => ("online", "not-available"),
        Presence::Away => ("away", "not-available"),
        Presence::Offline => ("offline", "not-available"),
    }
}

fn agent_json(world: &World, index: usize) -> Value {
    let a = &world.agents[index];
    let (status, livechat) = status(world, index);
    let departments: Vec<String> = a.groups.iter().filter_map(|g| department_id(world, g)).collect();
    json!({"_id": a.id, "username": a.username, "name": a.name, "status": status, "statusLivechat": livechat,
        "emails": [{"address": a.email, "verified": true}], "livechat": {"maxNumberSimultaneousChat": a.capacity},
        "departments": departments})
}

fn failure(status: StatusCode, error: &str, error_type: Option<&str>) -> Response {
    let mut body = json!({"success": false, "error": error});
    if let Some(t) = error_type {
        body["errorType"] = json!(t);
    }
    (status, Json(body)).into_response()
}

/// The rate-limit headers of a route, its reset on the server's clock (that of `Date`).
fn with_limit(state: &SimState, mut response: Response, limit: Option<LimitStatus>) -> Response {
    if let Some(l) = limit {
        let reset = state.platform_now() + chrono::Duration::from_std(l.reset_in).unwrap_or_default();
        let h = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", l.limit.to_string()),
            ("x-ratelimit-remaining", l.remaining.to_string()),
            ("x-ratelimit-reset", reset.timestamp_millis().to_string()),
        ] {
            h.insert(name, HeaderValue::from_str(&value).expect("digits"));
        }
    }
    response
}

/// Checks the credentials, the route's rate limit and its query parameters (`allowed`,
/// `None` for a route that checks none), and takes the next injected fault.
fn admit(
    state: &SimState,
    route: &'static str,
    headers: &HeaderMap,
    params: &[(String, String)],
    allowed: Option<&[&str]>,
) -> Result<(Option<Fault>, Option<LimitStatus>), Refusal> {
    let user = headers.get("x-user-id").and_then(|v| v.to_str().ok());
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
    let authorized = user == Some(EXPORTER_USER_ID) && token.is_some_and(|t| state.token_is(t.as_bytes()));
    match state.admit(route, logged_query(params, &[]), authorized, route) {
        Admission::Unauthorized => {
            let message = "You must be logged in to do this.";
            let body = json!({"success": false, "error": message, "status": "error", "message": message});
            Err(Refusal::from((StatusCode::UNAUTHORIZED, Json(body))))
        }
        Admission::RateLimited(limit) => {
            let error = format!(
                "Error, too many requests. Please slow down. You must wait {} seconds before trying this endpoint again. [error-too-many-requests]",
                limit.retry_after
            );
            Err(Refusal::from(with_limit(state, failure(StatusCode::TOO_MANY_REQUESTS, &error, None), Some(limit))))
        }
        Admission::Serve { fault, limit } => {
            if let Some(allowed) = allowed {
                let known = |k: &str| allowed.contains(&k) || allowed.contains(&k.trim_end_matches("[]"));
                if params.iter().any(|(k, _)| !known(k)) {
                    state.refused(route, 400);
                    let r = failure(
                        StatusCode::BAD_REQUEST,
                        "must NOT have additional properties [invalid-params]",
                        Some("invalid-params"),
                    );
                    return Err(Refusal::from(with_limit(state, r, limit)));
                }
            }
            Ok((fault, limit))
        }
    }
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `count` (default 50, capped at 100, 0 for all) and `offset`.
fn paging(params: &[(String, String)]) -> (usize, usize) {
    let count = match param(params, "count").and_then(|c| c.parse::<usize>().ok()) {
        Some(0) => usize::MAX,
        Some(c) => c.min(100),
        None => 50,
    };
    (param(params, "offset").and_then(|o| o.parse().ok()).unwrap_or(0), count)
}

/// `sort`: JSON of fields and 1 or -1; `Err` as Rocket.Chat's 400.
fn sort_spec(params: &[(String, String)], default: (&str, i64)) -> Result<Vec<(String, i64)>, Refusal> {
    let Some(raw) = param(params, "sort") else { return Ok(vec![(default.0.to_string(), default.1)]) };
    let invalid = || {
        Refusal::from(failure(
            StatusCode::BAD_REQUEST,
            &format!("Invalid sort parameter provided: \"{raw}\" [error-invalid-sort]"),
            Some("error-invalid-sort"),
        ))
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(raw) else { return Err(invalid()) };
    fields
        .into_iter()
        .map(|(k, v)| match v.as_i64() {
            Some(d @ (1 | -1)) => Ok((k, d)),
            _ => Err(invalid()),
        })
        .collect()
}

fn list_body(key: &str, items: Vec<Value>, total: usize, params: &[(String, String)]) -> Value {
    json!({ key: items.clone(), "count": items.len(), "offset": paging(params).0, "total": total, "success": true })
}

/// The records a hostile Rocket.Chat answers with: one unreadable, and a room updated in
/// 2099.
fn hostile() -> HostileRecords {
    fn from_the_future(room: &Value) -> Option<Value> {
        let mut future = room.clone();
        future.get("_updatedAt")?;
        future["_updatedAt"] = json!("2099-01-01T00:00:00.000Z");
        future["_id"] = json!(format!("future-{}", room.get("_id").and_then(Value::as_str).unwrap_or_default()));
        Some(future)
    }
    HostileRecords { garbage: json!({"_id": 7, "t": "l", "_updatedAt": "yesterday", "status": null}), from_the_future }
}

async fn finish(
    state: &SimState,
    body: Value,
    key: &str,
    fault: Option<Fault>,
    limit: Option<LimitStatus>,
) -> Result<Response, Refusal> {
    let limit = match &fault {
        Some(Fault::LimitExhausted { seconds }) => Some(LimitStatus {
            limit: limit.map_or(10, |l| l.limit),
            remaining: 0,
            reset_in: std::time::Duration::from_secs(*seconds),
            retry_after: 0,
        }),
        _ => limit,
    };
    Ok(with_limit(state, respond(body, fault, &[key], hostile()).await, limit))
}

fn visible(c: &Conversation) -> bool {
    !c.purged && !c.deleted()
}

async fn inquiries(State(state): State<SimState>, headers: HeaderMap, Query(params): Query<Vec<(String, String)>>) -> Result<Response, Refusal> {
    let (fault, limit) = admit(&state, "inquiries", &headers, &params, Some(&["count", "offset", "sort", "department"]))?;
    let sort = sort_spec(&params, ("ts", -1))?;
    let body = {
        let world = &state.world();
        // Queued inquiries only; a pre-queued (`ready`) one is not listed.
        let waiting: Vec<&Conversation> =
            world.open_conversations().filter(|c| visible(c) && c.state == ConvState::Waiting).collect();
        let (page, total) = sorted_conversations(waiting, &sort, &params);
        let items: Vec<Value> = page
            .into_iter()
            .map(|c| {
                let mut i = json!({"_id": format!("{:024x}", c.id), "rid": room_id(c.id), "name": format!("Visitante {}", c.id),
                    "ts": iso(c.created), "status": "queued"});
                if let Some(d) = department_id(world, &c.group) {
                    i["department"] = json!(d);
                }
                i
            })
            .collect();
        list_body("inquiries", items, total, &params)
    };
    finish(&state, body, "inquiries", fault, limit).await
}

const ROOM_PARAMS: &[&str] = &[
    "count", "offset", "sort", "query", "fields", "createdAt", "customFields", "closedAt", "agents", "roomName",
    "departmentId", "open", "onhold", "queued", "tags", "units",
];

/// The parameters of a server older than the `queued` filter (`older_version`): its `open=true`
/// lists every open room not on hold, served or not.
const OLDER_ROOM_PARAMS: &[&str] = &[
    "count", "offset", "sort", "query", "fields", "createdAt", "customFields", "closedAt", "agents", "roomName",
    "departmentId", "open", "onhold", "tags",
];

async fn rooms(State(state): State<SimState>, headers: HeaderMap, Query(params): Query<Vec<(String, String)>>) -> Result<Response, Refusal> {
    let older = state.rendering().older_version;
    let (fault, limit) = admit(&state, "rooms", &headers, &params, Some(if older { OLDER_ROOM_PARAMS } else { ROOM_PARAMS }))?;
    let sort = sort_spec(&params, ("ts", -1))?;
    let truthy = |k: &str| param(&params, k).is_some_and(|v| matches!(v, "t" | "true" | "1"));
    let open = match param(&params, "open") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let body = {
        let world = &state.world();
        let items: Vec<&Conversation> = world
            .conversations
            .iter()
            .filter(|c| visible(c))
            .filter(|c| {
                let served = c.answered_at.is_some() && c.agent.is_some();
                let held = c.state == ConvState::Held;
                if truthy("queued") {
                    return c.is_open() && !served && !held;
                }
                if truthy("onhold") {
                    return held;
                }
                match open {
                    // `open` filters on the key's existence, leaves rooms on hold out, and
                    // with `true` wants a served room (since the `queued` filter came).
                    Some(true) => c.is_open() && !held && (served || older),
                    Some(false) => !c.is_open() && !held,
                    None => true,
                }
            })
            .collect();
        let (page, total) = sorted_conversations(items, &sort, &params);
        list_body("rooms", page.into_iter().map(|c| room_json(world, c)).collect(), total, &params)
    };
    finish(&state, body, "rooms", fault, limit).await
}

async fn transfer_history(
    State(state): State<SimState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    // This route checks no parameters; one rate-limit counter covers every room. The log
    // names the room, for tests that count the reads of each.
    let logged: Vec<(String, String)> = params.iter().cloned().chain([("rid".to_string(), rid.clone())]).collect();
    let (fault, limit) = admit(&state, "transfer_history", &headers, &logged, None)?;
    // Records written before a server upgrade: `transferredBy.type` where newer ones write
    // `userType`, and the previous department as an object.
    let older = state.rendering().older_version;
    let body = {
        let world = &state.world();
        let id = rid.strip_prefix('R').and_then(|n| n.parse::<u64>().ok());
        id.and_then(|id| world.conversation(id)).filter(|c| visible(c)).map(|c| {
        let items: Vec<Value> = c
            .transfers
            .iter()
            .map(|t| {
                let (from, to) = (&world.agents[t.from_agent], &world.agents[t.to_agent]);
                let user_type = if older { "type" } else { "userType" };
                let mut item = json!({
                    "transferredBy": {"_id": from.id, "username": from.username, "name": from.name, user_type: "agent"},
                    "ts": iso(t.at),
                    "scope": if t.from_group == t.to_group { "agent" } else { "department" },
                    "transferredTo": {"_id": to.id, "username": to.username, "name": to.name},
                });
                if let Some(d) = department_id(world, &t.from_group) {
                    item["previousDepartment"] = if older { json!({"_id": d, "name": t.from_group}) } else { json!(d) };
                }
                if t.from_group != t.to_group {
                    item["nextDepartment"] = json!({"_id": department_id(world, &t.to_group), "name": t.to_group});
                }
                item
            })
            .collect();
            let (offset, count) = paging(&params);
            if fault == Some(Fault::EndlessList) && !items.is_empty() {
                // After the real transfers, new made-up ones on every page.
                let page: Vec<Value> = (offset..offset.saturating_add(count.min(100)))
                    .map(|n| {
                        items.get(n).cloned().unwrap_or_else(|| {
                            let mut echo = items[0].clone();
                            echo["_id"] = json!(format!("endless-{n}"));
                            echo
                        })
                    })
                    .collect();
                return list_body("history", page, 1_000_000_000, &params);
            }
            let total = items.len();
            let page: Vec<Value> = items.into_iter().skip(offset).take(count).collect();
            list_body("history", page, total, &params)
        })
    };
    // The world is let go first: the rate-limit headers read the clock.
    let Some(body) = body else {
        return Err(Refusal::from(with_limit(&state, failure(StatusCode::BAD_REQUEST, "invalid-room", None), limit)));
    };
    finish(&state, body, "history", fault, limit).await
}

async fn users(
    State(state): State<SimState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let allowed: &[&str] = &["text", "onlyAvailable", "excludeId", "showIdleAgents", "count", "offset", "sort", "query", "fields"];
    let (fault, limit) = admit(&state, "users_agent", &headers, &params, Some(allowed))?;
    if kind != "agent" {
        return Err(Refusal::from(with_limit(&state, failure(StatusCode::BAD_REQUEST, "Invalid type", None), limit)));
    }
    let body = {
        let world = &state.world();
        let mut items: Vec<Value> =
            (0..world.agents.len()).filter(|i| world.agents[*i].active).map(|i| agent_json(world, i)).collect();
        items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let total = items.len();
        let (offset, count) = paging(&params);
        list_body("users", items.into_iter().skip(offset).take(count).collect(), total, &params)
    };
    finish(&state, body, "users", fault, limit).await
}

async fn departments(
    State(state): State<SimState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Refusal> {
    let allowed: &[&str] =
        &["text", "onlyMyDepartments", "enabled", "excludeDepartmentId", "showArchived", "count", "offset", "sort", "query"];
    let (fault, limit) = admit(&state, "department", &headers, &params, Some(allowed))?;
    let body = {
        let items: Vec<Value> = departments_list(&state.world())
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"_id": format!("dep{:05}", i + 1), "name": name, "enabled": true, "showOnRegistration": true,
                    "showOnOfflineForm": true, "email": "", "numAgents": 0, "_updatedAt": "2026-01-10T12:00:00.000Z"})
            })
            .collect();
        let total = items.len();
        let (offset, count) = paging(&params);
        list_body("departments", items.into_iter().skip(offset).take(count).collect(), total, &params)
    };
    finish(&state, body, "departments", fault, limit).await
}
