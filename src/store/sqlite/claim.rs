//! The claim: ready jobs (`queued | retrying`, due, not behind their order key's head)
//! become `running` for a worker, in priority, run_at, id order, within the claim's
//! limit, each queue's room and each destination's tokens and in-flight room, many in
//! one transaction; and the claim statements' real query plans, for the test that they
//! only seek the index.

use super::flow::FlowBudget;
use super::guards::state_guard;
use super::queue::SqliteTx;
use super::{Result, StoreError};
use crate::job::{Job, JobId, JobState, Transition, UnixMillis};
use crate::store::{ClaimSpec, Claimed};
use rusqlite::{params, OptionalExtension, Row};
use std::sync::LazyLock;

/// The columns a claim reads of each row it claims. A claimed row's state, lease, worker
/// and updated_at are what the claim itself writes, its finished_at is NULL (the schema
/// ties it to the finished states) and its order_blocked 0 (the claim takes no blocked
/// row): those are filled in by [`claimed_from_row`], not read.
const CLAIMED_COLUMNS: &str = "id, queue, kind, payload, priority, attempts, max_attempts, \
     run_at, unique_key, parent_id, last_error, deadline_at, created_at, source, \
     cancel_requested, stage, destination, flow_key, order_key";

/// What the claim's update writes into every row it claims.
#[derive(Clone, Copy)]
struct ClaimWrite<'a> {
    worker: &'a str,
    lease_until: UnixMillis,
    now: UnixMillis,
    /// The row was read before the update that counts its attempt (a group's rows),
    /// not returned by it (a row chosen by its destination's limits).
    read_before: bool,
}

/// A claimed job from its [`CLAIMED_COLUMNS`] and what the claim wrote.
fn claimed_from_row(row: &Row<'_>, wrote: ClaimWrite<'_>) -> rusqlite::Result<Job> {
    // Parsed from the row's own text, without copying it into a String first.
    let text = rusqlite::types::Type::Text;
    let payload = row
        .get_ref(3)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, text, Box::new(e)))?;
    let payload = serde_json::from_str(payload)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, text, Box::new(e)))?;
    Ok(Job {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload,
        state: JobState::Running,
        priority: row.get(4)?,
        attempts: row.get::<_, u32>(5)? + u32::from(wrote.read_before),
        max_attempts: row.get(6)?,
        run_at: row.get(7)?,
        lease_until: Some(wrote.lease_until),
        worker: Some(wrote.worker.to_string()),
        unique_key: row.get(8)?,
        parent_id: row.get(9)?,
        last_error: row.get(10)?,
        deadline_at: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: wrote.now,
        finished_at: None,
        source: row.get(13)?,
        cancel_requested: row.get(14)?,
        stage: row.get(15)?,
        destination: row.get(16)?,
        flow_key: row.get(17)?,
        order_key: row.get(18)?,
        order_blocked: false,
    })
}

/// The statements of a claim. Every one seeks `jobs_queue_ready` (queue, priority DESC,
/// run_at, id): a queue the claim may not take from costs the one seek that steps over
/// it, and inside a queue each priority's due rows (`run_at <= now`) are one range, so
/// neither rows waiting in an excluded queue nor rows due later are ever walked.
///
/// Their limits are written `LIMIT +?N`, not `LIMIT ?N`: the bundled SQLite reads the value
/// bound to a bare `LIMIT ?N` while planning, and so marks the statement to be prepared
/// again whenever that parameter is bound, i.e. at every claim; the unary plus leaves
/// the limit an expression it evaluates when run, and the cached statement is reused.
struct ClaimSql {
    /// ?1 a queue name: the next queue after it with ready rows, and its top priority.
    next_queue: String,
    /// ?1 queue, ?2 priority: the next lower priority with ready rows in that queue.
    next_priority: String,
    /// ?1 queue, ?2 priority, ?3 now, ?4 how many: the due rows' order keys, to merge
    /// several queues by priority, run_at and id.
    group_keys: String,
    /// ?1 queue, ?2 priority, ?3 now, ?4 how many: the [`CLAIMED_COLUMNS`] of the first
    /// due rows of one (queue, priority) group, read just before `claim_group` claims
    /// the same rows (the transaction holds the write lock, so they are the same).
    group_rows: String,
    /// ?1 lease_until, ?2 worker, ?3 now, ?4 how many, ?5 claim number, ?6 queue,
    /// ?7 priority: claims the first due rows of one (queue, priority) group. Without
    /// RETURNING (its rows are read by `group_rows`), the update fires no trigger, so
    /// SQLite neither copies the pages it changes to a statement journal nor builds
    /// the returned rows in a temporary table (5,600 instructions per job less, counted
    /// by scripts/drain-callgrind.sh).
    claim_group: String,
    /// ?1 queue, ?2 priority, ?3 now, ?4 run_at and ?5 id after which, ?6 how many: due
    /// rows' keys and destinations, for a claim that checks destination limits.
    group_destinations: String,
    /// ?1 lease_until, ?2 worker, ?3 now, ?4 claim number, ?5 id: claims one row chosen
    /// by its destination's limits.
    claim_one: String,
    /// ?1 queue, ?2 priority, ?3 now: when the group's first row not yet due becomes due.
    group_next_due: String,
}

