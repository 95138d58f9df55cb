//! Metrics in the Prometheus text exposition format (version 0.0.4): what `jobctl stats
//! --format prometheus` prints, and the node_exporter textfile the daemon rewrites every
//! `metrics.interval` when `metrics.textfile` is set.
//!
//! Gauges read from the database (jobs per queue and state, oldest ready age, attempts
//! per outcome, file sizes) and the count of watched-folder entries not taken in (from
//! `<data_dir>/watch-problems.json`) are the same in both. The daemon adds what only it knows:
//! jobs processed since start, commits, outcomes held in memory, and a histogram of how
//! long handlers ran. The textfile is written on its own thread with its own read
//! connection, so a slow count never stalls the dispatcher.

use crate::daemon::dispatcher::Counters;
use crate::flow::{DestinationLimit, DestinationView};
use crate::job::{JobState, UnixMillis};
use crate::store::{ReadOnFirstUse, Stats, Store, StoreError};
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Upper bounds of the handler duration buckets, in seconds: from a noop to a long export.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0,
];

/// A cumulative-on-render histogram of handler run times.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; DURATION_BUCKETS.len() + 1],
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[slot] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What the daemon hands the textfile writer each interval.
#[derive(Debug, Clone)]
pub struct DaemonSnapshot {
    pub textfile: PathBuf,
    pub counters: Counters,
    pub handler_durations: Histogram,
    /// Outcomes waiting in memory because the database could not be written.
    pub held_outcomes: usize,
    pub started_at: UnixMillis,
    pub now: UnixMillis,
    /// The destinations' limits of the daemon's config, for their gauges.
    pub destination_limits: Vec<DestinationLimit>,
}

/// The gauges read from the database.
#[derive(Debug, Clone, Default)]
pub struct DbMetrics {
    pub stats: Stats,
    pub attempts: BTreeMap<String, u64>,
    pub database_bytes: u64,
    pub wal_bytes: u64,
    /// Entries the watchers see but do not take in (`<data_dir>/watch-problems.json`,
    /// what `jobctl stats` lists as "not taken in").
    pub not_taken_in: usize,
    /// Each destination and key, as `jobctl destinations` shows it.
    pub destinations: Vec<DestinationView>,
    pub now: UnixMillis,
}

impl DbMetrics {
    /// The database's gauges, and the watched-folder problems the daemon last reported
    /// in `data_dir`.
    pub fn read(
        db: &dyn Store,
        data_dir: &Path,
        limits: &[DestinationLimit],
        now: UnixMillis,
    ) -> Result<DbMetrics, StoreError> {
        Ok(DbMetrics {
            destinations: db.destinations(limits, now)?,
            now,
            stats: db.stats(now)?,
            attempts: db.attempt_counts()?,
            // A driver without a database file has no file sizes to show.
            database_bytes: db.sqlite().map_or(0, |file| file.file_size()),
            wal_bytes: db.sqlite().map_or(0, |file| file.wal_size()),
            not_taken_in: crate::ingest::report::read(data_dir).len(),
        })
    }
}

