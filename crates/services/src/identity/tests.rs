//! Identity service rules, tested with mockall mocks and a hand-moved clock.

use std::sync::Arc;
use std::time::Duration;

use mockall::predicate::eq;
use time::macros::datetime;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, Password, PasswordHash, Role, Session, SessionId,
    Version,
};
use waiter_ports::cache::MockCache;
use waiter_ports::identity::MockAccountEvents;
use waiter_ports::identity::{
    AccountCredentials, AccountPage, MockAccountStore, MockSessionStore, RotateRefreshTokenError,
};
use waiter_ports::identity::{
    AccountError, AuthError, Caller, Credentials, IdentityUseCases, OwnAccountChanges,
    RefreshError, SessionError, SignInError,
};

use super::*;
use crate::ManualClock;

const START: Timestamp = datetime!(2026-11-21 12:00 UTC);
const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

struct Mocks {
    accounts: MockAccountStore,
    sessions: MockSessionStore,
    cache: MockCache,
    events: MockAccountEvents,
    clock: Arc<ManualClock>,
}

impl Mocks {
    fn new() -> Self {
        Self {
            accounts: MockAccountStore::new(),
            sessions: MockSessionStore::new(),
            cache: MockCache::new(),
            events: MockAccountEvents::new(),
            clock: Arc::new(ManualClock::new(START)),
        }
    }

    /// A cache that has never revoked anything.
    fn with_empty_revocations(mut self) -> Self {
        self.cache.expect_get().returning(|_| Ok(None));
        self
    }

    /// The service, with its revocation set loaded (empty) from the store,
    /// as the server's sync task does before the first request.
    async fn build(mut self) -> (IdentityService, Arc<ManualClock>) {
        self.sessions
            .expect_revocations_since()
            .returning(|_, _| Ok(vec![]));
        let clock = self.clock.clone();
        let service = IdentityService::new(
            IdentityPorts {
                accounts: Arc::new(self.accounts),
                sessions: Arc::new(self.sessions),
                shared_cache: Some(Arc::new(self.cache)),
                clock: self.clock,
                events: Arc::new(self.events),
            },
            IdentitySettings {
                jwt_secret: JwtSecret::new(vec![42; 32]).unwrap(),
                access_token_ttl: ACCESS_TTL,
                refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
                max_concurrent_hashes: 2,
            },
        )
        .unwrap();
        service.revocations.sync(clock.now()).await.unwrap();
        (service, clock)
    }
}

fn account(role: Role) -> Account {
    Account {
        id: AccountId::from_ulid(ulid::Ulid::from(1_u128)),
        email: Email::parse("ann@example.com").unwrap(),
        display_name: DisplayName::parse("Ann").unwrap(),
        role,
        version: Version::INITIAL,
        created_at: START,
        updated_at: START,
    }
}

fn session(account_id: AccountId) -> Session {
    Session {
        id: SessionId::from_ulid(ulid::Ulid::from(99_u128)),
        account_id,
        created_at: START,
        refreshed_at: START,
        expires_at: START + Duration::from_secs(3600),
    }
}

fn caller(role: Role) -> Caller {
    Caller {
        account_id: account(role).id,
        session_id: session(account(role).id).id,
        role,
    }
}

