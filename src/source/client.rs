//! The HTTP side every source shares: requests go through the budget, answers are
//! classified into [`SourceError`]s with bounded reasons, bodies are read up to a size
//! limit, and every request and failure is counted. Nothing here ever formats a URL
//! with its query (a token may travel in it): errors name the endpoint, and at most the
//! URL's path.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::value::RawValue;
use serde_json::Value;

use super::SourceError;
use crate::budget::{Outcome, RequestBudget, RouteBudget, MAX_RETRY_AFTER};
use crate::config::Polling;
use crate::self_metrics::SelfMetrics;

/// Pages of one list read in one poll at most: beyond them the paging is a failure.
pub const MAX_PAGES: usize = 1000;

/// How long one poll may page through one list. Far above what a large account needs at
/// its budget (300 pages at 10 requests a minute), and well below what [`MAX_PAGES`]
/// takes at that pace (100 minutes): a list that never ends stops within half an hour.
pub const MAX_PAGING_TIME: Duration = Duration::from_secs(30 * 60);

/// Watches the pages of one list read in one poll: paging must bring a record not seen
/// on an earlier page each time it asks for more (a server that ignores the offset gives
/// the same page forever), within [`MAX_PAGES`] and [`MAX_PAGING_TIME`]; otherwise it
/// ends as a `no_progress` failure instead of looping.
#[derive(Debug, Default)]
pub struct PageGuard {
    seen: HashSet<String>,
    pages: usize,
    /// When the first page came, in this poll.
    since: Option<Instant>,
}

impl PageGuard {
    /// The list goes on in another poll (a window a failed poll left half read): its
    /// time counts from now, not across the failure's wait.
    pub fn resume(&mut self) {
        self.since = None;
    }

    /// Takes the ids of the records of a page after which the list goes on.
    pub fn more_after(
        &mut self,
        client: &ApiClient,
        endpoint: &'static str,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<(), SourceError> {
        self.pages += 1;
        let since = *self.since.get_or_insert_with(Instant::now);
        let before = self.seen.len();
        self.seen.extend(ids);
        let detail = if self.seen.len() == before {
            format!("page {} brought no record not seen on an earlier page (the server ignores paging)", self.pages)
        } else if self.pages >= MAX_PAGES {
            format!("more than {MAX_PAGES} pages in one poll")
        } else if since.elapsed() >= MAX_PAGING_TIME {
            format!("{} pages in more than {} minutes in one poll", self.pages, MAX_PAGING_TIME.as_secs() / 60)
        } else {
            return Ok(());
        };
        Err(client.fail(SourceError::NoProgress { endpoint, detail }))
    }
}

/// What a platform's answers mean, for errors that say what to fix.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Added to a 401/403: which setting holds the credential.
    pub unauthorized: String,
    /// Added to a 404: what a wrong base URL usually lacks.
    pub not_found: String,
    /// Reads the body of a refusal (4xx, at most 4 KiB) for a better hint, where the
    /// platform's answers tell causes apart.
    pub explain: Option<fn(u16, &[u8]) -> Option<String>>,
}

/// Where a route stands, by the platform's rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteLimit {
    /// Requests the route allows in its window, where the platform says.
    pub limit: Option<u32>,
    pub remaining: u32,
    /// Until the route's window resets.
    pub reset_in: Duration,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
    /// The platform's clock (`Date` header), when it sent one.
    pub date: Option<DateTime<Utc>>,
    pub headers: HeaderMap,
}

pub struct ApiClient {
    http: reqwest::Client,
    source: &'static str,
    budget: Arc<RequestBudget>,
    metrics: SelfMetrics,
    max_body: u64,
    hints: Hints,
    /// Reads a platform's own per-route rate-limit headers, where it limits each route.
    route_limit: Option<fn(&HeaderMap, Option<DateTime<Utc>>) -> Option<RouteLimit>>,
    /// Whether an unreadable record was logged since the last clean poll.
    rejection_logged: AtomicBool,
    /// Whether a list answer held an undecodable record since records were last reported.
    undecodable_seen: AtomicBool,
}

