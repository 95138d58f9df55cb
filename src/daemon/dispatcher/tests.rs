//! Unit tests of the dispatcher's phases and its workers: a real SQLite file in a temp
//! dir, a clock whose wall time and timers move only by hand, and no worker threads (the
//! test plays the workers, or runs one assignment on its own thread). Nothing sleeps.

use super::{Command, Dispatcher, Exit};
use crate::clock::{Clock, ManualClock, SharedClock};
use crate::config::{Config, ConfigSource};
use crate::daemon::config_check::ConfigLoader;
use crate::daemon::journal::StartJournal;
use crate::daemon::notify::Notifier;
use crate::daemon::workers::{self, Assignment, Report};
use crate::daemon::{ClientError, ReplyTo, SharedConfig};
use crate::flow::HoldRequest;
use crate::handlers::{Handler, JobContext, Registry, StopReason, SyncStateView};
use crate::job::{Job, JobId, JobState, NewJob, Outcome, UnixMillis};
use crate::store::{ClaimSpec, OpenOptions, Store};
use crossbeam_channel::Receiver;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const T0: UnixMillis = 1_800_000_000_000;

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    dispatcher: Dispatcher,
    /// What the dispatcher hands to workers.
    work: Receiver<Assignment>,
    journal: Arc<StartJournal>,
    /// A second connection, to look at rows as jobctl would.
    db: Box<dyn Store>,
}

fn harness(daemon: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("jobs.db");
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\ndata_dir = \"{}\"\n{daemon}\n[socket]\nenabled = false\n",
        database.display(),
        dir.path().join("data").display(),
    );
    let config = Config::from_toml(&text, "test").unwrap();
    let options = OpenOptions {
        create: true,
        migrate: true,
        // A write that finds the database locked fails at once (see the held-outcome
        // test), instead of SQLite's busy handler waiting for it.
        busy_timeout: Duration::from_millis(1),
        ..OpenOptions::default()
    };
    let writer = crate::store::open(&database, &options).unwrap();
    let clock = Arc::new(ManualClock::with_manual_timers(T0));
    let shared: SharedConfig = Arc::new(RwLock::new(Arc::new(config)));
    let (_commands_tx, commands) = crossbeam_channel::unbounded();
    let (work_tx, work) = crossbeam_channel::unbounded();
    let (metrics, _) = crossbeam_channel::bounded(1);
    let mut dispatcher = Dispatcher::new(
        writer,
        shared,
        ConfigLoader::new(ConfigSource::Defaults, Arc::new(Registry::builtin())),
        clock.clone(),
        Vec::new(),
        commands,
        work_tx,
        false,
        Notifier::default(),
        metrics,
        None,
    );
    let journal = dispatcher.recover().unwrap();
    let db = crate::store::open(&database, &OpenOptions::default()).unwrap();
    Harness {
        dir,
        clock,
        dispatcher,
        work,
        journal,
        db,
    }
}

impl Harness {
    fn turn(&mut self, commands: Vec<Command>) -> Option<Exit> {
        self.dispatcher.run_once(commands).unwrap()
    }

    fn enqueue(&mut self, jobs: Vec<NewJob>) -> Vec<JobId> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let exit = self.turn(vec![Command::Enqueue {
            jobs,
            reply: ReplyTo::Channel(reply),
        }]);
        assert_eq!(exit, None);
        let enqueued = answer
            .try_recv()
            .expect("answered in the same turn")
            .unwrap();
        enqueued.iter().map(|e| e.id).collect()
    }

    fn assignments(&self) -> Vec<Assignment> {
        self.work.try_iter().collect()
    }

    fn job(&self, id: JobId) -> Job {
        self.db.get(id).unwrap()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Rows in state running: started, or only claimed.
    fn running(&self) -> u64 {
        let now = self.clock.now_ms();
        let stats = self.db.stats(now).unwrap();
        stats
            .queues
            .values()
            .map(|q| q.states.get("running").copied().unwrap_or(0) + q.claimed)
            .sum()
    }
}

/// What a worker does first: takes the job, unless it was taken back.
fn start(assignment: &Assignment, at: UnixMillis) {
    assignment
        .ticket
        .started_at
        .compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst)
        .expect("not withdrawn");
}

