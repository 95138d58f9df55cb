//! A 10,000-customer `http_pull` sync (40 pages of 250) through a real daemon against a
//! local fake store: once without a rate limit (target: at most 5 s) and once at
//! 2 requests/s (what the limit implies, about 20 s, and at most 10% over).
//! Run: `cargo bench --bench pull`.

// The tests' own HTTP server (thread per connection, keep-alive), shared with them.
#[path = "../tests/it/http_server.rs"]
mod http_server;

use http_server::{HttpServer, Request, Response};
use jobd::clock::SystemClock;
use jobd::config::{Config, ConfigSource};
use jobd::daemon::{Daemon, DaemonOptions};
use jobd::handlers::Registry;
use jobd::job::NewJob;
use jobd::store::sink::SinkDb;
use jobd::store::OpenOptions;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 10_000;
const LIMIT: usize = 250;
const PATH: &str = "/admin/api/2024-10/customers.json";

/// Serves the customers with Link pagination; page bodies are built once up front so
/// the figure is jobd's, not the fake store's. The server stops when dropped.
fn serve() -> HttpServer {
    let pages: Vec<String> = (0..CUSTOMERS / LIMIT)
        .map(|p| {
            let items: Vec<Value> = (p * LIMIT..(p + 1) * LIMIT)
                .map(|i| {
                    json!({"id": i + 1, "email": format!("c{i}@example.com"),
                           "updated_at": "2024-01-01T00:00:00-05:00",
                           "default_address": {"city": "Kyoto"}})
                })
                .collect();
            json!({ "customers": items }).to_string()
        })
        .collect();
    // The Link header needs the server's address, known only once it listens.
    let base: Arc<OnceLock<String>> = Arc::default();
    let base_of_links = base.clone();
    let server = HttpServer::start(Arc::new(move |request: Request| {
        let url = reqwest::Url::parse(&format!("http://x{}", request.url)).unwrap();
        let page: usize = url
            .query_pairs()
            .find(|(k, _)| k == "page_info")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        if page + 1 < pages.len() {
            let base = base_of_links.get().expect("the server's address");
            headers.push((
                "Link".to_string(),
                format!(
                    "<{base}{PATH}?limit={LIMIT}&page_info={}>; rel=\"next\"",
                    page + 1
                ),
            ));
        }
        Response {
            status: 200,
            headers,
            body: pages[page].clone().into_bytes(),
        }
    }));
    base.set(server.base.clone()).unwrap();
    server
}

fn sync(base: &str, rate_limit: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/s.sock\"\nworkers = 4\n\
         [endpoints.shop]\nbase_url = \"{base}\"\nidempotency_header = \"\"\n{rate_limit}\n\
         [pipelines.customers]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"{PATH}\"\n\
         items_key = \"customers\"\nsink = {{ sqlite = \"{sink}\" }}\n\
         columns = {{ email = \"email\", city = \"default_address.city\" }}\n",
        db = dir.path().join("jobs.db").display(),
        data = dir.path().join("data").display(),
        sink = dir.path().join("shop.db").display(),
    );
    let config = Config::from_toml(&text, "bench").unwrap();
    let daemon = Daemon::start(
        config.clone(),
        DaemonOptions {
            clock: Arc::new(SystemClock),
            registry: Registry::builtin(),
            config_source: ConfigSource::Defaults,
            once: false,
            handle_signals: false,
            hooks: Vec::new(),
        },
    )
    .unwrap();
    let reader = jobd::store::open(&config.daemon.database, &OpenOptions::default()).unwrap();
    let started = Instant::now();
    daemon
        .client()
        .enqueue(vec![NewJob::new(
            "http_pull",
            json!({"pipeline": "customers"}),
        )])
        .unwrap();
    // The run is over when its last page has recorded the mark.
    while reader.sync_states().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    let state = &reader.sync_states().unwrap()[0];
    assert_eq!((state.last_run_items, state.last_run_pages), (10_000, 40));
    let stored = SinkDb::open(&dir.path().join("shop.db"))
        .unwrap()
        .count("customers")
        .unwrap();
    assert_eq!(stored, CUSTOMERS as u64);
    daemon.client().shutdown();
    daemon.wait().unwrap();
    elapsed
}

fn main() {
    let server = serve();
    let base = server.base.clone();
    let free = sync(&base, "");
    println!(
        "pull: {CUSTOMERS} customers in 40 pages, no rate limit: {:.2}s (target <= 5s), {:.0} items/s",
        free.as_secs_f64(),
        CUSTOMERS as f64 / free.as_secs_f64()
    );
    let limited = sync(&base, "rate_limit = \"2/s\"");
    // Burst 1: the first request goes at once, the other 39 every 500 ms.
    let implied = Duration::from_millis(39 * 500);
    println!(
        "pull: {CUSTOMERS} customers in 40 pages at 2 requests/s: {:.2}s (the limit implies {:.1}s; {:+.1}%, target <= +10%)",
        limited.as_secs_f64(),
        implied.as_secs_f64(),
        (limited.as_secs_f64() / implied.as_secs_f64() - 1.0) * 100.0
    );
    drop(server);
}