/// The records of a list answer, each decoded on its own: one that cannot be decoded (a
/// lone surrogate, bytes that are not UTF-8, a number no float holds) is left out and
/// counted, and the rest are used.
#[derive(Debug, Default)]
pub struct List {
    /// The records that decoded, in the answer's order.
    pub items: Vec<Value>,
    /// How many records the list held, decodable or not: what paging by offset counts.
    pub len: usize,
    /// The other fields beside the list, at the top of the answer (a total, a cursor);
    /// one that cannot be decoded is left out.
    pub envelope: serde_json::Map<String, Value>,
}

impl ApiClient {
    pub fn new(source: &'static str, polling: &Polling, metrics: SelfMetrics, hints: Hints) -> Self {
        let budget = Arc::new(RequestBudget::new(source, polling.requests_per_minute, metrics.clone()));
        metrics.register_source(source, polling.requests_per_minute);
        let http = reqwest::Client::builder()
            .timeout(polling.request_timeout)
            .connect_timeout(polling.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("chat_exporter/", env!("CARGO_PKG_VERSION")))
            // Credentials travel with every request: never carry them to another address.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds with static settings");
        ApiClient {
            http,
            source,
            budget,
            metrics,
            max_body: polling.max_response_size,
            hints,
            route_limit: None,
            rejection_logged: AtomicBool::new(false),
            undecodable_seen: AtomicBool::new(false),
        }
    }

