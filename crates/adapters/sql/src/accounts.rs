//! [`AccountStore`] on the `accounts` table.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, FromRow, Pool};
use uuid::Uuid;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, PasswordHash, Role, Timestamp, Version,
};
use waiter_ports::PortError;
use waiter_ports::idempotency::IdempotencyRecord;
use waiter_ports::identity::{
    AccountChanges, AccountCredentials, AccountPage, AccountStore, InsertAccountError,
    NewAccountRecord, UpdateAccountError,
};

use crate::calls::Calls;
use crate::idempotency::begin_creating;
use crate::{Column, Connection, Db, Dialect, Param, Row, UniqueKey, limited, stale_version};

/// The constraint that keeps emails unique.
const EMAIL_KEY: UniqueKey = UniqueKey {
    name: "accounts_email_key",
    table: "accounts",
    columns: &["email"],
};

/// The columns an [`AccountRow`] reads, named once so every query selects the same.
macro_rules! account_columns {
    () => {
        "id, email, display_name, role, version, created_at, updated_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO accounts
         (id, email, display_name, role, password_hash, version, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
     RETURNING ",
    account_columns!()
);
const FIND: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = $1"
);
const FIND_CREDENTIALS: &str = concat!(
    "SELECT ",
    account_columns!(),
    ", password_hash FROM accounts WHERE id = $1"
);
const FIND_CREDENTIALS_BY_EMAIL: &str = concat!(
    "SELECT ",
    account_columns!(),
    ", password_hash FROM accounts WHERE email = $1"
);
/// Changes what is given (`NULL` keeps the column) if the version matches
/// `$2`, or whatever the version when `$2` is `NULL`.
const UPDATE: &str = concat!(
    "UPDATE accounts
     SET email = COALESCE($3, email),
         display_name = COALESCE($4, display_name),
         role = COALESCE($5, role),
         password_hash = COALESCE($6, password_hash),
         updated_at = $7,
         version = version + 1
     WHERE id = $1 AND version = COALESCE($2, version)
     RETURNING ",
    account_columns!()
);
const VERSION: &str = "SELECT version FROM accounts WHERE id = $1";
const DELETE: &str = "DELETE FROM accounts WHERE id = $1 RETURNING id";
const LIST: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY id LIMIT $limit"
);
const LIST_AFTER: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id > $1 ORDER BY id LIMIT $limit"
);

/// Accounts in the `accounts` table.
#[derive(Debug)]
pub struct SqlAccountStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
    pub(crate) calls: Calls<D>,
}

/// An `accounts` row without its password hash, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct AccountRow<T> {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    version: i64,
    created_at: T,
    updated_at: T,
}

impl<T: Into<Timestamp>> TryFrom<AccountRow<T>> for Account {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: AccountRow<T>) -> Result<Self, PortError> {
        Ok(Account {
            id: AccountId::from_uuid(row.id),
            email: Email::parse(&row.email).map_err(PortError::unexpected)?,
            display_name: DisplayName::parse(&row.display_name).map_err(PortError::unexpected)?,
            role: row.role.parse().map_err(PortError::unexpected)?,
            version: Version::new(row.version),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        })
    }
}

/// An `accounts` row with its password hash.
#[derive(Debug, FromRow)]
struct CredentialsRow<T> {
    #[sqlx(flatten)]
    account: AccountRow<T>,
    password_hash: String,
}

impl<T: Into<Timestamp>> TryFrom<CredentialsRow<T>> for AccountCredentials {
    type Error = PortError;

    fn try_from(row: CredentialsRow<T>) -> Result<Self, PortError> {
        Ok(AccountCredentials {
            account: row.account.try_into()?,
            password_hash: PasswordHash::new(row.password_hash),
        })
    }
}

