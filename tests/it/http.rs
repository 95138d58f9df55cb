//! The `http` and `notify` kinds against a real HTTP server on 127.0.0.1: classification,
//! Retry-After, timeouts, OAuth2, rate limits, multipart, masking and dead-letter webhooks.

use crate::common::{DaemonRun, InProcessDaemon};
use crate::http_server::{split_multipart, HttpServer, Request, Response};

use jobd::clock::{Clock, ManualClock, SharedClock, SystemClock};
use jobd::config::Config;
use jobd::handlers::http::Http;
use jobd::handlers::notify::Notify;
use jobd::handlers::{Handler, Registry};
use jobd::job::{JobId, JobState, NewJob};
use jobd::store::Attempt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---- a scripted server ----

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }
    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: HttpServer,
}

impl Server {
    /// Answers with `script(request, n)`, n counting requests from 0. At most `threads`
    /// requests are answered at once (each connection has its own thread; the rest wait).
    fn start(
        threads: usize,
        script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let permits = Arc::new((Mutex::new(threads.max(1)), std::sync::Condvar::new()));
        let recorded = seen.clone();
        let handler = move |request: Request| {
            let (lock, freed) = &*permits;
            let mut free = freed
                .wait_while(lock.lock().unwrap(), |free| *free == 0)
                .unwrap();
            *free -= 1;
            drop(free);
            let record = Seen {
                at: request.at,
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = script(&record, n);
            recorded.lock().unwrap().push(record);
            // A slow peer on purpose (zero unless a test scripts it): the timeout tests.
            std::thread::sleep(answer.delay);
            *lock.lock().unwrap() += 1;
            freed.notify_one();
            Response {
                status: answer.status,
                headers: answer.headers,
                body: answer.body.into_bytes(),
            }
        };
        let server = HttpServer::start(Arc::new(handler));
        Server {
            base: server.base.clone(),
            seen,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.url.starts_with(path))
            .collect()
    }
}

// ---- a daemon around one test ----

fn setup(workers: usize, extra: &str) -> InProcessDaemon {
    InProcessDaemon::new(
        &format!("workers = {workers}\nsynchronous = \"normal\""),
        &format!("[retry]\nbase = \"100ms\"\nfactor = 2.0\njitter = 0.0\ncap = \"10s\"\nmax_attempts = 5\n{extra}"),
    )
}

/// One `--once` run with `registry` on `clock`: the jobs are in the table before it starts.
fn once_on(registry: Registry, clock: SharedClock) -> DaemonRun {
    DaemonRun {
        registry,
        clock,
        once: true,
        ..DaemonRun::default()
    }
}

/// A job's state, last error and attempts.
fn outcome(s: &InProcessDaemon, id: JobId) -> (JobState, Option<String>, Vec<Attempt>) {
    let job = s.job(id);
    (job.state, job.last_error, s.attempts(id))
}

fn endpoint(server: &Server, extra: &str) -> String {
    format!("[endpoints.api]\nbase_url = \"{}\"\n{extra}\n", server.base)
}

fn post(path: &str, body: Value) -> NewJob {
    NewJob::new(
        "http",
        json!({"endpoint": "api", "path": path, "json": body}),
    )
}

fn gap_ms(attempts: &[Attempt], n: usize) -> i64 {
    attempts[n + 1].started_at - attempts[n].finished_at
}

// ---- classification ----

#[test]
fn success_sends_the_body_the_token_and_an_idempotency_key() {
    let server = Server::start(2, |_, _| reply(201).body("{\"ok\":true}"));
    std::env::set_var("JOBD_IT_HTTP_TOKEN", "tok-success-1234");
    let s = setup(
        2,
        &endpoint(&server, "headers = { \"X-Tenant\" = \"t1\" }\n[endpoints.api.auth]\ntype = \"bearer\"\ntoken_env = \"JOBD_IT_HTTP_TOKEN\""),
    );
    let ids = s.run(vec![
        post("/usage", json!({"records": [1, 2, 3]})),
        post("/usage", json!({"records": [4]})).unique_key("batch-7"),
    ]);
    let seen = server.seen_at("/usage");
    assert_eq!(seen.len(), 2);
    let first = seen
        .iter()
        .find(|r| r.json()["records"] == json!([1, 2, 3]))
        .unwrap();
    assert_eq!(first.method, "POST");
    assert_eq!(
        first.header("Authorization"),
        Some("Bearer tok-success-1234")
    );
    assert_eq!(first.header("X-Tenant"), Some("t1"));
    assert_eq!(first.header("Content-Type"), Some("application/json"));
    assert_eq!(
        first.header("Idempotency-Key").unwrap().len(),
        64,
        "sha-256 hex"
    );
    let second = seen
        .iter()
        .find(|r| r.json()["records"] == json!([4]))
        .unwrap();
    assert_eq!(second.header("Idempotency-Key"), Some("batch-7"));
    for id in ids {
        let (state, _, attempts) = outcome(&s, id);
        assert_eq!(state, JobState::Succeeded);
        let detail = attempts[0].detail.clone().unwrap();
        assert_eq!(detail["status"], 201);
        assert!(detail["duration_ms"].is_u64());
        assert_eq!(detail["error"], Value::Null);
    }
}

#[test]
fn conflict_409_counts_as_a_duplicate_success() {
    let server = Server::start(1, |_, _| reply(409).body("already have it"));
    let s = setup(1, &endpoint(&server, ""));
    let ids = s.run(vec![post("/usage", json!({}))]);
    let (state, _, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(attempts.len(), 1);
    let detail = attempts[0].detail.clone().unwrap();
    assert_eq!(detail["status"], 409);
    assert_eq!(detail["duplicate"], true);
}

#[test]
fn server_errors_are_retried_with_the_backoff_then_succeed() {
    let server = Server::start(1, |_, n| {
        if n < 2 {
            reply(500).body("db down")
        } else {
            reply(200)
        }
    });
    let s = setup(1, &endpoint(&server, ""));
    let ids = s.run(vec![post("/usage", json!({}))]);
    let (state, _, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].outcome, "retry");
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("HTTP 500 Internal Server Error"));
    assert!(attempts[0].error.as_deref().unwrap().contains("db down"));
    // base 100ms, factor 2, no jitter: waits of 100ms then 200ms (the dispatcher may add
    // a little, never take any off).
    let (first, second) = (gap_ms(&attempts, 0), gap_ms(&attempts, 1));
    assert!((100..600).contains(&first), "first wait {first}ms");
    assert!((200..700).contains(&second), "second wait {second}ms");
}

