//! The WAL's keeper: a thread with its own connection that copies the WAL back into the
//! database and keeps it bounded, so the dispatcher's commits never checkpoint inline.

use super::SharedConfig;
use crate::store::{Checkpoint, CheckpointMode, SqliteFile, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the WAL is looked at.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Below this the WAL is left to grow: copying back a few pages at a time costs more
/// fsyncs than it saves (SQLite's own auto-checkpoint starts at about 4 MiB).
const PASSIVE_THRESHOLD: u64 = 4 << 20;
/// Once this much of the WAL is in use, a RESTART checkpoint lets the next commit start
/// writing it from the beginning again. PASSIVE checkpoints alone never get there under
/// a steady load: the WAL starts over only when every frame is copied back, and the
/// dispatcher commits new ones while a PASSIVE round copies. Without it the WAL grew to
/// `daemon.wal_limit` every few seconds at 1,000 jobs/s, and the TRUNCATE that cut it
/// back held the write lock for 100-190 ms (a 64 MiB ftruncate on a disk mounted with
/// `discard`); the RESTART right after a PASSIVE round copies only what was committed
/// during that round, so it holds the lock for a few milliseconds about once a second.
const RESTART_THRESHOLD: u64 = 16 << 20;
/// PASSIVE rounds at most before a RESTART, to shrink what it copies under the lock.
const CATCH_UP_ROUNDS: usize = 3;
/// Few enough frames committed during a PASSIVE round that the RESTART may copy them.
const SMALL_TAIL_FRAMES: i64 = 32;
/// The longest a RESTART waits for readers to move to the newest snapshot; new writes
/// wait meanwhile, so it gives up soon and tries again next round.
const RESTART_WAIT: Duration = Duration::from_millis(10);
/// The longest a forced (TRUNCATE) checkpoint waits for readers to leave the WAL. It
/// holds the write lock meanwhile, so it pauses the dispatcher's writes that long at
/// most, once per round, and only while the WAL is over `daemon.wal_limit`. (Waiting
/// longer does not catch a reader's pause more often: a new reader that starts before
/// the WAL is fully copied back pins it again; measured, 2 s waits cut throughput by a
/// third without bounding the WAL any better.)
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);
/// After a forced checkpoint, the dispatcher gets this long before the next one.
const AFTER_FORCED: Duration = Duration::from_secs(1);

/// The checkpoint a round starts with, given the WAL file's size and `daemon.wal_limit`.
fn first_checkpoint(wal_file: u64, limit: u64) -> Option<CheckpointMode> {
    if wal_file > limit {
        Some(CheckpointMode::Truncate)
    } else if wal_file > PASSIVE_THRESHOLD.min(limit / 2) {
        Some(CheckpointMode::Passive)
    } else {
        None
    }
}

/// Whether a PASSIVE round that left `passive` behind is followed by a RESTART: the WAL
/// file keeps its size when it starts over, so the frames in use say how full it is.
fn restart_after(passive: &Checkpoint, frame_size: u64, limit: u64) -> bool {
    let in_use = passive.log_frames.max(0) as u64 * frame_size;
    !passive.busy && in_use >= RESTART_THRESHOLD.min(limit / 2)
}

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
                    frame_size: None,
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
    /// Bytes per WAL frame, asked once.
    frame_size: Option<u64>,
}

/// A 4 KiB page and its frame header, if the page size cannot be read.
const DEFAULT_FRAME_SIZE: u64 = 4096 + 24;

impl WalKeeper {
    /// Keeps the WAL bounded. A PASSIVE checkpoint copies what it can but never waits,
    /// and the WAL only starts over once no reader still uses it, so overlapping long
    /// reads (jobctl list/stats/backup, sqlite3 sessions) would let it grow without
    /// bound. So: PASSIVE checkpoints while the WAL is small, each followed by a short
    /// RESTART once much of it is in use; once the file passes `daemon.wal_limit`, a
    /// TRUNCATE checkpoint waits briefly for readers to leave and cuts the file to zero,
    /// tried again every second until it succeeds. Returns how long to pause before the
    /// next round.
    fn round(&mut self, limit: u64) -> Duration {
        // A driver without a WAL file has nothing to keep bounded here.
        let Some(file) = self.db.sqlite() else {
            return CHECKPOINT_INTERVAL;
        };
        let wal = file.wal_size();
        let Some(mode) = first_checkpoint(wal, limit) else {
            return CHECKPOINT_INTERVAL;
        };
        if mode == CheckpointMode::Passive {
            match file.checkpoint(mode, Duration::ZERO) {
                Ok(passive) => {
                    let frame = *self
                        .frame_size
                        .get_or_insert_with(|| file.wal_frame_size().unwrap_or(DEFAULT_FRAME_SIZE));
                    if restart_after(&passive, frame, limit) {
                        restart(file, passive);
                    }
                }
                // A full disk also fails checkpoints; the write path reports that.
                Err(e) => tracing::debug!("checkpoint ({mode:?}) failed: {e}"),
            }
            return CHECKPOINT_INTERVAL;
        }
        truncate(&mut self.over_limit, file, wal, limit);
        AFTER_FORCED
    }
}

