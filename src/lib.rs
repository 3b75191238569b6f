//! chat_exporter: a Prometheus exporter for customer-service chat platforms.
//!
//! A source polls the platform (`sources`), the tracker turns what it sees into counters
//! and gauges once and only once (`tracker`), the exposition is encoded once per poll
//! (`exposition`) and served by `http`. The `simulator` serves a platform's API over a
//! deterministic world model, for the demo and the tests.

pub mod budget;
pub mod cli;
pub mod config;
pub mod exporter;
pub mod exposition;
pub mod http;
pub mod model;
pub mod self_metrics;
pub mod simulator;
pub mod sources;
pub mod state;
pub mod tracker;
