//! Rate limits: which quota each [`Policy`] has, under which key a subject
//! is counted, and falling back to in-process limits when the shared
//! limiter is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use waiter_ports::PortError;
use waiter_ports::rate_limit::{Decision, Limited, Policy, Quota, RateLimitUseCases, RateLimiter};

/// The quota of each policy; a policy without one is switched off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitSettings {
    quotas: HashMap<Policy, Quota>,
}

impl RateLimitSettings {
    /// Every policy switched off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Sets `policy`'s quota; `None` switches it off.
    pub fn with(mut self, policy: Policy, quota: Option<Quota>) -> Self {
        match quota {
            Some(quota) => self.quotas.insert(policy, quota),
            None => self.quotas.remove(&policy),
        };
        self
    }

    /// `policy`'s quota, `None` when it is off.
    pub fn quota(&self, policy: Policy) -> Option<Quota> {
        self.quotas.get(&policy).copied()
    }

    /// True when every policy is off.
    pub fn is_off(&self) -> bool {
        self.quotas.is_empty()
    }
}

/// Applies the configured policies with a [`RateLimiter`].
pub struct RateLimitService {
    limiter: Arc<dyn RateLimiter>,
    settings: RateLimitSettings,
}

impl RateLimitService {
    /// Counts with `limiter`, by the quotas in `settings`.
    pub fn new(limiter: Arc<dyn RateLimiter>, settings: RateLimitSettings) -> Self {
        Self { limiter, settings }
    }

    /// The limiter's key for `subject` under `policy`. Subjects can be
    /// emails, so the key holds a digest of them, never the text: keys may
    /// be seen by whoever can list Redis's keys.
    fn key(policy: Policy, subject: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(subject.as_bytes());
        let mut key = String::with_capacity(32 + 40);
        key.push_str("rate:");
        key.push_str(policy.name());
        key.push(':');
        for byte in &digest[..16] {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        key
    }
}

impl std::fmt::Debug for RateLimitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RateLimitUseCases for RateLimitService {
    async fn check(&self, policy: Policy, subject: &str) -> Result<Option<Limited>, PortError> {
        let Some(quota) = self.settings.quota(policy) else {
            return Ok(None);
        };
        let decision = self
            .limiter
            .acquire(&Self::key(policy, subject), quota)
            .await?;
        metrics::counter!(
            "waiter_rate_limit_decisions_total",
            "policy" => policy.name(),
            "decision" => if decision.allowed { "allowed" } else { "limited" },
        )
        .increment(1);
        Ok(Some(Limited {
            policy,
            quota,
            decision,
        }))
    }

    async fn reset(&self, policy: Policy, subject: &str) -> Result<(), PortError> {
        if self.settings.quota(policy).is_none() {
            return Ok(());
        }
        self.limiter.reset(&Self::key(policy, subject)).await
    }
}

/// A [`RateLimiter`] shared by every instance (Redis) with an in-process
/// one to fall back on while the shared one cannot answer: the limits stay,
/// per instance, instead of vanishing or refusing everyone.
///
/// Each call tries the shared limiter first (whose circuit breaker makes
/// that free while it is known to be down), so it recovers by itself. The
/// switch to the fallback is logged once, and so is the recovery.
pub struct FailoverRateLimiter {
    shared: Arc<dyn RateLimiter>,
    fallback: Arc<dyn RateLimiter>,
    degraded: AtomicBool,
}

impl FailoverRateLimiter {
    /// Counts with `shared`, or with `fallback` while `shared` fails.
    pub fn new(shared: Arc<dyn RateLimiter>, fallback: Arc<dyn RateLimiter>) -> Self {
        Self {
            shared,
            fallback,
            degraded: AtomicBool::new(false),
        }
    }

    /// True while the last call to the shared limiter failed.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn failed(&self, error: &PortError) {
        metrics::counter!("waiter_rate_limit_fallbacks_total").increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                ?error,
                "the shared rate limiter is unavailable; limits now hold per instance until it is back"
            );
        }
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("the shared rate limiter is back; limits are shared again");
        }
    }
}

