//! Which SQLite errors mean what.

use waiter_sql::UniqueKey;

/// SQLite's primary result code for "another connection holds the lock".
const SQLITE_BUSY: i32 = 5;
/// SQLite's primary result code for "a conflict within this connection's
/// shared cache" (or an unlock-notify deadlock).
const SQLITE_LOCKED: i32 = 6;

/// SQLite's primary result codes for storage that failed under it: the
/// file is read-only (`SQLITE_READONLY`), a disk I/O error
/// (`SQLITE_IOERR`), the disk is full (`SQLITE_FULL`), the file cannot be
/// opened (`SQLITE_CANTOPEN`).
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// The primary result code of a database error (the low byte of the
/// extended code SQLite reports).
fn primary_code(error: &sqlx::Error) -> Option<i32> {
    let code = error.as_database_error().and_then(|db| db.code())?;
    code.parse::<i32>().ok().map(|code| code & 0xff)
}

/// True when the file's storage failed: read-only, I/O error, full, or
/// impossible to open.
pub(crate) fn is_storage_failure(error: &sqlx::Error) -> bool {
    matches!(
        primary_code(error),
        Some(SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
    )
}

/// True for `SQLITE_BUSY` (including `SQLITE_BUSY_SNAPSHOT`), `SQLITE_LOCKED`
/// and their extended codes: SQLite's counterparts of PostgreSQL's
/// serialization failures and deadlocks, still there after the busy timeout.
pub(crate) fn is_busy_or_locked(error: &sqlx::Error) -> bool {
    matches!(primary_code(error), Some(SQLITE_BUSY | SQLITE_LOCKED))
}

/// True when `error` is a unique violation of `key`.
///
/// SQLite does not report constraint names, only the columns involved:
/// `UNIQUE constraint failed: messages.conversation_id, messages.id`.
pub(crate) fn violates_unique(error: &sqlx::Error, key: UniqueKey) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.is_unique_violation()
            && db
                .message()
                .strip_prefix("UNIQUE constraint failed: ")
                .is_some_and(|columns| columns == qualified_columns(key))
    })
}

/// The key's columns as SQLite lists them in a violation.
fn qualified_columns(key: UniqueKey) -> String {
    key.columns
        .iter()
        .map(|column| format!("{}.{column}", key.table))
        .collect::<Vec<_>>()
        .join(", ")
}
