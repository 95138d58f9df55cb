//! `relay`: the marketing events relay. A job holds a batch of events (the OMS page
//! `{"count": N, "data": [...]}`, a bare array, or `{"file": PATH}` naming a JSON or
//! NDJSON file under the data directory). Each event is validated and routed by its
//! storefront to that storefront's destinations; every (event, destination) becomes its
//! own `http` job in the relay queue, with unique key
//! `relay:ORDER_ID:EVENT_NAME:STOREFRONT/DESTINATION`, enqueued in the same transaction
//! that completes the batch. So a batch relayed twice delivers each event once per
//! destination, and each destination keeps its own attempts and dead letter. Bad events
//! and unknown storefronts are reported (the job's detail and an errors file) without
//! holding back the good ones. Credentials live on the endpoints, never in the jobs.

pub mod config;
pub mod shape;

pub use config::{DestinationConfig, RelayConfig, Shape, StorefrontConfig};

use super::{Handler, JobContext};
use crate::config::Config;
use crate::job::{Job, NewJob, Outcome};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// At most this many per-event errors are kept in the job's detail; the errors file has
/// them all.
pub const DETAIL_ERROR_LIMIT: usize = 100;

/// The `relay` job kind.
#[derive(Debug, Clone, Default)]
pub struct Relay;

/// Where a job's events are.
enum Input<'a> {
    /// In the payload itself.
    Inline(&'a [Value]),
    /// In a file under the data directory.
    File(PathBuf),
}

fn input(payload: &Value) -> Result<Input<'_>, String> {
    match payload {
        Value::Array(events) => Ok(Input::Inline(events)),
        Value::Object(map) => match (map.get("data"), map.get("file")) {
            (Some(Value::Array(events)), None) => Ok(Input::Inline(events)),
            (None, Some(Value::String(file))) => Ok(Input::File(PathBuf::from(file))),
            (Some(_), Some(_)) => Err("relay payload: give data or file, not both".into()),
            (Some(_), None) => Err("relay payload: data must be an array of events".into()),
            (None, Some(_)) => Err("relay payload: file must be a path".into()),
            (None, None) => Err(
                "relay payload: expected {\"data\": [events...]} (the OMS batch), an array of events, or {\"file\": PATH}"
                    .into(),
            ),
        },
        _ => Err("relay payload: expected an object or an array".into()),
    }
}

/// Reads the events of a JSON file (an OMS batch, an array or one event) or an NDJSON
/// file (one event, or one OMS batch, per line). A line that is not JSON becomes a
/// per-event error, not the end of the batch.
pub fn read_events(path: &Path) -> Result<(Vec<Value>, Vec<Value>), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("relay file {}: {e}", path.display()))?;
    if let Ok(whole) = serde_json::from_str::<Value>(&text) {
        return Ok((flatten(whole), Vec::new()));
    }
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) => events.extend(flatten(value)),
            Err(e) => errors.push(json!({"line": n + 1, "errors": [format!("not JSON: {e}")]})),
        }
    }
    Ok((events, errors))
}

