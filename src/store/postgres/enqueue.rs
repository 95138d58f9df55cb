//! Enqueue on PostgreSQL: validation, routing (`flow.rs`), the node a job's files bind it
//! to, and the inserts: runs without a unique key in one `unnest` statement, a job with a
//! unique key alone (`ON CONFLICT DO NOTHING`, so a duplicate names the job that exists),
//! all inside a savepoint so a refused batch leaves the rest of a group commit standing.

use super::super::{Enqueued, ParentLink, Result, StoreError};
use super::queue::PgTx;
use crate::job::{NewJob, UnixMillis};
use std::path::Path;

/// Whether a payload names a file on this node's disk: a string anywhere in it that is
/// an absolute path under one of `roots` (the data_dir, watched folders).
pub fn names_local_file(payload: &serde_json::Value, roots: &[std::path::PathBuf]) -> bool {
    match payload {
        serde_json::Value::String(s) => {
            let path = Path::new(s);
            path.is_absolute() && roots.iter().any(|root| path.starts_with(root))
        }
        serde_json::Value::Array(items) => items.iter().any(|v| names_local_file(v, roots)),
        serde_json::Value::Object(map) => map.values().any(|v| names_local_file(v, roots)),
        _ => false,
    }
}

impl PgTx<'_> {
    /// Enqueues jobs all or nothing. A job whose unique key exists already is not added;
    /// its existing id comes back marked as a duplicate.
    pub fn enqueue(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Vec<Enqueued>> {
        self.enqueue_linked(jobs, ParentLink::AsGiven, None, now)
    }

    /// Enqueues jobs whose files this node took in: bound to this node unless the
    /// data_dir is shared.
    pub(super) fn enqueue_from_files(
        &self,
        jobs: &[NewJob],
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        let node = self.options.node.clone();
        self.enqueue_linked(jobs, ParentLink::AsGiven, Some(&node), now)
    }

    pub(super) fn enqueue_linked(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        inherited_home: Option<&str>,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        crate::store::validate_all(jobs)?;
        let routed = self.routed(jobs, now)?;
        if let Some(routed) = &routed {
            // What the route added is refused in the same words as in SQLite.
            crate::store::validate_all(routed)?;
        }
        let jobs = routed.as_deref().unwrap_or(jobs);
        // A savepoint, so a refused batch leaves the rest of a group commit standing.
        self.with(|tx| tx.batch_execute("SAVEPOINT enqueue"))?;
        match self.insert_all(jobs, link, inherited_home, now) {
            Ok(ids) => {
                self.with(|tx| tx.batch_execute("RELEASE SAVEPOINT enqueue"))?;
                Ok(ids)
            }
            Err(e) => {
                self.with(|tx| {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT enqueue; RELEASE SAVEPOINT enqueue")
                })?;
                Err(e)
            }
        }
    }

    /// The node a new job must run on: the one whose disk holds its files.
    fn home_of(&self, job: &NewJob, inherited: Option<&str>) -> Option<String> {
        if self.options.shared_data_dir {
            return None;
        }
        if inherited.is_some() {
            return inherited.map(String::from);
        }
        let from_watch = job
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("watch:"));
        if from_watch || names_local_file(&job.payload, &self.options.local_roots) {
            Some(self.options.node.clone())
        } else {
            None
        }
    }

    /// Runs without a unique key go in one statement (arrays through `unnest`, in
    /// order); a job with a unique key goes in alone, so a conflict names the job that
    /// exists.
    fn insert_all(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        inherited_home: Option<&str>,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        let mut ids = Vec::with_capacity(jobs.len());
        let mut rest = jobs;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .take_while(|job| job.unique_key.is_none())
                .count();
            if run > 0 {
                ids.extend(self.insert_many(&rest[..run], link, inherited_home, now)?);
                rest = &rest[run..];
            } else {
                ids.push(self.insert_unique(&rest[0], link, inherited_home, now)?);
                rest = &rest[1..];
            }
        }
        Ok(ids)
    }

    fn insert_many(
        &self,
        jobs: &[NewJob],
        link: ParentLink,
        inherited_home: Option<&str>,
        now: UnixMillis,
    ) -> Result<Vec<Enqueued>> {
        let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.payload).collect();
        let priorities: Vec<i64> = jobs.iter().map(|j| j.priority).collect();
        let run_ats: Vec<i64> = jobs.iter().map(|j| j.run_at.unwrap_or(now)).collect();
        let max_attempts: Vec<Option<i32>> = jobs
            .iter()
            .map(|j| j.max_attempts.map(|m| m.min(i32::MAX as u32) as i32))
            .collect();
        let deadlines: Vec<Option<i64>> = jobs.iter().map(|j| j.deadline_at).collect();
        let parents: Vec<Option<i64>> = jobs.iter().map(|j| link.parent_of(j)).collect();
        let sources: Vec<Option<&str>> = jobs.iter().map(|j| j.source.as_deref()).collect();
        let destinations: Vec<Option<&str>> =
            jobs.iter().map(|j| j.destination.as_deref()).collect();
        let flow_keys: Vec<&str> = jobs
            .iter()
            .map(|j| j.flow_key.as_deref().unwrap_or(""))
            .collect();
        let order_keys: Vec<Option<&str>> = jobs.iter().map(|j| j.order_key.as_deref()).collect();
        let homes: Vec<Option<String>> = jobs
            .iter()
            .map(|j| self.home_of(j, inherited_home))
            .collect();
        let rows = self.rows(
            "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts, \
             deadline_at, parent_id, source, home_node, created_at, updated_at, \
             destination, flow_key, order_key) \
             SELECT q, k, p, pr, r, m, d, pa, s, h, $11, $11, de, fk, ok \
             FROM unnest($1::text[], $2::text[], $3::json[], $4::bigint[], $5::bigint[], \
                         $6::int[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], \
                         $12::text[], $13::text[], $14::text[]) \
                  WITH ORDINALITY AS t(q, k, p, pr, r, m, d, pa, s, h, de, fk, ok, n) \
             ORDER BY n RETURNING id",
            &[
                &queues,
                &kinds,
                &payloads,
                &priorities,
                &run_ats,
                &max_attempts,
                &deadlines,
                &parents,
                &sources,
                &homes,
                &now,
                &destinations,
                &flow_keys,
                &order_keys,
            ],
        )?;
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        // Identity values are handed out in insertion order.
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .map(|id| Enqueued {
                id,
                duplicate: false,
            })
            .collect())
    }

    fn insert_unique(
        &self,
        job: &NewJob,
        link: ParentLink,
        inherited_home: Option<&str>,
        now: UnixMillis,
    ) -> Result<Enqueued> {
        let max_attempts = job.max_attempts.map(|m| m.min(i32::MAX as u32) as i32);
        let home = self.home_of(job, inherited_home);
        let rows = self.rows(
            "INSERT INTO jobs (queue, kind, payload, priority, run_at, max_attempts, unique_key, \
             deadline_at, parent_id, source, home_node, created_at, updated_at, \
             destination, flow_key, order_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15) \
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id",
            &[
                &job.queue,
                &job.kind,
                &job.payload,
                &job.priority,
                &job.run_at.unwrap_or(now),
                &max_attempts,
                &job.unique_key,
                &job.deadline_at,
                &link.parent_of(job),
                &job.source,
                &home,
                &now,
                &job.destination,
                &job.flow_key.as_deref().unwrap_or(""),
                &job.order_key,
            ],
        )?;
        if let Some(row) = rows.first() {
            return Ok(Enqueued {
                id: row.get(0),
                duplicate: false,
            });
        }
        let id: i64 = self
            .rows(
                "SELECT id FROM jobs WHERE unique_key = $1",
                &[&job.unique_key],
            )?
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| {
                StoreError::Postgres("a unique key conflicted but its job is gone".into())
            })?;
        Ok(Enqueued {
            id,
            duplicate: true,
        })
    }
}
