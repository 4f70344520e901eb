//! The contract every [`IdempotencyStore`] adapter must honour, Redis and in-process alike.
//!
//! Each check is a separate `pub async fn` taking a fresh, empty store; an
//! adapter's test file runs every one of them as its own `#[tokio::test]`
//! with [`idempotency_store_contract_tests!`](crate::idempotency_store_contract_tests),
//! so a failure names the broken behaviour. The checks use fixed keys:
//! isolation between tests is the caller's job (a new in-process store, or
//! a unique Redis key prefix per test). Every claim and response is kept for
//! at most a minute, so whatever a crashed run leaves behind expires on its
//! own. Claim tokens are fixed too: the store must honour whatever token the
//! caller picks.

use std::time::Duration;

use futures::future::join_all;
use waiter_ports::idempotency::{
    ClaimOutcome, ClaimToken, Fingerprint, IdempotencyStore, StoredResponse,
};

/// Generates one `#[tokio::test]` per idempotency store check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn IdempotencyStore))`
/// that sets up a fresh, empty store, runs `check` on it and cleans up.
#[macro_export]
macro_rules! idempotency_store_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(idempotency, $fixture:
            claiming_a_free_key_claims_it,
            claimed_key_is_in_flight,
            completed_key_replays_the_response,
            release_frees_the_key,
            release_keeps_a_completed_response,
            only_the_holder_completes_or_releases,
            stale_claims_complete_and_release_nothing,
            claims_and_responses_expire,
            concurrent_claims_admit_exactly_one,
            keys_are_independent,
        );
    };
}

/// Long enough to outlive any check, short enough that leftovers vanish.
const LONG: Duration = Duration::from_secs(60);

/// How long a claim lasts in the checks that wait for one to expire: long
/// enough for a few database transactions on a loaded machine to fit in it.
const SHORT: Duration = Duration::from_secs(1);

/// Claim tokens of distinct requests; the later ones claim after the earlier.
const FIRST: ClaimToken = ClaimToken(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
const SECOND: ClaimToken = ClaimToken(u128::MAX);
const THIRD: ClaimToken = ClaimToken(3);

/// A fingerprint told apart from others by `seed`.
fn fingerprint(seed: u8) -> Fingerprint {
    Fingerprint([seed; 32])
}

/// A response exercising what must survive storage: several headers in a
/// significant order (one repeated), and a body that is not UTF-8.
fn created_response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("Location".to_owned(), "/books/01JD3Y".to_owned()),
            ("ETag".to_owned(), "\"v1\"".to_owned()),
            ("Link".to_owned(), "</books>; rel=\"collection\"".to_owned()),
            ("Link".to_owned(), "</authors/7>; rel=\"author\"".to_owned()),
        ],
        body: vec![b'{', 0xff, 0xfe, 0x00, 0xc3, 0x28, b'}'],
    }
}

async fn claim(
    store: &dyn IdempotencyStore,
    key: &str,
    token: ClaimToken,
    seed: u8,
    ttl: Duration,
) -> ClaimOutcome {
    store
        .claim(key, token, fingerprint(seed), ttl)
        .await
        .unwrap_or_else(|error| panic!("claim {key:?} failed: {error:?}"))
}

/// Completes `key` under `token`, returning whether the store acted.
async fn complete(
    store: &dyn IdempotencyStore,
    key: &str,
    token: ClaimToken,
    seed: u8,
    response: StoredResponse,
    ttl: Duration,
) -> bool {
    store
        .complete(key, token, fingerprint(seed), response, ttl)
        .await
        .unwrap_or_else(|error| panic!("complete {key:?} failed: {error:?}"))
}

/// Releases `key` under `token`, returning whether the store acted.
async fn release(store: &dyn IdempotencyStore, key: &str, token: ClaimToken) -> bool {
    store
        .release(key, token)
        .await
        .unwrap_or_else(|error| panic!("release {key:?} failed: {error:?}"))
}

fn in_flight(seed: u8) -> ClaimOutcome {
    ClaimOutcome::InFlight {
        fingerprint: fingerprint(seed),
    }
}

fn completed(seed: u8, response: StoredResponse) -> ClaimOutcome {
    ClaimOutcome::Completed {
        fingerprint: fingerprint(seed),
        response,
    }
}

/// A key never claimed is free, and claiming it succeeds.
pub async fn claiming_a_free_key_claims_it(store: &dyn IdempotencyStore) {
    assert_eq!(
        claim(store, "key", FIRST, 1, LONG).await,
        ClaimOutcome::Claimed
    );
}

