//! The poll loop: ask the source, feed the tracker, publish one exposition per poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::exposition::{self, Exposition, SharedExposition};
use crate::self_metrics::SelfMetrics;
use crate::sources::{Source, SourceError};
use crate::tracker::Tracker;

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

pub struct Exporter<S: Source> {
    source: S,
    tracker: Tracker,
    metrics: SelfMetrics,
    exposition: SharedExposition,
    health: Arc<Health>,
    poll_interval: Duration,
    /// The failure reason last logged at warn level; repeats are logged at debug.
    failing_with: Option<&'static str>,
}

impl<S: Source> Exporter<S> {
    pub fn new(source: S, metrics: SelfMetrics, poll_interval: Duration) -> Self {
        let health = Arc::new(Health::new(source.name()));
        let exporter = Exporter {
            source,
            tracker: Tracker::new(),
            metrics,
            exposition: SharedExposition::new(),
            health,
            poll_interval,
            failing_with: None,
        };
        exporter.publish();
        exporter
    }

    pub fn exposition(&self) -> SharedExposition {
        self.exposition.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn source(&self) -> &S {
        &self.source
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
                self.metrics
                    .last_success
                    .with_label_values(&[name])
                    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
                if self.failing_with.take().is_some() {
                    tracing::info!(source = name, "source recovered");
                }
            }
            Err(e) => {
                self.metrics.source_up.with_label_values(&[name]).set(0.0);
                if self.failing_with != Some(e.reason()) {
                    tracing::warn!(source = name, reason = e.reason(), error = %e, "poll failed; serving the last good values");
                    self.failing_with = Some(e.reason());
                } else {
                    tracing::debug!(source = name, reason = e.reason(), error = %e, "poll failed again");
                }
            }
        }
        self.health.record(&result);
        self.publish();
        result
    }

    /// Encodes the current values; scrapes are served these bytes until the next poll.
    pub fn publish(&self) {
        self.metrics.open_chats_tracked.set(self.tracker.open_chats() as f64);
        let text = exposition::encode(self.tracker.counters(), &self.tracker.gauges(), &self.metrics);
        self.exposition.set(Exposition::new(text));
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
