//! The store as a driver: the [`Store`] trait (one connection to the queue database), its
//! write transaction [`StoreTx`], and the SQLite-only capability [`SqliteFile`]. Everything
//! outside `src/store/` talks to the queue through these, in domain types only; a driver
//! (`store/sqlite/`, later `store/postgres/`) implements them, and `tests/it/store/` runs
//! one conformance suite against every driver.
//!
//! # Driver properties
//!
//! What is true of one process on one SQLite file is a property of that driver, not of
//! the store; each driver states its own:
//!
//! - **Start-up recovery.** `rescue_expired(all = true)` takes back every `running` row.
//!   On SQLite that is right at daemon start because one daemon holds the file (see the
//!   lock below); a driver shared by several daemons recovers only its own node's rows
//!   at once and the others' by lease expiry.
//! - **One daemon per database.** SQLite: the daemon holds an exclusive lock beside the
//!   file (`daemon/lock.rs`). Other drivers may let several daemons share one database.
//! - **Leadership** (schedules, purges, folder-set timeouts): on SQLite the lock holder is
//!   the leader; another driver elects one (a lease row).
//! - **Write transactions.** [`Store::write`] runs its work in one transaction that takes
//!   the write lock up front (SQLite `BEGIN IMMEDIATE`), so no read-then-write upgrade can
//!   fail. A driver with row locks instead must keep every guarded update correct under
//!   concurrent transactions: every transition is one guarded `UPDATE` whose changed-row
//!   count is checked, never a read followed by an unguarded write.
//! - **Claims** are disjoint across concurrent transactions (SQLite: the write lock;
//!   PostgreSQL: `FOR UPDATE SKIP LOCKED`).
//! - **Fan-in.** A finishing child locks its parent's row (updates it) before deciding
//!   whether the parent's last child is done, so of two children finishing at once
//!   exactly one resumes the parent (SQLite: the write lock serialises them).
//! - **Change notices.** [`Store::change_token`] changes when another connection commits
//!   (SQLite: `PRAGMA data_version`; PostgreSQL: LISTEN/NOTIFY or a counter). A driver
//!   that hears of new rows as they commit calls the hook given to
//!   [`Store::wake_on_new_work`] at once (PostgreSQL: each NOTIFY); polling the token stays
//!   the fallback for the rest (SQLite has no such hook).
//! - **Flow control** ([`StoreTx::claim_flow`], holds, order keys). A held destination's
//!   waiting rows are parked (`run_at` moved to the hold's end), at the hold and at
//!   enqueue, so claims never walk them. A destination's tokens are drawn inside the
//!   claim's transaction and its in-flight count is read there: claims of several
//!   daemons must not both spend one token (SQLite: the write lock; a row-locking
//!   driver locks the destination's state row). `order_blocked` is kept for every
//!   writer, plain SQL included (SQLite: triggers in migration 0008): a job is blocked
//!   while an earlier unfinished job of its order key exists, and when a key's
//!   unblocked job finishes or is deleted, its next job in id order is unblocked.

use super::{
    Applied, Attempt, AttemptProgress, ChildrenSummary, ClaimSpec, Death, Enqueued, HeldClaim,
    IngestRecord, JobFilter, PendingFolder, QueuePause, Result, RunningJob, Stats, StoreError,
    SyncState,
};
use super::{Claimed, DestinationHold};
use crate::flow::{DestinationLimit, DestinationView, HoldRequest, Router};
use crate::job::{Completion, Job, JobId, JobState, NewJob, SyncMark, UnixMillis};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a driver calls when it hears of new work ([`Store::wake_on_new_work`]), with the
/// queue's name or "". Called from the driver's own thread: it must be quick.
pub type WakeHook = Box<dyn Fn(&str) + Send + Sync>;

/// One finished attempt to record: the completion and, when known, when its handler
/// started in microseconds (for the attempt row). A batch of these is one
/// [`StoreTx::complete_many`].
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub completion: &'a Completion,
    pub started_us: Option<i64>,
}

