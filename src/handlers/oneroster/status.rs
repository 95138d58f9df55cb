//! `oneroster_status`: after the upload API answered 202 with an `uploadId`, polls
//! `GET <path>/<uploadId>` (same endpoint and auth) until the upload is completed (the
//! job succeeds with the final status) or failed (the job is dead with the server's
//! reason).
//!
//! A pending answer is a retry whose `Retry-After` is the poll interval, so the queue
//! schedules the next poll; the job's own `max_attempts` (`max_polls`) bounds the polls.

use crate::config::Config;
use crate::handlers::http::classify::Class;
use crate::handlers::http::{Http, RequestSpec};
use crate::handlers::{Handler, HandlerError, JobContext};
use crate::job::{Job, Outcome, PayloadError};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const KIND: &str = "oneroster_status";

/// Between two polls of one upload, unless the payload says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Polls (requests, network errors included) before the job gives up: an hour at 30 s.
pub const DEFAULT_MAX_POLLS: u32 = 120;
/// A status answer is a small JSON object; anything larger is not one.
const MAX_ANSWER: u64 = 1 << 20;

/// Statuses after which the upload API is still working on it (the reference lists
/// `accepted` and `processing`; `pending` and `queued` are read the same way).
const PENDING: &[&str] = &["accepted", "processing", "pending", "queued"];

/// The job payload, built by the upload's `follow_up` (which adds `recorded`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPayload {
    /// The `[endpoints.NAME]` the upload went to.
    pub endpoint: String,
    /// The upload path; the status is at `<path>/<uploadId>` (default `/upload`).
    #[serde(default)]
    pub path: Option<String>,
    /// e.g. `"30s"`.
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// The upload answer's fields; `uploadId` is the one polled.
    #[serde(default)]
    pub recorded: BTreeMap<String, Value>,
}

impl StatusPayload {
    pub fn parse(payload: &Value) -> Result<StatusPayload, PayloadError> {
        let p = StatusPayload::deserialize(payload)
            .map_err(|e| PayloadError::whole(format!("{KIND} payload: {e}")))?;
        p.interval()?;
        p.upload_id()?;
        Ok(p)
    }

    pub fn interval(&self) -> Result<Duration, PayloadError> {
        parse_interval(self.poll_interval.as_deref()).map_err(|e| {
            PayloadError::new(
                "poll_interval",
                format!("{KIND} payload: poll_interval: {e}"),
            )
        })
    }

    fn upload_id(&self) -> Result<String, PayloadError> {
        let refused = |message: String| PayloadError::new("recorded.uploadId", message);
        match self.recorded.get("uploadId") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(refused(format!(
                "{KIND} payload: recorded.uploadId must be a string or a number, not {other}"
            ))),
            None => Err(refused(format!(
                "{KIND} payload: recorded.uploadId is missing (the upload's answer fills it)"
            ))),
        }
    }
}

/// A poll interval (`"30s"`, `"2m"`); none is [`DEFAULT_POLL_INTERVAL`].
pub fn parse_interval(text: Option<&str>) -> Result<Duration, IntervalError> {
    let Some(text) = text else {
        return Ok(DEFAULT_POLL_INTERVAL);
    };
    let interval = humantime::parse_duration(text).map_err(|e| IntervalError::NotADuration {
        text: text.to_string(),
        cause: e.to_string(),
    })?;
    if interval.is_zero() {
        return Err(IntervalError::Zero(text.to_string()));
    }
    Ok(interval)
}

/// Why a poll interval is refused; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("'{text}' is not a duration ({cause})")]
    NotADuration { text: String, cause: String },
    #[error("'{0}' must be more than zero")]
    Zero(String),
}

/// `id` as one URL path segment (a `/` or `?` in it is escaped, not followed).
fn path_segment(id: &str) -> String {
    let mut url = Url::parse("http://localhost/").expect("a valid URL");
    url.path_segments_mut()
        .expect("a base URL")
        .clear()
        .push(id);
    url.path().trim_start_matches('/').to_string()
}

/// The `oneroster_status` kind; it sends through the shared [`Http`] (one client, token
/// cache and rate limit per endpoint).
pub struct UploadStatus {
    pub http: Http,
}

