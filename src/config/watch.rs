//! `[[watch]]`: the folders the daemon takes files (or complete folder sets) in from,
//! the job each one makes, their defaults and their checks.

use super::durations;
use super::problems::Problems;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_WATCH_PATTERN: &str = "*";
pub const DEFAULT_WATCH_SETTLE: Duration = Duration::from_secs(2);
pub const DEFAULT_WATCH_RESCAN: Duration = Duration::from_secs(30);
pub const DEFAULT_WATCH_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_WATCH_INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_WATCH_UNREADABLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_WATCH_KIND: &str = "noop";
/// Payload fields the watcher sets for each file; a watch's static payload may not.
pub const RESERVED_PAYLOAD_FIELDS: [&str; 6] = ["file", "dir", "name", "sha256", "size", "files"];

/// What a watched folder takes in: single files, or subfolders that are complete sets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Every settled file matching `pattern` becomes a job.
    #[default]
    File,
    /// Every subfolder becomes one job once its `required` files are there (or `marker`).
    Dir,
}

/// One watched folder (`[[watch]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub path: PathBuf,
    #[serde(default = "default_watch_pattern")]
    pub pattern: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub mode: WatchMode,
    /// The job to make.
    #[serde(default = "default_watch_kind")]
    pub kind: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i64,
    /// Static payload fields, merged with `file`/`dir`, `name`, `sha256`, `size`.
    #[serde(default)]
    pub payload: toml::Table,
    /// A file is complete once its size and mtime held still this long.
    #[serde(default = "default_settle", deserialize_with = "durations::duration")]
    pub settle: Duration,
    /// How often the folder is listed again, for what notifications missed.
    #[serde(default = "default_rescan", deserialize_with = "durations::duration")]
    pub rescan: Duration,
    /// The same content under the same name within this window is not enqueued again.
    #[serde(
        default = "default_dedupe_window",
        deserialize_with = "durations::duration"
    )]
    pub dedupe_window: Duration,
    /// Folder sets: files that must all be there (case-insensitive).
    #[serde(default)]
    pub required: Vec<String>,
    /// Folder sets: files that may be there (case-insensitive); listed for the handler.
    #[serde(default)]
    pub optional: Vec<String>,
    /// Folder sets: a file whose arrival says the folder is complete, whatever is missing.
    #[serde(default)]
    pub marker: Option<String>,
    /// Folder sets: an incomplete folder becomes a dead job after this long.
    #[serde(
        default = "default_incomplete_timeout",
        deserialize_with = "durations::duration"
    )]
    pub incomplete_timeout: Duration,
    /// A file (or folder set) that cannot be read is tried again every 5 s; after this
    /// long it goes to failed/ as a dead job with the reason.
    #[serde(
        default = "default_unreadable_timeout",
        deserialize_with = "durations::duration"
    )]
    pub unreadable_timeout: Duration,
    /// Create the folder at start if it is missing (otherwise a missing folder is refused).
    #[serde(default = "default_true")]
    pub create: bool,
}

fn default_watch_pattern() -> String {
    DEFAULT_WATCH_PATTERN.into()
}
fn default_watch_kind() -> String {
    DEFAULT_WATCH_KIND.into()
}
fn default_queue() -> String {
    crate::job::DEFAULT_QUEUE.into()
}
fn default_settle() -> Duration {
    DEFAULT_WATCH_SETTLE
}
fn default_rescan() -> Duration {
    DEFAULT_WATCH_RESCAN
}
fn default_dedupe_window() -> Duration {
    DEFAULT_WATCH_DEDUPE_WINDOW
}
fn default_incomplete_timeout() -> Duration {
    DEFAULT_WATCH_INCOMPLETE_TIMEOUT
}
fn default_unreadable_timeout() -> Duration {
    DEFAULT_WATCH_UNREADABLE_TIMEOUT
}
fn default_true() -> bool {
    true
}

impl WatchConfig {
    /// Checks one `[[watch]]`, recording every problem; `key` is `watch[N]`.
    pub fn validate(&self, key: &str, problems: &mut Problems) {
        if self.path.as_os_str().is_empty() {
            problems.push(format!("{key}.path"), "must not be empty");
        }
        if let Err(e) = globset::Glob::new(&self.pattern) {
            problems.push(
                format!("{key}.pattern"),
                format!("'{}' is not a glob: {e}", self.pattern),
            );
        }
        problems.check_name(&format!("{key}.kind"), &self.kind);
        problems.check_name(&format!("{key}.queue"), &self.queue);
        for reserved in RESERVED_PAYLOAD_FIELDS {
            if self.payload.contains_key(reserved) {
                problems.push(
                    format!("{key}.payload.{reserved}"),
                    "is set by the watcher for each file; choose another name",
                );
            }
        }
        match self.mode {
            WatchMode::File => {
                if !self.required.is_empty() || !self.optional.is_empty() || self.marker.is_some() {
                    problems.push(
                        format!("{key}.required"),
                        "required, optional and marker apply to mode = \"dir\" only",
                    );
                }
            }
            WatchMode::Dir => {
                if self.required.is_empty() && self.marker.is_none() {
                    problems.push(
                        format!("{key}.required"),
                        "a folder set needs required files or a marker",
                    );
                }
                for (list, names) in [("required", &self.required), ("optional", &self.optional)] {
                    for name in names {
                        if name.is_empty() || name.contains('/') {
                            problems.push(
                                format!("{key}.{list}"),
                                format!("'{name}' is not a file name"),
                            );
                        }
                    }
                }
            }
        }
    }
}