/// A second claim, for the same request or another, finds the first one's
/// fingerprint in flight.
pub async fn claimed_key_is_in_flight(store: &dyn IdempotencyStore) {
    claim(store, "key", FIRST, 1, LONG).await;
    assert_eq!(claim(store, "key", SECOND, 1, LONG).await, in_flight(1));
    assert_eq!(claim(store, "key", THIRD, 2, LONG).await, in_flight(1));
}

/// A completed key replays the first request's fingerprint and response
/// exactly: status, headers in order, body bytes. Empty headers and body too.
pub async fn completed_key_replays_the_response(store: &dyn IdempotencyStore) {
    claim(store, "key", FIRST, 1, LONG).await;
    assert!(complete(store, "key", FIRST, 1, created_response(), LONG).await);
    assert_eq!(
        claim(store, "key", SECOND, 2, LONG).await,
        completed(1, created_response())
    );

    let bare = StoredResponse {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    };
    claim(store, "bare", FIRST, 3, LONG).await;
    assert!(complete(store, "bare", FIRST, 3, bare.clone(), LONG).await);
    assert_eq!(
        claim(store, "bare", SECOND, 3, LONG).await,
        completed(3, bare)
    );
}

/// A released claim frees its key for the next claim; releasing a free key
/// is not an error, and does nothing.
pub async fn release_frees_the_key(store: &dyn IdempotencyStore) {
    claim(store, "key", FIRST, 1, LONG).await;
    assert!(release(store, "key", FIRST).await, "the holder releases");
    assert_eq!(
        claim(store, "key", SECOND, 2, LONG).await,
        ClaimOutcome::Claimed
    );
    assert_eq!(claim(store, "key", THIRD, 1, LONG).await, in_flight(2));

    assert!(!release(store, "never-claimed", FIRST).await);
    assert_eq!(
        claim(store, "never-claimed", FIRST, 1, LONG).await,
        ClaimOutcome::Claimed
    );
}

/// A release arriving after `complete`, even by the claim's holder, leaves
/// the response in place, so a late or mistaken release cannot make a
/// completed request run twice. A claim completes only once.
pub async fn release_keeps_a_completed_response(store: &dyn IdempotencyStore) {
    claim(store, "key", FIRST, 1, LONG).await;
    assert!(complete(store, "key", FIRST, 1, created_response(), LONG).await);
    assert!(!release(store, "key", FIRST).await);
    let other = StoredResponse {
        status: 200,
        headers: Vec::new(),
        body: b"second".to_vec(),
    };
    assert!(!complete(store, "key", FIRST, 1, other, LONG).await);
    assert_eq!(
        claim(store, "key", SECOND, 2, LONG).await,
        completed(1, created_response())
    );
}

/// Only the holder's token completes or releases a claim: any other token
/// leaves the claim in flight and returns `false`.
pub async fn only_the_holder_completes_or_releases(store: &dyn IdempotencyStore) {
    claim(store, "key", FIRST, 1, LONG).await;
    assert!(!complete(store, "key", SECOND, 2, created_response(), LONG).await);
    assert!(!release(store, "key", SECOND).await);
    assert_eq!(claim(store, "key", THIRD, 3, LONG).await, in_flight(1));

    assert!(!complete(store, "never-claimed", FIRST, 1, created_response(), LONG).await);
    assert_eq!(
        claim(store, "never-claimed", FIRST, 1, LONG).await,
        ClaimOutcome::Claimed,
        "completing a free key must not store a response"
    );
}

/// A request that outlived its claim, which a later request has taken over
/// since, can neither complete nor release: both return `false`, and the
/// later request's claim stands until it completes or releases it itself.
///
/// Sleeps, because expiry in real time is the behaviour under test.
pub async fn stale_claims_complete_and_release_nothing(store: &dyn IdempotencyStore) {
    claim(store, "completed", FIRST, 1, SHORT).await;
    claim(store, "released", FIRST, 1, SHORT).await;
    tokio::time::sleep(SHORT * 2).await;
    for key in ["completed", "released"] {
        assert_eq!(
            claim(store, key, SECOND, 1, LONG).await,
            ClaimOutcome::Claimed,
            "{key}: an expired claim frees its key"
        );
    }

    assert!(
        !complete(store, "completed", FIRST, 1, created_response(), LONG).await,
        "a stale claim must not complete"
    );
    assert!(
        !release(store, "released", FIRST).await,
        "a stale claim must not release"
    );
    for key in ["completed", "released"] {
        assert_eq!(
            claim(store, key, THIRD, 1, LONG).await,
            in_flight(1),
            "{key}: the later claim must stand"
        );
    }

    let later = StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: b"later".to_vec(),
    };
    assert!(complete(store, "completed", SECOND, 1, later.clone(), LONG).await);
    assert!(release(store, "released", SECOND).await);
    assert_eq!(
        claim(store, "completed", THIRD, 1, LONG).await,
        completed(1, later)
    );
    assert_eq!(
        claim(store, "released", THIRD, 1, LONG).await,
        ClaimOutcome::Claimed
    );
}

