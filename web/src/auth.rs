//! Basic authentication (`basic_auth_users`, bcrypt) and the request guard that enforces it
//! together with the rate limit (`rate_limit`) and the extra response headers
//! (`http_server_config`): those sections' schema and validation, and the middleware.
//! May import: error and throttle (never config, serve or tls).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use prometheus::IntCounter;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};

use crate::error::WebConfigError;
use crate::throttle::ThrottledWarn;

static CHECKS_SHED: ThrottledWarn =
    ThrottledWarn::new("credential check refused with 503: too many in progress (bcrypt is the bottleneck)");

/// Name of the counter of requests answered with 401 Unauthorized.
pub const UNAUTHORIZED_METRIC_NAME: &str = "chat_exporter_http_unauthorized_requests_total";

/// Paths served without asking for credentials (probes), even when basic auth is on; the
/// rate limit does not apply to them either.
pub const UNAUTHENTICATED_PATHS: &[&str] = &["/-/healthy", "/-/ready"];

/// Successful (user, hash, password) verifications remembered to skip bcrypt next time.
const AUTH_CACHE_CAPACITY: usize = 1024;

/// The process-wide counter of requests rejected with 401 (missing or wrong credentials).
///
/// Register it once in the application's registry:
/// `registry.register(Box::new(chat_exporter_web::unauthorized_requests_total().clone()))`.
/// Clones share the value.
pub fn unauthorized_requests_total() -> &'static IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            UNAUTHORIZED_METRIC_NAME,
            "HTTP requests answered with 401 Unauthorized because basic-auth credentials were missing or wrong.",
        )
        .expect("valid metric name and help")
    })
}

// ---------------------------------------------------------------------------------------------
// The sections served here: `http_server_config`, `rate_limit`, `basic_auth_users`
// ---------------------------------------------------------------------------------------------

/// Headers that `http_server_config.headers` may set, with their allowed values (none listed:
/// any value), as in the exporter-toolkit.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// `http_server_config` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// `rate_limit` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    burst: Option<u32>,
    interval: Option<String>,
}

/// `basic_auth_users` as written in the file: user name to bcrypt hash.
pub(crate) type RawUsers = BTreeMap<String, String>;

/// `http_server_config`: the extra response headers, checked against [`ALLOWED_HEADERS`].
pub(crate) fn parse_http_server_config(raw: Option<RawHttp>) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    let mut headers = Vec::new();
    if let Some(http) = raw {
        // `http2` is accepted for compatibility; this server speaks HTTP/1.1 only.
        let _ = http.http2;
        for (name, value) in http.headers.unwrap_or_default() {
            headers.push(validate_header(&name, &value)?);
        }
    }
    Ok(headers)
}

/// `rate_limit`: `(burst, interval)`, or `None` when no interval is set.
pub(crate) fn parse_rate_limit(raw: Option<RawRateLimit>) -> Result<Option<(u32, Duration)>, WebConfigError> {
    let Some(RawRateLimit { burst, interval }) = raw else {
        return Ok(None);
    };
    let interval = match interval.as_deref().map(str::trim) {
        None | Some("") | Some("0") | Some("0s") => Duration::ZERO,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| WebConfigError::new("rate_limit.interval", format!("invalid duration {text:?}: {e}")))?,
    };
    let burst = burst.unwrap_or(0);
    if interval.is_zero() {
        Ok(None)
    } else if burst == 0 {
        Err(WebConfigError::new(
            "rate_limit.burst",
            "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
        ))
    } else {
        Ok(Some((burst, interval)))
    }
}

/// `basic_auth_users`: the checker, or `None` when no user is configured. The hashes are
/// checked here, so that a bad one fails at startup.
pub(crate) fn parse_basic_auth_users(raw: Option<RawUsers>) -> Result<Option<Arc<BasicAuth>>, WebConfigError> {
    let users = raw.unwrap_or_default();
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(WebConfigError::new(format!("basic_auth_users.{user}"), "a user name cannot contain ':'"));
        }
        validate_bcrypt_hash(hash).map_err(|m| WebConfigError::new(format!("basic_auth_users.{user}"), m))?;
    }
    Ok(if users.is_empty() { None } else { Some(Arc::new(BasicAuth::new(users))) })
}

