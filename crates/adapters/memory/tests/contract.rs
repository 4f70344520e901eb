//! Runs the cache and idempotency contract suites against the in-process
//! adapters, one fresh adapter per check.

use waiter_memory::{MemoryCache, MemoryIdempotencyStore};
use waiter_ports::health::Probe;

fn fresh_cache() -> MemoryCache {
    MemoryCache::new(1_000)
}

fn fresh_store() -> MemoryIdempotencyStore {
    MemoryIdempotencyStore::new(1_000)
}

/// One module of tests per suite, named after it, as suites share check names.
macro_rules! contract_tests {
    ($suite:ident, $fresh:ident, [$($check:ident),* $(,)?]) => {
        mod $suite {
            $(
                #[tokio::test]
                async fn $check() {
                    waiter_contracts::$suite::$check(&super::$fresh()).await;
                }
            )*
        }
    };
}

contract_tests!(
    cache,
    fresh_cache,
    [
        round_trips_arbitrary_bytes,
        set_overwrites,
        absent_key_is_none,
        delete_removes_and_tolerates_absent,
        set_if_absent_stores_only_when_absent,
        entries_expire,
        zero_ttl_is_never_stored,
        keys_are_independent,
        concurrent_access_is_consistent,
        concurrent_set_if_absent_stores_once,
    ]
);

contract_tests!(
    idempotency,
    fresh_store,
    [
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
    ]
);

#[tokio::test]
async fn probe_is_always_ready() {
    let cache = fresh_cache();
    assert_eq!(cache.name(), "cache");
    assert!(cache.ping().await.is_ok());
}
