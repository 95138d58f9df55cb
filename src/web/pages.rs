//! The HTML pages: Overview, Jobs, Job, Dead letter and Queues, each with a fragment
//! that htmx swaps in when the event stream says something changed (or every 30 s if
//! the stream is down). Every page is complete without JavaScript; all text is escaped
//! by maud, and payloads, errors and details pass through [`super::mask`].

use super::{mask, WebError, WebState, Who};
use crate::clock::format_millis;
use crate::job::{Job, JobId, JobState, Transition, UnixMillis};
use crate::store::web::{
    ChildProgress, DeadGroup, JobPage, JobSearch, Overview, SourceFile, WebAction,
};
use crate::store::{Attempt, PendingFolder, QueuePause, SyncState};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
const HTMX_SSE: &[u8] = include_bytes!("assets/sse.min.js");
const STYLE: &[u8] = include_bytes!("assets/style.css");

/// Rows on one page of a list.
pub const PAGE_SIZE: usize = 50;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "jobd: " (status) } link rel="stylesheet" href="/assets/style.css"; }
                body { main { h1 { (status) } p.error { (self.message()) } p { a href="/" { "Overview" } } } }
            }
        };
        (status, body).into_response()
    }
}

pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "sse.min.js" => (HTMX_SSE, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub async fn not_found() -> WebError {
    WebError::NotFound("no such page".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Nav {
    Overview,
    Jobs,
    Dead,
    Queues,
}

fn layout(title: &str, nav: Nav, who: &Who, state: &WebState, body: Markup) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would add a style element and may eval; the CSP forbids both.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { "jobd: " (title) }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/sse.min.js" defer {}
            }
            body hx-ext="sse" sse-connect="/events" {
                header {
                    span.brand { "jobd" }
                    nav {
                        (link(Nav::Overview, "/", "Overview"))
                        (link(Nav::Jobs, "/jobs", "Jobs"))
                        (link(Nav::Dead, "/dead", "Dead letter"))
                        (link(Nav::Queues, "/queues", "Queues"))
                    }
                    span.who {
                        (who.0)
                        @if state.actions { " · actions on" } @else { " · read-only" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page of its own (confirmations, results) under the Jobs tab.
pub fn simple_page(state: &WebState, who: &Who, title: &str, body: Markup) -> Markup {
    layout(title, Nav::Jobs, who, state, body)
}

/// A part of a page that refreshes itself when something changed.
fn live(id: &str, url: &str, inner: Markup) -> Markup {
    html! {
        div id=(id) hx-get=(url) hx-trigger="sse:change, every 30s" hx-swap="outerHTML" {
            (inner)
        }
    }
}

/// `12 s ago` / `in 3 min`, with the exact time on hover.
fn when(at: UnixMillis, now: UnixMillis) -> Markup {
    html! { time datetime=(format_millis(at)) title=(format_millis(at)) { (relative(at, now)) } }
}

fn when_opt(at: Option<UnixMillis>, now: UnixMillis) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { "-" },
    }
}

pub fn relative(at: UnixMillis, now: UnixMillis) -> String {
    let delta = now - at;
    let span = age(delta.abs());
    if delta.abs() < 1000 {
        "now".into()
    } else if delta > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// `850 ms`, `12 s`, `3 min`, `2 h`, `4 d`.
pub fn age(ms: i64) -> String {
    match ms {
        m if m < 1000 => format!("{m} ms"),
        m if m < 60_000 => format!("{} s", m / 1000),
        m if m < 3_600_000 => format!("{} min", m / 60_000),
        m if m < 86_400_000 => format!("{} h", m / 3_600_000),
        m => format!("{} d", m / 86_400_000),
    }
}

/// `1,000,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn state_badge(state: JobState) -> Markup {
    html! { span class={"state " (state.as_str())} { (state.as_str()) } }
}

fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

// ---- Overview ----

/// Everything the overview shows, read in one go.
pub struct OverviewData {
    pub now: UnixMillis,
    pub overview: Overview,
    pub sync: Vec<SyncState>,
    pub pending: Vec<PendingFolder>,
    pub actions: Vec<WebAction>,
    /// Queues an operator paused (`jobctl pause` or this page).
    pub paused: Vec<QueuePause>,
}

pub async fn overview_data(state: &Arc<WebState>) -> Result<OverviewData, WebError> {
    let now = state.clock.now_ms();
    let base = state.succeeded_base().await?;
    state
        .read(move |db| {
            Ok(OverviewData {
                now,
                overview: db.web_overview(now, Some(&base))?,
                sync: db.sync_states()?,
                pending: db.pending_folders()?,
                actions: db.web_actions(10)?,
                paused: db.paused_queues()?,
            })
        })
        .await
}

pub async fn overview(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
) -> Result<Markup, WebError> {
    let data = overview_data(&state).await?;
    Ok(layout(
        "Overview",
        Nav::Overview,
        &who,
        &state,
        overview_body(&state, &data),
    ))
}

pub async fn overview_fragment(State(state): State<Arc<WebState>>) -> Result<Markup, WebError> {
    let data = overview_data(&state).await?;
    Ok(overview_body(&state, &data))
}

fn overview_body(state: &WebState, data: &OverviewData) -> Markup {
    let o = &data.overview;
    let now = data.now;
    let config = state.config();
    let total = |s: JobState| -> u64 {
        if s.is_terminal() {
            o.finished.get(s.as_str()).copied().unwrap_or(0)
        } else {
            o.live_total(s.as_str())
        }
    };
    let oldest = o.oldest_ready_age_ms.values().max().copied();
    let live_states = [
        JobState::Queued,
        JobState::Retrying,
        JobState::Running,
        JobState::Waiting,
    ];
    html! {
        (live("overview", "/fragments/overview", html! {
            section.cards {
                @for s in JobState::ALL {
                    a.card href={"/jobs?state=" (s.as_str())} id={"count-" (s.as_str())} {
                        span.label { (state_badge(s)) }
                        span.value data-count=(total(s)) { (count(total(s))) }
                    }
                }
                div.card id="oldest-ready" {
                    span.label { "oldest ready job waits" }
                    span.value { @if let Some(age_ms) = oldest { (age(age_ms)) } @else { "-" } }
                }
            }
            section {
                h2 { "Throughput, last hour" }
                (throughput_chart(o))
            }
            section {
                h2 { "Queues" }
                @if !data.paused.is_empty() {
                    p.error id="paused-queues" {
                        "Paused (nothing new is claimed): "
                        @for (i, p) in data.paused.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={"/jobs?queue=" (p.queue)} { (p.queue) } " since " (when(p.paused_at, now))
                        }
                        " — " a href="/queues" { "resume on the Queues page" }
                    }
                }
                table {
                    thead { tr { th { "queue" } @for s in live_states { th.num { (s.as_str()) } } th { "oldest ready" } } }
                    tbody {
                        @for (queue, states) in &o.live {
                            tr {
                                td {
                                    a href={"/jobs?queue=" (queue)} { (queue) }
                                    @if data.paused.iter().any(|p| &p.queue == queue) { " " span.state.paused { "paused" } }
                                }
                                @for s in live_states {
                                    td.num { (count(states.get(s.as_str()).copied().unwrap_or(0))) }
                                }
                                td { @if let Some(a) = o.oldest_ready_age_ms.get(queue) { (age(*a)) } @else { "-" } }
                            }
                        }
                        @if o.live.is_empty() { tr { td colspan="6" { "No live jobs." } } }
                    }
                }
            }
            section {
                h2 { "Running (" (o.running.len()) " of " (config.daemon.workers) " workers busy)" }
                table {
                    thead { tr { th { "job" } th { "kind" } th { "queue" } th { "worker" } th { "attempt" } th { "since (claim or heartbeat)" } } }
                    tbody {
                        @for r in &o.running {
                            tr {
                                td { a href={"/jobs/" (r.id)} { (r.id) } }
                                td { (r.kind) } td { (r.queue) }
                                td { (r.worker.as_deref().unwrap_or("-")) }
                                td.num { (r.attempts) }
                                td { (when(r.since, now)) }
                            }
                        }
                        @if o.running.is_empty() { tr { td colspan="6" { "Nothing is running." } } }
                    }
                }
            }
            section {
                h2 { "Pipelines" }
                (pipelines(state, &data.sync, now))
            }
            section {
                h2 { "Incomplete folder sets" }
                @if data.pending.is_empty() { p { "None." } } @else {
                    table {
                        thead { tr { th { "watch" } th { "folder" } th { "first seen" } th { "missing" } } }
                        tbody { @for p in &data.pending {
                            tr { td { (p.watch) } td { (p.folder) } td { (when(p.first_seen, now)) } td { (p.missing.join(", ")) } }
                        } }
                    }
                }
            }
            section {
                h2 { "Recent actions from this page" }
                (actions_table(&data.actions, now))
            }
        }))
    }
}

/// One configured (or formerly configured) pipeline as the overview shows it: its
/// schedule, when the scheduler will next enqueue a run, and its sync state.
#[derive(Debug, serde::Serialize)]
pub struct PipelineRow {
    pub name: String,
    /// None for a pipeline no longer in the config that left sync state behind.
    pub kind: Option<&'static str>,
    /// "every 1h", "cron 0 * * * *" or "on demand".
    pub schedule: String,
    /// When the next period starts, so the scheduler enqueues the next run (ms); None
    /// for pipelines without a schedule.
    pub next_run: Option<UnixMillis>,
    pub sync: Option<SyncState>,
}

/// The pipelines of the config and of the sync state, by name.
pub fn pipeline_rows(state: &WebState, sync: &[SyncState], now: UnixMillis) -> Vec<PipelineRow> {
    let config = state.config();
    let by_name: BTreeMap<&str, &SyncState> =
        sync.iter().map(|s| (s.pipeline.as_str(), s)).collect();
    let names: BTreeSet<&str> = config
        .pipelines
        .keys()
        .map(String::as_str)
        .chain(by_name.keys().copied())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let pipeline = config.pipelines.get(name);
            let schedule = pipeline.and_then(|p| p.schedule());
            PipelineRow {
                name: name.to_string(),
                kind: pipeline.map(|p| p.job_kind()),
                schedule: match &schedule {
                    Some(crate::config::PipelineSchedule::Every(d)) => {
                        format!("every {}", humantime::format_duration(*d))
                    }
                    Some(crate::config::PipelineSchedule::Cron(c)) => format!("cron {c}"),
                    None => "on demand".into(),
                },
                next_run: schedule
                    .and_then(|s| crate::daemon::scheduler::next_boundary(&s, now).ok()),
                sync: by_name.get(name).map(|s| (*s).clone()),
            }
        })
        .collect()
}

fn pipelines(state: &WebState, sync: &[SyncState], now: UnixMillis) -> Markup {
    let rows = pipeline_rows(state, sync, now);
    if rows.is_empty() {
        return html! { p { "No pipelines configured." } };
    }
    html! {
        table {
            thead { tr { th { "pipeline" } th { "kind" } th { "schedule" } th { "next run" } th { "last complete run" } th { "synced up to" } th.num { "runs" } th.num { "last run items" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td { (row.name) }
                        td { (row.kind.unwrap_or("(not configured)")) }
                        td { (row.schedule) }
                        td.next-run { (when_opt(row.next_run, now)) }
                        @if let Some(m) = &row.sync {
                            td { (when(m.updated_at, now)) }
                            td { (when(m.high_water, now)) }
                            td.num { (count(m.runs)) }
                            td.num { (count(m.last_run_items)) }
                        } @else {
                            td colspan="4" { "never completed a run (the next is a full sync)" }
                        }
                    }
                }
            }
        }
    }
}

fn actions_table(actions: &[WebAction], now: UnixMillis) -> Markup {
    html! {
        @if actions.is_empty() { p { "None." } } @else {
            table {
                thead { tr { th { "when" } th { "who" } th { "action" } th.num { "jobs" } th { "recorded as" } } }
                tbody { @for a in actions {
                    tr {
                        td { (when(a.at, now)) }
                        td { (a.detail["by"].as_str().unwrap_or("?")) }
                        td { (a.detail["action"].as_str().unwrap_or("?")) " " (a.detail["what"].as_str().unwrap_or("")) }
                        td.num { (a.detail["count"].as_u64().unwrap_or(0)) }
                        td { a href={"/jobs/" (a.record_id)} { "job " (a.record_id) } }
                    }
                } }
            }
        }
    }
}

/// Jobs finished per minute over the last hour as stacked bars: succeeded below, dead
/// above. Plain SVG attributes, no script and no inline style.
fn throughput_chart(o: &Overview) -> Markup {
    let empty = vec![0; 60];
    let ok = o.throughput.get("succeeded").unwrap_or(&empty);
    let dead = o.throughput.get("dead").unwrap_or(&empty);
    let peak = ok
        .iter()
        .zip(dead)
        .map(|(a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (600.0, 120.0, 10.0);
    let scale = |n: u64| n as f64 / peak as f64 * (height - 14.0);
    let total_ok: u64 = ok.iter().sum();
    let total_dead: u64 = dead.iter().sum();
    html! {
        svg.chart viewBox={"0 0 " (width) " " (height)} role="img" aria-label={"jobs finished per minute: " (total_ok) " succeeded, " (total_dead) " dead in the last hour"} {
            title { "Jobs finished per minute, last 60 minutes (peak " (peak) ")" }
            line.axis x1="0" y1=(height - 0.5) x2=(width) y2=(height - 0.5) {}
            @for (i, (s, d)) in ok.iter().zip(dead).enumerate() {
                @let x = i as f64 * bar;
                @let hs = scale(*s);
                @let hd = scale(*d);
                @if *s > 0 { rect.ok x=(x + 1.0) y=(height - 1.0 - hs) width=(bar - 2.0) height=(hs) { title { (s) " succeeded" } } }
                @if *d > 0 { rect.dead x=(x + 1.0) y=(height - 1.0 - hs - hd) width=(bar - 2.0) height=(hd) { title { (d) " dead" } } }
            }
            text x="2" y="11" { "peak " (peak) "/min" }
        }
        p.legend { span.ok { "■" } " succeeded " (count(total_ok)) "  " span.dead { "■" } " dead " (count(total_dead)) " (minute by minute, oldest left)" }
    }
}

// ---- Jobs ----

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

pub fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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

// ---- Dead letter ----

pub async fn dead(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
) -> Result<Markup, WebError> {
    let now = state.clock.now_ms();
    let groups = state.read(|db| db.web_dead_groups(200)).await?;
    let body = dead_body(&state, &groups, now);
    Ok(layout("Dead letter", Nav::Dead, &who, &state, body))
}

pub async fn dead_fragment(State(state): State<Arc<WebState>>) -> Result<Markup, WebError> {
    let now = state.clock.now_ms();
    let groups = state.read(|db| db.web_dead_groups(200)).await?;
    Ok(dead_body(&state, &groups, now))
}

fn dead_body(state: &WebState, groups: &[DeadGroup], now: UnixMillis) -> Markup {
    html! {
        (live("dead", "/fragments/dead", html! {
            @if groups.is_empty() { p id="dead-empty" { "The dead-letter box is empty." } } @else {
                table.dead {
                    thead { tr { th { "kind" } th { "error" } th.num { "jobs" } th { "last died" } th { "" } } }
                    tbody {
                        @for g in groups {
                            @let error = mask::text(&g.error, &state.secrets);
                            // The link filters by the error's text up to its first masked
                            // secret, so no secret travels in a URL.
                            @let filter = encode_query(&[("state", "dead".into()), ("kind", g.kind.clone()), ("q", error.split(crate::handlers::http::auth::MASK).next().unwrap_or("").trim().to_string())]);
                            tr {
                                td { (g.kind) }
                                td.error { (error) }
                                td.num { (count(g.count)) }
                                td { (when(g.last_finished_at, now)) }
                                td {
                                    a href={"/jobs?" (filter)} { "list" } " · "
                                    a href={"/jobs/" (g.newest_id)} { "newest" }
                                    @if state.actions { " · " a href={"/bulk?action=retry&" (filter)} { "retry all…" } }
                                }
                            }
                        }
                    }
                }
            }
        }))
    }
}

// ---- Queues ----

/// One queue as the Queues page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueRow {
    pub name: String,
    /// The queue's own limit; `None`: it shares the worker pool.
    pub concurrency: Option<usize>,
    pub live: BTreeMap<String, u64>,
    /// Paused by an operator: nothing new is claimed from it.
    pub paused: bool,
    pub paused_at: Option<UnixMillis>,
    pub pause_reason: Option<String>,
}

pub async fn queue_rows(state: &Arc<WebState>) -> Result<(Vec<QueueRow>, usize), WebError> {
    let now = state.clock.now_ms();
    let base = state.succeeded_base().await?;
    let (overview, paused) = state
        .read(move |db| Ok((db.web_overview(now, Some(&base))?, db.paused_queues()?)))
        .await?;
    let paused: BTreeMap<String, QueuePause> =
        paused.into_iter().map(|p| (p.queue.clone(), p)).collect();
    let config = state.config();
    let names: BTreeSet<String> = config
        .queues
        .keys()
        .cloned()
        .chain(overview.live.keys().cloned())
        .chain(paused.keys().cloned())
        .chain(std::iter::once("default".to_string()))
        .collect();
    let rows = names
        .into_iter()
        .map(|name| QueueRow {
            concurrency: config.queues.get(&name).map(|q| q.concurrency),
            live: overview.live.get(&name).cloned().unwrap_or_default(),
            paused: paused.contains_key(&name),
            paused_at: paused.get(&name).map(|p| p.paused_at),
            pause_reason: paused.get(&name).and_then(|p| p.reason.clone()),
            name,
        })
        .collect();
    Ok((rows, config.daemon.workers))
}

pub async fn queues(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
) -> Result<Markup, WebError> {
    let (rows, workers) = queue_rows(&state).await?;
    Ok(layout(
        "Queues",
        Nav::Queues,
        &who,
        &state,
        queues_body(&state, &who, &rows, workers),
    ))
}

pub async fn queues_fragment(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
) -> Result<Markup, WebError> {
    let (rows, workers) = queue_rows(&state).await?;
    Ok(queues_body(&state, &who, &rows, workers))
}

fn queues_body(state: &WebState, who: &Who, rows: &[QueueRow], workers: usize) -> Markup {
    let now = state.clock.now_ms();
    html! {
        (live("queues", "/fragments/queues", html! {
            table {
                thead { tr { th { "queue" } th { "concurrency" } th.num { "queued" } th.num { "retrying" } th.num { "running" } th.num { "waiting" } th { "paused" } @if state.actions { th { "action" } } } }
                tbody {
                    @for q in rows {
                        tr {
                            td { a href={"/jobs?queue=" (q.name)} { (q.name) } }
                            td { @if let Some(c) = q.concurrency { (c) } @else { "shares the " (workers) " workers" } }
                            @for s in ["queued", "retrying", "running", "waiting"] {
                                td.num { (count(q.live.get(s).copied().unwrap_or(0))) }
                            }
                            td id={"paused-" (q.name)} {
                                @if let Some(at) = q.paused_at { "paused " (when(at, now)) @if let Some(r) = &q.pause_reason { " (" (r) ")" } } @else { "no" }
                            }
                            @if state.actions {
                                td {
                                    form method="post" action={"/queues/" (q.name) (if q.paused { "/resume" } else { "/pause" })} {
                                        input type="hidden" name="csrf" value=(state.csrf_token(&who.0));
                                        @if q.paused {
                                            button type="submit" id={"resume-" (q.name)} { "Resume" }
                                        } @else {
                                            button type="submit" id={"pause-" (q.name)} { "Pause" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.note { "Concurrency comes from [queues.NAME] in the configuration. A paused queue's running jobs finish; nothing new is claimed from it until it is resumed (here or with jobctl resume)." }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ages_and_progress_read_well() {
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(983), "983");
        assert_eq!(age(40_000), "40 s");
        assert_eq!(relative(1_000, 61_000), "1 min ago");
        let progress = ChildProgress {
            states: [
                ("succeeded".to_string(), 983),
                ("dead".to_string(), 2),
                ("queued".to_string(), 2015),
            ]
            .into_iter()
            .collect(),
            total: 3000,
            first_created_at: Some(0),
            last_finished_at: Some(10_000),
        };
        // 985 done in 13.1 s, 2015 to go.
        assert_eq!(
            progress_summary(&progress, 13_133),
            "983 of 3,000 succeeded, 2 dead, ETA 26 s"
        );
    }

    #[test]
    fn a_filter_round_trips_through_its_query_string() {
        let query = JobsQuery {
            state: Some("dead".into()),
            q: Some("a b&c".into()),
            kind: Some("".into()),
            ..Default::default()
        };
        assert_eq!(
            query.with_before(Some(7)),
            "state=dead&q=a%20b%26c&before=7"
        );
    }
}
