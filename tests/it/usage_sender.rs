//! The old "external API sender" as configuration: `config/examples/usage-sender.toml`,
//! run by the real daemon with only its paths, URLs and timings changed, against a local
//! server. Batches dropped into the watched folder are POSTed with the bearer token; 409
//! counts as success; a batch that keeps failing dies, a webhook goes out, and its file
//! lands in failed/ beside its .error.json.

use crate::common::*;
use crate::http_server::{HttpServer, Request, Response};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "usage-token-e2e-5150";

/// The example config, pointed at the sandbox and the local server.
fn example_config(sandbox: &Sandbox, server: &str) -> String {
    let text = include_str!("../../config/examples/usage-sender.toml");
    let mut config: toml::Table = toml::from_str(text).unwrap();
    let data = sandbox.path("var");
    let daemon = config["daemon"].as_table_mut().unwrap();
    daemon.insert("database".into(), sandbox.db().display().to_string().into());
    daemon.insert("data_dir".into(), data.display().to_string().into());
    daemon.insert(
        "socket".into(),
        data.join("jobd.sock").display().to_string().into(),
    );
    let endpoints = config["endpoints"].as_table_mut().unwrap();
    endpoints["usage"]
        .as_table_mut()
        .unwrap()
        .insert("base_url".into(), server.into());
    endpoints["usage"]["auth"]
        .as_table_mut()
        .unwrap()
        .insert("token_env".into(), "JOBD_E2E_USAGE_TOKEN".into());
    endpoints["alerts"]
        .as_table_mut()
        .unwrap()
        .insert("base_url".into(), format!("{server}/hook").into());
    let retry = config["kinds"]["http"]["retry"].as_table_mut().unwrap();
    retry.insert("base".into(), "20ms".into());
    retry.insert("max_attempts".into(), 3.into());
    let watch = config["watch"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap();
    watch.insert(
        "path".into(),
        sandbox.path("inbox").display().to_string().into(),
    );
    watch.insert("settle".into(), "200ms".into());
    toml::to_string(&config).unwrap()
}

fn named(files: &[PathBuf], name: &str) -> bool {
    files
        .iter()
        .any(|f| f.file_name().is_some_and(|n| n == name))
}

#[test]
fn batches_are_sent_retried_and_the_dead_one_notified_and_kept_in_failed() {
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let record = seen.clone();
    let server = HttpServer::start(Arc::new(move |request: Request| {
        let body = String::from_utf8_lossy(&request.body).to_string();
        let status = if request.url.starts_with("/hook") {
            200
        } else if body.contains("\"batch\":\"dup\"") {
            409
        } else if body.contains("\"batch\":\"bad\"") {
            500
        } else {
            201
        };
        record.lock().unwrap().push(request);
        Response {
            status,
            headers: vec![],
            body: b"{}".to_vec(),
        }
    }));
    let sandbox = Sandbox::new("", "");
    std::fs::write(sandbox.config(), example_config(&sandbox, &server.base)).unwrap();
    std::env::set_var("JOBD_E2E_USAGE_TOKEN", TOKEN);
    let inbox = sandbox.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "jobd to start", || {
        sandbox.log().contains("jobd ready")
    });
    let batches = [("ok.json", "ok"), ("dup.json", "dup"), ("bad.json", "bad")];
    for (name, batch) in batches {
        let records: Vec<Value> = (0..100).map(|i| serde_json::json!({"record": i})).collect();
        let body = serde_json::json!({"batch": batch, "records": records}).to_string();
        // Write, then rename in: the producer pattern the watcher takes at once.
        let temp = inbox.join(format!(".{name}.tmp"));
        std::fs::write(&temp, &body).unwrap();
        std::fs::rename(&temp, inbox.join(name)).unwrap();
    }
    let data = sandbox.path("var");
    wait_until(
        Duration::from_secs(60),
        "two batches done and one failed",
        || {
            let done = files_under(&data.join("done"));
            let failed = files_under(&data.join("failed"));
            named(&done, "ok.json")
                && named(&done, "dup.json")
                && named(&failed, "bad.json.error.json")
        },
    );
    wait_until(Duration::from_secs(30), "the webhook", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.url.starts_with("/hook"))
    });
    signal(&jobd, libc::SIGTERM);
    assert!(
        wait_exit(&mut jobd, Duration::from_secs(30)).success(),
        "{}",
        sandbox.log()
    );

    let seen = seen.lock().unwrap();
    let posts: Vec<&Request> = seen.iter().filter(|r| r.url == "/usage").collect();
    assert_eq!(
        posts.len(),
        1 + 1 + 3,
        "ok once, dup once (409 is success), bad three times"
    );
    for post in &posts {
        let auth = post
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        assert_eq!(
            auth.map(|(_, v)| v.as_str()),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(post
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("idempotency-key")));
        let body: Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(
            body["records"].as_array().unwrap().len(),
            100,
            "the file is the body"
        );
    }
    assert!(
        std::fs::read_dir(&inbox).unwrap().next().is_none(),
        "the inbox is empty"
    );
    let hook = seen.iter().find(|r| r.url.starts_with("/hook")).unwrap();
    let message: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(message["kind"], "http");
    assert_eq!(message["attempts"], 3);
    assert!(
        message["last_error"]
            .as_str()
            .unwrap()
            .contains("attempts exhausted (3/3)"),
        "{message}"
    );
    assert!(
        message["source"].as_str().unwrap().contains("bad.json"),
        "{message}"
    );
    assert!(
        !hook
            .body
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes()),
        "the token leaked"
    );
    let error_file = files_under(&data.join("failed"))
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == "bad.json.error.json"))
        .unwrap();
    let error: Value = serde_json::from_str(&std::fs::read_to_string(error_file).unwrap()).unwrap();
    assert_eq!(error["attempts"], 3);
    assert!(!sandbox.log().contains(TOKEN), "the token reached the log");
}
