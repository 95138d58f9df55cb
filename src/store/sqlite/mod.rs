//! The SQLite driver: one database file in WAL mode, one daemon (the lock beside the
//! file), one writer connection whose `BEGIN IMMEDIATE` transactions serialise every
//! write, read-only connections beside it, and `PRAGMA data_version` as the change
//! notice. Migrations (`schema.rs`) are tracked by `PRAGMA user_version`. The SQL of
//! each part of the [`Store`] lives in its own file; `store_impl.rs` maps the traits
//! onto them.

mod admin;
mod claim;
mod complete;
pub mod example;
mod flow;
mod gate;
mod guards;
mod ingest;
mod leases;
mod live;
mod maintenance;
mod operator;
mod order;
mod queue;
pub mod schema;
pub mod sink;
mod store_impl;
mod sync;
pub mod wal_sync;
mod web;

use super::{OpenOptions, Result, StoreError};
use crate::flow::Router;
pub(crate) use queue::SqliteTx;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The version of the SQLite library bundled in this build.
pub fn library_version() -> &'static str {
    rusqlite::version()
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(PathBuf::new(), e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// One connection to the queue database. The daemon has exactly one for writing, fed by
/// its dispatcher; jobctl opens its own.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The configured busy timeout, restored after a checkpoint waited less.
    busy_timeout: Duration,
    /// Routes each job enqueued through this connection ([`SqliteStore::set_router`]).
    router: Option<Arc<dyn Router>>,
    /// This process's turn to write the file (none for a read-only connection).
    gate: Option<Arc<gate::WriteGate>>,
    /// What the connection's hooks saw of the open [`SqliteStore::write`].
    watch: Arc<WriteWatch>,
}