fn succeeded(assignment: &Assignment, at: UnixMillis, ran_for: Duration) -> Command {
    Command::Finished(Report {
        job_id: assignment.job.id,
        claim: assignment.claim,
        outcome: Outcome::success(),
        started: true,
        started_at: at,
        started_us: Some(at * 1000),
        finished_at: at,
        ran_for,
    })
}

fn noops(n: usize) -> Vec<NewJob> {
    vec![NewJob::new("noop", json!({})); n]
}

#[test]
fn a_turn_claims_one_per_worker_plus_claim_ahead_and_never_more() {
    let mut h = harness("workers = 2\nprefetch = 1");
    h.enqueue(noops(10));
    // Until a job has shown how long jobs take, one ahead per worker, within prefetch.
    let first = h.assignments();
    assert_eq!(first.len(), 3, "2 workers + min(2, prefetch 1) ahead");
    assert_eq!(h.running(), 3);
    assert_eq!(h.dispatcher.free_slots(0), 0);
    // Nothing finished: a turn claims nothing more, however often it runs.
    h.advance(Duration::from_secs(1));
    h.turn(vec![]);
    assert!(h.assignments().is_empty());
    assert_eq!(h.running(), 3);
    // One finishes: exactly its slot is claimed again.
    start(&first[0], h.clock.now_ms());
    let at = h.clock.now_ms();
    h.turn(vec![succeeded(&first[0], at, Duration::from_millis(1))]);
    assert_eq!(h.job(first[0].job.id).state, JobState::Succeeded);
    assert_eq!(h.assignments().len(), 1);
    assert_eq!(h.running(), 3);
    assert_eq!(h.dispatcher.flights.len(), 3);
}

#[test]
fn claim_ahead_follows_the_average_run_time_within_prefetch() {
    let mut h = harness("workers = 1\nprefetch = 8");
    let config = h.dispatcher.config().clone();
    assert_eq!(
        h.dispatcher.claims.ahead(&config),
        1,
        "one per worker at first"
    );
    h.enqueue(noops(20));
    let first = h.assignments();
    assert_eq!(first.len(), 2);
    // A 20 ms job: 100 ms of work ahead is 5 jobs.
    start(&first[0], T0);
    h.turn(vec![succeeded(&first[0], T0, Duration::from_millis(20))]);
    assert_eq!(h.dispatcher.claims.ahead(&config), 5);
    assert_eq!(
        h.assignments().len(),
        5,
        "1 worker + 5 ahead, 1 still in flight"
    );
    assert_eq!(h.dispatcher.flights.len(), 6);
    // Very short jobs: as many ahead as prefetch allows, not more.
    h.dispatcher.claims.average_run_us = Some(1.0);
    assert_eq!(h.dispatcher.claims.ahead(&config), 8);
    h.turn(vec![]);
    assert_eq!(h.dispatcher.flights.len(), 9);
    assert_eq!(h.running(), 9);
}

#[test]
fn a_queue_limit_caps_the_claim_and_a_finishing_job_frees_its_room_in_the_same_turn() {
    let mut h = harness("workers = 4\n[queues.slow]\nconcurrency = 1");
    assert_eq!(
        h.dispatcher.claim_spec(6, &[]).limited_queues,
        [("slow".to_string(), 1)]
    );
    let ids = h.enqueue(vec![NewJob::new("noop", json!({})).queue("slow"); 2]);
    let first = h.assignments();
    assert_eq!(first.len(), 1, "one at a time in queue slow");
    assert_eq!(
        h.dispatcher.claim_spec(6, &[]).limited_queues,
        [("slow".to_string(), 0)]
    );
    start(&first[0], T0);
    h.turn(vec![succeeded(&first[0], T0, Duration::from_millis(1))]);
    let next = h.assignments();
    assert_eq!(
        next.len(),
        1,
        "its room is claimed in the turn that ends it"
    );
    assert_eq!(next[0].job.id, ids[1]);
}

