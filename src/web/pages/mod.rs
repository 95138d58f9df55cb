//! The HTML pages: Overview, Jobs, Job, Dead letter and Queues, each with a fragment
//! that htmx swaps in when the event stream says something changed (or every 30 s if
//! the stream is down). Every page is complete without JavaScript; all text is escaped
//! by maud, and payloads, errors and details pass through [`super::mask`].
//!
//! This module holds what every page shares: the layout and navigation, the vendored
//! assets, and the small formatters (relative times, ages, counts, query strings). Each
//! page lives in its own submodule.

mod dead;
mod jobs;
mod overview;
mod queues;

pub use dead::{dead, dead_fragment};
pub use jobs::{
    job, job_data, job_fragment, jobs, jobs_fragment, progress_summary, JobData, JobQuery,
    JobsQuery,
};
pub use overview::{
    overview, overview_data, overview_fragment, pipeline_rows, OverviewData, PipelineRow,
};
pub use queues::{queue_rows, queues, queues_fragment, QueueRow};

use super::{WebError, WebState, Who};
use crate::clock::format_millis;
use crate::job::{JobState, UnixMillis};
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

const HTMX: &[u8] = include_bytes!("../assets/htmx.min.js");
const HTMX_SSE: &[u8] = include_bytes!("../assets/sse.min.js");
const STYLE: &[u8] = include_bytes!("../assets/style.css");

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::web::ChildProgress;

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
