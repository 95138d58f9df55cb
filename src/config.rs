//! The daemon's configuration: typed TOML with every default in one place, parsed then
//! validated, with errors that name the key. An empty file is a valid configuration.

use crate::dburl::{looks_like_postgres_url, DatabaseTarget, PostgresUrl};
use crate::retry::RetryPolicy;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
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
pub const DEFAULT_WATCH_PATTERN: &str = "*";
pub const DEFAULT_WATCH_SETTLE: Duration = Duration::from_secs(2);
pub const DEFAULT_WATCH_RESCAN: Duration = Duration::from_secs(30);
pub const DEFAULT_WATCH_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_WATCH_INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_WATCH_UNREADABLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_WATCH_KIND: &str = "noop";
/// Where the daemon and jobctl look when neither `--config` nor `JOBD_CONFIG` says.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/jobd/jobd.toml";
pub const CONFIG_ENV: &str = "JOBD_CONFIG";
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Statuses retried unless an endpoint says otherwise (RFC 9110 / RFC 6585 transient ones).
pub const DEFAULT_RETRY_STATUSES: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];
/// Statuses that mean "already done" (an idempotency-key replay) unless an endpoint says otherwise.
pub const DEFAULT_DUPLICATE_STATUSES: [u16; 1] = [409];
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Where systemd's `LoadCredential=` puts secrets; `$CREDENTIALS_DIRECTORY` in a
/// `*_file` path is replaced by it.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";
/// `http_pull`: items per page unless a pipeline says otherwise (Shopify's maximum).
pub const DEFAULT_PULL_LIMIT: u32 = 250;
/// `http_pull`: the largest page size a pipeline may ask for.
pub const MAX_PULL_LIMIT: u32 = 250;
/// `http_pull`: how far before the last run's start an incremental run asks from, so an
/// update racing the previous run (or a clock a little off) is not missed.
pub const DEFAULT_PULL_OVERLAP: Duration = Duration::from_secs(60);
/// `http_pull`: the header reporting use of the other side's leaky bucket ("32/40").
pub const DEFAULT_CALL_LIMIT_HEADER: &str = "X-Shopify-Shop-Api-Call-Limit";
/// The shortest `every` a pipeline may run at.
pub const MIN_PIPELINE_EVERY: Duration = Duration::from_secs(1);

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
    /// HTTP endpoints the `http` kind may call, by name (`[endpoints.NAME]`).
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// What happens when a job becomes dead, besides the error-level log line.
    pub notify: NotifyConfig,
    /// The node_exporter textfile (`[metrics]`).
    pub metrics: MetricsConfig,
    /// The marketing events relay: storefronts and their destinations (`[relay]`).
    pub relay: crate::handlers::relay::RelayConfig,
    /// The enqueue socket's limits and permissions (its path is `daemon.socket`).
    pub socket: SocketConfig,
    /// Watched folders (`[[watch]]`), any number.
    pub watch: Vec<WatchConfig>,
    /// Integration pipelines by name (`[pipelines.NAME]`), each of a `kind`.
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// The web page (`[web]`): off unless `listen` is given.
    pub web: crate::web::WebConfig,
}

/// A pipeline, tagged by its `kind`; other kinds (csv_import, relay) add variants.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PipelineConfig {
    /// Pull a paginated REST collection incrementally into a local sink.
    HttpPull(HttpPullConfig),
    /// CSV file → validated, batched `http` jobs (`handlers::csv_import`).
    CsvImport(crate::handlers::csv_import::CsvImportPipeline),
}

impl PipelineConfig {
    /// The job kind that runs this pipeline.
    pub fn job_kind(&self) -> &'static str {
        match self {
            PipelineConfig::HttpPull(_) => "http_pull",
            PipelineConfig::CsvImport(_) => "csv_import",
        }
    }

    /// When it runs by itself, if it does.
    pub fn schedule(&self) -> Option<PipelineSchedule> {
        match self {
            PipelineConfig::HttpPull(pull) => pull.schedule(),
            PipelineConfig::CsvImport(_) => None,
        }
    }

    /// The queue its jobs go to.
    pub fn queue(&self) -> &str {
        match self {
            PipelineConfig::HttpPull(pull) => {
                pull.queue.as_deref().unwrap_or(crate::job::DEFAULT_QUEUE)
            }
            PipelineConfig::CsvImport(_) => crate::job::DEFAULT_QUEUE,
        }
    }
}

/// A pipeline's schedule: a fixed period (aligned to the Unix epoch) or a cron expression.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineSchedule {
    Every(Duration),
    Cron(String),
}

/// How an API hands out its next page.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pagination {
    /// `Link: <URL>; rel="next"` (Shopify): the next URL is used exactly as given, and
    /// filters go on the first request only.
    #[default]
    LinkHeader,
    /// A cursor in the body (`cursor_field`) sent back as `cursor_param`.
    Cursor,
    /// Numbered pages (`page_param`), until a page comes back short.
    Page,
}

/// Where pulled items go: a SQLite file (one table per pipeline) or NDJSON lines.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    #[serde(default)]
    pub ndjson: Option<PathBuf>,
}

/// `[pipelines.NAME]` with `kind = "http_pull"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpPullConfig {
    /// The `[endpoints.NAME]` to call: base URL, auth, rate limit, timeouts.
    pub endpoint: String,
    /// The collection, e.g. `/admin/api/2024-10/customers.json`.
    pub path: String,
    /// The response's array of items, e.g. `customers`.
    pub items_key: String,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default = "default_updated_field")]
    pub updated_field: String,
    /// Items per page (at most 250).
    #[serde(default = "default_pull_limit")]
    pub limit: u32,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// The incremental filter's parameter; empty makes every run a full one.
    #[serde(default = "default_updated_min_param")]
    pub updated_min_param: String,
    /// `cursor` pagination: the body field holding the next cursor (dotted path).
    #[serde(default)]
    pub cursor_field: Option<String>,
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    #[serde(default = "default_page_param")]
    pub page_param: String,
    /// Subtracted from the last run's start when asking for changes.
    #[serde(default = "default_pull_overlap", deserialize_with = "duration")]
    pub overlap: Duration,
    /// More parameters (e.g. `status = "any"` for orders), on the first request only
    /// with `link_header` pagination, on every request otherwise.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    pub sink: SinkConfig,
    /// The sink table (default: the pipeline's name with `-` as `_`).
    #[serde(default)]
    pub table: Option<String>,
    /// Extracted columns: column name = dotted field path (`city = "default_address.city"`).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Run every period (`1h`), aligned to the Unix epoch.
    #[serde(default, deserialize_with = "optional_duration")]
    pub every: Option<Duration>,
    /// Run on a cron schedule (`0 * * * *`, UTC).
    #[serde(default)]
    pub cron: Option<String>,
    /// The queue the pipeline's jobs go to (default `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The "used/size" header of the other side's leaky bucket; empty ignores it.
    #[serde(default = "default_call_limit_header")]
    pub call_limit_header: String,
}

