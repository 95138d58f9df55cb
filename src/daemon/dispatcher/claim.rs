//! How much the dispatcher claims: one job per free worker plus claim-ahead (about
//! [`CLAIM_AHEAD_WINDOW`] of work at the running average, at most `daemon.prefetch`),
//! within each limited queue's room and each limited destination's tokens and room.

use super::Dispatcher;
use crate::config::Config;
use crate::daemon::workers::Report;
use crate::job::UnixMillis;
use crate::store::ClaimSpec;
use std::time::Duration;

/// How much work, in handler time, the dispatcher claims ahead of its workers. Enough
/// that short jobs flow in large group commits; little enough that slow jobs are not
/// hoarded as `running` while they wait.
pub(super) const CLAIM_AHEAD_WINDOW: Duration = Duration::from_millis(100);

/// What the dispatcher knows about work to claim.
#[derive(Debug)]
pub(super) struct ClaimState {
    /// The number of this daemon's last claim: each claim's rows carry it, and the start
    /// journal names it. It starts at the start time in ms × 1000, so numbers never
    /// repeat across restarts either (a restored backup's rows cannot match a newer
    /// journal by chance).
    pub last_number: i64,
    /// Something may be ready that has not been claimed: look on the next turn.
    pub look_for_work: bool,
    /// The next time a waiting job becomes due, as far as we know.
    pub next_due: Option<UnixMillis>,
    /// The database's data_version at the last poll: a change means another process
    /// wrote.
    pub data_version: i64,
    /// A moving average of how long handlers run, in microseconds; None until one ran.
    pub average_run_us: Option<f64>,
}

impl ClaimState {
    pub fn starting_at(started_at: UnixMillis) -> ClaimState {
        ClaimState {
            last_number: started_at.saturating_mul(1000),
            look_for_work: true,
            next_due: None,
            data_version: 0,
            average_run_us: None,
        }
    }

    /// Folds one handler's run time into the average claim-ahead is sized by.
    pub fn observe_run(&mut self, ran_for: Duration) {
        let sample = ran_for.as_micros() as f64;
        self.average_run_us = Some(match self.average_run_us {
            None => sample,
            Some(average) => average * 0.9 + sample * 0.1,
        });
    }

    /// Jobs to hold beyond one per worker: about [`CLAIM_AHEAD_WINDOW`] of work at the
    /// running average, never more than `daemon.prefetch`, and one per worker until the
    /// first jobs have shown how long they take.
    pub fn ahead(&self, config: &Config) -> usize {
        let workers = config.daemon.workers;
        let limit = config.daemon.prefetch;
        match self.average_run_us {
            None => workers.min(limit),
            Some(us) => {
                let window = CLAIM_AHEAD_WINDOW.as_micros() as f64 * workers as f64;
                ((window / us.max(1.0)) as usize).min(limit)
            }
        }
    }

    /// Learns of a job that becomes due at `at`.
    pub fn due_at(&mut self, at: UnixMillis) {
        self.next_due = Some(self.next_due.map_or(at, |due| due.min(at)));
    }
}

impl Dispatcher {
    /// How many more jobs to claim, counting `finishing` jobs (reported in this turn) as
    /// gone: none while draining, else workers plus claim-ahead less what is in flight.
    pub(super) fn free_slots(&self, finishing: usize) -> usize {
        if self.draining.is_some() {
            return 0;
        }
        let config = self.config();
        let capacity = config.daemon.workers + self.claims.ahead(config);
        capacity.saturating_sub(self.flights.len().saturating_sub(finishing))
    }

    /// What to claim: `free` jobs, within each limited queue's room. Jobs finishing in
    /// this very transaction no longer count against their queue, or a queue at its limit
    /// would find no room the moment its job ends and then wait for unrelated news.
    pub(super) fn claim_spec(&self, free: usize, finishing: &[Report]) -> ClaimSpec {
        let limited_queues = self
            .config()
            .queues
            .iter()
            .map(|(name, q)| {
                let load = self.flights.load(name);
                let leaving = finishing
                    .iter()
                    .filter(|r| {
                        self.flights
                            .get(r.job_id)
                            .is_some_and(|f| &f.job.queue == name)
                    })
                    .count();
                (
                    name.clone(),
                    q.concurrency.saturating_sub(load.saturating_sub(leaving)),
                )
            })
            .collect();
        ClaimSpec {
            limit: free,
            limited_queues,
            destinations: self.config().destination_limits(),
        }
    }
}
