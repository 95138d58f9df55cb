//! Running as a service: journald log lines, online backup and vacuum, the WAL checkpoint
//! policy under load with long readers, Prometheus metrics, and a full disk (on a real,
//! size-limited tmpfs mounted by the test).

use crate::common::*;
use jobd::job::NewJob;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn enqueue_noops(sandbox: &Sandbox, n: usize, pad: usize) {
    let mut db = sandbox.migrate();
    let payload = json!({"pad": "x".repeat(pad)});
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("noop", payload.clone()))
        .collect();
    for chunk in jobs.chunks(5000) {
        db.write(|tx| tx.enqueue(chunk, 1)).unwrap();
    }
}

fn connect(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.busy_timeout(Duration::from_secs(20)).unwrap();
    conn
}

// ---------------------------------------------------------------- journald

fn journald_run(journal_stream: impl Fn(&Path) -> String) -> String {
    let sandbox = Sandbox::new("", "[retry]\nbase = \"1h\"");
    let mut db = sandbox.migrate();
    db.write(|tx| {
        tx.enqueue(
            &[
                NewJob::new("noop", json!({})),
                NewJob::new("noop", json!({"fail": "retry", "error": "try later"})),
                NewJob::new(
                    "noop",
                    json!({"fail": "permanent", "error": "bad\nsecond line"}),
                ),
            ],
            1,
        )
    })
    .unwrap();
    // The log file exists before jobd starts, so its device and inode can be named.
    std::fs::write(sandbox.path("jobd.log"), "").unwrap();
    let value = journal_stream(&sandbox.path("jobd.log"));
    let mut child = Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--once")
        .env_remove("NOTIFY_SOCKET")
        .env("JOURNAL_STREAM", value)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(sandbox.path("jobd.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    sandbox.track(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    sandbox.log()
}

fn dev_ino(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

fn has_timestamp(line: &str) -> bool {
    // tracing's default text format starts with an RFC 3339 time: 2026-11-22T10:00:00.123Z
    // (a time inside the message, such as "retrying at ...", does not count).
    let text = line.trim_start_matches(|c: char| "<>34567".contains(c));
    let w = text.as_bytes();
    w.len() >= 11
        && w[0..4].iter().all(u8::is_ascii_digit)
        && w[4] == b'-'
        && w[7] == b'-'
        && w[10] == b'T'
}

#[test]
fn under_journald_lines_carry_level_prefixes_and_no_timestamps() {
    let log = journald_run(dev_ino);
    println!("{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let prefix = &line[..3.min(line.len())];
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&prefix),
            "no journald level prefix: {line:?}"
        );
        assert!(!has_timestamp(line), "a timestamp under journald: {line:?}");
        assert!(
            !line.contains(" INFO ") && !line.contains(" ERROR "),
            "a level word: {line:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("jobd ready")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("try later")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>") && l.contains("is dead")),
        "{log}"
    );
    // A multi-line message stays one line, its newline escaped: nothing after it can
    // pass for a line of its own.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>") && l.contains("bad\\nsecond line")),
        "{log}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("<3>second line")),
        "{log}"
    );
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_the_plain_format() {
    // A child of a service inherits JOURNAL_STREAM but may log to a file: not the journal.
    let log = journald_run(|_| "1:1".to_string());
    let first = log.lines().next().expect("a log line");
    assert!(has_timestamp(first), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("<6>")), "{log}");
}

// ---------------------------------------------------------------- backup and vacuum

