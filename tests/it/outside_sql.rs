//! Outside writers and old databases: the machine's own `sqlite3` CLI and python3's
//! `sqlite3` module (not the SQLite bundled in jobd) enqueue by plain SQL into a database
//! the real daemon runs on, and a database made by schema 3 is migrated without losing a
//! row.

use crate::common::{stderr, stdout, wait_until, Sandbox, JOBCTL, JOBD};
use jobd::store::schema::MIGRATIONS;
use jobd::store::{OpenOptions, StoreError};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A database as schema 3 (migrations 0001-0003) made it.
fn schema_3_database(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    for (_, sql) in &MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 3").unwrap();
    conn
}

/// Jobs in every state, with attempts, a parent and child, ingest and sync rows.
const SCHEMA_3_ROWS: &str = "
INSERT INTO jobs (id, queue, kind, payload, state, priority, attempts, max_attempts, run_at,
                  lease_until, worker, unique_key, parent_id, last_error, deadline_at,
                  cancel_requested, stage, created_at, updated_at, finished_at, source)
VALUES
 (1, 'default', 'noop', '{}', 'queued', 0, 0, NULL, 1000, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 900, 900, NULL, NULL),
 (2, 'reports', 'exec', '{\"command\":\"report\"}', 'running', 5, 1, 3, 1000, 61000, 'host:1', 'r:1', NULL, NULL, 99000, 1, 0, 900, 1000, NULL, 'socket'),
 (3, 'default', 'http', '{\"endpoint\":\"e\"}', 'retrying', 0, 2, NULL, 5000, NULL, 'host:1', NULL, NULL, 'upstream 503', NULL, 0, 0, 900, 2000, NULL, NULL),
 (4, 'default', 'csv_import', '{\"file\":\"a.csv\"}', 'waiting', 0, 1, NULL, 1000, NULL, 'host:1', NULL, NULL, NULL, NULL, 0, 0, 900, 2000, NULL, 'watch'),
 (5, 'default', 'noop', '{}', 'succeeded', 0, 1, NULL, 1000, NULL, 'host:1', 'k:5', NULL, NULL, NULL, 0, 0, 900, 2000, 2000, NULL),
 (6, 'default', 'noop', '{\"fail\":\"permanent\"}', 'dead', -3, 3, 3, 1000, NULL, 'host:1', NULL, NULL, 'broken', NULL, 0, 0, 900, 2000, 2000, NULL),
 (7, 'default', 'noop', '{}', 'cancelled', 0, 0, NULL, 1000, NULL, NULL, NULL, NULL, 'cancelled by an operator', NULL, 0, 0, 900, 2000, 2000, NULL),
 (8, 'default', 'http', '{\"part\":1}', 'queued', 0, 0, NULL, 1000, NULL, NULL, NULL, 4, NULL, NULL, 0, 0, 900, 900, NULL, NULL),
 (9, 'default', 'http', '{\"part\":2}', 'succeeded', 0, 1, NULL, 1000, NULL, 'host:1', NULL, 4, NULL, NULL, 0, 1, 900, 2000, 2000, NULL);
INSERT INTO job_attempts (id, job_id, attempt, worker, started_at, finished_at, outcome, error, detail)
VALUES
 (1, 3, 1, 'host:1', 1000, 1100, 'retry', 'upstream 503', '{\"status\":503}'),
 (2, 3, 2, 'host:1', 1200, 1300, 'retry', 'upstream 503', NULL),
 (3, 4, 1, 'host:1', 1000, 1010, 'waiting', NULL, NULL),
 (4, 5, 1, 'host:1', 1000, 2000, 'succeeded', NULL, NULL),
 (5, 6, 3, 'host:1', 1000, 2000, 'dead', 'broken', NULL),
 (6, 9, 1, 'host:1', 1000, 2000, 'succeeded', NULL, NULL);
INSERT INTO ingest_files (token, job_id, watch, name, sha256, size, ingested_at)
VALUES ('tok-1', 4, '/srv/in', 'a.csv', '0000000000000000000000000000000000000000000000000000000000000000', 12, 900),
       ('tok-2', NULL, '/srv/in', 'b.csv', '1111111111111111111111111111111111111111111111111111111111111111', 0, 950);