/// Renders the metrics; `daemon` adds the daemon's own series.
pub fn render(db: &DbMetrics, daemon: Option<&DaemonSnapshot>) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "jobd_jobs",
        "gauge",
        "Jobs in the database per queue and state; state=\"claimed\" counts running jobs whose handler has not started yet, apart from state=\"running\".",
    );
    for (queue, q) in &db.stats.queues {
        let _ = writeln!(
            out,
            "jobd_jobs{{queue=\"{}\",state=\"claimed\"}} {}",
            escape(queue),
            q.claimed
        );
        for state in JobState::ALL {
            let n = q.states.get(state.as_str()).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "jobd_jobs{{queue=\"{}\",state=\"{}\"}} {n}",
                escape(queue),
                state.as_str()
            );
        }
    }
    header(
        &mut out,
        "jobd_oldest_ready_age_seconds",
        "gauge",
        "How long the longest-waiting ready job of each queue has been due (0: none waiting).",
    );
    for (queue, q) in &db.stats.queues {
        let age = q.oldest_ready_age_ms.unwrap_or(0).max(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "jobd_oldest_ready_age_seconds{{queue=\"{}\"}} {}",
            escape(queue),
            number(age)
        );
    }
    header(
        &mut out,
        "jobd_queue_paused",
        "gauge",
        "1 while an operator has paused the queue (jobctl pause): nothing new is claimed from it.",
    );
    for (queue, q) in &db.stats.queues {
        let _ = writeln!(
            out,
            "jobd_queue_paused{{queue=\"{}\"}} {}",
            escape(queue),
            u8::from(q.paused)
        );
    }
    header(
        &mut out,
        "jobd_attempts",
        "gauge",
        "Attempts recorded in the database per outcome; purging finished jobs removes theirs.",
    );
    for (outcome, n) in &db.attempts {
        let _ = writeln!(out, "jobd_attempts{{outcome=\"{}\"}} {n}", escape(outcome));
    }
    header(
        &mut out,
        "jobd_dead_jobs",
        "gauge",
        "Jobs in the dead-letter box, all queues.",
    );
    let _ = writeln!(out, "jobd_dead_jobs {}", db.stats.total(JobState::Dead));
    header(
        &mut out,
        "jobd_database_bytes",
        "gauge",
        "Size of the database file, WAL not included.",
    );
    let _ = writeln!(out, "jobd_database_bytes {}", db.database_bytes);
    header(
        &mut out,
        "jobd_wal_bytes",
        "gauge",
        "Size of the write-ahead log file.",
    );
    let _ = writeln!(out, "jobd_wal_bytes {}", db.wal_bytes);
    header(
        &mut out,
        "jobd_watch_not_taken_in",
        "gauge",
        "Entries in watched folders the watchers see but do not take in (symlinks, non-UTF-8 names, non-files, unreadable files); jobctl stats lists them.",
    );
    let _ = writeln!(out, "jobd_watch_not_taken_in {}", db.not_taken_in);
    destination_gauges(&mut out, db);

    let Some(d) = daemon else {
        return out;
    };
    header(
        &mut out,
        "jobd_processed_total",
        "counter",
        "Job outcomes this daemon committed since it started, per result.",
    );
    for (result, n) in [
        ("succeeded", d.counters.succeeded),
        ("retried", d.counters.retried),
        ("dead", d.counters.dead),
        ("cancelled", d.counters.cancelled),
    ] {
        let _ = writeln!(out, "jobd_processed_total{{result=\"{result}\"}} {n}");
    }
    header(
        &mut out,
        "jobd_commits_total",
        "counter",
        "Write transactions the dispatcher committed since start.",
    );
    let _ = writeln!(out, "jobd_commits_total {}", d.counters.commits);
    header(
        &mut out,
        "jobd_wal_syncs_total",
        "counter",
        "Syncs of the WAL that made the dispatcher's commits durable since start (synchronous=full; one covers every commit made while the last ran).",
    );
    let _ = writeln!(out, "jobd_wal_syncs_total {}", d.counters.wal_syncs);
    header(
        &mut out,
        "jobd_held_outcomes",
        "gauge",
        "Outcomes kept in memory because the database could not be written (e.g. disk full).",
    );
    let _ = writeln!(out, "jobd_held_outcomes {}", d.held_outcomes);
    header(
        &mut out,
        "jobd_start_time_seconds",
        "gauge",
        "When this daemon started, in seconds since the Unix epoch.",
    );
    let _ = writeln!(
        out,
        "jobd_start_time_seconds {}",
        number(d.started_at as f64 / 1000.0)
    );
    let h = &d.handler_durations;
    header(
        &mut out,
        "jobd_handler_duration_seconds",
        "histogram",
        "How long handlers ran, per attempt, since start.",
    );
    let mut cumulative = 0;
    for (le, n) in DURATION_BUCKETS.iter().zip(h.counts.iter()) {
        cumulative += n;
        let _ = writeln!(
            out,
            "jobd_handler_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            number(*le)
        );
    }
    let _ = writeln!(
        out,
        "jobd_handler_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "jobd_handler_duration_seconds_sum {}",
        number(h.sum_seconds)
    );
    let _ = writeln!(out, "jobd_handler_duration_seconds_count {}", h.count);
    out
}