impl SqliteStore {
    /// A connection that cannot write: the web page's reads and its change watcher.
    pub fn open_read_only(path: &Path, busy_timeout: Duration) -> Result<SqliteStore> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::CannotOpen(path.to_path_buf(), e.to_string()))?;
        conn.busy_timeout(busy_timeout)?;
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;")?;
        conn.set_prepared_statement_cache_capacity(32);
        schema::check_version(&conn)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            busy_timeout,
            router: None,
            gate: None,
            watch: Arc::default(),
        })
    }

    pub fn open(path: &Path, options: &OpenOptions) -> Result<SqliteStore> {
        if !options.create && !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        if options.create {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::files::create_private_dir_all(parent).map_err(|e| {
                    StoreError::CannotOpen(
                        path.to_path_buf(),
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if options.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let existed = path.exists();
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::CannotOpen(path.to_path_buf(), e.to_string()))?;
        if !existed {
            restrict_permissions(path);
        }
        let db = SqliteStore {
            conn,
            path: path.to_path_buf(),
            busy_timeout: options.busy_timeout,
            router: None,
            gate: Some(gate::WriteGate::for_file(path)),
            watch: Arc::default(),
        };
        db.refuse_stray_commits();
        db.configure(options)?;
        if options.migrate {
            schema::migrate(&db.conn)?;
        } else {
            schema::check_version(&db.conn)?;
        }
        db.trust_own_writes()?;
        Ok(db)
    }

    /// The schema's CHECKs are for the writers jobd cannot vouch for: the system's
    /// `sqlite3`, scripts, other programs. What jobd writes itself is checked in Rust
    /// before it is written (the store refuses a job, a queue name or a hold the CHECKs
    /// would, with a sentence naming the field), and its updates set fixed states from
    /// statements the tests run against the CHECKs (the suites `quick_check` every
    /// database they leave behind). So this connection does not evaluate
    /// them again: they were a ninth of the drain's instructions per job and a seventh
    /// of a batch enqueue's (scripts/drain-callgrind.sh, scripts/enqueue-callgrind.sh).
    /// Set after migrating, so a migration that copies rows still has them checked.
    ///
    /// The same goes for the schema's triggers, which keep order keys' lines for other
    /// writers: this connection runs none (a trigger program ran for every job finished
    /// or enqueued, key or none), and the driver moves each line itself, by the
    /// triggers' own rules, where a job with a key joins or leaves it (`order.rs`).
    /// Foreign keys' actions (`ON DELETE CASCADE`) are not triggers and still run.
    fn trust_own_writes(&self) -> Result<()> {
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        Ok(self
            .conn
            .execute_batch("PRAGMA ignore_check_constraints = ON;")?)
    }

    /// SQLite rolls a whole transaction back on some errors inside it (a full disk, an
    /// I/O error, an interrupt) and goes on in autocommit mode: every later statement of
    /// the same [`SqliteStore::write`] would then commit on its own, and its caller
    /// would hear that nothing was written (the COMMIT fails) for rows that were. While
    /// a write is open, the commit hook refuses such commits, so each of those
    /// statements fails and leaves nothing, and the rollback hook notes the loss for
    /// `write` to report; a flag read per commit or rollback.
    fn refuse_stray_commits(&self) {
        let watch = Arc::clone(&self.watch);
        self.conn
            .commit_hook(Some(move || watch.open.load(Ordering::Relaxed)));
        let watch = Arc::clone(&self.watch);
        self.conn.rollback_hook(Some(move || {
            if watch.open.load(Ordering::Relaxed) {
                watch.rolled_back.store(true, Ordering::Relaxed);
            }
        }));
    }

    fn configure(&self, options: &OpenOptions) -> Result<()> {
        self.conn.busy_timeout(options.busy_timeout)?;
        // The first read of a file that is not SQLite fails here, with NOTADB.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::CannotOpen(
                self.path.clone(),
                format!("cannot switch to WAL mode (journal_mode is {mode})"),
            ));
        }
        // A larger page cache keeps the hot index pages of a big table in memory; temp
        // B-trees (IN lists, RETURNING) stay in memory too.
        self.conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; PRAGMA cache_size = -65536; \
             PRAGMA temp_store = MEMORY;",
            options.synchronous.pragma_value()
        ))?;
        self.conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every job enqueued through this connection without a destination of its own gets
    /// the route `router` derives (its destination, key and order key).
    pub fn set_router(&mut self, router: Arc<dyn Router>) {
        self.router = Some(router);
    }

    /// Refuses a database this process cannot write: SQLite opens a file it may not
    /// write (mode 0444 for us, an immutable file, a read-only mount) read-only without
    /// a word, and every write would fail later. Takes and gives back the write lock.
    pub fn check_writable(&self) -> Result<()> {
        let read_only = |why: String| {
            StoreError::ReadOnly(
                self.path.clone(),
                format!(
                    "{why} (uid {}); check the file's mode and owner, its folder and its mount",
                    // SAFETY: getuid(2) cannot fail and touches no memory.
                    unsafe { libc::getuid() }
                ),
            )
        };
        if self.conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(read_only("SQLite could open it for reading only".into()));
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| read_only(format!("cannot take the write lock: {e}")))
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction: the write lock is taken up front,
    /// so waiting for it honours the busy timeout and no read-then-write upgrade can fail.
    pub fn write<T>(&mut self, work: impl FnOnce(&SqliteTx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let name_disk_full = move |e: StoreError| match e {
            StoreError::DiskFull(m) => {
                StoreError::DiskFull(format!("cannot write {}: {m}", path.display()))
            }
            other => other,
        };
        let _turn = self.gate.as_ref().and_then(|g| g.enter(self.busy_timeout));
        // BEGIN and COMMIT are cached statements, not rusqlite's `Transaction`, which
        // parses both again for every transaction (about 4,000 instructions each, a tenth
        // of a single enqueue's turn). The guard rolls back whatever did not commit,
        // a panic in `work` included.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let open = OpenTransaction::begun(&self.conn, &self.watch);
        let wrapped = SqliteTx::new(&self.conn, self.router.as_deref());
        let value = work(&wrapped);
        if self.watch.rolled_back.load(Ordering::Relaxed) {
            // SQLite ended the transaction itself: whatever `work` wrote is gone, even
            // where `work` carried on and says it succeeded.
            return Err(StoreError::RolledBack(match value {
                Ok(_) => "an error inside it".into(),
                Err(e) => name_disk_full(e).to_string(),
            }));
        }
        let value = value.map_err(&name_disk_full)?;
        open.committing();
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]))
            .map_err(|e| name_disk_full(StoreError::from(e)))?;
        drop(open);
        Ok(value)
    }

    /// Changes whenever another connection commits to the database: the cheap way to
    /// notice rows inserted by jobctl or sqlite3 without scanning the table.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }

    /// `PRAGMA integrity_check`: "ok", or what is wrong, every row's CHECKs included
    /// (this connection skips them when it writes, and the pragma skips them too unless
    /// they are on); then every order key's line, which must have one head.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.conn
            .execute_batch("PRAGMA ignore_check_constraints = OFF;")?;
        let found = self
            .conn
            .prepare("PRAGMA integrity_check")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
        self.trust_own_writes()?;
        let mut found: Vec<String> = found?.into_iter().filter(|l| l != "ok").collect();
        found.extend(order::broken_lines(&self.conn, 10)?);
        if found.is_empty() {
            found.push("ok".into());
        }
        Ok(found)
    }

    pub fn schema_version(&self) -> Result<i64> {
        schema::user_version(&self.conn)
    }
}

