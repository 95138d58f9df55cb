//! `jobctl` for operators, through the real binaries: hostile rows printed safely, a
//! closed pipe, `show`'s details, pausing a queue across a running daemon and a restart,
//! bulk actions by filter, run-now, keyset paging, and progress of a real csv_import.

use crate::common::*;
use jobd::job::NewJob;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn conn(sandbox: &Sandbox) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.jobctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {} {}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

fn json_of(sandbox: &Sandbox, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(sandbox, &all)).unwrap()
}

fn no_raw_controls(text: &str) -> bool {
    !text
        .chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
}

#[test]
fn hostile_rows_print_escaped_and_bounded_in_every_command() {
    let sandbox = Sandbox::new("", "");
    sandbox.migrate();
    let forged = "boom\n2026-12-01T00:00:00Z INFO jobd::daemon: jobd ready database=/forged";
    let huge = format!("\u{1b}[2J{}", "E".repeat(100_000));
    let payload = json!({"note": "\u{1b}]0;owned\u{7}\u{9b}31m\u{7f}\u{202e}txt", "file": "x\ny"});
    let c = conn(&sandbox);
    for (error, source) in [
        (forged.to_string(), "src\u{1b}[31m\nline".to_string()),
        (huge.clone(), "s".repeat(100_000)),
    ] {
        c.execute(
            "INSERT INTO jobs (kind, payload, state, finished_at, last_error, source) \
             VALUES ('noop', ?1, 'dead', 1, ?2, ?3)",
            rusqlite::params![payload.to_string(), error, source],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO job_attempts (job_id, attempt, started_at, finished_at, outcome, error, detail) \
         VALUES (1, 1, 1, 2, 'dead', ?1, ?2)",
        rusqlite::params![
            forged,
            json!({"exit_code": 3, "stderr_tail": "a\u{1b}[1mb\nsecret\u{9b}line\n", "url": "http://x/\u{1b}"}).to_string()
        ],
    )
    .unwrap();
    drop(c);

    let list = ok(&sandbox, &["list"]);
    assert!(no_raw_controls(&list), "{list:?}");
    // A header and two rows: no stored newline made a line of its own.
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.lines().all(|l| l.chars().count() < 1000),
        "a line is unbounded"
    );
    assert!(list.contains("boom\\n2026"), "{list}");
    let show = ok(&sandbox, &["show", "1"]);
    assert!(no_raw_controls(&show), "{show:?}");
    assert!(
        !show
            .lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z INFO")),
        "{show}"
    );
    assert!(
        show.contains("\\x1b[1mb") && show.contains("exit code 3"),
        "{show}"
    );
    let show2 = ok(&sandbox, &["show", "2"]);
    assert!(no_raw_controls(&show2), "{:?}", &show2[..200]);
    for args in [
        &["--json", "list"][..],
        &["--json", "show", "1"],
        &["stats"],
        &["stats", "--format", "json"],
        &["stats", "--format", "prometheus"],
        &["sync-state"],
        &["check"],
        &["retry", "--state", "dead"],
        &["cancel", "--state", "dead"],
        &["delete", "--state", "dead"],
        &[
            "list",
            "--error-contains",
            "boom",
            "--payload-contains",
            "owned",
        ],
    ] {
        let text = ok(&sandbox, args);
        assert!(no_raw_controls(&text), "{args:?}: {text:?}");
    }
    let json: Value = serde_json::from_str(&ok(&sandbox, &["--json", "show", "1"])).unwrap();
    assert_eq!(json["job"]["payload"], payload, "JSON still says the same");
    // Documented exit codes, never a panic (101).
    let code = |args: &[&str]| sandbox.jobctl(args).status.code();
    assert_eq!(code(&["show", "99"]), Some(3));
    assert_eq!(
        code(&["cancel", "1"]),
        Some(1),
        "a dead job cannot be cancelled"
    );
    assert_eq!(code(&["run-now", "1"]), Some(1));
    assert_eq!(code(&["list", "--state", "bogus"]), Some(2));
    assert_eq!(
        code(&["retry", "--yes"]),
        Some(2),
        "a filter or ids are needed"
    );
    assert_eq!(code(&["retry", "1", "2"]), Some(0));
    assert_eq!(code(&["cancel", "1", "2"]), Some(0));
    assert_eq!(code(&["delete", "1"]), Some(0));
    assert_eq!(code(&["purge", "--older-than", "1s"]), Some(0));
    assert_eq!(code(&["ping"]), Some(1), "no daemon answers");
    let backup = sandbox.path("copy.db");
    assert_eq!(code(&["backup", backup.to_str().unwrap()]), Some(0));
    assert_eq!(code(&["vacuum"]), Some(0));
    assert_eq!(code(&["migrate"]), Some(0));
    assert_eq!(code(&["show", "2"]), Some(0));
}

