//! The conformance suite run against the SQLite driver, and what only SQLite has: the
//! schema's CHECKs as seen by a plain `INSERT`, the claim's real query plans, opening a
//! file that is missing, corrupt or outdated, and a trigger that swallows updates.

use super::{claim, job_in_state, noop, state, MakeDb, TestDb, T0};
use crate::common::Sandbox;
use jobd::job::{JobState, NewJob};
use jobd::store::{OpenOptions, Store};

/// A fresh SQLite file in a temp dir; every connection is a separate `store::open`.
struct SqliteDb {
    dir: tempfile::TempDir,
}

impl TestDb for SqliteDb {
    fn connect(&self) -> Box<dyn Store> {
        jobd::store::open(
            &self.dir.path().join("jobs.db"),
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .expect("open the test database")
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        // Every case leaves a file whose rows keep the CHECKs the store's connection skips.
        if !std::thread::panicking() {
            crate::common::assert_rows_keep_the_schemas_rules(&self.dir.path().join("jobs.db"));
        }
    }
}

fn make_sqlite_db() -> Box<dyn TestDb> {
    Box::new(SqliteDb {
        dir: tempfile::tempdir().expect("tempdir"),
    })
}

// The suite's driver-facing signature: a fresh database per case.
const _: MakeDb = make_sqlite_db;

conformance!(make_sqlite_db);

#[test]
fn a_bare_sql_insert_is_a_valid_queued_job() {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.execute("INSERT INTO jobs(kind, payload) VALUES ('noop', '{}')", [])
        .unwrap();
    let err = conn
        .execute(
            "INSERT INTO jobs(kind, payload) VALUES ('noop', 'not json')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    let now = jobd::clock::Clock::now_ms(&jobd::clock::SystemClock);
    let claimed = claim(&mut *db, 10, now + 1);
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0];
    assert_eq!((job.queue.as_str(), job.kind.as_str()), ("default", "noop"));
    assert_eq!(job.attempts, 1);
    assert!(
        (job.created_at - now).abs() < 60_000,
        "created_at defaults to now"
    );
}

#[test]
fn the_schema_refuses_impossible_rows() {
    let sandbox = Sandbox::new("", "");
    let _db = sandbox.migrate();
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    for bad in [
        "INSERT INTO jobs(kind, state) VALUES ('noop', 'done')",
        "INSERT INTO jobs(kind, state) VALUES ('noop', 'succeeded')",
        "INSERT INTO jobs(kind, state) VALUES ('noop', 'running')",
        "INSERT INTO jobs(kind, finished_at) VALUES ('noop', 5)",
        "INSERT INTO jobs(kind) VALUES ('')",
        "INSERT INTO jobs(kind, max_attempts) VALUES ('noop', 0)",
    ] {
        assert!(conn.execute(bad, []).is_err(), "accepted: {bad}");
    }
}

#[test]
fn every_claim_statement_seeks_the_queue_led_index_and_never_scans_or_sorts() {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    // Many rows waiting in one queue and many due later, so a plan that walks them shows.
    let mut jobs: Vec<NewJob> = (0..2_000).map(|_| noop().queue("held")).collect();
    jobs.extend((0..2_000).map(|i| noop().run_at(T0 + 86_400_000 + i)));
    db.write(|tx| tx.enqueue(&jobs, T0)).unwrap();
    rusqlite::Connection::open(sandbox.db())
        .unwrap()
        .execute_batch("ANALYZE")
        .unwrap();
    let plans = db
        .sqlite()
        .expect("a SQLite store")
        .claim_query_plans()
        .unwrap();
    let names: Vec<&str> = plans.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "next_queue",
            "next_priority",
            "group_keys",
            "group_rows",
            "claim_group",
            "group_destinations",
            "group_next_due",
            "claim_one"
        ]
    );
    // A claim under destination limits takes each chosen row by its id.
    let (_, claim_one) = &plans[7];
    assert!(claim_one.contains("INTEGER PRIMARY KEY"), "{claim_one}");
    for (name, plan) in &plans[..7] {
        assert!(plan.contains("INDEX jobs_queue_ready ("), "{name}: {plan}");
        assert!(
            !plan.contains("SCAN"),
            "{name} walks a table or index: {plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{name} sorts: {plan}");
    }
    let plan = |name: &str| &plans.iter().find(|(n, _)| *n == name).unwrap().1;
    // A range seek: stepping over a queue, and within one, stopping at rows due later.
    assert!(
        plan("next_queue").contains("(queue>?)"),
        "{}",
        plan("next_queue")
    );
    assert!(
        plan("next_priority").contains("(queue=? AND priority<?)"),
        "{}",
        plan("next_priority")
    );
    // Stepping over rows at their destination's limit: the same range, from a key on.
    assert!(
        plan("group_destinations").contains("(queue=? AND priority=? AND run_at>? AND run_at<?)"),
        "{}",
        plan("group_destinations")
    );
    // The next due time: each group's first row due later, one seek.
    assert!(
        plan("group_next_due").contains("(queue=? AND priority=? AND run_at>?)"),
        "{}",
        plan("group_next_due")
    );
    for name in ["group_keys", "claim_group"] {
        assert!(
            plan(name).contains("(queue=? AND priority=? AND run_at<?)"),
            "{name}: {}",
            plan(name)
        );
    }
}

#[test]
fn opening_refuses_missing_corrupt_and_outdated_databases_clearly() {
    let sandbox = Sandbox::new("", "");
    let missing = jobd::store::open(&sandbox.db(), &Default::default())
        .err()
        .unwrap();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    std::fs::write(
        sandbox.db(),
        b"this is not a database at all, just text, long enough",
    )
    .unwrap();
    let corrupt = jobd::store::open(&sandbox.db(), &Default::default())
        .err()
        .unwrap();
    assert!(
        corrupt
            .to_string()
            .contains("corrupt or not a jobd database"),
        "{corrupt}"
    );
    std::fs::remove_file(sandbox.db()).unwrap();
    rusqlite::Connection::open(sandbox.db()).unwrap();
    let outdated = jobd::store::open(&sandbox.db(), &Default::default())
        .err()
        .unwrap();
    assert!(
        outdated.to_string().contains("run `jobctl migrate`"),
        "{outdated}"
    );
}

#[test]
fn jobds_own_writes_run_no_trigger_another_program_added_and_the_programs_own_writes_do() {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let dead = job_in_state(&mut *db, JobState::Dead);
    let running = job_in_state(&mut *db, JobState::Running);
    let queued = job_in_state(&mut *db, JobState::Queued);
    // Another program's trigger swallows every update. jobd's connections run no
    // trigger (the order keys' ones are kept by the store itself), so its moves happen.
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER swallow BEFORE UPDATE ON jobs BEGIN SELECT RAISE(IGNORE); END;",
    )
    .unwrap();
    db.write(|tx| tx.cancel(queued, T0 + 1)).unwrap();
    db.write(|tx| tx.cancel(running, T0 + 1)).unwrap();
    db.write(|tx| tx.revive(&[dead], T0 + 1)).unwrap();
    assert_eq!(state(&*db, queued), JobState::Cancelled);
    assert_eq!(state(&*db, dead), JobState::Queued);
    assert!(db.get(running).unwrap().cancel_requested);
    // The program's own update is swallowed by its trigger, as it asked.
    let before = db.get(dead).unwrap().priority;
    let changed = conn
        .execute(
            "UPDATE jobs SET priority = ?2 WHERE id = ?1",
            [dead, before + 1],
        )
        .unwrap();
    assert_eq!(changed, 0);
    assert_eq!(db.get(dead).unwrap().priority, before);
}