/// The most rows one claim steps over because their destination is at its limit; rows
/// behind them wait for the next claim.
const FLOW_WALK_LIMIT: usize = 4096;
/// Rows read at a time while stepping over them.
const FLOW_WALK_PAGE: usize = 256;

static CLAIM: LazyLock<ClaimSql> = LazyLock::new(|| {
    // A row behind its order key's head is not in the index (0008), nor claimable.
    let guard = format!("{} AND order_blocked = 0", state_guard(Transition::Claim));
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
             ORDER BY run_at, id LIMIT +?4"
        ),
        group_rows: format!(
            "SELECT {CLAIMED_COLUMNS} {ready} AND queue = ?1 AND priority = ?2 AND run_at <= ?3 \
             ORDER BY run_at, id LIMIT +?4"
        ),
        claim_group: format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?1, \
             worker = ?2, updated_at = ?3, claim = ?5, started_at = NULL \
             WHERE id IN (SELECT id {ready} AND queue = ?6 AND priority = ?7 AND run_at <= ?3 \
                          ORDER BY run_at, id LIMIT +?4)"
        ),
        group_destinations: format!(
            "SELECT run_at, id, destination, flow_key {ready} AND queue = ?1 AND priority = ?2 \
             AND run_at <= ?3 AND (run_at, id) > (?4, ?5) ORDER BY run_at, id LIMIT +?6"
        ),
        claim_one: format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?1, \
             worker = ?2, updated_at = ?3, claim = ?4, started_at = NULL \
             WHERE id = ?5 AND {guard} RETURNING {CLAIMED_COLUMNS}"
        ),
        group_next_due: format!(
            "SELECT run_at {ready} AND queue = ?1 AND priority = ?2 AND run_at > ?3 \
             ORDER BY run_at LIMIT 1"
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

impl SqliteTx<'_> {
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
        Ok(self.claim_flow(spec, claim, worker, lease_until, now)?.jobs)
    }

    /// [`SqliteTx::claim_numbered`], saying also when a destination whose rows it had to
    /// leave (no token left) gets its next token. Rows of a destination at its rate or
    /// in-flight limit are stepped over (at most [`FLOW_WALK_LIMIT`] per claim), so they
    /// hold back no other destination's rows; held destinations' rows are parked out of
    /// the due range and never walked.
    pub fn claim_flow(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Claimed> {
        let mut claimed = Vec::new();
        if spec.limit == 0 {
            return Ok(Claimed::default());
        }
        let queues = self.claimable_queues(spec)?;
        let budget = std::cell::RefCell::new(FlowBudget::new(&spec.destinations, now));
        let flow = budget.borrow().limits_anything();
        let claim_group = |queue: &str, priority: i64, take: usize, into: &mut Vec<Job>| {
            if flow {
                let mut budget = budget.borrow_mut();
                return self.claim_group_within(
                    &mut budget,
                    (queue, priority, take),
                    (claim, worker, lease_until, now),
                    into,
                );
            }
            let wrote = ClaimWrite {
                worker,
                lease_until,
                now,
                read_before: true,
            };
            let before = into.len();
            let mut rows = self.tx.prepare_cached(&CLAIM.group_rows)?;
            for job in rows.query_map(params![queue, priority, now, take as i64], |row| {
                claimed_from_row(row, wrote)
            })? {
                into.push(job?);
            }
            let read = into.len() - before;
            if read == 0 {
                return Ok(0);
            }
            let claimed = self
                .tx
                .prepare_cached(&CLAIM.claim_group)?
                .execute(params![
                    lease_until,
                    worker,
                    now,
                    read as i64,
                    claim,
                    queue,
                    priority
                ])?;
            if claimed != read {
                // Cannot happen while this transaction holds the write lock.
                return Err(StoreError::Backend(format!(
                    "the claim read {read} rows of queue {queue} but claimed {claimed}"
                )));
            }
            Ok::<usize, StoreError>(read)
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
        let wake_at = budget.into_inner().finish(self)?;
        Ok(Claimed {
            jobs: claimed,
            wake_at,
        })
    }

    /// Claims up to `take` due rows of one (queue, priority) group that their
    /// destinations' limits allow, in run_at, id order, stepping over the others.
    fn claim_group_within(
        &self,
        budget: &mut FlowBudget<'_>,
        (queue, priority, take): (&str, i64, usize),
        (claim, worker, lease_until, now): (Option<i64>, &str, UnixMillis, UnixMillis),
        into: &mut Vec<Job>,
    ) -> Result<usize> {
        let mut chosen = Vec::new();
        let mut after = (i64::MIN, i64::MIN);
        let mut walked = 0;
        'walk: while chosen.len() < take && walked < FLOW_WALK_LIMIT {
            let page: Vec<(UnixMillis, JobId, Option<String>, String)> = {
                let mut stmt = self.tx.prepare_cached(&CLAIM.group_destinations)?;
                let rows = stmt.query_map(
                    params![
                        queue,
                        priority,
                        now,
                        after.0,
                        after.1,
                        FLOW_WALK_PAGE as i64
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let last_page = page.len() < FLOW_WALK_PAGE;
            for (run_at, id, destination, flow_key) in page {
                walked += 1;
                after = (run_at, id);
                if budget.admit(self, destination.as_deref(), &flow_key)? {
                    chosen.push(id);
                    if chosen.len() == take {
                        break 'walk;
                    }
                }
            }
            if last_page {
                break;
            }
        }
        let mut stmt = self.tx.prepare_cached(&CLAIM.claim_one)?;
        let before = into.len();
        for id in chosen {
            let wrote = ClaimWrite {
                worker,
                lease_until,
                now,
                read_before: false,
            };
            let mut rows = stmt.query_map(params![lease_until, worker, now, claim, id], |row| {
                claimed_from_row(row, wrote)
            })?;
            if let Some(job) = rows.next() {
                into.push(job?);
            }
        }
        Ok(into.len() - before)
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

    /// When the next waiting job not yet due at `now` becomes due, if any: the first such
    /// row of every (queue, priority) group, one seek each into `jobs_queue_ready`, the
    /// walk the claim itself makes. Rows already due are left out: those a claim skipped
    /// (their queue paused or at its limit) would otherwise hide a later row of another
    /// queue, which then waited for unrelated news. Rows behind their order key's head
    /// are left out too: they wait for the head, not for a time.
    pub fn next_due(&self, now: UnixMillis) -> Result<Option<UnixMillis>> {
        let mut queues = self.tx.prepare_cached(&CLAIM.next_queue)?;
        let mut first_later = self.tx.prepare_cached(&CLAIM.group_next_due)?;
        let mut after = String::new();
        let mut due: Option<UnixMillis> = None;
        while let Some((queue, top)) = queues
            .query_row([&after], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
            .optional()?
        {
            let mut priority = Some(top);
            while let Some(p) = priority {
                let at: Option<UnixMillis> = first_later
                    .query_row(params![queue, p, now], |row| row.get(0))
                    .optional()?;
                if let Some(at) = at {
                    due = Some(due.map_or(at, |due| due.min(at)));
                }
                priority = self.next_priority(&queue, p)?;
            }
            after = queue;
        }
        Ok(due)
    }

    /// The next lower priority with ready rows in this queue.
    fn next_priority(&self, queue: &str, priority: i64) -> Result<Option<i64>> {
        Ok(self
            .tx
            .prepare_cached(&CLAIM.next_priority)?
            .query_row(params![queue, priority], |row| row.get(0))
            .optional()?)
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
        ("group_rows", &CLAIM.group_rows),
        ("claim_group", &CLAIM.claim_group),
        ("group_destinations", &CLAIM.group_destinations),
        ("group_next_due", &CLAIM.group_next_due),
        ("claim_one", &CLAIM.claim_one),
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
