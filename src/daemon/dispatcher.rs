//! The dispatcher owns the daemon's one writer connection. Each turn of its loop takes
//! every command waiting on its channel (worker reports, enqueue requests, signals) and
//! writes them in one `BEGIN IMMEDIATE` transaction, together with a claim for every free
//! slot, heartbeats and the reaper's work: group commit, so throughput holds even with
//! `synchronous=FULL`.

use super::journal::{Start, StartJournal};
use super::workers::{Assignment, Report, Ticket};
use super::{notify::Notifier, Flush, JobHooks, ReplyTo, SharedConfig};
use crate::clock::{after, SharedClock};
use crate::config::{Config, ConfigSource};
use crate::handlers::StopReason;
use crate::job::{Completion, Job, JobId, JobState, NewJob, Outcome, Resolution, UnixMillis};
use crate::metrics::{DaemonSnapshot, Histogram};
use crate::retry::{FailedAttempt, RetryDecision};
use crate::store::{Applied, ClaimSpec, Enqueued, Finished, HeldClaim, Store, StoreError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most commands folded into one transaction.
const MAX_BATCH: usize = 4096;
/// How long a failed write waits before it is tried again (disk full, database busy).
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// Chunk size for retention deletes, so purging never holds the lock for long.
const PURGE_CHUNK: usize = 5000;
/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// How much work, in handler time, the dispatcher claims ahead of its workers. Enough
/// that short jobs flow in large group commits; little enough that slow jobs are not
/// hoarded as `running` while they wait.
const CLAIM_AHEAD_WINDOW: Duration = Duration::from_millis(100);
/// How long a handler runs before its start is written to its row. Shorter jobs finish
/// first and never cost the extra update; stats show a job as claimed for this long
/// (plus up to a `poll_interval`) after it started.
const START_RECORD_DELAY: Duration = Duration::from_millis(20);
/// While the database cannot be written, how often the error is repeated in the log.
const WRITE_ERROR_REPEAT: Duration = Duration::from_secs(60);
/// After the grace period, how long stopped handlers get to report before their jobs are
/// released regardless.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// What reaches the dispatcher.
pub enum Command {
    /// Enqueue jobs all or nothing; the reply comes after the commit.
    Enqueue { jobs: Vec<NewJob>, reply: ReplyTo },
    /// Runs a closure inside this turn's transaction, for a write that must be atomic
    /// with something outside the database (ingest renames a file into the spool between
    /// inserting its row and the commit). See [`TxTask`].
    Write(TxTask),
    /// A worker finished (or gave back) an attempt.
    Finished(Report),
    /// SIGTERM / SIGINT: drain. A second one forces the exit.
    Shutdown,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// Work run inside the dispatcher's transaction. It gets the transaction and `now`, must
/// leave the transaction usable whatever happens (use `dyn StoreTx::atomically`),
/// and returns what to do once the turn's commit is known: the callback gets `Ok(())` if
/// the commit held and the error if it did not. Runs on the dispatcher thread: keep it
/// quick (renames, not copies).
pub type TxTask = Box<
    dyn FnOnce(&dyn crate::store::StoreTx, UnixMillis) -> Box<dyn FnOnce(Result<(), String>) + Send>
        + Send,
>;

/// How the dispatcher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained within the grace period, or `--once` found nothing more to do.
    Clean,
    /// A second stop signal cut the drain short; unfinished jobs were put back.
    Forced,
}

struct InFlight {
    job: Arc<Job>,
    ticket: Arc<Ticket>,
    /// The version of the handler's progress last written to the database.
    progress_written: u64,
    /// The claim that holds it (see [`StartJournal`]).
    claim: i64,
    /// Whether its start is written to its row (for stats: running, not just claimed).
    start_recorded: bool,
    /// The turn that first saw its handler running.
    start_seen: Option<Instant>,
}

/// Counters for logs, STATUS= and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub succeeded: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Write transactions committed: jobs per commit is what group commit buys.
    pub commits: u64,
}

