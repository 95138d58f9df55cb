//! Flow control's state on PostgreSQL (`destination_state`, migration postgres/0002):
//! holds (set, merged, released, parking a held destination's waiting rows), routing and
//! parking at enqueue, the token buckets and in-flight counts a claim draws on under the
//! destination's row lock ([`PgFlowBudget`]), and the operator's views. The rules
//! themselves are in [`crate::flow`]; `order_blocked` is kept by the migration's triggers.

use super::super::Result;
use super::{PgStore, PgTx};
use crate::flow::{
    merge_hold, Bucket, DestinationLimit, DestinationView, DestinationViews, HoldRequest,
    StoredHold,
};
use crate::job::{JobId, NewJob, UnixMillis};
use crate::store::{DestinationHold, StoreError};
use std::collections::HashMap;

/// A destination and the key splitting it.
type DestinationKey = (String, String);

const HOLD_COLUMNS: &str = "held_until, held_at, hold_status, hold_reason";

fn hold_from_row(destination: &str, flow_key: &str, row: &postgres::Row) -> DestinationHold {
    DestinationHold {
        destination: destination.to_string(),
        flow_key: flow_key.to_string(),
        until: row.get(0),
        held_at: row.get(1),
        status: row.get::<_, Option<i32>>(2).map(|s| s.clamp(0, 999) as u16),
        reason: row.get(3),
    }
}

impl PgTx<'_> {
    /// Holds a destination (and key) until `hold.until` (see
    /// [`crate::store::StoreTx::hold_destination`]). The state row is locked first, so
    /// two daemons holding one destination at once merge their holds.
    pub fn hold_destination(
        &self,
        hold: &HoldRequest,
        now: UnixMillis,
    ) -> Result<Option<UnixMillis>> {
        hold.validate()
            .map_err(|e| StoreError::InvalidJob(e.to_string()))?;
        self.lock_state_row(&hold.destination, &hold.flow_key, now)?;
        let current = self
            .rows(
                "SELECT held_until FROM destination_state \
                 WHERE destination = $1 AND flow_key = $2",
                &[&hold.destination, &hold.flow_key],
            )?
            .first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .filter(|until| *until > now);
        let Some(until) = merge_hold(current, hold.until, now) else {
            return Ok(None);
        };
        let status = hold.status.map(i32::from);
        self.run(
            "UPDATE destination_state SET held_until = $3, held_at = $4, hold_status = $5, \
             hold_reason = $6, updated_at = $4 WHERE destination = $1 AND flow_key = $2",
            &[
                &hold.destination,
                &hold.flow_key,
                &until,
                &now,
                &status,
                &hold.reason,
            ],
        )?;
        self.run(
            "UPDATE jobs SET run_at = $3 WHERE destination = $1 AND flow_key = $2 \
             AND state IN ('queued', 'retrying') AND run_at < $3",
            &[&hold.destination, &hold.flow_key, &until],
        )?;
        Ok(Some(until))
    }

    /// Ends a destination's hold now; the rows it parked are due at once.
    pub fn release_destination(
        &self,
        destination: &str,
        flow_key: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        let rows = self.rows(
            "SELECT held_until FROM destination_state WHERE destination = $1 \
             AND flow_key = $2 AND held_until IS NOT NULL FOR UPDATE",
            &[&destination, &flow_key],
        )?;
        let Some(until) = rows.first().map(|r| r.get::<_, i64>(0)) else {
            return Ok(false);
        };
        self.run(
            "UPDATE destination_state SET held_until = NULL, held_at = NULL, \
             hold_status = NULL, hold_reason = NULL, updated_at = $3 \
             WHERE destination = $1 AND flow_key = $2",
            &[&destination, &flow_key, &now],
        )?;
        if until <= now {
            return Ok(false);
        }
        // Rows the hold parked sit exactly at its end; rows due later keep their time.
        self.run(
            "UPDATE jobs SET run_at = $4 WHERE destination = $1 AND flow_key = $2 \
             AND state IN ('queued', 'retrying') AND run_at = $3",
            &[&destination, &flow_key, &until, &now],
        )?;
        Ok(true)
    }

    /// Makes sure the destination's state row exists, then locks it for this
    /// transaction: holds and claims of one destination take turns across daemons.
    fn lock_state_row(&self, destination: &str, flow_key: &str, now: UnixMillis) -> Result<()> {
        self.run(
            "INSERT INTO destination_state (destination, flow_key, updated_at) \
             VALUES ($1, $2, $3) ON CONFLICT (destination, flow_key) DO NOTHING",
            &[&destination, &flow_key, &now],
        )?;
        self.run(
            "SELECT 1 FROM destination_state WHERE destination = $1 AND flow_key = $2 \
             FOR UPDATE",
            &[&destination, &flow_key],
        )?;
        Ok(())
    }

    /// The jobs with their routes where the router gives one, and those of a held
    /// destination due when its hold ends; `None` when nothing changes. (The claim
    /// also skips held destinations' rows, so a hold set while this commits holds.)
    pub(super) fn routed(&self, jobs: &[NewJob], now: UnixMillis) -> Result<Option<Vec<NewJob>>> {
        let mut routed: Option<Vec<NewJob>> = None;
        if let Some(router) = self.router {
            for (i, job) in jobs.iter().enumerate() {
                if let Some(job) = crate::flow::apply_route(router, job) {
                    routed.get_or_insert_with(|| jobs.to_vec())[i] = job;
                }
            }
        }
        let current = routed.as_deref().unwrap_or(jobs);
        if current.iter().all(|j| j.destination.is_none()) {
            return Ok(routed);
        }
        let holds: HashMap<DestinationKey, UnixMillis> = self
            .rows(
                "SELECT destination, flow_key, held_until FROM destination_state \
                 WHERE held_until > $1",
                &[&now],
            )?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        if holds.is_empty() {
            return Ok(routed);
        }
        let mut parked = routed.unwrap_or_else(|| jobs.to_vec());
        for job in &mut parked {
            if let Some(destination) = &job.destination {
                let key = (
                    destination.clone(),
                    job.flow_key.clone().unwrap_or_default(),
                );
                if let Some(until) = holds.get(&key) {
                    job.run_at = Some(job.run_at.unwrap_or(now).max(*until));
                }
            }
        }
        Ok(Some(parked))
    }
}

