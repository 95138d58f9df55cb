//! The `oneroster` kind: a Microsoft SDS v1 folder set (school, student, teacher; optional
//! section, studentenrollment, teacherroster; names matched case-insensitively) becomes
//! a OneRoster 1.2 CSV set under `output/YYYYMMDD/oneroster/<folder name>/` with
//! `manifest.csv` and `metadata.json` (record counts and SHA-256 per file), then one
//! `http` multipart upload job whose unique key comes from the input checksums, so the
//! same folder is never uploaded twice.
//!
//! Errors go to `errors.csv` in the same folder; `on_error` says which of them make the
//! job dead. Optionally the set is also zipped, and the upload's status polled.
//!
//! This module checks the payload and runs the job; [`map`] turns SDS rows into
//! OneRoster rows, `output` writes the files, [`status`] polls the upload.

pub mod map;
mod output;
pub mod status;

use output::{write_errors, write_set, write_zip, Files};

use crate::clock::format_millis;
use crate::config::Config;
use crate::files::{FileAction, FileError};
use crate::handlers::{Handler, HandlerError, JobContext};
use crate::job::{Job, NewJob, Outcome, PayloadError};
use map::{EnrollmentIds, Fatal, Inputs, SdsError};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const KIND: &str = "oneroster";

/// The namespace of the system this replaces (`6ba7b810-9dad-11d1-80b4-00c04fd430c8`),
/// so its ids stay the same.
pub const DEFAULT_NAMESPACE: Uuid = Uuid::NAMESPACE_DNS;

/// The job payload: the watcher's `dir` and `name`, plus static settings. Unknown keys
/// are refused, so a misspelt setting is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The folder set (relative paths are under the data directory).
    pub dir: PathBuf,
    #[serde(default)]
    pub name: Option<String>,
    /// The UUIDv5 namespace of the sourcedIds.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `"role"` (default) or `"seed"`: see [`EnrollmentIds`].
    #[serde(default)]
    pub enrollment_ids: Option<String>,
    /// `source.systemName` in manifest.csv and `source` in metadata.json.
    #[serde(default)]
    pub source_system_name: Option<String>,
    /// The `[endpoints.NAME]` to upload to; no upload without it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The upload path (default `/upload`).
    #[serde(default)]
    pub path: Option<String>,
    /// `"zip"`: also write the set as `<name>.zip` beside its folder.
    #[serde(default)]
    pub archive: Option<String>,
    /// `"required"` (default), `"skip"` or `"fail"`: see [`OnError`].
    #[serde(default)]
    pub on_error: Option<String>,
    /// Poll `GET <path>/<uploadId>` after the upload (a `oneroster_status` job).
    #[serde(default)]
    pub status_poll: bool,
    /// Between polls (default 30s).
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// Polls before the status job gives up (default 120).
    #[serde(default)]
    pub max_polls: Option<u32>,
    /// What the folder-set watcher adds besides `dir` and `name` (the set's digest, size
    /// and per-file digests); not used here, the checksums are taken as the files are read.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub files: Option<Value>,
}

/// Which input errors make the job dead. Rows with an error are always left out and
/// reported in errors.csv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// An error in a required file (school, student, teacher) is fatal; bad rows of
    /// optional files are skipped.
    Required,
    /// Never fatal: bad rows are skipped everywhere.
    Skip,
    /// Any error is fatal, even in an optional file.
    Fail,
}

impl Payload {
    pub fn parse(payload: &Value) -> Result<Payload, PayloadError> {
        let p = Payload::deserialize(payload)
            .map_err(|e| PayloadError::whole(format!("oneroster payload: {e}")))?;
        p.namespace()?;
        p.zip()?;
        p.on_error()?;
        p.enrollment_ids()?;
        status::parse_interval(p.poll_interval.as_deref()).map_err(|e| {
            PayloadError::new(
                "poll_interval",
                format!("oneroster payload: poll_interval: {e}"),
            )
        })?;
        if p.max_polls == Some(0) {
            return Err(PayloadError::new(
                "max_polls",
                "oneroster payload: max_polls must be at least 1",
            ));
        }
        if p.status_poll && p.endpoint.is_none() {
            return Err(PayloadError::new(
                "status_poll",
                "oneroster payload: status_poll needs endpoint (nothing is uploaded \
                        without it)",
            ));
        }
        Ok(p)
    }

    /// Whether `archive = "zip"`.
    pub fn zip(&self) -> Result<bool, PayloadError> {
        match self.archive.as_deref() {
            None => Ok(false),
            Some("zip") => Ok(true),
            Some(other) => Err(PayloadError::new(
                "archive",
                format!("oneroster payload: archive: '{other}' is not supported (only \"zip\")"),
            )),
        }
    }

