//! [`Store`], [`WebReads`] and [`StoreTx`] for PostgreSQL: each method hands over to the driver's own
//! reads (`reads.rs`, the web page's in `web.rs`) and transaction (`queue.rs`,
//! `operator.rs`, `web.rs`).

use super::super::api::{Finished, Store, StoreTx};
use super::super::web::{
    ChildProgress, DeadGroup, JobPage, JobSearch, LiveCounts, Overview, SourceFile, SucceededBase,
    WebAction, WebReads,
};
use super::super::{
    Applied, Attempt, AttemptProgress, ChildrenSummary, ClaimSpec, Death, Enqueued, HeldClaim,
    IngestRecord, JobFilter, PendingFolder, QueuePause, Result, RunningJob, Stats, StoreError,
    SyncState,
};
use super::super::{Claimed, DestinationHold};
use super::{PgStore, PgTx};
use crate::flow::{DestinationLimit, DestinationView, HoldRequest, Router};
use crate::job::{Completion, Job, JobId, JobState, NewJob, SyncMark, UnixMillis};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Store for PgStore {
    fn path(&self) -> &Path {
        &self.local_path
    }

    fn check_writable(&self) -> Result<()> {
        let mut conn = self.connection()?;
        let row = conn.query_one(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'), \
             has_table_privilege('jobs', 'INSERT, UPDATE, DELETE')",
            &[],
        )?;
        let (recovery, read_only, may_write): (bool, String, bool) =
            (row.get(0), row.get(1), row.get(2));
        let why = if recovery {
            Some("the server is a standby (in recovery)".to_string())
        } else if read_only == "on" {
            Some("default_transaction_read_only is on".to_string())
        } else if !may_write {
            Some("this user may not insert, update and delete in jobs".to_string())
        } else {
            None
        };
        match why {
            Some(why) => Err(StoreError::ReadOnly(
                std::path::PathBuf::from(self.url().to_string()),
                why,
            )),
            None => Ok(()),
        }
    }

    fn schema_version(&self) -> Result<i64> {
        PgStore::schema_version(self)
    }

    fn write_dyn(&mut self, work: &mut dyn FnMut(&dyn StoreTx) -> Result<()>) -> Result<()> {
        self.write(|tx| work(tx))
    }

    fn change_token(&self) -> Result<i64> {
        Ok(self.notice_token())
    }

    fn wake_on_new_work(&mut self, wake: crate::store::WakeHook) -> bool {
        self.wake_on_notice(wake);
        true
    }

    fn get(&self, id: JobId) -> Result<Job> {
        PgStore::get(self, id)
    }
    fn attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        PgStore::attempts(self, id)
    }
    fn children_counts(&self, id: JobId) -> Result<BTreeMap<String, u64>> {
        PgStore::children_counts(self, id)
    }
    fn first_attempt_at(&self, id: JobId) -> Result<Option<UnixMillis>> {
        PgStore::first_attempt_at(self, id)
    }
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        PgStore::list(self, filter)
    }
    fn list_plan(&self, filter: &JobFilter) -> Result<Vec<String>> {
        PgStore::list_plan(self, filter)
    }
    fn stats(&self, now: UnixMillis) -> Result<Stats> {
        PgStore::stats(self, now)
    }
    fn cancel_requests(&self) -> Result<Vec<JobId>> {
        PgStore::cancel_requests(self)
    }
    fn live_counts(&self) -> Result<BTreeMap<String, u64>> {
        PgStore::live_counts(self)
    }
    fn attempt_counts(&self) -> Result<BTreeMap<String, u64>> {
        PgStore::attempt_counts(self)
    }
    fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        PgStore::ingested_job(self, token)
    }
    fn pending_folders(&self) -> Result<Vec<PendingFolder>> {
        PgStore::pending_folders(self)
    }
    fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>> {
        PgStore::running_jobs(self, limit)
    }
    fn recent_deaths(&self, limit: usize) -> Result<Vec<Death>> {
        PgStore::recent_deaths(self, limit)
    }
    fn paused_queues(&self) -> Result<Vec<QueuePause>> {
        PgStore::paused_queues(self)
    }
    fn count_matching(&self, filter: &JobFilter) -> Result<BTreeMap<JobState, u64>> {
        PgStore::count_matching(self, filter)
    }
    fn matching_ids(
        &self,
        filter: &JobFilter,
        states: &[JobState],
        after: JobId,
        chunk: usize,
    ) -> Result<Vec<JobId>> {
        PgStore::matching_ids(self, filter, states, after, chunk)
    }
    fn children_page(&self, id: JobId, after: JobId, limit: usize) -> Result<Vec<Job>> {
        PgStore::children_page(self, id, after, limit)
    }
    fn children_summary(&self, id: JobId) -> Result<ChildrenSummary> {
        PgStore::children_summary(self, id)
    }
    fn progress_of(&self, id: JobId) -> Result<Vec<AttemptProgress>> {
        PgStore::progress_of(self, id)
    }
    fn latest_progress(&self, ids: &[JobId]) -> Result<HashMap<JobId, serde_json::Value>> {
        PgStore::latest_progress(self, ids)
    }
    fn sync_states(&self) -> Result<Vec<SyncState>> {
        PgStore::sync_states(self)
    }
    fn sync_high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>> {
        PgStore::sync_high_water(self, pipeline)
    }
    fn live_pipeline_jobs(&self, kind: &str, pipeline: &str) -> Result<u64> {
        PgStore::live_pipeline_jobs(self, kind, pipeline)
    }
    fn greatest_unique_key(&self, prefix: &str) -> Result<Option<String>> {
        PgStore::greatest_unique_key(self, prefix)
    }

    fn set_router(&mut self, router: Arc<dyn Router>) {
        PgStore::set_router(self, router)
    }
    fn destinations(
        &self,
        limits: &[DestinationLimit],
        now: UnixMillis,
    ) -> Result<Vec<DestinationView>> {
        PgStore::destinations(self, limits, now)
    }
    fn destination_hold(
        &self,
        destination: &str,
        flow_key: &str,
    ) -> Result<Option<DestinationHold>> {
        PgStore::destination_hold(self, destination, flow_key)
    }
    fn order_head(&self, order_key: &str) -> Result<Option<JobId>> {
        PgStore::order_head(self, order_key)
    }
}

