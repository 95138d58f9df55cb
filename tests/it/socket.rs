//! The enqueue socket through the real daemon binary: many pipelining clients, every bad
//! line, limits, the socket file's life, systemd's passed socket, and a client in
//! another process speaking the documented protocol.

use crate::common::{wait_for, wait_for_explained};
use crate::ingest::TestDaemon;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// A connection that sends lines and reads answers.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(daemon: &TestDaemon) -> Client {
        Client::connect_to(&daemon.socket)
    }

    /// Connects to the socket file at `path` (a daemon started some other way).
    pub fn connect_to(path: &std::path::Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// Asks, but reads what the daemon says first if it refused the connection.
    fn answer_or_ask(&mut self, request: &str) -> Value {
        let _ = self.writer.write_all(format!("{request}\n").as_bytes());
        self.answer()
    }

    pub fn ask(&mut self, request: &str) -> Value {
        self.send_raw(request.as_bytes());
        self.send_raw(b"\n");
        self.answer()
    }
}

fn error_code(answer: &Value) -> &str {
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"]["code"].as_str().unwrap()
}

const SOCKET: &str = "[socket]\nmax_line_bytes = 2048\nmax_batch = 5\nmax_connections = 150\n\
    [commands.report]\nprogram = \"/bin/true\"\n";

#[test]
fn a_hundred_clients_each_pipelining_a_thousand_enqueues_are_all_acknowledged_and_present() {
    let daemon = TestDaemon::start(SOCKET);
    let clients: Vec<_> = (0..100)
        .map(|c| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                let stream = UnixStream::connect(&socket).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut writer = stream.try_clone().unwrap();
                // Far in the future, so the workers leave them be and the test measures ingest.
                let sender = std::thread::spawn(move || {
                    let mut batch = String::new();
                    for n in 0..1000 {
                        batch.push_str(&format!(
                            "{{\"op\":\"enqueue\",\"job\":{{\"kind\":\"noop\",\"payload\":{{\"c\":{c},\"n\":{n}}},\"delay\":\"1h\"}}}}\n"
                        ));
                    }
                    writer.write_all(batch.as_bytes()).unwrap();
                });
                let mut reader = BufReader::new(stream);
                let mut ids = Vec::with_capacity(1000);
                for _ in 0..1000 {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let answer: Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(answer["ok"], true, "{answer}");
                    ids.push(answer["id"].as_i64().unwrap());
                }
                sender.join().unwrap();
                ids
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for client in clients {
        for id in client.join().unwrap() {
            assert!(all.insert(id), "id {id} acknowledged twice");
        }
    }
    assert_eq!(all.len(), 100_000);
    let stored: BTreeSet<i64> = daemon.jobs().iter().map(|j| j.id).collect();
    assert_eq!(stored, all, "acknowledged ids and stored rows differ");
}

/// A raw connection to the daemon's socket that reads with a 60 s timeout, and a clone
/// of it that writes with `write_timeout`.
fn connection_and_writer(daemon: &TestDaemon, write_timeout: Duration) -> (UnixStream, UnixStream) {
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(write_timeout)).unwrap();
    (stream, writer)
}

/// `count` enqueue lines of noop jobs due in an hour (so no worker takes them), each
/// payload naming `tag` and its number.
fn delayed_enqueue_lines(tag: i64, count: usize) -> String {
    let mut lines = String::new();
    for n in 0..count {
        lines.push_str(&format!(
            "{{\"op\":\"enqueue\",\"job\":{{\"kind\":\"noop\",\"payload\":{{\"t\":{tag},\"n\":{n}}},\"delay\":\"1h\"}}}}\n"
        ));
    }
    lines
}

/// Reads `count` answers, each an accepted enqueue, and returns their ids in order.
fn read_enqueue_ids(stream: UnixStream, count: usize) -> Vec<i64> {
    let mut reader = BufReader::new(stream);
    (0..count)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let answer: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(answer["ok"], true, "{answer}");
            answer["id"].as_i64().unwrap()
        })
        .collect()
}

