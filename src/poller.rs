//! The poll loop: ask the source, feed the tracker, publish one exposition per poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::clock::{PlatformClock, Witnessed, CLOCK_JUMP, CLOCK_SETTLE};
use crate::exposition::{self, Exposition, SharedExposition};
use crate::health::{Health, Lag};
use crate::self_metrics::SelfMetrics;
use crate::source::{Reason, Source, SourceError};
use crate::state::{self, Resumed, StateError, StateFile, StateStore, STATE_VERSION};
use crate::tracker::Tracker;

/// A failing source is reminded in the log a minute after the first warning, then at
/// doubling intervals up to an hour: visible, never a flood.
const REMINDER_FIRST: Duration = Duration::from_secs(60);
const REMINDER_MAX: Duration = Duration::from_secs(3600);

pub struct Poller {
    source: Box<dyn Source>,
    tracker: Tracker,
    /// The platform's clock as followed: the tracker's marks move only with a time it
    /// believes.
    clock: PlatformClock,
    /// As configured, for the tracker resumed from the state file as for the first.
    series_retention: Option<Duration>,
    metrics: SelfMetrics,
    exposition: SharedExposition,
    health: Arc<Health>,
    /// How far the values served are behind the platform.
    lag: Arc<Lag>,
    poll_interval: Duration,
    /// The failure reason last logged at warn level; repeats are logged at debug, and
    /// reminded at warn level at a bounded rate.
    failing_with: Option<&'static str>,
    /// Records refused at the door have been logged since the last poll without one.
    refusal_logged: bool,
    /// Since when the source fails, and when the log next reminds of it.
    failing_since: Option<Instant>,
    next_reminder: Option<(Instant, Duration)>,
    store: Option<StateStore>,
    /// When the state file was last written, for the reason `/-/ready` gives while it
    /// cannot be.
    last_saved_at: Option<DateTime<Utc>>,
    save_failing: bool,
    /// The chat metrics as last published. When the state file cannot be written, the
    /// new values are not published: a restart would take them back, and Prometheus
    /// would read the drop as a counter reset.
    chats: Bytes,
    /// The chat text as published, shared with the refresher.
    published_chats: Arc<Mutex<Bytes>>,
    /// The tracker changed since the chat text was last encoded.
    chats_stale: bool,
}

impl Poller {
    pub fn new(source: Box<dyn Source>, metrics: SelfMetrics, poll_interval: Duration) -> Self {
        // A poll waiting long for its budget (a route's reset, a Retry-After) is told by
        // `/-/ready` while it waits, not only once it is over.
        let budget = source.budget();
        let lag = Arc::new(Lag::new(poll_interval, crate::budget::LONG_WAIT));
        let behind = lag.clone();
        // A long wait is why the values lag, when there is one.
        let health = Arc::new(
            Health::new(source.name()).watching(Box::new(move || budget.long_wait().or_else(|| behind.behind()))),
        );
        let mut tracker = Tracker::new();
        tracker.set_timings(source.timings());
        let mut exporter = Poller {
            source,
            tracker,
            clock: PlatformClock::new(),
            series_retention: None,
            metrics,
            exposition: SharedExposition::new(),
            health,
            lag,
            poll_interval,
            failing_with: None,
            refusal_logged: false,
            failing_since: None,
            next_reminder: None,
            store: None,
            last_saved_at: None,
            save_failing: false,
            chats: Bytes::new(),
            published_chats: Arc::new(Mutex::new(Bytes::new())),
            chats_stale: false,
        };
        exporter.refresh_chats();
        exporter.publish();
        exporter
    }

