//! Runs the cache, rate limiter, reply event log and reply lease contract
//! suites against the in-process adapters, one fresh adapter per check.

use waiter_memory::MemoryCache;
use waiter_ports::cache::Cache;
use waiter_ports::health::Probe;

/// Room for every entry a check writes, so none is evicted under it.
const CAPACITY: u64 = 1_000;

/// Runs `check` on a fresh in-process cache.
async fn with_cache(check: impl AsyncFnOnce(&dyn Cache)) {
    check(&MemoryCache::new(CAPACITY)).await;
}

mod cache {
    waiter_contracts::cache_contract_tests!(super::with_cache);
}

#[tokio::test]
async fn probe_is_always_ready() {
    let cache = MemoryCache::new(CAPACITY);
    assert_eq!(cache.name(), "cache");
    assert!(cache.ping().await.is_ok());
}

/// Runs `check` on a fresh in-process rate limiter.
async fn with_rate_limiter(check: impl AsyncFnOnce(&dyn waiter_ports::rate_limit::RateLimiter)) {
    check(&waiter_memory::MemoryRateLimiter::new()).await;
}

mod rate_limiter {
    waiter_contracts::rate_limiter_contract_tests!(super::with_rate_limiter);
}

/// Runs `check` on a fresh in-process reply event log.
async fn with_reply_event_log(
    check: impl AsyncFnOnce(&dyn waiter_ports::conversations::ReplyEventLog),
) {
    check(&waiter_memory::MemoryReplyEventLog::new()).await;
}

mod reply_event_log {
    waiter_contracts::reply_event_log_contract_tests!(super::with_reply_event_log);
}

/// Runs `check` on a fresh in-process lease store.
async fn with_reply_leases(check: impl AsyncFnOnce(&dyn waiter_ports::conversations::ReplyLeases)) {
    check(&waiter_memory::MemoryReplyLeases::new()).await;
}

mod reply_leases {
    waiter_contracts::reply_leases_contract_tests!(super::with_reply_leases);
}

#[test]
fn in_process_leases_are_not_shared() {
    use waiter_ports::conversations::ReplyLeases;
    assert!(!waiter_memory::MemoryReplyLeases::new().is_shared());
}
