//! The daemon's edges through the real binaries: one daemon per database file whatever
//! path names it, the folders it makes, the socket's default limits and refusals, exec's
//! clean environment, masking and process-group cleanup, and what start refuses
//! (`--check-config`, a read-only database).

use crate::common::*;
use crate::ingest::TestDaemon;
use crate::socket::Client;
use jobd::job::NewJob;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn enqueue(sandbox: &Sandbox, job: NewJob) -> i64 {
    let mut db = sandbox.migrate();
    db.write(|tx| tx.enqueue(&[job], 1)).unwrap()[0].id
}

fn exec_job(command: &str) -> NewJob {
    NewJob::new("exec", json!({"command": command}))
}

/// `jobd --once` on the sandbox's config with `env` added to a cleared environment.
fn run_once_with_env(sandbox: &Sandbox, env: &[(&str, &str)]) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sandbox.path("jobd.log"))
        .unwrap();
    let status = Command::new(JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--once")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success(), "{}", sandbox.log());
}

/// The process's umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

/// Whether `pid` is a process that is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the command name in parentheses.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            members.push(pid);
        }
    }
    members
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_second_daemon_through_a_symlink_or_a_hard_link_is_refused() {
    let sandbox = Sandbox::new("", "");
    let mut first = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the first daemon", || {
        sandbox.log().contains("jobd ready")
    });
    let symlink = sandbox.path("via-symlink.db");
    std::os::unix::fs::symlink(sandbox.db(), &symlink).unwrap();
    let hard_link = sandbox.path("via-hard-link.db");
    std::fs::hard_link(sandbox.db(), &hard_link).unwrap();
    for (name, database) in [("symlink", &symlink), ("hard-link", &hard_link)] {
        // Its own data_dir and socket: only the database is shared.
        let config = sandbox.path(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[daemon]\ndatabase = \"{}\"\ndata_dir = \"{}\"\nsocket = \"{}\"\n",
                database.display(),
                sandbox.path(&format!("var-{name}")).display(),
                sandbox.path(&format!("{name}.sock")).display()
            ),
        )
        .unwrap();
        let second = Command::new(JOBD)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let message = stderr(&second);
        assert_eq!(second.status.code(), Some(1), "{name}: {message}");
        assert!(
            message.contains("another jobd is already running"),
            "{name}: {message}"
        );
        assert!(
            message.contains(&format!("by pid {}", first.id())),
            "{name}: {message}"
        );
        assert!(
            !sandbox.path(&format!("{name}.sock")).exists(),
            "{name}: the refused daemon bound its socket"
        );
    }
    signal(&first, libc::SIGTERM);
    assert!(wait_exit(&mut first, Duration::from_secs(20)).success());
}

#[test]
fn the_default_var_and_its_run_folder_are_0750() {
    // The sandbox only holds the files and kills the daemon if the test fails: its own
    // config names other paths, and this daemon runs on an empty one, which is the
    // built-in defaults: ./var, ./var/jobs.db, ./var/run/jobd.sock.
    let sandbox = Sandbox::new("", "");
    let dir = &sandbox.dir;
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let log_file = std::fs::File::create(sandbox.path("jobd.log")).unwrap();
    let mut jobd = Command::new(JOBD)
        .args(["--config", "empty.toml"])
        .current_dir(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    sandbox.track(&jobd);
    wait_until(Duration::from_secs(20), "the daemon", || {
        sandbox.log().contains("jobd ready")
    });
    signal(&jobd, libc::SIGTERM);
    assert!(wait_exit(&mut jobd, Duration::from_secs(20)).success());
    let expected = 0o750 & !umask();
    for folder in ["var", "var/run"] {
        let mode = std::fs::metadata(dir.path().join(folder))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, expected, "{folder} is {mode:o}");
    }
}

#[test]
fn a_full_default_batch_of_100_byte_payloads_fits_the_default_line_limit() {
    let daemon = TestDaemon::start("");
    let jobs: Vec<Value> = (0..10_000)
        .map(|i| json!({"kind": "noop", "payload": {"note": format!("{i:0>89}")}}))
        .collect();
    assert_eq!(jobs[0]["payload"].to_string().len(), 100);
    let request = json!({"op": "enqueue", "jobs": jobs}).to_string();
    assert!(
        request.len() > 1024 * 1024,
        "the batch ({} bytes) is over the old 1 MiB limit",
        request.len()
    );
    let answer = Client::connect_to(&daemon.socket).ask(&request);
    assert_eq!(answer["ok"], true, "{}", answer["error"]);
    assert_eq!(answer["ids"].as_array().unwrap().len(), 10_000);
}

