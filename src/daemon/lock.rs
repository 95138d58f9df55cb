//! One daemon per database: an exclusive lock on `<database>.lock` (which names the
//! holder's pid) and an exclusive flock on the database file itself, so every path to the
//! same file (a symlink, a hard link, `..` in the path) finds the lock. Both are held for
//! the life of the process and released by the kernel however the process ends.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Why the database lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds it; `how` says which lock and whose.
    #[error("another jobd is already running on {} ({how}); stop it first", database.display())]
    Held { database: PathBuf, how: String },
    /// The lock's files could not be opened or locked.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LockError {
    let path = path.to_path_buf();
    move |source| LockError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    _identity: IdentityLock,
    pub path: PathBuf,
}

/// A file's identity: the device and inode every name of it shares.
type FileId = (u64, u64);

/// The one descriptor per database file that this process flocks. It is never closed:
/// closing any descriptor of a file drops every POSIX lock the process holds on it, and
/// SQLite's own locks on the database are POSIX locks. Releasing is `flock(LOCK_UN)`.
struct IdentityFd {
    file: Arc<File>,
    held: bool,
}

fn identity_fds() -> &'static Mutex<HashMap<FileId, IdentityFd>> {
    static FDS: OnceLock<Mutex<HashMap<FileId, IdentityFd>>> = OnceLock::new();
    FDS.get_or_init(Default::default)
}

/// The flock on the database file, held until dropped.
#[derive(Debug)]
struct IdentityLock {
    id: FileId,
    file: Arc<File>,
}

impl Drop for IdentityLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        if let Some(fd) = identity_fds().lock().expect("lock table").get_mut(&self.id) {
            fd.held = false;
        }
    }
}

impl IdentityLock {
    /// Locks the database file, creating it (empty, 0640) if it does not exist yet.
    fn acquire(database: &Path) -> Result<IdentityLock, LockError> {
        let mut fds = identity_fds().lock().expect("lock table");
        // A descriptor this process opened on the file before is used again: opening a
        // second one would mean closing it some day.
        let known = std::fs::metadata(database)
            .ok()
            .map(|m| (m.dev(), m.ino()))
            .filter(|id| fds.contains_key(id));
        let id = match known {
            Some(id) => id,
            None => {
                // Read-only is enough for flock, and lets a database we may not write
                // be refused later by SQLite's check, with the reason.
                let opened = match File::open(database) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .mode(0o640)
                        .open(database),
                    other => other,
                }
                .map_err(io_error("open the database", database))?;
                let meta = opened
                    .metadata()
                    .map_err(io_error("stat the database", database))?;
                let id = (meta.dev(), meta.ino());
                fds.insert(
                    id,
                    IdentityFd {
                        file: Arc::new(opened),
                        held: false,
                    },
                );
                id
            }
        };
        let fd = fds.get_mut(&id).expect("just found or inserted");
        if fd.held {
            return Err(refused(database, None));
        }
        match fd.file.try_lock() {
            Ok(()) => {
                fd.held = true;
                Ok(IdentityLock {
                    id,
                    file: fd.file.clone(),
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(refused(database, flock_holder(id))),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", database)(e)),
        }
    }
}

fn refused(database: &Path, holder: Option<u32>) -> LockError {
    LockError::Held {
        database: database.to_path_buf(),
        how: format!(
            "the database file is locked{}, maybe under another name: a symlink or hard link",
            holder
                .map(|pid| format!(" by pid {pid}"))
                .unwrap_or_default()
        ),
    }
}

/// The pid holding an exclusive flock on the file `id`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, device in hex major:minor).
fn flock_holder((dev, ino): FileId) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let wanted = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

impl DatabaseLock {
    pub fn acquire(database: &Path) -> Result<DatabaseLock, LockError> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::create_private_dir_all(parent).map_err(io_error("create", parent))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .map_err(io_error("open lock file", &path))?;
        if let Err(e) = file.try_lock() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(match e {
                std::fs::TryLockError::WouldBlock => LockError::Held {
                    database: database.to_path_buf(),
                    how: format!(
                        "lock {} held{}",
                        path.display(),
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" by pid {holder}")
                        }
                    ),
                },
                std::fs::TryLockError::Error(e) => io_error("lock", &path)(e),
            });
        }
        // The path lock is ours; the file's own lock catches a daemon that named the
        // same database by another path.
        let identity = IdentityLock::acquire(database)?;
        file.set_len(0).ok();
        file.rewind().ok();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DatabaseLock {
            _file: file,
            _identity: identity,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_or_hard_link_to_a_locked_database_is_refused_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let held = DatabaseLock::acquire(&db).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&db, &hard).unwrap();
        for other in [&link, &hard] {
            let e = DatabaseLock::acquire(other).unwrap_err();
            assert!(matches!(e, LockError::Held { .. }), "{e}");
            assert!(
                e.to_string().contains("another jobd is already running"),
                "{e}"
            );
        }
        drop(held);
        // Released: another name may now take it.
        drop(DatabaseLock::acquire(&hard).unwrap());
    }
}
