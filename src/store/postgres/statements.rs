//! Prepared statements kept per pooled connection: the queue's hot statements (claims,
//! completions, leases) are parsed and planned by the server once per connection, not
//! once per call, and each call is one round trip instead of two (the client's
//! `query(&str)` prepares an unnamed statement first).

use postgres::{Client, NoTls, Statement};
use r2d2_postgres::PostgresConnectionManager;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

/// Statements kept per connection before the cache starts over: the driver's statements
/// are a fixed set, but a few are formatted per call (claim guards, column lists), and a
/// runaway set must not grow without bound on the server either.
const MAX_STATEMENTS: usize = 256;

/// A connection of the pool, with its prepared statements by SQL text.
pub struct CachedClient {
    pub(super) client: Client,
    pub(super) statements: StatementCache,
}

impl Deref for CachedClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for CachedClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The prepared statements of one connection.
#[derive(Default)]
pub struct StatementCache {
    by_sql: HashMap<String, Statement>,
}

impl StatementCache {
    /// The statement for `sql`, prepared by `prepare` the first time.
    pub fn get_or_prepare(
        &mut self,
        sql: &str,
        prepare: impl FnOnce(&str) -> Result<Statement, postgres::Error>,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.by_sql.get(sql) {
            return Ok(statement.clone());
        }
        let statement = prepare(sql)?;
        if self.by_sql.len() >= MAX_STATEMENTS {
            self.by_sql.clear();
        }
        self.by_sql.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Forgets every statement: after an error that may mean one is stale (a migration
    /// by another daemon changed a table's columns: "cached plan must not change result
    /// type"), they are prepared afresh.
    pub fn clear(&mut self) {
        self.by_sql.clear();
    }
}

/// The pool's manager: rust-postgres connections with a statement cache each.
#[derive(Debug)]
pub struct CachingManager(pub PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for CachingManager {
    type Connection = CachedClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<CachedClient, postgres::Error> {
        Ok(CachedClient {
            client: self.0.connect()?,
            statements: StatementCache::default(),
        })
    }

    fn is_valid(&self, conn: &mut CachedClient) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut CachedClient) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}
