//! Watched folders: one thread per `[[watch]]` that notices files (inotify through
//! `notify`, a start-up scan and a periodic rescan), waits until each is complete, and
//! hands it to the spool protocol (`spool.rs`), which makes its job.
//!
//! Complete means: renamed into the folder (write-then-rename, taken at once), or size
//! and mtime unchanged for `settle`. Folder sets (`mode = "dir"`) are complete when every
//! required file is there and settled, or when the marker appears; until then they are
//! recorded as pending (visible in `jobctl stats`) and after `incomplete_timeout` become a
//! dead job naming the missing files.
//!
//! What is never taken in still ends where an operator sees it: a file that cannot be
//! read is tried again every 5 s and, after `unreadable_timeout`, moved to failed/ as a
//! dead job with the reason; symlinks (never followed), names that are not valid UTF-8
//! and FIFOs or other non-files are logged once and listed in `jobctl stats` (through
//! [`super::report`]) for as long as they are there.

mod sets;
mod unreadable;

use super::report::{Problem, WatchReport};
use super::spool::{digest, PendingCommit, Spool, StageMeta, Staged, Taken};
use crate::clock::{Moment, SharedClock};
use crate::config::{WatchConfig, WatchMode};
use crate::daemon::DaemonClient;
use crate::job::{NewJob, UnixMillis};
use crate::store::Store;
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How long an input that could not be read or moved waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The most inputs taken in one go, so acknowledgements keep flowing in a flood.
const MAX_TAKE: usize = 1024;

/// Whether a name is one a producer uses while it is still writing, or hidden.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".partial"]
            .iter()
            .any(|suffix| name.to_ascii_lowercase().ends_with(suffix))
}

/// Makes sure a watched folder exists: creates it if allowed, or says why it cannot.
/// Returns its absolute path.
pub fn prepare_folder(key: &str, watch: &WatchConfig) -> Result<PathBuf, String> {
    let path = &watch.path;
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{key}.path: {} is not a folder", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound && watch.create => {
            crate::files::create_private_dir_all(path).map_err(|e| {
                format!(
                    "{key}.path: {} is missing and cannot be created: {e}",
                    path.display()
                )
            })?;
            tracing::info!("created the watched folder {}", path.display());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{key}.path: {} does not exist (and create = false)",
                path.display()
            ))
        }
        Err(e) => return Err(format!("{key}.path: {}: {e}", path.display())),
    }
    fs::canonicalize(path).map_err(|e| format!("{key}.path: {}: {e}", path.display()))
}

/// A file seen in file mode, waiting to be complete.
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    since: Moment,
    renamed_in: bool,
    retry_at: Option<Moment>,
    /// When reading it first failed (clock time), for `unreadable_timeout`.
    failing_since: Option<UnixMillis>,
}

/// A subfolder seen in dir mode.
struct FolderSeen {
    signature: Vec<(String, u64, Option<SystemTime>)>,
    since: Moment,
    first_seen: UnixMillis,
    recorded_missing: Option<Vec<String>>,
    retry_at: Option<Moment>,
    /// When reading it first failed (clock time), for `unreadable_timeout`.
    failing_since: Option<UnixMillis>,
}

pub struct FolderWatcher {
    key: String,
    config: WatchConfig,
    root: PathBuf,
    watch_name: String,
    matcher: globset::GlobMatcher,
    client: DaemonClient,
    clock: SharedClock,
    spool: Spool,
    files: HashMap<PathBuf, Seen>,
    folders: HashMap<String, FolderSeen>,
    /// Staged inputs whose commit failed; driven again on the next rescan.
    stuck: Vec<String>,
    next_rescan: Moment,
    /// What this folder holds but does not take in, as `jobctl stats` shows it.
    report: WatchReport,
    /// Entries reported as ignored, so each is logged once.
    ignored: HashSet<PathBuf>,
}

