//! `http`: delivers one request to a configured endpoint and classifies the answer
//! (success, duplicate, retry with `Retry-After`, or dead). Owns the per-endpoint
//! clients and OAuth2 token caches shared by every worker. A job's destination limits
//! (rate, in flight) are kept by the store at claim time; the holds an answer asks for
//! are reported with the attempt and stored ([`holds`]). An in-memory rate limiter per
//! key spaces the requests of this process at the wire (and those of jobs without a
//! destination, inserted by hand); the in-memory hold binds the jobs this process
//! claimed before the hold was stored.

pub mod auth;
pub mod classify;
pub mod config;
mod endpoint;
pub mod holds;
pub mod rate;
mod request;

use endpoint::*;
pub use request::*;

use super::{Handler, HandlerError, JobContext, StopReason};
use crate::clock::Moment;
use crate::config::Config;
use crate::flow::{HoldRequest, Route};
use crate::job::{Job, NewJob, Outcome, PayloadError};
use auth::{header_secrets, is_sensitive_header, mask, mask_value, secret_forms, TokenCache};
use classify::{body_excerpt, classify, retry_after_header, Class};
use config::{AuthConfig, EndpointConfig, TokenRequestFormat};
use rate::KeyedBuckets;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a request waiting for the rate limit looks at its stop signal.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// How much of a successful body is read so the connection can be reused.
const DRAIN_LIMIT: u64 = 1 << 20;

/// The `http` job kind. Cloning shares the clients, token caches and rate limiters.
#[derive(Clone, Default)]
pub struct Http {
    endpoints: Arc<Mutex<HashMap<String, Arc<EndpointState>>>>,
}

/// A response read whole, for kinds that need more than its class (`http_pull` reads
/// the body and the headers).
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub class: Class,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// `Retry-After`, when the class is retry and the endpoint honours it.
    pub retry_after: Option<Duration>,
    /// The request URL with secrets masked, for details and logs.
    pub url: String,
    pub duration_ms: u64,
    /// What [`Fetched::excerpt`] masks.
    secrets: Vec<String>,
}

impl Fetched {
    /// The start of the body for an error message, with every secret masked (an answer
    /// may echo the request's credentials).
    pub fn excerpt(&self) -> String {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        mask(&body_excerpt(&self.body), &secrets)
    }
}

/// A finished exchange, before it becomes an [`Outcome`].
struct Exchange {
    status: Option<u16>,
    class: Class,
    error: Option<String>,
    retry_after: Option<Duration>,
    token_refreshed: bool,
    /// A successful answer's body, kept only when the payload records fields of it.
    body: Vec<u8>,
    /// How long the answer asked the destination to be held, and why.
    hold: Option<(Duration, String)>,
}

impl Http {
    pub fn new() -> Http {
        Http::default()
    }

    /// Token fetches made for an endpoint so far (tests, diagnostics).
    pub fn token_fetches(&self, endpoint: &str) -> u64 {
        let map = self.endpoints.lock().expect("endpoints");
        map.get(endpoint).map_or(0, |s| s.tokens.fetches())
    }

    fn state(
        &self,
        name: &str,
        config: &EndpointConfig,
    ) -> Result<Arc<EndpointState>, HandlerError> {
        let mut map = self.endpoints.lock().expect("endpoints");
        if let Some(state) = map.get(name) {
            if state.config == *config {
                return Ok(state.clone());
            }
        }
        let state = Arc::new(EndpointState::build(name, config)?);
        map.insert(name.to_string(), state.clone());
        Ok(state)
    }

