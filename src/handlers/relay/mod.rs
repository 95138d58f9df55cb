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

use super::{Handler, HandlerError, JobContext};
use crate::config::Config;
use crate::files::{FileAction, FileError};
use crate::job::{Job, NewJob, Outcome, PayloadError};
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

/// The keys a relay payload object may have: the OMS page's (`data` and its paging
/// fields), `file` with what a watched folder adds, and `extra`, a watch's own fields.
/// Anything else is refused, so a misspelt key is caught when the watch is checked.
pub const PAYLOAD_KEYS: &[&str] = &[
    "data",
    "count",
    "error",
    "next_index",
    "next_url",
    "previous_index",
    "previous_url",
    "file",
    "name",
    "sha256",
    "size",
    "extra",
];

fn input(payload: &Value) -> Result<Input<'_>, PayloadError> {
    if let Value::Object(map) = payload {
        if let Some(unknown) = map.keys().find(|k| !PAYLOAD_KEYS.contains(&k.as_str())) {
            return Err(PayloadError::new(
                unknown.as_str(),
                format!(
                    "relay payload: unknown field '{unknown}' (known: {}; put your own fields under extra)",
                    PAYLOAD_KEYS.join(", ")
                ),
            ));
        }
        if map.get("extra").is_some_and(|e| !e.is_object()) {
            return Err(PayloadError::new(
                "extra",
                "relay payload: extra must be an object",
            ));
        }
    }
    match payload {
        Value::Array(events) => Ok(Input::Inline(events)),
        Value::Object(map) => match (map.get("data"), map.get("file")) {
            (Some(Value::Array(events)), None) => Ok(Input::Inline(events)),
            (None, Some(Value::String(file))) => Ok(Input::File(PathBuf::from(file))),
            (Some(_), Some(_)) => Err(PayloadError::whole(
                "relay payload: give data or file, not both",
            )),
            (Some(_), None) => Err(PayloadError::new(
                "data",
                "relay payload: data must be an array of events",
            )),
            (None, Some(_)) => Err(PayloadError::new(
                "file",
                "relay payload: file must be a path",
            )),
            (None, None) => Err(PayloadError::whole(
                "relay payload: expected {\"data\": [events...]} (the OMS batch), an array of events, or {\"file\": PATH}",
            )),
        },
        _ => Err(PayloadError::whole(
            "relay payload: expected an object or an array",
        )),
    }
}

/// Reads the events of a JSON file (an OMS batch, an array or one event) or an NDJSON
/// file (one event, or one OMS batch, per line). A line that is not JSON becomes a
/// per-event error, not the end of the batch.
/// A file that cannot be read is dead: it was spooled for this job and will not come back.
pub fn read_events(path: &Path) -> Result<(Vec<Value>, Vec<Value>), HandlerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HandlerError::permanent(format!("relay file {}: {e}", path.display())))?;
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

/// Below this many events a batch is routed on the calling thread alone.
const PARALLEL_MIN_EVENTS: usize = 512;

/// Validates and routes `events`; `source` marks the delivery jobs (`relay job 12`).
/// Pure: the caller enqueues the deliveries and writes the errors. A large batch (an OMS
/// page is 4,000 events) is split over the cores, then merged in event order, so the
/// result is the same as routing it in one piece.
pub fn route(events: &[Value], config: &RelayConfig, source: &str) -> Routed {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let parts: Vec<Part> = if threads < 2 || events.len() < PARALLEL_MIN_EVENTS {
        vec![route_part(events, 0, config, source)]
    } else {
        let chunk = events.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = events
                .chunks(chunk)
                .enumerate()
                .map(|(i, events)| {
                    scope.spawn(move || route_part(events, i * chunk, config, source))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a relay routing thread panicked"))
                .collect()
        })
    };
    merge(events.len(), parts)
}

/// What one slice of a batch routed to, before deliveries repeated across the batch are
/// dropped.
#[derive(Default)]
struct Part {
    counts: Counts,
    errors: Vec<Value>,
    /// Each delivery with its `STOREFRONT/DESTINATION`.
    deliveries: Vec<(String, NewJob)>,
}