fn default_id_field() -> String {
    "id".into()
}
fn default_updated_field() -> String {
    "updated_at".into()
}
fn default_pull_limit() -> u32 {
    DEFAULT_PULL_LIMIT
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_updated_min_param() -> String {
    "updated_at_min".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}
fn default_page_param() -> String {
    "page".into()
}
fn default_pull_overlap() -> Duration {
    DEFAULT_PULL_OVERLAP
}
fn default_call_limit_header() -> String {
    DEFAULT_CALL_LIMIT_HEADER.into()
}

impl HttpPullConfig {
    /// The sink table's name for the pipeline `name`.
    pub fn table_name(&self, name: &str) -> String {
        self.table.clone().unwrap_or_else(|| {
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        })
    }

    pub fn schedule(&self) -> Option<PipelineSchedule> {
        match (&self.every, &self.cron) {
            (Some(every), _) => Some(PipelineSchedule::Every(*every)),
            (None, Some(cron)) => Some(PipelineSchedule::Cron(cron.clone())),
            (None, None) => None,
        }
    }

    fn validate(&self, key: &str, name: &str, config: &Config) -> Result<(), String> {
        if !config.endpoints.contains_key(&self.endpoint) {
            return Err(format!(
                "{key}.endpoint: '{}' is not an [endpoints.NAME] entry",
                self.endpoint
            ));
        }
        for (field, value) in [
            ("path", &self.path),
            ("items_key", &self.items_key),
            ("id_field", &self.id_field),
            ("updated_field", &self.updated_field),
            ("limit_param", &self.limit_param),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{key}.{field}: must not be empty"));
            }
        }
        if !(1..=MAX_PULL_LIMIT).contains(&self.limit) {
            return Err(format!(
                "{key}.limit: {} is not between 1 and {MAX_PULL_LIMIT}",
                self.limit
            ));
        }
        if self.pagination == Pagination::Cursor
            && self
                .cursor_field
                .as_deref()
                .is_none_or(|f| f.trim().is_empty())
        {
            return Err(format!(
                "{key}.cursor_field: cursor pagination needs the body field holding the next cursor"
            ));
        }
        match (&self.sink.sqlite, &self.sink.ndjson) {
            (Some(_), Some(_)) => {
                return Err(format!("{key}.sink: give sqlite or ndjson, not both"))
            }
            (None, None) => {
                return Err(format!(
                    "{key}.sink: give sqlite = \"PATH\" or ndjson = \"PATH\""
                ))
            }
            (Some(path), None) if path == &config.daemon.database => {
                return Err(format!(
                    "{key}.sink.sqlite: must not be the queue database ({})",
                    path.display()
                ))
            }
            _ => {}
        }
        let table = self.table_name(name);
        if !crate::store::sink::is_identifier(&table) {
            return Err(format!(
                "{key}.table: '{table}' is not a table name (letters, digits and _)"
            ));
        }
        for (column, path) in &self.columns {
            if !crate::store::sink::is_identifier(column)
                || crate::store::sink::FIXED_COLUMNS.contains(&column.to_ascii_lowercase().as_str())
            {
                return Err(format!(
                    "{key}.columns.{column}: not a usable column name (letters, digits and _; not {})",
                    crate::store::sink::FIXED_COLUMNS.join(", ")
                ));
            }
            if path.trim().is_empty() {
                return Err(format!(
                    "{key}.columns.{column}: the field path must not be empty"
                ));
            }
        }
        if self.every.is_some() && self.cron.is_some() {
            return Err(format!("{key}: give every or cron, not both"));
        }
        if self.every.is_some_and(|e| e < MIN_PIPELINE_EVERY) {
            return Err(format!("{key}.every: must be at least 1s"));
        }
        if let Some(cron) = &self.cron {
            crate::daemon::scheduler::parse_cron(cron).map_err(|e| format!("{key}.cron: {e}"))?;
        }
        if let Some(queue) = &self.queue {
            crate::job::check_name(&format!("{key}.queue"), queue)?;
        }
        if !self.call_limit_header.is_empty() {
            reqwest::header::HeaderName::from_bytes(self.call_limit_header.as_bytes()).map_err(
                |_| {
                    format!(
                        "{key}.call_limit_header: '{}' is not a header name",
                        self.call_limit_header
                    )
                },
            )?;
        }
        Ok(())
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
    /// A file (or folder set) that cannot be read is tried again every 5 s; after this
    /// long it goes to failed/ as a dead job with the reason.
    #[serde(default = "default_unreadable_timeout", deserialize_with = "duration")]
    pub unreadable_timeout: Duration,
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
fn default_unreadable_timeout() -> Duration {
    DEFAULT_WATCH_UNREADABLE_TIMEOUT
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
    #[serde(deserialize_with = "duration")]
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
    /// After SIGTERM to a command's process group, how long before SIGKILL (a command's
    /// own `kill_grace` wins).
    #[serde(deserialize_with = "duration")]
    pub kill_grace: Duration,
    /// The WAL size (bytes, or "64MiB") past which the daemon forces the WAL back to
    /// empty with TRUNCATE checkpoints, even while long reads hold it.
    #[serde(deserialize_with = "size")]
    pub wal_limit: u64,
    /// Folders, besides `data_dir` and the `[[watch]]` paths, that files named in payloads
    /// may be in (`src/paths.rs`).
    pub allowed_paths: Vec<PathBuf>,
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
            )?;
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
    /// Variables set for the command, on top of the base set (PATH, HOME, LANG, LC_*,
    /// TZ) and the job's JOBD_* variables. Nothing else of the daemon's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the daemon's environment variables passed through as they are (skipped
    /// when unset).
    #[serde(default)]
    pub env_pass: Vec<String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// SIGTERM to SIGKILL for this command (default: `daemon.kill_grace`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub kill_grace: Option<Duration>,
}

/// An HTTP endpoint the `http` kind may call (`[endpoints.NAME]`). Secrets are never
/// written here: auth names an environment variable or a file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Scheme, host and optional path prefix; a job's `path` is appended.
    #[serde(default)]
    pub base_url: String,
    /// Instead of `base_url`, for a URL that is itself a secret (a Slack webhook): the
    /// environment variable or file holding it. Read at start like the auth secrets, and
    /// masked wherever a URL is shown.
    #[serde(default)]
    pub base_url_env: Option<String>,
    #[serde(default)]
    pub base_url_file: Option<PathBuf>,
    /// Sent with every request (a job's own headers win).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The longest one request may take, connect included.
    #[serde(default = "default_http_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Requests per period shared by every worker, e.g. `"2/s"`, `"100/m"`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Requests that may go at once after a quiet spell (default 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Refuse `http://` unless the host is loopback (default true).
    #[serde(default = "yes")]
    pub require_https: bool,
    /// Allow `http://` to any host (overrides `require_https`).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Statuses that succeed; empty means any 2xx.
    #[serde(default)]
    pub success: Vec<u16>,
    /// Statuses retried with backoff.
    #[serde(default = "default_retry_statuses")]
    pub retry: Vec<u16>,
    /// Statuses that count as success because the request was already done.
    #[serde(default = "default_duplicate_statuses")]
    pub duplicate: Vec<u16>,
    /// Honour `Retry-After` on retried statuses (up to the retry policy's cap).
    #[serde(default = "yes")]
    pub honor_retry_after: bool,
    /// The header carrying the job's idempotency key; empty sends none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// The methods that carry it: those that change state. POST and PATCH by default;
    /// PUT and DELETE may be added (they are idempotent by definition, but some APIs
    /// still want the key). GET, HEAD and OPTIONS never carry one.
    #[serde(default = "default_idempotency_methods")]
    pub idempotency_methods: Vec<String>,
    /// Secrets sent as query parameters, by parameter name, for APIs that take their key
    /// in the URL (GA4's `api_secret`, Meta's `access_token`):
    /// `[endpoints.ga4.query_secrets] api_secret = { env = "GA4_API_SECRET" }`.
    /// Added when the request is sent, so they never reach a payload or the database.
    #[serde(default)]
    pub query_secrets: BTreeMap<String, SecretSource>,
}

