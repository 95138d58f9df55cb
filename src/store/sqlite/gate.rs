//! The turn to write, shared by this process's connections to one database file.
//!
//! SQLite's busy handler waits for the write lock by sleeping 1, 2, 5, 10, 15 ms and so
//! on between tries, so a write that finds the lock taken for 2 ms waits 3 ms and one
//! that finds it taken for 4 ms waits 8. Within the daemon the writers are its own
//! threads (the dispatcher, the checkpointer's RESTART and TRUNCATE), so they queue on
//! a mutex first and each is woken the moment the one before is done. The lock itself
//! is still SQLite's: the gate only orders this process's writers, other processes
//! (jobctl, sqlite3) still meet the busy handler, and a turn not had within the busy
//! timeout goes on to SQLite's lock, which then decides.

use parking_lot::{Mutex, MutexGuard};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// One database file's turn to write.
pub struct WriteGate {
    turn: Mutex<()>,
}

/// The gates of the files open in this process, by canonical path.
fn gates() -> &'static std::sync::Mutex<HashMap<PathBuf, Weak<WriteGate>>> {
    static GATES: OnceLock<std::sync::Mutex<HashMap<PathBuf, Weak<WriteGate>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

thread_local! {
    /// The gates this thread holds a turn of: a second connection to the same file on
    /// the same thread (a test holding one write while trying another) must not wait
    /// for itself.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl WriteGate {
    /// The gate of the database at `path`, shared with every connection of this process
    /// to the same file.
    pub fn for_file(path: &Path) -> Arc<WriteGate> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut gates = gates().lock().expect("gates lock");
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Arc::new(WriteGate {
            turn: Mutex::new(()),
        });
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }

    fn id(&self) -> usize {
        self as *const WriteGate as usize
    }

    /// Waits at most `wait` for this process's turn to write. `None` when this thread
    /// already has it or the wait ran out: the write then goes straight to SQLite's lock.
    pub fn enter(&self, wait: Duration) -> Option<Turn<'_>> {
        if HELD.with(|held| held.borrow().contains(&self.id())) {
            return None;
        }
        let guard = self.turn.try_lock_for(wait)?;
        HELD.with(|held| held.borrow_mut().push(self.id()));
        Some(Turn {
            gate: self,
            _guard: guard,
        })
    }
}

/// A turn to write, given back when dropped.
pub struct Turn<'a> {
    gate: &'a WriteGate,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let id = self.gate.id();
        HELD.with(|held| held.borrow_mut().retain(|&h| h != id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_to_one_file_share_a_gate_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        let first = WriteGate::for_file(&a);
        let again = WriteGate::for_file(&dir.path().join(".").join("a.db"));
        assert!(Arc::ptr_eq(&first, &again));
        assert!(!Arc::ptr_eq(&first, &WriteGate::for_file(&b)));
    }

    #[test]
    fn a_thread_holding_the_turn_is_not_made_to_wait_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let gate = WriteGate::for_file(&dir.path().join("q.db"));
        let turn = gate.enter(Duration::from_secs(5)).expect("free");
        assert!(gate.enter(Duration::from_secs(5)).is_none());
        drop(turn);
        assert!(gate.enter(Duration::ZERO).is_some());
    }

    #[test]
    fn another_thread_waits_for_the_turn_and_gets_it_when_it_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let gate = WriteGate::for_file(&dir.path().join("q.db"));
        let turn = gate.enter(Duration::ZERO).expect("free");
        let (tried, tried_rx) = std::sync::mpsc::channel();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                // Taken by the other thread and not given back within the wait: no turn.
                tried.send(gate.enter(Duration::ZERO).is_none()).unwrap();
                gate.enter(Duration::from_secs(60)).is_some()
            })
        };
        assert!(
            tried_rx.recv().unwrap(),
            "had the turn while another held it"
        );
        drop(turn);
        assert!(
            waiter.join().unwrap(),
            "never had the turn once it was free"
        );
    }
}