/// One connection to the queue database. The daemon has exactly one for writing (fed by
/// its dispatcher) and read connections beside it; jobctl opens its own.
///
/// Object safe: callers hold a `Box<dyn Store>` from [`super::open`]. Generic helpers
/// (`write` with a typed result) are inherent functions on `dyn Store`.
pub trait Store: Send {
    /// What names the database, for messages and for the files kept beside it (the
    /// daemon's start journal is `PATH.starts`). SQLite: the database file.
    fn path(&self) -> &Path;

    /// Refuses a database this process cannot write, with a message naming why.
    fn check_writable(&self) -> Result<()>;

    /// The schema version the database is at.
    fn schema_version(&self) -> Result<i64>;

    /// Runs `work` in one write transaction and commits it if `work` returns Ok; an error
    /// rolls everything back. Use `write` (on `dyn Store`) for a typed result.
    fn write_dyn(&mut self, work: &mut dyn FnMut(&dyn StoreTx) -> Result<()>) -> Result<()>;

    /// Changes whenever another connection commits: the cheap way to notice rows
    /// inserted by jobctl or a plain `INSERT` without scanning the table. Compare two
    /// values for equality only.
    fn change_token(&self) -> Result<i64>;

    /// Asks the driver to call `wake` as soon as it hears that another process added
    /// work (the queue's name, or "" when it cannot say which), so the daemon need not
    /// wait for its next poll of [`Store::change_token`]. Returns false, dropping `wake`,
    /// when the driver hears of nothing between polls (SQLite): the caller keeps polling
    /// either way, for what the hook may miss.
    fn wake_on_new_work(&mut self, wake: WakeHook) -> bool {
        drop(wake);
        false
    }

    /// The SQLite-only capabilities (checkpoints, WAL policy, backup, vacuum, integrity
    /// check, file sizes), or None for a driver without a database file.
    fn sqlite(&self) -> Option<&dyn SqliteFile> {
        None
    }

    // --- single jobs and lists (jobctl show / list, the dispatcher's notices) ---

    fn get(&self, id: JobId) -> Result<Job>;
    /// Every recorded attempt of a job, oldest first.
    fn attempts(&self, id: JobId) -> Result<Vec<Attempt>>;
    /// A parent's children by state name.
    fn children_counts(&self, id: JobId) -> Result<BTreeMap<String, u64>>;
    /// When a job's first recorded attempt started.
    fn first_attempt_at(&self, id: JobId) -> Result<Option<UnixMillis>>;
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// How the driver runs [`Store::list`] for this filter (SQLite: its query plan).
    fn list_plan(&self, filter: &JobFilter) -> Result<Vec<String>>;
    fn stats(&self, now: UnixMillis) -> Result<Stats>;
    /// Running jobs an operator asked to cancel.
    fn cancel_requests(&self) -> Result<Vec<JobId>>;
    /// Unfinished jobs by state name.
    fn live_counts(&self) -> Result<BTreeMap<String, u64>>;
    /// Recorded attempts by outcome.
    fn attempt_counts(&self) -> Result<BTreeMap<String, u64>>;

    // --- ingest ---

    /// The job already made from this staging token: `Some(None)` when it was purged.
    fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>>;
    /// Folder sets seen but not complete yet.
    fn pending_folders(&self) -> Result<Vec<PendingFolder>>;

    // --- what runs and what died (jobctl top) ---

    fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>>;
    fn recent_deaths(&self, limit: usize) -> Result<Vec<Death>>;

    // --- operator controls ---

    fn paused_queues(&self) -> Result<Vec<QueuePause>>;
    fn count_matching(&self, filter: &JobFilter) -> Result<BTreeMap<JobState, u64>>;
    /// Ids of jobs matching `filter` in one of `states`, above `after`, at most `chunk`.
    fn matching_ids(
        &self,
        filter: &JobFilter,
        states: &[JobState],
        after: JobId,
        chunk: usize,
    ) -> Result<Vec<JobId>>;
    fn children_page(&self, id: JobId, after: JobId, limit: usize) -> Result<Vec<Job>>;
    fn children_summary(&self, id: JobId) -> Result<ChildrenSummary>;
    fn progress_of(&self, id: JobId) -> Result<Vec<AttemptProgress>>;
    fn latest_progress(&self, ids: &[JobId]) -> Result<HashMap<JobId, serde_json::Value>>;

    // --- pipelines' sync state ---

