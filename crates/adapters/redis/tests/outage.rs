//! What Redis being unreachable costs a caller: each call is bounded, and
//! while Redis stays down the circuit breaker fails calls at once; when it
//! comes back, calls succeed again by themselves, and stop listeners listen
//! again.
//!
//! The outage is real: the cache talks to Redis through a proxy that the test
//! switches off, so the shared Redis other tests use is never touched.

use std::time::{Duration, Instant};

use support::{PATIENCE, new_reply_key, stop_reaching};
use ulid::Ulid;
use waiter_contracts::external::{redis_url, unavailable};
use waiter_contracts::fault::{FaultyProxy, Link};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::conversations::ReplyLeases;
use waiter_redis::{RedisCache, RedisReplyLeases};

mod support;

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

/// Leases reaching the test Redis through a proxy, the same leases reached
/// directly (to request stops however the proxy is set), the direct cache
/// to clean up with, and the proxy; `None` (after a loud notice) when Redis
/// is unreachable.
async fn leases_behind_proxy()
-> Option<(RedisReplyLeases, RedisReplyLeases, RedisCache, FaultyProxy)> {
    let url = redis_url();
    let upstream = url.trim_start_matches("redis://").trim_end_matches('/');
    let proxy = FaultyProxy::start(upstream).await.expect("start the proxy");
    let prefix = format!("waiter-test:{}:", Ulid::generate());
    let proxied =
        RedisCache::connect(&format!("redis://{}", proxy.address()), prefix.clone()).await;
    let direct = RedisCache::connect(&url, prefix).await;
    match (proxied, direct) {
        (Ok(proxied), Ok(direct)) => Some((
            RedisReplyLeases::sharing(&proxied),
            RedisReplyLeases::sharing(&direct),
            direct,
            proxy,
        )),
        (Err(error), _) | (_, Err(error)) => unavailable("Redis", error),
    }
}

/// A stop listener outlives an outage of either kind: its stream goes on,
/// the requests made while it could not listen are lost (never delivered
/// late), and it hears requests again once Redis is back.
#[tokio::test]
async fn a_stop_listener_listens_again_once_redis_is_back() {
    for outage in [Link::Down, Link::Silent] {
        let Some((proxied, direct, cache, proxy)) = leases_behind_proxy().await else {
            return;
        };
        let mut listener = proxied.stop_requests();
        stop_reaching(&direct, &mut listener).await;

        proxy.set(outage);
        direct.request_stop(&new_reply_key()).await.unwrap();
        // Longer than a failed subscription takes, so the listener has
        // failed and is waiting to try again.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        direct.request_stop(&new_reply_key()).await.unwrap();

        proxy.set(Link::Up);
        let started = Instant::now();
        stop_reaching(&direct, &mut listener).await;
        eprintln!(
            "{outage:?}: the listener heard requests again {:?} after Redis came back",
            started.elapsed()
        );
        cache.clear_prefix().await.unwrap();
    }
}

/// A listener whose connection stops answering without closing (a
/// partition) notices through its keepalive and connects again, so it
/// hears requests once the network heals.
#[tokio::test]
async fn a_stop_listener_replaces_a_connection_that_went_silent() {
    let Some((proxied, direct, cache, proxy)) = leases_behind_proxy().await else {
        return;
    };
    let mut listener = proxied.stop_requests();
    stop_reaching(&direct, &mut listener).await;

    let accepted = proxy.accepted();
    proxy.set(Link::Frozen);
    let started = Instant::now();
    while proxy.accepted() == accepted {
        assert!(
            started.elapsed() < PATIENCE,
            "the listener kept a silent connection for {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the listener gave up a silent connection after {:?}",
        started.elapsed()
    );

    proxy.set(Link::Up);
    stop_reaching(&direct, &mut listener).await;
    cache.clear_prefix().await.unwrap();
}
