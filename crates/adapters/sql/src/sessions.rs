//! [`SessionStore`] on `sessions` and their `refresh_tokens`.

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, FromRow, Pool};
use uuid::Uuid;
use waiter_domain::{AccountId, Session, SessionId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::identity::{
    NewSessionRecord, REMEMBERED_USED_TOKENS, RefreshTokenRotation, Revocation,
    RotateRefreshTokenError, SessionEnding, SessionStore,
};

use crate::calls::Calls;
use crate::{Column, Connection, Db, Dialect, Param, Row};

/// The columns a [`SessionRow`] reads, named once so every query selects the same.
macro_rules! session_columns {
    () => {
        "id, account_id, created_at, refreshed_at, expires_at"
    };
}

const INSERT: &str = "INSERT INTO sessions (id, account_id, created_at, refreshed_at, expires_at)
                      VALUES ($1, $2, $3, $4, $5)";
const INSERT_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)";
const FIND: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = $1"
);
const LIST_FOR_ACCOUNT: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions
     WHERE account_id = $1 AND expires_at > $2
     ORDER BY created_at DESC, id DESC"
);
const TOKEN_SESSION: &str = "SELECT session_id FROM refresh_tokens WHERE token_hash = $1";
const RETIRE_TOKEN: &str = "UPDATE refresh_tokens SET used_at = $2
                            WHERE token_hash = $1 AND used_at IS NULL
                            RETURNING session_id";
const REFRESH: &str = concat!(
    "UPDATE sessions SET refreshed_at = $2, expires_at = $3
     WHERE id = $1 AND expires_at > $2
     RETURNING ",
    session_columns!()
);
/// Deletes the used tokens of session `$1` but token `$2` and the
/// [`REMEMBERED_USED_TOKENS`]` - 1` most recently used others, a number
/// written in rather than bound (see [`limited`](crate::limited)). Pruning
/// on every rotation keeps a session at a handful of rows, so the
/// `session_id` index is all this needs.
static PRUNE_USED_TOKENS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM refresh_tokens
         WHERE session_id = $1 AND used_at IS NOT NULL AND token_hash <> $2
           AND token_hash NOT IN (
               SELECT token_hash FROM refresh_tokens
               WHERE session_id = $1 AND used_at IS NOT NULL AND token_hash <> $2
               ORDER BY used_at DESC, token_hash DESC
               LIMIT {}
           )",
        REMEMBERED_USED_TOKENS - 1
    )
});
const DELETE: &str = "DELETE FROM sessions WHERE id = $1 RETURNING id";
/// Records that session `$1` ended at `$2` and its tokens stay refused until
/// `$3`. A session is deleted once, but the conflict clause keeps a repeated
/// revocation harmless.
const REVOKE: &str = "INSERT INTO session_revocations (session_id, revoked_at, revoked_until)
                      VALUES ($1, $2, $3)
                      ON CONFLICT (session_id) DO UPDATE SET revoked_until = excluded.revoked_until";
const PRUNE_REVOCATIONS: &str = "DELETE FROM session_revocations WHERE revoked_until <= $1";
const REVOCATIONS_SINCE: &str = "SELECT session_id, revoked_at, revoked_until
                                 FROM session_revocations
                                 WHERE revoked_at >= $1 AND revoked_until > $2";
const IS_REVOKED: &str = "SELECT session_id FROM session_revocations
                          WHERE session_id = $1 AND revoked_until > $2";

/// How a dialect keeps the session store's concurrent writes from
/// interleaving badly: the statements that lock, and must lock in an order
/// that cannot deadlock, on a database with row locks.
///
/// Every write transaction of the store begins with
/// [`Dialect::BEGIN_WRITE`]; these statements run inside one.
pub trait SessionLocking: Dialect {
    /// Reads the `account_id` of session `$1` and keeps the session from
    /// changing or being deleted until the transaction ends.
    const LOCK_SESSION: &'static str;

    /// Deletes the sessions of account `$1` that expired at or before `$2`,
    /// except session `$3`.
    const DELETE_EXPIRED: &'static str;

    /// Deletes the sessions of account `$1`, except session `$2` unless it is
    /// `NULL`, returning the ids of those deleted.
    const DELETE_FOR_ACCOUNT: &'static str;
}

/// Sessions in the `sessions` table, refresh token digests in `refresh_tokens`.
#[derive(Debug)]
pub struct SqlSessionStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
    pub(crate) calls: Calls<D>,
}