pub struct Dispatcher {
    db: Box<dyn Store>,
    config: Arc<Config>,
    shared_config: SharedConfig,
    config_source: ConfigSource,
    clock: SharedClock,
    hooks: Vec<Arc<dyn JobHooks>>,
    /// This daemon's name in `jobs.worker`: host and pid.
    name: String,
    commands: Receiver<Command>,
    work: Sender<Assignment>,
    in_flight: HashMap<JobId, InFlight>,
    queue_load: HashMap<String, usize>,
    /// Where workers note each handler start; opened by [`Dispatcher::recover`].
    journal: Option<Arc<StartJournal>>,
    /// The number of this daemon's last claim: each claim's rows carry it, and the start
    /// journal names it. It starts at the start time in ms × 1000, so numbers never
    /// repeat across restarts either (a restored backup's rows cannot match a newer
    /// journal by chance).
    claims: i64,
    /// Completions whose write failed; written again on the next turn.
    held: Vec<Report>,
    write_retry_at: Option<Instant>,
    /// The next time a waiting job becomes due, as far as we know.
    next_due: Option<UnixMillis>,
    /// Something may be ready that has not been claimed: look on the next turn.
    look_for_work: bool,
    data_version: i64,
    next_poll: Instant,
    next_heartbeat: Instant,
    next_reap: Instant,
    next_status: Instant,
    next_watchdog: Option<Instant>,
    draining: Option<Drain>,
    /// A moving average of how long handlers run, in microseconds; None until one ran.
    average_run_us: Option<f64>,
    once: bool,
    notifier: Notifier,
    pub counters: Counters,
    /// How long handlers ran, for the metrics textfile.
    handler_durations: Histogram,
    metrics: Sender<DaemonSnapshot>,
    next_metrics: Instant,
    started_at: UnixMillis,
    /// Since when writes fail, and when that was last logged at error level.
    write_failing: Option<(Instant, Instant)>,
}

struct Drain {
    grace_until: Instant,
    interrupted_until: Option<Instant>,
}