/// Files the daemon writes are not world-readable.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640));
}

/// A write transaction [`SqliteStore::write`] opened: rolled back when dropped before its
/// COMMIT took (an error, a failed COMMIT, a panic), so the connection is never left
/// inside a transaction that holds the write lock. Until its COMMIT, no other commit
/// takes on the connection ([`SqliteStore::refuse_stray_commits`]).
struct OpenTransaction<'a> {
    conn: &'a Connection,
    watch: &'a WriteWatch,
}

/// Shared with the connection's commit and rollback hooks, which SQLite calls with no
/// way back to the store.
#[derive(Default)]
struct WriteWatch {
    /// A write's transaction is open and its COMMIT not yet under way.
    open: AtomicBool,
    /// SQLite rolled back the open write's transaction (or a stray one after it).
    rolled_back: AtomicBool,
}

impl<'a> OpenTransaction<'a> {
    fn begun(conn: &'a Connection, watch: &'a WriteWatch) -> Self {
        watch.rolled_back.store(false, Ordering::Relaxed);
        watch.open.store(true, Ordering::Relaxed);
        OpenTransaction { conn, watch }
    }

    /// The transaction's own COMMIT comes next: the commit hook lets it through.
    fn committing(&self) {
        self.watch.open.store(false, Ordering::Relaxed);
    }
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        self.watch.open.store(false, Ordering::Relaxed);
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!("cannot roll back a failed write: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;
    use serde_json::json;

    fn store(dir: &Path) -> SqliteStore {
        SqliteStore::open(
            &dir.join("jobs.db"),
            &OpenOptions {
                create: true,
                migrate: true,
                ..OpenOptions::default()
            },
        )
        .unwrap()
    }

    fn enqueue_one(tx: &SqliteTx<'_>) -> Result<()> {
        tx.enqueue(&[NewJob::new("noop", json!({}))], 1).map(|_| ())
    }

    fn jobs(db: &SqliteStore) -> i64 {
        db.conn
            .query_row("SELECT count(*) FROM jobs", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_write_that_fails_or_panics_leaves_nothing_and_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store(dir.path());
        let failed = db.write(|tx| {
            enqueue_one(tx)?;
            Err::<(), _>(StoreError::Backend("refused on purpose".into()))
        });
        assert!(failed.is_err());
        assert!(
            db.conn.is_autocommit(),
            "the failed write's transaction is still open"
        );
        assert_eq!(jobs(&db), 0);

        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.write(|tx| -> Result<()> {
                enqueue_one(tx)?;
                panic!("a handler of the turn panicked");
            })
        }));
        assert!(panicked.is_err());
        assert!(
            db.conn.is_autocommit(),
            "the panicked write's transaction is still open"
        );
        assert_eq!(jobs(&db), 0);

