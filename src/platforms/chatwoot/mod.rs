//! Chatwoot: a chat is a conversation of a non-e-mail inbox. Its `[chatwoot]` section is
//! here; `source` polls its application API (reading `records`), `facade` serves that API
//! over the simulated world, and `truth` says what the exporter must report for it (the
//! contract restated in docs/metrics.md). May import every layer below `platforms`,
//! never another platform.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{self, ConfigError, Polling, Secret};
use crate::self_metrics::SelfMetrics;
use crate::simulator::Facade;
use crate::source::Source;

pub mod facade;
pub mod records;
pub mod source;
mod truth;

pub use source::ChatwootSource;

pub const NAME: &str = "chatwoot";
pub const DEFAULT_BASE_URL: &str = "https://app.chatwoot.com";

pub struct Chatwoot;

/// The `[chatwoot]` section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    base_url: Option<String>,
    account_id: Option<u64>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "config::duration::optional")]
    overlap: Option<Duration>,
}

/// The `[chatwoot]` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatwootConfig {
    /// Installation root, without a trailing slash; the API is under `/api/v1/accounts/{id}`.
    pub base_url: String,
    pub account_id: u64,
    /// A user's access token (an administrator's sees every inbox).
    pub token: Secret,
    /// How far before the previous window each poll looks again.
    pub overlap: Duration,
}

impl ChatwootConfig {
    pub fn new(base_url: impl Into<String>, account_id: u64, token: Secret) -> Self {
        ChatwootConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            account_id,
            token,
            overlap: Duration::from_secs(60),
        }
    }

    /// `…/api/v1/accounts/{id}`.
    pub fn account_url(&self) -> String {
        format!("{}/api/v1/accounts/{}", self.base_url, self.account_id)
    }

    /// Reads the `[chatwoot]` section (the shared polling keys already taken out). Errors
    /// name the full key (`chatwoot.account_id`).
    pub fn from_section(section: serde_json::Value) -> Result<ChatwootConfig, ConfigError> {
        let s: Section = config::deserialize_platform_keys(NAME, section)?;
        let token = config::resolve_token(NAME, s.token, s.token_file.as_deref())?;
        let base_url = s.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let url = config::check_base_url("chatwoot.base_url", &base_url, &config::token_keys(NAME))?;
        if url.path().contains("/api/") {
            return Err(ConfigError::new(
                "chatwoot.base_url",
                "is the installation's root (such as https://app.chatwoot.com): the exporter adds /api/v1/accounts/ACCOUNT_ID",
            ));
        }
        let account_id = match s.account_id {
            Some(id) if id >= 1 => id,
            Some(_) => return Err(ConfigError::new("chatwoot.account_id", "must be at least 1")),
            None => {
                return Err(ConfigError::new(
                    "chatwoot.account_id",
                    "missing: set it to the number after /app/accounts/ in the address of Chatwoot's dashboard",
                ))
            }
        };
        let mut cfg = ChatwootConfig::new(base_url, account_id, token);
        if let Some(overlap) = s.overlap {
            config::duration::within("chatwoot.overlap", overlap, Duration::from_secs(10), Duration::from_secs(86_400))?;
            cfg.overlap = overlap;
        }
        Ok(cfg)
    }
}

impl super::Platform for Chatwoot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Chatwoot"
    }

    fn section_keys(&self) -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<Section>()
    }

    fn polling_defaults(&self) -> Polling {
        Polling { requests_per_minute: 60, roster_interval: Duration::from_secs(600), ..Polling::defaults() }
    }

    fn load(&self, section: serde_json::Value) -> Result<Box<dyn super::SourceConfig>, ConfigError> {
        Ok(Box::new(ChatwootConfig::from_section(section)?))
    }

    fn facade(&self) -> &'static dyn Facade {
        &facade::ChatwootFacade
    }
}

impl super::SourceConfig for ChatwootConfig {
    fn build(&self, polling: &Polling, metrics: SelfMetrics) -> Box<dyn Source> {
        Box::new(ChatwootSource::new(self.clone(), polling, metrics))
    }

    fn describe(&self) -> String {
        format!("Chatwoot account {} at {}", self.account_id, self.base_url)
    }
}
