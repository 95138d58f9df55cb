//! The claim on PostgreSQL: up to k ready rows with `FOR UPDATE SKIP LOCKED` in priority,
//! run_at, id order; queue limits counted across daemons under an advisory lock per
//! limited queue; destination limits drawn under the destination's row lock (`flow.rs`);
//! rows behind their order key's head and rows of held destinations left out.

use super::super::{ClaimSpec, Claimed, Result};
use super::flow::PgFlowBudget;
use super::queue::{job_columns_of_j, job_from_row, state_guard, QUEUE_LOCK_SPACE};
use super::PgTx;
use crate::job::{Job, Transition, UnixMillis};

/// A claim's candidate row: id, priority, run_at, destination, flow_key, and the
/// locked row version's `ctid` as text (the claim updates it by that, see
/// [`PgTx::claim_plain`]).
type Candidate = (i64, i64, i64, Option<String>, String, String);

/// How many rows beyond its limit a claim with destination limits locks and looks at,
/// so rows of a destination out of tokens do not hide the others' (SQLite walks up to
/// its own bound the same way).
pub const FLOW_EXTRA_CANDIDATES: usize = 256;

impl PgTx<'_> {
    /// [`PgTx::claim_flow`] without the flow's wake-up time.
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

    /// [`PgTx::claim_numbered`] without a claim number.
    pub fn claim(
        &self,
        spec: &ClaimSpec,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        self.claim_numbered(spec, None, worker, lease_until, now)
    }

    /// Claims up to `spec.limit` ready jobs (due by `now`, not bound to another node) in
    /// priority, run_at, id order, skipping rows other daemons hold locked. A queue with a
    /// limit across daemons (`queue_limits`) is claimed from under its advisory lock,
    /// after counting its running rows in every daemon; a queue `spec` names is bounded
    /// by its room there too (paused queues have none).
    ///
    /// Flow control: rows behind their order key's head and rows of a held destination
    /// are never taken. With destination limits, more candidates than the limit are
    /// locked (up to [`FLOW_EXTRA_CANDIDATES`] more), each limited destination's state
    /// row is locked and its tokens and running rows read, and candidates are admitted
    /// in claim order while their destination has room: rows of a destination at its
    /// limit do not hold back the others'.
    pub fn claim_flow(
        &self,
        spec: &ClaimSpec,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Claimed> {
        if spec.limit == 0 {
            return Ok(Claimed::default());
        }
        let mut budget = PgFlowBudget::new(&spec.destinations, now);
        let flow = budget.limits_anything();
        let fetch = if flow {
            spec.limit + FLOW_EXTRA_CANDIDATES
        } else {
            spec.limit
        };
        let node = self.options.node.as_str();
        let limit = fetch as i64;
        // Rooms: the spec's (per daemon, paused = 0), then the limits across daemons.
        let mut rooms: Vec<(String, usize)> = spec.limited_queues.clone();
        for (queue, concurrency) in &self.options.queue_limits {
            let spec_room = rooms.iter().find(|(q, _)| q == queue).map(|(_, r)| *r);
            if spec_room == Some(0) {
                continue;
            }
            self.run(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&QUEUE_LOCK_SPACE, queue],
            )?;
            let running: i64 = self
                .rows(
                    "SELECT count(*) FROM jobs WHERE state = 'running' AND queue = $1",
                    &[queue],
                )?
                .first()
                .map_or(0, |r| r.get(0));
            let global = concurrency.saturating_sub(running.max(0) as usize);
            let room = spec_room.map_or(global, |r| r.min(global));
            match rooms.iter_mut().find(|(q, _)| q == queue) {
                Some((_, r)) => *r = room,
                None => rooms.push((queue.clone(), room)),
            }
        }
        let ready = "state IN ('queued', 'retrying') AND run_at <= $1 \
                     AND (home_node IS NULL OR home_node = $2) AND NOT order_blocked \
                     AND (destination IS NULL OR NOT EXISTS (SELECT 1 FROM destination_state ds \
                          WHERE ds.destination = jobs.destination \
                          AND ds.flow_key = jobs.flow_key AND ds.held_until > $1))";
        // The candidates are read in the ready indexes' order (see `in_index_order`).
        self.in_index_order(true)?;
        if !flow && rooms.is_empty() {
            let jobs = self.claim_plain(ready, spec.limit, claim, worker, lease_until, now)?;
            self.in_index_order(false)?;
            return Ok(Claimed {
                jobs,
                wake_at: None,
            });
        }
        let bounded: Vec<&str> = rooms.iter().map(|(q, _)| q.as_str()).collect();
        // Candidates: the free queues' best rows, and each bounded queue's within its
        // room; all locked, the best `limit` of them claimed.
        let candidate = |r: &postgres::Row| -> Candidate {
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
        };
        let mut candidates: Vec<Candidate> = self
            .rows(
                &format!(
                    "SELECT id, priority, run_at, destination, flow_key, ctid::text FROM jobs \
                     WHERE {ready} \
                     AND queue <> ALL($3::text[]) ORDER BY priority DESC, run_at, id \
                     LIMIT $4 FOR UPDATE SKIP LOCKED"
                ),
                &[&now, &node, &bounded, &limit],
            )?
            .iter()
            .map(candidate)
            .collect();
        for (queue, room) in rooms.iter().filter(|(_, room)| *room > 0) {
            let take = (*room).min(fetch) as i64;
            candidates.extend(
                self.rows(
                    &format!(
                        "SELECT id, priority, run_at, destination, flow_key, ctid::text FROM jobs \
                         WHERE {ready} AND queue = $3 \
                         ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&now, &node, queue, &take],
                )?
                .iter()
                .map(candidate),
            );
        }
        self.in_index_order(false)?;
        if candidates.is_empty() {
            return Ok(Claimed::default());
        }
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        if flow {
            let keys: Vec<(Option<String>, String)> = candidates
                .iter()
                .map(|c| (c.3.clone(), c.4.clone()))
                .collect();
            budget.load(self, &keys)?;
            let mut admitted = Vec::with_capacity(spec.limit);
            for c in candidates {
                if admitted.len() == spec.limit {
                    break;
                }
                if budget.admit(c.3.as_deref(), &c.4) {
                    admitted.push(c);
                }
            }
            candidates = admitted;
        } else {
            candidates.truncate(spec.limit);
        }
        let wake_at = budget.finish(self)?;
        if candidates.is_empty() {
            return Ok(Claimed {
                jobs: Vec::new(),
                wake_at,
            });
        }
        let ctids: Vec<&str> = candidates.iter().map(|c| c.5.as_str()).collect();
        let rows = self.rows(
            &format!(
                "UPDATE jobs j SET state = 'running', attempts = attempts + 1, \
                 lease_until = $1, worker = $2, updated_at = $3, claim = $4, started_at = NULL, \
                 node = $5 WHERE j.ctid = ANY($6::text[]::tid[]) AND j.{} RETURNING {}",
                state_guard(Transition::Claim),
                job_columns_of_j()
            ),
            &[&lease_until, &worker, &now, &claim, &node, &ctids],
        )?;
        Ok(Claimed {
            jobs: in_claim_order(&rows)?,
            wake_at,
        })
    }

    /// Makes the planner read the ready rows in index order (`jobs_ready`,
    /// `jobs_queue_ready`: priority DESC, run_at, id) and stop at the LIMIT, for the
    /// rest of this transaction or until turned off again. Without it a table whose
    /// statistics predate its backlog (a burst of inserts; or no ANALYZE at all, with
    /// autovacuum off) is estimated at a few ready rows, and the plan became a bitmap
    /// scan of every ready row and a sort of them all under the lock: each claim cost
    /// time in proportion to the backlog (8 of the 17 ms of a 516-row claim with 20,000
    /// ready). With sorts priced out the ordered index scan is the one plan left.
    fn in_index_order(&self, on: bool) -> Result<()> {
        let set = if on {
            "SET LOCAL enable_sort = off"
        } else {
            "SET LOCAL enable_sort TO DEFAULT"
        };
        self.with(|tx| tx.batch_execute(set))
    }

    /// The claim without limits of any kind (no limited queue, no destination limit):
    /// the best `limit` ready rows locked and moved to `running` by one statement, so the
    /// claim is one round trip. The rows are updated by the `ctid` their lock returned
    /// (the row version locked, which nobody else can change before this commit), so the
    /// update is a TID scan whatever the statistics: joined by `id`, the plan cached for
    /// this prepared statement while the table was empty (a daemon claims before the
    /// first jobs arrive) looked each locked row up through a bitmap scan of every ready
    /// row (131 ms for a 513-row claim with 20,000 ready).
    fn claim_plain(
        &self,
        ready: &str,
        limit: usize,
        claim: Option<i64>,
        worker: &str,
        lease_until: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<Job>> {
        let rows = self.rows(
            &format!(
                "WITH picked AS (SELECT ctid FROM jobs WHERE {ready} \
                   ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE jobs j SET state = 'running', attempts = attempts + 1, \
                 lease_until = $4, worker = $5, updated_at = $1, claim = $6, started_at = NULL, \
                 node = $2 FROM picked WHERE j.ctid = picked.ctid AND j.{} RETURNING {}",
                state_guard(Transition::Claim),
                job_columns_of_j()
            ),
            &[
                &now,
                &self.options.node,
                &(limit as i64),
                &lease_until,
                &worker,
                &claim,
            ],
        )?;
        in_claim_order(&rows)
    }
}

/// Claimed rows as jobs, in priority DESC, run_at, id order (RETURNING keeps none).
fn in_claim_order(rows: &[postgres::Row]) -> Result<Vec<Job>> {
    let mut claimed = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
    claimed.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    Ok(claimed)
}
