//! Watched folders through the real daemon binary: settle and rename-in, bursts and
//! dedupe, folder sets and their timeout, dead inputs and retry, and kill -9 mid-burst.
//! Also the daemon harness the socket tests share.

use crate::common::{wait_for, wait_for_explained, wait_until};
use jobd::clock::{Clock, SystemClock};
use jobd::job::{Job, JobState};
use jobd::store::{JobFilter, OpenOptions};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A jobd process with its own directory, config, database and socket.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db: PathBuf,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub input: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Writes a config (`extra` is appended: [[watch]] tables, [socket] ...; `{dir}` is
    /// replaced by the temp dir) and starts jobd on it, waiting until its socket answers.
    pub fn start(extra: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let config = root.join("jobd.toml");
        let text = format!(
            "[daemon]\ndatabase = \"{d}/jobs.db\"\ndata_dir = \"{d}/var\"\nsocket = \"{d}/jobd.sock\"\n\
             workers = 2\npoll_interval = \"20ms\"\nsynchronous = \"normal\"\nshutdown_grace = \"2s\"\n\
             [log]\nlevel = \"info\"\n{extra}",
            d = root.display(),
            extra = extra.replace("{dir}", &root.display().to_string())
        );
        fs::write(&config, text).unwrap();
        let mut daemon = TestDaemon {
            config,
            db: root.join("jobs.db"),
            data: root.join("var"),
            socket: root.join("jobd.sock"),
            input: root.join("in"),
            dir,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("jobd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jobd"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_until_answering();
    }

    fn wait_until_answering(&mut self) {
        let socket = self.socket.clone();
        let log = self.dir.path().join("jobd.log");
        let child = self.child.as_mut().unwrap();
        wait_for_explained(
            Duration::from_secs(20),
            "jobd to answer a ping on its socket",
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "jobd exited with {status}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let mut stream = UnixStream::connect(&socket).ok()?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                writeln!(stream, "{{\"op\":\"ping\"}}").ok()?;
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).ok()?;
                line.contains("pong").then_some(())
            },
            || fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("jobd.log")).unwrap_or_default()
    }

    /// SIGKILL, no chance to tidy up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the drain.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    pub fn jobs(&self) -> Vec<Job> {
        let db = jobd::store::open(&self.db, &OpenOptions::default()).unwrap();
        db.list(&JobFilter::default()).unwrap()
    }

    /// Waits until `check` holds of the jobs, or fails with what it last saw.
    pub fn wait_for_jobs(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Job]) -> bool,
    ) -> Vec<Job> {
        let last = std::cell::RefCell::new(Vec::new());
        wait_for_explained(
            timeout,
            what,
            || {
                let jobs = self.jobs();
                let done = check(&jobs).then(|| jobs.clone());
                *last.borrow_mut() = jobs;
                done
            },
            || {
                let last = last.borrow();
                format!(
                    "{} job(s): {:?}\nlog:\n{}",
                    last.len(),
                    last.iter()
                        .map(|j| (j.id, &j.kind, j.state, &j.last_error))
                        .take(20)
                        .collect::<Vec<_>>(),
                    self.log()
                )
            },
        )
    }

    pub fn jobctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Writes a file outside the input folder, then renames it in: the recommended producer
/// pattern.
pub fn drop_file(daemon: &TestDaemon, name: &str, content: &[u8]) {
    let outside = daemon.dir.path().join("outbox");
    fs::create_dir_all(&outside).unwrap();
    let temp = outside.join(name);
    fs::write(&temp, content).unwrap();
    fs::rename(&temp, daemon.input.join(name)).unwrap();
}

/// Every regular file under `dir`, relative, except the daemon's own bookkeeping.
fn inputs_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name != ".jobd-meta.json" && !name.ends_with(".error.json") {
                found.push(name);
            }
        }
    }
    found
}

const WATCH: &str =
    "[[watch]]\npath = \"{dir}/in\"\nsettle = \"1s\"\nrescan = \"1s\"\nkind = \"noop\"\n";

