//! Flow control's state in the queue database (`destination_state`, migration 0008):
//! holds (set, merged, released, and the parking of a held destination's waiting rows),
//! the token buckets and in-flight counts a claim draws on ([`FlowBudget`]), and the
//! operator's view of every destination. The rules themselves are in [`crate::flow`].

use super::guards::with_guards;
use super::{Result, SqliteStore, SqliteTx};
use crate::flow::{
    merge_hold, Bucket, DestinationLimit, DestinationView, DestinationViews, HoldRequest,
    StoredHold,
};
use crate::job::UnixMillis;
use crate::store::{DestinationHold, StoreError};
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;

/// A waiting row of a destination: `(destination, flow_key)`.
type DestinationKey = (String, String);

fn hold_in(
    conn: &rusqlite::Connection,
    destination: &str,
    flow_key: &str,
) -> Result<Option<DestinationHold>> {
    Ok(conn
        .prepare_cached(
            "SELECT held_until, held_at, hold_status, hold_reason FROM destination_state \
             WHERE destination = ?1 AND flow_key = ?2 AND held_until IS NOT NULL",
        )?
        .query_row(params![destination, flow_key], |row| {
            Ok(DestinationHold {
                destination: destination.to_string(),
                flow_key: flow_key.to_string(),
                until: row.get(0)?,
                held_at: row.get(1)?,
                status: row.get(2)?,
                reason: row.get(3)?,
            })
        })
        .optional()?)
}

