//! Wiring: configuration → source → poller → HTTP server, for a real account or the demo,
//! and the two subcommands. Every error that stops the start is one line naming the flag
//! or key at fault.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::{parse_listen_address, Cli, DemoOptions, FlagError, SimulateArgs, RESERVED_PATHS};
use crate::config::{self, ConfigError};
use crate::http::web as web_config;
use crate::http::{router, AppState};
use crate::platforms::{self, Config};
use crate::poller::Poller;
use crate::self_metrics::SelfMetrics;
use crate::simulator::{self, RunningSimulator, SimOptions};
use crate::state::StateStore;

/// A relative path names the directory it is relative to: a service started from `/`
/// reads `chat_exporter_state.json` as `/chat_exporter_state.json`.
fn relative_to_working_directory(path: &std::path::Path) -> String {
    match std::env::current_dir() {
        Ok(dir) if path.is_relative() => format!(" (relative to the working directory {})", dir.display()),
        _ => String::new(),
    }
}

/// Why the exporter, the simulator or the health check stopped, as one line that names
/// the flag or key at fault (`main` prints it).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    WebConfig(#[from] web_config::WebConfigError),
    #[error(
        "state.path: {}{}: {source}; set state.path to a writable file, or [state] enabled = false to run without one",
        path.display(),
        relative_to_working_directory(path)
    )]
    StateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("state.path: {0}")]
    State(#[from] crate::state::StateError),
    #[error("simulator: {0}")]
    Simulator(#[source] std::io::Error),
    /// The server stopped with an error, or its address could not be read.
    #[error("{0}")]
    Server(#[from] std::io::Error),
    #[error("the {task} task ended unexpectedly ({how}); exiting so that the service manager restarts the exporter")]
    TaskEnded { task: &'static str, how: String },
    #[error("{url}: {detail}")]
    Unhealthy { url: String, detail: String },
    #[error("{0}")]
    HealthcheckClient(#[source] reqwest::Error),
}

/// Runs the exporter until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> Result<(), AppError> {
    let stop_signals = Signals::register()?;
    if !cli.telemetry_path.starts_with('/') || RESERVED_PATHS.contains(&cli.telemetry_path.as_str()) {
        return Err(FlagError::new(
            "--web.telemetry-path",
            format!("'{}' must start with '/' and be none of {}", cli.telemetry_path, RESERVED_PATHS.join(", ")),
        )
        .into());
    }
    let addrs = parse_listen_address(&cli.listen_address)?;
    let web = web_config::load_optional(cli.web_config_file.as_deref())?;
    // The demo's simulator is new at each start, so a state file would not match it.
    let (cfg, _simulator) = if cli.demo {
        let (cfg, sim) = start_demo(&cli.demo_options).await?;
        (cfg, Some(sim))
    } else {
        (platforms::load(cli.config_file.as_deref())?, None)
    };
    let mut state = (cfg.state.enabled && !cli.demo).then(|| StateStore::new(&cfg.state.path));
    if let Some(store) = &mut state {
        store.prepare().map_err(|source| AppError::StateDir { path: store.path().to_path_buf(), source })?;
        store.lock()?;
    }
    log_configuration(&cfg, state.as_ref(), cli.demo);
    if !cli.demo {
        for warning in cfg.source.warnings(&cfg.polling) {
            tracing::warn!("{warning}");
        }
    }
    let listener = bind(&addrs).await?;
    let bound = listener.local_addr()?;

    let metrics = SelfMetrics::new();
    let source = cfg.source.build(&cfg.polling, metrics.clone());
    let mut poller =
        Poller::new(source, metrics, cfg.polling.poll_interval).with_series_retention(cfg.polling.series_retention);
    if let Some(store) = state {
        let (resumed, warning) = poller.with_state(store)?;
        poller = resumed;
        if let Some(warning) = warning {
            tracing::error!("{warning}");
        }
    }
    let app = AppState {
        exposition: poller.exposition(),
        health: poller.health(),
        telemetry_path: cli.telemetry_path.clone(),
        source_description: cfg.source.describe(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (refreshing, stopped) = (poller.refresher(Duration::from_secs(15)), wait_for(stop_rx.clone()));
    let refresher = tokio::spawn(async move {
        tokio::select! {
            _ = refreshing => {}
            _ = stopped => {}
        }
    });
    let polling = tokio::spawn(poller.run(wait_for(stop_rx.clone())));

    let scheme = web.as_ref().map_or("http", |w| w.scheme());
    // Every interface: say the address a browser on this machine can open.
    let shown = if bound.ip().is_unspecified() { format!("localhost:{}", bound.port()) } else { bound.to_string() };
    println!("chat_exporter listening on {scheme}://{shown}{}", cli.telemetry_path);
    tracing::info!(address = %bound, path = %cli.telemetry_path, platform = cfg.platform.name(), "listening");
    let server = web_config::serve(listener, router(app), web, wait_for(stop_rx.clone()));
    let signals = tokio::spawn(async move {
        stop_signals.stop().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let outcome = serve_while_running(server, vec![("poller", polling), ("refresher", refresher)], stop_rx).await;
    signals.abort();
    outcome
}

/// One line at start says what was configured, so that a log shows what the values that
/// follow are of. The source's description names the platform's address and account, and
/// never a secret (tokens are not part of it).
fn log_configuration(cfg: &Config, state: Option<&StateStore>, demo: bool) {
    let state_file = match state {
        Some(store) => store.path().display().to_string(),
        None if demo => "none (the demo keeps no state)".to_string(),
        None => "none (state.enabled = false)".to_string(),
    };
    tracing::info!(
        platform = cfg.platform.name(),
        source = %cfg.source.describe(),
        poll_interval = %humantime::format_duration(cfg.polling.poll_interval),
        requests_per_minute = cfg.polling.requests_per_minute,
        state_file = %state_file,
        demo,
        "configured"
    );
}

/// Serves until `server` ends (after a stop signal), then waits for the background tasks,
/// which end on the same signal (the poller finishes saving its poll). They run for the
/// process' whole life: one that ends before the stop (a panic, or a return nobody asked
/// for) would leave the values frozen while the process looks healthy. So its end is an
/// error at once, and the process exits non-zero for systemd or Kubernetes to restart it.
pub async fn serve_while_running<S>(
    server: S,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AppError>
where
    S: std::future::Future<Output = std::io::Result<()>>,
{
    let (names, handles): (Vec<&str>, Vec<_>) = tasks.into_iter().unzip();
    let mut ended = futures_util::future::select_all(handles);
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => {
            futures_util::future::join_all(ended.into_inner()).await;
            Ok(served?)
        }
        (ended, index, others) = &mut ended => {
            if *stopping.borrow() {
                let served = server.await;
                futures_util::future::join_all(others).await;
                Ok(served?)
            } else {
                let how = match ended {
                    Ok(()) => "returned".to_string(),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic().as_ref())),
                    Err(e) => e.to_string(),
                };
                let error = AppError::TaskEnded { task: names[index], how };
                tracing::error!("{error}");
                Err(error)
            }
        }
    }
}

/// A panic's message, when it is text.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The first address that can be bound, or the last error.
async fn bind(addrs: &[std::net::SocketAddr]) -> Result<TcpListener, FlagError> {
    let mut error = FlagError::new("--web.listen-address", "no address to listen on");
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => error = FlagError::new("--web.listen-address", format!("cannot listen on {addr}: {e}")),
        }
    }
    Err(error)
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The signals the exporter answers, registered as soon as it starts (a signal that comes
/// before its handler takes the default action, which ends the process): SIGTERM and
/// Ctrl-C stop it; SIGHUP, which would end it silently, is logged and ignored, since
/// nothing is reloaded (the configuration is read at start; TLS certificates are re-read
/// when they change on disk).
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn register() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals { terminate: signal(SignalKind::terminate())?, hangup: signal(SignalKind::hangup())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for SIGTERM or Ctrl-C.
    pub async fn stop(mut self) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = self.terminate.recv() => return,
                _ = self.hangup.recv() => tracing::warn!(
                    "SIGHUP ignored: the configuration is read at start (restart the exporter to change it); \
                     TLS certificates are re-read when they change on disk"
                ),
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn platform(flag: &'static str, name: &str) -> Result<&'static dyn platforms::Platform, FlagError> {
    platforms::find(name)
        .ok_or_else(|| FlagError::new(flag, format!("unknown platform '{name}' (expected {})", platforms::names())))
}

/// Starts the simulator the demo polls, and the configuration that points at it.
async fn start_demo(demo: &DemoOptions) -> Result<(Config, RunningSimulator), AppError> {
    let platform = platform("--demo.platform", &demo.platform)?;
    let scenario = demo.scenario.parse().map_err(|e| FlagError::new("--demo.scenario", e))?;
    if !(demo.speed > 0.0 && demo.speed.is_finite() && demo.speed <= 10_000.0) {
        return Err(FlagError::new("--demo.speed", "must be a number above 0 and at most 10000").into());
    }
    if demo.rate_limit == 0 {
        return Err(FlagError::new("--demo.rate-limit", "must be at least 1").into());
    }
    let start = match demo.start_hour {
        None => chrono::Utc::now(),
        Some(hour) if hour < 24 => latest_local_hour(chrono::Utc::now(), hour),
        Some(_) => return Err(FlagError::new("--demo.start-hour", "must be an hour from 0 to 23").into()),
    };
    // The limit is per simulated minute: a faster day gets as many requests per day.
    let per_real_minute = (f64::from(demo.rate_limit) * demo.speed.max(1.0)).min(1_000_000.0) as u32;
    let token = "demo-token";
    let options = SimOptions {
        seed: demo.seed,
        scenario,
        start,
        token: token.to_string(),
        rate_limit: Some(per_real_minute),
        speed: Some(demo.speed),
        ..SimOptions::new(platform.facade())
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(AppError::Simulator)?;
    let sim = simulator::serve(listener, options).await.map_err(AppError::Simulator)?;
    println!(
        "simulator listening on {} ({} API at {}, ground truth at {}/_sim/truth)",
        sim.url(),
        platform.title(),
        sim.api_url(),
        sim.url()
    );
    let source = platform.load(sim.section())?;
    let polling = config::Polling {
        requests_per_minute: per_real_minute,
        // Each poll costs a request or two, plus a reconciliation every tenth and the
        // roster each minute: polling at 2/3 of the budget leaves room for both.
        poll_interval: Duration::from_secs_f64((90.0 / per_real_minute as f64).max(0.5)),
        roster_interval: Duration::from_secs(60),
        ..platform.polling_defaults()
    };
    let cfg = Config { platform, source, polling, state: config::StateConfig { enabled: false, ..Default::default() } };
    Ok((cfg, sim))
}

/// The latest time, up to `now`, when the simulated contact centre's clock (UTC-3) read
/// `hour`:00.
fn latest_local_hour(now: chrono::DateTime<chrono::Utc>, hour: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Duration as Span, Timelike};
    let offset = Span::hours(simulator::world::UTC_OFFSET_HOURS);
    let local = now + offset;
    let at_hour = local
        .with_hour(hour)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0));
    let at_hour = at_hour.unwrap_or(local);
    let at_hour = if at_hour > local { at_hour - Span::days(1) } else { at_hour };
    at_hour - offset
}

/// `chat_exporter simulate`: a platform's API simulator on its own.
pub async fn simulate(args: &SimulateArgs) -> Result<(), AppError> {
    let signals = Signals::register()?;
    let platform = platform("--platform", &args.platform)?;
    let scenario = args.scenario.parse().map_err(|e| FlagError::new("--scenario", e))?;
    if !(args.speed > 0.0 && args.speed.is_finite() && args.speed <= 10_000.0) {
        return Err(FlagError::new("--speed", "must be a number above 0 and at most 10000").into());
    }
    let options = SimOptions {
        seed: args.seed,
        scenario,
        start: chrono::Utc::now(),
        token: args.token.clone(),
        rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        lockout: args.lockout,
        speed: Some(args.speed),
        ..SimOptions::new(platform.facade())
    };
    let listener = TcpListener::bind(&args.listen_address)
        .await
        .map_err(|e| FlagError::new("--listen-address", format!("cannot listen on {}: {e}", args.listen_address)))?;
    let sim = simulator::serve(listener, options).await?;
    println!("simulator listening on {} ({} API at {})", sim.url(), platform.title(), sim.api_url());
    signals.stop().await;
    Ok(())
}

/// `chat_exporter healthcheck`: exit 0 if the URL answers 2xx. A failure names its
/// underlying cause (refused, TLS, timeout...), not only "error sending request".
pub async fn healthcheck(url: &str, ca_file: Option<&std::path::Path>) -> Result<(), AppError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| FlagError::new("--ca-file", format!("{}: {e}", path.display())))?;
        let not_pem = |e: &dyn std::fmt::Display| {
            FlagError::new("--ca-file", format!("{}: not a PEM certificate: {e}", path.display()))
        };
        use rustls::pki_types::pem::PemObject as _;
        let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not_pem(&e))?;
        if certificates.is_empty() {
            return Err(not_pem(&"no CERTIFICATE block").into());
        }
        let tls = TrustedCertificates::client_config(certificates).map_err(|e| not_pem(&e))?;
        builder = builder.use_preconfigured_tls(tls);
    }
    let client = builder.build().map_err(AppError::HealthcheckClient)?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(AppError::Unhealthy { url: url.to_string(), detail: format!("HTTP {}", r.status()) }),
        Err(e) => {
            let e = e.without_url();
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(&format!(": {c}"));
                cause = c.source();
            }
            Err(AppError::Unhealthy { url: url.to_string(), detail })
        }
    }
}

