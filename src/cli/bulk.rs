//! `jobctl retry`, `cancel` and `delete`: by ids, or every job a filter selects in
//! short transactions, with a dry run that counts and shows some unless `--yes`.

use super::jobs::{forbidden_as_failure, join_ids};
use super::*;

impl Ctl {
    pub(super) fn retry(&self, args: RetryArgs, out: &mut dyn Write) -> CtlResult {
        if args.dead || args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            let mut select = args.select;
            if args.dead {
                select.filter.state = Some(JobState::Dead);
                select.yes = true;
            }
            return self.bulk(Bulk::Retry, &select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("retry"));
        }
        let mut db = self.open()?;
        let now = self.now;
        let spool = Spool::at(&self.config.daemon.data_dir).ok();
        // Inputs come back to the spool before the jobs are queued, so no worker runs a
        // job whose file is still in failed/; put back if the retry fails.
        let restored: Vec<_> = spool
            .iter()
            .flat_map(|spool| {
                args.ids
                    .iter()
                    .filter_map(|id| restore_input(spool, *id).map(|from| (*id, from)))
            })
            .collect();
        let ids = db.write(|tx| tx.revive(&args.ids, now)).map_err(|e| {
            if let Some(spool) = &spool {
                for (id, from) in &restored {
                    let _ = spool.return_failed(*id, from);
                }
            }
            forbidden_as_failure(e)
        })?;
        if self.json {
            return print_json(out, &json!({"retried": ids}));
        }
        say(
            out,
            &format!("{} job(s) queued again: {}", ids.len(), join_ids(&ids)),
        )
    }

    pub(super) fn cancel(&self, args: CancelArgs, out: &mut dyn Write) -> CtlResult {
        if args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            return self.bulk(Bulk::Cancel, &args.select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("cancel"));
        }
        let ids = args.ids;
        let mut db = self.open()?;
        let now = self.now;
        let states = db
            .write(|tx| {
                ids.iter()
                    .map(|id| tx.cancel(*id, now).map(|s| (*id, s)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(forbidden_as_failure)?;
        if self.json {
            let list: Vec<Value> = states
                .iter()
                .map(|(id, s)| json!({"id": id, "state": s, "stop_requested": *s == JobState::Running}))
                .collect();
            return print_json(out, &json!({"cancelled": list}));
        }
        for (id, state) in states {
            if state == JobState::Running {
                say(out, &format!("{id}: running; asked to stop"))?;
            } else {
                say(out, &format!("{id}: cancelled"))?;
            }
        }
        Ok(())
    }

    pub(super) fn delete(&self, args: DeleteArgs, out: &mut dyn Write) -> CtlResult {
        if args.select.filter.any() {
            if !args.ids.is_empty() {
                return Err(ids_or_filter());
            }
            return self.bulk(Bulk::Delete, &args.select, out);
        }
        if args.ids.is_empty() {
            return Err(name_the_jobs("delete"));
        }
        let mut db = self.open()?;
        let ids = args.ids;
        let deleted = db.write(|tx| {
            for id in &ids {
                let state = tx.get(*id)?.state;
                if !JobState::DELETABLE.contains(&state) {
                    return Err(StoreError::InvalidJob(format!(
                        "job {id} is {state}; cannot delete it (allowed from: {}){}",
                        JobState::DELETABLE.map(JobState::as_str).join(", "),
                        if state == JobState::Running || state == JobState::Waiting {
                            "; cancel it first"
                        } else {
                            ""
                        }
                    )));
                }
            }
            tx.delete_where_allowed(&ids)
        });
        let deleted = deleted.map_err(|e| match e {
            StoreError::InvalidJob(m) => CtlError::Failure(m.replace("invalid job: ", "")),
            other => other.into(),
        })?;
        if self.json {
            return print_json(out, &json!({"deleted": deleted}));
        }
        say(
            out,
            &format!("{deleted} job(s) deleted: {}", join_ids(&ids)),
        )
    }

    /// A bulk action on every job the filter picks: a dry run by default (how many match,
    /// how many the action applies to, a sample), with `--yes` the action itself, in
    /// chunks of [`BULK_CHUNK`] ids, each one short write transaction.
    pub(super) fn bulk(&self, action: Bulk, select: &SelectArgs, out: &mut dyn Write) -> CtlResult {
        let filter = self.job_filter(&select.filter)?;
        let states = action.states();
        let mut db = self.open()?;
        if !select.yes {
            let counts = db.count_matching(&filter)?;
            let matching: u64 = counts.values().sum();
            let applies: u64 = counts
                .iter()
                .filter(|(s, _)| states.contains(s))
                .map(|(_, n)| n)
                .sum();
            let sample = db.list(&JobFilter {
                limit: BULK_SAMPLE,
                ..filter.clone()
            })?;
            if self.json {
                let per_state: BTreeMap<&str, u64> =
                    counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
                return print_json(
                    out,
                    &json!({"dry_run": true, "action": action.verb(), "matching": matching,
                            "would_act_on": applies, "states": per_state, "sample": sample}),
                );
            }
            let others: Vec<String> = counts
                .iter()
                .filter(|(s, _)| !states.contains(s))
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            say(
                out,
                &format!(
                    "dry run: {matching} job(s) match; {applies} would be {}{}",
                    action.done(),
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (left alone: {}; {} applies to {})",
                            others.join(", "),
                            action.verb(),
                            states
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            )?;
            if !sample.is_empty() {
                let mut rows = vec![vec![
                    "ID".to_string(),
                    "STATE".into(),
                    "KIND".into(),
                    "QUEUE".into(),
                    "CREATED".into(),
                    "LAST ERROR".into(),
                ]];
                for job in &sample {
                    rows.push(vec![
                        job.id.to_string(),
                        job.state.to_string(),
                        job.kind.clone(),
                        job.queue.clone(),
                        self.style.ago(job.created_at),
                        job.last_error.clone().unwrap_or_default(),
                    ]);
                }
                write_table(out, &rows)?;
            }
            return say(out, "nothing changed; add --yes to act");
        }
        let now = self.now;
        let spool = Spool::at(&self.config.daemon.data_dir).ok();
        let mut acted: Vec<JobId> = Vec::new();
        let mut asked_to_stop = 0;
        let mut after = 0;
        loop {
            let chunk = db.matching_ids(&filter, states, after, BULK_CHUNK)?;
            let Some(&last) = chunk.last() else {
                break;
            };
            after = last;
            match action {
                Bulk::Retry => {
                    let revived = db.write(|tx| tx.revive_where_allowed(&chunk, now))?;
                    // After the commit, as `retry --dead` always did: a daemon that claims
                    // one first finds no file yet and retries it after its backoff.
                    if let Some(spool) = &spool {
                        for id in &revived {
                            restore_input(spool, *id);
                        }
                    }
                    acted.extend(revived);
                }
                Bulk::Cancel => {
                    let done = db.write(|tx| {
                        let mut done = Vec::new();
                        for id in &chunk {
                            match tx.cancel(*id, now) {
                                Ok(state) => done.push((*id, state)),
                                // Moved on since it was picked: left alone.
                                Err(StoreError::Forbidden(_) | StoreError::NotFound(_)) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(done)
                    })?;
                    asked_to_stop += done.iter().filter(|(_, s)| *s == JobState::Running).count();
                    acted.extend(done.into_iter().map(|(id, _)| id));
                }
                Bulk::Delete => {
                    let deleted = db.write(|tx| {
                        let n = tx.delete_where_allowed(&chunk)?;
                        Ok(n)
                    })?;
                    // Ids are not needed for deletes; count them.
                    acted.extend(std::iter::repeat_n(0, deleted));
                }
            }
        }
        if self.json {
            let mut value = json!({"action": action.verb(), "count": acted.len()});
            match action {
                Bulk::Retry => value["retried"] = json!(acted),
                Bulk::Cancel => {
                    value["cancelled"] = json!(acted);
                    value["asked_to_stop"] = json!(asked_to_stop);
                }
                Bulk::Delete => value["deleted"] = json!(acted.len()),
            }
            return print_json(out, &value);
        }
        match action {
            Bulk::Retry => say(
                out,
                &format!(
                    "{} job(s) queued again: {}",
                    acted.len(),
                    join_some_ids(&acted)
                ),
            ),
            Bulk::Cancel => say(
                out,
                &format!(
                    "{} job(s) cancelled ({asked_to_stop} of them running: asked to stop): {}",
                    acted.len(),
                    join_some_ids(&acted)
                ),
            ),
            Bulk::Delete => say(out, &format!("{} job(s) deleted", acted.len())),
        }
    }
}

/// Brings a dead job's input back from failed/ to the spool, saying so on stderr.
pub(super) fn restore_input(spool: &Spool, id: JobId) -> Option<PathBuf> {
    match spool.restore_failed(id) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("jobctl: cannot bring job {id}'s input back to the spool: {e}");
            None
        }
    }
}

/// Ids per write transaction of a bulk action: each one short, so the daemon's writer
/// never waits long.
const BULK_CHUNK: usize = 1000;

/// Jobs a bulk action's dry run shows.
const BULK_SAMPLE: usize = 10;

/// The bulk actions and the states each applies to, from `job.rs`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bulk {
    Retry,
    Cancel,
    Delete,
}

impl Bulk {
    pub(super) fn states(self) -> &'static [JobState] {
        match self {
            Bulk::Retry => crate::job::Transition::Revive.from_states(),
            Bulk::Cancel => crate::job::Transition::Cancel.from_states(),
            Bulk::Delete => &JobState::DELETABLE,
        }
    }

    pub(super) fn done(self) -> &'static str {
        match self {
            Bulk::Retry => "retried",
            Bulk::Cancel => "cancelled",
            Bulk::Delete => "deleted",
        }
    }

    pub(super) fn verb(self) -> &'static str {
        match self {
            Bulk::Retry => "retry",
            Bulk::Cancel => "cancel",
            Bulk::Delete => "delete",
        }
    }
}

pub(super) fn name_the_jobs(verb: &str) -> CtlError {
    CtlError::Usage(format!(
        "name the jobs to {verb}: ids, or a filter (--state, --kind, --queue, --error-contains, --since, --until)"
    ))
}

pub(super) fn ids_or_filter() -> CtlError {
    CtlError::Usage("give either job ids or filter flags, not both".into())
}

/// The first ids of a long list, and how many more.
pub(super) fn join_some_ids(ids: &[JobId]) -> String {
    const SHOWN: usize = 20;
    if ids.len() <= SHOWN {
        join_ids(ids)
    } else {
        format!(
            "{}, ... ({} more)",
            join_ids(&ids[..SHOWN]),
            ids.len() - SHOWN
        )
    }
}
