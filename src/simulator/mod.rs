//! The platform simulator: a deterministic contact centre (`world`) served through the
//! [`Facade`] it is handed (each platform's folder has one), with control endpoints under
//! `/_sim/` for tests: ground truth, the clock, injected faults and the requests received.
//! Imports nothing of the crate: it never names a platform.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

pub mod facade;
pub mod truth;
pub mod world;

pub use facade::Facade;
pub use truth::{Sample, Samples, Truth};
pub use world::{Channel, Conversation, Features, Scenario, World};

/// A fault the next request to the platform API gets instead of a normal answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status (500, 503, 401, 403, ...).
    Status { code: u16 },
    /// A body cut in the middle of the JSON.
    MalformedJson,
    /// A JSON value of another shape than the one expected.
    NotAnArray,
    /// An HTML error page with status 200, as proxies do.
    Html,
    /// A normal page plus one record that cannot be read.
    GarbageRecord,
    /// A normal page, answered late.
    Delay { millis: u64 },
    /// A normal page whose body trickles in, one chunk every `millis`.
    SlowBody { millis: u64 },
    /// A gzip answer of about 1 MiB that expands to 1 GiB.
    GzipBomb,
    /// A normal page plus, first in its list, a copy of its first record that no strict
    /// JSON reader can decode.
    UndecodableRecord { how: Undecodable },
    /// A normal page plus a new record stamped in 2099, where the list holds chats.
    FutureRecord,
    /// A normal answer whose rate-limit headers say that no request is left until
    /// `seconds` from now, where the platform tells its limit in headers.
    LimitExhausted { seconds: u64 },
    /// A list that never ends where a platform's list can hold many records about one
    /// conversation (Rocket.Chat's transfer history): after its real records, every page
    /// brings new ones, and its total is a billion.
    EndlessList,
}

/// How a record is made undecodable, as the issue found them in the wild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undecodable {
    /// A lone surrogate escape, `"\ud83d"`, in a string.
    LoneSurrogate,
    /// A Latin-1 byte (not UTF-8) in a name.
    Latin1,
    /// `1e400`: a number no float holds.
    HugeNumber,
}

impl Undecodable {
    pub const ALL: [Undecodable; 3] = [Undecodable::LoneSurrogate, Undecodable::Latin1, Undecodable::HugeNumber];

    /// The first bytes of the record, after its opening brace.
    fn field(self) -> &'static [u8] {
        match self {
            Undecodable::LoneSurrogate => br#""hostile":"\ud83d","#,
            Undecodable::Latin1 => b"\"hostile\":\"Jos\xe9\",",
            Undecodable::HugeNumber => br#""hostile":1e400,"#,
        }
    }
}

/// What a facade gives for its hostile answers.
pub struct HostileRecords {
    /// A record the platform's client cannot read, for [`Fault::GarbageRecord`].
    pub garbage: Value,
    /// The record of the same kind as `record`, new and stamped in 2099, for
    /// [`Fault::FutureRecord`]; `None` where the list holds no chats.
    pub from_the_future: fn(&Value) -> Option<Value>,
}

/// A gzip body of zeros that expands to `expanded` bytes (rounded to whole MiB): one MiB
/// compressed once, on its own (a full flush leaves no reference back), then repeated.
pub fn gzip_bomb(expanded: u64) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(CHUNK);
    deflate.compress_vec(&zeros, &mut block, FlushCompress::Full).expect("deflate in memory");
    let mut end = Vec::with_capacity(64);
    deflate.compress_vec(&[], &mut end, FlushCompress::Finish).expect("deflate in memory");
    let chunks = expanded.div_ceil(CHUNK as u64).max(1);
    let mut crc = Crc::new();
    let mut body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..chunks {
        body.extend_from_slice(&block);
        crc.update(&zeros);
    }
    body.extend_from_slice(&end);
    body.extend_from_slice(&crc.sum().to_le_bytes());
    body.extend_from_slice(&((chunks * CHUNK as u64) as u32).to_le_bytes());
    body
}

/// The bomb every [`Fault::GzipBomb`] answers with, built once.
fn the_gzip_bomb() -> bytes::Bytes {
    static BOMB: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| gzip_bomb(1 << 30).into()).clone()
}

