//! The watched folders' bookkeeping: which staging token became which job (so recovery
//! never makes two jobs of one file), the dedupe lookup by content and name, and folder
//! sets still waiting for their files.

use super::guards::{state_guard, states_guard};
use super::queue::SqliteTx;
use super::{Result, SqliteStore, StoreError};
use crate::job::{JobId, JobState, NewJob, Transition, UnixMillis};
use crate::store::{IngestRecord, PendingFolder, StoreTx};
use rusqlite::{params, OptionalExtension};
use std::sync::LazyLock;

impl SqliteTx<'_> {
    /// Runs `work` inside the surrounding transaction in a savepoint, kept only if
    /// `work` says so (`dyn StoreTx::atomically`), so a failed ingest step
    /// leaves the rest of a group commit standing.
    pub fn savepoint(&self, work: &mut dyn FnMut(&dyn StoreTx) -> bool) -> Result<()> {
        self.tx.execute_batch("SAVEPOINT ingest")?;
        if work(self) {
            self.tx.execute_batch("RELEASE ingest")?;
        } else {
            self.tx
                .execute_batch("ROLLBACK TO ingest; RELEASE ingest")?;
        }
        Ok(())
    }

    /// The job already made from this staging token, if one was: `Some(None)` when it was
    /// made and later purged.
    pub fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        Ok(self
            .tx
            .prepare_cached("SELECT job_id FROM ingest_files WHERE token = ?1")?
            .query_row([token], |row| row.get(0))
            .optional()?)
    }

    /// A job made from the same content under the same name since `since`, if any (0 if
    /// that job has been purged since).
    pub fn recent_copy(
        &self,
        sha256: &str,
        name: &str,
        since: UnixMillis,
    ) -> Result<Option<JobId>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT coalesce(job_id, 0) FROM ingest_files \
                 WHERE sha256 = ?1 AND name = ?2 AND ingested_at >= ?3 \
                 ORDER BY ingested_at DESC LIMIT 1",
            )?
            .query_row(params![sha256, name, since], |row| row.get(0))
            .optional()?)
    }

    /// Enqueues the job for an ingested file and records where it came from. `payload_of`
    /// gives, from the new job's id, the fields to merge into its payload (the spooled
    /// path names the id). A unique key is not allowed: the token is the file's identity.
    pub fn enqueue_ingested(
        &self,
        job: &NewJob,
        record: &IngestRecord,
        payload_of: impl FnOnce(JobId) -> serde_json::Value,
        now: UnixMillis,
    ) -> Result<JobId> {
        if job.unique_key.is_some() {
            return Err(StoreError::InvalidJob(
                "an ingested file's job carries no unique key".into(),
            ));
        }
        let id = self.enqueue(std::slice::from_ref(job), now)?[0].id;
        let patch = payload_of(id).to_string();
        static PATCH: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET payload = json_patch(payload, ?2) WHERE id = ?1 AND {}",
                states_guard(&[JobState::Queued])
            )
        });
        let changed = self
            .tx
            .prepare_cached(&PATCH)?
            .execute(params![id, patch])?;
        if changed != 1 {
            return Err(StoreError::NotFound(id));
        }
        self.tx
            .prepare_cached(
                "INSERT INTO ingest_files (token, job_id, watch, name, sha256, size, ingested_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.token,
                id,
                record.watch,
                record.name,
                record.sha256,
                record.size as i64,
                now
            ])?;
        Ok(id)
    }

    /// A job that is dead from birth: a folder set that never became complete. Only a job
    /// enqueued in this same transaction (queued, never attempted) may be buried.
    pub fn bury_unborn(&self, id: JobId, error: &str, now: UnixMillis) -> Result<()> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE jobs SET state = '{dead}', finished_at = ?2, updated_at = ?2, \
                 last_error = ?3 WHERE id = ?1 AND {guard} AND attempts = 0 RETURNING order_key",
                dead = Transition::BuryUnborn.to_state().as_str(),
                guard = state_guard(Transition::BuryUnborn)
            )
        });
        let buried: Option<Option<String>> = self
            .tx
            .prepare_cached(&SQL)?
            .query_row(params![id, now, error], |row| row.get(0))
            .optional()?;
        match buried {
            None => Err(self.refusal(id, Transition::BuryUnborn, "bury", 0)),
            Some(Some(key)) => self.order_left(&key),
            Some(None) => Ok(()),
        }
    }

    /// Records (or updates) a folder set that is still incomplete. The first sighting is
    /// kept across updates.
    pub fn record_pending(
        &self,
        watch: &str,
        folder: &str,
        first_seen: UnixMillis,
        missing: &[String],
        now: UnixMillis,
    ) -> Result<()> {
        let missing = serde_json::to_string(missing).expect("strings serialize");
        self.tx
            .prepare_cached(
                "INSERT INTO ingest_pending (watch, folder, first_seen, missing, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (watch, folder) DO UPDATE SET missing = excluded.missing, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![watch, folder, first_seen, missing, now])?;
        Ok(())
    }

    /// Forgets a waiting folder set (taken in, timed out or gone).
    pub fn clear_pending(&self, watch: &str, folder: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM ingest_pending WHERE watch = ?1 AND folder = ?2")?
            .execute(params![watch, folder])?;
        Ok(())
    }
}

