//! The job domain: what a job is, the states it moves through, the transitions between
//! them and what a handler reports. The state machine lives here and only here; the store
//! builds its guarded updates from [`Transition::from_states`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// A job's id: the `jobs.id` rowid.
pub type JobId = i64;

/// Milliseconds since the Unix epoch, UTC. Every stored time uses it.
pub type UnixMillis = i64;

/// The queue a job lands in when nobody names one.
pub const DEFAULT_QUEUE: &str = "default";

/// Where a job stands. Each state says who moves a job out of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for `run_at`. The dispatcher claims it ([`Transition::Claim`]); an operator
    /// may cancel it.
    Queued,
    /// Claimed by a worker and holding a lease. The completer moves it on with the
    /// handler's outcome; the reaper rescues it when its lease runs out; a draining daemon
    /// releases it back to `queued` without charging the attempt.
    Running,
    /// Its last attempt failed with a retryable error; waiting out its backoff until
    /// `run_at`. The dispatcher claims it again; an operator may cancel it.
    Retrying,
    /// Its handler did its part and enqueued children; it waits for every one of them to
    /// finish. Whoever finishes the last child moves it back to `queued`
    /// ([`Transition::Resume`]) so its handler can sum up (fan-in); an operator may cancel it.
    Waiting,
    /// Done. Terminal; the reaper purges it after the retention period.
    Succeeded,
    /// The dead-letter box: a permanent error, attempts exhausted or deadline passed.
    /// Terminal until an operator retries it (`jobctl retry`).
    Dead,
    /// Cancelled by an operator. Terminal until an operator retries it.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Waiting,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Waiting => "waiting",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The states an operator may delete a job in (`jobctl delete`). Not `running`: its
    /// handler is working and its outcome would find no row, so the work would be done
    /// with no record. Not `waiting`: its children are live and would lose their fan-in;
    /// cancel it first.
    pub const DELETABLE: [JobState; 5] = [
        JobState::Queued,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Terminal states carry `finished_at` and wait for an operator or the reaper.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state '{s}' (expected one of: {})",
                    JobState::ALL.map(JobState::as_str).join(", ")
                )
            })
    }
}

/// Every way a job may change state, named by what happens to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The dispatcher takes a ready job for a worker (`queued | retrying -> running`).
    Claim,
    /// The handler succeeded (`running -> succeeded`).
    Complete,
    /// A retryable failure with attempts and time left (`running -> retrying`).
    RetryLater,
    /// A permanent failure, exhausted attempts or a passed deadline (`running -> dead`).
    Kill,
    /// A lease ran out: the worker or the daemon died (`running -> retrying`, charged).
    RescueExpired,
    /// A draining daemon gives back a job it did not finish (`running -> queued`, uncharged).
    Release,
    /// An operator cancels a waiting job, or a running job stops on request.
    Cancel,
    /// An operator sends a dead or cancelled job round again (`-> queued`, attempts reset).
    Revive,
    /// The handler enqueued children and waits for them (`running -> waiting`).
    Await,
    /// The last child finished: the parent runs again to sum up (`waiting -> queued`,
    /// with a fresh attempt budget and its stage counted up).
    Resume,
    /// An operator ends a job's wait (`jobctl run-now`): a delayed or retrying job is
    /// queued due now (`queued | retrying -> queued`), its attempts kept.
    RunNow,
    /// A job dead from birth (`queued -> dead`, never attempted): ingest enqueued it in
    /// the same transaction and buries it there, e.g. a folder set that never became
    /// complete, so it lands in the dead-letter box naming why instead of running.
    BuryUnborn,
}

impl Transition {
    pub const ALL: [Transition; 12] = [
        Transition::Claim,
        Transition::Complete,
        Transition::RetryLater,
        Transition::Kill,
        Transition::RescueExpired,
        Transition::Release,
        Transition::Cancel,
        Transition::Revive,
        Transition::Await,
        Transition::Resume,
        Transition::RunNow,
        Transition::BuryUnborn,
    ];

