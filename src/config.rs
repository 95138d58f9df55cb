//! The daemon's configuration: typed TOML with every default in one place, parsed then
//! validated, with errors that name the key. An empty file is a valid configuration.

use crate::retry::RetryPolicy;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATABASE: &str = "./var/jobs.db";
pub const DEFAULT_DATA_DIR: &str = "./var";
pub const DEFAULT_SOCKET: &str = "./var/run/jobd.sock";
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_PREFETCH: usize = 32;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SOCKET_MAX_LINE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_SOCKET_MAX_BATCH: usize = 10_000;
pub const DEFAULT_SOCKET_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_SOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
pub const DEFAULT_WATCH_PATTERN: &str = "*";
pub const DEFAULT_WATCH_SETTLE: Duration = Duration::from_secs(2);
pub const DEFAULT_WATCH_RESCAN: Duration = Duration::from_secs(30);
pub const DEFAULT_WATCH_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_WATCH_INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_WATCH_KIND: &str = "noop";
/// Where the daemon and jobctl look when neither `--config` nor `JOBD_CONFIG` says.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/jobd/jobd.toml";
pub const CONFIG_ENV: &str = "JOBD_CONFIG";

/// A configuration that could not be read or is not valid. The message names the file
/// and the key.
#[derive(Debug, thiserror::Error)]
#[error("config {origin}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    /// The default retry policy.
    pub retry: RetryConfig,
    /// Per-kind settings: `[kinds.exec] timeout = "5m"`, `[kinds.exec.retry] ...`.
    pub kinds: BTreeMap<String, KindConfig>,
    /// Per-queue settings: `[queues.bulk] concurrency = 2`.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Commands the `exec` kind may run, by name. Never a command from a payload.
    pub commands: BTreeMap<String, CommandConfig>,
    /// The enqueue socket's limits and permissions (its path is `daemon.socket`).
    pub socket: SocketConfig,
    /// Watched folders (`[[watch]]`), any number.
    pub watch: Vec<WatchConfig>,
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
    #[serde(deserialize_with = "duration")]
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

/// What a watched folder takes in: single files, or subfolders that are complete sets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Every settled file matching `pattern` becomes a job.
    #[default]
    File,
    /// Every subfolder becomes one job once its `required` files are there (or `marker`).
    Dir,
}

/// One watched folder (`[[watch]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    #[serde(default = "default_watch_pattern")]
    pub pattern: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub mode: WatchMode,
    /// The job to make.
    #[serde(default = "default_watch_kind")]
    pub kind: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i64,
    /// Static payload fields, merged with `file`/`dir`, `name`, `sha256`, `size`.
    #[serde(default)]
    pub payload: toml::Table,
    /// A file is complete once its size and mtime held still this long.
    #[serde(default = "default_settle", deserialize_with = "duration")]
    pub settle: Duration,
    /// How often the folder is listed again, for what notifications missed.
    #[serde(default = "default_rescan", deserialize_with = "duration")]
    pub rescan: Duration,
    /// The same content under the same name within this window is not enqueued again.
    #[serde(default = "default_dedupe_window", deserialize_with = "duration")]
    pub dedupe_window: Duration,
    /// Folder sets: files that must all be there (case-insensitive).
    #[serde(default)]
    pub required: Vec<String>,
    /// Folder sets: files that may be there (case-insensitive); listed for the handler.
    #[serde(default)]
    pub optional: Vec<String>,
    /// Folder sets: a file whose arrival says the folder is complete, whatever is missing.
    #[serde(default)]
    pub marker: Option<String>,
    /// Folder sets: an incomplete folder becomes a dead job after this long.
    #[serde(default = "default_incomplete_timeout", deserialize_with = "duration")]
    pub incomplete_timeout: Duration,
    /// Create the folder at start if it is missing (otherwise a missing folder is refused).
    #[serde(default = "default_true")]
    pub create: bool,
}

