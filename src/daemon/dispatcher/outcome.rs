//! A worker's report turned into the one store transition it calls for (success, retry
//! with backoff, death with its hooks' follow-ups, cancel, release), and once that is
//! committed, the counters, logs and hooks that follow it.

use super::Dispatcher;
use crate::daemon::workers::{Report, Ticket};
use crate::handlers::StopReason;
use crate::job::{Completion, Job, JobState, Outcome, Resolution, UnixMillis};
use crate::retry::{FailedAttempt, RetryDecision};
use crate::store::Applied;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Dispatcher {
    /// Turns a worker's report into the one store transition it calls for; None if it
    /// changes nothing.
    pub(super) fn resolve(&self, report: &Report, now: UnixMillis) -> Option<Completion> {
        // A report from a claim taken back since (a later claim of the job may be in
        // flight now) changes nothing.
        let flight = self
            .flights
            .get(report.job_id)
            .filter(|f| f.claim == report.claim)?;
        if !report.started && flight.ticket.started_at.load(Ordering::SeqCst) == Ticket::WITHDRAWN {
            // Taken back by the reaper, whose transaction did not commit yet: the next
            // reap puts it back uncharged.
            return None;
        }
        let job = &flight.job;
        let stop = flight.ticket.stop.reason();
        let (resolution, detail) = match report.outcome.clone() {
            Outcome::Success {
                follow_ups,
                detail,
                sync_marks,
            } => (
                Resolution::Succeeded {
                    follow_ups,
                    sync_marks,
                },
                detail,
            ),
            Outcome::Permanent { error, detail } => {
                (self.kill(job, error, report.started_at), detail)
            }
            Outcome::Cancelled { reason } => (Resolution::Cancelled { reason }, None),
            Outcome::Await { children, detail } => (Resolution::Await { children }, detail),
            Outcome::Interrupted { .. } if stop.is_some() => (
                Resolution::Released {
                    started: report.started,
                },
                None,
            ),
            Outcome::Interrupted { reason } => {
                self.retry_or_kill(job, reason, None, now, report.started_at, None)
            }
            Outcome::Retry { error, .. } if stop == Some(StopReason::Cancelled) => (
                Resolution::Cancelled {
                    reason: format!("cancelled by an operator; last error: {error}"),
                },
                None,
            ),
            Outcome::Retry {
                error,
                retry_after,
                detail,
            } => self.retry_or_kill(job, error, retry_after, now, report.started_at, detail),
        };
        Some(Completion {
            job_id: job.id,
            parent_id: job.parent_id,
            attempt: job.attempts,
            worker: self.name.clone(),
            started_at: report.started_at,
            finished_at: report.finished_at,
            resolution,
            detail,
        })
    }

    fn retry_or_kill(
        &self,
        job: &Job,
        error: String,
        retry_after: Option<Duration>,
        now: UnixMillis,
        started_at: UnixMillis,
        detail: Option<serde_json::Value>,
    ) -> (Resolution, Option<serde_json::Value>) {
        let policy = self.config().policy_for(&job.kind);
        let failed = FailedAttempt {
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            created_at: job.created_at,
            deadline_at: job.deadline_at,
            now,
            retry_after,
        };
        match policy.decide(failed, fastrand::f64()) {
            RetryDecision::RetryAt(run_at) => (Resolution::RetryAt { run_at, error }, detail),
            RetryDecision::GiveUp(why) => (
                self.kill(job, format!("{why}; last error: {error}"), started_at),
                detail,
            ),
        }
    }

    /// A job's death, with whatever the hooks want enqueued beside it. `this_attempt`
    /// started at that time; earlier ones are in the attempt history.
    fn kill(&self, job: &Job, error: String, this_attempt: UnixMillis) -> Resolution {
        if self.hooks.is_empty() {
            return Resolution::Dead {
                error,
                follow_ups: Vec::new(),
            };
        }
        let earlier = if job.attempts > 1 {
            self.db.first_attempt_at(job.id).ok().flatten()
        } else {
            None
        };
        let first_attempt_at = earlier.map_or(this_attempt, |at| at.min(this_attempt));
        let follow_ups = self
            .hooks
            .iter()
            .flat_map(|hook| hook.on_dead(job, &error, first_attempt_at, self.config()))
            .collect();
        Resolution::Dead { error, follow_ups }
    }

    /// After the commit: the job leaves the in-flight table; counters, logs and hooks
    /// hear how it ended.
    pub(super) fn finish(&mut self, completion: &Completion, applied: &Applied) {
        let Some(flight) = self.flights.forget(completion.job_id) else {
            return;
        };
        let job = &flight.job;
        let counters = &mut self.stats.counters;
        match applied {
            Applied::Stale => tracing::warn!(
                job = job.id,
                "job {} attempt {} finished after it was taken back; its outcome is dropped",
                job.id,
                job.attempts
            ),
            Applied::Moved(JobState::Succeeded) => {
                counters.succeeded += 1;
                tracing::debug!(job = job.id, kind = %job.kind, "succeeded");
            }
            Applied::Moved(JobState::Retrying) => {
                counters.retried += 1;
                if let Resolution::RetryAt { run_at, error } = &completion.resolution {
                    tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempts,
                        "attempt failed, retrying at {}: {error}", crate::clock::format_millis(*run_at));
                    self.claims.due_at(*run_at);
                }
            }
            Applied::Moved(JobState::Dead) => {
                counters.dead += 1;
                if let Resolution::Dead { error, .. } = &completion.resolution {
                    tracing::error!(job = job.id, kind = %job.kind, queue = %job.queue, attempts = job.attempts,
                        "job {} is dead: {error}", job.id);
                }
            }
            Applied::Moved(JobState::Cancelled) => {
                counters.cancelled += 1;
                tracing::info!(job = job.id, "job {} cancelled", job.id);
            }
            Applied::Moved(JobState::Waiting) => {
                tracing::info!(job = job.id, kind = %job.kind, "job {} waits for its children", job.id);
            }
            Applied::Moved(JobState::Queued) => {
                tracing::info!(
                    job = job.id,
                    "job {} put back in the queue, attempt not charged",
                    job.id
                );
            }
            Applied::Moved(other) => tracing::debug!(job = job.id, "job moved to {other}"),
        }
        if let Applied::Moved(state) = applied {
            let error = match &completion.resolution {
                Resolution::Dead { error, .. } | Resolution::RetryAt { error, .. } => {
                    Some(error.as_str())
                }
                Resolution::Cancelled { reason } => Some(reason.as_str()),
                _ => None,
            };
            for hook in &self.hooks {
                hook.after_commit(job, *state, error, &self.settings.config);
            }
        }
        let spawned = matches!(&completion.resolution,
            Resolution::Succeeded { follow_ups, .. } | Resolution::Dead { follow_ups, .. }
                | Resolution::Await { children: follow_ups } if !follow_ups.is_empty());
        // New children are ready; a finished child may have resumed its parent.
        if spawned
            || completion.parent_id.is_some()
            || matches!(completion.resolution, Resolution::Await { .. })
        {
            self.claims.look_for_work = true;
        }
    }
}
