//! `csv_import`: one CSV file becomes validated, batched `http` jobs, and a summary once
//! they have all finished.
//!
//! Stage 0 (the file's first run) reads the file once, streaming: each record is checked
//! against the pipeline's schema; failing rows go to `output/YYYYMMDD/<file>.errors.csv` (names
//! too long for the file system are shortened as the watched folder's `.error.json` is),
//! good rows are grouped into batches whose bodies are appended, one after the other, to
//! `spool/csv_import/batches/<job id>.bodies`. Unless `max_error_rate` is exceeded, that
//! file is made durable and the job returns [`Outcome::Await`] with one `http` job per
//! batch (`body_file` plus the batch's `body_offset` and `body_len`), so every batch is
//! enqueued in the same transaction that moves the import to `waiting`: a crash before it
//! enqueues none, after it all. Bodies live in a file, not in payloads, so neither memory
//! nor the queue grows with the file; one file rather than one per batch, because
//! creating the files was most of the cost of a large import.
//!
//! A row is checked and rendered in one go: each cell becomes its JSON text
//! ([`schema::Column::write`]) in the batch's [`template::Rows`], and a body is made of
//! copies of those texts ([`template::Body::write`]), with no `serde_json::Value` per
//! cell.
//!
//! Stage 1 (resumed when the last batch finished) reads what stage 0 left in
//! `spool/csv_import/state/<job id>.json` (a handler cannot read the database, and the
//! counts of rows are known only to stage 0), adds how the batches ended, writes
//! `output/YYYYMMDD/<file>.summary.json` and, if every batch succeeded, deletes the
//! bodies file and returns the pipeline's follow-up job. If a batch is dead or cancelled
//! the bodies file stays, so that `jobctl retry` of a dead batch can still send it.
//!
//! Each batch's unique key is `csv:<pipeline>:<file sha256>:<n>`: the same file imported
//! again by the same pipeline enqueues nothing new, while another pipeline (e.g. a
//! triggered send fed by the same file) still gets its own batches.

pub mod config;
pub mod schema;
pub mod template;

pub use config::{BodyPreset, Compiled, CsvImportPipeline, FollowUp};

use super::{Handler, JobContext, StopReason};
use crate::config::Config;
use crate::csvio::CsvReader;
use crate::files::AtomicFile;
use crate::job::{Job, NewJob, Outcome, UnixMillis};
use schema::RowError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use template::{Body, Rows};

/// How many rows pass between looks at the stop signal.
const STOP_CHECK_EVERY: u64 = 4096;
/// The longest value copied into the errors file.
const ERROR_VALUE_LIMIT: usize = 1000;

/// The job's payload: what a watched folder gives (`file`, `name`, `sha256`, `size`)
/// plus the pipeline. Unknown fields are refused, so a misspelt setting is caught when
/// the watch is checked at start; a watch's own fields go under `extra`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportPayload {
    pub pipeline: String,
    /// Absolute, or relative to the data directory.
    pub file: PathBuf,
    /// The name it arrived under (default: the file's own name).
    #[serde(default)]
    pub name: Option<String>,
    /// Hex SHA-256 of the file, if the sender already computed it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its size, as a watched folder gives it (not used: the file is read anyway).
    #[serde(default)]
    pub size: Option<u64>,
    /// A JSON object of the watch's (or sender's) own fields: kept with the job, never
    /// read by the kind.
    #[serde(default)]
    pub extra: Option<Value>,
}

impl ImportPayload {
    fn parse(payload: &Value) -> Result<ImportPayload, String> {
        let p =
            ImportPayload::deserialize(payload).map_err(|e| format!("csv_import payload: {e}"))?;
        if p.file.as_os_str().is_empty() {
            return Err("csv_import payload: file must not be empty".into());
        }
        if p.extra.as_ref().is_some_and(|e| !e.is_object()) {
            return Err("csv_import payload: extra must be an object".into());
        }
        if let Some(sha) = &p.sha256 {
            // It names directories and keys, so it must be exactly a digest.
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("csv_import payload: sha256 must be 64 hex digits".into());
            }
        }
        Ok(p)
    }
}

