//! [`SessionStore`] on PostgreSQL: `sessions` and their `refresh_tokens`.

use async_trait::async_trait;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;
use waiter_domain::{AccountId, Session, SessionId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::identity::{
    NewSessionRecord, REMEMBERED_USED_TOKENS, RefreshTokenRotation, RotateRefreshTokenError,
    SessionStore,
};

use crate::error::port_error;

/// Sessions in the `sessions` table, refresh token digests in `refresh_tokens`.
#[derive(Debug, Clone)]
pub struct PostgresSessionStore {
    pool: PgPool,
}

impl PostgresSessionStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// A `sessions` row.
#[derive(Debug, FromRow)]
struct SessionRow {
    id: Uuid,
    account_id: Uuid,
    created_at: Timestamp,
    refreshed_at: Timestamp,
    expires_at: Timestamp,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: SessionId::from_uuid(row.id),
            account_id: AccountId::from_uuid(row.account_id),
            created_at: row.created_at,
            refreshed_at: row.refreshed_at,
            expires_at: row.expires_at,
        }
    }
}

#[async_trait]
impl SessionStore for PostgresSessionStore {
    async fn create(&self, record: NewSessionRecord) -> Result<(), PortError> {
        let session = record.session;
        let mut tx = self.pool.begin().await.map_err(port_error)?;
        sqlx::query(
            "INSERT INTO sessions (id, account_id, created_at, refreshed_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session.id.as_uuid())
        .bind(session.account_id.as_uuid())
        .bind(session.created_at)
        .bind(session.refreshed_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(port_error)?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
            .bind(&record.refresh_token_hash.0[..])
            .bind(session.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;

        // Clear the account's expired sessions (their tokens go by the
        // cascade). This comes after the inserts, which take a key-share
        // lock on the account row, so locks are taken in the order deleting
        // the account takes them: the account first, then its sessions. The
        // sessions are locked in id order, as `delete_for_account` locks
        // them, so two of these statements cannot deadlock each other.
        sqlx::query(
            "DELETE FROM sessions
             WHERE id IN (
                 SELECT id FROM sessions
                 WHERE account_id = $1 AND expires_at <= $2 AND id <> $3
                 ORDER BY id
                 FOR UPDATE
             )",
        )
        .bind(session.account_id.as_uuid())
        .bind(session.created_at)
        .bind(session.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(port_error)?;
        tx.commit().await.map_err(port_error)
    }

    async fn find(&self, id: SessionId) -> Result<Option<Session>, PortError> {
        let row = sqlx::query_as::<_, SessionRow>(
            "SELECT id, account_id, created_at, refreshed_at, expires_at
             FROM sessions WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(port_error)?;
        Ok(row.map(Session::from))
    }

    async fn list_for_account(
        &self,
        account_id: AccountId,
        now: Timestamp,
    ) -> Result<Vec<Session>, PortError> {
        let rows = sqlx::query_as::<_, SessionRow>(
            "SELECT id, account_id, created_at, refreshed_at, expires_at
             FROM sessions
             WHERE account_id = $1 AND expires_at > $2
             ORDER BY created_at DESC, id DESC",
        )
        .bind(account_id.as_uuid())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(port_error)?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    async fn rotate_refresh_token(
        &self,
        rotation: RefreshTokenRotation,
    ) -> Result<Session, RotateRefreshTokenError> {
        let mut tx = self.pool.begin().await.map_err(port_error)?;

        // Locks are taken in the order deleting a session takes them: the
        // `sessions` row first, then (by the cascade) its `refresh_tokens`.
        // Locking the token first and then the session, while a sign-out
        // locks the session and then cascades into the token, deadlocks.
        //
        // So first find the token's session without locking anything...
        let session_id = sqlx::query_scalar::<_, Uuid>(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&rotation.presented.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        let Some(session_id) = session_id else {
            // Never issued, or its session is gone.
            return Err(RotateRefreshTokenError::Unknown);
        };

        // ...then lock the session. This waits for a concurrent delete of it
        // (and finds no row once that commits) and for concurrent rotations
        // in the session; while we hold it, neither the session nor its
        // tokens can be deleted.
        let account_id = sqlx::query_scalar::<_, Uuid>(
            "SELECT account_id FROM sessions WHERE id = $1 FOR UPDATE",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        let Some(account_id) = account_id else {
            // Deleted since we found the token: its tokens went with it.
            return Err(RotateRefreshTokenError::Unknown);
        };

        // Retiring the token is the step concurrent callers race on: the
        // conditional update re-reads the row once any earlier rotation has
        // committed, so exactly one of them sees it unused.
        let retired = sqlx::query_scalar::<_, Uuid>(
            "UPDATE refresh_tokens SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL
             RETURNING session_id",
        )
        .bind(&rotation.presented.0[..])
        .bind(rotation.now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        if retired.is_none() {
            // Already rotated away, and its session (locked) still exists: a
            // replay. Nothing has changed, so `tx` is simply dropped.
            return Err(RotateRefreshTokenError::Reused {
                session_id: SessionId::from_uuid(session_id),
                account_id: AccountId::from_uuid(account_id),
            });
        }

        let session = sqlx::query_as::<_, SessionRow>(
            "UPDATE sessions SET refreshed_at = $2, expires_at = $3
             WHERE id = $1 AND expires_at > $2
             RETURNING id, account_id, created_at, refreshed_at, expires_at",
        )
        .bind(session_id)
        .bind(rotation.now)
        .bind(rotation.expires_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        // The session row is locked by us, so it still exists: no row here
        // means it has expired. Dropping `tx` rolls back, leaving the token
        // current.
        let Some(session) = session else {
            return Err(RotateRefreshTokenError::Expired);
        };

        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
            .bind(&rotation.replacement.0[..])
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;

        // Forget all but the most recently rotated-away tokens, always
        // keeping the one just retired. We still hold the session's lock, so
        // this keeps the lock order above. Pruning on every rotation keeps a
        // session at a handful of rows, so the `session_id` index is all the
        // inner query needs.
        sqlx::query(
            "DELETE FROM refresh_tokens
             WHERE token_hash IN (
                 SELECT token_hash FROM refresh_tokens
                 WHERE session_id = $1 AND used_at IS NOT NULL
                 ORDER BY token_hash = $2 DESC, used_at DESC, token_hash DESC
                 OFFSET $3
             )",
        )
        .bind(session_id)
        .bind(&rotation.presented.0[..])
        .bind(i64::from(REMEMBERED_USED_TOKENS))
        .execute(&mut *tx)
        .await
        .map_err(port_error)?;
        tx.commit().await.map_err(port_error)?;
        Ok(session.into())
    }

    async fn delete(&self, id: SessionId) -> Result<bool, PortError> {
        let result = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(port_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_for_account(
        &self,
        account_id: AccountId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionId>, PortError> {
        // Locks the sessions in id order, as `create` does when it clears
        // expired ones, so the two cannot deadlock.
        let ids = sqlx::query_scalar::<_, Uuid>(
            "DELETE FROM sessions
             WHERE id IN (
                 SELECT id FROM sessions
                 WHERE account_id = $1 AND ($2::uuid IS NULL OR id <> $2)
                 ORDER BY id
                 FOR UPDATE
             )
             RETURNING id",
        )
        .bind(account_id.as_uuid())
        .bind(keep.map(SessionId::as_uuid))
        .fetch_all(&self.pool)
        .await
        .map_err(port_error)?;
        Ok(ids.into_iter().map(SessionId::from_uuid).collect())
    }
}
