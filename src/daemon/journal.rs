//! The start journal: a file beside the database (`<database>.starts`) to which workers
//! append `(job, attempt, claim)` just before a handler starts. It lets recovery after a
//! crash tell the jobs whose handler started (charged) from those only claimed ahead
//! (given back uncharged) without a commit per start.
//!
//! Appends are one `write(2)` on an `O_APPEND` file and are not synced: they survive the
//! daemon's death (kill -9, a panic, the OOM killer) because the page cache does, but not
//! a power loss or a kernel crash. The database records each start too, a turn later and
//! durably, so after a power loss only the starts of the last moments can be missed;
//! their jobs then run again without being charged (still at least once).

use crate::files::create_private;
use crate::job::JobId;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Past this size the journal is rewritten with only the entries of jobs in flight.
const ROTATE_BYTES: u64 = 256 * 1024;

/// One handler start: the job, its attempt, and the claim that held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Start {
    pub job: JobId,
    pub attempt: u32,
    pub claim: i64,
}

impl Start {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.job, self.attempt, self.claim)
    }

    fn parse(line: &str) -> Option<Start> {
        let mut parts = line.split(' ');
        let start = Start {
            job: parts.next()?.parse().ok()?,
            attempt: parts.next()?.parse().ok()?,
            claim: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(start)
    }
}

/// The journal of the running daemon.
pub struct StartJournal {
    path: PathBuf,
    /// Appends share the file; a rotation swaps it while holding the lock exclusively,
    /// so no start is written to a file already replaced.
    file: RwLock<File>,
    bytes: AtomicU64,
}

impl StartJournal {
    pub fn path_for(database: &Path) -> PathBuf {
        let mut path = database.as_os_str().to_owned();
        path.push(".starts");
        PathBuf::from(path)
    }

    /// The starts an earlier daemon recorded (none if it left no journal). A line cut
    /// short or garbled is skipped: its write did not complete, so its handler had not
    /// started.
    pub fn read(path: &Path) -> io::Result<HashSet<Start>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
                .split_inclusive('\n')
                .filter_map(|line| line.strip_suffix('\n'))
                .filter_map(Start::parse)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e),
        }
    }

    /// Starts an empty journal, replacing what an earlier daemon left (call after
    /// recovery has read it).
    pub fn create(path: &Path) -> io::Result<StartJournal> {
        Ok(StartJournal {
            path: path.to_path_buf(),
            file: RwLock::new(open_empty(path)?),
            bytes: AtomicU64::new(0),
        })
    }

    /// Records a start; called by the worker just before the handler runs.
    pub fn append(&self, start: Start) -> io::Result<()> {
        let line = start.line();
        let file = self.file.read().unwrap_or_else(|e| e.into_inner());
        (&*file).write_all(line.as_bytes())?;
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn needs_rotation(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > ROTATE_BYTES
    }

    /// Replaces the journal with one holding only `live()`'s starts (the jobs still in
    /// flight), atomically: a crash leaves the old file or the new one. `live` is asked
    /// while appends are held back, so a start it does not list was never appended.
    pub fn rotate(&self, live: impl FnOnce() -> Vec<Start>) -> io::Result<()> {
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        let mut next_path = self.path.as_os_str().to_owned();
        next_path.push(".next");
        let next_path = PathBuf::from(next_path);
        let text: String = live().iter().map(Start::line).collect();
        let mut next = create_private(&next_path)?;
        next.write_all(text.as_bytes())?;
        drop(next);
        std::fs::rename(&next_path, &self.path)?;
        *file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes.store(text.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn open_empty(path: &Path) -> io::Result<File> {
    drop(create_private(path)?);
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(job: JobId, attempt: u32, claim: i64) -> Start {
        Start {
            job,
            attempt,
            claim,
        }
    }

    #[test]
    fn starts_read_back_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = StartJournal::path_for(&dir.path().join("jobs.db"));
        assert!(path.ends_with("jobs.db.starts"));
        assert!(StartJournal::read(&path).unwrap().is_empty());
        let journal = StartJournal::create(&path).unwrap();
        journal.append(start(1, 1, 7)).unwrap();
        journal.append(start(2, 3, 7)).unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"3 1 8\n4 1").unwrap();
        let read = StartJournal::read(&path).unwrap();
        let want: HashSet<Start> = [start(1, 1, 7), start(2, 3, 7), start(3, 1, 8)].into();
        assert_eq!(read, want);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn create_empties_an_old_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db.starts");
        std::fs::write(&path, "1 1 1\n").unwrap();
        let journal = StartJournal::create(&path).unwrap();
        assert!(StartJournal::read(&path).unwrap().is_empty());
        journal.append(start(5, 1, 2)).unwrap();
        assert_eq!(StartJournal::read(&path).unwrap(), [start(5, 1, 2)].into());
    }

    #[test]
    fn rotation_keeps_only_live_starts_and_later_appends_land_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db.starts");
        let journal = StartJournal::create(&path).unwrap();
        let mut n = 0;
        while !journal.needs_rotation() {
            n += 1;
            journal.append(start(n, 1, n)).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() > ROTATE_BYTES);
        journal.rotate(|| vec![start(n, 1, n)]).unwrap();
        assert!(!journal.needs_rotation());
        journal.append(start(n + 1, 2, n + 1)).unwrap();
        assert_eq!(
            StartJournal::read(&path).unwrap(),
            [start(n, 1, n), start(n + 1, 2, n + 1)].into()
        );
    }
}
