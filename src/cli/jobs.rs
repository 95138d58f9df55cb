//! The commands on single jobs: `list`, `show` and `run-now`, with the texts they
//! print. `retry`, `cancel`, `delete` and their bulk forms by filter are in
//! [`super::bulk`].

use super::*;

impl Ctl {
    pub(super) fn list(&self, args: ListArgs, out: &mut dyn Write) -> CtlResult {
        let db = self.open()?;
        let jobs = db.list(&JobFilter {
            payload_contains: args.payload_contains,
            before_id: args.after,
            limit: args.limit,
            ..self.job_filter(&args.filter)?
        })?;
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let progress = db.latest_progress(&ids)?;
        let paused: Vec<String> = db.paused_queues()?.into_iter().map(|p| p.queue).collect();
        if self.json {
            let list: Vec<Value> = jobs
                .iter()
                .map(|job| {
                    let mut value = serde_json::to_value(job).expect("jobs serialize");
                    if let Some(p) = progress.get(&job.id) {
                        value["progress"] = p.clone();
                    }
                    if paused.contains(&job.queue) {
                        value["queue_paused"] = json!(true);
                    }
                    value
                })
                .collect();
            return print_json(out, &Value::Array(list));
        }
        let mut rows = vec![vec![
            "ID".to_string(),
            "STATE".into(),
            "KIND".into(),
            "QUEUE".into(),
            "PRI".into(),
            "ATTEMPTS".into(),
            "RUN AT".into(),
            "PROGRESS".into(),
            "LAST ERROR".into(),
        ]];
        for job in &jobs {
            rows.push(vec![
                job.id.to_string(),
                job.state.to_string(),
                job.kind.clone(),
                if paused.contains(&job.queue) {
                    format!(
                        "{} (paused)",
                        safe_text::cell(&job.queue, safe_text::MAX_CELL - 9)
                    )
                } else {
                    job.queue.clone()
                },
                job.priority.to_string(),
                match job.max_attempts {
                    Some(max) => format!("{}/{max}", job.attempts),
                    None => job.attempts.to_string(),
                },
                self.style.ago(job.run_at),
                progress.get(&job.id).map(progress_text).unwrap_or_default(),
                job.last_error.clone().unwrap_or_default(),
            ]);
        }
        write_table(out, &rows)?;
        if args.limit > 0 && jobs.len() == args.limit {
            if let Some(last) = jobs.last() {
                say(
                    out,
                    &format!("(more: add --after {} for the next page)", last.id),
                )?;
            }
        }
        Ok(())
    }

    /// `--since` / `--until`: an age before now (1h, 7d) or an RFC 3339 time.
    pub(super) fn when(
        &self,
        flag: &str,
        text: Option<&str>,
    ) -> Result<Option<UnixMillis>, CtlError> {
        let Some(text) = text else {
            return Ok(None);
        };
        if let Ok(age) = parse_duration(text) {
            return Ok(Some(self.now - age.as_millis() as i64));
        }
        parse_time(text).map(Some).map_err(|e| {
            CtlError::Usage(format!(
                "{flag}: neither an age (1h, 30m, 7d) nor a time: {e}"
            ))
        })
    }

    /// The filter the shared filter flags describe.
    pub(super) fn job_filter(&self, filter: &FilterArgs) -> Result<JobFilter, CtlError> {
        Ok(JobFilter {
            state: filter.state,
            kind: filter.kind.clone(),
            queue: filter.queue.clone(),
            error_contains: filter.error_contains.clone(),
            created_since: self.when("--since", filter.since.as_deref())?,
            created_until: self.when("--until", filter.until.as_deref())?,
            ..JobFilter::default()
        })
    }