#[test]
fn jobctl_says_why_the_daemon_refused_its_connection() {
    let daemon = TestDaemon::start("[socket]\nmax_connections = 2\n");
    // Two connections that say nothing hold both slots (the harness's own ping
    // connection may hold one until the daemon sees it close).
    let admitted = || -> Option<std::os::unix::net::UnixStream> {
        use std::io::{BufRead, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let _ = writeln!(stream, "{{\"op\":\"ping\"}}");
        let mut line = String::new();
        std::io::BufReader::new(&stream).read_line(&mut line).ok()?;
        line.contains("pong").then_some(stream)
    };
    let mut held = Vec::new();
    crate::common::wait_until(Duration::from_secs(10), "two connections admitted", || {
        held.extend(admitted());
        held.len() == 2
    });
    for args in [
        &["ping"][..],
        &["enqueue", "noop", "--payload", "{}", "--via-socket"][..],
    ] {
        let (code, _, err) = daemon.jobctl(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("too_many_connections"), "{args:?}: {err}");
        assert!(
            err.contains("2 connections are open already"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

const SECRET: &str = "s3cret-token-0451";

/// A config with an endpoint whose bearer token is `USAGE_API_TOKEN`: the token is a
/// secret the daemon knows.
fn with_secret_endpoint(commands: &str) -> Sandbox {
    Sandbox::new(
        "",
        &format!(
            "[retry]\nmax_attempts = 1\n\
             [endpoints.usage]\nbase_url = \"http://127.0.0.1:9/\"\n\
             [endpoints.usage.auth]\ntype = \"bearer\"\ntoken_env = \"USAGE_API_TOKEN\"\n{commands}"
        ),
    )
}

#[test]
fn a_command_gets_a_clean_environment_and_env_pass_passes_one_variable() {
    let seen = tempfile::tempdir().unwrap();
    let env_file = seen.path().join("env.txt");
    let sandbox = with_secret_endpoint(&format!(
        "[commands.show_env]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"env > '{}'\"]\n\
         env_pass = [\"REPORT_HINT\", \"NOT_SET_ANYWHERE\"]\nenv = {{ OWN = \"declared\" }}\n",
        env_file.display()
    ));
    let id = enqueue(&sandbox, exec_job("show_env"));
    run_once_with_env(
        &sandbox,
        &[
            ("USAGE_API_TOKEN", SECRET),
            ("REPORT_HINT", "passed"),
            ("DAEMON_ONLY", "kept-in-the-daemon"),
            ("LC_ALL", "C"),
        ],
    );
    assert_eq!(sandbox.open().get(id).unwrap().state.as_str(), "succeeded");
    let env = std::fs::read_to_string(&env_file).unwrap();
    let names: std::collections::BTreeSet<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(!env.contains(SECRET), "{env}");
    assert!(!env.contains("DAEMON_ONLY"), "{env}");
    assert!(!env.contains("RUST_LOG"), "{env}");
    assert!(env.contains("REPORT_HINT=passed\n"), "{env}");
    assert!(env.contains("OWN=declared\n"), "{env}");
    assert!(env.contains(&format!("JOBD_JOB_ID={id}\n")), "{env}");
    assert!(env.contains("LC_ALL=C\n"), "{env}");
    // What `sh` adds itself (PWD, SHLVL, _) aside, nothing else is there.
    let allowed = [
        "PATH",
        "LC_ALL",
        "REPORT_HINT",
        "OWN",
        "JOBD_JOB_ID",
        "JOBD_ATTEMPT",
        "JOBD_KIND",
        "JOBD_QUEUE",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for name in names {
        assert!(allowed.contains(&name), "{name} reached the command: {env}");
    }
}

#[test]
fn a_secret_a_command_prints_is_masked_in_attempts_and_jobctl_show() {
    // The operator passed the token on purpose; what the command prints of it is not
    // stored anyway.
    let sandbox = with_secret_endpoint(
        "[commands.leaky]\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"echo \\\"calling with $USAGE_API_TOKEN\\\" >&2; echo \\\"rejected $USAGE_API_TOKEN\\\" >&2; exit 3\"]\n\
         env_pass = [\"USAGE_API_TOKEN\"]\n",
    );
    let id = enqueue(&sandbox, exec_job("leaky"));
    run_once_with_env(&sandbox, &[("USAGE_API_TOKEN", SECRET)]);
    let db = sandbox.open();
    let job = db.get(id).unwrap();
    assert_eq!(job.state.as_str(), "dead");
    let error = job.last_error.unwrap();
    assert_eq!(error, "exited with 3: rejected ***");
    let attempt = &db.attempts(id).unwrap()[0];
    let tail = attempt.detail.as_ref().unwrap()["stderr_tail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(tail, "calling with ***\nrejected ***\n");
    assert!(!attempt.error.clone().unwrap_or_default().contains(SECRET));
    let show = sandbox.jobctl(&["show", &id.to_string()]);
    let json_show = sandbox.jobctl(&["--json", "show", &id.to_string()]);
    for out in [&show, &json_show] {
        assert!(out.status.success(), "{}", stderr(out));
        assert!(!stdout(out).contains(SECRET), "{}", stdout(out));
    }
    assert!(stdout(&json_show).contains("***"), "{}", stdout(&json_show));
    let raw = std::fs::read(sandbox.db()).unwrap();
    let wal = std::fs::read(sandbox.path("jobs.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in the database file"
        );
    }
}

#[test]
fn a_timeout_sends_sigterm_then_sigkill_after_the_kill_grace() {
    let sandbox = Sandbox::new("kill_grace = \"1s\"", "");
    let pid_file = sandbox.path("leader.pid");
    // It notes the TERM and goes on: only SIGKILL ends it.
    sandbox.append_config(&format!(
        "[retry]\nmax_attempts = 1\n[commands.stubborn]\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"trap 'echo got TERM >&2' TERM; echo $$ > '{}'; while :; do sleep 0.1; done\"]\n\
         timeout = \"500ms\"\n",
        pid_file.display()
    ));
    let id = enqueue(&sandbox, exec_job("stubborn"));
    let started = Instant::now();
    run_once_with_env(&sandbox, &[]);
    assert!(started.elapsed() < Duration::from_secs(30));
    let db = sandbox.open();
    let job = db.get(id).unwrap();
    assert_eq!(job.state.as_str(), "dead", "{job:?}");
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("timed out after 500ms; the process group got SIGTERM, and SIGKILL after 1s"),
        "{job:?}"
    );
    let detail = db.attempts(id).unwrap()[0].detail.clone().unwrap();
    assert_eq!(detail["signal"], libc::SIGKILL, "{detail}");
    assert!(
        detail["stderr_tail"].as_str().unwrap().contains("got TERM"),
        "SIGTERM came first: {detail}"
    );
    let ran_ms = detail["duration_ms"].as_u64().unwrap();
    assert!(
        ran_ms >= 1400,
        "SIGKILL came before the grace was over: {ran_ms} ms"
    );
    let leader = read_pid(&pid_file);
    assert!(!alive(leader));
    assert!(group_members(leader).is_empty());
}

#[test]
fn a_forced_exit_leaves_no_process_of_a_command_group_alive() {
    let sandbox = Sandbox::new("workers = 1\nshutdown_grace = \"60s\"", "");
    let leader_file = sandbox.path("leader.pid");
    let child_file = sandbox.path("child.pid");
    sandbox.append_config(&format!(
        "[commands.long]\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"sleep 60 & echo $! > '{c}'; echo $$ > '{l}'; wait\"]\n",
        c = child_file.display(),
        l = leader_file.display()
    ));
    let id = enqueue(&sandbox, exec_job("long"));
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "the command to start", || {
        std::fs::read_to_string(&leader_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let leader = read_pid(&leader_file);
    let child = read_pid(&child_file);
    assert!(alive(leader) && alive(child));
    assert_eq!(group_members(leader).len(), 2, "sh and sleep share a group");
    signal(&jobd, libc::SIGTERM);
    wait_until(Duration::from_secs(10), "the drain", || {
        sandbox.log().contains("stopping: no new claims")
    });
    signal(&jobd, libc::SIGTERM);
    let status = wait_exit(&mut jobd, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", sandbox.log());
    // The kernel delivers SIGKILL before jobd's exit returns; reaping may take a moment.
    wait_until(Duration::from_secs(5), "the group to be gone", || {
        group_members(leader).is_empty()
    });
    assert!(!alive(leader) && !alive(child), "{}", sandbox.log());
    let job = sandbox.open().get(id).unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("queued", 0));
}

/// Runs a binary as the unprivileged `nobody` (setpriv), the way to make file modes
/// count when the tests run as root.
fn as_nobody(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("setpriv (util-linux) runs")
}

#[test]
fn a_read_only_database_is_refused_at_start_and_jobctl_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let db = root.join("jobs.db");
    let config = root.join("jobd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\ndata_dir = \"{}\"\nsocket = \"{}\"\n",
            db.display(),
            root.join("var").display(),
            root.join("jobd.sock").display()
        ),
    )
    .unwrap();
    let mut made = jobd::store::open(
        &db,
        &jobd::store::OpenOptions {
            create: true,
            migrate: true,
            ..Default::default()
        },
    )
    .unwrap();
    made.write(|tx| tx.enqueue(&[NewJob::new("noop", json!({}))], 1))
        .unwrap();
    drop(made);
    // nobody owns the folder (it may make the lock, WAL and shm files) and the database,
    // but the database is 0444: read-only for its user.
    let chown = |path: &Path| std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        chown(&entry.path());
    }
    chown(root);
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();

    let started = Instant::now();
    let out = as_nobody(JOBD, &["--config", config.to_str().unwrap()]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "{message}");
    assert!(message.contains("read-only"), "{message}");
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(!message.contains("jobd ready"), "{message}");

    let out = as_nobody(
        JOBCTL,
        &["--config", config.to_str().unwrap(), "enqueue", "noop"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    // Reading still works.
    let out = as_nobody(JOBCTL, &["--config", config.to_str().unwrap(), "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_config_refuses_each_bad_setting_naming_the_key_and_its_range() {
    let probe = Sandbox::new("", "");
    let dir = probe.dir.path().display().to_string();
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            String::new(),
            "[log]\nlevel = \"loud\"".into(),
            vec!["log.level: 'loud'", "allowed: trace, debug, info"],
        ),
        (
            String::new(),
            "[socket]\ngroup = \"nosuchgroup\"".into(),
            vec!["socket.group: no group 'nosuchgroup'"],
        ),
        (
            String::new(),
            format!("[[watch]]\npath = \"{dir}/missing\"\ncreate = false"),
            vec!["watch[0].path:", "create = false"],
        ),
        (
            String::new(),
            format!("[commands.report]\nprogram = \"{dir}/jobd.toml\""),
            vec!["commands.report.program:", "is not executable"],
        ),
        (
            String::new(),
            format!("[commands.report]\nprogram = \"{dir}\""),
            vec!["commands.report.program:", "is not a file"],
        ),
        (
            String::new(),
            "[commands.report]\nprogram = \"no-such-program-anywhere\"".into(),
            vec![
                "commands.report.program:",
                "not an executable file in the PATH",
            ],
        ),
        (
            "poll_interval = \"1ns\"".into(),
            String::new(),
            vec!["daemon.poll_interval: 1ns is outside the allowed range 5ms to 1m"],
        ),
        (
            "busy_timeout = \"0s\"".into(),
            String::new(),
            vec!["daemon.busy_timeout: 0s is outside the allowed range 100ms to 10m"],
        ),
        (
            "job_timeout = \"1ns\"".into(),
            String::new(),
            vec!["daemon.job_timeout: 1ns is outside the allowed range 100ms to 7days"],
        ),
        (
            "shutdown_grace = \"1000y\"".into(),
            String::new(),
            vec![
                "daemon.shutdown_grace:",
                "is outside the allowed range 0s to 1h",
            ],
        ),
        (
            "retention = \"0s\"".into(),
            String::new(),
            vec!["daemon.retention: 0s is outside the allowed range 1m to"],
        ),
        (
            "synchronous = \"off\"".into(),
            String::new(),
            vec![
                "daemon.synchronous: off is refused",
                "allowed: normal, full, extra",
            ],
        ),
        (
            "kill_grace = \"2h\"".into(),
            String::new(),
            vec!["daemon.kill_grace: 2h is outside the allowed range 0s to 1h"],
        ),
        // Every error is reported, not only the first.
        (
            "poll_interval = \"1ns\"\nretention = \"0s\"".into(),
            "[log]\nlevel = \"loud\"\n[socket]\ngroup = \"nosuchgroup\"".into(),
            vec!["daemon.poll_interval:", "daemon.retention:", "log.level:"],
        ),
        // ... in every section, with every secret that cannot be read.
        (
            "workers = 0".into(),
            "[socket]\nmax_batch = 0\n[endpoints.e]\nbase_url = \"ftp://x\"\nburst = 0\n\
             [endpoints.f]\nbase_url_env = \"JOBD_IT_UNSET_F\"\n[notify]\ncommand = \"nope\""
                .into(),
            vec![
                "daemon.workers: must be at least 1",
                "socket.max_batch: must be at least 1",
                "endpoints.e.base_url: scheme 'ftp' is not http or https",
                "endpoints.e.burst: must be at least 1",
                "notify.command: 'nope' is not a [commands.NAME] entry",
                "endpoints.f.base_url_env: the environment variable JOBD_IT_UNSET_F is not set",
            ],
        ),
        (
            String::new(),
            "[endpoints.f]\nbase_url_env = \"JOBD_IT_UNSET_F\"\n\
             [endpoints.g]\nbase_url = \"https://g\"\nauth = { type = \"bearer\", token_env = \"JOBD_IT_UNSET_G\" }"
                .into(),
            vec![
                "endpoints.f.base_url_env: the environment variable JOBD_IT_UNSET_F is not set",
                "endpoints.g.auth.token_env: the environment variable JOBD_IT_UNSET_G is not set",
            ],
        ),
    ];
    for (daemon_keys, extra, expected) in cases {
        let sandbox = Sandbox::new(&daemon_keys, &extra);
        let out = Command::new(JOBD)
            .arg("--config")
            .arg(sandbox.config())
            .arg("--check-config")
            .output()
            .unwrap();
        let message = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{daemon_keys} {extra}: {message}"
        );
        for part in expected {
            assert!(
                message.contains(part),
                "{daemon_keys} {extra}: wanted {part:?} in {message}"
            );
        }
        // What --check-config refuses, start refuses too, before it makes anything.
        let start = Command::new(JOBD)
            .arg("--config")
            .arg(sandbox.config())
            .output()
            .unwrap();
        assert_eq!(start.status.code(), Some(2), "{}", stderr(&start));
        assert!(!sandbox.db().exists());
    }
}

#[test]
fn jobctl_check_checks_the_config_alone_before_the_database_exists() {
    let sandbox = Sandbox::new("", "");
    let out = sandbox.jobctl(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ok"), "{text}");
    assert!(
        text.contains("does not exist yet; checked the config only"),
        "{text}"
    );
    assert!(!sandbox.db().exists(), "check created the database");
    // A config the daemon could not start on is refused, database or not.
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\ncreate = false\n",
        sandbox.path("missing").display()
    ));
    let out = sandbox.jobctl(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("watch[0].path"), "{}", stderr(&out));
}

#[test]
fn what_a_command_leaves_running_in_its_group_is_killed_when_it_exits() {
    let sandbox = Sandbox::new("", "");
    let pid_file = sandbox.path("left.pid");
    sandbox.append_config(&format!(
        "[commands.leaves]\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"sleep 60 & echo $! > '{}'; exit 0\"]\n",
        pid_file.display()
    ));
    let id = enqueue(&sandbox, exec_job("leaves"));
    let started = Instant::now();
    run_once_with_env(&sandbox, &[]);
    // The sleep held the stderr pipe: before, the attempt waited the whole minute.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(sandbox.open().get(id).unwrap().state.as_str(), "succeeded");
    let left = read_pid(&pid_file);
    wait_until(
        Duration::from_secs(5),
        "the leftover sleep to be gone",
        || !alive(left),
    );
}
