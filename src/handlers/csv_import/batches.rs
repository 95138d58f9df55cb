//! The batches of a `csv_import`: valid rows grouped into batch bodies, appended to
//! one bodies file per import, each batch an `http` job naming its byte range.

use super::template::{Body, Rows};
use super::{make_dir, Compiled, CsvImportPipeline};
use crate::files::{FileAction, FileError};
use crate::job::{Job, NewJob};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the bodies files live, under the data directory.
pub(super) const BODIES_DIR: &str = "spool/csv_import/batches";
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
pub(super) struct BodiesFile {
    pub(super) path: PathBuf,
    /// The path relative to the data directory, as the batch payloads give it.
    rel: PathBuf,
    file: std::fs::File,
    /// Rendered bodies not yet written.
    pending: Vec<u8>,
    /// Bytes written to the file so far.
    written: u64,
}

impl BodiesFile {
    pub(super) fn create(data_dir: &Path, rel: &Path) -> Result<BodiesFile, FileError> {
        let path = data_dir.join(rel);
        make_dir(path.parent().expect("bodies file has a parent"))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| FileError::write(&path, e))?;
        Ok(BodiesFile {
            path,
            rel: rel.to_path_buf(),
            file,
            pending: Vec::with_capacity(WRITE_CHUNK + WRITE_CHUNK / 4),
            written: 0,
        })
    }

    /// Appends the body `render` writes; returns its offset and length in the file.
    fn append(&mut self, render: impl FnOnce(&mut Vec<u8>)) -> Result<(u64, u64), FileError> {
        let start = self.pending.len();
        render(&mut self.pending);
        let offset = self.written + start as u64;
        let len = (self.pending.len() - start) as u64;
        if self.pending.len() >= WRITE_CHUNK {
            self.write_pending()?;
        }
        Ok((offset, len))
    }

    fn write_pending(&mut self) -> Result<(), FileError> {
        self.file
            .write_all(&self.pending)
            .map_err(|e| FileError::write(&self.path, e))?;
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
    pub(super) fn sync(&mut self) -> Result<(), FileError> {
        if !self.pending.is_empty() {
            self.write_pending()?;
        }
        let failed = |e: std::io::Error| FileError::new(FileAction::Sync, &self.path, e);
        self.file.sync_data().map_err(failed)?;
        let dir = self.path.parent().expect("bodies file has a parent");
        // The directory too (and its parent, which make_dir may have just created), or a
        // crash could lose the file's name while its jobs exist.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            std::fs::File::open(d)
                .and_then(|d| d.sync_all())
                .map_err(|e| FileError::new(FileAction::Sync, d, e))?;
        }
        Ok(())
    }

    /// Deletes the file: no batch job will read it.
    pub(super) fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Groups valid rows into batches, appends each body to the bodies file and makes its
/// job.
pub(super) struct Batcher<'a> {
    pipeline: &'a str,
    p: &'a CsvImportPipeline,
    body: &'a Body,
    sha256: &'a str,
    job: &'a Job,
    /// The current batch; [`schema::Bound::convert`] appends to it.
    pub(super) rows: Rows,
    pub(super) bodies: BodiesFile,
    pub(super) children: Vec<NewJob>,
}

impl<'a> Batcher<'a> {
    pub(super) fn new(
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
    pub(super) fn row_added(&mut self) -> Result<(), FileError> {
        if self.rows.len() >= self.p.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), FileError> {
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
