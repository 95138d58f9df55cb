//! PostgreSQL migrations: `migrations/postgres/NNNN_name.sql`, embedded in the binary,
//! applied in order and tracked in `jobd_migrations`. One process migrates at a time:
//! each migration's transaction first takes a transaction-level advisory lock, then
//! re-reads the version, so daemons starting together apply each migration once.

use super::super::{Result, StoreError};
use postgres::GenericClient;

/// Every PostgreSQL migration, in order; the schema version is the number applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_flow_control",
        include_str!("../../../migrations/postgres/0002_flow_control.sql"),
    ),
    (
        "0003_web",
        include_str!("../../../migrations/postgres/0003_web.sql"),
    ),
    (
        "0004_drain_work",
        include_str!("../../../migrations/postgres/0004_drain_work.sql"),
    ),
];

/// The advisory lock key migrations hold (`pg_advisory_xact_lock`): "jobd" and 1.
pub const MIGRATION_LOCK: i64 = 0x6a6f_6264_0000_0001;

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS jobd_migrations (\
     version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)";

/// The version applied: 0 for a database jobd has not touched.
pub fn version(client: &mut impl GenericClient) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('jobd_migrations') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM jobd_migrations", &[])?
        .get(0);
    Ok(i64::from(version.unwrap_or(0)))
}

/// Refuses a schema newer or older than this build's.
pub fn check_version(client: &mut impl GenericClient) -> Result<()> {
    let found = version(client)?;
    match found.cmp(&latest_version()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::TooNew {
            found,
            known: latest_version(),
        }),
        std::cmp::Ordering::Less => Err(StoreError::Outdated {
            found,
            known: latest_version(),
        }),
    }
}

/// Applies the migrations the database lacks, each in its own transaction under the
/// migration lock. Returns the names applied (by this call: another daemon may have
/// applied the rest).
pub fn migrate(client: &mut postgres::Client) -> Result<Vec<&'static str>> {
    let mut applied = Vec::new();
    loop {
        let mut tx = client.transaction()?;
        tx.batch_execute("SET LOCAL client_min_messages = warning")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(CREATE_TABLE)?;
        let found = version(&mut tx)?;
        if found > latest_version() {
            return Err(StoreError::TooNew {
                found,
                known: latest_version(),
            });
        }
        let Some((name, sql)) = MIGRATIONS.get(found as usize) else {
            tx.commit()?;
            return Ok(applied);
        };
        tx.batch_execute(sql).map_err(|e| {
            StoreError::MigrationRefused(format!("{name}: {}", StoreError::from(e)))
        })?;
        let version = (found + 1) as i32;
        tx.execute(
            "INSERT INTO jobd_migrations (version, name, applied_at) VALUES ($1, $2, jobd_now_ms())",
            &[&version, name],
        )?;
        tx.commit()?;
        applied.push(*name);
    }
}