    /// Runs `spec` for `job`: the whole attempt, with its detail.
    pub fn deliver(&self, job: &Job, spec: &RequestSpec, ctx: &JobContext) -> Outcome {
        let started = Instant::now();
        let endpoint = match spec.check(&ctx.config) {
            Ok(endpoint) => endpoint,
            Err(e) => return HandlerError::from(e).into(),
        };
        let state = match self.state(&spec.endpoint, endpoint) {
            Ok(state) => state,
            Err(e) => return e.into(),
        };
        let method = spec.method().unwrap_or(Method::POST);
        let url = match state
            .url(spec, endpoint)
            .and_then(|url| state.with_query_secrets(&url))
        {
            Ok(url) => url,
            Err(e) => return e.into(),
        };
        let key = idempotency_key(job, spec);
        if let Err(outcome) = self.wait_for_rate(&state, job, ctx) {
            return outcome;
        }
        let exchange = self.exchange(&state, spec, &method, &url, &key, ctx);
        if let (Some((wait, why)), Some(status)) = (&exchange.hold, exchange.status) {
            self.report_hold(&state, job, &spec.endpoint, ctx, *wait, status, why);
        }
        let secrets = state.secrets_for(spec);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let url_text = mask(url.as_str(), &secrets);
        let error = exchange.error.as_deref().map(|e| mask(e, &secrets));
        let duration_ms = started.elapsed().as_millis() as u64;
        let detail = json!({
            "method": method.as_str(),
            "url": url_text,
            "status": exchange.status,
            "duration_ms": duration_ms,
            "error": error,
            "duplicate": exchange.class == Class::Duplicate,
            "retry_after_ms": exchange.retry_after.map(|d| d.as_millis() as u64),
            "hold_ms": exchange.hold.as_ref().map(|(d, _)| d.as_millis() as u64),
            "token_refreshed": exchange.token_refreshed,
            "idempotency_key": idempotency_header(endpoint, &method).map(|_| &key),
        });
        tracing::debug!(job = job.id, endpoint = %spec.endpoint, status = ?exchange.status,
            duration_ms, "{} {url_text}", method.as_str());
        let error = error.unwrap_or_default();
        match exchange.class {
            Class::Success | Class::Duplicate => {
                if exchange.class == Class::Duplicate {
                    tracing::info!(job = job.id, endpoint = %spec.endpoint, status = ?exchange.status,
                        "job {} already delivered (duplicate): counted as success", job.id);
                }
                let mut detail = detail;
                let follow_ups = record(job, spec, &exchange.body, &mut detail, &secrets);
                Outcome::succeeded(follow_ups, Some(detail))
            }
            Class::Retry => Outcome::Retry {
                error,
                retry_after: exchange.retry_after,
                detail: Some(detail),
            },
            Class::Permanent => Outcome::Permanent {
                error,
                detail: Some(detail),
            },
        }
    }

