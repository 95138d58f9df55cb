//! What the web page reads and records, in domain types: the [`WebReads`] trait (the
//! overview, job search with keyset paging, dead-letter groups, fan-out progress, the
//! audit rows of page actions, the live change token), and a small pool of read
//! connections (so a page never waits on the writer). The queries are each driver's
//! (`sqlite/web.rs`, `postgres/web.rs`).

use super::{OpenOptions, Result, Store};
use crate::job::{JobId, JobState, UnixMillis};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A search that no index serves reads at most this many ids per page, so a page stays
/// fast however large the table; the page then offers to go on below that window.
pub const SEARCH_WINDOW: i64 = 100_000;

/// The queue and kind of the rows that record actions taken from the web page. They are
/// ordinary `succeeded` jobs (no migration, every CHECK holds), so `jobctl show ID` and
/// `jobctl list --queue jobd-web` show them; retention purges them like other finished jobs.
pub const ACTION_QUEUE: &str = "jobd-web";
pub const ACTION_KIND: &str = "web_action";

/// How many succeeded jobs finished up to `after`, and how many jobs finished in each
/// minute of the hour up to it: counting a million index entries takes longer than a
/// page may, and a finished row only ever leaves by a purge, so the overview adds the
/// (few) rows finished since to counts it redoes now and then. Between two full counts a
/// purge can make a figure too high, never too low.
#[derive(Debug, Clone, PartialEq)]
pub struct SucceededBase {
    pub count: u64,
    pub after: UnixMillis,
    /// Per state of [`THROUGHPUT_STATES`], per minute (`finished_at / 60 000`), the jobs
    /// that finished from [`throughput_since`]`(after)` up to `after`.
    pub minutes: MinuteCounts,
}

/// Finished jobs per state name, per minute (`finished_at / 60 000`).
pub type MinuteCounts = BTreeMap<String, BTreeMap<i64, u64>>;

/// The finished states the overview's throughput chart shows.
pub const THROUGHPUT_STATES: [JobState; 2] = [JobState::Succeeded, JobState::Dead];

/// The start of the first of the 60 minutes the overview's chart shows at `now`.
pub fn throughput_since(now: UnixMillis) -> UnixMillis {
    (now / 60_000 - 59) * 60_000
}

/// From when the overview counts finished rows itself: after the base's, if the base
/// reaches into the chart's hour, else from the hour's start.
pub fn live_minutes_from(now: UnixMillis, base: Option<&SucceededBase>) -> UnixMillis {
    let since = throughput_since(now);
    match base {
        Some(base) if base.after >= since => base.after + 1,
        _ => since,
    }
}

/// The succeeded jobs finished since `base`, from the chart's own per-minute counts of
/// them when those cover the same rows (the base lies within the chart's hour, so the
/// chart counts from just after it): a page then reads those rows once, not twice.
pub fn succeeded_since_base(
    now: UnixMillis,
    base: &SucceededBase,
    live_succeeded: &BTreeMap<i64, u64>,
) -> Option<u64> {
    (live_minutes_from(now, Some(base)) == base.after + 1).then(|| live_succeeded.values().sum())
}

/// The chart's 60 per-minute counts of `state`, oldest first: the base's minutes within
/// the hour (when [`live_minutes_from`] used the base) plus `live`, the rows counted from
/// [`live_minutes_from`] on.
pub fn throughput_slots(
    now: UnixMillis,
    base: Option<&SucceededBase>,
    state: JobState,
    live: &BTreeMap<i64, u64>,
) -> Vec<u64> {
    let first = throughput_since(now) / 60_000;
    let mut slots = vec![0u64; 60];
    let mut add = |minute: i64, n: u64| {
        if let Some(slot) = usize::try_from(minute - first)
            .ok()
            .and_then(|m| slots.get_mut(m))
        {
            *slot += n;
        }
    };
    // The same test as live_minutes_from: a base that ends before the hour is not used.
    let base_counts = base.filter(|b| b.after >= throughput_since(now));
    if let Some(minutes) = base_counts.and_then(|b| b.minutes.get(state.as_str())) {
        for (minute, n) in minutes {
            add(*minute, *n);
        }
    }
    for (minute, n) in live {
        add(*minute, *n);
    }
    slots
}

