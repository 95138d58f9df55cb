//! `[commands.NAME]`: the programs the `exec` kind may run (never a command from a
//! payload), with their arguments, environment, working folder and time limits; their
//! checks, and the check that each program is there on this machine.

use crate::config::durations::{self, check_bounds, ms, secs, Bounds, DAY, HOUR};
use crate::config::problems::Problems;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `commands.*.timeout` allows.
pub const TIMEOUT_BOUNDS: Bounds = (ms(100), secs(7 * DAY));
/// What `commands.*.kill_grace` allows.
pub const KILL_GRACE_BOUNDS: Bounds = (secs(0), secs(HOUR));

/// A program the `exec` kind may run (`[commands.NAME]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for the command, on top of the base set (PATH, HOME, LANG, LC_*,
    /// TZ) and the job's JOBD_* variables. Nothing else of the daemon's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the daemon's environment variables passed through as they are (skipped
    /// when unset).
    #[serde(default)]
    pub env_pass: Vec<String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default, deserialize_with = "durations::optional_duration")]
    pub timeout: Option<Duration>,
    /// SIGTERM to SIGKILL for this command (default: `daemon.kill_grace`).
    #[serde(default, deserialize_with = "durations::optional_duration")]
    pub kill_grace: Option<Duration>,
}

impl CommandConfig {
    /// Checks `[commands.NAME]` (`key`), recording every problem.
    pub fn validate(&self, key: &str, problems: &mut Problems) {
        if self.program.as_os_str().is_empty() {
            problems.push(format!("{key}.program"), "must not be empty");
        }
        for var in &self.env_pass {
            if var.is_empty() || var.contains(['=', '\0']) {
                problems.push(
                    format!("{key}.env_pass"),
                    format!("'{var}' is not a variable name"),
                );
            }
        }
        if let Some(timeout) = self.timeout {
            check_bounds(problems, &format!("{key}.timeout"), timeout, TIMEOUT_BOUNDS);
        }
        if let Some(grace) = self.kill_grace {
            check_bounds(
                problems,
                &format!("{key}.kill_grace"),
                grace,
                KILL_GRACE_BOUNDS,
            );
        }
    }

    /// Records a problem at `{key}.program` unless the program is an executable file on
    /// this machine (what the first job would trip on, refused by `--check-config` too).
    pub fn check_host(&self, key: &str, problems: &mut Problems) {
        if let Err(e) = check_program(self) {
            problems.push(format!("{key}.program"), e);
        }
    }
}

/// Why a command's program cannot be run on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is not executable", .0.display())]
    NotExecutable(PathBuf),
    #[error("'{}' is not an executable file in the PATH ({search})", program.display())]
    NotInPath { program: PathBuf, search: String },
}

/// Whether a command's program is an executable file: a path as given, or a bare name
/// looked up in the PATH the command will have.
fn check_program(command: &CommandConfig) -> Result<(), ProgramError> {
    use std::os::unix::fs::PermissionsExt;
    let program = &command.program;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return match std::fs::metadata(program) {
            Err(e) => Err(ProgramError::Unreadable {
                path: program.clone(),
                reason: e.to_string(),
            }),
            Ok(m) if !m.is_file() => Err(ProgramError::NotAFile(program.clone())),
            Ok(_) if !executable(program) => Err(ProgramError::NotExecutable(program.clone())),
            Ok(_) => Ok(()),
        };
    }
    let search = command
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if std::env::split_paths(&search).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(ProgramError::NotInPath {
            program: program.clone(),
            search,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(program: &str, path: Option<&str>) -> CommandConfig {
        let mut text = format!("program = \"{program}\"\n");
        if let Some(path) = path {
            text.push_str(&format!("env = {{ PATH = \"{path}\" }}\n"));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_program_is_checked_on_this_machine_and_every_problem_named() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let folder = dir.path().display().to_string();
        assert_eq!(
            check_program(&command(&script.display().to_string(), None)),
            Err(ProgramError::NotExecutable(script.clone()))
        );
        assert_eq!(
            check_program(&command(&folder, None)),
            Err(ProgramError::NotAFile(dir.path().to_path_buf()))
        );
        assert!(matches!(
            check_program(&command("run.sh", Some(&folder))),
            Err(ProgramError::NotInPath { .. })
        ));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
        check_program(&command("run.sh", Some(&folder))).unwrap();
        let mut problems = Problems::new();
        command("", None).validate("commands.x", &mut problems);
        let mut bad = command("/nonexistent/jobd-program", None);
        bad.env_pass = vec!["A=B".into()];
        bad.timeout = Some(Duration::from_secs(30 * 86400));
        bad.validate("commands.y", &mut problems);
        bad.check_host("commands.y", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "commands.x.program",
                "commands.y.env_pass",
                "commands.y.timeout",
                "commands.y.program"
            ],
            "{problems}"
        );
    }
}
