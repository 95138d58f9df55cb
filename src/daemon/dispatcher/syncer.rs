//! The commit syncer. At `synchronous = "full"` the dispatcher's commits do not wait for
//! the disk; what a commit lets the daemon say (enqueue acknowledgements, the answers to
//! work run inside the turn) waits here until an `fdatasync` of the WAL that began after
//! the commit has returned. One sync covers every commit handed over while the previous
//! one ran, so the dispatcher writes the next turn while the disk takes the last:
//! group commit across turns, not only within one.
//!
//! The dispatcher syncs a commit itself when the syncer is idle and no command waits (one
//! client alone gains nothing from a hand-over and would pay a thread's wake-up). Answers
//! keep their order: a commit is synced on the dispatcher only when nothing handed over
//! is still unanswered.
//!
//! A sync that fails stops the daemon: after a failed `fsync` Linux may mark the unwritten
//! pages clean, so no later sync could be trusted. Every answer waiting on it says the
//! work may not have been kept.

use super::turn::AfterTask;
use crate::daemon::{ClientError, EnqueueReply, Flush, ReplyTo};
use crate::store::WalSync;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a commit (or a write that failed) lets the daemon say, in the order to say it.
#[derive(Default)]
pub(crate) struct AfterCommit {
    pub answers: Vec<(ReplyTo, EnqueueReply)>,
    pub tasks: Vec<(AfterTask, Result<(), ClientError>)>,
}

impl AfterCommit {
    /// Whether any answer goes to a socket client on the thread that delivers it.
    pub fn answers_directly(&self) -> bool {
        self.answers
            .iter()
            .any(|(reply, _)| matches!(reply, ReplyTo::Direct(_)))
    }

    /// Says it all: the answers, each socket client's buffered ones flushed once, then
    /// the tasks' outcomes.
    pub fn deliver(self) {
        let mut flushes: Vec<Arc<dyn Flush>> = Vec::new();
        for (reply, result) in self.answers {
            answer(reply, result, &mut flushes);
        }
        flushes.iter().for_each(|f| f.flush());
        for (done, result) in self.tasks {
            done(result);
        }
    }

    /// Says that what was committed may not be durable: every success becomes an error
    /// naming `why` (the errors stay as they were).
    fn deliver_failed(self, why: &str) {
        let lost = format!("{why}; it may or may not have been kept");
        AfterCommit {
            answers: self
                .answers
                .into_iter()
                .map(|(reply, result)| {
                    (
                        reply,
                        result.and(Err(ClientError::NotEnqueued(lost.clone()))),
                    )
                })
                .collect(),
            tasks: self
                .tasks
                .into_iter()
                .map(|(done, result)| {
                    (done, result.and(Err(ClientError::NotWritten(lost.clone()))))
                })
                .collect(),
        }
        .deliver()
    }
}

/// Sends an enqueue's answer; a direct answer's flush is noted once per run of answers
/// to the same asker, to be called when all of them are in.
pub(crate) fn answer(reply: ReplyTo, result: EnqueueReply, flushes: &mut Vec<Arc<dyn Flush>>) {
    match reply {
        ReplyTo::Channel(reply) => {
            let _ = reply.send(result);
        }
        ReplyTo::Direct(reply) => {
            if let Some(flush) = reply.answer(result) {
                if !flushes.last().is_some_and(|last| Arc::ptr_eq(last, &flush)) {
                    flushes.push(flush);
                }
            }
        }
    }
}