#[test]
fn the_heartbeat_extends_leases_only_when_due() {
    // The heartbeat runs every lease / 3 = 10 s.
    let mut h = harness("workers = 1\nlease = \"30s\"\nreap_interval = \"1h\"");
    let id = h.enqueue(noops(1))[0];
    assert_eq!(h.job(id).lease_until, Some(T0 + 30_000));
    let assignment = h.assignments().remove(0);
    start(&assignment, T0);
    h.advance(Duration::from_millis(9_999));
    assert!(!h.dispatcher.heartbeat_due(h.clock.monotonic()));
    h.turn(vec![]);
    assert_eq!(h.job(id).lease_until, Some(T0 + 30_000), "not due yet");
    h.advance(Duration::from_millis(1));
    assert!(h.dispatcher.heartbeat_due(h.clock.monotonic()));
    h.turn(vec![]);
    assert_eq!(h.job(id).lease_until, Some(T0 + 10_000 + 30_000));
    // The next one is due a third of a lease later, not at once.
    h.advance(Duration::from_secs(5));
    h.turn(vec![]);
    assert_eq!(h.job(id).lease_until, Some(T0 + 10_000 + 30_000));
}

#[test]
fn the_reaper_rescues_a_lease_only_after_it_expired_by_the_clock() {
    let mut h = harness("workers = 1\nlease = \"30s\"\nreap_interval = \"1s\"");
    let id = h.enqueue(vec![NewJob::new("noop", json!({})).run_at(T0 + 60_000)])[0];
    // Another daemon claimed it and died: its lease runs until T0 + 70 s.
    let mut other =
        crate::store::open(&h.dir.path().join("jobs.db"), &OpenOptions::default()).unwrap();
    let claimed = other
        .write(|tx| {
            tx.claim(
                &ClaimSpec {
                    limit: 1,
                    ..ClaimSpec::default()
                },
                "other-host:1",
                T0 + 70_000,
                T0 + 60_000,
            )
        })
        .unwrap();
    assert_eq!(claimed.len(), 1);
    h.advance(Duration::from_secs(69));
    h.turn(vec![]);
    assert_eq!(h.job(id).state, JobState::Running, "lease not expired yet");
    h.advance(Duration::from_millis(1_001));
    h.turn(vec![]);
    let job = h.job(id);
    // Not ours, so nothing says it did not start: the attempt is charged.
    assert_eq!(job.state, JobState::Retrying);
    assert_eq!(job.attempts, 1);
    assert!(
        h.assignments().is_empty(),
        "the rescued job waits out its backoff"
    );
}

#[test]
fn the_purge_deletes_succeeded_jobs_past_retention_on_the_reapers_turns() {
    let mut h = harness("workers = 1\nretention = \"1h\"\nreap_interval = \"1m\"");
    let id = h.enqueue(noops(1))[0];
    let assignment = h.assignments().remove(0);
    start(&assignment, T0);
    h.turn(vec![succeeded(&assignment, T0, Duration::from_millis(1))]);
    assert_eq!(h.job(id).state, JobState::Succeeded);
    h.advance(Duration::from_secs(59 * 60));
    h.turn(vec![]);
    assert!(h.db.get(id).is_ok(), "kept for its retention");
    h.advance(Duration::from_secs(2 * 60));
    h.turn(vec![]);
    assert!(h.db.get(id).is_err(), "purged once past it");
}

#[test]
fn the_reaper_waits_for_its_interval() {
    let mut h = harness("workers = 1\nlease = \"30s\"\nreap_interval = \"1m\"");
    h.turn(vec![]);
    let at = h.clock.monotonic();
    assert!(!h.dispatcher.reap_due(at));
    h.advance(Duration::from_secs(59));
    assert!(!h.dispatcher.reap_due(h.clock.monotonic()));
    h.advance(Duration::from_secs(1));
    assert!(h.dispatcher.reap_due(h.clock.monotonic()));
}