/// Routes `events`, the slice of the batch starting at index `offset`.
fn route_part(events: &[Value], offset: usize, config: &RelayConfig, source: &str) -> Part {
    let mut part = Part::default();
    for (index, value) in events.iter().enumerate() {
        let index = offset + index;
        let event = match shape::check(value) {
            Ok(event) => event,
            Err(errors) => {
                part.counts.invalid += 1;
                part.errors.push(error_entry(index, value, errors));
                continue;
            }
        };
        part.counts.valid += 1;
        let Some(storefront) = config.storefronts.get(event.storefront) else {
            part.counts.unknown_storefront += 1;
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
            part.errors.push(error_entry(index, value, vec![message]));
            continue;
        };
        if !storefront.active {
            part.counts.inactive_storefront += 1;
            continue;
        }
        for (name, dest) in &storefront.destinations {
            if !dest.active {
                part.counts.inactive_destination += 1;
                continue;
            }
            let Some(event_name) = shape::mapped_name(dest, event.name) else {
                part.counts.unmapped += 1;
                continue;
            };
            let destination = format!("{}/{name}", event.storefront);
            let key = format!("relay:{}:{}:{destination}", event.order_id, event.name);
            let (body, query) = shape::body(&event, dest, event_name);
            let mut payload = Map::new();
            payload.insert("endpoint".into(), Value::String(dest.endpoint.clone()));
            payload.insert("path".into(), Value::String(dest.request_path()));
            if !query.is_empty() {
                payload.insert("query".into(), Value::Object(query));
            }
            payload.insert("json".into(), body);
            part.deliveries.push((destination, {
                let mut job = NewJob::new("http", Value::Object(payload))
                    .queue(config.queue.clone())
                    .unique_key(key)
                    .order_key(crate::flow::bounded(&format!(
                        "relay:{}:{}:{name}",
                        event.storefront, event.order_id
                    )))
                    .source(source);
                // Each storefront has its own limits at each destination.
                job.flow_key = Some(crate::flow::bounded(event.storefront));
                job
            }));
        }
    }
    part
}

