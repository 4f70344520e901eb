//! Redis adapters for Waiter's cache ports, for several instances sharing one cache.
//!
//! Every key is stored under a prefix chosen by the caller, so one Redis
//! server can hold Waiter beside other tenants (and each test in its own
//! namespace); instances configured with the same prefix see the same
//! entries. A Redis that is down or slow must never hang a request: every
//! connection attempt and command is bounded by a timeout, and such failures
//! surface as [`PortError::Unavailable`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::health::Probe;

/// How long one attempt to open a connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Further connection attempts after a failed one, before giving up on a command.
const RECONNECT_RETRIES: usize = 2;
/// The longest pause between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Keys asked for per `SCAN` round trip when clearing a prefix.
const SCAN_BATCH: usize = 500;

/// A [`Cache`] in Redis, shared by every instance configured with the same key prefix.
///
/// Clones share one multiplexed connection, which reconnects by itself after
/// Redis comes back.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisCache {
    /// Connects to the Redis server at `url` (`redis://host:port/db`), storing
    /// every key under `key_prefix` (for example `waiter:`).
    ///
    /// Fails with [`PortError::Unavailable`] when the server cannot be reached
    /// within a few seconds, so start-up reports a missing Redis promptly.
    pub async fn connect(url: &str, key_prefix: impl Into<String>) -> Result<Self, PortError> {
        let client = redis::Client::open(url).map_err(port_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(port_error)?;
        Ok(Self {
            connection,
            prefix: key_prefix.into().into(),
        })
    }

    /// Deletes every key under this cache's prefix, so tests can remove what
    /// they created without touching anything else on the server.
    ///
    /// Walks the keys with `SCAN`, which never blocks the server the way `KEYS`
    /// does. Refuses to run with an empty prefix, which would clear the whole
    /// database.
    pub async fn clear_prefix(&self) -> Result<(), PortError> {
        if self.prefix.is_empty() {
            return Err(PortError::unexpected(anyhow!(
                "refusing to clear an empty key prefix: that would delete every key"
            )));
        }
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(port_error)?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .exec_async(&mut connection)
                    .await
                    .map_err(port_error)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(port_error)
    }

    /// Redis keeps expiry times in whole milliseconds and rejects `PX 0`, so a
    /// TTL under one millisecond deletes the key: it has already expired.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), PortError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return self.delete(key).await;
        }
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .exec_async(&mut self.connection.clone())
            .await
            .map_err(port_error)
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        redis::cmd("DEL")
            .arg(self.key(key))
            .exec_async(&mut self.connection.clone())
            .await
            .map_err(port_error)
    }
}

#[async_trait]
impl Probe for RedisCache {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn ping(&self) -> Result<(), PortError> {
        redis::cmd("PING")
            .exec_async(&mut self.connection.clone())
            .await
            .map_err(port_error)
    }
}

/// Network failures, timeouts and a server still loading are `Unavailable`
/// (worth retrying later); anything else, such as a bad URL or a refused
/// password, is a misconfiguration or bug and `Unexpected`.
fn port_error(error: RedisError) -> PortError {
    let unavailable =
        error.is_io_error() || matches!(error.retry_method(), RetryMethod::WaitAndRetry);
    if unavailable {
        PortError::Unavailable(error.into())
    } else {
        PortError::Unexpected(error.into())
    }
}

/// Escapes the characters `SCAN … MATCH` treats as glob syntax, so a prefix matches literally.
fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape_glob;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("waiter:"), "waiter:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
