//! The real `jobd` binary: concurrency, crashes, graceful stops, outside writers, the
//! database lock, reloads and sd_notify.

use crate::common::*;
use jobd::job::NewJob;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn enqueue_many(sandbox: &Sandbox, jobs: Vec<NewJob>) {
    let mut db = sandbox.migrate();
    for chunk in jobs.chunks(5000) {
        db.write(|tx| tx.enqueue(chunk, 1)).unwrap();
    }
}

/// A command that notes its job id in `started.txt`, sleeps `sleep` seconds, then notes
/// the id in `ran.txt`.
fn append_command(sandbox: &Sandbox, sleep: &str) -> String {
    format!(
        "[commands.append]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo $JOBD_JOB_ID >> '{}'; sleep {sleep}; echo $JOBD_JOB_ID >> '{}'\"]\n",
        sandbox.path("started.txt").display(),
        sandbox.path("ran.txt").display()
    )
}

fn ids_in(sandbox: &Sandbox, file: &str) -> Vec<i64> {
    std::fs::read_to_string(sandbox.path(file))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("an id per line"))
        .collect()
}

/// The jobs whose command ran to its end.
fn ran_ids(sandbox: &Sandbox) -> Vec<i64> {
    ids_in(sandbox, "ran.txt")
}

/// The jobs whose command has started.
fn started_ids(sandbox: &Sandbox) -> Vec<i64> {
    ids_in(sandbox, "started.txt")
}

#[test]
fn eight_workers_and_a_concurrent_jobctl_writer_run_each_job_exactly_once() {
    let sandbox = Sandbox::new("workers = 8\nsynchronous = \"normal\"", "");
    let preloaded = 19_800;
    enqueue_many(
        &sandbox,
        (0..preloaded)
            .map(|_| NewJob::new("noop", json!({})))
            .collect(),
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    let writer = {
        let config = sandbox.config();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            for i in 0..200 {
                let out = std::process::Command::new(JOBCTL)
                    .arg("--config")
                    .arg(&config)
                    .args([
                        "enqueue",
                        "noop",
                        "--payload",
                        &format!("{{\"from\":\"jobctl\",\"n\":{i}}}"),
                    ])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(stderr(&out));
                }
            }
            failures
        })
    };
    let failures = writer.join().unwrap();
    assert!(
        failures.is_empty(),
        "jobctl failed while jobd ran: {failures:?}"
    );
    wait_until(Duration::from_secs(120), "20,000 jobs to succeed", || {
        count_state(&sandbox.db(), "succeeded") == 20_000
    });
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    let (jobs, attempts, once): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM jobs WHERE state = 'succeeded' AND attempts = 1), \
                    (SELECT count(*) FROM job_attempts), \
                    (SELECT count(*) FROM (SELECT job_id FROM job_attempts \
                       WHERE outcome = 'succeeded' GROUP BY job_id HAVING count(*) = 1))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((jobs, attempts, once), (20_000, 20_000, 20_000));
    let log = sandbox.log().to_lowercase();
    assert!(!log.contains("busy") && !log.contains("locked"), "{log}");
}

#[test]
fn after_kill_9_and_a_restart_every_job_succeeds_and_only_running_ones_ran_twice() {
    let sandbox = Sandbox::new("workers = 4", "");
    sandbox.append_config(&append_command(&sandbox, "0"));

    let total = 2_000;
    enqueue_many(
        &sandbox,
        (0..total)
            .map(|_| NewJob::new("exec", json!({"command": "append"})))
            .collect(),
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(60), "some jobs to run", || {
        ran_ids(&sandbox).len() >= 300
    });
    signal(&jobd, libc::SIGKILL);
    wait_exit(&mut jobd, Duration::from_secs(10));
    let running_at_kill: HashSet<i64> = {
        let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT id FROM jobs WHERE state = 'running'")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let ran_before = ran_ids(&sandbox).len();
    assert!(
        ran_before < total as usize,
        "the kill came too late to test anything"
    );

    let mut again = sandbox.spawn_jobd(&["--once"]);
    assert!(
        wait_exit(&mut again, Duration::from_secs(120)).success(),
        "{}",
        sandbox.log()
    );
    assert_eq!(
        count_state(&sandbox.db(), "succeeded"),
        total as i64,
        "{}",
        sandbox.log()
    );
    let mut runs: HashMap<i64, usize> = HashMap::new();
    for id in ran_ids(&sandbox) {
        *runs.entry(id).or_default() += 1;
    }
    assert_eq!(runs.len(), total as usize, "every job ran");
    let twice: HashSet<i64> = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        twice.is_subset(&running_at_kill),
        "ran twice but was not running at the kill: {:?}",
        twice.difference(&running_at_kill).collect::<Vec<_>>()
    );
    assert!(runs.values().all(|n| *n <= 2));
    assert!(sandbox.log().contains("recovered"), "{}", sandbox.log());
}

