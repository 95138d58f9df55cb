//! The queue's transitions inside one write transaction: enqueue, complete (with fan-in),
//! release, revive, cancel, purge, next due (the claim is `claim.rs`, leases and rescue
//! `leases.rs`). Every update is guarded by the states its [`Transition`] allows and
//! checks how many rows it changed.

use super::guards::{running_guard, state_guard, states_guard, terminal_guard, with_guards};
use super::{Result, StoreError};
use crate::flow::Router;
use crate::job::{Completion, Job, JobId, JobState, NewJob, Resolution, Transition, UnixMillis};
use crate::store::{Applied, Enqueued, ParentLink};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::sync::LazyLock;

/// The columns of a [`Job`], in the order [`job_from_row`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempts, \
     max_attempts, run_at, lease_until, worker, unique_key, parent_id, last_error, \
     deadline_at, created_at, updated_at, finished_at, source, cancel_requested, stage, \
     destination, flow_key, order_key, order_blocked";

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let payload: String = row.get(3)?;
    let state: String = row.get(4)?;
    Ok(Job {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload: serde_json::from_str(&payload).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        priority: row.get(5)?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        run_at: row.get(8)?,
        lease_until: row.get(9)?,
        worker: row.get(10)?,
        unique_key: row.get(11)?,
        parent_id: row.get(12)?,
        last_error: row.get(13)?,
        deadline_at: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
        finished_at: row.get(17)?,
        source: row.get(18)?,
        cancel_requested: row.get(19)?,
        stage: row.get(20)?,
        destination: row.get(21)?,
        flow_key: row.get(22)?,
        order_key: row.get(23)?,
        order_blocked: row.get(24)?,
    })
}

/// Values per inserted row.
const INSERT_VALUES: usize = 14;
/// Rows per multi-row insert, largest first: a run of jobs goes in statements of the
/// largest size that fits, so a batch of 1,000 takes 10 statements (3 x 256, 3 x 64,
/// 2 x 16, 2 x 4) and none row by row. Each size is prepared once and cached; 256 rows of
/// 14 values stay far below SQLite's parameter limit (32,766).
const INSERT_SIZES: [usize; 4] = [256, 64, 16, 4];

/// `INSERT INTO jobs ... VALUES (...), (...)` for `rows` rows; with `on_conflict`, a
/// unique-key conflict inserts nothing (single rows only, so the caller knows which).
fn insert_sql(rows: usize, on_conflict: bool) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let n = r * INSERT_VALUES;
            // created_at and updated_at are both the 11th value (now).
            let values: Vec<String> = (1..=11)
                .chain([11])
                .chain(12..=INSERT_VALUES)
                .map(|v| format!("?{}", n + v))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts, unique_key, \
                           deadline_at, parent_id, source, created_at, updated_at, \
                           destination, flow_key, order_key) VALUES {}{}",
        tuples.join(", "),
        if on_conflict {
            " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"
        } else {
            ""
        }
    )
}

/// Binds the [`INSERT_VALUES`] values of one job's row, in [`insert_sql`]'s order, as
/// row `row` of `insert`. They are bound from the job's own fields (SQLite copies them),
/// not gathered into owned values first: a copy of every string of every job less.
fn bind_row(
    insert: &mut rusqlite::Statement<'_>,
    row: usize,
    job: &NewJob,
    payload: &str,
    link: ParentLink,
    now: UnixMillis,
) -> rusqlite::Result<()> {
    let n = row * INSERT_VALUES;
    insert.raw_bind_parameter(n + 1, job.queue.as_str())?;
    insert.raw_bind_parameter(n + 2, job.kind.as_str())?;
    insert.raw_bind_parameter(n + 3, payload)?;
    insert.raw_bind_parameter(n + 4, job.priority)?;
    insert.raw_bind_parameter(n + 5, job.run_at.unwrap_or(now))?;
    insert.raw_bind_parameter(n + 6, job.max_attempts)?;
    insert.raw_bind_parameter(n + 7, job.unique_key.as_deref())?;
    insert.raw_bind_parameter(n + 8, job.deadline_at)?;
    insert.raw_bind_parameter(n + 9, link.parent_of(job))?;
    insert.raw_bind_parameter(n + 10, job.source.as_deref())?;
    insert.raw_bind_parameter(n + 11, now)?;
    insert.raw_bind_parameter(n + 12, job.destination.as_deref())?;
    insert.raw_bind_parameter(n + 13, job.flow_key.as_deref().unwrap_or(""))?;
    insert.raw_bind_parameter(n + 14, job.order_key.as_deref())
}