    /// The platform limits each route on its own, as `per_route` says, and tells where a
    /// route stands in headers that `read` understands: the limit it advertises is the
    /// route's budget (up to an explicit one), and a route with no request left waits for
    /// its reset instead of earning a 429.
    pub fn with_route_limits(
        mut self,
        per_route: RouteBudget,
        read: fn(&HeaderMap, Option<DateTime<Utc>>) -> Option<RouteLimit>,
    ) -> Self {
        let budget = Arc::try_unwrap(self.budget).unwrap_or_else(|_| unreachable!("the budget is not shared yet"));
        self.budget = Arc::new(budget.with_route_limit(per_route));
        self.route_limit = Some(read);
        self
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn budget(&self) -> Arc<RequestBudget> {
        self.budget.clone()
    }

    pub fn metrics(&self) -> &SelfMetrics {
        &self.metrics
    }

    /// Sends one request once the budget allows it, and reads the whole answer.
    pub async fn fetch(&self, endpoint: &'static str, request: reqwest::RequestBuilder) -> Result<Answer, SourceError> {
        self.budget.acquire(endpoint).await;
        let (path, request) = match request.build() {
            Ok(r) => (r.url().path().to_string(), r),
            Err(e) => return Err(self.fail(transport_error(endpoint, &e))),
        };
        let response = match self.http.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                self.count_request(endpoint, "none");
                return Err(self.fail(transport_error(endpoint, &e)));
            }
        };
        let status = response.status().as_u16();
        self.count_request(endpoint, &status.to_string());
        let headers = response.headers().clone();
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&Utc));
        let route = self.route_limit.and_then(|read| read(&headers, date));
        if let Some(limit) = route.and_then(|r| r.limit) {
            self.budget.advertise_route_limit(endpoint, limit);
        }
        if let Some(limit) = route.filter(|r| r.remaining == 0 || status == 429) {
            self.budget.hold_route(endpoint, limit.reset_in);
        }
        match status {
            200 => {}
            429 => {
                let retry_after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, date))
                    .map(|d| d.min(MAX_RETRY_AFTER));
                if let (None, Some(limit)) = (retry_after, route) {
                    // Only this route is over its limit, and it waits for its reset.
                    let err = SourceError::RateLimited { endpoint, retry_after: Some(limit.reset_in) };
                    self.metrics.api_failures.with_label_values(&[self.source, err.reason()]).inc();
                    self.budget.record(Outcome::Failure);
                    return Err(err);
                }
                return Err(self.fail(SourceError::RateLimited { endpoint, retry_after }));
            }
            401 | 403 => {
                let hint = self.explain(status, response).await.unwrap_or_else(|| self.hints.unauthorized.clone());
                return Err(self.fail(SourceError::Unauthorized { endpoint, status, hint }));
            }
            500.. => return Err(self.fail(SourceError::Server { endpoint, status })),
            404 => {
                let hint = self.explain(status, response).await.unwrap_or_else(|| self.hints.not_found.clone());
                return Err(self.fail(SourceError::Client { endpoint, status, hint: format!(" at {path}{hint}") }));
            }
            _ => {
                // A 400 may say which parameter the platform refuses (an older version's
                // validator), and a source can fall back on it.
                let hint = self.explain(status, response).await.unwrap_or_default();
                return Err(self.fail(SourceError::Client { endpoint, status, hint }));
            }
        }
        let body = match read_limited(response, self.max_body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return Err(self.fail(SourceError::TooLarge { endpoint, limit: self.max_body })),
            Err(BodyError::Transport(e)) => return Err(self.fail(transport_error(endpoint, &e))),
        };
        self.budget.record(Outcome::Success);
        Ok(Answer { body, date, headers })
    }

    /// The platform's own words for a refusal, when it has an explainer for them.
    async fn explain(&self, status: u16, response: reqwest::Response) -> Option<String> {
        let explain = self.hints.explain?;
        let body = read_limited(response, 4096).await.ok()?;
        explain(status, &body)
    }

    /// Decodes a JSON answer; a body that is not what `T` expects fails the request.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &[u8],
    ) -> Result<T, SourceError> {
        serde_json::from_slice(body).map_err(|e| self.fail(SourceError::Decode { endpoint, detail: e.to_string() }))
    }

    /// Decodes a list answer record by record: the list at `path` (object keys from the
    /// top; empty for a bare array). An answer that is not JSON, or has no list there,
    /// fails the request; a record that cannot be decoded is skipped and counted under
    /// `invalid_record`, and never fails its page.
    pub fn decode_list(&self, endpoint: &'static str, body: &[u8], path: &[&str]) -> Result<List, SourceError> {
        let text = escape_invalid_utf8(body);
        let malformed = |detail: String| self.fail(SourceError::Decode { endpoint, detail });
        let where_ = || if path.is_empty() { "the top".to_string() } else { path.join(".") };
        let mut raw: &RawValue = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let mut list = List::default();
        for (depth, key) in path.iter().enumerate() {
            let Ok(mut fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) else {
                return Err(malformed(format!("expected a list at {}", where_())));
            };
            raw = fields.remove(*key).ok_or_else(|| malformed(format!("expected a list at {}", where_())))?;
            if depth == 0 {
                list.envelope =
                    fields.into_iter().filter_map(|(k, v)| Some((k, serde_json::from_str(v.get()).ok()?))).collect();
            }
        }
        let records: Vec<&RawValue> =
            serde_json::from_str(raw.get()).map_err(|_| malformed(format!("expected a list at {}", where_())))?;
        list.len = records.len();
        let mut undecodable = Vec::new();
        for record in records {
            match serde_json::from_str::<Value>(record.get()) {
                Ok(v) => list.items.push(v),
                Err(e) => undecodable.push(format!(
                    "{endpoint}: a record that cannot be decoded ({e}): {}",
                    truncate(record.get(), 120)
                )),
            }
        }
        if !undecodable.is_empty() {
            self.undecodable_seen.store(true, Ordering::Relaxed);
            self.count_rejected(&undecodable);
        }
        Ok(list)
    }

    /// Counts a failure under its reason and tells the budget.
    pub fn fail(&self, err: SourceError) -> SourceError {
        self.metrics.api_failures.with_label_values(&[self.source, err.reason()]).inc();
        self.budget.record(match &err {
            SourceError::RateLimited { retry_after, .. } => Outcome::RetryAfter(*retry_after),
            _ => Outcome::Failure,
        });
        err
    }

    /// Counts records of a good answer that could not be read, each skipped on its own.
    /// The first is logged, the rest only counted until a poll comes back clean.
    pub fn reject_records(&self, details: &[String]) {
        let undecodable = self.undecodable_seen.swap(false, Ordering::Relaxed);
        if details.is_empty() {
            if !undecodable {
                self.rejection_logged.store(false, Ordering::Relaxed);
            }
            return;
        }
        self.count_rejected(details);
    }

    fn count_rejected(&self, details: &[String]) {
        let reason = super::Reason::InvalidRecord.label();
        self.metrics.api_failures.with_label_values(&[self.source, reason]).inc_by(details.len() as u64);
        if !self.rejection_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(source = self.source, reason, detail = %details[0], "skipping a record the exporter cannot read; further ones are counted, not logged, until a clean poll");
        } else {
            for detail in details {
                tracing::debug!(source = self.source, detail = %detail, "skipping unreadable record");
            }
        }
    }

    fn count_request(&self, endpoint: &str, code: &str) {
        self.metrics.api_requests.with_label_values(&[self.source, endpoint, code]).inc();
    }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the body chunk by chunk (decompressed, when the platform compresses), giving up
