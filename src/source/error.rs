//! Why a source failed, as a leaf every layer may name: the errors of a poll, the
//! bounded `reason` label each maps to, and a saved position that cannot be resumed.

use std::time::Duration;

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

/// A saved position (the state file's cursor) the source cannot resume from.
#[derive(Debug, thiserror::Error)]
#[error("{platform} cursor: {cause}")]
pub struct CursorError {
    pub platform: &'static str,
    #[source]
    pub cause: serde_json::Error,
}
