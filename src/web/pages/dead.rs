//! The Dead letter page: dead jobs grouped by kind and error, with links to list or
//! retry each group.

use super::{count, encode_query, layout, live, when, Nav};
use crate::job::UnixMillis;
use crate::store::web::DeadGroup;
use crate::web::{mask, WebError, WebState, Who};
use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use std::sync::Arc;

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