    /// Sends `spec` (usually a GET) with the endpoint's client, auth, rate limit and
    /// timeouts, and reads the whole answer, at most `max_body` bytes. Unlike
    /// [`Http::deliver`] it does not decide the job's outcome: the caller reads the body.
    /// `Err` is the outcome of a request that got no answer to read (bad payload, no
    /// connection, stopped while waiting for the rate limit, body too large).
    pub fn fetch(
        &self,
        job: &Job,
        spec: &RequestSpec,
        ctx: &JobContext,
        max_body: u64,
    ) -> Result<Fetched, Outcome> {
        let started = Instant::now();
        let endpoint = spec
            .check(&ctx.config)
            .map_err(|e| Outcome::from(HandlerError::from(e)))?;
        let state = self.state(&spec.endpoint, endpoint)?;
        let method = spec.method().unwrap_or(Method::GET);
        let url = state.url(spec, endpoint)?;
        let key = idempotency_key(job, spec);
        self.wait_for_rate(&state, job, ctx)?;
        let all_secrets = state.secrets_for(spec);
        let secrets: Vec<&str> = all_secrets.iter().map(String::as_str).collect();
        let url_text = mask(url.as_str(), &secrets);
        let (status, response, _) =
            self.send(&state, spec, &method, &url, &key, ctx)
                .map_err(|failed| {
                    let error = mask(&failed.error.unwrap_or_default(), &secrets);
                    match failed.class {
                        Class::Permanent => Outcome::permanent(error),
                        _ => Outcome::retry(error),
                    }
                })?;
        let headers = response.headers().clone();
        let asked = holds::hold_from_answer(status, &headers, ctx.clock.now_ms())
            .filter(|_| endpoint.honor_retry_after);
        if let Some((wait, why)) = asked {
            self.report_hold(&state, job, &spec.endpoint, ctx, wait, status, &why);
        }
        let class = classify(status, endpoint);
        let retry_after = if class == Class::Retry && endpoint.honor_retry_after {
            retry_after_header(&headers, ctx.clock.now_ms())
        } else {
            None
        };
        let mut body = Vec::new();
        response
            .take(max_body + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                Outcome::retry(mask(
                    &format!(
                        "reading the answer from {} failed: {}",
                        without_query(&url),
                        error_chain(&e)
                    ),
                    &secrets,
                ))
            })?;
        if body.len() as u64 > max_body {
            return Err(Outcome::permanent(mask(
                &format!(
                    "the answer from {} is larger than {max_body} bytes",
                    without_query(&url)
                ),
                &secrets,
            )));
        }
        Ok(Fetched {
            status,
            class,
            headers,
            body,
            retry_after,
            url: url_text,
            duration_ms: started.elapsed().as_millis() as u64,
            secrets: all_secrets,
        })
    }

    /// Holds `job`'s destination for `wait`: stored with the attempt (so no job of it is
    /// claimed meanwhile, by any daemon) and in this process (for jobs already claimed).
    /// `why` says what asked for it ("429, Retry-After 30s").
    #[allow(clippy::too_many_arguments)]
    fn report_hold(
        &self,
        state: &EndpointState,
        job: &Job,
        endpoint: &str,
        ctx: &JobContext,
        wait: Duration,
        status: u16,
        why: &str,
    ) {
        let destination = job.destination.as_deref().unwrap_or(endpoint);
        tracing::info!(
            job = job.id,
            destination,
            wait_ms = wait.as_millis() as u64,
            "{destination} answered {why}: holding it"
        );
        ctx.hold(HoldRequest::new(
            destination,
            &job.flow_key,
            wait,
            ctx.clock.now_ms(),
            Some(status),
            format!("answered {why}"),
        ));
        hold_state(state, &job.flow_key, wait, ctx);
    }

    /// Holds every request to `endpoint` (or its part `flow_key`) from this process
    /// until `wait` from now: the other side said it is overdrawn. A shorter hold never
    /// shortens a longer one. The caller reports the stored hold ([`JobContext::hold`]).
    pub fn hold(&self, endpoint: &str, flow_key: &str, ctx: &JobContext, wait: Duration) {
        let config = &ctx.config;
        let Some(endpoint_config) = config.endpoints.get(endpoint) else {
            return;
        };
        let Ok(state) = self.state(endpoint, endpoint_config) else {
            return;
        };
        hold_state(&state, flow_key, wait, ctx);
    }

    /// Waits for the endpoint's rate limit in this process (per flow key) and, for a job
    /// claimed before a hold was set (or without a destination), the hold, in real time,
    /// watching the stop signal. A job the claim let through waits at most the jitter
    /// between its claim and its send.
    fn wait_for_rate(
        &self,
        state: &EndpointState,
        job: &Job,
        ctx: &JobContext,
    ) -> Result<(), Outcome> {
        let reserved = state
            .buckets
            .as_ref()
            .map(|buckets| buckets.reserve(&job.flow_key, ctx.clock.monotonic()));
        let until = ctx.clock.monotonic() + reserved.unwrap_or(Duration::ZERO);
        loop {
            let now = ctx.clock.monotonic();
            // A hold set while we wait (another worker got a 429) applies to us too.
            let held = state
                .holds
                .lock()
                .expect("hold")
                .get(&job.flow_key)
                .filter(|(_, set_at)| job.destination.is_none() || job.updated_at < *set_at)
                .map(|(until, _)| *until)
                .filter(|h| *h > now);
            let until = held.map_or(until, |h| h.max(until));
            if now >= until {
                return Ok(());
            }
            let stop = ctx.stop.must_stop();
            if stop.is_some() || Instant::now() >= ctx.deadline {
                if let (Some(buckets), Some(_)) = (&state.buckets, reserved) {
                    buckets.release(&job.flow_key);
                }
                return Err(match stop {
                    Some(StopReason::Cancelled) => Outcome::Cancelled {
                        reason: "cancelled while waiting for the rate limit".into(),
                    },
                    Some(_) => Outcome::Interrupted {
                        reason: "the daemon stopped".into(),
                    },
                    None => Outcome::retry("timed out waiting for the endpoint's rate limit"),
                });
            }
            std::thread::sleep(until.saturating_duration_since(now).min(WAIT_SLICE));
        }
    }

    /// Sends the request and classifies the answer.
    fn exchange(
        &self,
        state: &EndpointState,
        spec: &RequestSpec,
        method: &Method,
        url: &Url,
        key: &str,
        ctx: &JobContext,
    ) -> Exchange {
        match self.send(state, spec, method, url, key, ctx) {
            Ok((status, response, refreshed)) => {
                let keep_body = !spec.record.is_empty();
                let mut exchange =
                    answer(status, response, method, url, &state.config, ctx, keep_body);
                exchange.token_refreshed = refreshed;
                exchange
            }
            Err(failed) => failed,
        }
    }

    /// Sends the request; on a 401 with OAuth2, refreshes the token once and resends.
    /// Returns the status, the response (body unread) and whether the token was
    /// refreshed, or the failed exchange of a request that got no answer.
    fn send(
        &self,
        state: &EndpointState,
        spec: &RequestSpec,
        method: &Method,
        url: &Url,
        key: &str,
        ctx: &JobContext,
    ) -> Result<(u16, Response, bool), Exchange> {
        let failed = |error: HandlerError| Exchange {
            status: None,
            class: if error.is_permanent() {
                Class::Permanent
            } else {
                Class::Retry
            },
            error: Some(error.to_string()),
            retry_after: None,
            token_refreshed: false,
            body: Vec::new(),
            hold: None,
        };
        let oauth = matches!(
            state.config.auth,
            Some(AuthConfig::OAuth2ClientCredentials { .. })
        );
        let mut refreshed = false;
        loop {
            let auth = match self.auth_header(state, ctx) {
                Ok(auth) => auth,
                Err(e) => return Err(failed(e)),
            };
            let request = match build_request(state, spec, method, url, key, auth.clone(), ctx) {
                Ok(request) => request,
                Err(e) => return Err(failed(e)),
            };
            let response = match request.send() {
                Ok(response) => response,
                Err(e) => {
                    let error = describe_send_error(method, url, &e);
                    return Err(failed(HandlerError::transient(error)));
                }
            };
            let status = response.status().as_u16();
            if status == 401 && oauth && !refreshed {
                if let Some((_, token)) = &auth {
                    let token = token
                        .to_str()
                        .unwrap_or("")
                        .trim_start_matches("Bearer ")
                        .to_string();
                    state.tokens.invalidate(&token);
                }
                drain(response);
                refreshed = true;
                continue;
            }
            return Ok((status, response, refreshed));
        }
    }

    /// The auth header for a request, fetching an OAuth2 token if needed.
    fn auth_header(
        &self,
        state: &EndpointState,
        ctx: &JobContext,
    ) -> Result<Option<(HeaderName, HeaderValue)>, HandlerError> {
        let Some(auth) = &state.config.auth else {
            return Ok(None);
        };
        // A secret that became unreadable since the config loaded may come back (a
        // credential being rotated): retry rather than kill.
        let secret = state
            .secret
            .clone()
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        let (name, value) = match auth {
            AuthConfig::Bearer { .. } => (AUTHORIZATION, format!("Bearer {secret}")),
            AuthConfig::Basic { username, .. } => (
                AUTHORIZATION,
                format!("Basic {}", basic_credentials(username, &secret)),
            ),
            AuthConfig::Header { name, .. } => (
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| HandlerError::permanent(e.to_string()))?,
                secret,
            ),
            AuthConfig::OAuth2ClientCredentials { .. } => {
                let clock = ctx.clock.clone();
                let token = state
                    .tokens
                    .get(|| clock.now_ms(), || fetch_token(state, auth, &secret, ctx))?;
                (AUTHORIZATION, format!("Bearer {token}"))
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| HandlerError::permanent("the credential is not a valid header value"))?;
        // Marked sensitive so no Debug output (ours, reqwest's or hyper's) shows it.
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// Fetches an OAuth2 client-credentials token; a failure that may pass (no connection, a
/// status the endpoint retries, an answer cut short) is transient.
fn fetch_token(
    state: &EndpointState,
    auth: &AuthConfig,
    secret: &str,
    ctx: &JobContext,
) -> Result<(String, Option<Duration>), HandlerError> {
    let AuthConfig::OAuth2ClientCredentials {
        token_url,
        client_id,
        params,
        request_format,
        ..
    } = auth
    else {
        return Err(HandlerError::permanent("not an oauth2 endpoint"));
    };
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    fields.insert("grant_type", "client_credentials");
    fields.insert("client_id", client_id);
    fields.insert("client_secret", secret);
    for (k, v) in params {
        fields.insert(k, v);
    }
    let request = state
        .client
        .post(token_url)
        .timeout(remaining(&state.config, ctx));
    let request = match request_format {
        TokenRequestFormat::Form => request.form(&fields),
        TokenRequestFormat::Json => request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&fields).unwrap_or_default()),
    };
    let masked = |text: String| mask(&text, &[secret]);
    let response = request.send().map_err(|e| {
        HandlerError::transient(masked(format!(
            "cannot fetch the OAuth2 token: {}",
            error_chain(&e)
        )))
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let _ = response.take(DRAIN_LIMIT).read_to_end(&mut body);
    if !(200..300).contains(&status) {
        let error = masked(format!(
            "the OAuth2 token endpoint answered {status}: {}",
            body_excerpt(&body)
        ));
        return Err(if state.config.retry.contains(&status) {
            HandlerError::transient(error)
        } else {
            HandlerError::permanent(error)
        });
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|e| {
        HandlerError::transient(format!("the OAuth2 token answer is not JSON: {e}"))
    })?;
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| HandlerError::permanent("the OAuth2 token answer has no access_token"))?
        .to_string();
    let expires_in = match answer.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .map(Duration::from_secs_f64);
    tracing::info!(token_url = %token_url, "fetched an OAuth2 token");
    Ok((token, expires_in))
}