    pub fn on_error(&self) -> Result<OnError, PayloadError> {
        match self.on_error.as_deref() {
            None | Some("required") => Ok(OnError::Required),
            Some("skip") => Ok(OnError::Skip),
            Some("fail") => Ok(OnError::Fail),
            Some(other) => Err(PayloadError::new(
                "on_error",
                format!(
                    "oneroster payload: on_error: '{other}' is not one of required, skip, fail"
                ),
            )),
        }
    }

    pub fn enrollment_ids(&self) -> Result<EnrollmentIds, PayloadError> {
        match self.enrollment_ids.as_deref() {
            None | Some("role") => Ok(EnrollmentIds::Role),
            Some("seed") => Ok(EnrollmentIds::Seed),
            Some(other) => Err(PayloadError::new(
                "enrollment_ids",
                format!("oneroster payload: enrollment_ids: '{other}' is not one of role, seed"),
            )),
        }
    }

    pub fn namespace(&self) -> Result<Uuid, PayloadError> {
        match &self.namespace {
            None => Ok(DEFAULT_NAMESPACE),
            Some(s) => Uuid::parse_str(s).map_err(|e| {
                PayloadError::new(
                    "namespace",
                    format!("oneroster payload: namespace: not a UUID ({e})"),
                )
            }),
        }
    }
}

const REQUIRED_FILES: [&str; 3] = ["school.csv", "student.csv", "teacher.csv"];
const OPTIONAL_FILES: [&str; 3] = ["section.csv", "studentenrollment.csv", "teacherroster.csv"];

/// The manifest's `file.*` rows in spec order.
const MANIFEST_FILES: &[&str] = &[
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItemLearningObjectiveIds",
    "lineItems",
    "lineItemScoreScales",
    "orgs",
    "resources",
    "resultLearningObjectiveIds",
    "results",
    "resultScoreScales",
    "roles",
    "scoreScales",
    "userProfiles",
    "userResources",
    "users",
];

pub struct OneRoster;

impl Handler for OneRoster {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        let p = Payload::parse(payload)?;
        crate::paths::check(
            config,
            &config.daemon.data_dir,
            "oneroster payload: dir",
            &p.dir,
        )
        .map_err(|e| e.for_field("dir"))?;
        if let Some(endpoint) = &p.endpoint {
            if !config.endpoints.contains_key(endpoint) {
                return Err(PayloadError::new(
                    "endpoint",
                    format!("oneroster payload: endpoint: no [endpoints.{endpoint}] in the config"),
                ));
            }
        }
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        convert_payload(&job.payload, &job.queue, ctx)
    }
}

/// Runs one conversion for a job payload; the upload job goes to `queue`.
pub fn convert_payload(payload: &Value, queue: &str, ctx: &JobContext) -> Outcome {
    run(payload, queue, ctx).unwrap_or_else(Outcome::from)
}

/// What one run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub name: String,
    pub records: u64,
    pub sha256: String,
}

