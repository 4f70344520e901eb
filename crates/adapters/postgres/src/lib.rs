//! PostgreSQL adapter: implements Waiter's store ports with sqlx.
//!
//! [`PostgresDatabase`] owns the connection pool and the embedded migrations
//! (`migrations/postgres`); the stores it hands out share that pool. Queries
//! are runtime-checked and sit next to the port method they serve; the
//! contract suites in `waiter-contracts` run every one of them against a real
//! server. Nothing here decides business rules: it stores and reads, and
//! turns constraint violations into the ports' typed errors.

mod accounts;
mod books;
mod error;
mod sessions;
#[cfg(feature = "test-support")]
mod test_support;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use waiter_ports::PortError;
use waiter_ports::health::Probe;

pub use accounts::PostgresAccountStore;
pub use books::PostgresBookStore;
pub use sessions::PostgresSessionStore;
#[cfg(feature = "test-support")]
pub use test_support::TestDatabase;

use error::{migrate_error, port_error};

/// The schema, embedded at compile time so the binary migrates itself.
static MIGRATOR: Migrator = sqlx::migrate!("../../../migrations/postgres");

/// Enough connections for a busy instance without exhausting a small server's
/// `max_connections` when several instances share it.
const MAX_CONNECTIONS: u32 = 10;

/// How long a query waits for a free connection before the request fails as
/// unavailable (503) rather than hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL connection pool and the stores built on it.
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    pool: PgPool,
}

impl PostgresDatabase {
    /// Connects to `url` (`postgres://user@host:port/db`), failing as
    /// `Unavailable` within the acquire timeout when the server cannot be
    /// reached, so a misconfigured start-up says so at once.
    pub async fn connect(url: &str) -> Result<Self, PortError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(port_error)?;
        Ok(Self { pool })
    }

    /// Applies every embedded migration not yet applied; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), PortError> {
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }

    /// The account store on this pool.
    pub fn accounts(&self) -> PostgresAccountStore {
        PostgresAccountStore::new(self.pool.clone())
    }

    /// The session store on this pool.
    pub fn sessions(&self) -> PostgresSessionStore {
        PostgresSessionStore::new(self.pool.clone())
    }

    /// The book store on this pool.
    pub fn books(&self) -> PostgresBookStore {
        PostgresBookStore::new(self.pool.clone())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Probe for PostgresDatabase {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn ping(&self) -> Result<(), PortError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(port_error)
    }
}
