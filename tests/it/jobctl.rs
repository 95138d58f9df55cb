//! `jobctl`: each command through the real binary and as a function, its JSON output and
//! its exit codes.

use crate::common::*;
use jobd::cli::{main_with, EXIT_DATABASE, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE};
use serde_json::Value;

fn ctl(sandbox: &Sandbox, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "jobctl".to_string(),
        "--config".into(),
        sandbox.config().display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = main_with(all, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let (code, out, err) = ctl(sandbox, &with_json);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn enqueue_list_show_and_stats_through_the_binary() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let out = sandbox.jobctl(&[
        "enqueue",
        "noop",
        "--payload",
        r#"{"n":1}"#,
        "--queue",
        "reports",
        "--priority",
        "5",
        "--delay",
        "1h",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1");
    let list = stdout(&sandbox.jobctl(&["list", "--queue", "reports"]));
    assert!(list.lines().next().unwrap().starts_with("ID"), "{list}");
    assert!(
        list.contains("queued") && list.contains("reports"),
        "{list}"
    );
    let show = stdout(&sandbox.jobctl(&["show", "1"]));
    assert!(
        show.contains(r#"{"n":1}"#) && show.contains("no attempts recorded"),
        "{show}"
    );
    let stats = stdout(&sandbox.jobctl(&["stats"]));
    assert!(
        stats.contains("reports") && stats.contains("QUEUED"),
        "{stats}"
    );
}

#[test]
fn every_command_speaks_json() {
    let sandbox = Sandbox::new("", "");
    assert_eq!(
        json(&sandbox, &["migrate"])["schema_version"],
        jobd::store::schema::latest_version()
    );
    let first = json(&sandbox, &["enqueue", "noop", "--unique-key", "k1"]);
    assert_eq!(first["duplicate"], false);
    let again = json(&sandbox, &["enqueue", "noop", "--unique-key", "k1"]);
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (first["id"].clone(), Value::Bool(true))
    );
    let list = json(&sandbox, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "queued");
    let show = json(&sandbox, &["show", "1"]);
    assert_eq!(show["job"]["unique_key"], "k1");
    assert!(show["attempts"].as_array().unwrap().is_empty());
    assert_eq!(
        json(&sandbox, &["stats"])["queues"]["default"]["states"]["queued"],
        1
    );
    assert_eq!(
        json(&sandbox, &["cancel", "1"])["cancelled"][0]["state"],
        "cancelled"
    );
    assert_eq!(json(&sandbox, &["retry", "1"])["retried"][0], 1);
    assert_eq!(
        json(
            &sandbox,
            &["purge", "--state", "succeeded", "--older-than", "7d"]
        )["purged"],
        0
    );
}

#[test]
fn retry_and_cancel_follow_the_state_machine() {
    let sandbox = Sandbox::new("", "");
    ctl(&sandbox, &["migrate"]);
    ctl(
        &sandbox,
        &["enqueue", "noop", "--payload", r#"{"fail":"permanent"}"#],
    );
    ctl(&sandbox, &["enqueue", "noop"]);
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(wait_exit(&mut jobd, std::time::Duration::from_secs(30)).success());
    let (code, _, err) = ctl(&sandbox, &["retry", "2"]);
    assert_eq!(code, EXIT_FAILURE);
    assert!(err.contains("job 2 is succeeded; cannot retry it"), "{err}");
    let (code, out, _) = ctl(&sandbox, &["retry", "--dead"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 job(s) queued again: 1"), "{out}");
    let job = sandbox.open().get(1).unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("queued", 0));
    let (code, _, err) = ctl(&sandbox, &["cancel", "2"]);
    assert_eq!(code, EXIT_FAILURE);
    assert!(
        err.contains("job 2 is succeeded; cannot cancel it"),
        "{err}"
    );
}

#[test]
fn payloads_come_from_flags_files_or_stdin() {
    let sandbox = Sandbox::new("", "");
    ctl(&sandbox, &["migrate"]);
    let file = sandbox.path("payload.json");
    std::fs::write(&file, r#"{"from":"file"}"#).unwrap();
    let (code, _, err) = ctl(
        &sandbox,
        &["enqueue", "noop", "--payload-file", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let mut child = std::process::Command::new(JOBCTL)
        .args([
            "--config",
            sandbox.config().to_str().unwrap(),
            "enqueue",
            "noop",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"from":"stdin"}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let db = sandbox.open();
    assert_eq!(db.get(1).unwrap().payload["from"], "file");
    assert_eq!(db.get(2).unwrap().payload["from"], "stdin");
}

#[test]
fn errors_are_one_clear_line_with_distinct_exit_codes() {
    let sandbox = Sandbox::new("", "");
    let (code, _, err) = ctl(&sandbox, &["list"]);
    assert_eq!(code, EXIT_DATABASE);
    assert!(
        err.contains("does not exist") && err.lines().count() == 1,
        "{err}"
    );

    ctl(&sandbox, &["migrate"]);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["show", "99"], EXIT_NOT_FOUND, "job 99 not found"),
        (
            &["enqueue", "noop", "--delay", "soonish"],
            EXIT_USAGE,
            "'soonish' is not a duration",
        ),
        (
            &["enqueue", "noop", "--at", "tomorrow"],
            EXIT_USAGE,
            "'tomorrow' is not a time",
        ),
        (
            &["enqueue", "noop", "--payload", "{nope"],
            EXIT_USAGE,
            "not valid JSON",
        ),
        (
            &["enqueue", "nosuchkind"],
            EXIT_USAGE,
            "unknown kind 'nosuchkind'",
        ),
        (
            &["enqueue", "exec", "--payload", r#"{"command":"rm"}"#],
            EXIT_USAGE,
            "command 'rm' is not declared",
        ),
        (
            &["list", "--state", "done"],
            EXIT_USAGE,
            "invalid value 'done' for '--state <STATE>'",
        ),
        (
            &["purge", "--state", "queued", "--older-than", "1d"],
            EXIT_USAGE,
            "only finished jobs",
        ),
        (&["frobnicate"], EXIT_USAGE, "unrecognized subcommand"),
    ];
    for (args, expected_code, expected) in cases {
        let (code, _, err) = ctl(&sandbox, args);
        assert_eq!(code, *expected_code, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // Through the real binary too: the exit code reaches the shell.
    let out = sandbox.jobctl(&["show", "99"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND));
    assert_eq!(stderr(&out).trim(), "jobctl: job 99 not found");

    std::fs::write(sandbox.db(), vec![b'x'; 8192]).unwrap();
    let _ = std::fs::remove_file(sandbox.path("jobs.db-wal"));
    let _ = std::fs::remove_file(sandbox.path("jobs.db-shm"));
    let out = sandbox.jobctl(&["stats"]);
    assert_eq!(out.status.code(), Some(EXIT_DATABASE));
    assert!(
        stderr(&out).contains("corrupt or not a jobd database"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_reports_config_and_integrity() {
    let sandbox = Sandbox::new("", "");
    ctl(&sandbox, &["migrate"]);
    let (code, out, err) = ctl(&sandbox, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("config")
            && out.contains(&format!(
                ": ok (schema version {})",
                jobd::store::schema::latest_version()
            )),
        "{out}"
    );
    // jobd's connections skip the CHECKs when they write; the check still holds every
    // row to them. A writer that skipped them too left a queue name they refuse.
    let outside = |sql: &str| {
        let done = std::process::Command::new("sqlite3")
            .arg(sandbox.db())
            .arg(sql)
            .output()
            .unwrap();
        assert!(done.status.success(), "{}", stderr(&done));
    };
    outside(
        "PRAGMA ignore_check_constraints = ON; \
         INSERT INTO jobs (queue, kind, payload) VALUES ('bad queue', 'noop', '{}');",
    );
    let (code, _, err) = ctl(&sandbox, &["check"]);
    assert_eq!(code, EXIT_DATABASE, "{err}");
    assert!(
        err.contains("failed its integrity check")
            && err.contains("CHECK constraint failed in jobs"),
        "{err}"
    );
    outside("DELETE FROM jobs WHERE queue = 'bad queue';");
    let (code, _, err) = ctl(&sandbox, &["check"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(sandbox.config(), "[daemon]\nlease = \"forever\"\n").unwrap();
    let (code, _, err) = ctl(&sandbox, &["check"]);
    assert_eq!(code, EXIT_FAILURE);
    assert!(err.contains("'forever' is not a duration"), "{err}");
}

#[test]
fn jobctl_finds_the_database_through_jobd_config() {
    let sandbox = Sandbox::new("", "");
    let out = std::process::Command::new(JOBCTL)
        .arg("migrate")
        .env("JOBD_CONFIG", sandbox.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sandbox.db().exists());
}

#[test]
fn enqueue_sets_per_job_limits() {
    let sandbox = Sandbox::new("", "");
    ctl(&sandbox, &["migrate"]);
    let before = jobd::clock::Clock::now_ms(&jobd::clock::SystemClock);
    let (code, _, err) = ctl(
        &sandbox,
        &[
            "enqueue",
            "noop",
            "--max-attempts",
            "3",
            "--deadline",
            "2h",
            "--at",
            "2030-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let job = sandbox.open().get(1).unwrap();
    assert_eq!(job.max_attempts, Some(3));
    assert_eq!(job.run_at, 1_893_456_000_000);
    let deadline = job.deadline_at.unwrap() - before;
    assert!((7_200_000..7_260_000).contains(&deadline), "{deadline}");
}

#[test]
fn a_locked_database_is_one_clear_line() {
    let sandbox = Sandbox::new("busy_timeout = \"100ms\"", "");
    ctl(&sandbox, &["migrate"]);
    let holder = rusqlite::Connection::open(sandbox.db()).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO jobs(kind) VALUES ('noop');")
        .unwrap();
    let out = sandbox.jobctl(&["enqueue", "noop"]);
    assert_eq!(out.status.code(), Some(EXIT_DATABASE), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "jobctl: database is busy: another process held the write lock for longer than the busy timeout"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(sandbox.jobctl(&["enqueue", "noop"]).status.success());
}
