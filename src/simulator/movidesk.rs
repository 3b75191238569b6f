//! Movidesk's public API over the world model: `/public/v1/tickets` and
//! `/public/v1/persons`, with the token in the query string, the OData subset, pages of
//! at most 100, zone-less dates and the per-token rate limit.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::odata::{order_values, parse_filter, parse_orderby};
use super::world::{Ticket, World};
use super::{DateStyle, Fault, Rendering, SimState};

pub const MAX_PAGE: usize = 100;

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

pub fn ticket_json(world: &World, t: &Ticket, expand_owner: bool, r: &Rendering) -> Value {
    // Ids come back as strings for some tickets, as on the real API.
    let id = if r.ids_as_strings || t.id.is_multiple_of(3) { Value::String(t.id.to_string()) } else { json!(t.id) };
    let date = |d: DateTime<Utc>| json!(render_date(d, r.dates));
    let status_name = match t.status.as_str() {
        "New" => "Novo",
        "InAttendance" => "Em atendimento",
        "Stopped" => "Aguardando",
        "Canceled" => "Cancelado",
        "Resolved" => "Resolvido",
        _ => "Fechado",
    };
    let mut m = Map::new();
    m.insert("id".into(), id);
    m.insert("protocol".into(), json!(format!("{:08}", t.id)));
    m.insert("type".into(), json!(2));
    m.insert("subject".into(), json!(if t.is_chat { "Chat" } else { "E-mail" }));
    m.insert("status".into(), json!(status_name));
    m.insert("baseStatus".into(), json!(t.status.as_str()));
    m.insert("origin".into(), json!(t.origin));
    m.insert("createdDate".into(), date(t.created));
    m.insert("isDeleted".into(), json!(t.deleted));
    m.insert("ownerTeam".into(), if t.owner.is_some() && t.is_chat { json!(t.group) } else { Value::Null });
    m.insert("chatWidget".into(), if t.is_chat { json!(t.app) } else { Value::Null });
    m.insert("chatGroup".into(), if t.is_chat { json!(t.group) } else { Value::Null });
    m.insert("chatWaitingTime".into(), t.waiting_time.map(|w| json!(w)).unwrap_or(Value::Null));
    m.insert("chatTalkTime".into(), t.talk_time.map(|w| json!(w)).unwrap_or(Value::Null));
    m.insert("resolvedInFirstCall".into(), json!(t.resolved_in_first_call));
    m.insert("resolvedIn".into(), opt_date(t.resolved_in, r.dates));
    m.insert("closedIn".into(), opt_date(t.closed_in, r.dates));
    m.insert("canceledIn".into(), opt_date(t.canceled_in, r.dates));
    m.insert("lastUpdate".into(), date(t.last_update));
    m.insert("tags".into(), json!([]));
    m.insert("customFieldValues".into(), json!([]));
    if expand_owner {
        m.insert("owner".into(), t.owner.map(|o| person_json(world, o)).unwrap_or(Value::Null));
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

/// Checks the token and the rate limit, and takes the next injected fault.
fn admit(
    state: &SimState,
    endpoint: &'static str,
    params: &HashMap<String, String>,
) -> Result<Option<Fault>, Box<Response>> {
    let mut guard = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    let query: String = {
        let mut keys: Vec<_> = params.iter().filter(|(k, _)| k.as_str() != "token").collect();
        keys.sort();
        keys.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    };
    let token_ok = params.get("token").is_some_and(|t| *t == guard.options.token);
    if !token_ok {
        guard.log_request(endpoint, 401, query);
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "invalid token")));
    }
    if let Some(retry_after) = guard.rate_limit_check() {
        guard.log_request(endpoint, 429, query);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_str(&retry_after.to_string()).expect("digits"));
        let refusal = (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(json!({"error": "too many requests"})));
        return Err(Box::new(refusal.into_response()));
    }
    let fault = guard.outage.clone().or_else(|| guard.faults.pop_front());
    let status = match &fault {
        Some(Fault::Status { code }) => *code,
        _ => 200,
    };
    guard.log_request(endpoint, status, query);
    Ok(fault)
}

