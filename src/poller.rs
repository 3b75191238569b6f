//! The poll loop: ask the source, feed the tracker, publish one exposition per poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::exposition::{self, Exposition, SharedExposition};
use crate::self_metrics::SelfMetrics;
use crate::source::{Source, SourceError};
use crate::state::{StateError, StateFile, StateStore, STATE_VERSION};
use crate::tracker::Tracker;

/// A failing source is reminded in the log a minute after the first warning, then at
/// doubling intervals up to an hour: visible, never a flood.
const REMINDER_FIRST: Duration = Duration::from_secs(60);
const REMINDER_MAX: Duration = Duration::from_secs(3600);

/// What `/-/ready` and the landing page say while the first poll runs.
pub const STARTING: &str = "starting: first poll in progress";

/// What the landing page and `/-/ready` say about the source.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default, Clone)]
pub struct HealthState {
    pub source: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub polls: u64,
}

impl Health {
    pub fn new(source: &str) -> Self {
        Health {
            ready: AtomicBool::new(false),
            state: Mutex::new(HealthState { source: source.to_string(), ..Default::default() }),
        }
    }
    /// Ready once the last poll succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn state(&self) -> HealthState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn record(&self, result: &Result<(), SourceError>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.polls += 1;
        match result {
            Ok(()) => {
                s.last_success = Some(Utc::now());
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
        self.ready.store(result.is_ok(), Ordering::Relaxed);
    }
}

pub struct Poller {
    source: Box<dyn Source>,
    tracker: Tracker,
    metrics: SelfMetrics,
    exposition: SharedExposition,
    health: Arc<Health>,
    poll_interval: Duration,
    /// The failure reason last logged at warn level; repeats are logged at debug, and
    /// reminded at warn level at a bounded rate.
    failing_with: Option<&'static str>,
    /// Since when the source fails, and when the log next reminds of it.
    failing_since: Option<Instant>,
    next_reminder: Option<(Instant, Duration)>,
    store: Option<StateStore>,
    save_failing: bool,
    /// The chat metrics as last published. When the state file cannot be written, the
    /// new values are not published: a restart would take them back, and Prometheus
    /// would read the drop as a counter reset.
    chats: Arc<String>,
    /// The chat text as published, shared with the refresher.
    published_chats: Arc<Mutex<Arc<String>>>,
}

impl Poller {
    pub fn new(source: Box<dyn Source>, metrics: SelfMetrics, poll_interval: Duration) -> Self {
        let health = Arc::new(Health::new(source.name()));
        let mut exporter = Poller {
            source,
            tracker: Tracker::new(),
            metrics,
            exposition: SharedExposition::new(),
            health,
            poll_interval,
            failing_with: None,
            failing_since: None,
            next_reminder: None,
            store: None,
            save_failing: false,
            chats: Arc::new(String::new()),
            published_chats: Arc::new(Mutex::new(Arc::new(String::new()))),
        };
        exporter.refresh_chats();
        exporter.publish();
        exporter
    }

    /// How long a label set stays exported after it was last seen (`series_retention`).
    pub fn with_series_retention(mut self, retention: Duration) -> Self {
        self.tracker.set_series_retention(retention);
        self
    }

    /// Resumes from the state file if there is one, and saves to it after each poll.
    /// A state file that cannot be used is set aside (renamed, never overwritten) and the
    /// exporter starts fresh: `Ok(Some(message))` says so, for the caller to report. A
    /// file that cannot be read or set aside is an error: starting fresh would overwrite it.
    pub fn with_state(mut self, store: StateStore) -> Result<(Self, Option<String>), StateError> {
        let mut warning = None;
        match store.load(self.source.name(), &self.source.account()) {
            Ok(None) => {}
            Ok(Some(saved)) => {
                let restored = Tracker::from_state(saved.tracker)
                    .and_then(|t| self.source.restore_state(saved.source_state).map(|()| t));
                match restored {
                    Ok(mut tracker) => {
                        tracker.series_retention = self.tracker.series_retention;
                        self.tracker = tracker;
                        tracing::info!(path = %store.path().display(), saved_at = %saved.saved_at, "resumed from the state file");
                    }
                    Err(detail) => {
                        let aside = store.set_aside("corrupt")?;
                        warning = Some(format!(
                            "state file {} is inconsistent ({detail}); set aside as {}; starting fresh",
                            store.path().display(),
                            aside.display()
                        ));
                    }
                }
            }
            Err(e @ (StateError::Corrupt { .. } | StateError::Incompatible { .. })) => {
                warning = Some(format!("{e}; starting fresh"));
            }
            Err(e) => return Err(e),
        }
        self.store = Some(store);
        self.refresh_chats();
        self.publish();
        Ok((self, warning))
    }