        // The connection goes on writing, through the same cached BEGIN and COMMIT.
        db.write(enqueue_one).unwrap();
        db.write(enqueue_one).unwrap();
        assert_eq!(jobs(&db), 2);
        assert_eq!(
            jobs(&store(dir.path())),
            2,
            "committed for other connections too"
        );
    }

    #[test]
    fn a_write_sqlite_rolled_back_midway_commits_none_of_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store(dir.path());
        let lost = db.write(|tx| {
            enqueue_one(tx)?;
            // An interrupted write inside a transaction makes SQLite roll back the
            // whole transaction, as an I/O error does.
            tx.conn().progress_handler(1, Some(|| true));
            let interrupted = tx.conn().execute("UPDATE jobs SET attempts = attempts", []);
            tx.conn().progress_handler(1, None::<fn() -> bool>);
            assert!(
                interrupted.is_err(),
                "the interrupt did not fail the update"
            );
            assert!(tx.conn().is_autocommit(), "SQLite kept the transaction");
            // A caller that takes the refusal as one job's and goes on, as the
            // dispatcher does for a turn's other enqueues.
            let after = enqueue_one(tx);
            assert!(after.is_err(), "a statement after the loss committed alone");
            Ok(())
        });
        let e = lost.expect_err("a lost transaction was reported as written");
        assert!(
            matches!(e, StoreError::RolledBack(_)),
            "not reported as rolled back: {e}"
        );
        assert!(db.conn.is_autocommit());
        assert_eq!(jobs(&db), 0, "rows of the lost write stayed");
    }

    #[test]
    fn an_enqueue_the_database_refuses_takes_back_only_its_own_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store(dir.path());
        // An enqueue the database refuses (a parent that does not exist) takes back
        // only its own statement, or batch: the write is not lost.
        let orphan = || NewJob {
            parent_id: Some(999),
            ..NewJob::new("noop", json!({}))
        };
        db.write(|tx| {
            enqueue_one(tx)?;
            let refused = tx.enqueue(&[orphan()], 1);
            assert!(refused.is_err(), "a job with no parent was enqueued");
            let refused = tx.enqueue(&[NewJob::new("noop", json!({})), orphan()], 1);
            assert!(refused.is_err(), "a batch with an orphan was enqueued");
            enqueue_one(tx)
        })
        .unwrap();
        assert_eq!(jobs(&db), 2);
    }

    /// Routes every job to the order key its payload's `key` names, empty or not.
    struct KeyFromPayload;

    impl Router for KeyFromPayload {
        fn route(&self, job: &NewJob) -> crate::flow::Route {
            crate::flow::Route {
                order_key: Some(crate::flow::key_of("/key", &job.payload)),
                ..crate::flow::Route::default()
            }
        }
    }

    fn rows(db: &SqliteStore, table: &str) -> i64 {
        db.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    #[test]
    fn the_store_refuses_in_words_what_the_checks_it_skips_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store(dir.path());
        db.set_router(Arc::new(KeyFromPayload));
        let skipped: i64 = db
            .conn
            .query_row("PRAGMA ignore_check_constraints", [], |row| row.get(0))
            .unwrap();
        assert_eq!(skipped, 1, "the store's connection evaluates the CHECKs");
        let refused = |what: Result<Vec<String>>, field: &str| match what {
            Err(StoreError::InvalidJob(why)) => assert!(why.contains(field), "{why}"),
            other => panic!("not refused by the store: {other:?}"),
        };
        let tried = db.write(|tx| {
            let pause = tx.pause_queue("bad queue", None, 1).map(|_| vec![]);
            let hold = crate::flow::HoldRequest::new(
                "",
                "",
                Duration::from_secs(60),
                1,
                None,
                "test".into(),
            );
            let hold = tx.hold_destination(&hold, 1).map(|_| vec![]);
            let long_key = crate::flow::HoldRequest::new(
                "api",
                &"k".repeat(201),
                Duration::from_secs(60),
                1,
                None,
                "test".into(),
            );
            let long_key = tx.hold_destination(&long_key, 1).map(|_| vec![]);
            // The router reads an empty order key from this payload.
            let routed = tx
                .enqueue(&[NewJob::new("noop", json!({"key": ""}))], 1)
                .map(|_| vec![]);
            Ok(vec![pause, hold, long_key, routed])
        });
        let [pause, hold, long_key, routed] = <[_; 4]>::try_from(tried.unwrap()).unwrap();
        refused(pause, "queue \"bad queue\" contains ' '");
        refused(hold, "destination must not be empty");
        refused(long_key, "flow_key is 201 bytes long");
        refused(routed, "order_key must not be empty");
        for table in ["queue_pauses", "destination_state", "jobs"] {
            assert_eq!(rows(&db, table), 0, "{table} has a row the store refused");
        }
        // A key the router reads is kept, the job goes in.
        db.write(|tx| tx.enqueue(&[NewJob::new("noop", json!({"key": "k1"}))], 1))
            .unwrap();
        assert_eq!(jobs(&db), 1);
    }

    #[test]
    fn the_integrity_check_names_a_row_that_breaks_a_check_and_the_store_skips_them_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = store(dir.path());
        assert_eq!(db.integrity_check().unwrap(), vec!["ok".to_string()]);
        // Another program that skips the CHECKs too leaves a queue name they refuse.
        let other = Connection::open(dir.path().join("jobs.db")).unwrap();
        other
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON; \
                 INSERT INTO jobs (queue, kind, payload) VALUES ('bad queue', 'noop', '{}');",
            )
            .unwrap();
        let found = db.integrity_check().unwrap();
        assert!(
            found
                .iter()
                .any(|f| f.contains("CHECK constraint failed in jobs")),
            "{found:?}"
        );
        let skipped: i64 = db
            .conn
            .query_row("PRAGMA ignore_check_constraints", [], |row| row.get(0))
            .unwrap();
        assert_eq!(
            skipped, 1,
            "the check left the CHECKs on for the store's writes"
        );
        db.write(enqueue_one).unwrap();
        assert_eq!(jobs(&db), 2);
    }
}