/// The live jobs per queue and state, and how long each queue's oldest ready job has
/// been due, as counted at `counted_at`. Counting them reads every live row, so with a
/// million jobs waiting the page reuses a recent count (see `web::plan_live_counts`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveCounts {
    pub live: BTreeMap<String, BTreeMap<String, u64>>,
    pub oldest_ready_age_ms: BTreeMap<String, i64>,
    pub counted_at: UnixMillis,
}

impl LiveCounts {
    /// How many live jobs were counted, all queues and states.
    pub fn jobs(&self) -> u64 {
        self.live.values().flat_map(|states| states.values()).sum()
    }
}

/// What the overview shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    /// Live jobs per queue and state (queued, retrying, running, waiting).
    pub live: BTreeMap<String, BTreeMap<String, u64>>,
    /// How old `live` and `oldest_ready_age_ms` are: 0 when counted for this read, else
    /// the age of the recent count reused (a big queue's count is not redone per page).
    pub live_age_ms: i64,
    /// Finished jobs per state, all queues.
    pub finished: BTreeMap<String, u64>,
    /// How long the longest-waiting ready job has been due, per queue, in milliseconds.
    pub oldest_ready_age_ms: BTreeMap<String, i64>,
    /// Jobs that finished in each minute of the last hour, oldest minute first, per state
    /// (`succeeded`, `dead`).
    pub throughput: BTreeMap<String, Vec<u64>>,
    /// The start of the first minute of `throughput`.
    pub throughput_since: UnixMillis,
    pub running: Vec<RunningJob>,
}

impl Overview {
    pub fn live_total(&self, state: &str) -> u64 {
        self.live.values().filter_map(|s| s.get(state)).sum()
    }

    /// Takes in live counts made at or before `now`; the ready jobs' ages grow by the
    /// time since the count.
    pub fn set_live(&mut self, counts: &LiveCounts, now: UnixMillis) {
        let age = (now - counts.counted_at).max(0);
        self.live = counts.live.clone();
        self.live_age_ms = age;
        self.oldest_ready_age_ms = counts
            .oldest_ready_age_ms
            .iter()
            .map(|(queue, due_for)| (queue.clone(), due_for + age))
            .collect();
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunningJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub worker: Option<String>,
    pub attempts: u32,
    /// When it was claimed or its lease was last extended.
    pub since: UnixMillis,
    pub lease_until: Option<UnixMillis>,
}

/// One job in a list: what a row of the table needs, without the payload.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub attempts: u32,
    pub run_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub parent_id: Option<JobId>,
    /// The first 200 characters.
    pub last_error: Option<String>,
}

/// Which jobs a list shows, newest first, one page below `before`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSearch {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Text anywhere in the payload or the last error.
    pub text: Option<String>,
    /// Created at or after.
    pub since: Option<UnixMillis>,
    /// Created before.
    pub until: Option<UnixMillis>,
    pub parent_id: Option<JobId>,
    /// Only ids below this (the keyset cursor).
    pub before: Option<JobId>,
    pub limit: usize,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    /// The cursor for the next page, if there may be more.
    pub next_before: Option<JobId>,
    /// Set when the page read only a window of ids: the ids at or above this were
    /// searched; the next page goes on below it.
    pub searched_down_to: Option<JobId>,
}

impl JobPage {
    /// The page from a search's rows, newest first, read with `LIMIT limit + 1`: a row
    /// beyond `limit` says there is more; else a search that read only a window of ids
    /// (`floor`) goes on below it.
    pub fn from_rows(mut jobs: Vec<JobRow>, limit: usize, floor: Option<JobId>) -> JobPage {
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        let next_before = if more {
            jobs.last().map(|j| j.id)
        } else {
            floor.filter(|f| *f > 1)
        };
        JobPage {
            jobs,
            next_before,
            searched_down_to: floor,
        }
    }
}