/// Where one secret comes from: an environment variable or a file (`$CREDENTIALS_DIRECTORY`
/// expands), exactly one of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// The secret, read now. `key` names this table in errors
    /// (`endpoints.ga4.query_secrets.api_secret`).
    pub fn read(&self, key: &str) -> Result<String, String> {
        // resolve_secret names `{key}_env`; here the keys are `env` and `file` inside `key`.
        resolve_secret(key, &self.env, &self.file).map_err(|e| {
            e.replace(&format!("{key}_env"), &format!("{key}.env"))
                .replace(&format!("{key}_file"), &format!("{key}.file"))
        })
    }
}

fn default_http_timeout() -> Duration {
    DEFAULT_HTTP_TIMEOUT
}
fn yes() -> bool {
    true
}
fn default_retry_statuses() -> Vec<u16> {
    DEFAULT_RETRY_STATUSES.to_vec()
}
fn default_duplicate_statuses() -> Vec<u16> {
    DEFAULT_DUPLICATE_STATUSES.to_vec()
}
fn default_idempotency_methods() -> Vec<String> {
    vec!["POST".into(), "PATCH".into()]
}
fn default_idempotency_header() -> String {
    DEFAULT_IDEMPOTENCY_HEADER.to_string()
}

/// How requests to an endpoint authenticate. Each secret comes from `*_env` (an
/// environment variable's name) or `*_file` (a path; `$CREDENTIALS_DIRECTORY` expands).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer TOKEN`.
    Bearer {
        token_env: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        username: String,
        password_env: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// A header of its own, e.g. `X-API-Key` or `X-Shopify-Access-Token`.
    Header {
        name: String,
        value_env: Option<String>,
        value_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials: a token fetched from `token_url`, cached until shortly
    /// before it expires and shared by every worker.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret_env: Option<String>,
        client_secret_file: Option<PathBuf>,
        /// Extra fields of the token request, e.g. `scope`, `account_id`.
        #[serde(default)]
        params: BTreeMap<String, String>,
        /// `form` (RFC 6749) or `json` (e.g. Salesforce Marketing Cloud).
        #[serde(default)]
        request_format: TokenRequestFormat,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenRequestFormat {
    #[default]
    Form,
    Json,
}

impl AuthConfig {
    /// The secret this auth needs, read now. `key` names the auth table in errors.
    pub fn secret(&self, key: &str) -> Result<String, String> {
        match self {
            AuthConfig::Bearer {
                token_env,
                token_file,
            } => resolve_secret(&format!("{key}.token"), token_env, token_file),
            AuthConfig::Basic {
                password_env,
                password_file,
                ..
            } => resolve_secret(&format!("{key}.password"), password_env, password_file),
            AuthConfig::Header {
                value_env,
                value_file,
                ..
            } => resolve_secret(&format!("{key}.value"), value_env, value_file),
            AuthConfig::OAuth2ClientCredentials {
                client_secret_env,
                client_secret_file,
                ..
            } => resolve_secret(
                &format!("{key}.client_secret"),
                client_secret_env,
                client_secret_file,
            ),
        }
    }
}

/// Reads a secret from exactly one of an environment variable or a file. Errors name
/// the key (`endpoints.usage.auth.token_env`) and never the secret.
pub fn resolve_secret(
    key: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, String> {
    match (env, file) {
        (Some(_), Some(_)) => Err(format!("{key}_env and {key}_file: give only one")),
        (None, None) => Err(format!("{key}_env or {key}_file: one is required")),
        (Some(name), None) => match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
            Ok(_) => Err(format!(
                "{key}_env: the environment variable {name} is empty"
            )),
            Err(_) => Err(format!(
                "{key}_env: the environment variable {name} is not set"
            )),
        },
        (None, Some(path)) => {
            let path = expand_credentials_dir(path).map_err(|e| format!("{key}_file: {e}"))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.trim().is_empty() {
                return Err(format!("{key}_file: {} is empty", path.display()));
            }
            Ok(value)
        }
    }
}

/// Replaces `$CREDENTIALS_DIRECTORY` (or `${CREDENTIALS_DIRECTORY}`) at the start of a
/// path with the directory systemd's `LoadCredential=` made.
fn expand_credentials_dir(path: &Path) -> Result<PathBuf, String> {
    let text = path.to_string_lossy();
    for prefix in ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let dir = std::env::var_os(CREDENTIALS_ENV)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    format!("{} uses ${CREDENTIALS_ENV}, which is not set (LoadCredential= in the unit sets it)", path.display())
                })?;
            return Ok(PathBuf::from(dir).join(rest.trim_start_matches('/')));
        }
    }
    Ok(path.to_path_buf())
}

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    /// `2/s`, `100/m`, `1000/h`, `5/10s`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a rate; write it like 2/s, 100/m or 5/10s");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() {
            return Err(format!("'{text}': the rate must be more than 0"));
        }
        Ok(RateLimit { count, per })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Metrics for node_exporter's textfile collector (`[metrics]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where the daemon writes Prometheus text, atomically, every `interval`; none by
    /// default. The file is 0640: node_exporter's user must be in the jobd group.
    pub textfile: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
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

