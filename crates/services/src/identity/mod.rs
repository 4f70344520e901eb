//! The identity service: accounts, sessions, tokens and roles.
//!
//! Sessions are stored; access tokens are not. A request is authenticated
//! from its JWT alone plus a lookup in the revocation set (see
//! [`revocation`]): ending a session records its revocation in the database
//! with the deletion, and takes effect on the very next request on every
//! instance, without a database read per request.

mod passwords;
mod revocation;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, Password, Role, Session, SessionId, SignUp, Timestamp,
    Version,
};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::clock::Clock;
use waiter_ports::idempotency::Keyed;
use waiter_ports::identity::AccountEvents;
use waiter_ports::identity::{
    AccountChanges, AccountPage, AccountStore, InsertAccountError, NewAccountRecord,
    NewSessionRecord, RefreshTokenRotation, RotateRefreshTokenError, SessionEnding, SessionStore,
    UpdateAccountError,
};
use waiter_ports::identity::{
    AccountError, AuthError, Caller, Credentials, IdentityUseCases, IssuedTokens,
    OwnAccountChanges, RefreshError, SessionError, SignInError,
};

use crate::ids::{new_account_id, new_session_id};
use passwords::Passwords;
use revocation::Revocations;
pub use revocation::SYNC_EVERY as REVOCATION_SYNC_EVERY;
use tokens::{AccessTokens, new_refresh_token, parse_refresh_token};
pub use tokens::{JwtSecret, JwtSecretError};

/// Tunables of the identity service.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub jwt_secret: JwtSecret,
    /// Lifetime of an access token (default 15 minutes).
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token, renewed on each rotation (default 30 days).
    pub refresh_token_ttl: Duration,
    /// How many password hashes may run at once (default: the CPU count).
    pub max_concurrent_hashes: usize,
}

/// The outbound ports the identity service needs.
#[derive(Clone)]
pub struct IdentityPorts {
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// The cache other instances share, through which a revocation reaches
    /// them at once; `None` for a single instance (memory and the database
    /// are enough).
    pub shared_cache: Option<Arc<dyn Cache>>,
    pub clock: Arc<dyn Clock>,
    /// Told when an account is deleted, for services keeping data per account.
    pub events: Arc<dyn AccountEvents>,
}

/// Implements [`IdentityUseCases`].
pub struct IdentityService {
    accounts: Arc<dyn AccountStore>,
    sessions: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn AccountEvents>,
    revocations: Revocations,
    passwords: Passwords,
    access_tokens: AccessTokens,
    refresh_token_ttl: Duration,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("access_tokens", &self.access_tokens)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    /// Builds the service. Fails only if the password hasher cannot start.
    pub fn new(ports: IdentityPorts, settings: IdentitySettings) -> Result<Self, PortError> {
        Ok(Self {
            accounts: ports.accounts,
            revocations: Revocations::new(ports.sessions.clone(), ports.shared_cache),
            sessions: ports.sessions,
            clock: ports.clock,
            events: ports.events,
            passwords: Passwords::new(settings.max_concurrent_hashes)?,
            access_tokens: AccessTokens::new(&settings.jwt_secret, settings.access_token_ttl),
            refresh_token_ttl: settings.refresh_token_ttl,
        })
    }

    /// Opens a new session for `account` and issues its first token pair.
    async fn open_session(&self, account: &Account) -> Result<IssuedTokens, PortError> {
        let now = self.clock.now();
        let session = Session {
            id: new_session_id(),
            account_id: account.id,
            created_at: now,
            refreshed_at: now,
            expires_at: now + self.refresh_token_ttl,
        };
        let (refresh_token, refresh_token_hash) = new_refresh_token(Some(session.id));
        self.sessions
            .create(NewSessionRecord {
                session: session.clone(),
                refresh_token_hash,
            })
            .await?;
        self.tokens_for(account.role, session, refresh_token, now)
    }

