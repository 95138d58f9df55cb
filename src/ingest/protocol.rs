//! The enqueue socket's wire format: one JSON request per line, one JSON response per
//! line (see docs/protocol.md). Parsing and the response shapes live here, apart from
//! the sockets, so they are tested as plain functions.

use crate::job::{InvalidJob, NewJob, UnixMillis};
use crate::store::Enqueued;
use serde::Deserialize;
use serde_json::{json, Value};

/// A request, parsed and checked for shape (not yet for kinds and payloads).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `job` (single: answered with `id`) or `jobs` (a batch: answered with `ids`).
    Enqueue {
        jobs: Vec<NewJob>,
        single: bool,
    },
    Ping,
    Stats,
}

/// A refused request: a stable code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The response line (without its newline).
    pub fn to_line(&self) -> String {
        json!({"ok": false, "error": {"code": self.code, "message": self.message}}).to_string()
    }
}

/// Error codes, as documented in docs/protocol.md.
pub mod codes {
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const UNKNOWN_OP: &str = "unknown_op";
    pub const INVALID_JOB: &str = "invalid_job";
    pub const UNKNOWN_KIND: &str = "unknown_kind";
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    pub const LINE_TOO_LONG: &str = "line_too_long";
    pub const BATCH_TOO_LARGE: &str = "batch_too_large";
    pub const NOT_ENQUEUED: &str = "not_enqueued";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const FORBIDDEN: &str = "forbidden";
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
}

/// A job as written on the wire: `run_at` (milliseconds or RFC 3339) or `delay`
/// (milliseconds or a duration such as "30s").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireJob {
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    run_at: Option<Value>,
    #[serde(default)]
    delay: Option<Value>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    unique_key: Option<String>,
    #[serde(default)]
    deadline_at: Option<Value>,
    /// Jobs with the same order key run one at a time, in enqueue order.
    #[serde(default)]
    order_key: Option<String>,
}

/// An enqueue request as it usually comes, read straight into its jobs' fields: building
/// a JSON tree of the whole line first, then each job from it, cost more than the rest of
/// the parse (issue 15, target 3). Anything it does not take goes the general way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnqueue {
    op: String,
    #[serde(default)]
    job: Option<WireJob>,
    #[serde(default)]
    jobs: Option<Vec<WireJob>>,
}

/// Parses one request line. `now` resolves `delay`.
pub fn parse_request(line: &[u8], max_batch: usize, now: UnixMillis) -> Result<Request, Refusal> {
    parse_enqueue_fast(line, max_batch, now)
        .map_or_else(|| parse_request_general(line, max_batch, now), Ok)
}

/// A well-formed enqueue of valid jobs, or `None` for the general parse, which then says
/// what is wrong in its own words (a refusal reads the same whichever way came first).
fn parse_enqueue_fast(line: &[u8], max_batch: usize, now: UnixMillis) -> Option<Request> {
    let wire: WireEnqueue = serde_json::from_slice(line).ok()?;
    if wire.op != "enqueue" {
        return None;
    }
    let (wires, single) = match (wire.job, wire.jobs) {
        (Some(job), None) => (vec![job], true),
        (None, Some(jobs)) if !jobs.is_empty() && jobs.len() <= max_batch => (jobs, false),
        _ => return None,
    };
    let jobs = wires
        .into_iter()
        .map(|wire| job_from_wire(wire, now, "socket").ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Request::Enqueue { jobs, single })
}

