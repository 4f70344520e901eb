//! [`AccountStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, PasswordHash, Role, Timestamp, Version,
};
use waiter_ports::PortError;
use waiter_ports::identity::{
    AccountChanges, AccountCredentials, AccountPage, AccountStore, InsertAccountError,
    NewAccountRecord, UpdateAccountError,
};

use crate::error::{port_error, violates_unique};

/// The constraint that keeps emails unique; see `migrations/postgres`.
const EMAIL_KEY: &str = "accounts_email_key";

/// Accounts in the `accounts` table.
#[derive(Debug, Clone)]
pub struct PostgresAccountStore {
    pool: PgPool,
}

impl PostgresAccountStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// An `accounts` row without its password hash.
#[derive(Debug, FromRow)]
struct AccountRow {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl TryFrom<AccountRow> for Account {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: AccountRow) -> Result<Self, PortError> {
        Ok(Account {
            id: AccountId::from_uuid(row.id),
            email: Email::parse(&row.email).map_err(PortError::unexpected)?,
            display_name: DisplayName::parse(&row.display_name).map_err(PortError::unexpected)?,
            role: row.role.parse().map_err(PortError::unexpected)?,
            version: Version::new(row.version),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// An `accounts` row with its password hash.
#[derive(Debug, FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    account: AccountRow,
    password_hash: String,
}

impl TryFrom<CredentialsRow> for AccountCredentials {
    type Error = PortError;

    fn try_from(row: CredentialsRow) -> Result<Self, PortError> {
        Ok(AccountCredentials {
            account: row.account.try_into()?,
            password_hash: PasswordHash::new(row.password_hash),
        })
    }
}

#[async_trait]
impl AccountStore for PostgresAccountStore {
    async fn insert(&self, record: NewAccountRecord) -> Result<Account, InsertAccountError> {
        let row = sqlx::query_as::<_, AccountRow>(
            "INSERT INTO accounts
                 (id, email, display_name, role, password_hash, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             RETURNING id, email, display_name, role, version, created_at, updated_at",
        )
        .bind(record.id.as_uuid())
        .bind(record.email.as_str())
        .bind(record.display_name.as_str())
        .bind(record.role.as_str())
        .bind(record.password_hash.as_str())
        .bind(Version::INITIAL.get())
        .bind(record.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| match error {
            error if violates_unique(&error, EMAIL_KEY) => InsertAccountError::EmailTaken,
            error => port_error(error).into(),
        })?;
        Ok(row.try_into()?)
    }

    async fn find(&self, id: AccountId) -> Result<Option<Account>, PortError> {
        sqlx::query_as::<_, AccountRow>(
            "SELECT id, email, display_name, role, version, created_at, updated_at
             FROM accounts WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(port_error)?
        .map(Account::try_from)
        .transpose()
    }

    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<AccountCredentials>, PortError> {
        sqlx::query_as::<_, CredentialsRow>(
            "SELECT id, email, display_name, role, version, created_at, updated_at, password_hash
             FROM accounts WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(port_error)?
        .map(AccountCredentials::try_from)
        .transpose()
    }

    async fn find_credentials(
        &self,
        id: AccountId,
    ) -> Result<Option<AccountCredentials>, PortError> {
        sqlx::query_as::<_, CredentialsRow>(
            "SELECT id, email, display_name, role, version, created_at, updated_at, password_hash
             FROM accounts WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(port_error)?
        .map(AccountCredentials::try_from)
        .transpose()
    }

    async fn update(
        &self,
        id: AccountId,
        changes: AccountChanges,
    ) -> Result<Account, UpdateAccountError> {
        let updated = sqlx::query_as::<_, AccountRow>(
            "UPDATE accounts
             SET email = COALESCE($3, email),
                 display_name = COALESCE($4, display_name),
                 role = COALESCE($5, role),
                 password_hash = COALESCE($6, password_hash),
                 updated_at = $7,
                 version = version + 1
             WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)
             RETURNING id, email, display_name, role, version, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(changes.expected_version.map(Version::get))
        .bind(changes.email.as_ref().map(Email::as_str))
        .bind(changes.display_name.as_ref().map(DisplayName::as_str))
        .bind(changes.role.map(Role::as_str))
        .bind(changes.password_hash.as_ref().map(PasswordHash::as_str))
        .bind(changes.updated_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| match error {
            error if violates_unique(&error, EMAIL_KEY) => UpdateAccountError::EmailTaken,
            error => port_error(error).into(),
        })?;
        if let Some(row) = updated {
            return Ok(row.try_into()?);
        }

        // Nothing matched: tell a missing account from a stale version.
        let current = sqlx::query_scalar::<_, i64>("SELECT version FROM accounts WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(port_error)?;
        Err(match (current, changes.expected_version) {
            (Some(current), Some(_)) => UpdateAccountError::VersionMismatch {
                current: Version::new(current),
            },
            // Without an expected version only a missing row stops the update
            // (an account inserted since then was not there to update).
            _ => UpdateAccountError::NotFound,
        })
    }

    async fn delete(&self, id: AccountId) -> Result<bool, PortError> {
        let result = sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(port_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn list(&self, page: AccountPage) -> Result<Vec<Account>, PortError> {
        let limit = i64::from(page.limit);
        let query = match page.after {
            Some(after) => sqlx::query_as::<_, AccountRow>(
                "SELECT id, email, display_name, role, version, created_at, updated_at
                 FROM accounts WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.as_uuid())
            .bind(limit),
            None => sqlx::query_as::<_, AccountRow>(
                "SELECT id, email, display_name, role, version, created_at, updated_at
                 FROM accounts ORDER BY id LIMIT $1",
            )
            .bind(limit),
        };
        query
            .fetch_all(&self.pool)
            .await
            .map_err(port_error)?
            .into_iter()
            .map(Account::try_from)
            .collect()
    }
}