/// Lets the WAL start over. The RESTART holds back new writes while it copies, so
/// PASSIVE rounds first catch up with what was committed during the last one, until
/// little is left (each round copies what the one before saw committed meanwhile).
fn restart(file: &dyn SqliteFile, mut last: Checkpoint) {
    for _ in 0..CATCH_UP_ROUNDS {
        match file.checkpoint(CheckpointMode::Passive, Duration::ZERO) {
            Ok(caught_up) => {
                let committed_meanwhile = caught_up.log_frames - last.log_frames;
                last = caught_up;
                if last.busy || committed_meanwhile <= SMALL_TAIL_FRAMES {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!("checkpoint (Passive) failed: {e}");
                return;
            }
        }
    }
    match file.checkpoint(CheckpointMode::Restart, RESTART_WAIT) {
        Ok(done) if !done.busy => tracing::debug!(
            "the WAL starts over: all {} frames are copied back",
            done.checkpointed_frames
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!("checkpoint (Restart) failed: {e}"),
    }
}

/// Cuts the WAL back to empty if no reader is in the way.
fn truncate(over_limit: &mut bool, file: &dyn SqliteFile, wal: u64, limit: u64) {
    match file.checkpoint(CheckpointMode::Truncate, CHECKPOINT_WAIT) {
        Ok(done) if done.busy => {
            if !*over_limit {
                tracing::warn!(
                    "the WAL is {} MiB, over daemon.wal_limit ({} MiB), and a read transaction keeps it from being reset; trying again every second",
                    wal >> 20,
                    limit >> 20
                );
            }
            *over_limit = true;
        }
        Ok(_) => {
            if std::mem::take(over_limit) {
                tracing::info!("the WAL is cut back to empty (it was {} MiB)", wal >> 20);
            } else {
                tracing::debug!("WAL of {wal} bytes checkpointed and truncated");
            }
        }
        Err(e) => tracing::debug!("checkpoint (Truncate) failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_small_wal_is_left_alone_a_larger_one_copied_back_and_one_over_the_limit_cut() {
        let limit = 64 * MIB;
        assert_eq!(first_checkpoint(0, limit), None);
        assert_eq!(first_checkpoint(4 * MIB, limit), None);
        assert_eq!(
            first_checkpoint(4 * MIB + 1, limit),
            Some(CheckpointMode::Passive)
        );
        assert_eq!(
            first_checkpoint(limit, limit),
            Some(CheckpointMode::Passive)
        );
        assert_eq!(
            first_checkpoint(limit + 1, limit),
            Some(CheckpointMode::Truncate)
        );
        // A small limit copies back from half of it.
        assert_eq!(
            first_checkpoint(MIB + 1, 2 * MIB),
            Some(CheckpointMode::Passive)
        );
    }

    #[test]
    fn the_wal_starts_over_once_16_mib_of_it_are_in_use_and_a_passive_round_was_not_blocked() {
        let frame = 4096 + 24;
        let passive = |frames: u64, busy: bool| Checkpoint {
            busy,
            log_frames: frames as i64,
            checkpointed_frames: frames as i64,
        };
        let limit = 64 * MIB;
        let at_16_mib = (16 * MIB).div_ceil(frame);
        assert!(!restart_after(&passive(at_16_mib - 1, false), frame, limit));
        assert!(restart_after(&passive(at_16_mib, false), frame, limit));
        assert!(!restart_after(&passive(at_16_mib, true), frame, limit));
        // Not a WAL database: nothing to restart.
        let none = Checkpoint {
            busy: false,
            log_frames: -1,
            checkpointed_frames: -1,
        };
        assert!(!restart_after(&none, frame, limit));
        // A small limit restarts at half of it.
        assert!(restart_after(
            &passive(MIB.div_ceil(frame), false),
            frame,
            2 * MIB
        ));
    }
}
