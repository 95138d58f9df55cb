//! The PostgreSQL driver: several daemons on several machines share one queue database.
//! Owns the connection pool, the migrations under `migrations/postgres/`, the queue's
//! transitions with `FOR UPDATE SKIP LOCKED` claims (`queue.rs`), nodes and leadership by
//! lease rows (`cluster.rs`), the LISTEN connection for wake-ups (`listen.rs`) and the
//! web page's reads (`web.rs`).
//!
//! The rust-postgres client is synchronous: the dispatcher, the workers and jobctl run on
//! plain threads, so no async runtime sits in the queue's path.

mod claim;
mod cluster;
mod copy;
mod driver;
mod enqueue;
mod flow;
mod listen;
mod moves;
mod operator;
mod queue;
mod reads;
pub mod schema;
mod statements;
mod web;

pub use cluster::{Leadership, NodeLease, LEADER_TTL};
pub use copy::CopyReport;
pub use listen::{Listener, NOTIFY_CHANNEL};
pub use queue::PgTx;

use super::{Result, StoreError};
use crate::dburl::PostgresUrl;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use std::collections::BTreeMap;
use std::time::Duration;

/// A pooled connection (with its prepared statements; it derefs to the client).
pub type PgConnection = r2d2::PooledConnection<statements::CachingManager>;

/// How long opening a connection may take before the server is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the dispatcher looks for new rows without a notice while LISTEN is up.
pub const FALLBACK_POLL: Duration = Duration::from_millis(100);

/// Connections kept per process: the dispatcher's, a reader's or two, jobctl's.
const POOL_SIZE: u32 = 4;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.code() {
            Some(code)
                if *code == SqlState::CHECK_VIOLATION
                    || *code == SqlState::NOT_NULL_VIOLATION
                    || *code == SqlState::INVALID_TEXT_REPRESENTATION
                    || *code == SqlState::FOREIGN_KEY_VIOLATION =>
            {
                StoreError::InvalidJob(format!("refused by the schema: {}", describe(&e)))
            }
            Some(code) if *code == SqlState::DISK_FULL => StoreError::DiskFull(describe(&e)),
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => {
                StoreError::ReadOnly(Default::default(), describe(&e))
            }
            Some(code)
                if *code == SqlState::LOCK_NOT_AVAILABLE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                StoreError::Busy
            }
            _ => StoreError::Postgres(describe(&e)),
        }
    }
}

/// The server's message with its detail, or the client's.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// How to open a PostgreSQL queue.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Apply pending migrations (jobd at start, `jobctl migrate`); otherwise an outdated
    /// schema is refused.
    pub migrate: bool,
    /// This process's node name, recorded on the jobs it claims and required by jobs
    /// whose files it holds.
    pub node: String,
    /// Every node sees the same data_dir: jobs with files are not bound to a node.
    pub shared_data_dir: bool,
    /// Where this node keeps the files that go beside the queue (the dispatcher's start
    /// journal is `PATH.starts`). Default: `jobd-postgres-NODE` in the working folder.
    pub local_path: Option<std::path::PathBuf>,
    /// Queues with a concurrency limit that holds across every daemon.
    pub queue_limits: BTreeMap<String, usize>,
    /// This node's own folders (data_dir, watched folders): a new job whose payload names
    /// a file under one is bound to this node unless `shared_data_dir`.
    pub local_roots: Vec<std::path::PathBuf>,
}

impl PgOptions {
    pub fn new(node: &str) -> PgOptions {
        PgOptions {
            migrate: false,
            node: node.into(),
            shared_data_dir: false,
            local_path: None,
            queue_limits: BTreeMap::new(),
            local_roots: Vec::new(),
        }
    }
}

/// The options every store this process opens on PostgreSQL gets (the daemon sets its
/// node and limits at start; jobctl keeps the default).
static PROCESS_OPTIONS: std::sync::Mutex<Option<PgOptions>> = std::sync::Mutex::new(None);

/// Sets the options of the stores this process opens from now on.
pub fn configure_process(options: PgOptions) {
    *PROCESS_OPTIONS.lock().expect("process options") = Some(options);
}

/// The options for a store this process opens: what [`configure_process`] set, or a
/// node name for an operator's tool (`jobctl-HOST-PID`), which claims nothing.
pub fn process_options(migrate: bool) -> PgOptions {
    let configured = PROCESS_OPTIONS.lock().expect("process options").clone();
    let mut options = configured.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
            .take(40)
            .collect();
        PgOptions::new(&format!("jobctl-{host}-{}", std::process::id()))
    });
    options.migrate = migrate;
    options
}

