//! A PostgreSQL database of its own for each test: created on the server named by
//! `JOBD_TEST_DATABASE_URL` (default the local server) with a unique name, dropped when
//! the test ends. Without a server a test says it was skipped and why; with `CI=true` it
//! fails instead, so CI never passes by skipping.

#![allow(dead_code)]

use jobd::dburl::PostgresUrl;
use jobd::store::postgres::{PgOptions, PgStore};
use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_SERVER: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

/// The server tests use.
pub fn server_url() -> PostgresUrl {
    let text = std::env::var("JOBD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER.into());
    PostgresUrl::parse("JOBD_TEST_DATABASE_URL", &text).expect("JOBD_TEST_DATABASE_URL")
}

/// One test's database; dropped (with any connections still open) at the end.
pub struct TestDb {
    pub url: PostgresUrl,
    admin: PostgresUrl,
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A connection to the server, or None (printed) when none answers outside CI; under
/// `CI=true` a missing server fails the test.
fn admin_client(test: &str) -> Option<postgres::Client> {
    let admin = server_url();
    match admin.config().connect(postgres::NoTls) {
        Ok(client) => Some(client),
        Err(e) => {
            let why = format!("no PostgreSQL server answers at {admin}: {e}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {why} (CI=true: PostgreSQL tests never skip; set JOBD_TEST_DATABASE_URL)");
            }
            eprintln!("SKIPPED {test}: {why} (set JOBD_TEST_DATABASE_URL to run it)");
            None
        }
    }
}

/// Whether a server answers (see [`admin_client`]).
pub fn server_available(test: &str) -> bool {
    admin_client(test).is_some()
}

impl TestDb {
    /// A fresh empty database, or None (printed) when no server answers outside CI.
    pub fn create(test: &str) -> Option<TestDb> {
        let admin = server_url();
        let mut client = admin_client(test)?;
        let name = format!(
            "jobd_test_{}_{}_{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..0xff_ffff)
        );
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        Some(TestDb {
            url: admin.with_database(&name),
            admin,
            name,
        })
    }

    /// A store on this database as `node`, migrated.
    pub fn store(&self, node: &str) -> PgStore {
        self.store_with(PgOptions {
            migrate: true,
            ..PgOptions::new(node)
        })
    }

    pub fn store_with(&self, options: PgOptions) -> PgStore {
        PgStore::open(&self.url, options).expect("open the PostgreSQL store")
    }

    /// A plain client, as psql would be.
    pub fn client(&self) -> postgres::Client {
        self.url
            .config()
            .connect(postgres::NoTls)
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut client) = self.admin.config().connect(postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `let Some(db) = pg_db!("name") else { return };`
#[macro_export]
macro_rules! pg_db {
    ($test:expr) => {
        $crate::pg::TestDb::create($test)
    };
}
