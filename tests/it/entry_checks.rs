//! Names and log text at every entry, through the real binaries: queue and kind names
//! over the socket, `jobctl enqueue`, the config (watch, pipelines, relay) and the store;
//! and log lines a job error or a file name cannot forge (text and journald formats).

use crate::common::{stderr, Sandbox, JOBD};
use crate::ingest::TestDaemon;
use crate::socket::Client;
use jobd::job::{JobState, NewJob};
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const RULE: &str = "a name is 1-64 characters of A-Z a-z 0-9 _ . : -";

#[test]
fn a_100000_character_queue_over_the_socket_gets_a_clear_error_and_the_connection_stays_usable() {
    let daemon = TestDaemon::start("");
    let mut client = Client::connect_to(&daemon.socket);
    let long = "q".repeat(100_000);
    let answer =
        client.ask(&json!({"op": "enqueue", "job": {"kind": "noop", "queue": long}}).to_string());
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_job", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "job: queue \"{}...\" is 100000 characters long",
            "q".repeat(32)
        )),
        "{message}"
    );
    assert!(message.ends_with(RULE), "{message}");
    assert!(message.len() < 300, "the value is not echoed whole");

    for (field, job) in [
        ("queue", json!({"kind": "noop", "queue": "a\u{1b}[2J\nb"})),
        ("queue", json!({"kind": "noop", "queue": ""})),
        ("kind", json!({"kind": "no op"})),
        ("kind", json!({"kind": "k".repeat(65)})),
    ] {
        let answer = client.ask(&json!({"op": "enqueue", "job": job}).to_string());
        assert_eq!(answer["error"]["code"], "invalid_job", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("job: {field} ")), "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
    let batch = json!({"op": "enqueue", "jobs": [
        {"kind": "noop", "queue": "fine"}, {"kind": "noop", "queue": "not fine"}]});
    let answer = client.ask(&batch.to_string());
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1]: queue \"not fine\" contains ' '"),
        "{answer}"
    );

    // The same connection still enqueues, and only the good job exists.
    let answer = client.ask(
        &json!({"op": "enqueue", "job": {"kind": "noop", "queue": "bulk.v2:a-b_c"}}).to_string(),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let jobs = daemon.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].queue, "bulk.v2:a-b_c");
}

#[test]
fn jobctl_enqueue_and_the_store_refuse_a_bad_name_naming_the_field_and_the_rule() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let long = "q".repeat(65);
    for (args, field) in [
        (
            vec!["enqueue", "noop", "--queue", "a\nb"],
            "queue \"a\\nb\" contains '\\n'",
        ),
        (vec!["enqueue", "noop", "--queue", &long], "queue \"qqqq"),
        (
            vec!["enqueue", "bad/kind"],
            "kind \"bad/kind\" contains '/'",
        ),
    ] {
        let out = sandbox.jobctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(field) && err.contains(RULE), "{args:?}: {err}");
    }
    let ok = "q".repeat(64);
    let out = sandbox.jobctl(&["enqueue", "noop", "--queue", &ok]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The store itself refuses too (what every other entry ends in).
    let mut db = sandbox.open();
    let err = db
        .write(|tx| tx.enqueue(&[NewJob::new("noop", json!({})).queue("x y")], 0))
        .unwrap_err();
    assert!(
        err.to_string().contains("queue \"x y\" contains ' '"),
        "{err}"
    );
    assert_eq!(db.stats(0).unwrap().total(JobState::Queued), 1);
}

