//! Unit tests of the watcher's timing on a manual clock (kept out of `watch.rs`, which is
//! long enough): the test plays the dispatcher's part for the writes.

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::daemon::dispatcher::Command;

#[test]
fn a_file_is_taken_in_only_once_it_has_settled_by_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    fs::create_dir(&root).unwrap();
    let database = dir.path().join("jobs.db");
    let data = dir.path().join("data");
    let text = format!(
        "[daemon]\ndatabase = {:?}\ndata_dir = {:?}\n[socket]\nenabled = false\n",
        database.display().to_string(),
        data.display().to_string()
    );
    let config = crate::config::Config::from_toml(&text, "test").unwrap();
    let options = crate::store::OpenOptions {
        create: true,
        migrate: true,
        ..Default::default()
    };
    let mut db = crate::store::open(&database, &options).unwrap();
    let clock = Arc::new(ManualClock::with_manual_timers(1_800_000_000_000));
    let (commands, dispatcher) = crossbeam_channel::unbounded();
    let client = DaemonClient::to_channel(commands, config);
    // Plays the dispatcher's part: each write in its own transaction.
    let writer_clock = clock.clone();
    let writer = std::thread::spawn(move || {
        for command in dispatcher.iter() {
            if let Command::Write(task) = command {
                let now = writer_clock.now_ms();
                let mut done = None;
                db.write(|tx| {
                    done = Some(task(tx, now));
                    Ok(())
                })
                .unwrap();
                done.expect("the task ran")(Ok(()));
            }
        }
    });
    let watch: WatchConfig = toml::from_str(&format!(
        "path = {:?}\nsettle = \"2s\"",
        root.display().to_string()
    ))
    .unwrap();
    let shared: SharedClock = clock.clone();
    let mut watcher = FolderWatcher {
        key: "watch[0]".into(),
        matcher: globset::GlobBuilder::new(&watch.pattern)
            .build()
            .unwrap()
            .compile_matcher(),
        config: watch,
        watch_name: root.display().to_string(),
        root: root.clone(),
        client,
        clock: shared.clone(),
        spool: Spool::open(&data, shared.clone()).unwrap(),
        files: HashMap::new(),
        folders: HashMap::new(),
        stuck: Vec::new(),
        next_rescan: shared.monotonic(),
        report: WatchReport::open(&data),
        ignored: HashSet::new(),
    };
    let input = root.join("a.csv");
    fs::write(&input, "x\n").unwrap();
    watcher.consider_file(input.clone(), false);
    watcher.take_ready_files();
    assert!(input.exists(), "first seen now");
    clock.advance(Duration::from_millis(1_999));
    watcher.take_ready_files();
    assert!(input.exists(), "not settled yet");
    clock.advance(Duration::from_millis(1));
    watcher.take_ready_files();
    assert!(!input.exists(), "settled: taken in");
    drop(watcher);
    writer.join().unwrap();
    let db = crate::store::open(&database, &Default::default()).unwrap();
    let job = db.get(1).unwrap();
    assert!(job.source.unwrap_or_default().ends_with("a.csv"));
}
