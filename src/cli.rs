//! `jobctl`: the operator's commands, run against the database directly (the daemon need
//! not be running). Output goes to any `io::Write`, so every command is testable as a
//! function; `main` only maps errors to exit codes.

use crate::clock::{format_millis, Clock, SystemClock};
use crate::config::{parse_duration, Config, ConfigSource};
use crate::handlers::Registry;
use crate::ingest::spool::Spool;
use crate::job::{JobId, JobState, NewJob, UnixMillis};
use crate::present::{short_duration, ColorChoice, Style};
use crate::safe_text;
use crate::store::{JobFilter, OpenOptions, Store, StoreError};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

mod destinations;

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
    /// Print JSON instead of tables (times in ms since the epoch); errors become JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour states in tables: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Print absolute times in UTC instead of local time.
    #[arg(long, global = true)]
    pub utc: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Add a job.
    Enqueue(EnqueueArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job with its attempts, progress and a summary of its children.
    Show(ShowArgs),
    /// Send dead or cancelled jobs round again (attempts reset), by id or by filter.
    Retry(RetryArgs),
    /// Cancel waiting jobs, by id or by filter; a running job is asked to stop.
    Cancel(CancelArgs),
    /// Delete jobs with their attempts, by id or by filter (never running or waiting ones).
    Delete(DeleteArgs),
    /// Make delayed or retrying jobs due now.
    RunNow {
        /// The jobs to run now (queued with a later run_at, or retrying).
        #[arg(required = true)]
        ids: Vec<JobId>,
    },
    /// Pause a queue: running jobs finish, no daemon claims anything new from it.
    Pause {
        /// The queue to pause (it need not have jobs yet).
        queue: String,
        /// Why, shown by `stats`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue to resume.
        queue: String,
    },
    /// Each destination and key: rate, tokens, jobs in flight and waiting, held until and why.
    Destinations,
    /// Hold a destination (`NAME` or `NAME/KEY`): no daemon claims its jobs until then.
    Hold {
        /// The destination: an `[endpoints.NAME]`, or `NAME/KEY` for one key of it.
        destination: String,
        /// How long (10m, 1h); a longer hold that stands is kept.
        #[arg(long = "for", value_name = "DURATION")]
        wait: String,
        /// Why, shown by `destinations` and `show`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a destination's hold now: its waiting jobs are due at once.
    Release {
        /// The destination: `NAME` or `NAME/KEY`, as `destinations` lists it.
        destination: String,
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
    /// A live view: counts, throughput, what each worker runs, recent deaths (q quits).
    Top,
    /// Print a shell completion script.
    Completions {
        /// The shell: bash, zsh or fish (elvish and powershell work too).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print jobctl's man page, or write one page per subcommand into a folder.
    Manpage {
        /// Write jobctl.1 and jobctl-SUBCOMMAND.1 into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write an example database with jobs in every state (how jobs.db.example is made).
    #[command(hide = true)]
    MakeExampleDb {
        /// Where to write it.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job's kind (noop, exec, ...).
    #[arg(required_unless_present = "file")]
    pub kind: Option<String>,
    /// Enqueue many jobs from NDJSON (`-` for standard input): one job a line, written as
    /// the socket's `job` ({"kind":"noop","payload":{...},"delay":"30s",...}). Every line
    /// is checked like a single enqueue; the jobs go in chunks of 10,000, each all or
    /// nothing, and an error names its line. Prints one id a line, in input order.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "kind", "payload", "payload_file", "stdin", "queue", "priority", "delay", "at",
        "max_attempts", "deadline", "unique_key", "order_key", "via_socket",
    ])]
    pub file: Option<PathBuf>,
    /// The payload as JSON.
    #[arg(long, conflicts_with_all = ["payload_file", "stdin"])]
    pub payload: Option<String>,
    /// Read the payload from a file (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "stdin")]
    pub payload_file: Option<PathBuf>,
    /// `-`: read the payload from standard input.
    #[arg(value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    /// The queue to put it in.
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
    /// Give up after this many attempts, overriding the kind's retry policy.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Give up retrying once this much time has passed (7d, 12h), overriding the policy.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Enqueue nothing if a job with this key exists; print its id.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Run one at a time, in enqueue order, with the other jobs of this key (a shop, an
    /// order): a retrying job holds back only the jobs of its own key.
    #[arg(long, value_name = "KEY")]
    pub order_key: Option<String>,
    /// Send the job through the running daemon's enqueue socket instead of writing to
    /// the database directly.
    #[arg(long)]
    pub via_socket: bool,
    /// The socket for --via-socket (default: the config's daemon.socket).
    #[arg(long, value_name = "PATH", requires = "via_socket")]
    pub socket: Option<PathBuf>,
}

/// `--state`, with the valid states listed in `--help` and in the error for a bad one.
fn state_parser() -> impl clap::builder::TypedValueParser<Value = JobState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(JobState::ALL.map(JobState::as_str))
        .map(|s| s.parse::<JobState>().expect("a possible value is a state"))
}

/// Which jobs: the filter flags `list` and the bulk actions share.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only jobs in this state: queued, running, retrying, waiting, succeeded, dead or cancelled.
    #[arg(long, value_parser = state_parser())]
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs in this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs whose last error contains this text.
    #[arg(long, value_name = "TEXT")]
    pub error_contains: Option<String>,
    /// Only jobs created since then: an age (1h, 30m, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    pub since: Option<String>,
    /// Only jobs created before then: an age (1h) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    pub until: Option<String>,
}

