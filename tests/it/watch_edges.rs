//! Watched-folder edge cases end where an operator sees them, through the real daemon: a
//! file the daemon cannot read (the daemon runs as `nobody` through `setpriv`, since the
//! tests run as root and root reads a mode-000 file), symlinks, names that are not
//! UTF-8 and FIFOs (in `jobctl stats`, the socket's stats op and the Prometheus gauge),
//! and an input whose name leaves no room for `.error.json`.

use crate::ingest::{drop_file, TestDaemon};
use jobd::job::JobState;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// Waits for `f` to give a value, failing with the daemon's log.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
    f: impl FnMut() -> Option<T>,
) -> T {
    crate::common::wait_for_explained(limit, what, f, || format!("log:\n{}", log()))
}

fn jobctl(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn not_taken_in(config: &Path) -> Vec<Value> {
    let (code, text) = jobctl(config, &["stats", "--json"]);
    assert_eq!(code, 0, "{text}");
    let stats: Value = serde_json::from_str(&text).unwrap();
    stats["not_taken_in"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The socket's answer to `{"op":"stats"}`.
fn socket_stats(socket: &Path) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    writeln!(stream, r#"{{"op":"stats"}}"#).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// The daemon, as the unprivileged user, killed when the test ends.
struct Unprivileged(Child);

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_file_the_daemon_cannot_read_is_reported_then_becomes_a_dead_job_in_failed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let (var, input) = (root.join("var"), root.join("in"));
    for folder in [&var, &input] {
        fs::create_dir(folder).unwrap();
        chown(folder, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let config = root.join("jobd.toml");
    fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{v}/jobs.db\"\ndata_dir = \"{v}\"\nsocket = \"{v}/jobd.sock\"\n\
             poll_interval = \"20ms\"\nsynchronous = \"normal\"\n[log]\nlevel = \"info\"\n\
             [[watch]]\npath = \"{i}\"\nkind = \"noop\"\nsettle = \"100ms\"\nrescan = \"1s\"\n\
             unreadable_timeout = \"4s\"\n",
            v = var.display(),
            i = input.display()
        ),
    )
    .unwrap();
    let log_path = root.join("jobd.log");
    let daemon = Unprivileged(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_jobd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the daemon", Duration::from_secs(20), &log, || {
        log().contains("jobd ready").then_some(())
    });

    // Root's file, mode 000: the daemon's user cannot open it, but may move it.
    let outside = root.join("secret.csv");
    fs::write(&outside, "id\n1\n").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o000)).unwrap();
    let dropped = Instant::now();
    fs::rename(&outside, input.join("secret.csv")).unwrap();

    // Before the timeout: in jobctl stats, with the reason.
    let reported = wait_for("the report", Duration::from_secs(10), &log, || {
        not_taken_in(&config).into_iter().next()
    });
    assert!(
        dropped.elapsed() < Duration::from_secs(4),
        "reported before the timeout"
    );
    let problem = reported["problem"].as_str().unwrap();
    assert!(
        problem.contains("cannot be read") && problem.contains("Permission denied"),
        "{problem}"
    );
    let (_, text) = jobctl(&config, &["stats"]);
    assert!(
        text.contains("not taken in from watched folders:") && text.contains("secret.csv"),
        "{text}"
    );

    // After it: a dead job, the input in failed/ beside its error, the report cleared.
    let db = var.join("jobs.db");
    let id = wait_for("a dead job", Duration::from_secs(20), &log, || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        conn.query_row("SELECT id FROM jobs WHERE state = 'dead'", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
    });
    assert!(
        dropped.elapsed() >= Duration::from_secs(4),
        "not before the timeout"
    );
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    let failed = var.join("failed").join(&day).join(id.to_string());
    wait_for(
        "the input in failed/",
        Duration::from_secs(10),
        &log,
        || failed.join("secret.csv").exists().then_some(()),
    );
    assert!(!input.join("secret.csv").exists());
    let error: Value =
        serde_json::from_slice(&fs::read(failed.join("secret.csv.error.json")).unwrap()).unwrap();
    let reason = error["last_error"].as_str().unwrap();
    assert!(
        reason.contains("secret.csv could not be read for 4s")
            && reason.contains("Permission denied"),
        "{reason}"
    );
    let (_, shown) = jobctl(&config, &["show", &id.to_string()]);
    assert!(shown.contains("could not be read"), "{shown}");
    assert!(
        not_taken_in(&config).is_empty(),
        "cleared once it is a dead job"
    );
    // Logged once as a warning before, once as the dead job; not every 5 s.
    assert_eq!(log().matches("cannot take in").count(), 1, "{}", log());
    drop(daemon);
}

