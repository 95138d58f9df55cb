//! The store's conformance suite: every case is written against the `Store` trait only,
//! with explicit times, and each driver runs all of them through [`conformance!`]
//! (`sqlite.rs`; a new driver adds its own file with `conformance!(make_its_db)`).
//! Driver-specific checks (query plans, the schema's CHECKs, file handling) live in the
//! driver's file.

use jobd::job::{Completion, JobId, JobState, NewJob, Resolution, Transition};
use jobd::store::{Applied, ClaimSpec, Finished, JobFilter, Store, StoreError};
use serde_json::json;

/// A database under test, fresh and empty, that hands out connections to itself.
/// `Sync`, so the concurrency cases can open one connection per thread.
pub trait TestDb: Sync {
    fn connect(&self) -> Box<dyn Store>;
}

/// Makes a fresh database for one case.
pub type MakeDb = fn() -> Box<dyn TestDb>;

/// One `#[test]` per conformance case for the driver whose databases `$make` makes.
/// `conformance!(make, if available)` runs each case only when `available()` says the
/// driver's server is there (a driver that needs one prints why it skipped).
macro_rules! conformance {
    ($make:path) => {
        conformance!($make, if || true);
    };
    ($make:path, if $available:expr) => {
        conformance!(@cases $make, $available; every_transition_is_allowed_from_its_states_and_refused_from_the_others, claims_follow_priority_then_run_at_then_id_and_skip_future_jobs, claims_take_at_most_the_limit_and_respect_queue_limits, completion_with_follow_ups_is_atomic_and_links_children, a_stale_completion_changes_nothing_and_other_rows_are_untouched, every_attempt_is_recorded_with_outcome_error_and_duration, release_gives_the_attempt_back, expired_leases_are_rescued_and_charged_and_exhausted_ones_die, heartbeats_extend_only_this_workers_current_attempts, unique_keys_return_the_existing_job, the_greatest_unique_key_under_a_prefix_is_found_byte_by_byte, a_refused_batch_enqueues_nothing, operators_revive_dead_jobs_and_cancel_waiting_ones, cancelling_a_running_job_asks_it_to_stop, purge_deletes_only_old_finished_jobs_of_the_state_with_their_attempts, stats_count_per_queue_and_state_and_the_oldest_ready_age, ready_counts_include_jobs_behind_their_order_keys_head, claims_merge_queues_by_priority_then_run_at_and_skip_excluded_and_later_rows, next_due_names_the_first_later_row_even_behind_rows_already_due, a_waiting_parent_resumes_when_its_last_child_finishes, awaiting_no_children_resumes_at_once_and_cancelling_a_waiting_job_is_allowed, a_long_batch_returns_each_jobs_own_id_with_unique_keys_among_them, a_run_of_keyed_jobs_dedupes_against_the_table_and_within_the_batch, a_claimed_job_that_never_started_goes_back_uncharged_and_a_started_one_is_charged, concurrent_claims_on_two_connections_get_disjoint_jobs, a_parent_whose_last_two_children_finish_at_once_resumes_exactly_once, a_batch_of_completions_applies_each_and_reports_the_stale_one, a_long_batch_of_successes_moves_each_held_attempt_once, recorded_starts_name_only_the_current_attempt_of_this_worker, reviving_the_dead_of_one_kind_leaves_other_rows_alone, a_hold_parks_waiting_jobs_new_ones_too_and_a_release_brings_them_back, claims_draw_tokens_by_the_clock_and_keep_in_flight_bounds, an_order_keys_next_job_goes_when_its_head_finishes_however_it_finishes, every_way_into_and_out_of_an_order_keys_line_keeps_one_head, a_sync_mark_is_kept_with_its_completion_or_refused_with_it_in_words);
    };
    (@cases $make:path, $available:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if ($available)() {
                    super::$case($make);
                }
            }
        )*
    };
}

mod flow;
mod postgres;
mod sqlite;

use flow::{
    a_hold_parks_waiting_jobs_new_ones_too_and_a_release_brings_them_back,
    an_order_keys_next_job_goes_when_its_head_finishes_however_it_finishes,
    claims_draw_tokens_by_the_clock_and_keep_in_flight_bounds,
    every_way_into_and_out_of_an_order_keys_line_keeps_one_head,
};

const T0: i64 = 1_800_000_000_000;
const WORKER: &str = "test-host:1";
const LEASE: i64 = 60_000;

fn noop() -> NewJob {
    NewJob::new("noop", json!({}))
}

fn enqueue(db: &mut dyn Store, job: NewJob, now: i64) -> JobId {
    db.write(|tx| tx.enqueue(&[job], now)).unwrap()[0].id
}

fn claim(db: &mut dyn Store, limit: usize, now: i64) -> Vec<jobd::job::Job> {
    db.write(|tx| {
        tx.claim(
            &ClaimSpec {
                limit,
                limited_queues: vec![],
                destinations: vec![],
            },
            WORKER,
            now + LEASE,
            now,
        )
    })
    .unwrap()
}

fn completion(id: JobId, attempt: u32, resolution: Resolution, now: i64) -> Completion {
    Completion {
        job_id: id,
        parent_id: None,
        attempt,
        worker: WORKER.into(),
        started_at: now,
        finished_at: now + 5,
        resolution,
        detail: Some(json!({"status": 200})),
    }
}

fn complete(
    db: &mut dyn Store,
    id: JobId,
    attempt: u32,
    resolution: Resolution,
    now: i64,
) -> Applied {
    let parent_id = db.get(id).unwrap().parent_id;
    let done = Completion {
        parent_id,
        ..completion(id, attempt, resolution, now)
    };
    db.write(|tx| tx.complete(&done, now)).unwrap()
}

fn state(db: &dyn Store, id: JobId) -> JobState {
    db.get(id).unwrap().state
}

