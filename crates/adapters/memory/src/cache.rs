//! The in-process [`Cache`].

use std::fmt;
use std::future::ready;
use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::{CompResult, Op};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::health::Probe;

use crate::expiring::{self, Expiring, ExpiringMap};

/// A bounded in-process [`Cache`], whose entries each expire after their own TTL.
///
/// Clones share the same entries, so one instance can be handed to every
/// service that needs it. When full, the least useful entries are evicted
/// early, which a cache's callers must tolerate anyway.
#[derive(Clone)]
pub struct MemoryCache {
    entries: ExpiringMap<Vec<u8>>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` entries, so memory stays bounded
    /// whatever the traffic.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: expiring::bounded(max_entries),
        }
    }
}

/// Shows the size, never the entries: keys can be session ids.
impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        expiring::fmt_sizes("MemoryCache", &self.entries, f)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.entries.get(key).await.map(|entry| entry.value))
    }

    /// Writes under the same per-key lock as [`Cache::set_if_absent`], so a
    /// `set_if_absent` that found the key empty can never land on top of a
    /// `set` that ran meanwhile.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), PortError> {
        let op = if ttl.is_zero() {
            // Already expired: storing it would only evict something live.
            Op::Remove
        } else {
            Op::Put(Expiring {
                value: value.to_vec(),
                ttl,
            })
        };
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|_| ready(op))
            .await;
        Ok(())
    }

    /// An expired entry counts as absent; a zero TTL stores nothing, as with `set`.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, PortError> {
        if ttl.is_zero() {
            return Ok(false);
        }
        let result = self
            .entries
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                ready(match existing {
                    Some(_) => Op::Nop,
                    None => Op::Put(Expiring {
                        value: value.to_vec(),
                        ttl,
                    }),
                })
            })
            .await;
        Ok(matches!(result, CompResult::Inserted(_)))
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
