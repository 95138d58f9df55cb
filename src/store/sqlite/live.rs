//! What `jobctl top` watches besides the counts: the jobs running now (which worker, since
//! when) and the latest deaths. Reads only, each on a partial index or a bounded scan.

use super::guards::with_guards;
use super::{Result, SqliteStore};
use crate::store::{Death, RunningJob};

impl SqliteStore {
    /// Running jobs by worker, longest-running first, at most `limit`.
    pub fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>> {
        let mut stmt = self.conn.prepare_cached(with_guards(
            "SELECT id, queue, kind, worker, attempts, updated_at, lease_until, started_at FROM jobs \
             WHERE {running} ORDER BY worker, updated_at, id LIMIT ?1",
        ))?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(RunningJob {
                id: row.get(0)?,
                queue: row.get(1)?,
                kind: row.get(2)?,
                worker: row.get(3)?,
                attempt: row.get(4)?,
                since: row.get(5)?,
                lease_until: row.get(6)?,
                started_at: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The latest dead jobs, newest death first, at most `limit`.
    pub fn recent_deaths(&self, limit: usize) -> Result<Vec<Death>> {
        let mut stmt = self.conn.prepare_cached(with_guards(
            "SELECT id, queue, kind, finished_at, attempts, last_error FROM jobs \
             WHERE {dead} AND finished_at IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT ?1",
        ))?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(Death {
                id: row.get(0)?,
                queue: row.get(1)?,
                kind: row.get(2)?,
                finished_at: row.get(3)?,
                attempts: row.get(4)?,
                last_error: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
