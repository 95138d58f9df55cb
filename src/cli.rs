//! `jobctl`: the operator's commands, run against the database directly (the daemon need
//! not be running). Output goes to any `io::Write`, so every command is testable as a
//! function; `main` only maps errors to exit codes.

use crate::clock::{format_millis, Clock, SystemClock};
use crate::config::{parse_duration, Config, ConfigSource};
use crate::handlers::Registry;
use crate::ingest::spool::Spool;
use crate::job::{JobId, JobState, NewJob, UnixMillis};
use crate::store::{Db, JobFilter, OpenOptions, StoreError};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 database unavailable.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_DATABASE: i32 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "jobctl",
    version = crate::store::version_text(),
    about = "Look after a jobd queue: enqueue, list, show, retry, cancel, stats"
)]
pub struct Cli {
    /// The daemon's config file (default: $JOBD_CONFIG, else /etc/jobd/jobd.toml if it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The queue database, overriding the config's daemon.database.
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Add a job.
    Enqueue(EnqueueArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job with its attempts and children.
    Show { id: JobId },
    /// Send dead or cancelled jobs round again (attempts reset).
    Retry(RetryArgs),
    /// Cancel waiting jobs; a running job is asked to stop.
    Cancel {
        #[arg(required = true)]
        ids: Vec<JobId>,
    },
    /// Counts per queue and state, oldest waiting age, recent throughput.
    Stats(StatsArgs),
    /// Write a consistent copy of the database while the daemon runs.
    Backup(BackupArgs),
    /// Rebuild the database file without free space, then truncate the WAL.
    Vacuum,
    /// Ask the running daemon whether it answers on its enqueue socket.
    Ping {
        /// The socket (default: the config's daemon.socket).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Delete finished jobs older than an age.
    Purge(PurgeArgs),
    /// Create the database or bring its schema up to date.
    Migrate,
    /// Check the database's integrity and the configuration.
    Check,
    /// Pipelines' last sync marks; `--reset NAME` makes its next run a full sync.
    SyncState(SyncStateArgs),
    /// Write an example database with jobs in every state (how jobs.db.example is made).
    #[command(hide = true)]
    MakeExampleDb { path: PathBuf },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job's kind (noop, exec, ...).
    pub kind: String,
    /// The payload as JSON.
    #[arg(long, conflicts_with_all = ["payload_file", "stdin"])]
    pub payload: Option<String>,
    /// Read the payload from a file (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "stdin")]
    pub payload_file: Option<PathBuf>,
    /// `-`: read the payload from standard input.
    #[arg(value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    #[arg(long, default_value = crate::job::DEFAULT_QUEUE)]
    pub queue: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,
    /// Run no sooner than this from now (30s, 5m, 2h).
    #[arg(long, conflicts_with = "at")]
    pub delay: Option<String>,
    /// Run no sooner than this time (RFC 3339, e.g. 2026-11-24T06:00:00Z).
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Give up retrying once this much time has passed (7d, 12h), overriding the policy.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Enqueue nothing if a job with this key exists; print its id.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Send the job through the running daemon's enqueue socket instead of writing to
    /// the database directly.
    #[arg(long)]
    pub via_socket: bool,
    /// The socket for --via-socket (default: the config's daemon.socket).
    #[arg(long, value_name = "PATH", requires = "via_socket")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Jobs to retry.
    #[arg(required_unless_present = "dead", conflicts_with = "dead")]
    pub ids: Vec<JobId>,
    /// Retry every dead job (of one kind with --kind).
    #[arg(long)]
    pub dead: bool,
    #[arg(long, requires = "dead")]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// text (a table), json (same as --json) or prometheus (the text exposition format).
    #[arg(long, value_enum)]
    pub format: Option<StatsFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (a new file; mode 0600).
    pub path: PathBuf,
    /// Replace PATH if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SyncStateArgs {
    /// Forget this pipeline's mark: its next run fetches everything.
    #[arg(long, value_name = "PIPELINE")]
    pub reset: Option<String>,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[arg(long, default_value = "succeeded")]
    pub state: String,
    #[arg(long, value_name = "AGE")]
    pub older_than: String,
}

/// A failed command, sorted by the exit code it earns.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    Failure(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::NotFound(_) => EXIT_NOT_FOUND,
            CtlError::Database(_) => EXIT_DATABASE,
            CtlError::Failure(_) => EXIT_FAILURE,
        }
    }
}

