//! The Redis [`Cache`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::health::Probe;

use crate::connection::{Namespace, millis};

/// A [`Cache`] in Redis, shared by every instance configured with the same key prefix.
///
/// Clones share one multiplexed connection, which reconnects by itself after
/// Redis comes back.
#[derive(Clone)]
pub struct RedisCache {
    namespace: Namespace,
}

impl RedisCache {
    /// Connects to the Redis server at `url` (`redis://host:port/db`), storing
    /// every key under `key_prefix` (for example `waiter:`).
    ///
    /// Fails with [`PortError::Unavailable`] when the server cannot be reached
    /// within a quarter of a second, so start-up reports a missing Redis promptly.
    pub async fn connect(url: &str, key_prefix: impl Into<String>) -> Result<Self, PortError> {
        Ok(Self {
            namespace: Namespace::connect(url, key_prefix.into()).await?,
        })
    }

    /// The connection and prefix, for the other adapters that share them.
    pub(crate) fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Deletes every key under this cache's prefix, so tests can remove what
    /// they created without touching anything else on the server. That
    /// includes the records of a [`RedisIdempotencyStore`](crate::RedisIdempotencyStore)
    /// made from this cache.
    ///
    /// Walks the keys with `SCAN`, which never blocks the server the way `KEYS`
    /// does. Refuses to run with an empty prefix, which would clear the whole
    /// database.
    pub async fn clear_prefix(&self) -> Result<(), PortError> {
        self.namespace.clear().await
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.namespace.prefix())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.namespace
            .query(redis::cmd("GET").arg(self.namespace.key(key)))
            .await
    }

    /// Redis keeps expiry times in whole milliseconds and rejects `PX 0`, so a
    /// TTL under one millisecond deletes the key: it has already expired.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), PortError> {
        let millis = millis(ttl);
        if millis == 0 {
            return self.delete(key).await;
        }
        self.namespace
            .query(
                redis::cmd("SET")
                    .arg(self.namespace.key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(millis),
            )
            .await
    }

    /// `SET … NX`, atomic in Redis. A TTL under one millisecond stores
    /// nothing, as with `set`: the value would already have expired.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let millis = millis(ttl);
        if millis == 0 {
            return Ok(false);
        }
        // Replies `OK` when it stored and nil when the key was taken.
        self.namespace
            .query(
                redis::cmd("SET")
                    .arg(self.namespace.key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis),
            )
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.namespace
            .query(redis::cmd("DEL").arg(self.namespace.key(key)))
            .await
    }
}

#[async_trait]
impl Probe for RedisCache {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn ping(&self) -> Result<(), PortError> {
        self.namespace.query(&redis::cmd("PING")).await
    }
}
