//! PostgreSQL figures (docs/postgres.md, docs/benchmarks.md): drain of noop jobs with 1, 2
//! and 3 real jobd daemons (4 workers each) against the local server, batch enqueue
//! through the store, and pickup latency from a plain INSERT (NOTIFY) and from the
//! enqueue socket: the handler's start (job_attempts.started_us) minus the moment the
//! row was committed or the line written.
//!
//! `cargo bench --bench postgres [-- --jobs N --samples N]`; the server is
//! JOBD_TEST_DATABASE_URL or the local one. Each run makes and drops its own database.

use jobd::dburl::PostgresUrl;
use jobd::job::NewJob;
use jobd::store::postgres::{PgOptions, PgStore};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

fn server() -> PostgresUrl {
    let text = std::env::var("JOBD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    PostgresUrl::parse("JOBD_TEST_DATABASE_URL", &text).unwrap()
}

struct Database {
    admin: PostgresUrl,
    url: PostgresUrl,
    name: String,
}

impl Database {
    fn create() -> Database {
        let admin = server();
        let name = format!(
            "jobd_bench_{}_{:06x}",
            std::process::id(),
            fastrand::u32(..0xffffff)
        );
        let mut client = admin
            .config()
            .connect(postgres::NoTls)
            .expect("a PostgreSQL server");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let url = admin.with_database(&name);
        drop(
            PgStore::open(
                &url,
                PgOptions {
                    migrate: true,
                    ..PgOptions::new("bench")
                },
            )
            .unwrap(),
        );
        Database { admin, url, name }
    }

    fn client(&self) -> postgres::Client {
        self.url.config().connect(postgres::NoTls).unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut client) = self.admin.config().connect(postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &Database, node: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let socket = data.join("run/jobd.sock");
    let config = dir.path().join("jobd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\ndata_dir = \"{}\"\nsocket = \"{}\"\nnode = \"{node}\"\nworkers = 4\n[log]\nlevel = \"warn\"\n",
            db.url.secret_text(),
            data.display(),
            socket.display()
        ),
    )
    .unwrap();
    let child = Command::new(JOBD)
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        _dir: dir,
        socket,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !daemon.socket.exists() {
        assert!(Instant::now() < deadline, "jobd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

fn wait_done(db: &Database, n: i64) {
    let mut client = db.client();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let done: i64 = client
            .query_one("SELECT count(*) FROM jobs WHERE state = 'succeeded'", &[])
            .unwrap()
            .get(0);
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "drain did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain(daemons: usize, jobs: usize) -> f64 {
    let db = Database::create();
    let nodes: Vec<Daemon> = (0..daemons).map(|i| start(&db, &format!("d{i}"))).collect();
    let started = Instant::now();
    db.client()
        .batch_execute(&format!(
            "INSERT INTO jobs (kind, payload) SELECT 'noop', '{{}}' FROM generate_series(1, {jobs})"
        ))
        .unwrap();
    wait_done(&db, jobs as i64);
    let took = started.elapsed();
    drop(nodes);
    jobs as f64 / took.as_secs_f64()
}

fn batch_enqueue(jobs: usize) -> f64 {
    let db = Database::create();
    let store = PgStore::open(&db.url, PgOptions::new("bench")).unwrap();
    let batch: Vec<NewJob> = (0..jobs)
        .map(|_| NewJob::new("noop", serde_json::json!({})))
        .collect();
    let started = Instant::now();
    for chunk in batch.chunks(10_000) {
        store.write(|tx| tx.enqueue(chunk, 0)).unwrap();
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Pickup latency in ms: from a committed INSERT (psql-style), or from a line written to
/// the enqueue socket, to the handler's start.
fn pickup(samples: usize, via_socket: bool) -> (f64, f64) {
    let db = Database::create();
    let daemon = start(&db, "p0");
    let mut client = db.client();
    let mut latencies = Vec::with_capacity(samples);
    let mut stream =
        via_socket.then(|| std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap());
    let mut reader = stream
        .as_ref()
        .map(|s| std::io::BufReader::new(s.try_clone().unwrap()));
    for i in 0..samples {
        // Past the trigger's 100 ms debounce, so each sample is a fresh notice.
        std::thread::sleep(Duration::from_millis(120));
        let sent_us = now_us();
        if let Some(stream) = stream.as_mut() {
            writeln!(
                stream,
                "{{\"op\": \"enqueue\", \"job\": {{\"kind\": \"noop\", \"payload\": {{\"i\": {i}}}}}}}"
            )
            .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(reader.as_mut().unwrap(), &mut line).unwrap();
        } else {
            client
                .batch_execute(&format!(
                    "INSERT INTO jobs (kind, payload) VALUES ('noop', '{{\"i\": {i}}}')"
                ))
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let started_us: i64 = loop {
            let row = client
                .query_opt(
                    "SELECT a.started_us FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE (j.payload->>'i')::int = $1 AND a.started_us IS NOT NULL",
                    &[&(i as i32)],
                )
                .unwrap();
            if let Some(row) = row {
                break row.get(0);
            }
            assert!(Instant::now() < deadline, "job {i} not picked up");
            std::thread::sleep(Duration::from_millis(2));
        };
        latencies.push((started_us - sent_us) as f64 / 1000.0);
    }
    drop(daemon);
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let jobs = arg("--jobs", 20_000);
    let samples = arg("--samples", 100);
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .unwrap_or_default();
    println!("PostgreSQL figures (load before: {})", load());
    if only == "socket" {
        let (p50, p99) = pickup(samples, true);
        println!("pickup from the socket: p50 {p50:.2} ms, p99 {p99:.2} ms ({samples} samples)");
        return;
    }
    for daemons in 1..=3 {
        println!(
            "drain, {daemons} daemon(s) x 4 workers, {jobs} noop jobs: {:.0} jobs/s (load {})",
            drain(daemons, jobs),
            load()
        );
    }
    println!(
        "batch enqueue, 10,000 per transaction: {:.0} jobs/s",
        batch_enqueue(jobs.max(10_000))
    );
    let (p50, p99) = pickup(samples, false);
    println!("pickup from INSERT: p50 {p50:.2} ms, p99 {p99:.2} ms ({samples} samples)");
    let (p50, p99) = pickup(samples, true);
    println!("pickup from the socket: p50 {p50:.2} ms, p99 {p99:.2} ms ({samples} samples)");
    println!("load after: {}", load());
}
