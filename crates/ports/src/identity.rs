//! Identity: accounts, sign-in sessions, tokens and roles.
//!
//! The inbound [`IdentityUseCases`], the outbound stores it needs
//! ([`AccountStore`], [`SessionStore`]) with their records and errors, and
//! [`AccountEvents`], through which it announces what other features react to.
//! Each method's documentation is its contract: which error variants it
//! returns and when. The contract suites in `waiter-contracts` hold every
//! store adapter to it; the HTTP adapter maps the use-case errors to statuses
//! in one place.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, Password, PasswordHash, Role, Session, SessionId,
    SignUp, Timestamp, Version,
};

use crate::PortError;
use crate::idempotency::{IdempotencyRecord, KeyTaken, Keyed};

/// The authenticated principal of a request, read from a verified access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Who is asking: the owner that "own" resources are checked against.
    pub account_id: AccountId,
    /// The session the token belongs to, so "this session" can be ended or kept.
    pub session_id: SessionId,
    /// The role when the token was issued; a role change ends the account's
    /// sessions, so it is never stale for long.
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
    /// The session the tokens belong to, so the client can name it later.
    pub session: Session,
}

/// A sign-in attempt, as typed by a person: not validated, because a wrong
/// email and a malformed one must get the same answer.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The email as typed; normalised and checked only by looking it up.
    pub email: String,
    /// The password as typed; never trimmed, never stored.
    pub password: String,
}