fn pipeline<'c>(config: &'c Config, name: &str) -> Result<&'c CsvImportPipeline, String> {
    match config.pipelines.get(name) {
        Some(crate::config::PipelineConfig::CsvImport(p)) => Ok(p),
        #[allow(unreachable_patterns)]
        Some(_) => Err(format!("pipeline '{name}' is not a csv_import pipeline")),
        None => Err(format!(
            "pipeline '{name}' is not declared (declared: {})",
            if config.pipelines.is_empty() {
                "none".into()
            } else {
                config
                    .pipelines
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
    }
}

/// What stage 0 leaves for stage 1, and the body of the summary file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub job: i64,
    pub pipeline: String,
    pub file: String,
    pub name: String,
    pub sha256: String,
    pub encoding: String,
    /// `sending`, `completed`, `completed_with_failures` or `refused`.
    pub status: String,
    pub rows_read: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub errors_file: Option<String>,
    pub batch_size: usize,
    pub batches: u64,
    pub batches_succeeded: u64,
    pub batches_dead: u64,
    pub batches_cancelled: u64,
    /// Batches an earlier import of the same file had already enqueued (not resent).
    pub batches_already_enqueued: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Where stage 0 put its output, so stage 1 writes beside it even after midnight.
    pub output_dir: String,
    pub summary_file: String,
    /// The batch bodies (one file, a byte range per batch), deleted once every batch
    /// succeeded, else kept for `jobctl retry`.
    #[serde(default)]
    pub bodies_file: String,
    pub started_ms: UnixMillis,
}

/// The `csv_import` handler. Stateless: everything comes from the job and the config.
pub struct CsvImport;

impl Handler for CsvImport {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), String> {
        let p = ImportPayload::parse(payload)?;
        pipeline(config, &p.pipeline)?;
        crate::paths::check(
            config,
            &config.daemon.data_dir,
            "csv_import payload: file",
            &p.file,
        )?;
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let result = if job.stage == 0 {
            fan_out(job, ctx)
        } else {
            fan_in(job, ctx)
        };
        result.unwrap_or_else(Outcome::permanent)
    }
}

fn fmt_time(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// The file name part only, so a payload's name cannot point outside output/.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "input".into(),
        _ => cleaned,
    }
}

