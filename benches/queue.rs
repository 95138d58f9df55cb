//! Queue benchmarks: batched enqueue, drain rate, pickup latency and drain rate over a
//! large finished history. Prints figures; asserts nothing (the numbers go in
//! docs/benchmarks.md).
//!
//! cargo bench --bench queue -- [--jobs N] [--workers W] [--synchronous normal|full]
//!                               [--drain-pairs N] (target 1 as a median of paired ratios)
//!                               [--history N] [--only enqueue|drain|latency|history|isolation|scale]
//!                               [--isolation-waiting N] [--isolation-samples N] [--isolation-drain N]
//!                               [--isolation-pairs N] [--isolation-scenario base|held|future]
//!                               [--scale-queued N] [--scale-history N] [--scale-pairs N]
//!                               [--only socket|pickup] [--seconds S] (issue 15: enqueue_paths)
//!                               [--only socket-batch|socket-singles|socket-single] [--batches N]
//!                               (scripts/enqueue-callgrind.sh)
//!                               [--drain-runs raw1,raw64,rawschema,jobd]
//!
//! `drain` also runs raw rusqlite loops (claim + complete, 1 and 64 jobs per transaction,
//! WAL, the same synchronous) in the same run and prints jobd's drain as a ratio to them,
//! and the 64/txn loop on jobd's own schema (`rawschema`), which splits the gap into what
//! the schema costs and what the daemon costs.

mod enqueue_paths;

