//! The platforms, plugged in from the top: one folder each (its configuration section,
//! its source, its simulator facade and that facade's ground truth), and the registry
//! that loads the one section a configuration has. May import every layer below; nothing
//! below names a platform. Adding one is its folder plus one line in [`platforms!`].

use std::fmt::Debug;
use std::path::Path;

use crate::config::{self, ConfigError, Polling, StateConfig, ENV_PREFIX};
use crate::self_metrics::SelfMetrics;
use crate::simulator::Facade;
use crate::source::Source;

/// A chat platform the exporter can poll.
pub trait Platform: Sync + Send {
    /// Its configuration section, its `source` label and its `--demo.platform` value.
    fn name(&self) -> &'static str;
    /// How people write its name.
    fn title(&self) -> &'static str;
    /// Shared polling settings, as this platform needs them by default.
    fn polling_defaults(&self) -> Polling;
    /// The keys of its own section (the shared polling keys aside), for the docs test.
    fn section_keys(&self) -> &'static [&'static str];
    /// Keys of its section whose environment values are comma-separated lists.
    fn list_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Reads its section (the shared polling keys already taken out). Errors name the
    /// full key (`chatwoot.account_id`).
    fn load(&self, section: serde_json::Value) -> Result<Box<dyn SourceConfig>, ConfigError>;
    /// Its API in the simulator, for the demo and the tests.
    fn facade(&self) -> &'static dyn Facade;
}

/// A platform's loaded section, ready to build its source.
pub trait SourceConfig: Debug + Send + Sync {
    fn build(&self, polling: &Polling, metrics: SelfMetrics) -> Box<dyn Source>;
    /// What the landing page says it polls (no secret).
    fn describe(&self) -> String;
    /// Settings above what the platform documents, one line each, for a warning at start.
    fn warnings(&self, _polling: &Polling) -> Vec<String> {
        Vec::new()
    }
}

macro_rules! platforms {
    ($($module:ident => $platform:expr),* $(,)?) => {
        $(pub mod $module;)*
        /// Every platform, in the order they are listed in messages.
        pub static ALL: &[&dyn Platform] = &[$(&$platform),*];
    };
}

platforms! {
    movidesk => movidesk::Movidesk,
    chatwoot => chatwoot::Chatwoot,
    rocketchat => rocketchat::RocketChat,
}

/// The platform of this name.
pub fn find(name: &str) -> Option<&'static dyn Platform> {
    ALL.iter().copied().find(|p| p.name() == name)
}

/// The platform names, for messages: "movidesk, chatwoot or rocketchat".
pub fn names() -> String {
    let names: Vec<&str> = ALL.iter().map(|p| p.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// A loaded, validated configuration: one platform and how to poll it.
pub struct Config {
    pub platform: &'static dyn Platform,
    pub source: Box<dyn SourceConfig>,
    pub polling: Polling,
    pub state: StateConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("platform", &self.platform.name())
            .field("source", &self.source)
            .field("polling", &self.polling)
            .field("state", &self.state)
            .finish()
    }
}

/// The configuration's one platform section, its shared polling keys taken out and
/// checked, and `[state]`: what [`load_from`] builds a [`Config`] from.
pub struct Section {
    pub platform: &'static dyn Platform,
    /// The platform's own keys, for [`Platform::load`].
    pub keys: serde_json::Value,
    pub polling: Polling,
    pub state: StateConfig,
}

/// Loads the file (if any), layers the environment over it, and validates every value.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    load_from(file, std::env::vars().collect())
}

pub fn load_from(file: Option<&Path>, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    let variables = env.clone();
    let config = read_section(file, env).and_then(|Section { platform, keys, polling, state }| {
        let source = platform.load(keys)?;
        Ok(Config { platform, source, polling, state })
    });
    config.map_err(|e| e.naming_the_variable(&variables))
}

/// Reads the file and the environment, and picks the one platform section of them.
pub fn read_section(file: Option<&Path>, env: Vec<(String, String)>) -> Result<Section, ConfigError> {
    let list_keys: Vec<String> =
        ALL.iter().flat_map(|p| p.list_keys().iter().map(move |key| format!("{}.{key}", p.name()))).collect();
    let variables = env.clone();
    let mut top = config::read_sections(file, env, &list_keys)?;
    let state = StateConfig::from_section(top.remove("state"))?;
    let sections = || ALL.iter().map(|p| format!("[{}]", p.name())).collect::<Vec<_>>().join(", ");
    let mut found = Vec::new();
    for (name, section) in top {
        let Some(platform) = find(&name) else {
            return Err(ConfigError::new(
                name,
                format!("unknown section: expected one platform section ({}) and optionally [state]", sections()),
            ));
        };
        found.push((platform, section));
    }
    if found.len() > 1 {
        // A section the environment made is told with its variables: often a stray one.
        let names: Vec<String> = found
            .iter()
            .map(|(p, _)| {
                let set_by: Vec<&str> = config::section_variables(&variables, p.name()).collect();
                match set_by.is_empty() {
                    true => format!("[{}]", p.name()),
                    false => format!("[{}] (set by {})", p.name(), set_by.join(", ")),
                }
            })
            .collect();
        return Err(ConfigError::new(
            "config",
            format!(
                "{} are set: an exporter polls one platform; run one exporter per platform or account",
                names.join(" and ")
            ),
        ));
    }
    let Some((platform, section)) = found.pop() else {
        return Err(ConfigError::new(
            "config",
            format!(
                "no platform section: add one of {} to --config.file, or set {ENV_PREFIX}_<PLATFORM>__TOKEN",
                sections()
            ),
        ));
    };
    let name = platform.name();
    let serde_json::Value::Object(mut keys) = section else {
        return Err(ConfigError::new(name, "must be a section ([name] with keys)"));
    };
    // A token from the environment (a Kubernetes secret, a systemd credential) replaces
    // the file's, whichever of token and token_file each sets.
    let env_sets = |key: &str| variables.iter().any(|(k, _)| *k == config::env_variable(&format!("{name}.{key}")));
    match (env_sets("token"), env_sets("token_file")) {
        (true, false) => drop(keys.remove("token_file")),
        (false, true) => drop(keys.remove("token")),
        _ => {}
    }
    let polling = Polling::take_from(&mut keys, platform.polling_defaults(), name)?;
    Ok(Section { platform, keys: serde_json::Value::Object(keys), polling, state })
}
