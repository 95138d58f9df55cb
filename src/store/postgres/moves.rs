//! The moves on PostgreSQL that take jobs back or end them from outside a completion:
//! rescue by lease and node, an operator's revive and cancel, and retention's purge.
//! Every update is guarded by the states its [`Transition`] allows.

use super::super::{HeldClaim, Result, StoreError};
use super::queue::{expect_one, state_guard, PgTx};
use crate::job::{JobId, JobState, Transition, UnixMillis};

impl PgTx<'_> {
    /// Takes back running jobs whose lease ran out, on any node; with `own_node`, also
    /// every running job of this node whatever its lease (at start-up this node's
    /// previous process cannot hold one). Never "every running row": other nodes' jobs
    /// wait for their leases. Charging follows the SQLite driver: a job whose handler
    /// started is charged the lost attempt (retrying, or dead if it was the last), one
    /// only claimed ahead goes back to `queued` uncharged.
    pub fn rescue_expired(
        &self,
        now: UnixMillis,
        own_node: bool,
        max_attempts_of: &dyn Fn(&str) -> u32,
        started: &dyn Fn(&HeldClaim) -> bool,
    ) -> Result<Vec<(JobId, JobState)>> {
        let rows = self.rows(
            "SELECT id, kind, attempts, max_attempts, worker, updated_at, claim, started_at, \
             parent_id, node FROM jobs WHERE state = 'running' \
             AND (lease_until < $1 OR ($2 AND node = $3)) FOR UPDATE SKIP LOCKED",
            &[&now, &own_node, &self.node()],
        )?;
        let mut rescued = Vec::with_capacity(rows.len());
        let mut resumes = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            let kind: String = row.get(1);
            let attempts = row.get::<_, i32>(2).max(0) as u32;
            let own_max: Option<u32> = row.get::<_, Option<i32>>(3).map(|m| m as u32);
            let worker: Option<String> = row.get(4);
            let claimed_at: i64 = row.get(5);
            let held = HeldClaim {
                id,
                attempt: attempts,
                claim: row.get(6),
                started_at: row.get(7),
            };
            let parent: Option<i64> = row.get(8);
            let mine = row.get::<_, Option<String>>(9).as_deref() == Some(self.node());
            // Another node's claim numbers mean nothing here: it is charged.
            if mine && !started(&held) {
                let changed = self.run(
                    &format!(
                        "UPDATE jobs SET state = 'queued', attempts = attempts - 1, \
                         lease_until = NULL, worker = NULL, started_at = NULL, claim = NULL, \
                         updated_at = $2 WHERE id = $1 AND attempts = $3 AND {}",
                        state_guard(Transition::Release)
                    ),
                    &[&id, &now, &(attempts as i32)],
                )?;
                if changed == 1 {
                    rescued.push((id, JobState::Queued));
                }
                continue;
            }
            let max = own_max.unwrap_or_else(|| max_attempts_of(&kind));
            let reason = if own_node && mine {
                "lease expired: the daemon stopped while the job was running"
            } else {
                "lease expired"
            };
            let guard = state_guard(Transition::RescueExpired);
            let (target, error) = if attempts >= max {
                (
                    JobState::Dead,
                    format!("{reason}; attempts exhausted ({attempts}/{max})"),
                )
            } else {
                (JobState::Retrying, reason.to_string())
            };
            let changed = if target == JobState::Dead {
                if let Some(parent) = parent {
                    resumes.push(parent);
                }
                self.run(
                    &format!(
                        "UPDATE jobs SET state = 'dead', lease_until = NULL, finished_at = $2, \
                         updated_at = $2, last_error = $3, started_at = NULL, claim = NULL \
                         WHERE id = $1 AND {guard}"
                    ),
                    &[&id, &now, &error],
                )?
            } else {
                self.run(
                    &format!(
                        "UPDATE jobs SET state = 'retrying', lease_until = NULL, run_at = $2, \
                         updated_at = $2, last_error = $3, started_at = NULL, claim = NULL \
                         WHERE id = $1 AND {guard}"
                    ),
                    &[&id, &now, &error],
                )?
            };
            if changed == 1 {
                let started_at = held.started_at.unwrap_or(claimed_at).min(now);
                self.run(
                    "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, \
                     outcome, error, node) VALUES ($1, $2, $3, $4, $5, 'lease_expired', $6, $7)",
                    &[
                        &id,
                        &(attempts.max(1) as i32),
                        &worker,
                        &started_at,
                        &now,
                        &error,
                        &self.node(),
                    ],
                )?;
                rescued.push((id, target));
            }
        }
        for parent in resumes {
            self.resume_if_children_done(parent, now)?;
        }
        Ok(rescued)
    }

    /// An operator sends dead or cancelled jobs round again: queued now, attempts reset.
    /// In id order, so of several of one order key sent into an empty line the first
    /// heads it (the trigger of each update sees the ones before it).
    pub fn revive(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        let mut in_id_order = ids.to_vec();
        in_id_order.sort_unstable();
        for id in &in_id_order {
            let state = self.state_of(*id)?;
            Transition::Revive.check(*id, state)?;
            let changed = self.run(
                &format!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, \
                     finished_at = NULL, cancel_requested = 0, worker = NULL, updated_at = $2 \
                     WHERE id = $1 AND {}",
                    state_guard(Transition::Revive)
                ),
                &[id, &now],
            )?;
            expect_one(*id, "retry", changed)?;
        }
        Ok(ids.to_vec())
    }

    /// Revives every dead job, or those of one kind.
    pub fn revive_dead(&self, kind: Option<&str>, now: UnixMillis) -> Result<Vec<JobId>> {
        Ok(self
            .rows(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, finished_at = NULL, \
                 cancel_requested = 0, worker = NULL, updated_at = $1 \
                 WHERE state = 'dead' AND ($2::text IS NULL OR kind = $2) RETURNING id",
                &[&now, &kind],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// An operator cancels a job: a waiting one at once, a running one is asked to stop.
    pub fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobState> {
        let state = self.state_of(id)?;
        Transition::Cancel.check(id, state)?;
        if state == JobState::Running {
            let changed = self.run(
                "UPDATE jobs SET cancel_requested = 1, updated_at = $2 \
                 WHERE id = $1 AND state = 'running'",
                &[&id, &now],
            )?;
            expect_one(id, "the cancel request", changed)?;
            return Ok(JobState::Running);
        }
        let changed = self.run(
            &format!(
                "UPDATE jobs SET state = 'cancelled', finished_at = $2, updated_at = $2, \
                 last_error = 'cancelled by an operator' WHERE id = $1 AND {} \
                 AND state <> 'running'",
                state_guard(Transition::Cancel)
            ),
            &[&id, &now],
        )?;
        expect_one(id, "cancel", changed)?;
        let parent: Option<i64> = self
            .rows("SELECT parent_id FROM jobs WHERE id = $1", &[&id])?
            .first()
            .and_then(|r| r.get(0));
        if let Some(parent) = parent {
            self.resume_if_children_done(parent, now)?;
        }
        Ok(JobState::Cancelled)
    }

    /// Deletes finished jobs of a terminal state that finished before `before`, at most
    /// `chunk` of them. Returns how many went.
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
        Ok(self.run(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = $1 \
             AND finished_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED)",
            &[&state.as_str(), &before, &(chunk as i64)],
        )? as usize)
    }
}
