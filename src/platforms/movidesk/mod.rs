//! Movidesk (Zenvia Customer Cloud): a chat is a ticket whose `origin` is a chat channel.
//! Its `[movidesk]` section is here; `source` polls its public API (reading `records`),
//! `facade` serves that API over the simulated world, and `truth` says what the exporter
//! must report for it. May import every layer below `platforms`, never another platform.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{self, ConfigError, Polling, Secret};
use crate::self_metrics::SelfMetrics;
use crate::simulator::Facade;
use crate::source::Source;

pub mod facade;
pub mod odata;
pub mod source;
pub mod records;
mod truth;

pub use source::MovideskSource;

pub const NAME: &str = "movidesk";
pub const DEFAULT_BASE_URL: &str = "https://api.movidesk.com/public/v1";
/// Movidesk's chat origins: chat online, chat offline, WhatsApp, Zenvia Chat, Messenger,
/// WhatsApp Business Movidesk, active WhatsApp.
pub const DEFAULT_CHAT_ORIGINS: &[u16] = &[5, 6, 18, 20, 22, 23, 25];
/// Requests per minute Movidesk allows a token.
pub const DOCUMENTED_LIMIT: u32 = 10;

pub struct Movidesk;

/// The `[movidesk]` section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    base_url: Option<String>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "config::duration::optional")]
    overlap: Option<Duration>,
    #[serde(default, deserialize_with = "config::numbers_or_strings")]
    chat_origins: Option<Vec<u16>>,
    page_size: Option<u32>,
}

/// The `[movidesk]` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MovideskConfig {
    /// API root, without a trailing slash.
    pub base_url: String,
    pub token: Secret,
    /// How far before its cursor each poll looks again.
    pub overlap: Duration,
    /// `origin` codes that are chats.
    pub chat_origins: Vec<u16>,
    /// Items per request.
    pub page_size: u32,
}

impl MovideskConfig {
    /// Defaults for everything, pointed at `base_url` with `token`.
    pub fn new(base_url: impl Into<String>, token: Secret) -> Self {
        MovideskConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token,
            overlap: Duration::from_secs(120),
            chat_origins: DEFAULT_CHAT_ORIGINS.to_vec(),
            page_size: 100,
        }
    }

    /// Reads the `[movidesk]` section (the shared polling keys already taken out). Errors
    /// name the full key (`movidesk.page_size`).
    pub fn from_section(section: serde_json::Value) -> Result<MovideskConfig, ConfigError> {
        let s: Section = config::deserialize_platform_keys(NAME, section)?;
        let token = config::resolve_token(NAME, s.token, s.token_file.as_deref())?;
        let base_url = s.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        config::check_base_url("movidesk.base_url", &base_url, &config::token_keys(NAME))?;
        let mut cfg = MovideskConfig::new(base_url, token);
        if let Some(overlap) = s.overlap {
            config::duration::within("movidesk.overlap", overlap, Duration::from_secs(10), Duration::from_secs(86_400))
                .map_err(|e| ConfigError {
                    message: format!(
                        "{}; at least 10s covers the platform writing lastUpdate later than it stamps it",
                        e.message
                    ),
                    ..e
                })?;
            cfg.overlap = overlap;
        }
        if let Some(origins) = s.chat_origins {
            if origins.is_empty() {
                return Err(ConfigError::new("movidesk.chat_origins", "must list at least one origin"));
            }
            cfg.chat_origins = origins;
        }
        if let Some(page_size) = s.page_size {
            if !(1..=100).contains(&page_size) {
                return Err(ConfigError::new("movidesk.page_size", "must be between 1 and 100 (Movidesk's page limit)"));
            }
            cfg.page_size = page_size;
        }
        Ok(cfg)
    }
}

impl super::Platform for Movidesk {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Movidesk"
    }

    fn section_keys(&self) -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<Section>()
    }

    fn polling_defaults(&self) -> Polling {
        Polling { requests_per_minute: DOCUMENTED_LIMIT, roster_interval: Duration::from_secs(600), ..Polling::defaults() }
    }

    fn list_keys(&self) -> &'static [&'static str] {
        &["chat_origins"]
    }

    fn load(&self, section: serde_json::Value) -> Result<Box<dyn super::SourceConfig>, ConfigError> {
        Ok(Box::new(MovideskConfig::from_section(section)?))
    }

    fn facade(&self) -> &'static dyn Facade {
        &facade::MovideskFacade
    }
}

impl super::SourceConfig for MovideskConfig {
    fn build(&self, polling: &Polling, metrics: SelfMetrics) -> Box<dyn Source> {
        Box::new(MovideskSource::new(self.clone(), polling, metrics))
    }

    fn describe(&self) -> String {
        format!("Movidesk at {}", self.base_url)
    }

    fn warnings(&self, polling: &Polling) -> Vec<String> {
        (polling.requests_per_minute > DOCUMENTED_LIMIT)
            .then(|| {
                format!(
                    "movidesk.requests_per_minute is {}, above the {DOCUMENTED_LIMIT} a minute Movidesk allows a token: \
                     expect 429s unless the account's limit was raised",
                    polling.requests_per_minute
                )
            })
            .into_iter()
            .collect()
    }
}