fn flatten(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Object(mut map) if map.get("data").is_some_and(Value::is_array) => {
            match map.remove("data") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

/// What routing a batch made: the deliveries, the per-event errors and the counts.
#[derive(Debug, Default)]
pub struct Routed {
    pub deliveries: Vec<NewJob>,
    /// One entry per bad event or unknown storefront, with the event itself.
    pub errors: Vec<Value>,
    pub counts: Counts,
}

/// The tallies a batch reports in its detail.
#[derive(Debug, Default, serde::Serialize)]
pub struct Counts {
    pub events: usize,
    pub valid: usize,
    pub invalid: usize,
    pub unknown_storefront: usize,
    pub inactive_storefront: usize,
    pub inactive_destination: usize,
    /// Deliveries skipped because the destination takes only mapped event names.
    pub unmapped: usize,
    /// The same (event, destination) twice in one batch: delivered once.
    pub repeated_in_batch: usize,
    pub deliveries: usize,
    /// Deliveries per `STOREFRONT/DESTINATION`.
    pub per_destination: BTreeMap<String, usize>,
}

/// Validates and routes `events`; `source` marks the delivery jobs (`relay job 12`).
/// Pure: the caller enqueues the deliveries and writes the errors.
pub fn route(events: &[Value], config: &RelayConfig, source: &str) -> Routed {
    let mut routed = Routed::default();
    let mut keys = HashSet::new();
    routed.counts.events = events.len();
    for (index, value) in events.iter().enumerate() {
        let event = match shape::check(value) {
            Ok(event) => event,
            Err(errors) => {
                routed.counts.invalid += 1;
                routed.errors.push(error_entry(index, value, errors));
                continue;
            }
        };
        routed.counts.valid += 1;
        let Some(storefront) = config.storefronts.get(event.storefront) else {
            routed.counts.unknown_storefront += 1;
            let known: Vec<&str> = config.storefronts.keys().map(String::as_str).collect();
            let message = format!(
                "storefront_id: '{}' is not configured (relay.storefronts: {})",
                event.storefront,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
            routed.errors.push(error_entry(index, value, vec![message]));
            continue;
        };
        if !storefront.active {
            routed.counts.inactive_storefront += 1;
            continue;
        }
        for (name, dest) in &storefront.destinations {
            if !dest.active {
                routed.counts.inactive_destination += 1;
                continue;
            }
            let Some(event_name) = shape::mapped_name(dest, event.name) else {
                routed.counts.unmapped += 1;
                continue;
            };
            let destination = format!("{}/{name}", event.storefront);
            let key = format!("relay:{}:{}:{destination}", event.order_id, event.name);
            if !keys.insert(key.clone()) {
                routed.counts.repeated_in_batch += 1;
                continue;
            }
            let (body, query) = shape::body(&event, dest, event_name);
            let mut payload = Map::new();
            payload.insert("endpoint".into(), Value::String(dest.endpoint.clone()));
            payload.insert("path".into(), Value::String(dest.request_path()));
            if !query.is_empty() {
                payload.insert("query".into(), Value::Object(query));
            }
            payload.insert("json".into(), body);
            routed.deliveries.push(
                NewJob::new("http", Value::Object(payload))
                    .queue(config.queue.clone())
                    .unique_key(key)
                    .source(source),
            );
            *routed
                .counts
                .per_destination
                .entry(destination)
                .or_default() += 1;
        }
    }
    routed.counts.deliveries = routed.deliveries.len();
    routed
}

fn error_entry(index: usize, event: &Value, errors: Vec<String>) -> Value {
    let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "index": index,
        "order_id": field("order_id"),
        "storefront_id": field("storefront_id"),
        "event_name": field("event_name"),
        "errors": errors,
        "event": event,
    })
}

/// `output/YYYYMMDD/relay-<job id>.errors.ndjson` under the data directory, one line per
/// bad event, written atomically with mode 0640 (events may carry personal data).
fn write_errors(ctx: &JobContext, job: &Job, errors: &[Value]) -> Result<PathBuf, String> {
    let now = chrono::DateTime::from_timestamp_millis(ctx.clock.now_ms()).unwrap_or_default();
    let dir = ctx
        .data_dir
        .join("output")
        .join(now.format("%Y%m%d").to_string());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("relay-{}.errors.ndjson", job.id));
    let mut text = String::new();
    for entry in errors {
        text.push_str(&entry.to_string());
        text.push('\n');
    }
    crate::metrics::write_textfile(&path, &text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

impl Handler for Relay {
    fn validate(&self, payload: &Value, _config: &Config) -> Result<(), String> {
        input(payload).map(|_| ())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let read;
        let (events, mut errors): (&[Value], Vec<Value>) = match input(&job.payload) {
            Ok(Input::Inline(events)) => (events, Vec::new()),
            Ok(Input::File(path)) => {
                // Only files the daemon holds (spool/, as a watched folder leaves them).
                let path = match super::http::data_path(&ctx.data_dir, &path) {
                    Ok(path) => path,
                    Err(e) => return Outcome::permanent(format!("relay file: {e}")),
                };
                read = match read_events(&path) {
                    Ok(read) => read,
                    Err(e) => return Outcome::permanent(e),
                };
                (&read.0, read.1.clone())
            }
            Err(e) => return Outcome::permanent(e),
        };
        let routed = route(events, &ctx.config.relay, &format!("relay job {}", job.id));
        errors.extend(routed.errors);
        let mut detail = json!({
            "counts": routed.counts,
            "errors": errors.iter().take(DETAIL_ERROR_LIMIT).map(|e| {
                // The detail names the event; the errors file keeps the event itself.
                let mut e = e.clone();
                if let Some(map) = e.as_object_mut() { map.remove("event"); }
                e
            }).collect::<Vec<_>>(),
        });
        if let Some(oms_error) = job
            .payload
            .get("error")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            detail["oms_error"] = Value::String(oms_error.to_string());
        }
        if !errors.is_empty() {
            match write_errors(ctx, job, &errors) {
                Ok(path) => detail["errors_file"] = Value::String(path.display().to_string()),
                // Without the file the errors would live only in a truncated detail: try
                // again (a full disk passes); the deliveries are not enqueued until then.
                Err(e) => {
                    return Outcome::Retry {
                        error: format!("relay: {e}"),
                        retry_after: None,
                        detail: Some(detail),
                    }
                }
            }
            tracing::warn!(
                job = job.id,
                bad = errors.len(),
                "relay job {}: {} event(s) not relayed (see its errors file)",
                job.id,
                errors.len()
            );
        }
        Outcome::succeeded(routed.deliveries, Some(detail))
    }
}
