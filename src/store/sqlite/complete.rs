//! A turn's completions in few statements: its plain successes (no follow-ups, sync marks
//! or parent to resume) move by one `UPDATE ... WHERE id IN (...)` per chunk of one
//! (attempt, worker)'s successes and get their attempt rows from one multi-row `INSERT`
//! per chunk; every other completion goes through [`SqliteTx::complete_started`] on its
//! own. The PostgreSQL driver splits a batch into plain successes and the rest the same
//! way.

use super::guards::state_guard;
use super::queue::SqliteTx;
use super::Result;
use crate::job::{Completion, JobId, JobState, Resolution, Transition, UnixMillis};
use crate::store::{Applied, Finished};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use std::collections::HashSet;
use std::sync::LazyLock;

/// Rows per statement, largest first. A batch is cut into these sizes, so whatever its
/// length only a few statements are ever prepared (and kept in the statement cache).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The statements for a chunk of one of the [`CHUNKS`]' sizes.
struct ChunkSql {
    rows: usize,
    /// The success update, saying nothing of the rows it moved: the common case, where
    /// every attempt of the chunk still holds its job, needs only its count.
    succeed: String,
    /// The same update returning each moved row's id.
    succeed_returning: String,
    /// The attempt rows' insert.
    attempts: String,
}

/// Each statement of [`CHUNKS`]' sizes, built once.
static STATEMENTS: LazyLock<Vec<ChunkSql>> = LazyLock::new(|| {
    CHUNKS
        .into_iter()
        .map(|rows| ChunkSql {
            rows,
            succeed: succeed_sql(rows, false),
            succeed_returning: succeed_sql(rows, true),
            attempts: attempts_sql(rows),
        })
        .collect()
});

/// The statements for a chunk of `rows`.
fn statements(rows: usize) -> &'static ChunkSql {
    STATEMENTS
        .iter()
        .find(|sql| sql.rows == rows)
        .expect("a chunk has one of the CHUNKS sizes")
}

/// A success that moves its job and writes its attempt row and nothing else.
fn is_plain(done: &Completion) -> bool {
    done.parent_id.is_none()
        && matches!(&done.resolution, Resolution::Succeeded { follow_ups, sync_marks }
            if follow_ups.is_empty() && sync_marks.is_empty())
}

/// ?1 now, ?2 attempt, ?3 worker, then one job id per row: each of those jobs still held
/// by that attempt of that worker becomes `succeeded`, with the same columns as the
/// single completion's update sets, unless it has an order key (whose line the single
/// completion moves on: see `order.rs`); with `returning`, the statement returns each
/// moved row's id. An IN-list of rowids with anonymous `?`s: shorter to parse, bind and (at
/// every use) for the statement cache to hash and compare than a `VALUES` list joined
/// to `jobs`, and its plan is one rowid seek per id.
fn succeed_sql(rows: usize, returning: bool) -> String {
    format!(
        "UPDATE jobs SET state='succeeded',lease_until=NULL,finished_at=?1,updated_at=?1,\
         last_error=NULL,started_at=NULL,claim=NULL \
         WHERE attempts=?2 AND worker IS ?3 AND order_key IS NULL AND {} AND id IN({}){}",
        state_guard(Transition::Complete),
        vec!["?"; rows].join(","),
        if returning { " RETURNING id" } else { "" }
    )
}

/// Per row (job, attempt, worker, started_at, finished_at, detail, started_us): the
/// attempt rows of successes. Anonymous `?`s and no spaces: the statement cache hashes and
/// compares the whole text at every use, and this is the longest statement of a turn.
fn attempts_sql(rows: usize) -> String {
    format!(
        "INSERT INTO job_attempts(job_id,attempt,worker,started_at,finished_at,outcome,\
         error,detail,started_us)VALUES{}",
        vec!["(?,?,?,?,?,'succeeded',NULL,?,?)"; rows].join(",")
    )
}

/// A parameter bound from the completion's own text, not from a copy of it.
fn text(s: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
}

/// An integer parameter.
fn int(i: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Integer(i))
}

