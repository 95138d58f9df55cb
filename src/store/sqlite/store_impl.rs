//! The SQLite driver's [`Store`], [`StoreTx`] and [`SqliteFile`]: each trait method
//! forwards to the inherent method of the same name in the file that holds its SQL
//! (`queue.rs`, `admin.rs`, `web.rs`, ...), so the SQL stays beside its neighbours and
//! this file is only the map.

use super::{SqliteStore, SqliteTx};
use crate::flow::{DestinationLimit, DestinationView, HoldRequest, Router};
use crate::job::{Completion, Job, JobId, JobState, NewJob, SyncMark, UnixMillis};
use crate::store::web::{
    ChildProgress, DeadGroup, JobPage, JobSearch, LiveCounts, Overview, SourceFile, SucceededBase,
    WebAction, WebReads,
};
use crate::store::{
    Applied, Attempt, AttemptProgress, BackupInfo, Checkpoint, CheckpointMode, ChildrenSummary,
    ClaimSpec, Death, Enqueued, Finished, HeldClaim, IngestRecord, JobFilter, PendingFolder,
    QueuePause, Result, RunningJob, SqliteFile, Stats, Store, StoreTx, SyncState,
};
use crate::store::{Claimed, DestinationHold};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `fn name(&self, args) -> R { <Self>::name(self, args) }`: the inherent method wins
/// the path lookup, so each line forwards to the SQL of the same name.
macro_rules! forward {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                <Self>::$name(self $(, $arg)*)
            }
        )*
    };
}

impl Store for SqliteStore {
    fn path(&self) -> &Path {
        <Self>::path(self)
    }

    fn write_dyn(&mut self, work: &mut dyn FnMut(&dyn StoreTx) -> Result<()>) -> Result<()> {
        <Self>::write(self, |tx| work(tx))
    }

    fn change_token(&self) -> Result<i64> {
        self.data_version()
    }

    fn sqlite(&self) -> Option<&dyn SqliteFile> {
        Some(self)
    }

    forward! {
        fn check_writable(&self) -> Result<()>;
        fn schema_version(&self) -> Result<i64>;
        fn get(&self, id: JobId) -> Result<Job>;
        fn attempts(&self, id: JobId) -> Result<Vec<Attempt>>;
        fn children_counts(&self, id: JobId) -> Result<BTreeMap<String, u64>>;
        fn first_attempt_at(&self, id: JobId) -> Result<Option<UnixMillis>>;
        fn list(&self, filter: &JobFilter) -> Result<Vec<Job>>;
        fn list_plan(&self, filter: &JobFilter) -> Result<Vec<String>>;
        fn stats(&self, now: UnixMillis) -> Result<Stats>;
        fn cancel_requests(&self) -> Result<Vec<JobId>>;
        fn live_counts(&self) -> Result<BTreeMap<String, u64>>;
        fn attempt_counts(&self) -> Result<BTreeMap<String, u64>>;
        fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>>;
        fn pending_folders(&self) -> Result<Vec<PendingFolder>>;
        fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>>;
        fn recent_deaths(&self, limit: usize) -> Result<Vec<Death>>;
        fn paused_queues(&self) -> Result<Vec<QueuePause>>;
        fn count_matching(&self, filter: &JobFilter) -> Result<BTreeMap<JobState, u64>>;
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
        fn sync_states(&self) -> Result<Vec<SyncState>>;
        fn sync_high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>>;
        fn live_pipeline_jobs(&self, kind: &str, pipeline: &str) -> Result<u64>;
        fn greatest_unique_key(&self, prefix: &str) -> Result<Option<String>>;
        fn destinations(&self, limits: &[DestinationLimit], now: UnixMillis) -> Result<Vec<DestinationView>>;
        fn destination_hold(&self, destination: &str, flow_key: &str) -> Result<Option<DestinationHold>>;
        fn order_head(&self, order_key: &str) -> Result<Option<JobId>>;
    }

    fn set_router(&mut self, router: Arc<dyn Router>) {
        <Self>::set_router(self, router)
    }
}

impl WebReads for SqliteStore {
    /// Any commit by another connection: the page shows nearly every table.
    fn web_change_token(&self) -> Result<i64> {
        self.data_version()
    }

    forward! {
        fn web_overview(&self, now: UnixMillis, succeeded: Option<&SucceededBase>, live: Option<&LiveCounts>) -> Result<Overview>;
        fn web_live_counts(&self, now: UnixMillis) -> Result<LiveCounts>;
        fn web_count_finished(&self, state: JobState, after: Option<UnixMillis>) -> Result<u64>;
        fn web_succeeded_base(&self, now: UnixMillis, margin: Duration) -> Result<SucceededBase>;
        fn web_search(&self, search: &JobSearch) -> Result<JobPage>;
        fn web_search_plan(&self, search: &JobSearch) -> Result<Vec<String>>;
        fn web_count_matching(&self, search: &JobSearch, state: JobState) -> Result<u64>;
        fn web_dead_groups(&self, limit: usize) -> Result<Vec<DeadGroup>>;
        fn web_child_progress(&self, parent: JobId) -> Result<ChildProgress>;
        fn web_source_file(&self, job: JobId) -> Result<Option<SourceFile>>;
        fn web_actions(&self, limit: usize) -> Result<Vec<WebAction>>;
    }
}

