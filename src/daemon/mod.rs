//! The daemon: takes the database lock, migrates and recovers, then runs the dispatcher
//! (the one writer), the worker pool and the signal listener until it is told to stop.

pub mod checkpointer;
pub mod cluster;
pub mod config_check;
pub mod dispatcher;
pub mod journal;
pub mod lock;
pub mod notify;
pub mod scheduler;
pub mod status;
pub mod workers;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigSource, Synchronous};
use crate::handlers::Registry;
use crate::job::{Job, JobState, NewJob, UnixMillis};
use crate::store::{Enqueued, OpenOptions, StoreError, StoreTx};
use crossbeam_channel::{Receiver, Sender};
use dispatcher::{Command, Counters, Dispatcher, Exit};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

/// What other parts of the daemon (ingest, notifications) do when jobs finish. Hooks run
/// on the dispatcher thread, so they must be quick.
pub trait JobHooks: Send + Sync {
    /// Jobs to enqueue in the same transaction that makes `job` dead (e.g. a dead-letter
    /// notification), so a crash cannot lose them. `first_attempt_at` is when its first
    /// attempt started.
    fn on_dead(
        &self,
        _job: &Job,
        _error: &str,
        _first_attempt_at: UnixMillis,
        _config: &Config,
    ) -> Vec<NewJob> {
        Vec::new()
    }

    /// Called once the move of `job` to `state` is committed (e.g. to move its source
    /// file to done/ or failed/). `job` is as it was claimed.
    fn after_commit(&self, _job: &Job, _state: JobState, _error: Option<&str>, _config: &Config) {}
}

/// The dispatcher's answer to an enqueue: the ids, or why nothing was enqueued.
pub type EnqueueReply = Result<Vec<Enqueued>, ClientError>;

/// Why the daemon did not do what a [`DaemonClient`] asked. In every case nothing of
/// the request was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The daemon is stopping: it takes no more requests.
    #[error("the daemon is stopping")]
    Stopping,
    /// The daemon stopped after it took the request, before its commit.
    #[error("the daemon stopped before answering")]
    StoppedBeforeAnswer,
    /// The job was refused before it reached the queue (unknown kind, bad payload).
    #[error(transparent)]
    Invalid(#[from] crate::handlers::Refusal),
    /// The store refused these jobs (the rest of the turn went ahead).
    #[error("{0}")]
    Refused(String),
    /// The turn's transaction did not commit (disk full, database busy).
    #[error("not enqueued: {0}")]
    NotEnqueued(String),
    /// The turn's transaction did not commit, so neither did the work given to
    /// [`DaemonClient::write`].
    #[error("not written: {0}")]
    NotWritten(String),
    /// The work given to [`DaemonClient::write`] failed; what it did was rolled back.
    #[error("{0}")]
    Work(String),
}

impl ClientError {
    /// Whether the request failed because the daemon is going away, not because of it.
    pub fn is_stopping(&self) -> bool {
        matches!(
            self,
            ClientError::Stopping | ClientError::StoppedBeforeAnswer
        )
    }
}

/// For callers that report errors as text (the enqueue socket's refusals, ingest).
impl From<ClientError> for String {
    fn from(e: ClientError) -> String {
        e.to_string()
    }
}

/// Where an enqueue's answer goes once its commit is known.
pub enum ReplyTo {
    Channel(Sender<EnqueueReply>),
    /// Handed to the asker on the dispatcher thread: the enqueue socket writes it to its
    /// client from there, sparing a thread wake-up per acknowledgement.
    Direct(Box<dyn DirectReply>),
}

/// An answer taken on the dispatcher thread. Must not block: it buffers, and the
/// [`Flush`] it returns is called once every answer of the turn is in.
pub trait DirectReply: Send {
    fn answer(self: Box<Self>, reply: EnqueueReply) -> Option<Arc<dyn Flush>>;
}

/// Sends what [`DirectReply::answer`] buffered, without blocking.
pub trait Flush: Send + Sync {
    fn flush(&self);
}

/// Why a [`DaemonClient::write`] task failed: its own error, or the savepoint's.
enum TaskError {
    Work(String),
    Store(StoreError),
}

impl From<StoreError> for TaskError {
    fn from(e: StoreError) -> Self {
        TaskError::Store(e)
    }
}

/// The configuration in force; replaced whole on reload.
pub type SharedConfig = Arc<RwLock<Arc<Config>>>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
}

/// How to run.
pub struct DaemonOptions {
    pub clock: SharedClock,
    pub registry: Registry,
    /// Where SIGHUP reloads the configuration from.
    pub config_source: ConfigSource,
    /// Process what is ready, then exit.
    pub once: bool,
    /// Listen for SIGTERM, SIGINT and SIGHUP (off for in-process tests).
    pub handle_signals: bool,
    pub hooks: Vec<Arc<dyn JobHooks>>,
}

