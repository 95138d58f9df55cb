//! The spool: where a taken-in file or folder lives while its job is alive, and the
//! crash-safe protocol that moves it there in the same step as its row is written.
//!
//! Layout under `<data_dir>`:
//! - `spool/.incoming/<token>/` staging: `.jobd-meta.json` (what job to make) and the file
//!   or folder, renamed out of the input folder;
//! - `spool/<job id>/` the same directory once its job row exists;
//! - `done/YYYYMMDD/<job id>/` after success (and `done/YYYYMMDD/dup-<token>/` for content
//!   already taken within the dedupe window); `failed/YYYYMMDD/<job id>/` after death,
//!   with `<name>.error.json` beside the input.
//!
//! The protocol, and why kill -9 at any moment loses no file and makes no second job:
//! 1. Write `spool/.incoming/<token>/.jobd-meta.json`, then rename the input into that
//!    directory. Before the rename the file is still in the input folder (the staging
//!    directory without it is removed at start-up); after it, the input folder no longer
//!    holds it, so the watcher cannot take it twice.
//! 2. In the dispatcher's transaction (one savepoint): look for the same content within
//!    the dedupe window; otherwise insert the job row and the `ingest_files` row keyed by
//!    the token, then rename `spool/.incoming/<token>` to `spool/<id>` before the commit.
//!    The job cannot be claimed before its file is in place: claims are handed to
//!    workers only after the commit. If the commit fails the directory is renamed back.
//! 3. Start-up recovery, before anything new is taken in: a `spool/<id>` whose token has
//!    no row was renamed by a transaction that never committed (its id may since belong
//!    to another job): it goes back to `.incoming`. Every `.incoming/<token>` with its
//!    input is then driven through step 2 again; the token's row, if one exists, stops a
//!    second job. A `spool/<id>` whose job already finished goes on to done/ or failed/.
//!
//! Moves are renames within `<data_dir>`; only the first one may cross file systems (an
//! input folder elsewhere), where it falls back to copy, fsync and delete: a crash
//! between the copy and the delete leaves the input in place, and the dedupe window then
//! keeps its second appearance from becoming a second job.

use crate::clock::{SharedClock, SystemClock};
use crate::daemon::{ClientError, DaemonClient};
use crate::job::{Job, JobId, JobState, NewJob};
use crate::store::{IngestRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The hidden file beside a staged input that says which job to make of it.
pub const META_FILE: &str = ".jobd-meta.json";
/// What `ingest_files` records as the SHA-256 of an input that could not be read (it is
/// never matched as a duplicate: dead-born inputs skip the dedupe).
const UNREAD_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ERROR_SUFFIX: &str = ".error.json";

/// The name of the error file beside a dead job's input: `<name>.error.json`, shortened
/// as [`sidecar_name`] does.
pub fn error_file_name(name: &str) -> String {
    sidecar_name(name, ERROR_SUFFIX)
}

use crate::files::sidecar_name;

const INCOMING: &str = ".incoming";

/// What the watcher decided to make of a file or folder; written before it moves, so
/// recovery can finish the job without the configuration that made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageMeta {
    pub token: String,
    /// The watched folder it came from.
    pub watch: String,
    /// Its name there (a file, or a folder set's subfolder).
    pub name: String,
    pub is_dir: bool,
    /// The job to make; `file`/`dir`, `name`, `sha256` and `size` are merged into its
    /// payload.
    pub job: NewJob,
    /// The same content and name within this many milliseconds is a duplicate.
    pub dedupe_window_ms: i64,
    /// Born dead with this error (a folder set that timed out incomplete).
    #[serde(default)]
    pub dead: Option<String>,
}

/// A staged input and what the watcher learned about it.
#[derive(Debug, Clone)]
pub struct Staged {
    pub meta: StageMeta,
    pub sha256: String,
    pub size: u64,
    /// For folder sets: each file's name, size and SHA-256.
    pub files: Vec<FileDigest>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileDigest {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What became of a staged input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A new job; its input is in `spool/<id>/`.
    Job(JobId),
    /// A new job, dead from birth; its input is in `failed/`.
    Dead(JobId),
    /// The same content was taken within the window as this job (0: purged since); the
    /// input went to `done/`.
    Duplicate(JobId),
    /// Recovery found this token's job already made.
    Already(JobId),
}

/// Why a staged input was not taken in; its transaction is rolled back, so nothing of it
/// was written, and it stays staged for the next try.
#[derive(Debug, thiserror::Error)]
enum TakeInError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot move staged {name} to {}: {cause}", to.display())]
    Move {
        name: String,
        to: PathBuf,
        cause: io::Error,
    },
}

