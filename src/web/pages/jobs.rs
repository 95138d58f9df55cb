//! The Jobs page (a filtered, paged list with its query string) and the Job page (one
//! job with its attempts, source files, children and actions).

use super::{
    age, count, encode_query, layout, live, state_badge, truncate, when, when_opt, Nav, PAGE_SIZE,
};
use crate::job::{Job, JobId, JobState, Transition, UnixMillis};
use crate::store::web::{ChildProgress, JobPage, JobSearch, SourceFile};
use crate::store::Attempt;
use crate::web::{mask, WebError, WebState, Who};
use axum::extract::{Path, Query, State};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;

/// The Jobs page's filter, as it arrives in the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobsQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub q: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub before: Option<JobId>,
    pub limit: Option<usize>,
}

fn non_empty(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

impl JobsQuery {
    pub fn search(&self) -> Result<JobSearch, WebError> {
        let time = |text: &Option<String>, key: &str| -> Result<Option<UnixMillis>, WebError> {
            non_empty(text)
                .map(|t| {
                    crate::clock::parse_time(&t)
                        .map_err(|e| WebError::BadRequest(format!("{key}: {e}")))
                })
                .transpose()
        };
        Ok(JobSearch {
            state: non_empty(&self.state)
                .map(|s| {
                    s.parse::<JobState>()
                        .map_err(|e| WebError::BadRequest(format!("state: {e}")))
                })
                .transpose()?,
            kind: non_empty(&self.kind),
            queue: non_empty(&self.queue),
            text: non_empty(&self.q),
            since: time(&self.since, "since")?,
            until: time(&self.until, "until")?,
            parent_id: None,
            before: self.before,
            limit: self.limit.unwrap_or(PAGE_SIZE).clamp(1, 500),
        })
    }

    /// The query string of this filter with another cursor.
    pub fn with_before(&self, before: Option<JobId>) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (key, value) in [
            ("state", &self.state),
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("q", &self.q),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = non_empty(value) {
                pairs.push((key, v));
            }
        }
        if let Some(b) = before {
            pairs.push(("before", b.to_string()));
        }
        encode_query(&pairs)
    }
}

pub async fn jobs(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Query(query): Query<JobsQuery>,
) -> Result<Markup, WebError> {
    let search = query.search()?;
    let now = state.clock.now_ms();
    let page = state.read(move |db| db.web_search(&search)).await?;
    let body = html! {
        (jobs_filter(&query))
        (jobs_bulk_links(&query))
        @if query.before.is_none() {
            (live("jobs", &format!("/fragments/jobs?{}", query.with_before(None)), jobs_table(&state, &page, &query, now)))
        } @else {
            div id="jobs" { (jobs_table(&state, &page, &query, now)) }
        }
    };
    Ok(layout("Jobs", Nav::Jobs, &who, &state, body))
}

pub async fn jobs_fragment(
    State(state): State<Arc<WebState>>,
    Query(query): Query<JobsQuery>,
) -> Result<Markup, WebError> {
    let search = query.search()?;
    let now = state.clock.now_ms();
    let page = state.read(move |db| db.web_search(&search)).await?;
    Ok(live(
        "jobs",
        &format!("/fragments/jobs?{}", query.with_before(None)),
        jobs_table(&state, &page, &query, now),
    ))
}

fn jobs_filter(query: &JobsQuery) -> Markup {
    let selected = non_empty(&query.state).unwrap_or_default();
    html! {
        form.filter method="get" action="/jobs" {
            label { "state " select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL { option value=(s.as_str()) selected[selected == s.as_str()] { (s.as_str()) } }
            } }
            label { "kind " input name="kind" value=(non_empty(&query.kind).unwrap_or_default()) size="10"; }
            label { "queue " input name="queue" value=(non_empty(&query.queue).unwrap_or_default()) size="10"; }
            label { "text in payload or error " input name="q" value=(non_empty(&query.q).unwrap_or_default()) size="16"; }
            label { "created since " input name="since" value=(non_empty(&query.since).unwrap_or_default()) placeholder="2026-11-24T06:00:00Z" size="20"; }
            label { "until " input name="until" value=(non_empty(&query.until).unwrap_or_default()) size="20"; }
            button type="submit" { "Filter" }
        }
    }
}

fn jobs_bulk_links(query: &JobsQuery) -> Markup {
    let state = non_empty(&query.state).unwrap_or_default();
    let action = match state.as_str() {
        "dead" | "cancelled" => Some("retry"),
        "queued" | "retrying" => Some("cancel"),
        _ => None,
    };
    html! {
        @if let Some(action) = action {
            p.bulk { a href={"/bulk?action=" (action) "&" (query.with_before(None))} { (action) " all matching jobs…" } }
        }
    }
}