    /// How long a label set stays exported after it was last seen (`series_retention`).
    pub fn with_series_retention(mut self, retention: Duration) -> Self {
        self.series_retention = Some(retention);
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
                let resumed = state::resume(saved).and_then(|Resumed { tracker, source_state, saved_at }| {
                    self.source.restore_state(source_state)?;
                    Ok((tracker, saved_at))
                });
                match resumed {
                    Ok((mut tracker, saved_at)) => {
                        if let Some(retention) = self.series_retention {
                            tracker.set_series_retention(retention);
                        }
                        tracker.set_timings(self.source.timings());
                        // The monotonic clock does not span the restart: the time the
                        // exporter was stopped is allowed ahead, by the machine's clock.
                        self.clock =
                            PlatformClock::resumed(tracker.platform_now(), Utc::now() - saved_at, Instant::now());
                        self.tracker = tracker;
                        // The values served are those saved: changes since are not counted.
                        self.lag.set((Utc::now() - saved_at).to_std().unwrap_or_default());
                        self.last_saved_at = Some(saved_at);
                        self.metrics.state_last_save.set(saved_at.timestamp_millis() as f64 / 1000.0);
                        tracing::info!(path = %store.path().display(), saved_at = %saved_at, "resumed from the state file");
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

    /// Saves what changed since the last save; when it cannot be written, why, as
    /// `/-/ready` tells it.
    fn save_state(&mut self) -> Result<(), String> {
        let changes = self.tracker.take_changes();
        self.chats_stale |= !changes.is_empty();
        let Some(store) = &mut self.store else { return Ok(()) };
        let saved_at = Utc::now();
        let (source, tracker) = (&self.source, &self.tracker);
        let snapshot = || StateFile {
            version: STATE_VERSION,
            source: source.name().to_string(),
            account: source.account(),
            saved_at,
            source_state: source.save_state(),
            tracker: tracker.to_state(),
            changes: Vec::new(),
        };
        // Nothing written when nothing changed: the file is then current as it is.
        match store.save_changes(changes, self.source.save_state(), snapshot) {
            Ok(_) => {
                if self.save_failing {
                    tracing::info!(path = %store.path().display(), "the state file is written again; serving current chat values");
                }
                self.save_failing = false;
                self.last_saved_at = Some(saved_at);
                self.metrics.state_last_save.set(saved_at.timestamp_millis() as f64 / 1000.0);
                Ok(())
            }
            Err(e) => {
                self.metrics.state_save_failures.inc();
                if !self.save_failing {
                    tracing::error!(path = %store.path().display(), error = %e, "cannot write the state file; serving the last saved chat values until it can");
                    self.save_failing = true;
                }
                let since =
                    self.last_saved_at.map_or("none saved yet".to_string(), |t| format!("saved at {}", t.to_rfc3339()));
                Err(format!(
                    "state file {} cannot be written ({e}): chat values frozen at the last save ({since})",
                    store.path().display()
                ))
            }
        }
    }

    /// Counts the records refused at the door under `invalid_record`; the first is logged,
    /// the rest only counted until a poll without one.
    fn count_refusals(&mut self, refusals: &[String]) {
        if refusals.is_empty() {
            self.refusal_logged = false;
            return;
        }
        let (source, reason) = (self.source.name(), Reason::InvalidRecord.label());
        self.metrics.api_failures.with_label_values(&[source, reason]).inc_by(refusals.len() as u64);
        if !std::mem::replace(&mut self.refusal_logged, true) {
            tracing::warn!(source, reason, detail = %refusals[0], "skipping a record whose values cannot be counted; further ones are counted, not logged, until a clean poll");
        }
    }

    /// The platform time the tracker is given for a poll whose answers told `told`; a
    /// jump is counted and logged once, as is its end.
    fn witness_clock(&mut self, told: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let source = self.source.name();
        let witnessed = self.clock.witness(told, Instant::now());
        match witnessed {
            Witnessed::Jumped { told, expected, first: true } => {
                self.metrics.platform_clock_jumps.with_label_values(&[source]).inc();
                tracing::warn!(
                    source,
                    told = %told,
                    expected = %expected,
                    "the platform's clock jumped more than {} h from the time expected; not believed: counting goes on in the \
                     time expected until the clock comes back, or keeps to its new time for {} minutes",
                    CLOCK_JUMP.num_hours(),
                    CLOCK_SETTLE.as_secs() / 60
                );
            }
            Witnessed::Back(at) => tracing::info!(source, at = %at, "the platform's clock is back where expected"),
            Witnessed::Settled(at) => tracing::warn!(
                source,
                at = %at,
                "the platform's clock has kept to its new time for {} minutes; believed from now on",
                CLOCK_SETTLE.as_secs() / 60
            ),
            Witnessed::Untold | Witnessed::Believed(_) | Witnessed::Jumped { .. } => {}
        }
        witnessed.time()
    }

    fn refresh_chats(&mut self) {
        self.chats = Bytes::from(exposition::encode_chats(&self.tracker.exported_counters(), &self.tracker.gauges()));
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
        let requests_before = self.metrics.requests_sent(name);
        let result = match self.source.poll().await {
            Ok(mut obs) => {
                // Refused at the door: values no histogram or state file can hold.
                self.count_refusals(&obs.refuse_uncountable());
                obs.platform_time = self.witness_clock(obs.platform_time);
                self.tracker.apply(&obs);
                tracing::debug!(
                    source = name,
                    requests = self.metrics.requests_sent(name).saturating_sub(requests_before),
                    chats_changed = obs.chats.len(),
                    roster_read = obs.roster.is_some(),
                    open_chats = self.tracker.open_chats(),
                    seconds = started.elapsed().as_secs_f64(),
                    "polled"
                );
                Ok(())
            }
            Err(e) => Err(e),
        };
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
        let saved = result.is_ok().then(|| self.save_state());
        if saved == Some(Ok(())) && std::mem::take(&mut self.chats_stale) {
            self.refresh_chats();
        }
        if saved == Some(Ok(())) {
            // Counted through the poll's start, or the oldest change it held back.
            self.lag.set(started.elapsed().max(self.source.held_back().unwrap_or_default()));
        }
        self.health.record(result.as_ref().map_err(SourceError::to_string).copied(), saved);
        self.publish();
        crate::memory::release_freed();
        result
    }

    /// Encodes the current values; scrapes are served these bytes until the next poll.
    pub fn publish(&self) {
        self.metrics.open_chats_tracked.set(self.tracker.open_chats() as f64);
        self.source.budget().refresh_gauges();
        self.metrics.source_lag.with_label_values(&[self.source.name()]).set(self.lag.now().as_secs_f64());
        // One lock orders this with the refresher: an older chat text never replaces a
        // newer one (a counter going back would read as a reset).
        let mut published = self.published_chats.lock().unwrap_or_else(|e| e.into_inner());
        *published = self.chats.clone();
        self.exposition.set(Exposition::new(self.chats.clone(), &self.metrics));
    }

    /// Re-encodes the exporter's own metrics (process, HTTP) every `every`, with the chat
    /// metrics as last published, so they stay current while a poll waits out a long
    /// backoff or `Retry-After`. Runs until dropped.
    pub fn refresher(&self, every: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (chats, metrics, exposition) =
            (self.published_chats.clone(), self.metrics.clone(), self.exposition.clone());
        let (budget, lag, name) = (self.source.budget(), self.lag.clone(), self.source.name());
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                budget.refresh_gauges();
                metrics.source_lag.with_label_values(&[name]).set(lag.now().as_secs_f64());
                let published = chats.lock().unwrap_or_else(|e| e.into_inner());
                exposition.set(Exposition::new(published.clone(), &metrics));
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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::budget::RequestBudget;
    use crate::model::{AgentRef, ChatId, ChatLabels, ChatObservation, Observations, Phase, MAX_COUNTED_SECONDS};

    /// One answer of a [`ScriptedSource`].
    pub(crate) enum Scripted {
        Answer(Observations),
        /// An answer that leaves a change uncounted, that long ago.
        HoldingBack(Observations, Duration),
        Fail(SourceError),
        Panic,
    }

    /// A source that answers each poll from a script, then with empty observations.
    pub(crate) struct ScriptedSource {
        pub polls: VecDeque<Scripted>,
        pub budget: Arc<RequestBudget>,
        held_back: Option<Duration>,
    }

    impl ScriptedSource {
        pub fn new(polls: impl IntoIterator<Item = Scripted>, metrics: &SelfMetrics) -> Self {
            metrics.register_source("scripted", 60);
            let budget = Arc::new(RequestBudget::new("scripted", 60, metrics.clone()));
            ScriptedSource { polls: polls.into_iter().collect(), budget, held_back: None }
        }
    }

    #[async_trait::async_trait]
    impl Source for ScriptedSource {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn account(&self) -> String {
            "script".into()
        }
        fn timings(&self) -> crate::model::Timings {
            crate::model::Timings::BOTH
        }
        async fn poll(&mut self) -> Result<Observations, SourceError> {
            self.held_back = None;
            match self.polls.pop_front() {
                Some(Scripted::Answer(obs)) => Ok(obs),
                Some(Scripted::HoldingBack(obs, held)) => {
                    self.held_back = Some(held);
                    Ok(obs)
                }
                Some(Scripted::Fail(e)) => Err(e),
                Some(Scripted::Panic) => panic!("the scripted source panics"),
                None => Ok(Observations::default()),
            }
        }
        fn save_state(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn restore_state(&mut self, _: serde_json::Value) -> Result<(), crate::source::CursorError> {
            Ok(())
        }
        fn budget(&self) -> Arc<RequestBudget> {
            self.budget.clone()
        }
        fn held_back(&self) -> Option<Duration> {
            self.held_back
        }
    }

    fn answered(id: &str, wait: f64, talk: f64) -> ChatObservation {
        ChatObservation {
            id: ChatId(id.into()),
            labels: ChatLabels { app: "A".into(), group: "G".into(), origin: "chat".into() },
            agent: Some(AgentRef { id: "1".into(), name: "Ana".into() }),
            phase: Phase::Finished { first_contact: None },
            answered: true,
            answered_as: None,
            waiting_since: None,
            wait_seconds: Some(wait),
            talk_seconds: Some(talk),
            last_update: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        }
    }

    /// Negative, NaN, infinite and absurd waits or durations never reach a histogram: each
    /// such record is counted under `invalid_record` and ignored, the others count, and
    /// the state file saved after the poll is read back as it was written.
    #[tokio::test]
    async fn waits_and_durations_out_of_bounds_are_refused_at_the_door() {
        let dir = tempfile::tempdir().unwrap();
        let store = || StateStore::new(dir.path().join("state.json"));
        let bad = [1e308, 1e308, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, MAX_COUNTED_SECONDS + 1.0];
        let mut chats: Vec<ChatObservation> =
            bad.iter().enumerate().map(|(i, w)| answered(&format!("wait{i}"), *w, 60.0)).collect();
        chats.extend(bad.iter().enumerate().map(|(i, t)| answered(&format!("talk{i}"), 30.0, *t)));
        chats.push(answered("good", 45.0, MAX_COUNTED_SECONDS));
        let metrics = SelfMetrics::new();
        let source = ScriptedSource::new([Scripted::Answer(Observations::from_chats(chats))], &metrics);
        let (mut poller, warning) =
            Poller::new(Box::new(source), metrics.clone(), Duration::from_secs(1)).with_state(store()).unwrap();
        assert!(warning.is_none());
        poller.poll_once().await.unwrap();

        let invalid = metrics.api_failures.with_label_values(&["scripted", "invalid_record"]).get();
        assert_eq!(invalid, 2 * bad.len() as u64, "each refused record counted once");
        let counters = poller.tracker.counters();
        let wait: Vec<(u64, f64)> = counters.wait.values().map(|h| (h.count, h.sum)).collect();
        let duration: Vec<(u64, f64)> = counters.duration.values().map(|h| (h.count, h.sum)).collect();
        assert_eq!((wait, duration), (vec![(1, 45.0)], vec![(1, MAX_COUNTED_SECONDS)]), "only the good record");
        assert_eq!(counters.answered.values().sum::<u64>(), 1);
        assert!(poller.health().is_ready());
        // The next start resumes from the file instead of setting it aside.
        let saved = store().load("scripted", "script").unwrap().expect("saved");
        assert_eq!(saved.tracker, poller.tracker.to_state());
    }

    /// While the state file cannot be written, `/-/ready` says so (and why), the chat
    /// values stay those last saved, and a failure metric moves; all recover once it can.
    #[tokio::test]
    async fn a_state_file_that_cannot_be_written_shows_in_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let polls = (0..3).map(|i| Scripted::Answer(Observations::from_chats([answered(&i.to_string(), 10.0, 20.0)])));
        let metrics = SelfMetrics::new();
        let source = ScriptedSource::new(polls, &metrics);
        let (mut poller, _) = Poller::new(Box::new(source), metrics.clone(), Duration::from_secs(1))
            .with_state(StateStore::new(&path))
            .unwrap();
        poller.poll_once().await.unwrap();
        assert!(poller.health().is_ready());
        let saved_at = metrics.state_last_save.get();
        assert!(saved_at > 0.0);
        // A directory where the file should be: the rename over it fails.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        poller.poll_once().await.unwrap();
        let health = poller.health();
        assert!(!health.is_ready());
        let why = health.state().not_ready_because().unwrap();
        assert!(why.contains("cannot be written") && why.contains("state.json"), "{why}");
        assert_eq!(metrics.state_save_failures.get(), 1);
        assert_eq!(metrics.state_last_save.get(), saved_at, "no save since");
        std::fs::remove_dir(&path).unwrap();
        poller.poll_once().await.unwrap();
        assert!(poller.health().is_ready());
        assert_eq!(poller.health().state().not_ready_because(), None);
        assert!(metrics.state_last_save.get() >= saved_at);
    }

    /// The values served lag behind the platform by the time since the last poll whose
    /// values are served, or since the oldest change it held back: past two poll
    /// intervals and 90 s, `/-/ready` says so and why, and the gauge shows the lag. A poll
    /// that catches up makes it current again; a failed poll does not.
    #[tokio::test(start_paused = true)]
    async fn values_behind_the_platform_show_in_readiness_and_the_lag() {
        let every = Duration::from_secs(15);
        let script = [
            Scripted::Answer(Observations::default()),
            Scripted::HoldingBack(Observations::default(), Duration::from_secs(300)),
            Scripted::Answer(Observations::default()),
            Scripted::Fail(SourceError::Timeout { endpoint: "/chats" }),
            Scripted::Answer(Observations::default()),
        ];
        let metrics = SelfMetrics::new();
        let mut poller = Poller::new(Box::new(ScriptedSource::new(script, &metrics)), metrics.clone(), every);
        let lag = || metrics.source_lag.with_label_values(&["scripted"]).get();
        poller.poll_once().await.unwrap();
        assert!(poller.health().is_ready());
        assert_eq!(lag(), 0.0);

        poller.poll_once().await.unwrap();
        assert!(!poller.health().is_ready(), "a change held back 300 s, past 120 s");
        let why = poller.health().state().not_ready_because().unwrap();
        assert!(
            why.contains("behind the platform by 300 s, more than the 120 s that polling every 15 s allows"),
            "{why}"
        );
        assert_eq!(lag(), 300.0);

        poller.poll_once().await.unwrap();
        assert!(poller.health().is_ready(), "caught up");
        // No poll for two minutes and more: the values served are that old.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(!poller.health().is_ready());
        poller.publish();
        assert_eq!(lag(), 121.0);
        // A failed poll counts nothing: the lag goes on from the last success.
        poller.poll_once().await.unwrap_err();
        assert_eq!(lag(), 121.0);
        poller.poll_once().await.unwrap();
        assert!(poller.health().is_ready());
        assert_eq!(lag(), 0.0);
    }

    /// Log lines written on this thread while the guard lives, as text (no colours, no
    /// timestamps). A `#[tokio::test]` runs on one thread, so it sees every line.
    #[derive(Clone, Default)]
    pub(crate) struct CapturedLog(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for CapturedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl CapturedLog {
        fn start(level: tracing::Level) -> (CapturedLog, tracing::subscriber::DefaultGuard) {
            Self::filtered(tracing_subscriber::EnvFilter::new(level.as_str()))
        }

        /// Captures what `filter` lets through (as the binary's `--log.level` does).
        pub(crate) fn filtered(
            filter: tracing_subscriber::EnvFilter,
        ) -> (CapturedLog, tracing::subscriber::DefaultGuard) {
            let log = CapturedLog::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .without_time()
                .with_env_filter(filter)
                .finish();
            (log, tracing::subscriber::set_default(subscriber))
        }

        /// The lines so far, emptying the capture.
        pub(crate) fn take(&self) -> Vec<String> {
            let bytes = std::mem::take(&mut *self.0.lock().unwrap());
            String::from_utf8(bytes).unwrap().lines().map(str::to_string).collect()
        }
    }

    /// A source failing for two hours is told once at warn level, then reminded a minute
    /// later and at doubling intervals up to an hour: 7 warnings for 480 failed polls, each
    /// reminder naming how long it has failed. Its recovery is one info line; a new reason
    /// is told at once.
    #[tokio::test(start_paused = true)]
    async fn a_failing_source_is_reminded_at_a_bounded_rate() {
        let outage = || Scripted::Fail(SourceError::Server { endpoint: "/chats", status: 503 });
        let mut script = vec![Scripted::Answer(Observations::default())];
        script.extend((0..480).map(|_| outage()));
        script.push(Scripted::Answer(Observations::default()));
        script.push(Scripted::Fail(SourceError::Timeout { endpoint: "/chats" }));
        let metrics = SelfMetrics::new();
        let every = Duration::from_secs(15);
        let mut poller = Poller::new(Box::new(ScriptedSource::new(script, &metrics)), metrics, every);
        let (log, _guard) = CapturedLog::start(tracing::Level::INFO);

        poller.poll_once().await.unwrap();
        assert!(log.take().iter().any(|l| l.contains("INFO") && l.contains("first poll succeeded")));

        // Poll n fails at second 15 * n of the outage.
        let mut warned_at = Vec::new();
        for n in 0..480u64 {
            poller.poll_once().await.unwrap_err();
            for line in log.take() {
                assert!(line.contains("WARN"), "only warnings while failing: {line}");
                assert!(line.contains("serving the last good values"), "{line}");
                if n == 0 {
                    assert!(line.contains("poll failed") && line.contains("server_error"), "{line}");
                } else {
                    assert!(line.contains("the source still fails"), "{line}");
                    assert!(line.contains(&format!("failing_for_seconds={}", 15 * n)), "{line}");
                }
                warned_at.push(15 * n);
            }
            tokio::time::advance(every).await;
        }
        assert_eq!(warned_at, [0, 60, 180, 420, 900, 1860, 3780], "a minute, then doubling up to an hour");

        poller.poll_once().await.unwrap();
        let recovered = log.take();
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert!(recovered[0].contains("INFO") && recovered[0].contains("source recovered"), "{recovered:?}");
        assert!(recovered[0].contains(&format!("failed_for_seconds={}", 480 * 15)), "{recovered:?}");

        poller.poll_once().await.unwrap_err();
        let told = log.take();
        assert!(told.len() == 1 && told[0].contains("poll failed") && told[0].contains("timeout"), "{told:?}");
    }
}