#[test]
fn a_lease_that_runs_out_before_the_handler_starts_is_taken_back_uncharged() {
    // The heartbeat is every 1 h here, so the lease of a job in flight runs out.
    let mut h = harness("workers = 1\nlease = \"3h\"\nreap_interval = \"1s\"");
    let ids = h.enqueue(noops(2));
    let assignments = h.assignments();
    assert_eq!(assignments.len(), 2);
    start(&assignments[0], T0);
    // Everything stalls past the lease: the heartbeat was due, but the clock jumped.
    h.dispatcher.timers.heartbeat = h.clock.monotonic() + Duration::from_secs(24 * 3600);
    h.advance(Duration::from_secs(3 * 3600 + 1));
    h.turn(vec![]);
    // The started one is charged; the one claimed ahead is withdrawn and queued again.
    assert_eq!(h.job(ids[0]).state, JobState::Retrying);
    assert_eq!(h.job(ids[0]).attempts, 1);
    assert_eq!(h.job(ids[1]).state, JobState::Queued);
    assert_eq!(h.job(ids[1]).attempts, 0);
    assert_eq!(
        assignments[1].ticket.started_at.load(Ordering::SeqCst),
        workers::Ticket::WITHDRAWN,
        "its worker will not start it"
    );
    assert!(
        h.db.attempts(ids[1]).unwrap().is_empty(),
        "no attempt charged"
    );
}

#[test]
fn a_job_claimed_ahead_and_stopped_at_shutdown_goes_back_uncharged() {
    let mut h = harness("workers = 1");
    let ids = h.enqueue(noops(2));
    let mut assignments = h.assignments();
    assert_eq!(assignments.len(), 2, "one for the worker, one ahead");
    start(&assignments[0], T0);
    assert_eq!(h.turn(vec![Command::Shutdown]), None);
    assert_eq!(h.dispatcher.free_slots(0), 0, "no claims while draining");
    // The job waiting for the worker is stopped before its handler starts: the real
    // worker code says so without running it.
    let ahead = assignments.pop().unwrap();
    assert_eq!(ahead.ticket.stop.reason(), Some(StopReason::Draining));
    let registry = Registry::builtin();
    let clock: SharedClock = h.clock.clone();
    let sync_state: Arc<dyn SyncStateView> = Arc::new(crate::store::SyncStateReader::new(
        &h.dir.path().join("jobs.db"),
    ));
    let report = workers::run_one(
        ahead,
        &registry,
        &clock,
        h.dir.path(),
        &sync_state,
        &h.journal,
    );
    assert!(!report.started);
    assert_eq!(h.turn(vec![Command::Finished(report)]), None);
    let released = h.job(ids[1]);
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(released.attempts, 0, "the attempt is given back");
    assert!(h.db.attempts(ids[1]).unwrap().is_empty());
    // The running one finishes within the grace period: the drain is done.
    let exit = h.turn(vec![succeeded(
        &assignments[0],
        T0,
        Duration::from_millis(5),
    )]);
    assert_eq!(exit, Some(Exit::Clean));
    assert_eq!(h.job(ids[0]).state, JobState::Succeeded);
}

#[test]
fn the_drain_deadline_is_kept_by_the_clock() {
    let mut h = harness(
        "workers = 1\nshutdown_grace = \"10s\"\npoll_interval = \"10s\"\nreap_interval = \"1h\"",
    );
    let id = h.enqueue(noops(1))[0];
    let assignment = h.assignments().remove(0);
    start(&assignment, T0);
    h.turn(vec![Command::Shutdown]);
    h.advance(Duration::from_millis(9_500));
    assert_eq!(h.dispatcher.time_to_wait(), Duration::from_millis(500));
    h.advance(Duration::from_millis(499));
    assert_eq!(h.turn(vec![]), None);
    assert_eq!(assignment.ticket.stop.reason(), Some(StopReason::Draining));
    h.advance(Duration::from_millis(1));
    assert_eq!(h.turn(vec![]), None);
    assert_eq!(
        assignment.ticket.stop.reason(),
        Some(StopReason::Interrupted),
        "grace over: told to stop"
    );
    // It does not report: INTERRUPT_GRACE later it is put back regardless.
    h.advance(super::drain::INTERRUPT_GRACE - Duration::from_millis(1));
    assert_eq!(h.turn(vec![]), None);
    assert_eq!(h.job(id).state, JobState::Running);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.turn(vec![]), Some(Exit::Clean));
    let job = h.job(id);
    assert_eq!(job.state, JobState::Queued, "put back, uncharged");
    let attempts = h.db.attempts(id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "interrupted");
}

