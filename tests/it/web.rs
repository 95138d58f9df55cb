//! The web page through the real jobd binary over HTTP: every page and API route for a
//! database with jobs in every state, auth, the actions switch, same-origin and CSRF
//! checks, and a retry that is recorded where `jobctl show` finds it. The checks that
//! hold for every driver are functions of a [`WebDaemon`]; `web_pg.rs` runs them on
//! PostgreSQL.

use crate::common::{stdout, wait_until, Sandbox};
use jobd::job::{Completion, JobId, NewJob, Resolution};
use jobd::store::{Applied, ClaimSpec};
use reqwest::blocking::{Client, Response};
use reqwest::header;
use serde_json::{json, Value};
use std::process::Child;
use std::time::Duration;

pub const WEB_TOKEN: &str = "web-t0ken-secret-42";
/// An endpoint's secret that a dead job's error happens to contain.
pub const ENDPOINT_SECRET: &str = "endpoint-secret-5678";
/// A payload field whose name says it is a secret.
pub const PAYLOAD_SECRET: &str = "tok-SECRET-1234";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with the web page on, and the ids of its seeded jobs.
pub struct WebDaemon {
    pub sandbox: Sandbox,
    pub daemon: Child,
    pub base: String,
    pub client: Client,
    pub ids: Seeded,
    /// Whether requests carry the bearer token.
    pub auth: bool,
    /// The PostgreSQL database the daemon uses, if not the sandbox's SQLite file;
    /// dropped after the sandbox (and its daemon).
    _postgres: Option<crate::pg::TestDb>,
}

#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub parent: JobId,
    pub child: JobId,
    pub queued: JobId,
    pub cancelled: JobId,
    pub dead: JobId,
    pub retrying: JobId,
    pub succeeded: JobId,
    pub running: JobId,
}

impl WebDaemon {
    /// `actions`: `[web] actions`; `auth`: a token file (else loopback without auth).
    pub fn start(actions: bool, auth: bool, extra: &str) -> WebDaemon {
        WebDaemon::start_on(None, actions, auth, extra)
    }

    /// [`WebDaemon::start`] on a PostgreSQL database of its own, or None (printed) when
    /// no server answers outside CI.
    pub fn start_on_postgres(
        test: &str,
        actions: bool,
        auth: bool,
        extra: &str,
    ) -> Option<WebDaemon> {
        let db = crate::pg::TestDb::create(test)?;
        Some(WebDaemon::start_on(Some(db), actions, auth, extra))
    }

    fn start_on(
        postgres: Option<crate::pg::TestDb>,
        actions: bool,
        auth: bool,
        extra: &str,
    ) -> WebDaemon {
        let port = free_port();
        let sandbox = Sandbox::on_database(
            postgres.as_ref().map(|db| db.url.secret_text()),
            "workers = 4\nshutdown_grace = \"1s\"",
            "",
        );
        let token = if auth {
            format!("token_file = \"{}\"\n", sandbox.path("web-token").display())
        } else {
            String::new()
        };
        sandbox.append_config(&format!(
            "[web]\nlisten = \"127.0.0.1:{port}\"\nactions = {actions}\n{token}\
             [kinds.noop.retry]\nbase = \"1h\"\n\
             [queues.slow]\nconcurrency = 1\n\
             [commands.hold]\nprogram = \"/bin/sleep\"\nargs = [\"60\"]\n\
             [endpoints.usage]\nbase_url = \"http://127.0.0.1:9/\"\n\
             [endpoints.usage.auth]\ntype = \"bearer\"\ntoken_file = \"{secret}\"\n{extra}",
            secret = sandbox.path("endpoint-token").display(),
        ));
        std::fs::write(sandbox.path("web-token"), format!("{WEB_TOKEN}\n")).unwrap();
        std::fs::write(sandbox.path("endpoint-token"), ENDPOINT_SECRET).unwrap();
        let ids = seed(&sandbox);
        let child = sandbox.spawn_jobd(&[]);
        let daemon = WebDaemon {
            sandbox,
            daemon: child,
            base: format!("http://127.0.0.1:{port}"),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            ids,
            auth,
            _postgres: postgres,
        };
        wait_until(Duration::from_secs(20), "the web page to answer", || {
            daemon.get("/api/session").is_ok_and(|r| r.status() == 200)
        });
        daemon
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        if self.auth {
            builder.bearer_auth(WEB_TOKEN)
        } else {
            builder
        }
    }