    /// The states a job may be in for this transition to apply.
    pub fn from_states(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Transition::Claim | Transition::RunNow => &[Queued, Retrying],
            Transition::Complete
            | Transition::RetryLater
            | Transition::Kill
            | Transition::RescueExpired
            | Transition::Release
            | Transition::Await => &[Running],
            Transition::Cancel => &[Queued, Retrying, Running, Waiting],
            Transition::Revive => &[Dead, Cancelled],
            Transition::Resume => &[Waiting],
            Transition::BuryUnborn => &[Queued],
        }
    }

    /// The state the job is in afterwards. A lease rescue may also kill a job whose
    /// attempts are spent; that is [`Transition::Kill`].
    pub fn to_state(self) -> JobState {
        match self {
            Transition::Claim => JobState::Running,
            Transition::Complete => JobState::Succeeded,
            Transition::RetryLater | Transition::RescueExpired => JobState::Retrying,
            Transition::Kill | Transition::BuryUnborn => JobState::Dead,
            Transition::Release | Transition::Revive | Transition::Resume | Transition::RunNow => {
                JobState::Queued
            }
            Transition::Cancel => JobState::Cancelled,
            Transition::Await => JobState::Waiting,
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Transition::Claim => "claim",
            Transition::Complete => "complete",
            Transition::RetryLater => "retry later",
            Transition::Kill => "kill",
            Transition::RescueExpired => "rescue",
            Transition::Release => "release",
            Transition::Cancel => "cancel",
            Transition::Revive => "retry",
            Transition::Await => "wait",
            Transition::Resume => "resume",
            Transition::RunNow => "expedite",
            Transition::BuryUnborn => "bury",
        }
    }

    pub fn allows(self, from: JobState) -> bool {
        self.from_states().contains(&from)
    }

    /// Checks that `from` allows this transition, naming both when it does not.
    pub fn check(self, id: JobId, from: JobState) -> Result<JobState, ForbiddenTransition> {
        if self.allows(from) {
            Ok(self.to_state())
        } else {
            Err(ForbiddenTransition {
                id,
                from,
                transition: self,
            })
        }
    }
}

/// A transition asked of a job whose state does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {id} is {from}; cannot {verb} it (allowed from: {allowed})", verb = transition.verb(), allowed = transition.from_states().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
pub struct ForbiddenTransition {
    pub id: JobId,
    pub from: JobState,
    pub transition: Transition,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub state: JobState,
    pub priority: i64,
    pub attempts: u32,
    /// `None`: the retry policy of the job's kind decides.
    pub max_attempts: Option<u32>,
    pub run_at: UnixMillis,
    pub lease_until: Option<UnixMillis>,
    pub worker: Option<String>,
    pub unique_key: Option<String>,
    pub parent_id: Option<JobId>,
    pub last_error: Option<String>,
    /// `None`: the retry policy of the job's kind decides.
    pub deadline_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub source: Option<String>,
    pub cancel_requested: bool,
    /// How many times it has waited for children and been resumed: 0 on its first run,
    /// 1 when it runs again after its children finished, and so on.
    pub stage: u32,
    /// Its destination (an `[endpoints.NAME]`) and the key splitting it (empty: none).
    pub destination: Option<String>,
    pub flow_key: String,
    pub order_key: Option<String>,
    /// Waits for an earlier job of its order key to finish.
    pub order_blocked: bool,
}

