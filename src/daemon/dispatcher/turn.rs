//! One turn of the dispatcher, as named phases. Before the transaction, from the clock
//! and what is in memory: take the commands, step the drain, poll for outside writes,
//! wake for jobs now due, take the holds handlers asked for, and plan. In one
//! transaction: apply completions, write destination holds, apply enqueues (and
//! ingest's tasks), record handler starts, heartbeat (extend leases), record
//! progress, rescue expired leases, purge by retention, claim (with claim-ahead) and
//! read the next due time. After the commit: settle what it did (or hold the outcomes
//! when the write failed, to try again).

use super::flight::{Lease, ProgressToWrite, StartToRecord};
use super::syncer::AfterCommit;
use super::{Command, Dispatcher, Exit, TxTask};
use crate::clock::{after, Moment};
use crate::config::Config;
use crate::daemon::workers::Report;
use crate::daemon::{ClientError, EnqueueReply, ReplyTo};
use crate::flow::HoldRequest;
use crate::handlers::StopReason;
use crate::job::{Completion, Job, JobId, JobState, NewJob, UnixMillis};
use crate::store::{Applied, ClaimSpec, Claimed, Finished, StoreError, StoreTx};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

/// How long a failed write waits before it is tried again (disk full, database busy).
pub(super) const WRITE_RETRY: Duration = Duration::from_secs(1);
/// Chunk size for retention deletes, so purging never holds the lock for long.
const PURGE_CHUNK: usize = 5000;
/// While the database cannot be written, how often the error is repeated in the log.
const WRITE_ERROR_REPEAT: Duration = Duration::from_secs(60);

/// Outcomes held in memory while the database cannot be written.
#[derive(Default)]
pub(super) struct HeldOutcomes {
    pub reports: Vec<Report>,
    /// When the write is tried again; None while writes work.
    pub retry_at: Option<Moment>,
    /// Since when writes fail, and when that was last logged at error level.
    pub failing: Option<(Moment, Moment)>,
}

impl HeldOutcomes {
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Whether a failed write is still waiting out [`WRITE_RETRY`] at `at`.
    fn waiting(&self, at: Moment) -> bool {
        self.retry_at.is_some_and(|retry_at| at < retry_at)
    }
}

/// What the commands of one turn bring.
#[derive(Default)]
pub(super) struct Intake {
    /// Worker reports, after the ones held from a failed write.
    pub reports: Vec<Report>,
    pub enqueues: Vec<(Vec<NewJob>, ReplyTo)>,
    pub tasks: Vec<TxTask>,
}

impl Intake {
    fn brings_new_work(&self) -> bool {
        !self.enqueues.is_empty() || !self.tasks.is_empty()
    }
}

/// What a turn writes, decided before its transaction from the clock and memory.
pub(super) struct Plan {
    pub now: UnixMillis,
    pub lease_until: UnixMillis,
    pub completions: Vec<Completion>,
    /// Handler starts in microseconds, of the attempts finishing, for their history.
    pub started_us: HashMap<JobId, i64>,
    pub starts: Vec<StartToRecord>,
    /// The leases to extend, when the heartbeat is due.
    pub heartbeat: Option<Vec<Lease>>,
    pub progress: Vec<ProgressToWrite>,
    /// Whether rescue and purge are due.
    pub reap: bool,
    /// The claim to make, and its number.
    pub claim: Option<(ClaimSpec, i64)>,
    /// The earliest `run_at` of the jobs enqueued for later in this turn.
    pub first_later: Option<UnixMillis>,
}

/// What a turn's transaction did.
pub(super) struct Written {
    pub applied: Vec<Applied>,
    pub enqueued: Vec<EnqueueReply>,
    pub rescued: Vec<(JobId, JobState)>,
    pub claimed: Vec<Job>,
    /// When the next waiting job becomes due, read when the claim ran out of ready jobs.
    pub next_due: Option<UnixMillis>,
}

