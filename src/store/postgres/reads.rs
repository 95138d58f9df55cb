//! The reads on PostgreSQL: one job with its attempts and children, filtered lists, the
//! counts behind `jobctl stats` and `top`, ingest and pause state, progress, sync state.
//! Each read takes a pooled connection for its statements.

use super::super::{
    Attempt, AttemptProgress, ChildrenSummary, Death, JobFilter, PendingFolder, QueuePause, Result,
    RunningJob, Stats, StoreError, SyncState,
};
use super::queue::{job_from_row, JOB_COLUMNS};
use super::PgStore;
use crate::job::{Job, JobId, JobState, UnixMillis};
use postgres::types::ToSql;
use std::collections::{BTreeMap, HashMap};

/// A filter's WHERE terms with `$n` parameters, and their values.
pub(super) struct Terms {
    pub terms: Vec<String>,
    pub values: Vec<Box<dyn ToSql + Sync>>,
}

impl Terms {
    pub fn push(&mut self, sql: &str, value: Box<dyn ToSql + Sync>) {
        self.values.push(value);
        self.terms
            .push(sql.replace('?', &format!("${}", self.values.len())));
    }

    pub fn condition(&self) -> String {
        if self.terms.is_empty() {
            "true".into()
        } else {
            self.terms.join(" AND ")
        }
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.iter().map(|v| v.as_ref()).collect()
    }
}

/// The WHERE terms of a job filter (only the ones set).
pub(super) fn filter_terms(filter: &JobFilter) -> Terms {
    let mut t = Terms {
        terms: Vec::new(),
        values: Vec::new(),
    };
    if let Some(state) = filter.state {
        t.push("state = ?", Box::new(state.as_str().to_string()));
    }
    if let Some(kind) = &filter.kind {
        t.push("kind = ?", Box::new(kind.clone()));
    }
    if let Some(queue) = &filter.queue {
        t.push("queue = ?", Box::new(queue.clone()));
    }
    if let Some(parent) = filter.parent_id {
        t.push("parent_id = ?", Box::new(parent));
    }
    if let Some(text) = &filter.error_contains {
        t.push("strpos(last_error, ?) > 0", Box::new(text.clone()));
    }
    if let Some(text) = &filter.payload_contains {
        t.push("strpos(payload::text, ?) > 0", Box::new(text.clone()));
    }
    if let Some(since) = filter.created_since {
        t.push("created_at >= ?", Box::new(since));
    }
    if let Some(until) = filter.created_until {
        t.push("created_at < ?", Box::new(until));
    }
    if let Some(before) = filter.before_id {
        t.push("id < ?", Box::new(before));
    }
    t
}

fn list_sql(filter: &JobFilter) -> (String, Terms) {
    let terms = filter_terms(filter);
    let limit = if filter.limit == 0 {
        "ALL".to_string()
    } else {
        filter.limit.to_string()
    };
    (
        format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {} ORDER BY id DESC LIMIT {limit}",
            terms.condition()
        ),
        terms,
    )
}

