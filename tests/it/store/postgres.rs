//! The conformance suite run against the PostgreSQL driver on a real server (each case in
//! a database of its own), and the driver's own properties: migrations under a lock, the
//! schema's defaults and CHECKs for plain SQL, the NOTIFY trigger and its debounce, claims
//! disjoint across daemons, queue limits across daemons, fan-in under two finishers,
//! node-bound jobs, rescue by lease and node, node leases and leadership.

use crate::pg::TestDb;
use jobd::job::{Completion, JobId, JobState, NewJob, Resolution};
use jobd::store::postgres::{schema, Listener, PgOptions, PgStore, LEADER_TTL};
use jobd::store::{Applied, ClaimSpec};
use serde_json::json;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// A fresh database on the test server; every connection is a separate store of one node.
struct PgConformanceDb {
    db: TestDb,
}

impl super::TestDb for PgConformanceDb {
    fn connect(&self) -> Box<dyn jobd::store::Store> {
        Box::new(self.db.store("conformance"))
    }
}

fn make_pg_db() -> Box<dyn super::TestDb> {
    Box::new(PgConformanceDb {
        db: TestDb::create("conformance").expect("checked by server_available"),
    })
}

fn server_here() -> bool {
    crate::pg::server_available("PostgreSQL conformance case")
}

conformance!(make_pg_db, if server_here);

const T0: i64 = 1_800_000_000_000;
const LEASE: i64 = 60_000;

fn spec(limit: usize) -> ClaimSpec {
    ClaimSpec {
        limit,
        limited_queues: vec![],
        destinations: vec![],
    }
}

fn enqueue(store: &PgStore, jobs: Vec<NewJob>, now: i64) -> Vec<JobId> {
    store
        .write(|tx| tx.enqueue(&jobs, now))
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn noops(n: usize) -> Vec<NewJob> {
    (0..n).map(|_| NewJob::new("noop", json!({}))).collect()
}

fn success(job: &jobd::job::Job, worker: &str, now: i64) -> Completion {
    Completion {
        job_id: job.id,
        parent_id: job.parent_id,
        attempt: job.attempts,
        worker: worker.into(),
        started_at: now,
        finished_at: now,
        resolution: Resolution::Succeeded {
            follow_ups: vec![],
            sync_marks: vec![],
        },
        detail: None,
    }
}

#[test]
fn migrations_apply_once_under_the_lock_even_when_daemons_start_together() {
    let Some(db) = TestDb::create("pg migrations") else {
        return;
    };
    let barrier = Arc::new(Barrier::new(3));
    let applied: Vec<usize> = (0..3)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut client = url.config().connect(postgres::NoTls).unwrap();
                barrier.wait();
                schema::migrate(&mut client).unwrap().len()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(applied.iter().sum::<usize>(), schema::MIGRATIONS.len());
    let mut client = db.client();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM jobd_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, schema::latest_version());
    // A store opened without migrate accepts the schema; an empty database is refused.
    db.store_with(PgOptions::new("n1"));
    let Some(empty) = TestDb::create("pg migrations (empty)") else {
        return;
    };
    let err = PgStore::open(&empty.url, PgOptions::new("n1")).unwrap_err();
    assert!(err.to_string().contains("jobctl migrate"), "{err}");
}

