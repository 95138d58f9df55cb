//! `[daemon]`, `[log]`, `[socket]` and `[metrics]`: how the daemon itself runs (the
//! database, workers, leases, the enqueue socket's limits, the metrics textfile), their
//! defaults and their checks.

use super::durations;
use super::problems::{Problem, Problems};
use super::secrets::resolve_secret;
use crate::dburl::{looks_like_postgres_url, DatabaseTarget, PostgresUrl};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATABASE: &str = "./var/jobs.db";
/// PostgreSQL: the leader's lease (River's default).
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(15);
pub const DEFAULT_DATA_DIR: &str = "./var";
pub const DEFAULT_SOCKET: &str = "./var/run/jobd.sock";
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_PREFETCH: usize = 512;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM to a command's process group (timeout, cancel, shutdown), how long
/// before SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Past this WAL size the daemon runs TRUNCATE checkpoints until the WAL is cut back.
pub const DEFAULT_WAL_LIMIT: u64 = 64 * 1024 * 1024;
/// The smallest `daemon.wal_limit`: SQLite's own auto-checkpoint works at about 4 MiB.
pub const MIN_WAL_LIMIT: u64 = 64 * 1024;
/// How often the daemon rewrites `metrics.textfile`.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);
/// Large enough for a full default batch: 10,000 jobs of about 400 bytes each (a job
/// with a 100-byte payload is about 160 bytes as a batch element).
pub const DEFAULT_SOCKET_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_SOCKET_MAX_BATCH: usize = 10_000;
pub const DEFAULT_SOCKET_MAX_CONNECTIONS: usize = 256;
/// Short, so connections a client opened and forgot cannot hold every slot for long; a
/// client that pauses longer reconnects.
pub const DEFAULT_SOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// How durable a commit is: `full` survives power loss, `normal` survives a crash of the
/// process only.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Off,
    Normal,
    #[default]
    Full,
    Extra,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// A synchronous mode that is none of off, normal, full and extra.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown synchronous mode '{0}' (expected off, normal, full or extra)")]
pub struct UnknownSynchronous(pub String);

