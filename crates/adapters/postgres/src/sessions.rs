//! The row locks that keep the session store's writes from deadlocking.
//!
//! Deleting an account locks the account row, then (by the cascade) its
//! sessions, then their refresh tokens. Every transaction here takes its
//! locks in that order too, and locks several sessions in id order, so no
//! two of them can each hold a lock the other waits for.

use waiter_sql::SessionLocking;

use crate::PostgresDialect;

impl SessionLocking for PostgresDialect {
    /// Waits for a concurrent delete of the session (and finds no row once
    /// that commits) and for concurrent rotations in it. Rotation reads the
    /// token's session id without a lock first: locking the token and then
    /// the session, while a sign-out locks the session and then cascades into
    /// the token, deadlocks.
    const LOCK_SESSION: &'static str = "SELECT account_id FROM sessions WHERE id = $1 FOR UPDATE";

    /// Runs after the new session's inserts, which take a key-share lock on
    /// the account row, so the account is locked before its sessions.
    const DELETE_EXPIRED: &'static str = "DELETE FROM sessions
         WHERE id IN (
             SELECT id FROM sessions
             WHERE account_id = $1 AND expires_at <= $2 AND id <> $3
             ORDER BY id
             FOR UPDATE
         )";

    const DELETE_FOR_ACCOUNT: &'static str = "DELETE FROM sessions
         WHERE id IN (
             SELECT id FROM sessions
             WHERE account_id = $1 AND ($2::uuid IS NULL OR id <> $2)
             ORDER BY id
             FOR UPDATE
         )
         RETURNING id";
}