/// How the API writes dates, where a platform has several ways: the usual one, or the
/// variants a client must also accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateStyle {
    #[default]
    Fraction7NoZone,
    NoFractionNoZone,
    Zulu,
    Offset,
}

/// Variations of the answers that must not change what the exporter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rendering {
    pub dates: DateStyle,
    /// Leave out fields whose value is null instead of writing `null`.
    pub omit_nulls: bool,
    /// Every id as a string, where a platform sometimes writes them so.
    pub ids_as_strings: bool,
    /// How far the `Date` header is from the clock that stamps records, in seconds
    /// (a proxy or load balancer with its own clock).
    pub date_header_skew_seconds: i64,
    /// A chat answered within a minute of its creation, the answer its last change, is
    /// stamped a second before its creation: a change stamped earlier than the one
    /// already seen for that chat (a platform writing `lastUpdate` from another clock).
    pub answers_stamped_before_creation: bool,
    /// The answers of the platform's older version, where its shapes differ (each facade
    /// says how).
    pub older_version: bool,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The platform API served, and whose contract the truth follows.
    pub facade: &'static dyn Facade,
    pub seed: u64,
    pub scenario: Scenario,
    /// Simulated time at the start.
    pub start: DateTime<Utc>,
    pub token: String,
    /// Requests per minute per limit key (per token, or per route where the platform
    /// limits per route); `None` turns the limit off.
    pub rate_limit: Option<u32>,
    /// How long a key is blocked once over the limit.
    pub lockout: Duration,
    /// The rate limit's window (a minute, as every platform counts; shorter in tests).
    pub rate_window: Duration,
    /// `Some(speed)`: simulated time runs `speed` times faster than real time.
    /// `None`: time moves only through `advance` (tests).
    pub speed: Option<f64>,
    /// Scale of arrival rates.
    pub load: f64,
    /// What the world does; the platform's own features when `None`.
    pub features: Option<Features>,
}

impl SimOptions {
    /// A simulator of `facade`'s platform with the usual settings: seed 1, a normal day
    /// from 03:00 UTC on 2 November 2026, 10 requests a minute, a manual clock.
    pub fn new(facade: &'static dyn Facade) -> Self {
        SimOptions {
            facade,
            seed: 1,
            scenario: Scenario::Normal,
            start: DateTime::parse_from_rfc3339("2026-11-02T03:00:00Z").expect("valid").with_timezone(&Utc),
            token: "demo-token".to_string(),
            rate_limit: Some(10),
            lockout: Duration::from_secs(60),
            rate_window: Duration::from_secs(60),
            speed: None,
            load: 1.0,
            features: None,
        }
    }
}

/// One request received on the platform API, for tests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    /// Milliseconds since the simulator started, real time.
    pub at_ms: u64,
    pub endpoint: String,
    pub status: u16,
    /// The query string without credentials.
    pub query: String,
}

/// Where a rate-limit key stands after a request, for facades that tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Until the oldest counted request leaves the window.
    pub reset_in: Duration,
    /// Seconds before a refused request may be retried.
    pub retry_after: u64,
}

/// What the simulator decided about a request.
pub enum Admission {
    /// Serve it, with this fault if one is injected.
    Serve { fault: Option<Fault>, limit: Option<LimitStatus> },
    /// Refuse it: bad credentials.
    Unauthorized,
    /// Refuse it: over the rate limit.
    RateLimited(LimitStatus),
}

#[derive(Default)]
struct Window {
    accepted: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

struct Inner {
    world: World,
    options: SimOptions,
    faults: VecDeque<Fault>,
    /// A fault every request gets until it is lifted: an outage.
    outage: Option<Fault>,
    /// Faults every request to one endpoint gets until lifted: an outage of one route.
    endpoint_outages: HashMap<String, Fault>,
    rendering: Rendering,
    /// A server that ignores paging: `Some(n)` answers every list from its start, at
    /// most `n` records a page, whatever offset, skip, page or id bound is asked.
    ignore_paging: Option<usize>,
    requests: Vec<RequestRecord>,
    started: Instant,
    windows: HashMap<String, Window>,
}

impl Inner {
    fn log_request(&mut self, endpoint: &str, status: u16, query: String) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.requests.push(RequestRecord { at_ms, endpoint: endpoint.to_string(), status, query });
    }