use clap::Parser;
use jobd::clock::{Clock, SystemClock};
use jobd::config::{Config, ConfigSource, Synchronous};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::{Handler, JobContext, Registry};
use jobd::job::{Completion, Job, NewJob, Outcome, Resolution};
use jobd::store::{ClaimSpec, OpenOptions, Store};
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
    /// Isolation: jobs waiting in a queue held at its concurrency limit (and, separately,
    /// jobs due in the future).
    #[arg(long, default_value_t = 1_000_000)]
    isolation_waiting: usize,
    /// Isolation: single enqueues timed per scenario.
    #[arg(long, default_value_t = 500)]
    isolation_samples: usize,
    /// Isolation: jobs in the timed drain of the other queue.
    #[arg(long, default_value_t = 20_000)]
    isolation_drain: usize,
    /// Isolation: with more than 1, each scenario runs this many pairs with a baseline
    /// of its own, in alternating order, and the median of the pairs' changes is printed
    /// (one baseline against one run moves as much as the bounds).
    #[arg(long, default_value_t = 1)]
    isolation_pairs: usize,
    /// Isolation: run only this scenario once, with no warm-up and no baseline (base,
    /// held or future), e.g. one at a time under callgrind.
    #[arg(long)]
    isolation_scenario: Option<String>,
    /// Scale: queued jobs drained, against `--jobs`.
    #[arg(long, default_value_t = 1_000_000)]
    scale_queued: usize,
    /// Scale: succeeded rows in the table under a drain of `--jobs`, against none.
    #[arg(long, default_value_t = 10_000_000)]
    scale_history: usize,
    /// Scale: with more than 1, each comparison runs this many pairs, in alternating
    /// order, and the median of the pairs' changes is printed.
    #[arg(long, default_value_t = 1)]
    scale_pairs: usize,
    /// Drain: with more than 1, after the runs above, this many pairs of the raw 64/txn
    /// loop and jobd's drain, in alternating order, and the median of the pairs' drain
    /// ratios (target 1 is a ratio, and one pair's moves by ±0.1 between reruns).
    #[arg(long, default_value_t = 1)]
    drain_pairs: usize,
    /// How long each socket and pickup measurement runs (issue 15: enqueue_paths).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// `--only socket-batch`: how many requests of 1,000 jobs to send; `--only
    /// socket-singles` / `socket-single`: how many single enqueues each of 16 clients /
    /// the one client sends.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Which of `drain`'s runs to make (comma-separated: raw1, raw64, rawschema, jobd), e.g. one at
    /// a time under callgrind (scripts/drain-callgrind.sh).
    #[arg(long, default_value = "raw1,raw64,rawschema,jobd")]
    drain_runs: String,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    // The big isolation and scale scenarios run only when asked for.
    let runs = |name: &str| {
        args.only
            .as_deref()
            .map_or(!matches!(name, "isolation" | "scale"), |o| o == name)
    };
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
        let drain_runs = |name: &str| args.drain_runs.split(',').any(|r| r == name);
        for mode in &modes {
            let raw_one = drain_runs("raw1").then(|| raw_drain(args.jobs.min(20_000), *mode, 1));
            let raw_many = drain_runs("raw64").then(|| raw_drain(args.jobs, *mode, 64));
            let raw_schema = drain_runs("rawschema").then(|| raw_schema_drain(args.jobs, *mode));
            if let (Some(raw_schema), Some(raw_many)) = (raw_schema, raw_many) {
                println!(
                    "schema floor, synchronous={mode:?}: raw loop on jobd's schema {raw_schema:.0} \
                     / raw 64/txn {raw_many:.0} = {:.2}",
                    raw_schema / raw_many
                );
            }
            if !drain_runs("jobd") {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let rate = drain(dir.path(), &args, *mode, 0);
            println!(
                "drain: {} noop jobs, {} workers, synchronous={:?}: {rate:.0} jobs/s",
                args.jobs, args.workers, mode
            );
            if let Some(raw_schema) = raw_schema {
                println!(
                    "daemon share, synchronous={mode:?}: jobd {rate:.0} / raw loop on jobd's schema \
                     {raw_schema:.0} = {:.2}",
                    rate / raw_schema
                );
            }
            if let (Some(raw_one), Some(raw_many)) = (raw_one, raw_many) {
                println!(
                    "drain ratio, synchronous={mode:?}: jobd {rate:.0} / raw 64/txn {raw_many:.0} = {:.2} \
                     (raw 1/txn {raw_one:.0}: jobd is {:.1}x it)",
                    rate / raw_many,
                    rate / raw_one
                );
            }
            if args.drain_pairs > 1 {
                drain_pairs(&args, *mode);
            }
        }
    }
    if runs("latency") {
        bench_commit_latency(args.latency_samples);
        bench_pickup_latency(args.latency_samples);
        bench_outside_pickup(200);
    }
    if runs("isolation") {
        bench_isolation(&args);
    }
    if runs("scale") {
        bench_scale(&args);
    }
    for what in [
        "socket",
        "pickup",
        "socket-batch",
        "socket-singles",
        "socket-single",
    ] {
        // socket-batch and socket-single(s) are callgrind modes: only when asked for.
        let callgrind_mode = what.starts_with("socket-");
        if runs(what) && (!callgrind_mode || args.only.is_some()) {
            enqueue_paths::run(what, &modes, args.seconds, args.batches);
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

fn open(path: &Path, synchronous: Synchronous) -> Box<dyn Store> {
    jobd::store::open(
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
fn seed_history(db: &mut dyn Store, n: usize) {
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
                    destinations: vec![],
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
            seed_history(&mut *db, history);
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

// ---- Issue 15: the raw ceiling, isolation between queues, scale with work ----

/// A raw rusqlite queue, as a program without jobd would write one: a plain table with
/// one partial index of ready rows, WAL, `synchronous` as given. Claims `per_txn` jobs
/// with one UPDATE ... RETURNING and completes each with one UPDATE, in one transaction.
/// Returns jobs per second for `n` jobs.
fn raw_drain(n: usize, synchronous: Synchronous, per_txn: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, kind TEXT NOT NULL,
             payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued',
             priority INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
             run_at INTEGER NOT NULL, lease_until INTEGER, worker TEXT,
             updated_at INTEGER NOT NULL, finished_at INTEGER);
         CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE state = 'queued';"
    ))
    .unwrap();
    let now = SystemClock.now_ms();
    {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO jobs (queue, kind, payload, run_at, updated_at) \
                     VALUES ('default', 'noop', ?1, ?2, ?2)",
                )
                .unwrap();
            for i in 0..n {
                insert
                    .execute(rusqlite::params![format!("{{\"n\":{i}}}"), now])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let start = Instant::now();
    raw_claim_loop(&mut conn, n, per_txn);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "raw rusqlite loop: {n} jobs, {per_txn} per transaction, synchronous={synchronous:?}: {rate:.0} jobs/s"
    );
    rate
}

/// The raw loop's timed part: claim `per_txn` jobs and complete them, a transaction at a
/// time, until `n` are done. Not inlined, so callgrind can count it alone
/// (`--toggle-collect=*raw_claim_loop*`, see scripts/drain-callgrind.sh).
#[inline(never)]
fn raw_claim_loop(conn: &mut rusqlite::Connection, n: usize, per_txn: usize) {
    let mut done = 0;
    while done < n {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let ids: Vec<i64> = {
            let mut claim = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                     lease_until = ?1, worker = 'raw', updated_at = ?2 \
                     WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_ready \
                                  WHERE state = 'queued' AND run_at <= ?2 \
                                  ORDER BY priority DESC, run_at, id LIMIT ?3) \
                     RETURNING id, payload",
                )
                .unwrap();
            let now = SystemClock.now_ms();
            claim
                .query_map(rusqlite::params![now + 60_000, now, per_txn as i64], |r| {
                    r.get(0)
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        {
            let mut complete = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'succeeded', lease_until = NULL, \
                     finished_at = ?2, updated_at = ?2 WHERE id = ?1 AND state = 'running'",
                )
                .unwrap();
            let now = SystemClock.now_ms();
            for id in &ids {
                complete.execute(rusqlite::params![id, now]).unwrap();
            }
        }
        tx.commit().unwrap();
        assert!(!ids.is_empty(), "the raw queue ran dry early");
        done += ids.len();
    }
}

/// The raw 64/txn loop on jobd's own schema (every migration applied): the jobs are
/// enqueued by the store, as for jobd's drain, and then claimed and completed by plain
/// SQL that writes what jobd's claim and completion write per job (the claim's columns,
/// the success's columns, an attempt row), 64 per transaction, with no daemon around it.
/// The gap between the raw 64/txn loop and this one is what the schema costs per job;
/// the gap between this one and jobd's drain is what the daemon costs.
fn raw_schema_drain(n: usize, synchronous: Synchronous) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    {
        let mut db = open(&path, synchronous);
        let now = SystemClock.now_ms();
        for chunk in noop_jobs(n).chunks(10_000) {
            db.write(|tx| tx.enqueue(chunk, now)).unwrap();
        }
    }
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
    ))
    .unwrap();
    let start = Instant::now();
    raw_schema_claim_loop(&mut conn, n);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "raw loop on jobd's schema: {n} jobs, 64 per transaction, synchronous={synchronous:?}: {rate:.0} jobs/s"
    );
    rate
}

