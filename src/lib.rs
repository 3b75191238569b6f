//! chat_exporter: a Prometheus exporter for customer-service chat platforms.
//!
//! A platform's source (`platforms`, behind `source::Source`) polls it, the tracker turns what it sees into counters
//! and gauges once and only once (`tracker`), the exposition is encoded once per poll
//! (`exposition`) and served by `http`. The `simulator` serves a platform's API over a
//! deterministic world model, for the demo and the tests.

pub mod app;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exposition;
pub mod health;
pub mod http;
pub mod memory;
pub mod model;
pub mod platforms;
pub mod poller;
pub mod self_metrics;
pub mod simulator;
pub mod source;
pub mod state;
pub mod tracker;