impl From<StoreError> for CtlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => CtlError::NotFound(e.to_string()),
            StoreError::Missing(_)
            | StoreError::CannotOpen(..)
            | StoreError::Busy
            | StoreError::Corrupt(_)
            | StoreError::TooNew { .. }
            | StoreError::Outdated { .. }
            | StoreError::MigrationRefused(_) => CtlError::Database(e.to_string()),
            StoreError::InvalidJob(_) => CtlError::Usage(e.to_string()),
            _ => CtlError::Failure(e.to_string()),
        }
    }
}

type CtlResult = Result<(), CtlError>;

/// Runs one jobctl command.
pub fn run(cli: Cli, out: &mut dyn Write, clock: &dyn Clock) -> CtlResult {
    let source = ConfigSource::locate(cli.config.as_deref());
    let config = Config::load_located(&source).map_err(|e| CtlError::Failure(e.to_string()))?;
    let database = cli
        .db
        .clone()
        .unwrap_or_else(|| config.daemon.database.clone());
    let ctl = Ctl {
        database,
        config,
        source,
        json: cli.json,
        now: clock.now_ms(),
    };
    let result = match cli.command {
        CtlCommand::Enqueue(args) => ctl.enqueue(args, out),
        CtlCommand::List(args) => ctl.list(args, out),
        CtlCommand::Show { id } => ctl.show(id, out),
        CtlCommand::Retry(args) => ctl.retry(args, out),
        CtlCommand::Cancel { ids } => ctl.cancel(&ids, out),
        CtlCommand::Stats(args) => ctl.stats(args, out),
        CtlCommand::Backup(args) => ctl.backup(args, out),
        CtlCommand::Vacuum => ctl.vacuum(out),
        CtlCommand::Ping { socket } => ctl.ping(socket, out),
        CtlCommand::Purge(args) => ctl.purge(args, out),
        CtlCommand::Migrate => ctl.migrate(out),
        CtlCommand::Check => ctl.check(out),
        CtlCommand::SyncState(args) => ctl.sync_state(args, out),
        CtlCommand::MakeExampleDb { path } => crate::store::example::write(&path)
            .map_err(CtlError::from)
            .and_then(|()| say(out, &format!("wrote {}", path.display()))),
    };
    result
}

/// Runs jobctl with these arguments, as `main` does; returns the exit code.
pub fn main_with(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let text = e.render().to_string();
            if code == EXIT_OK {
                let _ = write!(out, "{text}");
            } else {
                let _ = write!(err, "{text}");
            }
            return code;
        }
    };
    match run(cli, out, &SystemClock) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "jobctl: {e}");
            e.exit_code()
        }
    }
}

fn say(out: &mut dyn Write, line: &str) -> CtlResult {
    writeln!(out, "{line}").map_err(|e| CtlError::Failure(format!("cannot write output: {e}")))
}

fn print_json(out: &mut dyn Write, value: &Value) -> CtlResult {
    say(
        out,
        &serde_json::to_string_pretty(value).expect("JSON values serialize"),
    )
}

struct Ctl {
    database: PathBuf,
    config: Config,
    source: ConfigSource,
    json: bool,
    now: UnixMillis,
}

impl Ctl {
    fn open(&self) -> Result<Db, CtlError> {
        Ok(Db::open(
            &self.database,
            &OpenOptions {
                synchronous: self.config.daemon.synchronous,
                busy_timeout: self.config.daemon.busy_timeout,
                create: false,
                migrate: false,
            },
        )?)
    }

