//! The `http_pull` sink: a SQLite file of its own (never the queue database), one table
//! per pipeline, items upserted by id so that an older `updated_at` never overwrites a
//! newer one. Its SQL lives here with the rest of the crate's.

use super::{Result, StoreError};
use crate::job::UnixMillis;
use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Columns every sink table has; configured extracted columns come after them.
pub const FIXED_COLUMNS: [&str; 5] = ["id", "updated_at", "updated_at_ms", "raw", "synced_at"];

/// Where and how one pipeline's items are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkTable {
    /// The table's name (an identifier: letters, digits, `_`).
    pub name: String,
    /// The item field holding its id (dotted path, e.g. `id`).
    pub id_field: String,
    /// The item field holding its last-change time (RFC 3339, e.g. `updated_at`).
    pub updated_field: String,
    /// Extracted columns: (column name, dotted field path), e.g. ("city", "default_address.city").
    pub columns: Vec<(String, String)>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Items inserted or updated.
    pub written: usize,
    /// Items not written because the stored copy is newer.
    pub kept_newer: usize,
    /// Items without a usable id (a number or a string).
    pub skipped: usize,
}

/// Whether a name may be a table or column name, unquoted in messages and quoted in SQL.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.to_ascii_lowercase().starts_with("sqlite_")
}

/// The value at a dotted path in an item (`default_address.city`).
pub fn field<'v>(item: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(item, |value, key| value.get(key))
        .filter(|v| !v.is_null())
}

