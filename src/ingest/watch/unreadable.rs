//! Inputs that cannot be read: retried every 5 s, then moved to failed/ as a dead job
//! with the reason once `unreadable_timeout` has passed.

use super::*;

impl FolderWatcher {
    /// A file or folder set that could not be read: tried again in 5 s until
    /// `unreadable_timeout` has passed since the first failure, then moved to failed/ as a
    /// dead job with the reason. Returns the commit when it was given up on.
    pub(super) fn unreadable(
        &mut self,
        path: &Path,
        is_dir: bool,
        failing_since: UnixMillis,
        error: &io::Error,
    ) -> Option<(String, PendingCommit)> {
        let now_ms = self.clock.now_ms();
        let timeout = self.config.unreadable_timeout;
        let shown = crate::job::preview(&path.to_string_lossy());
        let problem = |text: String| Problem {
            watch: self.watch_name.clone(),
            path: path.to_string_lossy().into_owned(),
            problem: text,
            since: failing_since,
        };
        if now_ms.saturating_sub(failing_since) < timeout.as_millis() as i64 {
            let first = self.report.set(problem(format!(
                "cannot be read ({error}); tried every {}, a dead job after {}",
                humantime::format_duration(RETRY_AFTER),
                humantime::format_duration(timeout)
            )));
            if first {
                tracing::warn!(
                    "{}: cannot take in {shown}: {error}; trying again every {} for {}",
                    self.key,
                    humantime::format_duration(RETRY_AFTER),
                    humantime::format_duration(timeout)
                );
            }
            return None;
        }
        let reason = format!(
            "{} could not be read for {}: {error}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            humantime::format_duration(timeout)
        );
        match self.stage_unread(path, is_dir, reason) {
            Ok(commit) => {
                self.report.clear(&self.watch_name, &path.to_string_lossy());
                commit
            }
            Err(e) => {
                if self.report.set(problem(format!(
                    "cannot be read ({error}) nor moved to failed/ ({e})"
                ))) || !self.ignored.contains(path)
                {
                    tracing::error!(
                        "{}: {shown} cannot be read ({error}) nor moved to failed/ ({e})",
                        self.key
                    );
                    self.ignored.insert(path.to_path_buf());
                }
                None
            }
        }
    }

    /// Stages an input that cannot be read as a job dead from birth (it goes to failed/
    /// with the reason). Moving it needs no read permission. No SHA-256 is known.
    pub(super) fn stage_unread(
        &self,
        path: &Path,
        is_dir: bool,
        reason: String,
    ) -> io::Result<Option<(String, PendingCommit)>> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        let token = Spool::new_token(self.clock.now_ms());
        let meta = StageMeta {
            token,
            watch: self.watch_name.clone(),
            name: name.clone(),
            is_dir,
            job: self.job_template(path),
            dedupe_window_ms: 0,
            dead: Some(reason),
        };
        match self.spool.stage(path, &meta) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let staged = Staged {
            meta,
            sha256: String::new(),
            size,
            files: Vec::new(),
        };
        let commit = self
            .spool
            .commit_async(&self.client, staged)
            .map_err(io::Error::other)?;
        Ok(Some((name, commit)))
    }
}