    fn enqueue(&self, args: EnqueueArgs, out: &mut dyn Write) -> CtlResult {
        let text = match (&args.payload, &args.payload_file, &args.stdin) {
            (Some(text), _, _) => text.clone(),
            (None, Some(path), _) if path == Path::new("-") => read_stdin()?,
            (None, Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                CtlError::Usage(format!("cannot read payload file {}: {e}", path.display()))
            })?,
            (None, None, Some(_)) => read_stdin()?,
            (None, None, None) => "{}".to_string(),
        };
        let payload: Value = serde_json::from_str(&text)
            .map_err(|e| CtlError::Usage(format!("the payload is not valid JSON: {e}")))?;
        let run_at = match (&args.delay, &args.at) {
            (Some(delay), _) => Some(crate::clock::after(
                self.now,
                parse_duration(delay).map_err(|e| CtlError::Usage(format!("--delay: {e}")))?,
            )),
            (None, Some(at)) => {
                Some(parse_time(at).map_err(|e| CtlError::Usage(format!("--at: {e}")))?)
            }
            (None, None) => None,
        };
        let deadline_at = args
            .deadline
            .as_deref()
            .map(|d| parse_duration(d).map(|d| crate::clock::after(self.now, d)))
            .transpose()
            .map_err(|e| CtlError::Usage(format!("--deadline: {e}")))?;
        if args.via_socket {
            return self.enqueue_via_socket(&args, payload, run_at, deadline_at, out);
        }
        let job = NewJob {
            kind: args.kind,
            payload,
            queue: args.queue,
            priority: args.priority,
            run_at,
            max_attempts: args.max_attempts,
            unique_key: args.unique_key,
            deadline_at,
            parent_id: None,
            source: Some("jobctl".into()),
        };
        Registry::builtin()
            .validate(&job, &self.config)
            .map_err(CtlError::Usage)?;
        let mut db = self.open()?;
        let now = self.now;
        let enqueued = db.write(|tx| tx.enqueue(std::slice::from_ref(&job), now))?;
        let first = enqueued[0];
        if self.json {
            return print_json(out, &json!({"id": first.id, "duplicate": first.duplicate}));
        }
        if first.duplicate {
            say(
                out,
                &format!(
                    "{} (duplicate: a job with this unique key exists)",
                    first.id
                ),
            )
        } else {
            say(out, &first.id.to_string())
        }
    }

    fn list(&self, args: ListArgs, out: &mut dyn Write) -> CtlResult {
        let state = args
            .state
            .as_deref()
            .map(str::parse::<JobState>)
            .transpose()
            .map_err(CtlError::Usage)?;
        let db = self.open()?;
        let jobs = db.list(&JobFilter {
            state,
            kind: args.kind,
            queue: args.queue,
            parent_id: None,
            limit: args.limit,
        })?;
        if self.json {
            return print_json(out, &serde_json::to_value(&jobs).expect("jobs serialize"));
        }
        let mut rows = vec![vec![
            "ID".to_string(),
            "STATE".into(),
            "KIND".into(),
            "QUEUE".into(),
            "PRI".into(),
            "ATTEMPTS".into(),
            "RUN AT".into(),
            "LAST ERROR".into(),
        ]];
        for job in &jobs {
            rows.push(vec![
                job.id.to_string(),
                job.state.to_string(),
                job.kind.clone(),
                job.queue.clone(),
                job.priority.to_string(),
                match job.max_attempts {
                    Some(max) => format!("{}/{max}", job.attempts),
                    None => job.attempts.to_string(),
                },
                format_millis(job.run_at),
                job.last_error
                    .as_deref()
                    .map(|e| truncate(e, 60))
                    .unwrap_or_default(),
            ]);
        }
        write_table(out, &rows)
    }

    fn show(&self, id: JobId, out: &mut dyn Write) -> CtlResult {
        let db = self.open()?;
        let job = db.get(id)?;
        let attempts = db.attempts(id)?;
        let children = db.list(&JobFilter {
            parent_id: Some(id),
            ..Default::default()
        })?;
        if self.json {
            let children: Vec<Value> = children
                .iter()
                .map(|c| json!({"id": c.id, "kind": c.kind, "state": c.state}))
                .collect();
            return print_json(
                out,
                &json!({"job": job, "attempts": attempts, "children": children}),
            );
        }
        let optional_time =
            |t: Option<UnixMillis>| t.map(format_millis).unwrap_or_else(|| "-".into());
        let lines = [
            ("id", job.id.to_string()),
            ("state", job.state.to_string()),
            ("kind", job.kind.clone()),
            ("queue", job.queue.clone()),
            ("priority", job.priority.to_string()),
            (
                "attempts",
                match job.max_attempts {
                    Some(max) => format!("{} of {max}", job.attempts),
                    None => format!("{} (limit from the {} policy)", job.attempts, job.kind),
                },
            ),
            ("run at", format_millis(job.run_at)),
            ("created", format_millis(job.created_at)),
            ("updated", format_millis(job.updated_at)),
            ("finished", optional_time(job.finished_at)),
            ("lease until", optional_time(job.lease_until)),
            ("worker", job.worker.clone().unwrap_or_else(|| "-".into())),
            (
                "unique key",
                job.unique_key.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "parent",
                job.parent_id
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            ("deadline", optional_time(job.deadline_at)),
            ("source", job.source.clone().unwrap_or_else(|| "-".into())),
            (
                "cancel requested",
                if job.cancel_requested {
                    "yes".into()
                } else {
                    "no".into()
                },
            ),
            (
                "last error",
                job.last_error.clone().unwrap_or_else(|| "-".into()),
            ),
            ("payload", job.payload.to_string()),
        ];
        // What a handler kept of the other side's answer (an http job's `record`, e.g.
        // an upload's id), from the latest attempt that has it.
        let recorded = attempts
            .iter()
            .rev()
            .find_map(|a| a.detail.as_ref()?.get("recorded").cloned());
        let lines = lines
            .into_iter()
            .chain(recorded.map(|r| ("recorded", r.to_string())));
        for (label, value) in lines {
            say(out, &format!("{label:>16}  {value}"))?;
        }
        say(out, "")?;
        if attempts.is_empty() {
            say(out, "no attempts recorded")?;
        } else {
            let mut rows = vec![vec![
                "ATTEMPT".to_string(),
                "OUTCOME".into(),
                "STARTED".into(),
                "DURATION".into(),
                "ERROR".into(),
            ]];
            for a in &attempts {
                rows.push(vec![
                    a.attempt.to_string(),
                    a.outcome.clone(),
                    format_millis(a.started_at),
                    format!("{} ms", a.duration_ms),
                    a.error
                        .as_deref()
                        .map(|e| truncate(e, 80))
                        .unwrap_or_default(),
                ]);
            }
            write_table(out, &rows)?;
        }
        if !children.is_empty() {
            say(out, "")?;
            let mut rows = vec![vec!["CHILD".to_string(), "STATE".into(), "KIND".into()]];
            for c in &children {
                rows.push(vec![c.id.to_string(), c.state.to_string(), c.kind.clone()]);
            }
            write_table(out, &rows)?;
        }
        Ok(())
    }

    fn retry(&self, args: RetryArgs, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let now = self.now;
        let spool = Spool::at(&self.config.daemon.data_dir).ok();
        let ids = if args.dead {
            let ids = db.write(|tx| tx.revive_dead(args.kind.as_deref(), now))?;
            // Brought back after the commit: a daemon that claims one first finds no
            // file yet and retries it after its backoff.
            if let Some(spool) = &spool {
                for id in &ids {
                    restore_input(spool, *id);
                }
            }
            ids
        } else {
            // Inputs come back to the spool before the jobs are queued, so no worker
            // runs a job whose file is still in failed/; put back if the retry fails.
            let restored: Vec<_> = spool
                .iter()
                .flat_map(|spool| {
                    args.ids
                        .iter()
                        .filter_map(|id| restore_input(spool, *id).map(|from| (*id, from)))
                })
                .collect();
            db.write(|tx| tx.revive(&args.ids, now)).map_err(|e| {
                if let Some(spool) = &spool {
                    for (id, from) in &restored {
                        let _ = spool.return_failed(*id, from);
                    }
                }
                match e {
                    StoreError::Forbidden(f) => CtlError::Failure(f.to_string()),
                    other => other.into(),
                }
            })?
        };
        if self.json {
            return print_json(out, &json!({"retried": ids}));
        }
        say(
            out,
            &format!("{} job(s) queued again: {}", ids.len(), join_ids(&ids)),
        )
    }

    fn cancel(&self, ids: &[JobId], out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let now = self.now;
        let states = db
            .write(|tx| {
                ids.iter()
                    .map(|id| tx.cancel(*id, now).map(|s| (*id, s)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| match e {
                StoreError::Forbidden(f) => CtlError::Failure(f.to_string()),
                other => other.into(),
            })?;
        if self.json {
            let list: Vec<Value> = states
                .iter()
                .map(|(id, s)| json!({"id": id, "state": s, "stop_requested": *s == JobState::Running}))
                .collect();
            return print_json(out, &json!({"cancelled": list}));
        }
        for (id, state) in states {
            if state == JobState::Running {
                say(out, &format!("{id}: running; asked to stop"))?;
            } else {
                say(out, &format!("{id}: cancelled"))?;
            }
        }
        Ok(())
    }

    fn stats(&self, args: StatsArgs, out: &mut dyn Write) -> CtlResult {
        let format = match (args.format, self.json) {
            (Some(format), _) => format,
            (None, true) => StatsFormat::Json,
            (None, false) => StatsFormat::Text,
        };
        let db = self.open()?;
        if format == StatsFormat::Prometheus {
            let metrics = crate::metrics::DbMetrics::read(&db, self.now)?;
            return write!(out, "{}", crate::metrics::render(&metrics, None))
                .map_err(|e| CtlError::Failure(format!("cannot write output: {e}")));
        }
        let stats = db.stats(self.now)?;
        let pending = db.pending_folders()?;
        if format == StatsFormat::Json {
            let mut value = serde_json::to_value(&stats).expect("stats serialize");
            value["incomplete_folders"] =
                serde_json::to_value(&pending).expect("folders serialize");
            return print_json(out, &value);
        }
        // CLAIMED (held for a worker, not started) comes right before RUNNING.
        let mut header = vec!["QUEUE".to_string()];
        for s in JobState::ALL {
            if s == JobState::Running {
                header.push("CLAIMED".into());
            }
            header.push(s.as_str().to_uppercase());
        }
        header.push("OLDEST READY".into());
        let mut rows = vec![header];
        for (queue, q) in &stats.queues {
            let mut row = vec![queue.clone()];
            for s in JobState::ALL {
                if s == JobState::Running {
                    row.push(q.claimed.to_string());
                }
                row.push(q.states.get(s.as_str()).copied().unwrap_or(0).to_string());
            }
            row.push(
                q.oldest_ready_age_ms
                    .map(|ms| {
                        humantime::format_duration(std::time::Duration::from_secs(
                            (ms.max(0) / 1000) as u64,
                        ))
                        .to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
            );
            rows.push(row);
        }
        if stats.queues.is_empty() {
            say(out, "no jobs")?;
        } else {
            write_table(out, &rows)?;
        }
        if !pending.is_empty() {
            say(out, "")?;
            let mut rows = vec![vec![
                "INCOMPLETE FOLDER".to_string(),
                "WAITING".into(),
                "MISSING".into(),
            ]];
            for p in &pending {
                rows.push(vec![
                    format!("{}/{}", p.watch, p.folder),
                    humantime::format_duration(std::time::Duration::from_secs(
                        ((self.now - p.first_seen).max(0) / 1000) as u64,
                    ))
                    .to_string(),
                    if p.missing.is_empty() {
                        "(settling)".into()
                    } else {
                        p.missing.join(", ")
                    },
                ]);
            }
            write_table(out, &rows)?;
        }
        say(out, "")?;
        for (label, counts) in [
            ("last minute", &stats.finished_last_minute),
            ("last hour", &stats.finished_last_hour),
        ] {
            say(
                out,
                &format!(
                    "finished in the {label}: {} succeeded, {} dead, {} cancelled",
                    counts.get("succeeded").unwrap_or(&0),
                    counts.get("dead").unwrap_or(&0),
                    counts.get("cancelled").unwrap_or(&0)
                ),
            )?;
        }
        Ok(())
    }

    fn backup(&self, args: BackupArgs, out: &mut dyn Write) -> CtlResult {
        if !args.force && args.path.exists() {
            return Err(CtlError::Failure(format!(
                "{} already exists; pass --force to replace it",
                args.path.display()
            )));
        }
        let db = self.open()?;
        let started = std::time::Instant::now();
        let info = db.backup_to(&args.path, args.force)?;
        if self.json {
            return print_json(
                out,
                &json!({
                    "path": info.path,
                    "bytes": info.bytes,
                    "jobs": info.jobs,
                    "schema_version": info.schema_version,
                }),
            );
        }
        say(
            out,
            &format!(
                "backed up {} to {}: {}, {} job(s), schema version {}, in {:.1}s",
                self.database.display(),
                info.path.display(),
                format_bytes(info.bytes),
                info.jobs,
                info.schema_version,
                started.elapsed().as_secs_f64()
            ),
        )
    }

    fn vacuum(&self, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let before = db.file_size() + db.wal_size();
        db.vacuum()?;
        let after = db.file_size() + db.wal_size();
        if self.json {
            return print_json(out, &json!({"bytes_before": before, "bytes_after": after}));
        }
        say(
            out,
            &format!(
                "vacuumed {}: {} before, {} after",
                self.database.display(),
                format_bytes(before),
                format_bytes(after)
            ),
        )
    }

    fn purge(&self, args: PurgeArgs, out: &mut dyn Write) -> CtlResult {
        let state: JobState = args.state.parse().map_err(CtlError::Usage)?;
        if !state.is_terminal() {
            return Err(CtlError::Usage(format!(
                "--state: only finished jobs can be purged (succeeded, dead, cancelled), not {state}"
            )));
        }
        let age = parse_duration(&args.older_than)
            .map_err(|e| CtlError::Usage(format!("--older-than: {e}")))?;
        let cutoff = self.now - age.as_millis() as i64;
        let mut db = self.open()?;
        let mut total = 0;
        loop {
            let deleted = db.write(|tx| tx.purge_finished(state, cutoff, 5000))?;
            total += deleted;
            if deleted == 0 {
                break;
            }
        }
        if self.json {
            return print_json(out, &json!({"purged": total}));
        }
        say(
            out,
            &format!(
                "purged {total} {state} job(s) finished before {}",
                format_millis(cutoff)
            ),
        )
    }

    fn migrate(&self, out: &mut dyn Write) -> CtlResult {
        let db = Db::open(
            &self.database,
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )?;
        let version = db.schema_version()?;
        if self.json {
            return print_json(
                out,
                &json!({"database": self.database, "schema_version": version}),
            );
        }
        say(
            out,
            &format!("{}: schema version {version}", self.database.display()),
        )
    }

    fn check(&self, out: &mut dyn Write) -> CtlResult {
        say(out, &format!("config {}: ok", self.source.describe()))?;
        let db = self.open()?;
        let problems: Vec<String> = db
            .integrity_check()?
            .into_iter()
            .filter(|l| l != "ok")
            .collect();
        if !problems.is_empty() {
            return Err(CtlError::Database(format!(
                "database {} failed its integrity check: {}",
                self.database.display(),
                problems.join("; ")
            )));
        }
        say(
            out,
            &format!(
                "database {}: ok (schema version {})",
                self.database.display(),
                db.schema_version()?
            ),
        )
    }
}

/// Brings a dead job's input back from failed/ to the spool, saying so on stderr.
fn restore_input(spool: &Spool, id: JobId) -> Option<PathBuf> {
    match spool.restore_failed(id) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("jobctl: cannot bring job {id}'s input back to the spool: {e}");
            None
        }
    }
}

/// One request and its answer over the enqueue socket.
fn socket_request(path: &Path, request: &Value) -> Result<Value, CtlError> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        CtlError::Failure(format!(
            "cannot reach jobd on {}: {e} (is the daemon running?)",
            path.display()
        ))
    })?;
    let timeout = Some(std::time::Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    writeln!(stream, "{request}")
        .map_err(|e| CtlError::Failure(format!("cannot write to {}: {e}", path.display())))?;
    let mut line = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| CtlError::Failure(format!("no answer from {}: {e}", path.display())))?;
    serde_json::from_str(&line).map_err(|e| {
        CtlError::Failure(format!(
            "jobd answered something that is not JSON ({e}): {line}"
        ))
    })
}

