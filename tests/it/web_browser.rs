//! The web page in a real browser: headless Chromium driven by chromedriver over the
//! WebDriver protocol (JSON over HTTP, spoken with reqwest). Loads the overview, follows
//! a dead job to its page, retries it, and sees a count change without a reload while
//! the daemon drains. Screenshots go to `target/web-screenshots/` for people to look at.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use crate::common::{wait_until, Sandbox};
use crate::web::{free_port, WebDaemon};
use base64::Engine;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/lib/chromium")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    http: Client,
    session: String,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        Browser::start_with(true)
    }

    /// A browser with JavaScript on, or turned off by Chromium's content setting (as an
    /// operator's locked-down browser would have it).
    fn start_with(javascript: bool) -> Browser {
        let driver_path = find_program(&["chromedriver"]).expect(
            "chromedriver is not installed: apt-get install -y chromium chromium-driver (.ci/run does)",
        );
        let chromium = find_program(&["chromium", "chromium-browser"])
            .expect("chromium is not installed: apt-get install -y chromium chromium-driver");
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        wait_until(Duration::from_secs(20), "chromedriver to be ready", || {
            http.get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "profile.managed_default_content_settings.javascript":
                        if javascript { 1 } else { 2 }
                }
            }
        }}});
        let answer: Value = post(&http, &format!("{base}/session"), &capabilities);
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Browser {
            driver,
            http,
            session,
            base,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn command(&self, path: &str, body: Value) -> Value {
        let answer = post(&self.http, &self.url(path), &body);
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let text = self
            .http
            .get(self.url(path))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.command("/url", json!({"url": url}));
    }

    fn current_url(&self) -> String {
        self.get("/url").as_str().unwrap().to_string()
    }

    fn find(&self, css: &str) -> Option<String> {
        let answer = post(
            &self.http,
            &self.url("/element"),
            &json!({"using": "css selector", "value": css}),
        );
        answer["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// The element's text; `None` if it is not there, or was swapped out by a live
    /// refresh between finding and reading it (callers poll).
    fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css)?;
        let text = self
            .http
            .get(self.url(&format!("/element/{element}/text")))
            .send()
            .ok()?
            .text()
            .ok()?;
        let answer: Value = serde_json::from_str(&text).ok()?;
        answer["value"].as_str().map(str::to_string)
    }

    fn click(&self, css: &str) {
        let element = self.find(css).unwrap_or_else(|| panic!("no element {css}"));
        self.command(&format!("/element/{element}/click"), json!({}));
    }

    fn script(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({"script": script, "args": []}))
    }

    fn screenshot(&self, name: &str) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

fn post(http: &Client, url: &str, body: &Value) -> Value {
    let text = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .text()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: {e}: {text}"))
}

fn count_of(browser: &Browser, state: &str) -> Option<u64> {
    browser
        .text(&format!("#count-{state} .value"))
        .map(|t| t.replace(',', ""))
        .and_then(|t| t.parse().ok())
}

#[test]
fn a_browser_follows_a_job_retries_it_and_sees_counts_change_without_a_reload() {
    let web = WebDaemon::start(true, false, "");
    web.wait_for_states();
    let ids = web.ids;
    let browser = Browser::start();

    browser.go(&format!("{}/", web.base));
    wait_until(Duration::from_secs(10), "the overview's counts", || {
        count_of(&browser, "dead") == Some(1)
    });
    assert_eq!(browser.text("h1").as_deref(), Some("Overview"));
    browser.screenshot("overview");

    // The Dead letter page, then the list of dead jobs, then the job itself by its link.
    browser.go(&format!("{}/dead", web.base));
    assert!(browser.text("#dead").unwrap().contains("boom 400 ***"));
    browser.screenshot("dead-letter");
    browser.go(&format!("{}/jobs?state=dead", web.base));
    browser.screenshot("jobs");
    browser.click(&format!("a[href=\"/jobs/{}\"]", ids.dead));
    wait_until(Duration::from_secs(10), "the job's page", || {
        browser
            .current_url()
            .ends_with(&format!("/jobs/{}", ids.dead))
    });
    assert_eq!(browser.text("#job-state").as_deref(), Some("dead"));
    browser.screenshot("job");

    // Retry from the page: the form posts with its CSRF token from the page's origin.
    browser.click("#retry");
    wait_until(
        Duration::from_secs(10),
        "the retried job to show queued",
        || browser.text("#job-state").as_deref() == Some("queued"),
    );
    assert_eq!(web.state_of(ids.dead), "queued");
    browser.screenshot("job-retried");
    browser.go(&format!("{}/queues", web.base));
    browser.screenshot("queues");

    // The overview, left open: a drain of new jobs changes its count without a reload.
    browser.go(&format!("{}/", web.base));
    wait_until(Duration::from_secs(10), "the overview", || {
        count_of(&browser, "succeeded").is_some()
    });
    let before = count_of(&browser, "succeeded").unwrap();
    browser.script("window.jobdMarker = 'not reloaded';");
    drain(&web.sandbox, 200);
    // Within 15 s, so the event stream did it, not the 30 s polling fallback.
    wait_until(
        Duration::from_secs(15),
        "the succeeded count to rise without a reload",
        || count_of(&browser, "succeeded").is_some_and(|n| n >= before + 200),
    );
    assert_eq!(
        browser.script("return window.jobdMarker;"),
        json!("not reloaded")
    );
    browser.screenshot("overview-after-drain");
}

#[test]
fn with_javascript_off_every_page_reads_and_a_retry_still_works() {
    let web = WebDaemon::start(true, false, "");
    web.wait_for_states();
    let ids = web.ids;
    let browser = Browser::start_with(false);

    browser.go(&format!("{}/", web.base));
    assert_eq!(browser.text("h1").as_deref(), Some("Overview"));
    assert_eq!(count_of(&browser, "dead"), Some(1));
    // The page's own scripts did not run: htmx never defined itself.
    assert_eq!(
        browser.script("return typeof window.htmx;"),
        json!("undefined"),
        "JavaScript is off"
    );
    browser.screenshot("no-js-overview");

    browser.go(&format!("{}/dead", web.base));
    assert!(browser.text("#dead").unwrap().contains("boom 400 ***"));
    browser.go(&format!("{}/queues", web.base));
    assert!(browser.text("main").unwrap().contains("slow"));
    browser.go(&format!("{}/jobs?state=dead", web.base));
    browser.click(&format!("a[href=\"/jobs/{}\"]", ids.dead));
    wait_until(Duration::from_secs(10), "the job's page", || {
        browser
            .current_url()
            .ends_with(&format!("/jobs/{}", ids.dead))
    });
    assert_eq!(browser.text("#job-state").as_deref(), Some("dead"));

    // The retry button is a plain form: it posts, the page reloads and shows the move.
    browser.click("#retry");
    wait_until(
        Duration::from_secs(10),
        "the retried job to show queued after the form's reload",
        || browser.text("#job-state").as_deref() == Some("queued"),
    );
    assert_eq!(web.state_of(ids.dead), "queued");
    browser.screenshot("no-js-job-retried");
}

/// Enqueues `n` noop jobs in one go for the daemon to drain.
fn drain(sandbox: &Sandbox, n: usize) {
    let mut db = sandbox.open();
    db.write(|tx| {
        let jobs: Vec<_> = (0..n)
            .map(|i| jobd::job::NewJob::new("noop", json!({"drain": i})))
            .collect();
        tx.enqueue(&jobs, jobd::clock::Clock::now_ms(&jobd::clock::SystemClock))
    })
    .unwrap();
}