#[test]
fn a_client_that_stops_reading_holds_up_no_other_and_gets_every_answer_when_it_reads() {
    let daemon = TestDaemon::start(SOCKET);
    // 20,000 enqueues in four bursts, whose answers (about 23 bytes each) are twice what
    // the socket's buffer holds. The dispatcher writes what the socket takes and asks
    // the connection's writer thread to write the rest; between bursts the reading
    // thread waits for the next line, and must not be the one stuck writing answers
    // nobody reads, or the next burst is never read.
    let (stalled, mut writer) = connection_and_writer(&daemon, Duration::from_secs(60));
    let mut other = Client::connect(&daemon);
    let mut other_sent = 0;
    for burst in 1..=4 {
        let requests = delayed_enqueue_lines(burst, 5_000);
        if let Err(e) = writer.write_all(requests.as_bytes()) {
            panic!("burst {burst} was not read in 60 s ({e}): the reading thread is stuck");
        }
        // Meanwhile another client is answered as usual, until one of its jobs is the
        // newest after every job of the burst (ids follow the commits in a fresh
        // database): the stalled client's requests were read and committed.
        wait_for(
            Duration::from_secs(60),
            &format!("burst {burst} of the client that does not read to be committed"),
            || {
                let answer = other.ask(r#"{"op":"enqueue","job":{"kind":"noop","delay":"1h"}}"#);
                assert_eq!(answer["ok"], true, "{answer}");
                other_sent += 1;
                (answer["id"].as_i64() == Some(burst * 5_000 + other_sent)).then_some(())
            },
        );
    }
    let ids: BTreeSet<i64> = read_enqueue_ids(stalled, 20_000).into_iter().collect();
    assert_eq!(ids.len(), 20_000, "an id acknowledged twice");
    let stored: BTreeSet<i64> = daemon.jobs().iter().map(|j| j.id).collect();
    assert!(ids.is_subset(&stored), "an acknowledged job is not stored");
}

#[test]
fn the_reading_thread_answers_pings_without_waiting_for_a_client_that_does_not_read() {
    let daemon = TestDaemon::start(SOCKET);
    // 20,000 pings, each padded to 200 bytes: 4 MB of requests, far more than the socket
    // buffers hold, so the client's write finishes only if the daemon reads them all.
    // Their answers (about 840 KB) are more than the socket takes while the client does
    // not read (about 230 KB here), and the rest is less than the 1 MiB the daemon keeps
    // for it: the reading thread, which answers pings itself, must hand what the socket
    // does not take to the connection's writer thread, not block writing it and stop
    // reading (it did, and the next burst of a client that read later waited for ever).
    let (stream, mut writer) = connection_and_writer(&daemon, Duration::from_secs(20));
    let ping = format!("{:<199}\n", r#"{"op":"ping"}"#);
    let pings = ping.repeat(20_000);
    if let Err(e) = writer.write_all(pings.as_bytes()) {
        panic!("the daemon stopped reading before the 20,000th ping ({e})");
    }
    let mut reader = BufReader::new(stream);
    for n in 0..20_000 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["pong"], true, "answer {n}: {answer}");
    }
}