/// One destination and key's room in a claim, read under its row lock.
struct Room {
    bucket: Option<Bucket>,
    in_flight: u64,
    drew: bool,
}

/// What one claim may take of each limited destination: its tokens (refilled to `now`)
/// and its room under `max_in_flight`, both read with the destination's state row
/// locked (`FOR UPDATE`), so a second daemon's claim of the destination waits until
/// this one commits and then sees its tokens spent and its jobs running.
pub(super) struct PgFlowBudget<'l> {
    limits: &'l [DestinationLimit],
    now: UnixMillis,
    rooms: HashMap<DestinationKey, Room>,
    wake_at: Option<UnixMillis>,
}

impl<'l> PgFlowBudget<'l> {
    pub(super) fn new(limits: &'l [DestinationLimit], now: UnixMillis) -> PgFlowBudget<'l> {
        PgFlowBudget {
            limits,
            now,
            rooms: HashMap::new(),
            wake_at: None,
        }
    }

    pub(super) fn limits_anything(&self) -> bool {
        !self.limits.is_empty()
    }

    fn limit_of(&self, destination: &str) -> Option<&'l DestinationLimit> {
        self.limits.iter().find(|l| l.destination == destination)
    }

    /// Locks and reads the state of every limited destination among `keys`, in sorted
    /// order (claims lock in one order, so they never deadlock on each other).
    pub(super) fn load(&mut self, tx: &PgTx<'_>, keys: &[(Option<String>, String)]) -> Result<()> {
        let mut wanted: Vec<DestinationKey> = keys
            .iter()
            .filter_map(|(d, k)| d.as_ref().map(|d| (d.clone(), k.clone())))
            .filter(|(d, _)| self.limit_of(d).is_some())
            .collect();
        wanted.sort();
        wanted.dedup();
        for (destination, flow_key) in wanted {
            let limit = self.limit_of(&destination).expect("filtered");
            tx.lock_state_row(&destination, &flow_key, self.now)?;
            let bucket = match limit.rate_per_second {
                Some(rate) => {
                    let stored = tx
                        .rows(
                            "SELECT tokens, refilled_at FROM destination_state \
                             WHERE destination = $1 AND flow_key = $2 \
                             AND tokens IS NOT NULL AND refilled_at IS NOT NULL",
                            &[&destination, &flow_key],
                        )?
                        .first()
                        .map(|r| Bucket {
                            tokens: r.get(0),
                            refilled_at: r.get(1),
                        });
                    Some(
                        stored
                            .unwrap_or_else(|| Bucket::full(limit.burst, self.now))
                            .refilled(rate, limit.burst, self.now),
                    )
                }
                None => None,
            };
            let in_flight = match limit.max_in_flight {
                Some(_) => tx
                    .rows(
                        "SELECT count(*) FROM jobs WHERE state = 'running' \
                         AND destination = $1 AND flow_key = $2",
                        &[&destination, &flow_key],
                    )?
                    .first()
                    .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64),
                None => 0,
            };
            self.rooms.insert(
                (destination, flow_key),
                Room {
                    bucket,
                    in_flight,
                    drew: false,
                },
            );
        }
        Ok(())
    }

    /// Takes one row of `destination`/`flow_key` if its limits allow, drawing a token.
    pub(super) fn admit(&mut self, destination: Option<&str>, flow_key: &str) -> bool {
        let Some(destination) = destination else {
            return true;
        };
        let Some(limit) = self.limit_of(destination) else {
            return true;
        };
        let key = (destination.to_string(), flow_key.to_string());
        let Some(room) = self.rooms.get_mut(&key) else {
            // Not loaded: the claim did not lock it, so it takes none of it.
            return false;
        };
        if limit
            .max_in_flight
            .is_some_and(|max| room.in_flight >= u64::from(max))
        {
            return false;
        }
        if let Some(bucket) = &mut room.bucket {
            if bucket.whole() == 0 {
                let rate = limit.rate_per_second.unwrap_or(0.0);
                if let Some(at) = bucket.next_token_at(rate) {
                    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                }
                return false;
            }
            bucket.tokens -= 1.0;
            room.drew = true;
        }
        room.in_flight += 1;
        true
    }

    /// Writes back the buckets drawn from; returns when a destination that turned rows
    /// away has its next token.
    pub(super) fn finish(self, tx: &PgTx<'_>) -> Result<Option<UnixMillis>> {
        for ((destination, flow_key), room) in &self.rooms {
            if let (true, Some(bucket)) = (room.drew, room.bucket) {
                tx.run(
                    "UPDATE destination_state SET tokens = $3, refilled_at = $4, \
                     updated_at = $4 WHERE destination = $1 AND flow_key = $2",
                    &[destination, flow_key, &bucket.tokens, &bucket.refilled_at],
                )?;
            }
        }
        Ok(self.wake_at)
    }
}

