//! The contract every [`RateLimiter`] adapter must honour, Redis and in-process alike.
//!
//! Each check takes a fresh limiter that has counted nothing; an adapter's
//! test file runs every one as its own `#[tokio::test]` with
//! [`rate_limiter_contract_tests!`](crate::rate_limiter_contract_tests). The
//! checks use fixed keys: isolation is the caller's job (a new in-process
//! limiter, or a unique Redis key prefix per test). Every quota's window is
//! at most a minute, so whatever a crashed run leaves behind expires.

use std::time::Duration;

use futures::future::join_all;
use waiter_ports::rate_limit::{Decision, Quota, RateLimiter};

/// Generates one `#[tokio::test]` per rate limiter check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn RateLimiter))`
/// that sets up a fresh limiter, runs `check` on it and cleans up.
#[macro_export]
macro_rules! rate_limiter_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(rate_limiter, $fixture:
            a_fresh_key_allows_its_whole_quota_at_once,
            a_refused_request_is_not_counted,
            keys_are_independent,
            reset_restores_the_whole_quota,
            the_quota_refills_over_time,
            concurrent_requests_never_exceed_the_quota,
            reset_after_is_the_time_until_the_quota_is_whole,
            a_large_quota_allows_and_reports_its_remaining,
        );
    };
}

fn quota(limit: u32, window: Duration) -> Quota {
    Quota::new(limit, window).expect("a valid quota")
}

async fn acquire(limiter: &dyn RateLimiter, key: &str, quota: Quota) -> Decision {
    limiter
        .acquire(key, quota)
        .await
        .unwrap_or_else(|error| panic!("acquire {key:?} failed: {error:?}"))
}

/// Spends `quota`'s whole limit on `key`, checking each request is allowed.
async fn spend(limiter: &dyn RateLimiter, key: &str, quota: Quota) {
    for i in 0..quota.limit.get() {
        let decision = acquire(limiter, key, quota).await;
        assert!(decision.allowed, "request {i} of {key:?} was refused");
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A fresh key may spend its whole limit at once, counting down; the next
/// request is refused, saying when to retry.
pub async fn a_fresh_key_allows_its_whole_quota_at_once(limiter: &dyn RateLimiter) {
    let five = quota(5, MINUTE);
    for expected_remaining in (0..5).rev() {
        let decision = acquire(limiter, "key", five).await;
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.remaining, expected_remaining, "{decision:?}");
        assert_eq!(decision.retry_after, Duration::ZERO, "{decision:?}");
    }
    let refused = acquire(limiter, "key", five).await;
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= five.emission_interval(),
        "one more request fits within one emission interval (12 s): {refused:?}"
    );
    assert!(
        refused.reset_after > five.window - five.emission_interval()
            && refused.reset_after <= five.window,
        "the whole quota is back within the window: {refused:?}"
    );
}

/// Refused requests use up nothing: hammering a limited key does not push
/// its next allowed request further away.
pub async fn a_refused_request_is_not_counted(limiter: &dyn RateLimiter) {
    let two = quota(2, MINUTE);
    spend(limiter, "key", two).await;
    let first = acquire(limiter, "key", two).await;
    for _ in 0..10 {
        let again = acquire(limiter, "key", two).await;
        assert!(!again.allowed);
        assert!(
            again.retry_after <= first.retry_after,
            "a refusal was counted: {first:?} then {again:?}"
        );
    }
}

/// Spending one key's quota leaves every other key alone, including keys
/// that share a prefix with it.
pub async fn keys_are_independent(limiter: &dyn RateLimiter) {
    let one = quota(1, MINUTE);
    spend(limiter, "a", one).await;
    assert!(!acquire(limiter, "a", one).await.allowed);
    for other in ["b", "a:b", "ab", "A", "odd key: spaces/ünïcode*?[glob]"] {
        let decision = acquire(limiter, other, one).await;
        assert!(decision.allowed, "{other:?}: {decision:?}");
    }
}

/// After a reset the key has its whole quota again; resetting a key that
/// holds nothing succeeds.
pub async fn reset_restores_the_whole_quota(limiter: &dyn RateLimiter) {
    let three = quota(3, MINUTE);
    spend(limiter, "key", three).await;
    assert!(!acquire(limiter, "key", three).await.allowed);
    limiter.reset("key").await.expect("reset");
    let decision = acquire(limiter, "key", three).await;
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.remaining, 2, "{decision:?}");
    limiter
        .reset("never-used")
        .await
        .expect("reset an unknown key");
}

/// Once `retry_after` has passed, one more request fits.
///
/// The one check that sleeps, because refilling in real time is the behaviour under test.
pub async fn the_quota_refills_over_time(limiter: &dyn RateLimiter) {
    let two = quota(2, Duration::from_millis(400));
    spend(limiter, "key", two).await;
    let refused = acquire(limiter, "key", two).await;
    assert!(!refused.allowed, "{refused:?}");
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    let decision = acquire(limiter, "key", two).await;
    assert!(
        decision.allowed,
        "after {:?}: {decision:?}",
        refused.retry_after
    );
}

/// Of fifty concurrent requests for one key with a limit of ten, exactly ten go on.
pub async fn concurrent_requests_never_exceed_the_quota(limiter: &dyn RateLimiter) {
    let ten = quota(10, MINUTE);
    let decisions = join_all((0..50).map(|_| acquire(limiter, "shared", ten))).await;
    let allowed = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(allowed, 10, "{decisions:?}");
}

/// `reset_after` says when the key has its whole quota again: one request
/// of a limit of four per minute takes a quarter of the minute to refill.
pub async fn reset_after_is_the_time_until_the_quota_is_whole(limiter: &dyn RateLimiter) {
    let four = quota(4, MINUTE);
    let decision = acquire(limiter, "key", four).await;
    assert!(
        decision.reset_after > Duration::from_secs(14)
            && decision.reset_after <= Duration::from_secs(15),
        "{decision:?}"
    );
    let decision = acquire(limiter, "key", four).await;
    assert!(
        decision.reset_after > Duration::from_secs(29)
            && decision.reset_after <= Duration::from_secs(30),
        "{decision:?}"
    );
}

/// A quota far above what any client sends (as a benchmark configures),
/// whose emission interval is a microsecond, neither overflows nor refuses.
pub async fn a_large_quota_allows_and_reports_its_remaining(limiter: &dyn RateLimiter) {
    let huge = quota(1_000_000, Duration::from_secs(1));
    for _ in 0..3 {
        let decision = acquire(limiter, "key", huge).await;
        assert!(decision.allowed, "{decision:?}");
        assert!(
            (999_990..1_000_000).contains(&decision.remaining),
            "{decision:?}"
        );
        assert!(
            decision.reset_after <= Duration::from_millis(1),
            "{decision:?}"
        );
    }
}
