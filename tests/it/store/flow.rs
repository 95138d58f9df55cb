//! Conformance cases for flow control (issue 18), against the `Store` trait only: a hold
//! parks a destination's waiting jobs (new ones too) and a release brings them back;
//! claims draw tokens by the clock and keep `max_in_flight`; an order key's next job
//! goes when its head finishes, however it finishes.

use super::{complete, MakeDb, WORKER};
use jobd::flow::{DestinationLimit, HoldRequest};
use jobd::job::{JobState, NewJob, Resolution};
use jobd::store::{Applied, ClaimSpec, Store};
use serde_json::json;
use std::time::Duration;

fn to(destination: &str, key: &str) -> NewJob {
    let mut job = NewJob::new("noop", json!({}));
    job.destination = Some(destination.into());
    if !key.is_empty() {
        job.flow_key = Some(key.into());
    }
    job
}

fn claim(db: &mut dyn Store, spec: &ClaimSpec, now: i64) -> (Vec<i64>, Option<i64>) {
    let claimed = db
        .write(|tx| tx.claim_flow(spec, None, WORKER, now + 60_000, now))
        .unwrap();
    (claimed.jobs.iter().map(|j| j.id).collect(), claimed.wake_at)
}

fn any(limit: usize) -> ClaimSpec {
    ClaimSpec {
        limit,
        ..Default::default()
    }
}

pub fn a_hold_parks_waiting_jobs_new_ones_too_and_a_release_brings_them_back(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let t0 = 1_000_000;
    let ids = db
        .write(|tx| tx.enqueue(&[to("b", ""), to("b", "k"), to("c", "")], t0))
        .unwrap();
    let hold = HoldRequest::new(
        "b",
        "",
        Duration::from_secs(5),
        t0,
        Some(429),
        "answered 429".into(),
    );
    assert_eq!(
        db.write(|tx| tx.hold_destination(&hold, t0)).unwrap(),
        Some(t0 + 5_000)
    );
    // A shorter hold changes nothing.
    let short = HoldRequest::new("b", "", Duration::from_secs(1), t0, None, "x".into());
    assert_eq!(
        db.write(|tx| tx.hold_destination(&short, t0)).unwrap(),
        None
    );
    let late = db.write(|tx| tx.enqueue(&[to("b", "")], t0 + 10)).unwrap();
    assert_eq!(db.get(ids[0].id).unwrap().run_at, t0 + 5_000);
    assert_eq!(db.get(late[0].id).unwrap().run_at, t0 + 5_000);
    // Another key and another destination are not held.
    assert_eq!(db.get(ids[1].id).unwrap().run_at, t0);
    let (claimed, _) = claim(db, &any(10), t0 + 100);
    assert_eq!(claimed, vec![ids[1].id, ids[2].id]);
    assert_eq!(db.get(ids[0].id).unwrap().attempts, 0, "charged nothing");
    let stored = db.destination_hold("b", "").unwrap().unwrap();
    assert_eq!((stored.status, stored.until), (Some(429), t0 + 5_000));
    assert_eq!(stored.reason.as_deref(), Some("answered 429"));
    assert!(db
        .write(|tx| tx.release_destination("b", "", t0 + 200))
        .unwrap());
    let (claimed, _) = claim(db, &any(10), t0 + 200);
    assert_eq!(claimed, vec![ids[0].id, late[0].id]);
    assert!(!db
        .write(|tx| tx.release_destination("b", "", t0 + 300))
        .unwrap());
}

