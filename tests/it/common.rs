//! Shared test helpers: temp dirs with a config, spawning the real binaries, a daemon run
//! inside the test process ([`InProcessDaemon`], [`DaemonRun`]), and waits for events.

#![allow(dead_code)]

use jobd::job::{Job, JobId, JobState, NewJob};
use jobd::store::{Attempt, OpenOptions, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const JOBD: &str = env!("CARGO_BIN_EXE_jobd");
pub const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

/// A temp dir holding a config file, a database and a data dir. Daemons it spawned are
/// killed when it is dropped, so a failing test leaves no process behind.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    spawned: std::cell::RefCell<Vec<u32>>,
    /// The configured database when it is not `jobs.db` in the dir (a PostgreSQL URL).
    database: Option<PathBuf>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.spawned.borrow().iter() {
            // SAFETY: kill(2) on a pid this sandbox spawned; a gone process is ESRCH.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        if self.database.is_none() && !std::thread::panicking() {
            assert_rows_keep_the_schemas_rules(&self.path("jobs.db"));
        }
    }
}

/// Fails if a row of the SQLite file at `path` breaks one of the schema's CHECKs, or an
/// order key's unfinished jobs have other than one head. jobd's own connections skip the
/// CHECKs (it checks what it writes before it writes), so every
/// test that leaves a database behind checks this of whatever the binaries wrote there. A
/// file that is missing, that cannot be opened or is not a database (a test made it so)
/// is not this check's matter. Opened for writing: a read-only connection cannot open a
/// WAL file whose `-shm` a clean shutdown removed.
pub fn assert_rows_keep_the_schemas_rules(path: &Path) {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
    else {
        return;
    };
    let Ok(mut check) = conn.prepare("PRAGMA quick_check") else {
        return;
    };
    let Ok(found) = check
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
    else {
        return;
    };
    let broken: Vec<&String> = found.iter().filter(|f| f.contains("CHECK")).collect();
    assert!(
        broken.is_empty(),
        "{} has {} rows that break the schema: {:?}",
        path.display(),
        broken.len(),
        &broken[..broken.len().min(3)]
    );
    // And every order key's line has its one head: jobd keeps `order_blocked` on its own
    // connections too, not only through the schema's triggers.
    let Ok(mut lines) = conn.prepare(
        "SELECT order_key, sum(order_blocked = 0) FROM jobs WHERE order_key IS NOT NULL \
         AND state IN ('queued', 'running', 'retrying', 'waiting') \
         GROUP BY order_key HAVING sum(order_blocked = 0) <> 1 LIMIT 3",
    ) else {
        return;
    };
    let broken: Vec<(String, i64)> = lines
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .and_then(|rows| rows.collect())
        .unwrap_or_default();
    assert!(
        broken.is_empty(),
        "{} has order keys without exactly one head (key, heads): {broken:?}",
        path.display()
    );
}

impl Sandbox {
    /// `extra` is TOML appended after the `[daemon]` paths (it may add `[daemon]` keys by
    /// starting with them, since they come right after the paths).
    pub fn new(daemon_keys: &str, extra: &str) -> Sandbox {
        Sandbox::on_database(None, daemon_keys, extra)
    }

