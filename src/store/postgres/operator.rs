//! Writes on PostgreSQL beyond the queue's own moves: the watched folders' bookkeeping
//! (staging tokens, folder sets waiting for files), operator controls (pauses, bulk
//! revive and delete, run-now), handlers' progress, and pipelines' sync state resets.

use super::super::{IngestRecord, Result, StoreError};
use super::queue::{state_guard, PgTx};
use crate::job::{JobId, JobState, NewJob, Transition, UnixMillis};

/// RFC 7396 merge patch, as SQLite's `json_patch` applies it.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl PgTx<'_> {
    pub fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        Ok(self
            .rows(
                "SELECT job_id FROM ingest_files WHERE token = $1",
                &[&token],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    pub fn recent_copy(
        &self,
        sha256: &str,
        name: &str,
        since: UnixMillis,
    ) -> Result<Option<JobId>> {
        Ok(self
            .rows(
                "SELECT coalesce(job_id, 0) FROM ingest_files \
                 WHERE sha256 = $1 AND name = $2 AND ingested_at >= $3 \
                 ORDER BY ingested_at DESC LIMIT 1",
                &[&sha256, &name, &since],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    /// Enqueues the job for an ingested file (bound to this node unless the data_dir is
    /// shared: its file is in this node's spool) and records where it came from.
    pub fn enqueue_ingested(
        &self,
        job: &NewJob,
        record: &IngestRecord,
        payload_of: &dyn Fn(JobId) -> serde_json::Value,
        now: UnixMillis,
    ) -> Result<JobId> {
        if job.unique_key.is_some() {
            return Err(StoreError::InvalidJob(
                "an ingested file's job carries no unique key".into(),
            ));
        }
        let id = self.enqueue_from_files(std::slice::from_ref(job), now)?[0].id;
        let mut payload = job.payload.clone();
        merge_patch(&mut payload, &payload_of(id));
        let changed = self.run(
            "UPDATE jobs SET payload = $2 WHERE id = $1 AND state = 'queued'",
            &[&id, &payload],
        )?;
        if changed != 1 {
            return Err(StoreError::NotFound(id));
        }
        self.run(
            "INSERT INTO ingest_files (token, job_id, watch, name, sha256, size, ingested_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &record.token,
                &id,
                &record.watch,
                &record.name,
                &record.sha256,
                &(record.size as i64),
                &now,
            ],
        )?;
        Ok(id)
    }

    pub fn bury_unborn(&self, id: JobId, error: &str, now: UnixMillis) -> Result<()> {
        let state = self.get(id)?.state;
        Transition::BuryUnborn.check(id, state)?;
        let changed = self.run(
            &format!(
                "UPDATE jobs SET state = 'dead', finished_at = $2, updated_at = $2, last_error = $3 \
                 WHERE id = $1 AND {} AND attempts = 0",
                state_guard(Transition::BuryUnborn)
            ),
            &[&id, &now, &error],
        )?;
        if changed != 1 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Records (or updates) a folder set still incomplete, with the node whose folder
    /// holds it.
    pub fn record_pending(
        &self,
        watch: &str,
        folder: &str,
        first_seen: UnixMillis,
        missing: &[String],
        now: UnixMillis,
    ) -> Result<()> {
        let missing = serde_json::json!(missing);
        self.run(
            "INSERT INTO ingest_pending (watch, folder, first_seen, missing, updated_at, node) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (watch, folder) DO UPDATE SET missing = excluded.missing, \
             updated_at = excluded.updated_at",
            &[&watch, &folder, &first_seen, &missing, &now, &self.node()],
        )?;
        Ok(())
    }

    pub fn clear_pending(&self, watch: &str, folder: &str) -> Result<()> {
        self.run(
            "DELETE FROM ingest_pending WHERE watch = $1 AND folder = $2",
            &[&watch, &folder],
        )?;
        Ok(())
    }

    pub fn pause_queue(&self, queue: &str, reason: Option<&str>, now: UnixMillis) -> Result<bool> {
        crate::job::check_name("queue", queue)
            .map_err(|e| StoreError::InvalidJob(e.to_string()))?;
        Ok(self.run(
            "INSERT INTO queue_pauses (queue, paused_at, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (queue) DO NOTHING",
            &[&queue, &now, &reason],
        )? == 1)
    }

    pub fn resume_queue(&self, queue: &str) -> Result<bool> {
        Ok(self.run("DELETE FROM queue_pauses WHERE queue = $1", &[&queue])? == 1)
    }

    pub fn revive_where_allowed(&self, ids: &[JobId], now: UnixMillis) -> Result<Vec<JobId>> {
        let mut revived: Vec<JobId> = self
            .rows(
                &format!(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, \
                     finished_at = NULL, cancel_requested = 0, worker = NULL, updated_at = $2 \
                     WHERE id = ANY($1) AND {} RETURNING id",
                    state_guard(Transition::Revive)
                ),
                &[&ids, &now],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        revived.sort_unstable();
        Ok(revived)
    }

    pub fn delete_where_allowed(&self, ids: &[JobId]) -> Result<usize> {
        let states: Vec<&str> = JobState::DELETABLE.iter().map(|s| s.as_str()).collect();
        Ok(self.run(
            "DELETE FROM jobs WHERE id = ANY($1) AND state = ANY($2)",
            &[&ids, &states],
        )? as usize)
    }

    pub fn run_now(&self, id: JobId, now: UnixMillis) -> Result<()> {
        let job = self.get(id)?;
        Transition::RunNow.check(id, job.state)?;
        let changed = self.run(
            &format!(
                "UPDATE jobs SET state = 'queued', run_at = least(run_at, $2), updated_at = $2 \
                 WHERE id = $1 AND {}",
                state_guard(Transition::RunNow)
            ),
            &[&id, &now],
        )?;
        if changed != 1 {
            return Err(StoreError::Io(format!(
                "job {id} changed while it was being moved; nothing done"
            )));
        }
        Ok(())
    }

    pub fn reset_sync_state(&self, pipeline: &str) -> Result<bool> {
        Ok(self.run("DELETE FROM sync_state WHERE pipeline = $1", &[&pipeline])? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 9}, "e": "x"}));
        assert_eq!(target, json!({"b": {"c": 9, "d": 3}, "e": "x"}));
    }
}