/// The certificates of `healthcheck --ca-file`, trusted as curl's `--cacert` trusts
/// them: as the CAs of the server's chain, and each as itself. A self-signed certificate
/// (`openssl req -x509`, which marks it a CA) is refused by webpki as the end of a chain
/// (`CaUsedAsEndEntity`), though the file names that very certificate: presented as is by
/// the server, it is trusted, its dates checked by webpki before that refusal, and its
/// names when it has DNS names (curl reads the subject's CN of one without them; the
/// handshake proves the server holds its key either way).
#[derive(Debug)]
struct TrustedCertificates {
    chains: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl TrustedCertificates {
    fn client_config(
        certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        let (_added, _unusable_as_ca) = roots.add_parsable_certificates(certificates.iter().cloned());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let chains = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let verifier = TrustedCertificates { chains, certificates };
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            .with_no_client_auth())
    }
}

impl rustls::client::danger::ServerCertVerifier for TrustedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let refusal = match self.chains.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => return Ok(verified),
            Err(refusal) => refusal,
        };
        let ca_as_end_entity = matches!(
            &refusal,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
                if other.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity)
        );
        if !ca_as_end_entity || !self.certificates.iter().any(|c| c == end_entity) {
            return Err(refusal);
        }
        let certificate = webpki::EndEntityCert::try_from(end_entity).map_err(|_| refusal.clone())?;
        let has_dns_names = certificate.valid_dns_names().next().is_some();
        match certificate.verify_is_valid_for_subject_name(server_name) {
            Err(_) if has_dns_names => Err(rustls::CertificateError::NotValidForName.into()),
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chains.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::tests::{CapturedLog, Scripted, ScriptedSource};

    /// `--demo.start-hour`: the latest such hour of the contact centre's clock (UTC-3) up
    /// to now, yesterday's when today's is still to come.
    #[test]
    fn the_demo_starts_at_the_latest_local_hour_asked() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let now = at("2026-12-03T20:10:30Z"); // 17:10 local
        assert_eq!(latest_local_hour(now, 9), at("2026-12-03T12:00:00Z"));
        assert_eq!(latest_local_hour(now, 17), at("2026-12-03T20:00:00Z"));
        assert_eq!(latest_local_hour(now, 18), at("2026-12-02T21:00:00Z"));
        assert_eq!(latest_local_hour(now, 0), at("2026-12-03T03:00:00Z"));
    }

    fn poller_that_panics_on_its_second_poll(metrics: &SelfMetrics) -> Poller {
        let source = ScriptedSource::new([Scripted::Answer(Default::default()), Scripted::Panic], metrics);
        Poller::new(Box::new(source), metrics.clone(), Duration::from_millis(10))
    }

    /// A poller that dies (here: its source panics) ends the exporter with an error, so
    /// that the process exits non-zero and its service manager restarts it, instead of
    /// serving frozen values from a process that looks healthy.
    #[tokio::test]
    async fn a_poller_that_panics_ends_the_exporter_with_an_error() {
        let metrics = SelfMetrics::new();
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let polling = tokio::spawn(poller_that_panics_on_its_second_poll(&metrics).run(wait_for(stop_rx.clone())));
        let idle = tokio::spawn(std::future::pending::<()>());
        let server = std::future::pending::<std::io::Result<()>>();
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            serve_while_running(server, vec![("refresher", idle), ("poller", polling)], stop_rx),
        )
        .await
        .expect("the dead poller is noticed");
        let error = outcome.expect_err("a dead poller is an error");
        assert!(matches!(&error, AppError::TaskEnded { task: "poller", .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("poller task ended unexpectedly"), "{message}");
        assert!(message.contains("panicked: the scripted source panics"), "{message}");
    }

    /// A source failing for nine minutes is not one line in the log at the level the
    /// binary logs at by default (its filter, `--log.level`'s default): the failure, then
    /// reminders a minute later and at doubling intervals (1, 3 and 7 minutes in), each
    /// saying for how long it has failed.
    #[tokio::test(start_paused = true)]
    async fn a_failing_source_is_reminded_at_the_default_log_level() {
        use crate::source::SourceError;
        use clap::Parser as _;
        let default_level = Cli::try_parse_from(["chat_exporter"]).unwrap().log_level;
        let (log, _guard) =
            CapturedLog::filtered(tracing_subscriber::EnvFilter::new(crate::cli::log_filter(&default_level)));
        let every = Duration::from_secs(15);
        let failing = (0..=36).map(|_| Scripted::Fail(SourceError::Server { endpoint: "/chats", status: 503 }));
        let metrics = SelfMetrics::new();
        let script = std::iter::once(Scripted::Answer(Default::default())).chain(failing);
        let mut poller = Poller::new(Box::new(ScriptedSource::new(script, &metrics)), metrics, every);
        poller.poll_once().await.unwrap();
        for _ in 0..=36 {
            poller.poll_once().await.unwrap_err();
            tokio::time::advance(every).await;
        }
        let text = log.take().join("\n");
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 4, "the failure and three reminders in nine minutes:\n{text}");
        assert!(warnings[0].contains("poll failed") && warnings[0].contains("server_error"), "{text}");
        for (reminder, seconds) in warnings[1..].iter().zip([60, 180, 420]) {
            assert!(reminder.contains("the source still fails"), "{reminder}");
            assert!(reminder.contains(&format!("failing_for_seconds={seconds}")), "{reminder}");
        }
        assert!(!text.contains("DEBUG"), "nothing below info by default:\n{text}");
    }

    /// A stop asked for is not a death: the poller ends first, then the server, and all is well.
    #[tokio::test]
    async fn a_poller_stopped_on_purpose_is_no_error() {
        let metrics = SelfMetrics::new();
        let source = ScriptedSource::new([], &metrics);
        let poller = Poller::new(Box::new(source), metrics, Duration::from_millis(10));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let polling = tokio::spawn(poller.run(wait_for(stop_rx.clone())));
        let server_stop = wait_for(stop_rx.clone());
        let server = async move {
            server_stop.await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        };
        stop_tx.send(true).unwrap();
        serve_while_running(server, vec![("poller", polling)], stop_rx).await.unwrap();
    }
}
