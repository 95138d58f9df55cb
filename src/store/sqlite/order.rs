//! Order keys' lines on SQLite: the jobs of one key run one at a time in id order, and
//! `order_blocked` marks those waiting behind their key's head. The schema's triggers
//! keep it for every writer (migrations 0008, 0011, 0012); this checks that each line
//! has its one head.

use super::guards::with_guards;
use super::Result;
use rusqlite::Connection;

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
