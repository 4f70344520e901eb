//! The identity use cases: accounts, sign-in sessions, tokens and roles.
//!
//! Each method's documentation says which error variants it returns and when;
//! the HTTP adapter maps them to statuses in one place.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, Password, Role, Session, SessionId, SignUp, Version,
};

use crate::PortError;
use crate::store::AccountPage;

/// The authenticated principal of a request, read from a verified access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub account_id: AccountId,
    pub session_id: SessionId,
    pub role: Role,
}

/// A freshly issued token pair.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// A signed JWT for the `Authorization: Bearer` header.
    pub access_token: String,
    /// How long the access token is valid from now.
    pub expires_in: Duration,
    /// An opaque secret for `POST /sessions/refresh`; shown once, stored only as a digest.
    pub refresh_token: String,
    pub session: Session,
}

/// A sign-in attempt, as typed by a person: not validated, because a wrong
/// email and a malformed one must get the same answer.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// Changes a person makes to their own account.
#[derive(Debug, Clone, Default)]
pub struct OwnAccountChanges {
    pub display_name: Option<DisplayName>,
    pub email: Option<Email>,
    pub new_password: Option<Password>,
    /// Required when changing `email` or `new_password`.
    pub current_password: Option<String>,
    /// From `If-Match`.
    pub expected_version: Option<Version>,
}

/// Failures of the account operations.
#[derive(Debug, Error)]
pub enum AccountError {
    /// The account does not exist (or, for another's resource, is not visible).
    #[error("account not found")]
    NotFound,
    /// The caller is authenticated but lacks the role.
    #[error("this operation requires the admin role")]
    Forbidden,
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Changing email or password without the right `current_password`.
    #[error("the current password is missing or wrong")]
    CurrentPasswordMismatch,
    /// `If-Match` named a version that is no longer current.
    #[error("the account has changed since it was read")]
    VersionMismatch { current: Version },
    /// A new account needs a password and none was given.
    #[error("no account has this email; a password is needed to create one")]
    PasswordRequired,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of signing in.
#[derive(Debug, Error)]
pub enum SignInError {
    /// Unknown email or wrong password; deliberately indistinguishable.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of exchanging a refresh token.
#[derive(Debug, Error)]
pub enum RefreshError {
    /// Unknown, malformed or expired token.
    #[error("invalid refresh token")]
    InvalidToken,
    /// An already-rotated token was replayed; its session has been revoked.
    #[error("refresh token reuse detected; the session has been revoked")]
    Reused,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of authenticating an access token.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Malformed, badly signed, expired or revoked.
    #[error("invalid access token")]
    InvalidToken,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of the session operations.
#[derive(Debug, Error)]
pub enum SessionError {
    /// No such session among the caller's own.
    #[error("session not found")]
    NotFound,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The identity service as the outside world drives it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdentityUseCases: Send + Sync {
    /// Creates a member account. `EmailTaken` when the email is in use.
    async fn sign_up(&self, sign_up: SignUp) -> Result<Account, AccountError>;

    /// Verifies credentials and opens a session. `InvalidCredentials` for an
    /// unknown email or wrong password, taking about as long either way.
    async fn sign_in(&self, credentials: Credentials) -> Result<IssuedTokens, SignInError>;

    /// Rotates a refresh token into a new pair. `InvalidToken` when unknown or
    /// expired; `Reused` when already rotated (which revokes the session).
    async fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens, RefreshError>;

    /// Verifies an access token without reading the database. `InvalidToken`
    /// when it is malformed, forged, expired or its session was revoked.
    async fn authenticate(&self, access_token: &str) -> Result<Caller, AuthError>;

    /// The caller's own account. `NotFound` if it was deleted meanwhile.
    async fn own_account(&self, caller: Caller) -> Result<Account, AccountError>;

    /// Changes the caller's own account. `CurrentPasswordMismatch` when email or
    /// password change without the right current password; `EmailTaken`;
    /// `VersionMismatch`. A password change ends every other session.
    async fn update_own_account(
        &self,
        caller: Caller,
        changes: OwnAccountChanges,
    ) -> Result<Account, AccountError>;

    /// Deletes the caller's account and ends all its sessions.
    async fn delete_own_account(&self, caller: Caller) -> Result<(), AccountError>;

    /// The session the caller's token belongs to. `NotFound` if it ended.
    async fn current_session(&self, caller: Caller) -> Result<Session, SessionError>;

    /// The caller's live sessions, newest first.
    async fn list_sessions(&self, caller: Caller) -> Result<Vec<Session>, SessionError>;

    /// Ends one of the caller's sessions. `NotFound` for an unknown session or
    /// one belonging to another account.
    async fn end_session(&self, caller: Caller, session_id: SessionId) -> Result<(), SessionError>;

    /// Ends every session of the caller, including the current one.
    async fn end_all_sessions(&self, caller: Caller) -> Result<(), SessionError>;

    /// A page of all accounts. `Forbidden` unless the caller is an admin.
    async fn list_accounts(
        &self,
        caller: Caller,
        page: AccountPage,
    ) -> Result<Vec<Account>, AccountError>;

    /// One account by id. `Forbidden` unless admin; `NotFound`.
    async fn account(&self, caller: Caller, id: AccountId) -> Result<Account, AccountError>;

    /// Sets another account's role, signing it out everywhere so no token
    /// carries the old role. `Forbidden` unless admin; `NotFound`; `VersionMismatch`.
    async fn set_role(
        &self,
        caller: Caller,
        id: AccountId,
        role: Role,
        expected_version: Option<Version>,
    ) -> Result<Account, AccountError>;

    /// Deletes any account and ends its sessions. `Forbidden` unless admin; `NotFound`.
    async fn delete_account(&self, caller: Caller, id: AccountId) -> Result<(), AccountError>;

    /// For the operator's CLI: promotes the account with this email to admin
    /// (signing it out everywhere, like any role change), or creates it as an
    /// admin with `password` when it does not exist; `PasswordRequired` then
    /// when there is none.
    async fn bootstrap_admin(
        &self,
        email: Email,
        display_name: DisplayName,
        password: Option<Password>,
    ) -> Result<Account, AccountError>;
}
