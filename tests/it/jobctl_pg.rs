//! jobctl against a PostgreSQL database (issue 17): list, show, retry, cancel, stats,
//! purge, migrate and check work as they do on SQLite, and the SQLite-only commands
//! (backup, vacuum) say so and point to pg_dump.

use crate::common::JOBCTL;
use crate::pg::TestDb;
use jobd::job::{Completion, JobState, NewJob, Resolution};
use jobd::store::ClaimSpec;
use std::process::Command;

/// `jobctl --db URL ARGS`: whether it succeeded, its stdout and its stderr.
fn jobctl(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(JOBCTL)
        .args(["--db", url, "--color", "never"])
        .args(args)
        .env_remove("JOBD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn jobctl_lists_shows_retries_cancels_purges_and_checks_on_postgres() {
    let Some(db) = TestDb::create("pg jobctl commands") else {
        return;
    };
    let url = db.url.secret_text().to_string();
    let store = db.store("n1");
    // Finished 30 days ago, so `purge --older-than 7d` takes the succeeded one.
    let t0 = jobd::clock::Clock::now_ms(&jobd::clock::SystemClock) - 30 * 86_400_000;
    let new = |note: &str| NewJob::new("noop", serde_json::json!({ "note": note }));
    let ids: Vec<i64> = store
        .write(|tx| tx.enqueue(&[new("dies"), new("succeeds"), new("waits")], t0))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let (dies, succeeds, waits) = (ids[0], ids[1], ids[2]);
    let claimed = store
        .write(|tx| {
            tx.claim(
                &ClaimSpec {
                    limit: 2,
                    limited_queues: vec![],
                    destinations: vec![],
                },
                "n1:0",
                t0 + 60_000,
                t0,
            )
        })
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for job in &claimed {
        let resolution = if job.id == dies {
            Resolution::Dead {
                error: "upstream answered 422: no such customer".into(),
                follow_ups: vec![],
            }
        } else {
            Resolution::Succeeded {
                follow_ups: vec![],
                sync_marks: vec![],
            }
        };
        let done = Completion {
            job_id: job.id,
            parent_id: None,
            attempt: job.attempts,
            worker: "n1:0".into(),
            started_at: t0,
            finished_at: t0 + 5,
            resolution,
            detail: None,
        };
        store.write(|tx| tx.complete(&done, t0 + 5)).unwrap();
    }

    let (ok, out, err) = jobctl(&url, &["migrate"]);
    assert!(ok, "migrate: {out}{err}");
    let (ok, out, err) = jobctl(&url, &["list", "--state", "dead"]);
    assert!(ok && out.contains(&dies.to_string()), "list: {out}{err}");
    assert!(
        !out.contains(&format!("\n{waits} ")),
        "list shows only dead: {out}"
    );
    let (ok, out, err) = jobctl(&url, &["show", &dies.to_string()]);
    assert!(ok && out.contains("no such customer"), "show: {out}{err}");
    let (ok, out, err) = jobctl(&url, &["stats"]);
    assert!(ok, "stats: {out}{err}");
    let default: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // queue, queued, claimed, running, retrying, waiting, succeeded, dead: one queued,
    // one succeeded, one dead.
    assert_eq!(
        default.get(1..8),
        Some(&["1", "0", "0", "0", "0", "1", "1"][..]),
        "{out}"
    );

    let (ok, out, err) = jobctl(&url, &["retry", &dies.to_string()]);
    assert!(ok, "retry: {out}{err}");
    assert_eq!(store.get(dies).unwrap().state, JobState::Queued);
    let (ok, out, err) = jobctl(&url, &["cancel", &waits.to_string()]);
    assert!(ok, "cancel: {out}{err}");
    assert_eq!(store.get(waits).unwrap().state, JobState::Cancelled);
    let (ok, out, err) = jobctl(&url, &["purge", "--older-than", "7d"]);
    assert!(ok, "purge: {out}{err}");
    assert!(
        store.get(succeeds).is_err(),
        "the old succeeded job is purged"
    );
    assert!(store.get(dies).is_ok() && store.get(waits).is_ok());

    // check says what it checked, and that the integrity check is PostgreSQL's own.
    let (ok, out, err) = jobctl(&url, &["check"]);
    assert!(ok, "check: {out}{err}");
    assert!(
        out.contains("schema version") && out.contains("integrity check not run"),
        "{out}"
    );
    let (ok, out, _) = jobctl(&url, &["--json", "check"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && report["database"]["ok"] == true, "{out}");
    assert!(report["database"]["integrity_check"]
        .as_str()
        .is_some_and(|s| s.starts_with("not run")));

    for command in ["backup", "vacuum"] {
        let args: &[&str] = if command == "backup" {
            &["backup", "/tmp/jobd-never-written.db"]
        } else {
            &["vacuum"]
        };
        let (ok, out, err) = jobctl(&url, args);
        assert!(!ok, "{command} must refuse: {out}{err}");
        assert!(
            err.contains("SQLite only") && err.contains("pg_dump"),
            "{command}: {err}"
        );
    }
    assert!(!std::path::Path::new("/tmp/jobd-never-written.db").exists());
}
