//! `csv_import` end to end: files become batches that a real HTTP server on 127.0.0.1
//! receives; schema errors with line numbers; Shift_JIS and BOM; quoted newlines; the same
//! file twice; fan-in summaries when batches die; kill -9 during the fan-out.

use crate::common::{signal, wait_exit, wait_until, InProcessDaemon, Sandbox};
use crate::http_server::{HttpServer, Request, Response};

use jobd::job::{JobId, JobState, NewJob};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A server that records every request and answers `status(path, body)`.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    _server: HttpServer,
}

impl Server {
    fn start(status: impl Fn(&str, &Value) -> u16 + Send + Sync + 'static) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let server = HttpServer::start(Arc::new(move |request: Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let code = status(&request.url, &body);
            recorded.lock().unwrap().push((request.url, body));
            Response {
                status: code,
                headers: Vec::new(),
                body: b"{}".to_vec(),
            }
        }));
        Server {
            base: server.base.clone(),
            seen,
            _server: server,
        }
    }

    fn seen_at(&self, path: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(url, _)| url.starts_with(path))
            .map(|(_, body)| body.clone())
            .collect()
    }
}

const CUSTOMERS: &str = r#"
[pipelines.customers]
kind = "csv_import"
endpoint = "sfmc"
path = "/hub/v1/dataevents/key:Customers/rowset"
body = "sfmc_rowset"
keys = ["SubscriberKey"]
batch_size = 2
max_error_rate = 0.5

[[pipelines.customers.columns]]
name = "id"
rename = "SubscriberKey"
required = true

[[pipelines.customers.columns]]
name = "email"
type = "email"
required = true

[[pipelines.customers.columns]]
name = "name"
max_len = 40

[[pipelines.customers.columns]]
name = "points"
type = "integer"
default = 0

[[pipelines.customers.columns]]
name = "joined"
type = "date"

[[pipelines.customers.columns]]
name = "plan"
type = "enum"
values = ["free", "pro"]
"#;

fn setup(server: &Server, pipelines: &str) -> InProcessDaemon {
    let s = InProcessDaemon::new(
        "workers = 2\nsynchronous = \"normal\"",
        &format!(
            "[retry]\nbase = \"50ms\"\njitter = 0.0\ncap = \"1s\"\nmax_attempts = 2\n\
             [endpoints.sfmc]\nbase_url = \"{base}\"\n{pipelines}",
            base = server.base,
        ),
    );
    std::fs::create_dir_all(s.data().join("input")).unwrap();
    s
}

/// Writes an input file under data/input/.
fn input(s: &InProcessDaemon, name: &str, bytes: &[u8]) -> PathBuf {
    let path = s.data().join("input").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The one file under output/YYYYMMDD/ with this name.
fn output(s: &InProcessDaemon, name: &str) -> PathBuf {
    let out = s.data().join("output");
    let day = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
        .next()
        .expect("a dated output directory")
        .unwrap()
        .path();
    let name_of_day = day.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name_of_day.len() == 8 && name_of_day.bytes().all(|b| b.is_ascii_digit()),
        "{name_of_day} is YYYYMMDD"
    );
    day.join(name)
}

