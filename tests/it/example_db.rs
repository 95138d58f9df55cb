//! `jobs.db.example` is made by `jobctl make-example-db jobs.db.example` from the
//! migrations; these tests fail when it falls out of date.

use crate::common::Sandbox;
use std::path::Path;

fn schema(path: &Path) -> (i64, Vec<String>) {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let sql = conn
        .prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (version, sql)
}

fn committed() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs.db.example")
}

#[test]
fn the_example_database_matches_the_migrations() {
    let sandbox = Sandbox::new("", "");
    let fresh = sandbox.path("fresh.db");
    jobd::store::example::write(&fresh).unwrap();
    assert_eq!(
        schema(&committed()),
        schema(&fresh),
        "jobs.db.example is out of date: run `cargo run --bin jobctl -- make-example-db jobs.db.example`"
    );
}

#[test]
fn the_example_database_has_jobs_in_every_state() {
    let conn = rusqlite::Connection::open_with_flags(
        committed(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for state in jobd::job::JobState::ALL {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM jobs WHERE state = ?1",
                [state.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(n > 0, "no {state} job in jobs.db.example");
    }
}