/// Starts the thread watching one folder. `db` is a read connection for the folder
/// sets already pending.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    key: String,
    config: WatchConfig,
    root: PathBuf,
    client: DaemonClient,
    clock: SharedClock,
    spool: Spool,
    db: &dyn Store,
    stop: Arc<AtomicBool>,
    report: WatchReport,
) -> Result<JoinHandle<()>, String> {
    let (tx, events) = mpsc::channel();
    let mut notifier = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .map_err(|e| format!("{key}: cannot watch {}: {e}", root.display()))?;
    let mode = if config.recursive && config.mode == WatchMode::File {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    notifier
        .watch(&root, mode)
        .map_err(|e| format!("{key}: cannot watch {}: {e}", root.display()))?;
    let matcher = globset::GlobBuilder::new(&config.pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| format!("{key}.pattern: {e}"))?
        .compile_matcher();
    let watch_name = root.display().to_string();
    let mut folders = HashMap::new();
    if config.mode == WatchMode::Dir {
        for pending in db.pending_folders().unwrap_or_default() {
            if pending.watch == watch_name {
                folders.insert(
                    pending.folder,
                    FolderSeen {
                        signature: Vec::new(),
                        since: clock.monotonic(),
                        first_seen: pending.first_seen,
                        recorded_missing: Some(pending.missing),
                        retry_at: None,
                        failing_since: None,
                    },
                );
            }
        }
    }
    let mut watcher = FolderWatcher {
        key: key.clone(),
        config,
        root,
        watch_name,
        matcher,
        client,
        clock: clock.clone(),
        spool,
        files: HashMap::new(),
        folders,
        stuck: Vec::new(),
        next_rescan: clock.monotonic(),
        report,
        ignored: HashSet::new(),
    };
    std::thread::Builder::new()
        .name(format!("jobd-{key}"))
        .spawn(move || {
            let _keep = notifier;
            watcher.run(&events, &stop);
        })
        .map_err(|e| format!("{key}: cannot start its thread: {e}"))
}

impl FolderWatcher {
    fn run(&mut self, events: &mpsc::Receiver<notify::Result<notify::Event>>, stop: &AtomicBool) {
        let tick =
            (self.config.settle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        tracing::info!(
            "{}: watching {} ({}, settle {})",
            self.key,
            self.root.display(),
            match self.config.mode {
                WatchMode::File => format!("files matching {}", self.config.pattern),
                WatchMode::Dir => "folder sets".to_string(),
            },
            humantime::format_duration(self.config.settle)
        );
        while !stop.load(Ordering::SeqCst) {
            let wait = tick.min(
                self.next_rescan
                    .saturating_duration_since(self.clock.monotonic()),
            );
            match events.recv_timeout(wait) {
                Ok(event) => self.note(event),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(event) = events.try_recv() {
                self.note(event);
            }
            if self.clock.monotonic() >= self.next_rescan {
                self.rescan();
                self.next_rescan = self.clock.monotonic() + self.config.rescan;
            }
            match self.config.mode {
                WatchMode::File => self.take_ready_files(),
                WatchMode::Dir => self.check_folders(),
            }
        }
    }

    /// A kernel notification: remember the path; a rename into the folder is complete.
    fn note(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // Overflow and the like: what was missed is found by listing again.
                tracing::warn!("{}: notification error ({e}); rescanning", self.key);
                self.next_rescan = self.clock.monotonic();
                return;
            }
        };
        if event.need_rescan() {
            self.next_rescan = self.clock.monotonic();
        }
        let renamed_in = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        let Some(path) = event.paths.last().cloned() else {
            return;
        };
        match self.config.mode {
            WatchMode::File => {
                if matches!(event.kind, EventKind::Remove(_)) {
                    self.files.remove(&path);
                    return;
                }
                if path.is_dir() {
                    // A folder moved in brings files no event announced.
                    if self.config.recursive {
                        self.next_rescan = self.clock.monotonic();
                    }
                    return;
                }
                self.consider_file(path, renamed_in);
            }
            WatchMode::Dir => {
                if let Ok(rest) = path.strip_prefix(&self.root) {
                    if let Some(first) = rest.components().next() {
                        let name = first.as_os_str().to_string_lossy().into_owned();
                        self.consider_folder(name);
                    }
                }
            }
        }
    }

    fn wanted_name(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if is_ignored(name) || !self.matcher.is_match(name) {
            return false;
        }
        // Nothing inside a hidden folder either (our own copies, editors' swap dirs).
        path.strip_prefix(&self.root).is_ok_and(|rest| {
            rest.components()
                .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
        })
    }

    fn consider_file(&mut self, path: PathBuf, renamed_in: bool) {
        if !self.config.recursive && path.parent() != Some(self.root.as_path()) {
            return;
        }
        if let Some(why) = self.never_taken(&path) {
            self.ignore(&path, why);
            return;
        }
        if !self.wanted_name(&path) {
            return;
        }
        let now = self.clock.monotonic();
        let seen = self.files.entry(path).or_insert(Seen {
            size: u64::MAX,
            mtime: None,
            since: now,
            renamed_in: false,
            retry_at: None,
            failing_since: None,
        });
        if renamed_in {
            seen.renamed_in = true;
        }
    }

    /// Why an entry the pattern would take is never taken in: a name that is not valid
    /// UTF-8 (payloads and the database hold text), a symlink (following one could take
    /// in any file the daemon can read) or something that is not a regular file.
    fn never_taken(&self, path: &Path) -> Option<&'static str> {
        let name = path.file_name()?;
        if name.to_str().is_none() {
            let hidden = name.as_encoded_bytes().first() == Some(&b'.');
            return (!hidden && self.matcher.is_match(name))
                .then_some("its name is not valid UTF-8; rename it to take it in");
        }
        if !self.wanted_name(path) {
            return None;
        }
        let kind = fs::symlink_metadata(path).ok()?.file_type();
        if kind.is_symlink() {
            Some("a symlink: links in watched folders are never followed; move the file itself in")
        } else if !kind.is_file() && !kind.is_dir() {
            Some("not a regular file (a FIFO, socket or device)")
        } else {
            None
        }
    }

    /// Logs an ignored entry once and lists it in the report while it is there.
    fn ignore(&mut self, path: &Path, why: &str) {
        if !self.ignored.insert(path.to_path_buf()) {
            return;
        }
        tracing::warn!(
            "{}: not taking in {}: {why}",
            self.key,
            crate::job::preview(&path.to_string_lossy())
        );
        self.report.set(Problem {
            watch: self.watch_name.clone(),
            path: path.to_string_lossy().into_owned(),
            problem: why.to_string(),
            since: self.clock.now_ms(),
        });
    }

    /// Forgets ignored entries that are gone.
    fn forget_gone(&mut self) {
        let gone: Vec<PathBuf> = self
            .ignored
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_err())
            .cloned()
            .collect();
        for path in gone {
            self.ignored.remove(&path);
            self.report.clear(&self.watch_name, &path.to_string_lossy());
        }
    }

    /// Lists the folder again: what notifications missed, and staged inputs to retry.
    fn rescan(&mut self) {
        self.forget_gone();
        match self.config.mode {
            WatchMode::File => {
                let mut found = Vec::new();
                list_files(&self.root, self.config.recursive, &mut found);
                for path in found {
                    if !self.files.contains_key(&path) {
                        self.consider_file(path, false);
                    }
                }
            }
            WatchMode::Dir => {
                if let Ok(entries) = fs::read_dir(&self.root) {
                    for entry in entries.filter_map(|e| e.ok()) {
                        let path = entry.path();
                        if entry.file_type().is_ok_and(|t| t.is_symlink())
                            && !is_ignored(&entry.file_name().to_string_lossy())
                        {
                            self.ignore(&path, "a symlink: links in watched folders are never followed; move the folder itself in");
                        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            match entry.file_name().into_string() {
                                Ok(name) => self.consider_folder(name),
                                Err(_) => self.ignore(
                                    &path,
                                    "its name is not valid UTF-8; rename it to take it in",
                                ),
                            }
                        }
                    }
                }
            }
        }
        for token in std::mem::take(&mut self.stuck) {
            match self.spool.restage(&token) {
                Ok(staged) => {
                    let name = staged.meta.name.clone();
                    match self.spool.commit(&self.client, staged) {
                        Ok(taken) => self.report(&name, taken),
                        Err(e) => {
                            tracing::error!("{}: {name} is still not taken in: {e}", self.key);
                            self.stuck.push(token);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!("{}: cannot read staged {token}: {e}", self.key);
                    self.stuck.push(token);
                }
            }
        }
    }

    fn take_ready_files(&mut self) {
        let now = self.clock.monotonic();
        let settle = self.config.settle;
        let mut ready = Vec::new();
        let mut not_files = Vec::new();
        self.files.retain(|path, seen| {
            if seen.retry_at.is_some_and(|at| now < at) {
                return true;
            }
            let Ok(meta) = fs::symlink_metadata(path) else {
                return false; // gone: moved away or deleted while settling
            };
            if !meta.is_file() {
                not_files.push(path.clone());
                return false;
            }
            let mtime = meta.modified().ok();
            if seen.size != meta.len() || seen.mtime != mtime {
                seen.size = meta.len();
                seen.mtime = mtime;
                seen.since = now;
            }
            if (seen.renamed_in || now.saturating_duration_since(seen.since) >= settle)
                && ready.len() < MAX_TAKE
            {
                ready.push(path.clone());
            }
            true
        });
        for path in not_files {
            // Replaced by a symlink or a FIFO while it settled.
            if let Some(why) = self.never_taken(&path) {
                self.ignore(&path, why);
            }
        }
        if ready.is_empty() {
            return;
        }
        let mut pending: Vec<(String, PendingCommit)> = Vec::with_capacity(ready.len());
        for path in ready {
            match self.stage(&path, false, None) {
                Ok(Some((name, commit))) => {
                    self.files.remove(&path);
                    self.report.clear(&self.watch_name, &path.to_string_lossy());
                    pending.push((name, commit));
                }
                Ok(None) => {
                    self.files.remove(&path);
                }
                Err(e) => {
                    let now_ms = self.clock.now_ms();
                    let Some(seen) = self.files.get_mut(&path) else {
                        continue;
                    };
                    seen.retry_at = Some(now + RETRY_AFTER);
                    let since = *seen.failing_since.get_or_insert(now_ms);
                    if let Some(commit) = self.unreadable(&path, false, since, &e) {
                        self.files.remove(&path);
                        pending.push(commit);
                    }
                }
            }
        }
        self.finish(pending);
    }

    /// Waits for the commits of a batch and reports them.
    fn finish(&mut self, pending: Vec<(String, PendingCommit)>) {
        for (name, commit) in pending {
            let token = commit.token().to_string();
            match commit.wait() {
                Ok(taken) => self.report(&name, taken),
                Err(e) => {
                    tracing::error!("{}: {name} is staged but its job is not written ({e}); trying again at the next rescan", self.key);
                    self.stuck.push(token);
                }
            }
        }
    }

    fn report(&self, name: &str, taken: Taken) {
        match taken {
            Taken::Job(id) => tracing::info!(job = id, "{}: took in {name} as job {id}", self.key),
            Taken::Dead(id) => tracing::error!(
                job = id,
                "{}: {name} was not taken in (timed out incomplete or unreadable); job {id} is dead and the input is in failed/ with the reason",
                self.key
            ),
            Taken::Duplicate(_) => {}
            Taken::Already(id) => {
                tracing::info!(job = id, "{}: {name} was already job {id}", self.key)
            }
        }
    }

    /// Hashes an input in place, stages it and sends it for commit. `Ok(None)`: it
    /// vanished meanwhile.
    fn stage(
        &self,
        path: &Path,
        is_dir: bool,
        dead: Option<String>,
    ) -> io::Result<Option<(String, PendingCommit)>> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let before = fs::symlink_metadata(path);
        let (mut sha256, mut size, mut files) = match digest(path, is_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let token = Spool::new_token(self.clock.now_ms());
        let meta = StageMeta {
            token: token.clone(),
            watch: self.watch_name.clone(),
            name: name.clone(),
            is_dir,
            job: self.job_template(path),
            dedupe_window_ms: self.config.dedupe_window.as_millis() as i64,
            dead,
        };
        match self.spool.stage(path, &meta) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        // A file changed between the hash and the rename is hashed again where it is now.
        let staged_path = self
            .spool
            .root()
            .join("spool/.incoming")
            .join(&token)
            .join(&name);
        let after = fs::symlink_metadata(&staged_path);
        let changed = match (&before, &after) {
            (Ok(b), Ok(a)) => b.len() != a.len() || b.modified().ok() != a.modified().ok(),
            _ => true,
        };
        if changed || is_dir {
            (sha256, size, files) = digest(&staged_path, is_dir)?;
        }
        let staged = Staged {
            meta,
            sha256,
            size,
            files,
        };
        let commit = self
            .spool
            .commit_async(&self.client, staged)
            .map_err(io::Error::other)?;
        Ok(Some((name, commit)))
    }

    fn job_template(&self, path: &Path) -> NewJob {
        let payload: serde_json::Map<String, serde_json::Value> = self
            .config
            .payload
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect();
        NewJob {
            kind: self.config.kind.clone(),
            payload: serde_json::Value::Object(payload),
            queue: self.config.queue.clone(),
            priority: self.config.priority,
            run_at: None,
            max_attempts: None,
            unique_key: None,
            deadline_at: None,
            parent_id: None,
            source: Some(format!("watch:{}", path.display())),
            destination: None,
            flow_key: None,
            order_key: None,
        }
    }
}

/// Files under `dir` (and its subfolders if `recursive`), skipping hidden folders.
fn list_files(dir: &Path, recursive: bool, into: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if recursive && !entry.file_name().to_string_lossy().starts_with('.') {
                list_files(&entry.path(), true, into);
            }
        } else {
            // Symlinks and FIFOs too: the watcher reports what it will not take.
            into.push(entry.path());
        }
    }
}

