//! Stage 1 of `csv_import`: every batch has finished; the summary file is completed
//! and the pipeline's follow-up job, with its placeholders filled, is handed on.

use super::{fmt_time, pipeline, state_path, write_summary, ImportPayload, Summary};
use crate::handlers::{HandlerError, JobContext};
use crate::job::{Job, NewJob, Outcome};
use serde_json::Value;

/// Stage 1: every batch finished; write the summary and hand on the follow-up.
pub(super) fn fan_in(job: &Job, ctx: &JobContext) -> Result<Outcome, HandlerError> {
    let payload = ImportPayload::parse(&job.payload)?;
    let state = state_path(&ctx.data_dir, job);
    let text = std::fs::read(&state).map_err(|e| {
        HandlerError::permanent(format!(
            "the state stage 0 left ({}) cannot be read: {e}",
            state.display()
        ))
    })?;
    let mut summary: Summary = serde_json::from_slice(&text).map_err(|e| {
        HandlerError::permanent(format!(
            "the state in {} is not valid: {e}",
            state.display()
        ))
    })?;
    let children = ctx.children.clone().unwrap_or_default();
    let count = |state: &str| children.get(state).copied().unwrap_or(0);
    summary.batches_succeeded = count("succeeded");
    summary.batches_dead = count("dead");
    summary.batches_cancelled = count("cancelled");
    let linked: u64 = children.values().sum();
    summary.batches_already_enqueued = summary.batches.saturating_sub(linked);
    let finished = ctx.clock.now_ms();
    summary.finished_at = Some(fmt_time(finished));
    summary.duration_ms = Some(finished - summary.started_ms);
    let failed = summary.batches_dead + summary.batches_cancelled;
    summary.status = if failed == 0 {
        "completed"
    } else {
        "completed_with_failures"
    }
    .into();
    write_summary(&summary)?;
    // This job's bodies serve only its own batches (duplicates point at the bodies of
    // the import that first enqueued them); they are kept while one may be retried.
    if failed == 0 {
        let _ = std::fs::remove_file(&summary.bodies_file);
    }
    let _ = std::fs::remove_file(&state);
    let detail = Some(serde_json::to_value(&summary).unwrap_or_default());
    if failed > 0 {
        return Ok(Outcome::Permanent {
            error: format!(
                "{}: {failed} of {} batches did not succeed ({} dead, {} cancelled); see {}",
                summary.name,
                summary.batches,
                summary.batches_dead,
                summary.batches_cancelled,
                summary.summary_file
            ),
            detail,
        });
    }
    let p = pipeline(&ctx.config, &payload.pipeline)?;
    let follow_ups = p
        .follow_up
        .iter()
        .map(|f| {
            let mut next = NewJob::new(f.kind.clone(), fill(&f.payload, &summary))
                .queue(f.queue.clone().unwrap_or_else(|| job.queue.clone()))
                .unique_key(format!(
                    "csv:{}:{}:follow_up",
                    summary.pipeline, summary.sha256
                ))
                .source(format!("csv_import:{}", job.id));
            next.priority = job.priority;
            next
        })
        .collect();
    Ok(Outcome::succeeded(follow_ups, detail))
}

/// Fills the follow-up's placeholders (values from the summary, never from rows).
fn fill(value: &Value, s: &Summary) -> Value {
    match value {
        Value::String(text) => Value::String(
            text.replace("{{file}}", &s.file)
                .replace("{{name}}", &s.name)
                .replace("{{sha256}}", &s.sha256)
                .replace("{{pipeline}}", &s.pipeline)
                .replace("{{summary}}", &s.summary_file),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, s)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, s))).collect())
        }
        other => other.clone(),
    }
}
