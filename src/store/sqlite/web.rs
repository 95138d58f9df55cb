//! The web page's reads and its record of actions: a small pool of read-only connections
//! (so a page never waits on the writer), the overview's counts, job search with keyset
//! paging, dead-letter groups, fan-out progress, and the audit rows of page actions.
//!
//! Every query here is shaped for a table with millions of finished rows: counts come
//! from the partial and `jobs_finished` indexes, and a search that no index serves reads
//! a bounded window of ids per page (see [`SEARCH_WINDOW`]).

use super::guards::{ready_rows, with_guards};
use super::{Result, SqliteStore, SqliteTx, StoreError};
use crate::job::{JobId, JobState, UnixMillis};
use crate::store::web::{
    live_minutes_from, succeeded_since_base, throughput_since, throughput_slots, MinuteCounts,
    THROUGHPUT_STATES,
};
use crate::store::web::{
    ChildProgress, DeadGroup, JobPage, JobRow, JobSearch, LiveCounts, Overview, RunningJob,
    SourceFile, SucceededBase, WebAction, ACTION_KIND, ACTION_QUEUE, SEARCH_WINDOW,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

/// Their unique keys start with this and sort by time, so the `jobs_unique_key` index
/// lists them newest first without a scan.
const ACTION_KEY_PREFIX: &str = "web-action:";
const ACTION_KEY_END: &str = "web-action;";

const ROW_COLUMNS: &str = "id, queue, kind, state, attempts, run_at, created_at, updated_at, \
                           finished_at, parent_id, substr(last_error, 1, 200)";

fn job_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let state: String = row.get(3)?;
    Ok(JobRow {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        state: state.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?,
        attempts: row.get(4)?,
        run_at: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        finished_at: row.get(8)?,
        parent_id: row.get(9)?,
        last_error: row.get(10)?,
    })
}

/// The WHERE clause and parameters of a search, and whether an index bounds it.
struct SearchSql {
    conditions: Vec<String>,
    params: Vec<SqlValue>,
    /// The index that bounds the search, named so the planner cannot prefer reading
    /// every id downwards for the sake of `ORDER BY id` (it has no statistics).
    index: Option<&'static str>,
    /// Read ids downwards and use no index (so none is read whole and sorted by id).
    not_indexed: bool,
    /// Bounded by the ready rows' ids ([`READY_IDS`], added by [`Self::where_clause`]),
    /// read from their indexes.
    ready_ids: bool,
}

/// `id IN (...)` of every ready row: a search by a ready state reads them from their two
/// indexes (no one index holds them all since 0013).
static READY_IDS: LazyLock<String> = LazyLock::new(|| format!("id IN ({})", ready_rows("id")));

impl SearchSql {
    fn where_clause(&self) -> String {
        let mut conditions = self.conditions.clone();
        if self.ready_ids {
            conditions.push(READY_IDS.clone());
        }
        conditions.join(" AND ")
    }

    fn from(&self) -> String {
        match self.index {
            Some(index) => format!("jobs INDEXED BY {index}"),
            None if self.not_indexed => "jobs NOT INDEXED".to_string(),
            None => "jobs".to_string(),
        }
    }
}

/// Up to this many ready jobs, a search by a ready state reads them all from their index
/// and sorts them by id (a few milliseconds); with more (a million waiting took 310 ms) it
/// reads a window of ids downwards instead, where they are dense enough to fill a page.
const READY_SORT_LIMIT: i64 = 10_000;

