//! The enqueue socket: binds (or takes from systemd) the Unix stream socket, admits peers
//! by SO_PEERCRED, and serves each connection on its own thread, at most
//! `socket.max_connections` at once. Requests are pipelined: each line is handed to the
//! dispatcher at once and a writer thread sends the answers in order as their commits
//! land, so one client's requests share group commits.

use super::protocol::{codes, enqueued_line, parse_request, Refusal, Request};
use crate::clock::SharedClock;
use crate::config::{Config, SocketConfig};
use crate::daemon::{DaemonClient, EnqueueReply};
use crate::store::{Db, OpenOptions};
use crossbeam_channel::Receiver;
use serde_json::json;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;
/// Answers waiting to be written per connection; a client that never reads its answers
/// stops being read from.
const MAX_IN_FLIGHT: usize = 8192;

/// A listening socket, bound by us (and removed when dropped) or passed by systemd.
pub struct Listener {
    listener: UnixListener,
    /// The path we bound, to remove on exit; `None` when systemd owns it.
    bound: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.bound {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// The socket file we bound (not one systemd owns).
    pub fn bound_path(&self) -> Option<&Path> {
        self.bound.as_deref()
    }

    /// Takes the socket systemd passed (LISTEN_FDS / LISTEN_PID), or binds `path`: a
    /// stale socket file is replaced, a live one (another daemon answering) is refused.
    pub fn open(path: &Path, settings: &SocketConfig) -> Result<Listener, String> {
        if let Some(listener) = from_systemd() {
            tracing::info!(
                "enqueue socket: using the socket passed by systemd (fd {LISTEN_FDS_START})"
            );
            return Ok(Listener {
                listener,
                bound: None,
            });
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "daemon.socket: {} exists and is not a socket; remove it or choose another path",
                    path.display()
                ));
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                    "daemon.socket: another daemon is answering on {}; refusing to start a second",
                    path.display()
                ))
                }
                Err(_) => {
                    tracing::warn!(
                        "enqueue socket: replacing the stale socket file {}",
                        path.display()
                    );
                    std::fs::remove_file(path).map_err(|e| {
                        format!("daemon.socket: cannot remove stale {}: {e}", path.display())
                    })?;
                }
            }
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::spool::create_private_dir(parent)
                .map_err(|e| format!("daemon.socket: cannot create {}: {e}", parent.display()))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("daemon.socket: cannot bind {}: {e}", path.display()))?;
        let bound = Listener {
            listener,
            bound: Some(path.to_path_buf()),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
            .map_err(|e| format!("socket.mode: cannot set it on {}: {e}", path.display()))?;
        if let Some(group) = &settings.group {
            let gid = group_id(group).ok_or_else(|| format!("socket.group: no group '{group}'"))?;
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| "daemon.socket: the path holds a NUL byte".to_string())?;
            // SAFETY: a valid C string; uid -1 leaves the owner as it is.
            if unsafe { libc::chown(c_path.as_ptr(), u32::MAX, gid) } != 0 {
                return Err(format!(
                    "socket.group: cannot give {} to group {group}: {}",
                    path.display(),
                    io::Error::last_os_error()
                ));
            }
        }
        tracing::info!("enqueue socket: listening on {}", path.display());
        Ok(bound)
    }
}

/// The socket systemd passed us, if it passed one to this process.
fn from_systemd() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: fstat only writes into the stat buffer.
    let is_socket = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(LISTEN_FDS_START, &mut stat) == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket {
        tracing::warn!("LISTEN_FDS is set but fd {LISTEN_FDS_START} is not a socket; binding daemon.socket instead");
        return None;
    }
    // SAFETY: systemd hands us fd 3 open and owned by this process; we take it once.
    unsafe {
        libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(UnixListener::from_raw_fd(LISTEN_FDS_START))
    }
}

fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(group).ok()?;
    // SAFETY: getgrnam is called at start-up, before other threads look up groups.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: a non-null result points at a valid group entry.
    (!entry.is_null()).then(|| unsafe { (*entry).gr_gid })
}

/// The peer's uid and gid.
fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing and sized for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid))
}

