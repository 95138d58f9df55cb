//! The `http_pull` kind against a fake Shopify store on 127.0.0.1: Link-header pagination
//! (only `limit` may accompany `page_info`), a leaky bucket answering 429 + Retry-After
//! when overdrawn, and `updated_at_min` filtering. Full and incremental syncs, kill -9
//! mid-sync, throttling that never kills a page, the endpoint's rate limit, schedules.

use crate::common::{signal, wait_exit, wait_until, DaemonRun, Sandbox, JOBCTL, JOBD};
use crate::http_server::{HttpServer, Request, Response};
use jobd::clock::{Clock, SystemClock};
use jobd::config::Config;
use jobd::daemon::Daemon;
use jobd::job::NewJob;
use jobd::store::sink::SinkDb;
use jobd::store::{OpenOptions, SyncState};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "shpat_test_token";
pub const PATH: &str = "/admin/api/2024-10/customers.json";

/// One request the fake store saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub query: BTreeMap<String, String>,
    pub status: u16,
    /// The offset the request asked for (from page_info, else 0).
    pub offset: usize,
    pub items: usize,
}

/// Shopify's leaky bucket: `size` requests, leaking `leak` per second.
struct Bucket {
    size: f64,
    leak: f64,
    level: f64,
    last: Instant,
}

/// A fake Shopify store serving customers, on the tests' own HTTP server.
pub struct Shop {
    pub base: String,
    /// (id, updated_at ms, version) sorted by id.
    customers: Mutex<Vec<(i64, i64, u32)>>,
    seen: Mutex<Vec<Seen>>,
    bucket: Option<Mutex<Bucket>>,
    pub throttled: AtomicUsize,
    delay: Duration,
    /// What a 429 says in Retry-After.
    pub retry_after: Mutex<String>,
    /// Stops accepting when the shop is dropped (its handler holds the shop weakly).
    _server: HttpServer,
}

/// 2024-01-01T00:00:00Z: when the fake customers were last changed.
const OLD: i64 = 1_704_067_200_000;

