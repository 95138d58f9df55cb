//! What the watchers see in their folders but do not take in: entries they ignore on
//! purpose (symlinks, names that are not valid UTF-8, FIFOs and other non-files) and
//! files they cannot read yet. Kept in `<data_dir>/watch-problems.json`, rewritten
//! atomically on each change, so `jobctl stats` shows them whether or not the daemon runs.

use crate::job::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The report's file name under the data directory.
pub const FILE: &str = "watch-problems.json";

/// One entry a watcher does not take in, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The watched folder.
    pub watch: String,
    /// The entry's path (lossy when it is not UTF-8).
    pub path: String,
    /// Why it is not taken in, for people.
    pub problem: String,
    /// When the watcher first saw it so.
    pub since: UnixMillis,
}

/// The report, shared by every watcher of the daemon.
#[derive(Debug, Clone)]
pub struct WatchReport {
    file: PathBuf,
    entries: Arc<Mutex<BTreeMap<(String, String), Problem>>>,
}

impl WatchReport {
    /// Starts an empty report in `data_dir` (what a previous run saw is found again).
    pub fn open(data_dir: &Path) -> WatchReport {
        let report = WatchReport {
            file: data_dir.join(FILE),
            entries: Default::default(),
        };
        report.write(&BTreeMap::new());
        report
    }

    /// Records or updates a problem. Returns whether it was new (so it is logged once).
    pub fn set(&self, problem: Problem) -> bool {
        let mut entries = self.entries.lock().expect("report lock");
        let key = (problem.watch.clone(), problem.path.clone());
        let new = !entries.contains_key(&key);
        if entries.get(&key).map(|p| &p.problem) != Some(&problem.problem) {
            entries.insert(key, problem);
            self.write(&entries);
        }
        new
    }

    /// Forgets an entry (gone, or taken in after all).
    pub fn clear(&self, watch: &str, path: &str) {
        let mut entries = self.entries.lock().expect("report lock");
        if entries
            .remove(&(watch.to_string(), path.to_string()))
            .is_some()
        {
            self.write(&entries);
        }
    }

    fn write(&self, entries: &BTreeMap<(String, String), Problem>) {
        let list: Vec<&Problem> = entries.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).expect("problems serialize");
        let result = crate::files::write_atomic(&self.file, &bytes);
        if let Err(e) = result {
            tracing::warn!("cannot write {}: {e}", self.file.display());
        }
    }
}

/// The problems the daemon last reported for `data_dir` (none if it never wrote any).
pub fn read(data_dir: &Path) -> Vec<Problem> {
    std::fs::read(data_dir.join(FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_written_once_each_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let report = WatchReport::open(dir.path());
        assert_eq!(read(dir.path()), vec![]);
        let problem = Problem {
            watch: "/in".into(),
            path: "/in/link.csv".into(),
            problem: "a symlink".into(),
            since: 5,
        };
        assert!(report.set(problem.clone()));
        assert!(!report.set(problem.clone()));
        assert_eq!(read(dir.path()), vec![problem]);
        report.clear("/in", "/in/link.csv");
        assert_eq!(read(dir.path()), vec![]);
    }
}
