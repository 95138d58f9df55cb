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

mod admin;
mod args;
mod bulk;
mod destinations;
mod enqueue;
mod jobs;

pub use args::*;

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
    /// Copy every unfinished and dead job (with attempts), the sync state and the queue
    /// pauses from this (SQLite) database into an empty PostgreSQL one. Stop the daemon
    /// first.
    Copy(CopyArgs),
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
    let database = match &cli.db {
        // A URL given on the command line is kept by its masked name too, so no message
        // shows its password.
        Some(db) => match crate::dburl::postgres_url_of(db) {
            Some(url) => crate::dburl::register(&url.map_err(CtlError::Failure)?),
            None => db.clone(),
        },
        None => config.daemon.database.clone(),
    };
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
        CtlCommand::Copy(args) => ctl.copy(args, out),
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
}

fn read_stdin() -> Result<String, CtlError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CtlError::Usage(format!("cannot read the payload from standard input: {e}"))
    })?;
    Ok(text)
}

pub use crate::clock::parse_time;

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
    use super::jobs::children_text;
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