/// What to tell each task that ran inside the transaction once its fate is known.
pub(super) type AfterTask = Box<dyn FnOnce(Result<(), ClientError>) + Send>;

impl Dispatcher {
    /// One turn: everything waiting, in one transaction. Returns an exit when done.
    pub(crate) fn run_once(&mut self, batch: Vec<Command>) -> Result<Option<Exit>, StoreError> {
        let mut intake = match self.take_commands(batch)? {
            ControlFlow::Continue(intake) => intake,
            ControlFlow::Break(exit) => return Ok(Some(exit)),
        };
        let at = self.clock.monotonic();
        if self.held.waiting(at) && !intake.brings_new_work() {
            self.held.reports = intake.reports;
            // Watchdog pings go on while writes wait: a full disk is not a hang, and a
            // restart would lose the outcomes held in memory.
            self.housekeeping(at);
            return Ok(None);
        }
        if let Some(exit) = self.advance_drain(at)? {
            return Ok(Some(exit));
        }
        let now = self.clock.now_ms();
        self.poll_outside_writes(at)?;
        self.wake_for_due(now);
        let Some(plan) = self.plan(&intake, at, now) else {
            self.housekeeping(at);
            return Ok(self.finished(false));
        };
        let mut after_tasks = Vec::with_capacity(intake.tasks.len());
        match self.write_turn(&mut intake, &plan, &mut after_tasks) {
            Ok(written) => Ok(self.settle(intake, plan, written, after_tasks, at)),
            Err(e) => {
                self.hold(intake, &e, after_tasks, at);
                Ok(None)
            }
        }
    }

    /// Phase: sorts the commands. Stop signals and reloads act at once; a second stop
    /// signal releases every job in flight and ends the dispatcher.
    fn take_commands(
        &mut self,
        batch: Vec<Command>,
    ) -> Result<ControlFlow<Exit, Intake>, StoreError> {
        let mut intake = Intake {
            reports: std::mem::take(&mut self.held.reports),
            ..Intake::default()
        };
        for command in batch {
            match command {
                Command::Finished(report) => {
                    if report.started {
                        self.stats.handler_durations.observe(report.ran_for);
                        self.claims.observe_run(report.ran_for);
                    }
                    intake.reports.push(report)
                }
                Command::Write(task) => intake.tasks.push(task),
                Command::Enqueue { jobs, reply } => intake.enqueues.push((jobs, reply)),
                Command::Reload => self.reload(),
                Command::Shutdown => {
                    if self.draining.is_some() {
                        tracing::warn!(
                            "second stop signal: putting unfinished jobs back and exiting now"
                        );
                        self.release_all()?;
                        return Ok(ControlFlow::Break(Exit::Forced));
                    }
                    self.begin_drain();
                }
            }
        }
        Ok(ControlFlow::Continue(intake))
    }

    /// Phase: every `poll_interval`, notices writes by other processes (jobs inserted
    /// with plain SQL, an operator's cancel of a running job).
    fn poll_outside_writes(&mut self, at: Moment) -> Result<(), StoreError> {
        if at < self.timers.poll {
            return Ok(());
        }
        self.timers.poll = at + self.config().daemon.poll_interval;
        let version = self.db.change_token()?;
        if version != self.claims.data_version {
            self.claims.data_version = version;
            self.claims.look_for_work = true;
            self.pass_on_cancel_requests()?;
        }
        Ok(())
    }

    /// Tells the handlers of running jobs an operator cancelled to stop.
    fn pass_on_cancel_requests(&self) -> Result<(), StoreError> {
        if self.flights.is_empty() {
            return Ok(());
        }
        for id in self.db.cancel_requests()? {
            if let Some(flight) = self.flights.get(id) {
                flight.ticket.stop.raise(StopReason::Cancelled);
            }
        }
        Ok(())
    }