fn validate_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), WebConfigError> {
    let key = format!("http_server_config.headers.{name}");
    let Some((canonical, allowed)) = ALLOWED_HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) else {
        let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
        return Err(WebConfigError::new(
            key,
            format!("this header can not be configured (allowed: {})", names.join(", ")),
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(WebConfigError::new(key, format!("invalid value {value:?}, expected one of {allowed:?}")));
    }
    let header_value = HeaderValue::from_str(value)
        .map_err(|_| WebConfigError::new(key.clone(), format!("invalid header value {value:?}")))?;
    let header_name = HeaderName::from_bytes(canonical.as_bytes()).expect("static header name");
    Ok((header_name, header_value))
}

fn validate_bcrypt_hash(hash: &str) -> Result<(), String> {
    let hash = hash.trim();
    let parts: Result<bcrypt::HashParts, _> = hash.parse();
    match parts {
        // bcrypt's costs are 4 to 31; anything else could not be verified (nor the dummy
        // hash for unknown users made at that cost).
        Ok(parts) if !(4..=31).contains(&parts.get_cost()) => {
            Err(format!("bcrypt cost {} is outside 4..=31", parts.get_cost()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not a bcrypt hash ({e}); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Basic authentication
// ---------------------------------------------------------------------------------------------

/// Result of checking an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No users are configured: every request is allowed.
    NotRequired,
    /// The credentials are right.
    Authorized { user: String },
    /// Answer 401 with `WWW-Authenticate: Basic`.
    Unauthorized(UnauthorizedReason),
}

impl AuthOutcome {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, AuthOutcome::Unauthorized(_))
    }
}

/// Why a request was refused (for logs; the client only sees 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthorizedReason {
    /// No `Authorization` header.
    MissingCredentials,
    /// Not `Basic <base64 of user:password>`.
    MalformedHeader,
    /// The user is not in `basic_auth_users`.
    UnknownUser,
    /// The password does not match the user's bcrypt hash.
    WrongPassword,
}

/// Checks basic-auth credentials against `basic_auth_users` (bcrypt hashes).
///
/// Successful verifications are remembered by a SHA-256 of (user, hash, password), so a
/// scraper sending the same credentials pays the bcrypt cost once, not on every scrape (as
/// the exporter-toolkit does). Failures are not remembered.
///
/// An unknown user is checked against a dummy hash made at load time with the highest cost
/// among the configured hashes, so it costs as much as a known user's wrong password and
/// timing does not tell which users exist.
///
/// From async code, [`BasicAuth::check_bounded`] runs bcrypt off the async workers with the
/// bounds explained at [`MAX_AUTH_QUEUE_WAIT`].
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Compared against for unknown users.
    dummy_hash: String,
    /// How long one verification at the highest configured cost took at load time.
    verify_time: Duration,
    gate: Gate,
    verifications: AtomicU64,
    rounds: AtomicU64,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("users", &self.users.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

struct Credentials {
    user: String,
    password: Vec<u8>,
}

impl BasicAuth {
    /// `users` maps user names to bcrypt hashes (checked by `parse_basic_auth_users`).
    ///
    /// Makes the dummy hash for unknown users at the highest cost among them, which takes as
    /// long as one verification (about 250 ms at cost 12) and measures it.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let users: BTreeMap<String, String> = users.into_iter().map(|(u, h)| (u, h.trim().to_string())).collect();
        let cost = users.values().filter_map(|h| hash_cost(h)).max().unwrap_or(bcrypt::DEFAULT_COST).clamp(4, 31);
        let started = Instant::now();
        let dummy_hash = bcrypt::hash("chat_exporter: no such user", cost).expect("bcrypt cost within 4..=31");
        let verify_time = started.elapsed();
        let workers = bcrypt_workers();
        let max_in_progress = max_in_progress(workers, verify_time);
        tracing::debug!(
            cost,
            verify_ms = verify_time.as_millis() as u64,
            workers,
            max_in_progress,
            "basic auth: bcrypt bounds"
        );
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            dummy_hash,
            verify_time,
            gate: Gate::new(workers, max_in_progress),
            verifications: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        }
    }

    /// bcrypt verifications run so far (for tests and diagnostics).
    pub fn bcrypt_verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The work of those verifications, in bcrypt rounds (2^cost each).
    pub fn bcrypt_rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// The cost of the dummy hash unknown users are checked against.
    pub fn dummy_cost(&self) -> u32 {
        hash_cost(&self.dummy_hash).unwrap_or(0)
    }

    /// How long one verification at the highest configured cost took at load time.
    pub fn verify_time(&self) -> Duration {
        self.verify_time
    }

    /// Credential checks that may be in progress (running or waiting) at once; beyond,
    /// [`BasicAuth::check_bounded`] answers [`Overloaded`].
    pub fn max_checks_in_progress(&self) -> usize {
        self.gate.max_in_progress
    }

    fn bcrypt_verify(&self, password: &[u8], hash: &str) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.rounds.fetch_add(1u64 << hash_cost(hash).unwrap_or(0).min(63), Ordering::Relaxed);
        bcrypt::verify(password, hash).unwrap_or(false)
    }

    /// The configured user names.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Check an `Authorization` header. This may run bcrypt (tens to hundreds of
    /// milliseconds, CPU-bound): from async code use [`BasicAuth::check_bounded`]. It does not
    /// count refusals: whoever answers 401 increments [`unauthorized_requests_total`].
    pub fn check(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        if self.users.is_empty() {
            return AuthOutcome::NotRequired;
        }
        let creds = match parse_basic(authorization_header) {
            Ok(c) => c,
            Err(reason) => return AuthOutcome::Unauthorized(reason),
        };
        let (hash, known) = match self.users.get(&creds.user) {
            Some(h) => (h.as_str(), true),
            // Same cost as a known user, so timing does not reveal which users exist.
            None => (self.dummy_hash.as_str(), false),
        };
        let key = cache_key(&creds.user, hash, &creds.password);
        if known && self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return AuthOutcome::Authorized { user: creds.user };
        }
        let ok = self.bcrypt_verify(&creds.password, hash);
        if !known {
            return AuthOutcome::Unauthorized(UnauthorizedReason::UnknownUser);
        }
        if !ok {
            return AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= AUTH_CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        AuthOutcome::Authorized { user: creds.user }
    }

    /// The outcome without running bcrypt, when it is already known: no users, a missing or
    /// malformed header, or credentials verified before. `None` means bcrypt must run.
    pub fn check_cached(&self, authorization_header: Option<&HeaderValue>) -> Option<AuthOutcome> {
        if self.users.is_empty() {
            return Some(AuthOutcome::NotRequired);
        }
        let creds = match parse_basic(authorization_header) {
            Ok(c) => c,
            Err(reason) => return Some(AuthOutcome::Unauthorized(reason)),
        };
        let hash = self.users.get(&creds.user)?;
        let key = cache_key(&creds.user, hash, &creds.password);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
            .then_some(AuthOutcome::Authorized { user: creds.user })
    }

    /// [`BasicAuth::check`] for async code: a known outcome (cached success, missing or
    /// malformed credentials) at once; otherwise bcrypt on the blocking pool, with at most
    /// [`bcrypt_workers`] verifications running, at most one check in progress per client
    /// address (`peer`) and at most [`BasicAuth::max_checks_in_progress`] in all. A check
    /// that finds no place within [`AUTH_ADMISSION_WAIT`] is refused with [`Overloaded`]
    /// (answer 503).
    pub async fn check_bounded(
        self: &Arc<Self>,
        authorization_header: Option<&HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Result<AuthOutcome, Overloaded> {
        if let Some(outcome) = self.check_cached(authorization_header) {
            return Ok(outcome);
        }
        let ticket = self.gate.admit_within(peer, AUTH_ADMISSION_WAIT).await?;
        let worker = self.gate.workers.clone().acquire_owned().await.expect("semaphore never closed");
        let auth = self.clone();
        let header = authorization_header.cloned();
        // The ticket and the worker are released when the verification is done, even if the
        // client has gone away meanwhile.
        let outcome = tokio::task::spawn_blocking(move || {
            let _held = (ticket, worker);
            auth.check(header.as_ref())
        })
        .await;
        Ok(outcome.unwrap_or(AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword)))
    }
}