impl WebReads for PgStore {
    fn web_overview(
        &self,
        now: UnixMillis,
        succeeded: Option<&SucceededBase>,
        live: Option<&LiveCounts>,
    ) -> Result<Overview> {
        PgStore::web_overview(self, now, succeeded, live)
    }
    fn web_live_counts(&self, now: UnixMillis) -> Result<LiveCounts> {
        PgStore::web_live_counts(self, now)
    }
    fn web_count_finished(&self, state: JobState, after: Option<UnixMillis>) -> Result<u64> {
        PgStore::web_count_finished(self, state, after)
    }
    fn web_succeeded_base(&self, now: UnixMillis, margin: Duration) -> Result<SucceededBase> {
        PgStore::web_succeeded_base(self, now, margin)
    }
    fn web_search(&self, search: &JobSearch) -> Result<JobPage> {
        PgStore::web_search(self, search)
    }
    fn web_search_plan(&self, search: &JobSearch) -> Result<Vec<String>> {
        PgStore::web_search_plan(self, search)
    }
    fn web_count_matching(&self, search: &JobSearch, state: JobState) -> Result<u64> {
        PgStore::web_count_matching(self, search, state)
    }
    fn web_dead_groups(&self, limit: usize) -> Result<Vec<DeadGroup>> {
        PgStore::web_dead_groups(self, limit)
    }
    fn web_child_progress(&self, parent: JobId) -> Result<ChildProgress> {
        PgStore::web_child_progress(self, parent)
    }
    fn web_source_file(&self, job: JobId) -> Result<Option<SourceFile>> {
        PgStore::web_source_file(self, job)
    }
    fn web_actions(&self, limit: usize) -> Result<Vec<WebAction>> {
        PgStore::web_actions(self, limit)
    }
    /// Not [`Store::change_token`] (the dispatcher's LISTEN wake-ups, which also move on
    /// a timer): the counter that moves only when a page's rows changed.
    fn web_change_token(&self) -> Result<i64> {
        PgStore::web_change_token(self)
    }
}

