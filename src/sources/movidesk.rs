//! Movidesk: a chat is a ticket whose `origin` is a chat channel.
//!
//! Each poll asks for the tickets changed since the newest `lastUpdate` seen, less an
//! overlap window (so late writes on the platform are not missed), paged by id. Every
//! few polls it also lists every open chat (a reconciliation that drops conversations
//! deleted or gone without a trace) and, less often, the agent roster. Cursors are the
//! platform's own timestamps, so the exporter's clock never matters.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

use crate::budget::{Outcome, RequestBudget};
use crate::config::MovideskConfig;
use crate::model::{AgentRef, ChatLabels, ChatObservation, Observations, Phase, RosterAgent};
use crate::self_metrics::SelfMetrics;
use crate::sources::{Source, SourceError};

pub const SOURCE: &str = "movidesk";

const TICKET_FIELDS: &str = "id,origin,baseStatus,isDeleted,chatGroup,chatWidget,resolvedInFirstCall,\
chatWaitingTime,chatTalkTime,createdDate,lastUpdate";

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

pub struct MovideskSource {
    client: reqwest::Client,
    config: MovideskConfig,
    token: String,
    budget: Arc<RequestBudget>,
    metrics: SelfMetrics,
    /// Newest `lastUpdate` seen, in the platform's clock.
    cursor: Option<DateTime<Utc>>,
    started: bool,
    polls: u64,
    roster_fetched_at: Option<Instant>,
    /// Reasons already logged at warn level since the last clean poll: upstream garbage
    /// is logged once, then counted quietly.
    logged: HashSet<&'static str>,
    /// The platform's clock (`Date` header) at the last answer.
    server_time: Option<DateTime<Utc>>,
    /// An incremental window still being paged: a failed poll keeps the pages it got,
    /// and the next one carries on from there instead of starting over.
    pending: Option<PendingWindow>,
}

struct PendingWindow {
    filter: String,
    after_id: Option<u64>,
    /// Platform time when the window's first page was asked for: every change after it
    /// falls in the next window, however long the paging takes.
    started_at: Option<DateTime<Utc>>,
    tickets: Vec<Value>,
}