#[test]
fn retry_after_is_honoured_in_seconds_and_as_an_http_date() {
    // One job per form; each answers 429 once, then 200.
    let count = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let c = count.clone();
    let server = Server::start(2, move |seen, _| {
        let mut map = c.lock().unwrap();
        let n = map.entry(seen.url.clone()).or_default();
        *n += 1;
        match (*n, seen.url.as_str()) {
            (1, "/seconds") => reply(429).header("Retry-After", "1"),
            (1, _) => {
                let at = std::time::SystemTime::now() + Duration::from_secs(2);
                reply(503).header("Retry-After", &httpdate::fmt_http_date(at))
            }
            _ => reply(200),
        }
    });
    let s = setup(2, &endpoint(&server, ""));
    let ids = s.run(vec![post("/seconds", json!({})), post("/date", json!({}))]);
    for id in ids {
        let (state, _, attempts) = outcome(&s, id);
        assert_eq!(state, JobState::Succeeded);
        assert_eq!(attempts.len(), 2);
        let hinted = attempts[0].detail.clone().unwrap()["retry_after_ms"]
            .as_u64()
            .unwrap();
        assert!(hinted >= 1000, "retry_after_ms {hinted}");
        // The backoff alone would be 100ms; the hint wins.
        assert!(
            gap_ms(&attempts, 0) >= 950,
            "waited {}ms",
            gap_ms(&attempts, 0)
        );
        assert!(attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("Retry-After"));
    }
}

#[test]
fn client_errors_are_dead_at_once_with_status_and_a_bounded_body() {
    let long = "x".repeat(5000);
    let server = Server::start(2, move |seen, _| {
        let status: u16 = seen.url.trim_start_matches('/').parse().unwrap();
        reply(status).body(format!("reason-{status} {long}"))
    });
    let s = setup(2, &endpoint(&server, ""));
    let jobs = ["/400", "/401", "/403", "/404"]
        .map(|p| post(p, json!({})))
        .to_vec();
    let ids = s.run(jobs);
    for (id, status) in ids.into_iter().zip([400, 401, 403, 404]) {
        let (state, error, attempts) = outcome(&s, id);
        assert_eq!(state, JobState::Dead, "{status}");
        assert_eq!(attempts.len(), 1, "{status} was retried");
        let error = error.unwrap();
        assert!(error.starts_with(&format!("HTTP {status} ")), "{error}");
        assert!(error.contains(&format!("reason-{status}")), "{error}");
        assert!(error.len() < 2048 + 200, "error is {} bytes", error.len());
        assert_eq!(attempts[0].detail.clone().unwrap()["status"], status);
    }
    assert_eq!(server.seen().len(), 4);
}