impl SqliteTx<'_> {
    /// Holds a destination (and key) until `hold.until`: no job of it is claimed before
    /// then, by any daemon; its waiting rows are parked (their `run_at` moved to the
    /// hold's end), so the claim never walks them and they are charged nothing. A hold
    /// never shortens a longer one and is capped ([`merge_hold`]). Returns the hold's
    /// new end, or `None` if a longer hold stands.
    pub fn hold_destination(
        &self,
        hold: &HoldRequest,
        now: UnixMillis,
    ) -> Result<Option<UnixMillis>> {
        hold.validate()
            .map_err(|e| StoreError::InvalidJob(e.to_string()))?;
        let current = hold_in(self.conn(), &hold.destination, &hold.flow_key)?
            .map(|h| h.until)
            .filter(|until| *until > now);
        let Some(until) = merge_hold(current, hold.until, now) else {
            return Ok(None);
        };
        self.conn()
            .prepare_cached(
                "INSERT INTO destination_state (destination, flow_key, held_until, held_at, \
                 hold_status, hold_reason, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4) \
                 ON CONFLICT (destination, flow_key) DO UPDATE SET held_until = ?3, \
                 held_at = ?4, hold_status = ?5, hold_reason = ?6, updated_at = ?4",
            )?
            .execute(params![
                hold.destination,
                hold.flow_key,
                until,
                now,
                hold.status,
                hold.reason
            ])?;
        self.conn()
            .prepare_cached(with_guards(
                "UPDATE jobs SET run_at = ?3 WHERE destination = ?1 AND flow_key = ?2 \
                 AND {ready} AND run_at < ?3",
            ))?
            .execute(params![hold.destination, hold.flow_key, until])?;
        Ok(Some(until))
    }

    /// Ends a destination's hold now (an operator's `jobctl release`): its parked rows
    /// are due at once. Returns whether it was held.
    pub fn release_destination(
        &self,
        destination: &str,
        flow_key: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        let Some(hold) = hold_in(self.conn(), destination, flow_key)? else {
            return Ok(false);
        };
        self.conn()
            .prepare_cached(
                "UPDATE destination_state SET held_until = NULL, held_at = NULL, \
                 hold_status = NULL, hold_reason = NULL, updated_at = ?3 \
                 WHERE destination = ?1 AND flow_key = ?2",
            )?
            .execute(params![destination, flow_key, now])?;
        if hold.until <= now {
            return Ok(false);
        }
        // Rows the hold parked sit exactly at its end; rows due later keep their time.
        self.conn()
            .prepare_cached(with_guards(
                "UPDATE jobs SET run_at = ?4 WHERE destination = ?1 AND flow_key = ?2 \
                 AND {ready} AND run_at = ?3",
            ))?
            .execute(params![destination, flow_key, hold.until, now])?;
        Ok(true)
    }

    /// The holds in force at `now`, by destination and key: an enqueue parks the new
    /// rows of a held destination like the hold parked the waiting ones.
    pub(super) fn holds_in_force(
        &self,
        now: UnixMillis,
    ) -> Result<HashMap<DestinationKey, UnixMillis>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT destination, flow_key, held_until FROM destination_state \
             WHERE held_until > ?1",
        )?;
        let rows = stmt.query_map([now], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Running jobs per destination and key (claimed ones included: they are about to
    /// send). Few rows: one per job in flight.
    fn running_per_destination(&self) -> Result<HashMap<DestinationKey, u64>> {
        running_per_destination_in(self.conn())
    }
}

fn running_per_destination_in(conn: &rusqlite::Connection) -> Result<HashMap<DestinationKey, u64>> {
    let mut stmt = conn.prepare_cached(with_guards(
        "SELECT destination, flow_key, count(*) FROM jobs INDEXED BY jobs_leases \
         WHERE {running} AND destination IS NOT NULL GROUP BY destination, flow_key",
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok(((row.get(0)?, row.get(1)?), row.get::<_, i64>(2)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn bucket_in(
    conn: &rusqlite::Connection,
    destination: &str,
    flow_key: &str,
) -> Result<Option<Bucket>> {
    Ok(conn
        .prepare_cached(
            "SELECT tokens, refilled_at FROM destination_state \
             WHERE destination = ?1 AND flow_key = ?2 AND tokens IS NOT NULL \
             AND refilled_at IS NOT NULL",
        )?
        .query_row(params![destination, flow_key], |row| {
            Ok(Bucket {
                tokens: row.get(0)?,
                refilled_at: row.get(1)?,
            })
        })
        .optional()?)
}

/// One destination and key's room in a claim.
struct Room {
    bucket: Option<Bucket>,
    in_flight: u64,
    /// Whether the bucket changed (and must be written back).
    drew: bool,
}

/// What one claim may still take of each limited destination: its tokens (refilled to
/// `now`) and its room under `max_in_flight`. Loaded the first time the claim meets a
/// destination, drawn from as rows are taken, and written back when the claim ends.
pub(super) struct FlowBudget<'l> {
    limits: &'l [DestinationLimit],
    now: UnixMillis,
    running: Option<HashMap<DestinationKey, u64>>,
    rooms: HashMap<DestinationKey, Room>,
    /// The earliest time a destination that turned a row away has room again by the
    /// clock (its next token); a destination full of running jobs gets room when one of
    /// them finishes, which wakes the dispatcher anyway.
    wake_at: Option<UnixMillis>,
}

impl<'l> FlowBudget<'l> {
    pub(super) fn new(limits: &'l [DestinationLimit], now: UnixMillis) -> FlowBudget<'l> {
        FlowBudget {
            limits,
            now,
            running: None,
            rooms: HashMap::new(),
            wake_at: None,
        }
    }

    /// Whether any destination has a limit: if none, a claim need not look at rows'
    /// destinations at all.
    pub(super) fn limits_anything(&self) -> bool {
        !self.limits.is_empty()
    }

    /// Takes one row of `destination`/`flow_key` if its limits allow, drawing a token.
    pub(super) fn admit(
        &mut self,
        tx: &SqliteTx<'_>,
        destination: Option<&str>,
        flow_key: &str,
    ) -> Result<bool> {
        let Some(destination) = destination else {
            return Ok(true);
        };
        let Some(limit) = self.limits.iter().find(|l| l.destination == destination) else {
            return Ok(true);
        };
        let key = (destination.to_string(), flow_key.to_string());
        if !self.rooms.contains_key(&key) {
            if self.running.is_none() && limit.max_in_flight.is_some() {
                self.running = Some(tx.running_per_destination()?);
            }
            let in_flight = self
                .running
                .as_ref()
                .and_then(|r| r.get(&key).copied())
                .unwrap_or(0);
            let bucket = match limit.rate_per_second {
                Some(rate) => Some(
                    bucket_in(tx.conn(), destination, flow_key)?
                        .unwrap_or_else(|| Bucket::full(limit.burst, self.now))
                        .refilled(rate, limit.burst, self.now),
                ),
                None => None,
            };
            self.rooms.insert(
                key.clone(),
                Room {
                    bucket,
                    in_flight,
                    drew: false,
                },
            );
        }
        let room = self.rooms.get_mut(&key).expect("just inserted");
        if limit
            .max_in_flight
            .is_some_and(|max| room.in_flight >= u64::from(max))
        {
            return Ok(false);
        }
        if let Some(bucket) = &mut room.bucket {
            if bucket.whole() == 0 {
                let rate = limit.rate_per_second.unwrap_or(0.0);
                if let Some(at) = bucket.next_token_at(rate) {
                    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                }
                return Ok(false);
            }
            bucket.tokens -= 1.0;
            room.drew = true;
        }
        room.in_flight += 1;
        Ok(true)
    }

    /// Writes back the buckets drawn from; returns when a destination that turned rows
    /// away has its next token.
    pub(super) fn finish(self, tx: &SqliteTx<'_>) -> Result<Option<UnixMillis>> {
        let mut stmt = tx.conn().prepare_cached(
            "INSERT INTO destination_state (destination, flow_key, tokens, refilled_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (destination, flow_key) \
             DO UPDATE SET tokens = ?3, refilled_at = ?4, updated_at = ?4",
        )?;
        for ((destination, flow_key), room) in &self.rooms {
            if let (true, Some(bucket)) = (room.drew, room.bucket) {
                stmt.execute(params![
                    destination,
                    flow_key,
                    bucket.tokens,
                    bucket.refilled_at
                ])?;
            }
        }
        Ok(self.wake_at)
    }
}

impl SqliteStore {
    /// A destination's hold, if one was set (it may have ended: compare with now).
    pub fn destination_hold(
        &self,
        destination: &str,
        flow_key: &str,
    ) -> Result<Option<DestinationHold>> {
        hold_in(&self.conn, destination, flow_key)
    }

    /// Every destination and key that has limits, state, waiting or running jobs, with
    /// its limits, tokens (refilled to `now`), jobs in flight and waiting, and its hold.
    /// Sorted by destination, then key.
    pub fn destinations(
        &self,
        limits: &[DestinationLimit],
        now: UnixMillis,
    ) -> Result<Vec<DestinationView>> {
        let mut views = DestinationViews::new(limits, now);
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT destination, flow_key, held_until, held_at, hold_status, hold_reason, \
                 tokens, refilled_at FROM destination_state",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let destination: String = row.get(0)?;
                let key: String = row.get(1)?;
                let hold = StoredHold {
                    until: row.get(2)?,
                    at: row.get(3)?,
                    status: row.get(4)?,
                    reason: row.get(5)?,
                };
                let tokens: Option<f64> = row.get(6)?;
                let refilled_at: Option<UnixMillis> = row.get(7)?;
                let bucket = tokens.zip(refilled_at).map(|(tokens, refilled_at)| Bucket {
                    tokens,
                    refilled_at,
                });
                views.stored(&destination, &key, hold, bucket);
            }
        }
        {
            let mut stmt = self.conn.prepare_cached(with_guards(
                "SELECT destination, flow_key, count(*) FROM jobs \
                 INDEXED BY jobs_destination_waiting \
                 WHERE {ready} AND destination IS NOT NULL GROUP BY destination, flow_key",
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let destination: String = row.get(0)?;
                let key: String = row.get(1)?;
                let waiting: i64 = row.get(2)?;
                views.waiting(&destination, &key, waiting as u64);
            }
        }
        for ((destination, key), running) in running_per_destination_in(&self.conn)? {
            views.in_flight(&destination, &key, running);
        }
        Ok(views.finish())
    }
}

impl SqliteStore {
    /// The job an order key's waiting jobs wait for: its unfinished head.
    pub fn order_head(&self, order_key: &str) -> Result<Option<crate::job::JobId>> {
        Ok(self
            .conn
            .prepare_cached(with_guards(
                "SELECT min(id) FROM jobs WHERE order_key = ?1 AND order_blocked = 0 \
                     AND {unfinished}",
            ))?
            .query_row([order_key], |row| row.get(0))?)
    }
}
