//! A daemon among several on one PostgreSQL database: it holds its node name by a lease
//! (refused while another live daemon holds the same name), renews it, and takes part in
//! the leader election. [`is_leader`] says whether this process runs what must run once
//! across all daemons (pipeline schedules, retention purges). On SQLite the daemon holding
//! the file lock is the only one, so it always leads.

use crate::clock::SharedClock;
use crate::dburl::PostgresUrl;
use crate::store::postgres::{NodeLease, PgOptions, PgStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a node's name is held without renewal.
pub const NODE_LEASE: Duration = Duration::from_secs(15);

static LEADER: AtomicBool = AtomicBool::new(true);
/// This process runs among several daemons (a [`NodeHold`] is live).
static CLUSTERED: AtomicBool = AtomicBool::new(false);
/// The daemon is stopping: it gives leadership up at once and no longer stands.
static STEPPING_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether this process leads: always on SQLite; on PostgreSQL while it holds the
/// leader lease.
pub fn is_leader() -> bool {
    !CLUSTERED.load(Ordering::SeqCst) || LEADER.load(Ordering::Relaxed)
}

/// The daemon is stopping: on PostgreSQL it stops leading now and its cluster thread
/// deletes the lease row at its next look, so another node takes the schedules over
/// at its next election instead of after this one's drain and lease. No-op on SQLite.
pub fn step_down() {
    if CLUSTERED.load(Ordering::SeqCst) {
        STEPPING_DOWN.store(true, Ordering::SeqCst);
        LEADER.store(false, Ordering::SeqCst);
    }
}

/// This daemon's hold on its node name and its part in the election, for as long as it
/// runs. Dropping it resigns leadership and gives the name back.
pub struct NodeHold {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    store: Arc<PgStore>,
    lease: NodeLease,
}

impl std::fmt::Debug for NodeHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHold({})", self.lease.node)
    }
}

impl NodeHold {
    /// Takes the node name (refused while another daemon holds it) and starts renewing
    /// it and standing for leader every third of `leader_ttl`.
    pub fn acquire(
        url: &PostgresUrl,
        options: PgOptions,
        leader_ttl: Duration,
        clock: SharedClock,
    ) -> Result<NodeHold, String> {
        let node = options.node.clone();
        let store = Arc::new(
            PgStore::open(
                url,
                PgOptions {
                    migrate: true,
                    ..options
                },
            )
            .map_err(|e| format!("{url}: {e}"))?,
        );
        let lease = store
            .register_node(NODE_LEASE, clock.now_ms())
            .map_err(|e| e.to_string())?;
        LEADER.store(false, Ordering::Relaxed);
        STEPPING_DOWN.store(false, Ordering::SeqCst);
        CLUSTERED.store(true, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_store, thread_stop, held) = (store.clone(), stop.clone(), lease.clone());
        let tick = (leader_ttl / 3)
            .min(NODE_LEASE / 3)
            .max(Duration::from_millis(100));
        let thread = std::thread::Builder::new()
            .name("jobd-cluster".into())
            .spawn(move || {
                let mut held = held;
                let mut leading = false;
                let mut resigned = false;
                while !thread_stop.load(Ordering::Relaxed) {
                    let now = clock.now_ms();
                    match thread_store.renew_node(&held, NODE_LEASE, now) {
                        Ok(renewed) => held = renewed,
                        Err(e) => tracing::error!(node = %node, "{e}"),
                    }
                    if STEPPING_DOWN.load(Ordering::SeqCst) {
                        // Stopping: the lease row goes now (the node's name stays held
                        // while the drain finishes its jobs).
                        if !resigned {
                            match thread_store.resign() {
                                Ok(true) => tracing::info!(node = %node, "stopping: leadership given up"),
                                Ok(false) => {}
                                Err(e) => tracing::warn!(node = %node, "cannot resign leadership: {e}"),
                            }
                            resigned = true;
                        }
                        LEADER.store(false, Ordering::SeqCst);
                    } else {
                    match thread_store.elect(leader_ttl, now) {
                        Ok(leadership) => {
                            if leadership.mine != leading {
                                if leadership.mine {
                                    tracing::info!(node = %node, "this node leads now (schedules, purges)");
                                } else {
                                    tracing::info!(node = %node, leader = %leadership.holder, "another node leads now");
                                }
                                leading = leadership.mine;
                            }
                        }
                        Err(e) => {
                            // Unsure: stop leading until an election says so again.
                            tracing::warn!(node = %node, "leader election failed: {e}");
                            leading = false;
                        }
                    }
                    LEADER.store(leading, Ordering::Relaxed);
                    }
                    let mut slept = Duration::ZERO;
                    while slept < tick
                        && !thread_stop.load(Ordering::Relaxed)
                        && (resigned || !STEPPING_DOWN.load(Ordering::SeqCst))
                    {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
            })
            .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
        Ok(NodeHold {
            stop,
            thread: Some(thread),
            store,
            lease,
        })
    }

    pub fn node(&self) -> &str {
        &self.lease.node
    }
}

impl Drop for NodeHold {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        LEADER.store(false, Ordering::Relaxed);
        if let Err(e) = self.store.resign() {
            tracing::warn!("cannot resign leadership: {e}");
        }
        if let Err(e) = self.store.release_node(&self.lease) {
            tracing::warn!("cannot give the node name back: {e}");
        }
        CLUSTERED.store(false, Ordering::SeqCst);
    }
}

/// What makes this daemon the one it says it is: the SQLite file lock (one daemon per
/// file), or on PostgreSQL its node name held by lease (several daemons, one name each).
#[derive(Debug)]
pub enum DaemonLock {
    File(super::lock::DatabaseLock),
    Node(NodeHold),
}

impl From<super::lock::DatabaseLock> for DaemonLock {
    fn from(lock: super::lock::DatabaseLock) -> Self {
        DaemonLock::File(lock)
    }
}

impl DaemonLock {
    /// The file lock for SQLite. For PostgreSQL: sets the options every store of this
    /// process gets (node, limits across daemons, the folders whose files bind jobs to
    /// this node), migrates, and takes the node name.
    pub fn acquire(
        config: &crate::config::Config,
        clock: SharedClock,
    ) -> Result<DaemonLock, String> {
        let url = match config.daemon.database_target()? {
            crate::dburl::DatabaseTarget::Sqlite(path) => {
                return super::lock::DatabaseLock::acquire(&path)
                    .map(DaemonLock::File)
                    .map_err(|e| e.to_string())
            }
            crate::dburl::DatabaseTarget::Postgres(url) => url,
        };
        let options = postgres_options(config);
        crate::store::postgres::configure_process(options.clone());
        NodeHold::acquire(&url, options, config.daemon.leader_lease, clock).map(DaemonLock::Node)
    }
}

/// The PostgreSQL options of this daemon's stores, from its configuration.
pub fn postgres_options(config: &crate::config::Config) -> PgOptions {
    let d = &config.daemon;
    let node = d.node_name();
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut local_roots = vec![absolute(&d.data_dir)];
    local_roots.extend(config.watch.iter().map(|w| absolute(&w.path)));
    PgOptions {
        migrate: false,
        local_path: Some(d.data_dir.join(format!("jobd-node-{node}"))),
        shared_data_dir: d.shared_data_dir,
        queue_limits: config
            .queues
            .iter()
            .map(|(name, queue)| (name.clone(), queue.concurrency))
            .collect(),
        local_roots,
        node,
    }
}