    fn tokens_for(
        &self,
        role: Role,
        session: Session,
        refresh_token: String,
        now: Timestamp,
    ) -> Result<IssuedTokens, PortError> {
        let caller = Caller {
            account_id: session.account_id,
            session_id: session.id,
            role,
        };
        Ok(IssuedTokens {
            access_token: self.access_tokens.issue(caller, now)?,
            expires_in: self.access_tokens.ttl(),
            refresh_token,
            session,
        })
    }

    /// Keeps this instance's revocation set in step with the database:
    /// loads it, then reads what other instances recorded every
    /// [`REVOCATION_SYNC_EVERY`]. Runs until dropped; the server spawns it.
    /// Until the first load succeeds, every check asks the database.
    pub async fn keep_revocations_in_sync(&self) {
        let mut failing = false;
        loop {
            match self.revocations.sync(self.clock.now()).await {
                Ok(()) if failing => {
                    tracing::info!("revocations are in sync with the database again");
                    failing = false;
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    tracing::warn!(%err, "cannot read revocations from the database; checks ask the database until it answers");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(REVOCATION_SYNC_EVERY).await;
        }
    }

    /// When a session ended now must stay refused until: its last access
    /// token's expiry, plus a second for tokens issued in the same second.
    fn ending(&self) -> SessionEnding {
        let at = self.clock.now();
        SessionEnding {
            at,
            revoked_until: at + self.access_tokens.ttl() + Duration::from_secs(1),
        }
    }

    /// Ends a session: the store deletes it and records its revocation in one
    /// transaction (a failure leaves it fully alive, and the client may
    /// retry), then the revocation set learns of it.
    async fn end(&self, id: SessionId) -> Result<(), PortError> {
        let ending = self.ending();
        if self.sessions.delete(id, ending).await? {
            self.revocations
                .recorded(&[id], ending.revoked_until, ending.at)
                .await;
        }
        Ok(())
    }

    /// Ends every session of an account but `keep`, as [`Self::end`]
    /// does; the ids revoked are the ones the store deleted, so a session
    /// created meanwhile cannot slip through.
    async fn end_account_sessions(
        &self,
        account_id: AccountId,
        keep: Option<SessionId>,
    ) -> Result<(), PortError> {
        let ending = self.ending();
        let ended = self
            .sessions
            .delete_for_account(account_id, keep, ending)
            .await?;
        self.revocations
            .recorded(&ended, ending.revoked_until, ending.at)
            .await;
        Ok(())
    }

    fn require_admin(caller: Caller) -> Result<(), AccountError> {
        if caller.role.is_admin() {
            Ok(())
        } else {
            Err(AccountError::Forbidden)
        }
    }

    async fn store_account_changes(
        &self,
        id: AccountId,
        changes: AccountChanges,
    ) -> Result<Account, AccountError> {
        self.accounts
            .update(id, changes)
            .await
            .map_err(|err| match err {
                UpdateAccountError::NotFound => AccountError::NotFound,
                UpdateAccountError::VersionMismatch { current } => {
                    AccountError::VersionMismatch { current }
                }
                UpdateAccountError::EmailTaken => AccountError::EmailTaken,
                UpdateAccountError::Port(err) => AccountError::Port(err),
            })
    }

    async fn insert_account(
        &self,
        email: Email,
        display_name: DisplayName,
        password: &Password,
        role: Role,
        keyed: Option<Keyed<Account>>,
    ) -> Result<Account, AccountError> {
        let now = self.clock.now();
        let record = NewAccountRecord {
            id: new_account_id(now),
            email,
            display_name,
            role,
            password_hash: self.passwords.hash(password).await?,
            created_at: now,
        };
        let remember = keyed
            .map(|keyed| keyed.record(&record.account()))
            .transpose()?;
        self.accounts
            .insert(record, remember)
            .await
            .map_err(|err| match err {
                InsertAccountError::EmailTaken => AccountError::EmailTaken,
                InsertAccountError::KeyTaken(taken) => AccountError::KeyTaken(taken),
                InsertAccountError::Port(err) => AccountError::Port(err),
            })
    }

    /// Deletes an account after ending its sessions.
    async fn remove_account(&self, id: AccountId) -> Result<(), AccountError> {
        self.end_account_sessions(id, None).await?;
        if !self.accounts.delete(id).await? {
            return Err(AccountError::NotFound);
        }
        self.events.account_deleted(id).await?;
        Ok(())
    }
}

#[async_trait]
impl IdentityUseCases for IdentityService {
    async fn create_account(
        &self,
        sign_up: SignUp,
        keyed: Option<Keyed<Account>>,
    ) -> Result<Account, AccountError> {
        let SignUp {
            email,
            password,
            display_name,
        } = sign_up;
        self.insert_account(email, display_name, &password, Role::Member, keyed)
            .await
    }

    async fn create_session(&self, credentials: Credentials) -> Result<IssuedTokens, SignInError> {
        let found = match Email::parse(&credentials.email) {
            Ok(email) => self.accounts.find_credentials_by_email(&email).await?,
            Err(_) => None,
        };
        let hash = found.as_ref().map(|found| &found.password_hash);
        let verified = self.passwords.verify(&credentials.password, hash).await?;
        match found {
            Some(found) if verified => Ok(self.open_session(&found.account).await?),
            _ => Err(SignInError::InvalidCredentials),
        }
    }

    async fn refresh_session(&self, refresh_token: &str) -> Result<IssuedTokens, RefreshError> {
        let presented = parse_refresh_token(refresh_token).ok_or(RefreshError::InvalidToken)?;
        // The digest covers the session the token names, so only a token of
        // that session matches; a token of the older, bare form is replaced
        // by another of that form.
        let (new_token, replacement) = new_refresh_token(presented.session);
        let presented = presented.hash;
        let now = self.clock.now();
        let rotation = RefreshTokenRotation {
            presented,
            replacement,
            now,
            expires_at: now + self.refresh_token_ttl,
        };
        let session = match self.sessions.rotate_refresh_token(rotation).await {
            Ok(session) => session,
            Err(RotateRefreshTokenError::Reused {
                session_id,
                account_id,
            }) => {
                tracing::warn!(%session_id, %account_id, "refresh token reuse detected; revoking the session");
                self.end(session_id).await?;
                return Err(RefreshError::Reused);
            }
            Err(RotateRefreshTokenError::Unknown | RotateRefreshTokenError::Expired) => {
                return Err(RefreshError::InvalidToken);
            }
            Err(RotateRefreshTokenError::Port(err)) => return Err(err.into()),
        };
        // The store still held the session, so it has not ended: a session's
        // revocation is recorded in the transaction that deletes it.
        // The role may have changed since sign-in; tokens carry the current one.
        let account = self
            .accounts
            .find(session.account_id)
            .await?
            .ok_or(RefreshError::InvalidToken)?;
        Ok(self.tokens_for(account.role, session, new_token, now)?)
    }

    fn refresh_token_session(&self, refresh_token: &str) -> Option<SessionId> {
        parse_refresh_token(refresh_token)?.session
    }

    async fn authenticate(&self, access_token: &str) -> Result<Caller, AuthError> {
        let now = self.clock.now();
        let caller = self
            .access_tokens
            .verify(access_token, now)
            .ok_or(AuthError::InvalidToken)?;
        if self.revocations.contains(caller.session_id, now).await? {
            return Err(AuthError::InvalidToken);
        }
        Ok(caller)
    }

    async fn get_own_account(&self, caller: Caller) -> Result<Account, AccountError> {
        self.accounts
            .find(caller.account_id)
            .await?
            .ok_or(AccountError::NotFound)
    }

    async fn update_own_account(
        &self,
        caller: Caller,
        changes: OwnAccountChanges,
    ) -> Result<Account, AccountError> {
        let OwnAccountChanges {
            display_name,
            email,
            new_password,
            current_password,
            expected_version,
        } = changes;
        if email.is_some() || new_password.is_some() {
            let stored = self
                .accounts
                .find_credentials(caller.account_id)
                .await?
                .ok_or(AccountError::NotFound)?;
            let current = current_password.ok_or(AccountError::CurrentPasswordMismatch)?;
            if !self
                .passwords
                .verify(&current, Some(&stored.password_hash))
                .await?
            {
                return Err(AccountError::CurrentPasswordMismatch);
            }
        }
        let password_hash = match &new_password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let changed_password = password_hash.is_some();
        let account = self
            .store_account_changes(
                caller.account_id,
                AccountChanges {
                    email,
                    display_name,
                    password_hash,
                    expected_version,
                    ..AccountChanges::at(self.clock.now())
                },
            )
            .await?;
        if changed_password {
            self.end_account_sessions(caller.account_id, Some(caller.session_id))
                .await?;
        }
        Ok(account)
    }

    async fn delete_own_account(&self, caller: Caller) -> Result<(), AccountError> {
        self.remove_account(caller.account_id).await
    }

    async fn get_current_session(&self, caller: Caller) -> Result<Session, SessionError> {
        self.sessions
            .find(caller.session_id)
            .await?
            .filter(|session| session.account_id == caller.account_id)
            .ok_or(SessionError::NotFound)
    }

    async fn list_sessions(&self, caller: Caller) -> Result<Vec<Session>, SessionError> {
        Ok(self
            .sessions
            .list_for_account(caller.account_id, self.clock.now())
            .await?)
    }

    async fn delete_session(
        &self,
        caller: Caller,
        session_id: SessionId,
    ) -> Result<(), SessionError> {
        let owned = self
            .sessions
            .find(session_id)
            .await?
            .is_some_and(|session| session.account_id == caller.account_id);
        if !owned {
            return Err(SessionError::NotFound);
        }
        Ok(self.end(session_id).await?)
    }

    async fn delete_all_sessions(&self, caller: Caller) -> Result<(), SessionError> {
        Ok(self.end_account_sessions(caller.account_id, None).await?)
    }

    async fn list_accounts(
        &self,
        caller: Caller,
        page: AccountPage,
    ) -> Result<Vec<Account>, AccountError> {
        Self::require_admin(caller)?;
        Ok(self.accounts.list(page).await?)
    }

    async fn get_account(&self, caller: Caller, id: AccountId) -> Result<Account, AccountError> {
        Self::require_admin(caller)?;
        self.accounts.find(id).await?.ok_or(AccountError::NotFound)
    }

    async fn update_account(
        &self,
        caller: Caller,
        id: AccountId,
        role: Role,
        expected_version: Option<Version>,
    ) -> Result<Account, AccountError> {
        Self::require_admin(caller)?;
        let changes = AccountChanges {
            role: Some(role),
            expected_version,
            ..AccountChanges::at(self.clock.now())
        };
        let account = self.store_account_changes(id, changes).await?;
        self.end_account_sessions(id, None).await?;
        Ok(account)
    }

    async fn delete_account(&self, caller: Caller, id: AccountId) -> Result<(), AccountError> {
        Self::require_admin(caller)?;
        self.remove_account(id).await
    }

    async fn bootstrap_admin(
        &self,
        email: Email,
        display_name: DisplayName,
        password: Option<Password>,
    ) -> Result<Account, AccountError> {
        match self.accounts.find_credentials_by_email(&email).await? {
            Some(existing) if existing.account.role.is_admin() => Ok(existing.account),
            Some(existing) => {
                let changes = AccountChanges {
                    role: Some(Role::Admin),
                    ..AccountChanges::at(self.clock.now())
                };
                let account = self
                    .store_account_changes(existing.account.id, changes)
                    .await?;
                self.end_account_sessions(account.id, None).await?;
                Ok(account)
            }
            None => {
                let password = password.ok_or(AccountError::PasswordRequired)?;
                self.insert_account(email, display_name, &password, Role::Admin, None)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests;
