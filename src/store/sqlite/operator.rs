//! What operators control beyond one job: queue pauses, bulk actions on the jobs a
//! filter picks (in chunks of ids, each chunk one short transaction), run-now, and the
//! progress handlers report while an attempt runs.

use super::guards::{state_guard, states_guard, with_guards};
use super::queue::{job_from_row, SqliteTx, JOB_COLUMNS};
use super::{Result, SqliteStore, StoreError};
use crate::job::{Job, JobId, JobState, Transition, UnixMillis};
use crate::store::{AttemptProgress, ChildrenSummary, JobFilter, QueuePause};
use rusqlite::{params, OptionalExtension};
use std::collections::{BTreeMap, HashMap};

fn paused_queues_in(conn: &rusqlite::Connection) -> Result<Vec<QueuePause>> {
    let mut stmt =
        conn.prepare_cached("SELECT queue, paused_at, reason FROM queue_pauses ORDER BY queue")?;
    let rows = stmt.query_map([], |row| {
        Ok(QueuePause {
            queue: row.get(0)?,
            paused_at: row.get(1)?,
            reason: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl SqliteStore {
    pub fn paused_queues(&self) -> Result<Vec<QueuePause>> {
        paused_queues_in(&self.conn)
    }

    /// How many jobs the filter picks, per state (a bulk action's dry run).
    pub fn count_matching(&self, filter: &JobFilter) -> Result<BTreeMap<JobState, u64>> {
        let (terms, values) = filter.terms();
        let condition = if terms.is_empty() {
            "1".to_string()
        } else {
            terms.join(" AND ")
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT state, count(*) FROM jobs WHERE {condition} GROUP BY state"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let (state, n) = row?;
            counts.insert(state.parse().map_err(StoreError::Corrupt)?, n);
        }
        Ok(counts)
    }

    /// The next chunk of ids the filter picks among jobs in `states`, ascending from
    /// `after`: a bulk action reads a chunk, acts on it in one transaction, and goes on
    /// from its last id, so no transaction holds the writer for long.
    pub fn matching_ids(
        &self,
        filter: &JobFilter,
        states: &[JobState],
        after: JobId,
        chunk: usize,
    ) -> Result<Vec<JobId>> {
        let (mut terms, mut values) = filter.terms();
        terms.push(states_guard(states));
        values.push(after.into());
        terms.push(format!("id > ?{}", values.len()));
        values.push((chunk as i64).into());
        let sql = format!(
            "SELECT id FROM jobs WHERE {} ORDER BY id LIMIT ?{}",
            terms.join(" AND "),
            values.len()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<JobId>>>()?)
    }

    /// A job's children in id order, a page at a time (ids above `after`).
    pub fn children_page(&self, id: JobId, after: JobId, limit: usize) -> Result<Vec<Job>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![id, after, limit as i64], job_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        let (first, last, finished): (Option<i64>, Option<i64>, u64) =
            self.conn.prepare_cached(with_guards(
                "SELECT min(created_at), max(finished_at), sum({terminal}) FROM jobs WHERE parent_id = ?1"
            ))?
            .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        summary.first_created_at = first;
        summary.last_finished_at = last;
        summary.finished = finished;
        Ok(summary)
    }

    /// Every attempt's reported progress for one job.
    pub fn progress_of(&self, id: JobId) -> Result<Vec<AttemptProgress>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempt, progress, updated_at FROM job_progress WHERE job_id = ?1 ORDER BY attempt",
        )?;
        let rows = stmt.query_map([id], |row| {
            let text: String = row.get(1)?;
            Ok(AttemptProgress {
                attempt: row.get(0)?,
                progress: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                updated_at: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The latest attempt's progress of each of these jobs that has any (for `list`).
    pub fn latest_progress(&self, ids: &[JobId]) -> Result<HashMap<JobId, serde_json::Value>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT progress FROM job_progress WHERE job_id = ?1 ORDER BY attempt DESC LIMIT 1",
        )?;
        let mut found = HashMap::new();
        for id in ids {
            let mut rows = stmt.query([id])?;
            if let Some(row) = rows.next()? {
                let text: String = row.get(0)?;
                if let Ok(value) = serde_json::from_str(&text) {
                    found.insert(*id, value);
                }
            }
        }
        Ok(found)
    }
}

impl SqliteTx<'_> {
    /// Pauses a queue: no daemon claims from it until it is resumed. Returns false if it
    /// was paused already (the first pause's time is kept).
    pub fn pause_queue(&self, queue: &str, reason: Option<&str>, now: UnixMillis) -> Result<bool> {
        crate::job::check_name("queue", queue)
            .map_err(|e| StoreError::InvalidJob(e.to_string()))?;
        Ok(self
            .conn()
            .prepare_cached(
                "INSERT INTO queue_pauses (queue, paused_at, reason) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (queue) DO NOTHING",
            )?
            .execute(params![queue, now, reason])?
            == 1)
    }

    /// Resumes a paused queue. Returns false if it was not paused.
    pub fn resume_queue(&self, queue: &str) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM queue_pauses WHERE queue = ?1")?
            .execute([queue])?
            == 1)
    }

    /// The paused queues' names, read inside the claim's own transaction so a pause
    /// committed before it is always honoured.
    pub fn paused_queue_names(&self) -> Result<Vec<String>> {
        Ok(paused_queues_in(self.conn())?
            .into_iter()
            .map(|p| p.queue)
            .collect())
    }

    /// Sends those of these jobs that are dead or cancelled round again, as
    /// [`SqliteTx::revive`] does; the others (moved on since they were picked) are skipped.
    /// Returns the ids revived.
    pub fn revive_where_allowed(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?2, finished_at = NULL, \
             cancel_requested = 0, worker = NULL, updated_at = ?2 WHERE id = ?1 AND {} \
             RETURNING order_key",
            state_guard(Transition::Revive)
        ))?;
        let mut revived = Vec::new();
        let mut keyed = Vec::new();
        for id in ids {
            let key: Option<Option<String>> = stmt
                .query_row(params![id, now], |row| row.get(0))
                .optional()?;
            if let Some(key) = key {
                revived.push(*id);
                keyed.extend(key.map(|key| (*id, key)));
            }
        }
        self.order_rejoined(&mut keyed)?;
        Ok(revived)
    }

    /// Deletes those of these jobs whose state allows it ([`JobState::DELETABLE`]), with
    /// their attempts and progress. Returns how many went.
    pub fn delete_where_allowed(&self, ids: &[JobId]) -> Result<usize> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "DELETE FROM jobs WHERE id = ?1 AND {} RETURNING order_key",
            states_guard(&JobState::DELETABLE)
        ))?;
        let mut deleted = 0;
        let mut keys = Vec::new();
        for id in ids {
            let key: Option<Option<String>> = stmt.query_row([id], |row| row.get(0)).optional()?;
            if let Some(key) = key {
                deleted += 1;
                keys.extend(key);
            }
        }
        // A deleted job that was unfinished may have been its key's head.
        for key in &keys {
            self.order_left(key)?;
        }
        Ok(deleted)
    }

    /// `jobctl run-now`: a queued (delayed) or retrying job becomes queued and due now.
    /// A job in another state is refused, naming its state.
    pub fn run_now(&self, id: JobId, now: UnixMillis) -> Result<()> {
        let changed = self
            .conn()
            .prepare_cached(&format!(
                "UPDATE jobs SET state = '{queued}', run_at = min(run_at, ?2), updated_at = ?2 \
                 WHERE id = ?1 AND {guard}",
                queued = Transition::RunNow.to_state().as_str(),
                guard = state_guard(Transition::RunNow)
            ))?
            .execute(params![id, now])?;
        if changed != 1 {
            return Err(self.refusal(id, Transition::RunNow, "run now", changed));
        }
        Ok(())
    }

    /// Writes the progress of running attempts (the dispatcher, with its heartbeat).
    /// A job whose row is gone is skipped rather than failing the group commit.
    pub fn record_progress(
        &self,
        reports: &[(JobId, u32, serde_json::Value)],
        now: UnixMillis,
    ) -> Result<()> {
        let mut stmt = self.conn().prepare_cached(
            "INSERT INTO job_progress (job_id, attempt, progress, updated_at) \
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1) \
             ON CONFLICT (job_id, attempt) DO UPDATE SET progress = excluded.progress, \
             updated_at = excluded.updated_at",
        )?;
        for (id, attempt, progress) in reports {
            stmt.execute(params![id, attempt.max(&1), progress.to_string(), now])?;
        }
        Ok(())
    }
}