    /// Phase: a job that was waiting (delayed, or backing off) is due by `now`.
    fn wake_for_due(&mut self, now: UnixMillis) {
        if self.claims.next_due.is_some_and(|due| due <= now) {
            self.claims.next_due = None;
            self.claims.look_for_work = true;
        }
    }

    /// Phase: decides what this turn writes. None when there is nothing to write.
    pub(super) fn plan(&mut self, intake: &Intake, at: Moment, now: UnixMillis) -> Option<Plan> {
        let heartbeat_due = self.heartbeat_due(at);
        let reap = self.reap_due(at);
        let reports = &intake.reports;
        let free = self.free_slots(reports.len());
        // Jobs enqueued for later cannot be claimed now: they need no claim, only a
        // `next_due` early enough (a claim in the same turn reads it back anyway).
        let later = |job: &NewJob| job.run_at.filter(|at| *at > now);
        let ready_work = !intake.tasks.is_empty()
            || intake
                .enqueues
                .iter()
                .any(|(jobs, _)| jobs.iter().any(|job| later(job).is_none()));
        let first_later = intake
            .enqueues
            .iter()
            .flat_map(|(jobs, _)| jobs.iter().filter_map(later))
            .min();
        let claim = free > 0 && (self.claims.look_for_work || !reports.is_empty() || ready_work);
        let starts = self.flights.starts_to_record(reports, at);
        self.take_holds();
        let quiet = reports.is_empty()
            && !intake.brings_new_work()
            && !claim
            && !heartbeat_due
            && !reap
            && starts.is_empty()
            && self.pending_holds.is_empty();
        if quiet {
            return None;
        }
        let config = self.config().clone();
        let claim = claim.then(|| {
            self.claims.last_number += 1;
            (self.claim_spec(free, reports), self.claims.last_number)
        });
        Some(Plan {
            now,
            lease_until: after(now, config.daemon.lease),
            completions: reports
                .iter()
                .filter_map(|r| self.resolve(r, now))
                .collect(),
            started_us: reports
                .iter()
                .filter_map(|r| Some((r.job_id, r.started_us?)))
                .collect(),
            starts,
            heartbeat: heartbeat_due.then(|| self.flights.live_leases(&config, now)),
            progress: self.flights.progress_to_write(heartbeat_due, reports),
            reap,
            claim,
            first_later,
        })
    }

    /// Phase: the holds handlers asked for, finished or not (a pull waiting out a 429
    /// inside its attempt), to be written in this turn, so no daemon claims the
    /// destination meanwhile.
    fn take_holds(&mut self) {
        for flight in self.flights.values() {
            self.pending_holds.extend(flight.ticket.holds.take());
        }
    }

    /// The turn's one transaction: each phase's write, in order.
    fn write_turn(
        &mut self,
        intake: &mut Intake,
        plan: &Plan,
        after_tasks: &mut Vec<AfterTask>,
    ) -> Result<Written, StoreError> {
        let flights = &self.flights;
        let config = &self.settings.config;
        let name = self.name.as_str();
        let enqueues = &intake.enqueues;
        let tasks = &mut intake.tasks;
        let holds = &self.pending_holds;
        let now = plan.now;
        self.db.write(|tx| {
            let applied = apply_completions(tx, &plan.completions, &plan.started_us, now)?;
            // After the completions, so the job that was told to wait is parked too.
            write_holds(tx, holds, now)?;
            let enqueued = apply_enqueues(tx, enqueues, now);
            after_tasks.extend(tasks.drain(..).map(|task| task(tx, now)));
            tx.record_starts(&plan.starts, name)?;
            if let Some(leases) = &plan.heartbeat {
                heartbeat(tx, leases, name, plan.lease_until, now)?;
            }
            record_progress(tx, &plan.progress, now)?;
            let rescued = if plan.reap {
                let rescued = rescue(tx, config, &|held| flights.started_or_unknown(held), now)?;
                purge(tx, config, now)?;
                rescued
            } else {
                Vec::new()
            };
            let (claimed, next_due) = match &plan.claim {
                Some((spec, number)) => claim(tx, spec, *number, name, plan.lease_until, now)?,
                None => (Vec::new(), None),
            };
            Ok(Written {
                applied,
                enqueued,
                rescued,
                claimed,
                next_due,
            })
        })
    }