/// An error answer from the socket, as a jobctl error.
fn socket_refusal(answer: &Value) -> CtlError {
    let code = answer["error"]["code"].as_str().unwrap_or("error");
    let message = answer["error"]["message"].as_str().unwrap_or("no message");
    let text = format!("{message} ({code})");
    match code {
        "invalid_json" | "invalid_request" | "invalid_job" | "unknown_kind" | "invalid_payload"
        | "line_too_long" | "batch_too_large" => CtlError::Usage(text),
        _ => CtlError::Failure(text),
    }
}

impl Ctl {
    fn socket_path(&self, explicit: Option<PathBuf>) -> PathBuf {
        explicit.unwrap_or_else(|| self.config.daemon.socket.clone())
    }

    fn ping(&self, socket: Option<PathBuf>, out: &mut dyn Write) -> CtlResult {
        let path = self.socket_path(socket);
        let started = std::time::Instant::now();
        let answer = socket_request(&path, &json!({"op": "ping"}))?;
        if answer["ok"] != json!(true) {
            return Err(socket_refusal(&answer));
        }
        let elapsed = started.elapsed();
        if self.json {
            return print_json(
                out,
                &json!({"socket": path, "version": answer["version"], "ms": elapsed.as_secs_f64() * 1000.0}),
            );
        }
        say(
            out,
            &format!(
                "jobd {} answers on {} ({:.1} ms)",
                answer["version"].as_str().unwrap_or("?"),
                path.display(),
                elapsed.as_secs_f64() * 1000.0
            ),
        )
    }