/// A running daemon.
pub struct Daemon {
    client: DaemonClient,
    dispatcher: JoinHandle<Result<(Exit, Counters), StoreError>>,
    workers: Vec<JoinHandle<()>>,
    checkpointer: checkpointer::Checkpointer,
    /// Raised when the dispatcher is done, so the pipeline scheduler stops too.
    scheduler_stop: Arc<std::sync::atomic::AtomicBool>,
    /// The web page, if `[web] listen` is set; stopped once the dispatcher is done.
    web: Option<crate::web::WebServer>,
    _lock: cluster::DaemonLock,
}

/// A handle for enqueuing into, reloading and stopping a running daemon.
#[derive(Clone)]
pub struct DaemonClient {
    commands: Sender<Command>,
    registry: Arc<Registry>,
    config: SharedConfig,
}

impl DaemonClient {
    /// A client whose commands go to `commands` instead of a running dispatcher, for
    /// tests that play the dispatcher's part.
    #[cfg(test)]
    pub(crate) fn to_channel(commands: Sender<Command>, config: Config) -> DaemonClient {
        DaemonClient {
            commands,
            registry: Arc::new(Registry::builtin()),
            config: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// Enqueues jobs all or nothing; returns once they are committed.
    pub fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, ClientError> {
        self.enqueue_async(jobs)?
            .recv()
            .map_err(|_| ClientError::StoppedBeforeAnswer)?
    }

    /// Validates and hands jobs to the dispatcher without waiting: the answer arrives on
    /// the returned channel after the commit. Lets one client pipeline many requests into
    /// the same group commit (the enqueue socket).
    pub fn enqueue_async(&self, jobs: Vec<NewJob>) -> Result<Receiver<EnqueueReply>, ClientError> {
        let config = self.config.read().expect("config lock").clone();
        for job in &jobs {
            self.registry
                .validate(job, &config)
                .map_err(ClientError::Invalid)?;
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Enqueue {
                jobs,
                reply: ReplyTo::Channel(reply),
            })
            .map_err(|_| ClientError::Stopping)?;
        Ok(answer)
    }

    /// Hands jobs the caller has validated (with [`DaemonClient::validate`]) to the
    /// dispatcher; `reply` hears the outcome after the commit. If the daemon is stopping,
    /// `reply` is dropped unanswered, so it should answer for itself when dropped.
    pub(crate) fn enqueue_validated(
        &self,
        jobs: Vec<NewJob>,
        reply: Box<dyn DirectReply>,
    ) -> Result<(), ClientError> {
        self.commands
            .send(Command::Enqueue {
                jobs,
                reply: ReplyTo::Direct(reply),
            })
            .map_err(|_| ClientError::Stopping)
    }

    /// Runs `work` inside the dispatcher's next transaction (all or nothing, under a
    /// savepoint) and returns its value once committed; an error of `work`'s own comes
    /// back as [`ClientError::Work`], in its words. `on_abort` runs if the work
    /// succeeded but the commit failed, to undo what it did outside the database.
    pub fn write<T: Send + 'static, E: std::fmt::Display + 'static>(
        &self,
        work: impl FnOnce(&dyn StoreTx, UnixMillis) -> Result<T, E> + Send + 'static,
        on_abort: impl FnOnce(&T) + Send + 'static,
    ) -> Result<T, ClientError> {
        self.write_async(work, on_abort)?
            .recv()
            .map_err(|_| ClientError::StoppedBeforeAnswer)?
    }

    /// [`DaemonClient::write`] without waiting: the answer arrives on the returned
    /// channel once the commit is known (or the channel closes if the daemon stopped).
    pub fn write_async<T: Send + 'static, E: std::fmt::Display + 'static>(
        &self,
        work: impl FnOnce(&dyn StoreTx, UnixMillis) -> Result<T, E> + Send + 'static,
        on_abort: impl FnOnce(&T) + Send + 'static,
    ) -> Result<Receiver<Result<T, ClientError>>, ClientError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let task: dispatcher::TxTask = Box::new(move |tx, now| {
            let result = tx
                .atomically(|tx| work(tx, now).map_err(|e| TaskError::Work(e.to_string())))
                .map_err(|e| match e {
                    TaskError::Work(e) => ClientError::Work(e),
                    TaskError::Store(e) => ClientError::Work(e.to_string()),
                });
            Box::new(move |committed: Result<(), ClientError>| {
                let answer = match (result, committed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(value), Err(e)) => {
                        on_abort(&value);
                        Err(e)
                    }
                    (Err(e), _) => Err(e),
                };
                let _ = reply.send(answer);
            })
        });
        self.commands
            .send(Command::Write(task))
            .map_err(|_| ClientError::Stopping)?;
        Ok(answer)
    }

