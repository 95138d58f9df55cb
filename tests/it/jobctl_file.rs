//! `jobctl enqueue --file`: NDJSON jobs through the real binary, from a file and from
//! standard input, each line checked like a single enqueue, all or nothing per chunk.

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn jobs_in(sandbox: &Sandbox) -> i64 {
    let db = rusqlite::Connection::open(sandbox.db()).unwrap();
    db.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_file_of_jobs_is_enqueued_in_order_with_their_fields() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let file = sandbox.path("jobs.ndjson");
    let mut text = String::new();
    for n in 0..25_000 {
        text.push_str(&format!(
            "{{\"kind\":\"noop\",\"payload\":{{\"n\":{n}}},\"queue\":\"bulk\",\"delay\":\"1h\"}}\n"
        ));
        if n == 10 {
            text.push('\n'); // blank lines are skipped
        }
    }
    text.push_str(
        r#"{"kind":"noop","priority":7,"unique_key":"k1","run_at":"2030-01-01T00:00:00Z"}"#,
    );
    text.push('\n');
    text.push_str(r#"{"kind":"noop","unique_key":"k1"}"#); // no newline at the end
    std::fs::write(&file, text).unwrap();
    let out = sandbox.jobctl(&["enqueue", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 25_002, "one id a job");
    assert_eq!(lines[0], "1");
    assert_eq!(lines[24_999], "25000");
    assert_eq!(lines[25_000], "25001");
    assert!(
        lines[25_001].starts_with("25001 (duplicate"),
        "{}",
        lines[25_001]
    );
    assert_eq!(jobs_in(&sandbox), 25_001);
    let db = rusqlite::Connection::open(sandbox.db()).unwrap();
    let (queue, n, source): (String, i64, String) = db
        .query_row(
            "SELECT queue, json_extract(payload, '$.n'), source FROM jobs WHERE id = 12000",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (queue.as_str(), n, source.as_str()),
        ("bulk", 11_999, "jobctl")
    );
    let (priority, run_at): (i64, i64) = db
        .query_row(
            "SELECT priority, run_at FROM jobs WHERE unique_key = 'k1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((priority, run_at), (7, 1_893_456_000_000));
}

#[test]
fn a_bad_line_names_its_number_and_its_chunk_is_not_enqueued() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let good = "{\"kind\":\"noop\"}\n";
    // 10,000 good lines fill the first chunk; the bad one is line 10,003 in the second.
    let mut text = good.repeat(10_002);
    text.push_str("{\"kind\":\"noop\",\"colour\":\"red\"}\n");
    text.push_str(&good.repeat(5));
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .arg("--config")
        .arg(sandbox.config())
        .args(["enqueue", "--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(jobd::cli::EXIT_USAGE),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("standard input line 10003")
            && err.contains("colour")
            && err.contains("lines 1 to 10000 are enqueued; nothing from line 10001 on"),
        "{err}"
    );
    assert_eq!(stdout(&out).lines().count(), 10_000);
    assert_eq!(jobs_in(&sandbox), 10_000, "the first chunk only");

    // A kind the daemon does not know is refused like a single enqueue, before anything.
    let file = sandbox.path("unknown.ndjson");
    std::fs::write(&file, "{\"kind\":\"noop\"}\n{\"kind\":\"nope\"}\n").unwrap();
    let out = sandbox.jobctl(&["enqueue", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(jobd::cli::EXIT_USAGE));
    let err = stderr(&out);
    assert!(
        err.contains("line 2:") && err.contains("nope") && err.contains("nothing was enqueued"),
        "{err}"
    );
    assert_eq!(jobs_in(&sandbox), 10_000);
}

#[test]
fn each_attempt_records_its_handler_start_in_microseconds() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let file = sandbox.path("jobs.ndjson");
    std::fs::write(&file, "{\"kind\":\"noop\"}\n".repeat(50)).unwrap();
    let before_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(sandbox
        .jobctl(&["enqueue", "--file", file.to_str().unwrap()])
        .status
        .success());
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(wait_exit(&mut jobd, std::time::Duration::from_secs(30)).success());
    let db = rusqlite::Connection::open(sandbox.db()).unwrap();
    let rows: Vec<(i64, Option<i64>)> = db
        .prepare("SELECT started_at, started_us FROM job_attempts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 50);
    let mut distinct = std::collections::BTreeSet::new();
    for (started_at, started_us) in rows {
        let us = started_us.expect("a started attempt records microseconds");
        assert!(
            us >= before_us,
            "{us} is before the test began ({before_us})"
        );
        // The milliseconds column is taken just before the handler; the same moment.
        assert!(
            (us / 1000 - started_at).abs() <= 5,
            "{us} us vs {started_at} ms"
        );
        distinct.insert(us % 1000);
    }
    assert!(
        distinct.len() > 1,
        "sub-millisecond digits are real, not zeros"
    );
}
