//! The only place with SQL. The [`Store`] trait (`api.rs`) is the queue in domain types:
//! its transitions, the operator's queries and controls; [`web::WebReads`] adds the web
//! page's reads. Drivers implement both (`sqlite/`: one file, one daemon; `postgres/`:
//! several daemons on one database); [`open`] and its read-only siblings are the one
//! place that picks the driver for the configured database.

mod api;
pub mod postgres;
mod sqlite;
mod sync;
mod types;
pub mod web;

pub use api::{
    BackupInfo, Checkpoint, CheckpointMode, Finished, SqliteFile, Store, StoreTx, WakeHook,
};
pub use sqlite::wal_sync::WalSync;
pub use sqlite::{example, schema, sink};
pub use sync::SyncStateReader;
pub(crate) use types::{stored_items, validate_all, ParentLink};
pub use types::{
    Applied, Attempt, AttemptProgress, ChildrenSummary, ClaimSpec, Claimed, Death, DestinationHold,
    Enqueued, HeldClaim, IngestRecord, JobFilter, PendingFolder, QueuePause, QueueStats,
    RunningJob, Stats, SyncState,
};

use crate::config::Synchronous;
use crate::job::{ForbiddenTransition, JobId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong with the queue database, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {0} does not exist (start jobd, or create it with `jobctl migrate`)")]
    Missing(PathBuf),
    #[error("database {0}: cannot open: {1}")]
    CannotOpen(PathBuf, String),
    #[error(
        "database is busy: another process held the write lock for longer than the busy timeout"
    )]
    Busy,
    #[error("database is corrupt or not a jobd database: {0}")]
    Corrupt(String),
    #[error("the disk is full: {0}")]
    DiskFull(String),
    #[error("{subject} read-only for this process: {1}", subject = read_only_subject(.0))]
    ReadOnly(PathBuf, String),
    #[error(
        "database schema version {found} is newer than this jobd knows ({known}); upgrade jobd"
    )]
    TooNew { found: i64, known: i64 },
    #[error("database schema version {found} is older than {known}: run `jobctl migrate` (jobd migrates at start)")]
    Outdated { found: i64, known: i64 },
    /// A migration found rows it cannot carry over; nothing was changed.
    #[error("database schema upgrade refused: {0}")]
    MigrationRefused(String),
    #[error("job {0} not found")]
    NotFound(JobId),
    /// A guarded update changed another number of rows than the one it was checked to
    /// change: the transaction is rolled back rather than reporting a move that did not
    /// happen.
    #[error("job {id}: {action} changed {changed} row(s) instead of 1; nothing was changed")]
    RowsChanged {
        id: JobId,
        action: &'static str,
        changed: usize,
    },
    #[error(transparent)]
    Forbidden(#[from] ForbiddenTransition),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// SQLite rolled back a whole write transaction after an error inside it (a full
    /// disk, an I/O error); nothing of it was written.
    #[error("the database rolled back the whole write after {0}; nothing of it was written")]
    RolledBack(String),
    /// A file operation around the database (a backup's copy, its rename).
    #[error("{0}")]
    Io(String),
    /// Any other failure of the database driver, in its own words.
    #[error("database error: {0}")]
    Backend(String),
    /// An error from the PostgreSQL server or the connection to it (never names the
    /// URL's password).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
}

/// "database PATH is", or "the database is" where the path is not known.
/// The least string greater than every string that starts with `prefix`, byte by byte
/// (`"a:"` → `"a;"`): the end of a range scan over a prefix.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut end: Vec<char> = prefix.chars().collect();
    while let Some(last) = end.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            _ => char::from_u32(last as u32 + 1),
        };
        if let Some(next) = next {
            end.push(next);
            return end.into_iter().collect();
        }
    }
    // Empty (or only the last code point): every string is in range.
    char::MAX.to_string().repeat(prefix.len().max(1))
}

fn read_only_subject(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "the database is".into()
    } else {
        format!("database {} is", path.display())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The version line of `jobd --version` and `jobctl --version`: this build and the
/// SQLite library bundled in it (outside writers bring their own; see the README).
pub fn version_text() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (bundled SQLite {})",
            env!("CARGO_PKG_VERSION"),
            sqlite::library_version()
        )
    });
    &TEXT
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    /// Create the file if it is missing (the daemon, `jobctl migrate`).
    pub create: bool,
    /// Apply pending migrations; otherwise an outdated schema is refused.
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            synchronous: Synchronous::Full,
            busy_timeout: crate::config::DEFAULT_BUSY_TIMEOUT,
            create: false,
            migrate: false,
        }
    }
}

/// Opens the configured database with the driver it names: the only place that picks
/// one: a `postgresql://` URL (or the masked name [`crate::dburl::register`] gave it)
/// opens PostgreSQL, a path a SQLite file.
pub fn open(database: &Path, options: &OpenOptions) -> Result<Box<dyn Store>> {
    if let Some(url) = crate::dburl::postgres_url_of(database) {
        let url = url.map_err(|e| StoreError::CannotOpen(database.to_path_buf(), e))?;
        let options = postgres::process_options(options.migrate);
        return Ok(Box::new(postgres::PgStore::open(&url, options)?));
    }
    Ok(Box::new(sqlite::SqliteStore::open(database, options)?))
}

/// Opens a connection that only reads (the daemon's reader, metrics, the web page): it
/// never takes the write lock and never migrates; an outdated schema is refused.
pub fn open_read(database: &Path, options: &OpenOptions) -> Result<Box<dyn Store>> {
    Ok(open_web_reads(database, options)?)
}

/// A read connection ([`open_read`]) opened when first asked for and kept, for the
/// daemon's helper threads (STATUS=, the metrics textfile): a database that cannot be
/// opened yet costs them one refresh, not their start. After a failure the next call
/// tries again.
pub struct ReadOnFirstUse {
    database: PathBuf,
    options: OpenOptions,
    db: Option<Box<dyn Store>>,
}

impl ReadOnFirstUse {
    pub fn new(database: PathBuf, busy_timeout: Duration) -> ReadOnFirstUse {
        ReadOnFirstUse {
            database,
            options: OpenOptions {
                busy_timeout,
                ..OpenOptions::default()
            },
            db: None,
        }
    }

    /// The connection, opening it if it is not open yet.
    pub fn get(&mut self) -> Result<&dyn Store> {
        if self.db.is_none() {
            self.db = Some(open_read(&self.database, &self.options)?);
        }
        Ok(self.db.as_deref().expect("opened above"))
    }
}

/// [`open_read`] with the web page's own reads ([`web::WebReads`]) on the connection.
pub fn open_web_reads(database: &Path, options: &OpenOptions) -> Result<Box<dyn web::WebReads>> {
    if let Some(url) = crate::dburl::postgres_url_of(database) {
        let url = url.map_err(|e| StoreError::CannotOpen(database.to_path_buf(), e))?;
        return Ok(Box::new(postgres::PgStore::open(
            &url,
            postgres::process_options(false),
        )?));
    }
    Ok(Box::new(sqlite::SqliteStore::open_read_only(
        database,
        options.busy_timeout,
    )?))
}
