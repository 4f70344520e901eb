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
use waiter_ports::identity::{
    AccountStore, NewSessionRecord, REMEMBERED_USED_TOKENS, RefreshTokenHash, RefreshTokenRotation,
    Revocation, RotateRefreshTokenError, SessionEnding, SessionStore,
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
        $crate::__contract_tests!(sessions, $fixture:
            create_then_find_round_trips,
            create_deletes_the_accounts_expired_sessions_only,
            concurrent_creates_and_deletes_of_one_account_all_end_cleanly,
            list_for_account_is_newest_first_without_expired_or_others,
            rotation_swaps_the_refresh_token,
            a_rotated_away_token_is_reused,
            a_token_never_issued_is_unknown,
            the_current_token_of_an_expired_session_is_expired,
            of_twenty_concurrent_rotations_of_one_token_exactly_one_wins,
            concurrent_rotation_and_delete_both_end_cleanly,
            rotating_after_the_session_is_deleted_is_unknown,
            only_the_sixteen_most_recently_rotated_away_tokens_are_reused,
            with_a_clock_that_stands_still_the_last_token_is_still_reused,
            delete_removes_the_session_and_its_tokens,
            delete_for_account_deletes_all_but_the_kept_session,
            deleting_an_account_deletes_its_sessions,
            deleting_a_session_records_its_revocation_until_it_lapses,
            delete_for_account_records_every_revocation_it_makes,
            revocations_since_reads_what_was_recorded_from_then_on,
            lapsed_revocations_are_pruned_by_later_deletions,
        );
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

/// Ending a session now, its tokens refused for the next quarter of an hour.
pub fn ending_at(at: Timestamp) -> SessionEnding {
    SessionEnding {
        at,
        revoked_until: at + Duration::minutes(15),
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

/// [`REMEMBERED_USED_TOKENS`] as a count of tokens.
const REMEMBERED: usize = REMEMBERED_USED_TOKENS as usize;

/// Creating a session deletes the account's sessions with `expires_at` at or
/// before the new one's `created_at`, and their tokens; it leaves the
/// account's live sessions and every other account's sessions alone.
pub async fn create_deletes_the_accounts_expired_sessions_only(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let other = insert_account(accounts).await;
    let now = now();
    let long_expired = Session {
        expires_at: now - Duration::hours(1),
        ..session_of(account.id, now - Duration::hours(2))
    };
    let just_expired = Session {
        expires_at: now,
        ..session_of(account.id, now - Duration::hours(1))
    };
    let live = Session {
        expires_at: now + Duration::microseconds(1),
        ..session_of(account.id, now - Duration::hours(1))
    };
    let others_expired = Session {
        expires_at: now - Duration::hours(1),
        ..session_of(other.id, now - Duration::hours(2))
    };
    let mut tokens = Vec::new();
    for session in [&long_expired, &just_expired, &live, &others_expired] {
        tokens.push(create_session(sessions, session).await);
    }

    let new = session_of(account.id, now);
    create_session(sessions, &new).await;

    for (which, session, token) in [
        ("long-expired", &long_expired, tokens[0]),
        ("just-expired", &just_expired, tokens[1]),
    ] {
        assert_eq!(
            sessions.find(session.id).await.expect("find"),
            None,
            "the {which} session is deleted"
        );
        let result = sessions.rotate_refresh_token(rotation(token)).await;
        assert!(
            matches!(result, Err(RotateRefreshTokenError::Unknown)),
            "the {which} session's token went with it, got {result:?}"
        );
    }
    for (which, session) in [
        ("live", &live),
        ("other account's expired", &others_expired),
        ("new", &new),
    ] {
        assert_eq!(
            sessions.find(session.id).await.expect("find"),
            Some(session.clone()),
            "the {which} session stays"
        );
    }
}

/// Sign-ins of one account racing each other and a sign-out everywhere, all
/// clearing the same expired sessions, end without a port error (such as a
/// deadlock), and the expired sessions are gone.
pub async fn concurrent_creates_and_deletes_of_one_account_all_end_cleanly(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    for round in 0..5 {
        let now = now();
        let expired: Vec<Session> = (0..10)
            .map(|_| Session {
                expires_at: now - Duration::minutes(1),
                ..session_of(account.id, now - Duration::hours(1))
            })
            .collect();
        for session in &expired {
            create_session(sessions, session).await;
        }

        let creates = join_all((0..10).map(|_| {
            sessions.create(NewSessionRecord {
                session: session_of(account.id, now),
                refresh_token_hash: fresh_token(),
            })
        }));
        let (created, deleted) = tokio::join!(
            creates,
            sessions.delete_for_account(account.id, None, ending_at(now))
        );
        for result in created {
            result.unwrap_or_else(|error| panic!("round {round}: create failed: {error:?}"));
        }
        deleted.unwrap_or_else(|error| panic!("round {round}: delete failed: {error:?}"));
        for session in &expired {
            assert_eq!(
                sessions.find(session.id).await.expect("find"),
                None,
                "round {round}: every expired session is gone"
            );
        }
    }
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
            sessions.delete(session.id, ending_at(now())),
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

    assert!(
        sessions
            .delete(session.id, ending_at(now()))
            .await
            .expect("delete")
    );
    for (which, token) in [("rotated-away", first), ("current", rotate.replacement)] {
        let result = sessions.rotate_refresh_token(rotation(token)).await;
        assert!(
            matches!(result, Err(RotateRefreshTokenError::Unknown)),
            "the {which} token of a deleted session is Unknown, got {result:?}"
        );
    }
}

/// Rotates `first` `times` times in a row, the rotation numbered `i` (from
/// zero) at `at(i)`, returning every token the session has had, oldest first.
async fn rotate_repeatedly(
    sessions: &dyn SessionStore,
    first: RefreshTokenHash,
    times: usize,
    at: impl Fn(usize) -> Timestamp,
) -> Vec<RefreshTokenHash> {
    let mut tokens = vec![first];
    for i in 0..times {
        let now = at(i);
        let rotate = RefreshTokenRotation {
            now,
            expires_at: now + Duration::hours(1),
            ..rotation(tokens[i])
        };
        sessions
            .rotate_refresh_token(rotate.clone())
            .await
            .unwrap_or_else(|error| panic!("rotation {i}: {error:?}"));
        tokens.push(rotate.replacement);
    }
    tokens
}

/// After twenty rotations (a second apart) the sixteen most recently
/// rotated-away tokens are `Reused`, the four before them are forgotten and
/// `Unknown`, and the current token still rotates.
pub async fn only_the_sixteen_most_recently_rotated_away_tokens_are_reused(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let start = now();
    let session = session_of(account.id, start);
    let first = create_session(sessions, &session).await;
    let tokens = rotate_repeatedly(sessions, first, 20, |i| {
        start + Duration::seconds(i as i64 + 1)
    })
    .await;
    let (current, rotated_away) = tokens.split_last().expect("twenty-one tokens");
    let forgotten = rotated_away.len() - REMEMBERED;

    for (i, token) in rotated_away.iter().enumerate() {
        let result = sessions.rotate_refresh_token(rotation(*token)).await;
        if i < forgotten {
            assert!(
                matches!(result, Err(RotateRefreshTokenError::Unknown)),
                "token {i} of 20 rotated away is forgotten: expected Unknown, got {result:?}"
            );
        } else {
            assert_reused(&result, &session);
        }
    }
    let rotate = RefreshTokenRotation {
        now: start + Duration::seconds(21),
        expires_at: start + Duration::hours(2),
        ..rotation(*current)
    };
    let rotated = sessions
        .rotate_refresh_token(rotate)
        .await
        .expect("replays left the current token current");
    assert_eq!(rotated.id, session.id);
}

/// Rotations at the same `now` (a clock that has not moved) still remember
/// the token each one retires, and no more than sixteen in all.
pub async fn with_a_clock_that_stands_still_the_last_token_is_still_reused(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let start = now();
    let session = session_of(account.id, start);
    let first = create_session(sessions, &session).await;
    let tokens = rotate_repeatedly(sessions, first, 20, |_| start).await;
    let (_current, rotated_away) = tokens.split_last().expect("twenty-one tokens");

    let mut reused = 0;
    for (i, token) in rotated_away.iter().enumerate().rev() {
        let result = sessions.rotate_refresh_token(rotation(*token)).await;
        if i == rotated_away.len() - 1 {
            assert_reused(&result, &session);
        }
        match result {
            Err(RotateRefreshTokenError::Reused { .. }) => reused += 1,
            Err(RotateRefreshTokenError::Unknown) => {}
            other => panic!("token {i} of 20 rotated away: got {other:?}"),
        }
    }
    assert_eq!(
        reused, REMEMBERED,
        "exactly the remembered number of tokens are Reused"
    );
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

    assert!(
        sessions
            .delete(session.id, ending_at(now()))
            .await
            .expect("delete")
    );
    assert_eq!(sessions.find(session.id).await.expect("find"), None);
    assert!(
        !sessions
            .delete(session.id, ending_at(now()))
            .await
            .expect("delete again")
    );
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
        .delete_for_account(account.id, Some(kept.id), ending_at(now()))
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
        .delete_for_account(account.id, None, ending_at(now()))
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

/// A deleted session's revocation is in force until `revoked_until`, and
/// only a session that existed gets one.
pub async fn deleting_a_session_records_its_revocation_until_it_lapses(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let session = session_of(account.id, now());
    create_session(sessions, &session).await;
    let live = session_of(account.id, now());
    create_session(sessions, &live).await;
    let ending = ending_at(now());

    assert!(
        !sessions
            .is_revoked(session.id, ending.at)
            .await
            .expect("before")
    );
    assert!(sessions.delete(session.id, ending).await.expect("delete"));
    assert!(
        sessions
            .is_revoked(session.id, ending.at)
            .await
            .expect("after")
    );
    assert!(!sessions.is_revoked(live.id, ending.at).await.expect("live"));
    let just_before = ending.revoked_until - Duration::microseconds(1);
    assert!(
        sessions
            .is_revoked(session.id, just_before)
            .await
            .expect("in force")
    );
    assert!(
        !sessions
            .is_revoked(session.id, ending.revoked_until)
            .await
            .expect("lapsed"),
        "a revocation lapses at revoked_until"
    );

    let unknown = SessionId::from_ulid(Ulid::generate());
    assert!(
        !sessions
            .delete(unknown, ending)
            .await
            .expect("delete unknown")
    );
    assert!(
        !sessions
            .is_revoked(unknown, ending.at)
            .await
            .expect("unknown")
    );
}

/// Signing out everywhere records the revocation of exactly the sessions it deleted.
pub async fn delete_for_account_records_every_revocation_it_makes(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let ours: Vec<Session> = (0..3).map(|_| session_of(account.id, now())).collect();
    for session in &ours {
        create_session(sessions, session).await;
    }
    let ending = ending_at(now());
    sessions
        .delete_for_account(account.id, Some(ours[0].id), ending)
        .await
        .expect("delete");
    let revoked = sessions
        .revocations_since(ending.at, ending.at)
        .await
        .expect("revocations");
    let expected: HashSet<Revocation> = ours[1..]
        .iter()
        .map(|session| Revocation {
            session_id: session.id,
            revoked_at: ending.at,
            revoked_until: ending.revoked_until,
        })
        .collect();
    assert_eq!(revoked.into_iter().collect::<HashSet<_>>(), expected);
    assert!(
        !sessions
            .is_revoked(ours[0].id, ending.at)
            .await
            .expect("kept")
    );
}

/// What is new since a moment: revocations recorded at or after it, still in force.
pub async fn revocations_since_reads_what_was_recorded_from_then_on(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let (early, late) = (session_of(account.id, now()), session_of(account.id, now()));
    create_session(sessions, &early).await;
    create_session(sessions, &late).await;
    let first = ending_at(now());
    let second = ending_at(first.at + Duration::seconds(10));
    sessions
        .delete(early.id, first)
        .await
        .expect("delete early");
    sessions.delete(late.id, second).await.expect("delete late");

    let ids = |revocations: Vec<Revocation>| -> HashSet<SessionId> {
        revocations.into_iter().map(|r| r.session_id).collect()
    };
    let everything = sessions
        .revocations_since(Timestamp::UNIX_EPOCH, second.at)
        .await
        .expect("all");
    assert_eq!(ids(everything), HashSet::from([early.id, late.id]));
    let recent = sessions
        .revocations_since(second.at, second.at)
        .await
        .expect("recent");
    assert_eq!(ids(recent), HashSet::from([late.id]));
    let in_force = sessions
        .revocations_since(Timestamp::UNIX_EPOCH, first.revoked_until)
        .await
        .expect("in force");
    assert_eq!(
        ids(in_force),
        HashSet::from([late.id]),
        "the first has lapsed"
    );
}

/// Revocations that lapsed are gone after the next deletion, so the list
/// stays as small as one token lifetime of sign-outs.
pub async fn lapsed_revocations_are_pruned_by_later_deletions(
    accounts: &dyn AccountStore,
    sessions: &dyn SessionStore,
) {
    let account = insert_account(accounts).await;
    let (old, new) = (session_of(account.id, now()), session_of(account.id, now()));
    create_session(sessions, &old).await;
    create_session(sessions, &new).await;
    let first = ending_at(now());
    sessions.delete(old.id, first).await.expect("delete old");
    let later = ending_at(first.revoked_until + Duration::seconds(1));
    sessions.delete(new.id, later).await.expect("delete new");
    let kept = sessions
        .revocations_since(Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH)
        .await
        .expect("every row");
    let ids: Vec<SessionId> = kept.into_iter().map(|r| r.session_id).collect();
    assert_eq!(ids, [new.id], "the lapsed revocation was pruned");
}