impl FilterArgs {
    /// Whether any filter flag was given.
    fn any(&self) -> bool {
        self.state.is_some()
            || self.kind.is_some()
            || self.queue.is_some()
            || self.error_contains.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only jobs whose payload (its JSON text) contains this text.
    #[arg(long, value_name = "TEXT")]
    pub payload_contains: Option<String>,
    /// The next page: jobs with ids below this one (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    pub after: Option<JobId>,
    /// At most this many jobs (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The job.
    pub id: JobId,
    /// List the job's children (a page at a time), not only their summary.
    #[arg(long)]
    pub children: bool,
    /// With --children: at most this many children per page.
    #[arg(long, default_value_t = 50, requires = "children")]
    pub limit: usize,
    /// With --children: the next page, children with ids above this one.
    #[arg(long, value_name = "ID", default_value_t = 0, requires = "children")]
    pub after: JobId,
}

/// Which jobs a bulk action picks. Without --yes it only says how many and shows some.
#[derive(Debug, Args, Default)]
pub struct SelectArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Act on the matching jobs; without it, print how many match and a sample (dry run).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Jobs to retry.
    pub ids: Vec<JobId>,
    /// Retry every dead job at once (same as --state dead --yes).
    #[arg(long, conflicts_with_all = ["ids", "state"])]
    pub dead: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Jobs to cancel.
    pub ids: Vec<JobId>,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Jobs to delete.
    pub ids: Vec<JobId>,
    #[command(flatten)]
    pub select: SelectArgs,
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
    /// Which finished jobs: succeeded, dead or cancelled.
    #[arg(long, default_value = "succeeded")]
    pub state: String,
    /// Only jobs finished longer ago than this (7d, 12h).
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
    /// Whoever read our output went away (`jobctl list | head`): stop quietly.
    #[error("output closed")]
    OutputClosed,
}

impl CtlError {
    /// The error's name in `--json` output; each goes with one exit code.
    pub fn code(&self) -> &'static str {
        match self {
            CtlError::Usage(_) => "usage",
            CtlError::NotFound(_) => "not_found",
            CtlError::Database(_) => "database_unavailable",
            CtlError::Failure(_) => "failure",
            CtlError::OutputClosed => "output_closed",
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::NotFound(_) => EXIT_NOT_FOUND,
            CtlError::Database(_) => EXIT_DATABASE,
            CtlError::Failure(_) => EXIT_FAILURE,
            CtlError::OutputClosed => EXIT_OK,
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
            | StoreError::ReadOnly(..)
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
    let now = clock.now_ms();
    let style = Style::detect(
        cli.color,
        cli.utc,
        now,
        OUT_IS_STDOUT.load(std::sync::atomic::Ordering::Relaxed),
    );
    crate::present::set_current(style);
    let ctl = Ctl {
        database,
        config,
        source,
        json: cli.json,
        now,
        style,
    };
    let result = match cli.command {
        CtlCommand::Enqueue(args) => ctl.enqueue(args, out),
        CtlCommand::List(args) => ctl.list(args, out),
        CtlCommand::Show(args) => ctl.show(args, out),
        CtlCommand::Retry(args) => ctl.retry(args, out),
        CtlCommand::Cancel(args) => ctl.cancel(args, out),
        CtlCommand::Delete(args) => ctl.delete(args, out),
        CtlCommand::RunNow { ids } => ctl.run_now(&ids, out),
        CtlCommand::Pause { queue, reason } => ctl.pause(&queue, reason.as_deref(), out),
        CtlCommand::Resume { queue } => ctl.resume(&queue, out),
        CtlCommand::Destinations => ctl.destinations(out),
        CtlCommand::Hold {
            destination,
            wait,
            reason,
        } => ctl.hold(&destination, &wait, reason.as_deref(), out),
        CtlCommand::Release { destination } => ctl.release(&destination, out),
        CtlCommand::Stats(args) => ctl.stats(args, out),
        CtlCommand::Backup(args) => ctl.backup(args, out),
        CtlCommand::Vacuum => ctl.vacuum(out),
        CtlCommand::Ping { socket } => ctl.ping(socket, out),
        CtlCommand::Purge(args) => ctl.purge(args, out),
        CtlCommand::Migrate => ctl.migrate(out),
        CtlCommand::Check => ctl.check(out),
        CtlCommand::SyncState(args) => ctl.sync_state(args, out),
        CtlCommand::Top => ctl.top(out, clock),
        CtlCommand::Completions { shell } => {
            crate::manual::completions(shell, out);
            Ok(())
        }
        CtlCommand::Manpage { dir } => ctl.manpage(dir, out),
        CtlCommand::MakeExampleDb { path } => crate::store::example::write(&path)
            .map_err(CtlError::from)
            .and_then(|()| say(out, &format!("wrote {}", path.display()))),
    };
    result
}

/// Set when jobctl writes to this process's own standard output, which may be a terminal
/// (colour, width, `top`'s live view); `main_with` alone writes to anything, plainly.
static OUT_IS_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// jobctl's `main`: this process's arguments, standard output and error.
pub fn main_on_stdio() -> i32 {
    OUT_IS_STDOUT.store(true, std::sync::atomic::Ordering::Relaxed);
    main_with(
        std::env::args(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
}

/// Runs jobctl with these arguments, as `main` does; returns the exit code.
pub fn main_with(
    args: impl IntoIterator<Item = String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    use clap::FromArgMatches;
    let args: Vec<String> = args.into_iter().collect();
    // Known before parsing, so that a usage error is JSON too under --json.
    let json = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    let parsed = crate::manual::command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let text = e.render().to_string();
            if code == EXIT_OK {
                let _ = write!(out, "{text}");
            } else if json {
                let message = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                write_json_error(err, "usage", message);
            } else {
                let _ = write!(err, "{text}");
            }
            return code;
        }
    };
    match run(cli, out, &SystemClock) {
        Ok(()) => EXIT_OK,
        Err(CtlError::OutputClosed) => EXIT_OK,
        Err(e) if json => {
            write_json_error(err, e.code(), &e.to_string());
            e.exit_code()
        }
        Err(e) => {
            // An error may quote stored text (a state, a name): escaped like all output.
            let _ = writeln!(err, "jobctl: {}", safe_text::escape(&e.to_string()));
            e.exit_code()
        }
    }
}

/// An error as one line of JSON: `{"error": {"code": "not_found", "message": "..."}}`.
fn write_json_error(err: &mut dyn Write, code: &str, message: &str) {
    let _ = writeln!(
        err,
        "{}",
        json!({"error": {"code": code, "message": message}})
    );
}

fn say(out: &mut dyn Write, line: &str) -> CtlResult {
    writeln!(out, "{line}").map_err(output_error)
}

/// A failed write to our output: a closed pipe ends the command quietly (exit 0, as `head`
/// expects of what feeds it); anything else is a failure.
fn output_error(e: std::io::Error) -> CtlError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CtlError::OutputClosed
    } else {
        CtlError::Failure(format!("cannot write output: {e}"))
    }
}