/// A fresh job brought into `state` through legal transitions only.
fn job_in_state(db: &mut dyn Store, target: JobState) -> JobId {
    let id = enqueue(db, noop().priority(1000), T0);
    if target == JobState::Queued {
        return id;
    }
    let claimed = claim(db, 1, T0);
    assert_eq!(claimed[0].id, id, "the new job has the top priority");
    let resolution = match target {
        JobState::Running => return id,
        JobState::Retrying => Resolution::RetryAt {
            run_at: T0 + 1_000,
            error: "try later".into(),
        },
        JobState::Succeeded => Resolution::Succeeded {
            follow_ups: vec![],
            sync_marks: vec![],
        },
        JobState::Dead => Resolution::Dead {
            error: "broken".into(),
            follow_ups: vec![],
        },
        JobState::Cancelled => Resolution::Cancelled {
            reason: "stopped".into(),
        },
        JobState::Waiting => Resolution::Await {
            children: vec![NewJob::new("noop", json!({"child": true}))],
        },
        JobState::Queued => unreachable!(),
    };
    assert_eq!(complete(db, id, 1, resolution, T0), Applied::Moved(target));
    id
}

/// Tries a transition through the store; true if the job moved.
fn attempt_transition(db: &mut dyn Store, transition: Transition, id: JobId) -> bool {
    let before = db.get(id).unwrap();
    let now = T0 + 10_000;
    let moved = match transition {
        Transition::Claim => db
            .write(|tx| {
                tx.claim(
                    &ClaimSpec {
                        limit: 1000,
                        limited_queues: vec![],
                        destinations: vec![],
                    },
                    WORKER,
                    now + LEASE,
                    now,
                )
            })
            .unwrap()
            .iter()
            .any(|j| j.id == id),
        Transition::Complete
        | Transition::RetryLater
        | Transition::Kill
        | Transition::Release
        | Transition::Await => {
            let resolution = match transition {
                Transition::Complete => Resolution::Succeeded {
                    follow_ups: vec![],
                    sync_marks: vec![],
                },
                Transition::Await => Resolution::Await {
                    children: vec![NewJob::new("noop", json!({}))],
                },
                Transition::RetryLater => Resolution::RetryAt {
                    run_at: now,
                    error: "e".into(),
                },
                Transition::Kill => Resolution::Dead {
                    error: "e".into(),
                    follow_ups: vec![],
                },
                _ => Resolution::Released { started: true },
            };
            let attempt = before.attempts.max(1);
            complete(db, id, attempt, resolution, now) != Applied::Stale
        }
        Transition::RescueExpired => db
            .write(|tx| tx.rescue_expired(now + 10 * LEASE, false, &|_| 10, &|_| true))
            .unwrap()
            .iter()
            .any(|(rescued, _)| *rescued == id),
        Transition::Cancel => match db.write(|tx| tx.cancel(id, now)) {
            Ok(_) => true,
            Err(StoreError::Forbidden(e)) => {
                assert_eq!(e.id, id);
                assert_eq!(e.from, before.state);
                assert!(e.to_string().contains("cannot cancel"), "{e}");
                false
            }
            Err(e) => panic!("unexpected error: {e}"),
        },
        Transition::Resume => {
            // Finishing every unfinished child is what resumes a waiting parent.
            let children = db
                .list(&JobFilter {
                    parent_id: Some(id),
                    ..Default::default()
                })
                .unwrap();
            for child in children.iter().filter(|c| !c.state.is_terminal()) {
                db.write(|tx| tx.cancel(child.id, now)).unwrap();
            }
            db.get(id).unwrap().state != before.state
        }
        Transition::BuryUnborn => match db.write(|tx| tx.bury_unborn(id, "never complete", now)) {
            Ok(()) => true,
            Err(StoreError::Forbidden(e)) => {
                assert!(e.to_string().contains("cannot bury"), "{e}");
                false
            }
            Err(e) => panic!("unexpected error: {e}"),
        },
        Transition::RunNow => match db.write(|tx| tx.run_now(id, now)) {
            Ok(()) => true,
            Err(StoreError::Forbidden(e)) => {
                assert!(e.to_string().contains("cannot expedite"), "{e}");
                false
            }
            Err(e) => panic!("unexpected error: {e}"),
        },
        Transition::Revive => match db.write(|tx| tx.revive(&[id], now)) {
            Ok(_) => true,
            Err(StoreError::Forbidden(e)) => {
                assert!(
                    e.to_string()
                        .contains(&format!("job {id} is {}", before.state)),
                    "{e}"
                );
                false
            }
            Err(e) => panic!("unexpected error: {e}"),
        },
    };
    if !moved {
        let after = db.get(id).unwrap();
        assert_eq!(after, before, "a refused {transition:?} changed the job");
    }
    moved
}

pub fn every_transition_is_allowed_from_its_states_and_refused_from_the_others(make: MakeDb) {
    for transition in Transition::ALL {
        for from in JobState::ALL {
            let h = make();
            let mut store = h.connect();
            let db = &mut *store;
            let id = job_in_state(db, from);
            let moved = attempt_transition(db, transition, id);
            assert_eq!(
                moved,
                transition.allows(from),
                "{transition:?} from {from}: moved={moved}"
            );
            if moved {
                let now_state = state(db, id);
                let expected = match (transition, from) {
                    // A running job asked to cancel keeps running until its handler stops.
                    (Transition::Cancel, JobState::Running) => JobState::Running,
                    _ => transition.to_state(),
                };
                assert_eq!(now_state, expected, "{transition:?} from {from}");
            }
        }
    }
}

pub fn claims_follow_priority_then_run_at_then_id_and_skip_future_jobs(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let late = enqueue(db, noop().run_at(T0 + 500), T0);
    let low_early = enqueue(db, noop().priority(-1).run_at(T0 - 100), T0);
    let a = enqueue(db, noop().run_at(T0 - 50), T0);
    let b = enqueue(db, noop().run_at(T0 - 50), T0);
    let urgent = enqueue(db, noop().priority(10), T0);
    let future = enqueue(db, noop().priority(99).run_at(T0 + 60_000), T0);
    let claimed: Vec<JobId> = claim(db, 10, T0 + 1_000).iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![urgent, a, b, late, low_early]);
    assert_eq!(state(db, future), JobState::Queued);
    let job = db.get(urgent).unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.lease_until, Some(T0 + 1_000 + LEASE));
    assert_eq!(job.worker.as_deref(), Some(WORKER));
}