    /// Counts a request against `key`'s window; `Err` when it must be refused.
    fn rate_limit(&mut self, key: &str) -> Option<Result<LimitStatus, LimitStatus>> {
        let limit = self.options.rate_limit?;
        let lockout = self.options.lockout;
        let minute = self.options.rate_window;
        let window = self.windows.entry(key.to_string()).or_default();
        let now = Instant::now();
        if let Some(until) = window.blocked_until {
            if now < until {
                let retry_after = (until - now).as_secs_f64().ceil().max(1.0) as u64;
                return Some(Err(LimitStatus { limit, remaining: 0, reset_in: until - now, retry_after }));
            }
            // The block over, the key starts a fresh minute.
            window.blocked_until = None;
            window.accepted.clear();
        }
        while window.accepted.front().is_some_and(|t| now.duration_since(*t) >= minute) {
            window.accepted.pop_front();
        }
        if window.accepted.len() >= limit as usize {
            let until = if lockout.is_zero() { window.accepted[0] + minute } else { now + lockout };
            window.blocked_until = (!lockout.is_zero()).then_some(until);
            let retry_after = (until - now).as_secs_f64().ceil().max(1.0) as u64;
            return Some(Err(LimitStatus { limit, remaining: 0, reset_in: until - now, retry_after }));
        }
        window.accepted.push_back(now);
        let reset = window.accepted[0] + minute;
        let remaining = limit.saturating_sub(window.accepted.len() as u32);
        Some(Ok(LimitStatus { limit, remaining, reset_in: reset.saturating_duration_since(now), retry_after: 0 }))
    }
}

/// The simulated world, read-only, while the simulator is locked.
pub struct WorldRead<'a>(std::sync::MutexGuard<'a, Inner>);

impl std::ops::Deref for WorldRead<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        &self.0.world
    }
}

/// A handle on a running simulator; clones share it.
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Mutex<Inner>>,
    facade: &'static dyn Facade,
}

impl SimState {
    /// A simulator of `options.facade`'s platform.
    pub fn new(options: SimOptions) -> Self {
        let facade = options.facade;
        let features = options.features.unwrap_or_else(|| facade.world_features());
        let mut world = World::new(options.seed, options.scenario, options.start, features);
        world.load = options.load;
        SimState {
            inner: Arc::new(Mutex::new(Inner {
                world,
                options,
                faults: VecDeque::new(),
                outage: None,
                endpoint_outages: HashMap::new(),
                rendering: Rendering::default(),
                ignore_paging: None,
                requests: Vec::new(),
                started: Instant::now(),
                windows: HashMap::new(),
            })),
            facade,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The platform API this simulator serves.
    pub fn facade(&self) -> &'static dyn Facade {
        self.facade
    }

    /// Whether `given` is the token the simulated API accepts.
    pub fn token_is(&self, given: &[u8]) -> bool {
        self.lock().options.token.as_bytes() == given
    }

    /// How the answers are written now.
    pub fn rendering(&self) -> Rendering {
        self.lock().rendering
    }

    /// The world, read-only (a facade building an answer, a test looking inside); the
    /// simulator waits while the guard lives.
    pub fn world(&self) -> WorldRead<'_> {
        WorldRead(self.lock())
    }

    /// Moves simulated time forward.
    pub fn advance(&self, seconds: i64) {
        let mut inner = self.lock();
        let until = inner.world.now + chrono::Duration::seconds(seconds);
        inner.world.advance_to(until);
    }

    pub fn advance_to(&self, until: DateTime<Utc>) {
        self.lock().world.advance_to(until);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.lock().world.now
    }

    pub fn truth(&self) -> Truth {
        let inner = self.lock();
        Truth {
            now: inner.world.now.to_rfc3339(),
            conversations: inner.world.conversations.len() as u64,
            samples: truth::with_zero_series(self.facade.truth(&inner.world), self.facade.histograms()),
        }
    }

    /// Forgets every counted transition: ground truth counts from now on, as an
    /// exporter started now does.
    pub fn reset_counts(&self) {
        self.lock().world.reset_events();
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Every request fails with `fault` until `set_outage(None)`.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.lock().outage = fault;
    }

