//! Configuration primitives, a leaf that names no platform: a TOML file layered with
//! `CHAT_EXPORTER_<SECTION>__<KEY>` environment variables read into sections, the polling
//! settings every platform shares, `[state]`, secrets, durations, and errors that name
//! the key they are about and the fix. Picking and loading the one platform section is
//! the registry's (`platforms`). Imports nothing of the crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

pub const ENV_PREFIX: &str = "CHAT_EXPORTER";

/// A credential: never printed, whatever prints it.
#[derive(Clone, PartialEq)]
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

impl<'de> Deserialize<'de> for Secret {
    /// Text, or a number: an environment variable of digits arrives as one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        Ok(Secret(match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected text"))? {
            Raw::Text(s) => s,
            Raw::Number(n) => n.to_string(),
        }))
    }
}

/// Polling settings every platform shares; each platform gives its own defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Polling {
    /// Time between polls.
    pub poll_interval: Duration,
    /// Request budget.
    pub requests_per_minute: u32,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// List every live conversation every N polls.
    pub reconcile_every: u32,
    /// How often to read the agents.
    pub roster_interval: Duration,
    /// Largest answer read from the platform, in bytes (after decompression).
    pub max_response_size: u64,
    /// How long a label set stays exported (its gauges at 0) after it was last seen.
    pub series_retention: Duration,
}

/// The keys of [`Polling`], as written in a platform's section.
pub fn polling_keys() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<PollingKeys>()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollingKeys {
    #[serde(default, deserialize_with = "duration::optional")]
    poll_interval: Option<Duration>,
    requests_per_minute: Option<u32>,
    #[serde(default, deserialize_with = "duration::optional")]
    request_timeout: Option<Duration>,
    reconcile_every: Option<u32>,
    #[serde(default, deserialize_with = "duration::optional")]
    roster_interval: Option<Duration>,
    max_response_size: Option<bytesize::ByteSize>,
    #[serde(default, deserialize_with = "duration::optional")]
    series_retention: Option<Duration>,
}

impl Polling {
    /// The shared defaults, for a platform to adjust.
    pub const fn defaults() -> Polling {
        Polling {
            poll_interval: Duration::from_secs(15),
            requests_per_minute: 60,
            request_timeout: Duration::from_secs(20),
            reconcile_every: 10,
            roster_interval: Duration::from_secs(60),
            max_response_size: 32 * 1024 * 1024,
            series_retention: Duration::from_secs(7 * 86_400),
        }
    }

    /// Takes the shared polling keys out of `section` (a platform's, named `name`), and
    /// checks them over the platform's `defaults`; the platform's own keys stay.
    pub fn take_from(
        section: &mut serde_json::Map<String, serde_json::Value>,
        defaults: Polling,
        name: &str,
    ) -> Result<Polling, ConfigError> {
        let mut shared = serde_json::Map::new();
        for key in polling_keys() {
            if let Some(v) = section.remove(*key) {
                shared.insert(key.to_string(), v);
            }
        }
        let keys: PollingKeys = deserialize_keys(name, serde_json::Value::Object(shared))?;
        Self::resolve(keys, defaults, name)
    }

    fn resolve(keys: PollingKeys, defaults: Polling, section: &str) -> Result<Polling, ConfigError> {
        let p = Polling {
            poll_interval: keys.poll_interval.unwrap_or(defaults.poll_interval),
            requests_per_minute: keys.requests_per_minute.unwrap_or(defaults.requests_per_minute),
            request_timeout: keys.request_timeout.unwrap_or(defaults.request_timeout),
            reconcile_every: keys.reconcile_every.unwrap_or(defaults.reconcile_every),
            roster_interval: keys.roster_interval.unwrap_or(defaults.roster_interval),
            max_response_size: keys.max_response_size.map_or(defaults.max_response_size, |b| b.as_u64()),
            series_retention: keys.series_retention.unwrap_or(defaults.series_retention),
        };
        let key = |k: &str| format!("{section}.{k}");
        duration::within(
            &key("poll_interval"),
            p.poll_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        duration::within(
            &key("request_timeout"),
            p.request_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        duration::within(&key("roster_interval"), p.roster_interval, Duration::ZERO, Duration::from_secs(86_400))?;
        duration::within(
            &key("series_retention"),
            p.series_retention,
            Duration::from_secs(60),
            Duration::from_secs(366 * 86_400),
        )?;
        if !(1..=1_000_000).contains(&p.requests_per_minute) {
            return Err(ConfigError::new(key("requests_per_minute"), "must be between 1 and 1000000"));
        }
        if !(1..=10_000).contains(&p.reconcile_every) {
            return Err(ConfigError::new(key("reconcile_every"), "must be between 1 and 10000"));
        }
        if !(1024..=1 << 34).contains(&p.max_response_size) {
            return Err(ConfigError::new(
                key("max_response_size"),
                "must be between 1KiB and 16GiB, such as \"32MiB\"",
            ));
        }
        Ok(p)
    }
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

/// A configuration problem, with the key it is about.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }

    /// Names the environment variable that set the key, where one did: the value to fix
    /// is there, not in the file.
    pub fn naming_the_variable(mut self, env: &[(String, String)]) -> Self {
        let key = self.key.split('[').next().unwrap_or(&self.key);
        let variable = env_variable(key);
        if env.iter().any(|(k, _)| *k == variable) {
            self.message = format!("{} (set by {variable})", self.message);
        }
        self
    }
}

/// The environment variable that sets `key` (`movidesk.poll_interval`:
/// `CHAT_EXPORTER_MOVIDESK__POLL_INTERVAL`).
pub fn env_variable(key: &str) -> String {
    format!("{ENV_PREFIX}_{}", key.to_uppercase().replace('.', "__"))
}

/// Where a section's token is set, for the hint of an error that may come from it.
pub fn token_keys(section: &str) -> String {
    format!(
        "{section}.token or {section}.token_file (in the environment {} or {})",
        env_variable(&format!("{section}.token")),
        env_variable(&format!("{section}.token_file"))
    )
}

/// The variables of `env` that set keys of `section`.
pub fn section_variables<'a>(env: &'a [(String, String)], section: &str) -> impl Iterator<Item = &'a str> {
    let prefix = format!("{}__", env_variable(section));
    env.iter().map(|(k, _)| k.as_str()).filter(move |k| k.starts_with(&prefix))
}