#[test]
fn check_config_refuses_a_bad_queue_or_kind_in_watch_pipeline_relay_and_queue_sections() {
    let cases = [
        ("[[watch]]\npath = \"{in}\"\nqueue = \"bad queue\"\n", "watch[0].queue \"bad queue\""),
        ("[[watch]]\npath = \"{in}\"\nkind = \"no\\nop\"\n", "watch[0].kind \"no\\nop\""),
        ("[relay]\nqueue = \"relay!\"\n", "relay.queue \"relay!\""),
        ("[queues.\"a b\"]\nconcurrency = 1\n", "queues.a b \"a b\""),
        ("[notify]\ncommand = \"n\"\nqueue = \"\"\n[commands.n]\nprogram = \"/bin/true\"\n", "notify.queue \"\" is empty"),
        (
            "[endpoints.api]\nbase_url = \"http://127.0.0.1:9\"\n[pipelines.p]\nkind = \"http_pull\"\nendpoint = \"api\"\npath = \"/x\"\nitems_key = \"x\"\nqueue = \"p p\"\nsink = { sqlite = \"{in}/p.db\" }\ncolumns = { email = \"email\" }\n",
            "pipelines.p.queue \"p p\"",
        ),
    ];
    let sandbox = Sandbox::new("", "");
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\nunreadable_timeout = \"0s\"\n",
        sandbox.path("in").display()
    ));
    let out = Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("watch[0].unreadable_timeout"),
        "{}",
        stderr(&out)
    );
    for (extra, expected) in cases {
        let sandbox = Sandbox::new("", "");
        let input = sandbox.path("in");
        sandbox.append_config(&extra.replace("{in}", &input.display().to_string()));
        let out = Command::new(JOBD)
            .arg("--config")
            .arg(sandbox.config())
            .arg("--check-config")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(
            err.contains(expected) && err.contains(RULE),
            "{extra}: {err}"
        );
    }
}

/// What a hostile job error or file name tries to make appear as a log line of its own.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO jobd::daemon: jobd ready database=/forged";

fn assert_no_forged_line(log: &str, line_start_ok: impl Fn(&str) -> bool) {
    assert!(
        log.contains("database=/forged"),
        "the hostile text was logged:\n{log}"
    );
    for line in log.lines() {
        assert!(!line.starts_with("2026-01-01"), "a forged line:\n{log}");
        assert!(
            line_start_ok(line),
            "a line that is not the daemon's: {line:?}\n{log}"
        );
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "a control character reached the log: {line:?}"
        );
    }
}

#[test]
fn a_job_error_or_a_watched_file_named_with_a_newline_cannot_forge_a_log_line() {
    let error = format!("bad rows\n{FORGED}\r\u{1b}[2J");
    let watch = format!(
        "[[watch]]\npath = \"{{dir}}/in\"\nsettle = \"1s\"\nrescan = \"1s\"\nkind = \"noop\"\n\
         [watch.payload]\nfail = \"permanent\"\nerror = {}\n",
        toml::Value::String(error)
    );
    let daemon = TestDaemon::start(&watch);
    // A file name cannot hold '/'.
    let name = format!("evil\n{}2.csv", FORGED.replace('/', ""));
    crate::ingest::drop_file(&daemon, &name, b"x\n");
    daemon.wait_for_jobs("a dead job", Duration::from_secs(15), |jobs| {
        jobs.len() == 1 && jobs[0].state == JobState::Dead
    });
    // Both lines are logged about the time the job dies; their escaped forms are the sign.
    crate::common::wait_until(
        Duration::from_secs(10),
        "the error and the file name to be logged",
        || {
            let log = daemon.log();
            log.contains("bad rows\\n2026-01-01") && log.contains("evil\\n2026-01-01")
        },
    );
    let log = daemon.log();
    // Every real line starts with this year's timestamp (the machine's clock).
    let year = chrono::Utc::now().format("%Y-").to_string();
    assert_no_forged_line(&log, |line| line.starts_with(&year));
    assert!(log.contains("bad rows\\n2026-01-01"), "{log}");
    assert!(log.contains("evil\\n2026-01-01"), "{log}");
}

#[test]
fn journald_lines_escape_control_characters_too() {
    let sandbox = Sandbox::new("", "");
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let payload = json!({"fail": "permanent", "error": format!("x\n{FORGED}\n<3>also forged")});
    let out = sandbox.jobctl(&["enqueue", "noop", "--payload", &payload.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log_path = sandbox.path("journal.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let status = Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--once")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("jobd ready"),
        "the journald format was used:\n{text}"
    );
    assert_no_forged_line(&text, |line| {
        line.len() > 3 && line.starts_with('<') && &line[2..3] == ">"
    });
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("<3>also forged"))
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| !l.starts_with("<3>also") && !l.starts_with("<6>2026-01-01")),
        "{text}"
    );
}