impl MovideskSource {
    pub fn new(config: MovideskConfig, metrics: SelfMetrics) -> Self {
        let token = config.token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default();
        let budget = Arc::new(RequestBudget::new(SOURCE, config.requests_per_minute, metrics.clone()));
        metrics.register_source(SOURCE, config.requests_per_minute);
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("chat_exporter/", env!("CARGO_PKG_VERSION")))
            // The token is in the query string: never carry it to another address.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds with static settings");
        MovideskSource {
            client,
            config,
            token,
            budget,
            metrics,
            cursor: None,
            started: false,
            polls: 0,
            roster_fetched_at: None,
            logged: HashSet::new(),
            server_time: None,
            pending: None,
        }
    }

    fn origin_filter(&self) -> String {
        let terms: Vec<String> = self.config.chat_origins.iter().map(|o| format!("origin eq {o}")).collect();
        format!("({})", terms.join(" or "))
    }

    /// One GET through the budget. The token travels in the query string, so nothing
    /// here ever formats the URL: errors carry the endpoint name only.
    async fn get(&mut self, endpoint: &'static str, query: &[(&str, String)]) -> Result<Vec<Value>, SourceError> {
        self.budget.acquire().await;
        let url = format!("{}/{}", self.config.base_url.trim_end_matches('/'), endpoint);
        let mut params: Vec<(&str, &str)> = vec![("token", self.token.as_str())];
        params.extend(query.iter().map(|(k, v)| (*k, v.as_str())));
        let result = self.client.get(&url).query(&params).send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.count_request(endpoint, "none");
                let err = transport_error(endpoint, &e);
                return Err(self.fail(err));
            }
        };
        let status = response.status().as_u16();
        self.count_request(endpoint, &status.to_string());
        self.server_time = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&Utc));
        if status == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(self.fail(SourceError::RateLimited { endpoint, retry_after }));
        }
        if status == 401 || status == 403 {
            return Err(self.fail(SourceError::Unauthorized { endpoint, status }));
        }
        if status >= 500 {
            return Err(self.fail(SourceError::Server { endpoint, status }));
        }
        if status != 200 {
            return Err(self.fail(SourceError::Client { endpoint, status }));
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(self.fail(transport_error(endpoint, &e))),
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => {
                self.budget.record(Outcome::Success);
                Ok(items)
            }
            Ok(other) => Err(self.fail(SourceError::Decode {
                endpoint,
                detail: format!("expected a JSON array, got {}", json_kind(&other)),
            })),
            Err(e) => Err(self.fail(SourceError::Decode { endpoint, detail: e.to_string() })),
        }
    }

    fn count_request(&self, endpoint: &str, code: &str) {
        self.metrics.api_requests.with_label_values(&[SOURCE, endpoint, code]).inc();
    }

    fn fail(&mut self, err: SourceError) -> SourceError {
        self.metrics.api_failures.with_label_values(&[SOURCE, err.reason()]).inc();
        self.budget.record(match &err {
            SourceError::RateLimited { retry_after, .. } => Outcome::RetryAfter(*retry_after),
            _ => Outcome::Failure,
        });
        err
    }

    /// Every ticket matching `filter`, paged by id so that a ticket changing while we page
    /// is neither skipped nor repeated because of shifting offsets.
    /// Every ticket matching `filter`, and the platform's time when the first page was read.
    async fn tickets(&mut self, filter: &str) -> Result<(Vec<Value>, Option<DateTime<Utc>>), SourceError> {
        let mut window =
            PendingWindow { filter: filter.to_string(), after_id: None, started_at: None, tickets: Vec::new() };
        self.page_through(&mut window).await?;
        Ok((window.tickets, window.started_at))
    }

    /// Pages through `window` from where it stands; on failure the window keeps what it got.
    async fn page_through(&mut self, window: &mut PendingWindow) -> Result<(), SourceError> {
        loop {
            let page_filter = match window.after_id {
                Some(id) => format!("{} and id gt {id}", window.filter),
                None => window.filter.clone(),
            };
            let page = self
                .get(
                    "tickets",
                    &[
                        ("$select", TICKET_FIELDS.to_string()),
                        ("$expand", "owner".to_string()),
                        ("$filter", page_filter),
                        ("$orderby", "id asc".to_string()),
                        ("$top", self.config.page_size.to_string()),
                    ],
                )
                .await?;
            if window.started_at.is_none() {
                window.started_at = self.server_time;
            }
            let full = page.len() >= self.config.page_size as usize;
            let max_id = page.iter().filter_map(|t| t.get("id").and_then(parse_id)).max();
            window.tickets.extend(page);
            match (full, max_id) {
                (true, Some(id)) if window.after_id.is_none_or(|prev| id > prev) => window.after_id = Some(id),
                _ => return Ok(()),
            }
        }
    }

    /// The platform's newest `lastUpdate`: where counting starts on the first poll.
    async fn newest_update(&mut self) -> Result<Option<DateTime<Utc>>, SourceError> {
        let page = self
            .get(
                "tickets",
                &[
                    ("$select", "id,lastUpdate".to_string()),
                    ("$orderby", "lastUpdate desc".to_string()),
                    ("$top", "1".to_string()),
                ],
            )
            .await?;
        match page.first() {
            None => Ok(None),
            Some(t) => match t.get("lastUpdate").and_then(Value::as_str).and_then(parse_datetime) {
                Some(newest) => Ok(Some(newest)),
                // Starting from the epoch would count 90 days of history as new.
                None => Err(self.fail(SourceError::Decode {
                    endpoint: "tickets",
                    detail: "the newest ticket has no readable lastUpdate".to_string(),
                })),
            },
        }
    }

    async fn roster(&mut self) -> Result<(Vec<RosterAgent>, Vec<String>), SourceError> {
        let mut people = Vec::new();
        let page_size = self.config.page_size as usize;
        loop {
            let page = self
                .get(
                    "persons",
                    &[
                        ("$select", "id,businessName,profileType,isActive,teams".to_string()),
                        ("$filter", "isActive eq true and (profileType eq 1 or profileType eq 3)".to_string()),
                        ("$orderby", "id asc".to_string()),
                        ("$top", page_size.to_string()),
                        ("$skip", people.len().to_string()),
                    ],
                )
                .await?;
            let n = page.len();
            people.extend(page);
            if n < page_size {
                break;
            }
        }
        let mut roster = Vec::new();
        let mut invalid = Vec::new();
        for p in people {
            let (Some(id), Some(profile)) =
                (p.get("id").and_then(id_string), p.get("profileType").and_then(Value::as_u64))
            else {
                invalid
                    .push(format!("person without an id or a numeric profileType: {}", truncate(&p.to_string(), 120)));
                continue;
            };
            let active = p.get("isActive").and_then(Value::as_bool).unwrap_or(false);
            if !active || !(profile == 1 || profile == 3) {
                continue;
            }
            let name = p.get("businessName").and_then(Value::as_str).unwrap_or_default().to_string();
            let groups = p
                .get("teams")
                .and_then(Value::as_array)
                .map(|teams| {
                    teams
                        .iter()
                        .filter_map(|t| {
                            t.as_str().map(str::to_string).or_else(|| t.get("name")?.as_str().map(str::to_string))
                        })
                        .collect()
                })
                .unwrap_or_default();
            roster.push(RosterAgent { agent: AgentRef { id, name }, apps: Vec::new(), groups });
        }
        Ok((roster, invalid))
    }

    /// Counts records that could not be read; the first one is logged, the rest only
    /// counted until a poll comes back clean.
    fn count_invalid(&mut self, details: &[String]) {
        if details.is_empty() {
            return;
        }
        self.metrics.api_failures.with_label_values(&[SOURCE, "invalid_record"]).inc_by(details.len() as u64);
        if self.logged.insert("invalid_record") {
            tracing::warn!(source = SOURCE, reason = "invalid_record", detail = %details[0], "skipping a record the exporter cannot read; further ones are counted, not logged, until a clean poll");
        } else {
            for detail in details {
                tracing::debug!(source = SOURCE, detail = %detail, "skipping unreadable record");
            }
        }
    }

    /// Adds the chats among `tickets` to `obs`; returns why each unreadable one was skipped.
    fn read_tickets(&mut self, tickets: Vec<Value>, obs: &mut Observations) -> Vec<String> {
        let mut invalid = Vec::new();
        for ticket in &tickets {
            match parse_ticket(ticket, &self.config.chat_origins) {
                Ok(Some(chat)) => {
                    if self.cursor.is_none_or(|c| chat.last_update > c) {
                        self.cursor = Some(chat.last_update);
                    }
                    obs.chats.push(chat);
                }
                Ok(None) => {}
                Err(why) => invalid.push(why),
            }
        }
        invalid
    }

    async fn poll_inner(&mut self) -> Result<Observations, SourceError> {
        let mut obs = Observations::default();
        let reconcile = !self.started || self.polls.is_multiple_of(u64::from(self.config.reconcile_every));
        let mut tickets = Vec::new();
        if reconcile {
            let filter = format!("(baseStatus eq 'New' or baseStatus eq 'InAttendance') and {}", self.origin_filter());
            let (open, listed_at) = self.tickets(&filter).await?;
            tickets.extend(open);
            obs.open_set_complete_at = self.cursor;
            if !self.started {
                // The exporter starts at the moment the open chats were listed: those are
                // the baseline, and what changes after it is counted. The newest change
                // bounds that moment in case the `Date` clock runs ahead of `lastUpdate`'s.
                let newest = self.newest_update().await?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                obs.history_until = Some(listed_at.map_or(newest, |at| at.min(newest)));
            }
        }
        let cursor_before = self.cursor.or(obs.history_until);
        let mut window = match self.pending.take() {
            Some(w) => w,
            None => {
                let since = cursor_before.unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
                    - chrono::Duration::from_std(self.config.overlap).unwrap_or_default();
                let filter =
                    format!("lastUpdate ge {} and {}", since.format("%Y-%m-%dT%H:%M:%SZ"), self.origin_filter());
                PendingWindow { filter, after_id: None, started_at: None, tickets: Vec::new() }
            }
        };
        if let Err(e) = self.page_through(&mut window).await {
            self.pending = Some(window);
            return Err(e);
        }
        let window_started = window.started_at;
        tickets.extend(window.tickets);
        let roster_due = self.roster_fetched_at.is_none_or(|t| t.elapsed() >= self.config.roster_interval);
        let mut invalid_people = Vec::new();
        if roster_due {
            // Agents are read on their own schedule: a failing /persons (counted by
            // reason like any request) keeps the previous roster and is retried after
            // roster_interval, without holding up the chats.
            self.roster_fetched_at = Some(Instant::now());
            match self.roster().await {
                Ok((roster, invalid)) => {
                    obs.roster = Some(roster);
                    invalid_people = invalid;
                }
                Err(e) => {
                    if self.logged.insert("roster") {
                        tracing::warn!(source = SOURCE, reason = e.reason(), error = %e, "cannot read the agent roster; keeping the previous one");
                    }
                }
            }
        }
        if let Some(h) = obs.history_until {
            self.cursor = Some(self.cursor.map_or(h, |c| c.max(h)));
        }
        let cursor_before_tickets = self.cursor;
        let mut invalid = invalid_people;
        invalid.extend(self.read_tickets(tickets, &mut obs));
        self.count_invalid(&invalid);
        // `read_tickets` moved the cursor to the newest change seen. A ticket that
        // changed while the window was being paged may sit behind the page already read,
        // so the cursor goes no further than the platform's time when the window opened
        // (`Date`); and no further than the newest change seen, so a `Date` from a clock
        // ahead of the one writing `lastUpdate` cannot skip changes.
        if let (Some(started), Some(newest)) = (window_started, self.cursor) {
            let bounded = newest.min(started);
            self.cursor = Some(cursor_before_tickets.map_or(bounded, |c| c.max(bounded)));
        }
        if invalid.is_empty() {
            self.logged.clear();
        }
        self.started = true;
        self.polls += 1;
        Ok(obs)
    }
}

