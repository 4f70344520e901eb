//! The in-process [`ReplyLeases`], for a server running as a single
//! instance: no other instance could take its replies over, so it hands
//! none over on shutdown ([`is_shared`](ReplyLeases::is_shared) is false).
//! Its leases still expire and are claimed as the contract says, so the
//! services run the same code whichever store they have.
//!
//! Leases are a map under a mutex, timed by Tokio's clock; stop requests go
//! through a `broadcast` channel, which reaches every listener of this
//! process at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use waiter_ports::PortError;
use waiter_ports::conversations::{ClaimedLease, InstanceId, ReplyKey, ReplyLeases, StopRequests};

/// Stop requests a listener may fall behind by before it misses the
/// oldest: far more than replies are stopped in the moment a listener
/// takes to act on one.
const STOP_BACKLOG: usize = 1024;

/// Stands for "never" when `now + ttl` is past what an [`Instant`] can hold.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// One reply's lease.
struct Lease {
    holder: InstanceId,
    /// From then on the lease is claimable.
    expires_at: Instant,
}

/// An in-process [`ReplyLeases`]: only this process sees its leases and
/// stop requests.
///
/// Clones share the same leases and listeners.
#[derive(Clone)]
pub struct MemoryReplyLeases {
    inner: Arc<Inner>,
}

struct Inner {
    leases: Mutex<HashMap<ReplyKey, Lease>>,
    /// Every listener's receiver is subscribed to this sender.
    stops: broadcast::Sender<ReplyKey>,
}

impl MemoryReplyLeases {
    /// A store holding no lease.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                leases: Mutex::new(HashMap::new()),
                stops: broadcast::Sender::new(STOP_BACKLOG),
            }),
        }
    }

    /// How many leases are listed, expired ones included.
    pub fn held_leases(&self) -> usize {
        self.inner.leases().len()
    }
}

impl Default for MemoryReplyLeases {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn leases(&self) -> MutexGuard<'_, HashMap<ReplyKey, Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shows the count only: keys carry conversation ids.
impl fmt::Debug for MemoryReplyLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplyLeases")
            .field("held_leases", &self.held_leases())
            .finish_non_exhaustive()
    }
}

/// When a lease given `ttl` at `now` expires.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).unwrap_or(now + FAR_FUTURE)
}

#[async_trait]
impl ReplyLeases for MemoryReplyLeases {
    fn is_shared(&self) -> bool {
        false
    }

    /// Succeeds for the holder that already has the lease, setting it to
    /// `ttl` from now; an expired lease is another holder's until claimed.
    async fn acquire(
        &self,
        key: &ReplyKey,
        holder: &InstanceId,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let expires_at = expiry(Instant::now(), ttl);
        let mut leases = self.inner.leases();
        match leases.get_mut(key) {
            Some(lease) if lease.holder != *holder => Ok(false),
            Some(lease) => {
                lease.expires_at = expires_at;
                Ok(true)
            }
            None => {
                leases.insert(
                    key.clone(),
                    Lease {
                        holder: holder.clone(),
                        expires_at,
                    },
                );
                Ok(true)
            }
        }
    }

    async fn renew(
        &self,
        holder: &InstanceId,
        keys: &[ReplyKey],
        ttl: Duration,
    ) -> Result<Vec<ReplyKey>, PortError> {
        let expires_at = expiry(Instant::now(), ttl);
        let mut leases = self.inner.leases();
        let mut lost = Vec::new();
        for key in keys {
            match leases.get_mut(key) {
                Some(lease) if lease.holder != *holder => lost.push(key.clone()),
                Some(lease) => lease.expires_at = expires_at,
                None => {
                    leases.insert(
                        key.clone(),
                        Lease {
                            holder: holder.clone(),
                            expires_at,
                        },
                    );
                }
            }
        }
        Ok(lost)
    }

    async fn release(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        let mut leases = self.inner.leases();
        if leases.get(key).is_some_and(|lease| lease.holder == *holder) {
            leases.remove(key);
        }
        Ok(())
    }

