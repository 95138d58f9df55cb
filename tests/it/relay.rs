//! The `relay` kind end to end: OMS batches routed to GA4, Meta CAPI and sGTM endpoints of
//! a real HTTP server on 127.0.0.1, through a real daemon, with one `http` job per
//! (event, destination).

use crate::common::InProcessDaemon;
use crate::http_server::{HttpServer, Request, Response};

use jobd::job::{Job, JobId, JobState, NewJob};
use jobd::store::{Attempt, JobFilter};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The OMS sample batch from the relay this kind replaces (seed 002), as it came.
const OMS_SAMPLE: &str = r#"{
  "count": 4000,
  "data": [
    {"t-value": "bosleyaffiliate_0123", "storefront_id": "bosley", "event_name": "consult_started",
     "event_time": "2026-01-15T10:15:00Z", "order_id": "2025010100001111", "session_id": "sess_123",
     "utm_source": "facebook", "utm_medium": "cpc", "utm_campaign": "bosley_q1"},
    {"t-value": "pfizeraffiliate_0123", "storefront_id": "pfizer", "event_name": "rx_issued",
     "event_time": "2026-01-15T10:20:30Z", "order_id": "2025010100002222", "session_id": "sess_789",
     "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "pfizer_q1"},
    {"t-value": "bosleyaffiliate_0123", "storefront_id": "bosley", "event_name": "purchase_completed",
     "event_time": "2026-01-15T10:25:00Z", "order_id": "2025020100003333",
     "order_created_date": "2026-01-15T10:25:00Z", "order_ship_date": "2026-01-15T10:25:00Z",
     "order_revenue": 80.79, "session_id": "sess_456", "utm_source": "google",
     "utm_medium": "organic", "utm_campaign": "bosley_q1"}
  ],
  "error": "", "next_index": 1000, "next_url": "...", "previous_index": "", "previous_url": ""
}"#;

// Computed outside Rust: printf %s 'test@example.com' | sha256sum, and for '15551234567'.
const EMAIL_SHA256: &str = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b";
const PHONE_SHA256: &str = "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a";

const GA4_SECRET: &str = "ga4-secret-RELAYIT";
const META_TOKEN: &str = "meta-token-RELAYIT";

/// The sample batch, with customer data added to the purchase (the sample has none) so
/// Meta's hashing can be checked.
fn sample_batch() -> Value {
    let mut batch: Value = serde_json::from_str(OMS_SAMPLE).unwrap();
    batch["data"][2]["email"] = json!(" Test@Example.COM ");
    batch["data"][2]["phone"] = json!("+1 (555) 123-4567");
    batch
}

/// A server that records every request and answers `status(request)`.
struct Server {
    seen: Arc<Mutex<Vec<Request>>>,
    base: String,
    _server: HttpServer,
}

impl Server {
    fn start(status: impl Fn(&Request) -> u16 + Send + Sync + 'static) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let server = HttpServer::start(Arc::new(move |request: Request| {
            let status = status(&request);
            recorded.lock().unwrap().push(request);
            Response {
                status,
                headers: Vec::new(),
                body: if status >= 500 {
                    b"try later".to_vec()
                } else {
                    b"{}".to_vec()
                },
            }
        }));
        Server {
            seen,
            base: server.base.clone(),
            _server: server,
        }
    }

    fn seen_at(&self, prefix: &str) -> Vec<Request> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|r| r.url.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// Three endpoints at `base` and the two storefronts of the example (bosley: GA4 + Meta;
