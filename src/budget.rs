//! The request budget: every call to a platform waits here for its turn.
//!
//! Calls are spread evenly (one every 60 s / budget), never more than the budget in any
//! 60-second window, never before a `Retry-After` has passed, and after consecutive
//! failures they back off exponentially with jitter, so a failing token is not locked out.
//! Where a platform limits each route on its own (Rocket.Chat), every route also has its
//! own window and its own wait, read from the platform's rate-limit headers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::self_metrics::SelfMetrics;

const WINDOW: Duration = Duration::from_secs(60);
/// Kept free at the end of each window, so that network jitter cannot make the platform
/// see one request too many in its own 60-second window.
const WINDOW_MARGIN: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest wait a platform can impose with `Retry-After` (or a reset header): a
/// larger value is taken as this one, so a hostile answer cannot stop polling for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// A wait for budget this long is no longer pacing: it is told (`/-/ready`, the log, and
/// `chat_exporter_api_budget_waiting_seconds`) while it lasts. Pacing alone waits at most
/// a window (61 s) and a spacing.
pub const LONG_WAIT: Duration = Duration::from_secs(90);

pub struct RequestBudget {
    source: &'static str,
    per_minute: u32,
    spacing: Duration,
    /// Requests per minute each route allows on its own, where the platform limits routes.
    per_route: Option<u32>,
    metrics: SelfMetrics,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    sent: VecDeque<Instant>,
    not_before: Option<Instant>,
    /// Why `not_before` is set: a `Retry-After`, or backoff after failures.
    not_before_cause: &'static str,
    /// The wait in progress: since when, until when, and why.
    waiting: Option<Wait>,
    consecutive_failures: u32,
    routes: std::collections::HashMap<&'static str, RouteState>,
}

/// A wait for budget in progress.
#[derive(Clone)]
struct Wait {
    since: Instant,
    until: Instant,
    cause: String,
}

#[derive(Default)]
struct RouteState {
    sent: VecDeque<Instant>,
    not_before: Option<Instant>,
}

/// What came of a call, as far as pacing is concerned.
pub enum Outcome {
    Success,
    Failure,
    RetryAfter(Option<Duration>),
}

impl RequestBudget {
    pub fn new(source: &'static str, per_minute: u32, metrics: SelfMetrics) -> Self {
        let per_minute = per_minute.max(1);
        RequestBudget {
            source,
            per_minute,
            spacing: WINDOW / per_minute,
            metrics,
            per_route: None,
            // A process that just started does not know what its predecessor sent: it
            // waits one spacing, so a crash loop cannot burst past the platform's limit.
            state: Mutex::new(BudgetState {
                sent: VecDeque::new(),
                not_before: Some(Instant::now() + WINDOW / per_minute),
                not_before_cause: "the spacing of a process just started",
                waiting: None,
                consecutive_failures: 0,
                routes: Default::default(),
            }),
        }
    }

    /// Also at most `per_route` requests a minute on each route.
    pub fn with_route_limit(mut self, per_route: u32) -> Self {
        self.per_route = Some(per_route.max(1));
        self
    }

    /// The platform said `route` takes no more requests for `wait` (its own reset time).
    pub fn hold_route(&self, route: &'static str, wait: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = Instant::now() + wait.min(MAX_RETRY_AFTER);
        let r = state.routes.entry(route).or_default();
        r.not_before = Some(r.not_before.map_or(until, |nb| nb.max(until)));
    }

