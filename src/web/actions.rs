//! Retry and cancel from the page and the API, one job or all that match a filter, and
//! pause or resume of a queue. Off
//! unless `[web] actions = true` (every mutating request answers 403); on, each POST
//! must come from the page's own origin and carry the user's CSRF token. Each action runs
//! through the store's transitions inside the dispatcher's transaction and is recorded
//! there too, as a finished `web_action` row (`jobctl show ID`).

use super::pages::{count, encode_query, JobsQuery};
use super::{WebError, WebState, Who};
use crate::job::{JobId, JobState, Transition};
use crate::store::web::JobSearch;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The most jobs one bulk action takes; the rest stay for another round.
pub const BULK_CAP: usize = 10_000;
/// How many of an action's job ids its record lists.
const RECORDED_IDS: usize = 1_000;

/// Runs before any body is read: 403 for every mutating request while actions are off,
/// and for one from another origin while they are on.
pub async fn guard(State(state): State<Arc<WebState>>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    if !state.actions {
        return WebError::Forbidden(
            "actions are off: set [web] actions = true to retry, cancel, pause or resume from the web page".into(),
        )
        .into_response();
    }
    if let Err(e) = same_origin(request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

/// The browser's own word (`Sec-Fetch-Site`), and `Origin` against `Host`. A request
/// with neither comes from a program, not a page; the CSRF token still applies.
fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let cross = |why: String| {
        Err(WebError::Forbidden(format!(
            "cross-origin request refused: {why}"
        )))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return cross(format!("Sec-Fetch-Site is {site}"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let matches = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| !host.is_empty() && rest == host);
        if !matches {
            return cross(format!("Origin {origin} is not this page's ({host})"));
        }
    }
    Ok(())
}

fn check_csrf(state: &WebState, who: &Who, token: Option<&str>) -> Result<(), WebError> {
    match token {
        Some(token) if super::same(token, &state.csrf_token(&who.0)) => Ok(()),
        Some(_) => Err(WebError::Forbidden(
            "the CSRF token is wrong (reload the page)".into(),
        )),
        None => Err(WebError::Forbidden(
            "a CSRF token is required (the csrf form field, or X-CSRF-Token from /api/session)"
                .into(),
        )),
    }
}

fn header_csrf(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Retry,
    Cancel,
}

impl Action {
    fn transition(self) -> Transition {
        match self {
            Action::Retry => Transition::Revive,
            Action::Cancel => Transition::Cancel,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
        }
    }
}

enum Target {
    One(JobId),
    Matching(JobSearch, JobState),
}

/// What an action did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    pub action: Action,
    pub count: usize,
    /// The row that records it: `jobctl show ID`.
    pub recorded_as: JobId,
}

/// Performs an action in the dispatcher's next transaction, with its record.
async fn perform(
    state: &Arc<WebState>,
    who: &Who,
    action: Action,
    target: Target,
    what: String,
) -> Result<Done, WebError> {
    if let Target::One(id) = target {
        // Checked first so a refusal gets its own status; the store checks again.
        let job = state.read(move |db| db.get(id)).await?;
        action
            .transition()
            .check(id, job.state)
            .map_err(|e| WebError::Conflict(e.to_string()))?;
    }
    let by = who.0.clone();
    let client = state.client.clone();
    let written = tokio::task::spawn_blocking(move || {
        client.write(
            move |tx, now| {
                let ids = match &target {
                    Target::One(id) => vec![*id],
                    Target::Matching(search, in_state) => {
                        tx.web_ids_matching(search, *in_state, BULK_CAP)?
                    }
                };
                match action {
                    Action::Retry => {
                        tx.revive(&ids, now)?;
                    }
                    Action::Cancel => {
                        for id in &ids {
                            tx.cancel(*id, now)?;
                        }
                    }
                }
                let record = json!({
                    "action": action.as_str(),
                    "by": by,
                    "via": "web",
                    "what": what,
                    "count": ids.len(),
                    "jobs": ids.iter().take(RECORDED_IDS).collect::<Vec<_>>(),
                    "at": now,
                });
                let recorded_as = tx.record_web_action(&record, now)?;
                Ok::<_, crate::store::StoreError>(Done {
                    action,
                    count: ids.len(),
                    recorded_as,
                })
            },
            |_| {},
        )
    })
    .await
    .map_err(|e| WebError::Internal(format!("the action failed: {e}")))?;
    let done = written.map_err(|e| WebError::Conflict(e.to_string()))?;
    tracing::info!(
        action = done.action.as_str(),
        by = %who.0,
        jobs = done.count,
        record = done.recorded_as,
        "web action"
    );
    Ok(done)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

async fn one_form(
    state: Arc<WebState>,
    who: Who,
    id: JobId,
    action: Action,
    form: CsrfForm,
) -> Result<Response, WebError> {
    check_csrf(&state, &who, form.csrf.as_deref())?;
    perform(&state, &who, action, Target::One(id), format!("job {id}")).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
}

pub async fn retry_form(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(id): Path<JobId>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    one_form(state, who, id, Action::Retry, form).await
}

pub async fn cancel_form(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(id): Path<JobId>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    one_form(state, who, id, Action::Cancel, form).await
}

async fn one_api(
    state: Arc<WebState>,
    who: Who,
    headers: HeaderMap,
    id: JobId,
    action: Action,
) -> Result<Json<Done>, WebError> {
    check_csrf(&state, &who, header_csrf(&headers))?;
    Ok(Json(
        perform(&state, &who, action, Target::One(id), format!("job {id}")).await?,
    ))
}

pub async fn retry_api(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> Result<Json<Done>, WebError> {
    one_api(state, who, headers, id, Action::Retry).await
}

pub async fn cancel_api(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> Result<Json<Done>, WebError> {
    one_api(state, who, headers, id, Action::Cancel).await
}

/// Pausing or resuming a queue: the same `queue_pauses` row as `jobctl pause`/`resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueAction {
    Pause,
    Resume,
}

impl QueueAction {
    fn as_str(self) -> &'static str {
        match self {
            QueueAction::Pause => "pause",
            QueueAction::Resume => "resume",
        }
    }
}

/// What a pause or resume did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueDone {
    pub action: QueueAction,
    pub queue: String,
    pub paused: bool,
    /// False when the queue was paused already (a pause keeps the first one's time).
    pub changed: bool,
    /// The row that records it: `jobctl show ID`.
    pub recorded_as: JobId,
}

/// Pauses or resumes a queue in the dispatcher's next transaction, with its record.
/// Resuming a queue that is not paused is refused (409), as `jobctl resume` refuses it.
async fn perform_on_queue(
    state: &Arc<WebState>,
    who: &Who,
    action: QueueAction,
    queue: String,
) -> Result<QueueDone, WebError> {
    crate::job::check_name("queue", &queue).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let by = who.0.clone();
    let client = state.client.clone();
    let written = tokio::task::spawn_blocking(move || {
        client.write(
            move |tx, now| {
                let changed = match action {
                    QueueAction::Pause => tx
                        .pause_queue(&queue, Some(&format!("web, by {by}")), now)
                        .map_err(|e| e.to_string())?,
                    QueueAction::Resume => {
                        if !tx.resume_queue(&queue).map_err(|e| e.to_string())? {
                            return Err(format!("queue {queue} is not paused"));
                        }
                        true
                    }
                };
                let record = json!({
                    "action": action.as_str(),
                    "by": by,
                    "via": "web",
                    "what": format!("queue {queue}"),
                    "queue": queue,
                    "changed": changed,
                    "count": 0,
                    "at": now,
                });
                let recorded_as = tx
                    .record_web_action(&record, now)
                    .map_err(|e| e.to_string())?;
                Ok(QueueDone {
                    action,
                    paused: action == QueueAction::Pause,
                    changed,
                    queue,
                    recorded_as,
                })
            },
            |_| {},
        )
    })
    .await
    .map_err(|e| WebError::Internal(format!("the action failed: {e}")))?;
    let done = written.map_err(|e| WebError::Conflict(e.to_string()))?;
    tracing::info!(
        action = done.action.as_str(),
        by = %who.0,
        queue = %done.queue,
        record = done.recorded_as,
        "web action"
    );
    Ok(done)
}

pub async fn pause_form(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(queue): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&state, &who, form.csrf.as_deref())?;
    perform_on_queue(&state, &who, QueueAction::Pause, queue).await?;
    Ok(Redirect::to("/queues").into_response())
}