/// Dead jobs with the same kind and the same start of their error.
#[derive(Debug, Clone, Serialize)]
pub struct DeadGroup {
    pub kind: String,
    pub error: String,
    pub count: u64,
    pub last_finished_at: UnixMillis,
    pub newest_id: JobId,
}

/// A fan-out job's children, summed up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChildProgress {
    pub states: BTreeMap<String, u64>,
    pub total: u64,
    pub first_created_at: Option<UnixMillis>,
    pub last_finished_at: Option<UnixMillis>,
}

/// The file a watched folder took in for a job.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFile {
    pub watch: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub ingested_at: UnixMillis,
}

/// An action taken from the web page, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct WebAction {
    /// The id of the row that records it (`jobctl show ID`).
    pub record_id: JobId,
    pub at: UnixMillis,
    pub detail: serde_json::Value,
}

/// The web page's reads, on one connection: what [`Store`] reads for everyone (a job,
/// its attempts, pipelines, folder sets, pauses, destinations) and what only the page
/// reads, below. Object safe, like [`Store`]: the page holds `Box<dyn WebReads>` from
/// [`open_read_only`], whatever the driver.
pub trait WebReads: Store {
    /// The overview's numbers at `now`; `succeeded`: a recent full count of succeeded
    /// jobs to add the rows finished since to (see [`SucceededBase`]), else a full count;
    /// `live`: recent live counts to show, else they are counted now.
    fn web_overview(
        &self,
        now: UnixMillis,
        succeeded: Option<&SucceededBase>,
        live: Option<&LiveCounts>,
    ) -> Result<Overview>;
    /// The live jobs per queue and state and the oldest ready job's age per queue, at
    /// `now`: reads every live row (index ranges of the partial indexes).
    fn web_live_counts(&self, now: UnixMillis) -> Result<LiveCounts>;
    /// Jobs in a finished state, all of them or those that finished after `after`.
    fn web_count_finished(&self, state: JobState, after: Option<UnixMillis>) -> Result<u64>;
    /// A full count of succeeded jobs that finished up to `now - margin`, both counts
    /// from one snapshot.
    fn web_succeeded_base(&self, now: UnixMillis, margin: Duration) -> Result<SucceededBase>;
    /// One page of jobs matching `search`, newest first: an index bounds the search, or
    /// it reads a window of at most [`SEARCH_WINDOW`] ids.
    fn web_search(&self, search: &JobSearch) -> Result<JobPage>;
    /// How the driver runs [`WebReads::web_search`] (its query plan), for tests and
    /// `EXPLAIN`-minded operators.
    fn web_search_plan(&self, search: &JobSearch) -> Result<Vec<String>>;
    /// How many jobs in `state` match `search` (its own state is ignored): the count a
    /// bulk action's confirmation shows. Only `dead`, `cancelled`, `queued` and
    /// `retrying` are accepted.
    fn web_count_matching(&self, search: &JobSearch, state: JobState) -> Result<u64>;
    /// Dead jobs grouped by kind and the first 120 characters of their error, largest
    /// groups first.
    fn web_dead_groups(&self, limit: usize) -> Result<Vec<DeadGroup>>;
    /// A fan-out job's children per state, and when the first was made and the last
    /// finished.
    fn web_child_progress(&self, parent: JobId) -> Result<ChildProgress>;
    /// The file a watched folder took in for `job`, if any.
    fn web_source_file(&self, job: JobId) -> Result<Option<SourceFile>>;
    /// Actions taken from the web page, newest first.
    fn web_actions(&self, limit: usize) -> Result<Vec<WebAction>>;
    /// Changes after each commit that may have changed what a page shows (jobs, pauses,
    /// holds, pipelines, folder sets); compare two values for equality only. SQLite:
    /// `PRAGMA data_version` (any other connection's commit); PostgreSQL: a counter its
    /// triggers move (`migrations/postgres/0003_web.sql`).
    fn web_change_token(&self) -> Result<i64>;
}

