//! The [`SessionStore`] contract, run against every adapter that implements it.
//!
//! Each check is a `pub async fn` taking an account store and a session
//! store over the same empty database (sessions belong to accounts); an
//! adapter's test file runs every one of them as its own test with
//! [`session_store_contract_tests!`](crate::session_store_contract_tests).

use std::collections::HashSet;

use futures::future::join_all;
use time::Duration;
use ulid::Ulid;
use waiter_domain::{AccountId, Session, SessionId, Timestamp};
use waiter_ports::store::{
    AccountStore, NewSessionRecord, RefreshTokenHash, RefreshTokenRotation,
    RotateRefreshTokenError, SessionStore,
};

use crate::accounts::{insert_account, now};

/// Generates one `#[tokio::test]` per session store check.
///
/// `$fixture` is an
/// `async fn(check: impl AsyncFnOnce(&dyn AccountStore, &dyn SessionStore))`
/// that sets up fresh stores on one database, runs `check` and cleans up.
#[macro_export]
macro_rules! session_store_contract_tests {
    ($fixture:path) => {
        $crate::session_store_contract_tests!(@each $fixture:
            create_then_find_round_trips,
            list_for_account_is_newest_first_without_expired_or_others,
            rotation_swaps_the_refresh_token,
            a_rotated_away_token_is_reused,
            a_token_never_issued_is_unknown,
            the_current_token_of_an_expired_session_is_expired,
            of_twenty_concurrent_rotations_of_one_token_exactly_one_wins,
            concurrent_rotation_and_delete_both_end_cleanly,
            rotating_after_the_session_is_deleted_is_unknown,
            delete_removes_the_session_and_its_tokens,
            delete_for_account_deletes_all_but_the_kept_session,
            deleting_an_account_deletes_its_sessions,
        );
    };
    (@each $fixture:path: $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $fixture($crate::sessions::$check).await;
            }
        )*
    };
}

/// A digest no other check uses.
pub fn fresh_token() -> RefreshTokenHash {
    let mut digest = [0; 32];
    digest[..16].copy_from_slice(&Ulid::generate().to_bytes());
    digest[16..].copy_from_slice(&Ulid::generate().to_bytes());
    RefreshTokenHash(digest)
}

/// A session of `account_id` created at `created_at`, valid for an hour.
pub fn session_of(account_id: AccountId, created_at: Timestamp) -> Session {
    Session {
        id: SessionId::from_ulid(Ulid::generate()),
        account_id,
        created_at,
        refreshed_at: created_at,
        expires_at: created_at + Duration::hours(1),
    }
}

/// Stores `session` with a fresh first refresh token, returning that token.
pub async fn create_session(sessions: &dyn SessionStore, session: &Session) -> RefreshTokenHash {
    let token = fresh_token();
    let record = NewSessionRecord {
        session: session.clone(),
        refresh_token_hash: token,
    };
    sessions.create(record).await.expect("create session");
    token
}

/// A rotation of `presented` at `now()`, extending the session by an hour.
fn rotation(presented: RefreshTokenHash) -> RefreshTokenRotation {
    let now = now();
    RefreshTokenRotation {
        presented,
        replacement: fresh_token(),
        now,
        expires_at: now + Duration::hours(1),
    }
}

/// A created session is found exactly as given; an unknown id is not.
pub async fn create_then_find_round_trips(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    create_session(sessions, &session).await;
    assert_eq!(
        sessions.find(session.id).await.expect("find"),
        Some(session)
    );

    let missing = SessionId::from_ulid(Ulid::generate());
    assert_eq!(sessions.find(missing).await.expect("find missing"), None);
}

/// Listing shows the account's live sessions, newest first.
pub async fn list_for_account_is_newest_first_without_expired_or_others(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let now = now();
    let older = session_of(account.id, now - Duration::minutes(10));
    let newer = session_of(account.id, now - Duration::minutes(5));
    let expired = Session {
        expires_at: now,
        ..session_of(account.id, now - Duration::minutes(1))
    };
    let others = session_of(other.id, now);
    for session in [&older, &newer, &expired, &others] {
        create_session(sessions, session).await;
    }

    let listed = sessions
        .list_for_account(account.id, now)
        .await
        .expect("list");
    assert_eq!(
        listed,
        [newer, older],
        "`expires_at <= now` counts as expired"
    );
}

