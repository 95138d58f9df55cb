//! Web page benchmarks: the overview's render time (HTML and JSON) and a few Jobs
//! searches over HTTP with a large table, and the drain rate with and without an open
//! page that follows its event stream like htmx does. Prints figures; asserts nothing.
//!
//! cargo bench --bench web -- [--rows N] [--waiting N] [--renders N] [--drain N] [--pairs N] [--only render|drain]
//!
//! The drain comparison runs `--pairs` pairs, the order within a pair alternating (quiet
//! first, then watched first), and prints the median of the pairs' differences: one pair
//! alone moves by more than the bound from the machine's noise.

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
    /// Jobs waiting in the table besides (due in a day, so the daemon leaves them).
    #[arg(long, default_value_t = 0)]
    waiting: usize,
    /// Renders timed per route.
    #[arg(long, default_value_t = 20)]
    renders: usize,
    /// Jobs drained with and without an open page.
    #[arg(long, default_value_t = 20_000)]
    drain: usize,
    /// Pairs of drains (one with no page, one with a page open) compared.
    #[arg(long, default_value_t = 6)]
    pairs: usize,
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
        let (mut differences, mut cpu_differences) = (Vec::new(), Vec::new());
        for pair in 0..args.pairs {
            let watched_first = pair % 2 == 1;
            let (first, second) = (drain(&args, watched_first), drain(&args, !watched_first));
            let (quiet, watched) = if watched_first {
                (second, first)
            } else {
                (first, second)
            };
            let difference = (watched.rate / quiet.rate - 1.0) * 100.0;
            let cpu_difference =
                (watched.daemon_cpu.as_secs_f64() / quiet.daemon_cpu.as_secs_f64() - 1.0) * 100.0;
            println!(
                "drain pair {}: {:.0} jobs/s with no page open, {:.0} jobs/s with the overview \
                 open and following /events ({difference:+.1}%; {} refreshes taking {:.1} ms, \
                 {:.2}% of the drain's time); daemon CPU {:.0} ms vs {:.0} ms ({cpu_difference:+.1}%)",
                pair + 1,
                quiet.rate,
                watched.rate,
                watched.refreshes,
                ms(watched.refreshing),
                watched.refreshing.as_secs_f64() / watched.elapsed.as_secs_f64() * 100.0,
                ms(quiet.daemon_cpu),
                ms(watched.daemon_cpu)
            );
            differences.push(difference);
            cpu_differences.push(cpu_difference);
        }
        for (what, mut figures) in [
            ("drain rate", differences),
            ("daemon CPU per drain", cpu_differences),
        ] {
            figures.sort_by(f64::total_cmp);
            if let Some(median) = figures.get(figures.len() / 2) {
                println!(
                    "drain: {} noop jobs, {} pairs: {what} with a page open, median {median:+.1}% \
                     (range {:+.1}% to {:+.1}%)",
                    args.drain,
                    args.pairs,
                    figures[0],
                    figures[figures.len() - 1]
                );
            }
        }
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

/// `n` queued jobs due in a day, over three queues.
fn seed_waiting(db: &mut dyn Store, n: usize) {
    let now = SystemClock.now_ms();
    for start in (0..n).step_by(10_000) {
        let jobs: Vec<NewJob> = (start..n.min(start + 10_000))
            .map(|i| {
                let mut job = NewJob::new("noop", json!({"n": i})).run_at(now + 86_400_000);
                job.queue = ["default", "bulk", "sync"][i % 3].to_string();
                job
            })
            .collect();
        db.write(|tx| tx.enqueue(&jobs, now).map(drop)).unwrap();
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
    let mut store = open(&dir.path().join("jobs.db"));
    seed(&mut *store, args.rows);
    seed_waiting(&mut *store, args.waiting);
    drop(store);
    println!(
        "  (seeded {} finished and {} waiting rows in {:.1}s)",
        args.rows,
        args.waiting,
        started.elapsed().as_secs_f64()
    );
    let daemon = start(dir.path());
    let base = format!("http://{}", daemon.web_address().unwrap());
    let client = reqwest::blocking::Client::new();
    for route in [
        "/",
        "/fragments/overview",
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

/// One drain: its rate, and with an open page how often and how long it refreshed.
struct Drain {
    rate: f64,
    elapsed: Duration,
    refreshes: usize,
    refreshing: Duration,
    /// CPU time the process spent during the drain, less the page follower's own thread
    /// (which stands for a browser on another machine): the daemon's cost.
    daemon_cpu: Duration,
}

/// CPU time (user + system) from a `/proc/.../stat` file: fields 14 and 15, in clock
/// ticks of 10 ms.
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let after_name = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Drains `args.drain` noop jobs; with `watched`, a client holds `/events` open and
/// fetches the overview fragment on every event, as htmx would, and times each fetch
/// (an upper bound on what the refreshes cost the daemon).
fn drain(args: &Args, watched: bool) -> Drain {
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
            let (mut refreshes, mut refreshing) = (0, Duration::ZERO);
            let cpu_at_start = cpu_of("/proc/thread-self/stat");
            while !stop.load(Ordering::Relaxed) {
                match events.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) if String::from_utf8_lossy(&chunk[..n]).contains("event: change") => {
                        let fetch = Instant::now();
                        let _ = client
                            .get(format!("{base}/fragments/overview"))
                            .send()
                            .and_then(|r| r.bytes());
                        refreshing += fetch.elapsed();
                        refreshes += 1;
                    }
                    Ok(_) => {}
                }
            }
            let own_cpu = cpu_of("/proc/thread-self/stat").saturating_sub(cpu_at_start);
            (refreshes, refreshing, own_cpu)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let jobs: Vec<NewJob> = (0..args.drain)
        .map(|i| NewJob::new("noop", json!({"n": i})))
        .collect();
    let start = Instant::now();
    let cpu_at_start = cpu_of("/proc/self/stat");
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
    let elapsed = start.elapsed();
    let cpu = cpu_of("/proc/self/stat").saturating_sub(cpu_at_start);
    stop.store(true, Ordering::Relaxed);
    daemon.client().shutdown();
    daemon.wait().unwrap();
    let (refreshes, refreshing, follower_cpu) = follower
        .map(|follower| follower.join().unwrap_or_default())
        .unwrap_or_default();
    Drain {
        rate: args.drain as f64 / elapsed.as_secs_f64(),
        elapsed,
        refreshes,
        refreshing,
        daemon_cpu: cpu.saturating_sub(follower_cpu),
    }
}