/// Creates a directory (and parents) the group may read, others not.
fn make_dir(path: &Path) -> Result<(), String> {
    crate::files::create_private_dir_all(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Writes `bytes` to `path` whole or not at all, with exactly `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    crate::files::write_atomic_with_mode(path, bytes, mode)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The errors file, opened at the first failing row under a temporary name.
struct ErrorsFile {
    path: PathBuf,
    writer: Option<csv::Writer<AtomicFile>>,
}

impl ErrorsFile {
    fn new(path: PathBuf) -> ErrorsFile {
        ErrorsFile { path, writer: None }
    }

    fn add(&mut self, line: u64, errors: &[RowError]) -> Result<(), String> {
        if self.writer.is_none() {
            let file = AtomicFile::create(&self.path)
                .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
            let mut writer = csv::Writer::from_writer(file);
            writer
                .write_record(["line", "column", "value", "reason"])
                .map_err(|e| e.to_string())?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("opened above");
        let line = line.to_string();
        for e in errors {
            let value = match e.value.char_indices().nth(ERROR_VALUE_LIMIT) {
                Some((cut, _)) => &e.value[..cut],
                None => e.value.as_str(),
            };
            writer
                .write_record([line.as_str(), &e.column, value, &e.reason])
                .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        }
        Ok(())
    }

    /// Puts the file in place; returns its path if there were errors.
    fn finish(self) -> Result<Option<PathBuf>, String> {
        let Some(writer) = self.writer else {
            return Ok(None);
        };
        let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", self.path.display());
        let file = writer.into_inner().map_err(|e| fail(&e.error()))?;
        file.commit().map_err(|e| fail(&e))?;
        Ok(Some(self.path))
    }
}

fn state_path(data_dir: &Path, job: &Job) -> PathBuf {
    data_dir
        .join("spool/csv_import/state")
        .join(format!("{}.json", job.id))
}

fn stopped(ctx: &JobContext) -> Option<Outcome> {
    match ctx.stop.must_stop()? {
        StopReason::Cancelled => Some(Outcome::Cancelled {
            reason: "cancelled by an operator while reading the file".into(),
        }),
        _ => Some(Outcome::Interrupted {
            reason: "the daemon stopped while the file was read; it is read again".into(),
        }),
    }
}

/// Stage 0: read, check and batch the file; wait for the batches.
fn fan_out(job: &Job, ctx: &JobContext) -> Result<Outcome, String> {
    let payload = ImportPayload::parse(&job.payload)?;
    let p = pipeline(&ctx.config, &payload.pipeline)?;
    let compiled = p
        .compile(&format!("pipelines.{}", payload.pipeline))
        .map_err(|e| e.to_string())?;
    let started = ctx.clock.now_ms();
    // Checked again now: the file may have been replaced by a symlink since the enqueue.
    let file = crate::paths::check(
        &ctx.config,
        &ctx.data_dir,
        "csv_import payload: file",
        &payload.file,
    )?;
    let name = safe_name(&payload.name.clone().unwrap_or_else(|| {
        file.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }));
    let sha256 = match &payload.sha256 {
        Some(sha) => sha.to_ascii_lowercase(),
        None => {
            crate::files::sha256_file(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                .0
        }
    };
    let mut reader = CsvReader::open(&file, compiled.encoding, &compiled.dialect)
        .map_err(|e| format!("{name}: {e}"))?;
    let bound = schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim)
        .map_err(|e| format!("{name}: {e}"))?;

    let date = chrono::DateTime::from_timestamp_millis(started)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%Y%m%d")
        .to_string();
    let output_dir = ctx.data_dir.join("output").join(&date);
    make_dir(&output_dir)?;
    // Per job, not per file: an import of the same bytes running at the same time writes
    // its own bodies, and its duplicates point at the first import's bodies anyway.
    let bodies_rel = PathBuf::from(BODIES_DIR).join(format!("{}.bodies", job.id));
    let bodies = BodiesFile::create(&ctx.data_dir, &bodies_rel)?;

    let mut summary = Summary {
        job: job.id,
        pipeline: payload.pipeline.clone(),
        file: file.display().to_string(),
        name: name.clone(),
        sha256: sha256.clone(),
        encoding: reader.encoding().name().to_string(),
        status: "sending".into(),
        batch_size: p.batch_size,
        started_at: fmt_time(started),
        output_dir: output_dir.display().to_string(),
        summary_file: output_dir
            .join(crate::files::sidecar_name(&name, ".summary.json"))
            .display()
            .to_string(),
        bodies_file: bodies.path.display().to_string(),
        started_ms: started,
        ..Summary::default()
    };
    let mut errors_file =
        ErrorsFile::new(output_dir.join(crate::files::sidecar_name(&name, ".errors.csv")));
    let mut batcher = Batcher::new(&payload.pipeline, p, &compiled, &sha256, job, bodies);
    let scanned = scan(
        &mut reader,
        &bound,
        &mut batcher,
        &mut errors_file,
        &mut summary,
        |so_far| {
            ctx.progress("rows_read", so_far.rows_read);
            ctx.progress("rows_invalid", so_far.rows_invalid);
            stopped(ctx)
        },
    )
    .map_err(|e| format!("{name}: {e}"));
    let errors_path = errors_file.finish()?;
    summary.errors_file = errors_path.map(|p| p.display().to_string());
    summary.batches = batcher.children.len() as u64;
    ctx.progress("rows_read", summary.rows_read);
    ctx.progress("rows_valid", summary.rows_valid);
    ctx.progress("rows_invalid", summary.rows_invalid);
    ctx.progress("batches", summary.batches);
    match scanned {
        Ok(None) => {}
        Ok(Some(stop)) => {
            // Interrupted: stage 0 runs again and writes the file anew; cancelled: no
            // batch will ever read it.
            batcher.bodies.remove();
            return Ok(stop);
        }
        Err(e) => {
            batcher.bodies.remove();
            return Err(e);
        }
    }

    let rate = if summary.rows_read == 0 {
        0.0
    } else {
        summary.rows_invalid as f64 / summary.rows_read as f64
    };
    if rate > p.max_error_rate {
        batcher.bodies.remove();
        let finished = ctx.clock.now_ms();
        summary.status = "refused".into();
        summary.batches = 0;
        summary.finished_at = Some(fmt_time(finished));
        summary.duration_ms = Some(finished - started);
        write_summary(&summary)?;
        return Ok(Outcome::Permanent {
            error: format!(
                "{name}: {} of {} rows invalid ({:.1}%), above max_error_rate {:.1}%: nothing was sent; see {}",
                summary.rows_invalid,
                summary.rows_read,
                rate * 100.0,
                p.max_error_rate * 100.0,
                summary.errors_file.as_deref().unwrap_or("the errors file")
            ),
            detail: Some(serde_json::to_value(&summary).unwrap_or_default()),
        });
    }
    // Durable before the commit that makes jobs refer to it.
    batcher.bodies.sync()?;
    write_summary(&summary)?;
    let state = state_path(&ctx.data_dir, job);
    make_dir(state.parent().expect("state has a parent"))?;
    write_atomic(
        &state,
        &serde_json::to_vec(&summary).map_err(|e| e.to_string())?,
        0o600,
    )?;
    let children = std::mem::take(&mut batcher.children);
    Ok(Outcome::Await {
        children,
        detail: Some(json!({
            "rows_read": summary.rows_read,
            "rows_valid": summary.rows_valid,
            "rows_invalid": summary.rows_invalid,
            "batches": summary.batches,
            "encoding": summary.encoding,
            "errors_file": summary.errors_file,
        })),
    })
}

/// Stage 0's loop, shared by the job and [`dry_run`] (so the benchmark measures the
/// job's own path): every record is read and checked; good rows go to `batcher`,
/// failing ones to `errors`; the counts go to `summary`. `stop` sees the counts so far
/// (the job reports them as progress) and is asked every
/// [`STOP_CHECK_EVERY`] rows; its outcome ends the scan.
fn scan(
    reader: &mut CsvReader,
    bound: &schema::Bound,
    batcher: &mut Batcher<'_>,
    errors: &mut ErrorsFile,
    summary: &mut Summary,
    stop: impl Fn(&Summary) -> Option<Outcome>,
) -> Result<Option<Outcome>, String> {
    let mut row_errors = Vec::new();
    while let Some(record) = reader.next_record().map_err(|e| e.to_string())? {
        summary.rows_read += 1;
        if bound.convert(&record, &mut batcher.rows, &mut row_errors) {
            summary.rows_valid += 1;
            batcher.row_added()?;
        } else {
            summary.rows_invalid += 1;
            errors.add(record.line, &row_errors)?;
        }
        if summary.rows_read.is_multiple_of(STOP_CHECK_EVERY) {
            if let Some(outcome) = stop(summary) {
                return Ok(Some(outcome));
            }
        }
    }
    batcher.flush()?;
    Ok(None)
}

fn write_summary(summary: &Summary) -> Result<(), String> {
    let mut bytes = serde_json::to_vec_pretty(summary).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_atomic(Path::new(&summary.summary_file), &bytes, 0o640)
}

/// Where the bodies files live, under the data directory.
const BODIES_DIR: &str = "spool/csv_import/batches";
/// How much of the bodies file is gathered before one write(2).
const WRITE_CHUNK: usize = 1 << 20;

/// The bodies of one import's batches, back to back in one file
/// (`spool/csv_import/batches/<job id>.bodies`, mode 0600), written sequentially; each
/// batch job names its byte range. One file instead of one per batch: creating 10,000
/// files was most of the cost of a large import.
///
/// Neither a temporary name nor an fsync per body: no job refers to the file until the
/// Await commit, which comes after [`BodiesFile::sync`]; a crash before it runs stage 0
/// again, which truncates and rewrites the file.
struct BodiesFile {
    path: PathBuf,
    /// The path relative to the data directory, as the batch payloads give it.
    rel: PathBuf,
    file: std::fs::File,
    /// Rendered bodies not yet written.
    pending: Vec<u8>,
    /// Bytes written to the file so far.
    written: u64,
}

impl BodiesFile {
    fn create(data_dir: &Path, rel: &Path) -> Result<BodiesFile, String> {
        let path = data_dir.join(rel);
        make_dir(path.parent().expect("bodies file has a parent"))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(BodiesFile {
            path,
            rel: rel.to_path_buf(),
            file,
            pending: Vec::with_capacity(WRITE_CHUNK + WRITE_CHUNK / 4),
            written: 0,
        })
    }

    /// Appends the body `render` writes; returns its offset and length in the file.
    fn append(&mut self, render: impl FnOnce(&mut Vec<u8>)) -> Result<(u64, u64), String> {
        let start = self.pending.len();
        render(&mut self.pending);
        let offset = self.written + start as u64;
        let len = (self.pending.len() - start) as u64;
        if self.pending.len() >= WRITE_CHUNK {
            self.write_pending()?;
        }
        Ok((offset, len))
    }

    fn write_pending(&mut self) -> Result<(), String> {
        self.file
            .write_all(&self.pending)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        let from = self.written;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        // Starts writing this chunk to disk now, without waiting for it, so the fsync
        // before the commit finds little left to do and the disk works while we read.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range(2) on a descriptor we own; only a hint, so its
            // result does not matter (sync() reports any real error).
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from as libc::off64_t,
                    (self.written - from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = from;
        Ok(())
    }

    /// Writes what is pending and makes the file durable: its bytes, its size and its
    /// name (the directory), before the jobs that read it are committed.
    fn sync(&mut self) -> Result<(), String> {
        if !self.pending.is_empty() {
            self.write_pending()?;
        }
        let failed = |e: std::io::Error| format!("cannot sync {}: {e}", self.path.display());
        self.file.sync_data().map_err(failed)?;
        let dir = self.path.parent().expect("bodies file has a parent");
        // The directory too (and its parent, which make_dir may have just created), or a
        // crash could lose the file's name while its jobs exist.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            std::fs::File::open(d)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("cannot sync {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// Deletes the file: no batch job will read it.
    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Groups valid rows into batches, appends each body to the bodies file and makes its
/// job.
struct Batcher<'a> {
    pipeline: &'a str,
    p: &'a CsvImportPipeline,
    body: &'a Body,
    sha256: &'a str,
    job: &'a Job,
    /// The current batch; [`schema::Bound::convert`] appends to it.
    rows: Rows,
    bodies: BodiesFile,
    children: Vec<NewJob>,
}

impl<'a> Batcher<'a> {
    fn new(
        pipeline: &'a str,
        p: &'a CsvImportPipeline,
        compiled: &'a Compiled,
        sha256: &'a str,
        job: &'a Job,
        bodies: BodiesFile,
    ) -> Batcher<'a> {
        Batcher {
            pipeline,
            p,
            body: &compiled.body,
            sha256,
            job,
            rows: Rows::new(compiled.columns.len()),
            bodies,
            children: Vec::new(),
        }
    }

    /// A row was appended to `rows`: sends the batch on when it is full.
    fn row_added(&mut self) -> Result<(), String> {
        if self.rows.len() >= self.p.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let index = self.children.len();
        let (body, rows) = (self.body, &self.rows);
        let (offset, len) = self.bodies.append(|out| body.write(out, rows))?;
        self.rows.clear();
        let mut request = json!({
            "endpoint": self.p.endpoint,
            "body_file": self.bodies.rel,
            "body_offset": offset,
            "body_len": len,
            "content_type": "application/json",
        });
        if let Some(method) = &self.p.method {
            request["method"] = json!(method);
        }
        if let Some(path) = &self.p.path {
            request["path"] = json!(path);
        }
        let mut child = NewJob::new("http", request)
            .queue(
                self.p
                    .queue
                    .clone()
                    .unwrap_or_else(|| self.job.queue.clone()),
            )
            .unique_key(format!("csv:{}:{}:{index}", self.pipeline, self.sha256))
            .source(format!("csv_import:{}", self.job.id));
        child.priority = self.job.priority;
        child.max_attempts = self.p.max_attempts;
        self.children.push(child);
        Ok(())
    }
}

/// Stage 1: every batch finished; write the summary and hand on the follow-up.
fn fan_in(job: &Job, ctx: &JobContext) -> Result<Outcome, String> {
    let payload = ImportPayload::parse(&job.payload)?;
    let state = state_path(&ctx.data_dir, job);
    let text = std::fs::read(&state).map_err(|e| {
        format!(
            "the state stage 0 left ({}) cannot be read: {e}",
            state.display()
        )
    })?;
    let mut summary: Summary = serde_json::from_slice(&text)
        .map_err(|e| format!("the state in {} is not valid: {e}", state.display()))?;
    let children = ctx.children.clone().unwrap_or_default();
    let count = |state: &str| children.get(state).copied().unwrap_or(0);
    summary.batches_succeeded = count("succeeded");
    summary.batches_dead = count("dead");
    summary.batches_cancelled = count("cancelled");
    let linked: u64 = children.values().sum();
    summary.batches_already_enqueued = summary.batches.saturating_sub(linked);
    let finished = ctx.clock.now_ms();
    summary.finished_at = Some(fmt_time(finished));
    summary.duration_ms = Some(finished - summary.started_ms);
    let failed = summary.batches_dead + summary.batches_cancelled;
    summary.status = if failed == 0 {
        "completed"
    } else {
        "completed_with_failures"
    }
    .into();
    write_summary(&summary)?;
    // This job's bodies serve only its own batches (duplicates point at the bodies of
    // the import that first enqueued them); they are kept while one may be retried.
    if failed == 0 {
        let _ = std::fs::remove_file(&summary.bodies_file);
    }
    let _ = std::fs::remove_file(&state);
    let detail = Some(serde_json::to_value(&summary).unwrap_or_default());
    if failed > 0 {
        return Ok(Outcome::Permanent {
            error: format!(
                "{}: {failed} of {} batches did not succeed ({} dead, {} cancelled); see {}",
                summary.name,
                summary.batches,
                summary.batches_dead,
                summary.batches_cancelled,
                summary.summary_file
            ),
            detail,
        });
    }
    let p = pipeline(&ctx.config, &payload.pipeline)?;
    let follow_ups = p
        .follow_up
        .iter()
        .map(|f| {
            let mut next = NewJob::new(f.kind.clone(), fill(&f.payload, &summary))
                .queue(f.queue.clone().unwrap_or_else(|| job.queue.clone()))
                .unique_key(format!(
                    "csv:{}:{}:follow_up",
                    summary.pipeline, summary.sha256
                ))
                .source(format!("csv_import:{}", job.id));
            next.priority = job.priority;
            next
        })
        .collect();
    Ok(Outcome::succeeded(follow_ups, detail))
}

/// Fills the follow-up's placeholders (values from the summary, never from rows).
fn fill(value: &Value, s: &Summary) -> Value {
    match value {
        Value::String(text) => Value::String(
            text.replace("{{file}}", &s.file)
                .replace("{{name}}", &s.name)
                .replace("{{sha256}}", &s.sha256)
                .replace("{{pipeline}}", &s.pipeline)
                .replace("{{summary}}", &s.summary_file),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, s)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, s))).collect())
        }
        other => other.clone(),
    }
}

/// Reads, checks and batches a whole file without a queue, for the benchmark: stage 0's
/// own [`scan`], bodies file and fsync. The bodies go to `out_dir/dry-run.bodies`,
/// failing rows to `out_dir/dry-run.errors.csv`. Returns (rows read, rows valid, the
/// batch jobs), for the caller to enqueue as the job's completion would.
pub fn dry_run(
    p: &CsvImportPipeline,
    file: &Path,
    out_dir: &Path,
) -> Result<(u64, u64, Vec<NewJob>), String> {
    let compiled = p.compile("pipeline").map_err(|e| e.to_string())?;
    let mut reader =
        CsvReader::open(file, compiled.encoding, &compiled.dialect).map_err(|e| e.to_string())?;
    let bound = schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim)?;
    let job = Job {
        id: 0,
        queue: "default".into(),
        kind: "csv_import".into(),
        payload: Value::Null,
        state: crate::job::JobState::Running,
        priority: 0,
        attempts: 1,
        max_attempts: None,
        run_at: 0,
        lease_until: None,
        worker: None,
        unique_key: None,
        parent_id: None,
        last_error: None,
        deadline_at: None,
        created_at: 0,
        updated_at: 0,
        finished_at: None,
        source: None,
        cancel_requested: false,
        stage: 0,
        destination: None,
        flow_key: String::new(),
        order_key: None,
        order_blocked: false,
    };
    make_dir(out_dir)?;
    let bodies = BodiesFile::create(out_dir, Path::new("dry-run.bodies"))?;
    let mut errors = ErrorsFile::new(out_dir.join("dry-run.errors.csv"));
    let mut batcher = Batcher::new("bench", p, &compiled, "0", &job, bodies);
    let mut summary = Summary::default();
    scan(
        &mut reader,
        &bound,
        &mut batcher,
        &mut errors,
        &mut summary,
        |_| None,
    )?;
    errors.finish()?;
    batcher.bodies.sync()?;
    Ok((summary.rows_read, summary.rows_valid, batcher.children))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;

    #[test]
    fn a_payload_takes_only_known_keys_and_its_own_under_extra() {
        let err = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "pipline": "q"}))
            .unwrap_err();
        assert!(
            err.starts_with("csv_import payload: unknown field `pipline`"),
            "{err}"
        );
        let p = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "size": 3,
            "extra": {"folder": "input/daily"}}))
        .unwrap();
        assert_eq!(p.extra.unwrap()["folder"], "input/daily");
        let err = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "extra": 1}))
            .unwrap_err();
        assert_eq!(err, "csv_import payload: extra must be an object");
    }

    #[test]
    fn the_sfmc_example_is_valid() {
        std::env::set_var("SFMC_CLIENT_SECRET", "example-secret");
        let text = include_str!("../../../config/examples/sfmc.toml");
        let config = Config::from_toml(text, "sfmc.toml").unwrap();
        config.check_secrets().unwrap();
        // let-else, so the test still compiles once other pipeline kinds exist.
        let Some(PipelineConfig::CsvImport(upsert)) = config.pipelines.get("customers_upsert")
        else {
            panic!("customers_upsert is a csv_import pipeline")
        };
        assert_eq!(upsert.batch_size, 50);
        assert_eq!(upsert.body, BodyPreset::SfmcRowset);
        let Some(PipelineConfig::CsvImport(send)) = config.pipelines.get("welcome_send") else {
            panic!("welcome_send is a csv_import pipeline")
        };
        let compiled = send.compile("welcome_send").unwrap();
        let mut body = Vec::new();
        let row = vec![
            Some(json!("k1")),
            Some(json!("a@example.jp")),
            Some(json!("Hanako")),
        ];
        compiled
            .body
            .write(&mut body, &template::tests::rows_of(3, &[row]));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"To": {"Address": "a@example.jp", "SubscriberKey": "k1",
                   "ContactAttributes": {"SubscriberAttributes": {"FirstName": "Hanako"}}}})
        );
    }

    /// Tricky cells of every type, read from a file and rendered by the job's path
    /// (typed cells written straight to bytes), give byte for byte the bodies of the
    /// former path (a `Value` per cell, serialised by the old renderer).
    #[test]
    fn bodies_are_byte_identical_to_the_value_based_renderer() {
        let pipeline = r#"
endpoint = "e"
keys = ["k"]
trim = false
columns = [
  { name = "k", required = true },
  { name = "s" },
  { name = "i", type = "integer", default = -7 },
  { name = "d", type = "decimal" },
  { name = "b", type = "boolean" },
  { name = "date", type = "date" },
  { name = "dt", type = "datetime" },
  { name = "e", type = "email" },
  { name = "en", type = "enum", values = ["a\"b", "ü"] },
  { name = "jp", type = "date", format = "%Y年%m月%d日" },
  { name = "f", type = "datetime", format = "%d/%m/%Y %H.%M" },
  { name = "absent", default = "dflt" },
  { name = "gone", type = "integer" },
  { name = "s2", rename = "名前\n\"x\"" },
]
"#;
        let header = "k,s,i,d,b,date,dt,e,en,jp,f,s2\n";
        let cells: &[[&str; 12]] = &[
            [
                "k1",
                "plain",
                "42",
                "1.50",
                "yes",
                "2024-02-29",
                "2024-01-02 03:04",
                "a@b.jp",
                "ü",
                "2024年01月31日",
                "31/12/2024 23.59",
                "x",
            ],
            [
                "\"q\"\"uote\"",
                "\"a\\b/c\t\u{1}\u{1f}\u{7f}\"",
                "-9223372036854775808",
                "-0.0",
                "F",
                "0001/1/9",
                "2024/1/2T3:4:5",
                "x.y+z@d.example",
                "\"a\"\"b\"",
                "0099年1月2日",
                "1/1/0001 00.00",
                "\"\u{2028}\u{2029}😀\"",
            ],
            [
                "k3",
                "",
                "",
                "",
                "",
                "",
                "2024-01-02T03:04:05.123456789+09:00",
                "",
                "",
                "",
                "",
                "\"\r\n\"",
            ],
            [
                "k4",
                " spaced ",
                "+17",
                "123456789012345.6",
                "1",
                "9999-12-31",
                "2024-02-29T23:59:60Z",
                "u@x.jp",
                "",
                "",
                "",
                "",
            ],
            [
                "k5",
                "\\",
                "9223372036854775807",
                "+0.000000000000001",
                "n",
                "2000-1-1",
                "1999-12-31 23:59:59",
                "",
                "",
                "",
                "",
                "é",
            ],
            [
                "k6",
                "s",
                "0",
                "1234567890123456789012.5",
                "TRUE",
                "2024/12/01",
                "2024-06-01T00:00:00-00:00",
                "",
                "",
                "",
                "",
                "",
            ],
            [
                "k7",
                "s",
                "-0",
                ".5",
                "f",
                "2024-1-31",
                "2024-06-01 00:00",
                "",
                "",
                "",
                "",
                "",
            ],
        ];
        let mut text = String::from(header);
        for row in cells {
            text.push_str(&row.join(","));
            text.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tricky.csv");
        std::fs::write(&file, &text).unwrap();

        let mut p: CsvImportPipeline = toml::from_str(pipeline).unwrap();
        let fields: Vec<String> = p
            .compile("p")
            .unwrap()
            .columns
            .iter()
            .map(|c| c.target.clone())
            .collect();
        let templates = [
            (json!("{{rows}}"), json!("{{row}}"), 3),
            (
                json!("{{rows}}"),
                json!({"keys": "{{keys}}", "values": "{{values}}"}),
                2,
            ),
            (
                json!({"items": "{{rows}}", "n": [1.5, -0, 1e300, null, true, "a\"\u{1}é"], "名": {}}),
                json!({"id": "{{row.k}}", "gone": "{{row.gone}}", "s": ["{{row.s}}", "{{row.d}}"], "all": "{{row}}"}),
                100,
            ),
            (
                json!({"To": {"Address": "{{row.e}}", "Key": "{{row.k}}", "Attributes": "{{values}}", "x": "{{ row.dt }}"}}),
                json!("{{row}}"),
                1,
            ),
        ];
        for (template, row_template, batch_size) in templates {
            p.template = Some(template.clone());
            p.row_template = Some(row_template.clone());
            p.batch_size = batch_size;
            let compiled = p.compile("p").unwrap();
            let mut reader = CsvReader::open(&file, compiled.encoding, &compiled.dialect).unwrap();
            let bound =
                schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim).unwrap();
            let mut rows = Rows::new(fields.len());
            let (mut new_bodies, mut old_rows) = (Vec::new(), Vec::new());
            let mut errors = Vec::new();
            while let Some(record) = reader.next_record().unwrap() {
                assert!(
                    bound.convert(&record, &mut rows, &mut errors),
                    "line {}: {errors:?}",
                    record.line
                );
                if rows.len() == batch_size {
                    let mut body = Vec::new();
                    compiled.body.write(&mut body, &rows);
                    new_bodies.push(String::from_utf8(body).unwrap());
                    rows.clear();
                }
                let old: Vec<Option<Value>> = bound
                    .columns
                    .iter()
                    .zip(&bound.positions)
                    .map(|(column, at)| match at {
                        Some(at) => Some(column.value(record.text(*at).unwrap()).unwrap()),
                        None => column.absent(),
                    })
                    .collect();
                old_rows.push(old);
            }
            if !rows.is_empty() {
                let mut body = Vec::new();
                compiled.body.write(&mut body, &rows);
                new_bodies.push(String::from_utf8(body).unwrap());
            }
            assert_eq!(old_rows.len(), cells.len());
            let old_bodies: Vec<String> = old_rows
                .chunks(batch_size)
                .map(|batch| {
                    let body = template::reference::write(
                        &template,
                        &row_template,
                        &fields,
                        &p.keys,
                        batch,
                    );
                    String::from_utf8(body).unwrap()
                })
                .collect();
            assert_eq!(new_bodies, old_bodies, "template {template}");
        }
    }

    #[test]
    fn bad_pipelines_name_their_key() {
        let base = "[endpoints.e]\nbase_url = \"https://x\"\n[pipelines.p]\nkind = \"csv_import\"\nendpoint = \"e\"\n";
        let cases = [
            (
                "columns = []",
                "pipelines.p.columns: declare at least one column",
            ),
            ("columns = [{ name = \"a\", type = \"number\" }]", "number"),
            ("columns = [{ name = \"a\", colour = 1 }]", "colour"),
            (
                "batch_size = 0\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.batch_size",
            ),
            (
                "encoding = \"klingon\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.encoding",
            ),
            (
                "delimiter = \";;\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.delimiter",
            ),
            (
                "body = \"sfmc_rowset\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.keys",
            ),
            (
                "keys = [\"a\"]\ncolumns = [{ name = \"a\" }]",
                "must be required = true",
            ),
            (
                "columns = [{ name = \"a\", pattern = \"(\" }]",
                "pipelines.p.columns[0].pattern",
            ),
            (
                "template = { x = \"{{row.b}}\" }\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.template",
            ),
        ];
        for (extra, expected) in cases {
            let message = Config::from_toml(&format!("{base}{extra}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{extra:?} gave {message}");
        }
        let message = Config::from_toml(
            "[pipelines.p]\nkind = \"csv_import\"\nendpoint = \"nope\"\ncolumns = [{ name = \"a\" }]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("pipelines.p.endpoint: 'nope'"),
            "{message}"
        );
        let message = Config::from_toml("[pipelines.p]\nkind = \"ftp_push\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("ftp_push"), "{message}");
    }
}
