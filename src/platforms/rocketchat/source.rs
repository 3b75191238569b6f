//! Rocket.Chat's source.
//!
//! Rocket.Chat limits each route on its own (10 calls a minute by default), so a poll
//! spends one call on each route it needs: the queue (`inquiries.list`), the agents with
//! their presence (`users/agent`), and the rooms changed since the last poll, newest
//! first (`livechat/rooms` sorted by `_updatedAt`, read until a page reaches back past the
//! cursor less an overlap). A room that closed after being served costs one more call:
//! its transfer history, which decides `first_contact`. Every few polls, and at the start,
//! the live rooms are listed (served, on hold, unserved); every `roster_interval`, the
//! departments. The rate-limit headers of every answer are read: a route with no call
//! left waits for its reset instead of earning a 429.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::time::Instant;

use super::records::{parse_agent, parse_history, parse_room, History, Room};
use super::{RocketChatConfig, NAME};
use crate::budget::{RequestBudget, RouteBudget, MAX_ROUTE_LIMIT};
use crate::config::{self, Polling};
use crate::model::{Observations, RosterAgent, Timings};
use crate::self_metrics::SelfMetrics;
use crate::source::client::{ApiClient, Answer, Hints, List, PageGuard, RouteLimit};
use crate::source::{from_the_future, latest_believable, CursorError, Source, SourceError};

/// Items per page: Rocket.Chat caps `count` at 100.
const PAGE: usize = 100;

/// Rooms whose transfer history waits for a later poll, at most: past them a failing
/// history fails the poll, as it did before rooms could wait.
const MAX_UNREAD_HISTORIES: usize = 10_000;

/// A closed served room whose transfer history could not be read yet (its read failed,
/// or the poll's time for histories was spent): its record, for counting it once the
/// history is read, and how often the read failed, so that rooms failing again and again
/// are tried after the others.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct UnreadHistory {
    record: Value,
    failures: u32,
}

pub struct RocketChatSource {
    client: ApiClient,
    config: RocketChatConfig,
    polling: Polling,
    departments: HashMap<String, String>,
    departments_read_at: Option<Instant>,
    /// Newest `_updatedAt` seen, in the server's clock.
    cursor: Option<DateTime<Utc>>,
    /// The start (history before it is not counted), for skipping the transfer history
    /// of rooms that closed before it.
    start: Option<DateTime<Utc>>,
    started: bool,
    polls: u64,
    /// Open rooms nobody serves: whether each waits in the queue can change with no
    /// change to the room (only its inquiry changes).
    unserved: HashMap<String, Room>,
    /// Closed served rooms whose transfer history was read, with their `_updatedAt` then;
    /// only those that may still come back in a window (changed after the cursor less
    /// twice the overlap), so it stays small. Saved, so that a restart reads none again.
    histories: BTreeMap<String, (DateTime<Utc>, History)>,
    /// The server refused `queued=true` on `livechat/rooms` (a version before the filter):
    /// live rooms are listed without it for the rest of the run.
    queued_filter_refused: bool,
    /// Closed served rooms left out of the counts until their transfer history is read,
    /// by a later poll. Saved: the cursor has passed them.
    unread_histories: BTreeMap<String, UnreadHistory>,
    /// The server's clock at the last poll, for how long ago the rooms left out changed.
    server_now: Option<DateTime<Utc>>,
}

/// A record's `_id`, for telling pages apart.
fn record_id(v: &Value) -> Option<String> {
    v.get("_id")?.as_str().map(str::to_string)
}

/// Whether Rocket.Chat refused a request for a query parameter it does not know: a 400
/// whose error ends in `[invalid-params]` (`must NOT have additional properties`).
fn refuses_a_parameter(e: &SourceError) -> bool {
    matches!(e, SourceError::Client { status: 400, hint, .. } if hint.contains("[invalid-params]"))
}

