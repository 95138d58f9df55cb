//! State guards for SQL, built from the state machine in `job.rs`: no statement types a
//! state name by hand in its WHERE clause.

use crate::job::{JobState, Transition};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// `(state = 'a' OR state = 'b')` for the states a transition may start from: the guard
/// of every update comes from the state machine in `job.rs`, not from a second list here.
/// An OR chain, not an IN list, to match the partial indexes (see the migration).
pub(super) fn state_guard(transition: Transition) -> String {
    states_guard(transition.from_states())
}

/// `(state = 'a' OR state = 'b')` for these states.
pub(super) fn states_guard(states: &[JobState]) -> String {
    let states: Vec<String> = states
        .iter()
        .map(|s| format!("state = '{}'", s.as_str()))
        .collect();
    format!("({})", states.join(" OR "))
}

/// `template` with its state guards filled in from `job.rs`, so no state name is typed
/// into a statement by hand: `{running}`, `{ready}` (what a claim takes), `{waiting}`,
/// `{dead}`, `{terminal}`, `{active}` (queued, running or retrying: a run in
/// progress) and `{unfinished}` (every state but the terminal ones). Built once per statement and kept for the process's life.
pub(super) fn with_guards(template: &'static str) -> &'static str {
    static BUILT: LazyLock<Mutex<HashMap<&'static str, &'static str>>> =
        LazyLock::new(Default::default);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built.entry(template).or_insert_with(|| {
        let filled = template
            .replace("{running}", running_guard())
            .replace("{ready}", &state_guard(Transition::Claim))
            .replace("{waiting}", &states_guard(&[JobState::Waiting]))
            .replace("{dead}", &states_guard(&[JobState::Dead]))
            .replace("{terminal}", terminal_guard())
            .replace(
                "{active}",
                &states_guard(&[JobState::Queued, JobState::Running, JobState::Retrying]),
            )
            .replace("{unfinished}", &unfinished_guard());
        Box::leak(filled.into_boxed_str())
    })
}

/// Every state but the terminal ones: the text of `jobs_order_live`'s WHERE (0008).
fn unfinished_guard() -> String {
    states_guard(
        &JobState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect::<Vec<_>>(),
    )
}

/// `SELECT columns FROM jobs ...` of every ready row (queued or retrying), each part read
/// from an index: rows a claim may take from `jobs_queue_ready`, rows behind their order
/// key's head from `jobs_order_live`. Since 0013 no one index holds them all, so every
/// reader of all ready rows goes through this compound SELECT (in `FROM (...)` or
/// `IN (...)`) rather than let the planner read the whole table.
pub(super) fn ready_rows(columns: &str) -> String {
    let ready = state_guard(Transition::Claim);
    format!(
        "SELECT {columns} FROM jobs INDEXED BY jobs_queue_ready \
         WHERE {ready} AND order_blocked = 0 \
         UNION ALL SELECT {columns} FROM jobs INDEXED BY jobs_order_live \
         WHERE order_key IS NOT NULL AND {unfinished} AND {ready} AND order_blocked = 1",
        unfinished = unfinished_guard()
    )
}

/// `(state = 'succeeded' OR ...)`: a finished job, by [`JobState::is_terminal`].
pub(super) fn terminal_guard() -> &'static str {
    static GUARD: LazyLock<String> = LazyLock::new(|| {
        let terminal: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        states_guard(&terminal)
    });
    &GUARD
}

/// `(state = 'running')`: the one state a job holds a lease in.
pub(super) fn running_guard() -> &'static str {
    static GUARD: LazyLock<String> = LazyLock::new(|| states_guard(&[JobState::Running]));
    &GUARD
}
