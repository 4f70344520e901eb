//! SQLite adapter: the [`Dialect`] that runs Waiter's SQL stores
//! (`waiter-sql`) on one file beside the server (the default when no
//! `DATABASE_URL` is given).
//!
//! [`SqliteDatabase`] owns the connection pool and the embedded migrations
//! (`migrations/sqlite`); the stores it hands out share that pool. The
//! database runs in WAL mode, so readers never wait for the one writer, and
//! writers wait their turn (up to a busy timeout) instead of failing. This
//! crate holds only what SQLite does its own way: pool set-up, error
//! classification, the timestamp encoding, and how session writes and bulk
//! loads take the write lock.

mod books;
mod error;
mod sessions;
mod timestamp;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use waiter_ports::PortError;
use waiter_sql::{Dialect, Pools, SqlDatabase, UniqueKey, pool_options};

use timestamp::StoredTimestamp;

/// The schema, embedded at compile time so the binary migrates itself.
static MIGRATOR: Migrator = sqlx::migrate!("../../../migrations/sqlite");

/// Readers run in parallel in WAL mode, beside the one writer connection.
const MAX_CONNECTIONS: u32 = 8;

/// How long a writer waits for the file's write lock before SQLite gives
/// up with `SQLITE_BUSY` (a 503). This server's own writers queue in process
/// before they take the lock (`Dialect::ONE_WRITER`), so only another
/// process holding it (a `sqlite3` shell, `waiter admin create`, a
/// `VACUUM`) is ever waited for; its transactions take milliseconds, so a
/// longer wait means the lock is held, and clients hear so within a second.
const BUSY_TIMEOUT: Duration = Duration::from_millis(750);

/// How long a query waits for a connection. A local file does not become
/// unreachable the way a server does: a connection opens in microseconds,
/// and writers wait for their turn without holding one, so a wait is
/// readers queueing behind a burst of reads, which a generous bound serves
/// better than a 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL of a private database in memory, for tests and throwaway runs.
const IN_MEMORY: &str = "sqlite::memory:";

/// SQLite, as the SQL stores see it.
#[derive(Debug, Clone, Copy)]
pub enum SqliteDialect {}

/// A SQLite connection pool and the stores built on it.
///
/// [`connect`](SqlDatabase::connect) takes `sqlite:///abs/path/waiter.db` or
/// `sqlite://./data/waiter.db`, creating the file and its directory if
/// missing, or `sqlite::memory:` for a private database in memory.
pub type SqliteDatabase = SqlDatabase<SqliteDialect>;

impl Dialect for SqliteDialect {
    type Database = Sqlite;
    type Timestamp = StoredTimestamp;

    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const ONE_WRITER: bool = true;
    const LOCK_ROWS: &'static str = "";
    const MIGRATOR: &'static Migrator = &MIGRATOR;

    async fn connect(url: &str) -> Result<Pools<Sqlite>, PortError> {
        if url == IN_MEMORY {
            return Ok(Pools::shared(in_memory().await?));
        }
        let options = configure(
            SqliteConnectOptions::from_str(url)
                .map_err(Self::port_error)?
                .create_if_missing(true),
        );
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(directory)
                .await
                .map_err(PortError::unexpected)?;
        }
        // The writer first: it creates the file and turns WAL on.
        let writer = pool_options(1, ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(Self::port_error)?;
        let readers = pool_options(MAX_CONNECTIONS, ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(Self::port_error)?;
        Ok(Pools { readers, writer })
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        error::is_busy_or_locked(error)
    }

    fn violates(error: &sqlx::Error, key: UniqueKey) -> bool {
        error::violates_unique(error, key)
    }

    fn is_storage_failure(error: &sqlx::Error) -> bool {
        error::is_storage_failure(error)
    }
}

/// A private database in memory: one connection that is never closed, since
/// an in-memory database vanishes with its last connection; writes are
/// therefore serialised, as they would be in a file anyway.
async fn in_memory() -> Result<SqlitePool, PortError> {
    let options = SqliteConnectOptions::new().in_memory(true);
    pool_options(1, ACQUIRE_TIMEOUT)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(configure(options))
        .await
        .map_err(SqliteDialect::port_error)
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