/// The file (if any) with the environment layered over it, as a table of sections, none
/// read yet. `list_keys` are the `section.key` paths whose environment values are
/// comma-separated lists.
pub fn read_sections(
    file: Option<&Path>,
    env: Vec<(String, String)>,
    list_keys: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config.file", format!("{}: {e}", path.display())))?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let env_map: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_"))).collect();
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env_map));
    for key in list_keys {
        environment = environment.with_list_parse_key(key);
    }
    let raw = builder.add_source(environment).build().map_err(|e| {
        // TOML parse errors draw a caret under the offending text over several lines.
        let message = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        match file {
            Some(path) => ConfigError::new("--config.file", format!("{}: {message}", path.display())),
            None => ConfigError::new("config", message),
        }
    })?;
    raw.try_deserialize().map_err(|e| ConfigError::new("config", e.to_string()))
}

impl StateConfig {
    /// The `[state]` section, or its defaults when there is none.
    pub fn from_section(section: Option<serde_json::Value>) -> Result<StateConfig, ConfigError> {
        let state: StateConfig = match section {
            Some(v) => deserialize_keys("state", v)?,
            None => StateConfig::default(),
        };
        if state.enabled && state.path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "state.path",
                "is empty (set state.enabled = false to run without a state file)",
            ));
        }
        Ok(state)
    }
}

/// Deserializes one section, naming the full key of any error (`chatwoot.account_id`).
pub fn deserialize_keys<T: DeserializeOwned>(section: &str, value: serde_json::Value) -> Result<T, ConfigError> {
    deserialize_section(section, value, &[])
}

/// Deserializes a platform's section, whose shared polling keys were taken out first
/// ([`Polling::take_from`]): an unknown key is told with every key the section takes.
pub fn deserialize_platform_keys<T: DeserializeOwned>(
    section: &str,
    value: serde_json::Value,
) -> Result<T, ConfigError> {
    deserialize_section(section, value, polling_keys())
}

/// `also`: the section's keys read elsewhere, listed with its own for an unknown key.
fn deserialize_section<T: DeserializeOwned>(
    section: &str,
    value: serde_json::Value,
    also: &[&str],
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let key = if path == "." { section.to_string() } else { format!("{section}.{path}") };
        if let Some(field) = inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            // serde names the known fields between backquotes after "expected".
            let known = inner.split_once(", expected ").map_or("", |(_, e)| e);
            let mut keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
            keys.extend_from_slice(also);
            // The path may end at the unknown field already (or not, by serde's version).
            let key = if key.ends_with(&format!(".{field}")) { key } else { format!("{key}.{field}") };
            return ConfigError::new(key, format!("unknown key: expected one of {}", keys.join(", ")));
        }
        ConfigError::new(key, inner)
    })
}

/// A list of numbers that may come as strings: a list key set from the environment
/// (`CHAT_EXPORTER_MOVIDESK__CHAT_ORIGINS=5,6,18`) is read as a list of strings, and a
/// single value as that value.
pub fn numbers_or_strings<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item<T> {
        Number(T),
        Text(String),
    }
    // A single value (`CHAT_ORIGINS=5`) comes as a value, not as a list of one.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List<T> {
        Many(Vec<Item<T>>),
        One(Item<T>),
    }
    let items: Option<List<T>> = Option::deserialize(deserializer)?;
    items
        .map(|list| {
            let items = match list {
                List::Many(items) => items,
                List::One(item) => vec![item],
            };
            items
                .into_iter()
                .map(|item| match item {
                    Item::Number(n) => Ok(n),
                    Item::Text(s) => {
                        s.trim().parse().map_err(|e| serde::de::Error::custom(format!("{s:?} is not a number ({e})")))
                    }
                })
                .collect()
        })
        .transpose()
}