impl Handler for UploadStatus {
    fn route(&self, job: &crate::job::NewJob, config: &Config) -> crate::flow::Route {
        super::super::http::endpoint_route(job, config)
    }

    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        let p = StatusPayload::parse(payload)?;
        if !config.endpoints.contains_key(&p.endpoint) {
            return Err(PayloadError::new(
                "endpoint",
                format!(
                    "{KIND} payload: endpoint: no [endpoints.{}] in the config",
                    p.endpoint
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        match StatusPayload::parse(&job.payload) {
            Ok(p) => self.poll(job, &p, ctx),
            Err(e) => HandlerError::from(e).into(),
        }
    }
}

impl UploadStatus {
    fn poll(&self, job: &Job, p: &StatusPayload, ctx: &JobContext) -> Outcome {
        let (Ok(id), Ok(interval)) = (p.upload_id(), p.interval()) else {
            return Outcome::permanent(format!("{KIND} payload: checked at parse"));
        };
        let base = p.path.as_deref().unwrap_or("/upload").trim_end_matches('/');
        let spec = RequestSpec {
            endpoint: p.endpoint.clone(),
            method: Some("GET".into()),
            path: Some(format!("{base}/{}", path_segment(&id))),
            ..RequestSpec::default()
        };
        let fetched = match self.http.fetch(job, &spec, ctx, MAX_ANSWER) {
            Ok(fetched) => fetched,
            Err(outcome) => return outcome,
        };
        let mut detail = json!({
            "uploadId": id,
            "url": fetched.url,
            "http_status": fetched.status,
            "duration_ms": fetched.duration_ms,
            "poll": job.attempts,
        });
        let excerpt = fetched.excerpt();
        match fetched.class {
            Class::Retry => {
                return Outcome::Retry {
                    error: format!(
                        "HTTP {} from GET {}: {excerpt}",
                        fetched.status, fetched.url
                    ),
                    retry_after: fetched.retry_after,
                    detail: Some(detail),
                }
            }
            Class::Permanent => {
                return Outcome::Permanent {
                    error: format!(
                        "HTTP {} from GET {}: {excerpt}",
                        fetched.status, fetched.url
                    ),
                    detail: Some(detail),
                }
            }
            Class::Success | Class::Duplicate => {}
        }
        let answer: Value = match serde_json::from_slice(&fetched.body) {
            Ok(answer) => answer,
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("the status of upload {id} is not JSON ({e}): {excerpt}"),
                    detail: Some(detail),
                }
            }
        };
        let Some(status) = answer.get("status").and_then(Value::as_str) else {
            return Outcome::Permanent {
                error: format!("the status answer of upload {id} has no \"status\": {excerpt}"),
                detail: Some(detail),
            };
        };
        detail["status"] = json!(status);
        for field in ["message", "processedAt"] {
            if let Some(value) = answer.get(field) {
                detail[field] = value.clone();
            }
        }
        match status {
            "completed" | "partial_success" => {
                if status == "partial_success" {
                    tracing::warn!(
                        job = job.id,
                        "upload {id} was only partly accepted: {excerpt}"
                    );
                }
                Outcome::succeeded(Vec::new(), Some(detail))
            }
            "failed" => {
                let reason = ["message", "reason", "error"]
                    .iter()
                    .find_map(|k| answer.get(*k).filter(|v| !v.is_null()))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or(excerpt);
                Outcome::Permanent {
                    error: format!("upload {id} failed: {reason}"),
                    detail: Some(detail),
                }
            }
            pending if PENDING.contains(&pending) => Outcome::Retry {
                error: format!(
                    "upload {id} is {pending}; next poll in {}",
                    humantime::format_duration(interval)
                ),
                retry_after: Some(interval),
                detail: Some(detail),
            },
            other => Outcome::Permanent {
                error: format!(
                    "upload {id}: unknown status '{other}' (expected one of {}, completed, \
                     partial_success, failed)",
                    PENDING.join(", ")
                ),
                detail: Some(detail),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_id_is_one_path_segment() {
        assert_eq!(path_segment("u-1"), "u-1");
        assert_eq!(path_segment("a/../b?c"), "a%2F..%2Fb%3Fc");
    }

    #[test]
    fn the_payload_needs_an_upload_id_and_a_real_interval() {
        let ok = json!({"endpoint": "roster", "recorded": {"uploadId": "u-1"}});
        assert_eq!(
            StatusPayload::parse(&ok).unwrap().interval().unwrap(),
            DEFAULT_POLL_INTERVAL
        );
        let err = StatusPayload::parse(&json!({"endpoint": "roster"})).unwrap_err();
        assert_eq!(err.field, "recorded.uploadId");
        let err = err.to_string();
        assert!(err.contains("recorded.uploadId is missing"), "{err}");
        let mut bad = ok.clone();
        bad["poll_interval"] = json!("soon");
        let err = StatusPayload::parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("poll_interval: 'soon' is not a duration"),
            "{err}"
        );
        bad["poll_interval"] = json!("0s");
        assert!(StatusPayload::parse(&bad).is_err());
    }
}