/// pfizer: sGTM), with the secrets in the environment.
fn routes(base: &str) -> String {
    std::env::set_var("JOBD_IT_RELAY_GA4", GA4_SECRET);
    std::env::set_var("JOBD_IT_RELAY_META", META_TOKEN);
    format!(
        r#"[endpoints.ga4]
base_url = "{base}/ga4"
[endpoints.ga4.query_secrets]
api_secret = {{ env = "JOBD_IT_RELAY_GA4" }}
[endpoints.meta]
base_url = "{base}/meta/v21.0"
[endpoints.meta.query_secrets]
access_token = {{ env = "JOBD_IT_RELAY_META" }}
[endpoints.sgtm]
base_url = "{base}/sgtm"
[relay.storefronts.bosley.destinations.ga4]
endpoint = "ga4"
shape = "ga4"
measurement_id = "G-BOSLEY123"
currency = "USD"
event_names = {{ purchase_completed = "purchase" }}
[relay.storefronts.bosley.destinations.meta]
endpoint = "meta"
shape = "meta_capi"
pixel_id = "1234567890"
currency = "USD"
event_names = {{ purchase_completed = "Purchase", consult_started = "InitiateCheckout" }}
[relay.storefronts.pfizer.destinations.sgtm]
endpoint = "sgtm"
shape = "sgtm"
path = "/oms/events"
"#
    )
}

/// A daemon config with three endpoints on `server` and the two storefronts of the
/// example (bosley: GA4 + Meta; pfizer: sGTM), plus `extra`.
fn setup(server: &Server, extra: &str) -> InProcessDaemon {
    InProcessDaemon::new(
        "workers = 4\nsynchronous = \"normal\"",
        &format!(
            "[retry]\nbase = \"100ms\"\nfactor = 2.0\njitter = 0.0\ncap = \"1s\"\nmax_attempts = 3\n{routes}{extra}",
            routes = routes(&server.base),
        ),
    )
}

/// A job and its attempts.
fn with_attempts(s: &InProcessDaemon, id: JobId) -> (Job, Vec<Attempt>) {
    (s.job(id), s.attempts(id))
}

/// The relay queue's jobs.
fn deliveries(s: &InProcessDaemon) -> Vec<Job> {
    let filter = JobFilter {
        queue: Some("relay".into()),
        limit: 1000,
        ..Default::default()
    };
    s.db().list(&filter).unwrap()
}

fn relay(payload: Value) -> NewJob {
    NewJob::new("relay", payload)
}

