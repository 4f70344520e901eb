//! PostgreSQL adapter: the [`Dialect`] that runs Waiter's SQL stores
//! (`waiter-sql`) on PostgreSQL.
//!
//! [`PostgresDatabase`] owns the connection pool and the embedded migrations
//! (`migrations/postgres`); the stores it hands out share that pool. This
//! crate holds only what PostgreSQL does its own way: pool set-up, error
//! classification, the row locks that keep session writes in one order, and
//! bulk loading with the indexes dropped and rebuilt.

mod books;
mod error;
mod sessions;
#[cfg(feature = "test-support")]
mod test_support;

use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use waiter_domain::Timestamp;
use waiter_ports::PortError;
use waiter_sql::{Dialect, Pools, SqlDatabase, UniqueKey, pool_options};

#[cfg(feature = "test-support")]
pub use test_support::TestDatabase;

/// The schema, embedded at compile time so the binary migrates itself.
static MIGRATOR: Migrator = sqlx::migrate!("../../../migrations/postgres");

/// Enough connections for a busy instance without exhausting a small server's
/// `max_connections` when several instances share it.
const MAX_CONNECTIONS: u32 = 10;

/// How long a query waits for a connection (a free one, or a new one being
/// opened): a server out of reach is a 503 within a second, never a hanging
/// request. A pool this busy is overloaded anyway; shedding load beats
/// queueing it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(750);

/// PostgreSQL, as the SQL stores see it.
#[derive(Debug, Clone, Copy)]
pub enum PostgresDialect {}

/// A PostgreSQL connection pool and the stores built on it.
///
/// [`connect`](SqlDatabase::connect) takes a `postgres://user@host:port/db` URL.
pub type PostgresDatabase = SqlDatabase<PostgresDialect>;

impl Dialect for PostgresDialect {
    type Database = Postgres;
    type Timestamp = Timestamp;

    const BEGIN_WRITE: &'static str = "BEGIN";
    const ONE_WRITER: bool = false;
    const LOCK_ROWS: &'static str = " FOR NO KEY UPDATE";
    const MIGRATOR: &'static Migrator = &MIGRATOR;

    async fn connect(url: &str) -> Result<Pools<Postgres>, PortError> {
        pool_options(MAX_CONNECTIONS, ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map(Pools::shared)
            .map_err(Self::port_error)
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        error::is_transient_conflict(error)
    }

    fn violates(error: &sqlx::Error, key: UniqueKey) -> bool {
        error::violates_unique(error, key)
    }
}