/// Sends an enqueue's answer; a direct answer's flush is noted once per run of answers
/// to the same asker, to be called when the turn's answers are all in.
fn answer(
    reply: ReplyTo,
    result: Result<Vec<Enqueued>, String>,
    flushes: &mut Vec<Arc<dyn Flush>>,
) {
    match reply {
        ReplyTo::Channel(reply) => {
            let _ = reply.send(result);
        }
        ReplyTo::Direct(reply) => {
            if let Some(flush) = reply.answer(result) {
                if !flushes.last().is_some_and(|last| Arc::ptr_eq(last, &flush)) {
                    flushes.push(flush);
                }
            }
        }
    }
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        db: Box<dyn Store>,
        shared_config: SharedConfig,
        config_source: ConfigSource,
        clock: SharedClock,
        hooks: Vec<Arc<dyn JobHooks>>,
        commands: Receiver<Command>,
        work: Sender<Assignment>,
        once: bool,
        notifier: Notifier,
        metrics: Sender<DaemonSnapshot>,
    ) -> Dispatcher {
        let config = shared_config.read().expect("config lock").clone();
        let now = Instant::now();
        let next_watchdog = notifier.watchdog_interval().map(|_| now);
        let started_at = clock.now_ms();
        Dispatcher {
            db,
            config,
            shared_config,
            config_source,
            clock,
            hooks,
            name: format!("{}:{}", hostname(), std::process::id()),
            commands,
            work,
            in_flight: HashMap::new(),
            queue_load: HashMap::new(),
            journal: None,
            claims: started_at.saturating_mul(1000),
            held: Vec::new(),
            write_retry_at: None,
            next_due: None,
            look_for_work: true,
            data_version: 0,
            next_poll: now,
            next_heartbeat: now,
            next_reap: now,
            next_status: now,
            next_watchdog,
            draining: None,
            average_run_us: None,
            once,
            notifier,
            counters: Counters::default(),
            handler_durations: Histogram::default(),
            metrics,
            next_metrics: now,
            started_at,
            write_failing: None,
        }
    }

    /// Runs until drained. Returns how it ended.
    pub fn run(mut self) -> Result<(Exit, Counters), StoreError> {
        self.data_version = self.db.change_token()?;
        loop {
            let wait = self.time_to_wait();
            let mut batch = Vec::new();
            match self.commands.recv_timeout(wait) {
                Ok(command) => batch.push(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Nobody can talk to us any more: drain as if told to stop.
                    if self.draining.is_none() {
                        self.begin_drain();
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if let Some(exit) = self.turn(batch)? {
                return Ok((exit, self.counters));
            }
        }
    }

    /// One turn: everything waiting, in one transaction. Returns an exit when done.
    fn turn(&mut self, batch: Vec<Command>) -> Result<Option<Exit>, StoreError> {
        let mut reports = std::mem::take(&mut self.held);
        let mut enqueues = Vec::new();
        let mut tasks = Vec::new();
        for command in batch {
            match command {
                Command::Finished(report) => {
                    if report.started {
                        self.observe_run(report.ran_for);
                    }
                    reports.push(report)
                }
                Command::Write(task) => tasks.push(task),
                Command::Enqueue { jobs, reply } => enqueues.push((jobs, reply)),
                Command::Reload => self.reload(),
                Command::Shutdown => {
                    if self.draining.is_some() {
                        tracing::warn!(
                            "second stop signal: putting unfinished jobs back and exiting now"
                        );
                        self.release_all()?;
                        return Ok(Some(Exit::Forced));
                    }
                    self.begin_drain();
                }
            }
        }
        let instant = Instant::now();
        if let Some(retry_at) = self.write_retry_at {
            if instant < retry_at && enqueues.is_empty() && tasks.is_empty() {
                self.held = reports;
                // Watchdog pings go on while writes wait: a full disk is not a hang, and
                // a restart would lose the outcomes held in memory.
                self.housekeeping(instant);
                return Ok(None);
            }
        }
        if let Some(exit) = self.advance_drain(instant)? {
            return Ok(Some(exit));
        }
        let now = self.clock.now_ms();
        if instant >= self.next_poll {
            self.next_poll = instant + self.config.daemon.poll_interval;
            let version = self.db.change_token()?;
            if version != self.data_version {
                self.data_version = version;
                self.look_for_work = true;
                // Another process wrote: perhaps an operator cancelled a running job.
                self.pass_on_cancel_requests()?;
            }
        }
        if self.next_due.is_some_and(|due| due <= now) {
            self.next_due = None;
            self.look_for_work = true;
        }
        let heartbeat_due = instant >= self.next_heartbeat;
        let reap_due = instant >= self.next_reap;
        let free = self.free_slots(reports.len());
        let new_work = !enqueues.is_empty() || !tasks.is_empty();
        // Jobs enqueued for later cannot be claimed now: they need no claim, only a
        // `next_due` early enough (a claim in the same turn reads it back anyway).
        let later = |job: &NewJob| job.run_at.filter(|at| *at > now);
        let ready_work = !tasks.is_empty()
            || enqueues
                .iter()
                .any(|(jobs, _)| jobs.iter().any(|job| later(job).is_none()));
        let first_later = enqueues
            .iter()
            .flat_map(|(jobs, _)| jobs.iter().filter_map(later))
            .min();
        let claim = free > 0 && (self.look_for_work || !reports.is_empty() || ready_work);
        let starts = self.starts_to_record(&reports, instant);
        let quiet = reports.is_empty()
            && !new_work
            && !claim
            && !heartbeat_due
            && !reap_due
            && starts.is_empty();
        if quiet {
            self.housekeeping(instant);
            return Ok(self.finished_once(false));
        }

        let lease_until = after(now, self.config.daemon.lease);
        let resolved: Vec<(Completion, Option<StopReason>)> = reports
            .iter()
            .filter_map(|r| self.resolve(r, now))
            .collect();
        let spec = self.claim_spec(free, &reports);
        let starts_us: HashMap<JobId, i64> = reports
            .iter()
            .filter_map(|r| Some((r.job_id, r.started_us?)))
            .collect();
        let heartbeat: Vec<(JobId, u32)> = if heartbeat_due {
            self.live_leases(now)
        } else {
            Vec::new()
        };
        let progress = self.progress_to_write(heartbeat_due, &reports);
        let policy_config = self.config.clone();
        let max_attempts_of = move |kind: &str| policy_config.policy_for(kind).max_attempts;
        let retention_cutoff = now - self.config.daemon.retention.as_millis() as i64;
        let name = self.name.clone();
        let mut after_tasks = Vec::with_capacity(tasks.len());
        let claim_number = self.claims + 1;
        if claim {
            self.claims = claim_number;
        }
        let in_flight = &self.in_flight;
        // A lease that ran out on a job of ours that never started (the dispatcher could
        // not write for a while): it is taken back uncharged, and its worker will not
        // start it. One that started is charged. A row not in flight is charged too:
        // nothing says it did not start.
        let started = |held: &HeldClaim| {
            in_flight
                .get(&held.id)
                .is_none_or(|flight| !flight.ticket.withdraw())
        };
        let write = self.db.write(|tx| {
            let finished: Vec<Finished<'_>> = resolved
                .iter()
                .map(|(completion, _)| Finished {
                    completion,
                    started_us: starts_us.get(&completion.job_id).copied(),
                })
                .collect();
            let applied = tx.complete_many(&finished, now)?;
            let enqueued: Vec<Result<Vec<Enqueued>, String>> = enqueues
                .iter()
                .map(|(jobs, _)| tx.enqueue(jobs, now).map_err(|e| e.to_string()))
                .collect();
            after_tasks.extend(tasks.drain(..).map(|task| task(tx, now)));
            let mut rescued = Vec::new();
            tx.record_starts(&starts, &name)?;
            if heartbeat_due {
                tx.extend_leases(&heartbeat, &name, lease_until, now)?;
            }
            if !progress.is_empty() {
                let rows: Vec<(JobId, u32, serde_json::Value)> = progress
                    .iter()
                    .map(|(id, attempt, _, value)| (*id, *attempt, value.clone()))
                    .collect();
                tx.record_progress(&rows, now)?;
            }
            if reap_due {
                rescued = tx.rescue_expired(now, false, &max_attempts_of, &started)?;
                // Once across daemons sharing a database: the leader purges.
                if super::cluster::is_leader() {
                    tx.purge_finished(JobState::Succeeded, retention_cutoff, PURGE_CHUNK)?;
                }
            }
            let claimed = if claim {
                // Read in this transaction, so a pause committed before it always holds.
                let mut spec = spec.clone();
                spec.exclude(&tx.paused_queue_names()?);
                tx.claim_numbered(&spec, Some(claim_number), &name, lease_until, now)?
            } else {
                Vec::new()
            };
            let next_due = if claimed.len() < spec.limit {
                tx.next_due(now)?
            } else {
                None
            };
            Ok((applied, enqueued, rescued, claimed, next_due))
        });
        match write {
            Err(e) => {
                // Once at error level, then once a minute: a disk that stays full for an
                // hour must not write 3600 lines to the journal it shares the disk with.
                match &mut self.write_failing {
                    None => {
                        tracing::error!("cannot write to the queue database: {e}; holding {} outcome(s) in memory and trying again every {}s", reports.len(), WRITE_RETRY.as_secs());
                        self.write_failing = Some((instant, instant));
                    }
                    Some((since, logged))
                        if instant.duration_since(*logged) >= WRITE_ERROR_REPEAT =>
                    {
                        tracing::error!("still cannot write to the queue database after {}s: {e}; holding {} outcome(s) in memory", since.elapsed().as_secs(), reports.len());
                        *logged = instant;
                    }
                    Some(_) => tracing::debug!("cannot write to the queue database: {e}"),
                }
                let mut flushes = Vec::new();
                for (_, reply) in enqueues {
                    answer(reply, Err(format!("not enqueued: {e}")), &mut flushes);
                }
                flushes.iter().for_each(|f| f.flush());
                // Tasks that ran inside the rolled-back transaction hear so here; tasks
                // that never ran (the error came first) get the same answer when dropped.
                for done in after_tasks {
                    done(Err(format!("not written: {e}")));
                }
                self.held = reports;
                self.write_retry_at = Some(instant + WRITE_RETRY);
                self.housekeeping(instant);
                Ok(None)
            }
            Ok((applied, enqueued, rescued, claimed, next_due)) => {
                self.counters.commits += 1;
                if self.write_retry_at.take().is_some() {
                    let since = self.write_failing.take().map(|(since, _)| since.elapsed());
                    tracing::info!(
                        "the queue database is writable again after {}s; held outcomes written",
                        since.unwrap_or_default().as_secs()
                    );
                }
                for (id, _, version, _) in &progress {
                    if let Some(flight) = self.in_flight.get_mut(id) {
                        flight.progress_written = *version;
                    }
                }
                for ((completion, _), applied) in resolved.iter().zip(&applied) {
                    self.finish(completion, applied);
                }
                let mut flushes = Vec::new();
                for ((_, reply), result) in enqueues.into_iter().zip(enqueued) {
                    answer(reply, result, &mut flushes);
                }
                flushes.iter().for_each(|f| f.flush());
                for done in after_tasks {
                    done(Ok(()));
                }
                for (id, _, _) in &starts {
                    if let Some(flight) = self.in_flight.get_mut(id) {
                        flight.start_recorded = true;
                    }
                }
                for (id, state) in rescued {
                    if state == JobState::Queued {
                        tracing::warn!(job = id, "job {id}'s lease ran out before its handler started; it is queued again, attempt not charged");
                        self.forget(id);
                    } else if self.in_flight.contains_key(&id) {
                        tracing::warn!(job = id, "job {id} outran its timeout and lease; it is {state} now and its worker is abandoned");
                        self.forget(id);
                    } else {
                        tracing::warn!(job = id, "job {id}'s lease expired; it is {state} now");
                    }
                }
                if heartbeat_due {
                    self.next_heartbeat = instant + self.config.daemon.lease / 3;
                }
                if reap_due {
                    self.next_reap = instant + self.config.daemon.reap_interval;
                }
                let found_nothing = claim && claimed.is_empty();
                if !claim {
                    self.next_due = self.next_due.into_iter().chain(first_later).min();
                }
                if claim {
                    // Fewer than asked means the ready rows ran out; wait for news.
                    self.look_for_work = claimed.len() == spec.limit;
                    self.next_due = next_due.filter(|due| *due > now);
                }
                for job in claimed {
                    self.dispatch(job, claim_number);
                }
                self.rotate_journal();
                self.housekeeping(instant);
                Ok(self.finished_once(found_nothing))
            }
        }
    }

    /// In `--once` mode: done when nothing runs and a claim found nothing.
    fn finished_once(&self, found_nothing: bool) -> Option<Exit> {
        let idle = self.in_flight.is_empty() && self.held.is_empty();
        if self.once && idle && (found_nothing || !self.look_for_work) {
            return Some(Exit::Clean);
        }
        if self.draining.is_some() && idle {
            return Some(Exit::Clean);
        }
        None
    }

    fn free_slots(&self, finishing: usize) -> usize {
        if self.draining.is_some() {
            return 0;
        }
        let capacity = self.config.daemon.workers + self.claim_ahead();
        capacity.saturating_sub(self.in_flight.len().saturating_sub(finishing))
    }

    /// Jobs to hold beyond one per worker: about [`CLAIM_AHEAD_WINDOW`] of work at the
    /// running average, never more than `daemon.prefetch`, and one per worker until the
    /// first jobs have shown how long they take.
    fn claim_ahead(&self) -> usize {
        let workers = self.config.daemon.workers;
        let limit = self.config.daemon.prefetch;
        match self.average_run_us {
            None => workers.min(limit),
            Some(us) => {
                let window = CLAIM_AHEAD_WINDOW.as_micros() as f64 * workers as f64;
                ((window / us.max(1.0)) as usize).min(limit)
            }
        }
    }

    fn observe_run(&mut self, ran_for: Duration) {
        self.handler_durations.observe(ran_for);
        let sample = ran_for.as_micros() as f64;
        self.average_run_us = Some(match self.average_run_us {
            None => sample,
            Some(average) => average * 0.9 + sample * 0.1,
        });
    }

    /// What to claim: `free` jobs, within each limited queue's room. Jobs finishing in
    /// this very transaction no longer count against their queue, or a queue at its limit
    /// would find no room the moment its job ends and then wait for unrelated news.
    fn claim_spec(&self, free: usize, finishing: &[Report]) -> ClaimSpec {
        let limited_queues = self
            .config
            .queues
            .iter()
            .map(|(name, q)| {
                let load = self.queue_load.get(name).copied().unwrap_or(0);
                let leaving = finishing
                    .iter()
                    .filter(|r| {
                        self.in_flight
                            .get(&r.job_id)
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
        }
    }

    /// Progress to write in this turn: with the heartbeat, every running attempt's that
    /// changed since it was last written; and the last word of each attempt ending now.
    fn progress_to_write(
        &self,
        heartbeat_due: bool,
        finishing: &[Report],
    ) -> Vec<(JobId, u32, u64, serde_json::Value)> {
        let ending = |id: &JobId| finishing.iter().any(|r| r.job_id == *id && r.started);
        self.in_flight
            .iter()
            .filter(|(id, _)| heartbeat_due || ending(id))
            .filter_map(|(id, f)| {
                let (version, value) = f.ticket.progress.changed_since(f.progress_written)?;
                Some((*id, f.job.attempts, version, value))
            })
            .collect()
    }

    /// Tells the handlers of running jobs an operator cancelled to stop.
    fn pass_on_cancel_requests(&self) -> Result<(), StoreError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        for id in self.db.cancel_requests()? {
            if let Some(flight) = self.in_flight.get(&id) {
                flight.ticket.stop.raise(StopReason::Cancelled);
            }
        }
        Ok(())
    }

    /// Leases to extend: every job in flight except one that has outrun its timeout by
    /// more than a lease, whose worker is presumed hung; letting its lease lapse hands the
    /// job to the reaper.
    fn live_leases(&self, now: UnixMillis) -> Vec<(JobId, u32)> {
        let lease = self.config.daemon.lease.as_millis() as i64;
        self.in_flight
            .values()
            .filter(|f| {
                let started = f.ticket.started_at.load(Ordering::SeqCst);
                let timeout = self.config.timeout_for(&f.job.kind).as_millis() as i64;
                started == 0 || now <= started + timeout + lease
            })
            .map(|f| (f.job.id, f.job.attempts))
            .collect()
    }

    /// Turns a worker's report into the one store transition it calls for.
    fn resolve(
        &self,
        report: &Report,
        now: UnixMillis,
    ) -> Option<(Completion, Option<StopReason>)> {
        // A report from a claim taken back since (a later claim of the job may be in
        // flight now) changes nothing.
        let flight = self
            .in_flight
            .get(&report.job_id)
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
        Some((
            Completion {
                job_id: job.id,
                parent_id: job.parent_id,
                attempt: job.attempts,
                worker: self.name.clone(),
                started_at: report.started_at,
                finished_at: report.finished_at,
                resolution,
                detail,
            },
            stop,
        ))
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
        let policy = self.config.policy_for(&job.kind);
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
            .flat_map(|hook| hook.on_dead(job, &error, first_attempt_at, &self.config))
            .collect();
        Resolution::Dead { error, follow_ups }
    }

    fn finish(&mut self, completion: &Completion, applied: &Applied) {
        let Some(flight) = self.forget(completion.job_id) else {
            return;
        };
        let job = &flight.job;
        match applied {
            Applied::Stale => tracing::warn!(
                job = job.id,
                "job {} attempt {} finished after it was taken back; its outcome is dropped",
                job.id,
                job.attempts
            ),
            Applied::Moved(JobState::Succeeded) => {
                self.counters.succeeded += 1;
                tracing::debug!(job = job.id, kind = %job.kind, "succeeded");
            }
            Applied::Moved(JobState::Retrying) => {
                self.counters.retried += 1;
                if let Resolution::RetryAt { run_at, error } = &completion.resolution {
                    tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempts,
                        "attempt failed, retrying at {}: {error}", crate::clock::format_millis(*run_at));
                    self.next_due = Some(self.next_due.map_or(*run_at, |d| d.min(*run_at)));
                }
            }
            Applied::Moved(JobState::Dead) => {
                self.counters.dead += 1;
                if let Resolution::Dead { error, .. } = &completion.resolution {
                    tracing::error!(job = job.id, kind = %job.kind, queue = %job.queue, attempts = job.attempts,
                        "job {} is dead: {error}", job.id);
                }
            }
            Applied::Moved(JobState::Cancelled) => {
                self.counters.cancelled += 1;
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
                hook.after_commit(job, *state, error, &self.config);
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
            self.look_for_work = true;
        }
    }

    fn forget(&mut self, id: JobId) -> Option<InFlight> {
        let flight = self.in_flight.remove(&id)?;
        if let Some(load) = self.queue_load.get_mut(&flight.job.queue) {
            *load = load.saturating_sub(1);
        }
        Some(flight)
    }

    /// Starts to write to their rows: handlers running for [`START_RECORD_DELAY`] whose
    /// start is not written yet, except of jobs finishing in this turn.
    fn starts_to_record(
        &mut self,
        finishing: &[Report],
        instant: Instant,
    ) -> Vec<(JobId, u32, UnixMillis)> {
        let mut starts = Vec::new();
        for f in self.in_flight.values_mut().filter(|f| !f.start_recorded) {
            let Some(started_at) = f.ticket.started() else {
                continue;
            };
            match f.start_seen {
                None => f.start_seen = Some(instant),
                Some(seen) if instant.duration_since(seen) >= START_RECORD_DELAY => {
                    starts.push((f.job.id, f.job.attempts, started_at));
                }
                Some(_) => {}
            }
        }
        if !starts.is_empty() && !finishing.is_empty() {
            let finishing: std::collections::HashSet<JobId> =
                finishing.iter().map(|r| r.job_id).collect();
            starts.retain(|(id, _, _)| !finishing.contains(id));
        }
        starts
    }

    /// Keeps the start journal small: past its limit it is rewritten with the starts of
    /// the jobs still in flight.
    fn rotate_journal(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        if !journal.needs_rotation() {
            return;
        }
        let live = || {
            self.in_flight
                .values()
                .filter(|f| f.ticket.started().is_some())
                .map(|f| Start {
                    job: f.job.id,
                    attempt: f.job.attempts,
                    claim: f.claim,
                })
                .collect()
        };
        if let Err(e) = journal.rotate(live) {
            tracing::warn!("cannot rotate the start journal: {e}; it keeps growing");
        }
    }

    fn dispatch(&mut self, job: Job, claim: i64) {
        let job = Arc::new(job);
        let ticket = Arc::new(Ticket::default());
        *self.queue_load.entry(job.queue.clone()).or_default() += 1;
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
            config: self.config.clone(),
            children,
        };
        self.in_flight.insert(
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
        if self.work.send(assignment).is_err() {
            tracing::error!("no workers are left to run jobs");
        }
    }

    fn begin_drain(&mut self) {
        let grace = self.config.daemon.shutdown_grace;
        tracing::info!(
            "stopping: no new claims; {} job(s) in flight have {} to finish",
            self.in_flight.len(),
            humantime::format_duration(grace)
        );
        self.notifier.stopping();
        for flight in self.in_flight.values() {
            flight.ticket.stop.raise(StopReason::Draining);
        }
        self.draining = Some(Drain {
            grace_until: Instant::now() + grace,
            interrupted_until: None,
        });
    }

    /// Past the grace period, running handlers are told to stop; shortly after, whatever
    /// has not reported is put back uncharged.
    fn advance_drain(&mut self, instant: Instant) -> Result<Option<Exit>, StoreError> {
        let Some(drain) = &mut self.draining else {
            return Ok(None);
        };
        if instant < drain.grace_until {
            return Ok(None);
        }
        match drain.interrupted_until {
            None => {
                tracing::warn!(
                    "grace period over: stopping {} job(s) still running; they go back to the queue uncharged",
                    self.in_flight.len()
                );
                for flight in self.in_flight.values() {
                    flight.ticket.stop.raise(StopReason::Interrupted);
                }
                drain.interrupted_until = Some(instant + INTERRUPT_GRACE);
                Ok(None)
            }
            Some(until) if instant >= until => {
                self.release_all()?;
                Ok(Some(Exit::Clean))
            }
            Some(_) => Ok(None),
        }
    }

    /// Puts every job still in flight back in the queue, uncharged.
    fn release_all(&mut self) -> Result<(), StoreError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let completions: Vec<Completion> = self
            .in_flight
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
        self.in_flight.clear();
        self.queue_load.clear();
        Ok(())
    }

    fn reload(&mut self) {
        self.notifier.reloading();
        // load_for_daemon: a reload that names an unreadable secret is refused too.
        match Config::load_for_daemon(&self.config_source) {
            Ok(new) => {
                if new.daemon.workers != self.config.daemon.workers
                    || new.daemon.database != self.config.daemon.database
                {
                    tracing::warn!(
                        "reload: daemon.workers and daemon.database take effect at the next start"
                    );
                }
                let new = Arc::new(new);
                *self.shared_config.write().expect("config lock") = new.clone();
                self.config = new;
                self.look_for_work = true;
                tracing::info!(
                    "reloaded the configuration from {}",
                    self.config_source.describe()
                );
            }
            Err(e) => tracing::error!("reload refused, the old configuration keeps running: {e}"),
        }
        self.notifier.ready("reloaded");
    }

    /// Watchdog pings and STATUS= lines: sent from this loop, so a hung dispatcher
    /// stops them and systemd restarts it.
    fn housekeeping(&mut self, instant: Instant) {
        self.publish_metrics(instant);
        if let (Some(next), Some(interval)) =
            (self.next_watchdog, self.notifier.watchdog_interval())
        {
            if instant >= next {
                self.notifier.watchdog();
                self.next_watchdog = Some(instant + interval);
            }
        }
        if self.notifier.enabled() && instant >= self.next_status {
            self.next_status = instant + STATUS_INTERVAL;
            let live = self.db.live_counts().unwrap_or_default();
            self.notifier.status(&format!(
                "ready {}, running {}; since start: {} succeeded, {} retried, {} dead",
                live.get("ready").unwrap_or(&0),
                live.get("running").unwrap_or(&0),
                self.counters.succeeded,
                self.counters.retried,
                self.counters.dead
            ));
        }
    }

    /// Hands the metrics writer thread a snapshot every `metrics.interval`, if a textfile
    /// is configured. Never blocks: a writer still busy with the last one skips this one.
    fn publish_metrics(&mut self, instant: Instant) {
        let Some(textfile) = &self.config.metrics.textfile else {
            return;
        };
        if instant < self.next_metrics {
            return;
        }
        self.next_metrics = instant + self.config.metrics.interval;
        let _ = self.metrics.try_send(DaemonSnapshot {
            textfile: textfile.clone(),
            counters: self.counters,
            handler_durations: self.handler_durations.clone(),
            held_outcomes: self.held.len(),
            started_at: self.started_at,
            now: self.clock.now_ms(),
        });
    }

    fn time_to_wait(&self) -> Duration {
        let instant = Instant::now();
        let now = self.clock.now_ms();
        let mut wait = Duration::from_secs(1);
        let mut until = |at: Instant| wait = wait.min(at.saturating_duration_since(instant));
        if !self.held.is_empty() {
            until(self.write_retry_at.unwrap_or(instant));
        }
        if self.free_slots(0) > 0 {
            if self.look_for_work {
                until(instant);
            }
            until(self.next_poll);
            if let Some(due) = self.next_due {
                until(instant + Duration::from_millis(due.saturating_sub(now).max(0) as u64));
            }
        }
        if !self.in_flight.is_empty() {
            until(self.next_heartbeat);
            // Cancel requests arrive as writes by another process.
            until(self.next_poll);
        }
        until(self.next_reap);
        if self.config.metrics.textfile.is_some() {
            until(self.next_metrics);
        }
        if let Some(next) = self.next_watchdog {
            until(next);
        }
        if let Some(drain) = &self.draining {
            until(drain.interrupted_until.unwrap_or(drain.grace_until));
        }
        wait
    }

    /// Run once before the loop: every job left running by an earlier process goes back
    /// to the queue at once. One whose handler had started (its row or the earlier
    /// daemon's start journal says so) is charged the attempt; one only claimed ahead
    /// is not. Then the journal starts empty; returns it, for the workers.
    pub fn recover(&mut self) -> Result<Arc<StartJournal>, StoreError> {
        let now = self.clock.now_ms();
        let config = self.config.clone();
        let path = StartJournal::path_for(self.db.path());
        let io =
            |e: std::io::Error| StoreError::Io(format!("start journal {}: {e}", path.display()));
        let journaled = StartJournal::read(&path).map_err(io)?;
        let started = |held: &HeldClaim| match held.claim {
            // Claimed by a jobd that kept no journal: it may have started.
            None => true,
            Some(claim) => {
                held.started_at.is_some()
                    || journaled.contains(&Start {
                        job: held.id,
                        attempt: held.attempt,
                        claim,
                    })
            }
        };
        let rescued = self.db.write(|tx| {
            tx.rescue_expired(
                now,
                true,
                &|kind: &str| config.policy_for(kind).max_attempts,
                &started,
            )
        })?;
        if !rescued.is_empty() {
            let uncharged = rescued
                .iter()
                .filter(|(_, state)| *state == JobState::Queued)
                .count();
            tracing::warn!(
                "recovered {} job(s) left running by an earlier process: {} had started (attempt charged), {uncharged} were only claimed (queued again, not charged)",
                rescued.len(),
                rescued.len() - uncharged
            );
        }
        let journal = Arc::new(StartJournal::create(&path).map_err(io)?);
        self.journal = Some(journal.clone());
        Ok(journal)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
