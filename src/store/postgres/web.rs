//! The web page's reads on PostgreSQL ([`WebReads`]) and the SQL of its actions: the
//! overview's counts, job search with keyset paging, dead-letter groups, fan-out
//! progress, the audit rows of page actions and the live change counter.
//!
//! Shaped like the SQLite driver's (`sqlite/web.rs`) for a table with millions of
//! finished rows: counts come from the partial and `jobs_finished` indexes (and
//! `jobs_waiting`, migration 0003), the succeeded count from a recent full count plus
//! the rows finished since ([`SucceededBase`]), and a search that no index bounds reads
//! a window of at most [`SEARCH_WINDOW`] ids per page. The planner has statistics here,
//! so no index is named; state names come from [`JobState`] and are written into the
//! statements as literals, so a partial index's predicate is proven at planning.

use super::reads::{count, Terms};
use super::{PgStore, PgTx};
use crate::job::{JobId, JobState, UnixMillis};
use crate::store::web::{
    live_minutes_from, succeeded_since_base, throughput_since, throughput_slots, MinuteCounts,
    THROUGHPUT_STATES,
};
use crate::store::web::{
    ChildProgress, DeadGroup, JobPage, JobRow, JobSearch, LiveCounts, Overview, RunningJob,
    SourceFile, SucceededBase, WebAction, ACTION_KIND, SEARCH_WINDOW,
};
use crate::store::{Result, StoreError};
use std::collections::BTreeMap;
use std::time::Duration;

/// The keys of the rows that record web actions start with this and sort by time (the
/// same keys as the SQLite driver's); compared in byte order (`COLLATE "C"`, the
/// `jobs_web_actions` index), so the range holds under any database collation.
pub(super) const ACTION_KEY_PREFIX: &str = "web-action:";
pub(super) const ACTION_KEY_END: &str = "web-action;";

/// Selects the action records (`$1`, `$2`: [`ACTION_KEY_PREFIX`], [`ACTION_KEY_END`]).
pub(super) fn action_records() -> String {
    format!(
        "kind = '{ACTION_KIND}' AND unique_key COLLATE \"C\" >= $1 \
         AND unique_key COLLATE \"C\" < $2"
    )
}

const ROW_COLUMNS: &str = "id, queue, kind, state, attempts, run_at, created_at, updated_at, \
                           finished_at, parent_id, left(last_error, 200)";

fn job_row(row: &postgres::Row) -> Result<JobRow> {
    let state: String = row.get(3);
    Ok(JobRow {
        id: row.get(0),
        queue: row.get(1),
        kind: row.get(2),
        state: state.parse().map_err(StoreError::Corrupt)?,
        attempts: row.get::<_, i32>(4).max(0) as u32,
        run_at: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
        finished_at: row.get(8),
        parent_id: row.get(9),
        last_error: row.get(10),
    })
}

/// `state = 'dead'`: a state from [`JobState`], never from a request.
fn state_is(state: JobState) -> String {
    format!("state = '{}'", state.as_str())
}

/// The WHERE terms of a search (without its keyset bound), and whether an index
/// bounds it: by parent (`jobs_parent`), or by a state that has its own index.
fn search_terms(search: &JobSearch) -> (Terms, bool) {
    let mut terms = Terms {
        terms: Vec::new(),
        values: Vec::new(),
    };
    let mut indexed = false;
    if let Some(parent) = search.parent_id {
        terms.push("parent_id = ?", Box::new(parent));
        indexed = true;
    }
    if let Some(state) = search.state {
        let condition = match state {
            // `jobs_finished` is partial on finished_at.
            JobState::Dead | JobState::Cancelled | JobState::Succeeded => {
                format!("{} AND finished_at IS NOT NULL", state_is(state))
            }
            _ => state_is(state),
        };
        terms.terms.push(condition);
        // Succeeded rows are most of a big table: a window of ids finds a page of them.
        indexed |= !matches!(state, JobState::Succeeded);
    }
    if let Some(kind) = &search.kind {
        terms.push("kind = ?", Box::new(kind.clone()));
    }
    if let Some(queue) = &search.queue {
        terms.push("queue = ?", Box::new(queue.clone()));
    }
    if let Some(text) = &search.text {
        terms.push(
            "(strpos(payload::text, ?) > 0 OR strpos(coalesce(last_error, ''), ?) > 0)",
            Box::new(text.clone()),
        );
    }
    if let Some(since) = search.since {
        terms.push("created_at >= ?", Box::new(since));
    }
    if let Some(until) = search.until {
        terms.push("created_at < ?", Box::new(until));
    }
    (terms, indexed)
}