/// A job to be enqueued. Everything but `kind` has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i64,
    /// When it may first run; `None` is now.
    #[serde(default)]
    pub run_at: Option<UnixMillis>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub unique_key: Option<String>,
    #[serde(default)]
    pub deadline_at: Option<UnixMillis>,
    #[serde(default)]
    pub parent_id: Option<JobId>,
    /// Where it came from, for people: `jobctl`, `socket`, `watch:/path/file.csv`, ...
    #[serde(default)]
    pub source: Option<String>,
    /// The destination whose flow control it is under (an `[endpoints.NAME]`); derived
    /// by its kind at enqueue when not given ([`crate::flow::Router`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The part of the destination it belongs to (a shop, a storefront), when the
    /// endpoint is split by `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_key: Option<String>,
    /// Jobs with the same order key run one at a time, in enqueue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: Value) -> NewJob {
        NewJob {
            kind: kind.into(),
            payload,
            queue: default_queue(),
            priority: 0,
            run_at: None,
            max_attempts: None,
            unique_key: None,
            deadline_at: None,
            parent_id: None,
            source: None,
            destination: None,
            flow_key: None,
            order_key: None,
        }
    }

    pub fn order_key(mut self, key: impl Into<String>) -> Self {
        self.order_key = Some(key.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, at: UnixMillis) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Checks what the schema would refuse, so callers get a sentence instead of a
    /// constraint name.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        check_name("kind", &self.kind)?;
        check_name("queue", &self.queue)?;
        if self.max_attempts == Some(0) {
            return Err(InvalidJob::new(
                "max_attempts",
                "max_attempts must be at least 1",
            ));
        }
        if matches!(&self.unique_key, Some(k) if k.is_empty()) {
            return Err(InvalidJob::new(
                "unique_key",
                "unique_key must not be empty",
            ));
        }
        for (field, value) in [
            ("order_key", &self.order_key),
            ("destination", &self.destination),
        ] {
            if let Some(key) = value {
                crate::flow::check_key(field, key)?;
            }
        }
        Ok(())
    }
}

/// A field of a job (its queue, kind, keys, times) that cannot be accepted: which field,
/// and the sentence that says why, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidJob {
    /// The field at fault, as the caller named it (`queue`, `watch[0].queue`, `run_at`).
    pub field: String,
    message: String,
}

impl InvalidJob {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> InvalidJob {
        InvalidJob {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A payload field a job kind cannot run with, found before the job is enqueued (or when
/// it runs, for what can change meanwhile: a file replaced by a symlink). Another
/// attempt would fail the same way, so a job that has it is dead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    /// The payload field at fault (`method`, `multipart.file`, `follow_up`); empty when
    /// the payload as a whole is (it does not parse, or fields conflict).
    pub field: String,
    /// The whole sentence, starting with what is checked (`http payload: ...`).
    message: String,
}

impl PayloadError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PayloadError {
        PayloadError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error about the payload as a whole (it does not parse, fields conflict).
    pub fn whole(message: impl Into<String>) -> PayloadError {
        PayloadError::new("", message)
    }

    /// The same sentence, naming `field` as the one at fault (a check shared by several
    /// kinds names the field as its caller labelled it).
    pub fn for_field(self, field: &str) -> PayloadError {
        PayloadError::new(field, self.message)
    }

    /// The same error with `prefix` before its sentence (`http payload: follow_up: `).
    pub fn within(self, prefix: &str) -> PayloadError {
        PayloadError {
            field: self.field,
            message: format!("{prefix}{}", self.message),
        }
    }
}

/// The longest queue or kind name.
pub const MAX_NAME_LEN: usize = 64;

/// The rule every queue and kind name follows, as error messages state it.
pub const NAME_RULE: &str = "1-64 characters of A-Z a-z 0-9 _ . : -";

/// Checks a queue or kind name: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9_.:-]`.
/// Names are printed in tables and logs and used as metric labels, so they are short and
/// plain. Every entry (socket, jobctl, watch and pipeline config, the store) calls this;
/// `field` names what is checked (`queue`, `watch[0].queue`, ...). The error shows a
/// short, escaped preview of the bad value, never the whole of it.
pub fn check_name(field: &str, value: &str) -> Result<(), InvalidJob> {
    let length = value.chars().count();
    let bad_char = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')));
    let problem = if value.is_empty() {
        "is empty".to_string()
    } else if length > MAX_NAME_LEN {
        format!("is {length} characters long")
    } else if let Some(c) = bad_char {
        format!("contains {c:?}")
    } else {
        return Ok(());
    };
    Err(InvalidJob::new(
        field,
        format!(
            "{field} {} {problem}; a name is {NAME_RULE}",
            preview(value)
        ),
    ))
}

/// A bounded, escaped rendering of an untrusted value for an error message: quoted, at
/// most 32 characters, control characters escaped, `...` when cut.
pub fn preview(value: &str) -> String {
    const KEEP: usize = 32;
    let mut shown: String = value
        .chars()
        .take(KEEP)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(KEEP).is_some() {
        shown.push_str("...");
    }
    format!("\"{shown}\"")
}

/// The end of a pipeline's complete run, recorded in `sync_state` by the store in the
/// same transaction as the completion of the run's last job: the next run asks only for
/// what changed since `high_water`. Handlers cannot write the queue database; this is
/// how they say what to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncMark {
    pub pipeline: String,
    /// When the run started (not ended): anything changed after it is fetched next time.
    pub high_water: UnixMillis,
    /// Items and pages the run fetched, for `jobctl sync-state`.
    pub items: u64,
    pub pages: u32,
}

/// What a handler reports about one attempt. The completer turns it, with the retry
/// policy, into exactly one store transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done. `follow_ups` are enqueued, and `sync_marks` written, in the same
    /// transaction as the completion.
    Success {
        follow_ups: Vec<NewJob>,
        detail: Option<Value>,
        sync_marks: Vec<SyncMark>,
    },
    /// Failed, and another attempt may succeed. `retry_after` is the other side's hint
    /// (e.g. an HTTP `Retry-After`), honoured up to the policy's cap.
    Retry {
        error: String,
        retry_after: Option<std::time::Duration>,
        detail: Option<Value>,
    },
    /// Failed, and another attempt will fail the same way.
    Permanent {
        error: String,
        detail: Option<Value>,
    },
    /// Enqueue these children and wait for all of them to finish; then the handler runs
    /// again (with [`Job::stage`] one higher) to sum up. The fan-in of a fan-out.
    Await {
        children: Vec<NewJob>,
        detail: Option<Value>,
    },
    /// The handler stopped because the job was cancelled while it ran.
    Cancelled { reason: String },
    /// The handler stopped because the daemon is draining; the attempt is not charged.
    Interrupted { reason: String },
}

impl Outcome {
    pub fn success() -> Outcome {
        Outcome::Success {
            follow_ups: Vec::new(),
            detail: None,
            sync_marks: Vec::new(),
        }
    }

