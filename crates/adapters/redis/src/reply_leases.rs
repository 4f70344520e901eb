//! The Redis [`ReplyLeases`]: every instance sharing the key prefix sees
//! the same leases, so when one dies another continues its replies; and
//! a stop requested on any instance reaches the one generating the reply.
//!
//! # Leases
//!
//! Two keys hold every lease: a sorted set, `reply-leases:expiries`, whose
//! members are reply keys (`conv_…:msg_…`) scored by when their lease
//! expires, in milliseconds of Redis's own clock (`TIME`, so instances'
//! clocks never matter); and a hash, `reply-leases:holders`, from the same
//! members to their holders. Each operation is one Lua script, so reading a
//! holder and moving an expiry is one atomic step: two claimers can never
//! both take a lease, and `renew` moves a thousand leases in one round trip.
//! Neither key expires: an expired lease must stay listed until someone
//! claims it, even after every instance was down for a day.
//!
//! # Stop requests
//!
//! A request is a `PUBLISH` of the reply key on the prefix's
//! `reply-stops` channel. Each listener subscribes on a connection of its
//! own (a subscribed connection can do nothing else, and must not hold up
//! the shared one), kept by a task that pings it every [`KEEPALIVE`] to
//! notice a connection that died without closing, and that connects again
//! after each failure, waiting longer each time up to [`MAX_RETRY`]. What is
//! published while it is not subscribed is lost, as the port allows.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use futures::{StreamExt, stream};
use redis::{Script, Value};
use tokio::sync::mpsc;
use waiter_domain::{ConversationId, MessageId};
use waiter_ports::PortError;
use waiter_ports::conversations::{ClaimedLease, InstanceId, ReplyKey, ReplyLeases, StopRequests};

use crate::RedisCache;
use crate::connection::{Namespace, millis};

/// Sets `now` to Redis's clock in whole milliseconds; each script starts
/// with it.
const NOW: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
";

/// Takes the lease on `ARGV[1]` for holder `ARGV[2]`, to expire in
/// `ARGV[3]` ms, unless another holder has it (expired or not). Returns 1
/// when taken, 0 when refused.
const ACQUIRE: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and current ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

/// For holder `ARGV[1]`, sets each lease `ARGV[3..]` it holds, or that
/// nobody holds, to expire in `ARGV[2]` ms; returns the others, which
/// another holder has. Works in chunks of a thousand keys, a few commands
/// each (one command per key would cost Redis four times as much), and
/// below Lua's limit on the arguments of one call.
const RENEW: &str = r"
local expiry = string.format('%.0f', now + tonumber(ARGV[2]))
local lost = {}
for first = 3, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local holders = redis.call('HMGET', KEYS[2], unpack(ARGV, first, last))
  local expiries, taken = {}, {}
  for i = 1, #holders do
    local member = ARGV[first + i - 1]
    local current = holders[i]
    if current and current ~= ARGV[1] then
      lost[#lost + 1] = member
    else
      expiries[#expiries + 1] = expiry
      expiries[#expiries + 1] = member
      if not current then
        taken[#taken + 1] = member
        taken[#taken + 1] = ARGV[1]
      end
    end
  end
  if #expiries > 0 then
    redis.call('ZADD', KEYS[1], unpack(expiries))
  end
  if #taken > 0 then
    redis.call('HSET', KEYS[2], unpack(taken))
  end
end
return lost
";

/// Removes the lease on `ARGV[1]` if holder `ARGV[2]` has it.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// Makes the lease on `ARGV[1]` expire now if holder `ARGV[2]` has it.
const HAND_OVER: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
end
return 0
";

/// Gives holder `ARGV[1]`, for `ARGV[2]` ms, up to `ARGV[3]` (at least
/// one) expired leases, longest expired first; returns `{member,
/// expired_for_ms}` for each.
const CLAIM: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
  'WITHSCORES', 'LIMIT', 0, ARGV[3])
local expiry = string.format('%.0f', now + tonumber(ARGV[2]))
local claimed = {}
for i = 1, #expired, 2 do
  redis.call('ZADD', KEYS[1], expiry, expired[i])
  redis.call('HSET', KEYS[2], expired[i], ARGV[1])
  claimed[#claimed + 1] = {expired[i], now - tonumber(expired[i + 1])}
end
return claimed
";

/// Each script, with [`NOW`] in front.
fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ACQUIRE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RENEW));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RELEASE));
static HAND_OVER_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(HAND_OVER));
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(CLAIM));