/// Rotation retires the presented token, makes the replacement current and
/// moves the session's `refreshed_at` and `expires_at`.
pub async fn rotation_swaps_the_refresh_token(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now() - Duration::minutes(30));
    let first = create_session(sessions, &session).await;

    let rotate = rotation(first);
    let rotated = sessions
        .rotate_refresh_token(rotate.clone())
        .await
        .expect("rotate");
    let expected = Session {
        refreshed_at: rotate.now,
        expires_at: rotate.expires_at,
        ..session.clone()
    };
    assert_eq!(rotated, expected);
    assert_eq!(
        sessions.find(session.id).await.expect("find"),
        Some(expected)
    );

    let again = sessions
        .rotate_refresh_token(rotation(rotate.replacement))
        .await
        .expect("the replacement is current");
    assert_eq!(again.id, session.id);
}

/// Presenting a token that was rotated away is a replay: `Reused`, naming its session.
pub async fn a_rotated_away_token_is_reused(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    let first = create_session(sessions, &session).await;
    let rotate = rotation(first);
    sessions
        .rotate_refresh_token(rotate.clone())
        .await
        .expect("rotate");

    let result = sessions.rotate_refresh_token(rotation(first)).await;
    assert_reused(&result, &session);
    let current = sessions
        .find(session.id)
        .await
        .expect("find")
        .expect("session still exists");
    assert_eq!(
        current.expires_at, rotate.expires_at,
        "a replay changes nothing"
    );
}

/// A token no session ever had is `Unknown`.
pub async fn a_token_never_issued_is_unknown(
    _accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let result = sessions.rotate_refresh_token(rotation(fresh_token())).await;
    assert!(
        matches!(result, Err(RotateRefreshTokenError::Unknown)),
        "expected Unknown, got {result:?}"
    );
}

/// The current token of an expired session is `Expired`, and stays current
/// (a second try is `Expired` again, not `Reused`).
pub async fn the_current_token_of_an_expired_session_is_expired(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let now = now();
    let session = Session {
        expires_at: now,
        ..session_of(account.id, now - Duration::hours(1))
    };
    let token = create_session(sessions, &session).await;

    for attempt in ["first", "second"] {
        let rotate = RefreshTokenRotation {
            now,
            ..rotation(token)
        };
        let result = sessions.rotate_refresh_token(rotate).await;
        assert!(
            matches!(result, Err(RotateRefreshTokenError::Expired)),
            "{attempt} attempt: expected Expired, got {result:?}"
        );
    }
    assert_eq!(
        sessions.find(session.id).await.expect("find"),
        Some(session)
    );
}

/// Of twenty concurrent rotations of one token, one succeeds and nineteen are `Reused`.
pub async fn of_twenty_concurrent_rotations_of_one_token_exactly_one_wins(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    let token = create_session(sessions, &session).await;

    let results = join_all((0..20).map(|_| sessions.rotate_refresh_token(rotation(token)))).await;
    let successes = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(successes, 1, "exactly one rotation succeeds: {results:?}");
    for result in results.iter().filter(|result| result.is_err()) {
        assert_reused(result, &session);
    }
}

/// A rotation racing the deletion of its session (sign-out) ends cleanly on
/// both sides, round after round: the rotation succeeds or finds the token
/// `Unknown`, the delete reports the session it deleted, neither fails with a
/// port error (such as a deadlock), and afterwards the session is gone.
pub async fn concurrent_rotation_and_delete_both_end_cleanly(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    for round in 0..20 {
        let session = session_of(account.id, now());
        let token = create_session(sessions, &session).await;

        let rotate = rotation(token);
        let (rotated, deleted) = tokio::join!(
            sessions.rotate_refresh_token(rotate.clone()),
            sessions.delete(session.id),
        );

        match &rotated {
            Ok(rotated) => assert_eq!(rotated.id, session.id, "round {round}"),
            Err(RotateRefreshTokenError::Unknown | RotateRefreshTokenError::Reused { .. }) => {}
            Err(error) => panic!("round {round}: rotation failed: {error:?}"),
        }
        // Nothing else deletes the session, so the delete always finds it.
        assert!(
            matches!(deleted, Ok(true)),
            "round {round}: expected Ok(true) from delete, got {deleted:?}"
        );
        assert_eq!(
            sessions.find(session.id).await.expect("find"),
            None,
            "round {round}: the session is gone"
        );
        for (which, token) in [("presented", token), ("replacement", rotate.replacement)] {
            let result = sessions.rotate_refresh_token(rotation(token)).await;
            assert!(
                matches!(result, Err(RotateRefreshTokenError::Unknown)),
                "round {round}: the {which} token of a deleted session is Unknown, got {result:?}"
            );
        }
    }
}