    async fn hand_over(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError> {
        let now = Instant::now();
        if let Some(lease) = self.inner.leases().get_mut(key)
            && lease.holder == *holder
        {
            lease.expires_at = now;
        }
        Ok(())
    }

    /// Looks at every lease: a single instance holds only the replies it
    /// generates, so the map stays small.
    async fn claim_expired(
        &self,
        holder: &InstanceId,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<ClaimedLease>, PortError> {
        let now = Instant::now();
        let expires_at = expiry(now, ttl);
        let mut leases = self.inner.leases();
        let mut expired: Vec<(&ReplyKey, Instant)> = leases
            .iter()
            .filter(|(_, lease)| lease.expires_at <= now)
            .map(|(key, lease)| (key, lease.expires_at))
            .collect();
        expired.sort_by_key(|&(_, expired_at)| expired_at);
        let claimed: Vec<ClaimedLease> = expired
            .into_iter()
            .take(max)
            .map(|(key, expired_at)| ClaimedLease {
                key: key.clone(),
                expired_for: now - expired_at,
            })
            .collect();
        for lease in &claimed {
            if let Some(taken) = leases.get_mut(&lease.key) {
                taken.holder = holder.clone();
                taken.expires_at = expires_at;
            }
        }
        Ok(claimed)
    }

    /// Reaches this process's listeners only; with none, the request is
    /// dropped.
    async fn request_stop(&self, key: &ReplyKey) -> Result<(), PortError> {
        // An error only says that nobody listens: the request is lost, as
        // the contract allows.
        let _ = self.inner.stops.send(key.clone());
        Ok(())
    }

    /// Listens from the moment of the call. A listener that falls more
    /// than a thousand requests behind misses the oldest and goes on with
    /// the rest; it ends only when every clone of the store is dropped.
    fn stop_requests(&self) -> StopRequests {
        let receiver = self.inner.stops.subscribe();
        Box::pin(stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(key) => return Some((key, receiver)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use waiter_domain::{ConversationId, MessageId};

    use super::*;

    fn key(n: usize) -> ReplyKey {
        ReplyKey {
            conversation: ConversationId::from_ulid(ulid::Ulid::nil()),
            reply: MessageId::parse(&format!("msg_{n}")).expect("a valid id"),
        }
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_skips_what_it_missed_and_goes_on() {
        let leases = MemoryReplyLeases::new();
        let mut listener = leases.stop_requests();
        for n in 0..STOP_BACKLOG + 10 {
            leases.request_stop(&key(n)).await.unwrap();
        }
        assert_eq!(
            listener.next().await,
            Some(key(10)),
            "the oldest ten are missed"
        );
        let rest: Vec<ReplyKey> = listener.by_ref().take(STOP_BACKLOG - 1).collect().await;
        assert_eq!(rest.last(), Some(&key(STOP_BACKLOG + 9)));
        leases.request_stop(&key(0)).await.unwrap();
        assert_eq!(listener.next().await, Some(key(0)), "still listening");
    }

    #[tokio::test]
    async fn released_and_claimed_leases_leave_no_garbage() {
        let leases = MemoryReplyLeases::new();
        let holder = InstanceId::new("holder");
        assert!(
            leases
                .acquire(&key(1), &holder, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            leases
                .acquire(&key(2), &holder, Duration::ZERO)
                .await
                .unwrap()
        );
        assert_eq!(leases.held_leases(), 2);
        leases.release(&key(1), &holder).await.unwrap();
        assert_eq!(leases.held_leases(), 1);
        let other = InstanceId::new("other");
        let claimed = leases
            .claim_expired(&other, Duration::MAX, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        leases.release(&key(2), &other).await.unwrap();
        assert_eq!(leases.held_leases(), 0);
    }

    #[test]
    fn a_ttl_beyond_any_instant_means_never() {
        let now = Instant::now();
        assert_eq!(expiry(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            expiry(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