impl std::str::FromStr for Synchronous {
    type Err = UnknownSynchronous;
    fn from_str(s: &str) -> Result<Self, UnknownSynchronous> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Synchronous::Off),
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            "extra" => Ok(Synchronous::Extra),
            other => Err(UnknownSynchronous(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The queue database: a path (a SQLite file, the embedded default) or a
    /// `postgresql://` URL (several daemons against one PostgreSQL server). See
    /// [`DaemonConfig::database_target`].
    pub database: PathBuf,
    /// The PostgreSQL URL from an environment variable, for a URL that carries a password.
    pub database_url_env: Option<String>,
    /// The PostgreSQL URL from a file (`$CREDENTIALS_DIRECTORY` expands).
    pub database_url_file: Option<PathBuf>,
    /// This daemon's name among the daemons sharing a PostgreSQL database, recorded on
    /// the jobs it runs. Default: the host name plus a random suffix, new at each start.
    pub node: Option<String>,
    /// PostgreSQL only: every node sees the same `data_dir` (a shared mount), so jobs
    /// whose files lie under it may run on any node. Without it such jobs run only on the
    /// node that took their files in.
    pub shared_data_dir: bool,
    /// PostgreSQL only: how long the leader's lease lasts without renewal; after a leader
    /// dies, another takes over within about this long. Renewed every third of it.
    #[serde(deserialize_with = "durations::duration")]
    pub leader_lease: Duration,
    /// Root of spool/, done/, failed/ and output/.
    pub data_dir: PathBuf,
    /// The enqueue socket.
    pub socket: PathBuf,
    /// Jobs that run at once.
    pub workers: usize,
    /// The most claimed jobs held in memory for the next free worker, beyond one per
    /// worker. The daemon holds about 100 ms of work, up to this many: short jobs flow in
    /// large group commits, slow ones are not hoarded. 0 claims only for idle workers.
    pub prefetch: usize,
    pub synchronous: Synchronous,
    /// How long a claim holds without a heartbeat before the reaper takes it back.
    #[serde(deserialize_with = "durations::duration")]
    pub lease: Duration,
    /// How long running jobs may finish after SIGTERM before they are put back.
    #[serde(deserialize_with = "durations::duration")]
    pub shutdown_grace: Duration,
    /// The longest one attempt may run, unless its kind or command says otherwise.
    #[serde(deserialize_with = "durations::duration")]
    pub job_timeout: Duration,
    /// How often the daemon looks for rows written by other processes (`PRAGMA data_version`).
    #[serde(deserialize_with = "durations::duration")]
    pub poll_interval: Duration,
    /// Succeeded jobs older than this are purged.
    #[serde(deserialize_with = "durations::duration")]
    pub retention: Duration,
    /// How often expired leases and retention are checked.
    #[serde(deserialize_with = "durations::duration")]
    pub reap_interval: Duration,
    /// How long a writer waits for the database lock before reporting it busy.
    #[serde(deserialize_with = "durations::duration")]
    pub busy_timeout: Duration,
    /// After SIGTERM to a command's process group, how long before SIGKILL (a command's
    /// own `kill_grace` wins).
    #[serde(deserialize_with = "durations::duration")]
    pub kill_grace: Duration,
    /// The WAL size (bytes, or "64MiB") past which the daemon forces the WAL back to
    /// empty with TRUNCATE checkpoints, even while long reads hold it.
    #[serde(deserialize_with = "durations::size")]
    pub wal_limit: u64,
    /// Folders, besides `data_dir` and the `[[watch]]` paths, that files named in payloads
    /// may be in (`src/paths.rs`).
    pub allowed_paths: Vec<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            database: PathBuf::from(DEFAULT_DATABASE),
            database_url_env: None,
            database_url_file: None,
            node: None,
            shared_data_dir: false,
            leader_lease: DEFAULT_LEADER_LEASE,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            socket: PathBuf::from(DEFAULT_SOCKET),
            workers: DEFAULT_WORKERS,
            prefetch: DEFAULT_PREFETCH,
            synchronous: Synchronous::Full,
            lease: DEFAULT_LEASE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retention: DEFAULT_RETENTION,
            reap_interval: DEFAULT_REAP_INTERVAL,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            wal_limit: DEFAULT_WAL_LIMIT,
            allowed_paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `jobd=debug,warn`. `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The enqueue socket (`[socket]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Listen at all. Off: no socket is bound and a passed one is ignored.
    pub enabled: bool,
    /// A longer request line is refused (and skipped to its newline).
    pub max_line_bytes: usize,
    /// The most jobs one `{"op":"enqueue","jobs":[...]}` may carry.
    pub max_batch: usize,
    /// Connections served at once; more are told so and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(deserialize_with = "durations::duration")]
    pub idle_timeout: Duration,
    /// The socket file's mode, as an octal string ("0660").
    #[serde(deserialize_with = "octal_mode")]
    pub mode: u32,
    /// The group to give the socket file (a name or a number); none keeps ours.
    pub group: Option<String>,
    /// If not empty, only peers with these uids may talk (SO_PEERCRED); root and our own
    /// uid always may.
    pub allowed_uids: Vec<u32>,
    /// If not empty, only peers with these primary gids may talk (checked with the uids:
    /// either list admits a peer).
    pub allowed_gids: Vec<u32>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            max_line_bytes: DEFAULT_SOCKET_MAX_LINE_BYTES,
            max_batch: DEFAULT_SOCKET_MAX_BATCH,
            max_connections: DEFAULT_SOCKET_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_SOCKET_IDLE_TIMEOUT,
            mode: DEFAULT_SOCKET_MODE,
            group: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }
}

