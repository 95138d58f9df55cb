//! The dispatcher owns the daemon's one writer connection. Each turn takes every command
//! waiting on its channel (worker reports, enqueue requests, signals) and writes them in
//! one `BEGIN IMMEDIATE` transaction, together with a claim for every free slot,
//! heartbeats and the reaper's work: group commit, so throughput holds even with
//! `synchronous=FULL`.
//!
//! A turn ([`Dispatcher::run_once`]) is a sequence of named phases (see `turn.rs`), each
//! decided from the clock it is given: tests call them with a manual clock and a real
//! database instead of sleeping. [`Dispatcher::run`] is the thin loop around it: wait for
//! a command, the store's word of new work (a NOTIFY on PostgreSQL) or the next timer,
//! run a turn.
//!
//! - `turn.rs`: the turn and its phases (completions and enqueues, destination holds,
//!   heartbeat, rescue, purge, claim, next due), and what happens when the write fails
//! - `flight.rs`: the jobs handed to workers and not yet finished
//! - `claim.rs`: how many to claim (free slots and claim-ahead) and within which limits
//! - `timers.rs`: when each periodic phase is next due, and how long to wait
//! - `drain.rs`: stopping: the grace period, interrupting handlers, releasing the rest
//! - `outcome.rs`: a worker's report turned into one store transition, and its aftermath
//! - `service.rs`: reloads, start-up recovery, watchdog, STATUS= and metrics
//! - `syncer.rs`: at `synchronous=full`, the WAL's sync outside the commit, and the
//!   answers that wait for it

mod claim;
mod drain;
mod flight;
mod outcome;
mod service;
mod syncer;
mod timers;
mod turn;

#[cfg(test)]
mod tests;

use super::config_check::ConfigLoader;
use super::journal::StartJournal;
use super::workers::{Assignment, Report};
use super::{notify::Notifier, ClientError, JobHooks, ReplyTo, SharedConfig};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::flow::HoldRequest;
use crate::job::{NewJob, UnixMillis};
use crate::metrics::{DaemonSnapshot, Histogram};
use crate::store::{Store, StoreError};
use claim::ClaimState;
use crossbeam_channel::{Receiver, Sender};
use drain::Drain;
use flight::InFlightTable;
use std::sync::Arc;
use timers::Timers;
use turn::HeldOutcomes;

/// The most commands folded into one transaction.
const MAX_BATCH: usize = 4096;

/// How long the dispatcher polls for a socket client's next request after answering it:
/// about a socket round trip on the 2-core machines (62–106 µs), so a client that asks
/// again at once is caught awake, and an idle daemon spends at most this once.
const ASK_AGAIN_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

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
    dyn FnOnce(
            &dyn crate::store::StoreTx,
            UnixMillis,
        ) -> Box<dyn FnOnce(Result<(), ClientError>) + Send>
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

/// Counters for logs, STATUS= and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub succeeded: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Write transactions committed: jobs per commit is what group commit buys.
    pub commits: u64,
    /// Syncs of the WAL that made those commits durable, where the syncer does it
    /// (`synchronous=full`); 0 where each commit syncs itself.
    pub wal_syncs: u64,
}

/// What the dispatcher tells about itself: counters, handler times, its start.
struct Stats {
    counters: Counters,
    /// How long handlers ran, for the metrics textfile.
    handler_durations: Histogram,
    started_at: UnixMillis,
}

/// The configuration in force, and where a reload reads the next one from.
struct Settings {
    /// This turn's configuration (a reload replaces it between turns).
    config: Arc<Config>,
    /// Shared with the rest of the daemon, which reads the same one.
    shared: SharedConfig,
    /// Where a reload reads the configuration from, checked as at start.
    source: ConfigLoader,
    /// `--once`: process what is ready, then exit.
    once: bool,
}

/// Where the dispatcher's words go: workers, systemd, the metrics writer.
struct Outlets {
    work: Sender<Assignment>,
    notifier: Notifier,
    metrics: Sender<DaemonSnapshot>,
    /// The status thread, which counts the jobs for `STATUS=`; None when not under systemd.
    status: Option<Sender<Counters>>,
}

