//! Runs the cache, rate limiter, reply event log and reply lease contract
//! suites against a real Redis, plus what only Redis promises: instances
//! sharing a prefix share entries, limits, logs, leases and stop requests;
//! other prefixes stay apart.
//!
//! Each test works under its own key prefix and deletes its keys afterwards,
//! even when it fails. Without a reachable Redis the tests skip loudly, or
//! fail when `WAITER_REQUIRE_SERVICES=1`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use support::{PATIENCE, new_reply_key, stop_reaching};
use ulid::Ulid;
use waiter_contracts::external::{redis_url, unavailable};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::conversations::{ReplyEventLog, ReplyLeases};
use waiter_ports::health::Probe;
use waiter_ports::rate_limit::{Quota, RateLimiter};
use waiter_redis::{RedisCache, RedisRateLimiter, RedisReplyEventLog, RedisReplyLeases};

mod support;

const TTL: Duration = Duration::from_secs(60);

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("waiter-test:{}:", Ulid::generate())
}

/// A cache on the test Redis under `prefix`, or `None` (after a loud notice) when Redis is unreachable.
async fn connect(prefix: &str) -> Option<RedisCache> {
    match RedisCache::connect(&redis_url(), prefix).await {
        Ok(cache) => Some(cache),
        Err(error) => {
            let (PortError::Unavailable(cause) | PortError::Unexpected(cause)) = &error;
            unavailable("Redis", format!("{error}: {cause}"))
        }
    }
}

