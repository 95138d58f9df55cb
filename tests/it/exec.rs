//! The `exec` kind through the real daemon: exit codes, stderr tails, timeouts that kill
//! the whole process group, and cancelling a running command.

use crate::common::*;
use jobd::clock::{Clock, SystemClock};
use jobd::job::NewJob;
use serde_json::json;
use std::time::Duration;

/// A sandbox whose config declares `script` (a /bin/sh -c command) as `[commands.NAME]`.
fn with_commands(daemon_keys: &str, commands: &[(&str, &str, Option<&str>)]) -> Sandbox {
    let mut extra = String::from("[retry]\nbase = \"10ms\"\nmax_attempts = 2\n");
    for (name, script, timeout) in commands {
        extra.push_str(&format!(
            "[commands.{name}]\nprogram = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n"
        ));
        if let Some(timeout) = timeout {
            extra.push_str(&format!("timeout = \"{timeout}\"\n"));
        }
    }
    Sandbox::new(daemon_keys, &extra)
}

fn enqueue(sandbox: &Sandbox, command: &str) -> i64 {
    let mut db = sandbox.migrate();
    db.write(|tx| {
        tx.enqueue(
            &[NewJob::new("exec", json!({"command": command, "n": 7}))],
            1,
        )
    })
    .unwrap()[0]
        .id
}

fn run_once(sandbox: &Sandbox) {
    let mut jobd = sandbox.spawn_jobd(&["--once"]);
    assert!(
        wait_exit(&mut jobd, Duration::from_secs(60)).success(),
        "{}",
        sandbox.log()
    );
}

#[test]
fn exit_codes_decide_success_retry_and_death_and_stderr_is_kept() {
    let sandbox = with_commands(
        "",
        &[
            ("ok", "cat > /dev/null; echo done >&2", None),
            ("later", "echo 'upstream busy' >&2; exit 75", None),
            (
                "broken",
                "echo 'first line' >&2; echo 'no such customer' >&2; exit 3",
                None,
            ),
        ],
    );
    let ok = enqueue(&sandbox, "ok");
    let later = enqueue(&sandbox, "later");
    let broken = enqueue(&sandbox, "broken");
    run_once(&sandbox);
    // `later` retried after 10 ms: once its run_at has come, run again until it is out of
    // attempts.
    let retry_at = sandbox.open().get(later).unwrap().run_at;
    wait_until(Duration::from_secs(5), "later's backoff to pass", || {
        SystemClock.now_ms() > retry_at
    });
    run_once(&sandbox);
    let db = sandbox.open();
    assert_eq!(db.get(ok).unwrap().state.as_str(), "succeeded");
    let ok_attempt = &db.attempts(ok).unwrap()[0];
    let detail = ok_attempt.detail.as_ref().unwrap();
    assert_eq!(detail["exit_code"], 0);
    assert_eq!(detail["stderr_tail"], "done\n");

    let later_job = db.get(later).unwrap();
    assert_eq!(later_job.state.as_str(), "dead", "{later_job:?}");
    let outcomes: Vec<_> = db
        .attempts(later)
        .unwrap()
        .iter()
        .map(|a| a.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["retry", "dead"]);
    assert!(later_job
        .last_error
        .unwrap()
        .contains("exited with 75 (retry): upstream busy"));

    let broken_job = db.get(broken).unwrap();
    assert_eq!(broken_job.state.as_str(), "dead");
    assert_eq!(broken_job.attempts, 1, "a permanent failure is not retried");
    assert_eq!(
        broken_job.last_error.as_deref(),
        Some("exited with 3: no such customer")
    );
}