fn summary(s: &InProcessDaemon, name: &str) -> Value {
    let path = output(s, &format!("{name}.summary.json"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "summary is not world-readable");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn import(pipeline: &str, file: &Path) -> NewJob {
    NewJob::new(
        "csv_import",
        json!({"pipeline": pipeline, "file": file, "size": 1, "extra": {"folder": "input/daily"}}),
    )
}

/// Every row the server received in rowset bodies, by key.
fn rows_by_key(bodies: &[Value]) -> std::collections::BTreeMap<String, Value> {
    let mut rows = std::collections::BTreeMap::new();
    for body in bodies {
        for row in body.as_array().expect("a rowset is an array") {
            let key = row["keys"]["SubscriberKey"].as_str().unwrap().to_string();
            rows.insert(key, row["values"].clone());
        }
    }
    rows
}

#[test]
fn batches_reach_the_server_typed_and_bad_rows_are_reported_by_line() {
    let server = Server::start(|_, _| 200);
    let follow = format!(
        "{CUSTOMERS}\n[pipelines.customers.follow_up]\nkind = \"http\"\npayload = {{ endpoint = \"sfmc\", path = \"/automation/run\", json = {{ file = \"{{{{name}}}}\", summary = \"{{{{summary}}}}\" }} }}\n"
    );
    let s = setup(&server, &follow);
    // A BOM; a quoted newline and doubled quotes; a bad email on line 5 (the record on
    // lines 3-4 spans two lines); a short record on line 7; an unknown column ignored.
    let text = "\u{FEFF}id,email,name,points,joined,plan,extra\n\
                c1,a@example.jp,\"Smith, \"\"Al\"\"\",10,2024-01-31,pro,x\n\
                c2,b@example.jp,\"two\nlines\",,2024/02/01,free,x\n\
                c3,not-an-email,C,3,2024-01-01,pro,x\n\
                c4,d@example.jp,D,,,,x\n\
                c5,e@example.jp\n\
                c6,f@example.jp,F,x7,2024-13-01,gold,x\n";
    let file = input(&s, "customers.csv", text.as_bytes());
    let ids = s.run(vec![import("customers", &file)]);

    let parent = s.job(ids[0]);
    assert_eq!(parent.state, JobState::Succeeded, "{:?}", parent.last_error);
    let bodies = server.seen_at("/hub/v1/dataevents/key:Customers/rowset");
    assert_eq!(bodies.len(), 2, "3 valid rows in batches of 2");
    let rows = rows_by_key(&bodies);
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["c1", "c2", "c4"]);
    assert_eq!(
        rows["c1"],
        json!({"email": "a@example.jp", "name": "Smith, \"Al\"", "points": 10, "joined": "2024-01-31", "plan": "pro"})
    );
    assert_eq!(rows["c2"]["name"], "two\nlines");
    assert_eq!(rows["c2"]["points"], 0, "the default fills an empty cell");
    assert_eq!(rows["c2"]["joined"], "2024-02-01");
    assert_eq!(rows["c4"]["joined"], Value::Null);

    let errors = std::fs::read_to_string(output(&s, "customers.csv.errors.csv")).unwrap();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines[0], "line,column,value,reason");
    assert_eq!(lines[1], "5,email,not-an-email,is not an email address");
    assert_eq!(lines[2], "7,,,\"2 fields, expected 7\"");
    assert!(
        lines[3].starts_with("8,points,x7,is not an integer"),
        "{errors}"
    );
    assert!(
        lines[4].starts_with("8,joined,2024-13-01,is not a date"),
        "{errors}"
    );
    assert!(
        lines[5].starts_with("8,plan,gold,\"is not one of: free, pro"),
        "{errors}"
    );

    let summary = summary(&s, "customers.csv");
    assert_eq!(summary["status"], "completed");
    assert_eq!(
        (
            &summary["rows_read"],
            &summary["rows_valid"],
            &summary["rows_invalid"]
        ),
        (&json!(6), &json!(3), &json!(3))
    );
    assert_eq!(summary["batches"], 2);
    assert_eq!(summary["batches_succeeded"], 2);
    assert_eq!(summary["encoding"], "UTF-8");
    assert!(summary["duration_ms"].as_i64().unwrap() >= 0);
    // Every batch succeeded: their bodies are gone; the follow-up ran with the summary.
    let bodies = Path::new(summary["bodies_file"].as_str().unwrap());
    assert!(bodies.ends_with(format!("spool/csv_import/batches/{}.bodies", ids[0])));
    assert!(!bodies.exists());
    let follow_up = server.seen_at("/automation/run");
    assert_eq!(follow_up.len(), 1);
    assert_eq!(follow_up[0]["file"], "customers.csv");
    assert_eq!(follow_up[0]["summary"], summary["summary_file"]);
}

#[test]
fn a_shift_jis_file_arrives_as_utf8_json() {
    let server = Server::start(|_, _| 200);
    let s = setup(&server, CUSTOMERS);
    let names = ["山田太郎", "ｶﾀｶﾅ ﾃｽﾄ", "髙橋①", "渡辺　花子"];
    let mut text = String::from("id,email,name,points,joined,plan\r\n");
    for (i, name) in names.iter().enumerate() {
        text.push_str(&format!("k{i},u{i}@example.jp,{name},{i},,free\r\n"));
    }
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
    assert!(!unmappable, "every name has a Shift_JIS (CP932) code");
    assert!(
        std::str::from_utf8(&sjis).is_err(),
        "the fixture is not UTF-8"
    );
    let file = input(&s, "kaiin.csv", &sjis);
    let ids = s.run(vec![import("customers", &file)]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let rows = rows_by_key(&server.seen_at("/hub"));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(rows[&format!("k{i}")]["name"], *name);
    }
    assert_eq!(summary(&s, "kaiin.csv")["encoding"], "Shift_JIS");
}

