//! The dispatcher's dealings with the rest of the daemon that are not a turn's write:
//! configuration reloads, start-up recovery of jobs left running, and the signs of life
//! (watchdog pings, `STATUS=` lines, metrics snapshots) sent from its loop, so a hung
//! dispatcher stops them.

use super::Dispatcher;
use crate::clock::Moment;
use crate::daemon::journal::{Start, StartJournal};
use crate::job::JobState;
use crate::metrics::DaemonSnapshot;
use crate::store::{HeldClaim, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub(super) fn reload(&mut self) {
        self.outlets.notifier.reloading();
        // Checked as at start: an unreadable secret or a watch its kind would refuse
        // refuses the reload.
        match self.settings.source.load() {
            Ok(new) => {
                let old = self.config();
                // Fixed when the daemon opened its database and started its threads.
                let at_next_start: Vec<&str> = [
                    ("daemon.workers", new.daemon.workers != old.daemon.workers),
                    (
                        "daemon.database",
                        new.daemon.database != old.daemon.database,
                    ),
                    (
                        "daemon.synchronous",
                        new.daemon.synchronous != old.daemon.synchronous,
                    ),
                ]
                .into_iter()
                .filter_map(|(key, changed)| changed.then_some(key))
                .collect();
                if !at_next_start.is_empty() {
                    tracing::warn!(
                        "reload: {} changed and take(s) effect at the next start",
                        at_next_start.join(", ")
                    );
                }
                let new = Arc::new(new);
                *self.settings.shared.write().expect("config lock") = new.clone();
                self.settings.config = new;
                self.claims.look_for_work = true;
                tracing::info!(
                    "reloaded the configuration from {}",
                    self.settings.source.describe()
                );
            }
            Err(e) => tracing::error!("reload refused, the old configuration keeps running: {e}"),
        }
        self.outlets.notifier.ready("reloaded");
    }

    /// Watchdog pings and STATUS= lines: sent from this loop, so a hung dispatcher
    /// stops them and systemd restarts it.
    pub(super) fn housekeeping(&mut self, at: Moment) {
        self.publish_metrics(at);
        let notifier = &self.outlets.notifier;
        if let (Some(next), Some(interval)) = (self.timers.watchdog, notifier.watchdog_interval()) {
            if at >= next {
                notifier.watchdog();
                self.timers.watchdog = Some(at + interval);
            }
        }
        if let Some(status) = &self.outlets.status {
            if at >= self.timers.status {
                self.timers.status = at + STATUS_INTERVAL;
                // The status thread counts; a count still running skips this refresh.
                let _ = status.try_send(self.stats.counters);
            }
        }
    }

    /// Hands the metrics writer thread a snapshot every `metrics.interval`, if a textfile
    /// is configured. Never blocks: a writer still busy with the last one skips this one.
    fn publish_metrics(&mut self, at: Moment) {
        let Some(textfile) = &self.settings.config.metrics.textfile else {
            return;
        };
        if at < self.timers.metrics {
            return;
        }
        self.timers.metrics = at + self.settings.config.metrics.interval;
        if let Some(syncer) = &self.syncer {
            self.stats.counters.wal_syncs = syncer.syncs();
        }
        let _ = self.outlets.metrics.try_send(DaemonSnapshot {
            textfile: textfile.clone(),
            counters: self.stats.counters,
            handler_durations: self.stats.handler_durations.clone(),
            held_outcomes: self.held.len(),
            started_at: self.stats.started_at,
            now: self.clock.now_ms(),
            destination_limits: self.settings.config.destination_limits(),
        });
    }

    /// Run once before the loop: every job left running by an earlier process goes back
    /// to the queue at once. One whose handler had started (its row or the earlier
    /// daemon's start journal says so) is charged the attempt; one only claimed ahead
    /// is not. Then the journal starts empty; returns it, for the workers.
    pub fn recover(&mut self) -> Result<Arc<StartJournal>, StoreError> {
        let now = self.clock.now_ms();
        let config = self.config().clone();
        let path = StartJournal::path_for(self.db.path());
        let io =
            |e: std::io::Error| StoreError::Io(format!("start journal {}: {e}", path.display()));
        let journaled = StartJournal::read(&path).map_err(io)?;
        let started = |held: &HeldClaim| match held.claim {
            // Claimed by a jobd that kept no journal: it may have started.
            None => true,
            Some(claim) => {
                held.started_at.is_some()
                    || journaled.contains(&Start {
                        job: held.id,
                        attempt: held.attempt,
                        claim,
                    })
            }
        };
        let rescued = self.db.write(|tx| {
            tx.rescue_expired(
                now,
                true,
                &|kind: &str| config.policy_for(kind).max_attempts,
                &started,
            )
        })?;
        if !rescued.is_empty() {
            let uncharged = rescued
                .iter()
                .filter(|(_, state)| *state == JobState::Queued)
                .count();
            tracing::warn!(
                "recovered {} job(s) left running by an earlier process: {} had started (attempt charged), {uncharged} were only claimed (queued again, not charged)",
                rescued.len(),
                rescued.len() - uncharged
            );
        }
        let journal = Arc::new(StartJournal::create(&path).map_err(io)?);
        self.journal = Some(journal.clone());
        Ok(journal)
    }
}