/// Joins the parts in event order; the same (event, destination) twice in the batch is
/// delivered once.
fn merge(events: usize, parts: Vec<Part>) -> Routed {
    let mut routed = Routed::default();
    routed.counts.events = events;
    let mut keys = HashSet::new();
    for part in parts {
        let c = &mut routed.counts;
        c.valid += part.counts.valid;
        c.invalid += part.counts.invalid;
        c.unknown_storefront += part.counts.unknown_storefront;
        c.inactive_storefront += part.counts.inactive_storefront;
        c.inactive_destination += part.counts.inactive_destination;
        c.unmapped += part.counts.unmapped;
        routed.errors.extend(part.errors);
        for (destination, delivery) in part.deliveries {
            let key = delivery.unique_key.clone().expect("deliveries are keyed");
            if !keys.insert(key) {
                routed.counts.repeated_in_batch += 1;
                continue;
            }
            *routed
                .counts
                .per_destination
                .entry(destination)
                .or_default() += 1;
            routed.deliveries.push(delivery);
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
fn write_errors(ctx: &JobContext, job: &Job, errors: &[Value]) -> Result<PathBuf, FileError> {
    let now = chrono::DateTime::from_timestamp_millis(ctx.clock.now_ms()).unwrap_or_default();
    let dir = ctx
        .data_dir
        .join("output")
        .join(now.format("%Y%m%d").to_string());
    crate::files::create_private_dir_all(&dir)
        .map_err(|e| FileError::new(FileAction::Create, &dir, e))?;
    let path = dir.join(format!("relay-{}.errors.ndjson", job.id));
    let mut text = String::new();
    for entry in errors {
        text.push_str(&entry.to_string());
        text.push('\n');
    }
    crate::metrics::write_textfile(&path, &text).map_err(|e| FileError::write(&path, e))?;
    Ok(path)
}

impl Handler for Relay {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        if let Input::File(path) = input(payload)? {
            crate::paths::check(
                config,
                &config.daemon.data_dir,
                "relay payload: file",
                &path,
            )
            .map_err(|e| e.for_field("file"))?;
        }
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let read;
        let (events, mut errors): (&[Value], Vec<Value>) = match input(&job.payload) {
            Ok(Input::Inline(events)) => (events, Vec::new()),
            Ok(Input::File(path)) => {
                // Only files in the allowed folders (spool/, as a watched folder leaves
                // them), checked again now in case the file became a symlink since.
                let path = match super::http::data_path(ctx, "relay payload: file", &path) {
                    Ok(path) => path,
                    Err(e) => return HandlerError::from(e).into(),
                };
                read = match read_events(&path) {
                    Ok(read) => read,
                    Err(e) => return e.into(),
                };
                (&read.0, read.1.clone())
            }
            Err(e) => return HandlerError::from(e).into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_takes_only_known_keys_and_its_own_under_extra() {
        let err = Relay
            .validate(&json!({"data": [], "nxt_index": 5}), &Config::default())
            .err()
            .unwrap();
        assert_eq!(err.field, "nxt_index");
        let err = err.to_string();
        assert!(
            err.starts_with("relay payload: unknown field 'nxt_index' (known: data, count,"),
            "{err}"
        );
        let oms = json!({"count": 0, "data": [], "error": "", "next_index": 1000, "next_url": "x",
            "previous_index": "", "previous_url": "", "extra": {"source": "oms"}});
        Relay.validate(&oms, &Config::default()).unwrap();
        let watched = json!({"file": "spool/1/a.json", "name": "a.json", "sha256": "0", "size": 1});
        Relay.validate(&watched, &Config::default()).unwrap();
    }

    fn config() -> Config {
        Config::from_toml(
            "[endpoints.s]\nbase_url = \"https://s.example\"\n\
             [relay.storefronts.a.destinations.one]\nendpoint = \"s\"\nshape = \"sgtm\"\n\
             [relay.storefronts.a.destinations.two]\nendpoint = \"s\"\nshape = \"sgtm\"\n\
             [relay.storefronts.b.destinations.one]\nendpoint = \"s\"\nshape = \"sgtm\"\n",
            "test",
        )
        .unwrap()
    }

    /// 2,000 events: repeats far apart (so in different slices when split), bad events
    /// and an unknown storefront sprinkled through.
    fn events() -> Vec<Value> {
        (0..2_000)
            .map(|i| match i % 10 {
                7 => json!({"storefront_id": "a", "event_name": "e"}),
                8 => json!({"order_id": format!("{i}"), "storefront_id": "zz",
                            "event_name": "e", "event_time": "2026-01-15T10:20:30Z"}),
                _ => json!({"order_id": format!("{}", i % 1_300), "seq": i,
                            "storefront_id": if i % 2 == 0 { "a" } else { "b" },
                            "event_name": "e", "event_time": "2026-01-15T10:20:30Z"}),
            })
            .collect()
    }

    #[test]
    fn a_batch_split_over_threads_routes_exactly_as_in_one_piece() {
        let config = config();
        let events = events();
        let whole = merge(
            events.len(),
            vec![route_part(&events, 0, &config.relay, "relay job 1")],
        );
        let split = route(&events, &config.relay, "relay job 1");
        let keys = |r: &Routed| -> Vec<Option<String>> {
            r.deliveries.iter().map(|d| d.unique_key.clone()).collect()
        };
        assert!(whole.counts.repeated_in_batch > 0, "the input has repeats");
        assert_eq!(keys(&split), keys(&whole));
        assert_eq!(
            serde_json::to_value(&split.counts).unwrap(),
            serde_json::to_value(&whole.counts).unwrap()
        );
        assert_eq!(split.errors, whole.errors);
        // Errors name the event's index in the whole batch, not in its slice.
        assert_eq!(split.errors.last().unwrap()["index"], 1_998);
        assert_eq!(split.counts.invalid, 200);
        assert_eq!(split.counts.unknown_storefront, 200);
        // The first occurrence of a repeated event is the one delivered.
        let first = split
            .deliveries
            .iter()
            .find(|d| d.unique_key.as_deref() == Some("relay:0:e:a/one"))
            .unwrap();
        assert_eq!(first.payload["json"]["seq"], 0, "not event 1,300's copy");
    }
}
