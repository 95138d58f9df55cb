//! `jobctl top` in a real pseudo-terminal (tmux) and through a pipe; readable, coloured,
//! width-fitted tables; completions and man pages; errors as JSON. All through the real
//! binary against a real database.

use crate::common::*;
use jobd::clock::{Clock, SystemClock};
use jobd::job::NewJob;
use jobd::store::ClaimSpec;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A tmux server of this test's own (its socket in the sandbox), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// A server on its own socket: each instance gets a new one, since a killed
    /// server's socket can linger a moment.
    fn new(dir: &Path) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: dir.join(format!("tmux-{n}.sock")),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux is installed (.ci/run installs it)")
    }

    /// Starts `shell` in a detached session of this size.
    fn start(&self, width: u16, height: u16, shell: &str) {
        let (w, h) = (width.to_string(), height.to_string());
        let out = self.run(&["new-session", "-d", "-s", "t", "-x", &w, "-y", &h, shell]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
    }

    /// The screen as text; with `escapes`, with its colours as escape sequences.
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "t"];
        if escapes {
            args.push("-e");
        }
        stdout(&self.run(&args))
    }

    fn wait_for(&self, text: &str) -> String {
        crate::common::wait_for_explained(
            Duration::from_secs(10),
            &format!("{text:?} to appear on the screen"),
            || Some(self.screen(false)).filter(|screen| screen.contains(text)),
            || format!("the screen:\n{}", self.screen(false)),
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// A database with queued jobs in `queue`, one running job (worker `box:42`) and one
/// dead job with an error.
fn busy_sandbox(queue: &str) -> Sandbox {
    let sandbox = Sandbox::new("", "");
    let mut db = sandbox.migrate();
    let now = SystemClock.now_ms();
    let jobs: Vec<NewJob> = (0..3)
        .map(|i| {
            NewJob::new("noop", json!({ "n": i }))
                .queue(queue)
                .run_at(now + 3_600_000)
        })
        .chain([
            NewJob::new("noop", json!({}))
                .queue("work")
                .run_at(now - 100_000),
            NewJob::new("noop", json!({}))
                .queue("work")
                .run_at(now - 100_000),
        ])
        .collect();
    db.write(|tx| tx.enqueue(&jobs, now)).unwrap();
    let spec = ClaimSpec {
        limit: 2,
        limited_queues: vec![],
        destinations: vec![],
    };
    let claimed = db
        .write(|tx| tx.claim(&spec, "box:42", now + 600_000, now - 65_000))
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // The first one's handler started.
    let started = db
        .write(|tx| tx.record_starts(&[(claimed[0].id, 1, now - 65_000)], "box:42"))
        .unwrap();
    assert_eq!(started, 1);
    // A heartbeat since: "running since" stays the claim's time.
    let extended = db
        .write(|tx| tx.extend_leases(&[(claimed[0].id, 1)], "box:42", now + 900_000, now))
        .unwrap();
    assert_eq!(extended, 1);
    drop(db);
    // One of the two dies (as the completer would record it).
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.execute(
        "UPDATE jobs SET state = 'dead', lease_until = NULL, finished_at = ?1, \
         last_error = 'HTTP 503 from upstream' WHERE id = ?2",
        rusqlite::params![now - 120_000, claimed[1].id],
    )
    .unwrap();
    sandbox
}

/// jobctl as a shell command, without the test's NO_COLOR or COLUMNS.
fn ctl_args(sandbox: &Sandbox) -> String {
    format!(
        "env -u NO_COLOR -u COLUMNS {} --config {}",
        quote(Path::new(JOBCTL)),
        quote(&sandbox.config())
    )
}

#[test]
fn top_in_a_terminal_shows_the_queues_and_q_quits_with_0() {
    let sandbox = busy_sandbox("tmuxq");
    let tmux = Tmux::new(sandbox.dir.path());
    let exit_file = sandbox.path("exit.txt");
    tmux.start(
        120,
        40,
        &format!(
            "{} top; echo $? > {}",
            ctl_args(&sandbox),
            quote(&exit_file)
        ),
    );
    // The last section drawn, so the whole frame is on the screen.
    tmux.wait_for("HTTP 503 from upstream");
    let screen = tmux.wait_for("tmuxq");
    // The queue's three queued jobs, the running job's worker and how long it has run,
    // the dead job and its error.
    let tmuxq = screen
        .lines()
        .find(|l| l.contains("tmuxq"))
        .unwrap_or_default();
    let numbers: Vec<&str> = tmuxq
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(&numbers[..2], &["tmuxq", "3"], "{tmuxq}\n{screen}");
    for expected in ["box:42", "1m0", "HTTP 503 from upstream", "q quits"] {
        assert!(screen.contains(expected), "{expected}:\n{screen}");
    }
    // It refreshes: a new queue shows up without a key press.
    let mut db = sandbox.open();
    let now = SystemClock.now_ms();
    db.write(|tx| tx.enqueue(&[NewJob::new("noop", json!({})).queue("latecomer")], now))
        .unwrap();
    tmux.wait_for("latecomer");

    tmux.run(&["send-keys", "-t", "t", "q"]);
    wait_until(Duration::from_secs(10), "top to exit", || {
        exit_file.exists()
    });
    wait_until(Duration::from_secs(5), "the exit code", || {
        !std::fs::read_to_string(&exit_file)
            .unwrap_or_default()
            .is_empty()
    });
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}

#[test]
fn top_ends_when_its_terminal_goes_away() {
    // Seen: after `tmux kill-server` (no SIGHUP reached it) top read end-of-file from the
    // dead terminal over and over, at half a core, for as long as nobody killed it.
    let sandbox = busy_sandbox("hangup");
    let tmux = Tmux::new(sandbox.dir.path());
    tmux.start(100, 30, &format!("exec {} top", ctl_args(&sandbox)));
    tmux.wait_for("hangup");
    let pid = stdout(&tmux.run(&["display", "-p", "-t", "t", "#{pane_pid}"]))
        .trim()
        .to_string();
    assert!(!pid.is_empty());
    tmux.run(&["kill-server"]);
    // Gone, or a zombie waiting for init: either way it runs no more.
    wait_until(
        Duration::from_secs(10),
        "top to end",
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        },
    );
}

#[test]
fn top_restores_the_terminal_on_ctrl_c() {
    let sandbox = busy_sandbox("ctrlq");
    let tmux = Tmux::new(sandbox.dir.path());
    let exit_file = sandbox.path("exit.txt");
    tmux.start(
        100,
        30,
        &format!(
            "{} top; echo \"exit=$?\" > {}; stty -a > {}; sleep 30",
            ctl_args(&sandbox),
            quote(&exit_file),
            quote(&sandbox.path("stty.txt")),
        ),
    );
    tmux.wait_for("ctrlq");
    tmux.run(&["send-keys", "-t", "t", "C-c"]);
    wait_until(Duration::from_secs(10), "top to exit", || {
        sandbox.path("stty.txt").exists()
    });
    wait_until(Duration::from_secs(5), "stty", || {
        std::fs::read_to_string(sandbox.path("stty.txt"))
            .unwrap_or_default()
            .contains("icanon")
    });
    assert_eq!(
        std::fs::read_to_string(&exit_file).unwrap().trim(),
        "exit=0"
    );
    // Raw mode is off again: the terminal echoes and reads lines.
    let stty = std::fs::read_to_string(sandbox.path("stty.txt")).unwrap();
    for flag in [" icanon", " echo "] {
        assert!(stty.contains(flag), "{flag}: {stty}");
    }
    // And the alternate screen is gone: top's frame is no longer on the screen.
    assert!(
        !tmux.screen(false).contains("q quits"),
        "{}",
        tmux.screen(false)
    );
}

#[test]
fn top_through_a_pipe_prints_one_snapshot_and_exits() {
    let sandbox = busy_sandbox("pipeq");
    let out = sandbox.jobctl(&["top"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "no escape codes through a pipe: {text:?}"
    );
    for expected in [
        "Queues",
        "pipeq",
        "Throughput",
        "last minute",
        "Workers (1 running, 0 claimed ahead)",
        "box:42",
        "Recent deaths",
        "HTTP 503 from upstream",
        "2m ago",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    let worker = text.lines().find(|l| l.starts_with("box:42")).unwrap();
    assert!(worker.contains("1m0"), "running since about 65s: {worker}");
    // --json gives the same snapshot as data.
    let out = sandbox.jobctl(&["--json", "top"]);
    let value: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["running"][0]["worker"], "box:42");
    assert_eq!(value["stats"]["queues"]["pipeq"]["states"]["queued"], 3);
    assert_eq!(
        value["recent_deaths"][0]["last_error"],
        "HTTP 503 from upstream"
    );
}

#[test]
fn tables_are_readable_and_fitted_and_coloured_only_when_asked() {
    // The longest queue name the rule allows, longer than a piped cell.
    let long_queue = "q".repeat(64);
    let sandbox = busy_sandbox(&long_queue);
    // Piped: relative times and short durations, no escape codes, cells capped.
    let list = stdout(&sandbox.jobctl(&["list"]));
    assert!(list.contains("in 59m") || list.contains("in 1h"), "{list}");
    assert!(!list.contains('\x1b'), "{list:?}");
    assert!(list.lines().all(|l| l.chars().count() < 400), "{list}");
    assert!(list.contains('…'), "{list}");
    let show = stdout(&sandbox.jobctl(&["show", "1"]));
    assert!(
        show.contains("(in 59m)") || show.contains("(in 1h)"),
        "{show}"
    );
    assert!(show.contains("Z (") || show.contains(":00 ("), "{show}");
    let utc = stdout(&sandbox.jobctl(&["--utc", "show", "1"]));
    assert!(
        utc.lines()
            .any(|l| l.contains("created") && l.contains("Z (")),
        "{utc}"
    );
    // --json keeps milliseconds.
    let json_show: Value =
        serde_json::from_str(&stdout(&sandbox.jobctl(&["--json", "show", "1"]))).unwrap();
    assert!(json_show["job"]["run_at"].as_i64().unwrap() > 1_700_000_000_000);

    // COLUMNS fits the table to that width, whatever the queue name's length.
    let out = Command::new(JOBCTL)
        .args(["--config"])
        .arg(sandbox.config())
        .arg("list")
        .env("COLUMNS", "72")
        .output()
        .unwrap();
    let fitted = stdout(&out);
    assert_eq!(fitted.lines().count(), 6, "{fitted}");
    for line in fitted.lines() {
        assert!(
            line.chars().count() <= 72,
            "{}: {line}",
            line.chars().count()
        );
    }
    let stats = Command::new(JOBCTL)
        .args(["--config"])
        .arg(sandbox.config())
        .arg("stats")
        .env("COLUMNS", "60")
        .output()
        .unwrap();
    assert!(stats.status.success());

    // --color always colours even through a pipe and despite NO_COLOR; never does not.
    let always = Command::new(JOBCTL)
        .args(["--config"])
        .arg(sandbox.config())
        .args(["--color", "always", "list"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        stdout(&always).contains("\x1b[31mdead\x1b[0m"),
        "{:?}",
        stdout(&always)
    );
    let never = stdout(&sandbox.jobctl(&["--color", "never", "list"]));
    assert!(!never.contains('\x1b'));

    // On a terminal: coloured by default, plain with NO_COLOR, fitted to its width.
    let tmux = Tmux::new(sandbox.dir.path());
    tmux.start(
        70,
        30,
        &format!("{} list; echo END; sleep 30", ctl_args(&sandbox)),
    );
    tmux.wait_for("END");
    let coloured = tmux.screen(true);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    let plain = tmux.screen(false);
    let rows: Vec<&str> = plain
        .lines()
        .take_while(|l| !l.starts_with("END"))
        .collect();
    assert_eq!(rows.len(), 6, "one line per row, none wrapped:\n{plain}");
    assert!(rows[0].starts_with("ID"), "{plain}");
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.starts_with(|c: char| c.is_ascii_digit())),
        "{plain}"
    );
    drop(tmux);
    let tmux = Tmux::new(sandbox.dir.path());
    tmux.start(
        70,
        30,
        &format!(
            "{c} list; {c} stats; {c} show 2; echo END; sleep 30",
            c = ctl_args(&sandbox).replace("-u COLUMNS", "-u COLUMNS NO_COLOR=1")
        ),
    );
    tmux.wait_for("END");
    let screen = tmux.screen(true);
    assert!(
        !screen.contains("\x1b["),
        "NO_COLOR on a terminal: {screen:?}"
    );
    assert!(screen.contains("dead"), "{screen}");
}

#[test]
fn completions_for_each_shell_and_bash_accepts_its_script() {
    let sandbox = Sandbox::new("", "");
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.jobctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["jobctl", "enqueue", "sync-state", "--json", "top"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
        let path = sandbox.path(&format!("jobctl.{shell}"));
        std::fs::write(&path, &script).unwrap();
        let check = match shell {
            "bash" => Some(Command::new("bash").arg("-n").arg(&path).output().unwrap()),
            // zsh and fish check syntax the same way, where they are installed.
            other => Command::new(other).arg("-n").arg(&path).output().ok(),
        };
        if let Some(check) = check {
            assert!(check.status.success(), "{shell} -n: {}", stderr(&check));
        }
    }
    // bash really completes with it: the subcommands after "jobctl ".
    let script = sandbox.path("jobctl.bash");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(jobctl st); COMP_CWORD=1; COMP_LINE='jobctl st'; COMP_POINT=9; \
             _jobctl jobctl st jobctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            quote(&script)
        ))
        .output()
        .unwrap();
    let words = stdout(&out);
    assert!(
        words.lines().any(|w| w == "stats"),
        "{words}{}",
        stderr(&out)
    );
    let refused = sandbox.jobctl(&["completions", "tcsh"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn the_manpage_names_every_subcommand_and_parses() {
    let sandbox = Sandbox::new("", "");
    let out = sandbox.jobctl(&["manpage"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains("\n.TH jobctl 1"),
        "{page}"
    );
    assert!(page.contains(".TH jobctl 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section}");
    }
    let help = stdout(&sandbox.jobctl(&["help"]));
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .collect();
    assert!(subcommands.len() >= 15, "{help}");
    for name in &subcommands {
        assert!(
            page.contains(&format!("jobctl\\-{}", name.replace('-', "\\-"))),
            "{name}"
        );
    }

    let dir = sandbox.path("man1");
    std::fs::create_dir(&dir).unwrap();
    let out = sandbox.jobctl(&["manpage", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in &subcommands {
        let file = dir.join(format!("jobctl-{name}.1"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert!(text.contains(".TH jobctl-"), "{file:?}");
        assert!(text.contains("Example:"), "{file:?} has its example");
    }
    // man renders them, where it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        for file in [dir.join("jobctl.1"), dir.join("jobctl-top.1")] {
            let out = Command::new("man")
                .args(["-P", "cat", "-l"])
                .arg(&file)
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(out.status.success(), "man -l {file:?}: {}", stderr(&out));
            assert!(stdout(&out).contains("jobctl"), "{}", stdout(&out));
        }
    }
    // Each subcommand's help ends with an example.
    let help = stdout(&sandbox.jobctl(&["purge", "--help"]));
    let last = help.trim_end().lines().last().unwrap();
    assert!(last.trim_start().starts_with("jobctl purge"), "{help}");
}

fn json_error(out: &Output) -> (String, String) {
    let text = stderr(out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (
        value["error"]["code"].as_str().unwrap().to_string(),
        value["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn errors_are_json_on_stderr_under_json_with_the_same_exit_codes() {
    let sandbox = Sandbox::new("", "");
    // Database unavailable: it does not exist yet.
    let out = sandbox.jobctl(&["--json", "list"]);
    assert_eq!(out.status.code(), Some(4));
    let (code, message) = json_error(&out);
    assert_eq!(code, "database_unavailable");
    assert!(message.contains("does not exist"), "{message}");
    assert!(stdout(&out).is_empty());

    sandbox.migrate();
    let out = sandbox.jobctl(&["show", "99", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        json_error(&out),
        ("not_found".into(), "job 99 not found".into())
    );

    // Usage errors from the parser and from the command.
    let out = sandbox.jobctl(&["--json", "list", "--limit", "many"]);
    assert_eq!(out.status.code(), Some(2));
    let (code, message) = json_error(&out);
    assert_eq!(code, "usage");
    assert!(
        message.contains("'many'") && message.contains("--limit"),
        "{message}"
    );
    let out = sandbox.jobctl(&["--json", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_error(&out).0, "usage");
    let out = sandbox.jobctl(&["--json", "list", "--state", "done"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(json_error(&out).1.contains("invalid value 'done'"));

    // Without --json, errors stay one plain line.
    let out = sandbox.jobctl(&["show", "99"]);
    assert_eq!(stderr(&out).trim(), "jobctl: job 99 not found");

    // check --json prints JSON.
    let out = sandbox.jobctl(&["--json", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["database"]["ok"], true);
    assert_eq!(
        value["database"]["schema_version"],
        jobd::store::schema::latest_version()
    );
    assert_eq!(value["config"]["ok"], true);
    // And a broken database is a JSON error with exit code 4.
    std::fs::write(sandbox.db(), vec![b'x'; 8192]).unwrap();
    let _ = std::fs::remove_file(sandbox.path("jobs.db-wal"));
    let _ = std::fs::remove_file(sandbox.path("jobs.db-shm"));
    let out = sandbox.jobctl(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(json_error(&out).0, "database_unavailable");
}
