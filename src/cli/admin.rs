//! The commands on the queue and its database: `pause`, `resume`, `stats`, `backup`,
//! `vacuum`, `purge`, `migrate`, `check`, `top`, `manpage` and `sync-state`.

use super::*;

impl Ctl {
    pub(super) fn pause(
        &self,
        queue: &str,
        reason: Option<&str>,
        out: &mut dyn Write,
    ) -> CtlResult {
        if queue.is_empty() {
            return Err(CtlError::Usage("the queue name is empty".into()));
        }
        let mut db = self.open()?;
        let now = self.now;
        let newly = db.write(|tx| tx.pause_queue(queue, reason, now))?;
        let live = db
            .stats(now)?
            .queues
            .get(queue)
            .map(|q| q.states.get("running").copied().unwrap_or(0))
            .unwrap_or(0);
        if self.json {
            return print_json(
                out,
                &json!({"queue": queue, "paused": true, "already_paused": !newly, "running": live}),
            );
        }
        let queue = safe_text::escape(queue);
        say(
            out,
            &if newly {
                format!("queue {queue} paused: nothing new is claimed from it; {live} running job(s) finish (jobctl resume {queue})")
            } else {
                format!("queue {queue} was paused already")
            },
        )
    }

    pub(super) fn resume(&self, queue: &str, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        let was = db.write(|tx| tx.resume_queue(queue))?;
        if self.json {
            return print_json(out, &json!({"queue": queue, "resumed": was}));
        }
        let queue = safe_text::escape(queue);
        if was {
            say(out, &format!("queue {queue} resumed"))
        } else {
            Err(CtlError::NotFound(format!("queue {queue} is not paused")))
        }
    }

