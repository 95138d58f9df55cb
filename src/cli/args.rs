//! jobctl's command-line arguments: one clap struct per command, and the job filter
//! shared by `list` and the bulk actions.

use super::*;

/// `jobctl copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The PostgreSQL database: postgresql://user@host/db (it must hold no jobs yet).
    #[arg(long)]
    pub to: String,
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
pub(super) fn state_parser() -> impl clap::builder::TypedValueParser<Value = JobState> {
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
    pub(super) fn any(&self) -> bool {
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
