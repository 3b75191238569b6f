use std::process::ExitCode;

use chat_exporter::app;
use chat_exporter::cli::{Cli, Command};

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::new(chat_exporter::cli::log_filter(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    // A panic is logged like everything else (one JSON object with --log.format json), not
    // as the default hook's free text, which a log pipeline parsing JSON would drop.
    std::panic::set_hook(Box::new(|info| {
        let message = app::panic_message(info.payload());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(panic = message, location, thread, backtrace = %backtrace, "panic");
        } else {
            tracing::error!(panic = message, location, thread, "panic");
        }
    }));
}

fn main() -> ExitCode {
    chat_exporter::memory::limit_arenas();
    let mut cli = match Cli::from_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("chat_exporter: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cli.log_level, &cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat_exporter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command.take() {
            Some(Command::Simulate(args)) => app::simulate(&args).await,
            Some(Command::Healthcheck { url, ca_file }) => app::healthcheck(&url, ca_file.as_deref()).await,
            None => app::run(cli).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chat_exporter: {message}");
            ExitCode::FAILURE
        }
    }
}