pub async fn resume_form(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Path(queue): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&state, &who, form.csrf.as_deref())?;
    perform_on_queue(&state, &who, QueueAction::Resume, queue).await?;
    Ok(Redirect::to("/queues").into_response())
}

pub async fn pause_api(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Result<Json<QueueDone>, WebError> {
    check_csrf(&state, &who, header_csrf(&headers))?;
    Ok(Json(
        perform_on_queue(&state, &who, QueueAction::Pause, queue).await?,
    ))
}

pub async fn resume_api(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Result<Json<QueueDone>, WebError> {
    check_csrf(&state, &who, header_csrf(&headers))?;
    Ok(Json(
        perform_on_queue(&state, &who, QueueAction::Resume, queue).await?,
    ))
}

/// A bulk action's selection: the action, a state it applies to, and the Jobs filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BulkQuery {
    pub action: Option<Action>,
    #[serde(flatten)]
    pub filter: JobsQueryFields,
    pub csrf: Option<String>,
}

/// The Jobs filter's fields, flattened into forms (serde cannot flatten `JobsQuery`'s
/// numeric cursor from a form, and a bulk action has no cursor).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobsQueryFields {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub q: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl JobsQueryFields {
    fn query(&self) -> JobsQuery {
        JobsQuery {
            state: self.state.clone(),
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            q: self.q.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            before: None,
            limit: None,
        }
    }
}

