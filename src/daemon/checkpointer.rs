//! The WAL's keeper: a thread with its own connection that copies the WAL back into the
//! database and keeps it bounded, so the dispatcher's commits never checkpoint inline.

use super::SharedConfig;
use crate::store::{CheckpointMode, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the WAL is looked at.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Below this the WAL is left to grow: copying back a few pages at a time costs more
/// fsyncs than it saves (SQLite's own auto-checkpoint starts at about 4 MiB).
const PASSIVE_THRESHOLD: u64 = 4 << 20;
/// The longest a forced (TRUNCATE) checkpoint waits for readers to leave the WAL. It
/// holds the write lock meanwhile, so it pauses the dispatcher's writes that long at
/// most, once per round, and only while the WAL is over `daemon.wal_limit`. (Waiting
/// longer does not catch a reader's pause more often: a new reader that starts before
/// the WAL is fully copied back pins it again; measured, 2 s waits cut throughput by a
/// third without bounding the WAL any better.)
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);
/// After a forced checkpoint, the dispatcher gets this long before the next one.
const AFTER_FORCED: Duration = Duration::from_secs(1);

pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the queue database.
    pub fn spawn(db: Box<dyn Store>, config: SharedConfig) -> std::io::Result<Checkpointer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("jobd-checkpointer".into())
            .spawn(move || {
                let mut keeper = WalKeeper {
                    db,
                    over_limit: false,
                };
                while !stopped.load(Ordering::SeqCst) {
                    let limit = config.read().expect("config lock").daemon.wal_limit;
                    let pause = keeper.round(limit);
                    park(&stopped, pause);
                }
            })?;
        Ok(Checkpointer { stop, thread })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

fn park(stopped: &AtomicBool, pause: Duration) {
    if !stopped.load(Ordering::SeqCst) {
        std::thread::park_timeout(pause);
    }
}

struct WalKeeper {
    db: Box<dyn Store>,
    /// The WAL was over its limit and a forced checkpoint could not cut it back yet.
    over_limit: bool,
}

impl WalKeeper {
    /// Keeps the WAL bounded. A PASSIVE checkpoint copies what it can but never waits,
    /// and the WAL only starts over once no reader still uses it, so overlapping long
    /// reads (jobctl list/stats/backup, sqlite3 sessions) would let it grow without
    /// bound. So: PASSIVE checkpoints while the WAL is small; once it passes
    /// `daemon.wal_limit`, a TRUNCATE checkpoint waits briefly for readers to leave and
    /// cuts the file to zero, tried again every second until it succeeds. Returns how
    /// long to pause before the next round.
    fn round(&mut self, limit: u64) -> Duration {
        // A driver without a WAL file has nothing to keep bounded here.
        let Some(file) = self.db.sqlite() else {
            return CHECKPOINT_INTERVAL;
        };
        let wal = file.wal_size();
        let (mode, wait) = if wal > limit {
            (CheckpointMode::Truncate, CHECKPOINT_WAIT)
        } else if wal > PASSIVE_THRESHOLD.min(limit / 2) {
            (CheckpointMode::Passive, Duration::ZERO)
        } else {
            return CHECKPOINT_INTERVAL;
        };
        match file.checkpoint(mode, wait) {
            Ok(done) if mode == CheckpointMode::Truncate && done.busy => {
                if !self.over_limit {
                    tracing::warn!(
                        "the WAL is {} MiB, over daemon.wal_limit ({} MiB), and a read transaction keeps it from being reset; trying again every second",
                        wal >> 20,
                        limit >> 20
                    );
                }
                self.over_limit = true;
            }
            Ok(_) if mode == CheckpointMode::Truncate => {
                if std::mem::take(&mut self.over_limit) {
                    tracing::info!("the WAL is cut back to empty (it was {} MiB)", wal >> 20);
                } else {
                    tracing::debug!("WAL of {wal} bytes checkpointed and truncated");
                }
            }
            Ok(_) => {}
            // A full disk also fails checkpoints; the write path reports that.
            Err(e) => tracing::debug!("checkpoint ({mode:?}) failed: {e}"),
        }
        if mode == CheckpointMode::Truncate {
            AFTER_FORCED
        } else {
            CHECKPOINT_INTERVAL
        }
    }
}