/// as soon as it passes `limit`: a huge or endless answer costs at most `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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

/// The error and its causes, without the URL (which may carry a token).
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

/// The body as text, each byte that is not UTF-8 written as the escape of a lone low
/// surrogate (`\udcXX`, as Python's `surrogateescape`): inside a string it makes only
/// that record undecodable; elsewhere the answer is malformed anyway.
fn escape_invalid_utf8(body: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(body) {
        return Cow::Borrowed(text);
    }
    let mut text = String::with_capacity(body.len() + 16);
    for chunk in body.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\udc{byte:02x}"));
        }
    }
    Cow::Owned(text)
}

/// `Retry-After` is either seconds or an HTTP date, taken against the answer's own
/// `Date` when it has one (the platform's clock, not ours).
pub fn parse_retry_after(value: &str, date: Option<DateTime<Utc>>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&Utc) - date.unwrap_or_else(Utc::now);
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// One line of a record for a log: at most `max` characters.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list that brings new records on every page, slowly (a route's pace, a slow
    /// server), stops at the time bound long before the page cap.
    #[tokio::test(start_paused = true)]
    async fn paging_is_bounded_in_time_as_well_as_in_pages() {
        let polling = Polling { requests_per_minute: 10, ..Polling::defaults() };
        let client = ApiClient::new("test", &polling, SelfMetrics::new(), Hints::default());
        let mut guard = PageGuard::default();
        let page_every = Duration::from_secs(6);
        let mut pages = 0;
        let err = loop {
            pages += 1;
            match guard.more_after(&client, "rooms", [pages.to_string()]) {
                Ok(()) => tokio::time::advance(page_every).await,
                Err(e) => break e,
            }
        };
        assert_eq!(err.reason(), "no_progress", "{err}");
        assert_eq!(pages, (MAX_PAGING_TIME.as_secs() / page_every.as_secs()) as usize + 1, "{err}");
        assert!(pages < MAX_PAGES);
        // A window resumed in a later poll counts its time from then.
        guard.resume();
        assert!(guard.more_after(&client, "rooms", ["next".to_string()]).is_ok());
    }

    #[test]
    fn retry_after_is_capped_whatever_the_platform_says() {
        assert_eq!(parse_retry_after("18446744073709551615", None), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("7", None), Some(Duration::from_secs(7)));
        let date = DateTime::parse_from_rfc2822("Tue, 01 Dec 2026 10:00:00 GMT").unwrap().to_utc();
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 10:00:30 GMT", Some(date)), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", Some(date)), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", None), None);
    }
}