pub(super) fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl PgStore {
    fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<postgres::Row>> {
        Ok(self.connection()?.query(sql, params)?)
    }

    pub fn get(&self, id: JobId) -> Result<Job> {
        self.read(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
            &[&id],
        )?
        .first()
        .map(job_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound(id))
    }

    pub fn attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        Ok(self
            .read(
                "SELECT attempt, worker, started_at, finished_at, outcome, error, detail \
                 FROM job_attempts WHERE job_id = $1 ORDER BY attempt, id",
                &[&id],
            )?
            .iter()
            .map(|row| {
                let started_at: i64 = row.get(2);
                let finished_at: i64 = row.get(3);
                Attempt {
                    attempt: row.get::<_, i32>(0).max(0) as u32,
                    worker: row.get(1),
                    started_at,
                    finished_at,
                    duration_ms: finished_at - started_at,
                    outcome: row.get(4),
                    error: row.get(5),
                    detail: row.get(6),
                }
            })
            .collect())
    }

    pub fn children_counts(&self, id: JobId) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .read(
                "SELECT state, count(*) FROM jobs WHERE parent_id = $1 GROUP BY state",
                &[&id],
            )?
            .iter()
            .map(|r| (r.get(0), count(r.get(1))))
            .collect())
    }

    pub fn first_attempt_at(&self, id: JobId) -> Result<Option<UnixMillis>> {
        Ok(self.read(
            "SELECT min(started_at) FROM job_attempts WHERE job_id = $1",
            &[&id],
        )?[0]
            .get(0))
    }

    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let (sql, terms) = list_sql(filter);
        self.read(&sql, &terms.params())?
            .iter()
            .map(job_from_row)
            .collect()
    }

    /// PostgreSQL's plan for the query [`PgStore::list`] runs, one line per step.
    pub fn list_plan(&self, filter: &JobFilter) -> Result<Vec<String>> {
        let (sql, terms) = list_sql(filter);
        Ok(self
            .read(&format!("EXPLAIN {sql}"), &terms.params())?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub fn stats(&self, now: UnixMillis) -> Result<Stats> {
        let mut stats = Stats::default();
        let mut conn = self.connection()?;
        for row in conn.query(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state",
            &[],
        )? {
            stats
                .queues
                .entry(row.get(0))
                .or_default()
                .states
                .insert(row.get(1), count(row.get(2)));
        }
        for row in conn.query(
            "SELECT queue, count(*) FROM jobs WHERE state = 'running' AND started_at IS NULL \
             GROUP BY queue",
            &[],
        )? {
            let q = stats.queues.entry(row.get(0)).or_default();
            q.claimed = count(row.get(1));
            let running = q
                .states
                .entry(JobState::Running.as_str().to_string())
                .or_default();
            *running = running.saturating_sub(q.claimed);
            if *running == 0 {
                q.states.remove(JobState::Running.as_str());
            }
        }
        for row in conn.query(
            "SELECT queue, min(run_at) FROM jobs WHERE state IN ('queued', 'retrying') \
             AND run_at <= $1 GROUP BY queue",
            &[&now],
        )? {
            let run_at: i64 = row.get(1);
            stats
                .queues
                .entry(row.get(0))
                .or_default()
                .oldest_ready_age_ms = Some(now - run_at);
        }
        drop(conn);
        for pause in self.paused_queues()? {
            let q = stats.queues.entry(pause.queue).or_default();
            q.paused = true;
            q.paused_at = Some(pause.paused_at);
        }
        for (window, into) in [
            (60_000i64, &mut stats.finished_last_minute),
            (3_600_000, &mut stats.finished_last_hour),
        ] {
            for state in [JobState::Succeeded, JobState::Dead, JobState::Cancelled] {
                let n: i64 = self.read(
                    "SELECT count(*) FROM jobs WHERE state = $1 AND finished_at IS NOT NULL \
                     AND finished_at >= $2",
                    &[&state.as_str(), &(now - window)],
                )?[0]
                    .get(0);
                into.insert(state.as_str().to_string(), count(n));
            }
        }
        Ok(stats)
    }

    pub fn cancel_requests(&self) -> Result<Vec<JobId>> {
        Ok(self
            .read(
                "SELECT id FROM jobs WHERE state = 'running' AND cancel_requested = 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub fn live_counts(&self) -> Result<BTreeMap<String, u64>> {
        let row = &self.read(
            "SELECT (SELECT count(*) FROM jobs WHERE state IN ('queued', 'retrying')), \
                    (SELECT count(*) FROM jobs WHERE state = 'running')",
            &[],
        )?[0];
        Ok(BTreeMap::from([
            ("ready".to_string(), count(row.get(0))),
            ("running".to_string(), count(row.get(1))),
        ]))
    }

    pub fn attempt_counts(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .read(
                "SELECT outcome, count(*) FROM job_attempts GROUP BY outcome",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), count(r.get(1))))
            .collect())
    }

    pub fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        Ok(self
            .read(
                "SELECT job_id FROM ingest_files WHERE token = $1",
                &[&token],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    /// Folder sets still waiting for files, oldest first: this node's and those of no
    /// node (the watcher that recorded them is the one that can time them out).
    pub fn pending_folders(&self) -> Result<Vec<PendingFolder>> {
        Ok(self
            .read(
                "SELECT watch, folder, first_seen, missing FROM ingest_pending \
                 WHERE node IS NULL OR node = $1 ORDER BY first_seen, watch, folder",
                &[&self.node()],
            )?
            .iter()
            .map(|r| PendingFolder {
                watch: r.get(0),
                folder: r.get(1),
                first_seen: r.get(2),
                missing: serde_json::from_value(r.get(3)).unwrap_or_default(),
            })
            .collect())
    }

    pub fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>> {
        Ok(self
            .read(
                "SELECT id, queue, kind, worker, attempts, updated_at, lease_until, started_at \
                 FROM jobs WHERE state = 'running' ORDER BY worker, updated_at, id LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| RunningJob {
                id: r.get(0),
                queue: r.get(1),
                kind: r.get(2),
                worker: r.get(3),
                attempt: r.get::<_, i32>(4).max(0) as u32,
                since: r.get(5),
                lease_until: r.get(6),
                started_at: r.get(7),
            })
            .collect())
    }

    pub fn recent_deaths(&self, limit: usize) -> Result<Vec<Death>> {
        Ok(self
            .read(
                "SELECT id, queue, kind, finished_at, attempts, last_error FROM jobs \
                 WHERE state = 'dead' AND finished_at IS NOT NULL \
                 ORDER BY finished_at DESC, id DESC LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| Death {
                id: r.get(0),
                queue: r.get(1),
                kind: r.get(2),
                finished_at: r.get(3),
                attempts: r.get::<_, i32>(4).max(0) as u32,
                last_error: r.get(5),
            })
            .collect())
    }

    pub fn paused_queues(&self) -> Result<Vec<QueuePause>> {
        Ok(self
            .read(
                "SELECT queue, paused_at, reason FROM queue_pauses ORDER BY queue",
                &[],
            )?
            .iter()
            .map(|r| QueuePause {
                queue: r.get(0),
                paused_at: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    pub fn count_matching(&self, filter: &JobFilter) -> Result<BTreeMap<JobState, u64>> {
        let terms = filter_terms(filter);
        let mut counts = BTreeMap::new();
        for row in self.read(
            &format!(
                "SELECT state, count(*) FROM jobs WHERE {} GROUP BY state",
                terms.condition()
            ),
            &terms.params(),
        )? {
            let state: String = row.get(0);
            counts.insert(
                state.parse().map_err(StoreError::Corrupt)?,
                count(row.get(1)),
            );
        }
        Ok(counts)
    }

    pub fn matching_ids(
        &self,
        filter: &JobFilter,
        states: &[JobState],
        after: JobId,
        chunk: usize,
    ) -> Result<Vec<JobId>> {
        let mut terms = filter_terms(filter);
        let names: Vec<String> = states.iter().map(|s| s.as_str().to_string()).collect();
        terms.push("state = ANY(?)", Box::new(names));
        terms.push("id > ?", Box::new(after));
        Ok(self
            .read(
                &format!(
                    "SELECT id FROM jobs WHERE {} ORDER BY id LIMIT {chunk}",
                    terms.condition()
                ),
                &terms.params(),
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub fn children_page(&self, id: JobId, after: JobId, limit: usize) -> Result<Vec<Job>> {
        self.read(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&id, &after, &(limit as i64)],
        )?
        .iter()
        .map(job_from_row)
        .collect()
    }

    pub fn children_summary(&self, id: JobId) -> Result<ChildrenSummary> {
        let mut summary = ChildrenSummary {
            states: self.children_counts(id)?,
            ..Default::default()
        };
        summary.total = summary.states.values().sum();
        if summary.total == 0 {
            return Ok(summary);
        }
        let row = &self.read(
            "SELECT min(created_at), max(finished_at), \
             count(*) FILTER (WHERE state IN ('succeeded', 'dead', 'cancelled')) \
             FROM jobs WHERE parent_id = $1",
            &[&id],
        )?[0];
        summary.first_created_at = row.get(0);
        summary.last_finished_at = row.get(1);
        summary.finished = count(row.get(2));
        Ok(summary)
    }

    pub fn progress_of(&self, id: JobId) -> Result<Vec<AttemptProgress>> {
        Ok(self
            .read(
                "SELECT attempt, progress, updated_at FROM job_progress WHERE job_id = $1 \
                 ORDER BY attempt",
                &[&id],
            )?
            .iter()
            .map(|r| AttemptProgress {
                attempt: r.get::<_, i32>(0).max(0) as u32,
                progress: r.get(1),
                updated_at: r.get(2),
            })
            .collect())
    }

    pub fn latest_progress(&self, ids: &[JobId]) -> Result<HashMap<JobId, serde_json::Value>> {
        Ok(self
            .read(
                "SELECT DISTINCT ON (job_id) job_id, progress FROM job_progress \
                 WHERE job_id = ANY($1) ORDER BY job_id, attempt DESC",
                &[&ids],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub fn sync_states(&self) -> Result<Vec<SyncState>> {
        Ok(self
            .read(
                "SELECT pipeline, high_water, runs, last_run_items, last_run_pages, \
                 last_run_job, updated_at FROM sync_state ORDER BY pipeline",
                &[],
            )?
            .iter()
            .map(|r| SyncState {
                pipeline: r.get(0),
                high_water: r.get(1),
                runs: count(r.get(2)),
                last_run_items: count(r.get(3)),
                last_run_pages: r.get::<_, i64>(4).clamp(0, u32::MAX as i64) as u32,
                last_run_job: r.get(5),
                updated_at: r.get(6),
            })
            .collect())
    }

    pub fn sync_high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>> {
        Ok(self
            .read(
                "SELECT high_water FROM sync_state WHERE pipeline = $1",
                &[&pipeline],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    pub fn live_pipeline_jobs(&self, kind: &str, pipeline: &str) -> Result<u64> {
        Ok(count(
            self.read(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running', 'retrying') \
                 AND kind = $1 AND payload->>'pipeline' = $2",
                &[&kind, &pipeline],
            )?[0]
                .get(0),
        ))
    }

    /// See [`crate::store::Store::greatest_unique_key`]. `starts_with` and the "C"
    /// collation, not a range on the index: a database collated by a language may sort
    /// punctuation apart from bytes. It is read once per pipeline when a daemon starts
    /// leading, so the scan is rare.
    pub fn greatest_unique_key(&self, prefix: &str) -> Result<Option<String>> {
        Ok(self
            .read(
                "SELECT unique_key FROM jobs WHERE starts_with(unique_key, $1) \
                 ORDER BY unique_key COLLATE \"C\" DESC LIMIT 1",
                &[&prefix],
            )?
            .first()
            .map(|r| r.get(0)))
    }
}