    /// Waits until a call to `route` may be made, and books it. A wait of [`LONG_WAIT`]
    /// or more is logged once, and told by [`RequestBudget::long_wait`] while it lasts.
    pub async fn acquire(&self, route: &'static str) {
        let started = Instant::now();
        let mut told = false;
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while state.sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW + WINDOW_MARGIN) {
                    state.sent.pop_front();
                }
                // The latest of every bound, and the reason for it.
                let mut ready_at = now;
                let mut cause = String::new();
                let mut bound = |at: Instant, why: &dyn Fn() -> String| {
                    if at > ready_at {
                        ready_at = at;
                        cause = why();
                    }
                };
                if let Some(last) = state.sent.back() {
                    bound(*last + self.spacing, &|| "the spacing of requests".to_string());
                }
                if state.sent.len() >= self.per_minute as usize {
                    let oldest = state.sent[state.sent.len() - self.per_minute as usize];
                    bound(oldest + WINDOW + WINDOW_MARGIN, &|| {
                        format!("requests_per_minute ({}) in the 60-second window", self.per_minute)
                    });
                }
                if let Some(nb) = state.not_before {
                    let why = state.not_before_cause;
                    bound(nb, &|| why.to_string());
                }
                if let Some(limit) = self.per_route {
                    let r = state.routes.entry(route).or_default();
                    while r.sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW + WINDOW_MARGIN) {
                        r.sent.pop_front();
                    }
                    if r.sent.len() >= limit as usize {
                        let oldest = r.sent[r.sent.len() - limit as usize];
                        bound(oldest + WINDOW + WINDOW_MARGIN, &|| {
                            format!("route {route}'s budget ({limit} a minute)")
                        });
                    }
                    if let Some(nb) = r.not_before {
                        bound(nb, &|| format!("the platform's rate-limit reset of route {route}"));
                    }
                }
                if ready_at <= now {
                    state.sent.push_back(now);
                    if self.per_route.is_some() {
                        state.routes.entry(route).or_default().sent.push_back(now);
                    }
                    state.waiting = None;
                    None
                } else {
                    state.waiting = Some(Wait { since: started, until: ready_at, cause: cause.clone() });
                    Some((ready_at - now, cause, ready_at - started))
                }
            };
            match wait {
                None => break,
                Some((d, cause, total)) => {
                    if total >= LONG_WAIT && !std::mem::replace(&mut told, true) {
                        tracing::warn!(
                            source = self.source,
                            route,
                            wait_seconds = total.as_secs(),
                            "waiting for {cause} before the next request; the values served are those of the last poll until then"
                        );
                    }
                    tokio::time::sleep(d).await
                }
            }
        }
        self.metrics.budget_wait.with_label_values(&[self.source]).inc_by(started.elapsed().as_secs_f64());
    }

    /// The wait in progress, when it is a long one ([`LONG_WAIT`] or more, done or to
    /// come), as `/-/ready` tells it.
    pub fn long_wait(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let wait = state.waiting.as_ref()?;
        let now = Instant::now();
        (wait.until.saturating_duration_since(wait.since) >= LONG_WAIT).then(|| {
            format!(
                "waiting for {} ({} s so far, {} s to go): no request until then, the values served are those of the last poll",
                wait.cause,
                now.saturating_duration_since(wait.since).as_secs(),
                wait.until.saturating_duration_since(now).as_secs()
            )
        })
    }

    /// How long the wait in progress has lasted, zero when none is.
    fn waiting_for(&self) -> Duration {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting.as_ref().map_or(Duration::ZERO, |w| Instant::now().saturating_duration_since(w.since))
    }

    pub fn record(&self, outcome: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match outcome {
            Outcome::Success => {
                state.consecutive_failures = 0;
            }
            Outcome::Failure => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let backoff = self.backoff(state.consecutive_failures);
                if state.not_before.is_none_or(|nb| now + backoff > nb) {
                    state.not_before = Some(now + backoff);
                    state.not_before_cause = "backoff after failed requests";
                }
            }
            Outcome::RetryAfter(retry_after) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let wait = retry_after.unwrap_or_else(|| self.backoff(state.consecutive_failures).max(WINDOW));
                if state.not_before.is_none_or(|nb| now + wait > nb) {
                    state.not_before = Some(now + wait);
                    state.not_before_cause = "the platform's Retry-After";
                }
            }
        }
    }

    /// Exponential from one spacing, capped, with jitter over the upper half so that
    /// several exporters sharing a platform do not retry in lockstep. The cap is 64 spacings (6.4 minutes at Movidesk's 10/min), and never more than
    /// five minutes, so recovery is seen within minutes.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self.spacing.saturating_mul(1u32 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Requests sent in the budget's window (the last 61 seconds).
    pub fn used(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.sent.iter().filter(|t| now.duration_since(**t) < WINDOW + WINDOW_MARGIN).count()
    }

    /// Sets the used and remaining gauges as of now, so they fall back while idle.
    pub fn refresh_gauges(&self) {
        self.metrics.budget_waiting.with_label_values(&[self.source]).set(self.waiting_for().as_secs_f64());
        let used = self.used();
        self.metrics.budget_used.with_label_values(&[self.source]).set(used as f64);
        self.metrics
            .budget_remaining
            .with_label_values(&[self.source])
            .set(self.per_minute.saturating_sub(used as u32) as f64);
    }
}