/// The time this request may take: the endpoint's timeout, within the job's deadline.
fn remaining(endpoint: &EndpointConfig, ctx: &JobContext) -> Duration {
    endpoint
        .timeout
        .min(ctx.deadline.saturating_duration_since(Instant::now()))
        .max(Duration::from_millis(1))
}

/// Copies the `record` fields of a successful JSON answer into `detail.recorded`, and
/// returns the `follow_up` (in the job's queue unless it names one) when all of them
/// were there.
fn record(
    job: &Job,
    spec: &RequestSpec,
    body: &[u8],
    detail: &mut Value,
    secrets: &[&str],
) -> Vec<NewJob> {
    if spec.record.is_empty() {
        return Vec::new();
    }
    let mut answer: Option<Value> = serde_json::from_slice(body).ok();
    // What is kept of an answer is stored: a secret it echoes is masked first.
    if let Some(answer) = answer.as_mut() {
        mask_value(answer, secrets);
    }
    let mut recorded = serde_json::Map::new();
    let mut missing = Vec::new();
    for name in &spec.record {
        let found = answer.as_ref().and_then(|a| {
            if name.starts_with('/') {
                a.pointer(name)
            } else {
                a.get(name)
            }
        });
        match found {
            Some(value) if !value.is_null() => {
                recorded.insert(name.clone(), value.clone());
            }
            _ => missing.push(name.as_str()),
        }
    }
    detail["recorded"] = Value::Object(recorded.clone());
    let Some(next) = &spec.follow_up else {
        return Vec::new();
    };
    if !missing.is_empty() {
        let why = format!(
            "no follow-up: the answer has no {} ({})",
            missing.join(", "),
            if answer.is_some() { "JSON" } else { "not JSON" }
        );
        tracing::warn!(job = job.id, endpoint = %spec.endpoint, "job {}: {why}", job.id);
        detail["follow_up"] = json!(why);
        return Vec::new();
    }
    let mut next = next.clone();
    if next.queue == crate::job::DEFAULT_QUEUE {
        next.queue = job.queue.clone();
    }
    if !next.payload.is_object() {
        next.payload = json!({});
    }
    next.payload["recorded"] = Value::Object(recorded);
    vec![next]
}