impl SqliteStore {
    /// The job made from a staging token, if any (see [`SqliteTx::ingested_job`]).
    pub fn ingested_job(&self, token: &str) -> Result<Option<Option<JobId>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT job_id FROM ingest_files WHERE token = ?1")?
            .query_row([token], |row| row.get(0))
            .optional()?)
    }

    /// Folder sets still waiting for files, oldest first.
    pub fn pending_folders(&self) -> Result<Vec<PendingFolder>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT watch, folder, first_seen, missing FROM ingest_pending ORDER BY first_seen, watch, folder",
        )?;
        let rows = stmt.query_map([], |row| {
            let missing: String = row.get(3)?;
            Ok(PendingFolder {
                watch: row.get(0)?,
                folder: row.get(1)?,
                first_seen: row.get(2)?,
                missing: serde_json::from_str(&missing).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenOptions;

    fn db() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(
            &dir.path().join("jobs.db"),
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        (dir, db)
    }

    fn record(token: &str) -> IngestRecord {
        IngestRecord {
            token: token.into(),
            watch: "/in".into(),
            name: "a.csv".into(),
            sha256: "a".repeat(64),
            size: 3,
        }
    }

    fn job() -> NewJob {
        serde_json::from_value(serde_json::json!({"kind": "noop", "payload": {"x": 1}})).unwrap()
    }

    #[test]
    fn an_ingested_job_names_its_id_in_its_payload_and_is_found_by_token_and_content() {
        let (_dir, mut db) = db();
        let id = db
            .write(|tx| {
                tx.enqueue_ingested(
                    &job(),
                    &record("t1"),
                    |id| serde_json::json!({"file": format!("spool/{id}/a.csv")}),
                    1_000,
                )
            })
            .unwrap();
        let stored = db.get(id).unwrap();
        assert_eq!(stored.payload["file"], format!("spool/{id}/a.csv"));
        assert_eq!(stored.payload["x"], 1);
        assert_eq!(db.ingested_job("t1").unwrap(), Some(Some(id)));
        assert_eq!(db.ingested_job("t2").unwrap(), None);
        let found = db
            .write(|tx| {
                Ok((
                    tx.recent_copy(&"a".repeat(64), "a.csv", 500)?,
                    tx.recent_copy(&"a".repeat(64), "a.csv", 2_000)?,
                    tx.recent_copy(&"a".repeat(64), "b.csv", 0)?,
                ))
            })
            .unwrap();
        assert_eq!(found, (Some(id), None, None));
    }

    #[test]
    fn a_failed_step_inside_atomically_leaves_nothing_behind() {
        let (_dir, mut db) = db();
        let result = db.write(|tx| {
            let kept = tx.enqueue(&[job()], 1)?[0].id;
            let tx: &dyn StoreTx = tx;
            let failed: Result<()> = tx.atomically(|tx| {
                tx.enqueue_ingested(&job(), &record("t1"), &|_| serde_json::json!({}), 1)?;
                Err(StoreError::InvalidJob("boom".into()))
            });
            assert!(failed.is_err());
            Ok(kept)
        });
        let kept = result.unwrap();
        assert_eq!(db.ingested_job("t1").unwrap(), None);
        assert_eq!(db.list(&Default::default()).unwrap().len(), 1);
        assert_eq!(db.get(kept).unwrap().id, kept);
    }

    #[test]
    fn an_unborn_job_can_be_buried_but_nothing_else() {
        let (_dir, mut db) = db();
        let id = db
            .write(|tx| {
                let id = tx.enqueue(&[job()], 1)?[0].id;
                tx.bury_unborn(id, "missing: a.csv", 2)?;
                Ok(id)
            })
            .unwrap();
        let dead = db.get(id).unwrap();
        assert_eq!(dead.state, crate::job::JobState::Dead);
        assert_eq!(dead.last_error.as_deref(), Some("missing: a.csv"));
        assert!(db.write(|tx| tx.bury_unborn(id, "again", 3)).is_err());
    }

    #[test]
    fn pending_folders_keep_their_first_sighting() {
        let (_dir, mut db) = db();
        db.write(|tx| tx.record_pending("/in", "20251027", 10, &["a.csv".into()], 10))
            .unwrap();
        db.write(|tx| tx.record_pending("/in", "20251027", 99, &["b.csv".into()], 20))
            .unwrap();
        let pending = db.pending_folders().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].first_seen, 10);
        assert_eq!(pending[0].missing, vec!["b.csv".to_string()]);
        db.write(|tx| tx.clear_pending("/in", "20251027")).unwrap();
        assert!(db.pending_folders().unwrap().is_empty());
    }
}
