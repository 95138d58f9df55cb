//! Pipelines' sync state in the queue database: the high-water mark a run's last page
//! records in its completion transaction, the operator's list and reset, the "is a run
//! of this pipeline live?" query the scheduler asks, and the mark a run's first page reads.

use super::guards::with_guards;
use super::queue::SqliteTx;
use super::{Result, SqliteStore};
use crate::job::{JobId, SyncMark, UnixMillis};
use crate::store::SyncState;
use rusqlite::{params, OptionalExtension};

impl SqliteTx<'_> {
    /// Records the end of a complete run. The mark never moves back: if two runs overlap
    /// (a manual one beside a scheduled one), the later start wins whichever ends last,
    /// since each fetched everything changed up to its own start.
    pub fn record_sync_mark(&self, mark: &SyncMark, job: JobId, now: UnixMillis) -> Result<()> {
        let items = crate::store::stored_items(mark)?;
        self.conn()
            .prepare_cached(
                "INSERT INTO sync_state (pipeline, high_water, runs, last_run_items, \
                 last_run_pages, last_run_job, updated_at) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (pipeline) DO UPDATE SET \
                   high_water = max(high_water, excluded.high_water), runs = runs + 1, \
                   last_run_items = excluded.last_run_items, \
                   last_run_pages = excluded.last_run_pages, \
                   last_run_job = excluded.last_run_job, updated_at = excluded.updated_at",
            )?
            .execute(params![
                mark.pipeline,
                mark.high_water,
                items,
                mark.pages,
                job,
                now
            ])?;
        Ok(())
    }

    /// Forgets a pipeline's mark, so its next run is a full sync. Returns whether there
    /// was one.
    pub fn reset_sync_state(&self, pipeline: &str) -> Result<bool> {
        let deleted = self
            .conn()
            .prepare_cached("DELETE FROM sync_state WHERE pipeline = ?1")?
            .execute([pipeline])?;
        Ok(deleted == 1)
    }
}

impl SqliteStore {
    /// Every pipeline's sync state, by name.
    pub fn sync_states(&self) -> Result<Vec<SyncState>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT pipeline, high_water, runs, last_run_items, last_run_pages, last_run_job, \
             updated_at FROM sync_state ORDER BY pipeline",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(SyncState {
                pipeline: row.get(0)?,
                high_water: row.get(1)?,
                runs: row.get::<_, i64>(2)? as u64,
                last_run_items: row.get::<_, i64>(3)? as u64,
                last_run_pages: row.get(4)?,
                last_run_job: row.get(5)?,
                updated_at: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Jobs of `kind` for `pipeline` (payload `$.pipeline`) that are queued, running or
    /// retrying: a run in progress.
    pub fn live_pipeline_jobs(&self, kind: &str, pipeline: &str) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached(with_guards(
                "SELECT count(*) FROM jobs WHERE {active} \
             AND kind = ?1 AND json_extract(payload, '$.pipeline') = ?2",
            ))?
            .query_row(params![kind, pipeline], |row| row.get(0))?;
        Ok(n as u64)
    }

    /// See [`crate::store::Store::greatest_unique_key`]: a range on the unique key's
    /// index (BINARY collation compares bytes).
    pub fn greatest_unique_key(&self, prefix: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT max(unique_key) FROM jobs WHERE unique_key >= ?1 AND unique_key < ?2",
            )?
            .query_row(params![prefix, crate::store::prefix_end(prefix)], |row| {
                row.get(0)
            })?)
    }
}

impl SqliteStore {
    /// A pipeline's high-water mark, if it has one.
    pub fn sync_high_water(&self, pipeline: &str) -> Result<Option<UnixMillis>> {
        Ok(self
            .conn
            .prepare_cached("SELECT high_water FROM sync_state WHERE pipeline = ?1")?
            .query_row([pipeline], |row| row.get(0))
            .optional()?)
    }
}
