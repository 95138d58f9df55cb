//! 10,000 `http` jobs through a real daemon (16 workers) against a local server that
//! answers 200 at once; prints jobs/s. Run: `cargo bench --bench http`.

#[path = "support/mod.rs"]
mod support;

use jobd::clock::{Clock, SystemClock};
use jobd::config::{Config, ConfigSource};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::Registry;
use jobd::job::NewJob;
use jobd::store::OpenOptions;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const JOBS: usize = 10_000;
const WORKERS: usize = 16;

fn main() {
    let base = support::answer_200_server();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/s.sock\"\nworkers = {WORKERS}\n\
         [endpoints.bench]\nbase_url = \"{base}\"\n",
        db = dir.path().join("jobs.db").display(),
        data = dir.path().join("data").display(),
    );
    let config = Config::from_toml(&text, "bench").unwrap();
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            NewJob::new(
                "http",
                json!({"endpoint": "bench", "path": "/usage", "json": {"i": i}}),
            )
        })
        .collect();
    // Enqueue straight into the store first, then time the daemon draining it (--once).
    let mut db = jobd::store::open(
        &config.daemon.database,
        &OpenOptions {
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    db.write(|tx| tx.enqueue(&jobs, SystemClock.now_ms()))
        .unwrap();
    drop(db);
    let started = Instant::now();
    let daemon = start(&config);
    let (_, counters) = daemon.wait().unwrap();
    let elapsed = started.elapsed();
    if counters.succeeded as usize != JOBS {
        // Retried jobs wait out their backoff beyond this --once run: say why they failed.
        let db = jobd::store::open(&config.daemon.database, &OpenOptions::default()).unwrap();
        let filter = jobd::store::JobFilter {
            state: Some(jobd::job::JobState::Retrying),
            limit: 3,
            ..Default::default()
        };
        for job in db.list(&filter).unwrap() {
            println!(
                "retrying job {}: {}",
                job.id,
                job.last_error.unwrap_or_default()
            );
        }
    }
    println!("{counters:?}");
    println!(
        "http: {JOBS} jobs, {WORKERS} workers, synchronous=full: {:.2}s, {:.0} jobs/s",
        elapsed.as_secs_f64(),
        JOBS as f64 / elapsed.as_secs_f64()
    );
}

fn start(config: &Config) -> Daemon {
    Daemon::start(
        config.clone(),
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: ConfigSource::Defaults,
            once: true,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap()
}
