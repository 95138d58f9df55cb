//! Stage 0 of `csv_import`: the file read once, each row checked, failing rows to the
//! errors file, good rows to [`super::batches`]; then the import awaits its batch jobs.
//! Also [`dry_run`], the same scan without a queue, for the benchmark.

use super::batches::{Batcher, BodiesFile, BODIES_DIR};
use super::schema::{self, RowError};
use super::{
    fmt_time, make_dir, pipeline, safe_name, state_path, write_atomic, write_summary,
    CsvImportPipeline, ImportPayload, Summary,
};
use crate::csvio::CsvReader;
use crate::files::{AtomicFile, FileError};
use crate::handlers::{HandlerError, JobContext, StopReason};
use crate::job::{Job, NewJob, Outcome};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How many rows pass between looks at the stop signal.
const STOP_CHECK_EVERY: u64 = 4096;
/// The longest value copied into the errors file.
const ERROR_VALUE_LIMIT: usize = 1000;

/// The errors file, opened at the first failing row under a temporary name.
struct ErrorsFile {
    path: PathBuf,
    writer: Option<csv::Writer<AtomicFile>>,
}

impl ErrorsFile {
    fn new(path: PathBuf) -> ErrorsFile {
        ErrorsFile { path, writer: None }
    }

    fn add(&mut self, line: u64, errors: &[RowError]) -> Result<(), FileError> {
        if self.writer.is_none() {
            let file =
                AtomicFile::create(&self.path).map_err(|e| FileError::write(&self.path, e))?;
            let mut writer = csv::Writer::from_writer(file);
            writer
                .write_record(["line", "column", "value", "reason"])
                .map_err(|e| FileError::write(&self.path, e))?;
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
                .map_err(|e| FileError::write(&self.path, e))?;
        }
        Ok(())
    }

    /// Puts the file in place; returns its path if there were errors.
    fn finish(self) -> Result<Option<PathBuf>, FileError> {
        let Some(writer) = self.writer else {
            return Ok(None);
        };
        let fail = |e: &dyn std::fmt::Display| FileError::write(&self.path, e);
        let file = writer.into_inner().map_err(|e| fail(&e.error()))?;
        file.commit().map_err(|e| fail(&e))?;
        Ok(Some(self.path))
    }
}

pub(super) fn stopped(ctx: &JobContext) -> Option<Outcome> {
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
pub(super) fn fan_out(job: &Job, ctx: &JobContext) -> Result<Outcome, HandlerError> {
    let payload = ImportPayload::parse(&job.payload)?;
    let p = pipeline(&ctx.config, &payload.pipeline)?;
    let compiled = p
        .compile(&format!("pipelines.{}", payload.pipeline))
        .map_err(|e| HandlerError::permanent(e.to_string()))?;
    let started = ctx.clock.now_ms();
    // Checked again now: the file may have been replaced by a symlink since the enqueue.
    let file = crate::paths::check(
        &ctx.config,
        &ctx.data_dir,
        "csv_import payload: file",
        &payload.file,
    )
    .map_err(|e| e.for_field("file"))?;
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
                .map_err(|e| {
                    HandlerError::permanent(format!("cannot read {}: {e}", file.display()))
                })?
                .0
        }
    };
    let unreadable = |e: &dyn std::fmt::Display| HandlerError::permanent(format!("{name}: {e}"));
    let mut reader =
        CsvReader::open(&file, compiled.encoding, &compiled.dialect).map_err(|e| unreadable(&e))?;
    let bound = schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim)
        .map_err(|e| unreadable(&e))?;

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
    .map_err(|e| e.map_message(|text| format!("{name}: {text}")));
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
    let bytes = serde_json::to_vec(&summary).map_err(|e| FileError::write(&state, e))?;
    write_atomic(&state, &bytes, 0o600)?;
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
) -> Result<Option<Outcome>, HandlerError> {
    let mut row_errors = Vec::new();
    while let Some(record) = reader
        .next_record()
        .map_err(|e| HandlerError::permanent(e.to_string()))?
    {
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

/// Reads, checks and batches a whole file without a queue, for the benchmark: stage 0's
/// own [`scan`], bodies file and fsync. The bodies go to `out_dir/dry-run.bodies`,
/// failing rows to `out_dir/dry-run.errors.csv`. Returns (rows read, rows valid, the
/// batch jobs), for the caller to enqueue as the job's completion would.
pub fn dry_run(
    p: &CsvImportPipeline,
    file: &Path,
    out_dir: &Path,
) -> Result<(u64, u64, Vec<NewJob>), HandlerError> {
    let failed = |e: &dyn std::fmt::Display| HandlerError::permanent(e.to_string());
    let compiled = p.compile("pipeline").map_err(|e| failed(&e))?;
    let mut reader =
        CsvReader::open(file, compiled.encoding, &compiled.dialect).map_err(|e| failed(&e))?;
    let bound = schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim)
        .map_err(|e| failed(&e))?;
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