/// A schema refusal (a CHECK constraint) as a sentence about the job.
fn schema_refusal(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::InvalidJob(format!("refused by the schema: {e}"))
        }
        _ => e.into(),
    }
}

/// One write transaction, offering the queue's transitions.
pub struct SqliteTx<'a> {
    /// The connection, inside the `BEGIN IMMEDIATE` that [`super::SqliteStore::write`] opened.
    pub(super) tx: &'a Connection,
    /// Gives each job enqueued without a destination its route ([`crate::flow`]).
    router: Option<&'a dyn Router>,
}

/// The update that records a completion, per transition: ?1 id, ?2 attempt, ?3 worker,
/// ?4 now, then the transition's own values; it returns the job's order key (whose
/// line moves on when the job finishes). Only the attempt that holds the job may
/// finish it; the guard from `job.rs` comes on top.
fn completion_sql(transition: Transition) -> &'static str {
    static SQL: LazyLock<Vec<(Transition, String)>> = LazyLock::new(|| {
        let fence = format!(
            "id = ?1 AND attempts = ?2 AND worker IS ?3 AND {}",
            running_guard()
        );
        // Leaving `running` forgets which claim held the row and when it started.
        let left = "started_at = NULL, claim = NULL";
        [
            (
                Transition::Complete,
                "state = 'succeeded', lease_until = NULL, finished_at = ?4, updated_at = ?4, \
                 last_error = NULL",
            ),
            (
                Transition::RetryLater,
                "state = 'retrying', lease_until = NULL, run_at = ?5, last_error = ?6, \
                 updated_at = ?4",
            ),
            (
                Transition::Kill,
                "state = ?5, lease_until = NULL, finished_at = ?4, updated_at = ?4, last_error = ?6",
            ),
            (
                Transition::Cancel,
                "state = ?5, lease_until = NULL, finished_at = ?4, updated_at = ?4, last_error = ?6",
            ),
            (
                Transition::Await,
                "state = 'waiting', lease_until = NULL, updated_at = ?4",
            ),
            (
                Transition::Release,
                "state = 'queued', attempts = attempts - 1, lease_until = NULL, worker = NULL, \
                 updated_at = ?4",
            ),
        ]
        .into_iter()
        .map(|(t, set)| {
            (
                t,
                format!(
                    "UPDATE jobs SET {set}, {left} WHERE {fence} AND {} RETURNING order_key",
                    state_guard(t)
                ),
            )
        })
        .collect()
    });
    SQL.iter()
        .find(|(t, _)| *t == transition)
        .map(|(_, sql)| sql.as_str())
        .expect("every resolution's transition has an update")
}

