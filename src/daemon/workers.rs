//! The worker pool: a fixed number of threads, each running one job at a time through its
//! kind's handler and reporting the outcome to the dispatcher.

use super::dispatcher::Command;
use super::journal::{Start, StartJournal};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::handlers::{JobContext, Progress, Registry, StopReason, StopSignal, SyncStateView};
use crate::job::{Job, JobId, Outcome, UnixMillis};
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the dispatcher and the worker running a job share.
#[derive(Debug, Default)]
pub struct Ticket {
    pub stop: Arc<StopSignal>,
    /// When the handler started, 0 while the job waits for a worker, or
    /// [`Ticket::WITHDRAWN`]. The worker and the dispatcher each move it from 0 with a
    /// compare-and-swap, so a job is either started or taken back, never both.
    pub started_at: AtomicI64,
    /// What the handler reported of its progress.
    pub progress: Arc<Progress>,
    /// The destination holds the handler asked for.
    pub holds: Arc<crate::flow::HoldReports>,
}

impl Ticket {
    /// The dispatcher took the job back before its handler started (its lease ran out).
    pub const WITHDRAWN: i64 = -1;

    /// Takes the job back unless its handler has started. Returns whether it was (or
    /// had already been) taken back.
    pub fn withdraw(&self) -> bool {
        match self.started_at.compare_exchange(
            0,
            Self::WITHDRAWN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(now) => now == Self::WITHDRAWN,
        }
    }

    /// When the handler started, if it has.
    pub fn started(&self) -> Option<UnixMillis> {
        let at = self.started_at.load(Ordering::SeqCst);
        (at > 0).then_some(at)
    }
}

/// A claimed job handed to the pool.
pub struct Assignment {
    pub job: Arc<Job>,
    pub ticket: Arc<Ticket>,
    /// The dispatcher's number for the claim that holds the job (for the start journal).
    pub claim: i64,
    /// The configuration current when it was claimed.
    pub config: Arc<Config>,
    /// For a parent resumed after its children: how many ended in each state.
    pub children: Option<std::collections::BTreeMap<String, u64>>,
}

/// A worker's account of one attempt.
#[derive(Debug, Clone)]
pub struct Report {
    pub job_id: JobId,
    /// The claim the attempt ran under: a report from a claim the dispatcher has since
    /// taken back is not applied to a later claim of the same job.
    pub claim: i64,
    pub outcome: Outcome,
    /// Whether the handler ran at all.
    pub started: bool,
    pub started_at: UnixMillis,
    /// When the handler started, in microseconds (recorded with the attempt).
    pub started_us: Option<i64>,
    pub finished_at: UnixMillis,
    /// How long the handler ran, measured on the monotonic clock.
    pub ran_for: Duration,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    count: usize,
    work: Receiver<Assignment>,
    reports: Sender<Command>,
    registry: Arc<Registry>,
    clock: SharedClock,
    data_dir: PathBuf,
    sync_state: Arc<dyn SyncStateView>,
    journal: Arc<StartJournal>,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|n| {
            let work = work.clone();
            let reports = reports.clone();
            let registry = registry.clone();
            let clock = clock.clone();
            let data_dir = data_dir.clone();
            let sync_state = sync_state.clone();
            let journal = journal.clone();
            std::thread::Builder::new()
                .name(format!("jobd-worker-{n}"))
                .spawn(move || {
                    for assignment in work.iter() {
                        let report = run_one(
                            assignment,
                            &registry,
                            &clock,
                            &data_dir,
                            &sync_state,
                            &journal,
                        );
                        if reports.send(Command::Finished(report)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn worker thread")
        })
        .collect()
}

/// Runs one assignment on this thread, unless it was stopped or taken back before its
/// handler could start.
pub(super) fn run_one(
    assignment: Assignment,
    registry: &Registry,
    clock: &SharedClock,
    data_dir: &std::path::Path,
    sync_state: &Arc<dyn SyncStateView>,
    journal: &StartJournal,
) -> Report {
    let Assignment {
        job,
        ticket,
        claim,
        config,
        children,
    } = assignment;
    let started_at = clock.now_ms();
    // A job still waiting for a worker when the daemon began to drain, or when it was
    // cancelled, does not start.
    if let Some(reason) = ticket.stop.reason() {
        let outcome = match reason {
            StopReason::Cancelled => Outcome::Cancelled {
                reason: "cancelled by an operator before it started".into(),
            },
            _ => Outcome::Interrupted {
                reason: "the daemon is stopping".into(),
            },
        };
        return Report {
            job_id: job.id,
            claim,
            outcome,
            started: false,
            started_at,
            started_us: None,
            finished_at: started_at,
            ran_for: Duration::ZERO,
        };
    }
    let not_started = |reason: &str| Report {
        job_id: job.id,
        claim,
        outcome: Outcome::Interrupted {
            reason: reason.into(),
        },
        started: false,
        started_at,
        started_us: None,
        finished_at: started_at,
        ran_for: Duration::ZERO,
    };
    if ticket
        .started_at
        .compare_exchange(0, started_at.max(1), Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return not_started("taken back before it started");
    }
    // The start is on record before the handler can do anything: recovery charges this
    // attempt only if it finds it here (or in the row).
    if let Err(e) = journal.append(Start {
        job: job.id,
        attempt: job.attempts,
        claim,
    }) {
        tracing::warn!(job = job.id, "cannot append to the start journal: {e}; if the daemon dies now, this attempt is not charged");
    }
    let timeout = config.timeout_for(&job.kind);
    let ctx = JobContext {
        clock: clock.clone(),
        config: config.clone(),
        data_dir: data_dir.to_path_buf(),
        deadline: Instant::now() + timeout,
        timeout,
        stop: ticket.stop.clone(),
        children,
        sync_state: sync_state.clone(),
        progress_report: ticket.progress.clone(),
        holds: ticket.holds.clone(),
    };
    let began = clock.monotonic();
    let started_us = clock.now_us();
    let outcome = match registry.get(&job.kind) {
        None => Outcome::permanent(registry.unknown_kind(&job.kind).to_string()),
        Some(handler) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.run(&job, &ctx)))
            {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Outcome::permanent(format!("the {} handler panicked: {message}", job.kind))
                }
            }
        }
    };
    Report {
        job_id: job.id,
        claim,
        outcome,
        started: true,
        started_at,
        started_us: Some(started_us),
        finished_at: clock.now_ms(),
        ran_for: clock.monotonic().saturating_duration_since(began),
    }
}
