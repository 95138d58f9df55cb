//! `http_pull`: pulls a paginated REST collection incrementally into a local sink, one
//! job per page. Each page job fetches its page through the `http` kind's endpoint
//! (auth, rate limit, timeouts), upserts the items, and returns the next page's job as a
//! follow-up, enqueued in the same transaction as its own completion; the last page
//! returns the run's high-water mark instead, which the store records in `sync_state`.

pub mod config;
pub mod paging;

use super::http::classify::{retry_after_header, Class};
use super::http::{Fetched, Http, RequestSpec};
use super::{Handler, HandlerError, JobContext};
use crate::config::{Config, PipelineConfig};
use crate::job::{Job, NewJob, Outcome, PayloadError, SyncMark, UnixMillis};
use crate::store::sink::{field, SinkDb, SinkTable, Upserted};
use config::{HttpPullConfig, Pagination};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KIND: &str = "http_pull";
/// The largest page body read.
const MAX_PAGE_BYTES: u64 = 64 << 20;
/// The longest `Retry-After` waited out inside one attempt; a longer one defers the page.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// 429s waited out inside one attempt before the page is deferred.
const MAX_INLINE_THROTTLES: u32 = 30;
/// The wait after a 429 without `Retry-After` (Shopify's own is 2.0 s).
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(2);
/// The leak rate assumed for the usage header when the endpoint has no `rate_limit`
/// (Shopify's standard plan).
const DEFAULT_LEAK_PER_SECOND: f64 = 2.0;

/// A page job's payload. The first page of a run needs only `pipeline`; the handler adds
/// `run` to the jobs of the pages after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullPayload {
    pub pipeline: String,
    /// Ignore the stored mark and fetch everything.
    #[serde(default, skip_serializing_if = "is_false")]
    pub full: bool,
    /// Where the run stands; absent on its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunState>,
    /// How many times this page was put off for a long `Retry-After`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A run in progress, carried from page to page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// When the run's first page started: the mark recorded when the run completes.
    pub started_at: UnixMillis,
    /// The `updated_at_min` asked for (the last mark minus the overlap); None: full.
    pub since: Option<UnixMillis>,
    /// The page this job fetches, from 1.
    pub page: u32,
    /// Items fetched by the pages before it.
    pub items: u64,
    pub next: Next,
}

/// How to ask for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Next {
    /// The `Link` header's URL, used exactly as given.
    Url {
        url: String,
    },
    Cursor {
        cursor: String,
    },
    Page {
        page: u64,
    },
}

impl PullPayload {
    pub fn parse(payload: &Value) -> Result<PullPayload, PayloadError> {
        PullPayload::deserialize(payload)
            .map_err(|e| PayloadError::whole(format!("http_pull payload: {e}")))
    }