pub fn claims_take_at_most_the_limit_and_respect_queue_limits(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    for _ in 0..5 {
        enqueue(db, noop().queue("bulk"), T0);
        enqueue(db, noop(), T0);
    }
    assert_eq!(claim(db, 3, T0).len(), 3);
    let claimed = db
        .write(|tx| {
            tx.claim(
                &ClaimSpec {
                    limit: 100,
                    limited_queues: vec![("bulk".into(), 1)],
                    destinations: vec![],
                },
                WORKER,
                T0 + LEASE,
                T0,
            )
        })
        .unwrap();
    let bulk = claimed.iter().filter(|j| j.queue == "bulk").count();
    assert_eq!(bulk, 1, "the bulk queue had room for one");
    // Ids alternate bulk, default; the first claim took 1 (bulk), 2, 3 (bulk). Left: bulk
    // 5, 7, 9 (room for one) and default 4, 6, 8, 10 (unlimited).
    assert_eq!(claimed.len(), 5, "{claimed:?}");
}

pub fn completion_with_follow_ups_is_atomic_and_links_children(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let parent = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    let children = vec![
        NewJob::new("noop", json!({"batch": 1})),
        NewJob::new("noop", json!({"batch": 2})).unique_key("batch-2"),
    ];
    assert_eq!(
        complete(
            db,
            parent,
            1,
            Resolution::Succeeded {
                follow_ups: children,
                sync_marks: vec![]
            },
            T0
        ),
        Applied::Moved(JobState::Succeeded)
    );
    let kids = db
        .list(&JobFilter {
            parent_id: Some(parent),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(kids.len(), 2);
    assert!(kids.iter().all(|k| k.state == JobState::Queued));

    // A follow-up the schema refuses rolls back the whole completion.
    let other = enqueue(db, noop().priority(10), T0);
    assert_eq!(claim(db, 1, T0)[0].id, other);
    let bad = vec![
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({})).queue(""),
    ];
    let result = db.write(|tx| {
        tx.complete(
            &completion(
                other,
                1,
                Resolution::Succeeded {
                    follow_ups: bad,
                    sync_marks: vec![],
                },
                T0,
            ),
            T0,
        )
    });
    assert!(
        matches!(result, Err(StoreError::InvalidJob(_))),
        "{result:?}"
    );
    assert_eq!(state(db, other), JobState::Running);
    assert_eq!(db.list(&JobFilter::default()).unwrap().len(), 4);
}

pub fn a_stale_completion_changes_nothing_and_other_rows_are_untouched(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let ids: Vec<JobId> = (0..3).map(|_| enqueue(db, noop(), T0)).collect();
    claim(db, 3, T0);
    let before: Vec<_> = ids.iter().map(|id| db.get(*id).unwrap()).collect();
    // Wrong attempt number: an older attempt whose lease ran out.
    assert_eq!(
        complete(
            db,
            ids[1],
            7,
            Resolution::Succeeded {
                follow_ups: vec![],
                sync_marks: vec![]
            },
            T0
        ),
        Applied::Stale
    );
    let wrong_worker = Completion {
        worker: "someone-else:2".into(),
        ..completion(
            ids[1],
            1,
            Resolution::Succeeded {
                follow_ups: vec![],
                sync_marks: vec![],
            },
            T0,
        )
    };
    assert_eq!(
        db.write(|tx| tx.complete(&wrong_worker, T0)).unwrap(),
        Applied::Stale
    );
    let after: Vec<_> = ids.iter().map(|id| db.get(*id).unwrap()).collect();
    assert_eq!(before, after);
    assert!(db.attempts(ids[1]).unwrap().is_empty());

    assert_eq!(
        complete(
            db,
            ids[1],
            1,
            Resolution::Succeeded {
                follow_ups: vec![],
                sync_marks: vec![]
            },
            T0
        ),
        Applied::Moved(JobState::Succeeded)
    );
    assert_eq!(db.get(ids[0]).unwrap(), before[0], "neighbours untouched");
    assert_eq!(db.get(ids[2]).unwrap(), before[2], "neighbours untouched");
}

pub fn every_attempt_is_recorded_with_outcome_error_and_duration(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let id = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    complete(
        db,
        id,
        1,
        Resolution::RetryAt {
            run_at: T0 + 100,
            error: "HTTP 503".into(),
        },
        T0,
    );
    let job = db.get(id).unwrap();
    assert_eq!((job.state, job.run_at), (JobState::Retrying, T0 + 100));
    assert_eq!(job.last_error.as_deref(), Some("HTTP 503"));
    assert!(claim(db, 1, T0 + 99).is_empty(), "not before its backoff");
    assert_eq!(claim(db, 1, T0 + 100)[0].attempts, 2);
    complete(
        db,
        id,
        2,
        Resolution::Dead {
            error: "HTTP 400".into(),
            follow_ups: vec![],
        },
        T0 + 200,
    );
    let attempts = db.attempts(id).unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.outcome.as_str(),
                a.error.as_deref(),
                a.duration_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "retry", Some("HTTP 503"), 5),
            (2, "dead", Some("HTTP 400"), 5)
        ]
    );
    assert_eq!(attempts[0].detail, Some(json!({"status": 200})));
    let dead = db.get(id).unwrap();
    assert_eq!(dead.finished_at, Some(T0 + 200));
    assert_eq!(dead.lease_until, None);
}

pub fn release_gives_the_attempt_back(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let id = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    assert_eq!(
        complete(db, id, 1, Resolution::Released { started: false }, T0),
        Applied::Moved(JobState::Queued)
    );
    let job = db.get(id).unwrap();
    assert_eq!(
        (job.state, job.attempts, job.worker),
        (JobState::Queued, 0, None)
    );
    assert!(
        db.attempts(id).unwrap().is_empty(),
        "a job that never started has no attempt"
    );
}