// ---------------------------------------------------------------------------------------------
// bcrypt bounds
// ---------------------------------------------------------------------------------------------

/// Longest a credential check may expect to wait for a bcrypt worker once admitted.
///
/// How the bcrypt work is bounded, and why this way:
/// - Credentials verified once are cached, so a valid scrape after the first never reaches
///   bcrypt and never waits behind anyone's bcrypt work.
/// - Verifications run on the blocking pool, at most [`bcrypt_workers`] at once, so the
///   async workers keep serving scrapes and probes during a flood.
/// - A first login cannot be told from a wrong password before bcrypt has run, so it cannot
///   be put ahead in the queue. Instead the queue is kept short: a check is admitted only if
///   the checks ahead of it, at the verification time measured at load (the highest
///   configured cost), finish within this wait. At cost 12 (250–290 ms a check) with one
///   worker, that is one check running and one or two waiting.
/// - Each client address has at most one check in progress ([`MAX_CHECKS_PER_PEER`]), so
///   a flood from one address (a brute-force client, a misconfigured scraper) occupies one
///   place in the queue and a scraper from another address is admitted at once: it is
///   answered within this wait plus its own verification (under 1 s at cost 12).
/// - A check that finds no place waits for one at most [`AUTH_ADMISSION_WAIT`], then gets
///   503 with `Retry-After: 1`, rather than a 401 after seconds (Prometheus' scrape timeout
///   is 10 s). The short wait keeps a flood's clients from retrying in a tight loop that
///   would take the CPU from bcrypt. A flood from many addresses can still fill the queue;
///   a first login then gets 503 quickly and the next scrape tries again.
pub const MAX_AUTH_QUEUE_WAIT: Duration = Duration::from_millis(500);