impl Shop {
    /// `bucket`: (size, leak per second); `delay` per answer.
    pub fn start(customers: usize, bucket: Option<(f64, f64)>, delay: Duration) -> Arc<Shop> {
        Arc::new_cyclic(|shop: &Weak<Shop>| {
            let shop = shop.clone();
            let server =
                HttpServer::start(Arc::new(move |request: Request| match shop.upgrade() {
                    Some(shop) => shop.answer(request),
                    None => Response {
                        status: 503,
                        headers: Vec::new(),
                        body: b"the shop is closed".to_vec(),
                    },
                }));
            Shop {
                base: server.base.clone(),
                customers: Mutex::new(
                    (1..=customers as i64)
                        .map(|id| (id, OLD + id * 1000, 1))
                        .collect(),
                ),
                seen: Mutex::new(Vec::new()),
                bucket: bucket.map(|(size, leak)| {
                    Mutex::new(Bucket {
                        size,
                        leak,
                        level: 0.0,
                        last: Instant::now(),
                    })
                }),
                throttled: AtomicUsize::new(0),
                delay,
                retry_after: Mutex::new("0.25".into()),
                _server: server,
            }
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Changes `ids` now: a new updated_at and a new email.
    pub fn touch(&self, ids: &[i64]) {
        let now = SystemClock.now_ms();
        let mut customers = self.customers.lock().unwrap();
        for (id, updated, version) in customers.iter_mut() {
            if ids.contains(id) {
                *updated = now;
                *version += 1;
            }
        }
    }

    fn answer(&self, request: Request) -> Response {
        let parsed = reqwest::Url::parse(&format!("{}{}", self.base, request.url)).unwrap();
        let path = parsed.path().to_string();
        let query: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
        let token_ok = request.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("X-Shopify-Access-Token") && value == TOKEN
        });
        let (status, body, mut headers, offset, items) = self.respond(&path, &query, token_ok);
        self.seen.lock().unwrap().push(Seen {
            at: request.at,
            query,
            status,
            offset,
            items,
        });
        // A slow store on purpose: the kill -9 test needs a sync long enough to kill in
        // the middle of, and the schedule test a run longer than its period.
        std::thread::sleep(self.delay);
        if let Some(bucket) = &self.bucket {
            let b = bucket.lock().unwrap();
            headers.push((
                "X-Shopify-Shop-Api-Call-Limit".into(),
                format!("{}/{}", b.level.ceil() as u32, b.size as u32),
            ));
        }
        Response {
            status,
            headers,
            body: body.into_bytes(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn respond(
        &self,
        path: &str,
        query: &BTreeMap<String, String>,
        token_ok: bool,
    ) -> (u16, String, Vec<(String, String)>, usize, usize) {
        if path != PATH {
            return (404, "{\"errors\":\"Not Found\"}".into(), vec![], 0, 0);
        }
        if !token_ok {
            return (
                401,
                "{\"errors\":\"[API] Invalid API key or access token\"}".into(),
                vec![],
                0,
                0,
            );
        }
        if let Some(bucket) = &self.bucket {
            let mut b = bucket.lock().unwrap();
            let now = Instant::now();
            b.level = (b.level - now.duration_since(b.last).as_secs_f64() * b.leak).max(0.0);
            b.last = now;
            if b.level + 1.0 > b.size {
                self.throttled.fetch_add(1, Ordering::SeqCst);
                return (
                    429,
                    "{\"errors\":\"Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service.\"}".into(),
                    vec![("Retry-After".into(), self.retry_after.lock().unwrap().clone())],
                    0,
                    0,
                );
            }
            b.level += 1.0;
        }
        let limit: usize = match query.get("limit").map(|l| l.parse::<usize>()) {
            None => 50,
            Some(Ok(l)) if (1..=250).contains(&l) => l,
            _ => return (400, "{\"errors\":\"bad limit\"}".into(), vec![], 0, 0),
        };
        let (offset, min) = match query.get("page_info") {
            Some(cursor) => {
                if let Some(other) = query.keys().find(|k| *k != "page_info" && *k != "limit") {
                    let body = json!({"errors": format!("{other} cannot be passed when page_info is present")});
                    return (400, body.to_string(), vec![], 0, 0);
                }
                let Some((offset, min)) = decode(cursor) else {
                    return (
                        400,
                        "{\"errors\":\"Invalid page_info\"}".into(),
                        vec![],
                        0,
                        0,
                    );
                };
                (offset, min)
            }
            None => {
                let min = match query.get("updated_at_min") {
                    Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
                        Ok(t) => Some(t.timestamp_millis()),
                        Err(_) => {
                            return (
                                400,
                                "{\"errors\":\"bad updated_at_min\"}".into(),
                                vec![],
                                0,
                                0,
                            )
                        }
                    },
                    None => None,
                };
                (0, min)
            }
        };
        let customers = self.customers.lock().unwrap();
        let matching: Vec<&(i64, i64, u32)> = customers
            .iter()
            .filter(|(_, updated, _)| min.is_none_or(|m| *updated >= m))
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(id, updated, version)| customer(*id, *updated, *version))
            .collect();
        let mut links = Vec::new();
        let link = |offset: usize| {
            format!(
                "<{}{PATH}?limit={limit}&page_info={}>",
                self.base,
                encode(offset, min)
            )
        };
        if offset > 0 {
            links.push(format!(
                "{}; rel=\"previous\"",
                link(offset.saturating_sub(limit))
            ));
        }
        if offset + limit < matching.len() {
            links.push(format!("{}; rel=\"next\"", link(offset + limit)));
        }
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if !links.is_empty() {
            headers.push(("Link".into(), links.join(", ")));
        }
        let items = page.len();
        (
            200,
            json!({ "customers": page }).to_string(),
            headers,
            offset,
            items,
        )
    }
}

fn customer(id: i64, updated: i64, version: u32) -> Value {
    // Shopify writes times in the shop's zone: -05:00 here, so string order would lie.
    let at = chrono::DateTime::from_timestamp_millis(updated)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap());
    json!({
        "id": id,
        "email": format!("c{id}.v{version}@example.com"),
        "first_name": format!("Customer {id}"),
        "state": "enabled",
        "updated_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        "default_address": {"city": if id % 2 == 0 { "Kyoto" } else { "Osaka" }},
    })
}

/// An opaque cursor carrying the position and the first request's filter.
fn encode(offset: usize, min: Option<i64>) -> String {
    let text = format!("{offset}:{}", min.map_or("-".into(), |m| m.to_string()));
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(cursor: &str) -> Option<(usize, Option<i64>)> {
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (offset, min) = text.split_once(':')?;
    Some((
        offset.parse().ok()?,
        if min == "-" {
            None
        } else {
            Some(min.parse().ok()?)
        },
    ))
}

/// Config text for a sandbox: the shop endpoint and one pipeline per name.
pub fn config_text(
    dir: &Path,
    base: &str,
    endpoint_extra: &str,
    pipelines: &[(&str, &str)],
    extra: &str,
) -> String {
    let mut text = format!(
        "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/run/jobd.sock\"\nworkers = 4\nlease = \"5s\"\n\
         [endpoints.shop]\nbase_url = \"{base}\"\nidempotency_header = \"\"\n{endpoint_extra}\n\
         [endpoints.shop.auth]\ntype = \"header\"\nname = \"X-Shopify-Access-Token\"\nvalue_env = \"PULL_TEST_TOKEN\"\n{extra}\n",
        db = dir.join("jobs.db").display(),
        data = dir.join("var").display(),
    );
    for (name, more) in pipelines {
        text.push_str(&format!(
            "[pipelines.{name}]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"{PATH}\"\nitems_key = \"customers\"\n\
             sink = {{ sqlite = \"{sink}\" }}\ncolumns = {{ email = \"email\", city = \"default_address.city\" }}\n{more}\n",
            sink = dir.join("shop.db").display(),
        ));
    }
    text
}

fn start(text: &str) -> Daemon {
    std::env::set_var("PULL_TEST_TOKEN", TOKEN);
    let config = Config::from_toml(text, "pull test").unwrap();
    config.check_secrets().unwrap();
    DaemonRun::default().start(config)
}

fn sync_state(db: &Path, pipeline: &str) -> Option<SyncState> {
    let db = jobd::store::open(db, &OpenOptions::default()).ok()?;
    db.sync_states()
        .ok()?
        .into_iter()
        .find(|s| s.pipeline == pipeline)
}

fn wait_for_runs(db: &Path, pipeline: &str, runs: u64, limit: Duration) -> SyncState {
    wait_until(limit, &format!("{pipeline} to complete run {runs}"), || {
        sync_state(db, pipeline).is_some_and(|s| s.runs >= runs)
    });
    sync_state(db, pipeline).unwrap()
}

fn sink_count(dir: &Path, table: &str) -> u64 {
    SinkDb::open(&dir.join("shop.db"))
        .unwrap()
        .count(table)
        .unwrap()
}

fn run(pipeline: &str) -> NewJob {
    NewJob::new("http_pull", json!({ "pipeline": pipeline }))
}

/// Jobs per state of a kind, straight from the database.
fn states(db: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, count(*) FROM jobs WHERE kind = 'http_pull' GROUP BY state")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn ten_thousand_customers_sync_in_forty_pages_then_only_what_changed() {
    let shop = Shop::start(10_000, None, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let daemon = start(&config_text(
        dir.path(),
        &shop.base,
        "",
        &[("customers", "")],
        "",
    ));
    let client = daemon.client();
    let before = SystemClock.now_ms();
    client.enqueue(vec![run("customers")]).unwrap();
    let first = wait_for_runs(&db, "customers", 1, Duration::from_secs(60));
    let seen = shop.seen();
    assert_eq!(seen.len(), 40, "one request per page");
    assert!(seen.iter().all(|s| s.status == 200 && s.items == 250));
    // The first request carries the filters (none: no mark yet); the others only
    // page_info and limit, as Shopify demands.
    assert_eq!(seen[0].query.keys().collect::<Vec<_>>(), vec!["limit"]);
    assert_eq!(seen[0].query["limit"], "250");
    for s in &seen[1..] {
        assert_eq!(
            s.query.keys().collect::<Vec<_>>(),
            vec!["limit", "page_info"]
        );
    }
    assert_eq!((first.last_run_items, first.last_run_pages), (10_000, 40));
    assert!(first.high_water >= before && first.high_water <= SystemClock.now_ms());
    assert_eq!(sink_count(dir.path(), "customers"), 10_000);
    assert_eq!(states(&db), BTreeMap::from([("succeeded".to_string(), 40)]));

    // Change 25 customers, then run again: one page, with updated_at_min = the first
    // run's start minus the one-minute overlap, and only the 25.
    let changed: Vec<i64> = (1..=25).map(|i| i * 397).collect();
    shop.touch(&changed);
    client.enqueue(vec![run("customers")]).unwrap();
    let second = wait_for_runs(&db, "customers", 2, Duration::from_secs(60));
    let seen = shop.seen();
    assert_eq!(seen.len(), 41, "the second run is one request");
    let expected_min = chrono::DateTime::from_timestamp_millis(first.high_water - 60_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    assert_eq!(seen[40].query.get("updated_at_min"), Some(&expected_min));
    assert_eq!(seen[40].items, 25);
    assert_eq!((second.last_run_items, second.last_run_pages), (25, 1));
    assert!(second.high_water > first.high_water);
    let sink = SinkDb::open(&dir.path().join("shop.db")).unwrap();
    assert_eq!(sink.count("customers").unwrap(), 10_000);
    let stored = sink.raw("customers", &json!(397)).unwrap().unwrap();
    assert_eq!(stored["email"], "c397.v2@example.com");
    let untouched = sink.raw("customers", &json!(398)).unwrap().unwrap();
    assert_eq!(untouched["email"], "c398.v1@example.com");

    // jobctl shows the mark; a reset makes the next run a full one.
    let jobctl = |args: &[&str]| {
        let out = Command::new(JOBCTL)
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = jobctl(&["sync-state"]);
    assert!(
        listed.contains("customers") && listed.contains("25"),
        "{listed}"
    );
    let reset = jobctl(&["sync-state", "--reset", "customers"]);
    assert!(reset.contains("full sync"), "{reset}");
    client.enqueue(vec![run("customers")]).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the full run after the reset",
        || sync_state(&db, "customers").is_some(),
    );
    let seen = shop.seen();
    assert_eq!(seen.len(), 81);
    assert!(!seen[41].query.contains_key("updated_at_min"));
    client.shutdown();
    daemon.wait().unwrap();
}

fn spawn_jobd(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(JOBD)
        .arg("--config")
        .arg(config)
        .env("PULL_TEST_TOKEN", TOKEN)
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_mid_sync_resumes_from_the_page_it_was_on() {
    // 40 pages at 100 ms each: about 4 s to kill it in the middle of.
    let shop = Shop::start(10_000, None, Duration::from_millis(100));
    let sandbox = Sandbox::new("", "");
    let text = config_text(sandbox.dir.path(), &shop.base, "", &[("customers", "")], "");
    std::fs::write(sandbox.config(), text).unwrap();
    let log = sandbox.path("jobd.log");
    let mut jobd = spawn_jobd(&sandbox.config(), &log);
    sandbox.track(&jobd);
    wait_until(
        Duration::from_secs(10),
        "jobd to create its database",
        || jobd::store::open(&sandbox.db(), &OpenOptions::default()).is_ok(),
    );
    let out = sandbox.jobctl(&[
        "enqueue",
        "http_pull",
        "--payload",
        r#"{"pipeline": "customers"}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "a dozen pages", || {
        shop.seen().len() >= 12
    });
    signal(&jobd, libc::SIGKILL);
    wait_exit(&mut jobd, Duration::from_secs(5));
    let before = shop.seen();
    let last_before = before.last().unwrap().offset;
    assert!(
        sync_state(&sandbox.db(), "customers").is_none(),
        "killed before the end"
    );

    let mut jobd = spawn_jobd(&sandbox.config(), &log);
    sandbox.track(&jobd);
    let state = wait_for_runs(&sandbox.db(), "customers", 1, Duration::from_secs(60));
    signal(&jobd, libc::SIGTERM);
    wait_exit(&mut jobd, Duration::from_secs(30));
    let all = shop.seen();
    let after = &all[before.len()..];
    // Resumed at the page it was on (or the next, if that page's completion had been
    // committed), never from the first page.
    assert!(
        after[0].offset == last_before || after[0].offset == last_before + 250,
        "resumed at offset {} after {last_before}",
        after[0].offset
    );
    assert_eq!(
        all.iter()
            .filter(|s| !s.query.contains_key("page_info"))
            .count(),
        1
    );
    assert!(
        all.len() <= 41,
        "at most the page in flight is fetched twice: {}",
        all.len()
    );
    let offsets: std::collections::BTreeSet<usize> = all.iter().map(|s| s.offset).collect();
    assert_eq!(offsets.len(), 40);
    assert_eq!(state.last_run_items, 10_000);
    assert_eq!(sink_count(sandbox.dir.path(), "customers"), 10_000);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("recovered 1 job(s) left running"), "{log}");
}

#[test]
fn throttling_never_makes_a_page_dead() {
    // A small bucket that leaks slowly, three pipelines on four workers, no rate limit
    // of our own and the usage header ignored (it would slow us down before the bucket
    // overflows): the store answers 429 often. With max_attempts = 1, any 429 that cost
    // an attempt would kill its page.
    let shop = Shop::start(2_000, Some((2.0, 10.0)), Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let pipelines = [
        ("a", "table = \"a\"\ncall_limit_header = \"\""),
        ("b", "table = \"b\"\ncall_limit_header = \"\""),
        ("c", "table = \"c\"\ncall_limit_header = \"\""),
    ];
    let text = config_text(
        dir.path(),
        &shop.base,
        "",
        &pipelines,
        "[kinds.http_pull.retry]\nmax_attempts = 1\n",
    );
    let daemon = start(&text);
    let client = daemon.client();
    client.enqueue(vec![run("a"), run("b"), run("c")]).unwrap();
    for (name, _) in pipelines {
        let state = wait_for_runs(&db, name, 1, Duration::from_secs(60));
        assert_eq!(state.last_run_items, 2_000);
        assert_eq!(sink_count(dir.path(), name), 2_000);
    }
    client.shutdown();
    daemon.wait().unwrap();
    assert!(
        shop.throttled.load(Ordering::SeqCst) > 0,
        "the store never throttled: the test proves nothing"
    );
    // Every page succeeded (24, plus any page put off for a long throttle).
    let states = states(&db);
    assert_eq!(
        states.keys().collect::<Vec<_>>(),
        vec!["succeeded"],
        "{states:?}"
    );
    assert!(states["succeeded"] >= 24, "{states:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let charged: i64 = conn
        .query_row(
            "SELECT count(*) FROM job_attempts WHERE outcome != 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(charged, 0);
}

#[test]
fn a_retry_after_of_twenty_digits_puts_the_page_off_a_day_and_kills_nothing() {
    // A bucket of one that barely leaks: the second page is throttled, with a
    // Retry-After no u64 of seconds holds. It once overflowed `Instant + wait` and the
    // panic made the page dead.
    let shop = Shop::start(10, Some((1.0, 0.0001)), Duration::ZERO);
    *shop.retry_after.lock().unwrap() = "99999999999999999999".into();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let text = config_text(
        dir.path(),
        &shop.base,
        "",
        &[("slow", "limit = 5\ncall_limit_header = \"\"")],
        "[kinds.http_pull.retry]\nmax_attempts = 1\n",
    );
    let daemon = start(&text);
    let client = daemon.client();
    client.enqueue(vec![run("slow")]).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let deferred = || -> Option<i64> {
        conn.query_row(
            "SELECT run_at FROM jobs WHERE kind = 'http_pull' AND state = 'queued' \
             AND json_extract(payload, '$.deferred') >= 1",
            [],
            |r| r.get(0),
        )
        .ok()
    };
    wait_until(Duration::from_secs(30), "the page to be put off", || {
        deferred().is_some()
    });
    client.shutdown();
    daemon.wait().unwrap();
    let day_ms = 24 * 3600 * 1000;
    let wait = deferred().unwrap() - SystemClock.now_ms();
    assert!(
        (day_ms - 60_000..=day_ms).contains(&wait),
        "put off by {wait} ms, not the 24 h cap"
    );
    let states = states(&db);
    assert!(!states.contains_key("dead"), "{states:?}");
    assert!(shop.throttled.load(Ordering::SeqCst) > 0);
}

#[test]
fn the_call_limit_header_holds_the_shop_before_it_answers_429() {
    // A bucket of 10 leaking 2/s, as Shopify's usage header reports it: 16 pages sent as
    // fast as they come would overflow it at the 11th. Near its top (80%), the answer's
    // `X-Shopify-Shop-Api-Call-Limit` holds the endpoint, stored like a 429's hold, so
    // the next page is not claimed before the bucket has leaked back.
    let shop = Shop::start(4_000, Some((10.0, 2.0)), Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let daemon = start(&config_text(
        dir.path(),
        &shop.base,
        "",
        &[("customers", "")],
        "",
    ));
    daemon.client().enqueue(vec![run("customers")]).unwrap();
    let state = wait_for_runs(&db, "customers", 1, Duration::from_secs(60));
    daemon.client().shutdown();
    daemon.wait().unwrap();
    assert_eq!(state.last_run_items, 4_000);
    assert_eq!(shop.seen().len(), 16);
    assert_eq!(
        shop.throttled.load(Ordering::SeqCst),
        0,
        "the store answered 429"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (destination, reason): (String, String) = conn
        .query_row(
            "SELECT destination, hold_reason FROM destination_state WHERE hold_reason IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(destination, "shop");
    assert!(
        reason.starts_with("answered 200 with X-Shopify-Shop-Api-Call-Limit"),
        "{reason}"
    );
}

#[test]
fn the_endpoint_rate_limit_is_observed() {
    let shop = Shop::start(5_000, None, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let text = config_text(
        dir.path(),
        &shop.base,
        "rate_limit = \"10/s\"",
        &[("customers", "")],
        "",
    );
    let daemon = start(&text);
    let started = Instant::now();
    daemon.client().enqueue(vec![run("customers")]).unwrap();
    wait_for_runs(&db, "customers", 1, Duration::from_secs(60));
    let took = started.elapsed();
    daemon.client().shutdown();
    daemon.wait().unwrap();
    let seen = shop.seen();
    assert_eq!(seen.len(), 20);
    // Burst 1: the first goes at once, then one every 100 ms.
    for (i, s) in seen.iter().enumerate().skip(1) {
        let since_first = s.at.duration_since(seen[0].at);
        assert!(
            since_first + Duration::from_millis(15) >= Duration::from_millis(100) * i as u32,
            "request {i} came {since_first:?} after the first"
        );
    }
    assert!(took >= Duration::from_millis(1850), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn a_schedule_runs_once_per_period_and_never_beside_a_live_run() {
    // Every second, while a run takes about 1.5 s (5 pages of 300 ms): the scheduler
    // must wait for each run to end before starting the next.
    let shop = Shop::start(1_250, None, Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let text = config_text(
        dir.path(),
        &shop.base,
        "",
        &[("customers", "every = \"1s\"")],
        "",
    );
    let daemon = start(&text);
    wait_for_runs(&db, "customers", 2, Duration::from_secs(30));
    daemon.client().shutdown();
    daemon.wait().unwrap();
    let seen = shop.seen();
    // Runs never overlap: pages come in order 0, 250, ..., 1000, then 0 again.
    let mut expected = 0;
    for s in &seen {
        if s.offset == 0 && !s.query.contains_key("page_info") {
            assert_eq!(
                expected % 1250,
                0,
                "a run started at page offset {expected}: {seen:?}"
            );
            expected = 0;
        }
        assert_eq!(s.offset, expected, "{seen:?}");
        expected += 250;
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let keys: Vec<String> = conn
        .prepare("SELECT unique_key FROM jobs WHERE source LIKE 'schedule:%' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("http_pull:customers:")),
        "{keys:?}"
    );
}

#[test]
fn an_ndjson_sink_gets_every_item_as_a_line() {
    let shop = Shop::start(600, None, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    // In a folder that does not exist yet: the daemon makes it, not world-readable.
    let lines_file = dir.path().join("sinks").join("customers.ndjson");
    let text = config_text(dir.path(), &shop.base, "", &[("customers", "")], "").replace(
        &format!(
            "sink = {{ sqlite = \"{}\" }}",
            dir.path().join("shop.db").display()
        ),
        &format!("sink = {{ ndjson = \"{}\" }}", lines_file.display()),
    );
    assert!(text.contains("ndjson"), "the sink was swapped");
    let daemon = start(&text);
    daemon.client().enqueue(vec![run("customers")]).unwrap();
    wait_for_runs(&db, "customers", 1, Duration::from_secs(60));
    daemon.client().shutdown();
    daemon.wait().unwrap();
    let text = std::fs::read_to_string(&lines_file).unwrap();
    let ids: std::collections::BTreeSet<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(text.lines().count(), 600);
    assert_eq!(ids.len(), 600, "every customer once");
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode_of(&lines_file), 0o640);
    assert_eq!(mode_of(&dir.path().join("sinks")), 0o750);
    assert!(
        !dir.path().join("shop.db").exists(),
        "no SQLite sink was made"
    );
}

/// The query parameters of a request target, decoded.
fn query_of(url: &str) -> BTreeMap<String, String> {
    let parsed = reqwest::Url::parse(&format!("http://x{url}")).unwrap();
    parsed.query_pairs().into_owned().collect()
}

#[test]
fn body_cursor_and_numbered_page_pagination_fetch_every_item_once() {
    const ITEMS: usize = 250;
    let all: Vec<Value> = (1..=ITEMS as i64)
        .map(|id| customer(id, 1_760_000_000_000 + id * 1_000, 1))
        .collect();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    // Each pipeline asks its own path: /cursored.json pages by an opaque "after-N" cursor
    // in `meta.next` (absent on the last page), /paged.json by page numbers from 1 (the
    // last page short).
    let server = HttpServer::start(Arc::new(move |request: Request| {
        log.lock().unwrap().push(request.url.clone());
        let q = query_of(&request.url);
        let limit: usize = q["limit"].parse().unwrap();
        let cursor_mode = request.url.starts_with("/cursored.json");
        let start = match (q.get("cursor"), q.get("page")) {
            (Some(c), _) => c.strip_prefix("after-").unwrap().parse().unwrap(),
            (None, Some(p)) => (p.parse::<usize>().unwrap() - 1) * limit,
            (None, None) => 0,
        };
        let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
        let end = start + page.len();
        let mut body = json!({ "customers": page });
        if cursor_mode && end < all.len() {
            body["meta"] = json!({ "next": format!("after-{end}") });
        }
        Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let text = config_text(
        dir.path(),
        &server.base,
        "",
        &[
            (
                "cursored",
                "pagination = \"cursor\"\ncursor_field = \"meta.next\"\nlimit = 100\n",
            ),
            ("paged", "pagination = \"page\"\nlimit = 100\n"),
        ],
        "",
    )
    .replacen(
        &format!("path = \"{PATH}\""),
        "path = \"/cursored.json\"",
        1,
    )
    .replacen(&format!("path = \"{PATH}\""), "path = \"/paged.json\"", 1);
    let daemon = start(&text);
    daemon
        .client()
        .enqueue(vec![run("cursored"), run("paged")])
        .unwrap();
    let cursored = wait_for_runs(&db, "cursored", 1, Duration::from_secs(60));
    let paged = wait_for_runs(&db, "paged", 1, Duration::from_secs(60));
    daemon.client().shutdown();
    daemon.wait().unwrap();
    assert_eq!(sink_count(dir.path(), "cursored"), ITEMS as u64);
    assert_eq!(sink_count(dir.path(), "paged"), ITEMS as u64);
    assert_eq!(cursored.last_run_items, ITEMS as u64);
    assert_eq!(paged.last_run_items, ITEMS as u64);
    let seen = seen.lock().unwrap();
    let asked = |path: &str, key: &str| -> Vec<Option<String>> {
        seen.iter()
            .filter(|u| u.starts_with(path))
            .map(|u| query_of(u).get(key).cloned())
            .collect()
    };
    assert_eq!(
        asked("/cursored.json", "cursor"),
        [None, Some("after-100".into()), Some("after-200".into())],
        "each cursor sent back once, and no request after the last page"
    );
    assert_eq!(
        asked("/paged.json", "page"),
        [Some("1".into()), Some("2".into()), Some("3".into())],
        "pages 1..3, stopping at the short one"
    );
}