#[test]
fn a_slow_writer_is_not_taken_early() {
    let daemon = TestDaemon::start(WATCH);
    // A producer writing in place, pausing between parts for less than the settle time.
    // Its pauses are what is tested (the real binary settles on real time), so they stay
    // sleeps.
    let path = daemon.input.join("slow.csv");
    let mut file = fs::File::create(&path).unwrap();
    for part in 0..8 {
        writeln!(file, "row {part}").unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            daemon.jobs().is_empty(),
            "taken while still being written (after part {part})"
        );
        assert!(path.exists());
    }
    drop(file);
    let size = fs::metadata(&path).unwrap().len();
    let jobs = daemon.wait_for_jobs("the slow file", Duration::from_secs(10), |jobs| {
        jobs.len() == 1
    });
    assert_eq!(
        jobs[0].payload["size"], size,
        "taken before it was complete"
    );
    assert_eq!(jobs[0].payload["name"], "slow.csv");
}

/// Settle and rescan as long as they go: a file taken in at all was taken on its rename
/// notification, since a listing would find it only in a day and let it settle a day.
const WATCH_RENAMES_ONLY: &str =
    "[[watch]]\npath = \"{dir}/in\"\nsettle = \"1d\"\nrescan = \"1d\"\nkind = \"noop\"\n";

#[test]
fn a_renamed_in_file_is_taken_at_once_on_its_rename_notification() {
    let daemon = TestDaemon::start(WATCH_RENAMES_ONLY);
    // The watcher logs this once its inotify watch is registered and before its first
    // listing; a file renamed in earlier would be found by that listing, left to settle.
    wait_until(Duration::from_secs(20), "the watcher to start", || {
        daemon.log().contains(": watching ")
    });
    let renamed_at = SystemClock.now_ms();
    drop_file(&daemon, "fast.csv", b"a,b\n1,2\n");
    let jobs = daemon.wait_for_jobs(
        "the renamed-in file to be taken on its notification",
        Duration::from_secs(30),
        |jobs| jobs.len() == 1,
    );
    assert_eq!(jobs[0].payload["name"], "fast.csv");
    // The daemon's own record of when it took the file, not when this test looked: the
    // README's "taken at once", with room for a loaded machine.
    let latency_ms = jobs[0].created_at - renamed_at;
    assert!(
        (0..=5_000).contains(&latency_ms),
        "a renamed-in file became a job {latency_ms} ms after its rename"
    );
}