/// Longest a credential check waits for a place in the queue before 503 (see
/// [`MAX_AUTH_QUEUE_WAIT`]).
pub const AUTH_ADMISSION_WAIT: Duration = Duration::from_millis(250);

/// Credential checks (running or waiting) per client address at once; more get 503.
pub const MAX_CHECKS_PER_PEER: usize = 1;

/// Never more checks in progress than this, however cheap the configured hashes.
const MAX_CHECKS_IN_PROGRESS: usize = 256;

/// bcrypt verifications running at once: half the cores, at least one, so that the other
/// half keeps serving scrapes, probes and the poller while a flood keeps bcrypt busy.
pub fn bcrypt_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}

/// Checks admitted at once so that the last admitted waits at most [`MAX_AUTH_QUEUE_WAIT`].
fn max_in_progress(workers: usize, verify_time: Duration) -> usize {
    let per_worker = (MAX_AUTH_QUEUE_WAIT.as_secs_f64() / verify_time.as_secs_f64().max(1e-6)).floor() as usize;
    // `workers` running, plus those that start within the wait.
    (workers + workers * per_worker).clamp(workers, MAX_CHECKS_IN_PROGRESS)
}

/// A credential check refused because too many are in progress: answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

type InProgress = Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>;

struct Gate {
    workers: Arc<Semaphore>,
    max_in_progress: usize,
    /// Checks in progress: in all, and per client address.
    in_progress: InProgress,
    /// Notified when a check gives its place back.
    released: Arc<Notify>,
}

impl Gate {
    fn new(workers: usize, max_in_progress: usize) -> Self {
        Gate {
            workers: Arc::new(Semaphore::new(workers)),
            max_in_progress,
            in_progress: Arc::new(Mutex::new((0, HashMap::new()))),
            released: Arc::new(Notify::new()),
        }
    }

