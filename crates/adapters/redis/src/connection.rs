//! The connection and key namespace every Redis adapter here works through.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::futures::CircuitBreaker as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, RetryMethod, ScriptInvocation};
use waiter_ports::PortError;

/// The most one Redis call may take, reconnecting included. Redis only makes
/// things cheaper, so a call that cannot answer in this time is better
/// skipped: callers fall back to the database.
pub(crate) const CALL_BUDGET: Duration = Duration::from_millis(250);
/// How long one attempt to open a connection may take.
const CONNECTION_TIMEOUT: Duration = CALL_BUDGET;
/// How long a command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = CALL_BUDGET;
/// Further connection attempts after a failed one, before giving up on a command.
const RECONNECT_RETRIES: usize = 1;
/// The longest pause between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(50);
/// Consecutive unavailable calls after which the circuit opens.
const FAILURES_TO_OPEN: u32 = 3;
/// How long an open circuit refuses every call at once, before it lets one
/// through to find out whether Redis is back.
const OPEN_FOR: Duration = Duration::from_secs(1);
/// Keys asked for per `SCAN` round trip when clearing a prefix.
const SCAN_BATCH: usize = 500;

/// Opens after [`FAILURES_TO_OPEN`] unavailable calls in a row and stays open for [`OPEN_FOR`].
type Breaker = failsafe::StateMachine<ConsecutiveFailures<Constant>, ()>;

/// A multiplexed connection plus the prefix every key is stored under.
///
/// Each call that reaches Redis is timed (`waiter_redis_call_duration_seconds`)
/// and each failure counted by kind (`waiter_redis_errors_total`: unavailable,
/// unexpected, or refused at once by the open circuit).
///
/// Clones share the connection, which reconnects by itself after Redis comes
/// back, and one circuit breaker: every call is bounded by [`CALL_BUDGET`],
/// and while Redis stays down calls fail at once instead of each paying that
/// budget.
#[derive(Clone)]
pub(crate) struct Namespace {
    /// For the connections some adapters need of their own (a blocking read
    /// must not hold up the shared one).
    client: redis::Client,
    connection: ConnectionManager,
    breaker: Breaker,
    prefix: Arc<str>,
}

impl Namespace {
    /// Connects to the Redis server at `url`, failing with
    /// [`PortError::Unavailable`] when it cannot be reached within [`CALL_BUDGET`].
    pub(crate) async fn connect(url: &str, prefix: String) -> Result<Self, PortError> {
        let client = redis::Client::open(url).map_err(port_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(port_error)?;
        let breaker = failsafe::Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                FAILURES_TO_OPEN,
                backoff::constant(OPEN_FOR),
            ))
            .build();
        Ok(Self {
            client,
            connection,
            breaker,
            prefix: prefix.into(),
        })
    }

    /// Runs `command` within the call budget and through the circuit breaker.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, PortError> {
        let mut connection = self.connection.clone();
        self.guarded(async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs a Lua script (by its digest, loading it first if Redis lacks
    /// it) within the call budget and through the circuit breaker.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, PortError> {
        let mut connection = self.connection.clone();
        self.guarded(async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Bounds `call` by [`CALL_BUDGET`]; only unavailability counts towards
    /// opening the circuit (a script error says nothing about Redis being down).
    async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, PortError> {
        let bounded = async {
            match tokio::time::timeout(CALL_BUDGET, call).await {
                Ok(reply) => reply.map_err(port_error),
                Err(_) => Err(PortError::Unavailable(anyhow!(
                    "Redis did not answer within {CALL_BUDGET:?}"
                ))),
            }
        };
        let is_unavailable = |err: &PortError| matches!(err, PortError::Unavailable(_));
        let started = Instant::now();
        let outcome = match self.breaker.call_with(is_unavailable, bounded).await {
            Ok(value) => Ok(value),
            Err(failsafe::Error::Inner(err)) => Err(err),
            Err(failsafe::Error::Rejected) => {
                metrics::counter!("waiter_redis_errors_total", "kind" => "circuit-open")
                    .increment(1);
                return Err(PortError::Unavailable(anyhow!(
                    "Redis is unavailable: calls are paused for up to {OPEN_FOR:?} after repeated failures"
                )));
            }
        };
        metrics::histogram!("waiter_redis_call_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(err) = &outcome {
            let kind = match err {
                PortError::Unavailable(_) => "unavailable",
                PortError::Unexpected(_) => "unexpected",
            };
            metrics::counter!("waiter_redis_errors_total", "kind" => kind).increment(1);
        }
        outcome
    }

    /// The client the shared connection was opened with, to open another.
    pub(crate) fn client(&self) -> redis::Client {
        self.client.clone()
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
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH),
                )
                .await?;
            if !keys.is_empty() {
                self.query::<()>(redis::cmd("DEL").arg(&keys)).await?;
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
