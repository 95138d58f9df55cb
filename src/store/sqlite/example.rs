//! The example database shipped as `jobs.db.example`: the current schema with a few jobs in
//! every state, made through the queue's own transitions at a fixed time.

use super::{OpenOptions, Result, SqliteStore};
use crate::job::{Completion, JobState, NewJob, Resolution};
use crate::store::{Applied, ClaimSpec};
use serde_json::json;
use std::path::Path;

/// 2026-01-01T00:00:00Z: the example's "now".
pub const EXAMPLE_NOW: i64 = 1_767_225_600_000;

/// Writes the example database to `path`, replacing any file there.
pub fn write(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let mut db = SqliteStore::open(
        path,
        &OpenOptions {
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )?;
    let now = EXAMPLE_NOW;
    let worker = "example-host:1";
    db.write(|tx| {
        let jobs = [
            NewJob::new("noop", json!({})).source("example"),
            NewJob::new("exec", json!({"command": "report", "day": "2025-12-31"}))
                .queue("reports")
                .source("example"),
            NewJob::new(
                "noop",
                json!({"fail": "retry", "error": "upstream answered 503"}),
            )
            .source("example"),
            NewJob::new(
                "noop",
                json!({"fail": "permanent", "error": "upstream answered 400"}),
            )
            .max_attempts(3)
            .source("example"),
            NewJob::new("noop", json!({"note": "cancelled before it ran"})).source("example"),
            NewJob::new("noop", json!({"note": "still running"}))
                .priority(5)
                .source("example"),
            NewJob::new("noop", json!({"note": "waiting for tomorrow"}))
                .run_at(now + 86_400_000)
                .unique_key("nightly:2026-01-02")
                .source("example"),
            NewJob::new("exec", json!({"command": "report", "day": "2026-01-01"}))
                .queue("reports")
                .source("example"),
            NewJob::new("noop", json!({"note": "fans out", "fan_out": 2}))
                .priority(9)
                .source("example"),
        ];
        tx.enqueue(&jobs, now)?;
        let claimed = tx.claim(
            &ClaimSpec {
                limit: 6,
                ..ClaimSpec::default()
            },
            worker,
            now + 60_000,
            now + 1_000,
        )?;
        for job in claimed {
            let resolution = match job.payload.get("fail").and_then(|f| f.as_str()) {
                Some("retry") => Resolution::RetryAt {
                    run_at: now + 3_000,
                    error: "upstream answered 503".into(),
                },
                Some("permanent") => Resolution::Dead {
                    error: "upstream answered 400".into(),
                    follow_ups: vec![],
                },
                _ if job
                    .payload
                    .get("note")
                    .is_some_and(|n| n == "still running") =>
                {
                    // Its handler runs (started_at set), so stats count it as running.
                    tx.record_starts(&[(job.id, job.attempts, now + 1_000)], worker)?;
                    continue;
                }
                _ if job.payload.get("fan_out").is_some() => Resolution::Await {
                    children: (1..=2)
                        .map(|part| NewJob::new("noop", json!({"part": part})).source("example"))
                        .collect(),
                },
                _ if job.payload.get("note").is_some() => Resolution::Released { started: false },
                _ => Resolution::Succeeded {
                    follow_ups: vec![NewJob::new(
                        "noop",
                        json!({"note": "follow-up of a success"}),
                    )
                    .source("example")],
                    sync_marks: Vec::new(),
                },
            };
            let done = Completion {
                job_id: job.id,
                parent_id: job.parent_id,
                attempt: job.attempts,
                worker: worker.into(),
                started_at: now + 1_000,
                finished_at: now + 1_250,
                resolution,
                detail: Some(json!({"example": true})),
            };
            assert!(matches!(
                tx.complete(&done, now + 1_250)?,
                Applied::Moved(_)
            ));
        }
        let cancel_me = tx
            .next_cancellable("cancelled before it ran")?
            .expect("the example has a job to cancel");
        assert_eq!(tx.cancel(cancel_me, now + 2_000)?, JobState::Cancelled);
        Ok(())
    })?;
    // A standalone file: no -wal beside it when it is copied around.
    db.conn.execute_batch("PRAGMA journal_mode = DELETE")?;
    drop(db);
    Ok(())
}
