//! The connection and key namespace every Redis adapter here works through.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};
use waiter_ports::PortError;

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

/// A multiplexed connection plus the prefix every key is stored under.
///
/// Clones share the connection, which reconnects by itself after Redis comes
/// back; [`Namespace::within`] derives a sub-namespace on the same connection.
#[derive(Clone)]
pub(crate) struct Namespace {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl Namespace {
    /// Connects to the Redis server at `url`, failing with
    /// [`PortError::Unavailable`] when it cannot be reached within a few seconds.
    pub(crate) async fn connect(url: &str, prefix: String) -> Result<Self, PortError> {
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
            prefix: prefix.into(),
        })
    }

    /// The namespace of keys under this one's prefix followed by `suffix`.
    pub(crate) fn within(&self, suffix: &str) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: format!("{}{suffix}", self.prefix).into(),
        }
    }

    /// The prefix, which adapters show in their `Debug` output instead of the
    /// connection, whose address may carry a password.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key for `key`.
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A handle on the shared connection; commands need it mutably.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Deletes every key under the prefix, walking them with `SCAN`, which
    /// never blocks the server the way `KEYS` does. Refuses an empty prefix,
    /// which would clear the whole database.
    pub(crate) async fn clear(&self) -> Result<(), PortError> {
        if self.prefix.is_empty() {
            return Err(PortError::unexpected(anyhow!(
                "refusing to clear an empty key prefix: that would delete every key"
            )));
        }
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut connection = self.connection();
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
}

/// `ttl` in the whole milliseconds `PX` takes, rounded down and saturating;
/// zero means the value has already expired, which `PX` rejects.
pub(crate) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Network failures, timeouts and a server still loading are `Unavailable`
/// (worth retrying later); anything else, such as a bad URL or a refused
/// password, is a misconfiguration or bug and `Unexpected`.
pub(crate) fn port_error(error: RedisError) -> PortError {
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