/// Turns a response into an exchange: its class, its error text and Retry-After. A 413
/// is named, so a dead upload says why without looking the status up.
fn answer(
    status: u16,
    response: Response,
    method: &Method,
    url: &Url,
    endpoint: &EndpointConfig,
    ctx: &JobContext,
    keep_body: bool,
) -> Exchange {
    let class = classify(status, endpoint);
    let retry_after = if class == Class::Retry && endpoint.honor_retry_after {
        retry_after_header(response.headers(), ctx.clock.now_ms())
    } else {
        None
    };
    // `honor_retry_after = false` ignores what the other side asks for, holds included.
    let hold = holds::hold_from_answer(status, response.headers(), ctx.clock.now_ms())
        .filter(|_| endpoint.honor_retry_after);
    let reason = match status {
        413 => "payload too large",
        _ => response.status().canonical_reason().unwrap_or(""),
    };
    let mut kept = Vec::new();
    let error = match class {
        Class::Success | Class::Duplicate if keep_body => {
            let _ = response.take(DRAIN_LIMIT).read_to_end(&mut kept);
            None
        }
        Class::Success | Class::Duplicate => {
            drain(response);
            None
        }
        Class::Retry | Class::Permanent => {
            let mut body = Vec::new();
            let _ = response
                .take(classify::ERROR_BODY_LIMIT as u64 + 4)
                .read_to_end(&mut body);
            let excerpt = body_excerpt(&body);
            let mut text = format!(
                "HTTP {status} {reason} from {method} {}",
                without_query(url)
            );
            if let Some(wait) = retry_after {
                text.push_str(&format!(" (Retry-After {}s)", wait.as_secs()));
            }
            if !excerpt.is_empty() {
                text.push_str(": ");
                text.push_str(&excerpt);
            }
            Some(text)
        }
    };
    Exchange {
        status: Some(status),
        class,
        error,
        retry_after,
        token_refreshed: false,
        body: kept,
        hold,
    }
}