    /// Checks a job's kind and payload as an enqueue would.
    pub fn validate(&self, job: &NewJob) -> Result<(), ClientError> {
        let config = self.config.read().expect("config lock").clone();
        self.registry
            .validate(job, &config)
            .map_err(ClientError::Invalid)
    }

    /// Whether a job kind is known (to tell an unknown kind from a bad payload).
    pub fn knows_kind(&self, kind: &str) -> bool {
        self.registry.get(kind).is_some()
    }

    pub fn shutdown(&self) {
        // Schedules and purges go to another daemon now, not after this one's drain.
        cluster::step_down();
        let _ = self.commands.send(Command::Shutdown);
    }

    pub fn reload(&self) {
        let _ = self.commands.send(Command::Reload);
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Kills every command the handlers started (see [`Registry::kill_all`]), for an
    /// exit that does not go through [`Daemon::wait`].
    pub fn kill_all_commands(&self) {
        self.registry.kill_all();
    }
}

impl Daemon {
    /// Locks the database, migrates it, recovers jobs left running, and starts the
    /// dispatcher and workers. READY=1 is sent when this returns.
    pub fn start(config: Config, options: DaemonOptions) -> Result<Daemon, DaemonError> {
        // The file lock for SQLite; on PostgreSQL the node name (see cluster.rs).
        let lock = cluster::DaemonLock::acquire(&config, options.clock.clone())
            .map_err(DaemonError::Setup)?;
        Daemon::start_locked(config, options, lock)
    }

