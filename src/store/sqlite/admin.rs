//! The operator's reads: one job with its attempts and children, filtered lists, and the
//! counts behind `jobctl stats`.

use super::guards::{ready_rows, with_guards};
use super::queue::{job_from_row, JOB_COLUMNS};
use super::{Result, SqliteStore, StoreError};
use crate::job::{Job, JobId, JobState, UnixMillis};
use crate::store::{Attempt, JobFilter, Stats};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;
use std::sync::LazyLock;

impl JobFilter {
    /// The WHERE terms and their values. Only the terms set are written, so the planner
    /// sees plain conditions (an `?n IS NULL OR` chain hides every index from it).
    pub(super) fn terms(&self) -> (Vec<String>, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as V;
        let mut terms = Vec::new();
        let mut values: Vec<V> = Vec::new();
        let mut term = |sql: &str, value: V| {
            values.push(value);
            terms.push(sql.replace('?', &format!("?{}", values.len())));
        };
        if let Some(state) = self.state {
            term("state = ?", V::Text(state.as_str().into()));
        }
        if let Some(kind) = &self.kind {
            term("kind = ?", V::Text(kind.clone()));
        }
        if let Some(queue) = &self.queue {
            term("queue = ?", V::Text(queue.clone()));
        }
        if let Some(parent) = self.parent_id {
            term("parent_id = ?", V::Integer(parent));
        }
        if let Some(text) = &self.error_contains {
            term("instr(last_error, ?) > 0", V::Text(text.clone()));
        }
        if let Some(text) = &self.payload_contains {
            term("instr(payload, ?) > 0", V::Text(text.clone()));
        }
        if let Some(since) = self.created_since {
            term("created_at >= ?", V::Integer(since));
        }
        if let Some(until) = self.created_until {
            term("created_at < ?", V::Integer(until));
        }
        if let Some(before) = self.before_id {
            term("id < ?", V::Integer(before));
        }
        (terms, values)
    }

    /// `SELECT ... WHERE ... ORDER BY id DESC LIMIT n`: the query `list` runs.
    fn list_sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        let (terms, mut values) = self.terms();
        let condition = if terms.is_empty() {
            "1".to_string()
        } else {
            terms.join(" AND ")
        };
        values.push(rusqlite::types::Value::Integer(if self.limit == 0 {
            -1
        } else {
            self.limit as i64
        }));
        (
            format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE {condition} ORDER BY id DESC LIMIT ?{}",
                values.len()
            ),
            values,
        )
    }
}