fn search_sql(search: &JobSearch) -> SearchSql {
    let mut sql = SearchSql {
        conditions: Vec::new(),
        params: Vec::new(),
        index: None,
        not_indexed: false,
        ready_ids: false,
    };
    let bind = |sql: &mut SearchSql, condition: &str, value: SqlValue| {
        sql.params.push(value);
        sql.conditions
            .push(condition.replace('?', &format!("?{}", sql.params.len())));
    };
    if let Some(parent) = search.parent_id {
        bind(&mut sql, "parent_id = ?", SqlValue::Integer(parent));
        sql.index = Some("jobs_parent");
    }
    if let Some(state) = search.state {
        // Each state's test is written so one of the partial indexes serves it; the
        // text matches the indexes' own WHERE clauses.
        let condition = match state {
            JobState::Queued | JobState::Retrying => "state = ?",
            JobState::Running => with_guards("{running} AND state = ?"),
            // Succeeded rows are most of a big table: reading ids downwards finds a
            // page of them at once, so the index is not wanted (`+state`).
            JobState::Succeeded => "+state = ?",
            JobState::Dead | JobState::Cancelled => "state = ? AND finished_at IS NOT NULL",
            // No index covers waiting jobs; they are searched by id window.
            JobState::Waiting => "+state = ?",
        };
        bind(
            &mut sql,
            condition,
            SqlValue::Text(state.as_str().to_string()),
        );
        if sql.index.is_none() {
            sql.index = match state {
                JobState::Running => Some("jobs_leases"),
                JobState::Dead | JobState::Cancelled => Some("jobs_finished"),
                JobState::Queued | JobState::Retrying => {
                    // Every ready row, blocked behind its order key or not.
                    sql.ready_ids = true;
                    None
                }
                JobState::Succeeded | JobState::Waiting => None,
            };
        }
    }
    if let Some(kind) = &search.kind {
        bind(&mut sql, "kind = ?", SqlValue::Text(kind.clone()));
    }
    if let Some(queue) = &search.queue {
        bind(&mut sql, "queue = ?", SqlValue::Text(queue.clone()));
    }
    if let Some(text) = &search.text {
        bind(
            &mut sql,
            "(instr(payload, ?) > 0 OR instr(coalesce(last_error, ''), ?) > 0)",
            SqlValue::Text(text.clone()),
        );
    }
    if let Some(since) = search.since {
        bind(&mut sql, "created_at >= ?", SqlValue::Integer(since));
    }
    if let Some(until) = search.until {
        bind(&mut sql, "created_at < ?", SqlValue::Integer(until));
    }
    sql
}