#[test]
fn backup_while_the_daemon_drains_thousands_of_jobs_is_consistent() {
    let sandbox = Sandbox::new("workers = 4", "");
    let preloaded = 10_000;
    // About 20 MB, so the copy takes a while and the daemon commits during it.
    enqueue_noops(&sandbox, preloaded, 2000);
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(60), "a thousand jobs to finish", || {
        count_state(&sandbox.db(), "succeeded") >= 1000
    });
    // A writer keeps adding jobs while the backup runs, so the copy sees the daemon
    // mid-stream however fast it drains.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = sandbox.db();
        std::thread::spawn(move || {
            let conn = connect(&db);
            let mut added = 0;
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    conn.execute(
                        "INSERT INTO jobs(kind, payload) VALUES ('noop', '{\"from\":\"writer\"}')",
                        [],
                    )
                    .unwrap();
                    added += 1;
                }
                // An outside writer's pace: the load the backup runs under, not a wait.
                std::thread::sleep(Duration::from_millis(5));
            }
            added
        })
    };
    let target = sandbox.path("backups/jobs-backup.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let out = sandbox.jobctl(&["backup", target.to_str().unwrap()]);
    let during = count_state(&sandbox.db(), "succeeded");
    stop.store(true, Ordering::SeqCst);
    let added: i64 = writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    println!("{}", stdout(&out).trim());
    assert!(stdout(&out).contains("job(s)"), "{}", stdout(&out));

    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "backup mode {mode:o}");
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["jobs-backup.db".to_string()]);

    let copy = rusqlite::Connection::open(&target).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let journal: String = copy
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "the copy is one self-contained file");
    let total: i64 = copy
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    let succeeded: i64 = copy
        .query_row(
            "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // One snapshot: every succeeded job has its succeeded attempt, and no attempt is
    // there without its job's move (both are written in one transaction).
    let attempts: i64 = copy
        .query_row(
            "SELECT count(*) FROM job_attempts WHERE outcome = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mismatched: i64 = copy
        .query_row(
            "SELECT count(*) FROM jobs j WHERE (j.state = 'succeeded') <> EXISTS \
             (SELECT 1 FROM job_attempts a WHERE a.job_id = j.id AND a.outcome = 'succeeded')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "backup: {total} jobs, {succeeded} succeeded, {attempts} succeeded attempts; \
         live: {during} succeeded after the backup, writer added {added}"
    );
    assert_eq!(mismatched, 0);
    assert_eq!(succeeded, attempts);
    assert!(total >= preloaded as i64 && total <= preloaded as i64 + added);
    assert!(succeeded >= 1000 && succeeded <= during);
    assert!(succeeded < total, "the copy was taken mid-stream");

    // An existing file is never overwritten without --force.
    let again = sandbox.jobctl(&["backup", target.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists; pass --force"),
        "{}",
        stderr(&again)
    );
    assert_eq!(stderr(&again).lines().count(), 1);
    let forced = sandbox.jobctl(&["backup", "--force", target.to_str().unwrap()]);
    assert!(forced.status.success(), "{}", stderr(&forced));

    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(60)).success());
}

#[test]
fn vacuum_shrinks_the_file_after_a_purge_and_keeps_the_jobs() {
    let sandbox = Sandbox::new("", "");
    enqueue_noops(&sandbox, 20_000, 0);
    let conn = connect(&sandbox.db());
    // Finish most of them, then purge them: free pages that only VACUUM gives back.
    conn.execute_batch(
        "UPDATE jobs SET state = 'succeeded', finished_at = 1 WHERE id > 100; \
         DELETE FROM jobs WHERE state = 'succeeded';",
    )
    .unwrap();
    drop(conn);
    let before = std::fs::metadata(sandbox.db()).unwrap().len();
    let out = sandbox.jobctl(&["vacuum"]);
    assert!(out.status.success(), "{}", stderr(&out));
    println!("{}", stdout(&out).trim());
    let after = std::fs::metadata(sandbox.db()).unwrap().len();
    assert!(after < before / 2, "{before} -> {after}");
    assert_eq!(count_state(&sandbox.db(), "queued"), 100);
    let json_out = sandbox.jobctl(&["--json", "vacuum"]);
    let value: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert!(value["bytes_after"].as_u64().unwrap() > 0);
}

// ---------------------------------------------------------------- WAL policy

/// An outside process's load: 50 jobs with a 400-byte payload per transaction, with
/// `pause` between transactions, until `stop`.
fn outside_writer(
    db: PathBuf,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn = connect(&db);
        let payload = json!({"pad": "x".repeat(400)}).to_string();
        while !stop.load(Ordering::SeqCst) {
            let tx = conn.transaction().unwrap();
            for _ in 0..50 {
                tx.execute(
                    "INSERT INTO jobs(kind, payload) VALUES ('noop', ?1)",
                    [&payload],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            // An outside writer's pace: the load under test, not a wait.
            std::thread::sleep(pause);
        }
    })
}