impl StoreTx for PgTx<'_> {
    fn savepoint_dyn(&self, work: &mut dyn FnMut(&dyn StoreTx) -> bool) -> Result<()> {
        self.with(|tx| tx.batch_execute("SAVEPOINT atomically"))?;
        if work(self) {
            self.with(|tx| tx.batch_execute("RELEASE SAVEPOINT atomically"))
        } else {
            self.with(|tx| {
                tx.batch_execute("ROLLBACK TO SAVEPOINT atomically; RELEASE SAVEPOINT atomically")
            })
        }
    }

    fn enqueue(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Vec<Enqueued>> {
        PgTx::enqueue(self, jobs, now)
    }
    fn claim_flow(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Claimed> {
        PgTx::claim_flow(self, spec, claim, worker, lease_until, now)
    }
    fn hold_destination(&self, hold: &HoldRequest, now: UnixMillis) -> Result<Option<UnixMillis>> {
        PgTx::hold_destination(self, hold, now)
    }
    fn release_destination(
        &self,
        destination: &str,
        flow_key: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        PgTx::release_destination(self, destination, flow_key, now)
    }
    fn complete_started(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        now: UnixMillis,
    ) -> Result<Applied> {
        PgTx::complete_started(self, done, started_us, now)
    }
    fn complete_many(&self, done: &[Finished<'_>], now: UnixMillis) -> Result<Vec<Applied>> {
        let batch: Vec<(&Completion, Option<i64>)> =
            done.iter().map(|f| (f.completion, f.started_us)).collect();
        PgTx::complete_many(self, &batch, now)
    }
    fn extend_leases(
        &self,
        jobs: &[(JobId, u32)],
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<usize> {
        PgTx::extend_leases(self, jobs, worker, lease_until, now)
    }
    fn record_starts(&self, starts: &[(JobId, u32, UnixMillis)], worker: &str) -> Result<usize> {
        PgTx::record_starts(self, starts, worker)
    }
    /// `all` is this node's start-up recovery: its own running rows at once, other
    /// nodes' only once their leases ran out.
    fn rescue_expired(
        &self,
        now: UnixMillis,
        all: bool,
        max_attempts_of: &dyn Fn(&str) -> u32,
        started: &dyn Fn(&HeldClaim) -> bool,
    ) -> Result<Vec<(JobId, JobState)>> {
        PgTx::rescue_expired(self, now, all, max_attempts_of, started)
    }
    fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        PgTx::revive(self, ids, now)
    }
    fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>> {
        PgTx::revive_dead(self, kind, now)
    }
    fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState> {
        PgTx::cancel(self, id, now)
    }
    fn purge_finished(&self, state: JobState, before: UnixMillis, chunk: usize) -> Result<usize> {
        PgTx::purge_finished(self, state, before, chunk)
    }
    fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>> {
        PgTx::next_due(self, now)
    }
    fn get(&self, id: JobId) -> Result<Job> {
        PgTx::get(self, id)
    }
    fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        PgTx::ingested_job(self, token)
    }
    fn recent_copy(&self, sha256: &str, name: &str, since: UnixMillis) -> Result<Option<JobId>> {
        PgTx::recent_copy(self, sha256, name, since)
    }
    fn enqueue_ingested(
        &self,
        job: &NewJob,
        record: &IngestRecord,
        payload_of: &dyn Fn(JobId) -> serde_json::Value,
        now: UnixMillis,
    ) -> Result<JobId> {
        PgTx::enqueue_ingested(self, job, record, payload_of, now)
    }
    fn bury_unborn(&self, id: JobId, error: &str, now: UnixMillis) -> Result<()> {
        PgTx::bury_unborn(self, id, error, now)
    }
    fn record_pending(
        &self,
        watch: &str,
        folder: &str,
        first_seen: UnixMillis,
        missing: &[String],
        now: UnixMillis,
    ) -> Result<()> {
        PgTx::record_pending(self, watch, folder, first_seen, missing, now)
    }
    fn clear_pending(&self, watch: &str, folder: &str) -> Result<()> {
        PgTx::clear_pending(self, watch, folder)
    }
    fn pause_queue(&self, queue: &str, reason: Option<&str>, now: UnixMillis) -> Result<bool> {
        PgTx::pause_queue(self, queue, reason, now)
    }
    fn resume_queue(&self, queue: &str) -> Result<bool> {
        PgTx::resume_queue(self, queue)
    }
    fn paused_queue_names(&self) -> Result<Vec<String>> {
        PgTx::paused_queue_names(self)
    }
    fn revive_where_allowed(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        PgTx::revive_where_allowed(self, ids, now)
    }
    fn delete_where_allowed(&self, ids: &[JobId]) -> Result<usize> {
        PgTx::delete_where_allowed(self, ids)
    }
    fn run_now(&self, id: JobId, now: UnixMillis) -> Result<()> {
        PgTx::run_now(self, id, now)
    }
    fn record_progress(
        &self,
        reports: &[(JobId, u32, serde_json::Value)],
        now: UnixMillis,
    ) -> Result<()> {
        PgTx::record_progress(self, reports, now)
    }
    fn record_sync_mark(&self, mark: &SyncMark, job: JobId, now: UnixMillis) -> Result<()> {
        PgTx::record_sync_mark(self, mark, job, now)
    }
    fn reset_sync_state(&self, pipeline: &str) -> Result<bool> {
        PgTx::reset_sync_state(self, pipeline)
    }
    fn web_ids_matching(
        &self,
        search: &JobSearch,
        state: JobState,
        cap: usize,
    ) -> Result<Vec<JobId>> {
        PgTx::web_ids_matching(self, search, state, cap)
    }
    fn record_web_action(&self, detail: &serde_json::Value, now: UnixMillis) -> Result<JobId> {
        PgTx::record_web_action(self, detail, now)
    }
}
