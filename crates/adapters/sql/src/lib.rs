//! The SQL core of Waiter's database adapters: the store ports written once,
//! over sqlx, for every database a [`Dialect`] describes.
//!
//! The statements use `$n` placeholders, which PostgreSQL and sqlx's SQLite
//! driver both bind, and only SQL both databases accept. Rows are read into
//! row types and re-validated into domain types, so corrupt data is an
//! error, never a panic. Queries are runtime-checked; the contract suites in
//! `waiter-contracts` run every one of them against real PostgreSQL and SQLite.
//!
//! What is not the same on both databases is not written here but asked of
//! the dialect, which `waiter-postgres` and `waiter-sqlite` implement: pools
//! and migrations, error classification, the timestamp encoding, the locking
//! behind session rotation ([`SessionLocking`]) and bulk loading
//! ([`BookLoading`]). Nothing here decides business rules: it stores and
//! reads, and turns constraint violations into the ports' typed errors.
//!
//! A new store is one module like [`accounts`](SqlAccountStore): its SQL,
//! its rows and their conversions, and one `impl<D: Dialect>` of its port.
//! That impl states which Rust types it binds and reads (sqlx implements
//! encoding per driver, and Rust does not carry such bounds from a trait to
//! its users); [`Param`] and [`Column`] keep each such bound to one line.

mod accounts;
mod books;
mod calls;
mod conversations;
mod database;
mod dialect;
mod idempotency;
mod sessions;
mod timed;

use sqlx::{AssertSqlSafe, ColumnIndex, Executor, Pool};
use uuid::Uuid;
use waiter_domain::Version;
use waiter_ports::PortError;

pub use accounts::SqlAccountStore;
pub use books::{BookLoading, NewBookRow, SqlBookStore};
pub use conversations::SqlConversationStore;
pub use database::SqlDatabase;
pub use dialect::{Column, Dialect, Param, Pools, UniqueKey, pool_options};
pub use idempotency::SqlIdempotencyStore;
pub use sessions::{SessionLocking, SqlSessionStore};

/// `Clone` for each store: a handle on its database's pools and calls
/// (a call takes one along to the database's runtime). Written out, since a
/// derive would ask the sqlx driver type to be `Clone`.
macro_rules! clone_handles {
    ($($handle:ident),+) => {$(
        impl<D: Dialect> Clone for $handle<D> {
            fn clone(&self) -> Self {
                Self {
                    pool: self.pool.clone(),
                    calls: self.calls.clone(),
                }
            }
        }
    )+};
}

clone_handles!(
    SqlAccountStore,
    SqlSessionStore,
    SqlBookStore,
    SqlConversationStore,
    SqlIdempotencyStore
);

/// The sqlx driver of dialect `D`.
type Db<D> = <D as Dialect>::Database;
/// A connection of dialect `D`.
type Connection<D> = <Db<D> as sqlx::Database>::Connection;
/// A result row of dialect `D`.
type Row<D> = <Db<D> as sqlx::Database>::Row;

/// `sql` with its `$limit` written in as a number, not bound.
///
/// SQLite plans a statement for the value bound to its `LIMIT` (since
/// 3.47), so it prepares the statement again at its next run whenever that
/// parameter is bound, and every run binds afresh: on the first page of
/// books, preparing took an eighth of the server's time. With the number
/// written in, each limit is a statement of its own, prepared once per
/// connection (a list's limit takes at most a hundred values).
fn limited(sql: &str, limit: u32) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql.replacen("$limit", &limit.to_string(), 1))
}

/// Why a conditional write (`… WHERE id = $1 AND version = COALESCE($2, version)`)
/// matched no row: `Some(current)` when the row has moved on from the
/// `expected` version, `None` when it is missing. Without an expected
/// version only a missing row stops a write. `sql` reads the `version` of
/// row `$1`.
async fn stale_version<D: Dialect>(
    pool: &Pool<Db<D>>,
    sql: &'static str,
    id: Uuid,
    expected: Option<Version>,
) -> Result<Option<Version>, PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
{
    let current = sqlx::query_scalar::<_, i64>(sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(D::port_error)?;
    Ok(current.filter(|_| expected.is_some()).map(Version::new))
}