pub fn claims_draw_tokens_by_the_clock_and_keep_in_flight_bounds(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let t0 = 5_000_000;
    let jobs: Vec<NewJob> = (0..10)
        .map(|_| to("r", ""))
        .chain((0..10).map(|_| to("m", "")))
        .collect();
    db.write(|tx| tx.enqueue(&jobs, t0)).unwrap();
    let spec = ClaimSpec {
        limit: 100,
        destinations: vec![
            DestinationLimit {
                destination: "r".into(),
                rate_per_second: Some(4.0),
                burst: 2,
                max_in_flight: None,
            },
            DestinationLimit {
                destination: "m".into(),
                rate_per_second: None,
                burst: 1,
                max_in_flight: Some(3),
            },
        ],
        ..Default::default()
    };
    // The burst of r (2) and the room of m (3) at once; r's next token in 250 ms.
    let (claimed, wake) = claim(db, &spec, t0);
    assert_eq!(claimed.len(), 5);
    assert_eq!(wake, Some(t0 + 250));
    let (claimed, _) = claim(db, &spec, t0 + 249);
    assert!(claimed.is_empty(), "{claimed:?}");
    let (claimed, _) = claim(db, &spec, t0 + 250);
    assert_eq!(claimed.len(), 1);
    // A second later: 2 tokens (the burst), not 4; m still full.
    let (claimed, _) = claim(db, &spec, t0 + 1_250);
    assert_eq!(claimed.len(), 2);
    let views = db.destinations(&spec.destinations, t0 + 1_250).unwrap();
    let m = views.iter().find(|v| v.destination == "m").unwrap();
    assert_eq!((m.in_flight, m.waiting, m.max_in_flight), (3, 7, Some(3)));
    let r = views.iter().find(|v| v.destination == "r").unwrap();
    assert_eq!((r.in_flight, r.waiting), (5, 5));
    assert!(r.tokens.unwrap() < 1.0);
    // One of m's jobs finishes: one more of m may go.
    let running = db.get(claimed[0]).unwrap();
    let m_job = (1..=20)
        .map(|id| db.get(id).unwrap())
        .find(|j| j.destination.as_deref() == Some("m") && j.worker.is_some())
        .unwrap();
    assert_eq!(running.destination.as_deref(), Some("r"));
    let done = Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![],
    };
    complete(db, m_job.id, 1, done, t0 + 1_300);
    let (claimed, _) = claim(db, &spec, t0 + 1_300);
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        db.get(claimed[0]).unwrap().destination.as_deref(),
        Some("m")
    );
}

pub fn an_order_keys_next_job_goes_when_its_head_finishes_however_it_finishes(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let t0 = 9_000_000;
    let jobs: Vec<NewJob> = (0..4)
        .map(|_| NewJob::new("noop", json!({})).order_key("k"))
        .chain([NewJob::new("noop", json!({})).order_key("other")])
        .collect();
    let ids: Vec<i64> = db
        .write(|tx| tx.enqueue(&jobs, t0))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let (claimed, _) = claim(db, &any(10), t0);
    assert_eq!(claimed, vec![ids[0], ids[4]], "each key's head only");
    assert!(db.get(ids[1]).unwrap().order_blocked);
    assert_eq!(db.order_head("k").unwrap(), Some(ids[0]));
    // Cancelling a job behind the head lets nobody through.
    db.write(|tx| tx.cancel(ids[2], t0)).unwrap();
    assert!(claim(db, &any(10), t0).0.is_empty());
    // The head dies: the next one in line goes.
    let dead = Resolution::Dead {
        error: "boom".into(),
        follow_ups: vec![],
    };
    complete(db, ids[0], 1, dead, t0 + 10);
    assert_eq!(claim(db, &any(10), t0 + 10).0, vec![ids[1]]);
    // The dead head sent round again waits behind the running one.
    db.write(|tx| tx.revive(&[ids[0]], t0 + 20)).unwrap();
    assert!(db.get(ids[0]).unwrap().order_blocked);
    assert!(claim(db, &any(10), t0 + 20).0.is_empty());
    // The running one succeeds: the revived job (first in id order) goes, then the last.
    let done = Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![],
    };
    complete(db, ids[1], 1, done.clone(), t0 + 30);
    assert_eq!(claim(db, &any(10), t0 + 30).0, vec![ids[0]]);
    complete(db, ids[0], 1, done, t0 + 40);
    assert_eq!(claim(db, &any(10), t0 + 40).0, vec![ids[3]]);
}

/// The jobs of `ids` that are their order key's head: unfinished and not blocked.
fn heads(db: &mut dyn Store, ids: &[i64]) -> Vec<i64> {
    ids.iter()
        .copied()
        // A deleted job is nobody's head.
        .filter(|id| {
            db.get(*id)
                .is_ok_and(|job| !job.state.is_terminal() && !job.order_blocked)
        })
        .collect()
}

