//! The contract every [`Cache`] adapter must honour, Redis and in-process alike.
//!
//! Each check is a separate `pub async fn` taking a fresh, empty cache; an
//! adapter's test file runs every one of them as its own `#[tokio::test]`
//! with [`cache_contract_tests!`](crate::cache_contract_tests), so a failure
//! names the broken behaviour. The checks use fixed keys: isolation between
//! tests is the caller's job (a new in-process cache, or a unique Redis key
//! prefix per test). Every value is stored with a TTL of at most a minute, so
//! whatever a crashed run leaves behind expires on its own.

use std::time::Duration;

use futures::future::join_all;
use waiter_ports::cache::{Cache, GenerationalRead, generation_key};

/// Generates one `#[tokio::test]` per cache check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn Cache))` that
/// sets up a fresh, empty cache, runs `check` on it and cleans up.
#[macro_export]
macro_rules! cache_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(cache, $fixture:
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
            generational_reads_follow_the_generations,
        );
    };
}

/// Long enough to outlive any check, short enough that leftovers vanish.
const LONG: Duration = Duration::from_secs(60);

async fn get(cache: &dyn Cache, key: &str) -> Option<Vec<u8>> {
    cache
        .get(key)
        .await
        .unwrap_or_else(|error| panic!("get {key:?} failed: {error:?}"))
}

async fn set(cache: &dyn Cache, key: &str, value: &[u8], ttl: Duration) {
    cache
        .set(key, value, ttl)
        .await
        .unwrap_or_else(|error| panic!("set {key:?} failed: {error:?}"));
}

async fn set_if_absent(cache: &dyn Cache, key: &str, value: &[u8], ttl: Duration) -> bool {
    cache
        .set_if_absent(key, value, ttl)
        .await
        .unwrap_or_else(|error| panic!("set_if_absent {key:?} failed: {error:?}"))
}

async fn delete(cache: &dyn Cache, key: &str) {
    cache
        .delete(key)
        .await
        .unwrap_or_else(|error| panic!("delete {key:?} failed: {error:?}"));
}

async fn get_generational(cache: &dyn Cache, names: &[&str]) -> GenerationalRead {
    cache
        .get_generational(names)
        .await
        .unwrap_or_else(|error| panic!("get_generational {names:?} failed: {error:?}"))
}

fn slot(slot: &str, value: Option<&[u8]>) -> GenerationalRead {
    GenerationalRead {
        slot: slot.to_owned(),
        value: value.map(<[u8]>::to_vec),
    }
}

/// A generational read names the slot of the current generations (`0` for
/// a name never written), in order, and reads what that slot holds.
pub async fn generational_reads_follow_the_generations(cache: &dyn Cache) {
    let names = ["group", "item"];
    assert_eq!(
        get_generational(cache, &names).await,
        slot("item:0:0", None)
    );
    set(cache, "item:0:0", b"zero", LONG).await;
    assert_eq!(
        get_generational(cache, &names).await,
        slot("item:0:0", Some(b"zero"))
    );

    set(cache, &generation_key("group"), b"g1", LONG).await;
    assert_eq!(
        get_generational(cache, &names).await,
        slot("item:g1:0", None)
    );
    set(cache, &generation_key("item"), b"i2", LONG).await;
    set(cache, "item:g1:i2", b"two", LONG).await;
    assert_eq!(
        get_generational(cache, &names).await,
        slot("item:g1:i2", Some(b"two"))
    );
    assert_eq!(
        get_generational(cache, &["item"]).await,
        slot("item:i2", None)
    );
}

/// Values come back byte for byte: empty, non-UTF-8, every byte value, large.
pub async fn round_trips_arbitrary_bytes(cache: &dyn Cache) {
    let every_byte: Vec<u8> = (0..=u8::MAX).collect();
    let large: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let cases: [(&str, &[u8]); 6] = [
        ("text", b"hello"),
        ("empty", b""),
        ("not-utf8", &[0xff, 0xfe, 0x00, 0xc3, 0x28]),
        ("every-byte", &every_byte),
        ("large", &large),
        ("odd key: spaces/ünïcode*?[glob]", b"value"),
    ];
    for (key, value) in cases {
        set(cache, key, value, LONG).await;
    }
    for (key, value) in cases {
        assert_eq!(get(cache, key).await.as_deref(), Some(value), "key {key:?}");
    }
}

/// A second `set` replaces the first value.
pub async fn set_overwrites(cache: &dyn Cache) {
    set(cache, "key", b"first", LONG).await;
    set(cache, "key", b"second", LONG).await;
    assert_eq!(get(cache, "key").await.as_deref(), Some(&b"second"[..]));
}

/// A key never set reads as `None`, not as an error or an empty value.
pub async fn absent_key_is_none(cache: &dyn Cache) {
    assert_eq!(get(cache, "never-set").await, None);
}

/// `delete` removes the value, and deleting an absent key succeeds.
pub async fn delete_removes_and_tolerates_absent(cache: &dyn Cache) {
    set(cache, "key", b"value", LONG).await;
    delete(cache, "key").await;
    assert_eq!(get(cache, "key").await, None);

    delete(cache, "key").await;
    delete(cache, "never-set").await;
}

