//! What differs between the databases the stores run on, behind one trait.

use std::future::Future;
use std::time::Duration;

use sqlx::database::HasStatementCache;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::{Connection as _, Database, Decode, Encode, IntoArguments, Pool, Type};
use waiter_domain::Timestamp;
use waiter_ports::PortError;

/// A database the stores of this crate run on: its sqlx driver and the few
/// things the SQL they share cannot say the same way on every database.
///
/// `waiter-postgres` and `waiter-sqlite` each implement it on a marker type;
/// everything else (statements, rows, the stores themselves) is written once,
/// here. What is specific to one store lives in a trait of its own beside
/// that store ([`SessionLocking`](crate::SessionLocking),
/// [`BookLoading`](crate::BookLoading)).
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Database: Database<Arguments: IntoArguments<Self::Database>, Connection: Migrate>
        + HasStatementCache;

    /// How an instant is stored and read back. PostgreSQL has `timestamptz`;
    /// SQLite has no time type, so its dialect writes text of a fixed width.
    type Timestamp: Column<Self::Database> + From<Timestamp> + Into<Timestamp>;

    /// The statement that begins a transaction that is going to write.
    /// SQLite needs `BEGIN IMMEDIATE`, which takes the write lock up front, so
    /// a transaction waits for other writers (busy timeout) rather than
    /// failing half-way; PostgreSQL locks rows as it goes.
    const BEGIN_WRITE: &'static str;

    /// True when the database takes one writer at a time (SQLite): the
    /// stores' writes then queue in process first (see `calls.rs`), so a
    /// lock held by another process is told apart from a busy moment at once.
    const ONE_WRITER: bool;

    /// What follows a `SELECT` of rows to lock them until the transaction
    /// ends against other writers that lock them too, without blocking
    /// inserts that merely reference them: ` FOR NO KEY UPDATE` on
    /// PostgreSQL; nothing on SQLite, whose write transactions
    /// ([`BEGIN_WRITE`](Self::BEGIN_WRITE)) run one at a time anyway.
    const LOCK_ROWS: &'static str;

    /// The schema (`migrations/<database>`), embedded at compile time so the
    /// binary migrates itself.
    const MIGRATOR: &'static Migrator;

    /// Opens the pools of connections to the database at `url` (starting
    /// from [`pool_options`]), failing as `Unavailable` when it cannot be
    /// reached.
    fn connect(url: &str) -> impl Future<Output = Result<Pools<Self::Database>, PortError>> + Send;

    /// True when the database aborted the statement over a conflict with a
    /// concurrent transaction, so that running it again may succeed.
    fn is_transient(error: &sqlx::Error) -> bool;

    /// True when `error` is a violation of the unique constraint `key`.
    fn violates(error: &sqlx::Error, key: UniqueKey) -> bool;

    /// True when the database's storage failed under it (a full disk, an
    /// I/O error, a file it can no longer open or write): not a bug, and
    /// over once an operator frees space or fixes the file. A network
    /// database reports these as lost connections, which are already
    /// `Unavailable`.
    fn is_storage_failure(_error: &sqlx::Error) -> bool {
        false
    }

    /// Classifies a failure: the database being out of reach, or aborting
    /// over a transient conflict, is `Unavailable` (503, worth retrying);
    /// anything else is a bug or corrupt data.
    fn port_error(error: sqlx::Error) -> PortError {
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => PortError::Unavailable(error.into()),
            error if Self::is_transient(&error) || Self::is_storage_failure(&error) => {
                PortError::Unavailable(error.into())
            }
            error => PortError::Unexpected(error.into()),
        }
    }
}

/// The settings every pool starts from: at most `max_connections`, and a
/// wait for one bounded by `acquire_timeout` (then the request fails as
/// unavailable, 503, rather than hanging).
///
/// A connection handed back inside a transaction (one dropped without a
/// commit, whose `ROLLBACK` sqlx sends lazily) is pinged, which runs that
/// rollback, and closed rather than reused if it is still inside one. That
/// happens when the database already rolled a failed transaction back
/// (SQLite does, on a full disk), so sqlx's own `ROLLBACK` fails and its
/// count of open transactions stays up: reused, the connection would
/// refuse every later `BEGIN` until the server restarted.
pub fn pool_options<DB: Database>(
    max_connections: u32,
    acquire_timeout: Duration,
) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_release(|connection: &mut DB::Connection, _| {
            Box::pin(async move {
                if connection.is_in_transaction() {
                    connection.ping().await?;
                }
                Ok(!connection.is_in_transaction())
            })
        })
}

/// The connections a database is used through.
#[derive(Debug, Clone)]
pub struct Pools<DB: Database> {
    /// What reads use.
    pub readers: Pool<DB>,
    /// What writes use: on a database with one writer
    /// ([`Dialect::ONE_WRITER`]), a pool of one connection of its own, so
    /// that the write whose turn it is never waits for a connection behind
    /// a crowd of reads; elsewhere the readers' pool.
    pub writer: Pool<DB>,
}

impl<DB: Database> Pools<DB> {
    /// One pool for reads and writes alike.
    pub fn shared(pool: Pool<DB>) -> Self {
        Self {
            writer: pool.clone(),
            readers: pool,
        }
    }
}

/// A unique constraint whose violation a store turns into a typed error
/// (`EmailTaken`, `IsbnTaken`, `AlreadySent`). PostgreSQL reports the
/// constraint's (or unique index's) name; SQLite reports only the table and
/// columns, so a key carries both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueKey {
    /// The constraint's name in the migrations.
    pub name: &'static str,
    /// The table it constrains.
    pub table: &'static str,
    /// The columns it keeps unique together, in the order the constraint
    /// names them (SQLite reports them in that order).
    pub columns: &'static [&'static str],
}

/// A Rust type that database `DB` takes as a bind parameter.
///
/// sqlx implements encoding per driver, so code generic over the driver must
/// state every type it binds; this names the bounds once per type.
pub trait Param<'q, DB: Database>: Encode<'q, DB> + Type<DB> + Send + 'q {}

impl<'q, DB: Database, T> Param<'q, DB> for T where T: Encode<'q, DB> + Type<DB> + Send + 'q {}

/// A Rust type that database `DB` takes as a bind parameter and returns as a column.
pub trait Column<DB: Database>: for<'q> Param<'q, DB> + for<'r> Decode<'r, DB> + Unpin {}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Param<'q, DB> + for<'r> Decode<'r, DB> + Unpin
{
}