/// [`raw_schema_drain`]'s timed part, one transaction per 64 jobs: read the group's rows
/// and claim them, complete them by one `UPDATE ... WHERE id IN (...)`, write their
/// attempt rows by one multi-row `INSERT`: the statements jobd's claim and completion
/// run (src/store/sqlite/claim.rs, complete.rs). Not inlined, so callgrind can count it
/// alone (`--toggle-collect=*raw_schema_claim_loop*`).
#[inline(never)]
fn raw_schema_claim_loop(conn: &mut rusqlite::Connection, n: usize) {
    const READY: &str = "FROM jobs INDEXED BY jobs_queue_ready \
         WHERE (state = 'queued' OR state = 'retrying') AND order_blocked = 0 \
         AND queue = 'default' AND priority = 0 AND run_at <= ?1 ORDER BY run_at, id LIMIT +64";
    let ids = vec!["?"; 64].join(",");
    let rows = vec!["(?,1,'raw',?,?,'succeeded',NULL,NULL,?)"; 64].join(",");
    let read = format!(
        "SELECT id, queue, kind, payload, priority, attempts, max_attempts, run_at, \
         unique_key, parent_id, last_error, deadline_at, created_at, source, cancel_requested, \
         stage, destination, flow_key, order_key {READY}"
    );
    let claim = format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?2, \
         worker = 'raw', updated_at = ?1, claim = ?3, started_at = NULL \
         WHERE id IN (SELECT id {READY})"
    );
    let succeed = format!(
        "UPDATE jobs SET state='succeeded',lease_until=NULL,finished_at=?1,updated_at=?1,\
         last_error=NULL,started_at=NULL,claim=NULL \
         WHERE attempts=1 AND worker IS 'raw' AND (state = 'running') AND id IN({ids})"
    );
    let attempts = format!(
        "INSERT INTO job_attempts(job_id,attempt,worker,started_at,finished_at,outcome,\
         error,detail,started_us)VALUES{rows}"
    );
    let mut done = 0;
    let mut claim_number = 0;
    while done < n {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let now = SystemClock.now_ms();
        claim_number += 1;
        let claimed: Vec<i64> = tx
            .prepare_cached(&read)
            .unwrap()
            .query_map([now], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let moved = tx
            .prepare_cached(&claim)
            .unwrap()
            .execute(rusqlite::params![now, now + 60_000, claim_number])
            .unwrap();
        assert_eq!(moved, claimed.len());
        if claimed.len() == 64 {
            let mut params: Vec<i64> = vec![now];
            params.extend(&claimed);
            let moved = tx
                .prepare_cached(&succeed)
                .unwrap()
                .execute(rusqlite::params_from_iter(&params))
                .unwrap();
            assert_eq!(moved, 64);
            let mut params: Vec<i64> = Vec::with_capacity(4 * 64);
            for id in &claimed {
                params.extend([*id, now, now, now * 1000]);
            }
            tx.prepare_cached(&attempts)
                .unwrap()
                .execute(rusqlite::params_from_iter(&params))
                .unwrap();
        } else {
            // The last few, one by one, writing the same columns.
            for id in &claimed {
                tx.execute(
                    "UPDATE jobs SET state='succeeded',lease_until=NULL,finished_at=?1,\
                     updated_at=?1,last_error=NULL,started_at=NULL,claim=NULL WHERE id=?2",
                    rusqlite::params![now, id],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO job_attempts(job_id,attempt,worker,started_at,finished_at,\
                     outcome,started_us) VALUES (?1,1,'raw',?2,?2,'succeeded',?3)",
                    rusqlite::params![id, now, now * 1000],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        assert!(!claimed.is_empty(), "the raw queue ran dry early");
        done += claimed.len();
    }
}

/// Adds `n` rows to `jobs` with plain SQL in one transaction: `queue`, `state` and
/// `run_at` as given (a terminal state gets `finished_at`).
fn seed_rows(db_path: &Path, n: usize, queue: &str, state: &str, run_at: i64) {
    if n == 0 {
        return;
    }
    let start = Instant::now();
    let mut conn = rusqlite::Connection::open(db_path).unwrap();
    let tx = conn.transaction().unwrap();
    let finished = if state == "succeeded" { "?4" } else { "NULL" };
    tx.execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO jobs (queue, kind, payload, state, run_at, created_at, updated_at, \
                               finished_at) \
             SELECT ?2, 'noop', '{{}}', ?3, ?4, ?4, ?4, {finished} FROM n"
        ),
        rusqlite::params![n as i64, queue, state, run_at],
    )
    .unwrap();
    tx.commit().unwrap();
    println!(
        "  (seeded {n} {state} rows in queue {queue} in {:.1}s)",
        start.elapsed().as_secs_f64()
    );
}

/// A handler that holds its worker until the bench lets go (the sender is dropped).
struct Hold {
    started: crossbeam_channel::Sender<Instant>,
    release: crossbeam_channel::Receiver<()>,
}

impl Handler for Hold {
    fn run(&self, _job: &Job, _ctx: &JobContext) -> Outcome {
        let _ = self.started.send(Instant::now());
        let _ = self.release.recv();
        Outcome::success()
    }
}

struct IsolationFigures {
    ack_p50: Duration,
    pickup_p50: Duration,
    drain: f64,
}

/// One isolation scenario: queue `held` (concurrency 1) runs one job that never ends;
/// `waiting` more rows wait in it, and `future` rows due in a day wait in `default`. Then
/// the `default` queue is timed: single enqueues (ack, and enqueue to start), and a drain.
fn isolation_run(args: &Args, waiting: usize, future: usize) -> IsolationFigures {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("jobs.db");
    let now = SystemClock.now_ms();
    {
        let mut db = open(&db_path, Synchronous::Normal);
        db.write(|tx| {
            tx.enqueue(
                &[NewJob::new("hold", json!({})).queue("held").priority(10)],
                now,
            )
        })
        .unwrap();
    }
    seed_rows(&db_path, waiting, "held", "queued", now);
    seed_rows(&db_path, future, "default", "queued", now + 86_400_000);
    let (stamp_tx, stamps) = crossbeam_channel::unbounded();
    let (hold_tx, hold_started) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::bounded::<()>(0);
    let mut registry = Registry::builtin();
    registry.register("stamp", Arc::new(Stamp(stamp_tx)));
    registry.register(
        "hold",
        Arc::new(Hold {
            started: hold_tx,
            release: release_rx,
        }),
    );
    let mut config = config(dir.path(), args.workers, Synchronous::Normal);
    config
        .queues
        .insert("held".into(), jobd::config::QueueConfig { concurrency: 1 });
    let daemon = Daemon::start(
        config,
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
    hold_started
        .recv_timeout(Duration::from_secs(60))
        .expect("the held queue's job started");
    let client = daemon.client();
    let mut acks = Vec::with_capacity(args.isolation_samples);
    let mut pickups = Vec::with_capacity(args.isolation_samples);
    for _ in 0..args.isolation_samples {
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        client
            .enqueue(vec![NewJob::new("stamp", json!({}))])
            .unwrap();
        acks.push(t0.elapsed());
        let ran = stamps
            .recv_timeout(Duration::from_secs(10))
            .expect("picked up");
        pickups.push(ran - t0);
    }
    acks.sort();
    pickups.sort();
    let n = args.isolation_drain;
    let jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("stamp", json!({}))).collect();
    let t0 = Instant::now();
    for chunk in jobs.chunks(1_000) {
        client.enqueue(chunk.to_vec()).unwrap();
    }
    for _ in 0..n {
        stamps
            .recv_timeout(Duration::from_secs(60))
            .expect("drained");
    }
    let drain = n as f64 / t0.elapsed().as_secs_f64();
    drop(release);
    client.shutdown();
    daemon.wait().unwrap();
    IsolationFigures {
        ack_p50: percentile(&acks, 0.5),
        pickup_p50: percentile(&pickups, 0.5),
        drain,
    }
}

fn bench_isolation(args: &Args) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let change = |with: f64, without: f64| (with / without - 1.0) * 100.0;
    if let Some(scenario) = &args.isolation_scenario {
        let n = args.isolation_waiting;
        let (waiting, future) = match scenario.as_str() {
            "base" => (0, 0),
            "held" => (n, 0),
            "future" => (0, n),
            other => panic!("--isolation-scenario {other}: base, held or future"),
        };
        let run = isolation_run(args, waiting, future);
        println!(
            "isolation, scenario {scenario} alone: ack p50 {:.3} ms, pickup p50 {:.3} ms, \
             drain {:.0} jobs/s",
            ms(run.ack_p50),
            ms(run.pickup_p50),
            run.drain
        );
        return;
    }
    // A first run warms the page cache and the allocator; its figures are not kept.
    isolation_run(args, 0, 0);
    let base = isolation_run(args, 0, 0);
    println!(
        "isolation baseline (held queue at its limit, nothing waiting): ack p50 {:.3} ms, \
         pickup p50 {:.3} ms, drain {:.0} jobs/s ({} jobs)",
        ms(base.ack_p50),
        ms(base.pickup_p50),
        base.drain,
        args.isolation_drain
    );
    for (label, waiting, future) in [
        ("waiting in the held queue", args.isolation_waiting, 0),
        (
            "due in a day in the default queue",
            0,
            args.isolation_waiting,
        ),
    ] {
        if args.isolation_pairs > 1 {
            isolation_pairs(args, label, waiting, future);
            continue;
        }
        let with = isolation_run(args, waiting, future);
        println!(
            "isolation, {} jobs {label}: ack p50 {:.3} ms ({:+.1}%), pickup p50 {:.3} ms \
             ({:+.1}%), drain {:.0} jobs/s ({:+.1}%)",
            args.isolation_waiting,
            ms(with.ack_p50),
            change(ms(with.ack_p50), ms(base.ack_p50)),
            ms(with.pickup_p50),
            change(ms(with.pickup_p50), ms(base.pickup_p50)),
            with.drain,
            change(with.drain, base.drain)
        );
    }
}