impl std::fmt::Debug for FailoverRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverRateLimiter")
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RateLimiter for FailoverRateLimiter {
    async fn acquire(&self, key: &str, quota: Quota) -> Result<Decision, PortError> {
        match self.shared.acquire(key, quota).await {
            Ok(decision) => {
                self.succeeded();
                Ok(decision)
            }
            Err(error) => {
                self.failed(&error);
                self.fallback.acquire(key, quota).await
            }
        }
    }

    /// Resets the key in both, so neither holds a count the other forgot.
    async fn reset(&self, key: &str) -> Result<(), PortError> {
        let shared = self.shared.reset(key).await;
        let fallback = self.fallback.reset(key).await;
        match shared {
            Ok(()) => self.succeeded(),
            Err(error) => self.failed(&error),
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mockall::predicate::eq;
    use waiter_ports::rate_limit::MockRateLimiter;

    use super::*;

    fn quota() -> Quota {
        Quota::new(5, Duration::from_secs(60)).unwrap()
    }

    fn allowed(remaining: u32) -> Decision {
        Decision {
            allowed: true,
            remaining,
            reset_after: Duration::from_secs(12),
            retry_after: Duration::ZERO,
        }
    }

    fn down() -> PortError {
        PortError::Unavailable(anyhow::anyhow!("Redis is down"))
    }

    #[tokio::test]
    async fn a_policy_counts_under_its_own_key_and_a_digest_of_the_subject() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_acquire()
            .withf(|key, quota| {
                key.starts_with("rate:sign-in:")
                    && !key.contains("ann@example.com")
                    && key.len() == "rate:sign-in:".len() + 32
                    && quota.limit.get() == 5
            })
            .times(1)
            .returning(|_, _| Ok(allowed(4)));
        let service = RateLimitService::new(
            Arc::new(limiter),
            RateLimitSettings::off().with(Policy::SignIn, Some(quota())),
        );
        let limited = service
            .check(Policy::SignIn, "ann@example.com 192.0.2.1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(limited.policy, Policy::SignIn);
        assert_eq!(limited.quota, quota());
        assert_eq!(limited.decision, allowed(4));
    }

    #[tokio::test]
    async fn a_policy_switched_off_counts_nothing() {
        let mut limiter = MockRateLimiter::new();
        limiter.expect_acquire().never();
        limiter.expect_reset().never();
        let service = RateLimitService::new(
            Arc::new(limiter),
            RateLimitSettings::off().with(Policy::SignIn, Some(quota())),
        );
        assert_eq!(
            service.check(Policy::SignUp, "192.0.2.1").await.unwrap(),
            None
        );
        service.reset(Policy::SignUp, "192.0.2.1").await.unwrap();
    }

    #[tokio::test]
    async fn subjects_and_policies_get_distinct_keys() {
        let keys = [
            RateLimitService::key(Policy::SignIn, "a"),
            RateLimitService::key(Policy::SignIn, "b"),
            RateLimitService::key(Policy::SignInAddress, "a"),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_eq!(keys[0], RateLimitService::key(Policy::SignIn, "a"));
    }

    #[tokio::test]
    async fn reset_reaches_the_limiter_under_the_same_key() {
        let key = RateLimitService::key(Policy::SignIn, "ann@example.com 192.0.2.1");
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_reset()
            .with(eq(key))
            .times(1)
            .returning(|_| Ok(()));
        let service = RateLimitService::new(
            Arc::new(limiter),
            RateLimitSettings::off().with(Policy::SignIn, Some(quota())),
        );
        service
            .reset(Policy::SignIn, "ann@example.com 192.0.2.1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_fallback_counts_while_the_shared_limiter_is_down_and_recovery_is_automatic() {
        let mut shared = MockRateLimiter::new();
        let mut calls = 0;
        shared.expect_acquire().times(4).returning(move |_, _| {
            calls += 1;
            if (2..=3).contains(&calls) {
                Err(down())
            } else {
                Ok(allowed(9))
            }
        });
        let mut fallback = MockRateLimiter::new();
        fallback
            .expect_acquire()
            .times(2)
            .returning(|_, _| Ok(allowed(1)));
        let failover = FailoverRateLimiter::new(Arc::new(shared), Arc::new(fallback));

        assert_eq!(failover.acquire("k", quota()).await.unwrap(), allowed(9));
        assert!(!failover.is_degraded());
        assert_eq!(failover.acquire("k", quota()).await.unwrap(), allowed(1));
        assert!(failover.is_degraded());
        assert_eq!(failover.acquire("k", quota()).await.unwrap(), allowed(1));
        assert!(failover.is_degraded());
        assert_eq!(failover.acquire("k", quota()).await.unwrap(), allowed(9));
        assert!(!failover.is_degraded(), "it recovers by itself");
    }

    #[tokio::test]
    async fn a_reset_reaches_both_limiters_even_when_the_shared_one_is_down() {
        let mut shared = MockRateLimiter::new();
        shared.expect_reset().times(1).returning(|_| Err(down()));
        let mut fallback = MockRateLimiter::new();
        fallback.expect_reset().times(1).returning(|_| Ok(()));
        let failover = FailoverRateLimiter::new(Arc::new(shared), Arc::new(fallback));
        failover.reset("k").await.unwrap();
        assert!(failover.is_degraded());
    }
}