    pub(super) fn stats(&self, args: StatsArgs, out: &mut dyn Write) -> CtlResult {
        let format = match (args.format, self.json) {
            (Some(format), _) => format,
            (None, true) => StatsFormat::Json,
            (None, false) => StatsFormat::Text,
        };
        let db = self.open()?;
        if format == StatsFormat::Prometheus {
            let metrics = crate::metrics::DbMetrics::read(
                db.as_ref(),
                &self.config.daemon.data_dir,
                &self.config.destination_limits(),
                self.now,
            )?;
            return write!(out, "{}", crate::metrics::render(&metrics, None)).map_err(output_error);
        }
        let stats = db.stats(self.now)?;
        let pending = db.pending_folders()?;
        let not_taken = crate::ingest::report::read(&self.config.daemon.data_dir);
        if format == StatsFormat::Json {
            let mut value = serde_json::to_value(&stats).expect("stats serialize");
            value["incomplete_folders"] =
                serde_json::to_value(&pending).expect("folders serialize");
            value["not_taken_in"] = serde_json::to_value(&not_taken).expect("problems serialize");
            return print_json(out, &value);
        }
        // CLAIMED (held for a worker, not started) comes right before RUNNING.
        let mut header = vec!["QUEUE".to_string()];
        for s in JobState::ALL {
            if s == JobState::Running {
                header.push("CLAIMED".into());
            }
            header.push(s.as_str().to_uppercase());
        }
        header.push("OLDEST READY".into());
        header.push("PAUSED".into());
        let mut rows = vec![header];
        for (queue, q) in &stats.queues {
            let mut row = vec![queue.clone()];
            for s in JobState::ALL {
                if s == JobState::Running {
                    row.push(q.claimed.to_string());
                }
                row.push(q.states.get(s.as_str()).copied().unwrap_or(0).to_string());
            }
            row.push(
                q.oldest_ready_age_ms
                    .map(short_duration)
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(match q.paused_at {
                Some(at) => format!("since {}", format_millis(at)),
                None => "-".into(),
            });
            rows.push(row);
        }
        if stats.queues.is_empty() {
            say(out, "no jobs")?;
        } else {
            write_table(out, &rows)?;
        }
        if !pending.is_empty() {
            say(out, "")?;
            let mut rows = vec![vec![
                "INCOMPLETE FOLDER".to_string(),
                "WAITING".into(),
                "MISSING".into(),
            ]];
            for p in &pending {
                rows.push(vec![
                    format!("{}/{}", p.watch, p.folder),
                    short_duration(self.now - p.first_seen),
                    if p.missing.is_empty() {
                        "(settling)".into()
                    } else {
                        p.missing.join(", ")
                    },
                ]);
            }
            write_table(out, &rows)?;
        }
        if !not_taken.is_empty() {
            // Written by the daemon's watchers (src/ingest/report.rs); names are escaped.
            say(out, "")?;
            say(out, "not taken in from watched folders:")?;
            for p in &not_taken {
                say(
                    out,
                    &format!(
                        "  {} (for {}): {}",
                        crate::job::preview(&p.path),
                        humantime::format_duration(std::time::Duration::from_secs(
                            ((self.now - p.since).max(0) / 1000) as u64,
                        )),
                        crate::logging::escape_controls(&p.problem)
                    ),
                )?;
            }
        }
        say(out, "")?;
        for (label, counts) in [
            ("last minute", &stats.finished_last_minute),
            ("last hour", &stats.finished_last_hour),
        ] {
            say(
                out,
                &format!(
                    "finished in the {label}: {} succeeded, {} dead, {} cancelled",
                    counts.get("succeeded").unwrap_or(&0),
                    counts.get("dead").unwrap_or(&0),
                    counts.get("cancelled").unwrap_or(&0)
                ),
            )?;
        }
        Ok(())
    }

    pub(super) fn backup(&self, args: BackupArgs, out: &mut dyn Write) -> CtlResult {
        if !args.force && args.path.exists() {
            return Err(CtlError::Failure(format!(
                "{} already exists; pass --force to replace it",
                args.path.display()
            )));
        }
        let db = self.open()?;
        let started = std::time::Instant::now();
        let info = Self::sqlite_file(db.as_ref(), "backup")?.backup_to(&args.path, args.force)?;
        if self.json {
            return print_json(
                out,
                &json!({
                    "path": info.path,
                    "bytes": info.bytes,
                    "jobs": info.jobs,
                    "schema_version": info.schema_version,
                }),
            );
        }
        say(
            out,
            &format!(
                "backed up {} to {}: {}, {} job(s), schema version {}, in {:.1}s",
                self.database.display(),
                info.path.display(),
                format_bytes(info.bytes),
                info.jobs,
                info.schema_version,
                started.elapsed().as_secs_f64()
            ),
        )
    }

    pub(super) fn vacuum(&self, out: &mut dyn Write) -> CtlResult {
        let store = self.open()?;
        let db = Self::sqlite_file(store.as_ref(), "vacuum")?;
        let before = db.file_size() + db.wal_size();
        db.vacuum()?;
        let after = db.file_size() + db.wal_size();
        if self.json {
            return print_json(out, &json!({"bytes_before": before, "bytes_after": after}));
        }
        say(
            out,
            &format!(
                "vacuumed {}: {} before, {} after",
                self.database.display(),
                format_bytes(before),
                format_bytes(after)
            ),
        )
    }

    pub(super) fn purge(&self, args: PurgeArgs, out: &mut dyn Write) -> CtlResult {
        let state: JobState = args.state.parse().map_err(CtlError::Usage)?;
        if !state.is_terminal() {
            return Err(CtlError::Usage(format!(
                "--state: only finished jobs can be purged (succeeded, dead, cancelled), not {state}"
            )));
        }
        let age = parse_duration(&args.older_than)
            .map_err(|e| CtlError::Usage(format!("--older-than: {e}")))?;
        let cutoff = self.now - age.as_millis() as i64;
        let mut db = self.open()?;
        let mut total = 0;
        loop {
            let deleted = db.write(|tx| tx.purge_finished(state, cutoff, 5000))?;
            total += deleted;
            if deleted == 0 {
                break;
            }
        }
        if self.json {
            return print_json(out, &json!({"purged": total}));
        }
        say(
            out,
            &format!(
                "purged {total} {state} job(s) finished before {}",
                self.style.time(cutoff)
            ),
        )
    }

    pub(super) fn copy(&self, args: CopyArgs, out: &mut dyn Write) -> CtlResult {
        let url = match crate::dburl::postgres_url_of(Path::new(&args.to)) {
            Some(url) => url.map_err(|e| CtlError::Usage(e.replace("daemon.database", "--to")))?,
            None => {
                return Err(CtlError::Usage(
                    "--to: give the PostgreSQL database as a postgresql:// URL".into(),
                ))
            }
        };
        let source = self.open()?;
        if source.sqlite().is_none() {
            return Err(CtlError::Usage(format!(
                "jobctl copy copies from a SQLite database; {} is not one",
                self.database.display()
            )));
        }
        let target = crate::store::postgres::PgStore::open(
            &url,
            crate::store::postgres::process_options(true),
        )?;
        let report = target.import(&*source)?;
        if self.json {
            return print_json(
                out,
                &json!({"from": self.database, "to": url.to_string(), "copied": report}),
            );
        }
        say(
            out,
            &format!(
                "copied {} job(s), {} attempt(s), {} sync state(s) and {} paused queue(s) from {} to {url}",
                report.jobs,
                report.attempts,
                report.sync_states,
                report.paused_queues,
                self.database.display()
            ),
        )
    }

    pub(super) fn migrate(&self, out: &mut dyn Write) -> CtlResult {
        let db = crate::store::open(
            &self.database,
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )?;
        let version = db.schema_version()?;
        if self.json {
            return print_json(
                out,
                &json!({"database": self.database, "schema_version": version}),
            );
        }
        say(
            out,
            &format!("{}: schema version {version}", self.database.display()),
        )
    }

    pub(super) fn check(&self, out: &mut dyn Write) -> CtlResult {
        let problems = self.config.check_host();
        if !problems.is_empty() {
            return Err(CtlError::Failure(format!(
                "config {}: {}",
                self.source.describe(),
                problems
            )));
        }
        // Before the first start there is no database yet: the config alone is checked,
        // so `jobctl check` works as a pre-deploy check.
        let on_postgres = crate::dburl::postgres_url_of(&self.database).is_some();
        if !on_postgres && !self.database.exists() {
            if self.json {
                return print_json(
                    out,
                    &json!({
                        "config": {"source": self.source.describe(), "ok": true},
                        "database": {"path": self.database, "exists": false},
                    }),
                );
            }
            say(out, &format!("config {}: ok", self.source.describe()))?;
            return say(
                out,
                &format!(
                    "database {}: does not exist yet; checked the config only (jobd creates the database at its first start)",
                    self.database.display()
                ),
            );
        }
        if !self.json {
            say(out, &format!("config {}: ok", self.source.describe()))?;
        }
        let db = self.open()?;
        // A driver without a database file has no integrity check of its own to ask; the
        // operator is told so rather than left to read "ok" as "checked".
        let integrity = match db.sqlite() {
            Some(file) => {
                let problems: Vec<String> = file
                    .integrity_check()?
                    .into_iter()
                    .filter(|l| l != "ok")
                    .collect();
                if !problems.is_empty() {
                    return Err(CtlError::Database(format!(
                        "database {} failed its integrity check: {}",
                        self.database.display(),
                        problems.join("; ")
                    )));
                }
                "ok"
            }
            None => NO_INTEGRITY_CHECK,
        };
        let version = db.schema_version()?;
        if self.json {
            return print_json(
                out,
                &json!({
                    "config": {"source": self.source.describe(), "ok": true},
                    "database": {"path": self.database, "ok": true, "schema_version": version,
                                 "integrity_check": integrity},
                }),
            );
        }
        let integrity = match db.sqlite() {
            Some(_) => String::new(),
            None => format!("; integrity check {integrity}"),
        };
        say(
            out,
            &format!(
                "database {}: ok (schema version {version}{integrity})",
                self.database.display(),
            ),
        )
    }
}

/// What `jobctl check` says of the integrity check on a database that is not a file of
/// jobd's own (PostgreSQL).
const NO_INTEGRITY_CHECK: &str =
    "not run: PostgreSQL checks its own storage (pg_amcheck); connection and schema checked";

impl Ctl {
    pub(super) fn top(&self, out: &mut dyn Write, clock: &dyn Clock) -> CtlResult {
        let db = self.open()?;
        let title = format!("jobd {}", self.database.display());
        if self.json {
            let snapshot = crate::top::Snapshot::read(db.as_ref(), self.now)?;
            return print_json(
                out,
                &json!({
                    "at": snapshot.at,
                    "stats": snapshot.stats,
                    "running": snapshot.running,
                    "recent_deaths": snapshot.deaths,
                    "held_destinations": snapshot.held,
                }),
            );
        }
        if self.style.terminal {
            crate::top::run_live(db.as_ref(), self.style, &title, clock)
        } else {
            let snapshot = crate::top::Snapshot::read(db.as_ref(), self.now)?;
            for line in crate::top::snapshot_lines(&snapshot, &self.style, &title) {
                say(out, &line)?;
            }
            Ok(())
        }
    }

