//! Queue benchmarks: batched enqueue, drain rate, pickup latency and drain rate over a
//! large finished history. Prints figures; asserts nothing (the numbers go in
//! docs/benchmarks.md).
//!
//! cargo bench --bench queue -- [--jobs N] [--workers W] [--synchronous normal|full]
//!                               [--history N] [--only enqueue|drain|latency|history]
//!                               [--only socket|pickup] [--seconds S] (issue 15: enqueue_paths)

mod enqueue_paths;

use clap::Parser;
use jobd::clock::{Clock, SystemClock};
use jobd::config::{Config, ConfigSource, Synchronous};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::{Handler, JobContext, Registry};
use jobd::job::{Completion, Job, NewJob, Outcome, Resolution};
use jobd::store::{ClaimSpec, Db, OpenOptions};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Claimed jobs held for the next free worker (daemon.prefetch).
    #[arg(long, default_value_t = jobd::config::DEFAULT_PREFETCH)]
    prefetch: usize,
    /// Synchronous modes to drain with (comma-separated).
    #[arg(long, default_value = "normal,full")]
    synchronous: String,
    /// Finished rows already in the table for the history scenario.
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,
    #[arg(long, default_value_t = 2_000)]
    latency_samples: usize,
    #[arg(long)]
    only: Option<String>,
    /// How long each socket and pickup measurement runs (issue 15: enqueue_paths).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let runs = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    println!(
        "machine: {} cores; jobs={} workers={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.jobs,
        args.workers
    );
    let modes: Vec<Synchronous> = args
        .synchronous
        .split(',')
        .map(|m| m.parse().expect("synchronous mode"))
        .collect();
    if runs("enqueue") {
        bench_enqueue(args.jobs);
    }
    if runs("drain") {
        for mode in &modes {
            let dir = tempfile::tempdir().unwrap();
            let rate = drain(dir.path(), &args, *mode, 0);
            println!(
                "drain: {} noop jobs, {} workers, synchronous={:?}: {rate:.0} jobs/s",
                args.jobs, args.workers, mode
            );
        }
    }
    if runs("latency") {
        bench_commit_latency(args.latency_samples);
        bench_pickup_latency(args.latency_samples);
        bench_outside_pickup(200);
    }
    for what in ["socket", "pickup"] {
        if runs(what) {
            enqueue_paths::run(what, &modes, args.seconds);
        }
    }
    if runs("history") {
        let dir = tempfile::tempdir().unwrap();
        let empty = drain(dir.path(), &args, Synchronous::Normal, 0);
        let dir = tempfile::tempdir().unwrap();
        let full = drain(dir.path(), &args, Synchronous::Normal, args.history);
        println!(
            "history: drain with {} succeeded rows present: {full:.0} jobs/s vs {empty:.0} jobs/s on an empty table ({:+.1}%)",
            args.history,
            (full / empty - 1.0) * 100.0
        );
    }
}