#[test]
fn the_same_file_again_sends_nothing_twice() {
    let server = Server::start(|_, _| 200);
    let s = setup(&server, CUSTOMERS);
    let mut text = String::from("id,email\n");
    for i in 0..5 {
        text.push_str(&format!("r{i},r{i}@example.jp\n"));
    }
    let first = input(&s, "a.csv", text.as_bytes());
    s.run(vec![import("customers", &first)]);
    assert_eq!(server.seen_at("/hub").len(), 3);
    // The same bytes under another name, and once more under the first one.
    let second = input(&s, "b.csv", text.as_bytes());
    let ids = s.run(vec![
        import("customers", &second),
        import("customers", &first),
    ]);
    assert_eq!(server.seen_at("/hub").len(), 3, "nothing was sent again");
    for id in ids {
        let job = s.job(id);
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    }
    let summary = summary(&s, "b.csv");
    assert_eq!(summary["batches"], 3);
    assert_eq!(summary["batches_already_enqueued"], 3);
    assert_eq!(summary["batches_succeeded"], 0);
}

#[test]
fn fan_in_summary_counts_the_batches_that_died_and_a_retry_still_has_its_body() {
    // The batch holding key "bad" is refused (400, permanent) until the server is fixed;
    // the others succeed.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fixed_in_server = fixed.clone();
    let server = Server::start(move |_, body| {
        if body.to_string().contains("\"bad\"")
            && !fixed_in_server.load(std::sync::atomic::Ordering::SeqCst)
        {
            400
        } else {
            200
        }
    });
    let s = setup(&server, CUSTOMERS);
    let text = "id,email\nk1,a@x.jp\nk2,b@x.jp\nbad,c@x.jp\nk4,d@x.jp\nk5,e@x.jp\n";
    let file = input(&s, "partial.csv", text.as_bytes());
    let ids = s.run(vec![import("customers", &file)]);
    let parent = s.job(ids[0]);
    assert_eq!(parent.state, JobState::Dead);
    let error = parent.last_error.unwrap();
    assert!(error.contains("1 of 3 batches did not succeed"), "{error}");
    let summary = summary(&s, "partial.csv");
    assert_eq!(summary["status"], "completed_with_failures");
    assert_eq!(summary["batches"], 3);
    assert_eq!(summary["batches_succeeded"], 2);
    assert_eq!(summary["batches_dead"], 1);
    assert_eq!(summary["rows_valid"], 5);
    // The bodies stay so the dead batch can be retried by an operator.
    let kept = PathBuf::from(summary["bodies_file"].as_str().unwrap());
    assert!(kept.exists());
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The operator fixes the other side and retries the dead batch (what `jobctl retry`
    // does): it sends exactly its own range of the kept file.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let dead: Vec<JobId> = s
        .db()
        .list(&jobd::store::JobFilter {
            state: Some(JobState::Dead),
            kind: Some("http".into()),
            parent_id: Some(ids[0]),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(dead.len(), 1);
    let now = chrono::Utc::now().timestamp_millis();
    s.db().write(|tx| tx.revive(&dead, now)).unwrap();
    s.run(Vec::new());
    assert_eq!(s.job(dead[0]).state, JobState::Succeeded);
    let bodies = server.seen_at("/hub");
    assert_eq!(bodies.len(), 4, "3 batches and the retried one");
    assert_eq!(
        bodies[3],
        json!([{"keys": {"SubscriberKey": "bad"}, "values": {"email": "c@x.jp", "points": 0}},
               {"keys": {"SubscriberKey": "k4"}, "values": {"email": "d@x.jp", "points": 0}}])
    );
}

#[test]
fn files_that_cannot_be_imported_die_with_their_reason_and_send_nothing() {
    let server = Server::start(|_, _| 200);
    let s = setup(&server, CUSTOMERS);
    let no_email = input(&s, "no-email.csv", b"id,name\n1,A\n");
    let binary = input(&s, "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR");
    let mut text = String::from("id,email\n");
    for i in 0..10 {
        let email = if i < 6 { "broken" } else { "ok@x.jp" };
        text.push_str(&format!("{i},{email}\n"));
    }
    let mostly_bad = input(&s, "mostly-bad.csv", text.as_bytes());
    let missing = s.data().join("input/missing.csv");
    let ids = s.run(vec![
        import("customers", &no_email),
        import("customers", &binary),
        import("customers", &mostly_bad),
        import("customers", &missing),
    ]);
    let errors: Vec<String> = ids
        .iter()
        .map(|id| {
            let job = s.job(*id);
            assert_eq!(job.state, JobState::Dead);
            job.last_error.unwrap()
        })
        .collect();
    assert!(
        errors[0].contains("missing required column 'email'"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("not a CSV file"), "{}", errors[1]);
    assert!(
        errors[2].contains("6 of 10 rows invalid") && errors[2].contains("nothing was sent"),
        "{}",
        errors[2]
    );
    assert!(errors[3].contains("missing.csv"), "{}", errors[3]);
    assert!(server.seen_at("/").is_empty());
    assert_eq!(summary(&s, "mostly-bad.csv")["status"], "refused");
    assert_eq!(
        std::fs::read_to_string(output(&s, "mostly-bad.csv.errors.csv"))
            .unwrap()
            .lines()
            .count(),
        7
    );
}

#[test]
fn kill_9_during_the_fan_out_then_restart_enqueues_every_batch_once() {
    let server = Server::start(|_, _| 200);
    let sandbox = Sandbox::new(
        "workers = 2\nsynchronous = \"normal\"",
        &format!(
            "[endpoints.sfmc]\nbase_url = \"{}\"\n{}",
            server.base,
            CUSTOMERS.replace("batch_size = 2", "batch_size = 200")
        ),
    );
    assert!(sandbox.jobctl(&["migrate"]).status.success());
    let rows = 100_000;
    let mut text = String::with_capacity(rows * 40);
    text.push_str("id,email,name,points\n");
    for i in 0..rows {
        text.push_str(&format!("id{i},user{i}@example.jp,Name {i},{i}\n"));
    }
    // Under the data directory: payload files must be in an allowed folder.
    std::fs::create_dir_all(sandbox.path("var")).unwrap();
    let file = sandbox.path("var/big.csv");
    std::fs::write(&file, text).unwrap();
    let payload = json!({"pipeline": "customers", "file": file}).to_string();
    let out = sandbox.jobctl(&["enqueue", "csv_import", "--payload", &payload]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batches = rows / 200;
    let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let http_jobs = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM jobs WHERE kind = 'http'", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    // The bytes of batch bodies written so far (one file per import).
    let body_bytes = || -> u64 {
        let root = sandbox.path("var/spool/csv_import/batches");
        std::fs::read_dir(&root)
            .ok()
            .and_then(|mut files| files.next())
            .and_then(|f| f.ok()?.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0)
    };

    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(
        Duration::from_secs(60),
        "the fan-out to be under way",
        || body_bytes() > 0,
    );
    signal(&jobd, libc::SIGKILL);
    wait_exit(&mut jobd, Duration::from_secs(10));
    let written = body_bytes();
    assert!(written > 0, "killed while the bodies were being written");
    assert_eq!(
        http_jobs(&conn),
        0,
        "killed mid fan-out: no batch was enqueued yet"
    );

    let mut again = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(120), "the import to finish", || {
        conn.query_row(
            "SELECT state FROM jobs WHERE kind = 'csv_import'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
            == "succeeded"
    });
    signal(&again, libc::SIGTERM);
    wait_exit(&mut again, Duration::from_secs(30));
    let (jobs, keys, parents): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT unique_key), count(DISTINCT parent_id) \
             FROM jobs WHERE kind = 'http'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (jobs, keys, parents),
        (batches as i64, batches as i64, 1),
        "every batch enqueued exactly once, all children of the import"
    );
    let attempts: i64 = conn
        .query_row(
            "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.kind = 'csv_import'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The rescued stage 0, stage 0 again, and stage 1 (the fan-in).
    assert!(
        attempts >= 3,
        "stage 0 ran again after the kill ({attempts})"
    );
    let received = server.seen_at("/hub");
    let keys: std::collections::BTreeSet<String> = received
        .iter()
        .flat_map(|b| b.as_array().unwrap().clone())
        .map(|row| row["keys"]["SubscriberKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), rows, "every row arrived");
}

/// The whole path with the real daemon: a CSV renamed into a watched folder becomes a
/// csv_import job, its batches reach the server, the summary is written, and the file
/// ends in done/.
#[test]
fn a_csv_dropped_into_a_watched_folder_is_imported_end_to_end() {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = received.clone();
    let server = HttpServer::start(Arc::new(move |request: Request| {
        seen.lock()
            .unwrap()
            .push(serde_json::from_slice(&request.body).unwrap_or(Value::Null));
        Response {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        }
    }));
    let sandbox = Sandbox::new("synchronous = \"normal\"", "");
    let inbox = sandbox.path("input/daily");
    sandbox.append_config(&format!(
        "[endpoints.sfmc]\nbase_url = \"{base}\"\n\
         [pipelines.daily]\nkind = \"csv_import\"\nendpoint = \"sfmc\"\npath = \"/rows\"\nbatch_size = 2\nmax_error_rate = 0.5\n\
         [[pipelines.daily.columns]]\nname = \"Email\"\ntype = \"email\"\nrequired = true\n\
         [[pipelines.daily.columns]]\nname = \"名前\"\nrename = \"Name\"\n\
         [[watch]]\npath = \"{inbox}\"\npattern = \"*.csv\"\nkind = \"csv_import\"\npayload = {{ pipeline = \"daily\" }}\n",
        base = server.base,
        inbox = inbox.display(),
    ));
    let mut jobd = sandbox.spawn_jobd(&[]);
    wait_until(Duration::from_secs(20), "jobd to start", || {
        sandbox.log().contains("jobd ready")
    });
    let temp = sandbox.path("export.tmp");
    std::fs::write(
        &temp,
        "Email,名前\na@example.com,山田\nnot-an-email,田中\nc@example.com,佐藤\n",
    )
    .unwrap();
    std::fs::rename(&temp, inbox.join("customers.csv")).unwrap();
    let done = sandbox.path("var/done");
    wait_until(Duration::from_secs(60), "the import to finish", || {
        crate::common::files_under(&done)
            .iter()
            .any(|p| p.ends_with("customers.csv"))
    });
    signal(&jobd, libc::SIGTERM);
    assert!(
        wait_exit(&mut jobd, Duration::from_secs(30)).success(),
        "{}",
        sandbox.log()
    );
    let rows: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|batch| batch.as_array().cloned().unwrap_or_default())
        .collect();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["Name"].as_str()).collect();
    assert_eq!(names, ["山田", "佐藤"], "the valid rows, as UTF-8 JSON");
    let output = crate::common::files_under(&sandbox.path("var/output"));
    let summary = output
        .iter()
        .find(|p| p.to_string_lossy().ends_with("customers.csv.summary.json"))
        .expect("a summary");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    assert_eq!(
        (
            summary["rows_valid"].clone(),
            summary["rows_invalid"].clone()
        ),
        (json!(2), json!(1)),
        "{summary}"
    );
    let errors = output
        .iter()
        .find(|p| p.to_string_lossy().ends_with("customers.csv.errors.csv"))
        .expect("an errors file");
    assert!(std::fs::read_to_string(errors)
        .unwrap()
        .contains("not-an-email"));
    assert!(
        std::fs::read_dir(&inbox).unwrap().next().is_none(),
        "the inbox is empty"
    );
}

#[test]
fn an_input_with_a_250_byte_name_gets_a_shortened_summary_and_errors_file() {
    let server = Server::start(|_, _| 200);
    let s = setup(&server, CUSTOMERS);
    let name = format!("{}.csv", "c".repeat(246));
    assert_eq!(name.len(), 250);
    let file = input(
        &s,
        &name,
        b"id,email\nc1,a@example.jp\nc2,not-an-email\nc3,c@example.jp\n",
    );
    let ids = s.run(vec![import("customers", &file)]);
    let parent = s.job(ids[0]);
    assert_eq!(parent.state, JobState::Succeeded, "{:?}", parent.last_error);

    // Both outputs exist under names that fit, start like the input and differ by suffix.
    let day = output(&s, "x");
    let day = day.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(day)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for written in &names {
        assert!(written.len() <= 255, "{} bytes: {written}", written.len());
        assert!(written.starts_with(&"c".repeat(200)), "{written}");
    }
    assert!(names[0].ends_with(".errors.csv"), "{names:?}");
    assert!(names[1].ends_with(".summary.json"), "{names:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(day.join(&names[1])).unwrap()).unwrap();
    assert_eq!(summary["name"], name);
    assert_eq!(summary["rows_invalid"], 1, "{summary}");
    assert_eq!(
        summary["summary_file"],
        day.join(&names[1]).display().to_string()
    );
    assert_eq!(
        summary["errors_file"],
        day.join(&names[0]).display().to_string()
    );
    let errors = std::fs::read_to_string(day.join(&names[0])).unwrap();
    assert!(errors.contains("3,email,not-an-email"), "{errors}");
}
