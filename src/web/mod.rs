//! The web page served by jobd (`[web] listen`): axum on a tokio runtime of its own
//! thread, HTML rendered on the server, a JSON API under `/api/`, an SSE stream of
//! changes, and actions that go through the dispatcher like `jobctl`'s.
//!
//! - [`config`]: the `[web]` section and its checks.
//! - [`pages`]: the HTML pages and their live fragments.
//! - [`api`]: the same data as JSON.
//! - [`actions`]: retry and cancel, one job or many, pause and resume of a queue, with
//!   the safety checks.
//! - [`live`]: the change watcher and the `/events` stream.
//! - [`mask`]: secrets out of payloads, errors and details.

pub mod actions;
pub mod api;
pub mod config;
pub mod live;
pub mod mask;
pub mod pages;

pub use config::WebConfig;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::daemon::DaemonClient;
use crate::store::web::{LiveCounts, ReadPool, SucceededBase, WebReads};
use crate::store::StoreError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Read-only connections for the page: a few, since a page's reads are short.
const READ_CONNECTIONS: usize = 3;

/// No inline script or style, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// What every request handler shares.
pub struct WebState {
    pub pool: Arc<ReadPool>,
    pub client: DaemonClient,
    pub clock: SharedClock,
    /// `None`: loopback without auth.
    token: Option<String>,
    pub actions: bool,
    /// Signs CSRF tokens; random per start.
    csrf_key: [u8; 32],
    /// Every secret the configuration names, masked wherever it could show.
    pub secrets: Vec<String>,
    pub live: live::Live,
    /// The overview's recent full count of succeeded jobs, and when it was made.
    succeeded: std::sync::Mutex<Option<(SucceededBase, std::time::Instant)>>,
    recounting: std::sync::atomic::AtomicBool,
    /// The last count of live jobs, when it was made and what it cost.
    live_counts: std::sync::Mutex<Option<LiveCountsMade>>,
    recounting_live: std::sync::atomic::AtomicBool,
}

/// A count of live jobs the overview and the queues page may reuse.
#[derive(Clone)]
struct LiveCountsMade {
    counts: LiveCounts,
    at: crate::clock::Moment,
    cost: Duration,
}

/// What the rule needs to know of the last live count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastLiveCount {
    /// What it took, from asking a pooled connection to the answer.
    pub cost: Duration,
    pub age: Duration,
    /// How many live jobs it counted.
    pub jobs: u64,
}

/// A live count that took no longer than this is redone for every page, so a small
/// queue's page is always exact.
const CHEAP_LIVE_COUNT: Duration = Duration::from_millis(10);
/// Nor is a count of this many live jobs or fewer ever reused, however long it took: its
/// cost then is a busy pool or a cold cache, not rows, and an operator looking at a
/// handful of jobs expects the page to match them.
const SMALL_LIVE_COUNT: u64 = 10_000;
/// The least time between two counts of a big queue's live jobs; a count that costs more
/// waits [`LIVE_RECOUNT_FACTOR`] times its cost, so counting takes at most 5% of a core.
const LIVE_RECOUNT_EVERY: Duration = Duration::from_secs(2);
const LIVE_RECOUNT_FACTOR: u32 = 20;

/// How a page gets the live counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCountsPlan {
    /// Count now, in the page's read.
    CountNow,
    /// Show the last count.
    Reuse,
    /// Show the last count, and count again in the background.
    ReuseAndRecount,
}

/// The rule: given the last count (none yet: count now) and whether a background count
/// is under way. Counting a million waiting jobs reads a million rows (about 350 ms);
/// redone for every refresh of every open page it would slow the queue it shows.
pub fn plan_live_counts(last: Option<LastLiveCount>, recounting: bool) -> LiveCountsPlan {
    match last {
        None => LiveCountsPlan::CountNow,
        Some(last) if last.cost <= CHEAP_LIVE_COUNT || last.jobs <= SMALL_LIVE_COUNT => {
            LiveCountsPlan::CountNow
        }
        Some(LastLiveCount { cost, age, .. }) => {
            if !recounting && age >= LIVE_RECOUNT_EVERY.max(cost * LIVE_RECOUNT_FACTOR) {
                LiveCountsPlan::ReuseAndRecount
            } else {
                LiveCountsPlan::Reuse
            }
        }
    }
}