/// The SQL of a bulk action's selection: jobs in `state` matching the search's kind,
/// queue, text and times.
fn bulk_sql(search: &JobSearch, state: JobState, columns: &str) -> Result<(String, Terms)> {
    if !matches!(
        state,
        JobState::Dead | JobState::Cancelled | JobState::Queued | JobState::Retrying
    ) {
        return Err(StoreError::InvalidJob(format!(
            "a bulk action takes dead, cancelled, queued or retrying jobs, not {state} ones"
        )));
    }
    let (terms, _) = search_terms(&JobSearch {
        state: Some(state),
        before: None,
        parent_id: None,
        ..search.clone()
    });
    Ok((
        format!("SELECT {columns} FROM jobs WHERE {}", terms.condition()),
        terms,
    ))
}

impl PgStore {
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
            let n = self.web_count_finished(state, None)?;
            overview.finished.insert(state.as_str().to_string(), n);
        }
        let mut conn = self.connection()?;
        // The hour's chart: the base's minutes plus the rows finished since the base.
        overview.throughput_since = throughput_since(now);
        let from = live_minutes_from(now, base);
        let mut succeeded_minutes = BTreeMap::new();
        for state in THROUGHPUT_STATES {
            let live = finished_per_minute(&mut conn, state, from, UnixMillis::MAX)?;
            overview.throughput.insert(
                state.as_str().to_string(),
                throughput_slots(now, base, state, &live),
            );
            if state == JobState::Succeeded {
                succeeded_minutes = live;
            }
        }
        // The counts below take a connection of their own.
        drop(conn);
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
        let mut conn = self.connection()?;
        // The rows that record web actions are succeeded jobs only in form.
        let records: i64 = conn
            .query_one(
                &format!("SELECT count(*) FROM jobs WHERE {}", action_records()),
                &[&ACTION_KEY_PREFIX, &ACTION_KEY_END],
            )?
            .get(0);
        overview.finished.insert(
            JobState::Succeeded.as_str().to_string(),
            succeeded.saturating_sub(count(records)),
        );
        let running = format!(
            "SELECT id, queue, kind, worker, attempts, updated_at, lease_until FROM jobs \
             WHERE {} ORDER BY id LIMIT 200",
            state_is(JobState::Running)
        );
        overview.running = conn
            .query(&running, &[])?
            .iter()
            .map(|row| RunningJob {
                id: row.get(0),
                queue: row.get(1),
                kind: row.get(2),
                worker: row.get(3),
                attempts: row.get::<_, i32>(4).max(0) as u32,
                since: row.get(5),
                lease_until: row.get(6),
            })
            .collect();
        Ok(overview)
    }

    /// The live jobs per queue and state, and the oldest ready job's age per queue.
    pub fn web_live_counts(&self, now: UnixMillis) -> Result<LiveCounts> {
        let mut counts = LiveCounts {
            counted_at: now,
            ..LiveCounts::default()
        };
        let mut conn = self.connection()?;
        let mut add = |queue: String, state: String, n: i64| {
            counts
                .live
                .entry(queue)
                .or_default()
                .insert(state, count(n));
        };
        let mut oldest = BTreeMap::new();
        let ready = format!(
            "SELECT queue, state, count(*), min(run_at) FILTER (WHERE run_at <= $1) FROM jobs \
             WHERE ({} OR {}) GROUP BY queue, state",
            state_is(JobState::Queued),
            state_is(JobState::Retrying)
        );
        for row in conn.query(&ready, &[&now])? {
            let queue: String = row.get(0);
            if let Some(due) = row.get::<_, Option<i64>>(3) {
                let entry = oldest.entry(queue.clone()).or_insert(now - due);
                *entry = (*entry).max(now - due);
            }
            add(queue, row.get(1), row.get(2));
        }
        for state in [JobState::Running, JobState::Waiting] {
            let sql = format!(
                "SELECT queue, count(*) FROM jobs WHERE {} GROUP BY queue",
                state_is(state)
            );
            for row in conn.query(&sql, &[])? {
                add(row.get(0), state.as_str().to_string(), row.get(1));
            }
        }
        counts.oldest_ready_age_ms = oldest;
        Ok(counts)
    }

    /// Jobs in a finished state, all of them or those that finished after `after`: a
    /// range of `jobs_finished`.
    pub fn web_count_finished(&self, state: JobState, after: Option<UnixMillis>) -> Result<u64> {
        let n: i64 = self
            .connection()?
            .query_one(
                "SELECT count(*) FROM jobs WHERE state = $1 AND finished_at IS NOT NULL \
                 AND finished_at > $2",
                &[&state.as_str(), &after.unwrap_or(i64::MIN)],
            )?
            .get(0);
        Ok(count(n))
    }

    /// The succeeded jobs that finished up to `now - margin`: one statement, so one
    /// snapshot.
    pub fn web_succeeded_base(&self, now: UnixMillis, margin: Duration) -> Result<SucceededBase> {
        let after = now - margin.as_millis() as i64;
        let mut conn = self.connection()?;
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM jobs WHERE state = $1 AND finished_at IS NOT NULL \
                 AND finished_at <= $2",
                &[&JobState::Succeeded.as_str(), &after],
            )?
            .get(0);
        let mut minutes = MinuteCounts::new();
        for state in THROUGHPUT_STATES {
            let counts = finished_per_minute(&mut conn, state, throughput_since(after), after)?;
            minutes.insert(state.as_str().to_string(), counts);
        }
        Ok(SucceededBase {
            count: count(n),
            after,
            minutes,
        })
    }

    pub fn web_search(&self, search: &JobSearch) -> Result<JobPage> {
        let (sql, terms, floor) = self.search_query(search)?;
        let limit = search.limit.clamp(1, 1000);
        let sql = format!("{sql} ORDER BY id DESC LIMIT {}", limit + 1);
        let jobs = self
            .connection()?
            .query(&sql, &terms.params())?
            .iter()
            .map(job_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_rows(jobs, limit, floor))
    }

    /// The search's `SELECT ... FROM jobs WHERE ...`, its parameters, and the lowest id
    /// of the window it reads, if it reads one.
    fn search_query(&self, search: &JobSearch) -> Result<(String, Terms, Option<JobId>)> {
        let (mut terms, indexed) = search_terms(search);
        let top = match search.before {
            Some(before) => before,
            None => self
                .connection()?
                .query_one("SELECT coalesce(max(id), 0) + 1 FROM jobs", &[])?
                .get(0),
        };
        terms.push("id < ?", Box::new(top));
        let mut floor = None;
        if !indexed && top - SEARCH_WINDOW > 1 {
            terms.push("id >= ?", Box::new(top - SEARCH_WINDOW));
            floor = Some(top - SEARCH_WINDOW);
        }
        Ok((
            format!("SELECT {ROW_COLUMNS} FROM jobs WHERE {}", terms.condition()),
            terms,
            floor,
        ))
    }

    /// PostgreSQL's plan for a search, one line per step.
    pub fn web_search_plan(&self, search: &JobSearch) -> Result<Vec<String>> {
        let (sql, terms, _) = self.search_query(search)?;
        Ok(self
            .connection()?
            .query(
                &format!("EXPLAIN {sql} ORDER BY id DESC LIMIT 51"),
                &terms.params(),
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub fn web_count_matching(&self, search: &JobSearch, state: JobState) -> Result<u64> {
        let (sql, terms) = bulk_sql(search, state, "count(*)")?;
        let n: i64 = self.connection()?.query_one(&sql, &terms.params())?.get(0);
        Ok(count(n))
    }

    pub fn web_dead_groups(&self, limit: usize) -> Result<Vec<DeadGroup>> {
        let sql = format!(
            "SELECT kind, substr(coalesce(last_error, ''), 1, 120) AS error, count(*), \
             max(finished_at), max(id) FROM jobs WHERE {} AND finished_at IS NOT NULL \
             GROUP BY kind, error ORDER BY count(*) DESC, max(id) DESC LIMIT $1",
            state_is(JobState::Dead)
        );
        Ok(self
            .connection()?
            .query(&sql, &[&(limit as i64)])?
            .iter()
            .map(|row| DeadGroup {
                kind: row.get(0),
                error: row.get(1),
                count: count(row.get(2)),
                last_finished_at: row.get(3),
                newest_id: row.get(4),
            })
            .collect())
    }

    pub fn web_child_progress(&self, parent: JobId) -> Result<ChildProgress> {
        let mut progress = ChildProgress {
            states: self.children_counts(parent)?,
            ..Default::default()
        };
        progress.total = progress.states.values().sum();
        if progress.total > 0 {
            let row = self.connection()?.query_one(
                "SELECT min(created_at), max(finished_at) FROM jobs WHERE parent_id = $1",
                &[&parent],
            )?;
            progress.first_created_at = row.get(0);
            progress.last_finished_at = row.get(1);
        }
        Ok(progress)
    }

    pub fn web_source_file(&self, job: JobId) -> Result<Option<SourceFile>> {
        Ok(self
            .connection()?
            .query(
                "SELECT watch, name, sha256, size, ingested_at FROM ingest_files \
                 WHERE job_id = $1 ORDER BY ingested_at DESC LIMIT 1",
                &[&job],
            )?
            .first()
            .map(|row| SourceFile {
                watch: row.get(0),
                name: row.get(1),
                sha256: row.get(2),
                size: count(row.get(3)),
                ingested_at: row.get(4),
            }))
    }

    pub fn web_actions(&self, limit: usize) -> Result<Vec<WebAction>> {
        let sql = format!(
            "SELECT id, created_at, payload FROM jobs WHERE {} \
             ORDER BY unique_key COLLATE \"C\" DESC LIMIT $3",
            action_records()
        );
        Ok(self
            .connection()?
            .query(
                &sql,
                &[&ACTION_KEY_PREFIX, &ACTION_KEY_END, &(limit as i64)],
            )?
            .iter()
            .map(|r| WebAction {
                record_id: r.get(0),
                at: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }

    /// The counter migration 0003's triggers move (`is_called` counts the first move).
    pub fn web_change_token(&self) -> Result<i64> {
        Ok(self
            .connection()?
            .query_one("SELECT last_value + is_called::int FROM jobd_changes", &[])?
            .get(0))
    }
}

impl PgTx<'_> {
    /// The ids a bulk action takes, at most `cap`, oldest first.
    pub fn web_ids_matching(
        &self,
        search: &JobSearch,
        state: JobState,
        cap: usize,
    ) -> Result<Vec<JobId>> {
        let (sql, terms) = bulk_sql(search, state, "id")?;
        Ok(self
            .rows(&format!("{sql} ORDER BY id LIMIT {cap}"), &terms.params())?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Records a web page action as a finished row of its own, in the action's
    /// transaction (see the SQLite driver). Returns the row's id.
    pub fn record_web_action(&self, detail: &serde_json::Value, now: UnixMillis) -> Result<JobId> {
        // Zero-padded time first so the keys sort by time; the count after it keeps two
        // actions in one millisecond apart.
        let seq: i64 = self.rows(
            &format!("SELECT count(*) FROM jobs WHERE {}", action_records()),
            &[&ACTION_KEY_PREFIX, &ACTION_KEY_END],
        )?[0]
            .get(0);
        let key = format!("{ACTION_KEY_PREFIX}{now:015}:{seq:09}");
        let (queue, kind) = (crate::store::web::ACTION_QUEUE, ACTION_KIND);
        Ok(self.rows(
            "INSERT INTO jobs (queue, kind, payload, state, attempts, run_at, unique_key, \
             created_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, 'succeeded', 0, $4, $5, $4, $4, $4) RETURNING id",
            &[&queue, &kind, detail, &now, &key],
        )?[0]
            .get(0))
    }
}

/// Jobs of a finished state per minute (`finished_at / 60 000`) that finished from `from`
/// up to `until`, both included.
fn finished_per_minute(
    conn: &mut postgres::Client,
    state: JobState,
    from: UnixMillis,
    until: UnixMillis,
) -> Result<BTreeMap<i64, u64>> {
    Ok(conn
        .query(
            "SELECT finished_at / 60000, count(*) FROM jobs WHERE state = $1 \
             AND finished_at IS NOT NULL AND finished_at >= $2 AND finished_at <= $3 GROUP BY 1",
            &[&state.as_str(), &from, &until],
        )?
        .iter()
        .map(|row| (row.get::<_, i64>(0), count(row.get(1))))
        .collect())
}