    /// Every request to `endpoint` (as the facade names it in the request log) fails with
    /// `fault` until `set_outage_of(endpoint, None)`; the other endpoints answer.
    pub fn set_outage_of(&self, endpoint: &str, fault: Option<Fault>) {
        let mut inner = self.lock();
        match fault {
            Some(f) => inner.endpoint_outages.insert(endpoint.to_string(), f),
            None => inner.endpoint_outages.remove(endpoint),
        };
    }

    /// Turns on (`Some(page)`) or off a server that ignores paging.
    pub fn set_ignore_paging(&self, page: Option<usize>) {
        self.lock().ignore_paging = page;
    }

    pub fn set_rendering(&self, rendering: Rendering) {
        self.lock().rendering = rendering;
    }

    /// A conversation vanishes from the API without a trace (hard deletion).
    pub fn purge(&self, id: u64) {
        self.lock().world.purge(id);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    pub fn set_rate_limit(&self, per_minute: Option<u32>, lockout: Duration) {
        let mut inner = self.lock();
        inner.options.rate_limit = per_minute;
        inner.options.lockout = lockout;
        inner.windows.clear();
    }

    /// Runs a closure on the world model (tests that need to look inside).
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.lock().world)
    }

    /// Decides what a request to the platform API gets: the credentials are checked by
    /// the facade (`authorized`), the rate limit per `limit_key`, then the next injected
    /// fault. Every request is logged.
    pub fn admit(&self, endpoint: &str, query: String, authorized: bool, limit_key: &str) -> Admission {
        let mut inner = self.lock();
        if !authorized {
            inner.log_request(endpoint, 401, query);
            return Admission::Unauthorized;
        }
        let limit = match inner.rate_limit(limit_key) {
            Some(Err(status)) => {
                inner.log_request(endpoint, 429, query);
                return Admission::RateLimited(status);
            }
            Some(Ok(status)) => Some(status),
            None => None,
        };
        let fault = inner
            .outage
            .clone()
            .or_else(|| inner.endpoint_outages.get(endpoint).cloned())
            .or_else(|| inner.faults.pop_front());
        let status = match &fault {
            Some(Fault::Status { code }) => *code,
            _ => 200,
        };
        inner.log_request(endpoint, status, query);
        Admission::Serve { fault, limit }
    }

    /// A request admitted to `endpoint` was refused after all, with `status` (a query
    /// parameter the facade's validator forbids): its log entry says so.
    pub fn refused(&self, endpoint: &str, status: u16) {
        if let Some(r) = self.lock().requests.iter_mut().rev().find(|r| r.endpoint == endpoint) {
            r.status = status;
        }
    }

    /// The platform's clock, as its `Date` header shows it: simulated now, plus any
    /// injected skew.
    pub fn platform_now(&self) -> DateTime<Utc> {
        let inner = self.lock();
        inner.world.now + chrono::Duration::seconds(inner.rendering.date_header_skew_seconds)
    }

    /// The platform's clock for a `Date` header.
    pub fn date_header(&self) -> HeaderValue {
        let now = self.platform_now();
        HeaderValue::from_str(&now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).expect("ASCII date")
    }
}

/// The query string of a request, sorted, without the parameters named in `secret`.
pub fn logged_query(params: &[(String, String)], secret: &[&str]) -> String {
    let mut pairs: Vec<String> =
        params.iter().filter(|(k, _)| !secret.contains(&k.as_str())).map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join("&")
}

