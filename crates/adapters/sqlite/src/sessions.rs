//! [`SessionStore`] on SQLite: `sessions` and their `refresh_tokens`.

use async_trait::async_trait;
use sqlx::{FromRow, SqlitePool};
use uuid::Uuid;
use waiter_domain::{AccountId, Session, SessionId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::identity::{
    NewSessionRecord, REMEMBERED_USED_TOKENS, RefreshTokenRotation, RotateRefreshTokenError,
    SessionStore,
};

use crate::error::port_error;
use crate::timestamp::StoredTimestamp;

/// Sessions in the `sessions` table, refresh token digests in `refresh_tokens`.
#[derive(Debug, Clone)]
pub struct SqliteSessionStore {
    pool: SqlitePool,
}

impl SqliteSessionStore {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// A `sessions` row.
#[derive(Debug, FromRow)]
struct SessionRow {
    id: Uuid,
    account_id: Uuid,
    created_at: StoredTimestamp,
    refreshed_at: StoredTimestamp,
    expires_at: StoredTimestamp,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: SessionId::from_uuid(row.id),
            account_id: AccountId::from_uuid(row.account_id),
            created_at: row.created_at.0,
            refreshed_at: row.refreshed_at.0,
            expires_at: row.expires_at.0,
        }
    }
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn create(&self, record: NewSessionRecord) -> Result<(), PortError> {
        let session = record.session;
        // IMMEDIATE takes the write lock up front, so the transaction waits
        // for other writers (busy timeout) rather than failing half-way.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(port_error)?;
        sqlx::query(
            "INSERT INTO sessions (id, account_id, created_at, refreshed_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(session.id.as_uuid())
        .bind(session.account_id.as_uuid())
        .bind(StoredTimestamp(session.created_at))
        .bind(StoredTimestamp(session.refreshed_at))
        .bind(StoredTimestamp(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(port_error)?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES (?1, ?2)")
            .bind(&record.refresh_token_hash.0[..])
            .bind(session.id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;

        // Clear the account's expired sessions; their tokens go by the cascade.
        sqlx::query(
            "DELETE FROM sessions
             WHERE account_id = ?1 AND expires_at <= ?2 AND id <> ?3",
        )
        .bind(session.account_id.as_uuid())
        .bind(StoredTimestamp(session.created_at))
        .bind(session.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(port_error)?;
        tx.commit().await.map_err(port_error)
    }

    async fn find(&self, id: SessionId) -> Result<Option<Session>, PortError> {
        let row = sqlx::query_as::<_, SessionRow>(
            "SELECT id, account_id, created_at, refreshed_at, expires_at
             FROM sessions WHERE id = ?1",
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
             WHERE account_id = ?1 AND expires_at > ?2
             ORDER BY created_at DESC, id DESC",
        )
        .bind(account_id.as_uuid())
        .bind(StoredTimestamp(now))
        .fetch_all(&self.pool)
        .await
        .map_err(port_error)?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    async fn rotate_refresh_token(
        &self,
        rotation: RefreshTokenRotation,
    ) -> Result<Session, RotateRefreshTokenError> {
        // IMMEDIATE takes the write lock before the first read, serialising
        // this with concurrent rotations and deletes: each step below sees
        // the outcome of every transaction that went before, and nothing
        // changes under it. (SQLite has no row locks, so unlike PostgreSQL
        // there is no lock order to get wrong.) The steps mirror the
        // PostgreSQL adapter's.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(port_error)?;

        let session_id = sqlx::query_scalar::<_, Uuid>(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = ?1",
        )
        .bind(&rotation.presented.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        let Some(session_id) = session_id else {
            // Never issued, or its session is gone.
            return Err(RotateRefreshTokenError::Unknown);
        };

        let account_id =
            sqlx::query_scalar::<_, Uuid>("SELECT account_id FROM sessions WHERE id = ?1")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(port_error)?;
        let Some(account_id) = account_id else {
            // The token's foreign key should rule this out; a token whose
            // session is gone is as good as never issued.
            return Err(RotateRefreshTokenError::Unknown);
        };

        // Exactly one of any concurrent rotations sees the token unused.
        let retired = sqlx::query_scalar::<_, Uuid>(
            "UPDATE refresh_tokens SET used_at = ?2
             WHERE token_hash = ?1 AND used_at IS NULL
             RETURNING session_id",
        )
        .bind(&rotation.presented.0[..])
        .bind(StoredTimestamp(rotation.now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        if retired.is_none() {
            // Already rotated away, and its session still exists: a replay.
            // Nothing has changed, so `tx` is simply dropped.
            return Err(RotateRefreshTokenError::Reused {
                session_id: SessionId::from_uuid(session_id),
                account_id: AccountId::from_uuid(account_id),
            });
        }

        let session = sqlx::query_as::<_, SessionRow>(
            "UPDATE sessions SET refreshed_at = ?2, expires_at = ?3
             WHERE id = ?1 AND expires_at > ?2
             RETURNING id, account_id, created_at, refreshed_at, expires_at",
        )
        .bind(session_id)
        .bind(StoredTimestamp(rotation.now))
        .bind(StoredTimestamp(rotation.expires_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(port_error)?;
        // The session existed a moment ago and no one else can write while
        // we hold the write lock, so no row here means it has expired.
        // Dropping `tx` rolls back, leaving the token current.
        let Some(session) = session else {
            return Err(RotateRefreshTokenError::Expired);
        };

        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES (?1, ?2)")
            .bind(&rotation.replacement.0[..])
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;

        // Forget all but the most recently rotated-away tokens, always
        // keeping the one just retired. Pruning on every rotation keeps a
        // session at a handful of rows, so the `session_id` index is all the
        // inner query needs.
        sqlx::query(
            "DELETE FROM refresh_tokens
             WHERE token_hash IN (
                 SELECT token_hash FROM refresh_tokens
                 WHERE session_id = ?1 AND used_at IS NOT NULL
                 ORDER BY token_hash = ?2 DESC, used_at DESC, token_hash DESC
                 LIMIT -1 OFFSET ?3
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
        let result = sqlx::query("DELETE FROM sessions WHERE id = ?1")
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
        let ids = sqlx::query_scalar::<_, Uuid>(
            "DELETE FROM sessions
             WHERE account_id = ?1 AND (?2 IS NULL OR id <> ?2)
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
