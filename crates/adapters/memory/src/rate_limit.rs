//! The in-process [`RateLimiter`], on the `governor` crate's GCRA.
//!
//! governor keeps one limiter per quota, and a keyed limiter never forgets a
//! key unless told to: here every limiter's keys live in a map this adapter
//! shares with it, so that it can also forget one key ([`RateLimiter::reset`]),
//! and keys whose bucket has refilled are pruned as requests come in (at most
//! every [`PRUNE_EVERY`]). A key therefore outlives its last request by at
//! most its window plus that period, which bounds the memory by the request
//! rate, not by how many keys have ever been seen.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use waiter_ports::PortError;
use waiter_ports::rate_limit::{Decision, Quota, RateLimiter};

/// How often the keys whose bucket has refilled are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The keys of one quota, shared between its governor limiter and this adapter.
#[derive(Clone, Default)]
struct Keys(Arc<DashMapStateStore<String>>);

impl StateStore for Keys {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for Keys {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Limiter = governor::RateLimiter<String, Keys, DefaultClock, StateInformationMiddleware>;

/// One quota's limiter and its keys.
struct Bucket {
    limiter: Limiter,
    keys: Keys,
}

/// An in-process [`RateLimiter`]: limits hold per instance.
///
/// Clones share their state.
#[derive(Clone, Default)]
pub struct MemoryRateLimiter {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: RwLock<HashMap<Quota, Arc<Bucket>>>,
    /// When keys were last pruned; `None` before the first request.
    pruned: Mutex<Option<Instant>>,
}

impl MemoryRateLimiter {
    /// A limiter that has counted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys are held, across every quota.
    pub fn tracked_keys(&self) -> usize {
        self.buckets().iter().map(|bucket| bucket.keys.len()).sum()
    }

    /// Drops every key whose bucket has refilled: it would behave exactly
    /// like a key never seen. Runs by itself every [`PRUNE_EVERY`].
    pub fn prune(&self) {
        for bucket in self.buckets() {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    fn buckets(&self) -> Vec<Arc<Bucket>> {
        let buckets = self.inner.buckets.read().unwrap_or_else(|p| p.into_inner());
        buckets.values().cloned().collect()
    }

    fn bucket(&self, quota: Quota) -> Arc<Bucket> {
        if let Some(bucket) = self
            .inner
            .buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&quota)
        {
            return bucket.clone();
        }
        let mut buckets = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(quota)
            .or_insert_with(|| {
                let keys = Keys::default();
                // The interval is never zero, so `with_period` always has a
                // quota to give; the fallback only keeps this total.
                let per_cell = governor::Quota::with_period(quota.emission_interval())
                    .unwrap_or_else(|| governor::Quota::per_second(quota.limit))
                    .allow_burst(quota.limit);
                Arc::new(Bucket {
                    limiter: governor::RateLimiter::<
                        _,
                        _,
                        _,
                        governor::middleware::NoOpMiddleware<_>,
                    >::new(
                        per_cell, keys.clone(), DefaultClock::default()
                    )
                    .with_middleware::<StateInformationMiddleware>(),
                    keys,
                })
            })
            .clone()
    }

    /// Prunes when the last pruning is older than [`PRUNE_EVERY`]; one
    /// caller does it while the others go on.
    fn prune_now_and_then(&self) {
        let Ok(mut pruned) = self.inner.pruned.try_lock() else {
            return;
        };
        let now = Instant::now();
        match *pruned {
            Some(last) if now.duration_since(last) < PRUNE_EVERY => {}
            None => *pruned = Some(now),
            Some(_) => {
                *pruned = Some(now);
                drop(pruned);
                self.prune();
            }
        }
    }
}

impl fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRateLimiter")
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &str, quota: Quota) -> Result<Decision, PortError> {
        self.prune_now_and_then();
        let bucket = self.bucket(quota);
        let interval = quota.emission_interval();
        let limit = quota.limit.get();
        let decision = match bucket.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit - 1);
                Decision {
                    allowed: true,
                    remaining,
                    reset_after: interval * (limit - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(bucket.limiter.clock().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_after: retry_after + interval * (limit - 1),
                    retry_after,
                }
            }
        };
        Ok(decision)
    }

    async fn reset(&self, key: &str) -> Result<(), PortError> {
        for bucket in self.buckets() {
            bucket.keys.0.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_whose_bucket_refilled_are_pruned() {
        let limiter = MemoryRateLimiter::new();
        let quick = Quota::new(1, Duration::from_millis(50)).unwrap();
        let slow = Quota::new(1, Duration::from_secs(60)).unwrap();
        for i in 0..100 {
            limiter.acquire(&format!("quick-{i}"), quick).await.unwrap();
        }
        limiter.acquire("slow", slow).await.unwrap();
        assert_eq!(limiter.tracked_keys(), 101);

        tokio::time::sleep(Duration::from_millis(100)).await;
        limiter.prune();
        assert_eq!(
            limiter.tracked_keys(),
            1,
            "only the key still limited stays"
        );
        assert!(!limiter.acquire("slow", slow).await.unwrap().allowed);
    }
}
