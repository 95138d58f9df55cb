//! The `STATUS=` line `systemctl status` shows: the queue's counts, read on a connection
//! of the status thread's own, so the dispatcher never waits for a count. Counting a
//! million waiting rows takes a tenth of a second or more, and the dispatcher asked every
//! five seconds; every job due in that time waited for it.

use super::dispatcher::Counters;
use super::notify::Notifier;
use crate::store::ReadOnFirstUse;
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The line for the counts read and the dispatcher's counters. Counts that could not be
/// read are left out rather than shown as zero.
pub fn status_line(live: Option<&BTreeMap<String, u64>>, counters: &Counters) -> String {
    let since = format!(
        "since start: {} succeeded, {} retried, {} dead",
        counters.succeeded, counters.retried, counters.dead
    );
    match live {
        Some(live) => format!(
            "ready {}, running {}; {since}",
            live.get("ready").unwrap_or(&0),
            live.get("running").unwrap_or(&0),
        ),
        None => since,
    }
}

/// The status thread: for every set of counters the dispatcher sends, counts the live
/// jobs on its own read connection and sends `STATUS=`. Ends when the dispatcher drops
/// its sender. The dispatcher sends with `try_send` on a channel of one, so a slow count
/// skips a refresh instead of holding anyone up.
pub fn spawn_status_writer(
    database: PathBuf,
    busy_timeout: Duration,
    notifier: Notifier,
    counters: Receiver<Counters>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("jobd-status".into())
        .spawn(move || {
            let mut reader = ReadOnFirstUse::new(database, busy_timeout);
            for counters in counters.iter() {
                let live = match reader.get() {
                    Ok(db) => match db.live_counts() {
                        Ok(live) => Some(live),
                        Err(e) => {
                            tracing::debug!("status: cannot count the jobs: {e}");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::debug!("status: cannot open the database: {e}");
                        None
                    }
                };
                notifier.status(&status_line(live.as_ref(), &counters));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_counts_read_and_leaves_out_what_could_not_be_read() {
        let counters = Counters {
            succeeded: 7,
            retried: 2,
            dead: 1,
            ..Counters::default()
        };
        let live = BTreeMap::from([("ready".to_string(), 12), ("running".to_string(), 3)]);
        assert_eq!(
            status_line(Some(&live), &counters),
            "ready 12, running 3; since start: 7 succeeded, 2 retried, 1 dead"
        );
        assert_eq!(
            status_line(None, &counters),
            "since start: 7 succeeded, 2 retried, 1 dead"
        );
    }
}