#[async_trait]
impl<D: Dialect> AccountStore for SqlAccountStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    i64: Column<Db<D>>,
    i32: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
    for<'q> Option<&'q str>: Param<'q, Db<D>>,
    for<'q> Option<i64>: Param<'q, Db<D>>,
{
    async fn insert(
        &self,
        record: NewAccountRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Account, InsertAccountError> {
        let store = self.clone();
        self.calls
            .write("accounts.insert", async move {
                let mut tx = begin_creating::<D>(store.calls.writer(), remember.as_ref()).await??;
                let row = sqlx::query_as::<_, AccountRow<D::Timestamp>>(INSERT)
                    .bind(record.id.as_uuid())
                    .bind(record.email.as_str())
                    .bind(record.display_name.as_str())
                    .bind(record.role.as_str())
                    .bind(record.password_hash.as_str())
                    .bind(Version::INITIAL.get())
                    .bind(D::Timestamp::from(record.created_at))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|error| match error {
                        error if D::violates(&error, EMAIL_KEY) => InsertAccountError::EmailTaken,
                        error => D::port_error(error).into(),
                    })?;
                tx.commit().await.map_err(D::port_error)?;
                Ok(row.try_into()?)
            })
            .await
    }

    async fn find(&self, id: AccountId) -> Result<Option<Account>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("accounts.find", async move {
                sqlx::query_as::<_, AccountRow<D::Timestamp>>(FIND)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(Account::try_from)
                    .transpose()
            })
            .await
    }

    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<AccountCredentials>, PortError> {
        let (pool, email) = (self.pool.clone(), email.clone());
        self.calls
            .read("accounts.find_credentials_by_email", async move {
                sqlx::query_as::<_, CredentialsRow<D::Timestamp>>(FIND_CREDENTIALS_BY_EMAIL)
                    .bind(email.as_str())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(AccountCredentials::try_from)
                    .transpose()
            })
            .await
    }

    async fn find_credentials(
        &self,
        id: AccountId,
    ) -> Result<Option<AccountCredentials>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("accounts.find_credentials", async move {
                sqlx::query_as::<_, CredentialsRow<D::Timestamp>>(FIND_CREDENTIALS)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(AccountCredentials::try_from)
                    .transpose()
            })
            .await
    }

    async fn update(
        &self,
        id: AccountId,
        changes: AccountChanges,
    ) -> Result<Account, UpdateAccountError> {
        let store = self.clone();
        self.calls
            .write("accounts.update", async move {
                let updated = sqlx::query_as::<_, AccountRow<D::Timestamp>>(UPDATE)
                    .bind(id.as_uuid())
                    .bind(changes.expected_version.map(Version::get))
                    .bind(changes.email.as_ref().map(Email::as_str))
                    .bind(changes.display_name.as_ref().map(DisplayName::as_str))
                    .bind(changes.role.map(Role::as_str))
                    .bind(changes.password_hash.as_ref().map(PasswordHash::as_str))
                    .bind(D::Timestamp::from(changes.updated_at))
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(|error| match error {
                        error if D::violates(&error, EMAIL_KEY) => UpdateAccountError::EmailTaken,
                        error => D::port_error(error).into(),
                    })?;
                if let Some(row) = updated {
                    return Ok(row.try_into()?);
                }

                let stale = stale_version::<D>(
                    store.calls.writer(),
                    VERSION,
                    id.as_uuid(),
                    changes.expected_version,
                );
                Err(match stale.await? {
                    Some(current) => UpdateAccountError::VersionMismatch { current },
                    None => UpdateAccountError::NotFound,
                })
            })
            .await
    }

    async fn delete(&self, id: AccountId) -> Result<bool, PortError> {
        let store = self.clone();
        self.calls
            .write("accounts.delete", async move {
                let deleted = sqlx::query_scalar::<_, Uuid>(DELETE)
                    .bind(id.as_uuid())
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                Ok(deleted.is_some())
            })
            .await
    }

    async fn list(&self, page: AccountPage) -> Result<Vec<Account>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("accounts.list", async move {
                let query = match page.after {
                    Some(after) => sqlx::query_as::<_, AccountRow<D::Timestamp>>(limited(
                        LIST_AFTER, page.limit,
                    ))
                    .bind(after.as_uuid()),
                    None => sqlx::query_as(limited(LIST, page.limit)),
                };
                query
                    .fetch_all(&pool)
                    .await
                    .map_err(D::port_error)?
                    .into_iter()
                    .map(Account::try_from)
                    .collect()
            })
            .await
    }
}
