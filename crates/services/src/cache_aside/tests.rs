//! Cache-aside against a cache that works, one that fails, and one that
//! holds what it should not: every fallback ends in the loader's value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use waiter_ports::cache::{GenerationalRead, MockCache};

use super::*;

const TTL: Duration = Duration::from_secs(300);

/// A cache in a `HashMap`, ignoring expiry: enough to test cache-aside logic.
#[derive(Default)]
pub(crate) struct FakeCache(Mutex<HashMap<String, Vec<u8>>>);

impl FakeCache {
    /// Overwrites every cached value (not the generations) with `bytes`.
    fn corrupt_values(&self, bytes: &[u8]) {
        for (key, value) in self.0.lock().unwrap().iter_mut() {
            if !key.ends_with(":generation") {
                *value = bytes.to_vec();
            }
        }
    }
}

#[async_trait]
impl Cache for FakeCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), PortError> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        _ttl: Duration,
    ) -> Result<bool, PortError> {
        let mut entries = self.0.lock().unwrap();
        if entries.contains_key(key) {
            return Ok(false);
        }
        entries.insert(key.to_owned(), value.to_vec());
        Ok(true)
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

fn down() -> PortError {
    PortError::Unavailable(anyhow::anyhow!("connection refused"))
}

/// Counts how often the store is read, standing in for it.
#[derive(Default)]
struct Loads(AtomicUsize);

impl Loads {
    async fn load(&self, value: &str) -> Result<String, PortError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(value.to_owned())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Reads `"thing"` through `aside`, loading `"value"` on a miss, and checks it got that.
async fn read_thing(aside: &CacheAside, loads: &Loads) {
    let value: String = aside.read("thing", loads.load("value")).await.unwrap();
    assert_eq!(value, "value");
}

#[tokio::test]
async fn a_value_is_loaded_once_then_served_from_the_cache() {
    let aside = CacheAside::new(Arc::new(FakeCache::default()), TTL);
    let loads = Loads::default();
    for _ in 0..3 {
        read_thing(&aside, &loads).await;
    }
    assert_eq!(loads.count(), 1);
}

#[tokio::test]
async fn a_slow_read_cannot_put_a_stale_value_back() {
    let aside = CacheAside::new(Arc::new(FakeCache::default()), TTL);
    // The first read loads "old", but a write commits and invalidates before the load returns.
    let slow = aside
        .read("thing", async {
            aside.invalidate("thing").await;
            Ok("old".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(slow, "old");
    let next: String = aside
        .read("thing", async { Ok("new".to_owned()) })
        .await
        .unwrap();
    assert_eq!(
        next, "new",
        "the stale fill went to a generation nobody reads"
    );
}

#[tokio::test]
async fn invalidating_a_group_makes_each_member_stale() {
    let aside = CacheAside::new(Arc::new(FakeCache::default()), TTL);
    let loads = Loads::default();
    let read_members = async || {
        for (name, value) in [("book:1", "one"), ("book:2", "two")] {
            let read = aside.read_within("books", name, loads.load(value)).await;
            assert_eq!(read.unwrap(), value);
        }
    };
    read_members().await;
    read_members().await;
    assert_eq!(loads.count(), 2, "both cached");
    aside.invalidate("books").await;
    read_members().await;
    assert_eq!(loads.count(), 4, "both read again");
}

#[tokio::test]
async fn absent_values_are_never_cached() {
    let aside = CacheAside::new(Arc::new(FakeCache::default()), TTL);
    let missing: Option<String> = aside.read("thing", async { Ok(None) }).await.unwrap();
    assert_eq!(missing, None);
    let found = aside
        .read("thing", async { Ok(Some("created since".to_owned())) })
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("created since"));
}

#[tokio::test]
async fn a_cache_that_is_down_serves_every_read_from_the_loader() {
    let mut cache = MockCache::new();
    cache.expect_get_generational().returning(|_| Err(down()));
    cache.expect_set_if_absent().never();
    cache.expect_set().times(1).returning(|_, _, _| Err(down()));
    let aside = CacheAside::new(Arc::new(cache), TTL);
    let loads = Loads::default();
    for _ in 0..2 {
        read_thing(&aside, &loads).await;
        assert_eq!(
            aside
                .read_within("group", "thing", loads.load("value"))
                .await
                .unwrap(),
            "value"
        );
    }
    assert_eq!(loads.count(), 4);
    // Logged, not returned: the write it follows has committed.
    aside.invalidate("thing").await;
}

#[tokio::test]
async fn a_cache_that_is_down_passes_on_the_loaders_failure() {
    let mut cache = MockCache::new();
    cache.expect_get_generational().returning(|_| Err(down()));
    let aside = CacheAside::new(Arc::new(cache), TTL);
    let read: Result<String, PortError> = aside
        .read("thing", async {
            Err(PortError::unexpected(anyhow::anyhow!("the store failed")))
        })
        .await;
    assert!(matches!(read, Err(PortError::Unexpected(_))), "{read:?}");
}

#[tokio::test]
async fn a_failing_fill_still_returns_the_loaded_value() {
    let mut cache = MockCache::new();
    cache.expect_get_generational().returning(|_| {
        Ok(GenerationalRead {
            slot: "thing:0".to_owned(),
            value: None,
        })
    });
    cache
        .expect_set_if_absent()
        .withf(|slot, _, _| slot == "thing:0")
        .times(2)
        .returning(|_, _, _| Err(down()));
    let aside = CacheAside::new(Arc::new(cache), TTL);
    let loads = Loads::default();
    for _ in 0..2 {
        read_thing(&aside, &loads).await;
    }
    assert_eq!(loads.count(), 2);
}

#[tokio::test]
async fn a_corrupt_entry_is_read_past_to_the_loader() {
    let cache = Arc::new(FakeCache::default());
    let aside = CacheAside::new(cache.clone(), TTL);
    let loads = Loads::default();
    read_thing(&aside, &loads).await;

    for corrupt in [&b"\xff\xfe not JSON"[..], br#"{"not":"a string"}"#] {
        cache.corrupt_values(corrupt);
        read_thing(&aside, &loads).await;
    }
    assert_eq!(
        loads.count(),
        3,
        "each corrupt entry sent the read to the loader"
    );

    aside.invalidate("thing").await;
    read_thing(&aside, &loads).await;
    read_thing(&aside, &loads).await;
    assert_eq!(loads.count(), 4, "a write's new generation is cached again");
}