impl SqliteStore {
    /// The overview's numbers at `now`, with `live` counts if given, else counted now.
    pub fn web_overview(
        &self,
        now: UnixMillis,
        succeeded: Option<&SucceededBase>,
        live: Option<&LiveCounts>,
    ) -> Result<Overview> {
        let base = succeeded;
        let mut overview = Overview::default();
        match live {
            Some(counts) => overview.set_live(counts, now),
            None => overview.set_live(&self.web_live_counts(now)?, now),
        }
        for state in [JobState::Dead, JobState::Cancelled] {
            let count = self.web_count_finished(state, None)?;
            overview.finished.insert(state.as_str().to_string(), count);
        }
        // The hour's chart: the base's minutes plus the rows finished since the base.
        overview.throughput_since = throughput_since(now);
        let from = live_minutes_from(now, base);
        let mut succeeded_minutes = BTreeMap::new();
        for state in THROUGHPUT_STATES {
            let live = self.finished_per_minute(state, from, UnixMillis::MAX)?;
            overview.throughput.insert(
                state.as_str().to_string(),
                throughput_slots(now, base, state, &live),
            );
            if state == JobState::Succeeded {
                succeeded_minutes = live;
            }
        }
        // Succeeded rows are most of a big table: counted from a recent full count plus
        // those finished since (an index range), see [`SucceededBase`].
        let succeeded = match succeeded {
            Some(base) => {
                base.count
                    + match succeeded_since_base(now, base, &succeeded_minutes) {
                        Some(since) => since,
                        None => self.web_count_finished(JobState::Succeeded, Some(base.after))?,
                    }
            }
            None => self.web_count_finished(JobState::Succeeded, None)?,
        };
        // The rows that record web actions are succeeded jobs only in form.
        let records: u64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM jobs WHERE unique_key >= ?1 AND unique_key < ?2")?
            .query_row(params![ACTION_KEY_PREFIX, ACTION_KEY_END], |row| row.get(0))?;
        overview.finished.insert(
            JobState::Succeeded.as_str().to_string(),
            succeeded.saturating_sub(records),
        );
        let mut running_jobs = self.conn.prepare_cached(with_guards(
            // Named: for `ORDER BY id` the planner would rather read every id.
            "SELECT id, queue, kind, worker, attempts, updated_at, lease_until \
             FROM jobs INDEXED BY jobs_leases WHERE {running} ORDER BY id LIMIT 200",
        ))?;
        overview.running = running_jobs
            .query_map([], |row| {
                Ok(RunningJob {
                    id: row.get(0)?,
                    queue: row.get(1)?,
                    kind: row.get(2)?,
                    worker: row.get(3)?,
                    attempts: row.get(4)?,
                    since: row.get(5)?,
                    lease_until: row.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(overview)
    }

    /// The live jobs per queue and state, and the oldest ready job's age per queue.
    pub fn web_live_counts(&self, now: UnixMillis) -> Result<LiveCounts> {
        let mut counts = LiveCounts {
            counted_at: now,
            ..LiveCounts::default()
        };
        let mut add = |queue: String, state: String, count: u64| {
            counts.live.entry(queue).or_default().insert(state, count);
        };
        static READY: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT queue, state, count(*), min(CASE WHEN run_at <= ?1 THEN run_at END) \
                 FROM ({}) GROUP BY queue, state",
                ready_rows("queue, state, run_at")
            )
        });
        let mut ready = self.conn.prepare_cached(&READY)?;
        let mut oldest = BTreeMap::new();
        for row in ready.query_map([now], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u64>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })? {
            let (queue, state, count, due) = row?;
            if let Some(due) = due {
                let age = now - due;
                let entry = oldest.entry(queue.clone()).or_insert(age);
                *entry = (*entry).max(age);
            }
            add(queue, state, count);
        }
        let mut running = self.conn.prepare_cached(with_guards(
            "SELECT queue, count(*) FROM jobs WHERE {running} GROUP BY queue",
        ))?;
        for row in running.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))? {
            let (queue, count) = row?;
            add(queue, "running".into(), count);
        }
        // A waiting job always has a live child (the transaction that finishes its last
        // child resumes it), so the children index finds them without a table scan.
        let mut waiting = self.conn.prepare_cached(with_guards(
            "SELECT queue, count(*) FROM jobs WHERE {waiting} AND id IN \
             (SELECT parent_id FROM jobs INDEXED BY jobs_parent WHERE parent_id IS NOT NULL \
              AND NOT {terminal}) \
             GROUP BY queue",
        ))?;
        for row in waiting.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))? {
            let (queue, count) = row?;
            add(queue, "waiting".into(), count);
        }
        counts.oldest_ready_age_ms = oldest;
        Ok(counts)
    }

    /// Jobs of a finished state per minute (`finished_at / 60 000`) that finished from
    /// `from` up to `until`, both included: a covering range of `jobs_finished`.
    fn finished_per_minute(
        &self,
        state: JobState,
        from: UnixMillis,
        until: UnixMillis,
    ) -> Result<BTreeMap<i64, u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT finished_at / 60000, count(*) FROM jobs INDEXED BY jobs_finished \
             WHERE state = ?1 AND finished_at >= ?2 AND finished_at <= ?3 GROUP BY 1",
        )?;
        let counts = stmt
            .query_map(params![state.as_str(), from, until], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, u64>(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(counts)
    }

    /// Jobs in a finished state, all of them or those that finished after `after`: a
    /// covering range of `jobs_finished`.
    pub fn web_count_finished(&self, state: JobState, after: Option<UnixMillis>) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM jobs INDEXED BY jobs_finished WHERE state = ?1 \
                 AND finished_at IS NOT NULL AND finished_at > ?2",
            )?
            .query_row(params![state.as_str(), after.unwrap_or(i64::MIN)], |row| {
                row.get(0)
            })?)
    }

    /// A full count of succeeded jobs that finished up to `now - margin`, for
    /// [`SucceededBase`].
    pub fn web_succeeded_base(&self, now: UnixMillis, margin: Duration) -> Result<SucceededBase> {
        let after = now - margin.as_millis() as i64;
        // One read transaction, so the two counts see the same rows.
        self.conn.execute_batch("BEGIN")?;
        let counted = (|| {
            let all = self.web_count_finished(JobState::Succeeded, None)?;
            let recent = self.web_count_finished(JobState::Succeeded, Some(after))?;
            let mut minutes = MinuteCounts::new();
            for state in THROUGHPUT_STATES {
                let counts = self.finished_per_minute(state, throughput_since(after), after)?;
                minutes.insert(state.as_str().to_string(), counts);
            }
            Ok(SucceededBase {
                count: all - recent,
                after,
                minutes,
            })
        })();
        self.conn.execute_batch("COMMIT")?;
        counted
    }

    /// One page of jobs matching `search`, newest first.
    pub fn web_search(&self, search: &JobSearch) -> Result<JobPage> {
        let (sql, params, floor) = self.search_query(search, ROW_COLUMNS)?;
        let limit = search.limit.clamp(1, 1000);
        let sql = format!("{sql} ORDER BY id DESC LIMIT {}", limit + 1);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let jobs = stmt
            .query_map(params_from_iter(params), job_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(JobPage::from_rows(jobs, limit, floor))
    }

    /// The search's SQL: `SELECT columns FROM jobs WHERE ...`, its parameters, and the
    /// lowest id of the window it reads, if it reads a window.
    fn search_query(
        &self,
        search: &JobSearch,
        columns: &str,
    ) -> Result<(String, Vec<SqlValue>, Option<JobId>)> {
        let mut where_sql = search_sql(search);
        if where_sql.ready_ids && self.ready_jobs_exceed(READY_SORT_LIMIT)? {
            where_sql.ready_ids = false;
            where_sql.not_indexed = true;
        }
        let top = match search.before {
            Some(before) => before,
            None => self
                .conn
                .prepare_cached("SELECT coalesce(max(id), 0) + 1 FROM jobs")?
                .query_row([], |row| row.get::<_, i64>(0))?,
        };
        where_sql.params.push(SqlValue::Integer(top));
        where_sql
            .conditions
            .push(format!("id < ?{}", where_sql.params.len()));
        let mut floor = None;
        if where_sql.index.is_none() && !where_sql.ready_ids && top - SEARCH_WINDOW > 1 {
            where_sql
                .params
                .push(SqlValue::Integer(top - SEARCH_WINDOW));
            where_sql
                .conditions
                .push(format!("id >= ?{}", where_sql.params.len()));
            floor = Some(top - SEARCH_WINDOW);
        }
        Ok((
            format!(
                "SELECT {columns} FROM {} WHERE {}",
                where_sql.from(),
                where_sql.where_clause()
            ),
            where_sql.params,
            floor,
        ))
    }

    /// Whether more than `limit` jobs are ready (queued or retrying): reads at most
    /// `limit + 1` entries of their indexes.
    fn ready_jobs_exceed(&self, limit: i64) -> Result<bool> {
        static COUNT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT count(*) FROM (SELECT 1 FROM ({}) LIMIT ?1)",
                ready_rows("1")
            )
        });
        let ready: i64 = self
            .conn
            .prepare_cached(&COUNT)?
            .query_row([limit + 1], |row| row.get(0))?;
        Ok(ready > limit)
    }

    /// The plan SQLite picks for a search, for tests and `EXPLAIN`-minded operators.
    pub fn web_search_plan(&self, search: &JobSearch) -> Result<Vec<String>> {
        let (sql, params, _) = self.search_query(search, ROW_COLUMNS)?;
        let mut stmt = self.conn.prepare(&format!(
            "EXPLAIN QUERY PLAN {sql} ORDER BY id DESC LIMIT 51"
        ))?;
        let rows = stmt.query_map(params_from_iter(params), |row| row.get::<_, String>(3))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many jobs in one of `states` match `search` (its state is ignored): the count a
    /// bulk action's confirmation shows. Only `dead`, `cancelled`, `queued` and
    /// `retrying` are accepted, the states an index serves.
    pub fn web_count_matching(&self, search: &JobSearch, state: JobState) -> Result<u64> {
        let (sql, params) = bulk_sql(search, state, "count(*)")?;
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(params), |row| row.get(0))?)
    }

    /// Dead jobs grouped by kind and the first 120 characters of their error, largest
    /// groups first.
    pub fn web_dead_groups(&self, limit: usize) -> Result<Vec<DeadGroup>> {
        let mut stmt = self.conn.prepare_cached(with_guards(
            "SELECT kind, substr(coalesce(last_error, ''), 1, 120) AS error, count(*), \
             max(finished_at), max(id) FROM jobs WHERE {dead} AND finished_at IS NOT NULL \
             GROUP BY kind, error ORDER BY count(*) DESC, max(id) DESC LIMIT ?1",
        ))?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(DeadGroup {
                kind: row.get(0)?,
                error: row.get(1)?,
                count: row.get(2)?,
                last_finished_at: row.get(3)?,
                newest_id: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A fan-out job's children per state, and when the first was made and the last finished.
    pub fn web_child_progress(&self, parent: JobId) -> Result<ChildProgress> {
        let mut progress = ChildProgress {
            states: self.children_counts(parent)?,
            ..Default::default()
        };
        progress.total = progress.states.values().sum();
        if progress.total > 0 {
            let (first, last) = self
                .conn
                .prepare_cached(
                    "SELECT min(created_at), max(finished_at) FROM jobs WHERE parent_id = ?1",
                )?
                .query_row([parent], |row| Ok((row.get(0)?, row.get(1)?)))?;
            progress.first_created_at = first;
            progress.last_finished_at = last;
        }
        Ok(progress)
    }

    /// The file a watched folder took in for `job`, if any.
    pub fn web_source_file(&self, job: JobId) -> Result<Option<SourceFile>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT watch, name, sha256, size, ingested_at FROM ingest_files \
                 WHERE job_id = ?1 ORDER BY ingested_at DESC LIMIT 1",
            )?
            .query_row([job], |row| {
                Ok(SourceFile {
                    watch: row.get(0)?,
                    name: row.get(1)?,
                    sha256: row.get(2)?,
                    size: row.get(3)?,
                    ingested_at: row.get(4)?,
                })
            })
            .optional()?)
    }

    /// Actions taken from the web page, newest first.
    pub fn web_actions(&self, limit: usize) -> Result<Vec<WebAction>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, created_at, payload FROM jobs \
             WHERE unique_key >= ?1 AND unique_key < ?2 ORDER BY unique_key DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![ACTION_KEY_PREFIX, ACTION_KEY_END, limit as i64],
            |row| {
                let payload: String = row.get(2)?;
                Ok(WebAction {
                    record_id: row.get(0)?,
                    at: row.get(1)?,
                    detail: serde_json::from_str(&payload).unwrap_or_default(),
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// The SQL of a bulk action's selection: jobs in `state` matching the search's kind,
/// queue, text and times.
fn bulk_sql(search: &JobSearch, state: JobState, columns: &str) -> Result<(String, Vec<SqlValue>)> {
    if !matches!(
        state,
        JobState::Dead | JobState::Cancelled | JobState::Queued | JobState::Retrying
    ) {
        return Err(StoreError::InvalidJob(format!(
            "a bulk action takes dead, cancelled, queued or retrying jobs, not {state} ones"
        )));
    }
    let where_sql = search_sql(&JobSearch {
        state: Some(state),
        before: None,
        parent_id: None,
        ..search.clone()
    });
    Ok((
        format!(
            "SELECT {columns} FROM {} WHERE {}",
            where_sql.from(),
            where_sql.where_clause()
        ),
        where_sql.params,
    ))
}

impl SqliteTx<'_> {
    /// The ids a bulk action takes, at most `cap`, oldest first.
    pub fn web_ids_matching(
        &self,
        search: &JobSearch,
        state: JobState,
        cap: usize,
    ) -> Result<Vec<JobId>> {
        let (sql, params) = bulk_sql(search, state, "id")?;
        let sql = format!("{sql} ORDER BY id LIMIT {cap}");
        let mut stmt = self.conn().prepare(&sql)?;
        let ids = stmt.query_map(params_from_iter(params), |row| row.get(0))?;
        Ok(ids.collect::<rusqlite::Result<_>>()?)
    }

    /// Records an action taken from the web page (who, what, which jobs) as a finished
    /// row of its own, in the same transaction as the action. Returns the row's id.
    pub fn record_web_action(&self, detail: &serde_json::Value, now: UnixMillis) -> Result<JobId> {
        // Zero-padded time first so the keys sort by time; the row count after it keeps
        // two actions in one millisecond apart.
        let seq: i64 = self
            .conn()
            .prepare_cached("SELECT count(*) FROM jobs WHERE unique_key >= ?1 AND unique_key < ?2")?
            .query_row(params![ACTION_KEY_PREFIX, ACTION_KEY_END], |row| row.get(0))?;
        let key = format!("{ACTION_KEY_PREFIX}{now:015}:{seq:09}");
        self.conn()
            .prepare_cached(
                "INSERT INTO jobs (queue, kind, payload, state, attempts, run_at, unique_key, \
                 created_at, updated_at, finished_at) \
                 VALUES (?1, ?2, ?3, 'succeeded', 0, ?4, ?5, ?4, ?4, ?4)",
            )?
            .execute(params![
                ACTION_QUEUE,
                ACTION_KIND,
                detail.to_string(),
                now,
                key
            ])?;
        Ok(self.conn().last_insert_rowid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;
    use crate::store::OpenOptions;

    fn db_with(rows: &[(&str, &str, &str)]) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let mut db = SqliteStore::open(
            &path,
            &OpenOptions {
                create: true,
                migrate: true,
                ..Default::default()
            },
        )
        .unwrap();
        db.write(|tx| {
            for (kind, state, error) in rows {
                let ids = tx.enqueue(&[NewJob::new(*kind, serde_json::json!({"n": 1}))], 1_000)?;
                let finished = matches!(*state, "succeeded" | "dead" | "cancelled");
                tx.conn().execute(
                    "UPDATE jobs SET state = ?2, finished_at = ?3, last_error = ?4, \
                     lease_until = ?5 WHERE id = ?1",
                    params![
                        ids[0].id,
                        state,
                        finished.then_some(2_000),
                        (!error.is_empty()).then_some(*error),
                        (*state == "running").then_some(9_000)
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    #[test]
    fn a_search_pages_by_id_and_filters() {
        let rows: Vec<(&str, &str, &str)> = (0..7)
            .map(|i| {
                if i % 2 == 0 {
                    ("noop", "dead", "boom 500")
                } else {
                    ("http", "succeeded", "")
                }
            })
            .collect();
        let (_dir, db) = db_with(&rows);
        let dead = JobSearch {
            state: Some(JobState::Dead),
            limit: 2,
            ..Default::default()
        };
        let page = db.web_search(&dead).unwrap();
        assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [7, 5]);
        assert_eq!(page.next_before, Some(5));
        let page = db
            .web_search(&JobSearch {
                before: Some(5),
                ..dead.clone()
            })
            .unwrap();
        assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [3, 1]);
        let text = JobSearch {
            text: Some("500".into()),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(db.web_search(&text).unwrap().jobs.len(), 4);
        assert_eq!(db.web_count_matching(&text, JobState::Dead).unwrap(), 4);
        assert_eq!(
            db.web_count_matching(&text, JobState::Cancelled).unwrap(),
            0
        );
        let groups = db.web_dead_groups(10).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].count, groups[0].error.as_str()), (4, "boom 500"));
    }

    #[test]
    fn searches_use_an_index_or_a_bounded_window_of_ids() {
        let (_dir, db) = db_with(&[("noop", "dead", "x")]);
        for state in [JobState::Dead, JobState::Queued, JobState::Running] {
            let plan = db
                .web_search_plan(&JobSearch {
                    state: Some(state),
                    ..Default::default()
                })
                .unwrap()
                .join("; ");
            // A scan of a partial index reads only the rows in that state.
            assert!(plan.contains("USING INDEX"), "{state}: {plan}");
            assert!(
                !plan.contains("SCAN jobs;") && !plan.ends_with("SCAN jobs"),
                "{state}: {plan}"
            );
        }
        let plan = db
            .web_search_plan(&JobSearch {
                text: Some("x".into()),
                ..Default::default()
            })
            .unwrap()
            .join("; ");
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid<?)"), "{plan}");
    }

    #[test]
    fn a_search_and_the_live_counts_find_jobs_behind_their_order_keys_head() {
        let (_dir, mut db) = db_with(&[("noop", "succeeded", "")]);
        let keyed = |n| NewJob::new("noop", serde_json::json!({ "n": n })).order_key("k");
        let ids = db
            .write(|tx| tx.enqueue(&[keyed(1), keyed(2)], 1_000))
            .unwrap();
        let behind = db.get(ids[1].id).unwrap();
        assert!(behind.order_blocked);
        let page = db
            .web_search(&JobSearch {
                state: Some(JobState::Queued),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let found: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
        assert_eq!(found, [ids[1].id, ids[0].id]);
        let counts = db.web_live_counts(5_000).unwrap();
        assert_eq!(counts.live["default"]["queued"], 2);
        assert_eq!(counts.oldest_ready_age_ms["default"], 4_000);
    }

    #[test]
    fn a_search_by_a_ready_state_reads_ids_downwards_once_many_jobs_wait() {
        let (_dir, mut db) = db_with(&[("noop", "dead", "x")]);
        let queued = JobSearch {
            state: Some(JobState::Queued),
            limit: 5,
            ..Default::default()
        };
        let plan = db.web_search_plan(&queued).unwrap().join("; ");
        assert!(
            plan.contains("jobs_queue_ready") && plan.contains("jobs_order_live"),
            "few waiting: both ready indexes, {plan}"
        );
        let jobs: Vec<NewJob> = (0..=READY_SORT_LIMIT)
            .map(|i| NewJob::new("noop", serde_json::json!({ "n": i })))
            .collect();
        db.write(|tx| tx.enqueue(&jobs, 1_000).map(drop)).unwrap();
        let plan = db.web_search_plan(&queued).unwrap().join("; ");
        assert!(
            plan.contains("INTEGER PRIMARY KEY") && !plan.contains("jobs_queue_ready"),
            "many waiting: {plan}"
        );
        let page = db.web_search(&queued).unwrap();
        let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
        let top = READY_SORT_LIMIT + 2;
        assert_eq!(ids, (top - 4..=top).rev().collect::<Vec<_>>());
        assert_eq!(page.next_before, Some(top - 4));
        assert!(page.jobs.iter().all(|j| j.state == JobState::Queued));
    }

    #[test]
    fn the_succeeded_count_adds_rows_finished_since_its_base() {
        let (_dir, mut db) = db_with(&[
            ("noop", "succeeded", ""),
            ("noop", "succeeded", ""),
            ("noop", "dead", "x"),
        ]);
        let base = db
            .web_succeeded_base(10_000, Duration::from_secs(1))
            .unwrap();
        assert_eq!((base.count, base.after), (2, 9_000));
        // The minutes of the hour up to the base: all three rows finished in minute 0.
        assert_eq!(base.minutes["succeeded"], BTreeMap::from([(0, 2)]));
        assert_eq!(base.minutes["dead"], BTreeMap::from([(0, 1)]));
        db.write(|tx| {
            let id = tx.enqueue(&[NewJob::new("noop", serde_json::json!({}))], 9_000)?[0].id;
            tx.conn().execute(
                "UPDATE jobs SET state = 'succeeded', finished_at = 9500 WHERE id = ?1",
                [id],
            )?;
            tx.record_web_action(&serde_json::json!({"action": "retry"}), 9_600)?;
            Ok(())
        })
        .unwrap();
        let overview = db.web_overview(10_000, Some(&base), None).unwrap();
        // Two before the base, one since; the action's record is not a succeeded job.
        assert_eq!(overview.finished["succeeded"], 3);
        assert_eq!(overview.finished["dead"], 1);
        assert_eq!(
            db.web_overview(10_000, None, None).unwrap().finished,
            overview.finished
        );
        // The chart counts every row finished in the last hour (here all, the record too).
        assert_eq!(overview.throughput["succeeded"].iter().sum::<u64>(), 4);
        assert_eq!(overview.throughput["dead"].iter().sum::<u64>(), 1);
        assert_eq!(
            db.web_overview(10_000, None, None).unwrap().throughput,
            overview.throughput,
            "the same chart with or without the base"
        );
    }

    #[test]
    fn actions_are_recorded_and_listed_newest_first() {
        let (_dir, mut db) = db_with(&[]);
        db.write(|tx| {
            tx.record_web_action(&serde_json::json!({"action": "retry", "count": 1}), 5)?;
            tx.record_web_action(&serde_json::json!({"action": "cancel", "count": 2}), 5)?;
            Ok(())
        })
        .unwrap();
        let actions = db.web_actions(10).unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0].detail["action"], "cancel");
        assert_eq!(
            db.get(actions[0].record_id).unwrap().state,
            JobState::Succeeded
        );
        let plan: Vec<String> = db
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE unique_key >= 'web-action:' \
                 AND unique_key < 'web-action;' ORDER BY unique_key DESC",
            )
            .unwrap()
            .query_map([], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(plan.join(";").contains("jobs_unique_key"), "{plan:?}");
    }
}
