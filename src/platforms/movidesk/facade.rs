//! Movidesk's public API over the world model: `/public/v1/tickets` and
//! `/public/v1/persons`, with the token in the query string, the OData subset, pages of
//! at most 100, zone-less dates and the per-token rate limit with `Retry-After`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::odata::{order_values, parse_filter, parse_orderby};
use crate::simulator::world::{Outcome, Stage, State as ConvState};
use crate::simulator::{
    logged_query, respond, Admission, Channel, Conversation, DateStyle, Facade, Fault, Features, HostileRecords, Refusal,
    Rendering, Sample, SimState, World,
};

pub const API_PATH: &str = "/public/v1";
pub const MAX_PAGE: usize = 100;

/// Movidesk's API in the simulator.
pub struct MovideskFacade;

impl Facade for MovideskFacade {
    fn name(&self) -> &'static str {
        super::NAME
    }

    fn world_features(&self) -> Features {
        // Movidesk shows deleted tickets (`isDeleted`); it has no bot, hold or transfer
        // states the exporter reads, and tickets are not reopened in this model.
        Features { soft_delete: true, ..Features::default() }
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
        super::truth::HISTOGRAMS
    }

    fn demo_section(&self, base: &str, token: &str, _per_minute: u32) -> Value {
        json!({ "base_url": format!("{base}{API_PATH}"), "token": token })
    }
}

fn router() -> Router<SimState> {
    Router::new().route("/public/v1/tickets", get(tickets)).route("/public/v1/persons", get(persons))
}

/// Movidesk's origin codes for the world's channels.
fn origin_code(channel: Channel) -> u16 {
    match channel {
        Channel::Web => 5,
        Channel::WebOffline => 6,
        Channel::WhatsApp => 18,
        Channel::WhatsAppBusiness => 23,
        Channel::Messenger => 22,
        Channel::Email => 3,
    }
}

/// Movidesk's date format: UTC, no zone designator, seven fractional digits.
pub fn format_date(t: DateTime<Utc>) -> String {
    format!("{}.{:07}", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100)
}

fn render_date(t: DateTime<Utc>, style: DateStyle) -> String {
    match style {
        DateStyle::Fraction7NoZone => format_date(t),
        DateStyle::NoFractionNoZone => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        DateStyle::Zulu => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        DateStyle::Offset => t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string(),
    }
}

fn opt_date(t: Option<DateTime<Utc>>, style: DateStyle) -> Value {
    t.map(|t| Value::String(render_date(t, style))).unwrap_or(Value::Null)
}

/// The ticket's `baseStatus`, and when it was resolved, closed or cancelled.
struct Status {
    base: &'static str,
    resolved_in: Option<DateTime<Utc>>,
    closed_in: Option<DateTime<Utc>>,
    canceled_in: Option<DateTime<Utc>>,
}

fn status(c: &Conversation) -> Status {
    let none = |base| Status { base, resolved_in: None, closed_in: None, canceled_in: None };
    match (c.state, c.outcome) {
        (ConvState::Bot | ConvState::Waiting, _) => none("New"),
        (ConvState::Attending | ConvState::Held, _) => none("InAttendance"),
        // A deleted ticket keeps its status; `isDeleted` says it is gone.
        (ConvState::Closed, Some(Outcome::Deleted)) => none("New"),
        (ConvState::Closed, Some(Outcome::Cancelled | Outcome::Abandoned)) => {
            Status { canceled_in: c.ended_at, ..none("Canceled") }
        }
        (ConvState::Closed, outcome) => {
            let solved_at = if outcome == Some(Outcome::FollowUp) {
                (c.stage != Stage::Ended).then_some(c.stage_at).flatten()
            } else {
                c.ended_at
            };
            let base = match (outcome, c.stage) {
                (_, Stage::Archived) => "Closed",
                (Some(Outcome::FollowUp), Stage::Ended) => "Stopped",
                _ => "Resolved",
            };
            let closed_in = (c.stage == Stage::Archived).then_some(c.stage_at).flatten();
            Status { base, resolved_in: solved_at, closed_in, canceled_in: None }
        }
    }
}

fn person_json(world: &World, index: usize) -> Value {
    let a = &world.agents[index];
    json!({
        "id": a.id,
        "personType": 1,
        "profileType": 1,
        "businessName": a.name,
        "email": a.email,
        "phone": null,
    })
}