/// The action, the state it takes jobs from, and the search.
fn selection(query: &BulkQuery) -> Result<(Action, JobState, JobSearch, String), WebError> {
    let action = query
        .action
        .ok_or_else(|| WebError::BadRequest("action: retry or cancel is required".into()))?;
    let search = query.filter.query().search()?;
    let state = search.state.ok_or_else(|| {
        WebError::BadRequest("state: a bulk action needs the state of the jobs it takes".into())
    })?;
    let allowed: &[JobState] = match action {
        Action::Retry => &[JobState::Dead, JobState::Cancelled],
        Action::Cancel => &[JobState::Queued, JobState::Retrying],
    };
    if !allowed.contains(&state) {
        return Err(WebError::BadRequest(format!(
            "state: {} takes {} jobs, not {state} ones",
            action.as_str(),
            allowed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    let what = query.filter.query().with_before(None);
    Ok((action, state, search, what))
}

/// `GET /bulk`: how many jobs an action would take, and the form that does it.
pub async fn bulk_confirm(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Query(query): Query<BulkQuery>,
) -> Result<Markup, WebError> {
    let (action, in_state, search, what) = selection(&query)?;
    let n = {
        let search = search.clone();
        state
            .read(move |db| db.web_count_matching(&search, in_state))
            .await?
    };
    let fields = &query.filter;
    let body = html! {
        p id="bulk-count" { (action.as_str()) " " strong { (count(n)) } " " (in_state.as_str()) " jobs matching " code { (what) } "?" }
        @if n as usize > BULK_CAP { p.note { "At most " (count(BULK_CAP as u64)) " are taken at once (the oldest); repeat for the rest." } }
        @if !state.actions {
            p.error { "Actions are off ([web] actions = false)." }
        } @else if n > 0 {
            form method="post" action="/bulk" {
                input type="hidden" name="csrf" value=(state.csrf_token(&who.0));
                input type="hidden" name="action" value=(action.as_str());
                @for (name, value) in [("state", &fields.state), ("kind", &fields.kind), ("queue", &fields.queue), ("q", &fields.q), ("since", &fields.since), ("until", &fields.until)] {
                    @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
                }
                button type="submit" id="confirm" { "Yes, " (action.as_str()) " " (count(n)) " jobs" }
            }
        }
        p { a href={"/jobs?" (what)} { "Back to the list" } }
    };
    Ok(super::pages::simple_page(&state, &who, "Confirm", body))
}

/// `POST /bulk`: the confirmed action.
pub async fn bulk_form(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    Form(query): Form<BulkQuery>,
) -> Result<Markup, WebError> {
    check_csrf(&state, &who, query.csrf.as_deref())?;
    let (action, in_state, search, what) = selection(&query)?;
    let done = perform(
        &state,
        &who,
        action,
        Target::Matching(search, in_state),
        what.clone(),
    )
    .await?;
    let body = html! {
        p id="bulk-done" { (action.as_str()) ": " strong { (count(done.count as u64)) } " jobs. Recorded as "
            a href={"/jobs/" (done.recorded_as)} { "job " (done.recorded_as) } "." }
        p { a href={"/jobs?" (encode_query(&[("state", if action == Action::Retry { "queued".into() } else { "cancelled".into() })]))} { "See them" } }
    };
    Ok(super::pages::simple_page(&state, &who, "Done", body))
}

/// `POST /api/bulk`: `{"action": "retry", "state": "dead", "kind": ..., "q": ...}`.
pub async fn bulk_api(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    Json(query): Json<BulkQuery>,
) -> Result<Json<Done>, WebError> {
    check_csrf(
        &state,
        &who,
        header_csrf(&headers).or(query.csrf.as_deref()),
    )?;
    let (action, in_state, search, what) = selection(&query)?;
    Ok(Json(
        perform(
            &state,
            &who,
            action,
            Target::Matching(search, in_state),
            what,
        )
        .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_pages_own_origin_may_post() {
        assert!(same_origin(&headers(&[])).is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin")
        ]))
        .is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ]))
        .is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
    }
}
