//! The queue's transitions on PostgreSQL inside one transaction ([`PgTx`]): completions
//! batched into one statement per kind of move, leases and starts, fan-in with the parent
//! row locked; enqueue is in `enqueue.rs`, the claim in `claim.rs`, the other moves in
//! `moves.rs`. Every update is guarded by the states its [`Transition`] allows.

use super::super::{Applied, ParentLink};
use super::super::{Result, StoreError};
use super::statements::StatementCache;
use super::PgOptions;
use crate::job::{Completion, Job, JobId, JobState, Resolution, SyncMark, Transition, UnixMillis};
use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};
use std::cell::RefCell;

/// The columns of a [`Job`], in the order [`job_from_row`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempts, \
     max_attempts, run_at, lease_until, worker, unique_key, parent_id, last_error, \
     deadline_at, created_at, updated_at, finished_at, source, cancel_requested, stage, \
     destination, flow_key, order_key, order_blocked";

/// [`JOB_COLUMNS`] of the table aliased `j`.
pub(super) fn job_columns_of_j() -> String {
    JOB_COLUMNS
        .split(", ")
        .map(|c| format!("j.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn job_from_row(row: &Row) -> Result<Job> {
    let state: String = row.get(4);
    let unsigned = |i: usize| -> u32 { row.get::<_, i32>(i).max(0) as u32 };
    Ok(Job {
        id: row.get(0),
        queue: row.get(1),
        kind: row.get(2),
        payload: row.get(3),
        state: state.parse().map_err(StoreError::Corrupt)?,
        priority: row.get(5),
        attempts: unsigned(6),
        max_attempts: row.get::<_, Option<i32>>(7).map(|m| m.max(1) as u32),
        run_at: row.get(8),
        lease_until: row.get(9),
        worker: row.get(10),
        unique_key: row.get(11),
        parent_id: row.get(12),
        last_error: row.get(13),
        deadline_at: row.get(14),
        created_at: row.get(15),
        updated_at: row.get(16),
        finished_at: row.get(17),
        source: row.get(18),
        cancel_requested: row.get::<_, i32>(19) != 0,
        stage: unsigned(20),
        destination: row.get(21),
        flow_key: row.get(22),
        order_key: row.get(23),
        order_blocked: row.get(24),
    })
}

/// `state IN ('a', 'b')` for the states a transition may start from, from `job.rs`.
pub(super) fn state_guard(transition: Transition) -> String {
    let states: Vec<String> = transition
        .from_states()
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("state IN ({})", states.join(", "))
}

/// A finished job: succeeded, dead or cancelled.
const TERMINAL: &str = "state IN ('succeeded', 'dead', 'cancelled')";

/// One PostgreSQL transaction, offering the queue's transitions.
pub struct PgTx<'a> {
    tx: RefCell<Option<Transaction<'a>>>,
    /// The connection's prepared statements, for [`PgTx::rows`] and [`PgTx::run`].
    statements: RefCell<&'a mut StatementCache>,
    pub(super) options: &'a PgOptions,
    /// Gives each job enqueued without a destination its route ([`crate::flow`]).
    pub(super) router: Option<&'a dyn crate::flow::Router>,
}

impl<'a> PgTx<'a> {
    pub(super) fn new(
        tx: Transaction<'a>,
        statements: &'a mut StatementCache,
        options: &'a PgOptions,
    ) -> PgTx<'a> {
        PgTx {
            tx: RefCell::new(Some(tx)),
            statements: RefCell::new(statements),
            options,
            router: None,
        }
    }

    /// Routes the jobs this transaction enqueues by `router`.
    pub(super) fn routed_by(mut self, router: Option<&'a dyn crate::flow::Router>) -> Self {
        self.router = router;
        self
    }

    pub(super) fn commit(self) -> Result<()> {
        let tx = self.tx.into_inner().expect("committed once");
        tx.commit()?;
        Ok(())
    }

    /// Runs `work` on the transaction.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'a>) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut tx = self.tx.borrow_mut();
        Ok(work(tx.as_mut().expect("open"))?)
    }

    /// Runs a query through the connection's prepared statement for `sql`.
    pub(super) fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.prepared(sql, |tx, statement| tx.query(statement, params))
    }

    /// Runs a statement through the connection's prepared statement for `sql`; returns
    /// how many rows it changed.
    pub(super) fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.prepared(sql, |tx, statement| tx.execute(statement, params))
    }

    fn prepared<T>(
        &self,
        sql: &str,
        work: impl FnOnce(&mut Transaction<'a>, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut statements = self.statements.borrow_mut();
        let mut tx = self.tx.borrow_mut();
        let tx = tx.as_mut().expect("open");
        let result = statements
            .get_or_prepare(sql, |sql| tx.prepare(sql))
            .and_then(|statement| work(tx, &statement));
        if result
            .as_ref()
            .is_err_and(|e| e.code() == Some(&postgres::error::SqlState::FEATURE_NOT_SUPPORTED))
        {
            statements.clear();
        }
        Ok(result?)
    }

    pub fn node(&self) -> &str {
        &self.options.node
    }

    /// Records a finished attempt (see [`PgTx::complete_many`]).
    pub fn complete(&self, done: &Completion, now: UnixMillis) -> Result<Applied> {
        self.complete_started(done, None, now)
    }

    /// [`PgTx::complete`], with the handler's start in microseconds for the attempt row.
    pub fn complete_started(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        now: UnixMillis,
    ) -> Result<Applied> {
        Ok(self
            .complete_many(&[(done, started_us)], now)?
            .pop()
            .expect("one answer per completion"))
    }

    /// Records finished attempts. Plain successes (no follow-ups, sync marks or parent)
    /// are written by one UPDATE over all of them and one INSERT of their attempt rows;
    /// every other completion moves its job, writes its attempt and enqueues its
    /// follow-ups on its own, all in this transaction. A completion for an attempt that no
    /// longer holds the job changes nothing and says so.
    pub fn complete_many(
        &self,
        done: &[(&Completion, Option<i64>)],
        now: UnixMillis,
    ) -> Result<Vec<Applied>> {
        let mut answers: Vec<Option<Applied>> = vec![None; done.len()];
        let plain: Vec<usize> = (0..done.len())
            .filter(|&i| {
                let c = done[i].0;
                c.parent_id.is_none()
                    && matches!(&c.resolution, Resolution::Succeeded { follow_ups, sync_marks }
                        if follow_ups.is_empty() && sync_marks.is_empty())
            })
            .collect();
        if !plain.is_empty() {
            let ids: Vec<i64> = plain.iter().map(|&i| done[i].0.job_id).collect();
            let attempts: Vec<i32> = plain.iter().map(|&i| done[i].0.attempt as i32).collect();
            let workers: Vec<&str> = plain.iter().map(|&i| done[i].0.worker.as_str()).collect();
            let rows = self.rows(
                &format!(
                    "UPDATE jobs j SET state = 'succeeded', lease_until = NULL, finished_at = $4, \
                     updated_at = $4, last_error = NULL, started_at = NULL, claim = NULL \
                     FROM unnest($1::bigint[], $2::int[], $3::text[]) AS d(id, attempt, worker) \
                     WHERE j.id = d.id AND j.attempts = d.attempt AND j.worker = d.worker \
                     AND j.{} RETURNING j.id, j.attempts, j.worker",
                    state_guard(Transition::Complete)
                ),
                &[&ids, &attempts, &workers, &now],
            )?;
            let mut moved: std::collections::HashSet<(i64, i32, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            // The first completion of a moved attempt is the one applied; a second one
            // for it in the same batch is stale, as it would be one at a time.
            let written: Vec<usize> = plain
                .iter()
                .copied()
                .filter(|&i| {
                    let c = done[i].0;
                    moved.remove(&(c.job_id, c.attempt as i32, c.worker.clone()))
                })
                .collect();
            self.record_attempts(
                &written
                    .iter()
                    .map(|&i| (done[i].0, done[i].1, "succeeded", None))
                    .collect::<Vec<_>>(),
            )?;
            for &i in &plain {
                answers[i] = Some(Applied::Stale);
            }
            for &i in &written {
                answers[i] = Some(Applied::Moved(JobState::Succeeded));
            }
        }
        for (i, (completion, started_us)) in done.iter().enumerate() {
            if answers[i].is_none() {
                answers[i] = Some(self.complete_one(completion, *started_us, now)?);
            }
        }
        Ok(answers.into_iter().map(|a| a.expect("answered")).collect())
    }

    fn complete_one(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        now: UnixMillis,
    ) -> Result<Applied> {
        let transition = done.resolution.transition();
        let fence = "id = $1 AND attempts = $2 AND worker = $3 AND state = 'running'";
        let left = "started_at = NULL, claim = NULL";
        let guard = state_guard(transition);
        let attempt = done.attempt as i32;
        let worker = done.worker.as_str();
        let changed = match &done.resolution {
            Resolution::Succeeded { .. } => self.run(
                &format!(
                    "UPDATE jobs SET state = 'succeeded', lease_until = NULL, finished_at = $4, \
                     updated_at = $4, last_error = NULL, {left} WHERE {fence} AND {guard}"
                ),
                &[&done.job_id, &attempt, &worker, &now],
            )?,
            Resolution::Await { .. } => self.run(
                &format!(
                    "UPDATE jobs SET state = 'waiting', lease_until = NULL, updated_at = $4, \
                     {left} WHERE {fence} AND {guard}"
                ),
                &[&done.job_id, &attempt, &worker, &now],
            )?,
            Resolution::Released { .. } => self.run(
                &format!(
                    "UPDATE jobs SET state = 'queued', attempts = attempts - 1, \
                     lease_until = NULL, worker = NULL, updated_at = $4, {left} \
                     WHERE {fence} AND {guard}"
                ),
                &[&done.job_id, &attempt, &worker, &now],
            )?,
            Resolution::RetryAt { run_at, error } => self.run(
                &format!(
                    "UPDATE jobs SET state = 'retrying', lease_until = NULL, run_at = $5, \
                     last_error = $6, updated_at = $4, {left} WHERE {fence} AND {guard}"
                ),
                &[&done.job_id, &attempt, &worker, &now, run_at, error],
            )?,
            Resolution::Dead { error: message, .. } | Resolution::Cancelled { reason: message } => {
                let target = transition.to_state().as_str();
                self.run(
                    &format!(
                        "UPDATE jobs SET state = $5, lease_until = NULL, finished_at = $4, \
                         updated_at = $4, last_error = $6, {left} WHERE {fence} AND {guard}"
                    ),
                    &[&done.job_id, &attempt, &worker, &now, &target, message],
                )?
            }
        };
        if changed == 0 {
            return Ok(Applied::Stale);
        }
        let (outcome, error) = match &done.resolution {
            Resolution::Succeeded { .. } => ("succeeded", None),
            Resolution::RetryAt { error, .. } => ("retry", Some(error.as_str())),
            Resolution::Dead { error, .. } => ("dead", Some(error.as_str())),
            Resolution::Cancelled { reason } => ("cancelled", Some(reason.as_str())),
            Resolution::Await { .. } => ("waiting", None),
            Resolution::Released { started: false } => ("interrupted", None),
            Resolution::Released { started: true } => ("interrupted", Some("daemon stopping")),
        };
        if !matches!(done.resolution, Resolution::Released { started: false }) {
            self.record_attempts(&[(done, started_us, outcome, error)])?;
        }
        // Follow-ups of a job bound to a node stay on it (they may name its files).
        let (children, link) = match &done.resolution {
            Resolution::Succeeded { follow_ups, .. } | Resolution::Dead { follow_ups, .. } => {
                (follow_ups.as_slice(), ParentLink::Default(done.job_id))
            }
            Resolution::Await { children } => {
                (children.as_slice(), ParentLink::Always(done.job_id))
            }
            _ => (&[][..], ParentLink::AsGiven),
        };
        if !children.is_empty() {
            let home = self.home_node_of(done.job_id)?;
            self.enqueue_linked(children, link, home.as_deref(), now)?;
        }
        if matches!(done.resolution, Resolution::Await { .. }) {
            // Nothing to wait for: it goes straight back for its fan-in run.
            self.resume_if_children_done(done.job_id, now)?;
        }
        if transition.to_state().is_terminal() {
            if let Some(parent) = done.parent_id {
                self.resume_if_children_done(parent, now)?;
            }
        }
        if let Resolution::Succeeded { sync_marks, .. } = &done.resolution {
            for mark in sync_marks {
                self.record_sync_mark(mark, done.job_id, now)?;
            }
        }
        Ok(Applied::Moved(transition.to_state()))
    }

    fn home_node_of(&self, id: JobId) -> Result<Option<String>> {
        Ok(self
            .rows("SELECT home_node FROM jobs WHERE id = $1", &[&id])?
            .first()
            .and_then(|r| r.get(0)))
    }

    /// Writes attempt rows in one statement.
    fn record_attempts(
        &self,
        rows: &[(&Completion, Option<i64>, &str, Option<&str>)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.0.job_id).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.0.attempt.max(1) as i32).collect();
        let workers: Vec<&str> = rows.iter().map(|r| r.0.worker.as_str()).collect();
        let started: Vec<i64> = rows.iter().map(|r| r.0.started_at).collect();
        let finished: Vec<i64> = rows
            .iter()
            .map(|r| r.0.finished_at.max(r.0.started_at))
            .collect();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let errors: Vec<Option<&str>> = rows.iter().map(|r| r.3).collect();
        let details: Vec<Option<&serde_json::Value>> =
            rows.iter().map(|r| r.0.detail.as_ref()).collect();
        let started_us: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
        self.run(
            "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, \
             outcome, error, detail, started_us, node) \
             SELECT *, $10 FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[], \
                                    $5::bigint[], $6::text[], $7::text[], $8::json[], \
                                    $9::bigint[])",
            &[
                &ids,
                &attempts,
                &workers,
                &started,
                &finished,
                &outcomes,
                &errors,
                &details,
                &started_us,
                &self.options.node,
            ],
        )?;
        Ok(())
    }

    /// Moves a waiting parent back to `queued` once none of its children is unfinished.
    /// The parent row is locked first (`FOR UPDATE`), so two last children finishing on
    /// two nodes at once resume it exactly once: the second waits, then sees it queued.
    pub(super) fn resume_if_children_done(&self, parent: JobId, now: UnixMillis) -> Result<bool> {
        let locked = self.rows(
            "SELECT state FROM jobs WHERE id = $1 FOR UPDATE",
            &[&parent],
        )?;
        if locked.is_empty() {
            return Ok(false);
        }
        let changed = self.run(
            &format!(
                "UPDATE jobs SET state = 'queued', attempts = 0, stage = stage + 1, run_at = $2, \
                 updated_at = $2 WHERE id = $1 AND {} AND NOT EXISTS \
                 (SELECT 1 FROM jobs WHERE parent_id = $1 AND NOT ({TERMINAL}))",
                state_guard(Transition::Resume)
            ),
            &[&parent, &now],
        )?;
        Ok(changed == 1)
    }

    /// Extends the leases of running jobs this worker holds (the heartbeat), in one
    /// statement. Returns how many were extended.
    pub fn extend_leases(
        &self,
        jobs: &[(JobId, u32)],
        worker: &str,
        lease_until: UnixMillis,
        _now: UnixMillis,
    ) -> Result<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.1 as i32).collect();
        let changed = self.run(
            "UPDATE jobs j SET lease_until = $1 FROM unnest($2::bigint[], $3::int[]) AS d(id, a) \
             WHERE j.id = d.id AND j.attempts = d.a AND j.worker = $4 AND j.state = 'running'",
            &[&lease_until, &ids, &attempts, &worker],
        )?;
        Ok(changed as usize)
    }

    /// Records that the handlers of these running attempts started, in one statement.
    pub fn record_starts(
        &self,
        starts: &[(JobId, u32, UnixMillis)],
        worker: &str,
    ) -> Result<usize> {
        if starts.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = starts.iter().map(|s| s.0).collect();
        let attempts: Vec<i32> = starts.iter().map(|s| s.1 as i32).collect();
        let ats: Vec<i64> = starts.iter().map(|s| s.2).collect();
        let changed = self.run(
            "UPDATE jobs j SET started_at = d.at \
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS d(id, a, at) \
             WHERE j.id = d.id AND j.attempts = d.a AND j.worker = $4 AND j.state = 'running'",
            &[&ids, &attempts, &ats, &worker],
        )?;
        Ok(changed as usize)
    }

    /// What handlers reported while their attempts ran.
    pub fn record_progress(
        &self,
        reports: &[(JobId, u32, serde_json::Value)],
        now: UnixMillis,
    ) -> Result<()> {
        for (id, attempt, progress) in reports {
            self.run(
                "INSERT INTO job_progress (job_id, attempt, progress, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1) \
                 ON CONFLICT (job_id, attempt) DO UPDATE SET progress = excluded.progress, \
                 updated_at = excluded.updated_at",
                &[id, &(attempt.max(&1).to_owned() as i32), progress, &now],
            )?;
        }
        Ok(())
    }

    /// When the next waiting job (this node may run) not yet due at `now` becomes due.
    pub fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>> {
        Ok(self
            .rows(
                "SELECT min(run_at) FROM jobs WHERE state IN ('queued', 'retrying') \
                 AND run_at > $1 AND (home_node IS NULL OR home_node = $2)",
                &[&now, &self.options.node],
            )?
            .first()
            .and_then(|r| r.get(0)))
    }

    pub fn get(&self, id: JobId) -> Result<Job> {
        let rows = self.rows(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
            &[&id],
        )?;
        rows.first()
            .map(job_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(id))
    }

    /// The node a job is bound to by its files, if any.
    pub fn home_node(&self, id: JobId) -> Result<Option<String>> {
        self.home_node_of(id)
    }

    /// The node running the job, or the last one that ran it.
    pub fn job_node(&self, id: JobId) -> Result<Option<String>> {
        Ok(self
            .rows("SELECT node FROM jobs WHERE id = $1", &[&id])?
            .first()
            .and_then(|r| r.get(0)))
    }

    /// The queues an operator paused.
    pub fn paused_queue_names(&self) -> Result<Vec<String>> {
        Ok(self
            .rows("SELECT queue FROM queue_pauses ORDER BY queue", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Records the end of a complete pipeline run; the mark never moves back.
    pub fn record_sync_mark(&self, mark: &SyncMark, job: JobId, now: UnixMillis) -> Result<()> {
        let items = crate::store::stored_items(mark)?;
        self.run(
            "INSERT INTO sync_state (pipeline, high_water, runs, last_run_items, \
             last_run_pages, last_run_job, updated_at) VALUES ($1, $2, 1, $3, $4, $5, $6) \
             ON CONFLICT (pipeline) DO UPDATE SET \
               high_water = greatest(sync_state.high_water, excluded.high_water), \
               runs = sync_state.runs + 1, last_run_items = excluded.last_run_items, \
               last_run_pages = excluded.last_run_pages, last_run_job = excluded.last_run_job, \
               updated_at = excluded.updated_at",
            &[
                &mark.pipeline,
                &mark.high_water,
                &items,
                &i64::from(mark.pages),
                &job,
                &now,
            ],
        )?;
        Ok(())
    }

    pub(super) fn state_of(&self, id: JobId) -> Result<JobState> {
        let state: String = self
            .rows("SELECT state FROM jobs WHERE id = $1", &[&id])?
            .first()
            .map(|r| r.get(0))
            .ok_or(StoreError::NotFound(id))?;
        state.parse().map_err(StoreError::Corrupt)
    }
}

/// The first key of the advisory locks that serialize claims of a limited queue
/// ("jobq"); the second is the queue name's hash.
pub const QUEUE_LOCK_SPACE: i32 = 0x6a6f_6271;

/// A guarded update checked beforehand must change exactly its one row.
pub(super) fn expect_one(id: JobId, action: &'static str, changed: u64) -> Result<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::RowsChanged {
            id,
            action,
            changed: changed as usize,
        })
    }
}