/// A PostgreSQL queue database, through a small pool of connections.
pub struct PgStore {
    pool: r2d2::Pool<statements::CachingManager>,
    url: PostgresUrl,
    options: PgOptions,
    /// What [`crate::store::Store::path`] names: the files this node keeps beside the
    /// queue (its start journal) go by it.
    local_path: std::path::PathBuf,
    /// The LISTEN thread, started by the first [`PgStore::notice_token`] or
    /// [`PgStore::wake_on_notice`].
    listener: std::sync::OnceLock<Option<Listener>>,
    notices: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Called by the LISTEN thread at each notice (the dispatcher's wake-up).
    wake: std::sync::Arc<std::sync::RwLock<Option<crate::store::WakeHook>>>,
    opened: std::time::Instant,
    polls: std::sync::atomic::AtomicI64,
    /// Routes each job enqueued through this store ([`crate::store::Store::set_router`]).
    router: Option<std::sync::Arc<dyn crate::flow::Router>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({}, node {})", self.url, self.options.node)
    }
}

impl PgStore {
    /// Connects, checks (or with `migrate` brings up to date) the schema.
    pub fn open(url: &PostgresUrl, options: PgOptions) -> Result<PgStore> {
        let mut config = url.config();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("jobd {}", options.node));
        }
        let manager =
            statements::CachingManager(PostgresConnectionManager::new(config.clone(), NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT * 2)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        let local_path = options
            .local_path
            .clone()
            .unwrap_or_else(|| format!("jobd-postgres-{}", options.node).into());
        let store = PgStore {
            pool,
            url: url.clone(),
            options,
            local_path,
            listener: std::sync::OnceLock::new(),
            notices: Default::default(),
            wake: Default::default(),
            opened: std::time::Instant::now(),
            polls: Default::default(),
            router: None,
        };
        // One direct connection first: a server that is down or a database that does not
        // exist is reported in the server's words, at once.
        let mut client = config.connect(NoTls).map_err(|e| {
            StoreError::CannotOpen(
                std::path::PathBuf::from(store.url.to_string()),
                format!("cannot connect to PostgreSQL: {}", describe(&e)),
            )
        })?;
        if store.options.migrate {
            schema::migrate(&mut client)?;
        } else {
            schema::check_version(&mut client)?;
        }
        drop(client);
        Ok(store)
    }

    /// A connection from the pool; an unreachable server is named (its URL masked).
    pub fn connection(&self) -> Result<PgConnection> {
        self.pool.get().map_err(|e| {
            // r2d2 keeps the last connection error as text; the client's errors do not
            // quote the URL.
            StoreError::CannotOpen(
                std::path::PathBuf::from(self.url.to_string()),
                format!("cannot connect to PostgreSQL: {e}"),
            )
        })
    }

    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }

    pub fn node(&self) -> &str {
        &self.options.node
    }

    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// Every job enqueued through this store without a destination of its own gets the
    /// route `router` derives.
    pub fn set_router(&mut self, router: std::sync::Arc<dyn crate::flow::Router>) {
        self.router = Some(router);
    }

    /// Changes the queues whose limits hold across daemons (a reload).
    pub fn set_queue_limits(&mut self, limits: BTreeMap<String, usize>) {
        self.options.queue_limits = limits;
    }

    /// Runs `work` in one transaction (READ COMMITTED; claims lock their rows with
    /// `FOR UPDATE SKIP LOCKED`, limited queues by an advisory lock).
    pub fn write<T>(&self, work: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.connection()?;
        let statements::CachedClient { client, statements } = &mut *conn;
        let tx = client.transaction()?;
        let wrapped = PgTx::new(tx, statements, &self.options).routed_by(self.router.as_deref());
        let value = work(&wrapped)?;
        wrapped.commit()?;
        Ok(value)
    }

    /// Changes when a NOTIFY arrives, and every [`FALLBACK_POLL`] besides (the trigger's
    /// debounce and lost notices are covered by that look); while the LISTEN connection
    /// is down it changes at every call, so every poll of the dispatcher claims.
    pub fn notice_token(&self) -> i64 {
        use std::sync::atomic::Ordering;
        let up = self.listener().as_ref().is_some_and(|l| l.is_up());
        let slot = if up {
            (self.opened.elapsed().as_millis() / FALLBACK_POLL.as_millis()) as i64
        } else {
            self.polls.fetch_add(1, Ordering::Relaxed)
        };
        (self.notices.load(Ordering::Relaxed) << 32) ^ slot ^ if up { 0 } else { 1 << 62 }
    }

    /// Has `wake` called at every notice (and at the listener's follow-up look after
    /// the trigger's debounce window), from the LISTEN thread, which starts now.
    pub fn wake_on_notice(&self, wake: crate::store::WakeHook) {
        *self.wake.write().expect("wake hook") = Some(wake);
        self.listener();
    }

    /// The LISTEN thread, started on first use; None if it could not start (polling).
    fn listener(&self) -> &Option<Listener> {
        use std::sync::atomic::Ordering;
        self.listener.get_or_init(|| {
            let notices = self.notices.clone();
            let wake = self.wake.clone();
            Listener::spawn(&self.url, move |queue| {
                notices.fetch_add(1, Ordering::Relaxed);
                if let Some(wake) = wake.read().expect("wake hook").as_ref() {
                    wake(queue);
                }
            })
            .map_err(|e| tracing::warn!("cannot start the LISTEN thread: {e}; polling"))
            .ok()
        })
    }

    pub fn schema_version(&self) -> Result<i64> {
        schema::version(&mut self.connection()?.client)
    }
}