/// Every way a job joins or leaves its order key's line (an enqueue, in a batch or as a
/// follow-up; a success among a batch of completions; a death by lease; a burial; a
/// cancel; a delete; each way back) keeps exactly one head per key that has unfinished
/// jobs, the first in id order where a line forms anew.
pub fn every_way_into_and_out_of_an_order_keys_line_keeps_one_head(make: MakeDb) {
    let h = make();
    let mut store = h.connect();
    let db = &mut *store;
    let t0 = 9_000_000;
    let keyed = |key: &str| NewJob::new("noop", json!({})).order_key(key);
    // A batch lines up in id order, keys interleaved with each other and with free jobs.
    let batch = vec![
        keyed("a"),
        keyed("b"),
        NewJob::new("noop", json!({})),
        keyed("a"),
        keyed("c"),
        keyed("a"),
        keyed("b"),
        keyed("c"),
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({})),
    ];
    let ids: Vec<i64> = db
        .write(|tx| tx.enqueue(&batch, t0))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let (a1, b1, free, a2, c1, a3, b2, c2) = (
        ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7],
    );
    let (free2, free3) = (ids[8], ids[9]);
    assert_eq!(heads(db, &[a1, a2, a3]), vec![a1]);
    assert_eq!(heads(db, &[b1, b2]), vec![b1]);
    assert_eq!(heads(db, &[c1, c2]), vec![c1]);
    let (claimed, _) = claim(db, &any(10), t0);
    assert_eq!(claimed, vec![a1, b1, free, c1, free2, free3]);

    // b2 is cancelled while it waits behind b1: b1 stays the head.
    db.write(|tx| tx.cancel(b2, t0 + 1)).unwrap();
    assert_eq!(heads(db, &[b1, b2]), vec![b1]);

    // a1 succeeds in one batch of completions with the free jobs (one chunk of four);
    // b1's and c1's leases run out with their attempts spent.
    let done = Resolution::Succeeded {
        follow_ups: vec![],
        sync_marks: vec![],
    };
    let successes: Vec<jobd::job::Completion> = [free, a1, free2, free3]
        .iter()
        .map(|id| super::completion(*id, 1, done.clone(), t0 + 5))
        .collect();
    let finished: Vec<jobd::store::Finished<'_>> = successes
        .iter()
        .map(|completion| jobd::store::Finished {
            completion,
            started_us: None,
        })
        .collect();
    let applied = db.write(|tx| tx.complete_many(&finished, t0 + 5)).unwrap();
    assert_eq!(applied, vec![Applied::Moved(JobState::Succeeded); 4]);
    assert_eq!(
        heads(db, &[a1, a2, a3]),
        vec![a2],
        "a success lets the next go"
    );
    let rescued = db
        .write(|tx| tx.rescue_expired(t0 + 60_001, false, &|_| 1, &|_| true))
        .unwrap();
    assert_eq!(rescued, vec![(b1, JobState::Dead), (c1, JobState::Dead)]);
    assert_eq!(
        heads(db, &[c1, c2]),
        vec![c2],
        "a death by lease lets the next go"
    );
    assert!(
        heads(db, &[b1, b2]).is_empty(),
        "line b has no unfinished job"
    );

    // Deleting a job behind the head changes nothing; deleting the head lets the next go.
    assert_eq!(db.write(|tx| tx.delete_where_allowed(&[a3])).unwrap(), 1);
    assert_eq!(heads(db, &[a2, a3]), vec![a2]);
    let a4 = db.write(|tx| tx.enqueue(&[keyed("a")], t0 + 6)).unwrap()[0].id;
    assert_eq!(
        heads(db, &[a2, a4]),
        vec![a2],
        "a new job waits behind the head"
    );
    assert_eq!(db.write(|tx| tx.delete_where_allowed(&[a2])).unwrap(), 1);
    assert_eq!(
        heads(db, &[a2, a4]),
        vec![a4],
        "a deleted head lets the next go"
    );

    // b2, cancelled while it waited, sent round again once its key has no other
    // unfinished job: it is the head, and runs.
    db.write(|tx| tx.revive(&[b2], t0 + 8)).unwrap();
    assert_eq!(
        heads(db, &[b1, b2]),
        vec![b2],
        "a revived job heads an empty line"
    );
    // Sent round again while its key has a head: it waits.
    db.write(|tx| tx.revive_where_allowed(&[b1], t0 + 8))
        .unwrap();
    assert_eq!(heads(db, &[b1, b2]), vec![b2]);
    let (claimed, _) = claim(db, &any(10), t0 + 8);
    assert_eq!(claimed, vec![c2, a4, b2]);

    // A follow-up with a key waits behind that key's head; a job buried unborn lets
    // nobody through but the next of its key.
    let with_follow_up = Resolution::Succeeded {
        follow_ups: vec![keyed("b")],
        sync_marks: vec![],
    };
    complete(db, b2, 1, with_follow_up, t0 + 9);
    let b3 = db
        .list(&jobd::store::JobFilter::default())
        .unwrap()
        .iter()
        .map(|j| j.id)
        .max()
        .unwrap();
    assert_eq!(
        heads(db, &[b1, b2, b3]),
        vec![b1],
        "the revived b1 heads its line"
    );
    assert!(db.get(b3).unwrap().order_blocked);
    let a5 = db
        .write(|tx| {
            let id = tx.enqueue(&[keyed("a")], t0 + 10)?[0].id;
            tx.bury_unborn(id, "never complete", t0 + 10)?;
            Ok(id)
        })
        .unwrap();
    assert_eq!(heads(db, &[a4, a5]), vec![a4]);
    complete(db, a4, 1, done.clone(), t0 + 11);
    assert!(heads(db, &[a4, a5]).is_empty(), "line a is empty");

    // Every dead job sent round again at once: one head per key.
    let dead = Resolution::Dead {
        error: "boom".into(),
        follow_ups: vec![],
    };
    let (claimed, _) = claim(db, &any(10), t0 + 12);
    assert_eq!(claimed, vec![b1]);
    complete(db, b1, 1, dead, t0 + 13);
    assert_eq!(heads(db, &[b1, b3]), vec![b3]);
    db.write(|tx| tx.revive_dead(None, t0 + 14)).unwrap();
    assert_eq!(heads(db, &[b1, b3]), vec![b3], "b1 waits behind b3 now");
    assert_eq!(
        heads(db, &[c1, c2]),
        vec![c2],
        "c1 waits behind the running c2"
    );
    assert_eq!(heads(db, &[a5]), vec![a5], "a5 heads the empty line a");

    // A head that has not started (due later) cancelled lets the next go; so does a
    // head buried unborn in the transaction that enqueued it.
    let later = db
        .write(|tx| tx.enqueue(&[keyed("d").run_at(t0 + 86_400_000), keyed("d")], t0 + 15))
        .unwrap();
    let (d1, d2) = (later[0].id, later[1].id);
    db.write(|tx| tx.cancel(d1, t0 + 16)).unwrap();
    assert_eq!(
        heads(db, &[d1, d2]),
        vec![d2],
        "a cancelled head lets the next go"
    );
    let (e1, e2) = db
        .write(|tx| {
            let ids = tx.enqueue(&[keyed("e"), keyed("e")], t0 + 17)?;
            tx.bury_unborn(ids[0].id, "never complete", t0 + 17)?;
            Ok((ids[0].id, ids[1].id))
        })
        .unwrap();
    assert_eq!(
        heads(db, &[e1, e2]),
        vec![e2],
        "a buried head lets the next go"
    );

    // Two finished jobs sent round together into an empty line go in id order, whatever
    // flags they finished with: f2 was cancelled waiting, f3 as the head.
    let f: Vec<i64> = db
        .write(|tx| tx.enqueue(&[keyed("f"), keyed("f"), keyed("f")], t0 + 18))
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    db.write(|tx| tx.cancel(f[1], t0 + 18)).unwrap();
    db.write(|tx| tx.cancel(f[0], t0 + 18)).unwrap();
    assert_eq!(heads(db, &f), vec![f[2]]);
    db.write(|tx| tx.cancel(f[2], t0 + 18)).unwrap();
    db.write(|tx| tx.revive(&[f[2], f[1]], t0 + 19)).unwrap();
    assert_eq!(
        heads(db, &f),
        vec![f[1]],
        "the first in id order heads the line"
    );
}