/// The positions in `plain` of each (attempt, worker)'s successes, in batch order, the
/// groups in the order of their first success: one success update moves a group's jobs
/// by their ids alone.
fn by_attempt_and_worker<'a>(plain: &[&'a Finished<'_>]) -> Vec<(u32, &'a str, Vec<usize>)> {
    let mut groups: Vec<(u32, &'a str, Vec<usize>)> = Vec::new();
    for (p, f) in plain.iter().enumerate() {
        let c: &'a Completion = f.completion;
        // A scan: a turn's completions come from a few workers, so there are few
        // groups (many workers or attempt numbers in one turn make more, smaller chunks).
        match groups
            .iter_mut()
            .find(|(attempt, worker, _)| *attempt == c.attempt && *worker == c.worker)
        {
            Some((_, _, positions)) => positions.push(p),
            None => groups.push((c.attempt, &c.worker, vec![p])),
        }
    }
    groups
}

/// `items` in chunks of the [`CHUNKS`] sizes.
fn chunked<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|size| *size <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

impl SqliteTx<'_> {
    /// Records finished attempts, all in this transaction: the plain successes first, a
    /// chunk at a time, then every other completion in order (a plain success of a job
    /// with an order key among them). A completion for an attempt that no longer holds
    /// its job changes nothing and says so (as does the second of two for the same
    /// attempt).
    pub fn complete_many(&self, done: &[Finished<'_>], now: UnixMillis) -> Result<Vec<Applied>> {
        let plain: Vec<&Finished<'_>> = done.iter().filter(|f| is_plain(f.completion)).collect();
        // Per plain success, in batch order: whether it is the one applied.
        let mut held = vec![false; plain.len()];
        for (attempt, worker, positions) in by_attempt_and_worker(&plain) {
            for chunk in chunked(&positions) {
                let mut params = Vec::with_capacity(3 + chunk.len());
                params.extend([int(now), int(attempt.into()), text(worker)]);
                params.extend(chunk.iter().map(|&p| int(plain[p].completion.job_id)));
                match self.succeed_chunk_whole(chunk.iter().map(|&p| plain[p]), &params)? {
                    ChunkMoved::All => {
                        for &p in chunk {
                            held[p] = true;
                        }
                        continue;
                    }
                    ChunkMoved::None => continue,
                    ChunkMoved::Some => {}
                }
                let mut update = self
                    .tx
                    .prepare_cached(&statements(chunk.len()).succeed_returning)?;
                let mut moved: HashSet<JobId> = update
                    .query_map(rusqlite::params_from_iter(&params), |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                // In batch order, the first completion of each moved job is the one
                // applied (a chunk never moves a job an earlier chunk moved: its row is no
                // longer running; and a job's row holds one attempt of one worker, so no
                // other group moves it).
                for &p in chunk {
                    held[p] = moved.remove(&plain[p].completion.job_id);
                }
            }
        }
        let applied: Vec<Option<&Finished<'_>>> = plain
            .iter()
            .zip(&held)
            .map(|(f, held)| held.then_some(*f))
            .collect();
        let written: Vec<&Finished<'_>> = applied.iter().flatten().copied().collect();
        for chunk in chunked(&written) {
            let mut params = Vec::with_capacity(7 * chunk.len());
            for f in chunk {
                let c = f.completion;
                params.extend([
                    int(c.job_id),
                    int(c.attempt.into()),
                    text(&c.worker),
                    int(c.started_at),
                    int(c.finished_at.max(c.started_at)),
                    c.detail
                        .as_ref()
                        .map_or(ToSqlOutput::Owned(Value::Null), |d| {
                            ToSqlOutput::Owned(Value::Text(d.to_string()))
                        }),
                    f.started_us.map_or(ToSqlOutput::Owned(Value::Null), int),
                ]);
            }
            self.tx
                .prepare_cached(&statements(chunk.len()).attempts)?
                .execute(rusqlite::params_from_iter(params))?;
        }
        let mut plain_answers = applied.into_iter();
        done.iter()
            .map(|f| {
                if is_plain(f.completion) && plain_answers.next().flatten().is_some() {
                    return Ok(Applied::Moved(JobState::Succeeded));
                }
                // A plain success its chunk did not move (its attempt no longer holds
                // the job, it came twice, or the job has an order key) goes the single
                // way, which says which.
                self.complete_started(f.completion, f.started_us, now)
            })
            .collect()
    }
}

/// What a chunk's success update without RETURNING settled.
#[derive(Debug, PartialEq, Eq)]
enum ChunkMoved {
    /// It moved every job of the chunk: each completion held its job.
    All,
    /// It moved none (all stale, or all with an order key): nothing to undo.
    None,
    /// It moved some, or the chunk names a job twice: undone, to be run with RETURNING.
    Some,
}

impl SqliteTx<'_> {
    /// Moves a chunk of successes by the update without RETURNING when that settles it:
    /// when the chunk names each job once and the update moves as many rows as it has
    /// completions, every one of them held its job; when it moves none, none did (or
    /// each job has an order key). Otherwise (a stale or repeated completion, or a job
    /// with an order key, among others) the update is undone, to be run again with
    /// RETURNING. RETURNING's rows (a temporary table of them, read back, and a
    /// map of the moved attempts) cost about 5,000 instructions per job, counted by
    /// scripts/drain-callgrind.sh: paid only where the count does not say which moved.
    fn succeed_chunk_whole<'f>(
        &self,
        chunk: impl ExactSizeIterator<Item = &'f Finished<'f>>,
        params: &[ToSqlOutput<'_>],
    ) -> Result<ChunkMoved> {
        let rows = chunk.len();
        let mut ids: Vec<JobId> = chunk.map(|f| f.completion.job_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Ok(ChunkMoved::Some);
        }
        self.tx
            .prepare_cached("SAVEPOINT complete_chunk")?
            .execute([])?;
        let moved = self
            .tx
            .prepare_cached(&statements(rows).succeed)?
            .execute(rusqlite::params_from_iter(params))?;
        let whole = match moved {
            0 => ChunkMoved::None,
            moved if moved == rows => ChunkMoved::All,
            _ => ChunkMoved::Some,
        };
        if whole == ChunkMoved::Some {
            self.tx
                .prepare_cached("ROLLBACK TO complete_chunk")?
                .execute([])?;
        }
        self.tx
            .prepare_cached("RELEASE complete_chunk")?
            .execute([])?;
        Ok(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::OpenOptions;

    #[test]
    fn a_chunk_of_successes_seeks_each_job_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(
            &dir.path().join("jobs.db"),
            &OpenOptions {
                create: true,
                migrate: true,
                ..Default::default()
            },
        )
        .unwrap();
        for rows in CHUNKS {
            for succeed in [
                &statements(rows).succeed,
                &statements(rows).succeed_returning,
            ] {
                let plan: Vec<String> = db
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {succeed}"))
                    .unwrap()
                    .raw_query()
                    .mapped(|row| row.get::<_, String>(3))
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let plan = plan.join(" | ");
                assert!(
                    plan.contains("SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"),
                    "{rows} rows: {plan}"
                );
                assert!(!plan.contains("SCAN jobs"), "{rows} rows: {plan}");
            }
        }
    }
}