#[test]
fn a_thousand_files_become_a_thousand_jobs_and_duplicate_content_is_not_enqueued_again() {
    let daemon = TestDaemon::start(WATCH);
    let outbox = daemon.dir.path().join("outbox");
    fs::create_dir_all(&outbox).unwrap();
    for n in 0..1000 {
        fs::write(outbox.join(format!("f{n:04}.csv")), format!("file {n}\n")).unwrap();
    }
    for n in 0..1000 {
        let name = format!("f{n:04}.csv");
        fs::rename(outbox.join(&name), daemon.input.join(&name)).unwrap();
    }
    let jobs = daemon.wait_for_jobs("1,000 jobs", Duration::from_secs(60), |jobs| {
        jobs.len() == 1000 && jobs.iter().all(|j| j.state == JobState::Succeeded)
    });
    let names: std::collections::BTreeSet<_> = jobs
        .iter()
        .map(|j| j.payload["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 1000);
    // The same content under the same name again: no new job, the copy goes to done/.
    for n in 0..10 {
        drop_file(
            &daemon,
            &format!("f{n:04}.csv"),
            format!("file {n}\n").as_bytes(),
        );
    }
    // Same name, new content: a new job.
    drop_file(&daemon, "f0000.csv", b"changed\n");
    daemon.wait_for_jobs("the changed file", Duration::from_secs(10), |jobs| {
        jobs.len() == 1001
    });
    // Each duplicate is logged as it is put in done/. (f0000.csv's copy may be replaced
    // by its changed content before the watcher sees it, so it is not counted on.)
    wait_until(
        Duration::from_secs(10),
        "f0001.csv..f0009.csv to be logged as duplicates and the input to be empty",
        || {
            let log = daemon.log();
            (1..10).all(|n| log.contains(&format!("f{n:04}.csv is a duplicate of")))
                && fs::read_dir(&daemon.input).unwrap().count() == 0
        },
    );
    assert_eq!(daemon.jobs().len(), 1001, "a duplicate became a job");
    wait_until(
        Duration::from_secs(10),
        "both copies of f0001.csv in done/",
        || {
            let done = inputs_under(&daemon.data.join("done"));
            done.iter().filter(|n| n.as_str() == "f0001.csv").count() == 2
        },
    );
}

const FOLDER_SET: &str =
    "[[watch]]\npath = \"{dir}/in\"\nmode = \"dir\"\nsettle = \"200ms\"\nrescan = \"1s\"\n\
    kind = \"noop\"\nrequired = [\"school.csv\", \"student.csv\", \"teacher.csv\"]\n\
    optional = [\"class.csv\"]\nincomplete_timeout = \"6s\"\n";

/// Inputs move to done/ or failed/ just after their job's end is committed, so a test
/// that has seen the job's state waits for the move.
fn wait_gone(path: &Path) {
    wait_until(
        Duration::from_secs(10),
        &format!("{} to leave the input", path.display()),
        || !path.exists(),
    );
}

#[test]
fn a_folder_set_waits_for_its_required_files_and_an_incomplete_one_dies_naming_them() {
    let daemon = TestDaemon::start(FOLDER_SET);
    let set = daemon.input.join("20251027");
    fs::create_dir(&set).unwrap();
    fs::write(set.join("School.CSV"), "s").unwrap();
    fs::write(set.join("student.csv"), "st").unwrap();
    // The daemon's record that it looked at the set and found it incomplete.
    let stats = wait_for(
        Duration::from_secs(10),
        "the set to be recorded as incomplete",
        || {
            let (code, stats, _) = daemon.jobctl(&["stats", "--json"]);
            assert_eq!(code, 0);
            let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
            (stats["incomplete_folders"][0]["folder"] == "20251027").then_some(stats)
        },
    );
    assert!(daemon.jobs().is_empty(), "taken without teacher.csv");
    assert_eq!(
        stats["incomplete_folders"][0]["folder"], "20251027",
        "{stats}"
    );
    assert_eq!(
        stats["incomplete_folders"][0]["missing"],
        serde_json::json!(["teacher.csv"])
    );
    let (_, table, _) = daemon.jobctl(&["stats"]);
    assert!(
        table.contains("INCOMPLETE FOLDER") && table.contains("teacher.csv"),
        "{table}"
    );

    fs::write(set.join("teacher.csv"), "t").unwrap();
    let jobs = daemon.wait_for_jobs("the complete set", Duration::from_secs(10), |jobs| {
        jobs.len() == 1 && jobs[0].state == JobState::Succeeded
    });
    assert_eq!(jobs[0].payload["name"], "20251027");
    assert_eq!(jobs[0].payload["files"].as_array().unwrap().len(), 3);
    wait_gone(&set);

    // Only one of three, never completed: dead after the timeout, naming the others.
    let late = daemon.input.join("20251028");
    fs::create_dir(&late).unwrap();
    fs::write(late.join("school.csv"), "s").unwrap();
    let jobs = daemon.wait_for_jobs("the timed-out set", Duration::from_secs(30), |jobs| {
        jobs.len() == 2
    });
    let dead = jobs
        .iter()
        .find(|j| j.payload["name"] == "20251028")
        .unwrap();
    assert_eq!(dead.state, JobState::Dead);
    let error = dead.last_error.clone().unwrap();
    assert!(
        error.contains("student.csv")
            && error.contains("teacher.csv")
            && !error.contains("school.csv"),
        "{error}"
    );
    wait_gone(&late);
    // It goes through the spool on its way to failed/, just after its death is committed.
    wait_until(Duration::from_secs(10), "school.csv in failed/", || {
        inputs_under(&daemon.data.join("failed")).contains(&"school.csv".to_string())
    });
    let (_, stats, _) = daemon.jobctl(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["incomplete_folders"], serde_json::json!([]));
}

#[test]
fn a_dead_jobs_input_goes_to_failed_with_its_error_and_retry_brings_it_back() {
    let watch = WATCH.to_string() + "[watch.payload]\nfail = \"permanent\"\nerror = \"bad rows\"\n";
    let mut daemon = TestDaemon::start(&watch);
    drop_file(&daemon, "bad.csv", b"x\n");
    let jobs = daemon.wait_for_jobs("a dead job", Duration::from_secs(10), |jobs| {
        jobs.len() == 1 && jobs[0].state == JobState::Dead
    });
    let id = jobs[0].id;
    // The move happens right after the commit that killed the job.
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    let failed = daemon.data.join("failed").join(&day).join(id.to_string());
    wait_for_explained(
        Duration::from_secs(10),
        "bad.csv and its error in failed/",
        || {
            (failed.join("bad.csv").exists() && failed.join("bad.csv.error.json").exists())
                .then_some(())
        },
        || format!("found: {:?}", inputs_under(&daemon.data)),
    );
    let error: serde_json::Value =
        serde_json::from_slice(&fs::read(failed.join("bad.csv.error.json")).unwrap()).unwrap();
    assert_eq!(error["job_id"], id);
    assert_eq!(error["attempts"], 1);
    assert!(error["last_error"].as_str().unwrap().contains("bad rows"));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(failed.join("bad.csv.error.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "error file is world-readable: {mode:o}");

    daemon.stop();
    let (code, _, err) = daemon.jobctl(&["retry", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(daemon
        .data
        .join("spool")
        .join(id.to_string())
        .join("bad.csv")
        .exists());
    assert!(!failed.exists());
    assert_eq!(daemon.jobs()[0].state, JobState::Queued);
}

#[test]
fn kill_9_during_a_burst_of_drops_loses_no_file_and_makes_no_second_job() {
    let mut daemon = TestDaemon::start(WATCH);
    let outbox = daemon.dir.path().join("outbox");
    fs::create_dir_all(&outbox).unwrap();
    let total = 600;
    for n in 0..total {
        fs::write(
            outbox.join(format!("k{n:04}.csv")),
            format!("content {n}\n"),
        )
        .unwrap();
    }
    let input = daemon.input.clone();
    let moved = Arc::new(AtomicUsize::new(0));
    let producer = {
        let moved = moved.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                let name = format!("k{n:04}.csv");
                fs::rename(outbox.join(&name), input.join(&name)).unwrap();
                moved.fetch_add(1, Ordering::SeqCst);
                // A producer that drops in bursts of 50: its pace is part of the scene.
                if n % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(15));
                }
            }
        })
    };
    // Two kills while the daemon is taking files in: each once it has made a job or
    // two more since it started.
    let mut mid_burst = 0;
    for kill in 1..=2 {
        wait_until(
            Duration::from_secs(20),
            &format!("jobs to be made before kill {kill}"),
            || daemon.jobs().len() >= 2 * kill,
        );
        daemon.kill9();
        let at_kill = moved.load(Ordering::SeqCst);
        if at_kill < total {
            mid_burst += 1;
        }
        // The producer goes on while the daemon is down: the restart finds files that
        // arrived with nobody watching.
        wait_until(
            Duration::from_secs(10),
            "the producer to move on while the daemon is down",
            || moved.load(Ordering::SeqCst) > at_kill || at_kill == total,
        );
        daemon.spawn();
    }
    producer.join().unwrap();
    assert!(mid_burst > 0, "no kill landed during the burst");
    let jobs = daemon.wait_for_jobs(
        "every file taken and run",
        Duration::from_secs(60),
        |jobs| jobs.len() >= total && jobs.iter().all(|j| j.state == JobState::Succeeded),
    );
    // The last moves to done/ land just after their jobs' ends are committed.
    wait_until(
        Duration::from_secs(10),
        "every input to leave the spool",
        || inputs_under(&daemon.data.join("spool")).is_empty(),
    );
    assert_eq!(jobs.len(), total, "a file became two jobs");
    let mut per_name: BTreeMap<String, usize> = BTreeMap::new();
    for job in &jobs {
        *per_name
            .entry(job.payload["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_name.values().all(|n| *n == 1));
    assert_eq!(
        fs::read_dir(&daemon.input).unwrap().count(),
        0,
        "files left in the input folder"
    );
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for top in ["spool", "done", "failed"] {
        for name in inputs_under(&daemon.data.join(top)) {
            *copies.entry(name).or_default() += 1;
        }
    }
    assert_eq!(
        copies.len(),
        total,
        "files lost: {} of {total} found",
        copies.len()
    );
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "files in more than one place: {doubled:?}"
    );
    assert!(
        inputs_under(&daemon.data.join("spool")).is_empty(),
        "succeeded inputs left in the spool"
    );
}

#[test]
fn a_missing_watched_folder_is_created_or_refused_by_key() {
    let daemon = TestDaemon::start(WATCH);
    assert!(daemon.input.is_dir());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jobd.toml");
    fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{d}/jobs.db\"\ndata_dir = \"{d}/var\"\nsocket = \"{d}/s.sock\"\n\
             [[watch]]\npath = \"{d}/nope\"\ncreate = false\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    // Refused as a bad config (exit 2), as --check-config refuses it.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("watch[0].path") && err.contains("does not exist"),
        "{err}"
    );
}
