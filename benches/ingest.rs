//! Ingest benchmark against the real daemon binary; prints its figures.
//! - socket enqueue of single jobs, pipelined from one client (synchronous=normal);
//! - acknowledgement latency at a steady 1,000 jobs/s (synchronous=full);
//! - rename-in file to job row (p50).
//!
//! Run: `CARGO_BUILD_JOBS=1 cargo bench --bench ingest`

use jobd::store::{JobFilter, OpenOptions, Store};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    socket: PathBuf,
    db: PathBuf,
    input: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, synchronous: &str) -> Daemon {
    let config = dir.join("jobd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{d}/jobs.db\"\ndata_dir = \"{d}/var\"\nsocket = \"{d}/jobd.sock\"\n\
             synchronous = \"{synchronous}\"\n[log]\nlevel = \"warn\"\n\
             [[watch]]\npath = \"{d}/in\"\nkind = \"noop\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let socket = dir.join("jobd.sock");
    for _ in 0..500 {
        if UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon {
        child,
        socket,
        db: dir.join("jobs.db"),
        input: dir.join("in"),
    }
}

// Delayed an hour, so the workers leave them be and the figure is the enqueue path's.
const LINE: &str =
    "{\"op\":\"enqueue\",\"job\":{\"kind\":\"noop\",\"payload\":{\"n\":1},\"delay\":\"1h\"}}\n";

fn pipelined_rate(daemon: &Daemon, count: usize) -> f64 {
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut chunk = String::new();
        for n in 0..count {
            chunk.push_str(LINE);
            if n % 1000 == 999 {
                writer.write_all(chunk.as_bytes()).unwrap();
                chunk.clear();
            }
        }
        writer.write_all(chunk.as_bytes()).unwrap();
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    sender.join().unwrap();
    count as f64 / started.elapsed().as_secs_f64()
}

fn paced_latencies(daemon: &Daemon, rate: u64, seconds: u64) -> Vec<Duration> {
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let count = (rate * seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..count {
            let due = start + interval * n as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sent_tx.send(Instant::now()).unwrap();
            writer.write_all(LINE.as_bytes()).unwrap();
        }
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let sent = sent_rx.recv().unwrap();
        latencies.push(sent.elapsed());
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    sender.join().unwrap();
    latencies.sort();
    latencies
}

fn rename_to_row(daemon: &Daemon, dir: &Path, files: usize) -> Vec<Duration> {
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let db = jobd::store::open(&daemon.db, &OpenOptions::default()).unwrap();
    // The newest row only: cheap enough to ask every half millisecond.
    let newest_name = |db: &dyn Store| {
        db.list(&JobFilter {
            limit: 1,
            ..JobFilter::default()
        })
        .unwrap()
        .first()
        .and_then(|j| j.payload["name"].as_str().map(String::from))
    };
    let mut taken = Vec::with_capacity(files);
    for n in 0..files {
        let name = format!("bench-{n}.csv");
        std::fs::write(outbox.join(&name), format!("row {n}\n")).unwrap();
        let started = Instant::now();
        std::fs::rename(outbox.join(&name), daemon.input.join(&name)).unwrap();
        while newest_name(&*db).as_deref() != Some(name.as_str()) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "file {n} never became a job"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        taken.push(started.elapsed());
    }
    taken.sort();
    taken
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let normal = dir.path().join("normal");
    std::fs::create_dir_all(&normal).unwrap();
    let daemon = start(&normal, "normal");
    pipelined_rate(&daemon, 5_000); // warm-up
    let rate = pipelined_rate(&daemon, 100_000);
    println!("socket, pipelined single-job enqueues, one client, synchronous=normal: {rate:.0} jobs/s (target >= 30,000)");
    drop(daemon);

    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let daemon = start(&full, "full");
    let latencies = paced_latencies(&daemon, 1_000, 5);
    println!(
        "socket, steady 1,000 jobs/s for 5 s, synchronous=full: ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 10 ms)",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0
    );
    let taken = rename_to_row(&daemon, &full, 200);
    println!(
        "watch, rename-in file to committed job row (200 files, synchronous=full): p50 {:.1} ms, p99 {:.1} ms (target p50 <= 50 ms)",
        percentile(&taken, 0.50).as_secs_f64() * 1000.0,
        percentile(&taken, 0.99).as_secs_f64() * 1000.0
    );
}
