//! `jobctl copy --to postgresql://...`: moves a queue from another store (a SQLite file)
//! into an empty PostgreSQL database: every unfinished and dead job with its id, the
//! finished children of waiting parents (so fan-in sums stay whole), every attempt of
//! those jobs, the pipelines' sync state and the queue pauses, in one transaction.

use super::super::{JobFilter, Result, Store, StoreError};
use super::PgStore;
use crate::job::{Job, JobState};
use std::collections::{BTreeMap, BTreeSet};

/// What a copy wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub jobs: u64,
    pub attempts: u64,
    pub sync_states: u64,
    pub paused_queues: u64,
}

/// The states copied: everything not finished, and the dead-letter box.
const COPIED: [JobState; 4] = [
    JobState::Queued,
    JobState::Retrying,
    JobState::Waiting,
    JobState::Dead,
];

impl PgStore {
    /// Copies `source`'s live and dead jobs into this (empty) database. Refused while
    /// `source` has running jobs (stop its daemon first) or this database holds jobs.
    pub fn import(&self, source: &dyn Store) -> Result<CopyReport> {
        let running = source.list(&JobFilter {
            state: Some(JobState::Running),
            limit: 1,
            ..Default::default()
        })?;
        if !running.is_empty() {
            return Err(StoreError::InvalidJob(
                "the source has running jobs: stop its daemon first (its running jobs go back to the queue)".into(),
            ));
        }
        let mut jobs: BTreeMap<i64, Job> = BTreeMap::new();
        for state in COPIED {
            for job in source.list(&JobFilter {
                state: Some(state),
                limit: 0,
                ..Default::default()
            })? {
                jobs.insert(job.id, job);
            }
        }
        let waiting: Vec<i64> = jobs
            .values()
            .filter(|j| j.state == JobState::Waiting)
            .map(|j| j.id)
            .collect();
        for parent in waiting {
            let mut after = 0;
            loop {
                let page = source.children_page(parent, after, 1000)?;
                let Some(last) = page.last().map(|j| j.id) else {
                    break;
                };
                after = last;
                for child in page {
                    jobs.entry(child.id).or_insert(child);
                }
            }
        }
        let ids: BTreeSet<i64> = jobs.keys().copied().collect();
        let mut report = CopyReport::default();
        let mut conn = self.connection()?;
        let mut tx = conn.transaction()?;
        let present: i64 = tx.query_one("SELECT count(*) FROM jobs", &[])?.get(0);
        if present > 0 {
            return Err(StoreError::InvalidJob(format!(
                "the target database already holds {present} job(s): copy into an empty one"
            )));
        }
        let insert = tx.prepare(
            "INSERT INTO jobs (id, queue, kind, payload, state, priority, attempts, max_attempts, \
             run_at, worker, unique_key, last_error, deadline_at, cancel_requested, stage, \
             created_at, updated_at, finished_at, source, destination, flow_key, order_key, \
             order_blocked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     $18, $19, $20, $21, $22, $23)",
        )?;
        for job in jobs.values() {
            tx.execute(
                &insert,
                &[
                    &job.id,
                    &job.queue,
                    &job.kind,
                    &job.payload,
                    &job.state.as_str(),
                    &job.priority,
                    &(job.attempts as i32),
                    &job.max_attempts.map(|m| m as i32),
                    &job.run_at,
                    &job.worker,
                    &job.unique_key,
                    &job.last_error,
                    &job.deadline_at,
                    &(job.cancel_requested as i32),
                    &(job.stage as i32),
                    &job.created_at,
                    &job.updated_at,
                    &job.finished_at,
                    &job.source,
                    &job.destination,
                    &job.flow_key,
                    &job.order_key,
                    &job.order_blocked,
                ],
            )?;
            report.jobs += 1;
        }
        // Links only among copied jobs (a finished parent stays behind).
        for job in jobs.values() {
            if let Some(parent) = job.parent_id.filter(|p| ids.contains(p)) {
                tx.execute(
                    "UPDATE jobs SET parent_id = $2 WHERE id = $1",
                    &[&job.id, &parent],
                )?;
            }
        }
        let add_attempt = tx.prepare(
            "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, \
             error, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )?;
        for id in &ids {
            for attempt in source.attempts(*id)? {
                tx.execute(
                    &add_attempt,
                    &[
                        id,
                        &(attempt.attempt.max(1) as i32),
                        &attempt.worker,
                        &attempt.started_at,
                        &attempt.finished_at.max(attempt.started_at),
                        &attempt.outcome,
                        &attempt.error,
                        &attempt.detail,
                    ],
                )?;
                report.attempts += 1;
            }
        }
        for state in source.sync_states()? {
            tx.execute(
                "INSERT INTO sync_state (pipeline, high_water, runs, last_run_items, \
                 last_run_pages, last_run_job, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &state.pipeline,
                    &state.high_water,
                    &(state.runs as i64),
                    &(state.last_run_items as i64),
                    &i64::from(state.last_run_pages),
                    &state.last_run_job,
                    &state.updated_at,
                ],
            )?;
            report.sync_states += 1;
        }
        for pause in source.paused_queues()? {
            tx.execute(
                "INSERT INTO queue_pauses (queue, paused_at, reason) VALUES ($1, $2, $3)",
                &[&pause.queue, &pause.paused_at, &pause.reason],
            )?;
            report.paused_queues += 1;
        }
        // New jobs get ids after the copied ones.
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('jobs', 'id'), \
             greatest((SELECT max(id) FROM jobs), 1))",
            &[],
        )?;
        tx.commit()?;
        Ok(report)
    }
}