pub fn expired_leases_are_rescued_and_charged_and_exhausted_ones_die(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let a = enqueue(db, noop(), T0);
    let b = enqueue(db, noop().max_attempts(1), T0);
    claim(db, 2, T0);
    let fresh = enqueue(db, noop(), T0);
    claim(db, 1, T0 + 30_000);
    // At T0 + LEASE + 1 the first two leases have run out; the third has not.
    let rescued = db
        .write(|tx| tx.rescue_expired(T0 + LEASE + 1, false, &|_| 10, &|_| true))
        .unwrap();
    assert_eq!(rescued, vec![(a, JobState::Retrying), (b, JobState::Dead)]);
    let job = db.get(a).unwrap();
    assert_eq!(job.attempts, 1, "the lost attempt stays counted");
    assert_eq!(job.last_error.as_deref(), Some("lease expired"));
    assert_eq!(job.run_at, T0 + LEASE + 1);
    assert!(db
        .get(b)
        .unwrap()
        .last_error
        .unwrap()
        .contains("attempts exhausted (1/1)"));
    assert_eq!(state(db, fresh), JobState::Running);
    assert_eq!(db.attempts(a).unwrap()[0].outcome, "lease_expired");
    // At start-up every running job is recovered, whatever its lease.
    let recovered = db
        .write(|tx| tx.rescue_expired(T0 + 30_001, true, &|_| 10, &|_| true))
        .unwrap();
    assert_eq!(recovered, vec![(fresh, JobState::Retrying)]);
}

pub fn heartbeats_extend_only_this_workers_current_attempts(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let id = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    let extended = db
        .write(|tx| tx.extend_leases(&[(id, 1), (id, 2)], WORKER, T0 + 5 * LEASE, T0 + 10))
        .unwrap();
    assert_eq!(extended, 1);
    assert_eq!(db.get(id).unwrap().lease_until, Some(T0 + 5 * LEASE));
    let other = db
        .write(|tx| tx.extend_leases(&[(id, 1)], "other:9", T0 + 9 * LEASE, T0 + 10))
        .unwrap();
    assert_eq!(other, 0);
}

pub fn unique_keys_return_the_existing_job(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let first = db
        .write(|tx| tx.enqueue(&[noop().unique_key("file:abc")], T0))
        .unwrap();
    let again = db
        .write(|tx| tx.enqueue(&[noop().unique_key("file:abc"), noop()], T0))
        .unwrap();
    assert!(!first[0].duplicate);
    assert_eq!(again[0].id, first[0].id);
    assert!(again[0].duplicate);
    assert!(!again[1].duplicate);
}

pub fn the_greatest_unique_key_under_a_prefix_is_found_byte_by_byte(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    assert_eq!(db.greatest_unique_key("http_pull:a:").unwrap(), None);
    let keys = [
        "http_pull:a:2026-11-23T05:00:02.000Z",
        "http_pull:a:2026-11-23T05:00:10.000Z",
        "http_pull:a:2026-11-23T04:59:58.000Z",
        // Other pipelines whose names sort next to it, and a key without the prefix.
        "http_pull:a;z",
        "http_pull:ab:2030-01-01T00:00:00.000Z",
        "http_pull:a",
    ];
    for key in keys {
        enqueue(db, noop().unique_key(key), T0);
    }
    assert_eq!(
        db.greatest_unique_key("http_pull:a:").unwrap().as_deref(),
        Some("http_pull:a:2026-11-23T05:00:10.000Z")
    );
    assert_eq!(
        db.greatest_unique_key("http_pull:ab:").unwrap().as_deref(),
        Some("http_pull:ab:2030-01-01T00:00:00.000Z")
    );
    assert_eq!(db.greatest_unique_key("http_pull:b:").unwrap(), None);
}

pub fn a_refused_batch_enqueues_nothing(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let result = db.write(|tx| tx.enqueue(&[noop(), noop().queue("")], T0));
    assert!(
        matches!(&result, Err(StoreError::InvalidJob(m)) if m.contains("queue")),
        "{result:?}"
    );
    assert!(db.list(&JobFilter::default()).unwrap().is_empty());
}