/// `--drain-pairs`: the raw 64/txn loop and jobd's drain, pair after pair, which goes
/// first alternating, each pair's ratio printed, then their median.
fn drain_pairs(args: &Args, mode: Synchronous) {
    let mut ratios = Vec::with_capacity(args.drain_pairs);
    for pair in 0..args.drain_pairs {
        let jobd = || {
            let dir = tempfile::tempdir().unwrap();
            drain(dir.path(), args, mode, 0)
        };
        let (raw, rate) = if pair % 2 == 0 {
            let raw = raw_drain(args.jobs, mode, 64);
            (raw, jobd())
        } else {
            let rate = jobd();
            (raw_drain(args.jobs, mode, 64), rate)
        };
        println!(
            "  drain pair {}, synchronous={mode:?}: jobd {rate:.0} / raw 64/txn {raw:.0} = {:.2}",
            pair + 1,
            rate / raw
        );
        ratios.push(rate / raw);
    }
    println!(
        "drain ratio, synchronous={mode:?}, median of {} pairs: {:.2} (target >= 0.6)",
        args.drain_pairs,
        median(&mut ratios)
    );
}

/// The median of the values (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `--isolation-pairs N`: N baselines and N runs of one scenario, alternating which goes
/// first; prints each pair's changes and their medians.
fn isolation_pairs(args: &Args, label: &str, waiting: usize, future: usize) {
    let change = |with: f64, without: f64| (with / without - 1.0) * 100.0;
    let mut changes: [Vec<f64>; 3] = Default::default();
    for pair in 0..args.isolation_pairs {
        let (base, with) = if pair % 2 == 0 {
            let base = isolation_run(args, 0, 0);
            (base, isolation_run(args, waiting, future))
        } else {
            let with = isolation_run(args, waiting, future);
            (isolation_run(args, 0, 0), with)
        };
        let pair_changes = [
            change(with.ack_p50.as_secs_f64(), base.ack_p50.as_secs_f64()),
            change(with.pickup_p50.as_secs_f64(), base.pickup_p50.as_secs_f64()),
            change(with.drain, base.drain),
        ];
        println!(
            "  pair {}: ack {:+.1}%, pickup {:+.1}%, drain {:+.1}% ({:.0} against {:.0} jobs/s)",
            pair + 1,
            pair_changes[0],
            pair_changes[1],
            pair_changes[2],
            with.drain,
            base.drain
        );
        for (all, one) in changes.iter_mut().zip(pair_changes) {
            all.push(one);
        }
    }
    println!(
        "isolation, {} jobs {label}, median of {} pairs: ack p50 {:+.1}%, pickup p50 {:+.1}%, \
         drain {:+.1}% (bounds: +-20%, +-20%, -10%)",
        args.isolation_waiting,
        args.isolation_pairs,
        median(&mut changes[0]),
        median(&mut changes[1]),
        median(&mut changes[2])
    );
}