/// A token given inline (`token`), in a file (`token_file`), or by the environment
/// (which sets `token`): exactly one of them.
pub fn resolve_token(section: &str, token: Option<Secret>, token_file: Option<&Path>) -> Result<Secret, ConfigError> {
    let env = env_variable(&format!("{section}.token"));
    match (token, token_file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{section}.token_file"),
            format!("set either {section}.token or {section}.token_file, not both"),
        )),
        (Some(t), None) if t.expose().trim().is_empty() => {
            Err(ConfigError::new(format!("{section}.token"), "is empty"))
        }
        (Some(t), None) => Ok(Secret::new(t.expose().trim())),
        (None, Some(path)) => {
            let text = read_token_file(path)
                .map_err(|e| ConfigError::new(format!("{section}.token_file"), format!("{}: {e}", path.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(ConfigError::new(
                    format!("{section}.token_file"),
                    format!("{}: file is empty", path.display()),
                ));
            }
            Ok(Secret::new(token))
        }
        (None, None) => Err(ConfigError::new(
            format!("{section}.token"),
            format!("missing: set {section}.token, {section}.token_file or {env}"),
        )),
    }
}

/// The most a token file may hold. A token is tens of bytes; a larger file is not a
/// token file (`/dev/zero`, a log), and is refused rather than read into memory.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// A token file's text. Only a regular file is opened (through links, as Kubernetes
/// mounts secrets): a FIFO nobody writes to would hang the start, a device could be read
/// forever. At most [`MAX_TOKEN_FILE_BYTES`] are read.
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err(
            "not a regular file (a directory, a FIFO or a device): point it at the file holding the token".to_string()
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!("larger than {} KiB: not a token file", MAX_TOKEN_FILE_BYTES / 1024));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text: not a token file".to_string())
}

/// A platform's base URL: http(s), with a host, and nothing secret in it (it is shown
/// on the landing page and in logs).
pub fn check_base_url(key: &str, value: &str, token_keys: &str) -> Result<reqwest::Url, ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url)
            if url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some() =>
        {
            Err(ConfigError::new(
                key,
                format!("must not carry a query, a fragment or credentials (put the token in {token_keys})"),
            ))
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        Ok(_) => Err(ConfigError::new(key, "must be an http:// or https:// URL")),
        Err(e) => Err(ConfigError::new(key, format!("not a URL: {e}"))),
    }
}

/// Durations in the configuration: text with a unit (`500ms`, `30s`, `2m`, `1h`).
pub mod duration {
    use super::ConfigError;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }

    fn parse<E: serde::de::Error>(raw: Raw) -> Result<Duration, E> {
        match raw {
            Raw::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                E::custom(format!("{s:?} is not a duration ({e}); write it with a unit, such as \"30s\""))
            }),
            Raw::Number(n) => {
                Err(E::custom(format!("{n} has no unit: write a duration with a unit, such as \"{n}s\" or \"{n}ms\"")))
            }
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(Raw::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Some(parse(Raw::deserialize(d)?)?))
    }

    /// Refuses a duration outside [min, max], naming the key and the bounds.
    pub fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
        if value < min || value > max {
            return Err(ConfigError::new(
                key,
                format!(
                    "{} is out of range: must be between {} and {}",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resolve_token` on `path`, within five seconds (a read that hangs fails the test
    /// instead of hanging it).
    fn token_from(path: &Path) -> Result<Secret, ConfigError> {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(resolve_token("movidesk", None, Some(&path))));
        rx.recv_timeout(Duration::from_secs(5)).expect("reading the token file does not hang")
    }

    fn refused(path: &Path, why: &str) {
        let e = token_from(path).expect_err("refused");
        assert_eq!(e.key, "movidesk.token_file");
        assert!(e.message.starts_with(&path.display().to_string()) && e.message.contains(why), "{e}");
    }

    /// A token file that is no file, or too big to be a token, is refused at once, naming
    /// the key: `/dev/zero` is not read for ever, a FIFO nobody writes to does not hang.
    #[test]
    fn token_files_are_regular_files_of_a_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        refused(Path::new("/dev/zero"), "not a regular file");
        refused(dir.path(), "not a regular file");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        refused(&fifo, "not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_TOKEN_FILE_BYTES as usize + 1]).unwrap();
        refused(&big, "larger than 64 KiB");
        let latin1 = dir.path().join("latin1");
        std::fs::write(&latin1, b"Jos\xe9").unwrap();
        refused(&latin1, "not UTF-8");

        let good = dir.path().join("token");
        std::fs::write(&good, format!("  {}\n", "t".repeat(MAX_TOKEN_FILE_BYTES as usize - 4))).unwrap();
        assert_eq!(token_from(&good).unwrap().expose().len(), MAX_TOKEN_FILE_BYTES as usize - 4);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(token_from(&link).is_ok(), "a link to a file, as Kubernetes mounts secrets");
    }
}