    fn pipeline<'c>(&self, config: &'c Config) -> Result<&'c HttpPullConfig, PayloadError> {
        let refused = |message: String| PayloadError::new("pipeline", message);
        match config.pipelines.get(&self.pipeline) {
            Some(PipelineConfig::HttpPull(pull)) => Ok(pull),
            // Reachable once other pipeline kinds (csv_import, relay) exist.
            #[allow(unreachable_patterns)]
            Some(other) => Err(refused(format!(
                "pipeline '{}' is of kind {}, not http_pull",
                self.pipeline,
                other.job_kind()
            ))),
            None => {
                let known: Vec<&str> = config
                    .pipelines
                    .iter()
                    .filter(|(_, p)| matches!(p, PipelineConfig::HttpPull(_)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                Err(refused(format!(
                    "pipeline '{}' is not declared in the config (http_pull pipelines: {})",
                    self.pipeline,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
    }
}

/// The `http_pull` kind. Shares the `http` kind's endpoints (clients, rate limiters).
pub struct Pull {
    http: Http,
    /// Open sink databases by path, shared by every worker.
    sinks: Mutex<HashMap<PathBuf, Arc<Mutex<SinkDb>>>>,
}

impl Pull {
    pub fn new(http: Http) -> Pull {
        Pull {
            http,
            sinks: Mutex::new(HashMap::new()),
        }
    }

    fn sink(&self, path: &Path) -> Result<Arc<Mutex<SinkDb>>, crate::store::StoreError> {
        let mut sinks = self.sinks.lock().expect("sinks");
        if let Some(sink) = sinks.get(path) {
            return Ok(sink.clone());
        }
        let sink = Arc::new(Mutex::new(SinkDb::open(path)?));
        sinks.insert(path.to_path_buf(), sink.clone());
        Ok(sink)
    }

    /// Fetches one page, waiting out 429s (every worker holds off the endpoint for the
    /// `Retry-After`) without ending the attempt: a 429 never costs an attempt. Returns
    /// the answer and how many 429s it took, or the outcome that ends the attempt.
    fn fetch_page(
        &self,
        job: &Job,
        pull: &HttpPullConfig,
        spec: &RequestSpec,
        ctx: &JobContext,
    ) -> Result<(Fetched, u32), Throttled> {
        let mut throttles = 0;
        loop {
            let fetched = self
                .http
                .fetch(job, spec, ctx, MAX_PAGE_BYTES)
                .map_err(Throttled::Ended)?;
            self.observe_usage(job, pull, &fetched, ctx);
            if fetched.status != 429 {
                return Ok((fetched, throttles));
            }
            throttles += 1;
            let wait = retry_after(&fetched, ctx).unwrap_or(DEFAULT_THROTTLE_WAIT);
            self.hold(
                job,
                pull,
                ctx,
                wait,
                429,
                format!("answered 429, waiting {}s", wait.as_secs_f64()),
            );
            tracing::info!(job = job.id, endpoint = %pull.endpoint, wait_ms = wait.as_millis() as u64,
                "429 from {}: holding the endpoint", fetched.url);
            let too_long = wait > MAX_INLINE_WAIT
                || throttles >= MAX_INLINE_THROTTLES
                || Instant::now() + wait + Duration::from_secs(1) >= ctx.deadline;
            if too_long {
                return Err(Throttled::Defer(wait));
            }
            // The next fetch waits out the hold (watching the stop signal).
        }
    }

    /// Holds the pull's endpoint for `wait`: in this process (the next fetch of this
    /// attempt waits it out) and stored with the attempt, so no other job of the
    /// destination is claimed meanwhile.
    fn hold(
        &self,
        job: &Job,
        pull: &HttpPullConfig,
        ctx: &JobContext,
        wait: Duration,
        status: u16,
        why: String,
    ) {
        let destination = job.destination.as_deref().unwrap_or(&pull.endpoint);
        self.http.hold(&pull.endpoint, &job.flow_key, ctx, wait);
        ctx.hold(crate::flow::HoldRequest::new(
            destination,
            &job.flow_key,
            wait,
            ctx.clock.now_ms(),
            Some(status),
            why,
        ));
    }

    /// Slows every request to the endpoint when the other side's bucket nears its top.
    fn observe_usage(&self, job: &Job, pull: &HttpPullConfig, fetched: &Fetched, ctx: &JobContext) {
        if pull.call_limit_header.is_empty() {
            return;
        }
        let Some((used, size)) = fetched
            .headers
            .get(pull.call_limit_header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(paging::call_limit)
        else {
            return;
        };
        let leak = ctx
            .config
            .endpoints
            .get(&pull.endpoint)
            .and_then(|e| e.rate_limit)
            .map_or(DEFAULT_LEAK_PER_SECOND, |r| r.per_second());
        if let Some(wait) = paging::slow_down(used, size, leak) {
            tracing::debug!(endpoint = %pull.endpoint, used, size, wait_ms = wait.as_millis() as u64,
                "the other side's bucket is nearly full: slowing down");
            let why = format!(
                "answered {} with {} {used}/{size}",
                fetched.status, pull.call_limit_header
            );
            self.hold(job, pull, ctx, wait, fetched.status, why);
        }
    }

    fn store(
        &self,
        name: &str,
        pull: &HttpPullConfig,
        items: &[Value],
        now: UnixMillis,
    ) -> Result<Upserted, HandlerError> {
        // The sink is a file of ours: a failure to write it (busy, disk full) may pass.
        let failed = |path: &Path, e: &dyn std::fmt::Display| {
            HandlerError::transient(format!("sink {}: {e}", path.display()))
        };
        if let Some(path) = &pull.sink.sqlite {
            let table = SinkTable {
                name: pull.table_name(name),
                id_field: pull.id_field.clone(),
                updated_field: pull.updated_field.clone(),
                columns: pull
                    .columns
                    .iter()
                    .map(|(c, p)| (c.clone(), p.clone()))
                    .collect(),
            };
            let sink = self
                .sink(path)
                .map_err(|e| HandlerError::transient(e.to_string()))?;
            let mut sink = sink.lock().expect("sink");
            return sink
                .upsert_items(&table, items, now)
                .map_err(|e| failed(path, &e));
        }
        if let Some(path) = &pull.sink.ndjson {
            append_ndjson(path, items).map_err(|e| failed(path, &e))?;
            return Ok(Upserted {
                written: items.len(),
                ..Upserted::default()
            });
        }
        Err(HandlerError::transient(format!(
            "pipeline {name} has no sink"
        )))
    }
}

/// Why a page fetch ended without an answer to use.
enum Throttled {
    /// The attempt ends with this outcome (stopped, no connection, bad payload).
    Ended(Outcome),
    /// Throttled for longer than an attempt should wait: put the page off.
    Defer(Duration),
}

fn retry_after(fetched: &Fetched, ctx: &JobContext) -> Option<Duration> {
    fetched
        .retry_after
        .or_else(|| retry_after_header(&fetched.headers, ctx.clock.now_ms()))
}

/// Appends items as JSON lines and syncs, so they are on disk before the page is done.
fn append_ndjson(path: &Path, items: &[Value]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::files::create_private_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let mut text = String::new();
    for item in items {
        text.push_str(&item.to_string());
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// The request for a run's page.
fn request_spec(pull: &HttpPullConfig, run: &RunState, first: bool) -> RequestSpec {
    let mut spec = RequestSpec {
        endpoint: pull.endpoint.clone(),
        method: Some("GET".into()),
        ..RequestSpec::default()
    };
    if let (false, Next::Url { url }) = (first, &run.next) {
        // Exactly as given: with Link pagination the cursor carries the filters, and
        // anything but `limit` beside `page_info` is refused.
        spec.url = Some(url.clone());
        return spec;
    }
    let mut query: BTreeMap<String, Value> = pull
        .query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    query.insert(pull.limit_param.clone(), json!(pull.limit));
    if let (Some(since), false) = (run.since, pull.updated_min_param.is_empty()) {
        query.insert(
            pull.updated_min_param.clone(),
            json!(paging::format_time(since)),
        );
    }
    match (&run.next, first) {
        (Next::Cursor { cursor }, false) => {
            query.insert(pull.cursor_param.clone(), json!(cursor));
        }
        (Next::Page { page }, _) if pull.pagination == Pagination::Page => {
            query.insert(pull.page_param.clone(), json!(page));
        }
        _ => {}
    }
    spec.path = Some(pull.path.clone());
    spec.query = query;
    spec
}

/// The other side named the page just fetched as the next one: following it would loop,
/// and would again, so the run ends dead.
#[derive(Debug, thiserror::Error)]
enum PagingLoop {
    #[error(
        "the Link header's next page is the page just fetched ({0}): stopping rather than looping"
    )]
    Link(String),
    #[error("the next cursor is the one just used ({0}): stopping rather than looping")]
    Cursor(String),
}

/// Where the page after this one is, if there is one.
fn next_page(
    pull: &HttpPullConfig,
    run: &RunState,
    fetched: &Fetched,
    body: &Value,
    count: usize,
) -> Result<Option<Next>, PagingLoop> {
    match pull.pagination {
        Pagination::LinkHeader => {
            let values = fetched
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok());
            match paging::next_link(values) {
                Some(url) if Some(&url) == current_url(run) => Err(PagingLoop::Link(url)),
                Some(url) => Ok(Some(Next::Url { url })),
                None => Ok(None),
            }
        }
        Pagination::Cursor => {
            let path = pull.cursor_field.as_deref().unwrap_or_default();
            let cursor = match field(body, path) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            match cursor {
                Some(c) if count == 0 => {
                    tracing::warn!(
                        "an empty page still named a next cursor ({c}); the run ends here"
                    );
                    Ok(None)
                }
                Some(c) if matches!(&run.next, Next::Cursor { cursor } if *cursor == c) => {
                    Err(PagingLoop::Cursor(c))
                }
                Some(cursor) => Ok(Some(Next::Cursor { cursor })),
                None => Ok(None),
            }
        }
        Pagination::Page => {
            let page = match run.next {
                Next::Page { page } => page,
                _ => 1,
            };
            Ok((count as u64 >= u64::from(pull.limit)).then_some(Next::Page { page: page + 1 }))
        }
    }
}

fn current_url(run: &RunState) -> Option<&String> {
    match &run.next {
        Next::Url { url } => Some(url),
        _ => None,
    }
}

impl Handler for Pull {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        PullPayload::parse(payload)?.pipeline(config).map(|_| ())
    }

    /// A pull goes to its pipeline's endpoint (one per shop), and the pages of every
    /// pipeline of that endpoint run one at a time, in order: a shop's API sees one
    /// pull request at a time.
    fn route(&self, job: &NewJob, config: &Config) -> crate::flow::Route {
        let Ok(pull) = PullPayload::parse(&job.payload).and_then(|p| p.pipeline(config).cloned())
        else {
            return crate::flow::Route::default();
        };
        crate::flow::Route {
            destination: Some(pull.endpoint.clone()),
            flow_key: String::new(),
            order_key: Some(format!("pull:{}", pull.endpoint)),
        }
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let (payload, pull) = match PullPayload::parse(&job.payload)
            .and_then(|payload| Ok((payload.pipeline(&ctx.config)?, payload)))
        {
            Ok((pull, payload)) => (payload, pull),
            Err(e) => return HandlerError::from(e).into(),
        };
        let name = payload.pipeline.as_str();
        let first = payload.run.is_none();
        let run = match &payload.run {
            Some(run) => run.clone(),
            None => {
                // The mark is read when the run starts, not when it was enqueued, so a
                // reset or a run that finished meanwhile is seen.
                let since = if payload.full || pull.updated_min_param.is_empty() {
                    None
                } else {
                    match ctx.sync_state.high_water(name) {
                        Ok(mark) => mark.map(|m| m - pull.overlap.as_millis() as i64),
                        Err(e) => return HandlerError::transient(e.to_string()).into(),
                    }
                };
                RunState {
                    started_at: ctx.clock.now_ms(),
                    since,
                    page: 1,
                    items: 0,
                    next: Next::Page { page: 1 },
                }
            }
        };
        let spec = request_spec(pull, &run, first);
        let (fetched, throttles) = match self.fetch_page(job, pull, &spec, ctx) {
            Ok(answer) => answer,
            Err(Throttled::Ended(outcome)) => return outcome,
            Err(Throttled::Defer(wait)) => return defer(job, &payload, wait, ctx),
        };
        let mut detail = json!({
            "pipeline": name,
            "page": run.page,
            "url": fetched.url,
            "status": fetched.status,
            "duration_ms": fetched.duration_ms,
            "since": run.since.map(paging::format_time),
            "throttled": throttles,
        });
        let failure = |text: String| {
            format!(
                "HTTP {} from {}: {text}",
                fetched.status,
                without_query(&fetched.url)
            )
        };
        match fetched.class {
            Class::Success | Class::Duplicate => {}
            Class::Retry => {
                return Outcome::Retry {
                    error: failure(fetched.excerpt()),
                    retry_after: fetched.retry_after,
                    detail: Some(detail),
                }
            }
            Class::Permanent => {
                return Outcome::Permanent {
                    error: failure(fetched.excerpt()),
                    detail: Some(detail),
                }
            }
        }
        let body: Value = match serde_json::from_slice(&fetched.body) {
            Ok(body) => body,
            Err(e) => return Outcome::retry(failure(format!("the answer is not JSON: {e}"))),
        };
        let Some(items) = body.get(&pull.items_key).and_then(Value::as_array) else {
            return Outcome::Permanent {
                error: failure(format!("the answer has no '{}' array", pull.items_key)),
                detail: Some(detail),
            };
        };
        let now = ctx.clock.now_ms();
        let upserted = match self.store(name, pull, items, now) {
            Ok(upserted) => upserted,
            Err(e) => return e.into(),
        };
        if upserted.skipped > 0 {
            tracing::warn!(
                job = job.id,
                pipeline = name,
                "{} item(s) without a usable '{}' were skipped",
                upserted.skipped,
                pull.id_field
            );
        }
        let next = match next_page(pull, &run, &fetched, &body, items.len()) {
            Ok(next) => next,
            Err(e) => return Outcome::permanent(failure(e.to_string())),
        };
        let items_so_far = run.items + items.len() as u64;
        // The run so far: this page is one job of a chain, the run's counts travel on.
        ctx.progress("page", run.page as u64);
        ctx.progress("items", items_so_far);
        detail["items"] = json!(items.len());
        detail["written"] = json!(upserted.written);
        detail["kept_newer"] = json!(upserted.kept_newer);
        detail["skipped"] = json!(upserted.skipped);
        detail["next"] = json!(next.is_some());
        let Some(next) = next else {
            tracing::info!(
                job = job.id,
                pipeline = name,
                pages = run.page,
                items = items_so_far,
                "sync of {name} complete: {items_so_far} item(s) in {} page(s)",
                run.page
            );
            return Outcome::Success {
                follow_ups: Vec::new(),
                detail: Some(detail),
                sync_marks: vec![SyncMark {
                    pipeline: name.to_string(),
                    high_water: run.started_at,
                    items: items_so_far,
                    pages: run.page,
                }],
            };
        };
        let page = run.page + 1;
        let following = PullPayload {
            pipeline: name.to_string(),
            full: payload.full,
            run: Some(RunState {
                page,
                items: items_so_far,
                next,
                ..run.clone()
            }),
            deferred: 0,
        };
        let mut follow_up = NewJob::new(KIND, serde_json::to_value(&following).expect("payload"))
            .queue(job.queue.clone())
            .priority(job.priority)
            .unique_key(format!("{KIND}:{name}:{}:page:{page}", run.started_at))
            .source(format!("pull:{name}"));
        follow_up.max_attempts = job.max_attempts;
        Outcome::succeeded(vec![follow_up], Some(detail))
    }
}

/// Puts a page off for a long `Retry-After`: this job succeeds, and the same page comes
/// back as a new job due after the wait, with fresh attempts. A 429 therefore never
/// spends the job's attempts, however long or often the other side throttles.
fn defer(job: &Job, payload: &PullPayload, wait: Duration, ctx: &JobContext) -> Outcome {
    let mut again = payload.clone();
    again.deferred += 1;
    let key = job
        .unique_key
        .as_deref()
        .map(|k| k.split(":deferred:").next().unwrap_or(k).to_string())
        .map(|k| format!("{k}:deferred:{}", again.deferred));
    let mut follow_up = NewJob::new(KIND, serde_json::to_value(&again).expect("payload"))
        .queue(job.queue.clone())
        .priority(job.priority)
        .run_at(crate::clock::after(ctx.clock.now_ms(), wait))
        .source(format!("pull:{}", payload.pipeline));
    follow_up.unique_key = key;
    follow_up.max_attempts = job.max_attempts;
    tracing::warn!(job = job.id, pipeline = %payload.pipeline, wait_ms = wait.as_millis() as u64,
        "throttled for long: the page is put off as a new job");
    Outcome::succeeded(
        vec![follow_up],
        Some(
            json!({"pipeline": payload.pipeline, "deferred": again.deferred,
                    "retry_after_ms": wait.as_millis() as u64}),
        ),
    )
}

fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