    /// Phase, after the commit: the in-memory state catches up with what was written.
    fn settle(
        &mut self,
        intake: Intake,
        plan: Plan,
        written: Written,
        after_tasks: Vec<AfterTask>,
        at: Moment,
    ) -> Option<Exit> {
        self.stats.counters.commits += 1;
        self.pending_holds.clear();
        if self.held.retry_at.take().is_some() {
            let since = self.held.failing.take().map(|(since, _)| since);
            tracing::info!(
                "the queue database is writable again after {}s; held outcomes written",
                since.map_or(0, |since| at.saturating_duration_since(since).as_secs())
            );
        }
        for (id, _, version, _) in &plan.progress {
            if let Some(flight) = self.flights.get_mut(*id) {
                flight.progress_written = *version;
            }
        }
        for (completion, applied) in plan.completions.iter().zip(&written.applied) {
            self.finish(completion, applied);
        }
        self.after_commit(AfterCommit {
            answers: intake
                .enqueues
                .into_iter()
                .map(|(_, reply)| reply)
                .zip(written.enqueued)
                .collect(),
            tasks: after_tasks.into_iter().map(|done| (done, Ok(()))).collect(),
        });
        for (id, _, _) in &plan.starts {
            if let Some(flight) = self.flights.get_mut(*id) {
                flight.start_recorded = true;
            }
        }
        self.settle_rescued(written.rescued);
        if plan.heartbeat.is_some() {
            self.timers.heartbeat = at + self.config().daemon.lease / 3;
        }
        if plan.reap {
            self.timers.reap = at + self.config().daemon.reap_interval;
        }
        let found_nothing = match plan.claim {
            None => {
                if let Some(first_later) = plan.first_later {
                    self.claims.due_at(first_later);
                }
                false
            }
            Some((spec, number)) => {
                // Fewer than asked means the ready rows ran out; wait for news.
                self.claims.look_for_work = written.claimed.len() == spec.limit;
                self.claims.next_due = written.next_due.filter(|due| *due > plan.now);
                let found_nothing = written.claimed.is_empty();
                for job in written.claimed {
                    self.dispatch(job, number);
                }
                found_nothing
            }
        };
        self.rotate_journal();
        self.housekeeping(at);
        self.finished(found_nothing)
    }

    /// Jobs whose lease the reaper took back: ours leave the in-flight table.
    fn settle_rescued(&mut self, rescued: Vec<(JobId, JobState)>) {
        for (id, state) in rescued {
            if state == JobState::Queued {
                tracing::warn!(job = id, "job {id}'s lease ran out before its handler started; it is queued again, attempt not charged");
                self.flights.forget(id);
            } else if self.flights.contains(id) {
                tracing::warn!(job = id, "job {id} outran its timeout and lease; it is {state} now and its worker is abandoned");
                self.flights.forget(id);
            } else {
                tracing::warn!(job = id, "job {id}'s lease expired; it is {state} now");
            }
        }
    }

