//! The Redis [`RateLimiter`]: the GCRA in one Lua script, so every instance
//! sharing the key prefix shares each limit.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use waiter_ports::PortError;
use waiter_ports::rate_limit::{Decision, Quota, RateLimiter};

use crate::RedisCache;
use crate::connection::Namespace;

/// The GCRA: each key holds its "theoretical arrival time" (TAT), the
/// instant at which its bucket would be empty again, in microseconds of the
/// Redis server's clock (so instances' clocks never matter). A request fits
/// when, after adding its emission interval, the TAT is at most one window
/// ahead of now. The script reads and writes the key atomically, and a
/// refused request writes nothing.
///
/// `KEYS[1]`: the key. `ARGV[1]`: the emission interval in whole
/// microseconds (at least one); `ARGV[2]`: the limit. Returns `{allowed (0
/// or 1), remaining, retry_after_µs, reset_after_µs}`. The key expires when
/// its bucket is full again: it would then be no different from a fresh one.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + window - new_tat) / interval), 0, new_tat - now}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

/// A [`RateLimiter`] in Redis, shared by every instance configured with the
/// same key prefix.
///
/// It shares its cache's connection and circuit breaker: every call is
/// bounded, and while Redis is down calls fail at once with
/// [`PortError::Unavailable`], for the caller to fall back on.
#[derive(Clone)]
pub struct RedisRateLimiter {
    namespace: Namespace,
}

impl RedisRateLimiter {
    /// A limiter on `cache`'s connection, under its key prefix.
    pub fn sharing(cache: &RedisCache) -> Self {
        Self {
            namespace: cache.namespace().clone(),
        }
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.namespace.prefix())
            .finish_non_exhaustive()
    }
}

fn micros(reply: i64) -> Duration {
    Duration::from_micros(u64::try_from(reply).unwrap_or(0))
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, key: &str, quota: Quota) -> Result<Decision, PortError> {
        let interval = u64::try_from(quota.emission_interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(self.namespace.key(key))
            .arg(interval)
            .arg(quota.limit.get());
        let (allowed, remaining, retry_after, reset_after): (i64, i64, i64, i64) =
            self.namespace.invoke(invocation).await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_after: micros(reset_after),
            retry_after: micros(retry_after),
        })
    }

    async fn reset(&self, key: &str) -> Result<(), PortError> {
        self.namespace
            .query(redis::cmd("DEL").arg(self.namespace.key(key)))
            .await
    }
}