/// What the dispatcher and the syncer thread share.
struct Shared {
    wal: WalSync,
    /// Commits handed over and not yet answered.
    unanswered: AtomicUsize,
    /// Syncs that returned `Ok`, for the metrics.
    syncs: AtomicU64,
    /// The first failed sync, in words: from then on nothing is said durable.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn new(wal: WalSync) -> Shared {
        Shared {
            wal,
            unanswered: AtomicUsize::new(0),
            syncs: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One sync for everything in `batch`, then each one said, in order: the syncer's
    /// turn, and the dispatcher's when it syncs a commit itself.
    fn run_once(&self, batch: Vec<AfterCommit>) {
        let outcome = self.sync();
        for after in batch {
            match &outcome {
                Ok(()) => after.deliver(),
                Err(why) => after.deliver_failed(why),
            }
        }
    }

    fn sync(&self) -> Result<(), String> {
        let outcome = match self.failure() {
            Some(earlier) => Err(earlier),
            None => self.wal.sync().map_err(|e| {
                let why = format!(
                    "cannot make the commit durable: fdatasync of {} failed: {e}",
                    self.wal.path().display()
                );
                tracing::error!(
                    "{why}; jobd stops, as nothing it writes can be said durable any more"
                );
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                why
            }),
        };
        if outcome.is_ok() {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

/// The syncer thread and the dispatcher's side of it.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    handover: Option<Sender<AfterCommit>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn spawn(wal: WalSync) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared::new(wal));
        let (handover, taken) = crossbeam_channel::unbounded();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("jobd-syncer".into())
            .spawn(move || sync_loop(&thread_shared, &taken))?;
        Ok(Syncer {
            shared,
            handover: Some(handover),
            thread: Some(thread),
        })
    }

    /// Whether everything handed over has been answered: a commit synced on the
    /// dispatcher now cannot overtake one.
    pub fn idle(&self) -> bool {
        self.shared.unanswered.load(Ordering::Acquire) == 0
    }

    /// Syncs on the calling thread and says what `after` holds. Only when [`Self::idle`].
    pub fn sync_here(&self, after: AfterCommit) {
        self.shared.run_once(vec![after]);
    }

    /// Gives `after` to the syncer thread; it is said after the thread's next sync.
    pub fn hand_over(&self, after: AfterCommit) {
        self.shared.unanswered.fetch_add(1, Ordering::AcqRel);
        let sender = self
            .handover
            .as_ref()
            .expect("the syncer runs until finished");
        if let Err(back) = sender.send(after) {
            // The thread is gone (it panicked): sync here rather than lose the answers.
            self.shared.unanswered.fetch_sub(1, Ordering::AcqRel);
            self.shared.run_once(vec![back.into_inner()]);
        }
    }

    /// The failed sync that must stop the daemon, in words.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Syncs that returned `Ok` so far.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Waits for everything handed over to be said, then syncs once more for commits
    /// that were never handed over (a drain's releases): the daemon's last word.
    pub fn finish(&mut self) -> Result<(), String> {
        self.stop_thread();
        self.shared.run_once(Vec::new());
        self.failure().map_or(Ok(()), Err)
    }

    fn stop_thread(&mut self) {
        self.handover = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Answers already handed over still go out, after their sync.
        self.stop_thread();
    }
}

/// The syncer thread: takes every commit waiting, syncs once, says them all.
fn sync_loop(shared: &Shared, taken: &Receiver<AfterCommit>) {
    while let Ok(first) = taken.recv() {
        let mut batch = vec![first];
        batch.extend(taken.try_iter());
        let count = batch.len();
        shared.run_once(batch);
        shared.unanswered.fetch_sub(count, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Enqueued;

    fn wal_of(dir: &std::path::Path) -> WalSync {
        let path = dir.join("jobs.db-wal");
        std::fs::write(&path, b"frames").unwrap();
        WalSync::on_file(&path, std::fs::File::open(&path).unwrap())
    }

    fn enqueue_answer(id: i64) -> (ReplyTo, EnqueueReply, Receiver<EnqueueReply>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let result = Ok(vec![Enqueued {
            id,
            duplicate: false,
        }]);
        (ReplyTo::Channel(tx), result, rx)
    }

    fn shared(wal: WalSync) -> Shared {
        Shared::new(wal)
    }

    #[test]
    fn one_sync_answers_every_commit_waiting_for_it_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(wal_of(dir.path()));
        let (order_tx, order_rx) = crossbeam_channel::unbounded();
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for id in 1..=3 {
            let (reply, result, rx) = enqueue_answer(id);
            let order_tx = order_tx.clone();
            let task: AfterTask = Box::new(move |result| order_tx.send((id, result)).unwrap());
            batch.push(AfterCommit {
                answers: vec![(reply, result)],
                tasks: vec![(task, Ok(()))],
            });
            answers.push(rx);
        }
        shared.run_once(batch);
        assert_eq!(shared.syncs.load(Ordering::Relaxed), 1);
        for (id, rx) in (1..=3).zip(answers) {
            assert_eq!(rx.try_recv().unwrap().unwrap()[0].id, id);
        }
        let told: Vec<i64> = order_rx
            .try_iter()
            .map(|(id, r)| {
                assert_eq!(r, Ok(()));
                id
            })
            .collect();
        assert_eq!(told, [1, 2, 3]);
    }

    #[test]
    fn a_failed_sync_turns_every_waiting_success_into_an_error_and_stays_failed() {
        let dir = tempfile::tempdir().unwrap();
        // fdatasync(2) of a pipe fails with EINVAL: a real failing sync.
        let (reader, _writer) = std::io::pipe().unwrap();
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        let path = dir.path().join("jobs.db-wal");
        let shared = shared(WalSync::on_file(&path, file));
        let (reply, result, rx) = enqueue_answer(7);
        let refused = Err(ClientError::Refused("unknown kind".into()));
        let (other, _, other_rx) = enqueue_answer(8);
        shared.run_once(vec![AfterCommit {
            answers: vec![(reply, result), (other, refused.clone())],
            tasks: Vec::new(),
        }]);
        let said = rx.try_recv().unwrap().unwrap_err().to_string();
        assert!(
            said.contains("fdatasync of") && said.contains("jobs.db-wal"),
            "{said}"
        );
        assert!(said.contains("may or may not have been kept"), "{said}");
        assert_eq!(
            other_rx.try_recv().unwrap(),
            refused,
            "an error stays the error it was"
        );
        assert_eq!(shared.syncs.load(Ordering::Relaxed), 0);
        // The next commit's file might sync: it is still not said durable.
        let (reply, result, rx) = enqueue_answer(9);
        shared.run_once(vec![AfterCommit {
            answers: vec![(reply, result)],
            tasks: Vec::new(),
        }]);
        assert!(rx.try_recv().unwrap().is_err());
        assert!(shared.failure().unwrap().contains("fdatasync"));
    }

    #[test]
    fn the_syncer_thread_answers_what_it_is_handed_and_finish_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut syncer = Syncer::spawn(wal_of(dir.path())).unwrap();
        let mut answers = Vec::new();
        for id in 1..=50 {
            let (reply, result, rx) = enqueue_answer(id);
            syncer.hand_over(AfterCommit {
                answers: vec![(reply, result)],
                tasks: Vec::new(),
            });
            answers.push(rx);
        }
        syncer.finish().unwrap();
        assert!(syncer.idle());
        for (id, rx) in (1..=50).zip(answers) {
            assert_eq!(rx.try_recv().unwrap().unwrap()[0].id, id);
        }
        let syncs = syncer.syncs();
        // At least one for the hand-overs and the last one of finish, at most one each.
        assert!((2..=51).contains(&syncs), "{syncs} syncs");
    }
}