async fn respond(items: Vec<Value>, fault: Option<Fault>) -> Response {
    match fault {
        None => axum::Json(Value::Array(items)).into_response(),
        Some(Fault::Status { code }) => {
            error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected fault")
        }
        Some(Fault::MalformedJson) => {
            (StatusCode::OK, [("content-type", "application/json")], "[{\"id\": 1, \"baseStatus\": ").into_response()
        }
        Some(Fault::NotAnArray) => axum::Json(json!({"items": items})).into_response(),
        Some(Fault::Html) => {
            (StatusCode::OK, [("content-type", "text/html")], "<html><body>Service Unavailable</body></html>")
                .into_response()
        }
        Some(Fault::GarbageRecord) => {
            let mut items = items;
            items.push(json!({"id": null, "profileType": "agent", "origin": "x", "lastUpdate": "yesterday"}));
            axum::Json(Value::Array(items)).into_response()
        }
        Some(Fault::Delay { millis }) => {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            axum::Json(Value::Array(items)).into_response()
        }
        Some(Fault::SlowBody { millis }) => {
            let body = serde_json::to_vec(&Value::Array(items)).expect("JSON encodes");
            let chunks: Vec<Vec<u8>> = body.chunks(64).map(<[u8]>::to_vec).collect();
            let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
                let chunk = rest.next()?;
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                Some((Ok::<_, std::io::Error>(chunk), rest))
            });
            (StatusCode::OK, [("content-type", "application/json")], axum::body::Body::from_stream(stream))
                .into_response()
        }
    }
}

/// The platform's clock in the `Date` header, as real servers send it: the moment the
/// answer was read from the world (plus any injected skew).
fn with_date(mut response: Response, state: &SimState, at: Option<DateTime<Utc>>) -> Response {
    let now = {
        let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        at.unwrap_or(inner.world.now) + chrono::Duration::seconds(inner.rendering.date_header_skew_seconds)
    };
    if let Ok(v) = HeaderValue::from_str(&now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        response.headers_mut().insert(axum::http::header::DATE, v);
    }
    response
}

pub async fn tickets(State(state): State<SimState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let (response, at) = tickets_inner(&state, params).await;
    with_date(response, &state, at)
}

pub async fn persons(State(state): State<SimState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let (response, at) = persons_inner(&state, params).await;
    with_date(response, &state, at)
}

async fn tickets_inner(state: &SimState, params: HashMap<String, String>) -> (Response, Option<DateTime<Utc>>) {
    let fault = match admit(state, "tickets", &params) {
        Ok(f) => f,
        Err(r) => return (*r, None),
    };
    let at;
    let page = {
        let guard = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let world = &guard.world;
        at = Some(world.now);
        let expand_owner = params.get("$expand").is_some_and(|e| e.split(',').any(|x| x.trim() == "owner"));
        let bounds = params.get("$filter").and_then(|f| parse_filter(f).ok()).map(|f| f.bounds()).unwrap_or_default();
        let first = bounds.id_after.map_or(0, |id| (id as usize).min(world.tickets.len()));
        let rendering = guard.rendering;
        let items: Vec<Value> = world.tickets[first..]
            .iter()
            .filter(|t| !t.purged)
            .filter(|t| bounds.last_update_from.is_none_or(|from| t.last_update >= from))
            .filter(|t| bounds.base_statuses.as_ref().is_none_or(|s| s.iter().any(|x| x == t.status.as_str())))
            .map(|t| ticket_json(world, t, expand_owner, &rendering))
            .collect();
        let keep: &[&str] = if expand_owner { &["owner"] } else { &[] };
        query_list(items, &params, keep)
    };
    let response = match page {
        Ok(items) => respond(items, fault).await,
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    };
    (response, at)
}

async fn persons_inner(state: &SimState, params: HashMap<String, String>) -> (Response, Option<DateTime<Utc>>) {
    let fault = match admit(state, "persons", &params) {
        Ok(f) => f,
        Err(r) => return (*r, None),
    };
    let (page, at) = {
        let guard = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        (query_list(persons_json(&guard.world), &params, &[]), guard.world.now)
    };
    let response = match page {
        Ok(items) => respond(items, fault).await,
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    };
    (response, Some(at))
}