#[test]
fn a_second_stop_signal_releases_everything_at_once() {
    let mut h = harness("workers = 1");
    let ids = h.enqueue(noops(2));
    let assignments = h.assignments();
    start(&assignments[0], T0);
    h.turn(vec![Command::Shutdown]);
    assert_eq!(h.turn(vec![Command::Shutdown]), Some(Exit::Forced));
    for id in ids {
        assert_eq!(h.job(id).state, JobState::Queued);
    }
    // The one claimed ahead never started: no attempt, and none counted.
    assert!(h.db.attempts(assignments[1].job.id).unwrap().is_empty());
    assert_eq!(h.job(assignments[1].job.id).attempts, 0);
}

#[test]
fn the_wait_for_the_next_due_job_is_computed_from_the_clock() {
    let mut h = harness("workers = 1\npoll_interval = \"10s\"\nreap_interval = \"1h\"");
    h.enqueue(vec![NewJob::new("noop", json!({})).run_at(T0 + 300)]);
    assert!(h.assignments().is_empty(), "not due yet");
    assert_eq!(h.dispatcher.time_to_wait(), Duration::from_millis(300));
    h.advance(Duration::from_millis(100));
    assert_eq!(h.dispatcher.time_to_wait(), Duration::from_millis(200));
    h.advance(Duration::from_millis(200));
    assert_eq!(h.dispatcher.time_to_wait(), Duration::ZERO);
    h.turn(vec![]);
    assert_eq!(h.assignments().len(), 1);
}

#[test]
fn with_nothing_due_the_loop_waits_for_the_poll_or_its_longest_wait() {
    let mut h = harness("workers = 1\npoll_interval = \"200ms\"\nreap_interval = \"1h\"");
    h.turn(vec![]);
    assert_eq!(h.dispatcher.time_to_wait(), Duration::from_millis(200));
    let mut h = harness("workers = 1\npoll_interval = \"10s\"\nreap_interval = \"1h\"");
    h.turn(vec![]);
    assert_eq!(h.dispatcher.time_to_wait(), super::timers::MAX_WAIT);
}

#[test]
fn a_failed_write_holds_the_outcomes_and_tries_again_after_write_retry_by_the_clock() {
    let mut h = harness("workers = 1\npoll_interval = \"10s\"\nreap_interval = \"1h\"");
    let id = h.enqueue(noops(1))[0];
    let assignment = h.assignments().remove(0);
    start(&assignment, T0);
    let (reply, answer) = crossbeam_channel::bounded(1);
    let mut other =
        crate::store::open(&h.dir.path().join("jobs.db"), &OpenOptions::default()).unwrap();
    other
        .write(|_| {
            // Another writer holds the database: this turn's write fails.
            let commands = vec![
                succeeded(&assignment, T0, Duration::from_millis(1)),
                Command::Enqueue {
                    jobs: noops(1),
                    reply: ReplyTo::Channel(reply),
                },
            ];
            assert_eq!(h.turn(commands), None);
            Ok(())
        })
        .unwrap();
    assert!(
        matches!(answer.try_recv(), Ok(Err(ClientError::NotEnqueued(_)))),
        "the enqueuer hears at once that nothing was enqueued"
    );
    assert_eq!(h.dispatcher.held.len(), 1, "the outcome is held in memory");
    assert_eq!(h.job(id).state, JobState::Running);
    h.advance(Duration::from_millis(400));
    assert_eq!(
        h.dispatcher.time_to_wait(),
        super::turn::WRITE_RETRY - Duration::from_millis(400)
    );
    h.advance(super::turn::WRITE_RETRY - Duration::from_millis(401));
    h.turn(vec![]);
    assert_eq!(h.job(id).state, JobState::Running, "still waiting to retry");
    h.advance(Duration::from_millis(1));
    h.turn(vec![]);
    assert_eq!(h.job(id).state, JobState::Succeeded, "written on the retry");
    assert!(h.dispatcher.held.is_empty());
}