impl StoreTx for SqliteTx<'_> {
    fn savepoint_dyn(&self, work: &mut dyn FnMut(&dyn StoreTx) -> bool) -> Result<()> {
        <Self>::savepoint(self, work)
    }

    fn enqueue_ingested(
        &self,
        job: &NewJob,
        record: &IngestRecord,
        payload_of: &dyn Fn(JobId) -> serde_json::Value,
        now: UnixMillis,
    ) -> Result<JobId> {
        <Self>::enqueue_ingested(self, job, record, payload_of, now)
    }

    fn rescue_expired(
        &self,
        now: UnixMillis,
        all: bool,
        max_attempts_of: &dyn Fn(&str) -> u32,
        started: &dyn Fn(&HeldClaim) -> bool,
    ) -> Result<Vec<(JobId, JobState)>> {
        <Self>::rescue_expired(self, now, all, max_attempts_of, started)
    }

    forward! {
        fn enqueue(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Vec<Enqueued>>;
        fn claim_flow(
            &self,
            spec: &ClaimSpec,
            claim: Option<i64>,
            worker: &str,
            lease_until: UnixMillis,
            now: UnixMillis,
        ) -> Result<Claimed>;
        fn hold_destination(&self, hold: &HoldRequest, now: UnixMillis) -> Result<Option<UnixMillis>>;
        fn release_destination(&self, destination: &str, flow_key: &str, now: UnixMillis) -> Result<bool>;
        fn complete_started(
            &self,
            done: &Completion,
            started_us: Option<i64>,
            now: UnixMillis,
        ) -> Result<Applied>;
        fn complete_many(&self, done: &[Finished<'_>], now: UnixMillis) -> Result<Vec<Applied>>;
        fn extend_leases(
            &self,
            jobs: &[(JobId, u32)],
            worker: &str,
            lease_until: UnixMillis,
            now: UnixMillis,
        ) -> Result<usize>;
        fn record_starts(&self, starts: &[(JobId, u32, UnixMillis)], worker: &str) -> Result<usize>;
        fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>>;
        fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>>;
        fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState>;
        fn purge_finished(&self, state: JobState, before: UnixMillis, chunk: usize) -> Result<usize>;
        fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>>;
        fn get(&self, id: JobId) -> Result<Job>;
        fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>>;
        fn recent_copy(&self, sha256: &str, name: &str, since: UnixMillis) -> Result<Option<JobId>>;
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
        fn pause_queue(&self, queue: &str, reason: Option<&str>, now: UnixMillis) -> Result<bool>;
        fn resume_queue(&self, queue: &str) -> Result<bool>;
        fn paused_queue_names(&self) -> Result<Vec<String>>;
        fn revive_where_allowed(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>>;
        fn delete_where_allowed(&self, ids: &[JobId]) -> Result<usize>;
        fn run_now(&self, id: JobId, now: UnixMillis) -> Result<()>;
        fn record_progress(&self, reports: &[(JobId, u32, serde_json::Value)], now: UnixMillis) -> Result<()>;
        fn record_sync_mark(&self, mark: &SyncMark, job: JobId, now: UnixMillis) -> Result<()>;
        fn reset_sync_state(&self, pipeline: &str) -> Result<bool>;
        fn web_ids_matching(&self, search: &JobSearch, state: JobState, cap: usize) -> Result<Vec<JobId>>;
        fn record_web_action(&self, detail: &serde_json::Value, now: UnixMillis) -> Result<JobId>;
    }
}

impl SqliteFile for SqliteStore {
    fn claim_query_plans(&self) -> Result<Vec<(&'static str, String)>> {
        super::claim::claim_query_plans(&self.conn)
    }

    forward! {
        fn vacuum(&self) -> Result<()>;
        fn checkpoint(&self, mode: CheckpointMode, wait: Duration) -> Result<Checkpoint>;
        fn disable_auto_checkpoint(&self) -> Result<()>;
        fn set_journal_size_limit(&self, bytes: u64) -> Result<()>;
        fn wal_path(&self) -> PathBuf;
        fn wal_size(&self) -> u64;
        fn wal_frame_size(&self) -> Result<u64>;
        fn file_size(&self) -> u64;
        fn backup_to(&self, dest: &Path, replace: bool) -> Result<BackupInfo>;
        fn integrity_check(&self) -> Result<Vec<String>>;
        fn sync_commits_elsewhere(&self) -> Result<crate::store::WalSync>;
    }
}
