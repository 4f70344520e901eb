//! The in-process [`ReplyEventLog`].
//!
//! Each reply's log is a `tokio::sync::watch` channel whose value is the
//! whole log: appending modifies it in place and wakes every follower, and a
//! follower marks the value seen in the same step as it copies the new
//! events out of it, so an event appended between its reading the backlog
//! and its waiting is never missed.
//!
//! The map holds the only sender of each log: removing a log drops the
//! sender, which ends its followers. Each log has a reaper task, following
//! it like a reader, that removes it once its deadline passes
//! ([`ABANDONED_LOG_TTL`] after the last append, or `keep` after `close`),
//! so memory stays bounded by the replies of the last hour even when
//! writers die.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use futures::stream;
use tokio::sync::watch;
use tokio::time::Instant;
use waiter_ports::PortError;
use waiter_ports::conversations::{
    ABANDONED_LOG_TTL, LogSnapshot, LoggedEvent, LoggedEvents, ReplyEventLog, ReplyKey,
};

/// One reply's log, as its followers see it.
struct LogState {
    /// Event `n` is at index `n - 1`.
    events: Vec<LoggedEvent>,
    /// Nothing more will be appended.
    closed: bool,
    /// When the log is dropped unless appended to first.
    expires_at: Instant,
}

/// The only sender of a log's channel: dropping it ends the followers.
type Log = watch::Sender<LogState>;

/// An in-process [`ReplyEventLog`]: followers must be on this instance.
///
/// Clones share the same logs.
#[derive(Clone)]
pub struct MemoryReplyEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    logs: Mutex<HashMap<ReplyKey, Log>>,
    /// How long a log lives after its last append unless closed:
    /// [`ABANDONED_LOG_TTL`] but for tests.
    abandoned_after: Duration,
}

impl MemoryReplyEventLog {
    /// A log holding no reply's events.
    pub fn new() -> Self {
        Self::abandoning_after(ABANDONED_LOG_TTL)
    }

    fn abandoning_after(abandoned_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                logs: Mutex::new(HashMap::new()),
                abandoned_after,
            }),
        }
    }

    /// How many replies' logs are held, closed ones still kept included.
    pub fn held_logs(&self) -> usize {
        self.inner.logs().len()
    }
}

impl Default for MemoryReplyEventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn logs(&self) -> MutexGuard<'_, HashMap<ReplyKey, Log>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shows the count only: keys carry conversation ids.
impl fmt::Debug for MemoryReplyEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplyEventLog")
            .field("held_logs", &self.held_logs())
            .finish_non_exhaustive()
    }
}