/// Runs `test`, then deletes every key under each cache's prefix, pass or fail.
async fn cleaning_up(caches: &[&RedisCache], test: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(test).catch_unwind().await;
    for cache in caches {
        cache
            .clear_prefix()
            .await
            .expect("delete the keys this test created");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `check` on a cache under a fresh prefix, whose keys are cleared afterwards.
async fn with_cache(check: impl AsyncFnOnce(&dyn Cache)) {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    cleaning_up(&[&cache], check(&cache)).await;
}

mod cache {
    waiter_contracts::cache_contract_tests!(super::with_cache);
}

/// Runs `check` on a rate limiter under a fresh prefix, whose keys are cleared afterwards.
async fn with_rate_limiter(check: impl AsyncFnOnce(&dyn RateLimiter)) {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    let limiter = RedisRateLimiter::sharing(&cache);
    cleaning_up(&[&cache], check(&limiter)).await;
}

mod rate_limiter {
    waiter_contracts::rate_limiter_contract_tests!(super::with_rate_limiter);
}

/// Runs `check` on a reply event log under a fresh prefix, whose keys are cleared afterwards.
async fn with_reply_event_log(check: impl AsyncFnOnce(&dyn ReplyEventLog)) {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    let log = RedisReplyEventLog::sharing(&cache);
    cleaning_up(&[&cache], check(&log)).await;
}

mod reply_event_log {
    waiter_contracts::reply_event_log_contract_tests!(super::with_reply_event_log);
}

/// Runs `check` on leases under a fresh prefix, whose keys are cleared afterwards.
async fn with_reply_leases(check: impl AsyncFnOnce(&dyn ReplyLeases)) {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    let leases = RedisReplyLeases::sharing(&cache);
    cleaning_up(&[&cache], check(&leases)).await;
}

mod reply_leases {
    waiter_contracts::reply_leases_contract_tests!(super::with_reply_leases);
}

/// The next stop request `listener` yields, within [`PATIENCE`].
async fn next_stop(
    listener: &mut waiter_ports::conversations::StopRequests,
) -> waiter_ports::conversations::ReplyKey {
    use futures::StreamExt;
    tokio::time::timeout(PATIENCE, listener.next())
        .await
        .expect("a stop request in time")
        .expect("a listener never ends")
}

/// Two instances sharing a prefix share leases: what one hands over the
/// other claims, and a stop requested on one reaches the other's listener.
#[tokio::test]
async fn instances_with_the_same_prefix_share_leases_and_stop_requests() {
    use waiter_ports::conversations::InstanceId;

    let prefix = unique_prefix();
    let (Some(first), Some(second)) = (connect(&prefix).await, connect(&prefix).await) else {
        return;
    };
    cleaning_up(&[&first], async {
        let (on_first, on_second) = (
            RedisReplyLeases::sharing(&first),
            RedisReplyLeases::sharing(&second),
        );
        assert!(on_first.is_shared());
        let (a, b) = (InstanceId::new("a"), InstanceId::new("b"));
        let key = new_reply_key();
        assert!(on_first.acquire(&key, &a, TTL).await.unwrap());
        assert!(!on_second.acquire(&key, &b, TTL).await.unwrap());
        on_first.hand_over(&key, &a).await.unwrap();
        let claimed = on_second.claim_expired(&b, TTL, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].key, key);
        assert_eq!(
            on_first
                .renew(&a, std::slice::from_ref(&key), TTL)
                .await
                .unwrap(),
            vec![key.clone()]
        );

        let mut listener = on_second.stop_requests();
        stop_reaching(&on_first, &mut listener).await;
        on_first.request_stop(&key).await.unwrap();
        assert_eq!(next_stop(&mut listener).await, key);
    })
    .await;
}

/// Each stop listener holds one subscription, on a connection of its own,
/// for as long as it lives: dropping it unsubscribes (by closing that
/// connection) at once.
#[tokio::test]
async fn a_stop_listener_subscribes_while_it_lives() {
    let prefix = unique_prefix();
    let Some(cache) = connect(&prefix).await else {
        return;
    };
    cleaning_up(&[&cache], async {
        let leases = RedisReplyLeases::sharing(&cache);
        let client = redis::Client::open(redis_url()).expect("a valid URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let channel = format!("{prefix}reply-stops");
        let mut subscribers = async || {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut connection)
                .await
                .expect("PUBSUB NUMSUB");
            counts[0].1
        };
        assert_eq!(subscribers().await, 0);

        let mut first = leases.stop_requests();
        stop_reaching(&leases, &mut first).await;
        let mut second = leases.stop_requests();
        stop_reaching(&leases, &mut second).await;
        assert_eq!(subscribers().await, 2);

        drop(first);
        drop(second);
        let deadline = std::time::Instant::now() + PATIENCE;
        while subscribers().await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "dropped listeners are still subscribed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A lease member that names no reply (something else wrote it under the
/// prefix) fails the claim that meets it as unexpected, and is removed so
/// that it blocks no later claim; a good lease claimed with it comes back
/// once the claim's TTL runs out.
#[tokio::test]
async fn a_malformed_lease_is_reported_once_and_removed() {
    use waiter_ports::conversations::InstanceId;

    let prefix = unique_prefix();
    let Some(cache) = connect(&prefix).await else {
        return;
    };
    cleaning_up(&[&cache], async {
        let leases = RedisReplyLeases::sharing(&cache);
        let holder = InstanceId::new("holder");
        let key = new_reply_key();
        assert!(leases.acquire(&key, &holder, TTL).await.unwrap());
        leases.hand_over(&key, &holder).await.unwrap();
        let client = redis::Client::open(redis_url()).expect("a valid URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let () = redis::pipe()
            .cmd("ZADD")
            .arg(format!("{prefix}reply-leases:expiries"))
            .arg(0)
            .arg("not a reply")
            .cmd("HSET")
            .arg(format!("{prefix}reply-leases:holders"))
            .arg("not a reply")
            .arg("someone")
            .query_async(&mut connection)
            .await
            .expect("write a malformed lease");

        let short = Duration::from_millis(200);
        let outcome = leases.claim_expired(&holder, short, 10).await;
        assert!(
            matches!(outcome, Err(PortError::Unexpected(_))),
            "{outcome:?}"
        );
        assert_eq!(
            leases.claim_expired(&holder, TTL, 10).await.unwrap(),
            vec![]
        );
        tokio::time::sleep(short + Duration::from_millis(100)).await;
        let claimed = leases.claim_expired(&holder, TTL, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].key, key);
    })
    .await;
}

/// Leases and stop requests under one prefix are invisible under another.
#[tokio::test]
async fn leases_and_stop_requests_under_different_prefixes_are_apart() {
    use futures::StreamExt;
    use waiter_ports::conversations::InstanceId;

    let (Some(first), Some(second)) = (
        connect(&unique_prefix()).await,
        connect(&unique_prefix()).await,
    ) else {
        return;
    };
    cleaning_up(&[&first, &second], async {
        let (on_first, on_second) = (
            RedisReplyLeases::sharing(&first),
            RedisReplyLeases::sharing(&second),
        );
        let holder = InstanceId::new("holder");
        let key = new_reply_key();
        assert!(on_first.acquire(&key, &holder, TTL).await.unwrap());
        on_first.hand_over(&key, &holder).await.unwrap();
        assert_eq!(
            on_second.claim_expired(&holder, TTL, 10).await.unwrap(),
            vec![]
        );
        assert!(
            on_second
                .acquire(&key, &InstanceId::new("other"), TTL)
                .await
                .unwrap()
        );

        let mut apart = on_second.stop_requests();
        let mut listener = on_first.stop_requests();
        stop_reaching(&on_first, &mut listener).await;
        stop_reaching(&on_second, &mut apart).await;
        on_first.request_stop(&key).await.unwrap();
        assert_eq!(next_stop(&mut listener).await, key);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), apart.next())
                .await
                .is_err(),
            "a request under another prefix must not arrive"
        );
    })
    .await;
}

#[tokio::test]
async fn instances_with_the_same_prefix_share_each_limit() {
    let prefix = unique_prefix();
    let (Some(first), Some(second)) = (connect(&prefix).await, connect(&prefix).await) else {
        return;
    };
    let quota = Quota::new(2, Duration::from_secs(60)).unwrap();
    cleaning_up(&[&first], async {
        let (first, second) = (
            RedisRateLimiter::sharing(&first),
            RedisRateLimiter::sharing(&second),
        );
        assert!(first.acquire("key", quota).await.unwrap().allowed);
        assert!(second.acquire("key", quota).await.unwrap().allowed);
        assert!(!first.acquire("key", quota).await.unwrap().allowed);
        second.reset("key").await.unwrap();
        assert!(first.acquire("key", quota).await.unwrap().allowed);
    })
    .await;
}

/// A reply written through one instance is followed live through another.
#[tokio::test]
async fn instances_with_the_same_prefix_share_reply_event_logs() {
    use futures::StreamExt;
    use waiter_domain::{ConversationId, MessageId};
    use waiter_ports::conversations::ReplyKey;

    let prefix = unique_prefix();
    let (Some(first), Some(second)) = (connect(&prefix).await, connect(&prefix).await) else {
        return;
    };
    cleaning_up(&[&first], async {
        let (writer, reader) = (
            RedisReplyEventLog::sharing(&first),
            RedisReplyEventLog::sharing(&second),
        );
        let key = ReplyKey {
            conversation: ConversationId::from_ulid(Ulid::generate()),
            reply: MessageId::generated(Ulid::generate()),
        };
        writer.append(&key, 1, b"one").await.unwrap();
        let mut follower = reader.follow(&key, 0);
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), follower.next())
                .await
                .expect("an event or the end in time")
                .map(|event| event.expect("an event").payload)
        };
        assert_eq!(next().await.as_deref(), Some(&b"one"[..]));
        writer.append(&key, 2, b"two").await.unwrap();
        assert_eq!(next().await.as_deref(), Some(&b"two"[..]));
        writer.close(&key, TTL).await.unwrap();
        assert_eq!(next().await, None);
    })
    .await;
}

