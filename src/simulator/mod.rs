//! The platform simulator: a deterministic contact centre (`world`) served through the
//! platform's own API (`movidesk`), with control endpoints under `/_sim/` for tests:
//! ground truth, the clock, injected faults and the log of requests received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod movidesk;
pub mod odata;
pub mod truth;
pub mod world;

pub use truth::{Sample, Truth};
pub use world::{Scenario, World};

/// A fault the next request to the platform API gets instead of a normal answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status (500, 503, 401, 403, ...).
    Status { code: u16 },
    /// A body cut in the middle of the JSON.
    MalformedJson,
    /// A JSON object where an array is expected.
    NotAnArray,
    /// An HTML error page with status 200, as proxies do.
    Html,
    /// A normal page plus one record that cannot be read.
    GarbageRecord,
    /// A normal page, answered late.
    Delay { millis: u64 },
    /// A normal page whose body trickles in, one chunk every `millis`.
    SlowBody { millis: u64 },
}

/// How the API writes dates: Movidesk's usual seven fractional digits and no zone, or
/// the variants a client must also accept.
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
    /// Every id as a string (by default one ticket in three).
    pub ids_as_strings: bool,
    /// How far the `Date` header is from the clock that writes `lastUpdate`, in seconds
    /// (a proxy or load balancer with its own clock).
    pub date_header_skew_seconds: i64,
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub scenario: Scenario,
    /// Simulated time at the start.
    pub start: DateTime<Utc>,
    pub token: String,
    /// Requests per minute per token; `None` turns the limit off.
    pub rate_limit: Option<u32>,
    /// How long a token is blocked once over the limit (Movidesk: about a minute).
    pub lockout: Duration,
    /// `Some(speed)`: simulated time runs `speed` times faster than real time.
    /// `None`: time moves only through `advance` (tests).
    pub speed: Option<f64>,
    /// Scale of arrival rates.
    pub load: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            scenario: Scenario::Normal,
            start: DateTime::parse_from_rfc3339("2026-11-02T03:00:00Z").expect("valid").with_timezone(&Utc),
            token: "demo-token".to_string(),
            rate_limit: Some(10),
            lockout: Duration::from_secs(60),
            speed: None,
            load: 1.0,
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
    /// The query string without the token.
    pub query: String,
}

pub(crate) struct Inner {
    pub world: World,
    pub options: SimOptions,
    pub faults: VecDeque<Fault>,
    /// A fault every request gets until it is lifted: an outage.
    pub outage: Option<Fault>,
    pub rendering: Rendering,
    pub requests: Vec<RequestRecord>,
    started: Instant,
    accepted: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Inner {
    pub(crate) fn log_request(&mut self, endpoint: &str, status: u16, query: String) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.requests.push(RequestRecord { at_ms, endpoint: endpoint.to_string(), status, query });
    }

    /// `Some(seconds)` when the request must be refused with 429 and `Retry-After`.
    pub(crate) fn rate_limit_check(&mut self) -> Option<u64> {
        let limit = self.options.rate_limit?;
        let now = Instant::now();
        if let Some(until) = self.blocked_until {
            if now < until {
                return Some((until - now).as_secs_f64().ceil().max(1.0) as u64);
            }
            // The block over, the token starts a fresh minute.
            self.blocked_until = None;
            self.accepted.clear();
        }
        while self.accepted.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.accepted.pop_front();
        }
        if self.accepted.len() >= limit as usize {
            self.blocked_until = Some(now + self.options.lockout);
            return Some(self.options.lockout.as_secs_f64().ceil().max(1.0) as u64);
        }
        self.accepted.push_back(now);
        None
    }
}

/// A handle on a running simulator; clones share it.
#[derive(Clone)]
pub struct SimState {
    pub(crate) inner: Arc<Mutex<Inner>>,
}

impl SimState {
    pub fn new(options: SimOptions) -> Self {
        let mut world = World::new(options.seed, options.scenario, options.start);
        world.load = options.load;
        SimState {
            inner: Arc::new(Mutex::new(Inner {
                world,
                options,
                faults: VecDeque::new(),
                outage: None,
                rendering: Rendering::default(),
                requests: Vec::new(),
                started: Instant::now(),
                accepted: VecDeque::new(),
                blocked_until: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        truth::truth(&self.lock().world)
    }

    /// Forgets every counted transition: ground truth counts from now on, as an
    /// exporter started now does.
    pub fn reset_counts(&self) {
        self.lock().world.events = Default::default();
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Every request fails with `fault` until `set_outage(None)`.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.lock().outage = fault;
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
    }

    /// Runs a closure on the world model (tests that need to look inside).
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.lock().world)
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
            Json(serde_json::json!({"now": state.now().to_rfc3339()})).into_response()
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

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/public/v1/tickets", get(movidesk::tickets))
        .route("/public/v1/persons", get(movidesk::persons))
        .route("/_sim/truth", get(truth_handler))
        .route("/_sim/advance", post(advance))
        .route("/_sim/faults", post(faults_handler))
        .route("/_sim/requests", get(requests_handler))
        .with_state(state)
}

/// A simulator serving on a bound listener.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    pub state: SimState,
    task: tokio::task::JoinHandle<()>,
    clock: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSimulator {
    /// Base URL of the Movidesk API facade.
    pub fn movidesk_url(&self) -> String {
        format!("http://{}/public/v1", self.addr)
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
}

impl RunningSimulator {
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
