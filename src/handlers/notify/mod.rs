//! Dead-letter notifications: the [`DeadLetters`] hook that enqueues a `notify` job (and/or
//! an `exec` job for `[notify] command`) in the transaction that kills a job, and the
//! `notify` kind that posts a Slack-compatible JSON message to the `[notify]` endpoint.

pub mod config;

use super::http::{Http, RequestSpec};
use super::{Handler, HandlerError, JobContext};
use crate::config::Config;
use crate::daemon::JobHooks;
use crate::job::{Job, NewJob, Outcome, PayloadError};
use serde_json::{json, Value};

pub const KIND: &str = "notify";
/// The payload key that marks a notification job (its `exec` form included), so that a
/// notification that dies does not notify again.
pub const DEAD_LETTER_KEY: &str = "dead_letter";

/// Enqueues the notifications of a dead job beside its death.
#[derive(Debug, Default)]
pub struct DeadLetters;

impl DeadLetters {
    pub fn is_notification(job: &Job) -> bool {
        job.kind == KIND || job.payload.get(DEAD_LETTER_KEY).is_some()
    }
}

impl JobHooks for DeadLetters {
    fn on_dead(
        &self,
        job: &Job,
        error: &str,
        first_attempt_at: crate::job::UnixMillis,
        config: &Config,
    ) -> Vec<NewJob> {
        let notify = &config.notify;
        if Self::is_notification(job) || (notify.endpoint.is_none() && notify.command.is_none()) {
            return Vec::new();
        }
        let facts = json!({
            "job_id": job.id,
            "kind": job.kind,
            "queue": job.queue,
            "attempts": job.attempts,
            "created_at": crate::clock::format_millis(job.created_at),
            "first_attempt_at": crate::clock::format_millis(first_attempt_at),
            "last_error": error,
            "source": job.source,
        });
        let queue = notify
            .queue
            .clone()
            .unwrap_or_else(|| crate::job::DEFAULT_QUEUE.into());
        let make = |kind: &str, payload: Value| {
            let mut new = NewJob::new(kind, payload)
                .queue(queue.clone())
                .source(format!("dead-letter of job {}", job.id));
            new.parent_id = Some(job.id);
            new
        };
        let mut jobs = Vec::new();
        if let Some(endpoint) = &notify.endpoint {
            jobs.push(make(
                KIND,
                json!({"endpoint": endpoint, "path": notify.path, DEAD_LETTER_KEY: facts}),
            ));
        }
        if let Some(command) = &notify.command {
            jobs.push(make(
                "exec",
                json!({"command": command, DEAD_LETTER_KEY: facts}),
            ));
        }
        jobs
    }
}

/// The `notify` kind: posts one dead-letter message through the shared HTTP machinery
/// (the endpoint's auth, rate limit, status rules and retries).
#[derive(Clone, Default)]
pub struct Notify {
    pub http: Http,
}

/// The Slack-compatible body: `text` for people, the facts beside it for machines.
pub fn message(facts: &Value) -> Value {
    let get = |k: &str| facts.get(k).cloned().unwrap_or(Value::Null);
    let text = format!(
        "jobd: job {} ({}, queue {}) is dead after {} attempt(s){}: {}",
        get("job_id"),
        get("kind").as_str().unwrap_or("?"),
        get("queue").as_str().unwrap_or("?"),
        get("attempts"),
        get("source")
            .as_str()
            .map(|s| format!(" from {s}"))
            .unwrap_or_default(),
        get("last_error").as_str().unwrap_or(""),
    );
    json!({
        "text": text,
        "job_id": get("job_id"),
        "kind": get("kind"),
        "queue": get("queue"),
        "attempts": get("attempts"),
        "first_attempt_at": get("first_attempt_at"),
        "created_at": get("created_at"),
        "last_error": get("last_error"),
        "source": get("source"),
    })
}

impl Handler for Notify {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        if payload.get(DEAD_LETTER_KEY).is_none() {
            return Err(PayloadError::new(
                DEAD_LETTER_KEY,
                format!("notify payload needs \"{DEAD_LETTER_KEY}\""),
            ));
        }
        self.http.validate(&request(payload, &Value::Null), config)
    }

    fn route(&self, job: &crate::job::NewJob, config: &Config) -> crate::flow::Route {
        super::http::endpoint_route(job, config)
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let facts = job
            .payload
            .get(DEAD_LETTER_KEY)
            .cloned()
            .unwrap_or(Value::Null);
        let body = message(&facts);
        let payload = request(&job.payload, &body);
        match RequestSpec::parse(&payload) {
            Ok(spec) => self.http.deliver(job, &spec, ctx),
            Err(e) => HandlerError::from(e).into(),
        }
    }
}

/// The http request of a notification job.
fn request(payload: &Value, body: &Value) -> Value {
    let mut request = json!({
        "endpoint": payload.get("endpoint").cloned().unwrap_or(Value::Null),
        "json": body,
    });
    if let Some(path) = payload.get("path").filter(|p| !p.is_null()) {
        request["path"] = path.clone();
    }
    request
}