#[test]
fn a_closed_pipe_ends_jobctl_quietly() {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let jobs: Vec<NewJob> = (0..3000)
        .map(|n| NewJob::new("noop", json!({"n": n, "pad": "x".repeat(100)})))
        .collect();
    db.write(|tx| tx.enqueue(&jobs, 1)).unwrap();
    // More output than a pipe holds, so jobctl is still writing when the reader goes.
    let mut child = Command::new(JOBCTL)
        .args(["--config", sandbox.config().to_str().unwrap()])
        .args(["list", "--limit", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("ID"), "{first}");
    // The reader (and so the pipe's only read end) is dropped here, like `head` exiting.
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing said about the closed pipe");
}

#[test]
fn show_prints_attempt_details_the_right_limit_and_where_the_input_went() {
    let server = crate::http_server::HttpServer::start(std::sync::Arc::new(|_req| {
        crate::http_server::Response {
            status: 404,
            headers: Vec::new(),
            body: b"nope".to_vec(),
        }
    }));
    let sandbox = Sandbox::new(
        "",
        &format!(
            "[retry]\nmax_attempts = 7\n[kinds.noop.retry]\nmax_attempts = 3\n\
             [commands.fail]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo first >&2; echo 'it broke' >&2; exit 3\"]\n\
             [endpoints.api]\nbase_url = \"{}\"\n",
            server.base
        ),
    );
    let inbox = sandbox.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\nkind = \"noop\"\nsettle = \"100ms\"\n",
        inbox.display()
    ));
    sandbox.migrate();
    ok(
        &sandbox,
        &["enqueue", "exec", "--payload", r#"{"command": "fail"}"#],
    );
    ok(
        &sandbox,
        &[
            "enqueue",
            "http",
            "--payload",
            r#"{"endpoint": "api", "path": "/things"}"#,
        ],
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    std::fs::write(sandbox.path("drop.txt"), "hello").unwrap();
    std::fs::rename(sandbox.path("drop.txt"), inbox.join("drop.txt")).unwrap();
    wait_until(Duration::from_secs(30), "three jobs finished", || {
        count_state(&sandbox.db(), "succeeded") + count_state(&sandbox.db(), "dead") == 3
    });
    signal(&jobd, libc::SIGTERM);
    wait_exit(&mut jobd, Duration::from_secs(30));

    let exec = ok(&sandbox, &["show", "1"]);
    assert!(exec.contains("1 of 7 (limit from [retry])"), "{exec}");
    assert!(exec.contains("exit code 3"), "{exec}");
    assert!(
        exec.contains("attempt 1 stderr (tail):") && exec.contains("  it broke"),
        "{exec}"
    );
    let http = ok(&sandbox, &["show", "2"]);
    assert!(
        http.contains(&format!("HTTP 404 POST {}/things", server.base)),
        "{http}"
    );
    let noop = ok(&sandbox, &["show", "3"]);
    assert!(
        noop.contains("1 of 3 (limit from [kinds.noop.retry])"),
        "{noop}"
    );
    let input = noop
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("input now  "))
        .unwrap_or_else(|| panic!("no input line: {noop}"));
    assert!(
        input.contains("/done/") && input.ends_with("/3/drop.txt"),
        "{input}"
    );
    assert_eq!(std::fs::read_to_string(input).unwrap(), "hello");
    // --json carries the same place; a job with no watched input has none.
    assert_eq!(json_of(&sandbox, &["show", "3"])["input_now"], input);
    assert_eq!(json_of(&sandbox, &["show", "1"])["input_now"], Value::Null);
}

/// Enqueues through the binary; returns the id.
fn enqueue(sandbox: &Sandbox, kind: &str, payload: &str, queue: &str) -> i64 {
    ok(
        sandbox,
        &["enqueue", kind, "--payload", payload, "--queue", queue],
    )
    .trim()
    .parse()
    .unwrap()
}

fn state_of(sandbox: &Sandbox, id: i64) -> String {
    sandbox.open().get(id).unwrap().state.to_string()
}

