//! `exec`: runs a command the operator declared under `[commands.NAME]`; the payload
//! names it (`{"command": "NAME", ...}`) and arrives as JSON on stdin. Exit 0 succeeds,
//! 75 (EX_TEMPFAIL) asks for a retry, anything else is permanent. The command runs in its
//! own process group, so a timeout or a cancel kills everything it started.

use super::{Handler, JobContext, StopReason};
use crate::config::{CommandConfig, Config};
use crate::job::{Job, Outcome};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The exit code that asks for another attempt (sysexits.h EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// How much of the end of stderr is kept with the attempt.
const STDERR_TAIL_BYTES: usize = 4096;
/// How often a waiting handler looks at its stop signal and deadline.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);

pub struct Exec;

fn command_name(payload: &Value) -> Result<&str, String> {
    payload
        .get("command")
        .and_then(|c| c.as_str())
        .ok_or_else(|| {
            "exec payload needs \"command\": the name of a [commands.NAME] entry".to_string()
        })
}

fn declared<'c>(config: &'c Config, name: &str) -> Result<&'c CommandConfig, String> {
    config.commands.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.commands.keys().map(String::as_str).collect();
        format!(
            "command '{name}' is not declared in the config (declared: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })
}

/// The files a command is handed in its payload (`file`, `dir`: what a watched folder
/// sets) must be in the allowed folders ([`crate::paths`]), like every kind's.
fn check_files(payload: &Value, config: &Config, data_dir: &std::path::Path) -> Result<(), String> {
    for key in ["file", "dir"] {
        let field = format!("exec payload: {key}");
        crate::paths::check_field(config, data_dir, &field, payload.get(key))?;
    }
    Ok(())
}

impl Handler for Exec {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), String> {
        declared(config, command_name(payload)?)?;
        check_files(payload, config, &config.daemon.data_dir)
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let command = match command_name(&job.payload)
            .and_then(|n| declared(&ctx.config, n))
            .and_then(|c| check_files(&job.payload, &ctx.config, &ctx.data_dir).map(|()| c))
        {
            Ok(command) => command,
            Err(e) => return Outcome::permanent(e),
        };
        let timeout = command.timeout.unwrap_or(ctx.timeout);
        run_command(command, job, ctx, timeout)
    }
}

fn run_command(command: &CommandConfig, job: &Job, ctx: &JobContext, timeout: Duration) -> Outcome {
    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .envs(&command.env)
        .env("JOBD_JOB_ID", job.id.to_string())
        .env("JOBD_ATTEMPT", job.attempts.to_string())
        .env("JOBD_KIND", &job.kind)
        .env("JOBD_QUEUE", &job.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &command.cwd {
        process.current_dir(cwd);
    }
    let started = Instant::now();
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome::permanent(format!("cannot start {}: {e}", command.program.display()))
        }
    };
    let pid = child.id() as i32;
    let payload = job.payload.to_string();
    let mut stdin = child.stdin.take();
    let feeder = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its stdin closes the pipe; that is its right.
            let _ = stdin.write_all(payload.as_bytes());
        }
    });
    let mut stderr = child.stderr.take();
    let collector = std::thread::spawn(move || {
        let mut tail = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES * 2 {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
        let start = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        String::from_utf8_lossy(&tail[start..]).into_owned()
    });

    let deadline = started + timeout;
    let mut stopped_by: Option<Outcome> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                stopped_by = Some(Outcome::retry(format!("cannot wait for the command: {e}")));
                kill_group(pid);
                break child.wait().ok();
            }
        }
        let reason = if Instant::now() >= deadline {
            Some(Outcome::retry(format!(
                "timed out after {}; the process group was killed",
                humantime::format_duration(timeout)
            )))
        } else {
            match ctx.stop.must_stop() {
                Some(StopReason::Cancelled) => Some(Outcome::Cancelled {
                    reason: "cancelled by an operator; the process group was killed".into(),
                }),
                Some(_) => Some(Outcome::Interrupted {
                    reason: "the daemon stopped; the process group was killed".into(),
                }),
                None => None,
            }
        };
        if let Some(outcome) = reason {
            kill_group(pid);
            stopped_by = Some(outcome);
            break child.wait().ok();
        }
        std::thread::sleep(
            WATCH_INTERVAL
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
        );
    };
    let _ = feeder.join();
    let stderr_tail = collector.join().unwrap_or_default();
    let exit_code = status.and_then(|s| s.code());
    let signal = status.and_then(|s| s.signal());
    let detail = json!({
        "exit_code": exit_code,
        "signal": signal,
        "duration_ms": started.elapsed().as_millis() as u64,
        "stderr_tail": stderr_tail,
    });
    let with_detail = |outcome: Outcome| attach_detail(outcome, detail.clone());
    if let Some(outcome) = stopped_by {
        return with_detail(outcome);
    }
    let last_line = stderr_tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let said = if last_line.is_empty() {
        String::new()
    } else {
        format!(": {last_line}")
    };
    match (exit_code, signal) {
        (Some(0), _) => with_detail(Outcome::success()),
        (Some(EXIT_RETRY), _) => with_detail(Outcome::retry(format!(
            "exited with {EXIT_RETRY} (retry){said}"
        ))),
        (Some(code), _) => with_detail(Outcome::permanent(format!("exited with {code}{said}"))),
        (None, Some(sig)) => {
            with_detail(Outcome::permanent(format!("killed by signal {sig}{said}")))
        }
        (None, None) => with_detail(Outcome::retry("the command's exit status is unknown")),
    }
}

fn attach_detail(outcome: Outcome, value: Value) -> Outcome {
    match outcome {
        Outcome::Success {
            follow_ups,
            sync_marks,
            ..
        } => Outcome::Success {
            follow_ups,
            detail: Some(value),
            sync_marks,
        },
        Outcome::Retry {
            error, retry_after, ..
        } => Outcome::Retry {
            error,
            retry_after,
            detail: Some(value),
        },
        Outcome::Permanent { error, .. } => Outcome::Permanent {
            error,
            detail: Some(value),
        },
        other => other,
    }
}

/// Kills the command and everything it started: its process group has its pid as id.
fn kill_group(pid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
