//! `ThrottledWarn`: a warning logged at most once per [`WARN_INTERVAL`], for events a
//! client can cause in bulk. May import: std and tracing only (nothing else in this module).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning per kind and per this interval for events a client can cause in bulk.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A warning logged at most once per [`WARN_INTERVAL`]; the next one logged says how many
/// were not.
pub(crate) struct ThrottledWarn {
    what: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

impl ThrottledWarn {
    pub(crate) const fn new(what: &'static str) -> Self {
        ThrottledWarn { what, state: Mutex::new((None, 0)) }
    }

    pub(crate) fn hit(&self, detail: &dyn fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state.0.is_some_and(|last| now.duration_since(last) < WARN_INTERVAL) {
            state.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.1);
        state.0 = Some(now);
        drop(state);
        if suppressed == 0 {
            tracing::warn!(detail = %detail, "{}", self.what);
        } else {
            tracing::warn!(
                detail = %detail,
                suppressed,
                "{} ({suppressed} more since the last such warning, not logged)",
                self.what
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_warnings_count_what_they_do_not_log() {
        let warn = ThrottledWarn::new("test");
        for _ in 0..1000 {
            warn.hit(&"x");
        }
        let state = warn.state.lock().unwrap();
        assert!(state.0.is_some());
        assert_eq!(state.1, 999, "one logged, the rest counted for the next line");
    }
}