#[test]
fn the_oms_sample_batch_reaches_the_right_destinations_with_correct_bodies() {
    let server = Server::start(|_| 200);
    let s = setup(&server, "");
    let ids = s.run(vec![relay(sample_batch())]);

    let (job, attempts) = with_attempts(&s, ids[0]);
    assert_eq!(job.state, JobState::Succeeded);
    let detail = attempts[0].detail.clone().unwrap();
    assert_eq!(detail["counts"]["events"], 3);
    assert_eq!(detail["counts"]["deliveries"], 5, "{detail}");
    assert_eq!(detail["counts"]["per_destination"]["bosley/ga4"], 2);
    assert_eq!(detail["counts"]["per_destination"]["pfizer/sgtm"], 1);
    assert_eq!(detail["errors"], json!([]));

    // GA4: two events, measurement id and API secret in the query.
    let ga4 = server.seen_at("/ga4/mp/collect?");
    assert_eq!(ga4.len(), 2);
    for request in &ga4 {
        assert_eq!(request.method, "POST");
        assert!(
            request
                .url
                .contains("measurement_id=G-BOSLEY123&api_secret=ga4-secret-RELAYIT"),
            "{}",
            request.url
        );
    }
    let purchase = ga4
        .iter()
        .map(body)
        .find(|b| b["events"][0]["name"] == "purchase")
        .expect("the purchase went to GA4 as `purchase`");
    assert_eq!(purchase["client_id"], "sess_456");
    assert_eq!(purchase["timestamp_micros"], 1_768_472_700_000_000i64);
    let params = &purchase["events"][0]["params"];
    assert_eq!(params["transaction_id"], "2025020100003333");
    assert_eq!(params["value"], 80.79);
    assert_eq!(params["currency"], "USD");
    assert_eq!(params["t_value"], "bosleyaffiliate_0123");
    assert_eq!(params["utm_source"], "google");
    assert!(params.get("email").is_none() && params.get("phone").is_none());
    assert!(ga4
        .iter()
        .map(body)
        .any(|b| b["events"][0]["name"] == "consult_started"));

    // Meta: two events to the pixel, token in the query, user data hashed.
    let meta = server.seen_at("/meta/v21.0/1234567890/events?access_token=meta-token-RELAYIT");
    assert_eq!(meta.len(), 2);
    let purchase = meta
        .iter()
        .map(body)
        .find(|b| b["data"][0]["event_name"] == "Purchase")
        .expect("the purchase went to Meta as `Purchase`");
    let event = &purchase["data"][0];
    assert_eq!(event["event_time"], 1_768_472_700);
    assert_eq!(event["event_id"], "2025020100003333");
    assert_eq!(event["action_source"], "system_generated");
    assert_eq!(event["user_data"]["em"], EMAIL_SHA256);
    assert_eq!(event["user_data"]["ph"], PHONE_SHA256);
    assert_eq!(event["custom_data"]["value"], 80.79);
    assert_eq!(event["custom_data"]["currency"], "USD");
    assert!(event["custom_data"].get("email").is_none());
    assert!(meta
        .iter()
        .map(body)
        .any(|b| b["data"][0]["event_name"] == "InitiateCheckout"));

    // sGTM: the pfizer event exactly as it came.
    let sgtm = server.seen_at("/sgtm/oms/events");
    assert_eq!(sgtm.len(), 1);
    assert_eq!(body(&sgtm[0]), sample_batch()["data"][1]);
    assert_eq!(
        server.seen.lock().unwrap().len(),
        5,
        "nothing else was sent"
    );

    // One http job per (event, destination) in the relay queue, keyed for dedup, and no
    // secret in any payload or attempt.
    let deliveries = deliveries(&s);
    assert_eq!(deliveries.len(), 5);
    let mut keys: Vec<String> = deliveries
        .iter()
        .map(|j| j.unique_key.clone().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "relay:2025010100001111:consult_started:bosley/ga4",
            "relay:2025010100001111:consult_started:bosley/meta",
            "relay:2025010100002222:rx_issued:pfizer/sgtm",
            "relay:2025020100003333:purchase_completed:bosley/ga4",
            "relay:2025020100003333:purchase_completed:bosley/meta",
        ]
    );
    for delivery in &deliveries {
        assert_eq!(delivery.kind, "http");
        assert_eq!(delivery.state, JobState::Succeeded);
        assert_eq!(delivery.parent_id, Some(ids[0]));
        // Flow control per storefront: the endpoint is its destination, the storefront
        // its key, and the events of one order reach each destination in order.
        let (storefront, order, name) = {
            let key = delivery.unique_key.as_deref().unwrap();
            let parts: Vec<&str> = key.split(':').collect();
            let (storefront, name) = parts[3].split_once('/').unwrap();
            (
                storefront.to_string(),
                parts[1].to_string(),
                name.to_string(),
            )
        };
        assert_eq!(
            delivery.destination.as_deref(),
            delivery.payload["endpoint"].as_str()
        );
        assert_eq!(delivery.flow_key, storefront);
        assert_eq!(
            delivery.order_key.as_deref(),
            Some(format!("relay:{storefront}:{order}:{name}").as_str())
        );
        let (_, attempts) = with_attempts(&s, delivery.id);
        let stored = format!("{} {:?}", delivery.payload, attempts);
        assert!(
            !stored.contains(GA4_SECRET) && !stored.contains(META_TOKEN),
            "{stored}"
        );
    }
}

#[test]
fn a_duplicate_batch_is_not_delivered_again() {
    let server = Server::start(|_| 200);
    let s = setup(&server, "");
    s.run(vec![relay(sample_batch())]);
    assert_eq!(server.seen.lock().unwrap().len(), 5);
    // The same batch again, in another job and another daemon run; and the same event
    // twice within one batch.
    let mut twice = sample_batch();
    let first = twice["data"][0].clone();
    twice["data"].as_array_mut().unwrap().push(first);
    let ids = s.run(vec![relay(sample_batch()), relay(twice)]);
    assert_eq!(
        server.seen.lock().unwrap().len(),
        5,
        "a delivery was repeated"
    );
    assert_eq!(deliveries(&s).len(), 5);
    for id in &ids {
        assert_eq!(with_attempts(&s, *id).0.state, JobState::Succeeded);
    }
    let (_, attempts) = with_attempts(&s, ids[1]);
    assert_eq!(
        attempts[0].detail.clone().unwrap()["counts"]["repeated_in_batch"],
        2
    );
}