/// An RFC 3339 time (Shopify's `2024-04-25T16:15:47-04:00`) as milliseconds; a bare
/// integer is taken as milliseconds already.
pub fn time_millis(value: &Value) -> Option<UnixMillis> {
    match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn sql_value(value: Option<&Value>) -> Sql {
    match value {
        None | Some(Value::Null) => Sql::Null,
        Some(Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => n.as_f64().map_or(Sql::Null, Sql::Real),
        },
        Some(Value::String(s)) => Sql::Text(s.clone()),
        Some(other) => Sql::Text(other.to_string()),
    }
}

/// One sink database file. Items are written with `synchronous=FULL`: a page's items
/// must be on disk before the queue records the page as done, or a power cut could
/// lose them while the queue moves on.
pub struct SinkDb {
    conn: Connection,
    path: PathBuf,
    /// Tables whose schema was checked for this set of columns.
    ready: HashSet<(String, Vec<String>)>,
}

impl SinkDb {
    pub fn open(path: &Path) -> Result<SinkDb> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::create_private_dir_all(parent).map_err(|e| {
                StoreError::CannotOpen(
                    path.to_path_buf(),
                    format!("cannot create {}: {e}", parent.display()),
                )
            })?;
        }
        let existed = path.exists();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::CannotOpen(path.to_path_buf(), e.to_string()))?;
        if !existed {
            super::restrict_permissions(path);
        }
        conn.busy_timeout(Duration::from_secs(10))?;
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(SinkDb {
            conn,
            path: path.to_path_buf(),
            ready: HashSet::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the table if missing and adds configured columns it lacks (rows stored
    /// before a column was added keep NULL there until they are written again).
    fn ensure_table(&mut self, table: &SinkTable) -> Result<()> {
        let columns: Vec<String> = table.columns.iter().map(|(c, _)| c.clone()).collect();
        let key = (table.name.clone(), columns.clone());
        if self.ready.contains(&key) {
            return Ok(());
        }
        for name in std::iter::once(&table.name).chain(&columns) {
            if !is_identifier(name) {
                return Err(StoreError::InvalidJob(format!(
                    "sink: '{name}' is not a valid table or column name"
                )));
            }
        }
        let name = &table.name;
        // No declared type on id: integers stay integers, strings stay strings.
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS \"{name}\" (\
               id PRIMARY KEY NOT NULL, \
               updated_at TEXT, \
               updated_at_ms INTEGER, \
               raw TEXT NOT NULL CHECK (json_valid(raw)), \
               synced_at INTEGER NOT NULL); \
             CREATE INDEX IF NOT EXISTS \"{name}_updated\" ON \"{name}\" (updated_at_ms);"
        ))?;
        let existing: HashSet<String> = self
            .conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for column in &columns {
            if !existing.contains(column) {
                self.conn
                    .execute_batch(&format!("ALTER TABLE \"{name}\" ADD COLUMN \"{column}\""))?;
            }
        }
        self.ready.insert(key);
        Ok(())
    }

    /// Upserts items by id in one transaction. An item replaces the stored one only if
    /// its `updated_at` is not older (equal rewrites, which is harmless and lets a page
    /// that ran twice land the same way); an item without a readable time never replaces
    /// one that has a time.
    pub fn upsert_items(
        &mut self,
        table: &SinkTable,
        items: &[Value],
        now: UnixMillis,
    ) -> Result<Upserted> {
        self.ensure_table(table)?;
        let name = &table.name;
        let extra: String = table
            .columns
            .iter()
            .map(|(c, _)| format!(", \"{c}\""))
            .collect();
        let marks: String = table.columns.iter().map(|_| ", ?").collect();
        let updates: String = table
            .columns
            .iter()
            .map(|(c, _)| format!(", \"{c}\" = excluded.\"{c}\""))
            .collect();
        let sql = format!(
            "INSERT INTO \"{name}\" (id, updated_at, updated_at_ms, raw, synced_at{extra}) \
             VALUES (?, ?, ?, ?, ?{marks}) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, \
               updated_at_ms = excluded.updated_at_ms, raw = excluded.raw, \
               synced_at = excluded.synced_at{updates} \
             WHERE \"{name}\".updated_at_ms IS NULL \
                OR excluded.updated_at_ms >= \"{name}\".updated_at_ms"
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut done = Upserted::default();
        {
            let mut insert = tx.prepare_cached(&sql)?;
            for item in items {
                let id = match field(item, &table.id_field) {
                    Some(v @ (Value::Number(_) | Value::String(_))) => sql_value(Some(v)),
                    _ => {
                        done.skipped += 1;
                        continue;
                    }
                };
                let updated = field(item, &table.updated_field);
                let mut values = vec![
                    id,
                    match updated {
                        Some(Value::String(s)) => Sql::Text(s.clone()),
                        other => sql_value(other),
                    },
                    updated
                        .and_then(time_millis)
                        .map_or(Sql::Null, Sql::Integer),
                    Sql::Text(item.to_string()),
                    Sql::Integer(now),
                ];
                values.extend(
                    table
                        .columns
                        .iter()
                        .map(|(_, path)| sql_value(field(item, path))),
                );
                if insert.execute(params_from_iter(values))? == 1 {
                    done.written += 1;
                } else {
                    done.kept_newer += 1;
                }
            }
        }
        tx.commit()?;
        Ok(done)
    }

    /// How many items a table holds (0 if it does not exist yet).
    pub fn count(&self, table: &str) -> Result<u64> {
        if !is_identifier(table) {
            return Ok(0);
        }
        let exists: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )?;
        if exists == 0 {
            return Ok(0);
        }
        let n: i64 =
            self.conn
                .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| {
                    row.get(0)
                })?;
        Ok(n as u64)
    }

    /// One stored item's raw JSON, by id.
    pub fn raw(&self, table: &str, id: &Value) -> Result<Option<Value>> {
        if !is_identifier(table) {
            return Ok(None);
        }
        let text: Option<String> = rusqlite::OptionalExtension::optional(self.conn.query_row(
            &format!("SELECT raw FROM \"{table}\" WHERE id = ?1"),
            [sql_value(Some(id))],
            |row| row.get(0),
        ))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn customers() -> SinkTable {
        SinkTable {
            name: "customers".into(),
            id_field: "id".into(),
            updated_field: "updated_at".into(),
            columns: vec![
                ("email".into(), "email".into()),
                ("city".into(), "default_address.city".into()),
            ],
        }
    }

    #[test]
    fn an_older_update_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SinkDb::open(&dir.path().join("sink.db")).unwrap();
        let table = customers();
        let newer = json!({"id": 1, "email": "new@example.com",
            "updated_at": "2024-05-01T12:00:00-04:00", "default_address": {"city": "Kyoto"}});
        // 15:00 UTC is earlier than 12:00-04:00 (16:00 UTC): string order would lie.
        let older =
            json!({"id": 1, "email": "old@example.com", "updated_at": "2024-05-01T15:00:00Z"});
        let done = sink
            .upsert_items(&table, std::slice::from_ref(&newer), 1)
            .unwrap();
        assert_eq!(done.written, 1);
        let done = sink.upsert_items(&table, &[older], 2).unwrap();
        assert_eq!((done.written, done.kept_newer), (0, 1));
        assert_eq!(
            sink.raw("customers", &json!(1)).unwrap(),
            Some(newer.clone())
        );
        // The same version again is written (a page that ran twice), a newer one too.
        assert_eq!(sink.upsert_items(&table, &[newer], 3).unwrap().written, 1);
        let newest =
            json!({"id": 1, "email": "x@example.com", "updated_at": "2024-06-01T00:00:00Z"});
        assert_eq!(
            sink.upsert_items(&table, std::slice::from_ref(&newest), 4)
                .unwrap()
                .written,
            1
        );
        assert_eq!(sink.raw("customers", &json!(1)).unwrap(), Some(newest));
        let email: Option<String> = sink
            .conn
            .query_row("SELECT email FROM customers WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(email.as_deref(), Some("x@example.com"));
    }

    #[test]
    fn items_without_an_id_are_skipped_and_columns_are_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SinkDb::open(&dir.path().join("sink.db")).unwrap();
        let items = [
            json!({"id": "gid://shopify/Customer/7", "updated_at": "2024-01-01T00:00:00Z",
                   "default_address": {"city": "Osaka"}}),
            json!({"email": "nobody@example.com"}),
        ];
        let done = sink.upsert_items(&customers(), &items, 1).unwrap();
        assert_eq!((done.written, done.skipped), (1, 1));
        let city: String = sink
            .conn
            .query_row("SELECT city FROM customers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(city, "Osaka");
        // A column added to the config later is added to the table.
        let mut wider = customers();
        wider.columns.push(("state".into(), "state".into()));
        let item = json!({"id": 8, "state": "enabled", "updated_at": "2024-01-01T00:00:00Z"});
        sink.upsert_items(&wider, &[item], 2).unwrap();
        assert_eq!(sink.count("customers").unwrap(), 2);
        assert_eq!(sink.count("nope").unwrap(), 0);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(is_identifier("shopify_customers"));
        for bad in ["", "1abc", "a-b", "a\"b", "sqlite_master"] {
            assert!(!is_identifier(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SinkDb::open(&dir.path().join("sink.db")).unwrap();
        let mut table = customers();
        table.name = "x; DROP TABLE y".into();
        assert!(sink.upsert_items(&table, &[], 1).is_err());
    }
}
