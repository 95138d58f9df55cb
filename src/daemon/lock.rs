//! One daemon per database: an exclusive lock on `<database>.lock`, held for the life of
//! the process and released by the kernel however the process ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    pub path: PathBuf,
}

impl DatabaseLock {
    pub fn acquire(database: &Path) -> Result<DatabaseLock, String> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
        if let Err(e) = file.try_lock() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(match e {
                std::fs::TryLockError::WouldBlock => format!(
                    "another jobd is already running on {} (lock {} held{}); stop it first",
                    database.display(),
                    path.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" by pid {holder}")
                    }
                ),
                std::fs::TryLockError::Error(e) => {
                    format!("cannot lock {}: {e}", path.display())
                }
            });
        }
        file.set_len(0).ok();
        file.rewind().ok();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DatabaseLock { _file: file, path })
    }
}