#[test]
fn a_slow_answer_times_out_and_is_retried() {
    let server = Server::start(4, |_, _| reply(200).delay(Duration::from_millis(1500)));
    let s = setup(1, &endpoint(&server, "timeout = \"200ms\""));
    let started = Instant::now();
    let ids = s.run(vec![post("/slow", json!({})).max_attempts(2)]);
    let (state, error, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Dead);
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "retry");
    let error = error.unwrap();
    assert!(
        error.contains("attempts exhausted (2/2)") && error.contains("timed out"),
        "{error}"
    );
    assert!(
        attempts[0].duration_ms < 1000,
        "{}ms",
        attempts[0].duration_ms
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_refused_connection_is_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let s = setup(
        1,
        &format!("[endpoints.api]\nbase_url = \"http://127.0.0.1:{port}\"\n"),
    );
    let ids = s.run(vec![post("/x", json!({})).max_attempts(2)]);
    let (state, error, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Dead);
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "retry");
    let error = error.unwrap();
    assert!(error.contains("could not connect"), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert_eq!(attempts[0].detail.clone().unwrap()["status"], Value::Null);
}

// ---- OAuth2 ----

#[test]
fn oauth2_token_is_fetched_once_for_many_jobs_and_refreshed_on_expiry_and_401() {
    let issued = Arc::new(AtomicUsize::new(0));
    let revoked = Arc::new(AtomicUsize::new(0));
    let (i, r) = (issued.clone(), revoked.clone());
    let server = Server::start(8, move |seen, _| {
        if seen.url == "/token" {
            let body = String::from_utf8_lossy(&seen.body).to_string();
            assert!(body.contains("grant_type=client_credentials"), "{body}");
            assert!(body.contains("client_secret=oauth-secret-5678"), "{body}");
            assert!(body.contains("scope=usage"), "{body}");
            let n = i.fetch_add(1, Ordering::SeqCst) + 1;
            // Slow, so concurrent jobs really do wait for the one fetch.
            return reply(200)
                .body(json!({"access_token": format!("access-{n}"), "expires_in": 3600, "token_type": "bearer"}).to_string())
                .delay(Duration::from_millis(200));
        }
        let token = seen.header("Authorization").unwrap_or("").to_string();
        let revoked_up_to = r.load(Ordering::SeqCst);
        let n: usize = token
            .trim_start_matches("Bearer access-")
            .parse()
            .unwrap_or(0);
        if n == 0 || n <= revoked_up_to {
            reply(401).body("token expired")
        } else {
            reply(200)
        }
    });
    std::env::set_var("JOBD_IT_OAUTH_SECRET", "oauth-secret-5678");
    let s = setup(
        8,
        &endpoint(
            &server,
            &format!(
                "[endpoints.api.auth]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"{}/token\"\nclient_id = \"jobd\"\nclient_secret_env = \"JOBD_IT_OAUTH_SECRET\"\nparams = {{ scope = \"usage\" }}",
                server.base
            ),
        ),
    );
    // One Http shared by every run, as in one daemon process; the clock is by hand.
    let http = Http::new();
    let registry = || {
        let mut r = Registry::builtin();
        r.register("http", Arc::new(http.clone()));
        r.register("notify", Arc::new(Notify { http: http.clone() }));
        r
    };
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let batch = |n: usize, tag: &str| {
        (0..n)
            .map(|i| post("/data", json!({"tag": tag, "i": i})))
            .collect::<Vec<_>>()
    };
    let ids = s.run_with(batch(50, "first"), once_on(registry(), clock.clone()));
    assert_eq!(issued.load(Ordering::SeqCst), 1, "one fetch for 50 jobs");
    assert_eq!(http.token_fetches("api"), 1);
    for id in &ids {
        assert_eq!(outcome(&s, *id).0, JobState::Succeeded);
    }

    // An hour later the token is past its refresh time: one new fetch.
    clock.advance(Duration::from_secs(3600));
    let ids = s.run_with(batch(10, "later"), once_on(registry(), clock.clone()));
    assert_eq!(issued.load(Ordering::SeqCst), 2, "refreshed on expiry");
    assert!(ids
        .iter()
        .all(|id| outcome(&s, *id).0 == JobState::Succeeded));

    // The server revokes access-2 early: the 401 refreshes once and the request is resent.
    revoked.store(2, Ordering::SeqCst);
    let ids = s.run_with(batch(1, "revoked"), once_on(registry(), clock.clone()));
    assert_eq!(issued.load(Ordering::SeqCst), 3, "refreshed on 401");
    let (state, _, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].detail.clone().unwrap()["token_refreshed"], true);

    // A 401 that survives the refresh is dead, after exactly one refresh.
    revoked.store(usize::MAX, Ordering::SeqCst);
    let ids = s.run_with(batch(1, "refused"), once_on(registry(), clock.clone()));
    assert_eq!(issued.load(Ordering::SeqCst), 4);
    let (state, error, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Dead);
    assert_eq!(attempts.len(), 1);
    assert!(error.unwrap().starts_with("HTTP 401"));
}