#[test]
fn symlinks_names_that_are_not_utf8_and_fifos_are_reported_once_in_the_log_and_in_stats() {
    let daemon = TestDaemon::start(
        "[metrics]\ntextfile = \"{dir}/jobd.prom\"\ninterval = \"1s\"\n\
         [[watch]]\npath = \"{dir}/in\"\nsettle = \"100ms\"\nrescan = \"500ms\"\nkind = \"noop\"\n",
    );
    let input = daemon.input.clone();
    std::os::unix::fs::symlink("/etc/passwd", input.join("link.csv")).unwrap();
    let bad_name = OsStr::from_bytes(b"caf\xe9.csv");
    fs::write(input.join(bad_name), "x\n").unwrap();
    let fifo = input.join("pipe.csv");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a path we own, NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    drop_file(&daemon, "good.csv", b"ok\n");

    let log = || daemon.log();
    let problems = wait_for("three reports", Duration::from_secs(10), &log, || {
        let found = not_taken_in(&daemon.config);
        (found.len() == 3).then_some(found)
    });
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{} {}", p["path"], p["problem"]))
        .collect();
    let all = text.join("\n");
    assert!(
        all.contains("link.csv") && all.contains("a symlink"),
        "{all}"
    );
    assert!(
        all.contains("caf\u{fffd}.csv") && all.contains("not valid UTF-8"),
        "{all}"
    );
    assert!(
        all.contains("pipe.csv") && all.contains("not a regular file"),
        "{all}"
    );
    // The socket's stats op lists the same entries; Prometheus counts them, both from
    // jobctl and in the daemon's textfile.
    let socket = socket_stats(&daemon.socket);
    let listed: Vec<&str> = socket["not_taken_in"]
        .as_array()
        .unwrap_or_else(|| panic!("{socket}"))
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{socket}");
    assert!(listed.iter().any(|p| p.ends_with("link.csv")), "{socket}");
    let (code, prometheus, _) = daemon.jobctl(&["stats", "--format", "prometheus"]);
    assert_eq!(code, 0);
    assert!(
        prometheus.contains("# TYPE jobd_watch_not_taken_in gauge\njobd_watch_not_taken_in 3\n"),
        "{prometheus}"
    );
    let textfile = daemon.dir.path().join("jobd.prom");
    wait_for(
        "the textfile to count them",
        Duration::from_secs(10),
        &log,
        || {
            fs::read_to_string(&textfile)
                .ok()?
                .contains("jobd_watch_not_taken_in 3\n")
                .then_some(())
        },
    );
    let (code, stats, _) = daemon.jobctl(&["stats"]);
    assert_eq!(code, 0);
    assert!(
        stats.contains("not taken in from watched folders:"),
        "{stats}"
    );
    assert!(
        stats.contains("\"") && stats.contains("link.csv"),
        "{stats}"
    );
    // Only the good file became a job; the link's target was never spooled.
    let jobs = daemon.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(input.join("link.csv").symlink_metadata().is_ok());

    // A removed entry leaves the report at the next rescan, the rescan that looks at the
    // others again: two of them later, each entry was still logged only once.
    fs::remove_file(input.join("link.csv")).unwrap();
    wait_for(
        "the link to leave the report",
        Duration::from_secs(10),
        &log,
        || (not_taken_in(&daemon.config).len() == 2).then_some(()),
    );
    fs::remove_file(&fifo).unwrap();
    wait_for(
        "the FIFO to leave the report",
        Duration::from_secs(10),
        &log,
        || (not_taken_in(&daemon.config).len() == 1).then_some(()),
    );
    let log_text = daemon.log();
    assert_eq!(log_text.matches("not taking in").count(), 3, "{log_text}");
}

#[test]
fn an_input_with_a_250_byte_name_reaches_failed_with_a_shortened_error_file() {
    let mut daemon = TestDaemon::start(
        "[[watch]]\npath = \"{dir}/in\"\nsettle = \"100ms\"\nrescan = \"1s\"\nkind = \"noop\"\n\
         [watch.payload]\nfail = \"permanent\"\nerror = \"bad rows\"\n",
    );
    let name = format!("{}.csv", "n".repeat(246));
    assert_eq!(name.len(), 250);
    drop_file(&daemon, &name, b"x\n");
    let jobs = daemon.wait_for_jobs("a dead job", Duration::from_secs(10), |jobs| {
        jobs.len() == 1 && jobs[0].state == JobState::Dead
    });
    let id = jobs[0].id;
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    let failed: PathBuf = daemon.data.join("failed").join(&day).join(id.to_string());
    let log = || daemon.log();
    wait_for(
        "the input in failed/",
        Duration::from_secs(10),
        &log,
        || failed.join(&name).exists().then_some(()),
    );
    assert!(!daemon.data.join("spool").join(id.to_string()).exists());
    let sidecars: Vec<String> = fs::read_dir(&failed)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".error.json"))
        .collect();
    assert_eq!(sidecars.len(), 1, "{sidecars:?}");
    let sidecar = &sidecars[0];
    assert!(
        sidecar.len() <= 255 && sidecar.starts_with(&"n".repeat(200)),
        "{sidecar}"
    );
    let error: Value = serde_json::from_slice(&fs::read(failed.join(sidecar)).unwrap()).unwrap();
    assert_eq!(error["name"], name.as_str());
    assert!(error["last_error"].as_str().unwrap().contains("bad rows"));

    // jobctl retry brings it back without its error file.
    daemon.stop();
    let (code, _, err) = daemon.jobctl(&["retry", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let spooled = daemon.data.join("spool").join(id.to_string());
    assert!(spooled.join(&name).exists());
    assert!(!spooled.join(sidecar).exists());
}
