//! The store's domain types beside `Job` and `NewJob`: what enqueues, claims and
//! completions return, the operator's filters and counts, ingest records, pauses,
//! progress and sync state. Driver-neutral: no driver's row types appear here.

use crate::job::{JobId, JobState, NewJob, SyncMark, UnixMillis};
use serde::Serialize;
use std::collections::BTreeMap;

/// The result of enqueuing one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Enqueued {
    pub id: JobId,
    /// A job with the same unique key already existed; `id` is that job's.
    pub duplicate: bool,
}

/// What a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The job moved to this state.
    Moved(JobState),
    /// The job was no longer this attempt's (its lease ran out and it moved on, or an
    /// operator acted): nothing changed.
    Stale,
}

/// How many jobs to claim, overall and per limited queue.
#[derive(Debug, Clone, Default)]
pub struct ClaimSpec {
    pub limit: usize,
    /// Queues with a concurrency limit and how many more of each may be claimed now.
    /// Queues not named here are bounded by `limit` alone.
    pub limited_queues: Vec<(String, usize)>,
    /// The limits of destinations that have any (rate, in flight): their tokens and room
    /// bound the claim across every daemon. Others are bounded by the queues alone.
    pub destinations: Vec<crate::flow::DestinationLimit>,
}

/// What a claim took, and when a destination it had to leave rows of gets its next
/// token (the dispatcher looks again then).
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub jobs: Vec<crate::job::Job>,
    pub wake_at: Option<UnixMillis>,
}

/// A destination's hold as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationHold {
    pub destination: String,
    pub flow_key: String,
    pub until: UnixMillis,
    pub held_at: Option<UnixMillis>,
    pub status: Option<u16>,
    pub reason: Option<String>,
}

impl ClaimSpec {
    /// Claims nothing from these queues (paused ones): each is bounded to no room, so the
    /// claim's per-queue exclusion (`queue NOT IN (...)`) leaves their rows alone.
    pub fn exclude(&mut self, queues: &[String]) {
        for queue in queues {
            match self.limited_queues.iter_mut().find(|(q, _)| q == queue) {
                Some((_, room)) => *room = 0,
                None => self.limited_queues.push((queue.clone(), 0)),
            }
        }
    }
}

/// What the row of a running job says about the claim holding it, for deciding whether
/// its handler started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldClaim {
    pub id: JobId,
    /// The attempt the claim reserved.
    pub attempt: u32,
    /// The claiming daemon's number for the claim; None if it was claimed without one
    /// (by a jobd older than schema 4, or outside the daemon).
    pub claim: Option<i64>,
    /// When the handler started, once the daemon has recorded it.
    pub started_at: Option<UnixMillis>,
}

/// One attempt of a job, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at: UnixMillis,
    pub finished_at: UnixMillis,
    pub duration_ms: i64,
    pub outcome: String,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Which jobs `list` shows, newest first (and which jobs a bulk action picks).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub parent_id: Option<JobId>,
    /// `last_error` contains this text.
    pub error_contains: Option<String>,
    /// The payload's JSON text contains this text.
    pub payload_contains: Option<String>,
    /// Created at or after this time.
    pub created_since: Option<UnixMillis>,
    /// Created before this time.
    pub created_until: Option<UnixMillis>,
    /// Keyset paging: only ids below this one (the next page of a newest-first list).
    pub before_id: Option<JobId>,
    pub limit: usize,
}

/// Counts for one queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// Jobs per state; states with none are left out. `running` counts only jobs whose
    /// handler runs.
    pub states: BTreeMap<String, u64>,
    /// Jobs claimed ahead for a worker (state `running`, handler not started yet).
    pub claimed: u64,
    /// How long the longest-waiting ready job has been due, in milliseconds.
    pub oldest_ready_age_ms: Option<i64>,
    /// Paused by an operator (`jobctl pause`): nothing new is claimed from it.
    pub paused: bool,
    /// Since when it is paused.
    pub paused_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub queues: BTreeMap<String, QueueStats>,
    /// Jobs that reached each terminal state in the last minute and the last hour.
    pub finished_last_minute: BTreeMap<String, u64>,
    pub finished_last_hour: BTreeMap<String, u64>,
}