fn hash_of(password: &str) -> PasswordHash {
    Passwords::new(1)
        .map(|passwords| {
            let password = Password::parse(password).unwrap();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(passwords.hash(&password))
            })
            .unwrap()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let mut mocks = Mocks::new();
    let hash = hash_of("right password");
    mocks
        .accounts
        .expect_find_credentials_by_email()
        .returning(move |email| {
            Ok(
                (email.as_str() == "ann@example.com").then(|| AccountCredentials {
                    account: account(Role::Member),
                    password_hash: hash.clone(),
                }),
            )
        });
    mocks.sessions.expect_create().never();
    let (identity, _) = mocks.build().await;

    for (email, password) in [
        ("nobody@example.com", "right password"),
        ("ann@example.com", "wrong password"),
        ("not an email", "x"),
    ] {
        let err = identity
            .create_session(Credentials {
                email: email.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, SignInError::InvalidCredentials),
            "{email}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_caller_is_authenticated_until_the_token_expires() {
    let mut mocks = Mocks::new().with_empty_revocations();
    let hash = hash_of("right password");
    mocks
        .accounts
        .expect_find_credentials_by_email()
        .returning(move |_| {
            Ok(Some(AccountCredentials {
                account: account(Role::Admin),
                password_hash: hash.clone(),
            }))
        });
    mocks
        .sessions
        .expect_create()
        .times(1)
        .returning(|_| Ok(()));
    let (identity, clock) = mocks.build().await;

    let tokens = identity
        .create_session(Credentials {
            email: " ANN@example.com ".into(),
            password: "right password".into(),
        })
        .await
        .unwrap();
    assert_eq!(tokens.expires_in, ACCESS_TTL);
    assert_ne!(tokens.access_token, tokens.refresh_token);
    let caller = identity.authenticate(&tokens.access_token).await.unwrap();
    assert_eq!(caller.account_id, account(Role::Admin).id);
    assert_eq!(caller.session_id, tokens.session.id);
    assert_eq!(caller.role, Role::Admin);

    clock.advance(ACCESS_TTL - Duration::from_secs(1));
    assert!(identity.authenticate(&tokens.access_token).await.is_ok());
    clock.advance(Duration::from_secs(1));
    let err = identity
        .authenticate(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken));

    let err = identity
        .authenticate(&tokens.refresh_token)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::InvalidToken),
        "a refresh token is not a bearer token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_session_fails_authentication_at_once() {
    let mut mocks = Mocks::new();
    let hash = hash_of("right password");
    mocks
        .accounts
        .expect_find_credentials_by_email()
        .returning(move |_| {
            Ok(Some(AccountCredentials {
                account: account(Role::Member),
                password_hash: hash.clone(),
            }))
        });
    mocks.sessions.expect_create().returning(|_| Ok(()));
    mocks
        .cache
        .expect_get()
        .withf(|key| key.starts_with("revoked-session:sess_"))
        .returning(|_| Ok(Some(b"1".to_vec())));
    let (identity, _) = mocks.build().await;
    let tokens = identity
        .create_session(Credentials {
            email: "ann@example.com".into(),
            password: "right password".into(),
        })
        .await
        .unwrap();
    let err = identity
        .authenticate(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken));
}

#[tokio::test]
async fn a_cache_outage_asks_the_database_and_fails_closed_without_it() {
    for (in_database, expected) in [
        (Ok(true), Err("revoked")),
        (Ok(false), Ok(())),
        (Err(()), Err("unavailable")),
    ] {
        let mut mocks = Mocks::new();
        mocks.cache.expect_get().returning(|_| {
            Err(PortError::Unavailable(anyhow::anyhow!(
                "connection refused"
            )))
        });
        mocks
            .sessions
            .expect_is_revoked()
            .times(1)
            .returning(move |_, _| {
                in_database.map_err(|()| PortError::Unavailable(anyhow::anyhow!("database down")))
            });
        let (identity, clock) = mocks.build().await;
        let token = identity
            .access_tokens
            .issue(caller(Role::Member), clock.now())
            .unwrap();
        let outcome = identity.authenticate(&token).await;
        match expected {
            Ok(()) => assert!(outcome.is_ok(), "{outcome:?}"),
            Err("revoked") => assert!(matches!(outcome, Err(AuthError::InvalidToken))),
            Err(_) => assert!(matches!(
                outcome,
                Err(AuthError::Port(PortError::Unavailable(_)))
            )),
        }
    }
}