#[test]
fn a_plain_insert_from_psql_is_a_valid_queued_job_and_the_checks_refuse_bad_rows() {
    let Some(db) = TestDb::create("pg plain insert") else {
        return;
    };
    let store = db.store("n1");
    let mut client = db.client();
    let id: i64 = client
        .query_one(
            "INSERT INTO jobs(kind, payload) VALUES ('noop', '{}') RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    let job = store.get(id).unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.queue, "default");
    assert_eq!(job.attempts, 0);
    let now = jobd::clock::Clock::now_ms(&jobd::clock::SystemClock);
    assert!((job.run_at - now).abs() < 60_000, "run_at defaults to now");
    let claimed = store
        .write(|tx| tx.claim(&spec(10), "w", now + LEASE, now + 1000))
        .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    for (sql, what) in [
        (
            "INSERT INTO jobs(kind, queue) VALUES ('noop', 'bad queue')",
            "jobs_queue_check",
        ),
        ("INSERT INTO jobs(kind) VALUES ('')", "jobs_kind_check"),
        (
            "INSERT INTO jobs(kind, state) VALUES ('noop', 'sleeping')",
            "jobs_state_check",
        ),
        (
            "INSERT INTO jobs(kind, state) VALUES ('noop', 'succeeded')",
            "jobs_check",
        ),
        (
            "INSERT INTO jobs(kind, state) VALUES ('noop', 'running')",
            "jobs_check",
        ),
        (
            "INSERT INTO jobs(kind, payload) VALUES ('noop', '{not json')",
            "json",
        ),
        (
            "INSERT INTO jobs(kind, attempts) VALUES ('noop', -1)",
            "jobs_attempts_check",
        ),
    ] {
        let err = client.batch_execute(sql).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains(what), "{sql}: {text}");
    }
}