pub fn ticket_json(world: &World, c: &Conversation, expand_owner: bool, r: &Rendering) -> Value {
    // Ids come back as strings for some tickets, as on the real API.
    let id = if r.ids_as_strings || c.id.is_multiple_of(3) { Value::String(c.id.to_string()) } else { json!(c.id) };
    let date = |d: DateTime<Utc>| json!(render_date(d, r.dates));
    let st = status(c);
    let status_name = match st.base {
        "New" => "Novo",
        "InAttendance" => "Em atendimento",
        "Stopped" => "Aguardando",
        "Canceled" => "Cancelado",
        "Resolved" => "Resolvido",
        _ => "Fechado",
    };
    let is_chat = c.is_chat();
    let mut m = Map::new();
    m.insert("id".into(), id);
    m.insert("protocol".into(), json!(format!("{:08}", c.id)));
    m.insert("type".into(), json!(2));
    m.insert("subject".into(), json!(if is_chat { "Chat" } else { "E-mail" }));
    m.insert("status".into(), json!(status_name));
    m.insert("baseStatus".into(), json!(st.base));
    m.insert("origin".into(), json!(origin_code(c.channel)));
    m.insert("createdDate".into(), date(c.created));
    m.insert("isDeleted".into(), json!(c.deleted()));
    m.insert("ownerTeam".into(), if c.agent.is_some() && is_chat { json!(c.group) } else { Value::Null });
    m.insert("chatWidget".into(), if is_chat { json!(c.app) } else { Value::Null });
    m.insert("chatGroup".into(), if is_chat { json!(c.group) } else { Value::Null });
    m.insert("chatWaitingTime".into(), c.wait_seconds.map(|w| json!(w)).unwrap_or(Value::Null));
    m.insert("chatTalkTime".into(), c.talk_time.map(|w| json!(w)).unwrap_or(Value::Null));
    m.insert("resolvedInFirstCall".into(), json!(c.resolved_first_contact));
    m.insert("resolvedIn".into(), opt_date(st.resolved_in, r.dates));
    m.insert("closedIn".into(), opt_date(st.closed_in, r.dates));
    m.insert("canceledIn".into(), opt_date(st.canceled_in, r.dates));
    let stamped = match c.answered_at {
        // Within a minute of its creation, so that the answer stays inside the windows
        // (the platform filters on the stamp it reports).
        Some(answered)
            if r.answers_stamped_before_creation
                && answered == c.last_update
                && answered - c.created <= chrono::Duration::minutes(1) =>
        {
            c.created - chrono::Duration::seconds(1)
        }
        _ => c.last_update,
    };
    m.insert("lastUpdate".into(), date(stamped));
    m.insert("tags".into(), json!([]));
    m.insert("customFieldValues".into(), json!([]));
    if expand_owner {
        m.insert("owner".into(), c.agent.map(|o| person_json(world, o)).unwrap_or(Value::Null));
    }
    if r.omit_nulls {
        m.retain(|_, v| !v.is_null());
    }
    Value::Object(m)
}

