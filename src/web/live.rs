//! Tells open pages what changed: one watcher reads the store's change token
//! ([`WebReads::web_change_token`]: SQLite's `PRAGMA data_version`, which moves whenever
//! another connection, the dispatcher above all, commits; PostgreSQL's `jobd_changes`
//! counter) a few times a second, only while some page holds an event stream open; each
//! stream sends at most one `change` event per [`DEBOUNCE`]. With no page open, nothing
//! runs.

use super::WebState;
use crate::store::web::{open_read_only, WebReads};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often the watcher asks whether anything was committed, while a page listens.
pub const POLL: Duration = Duration::from_millis(250);
/// The shortest gap between two events on one stream: a drain's many commits make a
/// few refreshes a second, not hundreds.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The change counter and who listens to it.
pub struct Live {
    changes: watch::Sender<u64>,
    subscribed: Notify,
    database: PathBuf,
    busy_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Live {
    pub fn new(database: PathBuf, busy_timeout: Duration, stop: watch::Receiver<bool>) -> Live {
        Live {
            changes: watch::channel(0).0,
            subscribed: Notify::new(),
            database,
            busy_timeout,
            stop,
        }
    }
}

/// The watcher: reads the change token once at start, then sleeps until a stream opens and
/// polls on a connection of its own until the last stream closes. The version seen last
/// is kept while nobody listens, so a commit made just before a page subscribed still
/// reaches it (at worst one refresh too many).
pub async fn watch_changes(state: Arc<WebState>) {
    let live = &state.live;
    let mut db: Option<Arc<Mutex<Box<dyn WebReads>>>> = None;
    let mut last: Option<i64> = None;
    let mut first = true;
    loop {
        if !first {
            if live.changes.receiver_count() == 0 {
                live.subscribed.notified().await;
            } else {
                tokio::time::sleep(POLL).await;
            }
        }
        first = false;
        if db.is_none() {
            let (path, timeout) = (live.database.clone(), live.busy_timeout);
            match tokio::task::spawn_blocking(move || open_read_only(&path, timeout)).await {
                Ok(Ok(opened)) => db = Some(Arc::new(Mutex::new(opened))),
                Ok(Err(e)) => {
                    tracing::warn!("web: the change watcher cannot open the database: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                Err(_) => continue,
            }
        }
        let conn = db.clone().expect("opened above");
        let version = tokio::task::spawn_blocking(move || {
            conn.lock().expect("watcher connection").web_change_token()
        })
        .await;
        match version {
            Ok(Ok(version)) => {
                if last.is_some_and(|l| l != version) {
                    live.changes.send_modify(|n| *n += 1);
                }
                last = Some(version);
            }
            Ok(Err(e)) => {
                tracing::warn!("web: the change watcher cannot read the change token: {e}");
                db = None;
                last = None;
            }
            Err(_) => {
                db = None;
                last = None;
            }
        }
    }
}

/// `GET /events`: `event: change` whenever something was committed, debounced; ends
/// when the server stops.
pub async fn events(
    State(state): State<Arc<WebState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = state.live.changes.subscribe();
    state.live.subscribed.notify_one();
    let stop = state.live.stop.clone();
    let stream =
        futures_util::stream::unfold((changes, stop), |(mut changes, mut stop)| async move {
            tokio::select! {
                changed = changes.changed() => changed.ok()?,
                _ = stop.wait_for(|stopped| *stopped) => return None,
            }
            // Commits that follow within the debounce fold into this one event.
            tokio::time::sleep(DEBOUNCE).await;
            let count = *changes.borrow_and_update();
            let event = Event::default().event("change").data(count.to_string());
            Some((Ok(event), (changes, stop)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(30)))
}