fn default_watch_pattern() -> String {
    DEFAULT_WATCH_PATTERN.into()
}
fn default_watch_kind() -> String {
    DEFAULT_WATCH_KIND.into()
}
fn default_queue() -> String {
    crate::job::DEFAULT_QUEUE.into()
}
fn default_settle() -> Duration {
    DEFAULT_WATCH_SETTLE
}
fn default_rescan() -> Duration {
    DEFAULT_WATCH_RESCAN
}
fn default_dedupe_window() -> Duration {
    DEFAULT_WATCH_DEDUPE_WINDOW
}
fn default_incomplete_timeout() -> Duration {
    DEFAULT_WATCH_INCOMPLETE_TIMEOUT
}
fn default_true() -> bool {
    true
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

impl std::str::FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Synchronous::Off),
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            "extra" => Ok(Synchronous::Extra),
            other => Err(format!(
                "unknown synchronous mode '{other}' (expected off, normal, full or extra)"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The SQLite queue file.
    pub database: PathBuf,
    /// Root of spool/, done/, failed/ and output/.
    pub data_dir: PathBuf,
    /// The enqueue socket.
    pub socket: PathBuf,
    /// Jobs that run at once.
    pub workers: usize,
    /// Claimed jobs held in memory for the next free worker, beyond one per worker.
    /// More lets short jobs flow faster; 0 claims only for idle workers.
    pub prefetch: usize,
    pub synchronous: Synchronous,
    /// How long a claim holds without a heartbeat before the reaper takes it back.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// How long running jobs may finish after SIGTERM before they are put back.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// The longest one attempt may run, unless its kind or command says otherwise.
    #[serde(deserialize_with = "duration")]
    pub job_timeout: Duration,
    /// How often the daemon looks for rows written by other processes (`PRAGMA data_version`).
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Succeeded jobs older than this are purged.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// How often expired leases and retention are checked.
    #[serde(deserialize_with = "duration")]
    pub reap_interval: Duration,
    /// How long a writer waits for the database lock before reporting it busy.
    #[serde(deserialize_with = "duration")]
    pub busy_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            database: PathBuf::from(DEFAULT_DATABASE),
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

/// The default retry policy (`[retry]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    #[serde(deserialize_with = "duration")]
    pub base: Duration,
    pub factor: f64,
    #[serde(deserialize_with = "duration")]
    pub cap: Duration,
    pub max_attempts: u32,
    pub jitter: f64,
    #[serde(deserialize_with = "optional_duration")]
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetryConfig {
            base: policy.base,
            factor: policy.factor,
            cap: policy.cap,
            max_attempts: policy.max_attempts,
            jitter: policy.jitter,
            deadline: policy.deadline,
        }
    }
}

/// A kind's changes to the default policy (`[kinds.NAME.retry]`); what it leaves out is
/// inherited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOverride {
    #[serde(deserialize_with = "optional_duration")]
    pub base: Option<Duration>,
    pub factor: Option<f64>,
    #[serde(deserialize_with = "optional_duration")]
    pub cap: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub jitter: Option<f64>,
    #[serde(deserialize_with = "optional_duration")]
    pub deadline: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KindConfig {
    #[serde(deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    pub retry: RetryOverride,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// At most this many jobs of the queue run at once.
    pub concurrency: usize,
}

/// A program the `exec` kind may run (`[commands.NAME]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

