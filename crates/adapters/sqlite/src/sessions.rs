//! How the session store's writes exclude each other on SQLite.
//!
//! SQLite has no row locks: every write transaction begins with
//! `BEGIN IMMEDIATE` ([`Dialect::BEGIN_WRITE`](waiter_sql::Dialect::BEGIN_WRITE)),
//! which takes the database's one write lock before the first read. That
//! serialises a rotation with concurrent rotations and deletes, so each step
//! sees the outcome of every transaction before it and nothing changes under
//! it, and there is no lock order to get wrong.

use waiter_sql::SessionLocking;

use crate::SqliteDialect;

impl SessionLocking for SqliteDialect {
    const LOCK_SESSION: &'static str = "SELECT account_id FROM sessions WHERE id = $1";

    const DELETE_EXPIRED: &'static str =
        "DELETE FROM sessions WHERE account_id = $1 AND expires_at <= $2 AND id <> $3";

    const DELETE_FOR_ACCOUNT: &'static str =
        "DELETE FROM sessions WHERE account_id = $1 AND ($2 IS NULL OR id <> $2) RETURNING id";
}
