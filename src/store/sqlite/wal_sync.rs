//! Syncing the WAL outside the commit: a connection whose commits do not wait for the
//! disk (`synchronous = NORMAL`), and a handle that makes everything it committed so far
//! durable with one `fdatasync` of the WAL file, on whichever thread calls it.
//!
//! In WAL mode a commit is durable once its frames are on the disk: that is all SQLite's
//! `synchronous = FULL` adds to NORMAL (NORMAL still syncs the WAL before a checkpoint
//! and the database after one, so it never corrupts). Syncing the same file from another
//! thread gives the same durability without holding the write lock through the sync,
//! and one sync covers every commit written before it began (group commit across turns).

use super::{Result, SqliteStore, StoreError};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Makes the WAL's committed frames durable. Shared between threads.
///
/// It holds the WAL file open for as long as the connection that commits to it: SQLite
/// deletes a WAL only when its last connection closes, so the file synced is the one the
/// commits went to.
pub struct WalSync {
    path: PathBuf,
    file: File,
}

impl WalSync {
    fn open(path: &Path) -> io::Result<WalSync> {
        Ok(WalSync::on_file(path, File::open(path)?))
    }

    /// Everything committed to the WAL before this call is on the disk when it returns
    /// `Ok`. An error means it may not be: the caller must not say otherwise, then or
    /// later (after a failed `fsync` Linux may drop the unwritten pages and report the
    /// next one clean).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle on an open file named `path`: the WAL, or in tests a file whose sync
    /// fails (`fdatasync` of a pipe fails with EINVAL).
    pub(crate) fn on_file(path: &Path, file: File) -> WalSync {
        WalSync {
            path: path.to_path_buf(),
            file,
        }
    }
}

impl SqliteStore {
    /// This connection's commits stop waiting for the disk (`synchronous = NORMAL`), and
    /// the returned handle makes them durable. The caller takes on what SQLite did in
    /// each commit: nothing the commit did may be reported done before a
    /// [`WalSync::sync`] that began after it has returned.
    pub fn sync_commits_elsewhere(&self) -> Result<WalSync> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let wal = self.wal_path();
        WalSync::open(&wal).map_err(|e| {
            StoreError::CannotOpen(
                self.path.clone(),
                format!("cannot open its WAL {} to sync it: {e}", wal.display()),
            )
        })
    }
}
