//! What `jobctl top` watches besides the counts: the jobs running now (which worker, since
//! when) and the latest deaths. Reads only, each on a partial index or a bounded scan.

use super::{Db, Result};
use crate::job::{JobId, UnixMillis};
use serde::Serialize;

/// A job a worker runs now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub worker: Option<String>,
    /// Which attempt this is.
    pub attempt: u32,
    /// When the current attempt was claimed: the claim sets `updated_at` and the
    /// heartbeat leaves it alone (a cancel request moves it too).
    pub since: UnixMillis,
    pub lease_until: Option<UnixMillis>,
    /// When its handler started, once the daemon recorded it; None while the job is only
    /// claimed ahead for a worker.
    pub started_at: Option<UnixMillis>,
}

/// A job that died, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Death {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub finished_at: UnixMillis,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Db {
    /// Running jobs by worker, longest-running first, at most `limit`.
    pub fn running_jobs(&self, limit: usize) -> Result<Vec<RunningJob>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, queue, kind, worker, attempts, updated_at, lease_until, started_at FROM jobs \
             WHERE state = 'running' ORDER BY worker, updated_at, id LIMIT ?1",
        )?;
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, queue, kind, finished_at, attempts, last_error FROM jobs \
             WHERE state = 'dead' AND finished_at IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT ?1",
        )?;
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