/// Dead-letter notifications (`[notify]`): a durable, retried job per dead job, to a
/// webhook endpoint and/or a declared command.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// An `[endpoints.NAME]` that receives a Slack-compatible JSON POST.
    pub endpoint: Option<String>,
    /// The path under the endpoint's base_url (default: the base_url itself).
    pub path: Option<String>,
    /// A `[commands.NAME]` run with the notification as JSON on stdin.
    pub command: Option<String>,
    /// The queue notification jobs go to (default: the dead job's queue).
    pub queue: Option<String>,
}

impl EndpointConfig {
    /// Whether `status` counts as success (duplicates aside).
    pub fn is_success(&self, status: u16) -> bool {
        if self.success.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success.contains(&status)
        }
    }

    /// Whether the base URL comes from `base_url_env` or `base_url_file`.
    pub fn base_url_is_secret(&self) -> bool {
        self.base_url_env.is_some() || self.base_url_file.is_some()
    }

    /// The base URL: `base_url`, or the secret read now and checked like `base_url`, with
    /// errors that never show it. `key` is `endpoints.NAME`.
    pub fn resolve_base_url(&self, key: &str) -> Result<String, String> {
        if !self.base_url_is_secret() {
            return Ok(self.base_url.clone());
        }
        let url = resolve_secret(
            &format!("{key}.base_url"),
            &self.base_url_env,
            &self.base_url_file,
        )?;
        let from = if self.base_url_env.is_some() {
            "base_url_env"
        } else {
            "base_url_file"
        };
        check_url(&format!("{key}.{from}"), &url, self).map_err(|e| e.replace(&url, "***"))?;
        Ok(url)
    }

    /// Checks what types cannot, naming keys under `key` (`endpoints.NAME`).
    fn validate(&self, key: &str) -> Result<(), String> {
        let sources = [
            !self.base_url.is_empty(),
            self.base_url_env.is_some(),
            self.base_url_file.is_some(),
        ];
        if sources.iter().filter(|given| **given).count() != 1 {
            return Err(format!(
                "{key}: give exactly one of base_url, base_url_env and base_url_file"
            ));
        }
        if !self.base_url_is_secret() {
            check_url(&format!("{key}.base_url"), &self.base_url, self)?;
        }
        if self.burst == Some(0) {
            return Err(format!("{key}.burst: must be at least 1"));
        }
        if self.burst.is_some() && self.rate_limit.is_none() {
            return Err(format!("{key}.burst: needs a rate_limit"));
        }
        for (list, statuses) in [
            ("success", &self.success),
            ("retry", &self.retry),
            ("duplicate", &self.duplicate),
        ] {
            if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(format!("{key}.{list}: {bad} is not an HTTP status"));
            }
        }
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{key}.headers: '{name}' is not a header name"))?;
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("{key}.headers.{name}: not a valid header value"))?;
        }
        if !self.idempotency_header.is_empty() {
            reqwest::header::HeaderName::from_bytes(self.idempotency_header.as_bytes()).map_err(
                |_| {
                    format!(
                        "{key}.idempotency_header: '{}' is not a header name",
                        self.idempotency_header
                    )
                },
            )?;
        }
        for method in &self.idempotency_methods {
            if !["POST", "PATCH", "PUT", "DELETE"].contains(&method.as_str()) {
                return Err(format!(
                    "{key}.idempotency_methods: '{method}' is not one of POST, PATCH, PUT, DELETE (methods that change state, in capitals)"
                ));
            }
        }
        for (param, source) in &self.query_secrets {
            if param.is_empty() {
                return Err(format!("{key}.query_secrets: a parameter name is empty"));
            }
            if source.env.is_some() == source.file.is_some() {
                return Err(format!(
                    "{key}.query_secrets.{param}: give exactly one of env and file"
                ));
            }
        }
        match &self.auth {
            Some(AuthConfig::OAuth2ClientCredentials { token_url, .. }) => {
                check_url(&format!("{key}.auth.token_url"), token_url, self)?
            }
            Some(AuthConfig::Header { name, .. }) => {
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{key}.auth.name: '{name}' is not a header name"))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether this endpoint may send to `url` in clear text.
    pub fn allows_http_to(&self, url: &reqwest::Url) -> bool {
        url.scheme() == "https"
            || self.allow_insecure_http
            || !self.require_https
            || is_loopback(url)
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_url(key: &str, text: &str, endpoint: &EndpointConfig) -> Result<(), String> {
    let url =
        reqwest::Url::parse(text).map_err(|e| format!("{key}: '{text}' is not a URL: {e}"))?;
    match url.scheme() {
        "https" | "http" => {}
        other => return Err(format!("{key}: scheme '{other}' is not http or https")),
    }
    if url.host().is_none() {
        return Err(format!("{key}: '{text}' has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key}: credentials in the URL are refused; use auth with *_env or *_file"
        ));
    }
    if !endpoint.allows_http_to(&url) {
        return Err(format!(
            "{key}: http:// to a non-loopback host is refused (require_https); use https or set allow_insecure_http = true"
        ));
    }
    Ok(())
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
    /// Loads the configuration the binaries run on. A PostgreSQL URL is resolved now
    /// (from `database_url_env` / `database_url_file` too) and kept by its masked name.
    pub fn load_located(source: &ConfigSource) -> Result<Config, ConfigError> {
        let mut config = match source {
            ConfigSource::File(path) => Config::load(path)?,
            ConfigSource::Defaults => Config::default(),
        };
        config
            .daemon
            .resolve_database()
            .map_err(|message| ConfigError {
                origin: source.describe(),
                message,
            })?;
        Ok(config)
    }

    /// Checks what types alone cannot, naming the key. Every duration out of its bounds,
    /// a bad log level and the other checks' first error are all reported, one after
    /// the other ("; ").
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = self.check_durations();
        errors.extend(check_log_level(&self.log.level).err());
        if self.daemon.synchronous == Synchronous::Off {
            errors.push(
                "daemon.synchronous: off is refused: a crash of the machine could lose or corrupt acknowledged jobs (allowed: normal, full, extra)"
                    .into(),
            );
        }
        for (name, command) in &self.commands {
            for var in &command.env_pass {
                if var.is_empty() || var.contains(['=', '\0']) {
                    errors.push(format!(
                        "commands.{name}.env_pass: '{var}' is not a variable name"
                    ));
                }
            }
        }
        errors.extend(self.validate_rest().err());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Every duration key and its value, with the pattern that names its bounds in
    /// [`DURATION_BOUNDS`].
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
        for (name, command) in &self.commands {
            for (field, pattern, value) in [
                ("timeout", "commands.*.timeout", command.timeout),
                ("kill_grace", "commands.*.kill_grace", command.kill_grace),
            ] {
                all.extend(value.map(|v| (format!("commands.{name}.{field}"), pattern, v)));
            }
        }
        for (name, endpoint) in &self.endpoints {
            all.push((
                format!("endpoints.{name}.timeout"),
                "endpoints.*.timeout",
                endpoint.timeout,
            ));
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

    /// One error per duration outside its bounds.
    fn check_durations(&self) -> Vec<String> {
        self.durations()
            .into_iter()
            .filter_map(|(key, pattern, value)| {
                let (_, min, max) = DURATION_BOUNDS
                    .iter()
                    .find(|(p, _, _)| *p == pattern)
                    .expect("every duration key has bounds");
                (value < *min || value > *max).then(|| {
                    format!(
                        "{key}: {} is outside the allowed range {} to {}",
                        humantime::format_duration(value),
                        humantime::format_duration(*min),
                        humantime::format_duration(*max)
                    )
                })
            })
            .collect()
    }

    /// The checks that stop at their first error.
    fn validate_rest(&self) -> Result<(), String> {
        let d = &self.daemon;
        if d.workers == 0 {
            return Err("daemon.workers: must be at least 1".into());
        }
        if d.workers > 1024 {
            return Err(format!("daemon.workers: {} is more than 1024", d.workers));
        }
        if d.wal_limit < MIN_WAL_LIMIT {
            return Err(format!(
                "daemon.wal_limit: {} bytes is less than the smallest allowed, {MIN_WAL_LIMIT} (64KiB)",
                d.wal_limit
            ));
        }
        if let Some(path) = &self.metrics.textfile {
            if path.file_name().is_none() {
                return Err(format!(
                    "metrics.textfile: '{}' does not name a file",
                    path.display()
                ));
            }
        }
        if d.database.as_os_str().is_empty() {
            return Err("daemon.database: must not be empty".into());
        }
        d.check_database_form()?;
        if let Some(node) = &d.node {
            crate::job::check_name("daemon.node", node)?;
        }
        if d.leader_lease < Duration::from_secs(1) {
            return Err("daemon.leader_lease: must be at least 1s".into());
        }
        if d.allowed_paths.iter().any(|p| p.as_os_str().is_empty()) {
            return Err("daemon.allowed_paths: an entry is empty (give folders)".into());
        }
        validate_retry("retry", &self.policy_for(""))?;
        for (kind, settings) in &self.kinds {
            crate::job::check_name(&format!("kinds.{kind}"), kind)?;
            validate_retry(&format!("kinds.{kind}.retry"), &self.policy_for(kind))?;
            let _ = settings;
        }
        for (name, queue) in &self.queues {
            crate::job::check_name(&format!("queues.{name}"), name)?;
            if queue.concurrency == 0 {
                return Err(format!("queues.{name}.concurrency: must be at least 1"));
            }
        }
        for (name, command) in &self.commands {
            if command.program.as_os_str().is_empty() {
                return Err(format!("commands.{name}.program: must not be empty"));
            }
        }
        for (name, endpoint) in &self.endpoints {
            endpoint.validate(&format!("endpoints.{name}"))?;
        }
        let n = &self.notify;
        if let Some(endpoint) = &n.endpoint {
            if !self.endpoints.contains_key(endpoint) {
                return Err(format!(
                    "notify.endpoint: '{endpoint}' is not an [endpoints.NAME] entry"
                ));
            }
        }
        if let Some(command) = &n.command {
            if !self.commands.contains_key(command) {
                return Err(format!(
                    "notify.command: '{command}' is not a [commands.NAME] entry"
                ));
            }
        }
        if let Some(queue) = &n.queue {
            crate::job::check_name("notify.queue", queue)?;
        }
        if n.endpoint.is_none() && n.command.is_none() && (n.path.is_some() || n.queue.is_some()) {
            return Err("notify: path or queue given without an endpoint or command".into());
        }
        self.relay.validate(&self.endpoints)?;
        self.web.validate()?;
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
        for (name, pipeline) in &self.pipelines {
            let key = format!("pipelines.{name}");
            if name.trim().is_empty() || name.contains(':') {
                return Err(format!(
                    "{key}: a pipeline name must not be empty or contain ':'"
                ));
            }
            match pipeline {
                PipelineConfig::HttpPull(pull) => pull.validate(&key, name, self)?,
                PipelineConfig::CsvImport(csv) => csv.validate(&key, self)?,
            }
        }
        Ok(())
    }

    /// Reads every secret the configuration names, so a missing environment variable or
    /// an unreadable file is refused before anything runs. The daemon calls it at start
    /// and on reload; `jobctl`, which never sends requests, does not need the secrets.
    pub fn check_secrets(&self) -> Result<(), String> {
        for (name, endpoint) in &self.endpoints {
            endpoint.resolve_base_url(&format!("endpoints.{name}"))?;
            if let Some(auth) = &endpoint.auth {
                auth.secret(&format!("endpoints.{name}.auth"))?;
            }
            for (param, source) in &endpoint.query_secrets {
                source.read(&format!("endpoints.{name}.query_secrets.{param}"))?;
            }
        }
        self.web.token()?;
        self.daemon.database_target()?;
        Ok(())
    }

    /// What the configuration names on this machine, checked now so that what start
    /// (or the first job) would trip on is refused by `--check-config` too: the socket's
    /// group, watched folders that are not created, the commands' programs. Every
    /// problem is reported.
    pub fn check_host(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(group) = self.socket.group.as_deref().filter(|_| self.socket.enabled) {
            if group.parse::<u32>().is_err() && lookup_group(group).is_none() {
                errors.push(format!(
                    "socket.group: no group '{group}' on this machine (a group name or number)"
                ));
            }
        }
        for (index, watch) in self.watch.iter().enumerate() {
            if !watch.create && !watch.path.is_dir() {
                errors.push(format!(
                    "watch[{index}].path: {} does not exist or is not a folder (and create = false)",
                    watch.path.display()
                ));
            }
        }
        for (name, command) in &self.commands {
            if let Err(e) = check_program(command) {
                errors.push(format!("commands.{name}.program: {e}"));
            }
        }
        errors
    }

    /// Every secret value the configuration resolves to (endpoint auth, query secrets),
    /// to mask in anything stored from outside (a command's stderr). Ones that cannot be
    /// read are left out: the daemon refused them at start.
    pub fn known_secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        for (name, endpoint) in &self.endpoints {
            if let Some(auth) = &endpoint.auth {
                secrets.extend(auth.secret(&format!("endpoints.{name}.auth")).ok());
            }
            for (param, source) in &endpoint.query_secrets {
                secrets.extend(
                    source
                        .read(&format!("endpoints.{name}.query_secrets.{param}"))
                        .ok(),
                );
            }
        }
        secrets
    }

    /// [`Config::load_located`] plus [`Config::check_secrets`] and
    /// [`Config::check_host`]: what the daemon runs on.
    pub fn load_for_daemon(source: &ConfigSource) -> Result<Config, ConfigError> {
        let config = Config::load_located(source)?;
        let mut errors: Vec<String> = config.check_secrets().err().into_iter().collect();
        errors.extend(config.check_host());
        if !errors.is_empty() {
            return Err(ConfigError {
                origin: source.describe(),
                message: errors.join("; "),
            });
        }
        Ok(config)
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

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

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
    ("commands.*.timeout", ms(100), secs(7 * DAY)),
    ("commands.*.kill_grace", secs(0), secs(HOUR)),
    ("endpoints.*.timeout", ms(100), secs(HOUR)),
    ("watch[*].settle", secs(0), secs(DAY)),
    ("watch[*].rescan", ms(100), secs(DAY)),
    ("watch[*].dedupe_window", secs(0), secs(3650 * DAY)),
    ("watch[*].incomplete_timeout", secs(1), secs(365 * DAY)),
    ("watch[*].unreadable_timeout", secs(1), secs(365 * DAY)),
];

/// `log.level` as the daemon will read it: comma-separated directives, each a level
/// (`info`) or `target=level` (`jobd=debug`). A bare word that is not a level would be
/// read as a target and silence every other log line.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let bad = |why: String| {
        Err(format!(
            "log.level: '{level}' {why} (allowed: trace, debug, info, warn, error, off, or target=level such as jobd=debug)"
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

/// Whether a command's program is an executable file: a path as given, or a bare name
/// looked up in the PATH the command will have.
fn check_program(command: &CommandConfig) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let program = &command.program;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return match std::fs::metadata(program) {
            Err(e) => Err(format!("{}: {e}", program.display())),
            Ok(m) if !m.is_file() => Err(format!("{} is not a file", program.display())),
            Ok(_) if !executable(program) => {
                Err(format!("{} is not executable", program.display()))
            }
            Ok(_) => Ok(()),
        };
    }
    let path = command
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not an executable file in the PATH ({path})",
            program.display()
        ))
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
        crate::job::check_name(&format!("{key}.kind"), &self.kind)?;
        crate::job::check_name(&format!("{key}.queue"), &self.queue)?;
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

/// Parses a size: a number of bytes, or a number with B, KiB, MiB or GiB (`64MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 0,
    };
    let n: Option<u64> = digits.parse().ok();
    match (n, scale) {
        (Some(n), s) if s > 0 => n
            .checked_mul(s)
            .ok_or_else(|| format!("'{text}' is too large")),
        _ => Err(format!(
            "'{text}' is not a size; write it like 67108864, 512KiB, 64MiB or 1GiB"
        )),
    }
}

fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
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
    fn sizes_and_the_metrics_section() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("64MB").unwrap_err().contains("64MiB"));
        let config = Config::from_toml(
            "[daemon]\nwal_limit = \"8MiB\"\n[metrics]\ntextfile = \"/tmp/j.prom\"\ninterval = \"5s\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(config.daemon.wal_limit, 8 << 20);
        assert_eq!(config.metrics.interval, Duration::from_secs(5));
        let config = Config::from_toml("[daemon]\nwal_limit = 1048576\n", "test").unwrap();
        assert_eq!(config.daemon.wal_limit, 1 << 20);
        let err = Config::from_toml("[daemon]\nwal_limit = \"1KiB\"\n", "test").unwrap_err();
        assert!(err.to_string().contains("daemon.wal_limit"), "{err}");
        let err = Config::from_toml("[metrics]\ninterval = \"0s\"\n", "test").unwrap_err();
        assert!(err.to_string().contains("metrics.interval"), "{err}");
    }

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
    fn every_duration_key_has_bounds_and_each_error_is_reported() {
        // One of every table that holds durations: durations() must find bounds for all.
        let text = "[kinds.exec]\ntimeout = \"1m\"\n[kinds.exec.retry]\nbase = \"1s\"\ncap = \"1h\"\ndeadline = \"1d\"\n\
            [retry]\ndeadline = \"7d\"\n\
            [commands.report]\nprogram = \"/bin/true\"\ntimeout = \"1m\"\nkill_grace = \"1s\"\n\
            [endpoints.api]\nbase_url = \"https://api.example.com\"\n\
            [[watch]]\npath = \"/srv/in\"\n";
        let config = Config::from_toml(text, "t").unwrap();
        for (key, pattern, _) in config.durations() {
            assert!(
                DURATION_BOUNDS
                    .iter()
                    .any(|(p, min, max)| *p == pattern && min <= max),
                "{key}"
            );
        }
        let message = Config::from_toml(
            "[daemon]\nlease = \"0s\"\nreap_interval = \"2h\"\n[log]\nlevel = \"jobd=loud\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        for part in [
            "daemon.lease: 0s is outside the allowed range 1s to 1day",
            "daemon.reap_interval: 2h is outside the allowed range 100ms to 1h",
            "log.level: 'jobd=loud' has 'jobd=loud', which is not a level",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }

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
    fn a_postgresql_url_selects_postgres_and_a_path_keeps_sqlite() {
        let sqlite =
            Config::from_toml("[daemon]\ndatabase = \"/var/lib/jobd/jobs.db\"\n", "t").unwrap();
        assert_eq!(
            sqlite.daemon.database_target().unwrap(),
            DatabaseTarget::Sqlite("/var/lib/jobd/jobs.db".into())
        );
        let pg = Config::from_toml(
            "[daemon]\ndatabase = \"postgresql://jobd@db.internal/jobs\"\nnode = \"vm-1\"\n",
            "t",
        )
        .unwrap();
        let DatabaseTarget::Postgres(url) = pg.daemon.database_target().unwrap() else {
            panic!("a URL selects PostgreSQL");
        };
        assert_eq!(url.database(), "jobs");
        assert_eq!(pg.daemon.node_name(), "vm-1");
        // The default node name: the host name and a random suffix, new each time.
        let a = sqlite.daemon.node_name();
        assert_ne!(a, sqlite.daemon.node_name());
        crate::job::check_name("node", &a).unwrap();
    }

    #[test]
    fn the_database_url_comes_from_the_environment_or_a_file_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-url");
        std::fs::write(&file, "postgresql://jobd:hunter2@db/jobs\n").unwrap();
        let config = Config::from_toml(
            &format!("[daemon]\ndatabase_url_file = \"{}\"\n", file.display()),
            "t",
        )
        .unwrap();
        let target = config.daemon.database_target().unwrap();
        let DatabaseTarget::Postgres(url) = &target else {
            panic!("postgres");
        };
        assert_eq!(url.secret_text(), "postgresql://jobd:hunter2@db/jobs");
        assert_eq!(target.to_string(), "postgresql://jobd:***@db/jobs");
        assert!(!format!("{target:?}").contains("hunter2"));
        config.check_secrets().unwrap();
        // A missing variable is refused by the daemon's check, naming the key.
        let config = Config::from_toml(
            "[daemon]\ndatabase_url_env = \"JOBD_TEST_UNSET_DATABASE_URL\"\n",
            "t",
        )
        .unwrap();
        let err = config.check_secrets().unwrap_err();
        assert!(
            err.contains("daemon.database_url_env: the environment variable JOBD_TEST_UNSET_DATABASE_URL is not set"),
            "{err}"
        );
        // A file holding something else than a URL: named, not shown.
        std::fs::write(&file, "hunter2\n").unwrap();
        let config = Config::from_toml(
            &format!("[daemon]\ndatabase_url_file = \"{}\"\n", file.display()),
            "t",
        )
        .unwrap();
        let err = config.daemon.database_target().unwrap_err();
        assert!(err.starts_with("daemon.database_url_file: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_database_settings_are_refused_naming_the_key() {
        let cases = [
            (
                "[daemon]\ndatabase = \"postgresql://u:pw@db\"\n",
                "daemon.database: postgresql://u:***@db names no database",
            ),
            (
                "[daemon]\ndatabase = \"/x/jobs.db\"\ndatabase_url_env = \"X\"\n",
                "daemon.database and daemon.database_url_env/database_url_file: give only one",
            ),
            (
                "[daemon]\ndatabase_url_env = \"X\"\ndatabase_url_file = \"/y\"\n",
                "",
            ),
            (
                "[daemon]\nshared_data_dir = true\n",
                "daemon.shared_data_dir: only for a PostgreSQL database",
            ),
            (
                "[daemon]\ndatabase = \"postgresql://db/jobs\"\nnode = \"has space\"\n",
                "daemon.node",
            ),
        ];
        for (text, expected) in cases {
            match Config::from_toml(text, "t.toml") {
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(expected), "{text:?} gave {message}");
                    assert!(!message.contains(":pw@"), "{message}");
                }
                // Both sources given: refused when the secret is read.
                Ok(config) => {
                    let err = config.daemon.database_target().unwrap_err();
                    assert!(err.contains("give only one"), "{text:?} gave {err}");
                }
            }
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

    #[test]
    fn endpoints_parse_with_their_defaults() {
        let config = Config::from_toml(
            "[endpoints.usage]\nbase_url = \"https://api.example.com/v1\"\nrate_limit = \"2/s\"\n\
             [endpoints.usage.auth]\ntype = \"bearer\"\ntoken_env = \"JOBD_TEST_UNSET_TOKEN\"\n",
            "t",
        )
        .unwrap();
        let usage = &config.endpoints["usage"];
        assert_eq!(usage.timeout, DEFAULT_HTTP_TIMEOUT);
        assert_eq!(usage.retry, DEFAULT_RETRY_STATUSES.to_vec());
        assert_eq!(usage.duplicate, vec![409]);
        assert!(usage.require_https && usage.honor_retry_after);
        assert_eq!(usage.rate_limit.unwrap().per_second(), 2.0);
        assert!(matches!(usage.auth, Some(AuthConfig::Bearer { .. })));
        // Parsing does not need the secret; the daemon's check does, and names the key.
        let err = config.check_secrets().unwrap_err();
        assert_eq!(
            err,
            "endpoints.usage.auth.token_env: the environment variable JOBD_TEST_UNSET_TOKEN is not set"
        );
    }

    #[test]
    fn bad_endpoints_name_their_key() {
        let cases = [
            (
                "base_url = \"http://api.example.com\"",
                "endpoints.e.base_url: http:// to a non-loopback host is refused",
            ),
            (
                "base_url = \"ftp://x\"",
                "endpoints.e.base_url: scheme 'ftp'",
            ),
            (
                "base_url = \"https://u:p@x\"",
                "credentials in the URL are refused",
            ),
            (
                "base_url = \"https://x\"\nrate_limit = \"fast\"",
                "'fast' is not a rate",
            ),
            (
                "base_url = \"https://x\"\nretry = [700]",
                "endpoints.e.retry: 700 is not an HTTP status",
            ),
            (
                "base_url = \"https://x\"\nburst = 3",
                "endpoints.e.burst: needs a rate_limit",
            ),
            (
                "base_url = \"https://x\"\nauth = { type = \"bearer\", token = \"inline\" }",
                "unknown field `token`",
            ),
            (
                "base_url = \"https://x\"\nauth = { type = \"kerberos\" }",
                "kerberos",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("[endpoints.e]\n{body}\n");
            let message = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(message.contains(expected), "{body:?} gave {message}");
        }
        for ok in [
            "base_url = \"http://127.0.0.1:8080\"",
            "base_url = \"http://localhost\"",
            "base_url = \"http://[::1]:9\"",
            "base_url = \"http://intranet\"\nallow_insecure_http = true",
        ] {
            Config::from_toml(&format!("[endpoints.e]\n{ok}\n"), "t").unwrap();
        }
        let message = Config::from_toml("[notify]\nendpoint = \"nope\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("notify.endpoint: 'nope'"), "{message}");
    }

    #[test]
    fn secrets_come_from_files_under_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("usage-token"), "file-secret\n").unwrap();
        std::env::set_var(CREDENTIALS_ENV, dir.path());
        let file = Some(PathBuf::from("$CREDENTIALS_DIRECTORY/usage-token"));
        assert_eq!(
            resolve_secret("k.token", &None, &file).unwrap(),
            "file-secret"
        );
        let missing = Some(PathBuf::from("${CREDENTIALS_DIRECTORY}/nope"));
        let err = resolve_secret("k.token", &None, &missing).unwrap_err();
        assert!(err.starts_with("k.token_file: cannot read"), "{err}");
        let both = resolve_secret("k.token", &Some("A".into()), &file).unwrap_err();
        assert_eq!(both, "k.token_env and k.token_file: give only one");
    }

    #[test]
    fn the_shopify_example_is_valid() {
        std::env::set_var("SHOPIFY_ACCESS_TOKEN", "example-token");
        let text = include_str!("../config/examples/shopify.toml");
        let config = Config::from_toml(text, "shopify.toml").unwrap();
        config.check_secrets().unwrap();
        assert_eq!(config.pipelines.len(), 3);
        let PipelineConfig::HttpPull(customers) = &config.pipelines["shopify-customers"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(customers.items_key, "customers");
        assert_eq!(customers.limit, 250);
        assert_eq!(customers.overlap, DEFAULT_PULL_OVERLAP);
        assert_eq!(customers.pagination, Pagination::LinkHeader);
        assert_eq!(customers.columns["city"], "default_address.city");
        assert_eq!(
            config.pipelines["shopify-customers"].schedule(),
            Some(PipelineSchedule::Every(Duration::from_secs(3600)))
        );
        let PipelineConfig::HttpPull(orders) = &config.pipelines["shopify-orders"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(orders.query["status"], "any");
        assert!(matches!(
            config.pipelines["shopify-orders"].schedule(),
            Some(PipelineSchedule::Cron(_))
        ));
        assert_eq!(orders.table_name("shopify-orders"), "orders");
        assert_eq!(config.policy_for("http_pull").max_attempts, 20);
    }

    #[test]
    fn bad_pipelines_name_their_key() {
        let base = "[endpoints.shop]\nbase_url = \"https://x\"\n[pipelines.p]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"/c.json\"\nitems_key = \"c\"\n";
        let cases = [
            (
                "sink = { sqlite = \"s.db\" }\nlimit = 251",
                "pipelines.p.limit: 251 is not between 1 and 250",
            ),
            ("", "missing field `sink`"),
            ("sink = {}", "pipelines.p.sink: give sqlite"),
            ("sink = { sqlite = \"a\", ndjson = \"b\" }", "not both"),
            (
                "sink = { sqlite = \"s.db\" }\nevery = \"1h\"\ncron = \"0 * * * *\"",
                "pipelines.p: give every or cron",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ncron = \"sometimes\"",
                "pipelines.p.cron:",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ncolumns = { raw = \"x\" }",
                "pipelines.p.columns.raw",
            ),
            (
                "sink = { sqlite = \"s.db\" }\ntable = \"a-b\"",
                "pipelines.p.table",
            ),
            (
                "sink = { sqlite = \"s.db\" }\npagination = \"cursor\"",
                "pipelines.p.cursor_field",
            ),
            (
                "sink = { sqlite = \"s.db\" }\nbogus = 1",
                "unknown field `bogus`",
            ),
        ];
        for (extra, expected) in cases {
            let message = Config::from_toml(&format!("{base}{extra}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{extra:?} gave {message}");
        }
        let message = Config::from_toml(
            &base
                .replace("endpoint = \"shop\"", "endpoint = \"nope\"")
                .replace("items_key", "sink = { sqlite = \"s.db\" }\nitems_key"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("pipelines.p.endpoint: 'nope'"),
            "{message}"
        );
        let message = Config::from_toml("[pipelines.p]\nkind = \"teleport\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("teleport"), "{message}");
        // The default table is the pipeline's name made an identifier.
        let config =
            Config::from_toml(&format!("{base}sink = {{ sqlite = \"s.db\" }}\n"), "t").unwrap();
        let PipelineConfig::HttpPull(p) = &config.pipelines["p"] else {
            panic!("an http_pull pipeline")
        };
        assert_eq!(p.table_name("shopify-customers"), "shopify_customers");
    }

    #[test]
    fn the_usage_sender_example_is_valid() {
        std::env::set_var("USAGE_API_TOKEN", "example-token");
        let text = include_str!("../config/examples/usage-sender.toml");
        let config = Config::from_toml(text, "usage-sender.toml").unwrap();
        config.check_secrets().unwrap();
        let policy = config.policy_for("http");
        assert_eq!(policy.max_attempts, 10);
        assert_eq!(policy.deadline, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(config.endpoints["usage"].duplicate, vec![409]);
    }
}
