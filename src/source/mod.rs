//! What a platform's source is to the rest of the exporter: it polls its platform and
//! yields observations in the neutral model. Each platform lives in its own folder under
//! `platforms/`; this module holds only what they share.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::budget::RequestBudget;
use crate::model::Observations;

pub mod client;

/// One chat platform, polled in the background.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Value of the `source` label on the exporter's own metrics.
    fn name(&self) -> &'static str;
    /// Which account of the platform this is (no secret): a state file saved for one
    /// account is never restored for another.
    fn account(&self) -> String;
    /// Asks the platform what changed since the last successful poll.
    async fn poll(&mut self) -> Result<Observations, SourceError>;
    /// Where the source stands (its cursor), for the state file.
    fn save_state(&self) -> serde_json::Value;
    /// Resumes from a saved position.
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String>;
    /// The request budget every call to the platform goes through.
    fn budget(&self) -> Arc<RequestBudget>;
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

/// Why a poll failed. Each variant maps to one bounded `reason` label value.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SourceError {
    #[error("{endpoint}: request timed out")]
    Timeout { endpoint: &'static str },
    #[error("{endpoint}: connection failed: {detail}")]
    Connection { endpoint: &'static str, detail: String },
    #[error("{endpoint}: rate limited by the platform (retry after {retry_after:?})")]
    RateLimited { endpoint: &'static str, retry_after: Option<Duration> },
    #[error("{endpoint}: the platform rejected the token (HTTP {status}){hint}")]
    Unauthorized { endpoint: &'static str, status: u16, hint: String },
    #[error("{endpoint}: server error (HTTP {status})")]
    Server { endpoint: &'static str, status: u16 },
    #[error("{endpoint}: unexpected answer (HTTP {status}){hint}")]
    Client { endpoint: &'static str, status: u16, hint: String },
    #[error("{endpoint}: malformed answer: {detail}")]
    Decode { endpoint: &'static str, detail: String },
    #[error("{endpoint}: answer larger than max_response_size ({limit} bytes, after decompression)")]
    TooLarge { endpoint: &'static str, limit: u64 },
    #[error("{endpoint}: paging made no progress: {detail}")]
    NoProgress { endpoint: &'static str, detail: String },
}

/// The bounded values of the `reason` label, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Timeout,
    Connection,
    RateLimited,
    Unauthorized,
    ServerError,
    ClientError,
    Decode,
    /// An answer over `max_response_size`, compressed or not.
    TooLarge,
    /// Paging that brings nothing new (a server ignoring the offset) or too many pages.
    NoProgress,
    /// A record inside a good answer that could not be read (not a poll failure).
    InvalidRecord,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::Connection,
        Reason::RateLimited,
        Reason::Unauthorized,
        Reason::ServerError,
        Reason::ClientError,
        Reason::Decode,
        Reason::TooLarge,
        Reason::NoProgress,
        Reason::InvalidRecord,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connection => "connection",
            Reason::RateLimited => "rate_limited",
            Reason::Unauthorized => "unauthorized",
            Reason::ServerError => "server_error",
            Reason::ClientError => "client_error",
            Reason::Decode => "decode",
            Reason::TooLarge => "too_large",
            Reason::NoProgress => "no_progress",
            Reason::InvalidRecord => "invalid_record",
        }
    }
}

impl SourceError {
    pub fn kind(&self) -> Reason {
        match self {
            SourceError::Timeout { .. } => Reason::Timeout,
            SourceError::Connection { .. } => Reason::Connection,
            SourceError::RateLimited { .. } => Reason::RateLimited,
            SourceError::Unauthorized { .. } => Reason::Unauthorized,
            SourceError::Server { .. } => Reason::ServerError,
            SourceError::Client { .. } => Reason::ClientError,
            SourceError::Decode { .. } => Reason::Decode,
            SourceError::TooLarge { .. } => Reason::TooLarge,
            SourceError::NoProgress { .. } => Reason::NoProgress,
        }
    }

    /// The `reason` label of `chat_exporter_api_request_failures_total`.
    pub fn reason(&self) -> &'static str {
        self.kind().label()
    }
}