    fn sync_states(&self) -> Result<Vec<SyncState>>;
    /// A pipeline's high-water mark, if it has one.
    fn sync_high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>>;
    /// Unfinished jobs of this kind for this pipeline.
    fn live_pipeline_jobs(&self, kind: &str, pipeline: &str) -> Result<u64>;
    /// The greatest unique key that starts with `prefix`, compared byte by byte: keys
    /// ending in a time (`http_pull:NAME:<period start>`) name the latest, so the
    /// scheduler reads a pipeline's last scheduled period from its run's row.
    fn greatest_unique_key(&self, prefix: &str) -> Result<Option<String>>;

    // --- flow control ---

    /// Every job this connection enqueues without a destination of its own gets the
    /// route `router` derives from its kind (destination, key, order key).
    fn set_router(&mut self, router: Arc<dyn Router>);
    /// Each destination and key with limits, state, waiting or running jobs: limits,
    /// tokens refilled to `now`, in flight, waiting, and the hold if one stands.
    fn destinations(
        &self,
        limits: &[DestinationLimit],
        now: UnixMillis,
    ) -> Result<Vec<DestinationView>>;
    /// A destination's hold, if one was set (it may have ended: compare with now).
    fn destination_hold(
        &self,
        destination: &str,
        flow_key: &str,
    ) -> Result<Option<DestinationHold>>;
    /// The unfinished head of an order key: the job its other jobs wait for.
    fn order_head(&self, order_key: &str) -> Result<Option<JobId>>;
}

impl<'s> dyn Store + 's {
    /// Runs `work` in one write transaction (see [`Store::write_dyn`]) and returns its
    /// value: `store.write(|tx| tx.claim(...))`.
    pub fn write<T>(&mut self, work: impl FnOnce(&dyn StoreTx) -> Result<T>) -> Result<T> {
        let mut work = Some(work);
        let mut value = None;
        self.write_dyn(&mut |tx| {
            let work = work.take().expect("a write runs its work once");
            value = Some(work(tx)?);
            Ok(())
        })?;
        Ok(value.expect("a committed write ran its work"))
    }
}

/// One write transaction, offering the queue's transitions. Every update is guarded by
/// the states its [`crate::job::Transition`] allows and checks how many rows it changed.
pub trait StoreTx {
    /// Runs `work` all or nothing inside this transaction (a savepoint): `work` returns
    /// whether to keep what it did. Use `atomically` (on `dyn StoreTx`).
    fn savepoint_dyn(&self, work: &mut dyn FnMut(&dyn StoreTx) -> bool) -> Result<()>;

    // --- the queue's transitions ---

