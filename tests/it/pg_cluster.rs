//! Several real jobd processes against one PostgreSQL database: a drain where every job
//! succeeds exactly once, a plain INSERT picked up at its NOTIFY (not at the next poll),
//! a daemon killed with SIGKILL mid-drain whose jobs the others rescue after its leases,
//! a pipeline schedule run once per period across daemons while the leader is killed, a
//! queue limit and an endpoint's rate limit held across daemons, and a watched folder's
//! jobs run on the node that holds the files.

use crate::common::JOBD;
use crate::http_server::{HttpServer, Request, Response};
use crate::pg::TestDb;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One daemon's folder, config and process.
struct Node {
    name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.path().join("jobd.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jobd.log")).unwrap_or_default()
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("jobd.log")).unwrap();
        self.child = Some(
            Command::new(JOBD)
                .arg("--config")
                .arg(self.config())
                .env_remove("NOTIFY_SOCKET")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn jobd"),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Daemons `n1..nN` against one fresh database; `daemon_keys` go into each `[daemon]`,
/// `extra` after it.
struct Cluster {
    db: TestDb,
    nodes: Vec<Node>,
}

impl Cluster {
    fn new(test: &str, n: usize, daemon_keys: &str, extra: &str) -> Option<Cluster> {
        let db = TestDb::create(test)?;
        // Migrated once up front, so the daemons start together on a ready schema.
        drop(db.store("setup"));
        let nodes = (1..=n)
            .map(|i| {
                let dir = tempfile::tempdir().unwrap();
                let name = format!("n{i}");
                let text = format!(
                    "[daemon]\ndatabase = \"{url}\"\ndata_dir = \"{data}\"\nsocket = \"{data}/run/jobd.sock\"\n\
                     node = \"{name}\"\nworkers = 4\n{daemon_keys}\n{extra}\n",
                    url = db.url.secret_text(),
                    data = dir.path().join("var").display(),
                );
                let text = text.replace("{dir}", &dir.path().display().to_string());
                std::fs::write(dir.path().join("jobd.toml"), text).unwrap();
                Node {
                    name,
                    dir,
                    child: None,
                }
            })
            .collect();
        Some(Cluster { db, nodes })
    }

    fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
        // Each has taken its node name once its row is there.
        let mut client = self.db.client();
        wait(Duration::from_secs(60), "every node registered", || {
            let n: i64 = client
                .query_one("SELECT count(*) FROM jobd_nodes", &[])
                .unwrap()
                .get(0);
            n as usize == self.nodes.len()
        });
    }

    fn count(&self, sql: &str) -> i64 {
        self.db.client().query_one(sql, &[]).unwrap().get(0)
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name, n.log()))
            .collect()
    }
}

fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_daemons_drain_100000_jobs_each_exactly_once() {
    let Some(mut cluster) = Cluster::new("pg cluster drain", 3, "", "") else {
        return;
    };
    cluster.start_all();
    cluster
        .db
        .client()
        .batch_execute(
            "INSERT INTO jobs (kind, payload) SELECT 'noop', '{}' FROM generate_series(1, 100000)",
        )
        .unwrap();
    let started = Instant::now();
    wait(Duration::from_secs(900), "100,000 jobs succeeded", || {
        cluster.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 100_000
    });
    eprintln!("3 daemons drained 100,000 jobs in {:?}", started.elapsed());
    assert_eq!(
        cluster.count("SELECT count(*) FROM job_attempts WHERE outcome = 'succeeded'"),
        100_000
    );
    assert_eq!(
        cluster.count(
            "SELECT count(*) FROM (SELECT job_id FROM job_attempts GROUP BY job_id \
             HAVING count(*) <> 1) twice"
        ),
        0,
        "no job ran twice"
    );
    assert_eq!(
        cluster.count("SELECT count(DISTINCT node) FROM job_attempts"),
        3,
        "every daemon took part:\n{}",
        cluster.logs()
    );
    for node in &mut cluster.nodes {
        node.stop();
    }
    // Clean shutdowns give the node names and the leadership back.
    assert_eq!(cluster.count("SELECT count(*) FROM jobd_nodes"), 0);
    assert_eq!(cluster.count("SELECT count(*) FROM jobd_leader"), 0);
}