    fn enqueue_via_socket(
        &self,
        args: &EnqueueArgs,
        payload: Value,
        run_at: Option<UnixMillis>,
        deadline_at: Option<UnixMillis>,
        out: &mut dyn Write,
    ) -> CtlResult {
        let mut job = json!({"kind": args.kind, "payload": payload, "queue": args.queue, "priority": args.priority});
        if let Some(run_at) = run_at {
            job["run_at"] = json!(run_at);
        }
        if let Some(deadline_at) = deadline_at {
            job["deadline_at"] = json!(deadline_at);
        }
        if let Some(max) = args.max_attempts {
            job["max_attempts"] = json!(max);
        }
        if let Some(key) = &args.unique_key {
            job["unique_key"] = json!(key);
        }
        let path = self.socket_path(args.socket.clone());
        let answer = socket_request(&path, &json!({"op": "enqueue", "job": job}))?;
        if answer["ok"] != json!(true) {
            return Err(socket_refusal(&answer));
        }
        let id = answer["id"].as_i64().unwrap_or_default();
        let duplicate = answer["duplicate"] == json!(true);
        if self.json {
            return print_json(out, &json!({"id": id, "duplicate": duplicate}));
        }
        if duplicate {
            say(
                out,
                &format!("{id} (duplicate: a job with this unique key exists)"),
            )
        } else {
            say(out, &id.to_string())
        }
    }
}