    /// Success with follow-up jobs and a detail, and no sync marks.
    pub fn succeeded(follow_ups: Vec<NewJob>, detail: Option<Value>) -> Outcome {
        Outcome::Success {
            follow_ups,
            detail,
            sync_marks: Vec::new(),
        }
    }

    pub fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry {
            error: error.into(),
            retry_after: None,
            detail: None,
        }
    }

    pub fn permanent(error: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            error: error.into(),
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        let err = "done".parse::<JobState>().unwrap_err();
        assert!(err.contains("unknown state 'done'"), "{err}");
    }

    #[test]
    fn every_transition_is_allowed_exactly_from_its_states() {
        for transition in Transition::ALL {
            for from in JobState::ALL {
                let expected = transition.from_states().contains(&from);
                assert_eq!(
                    transition.check(1, from).is_ok(),
                    expected,
                    "{transition:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn names_are_1_to_64_plain_characters() {
        for good in ["default", "a", "csv:daily", "bulk-2.v1_x", &"q".repeat(64)] {
            assert_eq!(check_name("queue", good), Ok(()), "{good}");
        }
        assert_eq!(
            check_name("queue", "").unwrap_err().to_string(),
            "queue \"\" is empty; a name is 1-64 characters of A-Z a-z 0-9 _ . : -"
        );
        let long = check_name("queue", &"x".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(
            long.starts_with(&format!(
                "queue \"{}...\" is 100000 characters long;",
                "x".repeat(32)
            )),
            "{long}"
        );
        assert!(long.len() < 200, "the whole value is not repeated: {long}");
        let hostile = check_name("watch[0].queue", "a\u{1b}[2J\nb")
            .unwrap_err()
            .to_string();
        assert_eq!(
            hostile,
            "watch[0].queue \"a\\u{1b}[2J\\nb\" contains '\\u{1b}'; a name is 1-64 characters of A-Z a-z 0-9 _ . : -"
        );
        assert!(!hostile.chars().any(char::is_control), "{hostile:?}");
        assert!(check_name("kind", "caf\u{e9}")
            .unwrap_err()
            .to_string()
            .contains("contains '\u{e9}'"));
        let job = NewJob::new("noop", Value::Null).queue("a b");
        let refused = job.validate().unwrap_err();
        assert_eq!(refused.field, "queue");
        assert!(refused
            .to_string()
            .starts_with("queue \"a b\" contains ' '"));
    }

    #[test]
    fn forbidden_transition_names_the_job_and_its_state() {
        let err = Transition::Revive
            .check(42, JobState::Succeeded)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "job 42 is succeeded; cannot retry it (allowed from: dead, cancelled)"
        );
    }

    #[test]
    fn terminal_states_are_left_only_by_operator_transitions() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            let exits: Vec<_> = Transition::ALL
                .into_iter()
                .filter(|t| t.allows(from))
                .collect();
            match from {
                JobState::Succeeded => assert!(exits.is_empty()),
                _ => assert_eq!(exits, vec![Transition::Revive]),
            }
        }
    }

    #[test]
    fn new_job_validation_names_the_field() {
        assert!(NewJob::new("noop", Value::Null).validate().is_ok());
        let refused = NewJob::new(" ", Value::Null).validate().unwrap_err();
        assert_eq!(refused.field, "kind");
        assert_eq!(
            refused.to_string(),
            "kind \" \" contains ' '; a name is 1-64 characters of A-Z a-z 0-9 _ . : -"
        );
        assert_eq!(
            NewJob::new("noop", Value::Null)
                .max_attempts(0)
                .validate()
                .unwrap_err()
                .to_string(),
            "max_attempts must be at least 1"
        );
    }
}

/// What the completer asks the store to do with a finished attempt: the handler's
/// [`Outcome`] after the retry policy has had its say. Each maps to one transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// [`Transition::Complete`], enqueuing the follow-ups and writing the sync marks in
    /// the same transaction.
    Succeeded {
        follow_ups: Vec<NewJob>,
        sync_marks: Vec<SyncMark>,
    },
    /// [`Transition::RetryLater`].
    RetryAt { run_at: UnixMillis, error: String },
    /// [`Transition::Kill`], enqueuing the follow-ups (dead-letter notifications) in the
    /// same transaction.
    Dead {
        error: String,
        follow_ups: Vec<NewJob>,
    },
    /// [`Transition::Await`]: enqueue the children in the same transaction and wait.
    Await { children: Vec<NewJob> },
    /// [`Transition::Cancel`] of a running job that stopped on request.
    Cancelled { reason: String },
    /// [`Transition::Release`]: not charged. `started` says whether the handler ran at
    /// all (a job still waiting in memory did not).
    Released { started: bool },
}

impl Resolution {
    pub fn transition(&self) -> Transition {
        match self {
            Resolution::Succeeded { .. } => Transition::Complete,
            Resolution::RetryAt { .. } => Transition::RetryLater,
            Resolution::Dead { .. } => Transition::Kill,
            Resolution::Cancelled { .. } => Transition::Cancel,
            Resolution::Await { .. } => Transition::Await,
            Resolution::Released { .. } => Transition::Release,
        }
    }
}

/// One finished (or given back) attempt, as the completer hands it to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub job_id: JobId,
    /// The job's parent, which resumes when this was its last unfinished child.
    pub parent_id: Option<JobId>,
    /// The attempt number the claim gave it; a completion for an older attempt (the lease
    /// ran out and someone else has the job now) changes nothing.
    pub attempt: u32,
    pub worker: String,
    pub started_at: UnixMillis,
    pub finished_at: UnixMillis,
    pub resolution: Resolution,
    /// Anything the handler wants kept with the attempt (HTTP status, stderr tail, ...).
    pub detail: Option<Value>,
}