// ---- rate limit ----

#[test]
fn a_rate_limit_holds_across_workers() {
    let server = Server::start(4, |_, _| reply(200));
    let s = setup(4, &endpoint(&server, "rate_limit = \"2/s\"\nburst = 1"));
    let jobs = (0..7).map(|i| post("/r", json!({"i": i}))).collect();
    s.run(jobs);
    let mut arrivals: Vec<Instant> = server.seen().iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 7);
    for (i, at) in arrivals.iter().enumerate() {
        let since = at.duration_since(arrivals[0]).as_millis() as i64;
        // The i-th request may not arrive before i × 500ms (a little slack for the
        // server's own clock read, none for the limiter).
        assert!(
            since >= i as i64 * 500 - 30,
            "request {i} arrived {since}ms after the first"
        );
    }
    let total = arrivals[6].duration_since(arrivals[0]);
    assert!(total < Duration::from_millis(4500), "too slow: {total:?}");
}

// ---- multipart ----

#[test]
fn multipart_upload_arrives_intact() {
    let server = Server::start(1, |_, _| reply(200));
    let s = setup(1, &endpoint(&server, ""));
    let set = s.data().join("output/20250101");
    std::fs::create_dir_all(&set).unwrap();
    let csv: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("{i},user-{i},\u{e9}l\u{e8}ve\r\n").into_bytes())
        .collect();
    std::fs::write(set.join("users.csv"), &csv).unwrap();
    let metadata = json!({"files": {"users.csv": {"sha256": hex(&csv), "records": 20000}}});
    let job = NewJob::new(
        "http",
        json!({"endpoint": "api", "path": "/upload", "multipart": [
            {"name": "file", "file": "output/20250101/users.csv", "content_type": "text/csv"},
            {"name": "metadata", "json": metadata, "filename": "metadata.json"},
        ]}),
    );
    let ids = s.run(vec![job]);
    assert_eq!(outcome(&s, ids[0]).0, JobState::Succeeded);
    let request = &server.seen_at("/upload")[0];
    let content_type = request.header("Content-Type").unwrap();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"');
    let parts = split_multipart(&request.body, boundary);
    assert_eq!(parts.len(), 2);
    let (headers, file) = &parts[0];
    assert!(
        headers.contains("name=\"file\"") && headers.contains("filename=\"users.csv\""),
        "{headers}"
    );
    assert!(
        headers.to_lowercase().contains("content-type: text/csv"),
        "{headers}"
    );
    assert_eq!(hex(file), hex(&csv), "the file arrived intact");
    let (headers, meta) = &parts[1];
    assert!(
        headers
            .to_lowercase()
            .contains("content-type: application/json"),
        "{headers}"
    );
    let meta: Value = serde_json::from_slice(meta).unwrap();
    assert_eq!(meta, metadata);
    assert_eq!(meta["files"]["users.csv"]["sha256"], hex(file));
}

/// Several bodies in one file, each job sending its own byte range (how csv_import's
/// batches share one bodies file); a range past the end of the file is dead, not sent
/// short.
#[test]
fn byte_ranges_of_one_body_file_are_sent_exactly() {
    let server = Server::start(1, |_, _| reply(200));
    let s = setup(1, &endpoint(&server, ""));
    let dir = s.data().join("spool/bodies");
    std::fs::create_dir_all(&dir).unwrap();
    let parts: [&[u8]; 3] = [b"[{\"a\":1}]", "[{\"名前\":\"山田\"}]".as_bytes(), b"[]"];
    std::fs::write(dir.join("all.bodies"), parts.concat()).unwrap();
    let range = |path: &str, offset: usize, len: usize| {
        NewJob::new(
            "http",
            json!({"endpoint": "api", "path": path, "body_file": "spool/bodies/all.bodies",
                   "body_offset": offset, "body_len": len, "content_type": "application/json"}),
        )
    };
    let (a, b) = (parts[0].len(), parts[1].len());
    let mut jobs = vec![
        range("/p0", 0, a),
        range("/p1", a, b),
        range("/p2", a + b, parts[2].len()),
        range("/past-the-end", a + b, parts[2].len() + 1),
    ];
    // An offset alone sends the rest of the file.
    jobs.push(NewJob::new(
        "http",
        json!({"endpoint": "api", "path": "/rest", "body_file": "spool/bodies/all.bodies",
               "body_offset": a}),
    ));
    let ids = s.run(jobs);
    for (i, path) in ["/p0", "/p1", "/p2"].iter().enumerate() {
        let seen = server.seen_at(path);
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].body, parts[i], "{path}");
        assert_eq!(
            seen[0].header("Content-Length"),
            Some(&*parts[i].len().to_string())
        );
        assert_eq!(seen[0].header("Content-Type"), Some("application/json"));
        assert_eq!(outcome(&s, ids[i]).0, JobState::Succeeded);
    }
    assert_eq!(
        server.seen_at("/rest")[0].body,
        [parts[1], parts[2]].concat()
    );
    let (state, error, _) = outcome(&s, ids[3]);
    assert_eq!(state, JobState::Dead);
    let error = error.unwrap();
    assert!(error.contains("past its end"), "{error}");
    assert!(server.seen_at("/past-the-end").is_empty());
    // A range without a file is refused when enqueued.
    let err = Http::new()
        .validate(
            &json!({"endpoint": "api", "path": "/x", "json": {}, "body_offset": 1}),
            &s.config,
        )
        .unwrap_err();
    assert_eq!(err.field, "body_file");
    assert!(err.to_string().contains("go with body_file"), "{err}");
}