#[test]
fn a_plain_insert_is_picked_up_at_once_even_with_a_10s_poll_interval() {
    let Some(mut cluster) = Cluster::new("pg wake", 1, "poll_interval = \"10s\"", "") else {
        return;
    };
    cluster.start_all();
    let mut client = cluster.db.client();
    let mut insert = |tag: &str| {
        client
            .batch_execute(&format!(
                "INSERT INTO jobs (kind, payload) VALUES ('noop', '{{\"tag\": \"{tag}\"}}')"
            ))
            .unwrap();
        Instant::now()
    };
    let succeeded = |tags: &[&str]| {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        cluster
            .db
            .client()
            .query_one(
                "SELECT count(*) FROM jobs WHERE state = 'succeeded' \
                 AND payload->>'tag' = ANY($1)",
                &[&tags],
            )
            .unwrap()
            .get::<_, i64>(0) as usize
            == tags.len()
    };
    // Each insert after the previous job is done: the dispatcher claimed for the last
    // time when that job finished, and its next poll is 10 s away. Only the NOTIFY can
    // bring the job in within 2 s.
    for round in ["first", "second", "third"] {
        let inserted = insert(round);
        wait(
            Duration::from_secs(2),
            &format!("the {round} job done"),
            || succeeded(&[round]),
        );
        eprintln!("{round} job done {:?} after its INSERT", inserted.elapsed());
    }
    // Two inserts inside the trigger's 100 ms debounce: the second sends no notice of its
    // own; the listener's follow-up look after the window finds it.
    insert("burst 1");
    insert("burst 2");
    wait(
        Duration::from_secs(2),
        "both jobs of the burst done",
        || succeeded(&["burst 1", "burst 2"]),
    );
    drop(client);
    cluster.nodes[0].stop();
    assert!(
        !cluster.logs().contains("ERROR"),
        "no errors:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_daemon_killed_mid_drain_has_its_jobs_rescued_by_the_others_after_its_leases() {
    let Some(mut cluster) = Cluster::new(
        "pg cluster kill -9",
        3,
        "lease = \"3s\"\nreap_interval = \"500ms\"",
        "",
    ) else {
        return;
    };
    cluster.start_all();
    cluster
        .db
        .client()
        .batch_execute(
            "INSERT INTO jobs (kind, payload) \
             SELECT 'noop', '{\"sleep_ms\": 20}' FROM generate_series(1, 3000)",
        )
        .unwrap();
    wait(Duration::from_secs(120), "n2 running jobs", || {
        cluster.count("SELECT count(*) FROM jobs WHERE state = 'running' AND node = 'n2'") >= 4
    });
    cluster.nodes[1].kill9();
    let mut client = cluster.db.client();
    // Frozen now: what n2 held when it died.
    let held: BTreeMap<i64, i64> = client
        .query(
            "SELECT id, lease_until FROM jobs WHERE state = 'running' AND node = 'n2'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!held.is_empty());
    wait(Duration::from_secs(300), "every job succeeded", || {
        cluster.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 3000
    });
    assert_eq!(
        cluster.count("SELECT count(*) FROM job_attempts WHERE outcome = 'succeeded'"),
        3000,
        "nothing lost, each succeeded once"
    );
    // Jobs with more than one attempt are only ones n2 held at the kill; each of those
    // was taken back by another node, not before its lease ran out.
    let repeated: Vec<i64> = client
        .query(
            "SELECT job_id FROM job_attempts GROUP BY job_id HAVING count(*) > 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &repeated {
        assert!(
            held.contains_key(id),
            "job {id} ran twice but n2 did not hold it"
        );
    }
    for row in client
        .query(
            "SELECT job_id, finished_at, node FROM job_attempts WHERE outcome = 'lease_expired'",
            &[],
        )
        .unwrap()
    {
        let (id, at, node): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
        assert!(
            held.contains_key(&id),
            "job {id} rescued but n2 did not hold it"
        );
        assert!(at > held[&id], "job {id} rescued before its lease ran out");
        assert_ne!(node, "n2");
    }
    assert_eq!(
        cluster.count("SELECT count(*) FROM job_attempts WHERE outcome = 'lease_expired'") as usize,
        held.len(),
        "every job n2 held was rescued once"
    );
}

/// The leader lease row now: holder, lease end, when it was elected.
fn leader_row(cluster: &Cluster) -> Option<(String, i64, i64)> {
    cluster
        .db
        .client()
        .query_opt(
            "SELECT holder, lease_until, elected_at FROM jobd_leader",
            &[],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

fn now_ms() -> i64 {
    jobd::clock::Clock::now_ms(&jobd::clock::SystemClock)
}

#[test]
fn a_schedule_runs_once_per_period_across_daemons_while_the_leader_is_killed() {
    // The default leader lease (15 s): the kill leaves about eight periods to no one,
    // more if the dead leader's run was running (live until its job lease of 5 s runs
    // out and the reaper, every 500 ms, takes it back).
    let Some(mut cluster) = Cluster::new(
        "pg cluster schedule",
        3,
        "lease = \"5s\"\nreap_interval = \"500ms\"",
        "[endpoints.shop]\nbase_url = \"http://127.0.0.1:9\"\nidempotency_header = \"\"\n\
         [kinds.http_pull.retry]\nmax_attempts = 1\n\
         [pipelines.customers]\nkind = \"http_pull\"\nendpoint = \"shop\"\npath = \"/c.json\"\n\
         items_key = \"customers\"\nsink = { ndjson = \"{dir}/customers.ndjson\" }\nevery = \"2s\"\n",
    ) else {
        return;
    };
    cluster.start_all();
    // Each scheduled run: its period (from the key), when its row was made, and how
    // many rows name the period.
    let runs = |cluster: &Cluster| -> BTreeMap<i64, (i64, usize)> {
        let mut runs = BTreeMap::new();
        for row in cluster
            .db
            .client()
            .query(
                "SELECT unique_key, created_at FROM jobs WHERE source = 'schedule:customers'",
                &[],
            )
            .unwrap()
        {
            let (key, created): (String, i64) = (row.get(0), row.get(1));
            let text = key.trim_start_matches("http_pull:customers:");
            let period = chrono::DateTime::parse_from_rfc3339(text)
                .unwrap_or_else(|e| panic!("{key}: {e}"))
                .timestamp_millis();
            let entry = runs.entry(period).or_insert((created, 0));
            entry.1 += 1;
        }
        runs
    };
    let latest = |cluster: &Cluster| runs(cluster).keys().last().copied().unwrap_or(0);
    wait(Duration::from_secs(60), "3 periods", || {
        runs(&cluster).len() >= 3
    });
    let (first_leader, _, _) = leader_row(&cluster).expect("a leader");
    let killed_at = now_ms();
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == first_leader)
        .unwrap();
    cluster.nodes[index].kill9();
    wait(
        Duration::from_secs(90),
        "a new leader, 5 periods past the failover",
        || {
            leader_row(&cluster).is_some_and(|(holder, _, _)| holder != first_leader)
                && latest(&cluster) >= killed_at + 26_000
        },
    );
    // A leader stopped with SIGTERM gives the lease up at once: the next one is elected
    // long before the stopped one's lease would have run out.
    let (second_leader, lease_until, _) = leader_row(&cluster).unwrap();
    let stopped_at = now_ms();
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == second_leader)
        .unwrap();
    cluster.nodes[index].stop();
    wait(
        Duration::from_secs(60),
        "a third leader, 4 periods on",
        || {
            leader_row(&cluster)
                .is_some_and(|(holder, _, _)| holder != first_leader && holder != second_leader)
                && latest(&cluster) >= stopped_at + 8_000
        },
    );
    let (third_leader, _, elected_at) = leader_row(&cluster).unwrap();
    assert!(
        elected_at < lease_until,
        "{third_leader} elected at {elected_at}, the resigned lease ran to {lease_until}\n{}",
        cluster.logs()
    );
    let got = runs(&cluster);
    // Every period from the first to the last, each exactly once.
    let first = *got.keys().next().unwrap();
    let last = *got.keys().last().unwrap();
    let expected: Vec<i64> = (first..=last).step_by(2_000).collect();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        expected,
        "a period missing\n{}",
        cluster.logs()
    );
    assert!(got.values().all(|(_, n)| *n == 1), "{got:?}");
    assert!(expected.len() >= 10, "{} periods", expected.len());
    assert!(first < killed_at && last > stopped_at + 6_000);
    // The periods of the failover were made up late by the new leader, not skipped.
    let made_up = got
        .iter()
        .filter(|(period, (created, _))| **period > killed_at && *created > **period + 5_000)
        .count();
    assert!(made_up >= 3, "{made_up} made up: {got:?}");
}

#[test]
fn a_queue_limit_of_2_holds_across_three_daemons() {
    let Some(mut cluster) = Cluster::new(
        "pg cluster queue limit",
        3,
        "",
        "[queues.two]\nconcurrency = 2\n",
    ) else {
        return;
    };
    cluster.start_all();
    cluster
        .db
        .client()
        .batch_execute(
            "INSERT INTO jobs (kind, queue, payload) \
             SELECT 'noop', 'two', '{\"sleep_ms\": 100}' FROM generate_series(1, 40)",
        )
        .unwrap();
    let mut client = cluster.db.client();
    let mut most = 0;
    let start = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'running'), \
                        count(*) FILTER (WHERE state = 'succeeded') FROM jobs WHERE queue = 'two'",
                &[],
            )
            .unwrap();
        let (running, done): (i64, i64) = (row.get(0), row.get(1));
        assert!(running <= 2, "{running} running in a queue limited to 2");
        most = most.max(running);
        if done == 40 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "drained");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(most, 2, "the limit was reached");
}