/// A normal answer with `body`, or what `fault` makes of it. `hostile` has the records
/// the platform's client cannot or must not take; `items` points at the list inside
/// `body` they go into.
pub async fn respond(body: Value, fault: Option<Fault>, items: &[&str], hostile: HostileRecords) -> Response {
    fn list_of<'a>(body: &'a mut Value, items: &[&str]) -> Option<&'a mut Vec<Value>> {
        let mut list = body;
        for key in items {
            list = &mut list[*key];
        }
        list.as_array_mut()
    }
    match fault {
        None => Json(body).into_response(),
        Some(Fault::Status { code }) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({"error": "injected fault"})),
        )
            .into_response(),
        Some(Fault::MalformedJson) => {
            (StatusCode::OK, [("content-type", "application/json")], "[{\"id\": 1, \"status\": ").into_response()
        }
        Some(Fault::NotAnArray) => Json(json!({ "unexpected": [body] })).into_response(),
        Some(Fault::Html) => {
            (StatusCode::OK, [("content-type", "text/html")], "<html><body>Service Unavailable</body></html>")
                .into_response()
        }
        Some(Fault::GarbageRecord) => {
            let mut body = body;
            if let Some(list) = list_of(&mut body, items) {
                list.push(hostile.garbage);
            }
            Json(body).into_response()
        }
        Some(Fault::FutureRecord) => {
            let mut body = body;
            if let Some(list) = list_of(&mut body, items) {
                if let Some(future) = list.first().and_then(hostile.from_the_future) {
                    list.push(future);
                }
            }
            Json(body).into_response()
        }
        Some(Fault::UndecodableRecord { how }) => {
            // A marker string stands for the record in the JSON, then is replaced by its bytes.
            const MARKER: &str = "__undecodable_record__";
            let mut body = body;
            let mut record = None;
            if let Some(list) = list_of(&mut body, items) {
                record = list.first().map(|r| serde_json::to_vec(r).expect("JSON encodes"));
                if record.is_some() {
                    list.insert(0, Value::String(MARKER.to_string()));
                }
            }
            let mut bytes = serde_json::to_vec(&body).expect("JSON encodes");
            if let Some(record) = record {
                let mut tampered = b"{".to_vec();
                tampered.extend_from_slice(how.field());
                tampered.extend_from_slice(&record[1..]);
                let marker = format!("\"{MARKER}\"");
                let at = bytes
                    .windows(marker.len())
                    .position(|w| w == marker.as_bytes())
                    .expect("the marker is in the body");
                bytes.splice(at..at + marker.len(), tampered);
            }
            (StatusCode::OK, [("content-type", "application/json")], bytes).into_response()
        }
        Some(Fault::GzipBomb) => {
            (StatusCode::OK, [("content-type", "application/json"), ("content-encoding", "gzip")], the_gzip_bomb())
                .into_response()
        }
        // The headers are the facade's to write.
        Some(Fault::LimitExhausted { .. } | Fault::EndlessList) => Json(body).into_response(),
        Some(Fault::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Json(body).into_response()
        }
        Some(Fault::SlowBody { millis }) => {
            let bytes = serde_json::to_vec(&body).expect("JSON encodes");
            let chunks: Vec<Vec<u8>> = bytes.chunks(64).map(<[u8]>::to_vec).collect();
            let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
                let chunk = rest.next()?;
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Some((Ok::<_, std::io::Error>(chunk), rest))
            });
            (StatusCode::OK, [("content-type", "application/json")], axum::body::Body::from_stream(stream))
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct AdvanceQuery {
    seconds: Option<i64>,
}

async fn advance(State(state): State<SimState>, Query(q): Query<AdvanceQuery>) -> Response {
    match q.seconds {
        Some(s) if s >= 0 => {
            state.advance(s);
            Json(json!({"now": state.now().to_rfc3339()})).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "seconds: a non-negative integer is required").into_response(),
    }
}

async fn truth_handler(State(state): State<SimState>) -> Json<Truth> {
    Json(state.truth())
}

async fn faults_handler(State(state): State<SimState>, Json(faults): Json<Vec<Fault>>) -> StatusCode {
    state.push_faults(faults);
    StatusCode::NO_CONTENT
}

async fn requests_handler(State(state): State<SimState>) -> Json<Vec<RequestRecord>> {
    Json(state.requests())
}

/// The facade's API and the control endpoints. Every answer is dated by the platform's
/// clock as read when the request came in, before the answer is built from the world, as
/// real servers do: refusals too, whatever the handler.
pub fn router(state: SimState) -> Router {
    state
        .facade
        .router()
        .route("/_sim/truth", get(truth_handler))
        .route("/_sim/advance", post(advance))
        .route("/_sim/faults", post(faults_handler))
        .route("/_sim/requests", get(requests_handler))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ignore_paging))
        .layer(axum::middleware::from_fn_with_state(state.clone(), dated))
        .with_state(state)
}

