//! What a platform's source is to the rest of the exporter: it polls its platform and
//! yields observations in the neutral model. Only what the platforms' sources share is
//! here; may import `budget`, `config`, `model` and `self_metrics`, never a platform.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::budget::RequestBudget;
use crate::model::{Observations, Timings};

pub mod client;
pub mod error;

pub use error::{CursorError, Reason, SourceError};

/// One chat platform, polled in the background.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Value of the `source` label on the exporter's own metrics.
    fn name(&self) -> &'static str;
    /// Which account of the platform this is (no secret): a state file saved for one
    /// account is never restored for another.
    fn account(&self) -> String;
    /// Which times of a chat its records carry: the histograms exported from the start.
    fn timings(&self) -> Timings;
    /// Asks the platform what changed since the last successful poll.
    async fn poll(&mut self) -> Result<Observations, SourceError>;
    /// Where the source stands (its cursor), for the state file.
    fn save_state(&self) -> serde_json::Value;
    /// Resumes from a saved position.
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), CursorError>;
    /// The request budget every call to the platform goes through.
    fn budget(&self) -> Arc<RequestBudget>;
    /// How long ago the oldest change the last poll saw but left uncounted happened, by
    /// the platform's clock (a Rocket.Chat room whose transfer history waits for a later
    /// read): the values are that far behind the platform. `None` when nothing is held
    /// back.
    fn held_back(&self) -> Option<std::time::Duration> {
        None
    }
}

/// How far past the platform's own clock (the `Date` of its answer) a record may be
/// stamped and still be believed. It covers a `Date` written by a proxy or a front server
/// whose clock lags the one stamping records, by up to a day; a record stamped later is
/// from the future (a ticket with `lastUpdate` in 2099): it is skipped and counted under
/// `invalid_record`, and no cursor or start moves past this bound.
pub const FUTURE_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::hours(36);

/// The latest time a record may claim, by the platform's clock at `platform_now`; `None`
/// when the platform sent no `Date` (then nothing is from the future).
pub fn latest_believable(platform_now: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    platform_now.map(|now| now + FUTURE_TOLERANCE)
}

/// Why a record stamped `at` is skipped, when it claims a time the platform has not
/// reached (see [`FUTURE_TOLERANCE`]).
pub fn from_the_future(what: &str, at: DateTime<Utc>, platform_now: Option<DateTime<Utc>>) -> Option<String> {
    let latest = latest_believable(platform_now)?;
    (at > latest).then(|| {
        format!(
            "{what}: stamped {at}, past the platform's clock ({}) plus {} h",
            platform_now.unwrap_or(latest),
            FUTURE_TOLERANCE.num_hours()
        )
    })
}

/// A short digest of a credential, for telling accounts apart in the state file; it
/// cannot be turned back into the credential.
pub fn credential_digest(secret: &crate::config::Secret) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}