#[test]
fn sigterm_lets_running_jobs_finish_and_puts_waiting_ones_back_uncharged() {
    let sandbox = Sandbox::new("workers = 2\nprefetch = 4\nshutdown_grace = \"20s\"", "");
    sandbox.append_config(&append_command(&sandbox, "1"));
    enqueue_many(
        &sandbox,
        (0..10)
            .map(|_| NewJob::new("exec", json!({"command": "append"})))
            .collect(),
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "two commands to start", || {
        started_ids(&sandbox).len() >= 2
    });
    signal(&jobd, libc::SIGTERM);
    let status = wait_exit(&mut jobd, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", sandbox.log());
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT state, attempts FROM jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let succeeded = rows.iter().filter(|(s, _)| s == "succeeded").count();
    assert!(succeeded >= 2, "the running jobs finished: {rows:?}");
    for (state, attempts) in &rows {
        match state.as_str() {
            "succeeded" => assert_eq!(*attempts, 1),
            "queued" => assert_eq!(*attempts, 0, "put back uncharged"),
            other => panic!("unexpected state {other}: {rows:?}"),
        }
    }
    assert_eq!(
        ran_ids(&sandbox).len(),
        succeeded,
        "nothing ran that was put back"
    );
}

#[test]
fn sigterm_past_the_grace_period_kills_the_command_and_releases_the_job() {
    let sandbox = Sandbox::new("workers = 1\nshutdown_grace = \"300ms\"", "");
    sandbox.append_config(&append_command(&sandbox, "30"));
    enqueue_many(
        &sandbox,
        vec![NewJob::new("exec", json!({"command": "append"}))],
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the command to start", || {
        started_ids(&sandbox).len() == 1
    });
    let started = std::time::Instant::now();
    signal(&jobd, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut jobd, Duration::from_secs(20)).code(),
        Some(0)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited in {:?}",
        started.elapsed()
    );
    let job = sandbox.open().get(1).unwrap();
    assert_eq!(
        (job.state.as_str(), job.attempts),
        ("queued", 0),
        "{}",
        sandbox.log()
    );
    assert!(
        ran_ids(&sandbox).is_empty(),
        "the command was killed before it wrote"
    );
}

#[test]
fn a_row_inserted_by_another_process_is_picked_up() {
    let sandbox = Sandbox::new("", "");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the database", || {
        sandbox.db().exists() && sandbox.log().contains("jobd ready")
    });
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute("INSERT INTO jobs(kind, payload) VALUES ('noop', '{}')", [])
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the outside row to succeed",
        || count_state(&sandbox.db(), "succeeded") == 1,
    );
    let out = sandbox.jobctl(&["enqueue", "noop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(Duration::from_secs(10), "the jobctl row to succeed", || {
        count_state(&sandbox.db(), "succeeded") == 2
    });
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let sandbox = Sandbox::new("", "");
    let mut first = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the first daemon", || {
        sandbox.log().contains("jobd ready")
    });
    let second = std::process::Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let message = stderr(&second);
    assert!(
        message.contains("another jobd is already running"),
        "{message}"
    );
    assert!(
        message.contains(&format!("by pid {}", first.id())),
        "{message}"
    );
    signal(&first, libc::SIGTERM);
    assert!(wait_exit(&mut first, Duration::from_secs(20)).success());
}