    /// A place in the queue, waiting for one at most `wait`.
    async fn admit_within(&self, peer: Option<IpAddr>, wait: Duration) -> Result<Ticket, Overloaded> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so that a place given back in between is not missed.
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            if let Ok(ticket) = self.admit(peer) {
                return Ok(ticket);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Overloaded);
            }
        }
    }

    fn admit(&self, peer: Option<IpAddr>) -> Result<Ticket, Overloaded> {
        let mut in_progress = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *in_progress;
        if *total >= self.max_in_progress {
            return Err(Overloaded);
        }
        if let Some(peer) = peer {
            let count = per_peer.entry(peer).or_insert(0);
            if *count >= MAX_CHECKS_PER_PEER {
                return Err(Overloaded);
            }
            *count += 1;
        }
        *total += 1;
        Ok(Ticket { in_progress: self.in_progress.clone(), released: self.released.clone(), peer })
    }
}

/// One admitted check; gives its place back when dropped.
struct Ticket {
    in_progress: InProgress,
    released: Arc<Notify>,
    peer: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut in_progress = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *in_progress;
        *total -= 1;
        if let Some(peer) = self.peer {
            if let Some(count) = per_peer.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    per_peer.remove(&peer);
                }
            }
        }
        drop(in_progress);
        self.released.notify_waiters();
    }
}

fn parse_basic(header: Option<&HeaderValue>) -> Result<Credentials, UnauthorizedReason> {
    let header = header.ok_or(UnauthorizedReason::MissingCredentials)?;
    let text = header.to_str().map_err(|_| UnauthorizedReason::MalformedHeader)?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or(UnauthorizedReason::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(UnauthorizedReason::MalformedHeader);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| UnauthorizedReason::MalformedHeader)?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or(UnauthorizedReason::MalformedHeader)?;
    let user = String::from_utf8(decoded[..colon].to_vec()).map_err(|_| UnauthorizedReason::MalformedHeader)?;
    Ok(Credentials { user, password: decoded[colon + 1..].to_vec() })
}

fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hash_cost(hash: &str) -> Option<u32> {
    hash.parse::<bcrypt::HashParts>().ok().map(|parts| parts.get_cost())
}

// ---------------------------------------------------------------------------------------------
// HTTP middleware
// ---------------------------------------------------------------------------------------------

struct Guard {
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    limiter: Option<Mutex<TokenBucket>>,
}