fn jobs_table(state: &WebState, page: &JobPage, query: &JobsQuery, now: UnixMillis) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "id" } th { "state" } th { "kind" } th { "queue" } th.num { "attempts" } th { "created" } th { "run at / finished" } th { "last error" } } }
            tbody {
                @for j in &page.jobs {
                    tr {
                        td { a href={"/jobs/" (j.id)} { (j.id) } }
                        td { (state_badge(j.state)) }
                        td { (j.kind) } td { (j.queue) }
                        td.num { (j.attempts) }
                        td { (when(j.created_at, now)) }
                        td { @if let Some(f) = j.finished_at { (when(f, now)) } @else { (when(j.run_at, now)) } }
                        td.error { (j.last_error.as_deref().map(|e| truncate(&mask::text(e, &state.secrets), 100)).unwrap_or_default()) }
                    }
                }
                @if page.jobs.is_empty() { tr { td colspan="8" { "No jobs match." } } }
            }
        }
        @if let Some(floor) = page.searched_down_to {
            p.note { "Searched ids from " (floor) " up; this filter has no index, so each page reads a window of ids." }
        }
        @if let Some(next) = page.next_before {
            p.pager { a rel="next" href={"/jobs?" (query.with_before(Some(next)))} { "Older →" } }
        }
    }
}

// ---- Job ----

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobQuery {
    /// The children's keyset cursor.
    pub before: Option<JobId>,
}

/// Everything the job page shows.
pub struct JobData {
    pub now: UnixMillis,
    pub job: Job,
    pub attempts: Vec<Attempt>,
    pub progress: ChildProgress,
    pub children: JobPage,
    pub source: Option<SourceFile>,
}

pub async fn job_data(
    state: &Arc<WebState>,
    id: JobId,
    before: Option<JobId>,
) -> Result<JobData, WebError> {
    let now = state.clock.now_ms();
    state
        .read(move |db| {
            let job = db.get(id)?;
            let progress = db.web_child_progress(id)?;
            let children = if progress.total > 0 {
                db.web_search(&JobSearch {
                    parent_id: Some(id),
                    before,
                    limit: PAGE_SIZE,
                    ..Default::default()
                })?
            } else {
                JobPage {
                    jobs: Vec::new(),
                    next_before: None,
                    searched_down_to: None,
                }
            };
            Ok(JobData {
                now,
                attempts: db.attempts(id)?,
                source: db.web_source_file(id)?,
                job,
                progress,
                children,
            })
        })
        .await
}

pub async fn job(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(id): Path<JobId>,
    Query(query): Query<JobQuery>,
) -> Result<Markup, WebError> {
    let data = job_data(&state, id, query.before).await?;
    let title = format!("Job {id}");
    let body = job_body(&state, &who, &data, query.before);
    Ok(layout(&title, Nav::Jobs, &who, &state, body))
}

pub async fn job_fragment(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(id): Path<JobId>,
    Query(query): Query<JobQuery>,
) -> Result<Markup, WebError> {
    let data = job_data(&state, id, query.before).await?;
    Ok(job_body(&state, &who, &data, query.before))
}

/// "983 of 3,000 succeeded, 2 dead, ETA 40 s".
pub fn progress_summary(p: &ChildProgress, now: UnixMillis) -> String {
    let get = |s: &str| p.states.get(s).copied().unwrap_or(0);
    let done = get("succeeded") + get("dead") + get("cancelled");
    let mut text = format!(
        "{} of {} succeeded",
        count(get("succeeded")),
        count(p.total)
    );
    for s in ["dead", "cancelled", "running", "retrying"] {
        if get(s) > 0 {
            text.push_str(&format!(", {} {s}", count(get(s))));
        }
    }
    if done < p.total && done > 0 {
        if let Some(first) = p.first_created_at {
            let elapsed = (now - first).max(1) as f64;
            let remaining = (p.total - done) as f64;
            let eta = (elapsed / done as f64 * remaining) as i64;
            text.push_str(&format!(", ETA {}", age(eta)));
        }
    } else if done == p.total {
        text.push_str(", all finished");
    }
    text
}