/// Once its session is deleted, a token is `Unknown`, whether it was current
/// or already rotated away (`Reused` holds only while the session exists).
pub async fn rotating_after_the_session_is_deleted_is_unknown(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    let first = create_session(sessions, &session).await;
    let rotate = rotation(first);
    sessions
        .rotate_refresh_token(rotate.clone())
        .await
        .expect("rotate");

    assert!(sessions.delete(session.id).await.expect("delete"));
    for (which, token) in [("rotated-away", first), ("current", rotate.replacement)] {
        let result = sessions.rotate_refresh_token(rotation(token)).await;
        assert!(
            matches!(result, Err(RotateRefreshTokenError::Unknown)),
            "the {which} token of a deleted session is Unknown, got {result:?}"
        );
    }
}

/// Deleting a session reports whether it existed and takes its tokens with it.
pub async fn delete_removes_the_session_and_its_tokens(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    let token = create_session(sessions, &session).await;
    let survivor = session_of(account.id, now());
    create_session(sessions, &survivor).await;

    assert!(sessions.delete(session.id).await.expect("delete"));
    assert_eq!(sessions.find(session.id).await.expect("find"), None);
    assert!(!sessions.delete(session.id).await.expect("delete again"));
    let result = sessions.rotate_refresh_token(rotation(token)).await;
    assert!(
        matches!(result, Err(RotateRefreshTokenError::Unknown)),
        "a deleted session's token is Unknown, got {result:?}"
    );
    assert_eq!(
        sessions.find(survivor.id).await.expect("find"),
        Some(survivor)
    );
}

/// Signing out everywhere else deletes every other session of the account,
/// and only those, returning their ids.
pub async fn delete_for_account_deletes_all_but_the_kept_session(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let ours: Vec<Session> = (0..3).map(|_| session_of(account.id, now())).collect();
    let others = session_of(other.id, now());
    for session in ours.iter().chain([&others]) {
        create_session(sessions, session).await;
    }

    let kept = &ours[0];
    let deleted = sessions
        .delete_for_account(account.id, Some(kept.id))
        .await
        .expect("delete all but one");
    let deleted: HashSet<SessionId> = deleted.into_iter().collect();
    assert_eq!(deleted, HashSet::from([ours[1].id, ours[2].id]));
    assert_eq!(
        sessions.find(kept.id).await.expect("find"),
        Some(kept.clone())
    );
    assert_eq!(
        sessions.find(others.id).await.expect("find"),
        Some(others.clone())
    );

    let deleted = sessions
        .delete_for_account(account.id, None)
        .await
        .expect("delete all");
    assert_eq!(deleted, [kept.id]);
    assert_eq!(sessions.find(kept.id).await.expect("find"), None);
    assert_eq!(sessions.find(others.id).await.expect("find"), Some(others));
}

/// Deleting an account deletes its sessions and, with them, their tokens.
pub async fn deleting_an_account_deletes_its_sessions(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    let token = create_session(sessions, &session).await;

    assert!(accounts.delete(account.id).await.expect("delete account"));
    assert_eq!(sessions.find(session.id).await.expect("find"), None);
    let listed = sessions
        .list_for_account(account.id, now())
        .await
        .expect("list");
    assert!(listed.is_empty());
    let result = sessions.rotate_refresh_token(rotation(token)).await;
    assert!(
        matches!(result, Err(RotateRefreshTokenError::Unknown)),
        "expected Unknown, got {result:?}"
    );
}

/// Asserts `result` is `Reused` naming `session` and its account.
fn assert_reused(result: &Result<Session, RotateRefreshTokenError>, session: &Session) {
    assert!(
        matches!(
            result,
            Err(RotateRefreshTokenError::Reused { session_id, account_id })
                if *session_id == session.id && *account_id == session.account_id
        ),
        "expected Reused for {:?}, got {result:?}",
        session.id
    );
}
