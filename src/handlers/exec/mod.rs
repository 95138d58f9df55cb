//! `exec`: runs a command the operator declared under `[commands.NAME]`; the payload
//! names it (`{"command": "NAME", ...}`) and arrives as JSON on stdin. Exit 0 succeeds,
//! 75 (EX_TEMPFAIL) asks for a retry, anything else is permanent. The command starts with
//! a cleared environment (a small documented set plus what its config declares), runs in
//! its own process group, and a timeout or cancel stops the whole group (SIGTERM, then
//! SIGKILL after `kill_grace`). Every group still alive is killed before the daemon exits.

pub mod config;

use super::{Handler, HandlerError, JobContext, StopReason};
use crate::config::Config;
use crate::job::{Job, Outcome, PayloadError};
use config::CommandConfig;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The exit code that asks for another attempt (sysexits.h EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// How much of the end of stderr is kept with the attempt.
const STDERR_TAIL_BYTES: usize = 4096;
/// How often a waiting handler looks at its stop signal and deadline.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Variables of the daemon's environment every command gets, if set (plus every `LC_*`).
/// Anything else reaches a command only through its `env_pass` or `env`.
pub const BASE_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];
/// A command's `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The exec kind. Clones share the set of live process groups.
#[derive(Clone, Default)]
pub struct Exec {
    groups: Arc<Mutex<Groups>>,
}

/// The process groups of commands now running, so none outlives the daemon.
#[derive(Default)]
struct Groups {
    live: BTreeSet<i32>,
    /// Set by [`Exec::kill_all`]: no command starts after it.
    closed: bool,
}

fn command_name(payload: &Value) -> Result<&str, PayloadError> {
    payload
        .get("command")
        .and_then(|c| c.as_str())
        .ok_or_else(|| {
            PayloadError::new(
                "command",
                "exec payload needs \"command\": the name of a [commands.NAME] entry",
            )
        })
}

fn declared<'c>(config: &'c Config, name: &str) -> Result<&'c CommandConfig, PayloadError> {
    config.commands.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.commands.keys().map(String::as_str).collect();
        let message = format!(
            "command '{name}' is not declared in the config (declared: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        PayloadError::new("command", message)
    })
}

/// The files a command is handed in its payload (`file`, `dir`: what a watched folder
/// sets) must be in the allowed folders ([`crate::paths`]), like every kind's.
fn check_files(
    payload: &Value,
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<(), PayloadError> {
    for key in ["file", "dir"] {
        let field = format!("exec payload: {key}");
        crate::paths::check_field(config, data_dir, &field, payload.get(key))
            .map_err(|e| e.for_field(key))?;
    }
    Ok(())
}

impl Handler for Exec {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        declared(config, command_name(payload)?)?;
        check_files(payload, config, &config.daemon.data_dir)
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let command = match command_name(&job.payload)
            .and_then(|n| declared(&ctx.config, n))
            .and_then(|c| check_files(&job.payload, &ctx.config, &ctx.data_dir).map(|()| c))
        {
            Ok(command) => command,
            Err(e) => return HandlerError::from(e).into(),
        };
        let timeout = command.timeout.unwrap_or(ctx.timeout);
        self.run_command(command, job, ctx, timeout)
    }

    fn kill_all(&self) {
        let mut groups = self.groups.lock().expect("process groups");
        groups.closed = true;
        for pgid in &groups.live {
            tracing::warn!(pgid, "killing a command's process group before exiting");
            signal_group(*pgid, libc::SIGKILL);
        }
    }
}