pub fn operators_revive_dead_jobs_and_cancel_waiting_ones(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let dead = job_in_state(db, JobState::Dead);
    let dead_exec = enqueue(db, NewJob::new("exec", json!({})), T0);
    claim(db, 1, T0);
    complete(
        db,
        dead_exec,
        1,
        Resolution::Dead {
            error: "x".into(),
            follow_ups: vec![],
        },
        T0,
    );
    let revived = db.write(|tx| tx.revive_dead(Some("noop"), T0 + 1)).unwrap();
    assert_eq!(revived, vec![dead]);
    let job = db.get(dead).unwrap();
    assert_eq!(
        (job.state, job.attempts, job.finished_at),
        (JobState::Queued, 0, None)
    );
    assert_eq!(state(db, dead_exec), JobState::Dead);

    let waiting = enqueue(db, noop().run_at(T0 + 999_999), T0);
    assert_eq!(
        db.write(|tx| tx.cancel(waiting, T0)).unwrap(),
        JobState::Cancelled
    );
    let err = db.write(|tx| tx.cancel(waiting, T0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {waiting} is cancelled; cannot cancel it (allowed from: queued, retrying, running, waiting)")
    );
    assert!(matches!(
        db.write(|tx| tx.cancel(424242, T0)),
        Err(StoreError::NotFound(424242))
    ));
}

pub fn cancelling_a_running_job_asks_it_to_stop(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let id = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    assert_eq!(db.write(|tx| tx.cancel(id, T0)).unwrap(), JobState::Running);
    assert!(db.get(id).unwrap().cancel_requested);
    assert_eq!(db.cancel_requests().unwrap(), vec![id]);
}

pub fn purge_deletes_only_old_finished_jobs_of_the_state_with_their_attempts(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let old = job_in_state(db, JobState::Succeeded);
    let dead = job_in_state(db, JobState::Dead);
    let queued = job_in_state(db, JobState::Queued);
    let deleted = db
        .write(|tx| tx.purge_finished(JobState::Succeeded, T0 + 100, 1000))
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(matches!(db.get(old), Err(StoreError::NotFound(_))));
    assert!(db.attempts(old).unwrap().is_empty());
    assert_eq!(state(db, dead), JobState::Dead);
    assert_eq!(state(db, queued), JobState::Queued);
    assert!(db
        .write(|tx| tx.purge_finished(JobState::Queued, T0, 10))
        .is_err());
}

pub fn stats_count_per_queue_and_state_and_the_oldest_ready_age(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    enqueue(db, noop().run_at(T0 - 5_000), T0);
    enqueue(db, noop().queue("bulk"), T0);
    job_in_state(db, JobState::Succeeded);
    let stats = db.stats(T0 + 1_000).unwrap();
    let default = &stats.queues["default"];
    assert_eq!(default.states.get("queued"), Some(&1));
    assert_eq!(default.states.get("succeeded"), Some(&1));
    assert_eq!(default.oldest_ready_age_ms, Some(6_000));
    assert_eq!(stats.queues["bulk"].oldest_ready_age_ms, Some(1_000));
    assert_eq!(stats.finished_last_minute["succeeded"], 1);
    assert_eq!(stats.total(JobState::Queued), 2);
}

pub fn ready_counts_include_jobs_behind_their_order_keys_head(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    enqueue(db, noop().order_key("k").run_at(T0 - 2_000), T0);
    let behind = enqueue(db, noop().order_key("k").run_at(T0 - 9_000), T0);
    enqueue(db, noop().run_at(T0 + 60_000), T0);
    job_in_state(db, JobState::Succeeded);
    assert!(
        db.get(behind).unwrap().order_blocked,
        "the second waits for its head"
    );
    assert_eq!(db.live_counts().unwrap()["ready"], 3);
    let stats = db.stats(T0).unwrap();
    assert_eq!(stats.queues["default"].states.get("queued"), Some(&3));
    // The oldest due row is the one behind the head: it waits for a worker all the same.
    assert_eq!(stats.queues["default"].oldest_ready_age_ms, Some(9_000));
}

pub fn claims_merge_queues_by_priority_then_run_at_and_skip_excluded_and_later_rows(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let a_low = enqueue(db, noop().queue("a").run_at(T0 - 30), T0);
    let b_high = enqueue(db, noop().queue("b").priority(5).run_at(T0 - 1), T0);
    let a_high = enqueue(db, noop().queue("a").priority(5).run_at(T0 - 2), T0);
    let c_low = enqueue(db, noop().queue("c").run_at(T0 - 40), T0);
    let _paused = enqueue(db, noop().queue("paused").priority(9), T0);
    let _later = enqueue(db, noop().queue("a").priority(9).run_at(T0 + 1), T0);
    let b_low = enqueue(db, noop().queue("b").run_at(T0 - 50), T0);
    let claim_with = |db: &mut dyn Store, limit: usize, limited: Vec<(String, usize)>| {
        let mut spec = ClaimSpec {
            limit,
            limited_queues: limited,
            destinations: vec![],
        };
        spec.exclude(&["paused".to_string()]);
        db.write(|tx| tx.claim(&spec, WORKER, T0 + LEASE, T0))
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    // Priority first, then the earlier run_at, across queues; b has room for one only.
    assert_eq!(
        claim_with(db, 3, vec![("b".into(), 1)]),
        vec![a_high, b_high, c_low]
    );
    // The rest, in order; the paused queue's and the later row stay.
    assert_eq!(claim_with(db, 10, vec![]), vec![b_low, a_low]);
    assert!(claim_with(db, 10, vec![]).is_empty());
    // Once due, the later row is claimed; a resumed queue's row too.
    let due = db
        .write(|tx| {
            tx.claim(
                &ClaimSpec {
                    limit: 10,
                    limited_queues: vec![],
                    destinations: vec![],
                },
                WORKER,
                T0 + 1 + LEASE,
                T0 + 1,
            )
        })
        .unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
}

pub fn next_due_names_the_first_later_row_even_behind_rows_already_due(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    assert_eq!(db.write(|tx| tx.next_due(T0)).unwrap(), None);
    // Due rows of a queue the claim skips (paused, or at its limit) ...
    enqueue(db, noop().queue("held").run_at(T0 - 1_000), T0);
    assert_eq!(db.write(|tx| tx.next_due(T0)).unwrap(), None);
    // ... do not hide when a delayed row of another queue comes due.
    enqueue(db, noop().run_at(T0 + 5_000), T0);
    enqueue(db, noop().run_at(T0 + 9_000), T0);
    assert_eq!(db.write(|tx| tx.next_due(T0)).unwrap(), Some(T0 + 5_000));
    assert_eq!(
        db.write(|tx| tx.next_due(T0 + 5_000)).unwrap(),
        Some(T0 + 9_000)
    );
    // Every queue and priority counts: a higher priority due later than the queue's
    // lowest, and a negative priority of the skipped queue due sooner than both.
    enqueue(db, noop().priority(5).run_at(T0 + 7_000), T0);
    enqueue(db, noop().queue("held").priority(-3).run_at(T0 + 6_000), T0);
    assert_eq!(
        db.write(|tx| tx.next_due(T0 + 5_000)).unwrap(),
        Some(T0 + 6_000)
    );
    assert_eq!(
        db.write(|tx| tx.next_due(T0 + 6_000)).unwrap(),
        Some(T0 + 7_000)
    );
}

pub fn a_waiting_parent_resumes_when_its_last_child_finishes(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let parent = enqueue(db, noop().priority(100), T0);
    claim(db, 1, T0);
    let children: Vec<NewJob> = (0..3)
        .map(|i| NewJob::new("noop", json!({"i": i})))
        .collect();
    assert_eq!(
        complete(db, parent, 1, Resolution::Await { children }, T0),
        Applied::Moved(JobState::Waiting)
    );
    assert_eq!(db.attempts(parent).unwrap()[0].outcome, "waiting");
    let kids: Vec<_> = claim(db, 10, T0 + 1);
    assert_eq!(
        kids.len(),
        3,
        "only the children are ready; the parent waits"
    );
    assert!(kids.iter().all(|k| k.parent_id == Some(parent)));
    complete(
        db,
        kids[0].id,
        1,
        Resolution::Succeeded {
            follow_ups: vec![],
            sync_marks: vec![],
        },
        T0 + 2,
    );
    complete(
        db,
        kids[1].id,
        1,
        Resolution::RetryAt {
            run_at: T0 + 100,
            error: "later".into(),
        },
        T0 + 2,
    );
    assert_eq!(
        state(db, parent),
        JobState::Waiting,
        "a retrying child is not finished"
    );
    complete(
        db,
        kids[2].id,
        1,
        Resolution::Dead {
            error: "bad row".into(),
            follow_ups: vec![],
        },
        T0 + 3,
    );
    assert_eq!(state(db, parent), JobState::Waiting);
    let again = claim(db, 10, T0 + 100);
    assert_eq!(again.len(), 1);
    complete(
        db,
        kids[1].id,
        2,
        Resolution::Succeeded {
            follow_ups: vec![],
            sync_marks: vec![],
        },
        T0 + 101,
    );
    let resumed = db.get(parent).unwrap();
    assert_eq!(
        (
            resumed.state,
            resumed.attempts,
            resumed.stage,
            resumed.run_at
        ),
        (JobState::Queued, 0, 1, T0 + 101)
    );
    let counts = db.children_counts(parent).unwrap();
    assert_eq!(counts.get("succeeded"), Some(&2));
    assert_eq!(counts.get("dead"), Some(&1));
    let fan_in = claim(db, 10, T0 + 102);
    assert_eq!(
        (fan_in[0].id, fan_in[0].stage, fan_in[0].attempts),
        (parent, 1, 1)
    );
}

pub fn awaiting_no_children_resumes_at_once_and_cancelling_a_waiting_job_is_allowed(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let lonely = enqueue(db, noop(), T0);
    claim(db, 1, T0);
    assert_eq!(
        complete(db, lonely, 1, Resolution::Await { children: vec![] }, T0),
        Applied::Moved(JobState::Waiting)
    );
    let job = db.get(lonely).unwrap();
    assert_eq!((job.state, job.stage), (JobState::Queued, 1));

    let waiting = job_in_state(db, JobState::Waiting);
    assert_eq!(
        db.write(|tx| tx.cancel(waiting, T0)).unwrap(),
        JobState::Cancelled
    );
    let child = db
        .list(&JobFilter {
            parent_id: Some(waiting),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(child[0].state, JobState::Queued, "its children go on");
}

pub fn a_long_batch_returns_each_jobs_own_id_with_unique_keys_among_them(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let existing = enqueue(db, noop().unique_key("k-140"), T0);
    // 200 jobs: long runs go in many rows per statement, keyed ones one at a time.
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| {
            let job = NewJob::new("noop", json!({ "i": i }));
            match i {
                70 => job.unique_key("k-70"),
                140 => job.unique_key("k-140"),
                _ => job,
            }
        })
        .collect();
    let enqueued = db.write(|tx| tx.enqueue(&jobs, T0)).unwrap();
    assert_eq!(enqueued.len(), 200);
    for (i, e) in enqueued.iter().enumerate() {
        let job = db.get(e.id).unwrap();
        if i == 140 {
            assert!(e.duplicate);
            assert_eq!(e.id, existing);
        } else {
            assert!(!e.duplicate, "job {i}");
            assert_eq!(job.payload["i"], i, "job {i} got the id of another");
        }
    }
    assert_eq!(
        db.list(&JobFilter::default()).unwrap().len(),
        200,
        "199 new and the old one"
    );
}

pub fn a_run_of_keyed_jobs_dedupes_against_the_table_and_within_the_batch(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let existing = enqueue(db, noop().unique_key("k-3"), T0);
    // 20 keyed jobs in a row: k-3 exists already, and k-7 comes twice.
    let jobs: Vec<NewJob> = (0..20)
        .map(|i| {
            let key = if i == 12 {
                "k-7".to_string()
            } else {
                format!("k-{i}")
            };
            NewJob::new("noop", json!({ "i": i })).unique_key(key)
        })
        .collect();
    let enqueued = db.write(|tx| tx.enqueue(&jobs, T0)).unwrap();
    for (i, e) in enqueued.iter().enumerate() {
        match i {
            3 => assert_eq!((e.id, e.duplicate), (existing, true)),
            12 => assert_eq!(
                (e.id, e.duplicate),
                (enqueued[7].id, true),
                "the batch's own k-7"
            ),
            _ => {
                assert!(!e.duplicate, "job {i}");
                let job = db.get(e.id).unwrap();
                assert_eq!(job.payload["i"], i, "job {i} got the id of another");
                assert_eq!(job.unique_key.as_deref(), Some(format!("k-{i}").as_str()));
            }
        }
    }
    // 1 old + 18 new.
    assert_eq!(db.list(&JobFilter::default()).unwrap().len(), 19);
    // Again: every one is a duplicate now, and nothing is added.
    let again = db.write(|tx| tx.enqueue(&jobs, T0)).unwrap();
    assert!(again.iter().all(|e| e.duplicate));
    assert_eq!(
        again.iter().map(|e| e.id).collect::<Vec<_>>(),
        enqueued.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(db.list(&JobFilter::default()).unwrap().len(), 19);
}

pub fn a_claimed_job_that_never_started_goes_back_uncharged_and_a_started_one_is_charged(
    make: MakeDb,
) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let started = enqueue(db, noop(), T0);
    let ahead = enqueue(db, noop().max_attempts(1), T0);
    let claimed = db
        .write(|tx| {
            tx.claim_numbered(
                &ClaimSpec {
                    limit: 2,
                    limited_queues: vec![],
                    destinations: vec![],
                },
                Some(7),
                WORKER,
                T0 + LEASE,
                T0,
            )
        })
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let recorded = db
        .write(|tx| tx.record_starts(&[(started, 1, T0 + 3), (ahead, 2, T0 + 3)], WORKER))
        .unwrap();
    assert_eq!(recorded, 1, "a start for another attempt is not recorded");
    let queue = db.stats(T0 + 5).unwrap().queues["default"].clone();
    assert_eq!(
        (queue.states.get("running").copied(), queue.claimed),
        (Some(1), 1),
        "running counts started handlers only; the other is claimed"
    );
    let seen = std::cell::RefCell::new(Vec::new());
    let rescued = db
        .write(|tx| {
            tx.rescue_expired(T0 + 10, true, &|_| 10, &|held| {
                seen.borrow_mut().push(*held);
                held.started_at.is_some()
            })
        })
        .unwrap();
    assert_eq!(
        rescued,
        vec![(started, JobState::Retrying), (ahead, JobState::Queued)]
    );
    assert_eq!(
        seen.borrow()
            .iter()
            .map(|h| (h.id, h.attempt, h.claim))
            .collect::<Vec<_>>(),
        vec![(started, 1, Some(7)), (ahead, 1, Some(7))]
    );
    let charged = db.get(started).unwrap();
    assert_eq!((charged.attempts, charged.state), (1, JobState::Retrying));
    assert_eq!(db.attempts(started).unwrap()[0].started_at, T0 + 3);
    let given_back = db.get(ahead).unwrap();
    assert_eq!(
        (given_back.state, given_back.attempts, given_back.worker),
        (JobState::Queued, 0, None),
        "a job that never started is not charged, even on its last attempt"
    );
    assert!(db.attempts(ahead).unwrap().is_empty());
}

pub fn concurrent_claims_on_two_connections_get_disjoint_jobs(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let jobs: Vec<NewJob> = (0..300).map(|i| noop().priority(i % 3)).collect();
    let ids: Vec<JobId> = store
        .write(|tx| tx.enqueue(&jobs, T0))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let barrier = std::sync::Barrier::new(2);
    let claimed: Vec<Vec<JobId>> = std::thread::scope(|scope| {
        let workers: Vec<_> = ["node-a:1", "node-b:1"]
            .into_iter()
            .map(|worker| {
                let (h, barrier) = (&h, &barrier);
                scope.spawn(move || {
                    let mut db = h.connect();
                    barrier.wait();
                    let mut mine = Vec::new();
                    loop {
                        let batch = db
                            .write(|tx| {
                                tx.claim(
                                    &ClaimSpec {
                                        limit: 7,
                                        limited_queues: vec![],
                                        destinations: vec![],
                                    },
                                    worker,
                                    T0 + LEASE,
                                    T0,
                                )
                            })
                            .unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        assert!(batch.iter().all(|j| j.worker.as_deref() == Some(worker)));
                        mine.extend(batch.iter().map(|j| j.id));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<JobId> = claimed.concat();
    let claimed_total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), claimed_total, "a job was claimed twice");
    assert_eq!(all, ids, "every job was claimed once");
    for id in ids {
        assert_eq!(store.get(id).unwrap().attempts, 1, "job {id}");
    }
}

pub fn a_parent_whose_last_two_children_finish_at_once_resumes_exactly_once(make: MakeDb) {
    // Repeated, so the two finishers really do meet at the parent now and then.
    for round in 0..10 {
        let h = make();
        let mut store = h.connect();
        let db = &mut *store;
        let parent = enqueue(db, noop().priority(100), T0);
        claim(db, 1, T0);
        let children = vec![
            NewJob::new("noop", json!({"child": 1})),
            NewJob::new("noop", json!({"child": 2})),
        ];
        complete(db, parent, 1, Resolution::Await { children }, T0);
        let claimed = claim(db, 10, T0 + 1);
        assert_eq!(claimed.len(), 2, "round {round}: {claimed:?}");
        let barrier = std::sync::Barrier::new(2);
        let applied: Vec<Applied> = std::thread::scope(|scope| {
            let finishers: Vec<_> = claimed
                .iter()
                .map(|child| {
                    let (h, barrier) = (&h, &barrier);
                    let done = Completion {
                        parent_id: Some(parent),
                        ..completion(
                            child.id,
                            1,
                            Resolution::Succeeded {
                                follow_ups: vec![],
                                sync_marks: vec![],
                            },
                            T0 + 2,
                        )
                    };
                    scope.spawn(move || {
                        let mut db = h.connect();
                        barrier.wait();
                        db.write(|tx| tx.complete(&done, T0 + 2)).unwrap()
                    })
                })
                .collect();
            finishers.into_iter().map(|f| f.join().unwrap()).collect()
        });
        assert_eq!(applied, vec![Applied::Moved(JobState::Succeeded); 2]);
        let resumed = db.get(parent).unwrap();
        assert_eq!(resumed.state, JobState::Queued, "round {round}");
        assert_eq!(resumed.stage, 1, "round {round}: resumed more than once");
        assert_eq!(resumed.attempts, 0, "round {round}");
        // And it runs its fan-in stage once: claimed once, then nothing is left.
        assert_eq!(claim(db, 10, T0 + 3).len(), 1, "round {round}");
        assert!(claim(db, 10, T0 + 3).is_empty(), "round {round}");
    }
}

pub fn a_batch_of_completions_applies_each_and_reports_the_stale_one(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let ids: Vec<JobId> = (0..4).map(|_| enqueue(db, noop(), T0)).collect();
    let bystander = enqueue(db, noop().run_at(T0 + 60_000), T0);
    claim(db, 4, T0);
    let before = db.get(bystander).unwrap();
    let ok = Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![],
    };
    let completions = [
        completion(ids[0], 1, ok.clone(), T0 + 1),
        completion(
            ids[1],
            1,
            Resolution::RetryAt {
                run_at: T0 + 500,
                error: "later".into(),
            },
            T0 + 1,
        ),
        // Not this job's attempt: stale, changes nothing.
        completion(ids[2], 7, ok.clone(), T0 + 1),
        completion(
            ids[3],
            1,
            Resolution::Dead {
                error: "broken".into(),
                follow_ups: vec![],
            },
            T0 + 1,
        ),
    ];
    let batch: Vec<Finished<'_>> = completions
        .iter()
        .map(|completion| Finished {
            completion,
            started_us: Some(T0 * 1_000),
        })
        .collect();
    let applied = db.write(|tx| tx.complete_many(&batch, T0 + 1)).unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Moved(JobState::Succeeded),
            Applied::Moved(JobState::Retrying),
            Applied::Stale,
            Applied::Moved(JobState::Dead),
        ]
    );
    assert_eq!(state(db, ids[2]), JobState::Running);
    assert!(db.attempts(ids[2]).unwrap().is_empty());
    for id in [ids[0], ids[1], ids[3]] {
        assert_eq!(db.attempts(id).unwrap().len(), 1, "job {id}");
    }
    assert_eq!(db.get(bystander).unwrap(), before, "a neighbour changed");
}

pub fn a_long_batch_of_successes_moves_each_held_attempt_once(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let jobs: Vec<NewJob> = (0..101).map(|_| noop()).collect();
    let ids: Vec<JobId> = db
        .write(|tx| tx.enqueue(&jobs, T0))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(claim(db, 101, T0).len(), 101);
    let ok = Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![],
    };
    // More successes than one statement takes; one of them from another worker, one
    // for an attempt that does not hold its job, and one job's completion twice.
    let mut completions: Vec<Completion> = ids
        .iter()
        .map(|id| completion(*id, 1, ok.clone(), T0 + 1))
        .collect();
    completions[7].worker = "someone-else:2".into();
    completions[9].attempt = 2;
    completions.push(completion(ids[3], 1, ok.clone(), T0 + 1));
    let batch: Vec<Finished<'_>> = completions
        .iter()
        .map(|completion| Finished {
            completion,
            started_us: Some(T0 * 1_000),
        })
        .collect();
    let applied = db.write(|tx| tx.complete_many(&batch, T0 + 2)).unwrap();
    let stale = [7, 9, 101];
    for (i, applied) in applied.iter().enumerate() {
        let want = if stale.contains(&i) {
            Applied::Stale
        } else {
            Applied::Moved(JobState::Succeeded)
        };
        assert_eq!(*applied, want, "completion {i}");
    }
    for (i, id) in ids.iter().enumerate() {
        let job = db.get(*id).unwrap();
        let attempts = db.attempts(*id).unwrap();
        if stale.contains(&i) {
            assert_eq!(job.state, JobState::Running, "job {i}");
            assert!(attempts.is_empty(), "job {i}");
            continue;
        }
        assert_eq!(job.state, JobState::Succeeded, "job {i}");
        assert_eq!((job.finished_at, job.lease_until), (Some(T0 + 2), None));
        assert_eq!(attempts.len(), 1, "job {i}");
        let attempt = &attempts[0];
        assert_eq!(
            (
                attempt.outcome.as_str(),
                attempt.started_at,
                attempt.finished_at
            ),
            ("succeeded", T0 + 1, T0 + 6)
        );
        assert_eq!(attempt.detail, Some(json!({"status": 200})));
    }
}

pub fn recorded_starts_name_only_the_current_attempt_of_this_worker(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let a = enqueue(db, noop(), T0);
    let b = enqueue(db, noop(), T0);
    claim(db, 2, T0);
    let recorded = db
        .write(|tx| {
            let mine = tx.record_starts(&[(a, 1, T0 + 3), (b, 9, T0 + 3)], WORKER)?;
            let theirs = tx.record_starts(&[(b, 1, T0 + 3)], "someone-else:1")?;
            Ok((mine, theirs))
        })
        .unwrap();
    assert_eq!(recorded, (1, 0));
    let running = db.running_jobs(10).unwrap();
    let started = |id| running.iter().find(|r| r.id == id).unwrap().started_at;
    assert_eq!(started(a), Some(T0 + 3));
    assert_eq!(started(b), None);
}

pub fn reviving_the_dead_of_one_kind_leaves_other_rows_alone(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let dead_noop = job_in_state(db, JobState::Dead);
    let other = enqueue(db, NewJob::new("other", json!({})).priority(2000), T0);
    claim(db, 1, T0);
    complete(
        db,
        other,
        1,
        Resolution::Dead {
            error: "x".into(),
            follow_ups: vec![],
        },
        T0,
    );
    let cancelled = job_in_state(db, JobState::Cancelled);
    let before_other = db.get(other).unwrap();
    let before_cancelled = db.get(cancelled).unwrap();
    let revived = db.write(|tx| tx.revive_dead(Some("noop"), T0 + 9)).unwrap();
    assert_eq!(revived, vec![dead_noop]);
    let job = db.get(dead_noop).unwrap();
    assert_eq!(
        (job.state, job.attempts, job.run_at),
        (JobState::Queued, 0, T0 + 9)
    );
    assert_eq!(job.finished_at, None);
    assert_eq!(db.get(other).unwrap(), before_other);
    assert_eq!(db.get(cancelled).unwrap(), before_cancelled);
}

/// A pipeline's sync mark is written with the completion of its run's last job, all or
/// nothing: a mark whose item count the database cannot hold is refused in words and
/// leaves the job running and no mark; with a count it holds, both are kept.
pub fn a_sync_mark_is_kept_with_its_completion_or_refused_with_it_in_words(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let id = enqueue(db, noop(), T0);
    assert_eq!(claim(db, 1, T0)[0].id, id);
    let with_mark = |items: u64| Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![jobd::job::SyncMark {
            pipeline: "customers".into(),
            high_water: T0 - 60_000,
            items,
            pages: 3,
        }],
    };
    let done = completion(id, 1, with_mark(u64::MAX), T0 + 10);
    match db.write(|tx| tx.complete(&done, T0 + 10)) {
        Err(StoreError::InvalidJob(e)) => assert!(
            e.contains("\"customers\"") && e.contains(&u64::MAX.to_string()),
            "{e}"
        ),
        other => panic!("expected the mark refused, got {other:?}"),
    }
    assert_eq!(
        state(db, id),
        JobState::Running,
        "nothing of the completion stays"
    );
    assert!(db.sync_states().unwrap().is_empty());

    let done = completion(id, 1, with_mark(250), T0 + 10);
    db.write(|tx| tx.complete(&done, T0 + 10)).unwrap();
    assert_eq!(state(db, id), JobState::Succeeded);
    let marks = db.sync_states().unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].last_run_items, 250);
    assert_eq!(db.sync_high_water("customers").unwrap(), Some(T0 - 60_000));
}