    /// [`Sandbox::new`] with `database` (a PostgreSQL URL) as the configured database;
    /// `open`, `migrate`, jobd and jobctl all use it.
    pub fn on_database(database: Option<&str>, daemon_keys: &str, extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox {
            dir,
            spawned: Default::default(),
            database: database.map(PathBuf::from),
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
        match &self.database {
            Some(database) => database.clone(),
            None => self.path("jobs.db"),
        }
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
        jobd::store::open(&self.db(), &OpenOptions::default()).expect("open db")
    }

    pub fn migrate(&self) -> Box<dyn Store> {
        jobd::store::open(
            &self.db(),
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
        self.spawn_jobd_logging(args, "info")
    }

    /// [`Sandbox::spawn_jobd`] with `RUST_LOG` set to `filter`.
    pub fn spawn_jobd_logging(&self, args: &[&str], filter: &str) -> Child {
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
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn jobd");
        self.spawned.borrow_mut().push(child.id());
        child
    }

    /// Has a daemon the test spawned with its own `Command` killed with the sandbox too.
    pub fn track(&self, child: &Child) {
        self.spawned.borrow_mut().push(child.id());
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

/// How often the waits below look again: soon enough that a test waits little past its
/// event, not so often that probes which run jobctl load a shared 2-core machine.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it gives a value, failing the test after `limit` with a message
/// naming `what` it waited for and what `explain` says (the last thing seen, a log).
/// The one poll of the tests: a wait for an event looks for the event, not for a time.
pub fn wait_for_explained<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() >= limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until it gives a value, failing the test after `limit` naming `what`.
pub fn wait_for<T>(limit: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(limit, what, probe, String::new)
}

/// Polls until `condition` holds, failing the test after `limit` naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(limit, what, || condition().then_some(()))
}

pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we spawned.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", child.id());
}

/// Waits for a child to exit, killing it and failing after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let pid = child.id();
    wait_for_explained(
        limit,
        &format!("process {pid} to exit"),
        || child.try_wait().expect("try_wait"),
        || {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            "killed it".to_string()
        },
    )
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

/// A temp dir with a parsed config, a `data/` dir and the config's text in `jobd.toml`
/// (for `jobctl`), whose [`InProcessDaemon::run`] runs the daemon inside the test process
/// until nothing is live. The kinds' end-to-end tests (http, csv, relay, oneroster) share it.
pub struct InProcessDaemon {
    pub dir: tempfile::TempDir,
    pub config: jobd::config::Config,
}

/// How [`InProcessDaemon::run_with`] runs the daemon; [`DaemonRun::default`] is what the
/// real binary does, on the system clock.
pub struct DaemonRun {
    pub registry: jobd::handlers::Registry,
    pub clock: jobd::clock::SharedClock,
    /// `--once`: exit as soon as nothing is ready, instead of waiting for the jobs.
    pub once: bool,
    /// Write the jobs into the store before the daemon starts, instead of handing them to
    /// the running daemon's client (always so with `once`, which would race a client).
    pub preload: bool,
    pub hooks: Vec<Arc<dyn jobd::daemon::JobHooks>>,
    /// How long the jobs may take to finish.
    pub limit: Duration,
}

impl Default for DaemonRun {
    fn default() -> DaemonRun {
        DaemonRun {
            registry: jobd::handlers::Registry::builtin(),
            clock: Arc::new(jobd::clock::SystemClock),
            once: false,
            preload: false,
            hooks: vec![Arc::new(jobd::handlers::notify::DeadLetters)],
            limit: Duration::from_secs(60),
        }
    }
}

impl DaemonRun {
    /// Starts the daemon inside this process on `config` (signals are the test's own).
    pub fn start(self, config: jobd::config::Config) -> jobd::daemon::Daemon {
        jobd::daemon::Daemon::start(
            config,
            jobd::daemon::DaemonOptions {
                clock: self.clock,
                registry: self.registry,
                config_source: jobd::config::ConfigSource::Defaults,
                once: self.once,
                handle_signals: false,
                hooks: self.hooks,
            },
        )
        .expect("start the in-process daemon")
    }
}

impl InProcessDaemon {
    /// `daemon_keys` follow the `[daemon]` paths (database, data_dir, socket); `rest` is
    /// the TOML after them ([retry], [endpoints.*], [pipelines.*] ...).
    pub fn new(daemon_keys: &str, rest: &str) -> InProcessDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/jobd.sock\"\n{daemon_keys}\n{rest}",
            db = dir.path().join("jobs.db").display(),
            data = dir.path().join("data").display(),
        );
        let config = jobd::config::Config::from_toml(&text, "test config")
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        std::fs::write(dir.path().join("jobd.toml"), &text).expect("write jobd.toml");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        InProcessDaemon { dir, config }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file, for `jobctl --config` and the real binary.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("jobd.toml")
    }

    /// The database, created and migrated if the daemon has not run yet.
    pub fn db(&self) -> Box<dyn Store> {
        jobd::store::open(
            &self.config.daemon.database,
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .expect("open the test database")
    }

    pub fn job(&self, id: JobId) -> Job {
        self.db().get(id).expect("get job")
    }

    pub fn attempts(&self, id: JobId) -> Vec<Attempt> {
        self.db().attempts(id).expect("attempts")
    }

    /// The jobs of one kind, newest first.
    pub fn jobs_of(&self, kind: &str) -> Vec<Job> {
        let filter = jobd::store::JobFilter {
            kind: Some(kind.into()),
            limit: 1000,
            ..Default::default()
        };
        self.db().list(&filter).expect("list jobs")
    }

    /// Enqueues `jobs` and runs the daemon in real time until nothing is live.
    pub fn run(&self, jobs: Vec<NewJob>) -> Vec<JobId> {
        self.run_with(jobs, DaemonRun::default())
    }

    /// Runs the daemon as `how` says: until nothing is queued, running, retrying or
    /// waiting (or, with `once`, until nothing is ready); the jobs' ids.
    pub fn run_with(&self, jobs: Vec<NewJob>, how: DaemonRun) -> Vec<JobId> {
        let preloaded: Option<Vec<JobId>> = (how.preload || how.once).then(|| {
            let now = how.clock.now_ms();
            self.db()
                .write(|tx| tx.enqueue(&jobs, now))
                .expect("preload the jobs")
                .into_iter()
                .map(|e| e.id)
                .collect()
        });
        let (once, limit) = (how.once, how.limit);
        let daemon = how.start(self.config.clone());
        let client = daemon.client();
        let ids = match preloaded {
            Some(ids) => ids,
            None => client
                .enqueue(jobs)
                .expect("enqueue through the daemon")
                .into_iter()
                .map(|e| e.id)
                .collect(),
        };
        if !once {
            wait_while_live(
                &*self.db(),
                &[
                    JobState::Queued,
                    JobState::Running,
                    JobState::Retrying,
                    JobState::Waiting,
                ],
                limit,
            );
            client.shutdown();
        }
        daemon.wait().expect("the in-process daemon stops cleanly");
        ids
    }

    /// `jobctl --config jobd.toml args...` through the real binary; its stdout, which
    /// must be a success.
    pub fn jobctl(&self, args: &[&str]) -> String {
        let output = Command::new(JOBCTL)
            .arg("--config")
            .arg(self.config_file())
            .args(args)
            .output()
            .expect("run jobctl");
        assert!(output.status.success(), "jobctl {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("jobctl writes UTF-8")
    }
}