fn job_body(state: &WebState, who: &Who, data: &JobData, before: Option<JobId>) -> Markup {
    let job = &data.job;
    let now = data.now;
    let payload = mask::value(&job.payload, &state.secrets);
    let pretty = serde_json::to_string_pretty(&payload).unwrap_or_default();
    let url = match before {
        Some(b) => format!("/fragments/jobs/{}?before={b}", job.id),
        None => format!("/fragments/jobs/{}", job.id),
    };
    html! {
        (live("job", &url, html! {
            dl.facts {
                dt { "state" } dd id="job-state" { (state_badge(job.state)) @if job.cancel_requested { " (cancel requested)" } }
                dt { "kind" } dd { (job.kind) }
                dt { "queue" } dd { a href={"/jobs?queue=" (job.queue)} { (job.queue) } }
                dt { "attempts" } dd { (job.attempts) @if let Some(max) = job.max_attempts { " of " (max) } @else { " (limit from the " (job.kind) " policy)" } }
                dt { "priority" } dd { (job.priority) }
                dt { "run at" } dd { (when(job.run_at, now)) }
                dt { "created" } dd { (when(job.created_at, now)) }
                dt { "updated" } dd { (when(job.updated_at, now)) }
                dt { "finished" } dd { (when_opt(job.finished_at, now)) }
                dt { "deadline" } dd { (when_opt(job.deadline_at, now)) }
                dt { "worker" } dd { (job.worker.as_deref().unwrap_or("-")) }
                dt { "unique key" } dd { (job.unique_key.as_deref().unwrap_or("-")) }
                dt { "parent" } dd { @if let Some(p) = job.parent_id { a href={"/jobs/" (p)} { "job " (p) } } @else { "-" } }
                dt { "source" } dd {
                    (job.source.as_deref().map(|s| mask::text(s, &state.secrets)).unwrap_or_else(|| "-".into()))
                    @if let Some(f) = &data.source { " (watch " (f.watch) ": " (f.name) ", " (count(f.size)) " bytes, sha256 " (f.sha256.get(..12).unwrap_or("")) "…)" }
                }
                dt { "last error" } dd.error { (job.last_error.as_deref().map(|e| mask::text(e, &state.secrets)).unwrap_or_else(|| "-".into())) }
            }
            (job_actions(state, who, job))
            h2 { "Payload" }
            pre.payload { (pretty) }
            h2 { "Attempts" }
            (attempts_table(state, &data.attempts, now))
            @if data.progress.total > 0 {
                h2 { "Children" }
                p id="progress" { (progress_summary(&data.progress, now)) }
                (jobs_children(state, job.id, &data.children, now))
            }
        }))
    }
}

fn job_actions(state: &WebState, who: &Who, job: &Job) -> Markup {
    let retry = Transition::Revive.allows(job.state);
    let cancel = Transition::Cancel.allows(job.state) && !job.cancel_requested;
    html! {
        @if state.actions && (retry || cancel) {
            div.actions {
                @if retry {
                    form method="post" action={"/jobs/" (job.id) "/retry"} {
                        input type="hidden" name="csrf" value=(state.csrf_token(&who.0));
                        button type="submit" id="retry" { "Retry now" }
                    }
                }
                @if cancel {
                    form method="post" action={"/jobs/" (job.id) "/cancel"} {
                        input type="hidden" name="csrf" value=(state.csrf_token(&who.0));
                        button type="submit" id="cancel" { "Cancel" }
                    }
                }
            }
        }
    }
}

fn attempts_table(state: &WebState, attempts: &[Attempt], now: UnixMillis) -> Markup {
    html! {
        @if attempts.is_empty() { p { "No attempts recorded." } } @else {
            table.attempts {
                thead { tr { th { "#" } th { "outcome" } th { "worker" } th { "started" } th.num { "duration" } th { "error" } th { "detail" } } }
                tbody {
                    @for a in attempts {
                        tr {
                            td.num { (a.attempt) }
                            td { span class={"outcome " (a.outcome)} { (a.outcome) } }
                            td { (a.worker.as_deref().unwrap_or("-")) }
                            td { (when(a.started_at, now)) }
                            td.num { (age(a.duration_ms)) }
                            td.error { (a.error.as_deref().map(|e| mask::text(e, &state.secrets)).unwrap_or_default()) }
                            td { (attempt_detail(state, a.detail.as_ref())) }
                        }
                    }
                }
            }
        }
    }
}

/// The parts of a detail an operator looks for first, then the rest as JSON.
fn attempt_detail(state: &WebState, detail: Option<&serde_json::Value>) -> Markup {
    let Some(detail) = detail else {
        return html! { "-" };
    };
    let detail = mask::value(detail, &state.secrets);
    let field = |key: &str| detail.get(key).filter(|v| !v.is_null());
    html! {
        @if let Some(status) = field("status") { span.tag { "HTTP " (status) } " " }
        @if let Some(ms) = field("retry_after_ms").and_then(|v| v.as_i64()) { span.tag { "Retry-After " (age(ms)) } " " }
        @if let Some(code) = field("exit_code") { span.tag { "exit " (code) } " " }
        @if let Some(signal) = field("signal") { span.tag { "signal " (signal) } " " }
        @if let Some(tail) = field("stderr_tail").and_then(|v| v.as_str()).filter(|t| !t.is_empty()) {
            details { summary { "stderr tail" } pre { (tail) } }
        }
        details { summary { "all" } pre { (serde_json::to_string_pretty(&detail).unwrap_or_default()) } }
    }
}

fn jobs_children(state: &WebState, parent: JobId, page: &JobPage, now: UnixMillis) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "id" } th { "state" } th { "kind" } th.num { "attempts" } th { "finished" } th { "last error" } } }
            tbody {
                @for j in &page.jobs {
                    tr {
                        td { a href={"/jobs/" (j.id)} { (j.id) } }
                        td { (state_badge(j.state)) }
                        td { (j.kind) }
                        td.num { (j.attempts) }
                        td { (when_opt(j.finished_at, now)) }
                        td.error { (j.last_error.as_deref().map(|e| truncate(&mask::text(e, &state.secrets), 100)).unwrap_or_default()) }
                    }
                }
            }
        }
        @if let Some(next) = page.next_before {
            p.pager { a rel="next" href={"/jobs/" (parent) "?before=" (next)} { "Older children →" } }
        }
    }
}
