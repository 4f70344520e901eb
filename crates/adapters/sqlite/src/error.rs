//! Turning sqlx errors into the ports' errors, in one place.

use waiter_ports::PortError;

/// SQLite's primary result code for "another connection holds the lock".
const SQLITE_BUSY: i32 = 5;
/// SQLite's primary result code for "a conflict within this connection's
/// shared cache" (or an unlock-notify deadlock).
const SQLITE_LOCKED: i32 = 6;

/// Classifies a failure: the database being out of reach, or still locked
/// by another writer after the busy timeout, is `Unavailable` (503, worth
/// retrying); anything else is a bug or corrupt data.
///
/// SQLite's counterparts of PostgreSQL's serialization failures and
/// deadlocks are `SQLITE_BUSY` (including `SQLITE_BUSY_SNAPSHOT`) and
/// `SQLITE_LOCKED`, so those are transient too.
pub(crate) fn port_error(error: sqlx::Error) -> PortError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => PortError::Unavailable(error.into()),
        error if is_busy_or_locked(&error) => PortError::Unavailable(error.into()),
        error => PortError::Unexpected(error.into()),
    }
}

/// True for `SQLITE_BUSY`, `SQLITE_LOCKED` and their extended codes.
fn is_busy_or_locked(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|db| db.code());
    code.and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// True when `error` is a unique violation on `column` (`table.column`).
///
/// SQLite does not report constraint names, only the columns involved.
pub(crate) fn violates_unique(error: &sqlx::Error, column: &str) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.is_unique_violation()
            && db.message().strip_prefix("UNIQUE constraint failed: ") == Some(column)
    })
}

/// Classifies a failed migration like any other query failure when the
/// database could not run it, and as unexpected when the migrations themselves are wrong.
pub(crate) fn migrate_error(error: sqlx::migrate::MigrateError) -> PortError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => port_error(error),
        error => PortError::unexpected(error),
    }
}
