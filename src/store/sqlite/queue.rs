//! The queue's transitions inside one write transaction: enqueue, claim, complete, extend
//! leases, rescue, release, revive, cancel, purge. Every update is guarded by the states
//! its [`Transition`] allows and checks how many rows it changed.

use super::{Result, StoreError};
use crate::job::{Completion, Job, JobId, JobState, NewJob, Resolution, Transition, UnixMillis};
use crate::store::{Applied, ClaimSpec, Enqueued, HeldClaim};
use rusqlite::{params, OptionalExtension, Row, Transaction};
use std::sync::LazyLock;

/// The columns of a [`Job`], in the order [`job_from_row`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempts, \
     max_attempts, run_at, lease_until, worker, unique_key, parent_id, last_error, \
     deadline_at, created_at, updated_at, finished_at, source, cancel_requested, stage";

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
    })
}

/// `(state = 'a' OR state = 'b')` for the states a transition may start from: the guard
/// of every update comes from the state machine in `job.rs`, not from a second list here.
/// An OR chain, not an IN list, to match the partial indexes (see the migration).
pub(super) fn state_guard(transition: Transition) -> String {
    states_guard(transition.from_states())
}

/// `(state = 'a' OR state = 'b')` for these states.
pub(super) fn states_guard(states: &[JobState]) -> String {
    let states: Vec<String> = states
        .iter()
        .map(|s| format!("state = '{}'", s.as_str()))
        .collect();
    format!("({})", states.join(" OR "))
}

/// Rows per multi-row insert (11 values each, far below SQLite's parameter limit).
const INSERT_ROWS: usize = 64;

/// `INSERT INTO jobs ... VALUES (...), (...)` for `rows` rows; with `on_conflict`, a
/// unique-key conflict inserts nothing (single rows only, so the caller knows which).
fn insert_sql(rows: usize, on_conflict: bool) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let n = r * 11;
            format!(
                "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8,
                n + 9,
                n + 10,
                n + 11,
                n + 11
            )
        })
        .collect();
    format!(
        "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts, unique_key, \
                           deadline_at, parent_id, source, created_at, updated_at) VALUES {}{}",
        tuples.join(", "),
        if on_conflict {
            " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"
        } else {
            ""
        }
    )
}

/// Whose follow-ups are being inserted, so a child's `parent_id` is set without copying
/// the job (a relay batch's thousands of deliveries would otherwise be cloned).
#[derive(Clone, Copy)]
enum ParentLink {
    /// Plain enqueue: the job's own `parent_id`.
    AsGiven,
    /// A follow-up: the parent it names, else this one.
    Default(JobId),
    /// A child its parent waits for: always this parent.
    Always(JobId),
}

impl ParentLink {
    fn parent_of(self, job: &NewJob) -> Option<JobId> {
        match self {
            ParentLink::AsGiven => job.parent_id,
            ParentLink::Default(parent) => job.parent_id.or(Some(parent)),
            ParentLink::Always(parent) => Some(parent),
        }
    }
}

/// The 11 values of one job's row, in [`insert_sql`]'s order.
fn push_row(
    values: &mut Vec<rusqlite::types::Value>,
    job: &NewJob,
    link: ParentLink,
    now: UnixMillis,
) -> Result<()> {
    use rusqlite::types::Value as V;
    let payload = serde_json::to_string(&job.payload)
        .map_err(|e| StoreError::InvalidJob(format!("payload: {e}")))?;
    let optional = |v: Option<i64>| v.map_or(V::Null, V::Integer);
    values.extend([
        V::Text(job.queue.clone()),
        V::Text(job.kind.clone()),
        V::Text(payload),
        V::Integer(job.priority),
        V::Integer(job.run_at.unwrap_or(now)),
        optional(job.max_attempts.map(i64::from)),
        job.unique_key.clone().map_or(V::Null, V::Text),
        optional(job.deadline_at),
        optional(link.parent_of(job)),
        job.source.clone().map_or(V::Null, V::Text),
        V::Integer(now),
    ]);
    Ok(())
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

/// A guarded update checked beforehand must change exactly its one row.
fn expect_one(id: JobId, action: &'static str, changed: usize) -> Result<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::RowsChanged {
            id,
            action,
            changed,
        })
    }
}

