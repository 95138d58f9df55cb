//! Order keys' lines on SQLite: the jobs of one key run one at a time in id order, and
//! `order_blocked` marks those waiting behind their key's head. The schema's triggers
//! keep it for writers other than jobd (migrations 0008, 0011, 0012). jobd's own
//! connections run without triggers ([`super::SqliteStore`]'s `trust_own_writes`): a
//! trigger program ran for every job that finished or was enqueued, key or none, about
//! 6% of a drain's instructions and 14% of a batch enqueue's. So every statement of this
//! driver that enqueues, finishes, sends back or deletes a job with an order key calls
//! one of these, with the trigger's own rule; jobs without a key cost nothing. This also
//! checks that each line has its one head.

use super::guards::with_guards;
use super::queue::SqliteTx;
use super::Result;
use crate::job::JobId;
use rusqlite::{params, Connection};

/// ?1 a job just enqueued, ?2 its key: it waits if an earlier unfinished job of the key
/// exists (migration 0008's `jobs_order_enqueue`).
const ENQUEUED_WAITS: &str = "UPDATE jobs SET order_blocked = 1 WHERE id = ?1 AND EXISTS \
     (SELECT 1 FROM jobs AS earlier WHERE order_key = ?2 AND id < ?1 AND {unfinished})";

/// ?1 a key one of whose jobs finished or was deleted: its next job goes unless it still
/// has a head (0011's `jobs_order_finish_or_revive`, first half; 0008's `jobs_order_delete`).
const NEXT_GOES: &str = "UPDATE jobs SET order_blocked = 0 WHERE id = \
     (SELECT min(id) FROM jobs AS next \
      WHERE order_key = ?1 AND order_blocked = 1 AND {unfinished}) \
     AND NOT EXISTS (SELECT 1 FROM jobs AS head \
      WHERE order_key = ?1 AND order_blocked = 0 AND {unfinished})";

/// ?1 a job sent round again, ?2 its key: it waits if the key has another head, and is
/// the head if not (0012's `jobs_order_finish_or_revive`, second half).
const REJOINED_WAITS_FOR_A_HEAD: &str = "UPDATE jobs SET order_blocked = EXISTS \
     (SELECT 1 FROM jobs AS head \
      WHERE order_key = ?2 AND id <> ?1 AND order_blocked = 0 AND {unfinished}) \
     WHERE id = ?1";

impl SqliteTx<'_> {
    /// Jobs just enqueued with these keys wait if an earlier unfinished job of their key
    /// exists (those of the same batch before them included). The trigger's rule for
    /// an insert: by id, so a batch lines up in its own order.
    pub(super) fn order_enqueued(&self, jobs: &[(JobId, &str)]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn().prepare_cached(with_guards(ENQUEUED_WAITS))?;
        for (id, key) in jobs {
            stmt.execute(params![id, key])?;
        }
        Ok(())
    }

    /// A job of `key` finished, or left the table unfinished: the next one in line goes,
    /// unless the key still has a head (the job was one waiting behind it). Harmless for
    /// a key whose line did not change.
    pub(super) fn order_left(&self, key: &str) -> Result<()> {
        self.conn()
            .prepare_cached(with_guards(NEXT_GOES))?
            .execute([key])?;
        Ok(())
    }

    /// Finished jobs just sent round again: each waits if its key has a head, and is the
    /// head if not, taken in id order, so of several sent back at once into an empty
    /// line the first goes first. Their flags are first set to waiting, so the flag a
    /// job kept from before it finished counts for nothing.
    pub(super) fn order_rejoined(&self, jobs: &mut [(JobId, String)]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        jobs.sort_unstable();
        let mut wait = self
            .conn()
            .prepare_cached("UPDATE jobs SET order_blocked = 1 WHERE id = ?1")?;
        for (id, _) in jobs.iter() {
            wait.execute([id])?;
        }
        let mut head_unless_one = self
            .conn()
            .prepare_cached(with_guards(REJOINED_WAITS_FOR_A_HEAD))?;
        for (id, key) in jobs.iter() {
            head_unless_one.execute(params![id, key])?;
        }
        Ok(())
    }
}

/// A sentence per order key whose unfinished jobs do not have exactly one head (one
/// job not `order_blocked`): with none the line never moves again, with two its jobs
/// run side by side. At most `limit` keys are named.
pub(super) fn broken_lines(conn: &Connection, limit: usize) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(with_guards(
        "SELECT order_key, sum(order_blocked = 0), count(*) FROM jobs \
         WHERE order_key IS NOT NULL AND {unfinished} \
         GROUP BY order_key HAVING sum(order_blocked = 0) <> 1 ORDER BY order_key LIMIT ?1",
    ))?;
    let lines = stmt.query_map([limit as i64], |row| {
        let (key, heads, jobs): (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        Ok(format!(
            "order key {key:?} has {heads} heads among its {jobs} unfinished jobs \
             (order_blocked = 0 on exactly one of them lets the line run)"
        ))
    })?;
    Ok(lines.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::OpenOptions;

    #[test]
    fn each_line_is_read_by_its_key_in_the_index_of_unfinished_keyed_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            create: true,
            migrate: true,
            ..Default::default()
        };
        let db = SqliteStore::open(&dir.path().join("jobs.db"), &options).unwrap();
        for statement in [ENQUEUED_WAITS, NEXT_GOES, REJOINED_WAITS_FOR_A_HEAD] {
            let sql = with_guards(statement);
            let mut explain = db
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            // ?1 the key where it is the only parameter, else ?1 a job and ?2 the key.
            let values: Vec<rusqlite::types::Value> = match explain.parameter_count() {
                1 => vec!["k".to_string().into()],
                _ => vec![1_i64.into(), "k".to_string().into()],
            };
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(values), |row| row.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            // The steps of the subqueries: those that read an alias, not the outer `jobs`.
            let subqueries: Vec<&String> = plan
                .iter()
                .filter(|step| {
                    ["earlier", "next", "head"]
                        .iter()
                        .any(|alias| step.contains(&format!(" {alias} ")))
                })
                .collect();
            assert!(!subqueries.is_empty(), "{sql}: {plan:?}");
            for step in subqueries {
                assert!(
                    step.contains("INDEX jobs_order_live (order_key=?"),
                    "{sql}: {plan:?}"
                );
            }
        }
    }
}