#[test]
fn the_trigger_notifies_a_new_row_at_once_and_at_most_once_per_queue_per_100ms() {
    let Some(db) = TestDb::create("pg notify") else {
        return;
    };
    let _store = db.store("n1");
    let notices = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let sink = notices.clone();
    let listener = Listener::spawn(&db.url, move |queue| {
        if !queue.is_empty() {
            sink.lock()
                .unwrap()
                .push((Instant::now(), queue.to_string()));
        }
    })
    .unwrap();
    let start = Instant::now();
    while !listener.is_up() {
        assert!(start.elapsed() < Duration::from_secs(10), "listener up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut client = db.client();
    // Past any debounce window of the migration's own rows (there are none).
    let inserted = Instant::now();
    client
        .batch_execute("INSERT INTO jobs(kind, payload) VALUES ('noop', '{}')")
        .unwrap();
    let wait_for = |n: usize| {
        let start = Instant::now();
        while notices.lock().unwrap().len() < n {
            assert!(start.elapsed() < Duration::from_secs(5), "notice {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(1);
    let first = notices.lock().unwrap()[0].clone();
    assert_eq!(first.1, "default");
    assert!(
        first.0.duration_since(inserted) < Duration::from_millis(200),
        "noticed within 200 ms: {:?}",
        first.0.duration_since(inserted)
    );
    // A burst within 100 ms: no more notices for that queue; another queue gets its own.
    let burst = Instant::now();
    for _ in 0..20 {
        client
            .batch_execute("INSERT INTO jobs(kind) VALUES ('noop')")
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO jobs(kind, queue) VALUES ('noop', 'other')")
        .unwrap();
    let burst_took = burst.elapsed();
    wait_for(2);
    std::thread::sleep(Duration::from_millis(150));
    let got: Vec<String> = notices
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.1.clone())
        .collect();
    if burst_took < Duration::from_millis(80) {
        assert_eq!(got, vec!["default", "other"], "one per queue per 100 ms");
    }
    // After the window, a new insert is announced again.
    client
        .batch_execute("INSERT INTO jobs(kind) VALUES ('noop')")
        .unwrap();
    wait_for(got.len() + 1);
    listener.stop();
}

#[test]
fn a_row_inserted_inside_the_window_of_a_notice_sent_before_listening_is_still_announced() {
    let Some(db) = TestDb::create("pg notify before listen") else {
        return;
    };
    let _store = db.store("n1");
    let mut client = db.client();
    // A notice nobody heard (sent while the daemon was starting): the trigger is silent
    // for its queue for the debounce window, held open here for 10 s.
    client
        .batch_execute(
            "INSERT INTO jobs(kind) VALUES ('noop'); \
             UPDATE jobd_notify SET notified_at = clock_timestamp() + interval '10 seconds'",
        )
        .unwrap();
    let wakes = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let sink = wakes.clone();
    let listener =
        Listener::spawn(&db.url, move |_| sink.lock().unwrap().push(Instant::now())).unwrap();
    let start = Instant::now();
    // Up, and its first look (for rows inserted while it was not listening) made.
    while !listener.is_up() || wakes.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "listener up");
        std::thread::sleep(Duration::from_millis(5));
    }
    client
        .batch_execute("INSERT INTO jobs(kind) VALUES ('noop')")
        .unwrap();
    let committed = Instant::now();
    // Silent (inside the window), but a look follows it anyway, well before any poll.
    let start = Instant::now();
    while !wakes.lock().unwrap().iter().any(|at| *at > committed) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no look after a silent insert: {:?}",
            wakes.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    listener.stop();
}

#[test]
fn claims_from_many_daemons_at_once_never_take_a_row_twice() {
    let Some(db) = TestDb::create("pg disjoint claims") else {
        return;
    };
    let seed = db.store("seed");
    enqueue(&seed, noops(600), T0);
    let barrier = Arc::new(Barrier::new(3));
    let claimed: Vec<Vec<JobId>> = (0..3)
        .map(|n| {
            let store = db.store(&format!("node{n}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let jobs = store
                        .write(|tx| tx.claim(&spec(25), "w", T0 + LEASE, T0))
                        .unwrap();
                    if jobs.is_empty() {
                        return mine;
                    }
                    mine.extend(jobs.iter().map(|j| j.id));
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut all: Vec<JobId> = claimed.concat();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(total, 600, "every row claimed");
    assert_eq!(all.len(), 600, "no row claimed twice");
    // Each claim recorded its node.
    let mut client = db.client();
    let nodes: i64 = client
        .query_one(
            "SELECT count(DISTINCT node) FROM jobs WHERE state = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(nodes >= 1);
}

#[test]
fn claims_are_in_priority_run_at_id_order_and_respect_the_spec() {
    let Some(db) = TestDb::create("pg claim order") else {
        return;
    };
    let store = db.store("n1");
    let mut jobs = Vec::new();
    for (priority, run_at, queue) in [
        (0, T0 - 10, "a"),
        (5, T0 - 1, "b"),
        (5, T0 - 5, "a"),
        (1, T0 + 1000, "a"),
        (9, T0 - 1, "paused"),
    ] {
        let mut job = NewJob::new("noop", json!({}));
        job.priority = priority;
        job.run_at = Some(run_at);
        job.queue = queue.into();
        jobs.push(job);
    }
    let ids = enqueue(&store, jobs, T0 - 100);
    let mut s = spec(10);
    s.exclude(&["paused".to_string()]);
    let claimed = store.write(|tx| tx.claim(&s, "w", T0 + LEASE, T0)).unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]],
        "priority DESC, run_at, id; not due and paused left"
    );
    assert!(claimed
        .iter()
        .all(|j| j.state == JobState::Running && j.attempts == 1));
}

/// The claim's plan depends neither on when it was cached nor on the table's statistics:
/// a store that claimed at every poll while the table was empty (so its prepared claim
/// keeps a generic plan made then) claims from a 20,000-row backlog, never analyzed,
/// without scanning any index but the ready one it reads in order. Counted by the server
/// (`pg_stat_user_indexes`), so the machine's load does not move it. The plan cached on
/// the empty table used to look each claimed row up through a bitmap scan of every
/// ready row (`jobs_due`: 500 scans and 123 ms for a 500-row claim).
#[test]
fn a_claim_planned_on_the_empty_table_stays_cheap_per_row_with_a_large_backlog() {
    let Some(db) = TestDb::create("pg claim plan") else {
        return;
    };
    let store = db.store("n1");
    for _ in 0..10 {
        let claimed = store
            .write(|tx| tx.claim(&spec(500), "w", T0 + LEASE, T0))
            .unwrap();
        assert!(claimed.is_empty());
    }
    let mut client = db.client();
    client
        .batch_execute(
            "INSERT INTO jobs (kind, payload, run_at) \
             SELECT 'noop', '{}', 0 FROM generate_series(1, 20000); \
             SELECT pg_stat_force_next_flush()",
        )
        .unwrap();
    // Index scans of the table's indexes other than its primary key and the ready
    // index the claim reads in order.
    let scans = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes \
                 WHERE relname = 'jobs' AND indexrelname NOT IN ('jobs_pkey', 'jobs_ready')",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = scans(&mut client);
    // Flushed when the claim's transaction ends, before its commit returns.
    let claimed = store
        .write(|tx| {
            let jobs = tx.claim(&spec(500), "w", T0 + LEASE, T0)?;
            tx.with(|t| t.batch_execute("SELECT pg_stat_force_next_flush()"))?;
            Ok(jobs)
        })
        .unwrap();
    assert_eq!(claimed.len(), 500);
    let scanned = scans(&mut client) - before;
    assert!(
        scanned <= 1,
        "{scanned} scans of other indexes for a 500-row claim (from {before}): the claim's \
         plan looks rows up through a scan of the backlog"
    );
}

#[test]
fn a_queue_limit_holds_across_daemons() {
    let Some(db) = TestDb::create("pg queue limit") else {
        return;
    };
    let limits = std::collections::BTreeMap::from([("limited".to_string(), 2usize)]);
    let open = |node: &str| {
        db.store_with(PgOptions {
            migrate: true,
            queue_limits: limits.clone(),
            ..PgOptions::new(node)
        })
    };
    let a = open("a");
    let b = open("b");
    let jobs: Vec<NewJob> = (0..10)
        .map(|_| {
            let mut job = NewJob::new("noop", json!({}));
            job.queue = "limited".into();
            job
        })
        .collect();
    enqueue(&a, jobs, T0);
    let barrier = Arc::new(Barrier::new(2));
    let got: Vec<Vec<jobd::job::Job>> = [a, b]
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut all = Vec::new();
                for _ in 0..5 {
                    all.extend(
                        store
                            .write(|tx| tx.claim(&spec(10), "w", T0 + LEASE, T0))
                            .unwrap(),
                    );
                }
                (store, all)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().1)
        .collect();
    let total: usize = got.iter().map(|g| g.len()).sum();
    assert_eq!(total, 2, "2 running across both daemons: {got:?}");
    // When one finishes, one more may start.
    let c = open("c");
    let done = got.concat()[0].clone();
    assert_eq!(
        c.write(|tx| tx.complete(&success(&done, "w", T0 + 1), T0 + 1))
            .unwrap(),
        Applied::Moved(JobState::Succeeded)
    );
    let more = c
        .write(|tx| tx.claim(&spec(10), "w", T0 + LEASE, T0 + 2))
        .unwrap();
    assert_eq!(more.len(), 1);
}

#[test]
fn destination_limits_and_order_keys_hold_across_daemons() {
    let Some(db) = TestDb::create("pg destination limits") else {
        return;
    };
    let stores: Vec<PgStore> = (0..4).map(|n| db.store(&format!("n{n}"))).collect();
    let to = |destination: &str| {
        let mut job = NewJob::new("noop", json!({}));
        job.destination = Some(destination.into());
        job
    };
    // 10 jobs to "m" (at most 2 in flight), 10 to "r" (burst 3, a token a minute),
    // 10 of one order key (one at a time).
    let jobs: Vec<NewJob> = (0..10)
        .map(|_| to("m"))
        .chain((0..10).map(|_| to("r")))
        .chain((0..10).map(|_| NewJob::new("noop", json!({})).order_key("line")))
        .collect();
    enqueue(&stores[0], jobs, T0);
    let limited = ClaimSpec {
        limit: 50,
        limited_queues: vec![],
        destinations: vec![
            jobd::flow::DestinationLimit {
                destination: "m".into(),
                rate_per_second: None,
                burst: 1,
                max_in_flight: Some(2),
            },
            jobd::flow::DestinationLimit {
                destination: "r".into(),
                rate_per_second: Some(1.0 / 60.0),
                burst: 3,
                max_in_flight: None,
            },
        ],
    };
    let barrier = Arc::new(Barrier::new(stores.len()));
    let got: Vec<jobd::job::Job> = stores
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            let spec = limited.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut all = Vec::new();
                for _ in 0..5 {
                    all.extend(
                        store
                            .write(|tx| tx.claim(&spec, "w", T0 + LEASE, T0 + 10))
                            .unwrap(),
                    );
                }
                all
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let count = |pick: &dyn Fn(&jobd::job::Job) -> bool| got.iter().filter(|j| pick(j)).count();
    assert_eq!(
        count(&|j| j.destination.as_deref() == Some("m")),
        2,
        "{got:?}"
    );
    assert_eq!(
        count(&|j| j.destination.as_deref() == Some("r")),
        3,
        "{got:?}"
    );
    assert_eq!(
        count(&|j| j.order_key.as_deref() == Some("line")),
        1,
        "{got:?}"
    );
}

#[test]
fn two_last_children_finishing_on_two_nodes_resume_the_parent_exactly_once() {
    let Some(db) = TestDb::create("pg fan-in") else {
        return;
    };
    for round in 0..5 {
        let a = db.store("a");
        let b = db.store("b");
        let parent = enqueue(&a, noops(1), T0)[0];
        let claimed = a
            .write(|tx| tx.claim(&spec(1), "w", T0 + LEASE, T0))
            .unwrap();
        assert_eq!(claimed[0].id, parent, "round {round}");
        let wait = Completion {
            resolution: Resolution::Await { children: noops(2) },
            ..success(&claimed[0], "w", T0)
        };
        a.write(|tx| tx.complete(&wait, T0)).unwrap();
        let children = a
            .write(|tx| tx.claim(&spec(2), "w", T0 + LEASE, T0))
            .unwrap();
        assert_eq!(children.len(), 2);
        assert!(children.iter().all(|c| c.parent_id == Some(parent)));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [a, b]
            .into_iter()
            .zip(children)
            .map(|(store, child)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .write(|tx| tx.complete(&success(&child, "w", T0 + 5), T0 + 5))
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Applied::Moved(JobState::Succeeded));
        }
        let p = db.store("c").get(parent).unwrap();
        assert_eq!(p.state, JobState::Queued, "round {round}");
        assert_eq!(p.stage, 1, "resumed once, round {round}");
        // Clean up for the next round.
        db.client().batch_execute("DELETE FROM jobs").unwrap();
    }
}

#[test]
fn completions_in_one_batch_move_every_job_and_skip_stale_ones() {
    let Some(db) = TestDb::create("pg batch completions") else {
        return;
    };
    let store = db.store("n1");
    enqueue(&store, noops(200), T0);
    let jobs = store
        .write(|tx| tx.claim(&spec(200), "w", T0 + LEASE, T0))
        .unwrap();
    let mut done: Vec<Completion> = jobs.iter().map(|j| success(j, "w", T0 + 1)).collect();
    // One from an older attempt: stale, nothing changes for it.
    done[7].attempt = 9;
    let batch: Vec<(&Completion, Option<i64>)> = done.iter().map(|c| (c, Some(5))).collect();
    let applied = store.write(|tx| tx.complete_many(&batch, T0 + 1)).unwrap();
    assert_eq!(applied.len(), 200);
    assert_eq!(applied[7], Applied::Stale);
    assert_eq!(
        applied
            .iter()
            .filter(|a| **a == Applied::Moved(JobState::Succeeded))
            .count(),
        199
    );
    assert_eq!(store.get(jobs[7].id).unwrap().state, JobState::Running);
    let attempts = store.attempts(jobs[0].id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
    assert!(store.attempts(jobs[7].id).unwrap().is_empty());
}

#[test]
fn a_job_bound_to_a_node_by_its_files_is_claimed_by_that_node_only() {
    let Some(db) = TestDb::create("pg node-bound jobs") else {
        return;
    };
    let roots = vec![std::path::PathBuf::from("/var/lib/jobd-a")];
    let open = |node: &str, shared: bool| {
        db.store_with(PgOptions {
            migrate: true,
            local_roots: roots.clone(),
            shared_data_dir: shared,
            ..PgOptions::new(node)
        })
    };
    let a = open("a", false);
    let b = open("b", false);
    let with_file = NewJob::new("csv_import", json!({"file": "/var/lib/jobd-a/spool/1.csv"}));
    let plain = NewJob::new("noop", json!({"note": "anywhere"}));
    let ids = enqueue(&a, vec![with_file.clone(), plain], T0);
    let got_b = b
        .write(|tx| tx.claim(&spec(10), "w", T0 + LEASE, T0))
        .unwrap();
    assert_eq!(got_b.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[1]]);
    assert_eq!(b.write(|tx| tx.next_due(T0 - 10)).unwrap(), None);
    let got_a = a
        .write(|tx| tx.claim(&spec(10), "w", T0 + LEASE, T0))
        .unwrap();
    assert_eq!(got_a.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
    // Its follow-ups stay on its node too; with a shared data_dir nothing is bound.
    let follow = Completion {
        resolution: Resolution::Succeeded {
            follow_ups: vec![NewJob::new("http", json!({"body": "x"}))],
            sync_marks: vec![],
        },
        ..success(&got_a[0], "w", T0)
    };
    a.write(|tx| tx.complete(&follow, T0)).unwrap();
    let child = b
        .write(|tx| tx.claim(&spec(10), "w", T0 + LEASE, T0 + 1))
        .unwrap();
    assert!(child.is_empty(), "the follow-up is bound to a");
    let shared = open("s", true);
    let id = enqueue(&shared, vec![with_file], T0)[0];
    assert_eq!(shared.write(|tx| tx.home_node(id)).unwrap(), None);
}

#[test]
fn rescue_takes_other_nodes_jobs_only_after_their_leases_and_its_own_at_once() {
    let Some(db) = TestDb::create("pg rescue") else {
        return;
    };
    let a = db.store("a");
    let b = db.store("b");
    enqueue(&a, noops(2), T0);
    let of_a = a
        .write(|tx| tx.claim(&spec(1), "a:1", T0 + LEASE, T0))
        .unwrap();
    let of_b = b
        .write(|tx| tx.claim(&spec(1), "b:1", T0 + LEASE, T0))
        .unwrap();
    let max = |_: &str| 5u32;
    let started = |_: &jobd::store::HeldClaim| true;
    // b restarts: its own job at once, a's not (a's lease is live).
    let rescued = b
        .write(|tx| tx.rescue_expired(T0 + 1, true, &max, &started))
        .unwrap();
    assert_eq!(rescued, vec![(of_b[0].id, JobState::Retrying)]);
    assert_eq!(a.get(of_a[0].id).unwrap().state, JobState::Running);
    // After a's lease ran out, b takes it back, charged.
    let rescued = b
        .write(|tx| tx.rescue_expired(T0 + LEASE + 1, false, &max, &started))
        .unwrap();
    assert_eq!(rescued, vec![(of_a[0].id, JobState::Retrying)]);
    let attempts = a.attempts(of_a[0].id).unwrap();
    assert_eq!(attempts[0].outcome, "lease_expired");
}

#[test]
fn a_node_name_is_held_by_one_daemon_at_a_time() {
    let Some(db) = TestDb::create("pg node lease") else {
        return;
    };
    let first = db.store("same");
    let second = db.store("same");
    let lease = Duration::from_secs(15);
    let held = first.register_node(lease, T0).unwrap();
    let err = second.register_node(lease, T0 + 1000).unwrap_err();
    assert!(err.to_string().contains("node 'same' is held"), "{err}");
    // Renewed, it stays held; once expired, the name can be taken, and the old holder
    // learns it lost it.
    let held = first.renew_node(&held, lease, T0 + 10_000).unwrap();
    assert!(second.register_node(lease, T0 + 20_000).is_err());
    let taken = second.register_node(lease, T0 + 30_000).unwrap();
    assert!(first.renew_node(&held, lease, T0 + 30_001).is_err());
    second.release_node(&taken).unwrap();
    first.register_node(lease, T0 + 30_002).unwrap();
}

#[test]
fn leadership_goes_to_one_node_and_moves_when_its_lease_runs_out_or_it_resigns() {
    let Some(db) = TestDb::create("pg leadership") else {
        return;
    };
    let a = db.store("a");
    let b = db.store("b");
    let ttl = LEADER_TTL.as_millis() as i64;
    assert!(a.elect(LEADER_TTL, T0).unwrap().mine);
    let seen = b.elect(LEADER_TTL, T0 + 1).unwrap();
    assert!(!seen.mine);
    assert_eq!(seen.holder, "a");
    // a renews; b still follows.
    assert!(a.elect(LEADER_TTL, T0 + ttl / 2).unwrap().mine);
    assert!(!b.elect(LEADER_TTL, T0 + ttl + 1).unwrap().mine);
    // a stops renewing: b takes over after the lease.
    assert!(b.elect(LEADER_TTL, T0 + ttl / 2 + ttl + 1).unwrap().mine);
    assert!(!a.elect(LEADER_TTL, T0 + ttl / 2 + ttl + 2).unwrap().mine);
    // b resigns: a is elected at once.
    assert!(b.resign().unwrap());
    assert!(a.elect(LEADER_TTL, T0 + 2 * ttl).unwrap().mine);
    // Many at once: exactly one wins.
    db.client()
        .batch_execute("DELETE FROM jobd_leader")
        .unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let winners: usize = (0..4)
        .map(|n| {
            let store = db.store(&format!("n{n}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.elect(LEADER_TTL, T0 * 2).unwrap().mine as usize
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(winners, 1);
}

/// Runs one test of this binary again with another server URL, as a developer or CI would.
fn rerun_with_server(test: &str, url: &str, ci: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("JOBD_TEST_DATABASE_URL", url)
        .env_remove("CI");
    if let Some(ci) = ci {
        command.env("CI", ci);
    }
    command.output().unwrap()
}

#[test]
fn without_a_server_the_postgres_tests_say_they_skipped_and_fail_under_ci() {
    // A port nothing listens on (the discard port, refused on loopback).
    let nowhere = "postgresql://postgres@127.0.0.1:9/postgres";
    let test =
        "store::postgres::leadership_goes_to_one_node_and_moves_when_its_lease_runs_out_or_it_resigns";
    let dev = rerun_with_server(test, nowhere, None);
    let text =
        String::from_utf8_lossy(&dev.stderr).to_string() + &String::from_utf8_lossy(&dev.stdout);
    assert!(dev.status.success(), "{text}");
    assert!(text.contains("SKIPPED pg leadership: no PostgreSQL server answers at postgresql://postgres@127.0.0.1:9/postgres"), "{text}");
    let ci = rerun_with_server(test, nowhere, Some("true"));
    let text =
        String::from_utf8_lossy(&ci.stderr).to_string() + &String::from_utf8_lossy(&ci.stdout);
    assert!(!ci.status.success(), "{text}");
    assert!(
        text.contains("CI=true: PostgreSQL tests never skip"),
        "{text}"
    );
}
