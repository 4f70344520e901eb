//! Cache-aside reads with generation keys, shared by every service that caches.
//!
//! Each cached thing (`book:book_…`, `books:recent`) has a *generation*: a
//! random token under `<name>:generation`, set by writes (a name never
//! written has the generation `0`, so reads alone never create keys). Values
//! live under `<name>:<generation>`. A write bumps the generation after it
//! commits; a read fills the value under the generation it saw *before*
//! reading the database, and only if that slot is empty. An absent value
//! (`None`, JSON `null`) is never cached, so requests for ids that do not
//! exist cannot fill the cache either. So a slow read that fetched the
//! old row can only fill a generation nobody will look up again, and a read
//! that starts after a write returns necessarily sees the new generation:
//! no read after a successful write returns the old value, on any instance
//! sharing the cache.
//!
//! A value may also belong to a group (every book is in `books`), whose
//! generation is part of its slot: invalidating the group invalidates all its
//! members at once.
//!
//! The cache is an optimisation: when it fails, reads fall back to the
//! loader and the failure is logged. Two failures can still serve a stale
//! value, for at most the value TTL: an invalidation that does not reach the
//! cache, and a generation token evicted early by a full in-process cache
//! (Redis must run with `maxmemory-policy noeviction`, see the README).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ulid::Ulid;
use waiter_ports::PortError;
use waiter_ports::cache::{Cache, GenerationalRead, generation_key};

/// How long a generation token lives: far longer than any value.
const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Reads through and invalidates a [`Cache`].
#[derive(Clone)]
pub(crate) struct CacheAside {
    cache: Arc<dyn Cache>,
    /// How long a cached value lives, bounding staleness if an invalidation is lost.
    ttl: Duration,
}

impl CacheAside {
    pub(crate) fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        Self { cache, ttl }
    }

    /// The value cached for `name`, or what `load` returns (cached for next time).
    pub(crate) async fn read<T, F>(&self, name: &str, load: F) -> Result<T, PortError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, PortError>>,
    {
        self.read_in(&[name], load).await
    }

    /// Like [`Self::read`], for a `name` that is also invalidated whenever
    /// `group` is: one `invalidate(group)` makes every member stale.
    pub(crate) async fn read_within<T, F>(
        &self,
        group: &str,
        name: &str,
        load: F,
    ) -> Result<T, PortError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, PortError>>,
    {
        self.read_in(&[group, name], load).await
    }

    /// Reads through the slot named by the current generations of all
    /// `names`, which the cache looks up in one step (one round trip to Redis).
    async fn read_in<T, F>(&self, names: &[&str], load: F) -> Result<T, PortError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, PortError>>,
    {
        let slot = match self.cache.get_generational(names).await {
            Ok(GenerationalRead {
                slot,
                value: Some(bytes),
            }) => match serde_json::from_slice(&bytes) {
                Ok(value) => {
                    count("hit");
                    return Ok(value);
                }
                Err(err) => {
                    tracing::warn!(%err, slot, "undecodable cache entry; reloading");
                    count("error");
                    slot
                }
            },
            Ok(GenerationalRead { slot, value: None }) => {
                count("miss");
                slot
            }
            Err(err) => {
                let name = names.last().copied().unwrap_or_default();
                tracing::warn!(%err, name, "cache unavailable; reading from the store");
                count("error");
                return load.await;
            }
        };
        let value = load.await?;
        match serde_json::to_vec(&value) {
            Ok(bytes) if bytes == b"null" => {}
            Ok(bytes) => {
                if let Err(err) = self.cache.set_if_absent(&slot, &bytes, self.ttl).await {
                    tracing::warn!(%err, slot, "cache fill failed");
                }
            }
            Err(err) => tracing::error!(%err, slot, "cannot encode a value for the cache"),
        }
        Ok(value)
    }

    /// Makes every cached value of `name` unreachable. Call after the write commits.
    pub(crate) async fn invalidate(&self, name: &str) {
        let token = Ulid::generate().to_string();
        if let Err(err) = self
            .cache
            .set(&generation_key(name), token.as_bytes(), GENERATION_TTL)
            .await
        {
            // The value may be served stale until its TTL runs out.
            tracing::error!(%err, name, "cache invalidation failed");
        }
    }
}

/// Counts a cache-aside read by outcome: `hit`, `miss`, or `error` (the
/// cache unreachable or its entry unreadable; the store answered).
fn count(outcome: &'static str) {
    metrics::counter!("waiter_cache_reads_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
pub(crate) mod tests;