/// How long a listener's task may take to connect and subscribe before it
/// gives up and tries again: longer than a call's budget, since nobody
/// waits on it, but bounded, since a silent server would hang it.
const SUBSCRIBE_BUDGET: Duration = Duration::from_secs(1);
/// How often a subscribed connection is pinged: a connection that died
/// without closing (a partition) is noticed within this and
/// [`PING_PATIENCE`], and meanwhile stop requests are lost.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is given up.
const PING_PATIENCE: Duration = Duration::from_secs(1);
/// The pause before connecting again after the first failure; it doubles
/// with each further failure in a row.
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to connect.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// Stop requests received and not yet taken by a slow listener; beyond
/// that the task waits, and Redis buffers for it.
const STOP_BACKLOG: usize = 1024;

/// A [`ReplyLeases`] in Redis, shared by every instance configured with the
/// same key prefix.
///
/// Lease operations and stop requests share the cache's connection and
/// circuit breaker; each stop listener has a connection of its own. See
/// the module documentation.
#[derive(Clone)]
pub struct RedisReplyLeases {
    namespace: Namespace,
    expiries: String,
    holders: String,
    stops: String,
}

impl RedisReplyLeases {
    /// Leases on `cache`'s connection, under its key prefix.
    pub fn sharing(cache: &RedisCache) -> Self {
        let namespace = cache.namespace().clone();
        Self {
            expiries: namespace.key("reply-leases:expiries"),
            holders: namespace.key("reply-leases:holders"),
            stops: namespace.key("reply-stops"),
            namespace,
        }
    }

    /// Runs a lease script on the two lease keys with `args`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, PortError> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.expiries).key(&self.holders);
        args(&mut invocation);
        self.namespace.invoke(invocation).await
    }
}

/// Shows the prefix only; the connection's address may carry a password.
impl fmt::Debug for RedisReplyLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplyLeases")
            .field("prefix", &self.namespace.prefix())
            .finish_non_exhaustive()
    }
}

/// The reply key a member or message names: `conv_…:msg_…`, as
/// [`ReplyKey`]'s `Display` writes it (neither id holds a colon).
fn parse_key(text: &[u8]) -> Option<ReplyKey> {
    let (conversation, reply) = std::str::from_utf8(text).ok()?.split_once(':')?;
    Some(ReplyKey {
        conversation: ConversationId::from_str(conversation).ok()?,
        reply: MessageId::parse(reply).ok()?,
    })
}

fn malformed(member: &[u8]) -> PortError {
    PortError::unexpected(anyhow!(
        "the reply lease {:?} names no reply",
        String::from_utf8_lossy(member)
    ))
}

#[async_trait]
impl ReplyLeases for RedisReplyLeases {
    fn is_shared(&self) -> bool {
        true
    }

    /// Succeeds for the holder that already has the lease, setting it to
    /// `ttl` from now; an expired lease is another holder's until claimed.
    async fn acquire(
        &self,
        key: &ReplyKey,
        holder: &InstanceId,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let taken: i64 = self
            .run(&ACQUIRE_SCRIPT, |invocation| {
                invocation
                    .arg(key.to_string())
                    .arg(holder.as_str())
                    .arg(millis(ttl));
            })
            .await?;
        Ok(taken == 1)
    }