    pub fn get(&self, path: &str) -> reqwest::Result<Response> {
        self.request(reqwest::Method::GET, path).send()
    }

    /// GET that must answer `status`; returns the body.
    pub fn body(&self, path: &str, status: u16) -> String {
        let response = self.get(path).unwrap();
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        let text = response.text().unwrap();
        for secret in [WEB_TOKEN, ENDPOINT_SECRET, PAYLOAD_SECRET] {
            assert!(!text.contains(secret), "GET {path} shows a secret: {text}");
        }
        text
    }

    pub fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.body(path, 200)).unwrap()
    }

    pub fn csrf(&self) -> String {
        self.json("/api/session")["csrf"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn state_of(&self, id: JobId) -> String {
        self.sandbox.open().get(id).unwrap().state.to_string()
    }

    pub fn wait_for_states(&self) {
        let ids = self.ids;
        wait_until(Duration::from_secs(20), "jobs in every state", || {
            self.state_of(ids.dead) == "dead"
                && self.state_of(ids.retrying) == "retrying"
                && self.state_of(ids.succeeded) == "succeeded"
                && self.state_of(ids.running) == "running"
        });
    }
}

/// Jobs that end in every state once the daemon has run a moment: a waiting parent and
/// its child, a queued and a cancelled one (due tomorrow), and for the daemon to run: one
/// that dies, one that retries in an hour, one that succeeds, one that keeps running.
fn seed(sandbox: &Sandbox) -> Seeded {
    let mut db = sandbox.migrate();
    let now = jobd::clock::Clock::now_ms(&jobd::clock::SystemClock);
    let tomorrow = now + 86_400_000;
    db.write(|tx| {
        let parent = tx.enqueue(&[NewJob::new("noop", json!({"note": "fans out"}))], now)?[0].id;
        let claimed = tx.claim(
            &ClaimSpec {
                limit: 1,
                limited_queues: vec![],
                destinations: vec![],
            },
            "seed:1",
            now + 60_000,
            now,
        )?;
        assert_eq!(claimed[0].id, parent);
        let applied = tx.complete(
            &Completion {
                job_id: parent,
                parent_id: None,
                attempt: 1,
                worker: "seed:1".into(),
                started_at: now,
                finished_at: now + 5,
                resolution: Resolution::Await {
                    children: vec![NewJob::new("noop", json!({"part": 1})).run_at(tomorrow)],
                },
                detail: None,
            },
            now + 5,
        )?;
        assert!(matches!(applied, Applied::Moved(_)));
        let ids: Vec<JobId> = tx
            .enqueue(
                &[
                    NewJob::new("noop", json!({"note": "tomorrow"})).run_at(tomorrow),
                    NewJob::new("noop", json!({"note": "cancel me"})).run_at(tomorrow),
                    NewJob::new(
                        "noop",
                        json!({"fail": "permanent", "error": format!("boom 400 {ENDPOINT_SECRET}"),
                               "api_token": PAYLOAD_SECRET}),
                    )
                    .queue("slow")
                    .priority(10),
                    NewJob::new(
                        "noop",
                        json!({"fail": "retry", "error": "upstream answered 503"}),
                    ),
                    NewJob::new("noop", json!({"hello": "world"})),
                    NewJob::new("exec", json!({"command": "hold"})).queue("slow"),
                ],
                now,
            )?
            .iter()
            .map(|e| e.id)
            .collect();
        tx.cancel(ids[1], now)?;
        Ok(Seeded {
            parent,
            child: parent + 1,
            queued: ids[0],
            cancelled: ids[1],
            dead: ids[2],
            retrying: ids[3],
            succeeded: ids[4],
            running: ids[5],
        })
    })
    .unwrap()
}

#[test]
fn every_page_and_api_route_answers_for_jobs_in_every_state() {
    every_page_and_api_route_answers(WebDaemon::start(false, true, ""));
}

/// Every page, fragment, asset and API route for jobs in every state; auth; actions off
/// (a daemon with auth and actions off).
pub fn every_page_and_api_route_answers(web: WebDaemon) {
    web.wait_for_states();
    let ids = web.ids;

    let overview = web.body("/", 200);
    for state in [
        "queued",
        "running",
        "retrying",
        "waiting",
        "succeeded",
        "dead",
        "cancelled",
    ] {
        assert!(
            overview.contains(&format!("id=\"count-{state}\"")),
            "{state}"
        );
    }
    assert!(overview.contains("Throughput, last hour") && overview.contains("<svg"));
    assert!(overview.contains("hold") || overview.contains(&format!("/jobs/{}", ids.running)));
    assert!(overview.contains("sse-connect=\"/events\""));
    assert!(
        !overview.contains("<script>") && !overview.contains("style=\""),
        "no inline script or style"
    );
    let api = web.json("/api/overview");
    let o = &api["overview"];
    assert_eq!(o["finished"]["dead"], 1, "{api}");
    assert_eq!(o["finished"]["cancelled"], 1, "{api}");
    assert_eq!(o["live"]["slow"]["running"], 1, "{api}");
    assert_eq!(o["live"]["default"]["waiting"], 1, "{api}");
    assert_eq!(o["live"]["default"]["queued"], 2, "{api}");
    assert_eq!(o["live"]["default"]["retrying"], 1, "{api}");
    assert_eq!(o["running"][0]["id"], ids.running, "{api}");
    assert!(o["throughput"]["succeeded"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_u64() > Some(0)));

    // Each state's list shows its job, and the API agrees.
    for (state, id) in [
        ("queued", ids.queued),
        ("cancelled", ids.cancelled),
        ("dead", ids.dead),
        ("retrying", ids.retrying),
        ("succeeded", ids.succeeded),
        ("running", ids.running),
        ("waiting", ids.parent),
    ] {
        let page = web.body(&format!("/jobs?state={state}"), 200);
        assert!(
            page.contains(&format!("href=\"/jobs/{id}\"")),
            "{state}: {page}"
        );
        let list = web.json(&format!("/api/jobs?state={state}"));
        let listed: Vec<i64> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect();
        assert!(listed.contains(&id), "{state}: {list}");
        assert!(list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == state));
    }
    let found = web.json("/api/jobs?q=upstream%20answered%20503");
    assert_eq!(found["jobs"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["jobs"][0]["id"], ids.retrying);
    let slow = web.json("/api/jobs?queue=slow&kind=exec");
    assert_eq!(slow["jobs"][0]["id"], ids.running, "{slow}");
    assert_eq!(
        web.json(&format!("/api/jobs?before={}&limit=1", ids.dead))["jobs"][0]["id"],
        ids.dead - 1
    );
    web.body("/api/jobs?state=sleeping", 400);
    web.body("/jobs?since=yesterday", 400);

    // The dead job: error and payload with secrets masked, its attempt.
    let dead = web.body(&format!("/jobs/{}", ids.dead), 200);
    assert!(dead.contains("boom 400 ***"), "{dead}");
    assert!(
        dead.contains("&quot;api_token&quot;: &quot;***&quot;")
            || dead.contains("\"api_token\": \"***\""),
        "{dead}"
    );
    assert!(
        !dead.contains("id=\"retry\""),
        "no retry button while actions are off"
    );
    let job = web.json(&format!("/api/jobs/{}", ids.dead));
    assert_eq!(job["job"]["payload"]["api_token"], "***");
    assert_eq!(job["attempts"][0]["outcome"], "dead");
    let running = web.json(&format!("/api/jobs/{}", ids.running));
    assert_eq!(running["job"]["state"], "running");
    // The fan-out parent: progress and its child, paged; the child names its parent.
    let parent = web.body(&format!("/jobs/{}", ids.parent), 200);
    assert!(parent.contains("0 of 1 succeeded"), "{parent}");
    assert!(parent.contains(&format!("href=\"/jobs/{}\"", ids.child)));
    assert_eq!(
        web.json(&format!("/api/jobs/{}", ids.parent))["children"]["jobs"][0]["id"],
        ids.child
    );
    assert!(web
        .body(&format!("/jobs/{}", ids.child), 200)
        .contains(&format!("href=\"/jobs/{}\"", ids.parent)));
    web.body("/jobs/999999", 404);
    assert_eq!(web.get("/api/jobs/999999").unwrap().status(), 404);

    let dead_letter = web.body("/dead", 200);
    assert!(dead_letter.contains("boom 400 ***"), "{dead_letter}");
    let groups = web.json("/api/dead");
    assert_eq!(groups["groups"][0]["count"], 1);
    assert_eq!(groups["groups"][0]["kind"], "noop");
    let queues = web.body("/queues", 200);
    assert!(
        queues.contains("slow") && queues.contains(">1<"),
        "{queues}"
    );
    let queues = web.json("/api/queues");
    let slow = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "slow")
        .unwrap()
        .clone();
    assert_eq!(slow["concurrency"], 1);
    assert_eq!(slow["live"]["running"], 1);
    let confirm = web.body("/bulk?action=retry&state=dead", 200);
    assert!(
        confirm.contains("<strong>1</strong> dead jobs"),
        "{confirm}"
    );
    assert!(confirm.contains("Actions are off"));
    web.body("/bulk?action=retry&state=running", 400);
    assert_eq!(web.json("/api/actions")["actions"], json!([]));
    for fragment in [
        "/fragments/overview",
        "/fragments/jobs?state=dead",
        "/fragments/dead",
        "/fragments/queues",
    ] {
        assert!(
            web.body(fragment, 200).contains("hx-trigger=\"sse:change"),
            "{fragment}"
        );
    }
    web.body(&format!("/fragments/jobs/{}", ids.dead), 200);
    let asset = web.get("/assets/htmx.min.js").unwrap();
    assert_eq!(
        asset.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(asset.text().unwrap().starts_with("/*! htmx 2."));
    web.body("/assets/sse.min.js", 200);
    web.body("/assets/style.css", 200);
    web.body("/assets/nope.js", 404);
    web.body("/nope", 404);
    let page = web.get("/").unwrap();
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );

    // Auth: none or wrong is 401 on every route; basic with the token as password works.
    for path in [
        "/",
        "/api/overview",
        "/events",
        "/assets/htmx.min.js",
        "/nope",
    ] {
        let none = web
            .client
            .get(format!("{}{path}", web.base))
            .send()
            .unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert!(none.headers().contains_key(header::WWW_AUTHENTICATE));
        let wrong = web
            .client
            .get(format!("{}{path}", web.base))
            .bearer_auth("nope")
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let basic = web
        .client
        .get(format!("{}/api/session", web.base))
        .basic_auth("alice", Some(WEB_TOKEN))
        .send()
        .unwrap();
    assert_eq!(basic.status(), 200);
    let basic: Value = serde_json::from_str(&basic.text().unwrap()).unwrap();
    assert_eq!(basic["user"], "alice");

    // Actions off: every mutating route is 403, with or without a CSRF token.
    let csrf = web.csrf();
    for path in [
        format!("/jobs/{}/retry", ids.dead),
        format!("/jobs/{}/cancel", ids.queued),
        "/bulk".to_string(),
        format!("/api/jobs/{}/retry", ids.dead),
        format!("/api/jobs/{}/cancel", ids.queued),
        "/api/bulk".to_string(),
        "/queues/default/pause".to_string(),
        "/api/queues/default/pause".to_string(),
        "/api/queues/default/resume".to_string(),
    ] {
        let response = web
            .request(reqwest::Method::POST, &path)
            .header("x-csrf-token", &csrf)
            .form(&[
                ("csrf", csrf.as_str()),
                ("action", "retry"),
                ("state", "dead"),
            ])
            .send()
            .unwrap();
        assert_eq!(response.status(), 403, "POST {path}");
        assert!(response.text().unwrap().contains("actions are off"));
    }
    assert_eq!(web.state_of(ids.dead), "dead");
    assert_eq!(web.state_of(ids.queued), "queued");
    assert!(web.sandbox.open().paused_queues().unwrap().is_empty());
    assert!(
        !web.body("/queues", 200).contains("id=\"pause-default\""),
        "no pause button while actions are off"
    );
}

#[test]
fn a_retry_with_actions_on_moves_a_dead_job_to_queued_and_is_recorded() {
    a_retry_moves_a_dead_job_to_queued_and_is_recorded(WebDaemon::start(true, false, ""));
}

/// A retry and a bulk cancel from the page, both recorded; an event stream hears of a
/// commit (a daemon with actions on).
pub fn a_retry_moves_a_dead_job_to_queued_and_is_recorded(web: WebDaemon) {
    web.wait_for_states();
    let ids = web.ids;
    let csrf = web.csrf();
    let retry = format!("/jobs/{}/retry", ids.dead);
    let page = web.body(&format!("/jobs/{}", ids.dead), 200);
    assert!(
        page.contains("id=\"retry\"") && page.contains(&csrf),
        "a retry form with its token"
    );

    // Another origin, or no token, or a wrong one: refused, nothing moves.
    let cross = web
        .request(reqwest::Method::POST, &retry)
        .header(header::ORIGIN, "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(cross.text().unwrap().contains("cross-origin"));
    let no_token = web
        .request(reqwest::Method::POST, &retry)
        .form(&[("x", "1")])
        .send()
        .unwrap();
    assert_eq!(no_token.status(), 403);
    let wrong = web
        .request(reqwest::Method::POST, &retry)
        .form(&[("csrf", "0000")])
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(web.state_of(ids.dead), "dead");

    // The page's own form: same origin, its token. The queue `slow` is held by the
    // running job (concurrency 1), so the retried job stays queued.
    let done = web
        .request(reqwest::Method::POST, &retry)
        .header(header::ORIGIN, web.base.clone())
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()[header::LOCATION],
        format!("/jobs/{}", ids.dead)
    );
    assert_eq!(web.state_of(ids.dead), "queued");
    assert_eq!(web.sandbox.open().get(ids.dead).unwrap().attempts, 0);

    // Recorded: in the API, on the overview, and for jobctl show.
    let actions = web.json("/api/actions");
    let action = &actions["actions"][0];
    assert_eq!(action["detail"]["action"], "retry");
    assert_eq!(action["detail"]["by"], "local");
    assert_eq!(action["detail"]["count"], 1);
    assert_eq!(action["detail"]["jobs"], json!([ids.dead]));
    let record = action["record_id"].as_i64().unwrap();
    assert!(web
        .body("/", 200)
        .contains(&format!("href=\"/jobs/{record}\"")));
    let shown = stdout(&web.sandbox.jobctl(&["show", &record.to_string()]));
    assert!(
        shown.contains("web_action") && shown.contains("\"action\":\"retry\""),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("\"jobs\":[{}]", ids.dead)),
        "{shown}"
    );

    // A second retry of the same job is refused by the transition rules.
    let again = web
        .request(
            reqwest::Method::POST,
            &format!("/api/jobs/{}/retry", ids.dead),
        )
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(again.status(), 409);
    assert!(again.text().unwrap().contains("is queued; cannot retry it"));

    // Bulk: the confirmation counts, the POST cancels both queued jobs of tomorrow.
    let confirm = web.body("/bulk?action=cancel&state=queued&q=tomorrow", 200);
    assert!(
        confirm.contains("<strong>1</strong> queued jobs"),
        "{confirm}"
    );
    let bulk = web
        .request(reqwest::Method::POST, "/api/bulk")
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(json!({"action": "cancel", "state": "queued", "q": "tomorrow"}).to_string())
        .send()
        .unwrap();
    assert_eq!(bulk.status(), 200);
    let bulk: Value = serde_json::from_str(&bulk.text().unwrap()).unwrap();
    assert_eq!(bulk["count"], 1);
    assert_eq!(web.state_of(ids.queued), "cancelled");
    assert_eq!(
        web.json("/api/actions")["actions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // An open event stream hears of the commits, and does not hold up a SIGTERM.
    let mut events = web.get("/events").unwrap();
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");
    web.sandbox.jobctl(&["enqueue", "noop"]);
    let mut heard = Vec::new();
    let mut chunk = [0u8; 256];
    while !String::from_utf8_lossy(&heard).contains("event: change") {
        use std::io::Read;
        let n = events.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended before a change");
        heard.extend_from_slice(&chunk[..n]);
    }
    let mut web = web;
    crate::common::signal(&web.daemon, libc::SIGTERM);
    let status = crate::common::wait_exit(&mut web.daemon, Duration::from_secs(15));
    assert!(status.success(), "{status:?}: {}", web.sandbox.log());
    drop(events);
}

#[test]
fn a_queue_paused_from_the_page_is_not_claimed_until_resumed_and_both_are_recorded() {
    a_paused_queue_is_not_claimed_until_resumed(WebDaemon::start(true, false, ""));
}

/// Pause and resume from the page, recorded (a daemon with actions on).
pub fn a_paused_queue_is_not_claimed_until_resumed(web: WebDaemon) {
    let csrf = web.csrf();
    let queues = web.body("/queues", 200);
    assert!(
        queues.contains("id=\"pause-default\"") && queues.contains("id=\"pause-slow\""),
        "a pause button per queue: {queues}"
    );
    assert!(queues.contains("action=\"/queues/slow/pause\"") && queues.contains(&csrf));

    // Another origin, no token, a wrong token or a bad name: refused, nothing paused.
    let pause = "/queues/burst/pause";
    let cross = web
        .request(reqwest::Method::POST, pause)
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(cross.status(), 403);
    for form in [&[("x", "1")][..], &[("csrf", "0000")]] {
        let refused = web
            .request(reqwest::Method::POST, pause)
            .form(form)
            .send()
            .unwrap();
        assert_eq!(refused.status(), 403, "{form:?}");
    }
    let bad = web
        .request(reqwest::Method::POST, "/api/queues/no%20spaces/pause")
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(web.sandbox.open().paused_queues().unwrap().is_empty());

    // The page's form pauses `burst` (a queue with no jobs yet, as jobctl allows).
    let done = web
        .request(reqwest::Method::POST, pause)
        .header(header::ORIGIN, web.base.clone())
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()[header::LOCATION], "/queues");
    let stats: Value =
        serde_json::from_str(&stdout(&web.sandbox.jobctl(&["--json", "stats"]))).unwrap();
    assert_eq!(stats["queues"]["burst"]["paused"], true, "{stats}");
    let enqueue = |queue: &str| -> JobId {
        stdout(&web.sandbox.jobctl(&["enqueue", "noop", "--queue", queue]))
            .trim()
            .parse()
            .expect("an id")
    };
    let held = enqueue("burst");
    let other = enqueue("default");
    wait_until(Duration::from_secs(20), "the other queue's job", || {
        web.state_of(other) == "succeeded"
    });
    assert_eq!(web.state_of(held), "queued", "paused: not claimed");

    // Shown on the Queues page (with a resume button), the Overview and both APIs.
    let queues = web.body("/queues", 200);
    assert!(queues.contains("id=\"resume-burst\""), "{queues}");
    assert!(
        queues.contains("web, by local"),
        "the pause's reason: {queues}"
    );
    let api = web.json("/api/queues");
    let burst = api["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "burst")
        .unwrap()
        .clone();
    assert_eq!(burst["paused"], true, "{api}");
    assert!(burst["paused_at"].as_i64().is_some(), "{api}");
    let default = api["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "default")
        .unwrap()
        .clone();
    assert_eq!(default["paused"], false, "{api}");
    let overview = web.body("/", 200);
    assert!(
        overview.contains("id=\"paused-queues\"") && overview.contains("/jobs?queue=burst"),
        "{overview}"
    );
    assert_eq!(
        web.json("/api/overview")["paused_queues"][0]["queue"],
        "burst"
    );
    // Pausing again changes nothing and says so.
    let again = web
        .request(reqwest::Method::POST, "/api/queues/burst/pause")
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = serde_json::from_str(&again.text().unwrap()).unwrap();
    assert_eq!(again["changed"], false, "{again}");

    // Resume through the API: the held job runs; a second resume is refused.
    let resumed = web
        .request(reqwest::Method::POST, "/api/queues/burst/resume")
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(resumed.status(), 200);
    wait_until(Duration::from_secs(20), "the held job once resumed", || {
        web.state_of(held) == "succeeded"
    });
    assert!(web.sandbox.open().paused_queues().unwrap().is_empty());
    let twice = web
        .request(reqwest::Method::POST, "/api/queues/burst/resume")
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(twice.status(), 409);
    assert!(twice.text().unwrap().contains("queue burst is not paused"));
    assert!(!web.body("/", 200).contains("id=\"paused-queues\""));

    // Recorded like retry and cancel: pause, pause again, resume (the refused one not).
    let actions = web.json("/api/actions");
    let recorded: Vec<(String, String)> = actions["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["detail"]["action"].as_str().unwrap().to_string(),
                a["detail"]["queue"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [("resume", "burst"), ("pause", "burst"), ("pause", "burst")]
            .map(|(a, q)| (a.to_string(), q.to_string()))
            .to_vec(),
        "{actions}"
    );
    let record = actions["actions"][0]["record_id"].as_i64().unwrap();
    let shown = stdout(&web.sandbox.jobctl(&["show", &record.to_string()]));
    assert!(
        shown.contains("web_action") && shown.contains("\"action\":\"resume\""),
        "{shown}"
    );
}

#[test]
fn a_public_address_without_a_token_is_refused_at_start_and_by_check_config() {
    let sandbox = Sandbox::new("", "[web]\nlisten = \"0.0.0.0:8080\"\n");
    for args in [&["--check-config"][..], &[]] {
        let output = std::process::Command::new(crate::common::JOBD)
            .arg("--config")
            .arg(sandbox.config())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains("web.listen: 0.0.0.0:8080 is not a loopback address"),
            "{err}"
        );
    }
    // A token file that cannot be read is refused too, naming the key.
    let sandbox = Sandbox::new(
        "",
        "[web]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"/nonexistent/web-token\"\n",
    );
    let output = std::process::Command::new(crate::common::JOBD)
        .arg("--config")
        .arg(sandbox.config())
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("web.token_file: cannot read"));
}

#[test]
fn the_overview_shows_each_pipelines_next_run() {
    the_overview_shows_the_next_runs(WebDaemon::start(false, false, &three_pipelines()));
}

/// An hourly, a nightly (cron) and an on-demand pipeline.
pub fn three_pipelines() -> String {
    let sink = "sink = { ndjson = \"pulled.ndjson\" }";
    format!(
        "[pipelines.hourly]\nkind = \"http_pull\"\nendpoint = \"usage\"\npath = \"/items\"\n\
             items_key = \"items\"\nevery = \"1h\"\n{sink}\n\
             [pipelines.nightly]\nkind = \"http_pull\"\nendpoint = \"usage\"\npath = \"/items\"\n\
             items_key = \"items\"\ncron = \"30 2 * * *\"\n{sink}\n\
             [pipelines.by-hand]\nkind = \"http_pull\"\nendpoint = \"usage\"\npath = \"/items\"\n\
             items_key = \"items\"\n{sink}\n"
    )
}

/// The pipelines of [`three_pipelines`] on the overview, with their next runs.
pub fn the_overview_shows_the_next_runs(web: WebDaemon) {
    let api = web.json("/api/overview");
    let now = api["now"].as_i64().unwrap();
    let row = |name: &str| -> Value {
        api["pipelines"]
            .as_array()
            .unwrap_or_else(|| panic!("no pipelines: {api}"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no pipeline {name}: {api}"))
            .clone()
    };
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    // `every` periods are aligned to the epoch: the next one starts on the next hour.
    assert_eq!(row("hourly")["next_run"], (now / HOUR + 1) * HOUR, "{api}");
    assert_eq!(row("hourly")["schedule"], "every 1h");
    // The cron pipeline's next run is the next 02:30 UTC.
    let today = now - now % DAY + 2 * HOUR + HOUR / 2;
    let next = if today > now { today } else { today + DAY };
    assert_eq!(row("nightly")["next_run"], next, "{api}");
    // Without a schedule there is no next run.
    assert_eq!(row("by-hand")["next_run"], Value::Null, "{api}");
    assert_eq!(row("by-hand")["schedule"], "on demand");

    let overview = web.body("/", 200);
    assert!(overview.contains("<th>next run</th>"), "{overview}");
    assert_eq!(
        overview.matches("class=\"next-run\"><time").count(),
        2,
        "two scheduled pipelines show a time: {overview}"
    );
}

#[test]
fn the_overview_shows_destinations_and_a_hold_with_its_reason() {
    the_overview_shows_a_hold(WebDaemon::start(false, false, ""));
}

/// A hold set and released with jobctl, on the overview.
pub fn the_overview_shows_a_hold(web: WebDaemon) {
    let out = web.sandbox.jobctl(&[
        "hold",
        "usage",
        "--for",
        "10m",
        "--reason",
        "maintenance window",
    ]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let api = web.json("/api/overview");
    let usage = api["destinations"]
        .as_array()
        .unwrap_or_else(|| panic!("no destinations: {api}"))
        .iter()
        .find(|d| d["destination"] == "usage")
        .unwrap_or_else(|| panic!("no usage destination: {api}"))
        .clone();
    let now = api["now"].as_i64().unwrap();
    let until = usage["held_until"].as_i64().unwrap();
    assert!(
        (now + 9 * 60_000..=now + 10 * 60_000).contains(&until),
        "held for 10 minutes: {usage}"
    );
    let overview = web.body("/", 200);
    let table = overview
        .split("id=\"destinations\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no destinations table: {overview}"));
    let row = table
        .split("</tr>")
        .find(|r| r.contains("<td>usage</td>"))
        .unwrap();
    assert!(
        row.contains("held") && row.contains("maintenance window"),
        "{row}"
    );
    // Released by hand, the row says so.
    let out = web.sandbox.jobctl(&["release", "usage"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let api = web.json("/api/overview");
    assert!(
        api["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["destination"] != "usage"
                || d["held_until"].is_null()
                || d["held_until"].as_i64() <= api["now"].as_i64()),
        "{api}"
    );
}
