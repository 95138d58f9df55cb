//! The pipeline scheduler: enqueues one run of each scheduled pipeline per period, with a
//! unique key naming the period, and never while a run of that pipeline is still live.
//! Periods missed while no scheduler ran (a daemon down, a dead leader's lease running
//! out) are made up, oldest first, back to [`catch_up_window`] and at most
//! [`MAX_CATCH_UP_PERIODS`]; the last period run is read back from its run's unique key.
//! The schedule math is pure functions of `now`; the thread only ticks [`Scheduler::run_once`].

use super::DaemonClient;
use crate::clock::{format_millis, SharedClock};
use crate::config::schedule::{parse_cron, CronError};
use crate::config::{Config, PipelineSchedule};
use crate::job::{NewJob, UnixMillis};
use crate::store::Store;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How soon a pipeline whose period came while a run was live is looked at again.
const BLOCKED_RECHECK: Duration = Duration::from_secs(5);
/// The longest the thread sleeps between looks (config reloads are seen this fast).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How soon a pipeline with missed periods still to make up is looked at again.
const CATCH_UP_RECHECK: Duration = Duration::from_millis(200);
/// How much further back than a failover's own length missed periods are made up: the
/// reaper's interval, the next election (a third of a lease) and a loaded machine being
/// late on each.
pub const CATCH_UP_MARGIN: Duration = Duration::from_secs(15);
/// The most periods made up at once, whatever the window: a one-second schedule under a
/// long lease must not fire a flood.
pub const MAX_CATCH_UP_PERIODS: u32 = 100;

/// Why a schedule has no period for a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    NotCron(#[from] CronError),
    #[error("time {0} is out of range")]
    OutOfRange(UnixMillis),
    /// The expression parses but has no occurrence on the side of `now` asked for.
    #[error("cron '{text}': {reason}")]
    NoOccurrence { text: String, reason: String },
}

fn utc(at: UnixMillis) -> Result<chrono::DateTime<chrono::Utc>, ScheduleError> {
    chrono::DateTime::from_timestamp_millis(at).ok_or(ScheduleError::OutOfRange(at))
}

fn no_occurrence(text: &str) -> impl FnOnce(croner::errors::CronError) -> ScheduleError + '_ {
    move |e| ScheduleError::NoOccurrence {
        text: text.to_string(),
        reason: e.to_string(),
    }
}

/// The start of the period `now` falls in: the latest boundary at or before `now`.
/// `every` periods are aligned to the Unix epoch (`1h` starts on the hour, UTC).
pub fn period_start(
    schedule: &PipelineSchedule,
    now: UnixMillis,
) -> Result<UnixMillis, ScheduleError> {
    match schedule {
        PipelineSchedule::Every(every) => {
            let ms = (every.as_millis() as i64).max(1);
            Ok(now - now.rem_euclid(ms))
        }
        PipelineSchedule::Cron(text) => {
            let cron = parse_cron(text)?;
            cron.find_previous_occurrence(&utc(now)?, true)
                .map(|t| t.timestamp_millis())
                .map_err(no_occurrence(text))
        }
    }
}

/// When the next period after the one `now` falls in starts.
pub fn next_boundary(
    schedule: &PipelineSchedule,
    now: UnixMillis,
) -> Result<UnixMillis, ScheduleError> {
    match schedule {
        PipelineSchedule::Every(every) => {
            Ok(period_start(schedule, now)? + (every.as_millis() as i64).max(1))
        }
        PipelineSchedule::Cron(text) => {
            let cron = parse_cron(text)?;
            cron.find_next_occurrence(&utc(now)?, false)
                .map(|t| t.timestamp_millis())
                .map_err(no_occurrence(text))
        }
    }
}

/// How far back missed periods are made up: the leader's lease (how long a dead leader
/// leaves the schedules alone), plus the job lease (a run the dead leader's node was
/// running is live until the reaper takes it back, and the next period waits for it),
/// plus [`CATCH_UP_MARGIN`]: 90 s by default. The same on SQLite, where it covers a
/// quick restart.
pub fn catch_up_window(config: &Config) -> Duration {
    config.daemon.leader_lease + config.daemon.lease + CATCH_UP_MARGIN
}