impl<'a> SqliteTx<'a> {
    pub(super) fn new(tx: &'a Connection, router: Option<&'a dyn Router>) -> SqliteTx<'a> {
        SqliteTx { tx, router }
    }

    /// The transaction, for the store's other modules (sync state).
    pub(super) fn conn(&self) -> &Connection {
        self.tx
    }

    /// Enqueues jobs all or nothing. A job whose unique key exists already is not added;
    /// its existing id comes back marked as a duplicate.
    pub fn enqueue(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Vec<Enqueued>> {
        self.enqueue_linked(jobs, ParentLink::AsGiven, now)
    }

    fn enqueue_linked(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        crate::store::validate_all(jobs)?;
        let routed = self.routed(jobs, now)?;
        if let Some(routed) = &routed {
            // What the route added (an order key read from the payload may be empty)
            // is checked like the rest: this connection skips the schema's CHECKs.
            crate::store::validate_all(routed)?;
        }
        let jobs = routed.as_deref().unwrap_or(jobs);
        if jobs.len() == 1 && jobs[0].order_key.is_none() {
            // One job without an order key is one INSERT (and a read for a duplicate),
            // and a statement that fails leaves nothing of itself: no savepoint.
            return self.insert_all(jobs, link, now);
        }
        // A savepoint, so a refused batch leaves the rest of a group commit standing.
        // Prepared once: parsing these two for every request was a tenth of a single
        // enqueue's turn.
        self.tx.prepare_cached("SAVEPOINT enqueue")?.execute([])?;
        let result = self.insert_all(jobs, link, now).and_then(|ids| {
            let keyed: Vec<(JobId, &str)> = jobs
                .iter()
                .zip(&ids)
                .filter(|(_, enqueued)| !enqueued.duplicate)
                .filter_map(|(job, enqueued)| Some((enqueued.id, job.order_key.as_deref()?)))
                .collect();
            self.order_enqueued(&keyed)?;
            Ok(ids)
        });
        match result {
            Ok(ids) => {
                self.tx.prepare_cached("RELEASE enqueue")?.execute([])?;
                Ok(ids)
            }
            Err(e) => {
                self.tx
                    .execute_batch("ROLLBACK TO enqueue; RELEASE enqueue")?;
                Err(e)
            }
        }
    }

    /// The jobs with their routes (destination, key, order key) where the router gives
    /// one, and those of a held destination due when its hold ends, like the rows the
    /// hold parked; `None` when nothing changes (no copy of a large batch).
    fn routed(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Option<Vec<NewJob>>> {
        let mut routed: Option<Vec<NewJob>> = None;
        if let Some(router) = self.router {
            for (i, job) in jobs.iter().enumerate() {
                if let Some(job) = crate::flow::apply_route(router, job) {
                    routed.get_or_insert_with(|| jobs.to_vec())[i] = job;
                }
            }
        }
        let current = routed.as_deref().unwrap_or(jobs);
        if current.iter().all(|j| j.destination.is_none()) {
            return Ok(routed);
        }
        let holds = self.holds_in_force(now)?;
        if holds.is_empty() {
            return Ok(routed);
        }
        let mut parked = routed.unwrap_or_else(|| jobs.to_vec());
        for job in &mut parked {
            if let Some(destination) = &job.destination {
                let key = (
                    destination.clone(),
                    job.flow_key.clone().unwrap_or_default(),
                );
                if let Some(until) = holds.get(&key) {
                    job.run_at = Some(job.run_at.unwrap_or(now).max(*until));
                }
            }
        }
        Ok(Some(parked))
    }

    /// Inserts in order. Runs of jobs without a unique key go in multi-row statements
    /// ([`INSERT_SIZES`]); their ids follow from the largest id before it, read in the same write
    /// transaction, and are checked against the statement's row count and last rowid.
    /// (`RETURNING id` made SQLite keep the ids in a temporary table: about 1,400 of
    /// the socket batch enqueue's 40,700 instructions a job, scripts/enqueue-callgrind.sh.) A job with a unique key goes in alone, so a
    /// conflict can name the job that exists.
    fn insert_all(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        // The SQL is built once; a single-job enqueue (the socket's usual request) never
        // touches the long one, and takes its id from the connection's own last insert.
        static SINGLE: LazyLock<String> = LazyLock::new(|| insert_sql(1, true));
        static MANY: LazyLock<[String; INSERT_SIZES.len()]> =
            LazyLock::new(|| INSERT_SIZES.map(|rows| insert_sql(rows, false)));
        let mut single = self.tx.prepare_cached(&SINGLE)?;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut payloads: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::with_capacity(INSERT_SIZES[0]);
        let mut rest = jobs;
        while !rest.is_empty() {
            let free = rest
                .iter()
                .take(INSERT_SIZES[0])
                .take_while(|job| job.unique_key.is_none())
                .count();
            let size = INSERT_SIZES.iter().position(|&rows| rows <= free);
            if let Some(size) = size {
                let run = INSERT_SIZES[size];
                // The run's payloads are written into one buffer, end to end, and bound
                // as slices of it: one allocation a statement rather than one a job.
                payloads.clear();
                ends.clear();
                for job in &rest[..run] {
                    serde_json::to_writer(&mut payloads, &job.payload)
                        .map_err(|e| StoreError::InvalidJob(format!("payload: {e}")))?;
                    ends.push(payloads.len());
                }
                let payloads = std::str::from_utf8(&payloads)
                    .map_err(|e| StoreError::InvalidJob(format!("payload: {e}")))?;
                let before: JobId = self
                    .tx
                    .prepare_cached("SELECT coalesce(max(id), 0) FROM jobs")?
                    .query_row([], |row| row.get(0))?;
                let mut many = self.tx.prepare_cached(&MANY[size])?;
                let mut start = 0;
                for (row, (job, &end)) in rest[..run].iter().zip(&ends).enumerate() {
                    bind_row(&mut many, row, job, &payloads[start..end], link, now)?;
                    start = end;
                }
                let inserted = many.raw_execute().map_err(schema_refusal)?;
                let last = self.tx.last_insert_rowid();
                // Each new row takes the largest id + 1 (no AUTOINCREMENT; the random
                // pick happens only once the largest is i64::MAX, where the sum below
                // overflows), so the run's rows hold before+1 ..= before+run, in order.
                if inserted != run || before.checked_add(run as i64) != Some(last) {
                    return Err(StoreError::InvalidJob(format!(
                        "a batch insert of {run} jobs after id {before} inserted {inserted} \
                         ending at id {last}"
                    )));
                }
                ids.extend((before + 1..=last).map(|id| Enqueued {
                    id,
                    duplicate: false,
                }));
                rest = &rest[run..];
            } else {
                ids.push(self.insert(&mut single, &rest[0], link, now)?);
                rest = &rest[1..];
            }
        }
        Ok(ids)
    }

    fn insert(
        &self,
        insert: &mut rusqlite::CachedStatement<'_>,
        job: &NewJob,
        link: ParentLink,
        now: UnixMillis,
    ) -> Result<Enqueued> {
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| StoreError::InvalidJob(format!("payload: {e}")))?;
        let inserted = insert
            .execute(params![
                job.queue,
                job.kind,
                payload,
                job.priority,
                job.run_at.unwrap_or(now),
                job.max_attempts,
                job.unique_key,
                job.deadline_at,
                link.parent_of(job),
                job.source,
                now,
                job.destination,
                job.flow_key.as_deref().unwrap_or(""),
                job.order_key
            ])
            .map_err(schema_refusal)?;
        if inserted == 1 {
            return Ok(Enqueued {
                id: self.tx.last_insert_rowid(),
                duplicate: false,
            });
        }
        let id = self
            .tx
            .prepare_cached("SELECT id FROM jobs WHERE unique_key = ?1")?
            .query_row([&job.unique_key], |row| row.get(0))?;
        Ok(Enqueued {
            id,
            duplicate: true,
        })
    }

    /// Records a finished attempt: moves the job as the resolution says, writes the
    /// attempt row, and enqueues any follow-ups, all or nothing. A completion for an
    /// attempt that no longer holds the job changes nothing and says so.
    pub fn complete(&self, done: &Completion, now: UnixMillis) -> Result<Applied> {
        self.complete_started(done, None, now)
    }

    /// [`SqliteTx::complete`], with the handler's start in microseconds for the attempt row.
    pub fn complete_started(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        now: UnixMillis,
    ) -> Result<Applied> {
        let sql = completion_sql(done.resolution.transition());
        let mut update = self.tx.prepare_cached(sql)?;
        let order_key = |row: &Row<'_>| row.get::<_, Option<String>>(0);
        let moved = match &done.resolution {
            Resolution::Succeeded { .. }
            | Resolution::Released { .. }
            | Resolution::Await { .. } => update.query_row(
                params![done.job_id, done.attempt, done.worker, now],
                order_key,
            ),
            Resolution::RetryAt { run_at, error } => update.query_row(
                params![done.job_id, done.attempt, done.worker, now, run_at, error],
                order_key,
            ),
            Resolution::Dead { error: message, .. } | Resolution::Cancelled { reason: message } => {
                let target = done.resolution.transition().to_state().as_str();
                update.query_row(
                    params![done.job_id, done.attempt, done.worker, now, target, message],
                    order_key,
                )
            }
        }
        .optional()?;
        let Some(order_key) = moved else {
            return Ok(Applied::Stale);
        };
        if let Some(key) = &order_key {
            if done.resolution.transition().to_state().is_terminal() {
                self.order_left(key)?;
            }
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
        let ran = !matches!(done.resolution, Resolution::Released { started: false });
        if ran {
            self.record_attempt(done, started_us, outcome, error)?;
        }
        match &done.resolution {
            Resolution::Succeeded { follow_ups, .. } | Resolution::Dead { follow_ups, .. } => {
                self.enqueue_children(done.job_id, follow_ups, false, now)?;
            }
            Resolution::Await { children } => {
                self.enqueue_children(done.job_id, children, true, now)?;
                // Nothing to wait for: it goes straight back for its fan-in run.
                self.resume_if_children_done(done.job_id, now)?;
            }
            _ => {}
        }
        let target = done.resolution.transition().to_state();
        if target.is_terminal() {
            if let Some(parent) = done.parent_id {
                self.resume_if_children_done(parent, now)?;
            }
        }
        if let Resolution::Succeeded { sync_marks, .. } = &done.resolution {
            for mark in sync_marks {
                self.record_sync_mark(mark, done.job_id, now)?;
            }
        }
        Ok(Applied::Moved(done.resolution.transition().to_state()))
    }

    /// Enqueues follow-ups of `parent`. Children a parent waits for are always linked to
    /// it; other follow-ups keep a parent they name, else get this one.
    fn enqueue_children(
        &self,
        parent: JobId,
        children: &[NewJob],
        linked: bool,
        now: UnixMillis,
    ) -> Result<()> {
        if children.is_empty() {
            return Ok(());
        }
        let link = if linked {
            ParentLink::Always(parent)
        } else {
            ParentLink::Default(parent)
        };
        self.enqueue_linked(children, link, now)?;
        Ok(())
    }

    /// Moves a waiting parent back to `queued` once none of its children is unfinished:
    /// a fresh attempt budget and the next stage, so its handler can sum up.
    ///
    /// The parent's row is written (locked) first and the children are counted in a
    /// later statement: two children finishing at once in two transactions then meet at
    /// the parent, and the second one's count sees the first one's commit, so exactly
    /// one resumes it. (SQLite's write lock already serialises them; a driver with row
    /// locks and per-statement snapshots needs the order.)
    pub(super) fn resume_if_children_done(&self, parent: JobId, now: UnixMillis) -> Result<bool> {
        static LOCK: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET updated_at = updated_at WHERE id = ?1 AND {}",
                state_guard(Transition::Resume)
            )
        });
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = '{queued}', attempts = 0, stage = stage + 1, \
                 run_at = ?2, updated_at = ?2 WHERE id = ?1 AND {guard} AND NOT EXISTS \
                 (SELECT 1 FROM jobs WHERE parent_id = ?1 AND NOT {terminal})",
                queued = Transition::Resume.to_state().as_str(),
                guard = state_guard(Transition::Resume),
                terminal = terminal_guard()
            )
        });
        if self.tx.prepare_cached(&LOCK)?.execute([parent])? == 0 {
            // Not waiting (a follow-up's parent that finished, or gone): nothing to do.
            return Ok(false);
        }
        Ok(self
            .tx
            .prepare_cached(&SQL)?
            .execute(params![parent, now])?
            == 1)
    }

    fn record_attempt(
        &self,
        done: &Completion,
        started_us: Option<i64>,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<()> {
        let detail = done.detail.as_ref().map(|d| d.to_string());
        self.tx
            .prepare_cached(
                "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, \
                 outcome, error, detail, started_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                done.job_id,
                done.attempt,
                done.worker,
                done.started_at,
                done.finished_at.max(done.started_at),
                outcome,
                error,
                detail,
                started_us
            ])?;
        Ok(())
    }

    /// An operator sends dead or cancelled jobs round again: queued now, attempts reset.
    /// A job in any other state is refused, naming its state.
    pub fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = '{queued}', attempts = 0, run_at = ?2, \
                 finished_at = NULL, cancel_requested = 0, worker = NULL, updated_at = ?2 \
                 WHERE id = ?1 AND {guard} RETURNING order_key",
                queued = Transition::Revive.to_state().as_str(),
                guard = state_guard(Transition::Revive)
            )
        });
        let mut stmt = self.tx.prepare_cached(&SQL)?;
        let mut keyed = Vec::new();
        for id in ids {
            let revived: Option<Option<String>> = stmt
                .query_row(params![id, now], |row| row.get(0))
                .optional()?;
            match revived {
                Some(key) => keyed.extend(key.map(|key| (*id, key))),
                None => return Err(self.refusal(*id, Transition::Revive, "retry", 0)),
            }
        }
        self.order_rejoined(&mut keyed)?;
        Ok(ids.to_vec())
    }

    /// Revives every dead job, or those of one kind. Returns their ids.
    pub fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            debug_assert!(Transition::Revive.allows(JobState::Dead));
            format!(
                "UPDATE jobs SET state = '{queued}', attempts = 0, run_at = ?1, \
                 finished_at = NULL, cancel_requested = 0, worker = NULL, updated_at = ?1 \
                 WHERE {dead} AND (?2 IS NULL OR kind = ?2) RETURNING id, order_key",
                queued = Transition::Revive.to_state().as_str(),
                dead = states_guard(&[JobState::Dead])
            )
        });
        let mut stmt = self.tx.prepare_cached(&SQL)?;
        let revived = stmt
            .query_map(params![now, kind], |row| {
                Ok((row.get::<_, JobId>(0)?, row.get::<_, Option<String>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut keyed: Vec<(JobId, String)> = revived
            .iter()
            .filter_map(|(id, key)| Some((*id, key.clone()?)))
            .collect();
        self.order_rejoined(&mut keyed)?;
        Ok(revived.into_iter().map(|(id, _)| id).collect())
    }

    /// An operator cancels a job: a waiting one is cancelled at once; a running one is
    /// asked to stop (its handler sees the request and the job ends `cancelled`).
    /// Returns the state the job is in afterwards.
    ///
    /// Each way is one guarded update whose changed rows decide, never a state read
    /// first: a job that moves meanwhile (under a driver with row locks) is not
    /// mistaken for one in the state it was read in.
    pub fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState> {
        static CANCEL_WAITING: LazyLock<String> = LazyLock::new(|| {
            let waiting: Vec<JobState> = Transition::Cancel
                .from_states()
                .iter()
                .copied()
                .filter(|s| *s != JobState::Running)
                .collect();
            format!(
                "UPDATE jobs SET state = '{cancelled}', finished_at = ?2, updated_at = ?2, \
                 last_error = 'cancelled by an operator' WHERE id = ?1 AND {guard} \
                 RETURNING parent_id, order_key",
                cancelled = Transition::Cancel.to_state().as_str(),
                guard = states_guard(&waiting)
            )
        });
        static REQUEST_STOP: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1 AND {}",
                running_guard()
            )
        });
        let cancelled: Option<(Option<JobId>, Option<String>)> = self
            .tx
            .prepare_cached(&CANCEL_WAITING)?
            .query_row(params![id, now], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((parent, order_key)) = cancelled {
            if let Some(key) = order_key {
                self.order_left(&key)?;
            }
            if let Some(parent) = parent {
                self.resume_if_children_done(parent, now)?;
            }
            return Ok(JobState::Cancelled);
        }
        let asked = self
            .tx
            .prepare_cached(&REQUEST_STOP)?
            .execute(params![id, now])?;
        if asked == 1 {
            return Ok(JobState::Running);
        }
        Err(self.refusal(id, Transition::Cancel, "cancel", asked))
    }

    /// Why a guarded update of one job changed `changed` rows instead of 1: the job is
    /// missing, its state forbids the transition, or (its state allowing it) something
    /// else kept the row from changing.
    pub(super) fn refusal(
        &self,
        id: JobId,
        transition: Transition,
        action: &'static str,
        changed: usize,
    ) -> StoreError {
        let state = match self.state_of(id) {
            Ok(state) => state,
            Err(e) => return e,
        };
        match transition.check(id, state) {
            Err(forbidden) => forbidden.into(),
            Ok(_) => StoreError::RowsChanged {
                id,
                action,
                changed,
            },
        }
    }

    pub(super) fn parent_of(&self, id: JobId) -> Result<Option<JobId>> {
        Ok(self
            .tx
            .prepare_cached("SELECT parent_id FROM jobs WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?
            .flatten())
    }

    /// Deletes finished jobs of a terminal state that finished before `before`, with their
    /// attempts, in chunks so no transaction grows large. Returns how many went.
    pub fn purge_finished(
        &self,
        state: JobState,
        before: UnixMillis,
        chunk: usize,
    ) -> Result<usize> {
        if !state.is_terminal() {
            return Err(StoreError::InvalidJob(format!(
                "only finished jobs can be purged, not {state} ones"
            )));
        }
        let deleted = self
            .tx
            .prepare_cached(
                // `LIMIT +?3`: a bare `LIMIT ?3` is prepared again at every bind (see
                // the claim's statements in claim.rs).
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ?1 \
                 AND finished_at < ?2 LIMIT +?3)",
            )?
            .execute(params![state.as_str(), before, chunk as i64])?;
        Ok(deleted)
    }

    pub fn get(&self, id: JobId) -> Result<Job> {
        self.tx
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound(id))
    }

    /// A waiting job whose payload `note` says this (used by the example database).
    pub(super) fn next_cancellable(&self, note: &str) -> Result<Option<JobId>> {
        Ok(self
            .tx
            .query_row(
                with_guards(
                    "SELECT id FROM jobs WHERE {ready} \
                     AND json_extract(payload, '$.note') = ?1 ORDER BY id LIMIT 1",
                ),
                [note],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn state_of(&self, id: JobId) -> Result<JobState> {
        let state: Option<String> = self
            .tx
            .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?;
        let state = state.ok_or(StoreError::NotFound(id))?;
        state.parse().map_err(StoreError::Corrupt)
    }
}