impl PgStore {
    /// A destination's hold, if one was set (it may have ended: compare with now).
    pub fn destination_hold(
        &self,
        destination: &str,
        flow_key: &str,
    ) -> Result<Option<DestinationHold>> {
        let mut conn = self.connection()?;
        let rows = conn.query(
            &format!(
                "SELECT {HOLD_COLUMNS} FROM destination_state WHERE destination = $1 \
                 AND flow_key = $2 AND held_until IS NOT NULL"
            ),
            &[&destination, &flow_key],
        )?;
        Ok(rows
            .first()
            .map(|row| hold_from_row(destination, flow_key, row)))
    }

    /// The unfinished head of an order key.
    pub fn order_head(&self, order_key: &str) -> Result<Option<JobId>> {
        let mut conn = self.connection()?;
        let row = conn.query_one(
            "SELECT min(id) FROM jobs WHERE order_key = $1 AND NOT order_blocked \
             AND state IN ('queued', 'running', 'retrying', 'waiting')",
            &[&order_key],
        )?;
        Ok(row.get(0))
    }

    /// Every destination and key that has limits, state, waiting or running jobs (see
    /// [`crate::store::Store::destinations`]), sorted by destination, then key.
    pub fn destinations(
        &self,
        limits: &[DestinationLimit],
        now: UnixMillis,
    ) -> Result<Vec<DestinationView>> {
        let mut conn = self.connection()?;
        let mut views = DestinationViews::new(limits, now);
        let state = conn.query(
            &format!(
                "SELECT destination, flow_key, {HOLD_COLUMNS}, tokens, refilled_at \
                 FROM destination_state"
            ),
            &[],
        )?;
        for row in &state {
            let destination: String = row.get(0);
            let key: String = row.get(1);
            let hold = StoredHold {
                until: row.get(2),
                at: row.get(3),
                status: row.get::<_, Option<i32>>(4).map(|s| s.clamp(0, 999) as u16),
                reason: row.get(5),
            };
            let tokens: Option<f64> = row.get(6);
            let refilled_at: Option<UnixMillis> = row.get(7);
            let bucket = tokens.zip(refilled_at).map(|(tokens, refilled_at)| Bucket {
                tokens,
                refilled_at,
            });
            views.stored(&destination, &key, hold, bucket);
        }
        let counts = conn.query(
            "SELECT destination, flow_key, \
             count(*) FILTER (WHERE state IN ('queued', 'retrying')), \
             count(*) FILTER (WHERE state = 'running') \
             FROM jobs WHERE destination IS NOT NULL \
             AND state IN ('queued', 'retrying', 'running') GROUP BY destination, flow_key",
            &[],
        )?;
        for row in &counts {
            let destination: String = row.get(0);
            let key: String = row.get(1);
            views.waiting(&destination, &key, row.get::<_, i64>(2).max(0) as u64);
            views.in_flight(&destination, &key, row.get::<_, i64>(3).max(0) as u64);
        }
        Ok(views.finish())
    }
}