/// The environment a command starts with: [`BASE_ENV`] and `LC_*` from `daemon_env`,
/// then the command's `env_pass` names, then its `env` table, then the job's `JOBD_*`
/// ([`job_env`]).
pub fn command_env(
    command: &CommandConfig,
    job_env: [(&str, String); 4],
    daemon_env: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let daemon_env: std::collections::BTreeMap<String, String> = daemon_env.collect();
    let mut env: std::collections::BTreeMap<String, String> = daemon_env
        .iter()
        .filter(|(name, _)| BASE_ENV.contains(&name.as_str()) || name.starts_with("LC_"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for name in &command.env_pass {
        if let Some(value) = daemon_env.get(name) {
            env.insert(name.clone(), value.clone());
        }
    }
    env.extend(command.env.clone());
    for (name, value) in job_env {
        env.insert(name.into(), value);
    }
    env.into_iter().collect()
}

/// The `JOBD_*` variables describing the job a command runs for.
pub fn job_env(job: &Job) -> [(&'static str, String); 4] {
    [
        ("JOBD_JOB_ID", job.id.to_string()),
        ("JOBD_ATTEMPT", job.attempts.to_string()),
        ("JOBD_KIND", job.kind.clone()),
        ("JOBD_QUEUE", job.queue.clone()),
    ]
}

impl Exec {
    /// Starts the command in its own process group and records the group, unless the
    /// daemon is past [`Handler::kill_all`].
    fn spawn(&self, process: &mut Command) -> Result<Child, Outcome> {
        let mut groups = self.groups.lock().expect("process groups");
        if groups.closed {
            return Err(Outcome::Interrupted {
                reason: "the daemon is exiting; the command was not started".into(),
            });
        }
        let child = process.spawn().map_err(|e| {
            Outcome::permanent(format!(
                "cannot start {}: {e}",
                process.get_program().to_string_lossy()
            ))
        })?;
        groups.live.insert(child.id() as i32);
        Ok(child)
    }

    fn run_command(
        &self,
        command: &CommandConfig,
        job: &Job,
        ctx: &JobContext,
        timeout: Duration,
    ) -> Outcome {
        let secrets = ctx.config.known_secrets();
        let grace = command.kill_grace.unwrap_or(ctx.config.daemon.kill_grace);
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .env_clear()
            .envs(command_env(command, job_env(job), std::env::vars()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &command.cwd {
            process.current_dir(cwd);
        }
        let started = Instant::now();
        let mut child = match self.spawn(&mut process) {
            Ok(child) => child,
            Err(outcome) => return outcome,
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
        let stopped = |what: &str| {
            format!(
                "{what}; the process group got SIGTERM, and SIGKILL after {}",
                humantime::format_duration(grace)
            )
        };
        let mut stopped_by: Option<Outcome> = None;
        while !leader_exited(pid) {
            let reason = if Instant::now() >= deadline {
                Some(Outcome::retry(stopped(&format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                ))))
            } else {
                match ctx.stop.must_stop() {
                    Some(StopReason::Cancelled) => Some(Outcome::Cancelled {
                        reason: stopped("cancelled by an operator"),
                    }),
                    Some(_) => Some(Outcome::Interrupted {
                        reason: stopped("the daemon stopped"),
                    }),
                    None => None,
                }
            };
            if let Some(outcome) = reason {
                stopped_by = Some(outcome);
                signal_group(pid, libc::SIGTERM);
                let until = Instant::now() + grace;
                while !leader_exited(pid) && Instant::now() < until {
                    std::thread::sleep(WATCH_INTERVAL);
                }
                break;
            }
            std::thread::sleep(
                WATCH_INTERVAL
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
            );
        }
        // Whatever is left of the group (what the command started, or the command itself
        // past its grace) is killed while the leader, not yet reaped, keeps the group's
        // id from being reused.
        signal_group(pid, libc::SIGKILL);
        let status = child.wait().ok();
        self.groups
            .lock()
            .expect("process groups")
            .live
            .remove(&pid);
        let _ = feeder.join();
        // Nothing from a child is stored unmasked: it may print a secret it found.
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let stderr_tail = super::http::auth::mask(&collector.join().unwrap_or_default(), &secrets);
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

/// Signals the command and everything it started: its process group has its pid as id.
fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether our child `pid` has exited, without reaping it (WNOWAIT): until it is reaped
/// its pid, and so its process group's id, cannot be reused.
fn leader_exited(pid: i32) -> bool {
    // SAFETY: waitid(2) writes only into the zeroed siginfo_t we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // An error (ECHILD: already reaped) counts as gone.
        rc != 0 || info.si_pid() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_gets_the_base_set_its_passes_and_its_env_and_nothing_else() {
        let command: CommandConfig = toml::from_str(
            "program = \"/bin/true\"\nenv_pass = [\"WANTED\", \"ABSENT\"]\nenv = { OWN = \"x\", TZ = \"UTC\" }\n",
        )
        .unwrap();
        let job = [
            ("JOBD_JOB_ID", "7".to_string()),
            ("JOBD_ATTEMPT", "1".to_string()),
            ("JOBD_KIND", "exec".to_string()),
            ("JOBD_QUEUE", "bulk".to_string()),
        ];
        let daemon = [
            ("PATH", "/opt/bin"),
            ("HOME", "/var/lib/jobd"),
            ("LC_ALL", "C.UTF-8"),
            ("TZ", "Asia/Tokyo"),
            ("USAGE_API_TOKEN", "s3cret"),
            ("WANTED", "yes"),
            ("JOBD_CONFIG", "/etc/jobd/jobd.toml"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = command_env(&command, job.clone(), daemon.into_iter());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "HOME",
                "JOBD_ATTEMPT",
                "JOBD_JOB_ID",
                "JOBD_KIND",
                "JOBD_QUEUE",
                "LC_ALL",
                "OWN",
                "PATH",
                "TZ",
                "WANTED"
            ]
        );
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("TZ"), Some("UTC"), "env wins over the daemon's");
        assert_eq!(get("JOBD_JOB_ID"), Some("7"));
        let bare = command_env(&command, job, std::iter::empty());
        assert!(bare.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }
}