#[test]
fn a_retry_is_claimed_again_when_its_backoff_is_over() {
    let mut h = harness(
        "workers = 1\npoll_interval = \"10s\"\nreap_interval = \"1h\"\n\
         [retry]\nbase = \"2s\"\njitter = 0.0\nmax_attempts = 5",
    );
    let id = h.enqueue(noops(1))[0];
    let assignment = h.assignments().remove(0);
    start(&assignment, T0);
    h.turn(vec![Command::Finished(Report {
        job_id: id,
        claim: assignment.claim,
        outcome: Outcome::retry("try later"),
        started: true,
        started_at: T0,
        started_us: None,
        finished_at: T0,
        ran_for: Duration::from_millis(1),
    })]);
    let job = h.job(id);
    assert_eq!(job.state, JobState::Retrying);
    let wait = Duration::from_millis((job.run_at - T0) as u64);
    assert_eq!(
        h.dispatcher.time_to_wait(),
        wait.min(super::timers::MAX_WAIT)
    );
    h.advance(wait - Duration::from_millis(1));
    h.turn(vec![]);
    assert!(h.assignments().is_empty());
    h.advance(Duration::from_millis(1));
    h.turn(vec![]);
    assert_eq!(h.assignments().len(), 1, "claimed again once due");
}

/// A handler that takes `runs_for` on the test's clock.
struct Takes {
    clock: Arc<ManualClock>,
    runs_for: Duration,
}

impl Handler for Takes {
    fn run(&self, _job: &Job, _ctx: &JobContext) -> Outcome {
        self.clock.advance(self.runs_for);
        Outcome::success()
    }
}

#[test]
fn a_worker_measures_the_run_on_the_clock_and_never_starts_a_withdrawn_job() {
    let mut h = harness("workers = 1");
    let mut registry = Registry::builtin();
    registry.register(
        "takes",
        Arc::new(Takes {
            clock: h.clock.clone(),
            runs_for: Duration::from_secs(3),
        }),
    );
    h.enqueue(vec![NewJob::new("takes", json!({})); 2]);
    let mut assignments = h.assignments();
    let clock: SharedClock = h.clock.clone();
    let sync_state: Arc<dyn SyncStateView> = Arc::new(crate::store::SyncStateReader::new(
        &h.dir.path().join("jobs.db"),
    ));
    let withdrawn = assignments.pop().unwrap();
    assert!(withdrawn.ticket.withdraw());
    let run = |a: Assignment| {
        workers::run_one(a, &registry, &clock, h.dir.path(), &sync_state, &h.journal)
    };
    let report = run(withdrawn);
    assert!(!report.started);
    assert!(matches!(report.outcome, Outcome::Interrupted { .. }));
    let report = run(assignments.pop().unwrap());
    assert!(report.started);
    assert!(matches!(report.outcome, Outcome::Success { .. }));
    assert_eq!(report.ran_for, Duration::from_secs(3));
    assert_eq!(report.finished_at - report.started_at, 3_000);
    // Its start is in the journal before its handler ran.
    let journaled =
        StartJournal::read(&StartJournal::path_for(&h.dir.path().join("jobs.db"))).unwrap();
    assert_eq!(journaled.len(), 1);
}

/// A job bound for `destination`, as its kind's route would set it.
fn bound_for(destination: &str) -> NewJob {
    let mut job = NewJob::new("noop", json!({}));
    job.destination = Some(destination.into());
    job
}