/// A finished job: succeeded, dead or cancelled.
const TERMINAL: &str = "(state = 'succeeded' OR state = 'dead' OR state = 'cancelled')";

/// A running job whose lease ran out: id, kind, attempts, own max_attempts, worker,
/// when it was last touched, and whose claim it was.
type ExpiredLease = (
    JobId,
    String,
    u32,
    Option<u32>,
    Option<String>,
    UnixMillis,
    HeldClaim,
);

/// One write transaction, offering the queue's transitions.
pub struct SqliteTx<'a> {
    pub(super) tx: &'a Transaction<'a>,
}

/// The update that records a completion, per transition: ?1 id, ?2 attempt, ?3 worker,
/// ?4 now, then the transition's own values. Only the attempt that holds the job may
/// finish it; the guard from `job.rs` comes on top.
fn completion_sql(transition: Transition) -> &'static str {
    static SQL: LazyLock<Vec<(Transition, String)>> = LazyLock::new(|| {
        let fence = "id = ?1 AND attempts = ?2 AND worker IS ?3 AND state = 'running'";
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
                    "UPDATE jobs SET {set}, {left} WHERE {fence} AND {}",
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

/// The statements of a claim. Every one seeks `jobs_queue_ready` (queue, priority DESC,
/// run_at, id): a queue the claim may not take from costs the one seek that steps over
/// it, and inside a queue each priority's due rows (`run_at <= now`) are one range, so
/// neither rows waiting in an excluded queue nor rows due later are ever walked.
struct ClaimSql {
    /// ?1 a queue name: the next queue after it with ready rows, and its top priority.
    next_queue: String,
    /// ?1 queue, ?2 priority: the next lower priority with ready rows in that queue.
    next_priority: String,
    /// ?1 queue, ?2 priority, ?3 now, ?4 how many: the due rows' order keys, to merge
    /// several queues by priority, run_at and id.
    group_keys: String,
    /// ?1 lease_until, ?2 worker, ?3 now, ?4 how many, ?5 claim number, ?6 queue,
    /// ?7 priority: claims the first due rows of one (queue, priority) group.
    claim_group: String,
}

static CLAIM: LazyLock<ClaimSql> = LazyLock::new(|| {
    let guard = state_guard(Transition::Claim);
    let ready = format!("FROM jobs INDEXED BY jobs_queue_ready WHERE {guard}");
    ClaimSql {
        next_queue: format!(
            "SELECT queue, priority {ready} AND queue > ?1 ORDER BY queue, priority DESC LIMIT 1"
        ),
        next_priority: format!(
            "SELECT priority {ready} AND queue = ?1 AND priority < ?2 \
             ORDER BY priority DESC LIMIT 1"
        ),
        group_keys: format!(
            "SELECT run_at, id {ready} AND queue = ?1 AND priority = ?2 AND run_at <= ?3 \
             ORDER BY run_at, id LIMIT ?4"
        ),
        claim_group: format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?1, \
             worker = ?2, updated_at = ?3, claim = ?5, started_at = NULL \
             WHERE id IN (SELECT id {ready} AND queue = ?6 AND priority = ?7 AND run_at <= ?3 \
                          ORDER BY run_at, id LIMIT ?4) \
             RETURNING {JOB_COLUMNS}"
        ),
    }
});

/// A queue the claim may take from: its name, the priority of its first ready group,
/// and how many of its jobs this claim may take.
struct ClaimableQueue {
    name: String,
    top_priority: i64,
    room: usize,
}

impl<'a> SqliteTx<'a> {
    pub(super) fn new(tx: &'a Transaction<'a>) -> SqliteTx<'a> {
        SqliteTx { tx }
    }

    /// The transaction, for the store's other modules (sync state).
    pub(super) fn conn(&self) -> &Transaction<'a> {
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
        for job in jobs {
            job.validate().map_err(StoreError::InvalidJob)?;
        }
        // A savepoint, so a refused batch leaves the rest of a group commit standing.
        self.tx.execute_batch("SAVEPOINT enqueue")?;
        let result = self.insert_all(jobs, link, now);
        match result {
            Ok(ids) => {
                self.tx.execute_batch("RELEASE enqueue")?;
                Ok(ids)
            }
            Err(e) => {
                self.tx
                    .execute_batch("ROLLBACK TO enqueue; RELEASE enqueue")?;
                Err(e)
            }
        }
    }

    /// Inserts in order. Runs of jobs without a unique key go in [`INSERT_ROWS`] rows per
    /// statement: their ids are consecutive, ending at `last_insert_rowid()`, because this
    /// transaction holds the write lock and a new rowid is the largest one plus one. A job
    /// with a unique key goes in alone, so a conflict can name the job that exists.
    fn insert_all(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        // No RETURNING: it costs a temporary B-tree per row. The SQL is built once; a
        // single-job enqueue (the socket's usual request) never touches the long one.
        static SINGLE: LazyLock<String> = LazyLock::new(|| insert_sql(1, true));
        static MANY: LazyLock<String> = LazyLock::new(|| insert_sql(INSERT_ROWS, false));
        let mut single = self.tx.prepare_cached(&SINGLE)?;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut rest = jobs;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .take(INSERT_ROWS)
                .take_while(|job| job.unique_key.is_none())
                .count();
            if run == INSERT_ROWS {
                let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(run * 11);
                for job in &rest[..run] {
                    push_row(&mut values, job, link, now)?;
                }
                self.tx
                    .prepare_cached(&MANY)?
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(schema_refusal)?;
                let last = self.tx.last_insert_rowid();
                ids.extend((last - run as i64 + 1..=last).map(|id| Enqueued {
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
                now
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

    /// Claims ready jobs (`queued | retrying`, due by `now`) in priority, then run_at,
    /// then id order: each becomes `running` with its attempt counted and a lease. The
    /// attempt is only reserved: a job whose handler never starts gets it back
    /// ([`SqliteTx::rescue_expired`]). Without a claim number, recovery cannot tell whether
    /// it started and charges it.
    pub fn claim(
        &self,
        spec: &ClaimSpec,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        self.claim_numbered(spec, None, worker, lease_until, now)
    }

    /// [`SqliteTx::claim`], recording `claim` (the daemon's number for this claim, which its
    /// start journal names) on every row it claims.
    pub fn claim_numbered(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        let mut claimed = Vec::new();
        if spec.limit == 0 {
            return Ok(claimed);
        }
        let queues = self.claimable_queues(spec)?;
        let claim_group = |queue: &str, priority: i64, take: usize, into: &mut Vec<Job>| {
            let mut stmt = self.tx.prepare_cached(&CLAIM.claim_group)?;
            let rows = stmt.query_map(
                params![
                    lease_until,
                    worker,
                    now,
                    take as i64,
                    claim,
                    queue,
                    priority
                ],
                job_from_row,
            )?;
            let before = into.len();
            for job in rows {
                into.push(job?);
            }
            Ok::<usize, StoreError>(into.len() - before)
        };
        let wanted: usize = queues.iter().map(|q| q.room).sum();
        if wanted <= spec.limit {
            // Every queue may take all it has room for: no merge needed. Inside a queue,
            // higher priorities go first, each one's due rows in run_at, id order.
            for queue in &queues {
                let mut left = queue.room;
                let mut priority = Some(queue.top_priority);
                while let Some(p) = priority.filter(|_| left > 0) {
                    left -= claim_group(&queue.name, p, left, &mut claimed)?;
                    priority = if left > 0 {
                        self.next_priority(&queue.name, p)?
                    } else {
                        None
                    };
                }
            }
        } else {
            // More room than the limit: read each queue's best candidates' keys, merge
            // them by priority, run_at and id, then claim each group's chosen prefix
            // (this transaction holds the write lock, so the prefix is the same rows).
            let mut candidates: Vec<(i64, UnixMillis, JobId, usize)> = Vec::new();
            let mut groups: Vec<(&str, i64)> = Vec::new();
            for queue in &queues {
                let mut left = queue.room;
                let mut priority = Some(queue.top_priority);
                while let Some(p) = priority.filter(|_| left > 0) {
                    let group = groups.len();
                    groups.push((&queue.name, p));
                    let mut stmt = self.tx.prepare_cached(&CLAIM.group_keys)?;
                    let keys = stmt.query_map(params![queue.name, p, now, left as i64], |row| {
                        Ok((p, row.get(0)?, row.get(1)?, group))
                    })?;
                    let before = candidates.len();
                    for key in keys {
                        candidates.push(key?);
                    }
                    left -= candidates.len() - before;
                    priority = if left > 0 {
                        self.next_priority(&queue.name, p)?
                    } else {
                        None
                    };
                }
            }
            candidates
                .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut chosen = vec![0usize; groups.len()];
            for (_, _, _, group) in candidates.iter().take(spec.limit) {
                chosen[*group] += 1;
            }
            for ((queue, priority), take) in groups.iter().zip(chosen) {
                if take > 0 {
                    claim_group(queue, *priority, take, &mut claimed)?;
                }
            }
        }
        // RETURNING gives rows in no promised order.
        claimed.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(claimed)
    }

    /// The queues with ready rows this claim may take from, in name order, each with its
    /// room (its own limit's, bounded by the claim's). One seek per queue with ready
    /// rows, whatever they hold: a paused queue or one at its limit is stepped over.
    fn claimable_queues(&self, spec: &ClaimSpec) -> Result<Vec<ClaimableQueue>> {
        let mut stmt = self.tx.prepare_cached(&CLAIM.next_queue)?;
        let mut queues = Vec::new();
        let mut after = String::new();
        while let Some((name, top_priority)) = stmt
            .query_row([&after], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
            .optional()?
        {
            let room = spec
                .limited_queues
                .iter()
                .find(|(q, _)| *q == name)
                .map_or(spec.limit, |(_, room)| (*room).min(spec.limit));
            if room > 0 {
                queues.push(ClaimableQueue {
                    name: name.clone(),
                    top_priority,
                    room,
                });
            }
            after = name;
        }
        Ok(queues)
    }

    /// The next lower priority with ready rows in this queue.
    fn next_priority(&self, queue: &str, priority: i64) -> Result<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached(&CLAIM.next_priority)?
            .query_row(params![queue, priority], |row| row.get(0))
            .optional()?)
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
        let changed = match &done.resolution {
            Resolution::Succeeded { .. }
            | Resolution::Released { .. }
            | Resolution::Await { .. } => {
                update.execute(params![done.job_id, done.attempt, done.worker, now])?
            }
            Resolution::RetryAt { run_at, error } => update.execute(params![
                done.job_id,
                done.attempt,
                done.worker,
                now,
                run_at,
                error
            ])?,
            Resolution::Dead { error: message, .. } | Resolution::Cancelled { reason: message } => {
                let target = done.resolution.transition().to_state().as_str();
                update.execute(params![
                    done.job_id,
                    done.attempt,
                    done.worker,
                    now,
                    target,
                    message
                ])?
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
    fn resume_if_children_done(&self, parent: JobId, now: UnixMillis) -> Result<bool> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = 'queued', attempts = 0, stage = stage + 1, run_at = ?2, \
                 updated_at = ?2 WHERE id = ?1 AND {guard} AND NOT EXISTS \
                 (SELECT 1 FROM jobs WHERE parent_id = ?1 AND NOT {terminal})",
                guard = state_guard(Transition::Resume),
                terminal = TERMINAL
            )
        });
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

    /// Extends the leases of running jobs this worker holds (the heartbeat). Returns how
    /// many were extended. `updated_at` stays the claim's time: the reaper records it as
    /// the lost attempt's start, and `jobctl top` shows it as "running since".
    pub fn extend_leases(
        &self,
        jobs: &[(JobId, u32)],
        worker: &str,
        lease_until: UnixMillis,
        _now: UnixMillis,
    ) -> Result<usize> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE jobs SET lease_until = ?1 \
             WHERE id = ?2 AND attempts = ?3 AND worker = ?4 AND state = 'running'",
        )?;
        let mut extended = 0;
        for (id, attempt) in jobs {
            extended += stmt.execute(params![lease_until, id, attempt, worker])?;
        }
        Ok(extended)
    }

    /// Records that the handlers of these running attempts (id, attempt, when) started,
    /// so readers can tell running jobs from ones only claimed ahead. An attempt that
    /// has moved on meanwhile is skipped. Returns how many were recorded.
    pub fn record_starts(
        &self,
        starts: &[(JobId, u32, UnixMillis)],
        worker: &str,
    ) -> Result<usize> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE jobs SET started_at = ?3 \
             WHERE id = ?1 AND attempts = ?2 AND worker = ?4 AND state = 'running'",
        )?;
        let mut recorded = 0;
        for (id, attempt, at) in starts {
            recorded += stmt.execute(params![id, attempt, at, worker])?;
        }
        Ok(recorded)
    }

    /// Takes back running jobs whose lease ran out (or, with `all`, every running job: at
    /// start-up nothing can still hold one). A job whose handler had started (as
    /// `started` judges from its claim) is charged the lost attempt: it goes to
    /// `retrying` due now, or to `dead` if that was its last. A job only claimed ahead
    /// goes back to `queued` with its reserved attempt given back and no attempt
    /// recorded. `max_attempts_of` gives a kind's policy limit for jobs without their own.
    pub fn rescue_expired(
        &self,
        now: UnixMillis,
        all: bool,
        max_attempts_of: &dyn Fn(&str) -> u32,
        started: &dyn Fn(&HeldClaim) -> bool,
    ) -> Result<Vec<(JobId, JobState)>> {
        let expired: Vec<ExpiredLease> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT id, kind, attempts, max_attempts, worker, updated_at, claim, started_at \
                 FROM jobs WHERE state = 'running' AND (?2 OR lease_until < ?1)",
            )?;
            let rows = stmt.query_map(params![now, all], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    HeldClaim {
                        id: row.get(0)?,
                        attempt: row.get(2)?,
                        claim: row.get(6)?,
                        started_at: row.get(7)?,
                    },
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut rescued = Vec::with_capacity(expired.len());
        let mut resumes = Vec::new();
        let guard = state_guard(Transition::RescueExpired);
        static GIVE_BACK: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_until = NULL, \
                 worker = NULL, started_at = NULL, claim = NULL, updated_at = ?2 \
                 WHERE id = ?1 AND attempts = ?3 AND {}",
                state_guard(Transition::Release)
            )
        });
        for (id, kind, attempts, own_max, worker, claimed_at, held) in expired {
            if !started(&held) {
                let changed = self
                    .tx
                    .prepare_cached(&GIVE_BACK)?
                    .execute(params![id, now, attempts])?;
                if changed == 1 {
                    rescued.push((id, Transition::Release.to_state()));
                }
                continue;
            }
            let max = own_max.unwrap_or_else(|| max_attempts_of(&kind));
            let reason = if all {
                "lease expired: the daemon stopped while the job was running"
            } else {
                "lease expired"
            };
            let (target, error) = if attempts >= max {
                (
                    Transition::Kill,
                    format!("{reason}; attempts exhausted ({attempts}/{max})"),
                )
            } else {
                (Transition::RescueExpired, reason.to_string())
            };
            let changed = if target == Transition::Kill {
                // A dead child may be the last one its parent waited for.
                if let Some(parent) = self.parent_of(id)? {
                    resumes.push(parent);
                }
                self.tx
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = 'dead', lease_until = NULL, finished_at = ?2, \
                     updated_at = ?2, last_error = ?3, started_at = NULL, claim = NULL \
                     WHERE id = ?1 AND {guard}"
                    ))?
                    .execute(params![id, now, error])?
            } else {
                self.tx
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = 'retrying', lease_until = NULL, run_at = ?2, \
                     updated_at = ?2, last_error = ?3, started_at = NULL, claim = NULL \
                     WHERE id = ?1 AND {guard}"
                    ))?
                    .execute(params![id, now, error])?
            };
            if changed == 1 {
                self.tx
                    .prepare_cached(
                        "INSERT INTO job_attempts (job_id, attempt, worker, started_at, \
                         finished_at, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, 'lease_expired', ?6)",
                    )?
                    .execute(params![
                        id,
                        attempts.max(1),
                        worker,
                        held.started_at.unwrap_or(claimed_at).min(now),
                        now,
                        error
                    ])?;
                rescued.push((id, target.to_state()));
            }
        }
        for parent in resumes {
            self.resume_if_children_done(parent, now)?;
        }
        Ok(rescued)
    }

    /// An operator sends dead or cancelled jobs round again: queued now, attempts reset.
    /// A job in any other state is refused, naming its state.
    pub fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        let guard = state_guard(Transition::Revive);
        for id in ids {
            let state = self.state_of(*id)?;
            Transition::Revive.check(*id, state)?;
            let changed = self
                .tx
                .prepare_cached(&format!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?2, \
                     finished_at = NULL, cancel_requested = 0, worker = NULL, updated_at = ?2 \
                     WHERE id = ?1 AND {guard}"
                ))?
                .execute(params![id, now])?;
            expect_one(*id, "retry", changed)?;
        }
        Ok(ids.to_vec())
    }

    /// Revives every dead job, or those of one kind. Returns their ids.
    pub fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?1, finished_at = NULL, \
             cancel_requested = 0, worker = NULL, updated_at = ?1 \
             WHERE state = 'dead' AND (?2 IS NULL OR kind = ?2) RETURNING id",
        )?;
        let ids = stmt.query_map(params![now, kind], |row| row.get(0))?;
        Ok(ids.collect::<rusqlite::Result<Vec<JobId>>>()?)
    }

    /// An operator cancels a job: a waiting one is cancelled at once; a running one is
    /// asked to stop (its handler sees the request and the job ends `cancelled`).
    /// Returns the state the job is in afterwards.
    pub fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState> {
        let state = self.state_of(id)?;
        Transition::Cancel.check(id, state)?;
        if state == JobState::Running {
            let changed = self
                .tx
                .prepare_cached(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 \
                     WHERE id = ?1 AND state = 'running'",
                )?
                .execute(params![id, now])?;
            expect_one(id, "the cancel request", changed)?;
            return Ok(JobState::Running);
        }
        static CANCEL_WAITING: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2, \
                 last_error = 'cancelled by an operator' WHERE id = ?1 AND {} AND state <> 'running'",
                state_guard(Transition::Cancel)
            )
        });
        let changed = self
            .tx
            .prepare_cached(&CANCEL_WAITING)?
            .execute(params![id, now])?;
        expect_one(id, "cancel", changed)?;
        if let Some(parent) = self.parent_of(id)? {
            self.resume_if_children_done(parent, now)?;
        }
        Ok(JobState::Cancelled)
    }

    fn parent_of(&self, id: JobId) -> Result<Option<JobId>> {
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
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ?1 \
                 AND finished_at < ?2 LIMIT ?3)",
            )?
            .execute(params![state.as_str(), before, chunk as i64])?;
        Ok(deleted)
    }

    /// When the next waiting job not yet due at `now` becomes due, if any. Rows already
    /// due are left out: those a claim skipped (their queue paused or at its limit) would
    /// otherwise hide a later row of another queue, which then waited for unrelated news.
    pub fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT min(run_at) FROM jobs WHERE {} AND run_at > ?1",
                state_guard(Transition::Claim)
            )
        });
        Ok(self
            .tx
            .prepare_cached(&SQL)?
            .query_row([now], |row| row.get(0))?)
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
                "SELECT id FROM jobs WHERE (state = 'queued' OR state = 'retrying') \
                 AND json_extract(payload, '$.note') = ?1 ORDER BY id LIMIT 1",
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

/// `EXPLAIN QUERY PLAN` of each statement the claim runs, by name, as SQLite plans it
/// on this database: what the claim costs is shown, not assumed.
pub(super) fn claim_query_plans(
    conn: &rusqlite::Connection,
) -> Result<Vec<(&'static str, String)>> {
    [
        ("next_queue", &CLAIM.next_queue),
        ("next_priority", &CLAIM.next_priority),
        ("group_keys", &CLAIM.group_keys),
        ("claim_group", &CLAIM.claim_group),
    ]
    .into_iter()
    .map(|(name, sql)| {
        // Unbound parameters: the plan does not depend on their values.
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let mut rows = stmt.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next()? {
            details.push(row.get::<_, String>(3)?);
        }
        Ok((name, details.join(" | ")))
    })
    .collect()
}