/// The `Date` header of every answer: the platform's clock on arrival.
async fn dated(
    State(state): State<SimState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let date = state.date_header();
    let mut response = next.run(request).await;
    response.headers_mut().insert(axum::http::header::DATE, date);
    response
}

/// A request the facade refuses (bad credentials, the rate limit, a bad parameter), as
/// the platform writes it: handlers return `Result<Response, Refusal>` and write
/// `admit(..)?`.
pub struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Refusal(Box::new(response))
    }
}

impl<R: IntoResponse> From<(StatusCode, R)> for Refusal {
    fn from(response: (StatusCode, R)) -> Self {
        Refusal(Box::new(response.into_response()))
    }
}

/// A server that ignores paging (see [`Inner::ignore_paging`]): the query loses its
/// offset (`offset`, `$skip`, `page`, an `id gt` bound) and its page size is capped.
async fn ignore_paging(
    State(state): State<SimState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cap = state.lock().ignore_paging;
    if let (Some(cap), Some(query)) = (cap, request.uri().query()) {
        let mut url = reqwest::Url::parse(&format!("http://sim/?{query}")).expect("a query string parses");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| !matches!(k.as_str(), "offset" | "$skip" | "page"))
            .map(|(k, v)| match k.as_str() {
                "count" | "$top" => {
                    let v = v.parse::<usize>().map_or(cap, |n| if n == 0 { cap } else { n.min(cap) }).to_string();
                    (k, v)
                }
                "$filter" => {
                    let v = v.rfind(" and id gt ").map_or(v.clone(), |at| v[..at].to_string());
                    (k, v)
                }
                _ => (k, v),
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let uri = format!("{}?{}", request.uri().path(), url.query().unwrap_or_default());
        if let Ok(uri) = uri.parse() {
            *request.uri_mut() = uri;
        }
    }
    next.run(request).await
}

/// A simulator serving on a bound listener.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    pub state: SimState,
    task: tokio::task::JoinHandle<()>,
    clock: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSimulator {
    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the platform's API is served.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.url(), self.state.facade.api_path())
    }

    /// The platform section that points an exporter at this simulator, within its rate
    /// limit (unlimited: as many as the exporter allows).
    pub fn section(&self) -> Value {
        let (token, limit) = {
            let inner = self.state.lock();
            (inner.options.token.clone(), inner.options.rate_limit)
        };
        self.state.facade.demo_section(&self.url(), &token, limit.unwrap_or(1_000_000))
    }

    /// Runs simulated time `speed` times faster than real time, from where it stands.
    pub fn start_clock(&mut self, speed: f64) {
        self.stop_clock();
        let state = self.state.clone();
        self.clock = Some(tokio::spawn(async move {
            let real_start = Instant::now();
            let sim_start = state.now();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let elapsed = real_start.elapsed().as_secs_f64() * speed;
                state.advance_to(sim_start + chrono::Duration::milliseconds((elapsed * 1000.0) as i64));
            }
        }));
    }

    /// Freezes simulated time (a running clock stops where it is).
    pub fn stop_clock(&mut self) {
        if let Some(c) = self.clock.take() {
            c.abort();
        }
    }

    /// Stops answering: connections to its port are refused until it is served again.
    pub async fn stop(self) -> SimState {
        self.task.abort();
        let state = self.state.clone();
        drop(self);
        // Let the aborted server task drop its listener.
        tokio::time::sleep(Duration::from_millis(50)).await;
        state
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(c) = &self.clock {
            c.abort();
        }
    }
}

pub async fn serve(listener: tokio::net::TcpListener, options: SimOptions) -> std::io::Result<RunningSimulator> {
    let speed = options.speed;
    serve_state(listener, SimState::new(options), speed).await
}

/// Serves an existing world: a simulator stopped and started again keeps its state, as a
/// platform back from an outage does.
pub async fn serve_state(
    listener: tokio::net::TcpListener,
    state: SimState,
    speed: Option<f64>,
) -> std::io::Result<RunningSimulator> {
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    let mut sim = RunningSimulator { addr, state, task, clock: None };
    if let Some(speed) = speed {
        sim.start_clock(speed);
    }
    Ok(sim)
}