    /// The write failed: enqueuers and tasks hear so, the outcomes are held in memory
    /// and written again after [`WRITE_RETRY`].
    fn hold(&mut self, intake: Intake, e: &StoreError, after_tasks: Vec<AfterTask>, at: Moment) {
        let reports = intake.reports.len();
        // Once at error level, then once a minute: a disk that stays full for an hour
        // must not write 3600 lines to the journal it shares the disk with.
        match &mut self.held.failing {
            None => {
                tracing::error!("cannot write to the queue database: {e}; holding {reports} outcome(s) in memory and trying again every {}s", WRITE_RETRY.as_secs());
                self.held.failing = Some((at, at));
            }
            Some((since, logged))
                if at.saturating_duration_since(*logged) >= WRITE_ERROR_REPEAT =>
            {
                tracing::error!("still cannot write to the queue database after {}s: {e}; holding {reports} outcome(s) in memory", at.saturating_duration_since(*since).as_secs());
                *logged = at;
            }
            Some(_) => tracing::debug!("cannot write to the queue database: {e}"),
        }
        // Tasks that ran inside the rolled-back transaction hear so here; tasks that
        // never ran (the error came first) get the same answer when dropped.
        self.after_commit(AfterCommit {
            answers: intake
                .enqueues
                .into_iter()
                .map(|(_, reply)| (reply, Err(ClientError::NotEnqueued(e.to_string()))))
                .collect(),
            tasks: after_tasks
                .into_iter()
                .map(|done| (done, Err(ClientError::NotWritten(e.to_string()))))
                .collect(),
        });
        // A failing database is no time to spin for the next request.
        self.answered_directly = false;
        self.held.reports = intake.reports;
        self.held.retry_at = Some(at + WRITE_RETRY);
        self.housekeeping(at);
    }
}

/// Phase: writes each finished attempt's outcome, guarded by its attempt.
pub(super) fn apply_completions(
    tx: &dyn StoreTx,
    completions: &[Completion],
    started_us: &HashMap<JobId, i64>,
    now: UnixMillis,
) -> Result<Vec<Applied>, StoreError> {
    let finished: Vec<Finished<'_>> = completions
        .iter()
        .map(|completion| Finished {
            completion,
            started_us: started_us.get(&completion.job_id).copied(),
        })
        .collect();
    tx.complete_many(&finished, now)
}

/// Phase: holds each destination (and key) a handler asked for; a hold never shortens a
/// longer one (the store keeps the longer).
pub(super) fn write_holds(
    tx: &dyn StoreTx,
    holds: &[HoldRequest],
    now: UnixMillis,
) -> Result<(), StoreError> {
    for hold in holds {
        tx.hold_destination(hold, now)?;
    }
    Ok(())
}

/// Phase: inserts each enqueue all or nothing; one that fails is refused alone.
///
/// Small requests that follow one another in a turn (single enqueues from many clients,
/// which group commit brings together) go in as one enqueue: one savepoint and
/// multi-row inserts for all of them instead of a savepoint and a statement each (about
/// 16,000 of a single enqueue's 81,000 instructions, 16 clients, measured before a
/// one-job request lost its own savepoint; `MODE=singles scripts/enqueue-callgrind.sh`).
/// Ids, duplicates and order are what one enqueue after another gives. If the group is
/// refused, nothing of it stays and its requests are tried one by one, so only the one
/// at fault is refused.
pub(super) fn apply_enqueues(
    tx: &dyn StoreTx,
    enqueues: &[(Vec<NewJob>, ReplyTo)],
    now: UnixMillis,
) -> Vec<EnqueueReply> {
    let mut replies = Vec::with_capacity(enqueues.len());
    let mut rest = enqueues;
    while !rest.is_empty() {
        let small = rest
            .iter()
            .take_while(|(jobs, _)| jobs.len() <= GROUPED_REQUEST_MAX)
            .count();
        let run = &rest[..small.max(1)];
        match enqueue_grouped(tx, run, now) {
            Some(grouped) => replies.extend(grouped),
            None => replies.extend(run.iter().map(|(jobs, _)| {
                tx.enqueue(jobs, now)
                    .map_err(|e| ClientError::Refused(e.to_string()))
            })),
        }
        rest = &rest[run.len()..];
    }
    replies
}

/// The largest request [`apply_enqueues`] groups. A request's own savepoint costs about
/// 16,000 instructions (its statements and the pages it copies again), a job copied into
/// the group perhaps a few hundred: beyond this size a request pays for its own
/// savepoint rather than being copied.
const GROUPED_REQUEST_MAX: usize = 16;