/// A `sessions` row, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct SessionRow<T> {
    id: Uuid,
    account_id: Uuid,
    created_at: T,
    refreshed_at: T,
    expires_at: T,
}

/// A `session_revocations` row, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct RevocationRow<T> {
    session_id: Uuid,
    revoked_at: T,
    revoked_until: T,
}

impl<T: Into<Timestamp>> From<RevocationRow<T>> for Revocation {
    fn from(row: RevocationRow<T>) -> Self {
        Revocation {
            session_id: SessionId::from_uuid(row.session_id),
            revoked_at: row.revoked_at.into(),
            revoked_until: row.revoked_until.into(),
        }
    }
}

impl<T: Into<Timestamp>> From<SessionRow<T>> for Session {
    fn from(row: SessionRow<T>) -> Self {
        Session {
            id: SessionId::from_uuid(row.id),
            account_id: AccountId::from_uuid(row.account_id),
            created_at: row.created_at.into(),
            refreshed_at: row.refreshed_at.into(),
            expires_at: row.expires_at.into(),
        }
    }
}

#[async_trait]
impl<D: SessionLocking> SessionStore for SqlSessionStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
    for<'q> Option<Uuid>: Param<'q, Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
{
    async fn create(&self, record: NewSessionRecord) -> Result<(), PortError> {
        let store = self.clone();
        self.calls
            .write("sessions.create", async move {
                let session = record.session;
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;
                sqlx::query(INSERT)
                    .bind(session.id.as_uuid())
                    .bind(session.account_id.as_uuid())
                    .bind(D::Timestamp::from(session.created_at))
                    .bind(D::Timestamp::from(session.refreshed_at))
                    .bind(D::Timestamp::from(session.expires_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                sqlx::query(INSERT_TOKEN)
                    .bind(&record.refresh_token_hash.0[..])
                    .bind(session.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                // Clear the account's expired sessions; their tokens go by the cascade.
                sqlx::query(D::DELETE_EXPIRED)
                    .bind(session.account_id.as_uuid())
                    .bind(D::Timestamp::from(session.created_at))
                    .bind(session.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                tx.commit().await.map_err(D::port_error)
            })
            .await
    }

    async fn find(&self, id: SessionId) -> Result<Option<Session>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("sessions.find", async move {
                let row = sqlx::query_as::<_, SessionRow<D::Timestamp>>(FIND)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?;
                Ok(row.map(Session::from))
            })
            .await
    }

    async fn list_for_account(
        &self,
        account_id: AccountId,
        now: Timestamp,
    ) -> Result<Vec<Session>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("sessions.list_for_account", async move {
                let rows = sqlx::query_as::<_, SessionRow<D::Timestamp>>(LIST_FOR_ACCOUNT)
                    .bind(account_id.as_uuid())
                    .bind(D::Timestamp::from(now))
                    .fetch_all(&pool)
                    .await
                    .map_err(D::port_error)?;
                Ok(rows.into_iter().map(Session::from).collect())
            })
            .await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: RefreshTokenRotation,
    ) -> Result<Session, RotateRefreshTokenError> {
        let store = self.clone();
        self.calls
            .write("sessions.rotate_refresh_token", async move {
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;

                // Find the token's session without locking anything (the dialect's
                // lock order may put the session before its tokens)...
                let session_id = sqlx::query_scalar::<_, Uuid>(TOKEN_SESSION)
                    .bind(&rotation.presented.0[..])
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                let Some(session_id) = session_id else {
                    // Never issued, or its session is gone.
                    return Err(RotateRefreshTokenError::Unknown);
                };

                // ...then lock the session: while we hold it, neither the session
                // nor its tokens can be deleted, and concurrent rotations in the
                // session wait for us.
                let account_id = sqlx::query_scalar::<_, Uuid>(D::LOCK_SESSION)
                    .bind(session_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                let Some(account_id) = account_id else {
                    // Deleted since we found the token: its tokens went with it.
                    return Err(RotateRefreshTokenError::Unknown);
                };

                // Retiring the token is the step concurrent callers race on: the
                // conditional update sees the outcome of any earlier rotation, so
                // exactly one of them finds it unused.
                let retired = sqlx::query_scalar::<_, Uuid>(RETIRE_TOKEN)
                    .bind(&rotation.presented.0[..])
                    .bind(D::Timestamp::from(rotation.now))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                if retired.is_none() {
                    // Already rotated away, and its session (locked) still exists: a
                    // replay. Nothing has changed, so `tx` is simply dropped.
                    return Err(RotateRefreshTokenError::Reused {
                        session_id: SessionId::from_uuid(session_id),
                        account_id: AccountId::from_uuid(account_id),
                    });
                }

                let session = sqlx::query_as::<_, SessionRow<D::Timestamp>>(REFRESH)
                    .bind(session_id)
                    .bind(D::Timestamp::from(rotation.now))
                    .bind(D::Timestamp::from(rotation.expires_at))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                // The session is locked by us, so it still exists: no row here means
                // it has expired. Dropping `tx` rolls back, leaving the token current.
                let Some(session) = session else {
                    return Err(RotateRefreshTokenError::Expired);
                };

                sqlx::query(INSERT_TOKEN)
                    .bind(&rotation.replacement.0[..])
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                // Forget all but the most recently rotated-away tokens, always
                // keeping the one just retired.
                sqlx::query(PRUNE_USED_TOKENS.as_str())
                    .bind(session_id)
                    .bind(&rotation.presented.0[..])
                    .execute(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                tx.commit().await.map_err(D::port_error)?;
                Ok(session.into())
            })
            .await
    }

    async fn delete(&self, id: SessionId, ending: SessionEnding) -> Result<bool, PortError> {
        let store = self.clone();
        self.calls
            .write("sessions.delete", async move {
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;
                let deleted = sqlx::query_scalar::<_, Uuid>(DELETE)
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                revoke::<D>(&mut tx, deleted.as_slice(), ending).await?;
                tx.commit().await.map_err(D::port_error)?;
                Ok(deleted.is_some())
            })
            .await
    }

    async fn delete_for_account(
        &self,
        account_id: AccountId,
        keep: Option<SessionId>,
        ending: SessionEnding,
    ) -> Result<Vec<SessionId>, PortError> {
        let store = self.clone();
        self.calls
            .write("sessions.delete_for_account", async move {
                let mut tx = store
                    .calls
                    .writer()
                    .begin_with(D::BEGIN_WRITE)
                    .await
                    .map_err(D::port_error)?;
                let ids = sqlx::query_scalar::<_, Uuid>(D::DELETE_FOR_ACCOUNT)
                    .bind(account_id.as_uuid())
                    .bind(keep.map(SessionId::as_uuid))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(D::port_error)?;
                revoke::<D>(&mut tx, &ids, ending).await?;
                tx.commit().await.map_err(D::port_error)?;
                Ok(ids.into_iter().map(SessionId::from_uuid).collect())
            })
            .await
    }

    async fn revocations_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Revocation>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("sessions.revocations_since", async move {
                let rows = sqlx::query_as::<_, RevocationRow<D::Timestamp>>(REVOCATIONS_SINCE)
                    .bind(D::Timestamp::from(since))
                    .bind(D::Timestamp::from(now))
                    .fetch_all(&pool)
                    .await
                    .map_err(D::port_error)?;
                Ok(rows.into_iter().map(Revocation::from).collect())
            })
            .await
    }

    async fn is_revoked(&self, id: SessionId, now: Timestamp) -> Result<bool, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("sessions.is_revoked", async move {
                let found = sqlx::query_scalar::<_, Uuid>(IS_REVOKED)
                    .bind(id.as_uuid())
                    .bind(D::Timestamp::from(now))
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?;
                Ok(found.is_some())
            })
            .await
    }
}

/// Records the revocation of the sessions `ids`, deleted in `tx`, and prunes
/// the revocations that lapsed by `ending.at`.
async fn revoke<D: Dialect>(
    tx: &mut sqlx::Transaction<'_, Db<D>>,
    ids: &[Uuid],
    ending: SessionEnding,
) -> Result<(), PortError>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    Uuid: Column<Db<D>>,
{
    for id in ids {
        sqlx::query(REVOKE)
            .bind(*id)
            .bind(D::Timestamp::from(ending.at))
            .bind(D::Timestamp::from(ending.revoked_until))
            .execute(&mut **tx)
            .await
            .map_err(D::port_error)?;
    }
    sqlx::query(PRUNE_REVOCATIONS)
        .bind(D::Timestamp::from(ending.at))
        .execute(&mut **tx)
        .await
        .map_err(D::port_error)?;
    Ok(())
}
