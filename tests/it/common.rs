//! Shared test helpers: temp dirs with a config, spawning the real binaries, waiting.

#![allow(dead_code)]

use jobd::store::{OpenOptions, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const JOBD: &str = env!("CARGO_BIN_EXE_jobd");
pub const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

/// A temp dir holding a config file, a database and a data dir. Daemons it spawned are
/// killed when it is dropped, so a failing test leaves no process behind.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    spawned: std::cell::RefCell<Vec<u32>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.spawned.borrow().iter() {
            // SAFETY: kill(2) on a pid this sandbox spawned; a gone process is ESRCH.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

impl Sandbox {
    /// `extra` is TOML appended after the `[daemon]` paths (it may add `[daemon]` keys by
    /// starting with them, since they come right after the paths).
    pub fn new(daemon_keys: &str, extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox {
            dir,
            spawned: Default::default(),
        };
        let text = format!(
            "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/run/jobd.sock\"\n{daemon_keys}\n{extra}\n",
            db = sandbox.db().display(),
            data = sandbox.path("var").display(),
        );
        std::fs::write(sandbox.config(), text).expect("write config");
        sandbox
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("jobs.db")
    }

    pub fn config(&self) -> PathBuf {
        self.path("jobd.toml")
    }

    /// Adds TOML to the end of the config file.
    pub fn append_config(&self, text: &str) {
        let config = std::fs::read_to_string(self.config()).expect("read config");
        std::fs::write(self.config(), format!("{config}{text}")).expect("write config");
    }

    pub fn open(&self) -> Box<dyn Store> {
        jobd::store::open(self.db(), &OpenOptions::default()).expect("open db")
    }

    pub fn migrate(&self) -> Box<dyn Store> {
        jobd::store::open(
            self.db(),
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .expect("create db")
    }

    /// Starts the real daemon; its stderr goes to `jobd.log` in the sandbox.
    pub fn spawn_jobd(&self, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("jobd.log"))
            .expect("log file");
        let child = Command::new(JOBD)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn jobd");
        self.spawned.borrow_mut().push(child.id());
        child
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("jobd.log")).unwrap_or_default()
    }

    pub fn jobctl(&self, args: &[&str]) -> Output {
        Command::new(JOBCTL)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .expect("run jobctl")
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls until `condition` holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we spawned.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", child.id());
}

/// Waits for a child to exit, killing it and failing after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("jobd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts jobs per state by reading the database directly.
pub fn count_state(db: &Path, state: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("SELECT count(*) FROM jobs WHERE state = ?1", [state], |r| {
        r.get(0)
    })
    .expect("count")
}

/// Every file under a folder, at any depth.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Waits until no job is in any of `live` states, failing the test after `limit`.
pub fn wait_while_live(db: &dyn Store, live: &[jobd::job::JobState], limit: Duration) {
    wait_until(limit, "the jobs to finish", || {
        let stats = db
            .stats(jobd::clock::Clock::now_ms(&jobd::clock::SystemClock))
            .unwrap();
        // A claimed job has not started yet, but it is as live as a running one.
        let claimed = if live.contains(&jobd::job::JobState::Running) {
            stats.claimed()
        } else {
            0
        };
        live.iter().map(|s| stats.total(*s)).sum::<u64>() + claimed == 0
    });
}