impl WebState {
    /// The CSRF token of a user: a keyed hash, so it need not be stored.
    pub fn csrf_token(&self, who: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.csrf_key);
        hash.update(b"csrf:");
        hash.update(who.as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn config(&self) -> Arc<Config> {
        self.client.config()
    }

    /// Runs a read on the pool, off the async threads.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&dyn WebReads) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WebError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.with(read))
            .await
            .map_err(|e| WebError::Internal(format!("a read failed: {e}")))?
            .map_err(WebError::from)
    }
}

/// How often the overview recounts every succeeded job (in the background; pages
/// meanwhile add the rows finished since the last count).
const RECOUNT_EVERY: Duration = Duration::from_secs(30);
/// Rows finished this close to a count are counted as "since", so a commit stamped just
/// before the count but visible only after it is not missed.
const RECOUNT_MARGIN: Duration = Duration::from_secs(60);

impl WebState {
    /// The succeeded count's and the throughput chart's base: made now the first time, renewed in the background
    /// once it is older than [`RECOUNT_EVERY`].
    pub async fn succeeded_base(self: &Arc<Self>) -> Result<SucceededBase, WebError> {
        use std::sync::atomic::Ordering;
        let cached = self.succeeded.lock().expect("count lock").clone();
        let recount = |state: Arc<Self>| {
            let now = state.clock.now_ms();
            let pool = state.pool.clone();
            async move {
                let base = tokio::task::spawn_blocking(move || {
                    pool.with(|db| db.web_succeeded_base(now, RECOUNT_MARGIN))
                })
                .await
                .map_err(|e| WebError::Internal(format!("a read failed: {e}")))??;
                *state.succeeded.lock().expect("count lock") =
                    Some((base.clone(), std::time::Instant::now()));
                Ok::<_, WebError>(base)
            }
        };
        match cached {
            None => recount(self.clone()).await,
            Some((base, at)) => {
                if at.elapsed() > RECOUNT_EVERY && !self.recounting.swap(true, Ordering::SeqCst) {
                    let state = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = recount(state.clone()).await {
                            tracing::warn!("web: recounting succeeded jobs: {}", e.message());
                        }
                        state.recounting.store(false, Ordering::SeqCst);
                    });
                }
                Ok(base)
            }
        }
    }
}

impl WebState {
    /// The live counts for a page: counted now while that is cheap, else the last count
    /// (see [`plan_live_counts`]).
    pub async fn live_counts(self: &Arc<Self>) -> Result<LiveCounts, WebError> {
        use std::sync::atomic::Ordering;
        let last = self.live_counts.lock().expect("count lock").clone();
        let now = self.clock.monotonic();
        let plan = plan_live_counts(
            last.as_ref().map(|made| LastLiveCount {
                cost: made.cost,
                age: now.saturating_duration_since(made.at),
                jobs: made.counts.jobs(),
            }),
            self.recounting_live.load(Ordering::SeqCst),
        );
        let count = |state: Arc<Self>| async move {
            let started = state.clock.monotonic();
            let at = state.clock.now_ms();
            let counts = state.read(move |db| db.web_live_counts(at)).await?;
            let made = LiveCountsMade {
                counts: counts.clone(),
                at: started,
                cost: state.clock.monotonic().saturating_duration_since(started),
            };
            *state.live_counts.lock().expect("count lock") = Some(made);
            Ok::<_, WebError>(counts)
        };
        match (plan, last) {
            (LiveCountsPlan::CountNow, _) | (_, None) => count(self.clone()).await,
            (LiveCountsPlan::Reuse, Some(last)) => Ok(last.counts),
            (LiveCountsPlan::ReuseAndRecount, Some(last)) => {
                if !self.recounting_live.swap(true, Ordering::SeqCst) {
                    let state = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = count(state.clone()).await {
                            tracing::warn!("web: counting live jobs: {}", e.message());
                        }
                        state.recounting_live.store(false, Ordering::SeqCst);
                    });
                }
                Ok(last.counts)
            }
        }
    }
}