fn parse_request_general(
    line: &[u8],
    max_batch: usize,
    now: UnixMillis,
) -> Result<Request, Refusal> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Refusal::new(codes::INVALID_JSON, format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(Refusal::new(
            codes::INVALID_REQUEST,
            "a request is a JSON object with an \"op\"",
        ));
    };
    let op = match object.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => {
            return Err(Refusal::new(
                codes::INVALID_REQUEST,
                "\"op\" must be a string",
            ))
        }
        None => return Err(Refusal::new(codes::INVALID_REQUEST, "missing \"op\"")),
    };
    let allow_only = |object: &serde_json::Map<String, Value>, keys: &[&str]| match object
        .keys()
        .find(|k| !keys.contains(&k.as_str()))
    {
        Some(extra) => Err(Refusal::new(
            codes::INVALID_REQUEST,
            format!("unknown field \"{extra}\" for op \"{op}\""),
        )),
        None => Ok(()),
    };
    match op.as_str() {
        "ping" => {
            allow_only(&object, &[])?;
            Ok(Request::Ping)
        }
        "stats" => {
            allow_only(&object, &[])?;
            Ok(Request::Stats)
        }
        "enqueue" => {
            allow_only(&object, &["job", "jobs"])?;
            match (object.remove("job"), object.remove("jobs")) {
                (Some(job), None) => Ok(Request::Enqueue {
                    jobs: vec![wire_job(job, now)
                        .map_err(|m| Refusal::new(codes::INVALID_JOB, format!("job: {m}")))?],
                    single: true,
                }),
                (None, Some(Value::Array(list))) => {
                    if list.is_empty() {
                        return Err(Refusal::new(codes::INVALID_REQUEST, "\"jobs\" is empty"));
                    }
                    if list.len() > max_batch {
                        return Err(Refusal::new(
                            codes::BATCH_TOO_LARGE,
                            format!("{} jobs in one batch; at most {max_batch}", list.len()),
                        ));
                    }
                    let jobs = list
                        .into_iter()
                        .enumerate()
                        .map(|(i, job)| {
                            wire_job(job, now).map_err(|m| {
                                Refusal::new(codes::INVALID_JOB, format!("jobs[{i}]: {m}"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Request::Enqueue {
                        jobs,
                        single: false,
                    })
                }
                (None, Some(_)) => Err(Refusal::new(
                    codes::INVALID_REQUEST,
                    "\"jobs\" must be an array",
                )),
                (Some(_), Some(_)) => Err(Refusal::new(
                    codes::INVALID_REQUEST,
                    "give \"job\" or \"jobs\", not both",
                )),
                (None, None) => Err(Refusal::new(
                    codes::INVALID_REQUEST,
                    "enqueue needs \"job\" (one) or \"jobs\" (a batch)",
                )),
            }
        }
        other => Err(Refusal::new(
            codes::UNKNOWN_OP,
            format!("unknown op \"{other}\" (known: enqueue, ping, stats)"),
        )),
    }
}

fn wire_job(value: Value, now: UnixMillis) -> Result<NewJob, InvalidJob> {
    let wire: WireJob =
        serde_json::from_value(value).map_err(|e| InvalidJob::new("", e.to_string()))?;
    job_from_wire(wire, now, "socket")
}

/// Parses one job as the socket's `job` field spells it, from its own line (NDJSON input
/// to `jobctl enqueue --file`), straight into its fields without a JSON tree. `source`
/// names where it came from.
pub fn parse_job_line(line: &[u8], now: UnixMillis, source: &str) -> Result<NewJob, InvalidJob> {
    let wire: WireJob =
        serde_json::from_slice(line).map_err(|e| InvalidJob::new("", e.to_string()))?;
    job_from_wire(wire, now, source)
}

fn job_from_wire(wire: WireJob, now: UnixMillis, source: &str) -> Result<NewJob, InvalidJob> {
    let run_at = match (wire.run_at, wire.delay) {
        (Some(_), Some(_)) => {
            return Err(InvalidJob::new("delay", "give run_at or delay, not both"))
        }
        (Some(at), None) => {
            Some(time(&at).map_err(|e| InvalidJob::new("run_at", format!("run_at: {e}")))?)
        }
        (None, Some(delay)) => {
            let invalid = |text: String| InvalidJob::new("delay", format!("delay: {text}"));
            let wait = match &delay {
                Value::Number(n) => n
                    .as_u64()
                    .map(std::time::Duration::from_millis)
                    .ok_or_else(|| {
                        invalid("milliseconds must be a whole number of at least 0".into())
                    })?,
                Value::String(text) => {
                    crate::config::parse_duration(text).map_err(|e| invalid(e.to_string()))?
                }
                _ => return Err(invalid("milliseconds, or a duration like \"30s\"".into())),
            };
            Some(crate::clock::after(now, wait))
        }
        (None, None) => None,
    };
    let deadline_at = wire
        .deadline_at
        .map(|t| time(&t).map_err(|e| InvalidJob::new("deadline_at", format!("deadline_at: {e}"))))
        .transpose()?;
    let job = NewJob {
        kind: wire.kind,
        payload: wire.payload.unwrap_or_else(|| json!({})),
        queue: wire
            .queue
            .unwrap_or_else(|| crate::job::DEFAULT_QUEUE.into()),
        priority: wire.priority.unwrap_or(0),
        run_at,
        max_attempts: wire.max_attempts,
        unique_key: wire.unique_key,
        deadline_at,
        parent_id: None,
        source: Some(source.into()),
        destination: None,
        flow_key: None,
        order_key: wire.order_key,
    };
    job.validate()?;
    Ok(job)
}

/// Milliseconds since the epoch, or an RFC 3339 time. The error is the whole of what is
/// wrong with the value; the caller names the field.
fn time(value: &Value) -> Result<UnixMillis, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| "milliseconds must be a whole number".to_string()),
        Value::String(text) => crate::clock::parse_time(text).map_err(|e| e.to_string()),
        _ => Err("milliseconds since the epoch, or an RFC 3339 time".into()),
    }
}

/// The response to an enqueue that committed.
pub fn enqueued_line(enqueued: &[Enqueued], single: bool) -> String {
    if single {
        // Written out directly too: `json!` and its text were 3,200 of a single
        // enqueue's 64,000 instructions (`MODE=singles scripts/enqueue-callgrind.sh`).
        // The same text, keys sorted as `json!` prints them.
        let first = enqueued[0];
        if first.duplicate {
            format!("{{\"duplicate\":true,\"id\":{},\"ok\":true}}", first.id)
        } else {
            format!("{{\"id\":{},\"ok\":true}}", first.id)
        }
    } else {
        // Written out directly: a JSON tree of a thousand ids, then its text, cost more
        // than the line. Keys in the order `json!` prints them (sorted).
        use std::fmt::Write;
        let mut line = String::with_capacity(16 + enqueued.len() * 8);
        let list = |line: &mut String, ids: &mut dyn Iterator<Item = crate::job::JobId>| {
            line.push('[');
            for (i, id) in ids.enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{id}");
            }
            line.push(']');
        };
        let mut duplicates = enqueued
            .iter()
            .filter(|e| e.duplicate)
            .map(|e| e.id)
            .peekable();
        line.push('{');
        if duplicates.peek().is_some() {
            line.push_str("\"duplicates\":");
            list(&mut line, &mut duplicates);
            line.push(',');
        }
        line.push_str("\"ids\":");
        list(&mut line, &mut enqueued.iter().map(|e| e.id));
        line.push_str(",\"ok\":true}");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> &'static str {
        parse_request(line.as_bytes(), 3, 1_000).unwrap_err().code
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(br#"{"op":"ping"}"#, 3, 0).unwrap(),
            Request::Ping
        );
        assert_eq!(
            parse_request(br#"{"op":"stats"}"#, 3, 0).unwrap(),
            Request::Stats
        );
        let Request::Enqueue { jobs, single } = parse_request(
            br#"{"op":"enqueue","job":{"kind":"noop","payload":{"a":1},"delay":"2s","unique_key":"k","order_key":"shop-1"}}"#,
            3,
            1_000,
        )
        .unwrap() else {
            panic!("not an enqueue")
        };
        assert!(single);
        assert_eq!(jobs[0].run_at, Some(3_000));
        assert_eq!(jobs[0].unique_key.as_deref(), Some("k"));
        assert_eq!(jobs[0].order_key.as_deref(), Some("shop-1"));
        assert_eq!(jobs[0].source.as_deref(), Some("socket"));
        let Request::Enqueue { jobs, single } = parse_request(
            br#"{"op":"enqueue","jobs":[{"kind":"noop","run_at":"2026-01-01T00:00:00Z"},{"kind":"noop","run_at":5}]}"#,
            3,
            0,
        )
        .unwrap() else {
            panic!("not an enqueue")
        };
        assert!(!single);
        assert_eq!(jobs[0].run_at, Some(1_767_225_600_000));
        assert_eq!(jobs[1].run_at, Some(5));
    }

    #[test]
    fn the_fast_enqueue_parse_agrees_with_the_general_one() {
        for line in [
            r#"{"op":"enqueue","job":{"kind":"noop","payload":{"a":[1,2.5,"x"]},"delay":"2s"}}"#,
            r#"{"jobs":[{"kind":"noop","run_at":5,"priority":-3},{"kind":"a","queue":"q","max_attempts":2,"deadline_at":"2026-01-01T00:00:00Z","payload":null}],"op":"enqueue"}"#,
            r#"{"op":"enqueue","jobs":[{"kind":"noop","order_key":"k","unique_key":"u","delay":0}]}"#,
        ] {
            let fast = parse_enqueue_fast(line.as_bytes(), 3, 1_000);
            assert!(fast.is_some(), "{line}");
            assert_eq!(
                fast.unwrap(),
                parse_request_general(line.as_bytes(), 3, 1_000).unwrap(),
                "{line}"
            );
        }
        // What the fast parse does not take, the general one answers (and refuses).
        for line in [
            r#"{"op":"ping"}"#,
            r#"{"op":"enqueue","job":{"kind":"noop","colour":1}}"#,
            r#"{"op":"enqueue","job":{"kind":"noop","kind":"noop"}}"#,
            r#"{"op":"enqueue","jobs":[{"kind":"a"},{"kind":"a"},{"kind":"a"},{"kind":"a"}]}"#,
            r#"{"op":"enqueue","jobs":[{"kind":""}]}"#,
            r#"{"op":"enqueue","jobs":[]}"#,
        ] {
            assert!(
                parse_enqueue_fast(line.as_bytes(), 3, 1_000).is_none(),
                "{line}"
            );
        }
    }

    #[test]
    fn every_bad_request_gets_its_code() {
        assert_eq!(code("{nope"), codes::INVALID_JSON);
        assert_eq!(code("[1]"), codes::INVALID_REQUEST);
        assert_eq!(code(r#"{"job":{}}"#), codes::INVALID_REQUEST);
        assert_eq!(code(r#"{"op":"dance"}"#), codes::UNKNOWN_OP);
        assert_eq!(code(r#"{"op":"ping","x":1}"#), codes::INVALID_REQUEST);
        assert_eq!(code(r#"{"op":"enqueue"}"#), codes::INVALID_REQUEST);
        assert_eq!(
            code(r#"{"op":"enqueue","jobs":[]}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"op":"enqueue","job":{"payload":{}}}"#),
            codes::INVALID_JOB
        );
        assert_eq!(
            code(r#"{"op":"enqueue","job":{"kind":"noop","colour":1}}"#),
            codes::INVALID_JOB
        );
        assert_eq!(
            code(r#"{"op":"enqueue","job":{"kind":"noop","delay":"soon"}}"#),
            codes::INVALID_JOB
        );
        assert_eq!(
            code(r#"{"op":"enqueue","job":{"kind":"noop","delay":1,"run_at":1}}"#),
            codes::INVALID_JOB
        );
        assert_eq!(
            code(
                r#"{"op":"enqueue","jobs":[{"kind":"a"},{"kind":"a"},{"kind":"a"},{"kind":"a"}]}"#
            ),
            codes::BATCH_TOO_LARGE
        );
        let refusal = parse_request(
            br#"{"op":"enqueue","jobs":[{"kind":"a"},{"kind":""}]}"#,
            3,
            0,
        )
        .unwrap_err();
        assert!(
            refusal.message.starts_with("jobs[1]:"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn responses_have_the_documented_shapes() {
        let one = [Enqueued {
            id: 7,
            duplicate: false,
        }];
        assert_eq!(enqueued_line(&one, true), r#"{"id":7,"ok":true}"#);
        let dup = [Enqueued {
            id: 7,
            duplicate: true,
        }];
        assert_eq!(
            enqueued_line(&dup, true),
            r#"{"duplicate":true,"id":7,"ok":true}"#
        );
        assert_eq!(enqueued_line(&one, false), r#"{"ids":[7],"ok":true}"#);
        let batch = [
            one[0],
            dup[0],
            Enqueued {
                id: 9,
                duplicate: true,
            },
        ];
        assert_eq!(
            enqueued_line(&batch, false),
            r#"{"duplicates":[7,9],"ids":[7,7,9],"ok":true}"#
        );
        assert_eq!(
            Refusal::new(codes::UNKNOWN_OP, "x").to_line(),
            r#"{"error":{"code":"unknown_op","message":"x"},"ok":false}"#
        );
    }
}