/// A follower of a reply its own instance was writing, rung without Redis,
/// keeps up when another instance takes the reply over: its hub waits on
/// the stream in Redis again.
#[tokio::test]
async fn a_follower_keeps_up_when_another_instance_takes_its_reply_over() {
    use futures::StreamExt;
    use waiter_ports::conversations::LoggedEvents;

    let prefix = unique_prefix();
    let (Some(first), Some(second)) = (connect(&prefix).await, connect(&prefix).await) else {
        return;
    };
    cleaning_up(&[&first], async {
        let (here, there) = (
            RedisReplyEventLog::sharing(&first),
            RedisReplyEventLog::sharing(&second),
        );
        let key = new_reply_key();
        here.append(&key, 1, b"one").await.unwrap();
        let mut follower = here.follow(&key, 0);
        let next = async |follower: &mut LoggedEvents| {
            tokio::time::timeout(Duration::from_secs(5), follower.next())
                .await
                .expect("an event or the end in time")
                .map(|event| event.expect("an event").payload)
        };
        assert_eq!(next(&mut follower).await.as_deref(), Some(&b"one"[..]));

        // Waiting when the event is appended here: rung by the append.
        let (two, ()) = tokio::join!(next(&mut follower), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            here.append(&key, 2, b"two").await.unwrap();
        });
        assert_eq!(two.as_deref(), Some(&b"two"[..]));

        // Then the other instance writes the rest.
        let (three, ()) = tokio::join!(next(&mut follower), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            there.append(&key, 3, b"three").await.unwrap();
        });
        assert_eq!(three.as_deref(), Some(&b"three"[..]));
        there.close(&key, TTL).await.unwrap();
        assert_eq!(next(&mut follower).await, None);
    })
    .await;
}

