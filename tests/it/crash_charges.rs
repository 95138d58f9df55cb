//! A crash charges only the attempts whose handler started: the real daemon, killed with
//! SIGKILL while it holds jobs claimed ahead, then restarted. Each start is counted by its
//! side effect: the exec command appends its job id and attempt to a file first thing.

use crate::common::{signal, stdout, wait_exit, wait_until, DaemonRun, Sandbox};
use jobd::job::{JobId, JobState, NewJob};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// A sandbox with `workers` workers and a `mark` command that records its start in
/// `starts.log`, then sleeps 2 s while the file `slow` exists, else `quick_sleep`.
fn sandbox(workers: usize, quick_sleep: &str) -> Sandbox {
    let sandbox = Sandbox::new(&format!("workers = {workers}"), "");
    let log = sandbox.path("starts.log");
    let slow = sandbox.path("slow");
    sandbox.append_config(&format!(
        "[commands.mark]\nprogram = \"/bin/sh\"\nargs = [\"-c\", {:?}]\n",
        format!(
            "echo \"$JOBD_JOB_ID $JOBD_ATTEMPT\" >> '{}'; if [ -e '{}' ]; then sleep 2; else sleep {quick_sleep}; fi",
            log.display(),
            slow.display()
        )
    ));
    sandbox
}

fn enqueue_marks(sandbox: &Sandbox, n: usize, max_attempts: Option<u32>) -> Vec<JobId> {
    let mut db = sandbox.migrate();
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| {
            let job = NewJob::new("exec", json!({"command": "mark"}));
            match max_attempts {
                Some(max) => job.max_attempts(max),
                None => job,
            }
        })
        .collect();
    db.write(|tx| tx.enqueue(&jobs, jobd::clock::Clock::now_ms(&jobd::clock::SystemClock)))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

/// How many times each job's handler started, by the command's own record.
fn starts(sandbox: &Sandbox) -> BTreeMap<JobId, Vec<u32>> {
    let text = std::fs::read_to_string(sandbox.path("starts.log")).unwrap_or_default();
    let mut starts: BTreeMap<JobId, Vec<u32>> = BTreeMap::new();
    for line in text.lines() {
        let (id, attempt) = line.split_once(' ').expect("id attempt");
        starts
            .entry(id.parse().unwrap())
            .or_default()
            .push(attempt.parse().unwrap());
    }
    starts
}

fn run_once(sandbox: &Sandbox) {
    let mut once = sandbox.spawn_jobd(&["--once"]);
    let status = wait_exit(&mut once, Duration::from_secs(60));
    assert!(status.success(), "jobd --once failed:\n{}", sandbox.log());
}

/// Per recovery logged: (charged, given back uncharged).
fn recoveries(log: &str) -> Vec<(usize, usize)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split_once("left running by an earlier process: ")?.1;
            let charged = rest.split(' ').next()?.parse().ok()?;
            let uncharged = rest
                .split_once("(attempt charged), ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((charged, uncharged))
        })
        .collect()
}