#[test]
fn the_payload_arrives_on_stdin_with_the_job_in_the_environment() {
    let sandbox = Sandbox::new("", "");
    let out = sandbox.path("seen.txt");
    sandbox.append_config(&format!("[commands.record]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo $JOBD_JOB_ID $JOBD_ATTEMPT $JOBD_KIND $JOBD_QUEUE > '{p}'; cat >> '{p}'\"]\n",
            p = out.display()));
    let id = enqueue(&sandbox, "record");
    run_once(&sandbox);
    let seen = std::fs::read_to_string(out).unwrap();
    let (env, stdin) = seen.split_once('\n').unwrap();
    assert_eq!(env, format!("{id} 1 exec default"));
    let payload: serde_json::Value = serde_json::from_str(stdin).unwrap();
    assert_eq!(payload, json!({"command": "record", "n": 7}));
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let sandbox = Sandbox::new("", "");
    let pid_file = sandbox.path("grandchild.pid");
    sandbox.append_config(&format!("[retry]\nmax_attempts = 1\n[commands.hang]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"sleep 60 & echo $! > '{}'; wait\"]\ntimeout = \"300ms\"\n",
            pid_file.display()));
    let id = enqueue(&sandbox, "hang");
    let started = std::time::Instant::now();
    run_once(&sandbox);
    assert!(started.elapsed() < Duration::from_secs(20));
    let job = sandbox.open().get(id).unwrap();
    assert_eq!(job.state.as_str(), "dead");
    assert!(job
        .last_error
        .unwrap()
        .contains("timed out after 300ms; the process group got SIGTERM, and SIGKILL after 5s"));
    let grandchild: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(Duration::from_secs(5), "the grandchild to be gone", || {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(grandchild, 0) } == 0;
        !alive
    });
}

#[test]
fn cancelling_a_running_command_stops_it_and_the_job_ends_cancelled() {
    // The command says when it has started, so the cancel finds it running.
    let marks = tempfile::tempdir().unwrap();
    let started = marks.path().join("started");
    let script = format!("touch '{}'; exec sleep 60", started.display());
    let sandbox = with_commands("", &[("slow", &script, None)]);
    let id = enqueue(&sandbox, "slow");
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the command to start", || {
        started.exists()
    });
    assert_eq!(count_state(&sandbox.db(), "running"), 1);
    let out = sandbox.jobctl(&["cancel", &id.to_string()]);
    assert!(
        stdout(&out).contains("running; asked to stop"),
        "{}",
        stdout(&out)
    );
    wait_until(Duration::from_secs(30), "the job to be cancelled", || {
        count_state(&sandbox.db(), "cancelled") == 1
    });
    let job = sandbox.open().get(id).unwrap();
    assert!(job.last_error.unwrap().contains("cancelled by an operator"));
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
}

#[test]
fn a_command_that_cannot_start_is_a_permanent_error() {
    // A program that is not there is refused at start, naming the key.
    let missing = Sandbox::new("", "[commands.ghost]\nprogram = \"/no/such/program\"\n");
    let out = std::process::Command::new(JOBD)
        .arg("--config")
        .arg(missing.config())
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("commands.ghost.program: /no/such/program"),
        "{}",
        stderr(&out)
    );
    // One that is there but cannot be started (its interpreter is missing) fails the job.
    let sandbox = Sandbox::new("", "");
    let program = sandbox.path("ghost.sh");
    std::fs::write(&program, "#!/no/such/interpreter\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    sandbox.append_config(&format!(
        "[commands.ghost]\nprogram = \"{}\"\n",
        program.display()
    ));
    let id = enqueue(&sandbox, "ghost");
    run_once(&sandbox);
    let job = sandbox.open().get(id).unwrap();
    assert_eq!(job.state.as_str(), "dead");
    assert!(job
        .last_error
        .unwrap()
        .starts_with(&format!("cannot start {}", program.display())));
}

#[test]
fn a_dead_job_runs_the_notify_command_once_with_its_facts_on_stdin() {
    let sandbox = with_commands(
        "",
        &[("broken", "echo 'no such customer' >&2; exit 3", None)],
    );
    let seen = sandbox.path("alerts.ndjson");
    // The alert command records what it got, then fails itself: a notification that dies
    // must not notify again.
    sandbox.append_config(&format!(
        "[commands.alert]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"cat >> '{p}'; echo >> '{p}'; exit 3\"]\n\
         [notify]\ncommand = \"alert\"\n",
        p = seen.display()
    ));
    let broken = enqueue(&sandbox, "broken");
    run_once(&sandbox);
    let text = std::fs::read_to_string(&seen).unwrap();
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "one alert, not one per failed alert: {text}"
    );
    let facts = &alerts[0]["dead_letter"];
    assert_eq!(alerts[0]["command"], "alert");
    assert_eq!(facts["job_id"], broken);
    assert_eq!(facts["kind"], "exec");
    assert_eq!(facts["attempts"], 1);
    assert_eq!(facts["last_error"], "exited with 3: no such customer");
    let db = sandbox.open();
    let notifications = db
        .list(&jobd::store::JobFilter {
            parent_id: Some(broken),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(notifications[0].kind, "exec");
    assert_eq!(notifications[0].state.as_str(), "dead");
}