#[test]
fn one_destination_answering_503_does_not_hold_back_the_others() {
    let server = Server::start(|r| {
        if r.url.starts_with("/meta/") {
            503
        } else {
            200
        }
    });
    let s = setup(&server, "");
    s.run(vec![relay(sample_batch())]);
    assert_eq!(server.seen_at("/ga4/").len(), 2);
    assert_eq!(server.seen_at("/sgtm/").len(), 1);
    assert_eq!(
        server.seen_at("/meta/").len(),
        6,
        "two events, three attempts each"
    );
    let last_other = server
        .seen_at("/ga4/")
        .into_iter()
        .chain(server.seen_at("/sgtm/"))
        .map(|r| r.at)
        .max()
        .unwrap();
    let last_meta = server
        .seen_at("/meta/")
        .into_iter()
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        last_other < last_meta,
        "GA4 and sGTM waited for Meta's retries"
    );
    for delivery in deliveries(&s) {
        let (_, attempts) = with_attempts(&s, delivery.id);
        let to_meta = delivery.unique_key.as_deref().unwrap().ends_with("/meta");
        if to_meta {
            assert_eq!(delivery.state, JobState::Dead);
            assert_eq!(attempts.len(), 3);
            let error = delivery.last_error.unwrap();
            assert!(error.contains("HTTP 503"), "{error}");
            assert!(!error.contains(META_TOKEN), "{error}");
        } else {
            assert_eq!(delivery.state, JobState::Succeeded);
            assert_eq!(attempts.len(), 1);
        }
    }
}

#[test]
fn a_bad_event_is_reported_while_the_rest_go_through() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(|_| 200);
    let s = setup(
        &server,
        "[relay.storefronts.dormant]\nactive = false\n\
         [relay.storefronts.dormant.destinations.sgtm]\nendpoint = \"sgtm\"\nshape = \"sgtm\"\n",
    );
    let mut batch = sample_batch();
    let events = batch["data"].as_array_mut().unwrap();
    events.insert(
        1,
        json!({"storefront_id": "bosley", "event_name": "purchase_completed",
               "event_time": "15/01/2026 10:25"}),
    );
    events.push(
        json!({"order_id": "9", "storefront_id": "acme", "event_name": "x",
                       "event_time": "2026-01-15T10:25:00Z"}),
    );
    events.push(
        json!({"order_id": "10", "storefront_id": "dormant", "event_name": "x",
                       "event_time": "2026-01-15T10:25:00Z"}),
    );
    let ids = s.run(vec![relay(batch)]);

    assert_eq!(
        server.seen.lock().unwrap().len(),
        5,
        "the good events all went"
    );
    let (job, attempts) = with_attempts(&s, ids[0]);
    assert_eq!(job.state, JobState::Succeeded);
    let detail = attempts[0].detail.clone().unwrap();
    let counts = &detail["counts"];
    assert_eq!(counts["events"], 6);
    assert_eq!(counts["invalid"], 1);
    assert_eq!(counts["unknown_storefront"], 1);
    assert_eq!(counts["inactive_storefront"], 1);
    assert_eq!(counts["deliveries"], 5);
    let errors = detail["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    let text = errors[0]["errors"].to_string();
    assert!(
        text.contains("order_id: required") && text.contains("event_time: '15/01/2026 10:25'"),
        "{text}"
    );
    assert!(
        errors[1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("storefront_id: 'acme' is not configured"),
        "{errors:?}"
    );

    // The errors file: one line per bad event, with the event, not world-readable.
    let path = PathBuf::from(detail["errors_file"].as_str().unwrap());
    assert!(path.starts_with(s.data().join("output")), "{path:?}");
    assert_eq!(
        path.file_name().unwrap().to_string_lossy(),
        format!("relay-{}.errors.ndjson", ids[0])
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // Nor is the listing of the folders the daemon made for it.
    for dir in [path.parent().unwrap(), &s.data().join("output")] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "{}", dir.display());
    }
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["event"]["storefront_id"], "acme");
}