#[test]
fn a_bad_config_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new("workers = 0", "");
    let out = std::process::Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("daemon.workers: must be at least 1"),
        "{}",
        stderr(&out)
    );
    assert!(!sandbox.db().exists(), "nothing was created");
}

#[test]
fn a_reload_refuses_a_watch_that_start_and_check_config_refuse() {
    let sandbox = Sandbox::new("", "");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "start", || {
        sandbox.log().contains("jobd ready")
    });
    // Parses as a config, but its kind would refuse every job the watch makes.
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\nkind = \"no-such-kind\"\n",
        sandbox.path("in").display()
    ));
    let check = std::process::Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert!(
        stderr(&check).contains("unknown kind 'no-such-kind'"),
        "{}",
        stderr(&check)
    );
    signal(&jobd, libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the refusal", || {
        sandbox.log().contains("reload refused")
    });
    let log = sandbox.log();
    let refusal = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refusal.contains("watch[0]") && refusal.contains("unknown kind 'no-such-kind'"),
        "{refusal}"
    );
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
}

/// The settings fixed when the daemon opened its database and started its threads are
/// named when a reload changes them, not silently ignored.
#[test]
fn a_reload_that_changes_synchronous_or_workers_says_they_take_effect_at_the_next_start() {
    let sandbox = Sandbox::new("synchronous = \"full\"\nworkers = 2", "");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "start", || {
        sandbox.log().contains("jobd ready")
    });
    let text = std::fs::read_to_string(sandbox.config()).unwrap();
    let changed = text
        .replace("synchronous = \"full\"", "synchronous = \"normal\"")
        .replace("workers = 2", "workers = 3");
    assert_ne!(changed, text);
    std::fs::write(sandbox.config(), changed).unwrap();
    signal(&jobd, libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        sandbox.log().contains("reloaded the configuration")
    });
    let log = sandbox.log();
    let warning = log
        .lines()
        .find(|l| l.contains("take(s) effect at the next start"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(
        warning.contains("daemon.workers, daemon.synchronous") && !warning.contains("database"),
        "{warning}"
    );
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let sandbox = Sandbox::new("", "");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "start", || {
        sandbox.log().contains("jobd ready")
    });
    let good = std::fs::read_to_string(sandbox.config()).unwrap();
    std::fs::write(
        sandbox.config(),
        format!("{good}\n[retry]\nmax_attempts = 3\n"),
    )
    .unwrap();
    signal(&jobd, libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        sandbox.log().contains("reloaded the configuration")
    });
    std::fs::write(
        sandbox.config(),
        format!("{good}\n[retry]\nmax_attempts = 0\n"),
    )
    .unwrap();
    signal(&jobd, libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the refusal", || {
        sandbox.log().contains("reload refused")
    });
    assert!(sandbox
        .log()
        .contains("retry.max_attempts: must be at least 1"));
    // Still running, with the good reloaded policy: a failing job dies after 3 attempts.
    std::fs::write(
        sandbox.config(),
        format!("{good}\n[retry]\nmax_attempts = 3\nbase = \"10ms\"\n"),
    )
    .unwrap();
    signal(&jobd, libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the second reload", || {
        sandbox.log().matches("reloaded the configuration").count() == 2
    });
    let out = sandbox.jobctl(&["enqueue", "noop", "--payload", r#"{"fail":"retry"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(
        Duration::from_secs(20),
        "the job to die after 3 attempts",
        || count_state(&sandbox.db(), "dead") == 1,
    );
    assert_eq!(sandbox.open().get(1).unwrap().attempts, 3);
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
}

