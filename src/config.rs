//! Configuration: a TOML file layered with `CHAT_EXPORTER_<SECTION>__<KEY>` environment
//! variables. Every error names the key it is about.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const ENV_PREFIX: &str = "CHAT_EXPORTER";
pub const DEFAULT_MOVIDESK_URL: &str = "https://api.movidesk.com/public/v1";
/// Movidesk's chat origins: chat online, chat offline, WhatsApp, Zenvia Chat, Messenger,
/// WhatsApp Business Movidesk, active WhatsApp.
pub const DEFAULT_CHAT_ORIGINS: &[u16] = &[5, 6, 18, 20, 22, 23, 25];

/// A credential: never printed, whatever prints it.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub movidesk: MovideskConfig,
    #[serde(default)]
    pub state: StateConfig,
}

pub const DEFAULT_STATE_PATH: &str = "data/chat_exporter.state.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_enabled")]
    pub enabled: bool,
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { enabled: default_state_enabled(), path: default_state_path() }
    }
}

fn default_state_enabled() -> bool {
    true
}
fn default_state_path() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_PATH)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovideskConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(default = "default_overlap", with = "humantime_serde")]
    pub overlap: Duration,
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_reconcile_every")]
    pub reconcile_every: u32,
    #[serde(default = "default_roster_interval", with = "humantime_serde")]
    pub roster_interval: Duration,
    #[serde(default = "default_chat_origins")]
    pub chat_origins: Vec<u16>,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_base_url() -> String {
    DEFAULT_MOVIDESK_URL.to_string()
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_overlap() -> Duration {
    Duration::from_secs(120)
}
fn default_requests_per_minute() -> u32 {
    10
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_reconcile_every() -> u32 {
    10
}
fn default_roster_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_chat_origins() -> Vec<u16> {
    DEFAULT_CHAT_ORIGINS.to_vec()
}
fn default_page_size() -> u32 {
    100
}

impl MovideskConfig {
    /// Defaults for everything, pointed at `base_url` with `token`.
    pub fn new(base_url: impl Into<String>, token: Secret) -> Self {
        MovideskConfig {
            base_url: base_url.into(),
            token: Some(token),
            token_file: None,
            poll_interval: default_poll_interval(),
            overlap: default_overlap(),
            requests_per_minute: default_requests_per_minute(),
            request_timeout: default_request_timeout(),
            reconcile_every: default_reconcile_every(),
            roster_interval: default_roster_interval(),
            chat_origins: default_chat_origins(),
            page_size: default_page_size(),
        }
    }
}

/// A configuration problem, with the key it is about.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// Loads the file (if any), layers the environment over it, resolves the token and
/// validates every value.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, env)
}

pub fn load_from(file: Option<&Path>, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::new("--config.file", format!("{}: no such file", path.display())));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
    }
    let env_map: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_"))).collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("movidesk.chat_origins")
            .source(Some(env_map)),
    );
    let raw = builder.build().map_err(config_crate_error)?;
    if raw.get_table("movidesk").is_err() {
        return Err(ConfigError::new(
            "movidesk",
            format!("missing section: add [movidesk] to the file or set {ENV_PREFIX}_MOVIDESK__TOKEN"),
        ));
    }
    let mut cfg: Config = raw.try_deserialize().map_err(config_crate_error)?;
    resolve_token(&mut cfg.movidesk)?;
    validate(&cfg)?;
    Ok(cfg)
}

/// The config crate names the key in its message ("... for key `movidesk.x`"); keep its
/// words but lead with the key so every error reads the same way.
fn config_crate_error(err: config::ConfigError) -> ConfigError {
    // TOML parse errors draw a caret under the offending text over several lines.
    let message = err.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    if message.contains("TOML parse error") {
        return ConfigError::new("--config.file", message);
    }
    let key = message
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
        .or_else(|| {
            message
                .split("unknown field `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .map(|f| format!("unknown key {f}"))
        })
        .unwrap_or_else(|| "config".to_string());
    ConfigError::new(key, message)
}

fn resolve_token(m: &mut MovideskConfig) -> Result<(), ConfigError> {
    match (&m.token, &m.token_file) {
        (Some(_), Some(_)) => {
            Err(ConfigError::new("movidesk.token_file", "set either movidesk.token or movidesk.token_file, not both"))
        }
        (Some(t), None) if t.expose().trim().is_empty() => Err(ConfigError::new("movidesk.token", "is empty")),
        (Some(_), None) => Ok(()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new("movidesk.token_file", format!("{}: {e}", path.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(ConfigError::new("movidesk.token_file", format!("{}: file is empty", path.display())));
            }
            m.token = Some(Secret::new(token));
            Ok(())
        }
        (None, None) => Err(ConfigError::new(
            "movidesk.token",
            format!("missing: set movidesk.token, movidesk.token_file or {ENV_PREFIX}_MOVIDESK__TOKEN"),
        )),
    }
}

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let m = &cfg.movidesk;
    match reqwest::Url::parse(&m.base_url) {
        // The URL is shown on the landing page and in logs: it must carry no secret.
        Ok(url)
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() =>
        {
            return Err(ConfigError::new(
                "movidesk.base_url",
                "must not carry a query, a fragment or credentials (put the token in movidesk.token or movidesk.token_file)",
            ))
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(_) => return Err(ConfigError::new("movidesk.base_url", "must be an http:// or https:// URL")),
        Err(e) => return Err(ConfigError::new("movidesk.base_url", format!("not a URL: {e}"))),
    }
    if m.overlap < Duration::from_secs(10) {
        return Err(ConfigError::new(
            "movidesk.overlap",
            "must be at least 10s: it covers the platform writing lastUpdate later than it stamps it",
        ));
    }
    if m.requests_per_minute == 0 {
        return Err(ConfigError::new("movidesk.requests_per_minute", "must be at least 1"));
    }
    if m.poll_interval < Duration::from_millis(100) {
        return Err(ConfigError::new("movidesk.poll_interval", "must be at least 100ms"));
    }
    if m.request_timeout.is_zero() {
        return Err(ConfigError::new("movidesk.request_timeout", "must be more than 0"));
    }
    if m.reconcile_every == 0 {
        return Err(ConfigError::new("movidesk.reconcile_every", "must be at least 1"));
    }
    if !(1..=100).contains(&m.page_size) {
        return Err(ConfigError::new("movidesk.page_size", "must be between 1 and 100 (Movidesk's page limit)"));
    }
    if cfg.state.enabled && cfg.state.path.as_os_str().is_empty() {
        return Err(ConfigError::new("state.path", "is empty (set state.enabled = false to run without a state file)"));
    }
    if m.chat_origins.is_empty() {
        return Err(ConfigError::new("movidesk.chat_origins", "must list at least one origin"));
    }
    Ok(())
}