/// The earliest period still run at `now`: the first that started within `window`
/// before `now`, but at most [`MAX_CATCH_UP_PERIODS`] periods back, and at the latest
/// the current one (which always runs).
pub fn earliest_due(
    schedule: &PipelineSchedule,
    window: Duration,
    now: UnixMillis,
) -> Result<UnixMillis, ScheduleError> {
    let current = period_start(schedule, now)?;
    let horizon = now - window.as_millis() as i64;
    match schedule {
        PipelineSchedule::Every(every) => {
            let ms = (every.as_millis() as i64).max(1);
            let first_in_window = horizon + (ms - horizon.rem_euclid(ms)) % ms;
            let cap = current - i64::from(MAX_CATCH_UP_PERIODS - 1) * ms;
            Ok(first_in_window.max(cap).min(current))
        }
        PipelineSchedule::Cron(text) => {
            let cron = parse_cron(text)?;
            let mut earliest = current;
            for _ in 1..MAX_CATCH_UP_PERIODS {
                let Ok(before) = cron.find_previous_occurrence(&utc(earliest - 1)?, true) else {
                    break;
                };
                let before = before.timestamp_millis();
                if before < horizon {
                    break;
                }
                earliest = before;
            }
            Ok(earliest)
        }
    }
}

/// The period to enqueue at `now`, given `last` (the period last run, if any): the
/// oldest period after `last` that is not older than [`earliest_due`], up to the current
/// one; none if `last` is the current period. A pipeline never run starts with the
/// current period.
pub fn due_period(
    schedule: &PipelineSchedule,
    last: Option<UnixMillis>,
    window: Duration,
    now: UnixMillis,
) -> Result<Option<UnixMillis>, ScheduleError> {
    let current = period_start(schedule, now)?;
    let Some(last) = last else {
        return Ok(Some(current));
    };
    if last >= current {
        return Ok(None);
    }
    let next = next_boundary(schedule, last)?.max(earliest_due(schedule, window, now)?);
    Ok((next <= current).then_some(next))
}

/// The unique key of a pipeline's scheduled run for a period.
pub fn run_key(kind: &str, pipeline: &str, period: UnixMillis) -> String {
    format!(
        "{}{}",
        run_key_prefix(kind, pipeline),
        format_millis(period)
    )
}

/// What every scheduled run's key of a pipeline starts with.
fn run_key_prefix(kind: &str, pipeline: &str) -> String {
    format!("{kind}:{pipeline}:")
}

/// The period a run's unique key names, if it is a scheduled run's key of `prefix`.
fn period_of_key(prefix: &str, key: &str) -> Option<UnixMillis> {
    let text = key.strip_prefix(prefix)?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// What one look at a pipeline did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// A run for the period was enqueued (job id).
    Enqueued {
        pipeline: String,
        period: UnixMillis,
        id: i64,
    },
    /// The period's run exists already (enqueued before a restart).
    AlreadyThere {
        pipeline: String,
        period: UnixMillis,
    },
    /// A run is still live: the period waits for it.
    Blocked {
        pipeline: String,
        period: UnixMillis,
        live: u64,
    },
    Failed {
        pipeline: String,
        error: String,
    },
    /// The daemon is stopping: the scheduler stops too.
    Stopping,
}

/// Enqueues scheduled runs through the daemon and asks a read connection whether runs
/// are live.
pub struct Scheduler {
    client: DaemonClient,
    db: Box<dyn Store>,
    /// The period last enqueued (or found) per pipeline: read from the database at the
    /// pipeline's first look, forgotten when this daemon stops leading.
    done: HashMap<String, UnixMillis>,
    blocked: bool,
    /// A pipeline has missed periods left to make up after this look.
    behind: bool,
}

impl Scheduler {
    pub fn new(client: DaemonClient, db: Box<dyn Store>) -> Scheduler {
        Scheduler {
            client,
            db,
            done: HashMap::new(),
            blocked: false,
            behind: false,
        }
    }

