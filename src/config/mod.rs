//! The daemon's configuration: one TOML file, parsed into typed sections with every
//! default beside its section, then validated, reporting every problem with its key. An
//! empty file is a valid configuration.
//!
//! This module composes the sections and owns what belongs to no single kind: where
//! the file is found, the errors, `[retry]`, `[kinds.NAME]` and `[queues.NAME]`. The
//! daemon's own sections are in [`daemon`], watched folders in [`watch`], pipelines in
//! [`pipelines`] and [`schedule`]; each job kind owns its section beside its handler
//! (`handlers::http::config` for `[endpoints]`, `handlers::exec::config` for
//! `[commands]`, `handlers::notify::config`, `handlers::relay::config`,
//! `handlers::pull::config`, `handlers::csv_import::config`), as does the web page
//! (`web::config`). Those files depend only on the leaves here ([`durations`],
//! [`problems`], [`secrets`], [`schedule`]), never on [`Config`], so the dependency
//! runs one way.

pub mod daemon;
pub mod durations;
pub mod pipelines;
pub mod problems;
pub mod schedule;
pub mod secrets;
pub mod watch;

pub use daemon::*;
pub use durations::{parse_duration, parse_size};
pub use pipelines::PipelineConfig;
pub use problems::{Problem, Problems};
pub use schedule::{PipelineSchedule, MIN_PIPELINE_EVERY};
pub use watch::*;

use crate::handlers::exec::config::CommandConfig;
use crate::handlers::http::config::EndpointConfig;
use crate::handlers::notify::config::NotifyConfig;
use crate::retry::RetryPolicy;
use durations::{check_bounds, ms, secs, DAY, HOUR, MINUTE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon and jobctl look when neither `--config` nor `JOBD_CONFIG` says.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/jobd/jobd.toml";
pub const CONFIG_ENV: &str = "JOBD_CONFIG";

/// A configuration that could not be read or is not valid. The message names the file
/// and every key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {origin}: cannot read: {source}")]
    Unreadable {
        origin: String,
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (serde stops at the first).
    #[error("config {origin}: {message}")]
    Syntax { origin: String, message: String },
    /// Parsed, but with problems that types alone cannot catch: all of them.
    #[error("config {origin}: {problems}")]
    Invalid { origin: String, problems: Problems },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    /// The default retry policy (`[retry]`).
    pub retry: RetryPolicy,
    /// Per-kind settings: `[kinds.exec] timeout = "5m"`, `[kinds.exec.retry] ...`.
    pub kinds: BTreeMap<String, KindConfig>,
    /// Per-queue settings: `[queues.bulk] concurrency = 2`.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Commands the `exec` kind may run, by name. Never a command from a payload.
    pub commands: BTreeMap<String, CommandConfig>,
    /// HTTP endpoints the `http` kind may call, by name (`[endpoints.NAME]`).
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// What happens when a job becomes dead, besides the error-level log line.
    pub notify: NotifyConfig,
    /// The node_exporter textfile (`[metrics]`).
    pub metrics: MetricsConfig,
    /// The marketing events relay: storefronts and their destinations (`[relay]`).
    pub relay: crate::handlers::relay::config::RelayConfig,
    /// The enqueue socket's limits and permissions (its path is `daemon.socket`).
    pub socket: SocketConfig,
    /// Watched folders (`[[watch]]`), any number.
    pub watch: Vec<WatchConfig>,
    /// Integration pipelines by name (`[pipelines.NAME]`), each of a `kind`.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// The web page (`[web]`): off unless `listen` is given.
    pub web: crate::web::WebConfig,
}

/// A kind's changes to the default policy (`[kinds.NAME.retry]`); what it leaves out is
/// inherited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOverride {
    #[serde(deserialize_with = "durations::optional_duration")]
    pub base: Option<Duration>,
    pub factor: Option<f64>,
    #[serde(deserialize_with = "durations::optional_duration")]
    pub cap: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub jitter: Option<f64>,
    #[serde(deserialize_with = "durations::optional_duration")]
    pub deadline: Option<Duration>,
}