fn hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

// ---- dead letters and masking ----

#[test]
fn a_dead_job_sends_one_webhook_with_its_facts() {
    let server = Server::start(2, |seen, _| {
        if seen.url == "/hook" {
            reply(200)
        } else {
            reply(422).body("bad record 17")
        }
    });
    let s = setup(
        2,
        &format!("{}\n[endpoints.alerts]\nbase_url = \"{}\"\n[notify]\nendpoint = \"alerts\"\npath = \"/hook\"\n", endpoint(&server, ""), server.base),
    );
    let ids = s.run(vec![
        post("/usage", json!({})).source("watch:/in/batch-1.json")
    ]);
    assert_eq!(outcome(&s, ids[0]).0, JobState::Dead);
    let hooks = server.seen_at("/hook");
    assert_eq!(hooks.len(), 1);
    let message = hooks[0].json();
    assert_eq!(message["job_id"], ids[0]);
    assert_eq!(message["kind"], "http");
    assert_eq!(message["queue"], "default");
    assert_eq!(message["attempts"], 1);
    assert_eq!(message["source"], "watch:/in/batch-1.json");
    assert!(message["last_error"].as_str().unwrap().contains("HTTP 422"));
    assert!(message["last_error"]
        .as_str()
        .unwrap()
        .contains("bad record 17"));
    assert!(
        message["first_attempt_at"].as_str().unwrap().ends_with('Z'),
        "{message}"
    );
    assert!(message["text"]
        .as_str()
        .unwrap()
        .contains(&format!("job {}", ids[0])));
}

#[test]
fn a_notification_that_dies_does_not_notify_again() {
    let server = Server::start(2, |_, _| reply(400).body("nope"));
    let s = setup(
        2,
        &format!(
            "{}\n[notify]\nendpoint = \"api\"\npath = \"/hook\"\n",
            endpoint(&server, "")
        ),
    );
    s.run(vec![post("/usage", json!({}))]);
    // The job, then its notification; the notification's death sends nothing more.
    assert_eq!(server.seen_at("/usage").len(), 1);
    assert_eq!(server.seen_at("/hook").len(), 1);
    assert_eq!(s.db().stats(0).unwrap().total(JobState::Dead), 2);
}

#[test]
fn secrets_never_reach_logs_errors_show_or_notifications() {
    const TOKEN: &str = "tok-MASKME-9f8e7d";
    // A hostile server echoes the Authorization header in its error body.
    let server = Server::start(2, |seen, _| {
        if seen.url == "/hook" {
            return reply(200);
        }
        let auth = seen.header("Authorization").unwrap_or("").to_string();
        reply(400).body(format!("rejected credentials: {auth}"))
    });
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("jobd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/s.sock\"\n\
             [endpoints.api]\nbase_url = \"{base}\"\n[endpoints.api.auth]\ntype = \"bearer\"\ntoken_file = \"$CREDENTIALS_DIRECTORY/api-token\"\n\
             [endpoints.alerts]\nbase_url = \"{base}\"\n[notify]\nendpoint = \"alerts\"\npath = \"/hook\"\n",
            db = dir.path().join("jobs.db").display(),
            data = dir.path().join("data").display(),
            base = server.base
        ),
    )
    .unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("api-token"), format!("{TOKEN}\n")).unwrap();
    let jobctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    jobctl(&["migrate"]);
    jobctl(&[
        "enqueue",
        "http",
        "--payload",
        r#"{"endpoint": "api", "path": "/x?api_key=also-secret", "json": {}}"#,
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobd"))
        .arg("--config")
        .arg(&config_path)
        .arg("--once")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("is dead"), "the dead job is logged: {logs}");
    assert!(
        logs.contains("rejected credentials: Bearer ***"),
        "the error is logged masked"
    );
    assert!(!logs.contains("MASKME"), "token in the logs:\n{logs}");
    let show = jobctl(&["show", "1"]);
    assert!(show.contains("Bearer ***"), "{show}");
    assert!(!show.contains("MASKME"), "{show}");
    let show_json = jobctl(&["--json", "show", "1"]);
    assert!(!show_json.contains("MASKME"), "{show_json}");
    let hooks = server.seen_at("/hook");
    assert_eq!(hooks.len(), 1);
    let message = String::from_utf8_lossy(&hooks[0].body).into_owned();
    assert!(
        message.contains("Bearer ***") && !message.contains("MASKME"),
        "{message}"
    );
    // The request itself did carry the token.
    assert!(server.seen_at("/x")[0]
        .header("Authorization")
        .unwrap()
        .contains("MASKME"));
}