#[test]
fn an_ndjson_file_under_the_data_dir_is_relayed_and_a_file_elsewhere_is_refused() {
    let server = Server::start(|_| 200);
    let s = setup(&server, "");
    let spool = s.data().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut text = String::new();
    for event in sample_batch()["data"].as_array().unwrap() {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    text.push_str("{not json\n");
    std::fs::write(spool.join("batch.ndjson"), &text).unwrap();
    let outside = s.dir.path().join("outside.json");
    std::fs::write(&outside, OMS_SAMPLE).unwrap();
    // A file outside the allowed folders is refused at enqueue...
    let refused = jobd::handlers::Registry::builtin()
        .validate(&relay(json!({"file": outside})), &s.config)
        .unwrap_err();
    assert!(
        matches!(&refused, jobd::handlers::Refusal::Payload(e) if e.field == "file"),
        "{refused:?}"
    );
    let refused = refused.to_string();
    assert!(refused.contains("outside the allowed folders"), "{refused}");
    // (and checked again when the job runs: tests/it/payload_paths.rs).
    let ids = s.run(vec![relay(json!({"file": spool.join("batch.ndjson")}))]);
    assert_eq!(server.seen.lock().unwrap().len(), 5);
    let (job, attempts) = with_attempts(&s, ids[0]);
    assert_eq!(job.state, JobState::Succeeded);
    let detail = attempts[0].detail.clone().unwrap();
    assert_eq!(detail["counts"]["deliveries"], 5);
    assert_eq!(detail["errors"][0]["line"], 4);
}

/// The sample batch with its order ids made unique to `tag`, as OMS JSON text.
fn sample_tagged(tag: &str) -> String {
    OMS_SAMPLE.replace(
        "\"order_id\": \"2025",
        &format!("\"order_id\": \"{tag}2025"),
    )
}

#[test]
fn batches_from_a_watched_folder_the_socket_and_a_plain_insert_all_reach_the_destinations() {
    use std::io::{BufRead, BufReader, Write};
    let server = Server::start(|_| 200);
    let daemon = crate::ingest::TestDaemon::start(&format!(
        "{}[[watch]]\npath = \"{{dir}}/in\"\npattern = \"*json\"\nkind = \"relay\"\n\
         [kinds.http.retry]\nmax_attempts = 1\n",
        routes(&server.base)
    ));
    // A file dropped into the watched folder (written aside, then moved in).
    std::fs::create_dir_all(&daemon.input).unwrap();
    let aside = daemon.dir.path().join("batch-a.json");
    std::fs::write(&aside, sample_tagged("A")).unwrap();
    std::fs::rename(&aside, daemon.input.join("batch-a.json")).unwrap();
    // A line on the enqueue socket.
    let stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let batch: Value = serde_json::from_str(&sample_tagged("B")).unwrap();
    let request = json!({"op": "enqueue", "job": {"kind": "relay", "payload": batch}});
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    // A row another program inserts.
    let conn = rusqlite::Connection::open(&daemon.db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO jobs (kind, payload) VALUES ('relay', ?1)",
        [sample_tagged("C")],
    )
    .unwrap();
    drop(conn);

    let jobs = daemon.wait_for_jobs(
        "three relay batches and their 15 deliveries",
        Duration::from_secs(60),
        |jobs| {
            jobs.iter().filter(|j| j.kind == "relay").count() == 3
                && jobs.iter().filter(|j| j.kind == "http").count() == 15
                && jobs.iter().all(|j| j.state.is_terminal())
        },
    );
    assert!(
        jobs.iter().all(|j| j.state == JobState::Succeeded),
        "{jobs:?}\n{}",
        daemon.log()
    );
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 15, "five deliveries per batch");
    for tag in ["A", "B", "C"] {
        let order = format!("{tag}2025020100003333");
        let purchase: Vec<&Request> = seen
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&order))
            .collect();
        assert_eq!(
            purchase.len(),
            2,
            "batch {tag}'s purchase goes to GA4 and Meta"
        );
    }
    let sources: Vec<Option<String>> = jobs
        .iter()
        .filter(|j| j.kind == "relay")
        .map(|j| j.source.clone())
        .collect();
    assert!(
        sources.iter().flatten().any(|s| s.contains("batch-a.json")),
        "the watched file's job names it: {sources:?}"
    );
}
