//! Ingest: the two ways work arrives from other programs. Watched folders (`watch.rs`)
//! take files through the crash-safe spool (`spool.rs`); the enqueue socket (`socket.rs`,
//! wire format in `protocol.rs`) takes JSON lines. Both go through the dispatcher, so
//! what they acknowledge is committed.

pub mod protocol;
pub mod report;
pub mod socket;
pub mod spool;
pub mod watch;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::daemon::{DaemonClient, JobHooks};
use crate::job::{Job, JobState};
use crate::store::OpenOptions;
use spool::Spool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Moves a watched file's input on when its job finishes: to `done/YYYYMMDD/` on success,
/// to `failed/YYYYMMDD/` beside `<name>.error.json` when dead.
pub struct SpoolHooks {
    spool: Spool,
}

impl SpoolHooks {
    pub fn new(spool: Spool) -> SpoolHooks {
        SpoolHooks { spool }
    }
}

impl JobHooks for SpoolHooks {
    fn after_commit(&self, job: &Job, state: JobState, error: Option<&str>, _config: &Config) {
        // Only jobs the watcher made own a spool directory; skip the stat for the rest.
        if !job
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("watch:"))
        {
            return;
        }
        let moved = match state {
            JobState::Succeeded => self.spool.move_done(job.id),
            JobState::Dead => self.spool.move_failed(job.id, Some((job, error))),
            _ => return,
        };
        match moved {
            Ok(Some(to)) => tracing::debug!(
                job = job.id,
                "moved job {}'s input to {}",
                job.id,
                to.display()
            ),
            Ok(None) => {}
            Err(e) => tracing::error!(
                job = job.id,
                "cannot move job {}'s input out of the spool: {e}; it is moved at the next start",
                job.id
            ),
        }
    }
}

/// What must exist before the daemon starts: watched folders and the socket.
pub struct Prepared {
    folders: Vec<PathBuf>,
    listener: Option<socket::Listener>,
}

/// Creates missing watched folders (or refuses, naming the key) and binds the socket.
pub fn prepare(config: &Config) -> Result<Prepared, String> {
    let folders = config
        .watch
        .iter()
        .enumerate()
        .map(|(i, watch)| watch::prepare_folder(&format!("watch[{i}]"), watch))
        .collect::<Result<Vec<_>, _>>()?;
    let listener = if config.socket.enabled {
        Some(socket::Listener::open(
            &config.daemon.socket,
            &config.socket,
        )?)
    } else {
        None
    };
    Ok(Prepared { folders, listener })
}

/// The running watchers and socket.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    /// Removed on stop, so the next start finds no stale file.
    socket_path: Option<PathBuf>,
    threads: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Recovers what a crash left in the spool, then starts the watchers and the socket.
    pub fn start(
        prepared: Prepared,
        config: &Config,
        client: DaemonClient,
        clock: SharedClock,
        spool: Spool,
    ) -> Result<Ingest, String> {
        let db = crate::store::open(&config.daemon.database, &OpenOptions::default())
            .map_err(|e| format!("ingest: {e}"))?;
        let recovered = spool.recover(db.as_ref(), &client);
        if recovered > 0 {
            tracing::warn!("ingest: took in {recovered} input(s) a previous run had staged");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let report = report::WatchReport::open(spool.root());
        for (i, (watch, root)) in config.watch.iter().zip(prepared.folders).enumerate() {
            threads.push(watch::spawn(
                format!("watch[{i}]"),
                watch.clone(),
                root,
                client.clone(),
                clock.clone(),
                spool.clone(),
                db.as_ref(),
                stop.clone(),
                report.clone(),
            )?);
        }
        let mut socket_path = None;
        if let Some(listener) = prepared.listener {
            socket_path = listener.bound_path().map(PathBuf::from);
            threads.push(socket::serve(
                listener,
                config,
                client,
                clock,
                stop.clone(),
            )?);
        }
        Ok(Ingest {
            stop,
            socket_path,
            threads,
        })
    }

    /// Asks the watchers to stop (the socket stops with the process).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
        for thread in self.threads {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