/// Removes `key`'s log once its deadline has passed. Follows the log like
/// a reader, so it sees each append and `close` move the deadline, and ends
/// as soon as the log is gone (its sender dropped) or the adapter dropped.
fn spawn_reaper(inner: Weak<Inner>, key: ReplyKey, mut log: watch::Receiver<LogState>) {
    tokio::spawn(async move {
        loop {
            let deadline = log.borrow_and_update().expires_at;
            tokio::select! {
                changed = log.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let mut logs = inner.logs();
            // Still open means still in the map under `key`: only the map
            // holds a log's sender.
            if log.has_changed().is_err() {
                return;
            }
            if log.borrow().expires_at <= Instant::now() {
                logs.remove(&key);
                return;
            }
        }
    });
}

fn out_of_order(key: &ReplyKey, expected: u64, seq: u64) -> PortError {
    PortError::unexpected(anyhow!(
        "reply {key}: appended event {seq} where {expected} was due"
    ))
}

fn closed(key: &ReplyKey) -> PortError {
    PortError::unexpected(anyhow!("reply {key}: appended to a closed log"))
}

/// Where a follower is: what it has read and what it has still to yield.
struct Follower {
    receiver: watch::Receiver<LogState>,
    /// The last event copied out.
    last: u64,
    pending: VecDeque<LoggedEvent>,
}

impl Follower {
    /// The next event, waiting for one when all are yielded; `None` at the
    /// end of a closed log or when the log is dropped.
    async fn next(&mut self) -> Option<LoggedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let closed = {
                let state = self.receiver.borrow_and_update();
                let start = usize::try_from(self.last)
                    .unwrap_or(usize::MAX)
                    .min(state.events.len());
                self.pending.extend(state.events[start..].iter().cloned());
                state.closed
            };
            if let Some(newest) = self.pending.back() {
                self.last = newest.seq;
                continue;
            }
            if closed || self.receiver.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[async_trait]
impl ReplyEventLog for MemoryReplyEventLog {
    async fn append(&self, key: &ReplyKey, seq: u64, payload: &[u8]) -> Result<(), PortError> {
        let expires_at = Instant::now() + self.inner.abandoned_after;
        let event = LoggedEvent {
            seq,
            payload: payload.to_vec(),
        };
        let mut logs = self.inner.logs();
        let Some(log) = logs.get(key) else {
            if seq != 1 {
                return Err(out_of_order(key, 1, seq));
            }
            let (sender, receiver) = watch::channel(LogState {
                events: vec![event],
                closed: false,
                expires_at,
            });
            spawn_reaper(Arc::downgrade(&self.inner), key.clone(), receiver);
            logs.insert(key.clone(), sender);
            return Ok(());
        };
        let mut outcome = Ok(());
        log.send_if_modified(|state| {
            let expected = state.events.len() as u64 + 1;
            if state.closed {
                outcome = Err(closed(key));
                return false;
            }
            if seq != expected {
                let retried = seq + 1 == expected
                    && state
                        .events
                        .last()
                        .is_some_and(|last| last.payload == payload);
                if !retried {
                    outcome = Err(out_of_order(key, expected, seq));
                }
                return false;
            }
            state.events.push(event);
            state.expires_at = expires_at;
            true
        });
        outcome
    }

    /// Closing a log that does not exist does nothing; closing one again
    /// only moves its deadline to `keep` from now.
    async fn close(&self, key: &ReplyKey, keep: Duration) -> Result<(), PortError> {
        let expires_at = Instant::now() + keep;
        let mut logs = self.inner.logs();
        if keep.is_zero() {
            logs.remove(key);
            return Ok(());
        }
        if let Some(log) = logs.get(key) {
            log.send_modify(|state| {
                state.closed = true;
                state.expires_at = expires_at;
            });
        }
        Ok(())
    }

    /// Copies the log through a receiver of its own, so no follower is
    /// woken or marked as having seen anything, and other logs' appends do
    /// not wait for the copy (the map's lock is held only to find the log).
    async fn snapshot(&self, key: &ReplyKey) -> Result<LogSnapshot, PortError> {
        let Some(log) = self.inner.logs().get(key).map(watch::Sender::subscribe) else {
            return Ok(LogSnapshot::default());
        };
        let state = log.borrow();
        Ok(LogSnapshot {
            events: state.events.clone(),
            closed: state.closed,
        })
    }

    /// Looks the log up when first polled, not when called.
    fn follow(&self, key: &ReplyKey, after: u64) -> LoggedEvents {
        let start = Start {
            inner: self.inner.clone(),
            key: key.clone(),
            after,
        };
        Box::pin(stream::unfold(
            Reading::Start(start),
            |reading| async move {
                let mut follower = match reading {
                    Reading::Start(start) => start.subscribe()?,
                    Reading::Following(follower) => follower,
                };
                let event = follower.next().await?;
                Some((Ok(event), Reading::Following(follower)))
            },
        ))
    }
}

/// A follow not yet polled.
struct Start {
    inner: Arc<Inner>,
    key: ReplyKey,
    after: u64,
}

impl Start {
    /// A follower of the log, or `None` when there is no such log.
    fn subscribe(self) -> Option<Follower> {
        let receiver = self
            .inner
            .logs()
            .get(&self.key)
            .map(|log| log.subscribe())?;
        Some(Follower {
            receiver,
            last: self.after,
            pending: VecDeque::new(),
        })
    }
}

enum Reading {
    Start(Start),
    Following(Follower),
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use waiter_ports::conversations::ReplyEventLog;

    use super::*;

    fn key() -> ReplyKey {
        ReplyKey {
            conversation: waiter_domain::ConversationId::from_ulid(ulid::Ulid::nil()),
            reply: waiter_domain::MessageId::parse("msg_1").expect("a valid id"),
        }
    }

    #[tokio::test]
    async fn a_log_never_closed_is_dropped_after_its_last_append_and_ends_its_followers() {
        let ttl = Duration::from_millis(200);
        let log = MemoryReplyEventLog::abandoning_after(ttl);
        log.append(&key(), 1, b"one").await.unwrap();
        let mut follower = log.follow(&key(), 0);
        assert_eq!(follower.next().await.unwrap().unwrap().seq, 1);

        tokio::time::sleep(ttl / 2).await;
        log.append(&key(), 2, b"two").await.unwrap();
        tokio::time::sleep(ttl * 3 / 4).await;
        assert_eq!(log.held_logs(), 1, "an append must push the deadline back");
        assert_eq!(follower.next().await.unwrap().unwrap().seq, 2);

        let ended = tokio::time::timeout(ttl * 2, follower.next()).await;
        assert!(
            matches!(ended, Ok(None)),
            "a follower of a dropped log must end"
        );
        assert_eq!(log.held_logs(), 0);
    }

    #[tokio::test]
    async fn a_closed_log_leaves_memory_after_keep() {
        let log = MemoryReplyEventLog::new();
        log.append(&key(), 1, b"one").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        log.close(&key(), Duration::from_millis(100)).await.unwrap();
        assert_eq!(log.held_logs(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.held_logs(), 0);
    }
}