fn persons_json(world: &World) -> Vec<Value> {
    let mut people: Vec<Value> = world
        .agents
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "isActive": a.active,
                "personType": 1,
                "profileType": 1,
                "businessName": a.name,
                "emails": [{"email": a.email, "isDefault": true}],
                "teams": a.groups,
                "createdDate": "2024-01-10T12:00:00.0000000",
            })
        })
        .collect();
    // Customers are persons too, and must not be taken for agents.
    for (i, name) in ["Cliente Exemplo Ltda", "Maria Cliente"].iter().enumerate() {
        people.push(json!({
            "id": format!("cl{:03}", i + 1),
            "isActive": true,
            "personType": 2,
            "profileType": 2,
            "businessName": name,
            "teams": [],
        }));
    }
    people
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Applies `$filter`, `$orderby`, `$skip`, `$top` and `$select` to a list.
fn query_list(mut items: Vec<Value>, params: &HashMap<String, String>, keep: &[&str]) -> Result<Vec<Value>, String> {
    if let Some(filter) = params.get("$filter") {
        let filter = parse_filter(filter).map_err(|e| format!("$filter: {e}"))?;
        items.retain(|i| filter.matches(i));
    }
    if let Some(orderby) = params.get("$orderby") {
        let terms = parse_orderby(orderby).map_err(|e| format!("$orderby: {e}"))?;
        items.sort_by(|a, b| {
            for (field, desc) in &terms {
                let o = order_values(a.get(field).unwrap_or(&Value::Null), b.get(field).unwrap_or(&Value::Null));
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let skip = match params.get("$skip") {
        Some(s) => s.parse::<usize>().map_err(|_| "$skip: not a number".to_string())?,
        None => 0,
    };
    let top = match params.get("$top") {
        Some(s) => s.parse::<usize>().map_err(|_| "$top: not a number".to_string())?,
        None => MAX_PAGE,
    };
    if top > MAX_PAGE {
        return Err(format!("$top: at most {MAX_PAGE} items per page"));
    }
    let mut page: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    if let Some(select) = params.get("$select") {
        let fields: Vec<&str> = select.split(',').map(str::trim).chain(keep.iter().copied()).collect();
        for item in &mut page {
            if let Value::Object(m) = item {
                m.retain(|k, _| fields.contains(&k.as_str()));
            }
        }
    }
    Ok(page)
}

/// Checks the token (in the query string) and the per-token rate limit, and takes the
/// next injected fault; a refusal comes back as Movidesk writes it.
fn admit(state: &SimState, endpoint: &'static str, params: &HashMap<String, String>) -> Result<Option<Fault>, Refusal> {
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let token_ok = params.get("token").is_some_and(|t| state.token_is(t.as_bytes()));
    match state.admit(endpoint, logged_query(&pairs, &["token"]), token_ok, "token") {
        Admission::Serve { fault, .. } => Ok(fault),
        Admission::Unauthorized => Err(Refusal::from(error(StatusCode::UNAUTHORIZED, "invalid token"))),
        Admission::RateLimited(limit) => {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", HeaderValue::from_str(&limit.retry_after.to_string()).expect("digits"));
            Err(Refusal::from(
                (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(json!({"error": "too many requests"}))).into_response(),
            ))
        }
    }
}

/// The records a hostile Movidesk answers with: one unreadable, and a ticket stamped in
/// 2099.
fn hostile() -> HostileRecords {
    fn from_the_future(ticket: &Value) -> Option<Value> {
        let mut future = ticket.clone();
        future.get("lastUpdate")?;
        future["lastUpdate"] = json!("2099-01-01T00:00:00");
        future["id"] = json!(10_000_000 + ticket.get("id").and_then(Value::as_u64).unwrap_or(0));
        Some(future)
    }
    HostileRecords {
        garbage: json!({"id": null, "profileType": "agent", "origin": "x", "lastUpdate": "yesterday"}),
        from_the_future,
    }
}

async fn tickets(
    State(state): State<SimState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "tickets", &params)?;
    let rendering = state.rendering();
    let page = {
        let world = &state.world();
        let expand_owner = params.get("$expand").is_some_and(|e| e.split(',').any(|x| x.trim() == "owner"));
        let bounds = params.get("$filter").and_then(|f| parse_filter(f).ok()).map(|f| f.bounds()).unwrap_or_default();
        let first = bounds.id_after.map_or(0, |id| (id as usize).min(world.conversations.len()));
        let items: Vec<Value> = world.conversations[first..]
            .iter()
            .filter(|c| !c.purged)
            .filter(|c| bounds.last_update_from.is_none_or(|from| c.last_update >= from))
            .filter(|c| bounds.base_statuses.as_ref().is_none_or(|s| s.iter().any(|x| x == status(c).base)))
            .map(|c| ticket_json(world, c, expand_owner, &rendering))
            .collect();
        let keep: &[&str] = if expand_owner { &["owner"] } else { &[] };
        query_list(items, &params, keep)
    };
    match page {
        Ok(items) => Ok(respond(Value::Array(items), fault, &[], hostile()).await),
        Err(e) => Err(Refusal::from(error(StatusCode::BAD_REQUEST, &e))),
    }
}

async fn persons(
    State(state): State<SimState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let fault = admit(&state, "persons", &params)?;
    let page = query_list(persons_json(&state.world()), &params, &[]);
    match page {
        Ok(items) => Ok(respond(Value::Array(items), fault, &[], hostile()).await),
        Err(e) => Err(Refusal::from(error(StatusCode::BAD_REQUEST, &e))),
    }
}
