//! The jobs the dispatcher has claimed and handed to workers, until their outcome is
//! written: what each worker shares with it (its [`Ticket`]), and the per-queue load.

use super::Dispatcher;
use crate::clock::Moment;
use crate::config::Config;
use crate::daemon::journal::Start;
use crate::daemon::workers::{Assignment, Report, Ticket};
use crate::handlers::StopReason;
use crate::job::{Job, JobId, UnixMillis};
use crate::store::HeldClaim;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a handler runs before its start is written to its row. Shorter jobs finish
/// first and never cost the extra update; stats show a job as claimed for this long
/// (plus up to a `poll_interval`) after it started.
pub(super) const START_RECORD_DELAY: Duration = Duration::from_millis(20);

pub(super) struct InFlight {
    pub job: Arc<Job>,
    pub ticket: Arc<Ticket>,
    /// The version of the handler's progress last written to the database.
    pub progress_written: u64,
    /// The claim that holds it (see [`crate::daemon::journal::StartJournal`]).
    pub claim: i64,
    /// Whether its start is written to its row (for stats: running, not just claimed).
    pub start_recorded: bool,
    /// The turn that first saw its handler running.
    pub start_seen: Option<Moment>,
}

/// A lease to extend: the job and the attempt that holds it.
pub(super) type Lease = (JobId, u32);
/// A handler start to write to its row: job, attempt, when.
pub(super) type StartToRecord = (JobId, u32, UnixMillis);
/// Progress to write: job, attempt, the progress version, its value.
pub(super) type ProgressToWrite = (JobId, u32, u64, serde_json::Value);

#[derive(Default)]
pub(super) struct InFlightTable {
    jobs: HashMap<JobId, InFlight>,
    /// Jobs in flight per queue, for queue concurrency limits.
    queue_load: HashMap<String, usize>,
}

impl InFlightTable {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn get(&self, id: JobId) -> Option<&InFlight> {
        self.jobs.get(&id)
    }

    pub fn get_mut(&mut self, id: JobId) -> Option<&mut InFlight> {
        self.jobs.get_mut(&id)
    }