/// Rocket.Chat's rate-limit headers: the route's limit (calls in its window, a minute by
/// default), calls left on it, and its reset in epoch milliseconds on the server's clock
/// (read against its `Date`). A limit below 1 is no limit to follow; one above
/// [`MAX_ROUTE_LIMIT`] is taken as that.
pub fn route_limit(headers: &HeaderMap, date: Option<DateTime<Utc>>) -> Option<RouteLimit> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    let limit = number("x-ratelimit-limit")
        .filter(|l| *l >= 1)
        .map(|l| u32::try_from(l).unwrap_or(u32::MAX).min(MAX_ROUTE_LIMIT));
    let remaining = u32::try_from(number("x-ratelimit-remaining")?.max(0)).unwrap_or(u32::MAX);
    let reset = DateTime::from_timestamp_millis(number("x-ratelimit-reset")?)?;
    let now = date.unwrap_or_else(Utc::now);
    // `Date` has whole seconds: a second more, so the reset has surely passed.
    let reset_in = (reset - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_secs(1);
    Some(RouteLimit { limit, remaining, reset_in })
}

/// What Rocket.Chat's refusals say.
fn explain(status: u16, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v.get("error").or_else(|| v.get("message")).and_then(Value::as_str)?;
    Some(match status {
        401 => format!("; Rocket.Chat says {message:?}: check rocketchat.user_id and {}", config::token_keys(super::NAME)),
        403 => format!(
            "; Rocket.Chat says {message:?}: the user needs the view-livechat-manager, view-livechat-rooms, \
             view-livechat-departments and transfer-livechat-guest permissions (a livechat-manager has them)"
        ),
        _ => format!("; Rocket.Chat says {message:?}"),
    })
}

impl RocketChatSource {
    pub fn new(config: RocketChatConfig, polling: &Polling, metrics: SelfMetrics) -> Self {
        let hints = Hints {
            unauthorized: format!("; check rocketchat.user_id and {}", config::token_keys(super::NAME)),
            not_found: "; check rocketchat.base_url (the server's root) and that Omnichannel is on".to_string(),
            explain: Some(explain),
        };
        let client = ApiClient::new(NAME, polling, metrics, hints)
            .with_route_limits(
                RouteBudget { default: super::DEFAULT_ROUTE_LIMIT, explicit: config.requests_per_minute_per_route },
                route_limit,
            );
        RocketChatSource {
            client,
            config,
            polling: polling.clone(),
            departments: HashMap::new(),
            departments_read_at: None,
            cursor: None,
            start: None,
            started: false,
            polls: 0,
            unserved: HashMap::new(),
            histories: BTreeMap::new(),
            queued_filter_refused: false,
            unread_histories: BTreeMap::new(),
            server_now: None,
        }
    }

    async fn get(&self, endpoint: &'static str, path: &str, query: &[(&str, String)]) -> Result<Answer, SourceError> {
        let request = self
            .client
            .http()
            .get(format!("{}/api/v1/{path}", self.config.base_url))
            .header("X-User-Id", &self.config.user_id)
            .header("X-Auth-Token", self.config.token.expose())
            .query(query);
        self.client.fetch(endpoint, request).await
    }

    /// One page of a list: its records (under `key`), how many it held (decodable or
    /// not), and the total.
    async fn page(
        &self,
        endpoint: &'static str,
        path: &str,
        key: &str,
        query: &[(&str, String)],
        offset: usize,
    ) -> Result<(List, Option<u64>, Option<DateTime<Utc>>), SourceError> {
        let mut query = query.to_vec();
        query.push(("count", PAGE.to_string()));
        query.push(("offset", offset.to_string()));
        let answer = self.get(endpoint, path, &query).await?;
        let list = self.client.decode_list(endpoint, &answer.body, &[key])?;
        let total = list.envelope.get("total").and_then(Value::as_u64);
        Ok((list, total, answer.date))
    }

    /// Whether a list goes on after `read` records, the last page holding `n`: by the
    /// total where the server gives one (its `API_Upper_Count_Limit` may cap a page below
    /// the count asked for), else by a full page.
    fn more(read: usize, n: usize, total: Option<u64>) -> bool {
        n > 0 && total.map_or(n >= PAGE, |t| (read as u64) < t)
    }