impl Config {
    /// Parses and validates TOML text. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate().map_err(|message| ConfigError {
            origin: origin.to_string(),
            message,
        })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, &origin)
    }

    /// Loads the file `locate` found, or the embedded defaults.
    pub fn load_located(source: &ConfigSource) -> Result<Config, ConfigError> {
        match source {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Defaults => Ok(Config::default()),
        }
    }

    /// Checks what types alone cannot, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.daemon;
        if d.workers == 0 {
            return Err("daemon.workers: must be at least 1".into());
        }
        if d.workers > 1024 {
            return Err(format!("daemon.workers: {} is more than 1024", d.workers));
        }
        for (key, value) in [
            ("daemon.lease", d.lease),
            ("daemon.poll_interval", d.poll_interval),
            ("daemon.reap_interval", d.reap_interval),
            ("daemon.job_timeout", d.job_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key}: must be longer than 0"));
            }
        }
        if d.lease < Duration::from_secs(1) {
            return Err(
                "daemon.lease: must be at least 1s (heartbeats run at a third of it)".into(),
            );
        }
        if d.database.as_os_str().is_empty() {
            return Err("daemon.database: must not be empty".into());
        }
        validate_retry("retry", &self.policy_for(""))?;
        for (kind, settings) in &self.kinds {
            validate_retry(&format!("kinds.{kind}.retry"), &self.policy_for(kind))?;
            if settings.timeout.is_some_and(|t| t.is_zero()) {
                return Err(format!("kinds.{kind}.timeout: must be longer than 0"));
            }
        }
        for (name, queue) in &self.queues {
            if queue.concurrency == 0 {
                return Err(format!("queues.{name}.concurrency: must be at least 1"));
            }
        }
        for (name, command) in &self.commands {
            if command.program.as_os_str().is_empty() {
                return Err(format!("commands.{name}.program: must not be empty"));
            }
            if command.timeout.is_some_and(|t| t.is_zero()) {
                return Err(format!("commands.{name}.timeout: must be longer than 0"));
            }
        }
        self.validate_socket()?;
        for (index, watch) in self.watch.iter().enumerate() {
            watch.validate(&format!("watch[{index}]"))?;
            for (other_index, other) in self.watch.iter().enumerate().take(index) {
                if other.path == watch.path {
                    return Err(format!(
                        "watch[{index}].path: {} is watched already by watch[{other_index}]",
                        watch.path.display()
                    ));
                }
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("log.level: '{}' is not a valid filter: {e}", self.log.level))?;
        Ok(())
    }

    /// The retry policy of a kind: the default with the kind's overrides applied.
    pub fn policy_for(&self, kind: &str) -> RetryPolicy {
        let r = &self.retry;
        let mut policy = RetryPolicy {
            base: r.base,
            factor: r.factor,
            cap: r.cap,
            max_attempts: r.max_attempts,
            jitter: r.jitter,
            deadline: r.deadline,
        };
        if let Some(o) = self.kinds.get(kind).map(|k| &k.retry) {
            policy.base = o.base.unwrap_or(policy.base);
            policy.factor = o.factor.unwrap_or(policy.factor);
            policy.cap = o.cap.unwrap_or(policy.cap);
            policy.max_attempts = o.max_attempts.unwrap_or(policy.max_attempts);
            policy.jitter = o.jitter.unwrap_or(policy.jitter);
            policy.deadline = o.deadline.or(policy.deadline);
        }
        policy
    }

    /// The longest one attempt of a kind may run.
    pub fn timeout_for(&self, kind: &str) -> Duration {
        self.kinds
            .get(kind)
            .and_then(|k| k.timeout)
            .unwrap_or(self.daemon.job_timeout)
    }

    /// Per-queue concurrency limits.
    pub fn queue_limits(&self) -> BTreeMap<String, usize> {
        self.queues
            .iter()
            .map(|(name, q)| (name.clone(), q.concurrency))
            .collect()
    }
}

fn validate_retry(key: &str, policy: &RetryPolicy) -> Result<(), String> {
    if policy.max_attempts == 0 {
        return Err(format!("{key}.max_attempts: must be at least 1"));
    }
    if !(policy.factor.is_finite() && policy.factor >= 1.0) {
        return Err(format!("{key}.factor: must be a number of at least 1"));
    }
    if !(0.0..=1.0).contains(&policy.jitter) {
        return Err(format!("{key}.jitter: must be between 0 and 1"));
    }
    if policy.base > policy.cap {
        return Err(format!(
            "{key}.base: {} is longer than the cap of {}",
            humantime::format_duration(policy.base),
            humantime::format_duration(policy.cap)
        ));
    }
    Ok(())
}