#[test]
fn sd_notify_reports_ready_watchdog_status_and_stopping() {
    let sandbox = Sandbox::new("", "");
    // Two jobs due in a day: the status thread's count must find them.
    let in_a_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 86_400_000;
    enqueue_many(
        &sandbox,
        (0..2)
            .map(|_| NewJob::new("noop", json!({})).run_at(in_a_day))
            .collect(),
    );
    let socket_path = sandbox.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut jobd = std::process::Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sandbox.track(&jobd);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Watchdog pings keep coming, so each wait needs a deadline of its own.
    let mut wait_for = |what: &str, arrived: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !arrived(&seen) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within 20 s: {seen}"
            );
            let n = socket.recv(&mut buf).expect("a notification");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    };
    wait_for(
        "READY=1, WATCHDOG=1 and a STATUS= line counting the 2 jobs",
        &|seen| {
            seen.contains("READY=1")
                && seen.contains("WATCHDOG=1")
                && seen.contains("STATUS=ready 2, running 0; since start: 0 succeeded")
        },
    );
    signal(&jobd, libc::SIGHUP);
    wait_for("RELOADING=1", &|seen| seen.contains("RELOADING=1"));
    signal(&jobd, libc::SIGTERM);
    wait_for("STOPPING=1", &|seen| seen.contains("STOPPING=1"));
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
    assert!(
        seen.contains("RELOADING=1") && seen.contains("MONOTONIC_USEC="),
        "{seen}"
    );
}

#[test]
fn once_processes_what_is_ready_and_exits() {
    let sandbox = Sandbox::new("", "");
    enqueue_many(
        &sandbox,
        vec![
            NewJob::new("noop", json!({})),
            NewJob::new("noop", json!({"fail": "permanent", "error": "bad row"})),
            NewJob::new("noop", json!({})).run_at(i64::MAX / 2),
            NewJob::new("no-such-kind", json!({})),
        ],
    );
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(wait_exit(&mut jobd, Duration::from_secs(30)).success());
    let db = sandbox.open();
    let states: Vec<_> = (1..=4)
        .map(|id| db.get(id).unwrap().state.to_string())
        .collect();
    assert_eq!(states, ["succeeded", "dead", "queued", "dead"]);
    assert!(db
        .get(4)
        .unwrap()
        .last_error
        .unwrap()
        .contains("unknown kind 'no-such-kind'"));
    assert!(
        sandbox.log().contains("job 2 is dead: bad row"),
        "{}",
        sandbox.log()
    );
}

#[test]
fn a_second_sigterm_exits_at_once_and_puts_the_running_job_back() {
    let sandbox = Sandbox::new("workers = 1\nshutdown_grace = \"60s\"", "");
    sandbox.append_config(&append_command(&sandbox, "60"));
    enqueue_many(
        &sandbox,
        vec![NewJob::new("exec", json!({"command": "append"}))],
    );
    let mut jobd = sandbox.spawn_jobd(&[]);
    // Its command must have started: a job claimed but not yet handed to a worker is put
    // back at the first signal, and the drain would then end cleanly on its own.
    wait_until(Duration::from_secs(20), "the command to start", || {
        started_ids(&sandbox) == [1]
    });
    signal(&jobd, libc::SIGTERM);
    wait_until(Duration::from_secs(10), "the drain", || {
        sandbox.log().contains("stopping: no new claims")
    });
    let started = std::time::Instant::now();
    signal(&jobd, libc::SIGTERM);
    let status = wait_exit(&mut jobd, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(1),
        "a forced exit says so: {}",
        sandbox.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let job = sandbox.open().get(1).unwrap();
    assert_eq!(
        (job.state.as_str(), job.attempts),
        ("queued", 0),
        "{}",
        sandbox.log()
    );
}

#[test]
fn logs_can_be_json_lines() {
    let sandbox = Sandbox::new("", "");
    let mut jobd = sandbox.spawn_jobd(&["--once", "--log-format", "json"]);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
    let log = sandbox.log();
    let ready = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .find(|v| v["fields"]["message"] == "jobd ready")
        .expect("a ready line");
    assert_eq!(ready["level"], "INFO");
    assert!(ready["fields"]["database"]
        .as_str()
        .unwrap()
        .ends_with("jobs.db"));
}

#[test]
fn check_config_validates_without_starting() {
    let sandbox = Sandbox::new("", "");
    let out = std::process::Command::new(JOBD)
        .args(["--check-config", "--config"])
        .arg(sandbox.config())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains(": ok"));
    assert!(!sandbox.db().exists());
}