    /// Every item of a list, page by page by offset.
    async fn all(&self, endpoint: &'static str, path: &str, key: &str, query: &[(&str, String)]) -> Result<Vec<Value>, SourceError> {
        let mut items = Vec::new();
        let mut offset = 0;
        let mut guard = PageGuard::default();
        loop {
            let (page, total, _) = self.page(endpoint, path, key, query, offset).await?;
            offset += page.len;
            let ids: Vec<String> = page.items.iter().filter_map(record_id).collect();
            items.extend(page.items);
            if !Self::more(offset, page.len, total) {
                return Ok(items);
            }
            guard.more_after(&self.client, endpoint, ids)?;
        }
    }

    /// The departments' names by id; returns why each unreadable one was skipped.
    async fn read_departments(&mut self) -> Result<Vec<String>, SourceError> {
        let items = self.all("department", "livechat/department", "departments", &[]).await?;
        let mut invalid = Vec::new();
        self.departments = items
            .iter()
            .filter_map(|d| {
                let read = || Some((d.get("_id")?.as_str()?.to_string(), d.get("name")?.as_str()?.trim().to_string()));
                let entry = read();
                if entry.is_none() {
                    invalid.push(format!("department without an _id or a name: {}", crate::source::client::truncate(&d.to_string(), 120)));
                }
                entry
            })
            .collect();
        Ok(invalid)
    }

    async fn roster(&self) -> Result<(Vec<RosterAgent>, Vec<String>), SourceError> {
        let items = self.all("users_agent", "livechat/users/agent", "users", &[]).await?;
        let mut roster = Vec::new();
        let mut invalid = Vec::new();
        for v in &items {
            match parse_agent(v) {
                Ok((agent, presence, departments)) => {
                    let groups = departments.iter().filter_map(|d| self.departments.get(d).cloned()).collect();
                    roster.push(RosterAgent { agent, apps: Vec::new(), groups, presence });
                }
                Err(why) => invalid.push(why),
            }
        }
        Ok((roster, invalid))
    }

    /// The rooms whose inquiry waits in the queue.
    async fn queued(&self) -> Result<HashSet<String>, SourceError> {
        let items = self.all("inquiries", "livechat/inquiries.list", "inquiries", &[]).await?;
        Ok(items.iter().filter_map(|i| i.get("rid")?.as_str().map(str::to_string)).collect())
    }