impl SqliteStore {
    pub fn get(&self, id: JobId) -> Result<Job> {
        self.conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound(id))
    }

    pub fn attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempt, worker, started_at, finished_at, outcome, error, detail \
             FROM job_attempts WHERE job_id = ?1 ORDER BY attempt, id",
        )?;
        let rows = stmt.query_map([id], |row| {
            let started_at: i64 = row.get(2)?;
            let finished_at: i64 = row.get(3)?;
            let detail: Option<String> = row.get(6)?;
            Ok(Attempt {
                attempt: row.get(0)?,
                worker: row.get(1)?,
                started_at,
                finished_at,
                duration_ms: finished_at - started_at,
                outcome: row.get(4)?,
                error: row.get(5)?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many of a job's children are in each state.
    pub fn children_counts(&self, id: JobId) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, count(*) FROM jobs WHERE parent_id = ?1 GROUP BY state",
        )?;
        let rows = stmt.query_map([id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()?)
    }

    /// When a job's first recorded attempt started.
    pub fn first_attempt_at(&self, id: JobId) -> Result<Option<UnixMillis>> {
        Ok(self
            .conn
            .prepare_cached("SELECT min(started_at) FROM job_attempts WHERE job_id = ?1")?
            .query_row([id], |row| row.get(0))?)
    }

    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let (sql, values) = filter.list_sql();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), job_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// SQLite's plan for the query [`SqliteStore::list`] runs with this filter, one line per step
    /// (`SEARCH jobs USING INTEGER PRIMARY KEY (rowid<?)`, ...): how a test shows that
    /// paging walks the primary key rather than scanning and sorting.
    pub fn list_plan(&self, filter: &JobFilter) -> Result<Vec<String>> {
        let (sql, values) = filter.list_sql();
        let mut stmt = self.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| row.get(3))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    pub fn stats(&self, now: UnixMillis) -> Result<Stats> {
        let mut stats = Stats::default();
        let mut counts = self
            .conn
            .prepare_cached("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")?;
        let rows = counts.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (queue, state, count) = row?;
            stats
                .queues
                .entry(queue)
                .or_default()
                .states
                .insert(state, count);
        }
        // A start is recorded on its row a dispatcher turn after it happens; until then
        // the job counts as claimed.
        let mut claimed = self.conn.prepare_cached(with_guards(
            "SELECT queue, count(*) FROM jobs WHERE {running} AND started_at IS NULL \
             GROUP BY queue",
        ))?;
        let rows = claimed.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (queue, count) = row?;
            let q = stats.queues.entry(queue).or_default();
            q.claimed = count;
            let running = q
                .states
                .entry(JobState::Running.as_str().to_string())
                .or_default();
            *running = running.saturating_sub(count);
            if *running == 0 {
                q.states.remove(JobState::Running.as_str());
            }
        }
        static OLDEST: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT queue, min(run_at) FROM ({}) WHERE run_at <= ?1 GROUP BY queue",
                ready_rows("queue, run_at")
            )
        });
        let mut oldest = self.conn.prepare_cached(&OLDEST)?;
        let rows = oldest.query_map([now], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (queue, run_at) = row?;
            stats.queues.entry(queue).or_default().oldest_ready_age_ms = Some(now - run_at);
        }
        for pause in self.paused_queues()? {
            let q = stats.queues.entry(pause.queue).or_default();
            q.paused = true;
            q.paused_at = Some(pause.paused_at);
        }
        for (window, into) in [
            (60_000, &mut stats.finished_last_minute),
            (3_600_000, &mut stats.finished_last_hour),
        ] {
            for state in [JobState::Succeeded, JobState::Dead, JobState::Cancelled] {
                let count: u64 = self
                    .conn
                    .prepare_cached(
                        "SELECT count(*) FROM jobs WHERE state = ?1 AND finished_at IS NOT NULL \
                     AND finished_at >= ?2",
                    )?
                    .query_row(params![state.as_str(), now - window], |row| row.get(0))?;
                into.insert(state.as_str().to_string(), count);
            }
        }
        Ok(stats)
    }

    /// Running jobs an operator asked to stop.
    pub fn cancel_requests(&self) -> Result<Vec<JobId>> {
        let mut stmt = self.conn.prepare_cached(with_guards(
            "SELECT id FROM jobs WHERE {running} AND cancel_requested = 1",
        ))?;
        let ids = stmt.query_map([], |row| row.get(0))?;
        Ok(ids.collect::<rusqlite::Result<Vec<JobId>>>()?)
    }

    /// Jobs in live states per state, cheap enough to ask often (partial indexes only).
    pub fn live_counts(&self) -> Result<BTreeMap<String, u64>> {
        static READY: LazyLock<String> =
            LazyLock::new(|| format!("SELECT count(*) FROM ({})", ready_rows("1")));
        let mut out = BTreeMap::new();
        for (state, sql) in [
            ("ready", READY.as_str()),
            (
                "running",
                with_guards("SELECT count(*) FROM jobs WHERE {running}"),
            ),
        ] {
            let n: u64 = self
                .conn
                .prepare_cached(sql)?
                .query_row([], |row| row.get(0))?;
            out.insert(state.to_string(), n);
        }
        Ok(out)
    }
}

impl SqliteStore {
    /// Attempts recorded per outcome (`succeeded`, `retry`, `dead`, ...). Purging finished
    /// jobs removes their attempts too, so these can go down.
    pub fn attempt_counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT outcome, count(*) FROM job_attempts GROUP BY outcome")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<BTreeMap<String, u64>>>()?)
    }
}