impl SocketConfig {
    /// Checks `[socket]` and the socket's path (`daemon.socket`).
    pub fn validate(&self, path: &std::path::Path, problems: &mut Problems) {
        if path.as_os_str().is_empty() {
            problems.push("daemon.socket", "must not be empty");
        }
        // sun_path holds 108 bytes with its NUL.
        if path.as_os_str().len() > 107 {
            problems.push(
                "daemon.socket",
                format!(
                    "{} is longer than the 107 bytes a Unix socket path may have",
                    path.display()
                ),
            );
        }
        if self.max_line_bytes < 1024 {
            problems.push("socket.max_line_bytes", "must be at least 1024");
        }
        if self.max_batch == 0 {
            problems.push("socket.max_batch", "must be at least 1");
        }
        if self.max_connections == 0 {
            problems.push("socket.max_connections", "must be at least 1");
        }
        if self.mode > 0o777 {
            problems.push("socket.mode", format!("{:o} is not a file mode", self.mode));
        } else if self.mode & 0o007 != 0 {
            problems.push(
                "socket.mode",
                format!(
                    "{:04o} lets every user on the machine enqueue; use 0660 or tighter",
                    self.mode
                ),
            );
        }
        if self.group.as_deref().is_some_and(str::is_empty) {
            problems.push("socket.group", "must not be empty (leave it out instead)");
        }
    }
}

/// An octal mode written as a string ("0660") or a TOML integer (0o660).
fn octal_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(u32),
    }
    match Mode::deserialize(deserializer)? {
        Mode::Number(n) => Ok(n),
        Mode::Text(t) => u32::from_str_radix(t.trim().trim_start_matches("0o"), 8).map_err(|_| {
            serde::de::Error::custom(format!(
                "'{t}' is not an octal mode; write it like \"0660\""
            ))
        }),
    }
}

impl DaemonConfig {
    /// Checks what types alone cannot in `[daemon]` (its durations are checked with the
    /// others, against their bounds).
    pub fn validate(&self, problems: &mut Problems) {
        if self.synchronous == Synchronous::Off {
            problems.push(
                "daemon.synchronous",
                "off is refused: a crash of the machine could lose or corrupt acknowledged jobs (allowed: normal, full, extra)",
            );
        }
        if self.workers == 0 {
            problems.push("daemon.workers", "must be at least 1");
        }
        if self.workers > 1024 {
            problems.push(
                "daemon.workers",
                format!("{} is more than 1024", self.workers),
            );
        }
        if self.wal_limit < MIN_WAL_LIMIT {
            problems.push(
                "daemon.wal_limit",
                format!(
                    "{} bytes is less than the smallest allowed, {MIN_WAL_LIMIT} (64KiB)",
                    self.wal_limit
                ),
            );
        }
        if self.database.as_os_str().is_empty() {
            problems.push("daemon.database", "must not be empty");
        }
        if let Err(e) = self.check_database_form() {
            problems.add(Problem::from_keyed_text(&e));
        }
        if let Some(node) = &self.node {
            problems.check_name("daemon.node", node);
        }
        if self.leader_lease < Duration::from_secs(1) {
            problems.push("daemon.leader_lease", "must be at least 1s");
        }
        if self.allowed_paths.iter().any(|p| p.as_os_str().is_empty()) {
            problems.push("daemon.allowed_paths", "an entry is empty (give folders)");
        }
    }
}

impl DaemonConfig {
    /// The queue database: the SQLite path, or the PostgreSQL URL from `database`,
    /// `database_url_env` or `database_url_file` (read now; errors name the key and show
    /// the URL with its password masked).
    pub fn database_target(&self) -> Result<DatabaseTarget, String> {
        self.check_database_form()?;
        if self.database_url_env.is_some() || self.database_url_file.is_some() {
            let url = resolve_secret(
                "daemon.database_url",
                &self.database_url_env,
                &self.database_url_file,
            )
            .map_err(|e| e.to_string())?;
            let key = if self.database_url_env.is_some() {
                "daemon.database_url_env"
            } else {
                "daemon.database_url_file"
            };
            return Ok(DatabaseTarget::Postgres(PostgresUrl::parse(key, &url)?));
        }
        match crate::dburl::postgres_url_of(&self.database) {
            Some(url) => Ok(DatabaseTarget::Postgres(url?)),
            None => Ok(DatabaseTarget::Sqlite(self.database.clone())),
        }
    }

    /// Resolves a PostgreSQL URL (reading `database_url_env` / `database_url_file`) and
    /// keeps only its masked text in `database`, so nothing that names the database shows
    /// the password; the store finds the URL by that name ([`crate::dburl::register`]).
    pub fn resolve_database(&mut self) -> Result<(), String> {
        if let DatabaseTarget::Postgres(url) = self.database_target()? {
            self.database = crate::dburl::register(&url);
            self.database_url_env = None;
            self.database_url_file = None;
        }
        Ok(())
    }

