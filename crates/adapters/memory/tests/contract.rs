//! Runs the cache contract suite against the in-process adapter, one fresh cache per check.

use waiter_contracts::cache;
use waiter_memory::MemoryCache;
use waiter_ports::health::Probe;

fn fresh_cache() -> MemoryCache {
    MemoryCache::new(1_000)
}

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            cache::$check(&fresh_cache()).await;
        }
    )*};
}

contract_tests!(
    round_trips_arbitrary_bytes,
    set_overwrites,
    absent_key_is_none,
    delete_removes_and_tolerates_absent,
    entries_expire,
    zero_ttl_is_never_stored,
    keys_are_independent,
    concurrent_access_is_consistent,
);

#[tokio::test]
async fn probe_is_always_ready() {
    let cache = fresh_cache();
    assert_eq!(cache.name(), "cache");
    assert!(cache.ping().await.is_ok());
}