/// `rate_limit`: `burst` requests at once, refilled one per `interval` (Go's rate.Limiter).
struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_token: Duration,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, interval: Duration) -> Self {
        TokenBucket { capacity: f64::from(burst), tokens: f64::from(burst), per_token: interval, last: Instant::now() }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Wrap `app` with the guard: extra response headers, the rate limit and basic
/// authentication (except on [`UNAUTHENTICATED_PATHS`]).
pub(crate) fn guard_layer(
    app: Router,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<(u32, Duration)>,
) -> Router {
    let guard = Arc::new(Guard {
        auth,
        headers,
        limiter: rate_limit.map(|(burst, interval)| Mutex::new(TokenBucket::new(burst, interval))),
    });
    app.layer(axum::middleware::from_fn_with_state(guard, guard_middleware))
}

async fn guard_middleware(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = guarded(&guard, request, next).await;
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn guarded(guard: &Arc<Guard>, request: Request, next: Next) -> Response {
    // Probes pass neither the rate limit nor authentication: a busy or misconfigured
    // scraper must not get the exporter restarted by its liveness probe.
    if UNAUTHENTICATED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(limiter) = &guard.limiter {
        if !limiter.lock().unwrap_or_else(|p| p.into_inner()).allow() {
            return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
        }
    }
    let Some(auth) = &guard.auth else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let outcome = match auth.check_bounded(request.headers().get(AUTHORIZATION), peer).await {
        Ok(outcome) => outcome,
        Err(Overloaded) => {
            CHECKS_SHED.hit(&format_args!("{}", peer.map_or("unknown".to_string(), |p| p.to_string())));
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, "Too many credential checks in progress\n").into_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    match outcome {
        AuthOutcome::NotRequired | AuthOutcome::Authorized { .. } => next.run(request).await,
        AuthOutcome::Unauthorized(reason) => {
            unauthorized_requests_total().inc();
            tracing::debug!(?reason, path = %request.uri().path(), "request refused: basic authentication failed");
            unauthorized_response()
        }
    }
}

fn unauthorized_response() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker for the `basic_auth_users` section of `yaml`.
    fn parse(yaml: &str) -> Arc<BasicAuth> {
        let mut file: BTreeMap<String, RawUsers> = serde_yaml::from_str(yaml).unwrap();
        parse_basic_auth_users(file.remove("basic_auth_users")).unwrap().expect("users configured")
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = parse(&format!("basic_auth_users:\n  prometheus: '{hash}'\n"));
        assert_eq!(auth.check(None), AuthOutcome::Unauthorized(UnauthorizedReason::MissingCredentials));
        assert_eq!(
            auth.check(Some(&HeaderValue::from_static("Bearer x"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::MalformedHeader)
        );
        assert_eq!(
            auth.check(Some(&basic("prometheus", "wrong"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword)
        );
        assert_eq!(
            auth.check(Some(&basic("nobody", "s3cret"))),
            AuthOutcome::Unauthorized(UnauthorizedReason::UnknownUser)
        );
        let good = basic("prometheus", "s3cret");
        assert_eq!(auth.check_cached(Some(&good)), None, "not verified yet");
        assert_eq!(auth.check(Some(&good)), AuthOutcome::Authorized { user: "prometheus".into() });
        assert_eq!(auth.check_cached(Some(&good)), Some(AuthOutcome::Authorized { user: "prometheus".into() }));
        assert_eq!(auth.check_cached(Some(&basic("prometheus", "wrong"))), None);
        // Passwords may contain ':'.
        let hash = bcrypt::hash("a:b", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("u".to_string(), hash)]));
        assert!(auth.check(Some(&basic("u", "a:b"))).is_allowed());
    }

    #[test]
    fn unknown_users_cost_as_much_as_the_costliest_configured_hash() {
        let users = BTreeMap::from([
            ("alice".to_string(), bcrypt::hash("a", 6).unwrap()),
            ("bob".to_string(), bcrypt::hash("b", 4).unwrap()),
        ]);
        let auth = BasicAuth::new(users);
        assert_eq!(auth.dummy_cost(), 6, "the dummy hash takes the highest configured cost");
        assert!(auth.check(Some(&basic("mallory", "a"))) == AuthOutcome::Unauthorized(UnauthorizedReason::UnknownUser));
        assert_eq!((auth.bcrypt_verifications(), auth.bcrypt_rounds()), (1, 1 << 6));
        assert!(!auth.check(Some(&basic("alice", "wrong"))).is_allowed());
        assert_eq!((auth.bcrypt_verifications(), auth.bcrypt_rounds()), (2, 2 << 6), "same work as an unknown user");
    }

    #[test]
    fn the_queue_admits_what_finishes_within_the_wait_and_one_check_per_address() {
        // 250 ms a check (cost 12), one worker: one running and one waiting.
        assert_eq!(max_in_progress(1, Duration::from_millis(250)), 3);
        assert_eq!(max_in_progress(1, Duration::from_millis(300)), 2);
        assert_eq!(max_in_progress(2, Duration::from_millis(600)), 2, "never fewer than the workers");
        assert_eq!(max_in_progress(1, Duration::from_micros(10)), MAX_CHECKS_IN_PROGRESS);

        let gate = Gate::new(1, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = gate.admit(Some(a)).unwrap();
        assert_eq!(gate.admit(Some(a)).err(), Some(Overloaded), "one check per address");
        let _second = gate.admit(Some(b)).unwrap();
        let _third = gate.admit(None).unwrap();
        assert_eq!(gate.admit(Some("192.0.2.3".parse().unwrap())).err(), Some(Overloaded), "queue full");
        drop(first);
        assert!(gate.admit(Some(a)).is_ok(), "a place given back is taken again");
    }

    #[tokio::test]
    async fn a_check_waits_a_little_for_a_place_then_gets_overloaded() {
        let gate = Arc::new(Gate::new(1, 1));
        let held = gate.admit(None).unwrap();
        let started = Instant::now();
        assert_eq!(gate.admit_within(None, Duration::from_millis(100)).await.err(), Some(Overloaded));
        assert!(started.elapsed() >= Duration::from_millis(90), "refused only after the wait");
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit_within(None, Duration::from_secs(5)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap(), "a place given back is taken by the waiting check");
    }
}
