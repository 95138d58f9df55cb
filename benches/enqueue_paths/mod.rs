//! Issue 15, targets 2, 3 and 6: the enqueue paths through the real `jobd` binary's
//! socket (ping, single enqueue with ack from one and from 16 clients, batches of 1,000),
//! `jobctl enqueue --file` from NDJSON, and pickup latency at a steady 1,000 jobs/s
//! measured from the send to the handler's start as the daemon records it (microseconds).
//! Each throughput figure is printed beside a raw rusqlite loop (one INSERT per
//! transaction, WAL, same sync) run in the same process, and as a ratio to it.

use jobd::config::Synchronous;
use jobd::store::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Delayed an hour, so the workers leave them be and the figure is the enqueue path's.
const JOB: &str = r#"{"kind":"noop","payload":{"n":1,"text":"a hundred-byte payload, more or less, like the issue's comparison run used..."},"delay":"1h"}"#;

struct Daemon {
    child: Child,
    socket: PathBuf,
    config: PathBuf,
    db: PathBuf,
    metrics: PathBuf,
}

impl Daemon {
    /// SIGTERM and wait: the daemon exits cleanly, so a wrapping callgrind writes its
    /// counts (a SIGKILL from `drop` would lose them).
    fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode_name(mode: Synchronous) -> &'static str {
    match mode {
        Synchronous::Full => "full",
        _ => "normal",
    }
}

/// The daemon's command: the `jobd` binary, or, when JOBD_BENCH_DAEMON_WRAP is set (e.g.
/// to "valgrind --tool=callgrind ..."), that command line with the binary appended, so
/// scripts/enqueue-callgrind.sh counts the daemon's instructions. JOBD_BENCH_JOBD names
/// another binary (the script's copy, which a later build into a shared target directory
/// cannot replace mid-measure).
fn daemon_command() -> (Command, bool) {
    let binary =
        std::env::var("JOBD_BENCH_JOBD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_jobd").into());
    match std::env::var("JOBD_BENCH_DAEMON_WRAP") {
        Ok(wrap) if !wrap.trim().is_empty() => {
            let mut words = wrap.split_whitespace();
            let mut command = Command::new(words.next().unwrap());
            command.args(words).arg(binary);
            (command, true)
        }
        _ => (Command::new(binary), false),
    }
}

/// Starts the daemon; `with_metrics`: with a metrics textfile rewritten every second, for
/// [`Daemon::commits_after`] (its thread counts rows each time, so the callgrind modes,
/// which count every thread's instructions, go without).
fn start(dir: &Path, mode: Synchronous, with_metrics: bool) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("jobd.toml");
    let metrics = if with_metrics {
        format!(
            "[metrics]\ntextfile = \"{}/jobd.prom\"\ninterval = \"1s\"\n",
            dir.display()
        )
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{d}/jobs.db\"\ndata_dir = \"{d}/var\"\nsocket = \"{d}/jobd.sock\"\n\
             synchronous = \"{s}\"\n[log]\nlevel = \"warn\"\n{metrics}",
            d = dir.display(),
            s = mode_name(mode)
        ),
    )
    .unwrap();
    let (mut command, wrapped) = daemon_command();
    let child = command
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let socket = dir.join("jobd.sock");
    // Under valgrind the start-up takes far longer.
    let tries = if wrapped { 30_000 } else { 500 };
    for _ in 0..tries {
        if UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon {
        child,
        socket,
        config,
        db: dir.join("jobs.db"),
        metrics: dir.join("jobd.prom"),
    }
}

impl Daemon {
    /// The dispatcher's commits and the WAL syncs of its syncer thread since start (0
    /// without one), from the metrics file the daemon rewrites every second: read after
    /// the file has been rewritten at least once since `since`.
    fn commits_after(&self, since: std::time::SystemTime) -> (u64, u64) {
        let waited = Instant::now();
        loop {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "{} was not rewritten with jobd_commits_total within 30 s",
                self.metrics.display()
            );
            let fresh = std::fs::metadata(&self.metrics)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified > since);
            if fresh {
                let text = std::fs::read_to_string(&self.metrics).unwrap();
                let counter = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|n| n.trim().parse::<u64>().unwrap())
                };
                if let Some(commits) = counter("jobd_commits_total ") {
                    return (commits, counter("jobd_wal_syncs_total ").unwrap_or(0));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: String,
}