/// Changes a person makes to their own account.
#[derive(Debug, Clone, Default)]
pub struct OwnAccountChanges {
    /// A new public name; needs no password, as it grants nothing.
    pub display_name: Option<DisplayName>,
    /// A new sign-in email; needs `current_password`, as it hands over the account.
    pub email: Option<Email>,
    /// A new password; needs `current_password`, and ends every other session.
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
    /// Another account signs in with this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Changing email or password without the right `current_password`.
    #[error("the current password is missing or wrong")]
    CurrentPasswordMismatch,
    /// `If-Match` named a version that is no longer current.
    #[error("the account has changed since it was read")]
    VersionMismatch {
        /// The version the account is at now, for the client to read again.
        current: Version,
    },
    /// A new account needs a password and none was given.
    #[error("no account has this email; a password is needed to create one")]
    PasswordRequired,
    /// Another request with the same idempotency key created first; nothing
    /// was created, and the key now replays the other request's response.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of signing in.
#[derive(Debug, Error)]
pub enum SignInError {
    /// Unknown email or wrong password; deliberately indistinguishable.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
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
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of authenticating an access token.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Malformed, badly signed, expired or revoked.
    #[error("invalid access token")]
    InvalidToken,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Failures of the session operations.
#[derive(Debug, Error)]
pub enum SessionError {
    /// No such session among the caller's own.
    #[error("session not found")]
    NotFound,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The identity service as the outside world drives it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdentityUseCases: Send + Sync {
    /// Creates a member account, remembering its response under `keyed`'s
    /// idempotency key in the same transaction. `EmailTaken` when the email
    /// is in use; `KeyTaken`.
    async fn create_account(
        &self,
        sign_up: SignUp,
        keyed: Option<Keyed<Account>>,
    ) -> Result<Account, AccountError>;

    /// Verifies credentials and opens a session. `InvalidCredentials` for an
    /// unknown email or wrong password, taking about as long either way.
    async fn create_session(&self, credentials: Credentials) -> Result<IssuedTokens, SignInError>;

    /// Rotates a refresh token into a new pair. `InvalidToken` when unknown or
    /// expired; `Reused` when already rotated (which revokes the session).
    async fn refresh_session(&self, refresh_token: &str) -> Result<IssuedTokens, RefreshError>;

    /// The session a refresh token names, unverified and without I/O, so a
    /// refresh can be rate-limited per session before anything is read;
    /// `None` when the token names none (it may still be valid).
    fn refresh_token_session(&self, refresh_token: &str) -> Option<SessionId>;

    /// Verifies an access token without reading the database. `InvalidToken`
    /// when it is malformed, forged, expired or its session was revoked.
    async fn authenticate(&self, access_token: &str) -> Result<Caller, AuthError>;

    /// The caller's own account. `NotFound` if it was deleted meanwhile.
    async fn get_own_account(&self, caller: Caller) -> Result<Account, AccountError>;

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
    async fn get_current_session(&self, caller: Caller) -> Result<Session, SessionError>;

    /// The caller's live sessions, newest first.
    async fn list_sessions(&self, caller: Caller) -> Result<Vec<Session>, SessionError>;

    /// Ends one of the caller's sessions. `NotFound` for an unknown session or
    /// one belonging to another account.
    async fn delete_session(
        &self,
        caller: Caller,
        session_id: SessionId,
    ) -> Result<(), SessionError>;

    /// Ends every session of the caller, including the current one.
    async fn delete_all_sessions(&self, caller: Caller) -> Result<(), SessionError>;

    /// A page of all accounts. `Forbidden` unless the caller is an admin.
    async fn list_accounts(
        &self,
        caller: Caller,
        page: AccountPage,
    ) -> Result<Vec<Account>, AccountError>;

    /// One account by id. `Forbidden` unless admin; `NotFound`.
    async fn get_account(&self, caller: Caller, id: AccountId) -> Result<Account, AccountError>;

    /// Sets another account's role, signing it out everywhere so no token
    /// carries the old role. `Forbidden` unless admin; `NotFound`; `VersionMismatch`.
    async fn update_account(
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

/// Everything needed to store a new account.
#[derive(Debug, Clone)]
pub struct NewAccountRecord {
    /// Chosen by the service, so the store never invents identity.
    pub id: AccountId,
    /// Unique among accounts; the store enforces it.
    pub email: Email,
    /// See [`Account::display_name`].
    pub display_name: DisplayName,
    /// `Member` for sign-ups; `Admin` only from `waiter admin create`.
    pub role: Role,
    /// The only form in which a password is ever stored.
    pub password_hash: PasswordHash,
    /// From the service's clock, so tests can pin it; also the first `updated_at`.
    pub created_at: Timestamp,
}

impl NewAccountRecord {
    /// The account as the store will hold it once inserted, so what a
    /// request creates can be rendered before its transaction commits.
    pub fn account(&self) -> Account {
        Account {
            id: self.id,
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            version: Version::INITIAL,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// An account together with its password hash, for verifying a password.
#[derive(Debug, Clone)]
pub struct AccountCredentials {
    /// The account the hash belongs to.
    pub account: Account,
    /// What a presented password is verified against; read only for that.
    pub password_hash: PasswordHash,
}

/// A change to an account: `None` fields stay as they are.
#[derive(Debug, Clone)]
pub struct AccountChanges {
    /// A new email; the store refuses one another account has.
    pub email: Option<Email>,
    /// A new public name.
    pub display_name: Option<DisplayName>,
    /// A new role, which only an admin may give.
    pub role: Option<Role>,
    /// The hash of a new password.
    pub password_hash: Option<PasswordHash>,
    /// Apply only if the stored version is this one (from `If-Match`).
    pub expected_version: Option<Version>,
    /// From the service's clock, so stores never read their own.
    pub updated_at: Timestamp,
}

impl AccountChanges {
    /// A change that alters nothing yet, stamped with `updated_at`.
    pub fn at(updated_at: Timestamp) -> Self {
        Self {
            email: None,
            display_name: None,
            role: None,
            password_hash: None,
            expected_version: None,
            updated_at,
        }
    }
}

/// One page of accounts in id order (which is creation order, ids being ULIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPage {
    /// Only accounts whose id sorts after this one.
    pub after: Option<AccountId>,
    /// At most this many; the caller bounds it.
    pub limit: u32,
}

/// Why an account could not be inserted.
#[derive(Debug, Error)]
pub enum InsertAccountError {
    /// Another account has the email, found by the store's unique constraint
    /// rather than a read before the write, so no race can slip past it.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The idempotency record's key was recorded first by another request.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Why an account could not be updated.
#[derive(Debug, Error)]
pub enum UpdateAccountError {
    /// No account has the id (perhaps deleted meanwhile).
    #[error("no such account")]
    NotFound,
    /// The account is no longer at the expected version; nothing changed.
    #[error("the account changed since the expected version")]
    VersionMismatch {
        /// The stored version, so the caller can report it.
        current: Version,
    },
    /// The new email belongs to another account; nothing changed.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Stores accounts and their password hashes.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a new account at [`Version::INITIAL`] with `updated_at =
    /// created_at` ([`NewAccountRecord::account`]), and `remember` with it in
    /// one transaction.
    ///
    /// MUST return [`InsertAccountError::EmailTaken`] when another account
    /// has the same (already normalised) email, and `KeyTaken` when
    /// `remember`'s key holds a record that has not expired, whatever the
    /// race; either way nothing is stored.
    async fn insert(
        &self,
        record: NewAccountRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Account, InsertAccountError>;

    /// The account with this id, if any.
    async fn find(&self, id: AccountId) -> Result<Option<Account>, PortError>;

    /// The account with this email and its hash, if any.
    async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<AccountCredentials>, PortError>;

    /// The account with this id and its hash, if any.
    async fn find_credentials(
        &self,
        id: AccountId,
    ) -> Result<Option<AccountCredentials>, PortError>;

    /// Applies `changes` in one conditional statement and bumps the version by one.
    ///
    /// MUST return `NotFound` when no account has this id, `VersionMismatch`
    /// (with the stored version) when `expected_version` is set and differs,
    /// and `EmailTaken` when the new email belongs to another account.
    async fn update(
        &self,
        id: AccountId,
        changes: AccountChanges,
    ) -> Result<Account, UpdateAccountError>;

    /// Deletes the account and, with it, every session it has.
    /// Returns `false` when there was no such account.
    async fn delete(&self, id: AccountId) -> Result<bool, PortError>;

    /// A page of accounts in ascending id order.
    async fn list(&self, page: AccountPage) -> Result<Vec<Account>, PortError>;
}

/// The SHA-256 digest of a refresh token. Refresh tokens are high-entropy
/// random strings, so a fast hash is enough; only digests are ever stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash(pub [u8; 32]);

impl std::fmt::Debug for RefreshTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshTokenHash(..)")
    }
}

/// A session to store with the digest of its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSessionRecord {
    /// The session, with its id and times chosen by the service.
    pub session: Session,
    /// The digest of the session's first refresh token; the token itself is never stored.
    pub refresh_token_hash: RefreshTokenHash,
}

/// A request to swap a session's current refresh token for a new one.
#[derive(Debug, Clone)]
pub struct RefreshTokenRotation {
    /// Digest of the token the client presented.
    pub presented: RefreshTokenHash,
    /// Digest of the token that replaces it.
    pub replacement: RefreshTokenHash,
    /// Becomes the session's `refreshed_at`; a session with `expires_at <= now` is not rotated.
    pub now: Timestamp,
    /// The session's new `expires_at`.
    pub expires_at: Timestamp,
}

/// Why a refresh token could not be rotated.
#[derive(Debug, Error)]
pub enum RotateRefreshTokenError {
    /// No session ever issued this token, its session is gone, or it was
    /// rotated away more than [`REMEMBERED_USED_TOKENS`] rotations ago.
    #[error("unknown refresh token")]
    Unknown,
    /// The token was already rotated away: someone is replaying it.
    #[error("refresh token was already used")]
    Reused {
        /// The session the token belonged to, which the service then revokes.
        session_id: SessionId,
        /// Its account, for the log line that records the replay.
        account_id: AccountId,
    },
    /// The token is current but its session has expired.
    #[error("session expired")]
    Expired,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// How many rotated-away refresh tokens a session remembers, so that replaying
/// any of them is detected as reuse (older ones are merely unknown).
pub const REMEMBERED_USED_TOKENS: u32 = 16;

/// Stores sign-in sessions and the digests of their refresh tokens.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session whose current refresh token has this digest.
    ///
    /// In the same transaction it deletes, with their refresh tokens, the
    /// account's other sessions with `expires_at <= created_at` of the new
    /// one (its `created_at` being "now"): signing in is what clears an
    /// account's expired sessions, so no background job is needed. Live
    /// sessions and other accounts' sessions are untouched.
    async fn create(&self, record: NewSessionRecord) -> Result<(), PortError>;

    /// The session with this id, if it exists (expired or not).
    async fn find(&self, id: SessionId) -> Result<Option<Session>, PortError>;

    /// The account's sessions with `expires_at > now`, newest `created_at` first.
    async fn list_for_account(
        &self,
        account_id: AccountId,
        now: Timestamp,
    ) -> Result<Vec<Session>, PortError>;

    /// Atomically retires the presented refresh token and makes `replacement`
    /// the session's current one, returning the updated session.
    ///
    /// Of any number of concurrent calls presenting the same token, exactly
    /// one MUST succeed. A token never seen gives `Unknown`; a current token
    /// of an expired session gives `Expired`.
    ///
    /// A session remembers only its 16 most recently rotated-away tokens:
    /// the one this rotation retires and the 15 before it, "before" meaning
    /// an earlier `now` (ties between equal `now`s are broken arbitrarily),
    /// so a successful rotation deletes the digests of any older ones.
    /// Presenting one of those 16 MUST give `Reused` (as long as its session
    /// exists), so a replay of any recent token still revokes the session;
    /// an older token is forgotten and gives `Unknown`: still refused, but
    /// without revoking the session. This bounds a session's stored digests
    /// at 17, however often it is refreshed.
    async fn rotate_refresh_token(
        &self,
        rotation: RefreshTokenRotation,
    ) -> Result<Session, RotateRefreshTokenError>;

    /// Deletes one session and its refresh tokens and records its revocation
    /// until `ending.revoked_until`, all in one transaction, so a session is
    /// never gone without its access tokens being refused; `false` (and
    /// nothing recorded) when it did not exist.
    ///
    /// In the same transaction it deletes revocations that lapsed by
    /// `ending.at`, so the list stays bounded without a sweeper.
    async fn delete(&self, id: SessionId, ending: SessionEnding) -> Result<bool, PortError>;

    /// Deletes every session of the account except `keep`, recording each
    /// one's revocation as [`Self::delete`] does, in one transaction; returns
    /// the ids deleted.
    async fn delete_for_account(
        &self,
        account_id: AccountId,
        keep: Option<SessionId>,
        ending: SessionEnding,
    ) -> Result<Vec<SessionId>, PortError>;

    /// The revocations recorded at or after `since` that are still in force
    /// at `now` (`revoked_until > now`), in no particular order. With `since`
    /// far enough back, every revocation in force.
    async fn revocations_since(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Revocation>, PortError>;

    /// Whether a revocation of the session is in force at `now`.
    async fn is_revoked(&self, id: SessionId, now: Timestamp) -> Result<bool, PortError>;
}

/// When a session ends, and until when its access tokens must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEnding {
    /// Now: recorded as the revocation's time.
    pub at: Timestamp,
    /// The moment after which no access token of the session can be valid
    /// anyway (now plus one access-token lifetime), so the revocation may go.
    pub revoked_until: Timestamp,
}

/// An ended session whose access tokens must be refused until `revoked_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Revocation {
    /// The ended session.
    pub session_id: SessionId,
    /// When it was ended.
    pub revoked_at: Timestamp,
    /// When its last access token expires anyway.
    pub revoked_until: Timestamp,
}

/// Told about changes to accounts that other services' data depends on.
///
/// The identity service calls it; the server wires it to the services that
/// keep data per account (the catalog, whose cached books of a deleted
/// owner must go). Services thus never reach into each other's stores.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AccountEvents: Send + Sync {
    /// The account and everything the database deletes with it are gone.
    async fn account_deleted(&self, id: AccountId) -> Result<(), PortError>;
}