/// Continuous load (an outside writer plus the daemon's completions) with a reader that
/// holds a read transaction for `hold`, lets go briefly, and starts again. Returns the WAL
/// size sampled every 250 ms.
fn wal_under_load(wal_limit: &str, hold: Duration, run_for: Duration) -> (Vec<u64>, u64) {
    let sandbox = Sandbox::new(
        &format!("workers = 4\nsynchronous = \"normal\"\nwal_limit = \"{wal_limit}\""),
        "",
    );
    sandbox.migrate();
    let mut jobd = sandbox.spawn_jobd(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = outside_writer(sandbox.db(), stop.clone(), Duration::from_millis(10));
    let reader = {
        let stop = stop.clone();
        let db = sandbox.db();
        std::thread::spawn(move || {
            let conn = connect(&db);
            while !stop.load(Ordering::SeqCst) {
                // Like a long `jobctl list` or an sqlite3 session left open: one snapshot,
                // held.
                conn.execute_batch("BEGIN").unwrap();
                let _: i64 = conn
                    .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
                    .unwrap();
                // The long reader under test holds its snapshot this long.
                std::thread::sleep(hold);
                conn.execute_batch("COMMIT").unwrap();
                // A forced checkpoint can only succeed in these pauses; they are short
                // next to the holds, but long enough that a few tries in the run hit one.
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let wal = PathBuf::from(format!("{}-wal", sandbox.db().display()));
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run_for {
        samples.push(size());
        // The sampling period of the measurement (the WAL's size over the run).
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    reader.join().unwrap();
    // Load over: the policy cuts the WAL back below the limit by itself.
    let limit = jobd::config::parse_size(wal_limit).unwrap();
    wait_for_explained(
        Duration::from_secs(10),
        "the WAL to be cut back to its limit after the load",
        || (size() <= limit).then_some(()),
        || format!("the WAL is {} bytes, the limit {limit}", size()),
    );
    let after = size();
    stop_the_daemon_still_running(&mut jobd, &sandbox);
    let done = count_state(&sandbox.db(), "succeeded");
    println!("jobs succeeded during the run: {done}");
    (samples, after)
}

#[test]
fn a_truncate_checkpoint_reports_a_reader_in_the_way_and_then_empties_the_wal() {
    use jobd::store::CheckpointMode;
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let reader = connect(&sandbox.db());
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    let jobs: Vec<NewJob> = (0..500).map(|_| NewJob::new("noop", json!({}))).collect();
    db.write(|tx| tx.enqueue(&jobs, 1)).unwrap();
    let file = db.sqlite().expect("a SQLite store");
    assert!(file.wal_size() > 0);
    let started = Instant::now();
    let blocked = file
        .checkpoint(CheckpointMode::Truncate, Duration::from_millis(100))
        .unwrap();
    assert!(blocked.busy, "{blocked:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited past the limit"
    );
    assert!(file.wal_size() > 0);
    reader.execute_batch("COMMIT").unwrap();
    let done = file
        .checkpoint(CheckpointMode::Truncate, Duration::from_millis(100))
        .unwrap();
    assert!(!done.busy, "{done:?}");
    assert_eq!(file.wal_size(), 0);
    // The busy timeout is back to the configured one for ordinary writes.
    db.write(|tx| tx.enqueue(&jobs[..1], 1)).unwrap();
    assert_eq!(count_state(&sandbox.db(), "queued"), 501);
}

#[test]
fn under_a_steady_load_the_wal_starts_over_without_waiting_for_its_limit() {
    // No reader in the way, and a limit the load would pass within seconds: the
    // checkpointer lets the WAL start over once half of it is in use (PASSIVE rounds
    // alone never get there while commits go on), instead of growing to the limit and
    // cutting it with a TRUNCATE that holds writes back.
    let sandbox = Sandbox::new(
        "workers = 4\nsynchronous = \"normal\"\nwal_limit = \"4MiB\"",
        "",
    );
    sandbox.migrate();
    // The checkpointer says each restart at debug level.
    let mut jobd = sandbox.spawn_jobd_logging(&[], "info,jobd::daemon::checkpointer=debug");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = outside_writer(sandbox.db(), stop.clone(), Duration::from_millis(5));
    wait_for_explained(
        Duration::from_secs(60),
        "the checkpointer to let the WAL start over under load",
        || sandbox.log().contains("the WAL starts over").then_some(()),
        || {
            format!(
                "the WAL is {} bytes; log:\n{}",
                std::fs::metadata(format!("{}-wal", sandbox.db().display()))
                    .map(|m| m.len())
                    .unwrap_or(0),
                sandbox.log()
            )
        },
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    stop_the_daemon_still_running(&mut jobd, &sandbox);
}

/// Checks the daemon lived through the test, then stops it with SIGTERM and waits for a
/// clean exit.
fn stop_the_daemon_still_running(jobd: &mut std::process::Child, sandbox: &Sandbox) {
    assert!(
        jobd.try_wait().unwrap().is_none(),
        "jobd died: {}",
        sandbox.log()
    );
    signal(jobd, libc::SIGTERM);
    assert!(wait_exit(jobd, Duration::from_secs(60)).success());
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

#[test]
fn the_wal_stays_bounded_under_load_while_long_reads_run() {
    let limit = 2u64 << 20;
    let (samples, after) =
        wal_under_load("2MiB", Duration::from_millis(1500), Duration::from_secs(15));
    let max = samples.iter().copied().max().unwrap_or(0);
    println!(
        "WAL MiB every 250 ms (wal_limit 2 MiB; a reader holds 1.5 s, pauses 200 ms): {}",
        samples
            .iter()
            .map(|s| mib(*s))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "max {} MiB; {} MiB after the load stopped",
        mib(max),
        mib(after)
    );
    // With wal_limit far above (1 GiB) the WAL file only ever grows (measured: 21 MiB
    // after 8 s of this load, and still 21 MiB after it stopped). With 2 MiB it is cut
    // back whenever the reader's pause lets it, and to the limit once the load stops.
    let cut_backs = samples
        .windows(2)
        .filter(|w| w[0] > limit && w[1] + limit < w[0])
        .count();
    // How often the reader's pauses line up with a checkpoint depends on how loaded the
    // machine is; once is the floor a policy-less daemon never reaches.
    assert!(cut_backs >= 1, "the WAL was never cut back under load");
    assert!(
        after <= limit,
        "the WAL stayed at {after} bytes after the load"
    );
    assert!(max < 48 << 20, "the WAL reached {max} bytes");
}

// ---------------------------------------------------------------- metrics

/// Checks Prometheus text exposition syntax; returns samples keyed by `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut typed = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
            match kind {
                Some("HELP") => assert!(name.is_some() && tail.is_some(), "{line}"),
                Some("TYPE") => {
                    assert!(
                        matches!(tail, Some("gauge" | "counter" | "histogram")),
                        "{line}"
                    );
                    assert!(
                        typed.insert(name.unwrap().to_string()),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
        let value: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"))
        };
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in inner.split("\",") {
                    let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(!value.trim_end_matches('"').contains('\n'), "{line}");
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

#[test]
fn stats_in_prometheus_format_parse_and_match_the_database() {
    let sandbox = Sandbox::new("", "");
    jobd::store::example::write(&sandbox.db()).unwrap();
    let out = sandbox.jobctl(&["stats", "--format", "prometheus"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    println!("{text}");
    let samples = parse_prometheus(&text);
    let conn = connect(&sandbox.db());
    let mut stmt = conn
        .prepare("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
        .unwrap();
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() >= 3, "the example has several states");
    let mut total = 0.0;
    for (queue, state, n) in &rows {
        let key = format!("jobd_jobs{{queue=\"{queue}\",state=\"{state}\"}}");
        assert_eq!(samples.get(&key), Some(&(*n as f64)), "{key}");
        total += *n as f64;
    }
    let listed: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("jobd_jobs{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(listed, total);
    let attempts: i64 = conn
        .query_row("SELECT count(*) FROM job_attempts", [], |r| r.get(0))
        .unwrap();
    let listed: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("jobd_attempts{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(listed, attempts as f64);
    let dead: i64 = conn
        .query_row("SELECT count(*) FROM jobs WHERE state = 'dead'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(samples["jobd_dead_jobs"], dead as f64);
    assert!(samples
        .keys()
        .any(|k| k.starts_with("jobd_oldest_ready_age_seconds{")));
    // --json is still there, the same as --format json.
    let a = sandbox.jobctl(&["--json", "stats"]);
    let b = sandbox.jobctl(&["stats", "--format", "json"]);
    assert!(a.status.success() && b.status.success());
    let a: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    for (queue, counts) in a["queues"].as_object().unwrap() {
        assert_eq!(counts["states"], b["queues"][queue]["states"]);
    }
}

/// Adds a `[metrics]` textfile rewritten every second to the sandbox's config; its path.
fn write_metrics_every_second(sandbox: &Sandbox) -> PathBuf {
    let textfile = sandbox.path("textfile/jobd.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let text = format!(
        "{}\n[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"\n",
        std::fs::read_to_string(sandbox.config()).unwrap(),
        textfile.display()
    );
    std::fs::write(sandbox.config(), text).unwrap();
    textfile
}

#[test]
fn the_daemon_writes_the_metrics_textfile_atomically() {
    let sandbox = Sandbox::new("", "");
    let textfile = write_metrics_every_second(&sandbox);
    let mut db = sandbox.migrate();
    let mut jobs: Vec<NewJob> = (0..40).map(|_| NewJob::new("noop", json!({}))).collect();
    jobs.push(NewJob::new("noop", json!({"fail": "permanent"})));
    db.write(|tx| tx.enqueue(&jobs, 1)).unwrap();
    let mut jobd = sandbox.spawn_jobd(&[]);
    let mut samples = BTreeMap::new();
    wait_until(Duration::from_secs(30), "metrics for all 41 jobs", || {
        let Ok(text) = std::fs::read_to_string(&textfile) else {
            return false;
        };
        samples = parse_prometheus(&text);
        samples.get("jobd_handler_duration_seconds_count") == Some(&41.0)
    });
    assert_eq!(samples["jobd_processed_total{result=\"succeeded\"}"], 40.0);
    assert_eq!(samples["jobd_processed_total{result=\"dead\"}"], 1.0);
    assert_eq!(
        samples["jobd_jobs{queue=\"default\",state=\"succeeded\"}"],
        40.0
    );
    assert_eq!(samples["jobd_jobs{queue=\"default\",state=\"dead\"}"], 1.0);
    assert_eq!(
        samples["jobd_handler_duration_seconds_bucket{le=\"+Inf\"}"],
        41.0
    );
    assert_eq!(samples["jobd_held_outcomes"], 0.0);
    // Buckets are cumulative.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("jobd_handler_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.iter().all(|v| *v <= 41.0));
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let names: Vec<String> = std::fs::read_dir(textfile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["jobd.prom".to_string()],
        "temp files left behind"
    );
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
}

/// At `synchronous = "full"` the dispatcher's commits are made durable by a sync of the
/// WAL outside the commit, which the metrics count; at `normal` there is none.
#[test]
fn at_full_the_dispatchers_commits_are_synced_by_the_syncer_and_at_normal_not_at_all() {
    for (synchronous, synced) in [("full", true), ("normal", false)] {
        let sandbox = Sandbox::new(&format!("synchronous = \"{synchronous}\""), "");
        let textfile = write_metrics_every_second(&sandbox);
        let mut db = sandbox.migrate();
        let jobs: Vec<NewJob> = (0..20).map(|_| NewJob::new("noop", json!({}))).collect();
        db.write(|tx| tx.enqueue(&jobs, 1)).unwrap();
        let mut jobd = sandbox.spawn_jobd(&[]);
        let mut samples = BTreeMap::new();
        wait_until(Duration::from_secs(30), "metrics for all 20 jobs", || {
            let Ok(text) = std::fs::read_to_string(&textfile) else {
                return false;
            };
            samples = parse_prometheus(&text);
            samples.get("jobd_processed_total{result=\"succeeded\"}") == Some(&20.0)
        });
        let syncs = samples["jobd_wal_syncs_total"];
        let commits = samples["jobd_commits_total"];
        if synced {
            assert!(
                syncs >= 1.0,
                "{synchronous}: {syncs} syncs for {commits} commits"
            );
            assert!(
                syncs <= commits + 1.0,
                "{synchronous}: {syncs} syncs for {commits} commits"
            );
        } else {
            assert_eq!(syncs, 0.0, "{synchronous}: the commits sync themselves");
        }
        signal(&jobd, libc::SIGTERM);
        assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
        let succeeded: i64 = connect(&sandbox.db())
            .query_row(
                "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(succeeded, 20, "{synchronous}");
    }
}

// ---------------------------------------------------------------- disk full

/// A size-limited tmpfs, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes a filler file until the file system refuses with ENOSPC.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0xAAu8; 4096];
    let mut written = 0;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn on_a_full_disk_enqueues_fail_clearly_outcomes_wait_and_the_daemon_recovers() {
    let base = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(base.path().join("disk"), "4m") {
        Ok(disk) => disk,
        Err(reason) => {
            // Only where the machine cannot mount (not root, no CAP_SYS_ADMIN).
            println!("SKIPPED: cannot mount a small tmpfs here: {reason}");
            return;
        }
    };
    let db_path = disk.dir.join("jobs.db");
    // Jobs that take a moment, so outcomes arrive while the disk is full.
    let sandbox = Sandbox::new(
        "workers = 4",
        "[commands.slow]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.5\"]\n",
    );
    let config = std::fs::read_to_string(sandbox.config()).unwrap().replace(
        &format!("database = \"{}\"", sandbox.db().display()),
        &format!("database = \"{}\"", db_path.display()),
    );
    std::fs::write(sandbox.config(), config).unwrap();
    let ctl = |args: &[&str]| {
        Command::new(JOBCTL)
            .arg("--config")
            .arg(sandbox.config())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(ctl(&["migrate"]).status.success());
    let mut ids = Vec::new();
    for _ in 0..60 {
        let out = ctl(&["enqueue", "exec", "--payload", "{\"command\":\"slow\"}"]);
        assert!(out.status.success(), "{}", stderr(&out));
        ids.push(stdout(&out).trim().parse::<i64>().unwrap());
    }
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(30), "jobs to start", || {
        count_state(&db_path, "running") + count_state(&db_path, "succeeded") > 0
    });

    let filler = disk.dir.join("filler");
    let filled = fill(&filler);
    println!("filler: {} KiB", filled / 1024);
    // Enqueue until the disk refuses; SQLite may still fit a few rows in pages it has.
    let mut refused = None;
    let start = Instant::now();
    while refused.is_none() && start.elapsed() < Duration::from_secs(30) {
        let out = ctl(&[
            "enqueue",
            "exec",
            "--payload",
            &json!({"command": "slow", "pad": "y".repeat(2000)}).to_string(),
        ]);
        if out.status.success() {
            ids.push(stdout(&out).trim().parse::<i64>().unwrap());
            fill(&disk.dir.join(format!("filler-{}", ids.len())));
        } else {
            refused = Some(out);
        }
    }
    let refused = refused.expect("an enqueue on a full disk was refused");
    let message = stderr(&refused);
    println!("jobctl said: {message}");
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("jobctl: the disk is full: cannot write "),
        "{message}"
    );

    wait_until(
        Duration::from_secs(30),
        "the daemon to hold outcomes in memory",
        || sandbox.log().contains("holding"),
    );
    // The socket refuses with a reason and keeps the connection for the retry.
    let mut socket = crate::socket::Client::connect_to(&sandbox.path("var/run/jobd.sock"));
    let padded = json!({"op": "enqueue", "job": {"kind": "exec",
        "payload": {"command": "slow", "pad": "z".repeat(2000)}}})
    .to_string();
    let answer = socket.ask(&padded);
    println!("the socket said: {answer}");
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["error"]["code"], "not_enqueued", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{answer}"
    );
    // Each refusal is a write the dispatcher tried and lost; it answers the next one too,
    // and is still there.
    let again = socket.ask(&padded);
    assert_eq!(again["error"]["code"], "not_enqueued", "{again}");
    assert!(
        jobd.try_wait().unwrap().is_none(),
        "jobd exited on a full disk: {}",
        sandbox.log()
    );
    for entry in std::fs::read_dir(&disk.dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("filler")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    // The same connection enqueues once there is room again.
    let answer = std::cell::RefCell::new(serde_json::Value::Null);
    wait_for_explained(
        Duration::from_secs(30),
        "the socket to enqueue again once there is room",
        || {
            let reply = socket.ask(&padded);
            let ok = reply["ok"] == true;
            *answer.borrow_mut() = reply;
            ok.then_some(())
        },
        || format!("the last answer: {}", answer.borrow()),
    );
    let answer = answer.into_inner();
    ids.push(answer["id"].as_i64().expect("the new job's id"));
    wait_until(Duration::from_secs(60), "every job to succeed", || {
        count_state(&db_path, "succeeded") == ids.len() as i64
    });
    let log = sandbox.log();
    for line in log
        .lines()
        .filter(|l| l.contains("write") || l.contains("WAL"))
    {
        println!("jobd: {line}");
    }
    assert!(log.contains("writable again"), "{log}");
    assert_eq!(
        log.matches("cannot write to the queue database").count(),
        1,
        "the error is logged once, not every second: {log}"
    );
    // None lost, none run twice: one succeeded attempt per job.
    let conn = connect(&db_path);
    let attempts: i64 = conn
        .query_row(
            "SELECT count(*) FROM job_attempts WHERE outcome = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempts, ids.len() as i64);
    drop(conn);
    assert!(jobd.try_wait().unwrap().is_none(), "jobd still runs");
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
}

/// scripts/install.sh staged into a DESTDIR (as a package build does), with the binaries
/// this test run built.
#[test]
fn install_sh_stages_binaries_units_and_a_private_config_and_keeps_an_existing_one() {
    let root = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jobd")).parent().unwrap();
    let install = |bin_dir: &Path| {
        Command::new("sh")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
            .env("DESTDIR", root.path())
            .env("PREFIX", "/opt/jobd")
            .env("BIN_DIR", bin_dir)
            .output()
            .unwrap()
    };
    let out = install(bin_dir);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let staged = |p: &str| root.path().join(p.trim_start_matches('/'));
    let mode = |p: &str| {
        std::fs::metadata(staged(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    for bin in ["jobd", "jobctl"] {
        assert_eq!(mode(&format!("/opt/jobd/bin/{bin}")), 0o755);
    }
    let version = Command::new(staged("/opt/jobd/bin/jobd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&version).starts_with("jobd "), "{version:?}");
    let unit = std::fs::read_to_string(staged("/etc/systemd/system/jobd.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStart=/opt/jobd/bin/jobd")),
        "ExecStart follows PREFIX:\n{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
    assert_eq!(mode("/etc/systemd/system/jobd.socket"), 0o644);
    assert_eq!(mode("/usr/lib/sysusers.d/jobd.conf"), 0o644);
    assert_eq!(mode("/usr/lib/tmpfiles.d/jobd.conf"), 0o644);
    assert_eq!(mode("/etc/jobd/credentials"), 0o700);
    assert_eq!(
        mode("/etc/jobd/jobd.toml"),
        0o640,
        "the config is not world-readable"
    );
    assert!(staged("/opt/jobd/share/doc/jobd/jobd.toml").exists());
    // Completions for three shells and the man pages, readable by all.
    for file in [
        "/opt/jobd/share/bash-completion/completions/jobctl",
        "/opt/jobd/share/zsh/site-functions/_jobctl",
        "/opt/jobd/share/fish/vendor_completions.d/jobctl.fish",
        "/opt/jobd/share/man/man1/jobctl.1",
        "/opt/jobd/share/man/man1/jobctl-top.1",
        "/opt/jobd/share/man/man1/jobctl-enqueue.1",
    ] {
        assert_eq!(mode(file), 0o644, "{file}");
        let text = std::fs::read_to_string(staged(file)).unwrap();
        assert!(text.contains("jobctl"), "{file}: {text}");
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(staged("/opt/jobd/share/bash-completion/completions/jobctl"))
        .output()
        .unwrap();
    assert!(bash.status.success(), "{}", stderr(&bash));
    assert!(
        std::fs::read_to_string(staged("/opt/jobd/share/man/man1/jobctl.1"))
            .unwrap()
            .contains(".TH jobctl 1"),
        "a man page"
    );
    // The config it writes is one the daemon accepts.
    let check = Command::new(staged("/opt/jobd/bin/jobd"))
        .arg("--check-config")
        .arg("--config")
        .arg(staged("/etc/jobd/jobd.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );

    // Installing again keeps the operator's config.
    let conf = staged("/etc/jobd/jobd.toml");
    let edited = format!("{}\nworkers = 3\n", std::fs::read_to_string(&conf).unwrap());
    std::fs::write(&conf, &edited).unwrap();
    let again = install(bin_dir);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("kept existing"),
        "{}",
        stdout(&again)
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);

    // Without built binaries it says what to do and installs nothing.
    let empty = tempfile::tempdir().unwrap();
    let refused = install(empty.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("not found; run 'cargo build --release' first"),
        "{}",
        stderr(&refused)
    );
}