    pub(super) fn manpage(&self, dir: Option<PathBuf>, out: &mut dyn Write) -> CtlResult {
        let Some(dir) = dir else {
            return crate::manual::manpage(out)
                .map_err(|e| CtlError::Failure(format!("cannot write output: {e}")));
        };
        let written = crate::manual::manpages_to(&dir)
            .map_err(|e| CtlError::Failure(format!("cannot write into {}: {e}", dir.display())))?;
        if self.json {
            return print_json(out, &json!({ "written": written }));
        }
        say(
            out,
            &format!("wrote {} man page(s) into {}", written.len(), dir.display()),
        )
    }

    pub(super) fn sync_state(&self, args: SyncStateArgs, out: &mut dyn Write) -> CtlResult {
        let mut db = self.open()?;
        if let Some(name) = args.reset {
            let declared = self.config.pipelines.get(&name);
            let had = db.write(|tx| tx.reset_sync_state(&name))?;
            if declared.is_none() && !had {
                return Err(CtlError::NotFound(format!(
                    "pipeline '{name}' is neither declared in the config nor has a sync state"
                )));
            }
            // A run in progress records its mark when it ends, undoing the reset.
            let live = match declared {
                Some(p) => db.live_pipeline_jobs(p.job_kind(), &name)?,
                None => 0,
            };
            if self.json {
                return print_json(
                    out,
                    &json!({"reset": name, "had_state": had, "live_jobs": live}),
                );
            }
            say(
                out,
                &if had {
                    format!("{name}: sync state reset; its next run is a full sync")
                } else {
                    format!("{name}: had no sync state; its next run is a full sync")
                },
            )?;
            if live > 0 {
                say(out, &format!("warning: {live} job(s) of a run of {name} are still live; when that run ends it records its mark again (reset after it ends)"))?;
            }
            return Ok(());
        }
        let states = db.sync_states()?;
        if self.json {
            return print_json(
                out,
                &serde_json::to_value(&states).expect("sync states serialize"),
            );
        }
        let mut rows = vec![vec![
            "PIPELINE".to_string(),
            "HIGH WATER".into(),
            "RUNS".into(),
            "LAST RUN ITEMS".into(),
            "PAGES".into(),
            "RECORDED".into(),
        ]];
        for s in &states {
            rows.push(vec![
                s.pipeline.clone(),
                format_millis(s.high_water),
                s.runs.to_string(),
                s.last_run_items.to_string(),
                s.last_run_pages.to_string(),
                format_millis(s.updated_at),
            ]);
        }
        // Declared pipelines that never completed a run: their next run is a full sync.
        for name in self.config.pipelines.keys() {
            if !states.iter().any(|s| &s.pipeline == name) {
                rows.push(vec![
                    name.clone(),
                    "- (full sync next)".into(),
                    "0".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        if rows.len() == 1 {
            return say(out, "no pipelines have synced");
        }
        write_table(out, &rows)
    }
}

pub(super) fn format_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}
