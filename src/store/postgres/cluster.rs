//! The daemons sharing one PostgreSQL database: each node holds its row in `jobd_nodes`
//! by a lease (a second daemon with the same node name is refused while it is live), and
//! one of them is the leader by the lease row in `jobd_leader` (River's model: elect with
//! `INSERT ... ON CONFLICT DO NOTHING`, keep it with an UPDATE guarded by holder and
//! expiry, resign by deleting it). Only the leader runs pipeline schedules, retention
//! purges and folder-set timeouts.

use super::super::{Result, StoreError};
use super::PgStore;
use crate::job::UnixMillis;
use std::time::Duration;

/// How long a leader's lease lasts without renewal.
pub const LEADER_TTL: Duration = Duration::from_secs(15);

/// A node's hold on its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    pub node: String,
    /// Which start of the node this is (random per process).
    pub instance: String,
    pub lease_until: UnixMillis,
}

/// What the leader election said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The node holding the lease (maybe this one).
    pub holder: String,
    pub lease_until: UnixMillis,
    /// This node holds it.
    pub mine: bool,
}

impl PgStore {
    /// Takes this node's row for `lease`: refused while another process holds it with a
    /// live lease (two daemons with one node name would rescue each other's jobs).
    pub fn register_node(&self, lease: Duration, now: UnixMillis) -> Result<NodeLease> {
        let node = self.node().to_string();
        let instance = format!("{:016x}", fastrand::u64(..));
        let until = now + lease.as_millis() as i64;
        let pid = std::process::id() as i32;
        let mut conn = self.connection()?;
        let rows = conn.query(
            "INSERT INTO jobd_nodes (node, lease_until, started_at, heartbeat_at, instance, pid) \
             VALUES ($1, $2, $3, $3, $4, $5) ON CONFLICT (node) DO UPDATE SET \
               lease_until = excluded.lease_until, started_at = excluded.started_at, \
               heartbeat_at = excluded.heartbeat_at, instance = excluded.instance, \
               pid = excluded.pid \
             WHERE jobd_nodes.lease_until < $3 RETURNING node",
            &[&node, &until, &now, &instance, &pid],
        )?;
        if rows.is_empty() {
            let holder = conn.query_opt(
                "SELECT lease_until, pid FROM jobd_nodes WHERE node = $1",
                &[&node],
            )?;
            let (held_until, pid): (i64, Option<i32>) =
                holder.map_or((now, None), |r| (r.get(0), r.get(1)));
            return Err(StoreError::Postgres(format!(
                "node '{node}' is held by another running jobd (pid {} on its machine) until {}; \
                 give each daemon its own daemon.node, or wait for that lease to run out",
                pid.map_or("unknown".into(), |p| p.to_string()),
                crate::clock::format_millis(held_until)
            )));
        }
        Ok(NodeLease {
            node,
            instance,
            lease_until: until,
        })
    }

    /// Renews this node's lease. Fails if another process took the name over (our lease
    /// had run out): the daemon must stop claiming then.
    pub fn renew_node(
        &self,
        held: &NodeLease,
        lease: Duration,
        now: UnixMillis,
    ) -> Result<NodeLease> {
        let until = now + lease.as_millis() as i64;
        let changed = self.connection()?.execute(
            "UPDATE jobd_nodes SET lease_until = $3, heartbeat_at = $4 \
             WHERE node = $1 AND instance = $2",
            &[&held.node, &held.instance, &until, &now],
        )?;
        if changed != 1 {
            return Err(StoreError::Postgres(format!(
                "node '{}' was taken over by another jobd after this one's lease ran out",
                held.node
            )));
        }
        Ok(NodeLease {
            lease_until: until,
            ..held.clone()
        })
    }

    /// Gives the node's name back (shutdown), so a restart need not wait for the lease.
    pub fn release_node(&self, held: &NodeLease) -> Result<()> {
        self.connection()?.execute(
            "DELETE FROM jobd_nodes WHERE node = $1 AND instance = $2",
            &[&held.node, &held.instance],
        )?;
        Ok(())
    }

    /// The nodes with a live lease at `now`.
    pub fn live_nodes(&self, now: UnixMillis) -> Result<Vec<(String, UnixMillis)>> {
        Ok(self
            .connection()?
            .query(
                "SELECT node, lease_until FROM jobd_nodes WHERE lease_until >= $1 ORDER BY node",
                &[&now],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Elects this node if nobody leads (or the leader's lease ran out), or renews its
    /// lease if it leads. Returns who leads now.
    pub fn elect(&self, ttl: Duration, now: UnixMillis) -> Result<Leadership> {
        let node = self.node();
        let until = now + ttl.as_millis() as i64;
        let mut conn = self.connection()?;
        let inserted = conn.execute(
            "INSERT INTO jobd_leader (role, holder, lease_until, elected_at) \
             VALUES ('leader', $1, $2, $3) ON CONFLICT (role) DO NOTHING",
            &[&node, &until, &now],
        )?;
        if inserted == 1 {
            return Ok(Leadership {
                holder: node.into(),
                lease_until: until,
                mine: true,
            });
        }
        // Kept by its holder, or taken over once the lease ran out.
        let updated = conn.execute(
            "UPDATE jobd_leader SET holder = $1, lease_until = $2, \
               elected_at = CASE WHEN holder = $1 THEN elected_at ELSE $3 END \
             WHERE role = 'leader' AND (holder = $1 OR lease_until < $3)",
            &[&node, &until, &now],
        )?;
        if updated == 1 {
            return Ok(Leadership {
                holder: node.into(),
                lease_until: until,
                mine: true,
            });
        }
        let row = conn.query_opt(
            "SELECT holder, lease_until FROM jobd_leader WHERE role = 'leader'",
            &[],
        )?;
        Ok(match row {
            Some(r) => Leadership {
                holder: r.get(0),
                lease_until: r.get(1),
                mine: false,
            },
            // Resigned between the two statements: try again at the next tick.
            None => Leadership {
                holder: String::new(),
                lease_until: now,
                mine: false,
            },
        })
    }

    /// Gives leadership up (shutdown), so another node takes over at its next tick.
    pub fn resign(&self) -> Result<bool> {
        Ok(self.connection()?.execute(
            "DELETE FROM jobd_leader WHERE role = 'leader' AND holder = $1",
            &[&self.node()],
        )? == 1)
    }

    /// The leader now, if its lease is live.
    pub fn leader(&self, now: UnixMillis) -> Result<Option<String>> {
        Ok(self
            .connection()?
            .query_opt(
                "SELECT holder FROM jobd_leader WHERE role = 'leader' AND lease_until >= $1",
                &[&now],
            )?
            .map(|r| r.get(0)))
    }
}