impl Ctl {
    fn sync_state(&self, args: SyncStateArgs, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        if let Some(name) = args.reset {
            let declared = self.config.pipelines.get(&name);
            let had = db.write(|tx| tx.reset_sync_state(&name))?;
            if declared.is_none() && !had {
                return Err(CtlError::NotFound(format!(
                    "pipeline '{name}' is neither declared in the config nor has a sync state"
                )));
            }
            // A run in progress records its mark when it ends, undoing the reset.
            let live = match declared {
                Some(p) => db.live_pipeline_jobs(p.job_kind(), &name)?,
                None => 0,
            };
            if self.json {
                return print_json(
                    out,
                    &json!({"reset": name, "had_state": had, "live_jobs": live}),
                );
            }
            say(
                out,
                &if had {
                    format!("{name}: sync state reset; its next run is a full sync")
                } else {
                    format!("{name}: had no sync state; its next run is a full sync")
                },
            )?;
            if live > 0 {
                say(out, &format!("warning: {live} job(s) of a run of {name} are still live; when that run ends it records its mark again (reset after it ends)"))?;
            }
            return Ok(());
        }
        let states = db.sync_states()?;
        if self.json {
            return print_json(
                out,
                &serde_json::to_value(&states).expect("sync states serialize"),
            );
        }
        let mut rows = vec![vec![
            "PIPELINE".to_string(),
            "HIGH WATER".into(),
            "RUNS".into(),
            "LAST RUN ITEMS".into(),
            "PAGES".into(),
            "RECORDED".into(),
        ]];
        for s in &states {
            rows.push(vec![
                s.pipeline.clone(),
                format_millis(s.high_water),
                s.runs.to_string(),
                s.last_run_items.to_string(),
                s.last_run_pages.to_string(),
                format_millis(s.updated_at),
            ]);
        }
        // Declared pipelines that never completed a run: their next run is a full sync.
        for name in self.config.pipelines.keys() {
            if !states.iter().any(|s| &s.pipeline == name) {
                rows.push(vec![
                    name.clone(),
                    "- (full sync next)".into(),
                    "0".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        if rows.len() == 1 {
            return say(out, "no pipelines have synced");
        }
        write_table(out, &rows)
    }
}

fn read_stdin() -> Result<String, CtlError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CtlError::Usage(format!("cannot read the payload from standard input: {e}"))
    })?;
    Ok(text)
}

/// Parses an RFC 3339 time into milliseconds.
pub fn parse_time(text: &str) -> Result<UnixMillis, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("'{text}' is not a time ({e}); write it like 2026-11-24T06:00:00Z"))
}

fn format_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

fn join_ids(ids: &[JobId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> CtlResult {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i + 1 == row.len() {
                    v.clone()
                } else {
                    format!("{v:<width$}", width = widths[i])
                }
            })
            .collect();
        say(out, cells.join("  ").trim_end())?;
    }
    Ok(())
}
