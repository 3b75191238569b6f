//! Basic authentication (`basic_auth_users`, bcrypt) and the request guard that enforces it
//! together with the rate limit and the extra response headers.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use prometheus::IntCounter;
use tokio::sync::Semaphore;

/// Name of the counter of requests answered with 401 Unauthorized.
pub const UNAUTHORIZED_METRIC_NAME: &str = "chat_exporter_http_unauthorized_requests_total";

/// Paths served without asking for credentials (probes), even when basic auth is on; the
/// rate limit does not apply to them either.
pub const UNAUTHENTICATED_PATHS: &[&str] = &["/-/healthy", "/-/ready"];

/// Successful (user, hash, password) verifications remembered to skip bcrypt next time.
const AUTH_CACHE_CAPACITY: usize = 1024;

/// The process-wide counter of requests rejected with 401 (missing or wrong credentials).
///
/// Register it once in the exporter's registry:
/// `registry.register(Box::new(http::web::unauthorized_requests_total().clone()))`.
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
/// scraper sending the same credentials pays the bcrypt cost once, not on every scrape.
/// Failures are not remembered.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
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
    /// `users` maps user names to bcrypt hashes (checked by [`WebConfig::load`]).
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let users = users.into_iter().map(|(u, h)| (u, h.trim().to_string())).collect();
        BasicAuth { users, verified: Mutex::new(HashSet::new()) }
    }

    /// The configured user names.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Check an `Authorization` header. This may run bcrypt (tens of milliseconds, CPU-bound);
    /// from async code prefer [`WebConfig::layer`], which runs it on the blocking pool one
    /// at a time. It does not count refusals: whoever answers 401 increments
    /// [`unauthorized_requests_total`].
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
            None => (dummy_hash(), false),
        };
        let key = cache_key(&creds.user, hash, &creds.password);
        if known && self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return AuthOutcome::Authorized { user: creds.user };
        }
        let ok = bcrypt::verify(&creds.password, hash).unwrap_or(false);
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

/// A bcrypt hash (cost 10, like most configured hashes) compared against for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("chat_exporter unknown user", 10).expect("bcrypt hash"))
}

// ---------------------------------------------------------------------------------------------
// HTTP middleware
// ---------------------------------------------------------------------------------------------

struct Guard {
    auth: Option<Arc<BasicAuth>>,
    /// One bcrypt verification at a time, waiting asynchronously (as the exporter-toolkit does).
    bcrypt_slot: Semaphore,
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
/// authentication (see [`WebConfig::layer`](super::WebConfig::layer)).
pub(super) fn guard_layer(
    app: Router,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<(u32, Duration)>,
) -> Router {
    let guard = Arc::new(Guard {
        auth,
        bcrypt_slot: Semaphore::new(1),
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
    let header = request.headers().get(AUTHORIZATION).cloned();
    let outcome = match auth.check_cached(header.as_ref()) {
        Some(outcome) => outcome,
        None => {
            let _slot = guard.bcrypt_slot.acquire().await.expect("semaphore never closed");
            let auth = auth.clone();
            tokio::task::spawn_blocking(move || auth.check(header.as_ref()))
                .await
                .unwrap_or(AuthOutcome::Unauthorized(UnauthorizedReason::WrongPassword))
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
    use std::path::Path;

    use super::super::WebConfig;
    use super::*;

    fn parse(yaml: &str) -> WebConfig {
        WebConfig::from_yaml_str(yaml, Path::new("/nonexistent")).unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let config = parse(&format!("basic_auth_users:\n  prometheus: '{hash}'\n"));
        let auth = config.basic_auth().unwrap();
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
}