#[test]
fn after_kill_9_jobs_claimed_ahead_are_not_charged_and_stats_show_them_as_claimed() {
    let sandbox = sandbox(2, "0");
    let ids = enqueue_marks(&sandbox, 10, Some(1));
    std::fs::write(sandbox.path("slow"), "").unwrap();
    let mut jobd = sandbox.spawn_jobd(&[]);
    // Two handlers run (2 s each); the first claim took two more ahead for them.
    wait_until(Duration::from_secs(20), "2 running and 2 claimed", || {
        let out = sandbox.jobctl(&["stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or(json!({}));
        let queue = &stats["queues"]["default"];
        queue["states"]["running"] == 2 && queue["claimed"] == 2
    });
    let text = stdout(&sandbox.jobctl(&["stats"]));
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!((column("CLAIMED"), column("RUNNING")), ("2", "2"), "{text}");
    let prometheus = stdout(&sandbox.jobctl(&["stats", "--format", "prometheus"]));
    for series in [
        "jobd_jobs{queue=\"default\",state=\"claimed\"} 2",
        "jobd_jobs{queue=\"default\",state=\"running\"} 2",
    ] {
        assert!(
            prometheus.contains(series),
            "{series} missing:\n{prometheus}"
        );
    }
    // kill -9 once the two running commands have recorded their start (they sleep 2 s):
    // nothing else has started.
    wait_until(
        Duration::from_secs(20),
        "the two running commands to start",
        || starts(&sandbox).len() == 2,
    );
    signal(&jobd, libc::SIGKILL);
    wait_exit(&mut jobd, Duration::from_secs(10));
    let before_restart = starts(&sandbox);
    assert_eq!(before_restart.len(), 2, "{before_restart:?}");
    std::fs::remove_file(sandbox.path("slow")).unwrap();

    run_once(&sandbox);

    assert_eq!(
        recoveries(&sandbox.log()),
        vec![(2, 2)],
        "{}",
        sandbox.log()
    );
    let db = sandbox.open();
    let starts = starts(&sandbox);
    for id in ids {
        let job = db.get(id).unwrap();
        let ran = starts.get(&id).map_or(0, Vec::len) as u32;
        assert_eq!(job.attempts, ran, "job {id}: attempts vs handler starts");
        if before_restart.contains_key(&id) {
            assert_eq!(job.state, JobState::Dead, "job {id}");
            assert!(job.last_error.unwrap().contains("attempts exhausted (1/1)"));
        } else {
            assert_eq!(
                (job.state, job.attempts),
                (JobState::Succeeded, 1),
                "job {id} never started before the kill, so it was not charged: {:?}",
                job.last_error
            );
        }
    }
}

#[test]
fn after_repeated_kill_9_during_a_drain_attempts_equal_the_handler_starts() {
    let sandbox = sandbox(2, "0.1");
    let ids = enqueue_marks(&sandbox, 40, None);
    for run in 0..4 {
        let mut jobd = sandbox.spawn_jobd(&[]);
        wait_until(Duration::from_secs(20), "jobd ready", || {
            sandbox.log().matches("jobd ready").count() > run
        });
        // Mid-drain: kill -9 once this run has started a few rounds of commands, when the
        // claims hold more ahead of the workers (sized by the handlers' time so far).
        let started_before: usize = starts(&sandbox).values().map(Vec::len).sum();
        wait_until(
            Duration::from_secs(20),
            "this run to start six commands",
            || starts(&sandbox).values().map(Vec::len).sum::<usize>() >= started_before + 6,
        );
        signal(&jobd, libc::SIGKILL);
        wait_exit(&mut jobd, Duration::from_secs(10));
    }
    run_once(&sandbox);
    // Commands still running at the last kill finish their sleep; their start is written.
    let recovered = recoveries(&sandbox.log());
    assert_eq!(recovered.len(), 4, "{}", sandbox.log());
    assert!(
        recovered
            .iter()
            .map(|(_, uncharged)| uncharged)
            .sum::<usize>()
            > 0,
        "no kill found a job claimed ahead, so this tested nothing: {recovered:?}"
    );
    let db = sandbox.open();
    let starts = starts(&sandbox);
    for id in ids {
        let job = db.get(id).unwrap();
        let attempts = starts.get(&id).cloned().unwrap_or_default();
        assert_eq!(job.state, JobState::Succeeded, "job {id}");
        assert_eq!(
            job.attempts as usize,
            attempts.len(),
            "job {id}: attempts {} but its handler started {} time(s): {attempts:?}",
            job.attempts,
            attempts.len()
        );
        let numbered: Vec<u32> = (1..=attempts.len() as u32).collect();
        assert_eq!(
            attempts, numbered,
            "job {id}: each start has the next attempt number"
        );
    }
}

#[test]
fn a_lease_that_runs_out_before_the_handler_starts_gives_the_job_back_uncharged() {
    use jobd::clock::{Clock, ManualClock, SystemClock};
    use jobd::config::Config;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts.log");
    let text = format!(
        "[daemon]\ndatabase = \"{db}\"\ndata_dir = \"{data}\"\nworkers = 1\nlease = \"60s\"\n\
         reap_interval = \"100ms\"\n[socket]\nenabled = false\n\
         [commands.mark]\nprogram = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n",
        db = dir.path().join("jobs.db").display(),
        data = dir.path().join("data").display(),
        script = format!(
            "echo \"$JOBD_JOB_ID $JOBD_ATTEMPT\" >> '{}'; sleep 1",
            log.display()
        ),
    );
    let config = Config::from_toml(&text, "test").unwrap();
    // The daemon's clock jumps past every lease while one job runs and one waits for
    // the only worker: the reaper finds both leases gone before the next heartbeat.
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let daemon = DaemonRun {
        clock: clock.clone(),
        ..DaemonRun::default()
    }
    .start(config.clone());
    let client = daemon.client();
    let ids: Vec<JobId> = client
        .enqueue(vec![NewJob::new("exec", json!({"command": "mark"})); 2])
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let db = jobd::store::open(&config.daemon.database, &Default::default()).unwrap();
    wait_until(Duration::from_secs(20), "one running, one claimed", || {
        let queue = db.stats(clock.now_ms()).unwrap().queues["default"].clone();
        queue.states.get("running") == Some(&1) && queue.claimed == 1
    });
    clock.advance(Duration::from_secs(120));
    wait_until(Duration::from_secs(30), "both jobs to succeed", || {
        ids.iter()
            .all(|id| db.get(*id).unwrap().state == JobState::Succeeded)
    });
    client.shutdown();
    daemon.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    let starts_of = |id: JobId| -> Vec<u32> {
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(job, _)| job.parse::<JobId>().ok() == Some(id))
            .map(|(_, attempt)| attempt.parse().unwrap())
            .collect()
    };
    let (running, claimed) = (ids[0], ids[1]);
    // The running one was charged: its lost attempt is recorded and it ran again.
    let outcomes: Vec<String> = db
        .attempts(running)
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["lease_expired", "succeeded"], "job {running}");
    assert_eq!(starts_of(running), [1, 2]);
    // The claimed one went back uncharged, and its old claim never started it.
    let outcomes: Vec<String> = db
        .attempts(claimed)
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["succeeded"], "job {claimed}");
    assert_eq!(db.get(claimed).unwrap().attempts, 1);
    assert_eq!(starts_of(claimed), [1], "started once, as attempt 1");
}