#[test]
fn a_hold_a_running_handler_asks_for_is_written_next_turn_and_its_destination_waits_it_out() {
    let mut h = harness("workers = 1\npoll_interval = \"10s\"\nreap_interval = \"1h\"");
    h.enqueue(vec![bound_for("api")]);
    let running = h.assignments().remove(0);
    start(&running, T0);
    // The handler, still running, got a 429 with Retry-After: 30.
    running.ticket.holds.push(HoldRequest::new(
        "api",
        "",
        Duration::from_secs(30),
        T0,
        Some(429),
        "answered 429, Retry-After 30s".into(),
    ));
    assert_eq!(h.db.destination_hold("api", "").unwrap(), None);
    // Nothing else to write in this turn: the hold alone makes it write.
    h.turn(vec![]);
    let hold = h.db.destination_hold("api", "").unwrap().expect("written");
    assert_eq!((hold.until, hold.status), (T0 + 30_000, Some(429)));
    // Its next job is not claimed while the hold stands, though a worker is free.
    h.turn(vec![succeeded(&running, T0, Duration::from_millis(1))]);
    let waiting = h.enqueue(vec![bound_for("api")])[0];
    let other = h.enqueue(vec![bound_for("elsewhere")])[0];
    let others = h.assignments();
    let claimed: Vec<JobId> = others.iter().map(|a| a.job.id).collect();
    assert_eq!(claimed, vec![other], "another destination is not held back");
    start(&others[0], T0);
    h.turn(vec![succeeded(&others[0], T0, Duration::from_millis(1))]);
    assert_eq!(h.job(waiting).state, JobState::Queued);
    assert_eq!(
        h.job(waiting).attempts,
        0,
        "waiting behind a hold costs nothing"
    );
    h.advance(Duration::from_millis(29_999));
    h.turn(vec![]);
    assert!(h.assignments().is_empty(), "held until T0 + 30 s");
    h.advance(Duration::from_millis(1));
    h.turn(vec![]);
    let claimed: Vec<JobId> = h.assignments().iter().map(|a| a.job.id).collect();
    assert_eq!(
        claimed,
        vec![waiting],
        "claimed once the clock passes the hold"
    );
}

#[test]
fn the_enqueues_of_one_turn_keep_their_order_and_a_refused_one_is_refused_alone() {
    let mut h = harness("");
    let noop = || NewJob::new("noop", json!({})).run_at(T0 + 60_000);
    let requests: Vec<Vec<NewJob>> = vec![
        // Small requests side by side: one group, all taken.
        vec![noop()],
        vec![noop().unique_key("k")],
        vec![noop(), noop()],
        vec![noop().unique_key("k")],
        // A large one goes alone, between two groups.
        vec![noop(); 40],
        // Small again, with two the store refuses: a parent that does not exist (the
        // database's foreign key, after rows of the group went in) and a bad queue name.
        vec![noop()],
        vec![NewJob {
            parent_id: Some(999_999),
            ..noop()
        }],
        vec![noop().unique_key("k")],
        vec![noop().queue("bad queue")],
        vec![noop()],
    ];
    let mut answers = Vec::new();
    let commands = requests
        .iter()
        .map(|jobs| {
            let (reply, answer) = crossbeam_channel::bounded(1);
            answers.push(answer);
            Command::Enqueue {
                jobs: jobs.clone(),
                reply: ReplyTo::Channel(reply),
            }
        })
        .collect();
    assert_eq!(h.turn(commands), None);
    let replies: Vec<_> = answers.iter().map(|a| a.try_recv().unwrap()).collect();

    for (i, reply) in replies.iter().enumerate() {
        match i {
            6 => assert!(
                matches!(reply, Err(ClientError::Refused(e)) if e.contains("FOREIGN KEY")),
                "{reply:?}"
            ),
            8 => assert!(
                matches!(reply, Err(ClientError::Refused(e)) if e.contains("queue")),
                "{reply:?}"
            ),
            _ => assert_eq!(reply.as_ref().unwrap().len(), requests[i].len(), "{i}"),
        }
    }
    let ok = |i: usize| replies[i].as_ref().unwrap();
    // The unique key: the first holder's id, in the group and after it.
    let holder = ok(1)[0];
    assert!(!holder.duplicate);
    for i in [3, 7] {
        assert_eq!(ok(i)[0].id, holder.id, "{i}");
        assert!(ok(i)[0].duplicate, "{i}");
    }
    // New ids rise in the order the requests came, across groups and the large one.
    let new_ids: Vec<JobId> = [0, 1, 2, 4, 5, 9]
        .iter()
        .flat_map(|&i| ok(i).iter().map(|e| e.id))
        .collect();
    assert!(new_ids.windows(2).all(|w| w[0] < w[1]), "{new_ids:?}");
    for &id in &new_ids {
        assert_eq!(h.job(id).state, JobState::Queued);
    }
    // Nothing of the refused ones stayed: every row is one of those answered.
    let stats = h.db.stats(T0).unwrap();
    let rows: u64 = stats.queues.values().flat_map(|q| q.states.values()).sum();
    assert_eq!(rows, new_ids.len() as u64);
}