/// A staged input on its way through the dispatcher.
pub struct PendingCommit {
    spool: Spool,
    token: String,
    answer: crossbeam_channel::Receiver<Result<Taken, ClientError>>,
}

impl PendingCommit {
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Waits for the commit, then does what follows it (duplicates to done/, dead-born
    /// jobs to failed/).
    pub fn wait(self) -> Result<Taken, ClientError> {
        let taken = self
            .answer
            .recv()
            .map_err(|_| ClientError::StoppedBeforeAnswer)??;
        Ok(self.spool.after_commit(&self.token, taken))
    }
}

/// The data directory's spool, done/ and failed/ folders.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// Says which `done/YYYYMMDD` and `failed/YYYYMMDD` an input goes to, and when it
    /// failed.
    clock: SharedClock,
}

static TOKENS: AtomicU64 = AtomicU64::new(0);

/// The `YYYYMMDD` (UTC) folder name of the day `at` falls in.
fn day_folder(at: crate::job::UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .format("%Y%m%d")
        .to_string()
}

impl Spool {
    /// Creates `spool/.incoming`, `done/` and `failed/` under `data_dir` (made absolute, so
    /// payloads name files the handler can open whatever its working directory).
    pub fn open(data_dir: &Path, clock: SharedClock) -> io::Result<Spool> {
        let root = std::path::absolute(data_dir)?;
        let spool = Spool { root, clock };
        for dir in [
            spool.incoming(),
            spool.root.join("done"),
            spool.root.join("failed"),
        ] {
            crate::files::create_private_dir_all(&dir)?;
        }
        Ok(spool)
    }