    /// The rooms changed since the cursor (less the overlap), newest first; on the first
    /// poll, the first page only. Also the server's `Date`.
    async fn changed_rooms(&self) -> Result<(Vec<Value>, Option<DateTime<Utc>>), SourceError> {
        let sort = vec![("sort", r#"{"_updatedAt":-1}"#.to_string())];
        let since = self.cursor.map(|c| c - chrono::Duration::from_std(self.config.overlap).unwrap_or_default());
        let mut rooms = Vec::new();
        let mut date = None;
        let mut offset = 0;
        let mut guard = PageGuard::default();
        loop {
            let (page, total, d) = self.page("rooms", "livechat/rooms", "rooms", &sort, offset).await?;
            date = date.or(d);
            offset += page.len;
            let n = page.len;
            let before = |r: &Value| since.is_some_and(|s| super::records::date(r.get("_updatedAt")).is_some_and(|u| u < s));
            let done = since.is_none() || page.items.last().is_none_or(before);
            let ids: Vec<String> = page.items.iter().filter_map(record_id).collect();
            // Rooms changed before the window were read by an earlier poll.
            rooms.extend(page.items.into_iter().filter(|r| !before(r)));
            if done || !Self::more(offset, n, total) {
                return Ok((rooms, date));
            }
            guard.more_after(&self.client, "rooms", ids)?;
        }
    }

    /// Every live room: served (not on hold), on hold, and unserved. A server older than
    /// the `queued` filter refuses it (its validator forbids unknown parameters), and its
    /// `open=true` lists every open room not on hold, served or not: there the first list
    /// holds the unserved rooms too, told apart by their lack of `servedBy`.
    async fn live_rooms(&mut self) -> Result<Vec<Value>, SourceError> {
        let mut rooms = Vec::new();
        for filter in ["open", "onhold"] {
            rooms.extend(self.all("rooms", "livechat/rooms", "rooms", &[(filter, "true".to_string())]).await?);
        }
        if self.queued_filter_refused {
            return Ok(rooms);
        }
        match self.all("rooms", "livechat/rooms", "rooms", &[("queued", "true".to_string())]).await {
            Ok(unserved) => rooms.extend(unserved),
            Err(e) if refuses_a_parameter(&e) => {
                tracing::warn!(source = NAME, error = %e, "the server has no queued filter on livechat/rooms (a version before it): \
                    its open rooms list holds the unserved ones, for the rest of the run");
                self.queued_filter_refused = true;
            }
            Err(e) => return Err(e),
        }
        Ok(rooms)
    }

    /// A room's transfer history as far as the counts need it, its first entry and whether
    /// there is one: its first page, however long the history is (one that never ends
    /// costs one request).
    async fn history(&self, room: &str) -> Result<History, SourceError> {
        let path = format!("livechat/transfer.history/{room}");
        let (page, total, _) = self.page("transfer_history", &path, "history", &[], 0).await?;
        let mut history = parse_history(&page.items, &self.departments);
        history.transferred |= total.is_some_and(|t| t > 0);
        Ok(history)
    }

    /// The transfer history of `room` (a closed served one, `record` as listed), or `None`
    /// when it is left for a later poll: its read failed (counted under its reason by the
    /// client), or this poll's time for histories (`deadline`) is spent. One room's
    /// history never fails the poll of the others; a refused token still does.
    async fn history_or_later(
        &mut self,
        room: &Room,
        record: &Value,
        deadline: Instant,
        attempted: &mut HashSet<String>,
    ) -> Result<Option<History>, SourceError> {
        if let Some((at, h)) = self.histories.get(&room.id) {
            if *at == room.updated {
                self.unread_histories.remove(&room.id);
                return Ok(Some(h.clone()));
            }
        }
        let mut failure = None;
        if Instant::now() < deadline {
            attempted.insert(room.id.clone());
            match self.history(&room.id).await {
                Ok(h) => {
                    self.histories.insert(room.id.clone(), (room.updated, h.clone()));
                    self.unread_histories.remove(&room.id);
                    return Ok(Some(h));
                }
                Err(e @ SourceError::Unauthorized { .. }) => return Err(e),
                Err(e) => failure = Some(e),
            }
        }
        if self.unread_histories.len() >= MAX_UNREAD_HISTORIES && !self.unread_histories.contains_key(&room.id) {
            return Err(failure.unwrap_or_else(|| SourceError::NoProgress {
                endpoint: "transfer_history",
                detail: format!("more than {MAX_UNREAD_HISTORIES} rooms wait for their transfer history"),
            }));
        }
        if let Some(e) = &failure {
            tracing::debug!(source = NAME, room = %room.id, reason = e.reason(), error = %e, "transfer history left for a later poll");
        }
        let entry = self
            .unread_histories
            .entry(room.id.clone())
            .or_insert_with(|| UnreadHistory { record: record.clone(), failures: 0 });
        entry.record = record.clone();
        entry.failures = entry.failures.saturating_add(u32::from(failure.is_some()));
        Ok(None)
    }

    async fn poll_inner(&mut self) -> Result<Observations, SourceError> {
        let mut obs = Observations::default();
        let mut invalid = Vec::new();
        if self.departments_read_at.is_none_or(|t| t.elapsed() >= self.polling.roster_interval) {
            invalid.extend(self.read_departments().await?);
            self.departments_read_at = Some(Instant::now());
        }
        let (roster, invalid_agents) = self.roster().await?;
        invalid.extend(invalid_agents);
        obs.roster = Some(roster);
        let queued = self.queued().await?;

        let reconcile = !self.started || self.polls.is_multiple_of(u64::from(self.polling.reconcile_every));
        let mut rooms: Vec<Value> = Vec::new();
        if reconcile {
            rooms.extend(self.live_rooms().await?);
            self.unserved.clear();
        }
        let listed = rooms.len();
        let (changed, date) = self.changed_rooms().await?;
        if !self.started {
            // The start is the server's newest change, in the clock that stamps rooms:
            // the first room of the newest-first list.
            let latest = latest_believable(date).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let newest = changed.iter().filter_map(|r| super::records::date(r.get("_updatedAt"))).filter(|u| *u <= latest).max();
            self.start = newest.or(date);
            obs.history_until = self.start;
        }
        rooms.extend(changed);
        obs.platform_time = date;
        if reconcile {
            // Listed before the changes were read: anything live the tracker holds and the
            // lists lack had ended by then.
            obs.open_set_complete_at = Some(date.unwrap_or(DateTime::<Utc>::MAX_UTC));
        }
        let mut newest = None;
        let mut seen = HashSet::new();
        // A slow history route cannot stretch a poll without bound: past this, histories
        // wait for the next poll.
        let history_deadline = Instant::now() + self.polling.poll_interval.max(self.polling.request_timeout);
        let mut attempted = HashSet::new();
        for (i, v) in rooms.iter().enumerate() {
            let room = match parse_room(v, &self.departments) {
                Ok(Some(room)) => room,
                Ok(None) => continue,
                Err(why) => {
                    invalid.push(why);
                    continue;
                }
            };
            if let Some(why) = from_the_future(&format!("room {}", room.id), room.updated, date) {
                invalid.push(why);
                continue;
            }
            if i >= listed {
                newest = newest.max(Some(room.updated));
            }
            let history = if !room.open && room.served_by.is_some() && self.start.is_none_or(|s| room.updated > s) {
                match self.history_or_later(&room, v, history_deadline, &mut attempted).await? {
                    Some(h) => Some(h),
                    None => {
                        // Counted once its history is read; it is closed meanwhile.
                        self.unserved.remove(&room.id);
                        continue;
                    }
                }
            } else {
                None
            };
            if room.open && room.served_by.is_none() {
                self.unserved.insert(room.id.clone(), room.clone());
            } else {
                self.unserved.remove(&room.id);
            }
            seen.insert(room.id.clone());
            obs.observe(room.observe(queued.contains(&room.id), history.as_ref()));
        }
        // Rooms whose history an earlier poll could not read, those failing least first:
        // one that always fails cannot keep the others waiting.
        let mut waiting: Vec<(u32, String)> = self
            .unread_histories
            .iter()
            .filter(|(id, _)| !attempted.contains(*id))
            .map(|(id, u)| (u.failures, id.clone()))
            .collect();
        waiting.sort();
        for (_, id) in waiting {
            let Some(record) = self.unread_histories.get(&id).map(|u| u.record.clone()) else { continue };
            let Ok(Some(room)) = parse_room(&record, &self.departments) else {
                self.unread_histories.remove(&id);
                continue;
            };
            if let Some(h) = self.history_or_later(&room, &record, history_deadline, &mut attempted).await? {
                obs.observe(room.observe(false, Some(&h)));
            }
        }
        // An unserved room moves in or out of the queue with no change to the room itself.
        for (id, room) in &self.unserved {
            if !seen.contains(id) {
                obs.observe(room.observe(queued.contains(id), None));
            }
        }
        if let Some(n) = newest {
            // Never past the server's own clock: one room stamped in the future cannot
            // make the next poll skip the rooms changed before it.
            let bounded = date.map_or(n, |d| n.min(d));
            self.cursor = Some(self.cursor.map_or(bounded, |c| c.max(bounded)));
        }
        // Histories of rooms that can no longer come back in a window.
        if let Some(c) = self.cursor {
            let keep = c - chrono::Duration::from_std(self.config.overlap * 2).unwrap_or_default();
            self.histories.retain(|_, (at, _)| *at >= keep);
        }
        self.client.reject_records(&invalid);
        self.server_now = date;
        self.started = true;
        self.polls += 1;
        Ok(obs)
    }
}

#[async_trait::async_trait]
impl Source for RocketChatSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn timings(&self) -> Timings {
        // Its contract leaves out the wait and duration histograms (docs/metrics.md).
        Timings::NONE
    }

    fn budget(&self) -> Arc<RequestBudget> {
        self.client.budget()
    }

    /// Since the oldest change of the rooms waiting for their transfer history.
    fn held_back(&self) -> Option<Duration> {
        let oldest = self.unread_histories.values().filter_map(|u| super::records::date(u.record.get("_updatedAt"))).min()?;
        let now = self.server_now.unwrap_or_else(Utc::now);
        Some((now - oldest).to_std().unwrap_or(Duration::ZERO))
    }

    fn account(&self) -> String {
        format!(
            "{} (user {}, token sha256 {}…)",
            self.config.base_url,
            self.config.user_id,
            crate::source::credential_digest(&self.config.token)
        )
    }

    fn save_state(&self) -> Value {
        serde_json::json!({
            "cursor": self.cursor,
            "start": self.start,
            "started": self.started,
            "histories": self.histories,
            "unread_histories": self.unread_histories,
        })
    }

    fn restore_state(&mut self, state: Value) -> Result<(), CursorError> {
        #[derive(serde::Deserialize)]
        struct Saved {
            cursor: Option<DateTime<Utc>>,
            start: Option<DateTime<Utc>>,
            started: bool,
            /// Absent from state files written before histories were saved.
            #[serde(default)]
            histories: BTreeMap<String, (DateTime<Utc>, History)>,
            #[serde(default)]
            unread_histories: BTreeMap<String, UnreadHistory>,
        }
        let saved: Saved = serde_json::from_value(state).map_err(|cause| CursorError { platform: NAME, cause })?;
        self.cursor = saved.cursor;
        self.start = saved.start;
        self.started = saved.started;
        self.histories = saved.histories;
        self.unread_histories = saved.unread_histories;
        self.polls = 0;
        self.departments_read_at = None;
        Ok(())
    }

    async fn poll(&mut self) -> Result<Observations, SourceError> {
        // A room whose history was read by a poll that then failed is counted by the next.
        let saved = (self.cursor, self.start, self.polls, self.unserved.clone(), self.unread_histories.clone());
        let result = self.poll_inner().await;
        if result.is_err() {
            (self.cursor, self.start, self.polls, self.unserved, self.unread_histories) = saved;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> RocketChatSource {
        let config = RocketChatConfig::new("http://localhost:3000", "u1", crate::config::Secret::new("t"));
        RocketChatSource::new(config, &Polling::defaults(), SelfMetrics::new())
    }

    /// `X-RateLimit-Limit` is read as the route's limit, bounded: past a million it is a
    /// million, below 1 or unreadable it is not told; the other headers are read without it.
    #[test]
    fn the_advertised_route_limit_is_read_within_bounds() {
        let read = |limit: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(l) = limit {
                headers.insert("x-ratelimit-limit", l.parse().unwrap());
            }
            headers.insert("x-ratelimit-remaining", "7".parse().unwrap());
            headers.insert("x-ratelimit-reset", "1790000060000".parse().unwrap());
            let date = DateTime::from_timestamp(1_790_000_000, 0);
            route_limit(&headers, date).map(|l| (l.limit, l.remaining, l.reset_in.as_secs()))
        };
        assert_eq!(read(Some("300")), Some((Some(300), 7, 61)));
        assert_eq!(read(Some("1000000000000")), Some((Some(MAX_ROUTE_LIMIT), 7, 61)));
        for told_nothing in [None, Some("0"), Some("-5"), Some("many")] {
            assert_eq!(read(told_nothing), Some((None, 7, 61)), "{told_nothing:?}");
        }
    }

    /// A state file written before histories were saved still resumes, with none known;
    /// one written now gives its histories back.
    #[test]
    fn saved_state_resumes_with_and_without_histories() {
        let mut older = source();
        older
            .restore_state(serde_json::json!({"cursor": "2026-11-02T10:00:00Z", "start": null, "started": true}))
            .unwrap();
        assert!(older.histories.is_empty());
        let mut first = source();
        let at = DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z").unwrap().to_utc();
        first.histories.insert("r1".into(), (at, History { transferred: true, first: None }));
        let mut resumed = source();
        resumed.restore_state(first.save_state()).unwrap();
        assert_eq!(resumed.histories, first.histories);
    }
}
