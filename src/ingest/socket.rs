//! The enqueue socket: binds (or takes from systemd) the Unix stream socket, admits peers
//! by SO_PEERCRED, and serves each connection on its own thread, at most
//! `socket.max_connections` at once. Requests are pipelined: each line is handed to the
//! dispatcher at once, so one client's requests share group commits, and answers go out
//! in request order from whichever thread has them: the reading thread for pings and
//! refusals, the dispatcher right after the commit for enqueues (one thread wake-up
//! less per acknowledgement), a writer thread only for what a slow reader leaves.

use super::protocol::{codes, enqueued_line, parse_request, Refusal, Request};
use crate::clock::SharedClock;
use crate::config::{Config, SocketConfig};
use crate::daemon::{DaemonClient, DirectReply, EnqueueReply, Flush};
use crate::store::{OpenOptions, Store};
use serde_json::json;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;
/// Answers waiting for their commit per connection; past it, the connection's next line
/// waits.
const MAX_IN_FLIGHT: usize = 8192;
/// Answered bytes the client has not read yet, per connection; past them, a client that
/// stops reading its answers stops being read from, so it cannot make the daemon hold
/// more than this for it (its own writes block instead).
const MAX_UNSENT_BYTES: usize = 1 << 20;

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
            crate::files::create_private_dir_all(parent)
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

struct Connection {
    settings: Arc<SocketConfig>,
    client: DaemonClient,
    clock: SharedClock,
    database: PathBuf,
    stats_db: Option<Box<dyn Store>>,
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

/// A connection's answers, kept in request order. Whoever has an answer (the reading
/// thread for pings and refusals, the dispatcher for commits) puts it in its slot; the
/// answers at the front that are ready move to `bytes`, and whoever flushes writes them.
/// The dispatcher and the reading thread only write what the socket takes without
/// blocking; the rest is left to this connection's writer thread, so a client that stops
/// reading stalls neither (the reading thread waits only past `MAX_UNSENT_BYTES`).
struct Output {
    stream: UnixStream,
    state: Mutex<OutState>,
    /// Signalled when answers are written or the writer is asked to help.
    changed: Condvar,
}

#[derive(Default)]
struct OutState {
    /// Answers from request number `first` on; `None` waits for its commit.
    slots: VecDeque<Option<String>>,
    first: u64,
    /// Answers in order, not yet written.
    bytes: Vec<u8>,
    /// Someone is writing (outside the lock): others only append.
    writing: bool,
    /// The bytes that writer took out of `bytes` and is sending.
    sending: usize,
    /// The dispatcher could not write everything without blocking: the writer's turn.
    help: bool,
    /// The peer is gone (a write failed): answers are dropped.
    broken: bool,
    /// The reading side is done: the writer thread ends once everything is written.
    closing: bool,
    /// The reading thread waits on `changed` for room for more answers (while it
    /// closes, `closing` has every write wake it).
    reader_waits: bool,
}

impl OutState {
    fn push(&mut self, answer: Option<String>) -> u64 {
        self.slots.push_back(answer);
        let number = self.first + self.slots.len() as u64 - 1;
        self.move_ready();
        number
    }

    fn fill(&mut self, number: u64, answer: String) {
        if let Some(slot) = number
            .checked_sub(self.first)
            .and_then(|at| self.slots.get_mut(at as usize))
        {
            *slot = Some(answer);
        }
        self.move_ready();
    }

    fn move_ready(&mut self) {
        while let Some(Some(_)) = self.slots.front() {
            let line = self.slots.pop_front().flatten().expect("checked above");
            self.first += 1;
            if !self.broken {
                self.bytes.extend_from_slice(line.as_bytes());
                self.bytes.push(b'\n');
            }
        }
    }

    /// Answered bytes not sent yet: appended, or being sent.
    fn unsent(&self) -> usize {
        self.bytes.len() + self.sending
    }

    fn done(&self) -> bool {
        self.broken || (self.slots.is_empty() && self.bytes.is_empty() && !self.writing)
    }
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what is ready. `blocking: false` (the dispatcher) sends only what the
    /// socket takes at once and hands the rest to the writer thread.
    fn write_ready(&self, blocking: bool) {
        let mut state = self.lock();
        while !state.writing && !state.broken && !state.bytes.is_empty() {
            state.writing = true;
            let mut bytes = std::mem::take(&mut state.bytes);
            state.sending = bytes.len();
            drop(state);
            let (sent, failed) = send(&self.stream, &bytes, blocking);
            state = self.lock();
            state.writing = false;
            state.sending = 0;
            if failed {
                state.broken = true;
                state.bytes.clear();
                break;
            }
            if sent < bytes.len() {
                // Would block: put the rest back in front of what others added meanwhile.
                bytes.drain(..sent);
                bytes.extend_from_slice(&state.bytes);
                state.bytes = bytes;
                state.help = true;
                break;
            }
            if state.bytes.is_empty() {
                // Keep the allocation for the next answers.
                bytes.clear();
                state.bytes = bytes;
            }
        }
        // Wake only a thread that waits for what this write may have changed: the
        // writer thread when it is asked to help or must end, the reading thread when it
        // waits. Waking the writer thread after every answer cost every acknowledgement a
        // wake-up of a thread that found nothing to do, which on two cores the clients'
        // own wake-ups wait behind (docs/benchmarks.md: a few per cent of single enqueues).
        let wake = state.help || state.broken || state.closing || state.reader_waits;
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }
}

/// Sends `bytes`; returns how many went and whether the peer is gone.
fn send(stream: &UnixStream, bytes: &[u8], blocking: bool) -> (usize, bool) {
    let flags = libc::MSG_NOSIGNAL | if blocking { 0 } else { libc::MSG_DONTWAIT };
    let mut sent = 0;
    while sent < bytes.len() {
        // SAFETY: the pointer and length describe the live slice `bytes[sent..]`.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes[sent..].as_ptr().cast(),
                bytes.len() - sent,
                flags,
            )
        };
        if n >= 0 {
            sent += n as usize;
            continue;
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if !blocking => return (sent, false),
            _ => return (sent, true),
        }
    }
    (sent, false)
}