    /// The spool of a data directory, creating nothing (for jobctl, which moves inputs
    /// back from failed/ but never into a dated folder; its clock is the wall clock).
    pub fn at(data_dir: &Path) -> io::Result<Spool> {
        Ok(Spool {
            root: std::path::absolute(data_dir)?,
            clock: Arc::new(SystemClock),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn incoming(&self) -> PathBuf {
        self.root.join("spool").join(INCOMING)
    }

    /// `spool/<id>`: a job's input while the job lives.
    pub fn job_dir(&self, id: JobId) -> PathBuf {
        self.root.join("spool").join(id.to_string())
    }

    fn staging_dir(&self, token: &str) -> PathBuf {
        self.incoming().join(token)
    }

    /// A token no other staging in this data directory has: time, process and a counter.
    pub fn new_token(now_ms: i64) -> String {
        let n = TOKENS.fetch_add(1, Ordering::Relaxed);
        format!("{now_ms:013}-{}-{n}", std::process::id())
    }

    /// Step 1: writes the meta file, then renames `source` out of the input folder into
    /// staging. On failure nothing is left in staging and `source` is where it was.
    pub fn stage(&self, source: &Path, meta: &StageMeta) -> io::Result<()> {
        let dir = self.staging_dir(&meta.token);
        crate::files::create_private_dir_all(&dir)?;
        let result = write_private(
            &dir.join(META_FILE),
            &serde_json::to_vec_pretty(meta).expect("meta serializes"),
        )
        .and_then(|()| move_in(source, &dir.join(&meta.name)));
        if result.is_err() {
            let _ = fs::remove_file(dir.join(META_FILE));
            let _ = fs::remove_dir(&dir);
        }
        result
    }

    /// Step 2: sends the staged input to the dispatcher and waits for the commit.
    pub fn commit(&self, client: &DaemonClient, staged: Staged) -> Result<Taken, ClientError> {
        self.commit_async(client, staged)?.wait()
    }

    /// Step 2 without waiting, so a burst of files shares group commits. Call
    /// [`PendingCommit::wait`] to finish it.
    pub fn commit_async(
        &self,
        client: &DaemonClient,
        staged: Staged,
    ) -> Result<PendingCommit, ClientError> {
        let spool = self.clone();
        let abort_spool = self.clone();
        let token = staged.meta.token.clone();
        let abort_token = token.clone();
        let answer = client.write_async(
            move |tx, now| spool.take_in(tx, &staged, now),
            move |taken: &Taken| {
                // The rename into spool/<id> happened but the row did not: undo it.
                if let Taken::Job(id) | Taken::Dead(id) = taken {
                    let from = abort_spool.job_dir(*id);
                    if let Err(e) = fs::rename(&from, abort_spool.staging_dir(&abort_token)) {
                        tracing::error!("cannot move {} back to staging after a failed commit: {e}; start-up recovery will", from.display());
                    }
                }
            },
        )?;
        Ok(PendingCommit {
            spool: self.clone(),
            token,
            answer,
        })
    }

    /// Inside the transaction: dedupe, row, rename.
    fn take_in(
        &self,
        tx: &dyn crate::store::StoreTx,
        staged: &Staged,
        now: i64,
    ) -> Result<Taken, TakeInError> {
        let meta = &staged.meta;
        if let Some(existing) = tx.ingested_job(&meta.token)? {
            return Ok(Taken::Already(existing.unwrap_or(0)));
        }
        if meta.dead.is_none() {
            let since = now.saturating_sub(meta.dedupe_window_ms);
            if let Some(of) = tx.recent_copy(&staged.sha256, &meta.name, since)? {
                return Ok(Taken::Duplicate(of));
            }
        }
        let record = IngestRecord {
            token: meta.token.clone(),
            watch: meta.watch.clone(),
            name: meta.name.clone(),
            sha256: if staged.sha256.is_empty() {
                UNREAD_SHA256.to_string()
            } else {
                staged.sha256.clone()
            },
            size: staged.size,
        };
        let id = tx.enqueue_ingested(&meta.job, &record, &|id| self.payload(id, staged), now)?;
        if meta.is_dir {
            tx.clear_pending(&meta.watch, &meta.name)?;
        }
        if let Some(error) = &meta.dead {
            tx.bury_unborn(id, error, now)?;
        }
        let to = self.job_dir(id);
        fs::rename(self.staging_dir(&meta.token), &to).map_err(|cause| TakeInError::Move {
            name: meta.name.clone(),
            to: to.clone(),
            cause,
        })?;
        Ok(if meta.dead.is_some() {
            Taken::Dead(id)
        } else {
            Taken::Job(id)
        })
    }

    /// The fields the watcher adds to a job's payload.
    fn payload(&self, id: JobId, staged: &Staged) -> Value {
        let meta = &staged.meta;
        let path = self.job_dir(id).join(&meta.name);
        let key = if meta.is_dir { "dir" } else { "file" };
        let mut fields = json!({
            key: path,
            "name": meta.name,
            "sha256": staged.sha256,
            "size": staged.size,
        });
        if meta.is_dir {
            fields["files"] = serde_json::to_value(&staged.files).expect("digests serialize");
        }
        if staged.sha256.is_empty() {
            // Never read: no digest to give (the handler computes one if it needs it).
            fields.as_object_mut().expect("an object").remove("sha256");
        }
        fields
    }

    /// After the commit: duplicates go to done/, dead-born jobs to failed/.
    fn after_commit(&self, token: &str, taken: Taken) -> Taken {
        match taken {
            Taken::Duplicate(of) => {
                let to = self.dated("done").join(format!("dup-{token}"));
                match rename_into(&self.staging_dir(token), &to) {
                    Ok(()) => tracing::info!(
                        "{} is a duplicate of what job {of} took in (same SHA-256 and name within the dedupe window); moved to {} without a new job",
                        read_meta(&to).map(|m| m.name).unwrap_or_else(|_| token.to_string()),
                        to.display()
                    ),
                    Err(e) => tracing::error!("cannot move duplicate {token} to done/: {e}"),
                }
            }
            Taken::Dead(id) => {
                if let Err(e) = self.move_failed(id, None) {
                    tracing::error!(job = id, "cannot move job {id}'s input to failed/: {e}");
                }
            }
            Taken::Already(id) => {
                let staging = self.staging_dir(token);
                if staging.exists() && id > 0 && !self.job_dir(id).exists() {
                    let _ = fs::rename(&staging, self.job_dir(id));
                }
            }
            Taken::Job(_) => {}
        }
        taken
    }

    /// `done/YYYYMMDD` or `failed/YYYYMMDD` for today (UTC).
    fn dated(&self, top: &str) -> PathBuf {
        self.root.join(top).join(day_folder(self.clock.now_ms()))
    }

    /// A succeeded job's input goes to `done/YYYYMMDD/<id>`. No input, nothing to do.
    pub fn move_done(&self, id: JobId) -> io::Result<Option<PathBuf>> {
        let from = self.job_dir(id);
        if !from.exists() {
            return Ok(None);
        }
        let to = self.dated("done").join(id.to_string());
        rename_into(&from, &to)?;
        Ok(Some(to))
    }

    /// A dead job's input goes to `failed/YYYYMMDD/<id>`, beside `<name>.error.json`.
    /// `job` (when known) fills the error file; otherwise it is read from the meta.
    pub fn move_failed(
        &self,
        id: JobId,
        job: Option<(&Job, Option<&str>)>,
    ) -> io::Result<Option<PathBuf>> {
        let from = self.job_dir(id);
        if !from.exists() {
            return Ok(None);
        }
        let meta = read_meta(&from).ok();
        let name = meta
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| id.to_string());
        let error = json!({
            "job_id": id,
            "name": name,
            "kind": job.map(|(j, _)| j.kind.clone()).or_else(|| meta.as_ref().map(|m| m.job.kind.clone())),
            "attempts": job.map(|(j, _)| j.attempts),
            "last_error": job.and_then(|(_, e)| e).or(meta.as_ref().and_then(|m| m.dead.as_deref())),
            "failed_at": crate::clock::format_millis(self.clock.now_ms()),
        });
        // Written inside spool/<id> first, so it travels with the input in one rename.
        write_private(
            &from.join(error_file_name(&name)),
            &serde_json::to_vec_pretty(&error).expect("json serializes"),
        )?;
        let to = self.dated("failed").join(id.to_string());
        rename_into(&from, &to)?;
        Ok(Some(to))
    }

    /// `jobctl retry`: a dead job's input comes back from `failed/*/<id>` to the spool,
    /// without its error file. Returns where it was, to put it back if the retry fails.
    pub fn restore_failed(&self, id: JobId) -> io::Result<Option<PathBuf>> {
        let failed = self.root.join("failed");
        let Ok(days) = fs::read_dir(&failed) else {
            return Ok(None);
        };
        let mut found: Vec<PathBuf> = days
            .filter_map(|d| d.ok())
            .map(|d| d.path().join(id.to_string()))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        let Some(from) = found.pop() else {
            return Ok(None);
        };
        let to = self.job_dir(id);
        if to.exists() {
            return Ok(None);
        }
        fs::rename(&from, &to)?;
        if let Ok(meta) = read_meta(&to) {
            let _ = fs::remove_file(to.join(error_file_name(&meta.name)));
        }
        Ok(Some(from))
    }

    /// Where a job's input directory is now: `spool/<id>` while the job lives, else the
    /// latest `done/*/<id>` or `failed/*/<id>`; None if it is in none of them.
    pub fn job_input_dir(&self, id: JobId) -> Option<PathBuf> {
        let spooled = self.job_dir(id);
        if spooled.is_dir() {
            return Some(spooled);
        }
        let mut found: Vec<PathBuf> = ["done", "failed"]
            .iter()
            .filter_map(|top| fs::read_dir(self.root.join(top)).ok())
            .flat_map(|days| days.filter_map(|d| d.ok()))
            .map(|d| d.path().join(id.to_string()))
            .filter(|p| p.is_dir())
            .collect();
        // Day folders are named YYYYMMDD: the last one is the latest move.
        found.sort_by_key(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()));
        found.pop()
    }

    /// Puts an input that [`Spool::restore_failed`] brought back where it was.
    pub fn return_failed(&self, id: JobId, to: &Path) -> io::Result<()> {
        fs::rename(self.job_dir(id), to)
    }

    /// Step 3: start-up recovery. Needs a read connection and the running dispatcher.
    /// Returns how many staged inputs were driven to a job (or a duplicate).
    pub fn recover(&self, db: &dyn Store, client: &DaemonClient) -> usize {
        // Uncommitted renames back to staging; finished jobs' inputs on to done/failed.
        for (id, dir) in self.numbered_dirs() {
            let Ok(meta) = read_meta(&dir) else {
                continue;
            };
            match db.ingested_job(&meta.token) {
                Ok(None) => {
                    let back = self.staging_dir(&meta.token);
                    tracing::warn!(
                        "{} was moved into the spool by a transaction that never committed; taking it in again",
                        meta.name
                    );
                    if let Err(e) = fs::rename(&dir, &back) {
                        tracing::error!("cannot move {} back to staging: {e}", dir.display());
                    }
                }
                Ok(Some(Some(job_id))) if job_id == id => match db.get(id) {
                    Ok(job) if job.state == JobState::Succeeded => {
                        let _ = self.move_done(id);
                    }
                    Ok(job) if job.state == JobState::Dead => {
                        let error = job.last_error.clone();
                        let _ = self.move_failed(id, Some((&job, error.as_deref())));
                    }
                    _ => {}
                },
                Ok(_) => tracing::warn!(
                    "{} names staging token {} of another job; left alone",
                    dir.display(),
                    meta.token
                ),
                Err(e) => tracing::error!("cannot check {}: {e}", dir.display()),
            }
        }
        let mut driven = 0;
        let Ok(entries) = fs::read_dir(self.incoming()) else {
            return 0;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let dir = entry.path();
            let meta = match read_meta(&dir) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::error!(
                        "staged {} has no readable {META_FILE} ({e}); left for an operator",
                        dir.display()
                    );
                    continue;
                }
            };
            let input = dir.join(&meta.name);
            if fs::symlink_metadata(&input).is_err() {
                // The crash came between the meta and the rename: the input never left.
                let _ = fs::remove_file(dir.join(META_FILE));
                let _ = fs::remove_dir(&dir);
                continue;
            }
            let staged = match staged_from(&input, meta) {
                Ok(staged) => staged,
                Err(e) => {
                    tracing::error!(
                        "cannot read staged {}: {e}; will try at the next start",
                        input.display()
                    );
                    continue;
                }
            };
            match self.commit(client, staged) {
                Ok(taken) => {
                    tracing::info!("recovered staged {}: {taken:?}", input.display());
                    driven += 1;
                }
                Err(e) => tracing::error!("cannot recover staged {}: {e}", input.display()),
            }
        }
        driven
    }

    fn numbered_dirs(&self) -> Vec<(JobId, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.root.join("spool")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let id = e.file_name().to_str()?.parse::<JobId>().ok()?;
                Some((id, e.path()))
            })
            .collect()
    }

    /// Staged inputs not yet driven to a job (for retries after a failed commit).
    pub fn staged_tokens(&self) -> Vec<String> {
        fs::read_dir(self.incoming())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reads a staged input (after a failed commit) so it can be committed again.
    pub fn restage(&self, token: &str) -> io::Result<Staged> {
        let dir = self.staging_dir(token);
        let meta = read_meta(&dir)?;
        staged_from(&dir.join(&meta.name), meta)
    }
}