INSERT INTO ingest_pending (watch, folder, first_seen, missing, updated_at)
VALUES ('/srv/sds', 'school-1', 800, '[\"students.csv\"]', 900);
INSERT INTO sync_state (pipeline, high_water, runs, last_run_items, last_run_pages, last_run_job, updated_at)
VALUES ('customers', 123456, 4, 250, 3, 5, 2000);
";

const TABLES: [&str; 5] = [
    "jobs",
    "job_attempts",
    "ingest_files",
    "ingest_pending",
    "sync_state",
];

/// Every row of a table, in the given columns, in key order.
fn rows(conn: &Connection, table: &str, columns: &[String]) -> Vec<Vec<Value>> {
    let order = match table {
        "ingest_files" => "token",
        "ingest_pending" => "watch, folder",
        "sync_state" => "pipeline",
        _ => "id",
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY {order}",
            columns.join(", ")
        ))
        .unwrap();
    let n = columns.len();
    stmt.query_map([], |row| (0..n).map(|i| row.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn index_names(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "SELECT tbl_name || '.' || name FROM sqlite_master WHERE type = 'index' ORDER BY 1",
        )
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_schema_3_database_migrates_with_every_row_id_attempt_index_and_key_kept() {
    let sandbox = Sandbox::new("", "");
    let conn = schema_3_database(&sandbox.db());
    conn.execute_batch(SCHEMA_3_ROWS).unwrap();
    let before: Vec<(Vec<String>, Vec<Vec<Value>>)> = TABLES
        .iter()
        .map(|t| {
            let cols = columns(&conn, t);
            let rows = rows(&conn, t, &cols);
            (cols, rows)
        })
        .collect();
    let mut indexes = index_names(&conn);
    // Every index kept but the one 0009 drops, plus those later migrations add (0006: the
    // claim's per-queue one).
    indexes.push("jobs.jobs_queue_ready".to_string());
    // 0008: a destination's waiting rows, and the unfinished jobs of each order key.
    indexes.push("jobs.jobs_destination_waiting".to_string());
    indexes.push("jobs.jobs_order_live".to_string());
    // 0009: jobs_ready goes; jobs_due holds the same ready rows for the readers.
    indexes.retain(|name| name != "jobs.jobs_ready");
    // 0013: jobs_due goes; the readers take ready rows from the claim's and the order
    // keys' indexes.
    indexes.retain(|name| name != "jobs.jobs_due");
    indexes.sort();
    drop(conn);

    drop(sandbox.migrate());

    let conn = Connection::open(sandbox.db()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, jobd::store::schema::latest_version());
    for (table, (cols, old)) in TABLES.iter().zip(&before) {
        assert!(!old.is_empty(), "the fixture has {table} rows");
        assert_eq!(&rows(&conn, table, cols), old, "{table} rows changed");
    }
    assert_eq!(
        index_names(&conn),
        indexes,
        "the same indexes, and the new ones"
    );
    let strict: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE sql LIKE '%STRICT%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(strict, 0, "no STRICT table is left");
    let (claim, started): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT claim, started_at FROM jobs WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((claim, started), (None, None));
    // The foreign keys still act: a job's attempts go with it, its ingest row forgets it,
    // and its children lose their parent.
    conn.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM jobs WHERE id = 4;")
        .unwrap();
    let attempts: i64 = conn
        .query_row(
            "SELECT count(*) FROM job_attempts WHERE job_id = 4",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let ingest: Option<i64> = conn
        .query_row(
            "SELECT job_id FROM ingest_files WHERE token = 'tok-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let parent: Option<i64> = conn
        .query_row("SELECT parent_id FROM jobs WHERE id = 8", [], |r| r.get(0))
        .unwrap();
    assert_eq!((attempts, ingest, parent), (0, None, None));
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_database_with_names_the_new_checks_refuse_is_not_migrated_and_keeps_every_row() {
    let sandbox = Sandbox::new("", "");
    let conn = schema_3_database(&sandbox.db());
    let long = "q".repeat(100);
    conn.execute(
        "INSERT INTO jobs (id, queue, kind) VALUES (1, 'default', 'noop'), (2, 'bad queue', 'noop'), \
         (3, ?1, 'x\ny')",
        [&long],
    )
    .unwrap();
    drop(conn);
    let err = jobd::store::open(
        &sandbox.db(),
        &OpenOptions {
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .err()
    .expect("the migration is refused");
    let StoreError::MigrationRefused(message) = &err else {
        panic!("expected MigrationRefused, got {err:?}");
    };
    for part in [
        "job 2 queue \"bad queue\"",
        "job 3 queue \"qqqq",
        "(100 characters)",
        "job 3 kind \"x\\ny\"",
        "Nothing was changed",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(!message.contains("job 1 "), "{message}");
    let conn = Connection::open(sandbox.db()).unwrap();
    let (version, jobs): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), count(*) FROM jobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, jobs), (3, 3));
    // jobd refuses to start on it the same way: database unavailable, rows named.
    let out = Command::new(JOBD)
        .args(["--config"])
        .arg(sandbox.config())
        .arg("--once")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("job 2 queue \"bad queue\""),
        "{}",
        stderr(&out)
    );
}

/// Runs the system's sqlite3 CLI on the database; returns (success, stderr).
fn system_sqlite3(db: &Path, sql: &str) -> (bool, String) {
    let out = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the system sqlite3 CLI (apt-get install sqlite3)");
    (out.status.success(), stderr(&out))
}

const PYTHON_ENQUEUE: &str = r#"
import sqlite3, sys, json
db, future = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(db, timeout=10, isolation_level=None)
results = {"version": sqlite3.sqlite_version}
def attempt(name, sql, args=()):
    try:
        conn.execute(sql, args)
        results[name] = "ok"
    except sqlite3.IntegrityError as e:
        results[name] = "refused: " + str(e)
attempt("bare", "INSERT INTO jobs(kind, payload) VALUES ('noop', '{\"by\": \"python\"}')")
attempt("full", "INSERT INTO jobs(kind, payload, queue, priority, run_at) VALUES ('noop', '{}', 'py-queue', 7, ?)", (future,))
attempt("bad_json", "INSERT INTO jobs(kind, payload) VALUES ('noop', '{not json')")
attempt("bad_queue", "INSERT INTO jobs(kind, payload, queue) VALUES ('noop', '{}', 'no spaces allowed')")
print(json.dumps(results))
"#;

#[test]
fn the_system_sqlite3_and_python_enqueue_by_plain_sql_and_the_daemon_runs_the_good_ones() {
    let sandbox = Sandbox::new("", "");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(30), "jobd ready", || {
        sandbox.log().contains("jobd ready")
    });
    let db = sandbox.db();
    let before = now_ms();

    // The machine's sqlite3 CLI.
    let (ok, err) = system_sqlite3(&db, "INSERT INTO jobs(kind, payload) VALUES ('noop', '{}')");
    assert!(ok, "bare insert refused: {err}");
    let future = now_ms() + 1_500;
    let (ok, err) = system_sqlite3(
        &db,
        &format!(
            "INSERT INTO jobs(kind, payload, queue, priority, run_at) \
             VALUES ('noop', '{{\"n\": 2}}', 'cli-queue', 5, {future})"
        ),
    );
    assert!(ok, "insert with queue, priority, run_at refused: {err}");
    let (ok, err) = system_sqlite3(
        &db,
        "INSERT INTO jobs(kind, payload) VALUES ('noop', '{\"unclosed\": ')",
    );
    assert!(!ok && err.contains("CHECK constraint failed"), "{err}");
    let (ok, err) = system_sqlite3(
        &db,
        "INSERT INTO jobs(kind, payload, queue) VALUES ('noop', '{}', 'bad/queue')",
    );
    assert!(!ok && err.contains("CHECK constraint failed"), "{err}");

    // python3's sqlite3 module.
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_ENQUEUE)
        .arg(&db)
        .arg(future.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    let results: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(results["bare"], "ok", "{results}");
    assert_eq!(results["full"], "ok", "{results}");
    assert!(
        results["bad_json"]
            .as_str()
            .unwrap()
            .starts_with("refused: CHECK constraint failed"),
        "{results}"
    );
    assert!(
        results["bad_queue"]
            .as_str()
            .unwrap()
            .starts_with("refused: CHECK constraint failed"),
        "{results}"
    );

    // The defaults are real times, and the daemon runs all four good jobs.
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let defaults: Vec<(i64, i64, i64, String, i64)> = conn
        .prepare("SELECT run_at, created_at, updated_at, queue, priority FROM jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(defaults.len(), 4, "the refused rows left nothing");
    let after = now_ms();
    for (i, (run_at, created_at, _, queue, priority)) in defaults.iter().enumerate() {
        assert!(
            (before - 1_000..=after + 1_000).contains(created_at),
            "row {i}: created_at {created_at} is not now ({before}..{after})"
        );
        if i % 2 == 1 {
            assert_eq!(*run_at, future);
            assert!(queue.ends_with("-queue") && *priority > 0);
        } else {
            assert!((before - 1_000..=after + 1_000).contains(run_at));
            assert_eq!((queue.as_str(), *priority), ("default", 0));
        }
    }
    wait_until(Duration::from_secs(30), "the four jobs to succeed", || {
        crate::common::count_state(&db, "succeeded") == 4
    });
    let ran_at: i64 = conn
        .query_row(
            "SELECT min(finished_at) FROM jobs WHERE queue = 'cli-queue' OR queue = 'py-queue'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ran_at >= future, "a future job ran before its run_at");
    crate::common::signal(&jobd, libc::SIGTERM);
    crate::common::wait_exit(&mut jobd, Duration::from_secs(30));
    // The system sqlite3 reads the whole file: schema, integrity, every row.
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check; SELECT count(*) FROM jobs;")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok\n4\n", "{}", stderr(&out));
}

#[test]
fn jobd_and_jobctl_print_the_bundled_sqlite_version() {
    let bundled = rusqlite::version();
    for binary in [JOBD, JOBCTL] {
        let out = Command::new(binary).arg("--version").output().unwrap();
        assert!(out.status.success());
        let text = stdout(&out);
        assert!(
            text.contains(env!("CARGO_PKG_VERSION"))
                && text.contains(&format!("bundled SQLite {bundled}")),
            "{binary}: {text}"
        );
    }
}

/// Plain SQL that sends `key`'s two jobs through a line: both enqueued (the second waits),
/// the second cancelled while it waits, the first finished, the second sent round again.
fn strand_the_second_of(key: &str) -> String {
    format!(
        "INSERT INTO jobs (kind, payload, order_key) VALUES ('noop', '{{}}', '{key}'), \
                                                          ('noop', '{{}}', '{key}'); \
         UPDATE jobs SET state = 'cancelled', finished_at = 2000 \
           WHERE order_key = '{key}' AND order_blocked = 1; \
         UPDATE jobs SET state = 'succeeded', finished_at = 2000 \
           WHERE order_key = '{key}' AND state = 'queued'; \
         UPDATE jobs SET state = 'queued', finished_at = NULL \
           WHERE id = (SELECT max(id) FROM jobs WHERE order_key = '{key}');"
    )
}

#[test]
fn a_job_sent_round_again_by_plain_sql_heads_its_empty_line_and_migration_12_frees_stranded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    // Schema 11's trigger left such a job waiting for a head that no longer existed.
    let conn = Connection::open(&path).unwrap();
    for (_, sql) in &MIGRATIONS[..11] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 11").unwrap();
    conn.execute_batch(&strand_the_second_of("old")).unwrap();
    let blocked: bool = conn
        .query_row(
            "SELECT order_blocked FROM jobs WHERE order_key = 'old' AND state = 'queued'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(blocked, "schema 11 strands the job (what 0012 repairs)");
    drop(conn);

    let options = OpenOptions {
        migrate: true,
        ..Default::default()
    };
    let store = jobd::store::open(&path, &options).unwrap();
    let stranded = store.order_head("old").unwrap();
    assert!(
        stranded.is_some(),
        "the migration made the stranded job its key's head"
    );
    assert_eq!(
        store.sqlite().unwrap().integrity_check().unwrap(),
        vec!["ok".to_string()]
    );

    // The system's sqlite3, writing by plain SQL through the new trigger.
    let (ok, err) = system_sqlite3(&path, &strand_the_second_of("new"));
    assert!(ok, "{err}");
    let revived = store.order_head("new").unwrap();
    assert!(
        revived.is_some(),
        "the job sent round again heads its empty line"
    );
    assert_eq!(
        store.sqlite().unwrap().integrity_check().unwrap(),
        vec!["ok".to_string()]
    );

    // And the check names a line without a head.
    let (ok, err) = system_sqlite3(
        &path,
        "UPDATE jobs SET order_blocked = 1 WHERE order_key = 'new'",
    );
    assert!(ok, "{err}");
    let found = store.sqlite().unwrap().integrity_check().unwrap();
    assert!(
        found
            .iter()
            .any(|f| f.contains("order key \"new\" has 0 heads")),
        "{found:?}"
    );
}
