//! Migrations: `migrations/NNNN_name.sql`, embedded in the binary, applied in order and
//! tracked by `PRAGMA user_version`.

use super::{Result, StoreError};
use rusqlite::Connection;

/// Every migration, in order; the schema version is the number applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_ingest",
        include_str!("../../migrations/0002_ingest.sql"),
    ),
    (
        "0003_sync_state",
        include_str!("../../migrations/0003_sync_state.sql"),
    ),
    (
        "0005_operator",
        include_str!("../../migrations/0005_operator.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Applies the migrations a database lacks, each in its own transaction. Returns the
/// names applied.
pub fn migrate(conn: &Connection) -> Result<Vec<&'static str>> {
    let found = user_version(conn)?;
    if found > latest_version() {
        return Err(StoreError::TooNew {
            found,
            known: latest_version(),
        });
    }
    let mut applied = Vec::new();
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        applied.push(*name);
    }
    Ok(applied)
}

/// Refuses a database whose schema is not the one this build writes.
pub fn check_version(conn: &Connection) -> Result<()> {
    let found = user_version(conn)?;
    let known = latest_version();
    match found.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::TooNew { found, known }),
        std::cmp::Ordering::Less => Err(StoreError::Outdated { found, known }),
    }
}
