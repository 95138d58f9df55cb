//! Stopping: no new claims; running handlers get `daemon.shutdown_grace` to finish, are
//! then told to stop, and whatever has not reported [`INTERRUPT_GRACE`] later is put back
//! in the queue uncharged. All of it timed on the clock's monotonic timeline.

use super::{Dispatcher, Exit};
use crate::clock::Moment;
use crate::handlers::StopReason;
use crate::job::{Completion, Resolution};
use crate::store::{Applied, StoreError};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// After the grace period, how long stopped handlers get to report before their jobs are
/// released regardless.
pub(super) const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    /// Until when running handlers may finish on their own.
    pub grace_until: Moment,
    /// Set once they were told to stop: until when they may still report.
    pub interrupted_until: Option<Moment>,
}

impl Drain {
    /// When the drain takes its next step.
    pub fn next_step(&self) -> Moment {
        self.interrupted_until.unwrap_or(self.grace_until)
    }
}

impl Dispatcher {
    pub(super) fn begin_drain(&mut self) {
        let grace = self.config().daemon.shutdown_grace;
        tracing::info!(
            "stopping: no new claims; {} job(s) in flight have {} to finish",
            self.flights.len(),
            humantime::format_duration(grace)
        );
        self.outlets.notifier.stopping();
        self.flights.stop_all(StopReason::Draining);
        self.draining = Some(Drain {
            grace_until: self.clock.monotonic() + grace,
            interrupted_until: None,
        });
    }

    /// Past the grace period, running handlers are told to stop; shortly after, whatever
    /// has not reported is put back uncharged.
    pub(super) fn advance_drain(&mut self, at: Moment) -> Result<Option<Exit>, StoreError> {
        let Some(drain) = &mut self.draining else {
            return Ok(None);
        };
        if at < drain.grace_until {
            return Ok(None);
        }
        match drain.interrupted_until {
            None => {
                tracing::warn!(
                    "grace period over: stopping {} job(s) still running; they go back to the queue uncharged",
                    self.flights.len()
                );
                drain.interrupted_until = Some(at + INTERRUPT_GRACE);
                self.flights.stop_all(StopReason::Interrupted);
                Ok(None)
            }
            Some(until) if at >= until => {
                self.release_all()?;
                Ok(Some(Exit::Clean))
            }
            Some(_) => Ok(None),
        }
    }

    /// Puts every job still in flight back in the queue, uncharged; a job whose handler
    /// never started (claimed ahead) keeps no attempt either.
    pub(super) fn release_all(&mut self) -> Result<(), StoreError> {
        if self.flights.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let completions: Vec<Completion> = self
            .flights
            .values()
            .map(|f| {
                let started = f.ticket.started_at.load(Ordering::SeqCst);
                Completion {
                    job_id: f.job.id,
                    parent_id: f.job.parent_id,
                    attempt: f.job.attempts,
                    worker: self.name.clone(),
                    started_at: if started > 0 { started } else { now },
                    finished_at: now,
                    resolution: Resolution::Released {
                        started: started > 0,
                    },
                    detail: None,
                }
            })
            .collect();
        let released = self.db.write(|tx| {
            let mut n = 0;
            for completion in &completions {
                if tx.complete(completion, now)? != Applied::Stale {
                    n += 1;
                }
            }
            Ok(n)
        })?;
        tracing::info!("put {released} unfinished job(s) back in the queue, uncharged");
        self.flights.clear();
        Ok(())
    }
}
