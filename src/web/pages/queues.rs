//! The Queues page: each queue's limit, live counts and pause state.

use super::{count, layout, live, when, Nav};
use crate::job::UnixMillis;
use crate::store::QueuePause;
use crate::web::{WebError, WebState, Who};
use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    let live = state.live_counts().await?;
    let paused = state.read(|db| db.paused_queues()).await?;
    let paused: BTreeMap<String, QueuePause> =
        paused.into_iter().map(|p| (p.queue.clone(), p)).collect();
    let config = state.config();
    let names: BTreeSet<String> = config
        .queues
        .keys()
        .cloned()
        .chain(live.live.keys().cloned())
        .chain(paused.keys().cloned())
        .chain(std::iter::once("default".to_string()))
        .collect();
    let rows = names
        .into_iter()
        .map(|name| QueueRow {
            concurrency: config.queues.get(&name).map(|q| q.concurrency),
            live: live.live.get(&name).cloned().unwrap_or_default(),
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