#[test]
fn a_watch_whose_jobs_would_be_refused_is_refused_at_start() {
    let cases = [
        (
            "kind = \"oneroster\"\nmode = \"dir\"\nrequired = [\"school.csv\"]\n[watch.payload]\narchive = \"tar\"\n",
            "archive: 'tar' is not supported",
        ),
        (
            "kind = \"oneroster\"\nmode = \"dir\"\nrequired = [\"school.csv\"]\n[watch.payload]\non_eror = \"skip\"\n",
            "unknown field `on_eror`",
        ),
        (
            "kind = \"csv_import\"\n[watch.payload]\npipeline = \"nope\"\n",
            "nope",
        ),
        (
            "kind = \"csv_import\"\n[watch.payload]\npipeline = \"daily\"\nbatch_sise = 10\n",
            "unknown field `batch_sise`",
        ),
        (
            "kind = \"relay\"\n[watch.payload]\nstorefrnt = \"bosley\"\n",
            "relay payload: unknown field 'storefrnt'",
        ),
        (
            "kind = \"relay\"\n[watch.payload]\nextra = \"team\"\n",
            "relay payload: extra must be an object",
        ),
        ("kind = \"shipit\"\n", "unknown kind 'shipit'"),
    ];
    for (watch, expected) in cases {
        let sandbox = Sandbox::new("", "");
        sandbox.append_config(&format!(
            "[[watch]]\npath = \"{}\"\n{watch}",
            sandbox.path("in").display()
        ));
        for args in [&["--check-config"][..], &[]] {
            let out = std::process::Command::new(JOBD)
                .args(args)
                .arg("--config")
                .arg(sandbox.config())
                .output()
                .unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{watch}: {err}");
            assert!(err.contains("watch[0] ("), "{err}");
            assert!(
                err.contains(expected),
                "{watch}: expected {expected:?} in {err}"
            );
        }
        assert!(!sandbox.db().exists(), "nothing ran");
        assert!(!sandbox.path("var").exists(), "no folder was made");
    }
}

#[test]
fn a_watch_may_add_its_own_fields_under_extra() {
    let pipeline = "[endpoints.e]\nbase_url = \"http://127.0.0.1:9\"\n\
        [pipelines.daily]\nkind = \"csv_import\"\nendpoint = \"e\"\ncolumns = [{ name = \"id\" }]\n";
    for (kind, extra) in [("csv_import", "pipeline = \"daily\"\n"), ("relay", "")] {
        let sandbox = Sandbox::new("", pipeline);
        sandbox.append_config(&format!(
            "[[watch]]\npath = \"{}\"\nkind = \"{kind}\"\n[watch.payload]\n{extra}\
             extra = {{ team = \"crm\", ticket = 42 }}\n",
            sandbox.path("in").display()
        ));
        let out = std::process::Command::new(JOBD)
            .args(["--check-config", "--config"])
            .arg(sandbox.config())
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
    }
}

#[test]
fn a_queue_limit_keeps_its_jobs_from_overlapping() {
    let sandbox = Sandbox::new("workers = 4", "[queues.serial]\nconcurrency = 1\n");
    let log = sandbox.path("spans.txt");
    sandbox.append_config(&format!("[commands.span]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo start >> '{p}'; sleep 0.1; echo end >> '{p}'\"]\n",
            p = log.display()));
    let mut jobs: Vec<NewJob> = (0..6)
        .map(|_| NewJob::new("exec", json!({"command": "span"})).queue("serial"))
        .collect();
    jobs.extend((0..20).map(|_| NewJob::new("noop", json!({}))));
    enqueue_many(&sandbox, jobs);
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(wait_exit(&mut jobd, Duration::from_secs(60)).success());
    let spans = std::fs::read_to_string(log).unwrap();
    let expected: Vec<&str> = std::iter::repeat_n(["start", "end"], 6).flatten().collect();
    assert_eq!(
        spans.lines().collect::<Vec<_>>(),
        expected,
        "jobs of the serial queue overlapped"
    );
    assert_eq!(count_state(&sandbox.db(), "succeeded"), 26);
}