/// Drains `queued` noop jobs seeded with plain SQL over `history` succeeded rows, with
/// `--once`; returns jobs per second.
fn scale_drain(args: &Args, queued: usize, history: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("jobs.db");
    drop(open(&db_path, Synchronous::Normal));
    let now = SystemClock.now_ms();
    seed_rows(&db_path, history, "default", "succeeded", now - 3_600_000);
    seed_rows(&db_path, queued, "default", "queued", now);
    let start = Instant::now();
    let daemon = Daemon::start(
        Config {
            daemon: jobd::config::DaemonConfig {
                prefetch: args.prefetch,
                ..config(dir.path(), args.workers, Synchronous::Normal).daemon
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
    assert_eq!(counters.succeeded as usize, queued, "every job succeeded");
    queued as f64 / start.elapsed().as_secs_f64()
}

fn bench_scale(args: &Args) {
    // A first drain warms the page cache and the allocator; its figure is not kept.
    scale_drain(args, args.jobs, 0);
    if args.scale_pairs > 1 {
        scale_pairs(
            args,
            &format!(
                "drain of {} queued against {}",
                args.scale_queued, args.jobs
            ),
            (args.jobs, 0),
            (args.scale_queued, 0),
        );
        scale_pairs(
            args,
            &format!(
                "drain of {} over {} succeeded rows against an empty table",
                args.jobs, args.scale_history
            ),
            (args.jobs, 0),
            (args.jobs, args.scale_history),
        );
        return;
    }
    let small = scale_drain(args, args.jobs, 0);
    let big = scale_drain(args, args.scale_queued, 0);
    println!(
        "scale: drain of {} queued: {big:.0} jobs/s vs {} queued: {small:.0} jobs/s ({:+.1}%)",
        args.scale_queued,
        args.jobs,
        (big / small - 1.0) * 100.0
    );
    let empty = scale_drain(args, args.jobs, 0);
    let full = scale_drain(args, args.jobs, args.scale_history);
    println!(
        "scale: drain of {} with {} succeeded rows: {full:.0} jobs/s vs empty table: {empty:.0} jobs/s ({:+.1}%)",
        args.jobs,
        args.scale_history,
        (full / empty - 1.0) * 100.0
    );
}

/// `--scale-pairs N`: N drains of each side, `(queued, history)`, alternating which goes
/// first; prints each pair's change and their median (bound: within 10%).
fn scale_pairs(args: &Args, label: &str, base: (usize, usize), with: (usize, usize)) {
    let mut changes = Vec::with_capacity(args.scale_pairs);
    for pair in 0..args.scale_pairs {
        let (base_rate, with_rate) = if pair % 2 == 0 {
            let b = scale_drain(args, base.0, base.1);
            (b, scale_drain(args, with.0, with.1))
        } else {
            let w = scale_drain(args, with.0, with.1);
            (scale_drain(args, base.0, base.1), w)
        };
        let change = (with_rate / base_rate - 1.0) * 100.0;
        println!(
            "  pair {}: {change:+.1}% ({with_rate:.0} against {base_rate:.0} jobs/s)",
            pair + 1
        );
        changes.push(change);
    }
    println!(
        "scale, {label}, median of {} pairs: {:+.1}% (bound: within 10%)",
        args.scale_pairs,
        median(&mut changes)
    );
}