#[tokio::test]
async fn instances_with_the_same_prefix_share_entries() {
    let prefix = unique_prefix();
    let Some(first) = connect(&prefix).await else {
        return;
    };
    let Some(second) = connect(&prefix).await else {
        return;
    };
    cleaning_up(&[&first], async {
        first.set("key", b"from first", TTL).await.expect("set");
        assert_eq!(
            second.get("key").await.expect("get").as_deref(),
            Some(&b"from first"[..])
        );

        second.set("key", b"from second", TTL).await.expect("set");
        assert_eq!(
            first.get("key").await.expect("get").as_deref(),
            Some(&b"from second"[..])
        );

        second.delete("key").await.expect("delete");
        assert_eq!(first.get("key").await.expect("get"), None);
    })
    .await;
}

#[tokio::test]
async fn instances_with_different_prefixes_are_isolated() {
    let Some(first) = connect(&unique_prefix()).await else {
        return;
    };
    let Some(second) = connect(&unique_prefix()).await else {
        return;
    };
    cleaning_up(&[&first, &second], async {
        first.set("key", b"first", TTL).await.expect("set");
        assert_eq!(second.get("key").await.expect("get"), None);

        second.set("key", b"second", TTL).await.expect("set");
        second.delete("key").await.expect("delete");
        second.clear_prefix().await.expect("clear");
        assert_eq!(
            first.get("key").await.expect("get").as_deref(),
            Some(&b"first"[..])
        );
    })
    .await;
}

#[tokio::test]
async fn clear_prefix_deletes_every_key_under_the_prefix() {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    cleaning_up(&[&cache], async {
        // More keys than one SCAN batch, so the cursor loop is exercised.
        let keys: Vec<String> = (0..1_200).map(|i| format!("key-{i}")).collect();
        futures::future::join_all(keys.iter().map(|key| cache.set(key, b"value", TTL)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .expect("set");

        cache.clear_prefix().await.expect("clear");

        for key in &keys {
            assert_eq!(cache.get(key).await.expect("get"), None, "key {key:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn clear_prefix_refuses_an_empty_prefix() {
    let Some(cache) = connect("").await else {
        return;
    };
    assert!(matches!(
        cache.clear_prefix().await,
        Err(PortError::Unexpected(_))
    ));
}

#[tokio::test]
async fn probe_pings_redis() {
    let Some(cache) = connect(&unique_prefix()).await else {
        return;
    };
    assert_eq!(cache.name(), "cache");
    cache.ping().await.expect("ping");
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // Port 1 is reserved and nothing listens there, so the connection is refused.
    let result = RedisCache::connect("redis://127.0.0.1:1", unique_prefix()).await;
    assert!(
        matches!(result, Err(PortError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn silent_server_is_unavailable_not_a_hang() {
    // Accepts connections (the kernel completes the handshake) but never replies.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let url = format!("redis://{}", listener.local_addr().expect("local address"));
    let result = RedisCache::connect(&url, unique_prefix()).await;
    assert!(
        matches!(result, Err(PortError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn malformed_url_is_unexpected() {
    let result = RedisCache::connect("not a redis url", unique_prefix()).await;
    assert!(
        matches!(result, Err(PortError::Unexpected(_))),
        "{result:?}"
    );
}
