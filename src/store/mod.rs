//! The only place with SQL. Opens the queue database, applies migrations, and offers the
//! queue's transitions (`queue.rs`), the operator's queries (`admin.rs`) and controls
//! (`operator.rs`: pauses, bulk actions, progress) in domain types,
//! so another backend could sit behind the same API.

mod admin;
mod api;
pub mod example;
mod ingest;
mod live;
mod maintenance;
mod operator;
pub mod postgres;
mod queue;
pub mod schema;
pub mod sink;
mod sync;
pub mod web;

pub use admin::{Attempt, JobFilter, QueueStats, Stats};
pub use api::{BackupInfo, Checkpoint, CheckpointMode, Finished, SqliteFile, Store, StoreTx};
pub use ingest::{IngestRecord, PendingFolder};
pub use live::{Death, RunningJob};
pub use operator::{AttemptProgress, ChildrenSummary, QueuePause};
pub use queue::{Applied, ClaimSpec, Enqueued, HeldClaim, Tx};
pub use sync::{SyncState, SyncStateReader};

use crate::config::Synchronous;
use crate::job::{ForbiddenTransition, JobId};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
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
    /// A file operation around the database (a backup's copy, its rename).
    #[error("{0}")]
    Io(String),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// An error from the PostgreSQL server or the connection to it (never names the
    /// URL's password).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
}

/// "database PATH is", or "the database is" where the path is not known.
fn read_only_subject(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "the database is".into()
    } else {
        format!("database {} is", path.display())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(PathBuf::new(), e.to_string()),
            _ => StoreError::Sqlite(e),
        }
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
            rusqlite::version()
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

/// One connection to the queue database. The daemon has exactly one for writing, fed by
/// its dispatcher; jobctl opens its own.
pub struct Db {
    conn: Connection,
    path: PathBuf,
    /// The configured busy timeout, restored after a checkpoint waited less.
    busy_timeout: Duration,
}

impl Db {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Db> {
        if !options.create && !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        if options.create {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::files::create_private_dir_all(parent).map_err(|e| {
                    StoreError::CannotOpen(
                        path.to_path_buf(),
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if options.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let existed = path.exists();
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::CannotOpen(path.to_path_buf(), e.to_string()))?;
        if !existed {
            restrict_permissions(path);
        }
        let db = Db {
            conn,
            path: path.to_path_buf(),
            busy_timeout: options.busy_timeout,
        };
        db.configure(options)?;
        if options.migrate {
            schema::migrate(&db.conn)?;
        } else {
            schema::check_version(&db.conn)?;
        }
        Ok(db)
    }

    fn configure(&self, options: &OpenOptions) -> Result<()> {
        self.conn.busy_timeout(options.busy_timeout)?;
        // The first read of a file that is not SQLite fails here, with NOTADB.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::CannotOpen(
                self.path.clone(),
                format!("cannot switch to WAL mode (journal_mode is {mode})"),
            ));
        }
        // A larger page cache keeps the hot index pages of a big table in memory; temp
        // B-trees (IN lists, RETURNING) stay in memory too.
        self.conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; PRAGMA cache_size = -65536; \
             PRAGMA temp_store = MEMORY;",
            options.synchronous.pragma_value()
        ))?;
        self.conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a database this process cannot write: SQLite opens a file it may not
    /// write (mode 0444 for us, an immutable file, a read-only mount) read-only without
    /// a word, and every write would fail later. Takes and gives back the write lock.
    pub fn check_writable(&self) -> Result<()> {
        let read_only = |why: String| {
            StoreError::ReadOnly(
                self.path.clone(),
                format!(
                    "{why} (uid {}); check the file's mode and owner, its folder and its mount",
                    // SAFETY: getuid(2) cannot fail and touches no memory.
                    unsafe { libc::getuid() }
                ),
            )
        };
        if self.conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(read_only("SQLite could open it for reading only".into()));
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| read_only(format!("cannot take the write lock: {e}")))
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction: the write lock is taken up front,
    /// so waiting for it honours the busy timeout and no read-then-write upgrade can fail.
    pub fn write<T>(&mut self, work: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let name_disk_full = move |e: StoreError| match e {
            StoreError::DiskFull(m) => {
                StoreError::DiskFull(format!("cannot write {}: {m}", path.display()))
            }
            other => other,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let wrapped = Tx::new(&tx);
        let value = work(&wrapped).map_err(&name_disk_full)?;
        tx.commit()
            .map_err(|e| name_disk_full(StoreError::from(e)))?;
        Ok(value)
    }

    /// Changes whenever another connection commits to the database: the cheap way to
    /// notice rows inserted by jobctl or sqlite3 without scanning the table.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// `PRAGMA quick_check`: "ok", or what is wrong.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn schema_version(&self) -> Result<i64> {
        schema::user_version(&self.conn)
    }
}

/// Files the daemon writes are not world-readable.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640));
}
