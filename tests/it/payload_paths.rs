//! Files named in payloads stay inside the allowed folders (the data directory, the
//! `[[watch]]` folders, `daemon.allowed_paths`), for every kind that names one: refused at
//! enqueue over the socket and through jobctl, and checked again when the job runs, after
//! the file was swapped for a symlink.

use crate::common::{stderr, wait_until, Sandbox};
use crate::socket::Client;
use jobd::job::JobState;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

const RULE: &str = "must resolve, after symlinks, under the data directory";

const KINDS: &str = r#"
[endpoints.api]
base_url = "http://127.0.0.1:9"
[commands.report]
program = "/bin/true"
[pipelines.p]
kind = "csv_import"
endpoint = "api"
path = "/rows"
[[pipelines.p.columns]]
name = "id"
"#;

/// A sandbox with a watched folder `in/`, an allowed folder `shared/`, a folder nobody
/// allowed (`outside/`), and in each a file `a.csv` and a folder set `set/`.
fn sandbox() -> Sandbox {
    let sandbox = Sandbox::new("", "");
    let root = sandbox.dir.path().to_path_buf();
    let config = format!(
        "[daemon]\nallowed_paths = [\"{shared}\"]\n",
        shared = root.join("shared").display()
    );
    // `allowed_paths` belongs to [daemon]: rewrite the file with it right after the paths.
    let text = fs::read_to_string(sandbox.config()).unwrap();
    let text = text.replacen("[daemon]\n", &config, 1);
    fs::write(sandbox.config(), text).unwrap();
    sandbox.append_config(KINDS);
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\nkind = \"noop\"\nsettle = \"1h\"\nrescan = \"1h\"\n",
        root.join("in").display()
    ));
    for folder in ["in", "shared", "outside", "var/spool/9"] {
        fs::create_dir_all(root.join(folder).join("set")).unwrap();
        fs::write(root.join(folder).join("a.csv"), "id\n1\n").unwrap();
    }
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    sandbox
}

/// Each kind's payload naming `path` as the file (or folder) it reads.
fn payloads(path: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("csv_import", json!({"pipeline": "p", "file": path})),
        ("oneroster", json!({"dir": path})),
        (
            "http",
            json!({"endpoint": "api", "path": "/x", "body_file": path}),
        ),
        (
            "http",
            json!({"endpoint": "api", "path": "/x", "file": path}),
        ),
        (
            "http",
            json!({"endpoint": "api", "path": "/x", "multipart": [{"name": "f", "file": path}]}),
        ),
        ("relay", json!({"file": path})),
        ("exec", json!({"command": "report", "file": path})),
    ]
}

fn outside_paths(root: &Path) -> Vec<String> {
    let link = root.join("in/link.csv");
    if !link.exists() {
        symlink(root.join("outside/a.csv"), &link).unwrap();
        symlink(root.join("outside/set"), root.join("in/linkset")).unwrap();
    }
    vec![
        "/etc/passwd".into(),
        root.join("outside/a.csv").display().to_string(),
        // A symlink inside the watched folder that points outside.
        link.display().to_string(),
        root.join("in/linkset").display().to_string(),
        // `..` out of an allowed folder, absolute and relative to the data directory.
        format!("{}/in/../outside/a.csv", root.display()),
        "../outside/a.csv".into(),
        "spool/9/../../../outside/set".into(),
        "nosuch/../../outside/a.csv".into(),
    ]
}

fn inside_paths(root: &Path) -> Vec<String> {
    vec![
        root.join("var/spool/9/a.csv").display().to_string(),
        "spool/9/a.csv".into(),
        root.join("in/a.csv").display().to_string(),
        root.join("shared/set").display().to_string(),
        format!("{}/in/set/../a.csv", root.display()),
    ]
}