/// [`apply_enqueues`]'s one enqueue for a run of small requests, its ids split back per
/// request; None for a run of one, or when the group was refused.
fn enqueue_grouped(
    tx: &dyn StoreTx,
    run: &[(Vec<NewJob>, ReplyTo)],
    now: UnixMillis,
) -> Option<Vec<EnqueueReply>> {
    if run.len() < 2 {
        return None;
    }
    let all: Vec<NewJob> = run
        .iter()
        .flat_map(|(jobs, _)| jobs.iter().cloned())
        .collect();
    let mut ids = tx.enqueue(&all, now).ok()?.into_iter();
    Some(
        run.iter()
            .map(|(jobs, _)| Ok(ids.by_ref().take(jobs.len()).collect()))
            .collect(),
    )
}

/// Phase: extends the leases of the jobs in flight to `lease_until`.
pub(super) fn heartbeat(
    tx: &dyn StoreTx,
    leases: &[Lease],
    name: &str,
    lease_until: UnixMillis,
    now: UnixMillis,
) -> Result<(), StoreError> {
    tx.extend_leases(leases, name, lease_until, now)?;
    Ok(())
}

/// Phase: writes the progress handlers reported.
fn record_progress(
    tx: &dyn StoreTx,
    progress: &[ProgressToWrite],
    now: UnixMillis,
) -> Result<(), StoreError> {
    if progress.is_empty() {
        return Ok(());
    }
    let rows: Vec<(JobId, u32, serde_json::Value)> = progress
        .iter()
        .map(|(id, attempt, _, value)| (*id, *attempt, value.clone()))
        .collect();
    tx.record_progress(&rows, now)
}

/// Phase: takes back every job whose lease expired by `now`. `started` says whether a
/// held job may have started (charged) or not (queued again uncharged).
pub(super) fn rescue(
    tx: &dyn StoreTx,
    config: &Config,
    started: &dyn Fn(&crate::store::HeldClaim) -> bool,
    now: UnixMillis,
) -> Result<Vec<(JobId, JobState)>, StoreError> {
    let max_attempts_of = |kind: &str| config.policy_for(kind).max_attempts;
    tx.rescue_expired(now, false, &max_attempts_of, started)
}

/// Phase: deletes succeeded jobs older than `daemon.retention`, a chunk per turn.
pub(super) fn purge(tx: &dyn StoreTx, config: &Config, now: UnixMillis) -> Result<(), StoreError> {
    // Once across daemons sharing a database: the leader purges.
    if !crate::daemon::cluster::is_leader() {
        return Ok(());
    }
    let cutoff = now - config.daemon.retention.as_millis() as i64;
    tx.purge_finished(JobState::Succeeded, cutoff, PURGE_CHUNK)?;
    Ok(())
}

/// Phase: claims up to `spec.limit` ready jobs, except of paused queues and held
/// destinations, within each destination's tokens and room; when fewer were ready, also
/// reads when the next waiting job becomes due (or a destination out of tokens gets its
/// next one, if sooner).
pub(super) fn claim(
    tx: &dyn StoreTx,
    spec: &ClaimSpec,
    number: i64,
    name: &str,
    lease_until: UnixMillis,
    now: UnixMillis,
) -> Result<(Vec<Job>, Option<UnixMillis>), StoreError> {
    // Read in this transaction, so a pause committed before it always holds.
    let mut spec = spec.clone();
    spec.exclude(&tx.paused_queue_names()?);
    let Claimed { jobs, wake_at } = tx.claim_flow(&spec, Some(number), name, lease_until, now)?;
    let next_due = if jobs.len() < spec.limit {
        // A destination out of tokens has its next one at `wake_at`.
        let due = tx.next_due(now)?;
        due.into_iter().chain(wake_at).min()
    } else {
        None
    };
    Ok((jobs, next_due))
}