fn socket_stats(sandbox: &Sandbox) -> Value {
    let mut stream =
        std::os::unix::net::UnixStream::connect(sandbox.path("var/run/jobd.sock")).unwrap();
    writeln!(stream, r#"{{"op":"stats"}}"#).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_paused_queue_is_not_claimed_across_a_running_daemon_and_a_restart() {
    let sandbox = Sandbox::new(
        "",
        "[commands.nap]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"sleep 1\"]\n",
    );
    sandbox.migrate();
    let mut jobd = sandbox.spawn_jobd(&[]);
    // A running job of the queue finishes after the pause.
    let napping = enqueue(&sandbox, "exec", r#"{"command": "nap"}"#, "slow");
    wait_until(Duration::from_secs(30), "the nap to start", || {
        state_of(&sandbox, napping) == "running"
    });
    let said = ok(&sandbox, &["pause", "slow", "--reason", "maintenance"]);
    assert!(said.contains("queue slow paused"), "{said}");
    let held = enqueue(&sandbox, "noop", "{}", "slow");
    let other = enqueue(&sandbox, "noop", "{}", "default");
    wait_until(Duration::from_secs(30), "the other queue's job", || {
        state_of(&sandbox, other) == "succeeded"
    });
    wait_until(Duration::from_secs(30), "the running job to finish", || {
        state_of(&sandbox, napping) == "succeeded"
    });
    assert_eq!(state_of(&sandbox, held), "queued", "paused: not claimed");
    let stats = json_of(&sandbox, &["stats"]);
    assert_eq!(stats["queues"]["slow"]["paused"], true, "{stats}");
    assert_eq!(stats["queues"]["default"]["paused"], false, "{stats}");
    assert!(ok(&sandbox, &["stats"]).contains("since 20"));
    assert!(ok(&sandbox, &["list"]).contains("slow (paused)"));
    assert!(ok(&sandbox, &["stats", "--format", "prometheus"])
        .contains("jobd_queue_paused{queue=\"slow\"} 1"));
    assert_eq!(
        socket_stats(&sandbox)["stats"]["queues"]["slow"]["paused"],
        true
    );

    // A restart honours the pause too.
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
    let mut jobd = sandbox.spawn_jobd(&[]);
    let after_restart = enqueue(&sandbox, "noop", "{}", "default");
    wait_until(Duration::from_secs(30), "a job after the restart", || {
        state_of(&sandbox, after_restart) == "succeeded"
    });
    assert_eq!(
        state_of(&sandbox, held),
        "queued",
        "still paused after a restart"
    );

    assert!(ok(&sandbox, &["resume", "slow"]).contains("resumed"));
    wait_until(Duration::from_secs(30), "the held job once resumed", || {
        state_of(&sandbox, held) == "succeeded"
    });
    assert_eq!(sandbox.jobctl(&["resume", "slow"]).status.code(), Some(3));
    signal(&jobd, libc::SIGTERM);
    wait_exit(&mut jobd, Duration::from_secs(30));
}

/// Rows per (kind, queue, state) and error, to compare before and after a bulk action.
fn census(sandbox: &Sandbox) -> Vec<(i64, String, String, String, i64)> {
    let c = conn(sandbox);
    let mut stmt = c
        .prepare("SELECT id, kind, queue, state, attempts FROM jobs ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn bulk_actions_act_on_exactly_the_matching_rows_in_chunks() {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let mut jobs = Vec::new();
    for n in 0..2600 {
        jobs.push(NewJob::new("http", json!({"n": n})).queue("api"));
    }
    for n in 0..300 {
        jobs.push(NewJob::new("exec", json!({"n": n})).queue("api"));
    }
    for n in 0..200 {
        jobs.push(NewJob::new("http", json!({"n": n})).queue("other"));
    }
    db.write(|tx| tx.enqueue(&jobs, 1_000)).unwrap();
    drop(db);
    let c = conn(&sandbox);
    // 2,500 of the api http jobs died of a timeout, 100 of something else; exec jobs died
    // of a timeout too; 5 http jobs are running; the rest stay queued.
    c.execute_batch(
        "UPDATE jobs SET state = 'dead', finished_at = 5, attempts = 3, \
           last_error = 'read timeout after 30s' WHERE id <= 2500;
         UPDATE jobs SET state = 'dead', finished_at = 5, attempts = 3, \
           last_error = 'HTTP 400' WHERE id > 2500 AND id <= 2600;
         UPDATE jobs SET state = 'dead', finished_at = 5, attempts = 3, \
           last_error = 'read timeout after 30s' WHERE kind = 'exec';
         UPDATE jobs SET state = 'running', lease_until = 9e15, worker = 'w' \
           WHERE queue = 'other' AND id <= 2905;",
    )
    .unwrap();
    drop(c);
    let before = census(&sandbox);

    let dry = ok(
        &sandbox,
        &[
            "retry",
            "--kind",
            "http",
            "--state",
            "dead",
            "--error-contains",
            "timeout",
        ],
    );
    assert!(
        dry.contains("2500 job(s) match; 2500 would be retried"),
        "{dry}"
    );
    assert!(dry.contains("add --yes"), "{dry}");
    assert_eq!(census(&sandbox), before, "a dry run changes nothing");
    let done = json_of(
        &sandbox,
        &[
            "retry",
            "--kind",
            "http",
            "--state",
            "dead",
            "--error-contains",
            "timeout",
            "--yes",
        ],
    );
    assert_eq!(done["count"], 2500);
    let after = census(&sandbox);
    for (old, new) in before.iter().zip(&after) {
        let matched = old.1 == "http" && old.3 == "dead" && old.0 <= 2500;
        if matched {
            assert_eq!((new.3.as_str(), new.4), ("queued", 0), "{new:?}");
        } else {
            assert_eq!(old, new, "a row the filter does not pick is untouched");
        }
    }

    // Cancel by queue: running ones are asked to stop, finished ones left alone.
    let before = census(&sandbox);
    let dry = ok(&sandbox, &["cancel", "--queue", "other"]);
    assert!(
        dry.contains("200 job(s) match; 200 would be cancelled"),
        "{dry}"
    );
    let done = json_of(&sandbox, &["cancel", "--queue", "other", "--yes"]);
    assert_eq!(
        (done["count"].clone(), done["asked_to_stop"].clone()),
        (json!(200), json!(5))
    );
    let after = census(&sandbox);
    for (old, new) in before.iter().zip(&after) {
        if old.2 == "other" {
            let want = if old.3 == "running" {
                "running"
            } else {
                "cancelled"
            };
            assert_eq!(new.3, want, "{new:?}");
        } else {
            assert_eq!(old, new);
        }
    }

    // Delete by filter skips running jobs; by id it refuses them.
    let dry = ok(&sandbox, &["delete", "--queue", "other"]);
    assert!(
        dry.contains("200 job(s) match; 195 would be deleted"),
        "{dry}"
    );
    assert!(dry.contains("left alone: 5 running"), "{dry}");
    let before = census(&sandbox);
    let done = json_of(&sandbox, &["delete", "--queue", "other", "--yes"]);
    assert_eq!(done["deleted"], 195);
    let after = census(&sandbox);
    let kept: Vec<_> = before
        .iter()
        .filter(|r| !(r.2 == "other" && r.3 != "running"))
        .cloned()
        .collect();
    assert_eq!(after, kept, "exactly the matching deletable rows went");
    let refused = sandbox.jobctl(&["delete", "2901"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("job 2901 is running; cannot delete it"),
        "{}",
        stderr(&refused)
    );
    // --since / --until pick by creation time (all were created at 1 s after the epoch).
    let none = json_of(&sandbox, &["delete", "--state", "dead", "--since", "1h"]);
    assert_eq!(none["matching"], 0);
    let all = json_of(
        &sandbox,
        &[
            "delete",
            "--state",
            "dead",
            "--until",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert_eq!(all["matching"], 400);
}

#[test]
fn run_now_moves_a_delayed_or_retrying_job_to_now() {
    let sandbox = Sandbox::new("", "");
    sandbox.migrate();
    let delayed: i64 = ok(&sandbox, &["enqueue", "noop", "--delay", "1h"])
        .trim()
        .parse()
        .unwrap();
    let retrying: i64 = ok(&sandbox, &["enqueue", "noop", "--delay", "2h"])
        .trim()
        .parse()
        .unwrap();
    let untouched: i64 = ok(&sandbox, &["enqueue", "noop", "--delay", "3h"])
        .trim()
        .parse()
        .unwrap();
    conn(&sandbox)
        .execute(
            "UPDATE jobs SET state = 'retrying', attempts = 1 WHERE id = ?1",
            [retrying],
        )
        .unwrap();
    let run_at_before = sandbox.open().get(untouched).unwrap().run_at;
    let now = chrono::Utc::now().timestamp_millis();
    ok(
        &sandbox,
        &["run-now", &delayed.to_string(), &retrying.to_string()],
    );
    let db = sandbox.open();
    for id in [delayed, retrying] {
        let job = db.get(id).unwrap();
        assert!(job.run_at <= now + 5_000, "{job:?}");
        assert_eq!(job.state.as_str(), "queued");
    }
    assert_eq!(db.get(retrying).unwrap().attempts, 1, "attempts kept");
    assert_eq!(db.get(untouched).unwrap().run_at, run_at_before);
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
    assert_eq!(state_of(&sandbox, delayed), "succeeded");
    assert_eq!(state_of(&sandbox, untouched), "queued");
    let refused = sandbox.jobctl(&["run-now", &delayed.to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("is succeeded"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn list_pages_by_id_with_payload_and_time_filters_on_a_million_rows() {
    let sandbox = Sandbox::new("", "");
    drop(sandbox.migrate());
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    // A million finished rows, one in a thousand with the needle, all created recently
    // except the first half (two days old).
    conn(&sandbox)
        .execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
             INSERT INTO jobs (id, kind, payload, state, finished_at, created_at, updated_at)
             SELECT i, 'noop',
                    CASE WHEN i % 1000 = 0 THEN '{{\"order\":\"needle-' || i || '\"}}' ELSE '{{\"n\":' || i || '}}' END,
                    'succeeded', {now}, CASE WHEN i <= 500000 THEN {old} ELSE {now} END, {now}
             FROM n;",
            old = now - 2 * 86_400_000
        ))
        .unwrap();
    eprintln!("inserted 1,000,000 rows in {:?}", started.elapsed());
    let filter = jobd::store::JobFilter {
        payload_contains: Some("needle".into()),
        created_since: Some(now - 3_600_000),
        before_id: Some(900_000),
        limit: 10,
        ..Default::default()
    };
    let plan = sandbox.open().list_plan(&filter).unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INTEGER PRIMARY KEY (rowid<?)")),
        "paging walks the primary key: {plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("TEMP B-TREE")),
        "nothing is sorted: {plan:?}"
    );
    let started = Instant::now();
    let page = json_of(
        &sandbox,
        &[
            "list",
            "--payload-contains",
            "needle",
            "--since",
            "1h",
            "--after",
            "900000",
            "--limit",
            "10",
        ],
    );
    let took = started.elapsed();
    let ids: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (890..900).rev().map(|k| k * 1000).collect::<Vec<_>>());
    // The next page starts below the last id.
    let next = json_of(
        &sandbox,
        &[
            "list",
            "--payload-contains",
            "needle",
            "--since",
            "1h",
            "--after",
            "890000",
            "--limit",
            "3",
        ],
    );
    assert_eq!(next[0]["id"], 889_000);
    // Debug build, shared cores: generous, but a scan-and-sort of a million rows for
    // every page would still show.
    assert!(took < Duration::from_secs(5), "a page took {took:?}");
    let text = ok(
        &sandbox,
        &["list", "--payload-contains", "needle", "--limit", "2"],
    );
    assert!(
        text.contains("(more: add --after 999000 for the next page)"),
        "{text}"
    );
}

const PIPELINE: &str = r#"
[pipelines.people]
kind = "csv_import"
endpoint = "api"
path = "/rows"
body = "sfmc_rowset"
keys = ["id"]
batch_size = 10
max_error_rate = 0.5

[[pipelines.people.columns]]
name = "id"
required = true

[[pipelines.people.columns]]
name = "email"
type = "email"
required = true
"#;

#[test]
fn a_csv_import_records_its_progress_and_show_sums_up_its_children() {
    let server = crate::http_server::HttpServer::start(std::sync::Arc::new(|_req| {
        crate::http_server::Response {
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        }
    }));
    let sandbox = Sandbox::new(
        "",
        &format!(
            "[endpoints.api]\nbase_url = \"{}\"\n{PIPELINE}",
            server.base
        ),
    );
    sandbox.migrate();
    let mut csv = String::from("id,email\n");
    for n in 0..95 {
        csv.push_str(&format!("{n},user{n}@example.com\n"));
    }
    csv.push_str("96,not-an-email\n");
    let data = sandbox.path("var/imports");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("people.csv"), csv).unwrap();
    let id = enqueue(
        &sandbox,
        "csv_import",
        r#"{"pipeline": "people", "file": "imports/people.csv"}"#,
        "default",
    );
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(
        wait_exit(&mut jobd, Duration::from_secs(60)).success(),
        "{}",
        sandbox.log()
    );
    assert_eq!(state_of(&sandbox, id), "succeeded", "{}", sandbox.log());
    let shown = json_of(&sandbox, &["show", &id.to_string()]);
    let progress = &shown["progress"][0];
    assert_eq!(progress["attempt"], 1, "{shown}");
    assert_eq!(
        progress["progress"],
        json!({"rows_read": 96, "rows_valid": 95, "rows_invalid": 1, "batches": 10})
    );
    assert_eq!(shown["children_summary"]["total"], 10);
    assert_eq!(shown["children_summary"]["finished"], 10);
    assert!(
        shown.get("children").is_none(),
        "children listed only when asked"
    );
    let text = ok(&sandbox, &["show", &id.to_string()]);
    assert!(text.contains("rows_read=96"), "{text}");
    assert!(text.contains("10 (10 succeeded); 100% finished"), "{text}");
    assert!(!text.contains("CHILD"), "{text}");
    let page = ok(
        &sandbox,
        &["show", &id.to_string(), "--children", "--limit", "4"],
    );
    let children: Vec<i64> = page
        .lines()
        .skip_while(|l| !l.starts_with("CHILD"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(children.len(), 4, "{page}");
    let last = children[3];
    assert!(
        page.contains(&format!("--children --after {last}")),
        "{page}"
    );
    let rest = json_of(
        &sandbox,
        &[
            "show",
            &id.to_string(),
            "--children",
            "--after",
            &last.to_string(),
            "--limit",
            "50",
        ],
    );
    assert_eq!(rest["children"].as_array().unwrap().len(), 6);
    let list = ok(&sandbox, &["list", "--kind", "csv_import"]);
    assert!(list.contains("rows_read=96"), "{list}");
}

/// A handler that reports progress, then holds its attempt open until the test says go
/// (or the daemon stops).
struct Reporting {
    go: crossbeam_channel::Receiver<()>,
}

impl jobd::handlers::Handler for Reporting {
    fn run(&self, _job: &jobd::job::Job, ctx: &jobd::handlers::JobContext) -> jobd::job::Outcome {
        for n in 1..=500 {
            ctx.progress("rows", n);
        }
        // Woken by the test's go at once; looks at the daemon's stop in between.
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            self.go.recv_timeout(Duration::from_millis(10))
        {
            if ctx.stop.must_stop().is_some() {
                break;
            }
        }
        ctx.progress("rows", 501);
        jobd::job::Outcome::success()
    }
}

#[test]
fn progress_is_written_with_the_heartbeat_while_the_attempt_runs() {
    use std::sync::Arc;
    let sandbox = Sandbox::new("lease = \"1s\"", "");
    sandbox.migrate();
    let config = jobd::config::Config::load_located(&jobd::config::ConfigSource::locate(Some(
        &sandbox.config(),
    )))
    .unwrap();
    let (go, gone) = crossbeam_channel::bounded(1);
    let mut registry = jobd::handlers::Registry::builtin();
    registry.register("reporting", Arc::new(Reporting { go: gone }));
    let daemon = crate::common::DaemonRun {
        registry,
        ..Default::default()
    }
    .start(config);
    let id = daemon
        .client()
        .enqueue(vec![NewJob::new("reporting", json!({}))])
        .unwrap()[0]
        .id;
    // 500 reports; the heartbeat (a third of the 1 s lease) writes the latest one while
    // the attempt is still running.
    wait_until(
        Duration::from_secs(20),
        "progress written mid-attempt",
        || {
            sandbox
                .open()
                .progress_of(id)
                .unwrap()
                .first()
                .is_some_and(|p| p.progress == json!({"rows": 500}))
        },
    );
    assert_eq!(state_of(&sandbox, id), "running");
    let shown = ok(&sandbox, &["list"]);
    assert!(shown.contains("rows=500"), "{shown}");
    go.send(()).unwrap();
    wait_until(Duration::from_secs(20), "the job to finish", || {
        state_of(&sandbox, id) == "succeeded"
    });
    // The attempt's last word is written with its completion.
    let progress = sandbox.open().progress_of(id).unwrap();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].progress, json!({"rows": 501}));
    assert_eq!(progress[0].attempt, 1);
    daemon.client().shutdown();
    daemon.wait().unwrap();
}
