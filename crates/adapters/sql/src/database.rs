//! [`SqlDatabase`]: its pools, and the stores that share them.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::MigrateError;
use sqlx::{Connection, Pool};
use waiter_ports::PortError;
use waiter_ports::health::Probe;

use crate::calls::Calls;
use crate::{
    Dialect, SqlAccountStore, SqlBookStore, SqlConversationStore, SqlIdempotencyStore,
    SqlSessionStore,
};

/// The connection pools of dialect `D` and the stores built on them.
///
/// The adapter crates name it for their database (`PostgresDatabase`,
/// `SqliteDatabase`), so this is the type the server connects and wires.
#[derive(Debug)]
pub struct SqlDatabase<D: Dialect> {
    /// What reads use.
    pool: Pool<D::Database>,
    /// Where the stores' calls run, where writes queue on a database with
    /// one writer, and the connections writes use.
    calls: Calls<D>,
}

/// How long start-up keeps trying to reach the database.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

impl<D: Dialect> Clone for SqlDatabase<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }
}

impl<D: Dialect> SqlDatabase<D> {
    /// Connects to `url`, failing as `Unavailable` when the database cannot
    /// be reached within [`CONNECT_PATIENCE`].
    ///
    /// Once serving, a request's wait for a connection is bounded (then
    /// 503); at start-up a database that is still starting, or a
    /// machine under load, deserves a few more attempts.
    pub async fn connect(url: &str) -> Result<Self, PortError> {
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        loop {
            match D::connect(url).await {
                Ok(pools) => {
                    return Ok(Self {
                        calls: Calls::new(&pools)?,
                        pool: pools.readers,
                    });
                }
                Err(PortError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Applies every embedded migration not yet applied; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), PortError> {
        D::MIGRATOR
            .run(self.calls.writer())
            .await
            .map_err(|error| match error {
                // The database could not run it: classified like any other failure.
                MigrateError::Execute(error) => D::port_error(error),
                // The migrations themselves are wrong.
                error => PortError::unexpected(error),
            })
    }

    /// The account store on this pool.
    pub fn accounts(&self) -> SqlAccountStore<D> {
        SqlAccountStore {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The session store on this pool.
    pub fn sessions(&self) -> SqlSessionStore<D> {
        SqlSessionStore {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The book store on this pool.
    pub fn books(&self) -> SqlBookStore<D> {
        SqlBookStore {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The conversation store on this pool.
    pub fn conversations(&self) -> SqlConversationStore<D> {
        SqlConversationStore {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The idempotency-key store on this pool.
    pub fn idempotency(&self) -> SqlIdempotencyStore<D> {
        SqlIdempotencyStore {
            pool: self.pool.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The pool itself, for what the stores do not cover (tests, bulk tooling).
    pub fn pool(&self) -> &Pool<D::Database> {
        &self.pool
    }

    /// Closes every connection, waiting for those in use to be returned.
    /// SQLite checkpoints its write-ahead log into the database file as the
    /// last connection closes, so a closed database is one self-contained file.
    pub async fn close(&self) {
        self.pool.close().await;
        self.calls.writer().close().await;
    }
}

#[async_trait]
impl<D: Dialect> Probe for SqlDatabase<D> {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn ping(&self) -> Result<(), PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("database.ping", async move {
                let mut connection = pool.acquire().await.map_err(D::port_error)?;
                connection.ping().await.map_err(D::port_error)
            })
            .await
    }
}
