//! Command-line flags, in the style of Prometheus' own exporters.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// What `--version` prints after the name: the version, then the revision and the Rust
/// compiler it was built from, as the labels of `chat_exporter_build_info` (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("CHAT_EXPORTER_REVISION"),
    ", rustc ",
    env!("CHAT_EXPORTER_RUSTC_VERSION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "chat_exporter",
    version = VERSION,
    about = "Prometheus exporter for customer-service chat platforms (Movidesk, Chatwoot, Rocket.Chat)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file; CHAT_EXPORTER_<SECTION>__<KEY> environment variables override it.
    #[arg(long = "config.file", value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on for the metrics and health endpoints (":port" for every interface).
    #[arg(long = "web.listen-address", default_value = ":9877", value_name = "ADDR")]
    pub listen_address: String,
    /// Web configuration file (TLS and basic auth), in the format of Prometheus' exporters.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_name = "PATH")]
    pub telemetry_path: String,
    /// Log level: debug, info, warn or error.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long = "log.format", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Run against a built-in simulator of a platform instead of a real account.
    #[arg(long, conflicts_with = "config_file")]
    pub demo: bool,
    #[command(flatten)]
    pub demo_options: DemoOptions,
}

/// The demo's flags: only `--demo` reads them.
pub const DEMO_FLAGS: &[&str] =
    &["--demo.platform", "--demo.scenario", "--demo.speed", "--demo.seed", "--demo.rate-limit", "--demo.start-hour"];

impl Cli {
    /// The command line, parsed (clap prints its own error and exits on a flag it cannot
    /// parse), with a demo flag given without `--demo` refused (see [`Cli::from_matches`]).
    pub fn from_command_line() -> Result<Cli, FlagError> {
        Cli::from_matches(&Cli::command().get_matches())
    }

    /// A demo flag given without `--demo` is refused, naming the flag and the fix: it would
    /// be ignored, and the user would believe, say, that `--demo.speed 60` applies to the
    /// account of `--config.file`. (Clap's `requires = "demo"` cannot say it: `--demo`
    /// conflicts with `--config.file`, and clap then excuses its absence.)
    pub fn from_matches(matches: &ArgMatches) -> Result<Cli, FlagError> {
        let cli = Cli::from_arg_matches(matches).unwrap_or_else(|e| e.exit());
        if cli.demo {
            return Ok(cli);
        }
        let command = Cli::command();
        let given = command.get_arguments().find_map(|arg| {
            let flag = format!("--{}", arg.get_long()?);
            let on_the_command_line = matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine);
            DEMO_FLAGS.iter().find(|f| **f == flag).filter(|_| on_the_command_line)
        });
        match given {
            None => Ok(cli),
            Some(flag) if cli.config_file.is_some() => Err(FlagError::new(
                flag,
                format!("only the demo reads it, and --config.file polls a real account: drop {flag}, or run --demo without --config.file"),
            )),
            Some(flag) => Err(FlagError::new(flag, format!("only the demo reads it: add --demo, or drop {flag}"))),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct DemoOptions {
    /// Platform the demo simulates: movidesk, chatwoot or rocketchat.
    #[arg(long = "demo.platform", default_value = "movidesk", value_name = "NAME")]
    pub platform: String,
    /// Demo scenario: normal (a working day), peak (agents go offline while arrivals rise) or
    /// spike (a sharper one from minute 7: pages within 15 minutes at speed 1).
    #[arg(long = "demo.scenario", default_value = "normal", value_name = "NAME")]
    pub scenario: String,
    /// How many times faster than real time the simulated day runs.
    #[arg(long = "demo.speed", default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,
    /// Seed of the simulated contact centre.
    #[arg(long = "demo.seed", default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Requests per simulated minute the simulated API allows, and the exporter's budget:
    /// 60 by default, more than Movidesk's real 10, so that the demo is ready in seconds
    /// (10 plays Movidesk's limit). Above speed 1 it scales with the speed.
    #[arg(long = "demo.rate-limit", default_value_t = 60, value_name = "N")]
    pub rate_limit: u32,
    /// Local hour of the contact centre (UTC-3) at which the simulated day starts, the
    /// latest such hour up to now; by default, the current time.
    #[arg(long = "demo.start-hour", value_name = "H")]
    pub start_hour: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a platform's API simulator on its own.
    Simulate(SimulateArgs),
    /// Exit 0 if the URL answers 2xx (a container health check without curl).
    Healthcheck {
        /// The URL to ask.
        #[arg(long, default_value = "http://127.0.0.1:9877/-/healthy")]
        url: String,
        /// PEM file of the CA that signed the exporter's certificate (a private CA, with
        /// --web.config.file).
        #[arg(long = "ca-file", value_name = "PATH")]
        ca_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Platform whose API is served: movidesk, chatwoot or rocketchat.
    #[arg(long, default_value = "movidesk", value_name = "NAME")]
    pub platform: String,
    /// Address to listen on.
    #[arg(long = "listen-address", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen_address: String,
    /// Token the simulated API accepts.
    #[arg(long, default_value = "demo-token", env = "CHAT_EXPORTER_SIMULATOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Scenario: normal (a working day), peak (agents go offline while arrivals rise) or spike
    /// (a sharper one, from minute 7 to 47).
    #[arg(long, default_value = "normal", value_name = "NAME")]
    pub scenario: String,
    /// How many times faster than real time the simulated day runs.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,
    /// Seed of the simulated contact centre.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Requests per minute per token (or per route, where the platform limits per route);
    /// 0 turns the limit off.
    #[arg(long = "rate-limit", default_value_t = 10, value_name = "N")]
    pub rate_limit: u32,
    /// How long a token is blocked once over the limit.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lockout: std::time::Duration,
}

/// The addresses to try, in order. Prometheus-style ":9877" means every interface: IPv6
/// and IPv4 (`[::]`, dual-stack on Linux), then IPv4 alone where IPv6 is off. Host names
/// are resolved.
pub fn parse_listen_address(value: &str) -> Result<Vec<SocketAddr>, FlagError> {
    let invalid = || FlagError::new("--web.listen-address", format!("'{value}' is not HOST:PORT or :PORT"));
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        return Ok(vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))]);
    }
    use std::net::ToSocketAddrs as _;
    let addrs: Vec<SocketAddr> = value.to_socket_addrs().map_err(|_| invalid())?.collect();
    if addrs.is_empty() {
        return Err(invalid());
    }
    Ok(addrs)
}

