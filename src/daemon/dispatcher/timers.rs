//! When each periodic phase of the dispatcher is next due, on the clock's monotonic
//! timeline, and how long the loop may wait before something is.

use super::Dispatcher;
use crate::clock::Moment;
use std::time::Duration;

/// The longest the loop waits for a command when nothing is due sooner.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(1);

/// When the periodic work is next due. Every timer starts due.
#[derive(Debug, Clone)]
pub(super) struct Timers {
    /// The data_version poll for writes by other processes (and cancel requests).
    pub poll: Moment,
    /// Extending the leases of the jobs in flight.
    pub heartbeat: Moment,
    /// Rescuing expired leases and purging by retention.
    pub reap: Moment,
    /// Refreshing `STATUS=`.
    pub status: Moment,
    /// Handing the metrics writer a snapshot.
    pub metrics: Moment,
    /// `WATCHDOG=1`, if systemd asked for it.
    pub watchdog: Option<Moment>,
}

impl Timers {
    pub fn starting_at(at: Moment, watchdog_interval: Option<Duration>) -> Timers {
        Timers {
            poll: at,
            heartbeat: at,
            reap: at,
            status: at,
            metrics: at,
            watchdog: watchdog_interval.map(|_| at),
        }
    }
}

impl Dispatcher {
    /// Whether the leases of the jobs in flight are due to be extended at `at`.
    pub(super) fn heartbeat_due(&self, at: Moment) -> bool {
        at >= self.timers.heartbeat
    }

    /// Whether expired leases and retention are due to be looked at at `at`.
    pub(super) fn reap_due(&self, at: Moment) -> bool {
        at >= self.timers.reap
    }

    /// How long the loop may wait for a command before a turn is due anyway: for a held
    /// write to be tried again, work to look for, a job to become due, a heartbeat, a
    /// poll, the reaper, metrics, the watchdog or the drain's next step.
    pub(super) fn time_to_wait(&self) -> Duration {
        let at = self.clock.monotonic();
        let now = self.clock.now_ms();
        let mut wait = MAX_WAIT;
        let mut until = |due: Moment| wait = wait.min(due.saturating_duration_since(at));
        if !self.held.is_empty() {
            until(self.held.retry_at.unwrap_or(at));
        }
        if self.free_slots(0) > 0 {
            if self.claims.look_for_work {
                until(at);
            }
            until(self.timers.poll);
            if let Some(due) = self.claims.next_due {
                until(at + Duration::from_millis(due.saturating_sub(now).max(0) as u64));
            }
        }
        if !self.flights.is_empty() {
            until(self.timers.heartbeat);
            // Cancel requests arrive as writes by another process.
            until(self.timers.poll);
        }
        until(self.timers.reap);
        if self.config().metrics.textfile.is_some() {
            until(self.timers.metrics);
        }
        if let Some(next) = self.timers.watchdog {
            until(next);
        }
        if let Some(drain) = &self.draining {
            until(drain.next_step());
        }
        wait
    }
}