    /// Forgets the periods it ran: another daemon leads now, and when this one leads
    /// again it reads them back from the database.
    pub fn forget(&mut self) {
        self.done.clear();
    }

    /// The period last run of a pipeline: this scheduler's, or the latest scheduled
    /// run's row in the database (run by this daemon before a restart, or by another
    /// leader).
    fn last_period(&mut self, kind: &str, name: &str) -> crate::store::Result<Option<UnixMillis>> {
        if let Some(period) = self.done.get(name) {
            return Ok(Some(*period));
        }
        let prefix = run_key_prefix(kind, name);
        let recorded = self
            .db
            .greatest_unique_key(&prefix)?
            .and_then(|key| period_of_key(&prefix, &key));
        if let Some(period) = recorded {
            self.done.insert(name.to_string(), period);
        }
        Ok(recorded)
    }

    /// Looks at every scheduled pipeline once.
    pub fn run_once(&mut self, config: &Config, now: UnixMillis) -> Vec<Tick> {
        let mut ticks = Vec::new();
        self.blocked = false;
        self.behind = false;
        let window = catch_up_window(config);
        for (name, pipeline) in &config.pipelines {
            let Some(schedule) = pipeline.schedule() else {
                continue;
            };
            let kind = pipeline.job_kind();
            let due = match self.last_period(kind, name) {
                Ok(last) => due_period(&schedule, last, window, now)
                    .and_then(|due| Ok((due, period_start(&schedule, now)?)))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let (period, current) = match due {
                Ok((Some(period), current)) => (period, current),
                Ok((None, _)) => continue,
                Err(error) => {
                    ticks.push(Tick::Failed {
                        pipeline: name.clone(),
                        error,
                    });
                    continue;
                }
            };
            let live = match self.db.live_pipeline_jobs(kind, name) {
                Ok(live) => live,
                Err(e) => {
                    ticks.push(Tick::Failed {
                        pipeline: name.clone(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if live > 0 {
                self.blocked = true;
                self.behind |= period < current;
                ticks.push(Tick::Blocked {
                    pipeline: name.clone(),
                    period,
                    live,
                });
                continue;
            }
            let job = NewJob::new(kind, json!({"pipeline": name}))
                .queue(pipeline.queue())
                .unique_key(run_key(kind, name, period))
                .source(format!("schedule:{name}"));
            match self.client.enqueue(vec![job]) {
                Ok(enqueued) => {
                    self.done.insert(name.clone(), period);
                    self.behind |= period < current;
                    let first = enqueued[0];
                    ticks.push(if first.duplicate {
                        Tick::AlreadyThere {
                            pipeline: name.clone(),
                            period,
                        }
                    } else {
                        Tick::Enqueued {
                            pipeline: name.clone(),
                            period,
                            id: first.id,
                        }
                    });
                }
                Err(error) if error.is_stopping() => {
                    ticks.push(Tick::Stopping);
                    return ticks;
                }
                Err(error) => ticks.push(Tick::Failed {
                    pipeline: name.clone(),
                    error: error.to_string(),
                }),
            }
        }
        ticks
    }

    /// How long to sleep after a look at `now`.
    fn sleep_after(&self, config: &Config, now: UnixMillis) -> Duration {
        let mut wait = MAX_SLEEP;
        if self.blocked {
            wait = wait.min(BLOCKED_RECHECK);
        }
        if self.behind {
            wait = wait.min(CATCH_UP_RECHECK);
        }
        for pipeline in config.pipelines.values() {
            if let Some(Ok(next)) = pipeline.schedule().map(|s| next_boundary(&s, now)) {
                wait = wait.min(Duration::from_millis((next - now).max(0) as u64));
            }
        }
        wait
    }
}

/// Runs the scheduler on a thread until `stop` is raised or the daemon stops answering.
pub fn spawn(
    mut scheduler: Scheduler,
    clock: SharedClock,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("jobd-scheduler".into())
        .spawn(move || {
            let mut last_blocked: HashMap<String, UnixMillis> = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                // Among daemons sharing a PostgreSQL database only the leader schedules
                // (the run's unique key keeps a period to one run even across a change).
                if !super::cluster::is_leader() {
                    scheduler.forget();
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                let config = scheduler.client.config();
                let now = clock.now_ms();
                for tick in scheduler.run_once(&config, now) {
                    match tick {
                        Tick::Enqueued { pipeline, period, id } => tracing::info!(
                            pipeline = %pipeline, job = id,
                            "scheduled run of {pipeline} for {} enqueued as job {id}", format_millis(period)),
                        Tick::AlreadyThere { .. } => {}
                        Tick::Blocked { pipeline, period, live } => {
                            // Said once per period, not every few seconds.
                            if last_blocked.insert(pipeline.clone(), period) != Some(period) {
                                tracing::info!(pipeline = %pipeline,
                                    "run of {pipeline} for {} waits: {live} job(s) of the previous run are still live",
                                    format_millis(period));
                            }
                        }
                        Tick::Failed { pipeline, error } => {
                            tracing::error!(pipeline = %pipeline, "cannot schedule {pipeline}: {error}");
                        }
                        Tick::Stopping => return,
                    }
                }
                let wait = scheduler.sleep_after(&config, now);
                std::thread::sleep(wait.max(Duration::from_millis(10)));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixMillis {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn every_periods_are_aligned_to_the_epoch() {
        let hourly = PipelineSchedule::Every(Duration::from_secs(3600));
        let now = at("2026-11-23T05:42:10Z");
        assert_eq!(
            period_start(&hourly, now).unwrap(),
            at("2026-11-23T05:00:00Z")
        );
        assert_eq!(
            next_boundary(&hourly, now).unwrap(),
            at("2026-11-23T06:00:00Z")
        );
        // On the boundary itself the new period has begun.
        assert_eq!(
            period_start(&hourly, at("2026-11-23T06:00:00Z")).unwrap(),
            at("2026-11-23T06:00:00Z")
        );
    }

    #[test]
    fn cron_periods_start_at_the_latest_occurrence() {
        let quarter = PipelineSchedule::Cron("*/15 * * * *".into());
        let now = at("2026-11-23T05:42:10Z");
        assert_eq!(
            period_start(&quarter, now).unwrap(),
            at("2026-11-23T05:30:00Z")
        );
        assert_eq!(
            next_boundary(&quarter, now).unwrap(),
            at("2026-11-23T05:45:00Z")
        );
        let daily = PipelineSchedule::Cron("0 3 * * *".into());
        assert_eq!(
            period_start(&daily, now).unwrap(),
            at("2026-11-23T03:00:00Z")
        );
        assert_eq!(
            period_start(&daily, at("2026-11-23T02:59:59Z")).unwrap(),
            at("2026-11-22T03:00:00Z")
        );
        assert!(matches!(
            period_start(&PipelineSchedule::Cron("every tuesday".into()), 0),
            Err(ScheduleError::NotCron(_))
        ));
    }

    #[test]
    fn a_daemon_that_is_stopping_stops_the_scheduler_by_its_error_not_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\n[socket]\nenabled = false\n\
             [endpoints.shop]\nbase_url = \"http://127.0.0.1:9\"\n\
             [pipelines.customers]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"/c.json\"\n\
             items_key = \"customers\"\nsink = {{ sqlite = \"{sink}\" }}\ncolumns = {{ email = \"email\" }}\n\
             every = \"1h\"\n",
            db = dir.path().join("jobs.db").display(),
            data = dir.path().join("data").display(),
            sink = dir.path().join("shop.db").display(),
        );
        let config = Config::from_toml(&text, "test").unwrap();
        let db = crate::store::open(
            &config.daemon.database,
            &crate::store::OpenOptions {
                create: true,
                migrate: true,
                ..Default::default()
            },
        )
        .unwrap();
        // A client whose dispatcher is gone: the channel's other end is dropped.
        let (commands, _) = crossbeam_channel::unbounded();
        let client = DaemonClient {
            commands,
            registry: Arc::new(crate::handlers::Registry::builtin()),
            config: Arc::new(std::sync::RwLock::new(Arc::new(config.clone()))),
        };
        let mut scheduler = Scheduler::new(client, db);
        let ticks = scheduler.run_once(&config, at("2026-11-23T05:42:10Z"));
        assert_eq!(ticks, [Tick::Stopping]);
    }

    /// A window of 30 s.
    const WINDOW: Duration = Duration::from_secs(30);

    #[test]
    fn one_run_per_period() {
        let hourly = PipelineSchedule::Every(Duration::from_secs(3600));
        let t = at("2026-11-23T05:00:00Z");
        assert_eq!(due_period(&hourly, None, WINDOW, t + 5).unwrap(), Some(t));
        assert_eq!(
            due_period(&hourly, Some(t), WINDOW, t + 1_000_000).unwrap(),
            None
        );
        assert_eq!(
            due_period(&hourly, Some(t), WINDOW, t + 3_600_000).unwrap(),
            Some(t + 3_600_000)
        );
        // Down for three hours: the missed hours are older than the window; the current
        // one runs, as before.
        assert_eq!(
            due_period(&hourly, Some(t), WINDOW, t + 3 * 3_600_000 + 600_000).unwrap(),
            Some(t + 3 * 3_600_000)
        );
        assert_eq!(
            run_key("http_pull", "shopify-customers", t),
            "http_pull:shopify-customers:2026-11-23T05:00:00.000Z"
        );
        let prefix = run_key_prefix("http_pull", "shopify-customers");
        assert_eq!(
            period_of_key(&prefix, &run_key("http_pull", "shopify-customers", t)),
            Some(t)
        );
        assert_eq!(
            period_of_key(&prefix, "http_pull:shopify-customers:later"),
            None
        );
    }

    #[test]
    fn missed_periods_are_made_up_oldest_first_back_to_the_window() {
        let two = PipelineSchedule::Every(Duration::from_secs(2));
        let t = at("2026-11-23T05:00:00Z");
        // The leader ran t, then died; the next one looks 17.5 s later.
        let now = t + 17_500;
        assert_eq!(earliest_due(&two, WINDOW, now).unwrap(), t - 12_000);
        let mut last = Some(t);
        let mut made_up = Vec::new();
        while let Some(period) = due_period(&two, last, WINDOW, now).unwrap() {
            made_up.push(period);
            last = Some(period);
        }
        assert_eq!(made_up, (1..=8).map(|i| t + i * 2_000).collect::<Vec<_>>());
        // A window of 4 s reaches back to the periods that started from 13.5 s on.
        assert_eq!(
            due_period(&two, Some(t), Duration::from_secs(4), now).unwrap(),
            Some(t + 14_000)
        );
    }

    #[test]
    fn a_schedule_off_for_a_day_runs_at_most_the_cap_not_every_missed_period() {
        let two = PipelineSchedule::Every(Duration::from_secs(2));
        let t = at("2026-11-23T05:00:00Z");
        let day_later = t + 86_400_000 + 500;
        // The default window: 15 periods (30 s), not 43,200.
        let mut last = Some(t);
        let mut runs = 0;
        while let Some(period) = due_period(&two, last, WINDOW, day_later).unwrap() {
            runs += 1;
            last = Some(period);
        }
        assert_eq!(runs, 15);
        assert_eq!(last, Some(t + 86_400_000));
        // A window of a whole day still stops at the cap.
        let day = Duration::from_secs(86_400);
        let earliest = earliest_due(&two, day, day_later).unwrap();
        assert_eq!(
            earliest,
            t + 86_400_000 - i64::from(MAX_CATCH_UP_PERIODS - 1) * 2_000
        );
        assert_eq!(
            due_period(&two, Some(t), day, day_later).unwrap(),
            Some(earliest)
        );
        // So does cron: every minute, a day late, a window of a day.
        let minutely = PipelineSchedule::Cron("* * * * *".into());
        let earliest = earliest_due(&minutely, day, day_later).unwrap();
        assert_eq!(
            earliest,
            t + 86_400_000 - i64::from(MAX_CATCH_UP_PERIODS - 1) * 60_000
        );
        // And in a window of 30 s a quarter-hour cron has only its current period.
        let quarter = PipelineSchedule::Cron("*/15 * * * *".into());
        assert_eq!(
            due_period(&quarter, Some(t), WINDOW, t + 3_600_000 + 20_000).unwrap(),
            Some(t + 3_600_000)
        );
        // Within the window cron periods are made up one by one too.
        let minutely_due = due_period(&minutely, Some(t), Duration::from_secs(150), t + 180_500);
        assert_eq!(minutely_due.unwrap(), Some(t + 60_000));
    }

    /// A scheduler on a SQLite queue and a manual clock, with the test playing the
    /// dispatcher: each enqueue commits at the clock's time, and each run ends at once
    /// unless `runs_end` is lowered (then runs stay queued: live).
    struct Harness {
        dir: tempfile::TempDir,
        config: Config,
        clock: Arc<crate::clock::ManualClock>,
        runs_end: Arc<AtomicBool>,
    }

    impl Harness {
        fn new(start: UnixMillis) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\n[socket]\nenabled = false\n\
                 [endpoints.shop]\nbase_url = \"http://127.0.0.1:9\"\n\
                 [pipelines.customers]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"/c.json\"\n\
                 items_key = \"customers\"\nsink = {{ sqlite = \"{sink}\" }}\ncolumns = {{ email = \"email\" }}\n\
                 every = \"2s\"\n",
                db = dir.path().join("jobs.db").display(),
                data = dir.path().join("data").display(),
                sink = dir.path().join("shop.db").display(),
            );
            let config = Config::from_toml(&text, "test").unwrap();
            Harness {
                dir,
                config,
                clock: Arc::new(crate::clock::ManualClock::new(start)),
                runs_end: Arc::new(AtomicBool::new(true)),
            }
        }

        fn options() -> crate::store::OpenOptions {
            crate::store::OpenOptions {
                create: true,
                migrate: true,
                ..Default::default()
            }
        }

        /// A scheduler as a freshly started daemon has it (nothing in memory).
        fn start(&self) -> Scheduler {
            use crate::clock::Clock;
            let database = &self.config.daemon.database;
            let mut writer = crate::store::open(database, &Self::options()).unwrap();
            let reader = crate::store::open(database, &Self::options()).unwrap();
            let (commands, dispatcher) = crossbeam_channel::unbounded();
            let (clock, runs_end) = (self.clock.clone(), self.runs_end.clone());
            std::thread::spawn(move || {
                for command in dispatcher.iter() {
                    if let crate::daemon::dispatcher::Command::Enqueue { jobs, reply } = command {
                        let now = clock.now_ms();
                        let enqueued = writer
                            .write(|tx| {
                                let enqueued = tx.enqueue(&jobs, now)?;
                                if runs_end.load(Ordering::SeqCst) {
                                    for e in enqueued.iter().filter(|e| !e.duplicate) {
                                        tx.cancel(e.id, now)?;
                                    }
                                }
                                Ok(enqueued)
                            })
                            .unwrap();
                        if let crate::daemon::ReplyTo::Channel(reply) = reply {
                            let _ = reply.send(Ok(enqueued));
                        }
                    }
                }
            });
            let client = DaemonClient::to_channel(commands, self.config.clone());
            Scheduler::new(client, reader)
        }

        /// Looks until nothing more is due now (or a run is live); the periods enqueued.
        fn look(&self, scheduler: &mut Scheduler) -> Vec<UnixMillis> {
            use crate::clock::Clock;
            let mut enqueued = Vec::new();
            loop {
                let ticks = scheduler.run_once(&self.config, self.clock.now_ms());
                let mut moved = false;
                for tick in ticks {
                    match tick {
                        Tick::Enqueued { period, .. } => {
                            enqueued.push(period);
                            moved = true;
                        }
                        Tick::AlreadyThere { .. } => moved = true,
                        Tick::Failed { error, .. } => panic!("{error}"),
                        _ => {}
                    }
                }
                if !moved {
                    return enqueued;
                }
            }
        }

        /// The unique keys of every job, oldest first, read through the store.
        fn keys(&self) -> Vec<String> {
            let db = crate::store::open(&self.config.daemon.database, &Self::options()).unwrap();
            let filter = crate::store::JobFilter {
                limit: 10_000,
                ..Default::default()
            };
            let mut jobs = db.list(&filter).unwrap();
            jobs.sort_by_key(|j| j.id);
            jobs.into_iter().filter_map(|j| j.unique_key).collect()
        }
    }

    fn none() -> Vec<UnixMillis> {
        Vec::new()
    }

    fn seconds(t: UnixMillis, from: i64, to: i64, step: i64) -> Vec<UnixMillis> {
        (from..=to)
            .step_by(step as usize)
            .map(|s| t + s * 1000)
            .collect()
    }

    #[test]
    fn a_restarted_daemon_makes_up_the_periods_it_missed_within_the_window() {
        let t = at("2026-11-23T05:00:00Z");
        let h = Harness::new(t + 100);
        let mut first = h.start();
        assert_eq!(h.look(&mut first), [t]);
        h.clock.advance(Duration::from_secs(2));
        assert_eq!(h.look(&mut first), [t + 2_000]);
        drop(first);
        // Down for 11 s: a new daemon reads the last period back from the queue and
        // makes up the four it missed, oldest first, then runs the current one.
        h.clock.advance(Duration::from_secs(11));
        let mut second = h.start();
        assert_eq!(h.look(&mut second), seconds(t, 4, 12, 2));
        assert_eq!(h.look(&mut second), none(), "nothing twice");
        assert_eq!(h.keys().len(), 7, "{:?}", h.keys());
        // Down for a day: only the window's periods (90 s: the leader lease, 15 s, the
        // job lease, 60 s, and 15 s), not 43,200.
        h.clock.advance(Duration::from_secs(86_400));
        let mut third = h.start();
        assert_eq!(catch_up_window(&h.config), Duration::from_secs(90));
        let made_up = h.look(&mut third);
        assert_eq!(made_up, seconds(t, 86_324, 86_412, 2));
        drop(h.dir);
    }

    #[test]
    fn missed_periods_wait_for_the_live_run_and_a_new_leader_reads_the_last_one_back() {
        let t = at("2026-11-23T05:00:00Z");
        let h = Harness::new(t + 100);
        let mut leader = h.start();
        assert_eq!(h.look(&mut leader), [t]);
        // The leader dies; another daemon's scheduler takes over 6 s later, while the
        // runs it enqueues stay live: one at a time, never beside a live run.
        h.clock.advance(Duration::from_secs(6));
        h.runs_end.store(false, Ordering::SeqCst);
        let mut next = h.start();
        assert_eq!(h.look(&mut next), [t + 2_000]);
        let ticks = next.run_once(&h.config, t + 6_100);
        assert!(
            matches!(ticks[..], [Tick::Blocked { period, live: 1, .. }] if period == t + 4_000),
            "{ticks:?}"
        );
        assert!(next.behind, "looked at again soon");
        assert_eq!(next.sleep_after(&h.config, t + 6_100), CATCH_UP_RECHECK);
        // Once the run is over the rest follow, still oldest first.
        let mut db = crate::store::open(&h.config.daemon.database, &Harness::options()).unwrap();
        let queued = db
            .list(&crate::store::JobFilter {
                state: Some(crate::job::JobState::Queued),
                limit: 10_000,
                ..Default::default()
            })
            .unwrap();
        db.write(|tx| {
            for job in &queued {
                tx.cancel(job.id, t)?;
            }
            Ok(())
        })
        .unwrap();
        h.runs_end.store(true, Ordering::SeqCst);
        assert_eq!(h.look(&mut next), [t + 4_000, t + 6_000]);
        assert!(!next.behind);
        // A daemon that stopped leading forgets; leading again it reads the queue.
        next.forget();
        h.clock.advance(Duration::from_secs(2));
        assert_eq!(h.look(&mut next), [t + 8_000]);
        assert_eq!(
            h.look(&mut leader),
            none(),
            "the old leader's memory is behind; the key holds"
        );
        assert_eq!(h.keys().len(), 5, "{:?}", h.keys());
    }
}