    pub(super) fn show(&self, args: ShowArgs, out: &mut dyn Write) -> CtlResult {
        let id = args.id;
        let db = self.open()?;
        let mut job = db.get(id)?;
        // A payload's own Authorization (or other credential) header is not shown.
        job.payload = crate::handlers::http::auth::masked_payload(&job.payload);
        let attempts = db.attempts(id)?;
        let progress = db.progress_of(id)?;
        let summary = db.children_summary(id)?;
        let children = if args.children {
            db.children_page(id, args.after, args.limit.max(1))?
        } else {
            Vec::new()
        };
        let input = self.input_now(&job);
        let waits = self.waits_because(db.as_ref(), &job)?;
        if self.json {
            let children: Vec<Value> = children
                .iter()
                .map(|c| json!({"id": c.id, "kind": c.kind, "state": c.state, "last_error": c.last_error}))
                .collect();
            let mut value = json!({
                "job": job,
                "attempts": attempts,
                "progress": progress,
                "children_summary": summary,
                // The same as the text's "input now": where a watched file's input is now.
                "input_now": input,
                // The same as the text's "waits": why flow control keeps it waiting.
                "waits": waits,
            });
            if args.children {
                value["children"] = Value::Array(children);
            }
            return print_json(out, &value);
        }
        let optional_time = |t: Option<UnixMillis>| self.style.time_or_dash(t);
        let mut lines = vec![
            ("id", job.id.to_string()),
            (
                "state",
                self.style.paint(job.state.as_str(), job.state.as_str()),
            ),
            ("kind", job.kind.clone()),
            ("queue", job.queue.clone()),
            ("priority", job.priority.to_string()),
            ("attempts", self.attempts_text(&job)),
            ("run at", self.style.time(job.run_at)),
            ("created", self.style.time(job.created_at)),
            ("updated", self.style.time(job.updated_at)),
            ("finished", optional_time(job.finished_at)),
            ("lease until", optional_time(job.lease_until)),
            ("worker", job.worker.clone().unwrap_or_else(|| "-".into())),
            (
                "unique key",
                job.unique_key.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "parent",
                job.parent_id
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            ("deadline", optional_time(job.deadline_at)),
            ("source", job.source.clone().unwrap_or_else(|| "-".into())),
            (
                "cancel requested",
                if job.cancel_requested {
                    "yes".into()
                } else {
                    "no".into()
                },
            ),
            (
                "last error",
                job.last_error.clone().unwrap_or_else(|| "-".into()),
            ),
            ("payload", job.payload.to_string()),
        ];
        if let Some(input) = &input {
            lines.push(("input now", input.clone()));
        }
        if let Some(destination) = &job.destination {
            lines.push((
                "destination",
                crate::flow::label(destination, &job.flow_key),
            ));
        }
        if let Some(key) = &job.order_key {
            lines.push(("order key", key.clone()));
        }
        if let Some(waits) = &waits {
            lines.push(("waits", waits.clone()));
        }
        if let Some(p) = progress.last() {
            lines.push((
                "progress",
                format!(
                    "{} (attempt {}, {})",
                    progress_text(&p.progress),
                    p.attempt,
                    format_millis(p.updated_at)
                ),
            ));
        }
        // What a handler kept of the other side's answer (an http job's `record`, e.g.
        // an upload's id), from the latest attempt that has it.
        let recorded = attempts
            .iter()
            .rev()
            .find_map(|a| a.detail.as_ref()?.get("recorded").cloned());
        if let Some(r) = recorded {
            lines.push(("recorded", r.to_string()));
        }
        if summary.total > 0 {
            lines.push(("children", children_text(&summary, self.now)));
        }
        for (label, value) in lines {
            say(out, &format!("{label:>16}  {}", safe_text::escape(&value)))?;
        }
        say(out, "")?;
        if attempts.is_empty() {
            say(out, "no attempts recorded")?;
        } else {
            let mut rows = vec![vec![
                "ATTEMPT".to_string(),
                "OUTCOME".into(),
                "STARTED".into(),
                "DURATION".into(),
                "DETAIL".into(),
                "ERROR".into(),
            ]];
            for a in &attempts {
                rows.push(vec![
                    a.attempt.to_string(),
                    a.outcome.clone(),
                    self.style.ago(a.started_at),
                    short_duration(a.duration_ms),
                    a.detail.as_ref().map(detail_text).unwrap_or_default(),
                    a.error.clone().unwrap_or_default(),
                ]);
            }
            write_table(out, &rows)?;
            // An exec attempt's stderr tail, its last lines, each escaped.
            for a in &attempts {
                let Some(tail) = a
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("stderr_tail"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.trim().is_empty())
                else {
                    continue;
                };
                say(out, "")?;
                say(out, &format!("attempt {} stderr (tail):", a.attempt))?;
                let lines: Vec<&str> = tail.lines().collect();
                for line in &lines[lines.len().saturating_sub(STDERR_LINES)..] {
                    say(
                        out,
                        &format!("  {}", safe_text::cell(line, 4 * safe_text::MAX_CELL)),
                    )?;
                }
            }
        }
        if args.children {
            say(out, "")?;
            if children.is_empty() {
                say(out, &format!("no children with ids above {}", args.after))?;
            } else {
                let mut rows = vec![vec![
                    "CHILD".to_string(),
                    "STATE".into(),
                    "KIND".into(),
                    "LAST ERROR".into(),
                ]];
                for c in &children {
                    rows.push(vec![
                        c.id.to_string(),
                        c.state.to_string(),
                        c.kind.clone(),
                        c.last_error.clone().unwrap_or_default(),
                    ]);
                }
                write_table(out, &rows)?;
                if children.len() == args.limit.max(1) {
                    let last = children.last().map(|c| c.id).unwrap_or_default();
                    say(
                        out,
                        &format!("(more: jobctl show {id} --children --after {last})"),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The attempts line of `show`: the job's own limit, else the policy's limit and
    /// where it comes from (`[kinds.K.retry]` or `[retry]`).
    pub(super) fn attempts_text(&self, job: &crate::job::Job) -> String {
        match job.max_attempts {
            Some(max) => format!("{} of {max} (the job's own limit)", job.attempts),
            None => {
                let max = self.config.policy_for(&job.kind).max_attempts;
                let from = match self.config.kinds.get(&job.kind) {
                    Some(k) if k.retry.max_attempts.is_some() => {
                        format!("[kinds.{}.retry]", job.kind)
                    }
                    _ => "[retry]".to_string(),
                };
                format!("{} of {max} (limit from {from})", job.attempts)
            }
        }
    }

    /// Where a watched file's input is now: the payload names `spool/<id>/...`, which
    /// moves to `done/` or `failed/` when the job ends.
    pub(super) fn input_now(&self, job: &crate::job::Job) -> Option<String> {
        let named = job
            .payload
            .get("file")
            .or_else(|| job.payload.get("dir"))?
            .as_str()?;
        let spool = Spool::at(&self.config.daemon.data_dir).ok()?;
        let spooled = spool.job_dir(job.id);
        let inside = Path::new(named).strip_prefix(&spooled).ok()?;
        Some(match spool.job_input_dir(job.id) {
            Some(dir) => dir.join(inside).display().to_string(),
            None => "gone (not in spool/, done/ or failed/; purged or moved away)".into(),
        })
    }

    pub(super) fn run_now(&self, ids: &[JobId], out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let now = self.now;
        db.write(|tx| {
            for id in ids {
                tx.run_now(*id, now)?;
            }
            Ok(())
        })
        .map_err(forbidden_as_failure)?;
        if self.json {
            return print_json(out, &json!({"due_now": ids}));
        }
        say(
            out,
            &format!("{} job(s) due now: {}", ids.len(), join_ids(ids)),
        )
    }
}

pub(super) fn join_ids(ids: &[JobId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lines of an exec attempt's stderr tail `show` prints.
const STDERR_LINES: usize = 20;

pub(super) fn forbidden_as_failure(e: StoreError) -> CtlError {
    match e {
        StoreError::Forbidden(f) => CtlError::Failure(f.to_string()),
        other => other.into(),
    }
}

/// A handler's progress (`{"rows": 1200, "batches": 12}`) as `rows=1200 batches=12`.
pub(super) fn progress_text(progress: &Value) -> String {
    match progress {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// An attempt's detail in a few words: an http exchange's status and URL, an exec
/// command's exit code or signal.
pub(super) fn detail_text(detail: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(url) = detail.get("url").and_then(Value::as_str) {
        let method = detail.get("method").and_then(Value::as_str).unwrap_or("");
        let status = match detail.get("status").and_then(Value::as_u64) {
            Some(status) => format!("HTTP {status}"),
            None => "no answer".into(),
        };
        parts.push(format!("{status} {method} {url}"));
    }
    if let Some(code) = detail.get("exit_code").and_then(Value::as_i64) {
        parts.push(format!("exit code {code}"));
    }
    if let Some(signal) = detail.get("signal").and_then(Value::as_i64) {
        parts.push(format!("killed by signal {signal}"));
    }
    parts.join("; ")
}

/// A fan-out job's children: counts per state, percent done, rate and ETA.
pub(super) fn children_text(summary: &crate::store::ChildrenSummary, now: UnixMillis) -> String {
    let states: Vec<String> = JobState::ALL
        .iter()
        .filter_map(|s| summary.states.get(s.as_str()).map(|n| format!("{n} {s}")))
        .collect();
    let percent = summary.finished as f64 * 100.0 / summary.total.max(1) as f64;
    let mut text = format!(
        "{} ({}); {percent:.0}% finished",
        summary.total,
        states.join(", ")
    );
    let remaining = summary.total - summary.finished;
    if let (Some(first), true) = (summary.first_created_at, summary.finished > 0) {
        // The rate over the time from the first child's creation to the last finish
        // (or now, while some are still live).
        let end = if remaining == 0 {
            summary.last_finished_at.unwrap_or(now)
        } else {
            now
        };
        let seconds = ((end - first).max(1)) as f64 / 1000.0;
        let rate = summary.finished as f64 / seconds;
        text.push_str(&format!(", {rate:.1}/s"));
        if remaining > 0 && rate > 0.0 {
            let eta = (remaining as f64 / rate).ceil() as u64;
            text.push_str(&format!(
                ", ETA {}",
                humantime::format_duration(std::time::Duration::from_secs(eta))
            ));
        }
    }
    text
}
