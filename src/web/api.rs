//! `/api/`: the pages' data as JSON, with the same masking. Times are exact (Unix
//! milliseconds); errors are `{"error": "..."}` with the HTTP status.

use super::pages::{self, JobQuery, JobsQuery};
use super::{mask, WebError, WebState, Who};
use crate::job::JobId;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::sync::Arc;

/// An API error: its status and `{"error": ...}`.
pub struct ApiError(WebError);

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0.status(), Json(json!({"error": self.0.message()}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn overview(State(state): State<Arc<WebState>>) -> ApiResult {
    let data = pages::overview_data(&state).await?;
    Ok(Json(json!({
        "now": data.now,
        "overview": data.overview,
        "sync_state": data.sync,
        "pipelines": pages::pipeline_rows(&state, &data.sync, data.now),
        "incomplete_folder_sets": data.pending,
        "recent_actions": data.actions,
        "paused_queues": data.paused,
        "destinations": data.destinations,
    })))
}

pub async fn jobs(State(state): State<Arc<WebState>>, Query(query): Query<JobsQuery>) -> ApiResult {
    let search = query.search()?;
    let mut page = state.read(move |db| db.web_search(&search)).await?;
    for job in &mut page.jobs {
        job.last_error = job
            .last_error
            .as_deref()
            .map(|e| mask::text(e, &state.secrets));
    }
    Ok(Json(json!(page)))
}

pub async fn job(
    State(state): State<Arc<WebState>>,
    Path(id): Path<JobId>,
    Query(query): Query<JobQuery>,
) -> ApiResult {
    let data = pages::job_data(&state, id, query.before).await?;
    let secrets = &state.secrets;
    let mut job = serde_json::to_value(&data.job).unwrap_or_default();
    job["payload"] = mask::value(&data.job.payload, secrets);
    for key in ["last_error", "source"] {
        if let Some(text) = job[key].as_str() {
            job[key] = Value::String(mask::text(text, secrets));
        }
    }
    let attempts: Vec<Value> = data
        .attempts
        .iter()
        .map(|a| {
            let mut value = serde_json::to_value(a).unwrap_or_default();
            value["error"] = a
                .error
                .as_deref()
                .map(|e| Value::String(mask::text(e, secrets)))
                .unwrap_or(Value::Null);
            value["detail"] = a
                .detail
                .as_ref()
                .map(|d| mask::value(d, secrets))
                .unwrap_or(Value::Null);
            value
        })
        .collect();
    let mut children = serde_json::to_value(&data.children).unwrap_or_default();
    if let Some(rows) = children["jobs"].as_array_mut() {
        for row in rows {
            if let Some(text) = row["last_error"].as_str() {
                row["last_error"] = Value::String(mask::text(text, secrets));
            }
        }
    }
    Ok(Json(json!({
        "job": job,
        "attempts": attempts,
        "children_progress": data.progress,
        "children_summary": (data.progress.total > 0).then(|| pages::progress_summary(&data.progress, data.now)),
        "children": children,
        "source_file": data.source,
    })))
}

pub async fn dead(State(state): State<Arc<WebState>>) -> ApiResult {
    let mut groups = state.read(|db| db.web_dead_groups(200)).await?;
    for group in &mut groups {
        group.error = mask::text(&group.error, &state.secrets);
    }
    Ok(Json(json!({"groups": groups})))
}

pub async fn queues(State(state): State<Arc<WebState>>) -> ApiResult {
    let (rows, workers) = pages::queue_rows(&state).await?;
    Ok(Json(json!({"workers": workers, "queues": rows})))
}

pub async fn actions(State(state): State<Arc<WebState>>) -> ApiResult {
    let actions = state.read(|db| db.web_actions(100)).await?;
    Ok(Json(json!({"actions": actions})))
}

/// Who the API thinks you are, whether actions are on, and the CSRF token a POST needs
/// (as `X-CSRF-Token`).
pub async fn session(
    State(state): State<Arc<WebState>>,
    Extension(who): Extension<Who>,
) -> ApiResult {
    Ok(Json(json!({
        "user": who.0,
        "actions": state.actions,
        "csrf": state.csrf_token(&who.0),
    })))
}
