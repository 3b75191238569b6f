//! The platform's clock as a witness, not an authority.
//! Imports nothing of the crate.
//!
//! The tracker keeps marks in the platform's clock (the `Date` of its answers): where
//! closed conversations were forgotten, when each label set was last seen. One answer
//! dated 400 days ahead would move them for good: every new chat would read as history,
//! every zero series would go at once. So the exporter follows the platform's clock with
//! the machine's: from the last time it believed, the expected platform time advances as
//! the machine's monotonic clock does. An answer dated more than [`CLOCK_JUMP`] from
//! that is not believed: the poll is used, and the tracker is given the expected time
//! instead. A platform whose clock was really set anew keeps to its new time; once it has
//! done so for [`CLOCK_SETTLE`] of the machine's time, it is believed from then on.
//!
//! The machine's clock witnesses elapsed time only, never the platform's time of day:
//! the two may rightly differ (a simulator, a platform in a lab, a machine without NTP),
//! and what matters for the marks is that the platform's clock moves as time passes.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// How far a platform's `Date` may be from the time expected and still be believed:
/// wide enough for a clock stepped by NTP, a `Date` from a lagging proxy, or a simulator
/// run faster than real time between two polls; far below the seven days after which
/// closed conversations and idle series are forgotten.
pub const CLOCK_JUMP: TimeDelta = TimeDelta::hours(6);

/// How long a platform's clock must keep to a new time before it is believed.
pub const CLOCK_SETTLE: Duration = Duration::from_secs(15 * 60);

/// What the witness made of one answer's `Date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witnessed {
    /// The platform did not tell its time.
    Untold,
    /// The time told is believed.
    Believed(DateTime<Utc>),
    /// The time told is believed again, after answers that jumped.
    Back(DateTime<Utc>),
    /// The time told jumped: `expected` is used instead. `first` is the first answer of
    /// the jump (to count and log it once).
    Jumped { told: DateTime<Utc>, expected: DateTime<Utc>, first: bool },
    /// A new time the platform has kept to for [`CLOCK_SETTLE`]: believed from now on.
    Settled(DateTime<Utc>),
}

impl Witnessed {
    /// The platform time to go on with, if any.
    pub fn time(self) -> Option<DateTime<Utc>> {
        match self {
            Witnessed::Untold => None,
            Witnessed::Believed(t) | Witnessed::Back(t) | Witnessed::Settled(t) => Some(t),
            Witnessed::Jumped { expected, .. } => Some(expected),
        }
    }
}

/// The platform's clock as the exporter follows it.
#[derive(Debug, Default)]
pub struct PlatformClock {
    believed: Option<Believed>,
    /// A time the platform told that was not believed, and how long it has kept to it.
    contender: Option<Contender>,
}

#[derive(Debug, Clone, Copy)]
struct Believed {
    at: DateTime<Utc>,
    read: Instant,
    /// How much further ahead the next answer may be: the machine's time the exporter
    /// was stopped, after a restart (the monotonic clock does not span one).
    slack: TimeDelta,
}

#[derive(Debug, Clone, Copy)]
struct Contender {
    at: DateTime<Utc>,
    read: Instant,
    since: Instant,
}

impl PlatformClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock resumed after a restart: the platform's time last known (as saved), and
    /// how long ago, by the machine's clock, the state holding it was saved.
    pub fn resumed(last_known: Option<DateTime<Utc>>, saved_ago: TimeDelta, now: Instant) -> Self {
        let believed = last_known.map(|at| Believed { at, read: now, slack: saved_ago.max(TimeDelta::zero()) });
        PlatformClock { believed, contender: None }
    }

    /// The platform's time expected at `now`, from the last time believed.
    fn expected(believed: &Believed, now: Instant) -> DateTime<Utc> {
        believed.at + elapsed(believed.read, now)
    }

    /// Judges the time an answer told (`None`: it told none), read at `now`.
    pub fn witness(&mut self, told: Option<DateTime<Utc>>, now: Instant) -> Witnessed {
        let Some(told) = told else { return Witnessed::Untold };
        let Some(believed) = self.believed else {
            return self.believe(told, now, Witnessed::Believed(told));
        };
        let expected = Self::expected(&believed, now);
        if told >= expected - CLOCK_JUMP && told <= expected + believed.slack + CLOCK_JUMP {
            return self.believe(told, now, Witnessed::Believed(told));
        }
        let first = self.contender.is_none();
        let keeps_to_it = self.contender.is_some_and(|c| (told - (c.at + elapsed(c.read, now))).abs() <= CLOCK_JUMP);
        let since = match self.contender {
            Some(c) if keeps_to_it => c.since,
            _ => now,
        };
        if now.saturating_duration_since(since) >= CLOCK_SETTLE {
            return self.believe(told, now, Witnessed::Settled(told));
        }
        self.contender = Some(Contender { at: told, read: now, since });
        Witnessed::Jumped { told, expected, first }
    }

    fn believe(&mut self, at: DateTime<Utc>, now: Instant, what: Witnessed) -> Witnessed {
        self.believed = Some(Believed { at, read: now, slack: TimeDelta::zero() });
        match (self.contender.take(), what) {
            (Some(_), Witnessed::Believed(t)) => Witnessed::Back(t),
            _ => what,
        }
    }
}

