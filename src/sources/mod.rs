//! Sources speak one platform's API each and yield observations in the neutral model.

use std::future::Future;
use std::time::Duration;

use crate::budget::RequestBudget;
use crate::model::Observations;

pub mod movidesk;

/// One chat platform, polled in the background.
pub trait Source: Send {
    /// Value of the `source` label on the exporter's own metrics.
    fn name(&self) -> &'static str;
    /// Which account of the platform this is (no secret): a state file saved for one
    /// account is never restored for another.
    fn account(&self) -> String;
    /// Asks the platform what changed since the last successful poll.
    fn poll(&mut self) -> impl Future<Output = Result<Observations, SourceError>> + Send;
    /// Where the source stands (its cursor), for the state file.
    fn save_state(&self) -> serde_json::Value;
    /// Resumes from a saved position.
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String>;
    /// The request budget every call to the platform goes through.
    fn budget(&self) -> std::sync::Arc<RequestBudget>;
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
    #[error("{endpoint}: the platform rejected the token (HTTP {status})")]
    Unauthorized { endpoint: &'static str, status: u16 },
    #[error("{endpoint}: server error (HTTP {status})")]
    Server { endpoint: &'static str, status: u16 },
    #[error("{endpoint}: unexpected answer (HTTP {status})")]
    Client { endpoint: &'static str, status: u16 },
    #[error("{endpoint}: malformed answer: {detail}")]
    Decode { endpoint: &'static str, detail: String },
}

impl SourceError {
    /// The `reason` label of `chat_exporter_api_request_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Timeout { .. } => "timeout",
            SourceError::Connection { .. } => "connection",
            SourceError::RateLimited { .. } => "rate_limited",
            SourceError::Unauthorized { .. } => "unauthorized",
            SourceError::Server { .. } => "server_error",
            SourceError::Client { .. } => "client_error",
            SourceError::Decode { .. } => "decode",
        }
    }
}