#[test]
fn a_missing_secret_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("jobd.toml");
    std::fs::write(
        &config_path,
        format!(
            "[daemon]\ndatabase = \"{}/jobs.db\"\n[endpoints.api]\nbase_url = \"https://api.example.com\"\n[endpoints.api.auth]\ntype = \"bearer\"\ntoken_env = \"JOBD_IT_NEVER_SET\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobd"))
        .arg("--config")
        .arg(&config_path)
        .arg("--once")
        .env_remove("JOBD_IT_NEVER_SET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "endpoints.api.auth.token_env: the environment variable JOBD_IT_NEVER_SET is not set"
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("jobs.db").exists());
}

// ---- idempotency keys ----

#[test]
fn only_methods_that_change_state_carry_an_idempotency_key() {
    let server = Server::start(4, |_, _| reply(200));
    let methods = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"];
    let job = |endpoint: &str, method: &str| {
        NewJob::new(
            "http",
            json!({"endpoint": endpoint, "method": method, "path": format!("/{endpoint}/{method}")}),
        )
        .unique_key(format!("{endpoint}-{method}"))
    };
    let s = setup(
        2,
        &format!(
            "{}[endpoints.puts]\nbase_url = \"{}\"\nidempotency_methods = [\"POST\", \"PUT\", \"DELETE\"]\n",
            endpoint(&server, ""),
            server.base
        ),
    );
    let jobs: Vec<NewJob> = ["api", "puts"]
        .iter()
        .flat_map(|e| methods.iter().map(move |m| job(e, m)))
        .collect();
    let ids = s.run(jobs);
    let keyed = |endpoint: &str| -> Vec<String> {
        let mut keyed: Vec<String> = server
            .seen_at(&format!("/{endpoint}/"))
            .iter()
            .filter_map(|r| {
                let key = r.header("Idempotency-Key")?;
                assert_eq!(
                    key,
                    format!("{endpoint}-{}", r.method),
                    "the job's unique key"
                );
                Some(r.method.clone())
            })
            .collect();
        keyed.sort();
        keyed
    };
    assert_eq!(server.seen().len(), 12);
    assert_eq!(keyed("api"), ["PATCH", "POST"], "the default");
    assert_eq!(keyed("puts"), ["DELETE", "POST", "PUT"], "as configured");
    // The attempt's detail has the key only when it was sent.
    let detail = |id: JobId| outcome(&s, id).2[0].detail.clone().unwrap();
    assert_eq!(detail(ids[0])["idempotency_key"], Value::Null, "GET");
    assert_eq!(detail(ids[1])["idempotency_key"], "api-POST");

    let refused = Config::from_toml(
        &format!(
            "[endpoints.x]\nbase_url = \"{}\"\nidempotency_methods = [\"GET\"]\n",
            server.base
        ),
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains(
            "endpoints.x.idempotency_methods: 'GET' is not one of POST, PATCH, PUT, DELETE"
        ),
        "{refused}"
    );
}

// ---- masking what the other side echoes ----