impl RetryOverride {
    /// `policy` with what this override gives in place of its fields.
    pub fn apply(&self, policy: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            base: self.base.unwrap_or(policy.base),
            factor: self.factor.unwrap_or(policy.factor),
            cap: self.cap.unwrap_or(policy.cap),
            max_attempts: self.max_attempts.unwrap_or(policy.max_attempts),
            jitter: self.jitter.unwrap_or(policy.jitter),
            deadline: self.deadline.or(policy.deadline),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KindConfig {
    #[serde(deserialize_with = "durations::optional_duration")]
    pub timeout: Option<Duration>,
    pub retry: RetryOverride,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// At most this many jobs of the queue run at once.
    pub concurrency: usize,
}

impl Config {
    /// Parses and validates TOML text. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text, origin)?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        })?;
        Ok(config)
    }

    /// Parses TOML text into the typed sections, unchecked.
    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            origin: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&Config::read(path)?, &path.display().to_string())
    }

    /// Loads the file `locate` found, or the embedded defaults. A PostgreSQL URL is
    /// resolved now (from `database_url_env` / `database_url_file` too) and kept by its
    /// masked name.
    pub fn load_located(source: &ConfigSource) -> Result<Config, ConfigError> {
        let mut config = match source {
            ConfigSource::File(path) => Config::load(path)?,
            ConfigSource::Defaults => Config::default(),
        };
        config.resolve_database(source)?;
        Ok(config)
    }

    /// [`DaemonConfig::resolve_database`], its error as this configuration's.
    fn resolve_database(&mut self, source: &ConfigSource) -> Result<(), ConfigError> {
        self.daemon.resolve_database().map_err(|message| {
            let mut problems = Problems::new();
            problems.add(Problem::from_keyed_text(&message));
            ConfigError::Invalid {
                origin: source.describe(),
                problems,
            }
        })
    }

    /// Checks what types alone cannot. Every problem found is reported, each naming its
    /// key, in the order of the sections.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::new();
        self.check_durations(&mut problems);
        problems.check(check_log_level(&self.log.level));
        self.daemon.validate(&mut problems);
        self.metrics.validate(&mut problems);
        validate_retry("retry", &self.policy_for(""), &mut problems);
        for kind in self.kinds.keys() {
            problems.check_name(&format!("kinds.{kind}"), kind);
            validate_retry(
                &format!("kinds.{kind}.retry"),
                &self.policy_for(kind),
                &mut problems,
            );
        }
        for (name, queue) in &self.queues {
            problems.check_name(&format!("queues.{name}"), name);
            if queue.concurrency == 0 {
                problems.push(format!("queues.{name}.concurrency"), "must be at least 1");
            }
        }
        for (name, command) in &self.commands {
            command.validate(&format!("commands.{name}"), &mut problems);
        }
        for (name, endpoint) in &self.endpoints {
            endpoint.validate(&format!("endpoints.{name}"), &mut problems);
        }
        self.notify
            .validate(&self.endpoints, &self.commands, &mut problems);
        self.relay.validate(&self.endpoints, &mut problems);
        self.web.validate(&mut problems);
        self.socket.validate(&self.daemon.socket, &mut problems);
        for (index, watch) in self.watch.iter().enumerate() {
            watch.validate(&format!("watch[{index}]"), &mut problems);
            if let Some(other_index) = self.watch[..index]
                .iter()
                .position(|other| other.path == watch.path)
            {
                problems.push(
                    format!("watch[{index}].path"),
                    format!(
                        "{} is watched already by watch[{other_index}]",
                        watch.path.display()
                    ),
                );
            }
        }
        for (name, pipeline) in &self.pipelines {
            pipeline.validate(name, &self.endpoints, &self.daemon.database, &mut problems);
        }
        problems.into_result()
    }

    /// Every duration key and its value, with the pattern that names its bounds in
    /// [`DURATION_BOUNDS`]. Kinds check their own durations (`endpoints.*.timeout`,
    /// `commands.*.timeout`) beside their other settings.
    fn durations(&self) -> Vec<(String, &'static str, Duration)> {
        let d = &self.daemon;
        let mut all: Vec<(String, &'static str, Duration)> = [
            ("daemon.lease", d.lease),
            ("daemon.shutdown_grace", d.shutdown_grace),
            ("daemon.job_timeout", d.job_timeout),
            ("daemon.poll_interval", d.poll_interval),
            ("daemon.retention", d.retention),
            ("daemon.reap_interval", d.reap_interval),
            ("daemon.busy_timeout", d.busy_timeout),
            ("daemon.kill_grace", d.kill_grace),
            ("metrics.interval", self.metrics.interval),
            ("socket.idle_timeout", self.socket.idle_timeout),
            ("retry.base", self.retry.base),
            ("retry.cap", self.retry.cap),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), key, value))
        .collect();
        if let Some(deadline) = self.retry.deadline {
            all.push(("retry.deadline".into(), "retry.deadline", deadline));
        }
        for (kind, settings) in &self.kinds {
            let k = |field: &str| format!("kinds.{kind}.{field}");
            let r = &settings.retry;
            for (key, pattern, value) in [
                (k("timeout"), "kinds.*.timeout", settings.timeout),
                (k("retry.base"), "retry.base", r.base),
                (k("retry.cap"), "retry.cap", r.cap),
                (k("retry.deadline"), "retry.deadline", r.deadline),
            ] {
                all.extend(value.map(|v| (key, pattern, v)));
            }
        }
        for (index, watch) in self.watch.iter().enumerate() {
            for (field, pattern, value) in [
                ("settle", "watch[*].settle", watch.settle),
                ("rescan", "watch[*].rescan", watch.rescan),
                (
                    "dedupe_window",
                    "watch[*].dedupe_window",
                    watch.dedupe_window,
                ),
                (
                    "incomplete_timeout",
                    "watch[*].incomplete_timeout",
                    watch.incomplete_timeout,
                ),
                (
                    "unreadable_timeout",
                    "watch[*].unreadable_timeout",
                    watch.unreadable_timeout,
                ),
            ] {
                all.push((format!("watch[{index}].{field}"), pattern, value));
            }
        }
        all
    }

    /// One problem per duration outside its bounds.
    fn check_durations(&self, problems: &mut Problems) {
        for (key, pattern, value) in self.durations() {
            let (_, min, max) = DURATION_BOUNDS
                .iter()
                .find(|(p, _, _)| *p == pattern)
                .expect("every duration key has bounds");
            check_bounds(problems, &key, value, (*min, *max));
        }
    }

    /// Reads every secret the configuration names, so a missing environment variable or
    /// an unreadable file is refused before anything runs. The daemon calls it at start
    /// and on reload; `jobctl`, which never sends requests, does not need the secrets.
    /// Every secret that cannot be read is reported.
    pub fn check_secrets(&self) -> Result<(), Problems> {
        let mut problems = Problems::new();
        for (name, endpoint) in &self.endpoints {
            endpoint.check_secrets(&format!("endpoints.{name}"), &mut problems);
        }
        problems.check(self.web.token());
        if let Err(e) = self.daemon.database_target() {
            problems.add(Problem::from_keyed_text(&e));
        }
        problems.into_result()
    }

    /// What the configuration names on this machine, checked now so that what start
    /// (or the first job) would trip on is refused by `--check-config` too: the socket's
    /// group, watched folders that are not created, the commands' programs. Every
    /// problem is reported.
    pub fn check_host(&self) -> Problems {
        let mut problems = Problems::new();
        if let Some(group) = self.socket.group.as_deref().filter(|_| self.socket.enabled) {
            if group.parse::<u32>().is_err() && lookup_group(group).is_none() {
                problems.push(
                    "socket.group",
                    format!("no group '{group}' on this machine (a group name or number)"),
                );
            }
        }
        for (index, watch) in self.watch.iter().enumerate() {
            if !watch.create && !watch.path.is_dir() {
                problems.push(
                    format!("watch[{index}].path"),
                    format!(
                        "{} does not exist or is not a folder (and create = false)",
                        watch.path.display()
                    ),
                );
            }
        }
        for (name, command) in &self.commands {
            command.check_host(&format!("commands.{name}"), &mut problems);
        }
        problems
    }

    /// Every secret value the configuration resolves to (endpoint auth, query secrets),
    /// to mask in anything stored from outside (a command's stderr). Ones that cannot be
    /// read are left out: the daemon refused them at start.
    pub fn known_secrets(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .flat_map(|(name, endpoint)| endpoint.known_secrets(&format!("endpoints.{name}")))
            .collect()
    }

    /// [`Config::load_located`] plus [`Config::check_secrets`] and
    /// [`Config::check_host`]: what the daemon runs on, and what `--check-config` checks.
    /// Every problem of the three is reported together.
    pub fn load_for_daemon(source: &ConfigSource) -> Result<Config, ConfigError> {
        let config = match source {
            ConfigSource::File(path) => Config::parse(&Config::read(path)?, &source.describe())?,
            ConfigSource::Defaults => Config::default(),
        };
        let mut problems = config.validate().err().unwrap_or_default();
        problems.extend(config.check_secrets().err().unwrap_or_default());
        problems.extend(config.check_host());
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: source.describe(),
                problems,
            });
        }
        let mut config = config;
        config.resolve_database(source)?;
        Ok(config)
    }

    /// The retry policy of a kind: the default with the kind's overrides applied.
    /// The limits of every endpoint that has any (`rate_limit`, `max_in_flight`), for the
    /// claim to keep: destinations without are left to the queues.
    pub fn destination_limits(&self) -> Vec<crate::flow::DestinationLimit> {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.rate_limit.is_some() || e.max_in_flight.is_some())
            .map(|(name, e)| crate::flow::DestinationLimit {
                destination: name.clone(),
                rate_per_second: e.rate_limit.map(|r| r.per_second()),
                burst: e.burst.unwrap_or(1),
                max_in_flight: e.max_in_flight,
            })
            .collect()
    }

    pub fn policy_for(&self, kind: &str) -> RetryPolicy {
        match self.kinds.get(kind) {
            Some(settings) => settings.retry.apply(&self.retry),
            None => self.retry.clone(),
        }
    }

    /// The longest one attempt of a kind may run.
    pub fn timeout_for(&self, kind: &str) -> Duration {
        self.kinds
            .get(kind)
            .and_then(|k| k.timeout)
            .unwrap_or(self.daemon.job_timeout)
    }
}