/// Who made a request: the basic-auth user name, `token` for a bearer token, `local`
/// on loopback without auth.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// Why a request failed, as an HTTP status and a message.
#[derive(Debug)]
pub enum WebError {
    NotFound(String),
    BadRequest(String),
    Forbidden(String),
    Conflict(String),
    Internal(String),
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => WebError::NotFound(e.to_string()),
            StoreError::Forbidden(_) | StoreError::InvalidJob(_) => {
                WebError::Conflict(e.to_string())
            }
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            WebError::NotFound(m)
            | WebError::BadRequest(m)
            | WebError::Forbidden(m)
            | WebError::Conflict(m)
            | WebError::Internal(m) => m,
        }
    }
}

/// A running web server.
pub struct WebServer {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    pub address: std::net::SocketAddr,
}

impl WebServer {
    /// Starts the server if `[web] listen` is set: binds now (so a taken port fails the
    /// start), then serves on a thread of its own.
    pub fn start(
        config: &Config,
        client: DaemonClient,
        clock: SharedClock,
    ) -> Result<Option<WebServer>, String> {
        let Some(listen) = config.web.listen else {
            return Ok(None);
        };
        let token = config.web.token().map_err(|e| e.to_string())?;
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("web.listen: cannot listen on {listen}: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("web.listen: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("web.listen: {e}"))?;
        let database = config.daemon.database.clone();
        let pool = Arc::new(ReadPool::new(
            &database,
            READ_CONNECTIONS,
            config.daemon.busy_timeout,
        ));
        let mut secrets = mask::config_secrets(config);
        secrets.extend(token.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let live = live::Live::new(database, config.daemon.busy_timeout, stop_rx.clone());
        let state = Arc::new(WebState {
            pool,
            client,
            clock,
            token,
            actions: config.web.actions,
            csrf_key: random_key()?,
            secrets,
            live,
            succeeded: std::sync::Mutex::new(None),
            recounting: std::sync::atomic::AtomicBool::new(false),
            live_counts: std::sync::Mutex::new(None),
            recounting_live: std::sync::atomic::AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(READ_CONNECTIONS + 2)
            .thread_name("jobd-web-read")
            .build()
            .map_err(|e| format!("web: cannot start its runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("jobd-web".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!("web: {e}");
                            return;
                        }
                    };
                    let watcher = tokio::spawn(live::watch_changes(state.clone()));
                    // Once, at start: the first page would otherwise wait for the full
                    // counts (0.5-0.8 s with a million rows).
                    let first = state.clone();
                    tokio::spawn(async move {
                        let _ = first.succeeded_base().await;
                        let _ = first.live_counts().await;
                    });
                    let mut stop = stop_rx;
                    let app = router(state);
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("web: {e}");
                    }
                    watcher.abort();
                });
                // Event streams end on the stop signal; anything else gets a second.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("web: cannot start its thread: {e}"))?;
        tracing::info!(address = %address, actions = config.web.actions, "web page listening");
        Ok(Some(WebServer {
            stop: Some(stop_tx),
            thread: Some(thread),
            address,
        }))
    }

    /// Stops serving and waits for the thread (open event streams end at once).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn random_key() -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("web: cannot read /dev/urandom for the CSRF key: {e}"))?;
    Ok(key)
}

fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/fragments/overview", get(pages::overview_fragment))
        .route("/jobs", get(pages::jobs))
        .route("/fragments/jobs", get(pages::jobs_fragment))
        .route("/jobs/{id}", get(pages::job))
        .route("/fragments/jobs/{id}", get(pages::job_fragment))
        .route("/dead", get(pages::dead))
        .route("/fragments/dead", get(pages::dead_fragment))
        .route("/queues", get(pages::queues))
        .route("/fragments/queues", get(pages::queues_fragment))
        .route("/bulk", get(actions::bulk_confirm).post(actions::bulk_form))
        .route("/jobs/{id}/retry", post(actions::retry_form))
        .route("/jobs/{id}/cancel", post(actions::cancel_form))
        .route("/events", get(live::events))
        .route("/assets/{name}", get(pages::asset))
        .route("/api/overview", get(api::overview))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/dead", get(api::dead))
        .route("/api/queues", get(api::queues))
        .route("/api/actions", get(api::actions))
        .route("/api/session", get(api::session))
        .route("/api/jobs/{id}/retry", post(actions::retry_api))
        .route("/api/jobs/{id}/cancel", post(actions::cancel_api))
        .route("/api/bulk", post(actions::bulk_api))
        .route("/queues/{queue}/pause", post(actions::pause_form))
        .route("/queues/{queue}/resume", post(actions::resume_form))
        .route("/api/queues/{queue}/pause", post(actions::pause_api))
        .route("/api/queues/{queue}/resume", post(actions::resume_api))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            actions::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every response: the CSP and friends; pages and data are never cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with the page's own
    // form posts, which the same-origin check must refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Bearer token or basic password, compared in constant time; 401 otherwise.