/// Holds `state`'s requests of `flow_key` in this process until `wait` from now; a
/// shorter hold never shortens a longer one.
fn hold_state(state: &EndpointState, flow_key: &str, wait: Duration, ctx: &JobContext) {
    let now = ctx.clock.monotonic();
    let now_ms = ctx.clock.now_ms();
    let until = now + wait.min(crate::flow::MAX_HOLD);
    {
        let mut holds = state.holds.lock().expect("hold");
        let hold = holds.entry(flow_key.to_string()).or_insert((now, now_ms));
        if hold.0 >= until {
            return;
        }
        *hold = (until, now_ms);
    }
}

/// Reads what is left of a body, so the connection goes back to the pool.
fn drain(response: Response) {
    let _ = std::io::copy(&mut response.take(DRAIN_LIMIT), &mut std::io::sink());
}

/// The URL for errors: queries often carry keys, so they are left out.
fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

fn describe_send_error(method: &Method, url: &Url, error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // reqwest names the URL with its query; the query may carry a key.
    let text = error_chain(error).replace(url.as_str(), &without_query(url));
    format!("{method} {} {what}: {text}", without_query(url))
}

/// An error and its causes ("connection refused" is three levels down in reqwest).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

impl Handler for Http {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        RequestSpec::parse(payload)?.check(config).map(|_| ())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        match RequestSpec::parse(&job.payload) {
            Ok(spec) => self.deliver(job, &spec, ctx),
            Err(e) => HandlerError::from(e).into(),
        }
    }

    fn route(&self, job: &NewJob, config: &Config) -> Route {
        endpoint_route(job, config)
    }
}

/// The route of a job whose payload names an `endpoint` (http, notify, the upload
/// status poll): that endpoint, split by its `key` when it has one.
pub fn endpoint_route(job: &NewJob, config: &Config) -> Route {
    let Some(name) = job.payload.get("endpoint").and_then(Value::as_str) else {
        return Route::default();
    };
    let Some(endpoint) = config.endpoints.get(name) else {
        return Route::default();
    };
    Route {
        destination: Some(name.to_string()),
        flow_key: endpoint
            .key
            .as_deref()
            .map(|template| crate::flow::key_of(template, &job.payload))
            .unwrap_or_default(),
        order_key: None,
    }
}