/// The allowed range (least, most) of every duration key, in one table; `*` stands for
/// a name or an index. Outside it a setting cannot work (`poll_interval = "1ns"` spins,
/// `busy_timeout = "0s"` fails every contended write) or is surely a slip
/// (`shutdown_grace = "1000y"`).
pub const DURATION_BOUNDS: &[(&str, Duration, Duration)] = &[
    // Heartbeats run at a third of the lease.
    ("daemon.lease", secs(1), secs(DAY)),
    // Past an hour, systemd's stop timeout has long killed the daemon anyway.
    ("daemon.shutdown_grace", secs(0), secs(HOUR)),
    ("daemon.job_timeout", ms(100), secs(7 * DAY)),
    ("daemon.poll_interval", ms(5), secs(MINUTE)),
    ("daemon.retention", secs(MINUTE), secs(36500 * DAY)),
    ("daemon.reap_interval", ms(100), secs(HOUR)),
    ("daemon.busy_timeout", ms(100), secs(10 * MINUTE)),
    ("daemon.kill_grace", secs(0), secs(HOUR)),
    ("metrics.interval", secs(1), secs(DAY)),
    ("socket.idle_timeout", ms(100), secs(DAY)),
    ("retry.base", ms(1), secs(DAY)),
    ("retry.cap", ms(1), secs(30 * DAY)),
    ("retry.deadline", secs(1), secs(3650 * DAY)),
    ("kinds.*.timeout", ms(100), secs(7 * DAY)),
    ("watch[*].settle", secs(0), secs(DAY)),
    ("watch[*].rescan", ms(100), secs(DAY)),
    ("watch[*].dedupe_window", secs(0), secs(3650 * DAY)),
    ("watch[*].incomplete_timeout", secs(1), secs(365 * DAY)),
    ("watch[*].unreadable_timeout", secs(1), secs(365 * DAY)),
];

/// Records every problem of a retry policy; `key` is `retry` or `kinds.NAME.retry`.
fn validate_retry(key: &str, policy: &RetryPolicy, problems: &mut Problems) {
    if policy.max_attempts == 0 {
        problems.push(format!("{key}.max_attempts"), "must be at least 1");
    }
    if !(policy.factor.is_finite() && policy.factor >= 1.0) {
        problems.push(format!("{key}.factor"), "must be a number of at least 1");
    }
    if !(0.0..=1.0).contains(&policy.jitter) {
        problems.push(format!("{key}.jitter"), "must be between 0 and 1");
    }
    if policy.base > policy.cap {
        problems.push(
            format!("{key}.base"),
            format!(
                "{} is longer than the cap of {}",
                humantime::format_duration(policy.base),
                humantime::format_duration(policy.cap)
            ),
        );
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

#[cfg(test)]
mod tests;