/// `set_if_absent` stores into an absent key, and leaves a present one alone.
pub async fn set_if_absent_stores_only_when_absent(cache: &dyn Cache) {
    assert!(
        set_if_absent(cache, "key", b"first", LONG).await,
        "set_if_absent on an absent key must store"
    );
    assert_eq!(get(cache, "key").await.as_deref(), Some(&b"first"[..]));

    assert!(
        !set_if_absent(cache, "key", b"second", LONG).await,
        "set_if_absent on a present key must not store"
    );
    assert_eq!(get(cache, "key").await.as_deref(), Some(&b"first"[..]));

    delete(cache, "key").await;
    assert!(
        set_if_absent(cache, "key", b"third", LONG).await,
        "a deleted key is absent again"
    );
    assert_eq!(get(cache, "key").await.as_deref(), Some(&b"third"[..]));
}

/// Entries expire after their TTL, and a `set` replaces the TTL along with the value.
/// An expired entry is absent to `set_if_absent`, which honours its own TTL.
///
/// The one check that sleeps, because expiry in real time is the behaviour under test.
pub async fn entries_expire(cache: &dyn Cache) {
    let short = Duration::from_millis(200);
    set(cache, "short", b"value", short).await;
    assert!(set_if_absent(cache, "short-if-absent", b"value", short).await);
    set(cache, "extended", b"value", short).await;
    set(cache, "extended", b"value", LONG).await;
    set(cache, "shortened", b"value", LONG).await;
    set(cache, "shortened", b"value", short).await;
    assert!(
        get(cache, "short").await.is_some(),
        "an entry must be readable before its TTL elapses"
    );

    tokio::time::sleep(short * 2).await;

    assert_eq!(
        get(cache, "short").await,
        None,
        "expired entry still readable"
    );
    assert!(
        get(cache, "extended").await.is_some(),
        "overwriting with a longer TTL must extend the entry's life"
    );
    assert_eq!(
        get(cache, "shortened").await,
        None,
        "overwriting with a shorter TTL must shorten the entry's life"
    );
    assert_eq!(
        get(cache, "short-if-absent").await,
        None,
        "set_if_absent must honour its TTL"
    );

    assert!(
        set_if_absent(cache, "short", b"again", LONG).await,
        "an expired entry must count as absent"
    );
    assert_eq!(get(cache, "short").await.as_deref(), Some(&b"again"[..]));
}

/// A zero TTL means "already expired": nothing is stored, and an earlier value is gone.
pub async fn zero_ttl_is_never_stored(cache: &dyn Cache) {
    set(cache, "fresh", b"value", Duration::ZERO).await;
    assert_eq!(
        get(cache, "fresh").await,
        None,
        "a zero TTL must not mean forever"
    );

    set(cache, "existing", b"old", LONG).await;
    set(cache, "existing", b"new", Duration::ZERO).await;
    assert_eq!(
        get(cache, "existing").await,
        None,
        "a zero-TTL set must replace the earlier value with nothing"
    );

    assert!(
        !set_if_absent(cache, "fresh", b"value", Duration::ZERO).await,
        "a zero-TTL set_if_absent must report that it stored nothing"
    );
    assert_eq!(get(cache, "fresh").await, None);
}

/// Operations on one key leave every other key alone, including keys that share a prefix.
pub async fn keys_are_independent(cache: &dyn Cache) {
    set(cache, "a", b"1", LONG).await;
    set(cache, "a:b", b"2", LONG).await;
    set(cache, "b", b"3", LONG).await;

    delete(cache, "a").await;
    set(cache, "b", b"4", LONG).await;

    assert_eq!(get(cache, "a").await, None);
    assert_eq!(get(cache, "a:b").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(get(cache, "b").await.as_deref(), Some(&b"4"[..]));
}

/// Fifty concurrent writers to distinct keys all land; fifty to one key leave one whole value.
pub async fn concurrent_access_is_consistent(cache: &dyn Cache) {
    const TASKS: usize = 50;
    let values: Vec<Vec<u8>> = (0..TASKS)
        .map(|i| format!("value-{i}").into_bytes())
        .collect();

    join_all(values.iter().enumerate().map(|(i, value)| async move {
        let key = format!("distinct-{i}");
        set(cache, &key, value, LONG).await;
        assert_eq!(get(cache, &key).await.as_ref(), Some(value), "key {key:?}");
    }))
    .await;
    let read =
        join_all((0..TASKS).map(|i| async move { get(cache, &format!("distinct-{i}")).await }))
            .await;
    for (i, (read, value)) in read.iter().zip(&values).enumerate() {
        assert_eq!(read.as_ref(), Some(value), "key distinct-{i}");
    }

    join_all(values.iter().map(|value| set(cache, "shared", value, LONG))).await;
    let last = get(cache, "shared").await;
    assert!(
        last.as_ref().is_some_and(|last| values.contains(last)),
        "concurrent writes to one key must leave one of the written values, got {last:?}"
    );
}

/// Of fifty concurrent `set_if_absent` calls on one absent key exactly one
/// stores, and the value left is that caller's.
pub async fn concurrent_set_if_absent_stores_once(cache: &dyn Cache) {
    const TASKS: usize = 50;
    let values: Vec<Vec<u8>> = (0..TASKS)
        .map(|i| format!("value-{i}").into_bytes())
        .collect();

    let stored = join_all(
        values
            .iter()
            .map(|value| set_if_absent(cache, "shared", value, LONG)),
    )
    .await;

    let winners: Vec<&Vec<u8>> = values
        .iter()
        .zip(&stored)
        .filter_map(|(value, &stored)| stored.then_some(value))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one caller must store");
    assert_eq!(get(cache, "shared").await.as_ref(), Some(winners[0]));
}
