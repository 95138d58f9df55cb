//! Job kinds. A handler gets a job and a context and returns an [`Outcome`]; it never
//! touches the database. The registry maps a job's `kind` to its handler.

pub mod csv_import;
mod error;
pub mod exec;
pub mod http;
pub mod noop;
pub mod notify;
pub mod oneroster;
pub mod pull;
pub mod relay;

use crate::clock::SharedClock;
use crate::config::{Config, Problem, Problems};
use crate::flow::{HoldReports, HoldRequest, Route, Router};
use crate::job::{Job, NewJob, Outcome, PayloadError, UnixMillis};
pub use error::{HandlerError, Refusal};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a running handler is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The daemon is draining: finish if you can within the grace period.
    Draining,
    /// An operator cancelled the job: stop now.
    Cancelled,
    /// The grace period is over: stop now; the attempt is not charged.
    Interrupted,
}

/// A flag the dispatcher raises and a handler reads, shared per job.
#[derive(Debug, Default)]
pub struct StopSignal(AtomicU8);

impl StopSignal {
    pub fn raise(&self, reason: StopReason) {
        let level = match reason {
            StopReason::Draining => 1,
            StopReason::Cancelled => 2,
            StopReason::Interrupted => 3,
        };
        // Only ever escalate: a cancel is not downgraded to a drain.
        self.0.fetch_max(level, Ordering::SeqCst);
    }

    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            1 => Some(StopReason::Draining),
            2 => Some(StopReason::Cancelled),
            _ => Some(StopReason::Interrupted),
        }
    }

    /// Whether the handler should stop at once (draining lets it finish).
    pub fn must_stop(&self) -> Option<StopReason> {
        self.reason().filter(|r| *r != StopReason::Draining)
    }
}

/// Read-only access to the pipelines' sync state kept in the queue database. Handlers
/// never write it: a run's last page returns a [`crate::job::SyncMark`] and the store
/// records it in the same transaction as the page's completion.
pub trait SyncStateView: Send + Sync {
    /// The high-water mark of the pipeline's last complete run, if any.
    fn high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>, SyncStateError>;
}

/// The sync state could not be read (the database busy or gone): the run may start later.
#[derive(Debug, thiserror::Error)]
pub enum SyncStateError {
    #[error("cannot open {} to read sync_state: {cause}", database.display())]
    Open {
        database: PathBuf,
        cause: crate::store::StoreError,
    },
    #[error("cannot read sync_state: {0}")]
    Read(crate::store::StoreError),
}

/// No sync state at all: every pull is a full one (tests, tools without a database).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSyncState;

impl SyncStateView for NoSyncState {
    fn high_water(&self, _pipeline: &str) -> Result<Option<UnixMillis>, SyncStateError> {
        Ok(None)
    }
}

/// What a running handler reports of its progress (rows read, pages fetched), shared
/// with the dispatcher, which writes it with its heartbeat and when the attempt ends: a
/// handler may report as often as it likes, and the database sees one write per beat.
#[derive(Debug, Default)]
pub struct Progress {
    /// A version that counts every report, and the latest value of each counter.
    inner: Mutex<(u64, serde_json::Map<String, Value>)>,
}

impl Progress {
    pub fn set(&self, name: &str, value: impl Into<Value>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        inner.1.insert(name.to_string(), value.into());
    }

    /// The progress, if anything was reported since `version`, with its new version.
    pub fn changed_since(&self, version: u64) -> Option<(u64, Value)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.0 > version).then(|| (inner.0, Value::Object(inner.1.clone())))
    }
}

/// What a handler may use besides its job.
#[derive(Clone)]
pub struct JobContext {
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub data_dir: PathBuf,
    /// When this attempt must be over.
    pub deadline: Instant,
    pub timeout: Duration,
    pub stop: Arc<StopSignal>,
    /// When the job runs again after waiting for its children ([`Job::stage`] > 0): how
    /// many of them ended in each state (`succeeded`, `dead`, `cancelled`).
    pub children: Option<BTreeMap<String, u64>>,
    /// The pipelines' last sync marks (read at the start of a pull run).
    pub sync_state: Arc<dyn SyncStateView>,
    /// Where [`JobContext::progress`] reports go.
    pub progress_report: Arc<Progress>,
    /// Where [`JobContext::hold`] requests go.
    pub holds: Arc<HoldReports>,
}

impl JobContext {
    /// Records how far this attempt has come, e.g. `ctx.progress("rows", n)`. Cheap: kept
    /// in memory and written by the dispatcher with its next heartbeat.
    pub fn progress(&self, name: &str, value: u64) {
        self.progress_report.set(name, value);
    }

    /// Asks that no job of a destination be claimed until the request's `until` (the
    /// other side said to slow down). Written with this attempt's outcome, for every
    /// worker and daemon; a shorter hold never shortens a longer one.
    pub fn hold(&self, request: HoldRequest) {
        self.holds.push(request);
    }
}

