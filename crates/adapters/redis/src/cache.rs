//! The Redis [`Cache`].

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use redis::Script;
use waiter_ports::PortError;
use waiter_ports::cache::{
    Cache, GenerationalRead, UNWRITTEN_GENERATION, generation_key, generational_slot,
};
use waiter_ports::health::Probe;

use crate::connection::{Namespace, millis};

/// [`Cache::get_generational`] in one round trip. `KEYS` are the generation
/// keys, in order; `ARGV[1]` is the (prefixed) last name, `ARGV[2]` the
/// generation of a name never written. Replies the generations, then the
/// slot's value (nil when absent).
///
/// The slot is a key the script composes, not one of `KEYS`: fine on a
/// single Redis server, which is what Waiter supports (not Redis Cluster).
const GENERATIONAL_READ: &str = r"
local slot = ARGV[1]
local reply = {}
for i, key in ipairs(KEYS) do
  local generation = redis.call('GET', key) or ARGV[2]
  reply[i] = generation
  slot = slot .. ':' .. generation
end
reply[#KEYS + 1] = redis.call('GET', slot)
return reply
";

static GENERATIONAL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GENERATIONAL_READ));

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

    /// One script call instead of a `GET` per generation and one for the value.
    async fn get_generational<'a>(&self, names: &[&'a str]) -> Result<GenerationalRead, PortError> {
        let name = names.last().copied().unwrap_or_default();
        let mut invocation = GENERATIONAL_SCRIPT.prepare_invoke();
        for part in names {
            invocation.key(self.namespace.key(&generation_key(part)));
        }
        invocation
            .arg(self.namespace.key(name))
            .arg(UNWRITTEN_GENERATION);
        let mut reply: Vec<Option<Vec<u8>>> = self.namespace.invoke(invocation).await?;
        if reply.len() != names.len() + 1 {
            return Err(PortError::unexpected(anyhow!(
                "the generational read replied {} items for {} names",
                reply.len(),
                names.len()
            )));
        }
        let value = reply.pop().flatten();
        let slot = generational_slot(name, &reply);
        Ok(GenerationalRead { slot, value })
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
