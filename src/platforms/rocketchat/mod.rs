//! Rocket.Chat Omnichannel: a chat is a livechat room of any source but e-mail. Its
//! `[rocketchat]` section is here; `source` polls its REST API (reading `records`),
//! `facade` serves that API over the simulated world, and `truth` says what the exporter
//! must report for it (the contract restated in docs/metrics.md). May import every layer
//! below `platforms`, never another platform.

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

pub use source::RocketChatSource;

pub const NAME: &str = "rocketchat";
/// Calls a minute Rocket.Chat allows on each route by default.
pub const DEFAULT_ROUTE_LIMIT: u32 = 10;

pub struct RocketChat;

/// The `[rocketchat]` section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    base_url: Option<String>,
    user_id: Option<String>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    requests_per_minute_per_route: Option<u32>,
    #[serde(default, deserialize_with = "config::duration::optional")]
    overlap: Option<Duration>,
}

/// The `[rocketchat]` section, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RocketChatConfig {
    /// The server's root, without a trailing slash; the API is under `/api/v1`.
    pub base_url: String,
    /// The exporter's user (`X-User-Id`).
    pub user_id: String,
    /// Its personal access token (`X-Auth-Token`).
    pub token: Secret,
    /// Calls a minute the exporter makes on each route at most, when set; else it follows
    /// the limit the server advertises (`X-RateLimit-Limit`), [`DEFAULT_ROUTE_LIMIT`]
    /// until it has.
    pub requests_per_minute_per_route: Option<u32>,
    /// How far before its cursor each poll looks again.
    pub overlap: Duration,
}

impl RocketChatConfig {
    pub fn new(base_url: impl Into<String>, user_id: impl Into<String>, token: Secret) -> Self {
        RocketChatConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            user_id: user_id.into(),
            token,
            requests_per_minute_per_route: None,
            overlap: Duration::from_secs(60),
        }
    }

    /// Reads the `[rocketchat]` section (the shared polling keys already taken out). Errors
    /// name the full key (`rocketchat.user_id`).
    pub fn from_section(section: serde_json::Value) -> Result<RocketChatConfig, ConfigError> {
        let s: Section = config::deserialize_platform_keys(NAME, section)?;
        let token = config::resolve_token(NAME, s.token, s.token_file.as_deref())?;
        let Some(base_url) = s.base_url else {
            return Err(ConfigError::new("rocketchat.base_url", "missing: set it to the server's address, such as https://chat.example.com"));
        };
        let url = config::check_base_url("rocketchat.base_url", &base_url, &config::token_keys(NAME))?;
        if url.path().contains("/api/") {
            return Err(ConfigError::new(
                "rocketchat.base_url",
                "is the server's root (such as https://chat.example.com): the exporter adds /api/v1",
            ));
        }
        let user_id = match s.user_id.map(|u| u.trim().to_string()) {
            Some(u) if !u.is_empty() => u,
            _ => {
                return Err(ConfigError::new(
                    "rocketchat.user_id",
                    "missing: the id of the user the token belongs to (shown with the token when it is created; X-User-Id)",
                ))
            }
        };
        let mut cfg = RocketChatConfig::new(base_url, user_id, token);
        if let Some(n) = s.requests_per_minute_per_route {
            if !(1..=1_000_000).contains(&n) {
                return Err(ConfigError::new("rocketchat.requests_per_minute_per_route", "must be between 1 and 1000000"));
            }
            cfg.requests_per_minute_per_route = Some(n);
        }
        if let Some(overlap) = s.overlap {
            config::duration::within("rocketchat.overlap", overlap, Duration::from_secs(10), Duration::from_secs(86_400))?;
            cfg.overlap = overlap;
        }
        Ok(cfg)
    }
}

impl super::Platform for RocketChat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Rocket.Chat"
    }

    fn section_keys(&self) -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<Section>()
    }

    fn polling_defaults(&self) -> Polling {
        Polling { requests_per_minute: 60, roster_interval: Duration::from_secs(600), ..Polling::defaults() }
    }

    fn load(&self, section: serde_json::Value) -> Result<Box<dyn super::SourceConfig>, ConfigError> {
        Ok(Box::new(RocketChatConfig::from_section(section)?))
    }

    fn facade(&self) -> &'static dyn Facade {
        &facade::RocketChatFacade
    }
}

impl super::SourceConfig for RocketChatConfig {
    fn build(&self, polling: &Polling, metrics: SelfMetrics) -> Box<dyn Source> {
        Box::new(RocketChatSource::new(self.clone(), polling, metrics))
    }

    fn describe(&self) -> String {
        format!("Rocket.Chat at {} (user {})", self.base_url, self.user_id)
    }

    fn warnings(&self, _polling: &Polling) -> Vec<String> {
        self.requests_per_minute_per_route
            .filter(|n| *n > DEFAULT_ROUTE_LIMIT)
            .map(|n| {
                format!(
                    "rocketchat.requests_per_minute_per_route is {n}, above the {DEFAULT_ROUTE_LIMIT} a minute Rocket.Chat \
                     allows each route by default: give the exporter's user the api-bypass-rate-limit permission, or raise \
                     the server's API_Enable_Rate_Limiter_Limit_Calls_Default (or leave the key out: the exporter follows \
                     the limit the server advertises)"
                )
            })
            .into_iter()
            .collect()
    }
}