/// A server that echoes what it received: the Authorization header as is, its Basic
/// credentials decoded, and every header base64-encoded, with `status`.
fn echo_server(status: u16) -> Server {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    Server::start(2, move |r, _| {
        let auth = r.header("Authorization").unwrap_or("").to_string();
        let decoded = auth
            .strip_prefix("Basic ")
            .and_then(|c| b64.decode(c).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: String = r
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        reply(status).body(
            json!({"authorization": auth, "decoded": decoded, "headers_b64": b64.encode(all)})
                .to_string(),
        )
    })
}

#[test]
fn secrets_a_server_echoes_even_base64_encoded_are_masked_when_stored_and_shown() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let token = "tok-echo-8f3a91c2d4";
    let password = "pa55word-echo-77";
    std::env::set_var("JOBD_IT_ECHO_TOKEN", token);
    let dead = echo_server(400);
    let ok = echo_server(200);
    let s = setup(
        1,
        &format!(
            "[endpoints.bearer]\nbase_url = \"{}\"\n[endpoints.bearer.auth]\ntype = \"bearer\"\ntoken_env = \"JOBD_IT_ECHO_TOKEN\"\n\
             [endpoints.plain]\nbase_url = \"{}\"\n[endpoints.recorded]\nbase_url = \"{}\"\n",
            dead.base, dead.base, ok.base
        ),
    );
    // A payload that brings its own Basic credentials.
    let basic = format!("Basic {}", b64.encode(format!("alice:{password}")));
    let ids = s.run(vec![
            NewJob::new("http", json!({"endpoint": "bearer", "path": "/a", "json": {}})),
            NewJob::new(
                "http",
                json!({"endpoint": "plain", "path": "/b", "json": {}, "headers": {"Authorization": basic}}),
            ),
            NewJob::new(
                "http",
                json!({"endpoint": "recorded", "path": "/c", "json": {}, "headers": {"authorization": basic},
                       "record": ["authorization", "decoded", "headers_b64"]}),
            ),
        ],
    );
    assert_eq!(dead.seen().len(), 2, "both were sent");
    let echoed = dead.seen()[0].header("Authorization").unwrap().to_string();
    assert!(echoed.contains(token), "the server did receive the token");
    let forbidden = [
        token.to_string(),
        password.to_string(),
        b64.encode(token),
        b64.encode(format!("alice:{password}")),
        b64.encode(format!("Bearer {token}")),
    ];
    let check = |what: &str, text: &str| {
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows {secret}: {text}"
            );
        }
        // Base64 of a header block hides a secret at any offset: no 8-character run of
        // any of its three encodings may remain.
        for shift in 0..3 {
            let mut bytes = vec![b'x'; shift];
            bytes.extend_from_slice(token.as_bytes());
            let encoded = b64.encode(&bytes);
            let core = &encoded[4..encoded.len() - 4];
            assert!(
                !text.contains(core),
                "{what} shows the token encoded: {text}"
            );
        }
    };
    for id in &ids[..2] {
        let (state, error, attempts) = outcome(&s, *id);
        assert_eq!(state, JobState::Dead);
        let error = error.unwrap();
        assert!(
            error.starts_with("HTTP 400 Bad Request from POST "),
            "{error}"
        );
        assert!(error.contains("***"), "{error}");
        check("last_error", &error);
        check("attempt", &serde_json::to_string(&attempts).unwrap());
    }
    let (state, _, attempts) = outcome(&s, ids[2]);
    assert_eq!(state, JobState::Succeeded);
    let recorded = &attempts[0].detail.as_ref().unwrap()["recorded"];
    assert_eq!(recorded["authorization"], "***");
    assert_eq!(recorded["decoded"], "***");
    check("recorded", &recorded.to_string());

    // jobctl show, as text and as JSON, masks the payload's own Authorization header.
    for id in &ids[1..] {
        for json_flag in [&[][..], &["--json"][..]] {
            let out = std::process::Command::new(crate::common::JOBCTL)
                .arg("--db")
                .arg(&s.config.daemon.database)
                .args(json_flag)
                .args(["show", &id.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let shown = String::from_utf8(out.stdout).unwrap();
            check("jobctl show", &shown);
            assert!(!shown.contains("Basic "), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}

// ---- secret base URLs ----

#[test]
fn a_base_url_from_the_environment_or_a_file_is_used_and_masked_everywhere() {
    // A webhook whose URL is the secret: it answers 404 and echoes the path it got.
    let hook = Server::start(2, |r, _| {
        reply(404).body(format!(
            "no such hook: {} ({})",
            r.url,
            r.header("Host").unwrap_or("")
        ))
    });
    // The dead-letter webhook, its URL from a file.
    let alerts = Server::start(2, |_, _| reply(200));
    let hook_url = format!("{}/services/T0SECRET/B0SECRET/xoxSecretPart", hook.base);
    std::env::set_var("JOBD_IT_HOOK_URL", &hook_url);
    let alerts_file = tempfile::NamedTempFile::new().unwrap();
    let alerts_url = format!("{}/hooks/alerts-secret-7781", alerts.base);
    std::fs::write(alerts_file.path(), format!("{alerts_url}\n")).unwrap();
    let text = format!(
        "[endpoints.hook]\nbase_url_env = \"JOBD_IT_HOOK_URL\"\n\
         [endpoints.alerts]\nbase_url_file = \"{}\"\n[notify]\nendpoint = \"alerts\"\n",
        alerts_file.path().display()
    );
    let s = setup(1, &text);
    std::fs::write(
        s.dir.path().join("jobd.toml"),
        format!(
            "[daemon]\ndatabase = \"{}\"\n{text}",
            s.config.daemon.database.display()
        ),
    )
    .unwrap();
    let ids = s.run(vec![NewJob::new(
        "http",
        json!({"endpoint": "hook", "path": "/x", "json": {"text": "hi"}}),
    )]);
    assert_eq!(
        hook.seen()[0].url,
        "/services/T0SECRET/B0SECRET/xoxSecretPart/x",
        "sent to the secret URL"
    );
    let notified = alerts.seen();
    assert_eq!(notified.len(), 1);
    assert_eq!(
        notified[0].url, "/hooks/alerts-secret-7781",
        "the file's URL, line end trimmed"
    );

    let secrets = ["T0SECRET", "xoxSecretPart", "alerts-secret-7781"];
    let check = |what: &str, text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}: {text}");
        }
    };
    let (state, error, attempts) = outcome(&s, ids[0]);
    assert_eq!(state, JobState::Dead);
    let error = error.unwrap();
    assert_eq!(
        error,
        format!(
            "HTTP 404 Not Found from POST ***/x: no such hook: ***/x ({})",
            hook.base.trim_start_matches("http://")
        )
    );
    check("attempts", &serde_json::to_string(&attempts).unwrap());
    assert_eq!(attempts[0].detail.as_ref().unwrap()["url"], "***/x");
    check("notification", &String::from_utf8_lossy(&notified[0].body));
    let notify_jobs = s
        .db()
        .list(&jobd::store::JobFilter {
            kind: Some("notify".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    for job in &notify_jobs {
        check(
            "notify job",
            &serde_json::to_string(&outcome(&s, job.id).2).unwrap(),
        );
    }
    for args in [&["show"][..], &["--json", "show"][..]] {
        for id in std::iter::once(ids[0]).chain(notify_jobs.iter().map(|j| j.id)) {
            let out = std::process::Command::new(crate::common::JOBCTL)
                .arg("--config")
                .arg(s.dir.path().join("jobd.toml"))
                .args(args)
                .arg(id.to_string())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            check("jobctl show", &String::from_utf8_lossy(&out.stdout));
        }
    }
}

#[test]
fn a_secret_base_url_is_checked_without_showing_it() {
    let config = |endpoint: &str| {
        Config::from_toml(&format!("[endpoints.hook]\n{endpoint}\n"), "test")
            .map_err(|e| e.to_string())
    };
    let both = config("base_url = \"https://a.example\"\nbase_url_env = \"X\"").unwrap_err();
    assert!(
        both.contains(
            "endpoints.hook: give exactly one of base_url, base_url_env and base_url_file"
        ),
        "{both}"
    );
    let none = config("timeout = \"5s\"").unwrap_err();
    assert!(none.contains("give exactly one of"), "{none}");
    // Checked when the secrets are read (start, reload, --check-config), never shown.
    std::env::set_var(
        "JOBD_IT_PLAIN_HOOK",
        "http://hooks.example.com/services/SECRETPATH",
    );
    let plain = config("base_url_env = \"JOBD_IT_PLAIN_HOOK\"").unwrap();
    let err = plain.check_secrets().unwrap_err().to_string();
    assert!(err.starts_with("endpoints.hook.base_url_env: "), "{err}");
    assert!(
        err.contains("http:// to a non-loopback host is refused"),
        "{err}"
    );
    assert!(!err.contains("SECRETPATH"), "{err}");
    let unset = config("base_url_env = \"JOBD_IT_UNSET_HOOK\"").unwrap();
    assert_eq!(
        unset.check_secrets().unwrap_err().to_string(),
        "endpoints.hook.base_url_env: the environment variable JOBD_IT_UNSET_HOOK is not set"
    );
    // A payload may not carry the URL itself.
    let refused = Registry::builtin()
        .validate(
            &NewJob::new(
                "http",
                json!({"endpoint": "hook", "url": "http://hooks.example.com/services/SECRETPATH"}),
            ),
            &plain,
        )
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("url is refused for endpoint 'hook', whose base URL is a secret"),
        "{refused}"
    );
    Registry::builtin()
        .validate(
            &NewJob::new("http", json!({"endpoint": "hook", "path": "/x"})),
            &plain,
        )
        .unwrap();
}