    /// [`Daemon::start`] with the database lock already taken, for a caller that must
    /// know it is the only daemon before it binds sockets or moves files.
    pub fn start_locked(
        config: Config,
        options: DaemonOptions,
        lock: impl Into<cluster::DaemonLock>,
    ) -> Result<Daemon, DaemonError> {
        let lock = lock.into();
        let database = config.daemon.database.clone();
        crate::files::create_private_dir_all(&config.daemon.data_dir).map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create data_dir {}: {e}",
                config.daemon.data_dir.display()
            ))
        })?;
        let db = crate::store::open(
            &database,
            &OpenOptions {
                synchronous: config.daemon.synchronous,
                busy_timeout: config.daemon.busy_timeout,
                create: true,
                migrate: true,
            },
        )?;
        // A database we cannot write is refused now, before READY=1, not at every write.
        db.check_writable()?;
        if let Some(file) = db.sqlite() {
            // After a checkpoint lets the WAL start over, the file shrinks back to the limit.
            file.set_journal_size_limit(config.daemon.wal_limit)?;
            // The checkpointer thread copies the WAL back, on its own connection; commits
            // on the dispatcher's connection never stop to do it inline.
            file.disable_auto_checkpoint()?;
        }
        // At `full`, the dispatcher's commits are synced by a thread of their own, which
        // answers only after the sync: the next turn is written while the disk works.
        let wal_sync = match (config.daemon.synchronous, db.sqlite()) {
            (Synchronous::Full, Some(file)) => Some(file.sync_commits_elsewhere()?),
            _ => None,
        };
        let checkpointer_db = crate::store::open(
            &database,
            &OpenOptions {
                synchronous: config.daemon.synchronous,
                busy_timeout: config.daemon.busy_timeout,
                create: false,
                migrate: false,
            },
        )?;
        let registry = Arc::new(options.registry);
        let shared_config: SharedConfig = Arc::new(RwLock::new(Arc::new(config.clone())));
        // Every job the dispatcher enqueues (socket, watched folders, follow-ups) gets its
        // destination and order key from its kind, with the config of the moment.
        let routed_config = shared_config.clone();
        let mut db = db;
        db.set_router(registry.router(move || routed_config.read().expect("config lock").clone()));
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let (work_tx, work_rx) = crossbeam_channel::unbounded();
        let notifier = notify::Notifier::from_env();
        // Bounded(1): the dispatcher never waits for the metrics writer.
        let (metrics_tx, metrics_rx) = crossbeam_channel::bounded(1);
        crate::metrics::spawn_textfile_writer(
            database.clone(),
            config.daemon.data_dir.clone(),
            config.daemon.busy_timeout,
            metrics_rx,
        )
        .map_err(|e| DaemonError::Setup(format!("cannot start the metrics writer: {e}")))?;
        // Bounded(1) as well: a count still running skips a refresh.
        let status_tx = if notifier.enabled() {
            let (status_tx, status_rx) = crossbeam_channel::bounded(1);
            let status_notifier = notifier
                .try_clone()
                .map_err(|e| DaemonError::Setup(format!("cannot reach NOTIFY_SOCKET: {e}")))?;
            status::spawn_status_writer(
                database.clone(),
                config.daemon.busy_timeout,
                status_notifier,
                status_rx,
            )
            .map_err(|e| DaemonError::Setup(format!("cannot start the status writer: {e}")))?;
            Some(status_tx)
        } else {
            None
        };
        let checkpointer =
            checkpointer::Checkpointer::spawn(checkpointer_db, shared_config.clone())
                .map_err(|e| DaemonError::Setup(format!("cannot start the checkpointer: {e}")))?;
        let mut dispatcher = Dispatcher::new(
            db,
            shared_config.clone(),
            config_check::ConfigLoader::new(options.config_source, registry.clone()),
            options.clock.clone(),
            options.hooks,
            command_rx,
            work_tx,
            options.once,
            notifier,
            metrics_tx,
            status_tx,
        );
        if let Some(wal_sync) = wal_sync {
            dispatcher
                .sync_commits_with(wal_sync)
                .map_err(|e| DaemonError::Setup(format!("cannot start the syncer: {e}")))?;
        }
        let journal = dispatcher.recover()?;
        let workers = workers::spawn(
            config.daemon.workers,
            work_rx,
            command_tx.clone(),
            registry.clone(),
            options.clock.clone(),
            config.daemon.data_dir.clone(),
            Arc::new(crate::store::SyncStateReader::new(&database)),
            journal,
        );
        let client = DaemonClient {
            commands: command_tx,
            registry,
            config: shared_config,
        };
        if options.handle_signals {
            spawn_signal_listener(client.clone())?;
        }
        let scheduler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // `--once` drains what is ready and exits; scheduled runs are the running
        // daemon's business.
        if !options.once {
            let reader = crate::store::open_read(
                &database,
                &OpenOptions {
                    busy_timeout: config.daemon.busy_timeout,
                    ..OpenOptions::default()
                },
            )?;
            scheduler::spawn(
                scheduler::Scheduler::new(client.clone(), reader),
                options.clock.clone(),
                scheduler_stop.clone(),
            )
            .map_err(|e| DaemonError::Setup(format!("cannot start the scheduler: {e}")))?;
        }
        let web = if options.once {
            None
        } else {
            crate::web::WebServer::start(&config, client.clone(), options.clock.clone())
                .map_err(DaemonError::Setup)?
        };
        let ready = notify::Notifier::from_env();
        let dispatcher = std::thread::Builder::new()
            .name("jobd-dispatcher".into())
            .spawn(move || dispatcher.run())
            .map_err(|e| DaemonError::Setup(format!("cannot start the dispatcher: {e}")))?;
        tracing::info!(
            database = %database.display(),
            workers = config.daemon.workers,
            "jobd ready"
        );
        ready.ready("ready");
        Ok(Daemon {
            client,
            dispatcher,
            workers,
            checkpointer,
            scheduler_stop,
            web,
            _lock: lock,
        })
    }

    pub fn client(&self) -> DaemonClient {
        self.client.clone()
    }

    /// Where the web page listens, if it is on (useful with port 0).
    pub fn web_address(&self) -> Option<std::net::SocketAddr> {
        self.web.as_ref().map(|w| w.address)
    }

    /// Waits for the dispatcher to finish (after a stop signal, or in `--once` mode).
    pub fn wait(self) -> Result<(Exit, Counters), DaemonError> {
        let joined = self.dispatcher.join();
        // However the dispatcher ended (drained, forced, an error, a panic), no command
        // outlives the daemon: its jobs are back in the queue and will run again.
        self.client.registry.kill_all();
        let result = joined.map_err(|_| DaemonError::Setup("the dispatcher panicked".into()))?;
        self.checkpointer.stop();
        if let Some(web) = self.web {
            web.stop();
        }
        self.scheduler_stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Closing the work channel lets idle workers end; a hung one is left behind.
        drop(self.client);
        for worker in self.workers {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        Ok(result?)
    }
}

fn spawn_signal_listener(client: DaemonClient) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("cannot listen for signals: {e}")))?;
    std::thread::Builder::new()
        .name("jobd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        client.reload();
                    }
                    _ => {
                        tracing::info!("signal {signal}: stopping");
                        client.shutdown();
                    }
                }
            }
        })
        .map_err(|e| DaemonError::Setup(format!("cannot start the signal listener: {e}")))?;
    Ok(())
}