impl Client {
    fn connect(daemon: &Daemon) -> Client {
        Client::over(UnixStream::connect(&daemon.socket).unwrap())
    }

    fn over(stream: UnixStream) -> Client {
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            line: String::new(),
        }
    }

    /// Pings, one after another, for `seconds`: the mean round trip.
    fn mean_ping(mut self, seconds: f64) -> Duration {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed().as_secs_f64() < seconds {
            self.call("{\"op\":\"ping\"}\n");
            n += 1;
        }
        started.elapsed() / n
    }

    fn call(&mut self, request: &str) -> &str {
        self.writer.write_all(request.as_bytes()).unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        assert!(self.line.contains("\"ok\":true"), "{}", self.line);
        &self.line
    }
}

/// One INSERT per transaction with rusqlite on the schema jobd made: the ceiling.
fn raw_single_inserts(dir: &Path, mode: Synchronous, seconds: f64) -> f64 {
    raw_inserts(dir, mode, seconds, 1)
}

/// `per_transaction` INSERTs of one prepared statement per transaction, with rusqlite
/// on the schema jobd made, for `seconds`: jobs per second.
fn raw_inserts(dir: &Path, mode: Synchronous, seconds: f64, per_transaction: usize) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("raw.db");
    drop(
        jobd::store::open(
            &path,
            &OpenOptions {
                synchronous: mode,
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", mode_name(mode))
        .unwrap();
    let payload = r#"{"n":1,"text":"a hundred-byte payload, more or less, like the issue's comparison run used..."}"#;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO jobs (queue, kind, payload, run_at, created_at, updated_at) \
                 VALUES ('default', 'noop', ?1, ?2, ?2, ?2)",
            )
            .unwrap();
        for _ in 0..per_transaction {
            insert
                .execute(rusqlite::params![payload, 1_000_000_000_000i64 + n as i64])
                .unwrap();
            n += 1;
        }
        drop(insert);
        conn.execute_batch("COMMIT").unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn single_enqueues(daemon: &Daemon, clients: usize, seconds: f64) -> f64 {
    let request = single_line();
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let request = request.as_str();
                scope.spawn(move || {
                    let mut client = Client::connect(daemon);
                    let mut n = 0u64;
                    while started.elapsed().as_secs_f64() < seconds {
                        client.call(request);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / started.elapsed().as_secs_f64()
}

fn pings(daemon: &Daemon, seconds: f64) -> Duration {
    Client::connect(daemon).mean_ping(seconds)
}

/// The floor under the ping: the same line protocol over a Unix socket to a thread that
/// only reads a line and answers it, with no daemon behind it. Both ends block in
/// `read`, as jobd's reading thread and the bench's client do, so each round trip is two
/// wake-ups of a sleeping thread; what a ping costs beyond this is jobd's own.
fn raw_echo_round_trip(seconds: f64) -> Duration {
    let (client_end, server_end) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut writer = server_end.try_clone().unwrap();
        let mut reader = BufReader::new(server_end);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            writer.write_all(b"{\"ok\":true}\n").unwrap();
            line.clear();
        }
    });
    let took = Client::over(client_end).mean_ping(seconds);
    server.join().unwrap();
    took
}

/// One job's enqueue request.
fn single_line() -> String {
    format!("{{\"op\":\"enqueue\",\"job\":{JOB}}}\n")
}

fn batch_line(size: usize) -> String {
    let jobs: Vec<&str> = (0..size).map(|_| JOB).collect();
    format!("{{\"op\":\"enqueue\",\"jobs\":[{}]}}\n", jobs.join(","))
}

fn batches(daemon: &Daemon, size: usize, seconds: f64) -> f64 {
    let request = batch_line(size);
    let mut client = Client::connect(daemon);
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        client.call(&request);
        n += size;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn jobctl_file(daemon: &Daemon, dir: &Path, count: usize) -> f64 {
    let file = dir.join("jobs.ndjson");
    let mut text = String::with_capacity(count * (JOB.len() + 1));
    for _ in 0..count {
        text.push_str(JOB);
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .arg("--config")
        .arg(&daemon.config)
        .args(["enqueue", "--file"])
        .arg(&file)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    count as f64 / elapsed.as_secs_f64()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Sends noop jobs at a steady `rate` for `seconds`, each carrying its send time in
/// microseconds, then reads each attempt's recorded start (microseconds) back: each
/// job's send time (µs after the first send) and its latency, in the order sent.
fn pickup_latency(daemon: &Daemon, rate: u64, seconds: u64) -> Vec<(i64, Duration)> {
    let count = (rate * seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("\"ok\":true"), "{line}");
        }
    });
    let start = Instant::now();
    for n in 0..count {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let line = format!(
            "{{\"op\":\"enqueue\",\"job\":{{\"kind\":\"noop\",\"payload\":{{\"sent_us\":{}}}}}}}\n",
            now_us()
        );
        writer.write_all(line.as_bytes()).unwrap();
    }
    reader.join().unwrap();
    let db = rusqlite::Connection::open(&daemon.db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done: i64 = db
            .query_row(
                "SELECT count(*) FROM job_attempts WHERE started_us IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if done as usize >= count || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut statement = db
        .prepare(
            "SELECT json_extract(j.payload, '$.sent_us'), \
                    a.started_us - json_extract(j.payload, '$.sent_us') FROM job_attempts a \
             JOIN jobs j ON j.id = a.job_id WHERE a.started_us IS NOT NULL ORDER BY 1",
        )
        .unwrap();
    let sent: Vec<(i64, Duration)> = statement
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(|row| {
            let (sent, us) = row.unwrap();
            (sent, Duration::from_micros(us.max(0) as u64))
        })
        .collect();
    assert_eq!(sent.len(), count, "every job started");
    let first = sent[0].0;
    sent.into_iter().map(|(at, l)| (at - first, l)).collect()
}

/// The runs of consecutive late jobs (over `late`): when the first was sent (ms after
/// the first send), how many, and the worst, so a periodic stall shows as its period.
fn late_runs(sent: &[(i64, Duration)], late: Duration) -> Vec<(f64, usize, Duration)> {
    let mut runs: Vec<(f64, usize, Duration)> = Vec::new();
    let mut in_run = false;
    for &(at, latency) in sent {
        if latency > late {
            match runs.last_mut() {
                Some(run) if in_run => {
                    run.1 += 1;
                    run.2 = run.2.max(latency);
                }
                _ => runs.push((at as f64 / 1e3, 1, latency)),
            }
            in_run = true;
        } else {
            in_run = false;
        }
    }
    runs
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sends `count` batches of `size` jobs, one request at a time, ack awaited.
fn fixed_batches(daemon: &Daemon, size: usize, count: usize) -> Duration {
    let request = batch_line(size);
    let mut client = Client::connect(daemon);
    let started = Instant::now();
    for _ in 0..count {
        client.call(&request);
    }
    started.elapsed()
}

/// `clients` clients, each sending `count` single enqueues one after another, ack awaited.
fn fixed_singles(daemon: &Daemon, clients: usize, count: usize) -> Duration {
    let request = single_line();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            let request = request.as_str();
            scope.spawn(move || {
                let mut client = Client::connect(daemon);
                for _ in 0..count {
                    client.call(request);
                }
            });
        }
    });
    started.elapsed()
}

/// `--only socket`: targets 2 and 3 (throughput); `--only pickup`: target 6;
/// `--only socket-batch`: only `batches` batches of 1,000 (target 3), and `--only
/// socket-singles`: 16 clients sending `batches` single enqueues each (target 2), `--only
/// socket-single` one client, for scripts/enqueue-callgrind.sh, then a clean stop of the
/// daemon.
pub fn run(what: &str, modes: &[Synchronous], seconds: f64, batch_count: usize) {
    let dir = tempfile::tempdir().unwrap();
    for &mode in modes {
        let m = mode_name(mode);
        let root = dir.path().join(m);
        let daemon = start(&root.join("daemon"), mode, what == "socket");
        if what == "socket-batch" {
            let elapsed = fixed_batches(&daemon, 1_000, batch_count);
            println!(
                "socket batch enqueue, {batch_count} requests of 1,000 jobs, synchronous={m}: {:.0} jobs/s",
                (batch_count * 1_000) as f64 / elapsed.as_secs_f64()
            );
            daemon.stop();
        } else if let Some(clients) = match what {
            "socket-singles" => Some(16),
            "socket-single" => Some(1),
            _ => None,
        } {
            let elapsed = fixed_singles(&daemon, clients, batch_count);
            println!(
                "socket single enqueue, {clients} client(s), {batch_count} each, synchronous={m}: {:.0} jobs/s",
                (batch_count * clients) as f64 / elapsed.as_secs_f64()
            );
            daemon.stop();
        } else if what == "socket" {
            let raw = raw_single_inserts(&root.join("raw"), mode, seconds);
            println!(
                "raw rusqlite loop, 1 INSERT per transaction, synchronous={m}: {raw:.0} jobs/s"
            );
            let echo = raw_echo_round_trip(seconds);
            println!(
                "raw Unix-socket echo round trip (a thread answering each line): {:.1} us",
                echo.as_secs_f64() * 1e6
            );
            let ping = pings(&daemon, seconds);
            println!(
                "socket ping round trip, synchronous={m}: {:.1} us, {:.2}x the raw echo (target <= 15 us)",
                ping.as_secs_f64() * 1e6,
                ping.as_secs_f64() / echo.as_secs_f64()
            );
            let one = single_enqueues(&daemon, 1, seconds);
            println!(
                "socket single enqueue, ack awaited, 1 client, synchronous={m}: {one:.0} jobs/s ({:.1} us a round trip), {:.2}x raw 1/txn (targets: normal >= 30,000/s; full >= 0.7x)",
                1e6 / one,
                one / raw
            );
            // The commits counted around the run say how well the enqueues group: 16
            // per commit is every client in each one.
            let before = daemon.commits_after(std::time::SystemTime::now());
            let started = std::time::SystemTime::now();
            let many = single_enqueues(&daemon, 16, seconds);
            let took = started.elapsed().unwrap().as_secs_f64();
            let after = daemon.commits_after(std::time::SystemTime::now());
            let (commits, syncs) = (after.0 - before.0, after.1 - before.1);
            println!(
                "socket single enqueue, ack awaited, 16 clients, synchronous={m}: {many:.0} jobs/s, {:.2}x raw 1/txn (target full >= 40,000/s); {commits} commits, {:.1} enqueues per commit; {syncs} syncs by the syncer thread",
                many / raw,
                many * took / commits as f64
            );
            let raw_batch = raw_inserts(&root.join("raw-batch"), mode, seconds, 1_000);
            println!(
                "raw rusqlite loop, 1,000 INSERTs per transaction, synchronous={m}: {raw_batch:.0} jobs/s"
            );
            let batched = batches(&daemon, 1_000, seconds);
            println!(
                "socket batch enqueue, 1,000 jobs a request, synchronous={m}: {batched:.0} jobs/s, {:.1}x raw 1/txn, {:.2}x raw 1,000/txn (targets: normal >= 250,000; full >= 200,000)",
                batched / raw,
                batched / raw_batch
            );
            let file = jobctl_file(&daemon, &root, 200_000);
            println!(
                "jobctl enqueue --file, 200,000 NDJSON lines, synchronous={m}: {file:.0} jobs/s (whole process, start to exit)"
            );
        } else {
            // The first second is the warm-up: sent at the same rate, not counted (a
            // daemon just started, its files just made, answers its first jobs slower).
            let all = pickup_latency(&daemon, 1_000, seconds.max(5.0) as u64 + 1);
            let (warm_up, sent): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|&(at, _)| at < 1_000_000);
            let warm_up_worst = warm_up.iter().map(|&(_, l)| l).max().unwrap_or_default();
            let sent: Vec<(i64, Duration)> = sent
                .into_iter()
                .map(|(at, l)| (at - 1_000_000, l))
                .collect();
            let mut latencies: Vec<Duration> = sent.iter().map(|&(_, l)| l).collect();
            latencies.sort();
            println!(
                "pickup latency, steady 1,000 jobs/s through the socket, send to recorded handler start, synchronous={m}: n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= {} ms)",
                latencies.len(),
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                ms(*latencies.last().unwrap()),
                if mode == Synchronous::Full { 3 } else { 2 }
            );
            let runs = late_runs(&sent, Duration::from_millis(2));
            let shown: Vec<String> = runs
                .iter()
                .take(40)
                .map(|(at, n, worst)| format!("+{at:.0}ms x{n} ({:.1})", ms(*worst)))
                .collect();
            println!(
                "  runs of jobs later than 2 ms, synchronous={m}: {} runs, {} jobs: {}; the warm-up second's worst: {:.2} ms",
                runs.len(),
                runs.iter().map(|r| r.1).sum::<usize>(),
                shown.join(", "),
                ms(warm_up_worst)
            );
        }
    }
}