fn sha_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn folder_name(p: &Payload, dir: &Path) -> String {
    let raw = p.name.clone().unwrap_or_else(|| {
        dir.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(&raw);
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "input".into(),
        _ => cleaned,
    }
}

fn run(payload: &Value, queue: &str, ctx: &JobContext) -> Result<Outcome, HandlerError> {
    let p = Payload::parse(payload)?;
    let ns = p.namespace()?;
    let on_error = p.on_error()?;
    // Checked again now: the folder may have been replaced by a symlink since the enqueue.
    let dir = crate::paths::check(&ctx.config, &ctx.data_dir, "oneroster payload: dir", &p.dir)
        .map_err(|e| e.for_field("dir"))?;
    let name = folder_name(&p, &dir);

    let now_ms = ctx.clock.now_ms();
    let now = format_millis(now_ms);
    let date = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%Y%m%d")
        .to_string();
    let out_rel = PathBuf::from("output")
        .join(&date)
        .join("oneroster")
        .join(&name);
    let out_dir = ctx.data_dir.join(&out_rel);
    crate::files::create_private_dir_all(&out_dir)
        .map_err(|e| FileError::new(FileAction::Create, &out_dir, e))?;
    let errors_path = out_dir.join("errors.csv");
    let mut errors: Vec<SdsError> = Vec::new();
    // A conversion that cannot go on is dead and always leaves errors.csv, with what was
    // found so far and the reason it stopped.
    let stop = |errors: &mut Vec<SdsError>, fatal: Fatal, message: String| {
        errors.push(SdsError {
            file: fatal.file,
            line: fatal.line,
            field: String::new(),
            value: String::new(),
            reason: fatal.reason,
            required: true,
        });
        write_errors(&errors_path, errors)?;
        Ok(Outcome::Permanent {
            error: format!("{message}; see {}", errors_path.display()),
            detail: Some(json!({
                "errors": errors.len(),
                "errors_file": errors_path.display().to_string(),
            })),
        })
    };

    // The files, by lower-case name.
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let listing =
        std::fs::read_dir(&dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
    let listing = match listing {
        Ok(listing) => listing,
        Err(e) => {
            let reason = format!("cannot read {}: {e}", dir.display());
            return stop(&mut errors, Fatal::output(reason.clone()), reason);
        }
    };
    for entry in listing {
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let lower = entry.file_name().to_string_lossy().to_lowercase();
            if REQUIRED_FILES.contains(&lower.as_str()) || OPTIONAL_FILES.contains(&lower.as_str())
            {
                found.insert(lower, entry.path());
            }
        }
    }
    for required in REQUIRED_FILES {
        if !found.contains_key(required) {
            let reason = format!(
                "is missing in {} (required: {})",
                dir.display(),
                REQUIRED_FILES.join(", ")
            );
            let message = format!("{required} {reason}");
            let fatal = Fatal {
                file: required.into(),
                line: 0,
                reason,
            };
            return stop(&mut errors, fatal, message);
        }
    }
    // The identity of the input: its files' checksums, sorted by name.
    let mut identity = Sha256::new();
    identity.update(ns.as_bytes());
    for (file, path) in &found {
        let mut hasher = Sha256::new();
        if let Err(e) =
            std::fs::File::open(path).and_then(|mut f| std::io::copy(&mut f, &mut hasher))
        {
            let fatal = Fatal {
                file: map::disk_name(path),
                line: 0,
                reason: format!("cannot read {}: {e}", path.display()),
            };
            let message = fatal.reason.clone();
            return stop(&mut errors, fatal, message);
        }
        identity.update(format!("{file}\t{:x}\n", hasher.finalize()));
    }
    let input_sha = format!("{:x}", identity.finalize());

    let inputs = Inputs {
        school: found["school.csv"].clone(),
        student: found["student.csv"].clone(),
        teacher: found["teacher.csv"].clone(),
        section: found.get("section.csv").cloned(),
        studentenrollment: found.get("studentenrollment.csv").cloned(),
        teacherroster: found.get("teacherroster.csv").cloned(),
    };

    let mut files = match Files::create(&out_dir) {
        Ok(files) => files,
        Err(e) => return stop(&mut errors, Fatal::output(e.to_string()), e.to_string()),
    };
    ctx.progress("input_files", found.len() as u64);
    let converted = map::convert(&inputs, &ns, p.enrollment_ids()?, &mut errors, &mut files);
    ctx.progress("input_errors", errors.len() as u64);
    if let Err(fatal) = converted {
        // Dropped unfinished, the outputs take their temporary files with them.
        drop(files);
        let message = fatal.to_string();
        return stop(&mut errors, fatal, message);
    }

    if errors.is_empty() {
        let _ = std::fs::remove_file(&errors_path);
    } else {
        write_errors(&errors_path, &errors)?;
    }
    let fatal: Vec<&SdsError> = match on_error {
        OnError::Required => errors.iter().filter(|e| e.required).collect(),
        OnError::Skip => Vec::new(),
        OnError::Fail => errors.iter().collect(),
    };
    if let Some(first) = fatal.first() {
        drop(files);
        let what = match on_error {
            OnError::Fail => "error(s) with on_error = \"fail\"",
            _ => "error(s) in required files",
        };
        return Ok(Outcome::Permanent {
            error: format!(
                "{} {what} (first: {} line {} {}: {}); see {}",
                fatal.len(),
                first.file,
                first.line,
                first.field,
                first.reason,
                errors_path.display()
            ),
            detail: Some(json!({
                "errors": errors.len(),
                "errors_file": errors_path.display().to_string(),
            })),
        });
    }

    let written = match write_set(&out_dir, files, &p, &now) {
        Ok(written) => written,
        Err(e) => return stop(&mut errors, Fatal::output(e.to_string()), e.to_string()),
    };
    ctx.progress("files_written", written.len() as u64);
    ctx.progress("records_written", written.iter().map(|w| w.records).sum());
    let mut detail = json!({
        "output_dir": out_dir.display().to_string(),
        "input_sha256": input_sha,
        "errors": errors.len(),
        "records": written.iter().map(|w| (w.name.clone(), w.records)).collect::<BTreeMap<_, _>>(),
    });
    if !errors.is_empty() {
        detail["errors_file"] = json!(errors_path.display().to_string());
    }
    // What is sent and zipped: metadata.json and what it describes, manifest.csv and
    // every CSV with records (the spec allows no file without data rows; the manifest
    // calls those absent and none is written).
    let mut set = vec!["metadata.json".to_string()];
    set.extend(written.iter().map(|w| w.name.clone()));
    if p.zip()? {
        let zip_path = out_dir.with_file_name(format!("{name}.zip"));
        if let Err(e) = write_zip(&zip_path, &out_dir, &set) {
            return stop(&mut errors, Fatal::output(e.to_string()), e.to_string());
        }
        detail["archive"] = json!(zip_path.display().to_string());
    }
    let mut follow_ups = Vec::new();
    if let Some(endpoint) = &p.endpoint {
        let parts: Vec<Value> = set
            .iter()
            .map(|file| {
                json!({
                    "name": "files",
                    "file": out_rel.join(file),
                    "filename": file,
                    "content_type": if file.ends_with(".json") { "application/json" } else { "text/csv" },
                })
            })
            .collect();
        let key = format!("oneroster:{input_sha}");
        detail["upload_key"] = json!(key);
        let path = p.path.clone().unwrap_or_else(|| "/upload".into());
        let mut upload = json!({
            "endpoint": endpoint,
            "method": "POST",
            "path": path,
            "multipart": parts,
            // The 202's uploadId, kept with the upload's attempt (`jobctl show`).
            "record": ["uploadId"],
        });
        if p.status_poll {
            upload["follow_up"] = json!({
                "kind": status::KIND,
                "queue": queue,
                "max_attempts": p.max_polls.unwrap_or(status::DEFAULT_MAX_POLLS),
                "payload": {
                    "endpoint": endpoint,
                    "path": path,
                    "poll_interval": p.poll_interval,
                },
            });
        }
        follow_ups.push(NewJob::new("http", upload).queue(queue).unique_key(key));
    }
    Ok(Outcome::succeeded(follow_ups, Some(detail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../config/examples/oneroster.toml");
        let config = Config::from_toml(text, "oneroster.toml").unwrap();
        let watch = &config.watch[0];
        assert_eq!(watch.kind, KIND);
        assert_eq!(watch.required.len(), 3);
        let mut payload = serde_json::to_value(&watch.payload).unwrap();
        payload["dir"] = json!("/var/lib/jobd/spool/1/20251027");
        OneRoster.validate(&payload, &config).unwrap();
        let parsed = Payload::parse(&payload).unwrap();
        assert_eq!(parsed.namespace().unwrap(), DEFAULT_NAMESPACE);
        assert!(parsed.zip().unwrap());
        assert_eq!(parsed.on_error().unwrap(), OnError::Required);
        assert_eq!(parsed.enrollment_ids().unwrap(), EnrollmentIds::Seed);
        assert!(parsed.status_poll);
        // The poll interval fits under the status kind's cap, so it is honoured.
        let interval = status::parse_interval(parsed.poll_interval.as_deref()).unwrap();
        assert!(interval <= config.policy_for(status::KIND).cap);
        payload["endpoint"] = json!("nowhere");
        let err = OneRoster.validate(&payload, &config).unwrap_err();
        assert_eq!(err.field, "endpoint");
        assert!(err.to_string().contains("endpoint"), "{err}");
        payload["namespace"] = json!("not-a-uuid");
        let err = Payload::parse(&payload).unwrap_err();
        assert_eq!(err.field, "namespace");
        assert!(err.to_string().contains("namespace"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let base = json!({"dir": "in/1", "endpoint": "roster"});
        let refused = |key: &str, value: Value| {
            let mut payload = base.clone();
            payload[key] = value;
            Payload::parse(&payload).unwrap_err().to_string()
        };
        assert_eq!(
            refused("archive", json!("tar")),
            "oneroster payload: archive: 'tar' is not supported (only \"zip\")"
        );
        assert_eq!(
            refused("on_error", json!("ignore")),
            "oneroster payload: on_error: 'ignore' is not one of required, skip, fail"
        );
        assert!(refused("poll_interval", json!("often"))
            .starts_with("oneroster payload: poll_interval: 'often'"));
        assert_eq!(
            refused("enrollment_ids", json!("uuid")),
            "oneroster payload: enrollment_ids: 'uuid' is not one of role, seed"
        );
        assert_eq!(
            Payload::parse(&base).unwrap().enrollment_ids().unwrap(),
            EnrollmentIds::Role
        );
        assert_eq!(
            refused("max_polls", json!(0)),
            "oneroster payload: max_polls must be at least 1"
        );
        let err = Payload::parse(&json!({"dir": "in/1", "status_poll": true}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("status_poll needs endpoint"), "{err}");
        let p =
            Payload::parse(&json!({"dir": "in/1", "archive": "zip", "on_error": "skip"})).unwrap();
        assert!(p.zip().unwrap());
        assert_eq!(p.on_error().unwrap(), OnError::Skip);
        assert_eq!(
            Payload::parse(&base).unwrap().on_error().unwrap(),
            OnError::Required
        );
    }
}
