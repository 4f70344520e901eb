//! In-process adapters for Waiter's cache ports, for a server running as a single instance.
//!
//! Nothing here survives a restart or is shared with another process: a
//! deployment with several instances must use the Redis adapter instead, or
//! each instance would see its own revocations and cached reads.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::health::Probe;

/// A bounded in-process [`Cache`], whose entries each expire after their own TTL.
///
/// Clones share the same entries, so one instance can be handed to every
/// service that needs it. When full, the least useful entries are evicted
/// early, which a cache's callers must tolerate anyway.
#[derive(Clone)]
pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
}

/// A value together with the TTL it was stored for, which [`PerEntryTtl`] reads.
#[derive(Clone)]
struct Entry {
    bytes: Vec<u8>,
    ttl: Duration,
}

/// Tells moka to expire each entry after the TTL of its latest `set`.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    /// A replaced value brings its own TTL; moka's default would keep the old one.
    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryCache {
    /// A cache holding at most `max_entries` entries, so memory stays bounded
    /// whatever the traffic.
    pub fn new(max_entries: u64) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(PerEntryTtl)
            .build();
        Self { entries }
    }
}

/// Shows the size, never the entries: keys can be session ids.
impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entry_count", &self.entries.entry_count())
            .field("max_capacity", &self.entries.policy().max_capacity())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.entries.get(key).await.map(|entry| entry.bytes))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), PortError> {
        if ttl.is_zero() {
            // Already expired: storing it would only evict something live.
            self.entries.invalidate(key).await;
        } else {
            let entry = Entry {
                bytes: value.to_vec(),
                ttl,
            };
            self.entries.insert(key.to_owned(), entry).await;
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.entries.invalidate(key).await;
        Ok(())
    }
}

#[async_trait]
impl Probe for MemoryCache {
    fn name(&self) -> &'static str {
        "cache"
    }

    /// Always ready: the cache lives in this process.
    async fn ping(&self) -> Result<(), PortError> {
        Ok(())
    }
}