impl Config {
    fn validate_socket(&self) -> Result<(), String> {
        let s = &self.socket;
        if self.daemon.socket.as_os_str().is_empty() {
            return Err("daemon.socket: must not be empty".into());
        }
        // sun_path holds 108 bytes with its NUL.
        if self.daemon.socket.as_os_str().len() > 107 {
            return Err(format!(
                "daemon.socket: {} is longer than the 107 bytes a Unix socket path may have",
                self.daemon.socket.display()
            ));
        }
        if s.max_line_bytes < 1024 {
            return Err("socket.max_line_bytes: must be at least 1024".into());
        }
        if s.max_batch == 0 {
            return Err("socket.max_batch: must be at least 1".into());
        }
        if s.max_connections == 0 {
            return Err("socket.max_connections: must be at least 1".into());
        }
        if s.idle_timeout.is_zero() {
            return Err("socket.idle_timeout: must be longer than 0".into());
        }
        if s.mode > 0o777 {
            return Err(format!("socket.mode: {:o} is not a file mode", s.mode));
        }
        if s.mode & 0o007 != 0 {
            return Err(format!(
                "socket.mode: {:04o} lets every user on the machine enqueue; use 0660 or tighter",
                s.mode
            ));
        }
        if s.group.as_deref().is_some_and(str::is_empty) {
            return Err("socket.group: must not be empty (leave it out instead)".into());
        }
        Ok(())
    }
}

