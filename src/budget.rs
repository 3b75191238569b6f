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
    /// How many requests a minute each route gets, where the platform limits routes.
    per_route: Option<RouteBudget>,
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
    /// The route's limit as the platform last advertised it (`X-RateLimit-Limit`).
    advertised: Option<u32>,
}

/// The most requests a minute a platform's advertised limit can give a route: a larger
/// number is taken as this one, as the configured key is bounded.
pub const MAX_ROUTE_LIMIT: u32 = 1_000_000;

/// Requests a minute on each route. Until the platform advertises a route's limit, the
/// exporter counts its own calls against the platform's default; once it does, the
/// platform's window governs, through the calls it says are left and its reset (which may
/// not be a minute: Rocket.Chat's interval is a setting). A limit set explicitly is also
/// counted, so one below the platform's wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteBudget {
    /// What the platform allows a route by default, until it advertises its own limit.
    pub default: u32,
    /// As configured, when it is.
    pub explicit: Option<u32>,
}

impl RouteBudget {
    /// The calls a minute the exporter counts on a route against its own limit, if any.
    fn counted(&self, advertised: Option<u32>) -> Option<u32> {
        match (self.explicit, advertised) {
            (Some(e), _) => Some(e.max(1)),
            (None, Some(_)) => None,
            (None, None) => Some(self.default.max(1)),
        }
    }

    /// The calls a route is allowed, as `chat_exporter_api_route_budget_requests_per_minute`
    /// tells it: the lower of the explicit and the advertised limits.
    fn allowed(&self, advertised: Option<u32>) -> u32 {
        let advertised = advertised.map(|a| a.clamp(1, MAX_ROUTE_LIMIT));
        match (self.explicit, advertised) {
            (Some(e), Some(a)) => e.min(a),
            (Some(l), None) | (None, Some(l)) => l,
            (None, None) => self.default,
        }
    }
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

    /// Also a budget on each route, of `per_route` requests a minute.
    pub fn with_route_limit(mut self, per_route: RouteBudget) -> Self {
        self.per_route = Some(per_route);
        self
    }

    /// The platform says `route` allows `limit` requests in its window: the route's budget
    /// follows it (see [`RouteBudget`]). Told on every answer, so one odd answer is
    /// corrected by the next.
    pub fn advertise_route_limit(&self, route: &'static str, limit: u32) {
        if let Some(budget) = self.per_route {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.routes.entry(route).or_default().advertised = Some(limit);
            drop(state);
            self.metrics.route_budget.with_label_values(&[self.source, route]).set(budget.allowed(Some(limit)) as f64);
        }
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
                if let Some(budget) = self.per_route {
                    let r = state.routes.entry(route).or_default();
                    while r.sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW + WINDOW_MARGIN) {
                        r.sent.pop_front();
                    }
                    if let Some(limit) = budget.counted(r.advertised).filter(|l| r.sent.len() >= *l as usize) {
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
                    if let Some(budget) = self.per_route {
                        let r = state.routes.entry(route).or_default();
                        r.sent.push_back(now);
                        let allowed = budget.allowed(r.advertised);
                        self.metrics.route_budget.with_label_values(&[self.source, route]).set(allowed as f64);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget of its own for each route, under a global one too large to matter.
    fn budget(explicit: Option<u32>) -> (RequestBudget, SelfMetrics) {
        let metrics = SelfMetrics::new();
        let budget = RequestBudget::new("routes", 1_000_000, metrics.clone())
            .with_route_limit(RouteBudget { default: 10, explicit });
        (budget, metrics)
    }

    /// How long `n` more calls on `route` take to be allowed.
    async fn calls(budget: &RequestBudget, route: &'static str, n: usize) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            budget.acquire(route).await;
        }
        started.elapsed()
    }

    fn gauge(metrics: &SelfMetrics, route: &str) -> f64 {
        metrics.route_budget.with_label_values(&["routes", route]).get()
    }

    /// Until a route has told its limit, the platform's default holds: the eleventh call
    /// a minute waits for the window.
    #[tokio::test(start_paused = true)]
    async fn an_untold_route_keeps_to_the_platforms_default() {
        let (budget, metrics) = budget(None);
        assert!(calls(&budget, "rooms", 10).await < Duration::from_secs(1));
        assert!(calls(&budget, "rooms", 1).await >= Duration::from_secs(59), "the eleventh waits");
        assert_eq!(gauge(&metrics, "rooms"), 10.0);
    }

    /// A route whose server advertises 300 calls is no longer held to 10 by the exporter's
    /// own count: its window governs (the calls left, its reset), and the gauge tells it.
    /// Another route keeps its own default until it tells its own.
    #[tokio::test(start_paused = true)]
    async fn an_advertised_limit_is_the_routes_budget() {
        let (budget, metrics) = budget(None);
        budget.advertise_route_limit("transfer_history", 300);
        assert!(calls(&budget, "transfer_history", 100).await < Duration::from_secs(1));
        assert_eq!(gauge(&metrics, "transfer_history"), 300.0);
        calls(&budget, "rooms", 10).await;
        assert!(calls(&budget, "rooms", 1).await >= Duration::from_secs(59));
    }

    /// An explicit key below the server's limit wins; above it, the gauge tells the
    /// server's. An absurd advertised limit is bounded, and below 1 it is 1.
    #[tokio::test(start_paused = true)]
    async fn an_explicit_limit_below_the_servers_wins() {
        let (budget, metrics) = budget(Some(20));
        budget.advertise_route_limit("rooms", 300);
        assert!(calls(&budget, "rooms", 20).await < Duration::from_secs(1));
        assert!(calls(&budget, "rooms", 1).await >= Duration::from_secs(59), "the 21st waits");
        assert_eq!(gauge(&metrics, "rooms"), 20.0);
        budget.advertise_route_limit("rooms", 5);
        assert_eq!(gauge(&metrics, "rooms"), 5.0);
        let (unset, metrics) = self::budget(None);
        unset.advertise_route_limit("rooms", u32::MAX);
        assert_eq!(gauge(&metrics, "rooms"), f64::from(MAX_ROUTE_LIMIT));
        unset.advertise_route_limit("rooms", 0);
        assert_eq!(gauge(&metrics, "rooms"), 1.0);
    }
}