#[test]
fn every_kind_refuses_a_file_outside_the_allowed_folders_over_the_socket_and_jobctl() {
    let sandbox = sandbox();
    let root = sandbox.dir.path().to_path_buf();
    let mut daemon = sandbox.spawn_jobd(&[]);
    let socket = root.join("var/run/jobd.sock");
    wait_until(Duration::from_secs(20), "the socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let mut client = Client::connect_to(&socket);
    for path in outside_paths(&root) {
        for (kind, payload) in payloads(&path) {
            let request = json!({"op": "enqueue", "job": {"kind": kind, "payload": payload}});
            let answer = client.ask(&request.to_string());
            assert_eq!(answer["ok"], false, "{kind} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_payload", "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(RULE), "{kind} {path}: {message}");
        }
    }
    for path in inside_paths(&root) {
        for (kind, payload) in payloads(&path) {
            let request = json!({"op": "enqueue", "job": {"kind": kind, "payload": payload,
                                 "delay": "1h"}});
            let answer = client.ask(&request.to_string());
            assert_eq!(answer["ok"], true, "{kind} {path}: {answer}");
        }
    }
    crate::common::signal(&daemon, libc::SIGTERM);
    crate::common::wait_exit(&mut daemon, Duration::from_secs(20));

    let ids_before = sandbox.open().list(&Default::default()).unwrap().len();
    for path in outside_paths(&root).into_iter().take(5) {
        for (kind, payload) in payloads(&path) {
            let out = sandbox.jobctl(&["enqueue", kind, "--payload", &payload.to_string()]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{kind} {path}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(RULE),
                "{kind} {path}: {}",
                stderr(&out)
            );
        }
    }
    assert_eq!(
        sandbox.open().list(&Default::default()).unwrap().len(),
        ids_before,
        "nothing refused was enqueued"
    );
}

#[test]
fn a_file_swapped_for_a_symlink_after_the_enqueue_makes_the_job_dead_when_it_runs() {
    let sandbox = sandbox();
    let root = sandbox.dir.path().to_path_buf();
    let mut ids = Vec::new();
    for (n, (kind, _)) in payloads("x").into_iter().enumerate() {
        // Each job its own file (or folder) in the watched folder, allowed at enqueue.
        let own = root.join("in").join(format!("own{n}"));
        if kind == "oneroster" {
            fs::create_dir(&own).unwrap();
        } else {
            fs::write(&own, "id\n1\n").unwrap();
        }
        let payload = payloads(&own.display().to_string()).remove(n).1;
        let out = sandbox.jobctl(&["--json", "enqueue", kind, "--payload", &payload.to_string()]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let id: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push((kind, id["id"].as_i64().unwrap()));
        // Then someone replaces it with a symlink to what is not allowed.
        if own.is_dir() {
            fs::remove_dir(&own).unwrap();
            symlink(root.join("outside/set"), &own).unwrap();
        } else {
            fs::remove_file(&own).unwrap();
            symlink("/etc/passwd", &own).unwrap();
        }
    }
    let mut daemon = sandbox.spawn_jobd(&["--once"]);
    assert!(crate::common::wait_exit(&mut daemon, Duration::from_secs(30)).success());
    let db = sandbox.open();
    for (kind, id) in ids {
        let job = db.get(id).unwrap();
        let error = job.last_error.clone().unwrap_or_default();
        assert_eq!(job.state, JobState::Dead, "{kind} job {id}: {error}");
        assert!(
            error.contains(RULE) && error.contains("outside the allowed folders"),
            "{kind} job {id}: {error}"
        );
    }
}

#[test]
fn a_watch_whose_payload_names_a_file_outside_the_allowed_folders_is_refused_at_start() {
    let sandbox = Sandbox::new("", KINDS);
    sandbox.append_config(&format!(
        "[[watch]]\npath = \"{}\"\nkind = \"http\"\n[watch.payload]\nendpoint = \"api\"\n\
         path = \"/x\"\nbody_file = \"../../etc/passwd\"\n",
        sandbox.path("in").display()
    ));
    for args in [vec!["--check-config"], vec!["--once"]] {
        let out = std::process::Command::new(crate::common::JOBD)
            .arg("--config")
            .arg(sandbox.config())
            .args(&args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("watch[0]")
                && err.contains("http payload: body_file")
                && err.contains(RULE),
            "{args:?}: {err}"
        );
    }
}