#[test]
fn a_client_that_never_reads_its_answers_stops_being_read_from_and_loses_nothing() {
    let daemon = TestDaemon::start(SOCKET);
    // 100,000 enqueues: their answers (about 2.3 MB) are more than the daemon keeps for a
    // client that does not read them (1 MiB beyond what the socket holds), so it stops
    // reading this connection and the client's writes block. A blocked write shows only
    // by not finishing: the sender gives it 2 s at a time, says when one timed out, and
    // goes on from where it was.
    let (stream, mut writer) = connection_and_writer(&daemon, Duration::from_secs(2));
    let (blocked_tx, blocked) = std::sync::mpsc::channel::<Option<usize>>();
    let sender = std::thread::spawn(move || {
        let requests = delayed_enqueue_lines(0, 100_000);
        let bytes = requests.as_bytes();
        let mut sent = 0;
        let mut said = false;
        while sent < bytes.len() {
            match writer.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !said {
                        said = true;
                        let _ = blocked_tx.send(Some(sent));
                    }
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        if !said {
            let _ = blocked_tx.send(None);
        }
    });
    let blocked_at = blocked
        .recv_timeout(Duration::from_secs(60))
        .expect("the sender neither finished nor blocked");
    let blocked_at =
        blocked_at.expect("the daemon read all 100,000 requests of a client that read no answer");
    assert!(blocked_at < 8_000_000, "blocked only at byte {blocked_at}");
    // Meanwhile other clients are served.
    let mut other = Client::connect(&daemon);
    let answer = other.ask(r#"{"op":"enqueue","job":{"kind":"noop","delay":"1h"}}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    // Once the client reads, the rest is read and every request answered, in order.
    let ids = read_enqueue_ids(stream, 100_000);
    sender.join().unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "answers out of order");
    assert_eq!(daemon.jobs().len(), 100_001);
}

#[test]
fn every_kind_of_bad_line_gets_its_error_and_the_connection_stays_usable() {
    let daemon = TestDaemon::start(SOCKET);
    let mut client = Client::connect(&daemon);
    assert_eq!(error_code(&client.ask("{not json")), "invalid_json");
    assert_eq!(error_code(&client.ask("[1,2]")), "invalid_request");
    assert_eq!(error_code(&client.ask(r#"{"op":"dance"}"#)), "unknown_op");
    let unknown = client.ask(r#"{"op":"enqueue","job":{"kind":"teleport"}}"#);
    assert_eq!(error_code(&unknown), "unknown_kind");
    assert!(unknown["error"]["message"]
        .as_str()
        .unwrap()
        .contains("teleport"));
    let bad = client.ask(r#"{"op":"enqueue","job":{"kind":"exec","payload":{"command":"rm-rf"}}}"#);
    assert_eq!(error_code(&bad), "invalid_payload");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("rm-rf"),
        "{bad}"
    );
    assert_eq!(
        error_code(&client.ask(r#"{"op":"enqueue","job":{"kind":"noop","colour":"red"}}"#)),
        "invalid_job"
    );
    let long = format!(
        r#"{{"op":"enqueue","job":{{"kind":"noop","payload":{{"pad":"{}"}}}}}}"#,
        "x".repeat(5000)
    );
    assert_eq!(error_code(&client.ask(&long)), "line_too_long");
    let six = r#"{"op":"enqueue","jobs":[{"kind":"noop"},{"kind":"noop"},{"kind":"noop"},{"kind":"noop"},{"kind":"noop"},{"kind":"noop"}]}"#;
    assert_eq!(error_code(&client.ask(six)), "batch_too_large");
    // A batch with one bad job enqueues none of them.
    let mixed = r#"{"op":"enqueue","jobs":[{"kind":"noop"},{"kind":"teleport"}]}"#;
    let refused = client.ask(mixed);
    assert_eq!(error_code(&refused), "unknown_kind");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("jobs[1]"));
    assert!(
        daemon.jobs().is_empty(),
        "a refused line enqueued something"
    );
    // Blank lines are skipped; the connection still serves.
    client.send_raw(b"\n\n");
    assert_eq!(client.ask(r#"{"op":"ping"}"#)["pong"], true);
    let one = client.ask(r#"{"op":"enqueue","job":{"kind":"noop","unique_key":"k1"}}"#);
    assert_eq!(one["ok"], true, "{one}");
    let again = client.ask(r#"{"op":"enqueue","job":{"kind":"noop","unique_key":"k1"}}"#);
    assert_eq!(again["id"], one["id"]);
    assert_eq!(again["duplicate"], true);
    let batch = client.ask(r#"{"op":"enqueue","jobs":[{"kind":"noop"},{"kind":"exec","payload":{"command":"report"}}]}"#);
    assert_eq!(batch["ids"].as_array().unwrap().len(), 2, "{batch}");
    let stats = client.ask(r#"{"op":"stats"}"#);
    assert_eq!(stats["ok"], true, "{stats}");
    assert!(stats["stats"]["queues"]["default"].is_object(), "{stats}");
}

#[test]
fn connections_are_limited_idle_ones_closed_and_the_socket_file_is_0660() {
    let daemon = TestDaemon::start("[socket]\nmax_connections = 2\nidle_timeout = \"500ms\"\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    // The harness's own ping connection may hold a slot until the daemon sees it close.
    let admitted = || {
        wait_for(
            Duration::from_secs(10),
            "a connection to be admitted",
            || {
                let mut client = Client::connect(&daemon);
                (client.answer_or_ask(r#"{"op":"ping"}"#)["ok"] == true).then_some(client)
            },
        )
    };
    // Taken before the first connection's ping is sent, so the daemon's last read of it
    // comes later and its idle close no sooner than 500 ms after this.
    let before_first = Instant::now();
    let mut first = admitted();
    let _second = admitted();
    let mut third = Client::connect(&daemon);
    assert_eq!(error_code(&third.answer()), "too_many_connections");
    // Idle past the timeout: closed by the daemon (the read ends), and the slot is free
    // again.
    let mut rest = Vec::new();
    first.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let closed_after = before_first.elapsed();
    assert!(
        closed_after >= Duration::from_millis(450),
        "closed {closed_after:?} after its ping, before the 500ms idle timeout"
    );
    // (Retried for a while: on a loaded machine the second idle close may come late.)
    let answer = std::cell::RefCell::new(Value::Null);
    wait_for_explained(
        Duration::from_secs(10),
        "a freed slot to be reused",
        || {
            let ping = Client::connect(&daemon).answer_or_ask(r#"{"op":"ping"}"#);
            let ok = ping["ok"] == true;
            *answer.borrow_mut() = ping;
            ok.then_some(())
        },
        || format!("the last answer: {}", answer.borrow()),
    );
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let mut daemon = TestDaemon::start("");
    // A second daemon (its own database) on the same socket path is refused.
    let other = daemon.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "[daemon]\ndatabase = \"{d}/other.db\"\ndata_dir = \"{d}/other\"\nsocket = \"{s}\"\n",
            d = daemon.dir.path().display(),
            s = daemon.socket.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobd"))
        .arg("--config")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another daemon is answering"), "{err}");
    // After kill -9 the socket file stays behind, stale; the next start replaces it.
    daemon.kill9();
    assert!(daemon.socket.exists());
    daemon.spawn();
    assert!(daemon.log().contains("replacing the stale socket file"));
    // A clean stop removes it.
    daemon.stop();
    assert!(!daemon.socket.exists());
}

#[test]
fn a_socket_passed_by_systemd_is_used_instead_of_binding() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("passed.sock");
    let listener = std::os::unix::net::UnixListener::bind(&passed).unwrap();
    let config = dir.path().join("jobd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{d}/jobs.db\"\ndata_dir = \"{d}/var\"\nsocket = \"{d}/configured.sock\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    // `exec` keeps the shell's pid, so $$ is jobd's pid, as systemd would set it.
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_jobd"))
        .arg(&config)
        .stderr(std::process::Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it puts the listener at fd 3 without CLOEXEC.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC, so a listener already at fd 3
            // only loses the flag.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let answer = wait_for_explained(
        Duration::from_secs(20),
        "jobd to answer on the passed socket",
        || {
            let mut stream = UnixStream::connect(&passed).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            writeln!(stream, r#"{{"op":"ping"}}"#).ok()?;
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).ok()?;
            (!line.is_empty()).then_some(line)
        },
        || {
            let _ = child.kill();
            let _ = child.wait();
            "no answer; killed it".to_string()
        },
    );
    let configured_exists = dir.path().join("configured.sock").exists();
    // SAFETY: our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        answer.contains("pong"),
        "no answer on the passed socket: {answer:?}"
    );
    assert!(
        !configured_exists,
        "bound daemon.socket although a socket was passed"
    );
}

#[test]
fn a_client_in_another_process_speaks_the_documented_protocol() {
    let daemon = TestDaemon::start("");
    // jobctl is always there.
    let (code, out, err) = daemon.jobctl(&["ping"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("answers on"), "{out}");
    let (code, out, err) = daemon.jobctl(&[
        "enqueue",
        "noop",
        "--payload",
        r#"{"via":"jobctl"}"#,
        "--via-socket",
    ]);
    assert_eq!(code, 0, "{err}");
    let id: i64 = out.trim().parse().unwrap();
    let (code, _, err) = daemon.jobctl(&["enqueue", "teleport", "--via-socket"]);
    assert_eq!(code, 2, "an unknown kind is a usage error: {err}");
    assert!(err.contains("unknown_kind"), "{err}");
    // The docs/protocol.md example, from python3 (a plain socket client, like socat).
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is needed to speak the protocol from an independent client"
    );
    let script = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
f = s.makefile("rw")
for line in [
    '{"op":"ping"}',
    '{"op":"enqueue","job":{"kind":"noop","payload":{"to":"a@example.com"}}}',
    '{"op":"enqueue","jobs":[{"kind":"noop"},{"kind":"noop","delay":"30s"}]}',
    '{"op":"enqueue","job":{"kind":"nope"}}',
]:
    f.write(line + "\n")
f.flush()
for _ in range(4):
    print(f.readline().strip())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers[0]["pong"], true);
    assert_eq!(answers[1]["ok"], true);
    assert_eq!(answers[2]["ids"].as_array().unwrap().len(), 2);
    assert_eq!(answers[3]["error"]["code"], "unknown_kind");
    let jobs = daemon.jobs();
    assert!(jobs
        .iter()
        .any(|j| j.id == id && j.payload == json!({"via": "jobctl"})));
    assert_eq!(jobs.len(), 4);
}

/// Asks `{"op":"ping"}` on the socket as another user (through `setpriv`, since the tests
/// run as root and root is always admitted); returns the answer line.
fn ping_as(uid: u32, socket: &std::path::Path) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  try:\n    s.sendall(b'{\"op\":\"ping\"}\\n')\n\
                  except OSError:\n    pass  # a refused peer may be answered and closed first\n\
                  print(s.makefile().readline().strip())\n";
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .args(["/usr/bin/python3", "-c", script]) // the system one: root's may be unreachable
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn allowed_uids_admit_only_the_listed_peers_by_their_credentials() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    const OTHER: u32 = 65533;
    let daemon = TestDaemon::start(&format!("[socket]\nallowed_uids = [{NOBODY}]\n"));
    // Let other users reach the socket file, so only SO_PEERCRED decides.
    let dir = daemon.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let listed: Value = serde_json::from_str(&ping_as(NOBODY, &daemon.socket)).unwrap();
    assert_eq!(listed["ok"], true, "{listed}");
    let refused: Value = serde_json::from_str(&ping_as(OTHER, &daemon.socket)).unwrap();
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(error_code(&refused), "forbidden", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {OTHER}")),
        "{refused}"
    );
    assert!(
        daemon.log().contains("not in socket.allowed_uids"),
        "{}",
        daemon.log()
    );
}