    /// Whether the queue is on PostgreSQL (without reading a secret).
    pub fn uses_postgres(&self) -> bool {
        self.database_url_env.is_some()
            || self.database_url_file.is_some()
            || looks_like_postgres_url(&self.database.to_string_lossy())
    }

    /// What can be checked without reading secrets: one source of the URL, a URL that
    /// parses, and PostgreSQL-only settings only with PostgreSQL.
    fn check_database_form(&self) -> Result<(), String> {
        let from_secret = self.database_url_env.is_some() || self.database_url_file.is_some();
        if from_secret && self.database != Path::new(DEFAULT_DATABASE) {
            return Err(
                "daemon.database and daemon.database_url_env/database_url_file: give only one"
                    .into(),
            );
        }
        let text = self.database.to_string_lossy();
        if !from_secret && looks_like_postgres_url(&text) {
            PostgresUrl::parse("daemon.database", &text)?;
        }
        if !self.uses_postgres() && self.shared_data_dir {
            return Err(
                "daemon.shared_data_dir: only for a PostgreSQL database (one SQLite daemon sees its own data_dir)"
                    .into(),
            );
        }
        Ok(())
    }

    /// This daemon's node name: `daemon.node`, or the host name and a random suffix.
    pub fn node_name(&self) -> String {
        if let Some(node) = &self.node {
            return node.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "jobd".into());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect();
        format!("{host}-{:08x}", fastrand::u32(..))
    }
}

/// Metrics for node_exporter's textfile collector (`[metrics]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where the daemon writes Prometheus text, atomically, every `interval`; none by
    /// default. The file is 0640: node_exporter's user must be in the jobd group.
    pub textfile: Option<PathBuf>,
    #[serde(deserialize_with = "durations::duration")]
    pub interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            textfile: None,
            interval: DEFAULT_METRICS_INTERVAL,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self, problems: &mut Problems) {
        if let Some(path) = &self.textfile {
            if path.file_name().is_none() {
                problems.push(
                    "metrics.textfile",
                    format!("'{}' does not name a file", path.display()),
                );
            }
        }
    }
}

/// `log.level` as the daemon will read it: comma-separated directives, each a level
/// (`info`) or `target=level` (`jobd=debug`). A bare word that is not a level would be
/// read as a target and silence every other log line.
pub(super) fn check_log_level(level: &str) -> Result<(), Problem> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let bad = |why: String| {
        Err(Problem::new(
            "log.level",
            format!("'{level}' {why} (allowed: trace, debug, info, warn, error, off, or target=level such as jobd=debug)"),
        ))
    };
    if level.trim().is_empty() {
        return bad("is empty".into());
    }
    for directive in level.split(',').map(str::trim) {
        let level_part = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            Some(_) => return bad(format!("has '{directive}' without a target")),
            None => directive,
        };
        if !is_level(level_part) {
            return bad(format!("has '{directive}', which is not a level"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .or_else(|e| bad(format!("is not a valid filter: {e}")))
}

/// A group's id by name (getgrnam_r: safe while other threads run, as on reload).
pub fn lookup_group(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed `group` is a valid out-parameter; getgrnam_r writes only into it
    // and `buffer`, whose length we pass.
    unsafe {
        let mut entry: libc::group = std::mem::zeroed();
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        );
        (rc == 0 && !found.is_null()).then_some(entry.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_levels_or_target_equals_level() {
        for good in [
            "info",
            "debug",
            "jobd=debug,warn",
            "WARN",
            "jobd::daemon=trace",
        ] {
            assert!(check_log_level(good).is_ok(), "{good}");
        }
        for bad in ["loud", "", "jobd=", "=info", "info,loud"] {
            assert!(check_log_level(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_problem_of_the_socket_is_reported() {
        let socket = SocketConfig {
            max_line_bytes: 10,
            max_batch: 0,
            mode: 0o666,
            ..SocketConfig::default()
        };
        let mut problems = Problems::new();
        socket.validate(std::path::Path::new(""), &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "daemon.socket",
                "socket.max_line_bytes",
                "socket.max_batch",
                "socket.mode"
            ]
        );
    }
}
