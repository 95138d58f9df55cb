//! `jobd`: the daemon. Reads the configuration, refuses a bad one before anything runs,
//! then runs until SIGTERM (or, with `--once`, until nothing is ready).

use clap::Parser;
use jobd::clock::SystemClock;
use jobd::config::{Config, ConfigSource, LogFormat};
use jobd::daemon::dispatcher::Exit;
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::notify::DeadLetters;
use jobd::handlers::Registry;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "jobd",
    version,
    about = "A durable job-queue worker daemon backed by SQLite"
)]
struct Args {
    /// Config file (default: $JOBD_CONFIG, else /etc/jobd/jobd.toml if it exists, else built-in defaults).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Process every job that is ready now, then exit.
    #[arg(long)]
    once: bool,
    /// Log format, overriding the config's log.format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() {
    let args = Args::parse();
    let source = ConfigSource::locate(args.config.as_deref());
    // The daemon also reads every secret now, so a missing one is refused before anything runs.
    let config = match Config::load_for_daemon(&source) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("jobd: {e}");
            std::process::exit(2);
        }
    };
    if args.check_config {
        println!("config {}: ok", source.describe());
        return;
    }
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    jobd::logging::init(&config.log.level, format);
    tracing::info!("configuration: {}", source.describe());
    let daemon = match Daemon::start(
        config,
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: source,
            once: args.once,
            handle_signals: true,
            hooks: vec![Arc::new(DeadLetters)],
        },
    ) {
        Ok(daemon) => daemon,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("jobd: {e}");
            std::process::exit(1);
        }
    };
    match daemon.wait() {
        Ok((Exit::Clean, counters)) => {
            tracing::info!(
                "stopped: {} succeeded, {} retried, {} dead since start",
                counters.succeeded,
                counters.retried,
                counters.dead
            );
        }
        Ok((Exit::Forced, _)) => std::process::exit(1),
        Err(e) => {
            tracing::error!("stopped on an error: {e}");
            std::process::exit(1);
        }
    }
}
