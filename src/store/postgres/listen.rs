//! Wake-ups from PostgreSQL: a thread with its own connection (not from the pool) that
//! LISTENs on [`NOTIFY_CHANNEL`] and hands each notice (the queue's name) to the
//! dispatcher's wake-up at once. Notices are hints: the trigger sends at most one per
//! queue per 100 ms (the listener calls once more after that window) and a dropped
//! connection loses some, so the dispatcher polls too; while the listener is down
//! ([`Listener::is_up`] false) it reconnects with a growing pause.

use crate::dburl::PostgresUrl;
use postgres::fallible_iterator::FallibleIterator;
use postgres::NoTls;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The channel the `jobs_notify` trigger announces new rows on; the payload is the queue.
pub const NOTIFY_CHANNEL: &str = "jobd_jobs";

/// How long one wait for notices lasts before the stop flag is looked at.
const WAIT: Duration = Duration::from_millis(250);
/// The trigger's debounce: after a notice for a queue, rows inserted into it within this
/// window send none (migration 0001, `jobd_notify_insert`).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// When, after the last notice, the follow-up call comes: past the debounce window,
/// with a margin for the inserting transactions' commits.
const FOLLOW_UP: Duration = Duration::from_millis(DEBOUNCE.as_millis() as u64 + 20);
/// A second follow-up, for a row whose trigger ran inside the debounce window but whose
/// transaction committed after the first follow-up (a slow commit on a busy server), and
/// for a first follow-up whose claim ran before that commit was visible.
const LATE_FOLLOW_UP: Duration = Duration::from_secs(1);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listening thread.
pub struct Listener {
    stop: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening; `on_notice` gets each notice's queue name.
    pub fn spawn(
        url: &PostgresUrl,
        on_notice: impl Fn(&str) + Send + 'static,
    ) -> std::io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicBool::new(false));
        let (stop_flag, up_flag) = (stop.clone(), up.clone());
        let mut config = url.config();
        config.connect_timeout(super::CONNECT_TIMEOUT);
        let shown = url.to_string();
        let thread = std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(100);
                while !stop_flag.load(Ordering::Relaxed) {
                    match config.connect(NoTls) {
                        Ok(mut client) => {
                            if let Err(e) =
                                client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                            {
                                tracing::warn!("{shown}: LISTEN failed: {e}; polling meanwhile");
                            } else {
                                up_flag.store(true, Ordering::Relaxed);
                                backoff = Duration::from_millis(100);
                                // Rows inserted while the listener was down are found now.
                                on_notice("");
                                listen(&mut client, &stop_flag, &on_notice, &shown);
                                up_flag.store(false, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(
                                "{shown}: the LISTEN connection failed: {e}; polling meanwhile"
                            );
                        }
                    }
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            })?;
        Ok(Listener {
            stop,
            up,
            thread: Some(thread),
        })
    }

    /// Whether the LISTEN connection is open now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Stops the thread (within one wait).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Hands notices on until the connection breaks or the stop flag is set. After a notice
/// the trigger stays silent for its queue for [`DEBOUNCE`]; two more calls after the last
/// notice ([`FOLLOW_UP`], past that window, and [`LATE_FOLLOW_UP`]) find the rows
/// inserted inside it, without waiting for the daemon's poll. The same two calls follow
/// the start of listening, for a window opened by a notice nobody heard.
fn listen(client: &mut postgres::Client, stop: &AtomicBool, on_notice: &dyn Fn(&str), shown: &str) {
    // The follow-up calls still to make, earliest first. The first ones come from the
    // moment of listening: a notice sent before it (while the daemon started, or while
    // this connection was down) silenced the trigger for its queue for a debounce window
    // that nobody here heard open, so rows inserted inside it announce nothing.
    let listening = Instant::now();
    let mut follow_ups: Vec<Instant> = vec![listening + FOLLOW_UP, listening + LATE_FOLLOW_UP];
    while !stop.load(Ordering::Relaxed) {
        let wait = follow_ups
            .first()
            .map_or(WAIT, |at| at.saturating_duration_since(Instant::now()));
        let next = client.notifications().timeout_iter(wait.min(WAIT)).next();
        match next {
            Ok(Some(notice)) => {
                on_notice(notice.payload());
                let now = Instant::now();
                follow_ups = vec![now + FOLLOW_UP, now + LATE_FOLLOW_UP];
            }
            Ok(None) => {
                if client.is_closed() {
                    tracing::warn!("{shown}: the LISTEN connection closed; reconnecting");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("{shown}: the LISTEN connection broke: {e}; reconnecting");
                return;
            }
        }
        let now = Instant::now();
        if follow_ups.first().is_some_and(|at| now >= *at) {
            follow_ups.retain(|at| now < *at);
            on_notice("");
        }
    }
}
