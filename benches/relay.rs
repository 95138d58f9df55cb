//! The `relay` kind's two figures. Run: `cargo bench --bench relay`.
//!
//! 1. Fan-out: a 4,000-event OMS batch (the OMS page size; two bosley events, with email
//!    and phone to hash, for each pfizer event) validated, routed to GA4 + Meta + sGTM
//!    bodies and its deliveries enqueued in the completion transaction
//!    (`synchronous=full`). Timed: the handler's `run` plus the `complete` transaction.
//!    Target: at most 200 ms.
//! 2. Deliveries: 100,000 relay deliveries (50,000 bosley events in 4,000-event batches,
//!    each to GA4 and Meta) through a real daemon (16 workers) against a local keep-alive
//!    server that answers 200 at once. Timed: from daemon start until every batch and
//!    delivery is done (the fan-out included). Target: at least 3,000 deliveries/s.

#[path = "support/mod.rs"]
mod support;

use jobd::clock::{Clock, SystemClock};
use jobd::config::{Config, ConfigSource};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::relay::Relay;
use jobd::handlers::{Handler, JobContext, NoSyncState, Registry, StopSignal};
use jobd::job::{Completion, NewJob, Outcome, Resolution};
use jobd::store::{CheckpointMode, ClaimSpec, OpenOptions, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 4_000;
const FAN_OUT_RUNS: usize = 5;
const DELIVERIES: usize = 100_000;
const WORKERS: usize = 16;

fn main() {
    std::env::set_var("JOBD_BENCH_GA4_SECRET", "bench-ga4-secret");
    std::env::set_var("JOBD_BENCH_META_TOKEN", "bench-meta-token");
    // `cargo bench --bench relay -- fanout` (or `deliveries`) runs one figure.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let base = support::answer_200_server();
    if only.as_deref().is_none_or(|o| o == "fanout") {
        fan_out(&base);
    }
    if only.as_deref().is_none_or(|o| o == "deliveries") {
        deliveries(&base);
    }
}

fn config(dir: &Path, base: &str) -> Config {
    let text = format!(
        r#"[daemon]
database = "{db}"
data_dir = "{data}"
socket = "{data}/s.sock"
workers = {WORKERS}
[endpoints.ga4]
base_url = "{base}/ga4"
[endpoints.ga4.query_secrets]
api_secret = {{ env = "JOBD_BENCH_GA4_SECRET" }}
[endpoints.meta]
base_url = "{base}/meta/v21.0"
[endpoints.meta.query_secrets]
access_token = {{ env = "JOBD_BENCH_META_TOKEN" }}
[endpoints.sgtm]
base_url = "{base}/sgtm"
[relay.storefronts.bosley.destinations.ga4]
endpoint = "ga4"
shape = "ga4"
measurement_id = "G-BENCH"
currency = "USD"
event_names = {{ purchase_completed = "purchase" }}
[relay.storefronts.bosley.destinations.meta]
endpoint = "meta"
shape = "meta_capi"
pixel_id = "1234567890"
currency = "USD"
event_names = {{ purchase_completed = "Purchase" }}
[relay.storefronts.pfizer.destinations.sgtm]
endpoint = "sgtm"
shape = "sgtm"
"#,
        db = dir.join("jobs.db").display(),
        data = dir.join("data").display(),
    );
    std::fs::create_dir_all(dir.join("data")).unwrap();
    Config::from_toml(&text, "bench").unwrap()
}

/// One OMS-shaped event; `pfizer` ones go to sGTM, the others to GA4 and Meta.
fn event(n: usize, pfizer: bool) -> Value {
    if pfizer {
        json!({"t-value": "pfizeraffiliate_0123", "storefront_id": "pfizer",
               "event_name": "rx_issued", "event_time": "2026-01-15T10:20:30Z",
               "order_id": format!("{:016}", n), "session_id": format!("sess_{n}"),
               "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "pfizer_q1"})
    } else {
        json!({"t-value": "bosleyaffiliate_0123", "storefront_id": "bosley",
               "event_name": "purchase_completed", "event_time": "2026-01-15T10:25:00Z",
               "order_id": format!("{:016}", n), "order_revenue": 80.79,
               "order_created_date": "2026-01-15T10:25:00Z",
               "email": format!("Customer{n}@Example.com"), "phone": "+1 (555) 123-4567",
               "session_id": format!("sess_{n}"), "utm_source": "google",
               "utm_medium": "organic", "utm_campaign": "bosley_q1"})
    }
}

fn open(config: &Config) -> Box<dyn Store> {
    jobd::store::open(
        &config.daemon.database,
        &OpenOptions {
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// Figure 1: run + complete of 4,000-event batches, each with fresh order ids.
fn fan_out(base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config(dir.path(), base));
    let mut db = open(&config);
    // As in the daemon: the writer never checkpoints after a commit; its checkpointer
    // thread does, on its own connection. Here that happens between runs, untimed.
    db.sqlite()
        .expect("SQLite")
        .disable_auto_checkpoint()
        .unwrap();
    let mut timings = Vec::new();
    let mut deliveries = 0;
    for run in 0..FAN_OUT_RUNS {
        let events: Vec<Value> = (0..BATCH)
            .map(|i| event(run * BATCH + i, i % 3 == 2))
            .collect();
        // Above the deliveries of earlier runs, so the claim takes the new batch.
        let batch = NewJob::new(
            "relay",
            json!({"count": BATCH, "data": events, "next_index": BATCH}),
        )
        .priority(10);
        let now = SystemClock.now_ms();
        db.write(|tx| tx.enqueue(&[batch], now)).unwrap();
        let job = db
            .write(|tx| {
                tx.claim(
                    &ClaimSpec {
                        limit: 1,
                        ..Default::default()
                    },
                    "bench",
                    now + 60_000,
                    now,
                )
            })
            .unwrap()
            .remove(0);
        let ctx = JobContext {
            clock: Arc::new(SystemClock),
            config: config.clone(),
            data_dir: config.daemon.data_dir.clone(),
            deadline: Instant::now() + Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            stop: Arc::new(StopSignal::default()),
            children: None,
            sync_state: Arc::new(NoSyncState),
            progress_report: Default::default(),
            holds: Default::default(),
        };
        let started = Instant::now();
        let started_at = SystemClock.now_ms();
        let Outcome::Success {
            follow_ups, detail, ..
        } = Relay.run(&job, &ctx)
        else {
            panic!("the batch did not succeed");
        };
        let routed = started.elapsed();
        deliveries = follow_ups.len();
        let completion = Completion {
            job_id: job.id,
            parent_id: None,
            attempt: job.attempts,
            worker: "bench".into(),
            started_at,
            finished_at: SystemClock.now_ms(),
            resolution: Resolution::Succeeded {
                follow_ups,
                sync_marks: Vec::new(),
            },
            detail,
        };
        db.write(|tx| tx.complete(&completion, SystemClock.now_ms()))
            .unwrap();
        let total = started.elapsed();
        println!(
            "relay fan-out run {}: {BATCH} events -> {deliveries} deliveries: handler {:.1} ms, with the completion {:.1} ms",
            run + 1,
            routed.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0
        );
        timings.push(total);
        db.sqlite()
            .expect("SQLite")
            .checkpoint(CheckpointMode::Truncate, Duration::from_secs(5))
            .unwrap();
    }
    timings.sort();
    println!(
        "relay fan-out: {BATCH} events ({deliveries} deliveries), synchronous=full, {FAN_OUT_RUNS} runs: \
         best {:.1} ms, median {:.1} ms, worst {:.1} ms (target <= 200 ms)",
        timings[0].as_secs_f64() * 1000.0,
        timings[timings.len() / 2].as_secs_f64() * 1000.0,
        timings[timings.len() - 1].as_secs_f64() * 1000.0
    );
}

/// Figure 2: 100,000 deliveries through a real daemon.
fn deliveries(base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), base);
    let events_needed = DELIVERIES / 2;
    let batches: Vec<NewJob> = (0..events_needed.div_ceil(BATCH))
        .map(|b| {
            let events: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(events_needed))
                .map(|n| event(n, false))
                .collect();
            NewJob::new("relay", json!({"data": events}))
        })
        .collect();
    let batch_count = batches.len();
    let mut db = open(&config);
    db.write(|tx| tx.enqueue(&batches, SystemClock.now_ms()))
        .unwrap();
    drop(db);
    let started = Instant::now();
    let daemon = Daemon::start(
        config.clone(),
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: ConfigSource::Defaults,
            once: true,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap();
    let (_, counters) = daemon.wait().unwrap();
    let elapsed = started.elapsed();
    println!("{counters:?}");
    let delivered = counters.succeeded as usize - batch_count.min(counters.succeeded as usize);
    assert_eq!(
        counters.succeeded as usize,
        DELIVERIES + batch_count,
        "every batch and delivery should succeed"
    );
    println!(
        "relay deliveries: {delivered} deliveries ({batch_count} batches of <= {BATCH} events, GA4 + Meta), \
         {WORKERS} workers, synchronous=full: {:.2}s, {:.0} deliveries/s (target >= 3,000/s)",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
}
