//! The source's health as `/-/ready` and the landing page tell it: written by the poller,
//! read by the HTTP edge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::time::{Duration, Instant};

/// What `/-/ready` and the landing page say while the first poll runs.
pub const STARTING: &str = "starting: first poll in progress";

/// Why the poll in progress waits long, if it does: asked whenever `/-/ready` or the
/// landing page is read, since a wait is told while it lasts, not once it is over.
pub type WaitProbe = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// How far the chat values served are behind the platform: the time since the moment up
/// to which every change is counted (the start of the poll whose values are served, or
/// the oldest change seen and held back for a later read, if older). Written by the
/// poller, read by `/-/ready` and `chat_exporter_source_lag_seconds`.
#[derive(Debug)]
pub struct Lag {
    /// The lag at an instant; it grows with time from there until set again.
    as_of: Mutex<(Instant, Duration)>,
    /// A lag above this is told: polls do not keep up with the changes.
    tolerance: Duration,
    poll_interval: Duration,
}

impl Lag {
    /// Counted through now, to start with. The tolerance is two poll intervals (the one
    /// between polls and one more) and the longest pacing wait that is not told.
    pub fn new(poll_interval: Duration, longest_quiet_wait: Duration) -> Self {
        Lag {
            as_of: Mutex::new((Instant::now(), Duration::ZERO)),
            tolerance: poll_interval.saturating_mul(2) + longest_quiet_wait,
            poll_interval,
        }
    }

    /// The values served now are `behind` the platform: every change up to that long ago
    /// is counted.
    pub fn set(&self, behind: Duration) {
        *self.as_of.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), behind);
    }

    /// The lag as of now.
    pub fn now(&self) -> Duration {
        let (at, behind) = *self.as_of.lock().unwrap_or_else(|e| e.into_inner());
        behind.saturating_add(Instant::now().saturating_duration_since(at))
    }

    /// Why the values are not current, when the lag is past the tolerance.
    pub fn behind(&self) -> Option<String> {
        let lag = self.now();
        (lag > self.tolerance).then(|| {
            format!(
                "behind the platform by {} s, more than the {} s that polling every {} s allows: changes are not \
                 counted as fast as they come (chat_exporter_source_lag_seconds)",
                lag.as_secs(),
                self.tolerance.as_secs(),
                self.poll_interval.as_secs()
            )
        })
    }
}

/// What the landing page and `/-/ready` say about the source.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    state: Mutex<HealthState>,
    waiting: Option<WaitProbe>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("ready", &self.ready).field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone)]
pub struct HealthState {
    pub source: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Why the last save of the state file failed, while it fails: the chat values
    /// served are frozen at the last save.
    pub state_error: Option<String>,
    /// Why the poll in progress has waited long, while it waits, or why the values lag
    /// behind the platform.
    pub waiting: Option<String>,
    pub polls: u64,
}

impl HealthState {
    /// Why the chat values served are not current, if they are not.
    pub fn not_ready_because(&self) -> Option<String> {
        match (&self.last_error, &self.state_error, self.last_success) {
            (Some(e), _, _) => Some(format!("{}: {e}", self.source)),
            (None, Some(e), _) => Some(e.clone()),
            (None, None, _) if self.waiting.is_some() => {
                Some(format!("{}: {}", self.source, self.waiting.as_deref().unwrap_or_default()))
            }
            (None, None, None) if self.polls == 0 => Some(format!("{}: {STARTING}", self.source)),
            (None, None, None) => Some(format!("{}: no successful poll yet", self.source)),
            (None, None, Some(_)) => None,
        }
    }
}

impl Health {
    pub fn new(source: &str) -> Self {
        Health {
            ready: AtomicBool::new(false),
            state: Mutex::new(HealthState { source: source.to_string(), ..Default::default() }),
            waiting: None,
        }
    }

    /// Asks `probe`, whenever health is read, whether the poll in progress waits long.
    pub fn watching(mut self, probe: WaitProbe) -> Self {
        self.waiting = Some(probe);
        self
    }
    /// Ready while the chat values served are current: the last poll succeeded and its
    /// values were saved (when there is a state file).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.waiting.as_ref().is_none_or(|probe| probe().is_none())
    }
    pub fn state(&self) -> HealthState {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        state.waiting = self.waiting.as_ref().and_then(|probe| probe());
        state
    }
    /// Records a poll (its error, if it failed) and, when it succeeded, whether its
    /// values were saved.
    pub(crate) fn record(&self, polled: Result<(), String>, saved: Option<Result<(), String>>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.polls += 1;
        match polled {
            Ok(()) => {
                s.last_success = Some(Utc::now());
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e),
        }
        // A failed poll saves nothing: the state file's last word stands.
        if let Some(saved) = saved {
            s.state_error = saved.err();
        }
        self.ready.store(s.not_ready_because().is_none(), Ordering::Relaxed);
    }
}
