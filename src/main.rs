use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use chat_exporter::cli::{parse_listen_address, Cli, Command, DemoOptions, SimulateArgs, RESERVED_PATHS};
use chat_exporter::config::{self, MovideskConfig, Secret};
use chat_exporter::exporter::Exporter;
use chat_exporter::http::web as web_config;
use chat_exporter::http::{router, AppState};
use chat_exporter::self_metrics::SelfMetrics;
use chat_exporter::simulator::{self, SimOptions};
use chat_exporter::sources::movidesk::MovideskSource;
use chat_exporter::state::StateStore;

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,chat_exporter={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, &cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chat_exporter: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match &cli.command {
        Some(Command::Simulate(args)) => return simulate(args).await,
        Some(Command::Healthcheck { url }) => return healthcheck(url).await,
        None => {}
    }
    if !cli.telemetry_path.starts_with('/') || RESERVED_PATHS.contains(&cli.telemetry_path.as_str()) {
        return Err(format!(
            "--web.telemetry-path: '{}' must start with '/' and be none of {}",
            cli.telemetry_path,
            RESERVED_PATHS.join(", ")
        ));
    }
    let addrs = parse_listen_address(&cli.listen_address)?;
    let web = web_config::load_optional(cli.web_config_file.as_deref()).map_err(|e| e.to_string())?;
    // The demo's simulator is new at each start, so a state file would not match it.
    let (movidesk, state, _simulator) = if cli.demo {
        let (cfg, sim) = start_demo_simulator(&cli.demo_options).await?;
        (cfg, None, Some(sim))
    } else {
        let cfg = config::load(cli.config_file.as_deref()).map_err(|e| e.to_string())?;
        let state = cfg.state.enabled.then(|| StateStore::new(&cfg.state.path));
        if let Some(store) = &state {
            store.prepare().map_err(|e| format!("state.path: {}: {e}", store.path().display()))?;
        }
        (cfg.movidesk, state, None)
    };
    let mut bind_error = None;
    let mut listener = None;
    for addr in &addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => bind_error = Some(format!("--web.listen-address: cannot listen on {addr}: {e}")),
        }
    }
    let listener = listener.ok_or_else(|| bind_error.unwrap_or_default())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;

    let metrics = SelfMetrics::new();
    let description = format!("Movidesk at {}", movidesk.base_url);
    let poll_interval = movidesk.poll_interval;
    let source = MovideskSource::new(movidesk, metrics.clone());
    let mut exporter = Exporter::new(source, metrics, poll_interval);
    if let Some(store) = state {
        let (resumed, warning) = exporter.with_state(store).map_err(|e| format!("state.path: {e}"))?;
        exporter = resumed;
        if let Some(warning) = warning {
            tracing::error!("{warning}");
        }
    }
    let state = AppState {
        exposition: exporter.exposition(),
        health: exporter.health(),
        telemetry_path: cli.telemetry_path.clone(),
        source_description: description,
    };
    let refresher = tokio::spawn(exporter.refresher(Duration::from_secs(15)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(exporter.run(wait_for(stop_rx.clone())));

    let scheme = web.as_ref().map_or("http", |w| w.scheme());
    // Every interface: say the address a browser on this machine can open.
    let shown = if bound.ip().is_unspecified() { format!("localhost:{}", bound.port()) } else { bound.to_string() };
    println!("chat_exporter listening on {scheme}://{shown}{}", cli.telemetry_path);
    tracing::info!(address = %bound, path = %cli.telemetry_path, "listening");
    let server = web_config::serve(listener, router(state), web, wait_for(stop_rx));
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    server.await.map_err(|e| e.to_string())?;
    let _ = poller.await;
    refresher.abort();
    signals.abort();
    Ok(())
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn start_demo_simulator(demo: &DemoOptions) -> Result<(MovideskConfig, simulator::RunningSimulator), String> {
    let scenario = demo.scenario.parse().map_err(|e| format!("--demo.scenario: {e}"))?;
    if !(demo.speed > 0.0 && demo.speed.is_finite()) {
        return Err("--demo.speed: must be a positive number".to_string());
    }
    if demo.rate_limit == 0 {
        return Err("--demo.rate-limit: must be at least 1".to_string());
    }
    let token = "demo-token";
    let options = SimOptions {
        seed: demo.seed,
        scenario,
        start: chrono::Utc::now(),
        token: token.to_string(),
        rate_limit: Some(demo.rate_limit),
        speed: Some(demo.speed),
        ..SimOptions::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("simulator: {e}"))?;
    let sim = simulator::serve(listener, options).await.map_err(|e| format!("simulator: {e}"))?;
    println!("simulator listening on {} (ground truth at {}/_sim/truth)", sim.url(), sim.url());
    let mut cfg = MovideskConfig::new(sim.movidesk_url(), Secret::new(token));
    cfg.requests_per_minute = demo.rate_limit;
    // Each poll costs one request, plus a reconciliation every tenth and the roster each
    // minute: polling at 2/3 of the budget leaves room for both.
    cfg.poll_interval = Duration::from_secs_f64((90.0 / demo.rate_limit as f64).max(0.5));
    cfg.roster_interval = Duration::from_secs(60);
    Ok((cfg, sim))
}

async fn simulate(args: &SimulateArgs) -> Result<(), String> {
    let scenario = args.scenario.parse().map_err(|e| format!("--scenario: {e}"))?;
    let options = SimOptions {
        seed: args.seed,
        scenario,
        start: chrono::Utc::now(),
        token: args.token.clone(),
        rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        lockout: args.lockout,
        speed: Some(args.speed),
        ..SimOptions::default()
    };
    let listener = TcpListener::bind(&args.listen_address)
        .await
        .map_err(|e| format!("--listen-address: cannot listen on {}: {e}", args.listen_address))?;
    let sim = simulator::serve(listener, options).await.map_err(|e| e.to_string())?;
    println!("simulator listening on {} (Movidesk API at {})", sim.url(), sim.movidesk_url());
    shutdown_signal().await;
    Ok(())
}

async fn healthcheck(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url}: HTTP {}", r.status())),
        Err(e) => Err(format!("{url}: {}", e.without_url())),
    }
}