/// A staged input read again (recovery, a retried commit). One that is dead from birth
/// because it could not be read is taken as it is, without a digest.
fn staged_from(input: &Path, meta: StageMeta) -> io::Result<Staged> {
    match digest(input, meta.is_dir) {
        Ok((sha256, size, files)) => Ok(Staged {
            meta,
            sha256,
            size,
            files,
        }),
        Err(_) if meta.dead.is_some() => Ok(Staged {
            meta,
            sha256: String::new(),
            size: fs::symlink_metadata(input).map(|m| m.len()).unwrap_or(0),
            files: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}

fn read_meta(dir: &Path) -> io::Result<StageMeta> {
    let text = fs::read(dir.join(META_FILE))?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// SHA-256 and size of a file, or of a folder set: the digest of its sorted
/// `name<TAB>sha256` lines, the total size, and each file's digest.
pub fn digest(path: &Path, is_dir: bool) -> io::Result<(String, u64, Vec<FileDigest>)> {
    if !is_dir {
        let (sha256, size) = crate::files::sha256_file(path)?;
        return Ok((sha256, size, Vec::new()));
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let (sha256, size) = crate::files::sha256_file(&entry.path())?;
        files.push(FileDigest { name, size, sha256 });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut manifest = Sha256::new();
    for f in &files {
        manifest.update(format!("{}\t{}\n", f.name, f.sha256));
    }
    let size = files.iter().map(|f| f.size).sum();
    Ok((crate::files::hex(&manifest.finalize()), size, files))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::files::create_private(path)?.write_all(bytes)
}

/// Renames `from` to `to`, creating `to`'s parent.
fn rename_into(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        crate::files::create_private_dir_all(parent)?;
    }
    fs::rename(from, to)
}

/// Moves an input out of its folder: a rename, or across file systems a copy (under a
/// hidden name, fsynced) then a delete of the original.
fn move_in(source: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(source, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let partial = to.with_file_name(".jobd-copy");
            copy_tree(source, &partial)?;
            fs::rename(&partial, to)?;
            if source.is_dir() {
                fs::remove_dir_all(source)
            } else {
                fs::remove_file(source)
            }
        }
        other => other,
    }
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if from.is_dir() {
        crate::files::create_private_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to)?;
        fs::File::open(to)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::NAME_MAX;

    #[test]
    fn done_and_failed_inputs_are_dated_and_stamped_by_the_spools_clock() {
        let dir = tempfile::tempdir().unwrap();
        // 2026-11-23T23:59:59.500Z, then half a second later: the next day.
        let clock = Arc::new(crate::clock::ManualClock::new(1_795_478_399_500));
        let spool = Spool::open(&dir.path().join("var"), clock.clone()).unwrap();
        for id in [1, 2] {
            fs::create_dir_all(spool.job_dir(id)).unwrap();
            fs::write(spool.job_dir(id).join("in.csv"), "x").unwrap();
        }
        let done = spool.move_done(1).unwrap().unwrap();
        assert_eq!(done, spool.root().join("done/20261123/1"));
        clock.advance(std::time::Duration::from_millis(500));
        let failed = spool.move_failed(2, None).unwrap().unwrap();
        assert_eq!(failed, spool.root().join("failed/20261124/2"));
        let error: serde_json::Value =
            serde_json::from_slice(&fs::read(failed.join(error_file_name("2"))).unwrap()).unwrap();
        assert_eq!(error["failed_at"], "2026-11-24T00:00:00.000Z");
    }

    #[test]
    fn a_folder_digest_is_stable_and_names_each_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.csv"), "b").unwrap();
        fs::write(dir.path().join("a.csv"), "aa").unwrap();
        let (sha, size, files) = digest(dir.path(), true).unwrap();
        assert_eq!(size, 3);
        assert_eq!(files[0].name, "a.csv");
        assert_eq!(files.len(), 2);
        assert_eq!(digest(dir.path(), true).unwrap().0, sha);
        fs::write(dir.path().join("a.csv"), "ab").unwrap();
        assert_ne!(digest(dir.path(), true).unwrap().0, sha);
    }

    #[test]
    fn an_error_file_name_fits_the_file_name_limit_and_stays_unique() {
        assert_eq!(error_file_name("a.csv"), "a.csv.error.json");
        let fits = "n".repeat(NAME_MAX - ERROR_SUFFIX.len());
        assert_eq!(error_file_name(&fits), format!("{fits}.error.json"));
        let long_a = format!("{}a.csv", "n".repeat(245));
        let long_b = format!("{}b.csv", "n".repeat(245));
        let (a, b) = (error_file_name(&long_a), error_file_name(&long_b));
        assert!(a.len() <= NAME_MAX && b.len() <= NAME_MAX, "{}", a.len());
        assert_ne!(a, b);
        assert!(
            a.starts_with(&"n".repeat(200)) && a.ends_with(".error.json"),
            "{a}"
        );
        // Cut on a character boundary, never inside a multi-byte character.
        let wide = "日".repeat(90);
        let cut = error_file_name(&wide);
        assert!(cut.len() <= NAME_MAX && cut.starts_with("日"), "{cut}");
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(&a), "{}").unwrap();
        fs::write(dir.path().join(&cut), "{}").unwrap();
    }

    #[test]
    fn staging_moves_the_input_out_and_a_failed_stage_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("var"), Arc::new(SystemClock)).unwrap();
        let input = dir.path().join("in");
        fs::create_dir(&input).unwrap();
        fs::write(input.join("a.csv"), "x").unwrap();
        let meta = StageMeta {
            token: Spool::new_token(1),
            watch: input.display().to_string(),
            name: "a.csv".into(),
            is_dir: false,
            job: serde_json::from_value(json!({"kind": "noop"})).unwrap(),
            dedupe_window_ms: 0,
            dead: None,
        };
        spool.stage(&input.join("a.csv"), &meta).unwrap();
        assert!(!input.join("a.csv").exists());
        let staged = spool.restage(&meta.token).unwrap();
        assert_eq!(staged.size, 1);
        assert_eq!(spool.staged_tokens(), vec![meta.token.clone()]);
        let missing = StageMeta {
            token: Spool::new_token(2),
            ..meta.clone()
        };
        assert!(spool.stage(&input.join("a.csv"), &missing).is_err());
        assert_eq!(spool.staged_tokens(), vec![meta.token.clone()]);
    }
}
