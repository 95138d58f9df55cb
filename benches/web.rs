//! Web page benchmarks: the overview's render time (HTML and JSON) and a few Jobs
//! searches over HTTP with a large table, and the drain rate with and without an open
//! page that follows its event stream like htmx does. Prints figures; asserts nothing.
//!
//! cargo bench --bench web -- [--rows N] [--renders N] [--drain N] [--only render|drain]

use clap::Parser;
use jobd::clock::{Clock, SystemClock};
use jobd::config::{Config, ConfigSource, Synchronous};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::Registry;
use jobd::job::{Completion, NewJob, Resolution};
use jobd::store::{ClaimSpec, OpenOptions, Store};
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Finished rows in the table (1% of them dead).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Renders timed per route.
    #[arg(long, default_value_t = 20)]
    renders: usize,
    /// Jobs drained with and without an open page.
    #[arg(long, default_value_t = 20_000)]
    drain: usize,
    #[arg(long)]
    only: Option<String>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let runs = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    println!(
        "machine: {} cores; rows={} renders={} drain={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.rows,
        args.renders,
        args.drain
    );
    if runs("render") {
        render(&args);
    }
    if runs("drain") {
        let quiet = drain(&args, false);
        let watched = drain(&args, true);
        println!(
            "drain: {} noop jobs: {quiet:.0} jobs/s with no page open, {watched:.0} jobs/s with \
             the overview open and following /events ({:+.1}%)",
            args.drain,
            (watched / quiet - 1.0) * 100.0
        );
    }
}

fn open(path: &Path) -> Box<dyn Store> {
    jobd::store::open(
        path,
        &OpenOptions {
            synchronous: Synchronous::Normal,
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// `n` finished jobs through the queue's own transitions, one in a hundred dead.
fn seed(db: &mut dyn Store, n: usize) {
    let now = SystemClock.now_ms() - 1_800_000;
    let mut left = n;
    while left > 0 {
        let take = left.min(10_000);
        db.write(|tx| {
            let jobs: Vec<NewJob> = (0..take)
                .map(|i| NewJob::new("noop", json!({"n": i, "customer": format!("c{}", i % 997)})))
                .collect();
            tx.enqueue(&jobs, now)?;
            let claimed = tx.claim(
                &ClaimSpec {
                    limit: take,
                    limited_queues: vec![],
                    destinations: vec![],
                },
                "seed:0",
                now + 60_000,
                now,
            )?;
            for job in claimed {
                let resolution = if job.id % 100 == 0 {
                    Resolution::Dead {
                        error: format!("upstream answered 4{:02}", job.id % 7),
                        follow_ups: vec![],
                    }
                } else {
                    Resolution::Succeeded {
                        follow_ups: vec![],
                        sync_marks: vec![],
                    }
                };
                tx.complete(
                    &Completion {
                        job_id: job.id,
                        parent_id: job.parent_id,
                        attempt: job.attempts,
                        worker: "seed:0".into(),
                        started_at: now,
                        finished_at: now + (job.id % 1_800_000),
                        resolution,
                        detail: None,
                    },
                    now,
                )?;
            }
            Ok(())
        })
        .unwrap();
        left -= take;
    }
}

fn start(dir: &Path) -> Daemon {
    let mut config = Config::default();
    config.daemon.database = dir.join("jobs.db");
    config.daemon.data_dir = dir.join("var");
    config.daemon.socket = dir.join("var/jobd.sock");
    config.daemon.workers = 4;
    config.daemon.synchronous = Synchronous::Normal;
    config.web.listen = Some("127.0.0.1:0".parse().unwrap());
    Daemon::start(
        config,
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: ConfigSource::Defaults,
            once: false,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap()
}

fn render(args: &Args) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    seed(&mut *open(&dir.path().join("jobs.db")), args.rows);
    println!(
        "  (seeded {} rows in {:.1}s)",
        args.rows,
        started.elapsed().as_secs_f64()
    );
    let daemon = start(dir.path());
    let base = format!("http://{}", daemon.web_address().unwrap());
    let client = reqwest::blocking::Client::new();
    for route in [
        "/",
        "/api/overview",
        "/dead",
        "/jobs",
        "/jobs?state=dead",
        "/jobs?state=queued",
        "/jobs?q=c996",
        "/jobs?kind=noop&before=500000",
    ] {
        let mut samples: Vec<Duration> = (0..args.renders)
            .map(|_| {
                let start = Instant::now();
                let response = client.get(format!("{base}{route}")).send().unwrap();
                assert!(response.status().is_success(), "{route}");
                let _ = response.bytes().unwrap();
                start.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "render {route}: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            ms(samples[samples.len() / 2]),
            ms(samples[(samples.len() as f64 * 0.95) as usize % samples.len()]),
            ms(*samples.last().unwrap())
        );
    }
    daemon.client().shutdown();
    daemon.wait().unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Jobs per second draining `args.drain` noop jobs; with `watched`, a client holds
/// `/events` open and fetches the overview fragment on every event, as htmx would.
fn drain(args: &Args, watched: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    open(&dir.path().join("jobs.db"));
    let daemon = start(dir.path());
    let base = format!("http://{}", daemon.web_address().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let follower = watched.then(|| {
        let stop = stop.clone();
        let base = base.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .unwrap();
            let mut events = client.get(format!("{base}/events")).send().unwrap();
            let mut chunk = [0u8; 512];
            let mut refreshes = 0;
            while !stop.load(Ordering::Relaxed) {
                match events.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) if String::from_utf8_lossy(&chunk[..n]).contains("event: change") => {
                        let _ = client
                            .get(format!("{base}/fragments/overview"))
                            .send()
                            .and_then(|r| r.bytes());
                        refreshes += 1;
                    }
                    Ok(_) => {}
                }
            }
            refreshes
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let jobs: Vec<NewJob> = (0..args.drain)
        .map(|i| NewJob::new("noop", json!({"n": i})))
        .collect();
    let start = Instant::now();
    for chunk in jobs.chunks(1000) {
        daemon.client().enqueue(chunk.to_vec()).unwrap();
    }
    let reader = jobd::store::open(&dir.path().join("jobs.db"), &OpenOptions::default()).unwrap();
    loop {
        let live = reader.live_counts().unwrap();
        if live.values().sum::<u64>() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let rate = args.drain as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    daemon.client().shutdown();
    daemon.wait().unwrap();
    if let Some(follower) = follower {
        let refreshes = follower.join().unwrap_or(0);
        println!("  (the open page refreshed {refreshes} times)");
    }
    rate
}