/// Per destination and key: jobs waiting and in flight, tokens, and the hold.
fn destination_gauges(out: &mut String, db: &DbMetrics) {
    let labels = |v: &DestinationView| {
        format!(
            "destination=\"{}\",key=\"{}\"",
            escape(&v.destination),
            escape(&v.key)
        )
    };
    type Gauge<'a> = (
        &'a str,
        &'a str,
        &'a dyn Fn(&DestinationView) -> Option<f64>,
    );
    let gauges: [Gauge<'_>; 5] = [
        (
            "jobd_destination_waiting",
            "Queued or retrying jobs of each destination and key.",
            &|v| Some(v.waiting as f64),
        ),
        (
            "jobd_destination_in_flight",
            "Running (or claimed) jobs of each destination and key.",
            &|v| Some(v.in_flight as f64),
        ),
        (
            "jobd_destination_tokens",
            "Tokens in the bucket of each destination and key with a rate_limit.",
            &|v| v.tokens,
        ),
        (
            "jobd_destination_held",
            "1 while the destination (and key) is held: none of its jobs is claimed.",
            &|v| Some(f64::from(u8::from(v.is_held(db.now)))),
        ),
        (
            "jobd_destination_held_seconds",
            "How long the destination's hold has left to run (0: not held).",
            &|v| {
                Some(match v.held_until.filter(|_| v.is_held(db.now)) {
                    Some(until) => (until - db.now) as f64 / 1000.0,
                    None => 0.0,
                })
            },
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        for v in &db.destinations {
            if let Some(value) = value(v) {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(v), number(value));
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Floats as Prometheus reads them: no exponent surprises, integers without `.0`.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Writes `text` to `path` atomically ([`crate::files::AtomicFile`]: a temporary file
/// in the same directory, unique per call and not ending in `.prom`, which node_exporter
/// skips; mode 0640: files the daemon writes are never world-readable, so node_exporter's
/// user must be in the jobd group). A reader never sees half a file.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    if path.file_name().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    }
    crate::files::write_atomic(path, text.as_bytes())
}

/// The textfile writer thread: for every snapshot the dispatcher sends, reads the
/// database gauges on its own connection and rewrites the file. Ends when the dispatcher
/// drops its sender.
pub fn spawn_textfile_writer(
    database: PathBuf,
    data_dir: PathBuf,
    busy_timeout: Duration,
    snapshots: Receiver<DaemonSnapshot>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("jobd-metrics".into())
        .spawn(move || {
            let mut reader = ReadOnFirstUse::new(database, busy_timeout);
            let mut failing = false;
            for snapshot in snapshots.iter() {
                let result = (|| -> Result<(), String> {
                    let gauges = DbMetrics::read(
                        reader.get().map_err(|e| e.to_string())?,
                        &data_dir,
                        &snapshot.destination_limits,
                        snapshot.now,
                    )
                    .map_err(|e| e.to_string())?;
                    let text = render(&gauges, Some(&snapshot));
                    write_textfile(&snapshot.textfile, &text)
                        .map_err(|e| format!("cannot write {}: {e}", snapshot.textfile.display()))
                })();
                match result {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("metrics textfile written again");
                    }
                    Ok(()) => {}
                    // Once per failure streak: a full disk must not flood the journal.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("metrics: {e}");
                    }
                    Err(e) => tracing::debug!("metrics: {e}"),
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueueStats;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(4000));
        let snapshot = DaemonSnapshot {
            textfile: PathBuf::from("x.prom"),
            counters: Counters::default(),
            handler_durations: h,
            held_outcomes: 0,
            started_at: 1_700_000_000_000,
            now: 1_700_000_000_000,
            destination_limits: Vec::new(),
        };
        let text = render(&DbMetrics::default(), Some(&snapshot));
        assert!(text.contains("jobd_handler_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("jobd_handler_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("jobd_handler_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("jobd_handler_duration_seconds_bucket{le=\"1800\"} 2\n"));
        assert!(text.contains("jobd_handler_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("jobd_handler_duration_seconds_count 3\n"));
        assert!(text.contains("jobd_start_time_seconds 1700000000\n"));
    }

    #[test]
    fn every_state_of_a_queue_is_a_series_and_labels_are_escaped() {
        let mut db = DbMetrics::default();
        let mut q = QueueStats::default();
        q.states.insert("queued".into(), 3);
        q.oldest_ready_age_ms = Some(1500);
        db.stats.queues.insert("we\"ird\\".into(), q);
        let text = render(&db, None);
        assert!(text.contains("jobd_jobs{queue=\"we\\\"ird\\\\\",state=\"queued\"} 3\n"));
        assert!(text.contains("jobd_jobs{queue=\"we\\\"ird\\\\\",state=\"dead\"} 0\n"));
        assert!(text.contains("jobd_oldest_ready_age_seconds{queue=\"we\\\"ird\\\\\"} 1.5\n"));
        assert!(!text.contains("jobd_processed_total"));
        assert!(text.contains("jobd_watch_not_taken_in 0\n"));
        db.not_taken_in = 2;
        assert!(render(&db, None).contains("jobd_watch_not_taken_in 2\n"));
    }
}