/// Pretty JSON, with the control characters serde_json leaves raw (DEL, C1) escaped too.
fn print_json(out: &mut dyn Write, value: &Value) -> CtlResult {
    say(
        out,
        &safe_text::escape_json(
            &serde_json::to_string_pretty(value).expect("JSON values serialize"),
        ),
    )
}

struct Ctl {
    database: PathBuf,
    config: Config,
    source: ConfigSource,
    json: bool,
    now: UnixMillis,
    style: Style,
}

impl Ctl {
    /// [`Ctl::open`] for enqueuing: jobs get their destination and order key from their
    /// kind, as the daemon's do.
    fn open_routed(&self) -> Result<Box<dyn Store>, CtlError> {
        let mut db = self.open()?;
        let config = std::sync::Arc::new(self.config.clone());
        db.set_router(std::sync::Arc::new(Registry::builtin()).router(move || config.clone()));
        Ok(db)
    }

    fn open(&self) -> Result<Box<dyn Store>, CtlError> {
        Ok(crate::store::open(
            &self.database,
            &OpenOptions {
                synchronous: self.config.daemon.synchronous,
                busy_timeout: self.config.daemon.busy_timeout,
                create: false,
                migrate: false,
            },
        )?)
    }

    /// The SQLite-only capabilities of `db`, or a refusal naming the command.
    fn sqlite_file<'d>(
        db: &'d dyn Store,
        command: &str,
    ) -> Result<&'d dyn crate::store::SqliteFile, CtlError> {
        db.sqlite().ok_or_else(|| {
            CtlError::Failure(format!(
                "jobctl {command} is SQLite only; use pg_dump or your database's own tools"
            ))
        })
    }

    fn enqueue(&self, args: EnqueueArgs, out: &mut dyn Write) -> CtlResult {
        if let Some(file) = &args.file {
            return self.enqueue_lines(file, out);
        }
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
            kind: args.kind.unwrap_or_default(),
            payload,
            queue: args.queue,
            priority: args.priority,
            run_at,
            max_attempts: args.max_attempts,
            unique_key: args.unique_key,
            deadline_at,
            parent_id: None,
            source: Some("jobctl".into()),
            destination: None,
            flow_key: None,
            order_key: args.order_key,
        };
        Registry::builtin()
            .validate(&job, &self.config)
            .map_err(CtlError::Usage)?;
        let mut db = self.open_routed()?;
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

    /// `jobctl enqueue --file`: NDJSON jobs in chunks of [`FILE_CHUNK`], one transaction
    /// each, so a bad line or a failed write loses nothing already acknowledged and
    /// enqueues nothing of its own chunk.
    fn enqueue_lines(&self, file: &Path, out: &mut dyn Write) -> CtlResult {
        use std::io::BufRead;
        let mut input: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(std::io::BufReader::with_capacity(
                256 * 1024,
                std::io::stdin(),
            ))
        } else {
            Box::new(std::io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(file)
                    .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", file.display())))?,
            ))
        };
        let name = if file == Path::new("-") {
            "standard input".to_string()
        } else {
            file.display().to_string()
        };
        let registry = Registry::builtin();
        let mut db = self.open_routed()?;
        let mut line = Vec::new();
        let mut number = 0usize;
        let mut chunk: Vec<NewJob> = Vec::with_capacity(FILE_CHUNK);
        let mut chunk_from = 1usize;
        let mut enqueued = 0usize;
        let mut ids = Vec::new();
        let mut duplicates = Vec::new();
        // Whatever went in before an error is said, so a script knows where to resume.
        let so_far = |enqueued: usize, from: usize| {
            if enqueued == 0 {
                "nothing was enqueued".to_string()
            } else {
                format!(
                    "the {enqueued} job(s) of lines 1 to {} are enqueued; nothing from line {from} on",
                    from - 1
                )
            }
        };
        loop {
            line.clear();
            let read = input
                .read_until(b'\n', &mut line)
                .map_err(|e| CtlError::Usage(format!("cannot read {name}: {e}")))?;
            if read > 0 {
                number += 1;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    let job = crate::ingest::protocol::parse_job_line(&line, self.now, "jobctl")
                        .and_then(|job| registry.validate(&job, &self.config).map(|()| job))
                        .map_err(|e| {
                            CtlError::Usage(format!(
                                "{name} line {number}: {e}; {}",
                                so_far(enqueued, chunk_from)
                            ))
                        })?;
                    chunk.push(job);
                }
            }
            if chunk.len() == FILE_CHUNK || (read == 0 && !chunk.is_empty()) {
                let now = self.now;
                let written = db.write(|tx| tx.enqueue(&chunk, now)).map_err(|e| {
                    CtlError::Failure(format!(
                        "cannot enqueue lines {chunk_from} to {number}: {e}; {}",
                        so_far(enqueued, chunk_from)
                    ))
                })?;
                let mut text = String::with_capacity(written.len() * 12);
                for done in &written {
                    if self.json {
                        ids.push(done.id);
                        if done.duplicate {
                            duplicates.push(done.id);
                        }
                    } else if done.duplicate {
                        text.push_str(&format!(
                            "{} (duplicate: a job with this unique key exists)\n",
                            done.id
                        ));
                    } else {
                        text.push_str(&done.id.to_string());
                        text.push('\n');
                    }
                }
                out.write_all(text.as_bytes()).map_err(output_error)?;
                enqueued += chunk.len();
                chunk.clear();
                chunk_from = number + 1;
            }
            if read == 0 {
                break;
            }
        }
        if self.json {
            return print_json(
                out,
                &json!({"enqueued": enqueued, "ids": ids, "duplicates": duplicates}),
            );
        }
        Ok(())
    }

    fn list(&self, args: ListArgs, out: &mut dyn Write) -> CtlResult {
        let db = self.open()?;
        let jobs = db.list(&JobFilter {
            payload_contains: args.payload_contains,
            before_id: args.after,
            limit: args.limit,
            ..self.job_filter(&args.filter)?
        })?;
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let progress = db.latest_progress(&ids)?;
        let paused: Vec<String> = db.paused_queues()?.into_iter().map(|p| p.queue).collect();
        if self.json {
            let list: Vec<Value> = jobs
                .iter()
                .map(|job| {
                    let mut value = serde_json::to_value(job).expect("jobs serialize");
                    if let Some(p) = progress.get(&job.id) {
                        value["progress"] = p.clone();
                    }
                    if paused.contains(&job.queue) {
                        value["queue_paused"] = json!(true);
                    }
                    value
                })
                .collect();
            return print_json(out, &Value::Array(list));
        }
        let mut rows = vec![vec![
            "ID".to_string(),
            "STATE".into(),
            "KIND".into(),
            "QUEUE".into(),
            "PRI".into(),
            "ATTEMPTS".into(),
            "RUN AT".into(),
            "PROGRESS".into(),
            "LAST ERROR".into(),
        ]];
        for job in &jobs {
            rows.push(vec![
                job.id.to_string(),
                job.state.to_string(),
                job.kind.clone(),
                if paused.contains(&job.queue) {
                    format!(
                        "{} (paused)",
                        safe_text::cell(&job.queue, safe_text::MAX_CELL - 9)
                    )
                } else {
                    job.queue.clone()
                },
                job.priority.to_string(),
                match job.max_attempts {
                    Some(max) => format!("{}/{max}", job.attempts),
                    None => job.attempts.to_string(),
                },
                self.style.ago(job.run_at),
                progress.get(&job.id).map(progress_text).unwrap_or_default(),
                job.last_error.clone().unwrap_or_default(),
            ]);
        }
        write_table(out, &rows)?;
        if args.limit > 0 && jobs.len() == args.limit {
            if let Some(last) = jobs.last() {
                say(
                    out,
                    &format!("(more: add --after {} for the next page)", last.id),
                )?;
            }
        }
        Ok(())
    }

    /// `--since` / `--until`: an age before now (1h, 7d) or an RFC 3339 time.
    fn when(&self, flag: &str, text: Option<&str>) -> Result<Option<UnixMillis>, CtlError> {
        let Some(text) = text else {
            return Ok(None);
        };
        if let Ok(age) = parse_duration(text) {
            return Ok(Some(self.now - age.as_millis() as i64));
        }
        parse_time(text).map(Some).map_err(|e| {
            CtlError::Usage(format!(
                "{flag}: neither an age (1h, 30m, 7d) nor a time: {e}"
            ))
        })
    }

    /// The filter the shared filter flags describe.
    fn job_filter(&self, filter: &FilterArgs) -> Result<JobFilter, CtlError> {
        Ok(JobFilter {
            state: filter.state,
            kind: filter.kind.clone(),
            queue: filter.queue.clone(),
            error_contains: filter.error_contains.clone(),
            created_since: self.when("--since", filter.since.as_deref())?,
            created_until: self.when("--until", filter.until.as_deref())?,
            ..JobFilter::default()
        })
    }

    fn show(&self, args: ShowArgs, out: &mut dyn Write) -> CtlResult {
        let id = args.id;
        let db = self.open()?;
        let mut job = db.get(id)?;
        // A payload's own Authorization (or other credential) header is not shown.
        job.payload = crate::handlers::http::auth::masked_payload(&job.payload);
        let attempts = db.attempts(id)?;
        let progress = db.progress_of(id)?;
        let summary = db.children_summary(id)?;
        let children = if args.children {
            db.children_page(id, args.after, args.limit.max(1))?
        } else {
            Vec::new()
        };
        let input = self.input_now(&job);
        let waits = self.waits_because(db.as_ref(), &job)?;
        if self.json {
            let children: Vec<Value> = children
                .iter()
                .map(|c| json!({"id": c.id, "kind": c.kind, "state": c.state, "last_error": c.last_error}))
                .collect();
            let mut value = json!({
                "job": job,
                "attempts": attempts,
                "progress": progress,
                "children_summary": summary,
                // The same as the text's "input now": where a watched file's input is now.
                "input_now": input,
                // The same as the text's "waits": why flow control keeps it waiting.
                "waits": waits,
            });
            if args.children {
                value["children"] = Value::Array(children);
            }
            return print_json(out, &value);
        }
        let optional_time = |t: Option<UnixMillis>| self.style.time_or_dash(t);
        let mut lines = vec![
            ("id", job.id.to_string()),
            (
                "state",
                self.style.paint(job.state.as_str(), job.state.as_str()),
            ),
            ("kind", job.kind.clone()),
            ("queue", job.queue.clone()),
            ("priority", job.priority.to_string()),
            ("attempts", self.attempts_text(&job)),
            ("run at", self.style.time(job.run_at)),
            ("created", self.style.time(job.created_at)),
            ("updated", self.style.time(job.updated_at)),
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
        if let Some(input) = &input {
            lines.push(("input now", input.clone()));
        }
        if let Some(destination) = &job.destination {
            lines.push((
                "destination",
                crate::flow::label(destination, &job.flow_key),
            ));
        }
        if let Some(key) = &job.order_key {
            lines.push(("order key", key.clone()));
        }
        if let Some(waits) = &waits {
            lines.push(("waits", waits.clone()));
        }
        if let Some(p) = progress.last() {
            lines.push((
                "progress",
                format!(
                    "{} (attempt {}, {})",
                    progress_text(&p.progress),
                    p.attempt,
                    format_millis(p.updated_at)
                ),
            ));
        }
        // What a handler kept of the other side's answer (an http job's `record`, e.g.
        // an upload's id), from the latest attempt that has it.
        let recorded = attempts
            .iter()
            .rev()
            .find_map(|a| a.detail.as_ref()?.get("recorded").cloned());
        if let Some(r) = recorded {
            lines.push(("recorded", r.to_string()));
        }
        if summary.total > 0 {
            lines.push(("children", children_text(&summary, self.now)));
        }
        for (label, value) in lines {
            say(out, &format!("{label:>16}  {}", safe_text::escape(&value)))?;
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
                "DETAIL".into(),
                "ERROR".into(),
            ]];
            for a in &attempts {
                rows.push(vec![
                    a.attempt.to_string(),
                    a.outcome.clone(),
                    self.style.ago(a.started_at),
                    short_duration(a.duration_ms),
                    a.detail.as_ref().map(detail_text).unwrap_or_default(),
                    a.error.clone().unwrap_or_default(),
                ]);
            }
            write_table(out, &rows)?;
            // An exec attempt's stderr tail, its last lines, each escaped.
            for a in &attempts {
                let Some(tail) = a
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("stderr_tail"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.trim().is_empty())
                else {
                    continue;
                };
                say(out, "")?;
                say(out, &format!("attempt {} stderr (tail):", a.attempt))?;
                let lines: Vec<&str> = tail.lines().collect();
                for line in &lines[lines.len().saturating_sub(STDERR_LINES)..] {
                    say(
                        out,
                        &format!("  {}", safe_text::cell(line, 4 * safe_text::MAX_CELL)),
                    )?;
                }
            }
        }
        if args.children {
            say(out, "")?;
            if children.is_empty() {
                say(out, &format!("no children with ids above {}", args.after))?;
            } else {
                let mut rows = vec![vec![
                    "CHILD".to_string(),
                    "STATE".into(),
                    "KIND".into(),
                    "LAST ERROR".into(),
                ]];
                for c in &children {
                    rows.push(vec![
                        c.id.to_string(),
                        c.state.to_string(),
                        c.kind.clone(),
                        c.last_error.clone().unwrap_or_default(),
                    ]);
                }
                write_table(out, &rows)?;
                if children.len() == args.limit.max(1) {
                    let last = children.last().map(|c| c.id).unwrap_or_default();
                    say(
                        out,
                        &format!("(more: jobctl show {id} --children --after {last})"),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The attempts line of `show`: the job's own limit, else the policy's limit and
    /// where it comes from (`[kinds.K.retry]` or `[retry]`).
    fn attempts_text(&self, job: &crate::job::Job) -> String {
        match job.max_attempts {
            Some(max) => format!("{} of {max} (the job's own limit)", job.attempts),
            None => {
                let max = self.config.policy_for(&job.kind).max_attempts;
                let from = match self.config.kinds.get(&job.kind) {
                    Some(k) if k.retry.max_attempts.is_some() => {
                        format!("[kinds.{}.retry]", job.kind)
                    }
                    _ => "[retry]".to_string(),
                };
                format!("{} of {max} (limit from {from})", job.attempts)
            }
        }
    }

    /// Where a watched file's input is now: the payload names `spool/<id>/...`, which
    /// moves to `done/` or `failed/` when the job ends.
    fn input_now(&self, job: &crate::job::Job) -> Option<String> {
        let named = job
            .payload
            .get("file")
            .or_else(|| job.payload.get("dir"))?
            .as_str()?;
        let spool = Spool::at(&self.config.daemon.data_dir).ok()?;
        let spooled = spool.job_dir(job.id);
        let inside = Path::new(named).strip_prefix(&spooled).ok()?;
        Some(match spool.job_input_dir(job.id) {
            Some(dir) => dir.join(inside).display().to_string(),
            None => "gone (not in spool/, done/ or failed/; purged or moved away)".into(),
        })
    }

    fn retry(&self, args: RetryArgs, out: &mut dyn Write) -> CtlResult {
        if args.dead || args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            let mut select = args.select;
            if args.dead {
                select.filter.state = Some(JobState::Dead);
                select.yes = true;
            }
            return self.bulk(Bulk::Retry, &select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("retry"));
        }
        let mut db = self.open()?;
        let now = self.now;
        let spool = Spool::at(&self.config.daemon.data_dir).ok();
        // Inputs come back to the spool before the jobs are queued, so no worker runs a
        // job whose file is still in failed/; put back if the retry fails.
        let restored: Vec<_> = spool
            .iter()
            .flat_map(|spool| {
                args.ids
                    .iter()
                    .filter_map(|id| restore_input(spool, *id).map(|from| (*id, from)))
            })
            .collect();
        let ids = db.write(|tx| tx.revive(&args.ids, now)).map_err(|e| {
            if let Some(spool) = &spool {
                for (id, from) in &restored {
                    let _ = spool.return_failed(*id, from);
                }
            }
            forbidden_as_failure(e)
        })?;
        if self.json {
            return print_json(out, &json!({"retried": ids}));
        }
        say(
            out,
            &format!("{} job(s) queued again: {}", ids.len(), join_ids(&ids)),
        )
    }

    fn cancel(&self, args: CancelArgs, out: &mut dyn Write) -> CtlResult {
        if args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            return self.bulk(Bulk::Cancel, &args.select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("cancel"));
        }
        let ids = args.ids;
        let mut db = self.open()?;
        let now = self.now;
        let states = db
            .write(|tx| {
                ids.iter()
                    .map(|id| tx.cancel(*id, now).map(|s| (*id, s)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(forbidden_as_failure)?;
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

    fn delete(&self, args: DeleteArgs, out: &mut dyn Write) -> CtlResult {
        if args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            return self.bulk(Bulk::Delete, &args.select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("delete"));
        }
        let mut db = self.open()?;
        let ids = args.ids;
        let deleted = db.write(|tx| {
            for id in &ids {
                let state = tx.get(*id)?.state;
                if !JobState::DELETABLE.contains(&state) {
                    return Err(StoreError::InvalidJob(format!(
                        "job {id} is {state}; cannot delete it (allowed from: {}){}",
                        JobState::DELETABLE.map(JobState::as_str).join(", "),
                        if state == JobState::Running || state == JobState::Waiting {
                            "; cancel it first"
                        } else {
                            ""
                        }
                    )));
                }
            }
            tx.delete_where_allowed(&ids)
        });
        let deleted = deleted.map_err(|e| match e {
            StoreError::InvalidJob(m) => CtlError::Failure(m.replace("invalid job: ", "")),
            other => other.into(),
        })?;
        if self.json {
            return print_json(out, &json!({"deleted": deleted}));
        }
        say(
            out,
            &format!("{deleted} job(s) deleted: {}", join_ids(&ids)),
        )
    }

    /// A bulk action on every job the filter picks: a dry run by default (how many match,
    /// how many the action applies to, a sample), with `--yes` the action itself, in
    /// chunks of [`BULK_CHUNK`] ids, each one short write transaction.
    fn bulk(&self, action: Bulk, select: &SelectArgs, out: &mut dyn Write) -> CtlResult {
        let filter = self.job_filter(&select.filter)?;
        let states = action.states();
        let mut db = self.open()?;
        if !select.yes {
            let counts = db.count_matching(&filter)?;
            let matching: u64 = counts.values().sum();
            let applies: u64 = counts
                .iter()
                .filter(|(s, _)| states.contains(s))
                .map(|(_, n)| n)
                .sum();
            let sample = db.list(&JobFilter {
                limit: BULK_SAMPLE,
                ..filter.clone()
            })?;
            if self.json {
                let per_state: BTreeMap<&str, u64> =
                    counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
                return print_json(
                    out,
                    &json!({"dry_run": true, "action": action.verb(), "matching": matching,
                            "would_act_on": applies, "states": per_state, "sample": sample}),
                );
            }
            let others: Vec<String> = counts
                .iter()
                .filter(|(s, _)| !states.contains(s))
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            say(
                out,
                &format!(
                    "dry run: {matching} job(s) match; {applies} would be {}{}",
                    action.done(),
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (left alone: {}; {} applies to {})",
                            others.join(", "),
                            action.verb(),
                            states
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            )?;
            if !sample.is_empty() {
                let mut rows = vec![vec![
                    "ID".to_string(),
                    "STATE".into(),
                    "KIND".into(),
                    "QUEUE".into(),
                    "CREATED".into(),
                    "LAST ERROR".into(),
                ]];
                for job in &sample {
                    rows.push(vec![
                        job.id.to_string(),
                        job.state.to_string(),
                        job.kind.clone(),
                        job.queue.clone(),
                        self.style.ago(job.created_at),
                        job.last_error.clone().unwrap_or_default(),
                    ]);
                }
                write_table(out, &rows)?;
            }
            return say(out, "nothing changed; add --yes to act");
        }
        let now = self.now;
        let spool = Spool::at(&self.config.daemon.data_dir).ok();
        let mut acted: Vec<JobId> = Vec::new();
        let mut asked_to_stop = 0;
        let mut after = 0;
        loop {
            let chunk = db.matching_ids(&filter, states, after, BULK_CHUNK)?;
            let Some(&last) = chunk.last() else {
                break;
            };
            after = last;
            match action {
                Bulk::Retry => {
                    let revived = db.write(|tx| tx.revive_where_allowed(&chunk, now))?;
                    // After the commit, as `retry --dead` always did: a daemon that claims
                    // one first finds no file yet and retries it after its backoff.
                    if let Some(spool) = &spool {
                        for id in &revived {
                            restore_input(spool, *id);
                        }
                    }
                    acted.extend(revived);
                }
                Bulk::Cancel => {
                    let done = db.write(|tx| {
                        let mut done = Vec::new();
                        for id in &chunk {
                            match tx.cancel(*id, now) {
                                Ok(state) => done.push((*id, state)),
                                // Moved on since it was picked: left alone.
                                Err(StoreError::Forbidden(_) | StoreError::NotFound(_)) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(done)
                    })?;
                    asked_to_stop += done.iter().filter(|(_, s)| *s == JobState::Running).count();
                    acted.extend(done.into_iter().map(|(id, _)| id));
                }
                Bulk::Delete => {
                    let deleted = db.write(|tx| {
                        let n = tx.delete_where_allowed(&chunk)?;
                        Ok(n)
                    })?;
                    // Ids are not needed for deletes; count them.
                    acted.extend(std::iter::repeat_n(0, deleted));
                }
            }
        }
        if self.json {
            let mut value = json!({"action": action.verb(), "count": acted.len()});
            match action {
                Bulk::Retry => value["retried"] = json!(acted),
                Bulk::Cancel => {
                    value["cancelled"] = json!(acted);
                    value["asked_to_stop"] = json!(asked_to_stop);
                }
                Bulk::Delete => value["deleted"] = json!(acted.len()),
            }
            return print_json(out, &value);
        }
        match action {
            Bulk::Retry => say(
                out,
                &format!(
                    "{} job(s) queued again: {}",
                    acted.len(),
                    join_some_ids(&acted)
                ),
            ),
            Bulk::Cancel => say(
                out,
                &format!(
                    "{} job(s) cancelled ({asked_to_stop} of them running: asked to stop): {}",
                    acted.len(),
                    join_some_ids(&acted)
                ),
            ),
            Bulk::Delete => say(out, &format!("{} job(s) deleted", acted.len())),
        }
    }

    fn run_now(&self, ids: &[JobId], out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let now = self.now;
        db.write(|tx| {
            for id in ids {
                tx.run_now(*id, now)?;
            }
            Ok(())
        })
        .map_err(forbidden_as_failure)?;
        if self.json {
            return print_json(out, &json!({"due_now": ids}));
        }
        say(
            out,
            &format!("{} job(s) due now: {}", ids.len(), join_ids(ids)),
        )
    }

    fn pause(&self, queue: &str, reason: Option<&str>, out: &mut dyn Write) -> CtlResult {
        if queue.is_empty() {
            return Err(CtlError::Usage("the queue name is empty".into()));
        }
        let mut db = self.open()?;
        let now = self.now;
        let newly = db.write(|tx| tx.pause_queue(queue, reason, now))?;
        let live = db
            .stats(now)?
            .queues
            .get(queue)
            .map(|q| q.states.get("running").copied().unwrap_or(0))
            .unwrap_or(0);
        if self.json {
            return print_json(
                out,
                &json!({"queue": queue, "paused": true, "already_paused": !newly, "running": live}),
            );
        }
        let queue = safe_text::escape(queue);
        say(
            out,
            &if newly {
                format!("queue {queue} paused: nothing new is claimed from it; {live} running job(s) finish (jobctl resume {queue})")
            } else {
                format!("queue {queue} was paused already")
            },
        )
    }

    fn resume(&self, queue: &str, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let was = db.write(|tx| tx.resume_queue(queue))?;
        if self.json {
            return print_json(out, &json!({"queue": queue, "resumed": was}));
        }
        let queue = safe_text::escape(queue);
        if was {
            say(out, &format!("queue {queue} resumed"))
        } else {
            Err(CtlError::NotFound(format!("queue {queue} is not paused")))
        }
    }

    fn stats(&self, args: StatsArgs, out: &mut dyn Write) -> CtlResult {
        let format = match (args.format, self.json) {
            (Some(format), _) => format,
            (None, true) => StatsFormat::Json,
            (None, false) => StatsFormat::Text,
        };
        let db = self.open()?;
        if format == StatsFormat::Prometheus {
            let metrics = crate::metrics::DbMetrics::read(
                db.as_ref(),
                &self.config.daemon.data_dir,
                &self.config.destination_limits(),
                self.now,
            )?;
            return write!(out, "{}", crate::metrics::render(&metrics, None)).map_err(output_error);
        }
        let stats = db.stats(self.now)?;
        let pending = db.pending_folders()?;
        let not_taken = crate::ingest::report::read(&self.config.daemon.data_dir);
        if format == StatsFormat::Json {
            let mut value = serde_json::to_value(&stats).expect("stats serialize");
            value["incomplete_folders"] =
                serde_json::to_value(&pending).expect("folders serialize");
            value["not_taken_in"] = serde_json::to_value(&not_taken).expect("problems serialize");
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
        header.push("PAUSED".into());
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
                    .map(short_duration)
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(match q.paused_at {
                Some(at) => format!("since {}", format_millis(at)),
                None => "-".into(),
            });
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
                    short_duration(self.now - p.first_seen),
                    if p.missing.is_empty() {
                        "(settling)".into()
                    } else {
                        p.missing.join(", ")
                    },
                ]);
            }
            write_table(out, &rows)?;
        }
        if !not_taken.is_empty() {
            // Written by the daemon's watchers (src/ingest/report.rs); names are escaped.
            say(out, "")?;
            say(out, "not taken in from watched folders:")?;
            for p in &not_taken {
                say(
                    out,
                    &format!(
                        "  {} (for {}): {}",
                        crate::job::preview(&p.path),
                        humantime::format_duration(std::time::Duration::from_secs(
                            ((self.now - p.since).max(0) / 1000) as u64,
                        )),
                        crate::logging::escape_controls(&p.problem)
                    ),
                )?;
            }
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
        let info = Self::sqlite_file(db.as_ref(), "backup")?.backup_to(&args.path, args.force)?;
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
        let store = self.open()?;
        let db = Self::sqlite_file(store.as_ref(), "vacuum")?;
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
                self.style.time(cutoff)
            ),
        )
    }

    fn migrate(&self, out: &mut dyn Write) -> CtlResult {
        let db = crate::store::open(
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
        let problems = self.config.check_host();
        if !problems.is_empty() {
            return Err(CtlError::Failure(format!(
                "config {}: {}",
                self.source.describe(),
                problems
            )));
        }
        // Before the first start there is no database yet: the config alone is checked,
        // so `jobctl check` works as a pre-deploy check.
        if !self.database.exists() {
            if self.json {
                return print_json(
                    out,
                    &json!({
                        "config": {"source": self.source.describe(), "ok": true},
                        "database": {"path": self.database, "exists": false},
                    }),
                );
            }
            say(out, &format!("config {}: ok", self.source.describe()))?;
            return say(
                out,
                &format!(
                    "database {}: does not exist yet; checked the config only (jobd creates the database at its first start)",
                    self.database.display()
                ),
            );
        }
        if !self.json {
            say(out, &format!("config {}: ok", self.source.describe()))?;
        }
        let db = self.open()?;
        // A driver without a database file has no integrity check of its own to ask.
        let report = match db.sqlite() {
            Some(file) => file.integrity_check()?,
            None => Vec::new(),
        };
        let problems: Vec<String> = report.into_iter().filter(|l| l != "ok").collect();
        if !problems.is_empty() {
            return Err(CtlError::Database(format!(
                "database {} failed its integrity check: {}",
                self.database.display(),
                problems.join("; ")
            )));
        }
        let version = db.schema_version()?;
        if self.json {
            return print_json(
                out,
                &json!({
                    "config": {"source": self.source.describe(), "ok": true},
                    "database": {"path": self.database, "ok": true, "schema_version": version},
                }),
            );
        }
        say(
            out,
            &format!(
                "database {}: ok (schema version {version})",
                self.database.display(),
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

/// Jobs per transaction for `jobctl enqueue --file`: large enough that the commit costs
/// little per job, small enough that a bad line late in a big file loses little work.
const FILE_CHUNK: usize = 10_000;

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
    // A daemon that refuses the connection (too many connections, a uid it does not
    // admit) writes why and closes, so the write may fail: its reason is read anyway.
    let written = writeln!(stream, "{request}");
    let mut line = String::new();
    let read = std::io::BufReader::new(&stream).read_line(&mut line);
    if let Err(e) = written {
        if serde_json::from_str::<Value>(&line).is_ok_and(|a| a["ok"] == false) {
            return Ok(serde_json::from_str(&line).expect("just parsed"));
        }
        return Err(CtlError::Failure(format!(
            "cannot write to {}: {e}",
            path.display()
        )));
    }
    read.map_err(|e| CtlError::Failure(format!("no answer from {}: {e}", path.display())))?;
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
        if let Some(key) = &args.order_key {
            job["order_key"] = json!(key);
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
    fn top(&self, out: &mut dyn Write, clock: &dyn Clock) -> CtlResult {
        let db = self.open()?;
        let title = format!("jobd {}", self.database.display());
        if self.json {
            let snapshot = crate::top::Snapshot::read(db.as_ref(), self.now)?;
            return print_json(
                out,
                &json!({
                    "at": snapshot.at,
                    "stats": snapshot.stats,
                    "running": snapshot.running,
                    "recent_deaths": snapshot.deaths,
                }),
            );
        }
        if self.style.terminal {
            crate::top::run_live(db.as_ref(), self.style, &title, clock)
        } else {
            let snapshot = crate::top::Snapshot::read(db.as_ref(), self.now)?;
            for line in crate::top::snapshot_lines(&snapshot, &self.style, &title) {
                say(out, &line)?;
            }
            Ok(())
        }
    }

    fn manpage(&self, dir: Option<PathBuf>, out: &mut dyn Write) -> CtlResult {
        let Some(dir) = dir else {
            return crate::manual::manpage(out)
                .map_err(|e| CtlError::Failure(format!("cannot write output: {e}")));
        };
        let written = crate::manual::manpages_to(&dir)
            .map_err(|e| CtlError::Failure(format!("cannot write into {}: {e}", dir.display())))?;
        if self.json {
            return print_json(out, &json!({ "written": written }));
        }
        say(
            out,
            &format!("wrote {} man page(s) into {}", written.len(), dir.display()),
        )
    }

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

pub use crate::clock::parse_time;

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

/// Ids per write transaction of a bulk action: each one short, so the daemon's writer
/// never waits long.
const BULK_CHUNK: usize = 1000;
/// Jobs a bulk action's dry run shows.
const BULK_SAMPLE: usize = 10;
/// Lines of an exec attempt's stderr tail `show` prints.
const STDERR_LINES: usize = 20;

/// The bulk actions and the states each applies to, from `job.rs`.
#[derive(Debug, Clone, Copy)]
enum Bulk {
    Retry,
    Cancel,
    Delete,
}

impl Bulk {
    fn states(self) -> &'static [JobState] {
        match self {
            Bulk::Retry => crate::job::Transition::Revive.from_states(),
            Bulk::Cancel => crate::job::Transition::Cancel.from_states(),
            Bulk::Delete => &JobState::DELETABLE,
        }
    }

    fn done(self) -> &'static str {
        match self {
            Bulk::Retry => "retried",
            Bulk::Cancel => "cancelled",
            Bulk::Delete => "deleted",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Bulk::Retry => "retry",
            Bulk::Cancel => "cancel",
            Bulk::Delete => "delete",
        }
    }
}

fn name_the_jobs(verb: &str) -> CtlError {
    CtlError::Usage(format!(
        "name the jobs to {verb}: ids, or a filter (--state, --kind, --queue, --error-contains, --since, --until)"
    ))
}

fn ids_or_filter() -> CtlError {
    CtlError::Usage("give either job ids or filter flags, not both".into())
}

fn forbidden_as_failure(e: StoreError) -> CtlError {
    match e {
        StoreError::Forbidden(f) => CtlError::Failure(f.to_string()),
        other => other.into(),
    }
}

/// The first ids of a long list, and how many more.
fn join_some_ids(ids: &[JobId]) -> String {
    const SHOWN: usize = 20;
    if ids.len() <= SHOWN {
        join_ids(ids)
    } else {
        format!(
            "{}, ... ({} more)",
            join_ids(&ids[..SHOWN]),
            ids.len() - SHOWN
        )
    }
}

/// A handler's progress (`{"rows": 1200, "batches": 12}`) as `rows=1200 batches=12`.
fn progress_text(progress: &Value) -> String {
    match progress {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// An attempt's detail in a few words: an http exchange's status and URL, an exec
/// command's exit code or signal.
fn detail_text(detail: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(url) = detail.get("url").and_then(Value::as_str) {
        let method = detail.get("method").and_then(Value::as_str).unwrap_or("");
        let status = match detail.get("status").and_then(Value::as_u64) {
            Some(status) => format!("HTTP {status}"),
            None => "no answer".into(),
        };
        parts.push(format!("{status} {method} {url}"));
    }
    if let Some(code) = detail.get("exit_code").and_then(Value::as_i64) {
        parts.push(format!("exit code {code}"));
    }
    if let Some(signal) = detail.get("signal").and_then(Value::as_i64) {
        parts.push(format!("killed by signal {signal}"));
    }
    parts.join("; ")
}

/// A fan-out job's children: counts per state, percent done, rate and ETA.
fn children_text(summary: &crate::store::ChildrenSummary, now: UnixMillis) -> String {
    let states: Vec<String> = JobState::ALL
        .iter()
        .filter_map(|s| summary.states.get(s.as_str()).map(|n| format!("{n} {s}")))
        .collect();
    let percent = summary.finished as f64 * 100.0 / summary.total.max(1) as f64;
    let mut text = format!(
        "{} ({}); {percent:.0}% finished",
        summary.total,
        states.join(", ")
    );
    let remaining = summary.total - summary.finished;
    if let (Some(first), true) = (summary.first_created_at, summary.finished > 0) {
        // The rate over the time from the first child's creation to the last finish
        // (or now, while some are still live).
        let end = if remaining == 0 {
            summary.last_finished_at.unwrap_or(now)
        } else {
            now
        };
        let seconds = ((end - first).max(1)) as f64 / 1000.0;
        let rate = summary.finished as f64 / seconds;
        text.push_str(&format!(", {rate:.1}/s"));
        if remaining > 0 && rate > 0.0 {
            let eta = (remaining as f64 / rate).ceil() as u64;
            text.push_str(&format!(
                ", ETA {}",
                humantime::format_duration(std::time::Duration::from_secs(eta))
            ));
        }
    }
    text
}

/// A table fitted to the terminal and coloured by state as this run's style says.
fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> CtlResult {
    let now = SystemClock.now_ms();
    for line in crate::present::current(now).table(rows) {
        say(out, &line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_with_huge_and_hostile_cells_is_bounded_and_escaped() {
        let huge = "q".repeat(100_000);
        let rows = vec![
            vec!["A".to_string(), "B".into(), "C".into()],
            vec![huge.clone(), "x\u{1b}[2J\ny".to_string(), huge],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        for line in text.lines() {
            assert!(
                line.chars().count() <= 4 * safe_text::MAX_CELL + 4,
                "{}",
                line.len()
            );
        }
    }

    #[test]
    fn a_children_summary_has_counts_percent_rate_and_eta() {
        let summary = crate::store::ChildrenSummary {
            total: 100,
            states: [("succeeded".to_string(), 40), ("queued".to_string(), 60)].into(),
            finished: 40,
            first_created_at: Some(0),
            last_finished_at: Some(8_000),
        };
        // 40 finished in the 10 s since the first child was made: 4/s, 60 left: 15 s.
        assert_eq!(
            children_text(&summary, 10_000),
            "100 (60 queued, 40 succeeded); 40% finished, 4.0/s, ETA 15s"
        );
        let done = crate::store::ChildrenSummary {
            states: [("succeeded".to_string(), 100)].into(),
            finished: 100,
            ..summary
        };
        assert_eq!(
            children_text(&done, 99_000),
            "100 (100 succeeded); 100% finished, 12.5/s"
        );
    }

    #[test]
    fn a_closed_pipe_is_quiet_and_other_write_errors_are_failures() {
        let closed = output_error(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(closed.exit_code(), EXIT_OK);
        let full = output_error(std::io::Error::other("disk full"));
        assert_eq!(full.exit_code(), EXIT_FAILURE);
    }
}