fn elapsed(from: Instant, to: Instant) -> TimeDelta {
    TimeDelta::from_std(to.saturating_duration_since(from)).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z").unwrap().with_timezone(&Utc) + TimeDelta::minutes(minute)
    }

    fn days(n: i64) -> TimeDelta {
        TimeDelta::days(n)
    }

    #[test]
    fn the_first_time_told_is_believed_and_then_followed_as_time_passes() {
        let start = Instant::now();
        let mut clock = PlatformClock::new();
        assert_eq!(clock.witness(None, start), Witnessed::Untold);
        assert_eq!(clock.witness(Some(at(0)), start), Witnessed::Believed(at(0)));
        // A simulator run faster than the machine, an hour between two polls: believed.
        assert_eq!(clock.witness(Some(at(60)), start), Witnessed::Believed(at(60)));
        // An NTP step back by an hour: believed.
        assert_eq!(clock.witness(Some(at(0)), start), Witnessed::Believed(at(0)));
    }

    #[test]
    fn a_jump_for_one_answer_is_not_believed_and_counted_once() {
        let start = Instant::now();
        let mut clock = PlatformClock::new();
        clock.witness(Some(at(0)), start);
        for (n, jump) in [days(400), days(10), -days(400)].into_iter().enumerate() {
            let now = start + Duration::from_secs(60 * (2 * n as u64 + 1));
            let expected = at(2 * n as i64 + 1);
            assert_eq!(
                clock.witness(Some(expected + jump), now),
                Witnessed::Jumped { told: expected + jump, expected, first: true },
                "{jump}"
            );
            let later = now + Duration::from_secs(60);
            assert_eq!(clock.witness(Some(at(2 * n as i64 + 2)), later), Witnessed::Back(at(2 * n as i64 + 2)));
        }
    }

    #[test]
    fn a_clock_that_keeps_to_its_new_time_is_believed_after_the_settling_time() {
        let start = Instant::now();
        let mut clock = PlatformClock::new();
        clock.witness(Some(at(0)), start);
        let new = at(0) + days(2);
        let mut first = true;
        let mut minute = 0;
        loop {
            minute += 1;
            let now = start + Duration::from_secs(60 * minute);
            let told = new + TimeDelta::minutes(minute as i64);
            match clock.witness(Some(told), now) {
                Witnessed::Jumped { expected, first: f, .. } => {
                    assert_eq!((expected, f), (at(minute as i64), first), "minute {minute}");
                    first = false;
                }
                Witnessed::Settled(t) => {
                    assert_eq!(t, told);
                    break;
                }
                other => panic!("minute {minute}: {other:?}"),
            }
        }
        // The first jumped answer counts from minute 1: settled 15 minutes later.
        assert_eq!(Duration::from_secs(60 * (minute - 1)), CLOCK_SETTLE);
        let now = start + Duration::from_secs(60 * (minute + 1));
        let told = new + TimeDelta::minutes(minute as i64 + 1);
        assert_eq!(clock.witness(Some(told), now), Witnessed::Believed(told), "then followed");
    }

    #[test]
    fn a_clock_that_wanders_never_settles() {
        let start = Instant::now();
        let mut clock = PlatformClock::new();
        clock.witness(Some(at(0)), start);
        for minute in 1..=60u64 {
            let now = start + Duration::from_secs(60 * minute);
            let told = at(0) + days(if minute % 2 == 0 { 10 } else { 400 });
            assert!(matches!(clock.witness(Some(told), now), Witnessed::Jumped { .. }), "minute {minute}");
        }
    }

    #[test]
    fn after_a_restart_the_time_stopped_is_allowed_ahead_but_a_jump_is_not() {
        let now = Instant::now();
        let resumed = || PlatformClock::resumed(Some(at(0)), days(3), now);
        assert_eq!(resumed().witness(Some(at(0) + days(3)), now), Witnessed::Believed(at(0) + days(3)));
        assert!(
            matches!(resumed().witness(Some(at(0) + days(10)), now), Witnessed::Jumped { expected, .. } if expected == at(0))
        );
        assert!(matches!(resumed().witness(Some(at(0) - days(1)), now), Witnessed::Jumped { .. }));
        // The state was saved before the platform's last known time (a clock set back):
        // no slack backwards.
        let mut back = PlatformClock::resumed(Some(at(0)), -days(3), now);
        assert!(matches!(back.witness(Some(at(0) + days(1)), now), Witnessed::Jumped { .. }));
        // Nothing saved: the first time told is believed.
        assert_eq!(PlatformClock::resumed(None, days(3), now).witness(Some(at(5)), now), Witnessed::Believed(at(5)));
    }
}