/// A claim never completed nor released expires after its `claim_ttl`, and a
/// response after its own `ttl` (which replaces the claim's); either way the
/// key is free again.
///
/// Sleeps, because expiry in real time is the behaviour under test.
pub async fn claims_and_responses_expire(store: &dyn IdempotencyStore) {
    claim(store, "abandoned", FIRST, 1, SHORT).await;
    assert_eq!(
        claim(store, "abandoned", SECOND, 2, LONG).await,
        in_flight(1),
        "a claim must hold before its TTL elapses"
    );
    claim(store, "short-response", FIRST, 1, LONG).await;
    assert!(complete(store, "short-response", FIRST, 1, created_response(), SHORT).await);
    claim(store, "long-response", FIRST, 1, SHORT).await;
    assert!(complete(store, "long-response", FIRST, 1, created_response(), LONG).await);

    tokio::time::sleep(SHORT * 2).await;

    assert_eq!(
        claim(store, "abandoned", SECOND, 2, LONG).await,
        ClaimOutcome::Claimed,
        "an abandoned claim must expire"
    );
    assert_eq!(
        claim(store, "short-response", SECOND, 2, LONG).await,
        ClaimOutcome::Claimed,
        "a response must expire after its TTL"
    );
    assert_eq!(
        claim(store, "long-response", SECOND, 2, LONG).await,
        completed(1, created_response()),
        "completing must replace the claim's TTL with the response's"
    );
}

/// Of twenty concurrent claims of one free key exactly one is `Claimed`; the
/// rest see that one's fingerprint in flight, and only the winner's token
/// completes it.
pub async fn concurrent_claims_admit_exactly_one(store: &dyn IdempotencyStore) {
    const TASKS: u8 = 20;
    let outcomes = join_all(
        (0..TASKS).map(|seed| claim(store, "shared", ClaimToken(seed.into()), seed, LONG)),
    )
    .await;

    let winners: Vec<u8> = (0..TASKS)
        .zip(&outcomes)
        .filter_map(|(seed, outcome)| (*outcome == ClaimOutcome::Claimed).then_some(seed))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one claim must win: {outcomes:?}");
    let winner = winners[0];
    for (seed, outcome) in (0..TASKS).zip(&outcomes) {
        if seed != winner {
            assert_eq!(*outcome, in_flight(winner), "claim {seed}");
        }
    }

    let loser = (winner + 1) % TASKS;
    let (winning, losing) = (ClaimToken(winner.into()), ClaimToken(loser.into()));
    let response = created_response();
    assert!(!complete(store, "shared", losing, loser, response.clone(), LONG).await);
    assert!(complete(store, "shared", winning, winner, response.clone(), LONG).await);
    assert_eq!(
        claim(store, "shared", THIRD, loser, LONG).await,
        completed(winner, response)
    );
}

/// Operations on one key leave every other key alone, including keys that
/// share a prefix and keys claimed with the same token.
pub async fn keys_are_independent(store: &dyn IdempotencyStore) {
    claim(store, "a", FIRST, 1, LONG).await;
    assert_eq!(
        claim(store, "a:b", FIRST, 2, LONG).await,
        ClaimOutcome::Claimed
    );
    assert_eq!(
        claim(store, "b", FIRST, 3, LONG).await,
        ClaimOutcome::Claimed
    );

    assert!(complete(store, "a:b", FIRST, 2, created_response(), LONG).await);
    assert!(release(store, "a", FIRST).await);

    assert_eq!(
        claim(store, "a", SECOND, 4, LONG).await,
        ClaimOutcome::Claimed
    );
    assert_eq!(
        claim(store, "a:b", SECOND, 4, LONG).await,
        completed(2, created_response())
    );
    assert_eq!(claim(store, "b", SECOND, 4, LONG).await, in_flight(3));
}
