//! SQLite adapter: implements Waiter's store ports with sqlx, in one file
//! beside the server (the default when no `DATABASE_URL` is given).
//!
//! [`SqliteDatabase`] owns the connection pool and the embedded migrations
//! (`migrations/sqlite`); the stores it hands out share that pool. The
//! database runs in WAL mode, so readers never wait for the one writer, and
//! writers wait their turn (up to a busy timeout) instead of failing.
//! Queries are runtime-checked and sit next to the port method they serve;
//! the contract suites in `waiter-contracts` run every one of them.

mod accounts;
mod books;
mod error;
mod sessions;
mod timestamp;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use waiter_ports::PortError;
use waiter_ports::health::Probe;

pub use accounts::SqliteAccountStore;
pub use books::SqliteBookStore;
pub use sessions::SqliteSessionStore;

use error::{migrate_error, port_error};

/// The schema, embedded at compile time so the binary migrates itself.
static MIGRATOR: Migrator = sqlx::migrate!("../../../migrations/sqlite");

/// Readers run in parallel in WAL mode; writes are serialised by SQLite anyway.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a free connection before failing as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a writer waits for another writer's transaction before SQLite
/// gives up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite connection pool and the stores built on it.
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    pool: SqlitePool,
}

impl SqliteDatabase {
    /// Opens the database file named by `url` (`sqlite:///abs/path/waiter.db`
    /// or `sqlite://./data/waiter.db`), creating it and its directory if missing.
    ///
    /// `sqlite::memory:` gives the same private database as [`Self::in_memory`].
    pub async fn connect(url: &str) -> Result<Self, PortError> {
        if url == "sqlite::memory:" {
            return Self::in_memory().await;
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(port_error)?
            .create_if_missing(true);
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(directory)
                .await
                .map_err(PortError::unexpected)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(configure(options))
            .await
            .map_err(port_error)?;
        Ok(Self { pool })
    }

    /// A private database that lives in memory, for tests and throwaway runs.
    ///
    /// It is one connection that is never closed, since an in-memory database
    /// vanishes with its last connection; writes are therefore serialised, as
    /// they would be in a file anyway.
    pub async fn in_memory() -> Result<Self, PortError> {
        let options = SqliteConnectOptions::new().in_memory(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(configure(options))
            .await
            .map_err(port_error)?;
        Ok(Self { pool })
    }

    /// Applies every embedded migration not yet applied; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), PortError> {
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }

    /// The account store on this pool.
    pub fn accounts(&self) -> SqliteAccountStore {
        SqliteAccountStore::new(self.pool.clone())
    }

    /// The session store on this pool.
    pub fn sessions(&self) -> SqliteSessionStore {
        SqliteSessionStore::new(self.pool.clone())
    }

    /// The book store on this pool.
    pub fn books(&self) -> SqliteBookStore {
        SqliteBookStore::new(self.pool.clone())
    }

    /// Closes every connection, checkpointing the write-ahead log.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The settings every connection gets: WAL so readers and the writer do not
/// block each other, enforced foreign keys (SQLite's default is off), and a
/// busy timeout so a writer waits for another instead of failing.
fn configure(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        // Durable across application crashes; with WAL, only a power loss can
        // lose the last transactions, never corrupt the file.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
}

#[async_trait]
impl Probe for SqliteDatabase {
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