async fn authenticate(
    State(state): State<Arc<WebState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let who = match &state.token {
        None => Some("local".to_string()),
        Some(token) => who_is(request.headers(), token),
    };
    match who {
        Some(who) => {
            request.extensions_mut().insert(Who(who));
            next.run(request).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"jobd\", charset=\"UTF-8\"",
            )],
            "401: a bearer token or the basic-auth password from web.token_file is required\n",
        )
            .into_response(),
    }
}

fn who_is(headers: &HeaderMap, token: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(credentials.trim(), token).then(|| "token".to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        if same(password, token) {
            let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
            return Some(if user.is_empty() {
                "basic".into()
            } else {
                user
            });
        }
    }
    None
}

/// Compares without stopping at the first difference.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_accepted_and_anything_else_is_not() {
        let mut headers = HeaderMap::new();
        assert_eq!(who_is(&headers, "t0ken-xyz"), None);
        headers.insert(header::AUTHORIZATION, "Bearer t0ken-xyz".parse().unwrap());
        assert_eq!(who_is(&headers, "t0ken-xyz").as_deref(), Some("token"));
        headers.insert(header::AUTHORIZATION, "Bearer t0ken-xyZ".parse().unwrap());
        assert_eq!(who_is(&headers, "t0ken-xyz"), None);
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:t0ken-xyz");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(who_is(&headers, "t0ken-xyz").as_deref(), Some("alice"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("alice:nope");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {wrong}").parse().unwrap(),
        );
        assert_eq!(who_is(&headers, "t0ken-xyz"), None);
    }

    #[test]
    fn a_cheap_live_count_is_redone_for_every_page_and_a_costly_one_is_reused() {
        let ms = Duration::from_millis;
        let big = |cost, age| {
            Some(LastLiveCount {
                cost: ms(cost),
                age: ms(age),
                jobs: 100_000,
            })
        };
        assert_eq!(plan_live_counts(None, false), LiveCountsPlan::CountNow);
        // Cheap: exact on every page, however recent the last count.
        assert_eq!(plan_live_counts(big(3, 0), false), LiveCountsPlan::CountNow);
        assert_eq!(
            plan_live_counts(big(CHEAP_LIVE_COUNT.as_millis() as u64, 0), true),
            LiveCountsPlan::CountNow
        );
        // A handful of jobs whose count was slow (a busy machine): still exact.
        let small_but_slow = LastLiveCount {
            cost: ms(400),
            age: ms(0),
            jobs: SMALL_LIVE_COUNT,
        };
        assert_eq!(
            plan_live_counts(Some(small_but_slow), false),
            LiveCountsPlan::CountNow
        );
        assert_eq!(
            plan_live_counts(
                Some(LastLiveCount {
                    jobs: SMALL_LIVE_COUNT + 1,
                    ..small_but_slow
                }),
                false
            ),
            LiveCountsPlan::Reuse
        );
        // 30 ms (100,000 waiting): reused, and recounted every 2 s.
        assert_eq!(
            plan_live_counts(big(30, 1_999), false),
            LiveCountsPlan::Reuse
        );
        assert_eq!(
            plan_live_counts(big(30, 2_000), false),
            LiveCountsPlan::ReuseAndRecount
        );
        // One background count at a time.
        assert_eq!(
            plan_live_counts(big(30, 60_000), true),
            LiveCountsPlan::Reuse
        );
        // 400 ms (a million waiting): at most every 20 x 400 ms, 5% of a core.
        assert_eq!(
            plan_live_counts(big(400, 7_999), false),
            LiveCountsPlan::Reuse
        );
        assert_eq!(
            plan_live_counts(big(400, 8_000), false),
            LiveCountsPlan::ReuseAndRecount
        );
    }
}