/// A folder set's files: lower-cased name, size, mtime; sorted. `None` if it is gone.
fn list_folder(dir: &Path) -> Option<Vec<(String, u64, Option<SystemTime>)>> {
    let entries = fs::read_dir(dir).ok()?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            (meta.is_file() && !is_ignored(&name))
                .then(|| (name.to_lowercase(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    Some(files)
}

#[cfg(test)]
#[path = "watch_clock_tests.rs"]
mod clock_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_producers_write_under_are_ignored() {
        for name in [".hidden", "a.tmp", "a.TMP", "a.part", "a.partial", "a.csv~"] {
            assert!(is_ignored(name), "{name}");
        }
        for name in ["a.csv", "tmp.csv", "partial"] {
            assert!(!is_ignored(name), "{name}");
        }
    }

    #[test]
    fn a_missing_folder_is_created_or_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch: WatchConfig = toml::from_str(&format!(
            "path = {:?}",
            dir.path().join("in").display().to_string()
        ))
        .unwrap();
        let created = prepare_folder("watch[0]", &watch).unwrap();
        assert!(created.is_dir());
        watch.path = dir.path().join("other");
        watch.create = false;
        let err = prepare_folder("watch[0]", &watch).unwrap_err();
        assert!(
            err.starts_with("watch[0].path:") && err.contains("does not exist"),
            "{err}"
        );
        fs::write(dir.path().join("file"), "x").unwrap();
        watch.path = dir.path().join("file");
        assert!(prepare_folder("watch[0]", &watch)
            .unwrap_err()
            .contains("not a folder"));
    }
}
