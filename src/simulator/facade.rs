//! What a platform's simulated API is to the simulator. The simulator is handed a
//! facade and never looks a platform up by name; each platform's folder implements one.

use axum::Router;

use super::{Features, Sample, SimState, World};

/// A platform's API over the neutral world, with the ground truth of its contract.
pub trait Facade: Send + Sync {
    /// The platform's name: its configuration section and `--demo.platform` value.
    fn name(&self) -> &'static str;
    /// What of the neutral world its API can show.
    fn world_features(&self) -> Features;
    /// Its API over the simulated world. Every answer, refusals included, is dated by the
    /// simulator's router (see [`super::router`]).
    fn router(&self) -> Router<SimState>;
    /// Where its API is served under the simulator's address (for messages).
    fn api_path(&self) -> &'static str;
    /// The exact value of every chat metric, by its contract, computed from the world with
    /// the facade's own label tables (never the source's).
    fn truth(&self, world: &World) -> Vec<Sample>;
    /// The histogram families its contract gives, with their bucket bounds (the facade's
    /// own): every chat label set of the truth has each of them, empty until its first
    /// value (docs/metrics.md, "Series that stay").
    fn histograms(&self) -> &'static [(&'static str, &'static [f64])];
    /// The platform section that points its source at a simulator (`base` is
    /// `http://HOST:PORT`) with `token`, whose API allows `per_minute` requests a minute
    /// (per token, or per route where the platform limits routes).
    fn demo_section(&self, base: &str, token: &str, per_minute: u32) -> serde_json::Value;
}

impl std::fmt::Debug for dyn Facade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
