//! The platforms: one folder each, holding its configuration section, its source and
//! its simulator facade (with the ground truth of its metric contract). The rest of the
//! exporter knows them only through [`Platform`]; adding one is its folder plus one line
//! in [`platforms!`].

use std::fmt::Debug;

use axum::Router;

use crate::config::{ConfigError, Polling};
use crate::self_metrics::SelfMetrics;
use crate::simulator::{Features, Sample, SimState, World};
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

    /// What of the neutral world its API can show.
    fn world_features(&self) -> Features;
    /// Its API over the simulated world.
    fn facade(&self) -> Router<SimState>;
    /// Where its API is served under the simulator's address (for messages).
    fn api_path(&self) -> &'static str;
    /// The exact value of every chat metric, by its contract, computed from the world with
    /// the facade's own label tables (never the source's).
    fn truth(&self, world: &World) -> Vec<Sample>;
    /// The section that points this platform's source at a simulator (`base` is
    /// `http://HOST:PORT`) with `token`, whose API allows `per_minute` requests a minute
    /// (per token, or per route where the platform limits routes).
    fn demo_section(&self, base: &str, token: &str, per_minute: u32) -> serde_json::Value;
}

/// A platform's loaded section, ready to build its source.
pub trait SourceConfig: Debug + Send + Sync {
    /// For tests that look inside a platform's section.
    fn as_any(&self) -> &dyn std::any::Any;
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