pub struct Dispatcher {
    db: Box<dyn Store>,
    settings: Settings,
    clock: SharedClock,
    hooks: Vec<Arc<dyn JobHooks>>,
    /// This daemon's name in `jobs.worker`: host and pid.
    name: String,
    commands: Receiver<Command>,
    /// The store's word that another process added work (PostgreSQL's NOTIFY): a claim
    /// at once instead of at the next poll. None where the store has no such word.
    wakes: Option<Receiver<()>>,
    outlets: Outlets,
    flights: InFlightTable,
    /// Where workers note each handler start; opened by [`Dispatcher::recover`].
    journal: Option<Arc<StartJournal>>,
    claims: ClaimState,
    held: HeldOutcomes,
    timers: Timers,
    draining: Option<Drain>,
    stats: Stats,
    /// Destination holds handlers asked for, written in the next commit (kept across a
    /// failed write, like the outcomes).
    pending_holds: Vec<HoldRequest>,
    /// The last turn answered a socket client on this thread: its next request is likely
    /// within a round trip ([`Dispatcher::next_command_soon`]).
    answered_directly: bool,
    /// At `synchronous=full`: what makes each commit durable before its answers go out.
    /// None where the commit itself waits for the disk (PostgreSQL, `normal`, `extra`).
    syncer: Option<syncer::Syncer>,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        db: Box<dyn Store>,
        shared_config: SharedConfig,
        config_source: ConfigLoader,
        clock: SharedClock,
        hooks: Vec<Arc<dyn JobHooks>>,
        commands: Receiver<Command>,
        work: Sender<Assignment>,
        once: bool,
        notifier: Notifier,
        metrics: Sender<DaemonSnapshot>,
        status: Option<Sender<Counters>>,
    ) -> Dispatcher {
        let config = shared_config.read().expect("config lock").clone();
        let timers = Timers::starting_at(clock.monotonic(), notifier.watchdog_interval());
        let started_at = clock.now_ms();
        let mut db = db;
        // Bounded(1): a wake-up already waiting covers the next ones.
        let (wake, wakes) = crossbeam_channel::bounded(1);
        let wakes = db
            .wake_on_new_work(Box::new(move |_queue| {
                let _ = wake.try_send(());
            }))
            .then_some(wakes);
        Dispatcher {
            db,
            settings: Settings {
                config,
                shared: shared_config,
                source: config_source,
                once,
            },
            clock,
            hooks,
            name: format!("{}:{}", hostname(), std::process::id()),
            commands,
            wakes,
            outlets: Outlets {
                work,
                notifier,
                metrics,
                status,
            },
            flights: InFlightTable::default(),
            journal: None,
            claims: ClaimState::starting_at(started_at),
            held: HeldOutcomes::default(),
            timers,
            draining: None,
            stats: Stats {
                counters: Counters::default(),
                handler_durations: Histogram::default(),
                started_at,
            },
            pending_holds: Vec::new(),
            answered_directly: false,
            syncer: None,
        }
    }

    /// From now on this dispatcher's commits are made durable by `wal`, outside the
    /// commit ([`syncer`]); the store's connection must have stopped syncing its own.
    pub(super) fn sync_commits_with(&mut self, wal: crate::store::WalSync) -> std::io::Result<()> {
        self.syncer = Some(syncer::Syncer::spawn(wal)?);
        Ok(())
    }

    /// What a commit lets the daemon say, said once the commit is durable: at once where
    /// the commit synced itself; else synced here when the syncer has nothing waiting
    /// and neither does the channel, or handed to the syncer so the next turn can go
    /// on while the disk works.
    fn after_commit(&mut self, after: syncer::AfterCommit) {
        let direct = after.answers_directly();
        match &self.syncer {
            None => {
                after.deliver();
                self.answered_directly = direct;
            }
            Some(syncer) if syncer.idle() && self.commands.is_empty() => {
                syncer.sync_here(after);
                self.answered_directly = direct;
            }
            Some(syncer) => {
                syncer.hand_over(after);
                // Its client hears after the sync: too late for the awake poll.
                self.answered_directly = false;
            }
        }
    }

    /// A sync that failed stops the daemon (see [`syncer`]).
    fn sync_failure(&self) -> Result<(), StoreError> {
        match self.syncer.as_ref().and_then(|s| s.failure()) {
            Some(why) => Err(StoreError::Io(why)),
            None => Ok(()),
        }
    }

    /// The last sync before the dispatcher returns: every answer handed over is out and
    /// every commit, a drain's releases included, is durable.
    fn finish_syncs(&mut self) -> Result<(), StoreError> {
        match self.syncer.as_mut() {
            Some(syncer) => syncer.finish().map_err(StoreError::Io),
            None => Ok(()),
        }
    }

    fn config(&self) -> &Arc<Config> {
        &self.settings.config
    }

    /// Runs until drained. Returns how it ended.
    pub fn run(mut self) -> Result<(Exit, Counters), StoreError> {
        self.claims.data_version = self.db.change_token()?;
        let commands = self.commands.clone();
        let mut wakes = self.wakes.take().unwrap_or_else(crossbeam_channel::never);
        loop {
            let wait = self.time_to_wait();
            let mut batch = Vec::new();
            if let Some(command) = self.next_command_soon() {
                batch.push(command);
            } else {
                crossbeam_channel::select! {
                    recv(commands) -> command => match command {
                        Ok(command) => batch.push(command),
                        Err(_) => {
                            // Nobody can talk to us any more: drain as if told to stop.
                            if self.draining.is_none() {
                                self.begin_drain();
                            }
                        }
                    },
                    recv(wakes) -> woken => match woken {
                        Ok(()) => self.claims.look_for_work = true,
                        // The store stopped hearing: polling alone from now on.
                        Err(_) => wakes = crossbeam_channel::never(),
                    },
                    default(wait) => {}
                }
            }
            while batch.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if let Some(exit) = self.run_once(batch)? {
                self.finish_syncs()?;
                return Ok((exit, self.stats.counters));
            }
            self.sync_failure()?;
        }
    }

    /// After a turn that answered a socket client, the next command if one comes within
    /// [`ASK_AGAIN_SPIN`], polled for awake with the CPU given away between polls. Such a
    /// client usually asks again within a round trip; catching its request awake spares
    /// the dispatcher's wake-up from sleep on every request, tens of microseconds on a
    /// small VM (one client at `normal`: docs/benchmarks.md, tenth session). Bounded,
    /// and only right after such an answer: an idle daemon does not spin.
    fn next_command_soon(&mut self) -> Option<Command> {
        // Once per answer: a turn that answers no one (a timer's) does not spin again.
        if !std::mem::take(&mut self.answered_directly) {
            return None;
        }
        let until = std::time::Instant::now() + ASK_AGAIN_SPIN;
        loop {
            if let Ok(command) = self.commands.try_recv() {
                return Some(command);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// In `--once` mode: done when nothing runs and a claim found nothing. Draining:
    /// done when nothing runs.
    fn finished(&self, found_nothing: bool) -> Option<Exit> {
        let idle = self.flights.is_empty() && self.held.is_empty();
        if self.settings.once && idle && (found_nothing || !self.claims.look_for_work) {
            return Some(Exit::Clean);
        }
        if self.draining.is_some() && idle {
            return Some(Exit::Clean);
        }
        None
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