/// Whether a peer may talk: no lists means anyone who can open the socket file may; root
/// and our own user always may.
pub fn admitted(settings: &SocketConfig, uid: u32, gid: u32) -> bool {
    if settings.allowed_uids.is_empty() && settings.allowed_gids.is_empty() {
        return true;
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    uid == 0
        || uid == me
        || settings.allowed_uids.contains(&uid)
        || settings.allowed_gids.contains(&gid)
}

/// Serves the socket until `stop` is raised.
pub fn serve(
    listener: Listener,
    config: &Config,
    client: DaemonClient,
    clock: SharedClock,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let settings = Arc::new(config.socket.clone());
    let database = config.daemon.database.clone();
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("jobd-socket".into())
        .spawn(move || {
            let _listener_lives_here = &listener;
            for stream in listener.listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("enqueue socket: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                match peer_credentials(&stream) {
                    Ok((uid, gid)) if admitted(&settings, uid, gid) => {}
                    Ok((uid, gid)) => {
                        tracing::warn!("enqueue socket: refused uid {uid} gid {gid} (not in socket.allowed_uids / allowed_gids)");
                        refuse(stream, Refusal::new(codes::FORBIDDEN, format!("uid {uid} / gid {gid} may not use this socket")));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("enqueue socket: cannot read peer credentials: {e}");
                        continue;
                    }
                }
                if open.fetch_add(1, Ordering::SeqCst) >= settings.max_connections {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("enqueue socket: {} connections open already; refusing another", settings.max_connections);
                    refuse(stream, Refusal::new(codes::TOO_MANY_CONNECTIONS, format!("{} connections are open already; try again later", settings.max_connections)));
                    continue;
                }
                let connection = Connection {
                    settings: settings.clone(),
                    client: client.clone(),
                    clock: clock.clone(),
                    database: database.clone(),
                    stats_db: None,
                };
                let open = open.clone();
                let spawned = std::thread::Builder::new()
                    .name("jobd-socket-conn".into())
                    .spawn(move || {
                        if let Err(e) = connection.serve(stream) {
                            tracing::debug!("enqueue socket: connection ended: {e}");
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::error!("enqueue socket: cannot start a connection thread: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the socket thread: {e}"))
}

fn refuse(mut stream: UnixStream, refusal: Refusal) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = writeln!(stream, "{}", refusal.to_line());
}

/// An answer to write, in request order.
enum Answer {
    Now(String),
    Later {
        reply: Receiver<EnqueueReply>,
        single: bool,
    },
}

struct Connection {
    settings: Arc<SocketConfig>,
    client: DaemonClient,
    clock: SharedClock,
    database: PathBuf,
    stats_db: Option<Db>,
}

/// One line as read: whole, or longer than allowed (its bytes were skipped).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Whole,
    TooLong(usize),
    End,
}

/// Reads one line into `buf` (without its newline), never holding more than `max`
/// bytes: a longer line is skipped up to its newline. A last line without a newline
/// counts as a line.
pub fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut skipped = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (skipped, buf.is_empty()) {
                (0, true) => Line::End,
                (0, false) => Line::Whole,
                (n, _) => Line::TooLong(n),
            });
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (&available[..at], Some(at)),
            None => (available, None),
        };
        if skipped == 0 && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            skipped += buf.len() + chunk.len();
            buf.clear();
        }
        let used = found.map_or(chunk.len(), |at| at + 1);
        reader.consume(used);
        if found.is_some() {
            return Ok(if skipped == 0 {
                Line::Whole
            } else {
                Line::TooLong(skipped)
            });
        }
    }
}

impl Connection {
    fn serve(mut self, stream: UnixStream) -> io::Result<()> {
        stream.set_read_timeout(Some(self.settings.idle_timeout))?;
        let writer_stream = stream.try_clone()?;
        let (answers, queue) = crossbeam_channel::bounded::<Answer>(MAX_IN_FLIGHT);
        let writer = std::thread::Builder::new()
            .name("jobd-socket-write".into())
            .spawn(move || write_answers(writer_stream, queue))?;
        let mut reader = BufReader::with_capacity(64 * 1024, &stream);
        let mut line = Vec::new();
        let max = self.settings.max_line_bytes;
        loop {
            let answer = match read_line_bounded(&mut reader, &mut line, max) {
                Ok(Line::End) => break,
                Ok(Line::TooLong(n)) => Answer::Now(
                    Refusal::new(codes::LINE_TOO_LONG, format!("the line holds at least {n} bytes; at most {max} are read (socket.max_line_bytes)")).to_line(),
                ),
                Ok(Line::Whole) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.answer(&line)
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    tracing::debug!("enqueue socket: closing a connection idle for {}", humantime::format_duration(self.settings.idle_timeout));
                    break;
                }
                Err(e) => {
                    drop(answers);
                    let _ = writer.join();
                    return Err(e);
                }
            };
            if answers.send(answer).is_err() {
                break; // the writer stopped: the peer is gone
            }
        }
        drop(answers);
        let _ = writer.join();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    fn answer(&mut self, line: &[u8]) -> Answer {
        let request = match parse_request(line, self.settings.max_batch, self.clock.now_ms()) {
            Ok(request) => request,
            Err(refusal) => return Answer::Now(refusal.to_line()),
        };
        match request {
            Request::Ping => Answer::Now(
                json!({"ok": true, "pong": true, "version": env!("CARGO_PKG_VERSION")}).to_string(),
            ),
            Request::Stats => Answer::Now(self.stats()),
            Request::Enqueue { jobs, single } => {
                for (i, job) in jobs.iter().enumerate() {
                    let at = if single {
                        "job".to_string()
                    } else {
                        format!("jobs[{i}]")
                    };
                    if !self.client.knows_kind(&job.kind) {
                        let known = self.client.validate(job).err().unwrap_or_default();
                        return Answer::Now(
                            Refusal::new(codes::UNKNOWN_KIND, format!("{at}: {known}")).to_line(),
                        );
                    }
                    if let Err(e) = self.client.validate(job) {
                        return Answer::Now(
                            Refusal::new(codes::INVALID_PAYLOAD, format!("{at}: {e}")).to_line(),
                        );
                    }
                }
                match self.client.enqueue_async(jobs) {
                    Ok(reply) => Answer::Later { reply, single },
                    Err(e) => Answer::Now(Refusal::new(codes::UNAVAILABLE, e).to_line()),
                }
            }
        }
    }

