//! `jobd`: the daemon. Reads the configuration, refuses a bad one before anything runs,
//! then runs until SIGTERM (or, with `--once`, until nothing is ready).

use clap::Parser;
use jobd::clock::{SharedClock, SystemClock};
use jobd::config::{ConfigSource, LogFormat};
use jobd::daemon::cluster::DaemonLock;
use jobd::daemon::config_check::ConfigLoader;
use jobd::daemon::dispatcher::Exit;
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::notify::DeadLetters;
use jobd::handlers::Registry;
use jobd::ingest::{self, spool::Spool, Ingest, SpoolHooks};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "jobd",
    version = jobd::store::version_text(),
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
    // The same check as every reload: every secret is read now, and a watch's settings
    // (which go into every job it makes) are refused now, not at the first file.
    let config = match ConfigLoader::new(source.clone(), Arc::new(Registry::builtin())).load() {
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
    let fail = |e: String| -> ! {
        tracing::error!("cannot start: {e}");
        eprintln!("jobd: {e}");
        std::process::exit(1);
    };
    // The database lock first: a second daemon on the same database is told so before it
    // touches the spool or the socket. Then the spool, watched folders and socket: a
    // folder that cannot be created or a socket another daemon answers on refuses the
    // start before anything runs.
    // On PostgreSQL, the node name instead: two daemons with one name are refused.
    let clock: SharedClock = Arc::new(SystemClock);
    let lock = DaemonLock::acquire(&config, clock.clone()).unwrap_or_else(|e| fail(e));
    let spool = Spool::open(&config.daemon.data_dir, clock.clone()).unwrap_or_else(|e| {
        fail(format!(
            "daemon.data_dir: cannot create the spool under {}: {e}",
            config.daemon.data_dir.display()
        ))
    });
    let prepared = if args.once {
        None
    } else {
        Some(ingest::prepare(&config).unwrap_or_else(|e| fail(e)))
    };
    let daemon = match Daemon::start_locked(
        config.clone(),
        DaemonOptions {
            clock: clock.clone(),
            registry: Registry::builtin(),
            config_source: source,
            once: args.once,
            handle_signals: true,
            hooks: vec![
                Arc::new(DeadLetters),
                Arc::new(SpoolHooks::new(spool.clone())),
            ],
        },
        lock,
    ) {
        Ok(daemon) => daemon,
        Err(e) => fail(e.to_string()),
    };
    let ingest = prepared.map(|prepared| {
        let client = daemon.client();
        Ingest::start(prepared, &config, client.clone(), clock, spool).unwrap_or_else(|e| {
            client.kill_all_commands();
            fail(e)
        })
    });
    let result = daemon.wait();
    if let Some(ingest) = ingest {
        ingest.stop();
    }
    match result {
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