impl Stats {
    /// Jobs claimed ahead (state `running`, handler not started), over all queues.
    pub fn claimed(&self) -> u64 {
        self.queues.values().map(|q| q.claimed).sum()
    }

    /// Jobs in `state` over all queues; for `running`, only those whose handler runs.
    pub fn total(&self, state: JobState) -> u64 {
        self.queues
            .values()
            .filter_map(|q| q.states.get(state.as_str()))
            .sum()
    }
}

/// A file (or folder set) taken in from a watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    /// The staging name the watcher gave it before it left the input folder.
    pub token: String,
    /// The watched folder it came from.
    pub watch: String,
    /// Its name in that folder.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// A folder set still waiting for required files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingFolder {
    pub watch: String,
    pub folder: String,
    pub first_seen: UnixMillis,
    pub missing: Vec<String>,
}

/// A job a worker runs now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub worker: Option<String>,
    /// Which attempt this is.
    pub attempt: u32,
    /// When the current attempt was claimed: the claim sets `updated_at` and the
    /// heartbeat leaves it alone (a cancel request moves it too).
    pub since: UnixMillis,
    pub lease_until: Option<UnixMillis>,
    /// When its handler started, once the daemon recorded it; None while the job is only
    /// claimed ahead for a worker.
    pub started_at: Option<UnixMillis>,
}

/// A job that died, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Death {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub finished_at: UnixMillis,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A queue an operator paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuePause {
    pub queue: String,
    pub paused_at: UnixMillis,
    pub reason: Option<String>,
}

/// What a handler reported during one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptProgress {
    pub attempt: u32,
    pub progress: serde_json::Value,
    pub updated_at: UnixMillis,
}

/// A fan-out job's children at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChildrenSummary {
    pub total: u64,
    /// Children per state; states with none are left out.
    pub states: BTreeMap<String, u64>,
    /// How many have finished (succeeded, dead or cancelled).
    pub finished: u64,
    /// When the first child was created and the last one finished.
    pub first_created_at: Option<UnixMillis>,
    pub last_finished_at: Option<UnixMillis>,
}

/// One pipeline's row of `sync_state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncState {
    pub pipeline: String,
    /// The start of the last complete run: the next run asks for changes since then.
    pub high_water: UnixMillis,
    pub runs: u64,
    pub last_run_items: u64,
    pub last_run_pages: u32,
    pub last_run_job: Option<JobId>,
    pub updated_at: UnixMillis,
}

/// Whose follow-ups are being inserted, so a child's `parent_id` is set without copying
/// the job (a relay batch's thousands of deliveries would otherwise be cloned).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ParentLink {
    /// Plain enqueue: the job's own `parent_id`.
    AsGiven,
    /// A follow-up: the parent it names, else this one.
    Default(JobId),
    /// A child its parent waits for: always this parent.
    Always(JobId),
}

impl ParentLink {
    pub(crate) fn parent_of(self, job: &NewJob) -> Option<JobId> {
        match self {
            ParentLink::AsGiven => job.parent_id,
            ParentLink::Default(parent) => job.parent_id.or(Some(parent)),
            ParentLink::Always(parent) => Some(parent),
        }
    }
}

/// Checks every job of an enqueue before any is written, so a refused batch names the
/// job's field, the same in every driver.
pub(crate) fn validate_all(jobs: &[NewJob]) -> Result<(), super::StoreError> {
    for job in jobs {
        job.validate()
            .map_err(|e| super::StoreError::InvalidJob(e.to_string()))?;
    }
    Ok(())
}

/// A sync mark's item count as the database keeps it (a signed 64-bit integer), after
/// checking the mark names its pipeline: refused in words otherwise, the same in every
/// driver, rather than wrapped round to a negative count.
pub(crate) fn stored_items(mark: &SyncMark) -> Result<i64, super::StoreError> {
    if mark.pipeline.is_empty() {
        return Err(super::StoreError::InvalidJob(
            "a sync mark needs a pipeline".into(),
        ));
    }
    i64::try_from(mark.items).map_err(|_| {
        super::StoreError::InvalidJob(format!(
            "the sync mark of pipeline {:?} counts {} items, more than the store keeps ({})",
            mark.pipeline,
            mark.items,
            i64::MAX
        ))
    })
}