fn open(path: &Path, synchronous: Synchronous) -> Db {
    Db::open(
        path,
        &OpenOptions {
            synchronous,
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn noop_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("noop", json!({ "n": i })))
        .collect()
}

fn bench_enqueue(n: usize) {
    for batch in [100, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(&dir.path().join("jobs.db"), Synchronous::Normal);
        let jobs = noop_jobs(n);
        let now = SystemClock.now_ms();
        let start = Instant::now();
        for chunk in jobs.chunks(batch) {
            db.write(|tx| tx.enqueue(chunk, now)).unwrap();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("enqueue: {n} jobs in batches of {batch}, synchronous=Normal: {rate:.0} jobs/s");
    }
}

/// Fills the table with `n` succeeded jobs through the queue's own transitions.
fn seed_history(db: &mut Db, n: usize) {
    let now = SystemClock.now_ms() - 3_600_000;
    let mut left = n;
    while left > 0 {
        let take = left.min(10_000);
        db.write(|tx| {
            tx.enqueue(&noop_jobs(take), now)?;
            let claimed = tx.claim(
                &ClaimSpec {
                    limit: take,
                    limited_queues: vec![],
                },
                "seed:0",
                now + 60_000,
                now,
            )?;
            for job in claimed {
                tx.complete(
                    &Completion {
                        job_id: job.id,
                        parent_id: job.parent_id,
                        attempt: job.attempts,
                        worker: "seed:0".into(),
                        started_at: now,
                        finished_at: now,
                        resolution: Resolution::Succeeded {
                            follow_ups: vec![],
                            sync_marks: vec![],
                        },
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

fn config(dir: &Path, workers: usize, synchronous: Synchronous) -> Config {
    let mut config = Config::default();
    config.daemon.database = dir.join("jobs.db");
    config.daemon.data_dir = dir.join("var");
    config.daemon.workers = workers;
    config.daemon.synchronous = synchronous;
    config
}

/// Drains `n` noop jobs with `--once`; returns jobs per second.
fn drain(dir: &Path, args: &Args, synchronous: Synchronous, history: usize) -> f64 {
    let n = args.jobs;
    {
        let mut db = open(&dir.join("jobs.db"), synchronous);
        if history > 0 {
            let start = Instant::now();
            seed_history(&mut db, history);
            println!(
                "  (seeded {history} succeeded rows in {:.1}s)",
                start.elapsed().as_secs_f64()
            );
        }
        let now = SystemClock.now_ms();
        for chunk in noop_jobs(n).chunks(10_000) {
            db.write(|tx| tx.enqueue(chunk, now)).unwrap();
        }
    }
    let start = Instant::now();
    let daemon = Daemon::start(
        Config {
            daemon: jobd::config::DaemonConfig {
                prefetch: args.prefetch,
                ..config(dir, args.workers, synchronous).daemon
            },
            ..Config::default()
        },
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: ConfigSource::Defaults,
            once: true,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap();
    let (_, counters) = daemon.wait().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(counters.succeeded as usize, n, "every job succeeded");
    println!(
        "  ({} commits, {:.1} jobs per commit)",
        counters.commits,
        n as f64 / counters.commits as f64
    );
    n as f64 / elapsed
}

/// A handler that reports the instant it starts.
struct Stamp(crossbeam_channel::Sender<Instant>);

impl Handler for Stamp {
    fn run(&self, _job: &Job, _ctx: &JobContext) -> Outcome {
        let _ = self.0.send(Instant::now());
        Outcome::success()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

fn start_stamping(
    dir: &Path,
    synchronous: Synchronous,
) -> (Daemon, crossbeam_channel::Receiver<Instant>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut registry = Registry::builtin();
    registry.register("stamp", Arc::new(Stamp(tx)));
    let daemon = Daemon::start(
        config(dir, 4, synchronous),
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry,
            config_source: ConfigSource::Defaults,
            once: false,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap();
    (daemon, rx)
}

/// One single-job enqueue transaction, committed: the floor under pickup latency.
fn bench_commit_latency(samples: usize) {
    for synchronous in [Synchronous::Normal, Synchronous::Full] {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(&dir.path().join("jobs.db"), synchronous);
        let mut latencies = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t0 = Instant::now();
            db.write(|tx| tx.enqueue(&[NewJob::new("noop", json!({}))], SystemClock.now_ms()))
                .unwrap();
            latencies.push(t0.elapsed());
        }
        report(
            &format!("commit latency (one enqueue, synchronous={synchronous:?})"),
            latencies,
        );
    }
}

/// From the daemon's own enqueue call to the handler starting, one job at a time into an
/// idle daemon.
fn bench_pickup_latency(samples: usize) {
    for synchronous in [Synchronous::Normal, Synchronous::Full] {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, started) = start_stamping(dir.path(), synchronous);
        let client = daemon.client();
        let mut latencies = Vec::with_capacity(samples);
        for _ in 0..samples {
            std::thread::sleep(Duration::from_millis(2));
            let t0 = Instant::now();
            client
                .enqueue(vec![NewJob::new("stamp", json!({}))])
                .unwrap();
            let ran = started
                .recv_timeout(Duration::from_secs(5))
                .expect("picked up");
            latencies.push(ran - t0);
        }
        report(
            &format!("pickup latency (daemon ingest path, synchronous={synchronous:?})"),
            latencies,
        );
        client.shutdown();
        daemon.wait().unwrap();
    }
}

/// From another process's commit (a separate connection) to the handler starting.
fn bench_outside_pickup(samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, started) = start_stamping(dir.path(), Synchronous::Normal);
    let mut outside = open(&dir.path().join("jobs.db"), Synchronous::Normal);
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Random gaps, so the samples do not lock onto the poll's rhythm.
        std::thread::sleep(Duration::from_millis(fastrand::u64(5..80)));
        let t0 = Instant::now();
        outside
            .write(|tx| tx.enqueue(&[NewJob::new("stamp", json!({}))], SystemClock.now_ms()))
            .unwrap();
        let ran = started
            .recv_timeout(Duration::from_secs(5))
            .expect("picked up");
        latencies.push(ran - t0);
    }
    report(
        "pickup latency (outside writer, poll_interval=50ms)",
        latencies,
    );
    daemon.client().shutdown();
    daemon.wait().unwrap();
}