pub trait Handler: Send + Sync {
    /// Refuses a payload this kind cannot run, before it is enqueued.
    fn validate(&self, _payload: &Value, _config: &Config) -> Result<(), PayloadError> {
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome;

    /// Where a job of this kind goes: its destination (and key) and order key, derived
    /// from its payload when it is enqueued. Default: under no flow control.
    fn route(&self, _job: &NewJob, _config: &Config) -> Route {
        Route::default()
    }

    /// Kills whatever this handler started outside the daemon (exec's process groups)
    /// and starts nothing more: called once before the daemon exits, however it exits.
    fn kill_all(&self) {}
}

/// The handlers of every known kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// The kinds built into jobd.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        registry.register("noop", Arc::new(noop::Noop));
        registry.register("exec", Arc::new(exec::Exec::default()));
        registry.register("csv_import", Arc::new(csv_import::CsvImport));
        // One Http shared by `http` and `notify`: one client, token cache and rate
        // limiter per endpoint, whichever kind calls it.
        let http = http::Http::new();
        registry.register("notify", Arc::new(notify::Notify { http: http.clone() }));
        registry.register(pull::KIND, Arc::new(pull::Pull::new(http.clone())));
        registry.register(
            oneroster::status::KIND,
            Arc::new(oneroster::status::UploadStatus { http: http.clone() }),
        );
        registry.register("http", Arc::new(http));
        registry.register("relay", Arc::new(relay::Relay));
        registry.register(oneroster::KIND, Arc::new(oneroster::OneRoster));
        registry
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// [`Handler::kill_all`] for every handler.
    pub fn kill_all(&self) {
        for handler in self.handlers.values() {
            handler.kill_all();
        }
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// Checks that a job names a known kind and that its payload suits that kind.
    pub fn validate(&self, job: &NewJob, config: &Config) -> Result<(), Refusal> {
        job.validate()?;
        let handler = self
            .get(&job.kind)
            .ok_or_else(|| self.unknown_kind(&job.kind))?;
        Ok(handler.validate(&job.payload, config)?)
    }

    /// Checks each `[[watch]]`'s kind and static payload as its jobs will be checked, with
    /// stand-ins for the fields the watcher adds (`file` or `dir`, `name`, `sha256`,
    /// `size`, `files`), so a misspelt setting is refused at start, not at the first file.
    /// Every watch's problem is reported.
    pub fn check_watches(&self, config: &Config) -> Result<(), Problems> {
        let mut problems = Problems::new();
        'watches: for (index, watch) in config.watch.iter().enumerate() {
            let at = format!("watch[{index}] ({})", watch.path.display());
            let mut payload = serde_json::Map::new();
            for (key, value) in &watch.payload {
                match serde_json::to_value(value) {
                    Ok(value) => payload.insert(key.clone(), value),
                    Err(e) => {
                        problems.add(Problem::sentence(
                            format!("watch[{index}].payload.{key}"),
                            format!("{at}: payload.{key}: {e}"),
                        ));
                        continue 'watches;
                    }
                };
            }
            let name = "example";
            let staged = config.daemon.data_dir.join("spool").join("0").join(name);
            let is_dir = watch.mode == crate::config::WatchMode::Dir;
            payload.insert(
                if is_dir { "dir" } else { "file" }.into(),
                Value::String(staged.display().to_string()),
            );
            payload.insert("name".into(), Value::String(name.into()));
            payload.insert("sha256".into(), Value::String("0".repeat(64)));
            payload.insert("size".into(), Value::from(0));
            if is_dir {
                payload.insert("files".into(), Value::Object(Default::default()));
            }
            let job =
                NewJob::new(watch.kind.clone(), Value::Object(payload)).queue(watch.queue.clone());
            if let Err(e) = self.validate(&job, config) {
                problems.add(Problem::sentence(
                    format!("watch[{index}]"),
                    format!("{at}: {e}"),
                ));
            }
        }
        problems.into_result()
    }

    /// The [`Router`] the store asks for each job it enqueues: this registry's kinds,
    /// with the endpoints of the config `config` gives (the current one, after reloads).
    pub fn router(
        self: &Arc<Self>,
        config: impl Fn() -> Arc<Config> + Send + Sync + 'static,
    ) -> Arc<dyn Router> {
        Arc::new(KindRouter {
            registry: self.clone(),
            config: Box::new(config),
        })
    }

    pub fn unknown_kind(&self, kind: &str) -> Refusal {
        Refusal::UnknownKind {
            kind: kind.to_string(),
            known: self.kinds().join(", "),
        }
    }
}

/// Routes a job by its kind's [`Handler::route`].
struct KindRouter {
    registry: Arc<Registry>,
    config: Box<dyn Fn() -> Arc<Config> + Send + Sync>,
}

impl Router for KindRouter {
    fn route(&self, job: &NewJob) -> Route {
        match self.registry.get(&job.kind) {
            Some(handler) => handler.route(job, &(self.config)()),
            None => Route::default(),
        }
    }
}