impl WatchConfig {
    /// Checks one `[[watch]]`; `key` is `watch[N]`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err(format!("{key}.path: must not be empty"));
        }
        globset::Glob::new(&self.pattern)
            .map_err(|e| format!("{key}.pattern: '{}' is not a glob: {e}", self.pattern))?;
        if self.kind.is_empty() {
            return Err(format!("{key}.kind: must not be empty"));
        }
        if self.queue.is_empty() {
            return Err(format!("{key}.queue: must not be empty"));
        }
        for (name, value) in [
            ("rescan", self.rescan),
            ("incomplete_timeout", self.incomplete_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key}.{name}: must be longer than 0"));
            }
        }
        for reserved in ["file", "dir", "name", "sha256", "size", "files"] {
            if self.payload.contains_key(reserved) {
                return Err(format!(
                    "{key}.payload.{reserved}: is set by the watcher for each file; choose another name"
                ));
            }
        }
        match self.mode {
            WatchMode::File => {
                if !self.required.is_empty() || !self.optional.is_empty() || self.marker.is_some() {
                    return Err(format!(
                        "{key}.required: required, optional and marker apply to mode = \"dir\" only"
                    ));
                }
            }
            WatchMode::Dir => {
                if self.required.is_empty() && self.marker.is_none() {
                    return Err(format!(
                        "{key}.required: a folder set needs required files or a marker"
                    ));
                }
                for (list, names) in [("required", &self.required), ("optional", &self.optional)] {
                    for name in names {
                        if name.is_empty() || name.contains('/') {
                            return Err(format!("{key}.{list}: '{name}' is not a file name"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file anywhere: the embedded defaults (a local `./var`).
    Defaults,
}

impl ConfigSource {
    /// `--config` first, then `$JOBD_CONFIG`, then `/etc/jobd/jobd.toml` if it exists,
    /// else the embedded defaults.
    pub fn locate(explicit: Option<&Path>) -> ConfigSource {
        if let Some(path) = explicit {
            return ConfigSource::File(path.to_path_buf());
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return ConfigSource::File(PathBuf::from(path));
        }
        let system = Path::new(SYSTEM_CONFIG_PATH);
        if system.exists() {
            return ConfigSource::File(system.to_path_buf());
        }
        ConfigSource::Defaults
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Defaults => "built-in defaults".into(),
        }
    }
}

/// Parses a duration such as `30s`, `1h 30m`, `7d` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("'{text}' is not a duration ({e}); write it like 30s, 5m, 1h30m or 7d")
    })
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = Config::from_toml("", "test").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.daemon.workers, DEFAULT_WORKERS);
        assert_eq!(config.daemon.synchronous, Synchronous::Full);
        assert_eq!(config.policy_for("anything"), RetryPolicy::default());
    }

    #[test]
    fn the_annotated_example_is_valid() {
        let text = include_str!("../config/jobd.toml");
        Config::from_toml(text, "config/jobd.toml").unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_toml("[daemon]\nwokers = 3\n", "t.toml").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("config t.toml:"), "{message}");
        assert!(message.contains("wokers"), "{message}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "[daemon]\nworkers = 0\n",
                "daemon.workers: must be at least 1",
            ),
            ("[daemon]\nlease = \"soon\"\n", "'soon' is not a duration"),
            (
                "[retry]\njitter = 2.0\n",
                "retry.jitter: must be between 0 and 1",
            ),
            (
                "[kinds.exec.retry]\nmax_attempts = 0\n",
                "kinds.exec.retry.max_attempts: must be at least 1",
            ),
            (
                "[queues.bulk]\nconcurrency = 0\n",
                "queues.bulk.concurrency",
            ),
            ("[daemon]\nsynchronous = \"sometimes\"\n", "sometimes"),
        ];
        for (text, expected) in cases {
            let message = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message}");
        }
    }

    #[test]
    fn watch_and_socket_settings_have_defaults() {
        let config = Config::from_toml(
            "[[watch]]\npath = \"/srv/in\"\nkind = \"exec\"\n[watch.payload]\ncommand = \"report\"\n",
            "t",
        )
        .unwrap();
        let watch = &config.watch[0];
        assert_eq!(watch.pattern, "*");
        assert_eq!(watch.settle, DEFAULT_WATCH_SETTLE);
        assert_eq!(watch.rescan, DEFAULT_WATCH_RESCAN);
        assert_eq!(watch.dedupe_window, DEFAULT_WATCH_DEDUPE_WINDOW);
        assert_eq!(watch.mode, WatchMode::File);
        assert_eq!(watch.payload["command"].as_str(), Some("report"));
        assert_eq!(config.socket.max_line_bytes, DEFAULT_SOCKET_MAX_LINE_BYTES);
        assert_eq!(config.socket.max_batch, DEFAULT_SOCKET_MAX_BATCH);
        assert_eq!(config.socket.mode, 0o660);
        let config = Config::from_toml("[socket]\nmode = \"0640\"\n", "t").unwrap();
        assert_eq!(config.socket.mode, 0o640);
    }

    #[test]
    fn bad_watch_and_socket_values_name_their_key() {
        let cases = [
            (
                "[[watch]]\npath = \"\"\n",
                "watch[0].path: must not be empty",
            ),
            (
                "[[watch]]\npath = \"/a\"\npattern = \"[\"\n",
                "watch[0].pattern",
            ),
            (
                "[[watch]]\npath = \"/a\"\nsettle = \"x\"\n",
                "'x' is not a duration",
            ),
            (
                "[[watch]]\npath = \"/a\"\nmode = \"dir\"\n",
                "watch[0].required: a folder set",
            ),
            (
                "[[watch]]\npath = \"/a\"\nrequired = [\"a.csv\"]\n",
                "watch[0].required: required, optional",
            ),
            (
                "[[watch]]\npath = \"/a\"\n[[watch]]\npath = \"/a\"\n",
                "watch[1].path",
            ),
            (
                "[[watch]]\npath = \"/a\"\npayload = { file = \"x\" }\n",
                "watch[0].payload.file",
            ),
            ("[[watch]]\npath = \"/a\"\nfolder = \"x\"\n", "folder"),
            (
                "[socket]\nmax_batch = 0\n",
                "socket.max_batch: must be at least 1",
            ),
            ("[socket]\nmode = \"0666\"\n", "socket.mode"),
            ("[socket]\nmode = \"rw\"\n", "not an octal mode"),
            ("[socket]\nmax_connections = 0\n", "socket.max_connections"),
            ("[socket]\nidle_timeout = \"0s\"\n", "socket.idle_timeout"),
        ];
        for (text, expected) in cases {
            let message = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message}");
        }
    }

    #[test]
    fn kind_overrides_apply_on_top_of_the_default_policy() {
        let config = Config::from_toml(
            "[retry]\nmax_attempts = 5\ndeadline = \"7d\"\n[kinds.http.retry]\nbase = \"2s\"\n[kinds.http]\ntimeout = \"30s\"\n",
            "t",
        )
        .unwrap();
        let http = config.policy_for("http");
        assert_eq!(http.base, Duration::from_secs(2));
        assert_eq!(http.max_attempts, 5);
        assert_eq!(http.deadline, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(config.timeout_for("http"), Duration::from_secs(30));
        assert_eq!(config.timeout_for("noop"), DEFAULT_JOB_TIMEOUT);
    }
}