    fn stats(&mut self) -> String {
        if self.stats_db.is_none() {
            match Db::open(&self.database, &OpenOptions::default()) {
                Ok(db) => self.stats_db = Some(db),
                Err(e) => return Refusal::new(codes::UNAVAILABLE, e.to_string()).to_line(),
            }
        }
        let db = self.stats_db.as_ref().expect("opened above");
        let now = self.clock.now_ms();
        match (db.stats(now), db.pending_folders()) {
            (Ok(stats), Ok(pending)) => {
                // What `jobctl stats` lists as not taken in, from the watchers' report.
                let not_taken = super::report::read(&self.client.config().daemon.data_dir);
                json!({"ok": true, "stats": stats, "incomplete_folders": pending,
                       "not_taken_in": not_taken})
                .to_string()
            }
            (Err(e), _) | (_, Err(e)) => Refusal::new(codes::UNAVAILABLE, e.to_string()).to_line(),
        }
    }
}

/// Writes answers in request order, waiting for each commit; flushes whenever no more
/// answers are queued, so a pipelining client gets them in large writes.
fn write_answers(stream: UnixStream, queue: Receiver<Answer>) {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    loop {
        let answer = match queue.try_recv() {
            Ok(answer) => answer,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                if out.flush().is_err() {
                    return;
                }
                match queue.recv() {
                    Ok(answer) => answer,
                    Err(_) => break,
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        };
        let line = match answer {
            Answer::Now(line) => line,
            Answer::Later { reply, single } => match reply.try_recv().or_else(|_| {
                // About to wait for a commit: what is written so far goes out first, or
                // a steady trickle of requests would hold every answer back.
                if out.flush().is_err() {
                    return Err(crossbeam_channel::RecvError);
                }
                reply.recv()
            }) {
                Ok(Ok(enqueued)) => enqueued_line(&enqueued, single),
                Ok(Err(e)) => Refusal::new(codes::NOT_ENQUEUED, e).to_line(),
                Err(_) => Refusal::new(codes::UNAVAILABLE, "the daemon stopped before answering")
                    .to_line(),
            },
        };
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .is_err()
        {
            return;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_to_their_newline() {
        let input = b"short\nthis line is far too long\nnext\nlast-without-newline";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).unwrap(),
            Line::Whole
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).unwrap(),
            Line::TooLong(25)
        );
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).unwrap(),
            Line::Whole
        );
        assert_eq!(buf, b"next");
        assert!(matches!(
            read_line_bounded(&mut reader, &mut buf, 10).unwrap(),
            Line::TooLong(_)
        ));
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).unwrap(),
            Line::End
        );
    }

    #[test]
    fn peers_are_admitted_by_uid_or_gid_when_lists_are_set() {
        let mut settings = SocketConfig::default();
        assert!(admitted(&settings, 4242, 4242));
        settings.allowed_uids = vec![1001];
        settings.allowed_gids = vec![2002];
        assert!(admitted(&settings, 1001, 1));
        assert!(admitted(&settings, 7, 2002));
        assert!(!admitted(&settings, 4242, 4242));
        assert!(admitted(&settings, 0, 0));
    }
}