/// The log filter `--log.level LEVEL` sets: the exporter's own lines from that level up,
/// the libraries' from warn up.
pub fn log_filter(level: &str) -> String {
    format!("warn,chat_exporter={level}")
}

/// A flag's value that cannot be used: one line naming the flag and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct FlagError {
    pub flag: &'static str,
    pub message: String,
}

impl FlagError {
    pub fn new(flag: &'static str, message: impl Into<String>) -> Self {
        FlagError { flag, message: message.into() }
    }
}

/// Paths the exporter serves itself, which the telemetry path must not take.
pub const RESERVED_PATHS: &[&str] = &["/", "/-/healthy", "/-/ready"];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, FlagError> {
        let matches = Cli::command().try_get_matches_from(std::iter::once("chat_exporter").chain(args.iter().copied()));
        Cli::from_matches(&matches.expect("clap parses these"))
    }

    /// Every `--demo.*` flag is in `DEMO_FLAGS`, so none can be ignored silently.
    #[test]
    fn every_demo_flag_is_known() {
        let command = Cli::command();
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| l.starts_with("demo."))
            .map(|l| format!("--{l}"))
            .collect();
        assert_eq!(longs, DEMO_FLAGS, "DEMO_FLAGS lists the demo's flags in order");
    }

    #[test]
    fn a_demo_flag_without_the_demo_is_refused_with_the_fix() {
        let e = parse(&["--demo.speed", "60", "--config.file", "e.toml"]).unwrap_err();
        assert_eq!(e.flag, "--demo.speed");
        assert!(e.to_string().contains("drop --demo.speed, or run --demo without --config.file"), "{e}");
        let e = parse(&["--demo.rate-limit", "600"]).unwrap_err();
        assert_eq!(e.to_string(), "--demo.rate-limit: only the demo reads it: add --demo, or drop --demo.rate-limit");
        // Their defaults are no flag given.
        assert!(parse(&["--config.file", "e.toml"]).is_ok());
        assert!(parse(&["--demo", "--demo.speed", "60", "--demo.platform", "chatwoot"]).is_ok());
    }
}