impl Flush for Output {
    fn flush(&self) {
        self.write_ready(false);
    }
}

/// An enqueue's answer slot, filled on the dispatcher thread after the commit; one that
/// is dropped unanswered (the daemon stopped first) says so.
struct Pending {
    output: Option<Arc<Output>>,
    number: u64,
    single: bool,
}

impl DirectReply for Pending {
    fn answer(mut self: Box<Self>, reply: EnqueueReply) -> Option<Arc<dyn Flush>> {
        let output = self.output.take()?;
        let line = match reply {
            Ok(enqueued) => enqueued_line(&enqueued, self.single),
            Err(e) => Refusal::new(codes::NOT_ENQUEUED, e).to_line(),
        };
        output.lock().fill(self.number, line);
        Some(output)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(output) = self.output.take() {
            let line =
                Refusal::new(codes::UNAVAILABLE, "the daemon stopped before answering").to_line();
            output.lock().fill(self.number, line);
            output.write_ready(false);
        }
    }
}

/// What a request line gets: an answer now, or a slot its commit fills.
enum Answer {
    Now(String),
    Later {
        jobs: Vec<crate::job::NewJob>,
        single: bool,
    },
}

impl Connection {
    fn serve(mut self, stream: UnixStream) -> io::Result<()> {
        stream.set_read_timeout(Some(self.settings.idle_timeout))?;
        let output = Arc::new(Output {
            stream: stream.try_clone()?,
            state: Mutex::new(OutState::default()),
            changed: Condvar::new(),
        });
        let helper = output.clone();
        let writer = std::thread::Builder::new()
            .name("jobd-socket-write".into())
            .spawn(move || help_write(&helper))?;
        let mut reader = BufReader::with_capacity(64 * 1024, &stream);
        let mut line = Vec::new();
        let max = self.settings.max_line_bytes;
        let result = loop {
            if reader.buffer().is_empty() {
                // About to wait for the client: what is answered goes out first, as far
                // as the socket takes it; the writer thread sends the rest. Blocking
                // here on a client that does not read would stop this thread reading
                // long before the connection's MAX_UNSENT_BYTES.
                output.write_ready(false);
            }
            let answer = match read_line_bounded(&mut reader, &mut line, max) {
                Ok(Line::End) => break Ok(()),
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
                    break Ok(());
                }
                Err(e) => break Err(e),
            };
            let mut state = output.lock();
            // Too many answers owed, or too many bytes the client has not read: the next
            // line waits. With nobody writing, this thread writes (and blocks in the
            // write while the client does not read).
            while !state.broken
                && (state.slots.len() >= MAX_IN_FLIGHT || state.unsent() >= MAX_UNSENT_BYTES)
            {
                if state.unsent() >= MAX_UNSENT_BYTES && !state.writing {
                    drop(state);
                    output.write_ready(true);
                    state = output.lock();
                    continue;
                }
                state.reader_waits = true;
                state = output
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            state.reader_waits = false;
            if state.broken {
                break Ok(()); // the peer is gone
            }
            match answer {
                Answer::Now(text) => {
                    state.push(Some(text));
                }
                Answer::Later { jobs, single } => {
                    let number = state.push(None);
                    drop(state);
                    let pending = Box::new(Pending {
                        output: Some(output.clone()),
                        number,
                        single,
                    });
                    // If the daemon is stopping, the dropped slot answers for itself.
                    let _ = self.client.enqueue_validated(jobs, pending);
                }
            }
        };
        // Every answer still owed is written before the connection closes.
        let mut state = output.lock();
        state.closing = true;
        while !state.done() {
            if !state.bytes.is_empty() && !state.writing {
                drop(state);
                output.write_ready(true);
                state = output.lock();
            } else {
                state = output
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        drop(state);
        output.changed.notify_all();
        let _ = writer.join();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        result
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
                        let known = self
                            .client
                            .validate(job)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default();
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
                Answer::Later { jobs, single }
            }
        }
    }

    fn stats(&mut self) -> String {
        if self.stats_db.is_none() {
            match crate::store::open(&self.database, &OpenOptions::default()) {
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

/// The writer thread: finishes, with blocking writes, what the dispatcher could not send
/// at once (the client reads slowly); ends when the connection closes.
fn help_write(output: &Output) {
    let mut state = output.lock();
    loop {
        if state.broken || (state.closing && state.done()) {
            return;
        }
        if state.help && !state.writing {
            state.help = false;
            drop(state);
            output.write_ready(true);
            state = output.lock();
            continue;
        }
        state = output
            .changed
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
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