/// A socket client's answer slot, as the enqueue socket's: filled on the dispatcher
/// thread, with a flush to call once the turn's answers are in.
struct SocketClient {
    answered: Arc<std::sync::Mutex<Option<crate::daemon::EnqueueReply>>>,
    flushed: Arc<std::sync::atomic::AtomicBool>,
}

struct Flushed(Arc<std::sync::atomic::AtomicBool>);

impl crate::daemon::Flush for Flushed {
    fn flush(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl crate::daemon::DirectReply for SocketClient {
    fn answer(
        self: Box<Self>,
        reply: crate::daemon::EnqueueReply,
    ) -> Option<Arc<dyn crate::daemon::Flush>> {
        *self.answered.lock().unwrap() = Some(reply);
        Some(Arc::new(Flushed(self.flushed.clone())))
    }
}

#[test]
fn the_dispatcher_looks_for_the_next_request_awake_only_once_after_answering_a_socket_client() {
    let mut h = harness("");
    let (commands_tx, commands) = crossbeam_channel::unbounded();
    h.dispatcher.commands = commands;
    let noop = || vec![NewJob::new("noop", json!({}))];

    // Answered over a channel (jobctl, ingest): no socket client waits on this thread.
    h.enqueue(noop());
    commands_tx.send(Command::Reload).unwrap();
    assert!(
        h.dispatcher.next_command_soon().is_none(),
        "looked for a request awake after answering no socket client"
    );
    assert!(matches!(
        h.dispatcher.commands.try_recv(),
        Ok(Command::Reload)
    ));

    let answered = Arc::new(std::sync::Mutex::new(None));
    let flushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = SocketClient {
        answered: answered.clone(),
        flushed: flushed.clone(),
    };
    h.turn(vec![Command::Enqueue {
        jobs: noop(),
        reply: ReplyTo::Direct(Box::new(client)),
    }]);
    assert!(matches!(*answered.lock().unwrap(), Some(Ok(ref ids)) if ids.len() == 1));
    assert!(flushed.load(Ordering::SeqCst), "the answer was not flushed");
    // The client's next request, already on its way, is taken without sleeping.
    commands_tx.send(Command::Reload).unwrap();
    assert!(matches!(
        h.dispatcher.next_command_soon(),
        Some(Command::Reload)
    ));
    // Once per answer: the next wait sleeps.
    commands_tx.send(Command::Reload).unwrap();
    assert!(h.dispatcher.next_command_soon().is_none());
}

#[test]
fn with_the_syncer_an_enqueue_is_answered_after_its_sync_and_a_failed_sync_stops_the_dispatcher() {
    let mut h = harness("");
    let wal = h
        .dispatcher
        .db
        .sqlite()
        .unwrap()
        .sync_commits_elsewhere()
        .unwrap();
    h.dispatcher.sync_commits_with(wal).unwrap();
    // Nothing else waits: the dispatcher syncs the commit itself, in the same turn.
    let ids = h.enqueue(vec![NewJob::new("noop", json!({}))]);
    assert_eq!(h.job(ids[0]).id, ids[0]);
    let syncer = h.dispatcher.syncer.as_ref().unwrap();
    assert_eq!(syncer.syncs(), 1, "the answer came after one sync");
    assert!(h.dispatcher.sync_failure().is_ok());

    // fdatasync(2) of a pipe fails with EINVAL: a disk that cannot sync.
    let (reader, _writer) = std::io::pipe().unwrap();
    let failing = crate::store::WalSync::on_file(
        &h.dir.path().join("jobs.db-wal"),
        std::fs::File::from(std::os::fd::OwnedFd::from(reader)),
    );
    h.dispatcher.sync_commits_with(failing).unwrap();
    let (reply, answer) = crossbeam_channel::bounded(1);
    h.turn(vec![Command::Enqueue {
        jobs: vec![NewJob::new("noop", json!({}))],
        reply: ReplyTo::Channel(reply),
    }]);
    let said = answer.try_recv().unwrap().unwrap_err().to_string();
    assert!(
        said.contains("fdatasync of") && said.contains("may or may not have been kept"),
        "{said}"
    );
    let stop = h.dispatcher.sync_failure().unwrap_err().to_string();
    assert!(stop.contains("cannot make the commit durable"), "{stop}");
}
