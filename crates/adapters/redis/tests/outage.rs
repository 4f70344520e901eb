//! What Redis being unreachable costs a caller: each call is bounded, and
//! while Redis stays down the circuit breaker fails calls at once; when it
//! comes back, calls succeed again by themselves.
//!
//! The outage is real: the cache talks to Redis through a proxy that the test
//! switches off, so the shared Redis other tests use is never touched.

use std::time::{Duration, Instant};

use ulid::Ulid;
use waiter_contracts::external::{redis_url, unavailable};
use waiter_contracts::fault::{FaultyProxy, Link};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_redis::RedisCache;

/// A cache reaching the test Redis through a proxy, or `None` (after a loud
/// notice) when Redis is unreachable.
async fn cache_behind_proxy() -> Option<(RedisCache, FaultyProxy)> {
    let url = redis_url();
    let upstream = url.trim_start_matches("redis://").trim_end_matches('/');
    let proxy = FaultyProxy::start(upstream).await.expect("start the proxy");
    let prefix = format!("waiter-test:{}:", Ulid::generate());
    match RedisCache::connect(&format!("redis://{}", proxy.address()), prefix).await {
        Ok(cache) => Some((cache, proxy)),
        Err(error) => unavailable("Redis", error),
    }
}

#[tokio::test]
async fn a_silent_redis_costs_a_bounded_wait_then_nothing_until_it_returns() {
    let Some((cache, proxy)) = cache_behind_proxy().await else {
        return;
    };
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();

    proxy.set(Link::Silent);
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = cache.get("k").await;
        assert!(
            matches!(outcome, Err(PortError::Unavailable(_))),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a call waited {:?}",
            started.elapsed()
        );
    }
    // The circuit is open now: calls fail without waiting out the budget.
    let started = Instant::now();
    assert!(matches!(
        cache.get("k").await,
        Err(PortError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "an open circuit still waited {:?}",
        started.elapsed()
    );

    proxy.set(Link::Up);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cache.get("k").await {
            Ok(value) => {
                assert_eq!(value.as_deref(), Some(&b"v"[..]));
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("Redis came back but calls still fail: {err:?}"),
        }
    }
    cache.clear_prefix().await.unwrap();
}

#[tokio::test]
async fn a_refusing_redis_fails_calls_as_unavailable() {
    let Some((cache, proxy)) = cache_behind_proxy().await else {
        return;
    };
    proxy.set(Link::Down);
    let outcome = cache.set("k", b"v", Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, Err(PortError::Unavailable(_))),
        "{outcome:?}"
    );
    proxy.set(Link::Up);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.set("k", b"v", Duration::from_secs(60)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Redis came back but calls still fail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cache.clear_prefix().await.unwrap();
}

/// A follower waiting on a reply learns promptly that Redis is gone: one
/// `Unavailable` item, then the end, never a hang.
#[tokio::test]
async fn a_follower_ends_with_an_error_when_redis_goes_down() {
    use futures::StreamExt;
    use waiter_domain::{ConversationId, MessageId};
    use waiter_ports::conversations::{ReplyEventLog, ReplyKey};
    use waiter_redis::RedisReplyEventLog;

    let Some((cache, proxy)) = cache_behind_proxy().await else {
        return;
    };
    let log = RedisReplyEventLog::sharing(&cache);
    let key = ReplyKey {
        conversation: ConversationId::from_ulid(Ulid::generate()),
        reply: MessageId::generated(Ulid::generate()),
    };
    log.append(&key, 1, b"one").await.unwrap();
    let mut follower = log.follow(&key, 0);
    assert_eq!(follower.next().await.unwrap().unwrap().payload, b"one");
    // Caught up: the follower now waits on the hub.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), follower.next())
            .await
            .is_err()
    );

    proxy.set(Link::Down);
    let started = Instant::now();
    let item = tokio::time::timeout(Duration::from_secs(5), follower.next())
        .await
        .expect("the follower must learn of the outage in time");
    assert!(
        matches!(item, Some(Err(PortError::Unavailable(_)))),
        "{item:?}"
    );
    assert!(follower.next().await.is_none(), "an error ends the stream");
    eprintln!(
        "the outage ended the follower after {:?}",
        started.elapsed()
    );

    proxy.set(Link::Up);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.clear_prefix().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Redis came back but calls still fail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