impl Source for MovideskSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    /// Every Movidesk customer shares the same URL; the token tells accounts apart. Only
    /// a short digest of it is kept, which cannot be turned back into the token.
    fn budget(&self) -> Arc<RequestBudget> {
        self.budget.clone()
    }

    fn account(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.token.as_bytes());
        let short: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{} (token sha256 {short}…)", self.config.base_url.trim_end_matches('/'))
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::json!({ "cursor": self.cursor, "started": self.started })
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Saved {
            cursor: Option<DateTime<Utc>>,
            started: bool,
        }
        let saved: Saved = serde_json::from_value(state).map_err(|e| format!("movidesk cursor: {e}"))?;
        self.cursor = saved.cursor;
        self.started = saved.started;
        // The first poll after a restart reconciles the open chats and reads the roster.
        self.polls = 0;
        self.roster_fetched_at = None;
        Ok(())
    }

    async fn poll(&mut self) -> Result<Observations, SourceError> {
        let (saved_cursor, saved_roster_at) = (self.cursor, self.roster_fetched_at);
        let result = self.poll_inner().await;
        if result.is_err() {
            // What a failed poll learnt is not applied: the next one asks again from the
            // same cursor (carrying on with a half-paged window) and reads the roster again.
            self.cursor = saved_cursor;
            self.roster_fetched_at = saved_roster_at;
        }
        result
    }
}