    /// Enqueues jobs all or nothing. A job whose unique key exists already is not added;
    /// its existing id comes back marked as a duplicate.
    fn enqueue(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Vec<Enqueued>>;

    /// Claims ready jobs (`queued | retrying`, due by `now`) in priority, run_at, id order,
    /// within the spec's limits; each becomes `running` with a lease. Claims many at once.
    fn claim(
        &self,
        spec: &ClaimSpec,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        self.claim_numbered(spec, None, worker, lease_until, now)
    }

    /// [`StoreTx::claim`], recording `claim` (the daemon's number for this claim, which
    /// its start journal names) on every row it claims.
    fn claim_numbered(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        Ok(self.claim_flow(spec, claim, worker, lease_until, now)?.jobs)
    }

    /// [`StoreTx::claim_numbered`] within the destinations' limits (`spec.destinations`):
    /// each limited destination and key gives at most its whole tokens (a bucket
    /// refilled by `now`, drawn at claim time, shared by every daemon) and its room under
    /// `max_in_flight` (running rows of it, counted in the database). Rows it must leave
    /// do not hold back other destinations' rows. Rows with `order_blocked` are never
    /// claimed. Says when a destination it left rows of gets its next token.
    fn claim_flow(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Claimed>;

    // --- flow control ---

    /// Holds a destination (and key) until `hold.until`: none of its jobs is claimed
    /// before then, by any daemon, and its waiting jobs are charged nothing (their
    /// `run_at` moves to the hold's end). A hold never shortens a longer one and lasts
    /// at most [`crate::flow::MAX_HOLD`]. Returns the new end, or None if a longer hold
    /// stands. Jobs enqueued during the hold wait for it too.
    fn hold_destination(&self, hold: &HoldRequest, now: UnixMillis) -> Result<Option<UnixMillis>>;

    /// Ends a destination's hold now; the jobs it held are due at once. Returns whether
    /// it was held.
    fn release_destination(
        &self,
        destination: &str,
        flow_key: &str,
        now: UnixMillis,
    ) -> Result<bool>;

    /// Records a finished attempt: moves the job as the resolution says, writes the
    /// attempt row, enqueues follow-ups, all or nothing. A completion for an attempt that
    /// no longer holds the job changes nothing and says [`Applied::Stale`].
    fn complete(&self, done: &Completion, now: UnixMillis) -> Result<Applied> {
        self.complete_started(done, None, now)
    }

    /// [`StoreTx::complete`], with the handler's start in microseconds.
    fn complete_started(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        now: UnixMillis,
    ) -> Result<Applied>;

    /// Records many finished attempts (River's `JobSetStateIfRunningMany`), one
    /// [`Applied`] per entry in order.
    fn complete_many(&self, done: &[Finished<'_>], now: UnixMillis) -> Result<Vec<Applied>> {
        done.iter()
            .map(|f| self.complete_started(f.completion, f.started_us, now))
            .collect()
    }

    /// Extends the leases of running jobs (id, attempt) this worker holds. Returns how
    /// many were extended.
    fn extend_leases(
        &self,
        jobs: &[(JobId, u32)],
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<usize>;

    /// Records that these attempts' (id, attempt, when) handlers started. Returns how
    /// many were recorded.
    fn record_starts(&self, starts: &[(JobId, u32, UnixMillis)], worker: &str) -> Result<usize>;

    /// Takes back running jobs whose lease ran out (with `all`, every running job: see
    /// "start-up recovery" in the module docs), many at once. `max_attempts_of` gives a
    /// kind's limit; `started` says whether a claim's handler started (else the attempt
    /// is given back). Returns each rescued job and where it went.
    fn rescue_expired(
        &self,
        now: UnixMillis,
        all: bool,
        max_attempts_of: &dyn Fn(&str) -> u32,
        started: &dyn Fn(&HeldClaim) -> bool,
    ) -> Result<Vec<(JobId, JobState)>>;

    /// An operator sends dead or cancelled jobs round again; any other state is refused.
    fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>>;
    /// Revives every dead job, or those of one kind.
    fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>>;
    /// Cancels a waiting job at once, or asks a running one to stop. Returns the state
    /// the job is in afterwards.
    fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState>;
    /// Deletes at most `chunk` jobs of a terminal `state` finished before `before`.
    fn purge_finished(&self, state: JobState, before: UnixMillis, chunk: usize) -> Result<usize>;
    /// When the next waiting job not yet due at `now` becomes due.
    fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>>;
    fn get(&self, id: JobId) -> Result<Job>;

    // --- ingest ---

    fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>>;
    /// A job made from the same content under the same name since `since`.
    fn recent_copy(&self, sha256: &str, name: &str, since: UnixMillis) -> Result<Option<JobId>>;
    /// Enqueues a job made from a taken-in file and records where it came from;
    /// `payload_of` builds the payload once the id is known.
    fn enqueue_ingested(
        &self,
        job: &NewJob,
        record: &IngestRecord,
        payload_of: &dyn Fn(JobId) -> serde_json::Value,
        now: UnixMillis,
    ) -> Result<JobId>;
    /// A job enqueued in this same transaction and never attempted goes straight to
    /// dead ([`crate::job::Transition::BuryUnborn`]): a folder set that never completed.
    fn bury_unborn(&self, id: JobId, error: &str, now: UnixMillis) -> Result<()>;
    fn record_pending(
        &self,
        watch: &str,
        folder: &str,
        first_seen: UnixMillis,
        missing: &[String],
        now: UnixMillis,
    ) -> Result<()>;
    fn clear_pending(&self, watch: &str, folder: &str) -> Result<()>;

    // --- operator controls ---

    fn pause_queue(&self, queue: &str, reason: Option<&str>, now: UnixMillis) -> Result<bool>;
    fn resume_queue(&self, queue: &str) -> Result<bool>;
    fn paused_queue_names(&self) -> Result<Vec<String>>;
    fn revive_where_allowed(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>>;
    fn delete_where_allowed(&self, ids: &[JobId]) -> Result<usize>;
    fn run_now(&self, id: JobId, now: UnixMillis) -> Result<()>;
    fn record_progress(
        &self,
        reports: &[(JobId, u32, serde_json::Value)],
        now: UnixMillis,
    ) -> Result<()>;

    // --- sync state ---

    fn record_sync_mark(&self, mark: &SyncMark, job: JobId, now: UnixMillis) -> Result<()>;
    fn reset_sync_state(&self, pipeline: &str) -> Result<bool>;

    // --- the web page's actions ---

    fn web_ids_matching(
        &self,
        search: &super::web::JobSearch,
        state: JobState,
        cap: usize,
    ) -> Result<Vec<JobId>>;
    fn record_web_action(&self, detail: &serde_json::Value, now: UnixMillis) -> Result<JobId>;
}

impl<'t> dyn StoreTx + 't {
    /// Runs `work` all or nothing inside the surrounding transaction (a savepoint), so a
    /// failed ingest step leaves the rest of a group commit standing.
    pub fn atomically<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&dyn StoreTx) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut work = Some(work);
        let mut outcome = None;
        self.savepoint_dyn(&mut |tx| {
            let work = work.take().expect("a savepoint runs its work once");
            let result = work(tx);
            let keep = result.is_ok();
            outcome = Some(result);
            keep
        })?;
        outcome.expect("the savepoint ran its work")
    }
}

/// `PRAGMA wal_checkpoint(MODE)`. PASSIVE never waits; RESTART waits (up to the given
/// wait) for readers to leave the WAL so the next writer starts it from the beginning;
/// TRUNCATE does that and then cuts the file to zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    Passive,
    Full,
    Restart,
    Truncate,
}

/// What a checkpoint did, as SQLite reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// A RESTART/TRUNCATE/FULL checkpoint could not finish: a reader or writer was in
    /// the way for longer than the wait.
    pub busy: bool,
    /// Frames in the WAL (-1 if the database is not in WAL mode).
    pub log_frames: i64,
    /// Frames copied back into the database file.
    pub checkpointed_frames: i64,
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub path: PathBuf,
    pub bytes: u64,
    pub jobs: u64,
    pub schema_version: i64,
}

/// What only a database that is one SQLite file can do: the daemon's WAL policy and
/// jobctl's backup, vacuum and checkpoint. Asked for with [`Store::sqlite`]; a driver
/// without it makes those commands say "SQLite only".
pub trait SqliteFile {
    /// Runs a checkpoint, waiting at most `wait`; one that cannot finish is `busy`.
    fn checkpoint(&self, mode: CheckpointMode, wait: Duration) -> Result<Checkpoint>;
    /// The daemon checkpoints on its own policy, so SQLite's automatic one is turned off.
    fn disable_auto_checkpoint(&self) -> Result<()>;
    /// `PRAGMA journal_size_limit`: the WAL is cut back to this after a checkpoint.
    fn set_journal_size_limit(&self, bytes: u64) -> Result<()>;
    fn wal_path(&self) -> PathBuf;
    /// Bytes in the WAL file (0 if there is none).
    fn wal_size(&self) -> u64;
    /// Bytes one WAL frame takes: a page and its 24-byte header.
    fn wal_frame_size(&self) -> Result<u64>;
    /// Bytes in the database file.
    fn file_size(&self) -> u64;
    /// An online backup to `dest` (replacing it only with `replace`).
    fn backup_to(&self, dest: &Path, replace: bool) -> Result<BackupInfo>;
    fn vacuum(&self) -> Result<()>;
    /// `PRAGMA integrity_check`: "ok", or what is wrong.
    fn integrity_check(&self) -> Result<Vec<String>>;
    /// `EXPLAIN QUERY PLAN` of each statement the claim runs, by name.
    fn claim_query_plans(&self) -> Result<Vec<(&'static str, String)>>;
    /// This connection's commits stop waiting for the disk; the handle makes them
    /// durable (see [`super::WalSync`]).
    fn sync_commits_elsewhere(&self) -> Result<super::WalSync>;
}
