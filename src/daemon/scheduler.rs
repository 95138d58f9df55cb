//! The pipeline scheduler: enqueues one run of each scheduled pipeline per period, with a
//! unique key naming the period, and never while a run of that pipeline is still live.
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

/// The period to enqueue at `now`, unless `last` (the period last enqueued) is it.
pub fn due_period(
    schedule: &PipelineSchedule,
    last: Option<UnixMillis>,
    now: UnixMillis,
) -> Result<Option<UnixMillis>, ScheduleError> {
    let period = period_start(schedule, now)?;
    Ok((last.is_none_or(|l| l < period)).then_some(period))
}

/// The unique key of a pipeline's scheduled run for a period.
pub fn run_key(kind: &str, pipeline: &str, period: UnixMillis) -> String {
    format!("{kind}:{pipeline}:{}", format_millis(period))
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
    /// The period last enqueued (or found) per pipeline.
    done: HashMap<String, UnixMillis>,
    blocked: bool,
}

impl Scheduler {
    pub fn new(client: DaemonClient, db: Box<dyn Store>) -> Scheduler {
        Scheduler {
            client,
            db,
            done: HashMap::new(),
            blocked: false,
        }
    }

    /// Looks at every scheduled pipeline once.
    pub fn run_once(&mut self, config: &Config, now: UnixMillis) -> Vec<Tick> {
        let mut ticks = Vec::new();
        self.blocked = false;
        for (name, pipeline) in &config.pipelines {
            let Some(schedule) = pipeline.schedule() else {
                continue;
            };
            let period = match due_period(&schedule, self.done.get(name).copied(), now) {
                Ok(Some(period)) => period,
                Ok(None) => continue,
                Err(error) => {
                    ticks.push(Tick::Failed {
                        pipeline: name.clone(),
                        error: error.to_string(),
                    });
                    continue;
                }
            };
            let kind = pipeline.job_kind();
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

    #[test]
    fn one_run_per_period() {
        let hourly = PipelineSchedule::Every(Duration::from_secs(3600));
        let t = at("2026-11-23T05:00:00Z");
        assert_eq!(due_period(&hourly, None, t + 5).unwrap(), Some(t));
        assert_eq!(due_period(&hourly, Some(t), t + 1_000_000).unwrap(), None);
        assert_eq!(
            due_period(&hourly, Some(t), t + 3_600_000).unwrap(),
            Some(t + 3_600_000)
        );
        assert_eq!(
            run_key("http_pull", "shopify-customers", t),
            "http_pull:shopify-customers:2026-11-23T05:00:00.000Z"
        );
    }
}