fn transport_error(endpoint: &'static str, e: &reqwest::Error) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout { endpoint }
    } else if e.is_decode() || e.is_body() {
        SourceError::Decode { endpoint, detail: error_chain(e) }
    } else {
        SourceError::Connection { endpoint, detail: error_chain(e) }
    }
}

/// The error and its causes, without the URL (which carries the token).
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    if parts.is_empty() {
        "request failed".to_string()
    } else {
        parts.join(": ")
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `Retry-After` is either seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Ids are numbers in filters but may come back as strings.
pub fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn id_string(v: &Value) -> Option<String> {
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

fn opt_seconds(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite() && *x >= 0.0),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0),
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
                resolved_first_contact: t.get("resolvedInFirstCall").and_then(Value::as_bool).unwrap_or(false),
            },
            ("Canceled", true) => Phase::Cancelled,
            ("Resolved" | "Closed" | "Stopped" | "Canceled", false) => Phase::Abandoned,
            (other, _) => return Err(format!("ticket {id}: unknown baseStatus {other:?}")),
        }
    };
    let waiting_since = t.get("createdDate").and_then(Value::as_str).and_then(parse_datetime);
    Ok(Some(ChatObservation {
        id,
        labels: ChatLabels {
            app: opt_str(t.get("chatWidget")),
            group: opt_str(t.get("chatGroup")),
            origin: origin_label(origin),
        },
        agent,
        phase,
        waiting_since,
        wait_seconds: opt_seconds(t.get("chatWaitingTime")),
        talk_seconds: opt_seconds(t.get("chatTalkTime")),
        last_update,
    }))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