#[test]
fn an_endpoints_rate_limit_holds_across_three_daemons() {
    const RATE: f64 = 10.0;
    const BURST: usize = 5;
    const JOBS: usize = 45;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let server = HttpServer::start(Arc::new(move |request: Request| {
        seen.lock().unwrap().push(request.at);
        Response {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        }
    }));
    let Some(mut cluster) = Cluster::new(
        "pg cluster rate limit",
        3,
        "",
        &format!(
            "[endpoints.x]\nbase_url = \"{}\"\nrate_limit = \"10/s\"\nburst = {BURST}\n",
            server.base
        ),
    ) else {
        return;
    };
    cluster.start_all();
    // Routed at enqueue (jobctl with n1's config) to the destination `x`.
    let file = cluster.nodes[0].dir.path().join("jobs.ndjson");
    let lines: String = (0..JOBS)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"kind": "http", "payload": {"endpoint": "x", "path": format!("/r/{i}"), "json": {}}})
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = Command::new(crate::common::JOBCTL)
        .arg("--config")
        .arg(cluster.nodes[0].config())
        .args(["enqueue", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_eq!(
        cluster.count("SELECT count(*) FROM jobs WHERE destination = 'x'"),
        JOBS as i64
    );
    wait(Duration::from_secs(120), "every request succeeded", || {
        cluster.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == JOBS as i64
    });
    let mut at = arrivals.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), JOBS, "each request once");
    let offsets: Vec<u128> = at
        .iter()
        .map(|t| t.duration_since(at[0]).as_millis())
        .collect();
    // From the first arrival on, no more than the burst plus the rate since then. Tokens
    // are drawn at claim time and a request leaves a little later, so arrivals measured
    // from the first (itself late, a new connection) run ahead by the rate times that
    // delay: a slack of four requests (400 ms at 10/s; 2.2 was seen with the machine at
    // a load of 22 beside the 100,000-job drain). A bucket per daemon would let 20 more
    // through in the first second, and no limit all 45 at once.
    const SLACK: f64 = 4.0;
    for (k, t) in at.iter().enumerate() {
        let since = t.duration_since(at[0]).as_secs_f64();
        let allowed = BURST as f64 + RATE * since + SLACK;
        assert!(
            (k + 1) as f64 <= allowed,
            "{} requests within {since:.3}s of the first (allowed {allowed:.1}): {offsets:?} ms",
            k + 1
        );
    }
    // Nor any window of one or two seconds anywhere in the run.
    for window in [1.0, 2.0] {
        for (i, first) in at.iter().enumerate() {
            let within = at[i..]
                .iter()
                .take_while(|t| t.duration_since(*first).as_secs_f64() < window)
                .count();
            let allowed = RATE * window + BURST as f64 + SLACK;
            assert!(
                within as f64 <= allowed,
                "{within} requests within {window}s from #{i} (allowed {allowed}): {offsets:?} ms"
            );
        }
    }
    let span = at.last().unwrap().duration_since(at[0]).as_secs_f64();
    let least = (JOBS - BURST) as f64 / RATE - SLACK / RATE;
    assert!(
        span >= least,
        "{JOBS} requests took {span:.2}s, at least {least:.2}s"
    );
    let by_node: Vec<(String, i64)> = cluster
        .db
        .client()
        .query(
            "SELECT node, count(*) FROM job_attempts GROUP BY node ORDER BY node",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    eprintln!(
        "{JOBS} requests at 10/s, burst {BURST}, from 3 daemons took {span:.2}s: {by_node:?}"
    );
    assert_eq!(
        cluster.count("SELECT count(DISTINCT node) FROM job_attempts"),
        3,
        "every daemon sent some:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_watched_folders_jobs_run_on_the_node_holding_the_files() {
    let Some(mut cluster) = Cluster::new(
        "pg cluster watch",
        2,
        "",
        "[[watch]]\npath = \"{dir}/in\"\nsettle = \"200ms\"\nrescan = \"1s\"\nkind = \"noop\"\n",
    ) else {
        return;
    };
    // Only n1's folder gets files; n2 watches an empty folder of its own.
    cluster.start_all();
    let inbox = cluster.nodes[0].dir.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    for i in 0..10 {
        std::fs::write(inbox.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    wait(Duration::from_secs(120), "10 jobs succeeded", || {
        cluster
            .count("SELECT count(*) FROM jobs WHERE state = 'succeeded' AND source LIKE 'watch:%'")
            == 10
    });
    assert_eq!(
        cluster.count(
            "SELECT count(*) FROM jobs WHERE source LIKE 'watch:%' AND home_node = 'n1' AND node = 'n1'"
        ),
        10,
        "bound to n1 and run there"
    );
    assert_eq!(
        cluster.count("SELECT count(*) FROM job_attempts WHERE node <> 'n1'"),
        0
    );
    // The files went to n1's done/ folder.
    let done = cluster.nodes[0].data().join("done");
    let kept: Vec<PathBuf> = crate::common::files_under(&done)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    assert_eq!(kept.len(), 10, "{kept:?}");
    assert!(crate::common::files_under(&cluster.nodes[1].data().join("done")).is_empty());
}

#[test]
fn jobctl_copy_moves_unfinished_and_dead_jobs_attempts_and_sync_state_to_postgres() {
    use jobd::job::{Completion, NewJob, Resolution, SyncMark};
    use jobd::store::{ClaimSpec, OpenOptions};
    let Some(db) = TestDb::create("pg jobctl copy") else {
        return;
    };
    let sandbox = crate::common::Sandbox::new("", "");
    let mut sqlite = jobd::store::open(
        &sandbox.db(),
        &OpenOptions {
            create: true,
            migrate: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let t0 = 1_800_000_000_000i64;
    let new = |note: &str| NewJob::new("noop", serde_json::json!({ "note": note }));
    let ids: Vec<i64> = sqlite
        .write(|tx| {
            tx.enqueue(
                &[
                    new("ok"),
                    new("dies"),
                    new("retries"),
                    new("waits"),
                    new("stays"),
                ],
                t0,
            )
        })
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let claimed = sqlite
        .write(|tx| {
            tx.claim(
                &ClaimSpec {
                    limit: 4,
                    limited_queues: vec![],
                    destinations: vec![],
                },
                "w",
                t0 + 60_000,
                t0,
            )
        })
        .unwrap();
    let done = |job: &jobd::job::Job, resolution: Resolution| Completion {
        job_id: job.id,
        parent_id: None,
        attempt: job.attempts,
        worker: "w".into(),
        started_at: t0,
        finished_at: t0 + 1,
        resolution,
        detail: None,
    };
    let outcomes = [
        Resolution::Succeeded {
            follow_ups: vec![],
            sync_marks: vec![SyncMark {
                pipeline: "customers".into(),
                high_water: t0 - 5,
                items: 7,
                pages: 1,
            }],
        },
        Resolution::Dead {
            error: "broken".into(),
            follow_ups: vec![],
        },
        Resolution::RetryAt {
            run_at: t0 + 9_000,
            error: "later".into(),
        },
        Resolution::Await {
            children: vec![new("child a"), new("child b")],
        },
    ];
    for (job, outcome) in claimed.iter().zip(outcomes) {
        sqlite
            .write(|tx| tx.complete(&done(job, outcome), t0 + 1))
            .unwrap();
    }
    sqlite
        .write(|tx| tx.pause_queue("slow", Some("drill"), t0))
        .unwrap();
    drop(sqlite);
    let to = db.url.secret_text().to_string();
    let out = std::process::Command::new(crate::common::JOBCTL)
        .arg("--db")
        .arg(sandbox.db())
        .args(["copy", "--to", &to])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Queued, dead, retrying, waiting and the two children: 6 jobs (3 attempts: the dead,
    // the retried and the waiting one); the succeeded one stays.
    assert!(
        text.contains("copied 6 job(s), 3 attempt(s), 1 sync state(s) and 1 paused queue(s)"),
        "{text}"
    );
    let pg = db.store("check");
    assert!(pg.get(ids[0]).is_err(), "the succeeded job is not copied");
    assert_eq!(pg.get(ids[1]).unwrap().state, jobd::job::JobState::Dead);
    assert_eq!(
        pg.attempts(ids[1]).unwrap()[0].error.as_deref(),
        Some("broken")
    );
    assert_eq!(pg.get(ids[2]).unwrap().run_at, t0 + 9_000);
    assert_eq!(pg.get(ids[3]).unwrap().state, jobd::job::JobState::Waiting);
    assert_eq!(pg.children_counts(ids[3]).unwrap().get("queued"), Some(&2));
    assert_eq!(pg.get(ids[4]).unwrap().state, jobd::job::JobState::Queued);
    assert_eq!(pg.sync_high_water("customers").unwrap(), Some(t0 - 5));
    assert_eq!(pg.paused_queues().unwrap()[0].queue, "slow");
    // New jobs get ids after the copied ones; a second copy is refused.
    let next = pg.write(|tx| tx.enqueue(&[new("new")], t0)).unwrap()[0].id;
    assert!(next > ids[4] + 2, "{next}");
    let again = std::process::Command::new(crate::common::JOBCTL)
        .arg("--db")
        .arg(sandbox.db())
        .args(["copy", "--to", &to])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));
}
