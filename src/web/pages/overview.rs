//! The Overview page: totals by state, throughput, destinations and their holds,
//! pipelines, folders waiting for their file set, paused queues and recent web actions.

use super::{age, count, layout, live, state_badge, when, when_opt, Nav};
use crate::flow::DestinationView;
use crate::job::{JobState, UnixMillis};
use crate::store::web::{Overview, WebAction};
use crate::store::{PendingFolder, QueuePause, SyncState};
use crate::web::{WebError, WebState, Who};
use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Everything the overview shows, read in one go.
pub struct OverviewData {
    pub now: UnixMillis,
    pub overview: Overview,
    pub sync: Vec<SyncState>,
    pub pending: Vec<PendingFolder>,
    pub actions: Vec<WebAction>,
    /// Queues an operator paused (`jobctl pause` or this page).
    pub paused: Vec<QueuePause>,
    /// Each destination (and key) with limits, jobs or a hold, as `jobctl destinations`.
    pub destinations: Vec<DestinationView>,
}

pub async fn overview_data(state: &Arc<WebState>) -> Result<OverviewData, WebError> {
    let now = state.clock.now_ms();
    let base = state.succeeded_base().await?;
    let live = state.live_counts().await?;
    let limits = state.config().destination_limits();
    state
        .read(move |db| {
            Ok(OverviewData {
                now,
                overview: db.web_overview(now, Some(&base), Some(&live))?,
                sync: db.sync_states()?,
                pending: db.pending_folders()?,
                actions: db.web_actions(10)?,
                paused: db.paused_queues()?,
                destinations: db.destinations(&limits, now)?,
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
                @if o.live_age_ms >= 1000 {
                    p.note id="live-age" {
                        "Counted " (age(o.live_age_ms)) " ago: with this many live jobs the count is redone every few seconds, not for every refresh."
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
                h2 { "Destinations" }
                (destinations_table(&data.destinations, now))
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

/// Each destination (and key): its limits, what is in flight and waiting, and a hold with
/// the answer that set it.
fn destinations_table(views: &[DestinationView], now: UnixMillis) -> Markup {
    let limits = |v: &DestinationView| -> String {
        let mut parts = Vec::new();
        if let Some(rate) = v.rate_per_second {
            parts.push(format!("{rate}/s"));
        }
        if let Some(burst) = v.burst {
            parts.push(format!("burst {burst}"));
        }
        if let Some(max) = v.max_in_flight {
            parts.push(format!("at most {max} at once"));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    };
    html! {
        @if views.is_empty() { p { "No destination has limits, jobs or a hold." } } @else {
            table id="destinations" {
                thead { tr { th { "destination" } th { "limits" } th.num { "in flight" } th.num { "waiting" } th { "held" } } }
                tbody { @for v in views {
                    tr {
                        td { (v.label()) }
                        td { (limits(v)) }
                        td.num { (count(v.in_flight)) }
                        td.num { (count(v.waiting)) }
                        td {
                            @if v.is_held(now) {
                                span.state.dead { "held" } " until " (when_opt(v.held_until, now))
                                @if let Some(reason) = &v.hold_reason { ": " (reason) }
                            } @else { "-" }
                        }
                    }
                } }
            }
        }
    }
}