/// A few read connections, opened on demand and reused.
pub struct ReadPool {
    database: PathBuf,
    busy_timeout: Duration,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Box<dyn WebReads>>,
    open: usize,
}

impl ReadPool {
    pub fn new(database: &Path, size: usize, busy_timeout: Duration) -> ReadPool {
        ReadPool {
            database: database.to_path_buf(),
            busy_timeout,
            size: size.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Runs `read` on an idle connection, opening one if fewer than `size` are open, or
    /// waiting for one to come back.
    pub fn with<T>(&self, read: impl FnOnce(&dyn WebReads) -> Result<T>) -> Result<T> {
        let db = {
            let mut state = self.state.lock().expect("pool lock");
            loop {
                if let Some(db) = state.idle.pop() {
                    break Some(db);
                }
                if state.open < self.size {
                    state.open += 1;
                    break None;
                }
                state = self.returned.wait(state).expect("pool lock");
            }
        };
        let db = match db {
            Some(db) => db,
            None => match open_read_only(&self.database, self.busy_timeout) {
                Ok(db) => db,
                Err(e) => {
                    self.state.lock().expect("pool lock").open -= 1;
                    self.returned.notify_one();
                    return Err(e);
                }
            },
        };
        let result = read(db.as_ref());
        self.state.lock().expect("pool lock").idle.push(db);
        self.returned.notify_one();
        result
    }
}

/// A connection that cannot write: the web page's reads and its change watcher.
pub fn open_read_only(database: &Path, busy_timeout: Duration) -> Result<Box<dyn WebReads>> {
    super::open_web_reads(
        database,
        &OpenOptions {
            busy_timeout,
            ..OpenOptions::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(after: UnixMillis, succeeded: &[(i64, u64)]) -> SucceededBase {
        SucceededBase {
            count: 0,
            after,
            minutes: MinuteCounts::from([(
                "succeeded".to_string(),
                succeeded.iter().copied().collect(),
            )]),
        }
    }

    #[test]
    fn the_succeeded_rows_since_a_recent_base_come_from_the_charts_own_count() {
        let now = 100 * 60_000 + 30_000;
        let live = BTreeMap::from([(99, 4), (100, 3)]);
        // Within the hour: the chart counted exactly the rows since the base.
        let recent = base(now - 20_000, &[]);
        assert_eq!(succeeded_since_base(now, &recent, &live), Some(7));
        // Older than the hour: the chart starts at the hour, so the rows between the
        // base and the hour's start must be counted apart.
        let old = base(now - 2 * 3_600_000, &[]);
        assert_eq!(succeeded_since_base(now, &old, &live), None);
    }

    #[test]
    fn the_chart_adds_the_bases_minutes_to_the_rows_counted_since() {
        let now = 100 * 60_000 + 30_000; // minute 100; the chart shows minutes 41..=100
        assert_eq!(throughput_since(now), 41 * 60_000);
        // A base 20 s old: its minutes count, and the live count starts right after it.
        let recent = base(now - 20_000, &[(40, 7), (41, 1), (100, 2)]);
        assert_eq!(live_minutes_from(now, Some(&recent)), now - 20_000 + 1);
        let live = BTreeMap::from([(100, 3)]);
        let slots = throughput_slots(now, Some(&recent), JobState::Succeeded, &live);
        assert_eq!(slots.len(), 60);
        assert_eq!(
            (slots[0], slots[59]),
            (1, 5),
            "minute 40 is outside the hour"
        );
        assert_eq!(slots.iter().sum::<u64>(), 6);
        // A base from before the hour is not used: everything is counted live.
        let old = base(throughput_since(now) - 1, &[(41, 9)]);
        assert_eq!(live_minutes_from(now, Some(&old)), throughput_since(now));
        let slots = throughput_slots(now, Some(&old), JobState::Succeeded, &live);
        assert_eq!(slots.iter().sum::<u64>(), 3);
        assert_eq!(live_minutes_from(now, None), throughput_since(now));
    }
}