    /// One script call, whatever the number of keys.
    async fn renew(
        &self,
        holder: &InstanceId,
        keys: &[ReplyKey],
        ttl: Duration,
    ) -> Result<Vec<ReplyKey>, PortError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let lost: Vec<Vec<u8>> = self
            .run(&RENEW_SCRIPT, |invocation| {
                invocation.arg(holder.as_str()).arg(millis(ttl));
                for key in keys {
                    invocation.arg(key.to_string());
                }
            })
            .await?;
        // Each member returned is one of `keys`, so it parses.
        lost.iter()
            .map(|member| parse_key(member).ok_or_else(|| malformed(member)))
            .collect()
    }

    async fn release(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        self.run(&RELEASE_SCRIPT, |invocation| {
            invocation.arg(key.to_string()).arg(holder.as_str());
        })
        .await
    }

    async fn hand_over(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        self.run(&HAND_OVER_SCRIPT, |invocation| {
            invocation.arg(key.to_string()).arg(holder.as_str());
        })
        .await
    }

    /// One script call. A member that names no reply (written by something
    /// other than this adapter) is claimed, then released and reported as
    /// [`PortError::Unexpected`], so that it blocks no later claim; the
    /// leases claimed with it are then reported by nobody and claimed
    /// again once their new `ttl` runs out.
    async fn claim_expired(
        &self,
        holder: &InstanceId,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<ClaimedLease>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let claimed: Vec<(Vec<u8>, i64)> = self
            .run(&CLAIM_SCRIPT, |invocation| {
                invocation
                    .arg(holder.as_str())
                    .arg(millis(ttl))
                    .arg(i64::try_from(max).unwrap_or(i64::MAX));
            })
            .await?;
        let mut leases = Vec::with_capacity(claimed.len());
        let mut malformed_members = Vec::new();
        for (member, expired_for) in claimed {
            match parse_key(&member) {
                Some(key) => leases.push(ClaimedLease {
                    key,
                    expired_for: Duration::from_millis(u64::try_from(expired_for).unwrap_or(0)),
                }),
                None => malformed_members.push(member),
            }
        }
        let Some(first) = malformed_members.first() else {
            return Ok(leases);
        };
        for member in &malformed_members {
            self.run::<()>(&RELEASE_SCRIPT, |invocation| {
                invocation.arg(member).arg(holder.as_str());
            })
            .await?;
        }
        Err(malformed(first))
    }

    /// Publishes on the shared connection: it never blocks.
    async fn request_stop(&self, key: &ReplyKey) -> Result<(), PortError> {
        self.namespace
            .query(redis::cmd("PUBLISH").arg(&self.stops).arg(key.to_string()))
            .await
    }

    /// Starts a task that subscribes on a connection of its own; requests
    /// published before its subscription is confirmed (a round trip or
    /// two) are missed. The stream never ends; dropping it ends the task
    /// and closes its connection. Must be called within a Tokio runtime.
    fn stop_requests(&self) -> StopRequests {
        let (sender, receiver) = mpsc::channel(STOP_BACKLOG);
        tokio::spawn(listen(self.namespace.client(), self.stops.clone(), sender));
        Box::pin(stream::unfold(receiver, |mut receiver| async move {
            let key = receiver.recv().await?;
            Some((key, receiver))
        }))
    }
}

/// Keeps a subscription to `channel` and forwards each reply key published
/// there to `sender`, until the listener is dropped.
async fn listen(client: redis::Client, channel: String, sender: mpsc::Sender<ReplyKey>) {
    let mut retry = FIRST_RETRY;
    loop {
        tokio::select! {
            () = sender.closed() => return,
            subscribed = forward(&client, &channel, &sender) => {
                if subscribed {
                    retry = FIRST_RETRY;
                }
            }
        }
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Subscribes to `channel` and forwards what comes until the connection
/// fails, stops answering pings, or the listener is dropped. Returns
/// whether it got as far as subscribing.
async fn forward(client: &redis::Client, channel: &str, sender: &mpsc::Sender<ReplyKey>) -> bool {
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let Ok(Ok(pubsub)) = tokio::time::timeout(SUBSCRIBE_BUDGET, subscribing).await else {
        return false;
    };
    let (mut sink, mut messages) = pubsub.split();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return true;
                };
                // Anything else published on the channel is not a request.
                let Some(key) = parse_key(message.get_payload_bytes()) else {
                    continue;
                };
                if sender.send(key).await.is_err() {
                    return true;
                }
            }
            _ = keepalive.tick() => {
                let ping = tokio::time::timeout(PING_PATIENCE, sink.ping::<Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_back_into_the_keys_they_were_written_from() {
        let key = ReplyKey {
            conversation: ConversationId::from_ulid(ulid::Ulid::generate()),
            reply: MessageId::parse("Client-chosen_1").expect("a valid id"),
        };
        assert_eq!(parse_key(key.to_string().as_bytes()), Some(key));
        for malformed in [
            &b""[..],
            b"conv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            b"conv_01ARZ3NDEKTSV4RRFFQ69G5FAV:",
            b"book_01ARZ3NDEKTSV4RRFFQ69G5FAV:msg_1",
            b"conv_01ARZ3NDEKTSV4RRFFQ69G5FAV:msg:1",
            b"conv_01ARZ3NDEKTSV4RRFFQ69G5FAV:\xff",
        ] {
            assert_eq!(parse_key(malformed), None, "{malformed:?}");
        }
    }
}
