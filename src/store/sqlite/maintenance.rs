//! Keeping the database file healthy while it runs for months: WAL checkpoints (the
//! daemon's policy that keeps the WAL bounded), online backups, `VACUUM`, and the file
//! sizes the policy and the operator look at.

use super::{Result, SqliteStore, StoreError};
use crate::store::{BackupInfo, Checkpoint, CheckpointMode};
use rusqlite::backup::Backup;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl CheckpointMode {
    fn sql(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CheckpointMode::Full => "PRAGMA wal_checkpoint(FULL)",
            CheckpointMode::Restart => "PRAGMA wal_checkpoint(RESTART)",
            CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        }
    }
}

impl SqliteStore {
    /// Runs a checkpoint, waiting at most `wait` for readers and writers (the connection's
    /// busy timeout is restored afterwards). A checkpoint that cannot finish is reported
    /// as `busy`, not as an error.
    pub fn checkpoint(&self, mode: CheckpointMode, wait: Duration) -> Result<Checkpoint> {
        // Every mode but PASSIVE takes the write lock: wait for this process's writers
        // on the gate, not in the busy handler's sleeps.
        let _turn = match mode {
            CheckpointMode::Passive => None,
            _ => self.gate.as_ref().and_then(|g| g.enter(wait)),
        };
        self.conn.busy_timeout(wait)?;
        let result = self.conn.query_row(mode.sql(), [], |row| {
            Ok(Checkpoint {
                busy: row.get::<_, i64>(0)? != 0,
                log_frames: row.get(1)?,
                checkpointed_frames: row.get(2)?,
            })
        });
        self.conn.busy_timeout(self.busy_timeout)?;
        match result {
            Ok(checkpoint) => Ok(checkpoint),
            // Some SQLite builds report a blocked checkpoint as SQLITE_BUSY instead of busy=1.
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                Ok(Checkpoint {
                    busy: true,
                    log_frames: -1,
                    checkpointed_frames: -1,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops this connection from checkpointing after its commits; another connection
    /// (the daemon's checkpointer) does it instead.
    pub fn disable_auto_checkpoint(&self) -> Result<()> {
        let _: i64 = self
            .conn
            .query_row("PRAGMA wal_autocheckpoint = 0", [], |row| row.get(0))?;
        Ok(())
    }

    /// After a checkpoint lets the WAL start over, SQLite cuts the file back to this size,
    /// so one burst does not leave a huge WAL file behind for good.
    pub fn set_journal_size_limit(&self, bytes: u64) -> Result<()> {
        let _: i64 = self.conn.query_row(
            &format!("PRAGMA journal_size_limit = {}", bytes.min(i64::MAX as u64)),
            [],
            |row| row.get(0),
        )?;
        Ok(())
    }

    pub fn wal_path(&self) -> PathBuf {
        sibling(&self.path, "-wal")
    }

    /// The WAL file's size in bytes (0 when there is none).
    pub fn wal_size(&self) -> u64 {
        file_size(&self.wal_path())
    }

    /// Bytes one WAL frame takes: a page and its 24-byte header.
    pub fn wal_frame_size(&self) -> Result<u64> {
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))?;
        Ok(page.max(0) as u64 + 24)
    }

    /// The database file's size in bytes, WAL not included.
    pub fn file_size(&self) -> u64 {
        file_size(&self.path)
    }

    /// Writes a consistent copy of the live database to `dest` while other connections
    /// (the daemon) keep writing. The copy is made in one step of the online backup API,
    /// i.e. inside one read transaction, so it is one snapshot and never restarts because
    /// of concurrent writes; WAL readers do not block the writer. The copy is written to a
    /// temporary file beside `dest` (mode 0600), switched to a self-contained rollback
    /// journal, synced, and only then given its name. Without `replace`, an existing
    /// `dest` is never overwritten, not even by a race.
    pub fn backup_to(&self, dest: &Path, replace: bool) -> Result<BackupInfo> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
        if !replace && dest.exists() {
            return Err(StoreError::Io(format!(
                "{} already exists; pass --force to replace it",
                dest.display()
            )));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| StoreError::Io(format!("{} is not a file name", dest.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&format!("cannot create {}", tmp.display()), e))?;
        let result = self.backup_into(&tmp);
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(sibling(&tmp, "-journal"));
                return Err(e);
            }
        };
        let placed = if replace {
            std::fs::rename(&tmp, dest)
        } else {
            // A hard link fails if `dest` appeared meanwhile; rename would replace it.
            std::fs::hard_link(&tmp, dest).and_then(|()| std::fs::remove_file(&tmp))
        };
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&format!("cannot write {}", dest.display()), e));
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(BackupInfo {
            path: dest.to_path_buf(),
            bytes: file_size(dest),
            ..info
        })
    }

    fn backup_into(&self, tmp: &Path) -> Result<BackupInfo> {
        let mut copy = Connection::open(tmp)?;
        {
            use rusqlite::backup::StepResult;
            let backup = Backup::new(&self.conn, &mut copy)?;
            // -1: every page in one step, so the source is read in one transaction (a
            // step-by-step copy restarts whenever the daemon commits, and it always does).
            let deadline = std::time::Instant::now() + self.busy_timeout;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => continue,
                    _ if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => return Err(StoreError::Busy),
                }
            }
        }
        let mode: String = copy.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError::Io(format!(
                "the backup copy stayed in journal mode {mode}"
            )));
        }
        let jobs: u64 = copy.query_row("SELECT count(*) FROM jobs", [], |row| row.get(0))?;
        let schema_version = super::schema::user_version(&copy)?;
        drop(copy);
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Io(format!("cannot sync {}: {e}", tmp.display())))?;
        Ok(BackupInfo {
            path: tmp.to_path_buf(),
            bytes: file_size(tmp),
            jobs,
            schema_version,
        })
    }

    /// Rebuilds the database file without free pages, then truncates the WAL the rebuild
    /// filled. Holds the write lock throughout: the daemon's writes wait (and, past the
    /// busy timeout, are held in its memory and retried).
    pub fn vacuum(&self) -> Result<()> {
        self.conn.execute_batch("VACUUM")?;
        self.checkpoint(CheckpointMode::Truncate, self.busy_timeout)?;
        Ok(())
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
