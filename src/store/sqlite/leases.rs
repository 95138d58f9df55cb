//! Leases: the heartbeat that extends them, the record of handler starts, and the rescue
//! of jobs whose lease ran out (or, at start-up, of every running job), charged or not
//! as their claim's start says.

use super::guards::{running_guard, state_guard};
use super::queue::SqliteTx;
use super::Result;
use crate::job::{JobId, JobState, Transition, UnixMillis};
use crate::store::HeldClaim;
use rusqlite::{params, OptionalExtension};
use std::sync::LazyLock;

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

impl SqliteTx<'_> {
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
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET lease_until = ?1 \
                 WHERE id = ?2 AND attempts = ?3 AND worker = ?4 AND {}",
                running_guard()
            )
        });
        let mut stmt = self.tx.prepare_cached(&SQL)?;
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
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET started_at = ?3 \
                 WHERE id = ?1 AND attempts = ?2 AND worker = ?4 AND {}",
                running_guard()
            )
        });
        let mut stmt = self.tx.prepare_cached(&SQL)?;
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
            static SQL: LazyLock<String> = LazyLock::new(|| {
                format!(
                    "SELECT id, kind, attempts, max_attempts, worker, updated_at, claim, \
                     started_at FROM jobs WHERE {} AND (?2 OR lease_until < ?1)",
                    state_guard(Transition::RescueExpired)
                )
            });
            let mut stmt = self.tx.prepare_cached(&SQL)?;
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
                let died: Option<Option<String>> = self
                    .tx
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = 'dead', lease_until = NULL, finished_at = ?2, \
                     updated_at = ?2, last_error = ?3, started_at = NULL, claim = NULL \
                     WHERE id = ?1 AND {guard} RETURNING order_key"
                    ))?
                    .query_row(params![id, now, error], |row| row.get(0))
                    .optional()?;
                if let Some(Some(key)) = &died {
                    self.order_left(key)?;
                }
                usize::from(died.is_some())
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
}
