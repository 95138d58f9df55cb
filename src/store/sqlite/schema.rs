//! Migrations: `migrations/NNNN_name.sql`, embedded in the binary, applied in order and
//! tracked by `PRAGMA user_version`.

use super::{Result, StoreError};
use rusqlite::Connection;

/// Every migration, in order; the schema version is the number applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/0001_init.sql"),
    ),
    (
        "0002_ingest",
        include_str!("../../../migrations/0002_ingest.sql"),
    ),
    (
        "0003_sync_state",
        include_str!("../../../migrations/0003_sync_state.sql"),
    ),
    (
        "0004_portable_schema",
        include_str!("../../../migrations/0004_portable_schema.sql"),
    ),
    (
        "0005_operator",
        include_str!("../../../migrations/0005_operator.sql"),
    ),
    (
        "0006_queue_ready",
        include_str!("../../../migrations/0006_queue_ready.sql"),
    ),
    (
        "0007_attempt_start_us",
        include_str!("../../../migrations/0007_attempt_start_us.sql"),
    ),
    (
        "0008_flow_control",
        include_str!("../../../migrations/0008_flow_control.sql"),
    ),
    (
        "0009_one_ready_index",
        include_str!("../../../migrations/0009_one_ready_index.sql"),
    ),
    (
        "0010_order_triggers_on_finish",
        include_str!("../../../migrations/0010_order_triggers_on_finish.sql"),
    ),
    (
        "0011_one_order_finish_trigger",
        include_str!("../../../migrations/0011_one_order_finish_trigger.sql"),
    ),
    (
        "0012_revived_order_heads",
        include_str!("../../../migrations/0012_revived_order_heads.sql"),
    ),
    (
        "0013_no_due_index",
        include_str!("../../../migrations/0013_no_due_index.sql"),
    ),
];

/// The version whose CHECK constraints bound queue and kind names.
const NAME_CHECKS_VERSION: i64 = 4;

/// A name the schema accepts for a queue or a kind: 1 to 64 of `A-Za-z0-9_.:-`.
/// The same rule as the CHECK constraints of migration 0004.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

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
    // Table rebuilds drop and rename tables: with foreign keys on, dropping `jobs` would
    // delete every attempt (ON DELETE CASCADE). The pragma cannot change inside a
    // transaction, so it is off around each migration, and the keys are checked before
    // each commit instead.
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let result = (|| {
        for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as i64 + 1;
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let step = (|| {
                if version == NAME_CHECKS_VERSION {
                    refuse_bad_names(conn)?;
                }
                conn.execute_batch(&format!("{sql}\nPRAGMA user_version = {version};"))?;
                foreign_key_check(conn, name)?;
                conn.execute_batch("COMMIT")?;
                Ok(())
            })();
            if let Err(e) = step {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
            applied.push(*name);
        }
        Ok(())
    })();
    if foreign_keys {
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
    }
    result.map(|()| applied)
}

/// Rows whose queue or kind the name CHECKs of version 4 would refuse: the migration is
/// refused, naming them, rather than changing where a job runs or losing it.
fn refuse_bad_names(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT id, queue, kind FROM jobs ORDER BY id")?;
    let mut bad = Vec::new();
    let mut count = 0usize;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, rusqlite::types::Value>(1)?,
            row.get::<_, rusqlite::types::Value>(2)?,
        ))
    })?;
    for row in rows {
        let (id, queue, kind) = row?;
        for (column, value) in [("queue", queue), ("kind", kind)] {
            let ok = matches!(&value, rusqlite::types::Value::Text(t) if valid_name(t));
            if !ok {
                count += 1;
                if bad.len() < 10 {
                    bad.push(format!("job {id} {column} {}", shown(&value)));
                }
            }
        }
    }
    if count == 0 {
        return Ok(());
    }
    let more = if count > bad.len() {
        format!(" and {} more", count - bad.len())
    } else {
        String::new()
    };
    Err(StoreError::MigrationRefused(format!(
        "migration 0004 needs queue and kind names of 1 to 64 characters of A-Za-z0-9_.:-; \
         these rows break the rule: {}{more}. Nothing was changed. Rename them (for example \
         sqlite3 DB \"UPDATE jobs SET queue = 'default' WHERE id = N\") or delete them, \
         then start again",
        bad.join(", ")
    )))
}

/// A stored value as a short, printable quote (a bad name may be long or hold control
/// characters).
fn shown(value: &rusqlite::types::Value) -> String {
    use rusqlite::types::Value;
    match value {
        Value::Text(t) => {
            let short: String = t.chars().take(40).collect();
            let cut = if short.len() < t.len() { "..." } else { "" };
            format!("{:?}{cut} ({} characters)", short, t.chars().count())
        }
        Value::Null => "NULL".into(),
        Value::Integer(n) => format!("{n} (an integer)"),
        Value::Real(x) => format!("{x} (a real)"),
        Value::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

fn foreign_key_check(conn: &Connection, migration: &str) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let broken: Vec<String> = stmt
        .query_map([], |row| {
            Ok(format!(
                "{} row {}",
                row.get::<_, String>(0)?,
                row.get::<_, Option<i64>>(1)?.unwrap_or(-1)
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if broken.is_empty() {
        return Ok(());
    }
    Err(StoreError::MigrationRefused(format!(
        "migration {migration} would leave foreign keys broken: {}",
        broken.join(", ")
    )))
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