    pub fn contains(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    pub fn values(&self) -> impl Iterator<Item = &InFlight> {
        self.jobs.values()
    }

    /// Jobs of `queue` in flight.
    pub fn load(&self, queue: &str) -> usize {
        self.queue_load.get(queue).copied().unwrap_or(0)
    }

    pub fn insert(&mut self, job: Arc<Job>, ticket: Arc<Ticket>, claim: i64) {
        *self.queue_load.entry(job.queue.clone()).or_default() += 1;
        self.jobs.insert(
            job.id,
            InFlight {
                job,
                ticket,
                progress_written: 0,
                claim,
                start_recorded: false,
                start_seen: None,
            },
        );
    }

    pub fn forget(&mut self, id: JobId) -> Option<InFlight> {
        let flight = self.jobs.remove(&id)?;
        if let Some(load) = self.queue_load.get_mut(&flight.job.queue) {
            *load = load.saturating_sub(1);
        }
        Some(flight)
    }

    pub fn clear(&mut self) {
        self.jobs.clear();
        self.queue_load.clear();
    }

    /// Asks every handler in flight to stop.
    pub fn stop_all(&self, reason: StopReason) {
        for flight in self.jobs.values() {
            flight.ticket.stop.raise(reason);
        }
    }

    /// For the rescue of an expired lease: whether the job may have started. A job of
    /// ours that never started (the dispatcher could not write for a while) is withdrawn
    /// here, so its worker will not start it, and is taken back uncharged. One that
    /// started is charged; so is a row not in flight: nothing says it did not start.
    pub fn started_or_unknown(&self, held: &HeldClaim) -> bool {
        self.jobs
            .get(&held.id)
            .is_none_or(|flight| !flight.ticket.withdraw())
    }

    /// Starts to write to their rows: handlers running for [`START_RECORD_DELAY`] whose
    /// start is not written yet, except of jobs finishing in this turn.
    pub fn starts_to_record(&mut self, finishing: &[Report], at: Moment) -> Vec<StartToRecord> {
        let mut starts = Vec::new();
        for f in self.jobs.values_mut().filter(|f| !f.start_recorded) {
            let Some(started_at) = f.ticket.started() else {
                continue;
            };
            match f.start_seen {
                None => f.start_seen = Some(at),
                Some(seen) if at.saturating_duration_since(seen) >= START_RECORD_DELAY => {
                    starts.push((f.job.id, f.job.attempts, started_at));
                }
                Some(_) => {}
            }
        }
        if !starts.is_empty() && !finishing.is_empty() {
            let finishing: HashSet<JobId> = finishing.iter().map(|r| r.job_id).collect();
            starts.retain(|(id, _, _)| !finishing.contains(id));
        }
        starts
    }

    /// Leases to extend: every job in flight except one that has outrun its timeout by
    /// more than a lease, whose worker is presumed hung; letting its lease lapse hands the
    /// job to the reaper.
    pub fn live_leases(&self, config: &Config, now: UnixMillis) -> Vec<Lease> {
        let lease = config.daemon.lease.as_millis() as i64;
        self.jobs
            .values()
            .filter(|f| {
                let started = f.ticket.started_at.load(Ordering::SeqCst);
                let timeout = config.timeout_for(&f.job.kind).as_millis() as i64;
                started == 0 || now <= started + timeout + lease
            })
            .map(|f| (f.job.id, f.job.attempts))
            .collect()
    }

    /// Progress to write in this turn: with the heartbeat, every running attempt's that
    /// changed since it was last written; and the last word of each attempt ending now.
    pub fn progress_to_write(
        &self,
        heartbeat_due: bool,
        finishing: &[Report],
    ) -> Vec<ProgressToWrite> {
        let changed = |(id, f): (&JobId, &InFlight)| {
            let (version, value) = f.ticket.progress.changed_since(f.progress_written)?;
            Some((*id, f.job.attempts, version, value))
        };
        if heartbeat_due {
            return self.jobs.iter().filter_map(changed).collect();
        }
        // Only the attempts ending now: looked up by their reports, not by walking every
        // job in flight (hundreds, with claim-ahead) for each report.
        let mut ending: Vec<JobId> = finishing
            .iter()
            .filter(|r| r.started)
            .map(|r| r.job_id)
            .collect();
        ending.sort_unstable();
        ending.dedup();
        ending
            .iter()
            .filter_map(|id| self.jobs.get_key_value(id))
            .filter_map(changed)
            .collect()
    }

    /// The starts of the jobs in flight whose handlers started, as the journal keeps them.
    pub fn journal_starts(&self) -> Vec<Start> {
        self.jobs
            .values()
            .filter(|f| f.ticket.started().is_some())
            .map(|f| Start {
                job: f.job.id,
                attempt: f.job.attempts,
                claim: f.claim,
            })
            .collect()
    }
}

impl Dispatcher {
    /// Hands a claimed job to the workers.
    pub(super) fn dispatch(&mut self, job: Job, claim: i64) {
        let job = Arc::new(job);
        let ticket = Arc::new(Ticket::default());
        // A resumed parent sums up its children: tell its handler how they ended.
        let children = if job.stage > 0 {
            self.db.children_counts(job.id).ok()
        } else {
            None
        };
        let assignment = Assignment {
            job: job.clone(),
            ticket: ticket.clone(),
            claim,
            config: self.config().clone(),
            children,
        };
        self.flights.insert(job, ticket, claim);
        if self.outlets.work.send(assignment).is_err() {
            tracing::error!("no workers are left to run jobs");
        }
    }

    /// Keeps the start journal small: past its limit it is rewritten with the starts of
    /// the jobs still in flight.
    pub(super) fn rotate_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        if !journal.needs_rotation() {
            return;
        }
        if let Err(e) = journal.rotate(|| self.flights.journal_starts()) {
            tracing::warn!("cannot rotate the start journal: {e}; it keeps growing");
        }
    }
}
