//! The contract every [`IdempotencyStore`] adapter must honour, Redis and in-process alike.
//!
//! Each check is a separate `pub async fn` taking a fresh, empty store, so an
//! adapter's test file runs each as its own `#[tokio::test]` and a failure
//! names the broken behaviour. The checks use fixed keys: isolation between
//! tests is the caller's job (a new in-process store, or a unique Redis key
//! prefix per test). Every claim and response is kept for at most a minute,
//! so whatever a crashed run leaves behind expires on its own.

use std::time::Duration;

use futures::future::join_all;
use waiter_ports::idempotency::{ClaimOutcome, Fingerprint, IdempotencyStore, StoredResponse};

/// Long enough to outlive any check, short enough that leftovers vanish.
const LONG: Duration = Duration::from_secs(60);

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

async fn claim(store: &dyn IdempotencyStore, key: &str, seed: u8, ttl: Duration) -> ClaimOutcome {
    store
        .claim(key, fingerprint(seed), ttl)
        .await
        .unwrap_or_else(|error| panic!("claim {key:?} failed: {error:?}"))
}

async fn complete(
    store: &dyn IdempotencyStore,
    key: &str,
    seed: u8,
    response: StoredResponse,
    ttl: Duration,
) {
    store
        .complete(key, fingerprint(seed), response, ttl)
        .await
        .unwrap_or_else(|error| panic!("complete {key:?} failed: {error:?}"));
}

async fn release(store: &dyn IdempotencyStore, key: &str) {
    store
        .release(key)
        .await
        .unwrap_or_else(|error| panic!("release {key:?} failed: {error:?}"));
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
    assert_eq!(claim(store, "key", 1, LONG).await, ClaimOutcome::Claimed);
}

/// A second claim, for the same request or another, finds the first one's
/// fingerprint in flight.
pub async fn claimed_key_is_in_flight(store: &dyn IdempotencyStore) {
    claim(store, "key", 1, LONG).await;
    assert_eq!(claim(store, "key", 1, LONG).await, in_flight(1));
    assert_eq!(claim(store, "key", 2, LONG).await, in_flight(1));
}

/// A completed key replays the first request's fingerprint and response
/// exactly: status, headers in order, body bytes. Empty headers and body too.
pub async fn completed_key_replays_the_response(store: &dyn IdempotencyStore) {
    claim(store, "key", 1, LONG).await;
    complete(store, "key", 1, created_response(), LONG).await;
    assert_eq!(
        claim(store, "key", 2, LONG).await,
        completed(1, created_response())
    );

    let bare = StoredResponse {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    };
    claim(store, "bare", 3, LONG).await;
    complete(store, "bare", 3, bare.clone(), LONG).await;
    assert_eq!(claim(store, "bare", 3, LONG).await, completed(3, bare));
}

/// A released claim frees its key for the next claim; releasing a free key
/// is not an error.
pub async fn release_frees_the_key(store: &dyn IdempotencyStore) {
    claim(store, "key", 1, LONG).await;
    release(store, "key").await;
    assert_eq!(claim(store, "key", 2, LONG).await, ClaimOutcome::Claimed);
    assert_eq!(claim(store, "key", 1, LONG).await, in_flight(2));

    release(store, "never-claimed").await;
    assert_eq!(
        claim(store, "never-claimed", 1, LONG).await,
        ClaimOutcome::Claimed
    );
}

/// A release arriving after `complete` leaves the response in place, so a
/// late or mistaken release cannot make a completed request run twice.
pub async fn release_keeps_a_completed_response(store: &dyn IdempotencyStore) {
    claim(store, "key", 1, LONG).await;
    complete(store, "key", 1, created_response(), LONG).await;
    release(store, "key").await;
    assert_eq!(
        claim(store, "key", 2, LONG).await,
        completed(1, created_response())
    );
}

/// A claim never completed nor released expires after its `claim_ttl`, and a
/// response after its own `ttl` (which replaces the claim's); either way the
/// key is free again.
///
/// The one check that sleeps, because expiry in real time is the behaviour under test.
pub async fn claims_and_responses_expire(store: &dyn IdempotencyStore) {
    let short = Duration::from_millis(200);
    claim(store, "abandoned", 1, short).await;
    claim(store, "short-response", 1, LONG).await;
    complete(store, "short-response", 1, created_response(), short).await;
    claim(store, "long-response", 1, short).await;
    complete(store, "long-response", 1, created_response(), LONG).await;
    assert_eq!(
        claim(store, "abandoned", 2, LONG).await,
        in_flight(1),
        "a claim must hold before its TTL elapses"
    );

    tokio::time::sleep(short * 2).await;

    assert_eq!(
        claim(store, "abandoned", 2, LONG).await,
        ClaimOutcome::Claimed,
        "an abandoned claim must expire"
    );
    assert_eq!(
        claim(store, "short-response", 2, LONG).await,
        ClaimOutcome::Claimed,
        "a response must expire after its TTL"
    );
    assert_eq!(
        claim(store, "long-response", 2, LONG).await,
        completed(1, created_response()),
        "completing must replace the claim's TTL with the response's"
    );
}

/// Of twenty concurrent claims of one free key exactly one is `Claimed`; the
/// rest see that one's fingerprint in flight.
pub async fn concurrent_claims_admit_exactly_one(store: &dyn IdempotencyStore) {
    const TASKS: u8 = 20;
    let outcomes = join_all((0..TASKS).map(|seed| claim(store, "shared", seed, LONG))).await;

    let winners: Vec<u8> = (0..TASKS)
        .zip(&outcomes)
        .filter_map(|(seed, outcome)| (*outcome == ClaimOutcome::Claimed).then_some(seed))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one claim must win: {outcomes:?}");
    for (seed, outcome) in (0..TASKS).zip(&outcomes) {
        if seed != winners[0] {
            assert_eq!(*outcome, in_flight(winners[0]), "claim {seed}");
        }
    }
}

/// Operations on one key leave every other key alone, including keys that share a prefix.
pub async fn keys_are_independent(store: &dyn IdempotencyStore) {
    claim(store, "a", 1, LONG).await;
    assert_eq!(claim(store, "a:b", 2, LONG).await, ClaimOutcome::Claimed);
    assert_eq!(claim(store, "b", 3, LONG).await, ClaimOutcome::Claimed);

    complete(store, "a:b", 2, created_response(), LONG).await;
    release(store, "a").await;

    assert_eq!(claim(store, "a", 4, LONG).await, ClaimOutcome::Claimed);
    assert_eq!(
        claim(store, "a:b", 4, LONG).await,
        completed(2, created_response())
    );
    assert_eq!(claim(store, "b", 4, LONG).await, in_flight(3));
}