#[tokio::test]
async fn replaying_a_rotated_refresh_token_revokes_its_session() {
    let mut mocks = Mocks::new();
    let victim = session(account(Role::Member).id);
    let (victim_id, victim_account) = (victim.id, victim.account_id);
    mocks
        .sessions
        .expect_rotate_refresh_token()
        .times(1)
        .returning(move |_| {
            Err(RotateRefreshTokenError::Reused {
                session_id: victim_id,
                account_id: victim_account,
            })
        });
    mocks
        .cache
        .expect_set()
        .withf(move |key, _, ttl| {
            key == format!("revoked-session:{victim_id}") && *ttl >= ACCESS_TTL
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    mocks
        .sessions
        .expect_delete()
        .withf(move |id, ending| *id == victim_id && ending.revoked_until - ending.at >= ACCESS_TTL)
        .times(1)
        .returning(|_, _| Ok(true));
    let (identity, _) = mocks.build().await;
    let (token, _) = tokens::new_refresh_token(None);
    let err = identity.refresh_session(&token).await.unwrap_err();
    assert!(matches!(err, RefreshError::Reused), "{err:?}");
}

#[tokio::test]
async fn malformed_refresh_tokens_never_reach_the_store() {
    let mut mocks = Mocks::new();
    mocks.sessions.expect_rotate_refresh_token().never();
    let (identity, _) = mocks.build().await;
    for token in [
        "",
        "short",
        &"x".repeat(500),
        "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    ] {
        assert!(matches!(
            identity.refresh_session(token).await,
            Err(RefreshError::InvalidToken)
        ));
    }
}

#[tokio::test]
async fn refreshing_issues_tokens_with_the_current_role() {
    let mut mocks = Mocks::new().with_empty_revocations();
    let live = session(account(Role::Member).id);
    mocks
        .sessions
        .expect_rotate_refresh_token()
        .returning(move |rotation| {
            assert_ne!(rotation.presented, rotation.replacement);
            Ok(live.clone())
        });
    mocks
        .accounts
        .expect_find()
        .returning(|_| Ok(Some(account(Role::Admin))));
    let (identity, _) = mocks.build().await;
    let (token, _) = tokens::new_refresh_token(None);
    let tokens = identity.refresh_session(&token).await.unwrap();
    assert_ne!(tokens.refresh_token, token);
    let caller = identity.authenticate(&tokens.access_token).await.unwrap();
    assert_eq!(caller.role, Role::Admin, "promoted since sign-in");
}

#[tokio::test]
async fn an_expired_or_unknown_refresh_token_is_invalid() {
    for outcome in [
        RotateRefreshTokenError::Unknown,
        RotateRefreshTokenError::Expired,
    ] {
        let mut mocks = Mocks::new();
        let mut outcome = Some(outcome);
        mocks
            .sessions
            .expect_rotate_refresh_token()
            .returning(move |_| Err(outcome.take().unwrap()));
        let (identity, _) = mocks.build().await;
        let (token, _) = tokens::new_refresh_token(None);
        assert!(matches!(
            identity.refresh_session(&token).await,
            Err(RefreshError::InvalidToken)
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_password_needs_the_current_one_and_ends_other_sessions() {
    let mut mocks = Mocks::new();
    let hash = hash_of("old password");
    let me = caller(Role::Member);
    mocks
        .accounts
        .expect_find_credentials()
        .returning(move |_| {
            Ok(Some(AccountCredentials {
                account: account(Role::Member),
                password_hash: hash.clone(),
            }))
        });
    mocks
        .accounts
        .expect_update()
        .withf(|_, changes| changes.password_hash.is_some())
        .times(1)
        .returning(|_, _| Ok(account(Role::Member)));
    let other = SessionId::from_ulid(ulid::Ulid::from(7_u128));
    mocks
        .cache
        .expect_set()
        .withf(move |key, _, _| key == format!("revoked-session:{other}"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    mocks
        .sessions
        .expect_delete_for_account()
        .withf(move |account, keep, _| *account == me.account_id && *keep == Some(me.session_id))
        .times(1)
        .returning(move |_, _, _| Ok(vec![other]));
    let (identity, _) = mocks.build().await;

    let change = |current: Option<&str>| OwnAccountChanges {
        new_password: Some(Password::parse("new password").unwrap()),
        current_password: current.map(str::to_owned),
        ..OwnAccountChanges::default()
    };
    for wrong in [None, Some("not my password")] {
        let err = identity
            .update_own_account(me, change(wrong))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AccountError::CurrentPasswordMismatch),
            "{wrong:?}: {err:?}"
        );
    }
    identity
        .update_own_account(me, change(Some("old password")))
        .await
        .unwrap();
}

#[tokio::test]
async fn members_cannot_administer_accounts() {
    let mut mocks = Mocks::new();
    mocks.accounts.expect_list().never();
    mocks.accounts.expect_update().never();
    mocks.accounts.expect_delete().never();
    let (identity, _) = mocks.build().await;
    let member = caller(Role::Member);
    let other = AccountId::from_ulid(ulid::Ulid::from(5_u128));
    let page = AccountPage {
        after: None,
        limit: 10,
    };
    assert!(matches!(
        identity.list_accounts(member, page).await,
        Err(AccountError::Forbidden)
    ));
    assert!(matches!(
        identity.get_account(member, other).await,
        Err(AccountError::Forbidden)
    ));
    assert!(matches!(
        identity
            .update_account(member, other, Role::Admin, None)
            .await,
        Err(AccountError::Forbidden)
    ));
    assert!(matches!(
        identity.delete_account(member, other).await,
        Err(AccountError::Forbidden)
    ));
}

#[tokio::test]
async fn another_accounts_session_cannot_be_ended() {
    let mut mocks = Mocks::new();
    let stranger = AccountId::from_ulid(ulid::Ulid::from(8_u128));
    let theirs = session(stranger);
    let their_id = theirs.id;
    mocks
        .sessions
        .expect_find()
        .returning(move |_| Ok(Some(theirs.clone())));
    mocks.sessions.expect_delete().never();
    mocks.cache.expect_set().never();
    let (identity, _) = mocks.build().await;
    let err = identity
        .delete_session(caller(Role::Member), their_id)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::NotFound));
}

#[tokio::test]
async fn a_role_change_signs_the_account_out_everywhere() {
    let mut mocks = Mocks::new();
    let target = account(Role::Member);
    let target_id = target.id;
    mocks
        .accounts
        .expect_update()
        .withf(move |id, changes| *id == target_id && changes.role == Some(Role::Admin))
        .returning(|_, _| Ok(account(Role::Admin)));
    let ended = session(target_id).id;
    mocks
        .sessions
        .expect_delete_for_account()
        .withf(move |account, keep, _| *account == target_id && keep.is_none())
        .times(1)
        .returning(move |_, _, _| Ok(vec![ended]));
    mocks
        .cache
        .expect_set()
        .withf(move |key, _, _| key == format!("revoked-session:{ended}"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let (identity, _) = mocks.build().await;
    let admin = Caller {
        role: Role::Admin,
        ..caller(Role::Admin)
    };
    let updated = identity
        .update_account(admin, target_id, Role::Admin, None)
        .await
        .unwrap();
    assert_eq!(updated.role, Role::Admin);
}

#[tokio::test]
async fn deleting_an_account_tells_the_other_services_after_it_is_gone() {
    let mut mocks = Mocks::new();
    let me = caller(Role::Member);
    let mut sequence = mockall::Sequence::new();
    mocks
        .sessions
        .expect_list_for_account()
        .returning(|_, _| Ok(vec![]));
    mocks
        .sessions
        .expect_delete_for_account()
        .returning(|_, _, _| Ok(vec![]));
    mocks
        .accounts
        .expect_delete()
        .with(eq(me.account_id))
        .times(1)
        .in_sequence(&mut sequence)
        .returning(|_| Ok(true));
    mocks
        .events
        .expect_account_deleted()
        .with(eq(me.account_id))
        .times(1)
        .in_sequence(&mut sequence)
        .returning(|_| Ok(()));
    let (identity, _) = mocks.build().await;
    identity.delete_own_account(me).await.unwrap();
}