    /// Saves the state; `false` when it could not be written.
    fn save_state(&mut self) -> bool {
        let Some(store) = &self.store else { return true };
        let state = StateFile {
            version: STATE_VERSION,
            source: self.source.name().to_string(),
            account: self.source.account(),
            saved_at: Utc::now(),
            source_state: self.source.save_state(),
            tracker: self.tracker.to_state(),
        };
        match store.save(&state) {
            Ok(()) => {
                self.save_failing = false;
                true
            }
            Err(e) => {
                self.metrics.state_save_failures.inc();
                if !self.save_failing {
                    tracing::error!(path = %store.path().display(), error = %e, "cannot write the state file; serving the last saved chat values until it can");
                    self.save_failing = true;
                }
                false
            }
        }
    }

    fn refresh_chats(&mut self) {
        self.chats = Arc::new(exposition::encode_chats(&self.tracker.exported_counters(), &self.tracker.gauges()));
    }

    pub fn exposition(&self) -> SharedExposition {
        self.exposition.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// One poll, then a fresh exposition whatever its outcome.
    pub async fn poll_once(&mut self) -> Result<(), SourceError> {
        let name = self.source.name();
        let started = Instant::now();
        let result = self.source.poll().await.map(|obs| self.tracker.apply(&obs));
        self.metrics.poll_duration.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                self.metrics.source_up.with_label_values(&[name]).set(1.0);
                self.metrics.last_success.with_label_values(&[name]).set(Utc::now().timestamp_millis() as f64 / 1000.0);
                if self.health.state().last_success.is_none() {
                    tracing::info!(
                        source = name,
                        open_chats = self.tracker.open_chats(),
                        agents = self.tracker.roster_len(),
                        requests_used = self.source.budget().used(),
                        "first poll succeeded; serving the chat metrics"
                    );
                }
                if self.failing_with.take().is_some() {
                    let failed_for = self.failing_since.map(|t| t.elapsed().as_secs()).unwrap_or_default();
                    tracing::info!(
                        source = name,
                        failed_for_seconds = failed_for,
                        "source recovered; values are current again"
                    );
                }
                self.failing_since = None;
                self.next_reminder = None;
            }
            Err(e) => {
                self.metrics.source_up.with_label_values(&[name]).set(0.0);
                let serving = if self.health.state().last_success.is_some() {
                    "serving the last good values"
                } else {
                    "no poll has succeeded yet, so there are no chat values to serve"
                };
                let now = Instant::now();
                let since = *self.failing_since.get_or_insert(now);
                if self.failing_with != Some(e.reason()) {
                    tracing::warn!(source = name, reason = e.reason(), error = %e, "poll failed; {serving}");
                    self.failing_with = Some(e.reason());
                    self.next_reminder = Some((now + REMINDER_FIRST, REMINDER_FIRST));
                } else if let Some((at, every)) = self.next_reminder.filter(|(at, _)| now >= *at) {
                    let _ = at;
                    tracing::warn!(
                        source = name,
                        reason = e.reason(),
                        error = %e,
                        failing_for_seconds = now.duration_since(since).as_secs(),
                        "the source still fails; {serving}"
                    );
                    let every = (every * 2).min(REMINDER_MAX);
                    self.next_reminder = Some((now + every, every));
                } else {
                    tracing::debug!(source = name, reason = e.reason(), error = %e, "poll failed again");
                }
            }
        }
        // Saved before it is served: no counter value reaches Prometheus that a restart
        // would take back.
        if result.is_ok() && self.save_state() {
            self.refresh_chats();
        }
        self.health.record(&result);
        self.publish();
        result
    }

    /// Encodes the current values; scrapes are served these bytes until the next poll.
    pub fn publish(&self) {
        self.metrics.open_chats_tracked.set(self.tracker.open_chats() as f64);
        self.source.budget().refresh_gauges();
        // One lock orders this with the refresher: an older chat text never replaces a
        // newer one (a counter going back would read as a reset).
        let mut published = self.published_chats.lock().unwrap_or_else(|e| e.into_inner());
        *published = self.chats.clone();
        self.exposition.set(Exposition::new(exposition::encode(&self.chats, &self.metrics)));
    }

    /// Re-encodes the exporter's own metrics (process, HTTP) every `every`, with the chat
    /// metrics as last published, so they stay current while a poll waits out a long
    /// backoff or `Retry-After`. Runs until dropped.
    pub fn refresher(&self, every: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (chats, metrics, exposition) =
            (self.published_chats.clone(), self.metrics.clone(), self.exposition.clone());
        let budget = self.source.budget();
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                budget.refresh_gauges();
                let published = chats.lock().unwrap_or_else(|e| e.into_inner());
                exposition.set(Exposition::new(exposition::encode(&published, &metrics)));
            }
        }
    }

    /// Polls every `poll_interval` until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = Instant::now() + self.poll_interval;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.poll_once() => {}
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        tracing::info!("poller stopped");
    }
}
